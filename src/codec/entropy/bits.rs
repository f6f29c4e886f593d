//! Bit-level writer and reader of the frequency table's Exp-Golomb codes (LSB first).

use crate::codec::CodecError;

pub(super) struct BitWriter<'a> {
    pub(super) out: &'a mut Vec<u8>,
    pub(super) acc: u64,
    pub(super) n: u32,
}

impl BitWriter<'_> {
    pub(super) fn put(&mut self, v: u64, nbits: u32) {
        debug_assert!(nbits <= 32);
        self.acc |= (v & ((1u64 << nbits) - 1)) << self.n;
        self.n += nbits;
        while self.n >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.n -= 8;
        }
    }
    pub(super) fn eg(&mut self, v: u32, k: u32) {
        let u = v as u64 + (1u64 << k);
        let nb = 64 - u.leading_zeros();
        let zeros = nb - k - 1;
        self.put(0, zeros);
        self.put(1, 1);
        self.put(u, nb - 1);
    }
    pub(super) fn finish(mut self) {
        if self.n > 0 {
            self.out.push(self.acc as u8);
        }
        self.n = 0;
    }
}

pub(super) struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
    acc: u64,
    n: u32,
}

impl<'a> BitReader<'a> {
    pub(super) fn new(data: &'a [u8]) -> Self {
        BitReader {
            data,
            pos: 0,
            acc: 0,
            n: 0,
        }
    }
    pub(super) fn get(&mut self, nbits: u32) -> Result<u32, CodecError> {
        debug_assert!(nbits <= 32);
        while self.n < nbits {
            let b = *self
                .data
                .get(self.pos)
                .ok_or(CodecError::Truncated("rANS table"))?;
            self.pos += 1;
            self.acc |= (b as u64) << self.n;
            self.n += 8;
        }
        let v = (self.acc & ((1u64 << nbits) - 1)) as u32;
        self.acc >>= nbits;
        self.n -= nbits;
        Ok(v)
    }
    pub(super) fn eg(&mut self, k: u32) -> Result<u32, CodecError> {
        let mut zeros = 0;
        while self.get(1)? == 0 {
            zeros += 1;
            if zeros > 20 {
                return Err(CodecError::Corrupt("rANS table code too long"));
            }
        }
        let nb = zeros + k;
        if nb > 31 {
            return Err(CodecError::Corrupt("rANS table code too long"));
        }
        let u = (1u64 << nb) | self.get(nb)? as u64;
        Ok((u - (1u64 << k)) as u32)
    }
    /// Bytes consumed (the partial last byte counts).
    pub(super) fn consumed(&self) -> usize {
        self.pos
    }
}

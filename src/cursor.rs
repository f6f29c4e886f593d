//! The one bounded little-endian byte cursor of every parser of untrusted bytes: the archive
//! index (`format`), quantized chunk streams (`codec::quant`) and GGUF headers (`gguf`). Every
//! read goes through `.get()` with a checked end, so no input can make it panic or read out of
//! bounds; a short input is a [`Short`] naming the field and the offset where it was wanted,
//! which each parser turns into its own error (`From<Short>`).

/// The input ended inside the field `what`, which started at `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Short {
    pub what: &'static str,
    pub offset: u64,
}

/// A position in a byte slice that only moves forward.
#[derive(Debug, Clone)]
pub struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(b: &'a [u8]) -> Self {
        Cursor { b, pos: 0 }
    }
    /// Bytes consumed so far.
    pub fn pos(&self) -> usize {
        self.pos
    }
    /// Bytes left after the position.
    pub fn remaining(&self) -> usize {
        self.b.len().saturating_sub(self.pos)
    }
    /// The next `n` bytes.
    pub fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], Short> {
        let short = Short {
            what,
            offset: self.pos as u64,
        };
        let end = self.pos.checked_add(n).ok_or(short)?;
        let s = self.b.get(self.pos..end).ok_or(short)?;
        self.pos = end;
        Ok(s)
    }
    pub fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], Short> {
        let at = self.pos as u64;
        self.bytes(N, what)?
            .try_into()
            .map_err(|_| Short { what, offset: at })
    }
    pub fn u8(&mut self, what: &'static str) -> Result<u8, Short> {
        Ok(self.array::<1>(what)?[0])
    }
    pub fn u16(&mut self, what: &'static str) -> Result<u16, Short> {
        self.array(what).map(u16::from_le_bytes)
    }
    pub fn u32(&mut self, what: &'static str) -> Result<u32, Short> {
        self.array(what).map(u32::from_le_bytes)
    }
    pub fn u64(&mut self, what: &'static str) -> Result<u64, Short> {
        self.array(what).map(u64::from_le_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_in_order_and_refuses_short_input() {
        let b = [1u8, 2, 0, 3, 0, 0, 0, 9];
        let mut c = Cursor::new(&b);
        assert_eq!(c.u8("a"), Ok(1));
        assert_eq!(c.u16("b"), Ok(2));
        assert_eq!(c.u32("c"), Ok(3));
        assert_eq!(c.remaining(), 1);
        assert_eq!(
            c.u16("d"),
            Err(Short {
                what: "d",
                offset: 7
            })
        );
        // A failed read consumes nothing.
        assert_eq!(c.pos(), 7);
        assert_eq!(c.bytes(usize::MAX, "e").unwrap_err().offset, 7);
        assert_eq!(c.bytes(1, "f"), Ok(&[9u8][..]));
        assert_eq!(c.remaining(), 0);
    }
}

//! F16 values that are all BF16-representable, coded as BF16 (codec id 2, param 4).
//!
//! An F16 tensor converted from BF16 weights (the usual F16 GGUF: `convert_hf_to_gguf.py
//! --outtype f16` of a BF16 checkpoint) holds at most 8 significant bits per value: its 10
//! mantissa bits end in (at least) 3 zeros for normal values, and its subnormals were rounded
//! from 8-bit significands. The F16 layout would spend those bits in the raw field of every
//! value (measured: 15.7% saved on ref-llama-38m's F16 GGUF, against 33.7% for the same weights
//! in BF16, and zstd -19's 24.2%). Mapped to BF16 bit patterns, the same values are coded by
//! the BF16 path, which spends nothing on them.
//!
//! The map is exact both ways on the values it accepts: the encoder maps every value and checks
//! that mapping back gives the same 16 bits (NaN payloads and values needing 9+ significant
//! bits fail the check and the chunk keeps the plain F16 coder). Both directions are 64 Ki-entry
//! tables built once from `half`'s conversions, so the decoder's extra cost is one table lookup
//! per value.

use std::sync::OnceLock;

use super::super::{CodecError, FloatKind};

/// `TO_BF16[x]`: the BF16 bits of F16 `x`, or `NONE` when `x` is not exactly a BF16 value that
/// maps back to `x`.
static TABLES: OnceLock<(Vec<u32>, Vec<u16>)> = OnceLock::new();
const NONE: u32 = u32::MAX;

fn tables() -> &'static (Vec<u32>, Vec<u16>) {
    TABLES.get_or_init(|| {
        let back: Vec<u16> = (0..=u16::MAX)
            .map(|b| half::f16::from_f32(f32::from_bits(u32::from(b) << 16)).to_bits())
            .collect();
        let to: Vec<u32> = (0..=u16::MAX)
            .map(|x| {
                let f = half::f16::from_bits(x).to_f32().to_bits();
                let b = (f >> 16) as u16;
                if f & 0xFFFF == 0 && back[usize::from(b)] == x {
                    u32::from(b)
                } else {
                    NONE
                }
            })
            .collect();
        (to, back)
    })
}

/// Encode F16 `input` as BF16 if every whole value maps exactly; `false` (and `out` untouched)
/// otherwise. A tail of an odd byte is kept verbatim by the BF16 stream.
pub fn encode(input: &[u8], out: &mut Vec<u8>) -> bool {
    let (to, _) = tables();
    let n = input.len() / 2;
    let mut mapped = Vec::with_capacity(input.len());
    for v in input[..n * 2].chunks_exact(2) {
        let b = to[usize::from(u16::from_le_bytes([v[0], v[1]]))];
        if b == NONE {
            return false;
        }
        mapped.extend_from_slice(&(b as u16).to_le_bytes());
    }
    mapped.extend_from_slice(&input[n * 2..]);
    super::encode(FloatKind::Bf16, &mapped, out);
    true
}

/// Decode a stream of [`encode`] into exactly `out.len()` bytes of F16.
pub fn decode(input: &[u8], out: &mut [u8]) -> Result<(), CodecError> {
    super::decode(FloatKind::Bf16, input, out)?;
    let (_, back) = tables();
    let n = out.len() / 2;
    for v in out[..n * 2].chunks_exact_mut(2) {
        let x = back[usize::from(u16::from_le_bytes([v[0], v[1]]))];
        v.copy_from_slice(&x.to_le_bytes());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bf16_value_in_f16_range_maps_and_round_trips() {
        let (to, back) = tables();
        let mut exact = 0;
        for x in 0..=u16::MAX {
            let b = to[usize::from(x)];
            if b != NONE {
                assert_eq!(back[b as usize], x, "{x:#06x}");
                exact += 1;
            }
        }
        // Normal F16 values with 3 trailing mantissa zeros (2 signs x 30 exponents x 128),
        // zeros and infinities, and the subnormals with at most 8 significant bits.
        assert!(exact > 2 * 30 * 128, "{exact}");
        // 1.0 maps, 1 + 2^-10 does not (9 significant bits).
        assert_ne!(to[0x3C00], NONE);
        assert_eq!(to[0x3C01], NONE);
    }

    #[test]
    fn f16_converted_from_bf16_uses_the_map_and_is_smaller() {
        let mut rng = crate::synth::Rng::new(5);
        let f16: Vec<u8> = (0..60_000)
            .flat_map(|_| {
                let g = (rng.next_u64() % 20_000) as f32 / 20_000.0 - 0.5;
                let bf = half::bf16::from_f32(g * 0.05);
                half::f16::from_f32(bf.to_f32()).to_le_bytes()
            })
            .chain([7u8]) // odd tail
            .collect();
        let mut mapped = Vec::new();
        assert!(encode(&f16, &mut mapped));
        let mut plain = Vec::new();
        super::super::encode(FloatKind::F16, &f16, &mut plain);
        assert!(
            mapped.len() * 100 < plain.len() * 90,
            "{} vs {}",
            mapped.len(),
            plain.len()
        );
        let mut out = vec![0xA5u8; f16.len()];
        decode(&mapped, &mut out).unwrap();
        assert!(out == f16);
        // One value with 9 significant bits: the map is refused.
        let mut g = f16.clone();
        g[0..2].copy_from_slice(&0x3C01u16.to_le_bytes());
        assert!(!encode(&g, &mut Vec::new()));
    }
}

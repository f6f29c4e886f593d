//! Lossless coder for ggml quantized blocks (codec id 4, param = ggml type id), as found in
//! GGUF tensor data.
//!
//! A ggml block type is an array of fixed-size structs (e.g. Q4_K: f16 `d`, f16 `dmin`, 12
//! bytes of packed 6-bit sub-block scales, 128 bytes of 4-bit quants). Coded as bytes, zstd
//! sees the fields interleaved and finds little to match: the quants are near-random, and the
//! structure that is there (the f16 scales' sign/exponent byte takes a few values, the
//! sub-block scales and the 8-bit quants are far from uniform) is order-0 statistics of each
//! field, which an LZ coder does not model. So a chunk (whole blocks only) is split into
//! *streams*: each stream gathers, from every block, the bytes of one field (or one byte lane of
//! a multi-byte field: the low and the high byte of an f16 are separate streams), and each
//! stream is coded by the project's order-0 rANS coder (`entropy.rs`) with its own table, which
//! falls back to storing a stream raw when coding does not pay (the f16 scales' low bytes, the
//! 4-bit quants of some types). The field layouts are ggml-common.h's block structs.
//!
//! IQ types' grid indices and sign bits are split only coarsely (the scale, then the rest by
//! the struct's arrays); `NVFP4` and `Q1_0`, whose layouts are newer than this table, are not
//! handled here and the writer stores them with zstd.
//!
//! Stream: `u8 version (1)`, then one `entropy` stream per field lane in the type's order
//! (each self-delimiting; the symbol count is blocks × bytes of that lane per block). Nothing
//! may follow the last stream. Decoding needs `out.len()` to be a whole number of blocks.

use super::CodecError;
use super::entropy;

const VERSION: u8 = 1;

/// One stream: from each block, the bytes at `off + phase`, `off + phase + stride`, ... below
/// `off + len`. `stride` 1 takes a whole field; 2 with phase 0 / 1 takes an f16's low / high bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lane {
    pub name: &'static str,
    pub off: u16,
    pub len: u16,
    pub stride: u8,
    pub phase: u8,
}

impl Lane {
    /// Bytes this lane takes from each block.
    pub fn per_block(&self) -> usize {
        (usize::from(self.len) - usize::from(self.phase)).div_ceil(usize::from(self.stride))
    }
}

const fn f(name: &'static str, off: u16, len: u16) -> Lane {
    Lane {
        name,
        off,
        len,
        stride: 1,
        phase: 0,
    }
}
const fn lo(name: &'static str, off: u16) -> Lane {
    Lane {
        name,
        off,
        len: 2,
        stride: 2,
        phase: 0,
    }
}
const fn hi(name: &'static str, off: u16) -> Lane {
    Lane {
        name,
        off,
        len: 2,
        stride: 2,
        phase: 1,
    }
}

/// A block type's geometry and stream split.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    pub ggml_id: u8,
    pub name: &'static str,
    pub block_bytes: usize,
    pub lanes: &'static [Lane],
}

/// Block layouts, field by field (ggml-common.h). Each table must cover every byte of its block
/// exactly once (checked by a unit test).
pub const LAYOUTS: &[Layout] = &[
    l(
        2,
        "Q4_0",
        18,
        &[lo("d.lo", 0), hi("d.hi", 0), f("qs", 2, 16)],
    ),
    l(
        3,
        "Q4_1",
        20,
        &[
            lo("d.lo", 0),
            hi("d.hi", 0),
            lo("m.lo", 2),
            hi("m.hi", 2),
            f("qs", 4, 16),
        ],
    ),
    l(
        6,
        "Q5_0",
        22,
        &[lo("d.lo", 0), hi("d.hi", 0), f("qh", 2, 4), f("qs", 6, 16)],
    ),
    l(
        7,
        "Q5_1",
        24,
        &[
            lo("d.lo", 0),
            hi("d.hi", 0),
            lo("m.lo", 2),
            hi("m.hi", 2),
            f("qh", 4, 4),
            f("qs", 8, 16),
        ],
    ),
    l(
        8,
        "Q8_0",
        34,
        &[lo("d.lo", 0), hi("d.hi", 0), f("qs", 2, 32)],
    ),
    l(
        9,
        "Q8_1",
        36,
        &[
            lo("d.lo", 0),
            hi("d.hi", 0),
            lo("s.lo", 2),
            hi("s.hi", 2),
            f("qs", 4, 32),
        ],
    ),
    l(
        10,
        "Q2_K",
        84,
        &[
            f("scales", 0, 16),
            f("qs", 16, 64),
            lo("d.lo", 80),
            hi("d.hi", 80),
            lo("dmin.lo", 82),
            hi("dmin.hi", 82),
        ],
    ),
    l(
        11,
        "Q3_K",
        110,
        &[
            f("hmask", 0, 32),
            f("qs", 32, 64),
            f("scales.lo4", 96, 8),
            f("scales.hi2", 104, 4),
            lo("d.lo", 108),
            hi("d.hi", 108),
        ],
    ),
    l(
        12,
        "Q4_K",
        144,
        &[
            lo("d.lo", 0),
            hi("d.hi", 0),
            lo("dmin.lo", 2),
            hi("dmin.hi", 2),
            f("scales.0", 4, 4),
            f("scales.1", 8, 4),
            f("scales.2", 12, 4),
            f("qs", 16, 128),
        ],
    ),
    l(
        13,
        "Q5_K",
        176,
        &[
            lo("d.lo", 0),
            hi("d.hi", 0),
            lo("dmin.lo", 2),
            hi("dmin.hi", 2),
            f("scales.0", 4, 4),
            f("scales.1", 8, 4),
            f("scales.2", 12, 4),
            f("qh", 16, 32),
            f("qs", 48, 128),
        ],
    ),
    l(
        14,
        "Q6_K",
        210,
        &[
            f("ql", 0, 128),
            f("qh", 128, 64),
            f("scales", 192, 16),
            lo("d.lo", 208),
            hi("d.hi", 208),
        ],
    ),
    l(
        15,
        "Q8_K",
        292,
        &[
            f("d", 0, 4),
            f("qs", 4, 256),
            Lane {
                name: "bsums.lo",
                off: 260,
                len: 32,
                stride: 2,
                phase: 0,
            },
            Lane {
                name: "bsums.hi",
                off: 260,
                len: 32,
                stride: 2,
                phase: 1,
            },
        ],
    ),
    l(
        16,
        "IQ2_XXS",
        66,
        &[lo("d.lo", 0), hi("d.hi", 0), f("qs", 2, 64)],
    ),
    l(
        17,
        "IQ2_XS",
        74,
        &[
            lo("d.lo", 0),
            hi("d.hi", 0),
            f("qs", 2, 64),
            f("scales", 66, 8),
        ],
    ),
    l(
        18,
        "IQ3_XXS",
        98,
        &[
            lo("d.lo", 0),
            hi("d.hi", 0),
            f("qs", 2, 64),
            f("scales_signs", 66, 32),
        ],
    ),
    l(
        19,
        "IQ1_S",
        50,
        &[
            lo("d.lo", 0),
            hi("d.hi", 0),
            f("qs", 2, 32),
            f("qh", 34, 16),
        ],
    ),
    l(
        20,
        "IQ4_NL",
        18,
        &[lo("d.lo", 0), hi("d.hi", 0), f("qs", 2, 16)],
    ),
    l(
        21,
        "IQ3_S",
        110,
        &[
            lo("d.lo", 0),
            hi("d.hi", 0),
            f("qs", 2, 64),
            f("qh", 66, 8),
            f("signs", 74, 32),
            f("scales", 106, 4),
        ],
    ),
    l(
        22,
        "IQ2_S",
        82,
        &[
            lo("d.lo", 0),
            hi("d.hi", 0),
            f("qs", 2, 32),
            f("signs", 34, 32),
            f("qh", 66, 8),
            f("scales", 74, 8),
        ],
    ),
    l(
        23,
        "IQ4_XS",
        136,
        &[
            lo("d.lo", 0),
            hi("d.hi", 0),
            f("scales_h", 2, 2),
            f("scales_l", 4, 4),
            f("qs", 8, 128),
        ],
    ),
    l(
        29,
        "IQ1_M",
        56,
        &[f("qs", 0, 32), f("qh", 32, 16), f("scales", 48, 8)],
    ),
    l(
        34,
        "TQ1_0",
        54,
        &[
            f("qs", 0, 48),
            f("qh", 48, 4),
            lo("d.lo", 52),
            hi("d.hi", 52),
        ],
    ),
    l(
        35,
        "TQ2_0",
        66,
        &[f("qs", 0, 64), lo("d.lo", 64), hi("d.hi", 64)],
    ),
    l(39, "MXFP4", 17, &[f("e", 0, 1), f("qs", 1, 16)]),
];

const fn l(ggml_id: u8, name: &'static str, block_bytes: usize, lanes: &'static [Lane]) -> Layout {
    Layout {
        ggml_id,
        name,
        block_bytes,
        lanes,
    }
}

/// The layout of a ggml type id, if this coder handles it.
pub fn layout(ggml_id: u8) -> Option<&'static Layout> {
    LAYOUTS.iter().find(|l| l.ggml_id == ggml_id)
}

/// Gather lane `lane` of every block of `input` into `out` (cleared first).
pub fn gather(lay: &Layout, lane: &Lane, input: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let (off, len) = (usize::from(lane.off), usize::from(lane.len));
    let phase = usize::from(lane.phase);
    for b in input.chunks_exact(lay.block_bytes) {
        let field = &b[off..off + len];
        match lane.stride {
            1 => out.extend_from_slice(field),
            s => out.extend(field.iter().skip(phase).step_by(usize::from(s))),
        }
    }
}

fn scatter(lay: &Layout, lane: &Lane, src: &[u8], out: &mut [u8]) {
    let (off, len) = (usize::from(lane.off), usize::from(lane.len));
    let (phase, stride) = (usize::from(lane.phase), usize::from(lane.stride));
    let per = lane.per_block();
    match (stride, per) {
        (1, 1) => {
            for (b, &s) in out.chunks_exact_mut(lay.block_bytes).zip(src) {
                b[off] = s;
            }
        }
        (1, _) => {
            for (b, s) in out
                .chunks_exact_mut(lay.block_bytes)
                .zip(src.chunks_exact(per))
            {
                b[off..off + len].copy_from_slice(s);
            }
        }
        (_, 1) => {
            for (b, &s) in out.chunks_exact_mut(lay.block_bytes).zip(src) {
                b[off + phase] = s;
            }
        }
        _ => {
            for (b, s) in out
                .chunks_exact_mut(lay.block_bytes)
                .zip(src.chunks_exact(per))
            {
                for (d, &x) in b[off + phase..off + len].iter_mut().step_by(stride).zip(s) {
                    *d = x;
                }
            }
        }
    }
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Encode whole blocks of ggml type `ggml_id`.
pub fn encode(ggml_id: u8, input: &[u8], out: &mut Vec<u8>) -> Result<(), CodecError> {
    let lay = layout(ggml_id).ok_or_else(|| {
        CodecError::Unsupported(format!("ggml type {ggml_id} has no block layout"))
    })?;
    if !input.len().is_multiple_of(lay.block_bytes) {
        return Err(CodecError::Unsupported(format!(
            "{} bytes are not whole {} blocks of {} bytes",
            input.len(),
            lay.name,
            lay.block_bytes
        )));
    }
    out.push(VERSION);
    SCRATCH.with_borrow_mut(|buf| {
        for lane in lay.lanes {
            gather(lay, lane, input, buf);
            entropy::encode_symbols(buf, out);
        }
    });
    Ok(())
}

/// Decode into exactly `out.len()` bytes (whole blocks).
pub fn decode(ggml_id: u8, input: &[u8], out: &mut [u8]) -> Result<(), CodecError> {
    let lay = layout(ggml_id).ok_or(CodecError::Unknown {
        id: super::Codec::ID_BLOCK,
        param: ggml_id,
    })?;
    if !out.len().is_multiple_of(lay.block_bytes) {
        return Err(CodecError::Corrupt("decoded length is not whole blocks"));
    }
    let blocks = out.len() / lay.block_bytes;
    let (&v, mut rest) = input
        .split_first()
        .ok_or(CodecError::Truncated("block stream version"))?;
    if v != VERSION {
        return Err(CodecError::Corrupt("unknown block stream version"));
    }
    SCRATCH.with_borrow_mut(|buf| {
        for lane in lay.lanes {
            let n = blocks * lane.per_block();
            buf.resize(n, 0);
            let used = entropy::decode_symbols(rest, &mut buf[..n])?;
            rest = rest
                .get(used..)
                .ok_or(CodecError::Truncated("block lane"))?;
            scatter(lay, lane, &buf[..n], out);
        }
        if !rest.is_empty() {
            return Err(CodecError::Corrupt("bytes after the last block lane"));
        }
        Ok(())
    })
}

/// Order-0 entropy bound of `input` (whole blocks) under this coder's split: the sum over lanes
/// of `n · H(lane)` in bytes, from one histogram per lane over all of `input` (the benchmark
/// passes whole tensors). Returns `(bound bytes, per-lane (name, bytes in, bound bytes))`.
pub fn order0_bound(lay: &Layout, input: &[u8]) -> (f64, Vec<(&'static str, usize, f64)>) {
    let mut buf = Vec::new();
    let mut total = 0.0;
    let mut per = Vec::new();
    for lane in lay.lanes {
        gather(lay, lane, input, &mut buf);
        let h = entropy::histogram(&buf);
        let n = buf.len() as f64;
        let bits: f64 = h
            .iter()
            .filter(|&&c| c > 0)
            .map(|&c| {
                let c = f64::from(c);
                -c * (c / n).log2()
            })
            .sum();
        total += bits / 8.0;
        per.push((lane.name, buf.len(), bits / 8.0));
    }
    (total, per)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Codec;

    #[test]
    fn layouts_cover_every_block_byte_once_and_match_the_ggml_table() {
        for lay in LAYOUTS {
            let mut seen = vec![0u32; lay.block_bytes];
            for lane in lay.lanes {
                let (off, len) = (lane.off as usize, lane.len as usize);
                assert!(off + len <= lay.block_bytes, "{} {}", lay.name, lane.name);
                for i in (off + lane.phase as usize..off + len).step_by(lane.stride as usize) {
                    seen[i] += 1;
                }
            }
            assert!(seen.iter().all(|&c| c == 1), "{}: {seen:?}", lay.name);
            let t = crate::gguf::GgmlType::from_id(u32::from(lay.ggml_id)).unwrap();
            assert_eq!(
                (t.name, t.block_bytes as usize),
                (lay.name, lay.block_bytes)
            );
        }
    }

    /// Blocks with realistic field statistics: f16 scales around 1e-3, skewed 8-bit quants.
    fn blocks(lay: &Layout, n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        let mut rnd = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut v = vec![0u8; n * lay.block_bytes];
        for b in v.chunks_exact_mut(lay.block_bytes) {
            for lane in lay.lanes {
                for i in (lane.off as usize + lane.phase as usize
                    ..lane.off as usize + lane.len as usize)
                    .step_by(lane.stride as usize)
                {
                    let r = rnd();
                    b[i] = if lane.name.ends_with(".hi") {
                        0x14 + (r % 3) as u8
                    } else if lane.name == "qs" && lay.name == "Q8_0" {
                        // Roughly Gaussian int8: sum of three uniforms in -42..42.
                        ((r % 85) as i32 + ((r >> 8) % 85) as i32 + ((r >> 16) % 85) as i32 - 126)
                            as i8 as u8
                    } else {
                        r as u8
                    };
                }
            }
        }
        v
    }

    #[test]
    fn every_layout_round_trips_and_small_and_empty_inputs_too() {
        for lay in LAYOUTS {
            let c = Codec::Block(lay.ggml_id);
            for n in [0usize, 1, 3, 700] {
                let data = blocks(lay, n, 7 + n as u64);
                crate::codec::roundtrip(c, &data)
                    .unwrap_or_else(|e| panic!("{} {n}: {e}", lay.name));
            }
        }
    }

    #[test]
    fn structure_is_found_q8_0_compresses() {
        let lay = layout(8).unwrap();
        let data = blocks(lay, 4000, 3);
        let n = crate::codec::roundtrip(Codec::Block(8), &data).unwrap();
        let (bound, _) = order0_bound(lay, &data);
        // Expected: qs ~7.46 bits (a Gaussian of sd 42.5), d.hi 1.6 bits, d.lo 8 bits: 0.912 of
        // the input; zstd finds none of it in random bytes like these.
        assert!(
            (n as f64) < data.len() as f64 * 0.93,
            "{n} of {}",
            data.len()
        );
        assert!((n as f64) < bound * 1.02 + 2000.0, "{n} vs bound {bound}");
    }

    #[test]
    fn refuses_partial_blocks_and_hostile_streams_without_panicking() {
        let lay = layout(12).unwrap();
        let data = blocks(lay, 20, 9);
        let mut enc = Vec::new();
        assert!(encode(12, &data[..100], &mut enc).is_err());
        assert!(encode(5, &data, &mut enc).is_err());
        enc.clear();
        encode(12, &data, &mut enc).unwrap();
        let mut out = vec![0u8; data.len()];
        assert!(decode(12, &enc, &mut out[..100]).is_err());
        // Every truncation and a trailing byte fail.
        for cut in 0..enc.len() {
            assert!(decode(12, &enc[..cut], &mut out).is_err(), "cut {cut}");
        }
        let mut long = enc.clone();
        long.push(0);
        assert_eq!(
            decode(12, &long, &mut out),
            Err(CodecError::Corrupt("bytes after the last block lane"))
        );
        let mut bad = enc.clone();
        bad[0] = 2;
        assert!(decode(12, &bad, &mut out).is_err());
        // Random garbage never panics.
        let mut x = 1u64;
        for _ in 0..2000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let mut g = enc.clone();
            let i = (x >> 33) as usize % g.len();
            g[i] ^= (x >> 20) as u8 | 1;
            let _ = decode(12, &g, &mut out);
        }
        decode(12, &enc, &mut out).unwrap();
        assert_eq!(out, data);
    }
}

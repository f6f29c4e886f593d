//! Float-aware lossless coder (codec id 2). Stream format and measurements: docs/CODEC.md.
//!
//! For BF16/F16/F32 each value is split into
//! - `J` = (rank of the exponent among the chunk's distinct exponents, top `k` mantissa bits),
//!   a byte-alphabet symbol coded with the rANS coder of [`super::entropy`]; coding the top
//!   mantissa bits jointly with the exponent captures the non-uniform mantissa distribution
//!   within each binade, which separate byte planes cannot see;
//! - the sign and the remaining mantissa bits of the top 16 bits, bit-packed raw (`r` bits per
//!   value; they are within ~0.01 bit of uniform);
//! - for F32, the two low mantissa bytes as byte planes, each rANS-coded when that saves enough
//!   to pay for its decode time, else stored raw.
//!
//! F64 (and any input where it is smaller) uses plain byte planes. A tail of
//! `len % elem_size` bytes is stored verbatim. Every stream begins with a mode byte; mode 0 stores
//! the input raw so a chunk never grows by more than one byte.

use super::entropy::{
    decode_symbols, decode_symbols_map16, encode_raw, encode_with_hist, estimate_cost, histogram,
};
use super::{CodecError, FloatKind};

const MODE_RAW: u8 = 0;
const MODE_SPLIT: u8 = 1;
const MODE_PLANES: u8 = 2;

/// A plane is entropy-coded only if that saves at least this fraction of its raw size: below it,
/// decode time matters more than the bytes (see docs/CODEC.md, "plane threshold").
const PLANE_MIN_SAVING: f64 = 0.03;

/// Bit layout of the top 16 bits of a value in split mode.
#[derive(Clone, Copy)]
struct Layout {
    /// exponent bits
    eb: u32,
    /// mantissa bits inside the top 16 bits
    mb: u32,
    /// low byte planes below the top 16 bits (F32: 2)
    low_planes: usize,
}

fn layout(kind: FloatKind) -> Option<Layout> {
    match kind {
        FloatKind::Bf16 => Some(Layout {
            eb: 8,
            mb: 7,
            low_planes: 0,
        }),
        FloatKind::F16 => Some(Layout {
            eb: 5,
            mb: 10,
            low_planes: 0,
        }),
        FloatKind::F32 => Some(Layout {
            eb: 8,
            mb: 7,
            low_planes: 2,
        }),
        FloatKind::F64 => None,
    }
}

pub fn encode(kind: FloatKind, input: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    let es = kind.elem_size();
    let n = input.len() / es;
    if n == 0 {
        out.push(MODE_RAW);
        out.extend_from_slice(input);
        return;
    }
    match layout(kind) {
        Some(lay) => encode_split(lay, es, n, input, out),
        None => encode_planes(es, n, input, out),
    }
    if out.len() - start > 1 + input.len() {
        out.truncate(start);
        out.push(MODE_RAW);
        out.extend_from_slice(input);
    }
}

/// Code a plane with rANS if that saves at least PLANE_MIN_SAVING, else store it raw.
fn encode_plane(plane: &[u8], out: &mut Vec<u8>) {
    let hist = histogram(plane);
    let est = estimate_cost(&hist);
    if (est as f64) <= plane.len() as f64 * (1.0 - PLANE_MIN_SAVING) {
        encode_with_hist(plane, &hist, out);
    } else {
        encode_raw(plane, out);
    }
}

fn encode_planes(es: usize, n: usize, input: &[u8], out: &mut Vec<u8>) {
    out.push(MODE_PLANES);
    let mut plane = vec![0u8; n];
    for b in 0..es {
        for (i, p) in plane.iter_mut().enumerate() {
            *p = input[i * es + b];
        }
        encode_plane(&plane, out);
    }
    out.extend_from_slice(&input[n * es..]);
}

/// Top 16 bits of value `i`.
#[inline(always)]
fn top16(input: &[u8], es: usize, i: usize) -> u16 {
    u16::from_le_bytes([input[i * es + es - 2], input[i * es + es - 1]])
}

fn encode_split(lay: Layout, es: usize, n: usize, input: &[u8], out: &mut Vec<u8>) {
    let mb = lay.mb;
    let emask = (1u32 << lay.eb) - 1;
    // Histogram of (exponent, sign, top KB mantissa bits).
    let kb = mb.min(7);
    let mut h2 = vec![0u32; 512 << kb];
    for i in 0..n {
        let u = top16(input, es, i) as u32;
        let e = (u >> mb) & emask;
        let mh = (u & ((1 << mb) - 1)) >> (mb - kb);
        h2[((((e << 1) | (u >> 15)) << kb) | mh) as usize] += 1;
    }
    let mut rank = [0u8; 256];
    let mut exps = Vec::new();
    for e in 0..256usize {
        if h2[e << (kb + 1)..(e + 1) << (kb + 1)]
            .iter()
            .any(|&c| c > 0)
        {
            rank[e] = exps.len() as u8;
            exps.push(e as u8);
        }
    }
    let ne = exps.len();
    // Choose k and whether the sign goes into J, minimising (estimated J stream + packed rest).
    let mut best = (usize::MAX, 0u32, 0u32, [0u32; 256]);
    for sj in 0..2u32 {
        for k in 0..=kb {
            if ne << (k + sj) > 256 {
                break;
            }
            let mut hj = [0u32; 256];
            for (ri, &e) in exps.iter().enumerate() {
                for sign in 0..2usize {
                    for mh in 0..(1usize << kb) {
                        let c = h2[((((e as usize) << 1) | sign) << kb) | mh];
                        let jr = (ri << sj) | (sign & sj as usize);
                        hj[(jr << k) | (mh >> (kb - k))] += c;
                    }
                }
            }
            let r = mb - k + (1 - sj);
            let cost = estimate_cost(&hj) + (n * r as usize).div_ceil(8);
            if cost < best.0 {
                best = (cost, k, sj, hj);
            }
        }
    }
    let (_, k, sj, hj) = best;
    let lo_bits = mb - k;
    let r = lo_bits + (1 - sj);
    let lo_mask = (1u32 << lo_bits) - 1;

    out.push(MODE_SPLIT);
    out.push((k | (sj << 7)) as u8);
    out.push((ne - 1) as u8);
    out.extend_from_slice(&exps);

    let mut syms = vec![0u8; n];
    let mut packed = Vec::with_capacity((n * r as usize).div_ceil(8) + 8);
    let mut acc = 0u64;
    let mut nacc = 0u32;
    for (i, s) in syms.iter_mut().enumerate() {
        let u = top16(input, es, i) as u32;
        let e = (u >> mb) & emask;
        let m = u & ((1 << mb) - 1);
        let sign = u >> 15;
        let jr = ((rank[e as usize] as u32) << sj) | (sign & sj);
        *s = ((jr << k) | (m >> lo_bits)) as u8;
        let field = ((sign & (1 - sj)) << lo_bits) | (m & lo_mask);
        acc |= (field as u64) << nacc;
        nacc += r;
        while nacc >= 8 {
            packed.push(acc as u8);
            acc >>= 8;
            nacc -= 8;
        }
    }
    if nacc > 0 {
        packed.push(acc as u8);
    }
    encode_with_hist(&syms, &hj, out);
    out.extend_from_slice(&packed);
    for b in 0..lay.low_planes {
        for (i, p) in syms.iter_mut().enumerate() {
            *p = input[i * es + b];
        }
        encode_plane(&syms, out);
    }
    out.extend_from_slice(&input[n * es..]);
}

pub fn decode(kind: FloatKind, input: &[u8], out: &mut [u8]) -> Result<(), CodecError> {
    let (&mode, body) = input
        .split_first()
        .ok_or(CodecError::Truncated("float mode"))?;
    let es = kind.elem_size();
    let n = out.len() / es;
    let used = match mode {
        MODE_RAW => {
            let src = body
                .get(..out.len())
                .ok_or(CodecError::Truncated("raw float chunk"))?;
            out.copy_from_slice(src);
            out.len()
        }
        MODE_SPLIT => {
            let lay = layout(kind).ok_or(CodecError::Corrupt("split mode for f64"))?;
            decode_split(lay, es, n, body, out)?
        }
        MODE_PLANES => decode_planes(es, n, body, out)?,
        _ => return Err(CodecError::Corrupt("unknown float mode")),
    };
    if used != body.len() {
        return Err(CodecError::Corrupt("trailing bytes after float stream"));
    }
    Ok(())
}

fn copy_tail(
    es: usize,
    n: usize,
    body: &[u8],
    p: usize,
    out: &mut [u8],
) -> Result<usize, CodecError> {
    let t = out.len() - n * es;
    let src = body
        .get(p..p + t)
        .ok_or(CodecError::Truncated("float tail"))?;
    out[n * es..].copy_from_slice(src);
    Ok(p + t)
}

fn decode_planes(es: usize, n: usize, body: &[u8], out: &mut [u8]) -> Result<usize, CodecError> {
    let mut plane = vec![0u8; n];
    let mut p = 0;
    for b in 0..es {
        p += decode_symbols(&body[p..], &mut plane)?;
        for (i, &v) in plane.iter().enumerate() {
            out[i * es + b] = v;
        }
    }
    copy_tail(es, n, body, p, out)
}

/// The `r`-bit field of value `i`, reading only inside `packed` (bytes past its end read as 0).
#[inline(always)]
fn field_at(packed: &[u8], r: u32, i: usize) -> u32 {
    let bit = i * r as usize;
    let mut b = [0u8; 8];
    let src = packed.get(bit >> 3..).unwrap_or(&[]);
    let k = src.len().min(8);
    b[..k].copy_from_slice(&src[..k]);
    ((u64::from_le_bytes(b) >> (bit & 7)) & ((1u64 << r) - 1)) as u32
}

/// 16-bit kinds: the rANS decoder writes each J symbol's bit pattern straight into `out`, then
/// the packed sign/low-mantissa fields are OR-ed in place. Returns bytes of `body` consumed.
fn decode_split16(
    r: u32,
    lo_bits: u32,
    nvalid: usize,
    n: usize,
    pat: &[u32; 256],
    body: &[u8],
    out: &mut [u8],
) -> Result<usize, CodecError> {
    let (mut p, bound) = decode_symbols_map16(body, pat, &mut out[..2 * n])?;
    if bound > nvalid {
        return Err(CodecError::Corrupt("symbol outside declared alphabet"));
    }
    let plen = n
        .checked_mul(r as usize)
        .ok_or(CodecError::Corrupt("length"))?
        .div_ceil(8);
    let packed = body
        .get(p..p.checked_add(plen).ok_or(CodecError::Corrupt("length"))?)
        .ok_or(CodecError::Truncated("packed bits"))?;
    p += plen;
    let vals = &mut out[..2 * n];
    macro_rules! fast {
        ($r:literal, $sr:literal) => {
            or_fields::<$r, $sr>(packed, vals)
        };
    }
    let done = match (r, r - lo_bits) {
        (0, 0) => n,
        (1, 0) => fast!(1, 0),
        (2, 0) => fast!(2, 0),
        (3, 0) => fast!(3, 0),
        (4, 0) => fast!(4, 0),
        (5, 0) => fast!(5, 0),
        (6, 0) => fast!(6, 0),
        (7, 0) => fast!(7, 0),
        (8, 0) => fast!(8, 0),
        (1, 1) => fast!(1, 1),
        (2, 1) => fast!(2, 1),
        (3, 1) => fast!(3, 1),
        (4, 1) => fast!(4, 1),
        (5, 1) => fast!(5, 1),
        (6, 1) => fast!(6, 1),
        (7, 1) => fast!(7, 1),
        (8, 1) => fast!(8, 1),
        _ => 0,
    };
    for (i, o) in vals.chunks_exact_mut(2).enumerate().skip(done) {
        let f = field_at(packed, r, i);
        let u = u16::from_le_bytes([o[0], o[1]]) as u32
            | ((f >> lo_bits) << 15)
            | (f & ((1 << lo_bits) - 1));
        o.copy_from_slice(&(u as u16).to_le_bytes());
    }
    Ok(p)
}

/// OR the R-bit fields (sign if SR = 1, then R - SR low mantissa bits) of whole groups of 8
/// values into the 16-bit values in `vals`; returns the number of values done.
fn or_fields<const R: u32, const SR: u32>(packed: &[u8], vals: &mut [u8]) -> usize {
    let n = vals.len() / 2;
    let rmask = (1u64 << R) - 1;
    let lo_bits = R - SR;
    let lo_mask = (1u32 << lo_bits) - 1;
    let groups =
        (n / 8).min(packed.len().saturating_sub(8) / R as usize + usize::from(packed.len() >= 8));
    for g in 0..groups {
        let at = g * R as usize;
        let w = u64::from_le_bytes(packed[at..at + 8].try_into().unwrap());
        let o: &mut [u8; 16] = (&mut vals[g * 16..g * 16 + 16]).try_into().unwrap();
        for j in 0..8 {
            let f = ((w >> (j as u32 * R)) & rmask) as u32;
            let add = ((f >> lo_bits) << 15) | (f & lo_mask);
            let u = u16::from_le_bytes([o[2 * j], o[2 * j + 1]]) | add as u16;
            o[2 * j..2 * j + 2].copy_from_slice(&u.to_le_bytes());
        }
    }
    groups * 8
}

/// Pattern slot of a J symbol outside the alphabet the header declares; never reaches the
/// output because `decode_split16` rejects streams whose symbol bound exceeds the alphabet.
const BAD: u32 = 1 << 31;

fn decode_split(
    lay: Layout,
    es: usize,
    n: usize,
    body: &[u8],
    out: &mut [u8],
) -> Result<usize, CodecError> {
    let mb = lay.mb;
    let hdr = body.get(..2).ok_or(CodecError::Truncated("split header"))?;
    let k = (hdr[0] & 0x7f) as u32;
    let sj = (hdr[0] >> 7) as u32;
    let ne = hdr[1] as usize + 1;
    if k > mb.min(7) || ne << (k + sj) > 256 {
        return Err(CodecError::Corrupt("split parameters"));
    }
    let exps = body
        .get(2..2 + ne)
        .ok_or(CodecError::Truncated("exponent list"))?;
    if exps.windows(2).any(|w| w[0] >= w[1]) || (exps[ne - 1] as u32) >> lay.eb != 0 {
        return Err(CodecError::Corrupt("exponent list"));
    }
    let lo_bits = mb - k;
    let r = lo_bits + (1 - sj);
    let mut pat = [BAD; 256];
    for (j, p) in pat.iter_mut().enumerate().take(ne << (k + sj)) {
        let sign = ((j >> k) as u32) & sj;
        *p = ((exps[j >> (k + sj)] as u32) << mb)
            | (sign << 15)
            | (((j as u32) & ((1 << k) - 1)) << lo_bits);
    }
    let mut p = 2 + ne;
    let nvalid = ne << (k + sj);
    if es == 2 {
        p += decode_split16(r, lo_bits, nvalid, n, &pat, &body[p..], out)?;
        return copy_tail(es, n, body, p, out);
    }
    // F32: the top 16 bits exactly as for 16-bit kinds, into scratch, then interleaved with
    // the two low byte planes.
    let mut top = vec![0u8; 2 * n];
    p += decode_split16(r, lo_bits, nvalid, n, &pat, &body[p..], &mut top)?;
    let mut planes = vec![0u8; 2 * n];
    let (p0, p1) = planes.split_at_mut(n);
    p += decode_symbols(&body[p..], p0)?;
    p += decode_symbols(&body[p..], p1)?;
    for (((o, t), &a), &b) in out[..4 * n]
        .chunks_exact_mut(4)
        .zip(top.chunks_exact(2))
        .zip(p0.iter())
        .zip(p1.iter())
    {
        o.copy_from_slice(&[a, b, t[0], t[1]]);
    }
    copy_tail(es, n, body, p, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Codec, roundtrip};
    use half::{bf16, f16};
    use proptest::prelude::*;

    const KINDS: [FloatKind; 4] = [
        FloatKind::Bf16,
        FloatKind::F16,
        FloatKind::F32,
        FloatKind::F64,
    ];

    fn rt(k: FloatKind, v: &[u8]) -> usize {
        roundtrip(Codec::Float(k), v).unwrap_or_else(|e| panic!("{k:?} len {}: {e}", v.len()))
    }

    /// Values of every kind from f64s, little-endian, as safetensors stores them.
    fn to_bytes(k: FloatKind, xs: &[f64]) -> Vec<u8> {
        match k {
            FloatKind::Bf16 => xs
                .iter()
                .flat_map(|&x| bf16::from_f64(x).to_le_bytes())
                .collect(),
            FloatKind::F16 => xs
                .iter()
                .flat_map(|&x| f16::from_f64(x).to_le_bytes())
                .collect(),
            FloatKind::F32 => xs.iter().flat_map(|&x| (x as f32).to_le_bytes()).collect(),
            FloatKind::F64 => xs.iter().flat_map(|&x| x.to_le_bytes()).collect(),
        }
    }

    fn specials() -> Vec<f64> {
        vec![
            0.0,
            -0.0,
            f64::NAN,
            -f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::MIN_POSITIVE,
            1e-40, // f32 denormal
            -1e-42,
            6e-8,   // f16 denormal
            1e-310, // f64 denormal
            f64::MAX,
            f64::MIN,
            65504.0,
            1.0,
            -1.0,
        ]
    }

    #[test]
    fn empty_and_tiny() {
        for k in KINDS {
            for len in 0..40 {
                let v: Vec<u8> = (0..len).map(|i| (i * 37 + 5) as u8).collect();
                assert!(rt(k, &v) <= len + 1);
            }
        }
    }

    #[test]
    fn constant_inputs_compress() {
        for k in KINDS {
            // F16 keeps 3 of its 10 mantissa bits outside J (J holds at most 7).
            let limit = |len: usize| if k == FloatKind::F16 { len / 5 } else { 400 };
            for b in [0u8, 0x3f, 0xff] {
                let v = vec![b; 100_003];
                assert!(rt(k, &v) < limit(v.len()), "{k:?}");
            }
            let v = to_bytes(k, &vec![0.5; 50_000]);
            assert!(rt(k, &v) < limit(v.len()), "{k:?}");
        }
    }

    #[test]
    fn gaussian_all_kinds_and_odd_lengths() {
        let xs: Vec<f64> = super::bench::gaussian(70_000, 3)
            .iter()
            .map(|&x| x as f64)
            .collect();
        for k in KINDS {
            let v = to_bytes(k, &xs);
            let stored = rt(k, &v);
            if k != FloatKind::F64 {
                assert!(stored < v.len() * 9 / 10, "{k:?} {stored}/{}", v.len());
            }
            for cut in [1, 2, 3, 5, 7, 8, 9, 17, 1001] {
                rt(k, &v[..v.len() - cut]);
                rt(k, &v[cut..]);
            }
        }
    }

    #[test]
    fn specials_mixed_in() {
        let mut xs: Vec<f64> = super::bench::gaussian(20_000, 5)
            .iter()
            .map(|&x| x as f64)
            .collect();
        for (i, s) in specials().into_iter().enumerate() {
            for j in 0..50 {
                xs[(i * 977 + j * 131) % 20_000] = s;
            }
        }
        for k in KINDS {
            rt(k, &to_bytes(k, &xs));
            rt(k, &to_bytes(k, &specials()));
        }
    }

    #[test]
    fn all_256_byte_values_and_random_bytes() {
        let all: Vec<u8> = (0..=255u8).cycle().take(256 * 301).collect();
        let mut s = 99u64;
        let rnd: Vec<u8> = (0..300_001)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1);
                (s >> 56) as u8
            })
            .collect();
        for k in KINDS {
            rt(k, &all);
            // Incompressible input: at most one byte of overhead.
            assert!(rt(k, &rnd) <= rnd.len() + 1);
        }
    }

    #[test]
    fn every_exponent_present() {
        // 256 distinct exponents forces k = 0 with a full J alphabet.
        let v: Vec<u8> = (0..65536u32)
            .flat_map(|i| ((i * 40503) as u16).to_le_bytes())
            .collect();
        rt(FloatKind::Bf16, &v);
        rt(FloatKind::F16, &v);
        let w: Vec<u8> = (0..65536u32)
            .flat_map(|i| (i.wrapping_mul(2654435761)).to_le_bytes())
            .collect();
        rt(FloatKind::F32, &w);
    }

    /// Decoding a damaged stream must return (Ok or Err), never panic.
    fn mangle_all(k: FloatKind, data: &[u8]) {
        let mut enc = Vec::new();
        encode(k, data, &mut enc);
        let mut out = vec![0u8; data.len()];
        for cut in 0..enc.len().min(300) {
            let _ = decode(k, &enc[..cut], &mut out);
        }
        for cut in (0..enc.len()).step_by(enc.len() / 97 + 1) {
            let _ = decode(k, &enc[..cut], &mut out);
        }
        let mut s = 1u64;
        for _ in 0..400 {
            let mut e = enc.clone();
            for _ in 0..1 + (s % 3) {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let pos = (s >> 20) as usize % e.len();
                e[pos] ^= 1 << ((s >> 60) & 7);
            }
            let _ = decode(k, &e, &mut out);
            // Wrong output lengths too.
            let mut short = vec![0u8; data.len() / 2];
            let _ = decode(k, &e, &mut short);
        }
    }

    #[test]
    fn damaged_streams_never_panic() {
        let xs: Vec<f64> = super::bench::gaussian(30_000, 11)
            .iter()
            .map(|&x| x as f64)
            .collect();
        for k in KINDS {
            mangle_all(k, &to_bytes(k, &xs));
            let mut lowprec = to_bytes(k, &xs);
            // Compressible low bytes: exercises coded planes.
            for (i, b) in lowprec.iter_mut().enumerate() {
                if i % k.elem_size() == 0 {
                    *b &= 0xf0;
                }
            }
            mangle_all(k, &lowprec);
        }
    }

    #[test]
    fn truncated_stream_is_an_error() {
        let xs: Vec<f64> = super::bench::gaussian(10_000, 1)
            .iter()
            .map(|&x| x as f64)
            .collect();
        for k in KINDS {
            let v = to_bytes(k, &xs);
            let mut enc = Vec::new();
            encode(k, &v, &mut enc);
            let mut out = vec![0u8; v.len()];
            assert!(decode(k, &enc[..enc.len() - 1], &mut out).is_err());
            assert!(decode(k, &[], &mut out).is_err());
            let mut longer = enc.clone();
            longer.push(0);
            assert!(decode(k, &longer, &mut out).is_err(), "trailing garbage");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn prop_random_bytes(k in 0usize..4, v in proptest::collection::vec(any::<u8>(), 0..3000)) {
            rt(KINDS[k], &v);
        }

        #[test]
        fn prop_floats(k in 0usize..4, xs in proptest::collection::vec(
            prop_oneof![
                4 => (-1.0f64..1.0).prop_map(|x| x * x * x * 0.1),
                1 => proptest::num::f64::ANY,
                1 => proptest::sample::select(specials()),
            ], 0..3000), tail in proptest::collection::vec(any::<u8>(), 0..8)) {
            let mut v = to_bytes(KINDS[k], &xs);
            v.extend_from_slice(&tail[..tail.len() % KINDS[k].elem_size()]);
            rt(KINDS[k], &v);
        }

        #[test]
        fn prop_few_symbols(k in 0usize..4, alphabet in proptest::collection::vec(any::<u8>(), 1..4),
                            idx in proptest::collection::vec(any::<u8>(), 0..5000)) {
            let v: Vec<u8> = idx.iter().map(|&i| alphabet[i as usize % alphabet.len()]).collect();
            rt(KINDS[k], &v);
        }

        #[test]
        fn prop_decode_garbage(k in 0usize..4, v in proptest::collection::vec(any::<u8>(), 0..2000),
                               len in 0usize..5000) {
            let mut out = vec![0u8; len];
            let _ = decode(KINDS[k], &v, &mut out);
        }
    }
}

#[cfg(test)]
mod bench {
    use super::*;

    /// Gaussian-ish values (sum of 4 uniforms), sigma ~0.02, like trained weights.
    pub(crate) fn gaussian(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        let mut u = move || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        };
        (0..n).map(|_| (u() + u() + u() + u()) * 0.035).collect()
    }

    /// `cargo test --release --lib bench_float -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn bench_float() {
        let v = gaussian(65536 * 2, 7);
        let bf: Vec<u8> = v
            .iter()
            .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
            .collect();
        let f32b: Vec<u8> = v.iter().flat_map(|&x| x.to_le_bytes()).collect();
        for (kind, data) in [(FloatKind::Bf16, &bf), (FloatKind::F32, &f32b)] {
            let mut enc = Vec::new();
            encode(kind, data, &mut enc);
            let mut out = vec![0u8; data.len()];
            let reps = 300;
            let t = std::time::Instant::now();
            for _ in 0..reps {
                decode(kind, &enc, &mut out).unwrap();
            }
            let s = t.elapsed().as_secs_f64() / reps as f64;
            assert_eq!(&out, data);
            println!(
                "{kind:?}: {:.1}% saved, decode {:.2} GiB/s",
                100.0 * (1.0 - enc.len() as f64 / data.len() as f64),
                data.len() as f64 / s / (1u64 << 30) as f64
            );
        }
    }
}

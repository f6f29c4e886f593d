//! The decoder: table reader, stream modes and the rANS hot loop (scalar here; the AVX2 and
//! AVX-512 kernels in `x86/` run first when selected). Hostile input gives an error, never
//! a panic (see the module header of `entropy`).

use super::bits::BitReader;
use super::model::TABLE_DELTA;
#[cfg(target_arch = "x86_64")]
use super::x86;
use super::{L, LANES, MAX_SCALE, MODE_CONST, MODE_RANS, MODE_RAW, Simd};
use crate::codec::CodecError;

/// Decode table for one rANS stream, one `u32` per slot:
/// `symbol | freq << 8 | (slot - cum) << 20` (12-bit fields: scale <= 12 and, with two or more
/// symbols, every frequency is < M). A fixed 4096-entry array lets `slot & 4095` index it without
/// a bounds check.
pub(super) struct DecTable {
    scale: u32,
    ent: Box<[u32; 1 << MAX_SCALE]>,
    /// `Some(symbol)` when one symbol owns all M slots (the encoder writes such streams in
    /// constant mode, but a hostile stream may declare it in rANS mode).
    single: Option<u8>,
    /// Alphabet size declared by the table: every decoded symbol is `< nsym`.
    nsym: usize,
}

pub(super) fn read_table(input: &[u8]) -> Result<(DecTable, usize), CodecError> {
    let hdr = input.get(..3).ok_or(CodecError::Truncated("rANS header"))?;
    let scale = hdr[0] as u32;
    let nsym = hdr[1] as usize + 1;
    let k = hdr[2] as u32 & 15;
    let delta = hdr[2] as u32 & TABLE_DELTA != 0;
    if scale == 0 || scale > MAX_SCALE {
        return Err(CodecError::Corrupt("rANS scale out of range"));
    }
    if hdr[2] as u32 & !(15 | TABLE_DELTA) != 0 {
        return Err(CodecError::Corrupt("rANS table flags"));
    }
    let m = 1u32 << scale;
    let mut freq = [0u32; 256];
    let mut br = BitReader::new(&input[3..]);
    let mut sum = 0u32;
    let mut prev = 0i64;
    for f in freq.iter_mut().take(nsym - 1) {
        let mut v = br.eg(k)?;
        if delta {
            // v < 2^31 (br.eg caps the code length), so none of this can overflow i64.
            let d = (v >> 1) as i64 ^ -((v & 1) as i64);
            let f = prev + d;
            if !(0..=m as i64).contains(&f) {
                return Err(CodecError::Corrupt("rANS table delta"));
            }
            v = f as u32;
            prev = f;
        }
        sum = sum
            .checked_add(v)
            .filter(|&s| s < m)
            .ok_or(CodecError::Corrupt("rANS table sum"))?;
        *f = v;
    }
    // sum < m, so the implied last frequency is >= 1.
    freq[nsym - 1] = m - sum;
    let mut ent = Box::new([0u32; 1 << MAX_SCALE]);
    let single = freq[..nsym].iter().position(|&f| f == m).map(|s| s as u8);
    if single.is_none() {
        let mut cum = 0usize;
        for (s, &f) in freq.iter().enumerate().take(nsym) {
            let f = f as usize;
            let base = (s as u32) | ((f as u32) << 8);
            for (j, e) in ent[cum..cum + f].iter_mut().enumerate() {
                *e = base | ((j as u32) << 20);
            }
            cum += f;
        }
    }
    Ok((
        DecTable {
            scale,
            ent,
            single,
            nsym,
        },
        3 + br.consumed(),
    ))
}

#[inline(always)]
pub(super) fn rd_u32(b: &[u8], at: usize) -> Result<u32, CodecError> {
    let s = b
        .get(at..at + 4)
        .ok_or(CodecError::Truncated("rANS header"))?;
    Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// Decode exactly `out.len()` symbols; returns the bytes of `input` consumed.
pub fn decode_symbols(input: &[u8], out: &mut [u8]) -> Result<usize, CodecError> {
    decode_impl::<1>(input, out, &[0; 256], Simd::selected()?).map(|r| r.0)
}

/// As [`decode_symbols`], but stores `map[symbol] as u16` (little-endian) for each symbol, so
/// `out` holds `2 * symbols` bytes. Returns (bytes consumed, bound) where every decoded symbol
/// is `< bound`: callers with fewer valid symbols than 256 check it instead of each symbol.
pub fn decode_symbols_map16(
    input: &[u8],
    map: &[u32; 256],
    out: &mut [u8],
) -> Result<(usize, usize), CodecError> {
    decode_impl::<2>(input, out, map, Simd::selected()?)
}

/// [`decode_symbols`] / [`decode_symbols_map16`] (W = 2) with the vector path capped at `simd`.
#[cfg(test)]
pub(crate) fn decode_with<const W: usize>(
    input: &[u8],
    out: &mut [u8],
    map: &[u32; 256],
    simd: Simd,
) -> Result<(usize, usize), CodecError> {
    decode_impl::<W>(input, out, map, simd)
}

/// Store symbol `i`: W = 1 the byte itself, W = 2 its 16-bit mapping.
#[inline(always)]
pub(super) fn put<const W: usize>(out: &mut [u8], i: usize, sym: u8, map: &[u32; 256]) {
    if W == 1 {
        out[i] = sym;
    } else {
        out[2 * i..2 * i + 2].copy_from_slice(&(map[sym as usize] as u16).to_le_bytes());
    }
}

pub(super) fn decode_impl<const W: usize>(
    input: &[u8],
    out: &mut [u8],
    map: &[u32; 256],
    simd: Simd,
) -> Result<(usize, usize), CodecError> {
    let n = out.len() / W;
    let (&mode, rest) = input
        .split_first()
        .ok_or(CodecError::Truncated("entropy mode"))?;
    match mode {
        MODE_RAW => {
            let src = rest.get(..n).ok_or(CodecError::Truncated("raw symbols"))?;
            let mut max = 0;
            for (i, &b) in src.iter().enumerate() {
                max = max.max(b);
                put::<W>(out, i, b, map);
            }
            Ok((1 + n, max as usize + 1))
        }
        MODE_CONST => {
            let &s = rest
                .first()
                .ok_or(CodecError::Truncated("constant symbol"))?;
            for i in 0..n {
                put::<W>(out, i, s, map);
            }
            Ok((2, s as usize + 1))
        }
        MODE_RANS => {
            let (t, tlen) = read_table(rest)?;
            let mut p = tlen;
            let nwords = rd_u32(rest, p)? as usize;
            p += 4;
            let mut x = [0u32; LANES];
            for lane in x.iter_mut() {
                *lane = rd_u32(rest, p)?;
                if *lane < L {
                    return Err(CodecError::Corrupt("rANS state below L"));
                }
                p += 4;
            }
            let wbytes = nwords
                .checked_mul(2)
                .ok_or(CodecError::Corrupt("rANS word count"))?;
            let words = rest
                .get(
                    p..p.checked_add(wbytes)
                        .ok_or(CodecError::Corrupt("rANS word count"))?,
                )
                .ok_or(CodecError::Truncated("rANS words"))?;
            let used = decode_rans::<W>(&t, &mut x, words, &mut out[..n * W], map, simd)?;
            if used != nwords || x.iter().any(|&s| s != L) {
                return Err(CodecError::Corrupt("rANS final state"));
            }
            Ok((1 + p + wbytes, t.nsym))
        }
        _ => Err(CodecError::Corrupt("unknown entropy mode")),
    }
}

/// Dispatch to a hot loop specialised for the table's scale (a constant shift frees a register
/// and the `%cl` shift-count register, measured 25% faster than a variable scale).
pub(super) fn decode_rans<const W: usize>(
    t: &DecTable,
    x: &mut [u32; LANES],
    words: &[u8],
    out: &mut [u8],
    map: &[u32; 256],
    simd: Simd,
) -> Result<usize, CodecError> {
    if let Some(s) = t.single {
        // freq = M: states never change and no word is ever read.
        for i in 0..out.len() / W {
            put::<W>(out, i, s, map);
        }
        return Ok(0);
    }
    match t.scale {
        1 => decode_rans_s::<1, W>(t, x, words, out, map, simd),
        2 => decode_rans_s::<2, W>(t, x, words, out, map, simd),
        3 => decode_rans_s::<3, W>(t, x, words, out, map, simd),
        4 => decode_rans_s::<4, W>(t, x, words, out, map, simd),
        5 => decode_rans_s::<5, W>(t, x, words, out, map, simd),
        6 => decode_rans_s::<6, W>(t, x, words, out, map, simd),
        7 => decode_rans_s::<7, W>(t, x, words, out, map, simd),
        8 => decode_rans_s::<8, W>(t, x, words, out, map, simd),
        9 => decode_rans_s::<9, W>(t, x, words, out, map, simd),
        10 => decode_rans_s::<10, W>(t, x, words, out, map, simd),
        11 => decode_rans_s::<11, W>(t, x, words, out, map, simd),
        _ => decode_rans_s::<12, W>(t, x, words, out, map, simd),
    }
}

/// The hot loop. Returns the number of words read.
pub(super) fn decode_rans_s<const SCALE: u32, const W: usize>(
    t: &DecTable,
    x: &mut [u32; LANES],
    words: &[u8],
    out: &mut [u8],
    map: &[u32; 256],
    simd: Simd,
) -> Result<usize, CodecError> {
    debug_assert_eq!(t.scale, SCALE);
    let scale = SCALE;
    let mask = (1u32 << scale) - 1;
    let ent: &[u32; 1 << MAX_SCALE] = &t.ent;
    let n = out.len() / W;
    let nwords = words.len() / 2;
    let mut st = *x;
    // (symbols done, words read) by the vector path.
    #[cfg(target_arch = "x86_64")]
    let (mut i, mut pos) = {
        match simd.available() {
            // SAFETY: `available` returned Avx512 only if AVX-512 F and BW are present;
            // `x86::avx512::decode` only reads/writes inside the slices it is given (see the bounds
            // argument on it).
            Simd::Avx512 => unsafe {
                x86::avx512::decode::<SCALE, W>(ent, &mut st, words, out, map)
            },
            // SAFETY: as above, AVX2 is present; bounds argued on `x86::avx2::decode`.
            Simd::Avx2 => unsafe { x86::avx2::decode::<SCALE, W>(ent, &mut st, words, out, map) },
            Simd::Scalar => (0, 0),
        }
    };
    #[cfg(not(target_arch = "x86_64"))]
    let (mut i, mut pos) = {
        let _ = simd;
        (0usize, 0usize)
    };
    // Fast path: a group of LANES symbols reads at most LANES words, so whole groups run
    // without per-word end checks while that many words remain.
    while i + LANES <= n && pos + LANES <= nwords {
        let w: &[u8; 2 * LANES] = words[2 * pos..2 * pos + 2 * LANES].try_into().unwrap();
        let mut k = 0usize;
        for (lane, xs) in st.iter_mut().enumerate() {
            let e = ent[(*xs & mask) as usize & ((1 << MAX_SCALE) - 1)];
            put::<W>(out, i + lane, e as u8, map);
            let mut v = ((e >> 8) & 0xfff) * (*xs >> scale) + (e >> 20);
            let kk = k & (LANES - 1);
            let word = u16::from_le_bytes([w[2 * kk], w[2 * kk + 1]]) as u32;
            // Branchless renormalisation: with ~5-bit symbols a word is needed about every third
            // symbol, which a branch would mispredict constantly. A mask select rather than a
            // variable shift keeps %cl free.
            let need = (v < L) as u32;
            let m = need.wrapping_neg();
            v = (((v << 16) | word) & m) | (v & !m);
            k += need as usize;
            *xs = v;
        }
        pos += k;
        i += LANES;
    }
    // Checked path for the end of the stream.
    while i < n {
        let lane = &mut st[i % LANES];
        let e = ent[(*lane & mask) as usize & ((1 << MAX_SCALE) - 1)];
        put::<W>(out, i, e as u8, map);
        let mut v = ((e >> 8) & 0xfff) * (*lane >> scale) + (e >> 20);
        if v < L {
            let w = words
                .get(2 * pos..2 * pos + 2)
                .ok_or(CodecError::Truncated("rANS words"))?;
            v = (v << 16) | u16::from_le_bytes([w[0], w[1]]) as u32;
            pos += 1;
        }
        *lane = v;
        i += 1;
    }
    *x = st;
    Ok(pos)
}

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
//!
//! Encoder (docs/CODEC.md, "Encoder and pack speed"): one pass counts the values at 3 mantissa
//! bits (and splits F32's low planes), the (k, sign) decomposition is chosen by estimating only
//! candidates whose entropy bound can still win, then one pass maps each value to its J symbol
//! by table lookup and gathers the raw fields with BMI2 `pext`. Scratch buffers live per
//! thread. The output is byte-identical to the first, exhaustive encoder.

pub mod via_bf16;

use super::entropy::{
    Simd, StreamPlan, cost_lower_bound, decode_symbols, decode_symbols_map16, encode_planned,
    encode_raw, histogram, plan,
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
    encode_plane_hist(plane, &histogram(plane), out);
}

/// As [`encode_plane`] with the plane's histogram already counted.
fn encode_plane_hist(plane: &[u8], hist: &[u32; 256], out: &mut Vec<u8>) {
    let limit = plane.len() as f64 * (1.0 - PLANE_MIN_SAVING);
    // Most low planes of F32 weights are near 8 bits of entropy: the cheap lower bound already
    // rules them out (same decision as the full estimate, which is never below the bound).
    if cost_lower_bound(hist) as f64 <= limit {
        let p = plan(hist);
        if (p.cost() as f64) <= limit {
            encode_planned(plane, &p, out);
            return;
        }
    }
    encode_raw(plane, out);
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

/// Per-thread encoder scratch, reused from chunk to chunk so that encoding allocates nothing
/// per chunk (fresh 256 KiB buffers cost page faults each time). Sizes are bounded by the chunk
/// size plus the two fixed 2^16-entry tables.
struct Scratch {
    /// Histograms of the top 16 bits of the values (16-bit kinds: even and odd values
    /// separately, so that runs of equal values do not serialise on one counter; F32: only
    /// the first); all zeros between calls.
    h16: [Box<[u32; 1 << 16]>; 2],
    /// J symbol of each `top16 >> lo_bits`; only the entries of present exponents are written
    /// (and read) for a chunk.
    lut: Box<[u8; 1 << 16]>,
    /// (exponent rank, sign, top `kb` mantissa bits) counts, then coarsened in place.
    fine: Vec<u32>,
    syms: Vec<u8>,
    packed: Vec<u8>,
    /// F32: the two low byte planes, `n` bytes each.
    planes: Vec<u8>,
}

impl Scratch {
    fn new() -> Self {
        Scratch {
            h16: [(); 2].map(|()| {
                vec![0u32; 1 << 16]
                    .into_boxed_slice()
                    .try_into()
                    .expect("2^16 entries")
            }),
            lut: vec![0u8; 1 << 16]
                .into_boxed_slice()
                .try_into()
                .expect("2^16 entries"),
            fine: Vec::new(),
            syms: Vec::new(),
            packed: Vec::new(),
            planes: Vec::new(),
        }
    }
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Option<Scratch>> = const { std::cell::RefCell::new(None) };
}

fn encode_split(lay: Layout, es: usize, n: usize, input: &[u8], out: &mut Vec<u8>) {
    SCRATCH.with_borrow_mut(|sc| {
        let sc = sc.get_or_insert_with(Scratch::new);
        encode_split_with(sc, lay, es, n, input, out);
    });
}

/// Choose `k` and `sj` minimising (estimated J stream + packed fields), exactly as an
/// exhaustive search would (minimum cost, ties to the smaller sj, then the smaller k), but
/// estimating only candidates whose entropy lower bound does not already exceed the best cost
/// found: typically 2-4 of the up to 16. Returns (k, sj, plan of the J stream).
fn choose_decomposition(
    fine: &mut [u32],
    ne: usize,
    kb: u32,
    mb: u32,
    n: usize,
) -> (u32, u32, StreamPlan) {
    // g[sj] holds the J histogram at level k (index (jr << k) | top-k mantissa), starting at
    // k = kb and halved (adjacent pairs summed) for each smaller k.
    let mut g0: Vec<u32> = Vec::with_capacity(fine.len() / 2);
    for c in fine.chunks_exact(2 << kb) {
        let (a, b) = c.split_at(1 << kb);
        g0.extend(a.iter().zip(b).map(|(x, y)| x + y));
    }
    // (lower bound, sj, k, histogram)
    let mut cands: Vec<(usize, u32, u32, [u32; 256])> = Vec::with_capacity(16);
    for sj in 0..2u32 {
        let g: &mut [u32] = if sj == 0 { &mut g0 } else { &mut *fine };
        let mut len = ne << (kb + sj);
        for k in (0..=kb).rev() {
            if k < kb {
                for i in 0..len / 2 {
                    g[i] = g[2 * i] + g[2 * i + 1];
                }
                len /= 2;
            }
            if len > 256 {
                continue;
            }
            let mut h = [0u32; 256];
            h[..len].copy_from_slice(&g[..len]);
            let packed = (n * (mb - k + (1 - sj)) as usize).div_ceil(8);
            cands.push((cost_lower_bound(&h) + packed, sj, k, h));
        }
    }
    // Stable sort: equal bounds keep the (sj, k) order.
    cands.sort_by_key(|c| c.0);
    let mut best: Option<(usize, u32, u32, StreamPlan)> = None;
    for (lb, sj, k, h) in &cands {
        if best.as_ref().is_some_and(|b| *lb > b.0) {
            break;
        }
        let p = plan(h);
        let cost = p.cost() + (n * (mb - k + (1 - sj)) as usize).div_ceil(8);
        let better = best
            .as_ref()
            .is_none_or(|b| cost < b.0 || (cost == b.0 && (*sj, *k) < (b.1, b.2)));
        if better {
            best = Some((cost, *sj, *k, p));
        }
    }
    let (_, sj, k, p) = best.expect("k = 0 with sj = 0 is always a candidate (ne <= 256)");
    (k, sj, p)
}

fn encode_split_with(
    sc: &mut Scratch,
    lay: Layout,
    es: usize,
    n: usize,
    input: &[u8],
    out: &mut Vec<u8>,
) {
    let (eb, mb) = (lay.eb, lay.mb);
    let vals = &input[..n * es];
    let [ha, hb] = &mut sc.h16;
    let (h, h2) = (&mut **ha, &mut **hb);
    // First pass: counts of (sign, exponent, top COARSE_BITS mantissa bits), 2^12 bins for
    // BF16/F32 (L1-resident, where the full 2^16 bins are not); for F32 also split off and
    // count the low planes.
    let shift = mb - COARSE_BITS;
    let mut hp = [[0u32; 256]; 2];
    if es == 2 {
        hist_top::<2>(vals, shift, h, h2);
    } else {
        // Every byte is overwritten below: resizing without clearing skips a memset.
        sc.planes.resize(2 * n, 0);
        let (p0, p1) = sc.planes.split_at_mut(n);
        let mut quads = vals.chunks_exact(8);
        let mut i = 0;
        for c in &mut quads {
            h[(u16::from_le_bytes([c[2], c[3]]) >> shift) as usize] += 1;
            h2[(u16::from_le_bytes([c[6], c[7]]) >> shift) as usize] += 1;
            p0[i] = c[0];
            p1[i] = c[1];
            p0[i + 1] = c[4];
            p1[i + 1] = c[5];
            i += 2;
        }
        if let [a, b, c2, c3] = *quads.remainder() {
            h[(u16::from_le_bytes([c2, c3]) >> shift) as usize] += 1;
            p0[i] = a;
            p1[i] = b;
        }
        for (hp, p) in hp.iter_mut().zip([&*p0, &*p1]) {
            if !sample_says_raw(p) {
                *hp = histogram(p);
            }
        }
    }
    let mut exps = Vec::with_capacity(1 << eb);
    let mut kb = collect_exponents(h, h2, eb, mb, shift, &mut exps, &mut sc.fine);
    // J may hold k > COARSE_BITS mantissa bits only when ne << k <= 256, i.e. ne <= 16: only
    // then are the finer counts needed (a second pass; rare for weights). Otherwise the
    // decisions below are exactly those of a search over the full counts.
    if exps.len() << (COARSE_BITS + 1) <= 256 && kb < mb.min(7) {
        hist_top_es(vals, es, 0, h, h2);
        exps.clear();
        kb = collect_exponents(h, h2, eb, mb, 0, &mut exps, &mut sc.fine);
    }
    let ne = exps.len();
    let (k, sj, jplan) = choose_decomposition(&mut sc.fine, ne, kb, mb, n);
    let lo_bits = mb - k;
    let r = lo_bits + (1 - sj);

    out.push(MODE_SPLIT);
    out.push((k | (sj << 7)) as u8);
    out.push((ne - 1) as u8);
    out.extend_from_slice(&exps);

    // J of every 16-bit pattern of a present exponent, indexed by `top16 >> lo_bits` =
    // sign << (eb + k) | exponent << k | top k mantissa bits.
    for (ri, &e) in exps.iter().enumerate() {
        for sign in 0..2usize {
            let jr = (ri << sj) | (sign & sj as usize);
            for mh in 0..1usize << k {
                sc.lut[(sign << (eb + k)) | ((e as usize) << k) | mh] = ((jr << k) | mh) as u8;
            }
        }
    }
    let plen = (n * r as usize).div_ceil(8);
    // Every byte of syms[..n] and packed[..plen] is written below: resizing without clearing
    // skips a memset. 8 bytes of slack: each group of 8 values stores a whole u64.
    sc.syms.resize(n, 0);
    sc.packed.resize(plen + 8, 0);
    // Field of one value: (sign unless sj) << lo_bits | low lo_bits mantissa bits, i.e. the bits
    // of `fmask` gathered in order.
    let fmask = ((1u32 << lo_bits) - 1) | if sj == 0 { 0x8000 } else { 0 };
    let lut: &[u8; 1 << 16] = &sc.lut;
    // Groups of 8 fields fit one u64 only for r <= 8 (F16 with small k has up to 11 bits per
    // field: those chunks take the per-value path below).
    let grouped = r <= 8;
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if grouped && simd_at_least(Simd::Avx2) && std::arch::is_x86_feature_detected!("bmi2") {
        // SAFETY: BMI2 is present (checked just above).
        done = unsafe {
            if es == 2 {
                split_groups_bmi2::<2>(vals, lut, lo_bits, r, fmask, &mut sc.syms, &mut sc.packed)
            } else {
                split_groups_bmi2::<4>(vals, lut, lo_bits, r, fmask, &mut sc.syms, &mut sc.packed)
            }
        };
    }
    if grouped && done == 0 {
        done = if es == 2 {
            split_groups::<2>(vals, lut, lo_bits, r, fmask, &mut sc.syms, &mut sc.packed)
        } else {
            split_groups::<4>(vals, lut, lo_bits, r, fmask, &mut sc.syms, &mut sc.packed)
        };
    }
    // Remaining values (fewer than 8), bit by bit from the byte boundary where the groups end.
    let mut acc = 0u64;
    let mut nacc = 0u32;
    let mut at = done / 8 * r as usize;
    for i in done..n {
        let u = u16::from_le_bytes([vals[i * es + es - 2], vals[i * es + es - 1]]) as u32;
        sc.syms[i] = lut[(u >> lo_bits) as usize];
        acc |= u64::from(gather_bits(u, fmask)) << nacc;
        nacc += r;
        while nacc >= 8 {
            sc.packed[at] = acc as u8;
            at += 1;
            acc >>= 8;
            nacc -= 8;
        }
    }
    if nacc > 0 {
        sc.packed[at] = acc as u8;
    }
    encode_planned(&sc.syms, &jplan, out);
    out.extend_from_slice(&sc.packed[..plen]);
    if lay.low_planes == 2 {
        let (p0, p1) = sc.planes.split_at(n);
        for (p, hist) in [(p0, &hp[0]), (p1, &hp[1])] {
            if hist.iter().all(|&c| c == 0) {
                // Ruled out by the sample (see `sample_says_raw`).
                encode_raw(p, out);
            } else {
                encode_plane_hist(p, hist, out);
            }
        }
    }
    out.extend_from_slice(&input[n * es..]);
}

/// Mantissa bits counted in the first histogram pass (see `encode_split_with`): J never holds
/// more than 3 of them unless a chunk has at most 16 distinct exponents.
const COARSE_BITS: u32 = 3;

/// Count `top16 >> shift` of every value (of `ES` bytes) into `h` and `h2` (even and odd
/// values, so that runs of equal values do not serialise on one counter).
fn hist_top<const ES: usize>(
    vals: &[u8],
    shift: u32,
    h: &mut [u32; 1 << 16],
    h2: &mut [u32; 1 << 16],
) {
    let mut pairs = vals.chunks_exact(2 * ES);
    for c in &mut pairs {
        h[(u16::from_le_bytes([c[ES - 2], c[ES - 1]]) >> shift) as usize] += 1;
        h2[(u16::from_le_bytes([c[2 * ES - 2], c[2 * ES - 1]]) >> shift) as usize] += 1;
    }
    let rest = pairs.remainder();
    if rest.len() >= ES {
        h[(u16::from_le_bytes([rest[ES - 2], rest[ES - 1]]) >> shift) as usize] += 1;
    }
}

fn hist_top_es(
    vals: &[u8],
    es: usize,
    shift: u32,
    h: &mut [u32; 1 << 16],
    h2: &mut [u32; 1 << 16],
) {
    if es == 2 {
        hist_top::<2>(vals, shift, h, h2);
    } else {
        hist_top::<4>(vals, shift, h, h2);
    }
}

/// From counts of `top16 >> shift` in `h + h2`: the present exponents (into `exps`) and the
/// counts of (rank, sign, top kb mantissa bits) (into `fine`); returns kb. The bins read are
/// zeroed again for the next call (bins of absent exponents are zero already).
fn collect_exponents(
    h: &mut [u32; 1 << 16],
    h2: &mut [u32; 1 << 16],
    eb: u32,
    mb: u32,
    shift: u32,
    exps: &mut Vec<u8>,
    fine: &mut Vec<u32>,
) -> u32 {
    let mbs = mb - shift; // mantissa bits left in the index
    let kb = mbs.min(7);
    let sub = 1usize << (mbs - kb);
    let blk_len = 1usize << mbs;
    fine.clear();
    for e in 0..1usize << eb {
        let lo = e << mbs;
        let hi = (1 << (15 - shift)) | lo;
        let any = h[lo..lo + blk_len]
            .iter()
            .chain(&h[hi..hi + blk_len])
            .chain(&h2[lo..lo + blk_len])
            .chain(&h2[hi..hi + blk_len])
            .fold(0, |a, &c| a | c);
        if any == 0 {
            continue;
        }
        exps.push(e as u8);
        for base in [lo, hi] {
            let blk = &mut h[base..base + blk_len];
            let blk2 = &mut h2[base..base + blk_len];
            fine.extend(
                blk.chunks_exact(sub)
                    .zip(blk2.chunks_exact(sub))
                    .map(|(c, d)| c.iter().chain(d).sum::<u32>()),
            );
            blk.fill(0);
            blk2.fill(0);
        }
    }
    kb
}

/// Values sampled (every `SAMPLE_STEP`-th byte) before a low byte plane is counted in full.
const SAMPLE_STEP: usize = 8;
/// A plane whose sample has at least this many bits of plug-in entropy per byte is stored raw
/// without a full histogram. Coding needs a saving of `PLANE_MIN_SAVING` (3%, i.e. at most
/// ~7.76 bits per byte before table costs); the plug-in estimate is biased low by about
/// (255 / (2 ln 2 N)) = 0.02 bits at the 4096-byte minimum sample, and its spread is ~0.01
/// bit, so a sample at 7.9 bits does not come from a codable plane. Most F32 low planes of
/// trained weights sit at 7.97-8.0 bits; counting them in full was ~10% of F32 encode time.
const SAMPLE_RAW_BITS: f64 = 7.9;

/// True when a subsample shows the plane is too close to uniform to be coded (see
/// `SAMPLE_RAW_BITS`). Planes shorter than 4096 samples are always counted in full.
fn sample_says_raw(plane: &[u8]) -> bool {
    if plane.len() < 4096 * SAMPLE_STEP {
        return false;
    }
    let mut h = [0u32; 256];
    for &b in plane.iter().step_by(SAMPLE_STEP) {
        h[b as usize] += 1;
    }
    let t = f64::from(h.iter().sum::<u32>());
    let bits: f64 = h
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / t;
            -p * p.log2()
        })
        .sum();
    bits >= SAMPLE_RAW_BITS
}

/// The bits of `u` selected by `mask`, packed towards bit 0 in order (a portable `pext`).
#[inline(always)]
fn gather_bits(u: u32, mask: u32) -> u32 {
    // fmask is a run of low bits, optionally plus bit 15.
    let lo = mask & 0x7fff;
    let r_lo = lo.count_ones();
    (u & lo)
        | if mask & 0x8000 != 0 {
            (u >> 15) << r_lo
        } else {
            0
        }
}

/// J symbols and packed fields of whole groups of 8 values (each group's 8 fields are exactly
/// `r` bytes); returns the number of values done.
fn split_groups<const ES: usize>(
    vals: &[u8],
    lut: &[u8; 1 << 16],
    shift: u32,
    r: u32,
    fmask: u32,
    syms: &mut [u8],
    packed: &mut [u8],
) -> usize {
    let groups = vals.len() / ES / 8;
    let ru = r as usize;
    for (g, (v, s)) in vals
        .chunks_exact(8 * ES)
        .zip(syms.chunks_exact_mut(8))
        .enumerate()
    {
        let mut bits = 0u64;
        for j in 0..8 {
            let u = u16::from_le_bytes([v[j * ES + ES - 2], v[j * ES + ES - 1]]) as u32;
            s[j] = lut[(u >> shift) as usize];
            bits |= u64::from(gather_bits(u, fmask)) << (j as u32 * r);
        }
        packed[g * ru..g * ru + 8].copy_from_slice(&bits.to_le_bytes());
    }
    groups * 8
}

/// As [`split_groups`], with BMI2 `pext` gathering the fields of 4 (BF16/F16) or 2 (F32)
/// values per instruction.
///
/// # Safety
/// The CPU must support BMI2. All memory access is through checked slices.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "bmi2")]
unsafe fn split_groups_bmi2<const ES: usize>(
    vals: &[u8],
    lut: &[u8; 1 << 16],
    shift: u32,
    r: u32,
    fmask: u32,
    syms: &mut [u8],
    packed: &mut [u8],
) -> usize {
    use std::arch::x86_64::_pext_u64;
    let groups = vals.len() / ES / 8;
    let ru = r as usize;
    let fm = u64::from(fmask);
    // The field mask on each value's top 16 bits inside 8 little-endian bytes.
    let m = if ES == 2 {
        fm | fm << 16 | fm << 32 | fm << 48
    } else {
        fm << 16 | fm << 48
    };
    let per = (8 / ES) as u32 * r; // field bits per u64 word
    for (g, (v, s)) in vals
        .chunks_exact(8 * ES)
        .zip(syms.chunks_exact_mut(8))
        .enumerate()
    {
        for j in 0..8 {
            let u = u16::from_le_bytes([v[j * ES + ES - 2], v[j * ES + ES - 1]]) as u32;
            s[j] = lut[(u >> shift) as usize];
        }
        let mut bits = 0u64;
        for (w, c) in v.chunks_exact(8).enumerate() {
            let word = u64::from_le_bytes(c.try_into().expect("8 bytes"));
            bits |= _pext_u64(word, m) << (w as u32 * per);
        }
        packed[g * ru..g * ru + 8].copy_from_slice(&bits.to_le_bytes());
    }
    groups * 8
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
    #[cfg(target_arch = "x86_64")]
    if (1..=8).contains(&r)
        && simd_at_least(Simd::Avx2)
        && std::arch::is_x86_feature_detected!("bmi2")
        && std::arch::is_x86_feature_detected!("sse4.1")
    {
        let mut done = 0;
        if simd_at_least(Simd::Avx512)
            && std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vbmi")
        {
            // SAFETY: the features are present (checked just above); bounds on `or_fields_vbmi`.
            done = unsafe { or_fields_vbmi(r, lo_bits, packed, vals) };
        }
        // `done` is a multiple of 64 values = 8 r whole bytes of `packed`, inside it.
        let pk = packed.get(done * r as usize / 8..).unwrap_or(&[]);
        let vs = vals.get_mut(2 * done..).unwrap_or(&mut []);
        // SAFETY: the features are present (checked just above); see `or_fields_bmi2` for bounds.
        done += unsafe { or_fields_bmi2(r, lo_bits, pk, vs) };
        or_fields_tail(r, lo_bits, done, packed, vals);
        return Ok(p);
    }
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
    or_fields_tail(r, lo_bits, done, packed, vals);
    Ok(p)
}

/// Checked per-value path for the values from `done` on.
fn or_fields_tail(r: u32, lo_bits: u32, done: usize, packed: &[u8], vals: &mut [u8]) {
    for (i, o) in vals.chunks_exact_mut(2).enumerate().skip(done) {
        let f = field_at(packed, r, i);
        let u = u16::from_le_bytes([o[0], o[1]]) as u32
            | ((f >> lo_bits) << 15)
            | (f & ((1 << lo_bits) - 1));
        o.copy_from_slice(&(u as u16).to_le_bytes());
    }
}

/// As `or_fields`, for any `r` in 1..=8: one `pdep` spreads the 8 fields of a group into 8
/// bytes, SSE widens them to 16 bits and ORs sign and low bits into the 8 values at once
/// (measured: the scalar version cost about half as much as the whole rANS decode).
///
/// # Safety
/// The CPU must support BMI2 and SSE4.1. Bounds: for `g < groups`, `g * 16 + 16 <= 2 * (n / 8)
/// * 8 <= vals.len()` for the 16-byte load/store; `packed` is read through checked slicing.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "bmi2,sse4.1")]
unsafe fn or_fields_bmi2(r: u32, lo_bits: u32, packed: &[u8], vals: &mut [u8]) -> usize {
    use std::arch::x86_64::*;
    let n = vals.len() / 2;
    let ru = r as usize;
    let groups = (n / 8).min(packed.len().saturating_sub(8) / ru + usize::from(packed.len() >= 8));
    let spread = 0x0101_0101_0101_0101u64 * ((1u64 << r) - 1);
    unsafe {
        let lo_mask = _mm_set1_epi16(((1u32 << lo_bits) - 1) as i16);
        let sh_lo = _mm_cvtsi32_si128(lo_bits as i32);
        let base = vals.as_mut_ptr();
        for g in 0..groups {
            let w = u64::from_le_bytes(packed[g * ru..g * ru + 8].try_into().unwrap());
            let f8 = _pdep_u64(w, spread);
            let f = _mm_cvtepu8_epi16(_mm_cvtsi64_si128(f8 as i64));
            let sign = _mm_slli_epi16::<15>(_mm_srl_epi16(f, sh_lo));
            let add = _mm_or_si128(sign, _mm_and_si128(f, lo_mask));
            let ptr = base.add(g * 16) as *mut __m128i;
            _mm_storeu_si128(ptr, _mm_or_si128(_mm_loadu_si128(ptr), add));
        }
    }
    groups * 8
}

/// As `or_fields_bmi2`, 64 values per step: `vpermb` places the 8 r-byte groups of fields in
/// the 8 qwords, `vpmultishiftqb` pulls field t of each qword into its byte t, and the fields
/// are widened and OR-ed into 64 values (two 64-byte load/stores). Measured: or_fields_bmi2 was
/// 13% of a one-thread BF16 `upg bench` once the AVX-512 rANS decoder was in. Returns the number
/// of values done (a multiple of 64).
///
/// # Safety
/// The CPU must support AVX-512 F, BW and VBMI; `r` must be in 1..=8. Bounds: block `b <
/// blocks` loads `packed[8rb .. 8rb + 64]`, inside `packed` by the choice of `blocks`, and
/// loads/stores `vals[128b .. 128b + 128]`, inside `vals` since `64 (b + 1) <= n`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
unsafe fn or_fields_vbmi(r: u32, lo_bits: u32, packed: &[u8], vals: &mut [u8]) -> usize {
    use std::arch::x86_64::*;
    let n = vals.len() / 2;
    let ru = r as usize;
    let step = 8 * ru; // bytes of fields per 64 values
    let blocks = (n / 64).min(packed.len().checked_sub(64).map_or(0, |s| s / step + 1));
    // Byte 8q + t of the gathered qwords is byte q r + t of the block (<= 7 * 8 + 7 = 63);
    // field t of a qword starts at bit t r.
    let mut gather = [0u8; 64];
    let mut shift = [0u8; 64];
    for (k, (g, sh)) in gather.iter_mut().zip(shift.iter_mut()).enumerate() {
        let (q, t) = (k / 8, k % 8);
        *g = (q * ru + t) as u8;
        *sh = (t * ru) as u8;
    }
    // SAFETY: see the function's bounds argument; the arrays above are 64 bytes each.
    unsafe {
        let gidx = _mm512_loadu_si512(gather.as_ptr().cast());
        let sidx = _mm512_loadu_si512(shift.as_ptr().cast());
        let rmask = _mm512_set1_epi8(((1u32 << r) - 1) as u8 as i8);
        let lo_mask = _mm512_set1_epi16(((1u32 << lo_bits) - 1) as i16);
        let sh_lo = _mm_cvtsi32_si128(lo_bits as i32);
        let pp = packed.as_ptr();
        let vp = vals.as_mut_ptr();
        for b in 0..blocks {
            let src = _mm512_loadu_si512(pp.add(b * step).cast());
            let q = _mm512_permutexvar_epi8(gidx, src);
            let f = _mm512_and_si512(_mm512_multishift_epi64_epi8(sidx, q), rmask);
            let halves = [_mm512_castsi512_si256(f), _mm512_extracti64x4_epi64::<1>(f)];
            for (h, half) in halves.into_iter().enumerate() {
                let fw = _mm512_cvtepu8_epi16(half);
                let sign = _mm512_slli_epi16::<15>(_mm512_srl_epi16(fw, sh_lo));
                let add = _mm512_or_si512(sign, _mm512_and_si512(fw, lo_mask));
                let ptr = vp.add(128 * b + 64 * h);
                let cur = _mm512_loadu_si512(ptr.cast());
                _mm512_storeu_si512(ptr.cast(), _mm512_or_si512(cur, add));
            }
        }
    }
    blocks * 64
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

/// True when the process's coder path ([`Simd::selected`], which `UPG_SIMD` can force) is at
/// least `tier`: the BMI2 field kernels count as the AVX2 tier, the VBMI one as AVX-512, so a
/// forced scalar run uses only the portable loops. (An unusable `UPG_SIMD` is reported by the
/// entropy decoder of the same chunk.)
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
fn simd_at_least(tier: Simd) -> bool {
    Simd::selected().is_ok_and(|s| s >= tier)
}

/// `out[4i..4i+4] = [p0[i], p1[i], top[2i], top[2i+1]]`.
fn interleave_f32(top: &[u8], p0: &[u8], p1: &[u8], out: &mut [u8]) {
    let n = p0.len();
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        // SSE2 is part of the x86_64 baseline. Bounds: for blocks of 16 values starting at
        // i <= n - 16, reads p0/p1[i..i+16], top[2i..2i+32], writes out[4i..4i+64], all inside
        // the slices (top.len() = 2n, out.len() = 4n, asserted below).
        assert!(top.len() == 2 * n && p1.len() == n && out.len() == 4 * n);
        while done + 16 <= n {
            let i = done;
            unsafe {
                let a = _mm_loadu_si128(p0.as_ptr().add(i) as *const __m128i);
                let b = _mm_loadu_si128(p1.as_ptr().add(i) as *const __m128i);
                let t0 = _mm_loadu_si128(top.as_ptr().add(2 * i) as *const __m128i);
                let t1 = _mm_loadu_si128(top.as_ptr().add(2 * i + 16) as *const __m128i);
                let lo = _mm_unpacklo_epi8(a, b);
                let hi = _mm_unpackhi_epi8(a, b);
                let o = out.as_mut_ptr().add(4 * i) as *mut __m128i;
                _mm_storeu_si128(o, _mm_unpacklo_epi16(lo, t0));
                _mm_storeu_si128(o.add(1), _mm_unpackhi_epi16(lo, t0));
                _mm_storeu_si128(o.add(2), _mm_unpacklo_epi16(hi, t1));
                _mm_storeu_si128(o.add(3), _mm_unpackhi_epi16(hi, t1));
            }
            done += 16;
        }
    }
    for i in done..n {
        out[4 * i..4 * i + 4].copy_from_slice(&[p0[i], p1[i], top[2 * i], top[2 * i + 1]]);
    }
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
    // Per-thread scratch: fresh zeroed 2n-byte buffers per chunk cost ~7% of a one-thread F32
    // `upg bench` in memset and page faults. Every byte used is overwritten by the decoders
    // before it is read (they write all `out.len()` bytes they are given, or fail).
    DEC_SCRATCH.with_borrow_mut(|(top, planes)| {
        top.resize(2 * n, 0);
        planes.resize(2 * n, 0);
        p += decode_split16(r, lo_bits, nvalid, n, &pat, &body[p..], &mut top[..2 * n])?;
        let (p0, p1) = planes[..2 * n].split_at_mut(n);
        p += decode_symbols(&body[p..], p0)?;
        p += decode_symbols(&body[p..], p1)?;
        interleave_f32(&top[..2 * n], p0, p1, &mut out[..4 * n]);
        copy_tail(es, n, body, p, out)
    })
}

thread_local! {
    /// F32 split decode scratch: (top 16 bits of each value, the two low byte planes).
    static DEC_SCRATCH: std::cell::RefCell<(Vec<u8>, Vec<u8>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
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

    /// The BMI2 field path and the portable const-generic path agree (only one of them runs in
    /// the round-trip tests on a given machine).
    #[test]
    fn or_fields_paths_agree() {
        let mut s = 3u64;
        let mut rnd = || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 56) as u8
        };
        let packed: Vec<u8> = (0..1000).map(|_| rnd()).collect();
        let vals0: Vec<u8> = (0..1600).map(|_| rnd() & 0x80).collect();
        for r in 1..=8u32 {
            for sr in 0..=1u32 {
                let lo = r - sr;
                let mut a = vals0.clone();
                let da = match (r, sr) {
                    (1, 0) => or_fields::<1, 0>(&packed, &mut a),
                    (2, 0) => or_fields::<2, 0>(&packed, &mut a),
                    (3, 0) => or_fields::<3, 0>(&packed, &mut a),
                    (4, 0) => or_fields::<4, 0>(&packed, &mut a),
                    (5, 0) => or_fields::<5, 0>(&packed, &mut a),
                    (6, 0) => or_fields::<6, 0>(&packed, &mut a),
                    (7, 0) => or_fields::<7, 0>(&packed, &mut a),
                    (8, 0) => or_fields::<8, 0>(&packed, &mut a),
                    (1, 1) => or_fields::<1, 1>(&packed, &mut a),
                    (2, 1) => or_fields::<2, 1>(&packed, &mut a),
                    (3, 1) => or_fields::<3, 1>(&packed, &mut a),
                    (4, 1) => or_fields::<4, 1>(&packed, &mut a),
                    (5, 1) => or_fields::<5, 1>(&packed, &mut a),
                    (6, 1) => or_fields::<6, 1>(&packed, &mut a),
                    (7, 1) => or_fields::<7, 1>(&packed, &mut a),
                    _ => or_fields::<8, 1>(&packed, &mut a),
                };
                or_fields_tail(r, lo, da, &packed, &mut a);
                let mut b = vals0.clone();
                or_fields_tail(r, lo, 0, &packed, &mut b);
                assert_eq!(a, b, "portable r={r} sr={sr}");
                #[cfg(target_arch = "x86_64")]
                if std::arch::is_x86_feature_detected!("bmi2")
                    && std::arch::is_x86_feature_detected!("sse4.1")
                {
                    let mut c = vals0.clone();
                    let dc = unsafe { or_fields_bmi2(r, lo, &packed, &mut c) };
                    or_fields_tail(r, lo, dc, &packed, &mut c);
                    assert_eq!(c, b, "bmi2 r={r} sr={sr}");
                }
                #[cfg(target_arch = "x86_64")]
                if std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vbmi")
                {
                    for cut in [0, 1, 63, 64, 65, 200] {
                        // Shorter `packed` and `vals` than whole blocks, too.
                        let pk = &packed[..packed.len() - cut];
                        let mut c = vals0.clone();
                        let mut d = vals0.clone();
                        let dc = unsafe { or_fields_vbmi(r, lo, pk, &mut c) };
                        assert_eq!(dc % 64, 0);
                        or_fields_tail(r, lo, dc, pk, &mut c);
                        or_fields_tail(r, lo, 0, pk, &mut d);
                        assert_eq!(c, d, "vbmi r={r} sr={sr} cut={cut}");
                    }
                }
            }
        }
    }

    /// The BMI2 split path and the portable one give the same symbols and packed fields, for
    /// both value sizes and every field layout (only one of them runs in the round trips).
    #[test]
    fn split_paths_agree() {
        let mut s = 5u64;
        let vals: Vec<u8> = (0..4096)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (s >> 56) as u8
            })
            .collect();
        let mut lut = Box::new([0u8; 1 << 16]);
        for (i, v) in lut.iter_mut().enumerate() {
            *v = (i as u32).wrapping_mul(2654435761).rotate_left(7) as u8;
        }
        for lo_bits in 0..=7u32 {
            for sj in 0..=1u32 {
                let r = lo_bits + (1 - sj);
                let fmask = ((1u32 << lo_bits) - 1) | if sj == 0 { 0x8000 } else { 0 };
                for es in [2usize, 4] {
                    let n = vals.len() / es;
                    let mut sa = vec![0u8; n];
                    let mut pa = vec![0u8; n + 8];
                    let da = if es == 2 {
                        split_groups::<2>(&vals, &lut, lo_bits, r, fmask, &mut sa, &mut pa)
                    } else {
                        split_groups::<4>(&vals, &lut, lo_bits, r, fmask, &mut sa, &mut pa)
                    };
                    assert_eq!(da, n / 8 * 8);
                    // Reference: one value at a time.
                    let mut bits = Vec::new();
                    for i in 0..da {
                        let u = u16::from_le_bytes([vals[i * es + es - 2], vals[i * es + es - 1]])
                            as u32;
                        assert_eq!(sa[i], lut[(u >> lo_bits) as usize]);
                        let f = gather_bits(u, fmask);
                        bits.extend((0..r).map(|b| (f >> b) & 1));
                    }
                    let want: Vec<u8> = bits
                        .chunks(8)
                        .map(|c| c.iter().enumerate().map(|(j, &b)| (b << j) as u8).sum())
                        .collect();
                    assert_eq!(&pa[..want.len()], &want[..], "es={es} lo={lo_bits} sj={sj}");
                    #[cfg(target_arch = "x86_64")]
                    if std::arch::is_x86_feature_detected!("bmi2") {
                        let mut sb = vec![0u8; n];
                        let mut pb = vec![0u8; n + 8];
                        let db = unsafe {
                            if es == 2 {
                                split_groups_bmi2::<2>(
                                    &vals, &lut, lo_bits, r, fmask, &mut sb, &mut pb,
                                )
                            } else {
                                split_groups_bmi2::<4>(
                                    &vals, &lut, lo_bits, r, fmask, &mut sb, &mut pb,
                                )
                            }
                        };
                        assert_eq!(db, da);
                        assert_eq!(sb, sa);
                        assert_eq!(
                            &pb[..want.len()],
                            &want[..],
                            "bmi2 es={es} lo={lo_bits} sj={sj}"
                        );
                    }
                }
            }
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

//! The encoder: stream modes, the table, and the rANS encode loop (scalar here; the AVX2
//! encoder in `x86/avx2_enc.rs` writes the same bytes).

use super::bits::BitWriter;
use super::model::{StreamPlan, TABLE_DELTA, delta_code, histogram, plan};
#[cfg(target_arch = "x86_64")]
use super::x86;
use super::{L, LANES, MAX_SCALE, MODE_CONST, MODE_RANS, MODE_RAW, Simd};

/// Store `symbols` in raw mode (1 + n bytes), for callers that judge coding not worth its
/// decode time.
pub fn encode_raw(symbols: &[u8], out: &mut Vec<u8>) {
    out.push(MODE_RAW);
    out.extend_from_slice(symbols);
}

/// Encode `symbols`; see the module header for the format.
pub fn encode_symbols(symbols: &[u8], out: &mut Vec<u8>) {
    let hist = histogram(symbols);
    encode_with_hist(symbols, &hist, out);
}

/// As [`encode_symbols`] with a precomputed histogram of `symbols`.
pub fn encode_with_hist(symbols: &[u8], hist: &[u32; 256], out: &mut Vec<u8>) {
    encode_planned(symbols, &plan(hist), out);
}

/// Encode `symbols` as planned by [`plan`]; `p` must be the plan of exactly this histogram
/// (a plan of other symbols may leave a present symbol without a frequency).
pub(crate) fn encode_planned(symbols: &[u8], p: &StreamPlan, out: &mut Vec<u8>) {
    let n = symbols.len();
    if n == 0 {
        out.push(MODE_RAW);
        return;
    }
    let Some(t) = &p.table else {
        // Fewer than two symbols present, and n > 0: one symbol.
        out.push(MODE_CONST);
        out.push(symbols[0]);
        return;
    };
    if p.cost > n {
        out.push(MODE_RAW);
        out.extend_from_slice(symbols);
        return;
    }
    let start = out.len();
    out.push(MODE_RANS);
    out.push(t.scale as u8);
    out.push((t.nsym - 1) as u8);
    out.push(t.eg_order as u8);
    {
        let mut bw = BitWriter { out, acc: 0, n: 0 };
        let k = t.eg_order & 15;
        for s in 0..t.nsym - 1 {
            let v = if t.eg_order & TABLE_DELTA != 0 {
                delta_code(&t.freq, s)
            } else {
                t.freq[s]
            };
            bw.eg(v, k);
        }
        bw.finish();
    }
    rans_encode(symbols, &t.freq, t.scale, out);
    if out.len() - start > n {
        out.truncate(start);
        out.push(MODE_RAW);
        out.extend_from_slice(symbols);
    }
}

/// Per-symbol encoder constants: the division by `freq` of the textbook encoder is done as a
/// multiplication by a fixed-point reciprocal (measured: `div` was the bottleneck of the encode
/// loop even with 32 independent lanes).
#[derive(Clone, Copy, Default)]
pub(super) struct EncSym {
    /// A word is emitted first when `x >= xmax = freq << (32 - scale)`.
    pub(super) xmax: u32,
    /// `cum[s]`.
    pub(super) bias: u32,
    /// `M - freq`.
    pub(super) cmpl: u32,
    /// `ceil(2^RCP_SHIFT / freq)`.
    pub(super) rcp: u64,
}

/// Fixed-point position of the reciprocals. With `x < 2^32`, `1 <= f < 2^MAX_SCALE` and
/// `m = ceil(2^44 / f)`, `floor(x * m / 2^44) == floor(x / f)` exactly: `m * f = 2^44 + e` with
/// `0 <= e < f`, so `x * m / 2^44 = x / f + x * e / (f * 2^44)`; the added term is below
/// `2^32 * f / (f * 2^44) = 2^-12 <= 1 / f`, and the fractional part of `x / f` is at most
/// `1 - 1 / f`, so the floor never moves. The product needs 76 bits (one 64x64->128 `mul`).
pub(super) const RCP_SHIFT: u32 = 32 + MAX_SCALE;

thread_local! {
    /// Renormalisation words of the stream being encoded, reused across calls: a fresh buffer
    /// per 256 KiB stream costs an allocation and page faults each time.
    static WORD_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// One encoder step on one lane: renormalise (at most one word: after `x >> 16`, `x < 2^16 <
/// xmax`), then `x = (x / f) * M + x % f + cum`, written as `x + cum + (x / f) * (M - f)`.
/// The result is below `2^32`: `x < f * 2^(32 - scale)` gives `x / f < 2^(32 - scale)`.
#[inline(always)]
pub(super) fn enc_step(x: &mut u32, e: &EncSym, buf: &mut [u8], wp: &mut usize) {
    let v = *x;
    let emit = v >= e.xmax;
    // Branchless: the word is always stored and the write position moves only when it is
    // kept (the branch would be mispredicted about a third of the time).
    buf[2 * *wp..2 * *wp + 2].copy_from_slice(&(v as u16).to_le_bytes());
    *wp -= usize::from(emit);
    let v = if emit { v >> 16 } else { v };
    let q = ((u128::from(v) * u128::from(e.rcp)) >> RCP_SHIFT) as u32;
    *x = v.wrapping_add(e.bias).wrapping_add(q.wrapping_mul(e.cmpl));
}

/// Append `u32 nwords, u32 state[LANES], u16 words[nwords]` for `symbols` under `freq` (every
/// symbol present in `symbols` has `freq > 0`; the frequencies sum to `1 << scale`).
pub(super) fn rans_encode(symbols: &[u8], freq: &[u32; 256], scale: u32, out: &mut Vec<u8>) {
    // A forced scalar path (or an unusable UPG_SIMD, which the decoders report) encodes
    // without vectors; the bytes are the same either way.
    let vector = matches!(Simd::selected(), Ok(s) if s >= Simd::Avx2);
    rans_encode_with(symbols, freq, scale, out, vector)
}

/// [`rans_encode`] with the AVX2 encoder allowed (`vector`, if the CPU has it) or not.
pub(super) fn rans_encode_with(
    symbols: &[u8],
    freq: &[u32; 256],
    scale: u32,
    out: &mut Vec<u8>,
    vector: bool,
) {
    let n = symbols.len();
    let mut tab = [EncSym::default(); 256];
    let mut cum = 0u32;
    for (e, &f) in tab.iter_mut().zip(freq) {
        if f > 0 {
            *e = EncSym {
                xmax: f << (32 - scale),
                bias: cum,
                cmpl: (1u32 << scale) - f,
                rcp: (1u64 << RCP_SHIFT).div_ceil(u64::from(f)),
            };
        }
        cum += f;
    }
    WORD_BUF.with_borrow_mut(|buf| {
        // At most one word per symbol; words are written from the end backwards (the encoder
        // runs backwards so that the decoder runs forwards), slot `wp` being the next one.
        // Only slots that were written are read back: no need to clear (saves a memset).
        buf.resize(2 * (n + 1), 0);
        // A plain slice: through the Vec the loop reloaded its pointer and length every step.
        let buf: &mut [u8] = &mut buf[..];
        let mut wp = n;
        let mut x = [L; LANES];
        let full = n - n % LANES;
        for i in (full..n).rev() {
            enc_step(&mut x[i % LANES], &tab[symbols[i] as usize], buf, &mut wp);
        }
        #[cfg(target_arch = "x86_64")]
        let simd = vector && std::arch::is_x86_feature_detected!("avx2");
        #[cfg(not(target_arch = "x86_64"))]
        let simd = {
            let _ = vector;
            false
        };
        #[cfg(target_arch = "x86_64")]
        if simd {
            let vt = x86::avx2_enc::VecTable::new(freq, scale);
            // SAFETY: AVX2 is present (checked just above); see `encode_groups` for bounds.
            unsafe { x86::avx2_enc::encode_groups(&vt, &symbols[..full], &mut x, buf, &mut wp) };
        }
        if !simd {
            for g in symbols[..full].chunks_exact(LANES).rev() {
                for j in (0..LANES).rev() {
                    enc_step(&mut x[j], &tab[g[j] as usize], buf, &mut wp);
                }
            }
        }
        let nwords = n - wp;
        out.extend_from_slice(&(nwords as u32).to_le_bytes());
        for s in x {
            out.extend_from_slice(&s.to_le_bytes());
        }
        out.extend_from_slice(&buf[2 * (wp + 1)..]);
    });
}

/// Scalar form of the vector encoder's division: Granlund-Montgomery's round-up method for
/// 32-bit dividends ("Division by invariant integers using multiplication", 1994, fig. 4.1),
/// `q = (t + ((x - t) >> sh1)) >> sh2` with `t = mulhi(x, m)`, exact for every `x < 2^32` and
/// `1 <= f < 2^32`; only 32x32->64 multiplies, which AVX2 has (`vpmuludq`). Returns
/// `(m, sh1, sh2)` with `l = ceil(log2 f)`, `m = floor(2^32 (2^l - f) / f) + 1 < 2^32`,
/// `sh1 = min(l, 1)`, `sh2 = max(l, 1) - 1`.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(super) fn gm_divisor(f: u32) -> (u32, u32, u32) {
    let l = if f <= 1 {
        0
    } else {
        32 - (f - 1).leading_zeros()
    };
    let m = (((1u64 << 32) * ((1u64 << l) - u64::from(f))) / u64::from(f) + 1) as u32;
    (m, l.min(1), l.max(1) - 1)
}

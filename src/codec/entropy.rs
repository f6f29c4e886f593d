//! Order-0 entropy coder for byte-alphabet symbol streams: [`LANES`]-way (32) interleaved rANS with 32-bit
//! states and 16-bit renormalisation, hand-written (see docs/CODEC.md for why not a crate).
//!
//! # API
//!
//! ```text
//! encode_symbols(symbols: &[u8], out: &mut Vec<u8>)
//!     Appends a self-delimiting stream for `symbols` to `out`. Deterministic. The stream never
//!     exceeds `symbols.len() + 1` bytes (it falls back to storing the symbols raw).
//!
//! decode_symbols(stream: &[u8], out: &mut [u8]) -> Result<usize, CodecError>
//!     Decodes exactly `out.len()` symbols from the start of `stream` and returns how many bytes
//!     of `stream` the encoded symbols occupied, so several streams can be concatenated and
//!     read back one after the other. The symbol count is NOT stored: the caller must know it
//!     (the archive index gives every chunk's decoded length). Hostile input yields an error,
//!     never a panic, an out-of-bounds access or an unbounded loop (work is O(out.len() +
//!     stream.len())). A stream that ends with states other than the encoder's initial ones
//!     or with unread words is rejected as `Corrupt`.
//!
//! estimate_cost(hist: &[u32; 256]) -> usize
//!     The stored size `encode_symbols` would produce for symbols with this histogram, from the
//!     entropy under the quantised table (the real rANS stream is typically 0.1-0.2% larger).
//!     Lets callers decide "code or store raw" and compare alternative symbol decompositions
//!     without encoding.
//!
//! plan(hist) -> StreamPlan;  encode_planned(symbols, &plan, out);  cost_lower_bound(hist)
//!     The same decision split in two: choose the table once, compare costs, encode the chosen
//!     plan without choosing again; and a cheap lower bound of `estimate_cost` (entropy) to
//!     skip estimating alternatives that cannot win.
//! ```
//!
//! # Encoder speed
//!
//! Division by the frequency is a multiplication by a reciprocal (scalar: 2^44-scaled, one
//! 64x64->128 multiply; AVX2: Granlund-Montgomery with 32x32->64 multiplies), renormalisation
//! is branchless, the table scale is searched downwards from 12 and normalisation uses a heap.
//! All of it writes exactly the bytes of the first (division-based) encoder.
//!
//! # Decoder speed
//!
//! The decode hot loop has a scalar, an AVX2 and an AVX-512 (F + BW) version, picked at run
//! time ([`Simd::selected`]: the best the CPU has, or the one `UPG_SIMD=scalar|avx2|avx512`
//! forces); all give the same output and errors (tested by forcing each). The vector kernels
//! live in `entropy/x86/`, the only `unsafe` code here. Measurements in docs/CODEC.md, "Decode
//! speed at the product level".
//!
//! # Stream format (all integers little-endian)
//!
//! ```text
//! u8 mode
//!   0 = raw:       the symbols follow verbatim (n bytes)
//!   1 = constant:  u8 symbol; every one of the n symbols is it
//!   2 = rANS:
//!       u8  scale           log2 of the frequency total M, 1..=MAX_SCALE
//!       u8  nsym_minus_1    alphabet is 0..nsym
//!       u8  table_code      bits 0-3: Exp-Golomb order k; bit 4: delta mode (each value is
//!                           zigzag(freq[s] - freq[s-1]), freq[-1] = 0); other bits 0
//!       table               bit-packed (LSB first) Exp-Golomb-k codes of freq[0..nsym-1]
//!                           (or of their deltas);
//!                           freq[nsym-1] is implied (M - sum) and must be >= 1;
//!                           padded to a whole byte
//!       u32 nwords          number of 16-bit renormalisation words
//!       u32 state[LANES]    final encoder states = initial decoder states, each in [L, 2^32)
//!       u16 words[nwords]   in decoder order
//! ```
//!
//! Symbol `i` is coded by lane `i % LANES`. Decoding a symbol: `slot = x & (M-1)`, `s` is the
//! symbol whose cumulative range holds `slot`, `x = freq[s] * (x >> scale) + slot - cum[s]`,
//! then if `x < L` one word `w` is read: `x = (x << 16) | w`.

use super::CodecError;

/// The vector kernels (AVX2 encoder, AVX2 and AVX-512 decoders), the only `unsafe` code of the
/// coder; everything else here is safe Rust and runs on every target.
#[cfg(target_arch = "x86_64")]
mod x86;

/// Number of interleaved rANS states.
/// 32 = four AVX2 vectors of 8 states: one vector alone is latency-bound (gather -> multiply ->
/// renormalise is ~40 cycles), four in flight keep the gather unit busy. Costs 128 bytes of
/// flushed state per stream.
pub const LANES: usize = 32;
/// Largest supported log2 of the frequency total.
pub const MAX_SCALE: u32 = 12;
/// Lower bound of the normalised state interval [L, 2^32).
const L: u32 = 1 << 16;

const MODE_RAW: u8 = 0;
const MODE_CONST: u8 = 1;
const MODE_RANS: u8 = 2;

/// Histogram of a byte slice.
pub fn histogram(symbols: &[u8]) -> [u32; 256] {
    // Four sub-histograms hide store-to-load dependencies on runs of equal bytes.
    let mut h = [[0u32; 256]; 4];
    let mut chunks = symbols.chunks_exact(4);
    for c in &mut chunks {
        h[0][c[0] as usize] += 1;
        h[1][c[1] as usize] += 1;
        h[2][c[2] as usize] += 1;
        h[3][c[3] as usize] += 1;
    }
    for &b in chunks.remainder() {
        h[0][b as usize] += 1;
    }
    let mut out = [0u32; 256];
    for (i, o) in out.iter_mut().enumerate() {
        *o = h[0][i] + h[1][i] + h[2][i] + h[3][i];
    }
    out
}

/// A normalised frequency table plus everything needed to write it.
struct Table {
    scale: u32,
    nsym: usize,
    freq: [u32; 256],
    eg_order: u32,
    table_bits: u64,
}

/// Scale counts to sum exactly `1 << scale`, every present symbol keeping a frequency >= 1,
/// greedily minimising the coded size. Requires `present <= 1 << scale` and `total > 0`.
fn normalize(hist: &[u32; 256], total: u64, scale: u32) -> [u32; 256] {
    let m = 1u64 << scale;
    let mut freq = [0u32; 256];
    let mut sum: i64 = 0;
    for s in 0..256 {
        let c = hist[s] as u64;
        if c > 0 {
            let f = ((c * m + total / 2) / total).max(1);
            freq[s] = f as u32;
            sum += f as i64;
        }
    }
    let mut diff = m as i64 - sum;
    // Each step moves one unit of frequency where it costs least (exact c * log2(f'/f)). The
    // direction never changes and |diff| <= number of present symbols, so this is at most 256
    // steps; scores are cached and only the changed symbol's is recomputed.
    let up = diff > 0;
    let step = &log2_tables().step;
    // `step[f]` is the same f64 as `((f + 1.0) / f).log2()`, and `f / (f - 1.0)` is the same
    // quotient as `((f - 1) + 1.0) / (f - 1)`: scores, and so choices, are bit-identical to
    // calling `log2` here (the first version; log2 was ~2% of pack time).
    let score = |c: u32, f: u32| -> f64 {
        let fi = f as usize;
        if up {
            c as f64 * step[fi]
        } else if f <= 1 {
            f64::NEG_INFINITY
        } else {
            -(c as f64) * step[fi - 1]
        }
    };
    if diff == 0 {
        return freq;
    }
    // Max-heap of (score, lowest symbol first): the same choice, step for step, as scanning
    // every present symbol for the strictly largest score (the first version; that scan was
    // the main cost of choosing a table). Scores are finite or -inf, never NaN or 0; `key` maps
    // them to integers in the same order.
    let key = |v: f64| -> u64 {
        let b = v.to_bits();
        if b >> 63 == 1 { !b } else { b | 1 << 63 }
    };
    let mut heap: std::collections::BinaryHeap<(u64, std::cmp::Reverse<u8>)> = (0..256usize)
        .filter(|&s| hist[s] > 0)
        .map(|s| (key(score(hist[s], freq[s])), std::cmp::Reverse(s as u8)))
        .collect();
    while diff != 0 {
        // diff != 0 leaves a present symbol that can move (see above), and every pop is
        // followed by a push: the heap is never empty here.
        let Some((_, std::cmp::Reverse(b))) = heap.pop() else {
            break;
        };
        let best = b as usize;
        if up {
            freq[best] += 1;
            diff -= 1;
        } else {
            freq[best] -= 1;
            diff += 1;
        }
        heap.push((key(score(hist[best], freq[best])), std::cmp::Reverse(b)));
    }
    freq
}

/// Length of the Exp-Golomb-k code of `v` (the reference for [`eg_total`]).
#[cfg(test)]
fn eg_bits(v: u32, k: u32) -> u64 {
    let u = v as u64 + (1u64 << k);
    let nb = 64 - u.leading_zeros() as u64;
    // (nb - k - 1) zeros + 1 terminator + (nb - 1) payload bits
    (nb - k as u64 - 1) + 1 + (nb - 1)
}

/// `sum(eg_bits(v, k))` over `vals` (every value < 2^14: frequencies <= 2^MAX_SCALE and their
/// zigzag differences). `floor(log2(v + 2^k))` is read from the exponent of `(v + 2^k) as f32`,
/// exact below 2^24, so the loop vectorises (a leading-zero count does not on baseline x86_64);
/// this search over 32 (order, mode) pairs was most of the table-choice time.
fn eg_total(vals: &[u32], k: u32) -> u64 {
    let add = 1u32 << k;
    let sum_log: u32 = vals
        .iter()
        .map(|&v| ((v + add) as f32).to_bits() >> 23)
        .sum::<u32>()
        - 127 * vals.len() as u32;
    // eg_bits = 2 * floor(log2(v + 2^k)) - k + 1
    2 * u64::from(sum_log) + vals.len() as u64 - u64::from(k) * vals.len() as u64
}

/// Table flag (bit 4 of the order byte): frequencies are coded as zigzag differences from the
/// previous symbol's (neighbouring J symbols have similar counts; saves ~30% of table bytes).
const TABLE_DELTA: u32 = 16;

/// Zigzag code of `freq[s] - freq[s-1]` (freq[-1] = 0).
fn delta_code(freq: &[u32; 256], s: usize) -> u32 {
    let prev = if s == 0 { 0 } else { freq[s - 1] as i64 };
    let d = freq[s] as i64 - prev;
    ((d << 1) ^ (d >> 63)) as u32
}

fn build_table(hist: &[u32; 256], total: u64, scale: u32) -> Table {
    let freq = normalize(hist, total, scale);
    let nsym = 256 - freq.iter().rev().take_while(|&&f| f == 0).count();
    let m = nsym - 1;
    let plain = &freq[..m];
    let mut deltas = [0u32; 256];
    for (s, d) in deltas.iter_mut().enumerate().take(m) {
        *d = delta_code(&freq, s);
    }
    let deltas = &deltas[..m];
    let mut best = (u64::MAX, 0);
    for k in 0..=15u32 {
        let p = eg_total(plain, k);
        if p < best.0 {
            best = (p, k);
        }
        let d = eg_total(deltas, k);
        if d < best.0 {
            best = (d, k | TABLE_DELTA);
        }
    }
    Table {
        scale,
        nsym,
        freq,
        eg_order: best.1,
        table_bits: best.0,
    }
}

/// Estimated rANS payload in bits for `hist` under `freq` (entropy of the quantised model).
fn payload_bits(hist: &[u32; 256], freq: &[u32; 256], scale: u32) -> f64 {
    let log2 = &log2_tables().log2;
    let mut bits = 0.0;
    for s in 0..256 {
        if hist[s] > 0 {
            bits += hist[s] as f64 * (scale as f64 - log2[freq[s] as usize]);
        }
    }
    bits
}

/// Number of entries of the [`Log2Tables`]: every frequency a table of scale <= `MAX_SCALE` can
/// hold (`0..=1 << MAX_SCALE`).
const LOG2_ENTRIES: usize = (1 << MAX_SCALE) + 1;

/// `log2` values the table choice needs, computed once with the same expressions as before, so
/// results are bit-identical to calling `log2` in the loops (32 KiB each, L1/L2-resident).
struct Log2Tables {
    /// `log2[f] = (f as f64).log2()`.
    log2: [f64; LOG2_ENTRIES],
    /// `step[f] = ((f + 1.0) / f).log2()` (the cost of one more unit of frequency at `f`).
    step: [f64; LOG2_ENTRIES],
}

fn log2_tables() -> &'static Log2Tables {
    static TABLES: std::sync::OnceLock<Box<Log2Tables>> = std::sync::OnceLock::new();
    TABLES.get_or_init(|| {
        let mut t = Box::new(Log2Tables {
            log2: [0.0; LOG2_ENTRIES],
            step: [0.0; LOG2_ENTRIES],
        });
        for f in 0..LOG2_ENTRIES {
            let x = f as f64;
            t.log2[f] = x.log2();
            t.step[f] = ((x + 1.0) / x).log2();
        }
        t
    })
}

const RANS_FIXED_BYTES: usize = 1 + 3 + 4 + 4 * LANES;

/// Pick the table minimising header + payload; `None` when fewer than two symbols are present.
fn choose_table(hist: &[u32; 256]) -> Option<(Table, usize)> {
    let total: u64 = hist.iter().map(|&c| c as u64).sum();
    let present = hist.iter().filter(|&&c| c > 0).count();
    if present < 2 {
        return None;
    }
    let mut min_scale = (usize::BITS - (present - 1).leading_zeros()).max(1);
    if total >= 4096 {
        // Long streams never chose a scale below 9 in our measurements (the payload
        // dominates the table); skipping them makes encoding ~2x faster.
        min_scale = min_scale.max(9);
    }
    // The size is close to convex in the scale (a finer table costs table bits and saves
    // quantisation loss), and long streams pick the largest scale: search downwards from
    // MAX_SCALE and stop at the first scale that is worse (ties go to the smaller scale, as in
    // an exhaustive upward search). Measured on MiniLM BF16/F32: byte-identical output to the
    // exhaustive search, at about half the work.
    let mut best: Option<(Table, usize)> = None;
    for scale in (min_scale..=MAX_SCALE).rev() {
        let t = build_table(hist, total, scale);
        let payload = payload_bits(hist, &t.freq, scale);
        let size =
            RANS_FIXED_BYTES + t.table_bits.div_ceil(8) as usize + (payload / 8.0).ceil() as usize;
        if best.as_ref().is_some_and(|b| size > b.1) {
            break;
        }
        best = Some((t, size));
    }
    best
}

/// The coding decision for one stream, made from its histogram: its stored size and, for rANS,
/// the table. Lets callers compare alternatives by cost and then encode the chosen one without
/// choosing its table a second time.
pub struct StreamPlan {
    cost: usize,
    /// `None` when fewer than two symbols are present.
    table: Option<Table>,
}

impl StreamPlan {
    /// Stored size `encode_planned` will produce (entropy estimate, see the module header).
    pub fn cost(&self) -> usize {
        self.cost
    }
}

/// Plan the stream for symbols with histogram `hist`.
pub fn plan(hist: &[u32; 256]) -> StreamPlan {
    let total: usize = hist.iter().map(|&c| c as usize).sum();
    if total == 0 {
        return StreamPlan {
            cost: 1,
            table: None,
        };
    }
    match choose_table(hist) {
        None => StreamPlan {
            cost: 2,
            table: None,
        },
        Some((t, size)) => StreamPlan {
            cost: size.min(1 + total),
            table: Some(t),
        },
    }
}

/// Stored size `encode_symbols` would produce for this histogram (entropy estimate, see header).
pub fn estimate_cost(hist: &[u32; 256]) -> usize {
    plan(hist).cost
}

/// A lower bound of [`estimate_cost`], about ten times cheaper: the rANS payload is never
/// below the empirical entropy (the quantised table is a distribution too, Gibbs' inequality;
/// one byte is taken off for floating-point rounding), and the table holds at least one bit
/// per coded frequency. Lets callers skip estimating alternatives that cannot win.
pub fn cost_lower_bound(hist: &[u32; 256]) -> usize {
    let mut total = 0u64;
    let mut present = 0usize;
    let mut nsym = 0usize;
    let mut sum_clogc = 0.0f64;
    for (s, &c) in hist.iter().enumerate() {
        if c > 0 {
            total += u64::from(c);
            present += 1;
            nsym = s + 1;
            let c = f64::from(c);
            sum_clogc += c * c.log2();
        }
    }
    if present < 2 {
        // Empty stream: 1 byte; constant stream: 2 bytes.
        return 1;
    }
    let t = total as f64;
    let entropy_bits = t * t.log2() - sum_clogc;
    let payload = ((entropy_bits / 8.0).floor() as usize).saturating_sub(1);
    let table = (nsym - 1).div_ceil(8);
    (RANS_FIXED_BYTES + table + payload).min(1 + total as usize)
}

struct BitWriter<'a> {
    out: &'a mut Vec<u8>,
    acc: u64,
    n: u32,
}

impl BitWriter<'_> {
    fn put(&mut self, v: u64, nbits: u32) {
        debug_assert!(nbits <= 32);
        self.acc |= (v & ((1u64 << nbits) - 1)) << self.n;
        self.n += nbits;
        while self.n >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.n -= 8;
        }
    }
    fn eg(&mut self, v: u32, k: u32) {
        let u = v as u64 + (1u64 << k);
        let nb = 64 - u.leading_zeros();
        let zeros = nb - k - 1;
        self.put(0, zeros);
        self.put(1, 1);
        self.put(u, nb - 1);
    }
    fn finish(mut self) {
        if self.n > 0 {
            self.out.push(self.acc as u8);
        }
        self.n = 0;
    }
}

struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
    acc: u64,
    n: u32,
}

impl<'a> BitReader<'a> {
    fn new(data: &'a [u8]) -> Self {
        BitReader {
            data,
            pos: 0,
            acc: 0,
            n: 0,
        }
    }
    fn get(&mut self, nbits: u32) -> Result<u32, CodecError> {
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
    fn eg(&mut self, k: u32) -> Result<u32, CodecError> {
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
    fn consumed(&self) -> usize {
        self.pos
    }
}

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
struct EncSym {
    /// A word is emitted first when `x >= xmax = freq << (32 - scale)`.
    xmax: u32,
    /// `cum[s]`.
    bias: u32,
    /// `M - freq`.
    cmpl: u32,
    /// `ceil(2^RCP_SHIFT / freq)`.
    rcp: u64,
}

/// Fixed-point position of the reciprocals. With `x < 2^32`, `1 <= f < 2^MAX_SCALE` and
/// `m = ceil(2^44 / f)`, `floor(x * m / 2^44) == floor(x / f)` exactly: `m * f = 2^44 + e` with
/// `0 <= e < f`, so `x * m / 2^44 = x / f + x * e / (f * 2^44)`; the added term is below
/// `2^32 * f / (f * 2^44) = 2^-12 <= 1 / f`, and the fractional part of `x / f` is at most
/// `1 - 1 / f`, so the floor never moves. The product needs 76 bits (one 64x64->128 `mul`).
const RCP_SHIFT: u32 = 32 + MAX_SCALE;

thread_local! {
    /// Renormalisation words of the stream being encoded, reused across calls: a fresh buffer
    /// per 256 KiB stream costs an allocation and page faults each time.
    static WORD_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// One encoder step on one lane: renormalise (at most one word: after `x >> 16`, `x < 2^16 <
/// xmax`), then `x = (x / f) * M + x % f + cum`, written as `x + cum + (x / f) * (M - f)`.
/// The result is below `2^32`: `x < f * 2^(32 - scale)` gives `x / f < 2^(32 - scale)`.
#[inline(always)]
fn enc_step(x: &mut u32, e: &EncSym, buf: &mut [u8], wp: &mut usize) {
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
fn rans_encode(symbols: &[u8], freq: &[u32; 256], scale: u32, out: &mut Vec<u8>) {
    // A forced scalar path (or an unusable UPG_SIMD, which the decoders report) encodes
    // without vectors; the bytes are the same either way.
    let vector = matches!(Simd::selected(), Ok(s) if s >= Simd::Avx2);
    rans_encode_with(symbols, freq, scale, out, vector)
}

/// [`rans_encode`] with the AVX2 encoder allowed (`vector`, if the CPU has it) or not.
fn rans_encode_with(
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
fn gm_divisor(f: u32) -> (u32, u32, u32) {
    let l = if f <= 1 {
        0
    } else {
        32 - (f - 1).leading_zeros()
    };
    let m = (((1u64 << 32) * ((1u64 << l) - u64::from(f))) / u64::from(f) + 1) as u32;
    (m, l.min(1), l.max(1) - 1)
}

/// Decode table for one rANS stream, one `u32` per slot:
/// `symbol | freq << 8 | (slot - cum) << 20` (12-bit fields: scale <= 12 and, with two or more
/// symbols, every frequency is < M). A fixed 4096-entry array lets `slot & 4095` index it without
/// a bounds check.
struct DecTable {
    scale: u32,
    ent: Box<[u32; 1 << MAX_SCALE]>,
    /// `Some(symbol)` when one symbol owns all M slots (the encoder writes such streams in
    /// constant mode, but a hostile stream may declare it in rANS mode).
    single: Option<u8>,
    /// Alphabet size declared by the table: every decoded symbol is `< nsym`.
    nsym: usize,
}

fn read_table(input: &[u8]) -> Result<(DecTable, usize), CodecError> {
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
fn rd_u32(b: &[u8], at: usize) -> Result<u32, CodecError> {
    let s = b
        .get(at..at + 4)
        .ok_or(CodecError::Truncated("rANS header"))?;
    Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// Decode exactly `out.len()` symbols; returns the bytes of `input` consumed.
pub fn decode_symbols(input: &[u8], out: &mut [u8]) -> Result<usize, CodecError> {
    decode_impl::<1>(input, out, &[0; 256], Simd::selected()?).map(|r| r.0)
}

/// The environment variable that forces one coder path for the whole process: `scalar`, `avx2`
/// or `avx512` (so CI can run the codec tests once per path the CPU has; scripts/test.sh does).
/// Unset or empty: the best path this CPU has. A path the CPU lacks is an error, never a silent
/// fallback: the binaries refuse to start, and the library's decoders return it.
pub const SIMD_ENV: &str = "UPG_SIMD";

/// A vector path of the rANS coder. Every path produces the same output and the same errors
/// (tests force each one). As an argument it is a cap, lowered to what the CPU has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Simd {
    Scalar,
    /// AVX2 (8 lanes per vector; decoder and encoder).
    Avx2,
    /// AVX-512 F + BW (16 lanes per vector, `vpexpandd` renormalisation, `vpermt2w` mapping;
    /// decoder only: the encoder uses AVX2 here).
    Avx512,
}

/// `UPG_SIMD` names no path, or one this CPU lacks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimdError {
    #[error("{SIMD_ENV}={0:?}: unknown path (expected scalar, avx2 or avx512)")]
    Unknown(String),
    #[error("{SIMD_ENV}={}: this CPU lacks it (best available: {})", .asked.name(), .best.name())]
    Unavailable { asked: Simd, best: Simd },
}

impl Simd {
    pub const ALL: [Simd; 3] = [Simd::Scalar, Simd::Avx2, Simd::Avx512];

    /// The name `UPG_SIMD` takes.
    pub fn name(self) -> &'static str {
        match self {
            Simd::Scalar => "scalar",
            Simd::Avx2 => "avx2",
            Simd::Avx512 => "avx512",
        }
    }

    /// The best path this CPU supports.
    pub fn detected() -> Simd {
        Simd::Avx512.available()
    }

    /// `self` lowered to the best path this CPU supports.
    fn available(self) -> Simd {
        #[cfg(target_arch = "x86_64")]
        {
            if self >= Simd::Avx512
                && std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
            {
                return Simd::Avx512;
            }
            if self >= Simd::Avx2 && std::arch::is_x86_feature_detected!("avx2") {
                return Simd::Avx2;
            }
        }
        Simd::Scalar
    }

    /// The path `UPG_SIMD=value` asks for, if this CPU has it.
    pub fn parse_forced(value: &str) -> Result<Simd, SimdError> {
        let asked = Simd::ALL
            .into_iter()
            .find(|s| value.eq_ignore_ascii_case(s.name()))
            .ok_or_else(|| SimdError::Unknown(value.to_string()))?;
        let best = Simd::detected();
        if asked > best {
            return Err(SimdError::Unavailable { asked, best });
        }
        Ok(asked)
    }

    /// The path every encode and decode of this process uses: the one `UPG_SIMD` forces, or
    /// the best this CPU has. Read once per process.
    pub fn selected() -> Result<Simd, SimdError> {
        static SELECTED: std::sync::OnceLock<Result<Simd, SimdError>> = std::sync::OnceLock::new();
        match SELECTED.get_or_init(|| match std::env::var(SIMD_ENV) {
            Ok(v) if !v.is_empty() => Simd::parse_forced(&v),
            _ => Ok(Simd::detected()),
        }) {
            Ok(s) => Ok(*s),
            Err(e) => Err(e.clone()),
        }
    }
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
fn put<const W: usize>(out: &mut [u8], i: usize, sym: u8, map: &[u32; 256]) {
    if W == 1 {
        out[i] = sym;
    } else {
        out[2 * i..2 * i + 2].copy_from_slice(&(map[sym as usize] as u16).to_le_bytes());
    }
}

fn decode_impl<const W: usize>(
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
fn decode_rans<const W: usize>(
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
fn decode_rans_s<const SCALE: u32, const W: usize>(
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rt(v: &[u8]) -> usize {
        let mut enc = vec![0xAA]; // streams must work at any offset
        encode_symbols(v, &mut enc);
        enc.extend_from_slice(&[1, 2, 3]); // and be self-delimiting
        let mut out = vec![0u8; v.len()];
        let used = decode_symbols(&enc[1..], &mut out).unwrap();
        assert_eq!(used, enc.len() - 4);
        assert_eq!(out, v);
        assert!(used <= v.len() + 1);
        used
    }

    #[test]
    fn edge_cases() {
        rt(&[]);
        rt(&[7]);
        rt(&[0; 1000]);
        rt(&(0..=255).collect::<Vec<u8>>());
        rt(&(0..=255).cycle().take(100_000).collect::<Vec<u8>>());
        // Two symbols, very skewed: long runs without renormalisation.
        let mut v = vec![0u8; 200_000];
        v[77] = 1;
        v[150_000] = 1;
        assert!(rt(&v) < 200);
    }

    #[test]
    fn eg_total_matches_eg_bits() {
        let vals: Vec<u32> = (0..=8192u32)
            .step_by(7)
            .chain([0, 1, 2, 4095, 4096, 8191])
            .collect();
        for k in 0..=15 {
            let want: u64 = vals.iter().map(|&v| eg_bits(v, k)).sum();
            assert_eq!(eg_total(&vals, k), want, "k={k}");
        }
    }

    /// The reciprocal step equals the division it replaces, at the extremes of every frequency.
    #[test]
    fn reciprocal_division_is_exact() {
        for f in 1..(1u32 << MAX_SCALE) {
            let rcp = (1u64 << RCP_SHIFT).div_ceil(u64::from(f));
            for x in [
                0,
                1,
                f - 1,
                f,
                f + 1,
                u32::MAX / 3,
                u32::MAX - f,
                u32::MAX - 1,
                u32::MAX,
            ] {
                let q = ((u128::from(x) * u128::from(rcp)) >> RCP_SHIFT) as u32;
                assert_eq!(q, x / f, "x={x} f={f}");
            }
            // Values just below and at multiples of f near the top of the range.
            let top = u32::MAX / f * f;
            for x in [top, top - 1, top - f, top - f + 1] {
                let q = ((u128::from(x) * u128::from(rcp)) >> RCP_SHIFT) as u32;
                assert_eq!(q, x / f, "x={x} f={f}");
            }
        }
    }

    /// The vector encoder's division (Granlund-Montgomery) is exact for every frequency.
    #[test]
    fn gm_division_is_exact() {
        for f in 1..(1u32 << MAX_SCALE) {
            let (m, sh1, sh2) = gm_divisor(f);
            let top = u32::MAX / f * f;
            for x in [
                0,
                1,
                f - 1,
                f,
                f + 1,
                12345678,
                top,
                top - 1,
                top - f,
                u32::MAX,
            ] {
                let t = ((u64::from(x) * u64::from(m)) >> 32) as u32;
                let q = (t + ((x - t) >> sh1)) >> sh2;
                assert_eq!(q, x / f, "x={x} f={f}");
            }
        }
    }

    /// The AVX2 and scalar encoders write identical streams.
    /// Every decoder path (scalar, AVX2, AVX-512, as far as the CPU has them) gives the same
    /// symbols, mapped values, consumed length and error on valid and damaged streams.
    #[test]
    fn decoder_paths_agree() {
        let mut seed = 99u64;
        let mut rnd = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as u32
        };
        let map: [u32; 256] = std::array::from_fn(|j| (j as u32).wrapping_mul(0x9e37_79b9) >> 7);
        for case in 0..300 {
            let n = [0, 1, 31, 32, 33, 200, 1000, 5000, 40000][case % 9];
            let spread = [1, 2, 5, 8, 9][case % 5];
            let v: Vec<u8> = (0..n)
                .map(|_| {
                    let r = rnd();
                    (r.trailing_zeros() * spread + (r >> 28)) as u8
                })
                .collect();
            let mut enc = Vec::new();
            encode_symbols(&v, &mut enc);
            if case % 3 != 0 && !enc.is_empty() {
                // Damage: flip a few bits past the header, or truncate.
                for _ in 0..1 + case % 4 {
                    let at = rnd() as usize % enc.len();
                    enc[at] ^= 1 << (rnd() % 8);
                }
                if case % 7 == 0 {
                    enc.truncate(rnd() as usize % enc.len());
                }
            }
            let run = |simd: Simd| {
                let mut o1 = vec![0u8; n];
                let r1 = decode_with::<1>(&enc, &mut o1, &[0; 256], simd);
                let mut o2 = vec![0u8; 2 * n];
                let r2 = decode_with::<2>(&enc, &mut o2, &map, simd);
                let ok = r1.is_ok();
                (r1.map(|r| r.0), r2, ok.then_some(o1), o2)
            };
            let scalar = run(Simd::Scalar);
            if case % 3 == 0 {
                assert_eq!(scalar.2.as_deref(), Some(&v[..]));
            }
            for simd in [Simd::Avx2, Simd::Avx512] {
                let got = run(simd);
                assert_eq!(got.0, scalar.0, "case {case} {simd:?}");
                assert_eq!(got.1, scalar.1, "case {case} {simd:?}");
                assert_eq!(got.2, scalar.2, "case {case} {simd:?}");
                if scalar.1.is_ok() {
                    assert_eq!(got.3, scalar.3, "case {case} {simd:?}");
                }
            }
        }
    }

    /// `UPG_SIMD` forces the path of the whole process; unknown names and paths the CPU lacks
    /// are errors, not a silent fallback.
    #[test]
    fn simd_env_forces_the_path() {
        match std::env::var(SIMD_ENV) {
            Ok(v) if !v.is_empty() => {
                assert_eq!(Simd::selected(), Simd::parse_forced(&v));
                eprintln!("coder path forced by {SIMD_ENV}: {v}");
            }
            _ => assert_eq!(Simd::selected(), Ok(Simd::detected())),
        }
        assert_eq!(Simd::parse_forced("scalar"), Ok(Simd::Scalar));
        assert_eq!(
            Simd::parse_forced("AVX2").is_ok(),
            Simd::detected() >= Simd::Avx2
        );
        assert!(matches!(
            Simd::parse_forced("sse9"),
            Err(SimdError::Unknown(_))
        ));
        if Simd::detected() < Simd::Avx512 {
            assert_eq!(
                Simd::parse_forced("avx512"),
                Err(SimdError::Unavailable {
                    asked: Simd::Avx512,
                    best: Simd::detected()
                })
            );
        }
    }

    /// The scalar and (where the CPU has it) the AVX2 encoder both write the stream of the
    /// plain one-symbol-at-a-time loop.
    #[test]
    fn simd_encoder_matches_scalar() {
        let vector = Simd::detected() >= Simd::Avx2;
        if !vector {
            eprintln!("SKIP the AVX2 encoder: this CPU lacks AVX2 (scalar encoder checked)");
        }
        let mut s = 17u64;
        for case in 0..40 {
            let n = 32 * (1 + case * 37) + case % 32;
            let syms: Vec<u8> = (0..n)
                .map(|_| {
                    s = s
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let r = (s >> 33) as u32;
                    (r.trailing_zeros() * (1 + case as u32 % 9) + (r >> 30)) as u8
                })
                .collect();
            let hist = histogram(&syms);
            let Some((t, _)) = choose_table(&hist) else {
                continue;
            };
            let mut a = Vec::new();
            rans_encode_with(&syms, &t.freq, t.scale, &mut a, false);
            let mut v = Vec::new();
            rans_encode_with(&syms, &t.freq, t.scale, &mut v, vector);
            // Scalar reference.
            let mut tab = [EncSym::default(); 256];
            let mut cum = 0;
            for (e, &f) in tab.iter_mut().zip(&t.freq) {
                if f > 0 {
                    *e = EncSym {
                        xmax: f << (32 - t.scale),
                        bias: cum,
                        cmpl: (1 << t.scale) - f,
                        rcp: (1u64 << RCP_SHIFT).div_ceil(u64::from(f)),
                    };
                }
                cum += f;
            }
            let mut buf = vec![0u8; 2 * (n + 1)];
            let mut wp = n;
            let mut x = [L; LANES];
            for i in (0..n).rev() {
                enc_step(&mut x[i % LANES], &tab[syms[i] as usize], &mut buf, &mut wp);
            }
            let mut b = Vec::new();
            b.extend_from_slice(&((n - wp) as u32).to_le_bytes());
            for v in x {
                b.extend_from_slice(&v.to_le_bytes());
            }
            b.extend_from_slice(&buf[2 * (wp + 1)..]);
            assert_eq!(a, b, "case {case} (scalar)");
            assert_eq!(v, b, "case {case} (vector: {vector})");
        }
    }

    #[test]
    fn lower_bound_never_exceeds_estimate() {
        let mut s = 9u64;
        for case in 0..300 {
            let mut h = [0u32; 256];
            let nsym = 2 + case % 255;
            for c in h.iter_mut().take(nsym) {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1);
                *c = ((s >> 40) as u32) >> (case % 24);
            }
            assert!(cost_lower_bound(&h) <= estimate_cost(&h), "case {case}");
        }
    }

    #[test]
    fn estimate_matches_encoding() {
        let mut s = 5u64;
        let v: Vec<u8> = (0..100_000)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1);
                ((s >> 33) as u32).trailing_zeros() as u8
            })
            .collect();
        let mut enc = Vec::new();
        encode_symbols(&v, &mut enc);
        let est = estimate_cost(&histogram(&v));
        // The estimate is the entropy under the quantised model; rANS adds ~0.1-0.2%.
        assert!(
            enc.len().abs_diff(est) <= 8 + enc.len() / 200,
            "{} vs {est}",
            enc.len()
        );
    }

    #[test]
    fn hostile_tables() {
        let mut out = [0u8; 100];
        // scale 0 / 13, bad order, sum overflow, truncated table, single-symbol table.
        for s in [
            &[2u8, 0, 1, 0][..],
            &[2, 13, 1, 0],
            &[2, 12, 1, 16],
            &[2, 4, 2, 0, 0xff, 0xff, 0xff, 0xff],
            &[2, 12, 255, 0],
            &[3],
            &[],
        ] {
            assert!(decode_symbols(s, &mut out).is_err(), "{s:?}");
        }
        // Single-symbol table in rANS mode: freq[0] = 0 (EG0 of 0 = bit 1), freq[1] = M implied.
        let mut s = vec![2u8, 4, 1, 0, 0b1];
        s.extend_from_slice(&0u32.to_le_bytes());
        for _ in 0..LANES {
            s.extend_from_slice(&L.to_le_bytes());
        }
        decode_symbols(&s, &mut out).unwrap();
        assert!(out.iter().all(|&b| b == 1));
    }

    proptest! {
        #[test]
        fn prop_roundtrip(v in proptest::collection::vec(any::<u8>(), 0..5000)) {
            rt(&v);
        }

        #[test]
        fn prop_skewed(v in proptest::collection::vec(0u8..4, 0..20000), spike in any::<u8>()) {
            let mut v = v;
            if !v.is_empty() { v[0] = spike; }
            rt(&v);
        }

        #[test]
        fn prop_garbage(v in proptest::collection::vec(any::<u8>(), 0..3000), n in 0usize..4000) {
            let mut out = vec![0u8; n];
            let _ = decode_symbols(&v, &mut out);
        }

        #[test]
        fn prop_bitflips(v in proptest::collection::vec(0u8..20, 1..5000), flips in proptest::collection::vec(any::<u32>(), 1..4)) {
            let mut enc = Vec::new();
            encode_symbols(&v, &mut enc);
            for f in flips {
                let i = f as usize % enc.len();
                enc[i] ^= 1 << (f >> 29);
            }
            let mut out = vec![0u8; v.len()];
            let _ = decode_symbols(&enc, &mut out);
            let _ = decode_symbols(&enc[..enc.len() / 2], &mut out);
        }
    }
}

#[cfg(test)]
mod bench {
    use super::*;
    /// `cargo test --release --lib bench_rans -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn bench_rans() {
        // Skewed ~5-bit symbols, like the exponent-joint stream.
        let mut seed = 12345u64;
        let syms: Vec<u8> = (0..131072)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let r = (seed >> 33) as u32;
                (r.trailing_zeros() * 8 + (r >> 29)) as u8
            })
            .collect();
        let mut enc = Vec::new();
        encode_symbols(&syms, &mut enc);
        let mut out = vec![0u8; syms.len()];
        let t = std::time::Instant::now();
        for _ in 0..200 {
            decode_symbols(&enc, &mut out).unwrap();
        }
        let s = t.elapsed().as_secs_f64() / 200.0;
        assert_eq!(out, syms);
        println!(
            "rANS decode: {:.3} ns/symbol, {:.2} bits/symbol",
            s * 1e9 / syms.len() as f64,
            enc.len() as f64 * 8.0 / syms.len() as f64
        );
    }
}

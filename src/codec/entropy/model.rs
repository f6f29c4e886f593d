//! The model of one stream: histogram, normalised frequency table (scale search, Exp-Golomb
//! table cost) and the coding decision ([`StreamPlan`]); no bytes are written here.

use super::{LANES, MAX_SCALE};

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
pub(super) struct Table {
    pub(super) scale: u32,
    pub(super) nsym: usize,
    pub(super) freq: [u32; 256],
    pub(super) eg_order: u32,
    pub(super) table_bits: u64,
}

/// Scale counts to sum exactly `1 << scale`, every present symbol keeping a frequency >= 1,
/// greedily minimising the coded size. Requires `present <= 1 << scale` and `total > 0`.
pub(super) fn normalize(hist: &[u32; 256], total: u64, scale: u32) -> [u32; 256] {
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
pub(super) fn eg_bits(v: u32, k: u32) -> u64 {
    let u = v as u64 + (1u64 << k);
    let nb = 64 - u.leading_zeros() as u64;
    // (nb - k - 1) zeros + 1 terminator + (nb - 1) payload bits
    (nb - k as u64 - 1) + 1 + (nb - 1)
}

/// `sum(eg_bits(v, k))` over `vals` (every value < 2^14: frequencies <= 2^MAX_SCALE and their
/// zigzag differences). `floor(log2(v + 2^k))` is read from the exponent of `(v + 2^k) as f32`,
/// exact below 2^24, so the loop vectorises (a leading-zero count does not on baseline x86_64);
/// this search over 32 (order, mode) pairs was most of the table-choice time.
pub(super) fn eg_total(vals: &[u32], k: u32) -> u64 {
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
pub(super) const TABLE_DELTA: u32 = 16;

/// Zigzag code of `freq[s] - freq[s-1]` (freq[-1] = 0).
pub(super) fn delta_code(freq: &[u32; 256], s: usize) -> u32 {
    let prev = if s == 0 { 0 } else { freq[s - 1] as i64 };
    let d = freq[s] as i64 - prev;
    ((d << 1) ^ (d >> 63)) as u32
}

pub(super) fn build_table(hist: &[u32; 256], total: u64, scale: u32) -> Table {
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
pub(super) fn payload_bits(hist: &[u32; 256], freq: &[u32; 256], scale: u32) -> f64 {
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
pub(super) const LOG2_ENTRIES: usize = (1 << MAX_SCALE) + 1;

/// `log2` values the table choice needs, computed once with the same expressions as before, so
/// results are bit-identical to calling `log2` in the loops (32 KiB each, L1/L2-resident).
pub(super) struct Log2Tables {
    /// `log2[f] = (f as f64).log2()`.
    log2: [f64; LOG2_ENTRIES],
    /// `step[f] = ((f + 1.0) / f).log2()` (the cost of one more unit of frequency at `f`).
    step: [f64; LOG2_ENTRIES],
}

pub(super) fn log2_tables() -> &'static Log2Tables {
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

pub(super) const RANS_FIXED_BYTES: usize = 1 + 3 + 4 + 4 * LANES;

/// Pick the table minimising header + payload; `None` when fewer than two symbols are present.
pub(super) fn choose_table(hist: &[u32; 256]) -> Option<(Table, usize)> {
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
    pub(super) cost: usize,
    /// `None` when fewer than two symbols are present.
    pub(super) table: Option<Table>,
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

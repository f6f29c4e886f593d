//! Minimal static order-0 rANS byte coder (four independent lanes, 14-bit probabilities,
//! 16-bit renormalization), used for the quantizer's symbols until the tuned coder of
//! `codec::entropy` lands. zstd was tried first: its LZ stage spends 0.1 to 0.6 bit per
//! weight more than the order-0 entropy on the 2 to 4 bit symbol streams of q3/q4.
//!
//! Symbol i goes to lane i % 4; every lane has its own state and word stream, so the four
//! decode dependency chains run in parallel (two states sharing one word stream decoded at
//! only ~200 M symbols/s: the shared read position serialized them).
//!
//! Stream: u16 count of used symbols, then per used symbol u8 symbol + u16 frequency
//! (frequencies sum to 2^14), then 4 x u32 lane word counts, then each lane's u16 LE words:
//! its 32-bit initial state (high half first), then renormalization words. Decoding checks
//! that every state ends at its initial value and every word was used, so most corruptions
//! are detected.

use crate::codec::CodecError;

const PROB_BITS: u32 = 14;
const TOTAL: u32 = 1 << PROB_BITS;
const LOW: u32 = 1 << 16;
const LANES: usize = 4;

/// Frequencies summing to `TOTAL`, every used symbol at least 1.
fn normalize(counts: &[u64; 256]) -> [u32; 256] {
    let n: u64 = counts.iter().sum();
    let mut f = [0u32; 256];
    if n == 0 {
        return f;
    }
    for (d, &c) in f.iter_mut().zip(counts) {
        if c > 0 {
            *d = ((c as f64 * f64::from(TOTAL) / n as f64).round() as u32).max(1);
        }
    }
    loop {
        let sum: u32 = f.iter().sum();
        if sum == TOTAL {
            return f;
        }
        // Adjust the symbol where a change of one costs the least (the largest count).
        let (i, _) = f
            .iter()
            .enumerate()
            .filter(|&(_, &v)| sum < TOTAL || v > 1)
            .max_by_key(|&(i, &v)| (counts[i] * 1024 / u64::from(v.max(1)), v))
            .expect("some symbol can move");
        if sum < TOTAL {
            f[i] += (TOTAL - sum).min(f[i].max(1));
        } else {
            f[i] -= 1;
        }
    }
}

pub fn encode(syms: &[u8], out: &mut Vec<u8>) {
    let mut counts = [0u64; 256];
    for &s in syms {
        counts[s as usize] += 1;
    }
    let freq = normalize(&counts);
    let mut start = [0u32; 256];
    let mut acc = 0;
    for (s, &f) in start.iter_mut().zip(&freq) {
        *s = acc;
        acc += f;
    }
    let used: Vec<usize> = (0..256).filter(|&s| freq[s] > 0).collect();
    out.extend_from_slice(&(used.len() as u16).to_le_bytes());
    for &s in &used {
        out.push(s as u8);
        out.extend_from_slice(&(freq[s] as u16).to_le_bytes());
    }
    let mut words: [Vec<u16>; LANES] = Default::default();
    let mut x = [LOW; LANES];
    for (i, &s) in syms.iter().enumerate().rev() {
        let l = i % LANES;
        let st = &mut x[l];
        let f = freq[s as usize];
        let x_max = u64::from(f) << (32 - PROB_BITS);
        while u64::from(*st) >= x_max {
            words[l].push(*st as u16);
            *st >>= 16;
        }
        *st = ((*st / f) << PROB_BITS) + (*st % f) + start[s as usize];
    }
    for (w, st) in words.iter_mut().zip(x) {
        w.push(st as u16);
        w.push((st >> 16) as u16);
        out.extend_from_slice(&(w.len() as u32).to_le_bytes());
    }
    for w in &words {
        for v in w.iter().rev() {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
}

pub fn decode(input: &[u8], out: &mut [u8]) -> Result<(), CodecError> {
    let t = |what| CodecError::Truncated(what);
    let k = input.get(..2).ok_or(t("rans table"))?;
    let k = usize::from(u16::from_le_bytes([k[0], k[1]]));
    let table = input.get(2..2 + 3 * k).ok_or(t("rans table"))?;
    // fs[s] = freq << 16 | start (both fit 16 bits: freq <= 2^14, start < 2^14).
    let mut fs = [0u32; 256];
    let mut slot_sym = vec![0u8; TOTAL as usize];
    let mut acc = 0u32;
    for e in table.chunks_exact(3) {
        let s = usize::from(e[0]);
        let f = u32::from(u16::from_le_bytes([e[1], e[2]]));
        if f == 0 || fs[s] != 0 || acc + f > TOTAL {
            return Err(CodecError::Corrupt("rans frequency table"));
        }
        fs[s] = (f << 16) | acc;
        slot_sym[acc as usize..(acc + f) as usize].fill(s as u8);
        acc += f;
    }
    if !(out.is_empty() && k == 0) && acc != TOTAL {
        return Err(CodecError::Corrupt("rans frequencies do not sum to 2^14"));
    }
    let mut rest = &input[2 + 3 * k..];
    let mut counts = [0usize; LANES];
    for c in &mut counts {
        let b = rest.get(..4).ok_or(t("rans lane counts"))?;
        *c = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
        rest = &rest[4..];
    }
    // Per-lane words, padded so the branch-free refill never indexes out of range; reading
    // past a lane's real words is caught by the final position check.
    let mut words: [Vec<u32>; LANES] = Default::default();
    let mut x = [0u32; LANES];
    for l in 0..LANES {
        if counts[l] < 2 {
            return Err(CodecError::Corrupt("rans lane without state"));
        }
        let bytes = counts[l].checked_mul(2).ok_or(t("rans words"))?;
        let b = rest.get(..bytes).ok_or(t("rans words"))?;
        rest = &rest[bytes..];
        let mut v: Vec<u32> = b
            .chunks_exact(2)
            .map(|c| u32::from(u16::from_le_bytes([c[0], c[1]])))
            .collect();
        x[l] = (v[0] << 16) | v[1];
        v.extend_from_slice(&[0, 0]);
        words[l] = v;
    }
    if !rest.is_empty() {
        return Err(CodecError::Corrupt("trailing bytes after rans lanes"));
    }
    if !out.is_empty() && x.iter().any(|&v| v < LOW) {
        return Err(CodecError::Corrupt("rans initial state"));
    }
    let mut pos = [2usize; LANES];
    let lim = counts.map(|c| c + 1);
    let mask = TOTAL - 1;
    let step = |x: u32| -> (u8, u32) {
        let slot = x & mask;
        let s = slot_sym[slot as usize];
        let e = fs[s as usize];
        (s, (e >> 16) * (x >> PROB_BITS) + slot - (e & 0xffff))
    };
    let mut it = out.chunks_exact_mut(LANES);
    for group in &mut it {
        for l in 0..LANES {
            let (s, y) = step(x[l]);
            group[l] = s;
            let r = y < LOW;
            x[l] = if r {
                (y << 16) | words[l][pos[l].min(lim[l])]
            } else {
                y
            };
            pos[l] += usize::from(r);
        }
    }
    for (l, o) in it.into_remainder().iter_mut().enumerate() {
        let (s, y) = step(x[l]);
        *o = s;
        let r = y < LOW;
        x[l] = if r {
            (y << 16) | words[l][pos[l].min(lim[l])]
        } else {
            y
        };
        pos[l] += usize::from(r);
    }
    if x != [LOW; LANES] || pos != counts {
        return Err(CodecError::Corrupt("rans stream does not end cleanly"));
    }
    Ok(())
}

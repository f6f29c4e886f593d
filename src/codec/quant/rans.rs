//! Minimal static order-0 rANS byte coder (two interleaved states, 14-bit probabilities,
//! 16-bit renormalization), used for the quantizer's symbols until the tuned coder of
//! `codec::entropy` lands. zstd was tried first: its LZ stage spends 0.1 to 0.6 bit per
//! weight more than the order-0 entropy on the 2 to 4 bit symbol streams of q3/q4.
//!
//! Stream: u16 count of used symbols, then per used symbol u8 symbol + u16 frequency
//! (frequencies sum to 2^14), then the rANS words (u16 LE): two 32-bit initial states, then
//! renormalization words. Decoding checks that both states end at their initial value and
//! every word was used, so most corruptions are detected.

use crate::codec::CodecError;

const PROB_BITS: u32 = 14;
const TOTAL: u32 = 1 << PROB_BITS;
const LOW: u32 = 1 << 16;

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
    let mut words: Vec<u16> = Vec::with_capacity(syms.len() / 2 + 8);
    let mut x = [LOW, LOW];
    for (i, &s) in syms.iter().enumerate().rev() {
        let st = &mut x[i & 1];
        let f = freq[s as usize];
        let x_max = (f as u64) << (32 - PROB_BITS);
        while u64::from(*st) >= x_max {
            words.push(*st as u16);
            *st >>= 16;
        }
        *st = ((*st / f) << PROB_BITS) + (*st % f) + start[s as usize];
    }
    for st in [x[1], x[0]] {
        words.push(st as u16);
        words.push((st >> 16) as u16);
    }
    out.reserve(words.len() * 2);
    for w in words.iter().rev() {
        out.extend_from_slice(&w.to_le_bytes());
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
        fs[s] = f << 16 | acc;
        slot_sym[acc as usize..(acc + f) as usize].fill(s as u8);
        acc += f;
    }
    if out.is_empty() && k == 0 {
        // An empty stream still carries its two final states.
    } else if acc != TOTAL {
        return Err(CodecError::Corrupt("rans frequencies do not sum to 2^14"));
    }
    let w = &input[2 + 3 * k..];
    if !w.len().is_multiple_of(2) || w.len() < 8 {
        return Err(t("rans words"));
    }
    let nw = w.len() / 2;
    // Words, padded so that the branch-free refill below never indexes out of range; reading
    // past the real words is caught by the final `pos == nw` check.
    let mut words: Vec<u32> = w
        .chunks_exact(2)
        .map(|c| u32::from(u16::from_le_bytes([c[0], c[1]])))
        .collect();
    words.extend_from_slice(&[0, 0]);
    let last = words.len() - 1;
    let mut x0 = words[0] << 16 | words[1];
    let mut x1 = words[2] << 16 | words[3];
    let mut pos = 4usize;
    if !out.is_empty() && (x0 < LOW || x1 < LOW) {
        return Err(CodecError::Corrupt("rans initial state"));
    }
    let mask = TOTAL - 1;
    let step = |x: u32| -> (u8, u32) {
        let slot = x & mask;
        let s = slot_sym[slot as usize];
        let e = fs[s as usize];
        (s, (e >> 16) * (x >> PROB_BITS) + slot - (e & 0xffff))
    };
    let mut it = out.chunks_exact_mut(2);
    for pair in &mut it {
        let (s0, y0) = step(x0);
        let (s1, y1) = step(x1);
        pair[0] = s0;
        pair[1] = s1;
        let r0 = y0 < LOW;
        x0 = if r0 { y0 << 16 | words[pos.min(last)] } else { y0 };
        pos += usize::from(r0);
        let r1 = y1 < LOW;
        x1 = if r1 { y1 << 16 | words[pos.min(last)] } else { y1 };
        pos += usize::from(r1);
    }
    if let [o] = it.into_remainder() {
        let (s0, y0) = step(x0);
        *o = s0;
        let r0 = y0 < LOW;
        x0 = if r0 { y0 << 16 | words[pos.min(last)] } else { y0 };
        pos += usize::from(r0);
    }
    if x0 != LOW || x1 != LOW || pos != nw {
        return Err(CodecError::Corrupt("rans stream does not end cleanly"));
    }
    Ok(())
}

//! AVX-512 version of the fast path: each `__m512i` holds 16 lanes' states, 2 vectors = 32
//! lanes. Compared with AVX2: the words go to the renormalising lanes with one `vpexpandd`
//! (no rank table), and for W = 2 the 16-bit mapping is looked up in registers (four
//! `vpermt2w` over the 256-entry table, two blends) instead of a second gather per symbol.
use crate::codec::entropy::{L, LANES, MAX_SCALE};
use std::arch::x86_64::*;

/// Decode whole groups of LANES symbols while at least LANES words remain; returns the
/// (symbols, words) consumed. Same arithmetic and word order as the scalar loop.
///
/// # Safety
/// The CPU must support AVX-512 F and BW. Bounds: the gather indexes `ent` with `x & mask`,
/// `mask < 4096 = ent.len()`; each loop iteration starts with `i + 32 <= n = out.len() / W`
/// and `pos + 32 <= words.len() / 2`; the first vector consumes at most 16 words, so both
/// 32-byte word loads (16 words at `pos` and at most `pos + 16`) stay inside `words`, and the
/// stores (16 bytes at `i + 16v` for W = 1, 64 bytes at `2i` for W = 2) inside `out`.
#[target_feature(enable = "avx512f,avx512bw")]
pub(in crate::codec::entropy) unsafe fn decode<const SCALE: u32, const W: usize>(
    ent: &[u32; 1 << MAX_SCALE],
    st: &mut [u32; LANES],
    words: &[u8],
    out: &mut [u8],
    map: &[u32; 256],
) -> (usize, usize) {
    let n = out.len() / W;
    let nwords = words.len() / 2;
    let mut i = 0usize;
    let mut pos = 0usize;
    // The mapping as 16-bit values, 32 per register: tab[q] holds map[32q..32q + 32].
    let mut m16 = [0u16; 256];
    for (d, &s) in m16.iter_mut().zip(map.iter()) {
        *d = s as u16;
    }
    unsafe {
        let tab: [__m512i; 8] =
            std::array::from_fn(|q| _mm512_loadu_si512(m16.as_ptr().add(32 * q).cast()));
        let mask = _mm512_set1_epi32(((1u32 << SCALE) - 1) as i32);
        let m12 = _mm512_set1_epi32(0xfff);
        let lim = _mm512_set1_epi32(L as i32);
        let bit6 = _mm512_set1_epi16(64);
        let bit7 = _mm512_set1_epi16(128);
        let sp = st.as_mut_ptr() as *mut __m512i;
        let mut x = [
            _mm512_loadu_si512(sp.cast()),
            _mm512_loadu_si512(sp.add(1).cast()),
        ];
        let base = ent.as_ptr() as *const i32;
        let wp = words.as_ptr();
        let op = out.as_mut_ptr();
        while i + LANES <= n && pos + LANES <= nwords {
            let mut e = [_mm512_setzero_si512(); 2];
            for v in 0..2 {
                let xv = x[v];
                let slot = _mm512_and_si512(xv, mask);
                let ev = _mm512_i32gather_epi32::<4>(slot, base);
                let freq = _mm512_and_si512(_mm512_srli_epi32::<8>(ev), m12);
                let bias = _mm512_srli_epi32::<20>(ev);
                // freq * (x >> scale) < 2^32 as two `vpmuludq` (even, odd lanes; 5
                // cycles) instead of one `vpmulld` (10): this loop is latency-bound, the
                // next gather waits for the new states.
                let xs = _mm512_srli_epi32::<SCALE>(xv);
                let pe = _mm512_mul_epu32(freq, xs);
                let po =
                    _mm512_mul_epu32(_mm512_srli_epi64::<32>(freq), _mm512_srli_epi64::<32>(xs));
                let prod = _mm512_mask_blend_epi32(0xaaaa, pe, _mm512_slli_epi64::<32>(po));
                let nx = _mm512_add_epi32(prod, bias);
                let need = _mm512_cmplt_epu32_mask(nx, lim);
                let w =
                    _mm512_cvtepu16_epi32(_mm256_loadu_si256(wp.add(2 * pos) as *const __m256i));
                // need: (nx << 16) | word (nx < 2^16 there), else nx.
                let shifted = _mm512_mask_slli_epi32::<16>(nx, need, nx);
                x[v] = _mm512_or_si512(shifted, _mm512_maskz_expand_epi32(need, w));
                pos += need.count_ones() as usize;
                e[v] = ev;
                if W == 1 {
                    _mm_storeu_si128(op.add(i + 16 * v) as *mut __m128i, _mm512_cvtepi32_epi8(ev));
                }
            }
            if W == 2 {
                // Low 16 bits of each entry: the symbol in bits 0-7 (vpermt2w reads bits
                // 0-5 of each index, bits 6 and 7 pick the register pair).
                let idx = _mm512_inserti64x4::<1>(
                    _mm512_castsi256_si512(_mm512_cvtepi32_epi16(e[0])),
                    _mm512_cvtepi32_epi16(e[1]),
                );
                let r0 = _mm512_permutex2var_epi16(tab[0], idx, tab[1]);
                let r1 = _mm512_permutex2var_epi16(tab[2], idx, tab[3]);
                let r2 = _mm512_permutex2var_epi16(tab[4], idx, tab[5]);
                let r3 = _mm512_permutex2var_epi16(tab[6], idx, tab[7]);
                let b6 = _mm512_test_epi16_mask(idx, bit6);
                let b7 = _mm512_test_epi16_mask(idx, bit7);
                let lo = _mm512_mask_blend_epi16(b6, r0, r1);
                let hi = _mm512_mask_blend_epi16(b6, r2, r3);
                let vals = _mm512_mask_blend_epi16(b7, lo, hi);
                _mm512_storeu_si512(op.add(2 * i).cast(), vals);
            }
            i += LANES;
        }
        _mm512_storeu_si512(sp.cast(), x[0]);
        _mm512_storeu_si512(sp.add(1).cast(), x[1]);
    }
    (i, pos)
}

//! AVX2 version of the fast path: each `__m256i` holds 8 lanes' states, 4 vectors = 32 lanes.
use crate::codec::entropy::{L, LANES, MAX_SCALE};
use std::arch::x86_64::*;

/// For each 8-bit "needs a word" mask, lane j's index among the set lanes (its rank), so a
/// permute moves the next words to exactly the lanes that renormalise.
const fn rank_lut() -> [[u32; 8]; 256] {
    let mut t = [[0u32; 8]; 256];
    let mut m = 0;
    while m < 256 {
        let mut r = 0;
        let mut j = 0;
        while j < 8 {
            t[m][j] = r;
            if m & (1 << j) != 0 {
                r += 1;
            }
            j += 1;
        }
        m += 1;
    }
    t
}
static RANK: [[u32; 8]; 256] = rank_lut();

/// Decode whole groups of LANES symbols while at least LANES words remain; returns the
/// (symbols, words) consumed. Same arithmetic and word order as the scalar loop.
///
/// # Safety
/// The CPU must support AVX2. Bounds: gathers index `ent` with `x & mask`, `mask < 4096 =
/// ent.len()`, and `map` with `e & 0xff < 256 = map.len()`; each loop iteration starts with
/// `i + 32 <= n = out.len() / W` and `pos + 32 <= words.len() / 2`, and consumes at most 8
/// words per vector, so every 16-byte word load (at most words `pos + 24 .. pos + 32`) and
/// every store (8 bytes at `i + 8v`, or 16 bytes at `2 (i + 8v)`) stays in bounds.
#[target_feature(enable = "avx2")]
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
    unsafe {
        let mask = _mm256_set1_epi32(((1u32 << SCALE) - 1) as i32);
        let m12 = _mm256_set1_epi32(0xfff);
        let zero = _mm256_setzero_si256();
        let pick = _mm256_setr_epi8(
            0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 4, 8, 12, -1, -1, -1,
            -1, -1, -1, -1, -1, -1, -1, -1, -1,
        );
        let pick16 = _mm256_setr_epi8(
            0, 1, 4, 5, 8, 9, 12, 13, -1, -1, -1, -1, -1, -1, -1, -1, 0, 1, 4, 5, 8, 9, 12, 13, -1,
            -1, -1, -1, -1, -1, -1, -1,
        );
        let m8 = _mm256_set1_epi32(0xff);
        let mp = map.as_ptr() as *const i32;
        let sp = st.as_mut_ptr() as *mut __m256i;
        let mut x = [_mm256_setzero_si256(); LANES / 8];
        for (v, xv) in x.iter_mut().enumerate() {
            *xv = _mm256_loadu_si256(sp.add(v));
        }
        let base = ent.as_ptr() as *const i32;
        let wp = words.as_ptr();
        let op = out.as_mut_ptr();
        while i + LANES <= n && pos + LANES <= nwords {
            for (v, xv) in x.iter_mut().enumerate() {
                let slot = _mm256_and_si256(*xv, mask);
                let e = _mm256_i32gather_epi32::<4>(base, slot);
                let freq = _mm256_and_si256(_mm256_srli_epi32::<8>(e), m12);
                let bias = _mm256_srli_epi32::<20>(e);
                let sh = _mm_cvtsi32_si128(SCALE as i32);
                let nx =
                    _mm256_add_epi32(_mm256_mullo_epi32(freq, _mm256_srl_epi32(*xv, sh)), bias);
                // x < L  <=>  x >> 16 == 0
                let need = _mm256_cmpeq_epi32(_mm256_srli_epi32::<16>(nx), zero);
                let m = _mm256_movemask_ps(_mm256_castsi256_ps(need)) as usize;
                let w = _mm256_cvtepu16_epi32(_mm_loadu_si128(wp.add(2 * pos) as *const __m128i));
                let perm = _mm256_loadu_si256(RANK[m].as_ptr() as *const __m256i);
                let wl = _mm256_permutevar8x32_epi32(w, perm);
                let renorm = _mm256_or_si256(_mm256_slli_epi32::<16>(nx), wl);
                *xv = _mm256_blendv_epi8(nx, renorm, need);
                pos += m.count_ones() as usize;
                if W == 1 {
                    let b = _mm256_shuffle_epi8(e, pick);
                    let syms = _mm_unpacklo_epi32(
                        _mm256_castsi256_si128(b),
                        _mm256_extracti128_si256::<1>(b),
                    );
                    _mm_storel_epi64(op.add(i + 8 * v) as *mut __m128i, syms);
                } else {
                    // map[symbol]: symbol = e & 0xff < 256 = map.len().
                    let sym = _mm256_and_si256(e, m8);
                    let mv = _mm256_i32gather_epi32::<4>(mp, sym);
                    let b = _mm256_shuffle_epi8(mv, pick16);
                    let vals = _mm_unpacklo_epi64(
                        _mm256_castsi256_si128(b),
                        _mm256_extracti128_si256::<1>(b),
                    );
                    _mm_storeu_si128(op.add(2 * (i + 8 * v)) as *mut __m128i, vals);
                }
            }
            i += LANES;
        }
        for (v, xv) in x.iter().enumerate() {
            _mm256_storeu_si256(sp.add(v), *xv);
        }
    }
    let _ = L;
    (i, pos)
}

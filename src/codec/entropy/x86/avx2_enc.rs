//! AVX2 rANS encoder for whole groups of LANES symbols: same states, same words, same
//! order as the scalar loop (lanes are independent; a vector's 8 lanes are the scalar
//! loop's 8 consecutive steps). Measured ~3x faster than the scalar loop.
use crate::codec::entropy::{LANES, gm_divisor};
use std::arch::x86_64::*;

/// Per-symbol constants as three gatherable `u32` tables.
pub(in crate::codec::entropy) struct VecTable {
    xmax: [u32; 256],
    rcp: [u32; 256],
    /// `cum | (M - f) << 12 | sh2 << 24 | sh1 << 28` (cum, M - f < 2^12; sh2 <= 11).
    pk: [u32; 256],
}

impl VecTable {
    pub(in crate::codec::entropy) fn new(freq: &[u32; 256], scale: u32) -> Self {
        let mut t = VecTable {
            xmax: [0; 256],
            rcp: [0; 256],
            pk: [0; 256],
        };
        let mut cum = 0u32;
        for (s, &f) in freq.iter().enumerate() {
            if f > 0 {
                let (m, sh1, sh2) = gm_divisor(f);
                t.xmax[s] = f << (32 - scale);
                t.rcp[s] = m;
                t.pk[s] = cum | ((1u32 << scale) - f) << 12 | sh2 << 24 | sh1 << 28;
            }
            cum += f;
        }
        t
    }
}

/// For each 8-bit "emits a word" mask, a byte shuffle moving the emitting lanes' words (in
/// lane order) to the top of 8 words, so that one 16-byte store ending at the write
/// position lays them down in decoder order.
const fn top_pack_lut() -> [[u8; 16]; 256] {
    let mut t = [[0x80u8; 16]; 256];
    let mut m = 0;
    while m < 256 {
        let c = (m as u32).count_ones() as usize;
        let mut r = 0;
        let mut lane = 0;
        while lane < 8 {
            if m & (1 << lane) != 0 {
                let pos = 8 - c + r;
                t[m][2 * pos] = (2 * lane) as u8;
                t[m][2 * pos + 1] = (2 * lane + 1) as u8;
                r += 1;
            }
            lane += 1;
        }
        m += 1;
    }
    t
}
static TOP_PACK: [[u8; 16]; 256] = top_pack_lut();

/// Encode `groups` (a multiple of LANES symbols) backwards into the states `st` and the word
/// buffer `buf` (slot `wp` is the next free one, filled downwards).
///
/// # Safety
/// The CPU must support AVX2. Bounds: gathers index the 256-entry tables with a symbol byte;
/// symbol loads and word stores go through checked slices. A store covers slots
/// `wp - 7 ..= wp`: the caller's buffer has `n + 1` slots with `wp <= n` and at most one
/// word per symbol already emitted, so with 8 symbols still to code `wp >= 8`.
#[target_feature(enable = "avx2")]
pub(in crate::codec::entropy) unsafe fn encode_groups(
    t: &VecTable,
    groups: &[u8],
    st: &mut [u32; LANES],
    buf: &mut [u8],
    wp: &mut usize,
) {
    unsafe {
        let sp = st.as_mut_ptr() as *mut __m256i;
        let mut x = [_mm256_setzero_si256(); LANES / 8];
        for (v, xv) in x.iter_mut().enumerate() {
            *xv = _mm256_loadu_si256(sp.add(v));
        }
        let xmax_p = t.xmax.as_ptr() as *const i32;
        let rcp_p = t.rcp.as_ptr() as *const i32;
        let pk_p = t.pk.as_ptr() as *const i32;
        let m12 = _mm256_set1_epi32(0xfff);
        let m4 = _mm256_set1_epi32(0xf);
        let one = _mm256_set1_epi32(1);
        let lo16 = _mm256_set1_epi32(0xffff);
        let mut w = *wp;
        for g in groups.chunks_exact(LANES).rev() {
            for v in (0..LANES / 8).rev() {
                let sym8: &[u8] = &g[8 * v..8 * v + 8];
                let sym = _mm256_cvtepu8_epi32(_mm_loadl_epi64(sym8.as_ptr() as *const __m128i));
                let xmax = _mm256_i32gather_epi32::<4>(xmax_p, sym);
                let rcp = _mm256_i32gather_epi32::<4>(rcp_p, sym);
                let pk = _mm256_i32gather_epi32::<4>(pk_p, sym);
                let xv = x[v];
                // x >= xmax (unsigned)  <=>  max(x, xmax) == x
                let emit = _mm256_cmpeq_epi32(_mm256_max_epu32(xv, xmax), xv);
                let m = _mm256_movemask_ps(_mm256_castsi256_ps(emit)) as usize;
                let low = _mm256_and_si256(xv, lo16);
                let words = _mm_packus_epi32(
                    _mm256_castsi256_si128(low),
                    _mm256_extracti128_si256::<1>(low),
                );
                let shuf = _mm_loadu_si128(TOP_PACK[m].as_ptr() as *const __m128i);
                let packed = _mm_shuffle_epi8(words, shuf);
                let dst: &mut [u8] = &mut buf[2 * (w - 7)..2 * (w + 1)];
                _mm_storeu_si128(dst.as_mut_ptr() as *mut __m128i, packed);
                w -= m.count_ones() as usize;
                let xr = _mm256_blendv_epi8(xv, _mm256_srli_epi32::<16>(xv), emit);
                // q = xr / f (Granlund-Montgomery, see gm_divisor)
                let even = _mm256_srli_epi64::<32>(_mm256_mul_epu32(xr, rcp));
                let odd =
                    _mm256_mul_epu32(_mm256_srli_epi64::<32>(xr), _mm256_srli_epi64::<32>(rcp));
                let tq = _mm256_blend_epi32::<0xAA>(even, odd);
                let sh1 = _mm256_and_si256(_mm256_srli_epi32::<28>(pk), one);
                let sh2 = _mm256_and_si256(_mm256_srli_epi32::<24>(pk), m4);
                let q = _mm256_srlv_epi32(
                    _mm256_add_epi32(tq, _mm256_srlv_epi32(_mm256_sub_epi32(xr, tq), sh1)),
                    sh2,
                );
                let bias = _mm256_and_si256(pk, m12);
                let cmpl = _mm256_and_si256(_mm256_srli_epi32::<12>(pk), m12);
                x[v] = _mm256_add_epi32(_mm256_add_epi32(xr, bias), _mm256_mullo_epi32(q, cmpl));
            }
        }
        *wp = w;
        for (v, xv) in x.iter().enumerate() {
            _mm256_storeu_si256(sp.add(v), *xv);
        }
    }
}

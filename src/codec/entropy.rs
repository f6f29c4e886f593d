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

/// The vector kernels (AVX2 encoder, AVX2 and AVX-512 decoders), the only `unsafe` code of the
/// coder; everything else here is safe Rust and runs on every target.
#[cfg(target_arch = "x86_64")]
mod x86;

mod bits;
mod decode;
mod encode;
mod model;

#[cfg(test)]
pub(crate) use decode::decode_with;
pub use decode::{decode_symbols, decode_symbols_map16};
pub(crate) use encode::encode_planned;
pub use encode::{encode_raw, encode_symbols, encode_with_hist};
pub use model::{StreamPlan, cost_lower_bound, estimate_cost, histogram, plan};
// For the x86 kernels (`crate::codec::entropy::gm_divisor`) and the tests (`use super::*`).
#[cfg(any(target_arch = "x86_64", test))]
use encode::gm_divisor;
#[cfg(test)]
use {encode::*, model::*};

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

#[cfg(test)]
mod tests;

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

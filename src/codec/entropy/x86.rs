//! x86-64 kernels of the rANS coder. Each is `unsafe` only for its `#[target_feature]`, is
//! called only after the CPU was checked for that feature (`Simd::available`), and carries its
//! bounds argument in its doc comment; each writes or reads exactly what the scalar loop in
//! `entropy.rs` does (tests `simd_encoder_matches_scalar`, `decoder_paths_agree`).

pub(super) mod avx2;
pub(super) mod avx2_enc;
pub(super) mod avx512;

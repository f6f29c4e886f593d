//! upg: compressed model archives served as ordinary files.
pub mod codec;

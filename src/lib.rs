//! upg: compressed model archives served as ordinary files.
pub mod archive;
pub mod cache;
pub mod cleanup;
pub mod cli;
pub mod codec;
pub mod cursor;
pub mod disk_cache;
pub mod format;
pub mod fuse;
pub mod gguf;
pub mod pool;
pub mod st;
pub mod storage;
pub mod synth;
pub mod text;
pub mod vfs;

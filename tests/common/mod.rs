//! Shared helpers for integration tests: build model directories, pack them, read them back.
#![allow(dead_code)]

pub mod mount;

use std::process::{Command, Output};

use std::path::{Path, PathBuf};

use safetensors::tensor::Dtype;
use upg::archive::Archive;
use upg::archive::reader::read_all;
use upg::archive::writer::{PackOptions, pack};
use upg::synth::{Rng, gaussian_bytes, write_safetensors};

pub type Tensor = (String, Dtype, Vec<usize>, Vec<u8>);

/// Every dtype the round-trip tests cover.
pub const DTYPES: &[Dtype] = &[
    Dtype::BF16,
    Dtype::F16,
    Dtype::F32,
    Dtype::F64,
    Dtype::I8,
    Dtype::U8,
    Dtype::I16,
    Dtype::I32,
    Dtype::I64,
    Dtype::BOOL,
    Dtype::F8_E4M3,
    Dtype::F8_E5M2,
];

/// Random tensor of `dtype` with `shape` (values Gaussian for floats, random bytes otherwise;
/// BOOL gets 0/1).
pub fn tensor(rng: &mut Rng, name: &str, dtype: Dtype, shape: Vec<usize>) -> Tensor {
    let n: usize = shape.iter().product();
    let bytes = match dtype {
        Dtype::BF16 | Dtype::F16 | Dtype::F32 | Dtype::F64 => gaussian_bytes(rng, dtype, n, 0.02),
        Dtype::BOOL => (0..n).map(|_| (rng.next_u64() & 1) as u8).collect(),
        _ => (0..n * dtype.bitsize() / 8)
            .map(|_| rng.next_u64() as u8)
            .collect(),
    };
    (name.to_string(), dtype, shape, bytes)
}

/// Write a model directory with one safetensors file, a JSON file and a nested text file.
pub fn model_dir(root: &Path, tensors: &[Tensor]) -> PathBuf {
    let dir = root.join("model");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    write_safetensors(&dir.join("model.safetensors"), tensors).unwrap();
    std::fs::write(
        dir.join("config.json"),
        br#"{"model_type": "test", "hidden_size": 8}"#,
    )
    .unwrap();
    std::fs::write(dir.join("sub/notes.txt"), b"nested file\n".repeat(100)).unwrap();
    std::fs::write(dir.join("empty.bin"), b"").unwrap();
    dir
}

pub fn pack_dir(dir: &Path, out: &Path, chunk_size: u32) -> upg::archive::writer::PackSummary {
    pack(
        dir,
        out,
        &PackOptions {
            chunk_size,
            threads: 2,
            force: true,
            ..Default::default()
        },
    )
    .unwrap()
}

/// Read every file through the archive and compare with the originals under `dir`.
pub fn assert_identical(a: &Archive, dir: &Path) {
    for (i, f) in a.files().iter().enumerate() {
        let want = std::fs::read(dir.join(&f.path)).unwrap();
        let got = read_all(a, i).unwrap();
        assert!(got == want, "{} differs", f.path);
    }
}

/// Run the `upg` binary of this build with `args`.
pub fn upg(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_upg"))
        .args(args)
        .output()
        .unwrap()
}

/// A path as `&str` (test paths are UTF-8).
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Flip one bit in the middle of the stored bytes of the chunk that holds byte `offset` of
/// `file` in `archive`; returns where that chunk lies in the file.
pub fn damage_chunk_at(archive: &Path, file: &str, offset: u64) -> upg::archive::ChunkSpan {
    use std::os::unix::fs::FileExt;
    let a = Archive::open(archive).unwrap();
    let fi = a.file_index(file).unwrap();
    let span = a.spans(fi, offset, 1).unwrap()[0];
    let rec = a.chunk_record(span.chunk).unwrap();
    drop(a);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(archive)
        .unwrap();
    let at = rec.offset + u64::from(rec.stored_len) / 2;
    let mut b = [0u8];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0x40], at).unwrap();
    span
}

/// The demo model packed with `chunk_size` chunks, the chunk holding byte `bad_at` of
/// model.safetensors damaged, and an empty mountpoint, all in one temporary directory.
pub struct DamagedDemo {
    pub dir: tempfile::TempDir,
    pub model: PathBuf,
    pub archive: PathBuf,
    pub mnt: PathBuf,
    /// The damaged chunk's range of model.safetensors.
    pub bad: (u64, u64),
}

pub fn damaged_demo(chunk_size: u32, bad_at: u64) -> DamagedDemo {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    upg::synth::write_model(&model, upg::synth::DEMO, 7).unwrap();
    let archive = dir.path().join("bad.upg");
    let opts = PackOptions {
        chunk_size,
        ..Default::default()
    };
    pack(&model, &archive, &opts).unwrap();
    let span = damage_chunk_at(&archive, "model.safetensors", bad_at);
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    DamagedDemo {
        dir,
        model,
        archive,
        mnt,
        bad: (span.file_offset, span.file_offset + u64::from(span.len)),
    }
}

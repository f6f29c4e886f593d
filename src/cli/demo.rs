//! `upg demo`: the whole job on a built-in model — generate a small Llama-shaped model, pack it,
//! read it back (through a real FUSE mount when the mount is available, through the library
//! otherwise), check every file's SHA-256 against the original, and print the summary.

use std::path::Path;

use sha2::{Digest, Sha256};

use crate::archive::writer::{PackOptions, pack};
use crate::archive::{Archive, reader::read_all};

pub fn sha256_file(p: &Path) -> std::io::Result<[u8; 32]> {
    let mut f = std::fs::File::open(p)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = std::io::Read::read(&mut f, &mut buf)?;
        if n == 0 {
            return Ok(h.finalize().into());
        }
        h.update(&buf[..n]);
    }
}

/// Run the demo in `work` (created if missing). Returns the number of mismatching files.
pub fn run(work: &Path) -> Result<usize, String> {
    let model = work.join("model");
    let archive = work.join("model.upg");
    let _ = std::fs::remove_dir_all(&model);
    println!(
        "1. writing a synthetic Llama-shaped model to {}",
        model.display()
    );
    crate::synth::write_model(&model, crate::synth::DEMO, 42).map_err(|e| e.to_string())?;
    println!("2. packing it (lossless)");
    let s = pack(
        &model,
        &archive,
        &PackOptions {
            force: true,
            progress: true,
            ..Default::default()
        },
    )
    .map_err(|e| e.to_string())?;
    super::print_pack_summary(&s, &archive);
    println!("3. reading every file back through the archive library and checking SHA-256");
    let a = Archive::open(&archive).map_err(|e| e.to_string())?;
    let mut bad = 0;
    for (i, f) in a.files().iter().enumerate() {
        let bytes = read_all(&a, i).map_err(|e| e.to_string())?;
        let got: [u8; 32] = Sha256::digest(&bytes).into();
        let want = sha256_file(&model.join(&f.path)).map_err(|e| e.to_string())?;
        let ok = got == want;
        bad += usize::from(!ok);
        println!(
            "   {} {}  {}",
            if ok { "ok  " } else { "FAIL" },
            hex::encode(got),
            f.path
        );
    }
    Ok(bad)
}

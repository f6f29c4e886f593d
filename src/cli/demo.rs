//! `upg demo`: the whole job on a built-in model — generate a small Llama-shaped model, pack it,
//! read it back (through a real in-process FUSE mount when /dev/fuse is usable, through the
//! library otherwise, with a note saying so), check every file's SHA-256 against the original,
//! and print the summary.

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

/// Run the demo in `work` (created if missing), ending with its verdict and what to try next.
/// Returns the number of mismatching files. With
/// `keep_mounted`, the archive is mounted again at the end by a `upg mount` daemon (a process of
/// its own, started as the user would start it) that stays up after the demo exits.
pub fn run(work: &Path, keep_mounted: bool) -> Result<usize, String> {
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
            hooks: super::Terminal::hooks(true),
            ..Default::default()
        },
    )
    .map_err(|e| e.to_string())?;
    super::print_pack_summary(&s, &archive, false);
    let a = std::sync::Arc::new(Archive::open(&archive).map_err(|e| e.to_string())?);
    let mnt = work.join("mnt");
    // Registered before mounting, so that an interrupt arriving right after the kernel mount
    // appears still finds it: the signal thread aborts and detaches it (a no-op if the mount
    // does not exist yet or any more).
    let mount_guard = crate::cleanup::MOUNTS.register(&mnt);
    let mounted = match try_mount(&a, &mnt) {
        Ok(m) => {
            println!(
                "3. mounted the archive on {} (FUSE); reading every file back THROUGH the mount \
                 and checking SHA-256",
                mnt.display()
            );
            Some(m)
        }
        Err(why) => {
            println!(
                "3. FUSE mount unavailable ({why}); reading every file back through the archive \
                 library instead and checking SHA-256"
            );
            None
        }
    };
    let mut bad = 0;
    let mut result = Ok(());
    for (i, f) in a.files().iter().enumerate() {
        let got: Result<[u8; 32], String> = if mounted.is_some() {
            sha256_file(&mnt.join(&f.path)).map_err(|e| format!("{}: {e}", f.path))
        } else {
            read_all(&a, i)
                .map(|b| Sha256::digest(&b).into())
                .map_err(|e| e.to_string())
        };
        let got = match got {
            Ok(g) => g,
            Err(e) => {
                result = Err(e);
                break;
            }
        };
        let want = match sha256_file(&model.join(&f.path)) {
            Ok(w) => w,
            Err(e) => {
                result = Err(e.to_string());
                break;
            }
        };
        let ok = got == want;
        bad += usize::from(!ok);
        println!(
            "   {} {}  {}",
            if ok { "ok  " } else { "FAIL" },
            hex::encode(got),
            f.path
        );
    }
    let was_mounted = mounted.is_some();
    if let Some(m) = mounted {
        m.unmount()
            .map_err(|e| format!("unmounting {}: {e}", mnt.display()))?;
        drop(mount_guard);
        println!("4. unmounted {}", mnt.display());
    }
    result?;
    if bad != 0 {
        println!("demo FAILED: {} differ", super::count(bad as u64, "file"));
        return Ok(bad);
    }
    let kept = if keep_mounted {
        if was_mounted {
            keep(&archive, &mnt)?;
            Some(mnt.as_path())
        } else {
            println!("--keep-mounted: no mount to keep (FUSE is unavailable, see step 3)");
            None
        }
    } else {
        None
    };
    println!("demo OK: every file read back from the archive is byte-identical to the original");
    print_next(&archive, kept);
    Ok(0)
}

/// `--keep-mounted`: mount the archive again with `upg mount` (this executable, a fresh process
/// that daemonizes as `upg-mount` does; the demo's own in-process mount ends with the demo).
fn keep(archive: &Path, mnt: &Path) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("--keep-mounted: {e}"))?;
    let st = std::process::Command::new(exe)
        .arg("mount")
        .arg(archive)
        .arg(mnt)
        .status()
        .map_err(|e| format!("--keep-mounted: starting upg mount: {e}"))?;
    if !st.success() {
        return Err(format!(
            "--keep-mounted: upg mount {} {} failed ({st})",
            archive.display(),
            mnt.display()
        ));
    }
    println!(
        "5. mounted {} on {} again, and it stays up: look around (ls -l {m}), then umount {m}",
        archive.display(),
        mnt.display(),
        m = mnt.display()
    );
    Ok(())
}

/// What to try after the demo.
fn print_next(archive: &Path, kept: Option<&Path>) {
    println!("next, try:");
    println!(
        "  upg pack ./your-model -o model.upg              # a real model: a directory with safetensors (or GGUF),"
    );
    println!(
        "                                                 # or a Hugging Face cache repo ~/.cache/huggingface/hub/models--ORG--NAME"
    );
    println!(
        "  upg pack ./your-model --preset q8 -o q8.upg     # lossy, about 8 bits per weight; upg verify q8.upg --against ./your-model"
    );
    println!(
        "  upg-mount model.upg /mnt/model                  # then: python -c \"from transformers import AutoModel; AutoModel.from_pretrained('/mnt/model')\""
    );
    match kept {
        Some(m) => println!(
            "  upg inspect {} --tensors   # the demo archive's catalog; umount {} when done",
            archive.display(),
            m.display()
        ),
        None => println!(
            "  upg demo --keep-mounted                         # leave the demo's mount up to look around"
        ),
    }
}

/// Mount `a` on `mnt` in this process (served by a background thread).
fn try_mount(a: &std::sync::Arc<Archive>, mnt: &Path) -> Result<crate::fuse::Background, String> {
    if !Path::new("/dev/fuse").exists() {
        return Err("/dev/fuse is missing".into());
    }
    // check_mountpoint also detaches a stale mount left by an interrupted earlier run.
    if std::fs::symlink_metadata(mnt).is_err() {
        std::fs::create_dir_all(mnt).map_err(|e| format!("{}: {e}", mnt.display()))?;
    }
    crate::cli::mount::check_mountpoint(mnt).map_err(|e| e.to_string())?;
    let vfs = crate::vfs::Vfs::from_archives(vec![(None, a.clone())], Default::default())
        .map_err(|e| e.to_string())?;
    let cfg = crate::fuse::MountConfig {
        access: crate::fuse::Access::Owner,
        options: Vec::new(),
        threads: 2,
        fsname: format!("upg:{}", a.path().display()),
        readahead_kb: crate::fuse::DEFAULT_READAHEAD_KB,
    };
    crate::fuse::spawn(std::sync::Arc::new(vfs), mnt, &cfg).map_err(|e| e.to_string())
}

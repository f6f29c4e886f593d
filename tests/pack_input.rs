//! What `upg pack` takes from its input and what it says about it (issue 14): a Hugging Face
//! cache repository is packed by its snapshot, `--exclude` and the default excludes, and the
//! warnings about inputs that will not compress as the user expects.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;
use sha2::{Digest, Sha256};
use upg::synth::Rng;

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The stored paths, as `upg ls` prints them (last column).
fn ls(archive: &Path) -> Vec<String> {
    let o = upg(&["ls", s(archive)]);
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o)
        .lines()
        .map(|l| l.rsplit("  ").next().unwrap().to_string())
        .collect()
}

fn small_model(root: &Path) -> PathBuf {
    let mut rng = Rng::new(9);
    model_dir(
        root,
        &[tensor(
            &mut rng,
            "w",
            safetensors::Dtype::BF16,
            vec![256, 128],
        )],
    )
}

/// A Hugging Face hub cache repository laid out as `huggingface_hub` writes it: each file once
/// in `blobs/` under its SHA-256, `snapshots/REV/NAME` a relative symlink to it, `refs/main`
/// the revision (no newline). `revs` are the snapshots made; every one links all of `files`
/// except that the first (an older revision) has only the first file.
fn hf_cache(root: &Path, files: &[(&str, Vec<u8>)], revs: &[&str], main: Option<&str>) -> PathBuf {
    let repo = root.join("models--org--tiny");
    std::fs::create_dir_all(repo.join("blobs")).unwrap();
    for (k, rev) in revs.iter().enumerate() {
        let take = if k == 0 && revs.len() > 1 {
            1
        } else {
            files.len()
        };
        for (name, bytes) in &files[..take] {
            let hash = hex::encode(Sha256::digest(bytes));
            std::fs::write(repo.join("blobs").join(&hash), bytes).unwrap();
            let link = repo.join("snapshots").join(rev).join(name);
            std::fs::create_dir_all(link.parent().unwrap()).unwrap();
            let depth = name.matches('/').count() + 2;
            let target = format!("{}blobs/{hash}", "../".repeat(depth));
            std::os::unix::fs::symlink(target, &link).unwrap();
        }
    }
    if let Some(m) = main {
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/main"), m).unwrap();
    }
    repo
}

fn model_files(root: &Path) -> Vec<(&'static str, Vec<u8>)> {
    let dir = small_model(root);
    let st = std::fs::read(dir.join("model.safetensors")).unwrap();
    vec![
        ("config.json", br#"{"model_type": "bert"}"#.to_vec()),
        ("model.safetensors", st),
        (
            "1_Pooling/config.json",
            br#"{"pooling_mode_mean_tokens": true}"#.to_vec(),
        ),
    ]
}

const OLD: &str = "0000000000000000000000000000000000000001";
const REV: &str = "8b3219a92973c328a8e22fadcfa821b5dc75636a";

#[test]
fn hf_cache_repo_packs_the_snapshot_refs_main_names() {
    let tmp = tempfile::tempdir().unwrap();
    let files = model_files(tmp.path());
    let repo = hf_cache(tmp.path(), &files, &[OLD, REV], Some(REV));
    let out = tmp.path().join("repo.upg");
    let o = upg(&["pack", s(&repo), "-o", s(&out)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains(&format!(
            "is a Hugging Face cache repository: packing snapshot {REV}, the one refs/main names"
        )),
        "{e}"
    );
    // The tensors went through the float coder (the link's name says .safetensors), not zstd.
    assert!(stdout(&o).contains("BF16"), "{}", stdout(&o));
    // Exactly the snapshot's files, under their names: no blobs/, no snapshots/ prefix.
    let mut want: Vec<String> = files.iter().map(|(n, _)| n.to_string()).collect();
    want.sort();
    assert_eq!(ls(&out), want);
    // Byte for byte the archive of the snapshot directory itself (which also works: its links
    // point into ../../blobs), so nothing of blobs/ is stored besides what the snapshot links.
    let snap = repo.join("snapshots").join(REV);
    let out2 = tmp.path().join("snap.upg");
    let o = upg(&["pack", s(&snap), "-o", s(&out2)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("Hugging Face"), "{}", stderr(&o));
    assert_eq!(ls(&out2), want);
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&out2).unwrap());
    let blobs: u64 = std::fs::read_dir(repo.join("blobs"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    let stored = std::fs::metadata(&out).unwrap().len();
    assert!(stored < blobs, "archive {stored} bytes, blobs {blobs}");
    // `upg inspect` of the repository shows what pack stores: the snapshot's files and tensors.
    let o = upg(&["inspect", s(&repo), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("Hugging Face cache repository"),
        "{}",
        stderr(&o)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let mut listed: Vec<String> = v["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_string())
        .collect();
    listed.sort();
    assert_eq!(listed, want);
    assert_eq!(v["tensors"][0]["name"], "w", "{v}");
    // The files come back byte-identical, as regular files.
    let un = tmp.path().join("un");
    let o = upg(&["unpack", s(&out), "-o", s(&un)]);
    assert!(o.status.success(), "{}", stderr(&o));
    for (name, bytes) in &files {
        assert_eq!(&std::fs::read(un.join(name)).unwrap(), bytes, "{name}");
    }
}

#[test]
fn hf_cache_repo_without_a_usable_ref() {
    let tmp = tempfile::tempdir().unwrap();
    let files = model_files(tmp.path());
    // One snapshot, no refs/: the only snapshot, said.
    let one = tempfile::tempdir().unwrap();
    let repo = hf_cache(one.path(), &files, &[REV], None);
    let out = tmp.path().join("one.upg");
    let o = upg(&["pack", s(&repo), "-o", s(&out)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("packing its only snapshot {REV}")),
        "{}",
        stderr(&o)
    );
    assert_eq!(ls(&out).len(), files.len());
    // Two snapshots and a refs/main naming neither: refused, listing them and saying what to do.
    let two = tempfile::tempdir().unwrap();
    let repo = hf_cache(two.path(), &files, &[OLD, REV], Some("../../etc"));
    let out = tmp.path().join("two.upg");
    let o = upg(&["pack", s(&repo), "-o", s(&out)]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains(&format!("2 snapshots ({OLD}, {REV})"))
            && e.contains("refs/main names \"../../etc\", which is not among them")
            && e.contains(&format!(
                "upg pack {}",
                repo.join("snapshots").join(OLD).display()
            )),
        "{e}"
    );
    assert!(!out.exists());
}

#[test]
fn exclude_patterns_and_default_excludes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = small_model(tmp.path());
    std::fs::create_dir_all(dir.join(".git/lfs/objects")).unwrap();
    std::fs::write(dir.join(".git/lfs/objects/ab12"), vec![7u8; 50_000]).unwrap();
    std::fs::write(dir.join(".git/HEAD"), "ref: refs/heads/main\n").unwrap();
    std::fs::create_dir_all(dir.join(".cache/huggingface/download")).unwrap();
    std::fs::write(dir.join(".cache/huggingface/download/x.lock"), "").unwrap();
    std::fs::write(dir.join(".gitattributes"), "*.safetensors filter=lfs\n").unwrap();
    let out = tmp.path().join("m.upg");

    // By default .git and .cache/huggingface are skipped, saying so; .gitattributes is kept.
    let o = upg(&["pack", s(&dir), "-o", s(&out)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(
            "note: skipped .git/, .cache/huggingface/ (excluded by default; \
             --no-default-excludes keeps them)"
        ),
        "{}",
        stderr(&o)
    );
    let names = ls(&out);
    assert!(names.contains(&".gitattributes".to_string()), "{names:?}");
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with(".git/") || n.starts_with(".cache")),
        "{names:?}"
    );

    // --no-default-excludes keeps them, and says nothing about skipping.
    let o = upg(&[
        "pack",
        s(&dir),
        "-o",
        s(&out),
        "--force",
        "--no-default-excludes",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("skipped"), "{}", stderr(&o));
    let names = ls(&out);
    for n in [
        ".git/lfs/objects/ab12",
        ".git/HEAD",
        ".cache/huggingface/download/x.lock",
    ] {
        assert!(names.contains(&n.to_string()), "{n} in {names:?}");
    }

    // --exclude: a name pattern at any depth, a directory, a path pattern; one matching nothing.
    let o = upg(&[
        "pack",
        s(&dir),
        "-o",
        s(&out),
        "--force",
        "--exclude",
        "*.txt",
        "--exclude",
        "empty.*",
        "--exclude",
        "./nothing/*",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("--exclude \"*.txt\" skipped 1 path: sub/notes.txt")
            && e.contains("--exclude \"empty.*\" skipped 1 path: empty.bin")
            && e.contains("--exclude \"./nothing/*\" matched nothing"),
        "{e}"
    );
    assert_eq!(
        ls(&out),
        [".gitattributes", "config.json", "model.safetensors"]
    );
    let o = upg(&[
        "pack",
        s(&dir),
        "-o",
        s(&out),
        "--force",
        "--exclude",
        "sub",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("skipped 1 path: sub/\n"),
        "{}",
        stderr(&o)
    );
    assert!(!ls(&out).iter().any(|n| n.starts_with("sub")));

    // Excluding everything is an error, not an empty archive.
    let o = upg(&["pack", s(&dir), "-o", s(&out), "--force", "--exclude", "*"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("holds no files to pack (after excludes)"),
        "{}",
        stderr(&o)
    );
    // The help documents both flags.
    let h = stdout(&upg(&["pack", "--help"]));
    assert!(
        h.contains("--exclude <PATTERN>") && h.contains("--no-default-excludes"),
        "{h}"
    );
}

#[test]
fn warnings_for_inputs_without_tensors() {
    let tmp = tempfile::tempdir().unwrap();
    // Two small text files: nothing to float-code, and the index outweighs what zstd saves.
    let dir = tmp.path().join("tok");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("config.json"), r#"{"a": 1}"#).unwrap();
    std::fs::write(dir.join("vocab.txt"), "[PAD]\n[UNK]\n").unwrap();
    let out = tmp.path().join("tok.upg");
    let o = upg(&["pack", s(&dir), "-o", s(&out)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (e, t) = (stderr(&o), stdout(&o));
    assert!(
        e.contains(&format!(
            "warning: no tensors found in {} (no .safetensors or GGUF file with tensors): its 2 \
             files are stored with lossless zstd only",
            dir.display()
        )),
        "{e}"
    );
    let size = std::fs::metadata(&out).unwrap().len();
    let input = 8 + 12;
    assert!(
        e.contains(&format!(
            "warning: archive is larger than input by {} bytes ({input} in, {size} out)",
            size - input
        )),
        "{e}"
    );
    // The table's total shows how much larger, not a negative percentage saved.
    let total = t
        .lines()
        .find(|l| l.trim_start().starts_with("total"))
        .unwrap();
    assert!(
        total.contains(&format!("x, larger by {} B", size - input)),
        "{t}"
    );
    assert!(
        !t.split_whitespace()
            .any(|w| w.starts_with('-') && w.ends_with('%')),
        "{t}"
    );
    // -q: no warnings; --json: warnings on stderr and in the report.
    let o = upg(&["-q", "pack", s(&dir), "-o", s(&out), "--force"]);
    assert!(o.status.success() && o.stderr.is_empty(), "{}", stderr(&o));
    let o = upg(&["pack", s(&dir), "-o", s(&out), "--force", "--json"]);
    assert!(
        stderr(&o).contains("warning: no tensors found"),
        "{}",
        stderr(&o)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["warnings"].as_array().unwrap().len(), 2, "{v}");
    // A model with tensors gets neither warning.
    let m = small_model(tmp.path());
    let o = upg(&["pack", s(&m), "-o", s(&out), "--force"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("warning"), "{}", stderr(&o));
}

#[test]
fn pytorch_pickles_are_warned_about() {
    let tmp = tempfile::tempdir().unwrap();
    // Beside a safetensors file: probably a second copy of the weights, --exclude suggested.
    let dir = small_model(tmp.path());
    std::fs::write(dir.join("pytorch_model.bin"), vec![0x80u8; 3 << 20]).unwrap();
    let out = tmp.path().join("m.upg");
    let o = upg(&["pack", s(&dir), "-o", s(&out)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains(
            "warning: pytorch_model.bin: a PyTorch pickle (3.0 MiB): stored as opaque bytes \
             with lossless zstd only"
        ) && e.contains("convert it to safetensors")
            && e.contains("--exclude 'pytorch_model.bin' leaves it out"),
        "{e}"
    );
    assert!(!e.contains("no tensors found"), "{e}");
    // Alone (a .pt checkpoint directory): the warning, no --exclude hint, and no tensors found.
    let pt = tmp.path().join("pt");
    std::fs::create_dir(&pt).unwrap();
    std::fs::write(pt.join("model.pt"), vec![1u8; 4096]).unwrap();
    let o = upg(&["pack", s(&pt), "-o", s(&tmp.path().join("pt.upg"))]);
    assert!(o.status.success(), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("warning: model.pt: a PyTorch pickle") && !e.contains("--exclude"),
        "{e}"
    );
    assert!(e.contains("warning: no tensors found"), "{e}");
}

/// The hub directory itself (`~/.cache/huggingface/hub`, several repositories): each repository
/// is stored as its snapshot under the repository's name, blobs/ not stored.
#[test]
fn hf_hub_directory_stores_each_repo_by_its_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let files = model_files(tmp.path());
    let hub = tmp.path().join("hub");
    let repo = hf_cache(&hub, &files, &[OLD, REV], Some(REV));
    std::fs::write(hub.join("version.txt"), "1").unwrap();
    let out = tmp.path().join("hub.upg");
    let o = upg(&["pack", s(&hub), "-o", s(&out)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!(
            "models--org--tiny/ is a Hugging Face cache repository: storing snapshot {REV}, the \
             one refs/main names, under models--org--tiny/"
        )),
        "{}",
        stderr(&o)
    );
    let mut want: Vec<String> = files
        .iter()
        .map(|(n, _)| format!("models--org--tiny/{n}"))
        .chain(["version.txt".to_string()])
        .collect();
    want.sort();
    assert_eq!(ls(&out), want);
    let un = tmp.path().join("un");
    assert!(upg(&["unpack", s(&out), "-o", s(&un)]).status.success());
    for (name, bytes) in &files {
        assert_eq!(
            &std::fs::read(un.join("models--org--tiny").join(name)).unwrap(),
            bytes
        );
    }
    // A repository below the input whose snapshot cannot be chosen is an error naming it.
    std::fs::remove_file(repo.join("refs/main")).unwrap();
    let o = upg(&["pack", s(&hub), "-o", s(&out), "--force"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o)
            .contains("models--org--tiny is a Hugging Face cache repository with 2 snapshots"),
        "{}",
        stderr(&o)
    );
}

/// A file rewritten while it is packed fails the pack with "file changed while being packed"
/// (the encoder's and the hasher's reads differ) and leaves no output and no temporary; it
/// never gives an archive whose digest describes bytes it does not hold. A thread flips one
/// byte in every 4 KiB chunk of a 16 MiB file for as long as the packs run, so each chunk's two
/// reads see independent values: a pack that succeeds anyway (every chunk read the same twice)
/// must still be self-consistent, and at least one of the tries must fail.
#[test]
fn a_file_changed_during_pack_fails_without_output() {
    use std::os::unix::fs::FileExt;
    use std::sync::atomic::{AtomicBool, Ordering};
    use upg::archive::writer::{PackOptions, pack};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    std::fs::create_dir(&dir).unwrap();
    let path = dir.join("blob.bin");
    const LEN: usize = 16 << 20;
    let mut rng = Rng::new(3);
    let data: Vec<u8> = (0..LEN).map(|_| rng.next_u64() as u8).collect();
    std::fs::write(&path, &data).unwrap();
    let stop = AtomicBool::new(false);
    let opts = PackOptions {
        chunk_size: 4096,
        threads: 2,
        force: true,
        ..Default::default()
    };
    let out = tmp.path().join("m.upg");
    let (mut failed, mut succeeded) = (0, 0);
    std::thread::scope(|sc| {
        sc.spawn(|| {
            let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            let mut v = 0u8;
            while !stop.load(Ordering::Relaxed) {
                v ^= 1;
                for off in (100..LEN).step_by(4096) {
                    f.write_all_at(&[v], off as u64).unwrap();
                }
            }
        });
        // Stops the flipper however this closure ends (a failed assertion must not leave the
        // scope waiting for it forever).
        struct Stop<'a>(&'a AtomicBool);
        impl Drop for Stop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let _stop = Stop(&stop);
        for _ in 0..5 {
            match pack(&dir, &out, &opts) {
                Err(e) => {
                    let msg = e.to_string();
                    assert!(
                        msg.contains("blob.bin") && msg.contains("changed while being packed"),
                        "{msg}"
                    );
                    assert!(!out.exists(), "a failed pack left {}", out.display());
                    failed += 1;
                }
                Ok(_) => {
                    // Every chunk was read the same twice: the archive must agree with itself.
                    let a = upg::archive::Archive::open(&out).unwrap();
                    let r = upg::archive::verify::verify(&a, None);
                    assert!(r.problems.is_empty(), "{:?}", r.problems.len());
                    std::fs::remove_file(&out).unwrap();
                    succeeded += 1;
                }
            }
        }
    });
    assert!(
        failed > 0,
        "{succeeded} packs of a changing file succeeded, none failed"
    );
    for e in std::fs::read_dir(tmp.path()).unwrap().flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        assert!(!n.contains("upg-tmp"), "temporary left behind: {n}");
    }
}

//! The `upg` command on good and bad input: exit codes, messages naming the thing at fault, and
//! nothing half-written left behind.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;
use upg::synth::Rng;

fn small_model(root: &Path) -> std::path::PathBuf {
    let mut rng = Rng::new(5);
    model_dir(
        root,
        &[tensor(
            &mut rng,
            "w",
            safetensors::Dtype::BF16,
            vec![128, 64],
        )],
    )
}

/// No temporary files left next to the output.
fn assert_no_temp(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        assert!(!n.contains("upg-tmp"), "temporary left behind: {n}");
    }
}

#[test]
fn pack_unpack_inspect_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = small_model(tmp.path());
    let out = tmp.path().join("m.upg");
    let o = upg(&["pack", s(&dir), "-o", s(&out)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("BF16") && text.contains("saved"), "{text}");
    // Existing output refused, --force accepted.
    let o = upg(&["pack", s(&dir), "-o", s(&out)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("exists"), "{}", stderr(&o));
    assert!(
        upg(&["pack", s(&dir), "-o", s(&out), "--force"])
            .status
            .success()
    );

    let o = upg(&["verify", s(&out), "--against", s(&dir)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));

    let o = upg(&["inspect", s(&out), "--json", "--tensors"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["tensors"][0]["name"], "w");
    assert_eq!(v["tensors"][0]["shape"], serde_json::json!([128, 64]));
    assert_eq!(v["params"], 128 * 64);
    assert!(v["tensors"][0]["stored"].as_u64().unwrap() > 0);
    for p in [&dir, &dir.join("model.safetensors")] {
        let o = upg(&["inspect", s(p), "--tensors"]);
        assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).contains("[128, 64]"));
    }

    let un = tmp.path().join("un");
    assert!(upg(&["unpack", s(&out), "-o", s(&un)]).status.success());
    for f in [
        "model.safetensors",
        "config.json",
        "sub/notes.txt",
        "empty.bin",
    ] {
        assert_eq!(
            std::fs::read(dir.join(f)).unwrap(),
            std::fs::read(un.join(f)).unwrap(),
            "{f}"
        );
    }
    let o = upg(&["unpack", s(&out), "-o", s(&un)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        upg(&["unpack", s(&out), "-o", s(&un), "--force"])
            .status
            .success()
    );

    // verify --against detects a modified original.
    let mut cfg = std::fs::read(dir.join("config.json")).unwrap();
    cfg[3] ^= 1;
    std::fs::write(dir.join("config.json"), cfg).unwrap();
    let o = upg(&["verify", s(&out), "--against", s(&dir)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).contains("config.json at offset 3"));
    assert_no_temp(tmp.path());
}

#[test]
fn bad_inputs_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("x.upg");
    /// (case name, how to break the input directory, what the error must say)
    type Case = (&'static str, Box<dyn Fn(&Path)>, &'static str);
    let cases: Vec<Case> = vec![
        ("missing", Box::new(|_: &Path| {}), "does not exist"),
        (
            "empty",
            Box::new(|d: &Path| std::fs::create_dir_all(d).unwrap()),
            "holds no files",
        ),
        (
            "header-past-eof",
            Box::new(|d: &Path| {
                std::fs::create_dir_all(d).unwrap();
                let mut b = 1000u64.to_le_bytes().to_vec();
                b.extend_from_slice(b"{}");
                std::fs::write(d.join("model.safetensors"), b).unwrap();
            }),
            "runs past the end",
        ),
        (
            "bad-json",
            Box::new(|d: &Path| {
                std::fs::create_dir_all(d).unwrap();
                let h = b"{not json";
                let mut b = (h.len() as u64).to_le_bytes().to_vec();
                b.extend_from_slice(h);
                std::fs::write(d.join("model.safetensors"), b).unwrap();
            }),
            "not valid JSON",
        ),
        (
            "unknown-dtype",
            Box::new(|d: &Path| {
                std::fs::create_dir_all(d).unwrap();
                let h = br#"{"a":{"dtype":"Q9","shape":[4],"data_offsets":[0,4]}}"#;
                let mut b = (h.len() as u64).to_le_bytes().to_vec();
                b.extend_from_slice(h);
                b.extend_from_slice(&[0; 4]);
                std::fs::write(d.join("model.safetensors"), b).unwrap();
            }),
            "header names an unknown dtype",
        ),
        (
            "overlap",
            Box::new(|d: &Path| {
                std::fs::create_dir_all(d).unwrap();
                let h = br#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}}"#;
                let mut b = (h.len() as u64).to_le_bytes().to_vec();
                b.extend_from_slice(h);
                b.extend_from_slice(&[0; 6]);
                std::fs::write(d.join("model.safetensors"), b).unwrap();
            }),
            "overlap",
        ),
        (
            "truncated-data",
            Box::new(|d: &Path| {
                std::fs::create_dir_all(d).unwrap();
                let h = br#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#;
                let mut b = (h.len() as u64).to_le_bytes().to_vec();
                b.extend_from_slice(h);
                b.extend_from_slice(&[0; 10]);
                std::fs::write(d.join("model.safetensors"), b).unwrap();
            }),
            "truncated",
        ),
        (
            "dangling-link",
            Box::new(|d: &Path| {
                std::fs::create_dir_all(d).unwrap();
                std::os::unix::fs::symlink("/nonexistent/x", d.join("link.json")).unwrap();
            }),
            "dangling symbolic link",
        ),
        (
            "dir-link",
            Box::new(|d: &Path| {
                std::fs::create_dir_all(d).unwrap();
                std::fs::write(d.join("a.json"), "{}").unwrap();
                std::os::unix::fs::symlink("/tmp", d.join("loop")).unwrap();
            }),
            "link to a directory",
        ),
        (
            "not-safetensors-file",
            Box::new(|d: &Path| {
                std::fs::create_dir_all(d.parent().unwrap()).unwrap();
                std::fs::write(d, "hello").unwrap();
            }),
            "neither a directory nor a .safetensors",
        ),
    ];
    for (name, setup, want) in cases {
        let input = tmp.path().join(name);
        setup(&input);
        let o = upg(&["pack", s(&input), "-o", s(&out)]);
        assert_eq!(o.status.code(), Some(2), "{name}");
        let e = stderr(&o);
        assert!(e.contains(want), "{name}: {e}");
        assert!(!e.contains("panicked"), "{name}: {e}");
        assert!(!out.exists(), "{name}: output written");
    }
    assert_no_temp(tmp.path());
}

#[test]
fn symlinked_file_is_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = small_model(tmp.path());
    let blob = tmp.path().join("blob.json");
    std::fs::write(&blob, "{\"linked\": true}").unwrap();
    std::os::unix::fs::symlink(&blob, dir.join("linked.json")).unwrap();
    let out = tmp.path().join("m.upg");
    assert!(upg(&["pack", s(&dir), "-o", s(&out)]).status.success());
    let un = tmp.path().join("un");
    assert!(upg(&["unpack", s(&out), "-o", s(&un)]).status.success());
    assert_eq!(
        std::fs::read(un.join("linked.json")).unwrap(),
        b"{\"linked\": true}"
    );
    assert!(
        !std::fs::symlink_metadata(un.join("linked.json"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

#[test]
fn output_inside_input_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = small_model(tmp.path());
    let o = upg(&["pack", s(&dir), "-o", s(&dir.join("sub/m.upg"))]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("inside the input"), "{}", stderr(&o));
}

#[test]
fn corrupt_archive_is_reported_by_every_command() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = small_model(tmp.path());
    let out = tmp.path().join("m.upg");
    assert!(upg(&["pack", s(&dir), "-o", s(&out)]).status.success());
    let mut b = std::fs::read(&out).unwrap();
    b[40] ^= 0x80; // inside the first chunk's stored bytes
    std::fs::write(&out, &b).unwrap();
    let o = upg(&["verify", s(&out)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).contains("checksum"));
    let un = tmp.path().join("un");
    let o = upg(&["unpack", s(&out), "-o", s(&un)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("checksum"), "{}", stderr(&o));
    assert!(!un.exists(), "unpack left a partial output");
    assert_no_temp(tmp.path());
    std::fs::write(
        &out,
        b"not an archive at all, just some text that is long enough to parse",
    )
    .unwrap();
    let o = upg(&["inspect", s(&out)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("not a upg archive"), "{}", stderr(&o));
}

/// Disk full: pack into a 1 MiB tmpfs; the error names the output and nothing is left behind.
/// Needs root (mount); skipped with a message otherwise.
#[test]
fn disk_full_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs", s(&mnt)])
        .status();
    if !matches!(ok, Ok(st) if st.success()) {
        eprintln!("SKIP disk_full_leaves_nothing: cannot mount a tmpfs (not root?)");
        return;
    }
    let mut rng = Rng::new(8);
    let dir = model_dir(
        tmp.path(),
        &[tensor(
            &mut rng,
            "w",
            safetensors::Dtype::F32,
            vec![1024, 1024],
        )],
    );
    let out = mnt.join("m.upg");
    let o = upg(&["pack", s(&dir), "-o", s(&out)]);
    let listing: Vec<_> = std::fs::read_dir(&mnt)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    let _ = Command::new("umount").arg(s(&mnt)).status();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("No space left"), "{}", stderr(&o));
    assert!(listing.is_empty(), "left behind: {listing:?}");
}

/// `upg inspect ... | head`: the reader goes away early. The command must end quietly (SIGPIPE,
/// as Unix tools do), not panic on the failed write.
#[test]
fn closed_stdout_pipe_is_not_a_panic() {
    use std::io::Read;
    let tmp = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(9);
    // Enough tensors that the listing is far larger than a pipe buffer (64 KiB).
    let tensors: Vec<_> = (0..3000)
        .map(|i| {
            tensor(
                &mut rng,
                &format!("layer.{i}.a_rather_long_tensor_name_for_the_listing.weight"),
                safetensors::Dtype::BF16,
                vec![2, 2],
            )
        })
        .collect();
    let dir = model_dir(tmp.path(), &tensors);
    let mut child = Command::new(env!("CARGO_BIN_EXE_upg"))
        .args(["inspect", s(&dir), "--tensors"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut first = [0u8; 100];
    out.read_exact(&mut first).unwrap();
    drop(out);
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let st = child.wait().unwrap();
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        !st.success(),
        "the write to a closed pipe must end the command"
    );
}

/// SIGTERM or Ctrl-C in the middle of a pack: no output, and no hidden temporary left behind.
#[test]
fn interrupted_pack_leaves_nothing() {
    use std::os::unix::process::ExitStatusExt;
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    // ~40 MiB of BF16 packed lossy on one thread: seconds, so the signal lands mid-pack.
    let shape = upg::synth::ModelShape {
        vocab: 8192,
        hidden: 512,
        ffn: 2048,
        layers: 4,
    };
    upg::synth::write_model(&model, shape, 3).unwrap();
    let out_dir = tmp.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let out = out_dir.join("m.upg");
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_upg"))
            .args([
                "pack",
                s(&model),
                "-o",
                s(&out),
                "--preset",
                "q4",
                "--threads",
                "1",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Wait for the temporary to appear, then interrupt.
        let t0 = std::time::Instant::now();
        let seen = loop {
            let busy = std::fs::read_dir(&out_dir)
                .unwrap()
                .flatten()
                .any(|e| e.file_name().to_string_lossy().contains("upg-tmp"));
            if busy || child.try_wait().unwrap().is_some() {
                break busy;
            }
            assert!(t0.elapsed().as_secs() < 60, "pack never started writing");
            std::thread::sleep(std::time::Duration::from_millis(2));
        };
        assert!(
            seen,
            "pack finished before it could be interrupted: make the model larger"
        );
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, sig) };
        let st = child.wait().unwrap();
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        assert_eq!(st.code(), Some(128 + sig), "{st:?} {err}");
        assert!(st.signal().is_none());
        assert!(err.contains("interrupted"), "{err}");
        assert!(!out.exists(), "no output after an interrupted pack");
        assert_no_temp(&out_dir);
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn upg_mount(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_upg-mount"))
        .args(args)
        .output()
        .unwrap()
}

/// The messages of issue 14's list, each as the user now sees it.
#[test]
fn messages_name_the_real_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = small_model(tmp.path());
    let out = tmp.path().join("m.upg");

    // Unknown preset: lists lossless too, no "cannot encode:" prefix.
    let o = upg(&["pack", s(&dir), "-o", s(&out), "--preset", "q2"]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.contains("unknown preset \"q2\"; expected one of lossless, q8"),
        "{e}"
    );
    assert!(!e.contains("cannot encode"), "{e}");
    // A lossy override with an explicit lossless preset: the message knows --preset was given.
    let o = upg(&[
        "pack",
        s(&dir),
        "-o",
        s(&out),
        "--preset",
        "lossless",
        "--override",
        "*=q8",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.contains("--preset lossless keeps every tensor lossless"),
        "{e}"
    );
    assert!(!e.contains("needs --preset"), "{e}");
    let o = upg(&["pack", s(&dir), "-o", s(&out), "--override", "*=q8"]);
    assert!(stderr(&o).contains("without --preset"), "{}", stderr(&o));
    assert!(!out.exists());

    assert!(upg(&["pack", s(&dir), "-o", s(&out)]).status.success());
    // verify --against a path that does not exist: one error, not a FAIL line per file.
    let o = upg(&["verify", s(&out), "--against", "/nonexistent/upg-orig"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("--against /nonexistent/upg-orig"),
        "{}",
        stderr(&o)
    );
    assert!(!stdout(&o).contains("FAIL"), "{}", stdout(&o));
    // ... or a single file for a directory archive.
    let f = dir.join("model.safetensors");
    let o = upg(&["verify", s(&out), "--against", s(&f)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("is a file, but the archive holds 4 files"),
        "{}",
        stderr(&o)
    );
    assert!(!stdout(&o).contains("FAIL"), "{}", stdout(&o));

    // bench refuses counts of zero instead of printing "0 threads" / "median of 1".
    for flag in ["--threads", "--runs"] {
        let o = upg(&["bench", s(&out), flag, "0"]);
        assert_eq!(o.status.code(), Some(2), "{flag}");
        assert!(
            stderr(&o).contains("must be at least 1"),
            "{flag}: {}",
            stderr(&o)
        );
    }
    let o = upg(&["bench", s(&out), "--threads", "1", "--runs", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let t = stdout(&o);
    assert!(t.contains("1 thread :") && t.contains("(1 run)"), "{t}");

    // --help describes the positionals and flags.
    let h = stdout(&upg(&["verify", "--help"]));
    assert!(
        h.contains("The .upg archive to check") && h.contains("Print the report as JSON"),
        "{h}"
    );
    let h = stdout(&upg(&["bench", "--help"]));
    assert!(h.contains("Decodes of the whole archive"), "{h}");
    let h = stdout(&upg(&["inspect", "--help"]));
    assert!(
        h.contains("A .upg archive (a path, s3://") && h.contains("a model directory"),
        "{h}"
    );

    // Truncated archive: verify reports a problem (exit 1, as its help says), not an error.
    let bytes = std::fs::read(&out).unwrap();
    let trunc = tmp.path().join("trunc.upg");
    std::fs::write(&trunc, &bytes[..bytes.len() / 2]).unwrap();
    let o = upg(&["verify", s(&trunc)]);
    assert_eq!(o.status.code(), Some(1), "{} {}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("FAIL"), "{}", stdout(&o));
    // A missing archive stays an error (2).
    assert_eq!(
        upg(&["verify", "/nonexistent/x.upg"]).status.code(),
        Some(2)
    );

    // upg-mount with only an archive: the mountpoint is what is missing.
    let o = upg_mount(&[s(&out)]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(e.contains("the mountpoint is missing"), "{e}");
    assert!(!e.contains("<ARCHIVE>"), "{e}");
    // An explicit cache size outside the sensible range is accepted with a note.
    let o = upg_mount(&[s(&out), "/nonexistent/mnt", "--cache-size", "1K"]);
    assert!(
        stderr(&o).contains("below the default's floor"),
        "{}",
        stderr(&o)
    );
    // A bad --decode-ahead is refused before anything is opened, naming the flag.
    let o = upg_mount(&[s(&out), "/nonexistent/mnt", "--decode-ahead", "12Q"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--decode-ahead 12Q"), "{}", stderr(&o));
    let o = upg_mount(&[s(&out), "/nonexistent/mnt", "--cache-size", "100T"]);
    assert!(
        stderr(&o).contains("more than the memory available"),
        "{}",
        stderr(&o)
    );
    assert_no_temp(tmp.path());
}

/// Plurals: one problem is "1 problem", one file "1 file".
#[test]
fn counts_are_singular_for_one() {
    let tmp = tempfile::tempdir().unwrap();
    let f = small_model(tmp.path()).join("model.safetensors");
    let out = tmp.path().join("one.upg");
    let o = upg(&["pack", s(&f), "-o", s(&out)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("packed 1 file, 1 tensor, "),
        "{}",
        stdout(&o)
    );
    let mut b = std::fs::read(&out).unwrap();
    b[40] ^= 0x80;
    std::fs::write(&out, &b).unwrap();
    let o = upg(&["verify", s(&out)]);
    assert_eq!(o.status.code(), Some(1));
    let t = stdout(&o);
    assert!(t.contains("1 file, ") && t.contains(": 1 problem\n"), "{t}");
}

/// Lossy: an override that quantizes a 1-D tensor is said; unpacking a lossy archive says it is
/// lossy.
#[test]
fn lossy_surprises_are_said() {
    let tmp = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(14);
    let dir = model_dir(
        tmp.path(),
        &[
            tensor(&mut rng, "w", safetensors::Dtype::BF16, vec![512, 256]),
            tensor(
                &mut rng,
                "ln.LayerNorm.weight",
                safetensors::Dtype::BF16,
                vec![4096],
            ),
        ],
    );
    let out = tmp.path().join("q.upg");
    let o = upg(&[
        "pack",
        s(&dir),
        "-o",
        s(&out),
        "--preset",
        "q8",
        "--override",
        "*LayerNorm*=q8",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let all = format!("{}{}", stdout(&o), stderr(&o));
    assert!(
        all.contains("ln.LayerNorm.weight is 1-D but quantized by an --override"),
        "{all}"
    );
    let un = tmp.path().join("un");
    let o = upg(&["unpack", s(&out), "-o", s(&un)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("lossy archive (preset q8)"),
        "{}",
        stderr(&o)
    );
}

/// Packing into a read-only file system names the output, not the hidden temporary. Needs root
/// (mount); skipped with a message otherwise.
#[test]
fn read_only_output_names_the_output() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = small_model(tmp.path());
    let mnt = tmp.path().join("rofs");
    std::fs::create_dir(&mnt).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", s(&mnt)])
        .status();
    if !matches!(ok, Ok(st) if st.success()) {
        eprintln!("SKIP read_only_output_names_the_output: cannot mount a tmpfs (not root?)");
        return;
    }
    let out = mnt.join("x.upg");
    let o = upg(&["pack", s(&dir), "-o", s(&out)]);
    let _ = Command::new("umount").arg(s(&mnt)).status();
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(e.contains("rofs/x.upg: Read-only file system"), "{e}");
    assert!(!e.contains("upg-tmp"), "{e}");
}

/// `upg ls`, `upg cat`, `upg unpack ARCHIVE FILE...`.
#[test]
fn ls_cat_and_partial_unpack() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = small_model(tmp.path());
    let out = tmp.path().join("m.upg");
    assert!(upg(&["pack", s(&dir), "-o", s(&out)]).status.success());

    let o = upg(&["ls", s(&out), "--bytes"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let t = stdout(&o);
    let cfg = std::fs::read(dir.join("config.json")).unwrap();
    for f in [
        "config.json",
        "empty.bin",
        "model.safetensors",
        "sub/notes.txt",
    ] {
        assert!(
            t.lines().any(|l| l.ends_with(&format!("  {f}"))),
            "{f}: {t}"
        );
    }
    assert!(
        t.contains(&format!("{}  0644  config.json", cfg.len())),
        "{t}"
    );
    let t = stdout(&upg(&["ls", s(&out), "sub"]));
    assert_eq!(t.lines().count(), 1, "{t}");
    assert!(t.contains("sub/notes.txt"), "{t}");
    let o = upg(&["ls", s(&out), "nope"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("\"nope\" is not in the archive"),
        "{}",
        stderr(&o)
    );

    let o = upg(&["cat", s(&out), "config.json"]);
    assert!(o.status.success());
    assert_eq!(o.stdout, cfg);
    let o = upg(&["cat", s(&out), "model.safetensors"]);
    assert_eq!(
        o.stdout,
        std::fs::read(dir.join("model.safetensors")).unwrap()
    );
    let o = upg(&["cat", s(&out), "missing.json"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("not in the archive"), "{}", stderr(&o));

    let un = tmp.path().join("some");
    let o = upg(&["unpack", s(&out), "config.json", "sub", "-o", s(&un)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("unpacked 2 files"), "{}", stdout(&o));
    assert_eq!(std::fs::read(un.join("config.json")).unwrap(), cfg);
    assert!(un.join("sub/notes.txt").exists());
    assert!(!un.join("model.safetensors").exists());
    let o = upg(&["unpack", s(&out), "nope", "-o", s(&tmp.path().join("x"))]);
    assert_eq!(o.status.code(), Some(2));
    assert!(!tmp.path().join("x").exists());

    // A damaged chunk: cat fails naming the file; unpack --keep-going writes the intact files,
    // leaves the damaged one out and exits 1.
    let mut b = std::fs::read(&out).unwrap();
    b[40] ^= 0x80;
    std::fs::write(&out, &b).unwrap();
    let o = upg(&["verify", s(&out), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let bad = v["problems"][0]["file"].as_str().unwrap().to_string();
    let o = upg(&["cat", s(&out), &bad]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains(&format!("{bad} at offset 0")),
        "{}",
        stderr(&o)
    );
    let un = tmp.path().join("kept");
    let o = upg(&["unpack", s(&out), "-o", s(&un), "--keep-going"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains(&format!("damaged, not written: {bad}")), "{e}");
    assert!(e.contains("1 file is damaged"), "{e}");
    assert!(!un.join(&bad).exists(), "damaged file written");
    for f in [
        "config.json",
        "empty.bin",
        "model.safetensors",
        "sub/notes.txt",
    ] {
        if f != bad {
            assert_eq!(
                std::fs::read(un.join(f)).unwrap(),
                std::fs::read(dir.join(f)).unwrap(),
                "{f}"
            );
        }
    }
    assert_no_temp(tmp.path());
}

/// -q, -v and -vv on `upg`; completions; the man page; `upg mount` as upg-mount.
#[test]
fn verbosity_completions_man_and_mount_alias() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = small_model(tmp.path());
    let out = tmp.path().join("m.upg");
    let o = upg(&["-q", "pack", s(&dir), "-o", s(&out)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        o.stdout.is_empty() && o.stderr.is_empty(),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
    let o = upg(&["verify", s(&out), "-q"]);
    assert!(o.status.success() && o.stdout.is_empty(), "{}", stdout(&o));
    let o = upg(&["pack", s(&dir), "-o", s(&out), "--force", "-v"]);
    assert!(
        stderr(&o).contains("model.safetensors: ") && stderr(&o).contains("(0 lossy)"),
        "{}",
        stderr(&o)
    );
    assert!(!stderr(&o).contains("DEBUG"), "{}", stderr(&o));
    let o = upg(&["-vv", "pack", s(&dir), "-o", s(&out), "--force"]);
    assert!(
        stderr(&o).contains("model.safetensors: w"),
        "{}",
        stderr(&o)
    );
    let o = upg(&["-v", "verify", s(&out)]);
    assert!(stderr(&o).contains("checked config.json"), "{}", stderr(&o));

    for (shell, want) in [
        ("bash", "_upg()"),
        ("zsh", "#compdef upg"),
        ("fish", "complete -c upg"),
    ] {
        let o = upg(&["completions", shell]);
        assert!(o.status.success(), "{shell}");
        let t = stdout(&o);
        assert!(
            t.contains(want) && t.contains("unpack"),
            "{shell}: {}",
            &t[..t.len().min(300)]
        );
    }
    let o = upg(&["man"]);
    assert!(o.status.success());
    let t = stdout(&o);
    assert!(
        t.contains(".TH upg 1") && t.contains("unpack"),
        "{}",
        &t[..t.len().min(300)]
    );

    let o = upg(&["mount", s(&out)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("the mountpoint is missing"),
        "{}",
        stderr(&o)
    );
    let o = upg(&["mount", s(&out), "/nonexistent/mnt"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("upg-mount: mountpoint /nonexistent/mnt: does not exist"),
        "{}",
        stderr(&o)
    );
}

/// verify does not stop at the first damaged chunk of a file: every damaged range is listed,
/// adjacent damaged chunks as one range.
#[test]
fn verify_lists_every_damaged_range() {
    let tmp = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(21);
    // 256 KiB of F32 noise in 4 KiB chunks: 64 chunks in model.safetensors.
    let dir = model_dir(
        tmp.path(),
        &[tensor(
            &mut rng,
            "w",
            safetensors::Dtype::F32,
            vec![256, 256],
        )],
    );
    let out = tmp.path().join("m.upg");
    let o = upg(&["pack", s(&dir), "-o", s(&out), "--chunk-size", "4096"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let a = upg::archive::Archive::open(&out).unwrap();
    let fi = a.file_index("model.safetensors").unwrap();
    let spans = a.spans(fi, 0, a.files()[fi].size).unwrap();
    assert!(spans.len() > 20);
    // Damage chunks 3, 4 (adjacent: one range) and 15 (a second range).
    let mut b = std::fs::read(&out).unwrap();
    for k in [3usize, 4, 15] {
        let rec = a.chunk_record(spans[k].chunk).unwrap();
        b[(rec.offset + u64::from(rec.stored_len) / 2) as usize] ^= 0x01;
    }
    drop(a);
    std::fs::write(&out, &b).unwrap();
    let o = upg(&["verify", s(&out)]);
    assert_eq!(o.status.code(), Some(1));
    let t = stdout(&o);
    let fails: Vec<&str> = t
        .lines()
        .filter(|l| l.starts_with("FAIL model.safetensors"))
        .collect();
    assert_eq!(fails.len(), 2, "{t}");
    let (s3, s5, s15) = (
        spans[3].file_offset,
        spans[5].file_offset,
        spans[15].file_offset,
    );
    assert!(
        fails[0].contains(&format!("at offset {s3} (8.00 KiB damaged: {s3}..{s5})")),
        "{t}"
    );
    assert!(
        fails[1].contains(&format!("at offset {s15} (4.00 KiB damaged")),
        "{t}"
    );
    assert!(t.contains(": 2 problems"), "{t}");
    let o = upg(&["verify", s(&out), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["problems"][0]["length"], 8192);
}

/// A lossy pack lists the whole-model row and the worst tensors; --tensors lists all.
#[test]
fn lossy_summary_lists_the_worst_tensors() {
    let tmp = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(22);
    let ts: Vec<_> = (0..8)
        .map(|i| {
            tensor(
                &mut rng,
                &format!("layer.{i}.w"),
                safetensors::Dtype::BF16,
                vec![256, 256],
            )
        })
        .collect();
    let dir = model_dir(tmp.path(), &ts);
    let out = tmp.path().join("q.upg");
    let o = upg(&["pack", s(&dir), "-o", s(&out), "--preset", "q4"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let t = stdout(&o);
    assert!(
        t.contains("the 5 with the lowest SNR of 8 (--tensors lists all)"),
        "{t}"
    );
    assert_eq!(t.matches("layer.").count(), 5, "{t}");
    assert!(t.contains("all quantized tensors"), "{t}");
    let o = upg(&[
        "pack",
        s(&dir),
        "-o",
        s(&out),
        "--preset",
        "q4",
        "--force",
        "--tensors",
    ]);
    let t = stdout(&o);
    assert_eq!(t.matches("layer.").count(), 8, "{t}");
    assert!(t.contains("lossy tensors (8)"), "{t}");
}

/// On a terminal: pack shows no rate or ETA before its first output, and a sensible ETA after;
/// verify has a bar too. Runs the command under `script` (a pty); skipped without it.
#[test]
fn progress_bars_on_a_terminal() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    let shape = upg::synth::ModelShape {
        vocab: 8192,
        hidden: 512,
        ffn: 2048,
        layers: 4,
    };
    upg::synth::write_model(&model, shape, 3).unwrap();
    let out = tmp.path().join("m.upg");
    let bin = env!("CARGO_BIN_EXE_upg");
    let run_pty = |cmd: String| -> Option<String> {
        let o = Command::new("script")
            .args(["-qefc", &cmd, "/dev/null"])
            .env("COLUMNS", "160")
            .output()
            .ok()?;
        o.status
            .success()
            .then(|| String::from_utf8_lossy(&o.stdout).into_owned())
    };
    let cmd = format!(
        "{bin} pack {} -o {} --preset q4 --threads 1",
        s(&model),
        s(&out)
    );
    let Some(t) = run_pty(cmd) else {
        eprintln!("SKIP progress_bars_on_a_terminal: `script` is not available");
        return;
    };
    assert!(t.contains("packing"), "no bar drawn: {t}");
    // Every ETA drawn is below a minute for a job of a few seconds (it was `eta 3d`).
    for piece in t.split("eta ").skip(1) {
        let v: String = piece
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect();
        assert!(
            v.ends_with('s') && !v.contains('m') && !v.contains('h') && !v.contains('d'),
            "eta {v}: {t}"
        );
    }
    let t = run_pty(format!("{bin} verify {}", s(&out))).unwrap();
    assert!(t.contains("verifying"), "verify drew no bar: {t}");
}

/// `UPG_SIMD` forces the coder path: each path this CPU has packs and verifies the same archive
/// bytes; an unknown name, or a path the CPU lacks, stops both binaries before any work.
#[test]
fn upg_simd_forces_or_refuses() {
    use upg::codec::entropy::Simd;
    let tmp = tempfile::tempdir().unwrap();
    let dir = small_model(tmp.path());
    let mut first: Option<Vec<u8>> = None;
    for p in Simd::ALL {
        let out = tmp.path().join(format!("{}.upg", p.name()));
        let run = |args: &[&str]| {
            Command::new(env!("CARGO_BIN_EXE_upg"))
                .env("UPG_SIMD", p.name())
                .args(args)
                .output()
                .unwrap()
        };
        let o = run(&["pack", s(&dir), "-o", s(&out), "-q"]);
        if p > Simd::detected() {
            assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
            assert!(stderr(&o).contains("this CPU lacks it"), "{}", stderr(&o));
            assert!(!out.exists());
            eprintln!(
                "UPG_SIMD={}: refused (CPU lacks it), as it should be",
                p.name()
            );
            continue;
        }
        assert!(o.status.success(), "{}: {}", p.name(), stderr(&o));
        let v = run(&["verify", s(&out), "--against", s(&dir), "-q"]);
        assert!(v.status.success(), "{}: {}", p.name(), stderr(&v));
        let bytes = std::fs::read(&out).unwrap();
        match &first {
            Some(b) => assert!(*b == bytes, "UPG_SIMD={} packs other bytes", p.name()),
            None => first = Some(bytes),
        }
    }
    for bin in [env!("CARGO_BIN_EXE_upg"), env!("CARGO_BIN_EXE_upg-mount")] {
        let o = Command::new(bin)
            .env("UPG_SIMD", "sse9")
            .args(["ls", "nothing.upg"])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{bin}");
        assert!(
            stderr(&o).contains("UPG_SIMD=\"sse9\": unknown path"),
            "{bin}: {}",
            stderr(&o)
        );
    }
}

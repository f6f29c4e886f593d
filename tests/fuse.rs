//! Real-mount tests of the `upg-mount` binary. They need /dev/fuse and root (fuser mounts with
//! mount(2) directly); without them each test prints why and passes.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::mount::{
    Guard, drop_page_cache, exit_within, is_mounted, skip_fuse, umount, wait_until,
};
use upg::archive::Archive;
use upg::archive::writer::{PackOptions, pack};
use upg::synth::{DEMO, ModelShape, write_model};

const BIN: &str = env!("CARGO_BIN_EXE_upg-mount");

struct Fixture {
    dir: tempfile::TempDir,
    model: PathBuf,
    archive: PathBuf,
    mnt: PathBuf,
}

fn fixture(shape: ModelShape, chunk_size: u32) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    write_model(&model, shape, 7).unwrap();
    let archive = dir.path().join("model.upg");
    pack(
        &model,
        &archive,
        &PackOptions {
            chunk_size,
            ..Default::default()
        },
    )
    .unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    Fixture {
        dir,
        model,
        archive,
        mnt,
    }
}

/// `upg-mount -f` as a child; returns once the kernel mount is up.
fn mount_fg(archives: &[&Path], mnt: &Path, extra: &[&str]) -> Child {
    let mut c = Command::new(BIN);
    c.args(archives).arg(mnt).arg("-f").args(extra);
    c.stdin(Stdio::null());
    let mut child = c.spawn().unwrap();
    wait_until("the mount", || {
        if let Ok(Some(st)) = child.try_wait() {
            panic!("upg-mount exited early: {st}");
        }
        is_mounted(mnt)
    });
    child
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    exit_within(child, Duration::from_secs(20)).expect("daemon did not exit")
}

fn list(dir: &Path) -> Vec<(String, u64, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                m.len(),
                m.permissions().mode() & 0o7777,
            )
        })
        .collect();
    v.sort();
    v
}

/// xorshift, to pick random ranges without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn readdir_stat_bytes_and_random_preads_match() {
    if skip_fuse() {
        return;
    }
    let f = fixture(DEMO, 256 << 10);
    let child = mount_fg(&[&f.archive], &f.mnt, &[]);
    let mut g = Guard {
        mnt: f.mnt.clone(),
        child: Some(child),
    };
    let orig = list(&f.model);
    let mounted = list(&f.mnt);
    assert_eq!(orig.len(), mounted.len());
    for (o, m) in orig.iter().zip(&mounted) {
        assert_eq!((&o.0, o.1), (&m.0, m.1));
        assert_eq!(m.2, o.2 & 0o7555, "{}: write bits stripped", m.0);
    }
    for (name, _, _) in &orig {
        let a = std::fs::read(f.model.join(name)).unwrap();
        let b = std::fs::read(f.mnt.join(name)).unwrap();
        assert!(a == b, "{name} differs through the mount");
    }
    let name = "model.safetensors";
    let orig = std::fs::read(f.model.join(name)).unwrap();
    let file = std::fs::File::open(f.mnt.join(name)).unwrap();
    let mut rng = Rng(0x9e3779b97f4a7c15);
    for _ in 0..300 {
        drop_page_cache(&file);
        let off = rng.next() % (orig.len() as u64 + 4096);
        let len = (rng.next() % (1 << 20)) as usize + 1;
        let mut buf = vec![0u8; len];
        let n = file.read_at(&mut buf, off).unwrap();
        let s = (off as usize).min(orig.len());
        let e = (off as usize + len).min(orig.len());
        assert_eq!(n, e - s);
        assert!(buf[..n] == orig[s..e], "mismatch at {off}+{len}");
    }
    // Read-only: writes and creates fail with EROFS.
    let e = std::fs::OpenOptions::new()
        .write(true)
        .open(f.mnt.join(name))
        .unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS));
    let e = std::fs::write(f.mnt.join("new"), b"x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS));
    drop(file);
    umount(&f.mnt);
    let st = wait_exit(g.child.as_mut().unwrap());
    assert!(st.success(), "daemon exit status after umount: {st}");
}

#[test]
fn mmap_safetensors_through_mount() {
    if skip_fuse() {
        return;
    }
    let f = fixture(DEMO, 256 << 10);
    let _g = Guard {
        mnt: f.mnt.clone(),
        child: Some(mount_fg(&[&f.archive], &f.mnt, &[])),
    };
    let file = std::fs::File::open(f.mnt.join("model.safetensors")).unwrap();
    // SAFETY: the mount is read-only and immutable for the test's duration.
    let map = unsafe { memmap2::Mmap::map(&file) }.unwrap();
    let st = safetensors::SafeTensors::deserialize(&map).unwrap();
    let orig_bytes = std::fs::read(f.model.join("model.safetensors")).unwrap();
    let orig = safetensors::SafeTensors::deserialize(&orig_bytes).unwrap();
    let mut names = st.names();
    names.sort();
    let mut onames = orig.names();
    onames.sort();
    assert_eq!(names, onames);
    for n in names {
        let (a, b) = (st.tensor(n).unwrap(), orig.tensor(n).unwrap());
        assert_eq!(a.dtype(), b.dtype());
        assert_eq!(a.shape(), b.shape());
        assert!(a.data() == b.data(), "tensor {n} differs");
    }
    drop(map);
    drop(file);
    umount(&f.mnt);
}

#[test]
fn concurrent_readers_with_tiny_cache_see_no_mismatch() {
    if skip_fuse() {
        return;
    }
    // 64 KiB chunks, 256 KiB cache: the 10 MiB model is ~40 times the cache.
    let f = fixture(DEMO, 64 << 10);
    let _g = Guard {
        mnt: f.mnt.clone(),
        child: Some(mount_fg(&[&f.archive], &f.mnt, &["--cache-size", "256K"])),
    };
    let orig = std::sync::Arc::new(std::fs::read(f.model.join("model.safetensors")).unwrap());
    let path = f.mnt.join("model.safetensors");
    let hs: Vec<_> = (0..8u64)
        .map(|t| {
            let (orig, path) = (orig.clone(), path.clone());
            std::thread::spawn(move || {
                let file = std::fs::File::open(&path).unwrap();
                let mut rng = Rng(0x2545F4914F6CDD1D ^ (t + 1).wrapping_mul(0x9E3779B97F4A7C15));
                let mut bad = 0;
                for i in 0..150 {
                    if i % 4 == 0 {
                        drop_page_cache(&file);
                    }
                    let off = rng.next() % orig.len() as u64;
                    let len = (rng.next() % (300 << 10)) as usize + 1;
                    let mut buf = vec![0u8; len];
                    let n = file.read_at(&mut buf, off).unwrap();
                    let e = (off as usize + len).min(orig.len());
                    if buf[..n] != orig[off as usize..e] {
                        bad += 1;
                    }
                }
                bad
            })
        })
        .collect();
    let bad: usize = hs.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(bad, 0, "mismatching reads");
    umount(&f.mnt);
}

#[test]
fn corrupt_chunk_gives_eio_for_its_range_only() {
    if skip_fuse() {
        return;
    }
    let f = fixture(DEMO, 64 << 10);
    let bad = f.dir.path().join("bad.upg");
    std::fs::copy(&f.archive, &bad).unwrap();
    // Flip a byte in the middle of the stored bytes of the chunk holding offset 5 MiB.
    let a = Archive::open(&bad).unwrap();
    let fi = a.file_index("model.safetensors").unwrap();
    let span = a.spans(fi, 5 << 20, 1).unwrap()[0];
    let rec = a.chunk_record(span.chunk).unwrap();
    drop(a);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&bad)
        .unwrap();
    let at = rec.offset + u64::from(rec.stored_len) / 2;
    let mut b = [0u8];
    file.read_exact_at(&mut b, at).unwrap();
    file.write_all_at(&[b[0] ^ 0x40], at).unwrap();
    drop(file);

    let log = f.dir.path().join("mount.log");
    let log_s = log.to_string_lossy().into_owned();
    let _g = Guard {
        mnt: f.mnt.clone(),
        child: Some(mount_fg(&[&bad], &f.mnt, &["--log-file", &log_s])),
    };
    let orig = std::fs::read(f.model.join("model.safetensors")).unwrap();
    let st = std::fs::File::open(f.mnt.join("model.safetensors")).unwrap();
    let mut buf = vec![0u8; 4096];
    let e = st.read_at(&mut buf, (5 << 20) + 100).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    // Other ranges of the same file, and other files, still read fine.
    for off in [0u64, 1 << 20, 8 << 20] {
        let n = st.read_at(&mut buf, off).unwrap();
        assert!(
            buf[..n] == orig[off as usize..off as usize + n],
            "range at {off}"
        );
    }
    let cfg = std::fs::read(f.mnt.join("config.json")).unwrap();
    assert_eq!(cfg, std::fs::read(f.model.join("config.json")).unwrap());
    drop(st);
    umount(&f.mnt);
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<_> = text.lines().filter(|l| l.contains("ERROR")).collect();
    assert!(!lines.is_empty(), "no error logged:\n{text}");
    let l = lines[0];
    assert!(
        l.contains("bad.upg") && l.contains("model.safetensors") && l.contains("offset"),
        "error line names archive, file and offset: {l}"
    );
}

#[test]
fn sigterm_and_sigint_unmount_cleanly() {
    if skip_fuse() {
        return;
    }
    let f = fixture(DEMO, 256 << 10);
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let mut g = Guard {
            mnt: f.mnt.clone(),
            child: Some(mount_fg(&[&f.archive], &f.mnt, &[])),
        };
        assert!(std::fs::metadata(f.mnt.join("config.json")).is_ok());
        let pid = g.child.as_ref().unwrap().id() as i32;
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid, sig) };
        let st = wait_exit(g.child.as_mut().unwrap());
        assert!(st.success(), "exit status after signal {sig}: {st}");
        assert!(!is_mounted(&f.mnt), "still mounted after signal {sig}");
        g.child = None;
    }
}

#[test]
fn kill9_leaves_stale_mount_that_remount_recovers() {
    if skip_fuse() {
        return;
    }
    let f = fixture(DEMO, 256 << 10);
    let mut child = mount_fg(&[&f.archive], &f.mnt, &[]);
    let _g = Guard {
        mnt: f.mnt.clone(),
        child: None,
    };
    child.kill().unwrap();
    child.wait().unwrap();
    let e = std::fs::metadata(&f.mnt).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOTCONN), "{e}");
    // Daemon mode: returns once mounted; recovers the stale mountpoint first.
    let out = Command::new(BIN)
        .arg(&f.archive)
        .arg(&f.mnt)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "remount failed: {err}");
    assert!(err.contains("stale"), "stale mount reported: {err}");
    let a = std::fs::read(f.mnt.join("model.safetensors")).unwrap();
    assert!(a == std::fs::read(f.model.join("model.safetensors")).unwrap());
    umount(&f.mnt);
    wait_until("unmount", || !is_mounted(&f.mnt));
}

#[test]
fn several_archives_mount_as_directories() {
    if skip_fuse() {
        return;
    }
    let f = fixture(DEMO, 256 << 10);
    let second = f.dir.path().join("second.upg");
    std::fs::copy(&f.archive, &second).unwrap();
    let _g = Guard {
        mnt: f.mnt.clone(),
        child: Some(mount_fg(&[&f.archive, &second], &f.mnt, &[])),
    };
    let names: Vec<_> = list(&f.mnt).into_iter().map(|e| e.0).collect();
    assert_eq!(names, ["model", "second"]);
    for d in ["model", "second"] {
        let got = std::fs::read(f.mnt.join(d).join("config.json")).unwrap();
        assert_eq!(got, std::fs::read(f.model.join("config.json")).unwrap());
    }
    umount(&f.mnt);
}

#[test]
fn clear_errors_before_mounting() {
    if skip_fuse() {
        return;
    }
    let f = fixture(
        ModelShape {
            vocab: 256,
            hidden: 32,
            ffn: 64,
            layers: 1,
        },
        4096,
    );
    let run = |args: &[&std::ffi::OsStr]| {
        let out = Command::new(BIN).args(args).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let a = f.archive.as_os_str();
    // Missing mountpoint.
    let missing = f.dir.path().join("nope");
    let (code, err) = run(&[a, missing.as_os_str()]);
    assert_eq!(code, Some(2));
    assert!(err.contains("does not exist"), "{err}");
    // Not a directory.
    let (code, err) = run(&[a, f.archive.as_os_str()]);
    assert_eq!(code, Some(2));
    assert!(err.contains("not a directory"), "{err}");
    // Not empty.
    let (code, err) = run(&[a, f.model.as_os_str()]);
    assert_eq!(code, Some(2));
    assert!(err.contains("not empty"), "{err}");
    // Corrupt archive (truncated: no footer).
    let bad = f.dir.path().join("trunc.upg");
    let bytes = std::fs::read(&f.archive).unwrap();
    std::fs::write(&bad, &bytes[..bytes.len() / 2]).unwrap();
    let (code, err) = run(&[bad.as_os_str(), f.mnt.as_os_str()]);
    assert_eq!(code, Some(2));
    assert!(err.contains("trunc.upg"), "{err}");
    // Missing archive, bad option, bad cache size.
    let (code, err) = run(&[missing.as_os_str(), f.mnt.as_os_str()]);
    assert_eq!(code, Some(2));
    assert!(err.contains("nope"), "{err}");
    let (code, err) = run(&[a, f.mnt.as_os_str(), "-o".as_ref(), "bogus".as_ref()]);
    assert_eq!(code, Some(2));
    assert!(err.contains("unsupported mount option"), "{err}");
    let (code, err) = run(&[
        a,
        f.mnt.as_os_str(),
        "--cache-size".as_ref(),
        "lots".as_ref(),
    ]);
    assert_eq!(code, Some(2));
    assert!(err.contains("cache-size"), "{err}");
    // An error found after the fork (two archives with one name), daemon and foreground mode:
    // said once, not by both processes and the logger.
    for extra in [&[][..], &["-f".as_ref()][..]] {
        let mut args: Vec<&std::ffi::OsStr> = vec![a, a, f.mnt.as_os_str()];
        args.extend_from_slice(extra);
        let (code, err) = run(&args);
        assert_eq!(code, Some(2));
        assert_eq!(err.matches("name clash").count(), 1, "{extra:?}: {err}");
    }
    assert!(!is_mounted(&f.mnt));
}

#[test]
fn archive_deleted_while_mounted_keeps_serving() {
    if skip_fuse() {
        return;
    }
    let f = fixture(DEMO, 256 << 10);
    let mut g = Guard {
        mnt: f.mnt.clone(),
        child: Some(mount_fg(&[&f.archive], &f.mnt, &[])),
    };
    std::fs::remove_file(&f.archive).unwrap();
    let got = std::fs::read(f.mnt.join("model.safetensors")).unwrap();
    assert!(got == std::fs::read(f.model.join("model.safetensors")).unwrap());
    umount(&f.mnt);
    assert!(wait_exit(g.child.as_mut().unwrap()).success());
}

/// `upg demo` serves its mount from a thread of its own process. Interrupted while it reads
/// through that mount, the process used to hang forever in exit (closing a file on the mount
/// waits for an answer from the serving thread, which exit has already stopped) and left a dead
/// mount; now the signal thread aborts and detaches the mount first. The interrupt is sent at
/// several moments after the mount appears; every run must end promptly with 128 + SIGTERM or
/// success, and leave no mount behind.
#[test]
fn interrupted_demo_never_hangs_or_leaves_a_mount() {
    if skip_fuse() {
        return;
    }
    let upg = env!("CARGO_BIN_EXE_upg");
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("demo");
    let mnt = work.join("mnt");
    for trial in 0..8u64 {
        let mut child = Command::new(upg)
            .args(["demo", "--dir"])
            .arg(&work)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let t0 = Instant::now();
        while !is_mounted(&mnt) && child.try_wait().unwrap().is_none() {
            assert!(t0.elapsed() < Duration::from_secs(60), "demo never mounted");
            std::thread::sleep(Duration::from_micros(500));
        }
        std::thread::sleep(Duration::from_millis(trial % 4));
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let st = exit_within(&mut child, Duration::from_secs(10));
        if st.is_none() {
            // Unstick it for the next tests: abort every FUSE connection of this machine's
            // fusectl that belongs to the hung demo, then fail.
            let _ = Command::new("umount").arg("-l").arg(&mnt).status();
            if let Ok(rd) = std::fs::read_dir("/sys/fs/fuse/connections") {
                for c in rd.flatten() {
                    let _ = std::fs::write(c.path().join("abort"), b"1");
                }
            }
            let _ = child.kill();
            panic!("trial {trial}: interrupted demo hung in exit");
        }
        let code = st.unwrap().code();
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        assert!(
            matches!(code, Some(0) | Some(143)),
            "trial {trial}: {code:?} {err}"
        );
        if is_mounted(&mnt) {
            let _ = Command::new("umount").arg("-l").arg(&mnt).status();
            panic!("trial {trial}: mount left behind");
        }
    }
}

/// `upg mount` is upg-mount: it daemonizes, returns once the mount is up, and serves the bytes.
#[test]
fn upg_mount_alias_mounts_and_serves() {
    if skip_fuse() {
        return;
    }
    let f = fixture(DEMO, 256 << 10);
    let _g = Guard {
        mnt: f.mnt.clone(),
        child: None,
    };
    let o = Command::new(env!("CARGO_BIN_EXE_upg"))
        .args(["mount".as_ref(), f.archive.as_os_str(), f.mnt.as_os_str()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(is_mounted(&f.mnt));
    let got = std::fs::read(f.mnt.join("model.safetensors")).unwrap();
    assert_eq!(
        got,
        std::fs::read(f.model.join("model.safetensors")).unwrap()
    );
    umount(&f.mnt);
}

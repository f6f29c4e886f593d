//! The mount daemon's log under hostile conditions, through real mounts (issue 13 item 2, issue
//! 14): a closed or stalled stderr must cost a damaged read its EIO and nothing more (no abort,
//! no hang), a daemon logs to a default file named at mount time, and `upg-mount --status`
//! counts EIO answers. Needs /dev/fuse and root; without them each test prints why and passes.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::mount::skip_fuse;

const BIN: &str = env!("CARGO_BIN_EXE_upg-mount");

const BAD_AT: u64 = (5 << 20) + 100;

use common::DamagedDemo as Damaged;

/// The demo archive with the chunk holding `BAD_AT` of model.safetensors damaged.
fn damaged() -> Damaged {
    common::damaged_demo(64 << 10, BAD_AT)
}

fn is_mounted(mnt: &Path) -> bool {
    mount_dev(mnt).is_some()
}

/// The mount's device number (MAJ:MIN) from mountinfo, if mounted.
fn mount_dev(mnt: &Path) -> Option<String> {
    let want = mnt.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .rev()
        .find_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.get(4) == Some(&want.as_str())).then(|| f[2].to_string())
        })
}

/// Abort the FUSE connection of `mnt` (fusectl) and detach it: unsticks readers of a hung daemon.
fn abort_mount(mnt: &Path) {
    if let Some(dev) = mount_dev(mnt) {
        let minor = dev.split(':').nth(1).unwrap_or("");
        let _ = std::fs::write(format!("/sys/fs/fuse/connections/{minor}/abort"), b"1");
    }
    let _ = Command::new("umount").arg("-l").arg(mnt).status();
}

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Unmounts (aborting the connection if need be) and reaps on drop.
struct Guard {
    mnt: PathBuf,
    child: Option<Child>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if is_mounted(&self.mnt) {
            abort_mount(&self.mnt);
        }
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `upg-mount -f` with stdout and stderr on one pipe (as `2>&1 | ...`); returns once mounted,
/// with the pipe's read end (drop it to close the pipe, keep it unread to stall it).
fn mount_fg_piped(d: &Damaged) -> (Guard, std::io::PipeReader) {
    let (r, w) = std::io::pipe().unwrap();
    let child = Command::new(BIN)
        .arg(&d.archive)
        .arg(&d.mnt)
        .arg("-f")
        .stdin(Stdio::null())
        .stdout(w.try_clone().unwrap())
        .stderr(w)
        .spawn()
        .unwrap();
    let mut g = Guard {
        mnt: d.mnt.clone(),
        child: Some(child),
    };
    wait_until("the mount", Duration::from_secs(20), || {
        if let Ok(Some(st)) = g.child.as_mut().unwrap().try_wait() {
            panic!("upg-mount exited early: {st}");
        }
        is_mounted(&d.mnt)
    });
    (g, r)
}

/// `n` reads of the damaged range on a separate thread; returns how many got EIO, or fails the
/// test (after aborting the mount, which unsticks the reader) if they do not finish in `limit`.
fn damaged_reads(mnt: &Path, n: usize, limit: Duration) -> usize {
    let path = mnt.join("model.safetensors");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let f = std::fs::File::open(&path).unwrap();
        let mut buf = vec![0u8; 4096];
        let mut eio = 0;
        for _ in 0..n {
            match f.read_at(&mut buf, BAD_AT) {
                Err(e) if e.raw_os_error() == Some(libc::EIO) => eio += 1,
                Err(e) => panic!("damaged read: {e} (expected EIO)"),
                Ok(k) => panic!("damaged read returned {k} bytes"),
            }
        }
        let _ = tx.send(eio);
    });
    match rx.recv_timeout(limit) {
        Ok(eio) => eio,
        Err(_) => {
            abort_mount(mnt);
            panic!("{n} damaged reads did not finish within {limit:?}: readers hang on the log");
        }
    }
}

fn good_reads_match(d: &Damaged) {
    let orig = std::fs::read(d.model.join("model.safetensors")).unwrap();
    let f = std::fs::File::open(d.mnt.join("model.safetensors")).unwrap();
    let mut buf = vec![0u8; 4096];
    for off in [0u64, 1 << 20, 8 << 20] {
        let n = f.read_at(&mut buf, off).unwrap();
        assert!(n > 0 && buf[..n] == orig[off as usize..off as usize + n]);
    }
    let cfg = std::fs::read(d.mnt.join("config.json")).unwrap();
    assert_eq!(cfg, std::fs::read(d.model.join("config.json")).unwrap());
}

fn status(mnt: &Path) -> (Option<i32>, String, String) {
    let o = Command::new(BIN).arg("--status").arg(mnt).output().unwrap();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn field(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key:?} in status:\n{text}"))
}

/// `upg-mount -f ... 2>&1 | true`: the reader of the log pipe is gone before the first error.
/// The damaged read used to abort the daemon (EPIPE panic in the logger, then a panic in fuser's
/// reply while unwinding) and every later access got ENOTCONN.
#[test]
fn closed_log_pipe_costs_only_the_damaged_reads() {
    if skip_fuse() {
        return;
    }
    let d = damaged();
    let (mut g, r) = mount_fg_piped(&d);
    drop(r); // `| true` has exited
    assert_eq!(damaged_reads(&d.mnt, 50, Duration::from_secs(30)), 50);
    good_reads_match(&d);
    assert_eq!(damaged_reads(&d.mnt, 5, Duration::from_secs(30)), 5);
    let (code, out, err) = status(&d.mnt);
    assert_eq!(
        code,
        Some(1),
        "--status exits 1 after EIO answers: {out}{err}"
    );
    assert!(field(&out, "EIO answers: ") >= 55, "{out}");
    assert!(field(&out, "log lines lost: ") >= 1, "{out}");
    assert!(out.contains("log: stderr"), "{out}");
    let st = Command::new("umount").arg(&d.mnt).status().unwrap();
    assert!(st.success());
    let c = g.child.as_mut().unwrap();
    wait_until("the daemon's exit", Duration::from_secs(10), || {
        c.try_wait().unwrap().is_some()
    });
    let st = c.try_wait().unwrap().unwrap();
    assert!(
        st.success(),
        "daemon exit status {st} (a panic is 101, an abort SIGABRT)"
    );
    g.child = None;
}

/// A stalled log pipe (a pager, Ctrl-S): nobody reads it, so it fills after ~250 error lines.
/// FUSE workers used to block in write(2) and readers hung in D state; now the lines beyond the
/// queue are dropped and counted, every read gets its EIO promptly, and the daemon still exits
/// promptly at unmount.
#[test]
fn stalled_log_pipe_never_hangs_readers() {
    if skip_fuse() {
        return;
    }
    let d = damaged();
    let (mut g, _unread) = mount_fg_piped(&d);
    let reads = 10_000;
    let t0 = Instant::now();
    assert_eq!(
        damaged_reads(&d.mnt, reads, Duration::from_secs(120)),
        reads
    );
    eprintln!("{reads} damaged reads in {:?}", t0.elapsed());
    good_reads_match(&d);
    let (code, out, _) = status(&d.mnt);
    assert_eq!(code, Some(1));
    assert!(field(&out, "EIO answers: ") >= reads as u64, "{out}");
    assert!(
        field(&out, "log lines lost: ") > 0,
        "more errors than pipe + queue hold must be dropped and counted:\n{out}"
    );
    let st = Command::new("umount").arg(&d.mnt).status().unwrap();
    assert!(st.success());
    let c = g.child.as_mut().unwrap();
    wait_until("the daemon's exit", Duration::from_secs(10), || {
        c.try_wait().unwrap().is_some()
    });
    assert!(c.try_wait().unwrap().unwrap().success());
    g.child = None;
}

/// Daemonized without --log-file: the log goes to a default file, named on stderr when the mount
/// is up; it has the damaged read's error line, no ANSI colour codes, and ends with the
/// unmount summary; `--status` reports the EIO answers meanwhile.
#[test]
fn daemon_logs_to_a_default_file_and_status_counts_eio() {
    if skip_fuse() {
        return;
    }
    let d = damaged();
    let state = d.dir.path().join("state");
    let _g = Guard {
        mnt: d.mnt.clone(),
        child: None,
    };
    let o = Command::new(BIN)
        .arg(&d.archive)
        .arg(&d.mnt)
        .env("XDG_STATE_HOME", &state)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{err}");
    let log = state.join("upg").join(format!(
        "{}.log",
        d.mnt
            .canonicalize()
            .unwrap()
            .to_string_lossy()
            .trim_start_matches('/')
            .replace('/', "-")
    ));
    assert!(
        err.contains(&format!("log: {}", log.display())) && err.contains("--status"),
        "the log file is named at mount time: {err}"
    );
    let (code, out, _) = status(&d.mnt);
    assert_eq!(code, Some(0), "no EIO yet: {out}");
    assert_eq!(field(&out, "EIO answers: "), 0);
    assert!(
        out.contains(&format!("archive: {}", d.archive.display())),
        "{out}"
    );
    let pid = field(&out, "pid: ");
    assert_eq!(damaged_reads(&d.mnt, 3, Duration::from_secs(30)), 3);
    good_reads_match(&d);
    let (code, out, _) = status(&d.mnt);
    assert_eq!(code, Some(1), "{out}");
    assert!(field(&out, "EIO answers: ") >= 3, "{out}");
    assert!(out.contains("last error: read failed"), "{out}");
    assert_eq!(field(&out, "log lines lost: "), 0, "{out}");
    let st = Command::new("umount").arg(&d.mnt).status().unwrap();
    assert!(st.success());
    wait_until("the daemon's exit", Duration::from_secs(10), || {
        !Path::new(&format!("/proc/{pid}")).exists()
    });
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !text.contains('\x1b'),
        "ANSI codes in the log file:\n{text}"
    );
    let l = text
        .lines()
        .find(|l| l.contains("ERROR"))
        .unwrap_or_else(|| panic!("no error line:\n{text}"));
    assert!(
        l.contains("bad.upg") && l.contains("model.safetensors") && l.contains("offset"),
        "{l}"
    );
    let last = text.lines().last().unwrap_or_default();
    assert!(
        last.contains("unmounted")
            && last.contains("EIO answer")
            && last.contains("0 log lines lost"),
        "summary at exit: {last}"
    );
    // --status of something that is not an upg mount.
    let (code, _, err) = status(d.dir.path());
    assert_eq!(code, Some(2));
    assert!(err.contains("not an upg-mount mount"), "{err}");
}

/// The options mount(8) and mount.fuse3 pass (`rw,dev,suid`), fstab-only ones, and every flag
/// as an `-o` option: the mount comes up read-only, nosuid, nodev with a note, and the flags
/// given as options take effect (the log file named by `log_file=`). `force_suid` is the only
/// way to a suid mount.
#[test]
fn mount8_options_are_accepted_and_flags_work_as_options() {
    if skip_fuse() {
        return;
    }
    let d = damaged();
    let _g = Guard {
        mnt: d.mnt.clone(),
        child: None,
    };
    let log = d.dir.path().join("opt.log");
    let opts = format!(
        "rw,dev,suid,defaults,nofail,_netdev,x-systemd.automount,cache-size=128M,log_file={},\
         readahead_kb=512,threads=3,decode_ahead=8M",
        log.display()
    );
    let o = Command::new(BIN)
        .arg(&d.archive)
        .arg(&d.mnt)
        .args(["-o", &opts])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("mounting read-only, nosuid, nodev anyway"),
        "{err}"
    );
    assert!(err.contains(&format!("log: {}", log.display())), "{err}");
    let flags = mount_flags(&d.mnt);
    for f in ["ro", "nosuid", "nodev"] {
        assert!(flags.split(',').any(|x| x == f), "{f} missing: {flags}");
    }
    good_reads_match(&d);
    let (_, out, _) = status(&d.mnt);
    assert!(out.contains(&format!("log: {}", log.display())), "{out}");
    let st = Command::new("umount").arg(&d.mnt).status().unwrap();
    assert!(st.success());
    wait_until("unmount", Duration::from_secs(10), || !is_mounted(&d.mnt));
    // force_suid: suid for real.
    let o = Command::new(BIN)
        .arg(&d.archive)
        .arg(&d.mnt)
        .args(["-o", "suid,force_suid"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let flags = mount_flags(&d.mnt);
    assert!(!flags.split(',').any(|x| x == "nosuid"), "{flags}");
    let st = Command::new("umount").arg(&d.mnt).status().unwrap();
    assert!(st.success());
    wait_until("unmount", Duration::from_secs(10), || !is_mounted(&d.mnt));
}

/// The per-mount flags (field 6 of mountinfo) of `mnt`.
fn mount_flags(mnt: &Path) -> String {
    let want = mnt.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .rev()
        .find_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.get(4) == Some(&want.as_str())).then(|| f[5].to_string())
        })
        .unwrap_or_default()
}

/// Not root, with /dev/fuse closed to the user (mode 0600 on these machines): the error says
/// what to do (permissions or group of /dev/fuse, fusermount3 from fuse3, or root).
#[test]
fn non_root_permission_denied_says_what_to_do() {
    if skip_fuse() {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata("/dev/fuse").unwrap().permissions().mode();
    if mode & 0o006 == 0o006 {
        eprintln!("SKIP: /dev/fuse is open to everyone here; no permission error to provoke");
        return;
    }
    if Command::new("setpriv").arg("--help").output().is_err() {
        eprintln!("SKIP: setpriv (util-linux) is missing");
        return;
    }
    let d = damaged();
    let bin = d.dir.path().join("upg-mount");
    std::fs::copy(BIN, &bin).unwrap();
    for (p, m) in [
        (d.dir.path(), 0o755),
        (bin.as_path(), 0o755),
        (&d.archive, 0o644),
    ] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    }
    std::os::unix::fs::chown(&d.mnt, Some(65534), Some(65534)).unwrap();
    let o = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&bin)
        .arg(&d.archive)
        .arg(&d.mnt)
        .arg("-f")
        .env("FUSERMOUNT_PATH", "/nonexistent/fusermount3")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("/dev/fuse") && err.contains("fusermount3") && err.contains("fuse3"),
        "{err}"
    );
    assert!(!is_mounted(&d.mnt));
}

//! Helpers for tests that mount for real: skip without /dev/fuse or root, wait for the mount,
//! unmount as a user would (retrying "busy" for a bounded time), clean up on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// True (after saying why) when real mounts cannot run here: no /dev/fuse, or not root.
pub fn skip_fuse() -> bool {
    if !Path::new("/dev/fuse").exists() {
        eprintln!("skipping FUSE test: /dev/fuse is missing");
        return true;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping FUSE test: not root (fuser mounts with mount(2) as root)");
        return true;
    }
    false
}

pub fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn is_mounted(mnt: &Path) -> bool {
    let want = mnt.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(want.as_str()))
}

/// `umount`, as a user would run it. Right after the last `close` the kernel may still hold the
/// mount for a moment (FUSE sends RELEASE asynchronously, after any async readahead still in
/// flight, and another test thread's fork can hold a copy of our descriptors until its exec), so
/// "target is busy" is retried for a bounded time; any other failure, or busy past the deadline,
/// fails the test with umount's message and the processes that still hold the mount.
pub fn umount(mnt: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = Command::new("umount").arg(mnt).output().unwrap();
        if out.status.success() {
            return;
        }
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        if !err.contains("busy") || Instant::now() >= deadline {
            panic!(
                "umount {} failed: {err}holders: {:?}",
                mnt.display(),
                holders(mnt)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Processes with an open descriptor or a working directory under `mnt` (for failure messages).
pub fn holders(mnt: &Path) -> Vec<String> {
    let mut v = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return v;
    };
    for p in procs.flatten() {
        let pid = p.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let mut links: Vec<PathBuf> = vec![p.path().join("cwd")];
        if let Ok(fds) = std::fs::read_dir(p.path().join("fd")) {
            links.extend(fds.flatten().map(|e| e.path()));
        }
        for l in links {
            if std::fs::read_link(&l).is_ok_and(|t| t.starts_with(mnt)) {
                v.push(format!("{pid}: {}", l.display()));
            }
        }
    }
    v
}

/// Unmounts (lazily) and reaps on drop, so a failing test leaves no mount behind.
pub struct Guard {
    pub mnt: PathBuf,
    pub child: Option<Child>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if is_mounted(&self.mnt) {
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        }
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The child's exit status once it exits, or `None` if it is still running after `limit`.
pub fn exit_within(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return Some(st);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn drop_page_cache(f: &std::fs::File) {
    use std::os::fd::AsRawFd;
    // SAFETY: valid fd; advice only.
    unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
}

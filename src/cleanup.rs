//! Temporary outputs to remove, and in-process mounts to detach, when the process is
//! interrupted.
//!
//! `pack` writes `.NAME.upg-tmp-PID` next to the output and renames it when complete; `unpack`
//! does the same with a directory. An error removes them (their guards' `Drop`), but SIGINT or
//! SIGTERM ends the process without unwinding, which used to leave the hidden temporary behind.
//! Writers [`register`] their temporary path for as long as it exists; the `upg` binary blocks
//! the termination signals in every thread and waits for them on one thread of its own
//! ([`exit_on_signals`]), which removes whatever is registered and exits with 128 + the signal
//! number, as a shell reports a process killed by it.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// A set of temporary paths. The process uses one, [`PENDING`]; tests make their own.
pub struct Registry(Mutex<Vec<PathBuf>>);

/// The process-wide registry that [`exit_on_signals`] empties.
pub static PENDING: Registry = Registry::new();

/// Set by the signal thread as soon as a termination signal arrives.
static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// If a termination signal has arrived, never return: the signal thread is cleaning up and will
/// end the process with 128 + the signal. `main` calls this before it exits, so that errors
/// caused by the cleanup itself (a read of an aborted mount) do not win the race with a
/// misleading message and exit status.
pub fn wait_if_interrupted() {
    if INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst) {
        loop {
            std::thread::park();
        }
    }
}

/// FUSE mounts served by this process (`upg demo`): [`exit_on_signals`] detaches them, so an
/// interrupted demo does not leave a dead mount ("Transport endpoint is not connected").
pub static MOUNTS: Registry = Registry::new();

impl Registry {
    pub const fn new() -> Registry {
        Registry(Mutex::new(Vec::new()))
    }

    /// Empty the registry, returning what it held.
    fn take_all(&self) -> Vec<PathBuf> {
        std::mem::take(&mut *self.lock())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<PathBuf>> {
        // The list stays consistent whatever panicked while holding it (single push/remove).
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Register `path` (a file or a directory) for removal if the process is interrupted.
    pub fn register(&self, path: &Path) -> Registered<'_> {
        self.lock().push(path.to_path_buf());
        Registered {
            registry: self,
            path: path.to_path_buf(),
        }
    }

    /// Abort and detach every registered FUSE mount served by this process; returns those
    /// detached. Aborting first matters: the process is about to exit, its serving thread with
    /// it, and a thread of the same process blocked in a read of the mount (or the `FLUSH` sent
    /// when exit closes a file opened on it) would otherwise wait for an answer forever, leaving
    /// an unkillable process. The connection is found by the mount's device number in the
    /// fusectl file system, which is mounted if it is not (the demo mounts only as root).
    pub fn detach_all(&self) -> Vec<PathBuf> {
        use std::os::unix::ffi::OsStrExt;
        self.take_all()
            .into_iter()
            .filter(|p| {
                // The mount's device from /proc/self/mountinfo, not from a stat of the mount,
                // which would itself be a FUSE request.
                if let Some(kdev) = mount_dev(p) {
                    let ctl = Path::new("/sys/fs/fuse/connections");
                    let abort = ctl.join(kdev.to_string()).join("abort");
                    if !abort.exists() {
                        // SAFETY: constant NUL-terminated strings; mount(2) only reads them.
                        unsafe {
                            libc::mount(
                                c"fusectl".as_ptr(),
                                c"/sys/fs/fuse/connections".as_ptr(),
                                c"fusectl".as_ptr(),
                                0,
                                std::ptr::null(),
                            )
                        };
                    }
                    let _ = std::fs::write(&abort, b"1");
                }
                let Ok(c) = std::ffi::CString::new(p.as_os_str().as_bytes()) else {
                    return false;
                };
                // SAFETY: `c` is a valid NUL-terminated path; umount2 only reads it.
                unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) == 0 }
            })
            .collect()
    }

    /// Remove every registered path (files and directories); returns the paths removed.
    pub fn remove_all(&self) -> Vec<PathBuf> {
        self.take_all()
            .into_iter()
            .filter(|p| {
                std::fs::remove_file(p)
                    .or_else(|_| std::fs::remove_dir_all(p))
                    .is_ok()
            })
            .collect()
    }
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new()
    }
}

/// A registered temporary path; dropping it unregisters the path (it does not remove it: the
/// writer renames or removes it itself).
pub struct Registered<'a> {
    registry: &'a Registry,
    path: PathBuf,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        let mut p = self.registry.lock();
        if let Some(i) = p.iter().rposition(|x| *x == self.path) {
            p.swap_remove(i);
        }
    }
}

/// The kernel's device number (`major << 20 | minor`, the name of its fusectl directory) of the
/// mount whose mount point is `path`, from `/proc/self/mountinfo` (field 3 is `major:minor`,
/// field 5 the mount point with spaces and the like octal-escaped); `None` if not mounted.
fn mount_dev(path: &Path) -> Option<u64> {
    // Canonicalize the parent only: resolving the mount point itself would stat the mount.
    let want = match (path.parent(), path.file_name()) {
        (Some(d), Some(n)) => std::fs::canonicalize(if d.as_os_str().is_empty() {
            Path::new(".")
        } else {
            d
        })
        .map(|d| d.join(n))
        .unwrap_or_else(|_| path.to_path_buf()),
        _ => path.to_path_buf(),
    };
    let want = want.to_str()?.replace('\\', "\\134").replace(' ', "\\040");
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().rev().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        if f.get(4) != Some(&want.as_str()) {
            return None;
        }
        let (maj, min) = f.get(2)?.split_once(':')?;
        Some((maj.parse::<u64>().ok()? << 20) | min.parse::<u64>().ok()?)
    })
}

/// Register `path` in the process-wide registry.
pub fn register(path: &Path) -> Registered<'static> {
    PENDING.register(path)
}

/// Block SIGINT, SIGTERM and SIGHUP in this thread (so in every thread started after this call)
/// and start a thread that waits for them, removes the registered temporaries, says so on
/// stderr and exits with 128 + the signal. Call first thing in `main`, before other threads
/// exist.
pub fn exit_on_signals() {
    // SAFETY: sigset_t and sigaction are plain data (zeroed, then filled by sigemptyset /
    // sigaction, which only reads the current disposition); pthread_sigmask changes only this
    // thread's mask (inherited by the threads it starts).
    // A signal the parent set to be ignored stays ignored (`nohup` ignores SIGHUP, a
    // non-interactive shell SIGINT for background jobs): a blocked signal is never discarded,
    // so adding it to the set would make sigwait see what the parent meant to hide.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(s, std::ptr::null(), &mut old) == 0
                && old.sa_sigaction == libc::SIG_IGN
            {
                continue;
            }
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    let spawned = std::thread::Builder::new()
        .name("upg-signals".into())
        .spawn(move || {
            let mut sig = 0;
            // SAFETY: `set` is an initialised signal set and `sig` a valid out pointer.
            while unsafe { libc::sigwait(&set, &mut sig) } != 0 {}
            INTERRUPTED.store(true, std::sync::atomic::Ordering::SeqCst);
            for p in MOUNTS.detach_all() {
                eprintln!("upg: interrupted; unmounted {}", p.display());
            }
            for p in PENDING.remove_all() {
                eprintln!("upg: interrupted; removed the unfinished {}", p.display());
            }
            std::process::exit(128 + sig);
        });
    if spawned.is_err() {
        // Without the thread the signals would stay blocked forever: unblock them again, so
        // they keep their default effect (temporaries may then be left behind).
        // SAFETY: as above.
        unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_dev_reads_mountinfo() {
        // A fresh directory is no mount point; /proc always is, with the device stat reports.
        let d = tempfile::tempdir().unwrap();
        assert_eq!(mount_dev(&d.path().join("not-mounted")), None);
        let proc_dev = mount_dev(Path::new("/proc")).expect("/proc is a mount point");
        let st = std::fs::metadata("/proc").unwrap();
        let dev = std::os::unix::fs::MetadataExt::dev(&st);
        let want = (u64::from(libc::major(dev)) << 20) | u64::from(libc::minor(dev));
        assert_eq!(proc_dev, want);
    }

    #[test]
    fn registered_paths_are_removed_dropped_ones_are_not() {
        let reg = Registry::new();
        let d = tempfile::tempdir().unwrap();
        let (f, sub, kept) = (d.path().join("f"), d.path().join("sub"), d.path().join("k"));
        std::fs::write(&f, b"x").unwrap();
        std::fs::create_dir_all(sub.join("a")).unwrap();
        std::fs::write(sub.join("a/b"), b"y").unwrap();
        std::fs::write(&kept, b"z").unwrap();
        let _rf = reg.register(&f);
        let _rs = reg.register(&sub);
        drop(reg.register(&kept));
        let removed = reg.remove_all();
        assert!(
            removed.contains(&f) && removed.contains(&sub),
            "{removed:?}"
        );
        assert!(!f.exists() && !sub.exists() && kept.exists());
    }
}

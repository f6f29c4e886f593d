//! `upg-mount ARCHIVE... MOUNTPOINT`: check everything that can be checked before mounting (the
//! mountpoint, every archive's index), then mount and serve.
//!
//! Daemon mode (the default) forks *before* any thread exists and before mounting; the child
//! mounts and reports "ready" or the error through a pipe, so the parent returns to the shell only
//! once the kernel mount is up (exit 0), or prints why it failed (exit 2). `-f` stays attached.
//!
//! Lifetime: `umount MOUNTPOINT` ends the session and the daemon exits 0. SIGINT, SIGTERM and
//! SIGHUP are blocked in every thread and received by one thread with `sigwait`, which unmounts
//! (lazily, if the mount is busy) so the daemon also ends with status 0.
//!
//! A stale mountpoint (daemon killed without unmounting: `stat` fails with ENOTCONN) is detached
//! with `umount2(MNT_DETACH)` and mounted again, with a note on stderr.
//!
//! Logging (see [`daemon_log`](super::daemon_log)): lines go through a bounded queue to one
//! logger thread, so a FUSE worker never blocks or panics on its log. Foreground: stderr
//! (colours only on a terminal). Daemon: `--log-file`, else a default file per mountpoint
//! ([`default_log_path`]), named when the mount is up. `upg-mount --status MNT` asks the daemon
//! for its counts (reads, EIO answers, lost log lines) through an extended attribute of the
//! mount's root; the daemon's last log line says the same at unmount.

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::daemon_log::DaemonLog;
use crate::archive::Archive;
use crate::fuse::{self, Access, MountConfig};
use crate::vfs::{self, SetupError, Vfs, VfsOptions};

/// Errors of `upg-mount` before and while mounting.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// The mountpoint is missing, not a directory, not empty, or otherwise unusable.
    #[error("mountpoint {path}: {msg}")]
    Mountpoint { path: PathBuf, msg: String },
    /// A `-o` option is unknown or not supported.
    #[error("option: {0}")]
    Option(String),
    /// `--cache-size` could not be parsed.
    #[error("--cache-size: {0}")]
    CacheSize(String),
    /// `--cache-dir` could not be created or used.
    #[error("--cache-dir {0}")]
    CacheDir(String),
    /// An archive (or source folder) could not be opened or laid out.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// The kernel mount failed.
    #[error("mounting on {path}: {msg}")]
    Mount { path: PathBuf, msg: String },
    /// The log file could not be opened.
    #[error("log file {path}: {msg}")]
    LogFile { path: PathBuf, msg: String },
    /// Forking or talking to the daemon failed.
    #[error("daemon: {0}")]
    Daemon(String),
    /// A source (local path, folder, S3 object or prefix, URL) could not be found or opened.
    #[error("{0}")]
    Source(String),
}

/// `upg-mount --help`'s long description (also `upg mount`'s).
pub const LONG_ABOUT: &str = "Mount one or several .upg archives (or a folder of them) read-only. \
A single archive puts its files at the mountpoint's root; several archives (or a folder) get one \
sub-directory each, named after the archive without `.upg`. Sources may be remote: \
s3://BUCKET/KEY.upg (one object), s3://BUCKET/PREFIX/ (every .upg directly under the prefix) or \
https://HOST/PATH.upg (a web server answering range requests); credentials and endpoint as for the \
AWS CLI (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_PROFILE, AWS_REGION, \
AWS_ENDPOINT_URL). Returns once the mount is up and keeps serving in the background (-f: stay in \
the foreground). `umount MOUNTPOINT`, SIGINT or SIGTERM unmount it.";

/// The command-line arguments of `upg-mount` and `upg mount` (one definition for both).
#[derive(Debug, Clone, clap::Args)]
pub struct MountCli {
    /// Archives to mount (.upg files, or folders of them), then the mountpoint: an existing empty
    /// directory.
    #[arg(
        required_unless_present = "status",
        value_name = "ARCHIVE... MOUNTPOINT"
    )]
    pub paths: Vec<PathBuf>,
    /// Print a running mount's status (archives, reads, EIO answers, the last error, the log
    /// file and lost log lines) and exit: 0, or 1 if any read was answered with EIO.
    #[arg(long, value_name = "MOUNTPOINT", exclusive = true)]
    pub status: Option<PathBuf>,
    /// Stay in the foreground (do not daemonize).
    #[arg(short, long)]
    pub foreground: bool,
    /// Decoded-chunk cache size over all archives: bytes or with K/M/G suffix (default:
    /// min(64 MiB per archive, 1 GiB, MemAvailable/8), at least 64 MiB).
    #[arg(long, value_name = "BYTES")]
    pub cache_size: Option<String>,
    /// Mount options, comma-separated: allow_other, allow_root, noexec, noatime,
    /// default_permissions, fsname=NAME, subtype=NAME; every flag as an option (cache_size=,
    /// log_file=, threads=, readahead_kb=, decode_ahead=, verbose, debug; `-` or `_`). Always ro, nosuid,
    /// nodev: rw, suid, dev (mount(8) passes them) are noted and overridden; force_suid /
    /// force_dev allow setuid files / devices. fstab-only options (defaults, nofail, _netdev,
    /// x-*) are ignored.
    #[arg(short = 'o', value_name = "OPTS")]
    pub options: Vec<String>,
    /// Append the daemon's log to this file (default when daemonized: one file per mountpoint
    /// in $XDG_STATE_HOME/upg, /var/log/upg-mount for root, ~/.local/state/upg otherwise; in
    /// the foreground: stderr).
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
    /// FUSE worker threads (default: two per core, 4 to 16).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Kernel readahead for the mount in KiB, set through the mount's bdi (needs root; 0 keeps
    /// the kernel's 128 KiB). 1024 lets one request carry a whole 1 MiB read.
    #[arg(long, value_name = "KIB", default_value_t = crate::fuse::DEFAULT_READAHEAD_KB)]
    pub readahead_kb: u32,
    /// Decoded bytes to decode ahead of a sequential reader, on all cores: bytes or with K/M/G
    /// suffix, 0 to turn it off (default: 1 MiB per core, 2 to 32 MiB, for local archives;
    /// 64 MiB with remote ones). Grows from the first MiB a stream reads, so random reads never
    /// pay for it; at most a quarter of --cache-size.
    #[arg(long, value_name = "BYTES")]
    pub decode_ahead: Option<String>,
    /// Keep the compressed chunks fetched from remote archives in DIR, and read them from there
    /// first (each checked against the archive's chunk hash before use; a damaged entry is
    /// fetched again). Survives remounts and crashes; may be shared by several mounts.
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Bound of --cache-dir over the whole directory, bytes or with K/M/G suffix (default 16 GiB);
    /// least recently used chunks are deleted first.
    #[arg(long, value_name = "BYTES", requires = "cache_dir")]
    pub cache_dir_size: Option<String>,
    #[command(flatten)]
    pub remote: super::remote::RemoteArgs,
}

impl MountCli {
    /// Split the positional list into archives and mountpoint; exits with a usage error (as clap
    /// does, through `C`'s command) when the mountpoint is missing. One list, split here: clap
    /// would fill ARCHIVE first and then call the missing argument `<ARCHIVE>...`.
    /// `verbose` is the -v count (a flag of the binary: global in `upg`).
    pub fn into_args<C: clap::CommandFactory>(mut self, verbose: u8) -> MountArgs {
        if self.status.is_none() && self.paths.len() < 2 {
            C::command()
                .error(
                    clap::error::ErrorKind::MissingRequiredArgument,
                    format!(
                        "the mountpoint is missing: upg-mount ARCHIVE... MOUNTPOINT (got only {})",
                        self.paths
                            .first()
                            .map(|p| p.display().to_string())
                            .unwrap_or_default()
                    ),
                )
                .exit();
        }
        let mountpoint = self.paths.pop().unwrap_or_default();
        MountArgs {
            sources: self.paths,
            mountpoint,
            foreground: self.foreground,
            cache_size: self.cache_size,
            options: self.options,
            log_file: self.log_file,
            verbose,
            threads: self.threads,
            readahead_kb: self.readahead_kb,
            decode_ahead: self.decode_ahead,
            status: self.status,
            cache_dir: self.cache_dir,
            cache_dir_size: self.cache_dir_size,
            remote: self.remote,
        }
    }
}

/// Parsed arguments (the binary fills this from clap).
#[derive(Debug, Clone)]
pub struct MountArgs {
    pub sources: Vec<PathBuf>,
    pub mountpoint: PathBuf,
    pub foreground: bool,
    pub cache_size: Option<String>,
    pub options: Vec<String>,
    pub log_file: Option<PathBuf>,
    pub verbose: u8,
    /// FUSE worker threads (0: default).
    pub threads: usize,
    /// Kernel readahead of the mount in KiB (0: the kernel's default).
    pub readahead_kb: u32,
    /// `--decode-ahead` as given (None: [`default_decode_ahead`]).
    pub decode_ahead: Option<String>,
    /// `--status MOUNTPOINT`: report on a running mount instead of mounting.
    pub status: Option<PathBuf>,
    /// Persistent cache of remote archives' stored chunks (`--cache-dir`).
    pub cache_dir: Option<PathBuf>,
    /// Its bound (`--cache-dir-size`; default [`DEFAULT_CACHE_DIR_SIZE`]).
    pub cache_dir_size: Option<String>,
    /// How to reach `s3://` and `http(s)://` sources.
    pub remote: super::remote::RemoteArgs,
}

/// Default bound of `--cache-dir`: 16 GiB holds the lossless archive of a 13B model in BF16 (or
/// a 30B model at q4), a size that fits the local disk of most GPU hosts; compressed chunks, so
/// it holds ~1.5x (lossless) to ~4x (q4) as much model.
pub const DEFAULT_CACHE_DIR_SIZE: u64 = 16 << 30;

/// Default cache per mounted archive: 64 MiB (256 chunks of 256 KiB). The decoded-chunk cache only
/// has to cover in-flight requests (at most 16 background requests of 1 MiB), read-ahead (2 MiB
/// per stream) and random re-reads; the kernel page cache holds the served bytes. Larger is
/// slower, not faster, for streaming: until the cache is full every decoded chunk lands in fresh
/// memory (page faults, zeroing, memcg charging: ~15% of the daemon's CPU in `perf`), while a full
/// cache recycles freed chunk buffers. Measured on SmolLM2 (257 MiB, docs/BENCHMARKS.md): daemon
/// CPU for a cold sequential read 380 ms with 64 MiB vs 440 ms with a 1 GiB cache.
const DEFAULT_CACHE_PER_ARCHIVE: u64 = 64 << 20;
/// Upper bound of the default cache: 1 GiB of decoded chunks (4096 chunks of 256 KiB) whatever
/// the number of archives.
const DEFAULT_CACHE_MAX: u64 = 1 << 30;
/// Lower bound of the default cache: 64 MiB still holds 256 chunks, enough for read-ahead of a
/// few streams, even on a machine with little memory available.
const DEFAULT_CACHE_MIN: u64 = 64 << 20;
/// Share of `MemAvailable` the default cache may take: 1/8 leaves the page cache (which holds the
/// served files *and* the archive itself) the bulk of free memory.
const DEFAULT_CACHE_SHARE: u64 = 8;

/// Default cache for `archives` archives: min(64 MiB per archive, 1 GiB, MemAvailable / 8), at
/// least 64 MiB.
pub fn default_cache_size(archives: usize) -> u64 {
    default_cache_size_for(archives, 0)
}

/// Default cache per remote archive: 256 MiB, so that the read-ahead window (a quarter of the
/// cache, [`REMOTE_READAHEAD`]) holds 64 MiB of decoded chunks: several 8 MiB range requests in
/// flight per stream, which a 10 ms round trip needs to fill a fast link.
const DEFAULT_CACHE_PER_REMOTE: u64 = 256 << 20;
/// Upper bound of the default cache when remote archives are mounted.
const DEFAULT_CACHE_MAX_REMOTE: u64 = 4 << 30;

/// Read-ahead window (decoded bytes) of a mount with remote archives: 64 MiB, grown to from the
/// first MiB as a stream proves sequential (see `vfs::Vfs::read`), so random readers never pay
/// for it. Local mounts use [`default_decode_ahead`].
pub const REMOTE_READAHEAD: u64 = 64 << 20;

/// Default decode-ahead window of a mount of local archives: 1 MiB (four 256 KiB chunks) per
/// core, at least `vfs::DEFAULT_READAHEAD` (2 MiB) and at most 32 MiB. The window is what the
/// decode pool can work on at once ahead of one sequential reader: a fixed 2 MiB kept 8 chunks in
/// flight, so on a 16-core host one reader got 2.3 GiB/s from an archive in page cache while the
/// decoder alone runs at 18 GiB/s on 16 threads (docs/BENCHMARKS.md, issue 9). Four chunks per
/// core keeps every decode thread busy while the oldest chunks are consumed; above 32 MiB a
/// window only adds memory (it is also capped at a quarter of the cache budget).
pub fn default_decode_ahead(cores: usize) -> u64 {
    ((cores as u64) << 20).clamp(vfs::DEFAULT_READAHEAD, 32 << 20)
}

/// Default cache for `local` local and `remote` remote archives.
fn default_cache_size_for(local: usize, remote: usize) -> u64 {
    let avail = mem_available();
    let want = DEFAULT_CACHE_PER_ARCHIVE
        .saturating_mul(local as u64)
        .saturating_add(DEFAULT_CACHE_PER_REMOTE.saturating_mul(remote as u64))
        .max(DEFAULT_CACHE_MIN);
    let max = if remote > 0 {
        DEFAULT_CACHE_MAX_REMOTE
    } else {
        DEFAULT_CACHE_MAX
    };
    match avail {
        Some(a) => want
            .min(a / DEFAULT_CACHE_SHARE)
            .clamp(DEFAULT_CACHE_MIN, max),
        None => DEFAULT_CACHE_MIN,
    }
}

/// `MemAvailable` from /proc/meminfo, in bytes.
fn mem_available() -> Option<u64> {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemAvailable:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb.saturating_mul(1024))
}

/// A note on stderr for an explicit cache size outside the sensible range (accepted: tests use
/// tiny caches on purpose, and the user may know better).
fn cache_size_note(bytes: u64) -> Option<String> {
    let h = crate::cli::human;
    if bytes < DEFAULT_CACHE_MIN {
        return Some(format!(
            "--cache-size {} is below the default's floor of {}: chunks are decoded again and \
             again when readers outrun it",
            h(bytes),
            h(DEFAULT_CACHE_MIN)
        ));
    }
    match mem_available() {
        Some(a) if bytes > a => Some(format!(
            "--cache-size {} is more than the memory available now ({}): the daemon may be \
             killed when the cache fills",
            h(bytes),
            h(a)
        )),
        _ => None,
    }
}

/// Parse "1048576", "512K", "512M", "1G", "1.5G", "2GiB" (binary units).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (num, mult) = match t.chars().last() {
        Some(c @ ('k' | 'K' | 'm' | 'M' | 'g' | 'G' | 't' | 'T')) => {
            let m: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                _ => 1 << 40,
            };
            (&t[..t.len() - 1], m)
        }
        _ => (t, 1),
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("cannot parse {s:?} (examples: 268435456, 512M, 1G)"))?;
    if !v.is_finite() || v < 0.0 || v * mult as f64 > u64::MAX as f64 / 2.0 {
        return Err(format!("{s:?} is out of range"));
    }
    Ok((v * mult as f64) as u64)
}

/// FUSE worker threads by default: two per core, 4 to 16. A worker blocked on a chunk decode (or
/// waiting for another thread's decode of the same chunk) should not stall lookups and reads of
/// cached chunks, so there are more workers than cores; beyond 16 they only add contention.
fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .saturating_mul(2)
        .clamp(4, 16)
}

fn errno_of(e: &std::io::Error) -> Option<i32> {
    e.raw_os_error()
}

fn cstring(p: &Path) -> Result<CString, MountError> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| MountError::Mountpoint {
        path: p.to_path_buf(),
        msg: "path contains NUL".into(),
    })
}

/// Check the mountpoint; detach a stale FUSE mount left by a killed daemon.
pub fn check_mountpoint(mp: &Path) -> Result<(), MountError> {
    let err = |msg: String| MountError::Mountpoint {
        path: mp.to_path_buf(),
        msg,
    };
    let meta = match std::fs::metadata(mp) {
        Ok(m) => m,
        Err(e) if errno_of(&e) == Some(libc::ENOTCONN) => {
            eprintln!(
                "upg-mount: {} is a stale FUSE mount (its daemon is gone: \"Transport endpoint is \
                 not connected\"); detaching it (umount -l) and mounting again",
                mp.display()
            );
            let c = cstring(mp)?;
            // SAFETY: c is a valid NUL-terminated path; umount2 does not retain it.
            if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
                let e = std::io::Error::last_os_error();
                return Err(err(format!(
                    "stale FUSE mount and detaching it failed ({e}); run `umount -l {}`",
                    mp.display()
                )));
            }
            std::fs::metadata(mp).map_err(|e| err(e.to_string()))?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(err(format!(
                "does not exist (create it with `mkdir -p {}`)",
                mp.display()
            )));
        }
        Err(e) => return Err(err(e.to_string())),
    };
    if !meta.is_dir() {
        return Err(err("not a directory".into()));
    }
    let mut rd = std::fs::read_dir(mp).map_err(|e| err(e.to_string()))?;
    if rd.next().is_some() {
        return Err(err(
            "not empty (already mounted? `umount` it first, or pick an empty directory)".into(),
        ));
    }
    Ok(())
}

/// Lock the mountpoint directory for the check and the mount, and check that nothing has been
/// mounted on it since [`check_mountpoint`] (two `upg-mount` started at once on one empty
/// directory both passed that check and stacked two mounts). `flock` on the directory itself:
/// a second `upg-mount` that opened it before the first mounted waits here, then finds the
/// path leading to another file system than the directory it locked and refuses; one that
/// opens it after finds the root of a FUSE file system there and refuses. Released once
/// mounted.
fn lock_mountpoint(mp: &Path) -> Result<std::fs::File, MountError> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    let err = |msg: String| MountError::Mountpoint {
        path: mp.to_path_buf(),
        msg,
    };
    let dir = std::fs::File::open(mp).map_err(|e| err(e.to_string()))?;
    // SAFETY: flock on a descriptor we own; it blocks until the other holder closes it.
    if unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(err(format!(
            "locking it: {}",
            std::io::Error::last_os_error()
        )));
    }
    let locked = dir.metadata().map_err(|e| err(e.to_string()))?;
    let now = std::fs::metadata(mp).map_err(|e| err(e.to_string()))?;
    // SAFETY: statfs fills the struct; the path is a valid NUL-terminated string.
    let mut sfs: libc::statfs = unsafe { std::mem::zeroed() };
    let c = cstring(mp)?;
    let fuse_root = unsafe { libc::statfs(c.as_ptr(), &mut sfs) } == 0
        && sfs.f_type as i64 == FUSE_SUPER_MAGIC
        && std::fs::metadata(mp.join("..")).is_ok_and(|p| p.dev() != now.dev());
    if (locked.dev(), locked.ino()) != (now.dev(), now.ino()) || fuse_root {
        return Err(err(
            "already mounted (another upg-mount mounted it first; `umount` it, or pick \
             another empty directory)"
                .into(),
        ));
    }
    Ok(dir)
}

/// `statfs` type of a FUSE file system.
const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;

/// Run `upg-mount`; returns the exit code (0 ok, 2 error; `--status`: 1 if reads failed).
pub fn run(args: MountArgs) -> i32 {
    if let Some(mp) = &args.status {
        return match status(mp) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("upg-mount: {}", crate::text::escaped(&e.to_string()));
                2
            }
        };
    }
    match run_inner(args) {
        Ok(()) => 0,
        Err(e) => {
            // Not eprintln!: in the foreground stderr may be a closed pipe by now.
            let _ = writeln!(
                std::io::stderr(),
                "upg-mount: {}",
                crate::text::escaped(&e.to_string())
            );
            2
        }
    }
}

/// Options mount(8), mount.fuse3, fstab or systemd may pass that change nothing for a read-only
/// FUSE mount (mount(8) acts on most of them itself).
const IGNORED_OPTIONS: &[&str] = &[
    "defaults",
    "auto",
    "noauto",
    "nofail",
    "_netdev",
    "user",
    "users",
    "nouser",
    "owner",
    "group",
    "async",
    "sync",
    "relatime",
    "norelatime",
    "strictatime",
    "lazytime",
    "nolazytime",
    "diratime",
    "nodiratime",
];

/// Apply the `-o` options (mount(8)/fstab style) to `args`: upg-mount's own keys set the
/// matching flags, `allow_other`/`allow_root` the access, ignored and fstab-only keys are
/// dropped, the rest is checked as a FUSE option. Says on stderr which of `rw`, `suid` and
/// `dev` were given but not honoured. Returns the access and the FUSE options to mount with.
fn apply_options(args: &mut MountArgs) -> Result<(Access, Vec<String>), MountError> {
    let mut access = Access::Owner;
    let mut options = Vec::new();
    let mut overridden: Vec<&str> = Vec::new();
    let (mut force_suid, mut force_dev) = (false, false);
    let opts: Vec<String> = args
        .options
        .iter()
        .flat_map(|o| o.split(','))
        .filter(|o| !o.is_empty())
        .map(str::to_string)
        .collect();
    for o in &opts {
        let (k, v) = match o.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (o.as_str(), None),
        };
        let key = k.replace('-', "_");
        let num = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| MountError::Option(format!("{k}={v}: not a number")))
        };
        match (key.as_str(), v) {
            ("allow_other", None) => access = Access::All,
            ("allow_root", None) if access == Access::Owner => access = Access::OwnerAndRoot,
            ("rw", None) => overridden.push("rw"),
            ("suid", None) => overridden.push("suid"),
            ("dev", None) => overridden.push("dev"),
            ("force_suid", None) => force_suid = true,
            ("force_dev", None) => force_dev = true,
            ("cache_size", Some(v)) => args.cache_size = Some(v.to_string()),
            ("decode_ahead", Some(v)) => args.decode_ahead = Some(v.to_string()),
            ("log_file", Some(v)) => args.log_file = Some(PathBuf::from(v)),
            ("cache_dir", Some(v)) => args.cache_dir = Some(PathBuf::from(v)),
            ("cache_dir_size", Some(v)) => args.cache_dir_size = Some(v.to_string()),
            ("threads", Some(v)) => args.threads = num(v)? as usize,
            ("readahead_kb", Some(v)) => {
                args.readahead_kb = u32::try_from(num(v)?)
                    .map_err(|_| MountError::Option(format!("{k}={v}: too large")))?
            }
            ("verbose", None) => args.verbose = args.verbose.max(1),
            ("debug", None) => args.verbose = args.verbose.max(2),
            _ if IGNORED_OPTIONS.contains(&k) || k.starts_with("x-") || k == "comment" => {}
            _ => {
                if let Some(k) = fuse::check_option(o).map_err(MountError::Option)? {
                    options.push(k);
                }
            }
        }
    }
    if force_suid {
        options.push("suid".into());
    }
    if force_dev {
        options.push("dev".into());
    }
    let kept: Vec<&str> = overridden
        .iter()
        .copied()
        .filter(|o| !(*o == "suid" && force_suid || *o == "dev" && force_dev))
        .collect();
    if !kept.is_empty() {
        eprintln!(
            "upg-mount: note: mounting read-only{}{} anyway (given: {}; mount(8) and mount.fuse3 \
             pass rw, dev and suid by default){}",
            if force_suid { "" } else { ", nosuid" },
            if force_dev { "" } else { ", nodev" },
            kept.join(", "),
            if kept.contains(&"suid") {
                "; -o force_suid lets setuid files of the archive run with their owner's rights"
            } else {
                ""
            }
        );
    }
    Ok((access, options))
}

fn run_inner(mut args: MountArgs) -> Result<(), MountError> {
    let (access, options) = apply_options(&mut args)?;
    let explicit = match &args.cache_size {
        Some(s) => Some(parse_size(s).map_err(MountError::CacheSize)?),
        None => None,
    };
    if let Some(note) = explicit.and_then(cache_size_note) {
        eprintln!("upg-mount: note: {note}");
    }
    let decode_ahead = match &args.decode_ahead {
        Some(v) => Some(
            parse_size(v).map_err(|e| MountError::Option(format!("--decode-ahead {v}: {e}")))?,
        ),
        None => None,
    };
    check_mountpoint(&args.mountpoint)?;
    // Open every archive now, before forking, so errors reach the terminal directly.
    let list = super::remote::expand_mount_sources(&args.sources, &args.remote)
        .map_err(MountError::Source)?;
    let remote: Vec<bool> = list
        .iter()
        .map(|(_, s)| matches!(s, vfs::Source::Storage(_)))
        .collect();
    let n_remote = remote.iter().filter(|&&r| r).count();
    let cache = explicit.unwrap_or_else(|| default_cache_size_for(list.len() - n_remote, n_remote));
    let cache = usize::try_from(cache).unwrap_or(usize::MAX);
    let readahead = match decode_ahead {
        Some(v) => v,
        None if n_remote > 0 => REMOTE_READAHEAD,
        None => default_decode_ahead(
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
        ),
    };
    let archives = vfs::open_sources(list, cache)?;
    if let Some(dir) = &args.cache_dir {
        let size = match &args.cache_dir_size {
            Some(s) => parse_size(s).map_err(|e| MountError::CacheDir(format!("size: {e}")))?,
            None => DEFAULT_CACHE_DIR_SIZE,
        };
        let dc = crate::disk_cache::DiskCache::open(dir, size)
            .map(Arc::new)
            .map_err(|e| MountError::CacheDir(format!("{}: {e}", dir.display())))?;
        for ((_, a), _) in archives.iter().zip(&remote).filter(|(_, r)| **r) {
            a.use_disk_cache(dc.clone())
                .map_err(|e| MountError::CacheDir(format!("{}: {e}", dir.display())))?;
        }
        if n_remote == 0 {
            eprintln!(
                "upg-mount: note: --cache-dir {} is not used: it keeps chunks of remote archives, \
                 and every archive here is a local file",
                dir.display()
            );
        }
    }
    let fsname = format!(
        "upg:{}",
        args.sources
            .first()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    );
    let cfg = MountConfig {
        access,
        options,
        threads: if args.threads == 0 {
            default_threads()
        } else {
            args.threads
        },
        fsname,
        readahead_kb: args.readahead_kb,
    };
    let log = open_log(&args)?;
    let note = match &log {
        LogTo::File { path, .. } if !args.foreground => Some(format!(
            "mounted on {mp}; log: {}; `upg-mount --status {mp}` counts reads and EIO answers",
            path.display(),
            mp = args.mountpoint.display()
        )),
        _ => None,
    };
    let ready = if args.foreground {
        None
    } else {
        Some(daemonize(note)?)
    };
    // From here on we are the process that serves (daemon child or foreground).
    let result = serve(&args, archives, (cache, readahead), &cfg, ready, log);
    if result.is_err() && !args.foreground {
        // Said by the parent, which got it through the pipe (and in the log file).
        std::process::exit(2);
    }
    result
}

/// Where the daemon's log goes. Decided, and the file opened, before forking, so that an
/// unusable `--log-file` is an error on the terminal.
enum LogTo {
    File { path: PathBuf, file: std::fs::File },
    Stderr,
    Discard,
}

fn open_log(args: &MountArgs) -> Result<LogTo, MountError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let open = |p: &Path| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(p)
    };
    if let Some(p) = &args.log_file {
        return open(p)
            .map(|file| LogTo::File {
                path: p.clone(),
                file,
            })
            .map_err(|e| MountError::LogFile {
                path: p.clone(),
                msg: e.to_string(),
            });
    }
    if args.foreground {
        return Ok(LogTo::Stderr);
    }
    let Some(p) = default_log_path(&args.mountpoint) else {
        eprintln!(
            "upg-mount: note: no place for a default log file ($HOME is not set); the daemon's \
             log is discarded (choose a file with --log-file FILE)"
        );
        return Ok(LogTo::Discard);
    };
    let made = match p.parent() {
        Some(d) => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(d),
        None => Ok(()),
    };
    match made.and_then(|()| open(&p)) {
        Ok(file) => Ok(LogTo::File { path: p, file }),
        Err(e) => {
            eprintln!(
                "upg-mount: note: cannot open the default log file {} ({e}); the daemon's log \
                 is discarded (choose a file with --log-file FILE)",
                p.display()
            );
            Ok(LogTo::Discard)
        }
    }
}

/// The default log file of a daemon mounted on `mountpoint`: one file per mountpoint, named after
/// its absolute path with `/` as `-` (`/mnt/model` -> `mnt-model.log`), in `$XDG_STATE_HOME/upg`
/// if set, else `/var/log/upg-mount` for root, else `~/.local/state/upg` (the XDG default).
pub fn default_log_path(mountpoint: &Path) -> Option<PathBuf> {
    let dir = match std::env::var_os("XDG_STATE_HOME").map(PathBuf::from) {
        Some(d) if d.is_absolute() => d.join("upg"),
        // SAFETY: geteuid has no preconditions.
        _ if unsafe { libc::geteuid() } == 0 => PathBuf::from("/var/log/upg-mount"),
        _ => PathBuf::from(std::env::var_os("HOME")?).join(".local/state/upg"),
    };
    let mp = std::fs::canonicalize(mountpoint).unwrap_or_else(|_| mountpoint.to_path_buf());
    let mut name: String = mp
        .to_string_lossy()
        .trim_start_matches('/')
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '_' => c,
            '/' => '-',
            _ => '_',
        })
        .collect();
    if name.is_empty() {
        name = "root".into();
    }
    // ASCII only by now; keep the name well under NAME_MAX (255).
    name.truncate(200);
    Some(dir.join(format!("{name}.log")))
}

/// `upg-mount --status MOUNTPOINT`: print the daemon's status report (the root's
/// [`vfs::STATUS_XATTR`]); exit code 1 if it has answered any read with EIO.
fn status(mp: &Path) -> Result<i32, MountError> {
    let err = |msg: String| MountError::Mountpoint {
        path: mp.to_path_buf(),
        msg,
    };
    let c = cstring(mp)?;
    let name = CString::new(vfs::STATUS_XATTR).map_err(|e| err(e.to_string()))?;
    let mut buf = vec![0u8; 1 << 16];
    // SAFETY: valid C strings; buf is writable for buf.len() bytes.
    let n = unsafe {
        libc::getxattr(
            c.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        return Err(err(match e.raw_os_error() {
            Some(libc::ENODATA) | Some(libc::ENOTSUP) => {
                "not an upg-mount mount (it has no status)".into()
            }
            Some(libc::ENOTCONN) => {
                "stale mount: its daemon is gone (`umount -l` it, or mount again)".into()
            }
            _ => e.to_string(),
        }));
    }
    buf.truncate(n as usize);
    let text = String::from_utf8_lossy(&buf);
    print!("{text}");
    let eio = text
        .lines()
        .find_map(|l| l.strip_prefix("EIO answers: "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    Ok(if eio > 0 { 1 } else { 0 })
}

/// Fork; the parent waits for the child's report, prints `note` once the mount is ready, and
/// exits. Returns the write end of the pipe in the child.
fn daemonize(note: Option<String>) -> Result<OwnedFd, MountError> {
    let mut fds = [0i32; 2];
    // SAFETY: fds is a valid array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(MountError::Daemon(
            std::io::Error::last_os_error().to_string(),
        ));
    }
    // SAFETY: both fds were just created by pipe2 and are owned by nobody else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: no other thread exists yet (archives are opened, nothing spawned), so the child is
    // a faithful copy of this single-threaded process.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(MountError::Daemon(
            std::io::Error::last_os_error().to_string(),
        ));
    }
    if pid > 0 {
        drop(w);
        let mut msg = String::new();
        let _ = std::fs::File::from(r).read_to_string(&mut msg);
        if msg.starts_with("ready") {
            if let Some(n) = note {
                let _ = writeln!(std::io::stderr(), "upg-mount: {n}");
            }
            std::process::exit(0);
        }
        if msg.is_empty() {
            msg = "daemon exited before the mount was ready".into();
        }
        eprintln!("upg-mount: {}", msg.trim_end());
        std::process::exit(2);
    }
    drop(r);
    // SAFETY: setsid has no memory-safety preconditions; it detaches from the terminal session.
    unsafe { libc::setsid() };
    Ok(w)
}

/// Tell the parent how mounting went; redirect stdio to /dev/null once mounted.
fn report(ready: Option<OwnedFd>, msg: &str) {
    if let Some(w) = ready {
        let mut f = std::fs::File::from(w);
        let _ = f.write_all(msg.as_bytes());
    }
}

fn detach_stdio() {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        use std::os::fd::AsRawFd;
        for fd in 0..3 {
            // SAFETY: dup2 onto the standard descriptors; null stays open until replaced.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
}

/// How long the daemon waits at exit for its last log lines to be written: long enough for a
/// file or a terminal, short enough that a stalled pipe does not keep an unmounted daemon alive.
const LOG_FLUSH_LIMIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Start the logger thread and install the subscriber. Returns the log (None: discarded) and
/// where it goes, in words.
fn start_logging(args: &MountArgs, to: LogTo) -> (Option<DaemonLog>, String) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let (out, ansi, desc): (Box<dyn Write + Send>, bool, String) = match to {
        LogTo::File { path, file } => (Box::new(file), false, path.display().to_string()),
        LogTo::Stderr => (
            Box::new(std::io::stderr()),
            std::io::stderr().is_terminal(),
            "stderr".into(),
        ),
        LogTo::Discard => return (None, "discarded".into()),
    };
    let Ok(log) = DaemonLog::start(out) else {
        return (None, "discarded (the logger thread did not start)".into());
    };
    let level = match args.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    // fuser's session warns when its own unmount-on-drop finds the mount already gone (after an
    // external `umount`), which is the normal way to stop: keep that module at error level.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{level},fuser::session=error")));
    // Already initialised (in-process use): keep the existing subscriber.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .log_internal_errors(false)
        .with_writer(log.clone())
        .try_init();
    (Some(log), desc)
}

fn block_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset/sigaddset initialise it; pthread_sigmask only
    // changes this thread's mask (inherited by threads spawned later).
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn serve(
    args: &MountArgs,
    archives: Vec<(Option<String>, Arc<Archive>)>,
    (cache, readahead): (usize, u64),
    cfg: &MountConfig,
    ready: Option<OwnedFd>,
    log_to: LogTo,
) -> Result<(), MountError> {
    // Before any thread exists, so every thread inherits the mask and only `sigwait` sees them.
    let set = block_signals();
    let to_file = matches!(log_to, LogTo::File { .. });
    let (log, desc) = start_logging(args, log_to);
    let result = serve_logged(
        args,
        archives,
        (cache, readahead),
        cfg,
        ready,
        set,
        &log,
        desc,
    );
    if let Err(e) = &result {
        // Said once on the terminal: by `run` (foreground) or by the parent (daemon); and in
        // the log file if there is one.
        if to_file {
            tracing::error!("{}", crate::text::escaped(&e.to_string()));
        }
    }
    if let Some(l) = &log {
        l.flush(LOG_FLUSH_LIMIT);
    }
    result
}

#[allow(clippy::too_many_arguments)]
fn serve_logged(
    args: &MountArgs,
    archives: Vec<(Option<String>, Arc<Archive>)>,
    (cache, readahead): (usize, u64),
    cfg: &MountConfig,
    ready: Option<OwnedFd>,
    set: libc::sigset_t,
    log: &Option<DaemonLog>,
    log_desc: String,
) -> Result<(), MountError> {
    let opts = VfsOptions {
        cache_bytes: cache,
        readahead,
        ..VfsOptions::default()
    };
    let vfs = match Vfs::from_archives(archives, opts) {
        Ok(v) => Arc::new(v),
        Err(e) => {
            report(
                ready,
                &format!("{}\n", crate::text::escaped(&e.to_string())),
            );
            return Err(MountError::Setup(e));
        }
    };
    let mp_abs = std::fs::canonicalize(&args.mountpoint)
        .unwrap_or_else(|_| args.mountpoint.clone())
        .display()
        .to_string();
    set_status_hook(&vfs, log, log_desc, mp_abs.clone());
    let lock = match lock_mountpoint(&args.mountpoint) {
        Ok(l) => l,
        Err(e) => {
            report(
                ready,
                &format!("{}\n", crate::text::escaped(&e.to_string())),
            );
            return Err(e);
        }
    };
    let mounted = fuse::mount(vfs.clone(), &args.mountpoint, cfg);
    drop(lock);
    let mut mounted = match mounted {
        Ok(m) => m,
        Err(e) => {
            let e = mount_error(&args.mountpoint, e);
            report(ready, &format!("{e}\n"));
            return Err(e);
        }
    };
    tracing::info!(
        "mounted {} archive(s) on {} (cache {} bytes, {} FUSE threads)",
        args.sources.len(),
        args.mountpoint.display(),
        cache,
        cfg.threads
    );
    let daemon = ready.is_some();
    report(ready, "ready\n");
    if daemon {
        detach_stdio();
    }
    spawn_signal_thread(set, mounted.unmounter(), args.mountpoint.clone())?;
    let served = mounted.run().map_err(|e| MountError::Mount {
        path: args.mountpoint.clone(),
        msg: e.to_string(),
    });
    log_exit_summary(&vfs, log, &mp_abs);
    served
}

/// The daemon's lines of the status report (`upg-mount --status`).
fn set_status_hook(vfs: &Vfs, log: &Option<DaemonLog>, log_desc: String, mp: String) {
    {
        let (log, started, pid) = (log.clone(), std::time::Instant::now(), std::process::id());
        vfs.set_status_hook(Box::new(move || {
            let lost = log.as_ref().map(DaemonLog::lost).unwrap_or_default();
            format!(
                "mountpoint: {mp}\npid: {pid}\nup: {} s\nlog: {log_desc}\nlog lines lost: {} ({} \
                 queue full, {} write failed)\n",
                started.elapsed().as_secs(),
                lost.total(),
                lost.queue_full,
                lost.write_failed
            )
        }));
    }
}

/// A failed `mount(2)` as the user should read it (with the usual cause, when it is one).
fn mount_error(mp: &Path, e: std::io::Error) -> MountError {
    MountError::Mount {
        path: mp.to_path_buf(),
        msg: if e.kind() == std::io::ErrorKind::NotFound {
            format!("{e} (is /dev/fuse present? `modprobe fuse`)")
        } else if e.kind() == std::io::ErrorKind::PermissionDenied
            // SAFETY: geteuid has no preconditions.
            && unsafe { libc::geteuid() } != 0
        {
            format!(
                "{e}: not root, so the mount needs read-write access to /dev/fuse (see \
                 `ls -l /dev/fuse`: usually crw-rw-rw-; else ask for its group) and \
                 fusermount3 (setuid root; Debian/Ubuntu: `apt install fuse3`), or run \
                 upg-mount as root"
            )
        } else {
            e.to_string()
        },
    }
}

/// The thread that waits for SIGINT/SIGTERM/SIGHUP (blocked in every thread, see
/// `block_signals`) and unmounts, lazily if a plain unmount fails.
fn spawn_signal_thread(
    set: libc::sigset_t,
    mut unmounter: fuse::Unmounter,
    mp: PathBuf,
) -> Result<(), MountError> {
    std::thread::Builder::new()
        .name("upg-signals".into())
        .spawn(move || {
            let mut sig: libc::c_int = 0;
            // SAFETY: set is a valid, initialised signal set; sig is a valid out-pointer.
            while unsafe { libc::sigwait(&set, &mut sig) } == 0 {
                tracing::info!("signal {sig}: unmounting {}", mp.display());
                if let Err(e) = unmounter.unmount() {
                    tracing::warn!("unmount failed ({e}); detaching lazily");
                    if let Ok(c) = CString::new(mp.as_os_str().as_bytes()) {
                        // SAFETY: valid C string; umount2 does not retain it.
                        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
                    }
                }
            }
        })
        .map(drop)
        .map_err(|e| MountError::Daemon(e.to_string()))
}

/// The at-exit summary: what `--status` said last.
fn log_exit_summary(vfs: &Vfs, log: &Option<DaemonLog>, mp_abs: &str) {
    let st = vfs.stats();
    let lost = log.as_ref().map(DaemonLog::lost).unwrap_or_default();
    let c = crate::cli::count;
    let line = format!(
        "unmounted {mp_abs}: {}, {}, {} lost",
        c(st.reads, "read"),
        c(st.eio, "EIO answer"),
        c(lost.total(), "log line")
    );
    if st.eio > 0 || lost.total() > 0 {
        tracing::warn!("{line}");
    } else {
        tracing::info!("{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Four chunks per core, never below the old fixed 2 MiB, never above 32 MiB.
    #[test]
    fn decode_ahead_follows_the_cores_within_bounds() {
        assert_eq!(default_decode_ahead(1), vfs::DEFAULT_READAHEAD);
        assert_eq!(default_decode_ahead(2), 2 << 20);
        assert_eq!(default_decode_ahead(16), 16 << 20);
        assert_eq!(default_decode_ahead(128), 32 << 20);
    }
}

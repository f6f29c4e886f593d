//! Pure filesystem model of one or several mounted archives. No FUSE types: `fuse.rs` is a thin
//! adapter over this module, and nearly every test drives it directly without mounting.
//!
//! Design:
//! - **Rooms**: `vfs/sources` turns the mount's sources into opened archives (the one path of
//!   `upg-mount` and the tests; the only directory I/O), `vfs/tree` builds the node table from
//!   file tables alone (pure), `vfs/handle` is the per-handle sequential detector (pure, unit
//!   tested), and the decoding is the archive layer's [`Scheduler`]. This file wires them and
//!   owns the kernel-facing rules: clamping, errors, failed ranges, status.
//! - **Inodes** are indices into one immutable node table built at start-up (`ino = index + 1`,
//!   so the root is inode 1 as FUSE expects). Archives never change while mounted, so there is no
//!   locking on the tree, inode numbers are stable, and `forget` needs no bookkeeping.
//! - **Layout**: a single archive puts its files at the root; several archives (or a folder of
//!   `.upg` files) get one sub-directory each, named after the archive without `.upg`. Paths
//!   inside an archive may contain `/`; intermediate directories are synthesised.
//! - **Attributes**: original size and permission bits with the write bits stripped (the mount
//!   is read-only); owner is the mounting user; times are the archive file's mtime.
//! - **Reads**: a read's chunks are planned once ([`Archive::plan`]) and the plan goes to
//!   [`Scheduler::read`], which decodes the chunks after the first on a small thread pool while
//!   the reading thread decodes the first, then serves the plan through the cache (a slice of
//!   the cached chunk when the range lies in one chunk: no copy). The archives of a mount share
//!   one decoded-chunk budget. Each open file handle tracks whether its reads are sequential;
//!   once a run covers 1 MiB, the chunks beyond the read are decoded on the same pool
//!   ([`Scheduler::read_ahead`]), bounded so prefetched chunks cannot evict the ones being read.
//! - **Errors**: one [`VfsError`] enum; [`VfsError::errno`] maps every variant to an errno in one
//!   exhaustive match. A damaged chunk logs one `tracing::error!` naming the archive, the file
//!   and the offset, and the read fails with `EIO`; other ranges and files keep working.
//! - **Status**: reads and `EIO` answers are counted ([`Vfs::stats`]); the root directory
//!   answers the extended attribute [`STATUS_XATTR`] with a text report (`upg-mount --status`
//!   reads it), so a running daemon can be asked without a socket. It is not listed by
//!   `listxattr`, so copy tools do not copy it.

mod handle;
mod sources;
mod tree;

use std::ffi::OsStr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::archive::{Archive, ArchiveError, Scheduler};
pub use handle::{Handles, PREFETCH_START, SEQ_SLACK, SeqDetector};
pub use sources::{
    Found, Source, archive_dir_name, expand_sources, lay_out, list_local, open_sources,
};
use tree::{NodeKind, Tree, TreeInput};

/// Errors of the filesystem model. Each maps to one errno in [`VfsError::errno`].
#[derive(Debug, Clone, thiserror::Error)]
pub enum VfsError {
    /// No entry with that name, or no such inode.
    #[error("no such file or directory")]
    NotFound,
    /// A directory operation on a file.
    #[error("not a directory")]
    NotADirectory,
    /// A file operation (open for reading data, read) on a directory.
    #[error("is a directory")]
    IsADirectory,
    /// Any attempt to modify the mount (write, create, rename, setattr, ...).
    #[error("read-only file system")]
    ReadOnly,
    /// A file handle that was never opened or is already released.
    #[error("bad file handle {0}")]
    BadHandle(u64),
    /// Reading a stored file failed (damaged chunk, I/O error on the archive).
    #[error("{archive}: {file} at offset {offset}: {source}")]
    Read {
        archive: PathBuf,
        file: String,
        offset: u64,
        source: Box<ArchiveError>,
    },
    /// The requested extended attribute does not exist (archives store none).
    #[error("no such extended attribute")]
    NoXattr,
}

impl VfsError {
    /// The errno reported to the kernel. Exhaustive on purpose: a new variant forces a decision.
    pub fn errno(&self) -> i32 {
        match self {
            VfsError::NotFound => libc::ENOENT,
            VfsError::NotADirectory => libc::ENOTDIR,
            VfsError::IsADirectory => libc::EISDIR,
            VfsError::ReadOnly => libc::EROFS,
            VfsError::BadHandle(_) => libc::EBADF,
            VfsError::Read { .. } => libc::EIO,
            VfsError::NoXattr => libc::ENODATA,
        }
    }
}

/// Errors of building the filesystem at start-up (before any request; they reach the user's
/// terminal, never the kernel, so they carry no errno).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// An archive could not be opened.
    #[error(transparent)]
    Open(ArchiveError),
    /// A directory given as a source could not be listed.
    #[error("{path}: {source}")]
    ListDir {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Two archives would get the same directory name, or a path is both a file and a directory.
    #[error("name clash: {0}")]
    NameClash(String),
    /// Nothing to mount (no archives given, or a folder without `.upg` files).
    #[error("no archives to mount: {0}")]
    NoArchives(String),
}

/// Extended attribute of the root directory that holds the daemon's status report (see
/// [`Vfs::status_text`]); read by name only, never listed.
pub const STATUS_XATTR: &str = "user.upg.status";

/// Counters of a mounted tree (see [`Vfs::stats`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Read requests served or failed.
    pub reads: u64,
    /// Read requests answered with `EIO` (damaged or unreadable archive data).
    pub eio: u64,
    /// The last read error, as logged.
    pub last_error: Option<String>,
}

/// Extra lines for the status report, supplied by the daemon (log file, lost log lines).
pub type StatusHook = Box<dyn Fn() -> String + Send + Sync>;

/// Inode number of the root directory (fixed by the FUSE protocol).
pub const ROOT_INO: u64 = 1;

/// Largest single read `read_at` serves. The kernel never asks for more than `max_pages` (256
/// pages = 1 MiB) per request; the cap only stops a direct caller from allocating gigabytes for a
/// huge `len`. Longer reads are short (callers loop, as with `read(2)`).
pub const MAX_READ: u32 = 16 << 20;

/// Read-ahead window in decoded bytes once a handle reads sequentially: 2 MiB is eight 256 KiB
/// chunks, which keeps the decode pool several kernel requests (128 KiB each with the default
/// `max_readahead`) ahead of a reader on a 2-core machine without spending much memory. It is
/// further capped at a quarter of the cache budget so prefetched chunks never evict the chunks
/// a reader is consuming.
pub const DEFAULT_READAHEAD: u64 = 2 << 20;

/// Failed read ranges remembered (see [`Vfs::read_at_with`]); the oldest is forgotten first.
const MAX_FAILED_RANGES: usize = 1024;

/// A read request that failed on damaged or unreadable archive data: later requests that lie
/// inside it fail the same way.
#[derive(Debug)]
struct FailedRange {
    ino: u64,
    start: u64,
    end: u64,
    err: VfsError,
}

/// What kind of node an inode is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
}

/// Attributes of a node (what `stat` shows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub kind: Kind,
    pub size: u64,
    /// 512-byte blocks: the original size, rounded up. Reporting the (smaller) stored size would
    /// make `cp --sparse=auto` and friends think the file has holes.
    pub blocks: u64,
    /// Permission bits (no file-type bits), write bits stripped.
    pub perm: u16,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: SystemTime,
}

/// One directory entry as returned by [`Vfs::readdir`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub ino: u64,
    /// Offset to pass to `readdir` to continue after this entry.
    pub next_offset: u64,
    pub kind: Kind,
    pub name: String,
}

/// Filesystem statistics (what `statfs`/`df` shows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatFs {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
    pub frsize: u32,
}

/// Block size reported by `statfs` and `stat` (`st_blksize`): 128 KiB matches the kernel's FUSE
/// readahead request size, so tools that size their reads by `st_blksize` ask in useful units.
const BLOCK_SIZE: u32 = 128 << 10;

/// Longest file name reported by `statfs` (the Linux `NAME_MAX`).
const NAME_MAX: u32 = 255;

struct Mounted {
    archive: Arc<Archive>,
}

/// Options of a mounted tree.
#[derive(Debug, Clone)]
pub struct VfsOptions {
    /// Decoded-chunk cache budget over all archives (one budget they share, see
    /// [`open_sources`]).
    pub cache_bytes: usize,
    /// Read-ahead window in bytes (0 disables read-ahead).
    pub readahead: u64,
    /// Threads decoding read-ahead chunks and the chunks of multi-chunk reads (0: one per core).
    pub prefetch_threads: usize,
    pub uid: u32,
    pub gid: u32,
}

impl Default for VfsOptions {
    fn default() -> Self {
        // SAFETY: getuid/getgid cannot fail and touch no memory.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        VfsOptions {
            cache_bytes: crate::archive::reader::DEFAULT_CACHE_BYTES,
            readahead: DEFAULT_READAHEAD,
            prefetch_threads: 0,
            uid,
            gid,
        }
    }
}

/// The mounted tree.
pub struct Vfs {
    archives: Vec<Mounted>,
    tree: Tree,
    uid: u32,
    gid: u32,
    readahead: u64,
    handles: Handles,
    /// Decodes read-ahead chunks and the extra chunks of a read over several chunks.
    sched: Scheduler,
    stored_bytes: u64,
    reads: AtomicU64,
    eio: AtomicU64,
    last_error: Mutex<Option<String>>,
    failed: Mutex<std::collections::VecDeque<FailedRange>>,
    status_hook: std::sync::OnceLock<StatusHook>,
}

impl std::fmt::Debug for Vfs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vfs")
            .field("archives", &self.archives.len())
            .field("nodes", &self.tree.len())
            .finish()
    }
}

impl Vfs {
    /// Open every source (see [`open_sources`]) and build the tree.
    pub fn open_sources(sources: &[PathBuf], opts: VfsOptions) -> Result<Vfs, SetupError> {
        let list = expand_sources(sources)?
            .into_iter()
            .map(|(n, p)| (n, Source::Path(p)))
            .collect();
        let archives = open_sources(list, opts.cache_bytes)?;
        Vfs::from_archives(archives, opts)
    }

    /// Build the tree from opened archives: `None` puts that archive's files at the root (only
    /// valid for a single archive), `Some(name)` under a sub-directory `name`. The archives' own
    /// cache budgets are used (`opts.cache_bytes` is ignored here). Starts the decode threads.
    pub fn from_archives(
        list: Vec<(Option<String>, Arc<Archive>)>,
        opts: VfsOptions,
    ) -> Result<Vfs, SetupError> {
        // Known since open (no I/O here): a file's mtime, none for memory or remote storage.
        let mtimes: Vec<Option<SystemTime>> =
            list.iter().map(|(_, a)| a.storage().modified()).collect();
        let root_mtime = mtimes
            .iter()
            .flatten()
            .max()
            .copied()
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let inputs: Vec<TreeInput<'_>> = list
            .iter()
            .zip(&mtimes)
            .map(|((name, a), m)| TreeInput {
                name: name.as_deref(),
                files: a.files(),
                mtime: m.unwrap_or(root_mtime),
            })
            .collect();
        let tree = Tree::build(&inputs, root_mtime)?;
        drop(inputs);
        let stored_bytes = list
            .iter()
            .fold(0u64, |n, (_, a)| n.saturating_add(a.archive_len()));
        Ok(Vfs {
            archives: list
                .into_iter()
                .map(|(_, archive)| Mounted { archive })
                .collect(),
            tree,
            uid: opts.uid,
            gid: opts.gid,
            readahead: opts.readahead,
            handles: Handles::default(),
            sched: Scheduler::new(opts.prefetch_threads),
            stored_bytes,
            reads: AtomicU64::new(0),
            eio: AtomicU64::new(0),
            last_error: Mutex::new(None),
            failed: Mutex::new(std::collections::VecDeque::new()),
            status_hook: std::sync::OnceLock::new(),
        })
    }

    fn node(&self, ino: u64) -> Result<&tree::Node, VfsError> {
        self.tree.node(ino)
    }

    fn attr_of(&self, ino: u64, n: &tree::Node) -> Attr {
        let (kind, nlink) = match &n.kind {
            NodeKind::Dir { children } => {
                let subdirs = children
                    .iter()
                    .filter(|(_, c)| {
                        self.node(*c)
                            .is_ok_and(|c| matches!(c.kind, NodeKind::Dir { .. }))
                    })
                    .count();
                (Kind::Dir, 2u32.saturating_add(subdirs as u32))
            }
            NodeKind::File { .. } => (Kind::File, 1),
        };
        Attr {
            ino,
            kind,
            size: n.size,
            blocks: n.size.div_ceil(512),
            perm: n.perm,
            nlink,
            uid: self.uid,
            gid: self.gid,
            mtime: n.mtime,
        }
    }

    /// Block size for `st_blksize`.
    pub fn block_size(&self) -> u32 {
        BLOCK_SIZE
    }

    /// Number of inodes (directories and files).
    pub fn inode_count(&self) -> u64 {
        self.tree.len()
    }

    pub fn getattr(&self, ino: u64) -> Result<Attr, VfsError> {
        let n = self.node(ino)?;
        Ok(self.attr_of(ino, n))
    }

    pub fn lookup(&self, parent: u64, name: &OsStr) -> Result<Attr, VfsError> {
        let NodeKind::Dir { children } = &self.node(parent)?.kind else {
            return Err(VfsError::NotADirectory);
        };
        let name = name.to_str().ok_or(VfsError::NotFound)?;
        let ino = match name {
            "." => parent,
            ".." => self.node(parent)?.parent,
            _ => {
                let i = children
                    .binary_search_by(|(n, _)| n.as_str().cmp(name))
                    .map_err(|_| VfsError::NotFound)?;
                children[i].1
            }
        };
        self.getattr(ino)
    }

    /// Look a '/'-separated path up from the root (for tests and tools).
    pub fn lookup_path(&self, path: &str) -> Result<Attr, VfsError> {
        let mut at = self.getattr(ROOT_INO)?;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            at = self.lookup(at.ino, OsStr::new(part))?;
        }
        Ok(at)
    }

    /// Entries of directory `ino` starting at `offset` (0: from the start, then each entry's
    /// `next_offset`). Includes `.` and `..`.
    pub fn readdir(&self, ino: u64, offset: u64) -> Result<Vec<DirEntry>, VfsError> {
        let n = self.node(ino)?;
        let NodeKind::Dir { children } = &n.kind else {
            return Err(VfsError::NotADirectory);
        };
        let all = [(".", ino), ("..", n.parent)]
            .into_iter()
            .chain(children.iter().map(|(name, c)| (name.as_str(), *c)));
        let mut out = Vec::new();
        for (i, (name, c)) in all
            .enumerate()
            .skip(usize::try_from(offset).unwrap_or(usize::MAX))
        {
            let kind = match self.node(c)?.kind {
                NodeKind::Dir { .. } => Kind::Dir,
                NodeKind::File { .. } => Kind::File,
            };
            out.push(DirEntry {
                ino: c,
                next_offset: i as u64 + 1,
                kind,
                name: name.to_string(),
            });
        }
        Ok(out)
    }

    /// Extended attribute `name` of `ino`: archives store none, so this is `NoXattr` for any
    /// existing node (answering instead of ENOSYS spares the kernel's security-label probes),
    /// except [`STATUS_XATTR`] on the root, which is [`Vfs::status_text`].
    pub fn getxattr(&self, ino: u64, name: &OsStr) -> Result<Vec<u8>, VfsError> {
        self.node(ino)?;
        if ino == ROOT_INO && name == STATUS_XATTR {
            return Ok(self.status_text().into_bytes());
        }
        Err(VfsError::NoXattr)
    }

    /// Reads and `EIO` answers so far, and the last read error.
    pub fn stats(&self) -> Stats {
        Stats {
            reads: self.reads.load(Ordering::Relaxed),
            eio: self.eio.load(Ordering::Relaxed),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }

    /// Add lines to [`Vfs::status_text`] (set once, by the daemon; later calls are ignored).
    pub fn set_status_hook(&self, hook: StatusHook) {
        let _ = self.status_hook.set(hook);
    }

    /// The status report: archives, read and `EIO` counts, the last error, then the daemon's
    /// lines (see [`Vfs::set_status_hook`]). One `key: value` per line.
    pub fn status_text(&self) -> String {
        let st = self.stats();
        let mut s = String::new();
        for m in &self.archives {
            s.push_str(&format!("archive: {}\n", m.archive.path().display()));
            if let Some(line) = m.archive.storage().stats_line() {
                s.push_str(&format!("remote: {line}\n"));
            }
        }
        let mut disk: Vec<&Arc<crate::disk_cache::DiskCache>> = Vec::new();
        for m in &self.archives {
            if let Some(c) = m.archive.disk_cache()
                && !disk.iter().any(|d| Arc::ptr_eq(d, c))
            {
                disk.push(c);
            }
        }
        for c in disk {
            s.push_str(&format!("cache dir: {}\n", c.stats_line()));
        }
        s.push_str(&format!("reads: {}\n", st.reads));
        s.push_str(&format!("EIO answers: {}\n", st.eio));
        if let Some(e) = &st.last_error {
            s.push_str(&format!("last error: {e}\n"));
        }
        if let Some(h) = self.status_hook.get() {
            s.push_str(&h());
        }
        s
    }

    /// Names of the extended attributes of `ino` (NUL-separated): always empty.
    pub fn listxattr(&self, ino: u64) -> Result<Vec<u8>, VfsError> {
        self.node(ino)?;
        Ok(Vec::new())
    }

    /// Open a file for reading; returns a handle for [`Vfs::read`]. Opening for writing fails.
    pub fn open(&self, ino: u64, write: bool) -> Result<u64, VfsError> {
        let n = self.node(ino)?;
        if write {
            return Err(VfsError::ReadOnly);
        }
        if let NodeKind::Dir { .. } = n.kind {
            return Err(VfsError::IsADirectory);
        }
        Ok(self.handles.open(ino))
    }

    /// Forget a handle. Unknown handles are an error (reported, harmless).
    pub fn release(&self, fh: u64) -> Result<(), VfsError> {
        if self.handles.release(fh) {
            Ok(())
        } else {
            Err(VfsError::BadHandle(fh))
        }
    }

    /// Open handles right now (for tests and statistics).
    pub fn open_handles(&self) -> usize {
        self.handles.len()
    }

    fn file_of(&self, ino: u64) -> Result<(&Mounted, usize, u64), VfsError> {
        let n = self.node(ino)?;
        match n.kind {
            NodeKind::Dir { .. } => Err(VfsError::IsADirectory),
            NodeKind::File { archive, file } => {
                let m = self.archives.get(archive).ok_or(VfsError::NotFound)?;
                Ok((m, file, n.size))
            }
        }
    }

    /// Read through an open handle: like [`Vfs::read_at`], and feeds the handle's sequential
    /// detection, which starts read-ahead. An unknown handle still reads (the kernel may read
    /// with a handle of another open of the same file); it just gets no read-ahead.
    pub fn read(&self, ino: u64, fh: u64, offset: u64, len: u32) -> Result<Vec<u8>, VfsError> {
        self.read_with(ino, fh, offset, len, <[u8]>::to_vec)
    }

    /// [`Vfs::read`] without the copy: `f` gets the bytes (a slice of a cached chunk when the
    /// range lies in one chunk) and its result is returned. The FUSE adapter replies from `f`.
    pub fn read_with<R>(
        &self,
        ino: u64,
        fh: u64,
        offset: u64,
        len: u32,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<R, VfsError> {
        let (m, file, size) = self.file_of(ino)?;
        let end = offset
            .saturating_add(u64::from(len.min(MAX_READ)))
            .min(size);
        if self.readahead > 0
            && offset < end
            && let Some((from, to)) = self.handles.advance(fh, ino, offset, end, self.readahead)
        {
            self.sched.read_ahead(&m.archive, file, from, to);
        }
        self.read_at_with(ino, offset, len, f)
    }

    /// Read up to `len` bytes of file `ino` at `offset` (clamped to the file size and to
    /// [`MAX_READ`]; empty at or past EOF). A damaged range fails with [`VfsError::Read`],
    /// logged once here.
    pub fn read_at(&self, ino: u64, offset: u64, len: u32) -> Result<Vec<u8>, VfsError> {
        self.read_at_with(ino, offset, len, <[u8]>::to_vec)
    }

    /// [`Vfs::read_at`] handing the bytes to `f` instead of copying them out. The read's chunks
    /// are planned once and handed to the decode scheduler ([`Scheduler::read`]: the chunks of
    /// a read over several chunks are decoded in parallel).
    ///
    /// A request that covers a damaged chunk fails whole, and so does every later request that
    /// lies inside a range that failed (the last [`MAX_FAILED_RANGES`] are remembered). The
    /// kernel needs the second rule: when a readahead request fails it retries the pages of the
    /// reader's range one by one, and without it the pages before the damage would succeed and
    /// `read(2)` would return the good prefix as a short read instead of `EIO`.
    pub fn read_at_with<R>(
        &self,
        ino: u64,
        offset: u64,
        len: u32,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<R, VfsError> {
        let (m, file, size) = self.file_of(ino)?;
        self.reads.fetch_add(1, Ordering::Relaxed);
        let end = offset
            .saturating_add(u64::from(len.min(MAX_READ)))
            .min(size);
        if offset >= end {
            return Ok(f(&[]));
        }
        if let Some(err) = self.inside_failed(ino, offset, end) {
            // Logged like the first failure: every EIO answer has its line.
            self.eio.fetch_add(1, Ordering::Relaxed);
            tracing::error!("read failed: {}", crate::text::escaped(&err.to_string()));
            return Err(err);
        }
        let result = m
            .archive
            .plan(file, offset, end - offset)
            .and_then(|plan| self.sched.read(&m.archive, &plan, f));
        result.map_err(|e| self.read_failed(m, ino, file, (offset, end), e))
    }

    /// Turn an archive error of a read of `[start, end)` into the [`VfsError`] the kernel gets:
    /// remembered (see [`Vfs::read_at_with`]), logged once, counted.
    fn read_failed(
        &self,
        m: &Mounted,
        ino: u64,
        file: usize,
        (start, end): (u64, u64),
        e: ArchiveError,
    ) -> VfsError {
        let (fname, at) = match &e {
            ArchiveError::Read { file, offset, .. } => (file.clone(), *offset),
            _ => (
                m.archive
                    .files()
                    .get(file)
                    .map(|f| f.path.clone())
                    .unwrap_or_default(),
                start,
            ),
        };
        let err = VfsError::Read {
            archive: m.archive.path().to_path_buf(),
            file: fname,
            offset: at,
            source: Box::new(e.root().clone()),
        };
        self.remember_failed(ino, start, end, &err);
        // The file name comes from the archive: escaped for the log and the status.
        let msg = format!("read failed: {}", crate::text::escaped(&err.to_string()));
        tracing::error!("{msg}");
        self.eio.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(msg);
        err
    }

    fn lock_failed(&self) -> std::sync::MutexGuard<'_, std::collections::VecDeque<FailedRange>> {
        // Plain data, consistent after every push/pop: a poisoned lock is still usable.
        self.failed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The error of a remembered failed request that contains `[start, end)` of `ino`.
    fn inside_failed(&self, ino: u64, start: u64, end: u64) -> Option<VfsError> {
        let failed = self.lock_failed();
        failed
            .iter()
            .rev()
            .find(|r| r.ino == ino && r.start <= start && end <= r.end)
            .map(|r| r.err.clone())
    }

    fn remember_failed(&self, ino: u64, start: u64, end: u64, err: &VfsError) {
        let mut failed = self.lock_failed();
        if failed.len() >= MAX_FAILED_RANGES {
            failed.pop_front();
        }
        failed.push_back(FailedRange {
            ino,
            start,
            end,
            err: err.clone(),
        });
    }

    /// Statistics for `statfs`: blocks are the stored (compressed) bytes of all archives, none
    /// free (read-only).
    pub fn statfs(&self) -> StatFs {
        StatFs {
            blocks: self.stored_bytes.div_ceil(u64::from(BLOCK_SIZE)),
            bfree: 0,
            bavail: 0,
            files: self.tree.len(),
            ffree: 0,
            bsize: BLOCK_SIZE,
            namelen: NAME_MAX,
            frsize: BLOCK_SIZE,
        }
    }

    /// The archives mounted (in inode-building order).
    pub fn archives(&self) -> Vec<Arc<Archive>> {
        self.archives.iter().map(|m| m.archive.clone()).collect()
    }
}

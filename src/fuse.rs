//! FUSE adapter: the only module that imports `fuser`. Each callback calls the [`Vfs`] and
//! answers with data or an errno; no logic lives here, so the filesystem is tested without FUSE.
//!
//! Choices that matter for correctness and speed:
//! - `FOPEN_KEEP_CACHE` on every open: content never changes while mounted, so the kernel page
//!   cache stays valid across opens (without it every open drops the cached pages).
//! - No `direct_io`: it breaks shared `mmap` (ENODEV), and safetensors loads by `mmap`.
//! - Long entry and attribute TTLs (see [`TTL`]): the tree is immutable.
//! - Several worker threads, each with its own cloned `/dev/fuse` fd: a read that waits for a
//!   chunk decode does not hold up lookups or reads of cached chunks.
//! - Every modifying operation answers `EROFS`.
//! - Kernel readahead raised to 1 MiB through the mount's bdi on the first open (see
//!   [`set_bdi_readahead`]); reads are answered from inside the vfs callback, with a slice of the
//!   cached chunk when they lie in one chunk.

use std::ffi::OsStr;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, KernelConfig, LockOwner, MountOption, OpenAccMode, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, SessionACL, TimeOrNow, WriteFlags,
};

use crate::vfs::{Attr, Kind, Vfs, VfsError};

/// Entry and attribute TTL: one day. The archives are immutable for the life of the mount, so the
/// kernel may keep names and attributes as long as it likes; a day keeps the values finite (some
/// kernels clamp very large TTLs) while making revalidation traffic negligible.
pub const TTL: Duration = Duration::from_secs(24 * 3600);

/// Default kernel readahead for the mount: 1 MiB, the largest single FUSE request
/// (`max_pages` 256); see [`set_bdi_readahead`] for why it matters and docs/BENCHMARKS.md for
/// the measurement.
pub const DEFAULT_READAHEAD_KB: u32 = 1024;

/// Who may access the mount besides its owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Access {
    /// Only the mounting user (FUSE's default; the kernel refuses everyone else).
    #[default]
    Owner,
    /// The mounting user and root (`allow_root`).
    OwnerAndRoot,
    /// Everyone (`allow_other`).
    All,
}

/// How to mount.
#[derive(Debug, Clone)]
pub struct MountConfig {
    pub access: Access,
    /// Kernel mount flags by name: nosuid, nodev, noexec, noatime, default_permissions,
    /// fsname=..., subtype=... (`ro` is always on). Unknown names are refused by [`check_option`].
    pub options: Vec<String>,
    /// FUSE worker threads.
    pub threads: usize,
    /// Name shown as the mount's source in /proc/mounts.
    pub fsname: String,
    /// Kernel readahead for the mount in KiB (the bdi's `read_ahead_kb`), 0 to keep the kernel's
    /// default (128 KiB). See [`set_bdi_readahead`].
    pub readahead_kb: u32,
}

/// Parse one `-o` option. `Ok(None)` for options handled elsewhere (allow_other, allow_root, ro).
pub fn check_option(o: &str) -> Result<Option<String>, String> {
    match o {
        "ro" | "allow_other" | "allow_root" => Ok(None),
        "rw" => Err("the mount is read-only; `rw` is not supported".into()),
        "auto_unmount" => Err("auto_unmount needs fusermount; use `umount` or SIGTERM".into()),
        "nosuid"
        | "nodev"
        | "noexec"
        | "noatime"
        | "default_permissions"
        | "suid"
        | "dev"
        | "exec"
        | "atime" => Ok(Some(o.to_string())),
        _ if o.starts_with("fsname=") || o.starts_with("subtype=") => Ok(Some(o.to_string())),
        _ => Err(format!("unsupported mount option {o:?}")),
    }
}

fn to_mount_option(o: &str) -> MountOption {
    match o {
        "nosuid" => MountOption::NoSuid,
        "nodev" => MountOption::NoDev,
        "noexec" => MountOption::NoExec,
        "noatime" => MountOption::NoAtime,
        "suid" => MountOption::Suid,
        "dev" => MountOption::Dev,
        "exec" => MountOption::Exec,
        "atime" => MountOption::Atime,
        "default_permissions" => MountOption::DefaultPermissions,
        _ => match (o.strip_prefix("fsname="), o.strip_prefix("subtype=")) {
            (Some(n), _) => MountOption::FSName(n.to_string()),
            (_, Some(s)) => MountOption::Subtype(s.to_string()),
            _ => MountOption::CUSTOM(o.to_string()),
        },
    }
}

fn config(cfg: &MountConfig) -> Config {
    let mut c = Config::default();
    let mut opts = vec![
        MountOption::RO,
        MountOption::FSName(cfg.fsname.clone()),
        MountOption::Subtype("upg".into()),
    ];
    for o in &cfg.options {
        let m = to_mount_option(o);
        if let MountOption::FSName(_) | MountOption::Subtype(_) = m {
            opts.retain(|x| std::mem::discriminant(x) != std::mem::discriminant(&m));
        }
        opts.push(m);
    }
    c.mount_options = opts;
    c.acl = match cfg.access {
        Access::Owner => SessionACL::Owner,
        Access::OwnerAndRoot => SessionACL::RootAndOwner,
        Access::All => SessionACL::All,
    };
    c.n_threads = Some(cfg.threads.max(1));
    c.clone_fd = cfg.threads > 1;
    c
}

/// A mounted, not yet serving filesystem: the kernel mount is up once this exists.
pub struct Mounted {
    session: fuser::Session<UpgFs>,
}

/// Unmounts a [`Mounted`] from another thread (signal handler thread).
pub struct Unmounter(fuser::SessionUnmounter);

impl Unmounter {
    pub fn unmount(&mut self) -> io::Result<()> {
        self.0.unmount()
    }
}

impl Mounted {
    pub fn unmounter(&mut self) -> Unmounter {
        Unmounter(self.session.unmount_callable())
    }
    /// Serve requests until the filesystem is unmounted.
    pub fn run(self) -> io::Result<()> {
        self.session.run()
    }
}

/// Mount `vfs` on `mountpoint` (the kernel mount is up when this returns Ok).
pub fn mount(vfs: Arc<Vfs>, mountpoint: &Path, cfg: &MountConfig) -> io::Result<Mounted> {
    let session = fuser::Session::new(UpgFs::new(vfs, mountpoint, cfg), mountpoint, &config(cfg))?;
    Ok(Mounted { session })
}

/// A mount served by a background thread (for `upg demo` and tests in-process).
pub struct Background(fuser::BackgroundSession);

impl Background {
    /// Unmount and wait for the serving thread.
    pub fn unmount(self) -> io::Result<()> {
        self.0.umount_and_join()
    }
}

/// Mount and serve on a background thread.
pub fn spawn(vfs: Arc<Vfs>, mountpoint: &Path, cfg: &MountConfig) -> io::Result<Background> {
    fuser::spawn_mount(UpgFs::new(vfs, mountpoint, cfg), mountpoint, &config(cfg)).map(Background)
}

/// The `fuser::Filesystem` over a [`Vfs`].
pub struct UpgFs {
    vfs: Arc<Vfs>,
    mountpoint: std::path::PathBuf,
    readahead_kb: u32,
    readahead_set: std::sync::Once,
}

impl UpgFs {
    fn new(vfs: Arc<Vfs>, mountpoint: &Path, cfg: &MountConfig) -> UpgFs {
        UpgFs {
            vfs,
            mountpoint: std::fs::canonicalize(mountpoint).unwrap_or_else(|_| mountpoint.into()),
            readahead_kb: cfg.readahead_kb,
            readahead_set: std::sync::Once::new(),
        }
    }
}

/// Set the kernel readahead of the FUSE mount at `mountpoint` to `kb` KiB by writing the
/// mount's bdi (`/sys/class/bdi/MAJ:MIN/read_ahead_kb`, device numbers from
/// `/proc/self/mountinfo`: a `stat` of the mountpoint would wait for this very daemon).
///
/// Why: the kernel offers FUSE at most 128 KiB of readahead in `INIT` and lowers the bdi to what
/// the daemon answers, so larger requests are only possible by raising the bdi afterwards. With
/// 1 MiB, a random read of up to 1 MiB is one request whose chunks are decoded in parallel
/// (instead of up to eight consecutive 128 KiB requests), and a sequential reader gets 1 MiB
/// requests (a quarter of the per-request overhead). Must run after the `INIT` reply (it caps
/// the bdi) and before the file's readahead state is set up at open: the first `open` is both.
/// Needs root (sysfs is root-writable); otherwise the kernel default stays.
pub fn set_bdi_readahead(mountpoint: &Path, kb: u32) -> io::Result<()> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    let want = mountpoint.to_string_lossy();
    // Fields: id parent MAJ:MIN root mountpoint ...; spaces in paths are written as \040.
    // The last matching line is the mount on top.
    let dev = info
        .lines()
        .rev()
        .find_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let mp = f.get(4)?.replace("\\040", " ");
            (mp == want).then(|| f.get(2).map(|d| d.to_string()))?
        })
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "mount not in mountinfo"))?;
    std::fs::write(
        format!("/sys/class/bdi/{dev}/read_ahead_kb"),
        kb.to_string(),
    )
}

fn errno(e: &VfsError) -> Errno {
    Errno::from_i32(e.errno())
}

fn file_attr(a: &Attr, blksize: u32) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.blocks,
        atime: a.mtime,
        mtime: a.mtime,
        ctime: a.mtime,
        crtime: a.mtime,
        kind: file_type(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: 0,
        blksize,
        flags: 0,
    }
}

fn file_type(k: Kind) -> FileType {
    match k {
        Kind::Dir => FileType::Directory,
        Kind::File => FileType::RegularFile,
    }
}

impl Filesystem for UpgFs {
    /// fuser's defaults stay: `max_background` 16 (congestion at 12) already keeps sixteen
    /// 1 MiB readahead requests in flight, more than two cores decode at once; `max_write` is
    /// irrelevant (read-only). The readahead size is set later (see [`set_bdi_readahead`]).
    ///
    /// `FUSE_ASYNC_DIO` where the kernel offers it: an `O_DIRECT` read larger than one request
    /// is then sent as several requests at once and fails whole when any of them fails (without
    /// it the kernel returns the requests before the failed one as a short read).
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        // Err only when the kernel lacks the capability: reads still work, as before.
        let _ = config.add_capabilities(fuser::InitFlags::FUSE_ASYNC_DIO);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.vfs.lookup(parent.0, name) {
            Ok(a) => reply.entry(&TTL, &file_attr(&a, self.vfs.block_size()), Generation(0)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.vfs.getattr(ino.0) {
            Ok(a) => reply.attr(&TTL, &file_attr(&a, self.vfs.block_size())),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        reply.error(errno(&VfsError::ReadOnly));
    }

    fn mknod(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        reply.error(errno(&VfsError::ReadOnly));
    }

    fn mkdir(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        reply.error(errno(&VfsError::ReadOnly));
    }

    fn unlink(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(errno(&VfsError::ReadOnly));
    }

    fn rmdir(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(errno(&VfsError::ReadOnly));
    }

    fn symlink(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _link_name: &OsStr,
        _target: &Path,
        reply: ReplyEntry,
    ) {
        reply.error(errno(&VfsError::ReadOnly));
    }

    fn rename(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _newparent: INodeNo,
        _newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply.error(errno(&VfsError::ReadOnly));
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(errno(&VfsError::ReadOnly));
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if self.readahead_kb > 0 {
            self.readahead_set.call_once(|| {
                match set_bdi_readahead(&self.mountpoint, self.readahead_kb) {
                    Ok(()) => tracing::debug!("kernel readahead {} KiB", self.readahead_kb),
                    Err(e) => tracing::info!("kernel readahead left at default: {e}"),
                }
            });
        }
        let write = !matches!(flags.acc_mode(), OpenAccMode::O_RDONLY);
        match self.vfs.open(ino.0, write) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        // The reply is sent from inside the vfs callback: a read within one chunk goes out as a
        // slice of the cached chunk, with no copy in the daemon.
        let mut reply = Some(reply);
        let sent = self.vfs.read_with(ino.0, fh.0, offset, size, |data| {
            if let Some(r) = reply.take() {
                r.data(data)
            }
        });
        if let (Err(e), Some(r)) = (sent, reply.take()) {
            r.error(errno(&e));
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        reply.error(errno(&VfsError::ReadOnly));
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        match self.vfs.release(fh.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        match self.vfs.readdir(ino.0, offset) {
            Ok(entries) => {
                for e in entries {
                    if reply.add(INodeNo(e.ino), e.next_offset, file_type(e.kind), &e.name) {
                        break;
                    }
                }
                reply.ok()
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        match self.vfs.getattr(ino.0) {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        match self.vfs.getxattr(ino.0, name) {
            Ok(v) if size == 0 => reply.size(v.len() as u32),
            Ok(v) if v.len() <= size as usize => reply.data(&v),
            Ok(_) => reply.error(Errno::from_i32(libc::ERANGE)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.vfs.listxattr(ino.0) {
            Ok(v) if size == 0 => reply.size(v.len() as u32),
            Ok(v) if v.len() <= size as usize => reply.data(&v),
            Ok(_) => reply.error(Errno::from_i32(libc::ERANGE)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let s = self.vfs.statfs();
        reply.statfs(
            s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.frsize,
        );
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        match self.vfs.getattr(ino.0) {
            Ok(_) if mask.contains(AccessFlags::W_OK) => reply.error(errno(&VfsError::ReadOnly)),
            Ok(_) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn create(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        reply.error(errno(&VfsError::ReadOnly));
    }
}

//! FUSE ceiling for benchmarks: serves ONE file, `data`, whose bytes are a copy of a given file
//! held in memory, through the same fuser configuration as `upg-mount` (same TTLs,
//! `FOPEN_KEEP_CACHE`, worker threads with cloned fds). Whatever this reaches is the most any
//! FUSE filesystem can reach on the machine; `upg-mount` minus this is our own cost.
//!
//! Usage: `noop_fs FILE MOUNTPOINT` (foreground; `umount MOUNTPOINT` ends it). It is a direct,
//! minimal `Filesystem`, so the only work per request is one memcpy into the reply.
//!
//! This example imports `fuser` directly: it is a measuring stick, not part of the library.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use fuser::{
    Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    LockOwner, MountOption, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEntry, ReplyOpen,
    Request,
};

/// Same TTL as `upg::fuse::TTL`.
const TTL: Duration = upg::fuse::TTL;

struct Noop {
    data: Vec<u8>,
    uid: u32,
    gid: u32,
}

impl Noop {
    fn attr(&self, ino: u64) -> FileAttr {
        let (kind, size, perm, nlink) = if ino == 1 {
            (FileType::Directory, 0, 0o555, 2)
        } else {
            (FileType::RegularFile, self.data.len() as u64, 0o444, 1)
        };
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: SystemTime::UNIX_EPOCH,
            mtime: SystemTime::UNIX_EPOCH,
            ctime: SystemTime::UNIX_EPOCH,
            crtime: SystemTime::UNIX_EPOCH,
            kind,
            perm,
            nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 128 << 10,
            flags: 0,
        }
    }
}

impl Filesystem for Noop {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if parent.0 == 1 && name == "data" {
            reply.entry(&TTL, &self.attr(2), Generation(0));
        } else {
            reply.error(Errno::from_i32(libc::ENOENT));
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        if ino.0 == 1 || ino.0 == 2 {
            reply.attr(&TTL, &self.attr(ino.0));
        } else {
            reply.error(Errno::from_i32(libc::ENOENT));
        }
    }

    fn open(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE);
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let len = self.data.len() as u64;
        let s = offset.min(len) as usize;
        let e = offset.saturating_add(u64::from(size)).min(len) as usize;
        // The copy a real filesystem makes from its cache into the reply buffer.
        let buf = self.data[s..e].to_vec();
        reply.data(&buf);
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let entries = [
            (1, FileType::Directory, "."),
            (1, FileType::Directory, ".."),
            (2, FileType::RegularFile, "data"),
        ];
        for (i, (ino, kind, name)) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(*ino), i as u64 + 1, *kind, name) {
                break;
            }
        }
        reply.ok();
    }
}

fn main() {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [file, mnt] = args.as_slice() else {
        eprintln!("usage: noop_fs FILE MOUNTPOINT");
        std::process::exit(2);
    };
    let data = match std::fs::read(file) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("noop_fs: {}: {e}", file.display());
            std::process::exit(2);
        }
    };
    // SAFETY: no preconditions.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let mut cfg = Config::default();
    cfg.mount_options = vec![MountOption::RO, MountOption::FSName("noop".into())];
    // Same worker count rule as upg-mount's default.
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .saturating_mul(2)
        .clamp(4, 16);
    cfg.n_threads = Some(threads);
    cfg.clone_fd = true;
    if let Err(e) = fuser::mount(Noop { data, uid, gid }, mnt, &cfg) {
        eprintln!("noop_fs: {e}");
        std::process::exit(2);
    }
}

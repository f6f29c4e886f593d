//! Positioned reads over any byte source: the one seam between the archive reader and where the
//! archive's bytes live: a local file, memory, an S3 object or an HTTP URL ([`remote`]).
//!
//! The trait is deliberately tiny and object-safe ([`Storage`]: a fixed length, an exact
//! positioned read, a description for messages), so the reader's guarantees — chunk hashes checked
//! before use, the byte-bounded cache, one `EIO` per damaged read on the mount — hold the same over
//! every backend: they live above this trait, not in it. A backend only moves bytes; it never
//! interprets them.
//!
//! Errors carry an [`io::ErrorKind`] (as [`StorageError::kind`]) plus a message, so the layers above
//! map every backend failure the same way (the mount: `EIO`) without knowing the backend.
//!
//! [`FileStorage::open`] opens with `O_NONBLOCK` and checks the file type with `fstat` *before*
//! anything can block: `open(2)` of a FIFO without `O_NONBLOCK` waits forever for a writer, and a
//! device may block or have side effects on read. Only regular files are accepted.

pub mod aws_config;
pub mod remote;

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// A failed storage operation: what kind of failure (as `std::io` names them) and a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg}")]
pub struct StorageError {
    /// The failure's kind; `UnexpectedEof` for a read past [`Storage::len`].
    pub kind: io::ErrorKind,
    /// Human-readable detail (the OS or backend message).
    pub msg: String,
}

impl StorageError {
    pub fn new(kind: io::ErrorKind, msg: impl Into<String>) -> Self {
        StorageError {
            kind,
            msg: msg.into(),
        }
    }
}

impl From<io::Error> for StorageError {
    fn from(e: io::Error) -> Self {
        StorageError {
            kind: e.kind(),
            msg: e.to_string(),
        }
    }
}

/// A read-only byte source of fixed length with positioned reads, shareable across threads.
///
/// Implementations must be safe to call from many threads at once (the mount's workers read
/// concurrently) and must either fill `buf` completely or return an error: never hand back fewer
/// bytes as if they were all.
pub trait Storage: Send + Sync {
    /// Length of the source in bytes, fixed when it was opened.
    fn len(&self) -> u64;

    /// True when the source holds no bytes.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fill `buf` with the bytes at `[offset, offset + buf.len())`. A range reaching past
    /// [`Storage::len`] fails with kind `UnexpectedEof`.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<(), StorageError>;

    /// Where the bytes come from, for messages: a path or a URL.
    fn describe(&self) -> String;

    /// Largest single read worth issuing when several adjacent chunks are wanted at once
    /// (read-ahead); 0: do not merge. Local files answer 0: the kernel's page cache and
    /// readahead already merge, and one read per chunk keeps decoding parallel. Remote objects
    /// answer their range-request size: one request per chunk would pay a round trip each.
    fn coalesce_limit(&self) -> usize {
        0
    }

    /// One line of counters for status reports (requests, bytes, retries), if the backend keeps
    /// any.
    fn stats_line(&self) -> Option<String> {
        None
    }

    /// When the source was last modified, if known (a mount shows it as the files' mtime).
    fn modified(&self) -> Option<std::time::SystemTime> {
        None
    }
}

/// Check that `[offset, offset + n)` lies inside a source of `len` bytes.
fn check_range(len: u64, offset: u64, n: usize) -> Result<(), StorageError> {
    match offset.checked_add(n as u64) {
        Some(end) if end <= len => Ok(()),
        _ => Err(StorageError::new(
            io::ErrorKind::UnexpectedEof,
            format!("read of {n} bytes at offset {offset} past the end ({len} bytes)"),
        )),
    }
}

/// Open `path` read-only if it is a regular file, without ever blocking on a FIFO or touching a
/// device: `O_NONBLOCK | O_NOCTTY`, then `fstat` on the opened descriptor (no check-then-open
/// race), then `O_NONBLOCK` cleared again. Anything else (FIFO, device, directory, socket) fails
/// with kind `InvalidInput` and the message "not a regular file". Every input upg opens by name
/// (archives, safetensors files to inspect or pack, originals to verify against) goes through here.
pub fn open_regular(path: &Path) -> io::Result<(File, std::fs::Metadata)> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        // O_NOCTTY: a terminal device must not become our controlling terminal on open.
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    // O_NONBLOCK means nothing for a regular file on Linux; clear it anyway so the descriptor
    // behaves like any other from here on.
    // SAFETY: fcntl on a descriptor we own, with integer arguments only.
    unsafe {
        use std::os::fd::AsRawFd;
        let fd = file.as_raw_fd();
        let fl = libc::fcntl(fd, libc::F_GETFL);
        if fl >= 0 {
            libc::fcntl(fd, libc::F_SETFL, fl & !libc::O_NONBLOCK);
        }
    }
    Ok((file, meta))
}

/// Where an archive named on a command line lives: a local path or a remote URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Local(PathBuf),
    Remote(remote::RemoteUrl),
}

impl Location {
    /// `s3://...`, `http://...` and `https://...` are URLs; anything else is a local path.
    pub fn parse(s: &std::ffi::OsStr) -> Result<Location, StorageError> {
        match s.to_str().and_then(remote::RemoteUrl::parse) {
            Some(u) => u.map(Location::Remote),
            None => Ok(Location::Local(PathBuf::from(s))),
        }
    }

    pub fn is_remote(&self) -> bool {
        matches!(self, Location::Remote(_))
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Local(p) => write!(f, "{}", p.display()),
            Location::Remote(u) => write!(f, "{u}"),
        }
    }
}

/// Open the one archive a location names (an S3 prefix is an error here: see
/// [`remote::Remote::list_archives`]).
pub fn open_location(
    loc: &Location,
    opts: &remote::RemoteOptions,
) -> Result<std::sync::Arc<dyn Storage>, StorageError> {
    match loc {
        Location::Local(p) => {
            Ok(std::sync::Arc::new(FileStorage::open(p).map_err(|e| {
                StorageError::new(e.kind, format!("{}: {}", p.display(), e.msg))
            })?))
        }
        Location::Remote(u) if u.is_prefix() => Err(StorageError::new(
            io::ErrorKind::InvalidInput,
            format!("{u}: names a prefix (a folder of archives), not one archive"),
        )),
        Location::Remote(u) => {
            let r = remote::Remote::connect(u, opts)?;
            let key = match u {
                remote::RemoteUrl::S3 { key, .. } => key.clone(),
                remote::RemoteUrl::Http { url } => {
                    url.rsplit('/').next().unwrap_or_default().to_string()
                }
            };
            Ok(std::sync::Arc::new(r.open(&key)?))
        }
    }
}

/// A local regular file, read with `pread` (no memory map: a file truncated underneath a
/// long-running mount gives an I/O error for one read, not SIGBUS).
#[derive(Debug)]
pub struct FileStorage {
    path: PathBuf,
    file: File,
    len: u64,
    modified: Option<std::time::SystemTime>,
}

impl FileStorage {
    /// Open `path` for reading. Refuses anything but a regular file (FIFO, device, directory,
    /// socket) with kind `InvalidInput`, without blocking: the open uses `O_NONBLOCK` and the type
    /// is checked with `fstat` on the opened descriptor (no check-then-open race).
    pub fn open(path: impl AsRef<Path>) -> Result<FileStorage, StorageError> {
        let path = path.as_ref().to_path_buf();
        let (file, meta) = open_regular(&path)?;
        Ok(FileStorage {
            path,
            file,
            len: meta.len(),
            modified: meta.modified().ok(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Storage for FileStorage {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<(), StorageError> {
        check_range(self.len, offset, buf.len())?;
        // A file truncated after open reads short here: std reports that as UnexpectedEof.
        self.file.read_exact_at(buf, offset).map_err(Into::into)
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    fn modified(&self) -> Option<std::time::SystemTime> {
        self.modified
    }
}

/// Bytes held in memory (tests, fuzz targets, archives fetched whole).
#[derive(Debug, Clone)]
pub struct MemStorage {
    name: String,
    bytes: std::sync::Arc<[u8]>,
}

impl MemStorage {
    /// `name` is what messages call the source.
    pub fn new(name: impl Into<String>, bytes: impl Into<std::sync::Arc<[u8]>>) -> Self {
        MemStorage {
            name: name.into(),
            bytes: bytes.into(),
        }
    }
}

impl Storage for MemStorage {
    fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<(), StorageError> {
        check_range(self.len(), offset, buf.len())?;
        // In range by the check above, and the length fits usize because the bytes are in memory.
        let at = offset as usize;
        buf.copy_from_slice(&self.bytes[at..at + buf.len()]);
        Ok(())
    }

    fn describe(&self) -> String {
        self.name.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_reads_exact_and_refuses_past_end() {
        let m = MemStorage::new("mem", b"hello world".to_vec());
        let mut b = [0u8; 5];
        m.read_exact_at(&mut b, 6).unwrap();
        assert_eq!(&b, b"world");
        assert_eq!(m.len(), 11);
        let e = m.read_exact_at(&mut b, 7).unwrap_err();
        assert_eq!(e.kind, io::ErrorKind::UnexpectedEof);
        let e = m.read_exact_at(&mut b, u64::MAX).unwrap_err();
        assert_eq!(e.kind, io::ErrorKind::UnexpectedEof);
        m.read_exact_at(&mut [], 11).unwrap();
    }

    #[test]
    fn file_reads_and_refuses_non_regular() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        std::fs::write(&p, b"0123456789").unwrap();
        let f = FileStorage::open(&p).unwrap();
        let mut b = [0u8; 3];
        f.read_exact_at(&mut b, 7).unwrap();
        assert_eq!(&b, b"789");
        assert_eq!(
            f.read_exact_at(&mut b, 8).unwrap_err().kind,
            io::ErrorKind::UnexpectedEof
        );
        assert_eq!(f.describe(), p.display().to_string());
        let e = FileStorage::open(d.path()).unwrap_err();
        assert_eq!(e.kind, io::ErrorKind::InvalidInput);
        let e = FileStorage::open(d.path().join("missing")).unwrap_err();
        assert_eq!(e.kind, io::ErrorKind::NotFound);
    }
}

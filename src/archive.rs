//! Archive layer: open and validate an archive, read any byte range of any stored file (decoding
//! only the chunks that cover it, through a byte-bounded cache), write archives (`writer`), and
//! verify them (`verify`).
//!
//! The reader reads through [`crate::storage::Storage`] (a local file, memory, remote objects), so
//! every check below holds over any backend. For local files it uses positioned reads (`pread`),
//! not a memory map, for chunk data: a map turns an
//! archive that is truncated or replaced underneath a long-running mount into SIGBUS in the daemon,
//! while `pread` turns it into an I/O error for one read. The cost is one copy of the *stored*
//! bytes per decoded chunk, small next to decoding them. The format itself stays mmap-friendly.

pub mod meta;
pub mod reader;
pub mod records;
pub mod schedule;
pub mod verify;
pub mod writer;

pub use meta::ArchiveMeta;
pub use reader::{Archive, ChunkSpan, OpenOptions, ReadPlan, SharedCache, shared_cache};
pub use schedule::Scheduler;

use std::path::PathBuf;

use crate::codec::CodecError;
use crate::format::FormatError;

/// How the archive layer reports long work and the temporary outputs it creates. The caller
/// decides what they mean (`cli` draws a progress bar and registers temporaries for removal on
/// SIGINT); the archive layer imports neither a terminal library nor process-wide state.
pub trait Observer: Send + Sync {
    /// Work over `total` bytes named `what` ("packing", "verifying") starts; the returned sink
    /// is told the bytes done as they are done, and dropped when the work ends.
    fn start(&self, what: &'static str, total: u64) -> Box<dyn Progress> {
        let _ = (what, total);
        Box::new(())
    }
    /// A temporary output now exists at `path`; the returned guard is kept alive until it has
    /// been renamed into place or removed.
    fn temp_created(&self, path: &std::path::Path) -> Box<dyn std::any::Any> {
        let _ = path;
        Box::new(())
    }
    /// A stale temporary output left by process `pid` (killed before it could clean up: that
    /// process no longer exists) was removed from `path`.
    fn stale_removed(&self, path: &std::path::Path, pid: u32) {
        let _ = (path, pid);
    }
}

/// Remove the temporary outputs (`.NAME.upg-tmp-PID`, files or directories) in `dir` whose
/// process no longer exists: a pack or unpack killed by SIGKILL (or a crash) cannot remove its
/// own. Called by `pack` and `unpack` before they create theirs in that directory; each removal
/// is told to `hooks`. A temporary whose PID is alive (or cannot be probed) is left alone, and
/// nothing here fails the caller. (A temporary of a process in another PID namespace sharing
/// the directory would look stale; upg assumes one namespace per output directory.)
pub fn remove_stale_temps(dir: &std::path::Path, hooks: &dyn Observer) {
    let dir = if dir.as_os_str().is_empty() {
        std::path::Path::new(".")
    } else {
        dir
    };
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.starts_with('.'))
            .and_then(|n| n.rsplit_once(".upg-tmp-"))
            .map(|(_, pid)| pid)
            .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(raw) = libc::pid_t::try_from(pid) else {
            continue;
        };
        if pid == std::process::id() || raw <= 0 {
            continue;
        }
        // SAFETY: signal 0 only probes whether the process exists; nothing is sent.
        let gone = unsafe { libc::kill(raw, 0) } != 0
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if !gone {
            continue;
        }
        let path = e.path();
        let removed = match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(&path),
            Ok(_) => std::fs::remove_file(&path),
            Err(e) => Err(e),
        };
        if removed.is_ok() {
            hooks.stale_removed(&path, pid);
        }
    }
}

/// A sink for the bytes of one piece of work done so far.
pub trait Progress {
    fn inc(&self, n: u64);
}

impl Progress for () {
    fn inc(&self, _: u64) {}
}

/// The [`Observer`] that ignores everything.
pub struct Silent;
impl Observer for Silent {}

/// An [`Observer`] to put in options structs (cloneable, `Debug`, silent by default).
#[derive(Clone)]
pub struct Hooks(pub std::sync::Arc<dyn Observer>);

impl Default for Hooks {
    fn default() -> Self {
        Hooks(std::sync::Arc::new(Silent))
    }
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hooks")
    }
}

impl std::ops::Deref for Hooks {
    type Target = dyn Observer;
    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

/// Errors of the archive layer.
#[derive(Debug, thiserror::Error, Clone)]
pub enum ArchiveError {
    /// The operating system refused an I/O operation on the archive or an input file.
    #[error("{path}: {msg}")]
    Io {
        path: PathBuf,
        msg: String,
        kind: std::io::ErrorKind,
    },
    /// The archive's framing or index is invalid.
    #[error("{path}: {source}")]
    Format { path: PathBuf, source: FormatError },
    /// A chunk's stored bytes fail their checksum (damaged on disk).
    #[error("{archive}: chunk {chunk} (archive offset {offset}): stored bytes fail their checksum")]
    StoredChecksum {
        archive: PathBuf,
        chunk: u32,
        offset: u64,
    },
    /// A chunk's stored bytes cannot be decoded.
    #[error("{archive}: chunk {chunk} (archive offset {offset}): {source}")]
    Decode {
        archive: PathBuf,
        chunk: u32,
        offset: u64,
        source: CodecError,
    },
    /// A chunk decodes to bytes that fail their checksum.
    #[error(
        "{archive}: chunk {chunk} (archive offset {offset}): decoded bytes fail their checksum"
    )]
    DecodedChecksum {
        archive: PathBuf,
        chunk: u32,
        offset: u64,
    },
    /// A read of a stored file failed; names the file and the offset where the damage starts.
    #[error("{file} at offset {offset}: {source}")]
    Read {
        file: String,
        offset: u64,
        source: Box<ArchiveError>,
    },
    /// A page of the chunk table no longer holds the bytes validated when the archive was
    /// opened: the archive file was changed or replaced underneath the reader.
    #[error(
        "{path}: index page {page} (archive offset {offset}) changed since the archive was opened"
    )]
    IndexChanged {
        path: PathBuf,
        page: u32,
        offset: u64,
    },
    /// No file with that index in the archive (a caller's mistake, not damage).
    #[error("no file #{file} in archive")]
    NoSuchFile { file: usize },
    /// No chunk with that id in the archive's chunk table (a caller's mistake, not damage: the
    /// index's own chunk references were all checked at open).
    #[error("no chunk {chunk} in archive")]
    NoSuchChunk { chunk: u32 },
}

impl ArchiveError {
    /// The innermost error (through `Read` wrappers).
    pub fn root(&self) -> &ArchiveError {
        match self {
            ArchiveError::Read { source, .. } => source.root(),
            e => e,
        }
    }
}

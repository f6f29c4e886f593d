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

pub mod reader;
pub mod verify;
pub mod writer;

pub use reader::{Archive, ChunkSpan, OpenOptions};

use std::path::PathBuf;

use crate::codec::CodecError;
use crate::format::FormatError;

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

//! The `.upg` on-disk format: pure bytes <-> structs. No I/O, no panics.
//!
//! ```text
//! [superblock 16 B][chunk data ...][index][footer 40 B]
//! ```
//! The archive is written as a stream: chunks first, then the index that describes them, then a
//! fixed-size footer that locates the index. A reader maps or preads the footer, then the index,
//! validates both completely (`Index::parse`), and only then touches chunk data. Every byte is
//! documented in docs/FORMAT.md.
//!
//! Parsing follows the safetensors habit: the input is a `&[u8]`, every count is capped by the
//! bytes that remain, every offset goes through checked arithmetic, every slice through `.get()`,
//! and the index must describe the file exactly (chunks inside the data area, sorted, no overlaps,
//! every file's segments summing to its size, every chunk's decoded length consistent with the
//! segment that uses it).

use std::collections::HashSet;

use crate::cursor::{Cursor, Short};

/// First 8 bytes of every archive. `\r\n` catches text-mode mangling, as PNG's signature does.
pub const MAGIC: [u8; 8] = *b"UPGARC\r\n";
/// Last 8 bytes of every archive (end of the footer).
pub const FOOTER_MAGIC: [u8; 8] = *b"UPGEND\r\n";
/// Major version: a reader refuses any other major (incompatible layout).
pub const VERSION_MAJOR: u16 = 1;
/// Minor version: additions a v1 reader can ignore or refuse precisely. The newest this build
/// writes; 1.1 added the block codec (id 4) and the GGUF header segment kind (3), 1.2 the float
/// codec's param 4 (F16 coded as BF16, `Codec::F16ViaBf16`). A writer puts
/// the lowest minor that describes what it used in the footer (the superblock, written before
/// anything is known, always says 0; readers take the footer's).
pub const VERSION_MINOR: u16 = 2;
/// magic (8) + major (2) + minor (2) + flags (4).
pub const SUPERBLOCK_LEN: usize = 16;
/// index offset (8) + index length (8) + index xxh3 (8) + major (2) + minor (2) + flags (4) + magic (8).
pub const FOOTER_LEN: usize = 40;
/// One chunk-table record: offset 8, stored 4, decoded 4, codec 1, param 1, flags 2, two xxh3 8+8.
pub const CHUNK_RECORD_LEN: usize = 36;
/// Largest decoded chunk a reader accepts. Writers use 256 KiB–4 MiB; the cap bounds the buffer a
/// hostile index can make a reader allocate per chunk.
pub const MAX_CHUNK_LEN: u32 = 64 << 20;
/// Longest relative path stored (Linux PATH_MAX).
pub const MAX_PATH_LEN: usize = 4096;
/// Cap on the free-form JSON metadata block (lossy statistics per tensor fit easily).
pub const MAX_META_LEN: usize = 64 << 20;
/// Largest index a reader accepts (and a writer writes). The reader streams the index at open and
/// keeps only the file table and pages of records (archive/records.rs); this bounds what a forged
/// footer can make it read, and the part after the chunk table it holds while checking the files.
/// The value: an index costs
/// about 40 bytes per chunk (a 36-byte record plus a 4-byte id in its segment), so 1 GiB describes
/// ~27 million chunks: 6.5 TiB of model at the default 256 KiB chunks, 100 GiB even at the
/// smallest (4 KiB) chunks. The largest public checkpoints (~2 TB of BF16) need ~300 MiB at the
/// default chunk size. Larger models are split into several archives.
pub const MAX_INDEX_LEN: u64 = 1 << 30;

/// Everything that can be wrong with an archive's framing or index.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum FormatError {
    /// The file is shorter than a superblock plus a footer.
    #[error("file too short to be an archive ({len} bytes)")]
    TooShort { len: u64 },
    /// The first 8 bytes are not the upg magic.
    #[error("not a upg archive (bad magic at offset 0)")]
    BadMagic,
    /// The last 8 bytes are not the footer magic: the file is truncated or was not completely written.
    #[error("archive footer missing or damaged (truncated or incompletely written file)")]
    BadFooter,
    /// Major version this reader does not understand.
    #[error("unsupported archive version {major}.{minor} (this build reads {VERSION_MAJOR}.x)")]
    UnsupportedVersion { major: u16, minor: u16 },
    /// Superblock and footer disagree on the major version (docs/FORMAT.md: the footer's major
    /// must equal the superblock's), so one of them is damaged.
    #[error("superblock says major version {superblock}, footer says {footer} (damaged archive)")]
    VersionMismatch { superblock: u16, footer: u16 },
    /// The footer places the index outside the file.
    #[error("index location out of range (offset {offset}, length {len}, file {file_len})")]
    IndexOutOfRange {
        offset: u64,
        len: u64,
        file_len: u64,
    },
    /// The footer claims an index larger than [`MAX_INDEX_LEN`] (refused before anything is read).
    #[error("index length {len} exceeds the {max}-byte cap (forged or damaged footer)")]
    IndexTooLarge { len: u64, max: u64 },
    /// The index bytes do not match their checksum.
    #[error("index checksum mismatch (index damaged)")]
    IndexChecksum,
    /// The index ended in the middle of a field.
    #[error("index truncated while reading {0}")]
    Truncated(&'static str),
    /// Bytes remain after the last index field.
    #[error("{0} unexpected bytes after the index")]
    TrailingBytes(usize),
    /// A chunk record is inconsistent (outside the data area, overlapping, too large, unknown codec).
    #[error("chunk {id}: {reason}")]
    BadChunk { id: u32, reason: BadChunk },
    /// A file entry is inconsistent (bad path, sizes that do not add up, bad chunk reference).
    #[error("file entry {index} ({path:?}): {reason}")]
    BadFile {
        index: u32,
        path: String,
        reason: BadFile,
    },
    /// The metadata block is larger than [`MAX_META_LEN`].
    #[error("metadata block: {len} bytes exceeds the {MAX_META_LEN}-byte cap")]
    MetaTooLarge { len: usize },
    /// The metadata block is not UTF-8.
    #[error("metadata block: not UTF-8")]
    MetaNotUtf8,
}

/// Why a chunk record is refused ([`FormatError::BadChunk`]).
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum BadChunk {
    /// `offset + stored_len` overflows a u64.
    #[error("offset overflows")]
    OffsetOverflow,
    /// The stored bytes start before the previous chunk's end (or inside the superblock).
    #[error("offset {offset} overlaps the previous chunk or the superblock")]
    Overlap { offset: u64 },
    /// The stored bytes run into the index.
    #[error("stored bytes {offset}..{end} run past the data area (ends at {data_end})")]
    PastDataArea {
        offset: u64,
        end: u64,
        data_end: u64,
    },
    /// The decoded or stored length exceeds the caps ([`MAX_CHUNK_LEN`], twice that stored).
    #[error("length {decoded_len} (stored {stored_len}) exceeds the {MAX_CHUNK_LEN}-byte cap")]
    TooLong { decoded_len: u32, stored_len: u32 },
    /// Flag bits this reader does not know (they could change how the chunk decodes).
    #[error("unknown chunk flags {0:#06x}")]
    UnknownFlags(u16),
    /// A codec id / param pair this build does not know.
    #[error("unknown codec id {id} (param {param})")]
    UnknownCodec { id: u8, param: u8 },
}

/// Why a file entry is refused ([`FormatError::BadFile`]).
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum BadFile {
    /// The path bytes are not UTF-8.
    #[error("path is not UTF-8")]
    PathNotUtf8,
    /// The path could escape or confuse the mount ([`validate_path`]).
    #[error("{0}")]
    Path(PathError),
    /// Two entries have the same path.
    #[error("duplicate path")]
    DuplicatePath,
    /// A path is also a parent directory of another entry ("a" and "a/b").
    #[error("path is also the parent directory of {child:?}")]
    FileIsDirectory { child: String },
    /// A segment kind byte this reader does not know.
    #[error("segment {segment}: unknown kind {kind}")]
    UnknownSegmentKind { segment: u32, kind: u8 },
    /// A segment's chunk size is 0 or above [`MAX_CHUNK_LEN`].
    #[error("segment {segment}: chunk size {chunk_size} out of range")]
    ChunkSize { segment: u32, chunk_size: u32 },
    /// A segment lists a different number of chunks than its length needs.
    #[error("segment {segment}: {count} chunks for {len} bytes of {chunk_size}-byte chunks")]
    ChunkCount {
        segment: u32,
        count: u32,
        len: u64,
        chunk_size: u32,
    },
    /// A segment names a chunk id past the chunk table.
    #[error("segment {segment}: chunk id {id} out of range")]
    ChunkIdOutOfRange { segment: u32, id: u32 },
    /// A chunk's decoded length does not fit its place in the segment.
    #[error("segment {segment}: chunk {id} decodes to {decoded_len} bytes, {expected} expected")]
    ChunkLen {
        segment: u32,
        id: u32,
        decoded_len: u32,
        expected: u64,
    },
    /// The segment lengths overflow a u64.
    #[error("segment lengths overflow")]
    SegmentsOverflow,
    /// The segments cover a different number of bytes than the file's size.
    #[error("segments cover {covered} bytes, file size is {size}")]
    SizeMismatch { covered: u64, size: u64 },
}

/// Why a relative path is refused ([`validate_path`]).
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone, Copy)]
pub enum PathError {
    #[error("empty path")]
    Empty,
    #[error("path too long")]
    TooLong,
    #[error("path contains NUL")]
    Nul,
    #[error("absolute path")]
    Absolute,
    #[error("empty path component")]
    EmptyComponent,
    #[error("path component '.' or '..'")]
    DotComponent,
    #[error("path component longer than 255 bytes")]
    ComponentTooLong,
}

/// Where the index is, as the footer says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footer {
    pub index_offset: u64,
    pub index_len: u64,
    pub index_hash: u64,
    pub minor: u16,
}

pub fn superblock() -> [u8; SUPERBLOCK_LEN] {
    let mut b = [0u8; SUPERBLOCK_LEN];
    b[..8].copy_from_slice(&MAGIC);
    b[8..10].copy_from_slice(&VERSION_MAJOR.to_le_bytes());
    b[10..12].copy_from_slice(&0u16.to_le_bytes());
    b
}

pub fn footer_bytes(f: &Footer) -> [u8; FOOTER_LEN] {
    let mut b = [0u8; FOOTER_LEN];
    b[0..8].copy_from_slice(&f.index_offset.to_le_bytes());
    b[8..16].copy_from_slice(&f.index_len.to_le_bytes());
    b[16..24].copy_from_slice(&f.index_hash.to_le_bytes());
    b[24..26].copy_from_slice(&VERSION_MAJOR.to_le_bytes());
    b[26..28].copy_from_slice(&f.minor.to_le_bytes());
    b[32..40].copy_from_slice(&FOOTER_MAGIC);
    b
}

/// Check the framing of a file of `file_len` bytes: its superblock (first 16 bytes) and footer
/// (last 40), and that both name the same major version before either is compared with this
/// build's (so a damaged version field reads as damage, not as a newer format). The superblock's
/// minor is not checked: it is written before the writer knows what it will use, and the footer's
/// is authoritative (docs/FORMAT.md).
pub fn parse_frame(sb: &[u8], ft: &[u8], file_len: u64) -> Result<Footer, FormatError> {
    if file_len < (SUPERBLOCK_LEN + FOOTER_LEN) as u64 {
        return Err(FormatError::TooShort { len: file_len });
    }
    let mut r = Cursor::new(sb);
    let magic = r
        .bytes(8, "superblock magic")
        .map_err(|_| FormatError::BadMagic)?;
    if magic != MAGIC {
        return Err(FormatError::BadMagic);
    }
    let sb_major = r.u16("superblock version")?;
    let mut r = Cursor::new(ft.get(24..).unwrap_or_default());
    let ft_major = r.u16("footer")?;
    if ft.get(32..40) != Some(&FOOTER_MAGIC[..]) {
        return Err(FormatError::BadFooter);
    }
    if sb_major != ft_major {
        return Err(FormatError::VersionMismatch {
            superblock: sb_major,
            footer: ft_major,
        });
    }
    parse_superblock(sb)?;
    parse_footer(ft, file_len)
}

/// Check the superblock (first 16 bytes): magic and major version.
pub fn parse_superblock(b: &[u8]) -> Result<(), FormatError> {
    let mut r = Cursor::new(b);
    let magic = r
        .bytes(8, "superblock magic")
        .map_err(|_| FormatError::BadMagic)?;
    if magic != MAGIC {
        return Err(FormatError::BadMagic);
    }
    let major = r.u16("superblock version")?;
    let minor = r.u16("superblock version")?;
    if major != VERSION_MAJOR {
        return Err(FormatError::UnsupportedVersion { major, minor });
    }
    Ok(())
}

/// Parse the footer (last 40 bytes) of a file of `file_len` bytes and check that the index it
/// names lies between the superblock and the footer.
pub fn parse_footer(b: &[u8], file_len: u64) -> Result<Footer, FormatError> {
    if file_len < (SUPERBLOCK_LEN + FOOTER_LEN) as u64 {
        return Err(FormatError::TooShort { len: file_len });
    }
    let mut r = Cursor::new(b);
    let index_offset = r.u64("footer")?;
    let index_len = r.u64("footer")?;
    let index_hash = r.u64("footer")?;
    let major = r.u16("footer")?;
    let minor = r.u16("footer")?;
    let _flags = r.u32("footer")?;
    let magic = r.bytes(8, "footer magic")?;
    if magic != FOOTER_MAGIC {
        return Err(FormatError::BadFooter);
    }
    if major != VERSION_MAJOR {
        return Err(FormatError::UnsupportedVersion { major, minor });
    }
    let end = index_offset
        .checked_add(index_len)
        .and_then(|e| e.checked_add(FOOTER_LEN as u64));
    if index_offset < SUPERBLOCK_LEN as u64 || end != Some(file_len) {
        return Err(FormatError::IndexOutOfRange {
            offset: index_offset,
            len: index_len,
            file_len,
        });
    }
    if index_len > MAX_INDEX_LEN {
        return Err(FormatError::IndexTooLarge {
            len: index_len,
            max: MAX_INDEX_LEN,
        });
    }
    Ok(Footer {
        index_offset,
        index_len,
        index_hash,
        minor,
    })
}

/// One stored chunk: where its bytes are and how to turn them back into decoded bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRecord {
    /// Absolute offset of the stored bytes in the archive.
    pub offset: u64,
    pub stored_len: u32,
    pub decoded_len: u32,
    pub codec_id: u8,
    pub codec_param: u8,
    /// xxh3-64 of the stored bytes, checked before decoding.
    pub stored_hash: u64,
    /// xxh3-64 of the decoded bytes, checked before the bytes are served or cached.
    pub decoded_hash: u64,
}

/// What part of a file a segment holds; informs `inspect`, never how bytes are decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentKind {
    /// A file that is not safetensors (or a part upg does not interpret).
    Plain = 0,
    /// The 8-byte length plus JSON header of a safetensors file, stored verbatim (zstd).
    StHeader = 1,
    /// One tensor's data, in the order of the header's offsets.
    Tensor = 2,
    /// A GGUF file's header (magic through the alignment padding before the tensor data),
    /// stored verbatim (zstd). Since format 1.1.
    GgufHeader = 3,
}

/// A contiguous run of a file's bytes, cut into chunks of `chunk_size` decoded bytes (the last
/// one shorter). Chunks never span two segments, so a tensor's chunks hold only that tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub kind: SegmentKind,
    pub len: u64,
    pub chunk_size: u32,
    pub chunks: ChunkIds,
}

/// The chunk ids of one segment, in file order. A writer gives a segment's new chunks consecutive
/// ids, so nearly every segment is a run `first..first + len` and costs no heap at all; only a
/// segment that reuses a chunk stored earlier (de-duplication) holds a list. A 1.3 TB model at
/// 256 KiB chunks has 5 million chunk ids: 20 MB as lists, a few hundred KB as runs. The two
/// forms of the same ids are equal (`==` compares the ids), and the on-disk form is always the
/// list (docs/FORMAT.md), so this is a memory representation only.
#[derive(Debug, Clone)]
pub enum ChunkIds {
    /// `len` consecutive ids starting at `first` (ids past `u32::MAX` do not exist).
    Run { first: u32, len: u32 },
    /// Any other sequence of ids.
    List(Vec<u32>),
}

impl Default for ChunkIds {
    fn default() -> Self {
        ChunkIds::Run { first: 0, len: 0 }
    }
}

impl ChunkIds {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn len(&self) -> usize {
        match self {
            ChunkIds::Run { len, .. } => *len as usize,
            ChunkIds::List(v) => v.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The `k`-th id, if there is one.
    pub fn get(&self, k: usize) -> Option<u32> {
        match self {
            ChunkIds::Run { first, len } => {
                let k = u32::try_from(k).ok().filter(|k| k < len)?;
                first.checked_add(k)
            }
            ChunkIds::List(v) => v.get(k).copied(),
        }
    }
    pub fn first(&self) -> Option<u32> {
        self.get(0)
    }
    pub fn contains(&self, id: u32) -> bool {
        match self {
            ChunkIds::Run { first, len } => id >= *first && u64::from(id - first) < u64::from(*len),
            ChunkIds::List(v) => v.contains(&id),
        }
    }
    /// Append `id`, keeping the run form while the ids stay consecutive.
    pub fn push(&mut self, id: u32) {
        match self {
            ChunkIds::Run { first, len } if *len == 0 => {
                *first = id;
                *len = 1;
            }
            ChunkIds::Run { first, len } if first.checked_add(*len) == Some(id) => *len += 1,
            ChunkIds::Run { .. } => {
                let mut v = self.to_vec();
                v.push(id);
                *self = ChunkIds::List(v);
            }
            ChunkIds::List(v) => v.push(id),
        }
    }
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        let (first, run, list) = match self {
            ChunkIds::Run { first, len } => (*first, 0..*len, &[][..]),
            ChunkIds::List(v) => (0, 0..0, &v[..]),
        };
        run.map_while(move |k| first.checked_add(k))
            .chain(list.iter().copied())
    }
    pub fn to_vec(&self) -> Vec<u32> {
        self.iter().collect()
    }
    /// Heap bytes this value holds (0 for a run): what the index-memory test counts.
    pub fn heap_bytes(&self) -> usize {
        match self {
            ChunkIds::Run { .. } => 0,
            ChunkIds::List(v) => v.capacity() * std::mem::size_of::<u32>(),
        }
    }
}

impl PartialEq for ChunkIds {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}
impl Eq for ChunkIds {}

impl From<Vec<u32>> for ChunkIds {
    fn from(v: Vec<u32>) -> Self {
        v.into_iter().collect()
    }
}

impl FromIterator<u32> for ChunkIds {
    fn from_iter<I: IntoIterator<Item = u32>>(it: I) -> Self {
        let mut ids = ChunkIds::new();
        for id in it {
            ids.push(id);
        }
        ids
    }
}

impl IntoIterator for ChunkIds {
    type Item = u32;
    type IntoIter = std::vec::IntoIter<u32>;
    fn into_iter(self) -> Self::IntoIter {
        self.to_vec().into_iter()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Relative path, '/'-separated, validated by `validate_path`.
    pub path: String,
    /// Unix permission bits of the original (file type bits stripped).
    pub mode: u32,
    pub size: u64,
    /// SHA-256 of the bytes this archive serves for the file (the original's, when lossless).
    pub sha256: [u8; 32],
    pub segments: Vec<Segment>,
}

/// The whole index: chunk table, files, and a JSON metadata block.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Index {
    pub chunks: Vec<ChunkRecord>,
    pub files: Vec<FileEntry>,
    /// Free-form JSON (tool version, pack options, lossy statistics); "{}" at least.
    pub meta: String,
}

impl Index {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(16 + self.chunks.len() * CHUNK_RECORD_LEN + self.meta.len());
        b.extend_from_slice(&(self.chunks.len() as u32).to_le_bytes());
        b.extend_from_slice(&(self.files.len() as u32).to_le_bytes());
        for c in &self.chunks {
            b.extend_from_slice(&c.offset.to_le_bytes());
            b.extend_from_slice(&c.stored_len.to_le_bytes());
            b.extend_from_slice(&c.decoded_len.to_le_bytes());
            b.push(c.codec_id);
            b.push(c.codec_param);
            b.extend_from_slice(&0u16.to_le_bytes());
            b.extend_from_slice(&c.stored_hash.to_le_bytes());
            b.extend_from_slice(&c.decoded_hash.to_le_bytes());
        }
        for f in &self.files {
            b.extend_from_slice(&(f.path.len() as u16).to_le_bytes());
            b.extend_from_slice(f.path.as_bytes());
            b.extend_from_slice(&f.mode.to_le_bytes());
            b.extend_from_slice(&f.size.to_le_bytes());
            b.extend_from_slice(&f.sha256);
            b.extend_from_slice(&(f.segments.len() as u32).to_le_bytes());
            for s in &f.segments {
                b.push(s.kind as u8);
                b.extend_from_slice(&s.len.to_le_bytes());
                b.extend_from_slice(&s.chunk_size.to_le_bytes());
                b.extend_from_slice(&(s.chunks.len() as u32).to_le_bytes());
                for id in s.chunks.iter() {
                    b.extend_from_slice(&id.to_le_bytes());
                }
            }
        }
        b.extend_from_slice(&(self.meta.len() as u32).to_le_bytes());
        b.extend_from_slice(self.meta.as_bytes());
        b
    }

    /// Parse and fully validate an index whose chunk data must lie in `[SUPERBLOCK_LEN, data_end)`.
    /// The same checks, in the same order, as the streaming path of the reader: the head
    /// ([`parse_index_head`]), each record ([`parse_chunk_record`]), then files and metadata
    /// ([`parse_index_tail`]).
    pub fn parse(b: &[u8], data_end: u64) -> Result<Index, FormatError> {
        let head = parse_index_head(b, b.len() as u64)?;
        let records = b.get(INDEX_HEAD_LEN..).unwrap_or_default();
        let mut chunks = Vec::with_capacity(head.n_chunks as usize);
        let mut prev_end = SUPERBLOCK_LEN as u64;
        for (id, rec) in (0..head.n_chunks).zip(records.chunks_exact(CHUNK_RECORD_LEN)) {
            chunks.push(parse_chunk_record(rec, id, &mut prev_end, data_end)?);
        }
        // parse_index_head capped the count by the bytes present, so the table is whole.
        let tail = records
            .get(head.records_len()..)
            .ok_or(FormatError::Truncated("chunk table"))?;
        let (files, meta) = parse_index_tail(tail, &head, |id| {
            chunks.get(id as usize).map(|c| c.decoded_len)
        })?;
        Ok(Index {
            chunks,
            files,
            meta,
        })
    }
}

/// Bytes before the first chunk record: chunk count (4) + file count (4).
pub const INDEX_HEAD_LEN: usize = 8;

/// The counts at the start of an index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexHead {
    pub n_chunks: u32,
    pub n_files: u32,
}

impl IndexHead {
    /// Bytes of the chunk table (cannot overflow: [`parse_index_head`] capped the count by the
    /// index length, itself a usize-sized buffer or at most [`MAX_INDEX_LEN`]).
    pub fn records_len(&self) -> usize {
        self.n_chunks as usize * CHUNK_RECORD_LEN
    }
}

/// Parse the head of an index of `index_len` bytes (`b` holds at least its first
/// [`INDEX_HEAD_LEN`] bytes, or all of a shorter index). The chunk count is capped by the bytes
/// that follow before anyone allocates by it.
pub fn parse_index_head(b: &[u8], index_len: u64) -> Result<IndexHead, FormatError> {
    let mut r = Cursor::new(b);
    let n_chunks = r.u32("chunk count")?;
    let n_files = r.u32("file count")?;
    let max_chunks = index_len.saturating_sub(INDEX_HEAD_LEN as u64) / CHUNK_RECORD_LEN as u64;
    if u64::from(n_chunks) > max_chunks {
        return Err(FormatError::Truncated("chunk table"));
    }
    Ok(IndexHead { n_chunks, n_files })
}

/// Parse what follows the chunk table: the file entries (each checked against the chunk table
/// through `decoded_len`, the decoded length of chunk `id` or `None` past the table) and the
/// metadata block. `b` runs exactly to the end of the index.
pub fn parse_index_tail(
    b: &[u8],
    head: &IndexHead,
    decoded_len: impl Fn(u32) -> Option<u32>,
) -> Result<(Vec<FileEntry>, String), FormatError> {
    let mut r = Cursor::new(b);
    let n_files = head.n_files;
    // Each file needs at least 2+4+8+32+4 bytes.
    if n_files as usize > r.remaining() / 50 {
        return Err(FormatError::Truncated("file table"));
    }
    let mut files = Vec::with_capacity(n_files as usize);
    let mut seen = HashSet::new();
    for index in 0..n_files {
        files.push(parse_file(&mut r, index, &decoded_len, &mut seen)?);
    }
    check_no_file_is_directory(&files)?;
    let meta_len = r.u32("metadata length")? as usize;
    if meta_len > MAX_META_LEN {
        return Err(FormatError::MetaTooLarge { len: meta_len });
    }
    let meta = std::str::from_utf8(r.bytes(meta_len, "metadata")?)
        .map_err(|_| FormatError::MetaNotUtf8)?
        .to_owned();
    if r.remaining() != 0 {
        return Err(FormatError::TrailingBytes(r.remaining()));
    }
    Ok((files, meta))
}

/// A path must not be both a file and a directory ("a" and "a/b"). Sorted with '/' below
/// every other byte (paths hold no NUL), the paths that start with "a/" come right after
/// "a", so comparing neighbours finds every clash: O(bytes x log files), where looking up
/// each parent of each path was quadratic in the depth.
fn check_no_file_is_directory(files: &[FileEntry]) -> Result<(), FormatError> {
    let key = |i: &u32| {
        files[*i as usize]
            .path
            .bytes()
            .map(|b| if b == b'/' { 0 } else { b })
    };
    let mut order: Vec<u32> = (0..files.len() as u32).collect();
    order.sort_unstable_by(|a, b| key(a).cmp(key(b)));
    for w in order.windows(2) {
        let (parent, child) = (&files[w[0] as usize].path, &files[w[1] as usize].path);
        if child.len() > parent.len()
            && child.as_bytes()[parent.len()] == b'/'
            && child.starts_with(parent.as_str())
        {
            return Err(FormatError::BadFile {
                index: w[0],
                path: parent.clone(),
                reason: BadFile::FileIsDirectory {
                    child: child.clone(),
                },
            });
        }
    }
    Ok(())
}

/// Chunk record `id` (its [`CHUNK_RECORD_LEN`] bytes in `b`), checked against the previous
/// record's end `prev_end` (the superblock's end for the first; advanced on success) and the end
/// of the data area.
pub fn parse_chunk_record(
    b: &[u8],
    id: u32,
    prev_end: &mut u64,
    data_end: u64,
) -> Result<ChunkRecord, FormatError> {
    let r = &mut Cursor::new(b);
    let bad = |reason: BadChunk| FormatError::BadChunk { id, reason };
    let offset = r.u64("chunk offset")?;
    let stored_len = r.u32("chunk stored length")?;
    let decoded_len = r.u32("chunk decoded length")?;
    let codec_id = r.u8("chunk codec")?;
    let codec_param = r.u8("chunk codec")?;
    let flags = r.u16("chunk flags")?;
    let stored_hash = r.u64("chunk hash")?;
    let decoded_hash = r.u64("chunk hash")?;
    let end = offset
        .checked_add(u64::from(stored_len))
        .ok_or(bad(BadChunk::OffsetOverflow))?;
    if offset < *prev_end {
        return Err(bad(BadChunk::Overlap { offset }));
    }
    if end > data_end {
        return Err(bad(BadChunk::PastDataArea {
            offset,
            end,
            data_end,
        }));
    }
    if decoded_len > MAX_CHUNK_LEN || stored_len > MAX_CHUNK_LEN.saturating_mul(2) {
        return Err(bad(BadChunk::TooLong {
            decoded_len,
            stored_len,
        }));
    }
    // A chunk flag could only mean a different way to decode; a reader that does not
    // know it must refuse rather than serve bytes decoded the old way.
    if flags != 0 {
        return Err(bad(BadChunk::UnknownFlags(flags)));
    }
    crate::codec::Codec::from_id(codec_id, codec_param).map_err(|_| {
        bad(BadChunk::UnknownCodec {
            id: codec_id,
            param: codec_param,
        })
    })?;
    *prev_end = end;
    Ok(ChunkRecord {
        offset,
        stored_len,
        decoded_len,
        codec_id,
        codec_param,
        stored_hash,
        decoded_hash,
    })
}

/// One file entry, its path checked and its segments checked against the chunk table
/// (`decoded_len` of each id).
fn parse_file(
    r: &mut Cursor<'_>,
    index: u32,
    decoded_len: &impl Fn(u32) -> Option<u32>,
    seen: &mut HashSet<String>,
) -> Result<FileEntry, FormatError> {
    let path_len = r.u16("path length")? as usize;
    let raw = r.bytes(path_len, "path")?;
    let path = String::from_utf8_lossy(raw).into_owned();
    let bad = |reason: BadFile| FormatError::BadFile {
        index,
        path: path.clone(),
        reason,
    };
    if std::str::from_utf8(raw).is_err() {
        return Err(bad(BadFile::PathNotUtf8));
    }
    validate_path(&path).map_err(|e| bad(BadFile::Path(e)))?;
    if !seen.insert(path.clone()) {
        return Err(bad(BadFile::DuplicatePath));
    }
    let mode = r.u32("mode")?;
    let size = r.u64("size")?;
    let sha256: [u8; 32] = r
        .bytes(32, "sha256")?
        .try_into()
        .map_err(|_| FormatError::Truncated("sha256"))?;
    let n_seg = r.u32("segment count")?;
    // A segment needs at least 1+8+4+4 bytes.
    if n_seg as usize > r.remaining() / 17 {
        return Err(FormatError::Truncated("segment table"));
    }
    let mut segments = Vec::with_capacity(n_seg as usize);
    let mut total: u64 = 0;
    for s in 0..n_seg {
        let kind = match r.u8("segment kind")? {
            0 => SegmentKind::Plain,
            1 => SegmentKind::StHeader,
            2 => SegmentKind::Tensor,
            3 => SegmentKind::GgufHeader,
            kind => {
                return Err(bad(BadFile::UnknownSegmentKind { segment: s, kind }));
            }
        };
        let len = r.u64("segment length")?;
        let chunk_size = r.u32("segment chunk size")?;
        let n = r.u32("segment chunk count")?;
        if chunk_size == 0 || chunk_size > MAX_CHUNK_LEN {
            return Err(bad(BadFile::ChunkSize {
                segment: s,
                chunk_size,
            }));
        }
        let expect = len.div_ceil(u64::from(chunk_size));
        if u64::from(n) != expect {
            return Err(bad(BadFile::ChunkCount {
                segment: s,
                count: n,
                len,
                chunk_size,
            }));
        }
        if n as usize > r.remaining() / 4 {
            return Err(FormatError::Truncated("segment chunk list"));
        }
        let mut ids = ChunkIds::new();
        for k in 0..u64::from(n) {
            let id = r.u32("chunk id")?;
            let got = decoded_len(id)
                .ok_or_else(|| bad(BadFile::ChunkIdOutOfRange { segment: s, id }))?;
            let want = (len - k * u64::from(chunk_size)).min(u64::from(chunk_size));
            if u64::from(got) != want {
                return Err(bad(BadFile::ChunkLen {
                    segment: s,
                    id,
                    decoded_len: got,
                    expected: want,
                }));
            }
            ids.push(id);
        }
        total = total
            .checked_add(len)
            .ok_or_else(|| bad(BadFile::SegmentsOverflow))?;
        segments.push(Segment {
            kind,
            len,
            chunk_size,
            chunks: ids,
        });
    }
    if total != size {
        return Err(bad(BadFile::SizeMismatch {
            covered: total,
            size,
        }));
    }
    Ok(FileEntry {
        path,
        mode,
        size,
        sha256,
        segments,
    })
}

/// A relative path is safe when it names something strictly inside the mount: non-empty, no
/// leading '/', no empty, "." or ".." component, no NUL, not too long.
pub fn validate_path(p: &str) -> Result<(), PathError> {
    if p.is_empty() {
        return Err(PathError::Empty);
    }
    if p.len() > MAX_PATH_LEN {
        return Err(PathError::TooLong);
    }
    if p.contains('\0') {
        return Err(PathError::Nul);
    }
    if p.starts_with('/') {
        return Err(PathError::Absolute);
    }
    for c in p.split('/') {
        match c {
            "" => return Err(PathError::EmptyComponent),
            "." | ".." => return Err(PathError::DotComponent),
            _ => {}
        }
        if c.len() > 255 {
            return Err(PathError::ComponentTooLong);
        }
    }
    Ok(())
}

impl From<Short> for FormatError {
    fn from(s: Short) -> Self {
        FormatError::Truncated(s.what)
    }
}

//! Random-access reader: `Archive::open` validates the footer and the whole index up front, then
//! `read_at(file, offset, buf)` serves any range, thread-safe from `&self`.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use xxhash_rust::xxh3::xxh3_64;

use super::ArchiveError;
use crate::cache::{Bytes, CacheStats, ChunkCache};
use crate::codec::Codec;
use crate::disk_cache::{DiskCache, Namespace};
use crate::format::{self, ChunkRecord, FileEntry, Footer, Index, SegmentKind};
use crate::storage::{FileStorage, Storage, StorageError};

/// Default decoded-chunk cache for library users: 64 MiB holds 256 chunks of 256 KiB, enough for a
/// few concurrent sequential readers; the mount picks its own budget from available memory.
pub const DEFAULT_CACHE_BYTES: usize = 64 << 20;

#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// Decoded-chunk cache budget in bytes.
    pub cache_bytes: usize,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            cache_bytes: DEFAULT_CACHE_BYTES,
        }
    }
}

/// One chunk's share of a read: the chunk, and where its decoded bytes start in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkSpan {
    pub chunk: u32,
    /// File offset of the chunk's first decoded byte.
    pub file_offset: u64,
    pub len: u32,
}

pub struct Archive {
    /// What messages call the archive: its path, or the storage's description.
    path: PathBuf,
    storage: Arc<dyn Storage>,
    len: u64,
    footer: Footer,
    /// The index's metadata block, parsed at open.
    meta: super::ArchiveMeta,
    index: Index,
    /// Per file, per segment: the file offset where the segment starts (for binary search).
    seg_starts: Vec<Vec<u64>>,
    cache: ChunkCache<ArchiveError>,
    /// Persistent cache of stored chunks (remote archives with `--cache-dir`), set once.
    disk: std::sync::OnceLock<(Arc<DiskCache>, Namespace)>,
}

impl Archive {
    pub fn open(path: impl AsRef<Path>) -> Result<Archive, ArchiveError> {
        Self::open_with(path, OpenOptions::default())
    }

    /// Open the local file at `path` (a regular file only; a FIFO or device is refused without
    /// blocking, see [`FileStorage::open`]).
    pub fn open_with(path: impl AsRef<Path>, opts: OpenOptions) -> Result<Archive, ArchiveError> {
        let path = path.as_ref();
        let storage = FileStorage::open(path).map_err(|e| storage_err(path, e))?;
        Self::open_storage(Arc::new(storage), opts)
    }

    /// Open an archive from any positioned-read source. Every check the reader makes (footer,
    /// index, chunk hashes before the cache) is the same whatever the backend.
    pub fn open_storage(
        storage: Arc<dyn Storage>,
        opts: OpenOptions,
    ) -> Result<Archive, ArchiveError> {
        let path = PathBuf::from(storage.describe());
        let len = storage.len();
        let fmt_err = |source| ArchiveError::Format {
            path: path.clone(),
            source,
        };
        if len < (format::SUPERBLOCK_LEN + format::FOOTER_LEN) as u64 {
            return Err(fmt_err(format::FormatError::TooShort { len }));
        }
        let mut sb = [0u8; format::SUPERBLOCK_LEN];
        storage
            .read_exact_at(&mut sb, 0)
            .map_err(|e| storage_err(&path, e))?;
        let mut fb = [0u8; format::FOOTER_LEN];
        storage
            .read_exact_at(&mut fb, len - format::FOOTER_LEN as u64)
            .map_err(|e| storage_err(&path, e))?;
        let footer = format::parse_frame(&sb, &fb, len).map_err(fmt_err)?;
        let ib = read_index(storage.as_ref(), &footer).map_err(|e| match e {
            IndexReadError::Storage(e) => storage_err(&path, e),
            IndexReadError::Format(e) => fmt_err(e),
            IndexReadError::Alloc(n) => ArchiveError::Io {
                path: path.clone(),
                msg: format!("cannot allocate {n} bytes for the index"),
                kind: std::io::ErrorKind::OutOfMemory,
            },
        })?;
        let index = Index::parse(&ib, footer.index_offset).map_err(fmt_err)?;
        let seg_starts = index
            .files
            .iter()
            .map(|f| {
                let mut at = 0u64;
                f.segments
                    .iter()
                    .map(|s| {
                        let start = at;
                        at += s.len; // cannot overflow: parse checked the sum
                        start
                    })
                    .collect()
            })
            .collect();
        Ok(Archive {
            path,
            storage,
            len,
            footer,
            meta: super::ArchiveMeta::parse(&index.meta),
            index,
            seg_starts,
            cache: ChunkCache::new(opts.cache_bytes),
            disk: std::sync::OnceLock::new(),
        })
    }

    /// The archive's path (for a non-file storage: its description).
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// The source the archive's bytes are read from.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }
    /// Size of the archive file in bytes.
    pub fn archive_len(&self) -> u64 {
        self.len
    }
    pub fn format_minor(&self) -> u16 {
        self.footer.minor
    }
    pub fn index(&self) -> &Index {
        &self.index
    }
    pub fn files(&self) -> &[FileEntry] {
        &self.index.files
    }
    pub fn chunks(&self) -> &[ChunkRecord] {
        &self.index.chunks
    }
    /// The archive's metadata block, parsed at open (empty when unparsable: see
    /// [`super::meta`]).
    pub fn meta(&self) -> &super::ArchiveMeta {
        &self.meta
    }
    pub fn file_index(&self, path: &str) -> Option<usize> {
        self.index.files.iter().position(|f| f.path == path)
    }
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }
    pub fn cache(&self) -> &ChunkCache<ArchiveError> {
        &self.cache
    }
    /// Keep the stored bytes of every chunk fetched from now on in `cache` too, and look there
    /// first (each entry checked against the chunk's record before use). Once per archive.
    pub fn use_disk_cache(&self, cache: Arc<DiskCache>) -> std::io::Result<()> {
        let ns = cache.namespace(&self.storage.describe(), self.len, self.footer.index_hash)?;
        let _ = self.disk.set((cache, ns));
        Ok(())
    }

    /// The persistent cache in use, if any.
    pub fn disk_cache(&self) -> Option<&Arc<DiskCache>> {
        self.disk.get().map(|(c, _)| c)
    }

    /// The chunk's stored bytes from the persistent cache, if there and intact.
    fn from_disk(&self, id: u32, rec: &ChunkRecord) -> Option<Vec<u8>> {
        let (c, ns) = self.disk.get()?;
        c.get(ns, id, rec.stored_len, rec.stored_hash)
    }

    /// Check and decode stored bytes fetched from the storage; keep them in the persistent
    /// cache if they pass.
    fn check_decode_fetched(
        &self,
        id: u32,
        rec: &ChunkRecord,
        stored: &[u8],
    ) -> Result<Vec<u8>, ArchiveError> {
        let r = self.check_decode(id, rec, stored);
        if r.is_ok()
            && let Some((c, ns)) = self.disk.get()
        {
            c.put(ns, id, stored);
        }
        r
    }

    /// True when every chunk uses a lossless codec.
    pub fn is_lossless(&self) -> bool {
        self.index.chunks.iter().all(|c| {
            Codec::from_id(c.codec_id, c.codec_param)
                .map(|c| c.is_lossless())
                .unwrap_or(true)
        })
    }

    /// Read the chunk's stored bytes, check them, decode, check the result. No cache.
    pub fn decode_chunk_uncached(&self, id: u32) -> Result<Vec<u8>, ArchiveError> {
        let rec = *self
            .index
            .chunks
            .get(id as usize)
            .ok_or(ArchiveError::NoSuchChunk { chunk: id })?;
        if let Some(stored) = self.from_disk(id, &rec) {
            return self.check_decode(id, &rec, &stored);
        }
        STORED.with_borrow_mut(|stored| {
            // Reused per thread: a fresh 100-300 KiB buffer per chunk is above glibc's mmap
            // threshold, so each one would be mapped, page-faulted and zeroed, then unmapped.
            stored.resize(rec.stored_len as usize, 0);
            self.storage
                .read_exact_at(stored, rec.offset)
                .map_err(|e| storage_err(&self.path, e))?;
            self.check_decode_fetched(id, &rec, stored)
        })
    }

    /// Check a chunk's stored bytes, decode them, check the result.
    fn check_decode(
        &self,
        id: u32,
        rec: &ChunkRecord,
        stored: &[u8],
    ) -> Result<Vec<u8>, ArchiveError> {
        let (archive, offset) = (self.path.clone(), rec.offset);
        if xxh3_64(stored) != rec.stored_hash {
            return Err(ArchiveError::StoredChecksum {
                archive,
                chunk: id,
                offset,
            });
        }
        // from_id cannot fail: Index::parse checked every codec id.
        let codec = Codec::from_id(rec.codec_id, rec.codec_param).map_err(|source| {
            ArchiveError::Decode {
                archive: archive.clone(),
                chunk: id,
                offset,
                source,
            }
        })?;
        let mut out = self.cache.spare_buffer(rec.decoded_len as usize);
        codec
            .decode(stored, &mut out)
            .map_err(|source| ArchiveError::Decode {
                archive: archive.clone(),
                chunk: id,
                offset,
                source,
            })?;
        if xxh3_64(&out) != rec.decoded_hash {
            return Err(ArchiveError::DecodedChecksum {
                archive,
                chunk: id,
                offset,
            });
        }
        Ok(out)
    }

    /// Group `ids` (in the order given) into runs of chunks whose stored bytes follow each other
    /// in the archive, each run at most `limit` stored bytes (a single chunk larger than that is a
    /// run of its own). Unknown ids are skipped. For read-ahead over remote storage: one range
    /// request per run instead of one per chunk (see [`Storage::coalesce_limit`]).
    pub fn stored_runs(&self, ids: &[u32], limit: usize) -> Vec<Vec<u32>> {
        let mut runs: Vec<Vec<u32>> = Vec::new();
        let mut run_end = 0u64;
        let mut run_len = 0u64;
        for &id in ids {
            let Some(rec) = self.index.chunks.get(id as usize) else {
                continue;
            };
            let n = u64::from(rec.stored_len);
            match runs.last_mut() {
                Some(r) if rec.offset == run_end && run_len + n <= limit as u64 => {
                    r.push(id);
                    run_len += n;
                }
                _ => {
                    runs.push(vec![id]);
                    run_len = n;
                }
            }
            run_end = rec.offset + n; // cannot overflow: parse checked chunks lie in the file
        }
        runs
    }

    /// Fetch the stored bytes of a run from [`Archive::stored_runs`] and check and decode each
    /// of its chunks into the cache. The chunks are claimed in the cache when the fetch starts:
    /// those cached or being produced by then are skipped (the run splits around them, one
    /// storage read per contiguous piece), and a reader asking for a claimed chunk waits for
    /// this fetch rather than reading the bytes again. Every check of [`Archive::chunk`]
    /// applies; the first failure is returned (a storage failure abandons the piece's claims,
    /// so waiting readers fetch and report for themselves).
    pub fn fetch_run(&self, ids: &[u32]) -> Result<(), ArchiveError> {
        let known: Vec<u32> = ids
            .iter()
            .copied()
            .filter(|&id| (id as usize) < self.index.chunks.len())
            .collect();
        let mut result = Ok(());
        let mut claims = Vec::new();
        for claim in self.cache.claim(&known) {
            let id = claim.id();
            let rec = self.index.chunks[id as usize];
            match self.from_disk(id, &rec) {
                Some(stored) => {
                    let r = claim.fill(self.check_decode(id, &rec, &stored).map(Bytes::new));
                    if let (Err(e), Ok(())) = (r, &result) {
                        result = Err(e);
                    }
                }
                None => claims.push(claim),
            }
        }
        // One storage read per piece of claims whose stored bytes follow each other.
        let ids: Vec<u32> = claims.iter().map(|c| c.id()).collect();
        let mut claims = claims.into_iter();
        for run in self.stored_runs(&ids, usize::MAX) {
            let piece: Vec<_> = claims.by_ref().take(run.len()).collect();
            let start = self.index.chunks[run[0] as usize].offset;
            let last = self.index.chunks[run[run.len() - 1] as usize];
            let end = last.offset + u64::from(last.stored_len);
            let mut buf = vec![0u8; (end - start) as usize];
            if let Err(e) = self.storage.read_exact_at(&mut buf, start) {
                if result.is_ok() {
                    result = Err(storage_err(&self.path, e));
                }
                continue; // `piece` drops here: its claims are abandoned
            }
            for claim in piece {
                let id = claim.id();
                let rec = self.index.chunks[id as usize];
                let from = (rec.offset - start) as usize;
                let stored = &buf[from..from + rec.stored_len as usize];
                let r = claim.fill(self.check_decode_fetched(id, &rec, stored).map(Bytes::new));
                if let (Err(e), Ok(())) = (r, &result) {
                    result = Err(e);
                }
            }
        }
        result
    }

    /// The decoded chunk, through the cache (decoded once however many threads ask).
    pub fn chunk(&self, id: u32) -> Result<Bytes, ArchiveError> {
        self.cache
            .get_or_decode(id, || self.decode_chunk_uncached(id).map(Bytes::new))
    }

    /// The chunks covering `[offset, offset+len)` of file `file`, clamped to the file size.
    pub fn spans(
        &self,
        file: usize,
        offset: u64,
        len: u64,
    ) -> Result<Vec<ChunkSpan>, ArchiveError> {
        let f = self
            .index
            .files
            .get(file)
            .ok_or(ArchiveError::NoSuchFile { file })?;
        let end = offset.saturating_add(len).min(f.size);
        let mut out = Vec::new();
        if offset >= end {
            return Ok(out);
        }
        let starts = &self.seg_starts[file];
        // Last segment whose start is <= offset (zero-length segments are skipped by the loop).
        let mut si = starts.partition_point(|&s| s <= offset).saturating_sub(1);
        let mut pos = offset;
        while pos < end && si < f.segments.len() {
            let seg = &f.segments[si];
            let seg_start = starts[si];
            let seg_end = seg_start + seg.len;
            if pos < seg_end {
                let cs = u64::from(seg.chunk_size);
                let mut k = (pos - seg_start) / cs;
                while pos < end && pos < seg_end {
                    let cstart = seg_start + k * cs;
                    let clen = cs.min(seg_end - cstart);
                    out.push(ChunkSpan {
                        chunk: seg.chunks[k as usize],
                        file_offset: cstart,
                        len: clen as u32,
                    });
                    pos = cstart + clen;
                    k += 1;
                }
            }
            si += 1;
        }
        Ok(out)
    }

    /// Read up to `buf.len()` bytes of file `file` at `offset`. Returns the number of bytes read:
    /// short only at end of file (0 at or past EOF). A damaged chunk fails the whole read with an
    /// error naming the file and the offset of the damaged chunk; no bytes are returned as valid.
    pub fn read_at(&self, file: usize, offset: u64, buf: &mut [u8]) -> Result<usize, ArchiveError> {
        let spans = self.spans(file, offset, buf.len() as u64)?;
        let mut n = 0usize;
        for s in spans {
            let data = self.chunk(s.chunk).map_err(|e| ArchiveError::Read {
                file: self.index.files[file].path.clone(),
                offset: s.file_offset.max(offset),
                source: Box::new(e),
            })?;
            let from = (offset + n as u64 - s.file_offset) as usize;
            let take = (s.len as usize - from).min(buf.len() - n);
            buf[n..n + take].copy_from_slice(&data[from..from + take]);
            n += take;
        }
        Ok(n)
    }

    /// Call `f` with the bytes of file `file` in `[offset, offset + len)`, clamped to the file
    /// size (empty at or past EOF). A range inside one chunk is handed out as a slice of the
    /// cached chunk, without a copy; a range over several chunks is assembled in a per-thread
    /// buffer that is reused from call to call (a fresh buffer per FUSE request would be
    /// page-faulted and zeroed each time). Errors as in [`Archive::read_at`].
    pub fn read_with<R>(
        &self,
        file: usize,
        offset: u64,
        len: usize,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<R, ArchiveError> {
        let spans = self.spans(file, offset, len as u64)?;
        match spans.as_slice() {
            [] => Ok(f(&[])),
            [s] => {
                let data = self.chunk(s.chunk).map_err(|e| ArchiveError::Read {
                    file: self.index.files[file].path.clone(),
                    offset: s.file_offset.max(offset),
                    source: Box::new(e),
                })?;
                // offset >= s.file_offset and the span is clamped to the read: in bounds.
                let from = (offset - s.file_offset) as usize;
                let take = (s.len as usize - from).min(len);
                Ok(f(&data[from..from + take]))
            }
            [.., last] => {
                // Spans lie inside the file and cover the read (clamped), so end > offset and
                // end - offset <= len.
                let end = last
                    .file_offset
                    .saturating_add(u64::from(last.len))
                    .min(offset.saturating_add(len as u64));
                let n = usize::try_from(end.saturating_sub(offset)).unwrap_or(len);
                ASSEMBLE.with_borrow_mut(|buf| {
                    buf.resize(n, 0);
                    let got = self.read_at(file, offset, &mut buf[..n])?;
                    Ok(f(&buf[..got]))
                })
            }
        }
    }

    /// Tensor segments of a safetensors file in header order, with their stored/decoded sizes.
    pub fn segment_sizes(&self, file: usize) -> Vec<(SegmentKind, u64, u64, Option<Codec>)> {
        let Some(f) = self.index.files.get(file) else {
            return Vec::new();
        };
        f.segments
            .iter()
            .map(|s| {
                let stored: u64 = s
                    .chunks
                    .iter()
                    .map(|&c| u64::from(self.index.chunks[c as usize].stored_len))
                    .sum();
                let codec = s.chunks.first().and_then(|&c| {
                    let r = &self.index.chunks[c as usize];
                    Codec::from_id(r.codec_id, r.codec_param).ok()
                });
                (s.kind, s.len, stored, codec)
            })
            .collect()
    }
}

/// Why [`read_index`] failed.
enum IndexReadError {
    Storage(StorageError),
    Format(format::FormatError),
    /// The allocator refused this many bytes.
    Alloc(usize),
}

/// Indexes up to this size are read and hashed in one piece; larger ones are hashed in pieces of
/// this size first (8 MiB: the index of a ~50 GB model at 256 KiB chunks; a second read of it
/// costs milliseconds).
const INDEX_PIECE: usize = 8 << 20;

/// Read the index the footer names, checking its hash before the whole of it is held in memory:
/// `parse_footer` bounded it by the file's length and [`format::MAX_INDEX_LEN`]; an index larger
/// than [`INDEX_PIECE`] is first hashed in pieces, so a forged footer over a large (sparse) file
/// costs reading the claimed range but never memory of its size. The buffer is then reserved
/// fallibly (an allocation failure is an error, not an abort), read again and hashed again (the
/// file could have changed between the two reads).
fn read_index(storage: &dyn Storage, footer: &Footer) -> Result<Vec<u8>, IndexReadError> {
    let bad_hash = || IndexReadError::Format(format::FormatError::IndexChecksum);
    let ilen = usize::try_from(footer.index_len).map_err(|_| {
        IndexReadError::Format(format::FormatError::IndexTooLarge {
            len: footer.index_len,
            max: format::MAX_INDEX_LEN,
        })
    })?;
    if ilen > INDEX_PIECE {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        let mut piece = vec![0u8; INDEX_PIECE];
        let mut at = 0usize;
        while at < ilen {
            let n = INDEX_PIECE.min(ilen - at);
            storage
                .read_exact_at(&mut piece[..n], footer.index_offset + at as u64)
                .map_err(IndexReadError::Storage)?;
            h.update(&piece[..n]);
            at += n;
        }
        if h.digest() != footer.index_hash {
            return Err(bad_hash());
        }
    }
    let mut ib = Vec::new();
    ib.try_reserve_exact(ilen)
        .map_err(|_| IndexReadError::Alloc(ilen))?;
    ib.resize(ilen, 0);
    storage
        .read_exact_at(&mut ib, footer.index_offset)
        .map_err(IndexReadError::Storage)?;
    if xxh3_64(&ib) != footer.index_hash {
        return Err(bad_hash());
    }
    Ok(ib)
}

/// A storage failure as an archive error, keeping its kind (the mount maps it to `EIO`).
fn storage_err(path: &Path, e: StorageError) -> ArchiveError {
    ArchiveError::Io {
        path: path.to_path_buf(),
        msg: e.msg,
        kind: e.kind,
    }
}

thread_local! {
    /// Stored bytes of the chunk being decoded on this thread (see `decode_chunk_uncached`).
    static STORED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// Reply buffer for reads over several chunks (see [`Archive::read_with`]).
    static ASSEMBLE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Read a whole stored file (for `unpack`, `verify` and tests).
pub fn read_all(a: &Archive, file: usize) -> Result<Vec<u8>, ArchiveError> {
    let size = a
        .files()
        .get(file)
        .ok_or(ArchiveError::NoSuchFile { file })?
        .size;
    let mut buf = vec![0u8; usize::try_from(size).unwrap_or(usize::MAX)];
    let n = a.read_at(file, 0, &mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

impl std::fmt::Debug for Archive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Archive")
            .field("path", &self.path)
            .field("files", &self.index.files.len())
            .finish()
    }
}

/// Shared handle used by the mount and benches.
pub type SharedArchive = Arc<Archive>;

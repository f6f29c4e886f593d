//! Random-access reader: `Archive::open` validates the footer and the whole index up front, then
//! `read_at(file, offset, buf)` serves any range, thread-safe from `&self`.
//!
//! The reader keeps the file table (segments as id runs) and per-segment sizes, but not the chunk
//! table: records are read back on demand in checked pages through a bounded LRU
//! ([`super::records`], which says why), so index memory stays bounded however many chunks an
//! archive has. Use [`Archive::chunk_record`], [`Archive::chunk_count`] and
//! [`Archive::chunk_records`] (streaming, for verify and inspect).

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use xxhash_rust::xxh3::xxh3_64;

use super::ArchiveError;
use super::records::{self, LoadError, RecordError, RecordTable};
use crate::cache::{Bytes, CacheStats, ChunkCache};
use crate::codec::Codec;
use crate::disk_cache::{DiskCache, Namespace};
use crate::format::{self, ChunkRecord, FileEntry, Footer, SegmentKind};
use crate::storage::{FileStorage, Storage, StorageError};

/// Default decoded-chunk cache for library users: 64 MiB holds 256 chunks of 256 KiB, enough for a
/// few concurrent sequential readers; the mount picks its own budget from available memory.
pub const DEFAULT_CACHE_BYTES: usize = 64 << 20;

/// Key of a decoded chunk in a cache: (the archive's tag from [`ChunkCache::register`], chunk id).
pub type ChunkKey = (u32, u32);

/// A decoded-chunk cache that several archives can share: one byte budget for all of them (a
/// mount of several archives), each archive's chunks keyed by its own tag.
pub type SharedCache = Arc<ChunkCache<ArchiveError, ChunkKey>>;

/// A new [`SharedCache`] of `budget` decoded bytes.
pub fn shared_cache(budget: usize) -> SharedCache {
    Arc::new(ChunkCache::new(budget))
}

#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// Decoded-chunk cache budget in bytes (ignored when `shared_cache` is set).
    pub cache_bytes: usize,
    /// Use this cache, shared with other archives, instead of one of `cache_bytes` of its own.
    pub shared_cache: Option<SharedCache>,
    /// Budget of resident chunk-record pages in bytes (at least one page is kept; see
    /// [`records::DEFAULT_RECORD_CACHE_BYTES`]).
    pub record_cache_bytes: usize,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            cache_bytes: DEFAULT_CACHE_BYTES,
            shared_cache: None,
            record_cache_bytes: records::DEFAULT_RECORD_CACHE_BYTES,
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

/// A read's chunk spans, computed once by [`Archive::plan`] and handed to everything that
/// serves the read (the decode scheduler, [`Archive::read_planned`]). The range is clamped to
/// the file: `offset..end`, empty at or past EOF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadPlan {
    file: usize,
    offset: u64,
    end: u64,
    spans: Vec<ChunkSpan>,
}

impl ReadPlan {
    pub fn file(&self) -> usize {
        self.file
    }
    pub fn offset(&self) -> u64 {
        self.offset
    }
    /// End of the range, clamped to the file size (`offset` when empty).
    pub fn end(&self) -> u64 {
        self.end
    }
    /// The chunks covering `offset..end`, in file order.
    pub fn spans(&self) -> &[ChunkSpan] {
        &self.spans
    }
}

pub struct Archive {
    /// What messages call the archive: its path, or the storage's description.
    path: PathBuf,
    storage: Arc<dyn Storage>,
    len: u64,
    footer: Footer,
    /// The index's metadata block, parsed at open.
    meta: super::ArchiveMeta,
    files: Vec<FileEntry>,
    /// The chunk table, paged (see [`super::records`]).
    records: RecordTable,
    /// Per file, per segment: the file offset where the segment starts (for binary search).
    seg_starts: Vec<Vec<u64>>,
    /// Per file, per segment: stored bytes of its chunks (computed at open).
    seg_stored: Vec<Vec<u64>>,
    lossless: bool,
    /// Decoded chunks, keyed `(tag, id)`: this archive's own cache or one shared with others.
    cache: SharedCache,
    tag: u32,
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
        let loaded = records::load(storage.as_ref(), &footer, opts.record_cache_bytes).map_err(
            |e| match e {
                LoadError::Storage(e) => storage_err(&path, e),
                LoadError::Format(e) => fmt_err(e),
                LoadError::Alloc(n) => ArchiveError::Io {
                    path: path.clone(),
                    msg: format!("cannot allocate {n} bytes for the index"),
                    kind: std::io::ErrorKind::OutOfMemory,
                },
            },
        )?;
        let cache = opts
            .shared_cache
            .unwrap_or_else(|| shared_cache(opts.cache_bytes));
        let seg_starts = loaded
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
            meta: super::ArchiveMeta::parse(&loaded.meta),
            files: loaded.files,
            records: loaded.records,
            seg_starts,
            seg_stored: loaded.seg_stored,
            lossless: loaded.lossless,
            tag: cache.register(),
            cache,
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
    pub fn files(&self) -> &[FileEntry] {
        &self.files
    }
    /// Number of chunk records in the chunk table.
    pub fn chunk_count(&self) -> u32 {
        self.records.len()
    }
    /// Chunk record `id`, from a resident page or read and checked against the page's hash
    /// from open (an archive changed since fails with [`ArchiveError::IndexChanged`]).
    pub fn chunk_record(&self, id: u32) -> Result<ChunkRecord, ArchiveError> {
        self.records
            .get(self.storage.as_ref(), id)
            .map_err(|e| self.record_err(e))
    }
    /// Every chunk record in id order, read page by page (memory bounded by the page budget);
    /// the iteration ends after the first error.
    pub fn chunk_records(&self) -> impl Iterator<Item = Result<ChunkRecord, ArchiveError>> + '_ {
        self.records
            .iter(self.storage.as_ref())
            .map(|r| r.map_err(|e| self.record_err(e)))
    }
    /// Bytes of chunk records resident in memory now, and the most there can be (the budget,
    /// at least one page).
    pub fn resident_record_bytes(&self) -> (usize, usize) {
        (
            self.records.resident_bytes(),
            self.records.max_resident_bytes(),
        )
    }
    fn record_err(&self, e: RecordError) -> ArchiveError {
        match e {
            RecordError::Storage(e) => storage_err(&self.path, e),
            RecordError::Changed { page, offset } => ArchiveError::IndexChanged {
                path: self.path.clone(),
                page,
                offset,
            },
            RecordError::NoSuchChunk(chunk) => ArchiveError::NoSuchChunk { chunk },
            RecordError::Format(source) => ArchiveError::Format {
                path: self.path.clone(),
                source,
            },
        }
    }
    /// The archive's metadata block, parsed at open (empty when unparsable: see
    /// [`super::meta`]).
    pub fn meta(&self) -> &super::ArchiveMeta {
        &self.meta
    }
    pub fn file_index(&self, path: &str) -> Option<usize> {
        self.files.iter().position(|f| f.path == path)
    }
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }
    /// Is chunk `id` cached or being decoded right now (no decode, no LRU promotion)?
    pub fn is_cached(&self, id: u32) -> bool {
        self.cache.contains((self.tag, id))
    }
    /// Byte budget of the decoded-chunk cache (shared with other archives, if it is).
    pub fn cache_budget(&self) -> usize {
        self.cache.budget()
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
        self.lossless
    }

    /// Read the chunk's stored bytes, check them, decode, check the result. No cache.
    pub fn decode_chunk_uncached(&self, id: u32) -> Result<Vec<u8>, ArchiveError> {
        let rec = self.chunk_record(id)?;
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
    /// run of its own). Unknown ids, and ids whose record cannot be read now (reading the chunk
    /// reports why), are skipped. For read-ahead over remote storage: one range request per run
    /// instead of one per chunk (see [`Storage::coalesce_limit`]).
    pub fn stored_runs(&self, ids: &[u32], limit: usize) -> Vec<Vec<u32>> {
        let recs: Vec<(u32, ChunkRecord)> = ids
            .iter()
            .filter_map(|&id| Some((id, self.chunk_record(id).ok()?)))
            .collect();
        let mut out = Vec::new();
        let mut at = 0;
        for n in run_lens(recs.iter().map(|(_, r)| r), limit as u64) {
            out.push(recs[at..at + n].iter().map(|(id, _)| *id).collect());
            at += n;
        }
        out
    }

    /// Fetch the stored bytes of a run from [`Archive::stored_runs`] and check and decode each
    /// of its chunks into the cache. The chunks are claimed in the cache when the fetch starts:
    /// those cached or being produced by then are skipped (the run splits around them, one
    /// storage read per contiguous piece), and a reader asking for a claimed chunk waits for
    /// this fetch rather than reading the bytes again. Every check of [`Archive::chunk`]
    /// applies; the first failure is returned (a storage failure abandons the piece's claims,
    /// so waiting readers fetch and report for themselves).
    pub fn fetch_run(&self, ids: &[u32]) -> Result<(), ArchiveError> {
        let known: Vec<ChunkKey> = ids
            .iter()
            .filter(|&&id| id < self.chunk_count())
            .map(|&id| (self.tag, id))
            .collect();
        let mut result = Ok(());
        let mut keep = |r: Result<(), ArchiveError>| {
            if let (Err(e), Ok(())) = (r, &result) {
                result = Err(e);
            }
        };
        let mut claims = Vec::new();
        for claim in self.cache.claim(&known) {
            let id = claim.id().1;
            let rec = match self.chunk_record(id) {
                Ok(rec) => rec,
                Err(e) => {
                    keep(claim.fill(Err(e.clone())).map(|_| ()));
                    continue;
                }
            };
            match self.from_disk(id, &rec) {
                Some(stored) => {
                    keep(
                        claim
                            .fill(self.check_decode(id, &rec, &stored).map(Bytes::new))
                            .map(|_| ()),
                    );
                }
                None => claims.push((claim, rec)),
            }
        }
        // One storage read per piece of claims whose stored bytes follow each other.
        let lens = run_lens(claims.iter().map(|(_, r)| r), u64::MAX);
        let mut claims = claims.into_iter();
        for n in lens {
            let piece: Vec<_> = claims.by_ref().take(n).collect();
            let start = piece[0].1.offset;
            let last = piece[n - 1].1;
            let end = last.offset + u64::from(last.stored_len);
            let mut buf = vec![0u8; (end - start) as usize];
            if let Err(e) = self.storage.read_exact_at(&mut buf, start) {
                keep(Err(storage_err(&self.path, e)));
                continue; // `piece` drops here: its claims are abandoned
            }
            for (claim, rec) in piece {
                let id = claim.id().1;
                let from = (rec.offset - start) as usize;
                let stored = &buf[from..from + rec.stored_len as usize];
                keep(
                    claim
                        .fill(self.check_decode_fetched(id, &rec, stored).map(Bytes::new))
                        .map(|_| ()),
                );
            }
        }
        result
    }

    /// The decoded chunk, through the cache (decoded once however many threads ask).
    pub fn chunk(&self, id: u32) -> Result<Bytes, ArchiveError> {
        self.cache.get_or_decode((self.tag, id), || {
            self.decode_chunk_uncached(id).map(Bytes::new)
        })
    }

    /// The chunks covering `[offset, offset + len)` of file `file`, clamped to the file size:
    /// the plan of one read, computed once.
    pub fn plan(&self, file: usize, offset: u64, len: u64) -> Result<ReadPlan, ArchiveError> {
        let spans = self.spans(file, offset, len)?;
        // spans succeeded: `file` exists.
        let end = offset.saturating_add(len).min(self.files[file].size);
        Ok(ReadPlan {
            file,
            offset,
            end: end.max(offset),
            spans,
        })
    }

    /// The chunks covering `[offset, offset+len)` of file `file`, clamped to the file size.
    pub fn spans(
        &self,
        file: usize,
        offset: u64,
        len: u64,
    ) -> Result<Vec<ChunkSpan>, ArchiveError> {
        let f = self
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
                    // parse checked that a segment has a chunk for every chunk_size bytes.
                    let Some(chunk) = seg.chunks.get(k as usize) else {
                        break;
                    };
                    out.push(ChunkSpan {
                        chunk,
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
        let plan = self.plan(file, offset, buf.len() as u64)?;
        self.copy_planned(&plan, buf)
    }

    /// Copy the planned range into `buf` (at most `buf.len()` bytes); returns the bytes copied.
    fn copy_planned(&self, plan: &ReadPlan, buf: &mut [u8]) -> Result<usize, ArchiveError> {
        let mut n = 0usize;
        for s in &plan.spans {
            let (data, from) = self.span_bytes(plan, s)?;
            let take = (s.len as usize - from).min(buf.len() - n);
            let src = data
                .get(from..from + take)
                .ok_or(ArchiveError::NoSuchChunk { chunk: s.chunk })?;
            buf[n..n + take].copy_from_slice(src);
            n += take;
            if n == buf.len() {
                break;
            }
        }
        Ok(n)
    }

    /// The decoded chunk of span `s` of `plan`, and where the plan's bytes start in it. An error
    /// names the file and the offset where the read meets the damaged chunk.
    fn span_bytes(&self, plan: &ReadPlan, s: &ChunkSpan) -> Result<(Bytes, usize), ArchiveError> {
        let at = s.file_offset.max(plan.offset);
        let data = self.chunk(s.chunk).map_err(|e| ArchiveError::Read {
            file: self
                .files
                .get(plan.file)
                .map(|f| f.path.clone())
                .unwrap_or_default(),
            offset: at,
            source: Box::new(e),
        })?;
        // The plan's spans cover offset..end in order, so at >= s.file_offset.
        Ok((data, (at - s.file_offset) as usize))
    }

    /// Call `f` with the bytes of file `file` in `[offset, offset + len)`, clamped to the file
    /// size (empty at or past EOF). Errors as in [`Archive::read_at`]; see
    /// [`Archive::read_planned`].
    pub fn read_with<R>(
        &self,
        file: usize,
        offset: u64,
        len: usize,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<R, ArchiveError> {
        self.read_planned(&self.plan(file, offset, len as u64)?, f)
    }

    /// Call `f` with the bytes `plan` covers (from [`Archive::plan`] of this archive). A range
    /// inside one chunk is handed out as a slice of the cached chunk, without a copy; a range
    /// over several chunks is assembled in a per-thread buffer that is reused from call to call
    /// (a fresh buffer per FUSE request would be page-faulted and zeroed each time).
    pub fn read_planned<R>(
        &self,
        plan: &ReadPlan,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<R, ArchiveError> {
        // end - offset is at most the `len` the plan was made for.
        let n = usize::try_from(plan.end - plan.offset).unwrap_or(usize::MAX);
        match plan.spans.as_slice() {
            [] => Ok(f(&[])),
            [s] => {
                let (data, from) = self.span_bytes(plan, s)?;
                let take = (s.len as usize - from).min(n);
                let bytes = data
                    .get(from..from + take)
                    .ok_or(ArchiveError::NoSuchChunk { chunk: s.chunk })?;
                Ok(f(bytes))
            }
            _ => ASSEMBLE.with_borrow_mut(|buf| {
                buf.resize(n, 0);
                let got = self.copy_planned(plan, &mut buf[..n])?;
                Ok(f(&buf[..got]))
            }),
        }
    }

    /// Tensor segments of a safetensors file in header order, with their stored/decoded sizes.
    pub fn segment_sizes(&self, file: usize) -> Vec<(SegmentKind, u64, u64, Option<Codec>)> {
        let (Some(f), Some(stored)) = (self.files.get(file), self.seg_stored.get(file)) else {
            return Vec::new();
        };
        f.segments
            .iter()
            .zip(stored)
            .map(|(s, &stored)| {
                let codec = s.chunks.first().and_then(|c| {
                    let r = self.chunk_record(c).ok()?;
                    Codec::from_id(r.codec_id, r.codec_param).ok()
                });
                (s.kind, s.len, stored, codec)
            })
            .collect()
    }
}

/// Lengths of the runs `recs` (in order) falls into: records whose stored bytes follow each
/// other, each run at most `limit` stored bytes (a record larger than that alone).
fn run_lens<'a>(recs: impl Iterator<Item = &'a ChunkRecord>, limit: u64) -> Vec<usize> {
    let mut lens: Vec<usize> = Vec::new();
    let mut run_end = 0u64;
    let mut run_len = 0u64;
    for rec in recs {
        let n = u64::from(rec.stored_len);
        match lens.last_mut() {
            Some(k) if rec.offset == run_end && run_len.saturating_add(n) <= limit => {
                *k += 1;
                run_len += n;
            }
            _ => {
                lens.push(1);
                run_len = n;
            }
        }
        run_end = rec.offset + n; // cannot overflow: parse checked chunks lie in the file
    }
    lens
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
            .field("files", &self.files.len())
            .finish()
    }
}

/// Shared handle used by the mount and benches.
pub type SharedArchive = Arc<Archive>;

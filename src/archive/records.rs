//! The chunk table of an open archive, validated whole at open and then read back on demand in
//! fixed pages through a small bounded LRU, so the reader's memory does not grow with the number
//! of chunks (issue 9 item 4: a 1.3 TB model is 5 million 256 KiB chunks, 180 MB of records on
//! disk and 200 MB as `Vec<ChunkRecord>`; the whole index used to be held, plus its raw bytes
//! while parsing: 418 MB peak).
//!
//! At open ([`load`]) the index is read once, front to back, in pieces of [`PIECE_PAGES`] pages:
//! every byte goes into the index xxh3 (checked against the footer's before any error found in
//! the records is reported, so damage reads as damage), every record is checked by
//! [`format::parse_chunk_record`] exactly as [`format::Index::parse`] does, and each page of
//! [`RECORDS_PER_PAGE`] records gets its own xxh3 (one u64 per 64 KiB: 22 KB for 5 million
//! chunks). The part after the chunk table (files, segments, metadata; 20 MB of chunk ids for 5
//! million chunks) is hashed while streaming, read again once the whole index is known to be
//! intact, checked against its own hash from the first read (the file could have changed in
//! between), and parsed by [`format::parse_index_tail`] with the decoded length of every chunk,
//! kept (with its stored length, for per-segment sizes) only while the files are checked. What
//! stays: the files (segments as id runs, [`format::ChunkIds`]), the page hashes, per-segment
//! stored sizes, and the resident pages.
//!
//! Later, [`RecordTable::get`] serves a record from its resident page or reads the page (one
//! positioned read of <= 64 KiB, any [`Storage`] backend), checks the page's xxh3 from open and
//! parses it with the same checks. An archive changed after open therefore fails the read with
//! [`RecordError::Changed`] (EIO on the mount): never a record that was not validated, never a
//! panic. Pages stay resident up to a byte budget (`OpenOptions::record_cache_bytes`,
//! [`DEFAULT_RECORD_CACHE_BYTES`]); pages read at open are kept while the budget allows, so an
//! archive whose table fits the budget (up to ~210,000 chunks, ~55 GB of model at 256 KiB
//! chunks) never reads its index twice. One code path for both: a budget, not two
//! implementations.

use std::sync::{Arc, Mutex};

use xxhash_rust::xxh3::{Xxh3, xxh3_64};

use crate::codec::Codec;
use crate::format::{self, ChunkRecord, FileEntry, Footer, FormatError};
use crate::storage::{Storage, StorageError};

/// Records per page: 1820 x 36 = 65,520 bytes, the largest whole number of records in 64 KiB.
/// 64 KiB is one cheap positioned read locally and one small range request remotely (a chunk
/// fetch is itself 100-300 KiB), and 1820 chunks are 455 MiB of model at 256 KiB chunks, so a
/// sequential reader reads a page per ~455 MiB served.
pub const RECORDS_PER_PAGE: u32 = 1820;
/// Default budget of resident record pages, in bytes of `ChunkRecord`s in memory (72,800 per
/// page): 8 MiB keeps ~115 pages, every record of an archive of up to ~210,000 chunks (a 27B
/// BF16 model at 256 KiB chunks) resident from open, as before this module; beyond that, 8 MiB
/// is what the index may hold of records whatever the archive's size.
pub const DEFAULT_RECORD_CACHE_BYTES: usize = 8 << 20;
/// Pages read per storage request at open: 64 pages, ~4 MiB (the read buffer of the open pass).
pub const PIECE_PAGES: u32 = 64;

/// Why a record could not be served.
#[derive(Debug, Clone)]
pub enum RecordError {
    /// The storage failed to read the page.
    Storage(StorageError),
    /// The page's bytes differ from those validated at open (archive changed underneath).
    Changed { page: u32, offset: u64 },
    /// The id is past the chunk table.
    NoSuchChunk(u32),
    /// The page hashes as at open but does not parse: cannot happen short of an xxh3 collision.
    Format(FormatError),
}

/// Why [`load`] failed.
#[derive(Debug)]
pub enum LoadError {
    Storage(StorageError),
    Format(FormatError),
    /// The allocator refused this many bytes.
    Alloc(usize),
}

impl From<StorageError> for LoadError {
    fn from(e: StorageError) -> Self {
        LoadError::Storage(e)
    }
}
impl From<FormatError> for LoadError {
    fn from(e: FormatError) -> Self {
        LoadError::Format(e)
    }
}

/// What [`load`] returns: everything the reader keeps of the index.
pub struct Loaded {
    pub records: RecordTable,
    pub files: Vec<FileEntry>,
    pub meta: String,
    /// Per file, per segment: stored bytes of its chunks.
    pub seg_stored: Vec<Vec<u64>>,
    /// Every chunk uses a lossless codec.
    pub lossless: bool,
}

/// The chunk table: page hashes from open and a bounded LRU of parsed pages.
pub struct RecordTable {
    n: u32,
    /// Archive offset of record 0.
    base: u64,
    /// End of the data area (the index offset): records must lie before it.
    data_end: u64,
    page_hash: Vec<u64>,
    max_pages: usize,
    pages: Mutex<Pages>,
}

struct Pages {
    slot: Vec<Option<Page>>,
    resident: usize,
    clock: u64,
}

struct Page {
    recs: Arc<[ChunkRecord]>,
    used: u64,
}

/// Bytes one resident page holds in memory.
pub const PAGE_MEM_BYTES: usize = RECORDS_PER_PAGE as usize * std::mem::size_of::<ChunkRecord>();

/// Record ids of page `p` of a table of `n` records.
fn page_range(p: u32, n: u32) -> std::ops::Range<u32> {
    let first = p.saturating_mul(RECORDS_PER_PAGE);
    first..first.saturating_add(RECORDS_PER_PAGE).min(n)
}

/// Parse the records of one page (`b`, whole records), first id `first`.
fn parse_page(
    b: &[u8],
    first: u32,
    prev_end: &mut u64,
    data_end: u64,
    mut each: impl FnMut(&ChunkRecord),
) -> Result<(), FormatError> {
    for (id, rb) in (first..).zip(b.chunks_exact(format::CHUNK_RECORD_LEN)) {
        let rec = format::parse_chunk_record(rb, id, prev_end, data_end)?;
        each(&rec);
    }
    Ok(())
}

/// Reads an index front to back, hashing everything it hands out.
struct Stream<'a> {
    storage: &'a dyn Storage,
    start: u64,
    len: u64,
    at: u64,
    hash: Xxh3,
    buf: Vec<u8>,
    /// The whole index, when it is at most [`WHOLE_INDEX`] bytes (read with one request).
    whole: Option<Vec<u8>>,
}

/// Indexes up to this size are read with one storage request (over S3 or HTTP every request is a
/// round trip; 8 MiB is the index of a ~50 GB model at 256 KiB chunks).
const WHOLE_INDEX: u64 = 8 << 20;

impl Stream<'_> {
    /// The next `n` bytes (fewer at the end of the index).
    fn next(&mut self, n: usize) -> Result<&[u8], StorageError> {
        let n = n.min(usize::try_from(self.len - self.at).unwrap_or(usize::MAX));
        self.buf.resize(n, 0);
        match &self.whole {
            // at + n <= len = whole.len()
            Some(w) => self
                .buf
                .copy_from_slice(&w[self.at as usize..self.at as usize + n]),
            None => self
                .storage
                .read_exact_at(&mut self.buf, self.start + self.at)?,
        }
        self.hash.update(&self.buf);
        self.at += n as u64;
        Ok(&self.buf)
    }
}

/// Read and validate the index `footer` names (see the module header). `record_cache_bytes`
/// bounds the resident pages.
pub fn load(
    storage: &dyn Storage,
    footer: &Footer,
    record_cache_bytes: usize,
) -> Result<Loaded, LoadError> {
    // parse_footer capped index_len at MAX_INDEX_LEN and placed it inside the file.
    let ilen = footer.index_len;
    let data_end = footer.index_offset;
    let mut s = Stream {
        storage,
        start: footer.index_offset,
        len: ilen,
        at: 0,
        hash: Xxh3::new(),
        buf: Vec::new(),
        whole: None,
    };
    if ilen <= WHOLE_INDEX {
        let mut w = vec![0u8; ilen as usize];
        storage.read_exact_at(&mut w, footer.index_offset)?;
        s.whole = Some(w);
    }
    let piece_bytes = (PIECE_PAGES * RECORDS_PER_PAGE) as usize * format::CHUNK_RECORD_LEN;
    // The first structural error; reported only once the index hash is known to match.
    let mut deferred: Option<FormatError> = None;
    let head = format::parse_index_head(s.next(format::INDEX_HEAD_LEN)?, ilen);
    let n = match &head {
        Ok(h) => h.n_chunks,
        Err(e) => {
            deferred = Some(e.clone());
            0
        }
    };
    let n_pages = n.div_ceil(RECORDS_PER_PAGE);
    let max_pages = (record_cache_bytes / PAGE_MEM_BYTES).max(1);
    // n_pages is capped by the index length (<= 16,400 for a 1 GiB index).
    let mut page_hash = Vec::with_capacity(n_pages as usize);
    let mut slot: Vec<Option<Page>> = (0..n_pages).map(|_| None).collect();
    let mut resident = 0usize;
    // (decoded, stored) length of every chunk, kept while the files are checked. Grown page by
    // page as records parse (a forged count costs nothing until records actually validate).
    let mut lens: Vec<(u32, u32)> = Vec::new();
    let mut lossless = true;
    let mut prev_end = format::SUPERBLOCK_LEN as u64;
    let mut p0 = 0u32;
    while p0 < n_pages {
        let p1 = p0.saturating_add(PIECE_PAGES).min(n_pages);
        let first = p0 * RECORDS_PER_PAGE;
        let end = page_range(p1 - 1, n).end;
        let want = (end - first) as usize * format::CHUNK_RECORD_LEN;
        let buf = s.next(want.min(piece_bytes))?;
        for p in p0..p1 {
            let r = page_range(p, n);
            let from = (r.start - first) as usize * format::CHUNK_RECORD_LEN;
            let to = (r.end - first) as usize * format::CHUNK_RECORD_LEN;
            let b = buf.get(from..to).unwrap_or_default();
            page_hash.push(xxh3_64(b));
            if deferred.is_some() {
                continue;
            }
            lens.try_reserve(r.len())
                .map_err(|_| LoadError::Alloc(r.len() * 8))?;
            let keep = resident < max_pages;
            let mut recs = Vec::with_capacity(if keep { r.len() } else { 0 });
            let parsed = parse_page(b, r.start, &mut prev_end, data_end, |rec| {
                lens.push((rec.decoded_len, rec.stored_len));
                lossless &= Codec::from_id(rec.codec_id, rec.codec_param)
                    .map(|c| c.is_lossless())
                    .unwrap_or(true);
                if keep {
                    recs.push(*rec);
                }
            });
            match parsed {
                Err(e) => deferred = Some(e),
                Ok(()) if keep => {
                    slot[p as usize] = Some(Page {
                        recs: recs.into(),
                        used: 0,
                    });
                    resident += 1;
                }
                Ok(()) => {}
            }
        }
        p0 = p1;
    }
    // The rest (files, metadata): hashed now, read again below once the whole index checks out.
    let tail_start = s.at;
    let mut tail_hash = Xxh3::new();
    while s.at < ilen {
        let b = s.next(piece_bytes)?;
        tail_hash.update(b);
    }
    if s.hash.digest() != footer.index_hash {
        return Err(FormatError::IndexChecksum.into());
    }
    if let Some(e) = deferred {
        return Err(e.into());
    }
    let head = head?;
    let whole = s.whole.take();
    drop(s);
    let tail_len = usize::try_from(ilen - tail_start).map_err(|_| LoadError::Alloc(usize::MAX))?;
    let tail = match whole {
        Some(mut w) => w.split_off(tail_start as usize),
        None => {
            let mut tail = Vec::new();
            tail.try_reserve_exact(tail_len)
                .map_err(|_| LoadError::Alloc(tail_len))?;
            tail.resize(tail_len, 0);
            storage.read_exact_at(&mut tail, footer.index_offset + tail_start)?;
            tail
        }
    };
    if xxh3_64(&tail) != tail_hash.digest() {
        return Err(FormatError::IndexChecksum.into());
    }
    let (files, meta) =
        format::parse_index_tail(&tail, &head, |id| lens.get(id as usize).map(|l| l.0))?;
    drop(tail);
    // Ids were checked against the table by parse_index_tail.
    let seg_stored = files
        .iter()
        .map(|f| {
            f.segments
                .iter()
                .map(|sg| {
                    sg.chunks
                        .iter()
                        .map(|id| lens.get(id as usize).map_or(0, |l| u64::from(l.1)))
                        .sum()
                })
                .collect()
        })
        .collect();
    Ok(Loaded {
        records: RecordTable {
            n,
            base: footer.index_offset + format::INDEX_HEAD_LEN as u64,
            data_end,
            page_hash,
            max_pages,
            pages: Mutex::new(Pages {
                slot,
                resident,
                clock: 0,
            }),
        },
        files,
        meta,
        seg_stored,
        lossless,
    })
}

impl RecordTable {
    /// Number of chunk records.
    pub fn len(&self) -> u32 {
        self.n
    }
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
    fn n_pages(&self) -> u32 {
        self.page_hash.len() as u32
    }

    /// Record `id`.
    pub fn get(&self, storage: &dyn Storage, id: u32) -> Result<ChunkRecord, RecordError> {
        if id >= self.n {
            return Err(RecordError::NoSuchChunk(id));
        }
        let page = self.page(storage, id / RECORDS_PER_PAGE)?;
        page.get((id % RECORDS_PER_PAGE) as usize)
            .copied()
            .ok_or(RecordError::NoSuchChunk(id))
    }

    /// Every record in id order, page by page (stops after the first error).
    pub fn iter<'a>(&'a self, storage: &'a dyn Storage) -> Iter<'a> {
        Iter {
            table: self,
            storage,
            next_page: 0,
            recs: None,
            k: 0,
            failed: false,
        }
    }

    /// Bytes of records resident now (at most the budget, rounded up to one page).
    pub fn resident_bytes(&self) -> usize {
        self.lock().resident * PAGE_MEM_BYTES
    }
    /// The most pages kept resident.
    pub fn max_resident_bytes(&self) -> usize {
        self.max_pages * PAGE_MEM_BYTES
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pages> {
        // Nothing panics while holding the lock; a poisoned one is still consistent.
        self.pages.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Page `p`, resident or read, checked against its hash from open, and parsed.
    fn page(&self, storage: &dyn Storage, p: u32) -> Result<Arc<[ChunkRecord]>, RecordError> {
        {
            let mut g = self.lock();
            g.clock += 1;
            let now = g.clock;
            if let Some(Some(pg)) = g.slot.get_mut(p as usize) {
                pg.used = now;
                return Ok(pg.recs.clone());
            }
        }
        let want = *self
            .page_hash
            .get(p as usize)
            .ok_or(RecordError::NoSuchChunk(p.saturating_mul(RECORDS_PER_PAGE)))?;
        // Read outside the lock: other threads keep being served from resident pages.
        let r = page_range(p, self.n);
        let offset = self.base + u64::from(r.start) * format::CHUNK_RECORD_LEN as u64;
        let mut buf = vec![0u8; r.len() * format::CHUNK_RECORD_LEN];
        storage
            .read_exact_at(&mut buf, offset)
            .map_err(RecordError::Storage)?;
        if xxh3_64(&buf) != want {
            return Err(RecordError::Changed { page: p, offset });
        }
        let mut recs = Vec::with_capacity(r.len());
        // Same checks as at open; the first record's predecessor is not re-checked (the page
        // hash proves the bytes are those validated at open).
        let mut prev_end = format::SUPERBLOCK_LEN as u64;
        parse_page(&buf, r.start, &mut prev_end, self.data_end, |rec| {
            recs.push(*rec)
        })
        .map_err(RecordError::Format)?;
        let recs: Arc<[ChunkRecord]> = recs.into();
        let mut g = self.lock();
        g.clock += 1;
        let now = g.clock;
        if g.slot.get(p as usize).is_some_and(|s| s.is_none()) {
            if g.resident >= self.max_pages {
                let victim = g
                    .slot
                    .iter()
                    .enumerate()
                    .filter_map(|(i, s)| s.as_ref().map(|s| (s.used, i)))
                    .min()
                    .map(|(_, i)| i);
                if let Some(v) = victim {
                    g.slot[v] = None;
                    g.resident -= 1;
                }
            }
            g.slot[p as usize] = Some(Page {
                recs: recs.clone(),
                used: now,
            });
            g.resident += 1;
        }
        Ok(recs)
    }
}

/// See [`RecordTable::iter`].
pub struct Iter<'a> {
    table: &'a RecordTable,
    storage: &'a dyn Storage,
    next_page: u32,
    recs: Option<Arc<[ChunkRecord]>>,
    k: usize,
    failed: bool,
}

impl Iterator for Iter<'_> {
    type Item = Result<ChunkRecord, RecordError>;
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(rec) = self.recs.as_ref().and_then(|r| r.get(self.k)) {
                self.k += 1;
                return Some(Ok(*rec));
            }
            if self.failed || self.next_page >= self.table.n_pages() {
                return None;
            }
            match self.table.page(self.storage, self.next_page) {
                Ok(r) => {
                    self.recs = Some(r);
                    self.k = 0;
                    self.next_page += 1;
                }
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::archive::{Archive, ArchiveError, OpenOptions};
    use crate::format::{ChunkIds, Index, Segment, SegmentKind};

    /// Bytes that can be changed after an archive was opened on them.
    struct Mutable(Mutex<Vec<u8>>);
    impl Storage for Mutable {
        fn len(&self) -> u64 {
            self.0.lock().unwrap().len() as u64
        }
        fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<(), StorageError> {
            let b = self.0.lock().unwrap();
            let at = usize::try_from(offset).unwrap();
            let src = b.get(at..at + buf.len()).ok_or_else(|| StorageError {
                msg: "past end".into(),
                kind: std::io::ErrorKind::UnexpectedEof,
            })?;
            buf.copy_from_slice(src);
            Ok(())
        }
        fn describe(&self) -> String {
            "mutable".into()
        }
    }

    /// An archive of one file of `n` raw chunks of 8 bytes (chunk k holds the u64 k), in
    /// segments of 100 chunks; the second segment re-uses chunk 0 (a de-duplicated list).
    fn many_chunks(n: u32) -> (Vec<u8>, Vec<u8>) {
        let mut out = format::superblock().to_vec();
        let mut content = Vec::new();
        let mut chunks = Vec::new();
        for k in 0..u64::from(n) {
            let b = k.to_le_bytes();
            chunks.push(ChunkRecord {
                offset: out.len() as u64,
                stored_len: 8,
                decoded_len: 8,
                codec_id: Codec::ID_RAW,
                codec_param: 0,
                stored_hash: xxh3_64(&b),
                decoded_hash: xxh3_64(&b),
            });
            out.extend_from_slice(&b);
        }
        let mut segments = Vec::new();
        let mut k = 0u32;
        while k < n {
            let e = (k + 100).min(n);
            let mut ids: ChunkIds = (k..e).collect();
            if segments.len() == 1 {
                ids = std::iter::once(0).chain(k + 1..e).collect();
            }
            for id in ids.iter() {
                content.extend_from_slice(&u64::from(id).to_le_bytes());
            }
            segments.push(Segment {
                kind: SegmentKind::Plain,
                len: u64::from(e - k) * 8,
                chunk_size: 8,
                chunks: ids,
            });
            k = e;
        }
        let index = Index {
            chunks,
            files: vec![format::FileEntry {
                path: "f".into(),
                mode: 0o644,
                size: content.len() as u64,
                sha256: [0; 32],
                segments,
            }],
            meta: "{}".into(),
        };
        let ib = index.to_bytes();
        let footer = Footer {
            index_offset: out.len() as u64,
            index_len: ib.len() as u64,
            index_hash: xxh3_64(&ib),
            minor: 0,
        };
        out.extend_from_slice(&ib);
        out.extend_from_slice(&format::footer_bytes(&footer));
        (out, content)
    }

    fn open(bytes: Vec<u8>, record_cache_bytes: usize) -> (Arc<Mutable>, Archive) {
        let st = Arc::new(Mutable(Mutex::new(bytes)));
        let opts = OpenOptions {
            cache_bytes: 1 << 16,
            record_cache_bytes,
            ..OpenOptions::default()
        };
        let a = Archive::open_storage(st.clone(), opts).unwrap();
        (st, a)
    }

    /// The regression test of the index representation: an archive of 40 pages of records,
    /// read whole, never holds more than its page budget of records, and its segments of
    /// consecutive ids hold no id lists.
    #[test]
    fn resident_records_stay_within_the_page_budget() {
        let n = 40 * RECORDS_PER_PAGE + 7;
        let (bytes, content) = many_chunks(n);
        let budget = 3 * PAGE_MEM_BYTES;
        let (_st, a) = open(bytes, budget);
        assert_eq!(a.chunk_count(), n);
        let (resident, max) = a.resident_record_bytes();
        assert_eq!(max, budget);
        assert!(resident <= budget, "{resident} bytes resident at open");
        // Read every byte back (every chunk, through the records), then every record in order.
        let got = crate::archive::reader::read_all(&a, 0).unwrap();
        assert!(got == content, "content differs");
        let (resident, _) = a.resident_record_bytes();
        assert!(
            resident <= budget,
            "{resident} bytes resident after a full read"
        );
        let mut count = 0u32;
        for (k, r) in a.chunk_records().enumerate() {
            let r = r.unwrap();
            assert_eq!(
                r.stored_hash,
                xxh3_64(&(k as u64).to_le_bytes()),
                "record {k}"
            );
            count += 1;
        }
        assert_eq!(count, n);
        assert!(a.resident_record_bytes().0 <= budget);
        assert_eq!(
            a.chunk_record(n - 1).unwrap().offset,
            16 + u64::from(n - 1) * 8
        );
        assert!(matches!(
            a.chunk_record(n),
            Err(ArchiveError::NoSuchChunk { chunk }) if chunk == n
        ));
        // Segments: all runs but the de-duplicated second one.
        let segs = &a.files()[0].segments;
        let lists: Vec<usize> = (0..segs.len())
            .filter(|&i| segs[i].chunks.heap_bytes() > 0)
            .collect();
        assert_eq!(lists, vec![1]);
        let (_, _, stored, _) = a.segment_sizes(0)[1];
        assert_eq!(stored, 800);
    }

    /// A table within the budget is resident from open: serving reads never touches the index.
    #[test]
    fn small_tables_stay_resident_from_open() {
        let n = 3 * RECORDS_PER_PAGE;
        let (bytes, content) = many_chunks(n);
        let (st, a) = open(bytes, DEFAULT_RECORD_CACHE_BYTES);
        assert_eq!(a.resident_record_bytes().0, 3 * PAGE_MEM_BYTES);
        // Damage the whole index: nothing reads it again, so reads still succeed.
        {
            let mut b = st.0.lock().unwrap();
            let from = n as usize * 8 + 16;
            let to = b.len() - format::FOOTER_LEN;
            b[from..to].fill(0xAA);
        }
        assert!(crate::archive::reader::read_all(&a, 0).unwrap() == content);
    }

    /// A record page changed after open fails the read with `IndexChanged`, never a record
    /// that was not validated (here: a valid-looking record pointing at other bytes).
    #[test]
    fn a_page_changed_after_open_is_refused() {
        let n = 5 * RECORDS_PER_PAGE;
        let (bytes, _) = many_chunks(n);
        let (st, a) = open(bytes, PAGE_MEM_BYTES);
        let victim = 3 * RECORDS_PER_PAGE + 5;
        {
            // Change one record's stored hash: the record still parses, so only the page hash
            // can tell.
            let mut b = st.0.lock().unwrap();
            let base = 16 + n as usize * 8 + format::INDEX_HEAD_LEN;
            let at = base + victim as usize * format::CHUNK_RECORD_LEN;
            b[at + 20..at + 28].copy_from_slice(&0u64.to_le_bytes()); // stored_hash
        }
        let e = a.chunk_record(victim).unwrap_err();
        assert!(
            matches!(e, ArchiveError::IndexChanged { page: 3, .. }),
            "{e:?}"
        );
        let e = a
            .read_at(0, u64::from(victim) * 8, &mut [0u8; 8])
            .unwrap_err();
        assert!(
            matches!(e.root(), ArchiveError::IndexChanged { .. }),
            "{e:?}"
        );
        // Other pages still serve.
        assert_eq!(a.chunk_record(5).unwrap().offset, 16 + 5 * 8);
        let mut it = a.chunk_records().skip(3 * RECORDS_PER_PAGE as usize);
        assert!(matches!(
            it.next(),
            Some(Err(ArchiveError::IndexChanged { .. }))
        ));
        assert!(it.next().is_none(), "iteration stops after the error");
    }

    #[test]
    fn chunk_ids_runs_and_lists() {
        let mut ids = ChunkIds::new();
        assert!(ids.is_empty() && ids.first().is_none());
        for id in 7..12 {
            ids.push(id);
        }
        assert_eq!(ids, ChunkIds::Run { first: 7, len: 5 });
        assert_eq!(ids.heap_bytes(), 0);
        assert_eq!((ids.get(4), ids.get(5)), (Some(11), None));
        assert!(ids.contains(7) && ids.contains(11) && !ids.contains(12) && !ids.contains(6));
        ids.push(3);
        assert!(matches!(ids, ChunkIds::List(_)));
        assert_eq!(ids.to_vec(), vec![7, 8, 9, 10, 11, 3]);
        assert_eq!(ids, ChunkIds::List(vec![7, 8, 9, 10, 11, 3]));
        // Equal as ids whatever the form.
        assert_eq!(
            ChunkIds::Run { first: 1, len: 2 },
            ChunkIds::List(vec![1, 2])
        );
        // The last id there is.
        let top: ChunkIds = vec![u32::MAX - 1, u32::MAX].into();
        assert_eq!(top.to_vec(), vec![u32::MAX - 1, u32::MAX]);
        let mut top = top;
        top.push(0);
        assert_eq!(top.to_vec(), vec![u32::MAX - 1, u32::MAX, 0]);
        let forged = ChunkIds::Run {
            first: u32::MAX,
            len: 3,
        };
        assert_eq!(forged.to_vec(), vec![u32::MAX]);
    }
}

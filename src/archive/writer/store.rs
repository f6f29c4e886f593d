//! The last stage of a pack, on the calling thread: takes the encoded chunks in archive order
//! (as the [`InOrder`] consumer of the pipeline), de-duplicates by content, appends stored
//! bytes to the [`ArchiveSink`], records chunk records and file entries, and at the end writes
//! the index and footer.
//!
//! Each file's SHA-256 comes from the hashers (`hash`), which run at their own pace: a file
//! whose digest is not ready when its last chunk is stored is settled later (its entry waits
//! for the digest, with the per-chunk input hashes to check the hasher's reading against), at
//! the latest before the index is written. The writer thus never waits for a digest while
//! chunks are being stored; until 2026-12-03 it did, at every file end, and on 16 cores the
//! ordered window stalled behind one file's SHA-256 at a time (1.65 GiB/s, issue 9).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use sha2::{Digest, Sha256};
use xxhash_rust::xxh3::xxh3_64;

use super::hash::Hashers;
use super::input::InputFile;
use super::pipeline::{Done, InOrder};
use super::plan::{Job, SegPlan};
use super::{ArchiveSink, PackError, PackOptions, PackSummary, io_err, quality_row};
use crate::archive::Progress;
use crate::archive::meta::ArchiveMeta;
use crate::codec::Codec;
use crate::codec::quant::QuantStats;
use crate::format::{self, ChunkRecord, FileEntry, Footer, Index, Segment, SegmentKind};

/// The file whose chunks are being stored (strictly in archive order, so one at a time).
struct Storing {
    segments: Vec<Segment>,
    /// xxh3 of each stored chunk's input, checked against the hasher's reading.
    input_hashes: Vec<u64>,
    served_sha: Sha256,
    hashed: u64,
    seg_stats: Vec<QuantStats>,
    lossy: bool,
}

impl Storing {
    fn new(plan: &[SegPlan]) -> Self {
        Storing {
            segments: plan
                .iter()
                .map(|p| Segment {
                    kind: p.kind,
                    len: p.len,
                    chunk_size: p.chunk_size,
                    chunks: Default::default(),
                })
                .collect(),
            input_hashes: Vec::new(),
            served_sha: Sha256::new(),
            hashed: 0,
            seg_stats: vec![QuantStats::default(); plan.len()],
            lossy: plan.iter().any(|p| p.preset.is_some()),
        }
    }
}

/// The archive being written: everything recorded so far, and where the bytes go.
pub(super) struct Store<'a> {
    inputs: &'a [InputFile],
    plans: &'a [Vec<SegPlan>],
    /// The archive's name in errors.
    output: &'a Path,
    w: Box<dyn ArchiveSink>,
    /// Bytes written so far.
    pos: u64,
    chunks: Vec<ChunkRecord>,
    dedup: HashMap<(u128, u32, Codec), u32>,
    files: Vec<FileEntry>,
    /// Lossy files: the SHA-256 of the original file, by path.
    original_sha: BTreeMap<String, String>,
    lossy_total: QuantStats,
    hashers: Hashers,
    /// Files stored whose digest was not ready yet, in order.
    unsettled: Vec<Unsettled>,
    bar: Box<dyn Progress>,
    summary: PackSummary,
    cur: Option<Storing>,
}

impl<'a> Store<'a> {
    /// Start the archive in `w` (its superblock); `summary` has the totals counted so far.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        inputs: &'a [InputFile],
        plans: &'a [Vec<SegPlan>],
        output: &'a Path,
        mut w: Box<dyn ArchiveSink>,
        hashers: Hashers,
        bar: Box<dyn Progress>,
        summary: PackSummary,
    ) -> Result<Self, PackError> {
        w.write_all(&format::superblock())
            .map_err(|e| io_err(output, e))?;
        Ok(Store {
            inputs,
            plans,
            output,
            w,
            pos: format::SUPERBLOCK_LEN as u64,
            chunks: Vec::new(),
            dedup: HashMap::new(),
            files: Vec::with_capacity(inputs.len()),
            original_sha: BTreeMap::new(),
            lossy_total: QuantStats::default(),
            hashers,
            unsettled: Vec::new(),
            bar,
            summary,
            cur: None,
        })
    }

    /// Write the index and footer and make the archive visible; returns the summary with the
    /// chunk count, the lossy totals and the archive's size filled in.
    pub fn finish(mut self, opts: &PackOptions) -> Result<PackSummary, PackError> {
        self.settle(true)?;
        drop(self.bar);
        let output = self.output;
        let mut summary = self.summary;
        summary.chunks = self.chunks.len() as u64;
        if let Some(preset) = opts.preset {
            let (params, bytes_in) = summary
                .lossy
                .iter()
                .fold((0, 0), |(p, b), r| (p + r.params, b + r.bytes_in));
            let name = "all quantized tensors";
            summary.lossy_total = Some(quality_row(
                "*",
                name,
                &preset.to_string(),
                params,
                bytes_in,
                &self.lossy_total,
            ));
        }
        let meta = meta_json(opts, &summary, &self.original_sha)?;
        // The lowest minor that records what was used, so older readers refuse only archives
        // they cannot read, and with a precise error (docs/FORMAT.md, versioning).
        let gguf_kinds = self
            .files
            .iter()
            .any(|f| f.segments.iter().any(|s| s.kind == SegmentKind::GgufHeader));
        let minor = self
            .chunks
            .iter()
            .filter_map(|c| Codec::from_id(c.codec_id, c.codec_param).ok())
            .map(Codec::format_minor)
            .chain(gguf_kinds.then_some(1))
            .max()
            .unwrap_or(0);
        let index = Index {
            chunks: self.chunks,
            files: self.files,
            meta,
        };
        let ib = index.to_bytes();
        if ib.len() as u64 > format::MAX_INDEX_LEN {
            // A reader would refuse it: say so now rather than write an archive nobody can open.
            return Err(PackError::Options(format!(
                "the index would be {} bytes, over the {}-byte cap readers accept; use a larger --chunk-size or split the model",
                ib.len(),
                format::MAX_INDEX_LEN
            )));
        }
        let footer = Footer {
            index_offset: self.pos,
            index_len: ib.len() as u64,
            index_hash: xxh3_64(&ib),
            minor,
        };
        self.w.write_all(&ib).map_err(|e| io_err(output, e))?;
        self.w
            .write_all(&format::footer_bytes(&footer))
            .map_err(|e| io_err(output, e))?;
        self.w.finish().map_err(|e| io_err(output, e))?;
        summary.bytes_out = self.pos + ib.len() as u64 + format::FOOTER_LEN as u64;
        Ok(summary)
    }

    /// Append a chunk not stored before and record it; returns its id.
    fn append(&mut self, d: &Done, class: &str) -> Result<u32, PackError> {
        let id = u32::try_from(self.chunks.len()).map_err(|_| {
            PackError::Options("more than 2^32 chunks: use a larger --chunk-size".into())
        })?;
        self.w
            .write_all(&d.stored)
            .map_err(|e| io_err(self.output, e))?;
        let (codec_id, codec_param) = d.codec.to_id();
        self.chunks.push(ChunkRecord {
            offset: self.pos,
            stored_len: d.stored.len() as u32,
            decoded_len: d.decoded_len,
            codec_id,
            codec_param,
            stored_hash: d.stored_hash,
            decoded_hash: d.decoded_hash,
        });
        self.pos += d.stored.len() as u64;
        self.summary
            .per_class
            .get_mut(class)
            .expect("class registered by plan::tally")
            .bytes_out += d.stored.len() as u64;
        Ok(id)
    }
}

impl InOrder for Store<'_> {
    /// Store one encoded chunk: hash, de-duplicate, append, record.
    fn chunk(
        &mut self,
        j: &Job,
        data: &[u8],
        d: Result<Done, String>,
    ) -> Result<Vec<u8>, PackError> {
        let (plans, inputs) = (self.plans, self.inputs);
        let plan = &plans[j.file];
        let d = d.map_err(|msg| PackError::Codec {
            path: inputs[j.file].abs.clone(),
            tensor: plan[j.seg]
                .tensor
                .as_ref()
                .map_or_else(|| "-".into(), |t| t.0.clone()),
            msg,
        })?;
        let s = self.cur.get_or_insert_with(|| Storing::new(plan));
        s.input_hashes.push(d.input_hash);
        s.hashed += data.len() as u64;
        if s.lossy {
            match &d.served {
                Some((served, st)) => {
                    s.served_sha.update(served);
                    s.seg_stats[j.seg].merge(st);
                }
                None => s.served_sha.update(data),
            }
        }
        let key = (d.key, d.decoded_len, d.codec);
        let id = match self.dedup.get(&key) {
            Some(&id) => {
                self.summary.dedup_chunks += 1;
                self.summary.dedup_bytes += u64::from(d.decoded_len);
                id
            }
            None => {
                let id = self.append(&d, &plan[j.seg].class)?;
                self.dedup.insert(key, id);
                id
            }
        };
        self.cur.as_mut().expect("started above").segments[j.seg]
            .chunks
            .push(id);
        // Counts from the first stored chunk (see `bar_inc`).
        self.bar.inc(data.len() as u64);
        Ok(d.stored)
    }

    /// Close file `k` once all its chunks are stored: check its size and content against the
    /// hasher's reading, record its entry.
    fn file_done(&mut self, k: usize) -> Result<(), PackError> {
        let (plans, inputs) = (self.plans, self.inputs);
        let plan = &plans[k];
        let s = self.cur.take().unwrap_or_else(|| Storing::new(plan));
        let f = &inputs[k];
        if s.hashed != f.size {
            return Err(io_err(
                &f.abs,
                std::io::Error::other("file changed size while being packed"),
            ));
        }
        // Lossless: the original's digest, filled in when the hasher has it (`settle`).
        let served: [u8; 32] = if s.lossy {
            s.served_sha.finalize().into()
        } else {
            [0; 32]
        };
        for (p, st) in plan.iter().zip(&s.seg_stats) {
            if let (Some(preset), Some((name, params))) = (p.preset, &p.tensor) {
                let row = quality_row(&f.rel, name, &preset.to_string(), *params, p.len, st);
                self.summary.lossy.push(row);
                self.lossy_total.merge(st);
            }
        }
        self.files.push(FileEntry {
            path: f.rel.clone(),
            mode: f.mode,
            size: f.size,
            sha256: served,
            segments: s.segments,
        });
        self.unsettled.push(Unsettled {
            file: k,
            entry: self.files.len() - 1,
            input_hashes: s.input_hashes,
            lossy: s.lossy,
        });
        self.settle(false)
    }
}

/// A stored file whose digest the hashers have not delivered yet.
struct Unsettled {
    /// Index in the inputs.
    file: usize,
    /// Index of its entry in `Store::files`.
    entry: usize,
    /// xxh3 of each stored chunk's input, checked against the hasher's reading.
    input_hashes: Vec<u64>,
    lossy: bool,
}

impl Store<'_> {
    /// Check the digests that are ready against what was stored and record them (`wait`: all of
    /// them, waiting for the hashers). A hasher's error or a file whose two reads differ fails
    /// the pack, naming the file.
    fn settle(&mut self, wait: bool) -> Result<(), PackError> {
        let mut keep = Vec::new();
        for u in std::mem::take(&mut self.unsettled) {
            let f = &self.inputs[u.file];
            let hashed = if wait {
                self.hashers.take(u.file)
            } else {
                match self.hashers.try_take(u.file) {
                    Some(r) => r,
                    None => {
                        keep.push(u);
                        continue;
                    }
                }
            };
            let hashed = hashed.map_err(|e| io_err(&f.abs, e))?;
            if hashed.piece_hashes != u.input_hashes {
                return Err(io_err(
                    &f.abs,
                    std::io::Error::other("file changed while being packed"),
                ));
            }
            if u.lossy {
                self.original_sha
                    .insert(f.rel.clone(), hex::encode(hashed.sha256));
            } else {
                self.files[u.entry].sha256 = hashed.sha256;
            }
        }
        self.unsettled = keep;
        Ok(())
    }
}

/// The archive's metadata (the index's JSON string).
fn meta_json(
    opts: &PackOptions,
    summary: &PackSummary,
    original_sha: &BTreeMap<String, String>,
) -> Result<String, PackError> {
    let preset = match (opts.bits, opts.preset) {
        (Some(b), _) => format!("bits {b}"),
        (None, p) => p.map_or_else(|| "lossless".to_string(), |p| p.to_string()),
    };
    let overrides = opts.overrides.iter().map(|(p, c)| {
        format!(
            "{p}={}",
            c.map_or_else(|| "lossless".into(), |c| c.to_string())
        )
    });
    ArchiveMeta {
        tool: Some(format!("upg {}", env!("CARGO_PKG_VERSION"))),
        chunk_size: Some(opts.chunk_size),
        preset: Some(preset),
        overrides: overrides.collect(),
        lossy: summary.lossy.clone(),
        lossy_total: summary.lossy_total.clone(),
        original_sha256: original_sha.clone(),
    }
    .to_json()
    .map_err(|e| PackError::Options(format!("archive metadata: {e}")))
}

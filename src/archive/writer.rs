//! Streaming writer: `pack(input, output, options)`.
//!
//! Pipeline (a sliding window of `threads × WINDOW_PER_THREAD` chunks, in archive order, across
//! file boundaries: a file's first chunks are encoded while the previous file's last ones are,
//! so the small files of a model directory do not run one at a time after a drained window):
//! - the calling thread hands chunk jobs (with recycled buffers) to the rayon pool;
//! - the pool (`threads` workers) reads each chunk with `pread` and encodes it;
//! - hasher threads (`hash`) read each file once more and compute its SHA-256, several files
//!   at once (a SHA-256 must see a file's bytes in order, so one thread per file);
//! - the calling thread takes the results back in file order: checks each chunk's input hash
//!   against what the hasher read, de-duplicates by decoded content, appends stored bytes to
//!   the output and records chunk records.
//!
//! Reading, hashing and writing thus overlap the encoding instead of running between batches
//! (the first version ran them as phases of a batch, which left workers idle: 2 threads packed
//! at ~1.3x one thread's speed). The calling thread is not a pool worker and is not counted in
//! `threads`. It used to hash as well, and at SHA-256's ~1.5 GB/s per thread that capped pack
//! at 0.75 GiB/s on 16 cores (issue 9); now it only de-duplicates and writes. Reading in the workers rather than in the calling thread keeps that thread, the
//! serial part, as short as possible.
//!
//! Memory is therefore bounded by one window of input plus its encoded output (plus per-thread
//! coder scratch, the index and a job record of under 64 bytes per chunk), whatever the shard size. The archive is written to a temporary file beside the output and
//! renamed into place only after the footer is written and synced, so a failed pack (bad input,
//! disk full, interrupt) never leaves a file under the output name.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rayon::prelude::*;
use sha2::{Digest, Sha256};
use xxhash_rust::xxh3::xxh3_64;

use std::sync::Arc;

use crate::codec::Codec;
use crate::codec::quant::{Preset, QuantStats, TensorPlan};
use crate::format::{self, ChunkRecord, FileEntry, Footer, Index, Segment, SegmentKind};
use crate::{gguf, st};

mod budget;
mod hash;
pub mod input;
mod sink;

pub use sink::ArchiveSink;
use sink::FileSink;

/// Default decoded chunk size. 256 KiB: a 4 KiB random read decodes at most this much (about
/// 0.2 ms at 1.5 GiB/s), while per-chunk coder tables cost well under 0.1% of ratio at this size
/// (measured in docs/FORMAT.md). A multiple of 4 KiB and of every element size.
pub const DEFAULT_CHUNK_SIZE: u32 = 256 << 10;
/// Chunks in flight per worker thread: enough that a worker finding its next chunk already read
/// never waits on the reader/writer thread, small enough that the window stays about 1 MiB of
/// input plus its output per thread at the default chunk size.
const WINDOW_PER_THREAD: usize = 4;
/// zstd level for non-float data: level 3, zstd's default. Measured 2026-11-22 on MiniLM's
/// tokenizer.json + vocab.txt (698 KB) in 256 KiB blocks (`zstd -b1 -B262144`, shared 2-core VM):
/// level 1 335,978 bytes at ~205 MB/s, level 2 324,868 at ~138 MB/s, level 3 324,609 at
/// ~125 MB/s. Level 1 would save ~2 ms of CPU per model directory (~1% of a BF16 pack) for 3.5%
/// larger output on these files, level 2 is within noise of level 3 in speed; neither is worth
/// a lower ratio, and higher levels buy little on files of a few MB.
pub const ZSTD_LEVEL: u8 = 3;

/// Errors of `pack`; each names the input or output at fault.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    /// The input path does not exist.
    #[error("input {0} does not exist")]
    InputMissing(PathBuf),
    /// The input directory holds no regular files (or every one is excluded).
    #[error("input {0} holds no files to pack (after excludes)")]
    InputEmpty(PathBuf),
    /// A Hugging Face cache repository whose snapshot to pack cannot be chosen.
    #[error("{path} {msg}")]
    HfCache { path: PathBuf, msg: String },
    /// The input is neither a directory nor a `.safetensors` or GGUF file.
    #[error("input {0} is neither a directory nor a .safetensors or GGUF file")]
    InputKind(PathBuf),
    /// Reading or writing failed.
    #[error("{path}: {msg}")]
    Io { path: PathBuf, msg: String },
    /// A `.safetensors` file is malformed.
    #[error("{path}: malformed safetensors: {msg}")]
    Safetensors { path: PathBuf, msg: String },
    /// A symbolic link that upg does not follow (see docs/DESIGN.md: links to directories, dangling links).
    #[error("{path}: {msg}")]
    Symlink { path: PathBuf, msg: String },
    /// The output would be written inside the input directory.
    #[error("output {output} is inside the input directory {input}; write it elsewhere")]
    OutputInsideInput { output: PathBuf, input: PathBuf },
    /// The output exists and `--force` was not given.
    #[error("output {0} exists (use --force to overwrite)")]
    OutputExists(PathBuf),
    /// A path in the input cannot be stored (not UTF-8, too long, ...).
    #[error("{path}: cannot be stored: {msg}")]
    BadPath { path: PathBuf, msg: String },
    /// Invalid option value.
    #[error("{0}")]
    Options(String),
    /// A codec refused its input.
    #[error("{path}: tensor {tensor}: {msg}")]
    Codec {
        path: PathBuf,
        tensor: String,
        msg: String,
    },
}

fn io_err(path: &Path, e: std::io::Error) -> PackError {
    PackError::Io {
        path: path.to_path_buf(),
        msg: e.to_string(),
    }
}

#[derive(Debug, Clone)]
pub struct PackOptions {
    pub chunk_size: u32,
    /// Worker threads (0 = all cores).
    pub threads: usize,
    pub force: bool,
    /// Progress and temporary-output reports (silent by default).
    pub hooks: super::Hooks,
    /// Lossy preset for the tensors it applies to (None = lossless archive).
    pub preset: Option<Preset>,
    /// Per-tensor overrides, first match wins: (glob pattern on the tensor name, preset or None
    /// for lossless). Applied before the default selection rule.
    pub overrides: Vec<(String, Option<Preset>)>,
    /// `--bits B`: the archive's bytes x 8 / the model's weights should be B. The tensors the
    /// preset selects are then quantized with steps from one model-wide allocation
    /// (`budget.rs`) instead of the preset's own rate; `preset` still selects them.
    pub bits: Option<f64>,
    /// `--exclude`: glob patterns of input paths not to store (see [`input::exclude_matches`]).
    pub exclude: Vec<String>,
    /// Skip [`input::DEFAULT_EXCLUDES`] (`.git`, `.cache/huggingface`) too, saying so.
    pub default_excludes: bool,
}

impl Default for PackOptions {
    fn default() -> Self {
        PackOptions {
            chunk_size: DEFAULT_CHUNK_SIZE,
            threads: 0,
            force: false,
            hooks: super::Hooks::default(),
            preset: None,
            overrides: Vec::new(),
            bits: None,
            exclude: Vec::new(),
            default_excludes: true,
        }
    }
}

/// Tensors with fewer elements stay lossless under a preset by default: norms, biases and small
/// tables are a negligible share of the bytes, and errors in them cost quality out of proportion.
pub const MIN_QUANT_ELEMENTS: u64 = 65_536;

/// Glob match with `*` (any run, including '/' and '.') and `?` (one character).
pub fn glob_match(pat: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pat.chars().collect(), name.chars().collect());
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(sp) = star {
            pi = sp + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// The preset a tensor gets: an override by name if one matches, else the default rule (2-D
/// float tensors with at least `MIN_QUANT_ELEMENTS` elements). Non-float tensors are never
/// quantized, whatever the override says (the second value says why, for the summary).
pub fn choose_preset(
    opts: &PackOptions,
    name: &str,
    float: bool,
    shape: &[usize],
    numel: u64,
) -> (Option<Preset>, &'static str) {
    let Some(default) = opts.preset else {
        return (None, "lossless archive");
    };
    let explicit = opts
        .overrides
        .iter()
        .find(|(p, _)| glob_match(p, name))
        .map(|(_, c)| *c);
    if !float {
        let why = if explicit.flatten().is_some() {
            NOT_FLOAT_KEPT
        } else {
            "not a float tensor"
        };
        return (None, why);
    }
    match explicit {
        Some(c) => (c, "override"),
        None if shape.len() == 2 && numel >= MIN_QUANT_ELEMENTS => (Some(default), "default rule"),
        None => (None, "small or not 2-D"),
    }
}

const NOT_FLOAT_KEPT: &str = "not a float tensor: kept lossless";

/// Lossy statistics of one tensor, stored in the archive's metadata.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct TensorQuality {
    pub file: String,
    pub name: String,
    pub preset: String,
    pub params: u64,
    pub bytes_in: u64,
    pub stored: u64,
    pub bits_per_weight: f64,
    pub snr_db: f64,
    pub rel_rms: f64,
    pub max_abs_err: f64,
    pub nonfinite: u64,
}

/// Bytes in and out for one class of data (a dtype, or "other files").
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ClassTotals {
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub tensors: u64,
    pub params: u64,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PackSummary {
    pub files: usize,
    pub tensors: u64,
    pub params: u64,
    pub bytes_in: u64,
    /// Size of the archive file, index and framing included.
    pub bytes_out: u64,
    pub chunks: u64,
    pub dedup_chunks: u64,
    pub dedup_bytes: u64,
    pub per_class: BTreeMap<String, ClassTotals>,
    pub seconds: f64,
    pub threads: usize,
    /// Lossy archives: per-tensor figures (lossless tensors are not listed).
    pub lossy: Vec<TensorQuality>,
    /// Lossy archives: whole-model figures over the quantized tensors.
    pub lossy_total: Option<TensorQuality>,
    /// What was chosen or skipped (a Hugging Face cache's snapshot, excluded paths, tensors a
    /// preset pattern matched but that stayed lossless), for stderr.
    pub notices: Vec<String>,
    /// The archive is likely not what the user expects (no tensors found, a PyTorch pickle,
    /// an archive larger than its input), for stderr.
    pub warnings: Vec<String>,
    /// `--bits`: the budget, the size predicted before packing, and the archive's real
    /// bytes x 8 / weights.
    pub bits_budget: Option<BitsBudget>,
}

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct BitsBudget {
    pub target: f64,
    pub predicted: f64,
    pub achieved: f64,
    pub weights: u64,
}

/// One regular file to store.
struct InputFile {
    abs: PathBuf,
    rel: String,
    mode: u32,
    size: u64,
}

/// How one segment is coded.
#[derive(Clone)]
struct SegPlan {
    kind: SegmentKind,
    start: u64,
    len: u64,
    codec: Codec,
    /// Class for the summary: dtype name, or "other files".
    class: String,
    tensor: Option<(String, u64)>, // name, parameter count
    preset: Option<Preset>,
    shape: Vec<usize>,
    /// Decoded bytes per chunk: the pack's chunk size, or for ggml block tensors the largest
    /// whole number of blocks that fits in it (chunks never split a block, so each decodes alone).
    chunk_size: u32,
}

impl SegPlan {
    /// Bytes that are not tensor data (headers, padding, files other than weights): zstd.
    fn zstd(kind: SegmentKind, start: u64, len: u64, chunk_size: u32) -> Self {
        SegPlan {
            kind,
            start,
            len,
            codec: Codec::Zstd(ZSTD_LEVEL),
            class: "other files".into(),
            tensor: None,
            preset: None,
            shape: Vec::new(),
            chunk_size,
        }
    }
}

fn plan_file(
    f: &InputFile,
    opts: &PackOptions,
    notices: &mut Vec<String>,
) -> Result<Vec<SegPlan>, PackError> {
    if is_gguf_file(&f.abs).map_err(|e| io_err(&f.abs, e))? {
        return plan_gguf(f, opts, notices);
    }
    if !f.rel.ends_with(".safetensors") {
        return Ok(vec![SegPlan::zstd(
            SegmentKind::Plain,
            0,
            f.size,
            opts.chunk_size,
        )]);
    }
    let layout = st::Layout::read(&f.abs).map_err(|e| match e {
        st::StError::Io(e) => io_err(&f.abs, e),
        e => PackError::Safetensors {
            path: f.abs.clone(),
            msg: e.to_string(),
        },
    })?;
    let mut segs = vec![SegPlan::zstd(
        SegmentKind::StHeader,
        0,
        layout.data_start,
        opts.chunk_size,
    )];
    for t in &layout.tensors {
        let kind = st::float_kind(t.dtype);
        let (preset, why) = choose_preset(opts, &t.name, kind.is_some(), &t.shape, t.numel);
        if why == NOT_FLOAT_KEPT {
            notices.push(format!("{}: {} ({:?}) is {why}", f.rel, t.name, t.dtype));
        }
        // The default rule keeps 1-D (and small) tensors lossless; an explicit override may
        // still quantize them, which is allowed but said.
        if why == "override" && preset.is_some() && t.shape.len() < 2 {
            notices.push(format!(
                "{}: {} is {}-D but quantized by an --override (the default keeps 1-D tensors lossless; --keep it to undo)",
                f.rel,
                t.name,
                t.shape.len()
            ));
        }
        let codec = match (kind, preset) {
            (Some(k), Some(_)) => Codec::Quant(k),
            (Some(k), None) => Codec::Float(k),
            (None, _) => Codec::Zstd(ZSTD_LEVEL),
        };
        segs.push(SegPlan {
            kind: SegmentKind::Tensor,
            start: layout.data_start + t.start,
            len: t.end - t.start,
            codec,
            class: format!("{:?}", t.dtype),
            tensor: Some((t.name.clone(), t.numel)),
            preset,
            shape: t.shape.clone(),
            chunk_size: opts.chunk_size,
        });
    }
    Ok(segs)
}

/// Does the file start with the GGUF magic? (Planned by content, not by name.)
fn is_gguf_file(path: &Path) -> std::io::Result<bool> {
    let (f, _) = crate::storage::open_regular(path)?;
    let mut b = [0u8; 4];
    match f.read_exact_at(&mut b, 0) {
        Ok(()) => Ok(gguf::is_gguf(&b)),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

/// How the data of a GGUF tensor of this ggml type is coded: float types through the float
/// coder, block types with a known layout through the block coder, the rest (integer tensors,
/// block types newer than the layout table) with zstd.
pub fn gguf_codec(ty: gguf::GgmlType) -> Codec {
    use crate::codec::FloatKind;
    match ty.name {
        "F32" => Codec::Float(FloatKind::F32),
        "F16" => Codec::Float(FloatKind::F16),
        "BF16" => Codec::Float(FloatKind::Bf16),
        "F64" => Codec::Float(FloatKind::F64),
        _ => match u8::try_from(ty.id)
            .ok()
            .filter(|&id| crate::codec::block::layout(id).is_some())
        {
            Some(id) => Codec::Block(id),
            None => Codec::Zstd(ZSTD_LEVEL),
        },
    }
}

/// A GGUF file: the header (magic .. data start, metadata and tensor infos verbatim) with zstd,
/// then each tensor's bytes coded by its ggml type, and whatever lies between or after tensors
/// (alignment padding) as plain bytes. A file whose header does not parse is stored whole as an
/// ordinary file, with a notice saying why; it is never refused. Always lossless: a preset
/// applies to safetensors tensors only (a GGUF's tensors are already quantized by their type).
fn plan_gguf(
    f: &InputFile,
    opts: &PackOptions,
    notices: &mut Vec<String>,
) -> Result<Vec<SegPlan>, PackError> {
    let src = File::open(&f.abs).map_err(|e| io_err(&f.abs, e))?;
    // SAFETY: read-only map of an input file that pack does not modify; only the header pages
    // are touched, and the map is dropped before the pipeline reads the file with pread.
    let map = unsafe { memmap2::Mmap::map(&src) }.map_err(|e| io_err(&f.abs, e))?;
    let plain = |start, len, kind| SegPlan::zstd(kind, start, len, opts.chunk_size);
    let g = match gguf::Gguf::parse(&map, f.size) {
        Ok(g) => g,
        Err(e) => {
            notices.push(format!(
                "{}: GGUF header not understood ({e}); stored as an ordinary file",
                f.rel
            ));
            return Ok(vec![plain(0, f.size, SegmentKind::Plain)]);
        }
    };
    if opts.preset.is_some() && !g.tensors.is_empty() {
        notices.push(format!(
            "{}: GGUF tensors are stored lossless (the preset applies to safetensors files)",
            f.rel
        ));
    }
    let header_end = g.data_start.min(f.size);
    let mut segs = vec![plain(0, header_end, SegmentKind::GgufHeader)];
    let mut pos = header_end;
    for (start, end, t) in g.spans() {
        if start > pos {
            segs.push(plain(pos, start - pos, SegmentKind::Plain));
        }
        let codec = gguf_codec(t.ty);
        let chunk_size = match codec {
            Codec::Block(_) => {
                let bb = t.ty.block_bytes;
                (opts.chunk_size / bb).max(1) * bb
            }
            _ => opts.chunk_size,
        };
        segs.push(SegPlan {
            kind: SegmentKind::Tensor,
            start,
            len: end - start,
            codec,
            class: format!("GGUF {}", t.ty.name),
            tensor: Some((t.name.clone(), t.elems)),
            preset: None,
            shape: t.dims.iter().rev().map(|&d| d as usize).collect(),
            chunk_size,
        });
        pos = end;
    }
    if f.size > pos {
        segs.push(plain(pos, f.size - pos, SegmentKind::Plain));
    }
    Ok(segs)
}

struct Job {
    /// Index of the input file.
    file: usize,
    seg: usize,
    offset: u64,
    len: usize,
    codec: Codec,
    plan: Option<Arc<TensorPlan>>,
}

struct Done {
    stored: Vec<u8>,
    codec: Codec,
    decoded_len: u32,
    stored_hash: u64,
    decoded_hash: u64,
    /// xxh3 of the input bytes the encoder coded (the decoded hash when lossless), compared with
    /// what the file's hasher read (see `hash`).
    input_hash: u64,
    /// De-duplication key: `decoded_hash << 64 | stored_hash`. Coding is deterministic, so
    /// equal decoded bytes under one codec give equal stored bytes; two different chunks would
    /// have to collide in both 64-bit hashes at once. (The first version hashed the decoded
    /// bytes a second time with xxh3-128, ~2% of pack time.)
    key: u128,
    /// Lossy chunks: the bytes the archive will serve, and the error statistics.
    served: Option<(Vec<u8>, QuantStats)>,
}

/// A chunk's input bytes and its encoding result, as they come back from the pool.
type Encoded = (Vec<u8>, Result<Done, String>);

/// Room for coder overhead beyond the input size (headers, a stream briefly larger than its
/// input before the raw fallback), so the output buffer is allocated once per chunk instead of
/// growing by doubling (the reallocation copies were ~2.5% of pack time).
const STORED_SLACK: usize = 4096;

fn dedup_key(decoded_hash: u64, stored_hash: u64) -> u128 {
    (u128::from(decoded_hash) << 64) | u128::from(stored_hash)
}

/// Encode one chunk into `stored` (a recycled buffer, cleared here).
fn encode_job(job: &Job, data: &[u8], mut stored: Vec<u8>) -> Result<Done, String> {
    stored.clear();
    stored.reserve(data.len().saturating_add(STORED_SLACK));
    if let (Some(plan), Codec::Quant(kind)) = (&job.plan, job.codec) {
        let stats = plan
            .encode_chunk(data, &mut stored)
            .map_err(|e| e.to_string())?;
        // Decode what was stored: the served bytes are what the reader will produce, hashed
        // from the real decoder output rather than from the encoder's idea of it.
        let mut served = vec![0u8; data.len()];
        crate::codec::quant::decode(kind, &stored, &mut served)
            .map_err(|e| format!("lossy round trip failed: {e}"))?;
        let (stored_hash, decoded_hash) = (xxh3_64(&stored), xxh3_64(&served));
        return Ok(Done {
            stored_hash,
            decoded_hash,
            input_hash: xxh3_64(data),
            key: dedup_key(decoded_hash, stored_hash),
            decoded_len: data.len() as u32,
            codec: job.codec,
            stored,
            served: Some((served, stats)),
        });
    }
    let mut codec = job
        .codec
        .encode_chosen(data, &mut stored)
        .map_err(|e| e.to_string())?;
    if stored.len() >= data.len() {
        // Coding did not pay: store verbatim, so no chunk is ever larger than its input.
        stored.clear();
        stored.extend_from_slice(data);
        codec = Codec::Raw;
    }
    let (stored_hash, decoded_hash) = (xxh3_64(&stored), xxh3_64(data));
    Ok(Done {
        stored_hash,
        decoded_hash,
        input_hash: decoded_hash,
        key: dedup_key(decoded_hash, stored_hash),
        stored,
        codec,
        decoded_len: data.len() as u32,
        served: None,
    })
}

fn check_output(inputs: &Path, output: &Path, force: bool) -> Result<(), PackError> {
    let in_abs = std::fs::canonicalize(inputs).map_err(|e| io_err(inputs, e))?;
    let parent = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let parent_abs = std::fs::canonicalize(&parent).map_err(|e| io_err(&parent, e))?;
    if in_abs.is_dir() && parent_abs.starts_with(&in_abs) {
        return Err(PackError::OutputInsideInput {
            output: output.into(),
            input: inputs.into(),
        });
    }
    match std::fs::symlink_metadata(output) {
        Ok(m) if m.is_dir() => Err(PackError::Io {
            path: output.into(),
            msg: "is a directory".into(),
        }),
        Ok(_) if !force => Err(PackError::OutputExists(output.into())),
        _ => Ok(()),
    }
}

/// Pack `input` (a model directory or one `.safetensors` file) into the archive `output`.
pub fn pack(input: &Path, output: &Path, opts: &PackOptions) -> Result<PackSummary, PackError> {
    pack_to(input, output, None, opts)
}

/// [`pack`] into `sink` instead of a local file (`None`: the local file `output`, checked and
/// written through a temporary). `output` is the name errors give the archive (for an upload:
/// its URL); the input checks against a local output are skipped for a sink.
pub fn pack_to(
    input: &Path,
    output: &Path,
    sink: Option<Box<dyn ArchiveSink>>,
    opts: &PackOptions,
) -> Result<PackSummary, PackError> {
    let cs = opts.chunk_size;
    if cs < 4096 || !cs.is_multiple_of(4096) || cs > format::MAX_CHUNK_LEN {
        return Err(PackError::Options(format!(
            "chunk size {cs} must be a multiple of 4096 between 4 KiB and {} MiB",
            format::MAX_CHUNK_LEN >> 20
        )));
    }
    let t0 = Instant::now();
    let input::Collected {
        files: inputs,
        mut notices,
        mut warnings,
    } = input::collect(input, opts)?;
    if sink.is_none() {
        check_output(input, output, opts.force)?;
    }
    let plans: Vec<Vec<SegPlan>> = inputs
        .iter()
        .map(|f| plan_file(f, opts, &mut notices))
        .collect::<Result<_, _>>()?;
    // `upg -v`: what will be stored how; `-vv`: every tensor's codec.
    for (f, plan) in inputs.iter().zip(&plans) {
        let tensors = plan.iter().filter(|p| p.tensor.is_some()).count();
        let lossy = plan.iter().filter(|p| p.preset.is_some()).count();
        tracing::info!(
            "{}: {} bytes, {tensors} tensors ({lossy} lossy)",
            f.rel,
            f.size
        );
        for p in plan {
            if let Some((name, _)) = &p.tensor {
                tracing::debug!(
                    "{}: {name} {:?} {:?} -> {:?}{}",
                    f.rel,
                    p.class,
                    p.shape,
                    p.codec,
                    p.preset.map(|x| format!(" ({x})")).unwrap_or_default()
                );
            }
        }
    }
    // A pattern that matches nothing is most likely a typo (or a tied `lm_head` that does not
    // exist): say so instead of silently packing those tensors under the default preset.
    if opts.preset.is_some() {
        for (pat, _) in &opts.overrides {
            let hit = plans
                .iter()
                .flatten()
                .any(|p| p.tensor.as_ref().is_some_and(|(n, _)| glob_match(pat, n)));
            if !hit {
                notices.push(format!(
                    "pattern {pat:?} (--override/--keep) matched no tensor"
                ));
            }
        }
    }

    let threads = if opts.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        opts.threads
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| PackError::Options(format!("thread pool: {e}")))?;

    let mut w: Box<dyn ArchiveSink> = match sink {
        Some(s) => s,
        None => Box::new(FileSink::create(output, &*opts.hooks).map_err(|e| io_err(output, e))?),
    };
    w.write_all(&format::superblock())
        .map_err(|e| io_err(output, e))?;
    let mut pos = format::SUPERBLOCK_LEN as u64;

    let total_in: u64 = inputs.iter().map(|f| f.size).sum();
    let bar = opts.hooks.start("packing", total_in);

    let mut chunks: Vec<ChunkRecord> = Vec::new();
    let mut dedup: HashMap<(u128, u32, Codec), u32> = HashMap::new();
    let mut summary = PackSummary {
        files: inputs.len(),
        threads,
        notices,
        ..Default::default()
    };
    let mut original_sha: BTreeMap<String, String> = BTreeMap::new();
    let mut lossy_total = QuantStats::default();
    let mut files = Vec::with_capacity(inputs.len());
    // Chunk buffers (input, stored) recycled through the pipeline: at most one window of each.
    let mut free_in: Vec<Vec<u8>> = Vec::new();
    let mut free_out: Vec<Vec<u8>> = Vec::new();

    // Every chunk job of every file, in archive order (one small record per chunk, like the
    // index). Lossy tensors need tensor-wide parameters (scales, pruning threshold) computed
    // from the whole tensor before any chunk is coded: computed here for each lossy file (its
    // tensors in parallel) from a read-only map that is dropped again at once; the plans
    // themselves are a few hundred bytes per tensor.
    let mut budget = match opts.bits {
        Some(b) => Some(budget::plan(&inputs, &plans, b, &pool)?),
        None => None,
    };
    let mut jobs: Vec<Job> = Vec::new();
    // Global index of each file's first job; `file_jobs[k + 1] - file_jobs[k]` jobs per file.
    let mut file_jobs: Vec<usize> = Vec::with_capacity(inputs.len().saturating_add(1));
    for (fi, (f, plan)) in inputs.iter().zip(&plans).enumerate() {
        file_jobs.push(jobs.len());
        let lossy_file = plan.iter().any(|p| p.preset.is_some());
        let tplans: Vec<Option<Arc<TensorPlan>>> = if let Some(b) = budget.as_mut() {
            std::mem::take(&mut b.plans[fi])
        } else if lossy_file {
            let (src, _) = crate::storage::open_regular(&f.abs).map_err(|e| io_err(&f.abs, e))?;
            // SAFETY: read-only map of an input file that pack does not modify.
            let map = unsafe { memmap2::Mmap::map(&src) }.map_err(|e| io_err(&f.abs, e))?;
            pool.install(|| {
                plan.par_iter()
                    .map(|p| match (p.preset, p.codec) {
                        (Some(preset), Codec::Quant(kind)) => {
                            let range = p.start as usize..(p.start + p.len) as usize;
                            let bytes = map.get(range).ok_or_else(|| {
                                io_err(
                                    &f.abs,
                                    std::io::Error::other("file shrank while being packed"),
                                )
                            })?;
                            let tp =
                                TensorPlan::new(preset, kind, &p.shape, bytes).map_err(|e| {
                                    PackError::Codec {
                                        path: f.abs.clone(),
                                        tensor: p
                                            .tensor
                                            .as_ref()
                                            .map_or_else(String::new, |t| t.0.clone()),
                                        msg: e.to_string(),
                                    }
                                })?;
                            Ok(Some(Arc::new(tp)))
                        }
                        _ => Ok(None),
                    })
                    .collect::<Result<_, PackError>>()
            })?
        } else {
            vec![None; plan.len()]
        };
        for (si, (p, tplan)) in plan.iter().zip(tplans).enumerate() {
            let mut off = 0u64;
            while off < p.len {
                let len = (p.len - off).min(u64::from(p.chunk_size)) as usize;
                jobs.push(Job {
                    file: fi,
                    seg: si,
                    offset: p.start + off,
                    len,
                    codec: p.codec,
                    plan: tplan.clone(),
                });
                off += len as u64;
            }
            let c = summary.per_class.entry(p.class.clone()).or_default();
            c.bytes_in += p.len;
            if let Some((_, n)) = &p.tensor {
                c.tensors += 1;
                c.params += n;
                summary.tensors += 1;
                summary.params += n;
            }
        }
    }
    file_jobs.push(jobs.len());
    if summary.tensors == 0 {
        warnings.push(format!(
            "no tensors found in {} (no .safetensors or GGUF file with tensors): {} stored with \
             lossless zstd only, no float coding",
            input.display(),
            if inputs.len() == 1 {
                "its file is".to_string()
            } else {
                format!("its {} files are", inputs.len())
            }
        ));
    }
    // Whole-file SHA-256 on hasher threads (see `hash`): one per file, several files at once.
    // One hasher keeps up with about four encoder threads (SHA-256 ~1.5-2 GB/s, encoding
    // ~0.4-0.5 GB/s per thread); more than 8 at once would only compete for memory bandwidth.
    let mut hashers = hash::Hashers::new(
        (0..inputs.len())
            .map(|k| hash::HashJob {
                path: inputs[k].abs.clone(),
                pieces: jobs[file_jobs[k]..file_jobs[k + 1]]
                    .iter()
                    .map(|j| (j.offset, j.len))
                    .collect(),
            })
            .collect(),
        threads.div_ceil(4).clamp(1, 8),
    );

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
    let start_storing = |k: usize| Storing {
        segments: plans[k]
            .iter()
            .map(|p| Segment {
                kind: p.kind,
                len: p.len,
                chunk_size: p.chunk_size,
                chunks: Vec::new(),
            })
            .collect(),
        input_hashes: Vec::new(),
        served_sha: Sha256::new(),
        hashed: 0,
        seg_stats: vec![QuantStats::default(); plans[k].len()],
        lossy: plans[k].iter().any(|p| p.preset.is_some()),
    };
    // Close file `k` once all its chunks are stored: check its size, record its entry.
    let mut finish_file = |k: usize, s: Storing| -> Result<(), PackError> {
        let f = &inputs[k];
        if s.hashed != f.size {
            return Err(io_err(
                &f.abs,
                std::io::Error::other("file changed size while being packed"),
            ));
        }
        let hashed = hashers.take(k).map_err(|e| io_err(&f.abs, e))?;
        if hashed.piece_hashes != s.input_hashes {
            return Err(io_err(
                &f.abs,
                std::io::Error::other("file changed while being packed"),
            ));
        }
        let orig = hashed.sha256;
        let served: [u8; 32] = if s.lossy {
            original_sha.insert(f.rel.clone(), hex::encode(orig));
            s.served_sha.finalize().into()
        } else {
            orig
        };
        for (p, st) in plans[k].iter().zip(&s.seg_stats) {
            if let (Some(preset), Some((name, params))) = (p.preset, &p.tensor) {
                let row = quality_row(&f.rel, name, &preset.to_string(), *params, p.len, st);
                summary.lossy.push(row);
                lossy_total.merge(st);
            }
        }
        files.push(FileEntry {
            path: f.rel.clone(),
            mode: f.mode,
            size: f.size,
            sha256: served,
            segments: s.segments,
        });
        Ok(())
    };
    // Store one encoded chunk (called in archive order): hash, de-duplicate, append, record.
    // Returns the stored-bytes buffer for reuse.
    let mut store = |s: &mut Storing,
                     j: &Job,
                     data: &[u8],
                     d: Result<Done, String>|
     -> Result<Vec<u8>, PackError> {
        let plan = &plans[j.file];
        let d = d.map_err(|msg| PackError::Codec {
            path: inputs[j.file].abs.clone(),
            tensor: plan[j.seg]
                .tensor
                .as_ref()
                .map_or_else(|| "-".into(), |t| t.0.clone()),
            msg,
        })?;
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
        let class = &plan[j.seg].class;
        let id = match dedup.get(&key) {
            Some(&id) => {
                summary.dedup_chunks += 1;
                summary.dedup_bytes += u64::from(d.decoded_len);
                id
            }
            None => {
                let id = u32::try_from(chunks.len()).map_err(|_| {
                    PackError::Options("more than 2^32 chunks: use a larger --chunk-size".into())
                })?;
                w.write_all(&d.stored).map_err(|e| io_err(output, e))?;
                let (codec_id, codec_param) = d.codec.to_id();
                chunks.push(ChunkRecord {
                    offset: pos,
                    stored_len: d.stored.len() as u32,
                    decoded_len: d.decoded_len,
                    codec_id,
                    codec_param,
                    stored_hash: d.stored_hash,
                    decoded_hash: d.decoded_hash,
                });
                pos += d.stored.len() as u64;

                summary
                    .per_class
                    .get_mut(class)
                    .expect("class registered above")
                    .bytes_out += d.stored.len() as u64;
                dedup.insert(key, id);
                id
            }
        };
        s.segments[j.seg].chunks.push(id);
        // Counts from the first stored chunk (see `bar_inc`).
        bar.inc(data.len() as u64);
        Ok(d.stored)
    };
    // Reads into a recycled buffer: resizing a buffer that already held a chunk neither
    // allocates nor zero-fills (fresh zeroed 256 KiB buffers cost page faults and a memset).
    let read = |src: &File, j: &Job, mut b: Vec<u8>| -> Result<Vec<u8>, PackError> {
        b.resize(j.len, 0);
        src.read_exact_at(&mut b, j.offset).map_err(|e| {
            let e = if e.kind() == std::io::ErrorKind::UnexpectedEof {
                std::io::Error::other("file shrank while being packed")
            } else {
                e
            };
            io_err(&inputs[j.file].abs, e)
        })?;
        Ok(b)
    };
    let window = threads
        .checked_mul(WINDOW_PER_THREAD)
        .ok_or_else(|| PackError::Options("too many threads".into()))?;
    // The calling thread hashes and stores; the pool reads and encodes (see the module header).
    // The window runs across file boundaries: a small file's chunks are encoded while the
    // previous file's last chunks still are, instead of after a drain at every file end.
    pool.in_place_scope(|scope| -> Result<(), PackError> {
        let (tx, rx) = std::sync::mpsc::channel::<(usize, Result<Encoded, PackError>)>();
        // Results that arrived ahead of their turn, slot i = job `stored + i`.
        let mut ready: std::collections::VecDeque<Option<Encoded>> =
            std::collections::VecDeque::with_capacity(window);
        let (mut submitted, mut stored) = (0usize, 0usize);
        // Open input files of the window: (file index, handle), in order.
        let mut open: std::collections::VecDeque<(usize, Arc<File>)> =
            std::collections::VecDeque::new();
        // Next file to finish (its entry is pushed once all its chunks are stored).
        let mut next_done = 0usize;
        let mut cur: Option<Storing> = None;
        loop {
            // Files whose chunks are all stored (empty files included), in order.
            while next_done < inputs.len() && file_jobs[next_done + 1] <= stored {
                let s = cur.take().unwrap_or_else(|| start_storing(next_done));
                finish_file(next_done, s)?;
                if open.front().is_some_and(|(k, _)| *k == next_done) {
                    open.pop_front();
                }
                next_done += 1;
            }
            if stored == jobs.len() {
                break;
            }
            while submitted < jobs.len() && submitted - stored < window {
                let j = &jobs[submitted];
                if open.back().is_none_or(|(k, _)| *k != j.file) {
                    let f = &inputs[j.file];
                    let (src, _) =
                        crate::storage::open_regular(&f.abs).map_err(|e| io_err(&f.abs, e))?;
                    open.push_back((j.file, Arc::new(src)));
                }
                let src = Arc::clone(&open.back().expect("pushed above").1);
                let tx = tx.clone();
                let idx = submitted;
                let in_buf = free_in.pop().unwrap_or_default();
                let out_buf = free_out.pop().unwrap_or_default();
                let read = &read;
                scope.spawn(move |_| {
                    let r = read(&src, j, in_buf).map(|data| {
                        // A panicking encoder becomes this chunk's error: the calling
                        // thread waits for every result, so each task must send one.
                        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            encode_job(j, &data, out_buf)
                        }))
                        .unwrap_or_else(|_| Err("encoder panicked".into()));
                        (data, r)
                    });
                    // The receiver is gone only when packing already failed.
                    let _ = tx.send((idx, r));
                });
                submitted += 1;
                ready.push_back(None);
            }
            while ready.front().is_some_and(|r| r.is_none()) {
                let (idx, r) = rx
                    .recv()
                    .map_err(|_| PackError::Options("encoder threads exited".into()))?;
                ready[idx - stored] = Some(r?);
            }
            while let Some(Some((data, r))) = ready.front_mut().map(|r| r.take()) {
                ready.pop_front();
                let j = &jobs[stored];
                // Files before this chunk's are complete: finish them first (empty ones too).
                while next_done < j.file {
                    let s = cur.take().unwrap_or_else(|| start_storing(next_done));
                    finish_file(next_done, s)?;
                    if open.front().is_some_and(|(k, _)| *k == next_done) {
                        open.pop_front();
                    }
                    next_done += 1;
                }
                let s = cur.get_or_insert_with(|| start_storing(j.file));
                free_out.push(store(s, j, &data, r)?);
                free_in.push(data);
                stored += 1;
            }
        }
        Ok(())
    })?;
    drop(bar);

    summary.chunks = chunks.len() as u64;
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
            &lossy_total,
        ));
    }
    let meta = serde_json::json!({
        "tool": format!("upg {}", env!("CARGO_PKG_VERSION")),
        "chunk_size": cs,
        "preset": match (opts.bits, opts.preset) {
            (Some(b), _) => format!("bits {b}"),
            (None, p) => p.map_or_else(|| "lossless".to_string(), |p| p.to_string()),
        },
        "overrides": opts.overrides.iter().map(|(p, c)| format!("{p}={}", c.map_or_else(|| "lossless".into(), |c| c.to_string()))).collect::<Vec<_>>(),
        "lossy": summary.lossy,
        "lossy_total": summary.lossy_total,
        "original_sha256": original_sha,
    });
    // The lowest minor that records what was used, so older readers refuse only archives
    // they cannot read, and with a precise error (docs/FORMAT.md, versioning).
    let gguf_kinds = files
        .iter()
        .any(|f| f.segments.iter().any(|s| s.kind == SegmentKind::GgufHeader));
    let minor = chunks
        .iter()
        .filter_map(|c| Codec::from_id(c.codec_id, c.codec_param).ok())
        .map(Codec::format_minor)
        .chain(gguf_kinds.then_some(1))
        .max()
        .unwrap_or(0);
    let index = Index {
        chunks,
        files,
        meta: meta.to_string(),
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
        index_offset: pos,
        index_len: ib.len() as u64,
        index_hash: xxh3_64(&ib),
        minor,
    };
    w.write_all(&ib).map_err(|e| io_err(output, e))?;
    w.write_all(&format::footer_bytes(&footer))
        .map_err(|e| io_err(output, e))?;
    w.finish().map_err(|e| io_err(output, e))?;
    summary.bytes_in = total_in;
    summary.bytes_out = pos + ib.len() as u64 + format::FOOTER_LEN as u64;
    if summary.bytes_out > total_in {
        warnings.push(format!(
            "archive is larger than input by {} bytes ({} in, {} out): the index and framing \
             outweigh what compression saved",
            summary.bytes_out - total_in,
            total_in,
            summary.bytes_out
        ));
    }
    summary.warnings = warnings;
    if let (Some(b), Some(target)) = (&budget, opts.bits) {
        summary.bits_budget = Some(BitsBudget {
            target,
            predicted: b.predicted_bits,
            achieved: summary.bytes_out as f64 * 8.0 / b.weights.max(1) as f64,
            weights: b.weights,
        });
    }
    summary.seconds = t0.elapsed().as_secs_f64();
    Ok(summary)
}

pub(crate) fn quality_row(
    file: &str,
    name: &str,
    preset: &str,
    params: u64,
    bytes_in: u64,
    st: &QuantStats,
) -> TensorQuality {
    TensorQuality {
        file: file.into(),
        name: name.into(),
        preset: preset.into(),
        params,
        bytes_in,
        stored: st.stored_bytes,
        bits_per_weight: if params == 0 {
            0.0
        } else {
            st.stored_bytes as f64 * 8.0 / params as f64
        },
        snr_db: st.snr_db(),
        rel_rms: st.rel_rms(),
        max_abs_err: st.max_abs_err,
        nonfinite: st.n_nonfinite,
    }
}

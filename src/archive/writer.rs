//! Streaming writer: `pack(input, output, options)`.
//!
//! Pipeline (a sliding window of `threads × WINDOW_PER_THREAD` chunks, in archive order, across
//! file boundaries: a file's first chunks are encoded while the previous file's last ones are,
//! so the small files of a model directory do not run one at a time after a drained window):
//! - the calling thread hands chunk jobs (with recycled buffers) to the rayon pool;
//! - the pool (`threads` workers) reads each chunk with `pread` and encodes it;
//! - hasher threads (`hash`, as many as workers) read each file once more and compute its
//!   SHA-256, several files at once (a SHA-256 must see a file's bytes in order, so one thread
//!   per file), at their own pace: nothing waits for a digest until the index is written;
//! - the calling thread takes the results back in file order, de-duplicates by decoded
//!   content, appends stored bytes to the output and records chunk records; each file's digest
//!   is checked against the encoder's reading (per-chunk input hashes) when the hasher has it,
//!   at the latest at the end.
//!
//! Reading, hashing and writing thus overlap the encoding instead of running between batches
//! (the first version ran them as phases of a batch, which left workers idle: 2 threads packed
//! at ~1.3x one thread's speed). The calling thread is not a pool worker and is not counted in
//! `threads`. It used to hash as well, and at SHA-256's ~1.5 GB/s per thread that capped pack
//! at 0.75 GiB/s on 16 cores (issue 9); then it waited at every file end for that file's
//! digest, from at most 4 hashers at a time (1.65 GiB/s on 16 cores); now it only
//! de-duplicates and writes. Reading in the workers rather than in the calling thread keeps
//! that thread, the serial part, as short as possible.
//!
//! The stages are types in `writer/`: `input` walks the input into files, `plan` decides each
//! file's segments and codecs and makes one job per chunk with its `Encoder` (`budget` computes
//! the tensor plans of `--bits`), `pipeline` runs the window, `hash` the hasher threads, `store`
//! de-duplicates, appends and writes index and footer, through an `ArchiveSink` (`sink`: a
//! local temporary renamed into place, or an upload); [`pack_to`] only wires them.
//!
//! Memory is therefore bounded by one window of input plus its encoded output (plus per-thread
//! coder scratch, the index and a job record of under 64 bytes per chunk), whatever the shard size. The archive is written to a temporary file beside the output and
//! renamed into place only after the footer is written and synced, so a failed pack (bad input,
//! disk full, interrupt) never leaves a file under the output name.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::codec::quant::{Preset, QuantStats};
use crate::format;

mod budget;
mod hash;
pub mod input;
mod pipeline;
mod plan;
mod sink;
mod store;

pub use plan::{MIN_QUANT_ELEMENTS, choose_preset, gguf_codec, glob_match};
pub use sink::ArchiveSink;
use sink::FileSink;

/// Default decoded chunk size. 256 KiB: a 4 KiB random read decodes at most this much (about
/// 0.2 ms at 1.5 GiB/s), while per-chunk coder tables cost well under 0.1% of ratio at this size
/// (measured in docs/FORMAT.md). A multiple of 4 KiB and of every element size.
pub const DEFAULT_CHUNK_SIZE: u32 = 256 << 10;
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

/// Lossy statistics of one tensor, stored in the archive's metadata (read back leniently: a
/// missing field is empty or 0, a missing or `null` float NaN).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct TensorQuality {
    pub file: String,
    pub name: String,
    pub preset: String,
    pub params: u64,
    pub bytes_in: u64,
    pub stored: u64,
    #[serde(deserialize_with = "super::meta::f64_or_nan")]
    pub bits_per_weight: f64,
    #[serde(deserialize_with = "super::meta::f64_or_nan")]
    pub snr_db: f64,
    #[serde(deserialize_with = "super::meta::f64_or_nan")]
    pub rel_rms: f64,
    #[serde(deserialize_with = "super::meta::f64_or_nan")]
    pub max_abs_err: f64,
    pub nonfinite: u64,
}

/// What a stored row without a field reads as (see [`TensorQuality`]).
impl Default for TensorQuality {
    fn default() -> Self {
        TensorQuality {
            file: String::new(),
            name: String::new(),
            preset: String::new(),
            params: 0,
            bytes_in: 0,
            stored: 0,
            bits_per_weight: f64::NAN,
            snr_db: f64::NAN,
            rel_rms: f64::NAN,
            max_abs_err: f64::NAN,
            nonfinite: 0,
        }
    }
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
///
/// Only wiring: collect the input files (`input`), plan each file's segments and the chunk jobs
/// with their encoders (`plan`, `budget` for `--bits`), run the ordered pipeline (`pipeline`)
/// into the store (`store`), which writes through the sink (`sink`).
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
    let plans: Vec<Vec<plan::SegPlan>> = inputs
        .iter()
        .map(|f| plan::plan_file(f, opts, &mut notices))
        .collect::<Result<_, _>>()?;
    plan::describe(&inputs, &plans, opts, &mut notices);

    let threads = if opts.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        opts.threads
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| PackError::Options(format!("thread pool: {e}")))?;

    let w: Box<dyn ArchiveSink> = match sink {
        Some(s) => s,
        None => Box::new(FileSink::create(output, &*opts.hooks).map_err(|e| io_err(output, e))?),
    };
    let total_in: u64 = inputs.iter().map(|f| f.size).sum();
    let bar = opts.hooks.start("packing", total_in);

    let mut budget = match opts.bits {
        Some(b) => Some(budget::plan(&inputs, &plans, b, &pool)?),
        None => None,
    };
    let jobs = plan::jobs(&inputs, &plans, budget.as_mut(), &pool)?;
    let mut summary = PackSummary {
        files: inputs.len(),
        threads,
        notices,
        ..Default::default()
    };
    plan::tally(&plans, &mut summary);
    if summary.tensors == 0 {
        warnings.push(plan::no_tensors_warning(input, inputs.len()));
    }
    // Whole-file SHA-256 on hasher threads (see `hash`): one file per thread at a time, as many
    // threads as workers, so all shards of a model are hashed at once when there are cores for
    // them. A file's SHA-256 is sequential and the longest one bounds the pack (0.85 GiB/s per
    // thread on the 16-core GPU host, ~1.2 GB/s here), so hashing must start with the pack and
    // run beside the encoders, not one file after another behind the ordered writer. The
    // hashers and encoders share the cores (the CPU-bound work is the same either way); an idle
    // hasher slot costs nothing.
    let hashers = hash::Hashers::new(
        (0..inputs.len())
            .map(|k| hash::HashJob {
                path: inputs[k].abs.clone(),
                pieces: jobs.of_file(k).iter().map(|j| (j.offset, j.len)).collect(),
            })
            .collect(),
        threads,
    );
    let mut store = store::Store::new(&inputs, &plans, output, w, hashers, bar, summary)?;
    pipeline::run(&pool, threads, &inputs, &jobs, &mut store)?;
    let mut summary = store.finish(opts)?;

    summary.bytes_in = total_in;
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

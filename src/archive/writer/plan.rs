//! What each input file becomes, decided before any byte is coded: its segments (a header,
//! tensors, plain bytes) each with a codec ([`plan_file`]); then one [`Job`] per chunk, each with
//! its [`Encoder`] ([`jobs`]). A lossy tensor's encoder holds the tensor-wide parameters
//! (scales, pruning threshold, the `--bits` step) it was computed with, so a quantizing job
//! cannot exist without its plan: `Encoder::Lossy` is the only encoder that quantizes.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use rayon::prelude::*;

use super::budget::Budget;
use super::input::InputFile;
use super::{PackError, PackOptions, PackSummary, ZSTD_LEVEL, io_err};
use crate::codec::quant::{Preset, TensorPlan};
use crate::codec::{Codec, FloatKind};
use crate::format::SegmentKind;
use crate::{gguf, st};

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

/// How one segment is coded.
#[derive(Clone)]
pub(super) struct SegPlan {
    pub kind: SegmentKind,
    pub start: u64,
    pub len: u64,
    /// `Codec::Quant` exactly when `preset` is set.
    pub codec: Codec,
    /// Class for the summary: dtype name, or "other files".
    pub class: String,
    pub tensor: Option<(String, u64)>, // name, parameter count
    pub preset: Option<Preset>,
    pub shape: Vec<usize>,
    /// Decoded bytes per chunk: the pack's chunk size, or for ggml block tensors the largest
    /// whole number of blocks that fits in it (chunks never split a block, so each decodes alone).
    pub chunk_size: u32,
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

pub(super) fn plan_file(
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
pub(super) fn is_gguf_file(path: &Path) -> std::io::Result<bool> {
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

/// `upg -v`: what will be stored how; `-vv`: every tensor's codec. And a notice for each
/// `--override`/`--keep` pattern that matches no tensor.
pub(super) fn describe(
    inputs: &[InputFile],
    plans: &[Vec<SegPlan>],
    opts: &PackOptions,
    notices: &mut Vec<String>,
) {
    for (f, plan) in inputs.iter().zip(plans) {
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
}

/// Count each segment's bytes, tensors and parameters into the summary's totals and classes
/// (every class a segment names gets an entry, so the sink can add its stored bytes).
pub(super) fn tally(plans: &[Vec<SegPlan>], summary: &mut PackSummary) {
    for p in plans.iter().flatten() {
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

/// The warning of a pack that found no tensor in `input` (`files` files).
pub(super) fn no_tensors_warning(input: &Path, files: usize) -> String {
    format!(
        "no tensors found in {} (no .safetensors or GGUF file with tensors): {} stored with \
         lossless zstd only, no float coding",
        input.display(),
        if files == 1 {
            "its file is".to_string()
        } else {
            format!("its {files} files are")
        }
    )
}

pub(super) use lossless::LosslessCodec;

mod lossless {
    use crate::codec::{Codec, CodecError};

    /// A codec that reproduces its input exactly: any [`Codec`] but `Codec::Quant`, which only
    /// [`super::Encoder::Lossy`] runs (with its plan). The field is private to this module, so
    /// `Encoder::Lossless` cannot hold a quantizer: [`LosslessCodec::new`] is the only way in.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct LosslessCodec(Codec);

    impl LosslessCodec {
        /// `codec` as a lossless codec; `None` for `Codec::Quant`.
        pub fn new(codec: Codec) -> Option<LosslessCodec> {
            match codec {
                Codec::Quant(_) => None,
                Codec::Raw
                | Codec::Zstd(_)
                | Codec::Float(_)
                | Codec::Block(_)
                | Codec::F16ViaBf16 => Some(LosslessCodec(codec)),
            }
        }

        #[cfg(test)]
        pub fn codec(self) -> Codec {
            self.0
        }

        /// [`Codec::encode_chosen`] of the codec.
        pub fn encode_chosen(self, input: &[u8], out: &mut Vec<u8>) -> Result<Codec, CodecError> {
            self.0.encode_chosen(input, out)
        }
    }
}

/// How one chunk is coded.
#[derive(Clone)]
pub(super) enum Encoder {
    /// A lossless codec (never `Codec::Quant`: [`LosslessCodec`] cannot hold one), falling back
    /// to raw bytes where coding does not pay.
    Lossless(LosslessCodec),
    /// Quantize with the tensor-wide `plan` computed from the whole tensor.
    Lossy {
        kind: FloatKind,
        plan: Arc<TensorPlan>,
    },
}

/// One chunk to read and encode.
pub(super) struct Job {
    /// Index of the input file.
    pub file: usize,
    /// Index of the segment in the file's plan.
    pub seg: usize,
    pub offset: u64,
    pub len: usize,
    pub encoder: Encoder,
}

/// Every chunk job of every file, in archive order (one small record per chunk, like the index).
pub(super) struct Jobs {
    pub all: Vec<Job>,
    /// Global index of each file's first job, then the total: file `k` has jobs
    /// `start[k]..start[k + 1]`.
    pub start: Vec<usize>,
}

impl Jobs {
    pub fn of_file(&self, k: usize) -> &[Job] {
        &self.all[self.start[k]..self.start[k + 1]]
    }
}

/// The jobs of every file. Lossy tensors need tensor-wide parameters (scales, pruning
/// threshold) computed from the whole tensor before any chunk is coded: they come from the
/// `--bits` budget if there is one, else they are computed here for each lossy file (its
/// tensors in parallel) from a read-only map that is dropped again at once; the plans
/// themselves are a few hundred bytes per tensor.
pub(super) fn jobs(
    inputs: &[InputFile],
    plans: &[Vec<SegPlan>],
    mut budget: Option<&mut Budget>,
    pool: &rayon::ThreadPool,
) -> Result<Jobs, PackError> {
    let mut all: Vec<Job> = Vec::new();
    let mut start: Vec<usize> = Vec::with_capacity(inputs.len().saturating_add(1));
    for (fi, (f, plan)) in inputs.iter().zip(plans).enumerate() {
        start.push(all.len());
        let planned = budget.as_mut().map(|b| std::mem::take(&mut b.plans[fi]));
        for (si, (p, encoder)) in plan
            .iter()
            .zip(encoders(f, plan, planned, pool)?)
            .enumerate()
        {
            let mut off = 0u64;
            while off < p.len {
                let len = (p.len - off).min(u64::from(p.chunk_size)) as usize;
                all.push(Job {
                    file: fi,
                    seg: si,
                    offset: p.start + off,
                    len,
                    encoder: encoder.clone(),
                });
                off += len as u64;
            }
        }
    }
    start.push(all.len());
    Ok(Jobs { all, start })
}

/// One encoder per segment of `f`: its lossy segments with the tensor plans `planned` (from a
/// budget) or computed here.
fn encoders(
    f: &InputFile,
    plan: &[SegPlan],
    planned: Option<Vec<Option<Arc<TensorPlan>>>>,
    pool: &rayon::ThreadPool,
) -> Result<Vec<Encoder>, PackError> {
    let planned = match planned {
        Some(p) => p,
        None if plan.iter().any(|p| p.preset.is_some()) => tensor_plans(f, plan, pool)?,
        None => vec![None; plan.len()],
    };
    plan.iter()
        .zip(planned)
        .map(|(p, tp)| match (p.codec, tp) {
            (Codec::Quant(kind), Some(plan)) => Ok(Encoder::Lossy { kind, plan }),
            (codec, _) => LosslessCodec::new(codec)
                .map(Encoder::Lossless)
                .ok_or_else(|| codec_err(f, p, "no quantization plan".into())),
        })
        .collect()
}

/// The tensor plan of each lossy segment of `f` (its preset's own rate), computed in parallel.
fn tensor_plans(
    f: &InputFile,
    plan: &[SegPlan],
    pool: &rayon::ThreadPool,
) -> Result<Vec<Option<Arc<TensorPlan>>>, PackError> {
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
                    let tp = TensorPlan::new(preset, kind, &p.shape, bytes)
                        .map_err(|e| codec_err(f, p, e.to_string()))?;
                    Ok(Some(Arc::new(tp)))
                }
                _ => Ok(None),
            })
            .collect::<Result<_, PackError>>()
    })
}

fn codec_err(f: &InputFile, p: &SegPlan, msg: String) -> PackError {
    PackError::Codec {
        path: f.abs.clone(),
        tensor: p.tensor.as_ref().map_or_else(String::new, |t| t.0.clone()),
        msg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lossless_encoder_never_holds_a_quantizer() {
        for k in [
            FloatKind::Bf16,
            FloatKind::F16,
            FloatKind::F32,
            FloatKind::F64,
        ] {
            assert_eq!(LosslessCodec::new(Codec::Quant(k)), None);
            let c = LosslessCodec::new(Codec::Float(k)).unwrap();
            assert_eq!(c.codec(), Codec::Float(k));
        }
        for c in [
            Codec::Raw,
            Codec::Zstd(3),
            Codec::Block(2),
            Codec::F16ViaBf16,
        ] {
            assert_eq!(LosslessCodec::new(c).map(LosslessCodec::codec), Some(c));
        }
    }
}

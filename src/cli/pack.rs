//! `upg pack`: the pack options from the command line (presets, overrides, `--bits`), the
//! output (a local file or an s3:// upload), and the summary printed afterwards.

use std::path::PathBuf;

use super::CliError;
use crate::archive::writer::{DEFAULT_CHUNK_SIZE, PackOptions, pack_to};
use crate::codec::quant::Preset;

// Arguments of `upg pack`. No doc comment on the struct: the subcommand's about is the
// doc comment of the binary's `Cmd::Pack`.
#[derive(clap::Args)]
pub struct PackArgs {
    /// Model directory (every file is stored, less --exclude), a Hugging Face cache
    /// repository (`models--ORG--NAME`: the snapshot refs/main names, or the only one), or a
    /// single .safetensors or GGUF file.
    pub input: PathBuf,
    /// Output archive path (written to a temporary name, renamed when complete), or
    /// s3://BUCKET/KEY.upg: written straight into a multipart upload as it is packed (no
    /// local copy), visible only when complete (aborted on failure).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Worker threads (default: all cores). The calling thread, which hashes, de-duplicates
    /// and writes in file order, comes on top and is not counted.
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Decoded chunk size in bytes: the unit of random access (multiple of 4096).
    #[arg(long, default_value_t = DEFAULT_CHUNK_SIZE)]
    pub chunk_size: u32,
    /// Overwrite an existing output (a local file, or an object under the s3:// key).
    #[arg(long)]
    pub force: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// Quality dial: lossless (default, byte-exact) or a lossy preset: q8, q6, q5, q4, q3
    /// (about that many stored bits per quantized weight) or prime-sparse (the original
    /// report's INT8 + 50% pruning + codebook recipe). Lossy presets apply to 2-D float
    /// tensors with at least 65,536 elements; the rest stays lossless. Error figures are
    /// printed and stored in the archive.
    #[arg(long, value_name = "PRESET")]
    pub preset: Option<String>,
    /// Lossy with a size budget: the archive file's bytes x 8 / the model's weights = BITS
    /// (e.g. 4.25, the figure GGUF files are compared by), met within ~0.05. The same
    /// tensors as a preset are quantized, each with a step from one model-wide,
    /// calibration-free allocation (docs/QUANT.md); the pack prints the figure reached.
    #[arg(long, value_name = "BITS", conflicts_with = "preset")]
    pub bits: Option<f64>,
    /// Per-tensor override, PATTERN=PRESET (glob on the tensor name, `*` and `?`), first
    /// match wins; PRESET may be `lossless`. Repeatable, e.g. --override '*embed_tokens*=q8'.
    #[arg(long = "override", value_name = "PATTERN=PRESET")]
    pub overrides: Vec<String>,
    /// Keep tensors matching PATTERN lossless (same as --override PATTERN=lossless).
    #[arg(long, value_name = "PATTERN")]
    pub keep: Vec<String>,
    /// Lossy: list every quantized tensor's error figures (default: the worst few).
    #[arg(long)]
    pub tensors: bool,
    /// Do not store input paths matching PATTERN (glob, `*` and `?`; repeatable). A pattern
    /// with a `/` matches the path below the input (`onnx/*`), one without matches a file
    /// or directory name at any depth (`*.pt`, `pytorch_model*.bin`).
    #[arg(long, value_name = "PATTERN")]
    pub exclude: Vec<String>,
    /// Store `.git` and `.cache/huggingface` too (skipped by default, with a note: a git
    /// checkout's LFS objects and the Hub's download cache are second copies of the files).
    #[arg(long)]
    pub no_default_excludes: bool,
    #[command(flatten)]
    pub remote: super::remote::RemoteArgs,
}

/// `upg pack`: check the lossy options, pack (to a local file or an upload), print the summary.
pub fn run(args: PackArgs, quiet: bool) -> Result<u8, CliError> {
    let PackArgs {
        input,
        output,
        threads,
        chunk_size,
        force,
        json,
        preset,
        bits,
        overrides,
        keep,
        tensors,
        exclude,
        no_default_excludes,
        remote,
    } = args;
    let (mut preset, overrides) = lossy_options(preset.as_deref(), &overrides, &keep)?;
    if let Some(b) = bits {
        if !(b.is_finite() && b > 0.0 && b < 16.0) {
            return Err(format!(
                "--bits {b}: expected a number of bits per weight between 0 and 16"
            )
            .into());
        }
        if let Some((p, _)) = overrides.iter().find(|(_, c)| c.is_some()) {
            return Err(format!(
                "--override {p:?} gives a preset, but --bits allocates every quantized tensor's rate itself: only --keep (or =lossless) combines with --bits"
            )
            .into());
        }
        // selects the tensors exactly as a preset would; their steps come from the budget
        preset = Some(Preset::Q4);
    }
    let upload_to = match crate::storage::Location::parse(output.as_os_str())
        .map_err(|e| super::CliError::Usage(e.to_string()))?
    {
        crate::storage::Location::Remote(u) => Some(u),
        crate::storage::Location::Local(_) => None,
    };
    // An upload is written straight into a multipart upload as it is packed (no local
    // copy); it becomes visible only when complete and is aborted on any failure.
    let sink = match &upload_to {
        Some(u) => Some(super::remote::upload_sink(u, &remote, force)?),
        None => None,
    };
    let s = pack_to(
        &input,
        &output,
        sink,
        &PackOptions {
            chunk_size,
            threads,
            force,
            hooks: super::Terminal::hooks(!json && !quiet),
            preset,
            overrides,
            bits,
            exclude,
            default_excludes: !no_default_excludes,
        },
    )?;
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        if !quiet {
            super::print_pack_notes(&s);
        }
    } else if !quiet {
        super::print_pack_summary(&s, &output, tensors);
    }
    Ok(0)
}

type Overrides = Vec<(String, Option<Preset>)>;

/// Parse --preset, --override and --keep into the pack options.
fn lossy_options(
    preset_arg: Option<&str>,
    overrides: &[String],
    keep: &[String],
) -> Result<(Option<Preset>, Overrides), String> {
    let parse = |p: &str| -> Result<Option<Preset>, String> {
        if p.trim().eq_ignore_ascii_case("lossless") {
            Ok(None)
        } else {
            p.parse().map(Some).map_err(|_| {
                let names: Vec<String> = Preset::ALL.iter().map(|p| p.to_string()).collect();
                format!(
                    "unknown preset {p:?}; expected one of lossless, {}",
                    names.join(", ")
                )
            })
        }
    };
    let preset = parse(preset_arg.unwrap_or("lossless")).map_err(|e| format!("--preset: {e}"))?;
    let mut ov = Vec::new();
    for o in overrides {
        let (pat, p) = o
            .rsplit_once('=')
            .ok_or_else(|| format!("--override {o:?}: expected PATTERN=PRESET"))?;
        if pat.is_empty() {
            return Err(format!("--override {o:?}: empty pattern"));
        }
        ov.push((
            pat.to_string(),
            parse(p).map_err(|e| format!("--override {o:?}: {e}"))?,
        ));
    }
    ov.extend(keep.iter().map(|k| (k.clone(), None)));
    if preset.is_none()
        && let Some(o) = overrides
            .iter()
            .zip(&ov)
            .find_map(|(o, (_, p))| p.is_some().then_some(o))
    {
        let given = match preset_arg {
            Some(p) => format!("--preset {p} keeps"),
            None => "without --preset, the default keeps".into(),
        };
        return Err(format!(
            "--override {o:?} asks for a lossy preset, but {given} every tensor lossless: \
             give the lossy default with --preset (e.g. --preset q8) and --keep the tensors \
             that must stay exact"
        ));
    }
    Ok((preset, ov))
}

//! `upg`: pack, unpack, inspect, verify and benchmark model archives. Thin: parse, dispatch,
//! map errors to exit codes (0 ok, 1 verification failed, 2 error).

use std::path::PathBuf;
use std::process::ExitCode;
use upg::text::escaped;

use clap::{Parser, Subcommand};
use upg::archive::reader::DEFAULT_CACHE_BYTES;
use upg::archive::writer::{DEFAULT_CHUNK_SIZE, PackOptions, pack_to};
use upg::archive::{Archive, verify};
use upg::cli;
use upg::codec::quant::Preset;

#[derive(Parser)]
#[command(
    name = "upg",
    version,
    about = "Keep LLM weights compressed on disk; read them back byte-exact.",
    long_about = "upg packs a Hugging Face model directory (safetensors shards, configs, tokenizers) into one \
.upg archive with float-aware lossless compression, and serves any byte range back without unpacking. \
Mount an archive with `upg mount` (or `upg-mount`) to give unmodified tools the original files."
)]
struct Cli {
    /// More log output on stderr (-v: what each step does, -vv: debug); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Quiet: no progress bars, summaries or notes; errors and verification failures only.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Pack a model directory or one .safetensors file into an archive.
    Pack {
        /// Model directory (every file is stored, less --exclude), a Hugging Face cache
        /// repository (`models--ORG--NAME`: the snapshot refs/main names, or the only one), or a
        /// single .safetensors or GGUF file.
        input: PathBuf,
        /// Output archive path (written to a temporary name, renamed when complete), or
        /// s3://BUCKET/KEY.upg: written straight into a multipart upload as it is packed (no
        /// local copy), visible only when complete (aborted on failure).
        #[arg(short, long)]
        output: PathBuf,
        /// Worker threads (default: all cores). The calling thread, which hashes, de-duplicates
        /// and writes in file order, comes on top and is not counted.
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// Decoded chunk size in bytes: the unit of random access (multiple of 4096).
        #[arg(long, default_value_t = DEFAULT_CHUNK_SIZE)]
        chunk_size: u32,
        /// Overwrite an existing output (a local file, or an object under the s3:// key).
        #[arg(long)]
        force: bool,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
        /// Quality dial: lossless (default, byte-exact) or a lossy preset: q8, q6, q5, q4, q3
        /// (about that many stored bits per quantized weight) or prime-sparse (the original
        /// report's INT8 + 50% pruning + codebook recipe). Lossy presets apply to 2-D float
        /// tensors with at least 65,536 elements; the rest stays lossless. Error figures are
        /// printed and stored in the archive.
        #[arg(long, value_name = "PRESET")]
        preset: Option<String>,
        /// Lossy with a size budget: the archive file's bytes x 8 / the model's weights = BITS
        /// (e.g. 4.25, the figure GGUF files are compared by), met within ~0.05. The same
        /// tensors as a preset are quantized, each with a step from one model-wide,
        /// calibration-free allocation (docs/QUANT.md); the pack prints the figure reached.
        #[arg(long, value_name = "BITS", conflicts_with = "preset")]
        bits: Option<f64>,
        /// Per-tensor override, PATTERN=PRESET (glob on the tensor name, `*` and `?`), first
        /// match wins; PRESET may be `lossless`. Repeatable, e.g. --override '*embed_tokens*=q8'.
        #[arg(long = "override", value_name = "PATTERN=PRESET")]
        overrides: Vec<String>,
        /// Keep tensors matching PATTERN lossless (same as --override PATTERN=lossless).
        #[arg(long, value_name = "PATTERN")]
        keep: Vec<String>,
        /// Lossy: list every quantized tensor's error figures (default: the worst few).
        #[arg(long)]
        tensors: bool,
        /// Do not store input paths matching PATTERN (glob, `*` and `?`; repeatable). A pattern
        /// with a `/` matches the path below the input (`onnx/*`), one without matches a file
        /// or directory name at any depth (`*.pt`, `pytorch_model*.bin`).
        #[arg(long, value_name = "PATTERN")]
        exclude: Vec<String>,
        /// Store `.git` and `.cache/huggingface` too (skipped by default, with a note: a git
        /// checkout's LFS objects and the Hub's download cache are second copies of the files).
        #[arg(long)]
        no_default_excludes: bool,
        #[command(flatten)]
        remote: cli::remote::RemoteArgs,
    },
    /// Extract every file (or the FILEs named), byte-identical to what was packed.
    Unpack {
        /// The .upg archive to extract (a path, s3://BUCKET/KEY.upg or https://HOST/PATH.upg).
        archive: PathBuf,
        /// Only these stored files (paths as `upg ls` prints them; a directory takes all below).
        files: Vec<String>,
        /// Output directory (must not exist or be empty, unless --force).
        #[arg(short, long)]
        output: PathBuf,
        /// Replace an existing non-empty output directory.
        #[arg(long)]
        force: bool,
        /// Write every intact file of a damaged archive and name the damaged ones (which are not
        /// written: a partial file never looks complete); exit 1 if any is damaged.
        #[arg(long)]
        keep_going: bool,
        /// Keep setuid/setgid bits as stored (cleared by default: an archive from elsewhere must
        /// not yield a setuid binary, least of all when unpacked as root).
        #[arg(long)]
        preserve_special_bits: bool,
        #[command(flatten)]
        remote: cli::remote::RemoteArgs,
    },
    /// List the stored files (size, mode, path), all or those under PATH.
    Ls {
        /// The .upg archive to list.
        archive: PathBuf,
        /// A stored file or directory (default: everything).
        path: Option<String>,
        /// Exact sizes in bytes instead of KiB/MiB/GiB.
        #[arg(short, long)]
        bytes: bool,
        #[command(flatten)]
        remote: cli::remote::RemoteArgs,
    },
    /// Write one stored file's bytes to stdout (checked as they are decoded).
    Cat {
        /// The .upg archive.
        archive: PathBuf,
        /// The stored file (its path as `upg ls` prints it).
        file: String,
        #[command(flatten)]
        remote: cli::remote::RemoteArgs,
    },
    /// Mount archives read-only (the same command as `upg-mount`).
    #[command(long_about = cli::mount::LONG_ABOUT)]
    Mount {
        #[command(flatten)]
        args: cli::mount::MountCli,
    },
    /// Print a shell completion script: `upg completions bash > /etc/bash_completion.d/upg`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff): `upg man | man -l -`.
    Man,
    /// Show the catalog (files, tensors, dtypes, shapes, parameters; stored size and codec for
    /// archives) of an archive, a model directory or a .safetensors file, without decoding tensors.
    Inspect {
        /// A .upg archive (a path, s3://BUCKET/KEY.upg or https://HOST/PATH.upg), a model
        /// directory, a .safetensors or a GGUF file.
        path: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// List every tensor.
        #[arg(long)]
        tensors: bool,
        #[command(flatten)]
        remote: cli::remote::RemoteArgs,
    },
    /// Check every chunk's checksums and every file's SHA-256; exit 1 on any problem found
    /// (a damaged or truncated archive included), 2 when the archive cannot be read at all.
    Verify {
        /// The .upg archive to check (a path, s3://BUCKET/KEY.upg or https://HOST/PATH.upg).
        archive: PathBuf,
        /// Also compare every file with the originals in this directory (or .safetensors file).
        #[arg(long)]
        against: Option<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Lossy with --against: list every quantized tensor (default: the worst few).
        #[arg(long)]
        tensors: bool,
        #[command(flatten)]
        remote: cli::remote::RemoteArgs,
    },
    /// Decode throughput of an archive per thread count (median of --runs).
    Bench {
        /// The .upg archive to decode.
        archive: PathBuf,
        /// Thread counts to measure (default: 1, 2, 4, ... up to the core count).
        #[arg(long, value_delimiter = ',', value_parser = at_least_one)]
        threads: Vec<usize>,
        /// Decodes of the whole archive per thread count; the median is reported.
        #[arg(long, default_value_t = 5, value_parser = at_least_one)]
        runs: usize,
        /// Print the measurements as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: cli::remote::RemoteArgs,
    },
    /// Pack, read back and verify a built-in synthetic model (runs offline).
    Demo {
        /// Working directory for the demo's files.
        #[arg(long, default_value = "target/upg-demo")]
        dir: PathBuf,
        /// Leave the archive mounted on DIR/mnt when the demo ends (by a `upg mount` daemon:
        /// `umount DIR/mnt` when done). Needs a working FUSE mount.
        #[arg(long)]
        keep_mounted: bool,
    },
}

/// A count that must be at least 1 (`--threads 0` or `--runs 0` would print figures of nothing).
fn at_least_one(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

fn main() -> ExitCode {
    // Die quietly on a closed pipe (`upg inspect ... | head`), like other Unix tools, instead of
    // Rust's default of ignoring SIGPIPE and panicking on the failed write.
    // SAFETY: setting a signal's disposition to the default has no preconditions; no other
    // thread exists yet.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = Cli::parse();
    // A UPG_SIMD the CPU cannot honour is refused before any work, not at the first decode.
    if let Err(e) = upg::codec::entropy::Simd::selected() {
        eprintln!("upg: error: {}", escaped(&e.to_string()));
        return ExitCode::from(2);
    }
    // `upg mount` forks its daemon before any thread exists: dispatch it before the signal
    // thread below is started. It sets up its own logging and signal handling.
    if let Cmd::Mount { args } = cli.cmd {
        let code = cli::mount::run(args.into_args::<Cli>(cli.verbose));
        return ExitCode::from(u8::try_from(code).unwrap_or(2));
    }
    // Ctrl-C / SIGTERM during pack or unpack: remove the unfinished temporary output, then exit.
    upg::cleanup::exit_on_signals();
    init_tracing(cli.verbose);
    let result = run(cli.cmd, cli.quiet);
    // Interrupted: the signal thread reports and exits with 128 + the signal.
    upg::cleanup::wait_if_interrupted();
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("upg: error: {}", escaped(&e.to_string()));
            ExitCode::from(e.exit_code())
        }
    }
}

fn init_tracing(v: u8) {
    let level = match v {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn run(cmd: Cmd, quiet: bool) -> Result<u8, cli::CliError> {
    match cmd {
        Cmd::Pack {
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
        } => {
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
            let upload_to = match upg::storage::Location::parse(output.as_os_str())
                .map_err(|e| cli::CliError::Usage(e.to_string()))?
            {
                upg::storage::Location::Remote(u) => Some(u),
                upg::storage::Location::Local(_) => None,
            };
            // An upload is written straight into a multipart upload as it is packed (no local
            // copy); it becomes visible only when complete and is aborted on any failure.
            let sink = match &upload_to {
                Some(u) => Some(cli::remote::upload_sink(u, &remote, force)?),
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
                    hooks: cli::Terminal::hooks(!json && !quiet),
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
                    cli::print_pack_notes(&s);
                }
            } else if !quiet {
                cli::print_pack_summary(&s, &output, tensors);
            }
            Ok(0)
        }
        Cmd::Unpack {
            archive,
            files,
            output,
            force,
            keep_going,
            preserve_special_bits,
            remote,
        } => {
            let a = cli::remote::open_archive(&archive, &remote, DEFAULT_CACHE_BYTES)?;
            let only = if files.is_empty() {
                None
            } else {
                Some(verify::select_files(&a, &files)?)
            };
            let opts = verify::UnpackOptions {
                force,
                hooks: cli::Terminal::hooks(!quiet),
                only,
                keep_going,
                preserve_special_bits,
            };
            let r = verify::unpack(&a, &output, &opts)?;
            for p in &r.damaged {
                let at = p
                    .offset
                    .map(|o| format!(" at offset {o}"))
                    .unwrap_or_default();
                eprintln!(
                    "upg: damaged, not written: {}{at}: {}",
                    escaped(p.file.as_deref().unwrap_or("(archive)")),
                    escaped(&p.message)
                );
            }
            if !quiet {
                println!(
                    "unpacked {} ({}) into {}",
                    cli::count(r.files as u64, "file"),
                    cli::human(r.bytes),
                    output.display()
                );
                if let Some(p) = a.meta()["preset"].as_str().filter(|p| *p != "lossless") {
                    eprintln!(
                        "note: lossy archive (preset {}): quantized tensors hold the decoded \
                         approximations, not the original bytes",
                        escaped(p)
                    );
                }
            }
            if r.damaged.is_empty() {
                Ok(0)
            } else {
                let n = match r.damaged.len() {
                    1 => "1 file is".to_string(),
                    n => format!("{n} files are"),
                };
                eprintln!("upg: {n} damaged; the files written are complete and checked");
                Ok(1)
            }
        }
        Cmd::Ls {
            archive,
            path,
            bytes,
            remote,
        } => {
            let a = cli::remote::open_archive(&archive, &remote, DEFAULT_CACHE_BYTES)?;
            let sel = match &path {
                Some(p) => verify::select_files(&a, std::slice::from_ref(p))?,
                None => (0..a.files().len()).collect(),
            };
            for i in sel {
                let f = &a.files()[i];
                let size = if bytes {
                    f.size.to_string()
                } else {
                    cli::human(f.size)
                };
                println!(
                    "{:>12}  {:04o}  {}",
                    size,
                    f.mode & 0o7777,
                    escaped(&f.path)
                );
            }
            Ok(0)
        }
        Cmd::Cat {
            archive,
            file,
            remote,
        } => {
            use std::io::Write;
            let a = cli::remote::open_archive(&archive, &remote, DEFAULT_CACHE_BYTES)?;
            let fi = a.file_index(file.trim_start_matches('/')).ok_or_else(|| {
                format!("{file:?} is not in the archive (`upg ls ARCHIVE` lists its files)")
            })?;
            let out = std::io::stdout();
            let mut w = std::io::BufWriter::with_capacity(1 << 20, out.lock());
            verify::stream_file(&a, fi, |d| w.write_all(d).map_err(|e| e.to_string())).map_err(
                |p| {
                    let at = p
                        .offset
                        .map(|o| format!(" at offset {o}"))
                        .unwrap_or_default();
                    cli::CliError::Read(format!("{file}{at}: {}", p.message))
                },
            )?;
            w.flush()?;
            Ok(0)
        }
        Cmd::Mount { .. } => Err(cli::CliError::Usage(
            "mount is dispatched before this point".into(),
        )),
        Cmd::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "upg", &mut std::io::stdout());
            Ok(0)
        }
        Cmd::Man => {
            use clap::CommandFactory;
            clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
            Ok(0)
        }
        Cmd::Inspect {
            path,
            json,
            tensors,
            remote,
        } => {
            let c = if upg::storage::Location::parse(path.as_os_str())
                .map_err(|e| cli::CliError::Usage(e.to_string()))?
                .is_remote()
            {
                let a = cli::remote::open_archive(&path, &remote, DEFAULT_CACHE_BYTES)?;
                cli::inspect::catalog_archive(&a)?
            } else {
                cli::inspect::catalog(&path)?
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&c)?);
            } else {
                cli::inspect::print(&c, tensors);
            }
            Ok(0)
        }
        Cmd::Verify {
            archive,
            against,
            json,
            tensors,
            remote,
        } => {
            let a = match cli::remote::open_archive(&archive, &remote, 0) {
                Ok(a) => a,
                // The archive is there but its framing or index is damaged (truncated, say):
                // that is a verification failure (1), not a usage error (2).
                Err(cli::CliError::Archive(e @ upg::archive::ArchiveError::Format { .. })) => {
                    println!("FAIL (archive): {}", escaped(&e.to_string()));
                    println!(
                        "{}: damaged, nothing else could be checked",
                        archive.display()
                    );
                    return Ok(1);
                }
                Err(e) => return Err(e),
            };
            if let Some(root) = &against {
                check_against(root, &a)?;
            }
            let logical = a.files().iter().fold(0u64, |t, f| t.saturating_add(f.size));
            if let Some(n) = cli::expansion_note(logical, a.archive_len()) {
                eprintln!("upg: note: {n}");
            }
            let r = verify::verify_with(
                &a,
                against.as_deref(),
                &cli::Terminal {
                    show: !json && !quiet,
                },
            );
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                for p in &r.problems {
                    let at = match (p.offset, p.length) {
                        (Some(o), Some(n)) => {
                            format!(" at offset {o} ({} damaged: {o}..{})", cli::human(n), o + n)
                        }
                        (Some(o), None) => format!(" at offset {o}"),
                        _ => String::new(),
                    };
                    println!(
                        "FAIL {}{at}: {}",
                        escaped(p.file.as_deref().unwrap_or("(archive)")),
                        escaped(&p.message)
                    );
                }
                if quiet {
                    return Ok(if r.problems.is_empty() { 0 } else { 1 });
                }
                if let Some(total) = &r.lossy_total {
                    println!(
                        "lossy archive: error of each quantized tensor, measured against the originals"
                    );
                    cli::print_quality(&r.lossy, total, tensors);
                }
                let what = if against.is_some() {
                    ", compared with the originals"
                } else {
                    ""
                };
                println!(
                    "{}: {}, {}, {} checked{what}: {}",
                    archive.display(),
                    cli::count(r.files_checked as u64, "file"),
                    cli::count(r.chunks_checked as u64, "chunk"),
                    cli::human(r.bytes_checked),
                    if r.problems.is_empty() {
                        "OK".to_string()
                    } else {
                        cli::count(r.problems.len() as u64, "problem")
                    }
                );
            }
            Ok(if r.problems.is_empty() { 0 } else { 1 })
        }
        Cmd::Bench {
            archive,
            threads,
            runs,
            json,
            remote,
        } => {
            let a = cli::remote::open_archive(&archive, &remote, 0)?;
            let threads = if threads.is_empty() {
                let n = std::thread::available_parallelism().map_or(1, |n| n.get());
                std::iter::successors(Some(1usize), |t| (t * 2 <= n).then_some(t * 2))
                    .chain((!n.is_power_of_two()).then_some(n))
                    .collect()
            } else {
                threads
            };
            let rows = cli::bench::bench(&a, &threads, runs)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                let bytes: u64 = a.files().iter().map(|f| f.size).sum();
                println!(
                    "{}: {} decoded, {}",
                    archive.display(),
                    cli::human(bytes),
                    cli::count(a.chunks().len() as u64, "chunk")
                );
                for r in rows {
                    let of = match r.runs.len() {
                        1 => "1 run".to_string(),
                        n => format!("median of {n} runs"),
                    };
                    println!(
                        "  {:>3} {}: {:.3} GiB/s ({of})",
                        r.threads,
                        if r.threads == 1 { "thread " } else { "threads" },
                        r.median_gib_s,
                    );
                }
                let list: Vec<String> = threads.iter().map(|t| t.to_string()).collect();
                println!(
                    "  rerun: upg bench {} --threads {} --runs {runs}",
                    archive.display(),
                    list.join(",")
                );
            }
            Ok(0)
        }
        Cmd::Demo { dir, keep_mounted } => {
            let bad = cli::demo::run(&dir, keep_mounted)?;
            Ok(if bad == 0 { 0 } else { 1 })
        }
    }
}

/// `verify --against ROOT`: one clear error instead of a FAIL line per file when ROOT cannot be
/// what the archive was packed from.
fn check_against(root: &std::path::Path, a: &Archive) -> Result<(), String> {
    let meta = std::fs::metadata(root).map_err(|e| format!("--against {}: {e}", root.display()))?;
    if meta.is_file() && a.files().len() != 1 {
        return Err(format!(
            "--against {} is a file, but the archive holds {}: give the model directory",
            root.display(),
            cli::count(a.files().len() as u64, "file")
        ));
    }
    Ok(())
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

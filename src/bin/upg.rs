//! `upg`: pack, unpack, inspect, verify and benchmark model archives. Thin: parse, dispatch,
//! map errors to exit codes (0 ok, 1 verification failed, 2 error).

use std::path::PathBuf;
use std::process::ExitCode;
use upg::text::escaped;

use clap::{Parser, Subcommand};
use upg::cli;

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
    Pack(cli::pack::PackArgs),
    /// Extract every file (or the FILEs named), byte-identical to what was packed.
    Unpack(cli::unpack::UnpackArgs),
    /// List the stored files (size, mode, path), all or those under PATH.
    Ls(cli::ls::LsArgs),
    /// Write one stored file's bytes to stdout (checked as they are decoded).
    Cat(cli::cat::CatArgs),
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
    Inspect(cli::inspect::InspectArgs),
    /// Check every chunk's checksums and every file's SHA-256; exit 1 on any problem found
    /// (a damaged or truncated archive included), 2 when the archive cannot be read at all.
    Verify(cli::verify::VerifyArgs),
    /// Decode throughput of an archive per thread count (median of --runs).
    Bench(cli::bench::BenchArgs),
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
        Cmd::Pack(args) => cli::pack::run(args, quiet),
        Cmd::Unpack(args) => cli::unpack::run(args, quiet),
        Cmd::Ls(args) => cli::ls::run(args),
        Cmd::Cat(args) => cli::cat::run(args),
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
        Cmd::Inspect(args) => cli::inspect::run(args),
        Cmd::Verify(args) => cli::verify::run(args, quiet),
        Cmd::Bench(args) => cli::bench::run(args),
        Cmd::Demo { dir, keep_mounted } => {
            let bad = cli::demo::run(&dir, keep_mounted)?;
            Ok(if bad == 0 { 0 } else { 1 })
        }
    }
}

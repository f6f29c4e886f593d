//! `upg-mount ARCHIVE... MOUNTPOINT`: serve archives as ordinary read-only files through FUSE.
//! Thin: parse arguments, call `cli::mount::run`, exit with its code (0 ok, 2 error).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use upg::cli::mount::{MountArgs, run};

#[derive(Parser)]
#[command(
    name = "upg-mount",
    version,
    about = "Mount .upg archives read-only: their files appear as ordinary files.",
    long_about = "Mount one or several .upg archives (or a folder of them) read-only. A single archive \
puts its files at the mountpoint's root; several archives (or a folder) get one sub-directory each, \
named after the archive without `.upg`. Returns once the mount is up and keeps serving in the \
background (-f: stay in the foreground). `umount MOUNTPOINT`, SIGINT or SIGTERM unmount it."
)]
struct Cli {
    /// Archives to mount (.upg files, or folders of them), then the mountpoint: an existing empty
    /// directory.
    #[arg(required = true, value_name = "ARCHIVE... MOUNTPOINT")]
    paths: Vec<PathBuf>,
    /// Stay in the foreground (do not daemonize).
    #[arg(short, long)]
    foreground: bool,
    /// Decoded-chunk cache size over all archives: bytes or with K/M/G suffix (default:
    /// min(64 MiB per archive, 1 GiB, MemAvailable/8), at least 64 MiB).
    #[arg(long, value_name = "BYTES")]
    cache_size: Option<String>,
    /// Mount options, comma-separated: allow_other, allow_root, ro (always on), nosuid, nodev,
    /// noexec, noatime, default_permissions, fsname=NAME, subtype=NAME.
    #[arg(short = 'o', value_name = "OPTS")]
    options: Vec<String>,
    /// Append the daemon's log to this file (a daemon otherwise discards its log).
    #[arg(long, value_name = "FILE")]
    log_file: Option<PathBuf>,
    /// FUSE worker threads (default: two per core, 4 to 16).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Kernel readahead for the mount in KiB, set through the mount's bdi (needs root; 0 keeps
    /// the kernel's 128 KiB). 1024 lets one request carry a whole 1 MiB read.
    #[arg(long, value_name = "KIB", default_value_t = upg::fuse::DEFAULT_READAHEAD_KB)]
    readahead_kb: u32,
    /// More log output (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    // One positional list, split here: clap would fill ARCHIVE first and then call the missing
    // argument `<ARCHIVE>...` when only an archive was given.
    if cli.paths.len() < 2 {
        use clap::CommandFactory;
        Cli::command()
            .error(
                clap::error::ErrorKind::MissingRequiredArgument,
                format!(
                    "the mountpoint is missing: upg-mount ARCHIVE... MOUNTPOINT (got only {})",
                    cli.paths[0].display()
                ),
            )
            .exit();
    }
    let mountpoint = cli.paths.pop().unwrap_or_default();
    let code = run(MountArgs {
        sources: cli.paths,
        mountpoint,
        foreground: cli.foreground,
        cache_size: cli.cache_size,
        options: cli.options,
        log_file: cli.log_file,
        verbose: cli.verbose,
        threads: cli.threads,
        readahead_kb: cli.readahead_kb,
    });
    ExitCode::from(u8::try_from(code).unwrap_or(2))
}

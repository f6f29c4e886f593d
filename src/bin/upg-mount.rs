//! `upg-mount ARCHIVE... MOUNTPOINT`: serve archives as ordinary read-only files through FUSE.
//! Thin: parse arguments, call `cli::mount::run`, exit with its code (0 ok, 2 error). The same
//! arguments are `upg mount`'s.

use std::process::ExitCode;

use clap::Parser;
use upg::cli::mount::{MountCli, run};

#[derive(Parser)]
#[command(
    name = "upg-mount",
    version,
    about = "Mount .upg archives read-only: their files appear as ordinary files.",
    long_about = upg::cli::mount::LONG_ABOUT
)]
struct Cli {
    #[command(flatten)]
    args: MountCli,
    /// More log output (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = upg::codec::entropy::Simd::selected() {
        eprintln!("upg-mount: error: {e}");
        return ExitCode::from(2);
    }
    let args = cli.args.into_args::<Cli>(cli.verbose);
    ExitCode::from(u8::try_from(run(args)).unwrap_or(2))
}

//! `upg ls`: list the stored files (size, mode, path).

use std::path::PathBuf;

use super::CliError;
use crate::archive::reader::DEFAULT_CACHE_BYTES;
use crate::text::escaped;

// Arguments of `upg ls`. No doc comment on the struct: the subcommand's about is the
// doc comment of the binary's `Cmd::Ls`.
#[derive(clap::Args)]
pub struct LsArgs {
    /// The .upg archive to list.
    pub archive: PathBuf,
    /// A stored file or directory (default: everything).
    pub path: Option<String>,
    /// Exact sizes in bytes instead of KiB/MiB/GiB.
    #[arg(short, long)]
    pub bytes: bool,
    #[command(flatten)]
    pub remote: super::remote::RemoteArgs,
}

/// `upg ls`: size, mode and path of each stored file.
pub fn run(args: LsArgs) -> Result<u8, CliError> {
    let LsArgs {
        archive,
        path,
        bytes,
        remote,
    } = args;
    let a = super::remote::open_archive(&archive, &remote, DEFAULT_CACHE_BYTES)?;
    let sel = match &path {
        Some(p) => crate::archive::verify::select_files(&a, std::slice::from_ref(p))?,
        None => (0..a.files().len()).collect(),
    };
    for i in sel {
        let f = &a.files()[i];
        let size = if bytes {
            f.size.to_string()
        } else {
            super::human(f.size)
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

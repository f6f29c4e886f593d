//! `upg cat`: write one stored file's bytes to stdout, checked as they are decoded.

use std::path::PathBuf;

use super::CliError;
use crate::archive::reader::DEFAULT_CACHE_BYTES;

// Arguments of `upg cat`. No doc comment on the struct: the subcommand's about is the
// doc comment of the binary's `Cmd::Cat`.
#[derive(clap::Args)]
pub struct CatArgs {
    /// The .upg archive.
    pub archive: PathBuf,
    /// The stored file (its path as `upg ls` prints it).
    pub file: String,
    #[command(flatten)]
    pub remote: super::remote::RemoteArgs,
}

/// `upg cat`: one stored file to stdout, checked as it is decoded.
pub fn run(args: CatArgs) -> Result<u8, CliError> {
    let CatArgs {
        archive,
        file,
        remote,
    } = args;
    use std::io::Write;
    let a = super::remote::open_archive(&archive, &remote, DEFAULT_CACHE_BYTES)?;
    let fi = a.file_index(file.trim_start_matches('/')).ok_or_else(|| {
        format!("{file:?} is not in the archive (`upg ls ARCHIVE` lists its files)")
    })?;
    let out = std::io::stdout();
    let mut w = std::io::BufWriter::with_capacity(1 << 20, out.lock());
    crate::archive::verify::stream_file(&a, fi, |d| w.write_all(d).map_err(|e| e.to_string()))
        .map_err(|p| {
            let at = p
                .offset
                .map(|o| format!(" at offset {o}"))
                .unwrap_or_default();
            super::CliError::Read(format!("{file}{at}: {}", p.message))
        })?;
    w.flush()?;
    Ok(0)
}

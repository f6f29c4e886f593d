//! `upg unpack`: extract all or some stored files; damaged files are named, not written.

use std::path::PathBuf;

use super::CliError;
use crate::archive::reader::DEFAULT_CACHE_BYTES;
use crate::text::escaped;

// Arguments of `upg unpack`. No doc comment on the struct: the subcommand's about is the
// doc comment of the binary's `Cmd::Unpack`.
#[derive(clap::Args)]
pub struct UnpackArgs {
    /// The .upg archive to extract (a path, s3://BUCKET/KEY.upg or https://HOST/PATH.upg).
    pub archive: PathBuf,
    /// Only these stored files (paths as `upg ls` prints them; a directory takes all below).
    pub files: Vec<String>,
    /// Output directory (must not exist or be empty, unless --force).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Replace an existing non-empty output directory.
    #[arg(long)]
    pub force: bool,
    /// Write every intact file of a damaged archive and name the damaged ones (which are not
    /// written: a partial file never looks complete); exit 1 if any is damaged.
    #[arg(long)]
    pub keep_going: bool,
    /// Keep setuid/setgid bits as stored (cleared by default: an archive from elsewhere must
    /// not yield a setuid binary, least of all when unpacked as root).
    #[arg(long)]
    pub preserve_special_bits: bool,
    #[command(flatten)]
    pub remote: super::remote::RemoteArgs,
}

/// `upg unpack`: extract, name damaged files; exit 1 if any is damaged.
pub fn run(args: UnpackArgs, quiet: bool) -> Result<u8, CliError> {
    let UnpackArgs {
        archive,
        files,
        output,
        force,
        keep_going,
        preserve_special_bits,
        remote,
    } = args;
    let a = super::remote::open_archive(&archive, &remote, DEFAULT_CACHE_BYTES)?;
    let only = if files.is_empty() {
        None
    } else {
        Some(crate::archive::verify::select_files(&a, &files)?)
    };
    let opts = crate::archive::verify::UnpackOptions {
        force,
        hooks: super::Terminal::hooks(!quiet),
        only,
        keep_going,
        preserve_special_bits,
    };
    let r = crate::archive::verify::unpack(&a, &output, &opts)?;
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
            super::count(r.files as u64, "file"),
            super::human(r.bytes),
            output.display()
        );
        if let Some(p) = a.meta().preset.as_deref().filter(|p| *p != "lossless") {
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

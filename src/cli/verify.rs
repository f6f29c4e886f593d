//! `upg verify`: check every chunk's checksums and every file's SHA-256 (and, with `--against`,
//! the originals); print the problems and the lossy error figures. Exit 1 on any problem.

use std::path::PathBuf;

use super::CliError;
use crate::archive::Archive;
use crate::text::escaped;

// Arguments of `upg verify`. No doc comment on the struct: the subcommand's about is the
// doc comment of the binary's `Cmd::Verify`.
#[derive(clap::Args)]
pub struct VerifyArgs {
    /// The .upg archive to check (a path, s3://BUCKET/KEY.upg or https://HOST/PATH.upg).
    pub archive: PathBuf,
    /// Also compare every file with the originals in this directory (or .safetensors file).
    #[arg(long)]
    pub against: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Lossy with --against: list every quantized tensor (default: the worst few).
    #[arg(long)]
    pub tensors: bool,
    #[command(flatten)]
    pub remote: super::remote::RemoteArgs,
}

/// `upg verify`: every checksum (and the originals with `--against`); exit 1 on a problem.
pub fn run(args: VerifyArgs, quiet: bool) -> Result<u8, CliError> {
    let VerifyArgs {
        archive,
        against,
        json,
        tensors,
        remote,
    } = args;
    let a = match super::remote::open_archive(&archive, &remote, 0) {
        Ok(a) => a,
        // The archive is there but its framing or index is damaged (truncated, say):
        // that is a verification failure (1), not a usage error (2).
        Err(super::CliError::Archive(e @ crate::archive::ArchiveError::Format { .. })) => {
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
    if let Some(n) = super::expansion_note(logical, a.archive_len()) {
        eprintln!("upg: note: {n}");
    }
    let r = crate::archive::verify::verify_with(
        &a,
        against.as_deref(),
        &super::Terminal {
            show: !json && !quiet,
        },
    );
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        for p in &r.problems {
            let at = match (p.offset, p.length) {
                (Some(o), Some(n)) => {
                    format!(
                        " at offset {o} ({} damaged: {o}..{})",
                        super::human(n),
                        o + n
                    )
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
            super::print_quality(&r.lossy, total, tensors);
        }
        let what = if against.is_some() {
            ", compared with the originals"
        } else {
            ""
        };
        println!(
            "{}: {}, {}, {} checked{what}: {}",
            archive.display(),
            super::count(r.files_checked as u64, "file"),
            super::count(r.chunks_checked as u64, "chunk"),
            super::human(r.bytes_checked),
            if r.problems.is_empty() {
                "OK".to_string()
            } else {
                super::count(r.problems.len() as u64, "problem")
            }
        );
    }
    Ok(if r.problems.is_empty() { 0 } else { 1 })
}

/// `verify --against ROOT`: one clear error instead of a FAIL line per file when ROOT cannot be
/// what the archive was packed from.
fn check_against(root: &std::path::Path, a: &Archive) -> Result<(), String> {
    let meta = std::fs::metadata(root).map_err(|e| format!("--against {}: {e}", root.display()))?;
    if meta.is_file() && a.files().len() != 1 {
        return Err(format!(
            "--against {} is a file, but the archive holds {}: give the model directory",
            root.display(),
            super::count(a.files().len() as u64, "file")
        ));
    }
    Ok(())
}

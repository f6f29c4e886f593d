//! Verification and extraction. `verify` decodes every chunk through the same checked path the
//! reader uses (stored checksum, decode, decoded checksum) and recomputes every file's SHA-256;
//! `unpack` writes files while hashing them and refuses to finish on any mismatch.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use sha2::{Digest, Sha256};

use super::writer::TensorQuality;
use super::{Archive, ArchiveError};
use crate::codec::quant::QuantStats;
use crate::codec::{Codec, FloatKind};
use crate::format::SegmentKind;

/// Decoded bytes per parallel step while streaming a file through SHA-256 (at least one chunk
/// per step): 64 chunks of the default 256 KiB. A step used to be 64 chunks whatever their
/// size, so a crafted archive of 64 MiB chunks held 4 GiB at once.
const STEP_BYTES: u64 = 16 << 20;

/// `spans` cut into consecutive steps of at most [`STEP_BYTES`] decoded bytes (a larger chunk
/// alone in its step).
fn steps(spans: &[super::ChunkSpan]) -> impl Iterator<Item = &[super::ChunkSpan]> {
    let mut rest = spans;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut bytes = 0u64;
        let n = rest
            .iter()
            .take_while(|s| {
                bytes += u64::from(s.len);
                bytes <= STEP_BYTES
            })
            .count()
            .max(1);
        let (step, tail) = rest.split_at(n);
        rest = tail;
        Some(step)
    })
}

/// One thing found wrong, located as precisely as possible.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Problem {
    pub file: Option<String>,
    pub offset: Option<u64>,
    pub message: String,
    /// Bytes of the file the problem covers from `offset` (a damaged range), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub length: Option<u64>,
}

#[derive(Debug, Default, serde::Serialize)]
pub struct VerifyReport {
    pub files_checked: usize,
    pub chunks_checked: usize,
    pub bytes_checked: u64,
    pub problems: Vec<Problem>,
    /// Lossy archives with `--against`: measured error of every quantized tensor.
    pub lossy: Vec<TensorQuality>,
    /// Whole-model figures over `lossy`.
    pub lossy_total: Option<TensorQuality>,
}

/// Stream file `fi` chunk by chunk (decoded in parallel steps), calling `sink` with consecutive
/// byte runs. Stops at the first damaged chunk and reports where it is.
pub fn stream_file(
    a: &Archive,
    fi: usize,
    mut sink: impl FnMut(&[u8]) -> Result<(), String>,
) -> Result<u64, Problem> {
    let f = &a.files()[fi];
    let spans = a.spans(fi, 0, f.size).map_err(|e| Problem {
        file: Some(f.path.clone()),
        offset: None,
        message: e.to_string(),
        length: None,
    })?;
    let mut n = 0u64;
    for step in steps(&spans) {
        let decoded: Vec<_> = step
            .par_iter()
            .map(|s| a.decode_chunk_uncached(s.chunk))
            .collect();
        for (s, d) in step.iter().zip(decoded) {
            let d = d.map_err(|e| Problem {
                file: Some(f.path.clone()),
                offset: Some(s.file_offset),
                message: e.to_string(),
                length: None,
            })?;
            sink(&d).map_err(|m| Problem {
                file: Some(f.path.clone()),
                offset: Some(s.file_offset),
                message: m,
                length: None,
            })?;
            n += d.len() as u64;
        }
    }
    Ok(n)
}

/// Decode every chunk of file `fi` (in parallel steps), calling `sink(file_offset, bytes)` for each
/// intact chunk in file order. Unlike `stream_file` it does not stop at damage: every damaged
/// chunk is reported, consecutive ones merged into one range (`offset`, `length`). Returns the
/// bytes decoded and the damaged ranges.
pub fn scan_file(a: &Archive, fi: usize, mut sink: impl FnMut(u64, &[u8])) -> (u64, Vec<Problem>) {
    let f = &a.files()[fi];
    let spans = match a.spans(fi, 0, f.size) {
        Ok(s) => s,
        Err(e) => {
            return (
                0,
                vec![Problem {
                    file: Some(f.path.clone()),
                    offset: None,
                    message: e.to_string(),
                    length: None,
                }],
            );
        }
    };
    let mut n = 0u64;
    let mut bad: Vec<Problem> = Vec::new();
    // End offset of the last damaged range, to merge a run of damaged chunks.
    let mut bad_end: Option<u64> = None;
    for step in steps(&spans) {
        let decoded: Vec<_> = step
            .par_iter()
            .map(|s| a.decode_chunk_uncached(s.chunk))
            .collect();
        for (s, d) in step.iter().zip(decoded) {
            match d {
                Ok(d) => {
                    sink(s.file_offset, &d);
                    n += d.len() as u64;
                    bad_end = None;
                }
                Err(e) => {
                    let end = s.file_offset + u64::from(s.len);
                    match (bad_end, bad.last_mut()) {
                        (Some(prev), Some(p)) if prev == s.file_offset => {
                            p.length = Some(end - p.offset.unwrap_or(0));
                        }
                        _ => bad.push(Problem {
                            file: Some(f.path.clone()),
                            offset: Some(s.file_offset),
                            message: e.to_string(),
                            length: Some(u64::from(s.len)),
                        }),
                    }
                    bad_end = Some(end);
                }
            }
        }
    }
    (n, bad)
}

/// Check every chunk and every file's SHA-256; with `against`, also compare each file with the
/// original under that directory (or that single file, for a one-file archive).
pub fn verify(a: &Archive, against: Option<&Path>) -> VerifyReport {
    verify_with(a, against, &super::Silent)
}

/// `verify`, reporting progress to `hooks`.
pub fn verify_with(
    a: &Archive,
    against: Option<&Path>,
    hooks: &dyn super::Observer,
) -> VerifyReport {
    let mut rep = VerifyReport::default();
    let total: u64 = a.files().iter().map(|f| f.size).sum();
    let bar = hooks.start("verifying", total);
    // Lossy files: path -> SHA-256 of the original they were made from.
    let lossy_files = &a.meta().original_sha256;
    let mut lossy_total = QuantStats::default();
    let mut referenced = vec![false; a.chunk_count() as usize];
    for (fi, f) in a.files().iter().enumerate() {
        for s in &f.segments {
            for c in s.chunks.iter() {
                referenced[c as usize] = true;
            }
        }
        let mut sha = Sha256::new();
        let lossy_file = lossy_files.contains_key(&f.path);
        if let (true, Some(root)) = (lossy_file, against) {
            let orig_path = original_path(root, a, &f.path);
            match compare_lossy(a, fi, &orig_path, &lossy_files[&f.path]) {
                Ok(rows) => {
                    for (q, st) in rows {
                        lossy_total.merge(&st);
                        rep.lossy.push(q);
                    }
                }
                Err(p) => rep.problems.push(p),
            }
        }
        let mut orig = against
            .filter(|_| !lossy_file)
            .map(|root| original_path(root, a, &f.path))
            .map(|p| crate::storage::open_regular(&p).map(|(f, _)| f));
        let mut mismatch_at: Option<u64> = None;
        let mut buf = Vec::new();
        let (n, damaged) = scan_file(a, fi, |off, d| {
            use std::os::unix::fs::FileExt;
            sha.update(d);
            bar.inc(d.len() as u64);
            if let Some(Ok(o)) = orig.as_mut()
                && mismatch_at.is_none()
            {
                buf.resize(d.len(), 0);
                let same = o.read_exact_at(&mut buf, off).is_ok() && buf == d;
                if !same {
                    let k = buf.iter().zip(d).position(|(x, y)| x != y).unwrap_or(0);
                    mismatch_at = Some(off + k as u64);
                }
            }
        });
        rep.files_checked += 1;
        rep.bytes_checked += n;
        tracing::info!(
            "checked {}: {}",
            f.path,
            if damaged.is_empty() {
                "chunks OK".to_string()
            } else {
                format!("{} damaged ranges", damaged.len())
            }
        );
        // A damaged file's hash cannot match: its damaged ranges say more than the hash would.
        let intact = damaged.is_empty();
        rep.problems.extend(damaged);
        match intact {
            false => {}
            true => {
                if <[u8; 32]>::from(sha.finalize()) != f.sha256 {
                    rep.problems.push(Problem {
                        file: Some(f.path.clone()),
                        offset: None,
                        message: "SHA-256 of the stored file does not match the index".into(),
                        length: None,
                    });
                }
            }
        }
        match orig {
            Some(Err(e)) => rep.problems.push(Problem {
                file: Some(f.path.clone()),
                offset: None,
                message: format!("original cannot be opened: {e}"),
                length: None,
            }),
            Some(Ok(mut o)) => {
                let orig_len = o.metadata().map(|m| m.len()).unwrap_or(0);
                if let Some(at) = mismatch_at {
                    rep.problems.push(Problem {
                        file: Some(f.path.clone()),
                        offset: Some(at),
                        message: "differs from the original".into(),
                        length: None,
                    });
                } else if orig_len != f.size {
                    rep.problems.push(Problem {
                        file: Some(f.path.clone()),
                        offset: None,
                        message: format!("original is {orig_len} bytes, archive serves {}", f.size),
                        length: None,
                    });
                }
                let _ = o.read(&mut [0u8; 1]);
            }
            None => {}
        }
    }
    check_orphans(a, &referenced, &mut rep);
    drop(bar);
    rep.chunks_checked = a.chunk_count() as usize;
    if !rep.lossy.is_empty() {
        let bytes_in = rep.lossy.iter().map(|q| q.bytes_in).sum();
        let preset = a.meta().preset.clone().unwrap_or_else(|| "lossy".into());
        let t = super::writer::quality_row(
            "*",
            "all quantized tensors",
            &preset,
            lossy_total.n,
            bytes_in,
            &lossy_total,
        );
        rep.lossy_total = Some(t);
    }
    if let Some(root) = against
        && root.is_dir()
    {
        extra_originals(root, "", a, &mut rep);
    }
    rep
}

/// Decode (and so check) the chunks no file references, which no file scan has read.
fn check_orphans(a: &Archive, referenced: &[bool], rep: &mut VerifyReport) {
    let orphans: Vec<u32> = (0..a.chunk_count())
        .filter(|&c| !referenced[c as usize])
        .collect();
    // Only the errors are kept: each decoded chunk is dropped by the thread that decoded it.
    for r in orphans
        .par_iter()
        .map(|&c| a.decode_chunk_uncached(c).map(drop))
        .collect::<Vec<_>>()
    {
        if let Err(e) = r {
            rep.problems.push(Problem {
                file: None,
                offset: None,
                message: e.to_string(),
                length: None,
            });
        }
    }
}

fn original_path(root: &Path, a: &Archive, rel: &str) -> PathBuf {
    if root.is_file() && a.files().len() == 1 {
        root.to_path_buf()
    } else {
        root.join(rel)
    }
}

fn extra_originals(dir: &Path, prefix: &str, a: &Archive, rep: &mut VerifyReport) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let p = e.path();
        if p.is_dir() {
            extra_originals(&p, &rel, a, rep);
        } else if a.file_index(&rel).is_none() {
            rep.problems.push(Problem {
                file: Some(rel),
                offset: None,
                message: "present in the original directory, missing from the archive".into(),
                length: None,
            });
        }
    }
}

/// Errors of `unpack`.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// The output directory exists and is not empty, and `force` was not given.
    #[error("output {0} exists and is not empty (use --force to replace it)")]
    OutputExists(PathBuf),
    /// The output would replace the current directory, one of its ancestors, or a directory
    /// holding the archive itself (`-o .`, `-o ..`, `-o sub/..`): refused whatever `force` says.
    #[error("refusing to unpack into {path}: {reason}; name a new directory (e.g. -o ./restored)")]
    UnsafeOutput { path: PathBuf, reason: &'static str },
    /// The files would not fit: checked before anything is written (a de-duplicated archive can
    /// describe far more bytes than it stores).
    #[error(
        "{path}: the files to unpack hold {need} bytes, the file system has {free} bytes free; \
         nothing written"
    )]
    NoSpace { path: PathBuf, need: u64, free: u64 },
    /// Writing failed.
    #[error("{path}: {msg}")]
    Io { path: PathBuf, msg: String },
    /// A stored file could not be read back correctly.
    #[error("{}{}: {}", .0.file.as_deref().unwrap_or("archive"), .0.offset.map(|o| format!(" at offset {o}")).unwrap_or_default(), .0.message)]
    Damaged(Problem),
    /// Opening the archive failed.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
}

/// What `unpack` writes and how it treats damage.
#[derive(Debug, Clone, Default)]
pub struct UnpackOptions {
    /// Replace an existing non-empty output directory.
    pub force: bool,
    /// Progress and temporary-output reports (silent by default).
    pub hooks: super::Hooks,
    /// Only these files (indices into `Archive::files`); `None`: every file.
    pub only: Option<Vec<usize>>,
    /// Write every intact file and skip damaged ones instead of stopping at the first.
    pub keep_going: bool,
    /// Keep setuid/setgid bits as stored (default: cleared, so an untrusted archive unpacked as
    /// root cannot yield a root-owned setuid binary).
    pub preserve_special_bits: bool,
}

/// What `unpack` wrote.
#[derive(Debug, Default)]
pub struct UnpackReport {
    /// Files written, every one complete and checked against its SHA-256.
    pub files: usize,
    /// Bytes written.
    pub bytes: u64,
    /// Files not written because they are damaged (only with `keep_going`).
    pub damaged: Vec<Problem>,
}

/// Bytes an unprivileged user may still write on the file system holding `dir` (`statvfs`), or
/// `None` when it cannot be asked.
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs fills the zeroed struct; c is a valid NUL-terminated path.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    // fsblkcnt_t and c_ulong are u64 on 64-bit Linux, not on every target.
    #[allow(clippy::useless_conversion)]
    let (avail, frsize) = (u64::from(st.f_bavail), u64::from(st.f_frsize));
    Some(avail.saturating_mul(frsize))
}

/// The archive files that `paths` name: a stored file's path, or a directory prefix of some.
pub fn select_files(a: &Archive, paths: &[String]) -> Result<Vec<usize>, String> {
    let mut out = Vec::new();
    for p in paths {
        let p = p.trim_matches('/');
        let before = out.len();
        for (i, f) in a.files().iter().enumerate() {
            let under = p.is_empty()
                || f.path == p
                || f.path.strip_prefix(p).is_some_and(|r| r.starts_with('/'));
            if under && !out.contains(&i) {
                out.push(i);
            }
        }
        if out.len() == before && !a.files().iter().any(|f| f.path == p) {
            return Err(format!(
                "{p:?} is not in the archive (`upg ls ARCHIVE` lists its files)"
            ));
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Write the stored files under `out`. Files are written into a temporary directory beside
/// `out`, each checked against its SHA-256, and the directory is renamed into place only when all
/// are complete: a damaged archive or a full disk leaves nothing under `out`. With `keep_going`,
/// a damaged file is removed again (a partial file never looks complete), named in the report,
/// and the intact ones are still renamed into place.
pub fn unpack(a: &Archive, out: &Path, opts: &UnpackOptions) -> Result<UnpackReport, UnpackError> {
    let ioe = |path: &Path, e: std::io::Error| UnpackError::Io {
        path: path.to_path_buf(),
        msg: e.to_string(),
    };
    let out = &resolve_output(out, a.path())?;
    let exists = out.exists();
    if exists
        && !opts.force
        && std::fs::read_dir(out)
            .map_err(|e| ioe(out, e))?
            .next()
            .is_some()
    {
        return Err(UnpackError::OutputExists(out.to_path_buf()));
    }
    // `resolve_output` made `out` absolute with a normal last component: the temporary is its
    // sibling, never inside it, and on the same file system (the final rename is atomic).
    let name = out.file_name().and_then(|n| n.to_str()).unwrap_or("out");
    let parent = out.parent().unwrap_or(Path::new("/"));
    super::remove_stale_temps(parent, &*opts.hooks);
    let selected: Vec<usize> = match &opts.only {
        Some(v) => v.clone(),
        None => (0..a.files().len()).collect(),
    };
    let total = selected
        .iter()
        .fold(0u64, |t, &i| t.saturating_add(a.files()[i].size));
    // The nearest directory that exists: the output's parents may still be created.
    if let Some(free) = parent.ancestors().find(|p| p.is_dir()).and_then(free_bytes)
        && total > free
    {
        return Err(UnpackError::NoSpace {
            path: out.to_path_buf(),
            need: total,
            free,
        });
    }
    let tmp = out.with_file_name(format!(".{name}.upg-tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    // Removed by the `upg` binary's signal thread if the unpack is interrupted.
    let _registered = opts.hooks.temp_created(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| ioe(out, e))?;
    let bar = opts.hooks.start("unpacking", total);
    // setuid (0o4000) and setgid (0o2000) cleared unless asked for; the sticky bit is harmless.
    let mode_mask = if opts.preserve_special_bits {
        0o7777
    } else {
        0o1777
    };
    let mut rep = UnpackReport::default();
    let result = (|| {
        for &fi in &selected {
            let f = &a.files()[fi];
            let dest = tmp.join(&f.path);
            if let Some(p) = dest.parent() {
                std::fs::create_dir_all(p).map_err(|e| ioe(p, e))?;
            }
            let mut w = std::io::BufWriter::with_capacity(
                1 << 20,
                File::create(&dest).map_err(|e| ioe(&dest, e))?,
            );
            let mut sha = Sha256::new();
            let mut write_failed = None;
            let streamed = stream_file(a, fi, |d| {
                sha.update(d);
                bar.inc(d.len() as u64);
                w.write_all(d).map_err(|e| {
                    write_failed = Some(e.to_string());
                    format!("writing {}: {e}", dest.display())
                })
            });
            let damage = match streamed {
                // A failed write is the disk's fault, not the archive's: always fatal.
                Err(p) if write_failed.is_some() => return Err(UnpackError::Damaged(p)),
                Err(p) => Some(p),
                Ok(_) if <[u8; 32]>::from(sha.finalize()) != f.sha256 => Some(Problem {
                    file: Some(f.path.clone()),
                    offset: None,
                    message: "SHA-256 mismatch".into(),
                    length: None,
                }),
                Ok(_) => None,
            };
            if let Some(p) = damage {
                if !opts.keep_going {
                    return Err(UnpackError::Damaged(p));
                }
                drop(w);
                std::fs::remove_file(&dest).map_err(|e| ioe(&dest, e))?;
                rep.damaged.push(p);
                continue;
            }
            let file = w.into_inner().map_err(|e| ioe(&dest, e.into_error()))?;
            file.sync_all().map_err(|e| ioe(&dest, e))?;
            std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(f.mode & mode_mask))
                .map_err(|e| ioe(&dest, e))?;
            rep.files += 1;
            rep.bytes += f.size;
            tracing::info!("wrote {} ({} bytes)", crate::text::escaped(&f.path), f.size);
        }
        if exists {
            // The new tree is complete: swap it with the old one, then delete the old one (now
            // at `tmp`). Nothing was deleted before this point.
            swap_dirs(&tmp, out).map_err(|e| ioe(out, e))?;
            std::fs::remove_dir_all(&tmp).map_err(|e| ioe(&tmp, e))?;
        } else {
            std::fs::rename(&tmp, out).map_err(|e| ioe(out, e))?;
        }
        Ok(())
    })();
    drop(bar);
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    Ok(rep)
}

/// Where `unpack` may write: `out` made absolute with symbolic links resolved (of `out` itself
/// when it exists, else of its parent, which is created), refused when it is `.`/`..`-terminated,
/// the root, the current directory or an ancestor of it, or a directory that holds the archive.
/// `--force` on such an output used to delete the directory being replaced together with the
/// temporary created inside it, and unpack nothing.
fn resolve_output(out: &Path, archive: &Path) -> Result<PathBuf, UnpackError> {
    use std::path::Component;
    let unsafe_out = |reason| UnpackError::UnsafeOutput {
        path: out.to_path_buf(),
        reason,
    };
    let ioe = |path: &Path, e: std::io::Error| UnpackError::Io {
        path: path.to_path_buf(),
        msg: e.to_string(),
    };
    // `components()` drops interior and trailing "." (so "x/." is "x"); a path that is only ".",
    // ends in "..", or is "/" has no normal last component.
    if !matches!(out.components().next_back(), Some(Component::Normal(_))) {
        return Err(unsafe_out(
            "it is the current directory, a parent directory or the root",
        ));
    }
    let target = match std::fs::symlink_metadata(out) {
        Ok(m) if m.file_type().is_symlink() => {
            return Err(unsafe_out(
                "it is a symbolic link (name the directory it points to)",
            ));
        }
        Ok(_) => std::fs::canonicalize(out).map_err(|e| ioe(out, e))?,
        Err(_) => {
            let parent = out
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            std::fs::create_dir_all(parent).map_err(|e| ioe(parent, e))?;
            let name = out
                .file_name()
                .ok_or_else(|| unsafe_out("no directory name"))?;
            std::fs::canonicalize(parent)
                .map_err(|e| ioe(parent, e))?
                .join(name)
        }
    };
    if let Ok(cwd) = std::env::current_dir().and_then(std::fs::canonicalize)
        && cwd.starts_with(&target)
    {
        return Err(unsafe_out("it is the current directory or contains it"));
    }
    if let Ok(arc) = std::fs::canonicalize(archive)
        && arc.starts_with(&target)
    {
        return Err(unsafe_out("it contains the archive being unpacked"));
    }
    Ok(target)
}

/// Exchange two directories atomically (`renameat2(RENAME_EXCHANGE)`); where the file system
/// does not support it, move `b` aside to `a`'s name in two renames (`a` is moved to `b` first
/// under a third name, so neither tree is ever deleted or lost: a crash in between leaves both
/// on disk under upg's temporary names).
fn swap_dirs(a: &Path, b: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let ca = std::ffi::CString::new(a.as_os_str().as_bytes())?;
    let cb = std::ffi::CString::new(b.as_os_str().as_bytes())?;
    // SAFETY: two valid NUL-terminated paths, AT_FDCWD.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    if !matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)) {
        return Err(e);
    }
    let mut mid = a.as_os_str().to_owned();
    mid.push(".old");
    let mid = PathBuf::from(mid);
    std::fs::rename(b, &mid)?;
    std::fs::rename(a, b)?;
    std::fs::rename(&mid, a)
}

/// Little-endian floats of `kind` as f64.
fn floats(kind: FloatKind, b: &[u8]) -> impl Iterator<Item = f64> + '_ {
    b.chunks_exact(kind.elem_size()).map(move |c| match kind {
        FloatKind::Bf16 => f64::from(half::bf16::from_le_bytes([c[0], c[1]]).to_f32()),
        FloatKind::F16 => f64::from(half::f16::from_le_bytes([c[0], c[1]]).to_f32()),
        FloatKind::F32 => f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        FloatKind::F64 => f64::from_le_bytes(c.try_into().unwrap_or([0; 8])),
    })
}

/// Compare a lossy file with its original: the original's SHA-256 must be the one the archive
/// was made from; lossless segments must be byte-identical; quantized tensors get error figures
/// measured here, independently of the ones stored at pack time.
fn compare_lossy(
    a: &Archive,
    fi: usize,
    orig_path: &Path,
    want_sha: &str,
) -> Result<Vec<(TensorQuality, QuantStats)>, Problem> {
    let f = &a.files()[fi];
    let problem = |offset: Option<u64>, message: String| Problem {
        file: Some(f.path.clone()),
        offset,
        message,
        length: None,
    };
    let orig = std::fs::read(orig_path)
        .map_err(|e| problem(None, format!("original cannot be read: {e}")))?;
    if hex::encode(Sha256::digest(&orig)) != want_sha {
        return Err(problem(
            None,
            "original is not the file this archive was packed from (SHA-256 differs)".into(),
        ));
    }
    let served = super::reader::read_all(a, fi).map_err(|e| problem(None, e.to_string()))?;
    if served.len() != orig.len() {
        return Err(problem(
            None,
            format!(
                "archive serves {} bytes, original has {}",
                served.len(),
                orig.len()
            ),
        ));
    }
    let segs = a.segment_sizes(fi);
    let names = match segs.first() {
        Some((SegmentKind::StHeader, hlen, _, _)) => {
            crate::st::Layout::from_header_json(served.get(8..*hlen as usize).unwrap_or(&[]), *hlen)
                .map(|l| l.tensors.into_iter().map(|t| t.name).collect::<Vec<_>>())
                .unwrap_or_default()
        }
        _ => Vec::new(),
    };
    let mut rows = Vec::new();
    let (mut pos, mut ti) = (0usize, 0usize);
    for (kind, len, stored, codec) in segs {
        let r = pos..pos + len as usize;
        pos += len as usize;
        let name = if kind == SegmentKind::Tensor {
            ti += 1;
            names
                .get(ti - 1)
                .cloned()
                .unwrap_or_else(|| format!("tensor #{ti}"))
        } else {
            String::new()
        };
        match codec {
            Some(Codec::Quant(k)) => {
                let mut st = QuantStats::default();
                for (x, y) in floats(k, &orig[r.clone()]).zip(floats(k, &served[r.clone()])) {
                    st.n += 1;
                    if !x.is_finite() || !y.is_finite() {
                        st.n_nonfinite += 1;
                        continue;
                    }
                    st.sum_sq_signal += x * x;
                    st.sum_sq_err += (x - y) * (x - y);
                    st.max_abs_err = st.max_abs_err.max((x - y).abs());
                }
                st.stored_bytes = stored;
                let preset = a
                    .meta()
                    .tensor(&f.path, &name)
                    .map(|t| t.preset.clone())
                    .filter(|p| !p.is_empty())
                    .unwrap_or_else(|| "lossy".into());
                rows.push((
                    super::writer::quality_row(&f.path, &name, &preset, st.n, len, &st),
                    st,
                ));
            }
            _ => {
                if orig[r.clone()] != served[r.clone()] {
                    let k = orig[r.clone()]
                        .iter()
                        .zip(&served[r.clone()])
                        .position(|(x, y)| x != y)
                        .unwrap_or(0);
                    return Err(problem(
                        Some((r.start + k) as u64),
                        "differs from the original in a lossless part".into(),
                    ));
                }
            }
        }
    }
    Ok(rows)
}

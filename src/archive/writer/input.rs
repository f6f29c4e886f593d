//! What `pack` stores from its input: a single file, or the regular files under a directory
//! minus the excluded ones; a Hugging Face hub cache repository (`models--org--name`) by its
//! snapshot. Also the warnings about the input that a user acts on (no tensors at all, PyTorch
//! pickles).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::plan::is_gguf_file;
use super::{PackError, PackOptions, glob_match, io_err};
use crate::format;

/// One regular file to store.
pub(super) struct InputFile {
    pub abs: PathBuf,
    /// Path inside the archive.
    pub rel: String,
    pub mode: u32,
    pub size: u64,
}

/// Skipped unless `--no-default-excludes`: a git checkout's repository (a model cloned from the
/// Hub has its LFS objects there, a second copy of every weight) and the download cache that
/// `huggingface-cli download --local-dir` leaves in the model directory.
pub const DEFAULT_EXCLUDES: &[&str] = &[".git", ".cache/huggingface"];

/// The files to store, and what the user should be told about them.
pub(super) struct Collected {
    pub files: Vec<InputFile>,
    /// Said on stderr (what was chosen or skipped).
    pub notices: Vec<String>,
    /// Said on stderr as warnings (the archive will not be what the user likely expects).
    pub warnings: Vec<String>,
}

/// Collect the input files: a single `.safetensors` or GGUF file, or every regular file under a
/// directory (sorted, so archives are reproducible) that no exclude pattern matches. Symlinks to
/// regular files are followed (Hugging Face's cache stores snapshots as links into a blob store);
/// links to directories and dangling links are refused by name, so nothing outside the input is
/// pulled in by surprise and no loop is possible. A Hugging Face cache repository is packed by
/// its snapshot (see [`hf_snapshot`]), never as `blobs/` plus `snapshots/`.
pub(super) fn collect(input: &Path, opts: &PackOptions) -> Result<Collected, PackError> {
    let meta = std::fs::metadata(input).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => PackError::InputMissing(input.to_path_buf()),
        _ => io_err(input, e),
    })?;
    let mut c = Collected {
        files: Vec::new(),
        notices: Vec::new(),
        warnings: Vec::new(),
    };
    if meta.is_file() {
        let gguf = is_gguf_file(input).map_err(|e| io_err(input, e))?;
        if !gguf && input.extension().and_then(|e| e.to_str()) != Some("safetensors") {
            return Err(PackError::InputKind(input.to_path_buf()));
        }
        let rel = input
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| PackError::BadPath {
                path: input.into(),
                msg: "name is not UTF-8".into(),
            })?
            .to_string();
        c.files.push(InputFile {
            abs: input.to_path_buf(),
            rel,
            mode: meta.permissions().mode() & 0o7777,
            size: meta.len(),
        });
        return Ok(c);
    }
    if !meta.is_dir() {
        return Err(PackError::InputKind(input.to_path_buf()));
    }
    let root = match hf_snapshot(input)? {
        Some((snap, which)) => {
            c.notices.push(format!(
                "{} is a Hugging Face cache repository: packing {which}, whose links are \
                 followed to blobs/ (blobs/ itself is not stored a second time)",
                input.display()
            ));
            snap
        }
        None => input.to_path_buf(),
    };
    let mut ex = Excludes::new(opts);
    walk(&root, "", &mut c.files, &mut ex)?;
    c.notices.extend(ex.report());
    if c.files.is_empty() {
        return Err(PackError::InputEmpty(input.to_path_buf()));
    }
    c.warnings.extend(pickle_warnings(&c.files));
    Ok(c)
}

/// The files `pack` would store from the directory `dir` with `opts` (path in the archive,
/// path on disk, size), and its notes: for `upg inspect DIR`, which must show what a pack stores.
pub fn listing(
    dir: &Path,
    opts: &PackOptions,
) -> Result<(Vec<(String, PathBuf, u64)>, Vec<String>), PackError> {
    let c = collect(dir, opts)?;
    let files = c
        .files
        .into_iter()
        .map(|f| (f.rel, f.abs, f.size))
        .collect();
    Ok((files, c.notices))
}

fn walk(
    dir: &Path,
    prefix: &str,
    out: &mut Vec<InputFile>,
    ex: &mut Excludes,
) -> Result<(), PackError> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| io_err(dir, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| io_err(dir, e))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let name = e
            .file_name()
            .into_string()
            .map_err(|_| PackError::BadPath {
                path: path.clone(),
                msg: "name is not UTF-8".into(),
            })?;
        let rel = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        // Before anything else about the entry: an excluded `.git` is neither read nor checked.
        let lmeta = std::fs::symlink_metadata(&path).map_err(|e| io_err(&path, e))?;
        if ex.skip(&rel, &name, lmeta.is_dir()) {
            continue;
        }
        format::validate_path(&rel).map_err(|m| PackError::BadPath {
            path: path.clone(),
            msg: m.to_string(),
        })?;
        let meta = if lmeta.file_type().is_symlink() {
            let m = std::fs::metadata(&path).map_err(|_| PackError::Symlink {
                path: path.clone(),
                msg: "dangling symbolic link".into(),
            })?;
            if m.is_dir() {
                return Err(PackError::Symlink {
                    path: path.clone(),
                    msg: "symbolic link to a directory (not followed; copy or remove it)".into(),
                });
            }
            m
        } else {
            lmeta
        };
        if meta.is_dir() {
            // A cache repository below the input (the input is the hub directory itself, say):
            // its snapshot under the repository's name, as at the top.
            match hf_snapshot(&path)? {
                Some((snap, which)) => {
                    ex.notes.push(format!(
                        "{rel}/ is a Hugging Face cache repository: storing {which}, under \
                         {rel}/ (its blobs/ is not stored a second time)"
                    ));
                    walk(&snap, &rel, out, ex)?;
                }
                None => walk(&path, &rel, out, ex)?,
            }
        } else if meta.is_file() {
            out.push(InputFile {
                abs: path,
                rel,
                mode: meta.permissions().mode() & 0o7777,
                size: meta.len(),
            });
        } else {
            return Err(PackError::BadPath {
                path,
                msg: "not a regular file, directory or symlink (device, socket or fifo)".into(),
            });
        }
    }
    Ok(())
}

/// If `dir` is a Hugging Face hub cache repository (`models--org--name`: `blobs/` holds each file
/// once under its hash, `snapshots/REV/` links to the blobs by file name, `refs/main` names the
/// current REV), the snapshot to pack and a phrase saying which one and why: the one `refs/main`
/// names, else the only one. Several snapshots and no usable `refs/main` is an error that lists
/// them. `refs/main` is only ever compared with the names found in `snapshots/`, so it cannot
/// point outside it.
pub(super) fn hf_snapshot(dir: &Path) -> Result<Option<(PathBuf, String)>, PackError> {
    let snaps = dir.join("snapshots");
    if !(snaps.is_dir() && dir.join("blobs").is_dir()) {
        return Ok(None);
    }
    let mut revs = Vec::new();
    for e in std::fs::read_dir(&snaps).map_err(|e| io_err(&snaps, e))? {
        let e = e.map_err(|e| io_err(&snaps, e))?;
        if e.path().is_dir()
            && let Ok(name) = e.file_name().into_string()
        {
            revs.push(name);
        }
    }
    revs.sort();
    let refs_main = dir.join("refs").join("main");
    let main = match std::fs::read_to_string(&refs_main) {
        Ok(s) => Some(s.trim().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_err(&refs_main, e)),
    };
    if let Some(m) = &main
        && revs.contains(m)
    {
        return Ok(Some((
            snaps.join(m),
            format!("snapshot {m}, the one refs/main names"),
        )));
    }
    let cache_err = |msg: String| PackError::HfCache {
        path: dir.to_path_buf(),
        msg,
    };
    match revs.as_slice() {
        [only] => {
            let why = match &main {
                Some(m) => format!(" (refs/main names {m:?}, which is not in snapshots/)"),
                None => String::new(),
            };
            Ok(Some((
                snaps.join(only),
                format!("its only snapshot {only}{why}"),
            )))
        }
        [] => Err(cache_err(
            "is a Hugging Face cache repository (blobs/, snapshots/) with no snapshot to pack"
                .into(),
        )),
        many => {
            let named = match &main {
                Some(m) => format!("refs/main names {m:?}, which is not among them"),
                None => "there is no refs/main to choose one".into(),
            };
            Err(cache_err(format!(
                "is a Hugging Face cache repository with {} snapshots ({}) and {named}: pack \
                 one directly, e.g. upg pack {}",
                many.len(),
                many.join(", "),
                snaps.join(&many[0]).display()
            )))
        }
    }
}

/// `--exclude` patterns and the default ones, with what each skipped.
struct Excludes {
    /// (pattern, is a default exclude, relative paths it skipped)
    pats: Vec<(String, bool, Vec<String>)>,
    /// Other notes from the walk (cache repositories found below the input).
    notes: Vec<String>,
}

impl Excludes {
    fn new(opts: &PackOptions) -> Self {
        let defaults = DEFAULT_EXCLUDES
            .iter()
            .filter(|_| opts.default_excludes)
            .map(|p| (p.to_string(), true));
        let user = opts.exclude.iter().map(|p| (p.clone(), false));
        Excludes {
            pats: defaults
                .chain(user)
                .map(|(p, d)| (p, d, Vec::new()))
                .collect(),
            notes: Vec::new(),
        }
    }

    /// Whether the entry at `rel` (base name `name`) is excluded; a directory is then not
    /// entered. The first matching pattern is credited with it.
    fn skip(&mut self, rel: &str, name: &str, is_dir: bool) -> bool {
        for (p, _, hits) in &mut self.pats {
            if exclude_matches(p, rel, name) {
                hits.push(if is_dir {
                    format!("{rel}/")
                } else {
                    rel.to_string()
                });
                return true;
            }
        }
        false
    }

    /// One line per pattern: what it skipped, or that a pattern given by the user matched
    /// nothing (most likely a typo).
    fn report(&self) -> Vec<String> {
        let mut out = self.notes.clone();
        let defaults: Vec<&String> = self
            .pats
            .iter()
            .filter(|(_, d, _)| *d)
            .flat_map(|(_, _, h)| h)
            .collect();
        if !defaults.is_empty() {
            let list: Vec<&str> = defaults.iter().map(|s| s.as_str()).collect();
            out.push(format!(
                "skipped {} (excluded by default; --no-default-excludes keeps {})",
                list.join(", "),
                if list.len() == 1 { "it" } else { "them" }
            ));
        }
        for (p, _, hits) in self.pats.iter().filter(|(_, d, _)| !*d) {
            if hits.is_empty() {
                out.push(format!("--exclude {p:?} matched nothing"));
            } else {
                const SHOWN: usize = 5;
                let mut list = hits[..hits.len().min(SHOWN)].join(", ");
                if hits.len() > SHOWN {
                    list.push_str(&format!(", ... ({} more)", hits.len() - SHOWN));
                }
                let n = hits.len();
                let paths = if n == 1 {
                    "1 path".into()
                } else {
                    format!("{n} paths")
                };
                out.push(format!("--exclude {p:?} skipped {paths}: {list}"));
            }
        }
        out
    }
}

/// An exclude pattern (glob: `*` any run, `?` one character) against an entry: a pattern with a
/// `/` is matched against the path relative to the input (`sub/*.bin`), one without against the
/// entry's name at any depth (`*.pt`, `.git`). A leading `./` and a trailing `/` are ignored.
pub fn exclude_matches(pattern: &str, rel: &str, name: &str) -> bool {
    let p = pattern.strip_prefix("./").unwrap_or(pattern);
    let p = p.strip_suffix('/').unwrap_or(p);
    if p.contains('/') {
        glob_match(p, rel)
    } else {
        glob_match(p, name)
    }
}

/// Is this a PyTorch pickle checkpoint by its name (`pytorch_model.bin` and its shards, `*.pt`,
/// `*.pth`)? Its tensors are inside a pickle, so upg can only store it as opaque bytes.
pub fn is_pickle_name(name: &str) -> bool {
    let base = name.rsplit('/').next().unwrap_or(name);
    base.ends_with(".pt")
        || base.ends_with(".pth")
        || (base.starts_with("pytorch_model") && base.ends_with(".bin"))
}

fn pickle_warnings(files: &[InputFile]) -> Vec<String> {
    let has_st = files.iter().any(|f| f.rel.ends_with(".safetensors"));
    files
        .iter()
        .filter(|f| is_pickle_name(&f.rel))
        .map(|f| {
            let base = f.rel.rsplit('/').next().unwrap_or(&f.rel);
            let copy = if has_st {
                format!(
                    "; the input also holds .safetensors files, which usually carry the same \
                     weights: --exclude '{base}' leaves it out"
                )
            } else {
                String::new()
            };
            format!(
                "{}: a PyTorch pickle ({:.1} MiB): stored as opaque bytes with lossless zstd only (its \
                 tensors cannot be coded, and loading it runs pickle code); convert it to \
                 safetensors (safetensors.torch.save_file) for a smaller archive{copy}",
                f.rel,
                f.size as f64 / f64::from(1u32 << 20)
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclude_patterns() {
        assert!(exclude_matches(".git", ".git", ".git"));
        assert!(exclude_matches(".git", "sub/.git", ".git"));
        assert!(!exclude_matches(".git", ".gitattributes", ".gitattributes"));
        assert!(exclude_matches("*.pt", "a/b/c.pt", "c.pt"));
        assert!(exclude_matches(
            ".cache/huggingface",
            ".cache/huggingface",
            "huggingface"
        ));
        assert!(!exclude_matches(".cache/huggingface", ".cache", ".cache"));
        assert!(exclude_matches("./onnx/", "onnx", "onnx"));
        assert!(exclude_matches("sub/*.bin", "sub/x.bin", "x.bin"));
        assert!(!exclude_matches("sub/*.bin", "x.bin", "x.bin"));
    }

    #[test]
    fn pickle_names() {
        for n in [
            "pytorch_model.bin",
            "pytorch_model-00001-of-00002.bin",
            "x/model.pt",
            "ckpt.pth",
        ] {
            assert!(is_pickle_name(n), "{n}");
        }
        for n in ["model.safetensors", "tokenizer.bin", "pt", "model.pte"] {
            assert!(!is_pickle_name(n), "{n}");
        }
    }
}

//! How a mount's sources become archives: the one place, used by `upg-mount` and the tests
//! alike. [`list_local`] lists what one local source holds (the only directory I/O of the vfs),
//! [`lay_out`] applies the layout rule (one archive alone at the root, otherwise a directory
//! each), and [`open_sources`] opens the archives on one shared cache budget. `upg-mount` adds
//! only the remote locations (`cli::remote::expand_mount_sources`), through the same two
//! functions.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::SetupError;
use crate::archive::{Archive, OpenOptions};

/// Where one archive of a mount comes from: a local path, or an already opened storage (a
/// remote object, see `cli::remote::expand_mount_sources`).
pub enum Source {
    Path(PathBuf),
    Storage(Arc<dyn crate::storage::Storage>),
}

/// One archive a source contributed, before the layout rule: its directory name, where it is,
/// and whether a listing (a folder, an S3 prefix) found it.
pub struct Found {
    pub name: String,
    pub source: Source,
    pub listed: bool,
}

/// What one local source holds: an archive file is itself; a folder contributes each `*.upg`
/// directly inside it, sorted (none is an error).
pub fn list_local(s: &Path) -> Result<Vec<Found>, SetupError> {
    if !s.is_dir() {
        return Ok(vec![Found {
            name: archive_dir_name(s),
            source: Source::Path(s.to_path_buf()),
            listed: false,
        }]);
    }
    let rd = std::fs::read_dir(s).map_err(|source| SetupError::ListDir {
        path: s.to_path_buf(),
        source,
    })?;
    let mut inside: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension() == Some(OsStr::new("upg")) && p.is_file())
        .collect();
    if inside.is_empty() {
        return Err(SetupError::NoArchives(format!(
            "{} contains no .upg files",
            s.display()
        )));
    }
    inside.sort();
    Ok(inside
        .into_iter()
        .map(|p| Found {
            name: archive_dir_name(&p),
            source: Source::Path(p),
            listed: true,
        })
        .collect())
}

/// The layout rule: one archive given by itself goes to the root (`None`); anything else (two
/// or more, or one found by listing a folder) gets a sub-directory per archive.
pub fn lay_out(mut found: Vec<Found>) -> Result<Vec<(Option<String>, Source)>, SetupError> {
    if found.is_empty() {
        return Err(SetupError::NoArchives("no sources given".into()));
    }
    if found.len() == 1 && !found[0].listed {
        return Ok(vec![(None, found.remove(0).source)]);
    }
    Ok(found
        .into_iter()
        .map(|f| (Some(f.name), f.source))
        .collect())
}

/// Expand local sources into `(directory name or None, archive path)` ([`list_local`] for each,
/// then [`lay_out`]).
pub fn expand_sources(sources: &[PathBuf]) -> Result<Vec<(Option<String>, PathBuf)>, SetupError> {
    let mut found = Vec::new();
    for s in sources {
        found.extend(list_local(s)?);
    }
    Ok(lay_out(found)?
        .into_iter()
        .filter_map(|(n, s)| match s {
            Source::Path(p) => Some((n, p)),
            Source::Storage(_) => None, // list_local finds paths only
        })
        .collect())
}

/// Opened archives with their directory names, as [`super::Vfs::from_archives`] takes them.
pub type Opened = Vec<(Option<String>, Arc<Archive>)>;

/// Open the archives of a laid-out list on one decoded-chunk cache of `cache_bytes`, shared by
/// all of them: an archive being read may use the whole budget, and one left idle costs nothing
/// (a budget split `cache_bytes / n` left a single busy archive of a folder mount 1/n of it).
pub fn open_sources(
    list: Vec<(Option<String>, Source)>,
    cache_bytes: usize,
) -> Result<Opened, SetupError> {
    let cache = crate::archive::shared_cache(cache_bytes);
    let mut archives = Vec::with_capacity(list.len());
    for (name, src) in list {
        let opts = OpenOptions {
            shared_cache: Some(cache.clone()),
            ..OpenOptions::default()
        };
        let a = match src {
            Source::Path(path) => Archive::open_with(&path, opts),
            Source::Storage(st) => Archive::open_storage(st, opts),
        }
        .map_err(SetupError::Open)?;
        archives.push((name, Arc::new(a)));
    }
    Ok(archives)
}

/// Directory name for an archive: its file name without a trailing `.upg`.
pub fn archive_dir_name(p: &Path) -> String {
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "archive".into());
    match name.strip_suffix(".upg") {
        Some(stem) if !stem.is_empty() => stem.to_string(),
        _ => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(name: &str, listed: bool) -> Found {
        Found {
            name: name.into(),
            source: Source::Path(PathBuf::from(format!("/x/{name}.upg"))),
            listed,
        }
    }

    fn names(list: &[(Option<String>, Source)]) -> Vec<Option<&str>> {
        list.iter().map(|(n, _)| n.as_deref()).collect()
    }

    #[test]
    fn one_archive_alone_goes_to_the_root_otherwise_a_directory_each() {
        assert_eq!(names(&lay_out(vec![found("a", false)]).unwrap()), [None]);
        assert_eq!(
            names(&lay_out(vec![found("a", true)]).unwrap()),
            [Some("a")]
        );
        assert_eq!(
            names(&lay_out(vec![found("a", false), found("b", false)]).unwrap()),
            [Some("a"), Some("b")]
        );
        assert!(matches!(
            lay_out(Vec::new()),
            Err(SetupError::NoArchives(_))
        ));
    }

    #[test]
    fn dir_names_drop_the_upg_suffix_only() {
        assert_eq!(archive_dir_name(Path::new("/m/phi-4.upg")), "phi-4");
        assert_eq!(archive_dir_name(Path::new("/m/.upg")), ".upg");
        assert_eq!(archive_dir_name(Path::new("/m/model.bin")), "model.bin");
    }
}

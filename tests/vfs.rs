//! The filesystem model without FUSE: tree, lookup, readdir, attributes for one and several
//! archives, errno mapping, and a reference-model property test of random reads against the
//! original bytes with tiny chunks and a tiny cache.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use proptest::prelude::*;
use upg::archive::writer::{PackOptions, pack};
use upg::archive::{Archive, ArchiveError, OpenOptions};
use upg::synth::{ModelShape, write_model};
use upg::vfs::{Kind, ROOT_INO, SetupError, Vfs, VfsError, VfsOptions};

/// A few hundred KiB: many 4 KiB chunks, fast to pack in a debug build.
const SMALL: ModelShape = ModelShape {
    vocab: 512,
    hidden: 64,
    ffn: 96,
    layers: 2,
};

struct Fixture {
    _dir: tempfile::TempDir,
    model: PathBuf,
    archive: PathBuf,
}

fn fixture(seed: u64, chunk_size: u32) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    write_model(&model, SMALL, seed).unwrap();
    // A nested file and an empty file, to exercise synthesised directories and zero-size reads.
    std::fs::create_dir_all(model.join("sub/deeper")).unwrap();
    std::fs::write(
        model.join("sub/deeper/notes.txt"),
        b"hello from a nested file\n",
    )
    .unwrap();
    std::fs::write(model.join("empty.bin"), b"").unwrap();
    let archive = dir.path().join("model.upg");
    pack(
        &model,
        &archive,
        &PackOptions {
            chunk_size,
            threads: 1,
            ..Default::default()
        },
    )
    .unwrap();
    Fixture {
        _dir: dir,
        model,
        archive,
    }
}

fn opts(cache: usize) -> VfsOptions {
    VfsOptions {
        cache_bytes: cache,
        ..VfsOptions::default()
    }
}

fn vfs_one(f: &Fixture, cache: usize) -> Vfs {
    let a = Archive::open_with(
        &f.archive,
        OpenOptions {
            cache_bytes: cache,
            ..Default::default()
        },
    )
    .unwrap();
    Vfs::from_archives(vec![(None, Arc::new(a))], opts(cache)).unwrap()
}

fn names(v: &Vfs, ino: u64) -> Vec<String> {
    v.readdir(ino, 0)
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect()
}

fn original_files(dir: &Path, prefix: &str, out: &mut Vec<(String, PathBuf)>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = format!("{prefix}{}", e.file_name().to_string_lossy());
        if e.file_type().unwrap().is_dir() {
            original_files(&e.path(), &format!("{name}/"), out);
        } else {
            out.push((name, e.path()));
        }
    }
}

#[test]
fn single_archive_tree_lookup_readdir_attrs() {
    let f = fixture(1, 4096);
    let v = vfs_one(&f, 1 << 20);
    let root = v.getattr(ROOT_INO).unwrap();
    assert_eq!(root.kind, Kind::Dir);
    assert_eq!(root.perm & 0o222, 0);
    assert_eq!(
        names(&v, ROOT_INO),
        [
            ".",
            "..",
            "config.json",
            "empty.bin",
            "generation_config.json",
            "model.safetensors",
            "sub",
            "tokenizer.json"
        ]
    );
    let mut files = Vec::new();
    original_files(&f.model, "", &mut files);
    for (rel, path) in &files {
        let a = v.lookup_path(rel).unwrap();
        let meta = std::fs::metadata(path).unwrap();
        assert_eq!(a.kind, Kind::File, "{rel}");
        assert_eq!(a.size, meta.len(), "{rel}");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            u32::from(a.perm),
            meta.permissions().mode() & 0o7555,
            "{rel}"
        );
        let bytes = v.read_at(a.ino, 0, u32::MAX).unwrap();
        assert_eq!(bytes, std::fs::read(path).unwrap(), "{rel}");
    }
    // Nested directories are synthesised, `..` leads back up.
    let sub = v.lookup(ROOT_INO, OsStr::new("sub")).unwrap();
    assert_eq!(sub.kind, Kind::Dir);
    assert_eq!(sub.nlink, 3);
    assert_eq!(names(&v, sub.ino), [".", "..", "deeper"]);
    let up = v.lookup(sub.ino, OsStr::new("..")).unwrap();
    assert_eq!(up.ino, ROOT_INO);
    // readdir continues from any entry's next_offset.
    let all = v.readdir(ROOT_INO, 0).unwrap();
    let rest = v.readdir(ROOT_INO, all[3].next_offset).unwrap();
    assert_eq!(rest, all[4..].to_vec());
    assert!(v.readdir(ROOT_INO, 1000).unwrap().is_empty());
}

#[test]
fn errors_map_to_errno() {
    let f = fixture(2, 4096);
    let v = vfs_one(&f, 1 << 20);
    let file = v.lookup_path("config.json").unwrap().ino;
    let e = v.lookup(ROOT_INO, OsStr::new("nope")).unwrap_err();
    assert!(matches!(e, VfsError::NotFound));
    assert_eq!(e.errno(), libc::ENOENT);
    assert_eq!(v.getattr(0).unwrap_err().errno(), libc::ENOENT);
    assert_eq!(v.getattr(u64::MAX).unwrap_err().errno(), libc::ENOENT);
    assert_eq!(v.readdir(file, 0).unwrap_err().errno(), libc::ENOTDIR);
    assert_eq!(
        v.lookup(file, OsStr::new("x")).unwrap_err().errno(),
        libc::ENOTDIR
    );
    assert_eq!(
        v.read_at(ROOT_INO, 0, 10).unwrap_err().errno(),
        libc::EISDIR
    );
    assert_eq!(v.open(file, true).unwrap_err().errno(), libc::EROFS);
    assert_eq!(v.open(ROOT_INO, false).unwrap_err().errno(), libc::EISDIR);
    assert_eq!(v.release(12345).unwrap_err().errno(), libc::EBADF);
    assert_eq!(
        v.getxattr(file, OsStr::new("user.x")).unwrap_err().errno(),
        libc::ENODATA
    );
    assert!(v.listxattr(file).unwrap().is_empty());
    let fh = v.open(file, false).unwrap();
    assert_eq!(v.open_handles(), 1);
    v.release(fh).unwrap();
    assert_eq!(v.open_handles(), 0);
}

#[test]
fn reads_past_eof_and_zero_length() {
    let f = fixture(3, 4096);
    let v = vfs_one(&f, 16 << 10);
    let a = v.lookup_path("model.safetensors").unwrap();
    let orig = std::fs::read(f.model.join("model.safetensors")).unwrap();
    assert!(v.read_at(a.ino, 0, 0).unwrap().is_empty());
    assert!(v.read_at(a.ino, a.size, 100).unwrap().is_empty());
    assert!(v.read_at(a.ino, a.size + 1, 100).unwrap().is_empty());
    assert!(v.read_at(a.ino, u64::MAX, u32::MAX).unwrap().is_empty());
    assert_eq!(
        v.read_at(a.ino, a.size - 10, 4096).unwrap(),
        orig[orig.len() - 10..]
    );
    let empty = v.lookup_path("empty.bin").unwrap();
    assert_eq!(empty.size, 0);
    assert!(v.read_at(empty.ino, 0, 4096).unwrap().is_empty());
}

/// The tree `upg-mount SOURCES` builds: its own expansion (`cli::remote::expand_mount_sources`,
/// local paths here), then the shared opener and tree builder, as `cli::mount::run_inner` does.
fn as_upg_mount(sources: &[PathBuf], cache: usize) -> Result<Vfs, String> {
    let list = upg::cli::remote::expand_mount_sources(sources, &Default::default())?;
    let archives = upg::vfs::open_sources(list, cache).map_err(|e| e.to_string())?;
    Vfs::from_archives(archives, opts(cache)).map_err(|e| e.to_string())
}

#[test]
fn upg_mount_lays_sources_out_as_the_tests_do() {
    let f1 = fixture(8, 4096);
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(&f1.archive, dir.path().join("alpha.upg")).unwrap();
    std::fs::copy(&f1.archive, dir.path().join("beta.upg")).unwrap();
    let other = tempfile::tempdir().unwrap();
    std::fs::copy(&f1.archive, other.path().join("alpha.upg")).unwrap();
    let empty = tempfile::tempdir().unwrap();
    let cases: Vec<Vec<PathBuf>> = vec![
        vec![dir.path().to_path_buf()],
        vec![dir.path().join("alpha.upg"), dir.path().join("beta.upg")],
        vec![dir.path().join("beta.upg")],
        vec![dir.path().join("alpha.upg"), other.path().join("alpha.upg")],
        vec![other.path().join("nothing")],
        vec![empty.path().to_path_buf()],
    ];
    for sources in cases {
        let ours = Vfs::open_sources(&sources, opts(1 << 20));
        let theirs = as_upg_mount(&sources, 1 << 20);
        match (ours, theirs) {
            (Ok(a), Ok(b)) => {
                assert_eq!(names(&a, ROOT_INO), names(&b, ROOT_INO), "{sources:?}");
                assert_eq!(a.inode_count(), b.inode_count());
            }
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b, "{sources:?}"),
            (a, b) => panic!("{sources:?}: {:?} vs {:?}", a.err(), b.err()),
        }
    }
}

#[test]
fn several_archives_get_one_directory_each() {
    let f1 = fixture(4, 4096);
    let f2 = fixture(5, 8192);
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(&f1.archive, dir.path().join("alpha.upg")).unwrap();
    std::fs::copy(&f2.archive, dir.path().join("beta.upg")).unwrap();
    std::fs::write(dir.path().join("README"), b"not an archive").unwrap();
    // A folder of archives.
    let v = Vfs::open_sources(&[dir.path().to_path_buf()], opts(1 << 20)).unwrap();
    assert_eq!(names(&v, ROOT_INO), [".", "..", "alpha", "beta"]);
    // One budget shared by both archives, not half of it each.
    assert!(v.archives().iter().all(|a| a.cache_budget() == 1 << 20));
    for (name, fx) in [("alpha", &f1), ("beta", &f2)] {
        let a = v.lookup_path(&format!("{name}/model.safetensors")).unwrap();
        let got = v.read_at(a.ino, 0, u32::MAX).unwrap();
        assert_eq!(
            got,
            std::fs::read(fx.model.join("model.safetensors")).unwrap()
        );
        let n = v
            .lookup_path(&format!("{name}/sub/deeper/notes.txt"))
            .unwrap();
        assert_eq!(
            v.read_at(n.ino, 0, 100).unwrap(),
            b"hello from a nested file\n"
        );
    }
    // Archives listed one by one.
    let v2 = Vfs::open_sources(
        &[dir.path().join("alpha.upg"), dir.path().join("beta.upg")],
        opts(1 << 20),
    )
    .unwrap();
    assert_eq!(names(&v2, ROOT_INO), [".", "..", "alpha", "beta"]);
    // A single archive: files at the root.
    let v3 = Vfs::open_sources(&[dir.path().join("beta.upg")], opts(1 << 20)).unwrap();
    assert!(v3.lookup_path("model.safetensors").is_ok());
    // Two archives with the same name clash.
    let other = tempfile::tempdir().unwrap();
    std::fs::copy(&f1.archive, other.path().join("alpha.upg")).unwrap();
    let e = Vfs::open_sources(
        &[dir.path().join("alpha.upg"), other.path().join("alpha.upg")],
        opts(1 << 20),
    )
    .unwrap_err();
    assert!(matches!(e, SetupError::NameClash(_)), "{e}");
    // A folder without archives, and a missing archive.
    let e = Vfs::open_sources(&[other.path().join("nothing")], opts(1 << 20)).unwrap_err();
    assert!(
        matches!(
            e,
            SetupError::Open(ArchiveError::Io {
                kind: std::io::ErrorKind::NotFound,
                ..
            })
        ),
        "{e}"
    );
    let empty = tempfile::tempdir().unwrap();
    let e = Vfs::open_sources(&[empty.path().to_path_buf()], opts(1 << 20)).unwrap_err();
    assert!(matches!(e, SetupError::NoArchives(_)), "{e}");
}

#[test]
fn statfs_reports_stored_size_read_only() {
    let f = fixture(6, 4096);
    let v = vfs_one(&f, 1 << 20);
    let s = v.statfs();
    let len = std::fs::metadata(&f.archive).unwrap().len();
    assert_eq!(s.blocks, len.div_ceil(u64::from(s.bsize)));
    assert_eq!((s.bfree, s.bavail, s.ffree), (0, 0, 0));
    assert_eq!(s.files, v.inode_count());
}

/// A 1 MiB-cache archive behind a vfs with a 64 KiB read-ahead window and 2 prefetch threads.
fn readahead_vfs(f: &Fixture) -> (Arc<Archive>, Vfs) {
    let a = Arc::new(
        Archive::open_with(
            &f.archive,
            OpenOptions {
                cache_bytes: 1 << 20,
                ..Default::default()
            },
        )
        .unwrap(),
    );
    let v = Vfs::from_archives(
        vec![(None, a.clone())],
        VfsOptions {
            cache_bytes: 1 << 20,
            readahead: 64 << 10,
            prefetch_threads: 2,
            ..VfsOptions::default()
        },
    )
    .unwrap();
    (a, v)
}

#[test]
fn sequential_reads_prefetch_following_chunks() {
    let f = fixture(7, 4096);
    let (a, v) = readahead_vfs(&f);
    let st = v.lookup_path("model.safetensors").unwrap();
    let fh = v.open(st.ino, false).unwrap();
    let orig = std::fs::read(f.model.join("model.safetensors")).unwrap();
    // Read-ahead starts once the run covers the window (64 KiB here).
    for i in 0..8u64 {
        let got = v.read(st.ino, fh, i * 8192, 8192).unwrap();
        assert_eq!(got, orig[(i * 8192) as usize..((i + 1) * 8192) as usize]);
    }
    // Chunks just beyond the last read were requested in the background.
    let fidx = a.file_index("model.safetensors").unwrap();
    let ahead = a.spans(fidx, 8 * 8192 + 16384, 1).unwrap()[0].chunk;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !a.is_cached(ahead) {
        assert!(std::time::Instant::now() < deadline, "no read-ahead");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    v.release(fh).unwrap();
}

#[test]
fn short_runs_do_not_prefetch() {
    // A random read that the kernel splits into a few consecutive requests must not start
    // read-ahead: the run (16 KiB) is shorter than the window (64 KiB).
    let f = fixture(7, 4096);
    let (a, v) = readahead_vfs(&f);
    let st = v.lookup_path("model.safetensors").unwrap();
    let fh = v.open(st.ino, false).unwrap();
    let at = 40_000u64;
    v.read(st.ino, fh, at, 8192).unwrap();
    v.read(st.ino, fh, at + 8192, 8192).unwrap();
    let fidx = a.file_index("model.safetensors").unwrap();
    let beyond = a.spans(fidx, at + 16384 + 8192, 1).unwrap()[0].chunk;
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(!a.is_cached(beyond), "read-ahead started on a short run");
    v.release(fh).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// Random reads (through handles and without) match the original bytes, with 4 KiB chunks and
    /// a 12 KiB cache (three chunks) so nearly every read evicts.
    #[test]
    fn random_reads_match_original(
        seed in 0u64..4,
        reads in proptest::collection::vec((0usize..5, any::<u64>(), 0u32..70_000, any::<bool>()), 1..40),
    ) {
        let f = fixture(100 + seed, 4096);
        let v = vfs_one(&f, 12 << 10);
        let mut files = Vec::new();
        original_files(&f.model, "", &mut files);
        files.sort();
        let originals: Vec<(u64, Vec<u8>)> = files
            .iter()
            .map(|(rel, p)| (v.lookup_path(rel).unwrap().ino, std::fs::read(p).unwrap()))
            .collect();
        let handles: Vec<u64> = originals.iter().map(|(ino, _)| v.open(*ino, false).unwrap()).collect();
        for (fi, off, len, via_handle) in reads {
            let fi = fi % originals.len();
            let (ino, orig) = &originals[fi];
            // Offsets mostly inside the file, some past its end.
            let off = off % (orig.len() as u64 + 9000);
            let got = if via_handle {
                v.read(*ino, handles[fi], off, len).unwrap()
            } else {
                v.read_at(*ino, off, len).unwrap()
            };
            let start = (off as usize).min(orig.len());
            let end = (off as usize).saturating_add(len as usize).min(orig.len());
            prop_assert_eq!(&got[..], &orig[start..end.max(start)]);
        }
    }
}

#[test]
fn read_ahead_stays_within_a_quarter_of_the_cache() {
    // 64 KiB cache: the scheduler decodes at most 16 KiB of file ahead, however far it is asked.
    let f = fixture(9, 4096);
    let a = Arc::new(
        Archive::open_with(
            &f.archive,
            OpenOptions {
                cache_bytes: 64 << 10,
                ..Default::default()
            },
        )
        .unwrap(),
    );
    let fi = a.file_index("model.safetensors").unwrap();
    let inside: Vec<u32> = a
        .spans(fi, 0, 16 << 10)
        .unwrap()
        .iter()
        .map(|s| s.chunk)
        .collect();
    // The first chunk past the cap that is not also one inside it (de-duplicated chunks).
    let beyond = a
        .spans(fi, 16 << 10, 64 << 10)
        .unwrap()
        .into_iter()
        .map(|s| s.chunk)
        .find(|c| !inside.contains(c))
        .unwrap();
    let sched = upg::archive::Scheduler::new(2);
    sched.read_ahead(&a, fi, 0, 1 << 20);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !inside.iter().all(|&c| a.is_cached(c)) {
        assert!(std::time::Instant::now() < deadline, "no read-ahead");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert!(
        !a.is_cached(beyond),
        "read-ahead went past a quarter of the cache"
    );
}

//! Round-trip property tests and the reference-model test of `read_at`: random tensors of every
//! dtype and shape (empty ones included), random chunk sizes, then random reads across chunk,
//! tensor and header boundaries, past EOF and of zero length, each compared with the original.

mod common;

use common::*;
use proptest::prelude::*;
use upg::archive::{Archive, OpenOptions};
use upg::synth::{Rng, write_safetensors};

fn shape_strategy() -> impl Strategy<Value = Vec<usize>> {
    prop_oneof![
        Just(vec![]),
        Just(vec![0]),
        Just(vec![3, 0]),
        (1usize..600).prop_map(|n| vec![n]),
        (1usize..40, 1usize..70).prop_map(|(a, b)| vec![a, b]),
        (1usize..5, 1usize..9, 1usize..33).prop_map(|(a, b, c)| vec![a, b, c]),
    ]
}

fn model_strategy() -> impl Strategy<Value = Vec<(usize, Vec<usize>)>> {
    prop::collection::vec((0..DTYPES.len(), shape_strategy()), 0..8)
}

fn build(root: &std::path::Path, spec: &[(usize, Vec<usize>)], seed: u64) -> std::path::PathBuf {
    let mut rng = Rng::new(seed);
    let tensors: Vec<Tensor> = spec
        .iter()
        .enumerate()
        .map(|(i, (d, s))| tensor(&mut rng, &format!("t{i}"), DTYPES[*d], s.clone()))
        .collect();
    model_dir(root, &tensors)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn pack_then_read_is_identical(spec in model_strategy(), chunk_pages in 1u32..5, seed in any::<u64>()) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = build(tmp.path(), &spec, seed);
        let out = tmp.path().join("m.upg");
        pack_dir(&dir, &out, chunk_pages * 4096);
        let a = Archive::open(&out).unwrap();
        assert_identical(&a, &dir);
    }

    #[test]
    fn random_reads_match_reference(
        spec in model_strategy(),
        seed in any::<u64>(),
        reads in prop::collection::vec((0usize..4, any::<u64>(), 0usize..20_000), 1..40),
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = build(tmp.path(), &spec, seed);
        let out = tmp.path().join("m.upg");
        pack_dir(&dir, &out, 4096);
        // A cache of two chunks forces evictions between reads.
        let a = Archive::open_with(&out, OpenOptions { cache_bytes: 8192, ..Default::default() }).unwrap();
        let originals: Vec<Vec<u8>> = a.files().iter().map(|f| std::fs::read(dir.join(&f.path)).unwrap()).collect();
        for (fi, off, len) in reads {
            let fi = fi % originals.len();
            let orig = &originals[fi];
            // Offsets up to 64 bytes past EOF, biased to land anywhere in the file.
            let off = off % (orig.len() as u64 + 64);
            let mut buf = vec![0xAAu8; len];
            let n = a.read_at(fi, off, &mut buf).unwrap();
            let start = (off as usize).min(orig.len());
            let want = &orig[start..(start + len).min(orig.len())];
            prop_assert_eq!(n, want.len());
            prop_assert!(&buf[..n] == want, "file {} offset {} len {}", fi, off, len);
        }
    }
}

/// Regression: a read that starts inside an empty tensor's position and spans the next tensor.
#[test]
fn read_spanning_empty_tensors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = build(
        tmp.path(),
        &[(0, vec![5]), (2, vec![0]), (3, vec![7]), (4, vec![])],
        7,
    );
    let out = tmp.path().join("m.upg");
    pack_dir(&dir, &out, 4096);
    let a = Archive::open(&out).unwrap();
    let fi = a.file_index("model.safetensors").unwrap();
    let orig = std::fs::read(dir.join("model.safetensors")).unwrap();
    for off in 0..orig.len() as u64 {
        let mut buf = vec![0u8; 13];
        let n = a.read_at(fi, off, &mut buf).unwrap();
        let s = off as usize;
        assert_eq!(&buf[..n], &orig[s..(s + 13).min(orig.len())]);
    }
}

/// Identical chunks are stored once: a directory with the same shard twice costs once.
#[test]
fn duplicate_files_are_stored_once() {
    let tmp = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(1);
    let dir = model_dir(
        tmp.path(),
        &[tensor(
            &mut rng,
            "w",
            safetensors::Dtype::BF16,
            vec![512, 512],
        )],
    );
    let single = tmp.path().join("one.upg");
    let s1 = pack_dir(&dir, &single, 65536);
    std::fs::copy(dir.join("model.safetensors"), dir.join("copy.safetensors")).unwrap();
    let double = tmp.path().join("two.upg");
    let s2 = pack_dir(&dir, &double, 65536);
    assert!(s2.dedup_chunks > 0);
    // The copy adds index entries only, not data.
    assert!(
        s2.bytes_out < s1.bytes_out + 4096,
        "{} vs {}",
        s2.bytes_out,
        s1.bytes_out
    );
    let a = Archive::open(&double).unwrap();
    assert_identical(&a, &dir);
}

/// A single .safetensors file is accepted as input and stored under its file name.
#[test]
fn single_file_input() {
    let tmp = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(2);
    let dir = model_dir(
        tmp.path(),
        &[tensor(
            &mut rng,
            "w",
            safetensors::Dtype::F32,
            vec![100, 30],
        )],
    );
    let out = tmp.path().join("f.upg");
    pack_dir(&dir.join("model.safetensors"), &out, 4096);
    let a = Archive::open(&out).unwrap();
    assert_eq!(a.files().len(), 1);
    assert_eq!(a.files()[0].path, "model.safetensors");
    assert_identical(&a, &dir);
}

/// A file larger than 4 GiB (sparse: zeros with data straddling the 4 GiB mark and at the end)
/// packs, dedups its zero chunks, and reads back exactly at offsets past 2^32.
#[test]
fn file_over_4_gib_round_trips() {
    let td = tempfile::tempdir().unwrap();
    let src = td.path().join("in");
    std::fs::create_dir(&src).unwrap();
    let big = src.join("big.bin");
    let size: u64 = (4 << 30) + 3 * 4096 + 17;
    let mut rng = Rng::new(4);
    let marks: Vec<(u64, Vec<u8>)> = [(1u64 << 32) - 1000, size - 5000]
        .iter()
        .map(|&o| (o, (0..3000).map(|_| rng.next_u64() as u8).collect()))
        .collect();
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::create(&big).unwrap();
        f.set_len(size).unwrap();
        for (o, b) in &marks {
            f.write_all_at(b, *o).unwrap();
        }
    }
    let out = td.path().join("big.upg");
    let opts = upg::archive::writer::PackOptions {
        chunk_size: 4 << 20,
        ..Default::default()
    };
    let s = upg::archive::writer::pack(&src, &out, &opts).unwrap();
    assert_eq!(s.bytes_in, size);
    assert!(
        std::fs::metadata(&out).unwrap().len() < 1 << 20,
        "zero chunks stored once"
    );
    let a = Archive::open(&out).unwrap();
    assert_eq!(a.files()[0].size, size);
    for (o, b) in &marks {
        let mut buf = vec![0u8; b.len() + 200];
        let n = a.read_at(0, o - 100, &mut buf).unwrap();
        let want = (size - (o - 100)).min(buf.len() as u64) as usize;
        assert_eq!(n, want);
        assert!(buf[..100].iter().all(|&x| x == 0));
        assert_eq!(&buf[100..100 + b.len()], &b[..]);
    }
    let rep = upg::archive::verify::verify(&a, None);
    assert!(rep.problems.is_empty(), "{:?}", rep.problems);
}

/// The pack window runs across file boundaries: many files of every kind (several shards,
/// empty files first, between and last, files smaller and larger than a chunk), tiny chunks
/// so the window holds chunks of several files at once; contents and per-file SHA-256 must come
/// back exactly, and in the sorted order.
#[test]
fn window_spans_many_files() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("m");
    std::fs::create_dir_all(dir.join("d")).unwrap();
    let mut rng = Rng::new(7);
    for s in 0..3 {
        let tensors: Vec<Tensor> = (0..4)
            .map(|i| {
                tensor(
                    &mut rng,
                    &format!("s{s}t{i}"),
                    DTYPES[i % DTYPES.len()],
                    vec![97 * (i + 1)],
                )
            })
            .collect();
        write_safetensors(&dir.join(format!("shard{s}.safetensors")), &tensors).unwrap();
    }
    for (name, len) in [
        ("a_empty", 0usize),
        ("d/mid_empty", 0),
        ("d/one", 1),
        ("e_big.txt", 20_000),
        ("zz_empty", 0),
    ] {
        let bytes: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    let out = root.path().join("m.upg");
    pack_dir(&dir, &out, 4096);
    let a = Archive::open(&out).unwrap();
    let names: Vec<&str> = a.files().iter().map(|f| f.path.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    assert_eq!(names.len(), 8);
    assert_identical(&a, &dir);
    let rep = upg::archive::verify::verify(&a, Some(&dir));
    assert!(rep.problems.is_empty(), "{:?}", rep.problems);
}

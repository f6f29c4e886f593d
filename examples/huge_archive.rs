//! Write a valid archive with millions of DISTINCT chunks, quickly: the input of the index-scale
//! benchmark (issue 9 item 4, `scripts/bench-index.sh`).
//!
//! ```sh
//! cargo run --release --example huge_archive -- OUT.upg [--chunks 5000000] [--files 5] [--seg-chunks 64]
//! cargo run --release --example huge_archive -- --check OUT.upg [--reads 200]
//! ```
//! Defaults: 5,000,000 chunks of 256 KiB = 1.31 TB of logical model in 5 files of ~262 GB, each
//! file cut into segments of 64 chunks (16 MiB, about the size of one expert matrix of a
//! DeepSeek-V3-sized model; ~78,000 segments). A zero-filled model would de-duplicate to one
//! chunk record and prove nothing about the chunk table, so chunk `k` (global id) decodes to
//! 256 KiB of the little-endian u64 `k ^ SALT` repeated; every chunk record is distinct.
//!
//! Why it is fast: compressing 1.3 TB with zstd would take many minutes. A zstd frame of a
//! repeated 8-byte value is 8 raw literals and matches at offset 8, so one real zstd frame is made
//! for a template value and each chunk's frame is that frame with the 8 literal bytes replaced.
//! The generator decodes a sample of the patched frames with the real zstd decoder and compares
//! them with the expected content before writing anything, and refuses to run if the template
//! frame does not contain its literal bytes exactly once. What remains per chunk is the xxh3 of
//! the 256 KiB decoded bytes (on all cores).
//!
//! The records, segments and footer are built with upg's own format types (`format::Index`,
//! `to_bytes`, `footer_bytes`), i.e. the writer's serialisation. One honest gap: a file entry's
//! SHA-256 is zeros (hashing 1.3 TB would take ~15 minutes on 2 cores), so a full `upg verify`
//! would report the files' SHA-256 as wrong (it would also decode 1.3 TB). `--check` instead reads
//! random ranges through `Archive::read_at` (which checks both chunk hashes) and compares them with
//! the expected content.

use std::io::Write;
use std::time::Instant;

use upg::format::{self, ChunkRecord, FileEntry, Footer, Index, Segment, SegmentKind};
use xxhash_rust::xxh3::xxh3_64;

const CHUNK: usize = 256 << 10;
const SALT: u64 = 0x9E37_79B9_7F4A_7C15;
/// Template value: 8 distinct bytes, none zero, so its occurrence in the frame is unambiguous.
const TEMPLATE: u64 = 0xF1E2_D3C4_B5A6_9788;
const TEMPLATE2: u64 = 0x1F2E_3D4C_5B6A_7980;

fn value(k: u64) -> u64 {
    k ^ SALT
}

fn fill(buf: &mut [u8], v: u64) {
    let b = v.to_le_bytes();
    for c in buf.chunks_exact_mut(8) {
        c.copy_from_slice(&b);
    }
}

/// A zstd frame of 256 KiB of TEMPLATE repeated, and where each of its literal bytes is:
/// (position in the frame, byte of the u64 it holds). zstd cuts the frame into 128 KiB blocks, and
/// each block repeats some literals, so they are found by comparing the frames of two template
/// values whose 16 bytes are all distinct; the frames must have the same length.
fn template_frame(buf: &mut [u8]) -> (Vec<u8>, Vec<(usize, usize)>) {
    let (t1, t2) = (TEMPLATE.to_le_bytes(), TEMPLATE2.to_le_bytes());
    fill(buf, TEMPLATE);
    let f1 = zstd::bulk::compress(buf, 1).expect("zstd");
    fill(buf, TEMPLATE2);
    let f2 = zstd::bulk::compress(buf, 1).expect("zstd");
    assert_eq!(
        f1.len(),
        f2.len(),
        "template frames differ in length: trick does not apply"
    );
    let mut lits = Vec::new();
    for i in 0..f1.len() {
        if f1[i] != f2[i] {
            let j = (0..8)
                .find(|&j| t1[j] == f1[i] && t2[j] == f2[i])
                .expect("a differing frame byte that is not a literal: trick does not apply");
            lits.push((i, j));
        }
    }
    (f1, lits)
}

fn arg(args: &[String], name: &str, default: u64) -> u64 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect("number"))
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--check") {
        let path = args.get(1).expect("--check OUT.upg");
        check(path, arg(&args, "--reads", 200));
        return;
    }
    let out = args.first().filter(|a| !a.starts_with("--")).expect(
        "usage: huge_archive OUT.upg [--chunks N] [--files F] [--seg-chunks S] | --check OUT.upg",
    );
    let n_chunks = arg(&args, "--chunks", 5_000_000);
    let n_files = arg(&args, "--files", 5).max(1);
    let seg_chunks = arg(&args, "--seg-chunks", 64).max(1);
    let t0 = Instant::now();

    // Two real frames for two template values; the bytes where they differ are the literals.
    let mut buf = vec![0u8; CHUNK];
    let (frame, lits) = template_frame(&mut buf);
    let patched = |k: u64| {
        let mut f = frame.clone();
        let v = value(k).to_le_bytes();
        for &(i, j) in &lits {
            f[i] = v[j];
        }
        f
    };
    // Decode a sample of patched frames with the real decoder before trusting the trick.
    let mut got = vec![0u8; CHUNK];
    for k in (0..n_chunks)
        .step_by((n_chunks / 1000).max(1) as usize)
        .chain([0, 1, 255, 256, n_chunks.saturating_sub(1)])
    {
        fill(&mut buf, value(k));
        let n = zstd::bulk::decompress_to_buffer(&patched(k), &mut got).expect("patched frame");
        if n != CHUNK || got != buf {
            let at = got.iter().zip(&buf).position(|(a, b)| a != b);
            panic!(
                "patched frame {k} decodes wrongly: {n} bytes, first difference at {at:?} (frame {} bytes, literals at {lits:?})",
                frame.len()
            );
        }
    }
    let flen = frame.len() as u64;

    // decoded hashes on all cores (the only per-chunk cost of size 256 KiB)
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()) as u64;
    let mut dec_hash = vec![0u64; n_chunks as usize];
    let per = n_chunks.div_ceil(threads).max(1) as usize;
    std::thread::scope(|s| {
        for (t, part) in dec_hash.chunks_mut(per).enumerate() {
            s.spawn(move || {
                let mut buf = vec![0u8; CHUNK];
                for (i, h) in part.iter_mut().enumerate() {
                    fill(&mut buf, value((t * per + i) as u64));
                    *h = xxh3_64(&buf);
                }
            });
        }
    });

    let mut chunks = Vec::with_capacity(n_chunks as usize);
    let mut f = std::io::BufWriter::with_capacity(
        8 << 20,
        std::fs::File::create(out).expect("create output"),
    );
    f.write_all(&format::superblock()).unwrap();
    let mut at = format::SUPERBLOCK_LEN as u64;
    for k in 0..n_chunks {
        let fr = patched(k);
        f.write_all(&fr).unwrap();
        chunks.push(ChunkRecord {
            offset: at,
            stored_len: flen as u32,
            decoded_len: CHUNK as u32,
            codec_id: 1, // zstd
            codec_param: 1,
            stored_hash: xxh3_64(&fr),
            decoded_hash: dec_hash[k as usize],
        });
        at += flen;
    }
    drop(dec_hash);
    let mut files = Vec::new();
    let per_file = n_chunks.div_ceil(n_files);
    let mut id = 0u64;
    for i in 0..n_files {
        let end = (id + per_file).min(n_chunks);
        let mut segments = Vec::new();
        let mut s = id;
        while s < end {
            let e = (s + seg_chunks).min(end);
            segments.push(Segment {
                kind: SegmentKind::Plain,
                len: (e - s) * CHUNK as u64,
                chunk_size: CHUNK as u32,
                chunks: (s as u32..e as u32).collect(),
            });
            s = e;
        }
        files.push(FileEntry {
            path: format!("model-{:05}-of-{n_files:05}.bin", i + 1),
            mode: 0o644,
            size: (end - id) * CHUNK as u64,
            sha256: [0; 32], // not computed: see the module comment
            segments,
        });
        id = end;
    }
    let index = Index {
        chunks,
        files,
        meta: format!(
            r#"{{"tool":"upg examples/huge_archive.rs","chunk_size":{CHUNK},"preset":"lossless","synthetic":"chunk k = u64 (k ^ {SALT:#x}) repeated; file SHA-256 not computed (zeros)"}}"#
        ),
    };
    let ib = index.to_bytes();
    let footer = Footer {
        index_offset: at,
        index_len: ib.len() as u64,
        index_hash: xxh3_64(&ib),
        minor: format::VERSION_MINOR,
    };
    f.write_all(&ib).unwrap();
    f.write_all(&format::footer_bytes(&footer)).unwrap();
    f.flush().unwrap();
    let logical = n_chunks * CHUNK as u64;
    println!(
        "wrote {out}: {n_chunks} distinct chunks, {} files, {} segments, {logical} logical bytes ({:.2} TB), data area {} bytes, index {} bytes, archive {} bytes, in {:.1} s",
        index.files.len(),
        index.files.iter().map(|f| f.segments.len()).sum::<usize>(),
        logical as f64 / 1e12,
        at - format::SUPERBLOCK_LEN as u64,
        ib.len(),
        at + ib.len() as u64 + format::FOOTER_LEN as u64,
        t0.elapsed().as_secs_f64()
    );
}

/// Read `reads` random ranges (some across chunk and segment boundaries, some at file ends)
/// through the library and compare them with the expected content.
fn check(path: &str, reads: u64) {
    let t0 = Instant::now();
    let a = upg::archive::Archive::open(path).expect("open");
    let opened = t0.elapsed().as_secs_f64();
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    // global chunk id of file i's first chunk: files hold consecutive ids in order
    let mut first = Vec::new();
    let mut id = 0u64;
    for f in a.files() {
        first.push(id);
        id += f.size / CHUNK as u64;
    }
    let mut checked = 0u64;
    for r in 0..reads {
        let fi = (next() % a.files().len() as u64) as usize;
        let size = a.files()[fi].size;
        let len = 1 + next() % (600 << 10);
        let off = match r % 4 {
            0 => size.saturating_sub(len / 2), // across EOF
            1 => {
                ((next() % (size / CHUNK as u64)) * CHUNK as u64).saturating_sub(len.min(4096) / 2)
            } // across a boundary
            _ => next() % size,
        }
        .min(size);
        let mut buf = vec![0u8; len as usize];
        let n = a.read_at(fi, off, &mut buf).expect("read_at");
        assert_eq!(n as u64, len.min(size - off), "short read at {off}");
        for (i, b) in buf[..n].iter().enumerate() {
            let p = off + i as u64;
            let k = first[fi] + p / CHUNK as u64;
            let want = value(k).to_le_bytes()[(p % 8) as usize];
            assert_eq!(*b, want, "file {fi} offset {p}: wrong byte");
        }
        checked += n as u64;
    }
    println!(
        "check {path}: opened in {opened:.3} s; {reads} random reads, {checked} bytes, all equal to the expected content"
    );
}

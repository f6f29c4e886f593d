//! GGUF round trips: a file built here with `upg::gguf::build` (always) and one written by the
//! PyPI `gguf` package (gguf-py, llama.cpp's own writer; scripts/test.sh installs it; the test
//! fails, not skips, without it) are packed, read back whole (SHA-256), read at random offsets
//! against the original, and read through a real FUSE mount with mmap (when /dev/fuse and root
//! are there). Also: an unparsable GGUF is stored as an ordinary file with a notice; an F16
//! GGUF compresses like the same weights in safetensors.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use safetensors::tensor::Dtype;
use sha2::{Digest, Sha256};
use upg::archive::Archive;
use upg::archive::reader::read_all;
use upg::archive::writer::{PackOptions, PackSummary, pack};
use upg::codec::Codec;
use upg::format::SegmentKind;
use upg::gguf::{GgmlType, Gguf, Value, build};
use upg::synth::{Rng, gaussian_bytes};

fn pack_file(src: &Path, out: &Path, chunk_size: u32) -> PackSummary {
    pack(
        src,
        out,
        &PackOptions {
            chunk_size,
            threads: 2,
            force: true,
            ..Default::default()
        },
    )
    .unwrap()
}

/// f16 scale bytes of a small positive half (~2e-3), as real block scales are.
fn small_half(rng: &mut Rng) -> [u8; 2] {
    half::f16::from_f64(2e-3 + rng.gauss().abs() * 1e-3).to_le_bytes()
}

/// Random blocks of ggml type `ty` whose f16 scales (per the block coder's lane names) are
/// plausible and whose other fields are random.
fn blocks(rng: &mut Rng, ty: GgmlType, n: usize) -> Vec<u8> {
    let lay = upg::codec::block::layout(ty.id as u8).unwrap();
    let mut v: Vec<u8> = (0..n * lay.block_bytes)
        .map(|_| rng.next_u64() as u8)
        .collect();
    for b in v.chunks_exact_mut(lay.block_bytes) {
        for l in lay.lanes.iter().filter(|l| l.name.ends_with(".lo")) {
            let o = l.off as usize;
            b[o..o + 2].copy_from_slice(&small_half(rng));
        }
    }
    v
}

/// A GGUF with float, block and integer tensors, padding between tensors and a non-default
/// alignment; trailing bytes after the data when `trailing`.
fn built_gguf(path: &Path, seed: u64, trailing: bool) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut tensors: Vec<(String, Vec<u64>, u32, Vec<u8>)> = Vec::new();
    let g = |rng: &mut Rng, d, n| gaussian_bytes(rng, d, n, 0.02);
    tensors.push(("f32".into(), vec![300, 7], 0, g(&mut rng, Dtype::F32, 2100)));
    tensors.push((
        "f16".into(),
        vec![4096, 9],
        1,
        g(&mut rng, Dtype::F16, 4096 * 9),
    ));
    tensors.push((
        "bf16".into(),
        vec![1000, 3],
        30,
        g(&mut rng, Dtype::BF16, 3000),
    ));
    tensors.push(("empty".into(), vec![0, 4], 0, vec![]));
    for name in [
        "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_XS",
    ] {
        let t = GgmlType::from_name(name).unwrap();
        let rows = 37u64; // odd: chunks of whole blocks cut inside rows
        let ne0 = u64::from(t.block_elems) * 3;
        let data = blocks(&mut rng, t, (rows * 3) as usize);
        tensors.push((name.to_lowercase(), vec![ne0, rows], t.id, data));
    }
    let ints: Vec<u8> = (0..500u32).flat_map(|i| (i * 7).to_le_bytes()).collect();
    tensors.push(("i32".into(), vec![500], 26, ints));
    let kvs = vec![
        ("general.architecture", Value::Str(b"llama".to_vec())),
        ("general.alignment", Value::U32(64)),
        (
            "tokenizer.ggml.tokens",
            Value::Array(
                upg::gguf::ValueType::String,
                (0..50)
                    .map(|i| Value::Str(format!("tok{i}").into_bytes()))
                    .collect(),
            ),
        ),
    ];
    let specs: Vec<(&str, Vec<u64>, u32, u64)> = tensors
        .iter()
        .map(|(n, d, t, b)| (n.as_str(), d.clone(), *t, b.len() as u64))
        .collect();
    let (mut file, offs) = build::header(&kvs, &specs, 64);
    let data_start = file.len();
    for ((_, _, _, b), off) in tensors.iter().zip(offs) {
        file.resize(data_start + off as usize, 0);
        file.extend_from_slice(b);
    }
    if trailing {
        file.extend_from_slice(b"trailing bytes after the data");
    }
    std::fs::write(path, &file).unwrap();
    file
}

/// Whole-file SHA-256 and random reads (across chunk, block, tensor and header boundaries,
/// past EOF, zero length) against the original.
fn check_reads(a: &Archive, name: &str, orig: &[u8], seed: u64) {
    let fi = a.file_index(name).unwrap();
    let back = read_all(a, fi).unwrap();
    assert_eq!(
        Sha256::digest(&back),
        Sha256::digest(orig),
        "{name}: SHA-256 differs"
    );
    let mut rng = Rng::new(seed);
    let n = orig.len() as u64;
    for _ in 0..2000 {
        let off = rng.next_u64() % (n + 100);
        let len = (rng.next_u64() % 9000) as usize;
        let mut buf = vec![0u8; len];
        let got = a.read_at(fi, off, &mut buf).unwrap();
        let want = orig
            .get(off as usize..(off as usize + len).min(orig.len()))
            .unwrap_or(&[]);
        assert_eq!(&buf[..got], want, "{name}: read_at({off}, {len})");
    }
}

#[test]
fn built_gguf_round_trips_with_block_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("model.bin"); // found by magic, not by name
    let orig = built_gguf(&src, 5, true);
    let out = dir.path().join("m.upg");
    let s = pack_file(&src, &out, 4096);
    assert!(s.notices.is_empty(), "{:?}", s.notices);
    let a = Archive::open(&out).unwrap();
    assert_eq!(a.format_minor(), 1);
    check_reads(&a, "model.bin", &orig, 1);
    let segs = a.segment_sizes(0);
    let g = Gguf::parse(&orig, orig.len() as u64).unwrap();
    assert_eq!(segs[0].0, SegmentKind::GgufHeader);
    assert_eq!(segs[0].1, g.data_start);
    let tensors = segs.iter().filter(|s| s.0 == SegmentKind::Tensor).count();
    assert_eq!(tensors, g.tensors.len());
    // Block-type tensors are cut into chunks of whole blocks (the largest number that fits
    // in the chunk size), the others at the chunk size.
    let f = &a.files()[0];
    let tsegs: Vec<_> = f
        .segments
        .iter()
        .filter(|s| s.kind == SegmentKind::Tensor)
        .collect();
    for (seg, (_, _, t)) in tsegs.iter().zip(g.spans()) {
        let cs = if upg::codec::block::layout(t.ty.id as u8).is_some() {
            4096 / t.ty.block_bytes * t.ty.block_bytes
        } else {
            4096
        };
        assert_eq!(seg.chunk_size, cs, "{}", t.name);
        for c in seg.chunks.iter() {
            let r = a.chunk_record(c).unwrap();
            assert_eq!(r.decoded_len % t.ty.block_bytes, 0, "{}", t.name);
        }
    }
    // Trailing bytes and padding are plain segments.
    assert_eq!(segs.last().unwrap().0, SegmentKind::Plain);
}

#[test]
fn unparsable_gguf_is_stored_as_an_ordinary_file_with_a_notice() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("in");
    std::fs::create_dir(&d).unwrap();
    let src = d.join("broken.gguf");
    let mut orig = built_gguf(&src, 6, false);
    orig[8..16].copy_from_slice(&u64::MAX.to_le_bytes()); // tensor count
    std::fs::write(&src, &orig).unwrap();
    let out = dir.path().join("b.upg");
    let s = pack_file(&d, &out, 4096);
    assert!(
        s.notices.iter().any(|n| n.contains("broken.gguf")
            && n.contains("tensor count")
            && n.contains("stored as an ordinary file")),
        "{:?}",
        s.notices
    );
    let a = Archive::open(&out).unwrap();
    assert_eq!(a.format_minor(), 0);
    let segs = a.segment_sizes(0);
    assert_eq!(segs.len(), 1);
    assert_eq!(segs[0].0, SegmentKind::Plain);
    check_reads(&a, "broken.gguf", &orig, 2);
}

/// Four 512 x 512 tensors written as a safetensors file (`st`, dtype `st_dtype`) and as an F16
/// GGUF of `gguf_data`; returns both paths and the GGUF's bytes.
fn st_and_f16_gguf(
    dir: &Path,
    st_dtype: Dtype,
    st_data: &[Vec<u8>],
    gguf_data: &[Vec<u8>],
) -> (PathBuf, PathBuf, Vec<u8>) {
    let st = dir.join("m.safetensors");
    let tensors: Vec<common::Tensor> = st_data
        .iter()
        .enumerate()
        .map(|(i, b)| (format!("w{i}"), st_dtype, vec![512, 512], b.clone()))
        .collect();
    upg::synth::write_safetensors(&st, &tensors).unwrap();
    let specs: Vec<(String, Vec<u64>, u32, u64)> = (0..gguf_data.len())
        .map(|i| (format!("w{i}"), vec![512, 512], 1, 512 * 512 * 2))
        .collect();
    let specs_ref: Vec<(&str, Vec<u64>, u32, u64)> = specs
        .iter()
        .map(|(n, d, t, s)| (n.as_str(), d.clone(), *t, *s))
        .collect();
    let (mut gg, _) = build::header(&[], &specs_ref, 32);
    for b in gguf_data {
        gg.extend_from_slice(b);
    }
    let gp = dir.join("m.gguf");
    std::fs::write(&gp, &gg).unwrap();
    (st, gp, gg)
}

#[test]
fn f16_gguf_compresses_like_the_same_weights_in_safetensors() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(11);
    let ws: Vec<Vec<u8>> = (0..4)
        .map(|_| gaussian_bytes(&mut rng, Dtype::F16, 512 * 512, 0.02))
        .collect();
    let (st, gp, _) = st_and_f16_gguf(dir.path(), Dtype::F16, &ws, &ws);
    let saved = |s: &PackSummary| 100.0 * (1.0 - s.bytes_out as f64 / s.bytes_in as f64);
    let a = saved(&pack_file(&st, &dir.path().join("st.upg"), 256 << 10));
    let b = saved(&pack_file(&gp, &dir.path().join("gg.upg"), 256 << 10));
    assert!(a > 5.0, "float coder saved only {a:.2}%");
    assert!((a - b).abs() < 0.5, "safetensors {a:.2}% vs GGUF {b:.2}%");
}

/// The usual F16 GGUF is converted from a BF16 checkpoint: its values are BF16 values. Coded as
/// BF16 (codec id 2 param 4, format 1.2) it compresses like the BF16 safetensors it came from.
#[test]
fn f16_gguf_converted_from_bf16_compresses_like_the_bf16_safetensors() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(12);
    let bf: Vec<Vec<u8>> = (0..4)
        .map(|_| gaussian_bytes(&mut rng, Dtype::BF16, 512 * 512, 0.02))
        .collect();
    let f16: Vec<Vec<u8>> = bf
        .iter()
        .map(|b| {
            b.chunks_exact(2)
                .flat_map(|v| {
                    let x = half::bf16::from_le_bytes([v[0], v[1]]).to_f32();
                    half::f16::from_f32(x).to_le_bytes()
                })
                .collect()
        })
        .collect();
    let (st, gp, gg) = st_and_f16_gguf(dir.path(), Dtype::BF16, &bf, &f16);
    let saved = |s: &PackSummary| 100.0 * (1.0 - s.bytes_out as f64 / s.bytes_in as f64);
    let a = saved(&pack_file(&st, &dir.path().join("st.upg"), 256 << 10));
    let out = dir.path().join("gg.upg");
    let b = saved(&pack_file(&gp, &out, 256 << 10));
    assert!(a > 5.0, "float coder saved only {a:.2}%");
    assert!(
        (a - b).abs() < 0.5,
        "BF16 safetensors {a:.2}% vs F16 GGUF {b:.2}%"
    );
    let ar = Archive::open(&out).unwrap();
    assert_eq!(ar.format_minor(), 2, "F16-as-BF16 chunks need format 1.2");
    let mapped = ar
        .chunk_records()
        .map(|c| c.unwrap())
        .filter(|c| (c.codec_id, c.codec_param) == (Codec::ID_FLOAT, Codec::PARAM_F16_VIA_BF16))
        .count();
    assert!(mapped >= 4, "{mapped} chunks coded as BF16");
    check_reads(&ar, "m.gguf", &gg, 3);
    // One value with 9 significant bits in a tensor: that tensor's chunk keeps the F16 coder.
    let mut g2 = gg.clone();
    let at = g2.len() - 2;
    g2[at..].copy_from_slice(&0x3C01u16.to_le_bytes());
    std::fs::write(&gp, &g2).unwrap();
    let out2 = dir.path().join("gg2.upg");
    pack_file(&gp, &out2, 256 << 10);
    let ar2 = Archive::open(&out2).unwrap();
    check_reads(&ar2, "m.gguf", &g2, 4);
    assert!(
        ar2.chunk_records()
            .map(|c| c.unwrap())
            .any(|c| Codec::from_id(c.codec_id, c.codec_param)
                == Ok(Codec::Float(upg::codec::FloatKind::F16)))
    );
}

// ---- the gguf-py file, through unpack and a real mount ----

fn python_gguf(out: &Path) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/make_test_gguf.py");
    let o = Command::new("python3")
        .arg(script)
        .arg(out)
        .output()
        .expect("python3");
    assert!(
        o.status.success(),
        "make_test_gguf.py failed (needs `pip install gguf numpy`, which scripts/test.sh does): {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn is_mounted(mnt: &Path) -> bool {
    let want = mnt.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(want.as_str()))
}

struct Mounted {
    mnt: PathBuf,
    child: Child,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while is_mounted(&self.mnt) && Instant::now() < deadline {
            let _ = Command::new("umount").arg(&self.mnt).status();
            std::thread::sleep(Duration::from_millis(50));
        }
        if is_mounted(&self.mnt) {
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn gguf_py_file_round_trips_through_unpack_and_a_mount() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("in");
    std::fs::create_dir(&src).unwrap();
    let gp = src.join("model.gguf");
    python_gguf(&gp);
    let orig = std::fs::read(&gp).unwrap();
    let g = Gguf::parse(&orig, orig.len() as u64).unwrap();
    let names: Vec<&str> = g.tensors.iter().map(|t| t.ty.name).collect();
    for t in [
        "F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q6_K",
    ] {
        assert!(names.contains(&t), "gguf-py file lacks {t}: {names:?}");
    }
    assert!(matches!(g.get("test.nested"), Some(Value::Array(..))));
    let out = dir.path().join("m.upg");
    let s = pack_file(&src, &out, 8192);
    assert!(s.notices.is_empty(), "{:?}", s.notices);
    let a = Archive::open(&out).unwrap();
    check_reads(&a, "model.gguf", &orig, 3);
    // The float tensors went through the float coder and saved something.
    for class in ["GGUF F16", "GGUF BF16", "GGUF Q8_0"] {
        let c = &s.per_class[class];
        assert!(c.bytes_out < c.bytes_in, "{class}: {c:?}");
    }
    // upg unpack writes the same bytes.
    let un = dir.path().join("un");
    let st = Command::new(env!("CARGO_BIN_EXE_upg"))
        .arg("unpack")
        .arg(&out)
        .arg("-o")
        .arg(&un)
        .arg("-q")
        .status()
        .unwrap();
    assert!(st.success());
    assert!(std::fs::read(un.join("model.gguf")).unwrap() == orig);

    if !Path::new("/dev/fuse").exists() || unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping the mount part: needs /dev/fuse and root");
        return;
    }
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_upg-mount"))
        .arg(&out)
        .arg(&mnt)
        .arg("-f")
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let m = Mounted {
        mnt: mnt.clone(),
        child,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !is_mounted(&mnt) {
        assert!(Instant::now() < deadline, "mount did not come up");
        std::thread::sleep(Duration::from_millis(20));
    }
    {
        let f = std::fs::File::open(mnt.join("model.gguf")).unwrap();
        // SAFETY: the mount is read-only and immutable for the test's duration.
        let map = unsafe { memmap2::Mmap::map(&f) }.unwrap();
        assert!(map[..] == orig[..], "mmap through the mount differs");
        let g2 = Gguf::parse(&map, map.len() as u64).unwrap();
        for ((s1, e1, t1), (s2, e2, _)) in g.spans().iter().zip(g2.spans()) {
            assert_eq!((s1, e1), (&s2, &e2));
            assert!(
                map[*s1 as usize..*e1 as usize] == orig[*s1 as usize..*e1 as usize],
                "{}",
                t1.name
            );
        }
    }
    // gguf-py itself reads the file through the mount (its reader memory-maps it).
    let py = Command::new("python3")
        .arg("-c")
        .arg(
            "import sys, gguf\n\
             r = gguf.GGUFReader(sys.argv[1])\n\
             print(len(r.tensors), sum(int(t.n_bytes) for t in r.tensors))",
        )
        .arg(mnt.join("model.gguf"))
        .output()
        .unwrap();
    assert!(
        py.status.success(),
        "{}",
        String::from_utf8_lossy(&py.stderr)
    );
    let total: u64 = g.tensors.iter().map(|t| t.size).sum();
    assert_eq!(
        String::from_utf8_lossy(&py.stdout).trim(),
        format!("{} {total}", g.tensors.len())
    );
    drop(m);
}

#[test]
fn inspect_lists_gguf_tensors_and_metadata_of_file_and_archive() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("m.gguf");
    built_gguf(&src, 8, false);
    let out = dir.path().join("m.upg");
    pack_file(&src, &out, 64 << 10);
    for (p, archive) in [(&src, false), (&out, true)] {
        let o = Command::new(env!("CARGO_BIN_EXE_upg"))
            .arg("inspect")
            .arg(p)
            .arg("--tensors")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(text.contains("16 tensors"), "{text}");
        assert!(text.contains("general.architecture = \"llama\""), "{text}");
        assert!(
            text.contains("tokenizer.ggml.tokens = [String; 50] \"tok0\""),
            "{text}"
        );
        let q4k = text
            .lines()
            .find(|l| l.trim_start().starts_with("q4_k "))
            .unwrap();
        assert!(q4k.contains("Q4_K") && q4k.contains("[768, 37]"), "{q4k}");
        // Random quant bytes: the block coder may not pay for this small tensor (stored raw).
        let coded = q4k.ends_with("block-q4_k") || q4k.ends_with("raw");
        assert_eq!(coded, archive, "{q4k}");
        let f16 = text
            .lines()
            .find(|l| l.trim_start().starts_with("f16 "))
            .unwrap();
        assert_eq!(f16.contains("float-f16"), archive, "{f16}");
    }
}

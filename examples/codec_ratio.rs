//! Measure the float-aware coder on real safetensors files.
//!
//! cargo run --release --example codec_ratio -- <file.safetensors>...
//!
//! Prints, per dtype and chunk size (256 KiB, 1 MiB, whole tensor): bytes in/out and % saved;
//! the order-0 entropy bounds (whole file and per tensor); and, at 256 KiB chunks, encode and
//! single-thread decode throughput (median of 7 runs, decode into a preallocated buffer).
use std::collections::BTreeMap;
use std::time::Instant;

use safetensors::{Dtype, SafeTensors};
use upg::codec::{FloatKind, float};

fn kind_of(d: Dtype) -> Option<FloatKind> {
    match d {
        Dtype::BF16 => Some(FloatKind::Bf16),
        Dtype::F16 => Some(FloatKind::F16),
        Dtype::F32 => Some(FloatKind::F32),
        _ => None,
    }
}

/// Order-0 bound in bits: entropy of the top 16 bits of each value (= the whole value for 16-bit
/// kinds) plus, for F32, order-0 entropies of the two low byte planes.
fn bound_bits(kind: FloatKind, data: &[u8]) -> f64 {
    let es = kind.elem_size();
    let n = data.len() / es;
    let mut h16 = vec![0u64; 65536];
    let mut lo = [[0u64; 256]; 2];
    for i in 0..n {
        let v = &data[i * es..(i + 1) * es];
        h16[u16::from_le_bytes([v[es - 2], v[es - 1]]) as usize] += 1;
        if es == 4 {
            lo[0][v[0] as usize] += 1;
            lo[1][v[1] as usize] += 1;
        }
    }
    let ent = |h: &[u64]| -> f64 {
        let t: u64 = h.iter().sum();
        h.iter()
            .filter(|&&c| c > 0)
            .map(|&c| -(c as f64) * (c as f64 / t as f64).log2())
            .sum()
    };
    let mut b = ent(&h16);
    if es == 4 {
        b += ent(&lo[0]) + ent(&lo[1]);
    }
    b + ((data.len() - n * es) * 8) as f64
}

/// CPU time of this thread in seconds: on a shared machine wall time also counts other
/// processes' time slices, so both are reported.
fn thread_cpu() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

#[derive(Default)]
struct Acc {
    input: u64,
    out: [u64; 8],
    bound_file: Vec<u8>,
    bound_tensor_bits: f64,
    bound_chunk_bits: f64,
    chunks: Vec<Vec<u8>>,
}

fn main() {
    let files: Vec<String> = std::env::args().skip(1).collect();
    if files.is_empty() {
        eprintln!("usage: cargo run --release --example codec_ratio -- <file.safetensors>...");
        std::process::exit(2);
    }
    // CODEC_RATIO_SIZES=64,128,256 (KiB): other chunk sizes than 256 KiB, 1 MiB and whole tensors.
    let sizes: Vec<(String, usize)> = match std::env::var("CODEC_RATIO_SIZES") {
        Ok(v) => v
            .split(',')
            .map(|k| {
                let k: usize = k.trim().parse().expect("CODEC_RATIO_SIZES: KiB numbers");
                (format!("{k}KiB"), k << 10)
            })
            .collect(),
        Err(_) => vec![
            ("256KiB".into(), 256 << 10),
            ("1MiB".into(), 1 << 20),
            ("tensor".into(), usize::MAX),
        ],
    };
    assert!(sizes.len() <= 8, "at most 8 chunk sizes");
    for path in &files {
        let bytes = std::fs::read(path).expect("read file");
        let st = SafeTensors::deserialize(&bytes).expect("parse safetensors");
        // CODEC_RATIO_QUICK=1: only 256 KiB chunks, no encode timing (for profiling decode).
        let quick = std::env::var_os("CODEC_RATIO_QUICK").is_some();
        let mut per: BTreeMap<String, (FloatKind, Acc)> = BTreeMap::new();
        let mut stored = Vec::new();
        for (_name, t) in st.iter() {
            let Some(kind) = kind_of(t.dtype()) else {
                continue;
            };
            let data = t.data();
            let acc = &mut per
                .entry(format!("{:?}", t.dtype()))
                .or_insert((kind, Acc::default()))
                .1;
            acc.input += data.len() as u64;
            acc.bound_file.extend_from_slice(data);
            acc.bound_tensor_bits += bound_bits(kind, data);
            for c in data.chunks(256 << 10) {
                acc.bound_chunk_bits += bound_bits(kind, c);
            }
            for (si, &(_, cs)) in sizes.iter().enumerate().take(if quick { 1 } else { 8 }) {
                for c in data.chunks(cs.min(data.len()).max(1)) {
                    stored.clear();
                    float::encode(kind, c, &mut stored);
                    acc.out[si] += stored.len() as u64;
                    if si == 0 {
                        acc.chunks.push(c.to_vec());
                    }
                }
            }
        }
        println!("file: {path}");
        for (dt, (kind, acc)) in &per {
            let pct = |o: f64| 100.0 * (1.0 - o / acc.input as f64);
            println!("  {dt}: {} bytes in", acc.input);
            for (si, (name, _)) in sizes.iter().enumerate() {
                println!(
                    "    chunk {name:>6}: {:>10} bytes out, {:.3}% saved",
                    acc.out[si],
                    pct(acc.out[si] as f64)
                );
            }
            println!(
                "    order-0 bound: {:.3}% (whole file stats), {:.3}% (per-tensor stats), {:.3}% (per-256KiB-chunk stats, tables free)",
                pct(bound_bits(*kind, &acc.bound_file) / 8.0),
                pct(acc.bound_tensor_bits / 8.0),
                pct(acc.bound_chunk_bits / 8.0)
            );
            // Throughput at the first chunk size (256 KiB unless CODEC_RATIO_SIZES), one thread.
            let mut enc = Vec::with_capacity(acc.chunks.len());
            let mut enc_t = Vec::new();
            let mut enc_c = Vec::new();
            for run in 0..if quick { 1 } else { 7 } {
                let t0 = Instant::now();
                let c0 = thread_cpu();
                let mut v = Vec::with_capacity(acc.chunks.len());
                for c in &acc.chunks {
                    let mut s = Vec::new();
                    float::encode(*kind, c, &mut s);
                    v.push(s);
                }
                enc_t.push(t0.elapsed().as_secs_f64());
                enc_c.push(thread_cpu() - c0);
                if run == 0 {
                    enc = v;
                }
            }
            let mut outbuf: Vec<Vec<u8>> = acc.chunks.iter().map(|c| vec![0u8; c.len()]).collect();
            let mut dec_t = Vec::new();
            let mut dec_c = Vec::new();
            for _ in 0..7 {
                let t0 = Instant::now();
                let c0 = thread_cpu();
                for (s, o) in enc.iter().zip(outbuf.iter_mut()) {
                    float::decode(*kind, s, o).expect("decode");
                }
                dec_t.push(t0.elapsed().as_secs_f64());
                dec_c.push(thread_cpu() - c0);
            }
            assert!(outbuf == acc.chunks, "round trip mismatch");
            let gib = acc.input as f64 / (1u64 << 30) as f64;
            println!(
                "    {} chunks, 1 thread, GiB/s of raw bytes, median of 7 (wall | thread CPU time):\n      encode {:.3} | {:.3}   decode {:.3} | {:.3}",
                sizes[0].0,
                gib / median(enc_t),
                gib / median(enc_c),
                gib / median(dec_t),
                gib / median(dec_c)
            );
        }
    }
    println!(
        "rerun: cargo run --release --example codec_ratio -- {}",
        files.join(" ")
    );
}

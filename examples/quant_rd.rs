//! Rate-distortion table of every lossy preset on one safetensors file: over all 2-D float
//! tensors with at least 65,536 elements, encoded in 256 KiB chunks like the packer does.
//! Columns: stored bits/weight (everything in the chunk streams), ratio vs BF16 on those
//! tensors, SNR, relative RMS error, max abs error, single-thread decode speed (GiB/s of
//! output in the original dtype, median of 5 passes over all chunks).
//!
//! `cargo run --release --example quant_rd -- model.safetensors [preset ...]`

use std::time::Instant;

use rayon::prelude::*;
use safetensors::{Dtype, SafeTensors};
use upg::codec::FloatKind;
use upg::codec::quant::{self, Preset, QuantStats, TensorPlan};

const CHUNK: usize = 256 * 1024;

fn float_kind(d: Dtype) -> Option<FloatKind> {
    match d {
        Dtype::BF16 => Some(FloatKind::Bf16),
        Dtype::F16 => Some(FloatKind::F16),
        Dtype::F32 => Some(FloatKind::F32),
        Dtype::F64 => Some(FloatKind::F64),
        _ => None,
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 2 {
        eprintln!("usage: quant_rd MODEL.safetensors [preset ...]");
        std::process::exit(2);
    }
    let presets: Vec<Preset> = if args.len() > 2 {
        args[2..]
            .iter()
            .map(|s| s.parse())
            .collect::<Result<_, _>>()?
    } else {
        Preset::ALL.to_vec()
    };
    let buf = std::fs::read(&args[1])?;
    let (hlen, meta) = SafeTensors::read_metadata(&buf)?;
    let base = 8 + hlen;
    let mut jobs: Vec<(String, FloatKind, Vec<usize>, usize, usize)> = meta
        .tensors()
        .into_iter()
        .filter_map(|(name, info)| {
            let numel: usize = info.shape.iter().product();
            let k = float_kind(info.dtype)?;
            (info.shape.len() == 2 && numel >= 65_536).then(|| {
                let (a, b) = info.data_offsets;
                (name, k, info.shape.clone(), base + a, base + b)
            })
        })
        .collect();
    jobs.sort_by(|x, y| x.0.cmp(&y.0));
    println!(
        "{} tensors selected from {}; chunks of {CHUNK} bytes",
        jobs.len(),
        args[1]
    );
    println!(
        "{:<13} {:>12} {:>8} {:>7} {:>8} {:>9} {:>10} {:>8} {:>8} {:>10}",
        "preset",
        "weights",
        "bits/w",
        "ratio",
        "SNR dB",
        "rel RMS",
        "max|err|",
        "escapes",
        "zeroed%",
        "dec GiB/s"
    );
    for &preset in &presets {
        let enc: Vec<(FloatKind, Vec<Vec<u8>>, QuantStats)> = jobs
            .par_iter()
            .map(|(_, kind, shape, a, b)| {
                let data = &buf[*a..*b];
                let plan = TensorPlan::new(preset, *kind, shape, data).expect("plan");
                let (s, st) = quant::encode_tensor(&plan, data, CHUNK).expect("encode");
                (*kind, s, st)
            })
            .collect();
        let mut total = QuantStats::default();
        let mut out_bytes = 0usize;
        for (kind, streams, st) in &enc {
            total.merge(st);
            out_bytes += st.n as usize * kind.elem_size();
            let _ = streams;
        }
        let mut out = vec![0u8; CHUNK];
        let mut times = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            for (kind, streams, st) in &enc {
                let len = st.n as usize * kind.elem_size();
                let step = (CHUNK / kind.elem_size()) * kind.elem_size();
                let mut left = len;
                for s in streams {
                    let this = left.min(step);
                    quant::decode(*kind, s, &mut out[..this]).expect("decode");
                    left -= this;
                }
            }
            times.push(t.elapsed().as_secs_f64());
        }
        times.sort_by(f64::total_cmp);
        let gibs = out_bytes as f64 / times[2] / (1u64 << 30) as f64;
        let bpw = total.bits_per_weight();
        println!(
            "{:<13} {:>12} {:>8.3} {:>6.2}x {:>8.2} {:>9.5} {:>10.3e} {:>8} {:>8.2} {:>10.2}",
            preset.to_string(),
            total.n,
            bpw,
            16.0 / bpw,
            total.snr_db(),
            total.rel_rms(),
            total.max_abs_err,
            total.n_escapes,
            100.0 * total.n_zeroed as f64 / total.n.max(1) as f64,
            gibs
        );
    }
    println!(
        "rerun: cargo run --release --example quant_rd -- {}",
        args[1..].join(" ")
    );
    Ok(())
}

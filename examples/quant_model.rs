//! Writes a lossy reconstruction of a safetensors file, the way `upg pack --preset` + FUSE will
//! serve it: every 2-D float tensor with at least 65,536 elements goes through the quantizer in
//! 256 KiB chunks (each chunk encoded and decoded on its own); every other tensor and the
//! header are copied byte for byte.
//!
//! `cargo run --release --example quant_model -- ORIG.safetensors OUT.safetensors PRESET`
//!
//! Prints one `SUMMARY {json}` line for scripts/quality.

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
    if args.len() != 4 {
        eprintln!("usage: quant_model ORIG.safetensors OUT.safetensors PRESET");
        std::process::exit(2);
    }
    let preset: Preset = args[3].parse()?;
    let buf = std::fs::read(&args[1])?;
    let (hlen, meta) = SafeTensors::read_metadata(&buf)?;
    let base = 8 + hlen;
    let t0 = Instant::now();
    let mut all_params = 0u64;
    let mut other_bytes = 0u64;
    let mut jobs = Vec::new();
    for (name, info) in meta.tensors() {
        let numel: usize = info.shape.iter().product();
        all_params += numel as u64;
        let (a, b) = info.data_offsets;
        match float_kind(info.dtype) {
            Some(k) if info.shape.len() == 2 && numel >= 65_536 => {
                jobs.push((name, k, info.shape.clone(), base + a, base + b))
            }
            _ => other_bytes += (b - a) as u64,
        }
    }
    jobs.sort_by(|x, y| x.0.cmp(&y.0));
    let results: Vec<_> = jobs
        .par_iter()
        .map(|(name, kind, shape, a, b)| {
            let data = &buf[*a..*b];
            let plan = TensorPlan::new(preset, *kind, shape, data).expect("plan");
            let (streams, st) = quant::encode_tensor(&plan, data, CHUNK).expect("encode");
            let mut out = vec![0u8; data.len()];
            let step = (CHUNK / kind.elem_size()) * kind.elem_size();
            for (s, o) in streams.iter().zip(out.chunks_mut(step)) {
                quant::decode(*kind, s, o).expect("decode");
            }
            (name.clone(), *a, out, st)
        })
        .collect();
    let mut outbuf = buf.clone();
    let mut total = QuantStats::default();
    let mut qparams = 0u64;
    for (_, a, out, st) in &results {
        outbuf[*a..*a + out.len()].copy_from_slice(out);
        total.merge(st);
        qparams += st.n;
    }
    std::fs::write(&args[2], &outbuf)?;
    let stored_all = total.stored_bytes + other_bytes;
    let bpw_all = stored_all as f64 * 8.0 / all_params as f64;
    println!(
        "{preset}: {} tensors quantized ({} of {} weights), {:.3} bits/weight on them, \
         {:.3} bits/weight over all tensors (others counted raw), ratio vs BF16 {:.3}x, \
         SNR {:.2} dB, zeroed {:.2}%, {:.1}s",
        results.len(),
        qparams,
        all_params,
        total.bits_per_weight(),
        bpw_all,
        16.0 / bpw_all,
        total.snr_db(),
        100.0 * total.n_zeroed as f64 / total.n.max(1) as f64,
        t0.elapsed().as_secs_f64()
    );
    println!(
        "SUMMARY {{\"preset\":\"{preset}\",\"quantized_weights\":{qparams},\"all_weights\":{all_params},\
         \"bpw_quantized\":{:.4},\"bpw_all\":{:.4},\"ratio_vs_bf16\":{:.4},\"snr_db\":{:.3},\
         \"rel_rms\":{:.5},\"max_abs_err\":{:e},\"zeroed_frac\":{:.5}}}",
        total.bits_per_weight(),
        bpw_all,
        16.0 / bpw_all,
        total.snr_db(),
        total.rel_rms(),
        total.max_abs_err,
        total.n_zeroed as f64 / total.n.max(1) as f64
    );
    Ok(())
}

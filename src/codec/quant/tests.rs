use super::*;
use proptest::prelude::*;

const KINDS: [FloatKind; 4] = [
    FloatKind::Bf16,
    FloatKind::F16,
    FloatKind::F32,
    FloatKind::F64,
];

/// Deterministic standard-normal samples (xorshift + Box-Muller); no rand dependency.
fn gaussian(n: usize, seed: u64, sigma: f64) -> Vec<f64> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| {
            let (u, v) = (next(), next());
            sigma * (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
        })
        .collect()
}

fn to_bytes(kind: FloatKind, xs: &[f64]) -> Vec<u8> {
    xs.iter()
        .flat_map(|&x| to_bits(kind, x)[..kind.elem_size()].to_vec())
        .collect()
}

fn values(kind: FloatKind, b: &[u8]) -> Vec<f64> {
    b.chunks_exact(kind.elem_size())
        .map(|c| read_f64(kind, c))
        .collect()
}

/// Half an ulp of `v` in `kind` (the output rounding the decoder adds after `q * step`).
fn half_ulp(kind: FloatKind, v: f64) -> f64 {
    let mant = match kind {
        FloatKind::Bf16 => 8,
        FloatKind::F16 => 11,
        FloatKind::F32 => 24,
        FloatKind::F64 => 53,
    };
    let e = if v == 0.0 {
        -1074.0
    } else {
        v.abs().log2().floor()
    };
    let sub = match kind {
        FloatKind::F16 => 2f64.powi(-25),
        _ => 0.0,
    };
    (e - mant as f64).exp2().max(sub)
}

fn roundtrip(plan: &TensorPlan, kind: FloatKind, data: &[u8]) -> (Vec<u8>, QuantStats) {
    let mut s = Vec::new();
    let st = plan.encode_chunk(data, &mut s).unwrap();
    assert_eq!(st.stored_bytes as usize, s.len());
    // Not zeros: decoders must write every byte (the reader decodes into recycled buffers).
    let mut out = vec![0xA5u8; data.len()];
    decode(kind, &s, &mut out).unwrap();
    (out, st)
}

#[test]
fn preset_names_round_trip_and_unknown_is_clear() {
    for p in Preset::ALL {
        assert_eq!(p.to_string().parse::<Preset>().unwrap(), p);
    }
    assert_eq!("Q4".parse::<Preset>().unwrap(), Preset::Q4);
    let e = "q2".parse::<Preset>().unwrap_err().to_string();
    assert!(e.contains("q2") && e.contains("prime-sparse"), "{e}");
}

#[test]
fn gaussian_every_preset_every_kind() {
    let n = 1 << 16;
    for kind in KINDS {
        let xs = to_bytes(kind, &gaussian(n, 7, 0.02));
        let orig = values(kind, &xs);
        let mut last_snr = f64::INFINITY;
        for p in Preset::ALL {
            let plan = TensorPlan::new(p, kind, &[256, 256], &xs).unwrap();
            let (out, st) = roundtrip(&plan, kind, &xs);
            let back = values(kind, &out);
            // Stats describe exactly what the decoder produced.
            let err: f64 = orig.iter().zip(&back).map(|(a, b)| (a - b) * (a - b)).sum();
            assert!(
                (err - st.sum_sq_err).abs() <= 1e-9 * err.max(1e-30),
                "{p} {kind:?}"
            );
            let snr = st.snr_db();
            let bits = st.bits_per_weight();
            if let Some(target) = p.target_bits() {
                // Every weight within half a step (+ output rounding).
                for (a, b) in orig.iter().zip(&back) {
                    assert!(
                        (a - b).abs() <= plan.step() / 2.0 + half_ulp(kind, *b) + 1e-300,
                        "{p} {kind:?}: {a} -> {b}, step {}",
                        plan.step()
                    );
                }
                eprintln!("{p} {kind:?}: {bits:.3} b/w (target {target}), {snr:.2} dB");
                assert!(
                    bits > target - 0.35 && bits < target + 0.35,
                    "{p} {kind:?}: {bits} bits/weight, target {target}"
                );
                // ECSQ on a Gaussian: SNR ~ 6.02 R - 1.53 dB; allow 1.5 dB slack.
                assert!(
                    snr > 6.02 * bits - 3.0,
                    "{p} {kind:?}: {snr} dB at {bits} b"
                );
                assert!(snr < last_snr, "{p}: SNR must fall with the rate");
                last_snr = snr;
                if p == Preset::Q8 {
                    assert!(snr >= 40.0, "q8 {kind:?} SNR {snr}");
                    assert!(bits <= 16.0 / 2.2, "q8 {kind:?} {bits} bits");
                }
                if p == Preset::Q4 {
                    assert!(bits <= 4.0, "q4 {kind:?} {bits} bits");
                }
            } else {
                // prime-sparse: about half pruned, the rest on the INT8 grid of absmax/127.
                let zeros = back.iter().filter(|&&b| b == 0.0).count() as f64 / n as f64;
                assert!((0.49..0.53).contains(&zeros), "{kind:?} sparsity {zeros}");
                let absmax = orig.iter().fold(0.0f64, |m, x| m.max(x.abs()));
                let scale = absmax / 127.0;
                assert!((plan.step() - scale).abs() <= 1e-12 * scale);
                for (a, b) in orig.iter().zip(&back) {
                    if a.abs() >= plan.prune_threshold() {
                        assert!((a - b).abs() <= scale / 2.0 + half_ulp(kind, *b));
                    } else {
                        assert_eq!(*b, 0.0);
                    }
                }
                assert!(plan.codebook_len() <= 255);
            }
        }
    }
}

#[test]
fn nan_inf_round_trip_bit_exact() {
    for kind in KINDS {
        let es = kind.elem_size();
        let mut xs = to_bytes(kind, &gaussian(4096, 3, 1.0));
        let specials: Vec<Vec<u8>> = match kind {
            // 0x7fff / 0x7ffe are also the fused 16-bit decoder's stand-ins (SENT_ESC, SENT_BAD).
            FloatKind::Bf16 => [0x7fc0u16, 0xffc1, 0x7f80, 0x7fff, 0x7ffe, 0xff80, 0x7f81]
                .iter()
                .map(|v| v.to_le_bytes().to_vec())
                .collect(),
            FloatKind::F16 => [0x7e00u16, 0xfe01, 0x7c00, 0x7fff, 0x7ffe, 0xfc00, 0x7c01]
                .iter()
                .map(|v| v.to_le_bytes().to_vec())
                .collect(),
            FloatKind::F32 => [0x7fc0_0000u32, 0xffc0_0001, 0x7f80_0000, 0xff80_0000]
                .iter()
                .map(|v| v.to_le_bytes().to_vec())
                .collect(),
            FloatKind::F64 => [f64::NAN, f64::INFINITY, f64::NEG_INFINITY]
                .iter()
                .map(|v| v.to_bits().to_le_bytes().to_vec())
                .collect(),
        };
        let positions = [0usize, 1, 17, 31, 32, 1000, 4095];
        for (i, &pos) in positions.iter().enumerate() {
            let sp = &specials[i % specials.len()];
            xs[pos * es..pos * es + es].copy_from_slice(sp);
        }
        for p in Preset::ALL {
            let plan = TensorPlan::new(p, kind, &[64, 64], &xs).unwrap();
            assert!(plan.step().is_finite() && plan.step() > 0.0);
            let (out, st) = roundtrip(&plan, kind, &xs);
            assert_eq!(st.n_nonfinite, positions.len() as u64);
            for &pos in &positions {
                assert_eq!(out[pos * es..pos * es + es], xs[pos * es..pos * es + es]);
            }
            assert!(st.snr_db() > 5.0, "{p} {kind:?} finite part survives");
        }
    }
}

#[test]
fn all_zero_all_nan_and_constant_tensors() {
    for kind in KINDS {
        for p in Preset::ALL {
            let zeros = vec![0u8; 1000 * kind.elem_size()];
            let plan = TensorPlan::new(p, kind, &[10, 100], &zeros).unwrap();
            let (out, st) = roundtrip(&plan, kind, &zeros);
            assert_eq!(out, zeros);
            assert_eq!(st.sum_sq_err, 0.0);
            assert!(st.stored_bytes < 100, "{p}: zeros cost {}", st.stored_bytes);

            let nan = to_bytes(kind, &vec![f64::NAN; 33]);
            let plan = TensorPlan::new(p, kind, &[33], &nan).unwrap();
            assert_eq!(roundtrip(&plan, kind, &nan).0, nan);

            let c = to_bytes(kind, &vec![-0.375; 300]);
            let plan = TensorPlan::new(p, kind, &[3, 100], &c).unwrap();
            let back = values(kind, &roundtrip(&plan, kind, &c).0);
            let tol = if p == Preset::PrimeSparse {
                0.375 / 254.0
            } else {
                plan.step() / 2.0
            };
            assert!(
                back.iter()
                    .all(|b| (b + 0.375).abs() <= tol + half_ulp(kind, *b)),
                "{p} {kind:?}"
            );
        }
    }
}

#[test]
fn tiny_odd_shapes_and_one_element_chunks() {
    for kind in KINDS {
        let es = kind.elem_size();
        for shape in [
            vec![0usize],
            vec![1],
            vec![3],
            vec![1, 7],
            vec![13, 17],
            vec![5, 0, 2],
        ] {
            let n: usize = shape.iter().product();
            let xs = to_bytes(kind, &gaussian(n, n as u64 + 1, 3.0));
            for p in Preset::ALL {
                let plan = TensorPlan::new(p, kind, &shape, &xs).unwrap();
                // Whole tensor, then one element per chunk, then an odd chunking.
                let (out, _) = roundtrip(&plan, kind, &xs);
                let mut parts = Vec::new();
                for c in xs.chunks(es) {
                    parts.extend(roundtrip(&plan, kind, c).0);
                }
                assert_eq!(
                    parts, out,
                    "{p} {kind:?} {shape:?}: chunking changes values"
                );
                let mut parts = Vec::new();
                for c in xs.chunks(5 * es) {
                    parts.extend(roundtrip(&plan, kind, c).0);
                }
                assert_eq!(parts, out);
            }
        }
    }
}

#[test]
fn outliers_and_huge_values_are_bounded() {
    let kind = FloatKind::F32;
    let mut v = gaussian(10_000, 11, 0.01);
    v[5] = 3.0e38;
    v[6] = -1.0e20;
    v[7] = 50.0;
    v[8] = 1e-40; // subnormal
    let xs = to_bytes(kind, &v);
    for p in [Preset::Q8, Preset::Q4, Preset::Q3] {
        let plan = TensorPlan::new(p, kind, &[100, 100], &xs).unwrap();
        let (out, st) = roundtrip(&plan, kind, &xs);
        let back = values(kind, &out);
        for (&a, &b) in values(kind, &xs).iter().zip(&back).skip(5).take(4) {
            assert!(
                (a - b).abs() <= plan.step() / 2.0 + half_ulp(kind, a),
                "{p} {a}"
            );
        }
        assert!(st.n_escapes >= 3);
    }
}

#[test]
fn bad_inputs_to_encoder_are_errors() {
    assert!(TensorPlan::new(Preset::Q4, FloatKind::Bf16, &[3, 3], &[0u8; 17]).is_err());
    assert!(TensorPlan::new(Preset::Q4, FloatKind::Bf16, &[usize::MAX, 3], &[]).is_err());
    let plan = TensorPlan::new(Preset::Q4, FloatKind::Bf16, &[2], &[0u8; 4]).unwrap();
    assert!(plan.encode_chunk(&[0u8; 3], &mut Vec::new()).is_err());
}

fn sample_stream(p: Preset, kind: FloatKind) -> (Vec<u8>, usize) {
    let mut v = gaussian(300, 5, 1.0);
    v[3] = f64::NAN;
    v[4] = 40.0;
    let xs = to_bytes(kind, &v);
    let plan = TensorPlan::new(p, kind, &[300], &xs).unwrap();
    let mut s = Vec::new();
    plan.encode_chunk(&xs, &mut s).unwrap();
    (s, xs.len())
}

#[test]
fn hostile_truncations_and_bit_flips_never_panic() {
    for kind in [FloatKind::Bf16, FloatKind::F32] {
        for p in Preset::ALL {
            let (s, len) = sample_stream(p, kind);
            let mut out = vec![0u8; len];
            assert!(decode(kind, &s, &mut out).is_ok());
            for cut in 0..s.len() {
                assert!(decode(kind, &s[..cut], &mut out).is_err(), "{p} cut {cut}");
            }
            let mut longer = s.clone();
            longer.push(0);
            assert!(decode(kind, &longer, &mut out).is_err());
            for i in 0..s.len() {
                for bit in 0..8 {
                    let mut t = s.clone();
                    t[i] ^= 1 << bit;
                    let _ = decode(kind, &t, &mut out);
                }
            }
            // Wrong dtype, wrong output length.
            let other = if kind == FloatKind::Bf16 {
                FloatKind::F16
            } else {
                FloatKind::Bf16
            };
            assert!(decode(other, &s, &mut vec![0u8; 300 * other.elem_size()]).is_err());
            assert!(decode(kind, &s, &mut vec![0u8; len + kind.elem_size()]).is_err());
            assert!(decode(kind, &s, &mut vec![0u8; len - 1]).is_err());
        }
    }
    assert!(decode(FloatKind::Bf16, &[], &mut []).is_err());
}

proptest! {
    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300), n in 0usize..200) {
        for kind in KINDS {
            let mut out = vec![0u8; n * kind.elem_size()];
            let _ = decode(kind, &data, &mut out);
            // Also behind a valid-looking header.
            let mut s = vec![VERSION, 3, kind.param(), (n % 2) as u8, 0, 0, 0, 0];
            put_varint(&mut s, n as u64);
            s.extend_from_slice(&0.01f64.to_le_bytes());
            s.extend_from_slice(&data);
            let _ = decode(kind, &s, &mut out);
        }
    }

    #[test]
    fn random_tensors_round_trip(v in proptest::collection::vec(-1e3f32..1e3f32, 0..400), p in 0usize..6) {
        let kind = FloatKind::F32;
        let xs = to_bytes(kind, &v.iter().map(|&x| f64::from(x)).collect::<Vec<_>>());
        let plan = TensorPlan::new(Preset::ALL[p], kind, &[v.len()], &xs).unwrap();
        let (out, st) = roundtrip(&plan, kind, &xs);
        prop_assert_eq!(out.len(), xs.len());
        if Preset::ALL[p] != Preset::PrimeSparse {
            prop_assert!(st.max_abs_err <= plan.step() / 2.0 + 1e-4 * plan.step().max(1e-3) + 1e-4);
        }
    }
}

/// Single-thread decode speed of one 256 KiB BF16 chunk per preset (Gaussian data):
/// `cargo test --release --lib bench_decode -- --ignored --nocapture`.
#[test]
#[ignore]
fn bench_decode() {
    let kind = FloatKind::Bf16;
    let xs = to_bytes(kind, &gaussian(131_072, 5, 0.02));
    let mut out = vec![0u8; xs.len()];
    for p in Preset::ALL {
        let plan = TensorPlan::new(p, kind, &[512, 256], &xs).unwrap();
        let mut s = Vec::new();
        plan.encode_chunk(&xs, &mut s).unwrap();
        let mut times = Vec::new();
        for _ in 0..7 {
            let t = std::time::Instant::now();
            for _ in 0..20 {
                decode(kind, &s, &mut out).unwrap();
            }
            times.push(t.elapsed().as_secs_f64() / 20.0);
        }
        times.sort_by(f64::total_cmp);
        eprintln!(
            "{p}: decode {:.2} GiB/s of BF16 (median of 7)",
            xs.len() as f64 / times[3] / (1u64 << 30) as f64
        );
    }
}

#[test]
fn round_away_matches_f64_round() {
    let mut xs = vec![
        0.0,
        -0.0,
        0.5,
        -0.5,
        1.5,
        2.5,
        -2.5,
        0.49999999999999994,
        -0.49999999999999994,
        4503599627370495.5,
        4503599627370496.0,
        -4503599627370497.0,
        1e300,
        f64::MIN_POSITIVE,
        f64::INFINITY,
        f64::NEG_INFINITY,
    ];
    xs.extend(gaussian(20000, 9, 300.0));
    for x in xs {
        let (a, b) = (super::round_away(x), x.round());
        assert_eq!(a.to_bits(), b.to_bits(), "{x}");
    }
    assert!(super::round_away(f64::NAN).is_nan());
}

/// The step search samples a strided subset. A stride that shares a factor with the row length
/// sees only some columns; with per-column scales (common in real weight matrices) the chosen
/// step then misses the rate target. Columns 0, 3, 6, ... are small here and the plain stride
/// (3 for 1024 x 576 > 2^18 elements) would see only those.
#[test]
fn step_search_sees_every_column() {
    assert_eq!(search_stride(1024 * 576, 576), 5);
    assert_eq!(search_stride(100, 576), 1);
    assert_eq!(search_stride(49152 * 576, 576), 109);
    let (rows, cols) = (1024, 576);
    let g = gaussian(rows * cols, 11, 1.0);
    let xs: Vec<f64> = g
        .iter()
        .enumerate()
        .map(|(i, &x)| if i % cols % 3 == 0 { x * 0.05 } else { x })
        .collect();
    let kind = FloatKind::F32;
    let data = to_bytes(kind, &xs);
    for p in [Preset::Q8, Preset::Q4] {
        let plan = TensorPlan::new(p, kind, &[rows, cols], &data).unwrap();
        let (_, st) = roundtrip(&plan, kind, &data);
        let bits = st.stored_bytes as f64 * 8.0 / st.n as f64;
        let target = p.target_bits().unwrap();
        assert!(
            (bits - target).abs() < 0.25,
            "{p:?}: {bits:.3} bits/weight stored for a {target} target"
        );
    }
}

/// `--bits` plans (`TensorPlan::with_step`): every weight within step/2 (+ output rounding) of
/// the original, through the real decoder; bad steps and prime-sparse refused.
#[test]
fn with_step_round_trips_within_half_a_step() {
    for kind in KINDS {
        let xs = gaussian(50_000, 7, 0.03);
        let bytes = to_bytes(kind, &xs);
        let orig = values(kind, &bytes);
        for step in [1e-4, 3.7e-3, 0.02, 0.5] {
            let plan = TensorPlan::with_step(Preset::Q4, kind, step).unwrap();
            assert_eq!(plan.step(), step);
            let (streams, st) = encode_tensor(&plan, &bytes, 1 << 16).unwrap();
            let mut got = Vec::new();
            for (s, c) in streams
                .iter()
                .zip(bytes.chunks((1 << 16) / kind.elem_size() * kind.elem_size()))
            {
                let mut out = vec![0u8; c.len()];
                decode(kind, s, &mut out).unwrap();
                got.extend(values(kind, &out));
            }
            let mut max = 0f64;
            for (x, y) in orig.iter().zip(&got) {
                let e = (x - y).abs();
                assert!(
                    e <= step / 2.0 + half_ulp(kind, *y) + 1e-15,
                    "{kind:?} {step}: {x} -> {y}"
                );
                max = max.max(e);
            }
            assert_eq!(
                max, st.max_abs_err,
                "{kind:?} {step}: stats are the decoder's"
            );
        }
    }
    for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        assert!(TensorPlan::with_step(Preset::Q4, FloatKind::Bf16, bad).is_err());
    }
    assert!(TensorPlan::with_step(Preset::PrimeSparse, FloatKind::Bf16, 0.1).is_err());
    assert_eq!(TensorPlan::nearest_preset(4.2), Preset::Q4);
    assert_eq!(TensorPlan::nearest_preset(9.0), Preset::Q8);
    assert_eq!(TensorPlan::nearest_preset(0.5), Preset::Q3);
}

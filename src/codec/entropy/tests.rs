//! Unit and property tests of the entropy coder (every path: scalar, AVX2, AVX-512 where the CPU has them).

use super::*;
use proptest::prelude::*;

fn rt(v: &[u8]) -> usize {
    let mut enc = vec![0xAA]; // streams must work at any offset
    encode_symbols(v, &mut enc);
    enc.extend_from_slice(&[1, 2, 3]); // and be self-delimiting
    let mut out = vec![0u8; v.len()];
    let used = decode_symbols(&enc[1..], &mut out).unwrap();
    assert_eq!(used, enc.len() - 4);
    assert_eq!(out, v);
    assert!(used <= v.len() + 1);
    used
}

#[test]
fn edge_cases() {
    rt(&[]);
    rt(&[7]);
    rt(&[0; 1000]);
    rt(&(0..=255).collect::<Vec<u8>>());
    rt(&(0..=255).cycle().take(100_000).collect::<Vec<u8>>());
    // Two symbols, very skewed: long runs without renormalisation.
    let mut v = vec![0u8; 200_000];
    v[77] = 1;
    v[150_000] = 1;
    assert!(rt(&v) < 200);
}

#[test]
fn eg_total_matches_eg_bits() {
    let vals: Vec<u32> = (0..=8192u32)
        .step_by(7)
        .chain([0, 1, 2, 4095, 4096, 8191])
        .collect();
    for k in 0..=15 {
        let want: u64 = vals.iter().map(|&v| eg_bits(v, k)).sum();
        assert_eq!(eg_total(&vals, k), want, "k={k}");
    }
}

/// The reciprocal step equals the division it replaces, at the extremes of every frequency.
#[test]
fn reciprocal_division_is_exact() {
    for f in 1..(1u32 << MAX_SCALE) {
        let rcp = (1u64 << RCP_SHIFT).div_ceil(u64::from(f));
        for x in [
            0,
            1,
            f - 1,
            f,
            f + 1,
            u32::MAX / 3,
            u32::MAX - f,
            u32::MAX - 1,
            u32::MAX,
        ] {
            let q = ((u128::from(x) * u128::from(rcp)) >> RCP_SHIFT) as u32;
            assert_eq!(q, x / f, "x={x} f={f}");
        }
        // Values just below and at multiples of f near the top of the range.
        let top = u32::MAX / f * f;
        for x in [top, top - 1, top - f, top - f + 1] {
            let q = ((u128::from(x) * u128::from(rcp)) >> RCP_SHIFT) as u32;
            assert_eq!(q, x / f, "x={x} f={f}");
        }
    }
}

/// The vector encoder's division (Granlund-Montgomery) is exact for every frequency.
#[test]
fn gm_division_is_exact() {
    for f in 1..(1u32 << MAX_SCALE) {
        let (m, sh1, sh2) = gm_divisor(f);
        let top = u32::MAX / f * f;
        for x in [
            0,
            1,
            f - 1,
            f,
            f + 1,
            12345678,
            top,
            top - 1,
            top - f,
            u32::MAX,
        ] {
            let t = ((u64::from(x) * u64::from(m)) >> 32) as u32;
            let q = (t + ((x - t) >> sh1)) >> sh2;
            assert_eq!(q, x / f, "x={x} f={f}");
        }
    }
}

/// The AVX2 and scalar encoders write identical streams.
/// Every decoder path (scalar, AVX2, AVX-512, as far as the CPU has them) gives the same
/// symbols, mapped values, consumed length and error on valid and damaged streams.
#[test]
fn decoder_paths_agree() {
    let mut seed = 99u64;
    let mut rnd = move || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) as u32
    };
    let map: [u32; 256] = std::array::from_fn(|j| (j as u32).wrapping_mul(0x9e37_79b9) >> 7);
    for case in 0..300 {
        let n = [0, 1, 31, 32, 33, 200, 1000, 5000, 40000][case % 9];
        let spread = [1, 2, 5, 8, 9][case % 5];
        let v: Vec<u8> = (0..n)
            .map(|_| {
                let r = rnd();
                (r.trailing_zeros() * spread + (r >> 28)) as u8
            })
            .collect();
        let mut enc = Vec::new();
        encode_symbols(&v, &mut enc);
        if case % 3 != 0 && !enc.is_empty() {
            // Damage: flip a few bits past the header, or truncate.
            for _ in 0..1 + case % 4 {
                let at = rnd() as usize % enc.len();
                enc[at] ^= 1 << (rnd() % 8);
            }
            if case % 7 == 0 {
                enc.truncate(rnd() as usize % enc.len());
            }
        }
        let run = |simd: Simd| {
            let mut o1 = vec![0u8; n];
            let r1 = decode_with::<1>(&enc, &mut o1, &[0; 256], simd);
            let mut o2 = vec![0u8; 2 * n];
            let r2 = decode_with::<2>(&enc, &mut o2, &map, simd);
            let ok = r1.is_ok();
            (r1.map(|r| r.0), r2, ok.then_some(o1), o2)
        };
        let scalar = run(Simd::Scalar);
        if case % 3 == 0 {
            assert_eq!(scalar.2.as_deref(), Some(&v[..]));
        }
        for simd in [Simd::Avx2, Simd::Avx512] {
            let got = run(simd);
            assert_eq!(got.0, scalar.0, "case {case} {simd:?}");
            assert_eq!(got.1, scalar.1, "case {case} {simd:?}");
            assert_eq!(got.2, scalar.2, "case {case} {simd:?}");
            if scalar.1.is_ok() {
                assert_eq!(got.3, scalar.3, "case {case} {simd:?}");
            }
        }
    }
}

/// `UPG_SIMD` forces the path of the whole process; unknown names and paths the CPU lacks
/// are errors, not a silent fallback.
#[test]
fn simd_env_forces_the_path() {
    match std::env::var(SIMD_ENV) {
        Ok(v) if !v.is_empty() => {
            assert_eq!(Simd::selected(), Simd::parse_forced(&v));
            eprintln!("coder path forced by {SIMD_ENV}: {v}");
        }
        _ => assert_eq!(Simd::selected(), Ok(Simd::detected())),
    }
    assert_eq!(Simd::parse_forced("scalar"), Ok(Simd::Scalar));
    assert_eq!(
        Simd::parse_forced("AVX2").is_ok(),
        Simd::detected() >= Simd::Avx2
    );
    assert!(matches!(
        Simd::parse_forced("sse9"),
        Err(SimdError::Unknown(_))
    ));
    if Simd::detected() < Simd::Avx512 {
        assert_eq!(
            Simd::parse_forced("avx512"),
            Err(SimdError::Unavailable {
                asked: Simd::Avx512,
                best: Simd::detected()
            })
        );
    }
}

/// The scalar and (where the CPU has it) the AVX2 encoder both write the stream of the
/// plain one-symbol-at-a-time loop.
#[test]
fn simd_encoder_matches_scalar() {
    let vector = Simd::detected() >= Simd::Avx2;
    if !vector {
        eprintln!("SKIP the AVX2 encoder: this CPU lacks AVX2 (scalar encoder checked)");
    }
    let mut s = 17u64;
    for case in 0..40 {
        let n = 32 * (1 + case * 37) + case % 32;
        let syms: Vec<u8> = (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let r = (s >> 33) as u32;
                (r.trailing_zeros() * (1 + case as u32 % 9) + (r >> 30)) as u8
            })
            .collect();
        let hist = histogram(&syms);
        let Some((t, _)) = choose_table(&hist) else {
            continue;
        };
        let mut a = Vec::new();
        rans_encode_with(&syms, &t.freq, t.scale, &mut a, false);
        let mut v = Vec::new();
        rans_encode_with(&syms, &t.freq, t.scale, &mut v, vector);
        // Scalar reference.
        let mut tab = [EncSym::default(); 256];
        let mut cum = 0;
        for (e, &f) in tab.iter_mut().zip(&t.freq) {
            if f > 0 {
                *e = EncSym {
                    xmax: f << (32 - t.scale),
                    bias: cum,
                    cmpl: (1 << t.scale) - f,
                    rcp: (1u64 << RCP_SHIFT).div_ceil(u64::from(f)),
                };
            }
            cum += f;
        }
        let mut buf = vec![0u8; 2 * (n + 1)];
        let mut wp = n;
        let mut x = [L; LANES];
        for i in (0..n).rev() {
            enc_step(&mut x[i % LANES], &tab[syms[i] as usize], &mut buf, &mut wp);
        }
        let mut b = Vec::new();
        b.extend_from_slice(&((n - wp) as u32).to_le_bytes());
        for v in x {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&buf[2 * (wp + 1)..]);
        assert_eq!(a, b, "case {case} (scalar)");
        assert_eq!(v, b, "case {case} (vector: {vector})");
    }
}

#[test]
fn lower_bound_never_exceeds_estimate() {
    let mut s = 9u64;
    for case in 0..300 {
        let mut h = [0u32; 256];
        let nsym = 2 + case % 255;
        for c in h.iter_mut().take(nsym) {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1);
            *c = ((s >> 40) as u32) >> (case % 24);
        }
        assert!(cost_lower_bound(&h) <= estimate_cost(&h), "case {case}");
    }
}

#[test]
fn estimate_matches_encoding() {
    let mut s = 5u64;
    let v: Vec<u8> = (0..100_000)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1);
            ((s >> 33) as u32).trailing_zeros() as u8
        })
        .collect();
    let mut enc = Vec::new();
    encode_symbols(&v, &mut enc);
    let est = estimate_cost(&histogram(&v));
    // The estimate is the entropy under the quantised model; rANS adds ~0.1-0.2%.
    assert!(
        enc.len().abs_diff(est) <= 8 + enc.len() / 200,
        "{} vs {est}",
        enc.len()
    );
}

#[test]
fn hostile_tables() {
    let mut out = [0u8; 100];
    // scale 0 / 13, bad order, sum overflow, truncated table, single-symbol table.
    for s in [
        &[2u8, 0, 1, 0][..],
        &[2, 13, 1, 0],
        &[2, 12, 1, 16],
        &[2, 4, 2, 0, 0xff, 0xff, 0xff, 0xff],
        &[2, 12, 255, 0],
        &[3],
        &[],
    ] {
        assert!(decode_symbols(s, &mut out).is_err(), "{s:?}");
    }
    // Single-symbol table in rANS mode: freq[0] = 0 (EG0 of 0 = bit 1), freq[1] = M implied.
    let mut s = vec![2u8, 4, 1, 0, 0b1];
    s.extend_from_slice(&0u32.to_le_bytes());
    for _ in 0..LANES {
        s.extend_from_slice(&L.to_le_bytes());
    }
    decode_symbols(&s, &mut out).unwrap();
    assert!(out.iter().all(|&b| b == 1));
}

proptest! {
    #[test]
    fn prop_roundtrip(v in proptest::collection::vec(any::<u8>(), 0..5000)) {
        rt(&v);
    }

    #[test]
    fn prop_skewed(v in proptest::collection::vec(0u8..4, 0..20000), spike in any::<u8>()) {
        let mut v = v;
        if !v.is_empty() { v[0] = spike; }
        rt(&v);
    }

    #[test]
    fn prop_garbage(v in proptest::collection::vec(any::<u8>(), 0..3000), n in 0usize..4000) {
        let mut out = vec![0u8; n];
        let _ = decode_symbols(&v, &mut out);
    }

    #[test]
    fn prop_bitflips(v in proptest::collection::vec(0u8..20, 1..5000), flips in proptest::collection::vec(any::<u32>(), 1..4)) {
        let mut enc = Vec::new();
        encode_symbols(&v, &mut enc);
        for f in flips {
            let i = f as usize % enc.len();
            enc[i] ^= 1 << (f >> 29);
        }
        let mut out = vec![0u8; v.len()];
        let _ = decode_symbols(&enc, &mut out);
        let _ = decode_symbols(&enc[..enc.len() / 2], &mut out);
    }
}

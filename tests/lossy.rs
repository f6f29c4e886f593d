//! Lossy presets through the whole pipeline: header and untouched tensors byte-identical, quantized
//! tensors within their error budget, statistics stored, overrides and bad input handled.

mod common;

use std::process::Command;

use common::*;
use safetensors::Dtype;
use upg::archive::Archive;
use upg::archive::reader::read_all;
use upg::archive::writer::{PackOptions, glob_match, pack};
use upg::codec::quant::Preset;
use upg::st::Layout;
use upg::synth::Rng;

fn bf16s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(2)
        .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
        .collect()
}

fn snr_db(orig: &[f32], got: &[f32]) -> f64 {
    let (mut s, mut e) = (0f64, 0f64);
    for (a, b) in orig.iter().zip(got) {
        s += f64::from(*a) * f64::from(*a);
        e += f64::from(a - b) * f64::from(a - b);
    }
    10.0 * (s / e.max(1e-300)).log10()
}

fn lossy_model(root: &std::path::Path) -> std::path::PathBuf {
    let mut rng = Rng::new(11);
    model_dir(
        root,
        &[
            tensor(&mut rng, "embed.weight", Dtype::BF16, vec![512, 256]),
            tensor(&mut rng, "layer.w", Dtype::BF16, vec![256, 384]),
            tensor(&mut rng, "norm.weight", Dtype::BF16, vec![256]),
            tensor(&mut rng, "ids", Dtype::I32, vec![300, 300]),
        ],
    )
}

#[test]
fn q_presets_serve_original_layout_within_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = lossy_model(tmp.path());
    let orig_file = std::fs::read(dir.join("model.safetensors")).unwrap();
    let layout = Layout::parse(&orig_file).unwrap();
    for (preset, min_snr) in [(Preset::Q8, 35.0), (Preset::Q4, 15.0), (Preset::Q3, 10.0)] {
        let out = tmp.path().join(format!("{preset}.upg"));
        let s = pack(
            &dir,
            &out,
            &PackOptions {
                preset: Some(preset),
                force: true,
                chunk_size: 16384,
                ..Default::default()
            },
        )
        .unwrap();
        // Quantized: the two 2-D float tensors; the norm (1-D) and the int tensor are not.
        let names: Vec<_> = s.lossy.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["embed.weight", "layer.w"], "{preset}");
        let a = Archive::open(&out).unwrap();
        assert!(!a.is_lossless());
        let fi = a.file_index("model.safetensors").unwrap();
        let got = read_all(&a, fi).unwrap();
        assert_eq!(got.len(), orig_file.len());
        assert_eq!(
            got[..layout.data_start as usize],
            orig_file[..layout.data_start as usize],
            "header"
        );
        for t in &layout.tensors {
            let r = (layout.data_start + t.start) as usize..(layout.data_start + t.end) as usize;
            if names.contains(&t.name.as_str()) {
                let snr = snr_db(&bf16s(&orig_file[r.clone()]), &bf16s(&got[r]));
                assert!(snr >= min_snr, "{preset} {}: SNR {snr:.1} dB", t.name);
                let stored = s.lossy.iter().find(|x| x.name == t.name).unwrap().snr_db;
                assert!(
                    (stored - snr).abs() < 1.0,
                    "{preset}: reported SNR {stored} vs measured {snr}"
                );
            } else {
                assert_eq!(
                    got[r.clone()],
                    orig_file[r],
                    "{preset}: {} must stay lossless",
                    t.name
                );
            }
        }
        // Other files are untouched, the served SHA-256 verifies, metadata holds the statistics.
        assert_eq!(
            read_all(&a, a.file_index("config.json").unwrap()).unwrap(),
            std::fs::read(dir.join("config.json")).unwrap()
        );
        assert!(upg::archive::verify::verify(&a, None).problems.is_empty());
        assert_eq!(a.meta().lossy.len(), 2);
        assert_eq!(a.meta().preset, Some(preset.to_string()));
    }
}

#[test]
fn overrides_keep_and_bad_presets() {
    assert!(glob_match("*embed*", "model.embed_tokens.weight"));
    assert!(glob_match("layer.?", "layer.w"));
    assert!(!glob_match("layer.?", "layer.ww"));
    let tmp = tempfile::tempdir().unwrap();
    let dir = lossy_model(tmp.path());
    let out = tmp.path().join("o.upg");
    let s = pack(
        &dir,
        &out,
        &PackOptions {
            preset: Some(Preset::Q4),
            overrides: vec![
                ("embed*".into(), None),
                ("norm*".into(), Some(Preset::Q8)),
                ("ids".into(), Some(Preset::Q8)),
                ("*lm_head*".into(), None),
            ],
            force: true,
            ..Default::default()
        },
    )
    .unwrap();
    let got: Vec<_> = s
        .lossy
        .iter()
        .map(|r| (r.name.as_str(), r.preset.as_str()))
        .collect();
    assert_eq!(got, [("layer.w", "q4"), ("norm.weight", "q8")]);
    assert!(
        s.notices
            .iter()
            .any(|n| n.contains("ids") && n.contains("not a float tensor")),
        "{:?}",
        s.notices
    );
    let unmatched: Vec<_> = s
        .notices
        .iter()
        .filter(|n| n.contains("matched no tensor"))
        .collect();
    assert_eq!(unmatched.len(), 1, "{:?}", s.notices);
    assert!(unmatched[0].contains("*lm_head*"), "{unmatched:?}");

    let upg = env!("CARGO_BIN_EXE_upg");
    for args in [
        vec!["--preset", "q7"],
        vec!["--preset", "q4", "--override", "noequals"],
        vec!["--override", "x=q4"],
        vec!["--bits", "0"],
        vec!["--bits", "nan"],
        vec!["--bits", "4", "--preset", "q4"],
        vec!["--bits", "4", "--override", "layer.w=q8"],
    ] {
        let o = Command::new(upg)
            .args([
                "pack",
                dir.to_str().unwrap(),
                "-o",
                tmp.path().join("bad.upg").to_str().unwrap(),
            ])
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(!String::from_utf8_lossy(&o.stderr).contains("panicked"));
        assert!(!tmp.path().join("bad.upg").exists());
    }
}

/// RMSNorm weights as trained models have them: around 1.
fn norm(rng: &mut Rng, name: &str, n: usize) -> common::Tensor {
    let bytes = (0..n)
        .flat_map(|_| {
            let v = 0.8 + (rng.next_u64() % 1000) as f32 / 2500.0;
            half::bf16::from_f32(v).to_le_bytes()
        })
        .collect();
    (name.to_string(), Dtype::BF16, vec![n], bytes)
}

/// A small Llama-shaped model (names as in Hugging Face's Llama, so `--bits` finds the norms).
fn llama_like(root: &std::path::Path) -> std::path::PathBuf {
    let mut rng = Rng::new(12);
    let mut ts = vec![
        tensor(
            &mut rng,
            "model.embed_tokens.weight",
            Dtype::BF16,
            vec![1024, 256],
        ),
        tensor(&mut rng, "lm_head.weight", Dtype::BF16, vec![1024, 256]),
        norm(&mut rng, "model.norm.weight", 256),
    ];
    for l in 0..2 {
        let p = format!("model.layers.{l}");
        for (n, shape) in [
            ("self_attn.q_proj.weight", vec![256, 256]),
            ("self_attn.k_proj.weight", vec![256, 256]),
            ("self_attn.v_proj.weight", vec![256, 256]),
            ("self_attn.o_proj.weight", vec![256, 256]),
            ("mlp.gate_proj.weight", vec![768, 256]),
            ("mlp.up_proj.weight", vec![768, 256]),
            ("mlp.down_proj.weight", vec![256, 768]),
        ] {
            ts.push(tensor(&mut rng, &format!("{p}.{n}"), Dtype::BF16, shape));
        }
        ts.push(norm(&mut rng, &format!("{p}.input_layernorm.weight"), 256));
        ts.push(norm(
            &mut rng,
            &format!("{p}.post_attention_layernorm.weight"),
            256,
        ));
    }
    model_dir(root, &ts)
}

#[test]
fn bits_budget_is_met() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = llama_like(tmp.path());
    let orig_file = std::fs::read(dir.join("model.safetensors")).unwrap();
    let layout = Layout::parse(&orig_file).unwrap();
    let mut last_snr = 0.0;
    for bits in [2.5, 3.0, 4.25, 6.0, 9.0] {
        let out = tmp.path().join(format!("b{bits}.upg"));
        let s = pack(
            &dir,
            &out,
            &PackOptions {
                preset: Some(Preset::Q4),
                bits: Some(bits),
                force: true,
                ..Default::default()
            },
        )
        .unwrap();
        let b = s.bits_budget.clone().expect("budget reported");
        let file_bits = std::fs::metadata(&out).unwrap().len() as f64 * 8.0 / b.weights as f64;
        assert_eq!(b.weights, s.params);
        assert!(
            (b.achieved - file_bits).abs() < 1e-9,
            "{b:?} vs {file_bits}"
        );
        assert!((b.achieved - bits).abs() <= 0.05, "--bits {bits}: {b:?}");
        // every 2-D tensor quantized, error statistics stored, quality rising with the budget
        assert_eq!(s.lossy.len(), 16);
        let t = s.lossy_total.clone().unwrap();
        assert!(
            t.snr_db > last_snr,
            "--bits {bits}: SNR {} after {last_snr}",
            t.snr_db
        );
        last_snr = t.snr_db;
        let a = Archive::open(&out).unwrap();
        assert_eq!(
            a.meta().preset.as_deref(),
            Some(format!("bits {bits}").as_str())
        );
        let got = read_all(&a, a.file_index("model.safetensors").unwrap()).unwrap();
        assert_eq!(got.len(), orig_file.len());
        // header and norms byte-identical; quantized tensors close (their SNR)
        assert_eq!(
            got[..layout.data_start as usize],
            orig_file[..layout.data_start as usize]
        );
        for ti in &layout.tensors {
            let r = (layout.data_start + ti.start) as usize..(layout.data_start + ti.end) as usize;
            if ti.shape.len() == 1 {
                assert_eq!(got[r.clone()], orig_file[r], "{}", ti.name);
            } else {
                let snr = snr_db(&bf16s(&orig_file[r.clone()]), &bf16s(&got[r]));
                assert!(
                    snr > 6.0 * bits - 14.0,
                    "--bits {bits}: {} at {snr:.1} dB",
                    ti.name
                );
            }
        }
    }
}

#[test]
fn non_finite_and_zero_tensors() {
    let tmp = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(12);
    let (_, _, _, mut special) = tensor(&mut rng, "special", Dtype::BF16, vec![256, 256]);
    for (i, v) in [
        (5, f32::NAN),
        (77, f32::INFINITY),
        (1000, f32::NEG_INFINITY),
    ] {
        special[2 * i..2 * i + 2].copy_from_slice(&half::bf16::from_f32(v).to_le_bytes());
    }
    let zeros = (
        "zeros".to_string(),
        Dtype::BF16,
        vec![256, 256],
        vec![0u8; 256 * 256 * 2],
    );
    let dir = model_dir(
        tmp.path(),
        &[
            (
                "special".into(),
                Dtype::BF16,
                vec![256, 256],
                special.clone(),
            ),
            zeros,
        ],
    );
    let out = tmp.path().join("n.upg");
    pack(
        &dir,
        &out,
        &PackOptions {
            preset: Some(Preset::Q4),
            force: true,
            ..Default::default()
        },
    )
    .unwrap();
    let a = Archive::open(&out).unwrap();
    let got = read_all(&a, a.file_index("model.safetensors").unwrap()).unwrap();
    let layout = Layout::parse(&got).unwrap();
    let t = |name: &str| {
        let t = layout.tensors.iter().find(|t| t.name == name).unwrap();
        bf16s(&got[(layout.data_start + t.start) as usize..(layout.data_start + t.end) as usize])
    };
    let s = t("special");
    assert!(s[5].is_nan() && s[77] == f32::INFINITY && s[1000] == f32::NEG_INFINITY);
    assert!(
        s.iter()
            .enumerate()
            .all(|(i, v)| [5, 77, 1000].contains(&i) || v.is_finite())
    );
    assert!(t("zeros").iter().all(|&v| v == 0.0));
}

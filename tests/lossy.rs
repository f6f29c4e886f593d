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
        assert_eq!(a.meta()["lossy"].as_array().unwrap().len(), 2);
        assert_eq!(a.meta()["preset"], preset.to_string());
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

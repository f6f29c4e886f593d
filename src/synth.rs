//! Synthetic but realistically shaped models, for the demo, tests and benches: a small Llama-like
//! directory (BF16 weight matrices drawn from a Gaussian with per-tensor scale, F32 norms,
//! config/tokenizer JSON). Deterministic for a given seed. Real-model tests use the real weights
//! (all-MiniLM-L6-v2, SmolLM2) instead; this exists so the demo and the unit tests run offline.

use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};

/// splitmix64: tiny, seedable, good enough to draw test weights (not for cryptography).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in (0, 1].
    pub fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }
    /// Standard normal (Box–Muller).
    pub fn gauss(&mut self) -> f64 {
        (-2.0 * self.unit().ln()).sqrt() * (std::f64::consts::TAU * self.unit()).cos()
    }
}

/// Gaussian values with standard deviation `std`, as little-endian bytes of `dtype`.
pub fn gaussian_bytes(rng: &mut Rng, dtype: Dtype, n: usize, std: f64) -> Vec<u8> {
    let mut out = Vec::with_capacity(n * dtype.bitsize() / 8);
    for _ in 0..n {
        let v = rng.gauss() * std;
        match dtype {
            Dtype::BF16 => out.extend_from_slice(&half::bf16::from_f64(v).to_le_bytes()),
            Dtype::F16 => out.extend_from_slice(&half::f16::from_f64(v).to_le_bytes()),
            Dtype::F32 => out.extend_from_slice(&(v as f32).to_le_bytes()),
            Dtype::F64 => out.extend_from_slice(&v.to_le_bytes()),
            _ => out.push((v * 64.0) as i8 as u8),
        }
    }
    out
}

/// Write a safetensors file from `(name, dtype, shape, bytes)` (bytes must match dtype × shape).
pub fn write_safetensors(
    path: &Path,
    tensors: &[(String, Dtype, Vec<usize>, Vec<u8>)],
) -> std::io::Result<()> {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, d, s, b)| TensorView::new(*d, s.clone(), b).map(|v| (n.clone(), v)))
        .collect::<Result<_, _>>()
        .map_err(std::io::Error::other)?;
    let meta = Some(std::collections::HashMap::from([(
        "format".to_string(),
        "pt".to_string(),
    )]));
    safetensors::tensor::serialize_to_file(views, meta, path).map_err(std::io::Error::other)
}

/// Sizes of the synthetic model.
#[derive(Debug, Clone, Copy)]
pub struct ModelShape {
    pub vocab: usize,
    pub hidden: usize,
    pub ffn: usize,
    pub layers: usize,
}

/// About 12 MiB of BF16: big enough for many chunks, small enough for a demo in seconds.
pub const DEMO: ModelShape = ModelShape {
    vocab: 8192,
    hidden: 256,
    ffn: 688,
    layers: 4,
};

/// Write a Llama-shaped model directory: `model.safetensors`, `config.json`, `tokenizer.json`,
/// `generation_config.json`.
pub fn write_model(dir: &Path, shape: ModelShape, seed: u64) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut rng = Rng::new(seed);
    let ModelShape {
        vocab,
        hidden: h,
        ffn,
        layers,
    } = shape;
    let mut t: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    let mat = |rng: &mut Rng, name: String, rows: usize, cols: usize| {
        // Per-tensor scale like a trained model's (init std / sqrt(fan_in) drift).
        let std = (0.5 + rng.unit()) / (cols as f64).sqrt();
        let b = gaussian_bytes(rng, Dtype::BF16, rows * cols, std);
        (name, Dtype::BF16, vec![rows, cols], b)
    };
    t.push(mat(&mut rng, "model.embed_tokens.weight".into(), vocab, h));
    for l in 0..layers {
        let p = format!("model.layers.{l}");
        for (n, r, c) in [
            ("self_attn.q_proj", h, h),
            ("self_attn.k_proj", h, h),
            ("self_attn.v_proj", h, h),
            ("self_attn.o_proj", h, h),
            ("mlp.gate_proj", ffn, h),
            ("mlp.up_proj", ffn, h),
            ("mlp.down_proj", h, ffn),
        ] {
            t.push(mat(&mut rng, format!("{p}.{n}.weight"), r, c));
        }
        for n in ["input_layernorm", "post_attention_layernorm"] {
            let b: Vec<u8> = (0..h)
                .flat_map(|_| (1.0 + 0.1 * rng.gauss() as f32).to_le_bytes())
                .collect();
            t.push((format!("{p}.{n}.weight"), Dtype::F32, vec![h], b));
        }
    }
    let b: Vec<u8> = (0..h).flat_map(|_| (1.0f32).to_le_bytes()).collect();
    t.push(("model.norm.weight".into(), Dtype::F32, vec![h], b));
    write_safetensors(&dir.join("model.safetensors"), &t)?;
    let config = serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": h,
        "intermediate_size": ffn, "num_hidden_layers": layers, "num_attention_heads": 4,
        "num_key_value_heads": 4, "vocab_size": vocab, "torch_dtype": "bfloat16",
        "tie_word_embeddings": true, "note": "synthetic weights generated by upg demo"
    });
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&config)?,
    )?;
    let vocab_map: serde_json::Map<String, serde_json::Value> = (0..vocab)
        .map(|i| (format!("tok{i}"), serde_json::Value::from(i)))
        .collect();
    let tok = serde_json::json!({"version": "1.0", "model": {"type": "WordLevel", "vocab": vocab_map, "unk_token": "tok0"}});
    std::fs::write(dir.join("tokenizer.json"), serde_json::to_string(&tok)?)?;
    std::fs::write(
        dir.join("generation_config.json"),
        "{\n  \"max_new_tokens\": 32\n}\n",
    )?;
    Ok(())
}

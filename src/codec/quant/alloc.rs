//! Whole-model bit allocation for `upg pack --bits B` (issue 12), calibration-free.
//!
//! Every quantized tensor `t` gets the step `c * g_t`, one constant `c` for the whole model,
//! found by bisection so that the model's predicted stored bits meet the budget. The gain
//! `g_t = sqrt(rms_t) / rms(norm_t)`:
//! - `rms_t` is the RMS of the tensor's weights. `g_t = 1` (one step for every tensor) would
//!   minimize the total weight MSE at the rate; `g_t = rms_t` keeps every tensor at about the
//!   same SNR (what the fixed presets do, equal bits per tensor). The square root sits between.
//! - `norm_t` is the RMSNorm weight in front of the tensor, where the model has one (Llama
//!   names: q/k/v after `input_layernorm`, gate/up after `post_attention_layernorm`, `lm_head`
//!   after `model.norm`); the norm scales the inputs the tensor multiplies, so an error in the
//!   tensor reaches the output scaled by it. Without a known norm the factor is 1.
//!
//! Measured with the numpy model of this quantizer (`scripts/quality/sim_ecsq.py`) on
//! ref-llama-38m, full wikitext-2 on the GPU (docs/QUANT.md): at 4.0 bits per quantized weight,
//! mean KL 0.0197 (equal bits) -> 0.0193 (one step) -> 0.0165 (this rule); at 3.0 bits 0.0827 ->
//! 0.0772 -> 0.0693.

use super::{FloatKind, MAX_ESC_Q, finite_samples, order0_entropy, round_away, zigzag};

/// Samples per tensor for the budget search: 2^16 keeps the memory of a whole model's samples
/// small (256 KiB per tensor as f32; 57 MiB for 224 tensors of a 7B model) while the entropy
/// estimate stays within ~0.005 bit of the full tensor's.
const BUDGET_SAMPLES: usize = 1 << 16;

/// What the budget search needs to know about one tensor.
#[derive(Debug, Clone)]
pub struct TensorRate {
    /// Elements of the tensor.
    pub n: u64,
    /// RMS of its finite weights.
    pub rms: f64,
    /// Evenly spread finite samples (columns all visited, see `search_stride`).
    xs: Vec<f64>,
    /// Bytes of one element (a raw escape stores them).
    elem_bytes: u64,
}

impl TensorRate {
    /// Samples `tensor` (elements of `shape` in `kind`, little-endian).
    pub fn new(kind: FloatKind, shape: &[usize], tensor: &[u8]) -> Self {
        let es = kind.elem_size();
        let n = tensor.len() / es;
        let cols = shape.last().copied().unwrap_or(1);
        // coprime with the row length, as in the presets' step search (`search_stride`)
        let stride = coprime_stride(n.div_ceil(BUDGET_SAMPLES).max(1), cols);
        let xs = finite_samples(kind, tensor, stride);
        let rms = if xs.is_empty() {
            0.0
        } else {
            (xs.iter().map(|x| x * x).sum::<f64>() / xs.len() as f64).sqrt()
        };
        TensorRate {
            n: n as u64,
            rms,
            xs,
            elem_bytes: es as u64,
        }
    }

    /// Estimated bits per weight at `step`: order-0 entropy of the byte symbols plus the escape
    /// stream's bytes as the encoder writes them (a varint of `zigzag(q) - 254`, or a marker and
    /// the raw value for |q| >= 2^40). The presets' search (`linear_cost`) counts 16 bits per
    /// escape, which is close at their rates (<= 7.15 bits, few escapes) but made `--bits 8`
    /// land 0.19 below its budget and `--bits 10` 0.98 below.
    pub fn bits(&self, step: f64) -> f64 {
        if self.xs.is_empty() {
            return 0.0;
        }
        let mut hist = [0u64; 256];
        let mut esc_bits = 0u64;
        let inv = 1.0 / step;
        for &x in &self.xs {
            let q = round_away(x * inv);
            if q.abs() <= 127.0 {
                hist[zigzag(q as i64) as usize] += 1;
            } else {
                hist[255] += 1;
                esc_bits += if q.abs() < MAX_ESC_Q as f64 {
                    let v = zigzag(q as i64) - 254;
                    8 * u64::from((64 - v.leading_zeros()).div_ceil(7).max(1))
                } else {
                    8 + 8 * self.elem_bytes
                };
            }
        }
        let n = self.xs.len() as f64;
        order0_entropy(&hist, n) + esc_bits as f64 / n
    }
}

fn coprime_stride(mut stride: usize, cols: usize) -> usize {
    fn gcd(mut a: usize, mut b: usize) -> usize {
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    }
    if stride > 1 && cols > 1 {
        while gcd(stride, cols) != 1 {
            stride += 1;
        }
    }
    stride
}

/// The RMSNorm weight that scales the inputs of tensor `name`, for Llama-style names
/// (`model.layers.N.self_attn.q_proj.weight` -> `model.layers.N.input_layernorm.weight`, ...).
pub fn input_norm_name(name: &str) -> Option<String> {
    if name == "lm_head.weight" {
        return Some("model.norm.weight".into());
    }
    let (layer, rest) = name
        .split_once(".self_attn.")
        .or_else(|| name.split_once(".mlp."))?;
    let norm = match rest {
        "q_proj.weight" | "k_proj.weight" | "v_proj.weight" => "input_layernorm.weight",
        "gate_proj.weight" | "up_proj.weight" => "post_attention_layernorm.weight",
        _ => return None,
    };
    Some(format!("{layer}.{norm}"))
}

/// Bounds on the norm factor. Trained Llama norms sit near 1 (ref-llama-38m: RMS 0.70-1.55);
/// a norm stored zero-centred (Gemma applies `1 + w`) would have an RMS near 0 and, unbounded,
/// starve its tensors of bits.
const NORM_CLAMP: (f64, f64) = (0.25, 4.0);

/// The step gain `g_t` of the module doc: `sqrt(rms_t) / norm_rms` (norm_rms = 1 when the
/// tensor has no known input norm, or the norm is degenerate; clamped to `NORM_CLAMP`).
pub fn gain(rms: f64, norm_rms: Option<f64>) -> f64 {
    let nr = norm_rms
        .filter(|v| v.is_finite() && *v > 0.0)
        .map_or(1.0, |v| v.clamp(NORM_CLAMP.0, NORM_CLAMP.1));
    let g = rms.max(f64::MIN_POSITIVE).sqrt() / nr;
    if g.is_finite() && g > 0.0 { g } else { 1.0 }
}

/// Bisection steps on log2(c): the bracket below is 200 octaves wide; 48 halvings leave
/// < 1e-12 octave.
const BUDGET_ITERATIONS: usize = 48;

/// The constant `c` such that `sum_t n_t * (bits_t(c * g_t) + overhead_t) = budget_bits`,
/// where `tensors` are (rate, gain, overhead bits per weight). Returns None when even the
/// coarsest step does not fit (the budget is below what the escapes and overheads cost).
pub fn solve(tensors: &[(&TensorRate, f64, f64)], budget_bits: f64) -> Option<f64> {
    let total = |log_c: f64| -> f64 {
        let c = log_c.exp2();
        tensors
            .iter()
            .map(|(t, g, o)| t.n as f64 * (t.bits(c * g) + o))
            .sum()
    };
    let (mut lo, mut hi) = (-150.0f64, 50.0f64);
    if total(hi) > budget_bits {
        return None;
    }
    for _ in 0..BUDGET_ITERATIONS {
        let mid = 0.5 * (lo + hi);
        if total(mid) > budget_bits {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Some(hi.exp2())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bf16_gauss(n: usize, sigma: f64, seed: u64) -> Vec<u8> {
        let mut s = seed;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f64 / (1u64 << 53) as f64
        };
        (0..n)
            .flat_map(|_| {
                // Box-Muller
                let (u, v) = (next().max(1e-300), next());
                let x = sigma * (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos();
                half::bf16::from_f64(x).to_le_bytes()
            })
            .collect()
    }

    #[test]
    fn norm_names_and_gains() {
        assert_eq!(
            input_norm_name("model.layers.3.self_attn.k_proj.weight").as_deref(),
            Some("model.layers.3.input_layernorm.weight")
        );
        assert_eq!(
            input_norm_name("model.layers.0.mlp.up_proj.weight").as_deref(),
            Some("model.layers.0.post_attention_layernorm.weight")
        );
        assert_eq!(
            input_norm_name("lm_head.weight").as_deref(),
            Some("model.norm.weight")
        );
        assert_eq!(input_norm_name("model.layers.0.mlp.down_proj.weight"), None);
        assert_eq!(
            input_norm_name("model.layers.0.self_attn.o_proj.weight"),
            None
        );
        assert_eq!(input_norm_name("model.embed_tokens.weight"), None);
        assert!((gain(0.04, None) - 0.2).abs() < 1e-12);
        assert!((gain(0.04, Some(2.0)) - 0.1).abs() < 1e-12);
        // degenerate norms: ignored or clamped
        assert_eq!(gain(0.04, Some(0.0)), gain(0.04, None));
        assert_eq!(gain(0.04, Some(f64::NAN)), gain(0.04, None));
        assert!((gain(0.04, Some(1e-6)) - 0.2 / NORM_CLAMP.0).abs() < 1e-12);
        assert!(gain(0.0, None) > 0.0 && gain(0.0, None).is_finite());
    }

    #[test]
    fn solve_meets_the_budget_and_spreads_by_gain() {
        let a = TensorRate::new(
            FloatKind::Bf16,
            &[256, 512],
            &bf16_gauss(256 * 512, 0.02, 1),
        );
        let b = TensorRate::new(
            FloatKind::Bf16,
            &[512, 384],
            &bf16_gauss(512 * 384, 0.05, 2),
        );
        assert!((a.rms - 0.02).abs() < 0.001 && (b.rms - 0.05).abs() < 0.002);
        let n = (a.n + b.n) as f64;
        for target in [2.0, 3.0, 4.25, 7.0] {
            let ts = [(&a, 1.0, 0.01), (&b, 1.0, 0.01)];
            let c = solve(&ts, target * n).unwrap();
            let got = (a.n as f64 * (a.bits(c) + 0.01) + b.n as f64 * (b.bits(c) + 0.01)) / n;
            assert!((got - target).abs() < 0.01, "{target}: {got}");
            // one step for both: the wider tensor costs log2(0.05 / 0.02) = 1.32 bits more at
            // high rate (1.17 measured at 2 bits, where the high-rate law bends)
            let d = b.bits(c) - a.bits(c);
            let tol = if target < 3.0 { 0.3 } else { 0.15 };
            assert!((d - 1.32).abs() < tol, "{target}: {d}");
            // a gain of 2 on a (step twice as large) takes about a bit from it
            let ts2 = [(&a, 2.0, 0.01), (&b, 1.0, 0.01)];
            let c2 = solve(&ts2, target * n).unwrap();
            assert!(a.bits(2.0 * c2) < a.bits(c) - 0.4, "{target}");
        }
        // the overheads alone exceed the budget: no step fits
        assert_eq!(solve(&[(&a, 1.0, 3.0)], 2.0 * a.n as f64), None);
        // an empty (all non-finite) tensor costs nothing and does not break the search
        let nan = half::bf16::NAN.to_le_bytes().repeat(1000);
        let e = TensorRate::new(FloatKind::Bf16, &[10, 100], &nan);
        assert_eq!((e.rms, e.bits(1.0)), (0.0, 0.0));
        assert!(solve(&[(&e, 1.0, 0.0), (&a, 1.0, 0.0)], 3.0 * a.n as f64).is_some());
    }
}

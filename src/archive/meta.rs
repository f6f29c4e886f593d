//! The archive's metadata block (the index's JSON string, docs/FORMAT.md): typed, written by the
//! writer and parsed once when an archive is opened.
//!
//! Written as `serde_json::to_value(meta).to_string()`: `serde_json::Map` is a `BTreeMap`
//! (upg does not enable serde_json's `preserve_order`), so every object's keys, the rows'
//! included, come out sorted, as the block has always been written (the first writers built it
//! with `json!`); new archives are byte-identical to those of that writer.
//!
//! Read leniently: a key that is missing, unknown or of an unexpected type is skipped on its
//! own (and a block that is not a JSON object reads as empty), so archives of older and newer
//! versions open; metadata never decides how bytes are served.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::writer::TensorQuality;

/// What the writer recorded about how the archive was made.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct ArchiveMeta {
    /// `upg VERSION` that wrote the archive.
    pub tool: Option<String>,
    /// `--chunk-size` of the pack.
    pub chunk_size: Option<u32>,
    /// `lossless`, a preset's name, or `bits B` for `--bits B`.
    pub preset: Option<String>,
    /// `--override`/`--keep` as `PATTERN=PRESET` (`PATTERN=lossless`).
    pub overrides: Vec<String>,
    /// Lossy archives: each quantized tensor's error figures.
    pub lossy: Vec<TensorQuality>,
    /// Lossy archives: the figures over all quantized tensors.
    pub lossy_total: Option<TensorQuality>,
    /// Lossy archives: stored path -> SHA-256 (hex) of the original file it was made from.
    pub original_sha256: BTreeMap<String, String>,
}

fn field<T: DeserializeOwned>(m: &Map<String, Value>, key: &str) -> Option<T> {
    m.get(key).and_then(|v| T::deserialize(v).ok())
}

/// The elements of the array at `key` that read as `T` (others skipped).
fn items<T: DeserializeOwned>(m: &Map<String, Value>, key: &str) -> Vec<T> {
    m.get(key)
        .and_then(Value::as_array)
        .map(|v| v.iter().filter_map(|x| T::deserialize(x).ok()).collect())
        .unwrap_or_default()
}

impl ArchiveMeta {
    /// Parse a stored block (see the module header: lenient, never fails).
    pub fn parse(json: &str) -> ArchiveMeta {
        let Ok(Value::Object(m)) = serde_json::from_str::<Value>(json) else {
            return ArchiveMeta::default();
        };
        ArchiveMeta {
            tool: field(&m, "tool"),
            chunk_size: field(&m, "chunk_size"),
            preset: field(&m, "preset"),
            overrides: items(&m, "overrides"),
            lossy: items(&m, "lossy"),
            lossy_total: field(&m, "lossy_total"),
            original_sha256: m
                .get("original_sha256")
                .and_then(Value::as_object)
                .map(|o| {
                    o.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// The block as the writer stores it: keys sorted at every level (see the module header).
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        Ok(serde_json::to_value(self)?.to_string())
    }

    /// The row of tensor `name` of stored file `file`, if it was quantized.
    pub fn tensor(&self, file: &str, name: &str) -> Option<&TensorQuality> {
        self.lossy.iter().find(|t| t.file == file && t.name == name)
    }
}

/// A stored float that may be `null` (serde_json writes non-finite floats so: an SNR of a
/// tensor quantized without error is infinite) or missing: NaN, "not known".
pub(crate) fn f64_or_nan<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str) -> TensorQuality {
        crate::archive::writer::quality_row(
            "model.safetensors",
            name,
            "q4",
            10,
            20,
            &crate::codec::quant::QuantStats::default(),
        )
    }

    #[test]
    fn writes_sorted_keys_like_json_macro() {
        let m = ArchiveMeta {
            tool: Some("upg 0.1.0".into()),
            chunk_size: Some(262144),
            preset: Some("q4".into()),
            overrides: vec!["*embed*=q8".into()],
            lossy: vec![row("a")],
            lossy_total: None,
            original_sha256: [("model.safetensors".to_string(), "ab".to_string())].into(),
        };
        let by_macro = serde_json::json!({
            "tool": "upg 0.1.0",
            "chunk_size": 262144u32,
            "preset": "q4",
            "overrides": ["*embed*=q8"],
            "lossy": [row("a")],
            "lossy_total": Option::<TensorQuality>::None,
            "original_sha256": {"model.safetensors": "ab"},
        })
        .to_string();
        assert_eq!(m.to_json().unwrap(), by_macro);
        // and it reads back (the row's infinite SNR was stored as null: NaN)
        let back = ArchiveMeta::parse(&by_macro);
        assert_eq!(back.preset.as_deref(), Some("q4"));
        assert_eq!(back.lossy.len(), 1);
        assert!(back.lossy[0].snr_db.is_nan());
        assert_eq!(back.tensor("model.safetensors", "a").unwrap().params, 10);
    }

    #[test]
    fn lenient_per_key() {
        assert_eq!(ArchiveMeta::parse("not json"), ArchiveMeta::default());
        assert_eq!(ArchiveMeta::parse("[1]"), ArchiveMeta::default());
        let m = ArchiveMeta::parse(
            r#"{"preset":"q8","chunk_size":"big","lossy":[{"name":"t"},7],"overrides":[1,"a=q4"],"newer":{"x":1},"original_sha256":{"f":"00","g":3}}"#,
        );
        assert_eq!(m.preset.as_deref(), Some("q8"));
        assert_eq!(m.chunk_size, None);
        assert_eq!(m.lossy.len(), 1);
        assert_eq!(m.lossy[0].name, "t");
        assert!(m.lossy[0].max_abs_err.is_nan());
        assert_eq!(m.overrides, vec!["a=q4".to_string()]);
        assert_eq!(m.original_sha256.len(), 1);
        assert_eq!(m.tool, None);
    }
}

//! Safetensors glue: parse a file's header with the `safetensors` crate (which validates it:
//! header length, JSON, dtypes, shapes, contiguous non-overlapping offsets covering the data area
//! exactly) and map each tensor to its byte range in the file.

use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors};

use crate::codec::FloatKind;

#[derive(Debug, thiserror::Error)]
pub enum StError {
    /// The file could not be opened or mapped.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The header is invalid; the message says how (from the safetensors crate, made explicit).
    #[error("{0}")]
    Invalid(String),
}

#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    /// Byte range relative to the start of the data area.
    pub start: u64,
    pub end: u64,
    pub numel: u64,
}

#[derive(Debug, Clone)]
pub struct Layout {
    /// 8 + header length: where tensor data begins.
    pub data_start: u64,
    /// Tensors ordered by offset (contiguous, as the format requires).
    pub tensors: Vec<TensorInfo>,
}

impl Layout {
    /// Parse a safetensors file without reading its tensor data (the file is mapped; only the
    /// header pages are touched).
    pub fn read(path: &Path) -> Result<Layout, StError> {
        // Not File::open: a FIFO named x.safetensors would block it forever.
        let (f, _) = crate::storage::open_regular(path)?;
        // SAFETY: the map is read-only and used only for the duration of this call; a concurrent
        // truncation could fault, which is the documented limitation of packing a file that is
        // being modified.
        let map = unsafe { memmap2::Mmap::map(&f)? };
        Self::parse(&map)
    }

    /// Parse from the whole file's bytes (the crate checks the data length against the header).
    pub fn parse(buf: &[u8]) -> Result<Layout, StError> {
        use safetensors::SafeTensorError as E;
        let (n, meta) = SafeTensors::read_metadata(buf).map_err(|e| {
            StError::Invalid(match e {
                E::HeaderTooSmall => "file shorter than the 8-byte header length".into(),
                E::InvalidHeaderLength => {
                    format!("header length {} runs past the end of the file ({} bytes)", header_len(buf), buf.len())
                }
                E::MetadataIncompleteBuffer => {
                    "tensor data is truncated or has trailing bytes (offsets do not match the file size)".into()
                }
                E::InvalidOffset(t) => format!("tensor {t:?}: offsets overlap, leave a gap or are out of order"),
                E::InvalidHeaderDeserialization(e) => header_json_error(&e),
                e => e.to_string(),
            })
        })?;
        let data_start = 8 + n as u64;
        let mut tensors: Vec<TensorInfo> = meta
            .offset_keys()
            .into_iter()
            .filter_map(|name| {
                let info = meta.info(&name)?;
                Some(TensorInfo {
                    dtype: info.dtype,
                    shape: info.shape.clone(),
                    start: info.data_offsets.0 as u64,
                    end: info.data_offsets.1 as u64,
                    numel: info.shape.iter().map(|&d| d as u64).product(),
                    name,
                })
            })
            .collect();
        tensors.sort_by_key(|t| (t.start, t.end));
        Ok(Layout {
            data_start,
            tensors,
        })
    }
}

/// Say what is wrong with a header the safetensors crate refused: bad JSON, or valid JSON that
/// does not describe tensors (an unknown dtype is the common case).
fn header_json_error(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match e.classify() {
        Category::Data if e.to_string().starts_with("unknown variant") => {
            format!("header names an unknown dtype: {e}")
        }
        Category::Data => format!("header is JSON but not a safetensors header: {e}"),
        _ => format!("header is not valid JSON: {e}"),
    }
}

fn header_len(buf: &[u8]) -> u64 {
    buf.get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
        .unwrap_or(0)
}

/// Float layout of a safetensors dtype when the float-aware coder handles it.
pub fn float_kind(d: Dtype) -> Option<FloatKind> {
    match d {
        Dtype::BF16 => Some(FloatKind::Bf16),
        Dtype::F16 => Some(FloatKind::F16),
        Dtype::F32 => Some(FloatKind::F32),
        Dtype::F64 => Some(FloatKind::F64),
        _ => None,
    }
}

impl Layout {
    /// Tensor list from a header's JSON bytes alone (as stored in an archive's header segment),
    /// without the data area. Lenient about what it does not need; used by `inspect`.
    pub fn from_header_json(json: &[u8], data_start: u64) -> Result<Layout, StError> {
        let v: serde_json::Value = serde_json::from_slice(json)
            .map_err(|e| StError::Invalid(format!("header is not valid JSON: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| StError::Invalid("header is not a JSON object".into()))?;
        let mut tensors = Vec::new();
        for (name, t) in obj {
            if name == "__metadata__" {
                continue;
            }
            let dtype: Dtype = serde_json::from_value(t["dtype"].clone())
                .map_err(|e| StError::Invalid(format!("tensor {name:?}: dtype: {e}")))?;
            let shape: Vec<usize> = serde_json::from_value(t["shape"].clone())
                .map_err(|e| StError::Invalid(format!("tensor {name:?}: shape: {e}")))?;
            let (start, end): (u64, u64) = serde_json::from_value(t["data_offsets"].clone())
                .map_err(|e| StError::Invalid(format!("tensor {name:?}: data_offsets: {e}")))?;
            let numel = shape.iter().map(|&d| d as u64).product();
            tensors.push(TensorInfo {
                name: name.clone(),
                dtype,
                shape,
                start,
                end,
                numel,
            });
        }
        tensors.sort_by_key(|t| (t.start, t.end));
        Ok(Layout {
            data_start,
            tensors,
        })
    }
}

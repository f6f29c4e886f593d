//! Codec layer: turns the decoded bytes of one chunk into stored bytes and back.
//!
//! A chunk records `(codec id, codec param)` in the archive index (two bytes, see docs/FORMAT.md);
//! everything else a codec needs to decode (tables, group sizes, scales) lives inside its own stored
//! stream, so a new codec — lossy ones included — is a new id, never a format break.
//!
//! Contract for every codec:
//! - `encode` is deterministic (same input, same output): chunk de-duplication relies on it.
//! - `decode` gets the exact decoded length from the index and must fill `out` completely or fail;
//!   hostile input yields `CodecError`, never a panic, never an out-of-bounds access.

pub mod block;
pub mod entropy;
pub mod float;
pub mod quant;
pub mod raw;
pub mod zstd;

/// Errors of the codec layer. Every variant but `Simd` (a process setting) means "this chunk's
/// stored bytes cannot be decoded" (or, for `Unsupported`, cannot be encoded).
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum CodecError {
    /// The stored stream ends before its own structure says it should.
    #[error("truncated stream ({0})")]
    Truncated(&'static str),
    /// The stored stream is structurally invalid (bad table, impossible state, trailing garbage).
    #[error("corrupt stream ({0})")]
    Corrupt(&'static str),
    /// The stream decodes to a different number of bytes than the index promises.
    #[error("decoded length {got} differs from expected {expected}")]
    LengthMismatch { expected: usize, got: usize },
    /// The zstd library reported an error.
    #[error("zstd: {0}")]
    Zstd(String),
    /// The index names a codec id / param pair this build does not know.
    #[error("unknown codec id {id} (param {param})")]
    Unknown { id: u8, param: u8 },
    /// Encoding was asked for something the codec cannot represent.
    #[error("cannot encode: {0}")]
    Unsupported(String),
    /// `UPG_SIMD` forces a coder path this CPU lacks (or names none): nothing is decoded.
    #[error(transparent)]
    Simd(#[from] entropy::SimdError),
}

impl From<crate::cursor::Short> for CodecError {
    fn from(s: crate::cursor::Short) -> Self {
        CodecError::Truncated(s.what)
    }
}

/// Floating-point layouts the float-aware lossless coder understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FloatKind {
    Bf16,
    F16,
    F32,
    F64,
}

impl FloatKind {
    pub fn elem_size(self) -> usize {
        match self {
            FloatKind::Bf16 | FloatKind::F16 => 2,
            FloatKind::F32 => 4,
            FloatKind::F64 => 8,
        }
    }
    fn param(self) -> u8 {
        match self {
            FloatKind::Bf16 => 0,
            FloatKind::F16 => 1,
            FloatKind::F32 => 2,
            FloatKind::F64 => 3,
        }
    }
    fn from_param(p: u8) -> Option<Self> {
        Some(match p {
            0 => FloatKind::Bf16,
            1 => FloatKind::F16,
            2 => FloatKind::F32,
            3 => FloatKind::F64,
            _ => return None,
        })
    }
}

/// A codec as named in the index. Lossy codecs carry their own parameters in their stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// Stored verbatim (id 0).
    Raw,
    /// zstd frame (id 1); param is the level used at pack time, informational only.
    Zstd(u8),
    /// Float-aware lossless coder (id 2); param is the float layout.
    Float(FloatKind),
    /// Lossy quantizer (id 3); param is the output dtype the stream decodes to.
    Quant(FloatKind),
    /// ggml quantized blocks split into field streams (id 4); param is the ggml type id.
    Block(u8),
    /// F16 whose values are all BF16 values, coded as BF16 (id 2, param 4; format 1.2):
    /// chosen by [`Codec::encode_chosen`] for `Float(F16)` chunks (`float::via_bf16`).
    F16ViaBf16,
}

impl Codec {
    pub const ID_RAW: u8 = 0;
    pub const ID_ZSTD: u8 = 1;
    pub const ID_FLOAT: u8 = 2;
    pub const ID_QUANT: u8 = 3;
    pub const ID_BLOCK: u8 = 4;
    /// Param of [`Codec::F16ViaBf16`] under [`Codec::ID_FLOAT`].
    pub const PARAM_F16_VIA_BF16: u8 = 4;

    /// The `(id, param)` pair stored in the chunk table.
    pub fn to_id(self) -> (u8, u8) {
        match self {
            Codec::Raw => (Self::ID_RAW, 0),
            Codec::Zstd(level) => (Self::ID_ZSTD, level),
            Codec::Float(k) => (Self::ID_FLOAT, k.param()),
            Codec::Quant(k) => (Self::ID_QUANT, k.param()),
            Codec::Block(t) => (Self::ID_BLOCK, t),
            Codec::F16ViaBf16 => (Self::ID_FLOAT, Self::PARAM_F16_VIA_BF16),
        }
    }

    pub fn from_id(id: u8, param: u8) -> Result<Self, CodecError> {
        let unknown = CodecError::Unknown { id, param };
        match id {
            Self::ID_RAW if param == 0 => Ok(Codec::Raw),
            Self::ID_ZSTD => Ok(Codec::Zstd(param)),
            Self::ID_FLOAT if param == Self::PARAM_F16_VIA_BF16 => Ok(Codec::F16ViaBf16),
            Self::ID_FLOAT => FloatKind::from_param(param)
                .map(Codec::Float)
                .ok_or(unknown),
            Self::ID_QUANT => FloatKind::from_param(param)
                .map(Codec::Quant)
                .ok_or(unknown),
            Self::ID_BLOCK if block::layout(param).is_some() => Ok(Codec::Block(param)),
            _ => Err(unknown),
        }
    }

    /// Short human name, used by `inspect` and the pack summary.
    pub fn name(self) -> String {
        match self {
            Codec::Raw => "raw".into(),
            Codec::Zstd(l) => format!("zstd-{l}"),
            Codec::Float(k) => format!("float-{}", format!("{k:?}").to_lowercase()),
            Codec::Quant(k) => format!("quant-{}", format!("{k:?}").to_lowercase()),
            Codec::Block(t) => format!(
                "block-{}",
                block::layout(t).map_or("?", |l| l.name).to_lowercase()
            ),
            Codec::F16ViaBf16 => "float-f16-via-bf16".into(),
        }
    }

    /// Lossless codecs reproduce their input bit for bit.
    pub fn is_lossless(self) -> bool {
        !matches!(self, Codec::Quant(_))
    }

    /// Encode a lossless chunk. Lossy chunks are encoded by `quant::encode`, which needs more
    /// context (tensor shape, preset) than a byte slice.
    pub fn encode(self, input: &[u8], out: &mut Vec<u8>) -> Result<(), CodecError> {
        out.clear();
        match self {
            Codec::Raw => {
                raw::encode(input, out);
                Ok(())
            }
            Codec::Zstd(level) => zstd::encode(input, level, out),
            Codec::Float(k) => {
                float::encode(k, input, out);
                Ok(())
            }
            Codec::Block(t) => block::encode(t, input, out),
            Codec::F16ViaBf16 => {
                if float::via_bf16::encode(input, out) {
                    Ok(())
                } else {
                    Err(CodecError::Unsupported(
                        "F16 values that are not all BF16 values".into(),
                    ))
                }
            }
            Codec::Quant(_) => Err(CodecError::Unsupported(
                "lossy chunks are encoded through codec::quant".into(),
            )),
        }
    }

    /// Decode `input` into exactly `out.len()` bytes.
    pub fn decode(self, input: &[u8], out: &mut [u8]) -> Result<(), CodecError> {
        match self {
            Codec::Raw => raw::decode(input, out),
            Codec::Zstd(_) => zstd::decode(input, out),
            Codec::Float(k) => float::decode(k, input, out),
            Codec::Quant(k) => quant::decode(k, input, out),
            Codec::Block(t) => block::decode(t, input, out),
            Codec::F16ViaBf16 => float::via_bf16::decode(input, out),
        }
    }

    /// Encode a lossless chunk with this codec or a better-suited variant of it, and return the
    /// codec used (the one to record in the index). Today: a `Float(F16)` chunk whose values
    /// are all BF16 values (an F16 file converted from BF16) becomes [`Codec::F16ViaBf16`].
    pub fn encode_chosen(self, input: &[u8], out: &mut Vec<u8>) -> Result<Codec, CodecError> {
        if self == Codec::Float(FloatKind::F16) {
            out.clear();
            if float::via_bf16::encode(input, out) {
                return Ok(Codec::F16ViaBf16);
            }
        }
        self.encode(input, out)?;
        Ok(self)
    }

    /// The lowest format minor version that can record this codec (docs/FORMAT.md).
    pub fn format_minor(self) -> u16 {
        match self {
            Codec::Raw | Codec::Zstd(_) | Codec::Float(_) | Codec::Quant(_) => 0,
            Codec::Block(_) => 1,
            Codec::F16ViaBf16 => 2,
        }
    }
}

/// The one round-trip helper used by tests, fuzz targets and benches: encode, decode, compare.
/// Returns the stored size. The output buffer starts filled with 0xA5, not zeros: every decoder
/// must write every byte of `out`, because the archive reader decodes into recycled buffers
/// that still hold an earlier chunk (a byte left unwritten would fail the decoded checksum).
pub fn roundtrip(codec: Codec, input: &[u8]) -> Result<usize, CodecError> {
    let mut stored = Vec::new();
    codec.encode(input, &mut stored)?;
    let mut back = vec![0xA5u8; input.len()];
    codec.decode(&stored, &mut back)?;
    if back != input {
        return Err(CodecError::Corrupt("roundtrip produced different bytes"));
    }
    Ok(stored.len())
}

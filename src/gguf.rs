//! GGUF glue: a paranoid parser of GGUF v2/v3 headers over `&[u8]`, and the ggml type table.
//!
//! Hand-written (no crate parses GGUF to the standard of `format.rs`): input is a byte slice
//! holding at least the header (the whole file, mapped, when packing; the stored header segment
//! in `inspect`), every count is capped by the bytes left before anything is allocated, every
//! offset and size goes through checked arithmetic, every slice through `.get()`. Nothing here
//! panics on hostile input; one test per error variant (below).
//!
//! Layout (all little-endian; GGUF v3, v2 is the same with 64-bit counts; v1 had 32-bit counts
//! and is refused):
//!
//! ```text
//! u32 magic "GGUF"   u32 version   u64 tensor_count   u64 kv_count
//! kv_count × { string key, u32 value_type, value }
//! tensor_count × { string name, u32 n_dims (<= 4), u64 dims[n_dims], u32 ggml_type, u64 offset }
//! padding to `general.alignment` (a u32 power of two, default 32)
//! tensor data: each tensor at data_start + offset (offset a multiple of the alignment)
//! string = u64 len, len bytes;  array = u32 elem_type, u64 count, count values (arrays nest)
//! ```
//!
//! What upg checks beyond what it needs, so that a file it interprets is one llama.cpp would
//! also accept: known value and ggml types, unique keys and tensor names, `general.alignment` of
//! type u32 and a power of two, at most 4 dims, the first dim a multiple of the type's block
//! size, sizes without overflow, aligned offsets, tensor data inside the file and not
//! overlapping. A file that fails any check is stored as an ordinary file (the writer says so).
//! Tensors need not be contiguous: gaps are stored as plain bytes.

use std::fmt;

use crate::cursor::{Cursor, Short};

/// "GGUF" read as a little-endian u32.
pub const MAGIC: [u8; 4] = *b"GGUF";
/// Default tensor data alignment when `general.alignment` is absent (ggml's GGUF_DEFAULT_ALIGNMENT).
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml's GGML_MAX_DIMS.
pub const MAX_DIMS: u32 = 4;
/// Nesting depth of arrays of arrays. The format has no limit; llama.cpp writes none deeper than
/// one. 16 bounds the parser's recursion (a hostile file could otherwise nest until the stack
/// runs out) far above anything written in practice.
pub const MAX_ARRAY_DEPTH: u32 = 16;
/// Smallest encoding of one metadata pair: 8-byte key length, 4-byte type, 1-byte value.
const MIN_KV_BYTES: usize = 13;
/// Smallest encoding of one tensor info: 8-byte name length, n_dims, type, offset.
const MIN_TENSOR_INFO_BYTES: usize = 24;

/// A ggml tensor type: id as stored in the file, name, and block geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GgmlType {
    pub id: u32,
    pub name: &'static str,
    /// Elements per block (1 for plain scalar types).
    pub block_elems: u32,
    /// Bytes per block.
    pub block_bytes: u32,
}

/// Every ggml type a GGUF file can name, from ggml's `type_traits` table (ggml.c) of the
/// llama.cpp that the gguf-py 0.19 package tracks. Ids 4, 5 (Q4_2/Q4_3) and 31-33, 36-38 (the
/// repacked Q4_0_4_4 ... IQ4_NL_8_8 variants) were removed from ggml and are refused. Q8_1 is
/// 36 bytes (two f16 then 32 int8), as ggml's C struct; gguf-py's table says 40, but no file
/// llama.cpp writes holds it (it exists for dot products).
pub const GGML_TYPES: &[GgmlType] = &[
    t(0, "F32", 1, 4),
    t(1, "F16", 1, 2),
    t(2, "Q4_0", 32, 18),
    t(3, "Q4_1", 32, 20),
    t(6, "Q5_0", 32, 22),
    t(7, "Q5_1", 32, 24),
    t(8, "Q8_0", 32, 34),
    t(9, "Q8_1", 32, 36),
    t(10, "Q2_K", 256, 84),
    t(11, "Q3_K", 256, 110),
    t(12, "Q4_K", 256, 144),
    t(13, "Q5_K", 256, 176),
    t(14, "Q6_K", 256, 210),
    t(15, "Q8_K", 256, 292),
    t(16, "IQ2_XXS", 256, 66),
    t(17, "IQ2_XS", 256, 74),
    t(18, "IQ3_XXS", 256, 98),
    t(19, "IQ1_S", 256, 50),
    t(20, "IQ4_NL", 32, 18),
    t(21, "IQ3_S", 256, 110),
    t(22, "IQ2_S", 256, 82),
    t(23, "IQ4_XS", 256, 136),
    t(24, "I8", 1, 1),
    t(25, "I16", 1, 2),
    t(26, "I32", 1, 4),
    t(27, "I64", 1, 8),
    t(28, "F64", 1, 8),
    t(29, "IQ1_M", 256, 56),
    t(30, "BF16", 1, 2),
    t(34, "TQ1_0", 256, 54),
    t(35, "TQ2_0", 256, 66),
    t(39, "MXFP4", 32, 17),
    t(40, "NVFP4", 64, 36),
    t(41, "Q1_0", 128, 18),
];

const fn t(id: u32, name: &'static str, block_elems: u32, block_bytes: u32) -> GgmlType {
    GgmlType {
        id,
        name,
        block_elems,
        block_bytes,
    }
}

impl GgmlType {
    pub fn from_id(id: u32) -> Option<GgmlType> {
        GGML_TYPES.iter().copied().find(|t| t.id == id)
    }
    pub fn from_name(name: &str) -> Option<GgmlType> {
        GGML_TYPES
            .iter()
            .copied()
            .find(|t| t.name.eq_ignore_ascii_case(name))
    }
    /// Bytes of `n_elems` elements laid out as one row run (`n_elems` a multiple of the block).
    pub fn bytes_for(self, n_elems: u64) -> Option<u64> {
        let be = u64::from(self.block_elems);
        if !n_elems.is_multiple_of(be) {
            return None;
        }
        (n_elems / be).checked_mul(u64::from(self.block_bytes))
    }
}

/// GGUF metadata value types (`gguf_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueType {
    U8 = 0,
    I8 = 1,
    U16 = 2,
    I16 = 3,
    U32 = 4,
    I32 = 5,
    F32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    U64 = 10,
    I64 = 11,
    F64 = 12,
}

impl ValueType {
    fn from_u32(v: u32) -> Option<ValueType> {
        use ValueType::*;
        Some(match v {
            0 => U8,
            1 => I8,
            2 => U16,
            3 => I16,
            4 => U32,
            5 => I32,
            6 => F32,
            7 => Bool,
            8 => String,
            9 => Array,
            10 => U64,
            11 => I64,
            12 => F64,
            _ => return None,
        })
    }
    /// Smallest encoding of one value of this type (caps array counts before allocation).
    fn min_bytes(self) -> usize {
        use ValueType::*;
        match self {
            U8 | I8 | Bool => 1,
            U16 | I16 => 2,
            U32 | I32 | F32 => 4,
            U64 | I64 | F64 | String => 8,
            Array => 12,
        }
    }
}

/// A metadata value. Strings are kept as bytes: GGUF says UTF-8, but tokenizer vocabularies
/// in real files hold byte tokens that are not, and llama.cpp does not check; upg never refuses
/// to interpret a file over a value it only displays.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    Str(Vec<u8>),
    Array(ValueType, Vec<Value>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl fmt::Display for Value {
    /// Short form for `inspect`: strings quoted (lossy UTF-8, cut at 60 characters), arrays as
    /// their type and length plus the first few elements.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::U8(v) => write!(f, "{v}"),
            Value::I8(v) => write!(f, "{v}"),
            Value::U16(v) => write!(f, "{v}"),
            Value::I16(v) => write!(f, "{v}"),
            Value::U32(v) => write!(f, "{v}"),
            Value::I32(v) => write!(f, "{v}"),
            Value::F32(v) => write!(f, "{v}"),
            Value::Bool(v) => write!(f, "{v}"),
            Value::U64(v) => write!(f, "{v}"),
            Value::I64(v) => write!(f, "{v}"),
            Value::F64(v) => write!(f, "{v}"),
            Value::Str(s) => {
                let s = String::from_utf8_lossy(s);
                let cut: String = s.chars().take(60).collect();
                let more = if cut.len() < s.len() { "..." } else { "" };
                write!(f, "{cut:?}{more}")
            }
            Value::Array(ty, v) => {
                write!(f, "[{ty:?}; {}]", v.len())?;
                if !v.is_empty() {
                    let head: Vec<String> = v.iter().take(4).map(|x| x.to_string()).collect();
                    write!(
                        f,
                        " {}{}",
                        head.join(", "),
                        if v.len() > 4 { ", ..." } else { "" }
                    )?;
                }
                Ok(())
            }
        }
    }
}

/// One tensor as the header describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` is the contiguous (row) dimension.
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Offset relative to the start of the data area.
    pub offset: u64,
    /// Bytes of tensor data.
    pub size: u64,
    pub elems: u64,
}

/// A parsed GGUF header.
#[derive(Debug, Clone, PartialEq)]
pub struct Gguf {
    pub version: u32,
    pub alignment: u64,
    pub kvs: Vec<(String, Value)>,
    /// In header order (llama.cpp's order is also offset order; upg does not require it).
    pub tensors: Vec<TensorInfo>,
    /// Where the tensor infos end (before the alignment padding).
    pub infos_end: u64,
    /// Start of the data area: `infos_end` rounded up to the alignment.
    pub data_start: u64,
}

/// Everything that can be wrong with a GGUF header. Offsets are absolute byte offsets in the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GgufError {
    /// The first four bytes are not "GGUF".
    #[error("not a GGUF file (bad magic at offset 0)")]
    BadMagic,
    /// Version other than 2 or 3 (v1 used 32-bit counts; a byte-swapped big-endian file lands here too).
    #[error("unsupported GGUF version {0} (upg reads 2 and 3)")]
    UnsupportedVersion(u32),
    /// The header ends before the field named.
    #[error("header truncated at offset {offset} (reading {what})")]
    Truncated { what: &'static str, offset: u64 },
    /// More tensors than the remaining header bytes could describe.
    #[error("tensor count {count} at offset 8 cannot fit in the {left} bytes that follow")]
    TooManyTensors { count: u64, left: u64 },
    /// More metadata pairs than the remaining header bytes could describe.
    #[error("metadata count {count} at offset 16 cannot fit in the {left} bytes that follow")]
    TooManyKvs { count: u64, left: u64 },
    /// A string's length runs past the end of the header bytes.
    #[error("string of {len} bytes at offset {offset} runs past the end")]
    StringTooLong { len: u64, offset: u64 },
    /// A key or tensor name is not UTF-8.
    #[error("{what} at offset {offset} is not UTF-8")]
    BadUtf8 { what: &'static str, offset: u64 },
    /// A metadata value type outside 0..=12.
    #[error("unknown metadata value type {ty} at offset {offset}")]
    UnknownValueType { ty: u32, offset: u64 },
    /// An array's element count cannot fit in the bytes that follow.
    #[error("array of {count} elements at offset {offset} cannot fit in the bytes that follow")]
    ArrayTooLong { count: u64, offset: u64 },
    /// Arrays nested deeper than [`MAX_ARRAY_DEPTH`].
    #[error("arrays nested deeper than {MAX_ARRAY_DEPTH} at offset {offset}")]
    ArrayTooDeep { offset: u64 },
    /// A metadata key appears twice.
    #[error("duplicate metadata key {key:?} at offset {offset}")]
    DuplicateKey { key: String, offset: u64 },
    /// `general.alignment` is not a u32.
    #[error("general.alignment has type {0:?}, not U32")]
    AlignmentType(ValueType),
    /// `general.alignment` is zero or not a power of two.
    #[error("general.alignment {0} is not a power of two")]
    BadAlignment(u32),
    /// A tensor has more than [`MAX_DIMS`] dimensions.
    #[error("tensor {name:?}: {n_dims} dimensions (at most {MAX_DIMS})")]
    TooManyDims { name: String, n_dims: u32 },
    /// A dimension above i64::MAX, or an element count / byte size that overflows.
    #[error("tensor {name:?}: shape {dims:?} overflows")]
    ShapeOverflow { name: String, dims: Vec<u64> },
    /// A ggml type id this build does not know.
    #[error("tensor {name:?}: unknown ggml type {id}")]
    UnknownType { name: String, id: u32 },
    /// The first dimension is not a multiple of the type's block size.
    #[error("tensor {name:?}: row of {ne0} elements is not a multiple of {ty}'s block of {block}")]
    RowNotBlockMultiple {
        name: String,
        ty: &'static str,
        ne0: u64,
        block: u32,
    },
    /// A tensor name appears twice.
    #[error("duplicate tensor name {0:?}")]
    DuplicateTensor(String),
    /// A tensor offset that is not a multiple of the alignment.
    #[error("tensor {name:?}: offset {offset} is not a multiple of the alignment {alignment}")]
    Misaligned {
        name: String,
        offset: u64,
        alignment: u64,
    },
    /// Tensor data (or the data area itself) runs past the end of the file.
    #[error(
        "tensor {name:?}: data {start}..{end} runs past the end of the file ({file_len} bytes)"
    )]
    DataOutOfFile {
        name: String,
        start: u64,
        end: u64,
        file_len: u64,
    },
    /// Two tensors' data ranges overlap.
    #[error("tensors {a:?} and {b:?} overlap")]
    Overlap { a: String, b: String },
}

/// The shared bounded cursor plus GGUF's own fields (strings, typed values).
struct Reader<'a>(Cursor<'a>);

impl From<Short> for GgufError {
    fn from(s: Short) -> Self {
        GgufError::Truncated {
            what: s.what,
            offset: s.offset,
        }
    }
}

impl<'a> Reader<'a> {
    fn off(&self) -> u64 {
        self.0.pos() as u64
    }
    fn left(&self) -> usize {
        self.0.remaining()
    }
    fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], GgufError> {
        Ok(self.0.bytes(n, what)?)
    }
    fn arr<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], GgufError> {
        Ok(self.0.array(what)?)
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, GgufError> {
        Ok(self.0.u32(what)?)
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, GgufError> {
        Ok(self.0.u64(what)?)
    }
    fn string(&mut self, what: &'static str) -> Result<&'a [u8], GgufError> {
        let off = self.off();
        let len = self.u64(what)?;
        if len > self.left() as u64 {
            return Err(GgufError::StringTooLong { len, offset: off });
        }
        self.bytes(len as usize, what)
    }
    fn utf8(&mut self, what: &'static str) -> Result<String, GgufError> {
        let off = self.off();
        let s = self.string(what)?;
        String::from_utf8(s.to_vec()).map_err(|_| GgufError::BadUtf8 { what, offset: off })
    }

    fn value(&mut self, ty: ValueType, depth: u32) -> Result<Value, GgufError> {
        Ok(match ty {
            ValueType::U8 => Value::U8(self.arr::<1>("u8 value")?[0]),
            ValueType::I8 => Value::I8(self.arr::<1>("i8 value")?[0] as i8),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.arr("u16 value")?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.arr("i16 value")?)),
            ValueType::U32 => Value::U32(self.u32("u32 value")?),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.arr("i32 value")?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.arr("f32 value")?)),
            // Any non-zero byte reads as true, as in llama.cpp; the byte itself is kept by the
            // lossless store, so nothing is lost by not refusing 2..=255.
            ValueType::Bool => Value::Bool(self.arr::<1>("bool value")?[0] != 0),
            ValueType::String => Value::Str(self.string("string value")?.to_vec()),
            ValueType::U64 => Value::U64(self.u64("u64 value")?),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.arr("i64 value")?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.arr("f64 value")?)),
            ValueType::Array => {
                let off = self.off();
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(GgufError::ArrayTooDeep { offset: off });
                }
                let et = self.u32("array element type")?;
                let ety = ValueType::from_u32(et).ok_or(GgufError::UnknownValueType {
                    ty: et,
                    offset: off,
                })?;
                let count = self.u64("array length")?;
                // Cap before allocating: every element takes at least min_bytes.
                if count > (self.left() / ety.min_bytes()) as u64 {
                    return Err(GgufError::ArrayTooLong { count, offset: off });
                }
                let mut v = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    v.push(self.value(ety, depth + 1)?);
                }
                Value::Array(ety, v)
            }
        })
    }
}

/// Does this buffer start like a GGUF file? (The writer plans by magic, not by name.)
pub fn is_gguf(prefix: &[u8]) -> bool {
    prefix.get(..4) == Some(&MAGIC[..])
}

impl Gguf {
    /// Parse a GGUF header from `buf` (at least the header; more is ignored) of a file of
    /// `file_len` bytes, and check every tensor's data range against `file_len`.
    pub fn parse(buf: &[u8], file_len: u64) -> Result<Gguf, GgufError> {
        let mut r = Reader(Cursor::new(buf));
        let magic = r.bytes(4, "magic").map_err(|_| GgufError::BadMagic)?;
        if magic != MAGIC {
            return Err(GgufError::BadMagic);
        }
        let version = r.u32("version")?;
        if version != 2 && version != 3 {
            return Err(GgufError::UnsupportedVersion(version));
        }
        let n_tensors = r.u64("tensor count")?;
        let n_kv = r.u64("metadata count")?;
        let left = r.left() as u64;
        if n_kv > left / MIN_KV_BYTES as u64 {
            return Err(GgufError::TooManyKvs { count: n_kv, left });
        }
        let mut kvs: Vec<(String, Value)> = Vec::with_capacity(n_kv as usize);
        let mut keys = std::collections::HashSet::with_capacity(n_kv as usize);
        for _ in 0..n_kv {
            let off = r.off();
            let key = r.utf8("metadata key")?;
            let toff = r.off();
            let ty = r.u32("value type")?;
            let ty =
                ValueType::from_u32(ty).ok_or(GgufError::UnknownValueType { ty, offset: toff })?;
            let v = r.value(ty, 0)?;
            if !keys.insert(key.clone()) {
                return Err(GgufError::DuplicateKey { key, offset: off });
            }
            kvs.push((key, v));
        }
        let alignment = match kvs.iter().find(|(k, _)| k == "general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some((_, Value::U32(a))) if a.is_power_of_two() => u64::from(*a),
            Some((_, Value::U32(a))) => return Err(GgufError::BadAlignment(*a)),
            Some((_, v)) => return Err(GgufError::AlignmentType(value_type(v))),
        };
        let left = r.left() as u64;
        if n_tensors > left / MIN_TENSOR_INFO_BYTES as u64 {
            return Err(GgufError::TooManyTensors {
                count: n_tensors,
                left,
            });
        }
        let mut tensors = Vec::with_capacity(n_tensors as usize);
        let mut names = std::collections::HashSet::with_capacity(n_tensors as usize);
        for _ in 0..n_tensors {
            let name = r.utf8("tensor name")?;
            let n_dims = r.u32("tensor dimension count")?;
            if n_dims > MAX_DIMS {
                return Err(GgufError::TooManyDims { name, n_dims });
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(r.u64("tensor dimension")?);
            }
            let id = r.u32("tensor type")?;
            let offset = r.u64("tensor offset")?;
            let ty = GgmlType::from_id(id).ok_or_else(|| GgufError::UnknownType {
                name: name.clone(),
                id,
            })?;
            let overflow = || GgufError::ShapeOverflow {
                name: name.clone(),
                dims: dims.clone(),
            };
            if dims.iter().any(|&d| d > i64::MAX as u64) {
                return Err(overflow());
            }
            let elems = dims
                .iter()
                .try_fold(1u64, |a, &d| a.checked_mul(d))
                .filter(|&e| e <= i64::MAX as u64)
                .ok_or_else(overflow)?;
            let ne0 = dims.first().copied().unwrap_or(1);
            if !ne0.is_multiple_of(u64::from(ty.block_elems)) {
                return Err(GgufError::RowNotBlockMultiple {
                    name,
                    ty: ty.name,
                    ne0,
                    block: ty.block_elems,
                });
            }
            let size = ty.bytes_for(elems).ok_or_else(overflow)?;
            if !offset.is_multiple_of(alignment) {
                return Err(GgufError::Misaligned {
                    name,
                    offset,
                    alignment,
                });
            }
            if !names.insert(name.clone()) {
                return Err(GgufError::DuplicateTensor(name));
            }
            tensors.push(TensorInfo {
                name,
                dims,
                ty,
                offset,
                size,
                elems,
            });
        }
        let infos_end = r.off();
        let data_start =
            infos_end
                .checked_next_multiple_of(alignment)
                .ok_or(GgufError::Truncated {
                    what: "alignment padding",
                    offset: infos_end,
                })?;
        let g = Gguf {
            version,
            alignment,
            kvs,
            tensors,
            infos_end,
            data_start,
        };
        g.check_ranges(file_len)?;
        Ok(g)
    }

    /// Tensor data inside the file and not overlapping.
    fn check_ranges(&self, file_len: u64) -> Result<(), GgufError> {
        let mut spans: Vec<(u64, u64, &str)> = Vec::with_capacity(self.tensors.len());
        for t in &self.tensors {
            let out = |start, end| GgufError::DataOutOfFile {
                name: t.name.clone(),
                start,
                end,
                file_len,
            };
            let start = self
                .data_start
                .checked_add(t.offset)
                .ok_or_else(|| out(u64::MAX, u64::MAX))?;
            let end = start
                .checked_add(t.size)
                .ok_or_else(|| out(start, u64::MAX))?;
            if end > file_len {
                return Err(out(start, end));
            }
            spans.push((start, end, &t.name));
        }
        spans.sort_unstable();
        for w in spans.windows(2) {
            if w[1].0 < w[0].1 {
                return Err(GgufError::Overlap {
                    a: w[0].2.to_string(),
                    b: w[1].2.to_string(),
                });
            }
        }
        Ok(())
    }

    /// Tensors in data order, with absolute byte ranges: `(start, end, tensor)`.
    pub fn spans(&self) -> Vec<(u64, u64, &TensorInfo)> {
        let mut v: Vec<_> = self
            .tensors
            .iter()
            .map(|t| {
                (
                    self.data_start + t.offset,
                    self.data_start + t.offset + t.size,
                    t,
                )
            })
            .collect();
        v.sort_by_key(|s| (s.0, s.1));
        v
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.kvs.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

fn value_type(v: &Value) -> ValueType {
    match v {
        Value::U8(_) => ValueType::U8,
        Value::I8(_) => ValueType::I8,
        Value::U16(_) => ValueType::U16,
        Value::I16(_) => ValueType::I16,
        Value::U32(_) => ValueType::U32,
        Value::I32(_) => ValueType::I32,
        Value::F32(_) => ValueType::F32,
        Value::Bool(_) => ValueType::Bool,
        Value::Str(_) => ValueType::String,
        Value::Array(..) => ValueType::Array,
        Value::U64(_) => ValueType::U64,
        Value::I64(_) => ValueType::I64,
        Value::F64(_) => ValueType::F64,
    }
}

/// Test and tool helper: serialise a GGUF header (v3) with the given metadata and tensors, the
/// data area laid out contiguously in tensor order with alignment padding. Returns the header
/// bytes (padded to the data start) and each tensor's offset. Used by the parser tests, the
/// fuzz target's seeds and the round-trip tests; real files come from gguf-py and llama.cpp.
pub mod build {
    use super::*;

    pub fn string(b: &mut Vec<u8>, s: &[u8]) {
        b.extend_from_slice(&(s.len() as u64).to_le_bytes());
        b.extend_from_slice(s);
    }

    pub fn value(b: &mut Vec<u8>, v: &Value) {
        match v {
            Value::U8(x) => b.push(*x),
            Value::I8(x) => b.push(*x as u8),
            Value::U16(x) => b.extend_from_slice(&x.to_le_bytes()),
            Value::I16(x) => b.extend_from_slice(&x.to_le_bytes()),
            Value::U32(x) => b.extend_from_slice(&x.to_le_bytes()),
            Value::I32(x) => b.extend_from_slice(&x.to_le_bytes()),
            Value::F32(x) => b.extend_from_slice(&x.to_le_bytes()),
            Value::Bool(x) => b.push(u8::from(*x)),
            Value::Str(s) => string(b, s),
            Value::Array(t, items) => {
                b.extend_from_slice(&(*t as u32).to_le_bytes());
                b.extend_from_slice(&(items.len() as u64).to_le_bytes());
                for i in items {
                    value(b, i);
                }
            }
            Value::U64(x) => b.extend_from_slice(&x.to_le_bytes()),
            Value::I64(x) => b.extend_from_slice(&x.to_le_bytes()),
            Value::F64(x) => b.extend_from_slice(&x.to_le_bytes()),
        }
    }

    /// `tensors`: (name, dims, ggml type id, data size in bytes).
    pub fn header(
        kvs: &[(&str, Value)],
        tensors: &[(&str, Vec<u64>, u32, u64)],
        alignment: u64,
    ) -> (Vec<u8>, Vec<u64>) {
        let mut b = Vec::new();
        b.extend_from_slice(&MAGIC);
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
        b.extend_from_slice(&(kvs.len() as u64).to_le_bytes());
        for (k, v) in kvs {
            string(&mut b, k.as_bytes());
            b.extend_from_slice(&(value_type(v) as u32).to_le_bytes());
            value(&mut b, v);
        }
        let mut off = 0u64;
        let mut offs = Vec::new();
        for (name, dims, ty, size) in tensors {
            string(&mut b, name.as_bytes());
            b.extend_from_slice(&(dims.len() as u32).to_le_bytes());
            for d in dims {
                b.extend_from_slice(&d.to_le_bytes());
            }
            b.extend_from_slice(&ty.to_le_bytes());
            b.extend_from_slice(&off.to_le_bytes());
            offs.push(off);
            off = (off + size).next_multiple_of(alignment);
        }
        b.resize((b.len() as u64).next_multiple_of(alignment) as usize, 0);
        (b, offs)
    }
}

#[cfg(test)]
mod tests {
    use super::build::*;
    use super::*;

    fn sample_tensors() -> Vec<(&'static str, Vec<u64>, u32, u64)> {
        vec![
            ("a", vec![64, 2], 0, 512),
            ("b", vec![32], 8, 34),
            ("c", vec![256, 1], 12, 144),
        ]
    }

    /// A valid file: header, then data laid out as `build::header` says, then nothing.
    fn file_with(kvs: &[(&str, Value)], tensors: &[(&str, Vec<u64>, u32, u64)]) -> Vec<u8> {
        let (mut b, offs) = header(kvs, tensors, 32);
        let end = tensors
            .iter()
            .zip(&offs)
            .map(|(t, o)| o + t.3)
            .max()
            .unwrap_or(0);
        b.resize(b.len() + end as usize, 0x5A);
        b
    }

    fn sample() -> Vec<u8> {
        file_with(
            &[
                ("general.architecture", Value::Str(b"llama".to_vec())),
                ("general.alignment", Value::U32(32)),
                (
                    "nested",
                    Value::Array(
                        ValueType::Array,
                        vec![Value::Array(ValueType::I16, vec![Value::I16(-3)])],
                    ),
                ),
            ],
            &sample_tensors(),
        )
    }

    fn parse(b: &[u8]) -> Result<Gguf, GgufError> {
        Gguf::parse(b, b.len() as u64)
    }

    #[test]
    fn parses_every_value_type() {
        let all = vec![
            ("u8", Value::U8(7)),
            ("i8", Value::I8(-7)),
            ("u16", Value::U16(700)),
            ("i16", Value::I16(-700)),
            ("u32", Value::U32(70000)),
            ("i32", Value::I32(-70000)),
            ("f32", Value::F32(1.5)),
            ("bool", Value::Bool(true)),
            ("str", Value::Str(vec![0xff, b'x'])),
            ("empty", Value::Array(ValueType::String, vec![])),
            (
                "strs",
                Value::Array(ValueType::String, vec![Value::Str(b"a".to_vec())]),
            ),
            ("u64", Value::U64(1 << 40)),
            ("i64", Value::I64(-(1 << 40))),
            ("f64", Value::F64(-2.25)),
        ];
        let b = file_with(&all, &sample_tensors());
        let g = parse(&b).unwrap();
        let want: Vec<(String, Value)> = all
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        assert_eq!(g.kvs, want);
        assert_eq!(g.get("u16"), Some(&Value::U16(700)));
        assert_eq!(
            Value::Array(ValueType::U8, vec![Value::U8(1); 9]).to_string(),
            "[U8; 9] 1, 1, 1, 1, ..."
        );
    }

    #[test]
    fn type_table_matches_ggml() {
        // Spot checks against ggml-common.h's block structs.
        let q = |n| GgmlType::from_name(n).unwrap();
        assert_eq!((q("q4_0").block_elems, q("q4_0").block_bytes), (32, 2 + 16));
        assert_eq!(q("Q5_1").block_bytes, 2 + 2 + 4 + 16);
        assert_eq!(q("Q2_K").block_bytes, 16 + 64 + 2 + 2);
        assert_eq!(q("Q3_K").block_bytes, 32 + 64 + 12 + 2);
        assert_eq!(q("Q4_K").block_bytes, 2 + 2 + 12 + 128);
        assert_eq!(q("Q5_K").block_bytes, 2 + 2 + 12 + 32 + 128);
        assert_eq!(q("Q6_K").block_bytes, 128 + 64 + 16 + 2);
        assert_eq!(q("IQ4_XS").block_bytes, 2 + 2 + 4 + 128);
        assert_eq!(q("BF16").id, 30);
        assert!(GgmlType::from_id(4).is_none());
        let mut ids: Vec<u32> = GGML_TYPES.iter().map(|t| t.id).collect();
        ids.dedup();
        assert_eq!(ids.len(), GGML_TYPES.len());
        assert_eq!(q("Q8_0").bytes_for(64), Some(68));
        assert_eq!(q("Q8_0").bytes_for(33), None);
    }

    fn err(b: &[u8]) -> GgufError {
        parse(b).unwrap_err()
    }

    fn one_kv(key: &[u8], ty: u32, val: &[u8]) -> Vec<u8> {
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&0u64.to_le_bytes());
        b.extend_from_slice(&1u64.to_le_bytes());
        string(&mut b, key);
        b.extend_from_slice(&ty.to_le_bytes());
        b.extend_from_slice(val);
        b.resize(b.len().max(64), 0);
        b
    }

    fn one_tensor(name: &str, dims: &[u64], ty: u32, offset: u64, data: usize) -> Vec<u8> {
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&1u64.to_le_bytes());
        b.extend_from_slice(&0u64.to_le_bytes());
        string(&mut b, name.as_bytes());
        b.extend_from_slice(&(dims.len() as u32).to_le_bytes());
        for d in dims {
            b.extend_from_slice(&d.to_le_bytes());
        }
        b.extend_from_slice(&ty.to_le_bytes());
        b.extend_from_slice(&offset.to_le_bytes());
        b.resize(b.len().next_multiple_of(32) + data, 0);
        b
    }

    #[test]
    fn bad_magic() {
        assert_eq!(err(b"GGUG\x03\0\0\0"), GgufError::BadMagic);
        assert_eq!(err(b"GG"), GgufError::BadMagic);
        assert!(!is_gguf(b"GGU") && is_gguf(b"GGUF\x03"));
    }

    #[test]
    fn unsupported_version() {
        let mut b = sample();
        b[4] = 1;
        assert_eq!(err(&b), GgufError::UnsupportedVersion(1));
        b[4..8].copy_from_slice(&3u32.to_be_bytes());
        assert_eq!(err(&b), GgufError::UnsupportedVersion(3 << 24));
        b[4..8].copy_from_slice(&2u32.to_le_bytes());
        assert_eq!(parse(&b).unwrap().version, 2);
    }

    #[test]
    fn truncated_everywhere() {
        let b = sample();
        let g = parse(&b).unwrap();
        // Every cut inside the header (before the end of the tensor infos) is an error, never a panic.
        for cut in 4..g.infos_end as usize {
            let e = Gguf::parse(&b[..cut], b.len() as u64).unwrap_err();
            assert!(
                matches!(
                    e,
                    GgufError::Truncated { .. }
                        | GgufError::StringTooLong { .. }
                        | GgufError::TooManyKvs { .. }
                        | GgufError::TooManyTensors { .. }
                        | GgufError::ArrayTooLong { .. }
                ),
                "cut {cut}: {e:?}"
            );
        }
        assert_eq!(
            Gguf::parse(&b[..6], b.len() as u64).unwrap_err(),
            GgufError::Truncated {
                what: "version",
                offset: 4
            }
        );
    }

    #[test]
    fn too_many_tensors() {
        let mut b = sample();
        b[8..16].copy_from_slice(&(u64::MAX).to_le_bytes());
        assert!(matches!(
            err(&b),
            GgufError::TooManyTensors {
                count: u64::MAX,
                ..
            }
        ));
    }

    #[test]
    fn too_many_kvs() {
        let mut b = sample();
        b[16..24].copy_from_slice(&(1u64 << 60).to_le_bytes());
        assert!(matches!(err(&b), GgufError::TooManyKvs { .. }));
    }

    #[test]
    fn string_too_long() {
        let mut b = sample();
        b[24..32].copy_from_slice(&(1u64 << 40).to_le_bytes());
        assert_eq!(
            err(&b),
            GgufError::StringTooLong {
                len: 1 << 40,
                offset: 24
            }
        );
    }

    #[test]
    fn bad_utf8_key_and_name() {
        let b = one_kv(&[0xC3, 0x28], 0, &[1]);
        assert_eq!(
            err(&b),
            GgufError::BadUtf8 {
                what: "metadata key",
                offset: 24
            }
        );
        let mut b = one_tensor("xy", &[4], 0, 0, 16);
        b[32] = 0xFF;
        assert_eq!(
            err(&b),
            GgufError::BadUtf8 {
                what: "tensor name",
                offset: 24
            }
        );
    }

    #[test]
    fn unknown_value_type() {
        let b = one_kv(b"k", 13, &[0; 8]);
        assert_eq!(err(&b), GgufError::UnknownValueType { ty: 13, offset: 33 });
        let mut v = 99u32.to_le_bytes().to_vec();
        v.extend_from_slice(&0u64.to_le_bytes());
        let b = one_kv(b"k", 9, &v);
        assert_eq!(err(&b), GgufError::UnknownValueType { ty: 99, offset: 37 });
    }

    #[test]
    fn array_too_long() {
        let mut v = 4u32.to_le_bytes().to_vec(); // u32 elements
        v.extend_from_slice(&(1u64 << 50).to_le_bytes());
        let b = one_kv(b"k", 9, &v);
        assert_eq!(
            err(&b),
            GgufError::ArrayTooLong {
                count: 1 << 50,
                offset: 37
            }
        );
    }

    #[test]
    fn array_too_deep() {
        let mut v = Vec::new();
        for _ in 0..MAX_ARRAY_DEPTH + 1 {
            v.extend_from_slice(&9u32.to_le_bytes());
            v.extend_from_slice(&1u64.to_le_bytes());
        }
        let mut b = one_kv(b"k", 9, &v);
        b.resize(b.len() + 64, 0);
        assert!(matches!(err(&b), GgufError::ArrayTooDeep { .. }));
        // One level less parses (the innermost array then has elem type 0 and count 0).
        let mut v = Vec::new();
        for _ in 0..MAX_ARRAY_DEPTH - 1 {
            v.extend_from_slice(&9u32.to_le_bytes());
            v.extend_from_slice(&1u64.to_le_bytes());
        }
        v.extend_from_slice(&[0; 12]);
        let mut b = one_kv(b"k", 9, &v);
        b.resize(b.len() + 64, 0);
        parse(&b).unwrap();
    }

    #[test]
    fn duplicate_key() {
        let b = file_with(&[("k", Value::U8(1)), ("k", Value::U8(2))], &[]);
        assert_eq!(
            err(&b),
            GgufError::DuplicateKey {
                key: "k".into(),
                offset: 38
            }
        );
    }

    #[test]
    fn alignment_type_and_value() {
        let b = file_with(&[("general.alignment", Value::U64(32))], &[]);
        assert_eq!(err(&b), GgufError::AlignmentType(ValueType::U64));
        let b = file_with(&[("general.alignment", Value::U32(48))], &[]);
        assert_eq!(err(&b), GgufError::BadAlignment(48));
        let b = file_with(&[("general.alignment", Value::U32(0))], &[]);
        assert_eq!(err(&b), GgufError::BadAlignment(0));
        let (mut b, _) = header(
            &[("general.alignment", Value::U32(64))],
            &[("t", vec![8], 0, 32)],
            64,
        );
        b.resize(b.len() + 32, 0);
        let g = parse(&b).unwrap();
        assert_eq!((g.alignment, g.data_start % 64), (64, 0));
    }

    #[test]
    fn too_many_dims() {
        let b = one_tensor("t", &[1, 1, 1, 1, 1], 0, 0, 4);
        assert_eq!(
            err(&b),
            GgufError::TooManyDims {
                name: "t".into(),
                n_dims: 5
            }
        );
    }

    #[test]
    fn shape_overflow() {
        let b = one_tensor("t", &[1 << 40, 1 << 30], 0, 0, 4);
        assert!(matches!(err(&b), GgufError::ShapeOverflow { .. }));
        let b = one_tensor("t", &[u64::MAX], 0, 0, 4);
        assert!(matches!(err(&b), GgufError::ShapeOverflow { .. }));
        // Elements fit but bytes do not (F64: 8 bytes per element).
        let b = one_tensor("t", &[1 << 62], 28, 0, 4);
        assert!(matches!(err(&b), GgufError::ShapeOverflow { .. }));
    }

    #[test]
    fn unknown_type() {
        let b = one_tensor("t", &[32], 4, 0, 32);
        assert_eq!(
            err(&b),
            GgufError::UnknownType {
                name: "t".into(),
                id: 4
            }
        );
    }

    #[test]
    fn row_not_block_multiple() {
        let b = one_tensor("t", &[48, 2], 12, 0, 1000);
        assert_eq!(
            err(&b),
            GgufError::RowNotBlockMultiple {
                name: "t".into(),
                ty: "Q4_K",
                ne0: 48,
                block: 256
            }
        );
    }

    #[test]
    fn duplicate_tensor() {
        let b = file_with(&[], &[("t", vec![8], 0, 32), ("t", vec![8], 0, 32)]);
        assert_eq!(err(&b), GgufError::DuplicateTensor("t".into()));
    }

    #[test]
    fn misaligned() {
        let b = one_tensor("t", &[4], 0, 8, 64);
        assert_eq!(
            err(&b),
            GgufError::Misaligned {
                name: "t".into(),
                offset: 8,
                alignment: 32
            }
        );
    }

    #[test]
    fn data_out_of_file() {
        let b = one_tensor("t", &[16], 0, 0, 63);
        assert!(
            matches!(err(&b), GgufError::DataOutOfFile { end, .. } if end == b.len() as u64 + 1)
        );
        let b = one_tensor("t", &[16], 0, u64::MAX & !31, 64);
        assert!(matches!(err(&b), GgufError::DataOutOfFile { .. }));
        // Exactly filling the file is fine.
        parse(&one_tensor("t", &[16], 0, 0, 64)).unwrap();
    }

    #[test]
    fn overlap() {
        let (mut b, _) = header(&[], &[("a", vec![16], 0, 64), ("b", vec![16], 0, 64)], 32);
        b.resize(b.len() + 128, 0);
        let g = parse(&b).unwrap();
        // Point b (whose offset is the last field of the tensor infos) into a's data.
        let off_field = g.infos_end as usize - 8;
        b[off_field..off_field + 8].copy_from_slice(&32u64.to_le_bytes());
        assert_eq!(
            err(&b),
            GgufError::Overlap {
                a: "a".into(),
                b: "b".into()
            }
        );
    }
    #[test]
    fn sample_round_trips_through_the_parser() {
        let b = sample();
        let g = parse(&b).unwrap();
        assert_eq!(g.version, 3);
        assert_eq!(g.alignment, 32);
        assert_eq!(g.kvs.len(), 3);
        assert_eq!(g.tensors.len(), 3);
        assert_eq!(g.tensors[1].ty.name, "Q8_0");
        assert_eq!(g.tensors[2].size, 144);
        assert_eq!(g.data_start % 32, 0);
        let spans = g.spans();
        assert_eq!(spans[0].0, g.data_start);
        assert_eq!(spans[2].1, b.len() as u64);
        // Re-serialising what was parsed gives the same header bytes.
        let kvs: Vec<(&str, Value)> = g.kvs.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        let ts: Vec<_> = g
            .tensors
            .iter()
            .map(|t| (t.name.as_str(), t.dims.clone(), t.ty.id, t.size))
            .collect();
        let (h, _) = header(&kvs, &ts, 32);
        assert_eq!(&h[..], &b[..g.data_start as usize]);
    }
}

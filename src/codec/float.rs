//! Float-aware lossless coder (placeholder: stores raw until the entropy coder lands).

use super::{CodecError, FloatKind};

pub fn encode(_kind: FloatKind, input: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(input);
}

pub fn decode(_kind: FloatKind, input: &[u8], out: &mut [u8]) -> Result<(), CodecError> {
    super::raw::decode(input, out)
}

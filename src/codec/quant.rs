//! Lossy quantizers (issue 4). Placeholder: no lossy stream decodes yet.

use super::{CodecError, FloatKind};

pub fn decode(_kind: FloatKind, _input: &[u8], _out: &mut [u8]) -> Result<(), CodecError> {
    Err(CodecError::Corrupt(
        "lossy codec not implemented in this build",
    ))
}

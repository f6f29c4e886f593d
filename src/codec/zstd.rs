//! zstd codec for everything that is not a float tensor: JSON, tokenizers, integer tensors, FP8.

use super::CodecError;

pub fn encode(input: &[u8], level: u8, out: &mut Vec<u8>) -> Result<(), CodecError> {
    let v = zstd::bulk::compress(input, i32::from(level))
        .map_err(|e| CodecError::Zstd(e.to_string()))?;
    out.extend_from_slice(&v);
    Ok(())
}

pub fn decode(input: &[u8], out: &mut [u8]) -> Result<(), CodecError> {
    // decompress_to_buffer refuses to write past `out`, so a hostile frame cannot overrun it.
    let n = zstd::bulk::decompress_to_buffer(input, out)
        .map_err(|e| CodecError::Zstd(e.to_string()))?;
    if n != out.len() {
        return Err(CodecError::LengthMismatch {
            expected: out.len(),
            got: n,
        });
    }
    Ok(())
}

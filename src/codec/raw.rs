//! Raw codec: stored bytes are the decoded bytes. Used where coding does not pay (tiny chunks,
//! incompressible data) so a chunk never grows by more than nothing.

use super::CodecError;

pub fn encode(input: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(input);
}

pub fn decode(input: &[u8], out: &mut [u8]) -> Result<(), CodecError> {
    if input.len() != out.len() {
        return Err(CodecError::LengthMismatch {
            expected: out.len(),
            got: input.len(),
        });
    }
    out.copy_from_slice(input);
    Ok(())
}

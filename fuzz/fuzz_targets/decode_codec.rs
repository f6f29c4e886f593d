//! Decode arbitrary bytes with every codec id the chunk table can name (raw, zstd, float, quant, ggml blocks),
//! the way the archive reader does: must never panic, read out of bounds or hang.
#![no_main]
use libfuzzer_sys::fuzz_target;
use upg::codec::Codec;

fuzz_target!(|data: &[u8]| {
    // Bytes 0-1: output length, byte 2: codec id, byte 3: codec parameter; the rest is the stream.
    if data.len() < 4 {
        return;
    }
    let len = u16::from_le_bytes([data[0], data[1]]) as usize;
    let Ok(codec) = Codec::from_id(data[2] % 5, data[3]) else {
        return;
    };
    let mut out = vec![0u8; len];
    let _ = codec.decode(&data[4..], &mut out);
});

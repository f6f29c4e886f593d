//! Decode arbitrary bytes as a float-codec stream, for every kind and several output lengths.
//! Must never panic, read out of bounds or hang; errors are fine.
#![no_main]
use libfuzzer_sys::fuzz_target;
use upg::codec::{FloatKind, entropy, float};

fuzz_target!(|data: &[u8]| {
    // First two bytes choose the output length (so lengths up to 64 KiB get explored), the rest
    // is the stream.
    if data.len() < 2 {
        return;
    }
    let len = u16::from_le_bytes([data[0], data[1]]) as usize;
    let stream = &data[2..];
    for kind in [
        FloatKind::Bf16,
        FloatKind::F16,
        FloatKind::F32,
        FloatKind::F64,
    ] {
        for l in [len, len / 7, stream.len(), stream.len() * 2 + 3] {
            let mut out = vec![0u8; l];
            let _ = float::decode(kind, stream, &mut out);
        }
    }
    let mut out = vec![0u8; len];
    let _ = entropy::decode_symbols(stream, &mut out);
});

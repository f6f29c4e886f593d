//! Encode arbitrary bytes with every float kind and check the decode gives them back.
#![no_main]
use libfuzzer_sys::fuzz_target;
use upg::codec::{Codec, FloatKind, roundtrip};

fuzz_target!(|data: &[u8]| {
    for kind in [
        FloatKind::Bf16,
        FloatKind::F16,
        FloatKind::F32,
        FloatKind::F64,
    ] {
        let stored = roundtrip(Codec::Float(kind), data).expect("round trip");
        assert!(
            stored <= data.len() + 1,
            "stream grew by more than one byte"
        );
    }
});

//! Dumps every 256 KiB chunk of every F32 / BF16 tensor of a safetensors file, each as
//! `u32 raw_len, u32 coded_len, raw bytes, float-codec stream` (little-endian), for the offline
//! analysis in `scripts/analysis/float_gap.py` (where the coded bytes go, and what other
//! models of the same data would cost).
//!
//! `cargo run --release --example chunk_dump -- model.safetensors chunks.bin`
use std::io::Write;

use safetensors::{Dtype, SafeTensors};
use upg::codec::{FloatKind, float};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, input, output] = args.as_slice() else {
        eprintln!("usage: chunk_dump MODEL.safetensors OUT.bin");
        std::process::exit(2);
    };
    let bytes = std::fs::read(input)?;
    let st = SafeTensors::deserialize(&bytes)?;
    let mut out = std::io::BufWriter::new(std::fs::File::create(output)?);
    let mut coded = Vec::new();
    for (_, t) in st.iter() {
        let kind = match t.dtype() {
            Dtype::F32 => FloatKind::F32,
            Dtype::BF16 => FloatKind::Bf16,
            _ => continue,
        };
        for c in t.data().chunks(256 << 10) {
            coded.clear();
            float::encode(kind, c, &mut coded);
            out.write_all(&u32::try_from(c.len())?.to_le_bytes())?;
            out.write_all(&u32::try_from(coded.len())?.to_le_bytes())?;
            out.write_all(c)?;
            out.write_all(&coded)?;
        }
    }
    out.flush()?;
    Ok(())
}

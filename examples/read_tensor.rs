//! Read one tensor's bytes from an archive through the library, without mounting or unpacking.
//! `cargo run --release --example read_tensor -- model.upg model.safetensors tensor.name`

use upg::archive::Archive;
use upg::st::Layout;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, archive, file, tensor] = args.as_slice() else {
        return Err("usage: read_tensor ARCHIVE FILE TENSOR".into());
    };
    let a = Archive::open(archive)?;
    let fi = a.file_index(file).ok_or("no such file in the archive")?;
    // The safetensors header: 8-byte length, then JSON.
    let mut len = [0u8; 8];
    a.read_at(fi, 0, &mut len)?;
    let n = u64::from_le_bytes(len);
    let mut json = vec![0u8; n as usize];
    a.read_at(fi, 8, &mut json)?;
    let layout = Layout::from_header_json(&json, 8 + n)?;
    let t = layout
        .tensors
        .iter()
        .find(|t| &t.name == tensor)
        .ok_or("no such tensor")?;
    let mut data = vec![0u8; (t.end - t.start) as usize];
    a.read_at(fi, layout.data_start + t.start, &mut data)?;
    println!(
        "{} {:?} {:?}: {} bytes, first bytes {:02x?}",
        t.name,
        t.dtype,
        t.shape,
        data.len(),
        &data[..data.len().min(8)]
    );
    Ok(())
}

//! Parse arbitrary bytes as an archive's superblock, footer and index: must never panic, hang
//! or allocate by a hostile count; errors are fine. When an index parses, it must re-serialise
//! to the exact bytes it came from (the parser accepts nothing the writer would not write).
#![no_main]
use libfuzzer_sys::fuzz_target;
use upg::format::{self, Index};

fuzz_target!(|data: &[u8]| {
    let _ = format::parse_superblock(data);
    let file_len = (data.len() as u64).saturating_add(format::SUPERBLOCK_LEN as u64);
    let tail = &data[data.len().saturating_sub(format::FOOTER_LEN)..];
    let _ = format::parse_footer(tail, file_len);
    // First 8 bytes pick where chunk data ends (so offset checks are explored), the rest is the
    // index.
    if data.len() < 8 {
        return;
    }
    let data_end = u64::from_le_bytes(data[..8].try_into().unwrap()) % (1 << 40);
    if let Ok(index) = Index::parse(&data[8..], data_end) {
        assert_eq!(
            index.to_bytes(),
            &data[8..],
            "parsed index does not re-serialise"
        );
    }
});

//! Open arbitrary bytes as a whole archive, from memory, and read every file at several offsets:
//! `Archive::open_storage` over a `MemStorage`, then `read_at` and `read_with` (one chunk and
//! several). Must never panic, hang or allocate by a hostile count; errors are fine. A read that
//! succeeds returns exactly min(asked, size - offset) bytes. Seed: `seeds/open_read/small.upg`
//! (a small real archive, see fuzz/README.md).
//!
//! Checksums would stop almost every mutation at the index hash or a chunk's stored hash, so
//! by the input's length mod 4 the target first repairs them: 0 keeps the bytes as they are
//! (checksum failures explored), 1 recomputes the footer's index hash (index mutations reach
//! the parser), 2 and 3 also recompute each chunk's stored hash (stored-byte mutations reach
//! the decoders; the decoded hash still guards what is served).
#![no_main]
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use upg::archive::{Archive, OpenOptions};
use upg::format::{self, FOOTER_LEN, Index};
use upg::storage::MemStorage;
use xxhash_rust::xxh3::xxh3_64;

fn repair(data: &mut [u8]) {
    let n = data.len();
    let mode = n % 4;
    if mode == 0 || n < FOOTER_LEN {
        return;
    }
    let Ok(mut ft) = format::parse_footer(&data[n - FOOTER_LEN..], n as u64) else {
        return;
    };
    // parse_footer checked index_offset + index_len + FOOTER_LEN == n.
    let (io, end) = (ft.index_offset as usize, n - FOOTER_LEN);
    if mode >= 2
        && let Ok(mut index) = Index::parse(&data[io..end], ft.index_offset)
    {
        for c in &mut index.chunks {
            let o = c.offset as usize;
            if let Some(b) = data.get(o..o.saturating_add(c.stored_len as usize)) {
                c.stored_hash = xxh3_64(b);
            }
        }
        let ib = index.to_bytes();
        if ib.len() == end - io {
            data[io..end].copy_from_slice(&ib);
        }
    }
    ft.index_hash = xxh3_64(&data[io..end]);
    data[end..].copy_from_slice(&format::footer_bytes(&ft));
}

fuzz_target!(|input: &[u8]| {
    let mut data = input.to_vec();
    repair(&mut data);
    let st = Arc::new(MemStorage::new("fuzz", data));
    let Ok(a) = Archive::open_storage(
        st,
        OpenOptions {
            cache_bytes: 1 << 20,
            // One record page: a hostile archive with many records also drives page eviction.
            record_cache_bytes: 64 << 10,
            ..OpenOptions::default()
        },
    ) else {
        return;
    };
    let mut buf = vec![0u8; 5000];
    for fi in 0..a.files().len().min(32) {
        let size = a.files()[fi].size;
        for off in [
            0,
            1,
            size / 3,
            size / 2,
            size.saturating_sub(1),
            size,
            u64::MAX - 1,
        ] {
            if let Ok(n) = a.read_at(fi, off, &mut buf) {
                assert_eq!(n as u64, size.saturating_sub(off).min(buf.len() as u64));
            }
            // Up to 64 KiB: crosses chunk boundaries of small-chunk archives.
            if let Ok(n) = a.read_with(fi, off, 1 << 16, |b| b.len()) {
                assert_eq!(n as u64, size.saturating_sub(off).min(1 << 16));
            }
        }
    }
});

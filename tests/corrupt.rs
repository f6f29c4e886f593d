//! Damaged and hostile archives: every case gives a clear error (or, for a damaged chunk, an
//! error for that range only) — never a panic, never wrong bytes.

mod common;

use common::*;
use upg::archive::{Archive, ArchiveError, OpenOptions};
use upg::format::{self, FormatError, Index};
use upg::synth::Rng;
use xxhash_rust::xxh3::xxh3_64;

struct Fixture {
    _tmp: tempfile::TempDir,
    dir: std::path::PathBuf,
    bytes: Vec<u8>,
    path: std::path::PathBuf,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(3);
    let dir = model_dir(
        tmp.path(),
        &[
            tensor(&mut rng, "a", safetensors::Dtype::BF16, vec![64, 100]),
            tensor(&mut rng, "b", safetensors::Dtype::F32, vec![50, 50]),
        ],
    );
    let path = tmp.path().join("m.upg");
    pack_dir(&dir, &path, 4096);
    let bytes = std::fs::read(&path).unwrap();
    Fixture {
        _tmp: tmp,
        dir,
        bytes,
        path,
    }
}

fn open_bytes(f: &Fixture, bytes: &[u8]) -> Result<Archive, ArchiveError> {
    let p = f.path.with_extension("bad");
    std::fs::write(&p, bytes).unwrap();
    Archive::open_with(
        &p,
        OpenOptions {
            cache_bytes: 0,
            ..Default::default()
        },
    )
}

fn format_err(r: Result<Archive, ArchiveError>) -> FormatError {
    match r {
        Err(ArchiveError::Format { source, .. }) => source,
        other => panic!("expected a format error, got {other:?}"),
    }
}

/// Split an archive into (index bytes, footer) and rebuild it with a replaced index, keeping the
/// footer consistent so the parser's own validation is what gets exercised.
fn with_index(bytes: &[u8], edit: impl FnOnce(&mut Index)) -> Vec<u8> {
    let n = bytes.len();
    let footer = format::parse_footer(&bytes[n - format::FOOTER_LEN..], n as u64).unwrap();
    let io = footer.index_offset as usize;
    let mut index = Index::parse(
        &bytes[io..io + footer.index_len as usize],
        footer.index_offset,
    )
    .unwrap();
    edit(&mut index);
    raw_index(bytes, &index.to_bytes())
}

fn raw_index(bytes: &[u8], ib: &[u8]) -> Vec<u8> {
    let n = bytes.len();
    let footer = format::parse_footer(&bytes[n - format::FOOTER_LEN..], n as u64).unwrap();
    let mut out = bytes[..footer.index_offset as usize].to_vec();
    let f = format::Footer {
        index_offset: out.len() as u64,
        index_len: ib.len() as u64,
        index_hash: xxh3_64(ib),
        minor: 0,
    };
    out.extend_from_slice(ib);
    out.extend_from_slice(&format::footer_bytes(&f));
    out
}

#[test]
fn intact_fixture_opens() {
    let f = fixture();
    let a = open_bytes(&f, &f.bytes).unwrap();
    assert_identical(&a, &f.dir);
}

#[test]
fn wrong_magic() {
    let f = fixture();
    let mut b = f.bytes.clone();
    b[0] ^= 1;
    assert_eq!(format_err(open_bytes(&f, &b)), FormatError::BadMagic);
}

#[test]
fn wrong_version() {
    let f = fixture();
    let n = f.bytes.len();
    // Both majors say 9: a newer format this build does not read.
    let mut b = f.bytes.clone();
    b[8] = 9;
    b[n - 16] = 9;
    assert!(matches!(
        format_err(open_bytes(&f, &b)),
        FormatError::UnsupportedVersion { major: 9, .. }
    ));
    // Only one says so: the footer's major must equal the superblock's (docs/FORMAT.md).
    let mut b = f.bytes.clone();
    b[8] = 9;
    assert_eq!(
        format_err(open_bytes(&f, &b)),
        FormatError::VersionMismatch {
            superblock: 9,
            footer: 1
        }
    );
    let mut b = f.bytes.clone();
    b[n - 16] = 7; // footer major
    assert_eq!(
        format_err(open_bytes(&f, &b)),
        FormatError::VersionMismatch {
            superblock: 1,
            footer: 7
        }
    );
}

#[test]
fn truncated_anywhere() {
    let f = fixture();
    for cut in [
        0,
        5,
        16,
        100,
        f.bytes.len() / 2,
        f.bytes.len() - 41,
        f.bytes.len() - 1,
    ] {
        let e = format_err(open_bytes(&f, &f.bytes[..cut]));
        assert!(
            matches!(
                e,
                FormatError::TooShort { .. } | FormatError::BadFooter | FormatError::BadMagic
            ),
            "cut at {cut}: {e:?}"
        );
    }
}

#[test]
fn empty_file() {
    let f = fixture();
    assert!(matches!(
        format_err(open_bytes(&f, &[])),
        FormatError::TooShort { len: 0 }
    ));
}

#[test]
fn flipped_bit_in_index_is_caught_by_checksum() {
    let f = fixture();
    let n = f.bytes.len();
    let footer = format::parse_footer(&f.bytes[n - 40..], n as u64).unwrap();
    for k in [
        0usize,
        7,
        footer.index_len as usize / 2,
        footer.index_len as usize - 1,
    ] {
        let mut b = f.bytes.clone();
        b[footer.index_offset as usize + k] ^= 0x10;
        assert_eq!(format_err(open_bytes(&f, &b)), FormatError::IndexChecksum);
    }
}

#[test]
fn footer_pointing_outside_the_file() {
    let f = fixture();
    let mut b = f.bytes.clone();
    let n = b.len();
    b[n - 40..n - 32].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(
        format_err(open_bytes(&f, &b)),
        FormatError::IndexOutOfRange { .. }
    ));
}

#[test]
fn flipped_bit_in_data_fails_that_range_only() {
    let f = fixture();
    let a0 = Archive::open(&f.path).unwrap();
    let fi = a0.file_index("model.safetensors").unwrap();
    // Damage the 3rd chunk of the safetensors file (inside tensor "a").
    let seg = &a0.files()[fi].segments[1];
    let victim = seg.chunks.get(1).unwrap();
    let rec = a0.chunk_record(victim).unwrap();
    let mut b = f.bytes.clone();
    b[(rec.offset + u64::from(rec.stored_len) / 2) as usize] ^= 0x01;
    let a = open_bytes(&f, &b).unwrap();
    let size = a.files()[fi].size;
    let spans = a.spans(fi, 0, size).unwrap();
    let bad = spans.iter().find(|s| s.chunk == victim).unwrap();
    let mut buf = vec![0u8; 100];
    let err = a.read_at(fi, bad.file_offset + 10, &mut buf).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("model.safetensors")
            && msg.contains(&format!("offset {}", bad.file_offset + 10)),
        "{msg}"
    );
    assert!(matches!(err.root(), ArchiveError::StoredChecksum { .. }));
    // Other ranges of the same file and other files still read correctly.
    let orig = std::fs::read(f.dir.join("model.safetensors")).unwrap();
    let mut head = vec![0u8; bad.file_offset as usize];
    assert_eq!(a.read_at(fi, 0, &mut head).unwrap(), head.len());
    assert_eq!(head, orig[..head.len()]);
    let after = (bad.file_offset + u64::from(bad.len)) as usize;
    let mut tail = vec![0u8; orig.len() - after];
    a.read_at(fi, after as u64, &mut tail).unwrap();
    assert_eq!(tail, orig[after..]);
    let cfg = a.file_index("config.json").unwrap();
    assert_eq!(
        upg::archive::reader::read_all(&a, cfg).unwrap(),
        std::fs::read(f.dir.join("config.json")).unwrap()
    );
    // verify names the damage.
    let rep = upg::archive::verify::verify(&a, None);
    assert_eq!(rep.problems.len(), 1, "{:?}", rep.problems);
    assert_eq!(rep.problems[0].offset, Some(bad.file_offset));
}

#[test]
fn wrong_decoded_checksum_is_caught() {
    let f = fixture();
    let b = with_index(&f.bytes, |ix| ix.chunks[0].decoded_hash ^= 1);
    let a = open_bytes(&f, &b).unwrap();
    let r = a.decode_chunk_uncached(0).unwrap_err();
    assert!(
        matches!(r, ArchiveError::DecodedChecksum { chunk: 0, .. }),
        "{r:?}"
    );
}

/// One hostile index per refusal reason, each asserting the exact reason, so a case passes only
/// when the check it names is the one that fires.
#[test]
fn hostile_index_values() {
    use format::{BadChunk as C, BadFile as F, PathError as P};
    let f = fixture();
    type Edit = Box<dyn Fn(&mut Index)>;
    type Want = fn(&FormatError) -> bool;
    let cases: Vec<(&str, Edit, Want)> = vec![
        (
            "chunk past data area",
            Box::new(|ix: &mut Index| ix.chunks.last_mut().unwrap().stored_len += 1_000_000),
            |e| {
                matches!(
                    e,
                    FormatError::BadChunk {
                        reason: C::PastDataArea { .. },
                        ..
                    }
                )
            },
        ),
        (
            "overlapping chunks",
            Box::new(|ix: &mut Index| ix.chunks[1].offset = ix.chunks[0].offset),
            |e| {
                matches!(
                    e,
                    FormatError::BadChunk {
                        id: 1,
                        reason: C::Overlap { .. }
                    }
                )
            },
        ),
        (
            "chunk in superblock",
            Box::new(|ix: &mut Index| ix.chunks[0].offset = 3),
            |e| {
                matches!(
                    e,
                    FormatError::BadChunk {
                        id: 0,
                        reason: C::Overlap { offset: 3 }
                    }
                )
            },
        ),
        (
            "offset overflow",
            Box::new(|ix: &mut Index| ix.chunks.last_mut().unwrap().offset = u64::MAX - 2),
            |e| {
                matches!(
                    e,
                    FormatError::BadChunk {
                        reason: C::OffsetOverflow,
                        ..
                    }
                )
            },
        ),
        (
            "huge decoded len",
            Box::new(|ix: &mut Index| ix.chunks[0].decoded_len = u32::MAX),
            |e| {
                matches!(
                    e,
                    FormatError::BadChunk {
                        id: 0,
                        reason: C::TooLong {
                            decoded_len: u32::MAX,
                            ..
                        }
                    }
                )
            },
        ),
        (
            "unknown codec",
            Box::new(|ix: &mut Index| ix.chunks[0].codec_id = 200),
            |e| {
                matches!(
                    e,
                    FormatError::BadChunk {
                        id: 0,
                        reason: C::UnknownCodec { id: 200, .. }
                    }
                )
            },
        ),
        (
            "chunk id out of range",
            Box::new(|ix: &mut Index| {
                let s = &mut ix.files[0].segments[0];
                let mut ids = s.chunks.to_vec();
                ids[0] = 1_000_000;
                s.chunks = ids.into();
            }),
            |e| {
                matches!(
                    e,
                    FormatError::BadFile {
                        index: 0,
                        reason: F::ChunkIdOutOfRange { id: 1_000_000, .. },
                        ..
                    }
                )
            },
        ),
        (
            "size mismatch",
            Box::new(|ix: &mut Index| ix.files[0].size += 1),
            |e| {
                matches!(
                    e,
                    FormatError::BadFile {
                        index: 0,
                        reason: F::SizeMismatch { .. },
                        ..
                    }
                )
            },
        ),
        (
            "chunk count mismatch",
            Box::new(|ix: &mut Index| {
                let s = ix
                    .files
                    .iter_mut()
                    .flat_map(|f| f.segments.iter_mut())
                    .find(|s| !s.chunks.is_empty())
                    .unwrap();
                let first = s.chunks.first().unwrap();
                s.chunks.push(first);
            }),
            |e| {
                matches!(
                    e,
                    FormatError::BadFile {
                        reason: F::ChunkCount { .. },
                        ..
                    }
                )
            },
        ),
        (
            "zero chunk size",
            Box::new(|ix: &mut Index| ix.files[0].segments[0].chunk_size = 0),
            |e| {
                matches!(
                    e,
                    FormatError::BadFile {
                        index: 0,
                        reason: F::ChunkSize {
                            segment: 0,
                            chunk_size: 0
                        },
                        ..
                    }
                )
            },
        ),
        (
            "chunk size over the cap",
            Box::new(|ix: &mut Index| {
                ix.files[0].segments[0].chunk_size = format::MAX_CHUNK_LEN + 1
            }),
            |e| {
                matches!(
                    e,
                    FormatError::BadFile {
                        index: 0,
                        reason: F::ChunkSize { segment: 0, .. },
                        ..
                    }
                )
            },
        ),
        (
            "wrong decoded len for segment",
            Box::new(|ix: &mut Index| ix.files[0].segments[0].len -= 1),
            |e| {
                matches!(
                    e,
                    FormatError::BadFile {
                        index: 0,
                        reason: F::ChunkLen { segment: 0, .. },
                        ..
                    }
                )
            },
        ),
        (
            "path with ..",
            Box::new(|ix: &mut Index| ix.files[0].path = "../etc/passwd".into()),
            |e| {
                matches!(
                    e,
                    FormatError::BadFile {
                        reason: F::Path(P::DotComponent),
                        ..
                    }
                )
            },
        ),
        (
            "absolute path",
            Box::new(|ix: &mut Index| ix.files[0].path = "/etc/passwd".into()),
            |e| {
                matches!(
                    e,
                    FormatError::BadFile {
                        reason: F::Path(P::Absolute),
                        ..
                    }
                )
            },
        ),
        (
            "NUL in path",
            Box::new(|ix: &mut Index| ix.files[0].path = "a\0b".into()),
            |e| {
                matches!(
                    e,
                    FormatError::BadFile {
                        reason: F::Path(P::Nul),
                        ..
                    }
                )
            },
        ),
        (
            "empty path",
            Box::new(|ix: &mut Index| ix.files[0].path = String::new()),
            |e| {
                matches!(
                    e,
                    FormatError::BadFile {
                        reason: F::Path(P::Empty),
                        ..
                    }
                )
            },
        ),
        (
            "empty path component",
            Box::new(|ix: &mut Index| ix.files[0].path = "a//b".into()),
            |e| {
                matches!(
                    e,
                    FormatError::BadFile {
                        reason: F::Path(P::EmptyComponent),
                        ..
                    }
                )
            },
        ),
        (
            "path component over 255 bytes",
            Box::new(|ix: &mut Index| ix.files[0].path = "x".repeat(256)),
            |e| {
                matches!(
                    e,
                    FormatError::BadFile {
                        reason: F::Path(P::ComponentTooLong),
                        ..
                    }
                )
            },
        ),
        (
            "path over PATH_MAX",
            Box::new(|ix: &mut Index| ix.files[0].path = "x/".repeat(2100) + "x"),
            |e| {
                matches!(
                    e,
                    FormatError::BadFile {
                        reason: F::Path(P::TooLong),
                        ..
                    }
                )
            },
        ),
        (
            "duplicate path",
            Box::new(|ix: &mut Index| ix.files[1].path = ix.files[0].path.clone()),
            |e| {
                matches!(
                    e,
                    FormatError::BadFile {
                        index: 1,
                        reason: F::DuplicatePath,
                        ..
                    }
                )
            },
        ),
        (
            "file is also a directory",
            Box::new(|ix: &mut Index| ix.files[0].path = "sub".into()),
            |e| {
                matches!(
                    e,
                    FormatError::BadFile {
                        index: 0,
                        reason: F::FileIsDirectory { .. },
                        ..
                    }
                )
            },
        ),
    ];
    for (name, edit, want) in cases {
        let b = with_index(&f.bytes, edit);
        let e = format_err(open_bytes(&f, &b));
        assert!(want(&e), "{name}: unexpected {e:?}");
        assert!(!e.to_string().is_empty());
    }
}

/// Reasons that `Index` cannot express (it holds a `String` path and a `SegmentKind`): patch
/// the serialised bytes of file entry 0 instead.
#[test]
fn hostile_raw_file_entries() {
    let f = fixture();
    let n = f.bytes.len();
    let footer = format::parse_footer(&f.bytes[n - 40..], n as u64).unwrap();
    let ib = f.bytes[footer.index_offset as usize..n - 40].to_vec();
    let ix = Index::parse(&ib, footer.index_offset).unwrap();
    let path0 = 8 + ix.chunks.len() * format::CHUNK_RECORD_LEN + 2;
    let kind0 = path0 + ix.files[0].path.len() + 4 + 8 + 32 + 4;
    let mut b = ib.clone();
    b[path0] = 0xFF;
    assert_eq!(
        format_err(open_bytes(&f, &raw_index(&f.bytes, &b))),
        FormatError::BadFile {
            index: 0,
            path: String::from_utf8_lossy(&b[path0..path0 + ix.files[0].path.len()]).into(),
            reason: format::BadFile::PathNotUtf8
        }
    );
    let mut b = ib.clone();
    b[kind0] = 77;
    assert!(matches!(
        format_err(open_bytes(&f, &raw_index(&f.bytes, &b))),
        FormatError::BadFile {
            index: 0,
            reason: format::BadFile::UnknownSegmentKind {
                segment: 0,
                kind: 77
            },
            ..
        }
    ));
    // A stored length over the cap: only reachable in an archive over 128 MiB (a smaller one
    // fails the data-area check first), so parse the index against a large data area directly.
    let mut big = ix.clone();
    big.chunks.last_mut().unwrap().stored_len = format::MAX_CHUNK_LEN * 2 + 1;
    assert!(matches!(
        Index::parse(&big.to_bytes(), u64::MAX / 2),
        Err(FormatError::BadChunk {
            reason: format::BadChunk::TooLong { .. },
            ..
        })
    ));
    // A metadata length over the cap is refused before its bytes are looked for.
    let mut b = 0u32.to_le_bytes().to_vec();
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&(format::MAX_META_LEN as u32 + 1).to_le_bytes());
    assert_eq!(
        format_err(open_bytes(&f, &raw_index(&f.bytes, &b))),
        FormatError::MetaTooLarge {
            len: format::MAX_META_LEN + 1
        }
    );
}

/// Asking for a file or chunk the archive does not have is a caller's error with its own
/// variant, not a damage report.
#[test]
fn no_such_file_or_chunk() {
    let f = fixture();
    let a = open_bytes(&f, &f.bytes).unwrap();
    assert!(matches!(
        a.decode_chunk_uncached(1_000_000),
        Err(ArchiveError::NoSuchChunk { chunk: 1_000_000 })
    ));
    assert!(matches!(
        a.spans(99, 0, 1),
        Err(ArchiveError::NoSuchFile { file: 99 })
    ));
    assert!(matches!(
        upg::archive::reader::read_all(&a, 99),
        Err(ArchiveError::NoSuchFile { file: 99 })
    ));
}

#[test]
fn hostile_counts_and_trailing_bytes() {
    let f = fixture();
    // A chunk count of 2^32-1 with a tiny index: refused before allocating.
    let mut ib = u32::MAX.to_le_bytes().to_vec();
    ib.extend_from_slice(&1u32.to_le_bytes());
    assert!(matches!(
        format_err(open_bytes(&f, &raw_index(&f.bytes, &ib))),
        FormatError::Truncated(_)
    ));
    let mut ib = 0u32.to_le_bytes().to_vec();
    ib.extend_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        format_err(open_bytes(&f, &raw_index(&f.bytes, &ib))),
        FormatError::Truncated(_)
    ));
    // Valid index plus garbage.
    let n = f.bytes.len();
    let footer = format::parse_footer(&f.bytes[n - 40..], n as u64).unwrap();
    let mut ib = f.bytes[footer.index_offset as usize..n - 40].to_vec();
    ib.extend_from_slice(b"junk");
    assert_eq!(
        format_err(open_bytes(&f, &raw_index(&f.bytes, &ib))),
        FormatError::TrailingBytes(4)
    );
    // Non-zero chunk flags (bytes 18-19 of the first 36-byte chunk record, after the two
    // counts): a flag could change how the chunk decodes, so a v1 reader refuses it.
    let mut ib = f.bytes[footer.index_offset as usize..n - 40].to_vec();
    ib[8 + 18] = 1;
    assert!(matches!(
        format_err(open_bytes(&f, &raw_index(&f.bytes, &ib))),
        FormatError::BadChunk {
            id: 0,
            reason: format::BadChunk::UnknownFlags(1)
        }
    ));
    // Metadata that is not UTF-8.
    let b = with_index(&f.bytes, |ix| ix.meta = "x".into());
    let n = b.len();
    let footer = format::parse_footer(&b[n - 40..], n as u64).unwrap();
    let mut ib = b[footer.index_offset as usize..n - 40].to_vec();
    *ib.last_mut().unwrap() = 0xFF;
    assert_eq!(
        format_err(open_bytes(&f, &raw_index(&f.bytes, &ib))),
        FormatError::MetaNotUtf8
    );
}

/// Random byte corruption anywhere: open either fails cleanly or every read returns the original
/// bytes or an error — never different bytes, never a panic.
#[test]
fn random_corruption_never_serves_wrong_bytes() {
    let f = fixture();
    let originals: Vec<(String, Vec<u8>)> = Archive::open(&f.path)
        .unwrap()
        .files()
        .iter()
        .map(|x| (x.path.clone(), std::fs::read(f.dir.join(&x.path)).unwrap()))
        .collect();
    let mut rng = Rng::new(99);
    for _ in 0..300 {
        let mut b = f.bytes.clone();
        for _ in 0..1 + rng.next_u64() % 3 {
            let k = (rng.next_u64() % b.len() as u64) as usize;
            b[k] ^= 1 << (rng.next_u64() % 8);
        }
        let Ok(a) = open_bytes(&f, &b) else { continue };
        for (path, orig) in &originals {
            let fi = a.file_index(path).unwrap();
            let mut buf = vec![0u8; orig.len()];
            if let Ok(n) = a.read_at(fi, 0, &mut buf) {
                assert_eq!(n, orig.len());
                assert!(buf == *orig, "wrong bytes served for {path}");
            }
        }
    }
}

//! Whole-file SHA-256 off the ordered path.
//!
//! A file's SHA-256 must see its bytes in order, so it cannot be split across threads; at about
//! 1.5-2 GB/s per thread (SHA-NI) it capped pack when the calling thread did it between storing
//! chunks (0.75 GiB/s on 16 cores, issue 9). Here each file gets a hasher thread that reads the
//! file itself, sequentially, while the pool encodes; several files (the shards of a model) are
//! hashed at once, up to [`Hashers::new`]'s limit, in archive order.
//!
//! The hasher reads the file a second time. The two reads must have seen the same bytes, or the
//! archive would carry a digest of bytes it does not hold: the hasher also records the xxh3 of
//! every chunk-sized piece it read, and the writer compares those with the xxh3 the encoder
//! computed of the bytes it coded (it has them anyway: the dedup key). A file changed during the
//! pack therefore fails the pack ("file changed while being packed") instead of producing a
//! wrong digest. With the input in the page cache the second read is a memory copy; from a cold
//! disk the hasher runs ahead of the encoder and warms the cache for it.

use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use sha2::{Digest, Sha256};
use xxhash_rust::xxh3::xxh3_64;

/// What a hasher found: the file's SHA-256 and the xxh3 of each piece, in order.
pub(super) struct Hashed {
    pub sha256: [u8; 32],
    pub piece_hashes: Vec<u64>,
}

/// One file to hash: its path and the (offset, length) pieces that the encoder will code, in
/// file order, covering the file exactly.
pub(super) struct HashJob {
    pub path: PathBuf,
    pub pieces: Vec<(u64, usize)>,
}

/// Up to `limit` hasher threads over the files in order; `take(k)` waits for file `k`'s result
/// and starts the next file's hasher. Dropping it stops the threads that are still running at
/// their next piece (a failed pack does not keep reading its input).
pub(super) struct Hashers {
    jobs: Vec<Option<HashJob>>,
    running: std::collections::VecDeque<(usize, Running)>,
    next: usize,
    limit: usize,
    stop: Arc<AtomicBool>,
}

impl Hashers {
    pub fn new(jobs: Vec<HashJob>, limit: usize) -> Self {
        let mut h = Hashers {
            jobs: jobs.into_iter().map(Some).collect(),
            running: std::collections::VecDeque::new(),
            next: 0,
            limit: limit.max(1),
            stop: Arc::new(AtomicBool::new(false)),
        };
        h.fill();
        h
    }

    fn fill(&mut self) {
        while self.running.len() < self.limit && self.next < self.jobs.len() {
            let k = self.next;
            self.next += 1;
            let job = Arc::new(self.jobs[k].take().expect("each job starts once"));
            let (job2, stop) = (Arc::clone(&job), Arc::clone(&self.stop));
            let spawned = std::thread::Builder::new()
                .name(format!("upg-hash-{k}"))
                .spawn(move || hash_file(&job2, &stop));
            let r = match spawned {
                Ok(h) => Running::Thread(h),
                // No thread to be had (a thread limit): hash right here instead.
                Err(_) => Running::Done(hash_file(&job, &self.stop)),
            };
            self.running.push_back((k, r));
        }
    }

    /// File `k`'s result (files are taken in order).
    pub fn take(&mut self, k: usize) -> io::Result<Hashed> {
        let pos = self
            .running
            .iter()
            .position(|(i, _)| *i == k)
            .ok_or_else(|| io::Error::other(format!("internal: file {k} is not being hashed")))?;
        let r = match self.running.remove(pos).expect("position found").1 {
            Running::Thread(h) => h
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("hasher thread panicked"))),
            Running::Done(r) => r,
        };
        self.fill();
        r
    }
}

enum Running {
    Thread(JoinHandle<io::Result<Hashed>>),
    Done(io::Result<Hashed>),
}

impl Drop for Hashers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Pieces are read one at a time into one buffer (pieces are chunk-sized, 256 KiB by default:
/// a few thousand `pread`s per GB, negligible beside hashing).
fn hash_file(job: &HashJob, stop: &AtomicBool) -> io::Result<Hashed> {
    let mut sha = Sha256::new();
    let mut piece_hashes = Vec::with_capacity(job.pieces.len());
    if job.pieces.is_empty() {
        return Ok(Hashed {
            sha256: sha.finalize().into(),
            piece_hashes,
        });
    }
    let (f, _) = crate::storage::open_regular(&job.path)?;
    let mut buf = Vec::new();
    for &(off, len) in &job.pieces {
        if stop.load(Ordering::Relaxed) {
            return Err(io::Error::other("pack stopped"));
        }
        buf.resize(len, 0);
        f.read_exact_at(&mut buf, off).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                io::Error::other("file shrank while being packed")
            } else {
                e
            }
        })?;
        sha.update(&buf);
        piece_hashes.push(xxh3_64(&buf));
    }
    Ok(Hashed {
        sha256: sha.finalize().into(),
        piece_hashes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_match_a_single_pass_and_files_come_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut jobs = Vec::new();
        let mut expect = Vec::new();
        for k in 0..5u8 {
            let data: Vec<u8> = (0..(k as usize * 10_000 + 3))
                .map(|i| (i * 7) as u8 ^ k)
                .collect();
            let p = dir.path().join(format!("f{k}"));
            std::fs::write(&p, &data).unwrap();
            let pieces: Vec<(u64, usize)> = (0..data.len())
                .step_by(4096)
                .map(|o| (o as u64, (data.len() - o).min(4096)))
                .collect();
            let xs: Vec<u64> = pieces
                .iter()
                .map(|&(o, l)| xxh3_64(&data[o as usize..o as usize + l]))
                .collect();
            expect.push((<[u8; 32]>::from(Sha256::digest(&data)), xs));
            jobs.push(HashJob { path: p, pieces });
        }
        let mut h = Hashers::new(jobs, 2);
        for (k, (sha, xs)) in expect.iter().enumerate() {
            let r = h.take(k).unwrap();
            assert_eq!(&r.sha256, sha, "file {k}");
            assert_eq!(&r.piece_hashes, xs, "file {k}");
        }
    }

    #[test]
    fn a_file_shorter_than_its_pieces_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("short");
        std::fs::write(&p, [1u8; 100]).unwrap();
        let mut h = Hashers::new(
            vec![HashJob {
                path: p,
                pieces: vec![(0, 64), (64, 64)],
            }],
            1,
        );
        let e = h.take(0).err().expect("short file must fail");
        assert!(e.to_string().contains("shrank"), "{e}");
    }
}

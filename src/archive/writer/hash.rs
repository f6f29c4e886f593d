//! Whole-file SHA-256 off the ordered path, several files at once, never waited for mid-pack.
//!
//! A file's SHA-256 must see its bytes in order, so it cannot be split across threads; at about
//! 1.5-2 GB/s per thread with SHA-NI (0.85 GiB/s on the 16-core GPU host) it capped pack when
//! the calling thread did it between storing chunks (0.75 GiB/s on 16 cores, issue 9), and
//! again when the writer waited for each file's digest before storing the next file's chunks
//! (1.65 GiB/s: a few hashers, and the ordered window stalled behind the slowest one). Here a
//! fixed set of hasher threads takes the files in archive order, each thread one file at a time,
//! and keeps every result until the writer asks: [`Hashers::try_take`] while packing (a
//! digest that is ready is checked at once, so a changed file still fails early), and
//! [`Hashers::take`] only at the end, where the index is written anyway. The calling thread
//! then helps: it hashes files no hasher has started yet instead of only waiting.
//!
//! The hasher reads the file a second time. The two reads must have seen the same bytes, or the
//! archive would carry a digest of bytes it does not hold: the hasher also records the xxh3 of
//! every chunk-sized piece it read, and the writer compares those with the xxh3 the encoder
//! computed of the bytes it coded (it has them anyway: the dedup key). A file changed during the
//! pack therefore fails the pack ("file changed while being packed") instead of producing a
//! wrong digest. With the input in the page cache the second read is a memory copy; from a cold
//! disk the hashers run ahead of the encoder and warm the cache for it.

use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

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

/// Up to `limit` hasher threads over the files in order. Dropping it stops the threads that are
/// still running at their next piece (a failed pack does not keep reading its input).
pub(super) struct Hashers {
    shared: Arc<Shared>,
}

struct Shared {
    jobs: Vec<HashJob>,
    /// The next file no thread has claimed.
    next: AtomicUsize,
    /// Each file's result, from its hasher to its taker.
    results: Mutex<Vec<Slot>>,
    done: Condvar,
    stop: AtomicBool,
}

enum Slot {
    Pending,
    Ready(io::Result<Hashed>),
    Taken,
}

impl Shared {
    /// Claim the next unclaimed file and hash it; false when every file is claimed.
    fn hash_next(&self) -> bool {
        if self.stop.load(Ordering::Relaxed) {
            return false;
        }
        let k = self.next.fetch_add(1, Ordering::Relaxed);
        let Some(job) = self.jobs.get(k) else {
            return false;
        };
        // A panic becomes this file's error: `take` waits for every result, so each claimed
        // file must get one.
        let r = std::panic::catch_unwind(|| hash_file(job, &self.stop))
            .unwrap_or_else(|_| Err(io::Error::other("hasher thread panicked")));
        self.results.lock().unwrap_or_else(|e| e.into_inner())[k] = Slot::Ready(r);
        self.done.notify_all();
        true
    }
}

impl Hashers {
    /// Start `limit` hasher threads (fewer for fewer files). A thread that cannot be started
    /// is not an error: [`Hashers::take`] hashes what no thread took.
    pub fn new(jobs: Vec<HashJob>, limit: usize) -> Self {
        let n = jobs.len();
        let shared = Arc::new(Shared {
            results: Mutex::new((0..n).map(|_| Slot::Pending).collect()),
            jobs,
            next: AtomicUsize::new(0),
            done: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        for i in 0..limit.max(1).min(n) {
            let sh = Arc::clone(&shared);
            let spawned = std::thread::Builder::new()
                .name(format!("upg-hash-{i}"))
                .spawn(move || while sh.hash_next() {});
            if spawned.is_err() {
                break;
            }
        }
        Hashers { shared }
    }

    /// File `k`'s result if it is ready (each result is handed out once; asking again, or for
    /// a file that was not given, is an error, never a wait).
    pub fn try_take(&self, k: usize) -> Option<io::Result<Hashed>> {
        let mut res = self
            .shared
            .results
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        Self::take_slot(&mut res, k)
    }

    fn take_slot(res: &mut [Slot], k: usize) -> Option<io::Result<Hashed>> {
        let Some(slot) = res.get_mut(k) else {
            return Some(Err(io::Error::other(format!(
                "internal: file {k} is not being hashed"
            ))));
        };
        match std::mem::replace(slot, Slot::Taken) {
            Slot::Ready(r) => Some(r),
            Slot::Pending => {
                *slot = Slot::Pending;
                None
            }
            Slot::Taken => Some(Err(io::Error::other(format!(
                "internal: file {k}'s digest was taken twice"
            )))),
        }
    }

    /// File `k`'s result, waiting for it; hashes unclaimed files on this thread meanwhile.
    pub fn take(&self, k: usize) -> io::Result<Hashed> {
        let sh = &*self.shared;
        loop {
            if let Some(r) = self.try_take(k) {
                return r;
            }
            if sh.hash_next() {
                continue;
            }
            // Every file is claimed: wait for file k's hasher.
            let mut res = sh.results.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if let Some(r) = Self::take_slot(&mut res, k) {
                    return r;
                }
                res = sh.done.wait(res).unwrap_or_else(|e| e.into_inner());
            }
        }
    }
}

impl Drop for Hashers {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
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
        let again = || {
            jobs.iter()
                .map(|j| HashJob {
                    path: j.path.clone(),
                    pieces: j.pieces.clone(),
                })
                .collect::<Vec<_>>()
        };
        let h = Hashers::new(again(), 2);
        for (k, (sha, xs)) in expect.iter().enumerate() {
            let r = h.take(k).unwrap();
            assert_eq!(&r.sha256, sha, "file {k}");
            assert_eq!(&r.piece_hashes, xs, "file {k}");
        }
        // Taken last file first, with one hasher thread: the caller hashes what is unclaimed,
        // each result is handed out once, and `try_take` never blocks.
        let h = Hashers::new(again(), 1);
        let order = [4, 0, 3, 1, 2];
        for &k in &order {
            let r = h.take(k).unwrap();
            assert_eq!(r.sha256, expect[k].0, "file {k}");
            assert_eq!(r.piece_hashes, expect[k].1, "file {k}");
        }
        for k in 0..5 {
            assert!(h.try_take(k).unwrap().is_err(), "file {k} handed out twice");
            assert!(h.take(k).is_err(), "file {k} handed out twice");
        }
        assert!(h.take(5).is_err());
        assert!(h.try_take(5).unwrap().is_err());
    }

    #[test]
    fn a_file_shorter_than_its_pieces_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("short");
        std::fs::write(&p, [1u8; 100]).unwrap();
        let h = Hashers::new(
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

//! The ordered pipeline: a sliding window of chunk jobs, read and encoded on the pool, handed
//! back strictly in archive order to an [`InOrder`] consumer (the [`super::store::Store`]), with
//! every file's end announced in order too, empty files included. See the module header of
//! [`super`] for why the window runs across file boundaries and what each thread does.

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use xxhash_rust::xxh3::xxh3_64;

use super::input::InputFile;
use super::plan::{Encoder, Job, Jobs};
use super::{PackError, io_err};
use crate::codec::Codec;
use crate::codec::quant::QuantStats;

/// Chunks in flight per worker thread: enough that a worker finding its next chunk already read
/// never waits on the reader/writer thread, small enough that the window stays about 1 MiB of
/// input plus its output per thread at the default chunk size.
const WINDOW_PER_THREAD: usize = 4;

/// Room for coder overhead beyond the input size (headers, a stream briefly larger than its
/// input before the raw fallback), so the output buffer is allocated once per chunk instead of
/// growing by doubling (the reallocation copies were ~2.5% of pack time).
const STORED_SLACK: usize = 4096;

/// One encoded chunk.
pub(super) struct Done {
    pub stored: Vec<u8>,
    pub codec: Codec,
    pub decoded_len: u32,
    pub stored_hash: u64,
    pub decoded_hash: u64,
    /// xxh3 of the input bytes the encoder coded (the decoded hash when lossless), compared with
    /// what the file's hasher read (see `hash`).
    pub input_hash: u64,
    /// De-duplication key: `decoded_hash << 64 | stored_hash`. Coding is deterministic, so
    /// equal decoded bytes under one codec give equal stored bytes; two different chunks would
    /// have to collide in both 64-bit hashes at once. (The first version hashed the decoded
    /// bytes a second time with xxh3-128, ~2% of pack time.)
    pub key: u128,
    /// Lossy chunks: the bytes the archive will serve, and the error statistics.
    pub served: Option<(Vec<u8>, QuantStats)>,
}

/// Where the pipeline hands its results, on the calling thread, in archive order.
pub(super) trait InOrder {
    /// Chunk `j`'s input bytes and encoding result; returns the stored-bytes buffer for reuse.
    fn chunk(
        &mut self,
        j: &Job,
        data: &[u8],
        d: Result<Done, String>,
    ) -> Result<Vec<u8>, PackError>;
    /// Every chunk of file `k` has been handed over (called for each file in order).
    fn file_done(&mut self, k: usize) -> Result<(), PackError>;
}

/// A chunk's input bytes and its encoding result, as they come back from the pool.
type Encoded = (Vec<u8>, Result<Done, String>);

fn dedup_key(decoded_hash: u64, stored_hash: u64) -> u128 {
    (u128::from(decoded_hash) << 64) | u128::from(stored_hash)
}

/// Encode one chunk into `stored` (a recycled buffer, cleared here).
fn encode(enc: &Encoder, data: &[u8], mut stored: Vec<u8>) -> Result<Done, String> {
    stored.clear();
    stored.reserve(data.len().saturating_add(STORED_SLACK));
    let codec = match enc {
        Encoder::Lossy { kind, plan } => {
            let stats = plan
                .encode_chunk(data, &mut stored)
                .map_err(|e| e.to_string())?;
            // Decode what was stored: the served bytes are what the reader will produce, hashed
            // from the real decoder output rather than from the encoder's idea of it.
            let mut served = vec![0u8; data.len()];
            crate::codec::quant::decode(*kind, &stored, &mut served)
                .map_err(|e| format!("lossy round trip failed: {e}"))?;
            let (stored_hash, decoded_hash) = (xxh3_64(&stored), xxh3_64(&served));
            return Ok(Done {
                stored_hash,
                decoded_hash,
                input_hash: xxh3_64(data),
                key: dedup_key(decoded_hash, stored_hash),
                decoded_len: data.len() as u32,
                codec: Codec::Quant(*kind),
                stored,
                served: Some((served, stats)),
            });
        }
        Encoder::Lossless(codec) => codec,
    };
    let mut codec = codec
        .encode_chosen(data, &mut stored)
        .map_err(|e| e.to_string())?;
    if stored.len() >= data.len() {
        // Coding did not pay: store verbatim, so no chunk is ever larger than its input.
        stored.clear();
        stored.extend_from_slice(data);
        codec = Codec::Raw;
    }
    let (stored_hash, decoded_hash) = (xxh3_64(&stored), xxh3_64(data));
    Ok(Done {
        stored_hash,
        decoded_hash,
        input_hash: decoded_hash,
        key: dedup_key(decoded_hash, stored_hash),
        stored,
        codec,
        decoded_len: data.len() as u32,
        served: None,
    })
}

/// Reads into a recycled buffer: resizing a buffer that already held a chunk neither
/// allocates nor zero-fills (fresh zeroed 256 KiB buffers cost page faults and a memset).
fn read(src: &File, path: &Path, j: &Job, mut b: Vec<u8>) -> Result<Vec<u8>, PackError> {
    b.resize(j.len, 0);
    src.read_exact_at(&mut b, j.offset).map_err(|e| {
        let e = if e.kind() == std::io::ErrorKind::UnexpectedEof {
            std::io::Error::other("file shrank while being packed")
        } else {
            e
        };
        io_err(path, e)
    })?;
    Ok(b)
}

/// File `k` is complete: close its handle and tell `out`.
fn finish(
    out: &mut dyn InOrder,
    open: &mut VecDeque<(usize, Arc<File>)>,
    k: usize,
) -> Result<(), PackError> {
    if open.front().is_some_and(|(f, _)| *f == k) {
        open.pop_front();
    }
    out.file_done(k)
}

/// Read and encode every job on `pool` (`threads` workers), handing the results to `out` in
/// archive order. The calling thread only waits, opens input files and runs `out`; the window
/// runs across file boundaries: a small file's chunks are encoded while the previous file's last
/// chunks still are, instead of after a drain at every file end.
pub(super) fn run(
    pool: &rayon::ThreadPool,
    threads: usize,
    inputs: &[InputFile],
    jobs: &Jobs,
    out: &mut dyn InOrder,
) -> Result<(), PackError> {
    let window = threads
        .checked_mul(WINDOW_PER_THREAD)
        .ok_or_else(|| PackError::Options("too many threads".into()))?;
    let all = &jobs.all;
    // Chunk buffers (input, stored) recycled through the pipeline: at most one window of each.
    let mut free_in: Vec<Vec<u8>> = Vec::new();
    let mut free_out: Vec<Vec<u8>> = Vec::new();
    pool.in_place_scope(|scope| -> Result<(), PackError> {
        let (tx, rx) = std::sync::mpsc::channel::<(usize, Result<Encoded, PackError>)>();
        // Results that arrived ahead of their turn, slot i = job `stored + i`.
        let mut ready: VecDeque<Option<Encoded>> = VecDeque::with_capacity(window);
        let (mut submitted, mut stored) = (0usize, 0usize);
        // Open input files of the window: (file index, handle), in order.
        let mut open: VecDeque<(usize, Arc<File>)> = VecDeque::new();
        // Next file to finish (announced once all its chunks are handed over).
        let mut next_done = 0usize;
        loop {
            // Files whose chunks are all stored (empty files included), in order.
            while next_done < inputs.len() && jobs.start[next_done + 1] <= stored {
                finish(out, &mut open, next_done)?;
                next_done += 1;
            }
            if stored == all.len() {
                break;
            }
            while submitted < all.len() && submitted - stored < window {
                let j = &all[submitted];
                if open.back().is_none_or(|(k, _)| *k != j.file) {
                    let f = &inputs[j.file];
                    let (src, _) =
                        crate::storage::open_regular(&f.abs).map_err(|e| io_err(&f.abs, e))?;
                    open.push_back((j.file, Arc::new(src)));
                }
                let src = Arc::clone(&open.back().expect("pushed above").1);
                let path = inputs[j.file].abs.as_path();
                let tx = tx.clone();
                let idx = submitted;
                let in_buf = free_in.pop().unwrap_or_default();
                let out_buf = free_out.pop().unwrap_or_default();
                scope.spawn(move |_| {
                    let r = read(&src, path, j, in_buf).map(|data| {
                        // A panicking encoder becomes this chunk's error: the calling
                        // thread waits for every result, so each task must send one.
                        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            encode(&j.encoder, &data, out_buf)
                        }))
                        .unwrap_or_else(|_| Err("encoder panicked".into()));
                        (data, r)
                    });
                    // The receiver is gone only when packing already failed.
                    let _ = tx.send((idx, r));
                });
                submitted += 1;
                ready.push_back(None);
            }
            while ready.front().is_some_and(|r| r.is_none()) {
                let (idx, r) = rx
                    .recv()
                    .map_err(|_| PackError::Options("encoder threads exited".into()))?;
                ready[idx - stored] = Some(r?);
            }
            while let Some(Some((data, r))) = ready.front_mut().map(|r| r.take()) {
                ready.pop_front();
                let j = &all[stored];
                // Files before this chunk's are complete: finish them first (empty ones too).
                while next_done < j.file {
                    finish(out, &mut open, next_done)?;
                    next_done += 1;
                }
                free_out.push(out.chunk(j, &data, r)?);
                free_in.push(data);
                stored += 1;
            }
        }
        Ok(())
    })
}

//! Byte-bounded LRU cache of decoded chunks with single-flight decoding.
//!
//! - Entries are `Arc<Vec<u8>>`: the decoder's output buffer moves into the cache without a copy
//!   (`Arc<[u8]>::from(Vec)` would allocate and copy every chunk once more); a reader copies out
//!   of an entry (or replies with a slice of it) without holding the lock, and an evicted entry
//!   stays alive for readers that still hold it.
//! - Budget is in decoded bytes, not entries, because chunks differ in size (a tiny tensor's chunk
//!   and a full 256 KiB one). The budget may be exceeded by chunks that are being read at this
//!   moment (they are held by `Arc`), never by cached ones.
//! - Single flight: concurrent requests for the same chunk share one `OnceLock`; exactly one of
//!   them runs the decoder, the others block on the lock until it is done. Errors are not cached:
//!   the next request tries again (and fails again if the chunk is damaged).
//! - Evicted buffers that no reader holds any more are kept (at most [`MAX_SPARE_BYTES`]) and handed
//!   to the next decode by [`ChunkCache::spare_buffer`] without zeroing. A fresh `vec![0; n]`
//!   of 256 KiB comes from glibc's heap once the cache is full (its mmap threshold has risen by
//!   then), so `calloc` zeroes it: 4% of the daemon's samples during random reads. Decoders
//!   write every byte of their output (`codec::roundtrip` checks it on a 0xA5-filled buffer),
//!   and the decoded checksum is checked whatever the buffer held before. Measured with the
//!   sleeping decode pool (`src/pool.rs`), daemon `perf stat` task-clock for 7 x 300 random
//!   reads of SmolLM2, 5 alternating mounts each: 713-834 ms against 842-970 ms for the daemon
//!   before both changes (about -12%); read throughput unchanged (medians 945 vs 947 MiB/s).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use lru::LruCache;

pub type Bytes = Arc<Vec<u8>>;
type Slot<E> = Arc<OnceLock<Result<Bytes, E>>>;

/// Bytes of evicted chunk buffers kept for reuse: eight default 256 KiB chunks, enough for the
/// requests being decoded at one moment on a small machine (a 1 MiB request spans up to 5
/// chunks), and small next to the cache budget (2 MiB outside it, within the RSS allowance).
/// Counted in bytes, not buffers, because `--chunk-size` allows chunks of up to 64 MiB.
pub const MAX_SPARE_BYTES: usize = 2 << 20;

pub struct ChunkCache<E> {
    inner: Mutex<Inner<E>>,
    budget: usize,
}

struct Inner<E> {
    lru: LruCache<u32, Bytes>,
    bytes: usize,
    inflight: HashMap<u32, Slot<E>>,
    spare: Vec<Vec<u8>>,
    hits: u64,
    misses: u64,
}

impl<E> Inner<E> {
    /// Capacity held by the spare buffers (a handful at most: summed when needed).
    fn spare_bytes(&self) -> usize {
        self.spare.iter().map(Vec::capacity).sum()
    }
}

/// Counters for `bench` and the mount's statistics.
#[derive(Debug, Clone, Copy, Default)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub bytes: usize,
    pub entries: usize,
}

impl<E: Clone> ChunkCache<E> {
    /// A cache holding at most `budget` decoded bytes (0 disables caching but keeps single flight).
    pub fn new(budget: usize) -> Self {
        ChunkCache {
            inner: Mutex::new(Inner {
                lru: LruCache::unbounded(),
                bytes: 0,
                inflight: HashMap::new(),
                spare: Vec::new(),
                hits: 0,
                misses: 0,
            }),
            budget,
        }
    }

    pub fn budget(&self) -> usize {
        self.budget
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<E>> {
        // A panic while holding the lock cannot leave the LRU inconsistent (all updates are
        // single calls), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Is the chunk cached right now (no decode, no LRU promotion)?
    pub fn contains(&self, id: u32) -> bool {
        let g = self.lock();
        g.lru.contains(&id) || g.inflight.contains_key(&id)
    }

    /// Return the cached chunk, or decode it with `decode` (once, however many callers ask).
    pub fn get_or_decode(
        &self,
        id: u32,
        decode: impl FnOnce() -> Result<Bytes, E>,
    ) -> Result<Bytes, E> {
        let slot = {
            let mut g = self.lock();
            if let Some(b) = g.lru.get(&id) {
                let b = b.clone();
                g.hits += 1;
                return Ok(b);
            }
            g.misses += 1;
            g.inflight
                .entry(id)
                .or_insert_with(|| Arc::new(OnceLock::new()))
                .clone()
        };
        let result = slot.get_or_init(decode).clone();
        let mut g = self.lock();
        // Whoever gets here first moves the result into the LRU; later waiters find it gone.
        if g.inflight.get(&id).is_some_and(|s| Arc::ptr_eq(s, &slot)) {
            g.inflight.remove(&id);
            if let Ok(b) = &result {
                if b.len() <= self.budget && g.lru.put(id, b.clone()).is_none() {
                    g.bytes += b.len();
                }
                while g.bytes > self.budget {
                    match g.lru.pop_lru() {
                        Some((_, old)) => {
                            g.bytes -= old.len();
                            // Unique: no reader holds it, so its memory can be decoded into.
                            if let Ok(v) = Arc::try_unwrap(old)
                                && g.spare_bytes() + v.capacity() <= MAX_SPARE_BYTES
                            {
                                g.spare.push(v);
                            }
                        }
                        None => break,
                    }
                }
            }
        }
        result
    }

    /// A buffer of `len` bytes to decode a chunk into: a recycled one when an evicted buffer of
    /// at least that capacity is spare (its bytes are stale, not zero: the decoder overwrites
    /// them all), else a fresh zeroed one.
    pub fn spare_buffer(&self, len: usize) -> Vec<u8> {
        let v = {
            let mut g = self.lock();
            let i = g.spare.iter().rposition(|v| v.capacity() >= len);
            i.map(|i| g.spare.swap_remove(i))
        };
        match v {
            Some(mut v) => {
                if v.len() >= len {
                    v.truncate(len);
                } else {
                    v.resize(len, 0);
                }
                v
            }
            None => vec![0u8; len],
        }
    }

    pub fn stats(&self) -> CacheStats {
        let g = self.lock();
        CacheStats {
            hits: g.hits,
            misses: g.misses,
            bytes: g.bytes,
            entries: g.lru.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn chunk(n: usize, v: u8) -> Result<Bytes, String> {
        Ok(vec![v; n].into())
    }

    #[test]
    fn evicts_by_bytes_in_lru_order() {
        let c = ChunkCache::<String>::new(300);
        c.get_or_decode(1, || chunk(100, 1)).unwrap();
        c.get_or_decode(2, || chunk(100, 2)).unwrap();
        c.get_or_decode(1, || panic!("1 is cached")).unwrap();
        c.get_or_decode(3, || chunk(150, 3)).unwrap(); // 350 > 300: evicts 2 (least recent)
        assert!(c.contains(1) && c.contains(3) && !c.contains(2));
        assert!(c.stats().bytes <= 300);
    }

    #[test]
    fn evicted_unshared_buffers_are_reused_shared_ones_are_not() {
        let c = ChunkCache::<String>::new(200);
        let held = c.get_or_decode(1, || chunk(100, 1)).unwrap();
        c.get_or_decode(2, || chunk(100, 2)).unwrap();
        // 3 evicts 1 (still held by `held`: not reusable), 4 evicts 2 (unique: reusable).
        c.get_or_decode(3, || chunk(100, 3)).unwrap();
        c.get_or_decode(4, || chunk(100, 4)).unwrap();
        let b = c.spare_buffer(100);
        assert_eq!(b, vec![2u8; 100], "chunk 2's buffer, stale bytes and all");
        assert_eq!(
            c.spare_buffer(60),
            vec![0u8; 60],
            "no spare left: a fresh zeroed one"
        );
        assert_eq!(held[0], 1);
        // Spares smaller than the request are left alone: a fresh zeroed buffer instead.
        c.get_or_decode(5, || chunk(100, 5)).unwrap();
        c.get_or_decode(6, || chunk(100, 6)).unwrap();
        assert_eq!(c.spare_buffer(120), vec![0u8; 120]);
        assert_eq!(c.lock().spare.len(), 2);
        // A spare with room but a shorter length is extended with zeros.
        let mut v = c.spare_buffer(100);
        v.truncate(10);
        c.lock().spare.push(v);
        let b = c.spare_buffer(50);
        assert_eq!(b.len(), 50);
        assert!(b[10..].iter().all(|&x| x == 0));
    }

    #[test]
    fn spare_buffers_are_bounded_in_bytes() {
        // Chunks larger than the spare allowance are freed, not kept.
        let big = MAX_SPARE_BYTES / 2 + 1;
        let c = ChunkCache::<String>::new(big);
        for id in 0..4 {
            c.get_or_decode(id, || chunk(big, 1)).unwrap();
        }
        assert!(c.lock().spare_bytes() <= MAX_SPARE_BYTES);
        assert_eq!(c.lock().spare.len(), 1);
    }

    #[test]
    fn oversized_chunk_is_served_not_cached() {
        let c = ChunkCache::<String>::new(10);
        assert_eq!(c.get_or_decode(1, || chunk(50, 7)).unwrap().len(), 50);
        assert_eq!(c.stats().bytes, 0);
    }

    #[test]
    fn errors_are_not_cached() {
        let c = ChunkCache::<String>::new(1000);
        assert!(c.get_or_decode(1, || Err("bad".into())).is_err());
        assert_eq!(c.get_or_decode(1, || chunk(5, 1)).unwrap().len(), 5);
    }

    #[test]
    fn concurrent_requests_decode_once() {
        let c = Arc::new(ChunkCache::<String>::new(1 << 20));
        let calls = Arc::new(AtomicUsize::new(0));
        let barrier = Arc::new(std::sync::Barrier::new(8));
        let hs: Vec<_> = (0..8)
            .map(|_| {
                let (c, calls, barrier) = (c.clone(), calls.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    c.get_or_decode(9, || {
                        calls.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(50));
                        chunk(1000, 9)
                    })
                    .unwrap()
                })
            })
            .collect();
        for h in hs {
            assert_eq!(h.join().unwrap()[0], 9);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}

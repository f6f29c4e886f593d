//! Byte-bounded LRU cache of decoded chunks with single-flight decoding.
//!
//! - Entries are `Arc<Vec<u8>>`: the decoder's output buffer moves into the cache without a copy
//!   (`Arc<[u8]>::from(Vec)` would allocate and copy every chunk once more); a reader copies out
//!   of an entry (or replies with a slice of it) without holding the lock, and an evicted entry
//!   stays alive for readers that still hold it.
//! - Budget is in decoded bytes, not entries, because chunks differ in size (a tiny tensor's chunk
//!   and a full 256 KiB one). The budget may be exceeded by chunks that are being read at this
//!   moment (they are held by `Arc`), never by cached ones.
//! - Single flight: concurrent requests for the same chunk share one slot; exactly one of them
//!   runs the decoder, the others wait until it is done. A fetch of a run of chunks (remote
//!   read-ahead) claims its chunks when it starts, so a reader overtaking it waits for those
//!   bytes instead of requesting them a second time; a claim dropped unfilled is abandoned and
//!   its waiters decode for themselves. Errors are not cached: the next request tries again
//!   (and fails again if the chunk is damaged).
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
use std::hash::Hash;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use lru::LruCache;

pub type Bytes = Arc<Vec<u8>>;

/// Bytes of evicted chunk buffers kept for reuse: eight default 256 KiB chunks, enough for the
/// requests being decoded at one moment on a small machine (a 1 MiB request spans up to 5
/// chunks), and small next to the cache budget (2 MiB outside it, within the RSS allowance).
/// Counted in bytes, not buffers, because `--chunk-size` allows chunks of up to 64 MiB.
pub const MAX_SPARE_BYTES: usize = 2 << 20;

/// One chunk being produced: its owner (a decoding reader, or a [`Claim`] of a running fetch)
/// fills it, everyone else waits on the condvar.
struct Slot<E> {
    state: Mutex<SlotState<E>>,
    done: Condvar,
}

enum SlotState<E> {
    Pending,
    Done(Result<Bytes, E>),
    /// The owner gave up without a result (a claimed run whose fetch failed): waiters produce
    /// the chunk themselves, so a failed read-ahead never becomes a reader's error.
    Abandoned,
}

impl<E: Clone> Slot<E> {
    fn new() -> Arc<Self> {
        Arc::new(Slot {
            state: Mutex::new(SlotState::Pending),
            done: Condvar::new(),
        })
    }

    fn finish(&self, st: SlotState<E>) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = st;
        self.done.notify_all();
    }

    /// Block until the owner is done: `Some(result)`, or `None` when it abandoned the slot.
    fn wait(&self) -> Option<Result<Bytes, E>> {
        let mut g = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            match &*g {
                SlotState::Pending => g = self.done.wait(g).unwrap_or_else(|p| p.into_inner()),
                SlotState::Done(r) => return Some(r.clone()),
                SlotState::Abandoned => return None,
            }
        }
    }
}

/// The cache, keyed by `K`: a chunk id for one archive, or (archive tag, chunk id) when the
/// archives of a mount share one budget (tags from [`ChunkCache::register`]).
pub struct ChunkCache<E, K = u32> {
    inner: Mutex<Inner<E, K>>,
    budget: usize,
    /// Next tag [`ChunkCache::register`] hands out.
    tags: AtomicU32,
}

impl<E, K> std::fmt::Debug for ChunkCache<E, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkCache")
            .field("budget", &self.budget)
            .finish()
    }
}

struct Inner<E, K> {
    lru: LruCache<K, Bytes>,
    bytes: usize,
    inflight: HashMap<K, Arc<Slot<E>>>,
    spare: Vec<Vec<u8>>,
    hits: u64,
    misses: u64,
}

impl<E, K> Inner<E, K> {
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

/// A promise, taken by [`ChunkCache::claim`] when a fetch of several chunks starts, to produce
/// one chunk: readers asking for it meanwhile wait for the fetch instead of reading the same
/// bytes again. [`Claim::fill`] delivers the result; a claim dropped unfilled is abandoned
/// and its waiters produce the chunk themselves (no waiter can hang on a failed fetch).
pub struct Claim<'a, E: Clone, K: Copy + Eq + Hash = u32> {
    cache: &'a ChunkCache<E, K>,
    id: K,
    slot: Option<Arc<Slot<E>>>,
}

impl<E: Clone, K: Copy + Eq + Hash> Claim<'_, E, K> {
    pub fn id(&self) -> K {
        self.id
    }

    /// Deliver the chunk (or its error) to the waiters and, if it decoded, to the cache.
    pub fn fill(mut self, result: Result<Bytes, E>) -> Result<Bytes, E> {
        let slot = self.slot.take().expect("a claim is filled once");
        self.cache.complete(self.id, &slot, result)
    }
}

impl<E: Clone, K: Copy + Eq + Hash> Drop for Claim<'_, E, K> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            let mut g = self.cache.lock();
            if g.inflight
                .get(&self.id)
                .is_some_and(|s| Arc::ptr_eq(s, &slot))
            {
                g.inflight.remove(&self.id);
            }
            drop(g);
            slot.finish(SlotState::Abandoned);
        }
    }
}

impl<E: Clone, K: Copy + Eq + Hash> ChunkCache<E, K> {
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
            tags: AtomicU32::new(0),
        }
    }

    pub fn budget(&self) -> usize {
        self.budget
    }

    /// A tag no earlier call returned (until 2^32 calls wrap it; a mount opens its archives
    /// once): each archive sharing this cache keys its chunks `(tag, id)`, so the chunks of
    /// different archives never meet while they compete for one byte budget.
    pub fn register(&self) -> u32 {
        self.tags.fetch_add(1, Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<E, K>> {
        // A panic while holding the lock cannot leave the LRU inconsistent (all updates are
        // single calls), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Is the chunk cached or being produced right now (no decode, no LRU promotion)?
    pub fn contains(&self, id: K) -> bool {
        let g = self.lock();
        g.lru.contains(&id) || g.inflight.contains_key(&id)
    }

    /// Claim the chunks of `ids` that are neither cached nor being produced, in order; the
    /// others are left to whoever has them. Claims are taken when the fetch starts, not when
    /// it is queued: a waiter then only ever waits for work that is running.
    pub fn claim(&self, ids: &[K]) -> Vec<Claim<'_, E, K>> {
        let mut g = self.lock();
        let mut out = Vec::new();
        for &id in ids {
            if g.lru.contains(&id) || g.inflight.contains_key(&id) {
                continue;
            }
            let slot = Slot::new();
            g.inflight.insert(id, slot.clone());
            out.push(Claim {
                cache: self,
                id,
                slot: Some(slot),
            });
        }
        out
    }

    /// Return the cached chunk, or decode it with `decode` (once, however many callers ask).
    pub fn get_or_decode(
        &self,
        id: K,
        decode: impl FnOnce() -> Result<Bytes, E>,
    ) -> Result<Bytes, E> {
        let mut decode = Some(decode);
        loop {
            let (slot, owner) = {
                let mut g = self.lock();
                if let Some(b) = g.lru.get(&id) {
                    let b = b.clone();
                    g.hits += 1;
                    return Ok(b);
                }
                match g.inflight.get(&id) {
                    Some(s) => (s.clone(), false),
                    None => {
                        g.misses += 1;
                        let s = Slot::new();
                        g.inflight.insert(id, s.clone());
                        (s, true)
                    }
                }
            };
            if owner {
                let decode = decode.take().expect("the decoder runs at most once");
                return self.complete(id, &slot, decode());
            }
            if let Some(r) = slot.wait() {
                return r;
            }
            // Abandoned by a failed fetch: look again (and most likely decode it here).
        }
    }

    /// Hand `result` to the slot's waiters and move a decoded chunk into the LRU.
    fn complete(&self, id: K, slot: &Arc<Slot<E>>, result: Result<Bytes, E>) -> Result<Bytes, E> {
        {
            let mut g = self.lock();
            if g.inflight.get(&id).is_some_and(|s| Arc::ptr_eq(s, slot)) {
                g.inflight.remove(&id);
            }
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
        slot.finish(SlotState::Done(result.clone()));
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
    fn tagged_keys_share_one_budget_without_meeting() {
        let c = ChunkCache::<String, (u32, u32)>::new(300);
        let (a, b) = (c.register(), c.register());
        assert_ne!(a, b);
        c.get_or_decode((a, 1), || chunk(100, 1)).unwrap();
        assert_eq!(c.get_or_decode((b, 1), || chunk(100, 2)).unwrap()[0], 2);
        assert_eq!(c.get_or_decode((a, 1), || panic!("cached")).unwrap()[0], 1);
        // A third chunk of b evicts the least recent over both tags: (b, 1).
        c.get_or_decode((b, 2), || chunk(150, 3)).unwrap();
        assert!(c.contains((a, 1)) && c.contains((b, 2)) && !c.contains((b, 1)));
        assert!(c.stats().bytes <= 300);
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

    #[test]
    fn a_reader_waits_for_a_claimed_chunk_instead_of_decoding_it() {
        let c = Arc::new(ChunkCache::<String>::new(1 << 20));
        c.get_or_decode(1, || chunk(10, 1)).unwrap();
        let claims = c.claim(&[1, 2, 3]);
        // 1 is cached: not claimed again.
        assert_eq!(claims.iter().map(Claim::id).collect::<Vec<_>>(), vec![2, 3]);
        assert!(
            c.claim(&[2, 3]).is_empty(),
            "claimed chunks are not claimed twice"
        );
        let reader = {
            let c = c.clone();
            std::thread::spawn(move || c.get_or_decode(2, || panic!("2 is claimed")).unwrap())
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!reader.is_finished(), "the reader waits for the claim");
        let mut it = claims.into_iter();
        it.next().unwrap().fill(chunk(10, 2)).unwrap();
        assert_eq!(reader.join().unwrap()[0], 2);
        // 3's claim is dropped unfilled: abandoned, so the next reader decodes it itself.
        drop(it);
        assert_eq!(c.get_or_decode(3, || chunk(10, 3)).unwrap()[0], 3);
        assert!(c.contains(2) && c.contains(3));
    }

    #[test]
    fn an_abandoned_claim_wakes_its_waiters_to_decode_themselves() {
        let c = Arc::new(ChunkCache::<String>::new(1 << 20));
        let mut claims = c.claim(&[7]);
        let reader = {
            let c = c.clone();
            std::thread::spawn(move || c.get_or_decode(7, || chunk(5, 7)).unwrap())
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!reader.is_finished());
        claims.clear();
        assert_eq!(reader.join().unwrap()[0], 7);
    }
}

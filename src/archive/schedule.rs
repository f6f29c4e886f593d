//! The read path's decode scheduler, beside the chunk cache: which chunks are decoded where and
//! when. The filesystem model only says what is read (a [`ReadPlan`]) and which range a
//! sequential reader will want next; this module turns that into decode jobs.
//!
//! - **A read over several chunks** ([`Scheduler::read`]): every chunk of the plan after the
//!   first that is neither cached nor being decoded goes to the pool, while the calling thread
//!   decodes the first; whoever comes first decodes a chunk and the others wait on the cache's
//!   single-flight slot, so a queued job that starts late costs nothing. Then the plan is served
//!   by [`Archive::read_planned`], with no second computation of its chunks.
//! - **Read-ahead** ([`Scheduler::read_ahead`]): the chunks of a range beyond a sequential
//!   reader, capped at a quarter of the cache budget so prefetched chunks never evict the ones a
//!   reader is consuming, and at [`MAX_PREFETCH_INFLIGHT`] jobs queued or running over all
//!   archives. Over remote storage adjacent chunks become one range request each
//!   ([`Archive::stored_runs`], [`Archive::fetch_run`]): a round trip per chunk would cap a
//!   stream at chunk size / RTT.
//! - Errors of background jobs are dropped, never cached: the reader's own request decodes
//!   again and reports them.
//!
//! One scheduler (one pool, one in-flight count) serves every archive of a mount.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::ArchiveError;
use super::reader::{Archive, ReadPlan};
use crate::pool::Pool;

/// Read-ahead jobs queued or running at once, over all handles and archives: keeps a burst of
/// readers from queueing unbounded work (each job holds one decoded chunk, or one remote run).
pub const MAX_PREFETCH_INFLIGHT: usize = 64;

/// Decode threads of a mount and the bookkeeping of what they were given.
pub struct Scheduler {
    /// `None` when the pool failed to start: reads still work, one chunk after the other.
    pool: Option<Pool>,
    inflight: Arc<AtomicUsize>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("pool", &self.pool.is_some())
            .finish()
    }
}

impl Scheduler {
    /// A scheduler with `threads` decode threads (0: one per core).
    pub fn new(threads: usize) -> Scheduler {
        let threads = if threads == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        } else {
            threads
        };
        Scheduler {
            pool: Pool::new(threads, "upg-decode").ok(),
            inflight: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Serve `plan` (made by `a`'s [`Archive::plan`]): its chunks after the first are decoded
    /// on the pool while this thread decodes the first, then `f` gets the bytes.
    pub fn read<R>(
        &self,
        a: &Arc<Archive>,
        plan: &ReadPlan,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<R, ArchiveError> {
        if let Some(pool) = &self.pool {
            for s in plan.spans().iter().skip(1) {
                if !a.is_cached(s.chunk) {
                    let (a, id) = (a.clone(), s.chunk);
                    pool.spawn(move || drop(a.chunk(id)));
                }
            }
        }
        a.read_planned(plan, f)
    }

    /// Start decoding `[from, to)` of file `file` in the background (capped at a quarter of
    /// the cache budget from `from`).
    pub fn read_ahead(&self, a: &Arc<Archive>, file: usize, from: u64, to: u64) {
        if self.pool.is_none() {
            return;
        }
        let cap = (a.cache_budget() / 4) as u64;
        let to = to.min(from.saturating_add(cap));
        let Ok(plan) = a.plan(file, from, to.saturating_sub(from)) else {
            return;
        };
        let limit = a.storage().coalesce_limit();
        if limit > 0 {
            let mut ids: Vec<u32> = plan
                .spans()
                .iter()
                .map(|s| s.chunk)
                .filter(|&c| !a.is_cached(c))
                .collect();
            ids.dedup();
            for run in a.stored_runs(&ids, limit) {
                let a = a.clone();
                if !self.spawn_limited(move || drop(a.fetch_run(&run))) {
                    return;
                }
            }
            return;
        }
        for s in plan.spans() {
            if a.is_cached(s.chunk) {
                continue;
            }
            let (a, id) = (a.clone(), s.chunk);
            if !self.spawn_limited(move || drop(a.chunk(id))) {
                return;
            }
        }
    }

    /// Queue one read-ahead job unless [`MAX_PREFETCH_INFLIGHT`] are queued or running already
    /// (then `false`: the caller stops queueing this window).
    fn spawn_limited(&self, job: impl FnOnce() + Send + 'static) -> bool {
        let Some(pool) = &self.pool else {
            return false;
        };
        if self.inflight.fetch_add(1, Ordering::AcqRel) >= MAX_PREFETCH_INFLIGHT {
            self.inflight.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        let inflight = self.inflight.clone();
        pool.spawn(move || {
            job();
            inflight.fetch_sub(1, Ordering::AcqRel);
        });
        true
    }
}

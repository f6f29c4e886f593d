//! A small fixed pool of decode threads that sleep when idle.
//!
//! The mount hands chunk decodes to background threads (read-ahead, and the extra chunks of a
//! read over several chunks). It used a `rayon::ThreadPool` until 2026-12-01; rayon's workers
//! look for work by calling `sched_yield` a few dozen times before they go to sleep, every time
//! their queue runs dry, which is after nearly every job in a mount's bursty load. `perf record`
//! of the daemon during random 4 KiB-1 MiB reads of SmolLM2 on a 2-core machine put 13.6% of its
//! samples under `sched_yield` (the reader process and the decoding threads were runnable on the
//! same two cores, so every yield was a context switch). Measured after the switch, same
//! machine, old and new daemons alternating (7 x 300 random reads per mount, 6 mounts each):
//! daemon CPU 92-105 -> 83-91 ticks (about -10%), read throughput unchanged within the noise
//! (medians 847-980 vs 837-988 MiB/s): the reads wait on decode latency, not on spare CPU, but
//! the CPU saved is left to the process that reads the model. Here an idle worker waits on a
//! `Condvar` (a futex): it costs nothing until a job arrives. A job that panics is caught, so a
//! decoder bug cannot shrink the pool; the caller that waits for that chunk decodes it again
//! itself and gets the error.
//!
//! No work stealing or scoped jobs are needed: jobs are independent `'static` closures (one
//! chunk decode each), and whoever needs the result waits on the cache's single-flight slot.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

type Job = Box<dyn FnOnce() + Send + 'static>;

struct Queue {
    jobs: VecDeque<Job>,
    shutdown: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Jobs run outside the lock, so a poisoned lock only means a panic in push/pop, which
        // leave the queue consistent.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A fixed set of named worker threads running queued jobs in FIFO order.
pub struct Pool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

impl Pool {
    /// Start `threads` workers (at least one) named `{name}-{i}`.
    pub fn new(threads: usize, name: &str) -> std::io::Result<Pool> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                jobs: VecDeque::new(),
                shutdown: false,
            }),
            ready: Condvar::new(),
        });
        let mut pool = Pool {
            shared,
            workers: Vec::new(),
        };
        for i in 0..threads.max(1) {
            let s = pool.shared.clone();
            // On an error the pool is dropped, which stops the workers started so far.
            let h = std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || work(&s))?;
            pool.workers.push(h);
        }
        Ok(pool)
    }

    /// Queue `job`; one idle worker wakes up for it.
    pub fn spawn(&self, job: impl FnOnce() + Send + 'static) {
        self.shared.lock().jobs.push_back(Box::new(job));
        self.shared.ready.notify_one();
    }

    /// Number of worker threads.
    pub fn threads(&self) -> usize {
        self.workers.len()
    }
}

fn work(s: &Shared) {
    loop {
        let job = {
            let mut q = s.lock();
            loop {
                if let Some(j) = q.jobs.pop_front() {
                    break j;
                }
                if q.shutdown {
                    return;
                }
                q = s.ready.wait(q).unwrap_or_else(|p| p.into_inner());
            }
        };
        // A panicking job must not take the worker with it.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
    }
}

impl Drop for Pool {
    /// Runs the jobs already queued, then stops and joins the workers.
    fn drop(&mut self) {
        self.shared.lock().shutdown = true;
        self.shared.ready.notify_all();
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn runs_every_job_and_drains_on_drop() {
        let n = Arc::new(AtomicUsize::new(0));
        let pool = Pool::new(3, "t").unwrap();
        assert_eq!(pool.threads(), 3);
        for _ in 0..1000 {
            let n = n.clone();
            pool.spawn(move || {
                n.fetch_add(1, Ordering::SeqCst);
            });
        }
        drop(pool);
        assert_eq!(n.load(Ordering::SeqCst), 1000);
    }

    #[test]
    fn a_panicking_job_does_not_kill_its_worker() {
        let n = Arc::new(AtomicUsize::new(0));
        let pool = Pool::new(1, "t").unwrap();
        pool.spawn(|| panic!("job panics on purpose"));
        let m = n.clone();
        pool.spawn(move || {
            m.fetch_add(1, Ordering::SeqCst);
        });
        drop(pool);
        assert_eq!(n.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn jobs_run_in_parallel() {
        // Two jobs that each wait for the other can only finish on two workers at once.
        let pool = Pool::new(2, "t").unwrap();
        let b = Arc::new(std::sync::Barrier::new(3));
        for _ in 0..2 {
            let b = b.clone();
            pool.spawn(move || {
                b.wait();
            });
        }
        b.wait();
    }
}

//! Open file handles and the sequential detector of each: a small state machine fed with every
//! read of a handle that answers which range, if any, to decode ahead. Pure (no I/O, no
//! threads): the vfs locks the table, the archive layer's scheduler does the decoding.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// A read counts as sequential if it starts within this distance of where the handle's previous
/// reads ended. Not exact equality: with several FUSE worker threads the kernel's readahead
/// requests for one file arrive slightly out of order.
pub const SEQ_SLACK: u64 = 1 << 20;

/// Sequential bytes a handle must have read before read-ahead starts: 1 MiB is the largest
/// single request the kernel sends (`max_pages` 256), so a random read of up to 1 MiB -- one
/// request, or several consecutive ones with a smaller kernel readahead -- never triggers
/// speculative decoding; a streaming reader loses read-ahead only for its first MiB, which the
/// kernel's own readahead covers.
pub const PREFETCH_START: u64 = 1 << 20;

/// Where one handle's reads have been, as far as read-ahead cares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeqDetector {
    /// End of the furthest read so far.
    next: u64,
    /// Consecutive reads that started near `next`.
    streak: u32,
    /// Read-ahead has been requested up to this file offset.
    prefetched_to: u64,
    /// Where the current sequential run started.
    run_start: u64,
}

impl SeqDetector {
    /// Feed a read of `[offset, end)`; returns the range to decode ahead, if any.
    ///
    /// Read-ahead starts once a sequential run covers [`PREFETCH_START`] (or the whole window,
    /// if smaller) and then grows with the run, like the kernel's own readahead: the window is
    /// min(`readahead`, bytes read in this run). So a random read, which the kernel splits into
    /// several consecutive requests, decodes nothing beyond what it asked for.
    pub fn advance(&mut self, offset: u64, end: u64, readahead: u64) -> Option<(u64, u64)> {
        let near = offset <= self.next.saturating_add(SEQ_SLACK)
            && offset.saturating_add(SEQ_SLACK) >= self.next;
        if near && (self.streak > 0 || offset == self.next) {
            self.streak = self.streak.saturating_add(1);
        } else {
            self.streak = 0;
            self.prefetched_to = 0;
            self.run_start = offset;
        }
        self.next = self.next.max(end);
        if !near {
            self.next = end;
        }
        let run = self.next.saturating_sub(self.run_start);
        if self.streak < 1 || run < readahead.min(PREFETCH_START) {
            return None;
        }
        let window = readahead.min(run);
        let from = self.prefetched_to.max(end);
        let to = end.saturating_add(window);
        // Only top up when at least half the window is consumed: fewer, larger batches.
        if from >= to || to - from < window / 2 {
            return None;
        }
        self.prefetched_to = to;
        Some((from, to))
    }
}

/// The open handles of a mount: handle number -> (inode, detector).
#[derive(Debug)]
pub struct Handles {
    map: Mutex<HashMap<u64, (u64, SeqDetector)>>,
    next_fh: AtomicU64,
}

impl Default for Handles {
    fn default() -> Self {
        Handles {
            map: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
        }
    }
}

impl Handles {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (u64, SeqDetector)>> {
        // Handle state is advisory (read-ahead hints); a poisoned lock is still usable.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new handle on `ino`.
    pub fn open(&self, ino: u64) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(fh, (ino, SeqDetector::default()));
        fh
    }

    /// Forget `fh`; false if it was not open.
    pub fn release(&self, fh: u64) -> bool {
        self.lock().remove(&fh).is_some()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Feed a read of `[offset, end)` of `ino` through `fh` to its detector (see
    /// [`SeqDetector::advance`]). An unknown handle, or one of another inode, gets no read-ahead.
    pub fn advance(
        &self,
        fh: u64,
        ino: u64,
        offset: u64,
        end: u64,
        readahead: u64,
    ) -> Option<(u64, u64)> {
        match self.lock().get_mut(&fh) {
            Some((i, d)) if *i == ino => d.advance(offset, end, readahead),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIB: u64 = 1 << 10;
    const MIB: u64 = 1 << 20;

    /// Feed reads of `step` bytes from `start` on; the read-ahead ranges returned.
    fn stream(d: &mut SeqDetector, start: u64, step: u64, n: u64, ra: u64) -> Vec<(u64, u64)> {
        (0..n)
            .filter_map(|i| d.advance(start + i * step, start + (i + 1) * step, ra))
            .collect()
    }

    #[test]
    fn a_stream_gets_read_ahead_after_its_first_mib_and_grows_to_the_window() {
        let mut d = SeqDetector::default();
        let ra = 4 * MIB;
        let got = stream(&mut d, 0, 128 * KIB, 64, ra);
        // Nothing before the run covers PREFETCH_START (8 reads of 128 KiB).
        assert_eq!(got[0], (MIB, 2 * MIB), "first window = the run so far");
        // Every range starts where the previous one ended: nothing requested twice.
        for w in got.windows(2) {
            assert_eq!(w[0].1, w[1].0);
        }
        // The window grows with the run up to `ra` beyond the read, topped up in batches.
        let last = *got.last().unwrap();
        assert!(got.iter().all(|&(_, to)| to <= 8 * MIB + ra));
        assert!(last.1 >= 8 * MIB + ra / 2, "{last:?}");
        assert!(got.len() < 64 / 2, "{} batches for 64 reads", got.len());
    }

    #[test]
    fn random_reads_never_read_ahead() {
        let mut d = SeqDetector::default();
        // 1 MiB reads 10 MiB apart, and a random read split into consecutive requests shorter
        // than PREFETCH_START in all. (Not from offset 0: a fresh handle's first read there
        // continues its position, so a 1 MiB read at 0 is a run of 1 MiB, see the next test.)
        for i in 1..20u64 {
            assert_eq!(d.advance(i * 10 * MIB, i * 10 * MIB + MIB, 64 * MIB), None);
        }
        let at = 500 * MIB;
        for i in 0..7u64 {
            let o = at + i * 128 * KIB;
            assert_eq!(d.advance(o, o + 128 * KIB, 64 * MIB), None, "read {i}");
        }
    }

    #[test]
    fn a_first_read_of_a_mib_at_offset_zero_is_already_a_stream() {
        let mut d = SeqDetector::default();
        assert_eq!(d.advance(0, MIB, 64 * MIB), Some((MIB, 2 * MIB)));
    }

    #[test]
    fn out_of_order_requests_within_the_slack_stay_one_run() {
        let mut d = SeqDetector::default();
        let ra = 2 * MIB;
        assert!(stream(&mut d, 0, 256 * KIB, 3, ra).is_empty());
        // The kernel's requests arrive slightly out of order: 1.25 MiB before 0.75 MiB.
        let a = d.advance(1280 * KIB, 1536 * KIB, ra);
        assert_eq!(a, Some((1536 * KIB, 3072 * KIB)), "the run continues");
        let b = d.advance(768 * KIB, 1280 * KIB, ra);
        assert_eq!(
            b, None,
            "a late request inside the run asks for nothing more"
        );
        // A jump far away starts a new run: no read-ahead until it covers 1 MiB again.
        assert_eq!(d.advance(100 * MIB, 100 * MIB + 256 * KIB, ra), None);
        assert_eq!(
            d.advance(100 * MIB + 256 * KIB, 100 * MIB + 512 * KIB, ra),
            None
        );
    }

    #[test]
    fn a_small_window_starts_once_the_run_covers_it() {
        let mut d = SeqDetector::default();
        let ra = 64 * KIB;
        assert_eq!(
            d.advance(0, 32 * KIB, ra),
            None,
            "the run is shorter than the window"
        );
        assert_eq!(
            d.advance(32 * KIB, 64 * KIB, ra),
            Some((64 * KIB, 128 * KIB))
        );
        assert_eq!(
            d.advance(64 * KIB, 80 * KIB, ra),
            None,
            "less than half consumed"
        );
        assert_eq!(
            d.advance(80 * KIB, 96 * KIB, ra),
            Some((128 * KIB, 160 * KIB))
        );
    }

    #[test]
    fn a_read_that_does_not_start_at_the_handles_position_needs_a_second_one() {
        let mut d = SeqDetector::default();
        // Offset 4 KiB is near 0 but not equal: no streak, the run starts here.
        assert_eq!(d.advance(4 * KIB, 2 * MIB, MIB), None);
        assert_eq!(d.advance(2 * MIB, 3 * MIB, MIB), Some((3 * MIB, 4 * MIB)));
    }

    #[test]
    fn handles_are_per_inode_and_released_once() {
        let h = Handles::default();
        let a = h.open(7);
        let b = h.open(7);
        assert_ne!(a, b);
        assert_eq!(h.len(), 2);
        assert_eq!(h.advance(a, 7, 0, 32 * KIB, 64 * KIB), None);
        assert_eq!(
            h.advance(a, 7, 32 * KIB, 64 * KIB, 64 * KIB),
            Some((64 * KIB, 128 * KIB))
        );
        // Handle b's detector is its own: its first read starts no read-ahead.
        assert_eq!(h.advance(b, 7, 64 * KIB, 96 * KIB, 64 * KIB), None);
        // Another inode through the same handle, and an unknown handle: no read-ahead.
        assert_eq!(h.advance(a, 8, 128 * KIB, 192 * KIB, 64 * KIB), None);
        assert_eq!(h.advance(99, 7, 128 * KIB, 192 * KIB, 64 * KIB), None);
        assert!(h.release(a));
        assert!(!h.release(a));
        assert_eq!(h.len(), 1);
    }
}

//! The mount daemon's log writer: logging never blocks or fails a FUSE request.
//!
//! A FUSE worker that logs (a damaged chunk's `EIO`) only formats the line and offers it to a
//! bounded queue ([`QUEUE_LINES`]) with `try_send`; one dedicated thread writes the queue to
//! the log file or stderr. A full queue (stderr is a pipe nobody reads: a pager, Ctrl-S) drops
//! the line; a failed write (EPIPE after `upg-mount -f ... | head`, a full disk) loses it. Both
//! are counted, never reported by writing elsewhere (the report would fail the same way) and
//! never by panicking; the counts appear in `upg-mount --status` and in the daemon's last line.
//!
//! Hand-written (~80 lines) rather than `tracing-appender`'s non-blocking writer: that one does
//! not count lines lost to write errors, and its guard prints with `println!` when the queue is
//! stuck at exit, which panics when stdout is the same closed pipe.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

/// Lines the queue holds before new ones are dropped: 4096 lines of ~250 bytes is about 1 MiB
/// of memory at most, and covers a burst of errors while a slow disk or terminal catches up.
pub const QUEUE_LINES: usize = 4096;

/// Counters shared by the writers and the logger thread.
#[derive(Debug, Default)]
struct Counts {
    /// Lines in the queue or being written.
    pending: AtomicU64,
    /// Lines dropped because the queue was full.
    dropped: AtomicU64,
    /// Lines the logger thread could not write.
    failed: AtomicU64,
    /// Lines written.
    written: AtomicU64,
}

/// Lines lost so far (see [`DaemonLog::lost`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Lost {
    /// Dropped because the queue was full (the output did not keep up, or was stalled).
    pub queue_full: u64,
    /// Written and failed (closed pipe, full disk).
    pub write_failed: u64,
}

impl Lost {
    pub fn total(&self) -> u64 {
        self.queue_full.saturating_add(self.write_failed)
    }
}

/// The log: a `tracing_subscriber` writer factory (`MakeWriter`) and the handle to its thread.
#[derive(Clone)]
pub struct DaemonLog {
    tx: SyncSender<Vec<u8>>,
    counts: Arc<Counts>,
}

impl DaemonLog {
    /// Start the logger thread writing to `out`.
    pub fn start(out: Box<dyn Write + Send>) -> std::io::Result<DaemonLog> {
        let (tx, rx) = sync_channel::<Vec<u8>>(QUEUE_LINES);
        let counts = Arc::new(Counts::default());
        let c = counts.clone();
        std::thread::Builder::new()
            .name("upg-log".into())
            .spawn(move || write_lines(rx, out, &c))?;
        Ok(DaemonLog { tx, counts })
    }

    /// Lines lost so far.
    pub fn lost(&self) -> Lost {
        Lost {
            queue_full: self.counts.dropped.load(Ordering::Relaxed),
            write_failed: self.counts.failed.load(Ordering::Relaxed),
        }
    }

    /// Lines written so far.
    pub fn written(&self) -> u64 {
        self.counts.written.load(Ordering::Relaxed)
    }

    /// Wait until every queued line is written, at most `limit` (a stalled output never drains:
    /// exit must not wait for it). Returns whether the queue drained.
    pub fn flush(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while self.counts.pending.load(Ordering::Acquire) > 0 {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }

    /// Offer one formatted line to the queue; never blocks.
    fn offer(&self, line: &[u8]) {
        self.counts.pending.fetch_add(1, Ordering::AcqRel);
        match self.tx.try_send(line.to_vec()) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.counts.pending.fetch_sub(1, Ordering::AcqRel);
                self.counts.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn write_lines(rx: Receiver<Vec<u8>>, mut out: Box<dyn Write + Send>, c: &Counts) {
    for line in rx {
        let ok = out.write_all(&line).and_then(|()| out.flush()).is_ok();
        let n = if ok { &c.written } else { &c.failed };
        n.fetch_add(1, Ordering::Relaxed);
        c.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One event's writer: `tracing_subscriber::fmt` formats an event into a buffer and hands it
/// over with one `write_all`, so each `write` here is one whole line.
pub struct LineWriter(DaemonLog);

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.offer(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for DaemonLog {
    type Writer = LineWriter;
    fn make_writer(&'a self) -> LineWriter {
        LineWriter(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that fails every write, or blocks until released.
    struct Stuck(std::sync::mpsc::Receiver<()>);
    impl Write for Stuck {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            let _ = self.0.recv();
            Err(std::io::Error::from_raw_os_error(libc::EPIPE))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stalled_output_drops_and_counts_and_never_blocks() {
        let (release, rx) = std::sync::mpsc::channel();
        let log = DaemonLog::start(Box::new(Stuck(rx))).unwrap();
        let t0 = Instant::now();
        let n = QUEUE_LINES as u64 * 3;
        for _ in 0..n {
            log.offer(b"line\n");
        }
        assert!(t0.elapsed() < Duration::from_secs(2), "offering blocked");
        // One line is held by the stuck write, QUEUE_LINES wait in the queue.
        let lost = log.lost();
        assert!(lost.queue_full >= n - QUEUE_LINES as u64 - 1, "{lost:?}");
        assert!(!log.flush(Duration::from_millis(50)));
        drop(release); // every write now fails at once
        assert!(log.flush(Duration::from_secs(5)));
        let lost = log.lost();
        assert_eq!(lost.total(), n, "{lost:?}");
        assert_eq!(log.written(), 0);
    }

    #[test]
    fn lines_reach_a_working_output() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        let f = std::fs::File::create(&p).unwrap();
        let log = DaemonLog::start(Box::new(f)).unwrap();
        for i in 0..100 {
            log.offer(format!("line {i}\n").as_bytes());
        }
        assert!(log.flush(Duration::from_secs(5)));
        assert_eq!(log.lost(), Lost::default());
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(text.lines().count(), 100);
        assert_eq!(text.lines().last(), Some("line 99"));
    }
}

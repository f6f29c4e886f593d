//! Where a pack's bytes go: the [`ArchiveSink`] seam between the writer (which produces the
//! archive in order, never reading it back) and its destination: a local file through a hidden
//! temporary that is renamed into place only when complete, or a multipart upload completed
//! only at the end. Dropping a sink unfinished discards what it holds.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Bytes of output between two write-back kicks (see [`start_writeback`]): large enough that
/// the kick is a negligible syscall per 32 chunks, small enough that the final `fsync` finds
/// little left to write (measured: fsync of a 71 MB archive took ~50 ms of a 0.3 s pack).
const WRITEBACK_STEP: u64 = 8 << 20;

/// Ask the kernel to start writing the file's dirty pages to disk now, without waiting, so the
/// disk works while we encode instead of during the final `fsync`. A hint only: errors are
/// ignored here (the final `fsync` reports real ones), and other systems skip it.
fn start_writeback(f: &File) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: sync_file_range only reads its integer arguments; the fd is owned by `f`
        // and open for the duration of the call. Range 0..0 means the whole file.
        let _ = unsafe { libc::sync_file_range(f.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = f;
}

/// Removes the temporary output unless the pack completed.
struct TempGuard {
    path: PathBuf,
    done: bool,
}
impl Drop for TempGuard {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Where [`super::pack_to`] writes an archive: bytes in order, never read back, made visible only
/// by [`ArchiveSink::finish`]. A sink dropped unfinished discards what it was given (a local
/// temporary is removed, a multipart upload aborted), so a failed pack never leaves a
/// complete-looking archive.
pub trait ArchiveSink {
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()>;
    /// Make the archive visible under its name (rename into place, complete the upload).
    fn finish(self: Box<Self>) -> std::io::Result<()>;
}

/// The local-file sink of [`super::pack`]: a hidden temporary beside the output (writeback started
/// every [`WRITEBACK_STEP`]), synced and renamed into place at the end.
pub(super) struct FileSink {
    w: BufWriter<File>,
    tmp: PathBuf,
    output: PathBuf,
    written: u64,
    next_writeback: u64,
    guard: TempGuard,
    _registered: Box<dyn std::any::Any>,
}

impl FileSink {
    pub(super) fn create(
        output: &Path,
        hooks: &dyn crate::archive::Observer,
    ) -> std::io::Result<FileSink> {
        crate::archive::remove_stale_temps(output.parent().unwrap_or(Path::new(".")), hooks);
        let tmp = output.with_file_name(format!(
            ".{}.upg-tmp-{}",
            output
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("archive"),
            std::process::id()
        ));
        let guard = TempGuard {
            path: tmp.clone(),
            done: false,
        };
        // The caller may remove it if the process is interrupted (the `upg` binary's signal thread).
        let registered = hooks.temp_created(&tmp);
        let f = File::create(&tmp)?;
        // Small buffer: encoded chunks (tens to hundreds of KiB) are larger than it and go to
        // the file directly (BufWriter bypasses its buffer for them), saving a copy; small
        // records and the index are still batched.
        Ok(FileSink {
            w: BufWriter::with_capacity(64 << 10, f),
            tmp,
            output: output.to_path_buf(),
            written: 0,
            next_writeback: WRITEBACK_STEP,
            guard,
            _registered: registered,
        })
    }
}

impl ArchiveSink for FileSink {
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.w.write_all(buf)?;
        self.written += buf.len() as u64;
        if self.written >= self.next_writeback {
            start_writeback(self.w.get_ref());
            self.next_writeback = self.written.saturating_add(WRITEBACK_STEP);
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> std::io::Result<()> {
        self.w.flush()?;
        self.w.get_ref().sync_all()?;
        std::fs::rename(&self.tmp, &self.output)?;
        self.guard.done = true;
        Ok(())
    }
}

/// `upg pack -o s3://`: the archive goes straight into a multipart upload, completed by
/// `finish` (aborted if dropped before).
impl ArchiveSink for crate::storage::remote::MultipartWriter {
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        std::io::Write::write_all(self, buf)
    }
    fn finish(self: Box<Self>) -> std::io::Result<()> {
        crate::storage::remote::MultipartWriter::finish(*self)
            .map_err(|e| std::io::Error::new(e.kind, e.to_string()))
    }
}

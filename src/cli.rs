//! Command-line front end: one file per subcommand; binaries in src/bin only parse arguments and
//! dispatch here. Every command returns an exit code: 0 success, 1 verification failure, 2 error.

pub mod bench;
pub mod cat;
pub mod daemon_log;
pub mod demo;
pub mod inspect;
pub mod ls;
pub mod mount;
pub mod pack;
pub mod remote;
pub mod unpack;
pub mod verify;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::archive::ArchiveError;
use crate::archive::verify::UnpackError;
use crate::archive::writer::PackError;

/// Why a `upg` command could not do its work. Each variant keeps the layer's own error (so a
/// caller can match on it) and [`CliError::exit_code`] maps every variant to the exit code, in one
/// exhaustive match. A verification that ran and found damage is not an error: the command
/// returns exit code 1 as its result.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// `pack` failed (input, options, output).
    #[error(transparent)]
    Pack(#[from] PackError),
    /// `unpack` failed before or while writing (not a damaged file: those are reported, exit 1).
    #[error(transparent)]
    Unpack(#[from] UnpackError),
    /// The archive could not be opened or read.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// `inspect` failed.
    #[error(transparent)]
    Inspect(#[from] inspect::InspectError),
    /// Writing the output (stdout, a JSON report) failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A JSON report could not be serialised.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// A stored file could not be streamed out (damage or a failed write), named with its offset.
    #[error("{0}")]
    Read(String),
    /// Arguments that parse but do not make sense together, or a name not in the archive.
    #[error("{0}")]
    Usage(String),
    /// A remote archive (s3://, http(s)://) could not be reached, read or uploaded.
    #[error("{0}")]
    Remote(String),
}

impl CliError {
    /// The process exit code for this error. Exhaustive on purpose: a new variant forces a
    /// decision.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Pack(_)
            | CliError::Unpack(_)
            | CliError::Archive(_)
            | CliError::Inspect(_)
            | CliError::Io(_)
            | CliError::Json(_)
            | CliError::Read(_)
            | CliError::Usage(_)
            | CliError::Remote(_) => 2,
        }
    }
}

/// Files this many times larger than their archive are reported (`inspect`, `verify`): lossless
/// coding of real weights gives about 1.5x and zstd of text about 10x; beyond 1000x the archive
/// is mostly references to a few repeated or constant chunks, a "de-duplication bomb" if it was
/// not made on purpose.
pub const ABSURD_EXPANSION: u64 = 1000;

/// The line saying that `logical` bytes of files come from an archive of `stored` bytes, when
/// that is more than [`ABSURD_EXPANSION`] times as much.
pub fn expansion_note(logical: u64, stored: u64) -> Option<String> {
    (logical / stored.max(1) > ABSURD_EXPANSION).then(|| {
        format!(
            "the files hold {} ({logical} bytes) from an archive of {} ({}x, over {ABSURD_EXPANSION}x: \
             de-duplicated or constant chunks); unpacking needs that much free space and \
             verifying decodes all of it",
            human(logical),
            human(stored),
            logical / stored.max(1)
        )
    })
}

impl From<String> for CliError {
    fn from(s: String) -> Self {
        CliError::Usage(s)
    }
}

/// The `upg` binary's [`crate::archive::Observer`]: byte progress bars on a terminal's stderr
/// (when `show`), and temporaries registered in [`crate::cleanup`] so the signal thread removes
/// them on SIGINT/SIGTERM/SIGHUP.
pub struct Terminal {
    pub show: bool,
}

impl Terminal {
    /// As options' `hooks` field.
    pub fn hooks(show: bool) -> crate::archive::Hooks {
        crate::archive::Hooks(std::sync::Arc::new(Terminal { show }))
    }
}

impl crate::archive::Observer for Terminal {
    fn start(&self, what: &'static str, total: u64) -> Box<dyn crate::archive::Progress> {
        Box::new(Bar(progress_bar(self.show, total, what)))
    }
    fn temp_created(&self, path: &std::path::Path) -> Box<dyn std::any::Any> {
        Box::new(crate::cleanup::register(path))
    }
    fn stale_removed(&self, path: &std::path::Path, pid: u32) {
        // Said even with --quiet: something was deleted.
        eprintln!(
            "upg: removed {}, a temporary output left by process {pid}, which no longer exists",
            crate::text::escaped(&path.display().to_string())
        );
    }
}

/// A bar that clears itself when the work ends.
struct Bar(ProgressBar);

impl crate::archive::Progress for Bar {
    fn inc(&self, n: u64) {
        bar_inc(&self.0, n);
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

/// A byte progress bar on stderr, hidden when `show` is false or stderr is not a terminal.
pub fn progress_bar(show: bool, total: u64, what: &str) -> ProgressBar {
    use std::io::IsTerminal;
    if !show || !std::io::stderr().is_terminal() {
        return ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden());
    }
    let pb = ProgressBar::new(total);
    pb.set_style(bar_style(false));
    pb.set_message(what.to_string());
    pb
}

/// Before the first output the bar shows no rate or ETA (there is none to show); after it, both.
fn bar_style(counting: bool) -> ProgressStyle {
    let t = if counting {
        "{msg:>9} [{bar:40}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}"
    } else {
        "{msg:>9} [{bar:40}] {bytes}/{total_bytes} starting ({elapsed})"
    };
    ProgressStyle::with_template(t)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

/// Advance `pb` by `n` bytes of output. The first output starts the clock of the rate and the
/// ETA: planning and start-up before it (lossy scales over whole tensors, the first parallel
/// decode step) would otherwise make both meaningless ("eta 3d" for a 6 s job).
pub fn bar_inc(pb: &ProgressBar, n: u64) {
    if pb.position() == 0 && n > 0 {
        pb.reset_elapsed();
        pb.reset_eta();
        pb.set_style(bar_style(true));
    }
    pb.inc(n);
}

/// "1 file", "2 files": a count with its noun, plural when it is not one (`noun` takes an `s`).
pub fn count(n: impl Into<u64>, noun: &str) -> String {
    let n = n.into();
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// Human-readable byte count (binary units).
pub fn human(n: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < U.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {}", U[i])
    }
}

/// "1.52x, 34.1% saved" for `bytes_in` stored as `bytes_out` ("0.014x, larger by 6.90 KiB"
/// when the output is the larger).
pub fn ratio(bytes_in: u64, bytes_out: u64) -> String {
    if bytes_in == 0 {
        return "-".into();
    }
    let r = bytes_in as f64 / bytes_out.max(1) as f64;
    if bytes_out > bytes_in {
        // Tiny inputs: a percentage "saved" would read -7150.00%.
        return format!("{r:.3}x, larger by {}", human(bytes_out - bytes_in));
    }
    let saved = 100.0 * (1.0 - bytes_out as f64 / bytes_in as f64);
    format!("{r:.3}x, {saved:.2}% saved")
}

/// The pack's notices and warnings, on stderr: they are not part of the table (and survive
/// `> file` and `--json`).
pub fn print_pack_notes(s: &crate::archive::writer::PackSummary) {
    for n in &s.notices {
        eprintln!("note: {}", crate::text::escaped(n));
    }
    for w in &s.warnings {
        eprintln!("warning: {}", crate::text::escaped(w));
    }
}

/// Print the pack summary table; `all_tensors`: every lossy tensor's row, not only the worst.
pub fn print_pack_summary(
    s: &crate::archive::writer::PackSummary,
    output: &std::path::Path,
    all_tensors: bool,
) {
    println!(
        "packed {}, {}, {} into {}",
        count(s.files as u64, "file"),
        count(s.tensors, "tensor"),
        count(s.params, "parameter"),
        output.display()
    );
    println!(
        "  {:<12} {:>8} {:>12} {:>12}  ratio",
        "class", "tensors", "bytes in", "stored"
    );
    for (class, c) in &s.per_class {
        println!(
            "  {:<12} {:>8} {:>12} {:>12}  {}",
            class,
            c.tensors,
            human(c.bytes_in),
            human(c.bytes_out),
            ratio(c.bytes_in, c.bytes_out)
        );
    }
    println!(
        "  {:<12} {:>8} {:>12} {:>12}  {}  (archive file, index included)",
        "total",
        s.tensors,
        human(s.bytes_in),
        human(s.bytes_out),
        ratio(s.bytes_in, s.bytes_out)
    );
    if s.dedup_chunks > 0 {
        println!(
            "  de-duplicated: {}, {} stored once",
            count(s.dedup_chunks, "chunk"),
            human(s.dedup_bytes)
        );
    }
    print_pack_notes(s);
    if let Some(t) = &s.lossy_total {
        print_quality(&s.lossy, t, all_tensors);
    }
    if let Some(b) = &s.bits_budget {
        let off = b.achieved - b.target;
        println!(
            "  --bits {}: archive {} bytes x 8 / {} weights = {:.4} bits/weight ({:+.4}; predicted {:.4}){}",
            b.target,
            s.bytes_out,
            b.weights,
            b.achieved,
            off,
            b.predicted,
            if off.abs() <= 0.05 {
                ""
            } else {
                "  OFF BY MORE THAN 0.05"
            }
        );
    }
    let gib = s.bytes_in as f64 / (1u64 << 30) as f64;
    println!(
        "  {:.2} s, {:.3} GiB/s with {} threads",
        s.seconds,
        gib / s.seconds.max(1e-9),
        s.threads
    );
}

/// Lossy tensors listed by default: the worst few by SNR. A 7B model has hundreds of quantized
/// tensors; the whole-model row and the worst ones are what a reader acts on.
pub const WORST_TENSORS: usize = 5;

/// Whole-model error figures of a lossy archive and the tensors with the lowest SNR (every tensor
/// with `all`), for `pack` and `verify --against`.
pub fn print_quality(
    rows: &[crate::archive::writer::TensorQuality],
    total: &crate::archive::writer::TensorQuality,
    all: bool,
) {
    let mut shown: Vec<&crate::archive::writer::TensorQuality> = rows.iter().collect();
    let what = if all || rows.len() <= WORST_TENSORS {
        format!("lossy tensors ({})", rows.len())
    } else {
        shown.sort_by(|a, b| a.snr_db.total_cmp(&b.snr_db));
        shown.truncate(WORST_TENSORS);
        format!(
            "lossy tensors: the {WORST_TENSORS} with the lowest SNR of {} (--tensors lists all)",
            rows.len()
        )
    };
    println!("  {what}: bits/weight, ratio vs input, SNR, relative RMS error, max abs error");
    println!(
        "  {:<56} {:<12} {:>7} {:>7} {:>8} {:>9} {:>10}",
        "tensor", "preset", "bits/w", "ratio", "SNR dB", "rel RMS", "max err"
    );
    for r in shown.into_iter().chain(std::iter::once(total)) {
        println!(
            "  {:<56} {:<12} {:>7.3} {:>7.2} {:>8.2} {:>9.5} {:>10.3e}",
            crate::text::escaped(&r.name),
            crate::text::escaped(&r.preset),
            r.bits_per_weight,
            r.bytes_in as f64 / r.stored.max(1) as f64,
            r.snr_db,
            r.rel_rms,
            r.max_abs_err
        );
    }
}

//! `upg bench`: decode throughput of an archive per thread count (every chunk decoded and
//! checked, no cache), reported as the median of several runs.

use std::path::PathBuf;
use std::time::Instant;

use rayon::prelude::*;

use super::CliError;
use crate::archive::Archive;

#[derive(Debug, serde::Serialize)]
pub struct BenchRow {
    pub threads: usize,
    pub median_gib_s: f64,
    pub runs: Vec<f64>,
}

/// Decode all chunks `runs` times with each thread count; returns GiB/s of decoded output.
pub fn bench(a: &Archive, thread_counts: &[usize], runs: usize) -> Result<Vec<BenchRow>, String> {
    let ids: Vec<u32> = (0..a.chunk_count()).collect();
    let mut bytes = 0u64;
    for rec in a.chunk_records() {
        bytes += u64::from(rec.map_err(|e| e.to_string())?.decoded_len);
    }
    // Warm the page cache with the stored bytes so the first run does not measure the disk.
    ids.par_iter()
        .try_for_each(|&id| a.decode_chunk_uncached(id).map(|_| ()))
        .map_err(|e| e.to_string())?;
    let mut rows = Vec::new();
    for &t in thread_counts {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build()
            .map_err(|e| e.to_string())?;
        let mut v = Vec::new();
        for _ in 0..runs.max(1) {
            let t0 = Instant::now();
            pool.install(|| {
                ids.par_iter()
                    .try_for_each(|&id| a.decode_chunk_uncached(id).map(|_| ()))
            })
            .map_err(|e| e.to_string())?;
            v.push(bytes as f64 / (1u64 << 30) as f64 / t0.elapsed().as_secs_f64());
        }
        let mut s = v.clone();
        s.sort_by(|a, b| a.total_cmp(b));
        rows.push(BenchRow {
            threads: t,
            median_gib_s: s[s.len() / 2],
            runs: v,
        });
    }
    Ok(rows)
}

/// A count that must be at least 1 (`--threads 0` or `--runs 0` would print figures of nothing).
fn at_least_one(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

// Arguments of `upg bench`. No doc comment on the struct: the subcommand's about is the
// doc comment of the binary's `Cmd::Bench`.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// The .upg archive to decode.
    pub archive: PathBuf,
    /// Thread counts to measure (default: 1, 2, 4, ... up to the core count).
    #[arg(long, value_delimiter = ',', value_parser = at_least_one)]
    pub threads: Vec<usize>,
    /// Decodes of the whole archive per thread count; the median is reported.
    #[arg(long, default_value_t = 5, value_parser = at_least_one)]
    pub runs: usize,
    /// Print the measurements as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub remote: super::remote::RemoteArgs,
}

/// `upg bench`: decode throughput per thread count.
pub fn run(args: BenchArgs) -> Result<u8, CliError> {
    let BenchArgs {
        archive,
        threads,
        runs,
        json,
        remote,
    } = args;
    let a = super::remote::open_archive(&archive, &remote, 0)?;
    let threads = if threads.is_empty() {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        std::iter::successors(Some(1usize), |t| (t * 2 <= n).then_some(t * 2))
            .chain((!n.is_power_of_two()).then_some(n))
            .collect()
    } else {
        threads
    };
    let rows = super::bench::bench(&a, &threads, runs)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        let bytes: u64 = a.files().iter().map(|f| f.size).sum();
        println!(
            "{}: {} decoded, {}",
            archive.display(),
            super::human(bytes),
            super::count(u64::from(a.chunk_count()), "chunk")
        );
        for r in rows {
            let of = match r.runs.len() {
                1 => "1 run".to_string(),
                n => format!("median of {n} runs"),
            };
            println!(
                "  {:>3} {}: {:.3} GiB/s ({of})",
                r.threads,
                if r.threads == 1 { "thread " } else { "threads" },
                r.median_gib_s,
            );
        }
        let list: Vec<String> = threads.iter().map(|t| t.to_string()).collect();
        println!(
            "  rerun: upg bench {} --threads {} --runs {runs}",
            archive.display(),
            list.join(",")
        );
    }
    Ok(0)
}

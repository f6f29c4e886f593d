//! `upg bench`: decode throughput of an archive per thread count (every chunk decoded and
//! checked, no cache), reported as the median of several runs.

use std::time::Instant;

use rayon::prelude::*;

use crate::archive::Archive;

#[derive(Debug, serde::Serialize)]
pub struct BenchRow {
    pub threads: usize,
    pub median_gib_s: f64,
    pub runs: Vec<f64>,
}

/// Decode all chunks `runs` times with each thread count; returns GiB/s of decoded output.
pub fn bench(a: &Archive, thread_counts: &[usize], runs: usize) -> Result<Vec<BenchRow>, String> {
    let ids: Vec<u32> = (0..a.chunks().len() as u32).collect();
    let bytes: u64 = a.chunks().iter().map(|c| u64::from(c.decoded_len)).sum();
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

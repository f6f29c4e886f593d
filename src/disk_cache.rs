//! Persistent local cache of *stored* (compressed) chunks for remote archives
//! (`upg-mount --cache-dir DIR --cache-dir-size SIZE`): a second mount, or the same one after a
//! restart, reads chunks it has fetched before from local disk instead of the network.
//!
//! - **Layout:** `DIR/<namespace>/<chunk id>`, one file per chunk holding exactly its stored
//!   bytes. The namespace is a hash of the archive's identity (its URL, length and index
//!   hash), so an archive replaced under the same name gets a new namespace, and one archive can
//!   never place bytes under another's: a shared cache directory cannot be used by a hostile
//!   archive to poison the chunks of a trusted one (xxh3 is not collision resistant, so
//!   content-addressed names would allow that).
//! - **Validated on every use:** an entry is served only if its length and xxh3 equal the
//!   chunk record's (the same check as bytes from the archive); one that fails is deleted and
//!   the chunk is fetched again. A damaged or truncated cache costs a refetch, never an error
//!   and never wrong bytes.
//! - **Crash safety:** an entry is written to a temporary name in its namespace and renamed into
//!   place, so a name holds either nothing or a complete write; after a crash (or a power loss
//!   that loses unflushed data) the hash check catches what the rename could not. No fsync:
//!   the cache is a cache. Temporaries left by a killed process are removed at the next open.
//! - **Size:** bounded by `--cache-dir-size` over the whole directory. When a write takes it over
//!   the bound, the least recently used entries (by mtime, which a hit refreshes: atime is
//!   often disabled) are deleted until it is at 90% of it. Several mounts may share one
//!   directory: each counts what it writes and rescans the directory when it evicts, and a file
//!   another process deleted first is simply gone (reads of it miss).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use xxhash_rust::xxh3::{xxh3_64, xxh3_128};

/// Name prefix of temporaries (never a chunk name: those are decimal ids).
const TMP_PREFIX: &str = ".tmp-";

/// A cache directory, shared by every remote archive of a mount.
pub struct DiskCache {
    dir: PathBuf,
    max_bytes: u64,
    /// Bytes the directory holds, as last scanned plus what this process wrote since.
    bytes: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    invalid: AtomicU64,
    write_errors: AtomicU64,
    evict: Mutex<()>,
    tmp_seq: AtomicU64,
}

/// Counters for `upg-mount --status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskCacheStats {
    pub hits: u64,
    pub misses: u64,
    /// Entries that failed their check and were deleted (each one refetched).
    pub invalid: u64,
    pub write_errors: u64,
    pub bytes: u64,
}

/// One archive's part of the cache.
#[derive(Debug, Clone)]
pub struct Namespace {
    dir: PathBuf,
}

impl DiskCache {
    /// Open (creating if needed) the cache at `dir`, bounded to `max_bytes`. Counts what it
    /// holds and removes temporaries that a killed process left.
    pub fn open(dir: &Path, max_bytes: u64) -> io::Result<DiskCache> {
        fs::create_dir_all(dir)?;
        let meta = fs::metadata(dir)?;
        if !meta.is_dir() {
            return Err(io::Error::other(format!(
                "{} is not a directory",
                dir.display()
            )));
        }
        let c = DiskCache {
            dir: dir.to_path_buf(),
            max_bytes,
            bytes: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            invalid: AtomicU64::new(0),
            write_errors: AtomicU64::new(0),
            evict: Mutex::new(()),
            tmp_seq: AtomicU64::new(0),
        };
        let entries = c.scan(true);
        c.bytes
            .store(entries.iter().map(|e| e.1).sum(), Ordering::Relaxed);
        Ok(c)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// The namespace of an archive, from what identifies its content: where it is (`source`),
    /// its length and its index hash (which covers every chunk's hashes).
    pub fn namespace(&self, source: &str, len: u64, index_hash: u64) -> io::Result<Namespace> {
        let mut id = Vec::with_capacity(source.len() + 17);
        id.extend_from_slice(source.as_bytes());
        id.push(0);
        id.extend_from_slice(&len.to_le_bytes());
        id.extend_from_slice(&index_hash.to_le_bytes());
        let dir = self.dir.join(format!("{:032x}", xxh3_128(&id)));
        fs::create_dir_all(&dir)?;
        Ok(Namespace { dir })
    }

    /// The stored bytes of chunk `id` if the cache holds them and they pass the check (length
    /// `len`, xxh3 `hash`); an entry that fails is deleted.
    pub fn get(&self, ns: &Namespace, id: u32, len: u32, hash: u64) -> Option<Vec<u8>> {
        let path = ns.dir.join(id.to_string());
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(_) => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                return None;
            }
        };
        if bytes.len() != len as usize || xxh3_64(&bytes) != hash {
            self.invalid.fetch_add(1, Ordering::Relaxed);
            self.misses.fetch_add(1, Ordering::Relaxed);
            if fs::remove_file(&path).is_ok() {
                self.sub_bytes(bytes.len() as u64);
            }
            tracing::warn!(
                "cache entry {} failed its check ({} bytes); fetching the chunk again",
                path.display(),
                bytes.len()
            );
            return None;
        }
        self.hits.fetch_add(1, Ordering::Relaxed);
        // Recently used: eviction goes by mtime. A failure only makes it an earlier victim.
        if let Ok(f) = fs::File::options().write(true).open(&path) {
            let _ = f.set_modified(SystemTime::now());
        }
        Some(bytes)
    }

    /// Store chunk `id`'s stored bytes (already checked by the caller). Failures (disk full,
    /// permissions) are counted and otherwise ignored: the cache is an optimisation.
    pub fn put(&self, ns: &Namespace, id: u32, bytes: &[u8]) {
        if bytes.len() as u64 > self.max_bytes / 8 {
            return; // one entry never takes more than an eighth of the cache
        }
        let final_path = ns.dir.join(id.to_string());
        if final_path.exists() {
            return;
        }
        let tmp = ns.dir.join(format!(
            "{TMP_PREFIX}{}-{}-{id}",
            std::process::id(),
            self.tmp_seq.fetch_add(1, Ordering::Relaxed)
        ));
        let r = (|| {
            let mut f = fs::File::create_new(&tmp)?;
            f.write_all(bytes)?;
            drop(f);
            fs::rename(&tmp, &final_path)
        })();
        if let Err(e) = r {
            let _ = fs::remove_file(&tmp);
            self.write_errors.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("cache entry {}: {e}", final_path.display());
            return;
        }
        let now = self.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed) + bytes.len() as u64;
        if now > self.max_bytes {
            self.evict_to(self.max_bytes / 10 * 9);
        }
    }

    pub fn stats(&self) -> DiskCacheStats {
        DiskCacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            invalid: self.invalid.load(Ordering::Relaxed),
            write_errors: self.write_errors.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
        }
    }

    /// One line for `--status`.
    pub fn stats_line(&self) -> String {
        let s = self.stats();
        format!(
            "{}: {} of {} bytes, {} hits, {} misses, {} entries failed their check, {} write errors",
            self.dir.display(),
            s.bytes,
            self.max_bytes,
            s.hits,
            s.misses,
            s.invalid,
            s.write_errors
        )
    }

    fn sub_bytes(&self, n: u64) {
        let _ = self
            .bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(b.saturating_sub(n))
            });
    }

    /// Every entry (path, size, mtime) under the directory; with `remove_tmp`, temporaries
    /// whose writer is gone are deleted (those of this process, and of live ones, are kept).
    fn scan(&self, remove_tmp: bool) -> Vec<(PathBuf, u64, SystemTime)> {
        let mut out = Vec::new();
        let Ok(top) = fs::read_dir(&self.dir) else {
            return out;
        };
        for ns in top.flatten() {
            if !ns.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let Ok(files) = fs::read_dir(ns.path()) else {
                continue;
            };
            for f in files.flatten() {
                let name = f.file_name();
                let name = name.to_string_lossy();
                let Ok(m) = f.metadata() else { continue };
                if !m.is_file() {
                    continue;
                }
                if let Some(rest) = name.strip_prefix(TMP_PREFIX) {
                    let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
                    let alive = pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
                    if remove_tmp && !alive {
                        let _ = fs::remove_file(f.path());
                    }
                    continue;
                }
                out.push((
                    f.path(),
                    m.len(),
                    m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                ));
            }
        }
        out
    }

    /// Delete least recently used entries until the directory holds at most `target` bytes.
    fn evict_to(&self, target: u64) {
        let Ok(_g) = self.evict.try_lock() else {
            return; // another thread is evicting already
        };
        let mut entries = self.scan(false);
        let mut total: u64 = entries.iter().map(|e| e.1).sum();
        entries.sort_by_key(|e| e.2);
        for (path, len, _) in entries {
            if total <= target {
                break;
            }
            if fs::remove_file(&path).is_ok() {
                total = total.saturating_sub(len);
            }
        }
        self.bytes.store(total, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(max: u64) -> (tempfile::TempDir, DiskCache) {
        let d = tempfile::tempdir().unwrap();
        let c = DiskCache::open(&d.path().join("c"), max).unwrap();
        (d, c)
    }

    #[test]
    fn stores_and_serves_only_checked_bytes() {
        let (_d, c) = cache(1 << 20);
        let ns = c.namespace("s3://b/k.upg", 100, 7).unwrap();
        let data = vec![5u8; 1000];
        let h = xxh3_64(&data);
        assert_eq!(c.get(&ns, 3, 1000, h), None);
        c.put(&ns, 3, &data);
        assert_eq!(c.get(&ns, 3, 1000, h).as_deref(), Some(&data[..]));
        // The wrong hash (another archive version would have another namespace; this is damage).
        assert_eq!(c.get(&ns, 3, 1000, h ^ 1), None);
        assert_eq!(c.get(&ns, 3, 1000, h), None, "the failed entry was deleted");
        let s = c.stats();
        assert_eq!((s.hits, s.invalid), (1, 1));
    }

    #[test]
    fn a_damaged_or_truncated_entry_is_refetched_not_served() {
        let (_d, c) = cache(1 << 20);
        let ns = c.namespace("x", 1, 1).unwrap();
        let data: Vec<u8> = (0..4096u32).map(|i| i as u8).collect();
        let h = xxh3_64(&data);
        c.put(&ns, 0, &data);
        let p = ns.dir.join("0");
        let mut bad = fs::read(&p).unwrap();
        bad[100] ^= 1;
        fs::write(&p, &bad).unwrap();
        assert_eq!(c.get(&ns, 0, 4096, h), None);
        c.put(&ns, 0, &data);
        fs::write(&p, &data[..10]).unwrap(); // a crash mid-write of a non-atomic writer
        assert_eq!(c.get(&ns, 0, 4096, h), None);
        c.put(&ns, 0, &data);
        assert_eq!(c.get(&ns, 0, 4096, h).unwrap(), data);
    }

    #[test]
    fn namespaces_differ_by_source_length_and_index() {
        let (_d, c) = cache(1 << 20);
        let a = c.namespace("s3://b/k.upg", 10, 1).unwrap().dir;
        assert_ne!(a, c.namespace("s3://b/k2.upg", 10, 1).unwrap().dir);
        assert_ne!(a, c.namespace("s3://b/k.upg", 11, 1).unwrap().dir);
        assert_ne!(a, c.namespace("s3://b/k.upg", 10, 2).unwrap().dir);
        assert_eq!(a, c.namespace("s3://b/k.upg", 10, 1).unwrap().dir);
    }

    #[test]
    fn size_is_bounded_oldest_entries_go_first() {
        let (_d, c) = cache(80_000);
        let ns = c.namespace("x", 1, 1).unwrap();
        let old = SystemTime::now() - std::time::Duration::from_secs(1000);
        for id in 0..8u32 {
            c.put(&ns, id, &vec![id as u8; 10_000]);
            let f = fs::File::options()
                .write(true)
                .open(ns.dir.join(id.to_string()))
                .unwrap();
            f.set_modified(old + std::time::Duration::from_secs(u64::from(id)))
                .unwrap();
        }
        assert_eq!(c.stats().bytes, 80_000);
        // A hit makes 0 the most recent; the next write goes over the bound and evicts 1, 2.
        let h0 = xxh3_64(&[0u8; 10_000]);
        assert!(c.get(&ns, 0, 10_000, h0).is_some());
        c.put(&ns, 8, &[8u8; 10_000]);
        assert!(c.stats().bytes <= 72_000, "{:?}", c.stats());
        assert!(ns.dir.join("0").exists() && ns.dir.join("8").exists());
        assert!(!ns.dir.join("1").exists() && !ns.dir.join("2").exists());
        // Reopened, it counts what is there.
        let again = DiskCache::open(&c.dir, 80_000).unwrap();
        assert_eq!(again.stats().bytes, c.stats().bytes);
    }

    #[test]
    fn stale_temporaries_are_removed_at_open_live_ones_kept() {
        let (_d, c) = cache(1 << 20);
        let ns = c.namespace("x", 1, 1).unwrap();
        // No process has pid 4294967 (above the kernel's pid_max limit of 2^22).
        let stale = ns.dir.join(format!("{TMP_PREFIX}4294967-0-1"));
        let live = ns
            .dir
            .join(format!("{TMP_PREFIX}{}-0-2", std::process::id()));
        fs::write(&stale, b"partial").unwrap();
        fs::write(&live, b"partial").unwrap();
        let again = DiskCache::open(&c.dir, 1 << 20).unwrap();
        assert!(!stale.exists() && live.exists());
        assert_eq!(again.stats().bytes, 0, "temporaries are not counted");
    }
}

//! Archives in object storage (the S3 API: AWS S3, MinIO, Ceph RGW, R2, ...) and on plain web
//! servers (HTTP range requests), behind the same [`Storage`] trait as a local file, so every
//! guarantee of the reader (chunk hashes checked before bytes are served, `EIO` on a bad chunk,
//! the decoded-chunk cache, read-ahead) holds unchanged.
//!
//! The client is the `object_store` crate (Apache Arrow's; used by DataFusion, delta-rs, polars):
//! SigV4 signing, the S3 XML API and multipart uploads are not ours to write (docs/DESIGN.md says
//! why this crate and not the AWS SDK). Its async API runs on a small tokio runtime owned here;
//! callers stay synchronous (the FUSE workers and the decode pool block on a read).
//!
//! What this layer adds on top of the client:
//! - **Bounded time.** Every operation has one deadline (`--timeout`, default 30 s) covering all
//!   its attempts: 5xx/SlowDown answers, refused or reset connections, timeouts and short bodies
//!   are retried with exponential backoff (50 ms doubling to 2 s) until the deadline, then the
//!   read fails (the mount answers `EIO`). Nothing waits forever; the next read starts afresh, so
//!   reads recover by themselves once the server is back.
//! - **Consistency.** The object's ETag is pinned at open and sent as `If-Match` on every range
//!   request: an object replaced while mounted fails reads with "object replaced", never a mix of
//!   old and new bytes (the chunk hashes would catch most of a mix, this catches all of it).
//! - **No amplification.** Reads of ranges that an in-flight or just-finished request already
//!   covers wait for it and copy from it ([`Flights`]), so a reader that catches up with the
//!   read-ahead does not fetch the same bytes again. [`Storage::coalesce_limit`] tells the
//!   read-ahead to merge adjacent chunks into large range requests (the archive does the merge:
//!   it knows where chunks lie); a random read still fetches only its own chunks' bytes.
//! - **Fork safety.** `upg-mount` opens archives (so errors reach the terminal) and then forks
//!   into a daemon; a tokio runtime's threads do not survive `fork`, so the runtime and the HTTP
//!   client are rebuilt, lazily, in a process whose pid differs from the one that built them.
//! - **No secrets in messages.** Credentials are never formatted: errors carry the client's
//!   message (which names the URL and the server's reason, not the request's headers).

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use object_store::path::Path as ObjPath;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt};

use super::{Storage, StorageError, check_range};

/// Default bound on one remote operation, all retries included: long enough to ride out a
/// server restart or a burst of 503 SlowDown, short enough that a dead server turns into `EIO`
/// before most callers give up on their own.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// First retry delay; doubles per attempt up to [`MAX_BACKOFF`] (the AWS SDKs' full-jitter
/// schedule starts at 50-100 ms too).
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// Longest pause between attempts: a restarted server is picked up within 2 s.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Largest range request the read-ahead merges adjacent chunks into: 8 MiB is the part size
/// mountpoint-s3 and the AWS CRT use; with several in flight it fills a 10 Gbit/s link, and a
/// request that fails costs little to retry.
pub const COALESCE_LIMIT: usize = 8 << 20;

/// Bytes of finished read-ahead requests kept for readers that arrive just after the data did
/// (before the read-ahead has decoded it into the cache): 32 MiB, four 8 MiB requests. Only
/// requests of at least [`RECENT_MIN`] bytes are kept: a single chunk's read goes to the cache.
const RECENT_BYTES: usize = 32 << 20;
/// Smallest finished request kept: 512 KiB, more than one chunk stored at the default 256 KiB
/// chunk size (a merged read-ahead run, not a single chunk read).
const RECENT_MIN: usize = 512 << 10;
/// At most this many flights (running or recent) are tracked; lookups scan the list.
const MAX_FLIGHTS: usize = 512;

/// A remote location given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteUrl {
    /// `s3://BUCKET/KEY`; a key that is empty or ends in `/` is a prefix (a folder of archives).
    S3 { bucket: String, key: String },
    /// `http://` or `https://` URL of one archive.
    Http { url: String },
}

impl RemoteUrl {
    /// `None` when `s` is not a URL upg reads (a local path); otherwise the parsed URL or why it
    /// is unusable.
    pub fn parse(s: &str) -> Option<Result<RemoteUrl, StorageError>> {
        let bad = |m: &str| {
            Some(Err(StorageError::new(
                io::ErrorKind::InvalidInput,
                format!("{s}: {m}"),
            )))
        };
        if let Some(rest) = s.strip_prefix("s3://") {
            let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return bad("no bucket name (s3://BUCKET/KEY.upg or s3://BUCKET/PREFIX/)");
            }
            if key.contains("//") || key.split('/').any(|p| p == "." || p == "..") {
                return bad("the key has an empty, '.' or '..' path segment");
            }
            return Some(Ok(RemoteUrl::S3 {
                bucket: bucket.to_string(),
                key: key.to_string(),
            }));
        }
        if s.starts_with("http://") || s.starts_with("https://") {
            let after = s.split_once("://").map(|x| x.1).unwrap_or("");
            match after.split_once('/') {
                Some((host, path)) if !host.is_empty() && !path.is_empty() => {}
                _ => return bad("expected http(s)://HOST/PATH of an archive"),
            }
            if s.contains('?') || s.contains('#') {
                return bad("query strings and fragments are not supported");
            }
            return Some(Ok(RemoteUrl::Http { url: s.to_string() }));
        }
        None
    }

    /// True for an S3 prefix (mount every `.upg` directly under it).
    pub fn is_prefix(&self) -> bool {
        matches!(self, RemoteUrl::S3 { key, .. } if key.is_empty() || key.ends_with('/'))
    }
}

impl std::fmt::Display for RemoteUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RemoteUrl::S3 { bucket, key } => write!(f, "s3://{bucket}/{key}"),
            RemoteUrl::Http { url } => f.write_str(url),
        }
    }
}

/// How to reach remote storage (command-line flags; the rest comes from the AWS environment).
#[derive(Debug, Clone)]
pub struct RemoteOptions {
    /// S3 endpoint (`--endpoint-url`; else `AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`, the
    /// profile's `endpoint_url`, else AWS itself).
    pub endpoint_url: Option<String>,
    /// Send unsigned requests (public buckets), like the AWS CLI's `--no-sign-request`.
    pub no_sign_request: bool,
    /// Region (else `AWS_REGION`, `AWS_DEFAULT_REGION`, the profile's, else `us-east-1`).
    pub region: Option<String>,
    /// Profile of `~/.aws/credentials` / `~/.aws/config` (else `AWS_PROFILE`, else `default`).
    pub profile: Option<String>,
    /// Bound on one operation including its retries.
    pub timeout: Duration,
}

impl Default for RemoteOptions {
    fn default() -> Self {
        RemoteOptions {
            endpoint_url: None,
            no_sign_request: false,
            region: None,
            profile: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// What the store is built from (kept to rebuild it after a fork). Holds the credentials:
/// deliberately not `Debug`.
#[derive(Clone)]
enum StoreConfig {
    S3 {
        bucket: String,
        endpoint: Option<String>,
        region: String,
        /// (access key id, secret, session token); `None` with `no_sign_request`.
        creds: Option<(String, String, Option<String>)>,
        virtual_hosted: bool,
    },
    Http {
        /// The URL up to and including the last `/`.
        base: String,
    },
}

fn env(k: &str) -> Option<String> {
    std::env::var(k).ok().filter(|v| !v.is_empty())
}

impl StoreConfig {
    fn s3(bucket: &str, opts: &RemoteOptions) -> Result<StoreConfig, StorageError> {
        let profile = super::aws_config::load_profile(opts.profile.as_deref())
            .map_err(|m| StorageError::new(io::ErrorKind::InvalidInput, m))?
            .unwrap_or_default();
        // Precedence as in the AWS CLI: flags, then environment, then the shared files.
        let endpoint = opts
            .endpoint_url
            .clone()
            .or_else(|| env("AWS_ENDPOINT_URL_S3"))
            .or_else(|| env("AWS_ENDPOINT_URL"))
            .or(profile.endpoint_url.clone());
        let region = opts
            .region
            .clone()
            .or_else(|| env("AWS_REGION"))
            .or_else(|| env("AWS_DEFAULT_REGION"))
            .or(profile.region.clone())
            .unwrap_or_else(|| "us-east-1".to_string());
        let creds = if opts.no_sign_request {
            None
        } else if let (Some(k), Some(s)) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY"))
        {
            Some((k, s, env("AWS_SESSION_TOKEN")))
        } else if let (Some(k), Some(s)) = (profile.access_key_id, profile.secret_access_key) {
            Some((k, s, profile.session_token))
        } else {
            return Err(StorageError::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "s3://{bucket}: no AWS credentials: set AWS_ACCESS_KEY_ID and \
                     AWS_SECRET_ACCESS_KEY, or AWS_PROFILE (a profile of ~/.aws/credentials), or \
                     pass --no-sign-request for a public bucket"
                ),
            ));
        };
        let virtual_hosted = env("AWS_VIRTUAL_HOSTED_STYLE_REQUEST")
            .map(|v| v.eq_ignore_ascii_case("true") || v == "1")
            .unwrap_or(false);
        Ok(StoreConfig::S3 {
            bucket: bucket.to_string(),
            endpoint,
            region,
            creds,
            virtual_hosted,
        })
    }

    /// The client; `retry_for`: let the client retry on its own for that long (uploads), else
    /// not at all (reads: retries are ours, one deadline over all attempts, see `Remote::retry`).
    fn build(&self, retry_for: Option<Duration>) -> Result<Arc<dyn ObjectStore>, StorageError> {
        let retry = match retry_for {
            Some(t) => object_store::RetryConfig {
                max_retries: 10,
                retry_timeout: t,
                ..Default::default()
            },
            None => object_store::RetryConfig {
                max_retries: 0,
                ..Default::default()
            },
        };
        let client = object_store::ClientOptions::new()
            .with_allow_http(true)
            .with_connect_timeout(Duration::from_secs(5));
        // Reads: the deadline in `Remote::retry` bounds each attempt. Uploads: a stalled part
        // request fails after the timeout (at least 60 s: a 16 MiB part on a slow link).
        let client = match retry_for {
            Some(t) => client.with_timeout(t.max(Duration::from_secs(60))),
            None => client.with_timeout_disabled(),
        };
        let built: Result<Arc<dyn ObjectStore>, object_store::Error> = match self {
            StoreConfig::S3 {
                bucket,
                endpoint,
                region,
                creds,
                virtual_hosted,
            } => {
                let mut b = object_store::aws::AmazonS3Builder::new()
                    .with_bucket_name(bucket)
                    .with_region(region)
                    .with_virtual_hosted_style_request(*virtual_hosted)
                    .with_retry(retry)
                    .with_client_options(client);
                if let Some(e) = endpoint {
                    b = b.with_endpoint(e);
                }
                match creds {
                    Some((k, s, t)) => {
                        b = b.with_access_key_id(k).with_secret_access_key(s);
                        if let Some(t) = t {
                            b = b.with_token(t);
                        }
                    }
                    None => b = b.with_skip_signature(true),
                }
                b.build().map(|s| Arc::new(s) as Arc<dyn ObjectStore>)
            }
            StoreConfig::Http { base } => object_store::http::HttpBuilder::new()
                .with_url(base)
                .with_retry(retry)
                .with_client_options(client)
                .build()
                .map(|s| Arc::new(s) as Arc<dyn ObjectStore>),
        };
        built.map_err(|e| StorageError::new(io::ErrorKind::InvalidInput, e.to_string()))
    }
}

/// The runtime and client of one process.
struct Live {
    rt: tokio::runtime::Runtime,
    /// For reads: no retries of its own (ours have one deadline over all attempts).
    store: Arc<dyn ObjectStore>,
    /// For uploads: the client's own retries (a multipart part can only be retried inside the
    /// client, which re-sends it under the same part number), bounded by the same timeout.
    upload_store: Arc<dyn ObjectStore>,
}

/// A connection to one bucket or one web server, shared by the objects opened through it.
pub struct Remote {
    cfg: StoreConfig,
    /// What messages call the location: `s3://BUCKET` or the base URL.
    origin: String,
    timeout: Duration,
    live: Mutex<Option<(u32, Arc<Live>)>>,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("origin", &self.origin)
            .finish()
    }
}

/// Why one attempt failed, and whether another may succeed.
struct Failure {
    kind: io::ErrorKind,
    msg: String,
    retry: bool,
}

impl Failure {
    fn from_store(e: object_store::Error) -> Failure {
        use object_store::Error as E;
        let msg = e.to_string();
        let status = http_status(&msg);
        let (kind, retry) = match &e {
            E::NotFound { .. } => (io::ErrorKind::NotFound, false),
            E::Precondition { .. } => (io::ErrorKind::Other, false),
            E::PermissionDenied { .. } | E::Unauthenticated { .. } => {
                (io::ErrorKind::PermissionDenied, false)
            }
            E::NotSupported { .. } | E::NotImplemented { .. } | E::InvalidPath { .. } => {
                (io::ErrorKind::Unsupported, false)
            }
            // 5xx (503 SlowDown included), 408, 429 and answers that never came are worth
            // another try; any other 4xx will not change by asking again.
            _ => match status {
                Some(412) => (io::ErrorKind::Other, false),
                Some(401 | 403) => (io::ErrorKind::PermissionDenied, false),
                Some(s) if (400..500).contains(&s) && s != 408 && s != 429 => {
                    (io::ErrorKind::InvalidInput, false)
                }
                _ => (io::ErrorKind::Other, true),
            },
        };
        let msg = if matches!(e, E::Precondition { .. }) || status == Some(412) {
            format!("object replaced since it was opened (its ETag changed): {msg}")
        } else if matches!(status, Some(400 | 401 | 403)) {
            format!(
                "the server refused the request (HTTP {}): check the credentials \
                 (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_PROFILE), the \
                 region and the endpoint: {msg}",
                status.unwrap_or_default()
            )
        } else {
            msg
        };
        Failure { kind, msg, retry }
    }
}

/// The HTTP status in a client error message ("... status code: 403 Forbidden ..."): the
/// client's status accessor is crate-private, its message format is stable.
fn http_status(msg: &str) -> Option<u16> {
    let at = msg.find("status code: ")? + "status code: ".len();
    msg.get(at..at + 3)?.parse().ok()
}

impl Remote {
    /// Connect to the bucket of an `s3://` URL or the server of an `http(s)://` URL. Nothing is
    /// sent yet; credentials are resolved now (a missing one is an error here).
    pub fn connect(url: &RemoteUrl, opts: &RemoteOptions) -> Result<Arc<Remote>, StorageError> {
        let (cfg, origin) = match url {
            RemoteUrl::S3 { bucket, .. } => {
                (StoreConfig::s3(bucket, opts)?, format!("s3://{bucket}"))
            }
            RemoteUrl::Http { url } => {
                let cut = url.rfind('/').map(|i| i + 1).unwrap_or(url.len());
                let base = url[..cut].to_string();
                (StoreConfig::Http { base: base.clone() }, base)
            }
        };
        let r = Remote {
            cfg,
            origin,
            timeout: opts.timeout,
            live: Mutex::new(None),
        };
        r.live()?; // a malformed endpoint fails here, not at the first read
        Ok(Arc::new(r))
    }

    /// The runtime and client for this process (rebuilt after a fork).
    fn live(&self) -> Result<Arc<Live>, StorageError> {
        let pid = std::process::id();
        let mut g = self.live.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((p, l)) = g.as_ref()
            && *p == pid
        {
            return Ok(l.clone());
        }
        if let Some(old) = g.take() {
            // Built by the parent before a fork: its threads do not exist here, and dropping
            // the runtime would wait for them. Leak it (once per fork).
            std::mem::forget(old);
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("upg-net")
            .enable_all()
            .build()
            .map_err(|e| {
                StorageError::new(e.kind(), format!("cannot start the network runtime: {e}"))
            })?;
        let (store, upload_store) = {
            let _guard = rt.enter(); // the HTTP client may spawn onto the current runtime
            (self.cfg.build(None)?, self.cfg.build(Some(self.timeout))?)
        };
        let l = Arc::new(Live {
            rt,
            store,
            upload_store,
        });
        *g = Some((pid, l.clone()));
        Ok(l)
    }

    /// Run `op` until it succeeds, fails for good, or the deadline passes. `what` names the
    /// operation in the final error.
    fn retry<T, F, Fut>(
        &self,
        what: &str,
        stats: Option<&Counters>,
        mut op: F,
    ) -> Result<T, StorageError>
    where
        F: FnMut(Arc<dyn ObjectStore>) -> Fut,
        Fut: std::future::Future<Output = Result<T, Failure>>,
    {
        let start = Instant::now();
        let deadline = start + self.timeout;
        let mut backoff = FIRST_BACKOFF;
        let mut attempts = 0u32;
        loop {
            let live = self.live()?;
            let left = deadline.saturating_duration_since(Instant::now());
            attempts += 1;
            if let Some(s) = stats {
                s.requests.fetch_add(1, Ordering::Relaxed);
                if attempts > 1 {
                    s.retries.fetch_add(1, Ordering::Relaxed);
                }
            }
            let fut = op(live.store.clone());
            let fail = match live
                .rt
                .block_on(async { tokio::time::timeout(left, fut).await })
            {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(f)) => f,
                Err(_) => Failure {
                    kind: io::ErrorKind::TimedOut,
                    msg: format!("no complete answer within {:.1} s", left.as_secs_f64()),
                    retry: true,
                },
            };
            let now = Instant::now();
            if !fail.retry || now + backoff >= deadline {
                let msg = if fail.retry {
                    format!(
                        "{what}: gave up after {attempts} attempt(s) in {:.1} s (--timeout {} s): {}",
                        (now - start).as_secs_f64(),
                        self.timeout.as_secs_f64(),
                        fail.msg
                    )
                } else {
                    format!("{what}: {}", fail.msg)
                };
                let kind = if fail.retry {
                    io::ErrorKind::TimedOut
                } else {
                    fail.kind
                };
                return Err(StorageError::new(kind, msg));
            }
            tracing::debug!(
                "{what}: attempt {attempts} failed, retrying in {backoff:?}: {}",
                fail.msg
            );
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    fn obj_path(&self, key: &str) -> ObjPath {
        // Keys are used as given (already URL-style); `from` would percent-encode reserved
        // characters a second time.
        ObjPath::parse(key).unwrap_or_else(|_| ObjPath::from(key))
    }

    /// Open one object: a HEAD request for its length and ETag (pinned from here on).
    pub fn open(self: &Arc<Self>, key: &str) -> Result<RemoteStorage, StorageError> {
        let path = self.obj_path(key);
        let desc = match &self.cfg {
            StoreConfig::S3 { .. } => format!("{}/{key}", self.origin),
            StoreConfig::Http { .. } => format!("{}{key}", self.origin),
        };
        let meta = self.retry(&format!("{desc}: HEAD"), None, |store| {
            let path = path.clone();
            async move { store.head(&path).await.map_err(Failure::from_store) }
        })?;
        Ok(RemoteStorage {
            remote: self.clone(),
            path,
            desc,
            len: meta.size,
            etag: meta.e_tag,
            modified: Some(meta.last_modified.into()),
            flights: Flights::default(),
            stats: Counters::default(),
        })
    }

    /// Keys of the `.upg` objects directly under `prefix` (which ends in `/` or is empty), sorted.
    pub fn list_archives(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        use futures::TryStreamExt;
        // A plain listing filtered here, not a delimiter query: some S3-compatible servers
        // (moto among them) mis-sign query values holding '/', and this works everywhere.
        let all = self.retry(
            &format!("{}/{prefix}: LIST", self.origin),
            None,
            |store| async move {
                store
                    .list(None)
                    .try_collect::<Vec<_>>()
                    .await
                    .map_err(Failure::from_store)
            },
        )?;
        let mut keys: Vec<String> = all
            .into_iter()
            .map(|o| o.location.to_string())
            .filter(|k| {
                k.strip_prefix(prefix)
                    .is_some_and(|rest| !rest.contains('/') && rest.ends_with(".upg"))
            })
            .collect();
        keys.sort();
        Ok(keys)
    }

    /// Start a multipart upload to `key` that is fed through [`std::io::Write`] as the bytes
    /// are produced (`upg pack -o s3://` writes the archive straight into it: no local copy).
    /// Parts of [`UPLOAD_PART`] bytes go out as they fill, [`UPLOAD_IN_FLIGHT`] at a time (the
    /// client retries each part until the deadline). Nothing is visible under `key` until
    /// [`MultipartWriter::finish`] completes the upload; a writer dropped unfinished, or any
    /// failure, aborts it (its parts are deleted) and an existing object under `key` is left as
    /// it was. `progress` gets the bytes sent so far.
    pub fn upload_writer(
        &self,
        key: &str,
        progress: Box<dyn Fn(u64) + Send>,
    ) -> Result<MultipartWriter, StorageError> {
        let path = self.obj_path(key);
        let what = format!("{}/{key}: upload", self.origin);
        let live = self.live()?;
        let upload = live
            .rt
            .block_on(live.upload_store.put_multipart(&path))
            .map_err(|e| {
                let f = Failure::from_store(e);
                StorageError::new(f.kind, format!("{what}: {}", f.msg))
            })?;
        Ok(MultipartWriter {
            live,
            upload: Some(upload),
            buf: Vec::with_capacity(UPLOAD_PART),
            pending: VecDeque::new(),
            queued: 0,
            total: 0,
            what,
            progress,
        })
    }

    /// Upload the local file `src` to `key` through [`Remote::upload_writer`].
    pub fn upload(
        &self,
        src: &std::path::Path,
        key: &str,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<(), StorageError> {
        use std::io::Read;
        let (mut file, meta) = super::open_regular(src)?;
        if meta.len() == 0 {
            return Err(StorageError::new(
                io::ErrorKind::InvalidInput,
                format!("{}: empty file", src.display()),
            ));
        }
        let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let s2 = sent.clone();
        let mut w = self.upload_writer(
            key,
            Box::new(move |n| s2.store(n, std::sync::atomic::Ordering::Relaxed)),
        )?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file
                .read(&mut buf)
                .map_err(|e| StorageError::new(e.kind(), format!("{}: {e}", src.display())))?;
            if n == 0 {
                break;
            }
            io::Write::write_all(&mut w, &buf[..n])
                .map_err(|e| StorageError::new(e.kind(), e.to_string()))?;
            progress(sent.load(std::sync::atomic::Ordering::Relaxed));
        }
        w.finish()?;
        progress(meta.len());
        Ok(())
    }
}

/// Size of the first multipart parts: 16 MiB, four in flight, fill a fast link while holding
/// little memory (80 MiB with the part being filled). Past [`PART_GROWTH_FROM`] parts the size
/// doubles every 1,000 parts (see [`part_len`]), because S3 allows 10,000 parts of at most 5 GiB
/// and 10,000 x 16 MiB is only 160 GiB.
pub const UPLOAD_PART: usize = 16 << 20;
/// Parts of [`UPLOAD_PART`] before the size starts to grow: 2,000 x 16 MiB = 31.25 GiB, which
/// covers most archives at the smallest memory cost.
const PART_GROWTH_FROM: u64 = 2000;
/// Parts sent at once.
pub const UPLOAD_IN_FLIGHT: usize = 4;
/// S3's cap on the number of parts of one upload.
const MAX_PARTS: u64 = 10_000;

type PartHandle = tokio::task::JoinHandle<object_store::Result<()>>;

/// A multipart upload fed as a [`std::io::Write`]: see [`Remote::upload_writer`].
pub struct MultipartWriter {
    live: Arc<Live>,
    upload: Option<Box<dyn object_store::MultipartUpload>>,
    buf: Vec<u8>,
    /// Parts sent, not yet confirmed, with the byte count sent once each completes.
    pending: VecDeque<(PartHandle, u64)>,
    /// Parts queued so far (the next part's size follows from it: [`part_len`]).
    queued: u64,
    /// Bytes handed to parts so far.
    total: u64,
    what: String,
    progress: Box<dyn Fn(u64) + Send>,
}

/// The size of part number `queued` (from 0): 16 MiB for the first 2,000 parts, then doubling
/// every 1,000 parts up to 4 GiB (under S3's 5 GiB cap) for parts 9,000-9,999. 10,000 parts
/// then hold 7.8 TiB, more than S3's 5 TiB object limit. The 4 parts in flight and the one
/// being filled hold 5 parts in memory: 160 MiB up to a 62 GiB archive, 1.25 GiB past 250 GiB,
/// 5 GiB past 1 TiB.
fn part_len(queued: u64) -> usize {
    let extra = match queued.checked_sub(PART_GROWTH_FROM) {
        None => 0,
        Some(q) => q / 1000 + 1,
    };
    UPLOAD_PART << extra.min(8)
}

impl MultipartWriter {
    fn part_len(&self) -> usize {
        part_len(self.queued)
    }

    fn fail(&self, msg: impl std::fmt::Display) -> io::Error {
        io::Error::other(format!("{}: {msg}", self.what))
    }

    fn store_fail(&self, e: object_store::Error) -> io::Error {
        let f = Failure::from_store(e);
        io::Error::new(f.kind, format!("{}: {}", self.what, f.msg))
    }

    /// Wait for the oldest part in flight.
    fn wait_one(&mut self) -> io::Result<()> {
        if let Some((h, end)) = self.pending.pop_front() {
            match self.live.rt.block_on(h) {
                Err(e) => return Err(self.fail(e)),
                Ok(Err(e)) => return Err(self.store_fail(e)),
                Ok(Ok(_)) => (self.progress)(end),
            }
        }
        Ok(())
    }

    /// Send the buffered bytes as one part.
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        while self.pending.len() >= UPLOAD_IN_FLIGHT {
            self.wait_one()?;
        }
        if self.queued >= MAX_PARTS {
            return Err(self.fail("more than 10,000 parts: the archive is too large for S3"));
        }
        let next = self.part_len();
        let part = std::mem::replace(&mut self.buf, Vec::with_capacity(next));
        self.total += part.len() as u64;
        self.queued += 1;
        let upload = self
            .upload
            .as_mut()
            .expect("open until finished or dropped");
        let fut = upload.put_part(object_store::PutPayload::from(part));
        let h = self.live.rt.spawn(fut);
        self.pending.push_back((h, self.total));
        Ok(())
    }

    /// Send what is left, wait for every part and complete the upload: only now does the object
    /// appear under its key. On failure the upload is aborted.
    pub fn finish(mut self) -> Result<(), StorageError> {
        let r = (|| -> io::Result<()> {
            if self.total == 0 && self.buf.is_empty() {
                return Err(self.fail("nothing was written"));
            }
            self.send()?;
            while !self.pending.is_empty() {
                self.wait_one()?;
            }
            let mut upload = self.upload.take().expect("open until finished or dropped");
            match self.live.rt.block_on(upload.complete()) {
                Ok(_) => Ok(()),
                Err(e) => {
                    let err = self.store_fail(e);
                    let _ = self.live.rt.block_on(upload.abort());
                    Err(err)
                }
            }
        })();
        r.map_err(|e| StorageError::new(e.kind(), e.to_string()))
    }
}

impl io::Write for MultipartWriter {
    fn write(&mut self, mut data: &[u8]) -> io::Result<usize> {
        let n = data.len();
        while !data.is_empty() {
            let room = self.part_len().saturating_sub(self.buf.len());
            let take = room.min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() >= self.part_len() {
                self.send()?;
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for MultipartWriter {
    fn drop(&mut self) {
        // Unfinished (an error, or the caller gave up): abort, so no parts linger and nothing
        // appears under the key. Parts in flight are cancelled first.
        if let Some(mut upload) = self.upload.take() {
            for (h, _) in self.pending.drain(..) {
                h.abort();
            }
            let _ = self.live.rt.block_on(upload.abort());
        }
    }
}

/// Request counters of one remote object (what `--status` and the benchmarks report).
#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    retries: AtomicU64,
    bytes: AtomicU64,
    joined: AtomicU64,
}

/// A snapshot of [`RemoteStorage`]'s counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RemoteStats {
    /// Requests sent (attempts, HEAD included).
    pub requests: u64,
    /// Of those, repeats after a failure.
    pub retries: u64,
    /// Body bytes received.
    pub bytes: u64,
    /// Reads served from another read's in-flight or recent request.
    pub joined: u64,
}

/// One object opened for reading.
pub struct RemoteStorage {
    remote: Arc<Remote>,
    path: ObjPath,
    desc: String,
    len: u64,
    etag: Option<String>,
    modified: Option<std::time::SystemTime>,
    flights: Flights,
    stats: Counters,
}

impl std::fmt::Debug for RemoteStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteStorage")
            .field("desc", &self.desc)
            .field("len", &self.len)
            .field("etag", &self.etag)
            .finish()
    }
}

impl RemoteStorage {
    /// The ETag pinned at open (`None` if the server sent none: then replacement is only caught
    /// by the chunk hashes).
    pub fn etag(&self) -> Option<&str> {
        self.etag.as_deref()
    }

    pub fn stats(&self) -> RemoteStats {
        let s = &self.stats;
        RemoteStats {
            requests: s.requests.load(Ordering::Relaxed),
            retries: s.retries.load(Ordering::Relaxed),
            bytes: s.bytes.load(Ordering::Relaxed),
            joined: s.joined.load(Ordering::Relaxed),
        }
    }

    /// One range GET with `If-Match`, retried until the deadline; a short body is a failure.
    fn fetch(&self, offset: u64, len: usize) -> Result<bytes::Bytes, StorageError> {
        let what = format!("{}: bytes {offset}..{}", self.desc, offset + len as u64);
        let stats = &self.stats;
        self.remote.retry(&what, Some(stats), |store| {
            let opts = GetOptions {
                range: Some(GetRange::Bounded(offset..offset + len as u64)),
                if_match: self.etag.clone(),
                ..Default::default()
            };
            let path = self.path.clone();
            async move {
                let r = store
                    .get_opts(&path, opts)
                    .await
                    .map_err(Failure::from_store)?;
                let b = r.bytes().await.map_err(Failure::from_store)?;
                stats.bytes.fetch_add(b.len() as u64, Ordering::Relaxed);
                if b.len() != len {
                    return Err(Failure {
                        kind: io::ErrorKind::UnexpectedEof,
                        msg: format!("short body: {} of {len} bytes", b.len()),
                        retry: true,
                    });
                }
                Ok(b)
            }
        })
    }
}

impl Storage for RemoteStorage {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<(), StorageError> {
        check_range(self.len, offset, buf.len())?;
        if buf.is_empty() {
            return Ok(());
        }
        let end = offset + buf.len() as u64;
        if let Some(f) = self.flights.join(offset, end)
            && let Some(bytes) = f.wait()
        {
            let at = (offset - f.start) as usize;
            buf.copy_from_slice(&bytes[at..at + buf.len()]);
            self.stats.joined.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        // That request failed: try on our own (within our own deadline).
        let flight = self.flights.start(offset, end);
        let r = self.fetch(offset, buf.len());
        if let Ok(b) = &r {
            buf.copy_from_slice(b)
        }
        self.flights.finish(&flight, r.as_ref().ok().cloned());
        r.map(|_| ())
    }

    fn describe(&self) -> String {
        self.desc.clone()
    }

    fn coalesce_limit(&self) -> usize {
        COALESCE_LIMIT
    }

    fn modified(&self) -> Option<std::time::SystemTime> {
        self.modified
    }

    fn stats_line(&self) -> Option<String> {
        let s = self.stats();
        Some(format!(
            "{}: {} requests ({} retries), {} bytes received, {} reads joined another's request, ETag {}",
            self.desc,
            s.requests,
            s.retries,
            s.bytes,
            s.joined,
            self.etag.as_deref().unwrap_or("(none)")
        ))
    }
}

/// One range request, running or recently finished.
struct Flight {
    start: u64,
    end: u64,
    state: Mutex<FlightState>,
    cv: Condvar,
}

enum FlightState {
    Running,
    Done(bytes::Bytes),
    Failed,
}

impl Flight {
    /// Wait for the request to finish: its bytes, or `None` if it failed.
    fn wait(&self) -> Option<bytes::Bytes> {
        let mut g = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            match &*g {
                FlightState::Running => g = self.cv.wait(g).unwrap_or_else(|p| p.into_inner()),
                FlightState::Done(b) => return Some(b.clone()),
                FlightState::Failed => return None,
            }
        }
    }
}

/// Requests in flight and recently finished, so that overlapping reads share one request.
#[derive(Default)]
struct Flights {
    inner: Mutex<FlightList>,
}

#[derive(Default)]
struct FlightList {
    list: VecDeque<Arc<Flight>>,
    recent_bytes: usize,
}

impl Flights {
    /// A running or recent request covering `[start, end)`.
    fn join(&self, start: u64, end: u64) -> Option<Arc<Flight>> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.list
            .iter()
            .rev()
            .find(|f| f.start <= start && end <= f.end)
            .cloned()
    }

    fn start(&self, start: u64, end: u64) -> Arc<Flight> {
        let f = Arc::new(Flight {
            start,
            end,
            state: Mutex::new(FlightState::Running),
            cv: Condvar::new(),
        });
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.list.push_back(f.clone());
        Self::trim(&mut g);
        f
    }

    /// Record the outcome, wake the waiters, keep the bytes while the recent budget allows.
    fn finish(&self, f: &Arc<Flight>, bytes: Option<bytes::Bytes>) {
        let kept = bytes.as_ref().map(|b| b.len());
        {
            let mut s = f.state.lock().unwrap_or_else(|p| p.into_inner());
            *s = match bytes {
                Some(b) => FlightState::Done(b),
                None => FlightState::Failed,
            };
        }
        f.cv.notify_all();
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        match kept {
            Some(n) if n >= RECENT_MIN => g.recent_bytes += n,
            // Failed, or one chunk's read (the cache holds it): not kept.
            _ => g.list.retain(|x| !Arc::ptr_eq(x, f)),
        }
        Self::trim(&mut g);
    }

    /// Drop the oldest finished flights beyond the byte and count budgets (running ones stay).
    fn trim(g: &mut FlightList) {
        while g.recent_bytes > RECENT_BYTES || g.list.len() > MAX_FLIGHTS {
            let Some(pos) = g.list.iter().position(|f| {
                !matches!(
                    *f.state.lock().unwrap_or_else(|p| p.into_inner()),
                    FlightState::Running
                )
            }) else {
                break;
            };
            if let Some(f) = g.list.remove(pos)
                && let FlightState::Done(b) = &*f.state.lock().unwrap_or_else(|p| p.into_inner())
            {
                g.recent_bytes = g.recent_bytes.saturating_sub(b.len());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn upload_parts_reach_s3s_object_limit_within_its_part_limits() {
        let sizes: Vec<u64> = (0..MAX_PARTS).map(|q| super::part_len(q) as u64).collect();
        assert!(
            sizes.iter().all(|&n| n >= 5 << 20 && n <= 5 << 30),
            "S3: 5 MiB..5 GiB"
        );
        assert!(sizes.windows(2).all(|w| w[0] <= w[1]));
        assert!(
            sizes.iter().sum::<u64>() >= 5 << 40,
            "10,000 parts hold 5 TiB"
        );
        assert_eq!(sizes[..2000].iter().sum::<u64>(), 2000 * (16 << 20));
    }

    use super::*;

    #[test]
    fn urls() {
        let p = |s: &str| RemoteUrl::parse(s);
        assert!(p("/tmp/a.upg").is_none());
        assert!(p("model.upg").is_none());
        assert_eq!(
            p("s3://b/k/m.upg").unwrap().unwrap(),
            RemoteUrl::S3 {
                bucket: "b".into(),
                key: "k/m.upg".into()
            }
        );
        assert!(p("s3://b/models/").unwrap().unwrap().is_prefix());
        assert!(p("s3://b").unwrap().unwrap().is_prefix());
        assert!(!p("s3://b/m.upg").unwrap().unwrap().is_prefix());
        assert!(p("s3:///k").unwrap().is_err());
        assert!(p("s3://b/a/../k").unwrap().is_err());
        assert!(p("https://h/x.upg").unwrap().is_ok());
        assert!(p("https://h/").unwrap().is_err());
        assert!(p("http://h/x.upg?sig=1").unwrap().is_err());
        assert_eq!(
            p("https://h/d/x.upg").unwrap().unwrap().to_string(),
            "https://h/d/x.upg"
        );
    }

    #[test]
    fn flights_share_and_forget_failures() {
        let fl = Flights::default();
        let n = RECENT_MIN as u64;
        let f = fl.start(100, 100 + n);
        assert!(fl.join(120, 180).is_some());
        assert!(fl.join(50, 150).is_none());
        fl.finish(&f, Some(bytes::Bytes::from(vec![7u8; RECENT_MIN])));
        let j = fl.join(150, 100 + n).unwrap();
        assert_eq!(j.wait().unwrap().len(), RECENT_MIN);
        let small = fl.start(10, 20);
        fl.finish(&small, Some(bytes::Bytes::from(vec![1u8; 10])));
        assert!(fl.join(10, 20).is_none(), "a one-chunk read is not kept");
        let g = fl.start(10 * n, 11 * n);
        fl.finish(&g, None);
        assert!(
            fl.join(10 * n, 11 * n).is_none(),
            "a failed request is not joined"
        );
    }

    #[test]
    fn missing_credentials_are_a_clear_error() {
        // Only meaningful when the environment has none; CI's has none.
        if env("AWS_ACCESS_KEY_ID").is_some() || env("AWS_PROFILE").is_some() {
            return;
        }
        let url = RemoteUrl::parse("s3://bkt/m.upg").unwrap().unwrap();
        if std::env::var_os("HOME")
            .map(|h| std::path::Path::new(&h).join(".aws/credentials").exists())
            .unwrap_or(false)
        {
            return;
        }
        let e = Remote::connect(&url, &RemoteOptions::default()).unwrap_err();
        assert_eq!(e.kind, io::ErrorKind::PermissionDenied);
        assert!(e.msg.contains("--no-sign-request"), "{}", e.msg);
    }
}

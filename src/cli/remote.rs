//! Command-line side of remote archives: the flags every archive-reading command shares
//! (`--endpoint-url`, `--no-sign-request`, `--region`, `--profile`, `--timeout`, named as the AWS
//! CLI names them), opening an archive from a path or URL, and expanding mount sources that mix
//! local paths, S3 objects, S3 prefixes and HTTP URLs.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::CliError;
use crate::archive::{Archive, OpenOptions};
use crate::storage::remote::{Remote, RemoteOptions, RemoteUrl};
use crate::storage::{Location, StorageError, open_location};
use crate::vfs::{Found, Source};

/// Where remote archives are read from; environment variables as in the AWS CLI
/// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_PROFILE`,
/// `AWS_REGION`, `AWS_ENDPOINT_URL`, `AWS_SHARED_CREDENTIALS_FILE`, `AWS_CONFIG_FILE`).
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Remote archives (s3://BUCKET/KEY.upg, https://HOST/PATH.upg)")]
pub struct RemoteArgs {
    /// S3-compatible endpoint, e.g. http://127.0.0.1:9000 (default: $AWS_ENDPOINT_URL_S3,
    /// $AWS_ENDPOINT_URL, the profile's endpoint_url, else AWS). Path-style addressing.
    #[arg(long, value_name = "URL")]
    pub endpoint_url: Option<String>,
    /// Send unsigned requests (public buckets), like `aws s3 --no-sign-request`.
    #[arg(long)]
    pub no_sign_request: bool,
    /// AWS region (default: $AWS_REGION, $AWS_DEFAULT_REGION, the profile's, us-east-1).
    #[arg(long, value_name = "REGION")]
    pub region: Option<String>,
    /// Profile of ~/.aws/credentials and ~/.aws/config (default: $AWS_PROFILE, else default).
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,
    /// Seconds one remote operation may take, all retries included, before it fails (a read on
    /// a mount then answers EIO; the next read tries afresh).
    #[arg(long, value_name = "SECS", default_value_t = 30.0, value_parser = positive_secs)]
    pub timeout: f64,
}

fn positive_secs(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() && v <= 86_400.0 => Ok(v),
        Ok(_) => Err("must be more than 0 and at most 86400 seconds".into()),
        Err(e) => Err(e.to_string()),
    }
}

impl Default for RemoteArgs {
    fn default() -> Self {
        RemoteArgs {
            endpoint_url: None,
            no_sign_request: false,
            region: None,
            profile: None,
            timeout: crate::storage::remote::DEFAULT_TIMEOUT.as_secs_f64(),
        }
    }
}

impl RemoteArgs {
    pub fn options(&self) -> RemoteOptions {
        RemoteOptions {
            endpoint_url: self.endpoint_url.clone(),
            no_sign_request: self.no_sign_request,
            region: self.region.clone(),
            profile: self.profile.clone(),
            timeout: Duration::from_secs_f64(self.timeout),
        }
    }
}

/// Open the archive at `loc` (a local path or an `s3://` / `http(s)://` URL of one archive).
pub fn open_archive(
    loc: &Path,
    remote: &RemoteArgs,
    cache_bytes: usize,
) -> Result<Archive, CliError> {
    let opts = OpenOptions {
        cache_bytes,
        ..OpenOptions::default()
    };
    match Location::parse(loc.as_os_str()).map_err(|e| CliError::Usage(e.to_string()))? {
        Location::Local(p) => Ok(Archive::open_with(&p, opts)?),
        l => {
            let s = open_location(&l, &remote.options())
                .map_err(|e| CliError::Remote(e.to_string()))?;
            Ok(Archive::open_storage(s, opts)?)
        }
    }
}

/// The sub-directory name of a remote archive: the last path segment without `.upg`.
fn remote_dir_name(key: &str) -> String {
    let last = key.trim_end_matches('/').rsplit('/').next().unwrap_or(key);
    crate::vfs::archive_dir_name(Path::new(last))
}

/// Expand mount sources: local paths through `vfs::list_local` (a folder contributes each
/// `.upg` inside); an `s3://BUCKET/PREFIX/` every `.upg` object directly under the prefix; then
/// `vfs::lay_out`, the rule the tests use too (one single archive goes to the root, anything
/// else gets one sub-directory per archive). Remote objects are opened here (HEAD), so a wrong
/// credential is an error before the mount.
pub fn expand_mount_sources(
    sources: &[std::path::PathBuf],
    remote: &RemoteArgs,
) -> Result<Vec<(Option<String>, Source)>, String> {
    let opts = remote.options();
    let mut found: Vec<Found> = Vec::new();
    for s in sources {
        match Location::parse(s.as_os_str()).map_err(|e| e.to_string())? {
            Location::Local(p) => {
                found.extend(crate::vfs::list_local(&p).map_err(|e| e.to_string())?);
            }
            Location::Remote(u) if u.is_prefix() => {
                let RemoteUrl::S3 { key: prefix, .. } = &u else {
                    unreachable!("only S3 URLs can be prefixes")
                };
                let r = Remote::connect(&u, &opts).map_err(|e| e.to_string())?;
                let keys = r.list_archives(prefix).map_err(|e| e.to_string())?;
                if keys.is_empty() {
                    return Err(format!("{u}: no .upg objects directly under this prefix"));
                }
                for k in keys {
                    let st = r.open(&k).map_err(|e| e.to_string())?;
                    found.push(Found {
                        name: remote_dir_name(&k),
                        source: Source::Storage(Arc::new(st)),
                        listed: true,
                    });
                }
            }
            Location::Remote(u) => {
                let name = remote_dir_name(&u.to_string());
                let st = open_location(&Location::Remote(u), &opts)
                    .map_err(|e: StorageError| e.to_string())?;
                found.push(Found {
                    name,
                    source: Source::Storage(st),
                    listed: false,
                });
            }
        }
    }
    crate::vfs::lay_out(found).map_err(|e| e.to_string())
}

/// A sink that writes an archive being packed straight into a multipart upload to `url`
/// (`s3://` only; nothing is visible until the pack completes it, and a failed pack aborts it).
pub fn upload_sink(
    url: &RemoteUrl,
    remote: &RemoteArgs,
    force: bool,
) -> Result<Box<dyn crate::archive::writer::ArchiveSink>, CliError> {
    let RemoteUrl::S3 { key, .. } = url else {
        return Err(CliError::Usage(format!(
            "{url}: upload needs an s3:// URL (HTTP servers are read-only here)"
        )));
    };
    if url.is_prefix() {
        return Err(CliError::Usage(format!(
            "{url}: names a prefix; give the object key, e.g. {url}model.upg"
        )));
    }
    let r = Remote::connect(url, &remote.options()).map_err(|e| CliError::Remote(e.to_string()))?;
    // As for a local output: an existing object is replaced only with --force.
    if !force && r.open(key).is_ok() {
        return Err(CliError::Usage(format!(
            "{url} already exists; pass --force to replace it"
        )));
    }
    let w = r
        .upload_writer(key, Box::new(|_| {}))
        .map_err(|e| CliError::Remote(e.to_string()))?;
    Ok(Box::new(w))
}

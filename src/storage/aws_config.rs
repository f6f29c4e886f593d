//! The shared AWS configuration files, as the AWS CLI and SDKs read them: `~/.aws/credentials`
//! (or `$AWS_SHARED_CREDENTIALS_FILE`) and `~/.aws/config` (or `$AWS_CONFIG_FILE`), profile
//! `$AWS_PROFILE` (or `default`).
//!
//! Written by hand because `object_store` reads only environment variables and no maintained
//! small crate parses just these two files; the format is a plain INI subset: `[name]` sections
//! (`[profile name]` in the config file, except `[default]`), `key = value` lines, `#`/`;`
//! comments. Only the keys upg uses are kept: credentials, session token, region, endpoint URL.
//! Nothing read here is ever logged or put into an error message (the secret and token).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The settings of one profile, merged from both files (credentials file wins for keys).
#[derive(Default, Clone, PartialEq, Eq)]
pub struct Profile {
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
}

impl std::fmt::Debug for Profile {
    // Never print the secret or the token, even in a debug dump.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Profile")
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "***"),
            )
            .field("session_token", &self.session_token.as_ref().map(|_| "***"))
            .field("region", &self.region)
            .field("endpoint_url", &self.endpoint_url)
            .finish()
    }
}

/// Sections of an INI text: section name -> (key -> value). Keys are lower-cased; values are
/// trimmed. Lines that are neither are ignored (the AWS tools ignore them too).
fn parse_ini(text: &str) -> HashMap<String, HashMap<String, String>> {
    let mut out: HashMap<String, HashMap<String, String>> = HashMap::new();
    let mut cur: Option<String> = None;
    for line in text.lines() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') || l.starts_with(';') {
            continue;
        }
        if let Some(name) = l.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            let name = name.trim().to_string();
            out.entry(name.clone()).or_default();
            cur = Some(name);
            continue;
        }
        if let (Some(sec), Some((k, v))) = (&cur, l.split_once('=')) {
            out.entry(sec.clone())
                .or_default()
                .insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    out
}

fn home_file(env: &str, rel: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("HOME").map(|h| Path::new(&h).join(rel))
}

/// The profile `name` (or `$AWS_PROFILE`, or `default`) from the shared files; `None` when
/// neither file has it. An explicitly named profile that is missing is an error message.
pub fn load_profile(name: Option<&str>) -> Result<Option<Profile>, String> {
    let env_name = std::env::var("AWS_PROFILE").ok().filter(|s| !s.is_empty());
    let explicit = name.map(str::to_string).or(env_name);
    let pname = explicit.clone().unwrap_or_else(|| "default".to_string());
    let creds_path = home_file("AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials");
    let config_path = home_file("AWS_CONFIG_FILE", ".aws/config");
    let read = |p: &Option<PathBuf>| {
        p.as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .map(|t| parse_ini(&t))
            .unwrap_or_default()
    };
    let creds = read(&creds_path);
    let config = read(&config_path);
    let c = creds.get(&pname);
    let config_section = if pname == "default" {
        "default".to_string()
    } else {
        format!("profile {pname}")
    };
    let k = config.get(&config_section);
    if c.is_none() && k.is_none() {
        return match explicit {
            Some(p) => Err(format!(
                "AWS profile {p:?} not found in {} or {}",
                creds_path
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                config_path
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            )),
            None => Ok(None),
        };
    }
    let get = |key: &str| {
        c.and_then(|s| s.get(key))
            .or_else(|| k.and_then(|s| s.get(key)))
            .filter(|v| !v.is_empty())
            .cloned()
    };
    Ok(Some(Profile {
        access_key_id: get("aws_access_key_id"),
        secret_access_key: get("aws_secret_access_key"),
        session_token: get("aws_session_token"),
        region: get("region"),
        endpoint_url: get("endpoint_url"),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ini_sections_keys_and_comments() {
        let t = "# c\n[default]\naws_access_key_id = AK\n; x\nAWS_Secret_Access_Key=SK \n\
                 [profile dev]\nregion = eu-west-1\nendpoint_url = http://127.0.0.1:9000\n";
        let s = parse_ini(t);
        assert_eq!(s["default"]["aws_access_key_id"], "AK");
        assert_eq!(s["default"]["aws_secret_access_key"], "SK");
        assert_eq!(s["profile dev"]["region"], "eu-west-1");
        assert_eq!(s["profile dev"]["endpoint_url"], "http://127.0.0.1:9000");
    }

    #[test]
    fn debug_hides_secrets() {
        let p = Profile {
            access_key_id: Some("AKIDX".into()),
            secret_access_key: Some("s3cr3t-value".into()),
            session_token: Some("tok-value".into()),
            ..Profile::default()
        };
        let d = format!("{p:?}");
        assert!(d.contains("AKIDX"));
        assert!(
            !d.contains("s3cr3t-value") && !d.contains("tok-value"),
            "{d}"
        );
    }
}

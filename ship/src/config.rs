//! What the shipper is told: where to upload, with which credentials, and
//! the retention and drain policies. Built by the binary from flags and the
//! profile's `[ship]` table; validated here with errors that name the flag
//! or file.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Smallest multipart part S3 accepts (except the last part).
pub const PART_BYTES_MIN: u64 = 5 << 20;
/// Largest part number S3 accepts.
pub const PARTS_MAX: u64 = 10_000;

/// An S3-compatible destination.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Target {
    /// Bucket name.
    pub bucket: String,
    /// Key prefix (no leading or trailing `/`; may be empty).
    pub prefix: String,
    /// Endpoint URL (`https://s3.REGION.amazonaws.com` by default).
    pub endpoint: String,
    /// Signing region.
    pub region: String,
    /// Path-style URLs (`ENDPOINT/BUCKET/KEY`) rather than virtual-host style.
    pub path_style: bool,
    /// Access key id.
    pub access_key: String,
    /// Secret key.
    pub secret_key: String,
    /// Session token (temporary credentials).
    pub session_token: Option<String>,
}

impl std::fmt::Debug for S3Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a secret.
        f.debug_struct("S3Target")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("path_style", &self.path_style)
            .field("access_key", &self.access_key)
            .finish_non_exhaustive()
    }
}

/// The whole shipping configuration.
#[derive(Debug, Clone)]
pub struct ShipConfig {
    /// Upload to S3, when set.
    pub s3: Option<S3Target>,
    /// Run this shell command with each completed file's path (`-z`), when set.
    pub post_rotate: Option<String>,
    /// At most this many post-rotate commands at once.
    pub post_rotate_jobs: usize,
    /// Probe name in object keys (default: the host name).
    pub probe: String,
    /// Uploader threads.
    pub threads: usize,
    /// Files of at least this many bytes go by multipart upload, in parts of this size.
    pub part_bytes: u64,
    /// Upload bandwidth cap, bytes per second (all threads together).
    pub bandwidth_bytes_per_s: Option<u64>,
    /// Delete a local file (and its index and manifest) once it is shipped.
    pub then_delete: bool,
    /// Let `-W` and the disk budget delete files not yet shipped (counted, logged by name).
    pub may_drop: bool,
    /// At a normal exit, keep shipping the backlog this long.
    pub drain_timeout: Duration,
    /// First retry delay; doubles per failure up to `retry_max`, with jitter.
    pub retry_base: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// How often the series directories are scanned for completed files.
    pub scan_interval: Duration,
}

impl Default for ShipConfig {
    fn default() -> Self {
        ShipConfig {
            s3: None,
            post_rotate: None,
            post_rotate_jobs: 2,
            probe: hostname(),
            threads: 2,
            part_bytes: 16 << 20,
            bandwidth_bytes_per_s: None,
            then_delete: false,
            may_drop: false,
            drain_timeout: Duration::from_secs(60),
            retry_base: Duration::from_millis(500),
            retry_max: Duration::from_secs(30),
            scan_interval: Duration::from_millis(250),
        }
    }
}

impl ShipConfig {
    /// Whether anything ships at all.
    pub fn enabled(&self) -> bool {
        self.s3.is_some() || self.post_rotate.is_some()
    }

    /// Check the values (errors name the flag).
    pub fn validate(&self) -> Result<(), String> {
        if self.part_bytes < PART_BYTES_MIN {
            return Err(format!(
                "--ship-part-size {} is below S3's minimum part of 5 MiB",
                self.part_bytes
            ));
        }
        if self.threads == 0 || self.threads > 64 {
            return Err("--ship-threads must be 1 to 64".into());
        }
        if self.post_rotate_jobs == 0 || self.post_rotate_jobs > 64 {
            return Err("--post-rotate-jobs must be 1 to 64".into());
        }
        if !self.probe.chars().all(key_safe) || self.probe.is_empty() {
            return Err(format!(
                "--ship-probe {:?}: use letters, digits, '.', '_' and '-'",
                self.probe
            ));
        }
        if (self.then_delete || self.may_drop) && !self.enabled() {
            return Err("--ship-then-delete / --ship-may-drop need --ship or --post-rotate".into());
        }
        Ok(())
    }
}

fn key_safe(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// The host name (for the probe part of keys), `probe` when unknown.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| {
            s.trim()
                .chars()
                .filter(|c| key_safe(*c))
                .collect::<String>()
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "probe".into())
}

/// `s3://BUCKET[/PREFIX]` → (bucket, prefix).
pub fn parse_s3_url(url: &str) -> Result<(String, String), String> {
    let rest = url
        .strip_prefix("s3://")
        .ok_or_else(|| format!("--ship {url:?}: expected s3://BUCKET/PREFIX"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let ok = (3..=63).contains(&bucket.len())
        && bucket
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    if !ok {
        return Err(format!(
            "--ship {url:?}: bucket {bucket:?} is not a valid S3 bucket name (3-63 of a-z 0-9 . -)"
        ));
    }
    let prefix = prefix.trim_matches('/').to_string();
    if prefix.split('/').any(|p| p == "." || p == "..") {
        return Err(format!(
            "--ship {url:?}: the prefix may not hold . or .. parts"
        ));
    }
    Ok((bucket.to_string(), prefix))
}

/// Credentials: from `file` when given (it must not be readable by group or
/// others), else from `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` /
/// `AWS_SESSION_TOKEN`. The file is either the AWS shared-credentials form
/// (`aws_access_key_id = ...` lines, the `[default]` profile or the first)
/// or two lines: access key, secret key.
pub fn load_credentials(file: Option<&Path>) -> Result<(String, String, Option<String>), String> {
    if let Some(path) = file {
        return read_credentials_file(path);
    }
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
        (Some(a), Some(s)) => Ok((a, s, env("AWS_SESSION_TOKEN"))),
        _ => Err(
            "--ship: no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or give \
             --ship-credentials FILE (mode 0600)"
                .into(),
        ),
    }
}

fn read_credentials_file(path: &Path) -> Result<(String, String, Option<String>), String> {
    use std::os::unix::fs::PermissionsExt;
    let name = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("--ship-credentials {name}: {e}"))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(format!(
            "--ship-credentials {name}: mode {:o} lets others read it; chmod 600 it",
            meta.permissions().mode() & 0o777
        ));
    }
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("--ship-credentials {name}: {e}"))?;
    let (mut key, mut secret, mut token) = (None, None, None);
    let mut section: Option<String> = None;
    let mut chosen: Option<String> = None;
    let mut plain = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = Some(s.trim().to_string());
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            let sec = section.clone().unwrap_or_else(|| "default".into());
            if chosen.is_none() {
                chosen = Some(sec.clone());
            }
            if sec == "default" && chosen.as_deref() != Some("default") {
                // [default] wins over an earlier profile.
                chosen = Some(sec.clone());
                (key, secret, token) = (None, None, None);
            }
            if chosen.as_deref() != Some(sec.as_str()) {
                continue;
            }
            let v = v.trim().to_string();
            match k.trim() {
                "aws_access_key_id" => key = Some(v),
                "aws_secret_access_key" => secret = Some(v),
                "aws_session_token" => token = Some(v),
                _ => {}
            }
        } else {
            plain.push(line.to_string());
        }
    }
    if key.is_none() && plain.len() >= 2 {
        return Ok((plain[0].clone(), plain[1].clone(), plain.get(2).cloned()));
    }
    match (key, secret) {
        (Some(k), Some(s)) => Ok((k, s, token)),
        _ => Err(format!(
            "--ship-credentials {name}: no aws_access_key_id and aws_secret_access_key \
             (or two lines: key, secret)"
        )),
    }
}

/// A directory of one queue's file series that the shipper watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesDir {
    /// The capture job's name (in object keys).
    pub job: String,
    /// The queue (in object keys, `qNN`).
    pub queue: u32,
    /// The directory.
    pub dir: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn s3_urls() {
        assert_eq!(
            parse_s3_url("s3://caps/site1/").unwrap(),
            ("caps".into(), "site1".into())
        );
        assert_eq!(
            parse_s3_url("s3://caps").unwrap(),
            ("caps".into(), "".into())
        );
        assert!(parse_s3_url("caps/x").unwrap_err().contains("s3://"));
        assert!(parse_s3_url("s3://Caps/x").unwrap_err().contains("bucket"));
        assert!(parse_s3_url("s3://caps/a/../b").is_err());
    }

    #[test]
    fn credentials_files_must_be_private() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("creds");
        std::fs::write(
            &p,
            "[other]\naws_access_key_id = O\naws_secret_access_key = OS\n\
             [default]\naws_access_key_id = K\naws_secret_access_key = S\n",
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(
            load_credentials(Some(&p))
                .unwrap_err()
                .contains("chmod 600")
        );
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            load_credentials(Some(&p)).unwrap(),
            ("K".into(), "S".into(), None)
        );
        std::fs::write(&p, "AK\nSK\n").unwrap();
        assert_eq!(
            load_credentials(Some(&p)).unwrap(),
            ("AK".into(), "SK".into(), None)
        );
        std::fs::write(&p, "nothing = here\n").unwrap();
        assert!(load_credentials(Some(&p)).unwrap_err().contains("creds"));
    }

    #[test]
    fn validation_names_the_flag() {
        let c = ShipConfig {
            part_bytes: 1 << 20,
            ..ShipConfig::default()
        };
        assert!(c.validate().unwrap_err().contains("--ship-part-size"));
        let c = ShipConfig {
            then_delete: true,
            ..ShipConfig::default()
        };
        assert!(c.validate().unwrap_err().contains("--ship-then-delete"));
    }
}

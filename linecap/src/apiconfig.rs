//! The control API's settings: where it listens, its token, the flags of
//! `linecap capture` that set them (a leaf module: `config` and `api` both
//! use it).

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// Where `--api` given bare listens.
pub const DEFAULT_SOCKET: &str = "/run/linecap/api.sock";

/// The control API's flags of `linecap capture` (flattened into its arguments).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ApiArgs {
    /// Serve the control API (status, jobs added and stopped while capturing) on a unix socket
    /// (unix:PATH; the default when --api is given bare is unix:/run/linecap/api.sock, mode 0600)
    /// or a TCP address (127.0.0.1:9465; needs --api-token). See docs/operations.md.
    #[arg(long, value_name = "unix:PATH|ADDR:PORT", num_args = 0..=1,
          default_missing_value = "unix:/run/linecap/api.sock", help_heading = "Control API")]
    pub api: Option<ApiListen>,
    /// Bearer token file (mode 0600; one line, at least 16 characters): every request but
    /// /v1/openapi.json must send `Authorization: Bearer TOKEN`.
    #[arg(
        long,
        value_name = "FILE",
        requires = "api",
        help_heading = "Control API"
    )]
    pub api_token: Option<PathBuf>,
    /// Allow --api on a non-loopback TCP address (put a TLS proxy in front of it).
    #[arg(long, requires = "api", help_heading = "Control API")]
    pub api_allow_remote: bool,
    /// Directory inside which jobs added through the API write (default: the parent of the
    /// first job's output directory).
    #[arg(
        long,
        value_name = "DIR",
        requires = "api",
        help_heading = "Control API"
    )]
    pub api_job_root: Option<PathBuf>,
    /// Capture jobs that may run at once, counting those given at start (default: those jobs
    /// plus 4 with --api). Each costs one ring per queue.
    #[arg(long, value_name = "N", help_heading = "Control API")]
    pub max_jobs: Option<usize>,
}

impl ApiArgs {
    /// The validated API settings and the job limit, for `start_jobs` jobs
    /// whose first writes into `first_out`.
    pub fn config(
        &self,
        start_jobs: usize,
        first_out: &Path,
    ) -> anyhow::Result<(Option<ApiConfig>, usize)> {
        let max = linecap_dataplane::worker::MAX_JOBS;
        let max_jobs = match self.max_jobs {
            Some(n) => {
                if n < start_jobs || n > max {
                    bail!("--max-jobs {n}: give {start_jobs} (the jobs given at start) to {max}");
                }
                n
            }
            None if self.api.is_some() => (start_jobs + 4).min(max),
            None => start_jobs,
        };
        if self.max_jobs.is_some_and(|n| n > start_jobs) && self.api.is_none() {
            bail!(
                "--max-jobs above the jobs given at start needs --api (jobs are added through it)"
            );
        }
        let Some(listen) = &self.api else {
            return Ok((None, max_jobs));
        };
        let root = match &self.api_job_root {
            Some(r) => r.clone(),
            None => {
                let abs =
                    std::path::absolute(first_out).unwrap_or_else(|_| first_out.to_path_buf());
                abs.parent()
                    .map_or_else(|| PathBuf::from("/"), Path::to_path_buf)
            }
        };
        let root = std::path::absolute(&root).unwrap_or(root);
        let cfg = ApiConfig::new(
            listen.clone(),
            self.api_token.as_deref(),
            self.api_allow_remote,
            root,
        )?;
        Ok((Some(cfg), max_jobs))
    }
}

/// Where the API listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiListen {
    /// A unix socket (mode 0600, owned by the capture's user).
    Unix(PathBuf),
    /// A TCP address (loopback unless `--api-allow-remote`).
    Tcp(SocketAddr),
}

impl std::str::FromStr for ApiListen {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(p) = s.strip_prefix("unix:") {
            if p.is_empty() {
                return Err("unix: needs a socket path (unix:/run/linecap/api.sock)".into());
            }
            return Ok(ApiListen::Unix(PathBuf::from(p)));
        }
        s.parse::<SocketAddr>()
            .map(ApiListen::Tcp)
            .map_err(|_| format!("{s:?}: give unix:PATH or ADDRESS:PORT (like 127.0.0.1:9465)"))
    }
}

impl std::fmt::Display for ApiListen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiListen::Unix(p) => write!(f, "unix:{}", p.display()),
            ApiListen::Tcp(a) => write!(f, "http://{a}"),
        }
    }
}

/// The control API's settings, validated.
#[derive(Clone)]
pub struct ApiConfig {
    /// Where to listen.
    pub listen: ApiListen,
    /// The bearer token, when one is required.
    pub token: Option<String>,
    /// Directory inside which API-created jobs write.
    pub job_root: PathBuf,
}

impl std::fmt::Debug for ApiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiConfig")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("job_root", &self.job_root)
            .finish()
    }
}

impl ApiConfig {
    /// Check the flags: a TCP address needs a token, and a non-loopback one
    /// `--api-allow-remote`; the token file must be mode 0600 (or stricter).
    pub fn new(
        listen: ApiListen,
        token_file: Option<&Path>,
        allow_remote: bool,
        job_root: PathBuf,
    ) -> anyhow::Result<Self> {
        if let ApiListen::Tcp(a) = &listen {
            if !a.ip().is_loopback() && !allow_remote {
                bail!(
                    "--api {a}: not a loopback address; the API changes the capture, so it \
                     stays on the host unless --api-allow-remote is given (then put it behind \
                     a TLS proxy)"
                );
            }
            if token_file.is_none() {
                bail!(
                    "--api {a}: a TCP listener needs --api-token FILE (a unix socket is guarded by its file mode)"
                );
            }
        }
        let token = token_file.map(load_token).transpose()?;
        Ok(ApiConfig {
            listen,
            token,
            job_root,
        })
    }
}

/// Read a token file: mode 0600 or stricter, one line of at least 16
/// characters (lines starting with `#` are comments).
pub fn load_token(path: &Path) -> anyhow::Result<String> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("--api-token {}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        bail!(
            "--api-token {}: mode {mode:04o} lets other users read the token; run chmod 600 {}",
            path.display(),
            path.display()
        );
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("--api-token {}", path.display()))?;
    let token = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .unwrap_or_default()
        .to_string();
    if token.len() < 16 || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        bail!(
            "--api-token {}: the token must be one line of at least 16 visible characters \
             (like the output of: openssl rand -hex 32)",
            path.display()
        );
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_parse() {
        assert_eq!(
            "unix:/run/x.sock".parse::<ApiListen>(),
            Ok(ApiListen::Unix("/run/x.sock".into()))
        );
        assert_eq!(
            "127.0.0.1:9465".parse::<ApiListen>(),
            Ok(ApiListen::Tcp("127.0.0.1:9465".parse().unwrap()))
        );
        assert!("unix:".parse::<ApiListen>().is_err());
        assert!("localhost".parse::<ApiListen>().is_err());
    }

    #[test]
    fn remote_tcp_needs_the_flag_and_tcp_needs_a_token() {
        let d = tempfile::tempdir().unwrap();
        let tok = d.path().join("t");
        std::fs::write(&tok, "0123456789abcdef0123\n").unwrap();
        std::fs::set_permissions(&tok, std::fs::Permissions::from_mode(0o600)).unwrap();
        let remote: ApiListen = "0.0.0.0:9465".parse().unwrap();
        let e = ApiConfig::new(remote.clone(), Some(&tok), false, d.path().into()).unwrap_err();
        assert!(format!("{e}").contains("--api-allow-remote"), "{e}");
        assert!(ApiConfig::new(remote, Some(&tok), true, d.path().into()).is_ok());
        let local: ApiListen = "127.0.0.1:9465".parse().unwrap();
        let e = ApiConfig::new(local, None, false, d.path().into()).unwrap_err();
        assert!(format!("{e}").contains("--api-token"), "{e}");
    }

    #[test]
    fn token_files_must_be_private_and_long_enough() {
        let d = tempfile::tempdir().unwrap();
        let tok = d.path().join("t");
        std::fs::write(
            &tok,
            "# made by openssl rand -hex 16\n0123456789abcdef0123\n",
        )
        .unwrap();
        std::fs::set_permissions(&tok, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load_token(&tok).unwrap_err();
        assert!(format!("{e}").contains("chmod 600"), "{e}");
        std::fs::set_permissions(&tok, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(load_token(&tok).unwrap(), "0123456789abcdef0123");
        std::fs::write(&tok, "short\n").unwrap();
        assert!(load_token(&tok).is_err());
    }
}

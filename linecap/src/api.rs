//! The control API: HTTP/JSON on a unix socket (default) or a loopback TCP
//! port, for a running capture. Routes (versioned under `/v1`; the OpenAPI 3
//! document is `docs/api/openapi.json`, served at `/v1/openapi.json`):
//!
//! - `GET /v1/status`: sources, queues, cores, jobs with their counters,
//!   files and bytes per output directory, uptime;
//! - `GET /v1/jobs`, `POST /v1/jobs`, `GET /v1/jobs/{name}`,
//!   `DELETE /v1/jobs/{name}`.
//!
//! Served by `tiny_http` (already in the tree for `/metrics`; it listens on
//! unix sockets too) on two threads of their own, never on a capture core:
//! a request changes the capture only through `jobs.rs`, whose changes the
//! workers pick up at a burst boundary. Every request but the OpenAPI
//! document needs `Authorization: Bearer TOKEN` when a token is configured
//! (compared in constant time); a TCP listener always needs one.

use std::io::Read;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use crate::jobs::{Job, JobError, JobRequest, JobState, Jobs};

/// The OpenAPI 3 document of this API (kept in `docs/api/`).
pub const OPENAPI: &str = include_str!("../../docs/api/openapi.json");

/// Largest request body read (a job request is a few hundred bytes).
pub const BODY_BYTES_MAX: usize = 64 * 1024;
/// Threads answering requests.
const API_THREADS: usize = 2;
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

/// What the status route says of the capture besides its jobs.
#[derive(Debug, Clone)]
pub struct CaptureInfo {
    sources: Vec<String>,
    worker_cores: Vec<usize>,
    writer_threads: usize,
    started: SystemTime,
}

impl CaptureInfo {
    /// From the capture's configuration.
    pub fn new(cfg: &crate::pipeline::CaptureConfig) -> Self {
        CaptureInfo {
            sources: cfg.sources.iter().map(|s| s.label()).collect(),
            worker_cores: cfg.cores.clone(),
            writer_threads: cfg.writer_threads,
            started: SystemTime::now(),
        }
    }
}

/// The running API; stops (and removes its socket) when dropped.
pub struct ApiServer {
    server: Arc<tiny_http::Server>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    listen: ApiListen,
}

impl ApiServer {
    /// Bind and start answering.
    pub fn start(cfg: &ApiConfig, jobs: Arc<Jobs>, info: CaptureInfo) -> anyhow::Result<Self> {
        let server = match &cfg.listen {
            ApiListen::Tcp(a) => tiny_http::Server::http(a)
                .map_err(|e| anyhow::anyhow!("--api {a}: cannot listen: {e}"))?,
            ApiListen::Unix(p) => {
                if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).with_context(|| {
                        format!("--api unix:{}: creating {}", p.display(), dir.display())
                    })?;
                }
                // A socket left by a process that died: only a socket is removed.
                if let Ok(m) = std::fs::symlink_metadata(p) {
                    if !m.file_type().is_socket() {
                        bail!("--api unix:{}: exists and is not a socket", p.display());
                    }
                    if std::os::unix::net::UnixStream::connect(p).is_ok() {
                        bail!(
                            "--api unix:{}: another process is listening there",
                            p.display()
                        );
                    }
                    std::fs::remove_file(p).with_context(|| {
                        format!("--api unix:{}: removing the stale socket", p.display())
                    })?;
                }
                let s = tiny_http::Server::http_unix(p).map_err(|e| {
                    anyhow::anyhow!("--api unix:{}: cannot listen: {e}", p.display())
                })?;
                std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600))
                    .with_context(|| format!("--api unix:{}: chmod 600", p.display()))?;
                s
            }
        };
        let server = Arc::new(server);
        let stop = Arc::new(AtomicBool::new(false));
        let ctx = Arc::new(Ctx {
            jobs,
            info,
            token: cfg.token.clone(),
        });
        let threads = (0..API_THREADS)
            .map(|i| {
                let (server, stop, ctx) = (server.clone(), stop.clone(), ctx.clone());
                std::thread::Builder::new()
                    .name(format!("lc-api-{i}"))
                    .spawn(move || {
                        while !stop.load(Ordering::Relaxed) {
                            match server.recv_timeout(Duration::from_millis(100)) {
                                Ok(Some(req)) => serve(&ctx, req),
                                Ok(None) => {}
                                Err(_) => std::thread::sleep(Duration::from_millis(10)),
                            }
                        }
                    })
                    .expect("spawning an API thread")
            })
            .collect();
        Ok(ApiServer {
            server,
            stop,
            threads,
            listen: cfg.listen.clone(),
        })
    }

    /// Where it listens, for the log line.
    pub fn describe(&self) -> String {
        match (&self.listen, self.server.server_addr()) {
            (ApiListen::Tcp(_), tiny_http::ListenAddr::IP(a)) => format!("http://{a}"),
            (l, _) => l.to_string(),
        }
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.server.unblock();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        if let ApiListen::Unix(p) = &self.listen {
            let _ = std::fs::remove_file(p);
        }
    }
}

struct Ctx {
    jobs: Arc<Jobs>,
    info: CaptureInfo,
    token: Option<String>,
}

/// An answer: status and JSON body (or a static document).
struct Reply {
    status: u16,
    body: Vec<u8>,
    allow: Option<&'static str>,
}

impl Reply {
    fn json(status: u16, v: &Value) -> Self {
        Reply {
            status,
            body: serde_json::to_vec_pretty(v).unwrap_or_default(),
            allow: None,
        }
    }
    fn error(status: u16, field: Option<&str>, message: impl Into<String>) -> Self {
        Reply::json(
            status,
            &json!({"error": {"status": status, "message": message.into(), "field": field}}),
        )
    }
    fn job_error(e: JobError) -> Self {
        Reply::error(e.status, e.field, e.message)
    }
    fn method_not_allowed(allow: &'static str) -> Self {
        let mut r = Reply::error(
            405,
            None,
            format!("method not allowed here; allowed: {allow}"),
        );
        r.allow = Some(allow);
        r
    }
}

fn serve(ctx: &Ctx, mut req: tiny_http::Request) {
    let reply = route(ctx, &mut req);
    let mut resp = tiny_http::Response::from_data(reply.body).with_status_code(reply.status);
    let header = |k: &str, v: &str| tiny_http::Header::from_bytes(k.as_bytes(), v.as_bytes()).ok();
    if let Some(h) = header("Content-Type", "application/json") {
        resp.add_header(h);
    }
    if let Some(a) = reply.allow.and_then(|a| header("Allow", a)) {
        resp.add_header(a);
    }
    if reply.status == 401
        && let Some(h) = header("WWW-Authenticate", "Bearer realm=\"linecap\"")
    {
        resp.add_header(h);
    }
    let _ = req.respond(resp);
}

/// Constant-time check of the `Authorization: Bearer` header.
fn authorized(ctx: &Ctx, req: &tiny_http::Request) -> bool {
    let Some(token) = &ctx.token else {
        return true;
    };
    let given = req
        .headers()
        .iter()
        .find(|h| h.field.equiv("Authorization"))
        .and_then(|h| h.value.as_str().strip_prefix("Bearer "))
        .unwrap_or("");
    // Equal lengths are compared in constant time; a length mismatch is
    // compared against the token itself so the time does not depend on it.
    let (a, b) = if given.len() == token.len() {
        (given.as_bytes(), token.as_bytes())
    } else {
        (token.as_bytes(), token.as_bytes())
    };
    bool::from(a.ct_eq(b)) && given.len() == token.len()
}

fn route(ctx: &Ctx, req: &mut tiny_http::Request) -> Reply {
    let url = req.url().to_string();
    let (path, _query) = url.split_once('?').unwrap_or((&url, ""));
    let method = req.method().clone();
    use tiny_http::Method::{Delete, Get, Post};
    if path == "/v1/openapi.json" {
        return match method {
            Get => Reply {
                status: 200,
                body: OPENAPI.as_bytes().to_vec(),
                allow: None,
            },
            _ => Reply::method_not_allowed("GET"),
        };
    }
    if !authorized(ctx, req) {
        return Reply::error(
            401,
            None,
            "missing or wrong bearer token (Authorization: Bearer TOKEN)",
        );
    }
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    match segments.as_slice() {
        ["v1", "status"] => match method {
            Get => Reply::json(200, &status(ctx)),
            _ => Reply::method_not_allowed("GET"),
        },
        ["v1", "jobs"] => match method {
            Get => Reply::json(
                200,
                &json!({"jobs": ctx.jobs.with(|all| all.iter().map(|j| job_json(&ctx.jobs, j)).collect::<Vec<_>>())}),
            ),
            Post => add_job(ctx, req),
            _ => Reply::method_not_allowed("GET, POST"),
        },
        ["v1", "jobs", name] => {
            let name = percent_decode(name);
            match method {
                Get => ctx
                    .jobs
                    .with(|all| {
                        all.iter()
                            .find(|j| j.config.name == name)
                            .map(|j| job_json(&ctx.jobs, j))
                    })
                    .map_or_else(
                        || Reply::error(404, None, format!("no capture job named {name:?}")),
                        |v| Reply::json(200, &v),
                    ),
                Delete => match ctx.jobs.stop(&name) {
                    Ok(()) => one_job(ctx, &name, 200),
                    Err(e) => Reply::job_error(e),
                },
                _ => Reply::method_not_allowed("GET, DELETE"),
            }
        }
        _ => Reply::error(404, None, format!("no route {path}; see /v1/openapi.json")),
    }
}

fn one_job(ctx: &Ctx, name: &str, status: u16) -> Reply {
    ctx.jobs
        .with(|all| {
            all.iter()
                .find(|j| j.config.name == name)
                .map(|j| job_json(&ctx.jobs, j))
        })
        .map_or_else(
            || Reply::error(500, None, "the job vanished"),
            |v| Reply::json(status, &v),
        )
}

fn add_job(ctx: &Ctx, req: &mut tiny_http::Request) -> Reply {
    if let Some(ct) = req
        .headers()
        .iter()
        .find(|h| h.field.equiv("Content-Type"))
        .map(|h| h.value.as_str().to_ascii_lowercase())
        && !ct.starts_with("application/json")
    {
        return Reply::error(
            415,
            None,
            format!("Content-Type {ct:?}: send application/json"),
        );
    }
    if req.body_length().is_some_and(|n| n > BODY_BYTES_MAX) {
        return Reply::error(
            413,
            None,
            format!("the body is larger than {BODY_BYTES_MAX} bytes"),
        );
    }
    let mut body = Vec::new();
    if let Err(e) = req
        .as_reader()
        .take(BODY_BYTES_MAX as u64 + 1)
        .read_to_end(&mut body)
    {
        return Reply::error(400, None, format!("reading the body: {e}"));
    }
    if body.len() > BODY_BYTES_MAX {
        return Reply::error(
            413,
            None,
            format!("the body is larger than {BODY_BYTES_MAX} bytes"),
        );
    }
    let job: JobRequest = match serde_json::from_slice(&body) {
        Ok(j) => j,
        Err(e) => return Reply::error(400, None, format!("the body is not a job request: {e}")),
    };
    match ctx.jobs.add(&job) {
        Ok(name) => one_job(ctx, &name, 201),
        Err(e) => Reply::job_error(e),
    }
}

fn rfc3339(t: SystemTime) -> String {
    let ns = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    linecap_writer::names::utc_rfc3339(ns)
}

/// A job as the API shows it: its policies, state and counters (totals and
/// per queue, in the final report's shape).
fn job_json(jobs: &Jobs, j: &Job) -> Value {
    let reports = jobs.queue_reports(j);
    let refs: Vec<_> = reports.iter().collect();
    let mut v = crate::summary::job_totals(&j.config.name, &j.config.out, &j.info, &refs);
    v["state"] = match j.state {
        JobState::Running => "running",
        JobState::Stopped => "stopped",
    }
    .into();
    v["added_at_runtime"] = j.runtime.into();
    v["started_at"] = rfc3339(j.started).into();
    v["stopped_at"] = j.stopped.map(rfc3339).into();
    v["queues"] = reports.iter().map(crate::summary::queue_json).collect();
    v
}

/// Files and bytes below `dir` (visible capture files and manifests).
fn disk_use(dir: &Path) -> (u64, u64) {
    let mut files = 0;
    let mut bytes = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else if !e.file_name().to_string_lossy().starts_with('.') {
                files += 1;
                bytes += m.len();
            }
        }
    }
    (files, bytes)
}

fn status(ctx: &Ctx) -> Value {
    let jobs = ctx.jobs.with(|all| {
        all.iter()
            .map(|j| job_json(&ctx.jobs, j))
            .collect::<Vec<_>>()
    });
    let dirs: Vec<Value> = ctx.jobs.with(|all| {
        all.iter()
            .map(|j| {
                let (files, bytes) = disk_use(&j.config.out);
                json!({"job": j.config.name, "path": j.config.out, "files": files, "bytes": bytes})
            })
            .collect()
    });
    let running = ctx
        .jobs
        .with(|all| all.iter().filter(|j| j.state == JobState::Running).count());
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "started_at": rfc3339(ctx.info.started),
        "uptime_seconds": ctx.jobs.started.elapsed().as_secs_f64(),
        "sources": ctx.info.sources,
        "queues": ctx.jobs.queues().iter().map(|q| json!({"queue": q.id, "source": q.label, "live": q.live})).collect::<Vec<_>>(),
        "cores": {"workers": ctx.info.worker_cores, "writer_threads": ctx.info.writer_threads},
        "max_jobs": ctx.jobs.max_jobs(),
        "running_jobs": running,
        "jobs": jobs,
        "directories": dirs,
    })
}

/// `%XX` escapes in a path segment (job names need none, but clients escape).
fn percent_decode(s: &str) -> String {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push(h << 4 | l);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
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

    #[test]
    fn percent_escapes_decode() {
        assert_eq!(percent_decode("a%2Db"), "a-b");
        assert_eq!(percent_decode("plain"), "plain");
        assert_eq!(percent_decode("bad%zz"), "bad%zz");
        assert_eq!(percent_decode("end%2"), "end%2");
    }
}

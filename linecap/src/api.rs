//! The control API: HTTP/JSON on a unix socket (default) or a loopback TCP
//! port, for a running capture. Routes (versioned under `/v1`; the OpenAPI 3
//! document is `docs/api/openapi.json`, served at `/v1/openapi.json`):
//!
//! - `GET /v1/status`: sources, queues, cores, jobs with their counters,
//!   files and bytes per output directory, uptime;
//! - `GET /v1/jobs`, `POST /v1/jobs`, `GET /v1/jobs/{name}`,
//!   `DELETE /v1/jobs/{name}`;
//! - `GET /v1/query?expr=&after=&before=&format=&job=`: the answer of
//!   `linecap query` over the jobs' directories (the same function writes
//!   both, `query::write_answer`), streamed in chunks by a thread of its own
//!   (at most [`QUERIES_MAX`] at once), so the answer is never held whole;
//! - `POST /v1/storage/test`: `linecap ship --test` against the capture's
//!   shipping target.
//!
//! Served by `tiny_http` (already in the tree for `/metrics`; it listens on
//! unix sockets too) on two threads of their own, never on a capture core:
//! a request changes the capture only through `jobs.rs`, whose changes the
//! workers pick up at a burst boundary. Every request but the OpenAPI
//! document needs `Authorization: Bearer TOKEN` when a token is configured
//! (compared in constant time); a TCP listener always needs one.

use std::io::{Read, Write};

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

pub use crate::apiconfig::{ApiArgs, ApiConfig, ApiListen, DEFAULT_SOCKET, load_token};
use crate::capture::jobs::{CaptureInfo, Job, JobError, JobRequest, JobState, Jobs};
use crate::query::QueryError;
use linecap_reader::output::OutFormat;

/// The OpenAPI 3 document of this API (kept in `docs/api/`).
pub const OPENAPI: &str = include_str!("../../docs/api/openapi.json");

/// Largest request body read (a job request is a few hundred bytes).
pub const BODY_BYTES_MAX: usize = 64 * 1024;
/// Threads answering requests.
const API_THREADS: usize = 2;
/// Queries streamed at once (each on a thread of its own); more get 503.
pub const QUERIES_MAX: usize = 2;
/// Bytes of a streamed answer sent per chunk.
const CHUNK_BYTES: usize = 64 * 1024;

/// `POST /v1/storage/test`: runs the store's self-test and gives the HTTP
/// status and JSON to answer with (made by `commands.rs` from the shipping
/// configuration, so this module needs nothing of `ship`).
pub type StorageTest = Arc<dyn Fn() -> (u16, Value) + Send + Sync>;

/// The running API; stops (and removes its socket) when dropped.
pub struct ApiServer {
    server: Arc<tiny_http::Server>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    listen: ApiListen,
}

impl ApiServer {
    /// Bind and start answering.
    pub fn start(
        cfg: &ApiConfig,
        jobs: Arc<Jobs>,
        info: CaptureInfo,
        storage: Option<StorageTest>,
    ) -> anyhow::Result<Self> {
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
                // Bound and listening under a hidden name, chmod 600, then
                // renamed into place: a client that sees the socket can
                // connect to it (bind makes the file before listen, and a
                // connect in between is refused), and nobody else can open
                // it in the meantime.
                let hidden = p.with_file_name(format!(
                    ".{}.{}.tmp",
                    p.file_name().unwrap_or_default().to_string_lossy(),
                    std::process::id()
                ));
                let _ = std::fs::remove_file(&hidden);
                let s = tiny_http::Server::http_unix(&hidden).map_err(|e| {
                    anyhow::anyhow!("--api unix:{}: cannot listen: {e}", p.display())
                })?;
                let placed =
                    std::fs::set_permissions(&hidden, std::fs::Permissions::from_mode(0o600))
                        .with_context(|| format!("--api unix:{}: chmod 600", p.display()))
                        .and_then(|()| {
                            std::fs::rename(&hidden, p).with_context(|| {
                                format!(
                                    "--api unix:{}: renaming {} into place",
                                    p.display(),
                                    hidden.display()
                                )
                            })
                        });
                if let Err(e) = placed {
                    let _ = std::fs::remove_file(&hidden);
                    return Err(e);
                }
                s
            }
        };
        let server = Arc::new(server);
        let stop = Arc::new(AtomicBool::new(false));
        let ctx = Arc::new(Ctx {
            jobs,
            info,
            token: cfg.token.clone(),
            storage,
            storage_busy: AtomicBool::new(false),
            queries: Arc::new(AtomicUsize::new(0)),
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
    /// The store's self-test, when shipping to S3 is configured.
    storage: Option<StorageTest>,
    /// A storage test is running (one at a time).
    storage_busy: AtomicBool,
    /// Queries being streamed.
    queries: Arc<AtomicUsize>,
}

/// What a request gets: a JSON answer, or a query answer to stream.
enum Answer {
    Reply(Reply),
    Query(Box<QueryAnswer>),
}

impl From<Reply> for Answer {
    fn from(r: Reply) -> Self {
        Answer::Reply(r)
    }
}

/// A query, planned and checked, to stream.
struct QueryAnswer {
    prepared: crate::query::Prepared,
    format: OutFormat,
}

/// An answer: status and JSON body (or a static document).
struct Reply {
    status: u16,
    body: Vec<u8>,
    allow: Option<&'static str>,
    retry_after: Option<u32>,
}

impl Reply {
    fn json(status: u16, v: &Value) -> Self {
        Reply {
            status,
            body: serde_json::to_vec_pretty(v).unwrap_or_default(),
            allow: None,
            retry_after: None,
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
    let reply = match route(ctx, &mut req) {
        Answer::Reply(r) => r,
        Answer::Query(q) => {
            start_query(ctx, req, *q);
            return;
        }
    };
    respond(req, reply);
}

fn respond(req: tiny_http::Request, reply: Reply) {
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
    if let Some(h) = reply
        .retry_after
        .and_then(|s| header("Retry-After", &s.to_string()))
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

fn route(ctx: &Ctx, req: &mut tiny_http::Request) -> Answer {
    let url = req.url().to_string();
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    let method = req.method().clone();
    use tiny_http::Method::{Delete, Get, Post};
    if path == "/v1/openapi.json" {
        return match method {
            Get => Reply {
                status: 200,
                body: OPENAPI.as_bytes().to_vec(),
                allow: None,
                retry_after: None,
            },
            _ => Reply::method_not_allowed("GET"),
        }
        .into();
    }
    if !authorized(ctx, req) {
        return Reply::error(
            401,
            None,
            "missing or wrong bearer token (Authorization: Bearer TOKEN)",
        )
        .into();
    }
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    if segments == ["v1", "query"] {
        return match method {
            Get => query_answer(ctx, query),
            _ => Reply::method_not_allowed("GET").into(),
        };
    }
    let reply = match segments.as_slice() {
        ["v1", "storage", "test"] => match method {
            Post => storage_test(ctx),
            _ => Reply::method_not_allowed("POST"),
        },
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
    };
    reply.into()
}

/// The query parameters `GET /v1/query` takes.
const QUERY_PARAMS: [&str; 5] = ["expr", "after", "before", "format", "job"];

/// `GET /v1/query`: check the parameters and plan the query (every refusal
/// is a 4xx naming the parameter, before any packet byte is sent).
fn query_answer(ctx: &Ctx, query: &str) -> Answer {
    let mut got: [Option<String>; QUERY_PARAMS.len()] = Default::default();
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        let Some(i) = QUERY_PARAMS.iter().position(|p| *p == k) else {
            return Reply::error(
                400,
                Some(k.as_ref()),
                format!(
                    "unknown query parameter {k:?}: give {}",
                    QUERY_PARAMS.join(", ")
                ),
            )
            .into();
        };
        if got[i].is_some() {
            return Reply::error(400, Some(k.as_ref()), format!("{k} is given twice")).into();
        }
        got[i] = Some(v.into_owned());
    }
    let [expr, after, before, format, job] = got;
    let format = match format.as_deref().unwrap_or("pcap").parse::<OutFormat>() {
        Ok(f) => f,
        Err(e) => return Reply::error(400, Some("format"), e).into(),
    };
    // The directories: the named job's, or every job's (running or stopped).
    let dirs: Option<Vec<std::path::PathBuf>> = ctx.jobs.with(|all| {
        let mut dirs = Vec::new();
        for j in all
            .iter()
            .filter(|j| job.as_ref().is_none_or(|n| *n == j.config.name))
        {
            for d in j.config.dirs() {
                if !dirs.iter().any(|x: &std::path::PathBuf| x == d) {
                    dirs.push(d.to_path_buf());
                }
            }
        }
        (!dirs.is_empty()).then_some(dirs)
    });
    let Some(dirs) = dirs else {
        return Reply::error(
            404,
            Some("job"),
            format!(
                "no capture job named {:?}",
                job.as_deref().unwrap_or_default()
            ),
        )
        .into();
    };
    // A directory removed since (a stopped job's, by the operator) is not
    // an error: the answer is over what is left, as `linecap query` over
    // the directories that exist.
    let dirs: Vec<_> = dirs.into_iter().filter(|d| d.is_dir()).collect();
    if dirs.is_empty() {
        return Reply::error(404, None, "the job's directories are gone").into();
    }
    let prepared = crate::query::prepare(
        &dirs,
        expr.as_deref().unwrap_or(""),
        after.as_deref(),
        before.as_deref(),
        crate::query::now_ns(),
    );
    match prepared {
        Ok(prepared) => Answer::Query(Box::new(QueryAnswer { prepared, format })),
        Err(QueryError::Param { param, message }) => {
            Reply::error(400, Some(param), format!("{param}: {message}")).into()
        }
        Err(QueryError::NoFiles(m)) => Reply::error(404, None, m).into(),
        Err(QueryError::Inputs(m)) => {
            Reply::error(500, None, format!("listing the capture directories: {m}")).into()
        }
    }
}

/// The media type and file name extension of an answer.
fn media(format: OutFormat) -> (&'static str, &'static str) {
    match format {
        OutFormat::Pcap => ("application/vnd.tcpdump.pcap", "pcap"),
        OutFormat::PcapNg => ("application/x-pcapng", "pcapng"),
        OutFormat::Erf => ("application/octet-stream", "erf"),
    }
}

/// Decrements the count of running queries when the query's thread ends.
struct QuerySlot(Arc<AtomicUsize>);

impl Drop for QuerySlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Hand a planned query to a thread of its own (it inherits the API
/// thread's housekeeping cores), which streams the answer; the API thread
/// is free again at once. More than [`QUERIES_MAX`] at once: 503.
fn start_query(ctx: &Ctx, req: tiny_http::Request, q: QueryAnswer) {
    if ctx.queries.fetch_add(1, Ordering::SeqCst) >= QUERIES_MAX {
        ctx.queries.fetch_sub(1, Ordering::SeqCst);
        let mut r = Reply::error(
            503,
            None,
            format!("{QUERIES_MAX} queries are being answered, the most at once: try again"),
        );
        r.retry_after = Some(1);
        respond(req, r);
        return;
    }
    let slot = QuerySlot(ctx.queries.clone());
    let spawned = std::thread::Builder::new()
        .name("lc-api-query".into())
        .spawn(move || {
            let _slot = slot;
            stream_query(req, q);
        });
    if let Err(e) = spawned {
        tracing::warn!("control API: cannot start a query thread: {e}");
    }
}

/// Write the answer as a chunked HTTP/1.1 body (HTTP/1.0: to the end of
/// the connection). The end says how it went in two trailers,
/// `Linecap-Matched` (packets) and `Linecap-Errors` (files that could not
/// be read, as `linecap query` reports them); an answer cut short by an
/// error has no last chunk, so the client sees it is incomplete.
fn stream_query(req: tiny_http::Request, q: QueryAnswer) {
    let http10 = *req.http_version() == tiny_http::HTTPVersion(1, 0);
    let (ct, ext) = media(q.format);
    let mut raw = req.into_writer();
    let head = format!(
        "HTTP/1.{} 200 OK\r\nContent-Type: {ct}\r\nContent-Disposition: attachment; \
         filename=\"linecap-query.{ext}\"\r\n{}Connection: close\r\n\r\n",
        u8::from(!http10),
        if http10 {
            ""
        } else {
            "Transfer-Encoding: chunked\r\nTrailer: Linecap-Matched, Linecap-Errors\r\n"
        }
    );
    if raw.write_all(head.as_bytes()).is_err() {
        return;
    }
    let body = std::io::BufWriter::with_capacity(
        CHUNK_BYTES,
        Chunked {
            inner: raw,
            chunked: !http10,
        },
    );
    let done = match crate::query::write_answer(q.prepared, body, q.format) {
        Ok(d) => d,
        Err(e) => {
            tracing::info!("control API: a query answer was cut short: {e}");
            return;
        }
    };
    for e in &done.stats.errors {
        tracing::warn!("control API: query: {e}");
    }
    let Ok(mut body) = done.out.into_inner() else {
        return;
    };
    if let Err(e) = body.finish(done.matched, done.stats.errors.len()) {
        tracing::info!("control API: a query answer was cut short: {e}");
    }
}

/// HTTP/1.1 chunked transfer coding over the raw connection: each write is
/// one chunk (a `BufWriter` in front makes them [`CHUNK_BYTES`]).
struct Chunked {
    inner: Box<dyn Write + Send>,
    chunked: bool,
}

impl Chunked {
    /// The last chunk and the trailers.
    fn finish(&mut self, matched: u64, errors: usize) -> std::io::Result<()> {
        if self.chunked {
            write!(
                self.inner,
                "0\r\nLinecap-Matched: {matched}\r\nLinecap-Errors: {errors}\r\n\r\n"
            )?;
        }
        self.inner.flush()
    }
}

impl Write for Chunked {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.chunked {
            write!(self.inner, "{:x}\r\n", buf.len())?;
            self.inner.write_all(buf)?;
            self.inner.write_all(b"\r\n")?;
        } else {
            self.inner.write_all(buf)?;
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Clears the "storage test running" flag however the test ends.
struct Busy<'a>(&'a AtomicBool);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// `POST /v1/storage/test`: put, read back and delete a probe object in the
/// shipping target (one test at a time).
fn storage_test(ctx: &Ctx) -> Reply {
    let Some(test) = &ctx.storage else {
        return Reply::error(
            409,
            None,
            "shipping is not configured: start the capture with --ship s3://BUCKET/PREFIX \
             (or a profile with a [ship] url)",
        );
    };
    if ctx.storage_busy.swap(true, Ordering::SeqCst) {
        let mut r = Reply::error(503, None, "a storage test is running: try again");
        r.retry_after = Some(1);
        return r;
    }
    let _busy = Busy(&ctx.storage_busy);
    let (status, v) = test();
    Reply::json(status, &v)
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

    /// A `Write` the test can read back after the writer is dropped.
    #[derive(Clone, Default)]
    struct Shared(Arc<std::sync::Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn chunked_bodies_end_with_the_trailers_and_decode_back() {
        let sink = Shared::default();
        let mut c = Chunked {
            inner: Box::new(sink.clone()),
            chunked: true,
        };
        c.write_all(b"hello").unwrap();
        assert_eq!(
            c.write(b"").unwrap(),
            0,
            "an empty write is no chunk (it would end the body)"
        );
        c.write_all(&[7u8; 300]).unwrap();
        c.finish(2, 1).unwrap();
        let raw = sink.0.lock().unwrap().clone();
        assert!(raw.starts_with(b"5\r\nhello\r\n12c\r\n"));
        assert!(raw.ends_with(b"0\r\nLinecap-Matched: 2\r\nLinecap-Errors: 1\r\n\r\n"));
        let mut http = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        http.extend_from_slice(&raw);
        let a = crate::ctl::parse_response(&http).unwrap();
        assert_eq!(a.body.len(), 305);
        // HTTP/1.0: the bytes as they are, no trailers.
        let sink = Shared::default();
        let mut c = Chunked {
            inner: Box::new(sink.clone()),
            chunked: false,
        };
        c.write_all(b"abc").unwrap();
        c.finish(1, 0).unwrap();
        assert_eq!(sink.0.lock().unwrap().as_slice(), b"abc");
    }

    #[test]
    fn percent_escapes_decode() {
        assert_eq!(percent_decode("a%2Db"), "a-b");
        assert_eq!(percent_decode("plain"), "plain");
        assert_eq!(percent_decode("bad%zz"), "bad%zz");
        assert_eq!(percent_decode("end%2"), "end%2");
    }
}

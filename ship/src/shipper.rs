//! The shipper: uploader threads (and post-rotate threads) that find the
//! completed files of each queue directory, ship them in order, and record
//! every step in the queue's [`Journal`].
//!
//! **How completed files are found**: by scanning the queue directories
//! every `scan_interval` (default 250 ms), not by an event from the writer.
//! A file is complete when its visible name and its manifest `NAME.json`
//! exist (the writer renames `.NAME.part` → `NAME`; its index thread writes
//! `NAME.idx`, then the manifest under a hidden name and renames it, so the
//! index is settled once the manifest is in view). The scan is the only
//! mechanism, so files completed before a crash or while shipping was off are found the
//! same way as new ones, the writer path has no channel that could fill or
//! block, and the writer files (`series.rs`) need no change for it.
//!
//! **Order per file**: the data file, then its index (`NAME.idx`, when there
//! is one), then the manifest, last: whoever sees a manifest object knows
//! the data object is whole. Files of one queue go in sequence order; a
//! failure is retried (exponential backoff with jitter) before the next
//! file, so the order holds while the store is down.

use std::collections::HashMap;
use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};

use crate::config::{PARTS_MAX, SeriesDir, ShipConfig};
use crate::journal::Journal;
use crate::s3::{self, FailKind, S3Client, S3Error};
use crate::throttle::Throttle;

/// Counters of the shipper (all since start).
#[derive(Debug, Default)]
pub struct ShipCounters {
    /// Files shipped (data, index and manifest all confirmed).
    pub files_shipped: AtomicU64,
    /// Bytes of those files (data + index + manifest).
    pub bytes_shipped: AtomicU64,
    /// Objects uploaded (each file is 2 or 3).
    pub objects_uploaded: AtomicU64,
    /// Multipart parts uploaded.
    pub parts_uploaded: AtomicU64,
    /// Multipart uploads resumed from the journal after a restart.
    pub uploads_resumed: AtomicU64,
    /// Parts a resumed upload did not send again.
    pub parts_resumed: AtomicU64,
    /// Objects found already whole on the server (journal lagging a crash), not uploaded again.
    pub objects_already_there: AtomicU64,
    /// Objects whose checksum the server neither returned nor reported on HEAD
    /// (it still checked the one we sent).
    pub objects_unverified: AtomicU64,
    /// Failed attempts by kind ([`FailKind::ALL`] order).
    pub failures: [AtomicU64; FailKind::ALL.len()],
    /// Post-rotate commands that exited 0.
    pub hook_ok: AtomicU64,
    /// Post-rotate commands that exited non-zero, were killed, or could not start.
    pub hook_failed: AtomicU64,
    /// Local files deleted after shipping (`--ship-then-delete`).
    pub files_deleted_after_ship: AtomicU64,
    /// Bytes of those (with index and manifest).
    pub bytes_deleted_after_ship: AtomicU64,
    /// Files retention (-W, disk budget) deleted before they were shipped (`--ship-may-drop`).
    pub files_dropped_unshipped: AtomicU64,
    /// Files that disappeared before they were shipped, deleted by someone else.
    pub files_vanished: AtomicU64,
    /// Times retention wanted to delete a file that is not shipped and was refused.
    pub retention_refused: AtomicU64,
}

/// The backlog right now.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Backlog {
    /// Completed files not yet shipped.
    pub files: u64,
    /// Their bytes (data + index + manifest).
    pub bytes: u64,
    /// Age of the oldest, seconds (0 when none).
    pub oldest_age_s: f64,
}

struct DirState {
    sd: SeriesDir,
    journal: Mutex<Journal>,
    /// (files, bytes, oldest completion time) as of the last scan.
    backlog: Mutex<(u64, u64, Option<SystemTime>)>,
}

struct Shared {
    cfg: ShipConfig,
    client: Option<S3Client>,
    /// The capture jobs' output directories: (job, dir); queue directories
    /// `qNN/` inside are found as they appear. Jobs added while capturing
    /// add theirs ([`Shipper::add_root`]).
    roots: Mutex<Vec<(String, std::path::PathBuf)>>,
    /// Queue directories found so far (append-only).
    dirs: Mutex<Vec<Arc<DirState>>>,
    /// Held for a whole discovery, so a journal is opened (and compacted) once.
    discovering: Mutex<()>,
    counters: ShipCounters,
    /// Stop now (the drain timed out).
    stop: AtomicBool,
    /// Draining until this instant: ship what is there, then exit.
    drain_until: Mutex<Option<Instant>>,
    last_error: Mutex<Option<String>>,
    /// Set once the start-up check of the store answered.
    preflight: Mutex<Option<Result<(), String>>>,
}

/// The running shipper.
pub struct Shipper {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// What was left at exit.
#[derive(Debug, Clone, Default)]
pub struct ShipReport {
    /// Files shipped during this run.
    pub files_shipped: u64,
    /// Bytes shipped during this run.
    pub bytes_shipped: u64,
    /// Files not yet shipped (the next start ships them).
    pub left_files: u64,
    /// Their bytes.
    pub left_bytes: u64,
    /// Some of their names (at most 20).
    pub left_names: Vec<String>,
    /// Whether the drain ended because of `--ship-drain-timeout`.
    pub drain_timed_out: bool,
    /// Failed attempts by kind (only kinds that happened).
    pub failures: Vec<(&'static str, u64)>,
    /// Post-rotate commands that failed.
    pub hook_failed: u64,
    /// Files retention dropped unshipped.
    pub files_dropped_unshipped: u64,
    /// The last error, for the operator.
    pub last_error: Option<String>,
}

impl ShipReport {
    /// The report as JSON (for `--report-json`).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "files_shipped": self.files_shipped,
            "bytes_shipped": self.bytes_shipped,
            "left_files": self.left_files,
            "left_bytes": self.left_bytes,
            "left_names": self.left_names,
            "drain_timed_out": self.drain_timed_out,
            "failures": self.failures.iter().map(|(k, n)| (k.to_string(), serde_json::json!(n))).collect::<serde_json::Map<_, _>>(),
            "hook_failed": self.hook_failed,
            "files_dropped_unshipped": self.files_dropped_unshipped,
            "last_error": self.last_error,
        })
    }
}

/// Pins a shipper thread (the binary passes its housekeeping-core pinning).
pub type PinFn = Arc<dyn Fn(usize) + Send + Sync>;

/// "May retention delete this complete file?" — given to the writer's series.
pub type RetentionHook = Arc<dyn Fn(&Path) -> bool + Send + Sync>;

impl Shipper {
    /// Start shipping the completed files of `dirs`. `pin(i)` is called
    /// first in each shipper thread `i`. Fails only on local problems (a
    /// journal that cannot be opened, a bad configuration); a store that is
    /// down or refuses is reported and retried, the capture goes on.
    /// `roots` are the jobs' output directories `(job, dir)`; their queue
    /// directories `qNN/` are watched as they appear.
    pub fn start(
        cfg: ShipConfig,
        roots: Vec<(String, std::path::PathBuf)>,
        pin: Option<PinFn>,
    ) -> Result<Shipper, String> {
        cfg.validate()?;
        let throttle = cfg
            .bandwidth_bytes_per_s
            .map(|r| Arc::new(Throttle::new(r)));
        let client = match &cfg.s3 {
            Some(t) => Some(S3Client::new(t, throttle).map_err(|e| format!("--ship: {e}"))?),
            None => None,
        };
        let shared = Arc::new(Shared {
            client,
            roots: Mutex::new(roots),
            dirs: Mutex::new(Vec::new()),
            discovering: Mutex::new(()),
            counters: ShipCounters::default(),
            stop: AtomicBool::new(false),
            drain_until: Mutex::new(None),
            last_error: Mutex::new(None),
            preflight: Mutex::new(None),
            cfg,
        });
        discover(&shared)?;
        let mut threads = Vec::new();
        let mut index = 0;
        if shared.client.is_some() {
            let n = shared.cfg.threads;
            for t in 0..n {
                let sh = shared.clone();
                let pin = pin.clone();
                let i = index;
                index += 1;
                threads.push(
                    std::thread::Builder::new()
                        .name(format!("ship-s3-{t}"))
                        .spawn(move || {
                            if let Some(p) = pin {
                                p(i);
                            }
                            if t == 0 {
                                preflight(&sh);
                            }
                            worker(&sh, t, n, Sink::S3);
                        })
                        .map_err(|e| format!("spawning a shipper thread: {e}"))?,
                );
            }
        }
        if shared.cfg.post_rotate.is_some() {
            let n = shared.cfg.post_rotate_jobs;
            for t in 0..n {
                let sh = shared.clone();
                let pin = pin.clone();
                let i = index;
                index += 1;
                threads.push(
                    std::thread::Builder::new()
                        .name(format!("post-rotate-{t}"))
                        .spawn(move || {
                            if let Some(p) = pin {
                                p(i);
                            }
                            worker(&sh, t, n, Sink::Hook);
                        })
                        .map_err(|e| format!("spawning a post-rotate thread: {e}"))?,
                );
            }
        }
        Ok(Shipper {
            shared,
            threads: Mutex::new(threads),
        })
    }

    /// Ship `dir` too: the output directory of job `job`, added while
    /// capturing (the control API). Its queue directories are found now
    /// and as they appear; an error is a journal that cannot be opened.
    pub fn add_root(&self, job: &str, dir: &Path) -> Result<(), String> {
        {
            let mut roots = lock(&self.shared.roots);
            if !roots.iter().any(|(_, d)| d == dir) {
                roots.push((job.to_string(), dir.to_path_buf()));
            }
        }
        discover(&self.shared)
    }

    /// The counters.
    pub fn counters(&self) -> &ShipCounters {
        &self.shared.counters
    }

    /// The configuration.
    pub fn config(&self) -> &ShipConfig {
        &self.shared.cfg
    }

    /// The result of the start-up check of the store (`None` until it answered).
    pub fn preflight(&self) -> Option<Result<(), String>> {
        self.shared
            .preflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The backlog as of the last scans.
    pub fn backlog(&self) -> Backlog {
        backlog_of(&self.shared)
    }

    /// The last error, if any.
    pub fn last_error(&self) -> Option<String> {
        self.shared
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The hook the writer's series asks before deleting a complete file
    /// (`-W`, disk budget): yes when it is shipped; otherwise yes only with
    /// `--ship-may-drop` (counted, logged by name, journaled), else no
    /// (counted; the file is kept).
    pub fn retention_hook(&self) -> RetentionHook {
        let sh = self.shared.clone();
        Arc::new(move |path: &Path| may_delete(&sh, path))
    }

    /// Drain the backlog for at most the drain timeout, stop the threads,
    /// and say what is left for the next start.
    /// A second call finds the threads gone and only reports.
    pub fn finish(&self) -> ShipReport {
        let sh = &self.shared;
        let threads = std::mem::take(&mut *lock(&self.threads));
        let deadline = Instant::now() + sh.cfg.drain_timeout;
        *sh.drain_until.lock().unwrap_or_else(|p| p.into_inner()) = Some(deadline);
        let mut timed_out = false;
        // Threads check the deadline between requests; give an in-flight
        // request a little longer, then leave it (the process is exiting).
        let hard = deadline + Duration::from_secs(2);
        while threads.iter().any(|t| !t.is_finished()) {
            if Instant::now() >= deadline {
                timed_out = true;
                sh.stop.store(true, Ordering::Relaxed);
            }
            if Instant::now() >= hard {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        sh.stop.store(true, Ordering::Relaxed);
        for t in threads {
            if t.is_finished() {
                let _ = t.join();
            }
        }
        // What is left, from a fresh look at the directories.
        let _ = discover(sh);
        let mut left_names = Vec::new();
        let (mut left_files, mut left_bytes) = (0, 0);
        for d in lock(&sh.dirs).iter() {
            for f in completed_files(&d.sd.dir) {
                if !fully_done(sh, d, &f.name) {
                    left_files += 1;
                    left_bytes += f.bytes;
                    if left_names.len() < 20 {
                        left_names.push(d.sd.dir.join(&f.name).display().to_string());
                    }
                }
            }
        }
        let c = &sh.counters;
        ShipReport {
            files_shipped: c.files_shipped.load(Ordering::Relaxed),
            bytes_shipped: c.bytes_shipped.load(Ordering::Relaxed),
            left_files,
            left_bytes,
            left_names,
            drain_timed_out: timed_out || left_files > 0,
            failures: FailKind::ALL
                .iter()
                .map(|k| (k.label(), c.failures[k.index()].load(Ordering::Relaxed)))
                .filter(|(_, n)| *n > 0)
                .collect(),
            hook_failed: c.hook_failed.load(Ordering::Relaxed),
            files_dropped_unshipped: c.files_dropped_unshipped.load(Ordering::Relaxed),
            last_error: sh
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Sink {
    S3,
    Hook,
}

/// One completed file found by a scan.
struct Completed {
    name: String,
    seq: u64,
    bytes: u64,
    mtime: Option<SystemTime>,
}

/// Find queue directories (`qNN`) under the roots and open their journals.
fn discover(sh: &Shared) -> Result<(), String> {
    let _one = lock(&sh.discovering);
    let roots = lock(&sh.roots).clone();
    for (job, root) in &roots {
        let Ok(rd) = fs::read_dir(root) else {
            continue;
        };
        let mut found: Vec<(u32, std::path::PathBuf)> = rd
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let digits = name.strip_prefix('q')?;
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                Some((digits.parse().ok()?, e.path()))
            })
            .collect();
        found.sort();
        for (queue, dir) in found {
            if lock(&sh.dirs).iter().any(|d| d.sd.dir == dir) {
                continue;
            }
            let journal = Journal::open(&dir)
                .map_err(|e| format!("ship journal in {}: {e}", dir.display()))?;
            let mut dirs = lock(&sh.dirs);
            if dirs.iter().any(|d| d.sd.dir == dir) {
                continue;
            }
            dirs.push(Arc::new(DirState {
                sd: SeriesDir {
                    job: job.clone(),
                    queue,
                    dir,
                },
                journal: Mutex::new(journal),
                backlog: Mutex::new((0, 0, None)),
            }));
        }
    }
    Ok(())
}

/// Completed files of a directory (visible data file + manifest), by sequence.
fn completed_files(dir: &Path) -> Vec<Completed> {
    let Ok(rd) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<Completed> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            if name.starts_with('.') || !(name.ends_with(".erf") || name.ends_with(".erf.lz4")) {
                return None;
            }
            let (_, seq) = linecap_writer::names::parse(&name)?;
            let manifest = dir.join(format!("{name}.json"));
            let mm = fs::metadata(&manifest).ok()?;
            let md = e.metadata().ok()?;
            let idx = fs::metadata(dir.join(format!("{name}.idx"))).map_or(0, |m| m.len());
            Some(Completed {
                name,
                seq,
                bytes: md.len() + mm.len() + idx,
                mtime: mm.modified().ok(),
            })
        })
        .collect();
    out.sort_by_key(|c| c.seq);
    out
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn fully_done(sh: &Shared, d: &DirState, name: &str) -> bool {
    let j = lock(&d.journal);
    (sh.client.is_none() || j.is_shipped(name))
        && (sh.cfg.post_rotate.is_none() || j.is_hooked(name))
}

fn backlog_of(sh: &Shared) -> Backlog {
    let mut b = Backlog::default();
    let mut oldest: Option<SystemTime> = None;
    for d in lock(&sh.dirs).iter() {
        let (f, by, o) = *lock(&d.backlog);
        b.files += f;
        b.bytes += by;
        if let Some(o) = o {
            oldest = Some(oldest.map_or(o, |x| x.min(o)));
        }
    }
    b.oldest_age_s = oldest
        .and_then(|o| SystemTime::now().duration_since(o).ok())
        .map_or(0.0, |d| d.as_secs_f64());
    b
}

fn set_error(sh: &Shared, msg: String) {
    *lock(&sh.last_error) = Some(msg);
}

fn count_failure(sh: &Shared, kind: FailKind) {
    sh.counters.failures[kind.index()].fetch_add(1, Ordering::Relaxed);
}

/// Whether a draining shipper should stop now (past the deadline), or a
/// stop was raised.
fn must_stop(sh: &Shared) -> bool {
    if sh.stop.load(Ordering::Relaxed) {
        return true;
    }
    matches!(*lock(&sh.drain_until), Some(d) if Instant::now() >= d)
}

fn draining(sh: &Shared) -> bool {
    lock(&sh.drain_until).is_some()
}

/// Sleep up to `d`, waking early when asked to stop.
fn nap(sh: &Shared, d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end && !must_stop(sh) {
        std::thread::sleep(Duration::from_millis(20).min(end - Instant::now()));
    }
}

/// The start-up check: list one key under the prefix. A failure is said
/// clearly (and counted); shipping keeps retrying and the capture goes on.
fn preflight(sh: &Shared) {
    let (Some(c), Some(t)) = (&sh.client, &sh.cfg.s3) else {
        return;
    };
    let r = c.list_one(&t.prefix);
    let res = match r {
        Ok(()) => Ok(()),
        Err(e) => {
            count_failure(sh, e.kind);
            let msg = format!(
                "linecap: ship: WARNING: s3://{}/{} at {}: {}; the capture goes on, completed files \
                 stay on disk and are retried",
                t.bucket,
                t.prefix,
                t.endpoint,
                describe(&e)
            );
            eprintln!("{msg}");
            set_error(sh, e.to_string());
            Err(msg)
        }
    };
    *lock(&sh.preflight) = Some(res);
}

/// A failure in words, naming the kind first.
pub fn describe(e: &S3Error) -> String {
    let what = match e.kind {
        FailKind::Dns => "DNS: the endpoint's host name does not resolve",
        FailKind::Tcp => "TCP: cannot connect to the endpoint",
        FailKind::Tls => "TLS: the secure connection failed",
        FailKind::Timeout => "timeout: the endpoint does not answer",
        FailKind::Credentials => "credentials: the access key or secret is wrong",
        FailKind::Bucket => "bucket: the bucket does not exist",
        FailKind::Permission => "permission: the credentials may not do this",
        FailKind::Checksum => "checksum: the data did not arrive intact",
        FailKind::Server => "server: the store failed (5xx)",
        FailKind::NoSuchUpload => "multipart: the upload is gone on the server",
        FailKind::NotFound => "not found",
        FailKind::Local => "local: a local file could not be read",
        FailKind::Other => "error",
    };
    format!("{what} ({})", e.detail)
}

/// Backoff before retry `n` (0-based): base·2ⁿ capped, times a jitter in [0.5, 1.5).
fn backoff(cfg: &ShipConfig, n: u32) -> Duration {
    let base = cfg.retry_base.as_secs_f64() * 2f64.powi(n.min(20) as i32);
    let capped = base.min(cfg.retry_max.as_secs_f64());
    Duration::from_secs_f64(capped * (0.5 + jitter()))
}

/// A number in [0, 1) (jitter only; not for anything secret).
fn jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

fn worker(sh: &Shared, t: usize, n: usize, sink: Sink) {
    loop {
        if must_stop(sh) {
            return;
        }
        if let Err(e) = discover(sh) {
            set_error(sh, e);
        }
        let mine: Vec<Arc<DirState>> = lock(&sh.dirs)
            .iter()
            .enumerate()
            .filter(|(i, _)| i % n == t)
            .map(|(_, d)| d.clone())
            .collect();
        let drain = draining(sh);
        let mut pending_any = false;
        for d in &mine {
            let files = completed_files(&d.sd.dir);
            let pending: Vec<&Completed> = files
                .iter()
                .filter(|f| {
                    let j = lock(&d.journal);
                    match sink {
                        Sink::S3 => !j.is_shipped(&f.name),
                        Sink::Hook => !j.is_hooked(&f.name),
                    }
                })
                .collect();
            let tracks_backlog = sink == Sink::S3 || sh.client.is_none();
            if tracks_backlog {
                let left: Vec<&&Completed> = pending
                    .iter()
                    .filter(|f| !fully_done(sh, d, &f.name))
                    .collect();
                *lock(&d.backlog) = (
                    left.len() as u64,
                    left.iter().map(|f| f.bytes).sum(),
                    left.iter().filter_map(|f| f.mtime).min(),
                );
            }
            for f in pending {
                pending_any = true;
                if must_stop(sh) {
                    return;
                }
                ship_with_retries(sh, d, f, sink);
            }
            if tracks_backlog {
                refresh_backlog(sh, d);
            }
        }
        if drain && !pending_any {
            return;
        }
        nap(sh, sh.cfg.scan_interval);
    }
}

/// Recount a directory's backlog (after a file, and while a failure is retried).
fn refresh_backlog(sh: &Shared, d: &DirState) {
    let files = completed_files(&d.sd.dir);
    let left: Vec<&Completed> = files
        .iter()
        .filter(|f| !fully_done(sh, d, &f.name))
        .collect();
    *lock(&d.backlog) = (
        left.len() as u64,
        left.iter().map(|f| f.bytes).sum(),
        left.iter().filter_map(|f| f.mtime).min(),
    );
}

fn ship_with_retries(sh: &Shared, d: &DirState, f: &Completed, sink: Sink) {
    let mut attempt = 0u32;
    loop {
        if must_stop(sh) {
            return;
        }
        if !d.sd.dir.join(&f.name).exists() {
            // Deleted before it was shipped: by retention with --ship-may-drop
            // (counted there) or by someone else (counted here).
            if !lock(&d.journal).is_dropped(&f.name) {
                sh.counters.files_vanished.fetch_add(1, Ordering::Relaxed);
                eprintln!(
                    "linecap: ship: {} disappeared before it was shipped",
                    d.sd.dir.join(&f.name).display()
                );
            }
            return;
        }
        let r = match sink {
            Sink::S3 => ship_file(sh, d, f),
            Sink::Hook => run_hook(sh, d, f),
        };
        match r {
            Ok(()) => {
                maybe_delete(sh, d, f);
                return;
            }
            Err(e) => {
                count_failure(sh, e.kind);
                set_error(sh, format!("{}: {e}", d.sd.dir.join(&f.name).display()));
                if attempt == 0 || attempt.is_power_of_two() {
                    eprintln!(
                        "linecap: ship: {} (attempt {}): {}; retrying",
                        d.sd.dir.join(&f.name).display(),
                        attempt + 1,
                        describe(&e)
                    );
                }
                if sink == Sink::S3 || sh.client.is_none() {
                    refresh_backlog(sh, d);
                }
                nap(sh, backoff(&sh.cfg, attempt));
                attempt = attempt.saturating_add(1);
            }
        }
    }
}

/// `--ship-then-delete`: remove the file, its index and manifest once every
/// sink has it (the manifest last, so a reader never sees a manifest without data... gone
/// in the other order: data first, then index, then manifest).
fn maybe_delete(sh: &Shared, d: &DirState, f: &Completed) {
    if !sh.cfg.then_delete || !fully_done(sh, d, &f.name) {
        return;
    }
    let mut bytes = 0;
    for name in [
        f.name.clone(),
        format!("{}.idx", f.name),
        format!("{}.json", f.name),
    ] {
        let p = d.sd.dir.join(&name);
        let len = fs::metadata(&p).map_or(0, |m| m.len());
        if fs::remove_file(&p).is_ok() {
            bytes += len;
        }
    }
    sh.counters
        .files_deleted_after_ship
        .fetch_add(1, Ordering::Relaxed);
    sh.counters
        .bytes_deleted_after_ship
        .fetch_add(bytes, Ordering::Relaxed);
}

fn may_delete(sh: &Shared, path: &Path) -> bool {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return true;
    };
    let Some(d) = lock(&sh.dirs).iter().find(|d| d.sd.dir == dir).cloned() else {
        return true;
    };
    let d = &*d;
    if fully_done(sh, d, name) {
        return true;
    }
    if sh.cfg.may_drop {
        let _ = lock(&d.journal).file_dropped(name);
        sh.counters
            .files_dropped_unshipped
            .fetch_add(1, Ordering::Relaxed);
        eprintln!(
            "linecap: ship: retention deletes {} before it was shipped (--ship-may-drop)",
            path.display()
        );
        return true;
    }
    sh.counters
        .retention_refused
        .fetch_add(1, Ordering::Relaxed);
    false
}

/// `YYYYmmdd`, `HH` from a series name (`qNN-SEQ-YYYYmmddTHHMMSS...`).
fn partition(name: &str) -> (String, String) {
    let t = name.splitn(3, '-').nth(2).unwrap_or("");
    let b = t.as_bytes();
    if b.len() >= 11 && b[8] == b'T' && b[..8].iter().chain(&b[9..11]).all(u8::is_ascii_digit) {
        (
            format!("{}-{}-{}", &t[0..4], &t[4..6], &t[6..8]),
            t[9..11].to_string(),
        )
    } else {
        ("unknown".into(), "00".into())
    }
}

/// The object key of a file of `sd`: `PREFIX/<probe>/<job>/qNN/date=YYYY-MM-DD/hour=HH/<file>`.
pub fn object_key(
    prefix: &str,
    probe: &str,
    sd: &SeriesDir,
    data_name: &str,
    file: &str,
) -> String {
    let (date, hour) = partition(data_name);
    let body = format!(
        "{probe}/{}/q{:02}/date={date}/hour={hour}/{file}",
        sd.job, sd.queue
    );
    if prefix.is_empty() {
        body
    } else {
        format!("{prefix}/{body}")
    }
}

fn ship_file(sh: &Shared, d: &DirState, f: &Completed) -> Result<(), S3Error> {
    let (Some(c), Some(t)) = (&sh.client, &sh.cfg.s3) else {
        return Ok(());
    };
    let idx = format!("{}.idx", f.name);
    let manifest = format!("{}.json", f.name);
    let mut names = vec![f.name.clone()];
    if d.sd.dir.join(&idx).exists() {
        names.push(idx);
    }
    names.push(manifest);
    let mut bytes = 0;
    for name in &names {
        let key = object_key(&t.prefix, &sh.cfg.probe, &d.sd, &f.name, name);
        bytes += ship_object(sh, c, d, name, &key)?;
        if must_stop(sh) && name != names.last().unwrap_or(name) {
            return Err(S3Error {
                kind: FailKind::Other,
                detail: "stopped".into(),
            });
        }
    }
    lock(&d.journal).file_shipped(&f.name).map_err(local_err)?;
    sh.counters.files_shipped.fetch_add(1, Ordering::Relaxed);
    sh.counters
        .bytes_shipped
        .fetch_add(bytes, Ordering::Relaxed);
    Ok(())
}

fn local_err(e: std::io::Error) -> S3Error {
    S3Error {
        kind: FailKind::Local,
        detail: e.to_string(),
    }
}

/// Make `name`'s object whole at `key`; its size.
fn ship_object(
    sh: &Shared,
    c: &S3Client,
    d: &DirState,
    name: &str,
    key: &str,
) -> Result<u64, S3Error> {
    let path = d.sd.dir.join(name);
    let file = File::open(&path).map_err(|e| {
        local_err(std::io::Error::new(
            e.kind(),
            format!("{}: {e}", path.display()),
        ))
    })?;
    let size = file.metadata().map_err(local_err)?.len();
    if lock(&d.journal).object(name).is_some() {
        return Ok(size);
    }
    let resume = lock(&d.journal).multipart(name).cloned();
    if resume.is_none() && size < sh.cfg.part_bytes {
        let mut data = vec![0; size as usize];
        file.read_exact_at(&mut data, 0).map_err(local_err)?;
        let sha = s3::sha256_b64(&data);
        // After a crash between the upload and its journal record the
        // object may be there already: do not send it again.
        if let Some(info) = c.head(key)?
            && info.size == size
            && info.sha256.as_deref() == Some(sha.as_str())
        {
            sh.counters
                .objects_already_there
                .fetch_add(1, Ordering::Relaxed);
            lock(&d.journal)
                .object_done(name, &sha)
                .map_err(local_err)?;
            return Ok(size);
        }
        let returned = c.put(key, &data)?;
        verify(sh, c, key, &sha, returned)?;
        lock(&d.journal)
            .object_done(name, &sha)
            .map_err(local_err)?;
        sh.counters.objects_uploaded.fetch_add(1, Ordering::Relaxed);
        return Ok(size);
    }
    multipart(sh, c, d, &file, size, name, key, resume)?;
    Ok(size)
}

/// Compare the checksum the server returned (or reports on HEAD) with ours.
fn verify(
    sh: &Shared,
    c: &S3Client,
    key: &str,
    want: &str,
    returned: Option<String>,
) -> Result<(), S3Error> {
    let got = match returned {
        Some(g) => Some(g),
        None => c.head(key)?.and_then(|i| i.sha256),
    };
    match got {
        Some(g) if g == want => Ok(()),
        Some(g) => Err(S3Error {
            kind: FailKind::Checksum,
            detail: format!("{key}: the server reports SHA-256 {g}, ours is {want}"),
        }),
        None => {
            sh.counters
                .objects_unverified
                .fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn multipart(
    sh: &Shared,
    c: &S3Client,
    d: &DirState,
    file: &File,
    size: u64,
    name: &str,
    key: &str,
    resume: Option<crate::journal::Multipart>,
) -> Result<(), S3Error> {
    let (upload_id, part_bytes, mut parts) = match resume {
        Some(m) => {
            sh.counters.uploads_resumed.fetch_add(1, Ordering::Relaxed);
            sh.counters
                .parts_resumed
                .fetch_add(m.parts.len() as u64, Ordering::Relaxed);
            (m.upload_id, m.part_bytes, m.parts)
        }
        None => {
            let part_bytes = sh.cfg.part_bytes.max(size.div_ceil(PARTS_MAX));
            let id = c.create_multipart(key)?;
            lock(&d.journal)
                .begin_multipart(name, &id, part_bytes)
                .map_err(local_err)?;
            (id, part_bytes, Default::default())
        }
    };
    let count = size.div_ceil(part_bytes).max(1);
    let mut buf = Vec::new();
    for n in 1..=count {
        let n16 = n as u16;
        if parts.contains_key(&n16) {
            continue;
        }
        if must_stop(sh) {
            return Err(S3Error {
                kind: FailKind::Other,
                detail: "stopped".into(),
            });
        }
        let off = (n - 1) * part_bytes;
        let len = part_bytes.min(size - off) as usize;
        buf.resize(len, 0);
        file.read_exact_at(&mut buf, off).map_err(local_err)?;
        let sha = s3::b64(&Sha256::digest(&buf));
        match c.upload_part(key, &upload_id, n16, &buf, &sha) {
            Ok(etag) => {
                lock(&d.journal)
                    .part_done(name, n16, &etag, &sha)
                    .map_err(local_err)?;
                sh.counters.parts_uploaded.fetch_add(1, Ordering::Relaxed);
                parts.insert(n16, (etag, sha));
            }
            Err(e) if e.kind == FailKind::NoSuchUpload => {
                return restart_or_done(sh, c, d, size, name, key, e);
            }
            Err(e) => return Err(e),
        }
    }
    let list: Vec<(String, String)> = parts.values().cloned().collect();
    let want = s3::composite_sha256(&list.iter().map(|(_, s)| s.clone()).collect::<Vec<_>>())
        .unwrap_or_default();
    match c.complete_multipart(key, &upload_id, &list) {
        Ok(returned) => {
            verify(sh, c, key, &want, returned)?;
            lock(&d.journal)
                .object_done(name, &want)
                .map_err(local_err)?;
            sh.counters.objects_uploaded.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
        Err(e) if e.kind == FailKind::NoSuchUpload => restart_or_done(sh, c, d, size, name, key, e),
        Err(e) => Err(e),
    }
}

/// The journal's upload is gone on the server: either it was completed
/// just before a crash (the object is there, whole) or it must start over.
fn restart_or_done(
    sh: &Shared,
    c: &S3Client,
    d: &DirState,
    size: u64,
    name: &str,
    key: &str,
    e: S3Error,
) -> Result<(), S3Error> {
    let want = lock(&d.journal).multipart(name).map(|m| {
        s3::composite_sha256(&m.parts.values().map(|(_, s)| s.clone()).collect::<Vec<_>>())
            .unwrap_or_default()
    });
    if let Some(info) = c.head(key)?
        && info.size == size
        && (info.sha256.is_none() || info.sha256 == want)
    {
        sh.counters
            .objects_already_there
            .fetch_add(1, Ordering::Relaxed);
        lock(&d.journal)
            .object_done(name, &want.unwrap_or_default())
            .map_err(local_err)?;
        return Ok(());
    }
    lock(&d.journal).forget_multipart(name).map_err(local_err)?;
    Err(e)
}

fn run_hook(sh: &Shared, d: &DirState, f: &Completed) -> Result<(), S3Error> {
    let Some(cmd) = &sh.cfg.post_rotate else {
        return Ok(());
    };
    let path = d.sd.dir.join(&f.name);
    // Like tcpdump -z: the command gets the completed file as its last argument.
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("{cmd} \"$1\""))
        .arg("linecap-post-rotate")
        .arg(&path)
        .stdin(std::process::Stdio::null())
        .status();
    match status {
        Ok(s) if s.success() => {
            sh.counters.hook_ok.fetch_add(1, Ordering::Relaxed);
            lock(&d.journal).file_hooked(&f.name).map_err(local_err)?;
            Ok(())
        }
        Ok(s) => {
            sh.counters.hook_failed.fetch_add(1, Ordering::Relaxed);
            Err(S3Error {
                kind: FailKind::Other,
                detail: format!("--post-rotate command {cmd:?} exited with {s}"),
            })
        }
        Err(e) => {
            sh.counters.hook_failed.fetch_add(1, Ordering::Relaxed);
            Err(S3Error {
                kind: FailKind::Local,
                detail: format!("--post-rotate command {cmd:?} could not start: {e}"),
            })
        }
    }
}

/// `linecap ship --test`: put a probe object, read it back, delete it.
/// Each step's outcome, in order; the first failure ends the test.
pub fn self_test(cfg: &ShipConfig) -> Vec<(String, Result<String, String>)> {
    self_test_steps(cfg)
        .into_iter()
        .map(|(step, r)| (step, r.map_err(|e| describe(&e))))
        .collect()
}

/// [`self_test`] with each failure's kind kept (the control API answers
/// 503 when the store cannot be reached, 502 when it answered with an error).
pub fn self_test_steps(cfg: &ShipConfig) -> Vec<(String, Result<String, S3Error>)> {
    let mut out = Vec::new();
    let Some(t) = &cfg.s3 else {
        out.push((
            "config".into(),
            Err(S3Error {
                kind: FailKind::Local,
                detail: "no --ship s3://BUCKET/PREFIX given".into(),
            }),
        ));
        return out;
    };
    let c = match S3Client::new(t, None) {
        Ok(c) => c,
        Err(e) => {
            out.push(("config".into(), Err(e)));
            return out;
        }
    };
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let file = format!(".linecap-ship-test-{}-{nanos}", std::process::id());
    let key = if t.prefix.is_empty() {
        format!("{}/{file}", cfg.probe)
    } else {
        format!("{}/{}/{file}", t.prefix, cfg.probe)
    };
    let body: Vec<u8> = format!("linecap ship --test {nanos}\n")
        .into_bytes()
        .repeat(64);
    let mut step = |name: &str, r: Result<String, S3Error>| -> bool {
        let ok = r.is_ok();
        out.push((name.to_string(), r));
        ok
    };
    if !step(
        "put",
        c.put(&key, &body).map(|_| {
            format!(
                "PUT s3://{}/{key} ({} bytes, SHA-256 checked)",
                t.bucket,
                body.len()
            )
        }),
    ) {
        return out;
    }
    let back = c.get(&key).and_then(|got| {
        if got == body {
            Ok(format!("GET returned the same {} bytes", got.len()))
        } else {
            Err(S3Error {
                kind: FailKind::Checksum,
                detail: format!(
                    "GET returned {} bytes that differ from the {} sent",
                    got.len(),
                    body.len()
                ),
            })
        }
    });
    let read_ok = step("read back", back);
    let deleted = c.delete(&key).map(|()| "DELETE done".to_string());
    let del_ok = step("delete", deleted);
    if read_ok && del_ok {
        let gone = c.head(&key).and_then(|h| match h {
            None => Ok("the probe object is gone".to_string()),
            Some(_) => Err(S3Error {
                kind: FailKind::Permission,
                detail: "the probe object is still there after DELETE".into(),
            }),
        });
        step("check deleted", gone);
    }
    out
}

/// Metrics text (Prometheus) for the shipper.
pub fn metrics_text(s: &Shipper) -> String {
    let c = s.counters();
    let b = s.backlog();
    let mut o = String::new();
    let mut g = |name: &str, kind: &str, help: &str, v: String| {
        o.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"
        ));
    };
    let l = |a: &AtomicU64| a.load(Ordering::Relaxed).to_string();
    g(
        "linecap_ship_backlog_files",
        "gauge",
        "Completed files not yet shipped.",
        b.files.to_string(),
    );
    g(
        "linecap_ship_backlog_bytes",
        "gauge",
        "Bytes of completed files not yet shipped.",
        b.bytes.to_string(),
    );
    g(
        "linecap_ship_backlog_oldest_age_seconds",
        "gauge",
        "Age of the oldest completed file not yet shipped.",
        format!("{:.3}", b.oldest_age_s),
    );
    g(
        "linecap_ship_files_total",
        "counter",
        "Files shipped (data, index, manifest).",
        l(&c.files_shipped),
    );
    g(
        "linecap_ship_bytes_total",
        "counter",
        "Bytes of the files shipped.",
        l(&c.bytes_shipped),
    );
    g(
        "linecap_ship_objects_total",
        "counter",
        "Objects uploaded.",
        l(&c.objects_uploaded),
    );
    g(
        "linecap_ship_parts_total",
        "counter",
        "Multipart parts uploaded.",
        l(&c.parts_uploaded),
    );
    g(
        "linecap_ship_uploads_resumed_total",
        "counter",
        "Multipart uploads resumed after a restart.",
        l(&c.uploads_resumed),
    );
    g(
        "linecap_ship_objects_unverified_total",
        "counter",
        "Objects whose stored checksum the server did not report.",
        l(&c.objects_unverified),
    );
    g(
        "linecap_ship_post_rotate_ok_total",
        "counter",
        "Post-rotate commands that exited 0.",
        l(&c.hook_ok),
    );
    g(
        "linecap_ship_post_rotate_failed_total",
        "counter",
        "Post-rotate commands that failed.",
        l(&c.hook_failed),
    );
    g(
        "linecap_ship_deleted_files_total",
        "counter",
        "Local files deleted after shipping.",
        l(&c.files_deleted_after_ship),
    );
    g(
        "linecap_ship_dropped_unshipped_files_total",
        "counter",
        "Files retention deleted before shipping (--ship-may-drop).",
        l(&c.files_dropped_unshipped),
    );
    g(
        "linecap_ship_vanished_files_total",
        "counter",
        "Files deleted by someone else before shipping.",
        l(&c.files_vanished),
    );
    g(
        "linecap_ship_retention_refused_total",
        "counter",
        "Deletions retention wanted and the shipper refused (file not shipped).",
        l(&c.retention_refused),
    );
    o.push_str("# HELP linecap_ship_failures_total Failed shipping attempts by kind.\n# TYPE linecap_ship_failures_total counter\n");
    for k in FailKind::ALL {
        o.push_str(&format!(
            "linecap_ship_failures_total{{kind=\"{}\"}} {}\n",
            k.label(),
            c.failures[k.index()].load(Ordering::Relaxed)
        ));
    }
    o
}

/// Counters as JSON (reports, status).
pub fn status_json(s: &Shipper) -> serde_json::Value {
    let c = s.counters();
    let b = s.backlog();
    let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let failures: HashMap<&str, u64> = FailKind::ALL
        .iter()
        .map(|k| (k.label(), c.failures[k.index()].load(Ordering::Relaxed)))
        .collect();
    serde_json::json!({
        "backlog_files": b.files,
        "backlog_bytes": b.bytes,
        "backlog_oldest_age_s": b.oldest_age_s,
        "files_shipped": l(&c.files_shipped),
        "bytes_shipped": l(&c.bytes_shipped),
        "objects_uploaded": l(&c.objects_uploaded),
        "parts_uploaded": l(&c.parts_uploaded),
        "uploads_resumed": l(&c.uploads_resumed),
        "parts_resumed": l(&c.parts_resumed),
        "objects_already_there": l(&c.objects_already_there),
        "objects_unverified": l(&c.objects_unverified),
        "post_rotate_ok": l(&c.hook_ok),
        "post_rotate_failed": l(&c.hook_failed),
        "files_deleted_after_ship": l(&c.files_deleted_after_ship),
        "files_dropped_unshipped": l(&c.files_dropped_unshipped),
        "files_vanished": l(&c.files_vanished),
        "retention_refused": l(&c.retention_refused),
        "failures": failures,
        "preflight": s.preflight().map(|r| r.err().unwrap_or_else(|| "ok".into())),
        "last_error": s.last_error(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn keys_are_partitioned_by_the_files_start_time() {
        let sd = SeriesDir {
            job: "main".into(),
            queue: 3,
            dir: PathBuf::from("/x/q03"),
        };
        let n = "q03-00000007-20100710T045619.466743000Z.erf.lz4";
        assert_eq!(
            object_key("caps/site", "probe1", &sd, n, &format!("{n}.json")),
            format!("caps/site/probe1/main/q03/date=2010-07-10/hour=04/{n}.json")
        );
        assert_eq!(
            object_key("", "p", &sd, n, n),
            format!("p/main/q03/date=2010-07-10/hour=04/{n}")
        );
    }

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let cfg = ShipConfig::default();
        for n in 0..30 {
            let d = backoff(&cfg, n).as_secs_f64();
            let nominal = (0.5 * 2f64.powi(n.min(20) as i32)).min(30.0);
            assert!(d >= nominal * 0.5 && d < nominal * 1.5, "{n}: {d}");
        }
    }

    #[test]
    fn post_rotate_and_retention_without_a_store() {
        let d = tempfile::tempdir().unwrap();
        let q = d.path().join("q00");
        fs::create_dir_all(&q).unwrap();
        let log = d.path().join("log");
        let names: Vec<String> = (0..3)
            .map(|i| format!("q00-{i:08}-20260101T000000.000000000Z.erf.lz4"))
            .collect();
        for n in &names {
            fs::write(q.join(n), b"data").unwrap();
            fs::write(q.join(format!("{n}.json")), b"{}").unwrap();
        }
        // A file without its manifest is not complete yet.
        fs::write(
            q.join("q00-00000009-20260101T000000.000000000Z.erf.lz4"),
            b"x",
        )
        .unwrap();
        let cfg = ShipConfig {
            // Fails for the second file (its name holds 00000001), succeeds for the others.
            post_rotate: Some(format!(
                "sh -c 'case \"$0\" in *00000001*) exit 3;; esac; echo \"$0\" >> {}'",
                log.display()
            )),
            retry_base: Duration::from_millis(10),
            retry_max: Duration::from_millis(20),
            drain_timeout: Duration::from_millis(500),
            ..ShipConfig::default()
        };
        let s = Shipper::start(
            cfg,
            vec![("main".to_string(), d.path().to_path_buf())],
            None,
        )
        .unwrap();
        let hook = s.retention_hook();
        let t0 = Instant::now();
        while s.counters().hook_ok.load(Ordering::Relaxed) < 1
            && t0.elapsed() < Duration::from_secs(10)
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        // Shipped: may go. Not shipped (the failing one): kept, refusal counted.
        assert!(hook(&q.join(&names[0])));
        assert!(!hook(&q.join(&names[1])));
        assert!(s.counters().retention_refused.load(Ordering::Relaxed) >= 1);
        let r = s.finish();
        assert!(r.hook_failed >= 1, "{r:?}");
        assert_eq!(r.left_files, 2, "{r:?}");
        let ran = fs::read_to_string(&log).unwrap();
        assert!(ran.contains(&names[0]) && !ran.contains(&names[2]), "{ran}");
        // A restart goes on where it stopped and never runs a command twice.
        let s = Shipper::start(
            ShipConfig {
                post_rotate: Some(format!("echo >> {}", log.display())),
                drain_timeout: Duration::from_secs(5),
                ..ShipConfig::default()
            },
            vec![("main".to_string(), d.path().to_path_buf())],
            None,
        )
        .unwrap();
        let r = s.finish();
        assert_eq!(r.left_files, 0, "{r:?}");
        assert_eq!(s_lines(&log), 3);
    }

    #[test]
    fn may_drop_lets_retention_delete_unshipped_files_and_counts_them() {
        let d = tempfile::tempdir().unwrap();
        let q = d.path().join("q00");
        fs::create_dir_all(&q).unwrap();
        let n = "q00-00000000-20260101T000000.000000000Z.erf.lz4";
        fs::write(q.join(n), b"data").unwrap();
        fs::write(q.join(format!("{n}.json")), b"{}").unwrap();
        let s = Shipper::start(
            ShipConfig {
                post_rotate: Some("false".into()),
                may_drop: true,
                retry_base: Duration::from_millis(10),
                drain_timeout: Duration::from_millis(200),
                ..ShipConfig::default()
            },
            vec![("main".to_string(), d.path().to_path_buf())],
            None,
        )
        .unwrap();
        let hook = s.retention_hook();
        assert!(hook(&q.join(n)), "--ship-may-drop: retention may delete it");
        assert_eq!(
            s.counters().files_dropped_unshipped.load(Ordering::Relaxed),
            1
        );
        fs::remove_file(q.join(n)).unwrap();
        fs::remove_file(q.join(format!("{n}.json"))).unwrap();
        let r = s.finish();
        assert_eq!((r.files_dropped_unshipped, r.left_files), (1, 0), "{r:?}");
        // Dropped by retention, not counted again as vanished.
        assert_eq!(s.counters().files_vanished.load(Ordering::Relaxed), 0);
    }

    fn s_lines(p: &Path) -> usize {
        fs::read_to_string(p).unwrap().lines().count()
    }
}

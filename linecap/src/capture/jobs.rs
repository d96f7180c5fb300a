//! Capture jobs of a running capture: the registry the control API reads and
//! changes (`api.rs`, started through [`super::ApiStart`]), and the pipeline's side of adding and stopping a job.
//!
//! Shape (see `dataplane::jobctl`): every worker has a mailbox; adding a job
//! makes one ring and one file series per queue (off the capture cores),
//! hands the series to a writer thread through its inbox, sends each worker
//! its lane, bumps the epoch and waits until every worker has applied it.
//! Stopping a job sends each worker a removal: the lane commits its last
//! batch and closes its ring, the writer drains it, completes the last file
//! (its manifest says `"state": "stopped"`) and reports the series done.
//!
//! Limits: at most `max_jobs` jobs run at once (`--max-jobs`), never more
//! than the worker's `linecap_dataplane::worker::MAX_JOBS`; each costs one ring per queue.

use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use linecap_dataplane::counters::SharedCounters;
use linecap_dataplane::jobctl::{Epoch, LaneCommand, LaneSender};
use linecap_dataplane::ring::{self, RingConfig};
use linecap_writer::series::{FileSeries, SeriesConfig, SeriesCounters};
use serde::Deserialize;

use super::{QueueReport, WriterInput};
use crate::config::JobConfig;
use crate::metrics::{ProbeTable, QueueProbe, XdpLive};
use linecap_dataplane::afxdp::XdpQueueStats;

/// How long an add or a stop may wait for the workers and writers.
const APPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// A request to start a job (`POST /v1/jobs`): the CLI's `--job` keys.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    /// Job name (1 to 32 of `[A-Za-z0-9_-]`).
    pub name: String,
    /// Output directory: relative to the API's job root, or absolute inside it.
    pub directory: String,
    /// tcpdump filter expression.
    #[serde(default)]
    pub filter: Option<String>,
    /// Sampling policy (as `--sample`).
    #[serde(default)]
    pub sample: Option<String>,
    /// Bytes kept per frame.
    #[serde(default)]
    pub snaplen: Option<u32>,
    /// Crypto-PAn key file.
    #[serde(default)]
    pub anonymize_key: Option<PathBuf>,
    /// Which addresses to anonymise (`src`, `dst`, `both`).
    #[serde(default)]
    pub anonymize: Option<String>,
    /// MAC pseudonym key file.
    #[serde(default)]
    pub mac_key: Option<PathBuf>,
    /// Start a new file at this many bytes (the capture's `-C` when absent).
    #[serde(default)]
    pub rotate_bytes: Option<u64>,
    /// Keep at most this many files per queue (the capture's `-W` when absent).
    #[serde(default)]
    pub rotate_files: Option<u32>,
    /// Bytes this job's files may take, shared by its queues.
    #[serde(default)]
    pub budget_bytes: Option<u64>,
}

/// A refused request: the HTTP status, the field at fault and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobError {
    /// HTTP status to answer with.
    pub status: u16,
    /// The request field at fault, if one is.
    pub field: Option<&'static str>,
    /// What is wrong.
    pub message: String,
}

impl JobError {
    fn bad(field: &'static str, message: impl Into<String>) -> Self {
        JobError {
            status: 400,
            field: Some(field),
            message: message.into(),
        }
    }
    fn conflict(message: impl Into<String>) -> Self {
        JobError {
            status: 409,
            field: None,
            message: message.into(),
        }
    }
    fn not_found(name: &str) -> Self {
        JobError {
            status: 404,
            field: None,
            message: format!("no capture job named {name:?}"),
        }
    }
}

/// What a new job's files look like, fixed when the capture starts.
#[derive(Debug, Clone)]
pub struct SeriesTemplate {
    /// The capture's `-C`.
    pub rotate_bytes: Option<u64>,
    /// The capture's `-W`.
    pub rotate_files: Option<u32>,
    /// LZ4 or not.
    pub compress: bool,
    /// `--direct-io`.
    pub direct_io: bool,
    /// Live queues with `-G`: the period (the writer completes an idle file).
    pub live_period_ns: Option<u64>,
}

/// One queue as the registry sees it.
#[derive(Debug, Clone)]
pub struct QueueInfo {
    /// Queue number.
    pub id: u32,
    /// Where its frames come from.
    pub label: String,
    /// A live source (not a file replay).
    pub live: bool,
    /// AF_XDP queues: the drops before the socket, refreshed by the supervisor.
    pub xdp: Option<Arc<Mutex<XdpLive>>>,
    /// Where its timestamps come from (into every manifest, as at start).
    pub clock: &'static str,
}

/// Everything a job added at runtime needs, fixed at start.
pub struct Shape {
    /// Ring of each (job, queue).
    pub ring: RingConfig,
    /// The capture's queues.
    pub queues: Vec<QueueInfo>,
    /// File series settings.
    pub series: SeriesTemplate,
    /// Jobs that may run at once.
    pub max_jobs: usize,
    /// Where API-created jobs' directories must lie.
    pub job_root: PathBuf,
    /// Flow tracking follows the first job: it cannot be stopped.
    pub flows_on_first_job: bool,
    /// What `/metrics` reads: a job added or stopped here changes it.
    pub probes: Arc<ProbeTable>,
    /// The shipper, when shipping: a new job's files are shipped (and kept
    /// by retention until they are) like those of the jobs of the start.
    pub ship: Option<crate::ship::ShipHooks>,
}

/// One (job, queue): the handles its counters are read through.
#[derive(Clone)]
pub struct JobQueue {
    /// Queue number.
    pub queue: u32,
    /// Worker-side counters of the job's lane.
    pub worker: Arc<SharedCounters>,
    /// Writer-side counters of the job's series.
    pub writer: Arc<Mutex<SeriesCounters>>,
    /// Raised by the writer when the series is finished (last file complete).
    pub done: Arc<AtomicBool>,
    /// Errors the writer met, for the report.
    pub errors: Arc<Mutex<Vec<String>>>,
    /// The queue's drops before the socket when the job joined it.
    pub xdp_base: XdpLive,
}

/// A job's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// Capturing.
    Running,
    /// Stopped through the API; its counters are final.
    Stopped,
}

/// One job in the registry.
pub struct Job {
    /// Id the workers know it by.
    pub id: u32,
    /// Its configuration.
    pub config: JobConfig,
    /// What goes into its manifests.
    pub info: serde_json::Value,
    /// Running or stopped.
    pub state: JobState,
    /// Added through the API (not at start).
    pub runtime: bool,
    /// When it started and stopped (wall clock).
    pub started: SystemTime,
    /// When it was stopped, if it was.
    pub stopped: Option<SystemTime>,
    /// Per queue.
    pub queues: Vec<JobQueue>,
    /// Stop info the writer puts into the last manifest.
    final_capture: Arc<Mutex<Option<serde_json::Value>>>,
}

/// The running capture's jobs.
pub struct Jobs {
    shape: Shape,
    epoch: Epoch,
    lanes: Vec<LaneSender>,
    /// The writer threads' inboxes; emptied once the workers have ended, so
    /// the writers can finish.
    writers: Mutex<Vec<SyncSender<WriterInput>>>,
    reg: Mutex<Registry>,
    /// Cleared when the capture stops: no more changes.
    accepting: AtomicBool,
    /// When the capture started.
    pub started: Instant,
}

struct Registry {
    jobs: Vec<Job>,
    next_id: u32,
    next_writer: usize,
}

impl Jobs {
    /// The registry of a capture about to start: its mailboxes to the
    /// workers (one per queue, in queue order) and the writers' inboxes.
    pub(crate) fn new(
        shape: Shape,
        epoch: Epoch,
        lanes: Vec<LaneSender>,
        writers: Vec<SyncSender<WriterInput>>,
    ) -> Self {
        Jobs {
            shape,
            epoch,
            lanes,
            writers: Mutex::new(writers),
            reg: Mutex::new(Registry {
                jobs: Vec::new(),
                next_id: 0,
                next_writer: 0,
            }),
            accepting: AtomicBool::new(true),
            started: Instant::now(),
        }
    }

    /// Register a job the capture started with (ids in start order).
    pub fn register_start_job(
        &self,
        config: &JobConfig,
        info: serde_json::Value,
        queues: Vec<JobQueue>,
        final_capture: Arc<Mutex<Option<serde_json::Value>>>,
    ) {
        let mut reg = self.lock();
        let id = reg.next_id;
        reg.next_id += 1;
        reg.jobs.push(Job {
            id,
            config: config.clone(),
            info,
            state: JobState::Running,
            runtime: false,
            started: SystemTime::now(),
            stopped: None,
            queues,
            final_capture,
        });
    }

    /// The capture is stopping: refuse further changes. Taken under the
    /// registry's lock, so no add or stop is half done when this returns.
    pub fn close(&self) {
        let _reg = self.lock();
        self.accepting.store(false, Ordering::SeqCst);
    }

    /// The workers have ended: let the writers finish once their series are.
    pub fn release_writers(&self) {
        self.writers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// The capture's queues.
    pub fn queues(&self) -> &[QueueInfo] {
        &self.shape.queues
    }

    /// Jobs that may run at once.
    pub fn max_jobs(&self) -> usize {
        self.shape.max_jobs
    }

    /// Read the registry.
    pub fn with<T>(&self, f: impl FnOnce(&[Job]) -> T) -> T {
        f(&self.lock().jobs)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.reg.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Validate `req` exactly as `--job` is validated, then start the job on
    /// every queue; returns once every worker runs it.
    pub fn add(&self, req: &JobRequest) -> Result<String, JobError> {
        let out = self.resolve_dir(&req.directory)?;
        let config = request_config(req, out)?;
        let mut reg = self.lock();
        if !self.accepting.load(Ordering::SeqCst) {
            return Err(JobError::conflict("the capture is stopping: no new jobs"));
        }
        let running = reg
            .jobs
            .iter()
            .filter(|j| j.state == JobState::Running)
            .count();
        if running >= self.shape.max_jobs {
            return Err(JobError::conflict(format!(
                "{running} jobs run already, the most --max-jobs allows ({}): stop one first",
                self.shape.max_jobs
            )));
        }
        let mut all: Vec<JobConfig> = reg
            .jobs
            .iter()
            .filter(|j| j.state == JobState::Running)
            .map(|j| j.config.clone())
            .collect();
        all.push(config.clone());
        if reg.jobs.iter().any(|j| j.config.name == config.name) {
            return Err(JobError {
                status: 409,
                field: Some("name"),
                message: format!(
                    "a capture job named {:?} exists (stopped jobs keep their name)",
                    config.name
                ),
            });
        }
        crate::config::validate_jobs(&all).map_err(|e| {
            let m = format!("{e:#}");
            let field = if m.contains("name") && !m.contains("directories") {
                "name"
            } else {
                "directory"
            };
            JobError::bad(field, m)
        })?;
        let nq = self.shape.queues.len().max(1) as u64;
        // Checked before anything is made (no directory left by a refusal).
        if let Some(b) = req.budget_bytes
            && let Some(c) = req.rotate_bytes.or(self.shape.series.rotate_bytes)
            && b / nq < 2 * c
        {
            return Err(JobError::bad(
                "budget_bytes",
                format!(
                    "{b} bytes over {nq} queues must leave each at least twice the rotation size ({c})"
                ),
            ));
        }
        std::fs::create_dir_all(&config.out).map_err(|e| {
            JobError::bad(
                "directory",
                format!("creating {}: {e}", config.out.display()),
            )
        })?;
        let id = reg.next_id;
        let info = {
            let mut v = config.describe();
            v["state"] = "running".into();
            v
        };
        let final_capture = Arc::new(Mutex::new(None));
        let mut queues = Vec::new();
        let mut commands = Vec::new();
        let mut inputs = Vec::new();
        let mut probes = Vec::new();
        for q in &self.shape.queues {
            let (producer, consumer) = ring::ring(self.shape.ring).map_err(|e| JobError {
                status: 503,
                field: None,
                message: format!("no memory for the ring of queue {}: {e}", q.id),
            })?;
            let series = FileSeries::new(SeriesConfig {
                budget_bytes: req.budget_bytes.map(|b| b / nq),
                rotate_bytes: req.rotate_bytes.or(self.shape.series.rotate_bytes),
                rotate_files: req.rotate_files.or(self.shape.series.rotate_files),
                compress: self.shape.series.compress,
                direct_io: self.shape.series.direct_io,
                capture: Some(info.clone()),
                clock: Some(q.clock.into()),
                may_delete: self.shape.ship.as_ref().map(|s| s.may_delete.clone()),
                ..SeriesConfig::new(config.out.join(format!("q{:02}", q.id)), q.id)
            })
            .map_err(|e| {
                JobError::bad(
                    "directory",
                    format!("preparing {}: {e}", config.out.display()),
                )
            })?;
            let policies = config
                .policies
                .build()
                .map_err(|e| JobError::bad("filter", format!("{e:#}")))?;
            let jq = JobQueue {
                queue: q.id,
                worker: Arc::new(SharedCounters::default()),
                writer: Arc::new(Mutex::new(SeriesCounters::default())),
                done: Arc::new(AtomicBool::new(false)),
                errors: Arc::new(Mutex::new(Vec::new())),
                xdp_base: q.xdp.as_ref().map_or_else(XdpLive::default, |x| {
                    *x.lock().unwrap_or_else(|e| e.into_inner())
                }),
            };
            probes.push(QueueProbe {
                xdp: q.xdp.clone(),
                xdp_base: jq.xdp_base,
                ..QueueProbe::new(
                    &config.name,
                    q.id,
                    jq.worker.clone(),
                    jq.writer.clone(),
                    consumer.probe(),
                )
            });
            inputs.push(WriterInput::runtime(
                consumer,
                series,
                &jq,
                final_capture.clone(),
                self.shape.series.live_period_ns.filter(|_| q.live),
            ));
            commands.push(LaneCommand::Add {
                job: id,
                producer,
                shared: jq.worker.clone(),
                policies,
            });
            queues.push(jq);
        }
        // Writers first, so the rings are drained from the first batch on.
        {
            let writers = self.writers.lock().unwrap_or_else(|e| e.into_inner());
            for input in inputs {
                let w = reg.next_writer % writers.len().max(1);
                reg.next_writer += 1;
                if writers.is_empty() || writers[w].try_send(input).is_err() {
                    return Err(JobError::conflict(
                        "the writers take no new series (the capture is ending)",
                    ));
                }
            }
        }
        for (lane, cmd) in self.lanes.iter().zip(commands) {
            if lane.send(cmd).is_err() {
                return Err(JobError::conflict(
                    "a worker takes no new job (the capture is ending)",
                ));
            }
        }
        let epoch = self.epoch.bump();
        reg.next_id += 1;
        reg.jobs.push(Job {
            id,
            config: config.clone(),
            info,
            state: JobState::Running,
            runtime: true,
            started: SystemTime::now(),
            stopped: None,
            queues,
            final_capture,
        });
        // On /metrics from the next scrape (the workers run it by the time
        // this answer is sent).
        self.shape.probes.add(probes);
        drop(reg);
        if let Some(ship) = &self.shape.ship
            && let Err(e) = (ship.add_root)(&config.name, &config.out)
        {
            tracing::warn!("job {}: its files will not be shipped: {e}", config.name);
        }
        self.wait_applied(epoch)?;
        Ok(config.name)
    }

    /// Stop job `name`: returns once its last files are complete.
    pub fn stop(&self, name: &str) -> Result<(), JobError> {
        let mut reg = self.lock();
        if !self.accepting.load(Ordering::SeqCst) {
            return Err(JobError::conflict("the capture is stopping"));
        }
        let Some(pos) = reg.jobs.iter().position(|j| j.config.name == name) else {
            return Err(JobError::not_found(name));
        };
        let running: Vec<usize> = reg
            .jobs
            .iter()
            .enumerate()
            .filter(|(_, j)| j.state == JobState::Running)
            .map(|(i, _)| i)
            .collect();
        let job = &reg.jobs[pos];
        if job.state == JobState::Stopped {
            return Err(JobError::conflict(format!(
                "job {name:?} is stopped already"
            )));
        }
        if running.len() == 1 {
            return Err(JobError::conflict(
                "the last running job cannot be stopped (stop the capture instead)",
            ));
        }
        if self.shape.flows_on_first_job && running.first() == Some(&pos) {
            return Err(JobError::conflict(format!(
                "job {name:?} feeds the flow tables (--flows follows the first job): it cannot be stopped"
            )));
        }
        let mut info = job.info.clone();
        info["state"] = "stopped".into();
        *job.final_capture.lock().unwrap_or_else(|e| e.into_inner()) = Some(info.clone());
        for lane in &self.lanes {
            if lane.send(LaneCommand::Remove { job: job.id }).is_err() {
                return Err(JobError::conflict(
                    "a worker is gone (the capture is ending)",
                ));
            }
        }
        let epoch = self.epoch.bump();
        let dones: Vec<Arc<AtomicBool>> = job.queues.iter().map(|q| q.done.clone()).collect();
        let job = &mut reg.jobs[pos];
        job.state = JobState::Stopped;
        job.stopped = Some(SystemTime::now());
        job.info = info;
        self.shape.probes.stopped(name);
        drop(reg);
        self.wait_applied(epoch)?;
        let end = Instant::now() + APPLY_TIMEOUT;
        while !dones.iter().all(|d| d.load(Ordering::Acquire)) {
            if Instant::now() > end {
                return Err(JobError {
                    status: 504,
                    field: None,
                    message: format!(
                        "job {name:?} stopped, but its writers have not completed its files within {APPLY_TIMEOUT:?}"
                    ),
                });
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(())
    }

    fn wait_applied(&self, epoch: u64) -> Result<(), JobError> {
        let end = Instant::now() + APPLY_TIMEOUT;
        while !self.lanes.iter().all(|l| l.applied() >= epoch) {
            if Instant::now() > end || !self.accepting.load(Ordering::SeqCst) {
                return Err(JobError {
                    status: 504,
                    field: None,
                    message:
                        "the workers did not apply the change in time (has the capture ended?)"
                            .into(),
                });
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        Ok(())
    }

    /// `directory` of a request: relative to the job root, or absolute inside it.
    fn resolve_dir(&self, dir: &str) -> Result<PathBuf, JobError> {
        let p = Path::new(dir);
        if dir.is_empty() || p.components().any(|c| matches!(c, Component::ParentDir)) {
            return Err(JobError::bad(
                "directory",
                format!(
                    "{dir:?}: give a directory inside {} without '..'",
                    self.shape.job_root.display()
                ),
            ));
        }
        let full = if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.shape.job_root.join(p)
        };
        if !full.starts_with(&self.shape.job_root) || full == self.shape.job_root {
            return Err(JobError::bad(
                "directory",
                format!(
                    "{dir:?}: API jobs write inside the job root {} (--api-job-root)",
                    self.shape.job_root.display()
                ),
            ));
        }
        Ok(full)
    }

    /// Final per-queue reports of the jobs added at runtime (the jobs of the
    /// start are reported by the pipeline as before).
    pub fn runtime_reports(&self) -> Vec<(JobConfig, serde_json::Value, Vec<QueueReport>)> {
        let reg = self.lock();
        reg.jobs
            .iter()
            .filter(|j| j.runtime)
            .map(|j| (j.config.clone(), j.info.clone(), self.queue_reports(j)))
            .collect()
    }

    /// Live per-queue reports of `job` (the same shape as the final report).
    pub fn queue_reports(&self, job: &Job) -> Vec<QueueReport> {
        job.queues
            .iter()
            .map(|jq| {
                let q = self.shape.queues.iter().find(|q| q.id == jq.queue);
                let worker = jq.worker.snapshot();
                // Before-the-socket drops since the job joined the queue.
                let xdp = q.and_then(|q| q.xdp.as_ref()).map(|x| {
                    x.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .since(&jq.xdp_base)
                });
                QueueReport {
                    job: job.config.name.clone(),
                    queue: jq.queue,
                    source: q.map_or_else(String::new, |q| q.label.clone()),
                    worker,
                    writer: *jq.writer.lock().unwrap_or_else(|e| e.into_inner()),
                    errors: jq.errors.lock().unwrap_or_else(|e| e.into_inner()).clone(),
                    input_truncated_bytes: 0,
                    // Live: the program's own count is not re-read here; the
                    // socket's view stands in (what the final report checks).
                    xdp: xdp.map(|x| XdpQueueStats {
                        seen: worker.rx_packets + worker.source_nic + x.not_redirected,
                        not_redirected: x.not_redirected,
                        no_meta: 0,
                        hw_stamped: x.hw_stamped,
                        hw_missing: x.hw_missing,
                    }),
                    iface_drops: xdp.map_or(0, |x| x.iface_drops),
                    flows: None,
                    after_count: 0,
                }
            })
            .collect()
    }
}

/// A request as the `JobConfig` `--job` would give, every check the CLI makes.
fn request_config(req: &JobRequest, out: PathBuf) -> Result<JobConfig, JobError> {
    let sample = match &req.sample {
        Some(s) => Some(
            s.parse()
                .map_err(|e| JobError::bad("sample", format!("sample={s}: {e}")))?,
        ),
        None => None,
    };
    let anonymize = match &req.anonymize {
        Some(s) => Some(
            s.parse()
                .map_err(|e: String| JobError::bad("anonymize", e))?,
        ),
        None => None,
    };
    if anonymize.is_some() && req.anonymize_key.is_none() {
        return Err(JobError::bad("anonymize", "anonymize needs anonymize_key"));
    }
    if req.name.is_empty() {
        return Err(JobError::bad("name", "a job needs a name"));
    }
    let spec = crate::values::JobSpec {
        name: req.name.clone(),
        out,
        filter: req.filter.clone(),
        sample,
        snaplen: req.snaplen,
        anonymize_key: req.anonymize_key.clone(),
        anonymize,
        mac_key: req.mac_key.clone(),
    };
    spec.config("").map_err(|e| {
        let m = format!("{e:#}");
        let field = if m.starts_with("anonymize key") {
            "anonymize_key"
        } else if m.starts_with("MAC key") {
            "mac_key"
        } else if m.starts_with("--sample") {
            "sample"
        } else if m.starts_with("--snaplen") {
            "snaplen"
        } else {
            "filter"
        };
        JobError::bad(field, m)
    })
}

/// What the status route says of the capture besides its jobs.
#[derive(Debug, Clone)]
pub struct CaptureInfo {
    /// The sources' labels.
    pub sources: Vec<String>,
    /// Cores the workers are pinned to.
    pub worker_cores: Vec<usize>,
    /// Writer threads.
    pub writer_threads: usize,
    /// When the capture started.
    pub started: SystemTime,
}

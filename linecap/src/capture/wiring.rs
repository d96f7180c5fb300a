//! Wiring the capture before any thread starts: per (job, queue) a ring, a
//! file series in the directory the queue is placed on, the counters the
//! metrics read; per queue one worker with a lane per job (and its flow
//! table); the series shared out among the writer threads.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use linecap_dataplane::counters::SharedCounters;
use linecap_dataplane::flowtable::{FlowCounters, FlowTable};
use linecap_dataplane::ring::{self, RingConfig};
use linecap_dataplane::worker::{Worker, WorkerConfig};
use linecap_writer::series::{FileSeries, SeriesConfig, SeriesCounters};

use super::open::{Queue, QueueSource};
use super::report::ReportLine;
use super::writer::WriterInput;
use crate::config::{CaptureConfig, JobConfig};
use crate::metrics::{QueueProbe, XdpLive};
use linecap_flowexport::FlowProducer;

/// How long a file source waits for a free ring slot before it drops (and
/// counts) a frame: long enough for any sane disk, short enough that a stuck
/// writer cannot hang a capture.
const BACKPRESSURE_LIMIT_NS: u64 = 10_000_000_000;

/// Everything the threads will run, built and checked beforehand.
pub(super) struct Wiring {
    /// One worker per queue, with the queue it reads.
    pub(super) workers: Vec<(Worker, Queue)>,
    /// Per writer thread, the series it drains.
    pub(super) writer_inputs: Vec<Vec<WriterInput>>,
    /// What the metrics endpoint reads, per (job, queue).
    pub(super) probes: Vec<QueueProbe>,
    /// Per (job, queue), job-major: where its counters are published.
    pub(super) lines: Vec<ReportLine>,
    /// What the rings' memory is made of, all rings of the start.
    pub(super) pages: ring::RingPages,
    /// Per job of the start, per queue: the handles the control API reads.
    pub(super) start_jobs: Vec<Vec<crate::capture::jobs::JobQueue>>,
    /// Per job of the start: what its last manifest says when it is stopped.
    pub(super) final_captures: Vec<Arc<Mutex<Option<serde_json::Value>>>>,
    /// The rings' shape (for jobs added at runtime).
    pub(super) ring: RingConfig,
}

/// Per (job, queue) series: the byte budget, checked against the rotation
/// size. The budget holds per output directory: the series written into
/// one directory share it evenly (and so do the jobs).
pub(super) fn series_budgets(
    cfg: &CaptureConfig,
    queues: usize,
) -> anyhow::Result<Vec<Vec<Option<u64>>>> {
    let map = cfg.queue_dirs.as_deref();
    let jobs = cfg.jobs.len() as u64;
    cfg.jobs
        .iter()
        .map(|job| {
            let ndirs = job.dirs().count();
            let mut on_dir = vec![0u64; ndirs];
            for qi in 0..queues.max(1) {
                on_dir[job.dir_index(qi, map)] += 1;
            }
            (0..queues)
                .map(|qi| {
                    let di = job.dir_index(qi, map);
                    let Some(budget) = cfg.disk_budget else {
                        return Ok(None);
                    };
                    let series = on_dir[di] * jobs;
                    let b = budget / series;
                    if let Some(c) = cfg.rotate_bytes {
                        anyhow::ensure!(
                            b >= 2 * c,
                            "--disk-budget gives each of the {series} file series in {} \
                             ({} queues x {jobs} jobs) {b} bytes: that must be at least twice \
                             --rotate-bytes ({c}) so a complete file can be kept while the next \
                             one is written",
                            job.dir_of(qi, map).display(),
                            on_dir[di],
                        );
                    }
                    Ok(Some(b))
                })
                .collect()
        })
        .collect()
}

/// Create every job's output directories; the guard removes the ones it
/// created (and left empty) unless the capture starts (`keep`).
pub(super) fn make_dirs(cfg: &CaptureConfig) -> anyhow::Result<crate::outdirs::CreatedDirs> {
    let mut created = crate::outdirs::CreatedDirs::default();
    for job in &cfg.jobs {
        for d in job.dirs() {
            created
                .create(d)
                .with_context(|| format!("creating output directory {}", d.display()))?;
        }
    }
    Ok(created)
}

/// Where queue `q` (position `qi`) of `job` writes: `DIR/qNN`.
fn series_dir(cfg: &CaptureConfig, job: &JobConfig, qi: usize, id: u32) -> PathBuf {
    job.dir_of(qi, cfg.queue_dirs.as_deref())
        .join(format!("q{id:02}"))
}

/// One (job, queue) lane before it is given to its worker.
struct Lane {
    producer: ring::Producer,
    shared: Arc<SharedCounters>,
    policies: linecap_dataplane::worker::Policies,
}

/// Build rings, series, counters and workers.
pub(super) fn build(
    cfg: &CaptureConfig,
    queues: Vec<Queue>,
    budgets: &[Vec<Option<u64>>],
    mut flow_producers: Vec<FlowProducer>,
    xdp_live: &[Option<Arc<Mutex<XdpLive>>>],
    worker_stop: &Arc<AtomicBool>,
) -> anyhow::Result<Wiring> {
    let ring_cfg = RingConfig {
        slots: cfg.ring_slots,
        batch_bytes: cfg.batch_bytes,
        hugepages: cfg.hugepages,
    };
    let job_info: Vec<serde_json::Value> = cfg.jobs.iter().map(JobConfig::describe).collect();
    let nq = queues.len();
    let mut probes = Vec::new();
    // Writer threads for every series that may run (jobs the control API adds too).
    let series_max = nq * cfg.max_jobs.max(cfg.jobs.len());
    let mut writer_inputs: Vec<Vec<WriterInput>> = (0..cfg.writer_threads.min(series_max).max(1))
        .map(|_| Vec::new())
        .collect();
    let mut start_jobs: Vec<Vec<crate::capture::jobs::JobQueue>> =
        cfg.jobs.iter().map(|_| Vec::new()).collect();
    let final_captures: Vec<Arc<Mutex<Option<serde_json::Value>>>> = cfg
        .jobs
        .iter()
        .map(|_| Arc::new(Mutex::new(None)))
        .collect();
    let mut lines: Vec<ReportLine> = Vec::new();
    let mut lanes: Vec<Vec<Lane>> = (0..nq).map(|_| Vec::new()).collect();
    let mut pages = ring::RingPages::default();
    for (j, job) in cfg.jobs.iter().enumerate() {
        for (qi, q) in queues.iter().enumerate() {
            let (producer, consumer) = ring::ring(ring_cfg).with_context(|| {
                format!("creating the ring of queue {} (job {})", q.id, job.name)
            })?;
            pages = pages.and(producer.pages());
            let series = FileSeries::new(SeriesConfig {
                budget_bytes: budgets[j][qi],
                rotate_bytes: cfg.rotate_bytes,
                rotate_files: cfg.rotate_files,
                compress: cfg.compress,
                direct_io: cfg.direct_io,
                capture: Some(job_info[j].clone()),
                // issue 14: the manifest says which clock stamped the records.
                clock: Some(q.source.clock_source().into()),
                may_delete: cfg.ship.as_ref().map(|s| s.may_delete.clone()),
                ..SeriesConfig::new(series_dir(cfg, job, qi, q.id), q.id)
            })
            .with_context(|| {
                format!("preparing the output of queue {} (job {})", q.id, job.name)
            })?;
            let shared = Arc::new(SharedCounters::default());
            let wcounters = Arc::new(Mutex::new(SeriesCounters::default()));
            let flow_counters = (j == 0 && cfg.flows.is_some())
                .then(|| Arc::new(Mutex::new(FlowCounters::default())));
            probes.push(QueueProbe {
                flows: flow_counters.clone(),
                xdp: xdp_live[qi].clone(),
                ..QueueProbe::new(
                    &job.name,
                    q.id,
                    shared.clone(),
                    wcounters.clone(),
                    consumer.probe(),
                )
            });
            let n = writer_inputs.len();
            let live = !matches!(q.source, QueueSource::File(_));
            let done = Arc::new(AtomicBool::new(false));
            start_jobs[j].push(crate::capture::jobs::JobQueue {
                queue: q.id,
                worker: shared.clone(),
                writer: wcounters.clone(),
                done: done.clone(),
                errors: Arc::new(Mutex::new(Vec::new())),
                xdp_base: Default::default(),
            });
            writer_inputs[(qi + j * nq) % n].push(WriterInput {
                consumer,
                series,
                counters: wcounters.clone(),
                report: lines.len(),
                errors: None,
                live_period_ns: cfg
                    .rotate_seconds
                    .filter(|_| live)
                    .map(|s| s * 1_000_000_000),
                done,
                final_capture: final_captures[j].clone(),
            });
            lines.push(ReportLine {
                job: job.name.clone(),
                queue_index: qi,
                queue_id: q.id,
                label: q.label.clone(),
                worker: shared.clone(),
                writer: wcounters,
                flows: flow_counters,
            });
            lanes[qi].push(Lane {
                producer,
                shared,
                policies: job.policies.build()?,
            });
        }
    }
    let mut workers = Vec::new();
    for (qi, (q, lanes)) in queues.into_iter().zip(lanes).enumerate() {
        let flow_counters = lines
            .iter()
            .find(|r| r.queue_id == q.id)
            .and_then(|r| r.flows.clone());
        let producer = flow_counters.as_ref().and_then(|_| flow_producers.pop());
        let mut worker = worker_for(cfg, &q, lanes, worker_stop, producer, flow_counters)?;
        // issue 14: AF_XDP loss counted by the supervisor (XDP stage, the
        // interface) goes into the lctr of the queue's next records too.
        if let Some(live) = xdp_live.get(qi).cloned().flatten() {
            worker = worker.with_outside_loss(Box::new(move || {
                live.lock().unwrap_or_else(|e| e.into_inner()).lctr_foldable
            }));
        }
        workers.push((worker, q));
    }
    Ok(Wiring {
        workers,
        writer_inputs,
        probes,
        lines,
        pages,
        start_jobs,
        final_captures,
        ring: ring_cfg,
    })
}

/// One queue's worker: a lane per job, and the flow table when on.
fn worker_for(
    cfg: &CaptureConfig,
    q: &Queue,
    lanes: Vec<Lane>,
    worker_stop: &Arc<AtomicBool>,
    flow_producer: Option<FlowProducer>,
    flow_counters: Option<Arc<Mutex<FlowCounters>>>,
) -> anyhow::Result<Worker> {
    let backpressure_ns = match (&q.source, cfg.drop_when_full) {
        (QueueSource::File(_), false) => Some(BACKPRESSURE_LIMIT_NS),
        _ => None,
    };
    let mut lanes = lanes.into_iter();
    let first = lanes.next().expect("at least one job");
    let mut worker = Worker::new(
        WorkerConfig {
            backpressure_ns,
            flush_after_ns: cfg.flush_ns,
            rotate_every_ns: cfg.rotate_seconds.map(|s| s * 1_000_000_000),
            ..WorkerConfig::new(q.id)
        },
        first.producer,
        first.shared,
    )
    .with_abort(worker_stop.clone())
    .with_policies(first.policies);
    for lane in lanes {
        worker = worker
            .with_job(lane.producer, lane.shared, lane.policies)
            .map_err(|_| anyhow::anyhow!("too many capture jobs"))?;
    }
    Ok(match (&cfg.flows, flow_producer, flow_counters) {
        (Some(f), Some(mut producer), Some(fc)) => {
            let table = FlowTable::new(f.capacity, f.timeouts)
                .map_err(|e| anyhow::anyhow!("--flow-capacity: {e}"))?;
            worker.with_flows(table, Box::new(move |r| producer.offer(r)), fc)
        }
        _ => worker,
    })
}

/// Every output directory and its queue directories (for `--user`).
pub(super) fn owned_dirs(cfg: &CaptureConfig) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for job in &cfg.jobs {
        for d in job.dirs() {
            dirs.push(d.to_path_buf());
            if let Ok(rd) = std::fs::read_dir(d) {
                dirs.extend(
                    rd.flatten()
                        .map(|e| e.path())
                        .filter(|p: &PathBuf| p.is_dir()),
                );
            }
        }
    }
    dirs
}

//! One capture, by stage: open the sources ([`open`]), wire rings, series
//! and workers ([`wiring`]), run the threads ([`run`], [`writer`]), and
//! account for every frame ([`report`]). `-c` is [`count`]; the housekeeping
//! cores are [`affinity`].
//!
//! Everything is validated before (`crate::config`, the l2fwd shape); once
//! threads start, each worker reads only its own queue's config.

mod affinity;
mod count;
pub mod jobs;
mod open;
mod report;
mod run;
mod wiring;
mod writer;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use linecap_dataplane::afxdp::XdpQueueStats;

use crate::config::{CaptureConfig, validate_jobs};
use crate::metrics::MetricsServer;
use linecap_flowexport::Exporter;
pub use report::{CaptureReport, QueueReport, XdpProgramReport};
pub(crate) use writer::WriterInput;

/// Starts the control API once the capture's job registry exists (given by
/// `commands.rs`, so the capture does not depend on the API's module); what
/// it returns is kept alive until the capture's report is made.
pub type ApiStart =
    dyn Fn(Arc<jobs::Jobs>, jobs::CaptureInfo) -> anyhow::Result<Box<dyn std::any::Any>>;

/// What the signal handlers raise.
#[derive(Debug, Clone, Default)]
pub struct Signals {
    /// SIGINT / SIGTERM: stop, flush, complete the files.
    pub stop: Arc<AtomicBool>,
    /// SIGHUP: complete the current files now and start new ones.
    pub rotate: Arc<AtomicBool>,
}

/// SIGINT and SIGTERM raise `stop` (a second one exits at once); SIGHUP
/// raises `rotate`.
pub fn stop_on_signals() -> anyhow::Result<Signals> {
    let signals = Signals::default();
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(sig, 1, signals.stop.clone())?;
        signal_hook::flag::register(sig, signals.stop.clone())?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGHUP, signals.rotate.clone())?;
    Ok(signals)
}

/// Run a capture to its end (sources exhausted, `stop` raised, `-c`
/// reached, or the duration elapsed) and return the accounting.
pub fn run_capture(cfg: &CaptureConfig, signals: &Signals) -> anyhow::Result<CaptureReport> {
    run_capture_with(cfg, signals, None)
}

/// [`run_capture`] with the control API started by `api_start` (`--api`).
pub fn run_capture_with(
    cfg: &CaptureConfig,
    signals: &Signals,
    api_start: Option<&ApiStart>,
) -> anyhow::Result<CaptureReport> {
    anyhow::ensure!(
        cfg.writer_threads >= 1,
        "--writer-threads must be at least 1"
    );
    anyhow::ensure!(
        cfg.rotate_seconds != Some(0),
        "--rotate-seconds must be at least 1"
    );
    validate_jobs(&cfg.jobs)?;
    let mut att = open::Attachments::default();
    let queues = open::open_queues(cfg, &mut att)?;
    let budgets = wiring::series_budgets(cfg, queues.len())?;
    // Baselines: what the XDP programs counted before each queue's socket
    // was registered (read in open_queues, issue 14).
    let xdp_base: Vec<Option<XdpQueueStats>> = queues
        .iter()
        .map(|q| {
            let id = q.xdp?;
            att.xdp_base.iter().find(|(k, _)| *k == id).map(|(_, b)| *b)
        })
        .collect();
    let xdp_ids: Vec<Option<(usize, u32)>> = queues.iter().map(|q| q.xdp).collect();
    // AF_XDP queues: the XDP stage's and the interface's drops, refreshed by
    // the supervisor for the metrics (the report reads them at the end).
    let xdp_live: Vec<Option<Arc<Mutex<crate::metrics::XdpLive>>>> = queues
        .iter()
        .map(|q| q.xdp.map(|_| Arc::new(Mutex::new(Default::default()))))
        .collect();
    // Taken back if a later check fails before the capture starts (13b).
    let mut created_dirs = wiring::make_dirs(cfg)?;

    // From here on the main thread, and every thread it starts but the
    // workers, runs on the housekeeping cores.
    let housekeeping = affinity::Housekeeping::enter(&cfg.housekeeping)?;
    // Workers stop on `worker_stop`, raised by the supervisor once the
    // inflow is cut (live queues), so the rings can be drained exactly.
    let worker_stop = Arc::new(AtomicBool::new(false));
    // One bounded SPSC queue per worker into the one exporter thread.
    let (exporters, flow_producers) = match &cfg.flows {
        Some(f) => {
            let (ex, ps) = Exporter::start(&f.export, queues.len())?;
            (Some(ex), ps)
        }
        None => (None, Vec::new()),
    };
    let mut w = wiring::build(
        cfg,
        queues,
        &budgets,
        flow_producers,
        &xdp_live,
        &worker_stop,
    )?;
    // What /metrics reads: the jobs of the start, and those the API adds.
    let probe_table = Arc::new(crate::metrics::ProbeTable::new(
        std::mem::take(&mut w.probes),
        cfg.max_jobs.max(cfg.jobs.len()),
    ));
    let metrics = start_metrics(cfg, probe_table.clone())?;
    // The control API: a mailbox per worker, an inbox per writer thread,
    // and the registry of jobs (issue 15).
    let mut writer_inboxes: Vec<Option<std::sync::mpsc::Receiver<WriterInput>>> =
        w.writer_inputs.iter().map(|_| None).collect();
    let jobs_runtime = match &cfg.api {
        Some(api) => {
            let epoch = linecap_dataplane::jobctl::Epoch::new();
            let nq = w.workers.len();
            let series_max = (nq * cfg.max_jobs.max(cfg.jobs.len())).max(1);
            let mut senders = Vec::new();
            for slot in writer_inboxes.iter_mut() {
                let (tx, rx) = std::sync::mpsc::sync_channel(series_max);
                *slot = Some(rx);
                senders.push(tx);
            }
            let mut lanes = Vec::new();
            let mut infos = Vec::new();
            let workers = std::mem::take(&mut w.workers);
            for (qi, (worker, q)) in workers.into_iter().enumerate() {
                let (control, sender) = epoch.mailbox();
                lanes.push(sender);
                infos.push(crate::capture::jobs::QueueInfo {
                    id: q.id,
                    label: q.label.clone(),
                    live: !matches!(q.source, open::QueueSource::File(_)),
                    xdp: xdp_live[qi].clone(),
                    clock: q.source.clock_source(),
                });
                w.workers.push((worker.with_control(control), q));
            }
            let shape = crate::capture::jobs::Shape {
                ring: w.ring,
                queues: infos,
                series: crate::capture::jobs::SeriesTemplate {
                    rotate_bytes: cfg.rotate_bytes,
                    rotate_files: cfg.rotate_files,
                    compress: cfg.compress,
                    direct_io: cfg.direct_io,
                    live_period_ns: cfg.rotate_seconds.map(|s| s * 1_000_000_000),
                },
                max_jobs: cfg.max_jobs.max(cfg.jobs.len()),
                job_root: api.job_root.clone(),
                flows_on_first_job: cfg.flows.is_some(),
                probes: probe_table.clone(),
                ship: cfg.ship.clone(),
            };
            let rt = Arc::new(crate::capture::jobs::Jobs::new(
                shape, epoch, lanes, senders,
            ));
            let start_jobs = std::mem::take(&mut w.start_jobs);
            for ((job, qs), fc) in cfg.jobs.iter().zip(start_jobs).zip(&w.final_captures) {
                rt.register_start_job(job, job.describe(), qs, fc.clone());
            }
            Some(rt)
        }
        None => None,
    };
    let api_server = match (api_start, &jobs_runtime) {
        (Some(start), Some(rt)) => Some(start(
            rt.clone(),
            jobs::CaptureInfo {
                sources: cfg.sources.iter().map(|s| s.label()).collect(),
                worker_cores: cfg.cores.clone(),
                writer_threads: cfg.writer_threads,
                started: std::time::SystemTime::now(),
            },
        )?),
        _ => None,
    };
    become_user(cfg)?;
    if !att.list.is_empty() {
        let ifs: Vec<&str> = att.list.iter().map(|a| a.ifname()).collect();
        tracing::info!(
            "ready: capturing on {} ({} queues); SIGINT/SIGTERM to stop",
            ifs.join(", "),
            w.workers.len()
        );
    } else {
        let dpdk: Vec<&str> = w
            .workers
            .iter()
            .map(|(_, q)| q.label.as_str())
            .filter(|l| l.starts_with("dpdk:"))
            .collect();
        if !dpdk.is_empty() {
            tracing::info!(
                "ready: capturing on {}; SIGINT/SIGTERM to stop",
                dpdk.join(", ")
            );
        }
    }
    let limit = cfg.max_frames.map(count::CountLimit::new);
    // issue 14: per queue, the socket's own drop count (the first job's
    // lines carry the queue-level counters), for the interface rule.
    let xsk_counters: Vec<Arc<linecap_dataplane::counters::SharedCounters>> = w
        .lines
        .iter()
        .take(xdp_ids.len())
        .map(|l| l.worker.clone())
        .collect();
    created_dirs.keep();
    let threads = run::Threads {
        lines: &w.lines,
        cfg,
        signals,
        worker_stop,
        housekeeping: &housekeeping,
        limit: limit.as_ref(),
        jobs: jobs_runtime.as_ref(),
    };
    let mut xdp = run::XdpWatch {
        att: &mut att,
        ids: &xdp_ids,
        base: &xdp_base,
        live: &xdp_live,
        xsk: &xsk_counters,
    };
    let outcome = threads.run(w.workers, w.writer_inputs, writer_inboxes, &mut xdp);
    let xsk: Vec<u64> = xsk_counters
        .iter()
        .map(|c| c.snapshot().source_nic)
        .collect();
    let ends = queue_ends(&att, &xdp_ids, &xdp_base, &xsk);
    let xdp_programs = att
        .list
        .iter()
        .map(|a| {
            let info = a.device_bound_info();
            report::XdpProgramReport {
                ifname: a.ifname().into(),
                driver: a.driver().into(),
                native: a.native(),
                device_bound: a.device_bound(),
                prog_id: info.map(|i| i.id),
                device_bound_refused: a.device_bound_refused().map(String::from),
                metadata_refused: a.metadata_refused().map(String::from),
                native_refused: a.native_refused().map(String::from),
            }
        })
        .collect();
    drop(att);
    let mut queues = report::assemble(w.lines, &outcome.workers, &outcome.writer_errors, &ends);
    // Jobs stopped or added through the control API: the stopped ones of the
    // start say so; the added ones' reports follow the others'.
    let mut jobs: Vec<(String, std::path::PathBuf, serde_json::Value)> = cfg
        .jobs
        .iter()
        .map(|j| (j.name.clone(), j.out.clone(), j.describe()))
        .collect();
    if let Some(rt) = &jobs_runtime {
        rt.with(|all| {
            for j in all.iter().filter(|j| !j.runtime) {
                if let Some(e) = jobs.iter_mut().find(|e| e.0 == j.config.name) {
                    e.2 = j.info.clone();
                }
            }
        });
        for (config, info, qs) in rt.runtime_reports() {
            jobs.push((config.name.clone(), config.out.clone(), info));
            queues.extend(qs);
        }
    }
    drop(api_server);
    let stop = &signals.stop;
    // A capture that ended by itself keeps its final values on /metrics for
    // a while (a scraper's last look); a signal during the hold ends it.
    if let (Some(_), Some(m)) = (&metrics, &cfg.metrics)
        && !stop.load(Ordering::Relaxed)
    {
        let end = Instant::now() + m.hold;
        while Instant::now() < end && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    drop(metrics);
    // Every worker has drained its table: let the exporters write it all.
    let exports = match exporters {
        Some(ex) => {
            let live = ex.drops();
            Some((ex.finish()?, live))
        }
        None => None,
    };
    drop(housekeeping);
    Ok(CaptureReport {
        exports,
        queues,
        jobs,
        pages: w.pages,
        stopped: stop.load(Ordering::Relaxed),
        xdp_programs,
    })
}

/// Start the metrics endpoint: an address given explicitly must be served,
/// the default one is a warning when busy.
fn start_metrics(
    cfg: &CaptureConfig,
    probes: Arc<crate::metrics::ProbeTable>,
) -> anyhow::Result<Option<MetricsServer>> {
    let Some(m) = &cfg.metrics else {
        return Ok(None);
    };
    let ship_metrics = cfg.ship.as_ref().map(|s| s.metrics.clone());
    match MetricsServer::start(m.addr, probes, ship_metrics) {
        Ok(server) => {
            tracing::info!("metrics on http://{}/metrics", server.addr());
            Ok(Some(server))
        }
        Err(e) if !m.required => {
            tracing::warn!(
                "{e:#}; capturing without metrics (give --metrics ADDR to make this an error)"
            );
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// `--user`: everything privileged is done (XDP attached, sockets bound,
/// rings and directories made): hand the output to the user, then become it
/// before any worker or writer thread starts (capabilities are per thread).
fn become_user(cfg: &CaptureConfig) -> anyhow::Result<()> {
    let Some(user) = &cfg.user else {
        return Ok(());
    };
    let t = crate::privileges::resolve_user(user)?;
    for d in wiring::owned_dirs(cfg) {
        nix::unistd::chown(&d, Some(t.uid), Some(t.gid))
            .with_context(|| format!("giving {} to {user}", d.display()))?;
    }
    crate::privileges::drop_privileges(user, crate::privileges::CAPTURE_KEEP)?;
    tracing::info!(
        "running as {user} (uid {}) with CAP_NET_ADMIN, CAP_BPF, CAP_IPC_LOCK",
        t.uid
    );
    Ok(())
}

/// Final XDP counts, and the interfaces' own drops (on each interface's
/// first queue).
fn queue_ends(
    att: &open::Attachments,
    xdp_ids: &[Option<(usize, u32)>],
    xdp_base: &[Option<XdpQueueStats>],
    xsk: &[u64],
) -> Vec<report::QueueEnd> {
    let xdp_final: Vec<Option<XdpQueueStats>> = xdp_ids
        .iter()
        .zip(xdp_base)
        .map(|(id, base)| {
            let ((a, q), b) = ((*id)?, (*base)?);
            let now = att.list[a].queue_stats(q);
            Some(now.since(&b))
        })
        .collect();
    let mut iface_drop_per_queue = vec![0u64; xdp_ids.len()];
    for ai in 0..att.list.len() {
        if let Some(first) = xdp_ids.iter().position(|x| x.is_some_and(|(i, _)| i == ai)) {
            iface_drop_per_queue[first] =
                open::iface_drops_since_start(att, ai, open::xsk_drops_of(xdp_ids, ai, xsk));
        }
    }
    xdp_final
        .into_iter()
        .zip(iface_drop_per_queue)
        .map(|(xdp, iface_drops)| report::QueueEnd { xdp, iface_drops })
        .collect()
}

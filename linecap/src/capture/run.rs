//! Running the capture: a thread per worker (on its core), the writer
//! threads, an optional deadline, and the supervising loop on the main
//! thread that cuts the inflow on a stop and waits for the workers to drain.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use linecap_dataplane::clock::MonotonicClock;
use linecap_dataplane::source::RxQueue;
use linecap_dataplane::worker::Worker;

use super::Signals;
use super::affinity::Housekeeping;
use super::count::{CountLimit, Limited};
use super::open::{Attachments, Queue, QueueSource, refresh_xdp_live};
use super::report::WorkerOutcome;
use super::writer::{WriterInput, writer_loop};
use crate::config::CaptureConfig;

/// What the supervisor needs of the XDP side while the capture runs.
pub(super) struct XdpWatch<'a> {
    pub(super) att: &'a mut Attachments,
    pub(super) ids: &'a [Option<(usize, u32)>],
    pub(super) base: &'a [Option<linecap_dataplane::afxdp::XdpQueueStats>],
    pub(super) live: &'a [Option<Arc<Mutex<crate::metrics::XdpLive>>>],
    /// Per queue, where its socket's drops are published (issue 14).
    pub(super) xsk: &'a [Arc<linecap_dataplane::counters::SharedCounters>],
}

/// What the threads left behind.
pub(super) struct RunOutcome {
    /// Per queue.
    pub(super) workers: Vec<WorkerOutcome>,
    /// (report line, message) from the writers.
    pub(super) writer_errors: Vec<(usize, String)>,
}

/// The threads of one capture.
pub(super) struct Threads<'a> {
    pub(super) cfg: &'a CaptureConfig,
    pub(super) signals: &'a Signals,
    /// Raised by the supervisor once the inflow is cut: the workers drain
    /// and finish.
    pub(super) worker_stop: Arc<AtomicBool>,
    pub(super) housekeeping: &'a Housekeeping,
    pub(super) limit: Option<&'a CountLimit>,
    /// Per (job, queue): the counters the drop log watches.
    pub(super) lines: &'a [super::report::ReportLine],
    /// The control API's registry of jobs, when `--api` is on.
    pub(super) jobs: Option<&'a std::sync::Arc<crate::capture::jobs::Jobs>>,
}

impl Threads<'_> {
    /// Run every worker and writer to the end.
    pub(super) fn run(
        &self,
        workers: Vec<(Worker, Queue)>,
        writer_inputs: Vec<Vec<WriterInput>>,
        writer_inboxes: Vec<Option<std::sync::mpsc::Receiver<WriterInput>>>,
        xdp: &mut XdpWatch<'_>,
    ) -> RunOutcome {
        let cfg = self.cfg;
        let stop = self.signals.stop.clone();
        let rotate_gen = AtomicU64::new(0);
        let outcomes: Vec<Mutex<WorkerOutcome>> = (0..workers.len())
            .map(|_| Mutex::new(WorkerOutcome::default()))
            .collect();
        let writer_errors: Mutex<Vec<(usize, String)>> = Mutex::new(Vec::new());
        std::thread::scope(|s| {
            let done = Arc::new(AtomicBool::new(false));
            if let Some(d) = cfg.duration {
                let (done, deadline_stop) = (done.clone(), stop.clone());
                s.spawn(move || {
                    let end = Instant::now() + d;
                    while Instant::now() < end && !done.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    deadline_stop.store(true, Ordering::Relaxed);
                });
            }
            let mut handles = Vec::new();
            for (i, (worker, q)) in workers.into_iter().enumerate() {
                let out = &outcomes[i];
                let core = (!cfg.cores.is_empty()).then(|| cfg.cores[i % cfg.cores.len()]);
                let (worker_stop, hk, limit) = (&*self.worker_stop, self.housekeeping, self.limit);
                handles.push(
                    std::thread::Builder::new()
                        .name(format!("lc-worker-{}", q.id))
                        .spawn_scoped(s, move || {
                            let r = worker_thread(worker, q, core, hk, limit, worker_stop);
                            *out.lock().unwrap_or_else(|e| e.into_inner()) = r;
                        })
                        .expect("spawning a worker thread"),
                );
            }
            for ((i, inputs), inbox) in writer_inputs.into_iter().enumerate().zip(writer_inboxes) {
                let (writer_errors, rotate_gen) = (&writer_errors, &rotate_gen);
                std::thread::Builder::new()
                    .name(format!("lc-writer-{i}"))
                    .spawn_scoped(s, move || {
                        // Batches of a finished period reach the writer within a
                        // flush interval; wait that and a second more.
                        let grace_ns = cfg.flush_ns + 1_000_000_000;
                        writer_loop(
                            inputs,
                            inbox,
                            writer_errors,
                            rotate_gen,
                            cfg.writer_delay,
                            grace_ns,
                        )
                    })
                    .expect("spawning a writer thread");
            }
            self.supervise(&handles, xdp, &rotate_gen);
            for (i, h) in handles.into_iter().enumerate() {
                if let Err(panic) = h.join() {
                    let msg = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "unknown panic".into());
                    outcomes[i]
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .errors
                        .push(format!("worker panicked (a bug, please report it): {msg}"));
                }
            }
            // No job changes once the workers are gone; the writers end
            // with their last series.
            if let Some(rt) = self.jobs {
                rt.close();
                rt.release_writers();
            }
            done.store(true, Ordering::Relaxed);
        });
        RunOutcome {
            workers: outcomes
                .into_iter()
                .map(|o| o.into_inner().unwrap_or_else(|e| e.into_inner()))
                .collect(),
            writer_errors: writer_errors
                .into_inner()
                .unwrap_or_else(|e| e.into_inner()),
        }
    }

    /// Supervise: when asked to stop (a signal, the deadline, `-c`), cut the
    /// AF_XDP inflow first (frames then pass to the kernel stack and are
    /// counted as not redirected), then let the workers drain their rings
    /// and finish.
    fn supervise(
        &self,
        handles: &[std::thread::ScopedJoinHandle<'_, ()>],
        xdp: &mut XdpWatch<'_>,
        rotate_gen: &AtomicU64,
    ) {
        let stop = &self.signals.stop;
        let mut xdp_refreshed = Instant::now();
        let mut drop_watch = crate::droplog::DropWatch::new(self.lines.len());
        let mut drops_checked = Instant::now();
        loop {
            if handles.iter().all(|h| h.is_finished()) {
                break;
            }
            // Drops beginning at a stage are logged when they begin (rate-limited).
            if drops_checked.elapsed() >= Duration::from_secs(1) {
                drops_checked = Instant::now();
                for (ri, l) in self.lines.iter().enumerate() {
                    let w = l.worker.snapshot();
                    let wr = l
                        .writer
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .drop_packets;
                    let now = [w.ring_full_packets, w.source_nic, w.source_unsupported, wr];
                    drop_watch.observe(ri, &l.job, l.queue_id, now);
                }
            }
            if xdp_refreshed.elapsed() >= Duration::from_millis(500) {
                xdp_refreshed = Instant::now();
                let xsk: Vec<u64> = xdp.xsk.iter().map(|c| c.snapshot().source_nic).collect();
                refresh_xdp_live(xdp.att, xdp.ids, xdp.base, xdp.live, &xsk);
            }
            if self.signals.rotate.swap(false, Ordering::Relaxed) {
                rotate_gen.fetch_add(1, Ordering::Relaxed);
            }
            if self.limit.is_some_and(CountLimit::reached) {
                stop.store(true, Ordering::Relaxed);
            }
            if stop.load(Ordering::Relaxed) && !self.worker_stop.load(Ordering::Relaxed) {
                if let Some(rt) = self.jobs {
                    rt.close();
                }
                for (a, q) in xdp.ids.iter().flatten() {
                    xdp.att.list[*a].unregister(*q);
                }
                self.worker_stop.store(true, Ordering::Relaxed);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// One worker thread: pin, run the queue to its end, report.
fn worker_thread(
    mut worker: Worker,
    q: Queue,
    core: Option<usize>,
    hk: &Housekeeping,
    limit: Option<&CountLimit>,
    stop: &AtomicBool,
) -> WorkerOutcome {
    let mut out = WorkerOutcome::default();
    match core {
        Some(id) => {
            if !core_affinity::set_for_current(core_affinity::CoreId { id }) {
                out.errors
                    .push(format!("could not pin the worker to core {id}"));
            }
        }
        None => out.errors.extend(hk.release_worker()),
    }
    let clock = MonotonicClock::default();
    let (err, trunc) = match q.source {
        QueueSource::File(mut src) => {
            out.after_count = run_limited(&mut worker, &mut src, &clock, stop, limit);
            (src.error(), src.truncated_bytes())
        }
        QueueSource::Synthetic(mut src) => {
            out.after_count = run_limited(&mut worker, &mut src, &clock, stop, limit);
            (src.error(), 0)
        }
        QueueSource::AfXdp(mut src) => {
            out.after_count = run_limited(&mut worker, &mut *src, &clock, stop, limit);
            (src.error(), 0)
        }
        #[cfg(feature = "dpdk")]
        QueueSource::Dpdk(mut src) => {
            out.after_count = run_limited(&mut worker, &mut *src, &clock, stop, limit);
            tracing::info!("{}", crate::dpdksource::stop_note(&src));
            (src.error(), 0)
        }
    };
    out.errors.extend(err);
    out.truncated_bytes = trunc;
    out
}

/// Run `worker` on `src`, through the `-c` limit when there is one; returns
/// the frames read after the limit.
fn run_limited<R: RxQueue>(
    worker: &mut Worker,
    src: &mut R,
    clock: &MonotonicClock,
    stop: &AtomicBool,
    limit: Option<&CountLimit>,
) -> u64 {
    match limit {
        Some(l) => {
            let mut lim = Limited::new(src, l);
            worker.run(&mut lim, clock, stop);
            lim.after_count
        }
        None => {
            worker.run(src, clock, stop);
            0
        }
    }
}

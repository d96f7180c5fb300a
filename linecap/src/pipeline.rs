//! Wiring of one capture: a worker thread per queue, a ring per queue, and
//! writer threads that drain the rings into each queue's file series.
//!
//! `main` validates everything first (the l2fwd shape); once threads start,
//! each worker reads only its own queue's config. The accounting identity
//! checked at the end, per queue:
//!
//! ```text
//! seen by source = written + dropped(source) + dropped(ring_full) + dropped(writer)
//! ```

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use linecap_dataplane::clock::{MonotonicClock, RealtimeClock};
use linecap_dataplane::counters::{SharedCounters, WorkerCounters};
use linecap_dataplane::ring::{self, Consumer, HugePages, RingConfig};
use linecap_dataplane::source::RxQueue;
use linecap_dataplane::synthetic::{SyntheticConfig, SyntheticSource};
use linecap_dataplane::worker::{Worker, WorkerConfig};
use linecap_writer::series::{FileSeries, SeriesConfig, SeriesCounters};

use crate::filesource::FileSource;

/// Where one or more queues get their frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    /// A capture file (pcap, pcapng, ERF; plain or LZ4).
    File(PathBuf),
    /// Generated frames.
    Synthetic(SyntheticConfig),
}

impl SourceSpec {
    fn label(&self) -> String {
        match self {
            SourceSpec::File(p) => format!("file:{}", p.display()),
            SourceSpec::Synthetic(c) => format!(
                "synth:{}:{}:{}",
                c.frame_len,
                c.flows,
                c.count.map_or("-".into(), |n| n.to_string())
            ),
        }
    }
}

/// Everything one capture needs, validated before any thread starts.
#[derive(Debug, Clone)]
pub struct CaptureConfig {
    /// Sources; each file source feeds `spread` queues, each synthetic one queue.
    pub sources: Vec<SourceSpec>,
    /// Queues per file source (emulated RSS).
    pub spread: u32,
    /// Output directory; queue N writes into `out/qNN/`.
    pub out: PathBuf,
    /// Rotate files at this size.
    pub rotate_bytes: Option<u64>,
    /// Rotate files on multiples of this period of packet time.
    pub rotate_seconds: Option<u64>,
    /// Keep at most this many files per queue.
    pub rotate_files: Option<u32>,
    /// LZ4-compress batches.
    pub compress: bool,
    /// Bytes of records per batch (= per ring slot).
    pub batch_bytes: usize,
    /// Slots per queue ring.
    pub ring_slots: usize,
    /// Writer threads.
    pub writer_threads: usize,
    /// Ring memory source.
    pub hugepages: HugePages,
    /// Flush a partly filled batch after this long.
    pub flush_ns: u64,
    /// Stop after this long (live sources).
    pub duration: Option<Duration>,
    /// File sources too drop (and count) when the ring is full, as a live
    /// queue does, instead of waiting for the writer.
    pub drop_when_full: bool,
}

/// How long a file source waits for a free ring slot before it drops (and
/// counts) a frame: long enough for any sane disk, short enough that a stuck
/// writer cannot hang a capture.
const BACKPRESSURE_LIMIT_NS: u64 = 10_000_000_000;

/// One queue's line in the accounting.
#[derive(Debug, Clone)]
pub struct QueueReport {
    /// Queue number.
    pub queue: u32,
    /// Where its frames came from.
    pub source: String,
    /// Capture-side counters.
    pub worker: WorkerCounters,
    /// Writer-side counters.
    pub writer: SeriesCounters,
    /// Why the source or writer stopped early, if it did.
    pub errors: Vec<String>,
    /// Bytes at the end of an input file that formed no complete record.
    pub input_truncated_bytes: u64,
}

impl QueueReport {
    /// Frames the source saw.
    pub fn seen(&self) -> u64 {
        self.worker.source_seen()
    }
    /// Frames dropped, all stages.
    pub fn dropped(&self) -> u64 {
        self.worker.source_unsupported
            + self.worker.source_nic
            + self.worker.ring_full_packets
            + self.writer.drop_packets
    }
    /// Whether seen = written + dropped holds.
    pub fn balanced(&self) -> bool {
        self.seen() == self.writer.packets + self.dropped()
            && self.worker.rx_packets == self.worker.ring_packets + self.worker.ring_full_packets
            && self.worker.ring_packets == self.writer.packets + self.writer.drop_packets
    }
}

/// The whole capture's accounting.
#[derive(Debug, Clone)]
pub struct CaptureReport {
    /// Per queue.
    pub queues: Vec<QueueReport>,
    /// Whether the rings got hugepages.
    pub hugepages: bool,
    /// Whether the capture was stopped (signal, duration) rather than ending with its sources.
    pub stopped: bool,
}

impl CaptureReport {
    /// Whether every queue balances.
    pub fn balanced(&self) -> bool {
        self.queues.iter().all(QueueReport::balanced)
    }
}

/// What a writer thread drains for one queue: the ring, the file series,
/// and where it publishes the series' counters.
type WriterInput = (Consumer, FileSeries, Arc<Mutex<SeriesCounters>>);

enum QueueSource {
    File(FileSource),
    Synthetic(SyntheticSource<RealtimeClock>),
}

struct Queue {
    id: u32,
    label: String,
    source: QueueSource,
}

fn open_queues(cfg: &CaptureConfig) -> anyhow::Result<Vec<Queue>> {
    anyhow::ensure!(!cfg.sources.is_empty(), "no --source given");
    anyhow::ensure!(cfg.spread >= 1, "--spread must be at least 1");
    let mut queues = Vec::new();
    for spec in &cfg.sources {
        match spec {
            SourceSpec::File(path) => {
                for i in 0..cfg.spread {
                    let src = FileSource::open(path, cfg.spread, i)
                        .with_context(|| format!("opening source {}", spec.label()))?;
                    queues.push(QueueSource::File(src));
                }
            }
            SourceSpec::Synthetic(c) => {
                let src = SyntheticSource::new(*c, RealtimeClock).map_err(anyhow::Error::msg)?;
                queues.push(QueueSource::Synthetic(src));
            }
        }
    }
    let labels: Vec<String> = cfg
        .sources
        .iter()
        .flat_map(|s| {
            let n = if matches!(s, SourceSpec::File(_)) {
                cfg.spread
            } else {
                1
            };
            (0..n).map(move |i| {
                if n > 1 {
                    format!("{} ({}/{n})", s.label(), i + 1)
                } else {
                    s.label()
                }
            })
        })
        .collect();
    anyhow::ensure!(
        queues.len() <= 256,
        "at most 256 queues, got {}",
        queues.len()
    );
    Ok(queues
        .into_iter()
        .zip(labels)
        .enumerate()
        .map(|(i, (source, label))| Queue {
            id: i as u32,
            label,
            source,
        })
        .collect())
}

/// Run a capture to its end (sources exhausted, `stop` raised, or the
/// duration elapsed) and return the accounting.
pub fn run_capture(cfg: &CaptureConfig, stop: Arc<AtomicBool>) -> anyhow::Result<CaptureReport> {
    anyhow::ensure!(
        cfg.writer_threads >= 1,
        "--writer-threads must be at least 1"
    );
    anyhow::ensure!(
        cfg.rotate_seconds != Some(0),
        "--rotate-seconds must be at least 1"
    );
    let queues = open_queues(cfg)?;
    let ring_cfg = RingConfig {
        slots: cfg.ring_slots,
        batch_bytes: cfg.batch_bytes,
        hugepages: cfg.hugepages,
    };
    std::fs::create_dir_all(&cfg.out)
        .with_context(|| format!("creating output directory {}", cfg.out.display()))?;

    let mut workers = Vec::new();
    let mut writer_inputs: Vec<Vec<WriterInput>> = (0..cfg.writer_threads.min(queues.len()))
        .map(|_| Vec::new())
        .collect();
    let mut reports = Vec::new();
    let mut hugepages = true;
    for q in queues {
        let (producer, consumer) =
            ring::ring(ring_cfg).with_context(|| format!("creating the ring of queue {}", q.id))?;
        hugepages &= producer.hugepages();
        let series = FileSeries::new(SeriesConfig {
            rotate_bytes: cfg.rotate_bytes,
            rotate_files: cfg.rotate_files,
            compress: cfg.compress,
            ..SeriesConfig::new(cfg.out.join(format!("q{:02}", q.id)), q.id)
        })
        .with_context(|| format!("preparing the output of queue {}", q.id))?;
        let shared = Arc::new(SharedCounters::default());
        let wcounters = Arc::new(Mutex::new(SeriesCounters::default()));
        let backpressure_ns = match (&q.source, cfg.drop_when_full) {
            (QueueSource::File(_), false) => Some(BACKPRESSURE_LIMIT_NS),
            _ => None,
        };
        let worker = Worker::new(
            WorkerConfig {
                backpressure_ns,
                flush_after_ns: cfg.flush_ns,
                rotate_every_ns: cfg.rotate_seconds.map(|s| s * 1_000_000_000),
                ..WorkerConfig::new(q.id)
            },
            producer,
            shared.clone(),
        );
        let n = writer_inputs.len();
        writer_inputs[q.id as usize % n].push((consumer, series, wcounters.clone()));
        reports.push((q.id, q.label.clone(), shared, wcounters));
        workers.push((worker, q));
    }

    let deadline_stop = stop.clone();
    let worker_errors: Vec<Mutex<(Vec<String>, u64)>> = (0..workers.len())
        .map(|_| Mutex::new((Vec::new(), 0)))
        .collect();
    let writer_errors: Mutex<Vec<(u32, String)>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        let done = Arc::new(AtomicBool::new(false));
        if let Some(d) = cfg.duration {
            let done = done.clone();
            s.spawn(move || {
                let end = std::time::Instant::now() + d;
                while std::time::Instant::now() < end && !done.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                deadline_stop.store(true, Ordering::Relaxed);
            });
        }
        let mut worker_handles = Vec::new();
        for (i, (mut worker, q)) in workers.into_iter().enumerate() {
            let stop = &stop;
            let errs = &worker_errors[i];
            worker_handles.push(
                std::thread::Builder::new()
                    .name(format!("lc-worker-{}", q.id))
                    .spawn_scoped(s, move || {
                        let clock = MonotonicClock::default();
                        let (err, trunc) = match q.source {
                            QueueSource::File(mut src) => {
                                worker.run(&mut src, &clock, stop);
                                (src.error(), src.truncated_bytes())
                            }
                            QueueSource::Synthetic(mut src) => {
                                worker.run(&mut src, &clock, stop);
                                (src.error(), 0)
                            }
                        };
                        let mut e = errs.lock().unwrap_or_else(|e| e.into_inner());
                        e.0.extend(err);
                        e.1 = trunc;
                    })
                    .expect("spawning a worker thread"),
            );
        }
        for (i, inputs) in writer_inputs.into_iter().enumerate() {
            let writer_errors = &writer_errors;
            std::thread::Builder::new()
                .name(format!("lc-writer-{i}"))
                .spawn_scoped(s, move || writer_loop(inputs, writer_errors))
                .expect("spawning a writer thread");
        }
        for h in worker_handles {
            let _ = h.join();
        }
        done.store(true, Ordering::Relaxed);
    });

    let writer_errors = writer_errors
        .into_inner()
        .unwrap_or_else(|e| e.into_inner());
    let queues = reports
        .into_iter()
        .zip(worker_errors)
        .map(|((id, label, shared, wc), errs)| {
            let (mut errors, input_truncated_bytes) =
                errs.into_inner().unwrap_or_else(|e| e.into_inner());
            errors.extend(
                writer_errors
                    .iter()
                    .filter(|(q, _)| *q == id)
                    .map(|(_, e)| e.clone()),
            );
            QueueReport {
                queue: id,
                source: label,
                worker: shared.snapshot(),
                writer: *wc.lock().unwrap_or_else(|e| e.into_inner()),
                errors,
                input_truncated_bytes,
            }
        })
        .collect();
    Ok(CaptureReport {
        queues,
        hugepages,
        stopped: stop.load(Ordering::Relaxed),
    })
}

/// Drain the rings of this writer's queues into their file series until
/// every producer has closed its ring and every batch is written.
fn writer_loop(mut inputs: Vec<WriterInput>, errors: &Mutex<Vec<(u32, String)>>) {
    let mut idle: u32 = 0;
    loop {
        let mut progressed = false;
        let mut all_finished = true;
        for (consumer, series, counters) in inputs.iter_mut() {
            // Bound the work per queue per pass so one busy queue cannot starve the others.
            for _ in 0..consumer.capacity() {
                let Some(batch) = consumer.peek() else { break };
                let meta = *batch.meta;
                if series.write_batch(&meta, batch.records).is_err()
                    && let Some(e) = series.take_error()
                {
                    let mut errs = errors.lock().unwrap_or_else(|e| e.into_inner());
                    // Keep the first few messages; the counters carry the rest.
                    if errs.iter().filter(|(q, _)| *q == meta.queue).count() < 5 {
                        errs.push((meta.queue, format!("writer: {e}")));
                    }
                }
                consumer.release();
                progressed = true;
            }
            *counters.lock().unwrap_or_else(|e| e.into_inner()) = *series.counters();
            all_finished &= consumer.is_finished();
        }
        if all_finished {
            break;
        }
        if progressed {
            idle = 0;
        } else {
            idle = idle.saturating_add(1);
            if idle < 100 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    }
    for (consumer, series, counters) in inputs.iter_mut() {
        let _ = consumer;
        if let Err(e) = series.close_current() {
            let q = series.queue();
            errors
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((q, format!("closing the last file: {e}")));
        }
        *counters.lock().unwrap_or_else(|e| e.into_inner()) = *series.counters();
    }
}

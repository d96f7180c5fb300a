//! `pipeline` suite: the whole capture chain in one process, as the capture
//! command wires it: a synthetic source → one worker (flow tracking off or
//! on, 1000 flows) → the shared-memory SPSC ring → one writer thread
//! (LZ4 frames into a rotating file series on the temp directory).
//!
//! The worker waits for the writer when the ring is full (back-pressure, as
//! for offline sources), so nothing is dropped and the figure is the chain's
//! end-to-end rate: the slower of the worker core and the writer core. Both
//! cores' busy time is reported, so the table says which one limits.
//! Frames: 64, 512, 1500 B and IMIX (7 × 64, 4 × 594, 1 × 1514), built by the
//! generator's own frame code (`gen::frames`), with sequence numbers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use linecap_dataplane::clock::{Clock, RealtimeClock};
use linecap_dataplane::counters::SharedCounters;
use linecap_dataplane::flowtable::{FlowTable, Timeouts};
use linecap_dataplane::ring::{HugePages, RingConfig, ring};
use linecap_dataplane::source::{Frame, FrameSink, RxQueue, RxStatus, SourceDrops};
use linecap_dataplane::worker::{Worker, WorkerConfig};
use linecap_writer::series::{FileSeries, SeriesConfig};

use crate::pktgen::frames::{FrameSet, IMIX};
use crate::{Opts, median};

/// An in-memory source over a [`FrameSet`]: frame `g` is built into a
/// scratch buffer and handed to the sink (the copy a NIC's DMA would do).
pub struct FrameSetSource {
    set: FrameSet,
    buf: Vec<u8>,
    next: u64,
    clock: RealtimeClock,
}

impl FrameSetSource {
    pub fn new(set: FrameSet) -> Self {
        let buf = vec![0u8; set.max_len()];
        FrameSetSource {
            set,
            buf,
            next: 0,
            clock: RealtimeClock,
        }
    }
}

impl RxQueue for FrameSetSource {
    #[inline]
    fn poll_burst<S: FrameSink>(&mut self, max: usize, sink: &mut S) -> RxStatus {
        let ts_ns = self.clock.now_ns();
        for _ in 0..max {
            let n = self.set.build(self.next, &mut self.buf);
            self.next += 1;
            sink.frame(Frame {
                data: &self.buf[..n],
                wire_len: n as u32,
                ts_ns,
            });
        }
        RxStatus::Frames(max)
    }

    fn drops(&self) -> SourceDrops {
        SourceDrops::default()
    }
}

/// CPU seconds the calling thread has used.
pub fn thread_cpu_s() -> f64 {
    let s = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    let after = s.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

struct Run {
    mpps: f64,
    mb_s: f64,
    worker_busy: f64,
    writer_busy: f64,
    ratio: f64,
}

fn once(sizes: &[usize], flows: bool, seconds: f64, dir: &std::path::Path) -> Run {
    let (producer, mut consumer) = ring(RingConfig {
        slots: 16,
        batch_bytes: 1 << 20,
        hugepages: HugePages::Try,
    })
    .expect("ring");
    let mut wcfg = WorkerConfig::new(0);
    wcfg.backpressure_ns = Some(1_000_000_000);
    let mut w = Worker::new(wcfg, producer, Arc::new(SharedCounters::default()));
    if flows {
        let table = FlowTable::new(2048, Timeouts::default()).expect("flow table");
        w = w.with_flows(table, Box::new(|_| {}), Arc::default());
    }
    let mut src = FrameSetSource::new(FrameSet::synthetic(sizes, 1000).expect("frames"));
    let _ = std::fs::remove_dir_all(dir);
    let mut series = FileSeries::new(SeriesConfig {
        compress: true,
        rotate_bytes: Some(64 << 20),
        rotate_files: Some(2),
        sync_on_close: false,
        ..SeriesConfig::new(dir.to_path_buf(), 0)
    })
    .expect("file series");
    let done = AtomicBool::new(false);
    let start = Instant::now();
    let deadline = Duration::from_secs_f64(seconds);
    let (worker_cpu, (writer_cpu, written, el)) = std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let c0 = thread_cpu_s();
            let mut written = 0u64;
            loop {
                if let Some(b) = consumer.peek() {
                    let meta = *b.meta;
                    series.write_batch(&meta, b.records).expect("write");
                    written += meta.packets;
                    consumer.release();
                } else if done.load(Ordering::Acquire) {
                    if consumer.peek().is_none() {
                        break;
                    }
                } else {
                    std::thread::sleep(Duration::from_micros(50));
                }
            }
            series.close_current().expect("close");
            (thread_cpu_s() - c0, written, start.elapsed().as_secs_f64())
        });
        let c0 = thread_cpu_s();
        let clock = RealtimeClock;
        let mut polls = 0u64;
        loop {
            w.poll_once(&mut src, &clock);
            polls += 1;
            if polls.is_multiple_of(64) && start.elapsed() >= deadline {
                break;
            }
        }
        w.finish(&mut src);
        let cpu = thread_cpu_s() - c0;
        done.store(true, Ordering::Release);
        (cpu, writer.join().expect("writer thread"))
    });
    let k = w.counters();
    assert_eq!(k.ring_full_packets, 0, "back-pressure: nothing dropped");
    let c = series.counters();
    let _ = std::fs::remove_dir_all(dir);
    Run {
        mpps: written as f64 / el / 1e6,
        mb_s: c.bytes_erf as f64 / el / 1e6,
        worker_busy: worker_cpu / el,
        writer_busy: writer_cpu / el,
        ratio: c.bytes_erf as f64 / c.bytes_file.max(1) as f64,
    }
}

pub fn suite(o: &Opts) -> Vec<serde_json::Value> {
    let dir = std::env::temp_dir().join(format!("linecap-bench-pipeline-{}", std::process::id()));
    println!(
        "pipeline: synthetic -> worker -> ring -> writer thread (LZ4, files on {}), lossless (back-pressure), 1000 flows",
        dir.display()
    );
    println!(
        "{:>6} {:>6} {:>8} {:>10} {:>9} {:>10} {:>10} {:>7}",
        "frame", "flows", "Mpps", "ns/packet", "MB/s ERF", "worker %", "writer %", "ratio"
    );
    let sets: [(&str, Vec<usize>); 4] = [
        ("64", vec![64]),
        ("512", vec![512]),
        ("1500", vec![1500]),
        ("imix", IMIX.to_vec()),
    ];
    let mut out = Vec::new();
    for (name, sizes) in &sets {
        for flows in [false, true] {
            let runs: Vec<Run> = (0..3)
                .map(|_| once(sizes, flows, o.seconds / 3.0, &dir))
                .collect();
            let mpps = median(runs.iter().map(|r| r.mpps).collect());
            let pick = runs
                .iter()
                .min_by(|a, b| (a.mpps - mpps).abs().total_cmp(&(b.mpps - mpps).abs()))
                .expect("three runs");
            let ns = if mpps > 0.0 { 1e3 / mpps } else { 0.0 };
            println!(
                "{name:>6} {:>6} {mpps:>8.2} {ns:>10.1} {:>9.0} {:>10.0} {:>10.0} {:>7.2}",
                if flows { "on" } else { "off" },
                pick.mb_s,
                pick.worker_busy * 100.0,
                pick.writer_busy * 100.0,
                pick.ratio
            );
            out.push(serde_json::json!({
                "suite": "pipeline", "frame": name, "flow_tracking": flows,
                "mpps_median_of_3": mpps, "ns_per_packet": ns, "erf_mb_per_s": pick.mb_s,
                "worker_core_busy": pick.worker_busy, "writer_core_busy": pick.writer_busy,
                "lz4_ratio": pick.ratio,
            }));
        }
    }
    out
}

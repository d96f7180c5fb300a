//! Accounting: what each (job, queue) saw, wrote and dropped, and the
//! identity checked at the end, per queue:
//!
//! ```text
//! seen by source = written + dropped(source) + dropped(ring_full) + dropped(writer)
//! ```

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use linecap_dataplane::afxdp::XdpQueueStats;
use linecap_dataplane::counters::{SharedCounters, WorkerCounters};
use linecap_dataplane::flowtable::FlowCounters;
use linecap_writer::series::SeriesCounters;

use linecap_flowexport::ExportReport;

/// One queue's line in the accounting.
#[derive(Debug, Clone)]
pub struct QueueReport {
    /// Capture job.
    pub job: String,
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
    /// AF_XDP queues: what the XDP program counted during the capture.
    pub xdp: Option<XdpQueueStats>,
    /// Drops the interface itself counted (before XDP), on the interface's first queue.
    pub iface_drops: u64,
    /// The queue's flow table counters, when flow tracking is on.
    pub flows: Option<FlowCounters>,
    /// Frames a live queue read after `-c COUNT` was reached, before the
    /// inflow was cut (not given to the workers' policies; dropped).
    pub after_count: u64,
}

impl QueueReport {
    /// Frames seen by the source stage: for AF_XDP, what reached the
    /// interface (XDP program's count plus the interface's own drops).
    pub fn seen(&self) -> u64 {
        self.worker.source_seen() + self.xdp_not_redirected() + self.iface_drops + self.after_count
    }
    /// Frames the XDP program passed to the kernel stack instead of the socket.
    pub fn xdp_not_redirected(&self) -> u64 {
        self.xdp.map_or(0, |x| x.not_redirected)
    }
    /// Frames dropped, all stages.
    pub fn dropped(&self) -> u64 {
        self.worker.source_unsupported
            + self.worker.source_nic
            + self.xdp_not_redirected()
            + self.iface_drops
            + self.worker.filter_packets
            + self.worker.sample_packets
            + self.worker.ring_full_packets
            + self.writer.drop_packets
            + self.after_count
    }
    /// For AF_XDP: whether the XDP program's own count agrees with what the
    /// socket delivered and the kernel counted as dropped.
    pub fn xdp_consistent(&self) -> bool {
        self.xdp.is_none_or(|x| {
            x.seen
                == self.worker.rx_packets
                    + self.after_count
                    + self.worker.source_nic
                    + x.not_redirected
        })
    }
    /// Whether seen = written + dropped holds.
    pub fn balanced(&self) -> bool {
        self.seen() == self.writer.packets + self.dropped()
            && self.worker.rx_packets
                == self.worker.ring_packets
                    + self.worker.ring_full_packets
                    + self.worker.filter_packets
                    + self.worker.sample_packets
            && self.worker.ring_packets == self.writer.packets + self.writer.drop_packets
    }
}

/// The whole capture's accounting.
#[derive(Debug, Clone)]
pub struct CaptureReport {
    /// Per job and queue (job-major: every queue of the first job, then the next job's).
    pub queues: Vec<QueueReport>,
    /// Per job: name, output directory, policies (as in the manifests).
    pub jobs: Vec<(String, PathBuf, serde_json::Value)>,
    /// Flow exporters: what each wrote, and records dropped on full export queues.
    pub exports: Option<(Vec<ExportReport>, u64)>,
    /// What the rings' memory is made of.
    pub pages: linecap_dataplane::ring::RingPages,
    /// Whether the capture was stopped (signal, duration) rather than ending with its sources.
    pub stopped: bool,
    /// issue 14: per interface with linecap's XDP program, which program ran and how.
    pub xdp_programs: Vec<XdpProgramReport>,
}

/// The XDP program attached to one interface, as the loader and the kernel
/// saw it at the end of the capture.
#[derive(Debug, Clone, Default)]
pub struct XdpProgramReport {
    /// The interface.
    pub ifname: String,
    /// Its driver.
    pub driver: String,
    /// Native (driver) mode, else generic.
    pub native: bool,
    /// The device-bound program (RX hardware timestamps) is the one attached.
    pub device_bound: bool,
    /// Kernel's `bpf_prog_info` id of the device-bound program.
    pub prog_id: Option<u32>,
    /// Why the device-bound program was tried and not used.
    pub device_bound_refused: Option<String>,
    /// Why the program that stamps frames in the XDP metadata was refused
    /// (the one without metadata runs: user-space stamps).
    pub metadata_refused: Option<String>,
    /// Why native mode was refused.
    pub native_refused: Option<String>,
}

impl CaptureReport {
    /// Whether every queue balances.
    pub fn balanced(&self) -> bool {
        self.queues.iter().all(QueueReport::balanced)
    }
}

/// Where one (job, queue) line's counters are published while the capture
/// runs (the named fields of what was a 7-tuple).
pub(super) struct ReportLine {
    /// Capture job name.
    pub(super) job: String,
    /// Position of the queue in the capture's queue list (index into the
    /// per-queue outcomes).
    pub(super) queue_index: usize,
    /// Queue number.
    pub(super) queue_id: u32,
    /// Where its frames come from.
    pub(super) label: String,
    /// The worker's counters for this job.
    pub(super) worker: Arc<SharedCounters>,
    /// The writer's counters for this series.
    pub(super) writer: Arc<Mutex<SeriesCounters>>,
    /// The queue's flow table counters (first job only, flows on).
    pub(super) flows: Option<Arc<Mutex<FlowCounters>>>,
}

/// What a queue's worker thread left behind.
#[derive(Debug, Clone, Default)]
pub(super) struct WorkerOutcome {
    /// Why its source stopped early (and pinning failures, panics).
    pub(super) errors: Vec<String>,
    /// Bytes at the end of an input file that formed no complete record.
    pub(super) truncated_bytes: u64,
    /// Frames read after `-c` was reached.
    pub(super) after_count: u64,
}

/// Per queue: the XDP stage's and the interface's counts over the capture.
pub(super) struct QueueEnd {
    pub(super) xdp: Option<XdpQueueStats>,
    pub(super) iface_drops: u64,
}

/// Every (job, queue) line of the report, from what was published and what
/// the threads left behind.
pub(super) fn assemble(
    lines: Vec<ReportLine>,
    outcomes: &[WorkerOutcome],
    writer_errors: &[(usize, String)],
    ends: &[QueueEnd],
) -> Vec<QueueReport> {
    lines
        .into_iter()
        .enumerate()
        .map(|(ri, line)| {
            let outcome = &outcomes[line.queue_index];
            let mut errors = outcome.errors.clone();
            errors.extend(
                writer_errors
                    .iter()
                    .filter(|(r, _)| *r == ri)
                    .map(|(_, e)| e.clone()),
            );
            let end = &ends[line.queue_index];
            QueueReport {
                job: line.job,
                queue: line.queue_id,
                source: line.label,
                worker: line.worker.snapshot(),
                writer: *line.writer.lock().unwrap_or_else(|e| e.into_inner()),
                errors,
                input_truncated_bytes: outcome.truncated_bytes,
                xdp: end.xdp,
                iface_drops: end.iface_drops,
                flows: line
                    .flows
                    .map(|c| *c.lock().unwrap_or_else(|e| e.into_inner())),
                // Like the XDP counts: the queue's, on every job's line
                // (each line balances on its own).
                after_count: outcome.after_count,
            }
        })
        .collect()
}

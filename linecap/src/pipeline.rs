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
use linecap_dataplane::afxdp::{
    AttachMode, XdpAttachment, XdpQueueStats, XskConfig, XskSocket, ZeroCopy,
};
use linecap_dataplane::clock::{MonotonicClock, RealtimeClock};
use linecap_dataplane::flowtable::{FlowCounters, FlowTable, Timeouts};

use crate::export::{ExportConfig, ExportReport, Exporters};
use crate::metrics::{MetricsServer, QueueProbe};
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
    /// An interface's receive queues by AF_XDP (`None`: all of them).
    AfXdp {
        /// Interface name.
        ifname: String,
        /// Queues to capture.
        queues: Option<Vec<u32>>,
    },
    /// A DPDK port (PCI address or vdev) and its settings.
    Dpdk(crate::dpdksource::DpdkSpec),
}

/// AF_XDP settings shared by every AF_XDP source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XdpOptions {
    /// Attach mode.
    pub mode: AttachMode,
    /// RX and fill ring entries per socket.
    pub ring_entries: u32,
    /// Zero-copy policy.
    pub zero_copy: ZeroCopy,
    /// Switch the interface to threaded NAPI while capturing.
    pub threaded_napi: bool,
}

impl Default for XdpOptions {
    fn default() -> Self {
        XdpOptions {
            mode: AttachMode::Auto,
            ring_entries: 16 * 1024,
            zero_copy: ZeroCopy::Auto,
            threaded_napi: true,
        }
    }
}

impl SourceSpec {
    /// How reports and the control API name the source.
    pub(crate) fn label(&self) -> String {
        match self {
            SourceSpec::File(p) => format!("file:{}", p.display()),
            SourceSpec::Synthetic(c) => format!(
                "synth:{}:{}:{}",
                c.frame_len,
                c.flows,
                c.count.map_or("-".into(), |n| n.to_string())
            ),
            SourceSpec::AfXdp { ifname, .. } => format!("afxdp:{ifname}"),
            SourceSpec::Dpdk(d) => format!("dpdk:{}", d.device),
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
    /// Capture jobs (at least one): each sees every frame of every queue and
    /// writes what its policies keep into its own directory (queue N into
    /// `JOB_OUT/qNN/`), with its own accounting.
    pub jobs: Vec<JobConfig>,
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
    /// AF_XDP settings.
    pub xdp: XdpOptions,
    /// Cores to pin workers to (worker i on cores[i mod n]); empty: no pinning.
    pub cores: Vec<usize>,
    /// Drop to this user after set-up (see `privileges.rs`).
    pub user: Option<String>,
    /// Bytes the whole capture may occupy (shared evenly by the queues of
    /// every job); the oldest complete files are recycled to stay within it.
    pub disk_budget: Option<u64>,
    /// Flow tracking (one table per queue) and export, when on.
    pub flows: Option<FlowConfig>,
    /// The Prometheus endpoint, when on.
    pub metrics: Option<MetricsConfig>,
    /// Fault injection for tests and drills: the writer sleeps this long
    /// after every batch (a slow disk), so overload and `lctr` can be seen.
    pub writer_delay: Option<Duration>,
    /// The control API (`--api`), when on.
    pub api: Option<crate::api::ApiConfig>,
    /// Capture jobs that may run at once (`--max-jobs`): the jobs of the
    /// start plus those the control API may add.
    pub max_jobs: usize,
}

/// Where and how to serve `/metrics`.
#[derive(Debug, Clone, Copy)]
pub struct MetricsConfig {
    /// Listen address.
    pub addr: std::net::SocketAddr,
    /// Fail the capture when the address cannot be bound (given explicitly);
    /// otherwise warn and capture without metrics.
    pub required: bool,
    /// Keep serving the final values this long after a capture that ended
    /// by itself (a file replay), so a scraper sees them.
    pub hold: Duration,
}

/// What the signal handlers raise.
#[derive(Debug, Clone, Default)]
pub struct Signals {
    /// SIGINT / SIGTERM: stop, flush, complete the files.
    pub stop: Arc<AtomicBool>,
    /// SIGHUP: complete the current files now and start new ones.
    pub rotate: Arc<AtomicBool>,
}

/// One capture job: a name, an output directory and policies.
#[derive(Debug, Clone)]
pub struct JobConfig {
    /// Short name (`[A-Za-z0-9_-]`, in reports, metrics and manifests).
    pub name: String,
    /// Output directory; queue N writes into `out/qNN/`.
    pub out: PathBuf,
    /// What the job keeps of each frame.
    pub policies: PolicyConfig,
}

impl JobConfig {
    /// A job named `main` keeping everything into `out`.
    pub fn main(out: PathBuf) -> Self {
        JobConfig {
            name: "main".into(),
            out,
            policies: PolicyConfig::default(),
        }
    }

    /// What goes into every manifest and the report: the job's name and
    /// policies (never a key).
    pub fn describe(&self) -> serde_json::Value {
        let p = &self.policies;
        serde_json::json!({
            "job": self.name,
            "filter": p.filter,
            "sampling": p.sample.map(|s| s.to_string()),
            "sampling_rate": p.sample.map_or(1.0, |s| s.rate()),
            "sampling_flow_consistent": p.sample.is_some_and(|s| s.is_flow_consistent()),
            "snaplen": p.snaplen,
            "anonymized": p.anonymize.map(|(_, m)| m.to_string()),
            "mac_pseudonyms": p.mac_key.is_some(),
        })
    }
}

/// Check a set of jobs before anything starts: names valid and distinct,
/// output directories distinct and not nested (a reader of one job's
/// directory must not pick up another job's files).
pub fn validate_jobs(jobs: &[JobConfig]) -> anyhow::Result<()> {
    anyhow::ensure!(!jobs.is_empty(), "no capture job: give --out or --job");
    anyhow::ensure!(
        jobs.len() <= linecap_dataplane::worker::MAX_JOBS,
        "{} capture jobs: at most {} are supported",
        jobs.len(),
        linecap_dataplane::worker::MAX_JOBS
    );
    let abs = |p: &std::path::Path| -> PathBuf {
        let p = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        p.components().collect()
    };
    for (i, a) in jobs.iter().enumerate() {
        anyhow::ensure!(
            !a.name.is_empty()
                && a.name.len() <= 32
                && a.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
            "job name {:?}: use 1 to 32 letters, digits, '_' or '-'",
            a.name
        );
        for b in &jobs[..i] {
            anyhow::ensure!(a.name != b.name, "two capture jobs are named {:?}", a.name);
            let (pa, pb) = (abs(&a.out), abs(&b.out));
            anyhow::ensure!(
                !pa.starts_with(&pb) && !pb.starts_with(&pa),
                "jobs {:?} ({}) and {:?} ({}): output directories must be distinct and not                  inside one another",
                b.name,
                pb.display(),
                a.name,
                pa.display()
            );
        }
    }
    Ok(())
}

/// Capture policies as configured (built into one `Policies` per worker).
#[derive(Debug, Clone, Default)]
pub struct PolicyConfig {
    /// tcpdump-syntax filter expression.
    pub filter: Option<String>,
    /// Sampling policy.
    pub sample: Option<linecap_dataplane::policy::sample::SamplePolicy>,
    /// Bytes kept of each frame.
    pub snaplen: Option<u32>,
    /// Crypto-PAn key and mode.
    pub anonymize: Option<([u8; 32], linecap_dataplane::policy::anon::AnonMode)>,
    /// Deployment key of the MAC pseudonyms.
    pub mac_key: Option<[u8; 32]>,
}

impl PolicyConfig {
    /// Build one worker's policies; errors name the flag.
    pub fn build(&self) -> anyhow::Result<linecap_dataplane::worker::Policies> {
        use linecap_dataplane::policy::{
            bpf::Filter, cryptopan, sample::Sampler, snaplen::Snaplen,
        };
        Ok(linecap_dataplane::worker::Policies {
            filter: self
                .filter
                .as_deref()
                .map(Filter::compile)
                .transpose()
                .map_err(|e| anyhow::anyhow!("--filter: {e}"))?,
            sampler: self
                .sample
                .map(Sampler::new)
                .transpose()
                .map_err(|e| anyhow::anyhow!("--sample: {e}"))?,
            snaplen: match self.snaplen {
                Some(n) => Some(Snaplen::new(n).ok_or_else(|| {
                    anyhow::anyhow!("--snaplen {n}: at least 14 bytes (an Ethernet header)")
                })?),
                None => None,
            },
            anonymize: self.anonymize.map(|(key, mode)| {
                (
                    cryptopan::CryptoPan::with_cache(&key, cryptopan::CacheConfig::default()),
                    mode,
                )
            }),
            mac_pseudonyms: self
                .mac_key
                .map(|k| linecap_dataplane::policy::macpseudo::MacPseudonyms::new(&k)),
        })
    }
}

/// Flow tracking in the capture workers.
#[derive(Debug, Clone)]
pub struct FlowConfig {
    /// Slots per queue's table (power of two).
    pub capacity: usize,
    /// Expiry on the packet clock.
    pub timeouts: Timeouts,
    /// Where ended flows go.
    pub export: ExportConfig,
}

/// How long a file source waits for a free ring slot before it drops (and
/// counts) a frame: long enough for any sane disk, short enough that a stuck
/// writer cannot hang a capture.
const BACKPRESSURE_LIMIT_NS: u64 = 10_000_000_000;

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
}

impl QueueReport {
    /// Frames seen by the source stage: for AF_XDP, what reached the
    /// interface (XDP program's count plus the interface's own drops).
    pub fn seen(&self) -> u64 {
        self.worker.source_seen() + self.xdp_not_redirected() + self.iface_drops
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
    }
    /// For AF_XDP: whether the XDP program's own count agrees with what the
    /// socket delivered and the kernel counted as dropped.
    pub fn xdp_consistent(&self) -> bool {
        self.xdp.is_none_or(|x| {
            x.seen == self.worker.rx_packets + self.worker.source_nic + x.not_redirected
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

/// What a writer thread drains for one queue of one job.
pub(crate) struct WriterInput {
    consumer: Consumer,
    series: FileSeries,
    /// Where it publishes the series' counters.
    counters: Arc<Mutex<SeriesCounters>>,
    /// Index of the (job, queue) report its errors go to.
    report: usize,
    /// Jobs added through the control API keep their errors here instead.
    errors: Option<Arc<Mutex<Vec<String>>>>,
    /// Live queue with time rotation (-G): the period in ns. An idle live
    /// link sends no packet of the next period to complete the file, so
    /// the writer completes it once the period is over (plus a grace).
    live_period_ns: Option<u64>,
    /// Raised once the ring is closed, drained and the last file complete.
    done: Arc<AtomicBool>,
    /// A job stopped through the API: what its last manifest says of it.
    final_capture: Arc<Mutex<Option<serde_json::Value>>>,
}

impl WriterInput {
    /// The series of a job added through the control API.
    pub(crate) fn runtime(
        consumer: Consumer,
        series: FileSeries,
        q: &crate::jobs::JobQueue,
        final_capture: Arc<Mutex<Option<serde_json::Value>>>,
        live_period_ns: Option<u64>,
    ) -> Self {
        WriterInput {
            consumer,
            series,
            counters: q.writer.clone(),
            report: usize::MAX,
            errors: Some(q.errors.clone()),
            live_period_ns,
            done: q.done.clone(),
            final_capture,
        }
    }

    /// Keep a writer error where its job's report will find it (the first
    /// few messages; the counters carry the rest).
    fn error(&self, errors: &Mutex<Vec<(usize, String)>>, msg: String) {
        match &self.errors {
            Some(own) => {
                let mut own = own.lock().unwrap_or_else(|e| e.into_inner());
                if own.len() < 5 {
                    own.push(msg);
                }
            }
            None => {
                let mut all = errors.lock().unwrap_or_else(|e| e.into_inner());
                if all.iter().filter(|(r, _)| *r == self.report).count() < 5 {
                    all.push((self.report, msg));
                }
            }
        }
    }

    /// The ring is closed and drained: complete the last file (saying the
    /// job stopped, if it was stopped) and report the series done.
    fn finish(&mut self, errors: &Mutex<Vec<(usize, String)>>) {
        if let Some(info) = self
            .final_capture
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            self.series.set_capture(info);
        }
        if let Err(e) = self.series.close_current() {
            self.error(errors, format!("closing the last file: {e}"));
        }
        *self.counters.lock().unwrap_or_else(|e| e.into_inner()) = *self.series.counters();
        self.done.store(true, Ordering::Release);
    }
}

enum QueueSource {
    File(FileSource),
    Synthetic(SyntheticSource<RealtimeClock>),
    AfXdp(Box<XskSocket>),
    #[cfg(feature = "dpdk")]
    Dpdk(Box<crate::dpdksource::DpdkQueue>),
}

struct Queue {
    id: u32,
    label: String,
    source: QueueSource,
    /// AF_XDP: (attachment index, hardware queue).
    xdp: Option<(usize, u32)>,
}

/// Interfaces with linecap's XDP program attached, kept for the whole capture.
struct Attachments {
    list: Vec<XdpAttachment>,
    /// Per attachment: interface drop counters at start.
    iface_drops_start: Vec<u64>,
}

/// Publish what the XDP programs and the interfaces counted since the start
/// (for the metrics); the interface's drops go to its first queue, as in
/// the report.
fn refresh_xdp_live(
    att: &Attachments,
    ids: &[Option<(usize, u32)>],
    base: &[Option<XdpQueueStats>],
    live: &[Option<Arc<Mutex<crate::metrics::XdpLive>>>],
) {
    for (qi, (id, b)) in ids.iter().zip(base).enumerate() {
        let (Some((a, hq)), Some(b), Some(slot)) = (id, b, &live[qi]) else {
            continue;
        };
        let now = att.list[*a].queue_stats(*hq);
        let first = ids.iter().position(|x| x.is_some_and(|(i, _)| i == *a)) == Some(qi);
        let iface = if first {
            iface_drops(att.list[*a].ifname()).saturating_sub(att.iface_drops_start[*a])
        } else {
            0
        };
        *slot.lock().unwrap_or_else(|e| e.into_inner()) = crate::metrics::XdpLive {
            not_redirected: now.not_redirected.saturating_sub(b.not_redirected),
            iface_drops: iface,
        };
    }
}

/// The interface's own receive drop counters (before XDP sees a frame).
fn iface_drops(ifname: &str) -> u64 {
    ["rx_dropped", "rx_missed_errors", "rx_fifo_errors"]
        .iter()
        .filter_map(|f| {
            std::fs::read_to_string(format!("/sys/class/net/{ifname}/statistics/{f}")).ok()
        })
        .filter_map(|v| v.trim().parse::<u64>().ok())
        .sum()
}

/// Receive queues of an interface (from sysfs).
fn rx_queues(ifname: &str) -> anyhow::Result<Vec<u32>> {
    let dir = format!("/sys/class/net/{ifname}/queues");
    let mut q: Vec<u32> = std::fs::read_dir(&dir)
        .with_context(|| format!("interface {ifname:?}: cannot list {dir} (no such interface in this network namespace?)"))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.strip_prefix("rx-")?.parse().ok())
        .collect();
    q.sort();
    anyhow::ensure!(!q.is_empty(), "interface {ifname:?} has no receive queues");
    Ok(q)
}

fn open_queues(cfg: &CaptureConfig, att: &mut Attachments) -> anyhow::Result<Vec<Queue>> {
    anyhow::ensure!(!cfg.sources.is_empty(), "no --source given");
    anyhow::ensure!(cfg.spread >= 1, "--spread must be at least 1");
    let mut queues: Vec<Queue> = Vec::new();
    let mut push = |source, label: String, xdp| {
        let id = queues.len() as u32;
        queues.push(Queue {
            id,
            label,
            source,
            xdp,
        });
    };
    for spec in &cfg.sources {
        match spec {
            SourceSpec::File(path) => {
                for i in 0..cfg.spread {
                    let src = FileSource::open(path, cfg.spread, i)
                        .with_context(|| format!("opening source {}", spec.label()))?;
                    let label = if cfg.spread > 1 {
                        format!("{} ({}/{})", spec.label(), i + 1, cfg.spread)
                    } else {
                        spec.label()
                    };
                    push(QueueSource::File(src), label, None);
                }
            }
            SourceSpec::Synthetic(c) => {
                let src = SyntheticSource::new(*c, RealtimeClock).map_err(anyhow::Error::msg)?;
                push(QueueSource::Synthetic(src), spec.label(), None);
            }
            SourceSpec::AfXdp {
                ifname,
                queues: wanted,
            } => {
                let present = rx_queues(ifname)?;
                let list = match wanted {
                    Some(w) => {
                        for q in w {
                            anyhow::ensure!(
                                present.contains(q),
                                "interface {ifname} has no receive queue {q} (it has {present:?})"
                            );
                        }
                        w.clone()
                    }
                    None => present,
                };
                let mut a = XdpAttachment::attach(ifname, cfg.xdp.mode, cfg.xdp.threaded_napi)?;
                if let Some(why) = a.native_refused() {
                    eprintln!("linecap: {ifname}: native XDP refused ({why}); using generic mode");
                }
                let ai = att.list.len();
                let mut sockets = Vec::new();
                for &q in &list {
                    let xcfg = XskConfig {
                        ring_entries: cfg.xdp.ring_entries,
                        frames: cfg.xdp.ring_entries * 2,
                        zero_copy: cfg.xdp.zero_copy,
                        hugepages: cfg.hugepages,
                        ..XskConfig::new(ifname, q)
                    };
                    let sock = XskSocket::open(&xcfg)?;
                    a.register(q, sock.raw_fd())?;
                    sockets.push((q, sock));
                }
                if let Some((_, s)) = sockets.first() {
                    let b = s.bind_info();
                    let zc = if b.zero_copy {
                        "zero-copy".to_string()
                    } else if let Some(e) = b.zero_copy_refused {
                        format!(
                            "copy mode (zero-copy refused: {})",
                            std::io::Error::from_raw_os_error(e)
                        )
                    } else {
                        "copy mode".to_string()
                    };
                    eprintln!(
                        "linecap: {ifname}: XDP {} mode, AF_XDP {zc}, queues {list:?}, UMEM on {}",
                        if a.native() { "native" } else { "generic" },
                        if b.hugepages {
                            "hugepages"
                        } else {
                            "normal pages"
                        }
                    );
                }
                att.iface_drops_start.push(iface_drops(ifname));
                att.list.push(a);
                for (q, sock) in sockets {
                    push(
                        QueueSource::AfXdp(Box::new(sock)),
                        format!("afxdp:{ifname}:{q}"),
                        Some((ai, q)),
                    );
                }
            }
            #[cfg(feature = "dpdk")]
            SourceSpec::Dpdk(d) => {
                for (q, label) in crate::dpdksource::open(cfg, d)? {
                    push(QueueSource::Dpdk(Box::new(q)), label, None);
                }
            }
            #[cfg(not(feature = "dpdk"))]
            SourceSpec::Dpdk(_) => anyhow::bail!(
                "source {}: this linecap was built without DPDK (rebuild with --features dpdk)",
                spec.label()
            ),
        }
    }
    anyhow::ensure!(
        queues.len() <= 256,
        "at most 256 queues, got {}",
        queues.len()
    );
    Ok(queues)
}

/// Run a capture to its end (sources exhausted, `stop` raised, or the
/// duration elapsed) and return the accounting.
pub fn run_capture(cfg: &CaptureConfig, signals: &Signals) -> anyhow::Result<CaptureReport> {
    let stop = signals.stop.clone();
    anyhow::ensure!(
        cfg.writer_threads >= 1,
        "--writer-threads must be at least 1"
    );
    anyhow::ensure!(
        cfg.rotate_seconds != Some(0),
        "--rotate-seconds must be at least 1"
    );
    let mut att = Attachments {
        list: Vec::new(),
        iface_drops_start: Vec::new(),
    };
    validate_jobs(&cfg.jobs)?;
    let queues = open_queues(cfg, &mut att)?;
    let series_count = queues.len().max(1) * cfg.jobs.len();
    let budget_per_queue = cfg.disk_budget.map(|b| b / series_count as u64);
    if let (Some(b), Some(c)) = (budget_per_queue, cfg.rotate_bytes) {
        anyhow::ensure!(
            b >= 2 * c,
            "--disk-budget gives each of the {series_count} file series ({} queues x {} jobs) \
             {b} bytes: that must be at least twice --rotate-bytes ({c}) so a complete file can \
             be kept while the next one is written",
            queues.len(),
            cfg.jobs.len()
        );
    }
    // Baselines: what the XDP programs counted before the capture started.
    let xdp_base: Vec<Option<XdpQueueStats>> = queues
        .iter()
        .map(|q| q.xdp.map(|(a, hq)| att.list[a].queue_stats(hq)))
        .collect();
    let xdp_ids: Vec<Option<(usize, u32)>> = queues.iter().map(|q| q.xdp).collect();
    let ring_cfg = RingConfig {
        slots: cfg.ring_slots,
        batch_bytes: cfg.batch_bytes,
        hugepages: cfg.hugepages,
    };
    for job in &cfg.jobs {
        std::fs::create_dir_all(&job.out)
            .with_context(|| format!("creating output directory {}", job.out.display()))?;
    }
    let job_info: Vec<serde_json::Value> = cfg.jobs.iter().map(JobConfig::describe).collect();

    // Workers stop on `worker_stop`, raised by the supervisor below once the
    // inflow is cut (live queues), so the rings can be drained exactly.
    let worker_stop = Arc::new(AtomicBool::new(false));
    let exporters = match &cfg.flows {
        Some(f) => Some(Exporters::start(&f.export)?),
        None => None,
    };
    let mut workers = Vec::new();
    let mut probes = Vec::new();
    let series_max = queues.len() * cfg.max_jobs.max(cfg.jobs.len());
    let mut writer_inputs: Vec<Vec<WriterInput>> = (0..cfg.writer_threads.min(series_max).max(1))
        .map(|_| Vec::new())
        .collect();
    // Control API: a mailbox per worker and an inbox per writer thread.
    let epoch = linecap_dataplane::jobctl::Epoch::new();
    let mut lane_controls = Vec::new();
    let mut lane_senders = Vec::new();
    let mut writer_inboxes = Vec::new();
    let mut writer_senders = Vec::new();
    if cfg.api.is_some() {
        for _ in &queues {
            let (c, s) = epoch.mailbox();
            lane_controls.push(Some(c));
            lane_senders.push(s);
        }
        for _ in &writer_inputs {
            let (tx, rx) = std::sync::mpsc::sync_channel(series_max.max(1));
            writer_inboxes.push(Some(rx));
            writer_senders.push(tx);
        }
    } else {
        lane_controls.resize_with(queues.len(), || None);
        writer_inboxes.resize_with(writer_inputs.len(), || None);
    }
    let mut start_jobs: Vec<Vec<crate::jobs::JobQueue>> =
        cfg.jobs.iter().map(|_| Vec::new()).collect();
    let final_captures: Vec<Arc<Mutex<Option<serde_json::Value>>>> = cfg
        .jobs
        .iter()
        .map(|_| Arc::new(Mutex::new(None)))
        .collect();
    // Per (job, queue), job-major; the queue's index in `workers`.
    let mut reports = Vec::new();
    let nq = queues.len();
    let mut lanes: Vec<Vec<_>> = (0..nq).map(|_| Vec::new()).collect();
    // AF_XDP queues: the XDP stage's and the interface's drops, refreshed by
    // the supervisor for the metrics (the report reads them at the end).
    let xdp_live: Vec<Option<Arc<Mutex<crate::metrics::XdpLive>>>> = queues
        .iter()
        .map(|q| q.xdp.map(|_| Arc::new(Mutex::new(Default::default()))))
        .collect();
    let mut hugepages = true;
    for (j, job) in cfg.jobs.iter().enumerate() {
        for (qi, q) in queues.iter().enumerate() {
            let (producer, consumer) = ring::ring(ring_cfg).with_context(|| {
                format!("creating the ring of queue {} (job {})", q.id, job.name)
            })?;
            hugepages &= producer.hugepages();
            let series = FileSeries::new(SeriesConfig {
                budget_bytes: budget_per_queue,
                rotate_bytes: cfg.rotate_bytes,
                rotate_files: cfg.rotate_files,
                compress: cfg.compress,
                capture: Some(job_info[j].clone()),
                ..SeriesConfig::new(job.out.join(format!("q{:02}", q.id)), q.id)
            })
            .with_context(|| {
                format!("preparing the output of queue {} (job {})", q.id, job.name)
            })?;
            let shared = Arc::new(SharedCounters::default());
            let wcounters = Arc::new(Mutex::new(SeriesCounters::default()));
            let flow_counters = (j == 0 && cfg.flows.is_some())
                .then(|| Arc::new(Mutex::new(FlowCounters::default())));
            probes.push(QueueProbe {
                job: job.name.clone(),
                queue: q.id,
                worker: shared.clone(),
                writer: wcounters.clone(),
                flows: flow_counters.clone(),
                ring: consumer.probe(),
                xdp: xdp_live[qi].clone(),
            });
            let n = writer_inputs.len();
            let report_index = reports.len();
            let live = !matches!(q.source, QueueSource::File(_));
            let done = Arc::new(AtomicBool::new(false));
            start_jobs[j].push(crate::jobs::JobQueue {
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
                report: report_index,
                errors: None,
                live_period_ns: cfg
                    .rotate_seconds
                    .filter(|_| live)
                    .map(|s| s * 1_000_000_000),
                done,
                final_capture: final_captures[j].clone(),
            });
            reports.push((
                job.name.clone(),
                qi,
                q.id,
                q.label.clone(),
                shared.clone(),
                wcounters,
                flow_counters,
            ));
            lanes[qi].push((producer, shared, job.policies.build()?));
        }
    }
    let jobs_runtime = match &cfg.api {
        Some(api) => {
            let shape = crate::jobs::Shape {
                ring: ring_cfg,
                queues: queues
                    .iter()
                    .enumerate()
                    .map(|(qi, q)| crate::jobs::QueueInfo {
                        id: q.id,
                        label: q.label.clone(),
                        live: !matches!(q.source, QueueSource::File(_)),
                        xdp: xdp_live[qi].clone(),
                    })
                    .collect(),
                series: crate::jobs::SeriesTemplate {
                    rotate_bytes: cfg.rotate_bytes,
                    rotate_files: cfg.rotate_files,
                    compress: cfg.compress,
                    live_period_ns: cfg.rotate_seconds.map(|s| s * 1_000_000_000),
                },
                max_jobs: cfg.max_jobs.max(cfg.jobs.len()),
                job_root: api.job_root.clone(),
                flows_on_first_job: cfg.flows.is_some(),
            };
            let rt = Arc::new(crate::jobs::Jobs::new(
                shape,
                epoch.clone(),
                std::mem::take(&mut lane_senders),
                std::mem::take(&mut writer_senders),
            ));
            for ((job, qs), fc) in cfg.jobs.iter().zip(start_jobs).zip(&final_captures) {
                rt.register_start_job(job, job.describe(), qs, fc.clone());
            }
            Some(rt)
        }
        None => None,
    };
    for ((q, lanes), control) in queues.into_iter().zip(lanes).zip(lane_controls) {
        let backpressure_ns = match (&q.source, cfg.drop_when_full) {
            (QueueSource::File(_), false) => Some(BACKPRESSURE_LIMIT_NS),
            _ => None,
        };
        let mut lanes = lanes.into_iter();
        let (producer, shared, policies) = lanes.next().expect("at least one job");
        let mut worker = Worker::new(
            WorkerConfig {
                backpressure_ns,
                flush_after_ns: cfg.flush_ns,
                rotate_every_ns: cfg.rotate_seconds.map(|s| s * 1_000_000_000),
                ..WorkerConfig::new(q.id)
            },
            producer,
            shared,
        )
        .with_abort(worker_stop.clone())
        .with_policies(policies);
        if let Some(c) = control {
            worker = worker.with_control(c);
        }
        for (producer, shared, policies) in lanes {
            worker = worker
                .with_job(producer, shared, policies)
                .map_err(|_| anyhow::anyhow!("too many capture jobs"))?;
        }
        let flow_counters = reports
            .iter()
            .find(|r| r.2 == q.id)
            .and_then(|r| r.6.clone());
        let worker = match (&cfg.flows, &exporters, flow_counters) {
            (Some(f), Some(ex), Some(fc)) => {
                let table = FlowTable::new(f.capacity, f.timeouts)
                    .map_err(|e| anyhow::anyhow!("--flow-capacity: {e}"))?;
                let handle = ex.handle();
                worker.with_flows(table, Box::new(move |r| handle.offer(r)), fc)
            }
            _ => worker,
        };
        workers.push((worker, q));
    }

    let metrics = match &cfg.metrics {
        Some(m) => match MetricsServer::start(m.addr, probes) {
            Ok(server) => {
                eprintln!("linecap: metrics on http://{}/metrics", server.addr());
                Some(server)
            }
            Err(e) if !m.required => {
                eprintln!(
                    "linecap: warning: {e:#}; capturing without metrics (give --metrics ADDR to make this an error)"
                );
                None
            }
            Err(e) => return Err(e),
        },
        None => None,
    };
    let api = match (&cfg.api, &jobs_runtime) {
        (Some(a), Some(rt)) => {
            let server =
                crate::api::ApiServer::start(a, rt.clone(), crate::api::CaptureInfo::new(cfg))?;
            eprintln!("linecap: control API on {}", server.describe());
            Some(server)
        }
        _ => None,
    };
    if let Some(user) = &cfg.user {
        // Everything privileged is done (XDP attached, sockets bound, rings
        // and directories made): hand the output to the user, then become it
        // before any worker or writer thread starts (capabilities are per thread).
        let t = crate::privileges::resolve_user(user)?;
        let mut dirs = Vec::new();
        for job in &cfg.jobs {
            dirs.push(job.out.clone());
            if let Ok(rd) = std::fs::read_dir(&job.out) {
                dirs.extend(rd.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
            }
        }
        for d in dirs {
            nix::unistd::chown(&d, Some(t.uid), Some(t.gid))
                .with_context(|| format!("giving {} to {user}", d.display()))?;
        }
        crate::privileges::drop_privileges(user, crate::privileges::CAPTURE_KEEP)?;
        eprintln!(
            "linecap: running as {user} (uid {}) with CAP_NET_ADMIN, CAP_BPF, CAP_IPC_LOCK",
            t.uid
        );
    }
    let rotate_gen = std::sync::atomic::AtomicU64::new(0);
    if !att.list.is_empty() {
        let ifs: Vec<&str> = att.list.iter().map(|a| a.ifname()).collect();
        eprintln!(
            "linecap: ready: capturing on {} ({} queues); SIGINT/SIGTERM to stop",
            ifs.join(", "),
            workers.len()
        );
    }
    let deadline_stop = stop.clone();
    let worker_errors: Vec<Mutex<(Vec<String>, u64)>> = (0..workers.len())
        .map(|_| Mutex::new((Vec::new(), 0)))
        .collect();
    let writer_errors: Mutex<Vec<(usize, String)>> = Mutex::new(Vec::new());
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
            let stop = &*worker_stop;
            let errs = &worker_errors[i];
            let core = (!cfg.cores.is_empty()).then(|| cfg.cores[i % cfg.cores.len()]);
            worker_handles.push(
                std::thread::Builder::new()
                    .name(format!("lc-worker-{}", q.id))
                    .spawn_scoped(s, move || {
                        if let Some(id) = core
                            && !core_affinity::set_for_current(core_affinity::CoreId { id })
                        {
                            errs.lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .0
                                .push(format!("could not pin the worker to core {id}"));
                        }
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
                            QueueSource::AfXdp(mut src) => {
                                worker.run(&mut *src, &clock, stop);
                                (src.error(), 0)
                            }
                            #[cfg(feature = "dpdk")]
                            QueueSource::Dpdk(mut src) => {
                                worker.run(&mut *src, &clock, stop);
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
        for ((i, inputs), inbox) in writer_inputs.into_iter().enumerate().zip(writer_inboxes) {
            let writer_errors = &writer_errors;
            let rotate_gen = &rotate_gen;
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
        // Supervise: when asked to stop, cut the AF_XDP inflow first (frames
        // then pass to the kernel stack and are counted as not redirected),
        // then let the workers drain their rings and finish.
        let mut xdp_refreshed = std::time::Instant::now();
        loop {
            if worker_handles.iter().all(|h| h.is_finished()) {
                break;
            }
            if xdp_refreshed.elapsed() >= Duration::from_millis(500) {
                xdp_refreshed = std::time::Instant::now();
                refresh_xdp_live(&att, &xdp_ids, &xdp_base, &xdp_live);
            }
            if signals.rotate.swap(false, Ordering::Relaxed) {
                rotate_gen.fetch_add(1, Ordering::Relaxed);
            }
            if stop.load(Ordering::Relaxed) && !worker_stop.load(Ordering::Relaxed) {
                if let Some(rt) = &jobs_runtime {
                    rt.close();
                }
                for (a, q) in xdp_ids.iter().flatten() {
                    att.list[*a].unregister(*q);
                }
                worker_stop.store(true, Ordering::Relaxed);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        for (i, h) in worker_handles.into_iter().enumerate() {
            if let Err(panic) = h.join() {
                let msg = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                worker_errors[i]
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .0
                    .push(format!("worker panicked (a bug, please report it): {msg}"));
            }
        }
        // No job changes once the workers are gone; the writers end with
        // their last series.
        if let Some(rt) = &jobs_runtime {
            rt.close();
            rt.release_writers();
        }
        done.store(true, Ordering::Relaxed);
    });
    refresh_xdp_live(&att, &xdp_ids, &xdp_base, &xdp_live);
    // Final XDP counts, and the interfaces' own drops.
    let xdp_final: Vec<Option<XdpQueueStats>> = xdp_ids
        .iter()
        .zip(&xdp_base)
        .map(|(id, base)| {
            let ((a, q), b) = ((*id)?, (*base)?);
            let now = att.list[a].queue_stats(q);
            Some(XdpQueueStats {
                seen: now.seen - b.seen,
                not_redirected: now.not_redirected - b.not_redirected,
            })
        })
        .collect();
    let mut iface_drop_per_queue = vec![0u64; xdp_ids.len()];
    for (ai, a) in att.list.iter().enumerate() {
        if let Some(first) = xdp_ids.iter().position(|x| x.is_some_and(|(i, _)| i == ai)) {
            iface_drop_per_queue[first] =
                iface_drops(a.ifname()).saturating_sub(att.iface_drops_start[ai]);
        }
    }
    drop(att);

    let writer_errors = writer_errors
        .into_inner()
        .unwrap_or_else(|e| e.into_inner());
    let worker_errors: Vec<(Vec<String>, u64)> = worker_errors
        .into_iter()
        .map(|e| e.into_inner().unwrap_or_else(|e| e.into_inner()))
        .collect();
    let mut queues: Vec<QueueReport> = reports
        .into_iter()
        .enumerate()
        .map(|(ri, (job, qi, id, label, shared, wc, fc))| {
            let (mut errors, input_truncated_bytes) = worker_errors[qi].clone();
            errors.extend(
                writer_errors
                    .iter()
                    .filter(|(r, _)| *r == ri)
                    .map(|(_, e)| e.clone()),
            );
            QueueReport {
                job,
                queue: id,
                source: label,
                worker: shared.snapshot(),
                writer: *wc.lock().unwrap_or_else(|e| e.into_inner()),
                errors,
                input_truncated_bytes,
                xdp: xdp_final[qi],
                iface_drops: iface_drop_per_queue[qi],
                flows: fc.map(|c| *c.lock().unwrap_or_else(|e| e.into_inner())),
            }
        })
        .collect();
    // Jobs added through the control API: their reports follow the others'.
    let mut jobs: Vec<(String, PathBuf, serde_json::Value)> = cfg
        .jobs
        .iter()
        .zip(job_info)
        .map(|(j, info)| (j.name.clone(), j.out.clone(), info))
        .collect();
    if let Some(rt) = &jobs_runtime {
        // The jobs of the start that were stopped say so.
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
    drop(api);
    // A capture that ended by itself keeps its final values on /metrics for
    // a while (a scraper's last look); a signal during the hold ends it.
    if let (Some(_), Some(m)) = (&metrics, &cfg.metrics)
        && !stop.load(Ordering::Relaxed)
    {
        let end = std::time::Instant::now() + m.hold;
        while std::time::Instant::now() < end && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    drop(metrics);
    // Every worker has drained its table: let the exporters write it all.
    let exports = match exporters {
        Some(ex) => {
            let live = ex.live_drops();
            Some((ex.finish()?, live))
        }
        None => None,
    };
    Ok(CaptureReport {
        exports,
        queues,
        jobs,
        hugepages,
        stopped: stop.load(Ordering::Relaxed),
    })
}

impl WriterInput {
    /// Publish the counters and keep the series' error, if any.
    fn publish(&mut self, errors: &Mutex<Vec<(usize, String)>>) {
        if let Some(e) = self.series.take_error() {
            self.error(errors, format!("writer: {e}"));
        }
        *self.counters.lock().unwrap_or_else(|e| e.into_inner()) = *self.series.counters();
    }
}

/// Drain the rings of this writer's queues into their file series until
/// every producer has closed its ring and every batch is written. Series of
/// jobs added at runtime arrive through `inbox`; the loop ends once every
/// series is finished and the inbox is closed (or there is none).
fn writer_loop(
    mut inputs: Vec<WriterInput>,
    inbox: Option<std::sync::mpsc::Receiver<WriterInput>>,
    errors: &Mutex<Vec<(usize, String)>>,
    rotate_gen: &std::sync::atomic::AtomicU64,
    delay: Option<Duration>,
    grace_ns: u64,
) {
    let mut idle: u32 = 0;
    let mut seen_gen = 0;
    let mut checked_idle = std::time::Instant::now();
    let mut inbox_open = inbox.is_some();
    loop {
        if let Some(rx) = &inbox {
            loop {
                match rx.try_recv() {
                    Ok(i) => inputs.push(i),
                    Err(std::sync::mpsc::TryRecvError::Empty) => break,
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                        inbox_open = false;
                        break;
                    }
                }
            }
        }
        let gen_now = rotate_gen.load(Ordering::Relaxed);
        if gen_now != seen_gen {
            // SIGHUP: complete every open file; the next batch starts a new one.
            seen_gen = gen_now;
            for i in inputs.iter_mut() {
                i.series.rotate_now();
                i.publish(errors);
            }
        }
        let mut progressed = false;
        for input in inputs.iter_mut() {
            // Bound the work per queue per pass so one busy queue cannot starve the others.
            for _ in 0..input.consumer.capacity() {
                let Some(batch) = input.consumer.peek() else {
                    break;
                };
                let meta = *batch.meta;
                let failed = input.series.write_batch(&meta, batch.records).is_err();
                input.consumer.release();
                if failed && let Some(e) = input.series.take_error() {
                    input.error(errors, format!("writer: {e}"));
                }
                if let Some(d) = delay {
                    std::thread::sleep(d);
                }
                progressed = true;
            }
            *input.counters.lock().unwrap_or_else(|e| e.into_inner()) = *input.series.counters();
        }
        // A closed ring that is drained: its series is complete.
        let mut i = 0;
        while i < inputs.len() {
            if inputs[i].consumer.is_finished() {
                let mut done = inputs.swap_remove(i);
                done.finish(errors);
            } else {
                i += 1;
            }
        }
        if inputs.is_empty() && !inbox_open {
            break;
        }
        if checked_idle.elapsed() >= Duration::from_millis(250) {
            checked_idle = std::time::Instant::now();
            let now_ns = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            for i in inputs.iter_mut() {
                if let Some(period) = i.live_period_ns
                    && i.consumer.peek().is_none()
                    && i.series.complete_if_period_over(period, now_ns, grace_ns)
                {
                    i.publish(errors);
                }
            }
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
}

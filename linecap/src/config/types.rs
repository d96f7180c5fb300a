//! The one validated configuration a capture runs with ([`CaptureConfig`]),
//! produced by `config::validate` from the command line layered over a
//! profile. The capture (`crate::capture`) reads nothing else.

use std::path::{Path, PathBuf};
use std::time::Duration;

use linecap_dataplane::afxdp::{AttachMode, XdpTimestamps, ZeroCopy};
use linecap_dataplane::flowtable::Timeouts;
use linecap_dataplane::ring::HugePages;

use crate::limits;
use crate::source::SourceSpec;
use linecap_flowexport::ExportConfig;

/// AF_XDP settings shared by every AF_XDP source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XdpOptions {
    /// Attach mode.
    pub mode: AttachMode,
    /// Which XDP program stamps the frames (device-bound with the RX
    /// hardware timestamp, or `bpf_ktime_get_ns()` only).
    pub timestamps: XdpTimestamps,
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
            timestamps: XdpTimestamps::Auto,
            ring_entries: limits::XSK_RING_DEFAULT,
            zero_copy: ZeroCopy::Auto,
            threaded_napi: true,
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
    /// O_DIRECT for whole blocks (`--direct-io`).
    pub direct_io: bool,
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
    /// Cores the writer, exporter and metrics threads (and the supervising
    /// main thread) run on; empty: no pinning. Workers stay on `cores`.
    pub housekeeping: Vec<usize>,
    /// Queue i of every job with several output directories writes into
    /// directory `queue_dirs[i]` (an index into [`JobConfig::dirs`]);
    /// `None`: round robin (queue i into directory i mod n).
    pub queue_dirs: Option<Vec<usize>>,
    /// Stop after this many frames were kept by the first job (`-c`): the
    /// workers stop taking frames once that many have been handed to its
    /// writer, so the first job writes exactly this many.
    pub max_frames: Option<u64>,
    /// The control API (`--api`), when on.
    pub api: Option<crate::apiconfig::ApiConfig>,
    /// Capture jobs that may run at once (`--max-jobs`): the jobs of the
    /// start plus those the control API may add.
    pub max_jobs: usize,
    /// Drop to this user after set-up (see `privileges.rs`).
    pub user: Option<String>,
    /// Bytes each output directory (one disk each) may hold, shared evenly
    /// by the jobs and by the queue series written into it; the oldest
    /// complete files are recycled to stay within it.
    pub disk_budget: Option<u64>,
    /// Flow tracking (one table per queue) and export, when on.
    pub flows: Option<FlowConfig>,
    /// The Prometheus endpoint, when on.
    pub metrics: Option<MetricsConfig>,
    /// Fault injection for tests and drills: the writer sleeps this long
    /// after every batch (a slow disk), so overload and `lctr` can be seen.
    pub writer_delay: Option<Duration>,
    /// The shipper's hooks (retention asks it; `/metrics` shows it), when shipping.
    pub ship: Option<crate::ship::ShipHooks>,
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

/// One capture job: a name, an output directory and policies.
#[derive(Debug, Clone)]
pub struct JobConfig {
    /// Short name (`[A-Za-z0-9_-]`, in reports, metrics and manifests).
    pub name: String,
    /// Output directory; queue N writes into `out/qNN/` (with `extra_dirs`:
    /// the first of the directories the queues are spread over).
    pub out: PathBuf,
    /// More output directories (one per disk): queues are spread over
    /// `out` and these (see [`CaptureConfig::queue_dirs`]).
    pub extra_dirs: Vec<PathBuf>,
    /// What the job keeps of each frame.
    pub policies: PolicyConfig,
}

impl JobConfig {
    /// A job named `main` keeping everything into `out`.
    pub fn main(out: PathBuf) -> Self {
        JobConfig {
            name: "main".into(),
            out,
            extra_dirs: Vec::new(),
            policies: PolicyConfig::default(),
        }
    }

    /// Every output directory of the job: `out`, then `extra_dirs`.
    pub fn dirs(&self) -> impl Iterator<Item = &Path> {
        std::iter::once(self.out.as_path()).chain(self.extra_dirs.iter().map(PathBuf::as_path))
    }

    /// Index (into [`JobConfig::dirs`]) of the directory queue number `qi`
    /// (0-based position among the capture's queues) writes into.
    pub fn dir_index(&self, qi: usize, map: Option<&[usize]>) -> usize {
        let n = 1 + self.extra_dirs.len();
        match map {
            Some(m) if !m.is_empty() => m[qi % m.len()] % n,
            _ => qi % n,
        }
    }

    /// The directory queue number `qi` writes into.
    pub fn dir_of(&self, qi: usize, map: Option<&[usize]>) -> &Path {
        let i = self.dir_index(qi, map);
        self.dirs().nth(i).unwrap_or(&self.out)
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
        for (k, da) in a.dirs().enumerate() {
            for db in a.dirs().take(k) {
                let (pa, pb) = (abs(da), abs(db));
                anyhow::ensure!(
                    !pa.starts_with(&pb) && !pb.starts_with(&pa),
                    "job {:?}: output directories {} and {} must be distinct and not inside one another",
                    a.name,
                    pb.display(),
                    pa.display()
                );
            }
        }
        for b in &jobs[..i] {
            anyhow::ensure!(a.name != b.name, "two capture jobs are named {:?}", a.name);
            for (da, db) in a.dirs().flat_map(|da| b.dirs().map(move |db| (da, db))) {
                let (pa, pb) = (abs(da), abs(db));
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

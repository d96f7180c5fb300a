//! Hardware profiles (`hw-profiles/*.toml`): one typed, validated value per
//! probe host.
//!
//! A profile is parsed with serde (`deny_unknown_fields` everywhere, so a
//! misspelt key is an error that names it) and then validated as a whole:
//! combinations that cannot work (zero queues, a batch larger than the ring,
//! a core map that does not match the queues, a metrics endpoint open to the
//! network without saying so…) are errors that name the key to change.
//!
//! The profile supplies defaults for `linecap capture`; flags given on the
//! command line win (`config::layer`). Every key takes effect: a key the
//! capture would not act on is not in this schema. `linecap check-host`
//! checks the host against it (`crate::checkhost`).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::limits;
use crate::source::{DpdkSpec, SourceSpec};
use crate::values::{parse_list, parse_rss_key, parse_size, rss_key_is_symmetric};

/// A byte count written as a number or as `"64K"`, `"1M"`, `"1G"` (powers of 1024).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Bytes(pub u64);

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(0) => Err(serde::de::Error::custom("a size must be above 0")),
            Raw::N(n) => Ok(Bytes(n)),
            Raw::S(s) => parse_size(&s).map(Bytes).map_err(serde::de::Error::custom),
        }
    }
}

/// A list of core ids written as `"2-9"`, `"2,4,6"` or `[2, 3, 4]`; order kept,
/// duplicates kept (validation rejects them by name).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CoreList(pub Vec<u32>);

impl<'de> Deserialize<'de> for CoreList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            List(Vec<u32>),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::List(v) => Ok(CoreList(v)),
            Raw::S(s) => {
                let mut v = Vec::new();
                for part in s.split(',') {
                    v.extend(parse_list(part).map_err(serde::de::Error::custom)?);
                }
                Ok(CoreList(v))
            }
        }
    }
}

/// The whole profile.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Which host this is for.
    pub host: Host,
    /// The capture NIC.
    pub nic: Nic,
    /// Worker cores.
    #[serde(default)]
    pub cores: Cores,
    /// Hugepages, rings and batches.
    #[serde(default)]
    pub memory: Memory,
    /// Flow tables (off when absent).
    pub flows: Option<Flows>,
    /// Writer threads, disks, rotation.
    pub writer: Writer,
    /// Prometheus endpoint.
    #[serde(default)]
    pub metrics: Metrics,
    /// Capture jobs (`[[job]]`); when there are any and `--out` is not
    /// given, they are the whole capture (no `main` job in `writer.dirs`).
    #[serde(default, rename = "job")]
    pub jobs: Vec<Job>,
    /// DPDK settings (with `nic.backend = "dpdk"`).
    #[serde(default)]
    pub dpdk: DpdkSection,
    /// Shipping (`[ship]`, see `ship.rs`; flags win).
    #[serde(default)]
    pub ship: Option<crate::ship::ShipTable>,
}

/// `[dpdk]`: what the DPDK port needs beyond `[nic]` (queues, RSS key and
/// NUMA node come from there).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DpdkSection {
    /// More EAL arguments, e.g. `"-l 0 --socket-mem 2048 --huge-dir /dev/hugepages1G"`.
    #[serde(default)]
    pub eal_args: Option<String>,
    /// Receive descriptors per queue.
    #[serde(default)]
    pub rx_desc: Option<u16>,
    /// Mbufs per queue's mempool.
    #[serde(default)]
    pub mbufs: Option<u32>,
    /// TSC stamps without NIC or kernel stamps: `"frame"` or `"burst"`
    /// (`--dpdk-timestamps`).
    #[serde(default)]
    pub timestamps: Option<crate::source::DpdkStamps>,
}

/// `[[job]]`: one capture job (the same keys as `--job`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Job {
    /// Job name.
    pub name: String,
    /// Output directory.
    pub out: PathBuf,
    /// tcpdump-syntax filter.
    pub filter: Option<String>,
    /// Sampling policy (as `--sample`).
    pub sample: Option<String>,
    /// Bytes kept per frame.
    pub snaplen: Option<u32>,
    /// Crypto-PAn key file.
    pub anonymize_key: Option<PathBuf>,
    /// src, dst or both.
    pub anonymize: Option<String>,
    /// MAC pseudonym key file.
    pub mac_key: Option<PathBuf>,
}

impl Job {
    /// The job as `--job` would give it; errors name the job and key.
    pub fn spec(&self) -> anyhow::Result<crate::values::JobSpec> {
        let ctx = |k: &str| format!("[[job]] {:?}: {k}", self.name);
        anyhow::ensure!(
            self.anonymize.is_none() || self.anonymize_key.is_some(),
            "{} needs anonymize_key",
            ctx("anonymize")
        );
        Ok(crate::values::JobSpec {
            name: self.name.clone(),
            out: self.out.clone(),
            filter: self.filter.clone(),
            sample: self
                .sample
                .as_deref()
                .map(str::parse)
                .transpose()
                .map_err(|e| anyhow::anyhow!("{}: {e}", ctx("sample")))?,
            snaplen: self.snaplen,
            anonymize_key: self.anonymize_key.clone(),
            anonymize: self
                .anonymize
                .as_deref()
                .map(str::parse)
                .transpose()
                .map_err(|e| anyhow::anyhow!("{}: {e}", ctx("anonymize")))?,
            mac_key: self.mac_key.clone(),
        })
    }
}

/// `[host]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Host {
    /// Short name (shown by check-host).
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// User to drop to after set-up (none: stay as started).
    pub user: Option<String>,
}

/// Receive path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// AF_XDP sockets behind an XDP program.
    Afxdp,
    /// DPDK poll-mode driver.
    Dpdk,
    /// A capture file replayed (tests, demos).
    File,
}

/// XDP attach mode as written in a profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// Native, else generic.
    #[default]
    Auto,
    /// Driver mode only.
    Native,
    /// skb mode.
    Generic,
}

/// Which XDP program stamps the frames, as written in a profile
/// (`--xdp-timestamps`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum XdpTimestampsKey {
    /// Device-bound in native mode, falling back to ktime.
    #[default]
    Auto,
    /// Device-bound or fail.
    Hardware,
    /// `bpf_ktime_get_ns()` only.
    Ktime,
}

/// `[nic]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Nic {
    /// Receive path.
    pub backend: Backend,
    /// Interface name (afxdp).
    pub interface: Option<String>,
    /// PCI address, like `0000:3b:00.0` (dpdk; checked by check-host when given).
    pub pci: Option<String>,
    /// Capture file (backend = "file").
    pub file: Option<PathBuf>,
    /// Kernel driver expected (`i40e`, `mlx5_core`, `ice`, `veth`…).
    pub driver: Option<String>,
    /// Receive queues captured (one worker each).
    pub queues: u32,
    /// NUMA node the NIC sits on.
    pub numa_node: Option<u32>,
    /// Toeplitz RSS key, 40 bytes in hex (colons allowed); must be symmetric.
    pub rss_key: Option<String>,
    /// Line rate in Gbit/s (sizes the disk write test).
    #[serde(default)]
    pub line_rate_gbps: f64,
    /// XDP attach mode.
    #[serde(default)]
    pub xdp_mode: XdpMode,
    /// XDP timestamps: the device-bound program (hardware RX stamps) or ktime.
    #[serde(default)]
    pub xdp_timestamps: XdpTimestampsKey,
    /// AF_XDP RX and fill ring entries per queue.
    #[serde(default = "default_xsk_ring")]
    pub xsk_ring_entries: u32,
}

fn default_xsk_ring() -> u32 {
    limits::XSK_RING_DEFAULT
}

/// `[cores]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Cores {
    /// Worker i runs on `workers[i]` (as many as `nic.queues`); empty: no pinning.
    #[serde(default)]
    pub workers: CoreList,
    /// Cores the writer, flow exporter and metrics threads run on (must not
    /// overlap `workers`); empty: not pinned.
    #[serde(default)]
    pub housekeeping: CoreList,
    /// Require the worker cores to be isolated (`isolcpus=`).
    #[serde(default)]
    pub isolated: bool,
}

/// Hugepage size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum HugepageSize {
    /// 2 MiB.
    #[default]
    #[serde(rename = "2M")]
    M2,
    /// 1 GiB.
    #[serde(rename = "1G")]
    G1,
}

impl HugepageSize {
    /// Bytes per page.
    pub fn bytes(self) -> u64 {
        match self {
            HugepageSize::M2 => 2 << 20,
            HugepageSize::G1 => 1 << 30,
        }
    }
    /// Name of the sysfs directory (`hugepages-2048kB`).
    pub fn sysfs_name(self) -> &'static str {
        match self {
            HugepageSize::M2 => "hugepages-2048kB",
            HugepageSize::G1 => "hugepages-1048576kB",
        }
    }
}

/// `[memory]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Memory {
    /// Hugepages that must be reserved (0: none required; rings use them when present).
    #[serde(default)]
    pub hugepages: u64,
    /// Their size.
    #[serde(default)]
    pub hugepage_size: HugepageSize,
    /// Bytes of ERF records per batch (one ring slot, one LZ4 block).
    #[serde(default = "default_batch")]
    pub batch_bytes: Bytes,
    /// Batches per queue ring (power of two); or give `ring_bytes`.
    pub ring_slots: Option<usize>,
    /// Bytes per queue ring; `ring_bytes / batch_bytes` slots.
    pub ring_bytes: Option<Bytes>,
}

fn default_batch() -> Bytes {
    Bytes(limits::BATCH_BYTES_DEFAULT)
}

impl Default for Memory {
    fn default() -> Self {
        Memory {
            hugepages: 0,
            hugepage_size: HugepageSize::M2,
            batch_bytes: default_batch(),
            ring_slots: None,
            ring_bytes: None,
        }
    }
}

/// `[flows]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flows {
    /// Slots per queue's table (power of two).
    pub capacity: usize,
    /// Seconds without packets before a flow ends.
    #[serde(default = "default_idle")]
    pub idle_timeout_s: f64,
    /// Seconds after which a long flow is exported.
    #[serde(default = "default_active")]
    pub active_timeout_s: f64,
    /// Seconds a finished TCP flow lingers.
    #[serde(default = "default_linger")]
    pub linger_s: f64,
}

fn default_idle() -> f64 {
    60.0
}
fn default_active() -> f64 {
    300.0
}
fn default_linger() -> f64 {
    2.0
}

/// `[writer]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Writer {
    /// Writer threads.
    pub threads: usize,
    /// Output directories, one per disk; queue q goes to `dirs[q % dirs.len()]`
    /// unless `queue_dirs` says otherwise.
    pub dirs: Vec<PathBuf>,
    /// Queue q goes to `dirs[queue_dirs[q]]` (one entry per queue).
    #[serde(default)]
    pub queue_dirs: Option<Vec<usize>>,
    /// LZ4-compress batches.
    #[serde(default = "yes")]
    pub compress: bool,
    /// Whole 4 KiB blocks of each batch written with O_DIRECT (`--direct-io`).
    #[serde(default)]
    pub direct_io: bool,
    /// New file at this size.
    pub rotate_bytes: Option<Bytes>,
    /// New file on multiples of this many seconds of packet time.
    pub rotate_seconds: Option<u64>,
    /// Files kept per queue.
    pub rotate_files: Option<u32>,
    /// Disk space each output directory (disk) may hold; the oldest complete
    /// files are recycled to stay within it.
    pub disk_budget: Option<Bytes>,
    /// Bytes check-host writes (with fsync) to time each output directory.
    #[serde(default = "default_write_test")]
    pub write_test_bytes: Bytes,
}

fn yes() -> bool {
    true
}
fn default_write_test() -> Bytes {
    Bytes(64 << 20)
}

/// `[metrics]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    /// Where the Prometheus endpoint listens (default 127.0.0.1:9464, and then a
    /// busy port is a warning; given here, it is an error, as `--metrics`).
    #[serde(default)]
    pub address: Option<SocketAddr>,
    /// Allow a non-loopback address.
    #[serde(default)]
    pub allow_remote: bool,
}

fn default_metrics() -> SocketAddr {
    SocketAddr::from(limits::METRICS_DEFAULT_ADDR)
}

impl Metrics {
    /// The listen address, given or default.
    pub fn address(&self) -> SocketAddr {
        self.address.unwrap_or_else(default_metrics)
    }
}

impl Profile {
    /// Read, parse and validate a profile file.
    pub fn load(path: &Path) -> anyhow::Result<Profile> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("profile {}: cannot read", path.display()))?;
        Profile::parse(&text).with_context(|| format!("profile {}", path.display()))
    }

    /// Parse and validate profile text.
    pub fn parse(text: &str) -> anyhow::Result<Profile> {
        let p: Profile =
            toml::from_str(text).map_err(|e| anyhow::anyhow!("{}", e.to_string().trim_end()))?;
        p.validate()?;
        Ok(p)
    }

    /// Slots per queue ring.
    pub fn ring_slots(&self) -> usize {
        let m = &self.memory;
        match (m.ring_slots, m.ring_bytes) {
            (Some(s), _) => s,
            (None, Some(r)) => (r.0 / m.batch_bytes.0) as usize,
            (None, None) => limits::RING_SLOTS_DEFAULT,
        }
    }

    /// Bytes of ring memory, all queues.
    pub fn ring_memory_bytes(&self) -> u64 {
        (self.nic.queues as u64).saturating_mul(linecap_dataplane::ring::region_bytes(
            self.ring_slots() as u64,
            self.memory.batch_bytes.0,
        ))
    }

    /// Bytes of locked memory the capture needs: rings plus AF_XDP UMEM
    /// (twice the ring entries of 2 KiB frames per queue).
    pub fn locked_memory_bytes(&self) -> u64 {
        let umem = match self.nic.backend {
            Backend::Afxdp => 2 * self.nic.xsk_ring_entries as u64 * 2048,
            _ => 0,
        };
        self.ring_memory_bytes() + self.nic.queues as u64 * umem
    }

    /// The output directory of queue `q` (queues spread round-robin over the disks).
    #[allow(dead_code)] // for the pipeline: one output root per queue
    pub fn queue_dir(&self, q: u32) -> &Path {
        &self.writer.dirs[self.queue_dir_index(q)]
    }

    /// Index into `writer.dirs` of queue `q`'s directory.
    pub fn queue_dir_index(&self, q: u32) -> usize {
        match &self.writer.queue_dirs {
            Some(m) => m[q as usize % m.len()],
            None => q as usize % self.writer.dirs.len(),
        }
    }

    /// Queues written to output directory `i`.
    pub fn queues_on_dir(&self, i: usize) -> u32 {
        (0..self.nic.queues)
            .filter(|&q| self.queue_dir_index(q) == i)
            .count() as u32
    }

    /// The source this profile captures from (the DPDK port's settings are
    /// applied from `[nic]` and `[dpdk]` by `config::layer`).
    pub fn source_spec(&self) -> anyhow::Result<SourceSpec> {
        Ok(match self.nic.backend {
            Backend::Afxdp => SourceSpec::AfXdp {
                ifname: self.nic.interface.clone().context("nic.interface")?,
                queues: Some((0..self.nic.queues).collect()),
            },
            Backend::Dpdk => SourceSpec::Dpdk(
                DpdkSpec::parse(self.nic.pci.as_deref().context("nic.pci")?).context("nic.pci")?,
            ),
            Backend::File => SourceSpec::File(self.nic.file.clone().context("nic.file")?),
        })
    }

    /// Check the whole profile; errors name the key to change.
    pub fn validate(&self) -> anyhow::Result<()> {
        let nic = &self.nic;
        if self.host.name.trim().is_empty() {
            bail!("host.name must not be empty");
        }
        if let Some(u) = &self.host.user {
            let ok = !u.is_empty()
                && u.len() <= limits::USER_NAME_MAX
                && u.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
                && !u.starts_with('-');
            if !ok {
                bail!("host.user {u:?} is not a valid user name");
            }
        }
        if nic.queues == 0 {
            bail!("nic.queues must be at least 1, got 0");
        }
        if nic.queues > limits::QUEUES_MAX {
            bail!(
                "nic.queues must be at most {}, got {}",
                limits::QUEUES_MAX,
                nic.queues
            );
        }
        match nic.backend {
            Backend::Afxdp => match &nic.interface {
                None => bail!("nic.interface is required with nic.backend = \"afxdp\""),
                // The kernel's dev_valid_name(); a ':' would also cut the
                // `afxdp:IFACE:QUEUES` source the profile becomes.
                Some(i)
                    if i.is_empty()
                        || i.len() > limits::IFNAME_MAX
                        || i == "."
                        || i == ".."
                        || i.contains(['/', ':'])
                        || i.chars().any(char::is_whitespace) =>
                {
                    bail!(
                        "nic.interface {i:?} is not an interface name (1-15 characters, \
                         no '/', ':' or spaces)"
                    )
                }
                Some(_) => {}
            },
            Backend::Dpdk => {
                if nic.pci.is_none() {
                    bail!("nic.pci is required with nic.backend = \"dpdk\"");
                }
            }
            Backend::File => {
                if nic.file.is_none() {
                    bail!("nic.file is required with nic.backend = \"file\"");
                }
            }
        }
        if let Some(pci) = &nic.pci {
            let ok = pci.len() == 12
                && pci.chars().enumerate().all(|(i, c)| match i {
                    4 | 7 => c == ':',
                    10 => c == '.',
                    _ => c.is_ascii_hexdigit(),
                });
            if !ok {
                bail!("nic.pci {pci:?} is not a PCI address like 0000:3b:00.0");
            }
        }
        if let Some(n) = nic.numa_node
            && n >= 64
        {
            bail!("nic.numa_node {n} is out of range (0-63)");
        }
        if let Some(k) = &nic.rss_key {
            let key = parse_rss_key(k).map_err(|e| anyhow::anyhow!("nic.rss_key: {e}"))?;
            if !rss_key_is_symmetric(&key) {
                bail!(
                    "nic.rss_key is not symmetric (it must repeat every 2 bytes, like 6d:5a:6d:5a:…): \
                     the two directions of a flow would land on different queues"
                );
            }
        }
        if !(nic.line_rate_gbps.is_finite() && nic.line_rate_gbps >= 0.0) {
            bail!("nic.line_rate_gbps must be a number >= 0");
        }
        let x = nic.xsk_ring_entries;
        if !x.is_power_of_two() || !(limits::XSK_RING_MIN..=limits::XSK_RING_MAX).contains(&x) {
            bail!(
                "nic.xsk_ring_entries must be a power of two from {} to {}, got {x}",
                limits::XSK_RING_MIN,
                limits::XSK_RING_MAX
            );
        }

        // Cores.
        let c = &self.cores;
        let mut seen = BTreeSet::new();
        for &w in &c.workers.0 {
            if !seen.insert(w) {
                bail!("cores.workers lists core {w} twice");
            }
        }
        if !c.workers.0.is_empty() && c.workers.0.len() != nic.queues as usize {
            bail!(
                "cores.workers lists {} cores but nic.queues is {}: give one worker core per queue",
                c.workers.0.len(),
                nic.queues
            );
        }
        if let Some(h) = c.housekeeping.0.iter().find(|h| seen.contains(h)) {
            bail!("cores.housekeeping core {h} is also in cores.workers");
        }
        if c.isolated && c.workers.0.is_empty() {
            bail!("cores.isolated = true needs cores.workers");
        }
        if c.isolated && seen.contains(&0) {
            bail!(
                "cores.workers includes core 0, which cannot be isolated (cores.isolated = true)"
            );
        }

        // Memory.
        let m = &self.memory;
        let batch = m.batch_bytes.0;
        if batch < limits::BATCH_BYTES_MIN {
            bail!(
                "memory.batch_bytes must be at least 64K (one ERF record can be 64 KiB), got {batch}"
            );
        }
        if batch > limits::BATCH_BYTES_MAX {
            bail!("memory.batch_bytes must be at most 4M (one LZ4 block), got {batch}");
        }
        if let Some(r) = m.ring_bytes {
            if batch > r.0 / 2 {
                bail!(
                    "memory.batch_bytes ({batch}) is larger than what memory.ring_bytes ({}) holds: \
                     the ring needs room for at least 2 batches",
                    r.0
                );
            }
            if !r.0.is_multiple_of(batch) || !(r.0 / batch).is_power_of_two() {
                bail!(
                    "memory.ring_bytes ({}) must be a power-of-two multiple of memory.batch_bytes ({batch})",
                    r.0
                );
            }
            let slots = r.0 / batch;
            if slots > limits::RING_SLOTS_MAX as u64 {
                bail!(
                    "memory.ring_bytes ({}) holds {slots} batches of memory.batch_bytes ({batch}): \
                     a ring has at most 65536 slots",
                    r.0
                );
            }
            if let Some(s) = m.ring_slots
                && s as u64 != slots
            {
                bail!(
                    "memory.ring_slots ({s}) disagrees with memory.ring_bytes / memory.batch_bytes ({})",
                    r.0 / batch
                );
            }
        }
        if let Some(s) = m.ring_slots
            && (s < limits::RING_SLOTS_MIN || !s.is_power_of_two() || s > limits::RING_SLOTS_MAX)
        {
            bail!("memory.ring_slots must be a power of two from 2 to 65536, got {s}");
        }
        if m.hugepages > 0 {
            let have = m.hugepages.saturating_mul(m.hugepage_size.bytes());
            let need = self.ring_memory_bytes();
            if have < need {
                bail!(
                    "memory.hugepages: {} × {} = {} MiB is less than the rings need ({} MiB)",
                    m.hugepages,
                    match m.hugepage_size {
                        HugepageSize::M2 => "2M",
                        HugepageSize::G1 => "1G",
                    },
                    have >> 20,
                    need.div_ceil(1 << 20)
                );
            }
        }

        // Flows.
        if let Some(f) = &self.flows {
            if !f.capacity.is_power_of_two()
                || f.capacity < limits::FLOW_CAPACITY_MIN
                || f.capacity > limits::FLOW_CAPACITY_MAX
            {
                bail!(
                    "flows.capacity must be a power of two from 1024 to 67108864, got {}",
                    f.capacity
                );
            }
            for (v, key) in [
                (f.idle_timeout_s, "flows.idle_timeout_s"),
                (f.active_timeout_s, "flows.active_timeout_s"),
                (f.linger_s, "flows.linger_s"),
            ] {
                if !(v.is_finite() && v > 0.0) {
                    bail!("{key} must be a positive number of seconds");
                }
            }
        }

        // Writer.
        let w = &self.writer;
        if w.threads == 0 || w.threads > limits::WRITER_THREADS_MAX {
            bail!("writer.threads must be 1..=64, got {}", w.threads);
        }
        if w.threads > nic.queues as usize {
            bail!(
                "writer.threads ({}) is more than nic.queues ({}): a queue is written by one thread",
                w.threads,
                nic.queues
            );
        }
        if w.dirs.is_empty() {
            bail!("writer.dirs must list at least one output directory");
        }
        let mut dirs = BTreeSet::new();
        for d in &w.dirs {
            if !d.is_absolute() {
                bail!("writer.dirs: {} is not an absolute path", d.display());
            }
            if !dirs.insert(d) {
                bail!("writer.dirs lists {} twice", d.display());
            }
        }
        if w.dirs.len() > nic.queues as usize {
            bail!(
                "writer.dirs lists {} directories for {} queues: some would stay empty",
                w.dirs.len(),
                nic.queues
            );
        }
        if w.rotate_seconds == Some(0) {
            bail!("writer.rotate_seconds must be at least 1");
        }
        // The capture's own limit (`--rotate-seconds`).
        if let Some(g) = w.rotate_seconds
            && g > limits::ROTATE_SECONDS_MAX
        {
            bail!("writer.rotate_seconds {g} is out of range (at most 100 years)");
        }
        if w.rotate_files == Some(0) {
            bail!("writer.rotate_files must be at least 1");
        }
        if let Some(m) = &w.queue_dirs {
            if m.len() != nic.queues as usize {
                bail!(
                    "writer.queue_dirs lists {} directories but nic.queues is {}: give one per queue",
                    m.len(),
                    nic.queues
                );
            }
            if let Some(bad) = m.iter().find(|&&i| i >= w.dirs.len()) {
                bail!(
                    "writer.queue_dirs: {bad} is not an index into writer.dirs (0 to {})",
                    w.dirs.len() - 1
                );
            }
            if let Some(empty) = (0..w.dirs.len()).find(|i| !m.contains(i)) {
                bail!(
                    "writer.queue_dirs puts no queue on writer.dirs[{empty}] ({})",
                    w.dirs[empty].display()
                );
            }
        }
        if let (Some(b), Some(n), Some(budget)) = (w.rotate_bytes, w.rotate_files, w.disk_budget) {
            // The budget holds per directory: the fullest one decides.
            let most = (0..w.dirs.len())
                .map(|i| self.queues_on_dir(i))
                .max()
                .unwrap_or(nic.queues);
            let need = (b.0 as u128) * (n as u128) * (most as u128);
            if need > budget.0 as u128 {
                bail!(
                    "writer.disk_budget ({} GiB per directory) is less than the queues of one \
                     directory ({most}) × writer.rotate_files × writer.rotate_bytes ({} GiB)",
                    budget.0 >> 30,
                    need >> 30
                );
            }
        }
        if w.write_test_bytes.0 > limits::WRITE_TEST_BYTES_MAX {
            bail!("writer.write_test_bytes must be at most 1G");
        }

        // Metrics.
        let ip = self.metrics.address().ip();
        if !ip.is_loopback() && !self.metrics.allow_remote {
            bail!(
                "metrics.address {} is not a loopback address: set metrics.allow_remote = true \
                 to expose the endpoint to the network",
                self.metrics.address()
            );
        }

        // Jobs: policies parse (keys and filters are loaded at capture start).
        for j in &self.jobs {
            j.spec()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const MINIMAL: &str = r#"
[host]
name = "t"
[nic]
backend = "afxdp"
interface = "lo"
queues = 2
[writer]
threads = 1
dirs = ["/tmp/x"]
"#;

    fn with(extra: &str, replace: Option<(&str, &str)>) -> anyhow::Result<Profile> {
        let mut t = MINIMAL.to_string();
        if let Some((a, b)) = replace {
            assert!(t.contains(a), "{a}");
            t = t.replace(a, b);
        }
        t.push_str(extra);
        Profile::parse(&t)
    }

    fn err(extra: &str, replace: Option<(&str, &str)>) -> String {
        format!("{:#}", with(extra, replace).expect_err("must be rejected"))
    }

    #[test]
    fn bundled_profiles_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../hw-profiles");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "toml") {
                Profile::load(&p).unwrap_or_else(|e| panic!("{}: {e:#}", p.display()));
                n += 1;
            }
        }
        assert!(n >= 3, "{n} profiles");
        let p = Profile::load(&dir.join("probe-40g.toml")).unwrap();
        assert_eq!(p.nic.queues, 8);
        assert_eq!(p.cores.workers.0, (2..=9).collect::<Vec<_>>());
        assert_eq!(p.memory.hugepage_size, HugepageSize::G1);
        assert_eq!(
            p.source_spec().unwrap(),
            SourceSpec::AfXdp {
                ifname: "ens1f0".into(),
                queues: Some((0..8).collect())
            }
        );
    }

    #[test]
    fn minimal_profile_gets_defaults() {
        let p = with("", None).unwrap();
        assert_eq!(p.ring_slots(), 16);
        assert_eq!(p.memory.batch_bytes, Bytes(1 << 20));
        assert_eq!(p.metrics.address(), "127.0.0.1:9464".parse().unwrap());
        assert_eq!(p.queue_dir(1), Path::new("/tmp/x"));
    }

    #[test]
    fn unknown_keys_are_named() {
        assert!(err("[memory]\nbatch_byte = \"1M\"\n", None).contains("batch_byte"));
        assert!(err("[bogus]\nx = 1\n", None).contains("bogus"));
        assert!(err("", Some(("queues = 2", "queues = 2\nqueue = 2"))).contains("queue"));
    }

    #[test]
    fn impossible_combinations_name_the_key() {
        for (extra, replace, key) in [
            ("", Some(("queues = 2", "queues = 0")), "nic.queues"),
            ("", Some(("threads = 1", "threads = 0")), "writer.threads"),
            ("", Some(("threads = 1", "threads = 3")), "writer.threads"),
            (
                "[memory]\nbatch_bytes = \"4M\"\nring_bytes = \"4M\"\n",
                None,
                "memory.batch_bytes",
            ),
            (
                "[memory]\nbatch_bytes = \"1M\"\nring_bytes = \"3M\"\n",
                None,
                "memory.ring_bytes",
            ),
            ("[memory]\nring_slots = 6\n", None, "memory.ring_slots"),
            (
                "[memory]\nbatch_bytes = \"1K\"\n",
                None,
                "memory.batch_bytes",
            ),
            ("[memory]\nhugepages = 1\n", None, "memory.hugepages"),
            ("[cores]\nworkers = \"2-4\"\n", None, "cores.workers"),
            ("[cores]\nworkers = [2, 2]\n", None, "cores.workers"),
            (
                "[cores]\nworkers = \"2-3\"\nhousekeeping = \"0-2\"\n",
                None,
                "cores.housekeeping",
            ),
            (
                "[cores]\nworkers = \"0-1\"\nisolated = true\n",
                None,
                "core 0",
            ),
            (
                "[metrics]\naddress = \"0.0.0.0:9464\"\n",
                None,
                "metrics.allow_remote",
            ),
            ("", Some(("interface = \"lo\"", "")), "nic.interface"),
            (
                "",
                Some(("dirs = [\"/tmp/x\"]", "dirs = [\"rel\"]")),
                "writer.dirs",
            ),
            (
                "",
                Some(("dirs = [\"/tmp/x\"]", "dirs = []")),
                "writer.dirs",
            ),
            (
                "",
                Some(("queues = 2", "queues = 2\nrss_key = \"6d5a\"")),
                "nic.rss_key",
            ),
            (
                "",
                Some((
                    "queues = 2",
                    "queues = 2\nrss_key = \"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f2021222324252627\"",
                )),
                "nic.rss_key",
            ),
            ("[writer.x]\n", None, "x"),
            (
                "",
                Some(("queues = 2", "queues = 2\nxsk_ring_entries = 1000")),
                "nic.xsk_ring_entries",
            ),
            (
                "",
                Some((
                    "threads = 1",
                    "threads = 1\nrotate_bytes = \"1G\"\nrotate_files = 100\ndisk_budget = \"10G\"",
                )),
                "writer.disk_budget",
            ),
            ("[flows]\ncapacity = 1000\n", None, "flows.capacity"),
            // Found while writing the profile_parse fuzz target's checks
            // (docs/reliability.md, bug 4): a ring of 2^47 slots, which
            // overflowed ring_memory_bytes() when hugepages were asked for,
            // and which no capture could allocate;
            (
                "[memory]\nhugepages = 1\nbatch_bytes = \"64K\"\nring_bytes = \"8388608T\"\n",
                None,
                "memory.ring_bytes",
            ),
            (
                "[memory]\nbatch_bytes = \"64K\"\nring_bytes = \"8G\"\n",
                None,
                "at most 65536 slots",
            ),
            // interface names the capture's `afxdp:IFACE:QUEUES` source cuts or
            // the kernel refuses;
            (
                "",
                Some(("interface = \"lo\"", "interface = \"a:b\"")),
                "nic.interface",
            ),
            (
                "",
                Some(("interface = \"lo\"", "interface = \"e th0\"")),
                "nic.interface",
            ),
            (
                "",
                Some(("interface = \"lo\"", "interface = \"..\"")),
                "nic.interface",
            ),
            // a rotation interval the capture refuses.
            (
                "",
                Some(("threads = 1", "threads = 1\nrotate_seconds = 4000000000")),
                "writer.rotate_seconds",
            ),
        ] {
            let e = err(extra, replace);
            assert!(e.contains(key), "{extra:?} {replace:?}: {e}");
        }
    }

    #[test]
    fn allowed_remote_metrics_and_ring_bytes() {
        let p = with(
            "[metrics]\naddress = \"0.0.0.0:9464\"\nallow_remote = true\n[memory]\nbatch_bytes = \"512K\"\nring_bytes = \"8M\"\n",
            None,
        )
        .unwrap();
        assert_eq!(p.ring_slots(), 16);
        assert!(p.metrics.allow_remote);
    }

    #[test]
    fn rss_keys() {
        let sym = "6d:5a:".repeat(19) + "6d:5a";
        let k = parse_rss_key(&sym).unwrap();
        assert_eq!(k.len(), 40);
        assert!(rss_key_is_symmetric(&k));
        let mut k2 = k.clone();
        k2[7] = 0;
        assert!(!rss_key_is_symmetric(&k2));
        assert!(parse_rss_key("zz").is_err());
        assert!(parse_rss_key("6d5a").is_err());
    }
}

//! Command-line interface: flags are parsed and validated here into typed
//! configuration before anything starts.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use linecap_dataplane::ring::HugePages;
use linecap_dataplane::synthetic::SyntheticConfig;

use crate::pipeline::{CaptureConfig, Signals, SourceSpec, XdpOptions, run_capture};
use crate::summary;
use linecap_dataplane::afxdp::{AttachMode, ZeroCopy};

/// Kernel-bypass packet capture to rotating ERF+LZ4 files, with exact loss accounting.
#[derive(Parser, Debug)]
#[command(name = "linecap", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
// Parsed once at start-up: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Capture frames from one or more sources into per-queue file series.
    Capture(CaptureArgs),
    /// Read captures back: merge queues by time, write pcap/pcapng/ERF, print counts.
    Read(ReadArgs),
    /// Map IP addresses read one per line on stdin with Crypto-PAn (what a known address became).
    Anonymize(AnonymizeArgs),
    /// Run a self-contained demonstration capture of a bundled real trace.
    Demo(DemoArgs),
    /// Meter bidirectional flows in capture files offline; print them and/or export IPFIX/Parquet.
    Flows(crate::flows::FlowsArgs),
    /// Check this host against a hardware profile (hugepages, cores, NIC, IRQs, disks, kernel).
    CheckHost(crate::checkhost::CheckHostArgs),
    /// Talk to a running capture's control API: status, jobs, add and stop jobs.
    Ctl(crate::ctl::CtlArgs),
}

#[derive(Args, Debug)]
#[command(after_help = "\
SOURCES:
  afxdp:IFACE[:QUEUES]      an interface's receive queues by AF_XDP (needs root); QUEUES like 0-3 or
                            0,2,5 (default: all); both ends stay as they are, linecap attaches its XDP
                            program and detaches it on exit
  dpdk:DEVICE               a DPDK port (build with --features dpdk): a PCI address bound to vfio-pci
                            (0000:3b:00.0) or a vdev string (net_pcap0,rx_pcap=FILE); queues, RSS key,
                            descriptors, mbufs and EAL arguments from --dpdk-* / --rss-key / --eal-args
                            or the profile
  file:PATH                 a pcap, pcapng or ERF file (plain or LZ4), replayed with its own timestamps
  synth:SIZE[:FLOWS[:COUNT[:PPS]]]  generated Ethernet/IPv4/UDP frames of SIZE bytes (50-9018) over
                            FLOWS flows; COUNT frames (or until stopped), PPS frames/s (or as fast
                            as the worker takes them)

OUTPUT:
  DIR/qNN/qNN-SEQ-START.erf.lz4   one directory per queue; each file one LZ4 frame with one
                                  independent, checksummed block per batch of ERF type-2 records.
                                  Files are written as .NAME.part and renamed when complete;
                                  NAME.json is the manifest (counts, time range, the job's policies
                                  and sampling rate).
  Open with: tshark -r FILE, capinfos FILE, lz4 -dc FILE | tracestats erf:-,
  or merge all queues with: linecap read DIR -w out.pcap

JOBS:
  Every job sees every frame of every queue and keeps what its own policies say into its own
  directory, with its own accounting (summary, --report-json, metrics label capture_job). --out
  and the policy flags make the job \"main\"; each --job adds one:
    --job 'NAME:DIR;filter=EXPR;sample=POLICY;snaplen=N;anonymize-key=FILE;anonymize=MODE;mac-key=FILE'
  (every key optional). Flow tracking (--flows) follows the first job's filter and sampling.
  A profile's [[job]] tables do the same.

EXAMPLES:
  linecap capture --source afxdp:ens1f0 --cores 2-9 --out /data/cap -C 1G -W 1000
  linecap capture --source file:trace.pcap --out /data/cap
  linecap capture --source file:trace.pcap --spread 4 --out /data/cap -C 100M -G 60 -W 48
  linecap capture --source synth:64:1000:10000000 --out /tmp/cap --no-compress
  linecap capture --source afxdp:ens1f0 --out /data/all --snaplen 128 \\
      --job 'dns:/data/dns;filter=udp port 53' --job 'sampled:/data/s;sample=flows:100;anonymize-key=/etc/linecap/pan.key'")]
pub struct CaptureArgs {
    /// Hardware profile (hw-profiles/*.toml): its values are the defaults, flags given here win.
    #[arg(long, value_name = "FILE")]
    pub profile: Option<PathBuf>,
    /// Where frames come from (repeatable; see SOURCES).
    #[arg(
        short = 's',
        long = "source",
        value_name = "SPEC",
        required_unless_present = "profile"
    )]
    pub sources: Vec<String>,
    /// Output directory of the main capture job (created if missing); the policy flags below
    /// (--filter, --sample, --snaplen, --anonymize-key, --mac-key) apply to it.
    #[arg(
        short = 'o',
        long,
        value_name = "DIR",
        required_unless_present_any = ["profile", "jobs"]
    )]
    pub out: Option<PathBuf>,
    /// Another capture job on the same queues (repeatable; see JOBS): NAME:DIR then
    /// ;filter=EXPR ;sample=POLICY ;snaplen=N ;anonymize-key=FILE ;anonymize=MODE ;mac-key=FILE.
    #[arg(long = "job", value_name = "SPEC")]
    pub jobs: Vec<JobSpec>,
    /// Spread each file source over N queues by symmetric flow hash, as RSS spreads a link.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub spread: u32,
    /// Start a new file once the current one holds SIZE bytes (K, M, G suffixes).
    #[arg(short = 'C', long, value_name = "SIZE", value_parser = parse_size)]
    pub rotate_bytes: Option<u64>,
    /// Start a new file at every multiple of SECONDS of packet time (aligned, like tcpdump -G).
    #[arg(short = 'G', long, value_name = "SECONDS")]
    pub rotate_seconds: Option<u64>,
    /// Keep at most N complete files per queue, deleting the oldest.
    #[arg(short = 'W', long, value_name = "N")]
    pub rotate_files: Option<u32>,
    /// After set-up (XDP attached, sockets bound, output directories made and given to USER),
    /// run as USER with only CAP_NET_ADMIN, CAP_BPF and CAP_IPC_LOCK.
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// Keep the capture within SIZE bytes (shared evenly by the queues): the oldest complete files
    /// are deleted to make room for new data (stenographer/n2disk style recycling).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub disk_budget: Option<u64>,
    /// Write plain ERF (.erf) instead of LZ4 frames (.erf.lz4).
    #[arg(long)]
    pub no_compress: bool,
    /// Bytes of ERF records per batch (one ring slot, one LZ4 block); 64K to 4M.
    #[arg(long, value_name = "SIZE", default_value = "1M", value_parser = parse_size)]
    pub batch_bytes: u64,
    /// Batches each queue's ring holds (a power of two).
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub ring_slots: usize,
    /// Writer threads (queues are shared out among them).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub writer_threads: usize,
    /// Ring memory: try hugepages, require them, or never use them.
    #[arg(long, value_name = "POLICY", default_value = "try", value_parser = parse_hugepages)]
    pub hugepages: HugePages,
    /// Hand a partly filled batch to the writer after this many milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 100)]
    pub flush_ms: u64,
    /// Stop after this many seconds (default: when the sources end, or on SIGINT/SIGTERM).
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<f64>,
    /// XDP attach mode: auto (native, else generic), native, or generic.
    #[arg(long, value_name = "MODE", default_value = "auto", value_parser = parse_xdp_mode)]
    pub xdp_mode: AttachMode,
    /// AF_XDP RX and fill ring entries per queue (power of two); UMEM holds twice as many frames.
    #[arg(long, value_name = "N", default_value_t = 16384)]
    pub xsk_ring: u32,
    /// AF_XDP zero-copy: auto (try, fall back to copy mode), require, or off.
    #[arg(long, value_name = "POLICY", default_value = "auto", value_parser = parse_zero_copy)]
    pub zero_copy: ZeroCopy,
    /// Leave the interface's NAPI mode alone (by default linecap switches it to threaded NAPI while
    /// capturing and restores it after: measured faster on veth).
    #[arg(long)]
    pub no_threaded_napi: bool,
    /// Pin workers to these cores (worker i on the i-th, cycling), like 2-5 or 2,4,6.
    #[arg(long, value_name = "LIST", value_parser = parse_id_list)]
    pub cores: Option<IdList>,
    /// Let file sources drop (and count) frames when the ring is full, as a live NIC queue
    /// does, instead of waiting for the writer (file replay is lossless by default).
    #[arg(long)]
    pub drop_when_full: bool,
    /// Keep only frames matching this tcpdump/BPF expression (compiled by libpcap, run per frame
    /// in user space); rejected frames count as `filter` drops.
    #[arg(long, value_name = "EXPR")]
    pub filter: Option<String>,
    /// Keep a sample: N or every:N (exactly every N-th), random:P[:SEED], flows:N[:SEED] or
    /// flows-random:P[:SEED] (flow-consistent: a kept flow keeps all its frames).
    #[arg(long, value_name = "POLICY")]
    pub sample: Option<linecap_dataplane::policy::sample::SamplePolicy>,
    /// Keep the first N bytes of each frame (the wire length is kept).
    #[arg(long, value_name = "N")]
    pub snaplen: Option<u32>,
    /// Anonymise IP addresses with Crypto-PAn (prefix-preserving) using this 32-byte key file
    /// (raw or 64 hex digits; it must not be world-readable).
    #[arg(long, value_name = "FILE")]
    pub anonymize_key: Option<PathBuf>,
    /// Which addresses to anonymise: src, dst or both.
    #[arg(
        long,
        value_name = "MODE",
        default_value = "both",
        requires = "anonymize_key"
    )]
    pub anonymize: linecap_dataplane::policy::anon::AnonMode,
    /// Replace unicast MAC addresses by keyed pseudonyms, stable for this 32-byte deployment key
    /// (raw or 64 hex digits, not world-readable) and unlinkable across keys.
    #[arg(long, value_name = "FILE")]
    pub mac_key: Option<PathBuf>,
    /// Track flows in each worker's own table (also implied by any export flag).
    #[arg(long)]
    pub flows: bool,
    /// Flow table size, timeouts and exporters (with --flows).
    #[command(flatten)]
    pub flow: crate::flows::FlowOptions,
    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics: Option<std::net::SocketAddr>,
    /// Serve no metrics.
    #[arg(long, conflicts_with = "metrics")]
    pub no_metrics: bool,
    /// Allow --metrics on a non-loopback address (the endpoint has no authentication).
    #[arg(long)]
    pub metrics_allow_remote: bool,
    /// After a capture that ends by itself (a file replay), keep serving the final metrics this
    /// many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 0.0)]
    pub metrics_hold: f64,
    /// Also write the final accounting as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub report_json: Option<PathBuf>,
    /// Fault injection (tests, drills): the writer sleeps MS milliseconds after every batch, as
    /// on a slow disk, so ring-full drops and lctr can be watched. Hidden from --help.
    #[arg(long, value_name = "MS", hide = true)]
    pub fault_writer_delay_ms: Option<f64>,
    /// DPDK settings (dpdk: sources).
    #[command(flatten)]
    pub dpdk: crate::dpdksource::DpdkArgs,
    /// Control API settings.
    #[command(flatten)]
    pub api: crate::api::ApiArgs,
}

#[derive(Args, Debug)]
#[command(after_help = "\
INPUTS are files or directories. A directory is searched for capture files; the files of one
linecap queue are read in sequence and queues are merged by timestamp. Files cut short (a crash,
a full disk) are read to their last complete record; the bytes left over are reported.

EXAMPLES:
  linecap read /data/cap -w all.pcap
  linecap read /data/cap/q00 --stats
  linecap read /data/cap --include-partial -w everything.pcapng --format pcapng")]
pub struct ReadArgs {
    /// Capture files or directories.
    #[arg(required = true, value_name = "INPUT")]
    pub inputs: Vec<PathBuf>,
    /// Write the merged packets to this file.
    #[arg(short = 'w', long, value_name = "OUT")]
    pub write: Option<PathBuf>,
    /// Output format: pcap (nanosecond), pcapng or erf.
    #[arg(short = 'F', long, default_value = "pcap")]
    pub format: linecap_reader::output::OutFormat,
    /// Print per-file and total counts.
    #[arg(long)]
    pub stats: bool,
    /// Also read hidden partial files (.NAME.part) found in directories.
    #[arg(long)]
    pub include_partial: bool,
}

#[derive(Args, Debug)]
pub struct AnonymizeArgs {
    /// The Crypto-PAn key file used for the capture.
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
}

/// `linecap anonymize`: stdin addresses → anonymised addresses on stdout;
/// exit 1 if a line is not an address (it is reported, the rest go on).
pub fn anonymize(a: AnonymizeArgs) -> anyhow::Result<i32> {
    use std::io::{BufRead, Write};
    let key = linecap_dataplane::policy::cryptopan::load_key(&a.key)
        .map_err(|e| anyhow::anyhow!("--key {}: {e}", a.key.display()))?;
    let mut pan = linecap_dataplane::policy::cryptopan::CryptoPan::new(&key);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut bad = 0;
    for (n, line) in std::io::stdin().lock().lines().enumerate() {
        let line = line?;
        let t = line.trim();
        if t.is_empty() {
            continue;
        }
        match t.parse::<std::net::IpAddr>() {
            Ok(ip) => writeln!(out, "{}", pan.anonymize_ip(ip))?,
            Err(_) => {
                eprintln!(
                    "linecap: line {}: {t:?} is not an IPv4 or IPv6 address",
                    n + 1
                );
                bad += 1;
            }
        }
    }
    out.flush()?;
    Ok(i32::from(bad > 0))
}

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Where to put the demo capture.
    #[arg(long, value_name = "DIR", default_value = "linecap-demo")]
    pub out: PathBuf,
}

/// `123`, `64K`, `100M`, `2G` (powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(format!("unknown size suffix {c:?} (use K, M, G or T)")),
            };
            (&s[..i], m)
        }
        _ => (s, 1),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (examples: 4096, 64K, 100M, 2G)"))?;
    n.checked_mul(mult)
        .filter(|&v| v > 0)
        .ok_or_else(|| format!("size {s:?} must be above 0 and fit in 64 bits"))
}

fn parse_xdp_mode(s: &str) -> Result<AttachMode, String> {
    match s {
        "auto" => Ok(AttachMode::Auto),
        "native" | "drv" => Ok(AttachMode::Native),
        "generic" | "skb" => Ok(AttachMode::Generic),
        _ => Err(format!("{s:?}: expected auto, native or generic")),
    }
}

fn parse_zero_copy(s: &str) -> Result<ZeroCopy, String> {
    match s {
        "auto" => Ok(ZeroCopy::Auto),
        "require" => Ok(ZeroCopy::Require),
        "off" => Ok(ZeroCopy::Off),
        _ => Err(format!("{s:?}: expected auto, require or off")),
    }
}

/// A list of ids given as one flag value (clap would read a bare `Vec` as repeated flags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdList(pub Vec<u32>);

fn parse_id_list(s: &str) -> Result<IdList, String> {
    parse_list(s).map(IdList)
}

/// `3`, `0-3`, `0,2,5-7` → sorted, deduplicated numbers.
pub fn parse_list(s: &str) -> Result<Vec<u32>, String> {
    let mut v = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        let bad = || format!("{part:?} in {s:?}: expected N or N-M (like 0-3 or 0,2,5)");
        match part.split_once('-') {
            Some((a, b)) => {
                let a: u32 = a.parse().map_err(|_| bad())?;
                let b: u32 = b.parse().map_err(|_| bad())?;
                if a > b || b - a > 4096 {
                    return Err(bad());
                }
                v.extend(a..=b);
            }
            None => v.push(part.parse().map_err(|_| bad())?),
        }
    }
    v.sort();
    v.dedup();
    Ok(v)
}

fn parse_hugepages(s: &str) -> Result<HugePages, String> {
    match s {
        "try" => Ok(HugePages::Try),
        "require" => Ok(HugePages::Require),
        "never" => Ok(HugePages::Never),
        _ => Err(format!("{s:?}: expected try, require or never")),
    }
}

/// Parse a `--source` value.
pub fn parse_source(spec: &str) -> anyhow::Result<SourceSpec> {
    if let Some(path) = spec.strip_prefix("file:") {
        anyhow::ensure!(!path.is_empty(), "source {spec:?}: file: needs a path");
        return Ok(SourceSpec::File(PathBuf::from(path)));
    }
    if let Some(rest) = spec.strip_prefix("synth:") {
        let parts: Vec<&str> = rest.split(':').collect();
        anyhow::ensure!(
            (1..=4).contains(&parts.len()),
            "source {spec:?}: expected synth:SIZE[:FLOWS[:COUNT[:PPS]]]"
        );
        let num = |i: usize, what: &str| -> anyhow::Result<Option<u64>> {
            parts
                .get(i)
                .filter(|p| **p != "-")
                .map(|p| {
                    p.parse::<u64>()
                        .with_context(|| format!("source {spec:?}: {what} {p:?} is not a number"))
                })
                .transpose()
        };
        return Ok(SourceSpec::Synthetic(SyntheticConfig {
            frame_len: num(0, "SIZE")?.unwrap_or(0) as usize,
            flows: num(1, "FLOWS")?.unwrap_or(1).min(u32::MAX as u64) as u32,
            count: num(2, "COUNT")?,
            pps: num(3, "PPS")?,
        }));
    }
    if let Some(rest) = spec.strip_prefix("afxdp:") {
        let (ifname, queues) = match rest.split_once(':') {
            Some((i, q)) => (i, Some(parse_list(q).map_err(anyhow::Error::msg)?)),
            None => (rest, None),
        };
        anyhow::ensure!(
            !ifname.is_empty() && ifname.len() < 16,
            "source {spec:?}: afxdp: needs an interface name (at most 15 characters)"
        );
        return Ok(SourceSpec::AfXdp {
            ifname: ifname.into(),
            queues,
        });
    }
    if let Some(dev) = spec.strip_prefix("dpdk:") {
        return Ok(SourceSpec::Dpdk(crate::dpdksource::DpdkSpec::parse(dev)?));
    }
    bail!(
        "source {spec:?}: expected afxdp:IFACE[:QUEUES], dpdk:DEVICE, file:PATH or synth:SIZE[:FLOWS[:COUNT]]"
    )
}

/// Validate the flags into a [`CaptureConfig`].
pub fn capture_config(a: &CaptureArgs) -> anyhow::Result<CaptureConfig> {
    let mut sources = a
        .sources
        .iter()
        .map(|s| parse_source(s))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for s in &mut sources {
        if let SourceSpec::Dpdk(d) = s {
            d.apply(&a.dpdk)?;
        }
    }
    let batch_bytes = usize::try_from(a.batch_bytes).context("--batch-bytes too large")?;
    anyhow::ensure!(
        batch_bytes >= 64 << 10,
        "--batch-bytes must be at least 64K (one ERF record can be 64 KiB), got {batch_bytes}"
    );
    anyhow::ensure!(
        batch_bytes <= 4 << 20,
        "--batch-bytes must be at most 4M (one LZ4 block), got {batch_bytes}"
    );
    anyhow::ensure!(
        a.ring_slots >= 2 && a.ring_slots.is_power_of_two(),
        "--ring-slots must be a power of two >= 2, got {}",
        a.ring_slots
    );
    anyhow::ensure!(
        (1..=64).contains(&a.writer_threads),
        "--writer-threads must be 1..=64, got {}",
        a.writer_threads
    );
    anyhow::ensure!(
        a.rotate_seconds != Some(0),
        "--rotate-seconds must be at least 1"
    );
    anyhow::ensure!(
        a.xsk_ring.is_power_of_two() && (64..=(1 << 20)).contains(&a.xsk_ring),
        "--xsk-ring must be a power of two from 64 to 1048576, got {}",
        a.xsk_ring
    );
    if let Some(cores) = &a.cores {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
        if let Some(c) = cores.0.iter().find(|&&c| c >= n) {
            bail!("--cores: core {c} does not exist (this machine has {n})");
        }
    }
    anyhow::ensure!(
        a.rotate_files != Some(0),
        "--rotate-files must be at least 1"
    );
    if let Some(g) = a.rotate_seconds {
        anyhow::ensure!(
            g <= 100 * 365 * 86_400,
            "--rotate-seconds {g} is out of range (at most 100 years)"
        );
    }
    anyhow::ensure!(
        (1..=256).contains(&a.spread),
        "--spread must be 1..=256, got {}",
        a.spread
    );
    let duration = a
        .duration
        .map(|d| {
            anyhow::ensure!(
                d.is_finite() && d > 0.0,
                "--duration must be a positive number of seconds"
            );
            Duration::try_from_secs_f64(d)
                .map_err(|_| anyhow::anyhow!("--duration {d} is out of range"))
        })
        .transpose()?;
    let mut jobs = Vec::new();
    if let Some(out) = &a.out {
        let main = JobSpec {
            name: "main".into(),
            out: out.clone(),
            filter: a.filter.clone(),
            sample: a.sample,
            snaplen: a.snaplen,
            anonymize_key: a.anonymize_key.clone(),
            anonymize: Some(a.anonymize),
            mac_key: a.mac_key.clone(),
        };
        jobs.push(main.config("")?);
    } else if a.filter.is_some()
        || a.sample.is_some()
        || a.snaplen.is_some()
        || a.anonymize_key.is_some()
        || a.mac_key.is_some()
    {
        bail!(
            "--filter, --sample, --snaplen, --anonymize-key and --mac-key set the policies of the \
             main job (--out), and there is none: give them inside --job (like \
             --job 'dns:/data/dns;filter=udp port 53')"
        );
    }
    for j in &a.jobs {
        jobs.push(j.config(&format!("--job {}: ", j.name))?);
    }
    crate::pipeline::validate_jobs(&jobs)?;
    let (api, max_jobs) = a.api.config(jobs.len(), &jobs[0].out)?;
    // The flow tables see what the first job keeps: its sampling rate goes
    // into every flow record.
    let flow_sampling = jobs[0].policies.sample.map(|s| s.rate());
    if let Some(u) = &a.user {
        crate::privileges::resolve_user(u).map_err(|e| anyhow::anyhow!("--user: {e:#}"))?;
    }
    Ok(CaptureConfig {
        api,
        max_jobs,
        user: a.user.clone(),
        disk_budget: a.disk_budget,
        writer_delay: a
            .fault_writer_delay_ms
            .map(|ms| Duration::from_secs_f64(ms.clamp(0.0, 10_000.0) / 1000.0)),
        jobs,
        sources,
        spread: a.spread,
        rotate_bytes: a.rotate_bytes,
        rotate_seconds: a.rotate_seconds,
        rotate_files: a.rotate_files,
        compress: !a.no_compress,
        batch_bytes,
        ring_slots: a.ring_slots,
        writer_threads: a.writer_threads,
        hugepages: a.hugepages,
        flush_ns: a.flush_ms.saturating_mul(1_000_000),
        duration,
        drop_when_full: a.drop_when_full,
        xdp: XdpOptions {
            mode: a.xdp_mode,
            ring_entries: a.xsk_ring,
            zero_copy: a.zero_copy,
            threaded_napi: !a.no_threaded_napi,
        },
        metrics: if a.no_metrics {
            None
        } else {
            let addr = a
                .metrics
                .unwrap_or(std::net::SocketAddr::from(([127, 0, 0, 1], 9464)));
            anyhow::ensure!(
                addr.ip().is_loopback() || a.metrics_allow_remote,
                "--metrics {addr}: not a loopback address; the endpoint has no authentication, \
                 give --metrics-allow-remote to serve it there anyway"
            );
            anyhow::ensure!(
                a.metrics_hold.is_finite() && (0.0..=3600.0).contains(&a.metrics_hold),
                "--metrics-hold must be 0 to 3600 seconds"
            );
            Some(crate::pipeline::MetricsConfig {
                addr,
                required: a.metrics.is_some(),
                hold: Duration::from_secs_f64(a.metrics_hold),
            })
        },
        flows: if a.flows || a.flow.exports() {
            Some(crate::pipeline::FlowConfig {
                capacity: a.flow.capacity,
                timeouts: a.flow.timeouts()?,
                export: crate::export::ExportConfig {
                    sampling_rate: flow_sampling,
                    ..a.flow.export_config(1 << 16)
                },
            })
        } else {
            None
        },
        cores: a
            .cores
            .clone()
            .map(|l| l.0)
            .unwrap_or_default()
            .into_iter()
            .map(|c| c as usize)
            .collect(),
    })
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

/// One `--job` (or `[[job]]` of a profile) as given: the policies are
/// checked and loaded by [`JobSpec::config`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobSpec {
    /// Job name.
    pub name: String,
    /// Output directory.
    pub out: PathBuf,
    /// tcpdump-syntax filter.
    pub filter: Option<String>,
    /// Sampling policy.
    pub sample: Option<linecap_dataplane::policy::sample::SamplePolicy>,
    /// Bytes kept per frame.
    pub snaplen: Option<u32>,
    /// Crypto-PAn key file.
    pub anonymize_key: Option<PathBuf>,
    /// Which addresses to anonymise (default both).
    pub anonymize: Option<linecap_dataplane::policy::anon::AnonMode>,
    /// MAC pseudonym key file.
    pub mac_key: Option<PathBuf>,
}

impl std::str::FromStr for JobSpec {
    type Err = String;
    /// `NAME:DIR[;KEY=VALUE]...` with keys filter, sample, snaplen,
    /// anonymize-key, anonymize, mac-key (`;` separates: filter expressions
    /// hold spaces, never `;`).
    fn from_str(s: &str) -> Result<Self, String> {
        let mut parts = s.split(';');
        let head = parts.next().unwrap_or_default().trim();
        let (name, out) = head
            .split_once(':')
            .filter(|(n, o)| !n.trim().is_empty() && !o.trim().is_empty())
            .ok_or_else(|| {
                format!("{s:?}: expected NAME:DIR[;KEY=VALUE]... (like 'dns:/data/dns;filter=udp port 53')")
            })?;
        let mut j = JobSpec {
            name: name.trim().into(),
            out: PathBuf::from(out.trim()),
            ..JobSpec::default()
        };
        for kv in parts.map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = kv
                .split_once('=')
                .map(|(k, v)| (k.trim(), v.trim()))
                .ok_or_else(|| format!("{kv:?}: expected KEY=VALUE"))?;
            let dup = |set: bool| {
                if set {
                    Err(format!("{k} given twice"))
                } else {
                    Ok(())
                }
            };
            match k {
                "filter" => {
                    dup(j.filter.is_some())?;
                    j.filter = Some(v.into());
                }
                "sample" => {
                    dup(j.sample.is_some())?;
                    j.sample = Some(v.parse().map_err(|e| format!("sample={v}: {e}"))?);
                }
                "snaplen" => {
                    dup(j.snaplen.is_some())?;
                    j.snaplen = Some(
                        v.parse()
                            .map_err(|_| format!("snaplen={v}: not a number of bytes"))?,
                    );
                }
                "anonymize-key" => {
                    dup(j.anonymize_key.is_some())?;
                    j.anonymize_key = Some(v.into());
                }
                "anonymize" => {
                    dup(j.anonymize.is_some())?;
                    j.anonymize = Some(v.parse()?);
                }
                "mac-key" => {
                    dup(j.mac_key.is_some())?;
                    j.mac_key = Some(v.into());
                }
                _ => {
                    return Err(format!(
                        "unknown job key {k:?}: expected filter, sample, snaplen, anonymize-key, \
                         anonymize or mac-key"
                    ));
                }
            }
        }
        if j.anonymize.is_some() && j.anonymize_key.is_none() {
            return Err("anonymize=MODE needs anonymize-key=FILE".into());
        }
        Ok(j)
    }
}

impl JobSpec {
    /// Load the keys, compile the filter, check the policies; errors start
    /// with `ctx` (which job or flag).
    pub fn config(&self, ctx: &str) -> anyhow::Result<crate::pipeline::JobConfig> {
        use linecap_dataplane::policy::{anon::AnonMode, cryptopan::load_key};
        let anonymize = match &self.anonymize_key {
            Some(p) => Some((
                load_key(p)
                    .map_err(|e| anyhow::anyhow!("{ctx}anonymize key {}: {e}", p.display()))?,
                self.anonymize.unwrap_or(AnonMode::Both),
            )),
            None => None,
        };
        let mac_key = match &self.mac_key {
            Some(p) => Some(
                load_key(p).map_err(|e| anyhow::anyhow!("{ctx}MAC key {}: {e}", p.display()))?,
            ),
            None => None,
        };
        let job = crate::pipeline::JobConfig {
            name: self.name.clone(),
            out: self.out.clone(),
            policies: crate::pipeline::PolicyConfig {
                filter: self.filter.clone(),
                sample: self.sample,
                snaplen: self.snaplen,
                anonymize,
                mac_key,
            },
        };
        // Compile once here so a bad expression or sampling policy is
        // reported before anything starts, with libpcap's own message.
        job.policies
            .build()
            .map_err(|e| anyhow::anyhow!("{ctx}{e:#}"))?;
        Ok(job)
    }
}

/// `linecap capture`.
pub fn capture(mut a: CaptureArgs) -> anyhow::Result<i32> {
    let profile = crate::profile::apply_profile(&mut a)?;
    if a.user.is_none() {
        a.user = profile.as_ref().and_then(|p| p.host.user.clone());
    }
    let cfg = capture_config(&a)?;
    let signals = stop_on_signals()?;
    let report = run_capture(&cfg, &signals);
    // Every queue is closed by now (the ports with them): end DPDK here, on
    // the main thread, whether the capture succeeded or not.
    crate::dpdksource::shutdown();
    let report = report?;
    summary::print(&report);
    if let Some(p) = &a.report_json {
        let json = serde_json::to_vec_pretty(&summary::to_json(&report))?;
        std::fs::write(p, json).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(summary::exit_code(&report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(65536));
        assert_eq!(parse_size("100m"), Ok(100 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert!(parse_size("0").is_err());
        assert!(parse_size("12X").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn sources() {
        assert_eq!(
            parse_source("file:/x.pcap").unwrap(),
            SourceSpec::File("/x.pcap".into())
        );
        assert_eq!(
            parse_source("synth:64:10:5").unwrap(),
            SourceSpec::Synthetic(SyntheticConfig {
                frame_len: 64,
                flows: 10,
                count: Some(5),
                pps: None,
            })
        );
        assert_eq!(
            parse_source("afxdp:veth0:0-2,5").unwrap(),
            SourceSpec::AfXdp {
                ifname: "veth0".into(),
                queues: Some(vec![0, 1, 2, 5])
            }
        );
        assert_eq!(
            parse_source("afxdp:eth1").unwrap(),
            SourceSpec::AfXdp {
                ifname: "eth1".into(),
                queues: None
            }
        );
        for bad in [
            "file:",
            "synth:",
            "synth:a",
            "synth:1:2:3:4:5",
            "eth0",
            "afxdp:",
            "afxdp:eth0:x",
            "afxdp:eth0:3-1",
            "afxdp:aaaaaaaaaaaaaaaaaaaa",
            "dpdk:",
            "dpdk:eth0",
        ] {
            assert!(parse_source(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_flags_are_rejected_with_the_flag_named() {
        let base = ["linecap", "capture", "--source", "file:x", "--out", "o"];
        let parse = |extra: &[&str]| {
            let mut v: Vec<&str> = base.to_vec();
            v.extend_from_slice(extra);
            match Cli::try_parse_from(v) {
                Ok(Cli {
                    command: Command::Capture(a),
                }) => capture_config(&a).map(|_| ()).map_err(|e| e.to_string()),
                Ok(_) => unreachable!(),
                Err(e) => Err(e.to_string()),
            }
        };
        assert!(parse(&[]).is_ok());
        for (extra, word) in [
            (&["--ring-slots", "3"][..], "--ring-slots"),
            (&["--batch-bytes", "1K"][..], "--batch-bytes"),
            (&["--writer-threads", "0"][..], "--writer-threads"),
            (&["-G", "0"][..], "--rotate-seconds"),
            (&["-W", "0"][..], "--rotate-files"),
            (&["--hugepages", "maybe"][..], "--hugepages"),
            (&["--duration", "0"][..], "--duration"),
            (&["--duration", "1e30"][..], "--duration"),
            (&["-G", "20000000000"][..], "--rotate-seconds"),
            (&["--xsk-ring", "1000"][..], "--xsk-ring"),
            (&["--xdp-mode", "fast"][..], "--xdp-mode"),
            (&["--cores", "9999"][..], "--cores"),
            (&["--metrics", "0.0.0.0:9464"][..], "--metrics"),
            (&["--metrics-hold", "99999"][..], "--metrics-hold"),
        ] {
            let err = parse(extra).expect_err(&format!("{extra:?} must be rejected"));
            assert!(err.contains(word), "{extra:?}: {err}");
        }
    }
}

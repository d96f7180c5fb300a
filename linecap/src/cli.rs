//! Command-line interface: the clap definitions and nothing else. What the
//! flags mean is `crate::config` (layering over a profile, validation into
//! the one `CaptureConfig`); the commands themselves are `crate::commands`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use linecap_dataplane::afxdp::{AttachMode, XdpTimestamps, ZeroCopy};
use linecap_dataplane::ring::HugePages;

use crate::source::{DpdkArgs, SourceSpec};
use crate::values::{
    IdList, IndexList, JobSpec, parse_buffer_size, parse_file_size, parse_hugepages, parse_id_list,
    parse_index_list, parse_size, parse_xdp_mode, parse_xdp_timestamps, parse_zero_copy,
};

/// Kernel-bypass packet capture to rotating ERF+LZ4 files, with exact loss accounting.
#[derive(Parser, Debug)]
#[command(name = "linecap", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub log: crate::logging::LogArgs,
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
    CheckHost(CheckHostArgs),
    /// Find packets by time and tcpdump expression through the per-file indexes.
    Query(crate::query::QueryArgs),
    /// Build missing or damaged per-file indexes (NAME.idx) of capture directories.
    Index(crate::query::IndexArgs),
    /// Check the shipping destination (`--test`: put, read back, delete a probe object).
    Ship(crate::ship::ShipCmdArgs),
    /// Run processors (flows, hosts, dns) incrementally over capture directories into partitioned Parquet.
    Process(crate::process::ProcessArgs),
    /// Talk to a running capture's control API: status, jobs, add and stop jobs.
    Ctl(crate::ctl::CtlArgs),
}

#[derive(Args, Debug)]
#[command(
    override_usage = "linecap capture -i IFACE -w DIR [OPTIONS] [EXPRESSION]...\n       \
                      linecap capture --profile FILE [OPTIONS] [EXPRESSION]...",
    before_help = "\
EXAMPLES (tcpdump habits work):
  sudo linecap capture -i ens1f0 -w /data/cap                    everything, AF_XDP, all queues
  sudo linecap capture -i ens1f0 -w /data/dns -s 256 udp port 53  a filter, 256 bytes a frame
  sudo linecap capture -i ens1f0 -w /data/cap -C 1000 -W 50 -c 1000000
                                      1000 MB files, keep 50 per queue, stop after 1M frames",
    after_help = "\
SOURCES (-i / --source):
  IFACE                     -i only: an interface's receive queues by AF_XDP (as afxdp:IFACE)
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
  linecap capture -i ens1f0 --cores 2-9 -w /data/cap -C 1G -W 1000
  linecap capture --profile hw-profiles/probe-10g.toml tcp port 443
  linecap capture --source file:trace.pcap --out /data/cap
  linecap capture --source file:trace.pcap --spread 4 --out /data/cap -C 100M -G 60 -W 48
  linecap capture -i synth:64:1000:10000000 -w /tmp/cap --no-compress
  linecap capture --source afxdp:ens1f0 --out /data/all --snaplen 128 \\
      --job 'dns:/data/dns;filter=udp port 53' --job 'sampled:/data/s;sample=flows:100;anonymize-key=/etc/linecap/pan.key'"
)]
pub struct CaptureArgs {
    /// Capture from IFACE's receive queues by AF_XDP (needs root), or from any SOURCE form:
    /// dpdk:DEV, file:PATH, synth:… (repeatable; see SOURCES).
    #[arg(
        short = 'i',
        long = "interface",
        value_name = "IFACE",
        required_unless_present_any = ["profile", "sources"]
    )]
    pub interfaces: Vec<String>,
    /// Output directory of the main capture job (created if missing). Give it again for more
    /// disks: queues are spread round robin over the directories (or as --queue-dirs says).
    #[arg(
        short = 'w',
        long,
        visible_short_alias = 'o',
        value_name = "DIR",
        required_unless_present_any = ["profile", "jobs"]
    )]
    pub out: Vec<PathBuf>,
    /// Keep the first SNAPLEN bytes of each frame (the wire length is kept); 0: the whole frame.
    #[arg(
        short = 's',
        long,
        value_name = "SNAPLEN",
        allow_negative_numbers = true
    )]
    pub snaplen: Option<u32>,
    /// Stop after COUNT frames were received, over all queues together and before any filter
    /// (tcpdump counts after its filter). The capture then ends as on SIGINT; frames a live NIC
    /// had already delivered are counted as `after_count` drops, so every frame is accounted for.
    #[arg(short = 'c', long, value_name = "COUNT", allow_negative_numbers = true)]
    pub count: Option<u64>,
    /// Start a new file once the current one holds FILE_SIZE: millions of bytes as in tcpdump
    /// (-C 100 = 100,000,000 bytes), or with a K/M/G suffix (powers of 1024).
    #[arg(
        short = 'C',
        long,
        value_name = "FILE_SIZE",
        value_parser = parse_file_size,
        allow_negative_numbers = true,
        conflicts_with = "rotate_bytes"
    )]
    pub file_size: Option<u64>,
    /// Start a new file at every multiple of SECONDS of packet time (aligned, like tcpdump -G).
    #[arg(
        short = 'G',
        long,
        value_name = "SECONDS",
        allow_negative_numbers = true
    )]
    pub rotate_seconds: Option<u64>,
    /// Keep at most N complete files per queue, deleting the oldest.
    #[arg(short = 'W', long, value_name = "N", allow_negative_numbers = true)]
    pub rotate_files: Option<u32>,
    /// After set-up (XDP attached, sockets bound, output directories made and given to USER),
    /// run as USER with only CAP_NET_ADMIN, CAP_BPF and CAP_IPC_LOCK.
    #[arg(short = 'Z', long, value_name = "USER")]
    pub user: Option<String>,
    /// Ring buffer of each queue: KiB as in tcpdump (-B 65536 = 64 MiB), or with a K/M/G
    /// suffix; it holds BUFFER_SIZE / --batch-bytes batches (rounded down to a power of two).
    #[arg(
        short = 'B',
        long,
        value_name = "BUFFER_SIZE",
        value_parser = parse_buffer_size,
        allow_negative_numbers = true,
        conflicts_with = "ring_slots"
    )]
    pub buffer_size: Option<u64>,
    /// Keep only frames matching this tcpdump/BPF expression (the same as --filter).
    #[arg(
        value_name = "EXPRESSION",
        trailing_var_arg = true,
        conflicts_with = "filter"
    )]
    pub expression: Vec<String>,
    /// Hardware profile (hw-profiles/*.toml): its values are the defaults, flags given here win.
    #[arg(long, value_name = "FILE")]
    pub profile: Option<PathBuf>,
    /// Where frames come from (repeatable; see SOURCES).
    #[arg(long = "source", value_name = "SPEC")]
    pub sources: Vec<String>,
    /// Sources a profile gave (typed; not a flag).
    #[arg(skip)]
    pub profile_sources: Vec<SourceSpec>,
    /// With several output directories: queue i writes into directory LIST[i] (0-based, in
    /// the order given), like 0,1,0,1; default round robin.
    #[arg(long, value_name = "LIST", value_parser = parse_index_list)]
    pub queue_dirs: Option<IndexList>,
    /// Whether the batch size was chosen (a flag or a profile) rather than defaulted; set by
    /// `config::layer` (not a flag).
    #[arg(skip)]
    pub batch_bytes_given: bool,
    /// Another capture job on the same queues (repeatable; see JOBS): NAME:DIR then
    /// ;filter=EXPR ;sample=POLICY ;snaplen=N ;anonymize-key=FILE ;anonymize=MODE ;mac-key=FILE.
    #[arg(long = "job", value_name = "SPEC")]
    pub jobs: Vec<JobSpec>,
    /// Spread each file source over N queues by symmetric flow hash, as RSS spreads a link.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub spread: u32,
    /// Start a new file once the current one holds SIZE bytes (K, M, G suffixes; a bare number
    /// is bytes). See also -C.
    #[arg(long, value_name = "SIZE", value_parser = parse_size, allow_negative_numbers = true)]
    pub rotate_bytes: Option<u64>,
    /// Keep each output directory within SIZE bytes (shared evenly by the jobs and queues
    /// writing into it): the oldest complete files are deleted to make room for new data
    /// (stenographer/n2disk style recycling).
    #[arg(long, value_name = "SIZE", value_parser = parse_size, allow_negative_numbers = true)]
    pub disk_budget: Option<u64>,
    /// Write plain ERF (.erf) instead of LZ4 frames (.erf.lz4).
    #[arg(long)]
    pub no_compress: bool,
    /// Write each batch with O_DIRECT, past the page cache: one aligned write per batch from
    /// the file's last 4 KiB block, padded with zeros that the next batch overwrites and the
    /// close cuts. Checked at start on every output directory (tmpfs before Linux 6.6 refuses
    /// it). Measured faster than buffered writes with a sync at each file's end on this
    /// project's VMs, not on every disk: see docs/benchmarks.md.
    #[arg(long)]
    pub direct_io: bool,
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
    /// XDP timestamps: auto (in native mode the device-bound program, which takes the NIC's RX
    /// hardware stamp where the driver gives one and bpf_ktime_get_ns() otherwise, falling back to
    /// the ktime-only program if it cannot load; generic mode: ktime), hardware (the device-bound
    /// program or fail), or ktime (bpf_ktime_get_ns() only). On a kernel that refuses XDP metadata
    /// (bpf_xdp_adjust_meta) auto and ktime run a program without it and stamp each frame in user
    /// space as it is received, saying so at start and in the report.
    #[arg(long, value_name = "MODE", default_value = "auto", value_parser = parse_xdp_timestamps)]
    pub xdp_timestamps: XdpTimestamps,
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
    /// Run the writer, flow exporter and metrics threads on these cores (not the workers'),
    /// like 0-1.
    #[arg(long, value_name = "LIST", value_parser = parse_id_list)]
    pub housekeeping_cores: Option<IdList>,
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
    pub dpdk: DpdkArgs,
    /// Shipping completed files (S3, post-rotate command).
    #[command(flatten)]
    pub ship: crate::ship::ShipArgs,
    /// Control API settings.
    #[command(flatten)]
    pub api: crate::apiconfig::ApiArgs,
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
    /// Capture files or directories, then optionally a tcpdump filter expression.
    #[arg(required = true, value_name = "INPUT... [EXPR]")]
    pub inputs: Vec<PathBuf>,
    /// Only packets at or after this time (RFC 3339, epoch seconds, '15m ago').
    #[arg(long, value_name = "T")]
    pub after: Option<String>,
    /// Only packets before this time.
    #[arg(long, value_name = "T")]
    pub before: Option<String>,
    /// Write the merged packets to this file (`-` = standard output).
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

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Where to put the demo capture.
    #[arg(long, value_name = "DIR", default_value = "linecap-demo")]
    pub out: PathBuf,
}

/// `linecap check-host`.
#[derive(Args, Debug)]
#[command(after_help = "\
Exit status: 0 when every check holds, 1 when one fails, 2 for a bad profile (the key is named).

EXAMPLES:
  linecap check-host --profile hw-profiles/probe-40g.toml
  linecap check-host --profile hw-profiles/dev-veth.toml --no-write-test")]
pub struct CheckHostArgs {
    /// The host's profile (hw-profiles/*.toml).
    #[arg(long, value_name = "FILE")]
    pub profile: PathBuf,
    /// Skip the sequential write test of the output directories.
    #[arg(long)]
    pub no_write_test: bool,
    /// Read /sys, /proc and /etc under this directory instead of / (for tests).
    #[arg(long, value_name = "DIR", default_value = "/", hide = true)]
    pub root: PathBuf,
}

//! `linecap flows`: the flow meter over capture files, offline.
//!
//! The same `dataplane::flowtable::FlowTable` the capture workers use, fed
//! with the files' packets in time order (files of one linecap queue in
//! sequence, other files and queues merged by timestamp). `--spread N` runs N
//! tables and gives each frame to one by symmetric flow hash, as N queues
//! behind a symmetric RSS key would see the link.
//!
//! Bytes convention: a flow's bytes are the frames' wire length. For pcap and
//! pcapng that is `orig_len` (FCS not included). ERF's `wlen` counts the
//! 4-byte Ethernet FCS, and the reader reports `wlen − 4`; `--erf-fcs-bytes`
//! (default 4) is added back per ERF frame so the bytes equal `wlen`, as
//! tshark counts them in the reference flow tables. Give 0 to count ERF
//! frames without FCS, as pcap does.

use std::io::{self, BufWriter, Write};
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};
use linecap_dataplane::applabel;
use linecap_dataplane::flowtable::{A_TO_B, B_TO_A, FlowCounters, FlowRecord, FlowTable, Timeouts};
use linecap_reader::merge::plan;
use linecap_reader::read::{CaptureReader, Format, Packet};
use linecap_wire::applabel::Method;
use linecap_wire::flow::{IpFamily, Parsed, parse_frame, symmetric_hash};

use linecap_flowexport::{ExportConfig, Exporter, FlowProducer};

/// Output of `linecap flows`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FlowsFormat {
    /// An aligned table, initiator first.
    Table,
    /// The column layout of the reference flow tables (shared/reference/flows).
    Tsv,
    /// No flow listing (export only).
    None,
}

#[derive(Args, Debug)]
#[command(after_help = "\
Each flow record is printed when it ends (timeout, TCP end, eviction, or the end of the input).

EXAMPLES:
  linecap flows trace.pcap
  linecap flows /data/cap --format tsv > flows.tsv
  linecap flows trace.pcap --format none --ipfix 127.0.0.1:4739 --parquet /data/flowlogs
  linecap flows trace.pcap --format tsv --idle-timeout 1e9 --active-timeout 1e9 --linger 1e9")]
pub struct FlowsArgs {
    /// Capture files or directories (pcap, pcapng, ERF; plain or LZ4).
    #[arg(required = true, value_name = "INPUT")]
    pub inputs: Vec<PathBuf>,
    /// Listing format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: FlowsFormat,
    /// Flow table size, timeouts and exporters.
    #[command(flatten)]
    pub flow: FlowOptions,
    /// Spread frames over N tables by symmetric flow hash (as N RSS queues would).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub spread: u32,
    /// Bytes added to each ERF frame's wire length (ERF wlen counts the FCS; see docs).
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub erf_fcs_bytes: u32,
    /// Also read hidden partial files (.NAME.part) found in directories.
    #[arg(long)]
    pub include_partial: bool,
}

/// Flow-table and export settings shared by `linecap flows` and `linecap capture`.
#[derive(Args, Debug, Clone)]
pub struct FlowOptions {
    /// Seconds without a packet after which a flow ends.
    #[arg(long, value_name = "SECONDS", default_value_t = 60.0)]
    pub idle_timeout: f64,
    /// Seconds after which a long flow is exported (it continues as a new record).
    #[arg(long, value_name = "SECONDS", default_value_t = 300.0)]
    pub active_timeout: f64,
    /// Seconds a TCP flow lingers after RST or FIN in both directions.
    #[arg(long, value_name = "SECONDS", default_value_t = 2.0)]
    pub linger: f64,
    /// Flow table slots per table/queue (a power of two).
    #[arg(long = "flow-capacity", visible_alias = "capacity", value_name = "N", default_value_t = 1 << 20)]
    pub capacity: usize,
    /// Export IPFIX over UDP to this collector (e.g. 127.0.0.1:4739).
    #[arg(long, value_name = "ADDR:PORT")]
    pub ipfix: Option<SocketAddr>,
    /// Write IPFIX messages to this file.
    #[arg(long, value_name = "PATH")]
    pub ipfix_file: Option<PathBuf>,
    /// Seconds between IPFIX template re-sends.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub ipfix_template_refresh: u32,
    /// Write Parquet flow logs under DIR (date=YYYY-MM-DD/hour=HH/).
    #[arg(long, value_name = "DIR")]
    pub parquet: Option<PathBuf>,
}

impl FlowOptions {
    /// The timeouts, validated.
    pub fn timeouts(&self) -> anyhow::Result<Timeouts> {
        Ok(Timeouts {
            idle_ns: seconds_ns(self.idle_timeout, "--idle-timeout")?,
            active_ns: seconds_ns(self.active_timeout, "--active-timeout")?,
            linger_ns: seconds_ns(self.linger, "--linger")?,
        })
    }

    /// Whether any exporter is configured.
    pub fn exports(&self) -> bool {
        self.ipfix.is_some() || self.ipfix_file.is_some() || self.parquet.is_some()
    }

    /// The exporters' configuration.
    pub fn export_config(&self, queue_len: usize) -> ExportConfig {
        ExportConfig {
            ipfix_udp: self.ipfix,
            ipfix_file: self.ipfix_file.clone(),
            parquet_dir: self.parquet.clone(),
            queue_len,
            template_refresh_s: self.ipfix_template_refresh,
            domain_id: 0,
            sampling_rate: None,
        }
    }
}

fn seconds_ns(v: f64, flag: &str) -> anyhow::Result<u64> {
    anyhow::ensure!(
        v.is_finite() && v > 0.0,
        "{flag} must be a positive number of seconds"
    );
    Ok((v * 1e9).min(u64::MAX as f64 / 2.0) as u64)
}

/// One input stream: files read in sequence.
struct Stream {
    files: Vec<PathBuf>,
    next: usize,
    reader: Option<CaptureReader>,
    fcs: u32,
    head: Option<Packet>,
}

struct Totals {
    skipped_non_ethernet: u64,
    errors: u64,
}

impl Stream {
    fn refill(&mut self, erf_fcs: u32, t: &mut Totals) {
        let mut pkt = self.head.take().unwrap_or_default();
        loop {
            if self.reader.is_none() {
                let Some(p) = self.files.get(self.next) else {
                    return;
                };
                self.next += 1;
                match CaptureReader::open(p) {
                    Ok(r) => {
                        self.fcs = if r.format() == Format::Erf {
                            erf_fcs
                        } else {
                            0
                        };
                        self.reader = Some(r);
                    }
                    Err(e) => {
                        eprintln!("linecap: error: {e}");
                        t.errors += 1;
                        continue;
                    }
                }
            }
            let Some(r) = self.reader.as_mut() else {
                continue;
            };
            match r.next(&mut pkt) {
                Ok(true) => {
                    self.head = Some(pkt);
                    return;
                }
                done => {
                    if let Err(e) = done {
                        eprintln!("linecap: error: {e}");
                        t.errors += 1;
                    }
                    let st = r.stats();
                    t.skipped_non_ethernet += st.skipped_non_ethernet;
                    if st.truncated_bytes > 0 {
                        eprintln!(
                            "{}: last frame incomplete: {} bytes skipped",
                            r.path().display(),
                            st.truncated_bytes
                        );
                    }
                    self.reader = None;
                }
            }
        }
    }
}

/// `secs.nnnnnnnnn`.
fn ts(ns: u64) -> String {
    format!("{}.{:09}", ns / 1_000_000_000, ns % 1_000_000_000)
}

fn proto_name(r: &FlowRecord) -> String {
    let k = &r.key;
    if k.is_fragment() {
        return match k.family() {
            IpFamily::V4 => format!("frag:{}", k.proto()),
            IpFamily::V6 => "frag:ipv6".to_string(),
        };
    }
    match k.proto() {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        58 => "icmpv6".into(),
        132 => "sctp".into(),
        p => format!("ipproto{p}"),
    }
}

fn vlans(r: &FlowRecord) -> String {
    let ids = r.key.vlan_ids();
    if ids.is_empty() {
        return "-".into();
    }
    ids.iter().map(u16::to_string).collect::<Vec<_>>().join(".")
}

/// The reference tables' header line, then the application label columns
/// (`app`, `app_method`, and each direction's first payload as
/// `HEX/LEN` or `-`; see docs/applabel.md).
pub const TSV_HEADER: &str = "#vlan_stack\tproto\taddr_a\tport_a\taddr_b\tport_b\tpkts_a_to_b\tbytes_a_to_b\tpkts_b_to_a\tbytes_b_to_a\tcaplen_bytes_a_to_b\tcaplen_bytes_b_to_a\tfirst_ts\tlast_ts\tapp\tapp_method\tpayload_a_to_b\tpayload_b_to_a";

/// Columns of the reference layout (the label columns follow them).
pub const TSV_REFERENCE_COLUMNS: usize = 14;

/// One row in the reference layout: "a" is the lexically smaller
/// `"addr|port"` string (the table's own a/b is by address bytes).
fn tsv_row(r: &FlowRecord) -> String {
    let k = &r.key;
    let ea = format!("{}|{}", k.addr_a(), k.port_a());
    let eb = format!("{}|{}", k.addr_b(), k.port_b());
    let (x, y, d0, d1) = oriented(r, ea <= eb);
    let label = applabel::label(r);
    let fp = &r.first_payload.dir;
    format!(
        "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
        vlans(r),
        proto_name(r),
        x.0,
        x.1,
        y.0,
        y.1,
        r.packets[d0],
        r.bytes[d0],
        r.packets[d1],
        r.bytes[d1],
        r.captured_bytes[d0],
        r.captured_bytes[d1],
        ts(r.first_ns),
        ts(r.last_ns),
        label.name,
        label.method.name(),
        applabel::head_text(&fp[d0]),
        applabel::head_text(&fp[d1]),
    )
}

/// The record's two endpoints and directions, a's side first when `a_first`.
#[allow(clippy::type_complexity)]
fn oriented(
    r: &FlowRecord,
    a_first: bool,
) -> (
    (std::net::IpAddr, u16),
    (std::net::IpAddr, u16),
    usize,
    usize,
) {
    let k = &r.key;
    let (a, b) = ((k.addr_a(), k.port_a()), (k.addr_b(), k.port_b()));
    if a_first {
        (a, b, A_TO_B, B_TO_A)
    } else {
        (b, a, B_TO_A, A_TO_B)
    }
}

fn table_row(r: &FlowRecord) -> String {
    let ((s, sp), (d, dp), f, b) = oriented(r, r.a_initiated);
    let dur = r.last_ns.saturating_sub(r.first_ns) as f64 / 1e9;
    let label = applabel::label(r);
    let app = match label.method {
        Method::Port => format!("{}(port)", label.name),
        _ => label.name.to_string(),
    };
    format!(
        "{:<30} {:>10.3} {:<9} {:>6} {:>41} -> {:<41} {:>8} {:>11} {:>8} {:>11} {:<9} {}",
        linecap_writer::names::utc_rfc3339(r.first_ns),
        dur,
        proto_name(r),
        vlans(r),
        format!("{s}:{sp}"),
        format!("{d}:{dp}"),
        r.packets[f],
        r.bytes[f],
        r.packets[b],
        r.bytes[b],
        r.end_reason.name(),
        app
    )
}

/// Run `linecap flows`; exit code 1 when a file could not be read.
pub fn run(a: FlowsArgs) -> anyhow::Result<i32> {
    let timeouts = a.flow.timeouts()?;
    applabel::classifier().map_err(|e| anyhow::anyhow!("built-in application rules: {e}"))?;
    anyhow::ensure!(
        (1..=256).contains(&a.spread),
        "--spread must be 1..=256, got {}",
        a.spread
    );
    let mut tables = (0..a.spread)
        .map(|_| {
            FlowTable::new(a.flow.capacity, timeouts)
                .map_err(|e| anyhow::anyhow!("--flow-capacity: {e}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let streams = plan(&a.inputs, a.include_partial)?;
    anyhow::ensure!(
        streams.iter().any(|s| !s.is_empty()),
        "no capture files found in {:?}",
        a.inputs
    );
    let (exporter, mut producers) = Exporter::start(&a.flow.export_config(4096), 1)?;
    let mut exporters = producers.pop().expect("one producer");
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    match a.format {
        FlowsFormat::Tsv => writeln!(out, "{TSV_HEADER}")?,
        FlowsFormat::Table => writeln!(
            out,
            "{:<30} {:>10} {:<9} {:>6} {:>41}    {:<41} {:>8} {:>11} {:>8} {:>11} {:<9} app",
            "first (UTC)",
            "seconds",
            "proto",
            "vlans",
            "initiator",
            "responder",
            "pkts ->",
            "bytes ->",
            "pkts <-",
            "bytes <-",
            "end"
        )?,
        FlowsFormat::None => {}
    }
    let mut io_err: Option<io::Error> = None;
    let mut flows_out = 0u64;
    let mut emit = |r: &FlowRecord, out: &mut BufWriter<_>, exp: &mut FlowProducer| {
        flows_out += 1;
        let line = match a.format {
            FlowsFormat::Tsv => Some(tsv_row(r)),
            FlowsFormat::Table => Some(table_row(r)),
            FlowsFormat::None => None,
        };
        if let Some(l) = line
            && let Err(e) = writeln!(out, "{l}")
        {
            io_err.get_or_insert(e);
        }
        exp.send(r);
    };

    let mut streams: Vec<Stream> = streams
        .into_iter()
        .map(|files| Stream {
            files,
            next: 0,
            reader: None,
            fcs: 0,
            head: None,
        })
        .collect();
    let mut totals = Totals {
        skipped_non_ethernet: 0,
        errors: 0,
    };
    for s in &mut streams {
        s.refill(a.erf_fcs_bytes, &mut totals);
    }
    const TICK_NS: u64 = 1_000_000_000;
    let mut next_tick = 0u64;
    let mut position = 0u64;
    loop {
        // The stream whose head is earliest (ties: the lower stream).
        let mut best: Option<usize> = None;
        for (i, s) in streams.iter().enumerate() {
            if let Some(h) = &s.head
                && best.is_none_or(|b| {
                    streams[b]
                        .head
                        .as_ref()
                        .is_some_and(|bh| h.ts_ns < bh.ts_ns)
                })
            {
                best = Some(i);
            }
        }
        let Some(i) = best else { break };
        let s = &mut streams[i];
        let Some(pkt) = s.head.as_ref() else { break };
        let parsed = parse_frame(&pkt.data);
        let q = match (&parsed, a.spread) {
            (_, 1) => 0,
            (Parsed::Ip(info), n) => (symmetric_hash(&info.key) % n) as usize,
            (_, n) => (position % u64::from(n)) as usize,
        };
        position += 1;
        let wire = pkt.wire_len.saturating_add(s.fcs);
        let ts_ns = pkt.ts_ns;
        tables[q].update_parsed(&parsed, ts_ns, wire, pkt.data.len() as u32);
        tables[q].take_expired(&mut |r| emit(r, &mut out, &mut exporters));
        if ts_ns >= next_tick {
            // The periodic tick, on packet time: every table (idle queues too).
            for t in &mut tables {
                t.tick(ts_ns, &mut |r| emit(r, &mut out, &mut exporters));
            }
            next_tick = ts_ns.saturating_add(TICK_NS);
        }
        s.refill(a.erf_fcs_bytes, &mut totals);
    }
    let mut c = FlowCounters::default();
    for t in &mut tables {
        t.drain(&mut |r| emit(r, &mut out, &mut exporters));
        let x = t.counters();
        c.packets += x.packets;
        c.non_ip += x.non_ip;
        c.truncated += x.truncated;
        c.malformed += x.malformed;
        c.created += x.created;
        c.expired_idle += x.expired_idle;
        c.expired_active += x.expired_active;
        c.expired_end += x.expired_end;
        c.evicted += x.evicted;
        c.expired_input_end += x.expired_input_end;
        c.export_drops += x.export_drops;
        c.relocated += x.relocated;
    }
    let non_ip = c.non_ip + c.truncated + c.malformed + totals.skipped_non_ethernet;
    if a.format == FlowsFormat::Tsv {
        writeln!(out, "#non_ip_frames\t{non_ip}")?;
    }
    if let Some(e) = io_err {
        return Err(e).context("writing the flow listing");
    }
    out.flush()?;
    drop(out);
    drop(exporters);
    let drops = exporter.drops();
    let reports = exporter.finish()?;
    eprintln!(
        "flows: {flows_out} records from {} IP packets; created {}, ended: idle {}, active {}, \
         tcp end {}, evicted {}, end of input {}; not tracked: non-IP {}, truncated {}, \
         malformed {}, non-Ethernet records {}; export drops {}",
        c.packets,
        c.created,
        c.expired_idle,
        c.expired_active,
        c.expired_end,
        c.evicted,
        c.expired_input_end,
        c.non_ip,
        c.truncated,
        c.malformed,
        totals.skipped_non_ethernet,
        c.export_drops + drops
    );
    for r in reports {
        eprintln!(
            "{}: {} records, {} {} written, {} errors",
            r.name,
            r.records,
            r.units,
            if r.name == "ipfix" {
                "messages"
            } else {
                "files"
            },
            r.errors
        );
    }
    Ok(i32::from(totals.errors > 0))
}

//! linecap benchmarks (not tests: they print figures, they assert nothing
//! about speed).
//!
//! `cargo run -p bench --release -- worker|writer|flows|policy|veth|all [--seconds S] [--json FILE]`
//!
//! - `worker`: synthetic source → worker (parse + ERF batch + ring hand-off)
//!   on one core; the ring is drained in the same thread between bursts (a
//!   release is one store), so the figure is the worker's own cost.
//! - `veth` (root): zero-loss rate of linecap AF_XDP (native, generic),
//!   `tcpdump -w` and `dumpcap -w` on one veth pair with tcpreplay as the
//!   generator, at 64 and 1514 B (see `veth.rs`). Not part of `all`.
//! - `flows`: synthetic source → `parse_frame` → the queue's flow table
//!   (`FlowTable::update` + draining its export queue), 64 B frames, one
//!   core, with 1 k, 100 k and 1 M concurrent flows (the source cycles them).
//! - `policy`: capture policies (issue 8) one at a time: Crypto-PAn frame
//!   anonymisation with and without the prefix cache, the cBPF interpreter
//!   on real trace frames for a few expressions, sampling (see `policy.rs`).
//!   Not part of `all`.
//! - `writer`: ERF bytes of the real traces in ../shared/traces, repeated into
//!   1 MiB batches, written by one writer thread (LZ4 frames, and plain),
//!   next to the `lz4 -1` CLI compressing the same bytes.
#![forbid(unsafe_code)]

#[cfg(feature = "dpdk")]
mod dpdk;
mod policy;
mod veth;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use linecap_dataplane::clock::{ManualClock, RealtimeClock};
use linecap_dataplane::counters::SharedCounters;
use linecap_dataplane::flowtable::{BurstPacket, FlowTable, Timeouts};
use linecap_dataplane::ring::{HugePages, RingConfig, ring};
use linecap_dataplane::source::{Frame, FrameSink, RxQueue};
use linecap_dataplane::synthetic::{SyntheticConfig, SyntheticSource};
use linecap_dataplane::worker::{Worker, WorkerConfig};
use linecap_wire::batch::BatchMeta;
use linecap_writer::read::{CaptureReader, Packet};
use linecap_writer::series::{FileSeries, SeriesConfig};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let suite = args.first().map(String::as_str).unwrap_or("all");
    let seconds: f64 = flag(&args, "--seconds").map_or(2.0, |s| s.parse().expect("--seconds"));
    let json = flag(&args, "--json").map(PathBuf::from);
    let mut results = Vec::new();
    match suite {
        "worker" => results.extend(worker_suite(seconds)),
        "writer" => results.extend(writer_suite(seconds)),
        "veth" => results.extend(veth::suite(seconds)),
        "flows" => results.extend(flows_suite(seconds)),
        "policy" => results.extend(policy::suite(seconds)),
        #[cfg(feature = "dpdk")]
        "dpdk" => results.extend(dpdk::suite(seconds)),
        #[cfg(feature = "dpdk")]
        "dpdk-rx" => return dpdk::rx_child(seconds),
        "all" => {
            results.extend(worker_suite(seconds));
            results.extend(writer_suite(seconds));
            results.extend(flows_suite(seconds));
        }
        _ => {
            eprintln!(
                "usage: bench worker|writer|flows|policy|veth|all [--seconds S] [--json FILE]"
            );
            std::process::exit(2);
        }
    }
    if let Some(p) = json {
        let v = serde_json::json!({
            "machine": machine(),
            "results": results,
        });
        std::fs::write(&p, serde_json::to_vec_pretty(&v).unwrap()).expect("writing --json");
        eprintln!("results written to {}", p.display());
    }
}

fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

fn machine() -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    serde_json::json!({
        "cpu": cpu,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
    })
}

/// Median of `runs` repetitions of `f`, each returning a rate.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn worker_suite(seconds: f64) -> Vec<serde_json::Value> {
    println!("worker: synthetic source -> parse + ERF batch + ring hand-off, one core, 1000 flows");
    println!(
        "{:>8} {:>12} {:>12} {:>10}",
        "frame_B", "Mpps", "ns/packet", "Gbit/s"
    );
    let mut out = Vec::new();
    for frame_len in [64usize, 512, 1500] {
        let runs: Vec<(f64, f64)> = (0..5)
            .map(|_| worker_once(frame_len, 1000, false, seconds / 5.0))
            .collect();
        let mpps = median(runs.iter().map(|r| r.0).collect());
        let ns = 1_000.0 / mpps;
        let gbps = mpps * 1e6 * frame_len as f64 * 8.0 / 1e9;
        println!("{frame_len:>8} {mpps:>12.2} {ns:>12.1} {gbps:>10.1}");
        out.push(serde_json::json!({
            "suite": "worker", "frame_bytes": frame_len, "mpps_median_of_5": mpps,
            "ns_per_packet": ns,
        }));
    }
    println!("\nworker + flow table (burst update, 2x flows slots), 64 B, one core");
    println!("{:>10} {:>12} {:>12}", "flows", "Mpps", "ns/packet");
    for flows in [1_000u32, 100_000, 1_000_000] {
        let runs: Vec<(f64, f64)> = (0..3)
            .map(|_| worker_once(64, flows, true, seconds / 3.0))
            .collect();
        let mpps = median(runs.iter().map(|r| r.0).collect());
        println!("{flows:>10} {mpps:>12.2} {:>12.1}", 1_000.0 / mpps);
        out.push(serde_json::json!({
            "suite": "worker+flows", "frame_bytes": 64, "flows": flows,
            "mpps_median_of_3": mpps, "ns_per_packet": 1_000.0 / mpps,
        }));
    }
    out
}

/// Run the worker for about `seconds`; returns (Mpps, packets).
fn worker_once(frame_len: usize, flows: u32, track: bool, seconds: f64) -> (f64, f64) {
    let (producer, mut consumer) = ring(RingConfig {
        slots: 16,
        batch_bytes: 1 << 20,
        hugepages: HugePages::Try,
    })
    .expect("ring");
    let shared = Arc::new(SharedCounters::default());
    let mut w = Worker::new(WorkerConfig::new(0), producer, shared);
    if track {
        // Sized as a deployment would: twice the concurrent flows.
        let table = linecap_dataplane::flowtable::FlowTable::new(
            (flows as usize * 2).next_power_of_two().max(1024),
            linecap_dataplane::flowtable::Timeouts::default(),
        )
        .expect("flow table");
        w = w.with_flows(table, Box::new(|_| {}), Arc::default());
    }
    let mut src = SyntheticSource::new(
        SyntheticConfig {
            frame_len,
            flows,
            count: None,
            pps: None,
        },
        RealtimeClock,
    )
    .expect("synthetic source");
    let clock = ManualClock::new(0);
    let deadline = Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let mut polls = 0u64;
    loop {
        w.poll_once(&mut src, &clock);
        while consumer.peek().is_some() {
            consumer.release();
        }
        polls += 1;
        if polls.is_multiple_of(256) && start.elapsed() >= deadline {
            break;
        }
    }
    let el = start.elapsed().as_secs_f64();
    let k = w.counters();
    assert_eq!(
        k.ring_full_packets, 0,
        "the bench drains the ring: no drop expected"
    );
    (k.rx_packets as f64 / el / 1e6, k.rx_packets as f64)
}

/// Parses every frame and counts it into a flow table: per frame, or
/// gathered into a burst for `update_burst` (flushed after each poll).
struct FlowSink {
    table: FlowTable,
    exported: u64,
    burst: Option<Vec<BurstPacket>>,
}

impl FrameSink for FlowSink {
    #[inline]
    fn frame(&mut self, f: Frame<'_>) {
        let parsed = linecap_wire::flow::parse_frame(f.data);
        match (&mut self.burst, parsed) {
            (Some(b), linecap_wire::flow::Parsed::Ip(info)) => b.push(BurstPacket {
                info,
                ts_ns: f.ts_ns,
                wire_len: f.wire_len,
                cap_len: f.data.len() as u32,
            }),
            (_, parsed) => {
                self.table
                    .update_parsed(&parsed, f.ts_ns, f.wire_len, f.data.len() as u32)
            }
        }
    }
}

impl FlowSink {
    fn flush(&mut self) {
        if let Some(b) = &mut self.burst {
            self.table.update_burst(b);
            b.clear();
        }
    }
}

fn flows_suite(seconds: f64) -> Vec<serde_json::Value> {
    println!("flows: synthetic 64 B frames -> parse_frame + flow table update, one core");
    println!(
        "{:>10} {:>8} {:>10} {:>10} {:>12} {:>10}",
        "flows", "api", "slots", "Mpps", "ns/packet", "table_MiB"
    );
    let mut out = Vec::new();
    for (flows, burst) in [1_000u32, 100_000, 1_000_000]
        .into_iter()
        .flat_map(|f| [(f, false), (f, true)])
    {
        let api = if burst { "burst" } else { "packet" };
        let runs: Vec<(f64, usize, usize)> = (0..3)
            .map(|_| flows_once(flows, burst, seconds / 6.0))
            .collect();
        let mpps = median(runs.iter().map(|r| r.0).collect());
        let (slots, mem) = (runs[0].1, runs[0].2);
        let ns = 1_000.0 / mpps;
        let mib = mem as f64 / (1 << 20) as f64;
        println!("{flows:>10} {api:>8} {slots:>10} {mpps:>10.2} {ns:>12.1} {mib:>10.1}");
        out.push(serde_json::json!({
            "suite": "flows", "api": api, "frame_bytes": 64, "flows": flows, "slots": slots,
            "mpps_median_of_3": mpps, "ns_per_packet": ns, "table_bytes": mem,
        }));
    }
    out
}

/// Track `flows` flows for about `seconds` after one warm-up pass that
/// creates them; returns (Mpps, slots, table bytes).
fn flows_once(flows: u32, burst: bool, seconds: f64) -> (f64, usize, usize) {
    // At most half full: the capacity an operator would give for this load.
    let slots = (flows as usize * 2).next_power_of_two().max(1024);
    let table = FlowTable::new(slots, Timeouts::default()).expect("flow table");
    let mut sink = FlowSink {
        table,
        exported: 0,
        burst: burst.then(|| Vec::with_capacity(64)),
    };
    let mut src = SyntheticSource::new(
        SyntheticConfig {
            frame_len: 64,
            flows,
            count: None,
            pps: None,
        },
        RealtimeClock,
    )
    .expect("synthetic source");
    while sink.table.counters().packets < u64::from(flows) {
        src.poll_burst(64, &mut sink);
        sink.flush();
    }
    let before = sink.table.counters().packets;
    let deadline = Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let mut polls = 0u64;
    loop {
        src.poll_burst(64, &mut sink);
        sink.flush();
        let FlowSink {
            table, exported, ..
        } = &mut sink;
        table.take_expired(&mut |_| *exported += 1);
        polls += 1;
        if polls.is_multiple_of(256) && start.elapsed() >= deadline {
            break;
        }
    }
    let el = start.elapsed().as_secs_f64();
    let c = sink.table.counters();
    assert_eq!(c.active, u64::from(flows), "every flow stays in the table");
    assert_eq!(
        c.evicted + sink.exported,
        0,
        "no flow ends during the run: {c:?}"
    );
    let n = c.packets - before;
    (n as f64 / el / 1e6, slots, sink.table.memory_bytes())
}

/// ERF records of every trace in ../shared/traces, as the worker writes them.
fn corpus() -> Vec<u8> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/traces");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (the writer bench uses ../shared/traces)",
                dir.display()
            )
        })
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut out = Vec::new();
    let mut p = Packet::default();
    for f in files {
        let Ok(mut r) = CaptureReader::open(&f) else {
            continue;
        };
        while let Ok(true) = r.next(&mut p) {
            let mut h = [0u8; linecap_wire::erf::ETH_RECORD_OVERHEAD];
            linecap_wire::erf::write_eth_header(&mut h, p.ts_ns, 0, 0, p.data.len(), p.wire_len, 0);
            out.extend_from_slice(&h);
            out.extend_from_slice(&p.data);
        }
    }
    out
}

/// Cut `corpus` into batches of up to 1 MiB on record boundaries.
fn batches(corpus: &[u8]) -> Vec<(BatchMeta, Vec<u8>)> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let mut meta = BatchMeta::default();
    let mut off = 0;
    while off < corpus.len() {
        let rlen = u16::from_be_bytes([corpus[off + 10], corpus[off + 11]]) as usize;
        if cur.len() + rlen > 1 << 20 {
            meta.records_len = cur.len() as u64;
            out.push((meta, std::mem::take(&mut cur)));
            meta = BatchMeta::default();
        }
        cur.extend_from_slice(&corpus[off..off + rlen]);
        meta.packets += 1;
        off += rlen;
    }
    meta.records_len = cur.len() as u64;
    out.push((meta, cur));
    out
}

fn writer_suite(seconds: f64) -> Vec<serde_json::Value> {
    let corpus = corpus();
    let batches = batches(&corpus);
    let tmp = std::env::temp_dir().join(format!("linecap-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    println!(
        "\nwriter: one thread, 1 MiB batches of the ERF records of the 40 shared traces ({} KiB), repeated; output on {}",
        corpus.len() >> 10,
        tmp.display()
    );
    println!("{:<28} {:>10} {:>12}", "writer", "MB/s in", "ratio");
    let mut out = Vec::new();
    for compress in [true, false] {
        let mut rates = Vec::new();
        let mut ratio = 1.0;
        for run in 0..3 {
            let dir = tmp.join(format!("w{compress}{run}"));
            let mut s = FileSeries::new(SeriesConfig {
                compress,
                rotate_bytes: Some(256 << 20),
                sync_on_close: false,
                ..SeriesConfig::new(dir.clone(), 0)
            })
            .unwrap();
            let start = Instant::now();
            let mut bytes = 0u64;
            'outer: loop {
                for (m, r) in &batches {
                    s.write_batch(m, r).unwrap();
                    bytes += r.len() as u64;
                    if start.elapsed().as_secs_f64() > seconds / 3.0 {
                        break 'outer;
                    }
                }
            }
            s.close_current().unwrap();
            let el = start.elapsed().as_secs_f64();
            rates.push(bytes as f64 / el / 1e6);
            ratio = s.counters().bytes_erf as f64 / s.counters().bytes_file as f64;
            let _ = std::fs::remove_dir_all(&dir);
        }
        let name = if compress {
            "linecap LZ4 frames"
        } else {
            "linecap plain ERF"
        };
        let mbps = median(rates);
        println!("{name:<28} {mbps:>10.0} {ratio:>12.2}");
        out.push(serde_json::json!({
            "suite": "writer", "tool": name, "mb_per_s_median_of_3": mbps, "ratio": ratio,
        }));
    }
    // The lz4 CLI on the same bytes (about 64 MiB of the repeated corpus).
    let input = tmp.join("corpus.erf");
    let reps = (64 << 20) / corpus.len().max(1) + 1;
    std::fs::write(&input, corpus.repeat(reps)).unwrap();
    let size = std::fs::metadata(&input).unwrap().len() as f64;
    let mut rates = Vec::new();
    let mut ratio = 0.0;
    for _ in 0..3 {
        let start = Instant::now();
        let st = Command::new("lz4")
            .args(["-1", "-q", "-f"])
            .arg(&input)
            .arg(tmp.join("corpus.erf.lz4"))
            .status();
        let el = start.elapsed().as_secs_f64();
        match st {
            Ok(s) if s.success() => {
                rates.push(size / el / 1e6);
                ratio = size / std::fs::metadata(tmp.join("corpus.erf.lz4")).unwrap().len() as f64;
            }
            _ => {
                println!("lz4 -1 (CLI): not available (apt-get install lz4)");
                break;
            }
        }
    }
    if !rates.is_empty() {
        let mbps = median(rates);
        println!(
            "{:<28} {mbps:>10.0} {ratio:>12.2}",
            "lz4 -1 (CLI, same bytes)"
        );
        out.push(serde_json::json!({
            "suite": "writer", "tool": "lz4 -1", "mb_per_s_median_of_3": mbps, "ratio": ratio,
        }));
    }
    let _ = std::fs::remove_dir_all(&tmp);
    out
}

//! `worker` and `flows` suites: the capture worker's own cost and the flow
//! table's, on one core (the ring is drained in the same thread).
//!
//! - `worker`: synthetic source → worker (parse + ERF batch + ring hand-off),
//!   with and without flow tracking.
//! - `flows`: synthetic source → `parse_frame` → the queue's flow table
//!   (`FlowTable::update` or `update_burst` + draining its export queue),
//!   64 B frames, with 1 k, 100 k and 1 M concurrent flows.

use std::sync::Arc;
use std::time::{Duration, Instant};

use linecap_dataplane::clock::{ManualClock, RealtimeClock};
use linecap_dataplane::counters::SharedCounters;
use linecap_dataplane::flowtable::{BurstPacket, FlowTable, Timeouts};
use linecap_dataplane::ring::{HugePages, RingConfig, ring};
use linecap_dataplane::source::{Frame, FrameSink, RxQueue};
use linecap_dataplane::synthetic::{SyntheticConfig, SyntheticSource};
use linecap_dataplane::worker::{Worker, WorkerConfig};

use crate::{Opts, median};

pub fn worker_suite(o: &Opts) -> Vec<serde_json::Value> {
    let seconds = o.seconds;
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

pub fn flows_suite(o: &Opts) -> Vec<serde_json::Value> {
    let seconds = o.seconds;
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

//! `worker` suite: the capture worker's own cost on one core (the ring is
//! drained in the same thread): synthetic source → worker (parse + ERF
//! batch + ring hand-off), with flow tracking off and on (1 k, 100 k, 1 M
//! flows: the worker's staged `update_burst` and its expiry step per burst),
//! next to the copy floor: the same frames `memcpy`ed into ring slots with
//! an 18-byte header and nothing else. Per-poll times give p50 / p99 /
//! p99.9 / max beside Mpps. The `flows` suite (the table alone) is in
//! `flows.rs`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use linecap_dataplane::clock::{ManualClock, RealtimeClock};
use linecap_dataplane::counters::SharedCounters;
use linecap_dataplane::ring::{Consumer, HugePages, Producer, RingConfig, ring};
use linecap_dataplane::source::{Frame, FrameSink, RxQueue};
use linecap_dataplane::synthetic::{SyntheticConfig, SyntheticSource};
use linecap_dataplane::worker::{Worker, WorkerConfig};

use crate::jitter::{percentiles, print_floors};
use crate::{Opts, median};

pub fn worker_suite(o: &Opts) -> Vec<serde_json::Value> {
    let seconds = o.seconds;
    println!("worker: synthetic source -> parse + ERF batch + ring hand-off, one core, 1000 flows");
    println!("(Mpps = 64 frames / median poll time, median of the runs: robust to preemption)");
    println!(
        "{:>8} {:>12} {:>12} {:>10} {:>12} {:>12}",
        "frame_B", "Mpps", "ns/packet", "Gbit/s", "floor_Mpps", "vs_floor"
    );
    let mut out = Vec::new();
    let mut off64 = 0.0;
    let mut floor64 = 0.0;
    for frame_len in [64usize, 512, 1500] {
        let runs: Vec<f64> = (0..5)
            .map(|_| worker_once(frame_len, 1000, false, seconds / 5.0).lat.0)
            .collect();
        let mpps = median(runs);
        let floor = median(
            (0..3)
                .map(|_| copy_floor_once(frame_len, seconds / 5.0))
                .collect(),
        );
        // On a shared machine a mean includes preempted polls: the median
        // poll (64 frames) gives the cost per packet.
        let (mpps, floor) = (BURST / mpps * 1e3, BURST / floor * 1e3);
        let ns = 1_000.0 / mpps;
        let gbps = mpps * 1e6 * frame_len as f64 * 8.0 / 1e9;
        println!(
            "{frame_len:>8} {mpps:>12.2} {ns:>12.1} {gbps:>10.1} {floor:>12.2} {:>11.2}x",
            mpps / floor
        );
        if frame_len == 64 {
            off64 = mpps;
            floor64 = floor;
        }
        out.push(serde_json::json!({
            "suite": "worker", "frame_bytes": frame_len, "mpps_from_median_poll": mpps,
            "ns_per_packet": ns, "copy_floor_mpps": floor, "ratio_to_copy_floor": mpps / floor,
        }));
    }
    println!(
        "\nworker + flow table (staged burst update + expiry step, 2x flows slots), 64 B, one core"
    );
    println!(
        "{:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "flows", "Mpps_p50", "Mpps_mean", "vs_off", "p50_ns", "p99_ns", "p99.9_ns", "max_ns"
    );
    let mut ratios = Vec::new();
    for flows in [1_000u32, 100_000, 1_000_000] {
        let mut runs: Vec<WorkerRun> = (0..3)
            .map(|_| worker_once(64, flows, true, seconds / 3.0))
            .collect();
        runs.sort_by(|a, b| a.lat.0.total_cmp(&b.lat.0));
        let r = &runs[1];
        let p50_mpps = BURST / r.lat.0 * 1e3;
        let ratio = p50_mpps / off64;
        println!(
            "{flows:>10} {p50_mpps:>9.2} {:>9.2} {ratio:>8.2}x {:>9.0} {:>9.0} {:>9.0} {:>9.0}",
            r.mpps, r.lat.0, r.lat.1, r.lat.2, r.lat.3
        );
        ratios.push((flows, p50_mpps, ratio, r.lat, r.samples));
        out.push(serde_json::json!({
            "suite": "worker+flows", "frame_bytes": 64, "flows": flows,
            "mpps_from_median_poll": p50_mpps, "mpps_mean": r.mpps,
            "ratio_to_flows_off": ratio, "poll_ns_p50": r.lat.0, "poll_ns_p99": r.lat.1,
            "poll_ns_p999": r.lat.2, "poll_ns_max": r.lat.3,
        }));
    }
    println!("\ngoal ratios (issue 19), 64 B, one core:");
    for (flows, mpps, ratio, lat, samples) in &ratios {
        if *flows >= 100_000 {
            let goal = if *flows == 100_000 { 0.5 } else { 0.3 };
            println!(
                "  worker + flows at {flows} / flows off: {ratio:.2}x ({mpps:.2} / {off64:.2} Mpps), goal >= {goal}x"
            );
        }
        if *flows == 1_000_000 {
            println!(
                "  max / median poll time at 1 M flows: {:.1}x ({:.0} / {:.0} ns, p99.9 {:.1}x), goal <= 10x",
                lat.3 / lat.0.max(1.0),
                lat.3,
                lat.0,
                lat.2 / lat.0.max(1.0),
            );
            // What the VM adds by itself (`jitter.rs`).
            let mut row = print_floors(*lat, *samples);
            row["suite"] = "worker".into();
            row["goal"] = "poll_max_over_median_1m".into();
            row["ratio"] = (lat.3 / lat.0.max(1.0)).into();
            out.push(row);
        }
        out.push(serde_json::json!({
            "suite": "worker", "goal": format!("flows_{flows}_over_off"), "ratio": ratio,
            "mpps": mpps, "off_mpps": off64,
        }));
    }
    println!(
        "  worker flows off / copy floor: {:.2}x ({off64:.2} / {floor64:.2} Mpps), goal >= 0.7x",
        off64 / floor64
    );
    out.push(serde_json::json!({
        "suite": "worker", "goal": "flows_off_over_copy_floor", "ratio": off64 / floor64,
        "mpps": off64, "floor_mpps": floor64,
    }));
    if o.callgrind {
        println!("\ninstructions per 64-B frame (valgrind --tool=callgrind, two run lengths):");
        match callgrind_per_frame(o) {
            Ok(rows) => {
                for (flows, ir) in rows {
                    let what = if flows == 0 {
                        "flows off".to_string()
                    } else {
                        format!("{flows} flows")
                    };
                    println!("  {what:>14}: {ir:>7.1} instructions/frame");
                    out.push(serde_json::json!({
                        "suite": "worker", "callgrind_flows": flows, "instructions_per_frame": ir,
                    }));
                }
            }
            Err(e) => println!("  callgrind: {e}"),
        }
    }
    out
}

/// Frames per poll (the worker's default burst; the synthetic source fills it).
const BURST: f64 = 64.0;

struct WorkerRun {
    mpps: f64,
    /// Per-poll times (ns): p50, p99, p99.9, max.
    lat: (f64, f64, f64, f64),
    /// Polls timed.
    samples: usize,
}

/// The copy floor: each synthetic frame copied with an 18-byte header into
/// the held ring slot, the slot committed when full; nothing else.
struct CopyFloor {
    producer: Producer,
    fill: usize,
    cap: usize,
    packets: u64,
}

impl FrameSink for CopyFloor {
    #[inline]
    fn frame(&mut self, f: Frame<'_>) {
        let need = 18 + f.data.len();
        if self.producer.holds_slot() && self.fill + need > self.cap {
            self.producer.slot_mut().0.records_len = self.fill as u64;
            self.producer.commit();
        }
        if !self.producer.holds_slot() {
            if !self.producer.acquire() {
                return;
            }
            self.fill = 0;
        }
        let fill = self.fill;
        let (_, buf) = self.producer.slot_mut();
        let rec = &mut buf[fill..fill + need];
        rec[..8].copy_from_slice(&f.ts_ns.to_le_bytes());
        rec[8..10].copy_from_slice(&(need as u16).to_be_bytes());
        rec[10..18].fill(0);
        rec[18..].copy_from_slice(f.data);
        self.fill += need;
        self.packets += 1;
    }
}

/// Median time (ns) of one poll of 64 frames through the copy floor.
fn copy_floor_once(frame_len: usize, seconds: f64) -> f64 {
    let (producer, mut consumer) = ring(RingConfig {
        slots: 16,
        batch_bytes: 1 << 20,
        hugepages: HugePages::Try,
    })
    .expect("ring");
    let cap = producer.batch_bytes();
    let mut sink = CopyFloor {
        producer,
        fill: 0,
        cap,
        packets: 0,
    };
    let mut src = SyntheticSource::new(
        SyntheticConfig {
            frame_len,
            flows: 1000,
            count: None,
            pps: None,
        },
        RealtimeClock,
    )
    .expect("synthetic source");
    let deadline = Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let mut polls = 0u64;
    let mut lat: Vec<u32> = Vec::with_capacity(1 << 20);
    loop {
        let t0 = Instant::now();
        src.poll_burst(64, &mut sink);
        if lat.len() < lat.capacity() {
            lat.push(t0.elapsed().as_nanos().min(u128::from(u32::MAX)) as u32);
        }
        while consumer.peek().is_some() {
            consumer.release();
        }
        polls += 1;
        if polls.is_multiple_of(256) && start.elapsed() >= deadline {
            break;
        }
    }
    assert!(sink.packets > 0);
    percentiles(lat).0
}

/// A worker on one ring (drained by the bench itself) with a flow table of
/// twice `flows` slots when `track`, fed by a synthetic source of
/// `frame_len`-byte frames over `flows` flows, its table faulted in.
fn worker_with(
    frame_len: usize,
    flows: u32,
    track: bool,
) -> (Worker, Consumer, SyntheticSource<RealtimeClock>) {
    let (producer, consumer) = ring(RingConfig {
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
    let src = SyntheticSource::new(
        SyntheticConfig {
            frame_len,
            flows,
            count: None,
            pps: None,
        },
        RealtimeClock,
    )
    .expect("synthetic source");
    // The table's pages are faulted in at start-up, not in the timed part.
    w.prepare();
    (w, consumer, src)
}

/// Run the worker for about `seconds`; Mpps and per-poll times.
fn worker_once(frame_len: usize, flows: u32, track: bool, seconds: f64) -> WorkerRun {
    let (mut w, mut consumer, mut src) = worker_with(frame_len, flows, track);
    let clock = ManualClock::new(0);
    let deadline = Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let mut polls = 0u64;
    let mut lat: Vec<u32> = Vec::with_capacity(1 << 20);
    loop {
        let t0 = Instant::now();
        w.poll_once(&mut src, &clock);
        if lat.len() < lat.capacity() {
            lat.push(t0.elapsed().as_nanos().min(u128::from(u32::MAX)) as u32);
        }
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
    WorkerRun {
        mpps: k.rx_packets as f64 / el / 1e6,
        samples: lat.len(),
        lat: percentiles(lat),
    }
}

/// The worker for exactly `packets` frames of 64 B after a warm-up that
/// starts every flow (`flows` = 0: tracking off): the work
/// `worker-count` does under callgrind.
fn run_packets(flows: u32, packets: u64) -> u64 {
    let n_flows = flows.max(1000);
    let (mut w, mut consumer, mut src) = worker_with(64, n_flows, flows > 0);
    let clock = ManualClock::new(0);
    let target = u64::from(n_flows) + packets;
    while w.counters().rx_packets < target {
        w.poll_once(&mut src, &clock);
        while consumer.peek().is_some() {
            consumer.release();
        }
    }
    w.counters().rx_packets
}

/// `bench worker-count FLOWS PACKETS` (FLOWS 0 = flow tracking off): the
/// child `bench worker --callgrind` runs under valgrind.
pub fn count_child(args: &[String]) -> i32 {
    let parsed = (
        args.first().and_then(|a| a.parse::<u32>().ok()),
        args.get(1).and_then(|a| a.parse::<u64>().ok()),
    );
    let (Some(flows), Some(packets)) = parsed else {
        eprintln!("usage: bench worker-count FLOWS PACKETS   (FLOWS 0 = tracking off)");
        return 2;
    };
    println!("{}", run_packets(flows, packets));
    0
}

/// Instructions per frame for tracking off and 1 k / 100 k / 1 M flows, from
/// two run lengths each (the difference cancels set-up and warm-up).
pub fn callgrind_per_frame(o: &Opts) -> Result<Vec<(u32, f64)>, String> {
    let dir = o.out.join("worker-callgrind");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let (short, long) = (200_000u64, 600_000u64);
    let mut out = Vec::new();
    for flows in [0u32, 1_000, 100_000, 1_000_000] {
        let a = crate::applabel::callgrind_ir(&["worker-count", &flows.to_string()], short, &dir)?;
        let b = crate::applabel::callgrind_ir(&["worker-count", &flows.to_string()], long, &dir)?;
        out.push((flows, b.saturating_sub(a) as f64 / (long - short) as f64));
    }
    Ok(out)
}

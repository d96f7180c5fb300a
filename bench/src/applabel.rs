//! `applabel` suite: what application labelling costs the worker's flow
//! path, side by side in one process, 64 B frames, 100 k flows.
//!
//! - `off`: `parse_frame_without_payload` → `FlowTable::update_burst` (the
//!   flow path with no payload heads: `note` sees no payload);
//! - `on`: `parse_frame` (payload heads) → `update_burst` (the head kept once
//!   per direction) — what the workers run;
//!
//! run alternately 5 times each (medians). The labels themselves are made
//! once per exported record, off the packet path (`linecap flows`, the
//! IPFIX/Parquet exporters); their cost is measured apart as ns per record
//! over the 100 k records of a drained table, and put per packet for flows
//! of 10 packets (`label_share_10pkt`).

use std::time::{Duration, Instant};

use linecap_dataplane::applabel;
use linecap_dataplane::clock::RealtimeClock;
use linecap_dataplane::flowtable::{BurstPacket, FlowRecord, FlowTable, Timeouts};
use linecap_dataplane::source::{Frame, FrameSink, RxQueue};
use linecap_dataplane::synthetic::{SyntheticConfig, SyntheticSource};
use linecap_wire::flow::{Parsed, parse_frame, parse_frame_without_payload};

use crate::{Opts, median};

struct Sink {
    table: FlowTable,
    burst: Vec<BurstPacket>,
    heads: bool,
}

impl FrameSink for Sink {
    #[inline]
    fn frame(&mut self, f: Frame<'_>) {
        let parsed = if self.heads {
            parse_frame(f.data)
        } else {
            parse_frame_without_payload(f.data)
        };
        if let Parsed::Ip(info) = parsed {
            self.burst.push(BurstPacket::new(
                &info,
                f.ts_ns,
                f.wire_len,
                f.data.len() as u32,
            ));
        }
    }
}

const FLOWS: u32 = 100_000;

fn table() -> FlowTable {
    FlowTable::new(
        (FLOWS as usize * 2).next_power_of_two(),
        Timeouts::default(),
    )
    .expect("flow table")
}

/// The flow path's state: sink (table, burst) and the synthetic source.
fn setup(heads: bool) -> (Sink, SyntheticSource<RealtimeClock>) {
    let sink = Sink {
        table: table(),
        burst: Vec::with_capacity(64),
        heads,
    };
    let src = SyntheticSource::new(
        SyntheticConfig {
            frame_len: 64,
            flows: FLOWS,
            count: None,
            pps: None,
        },
        RealtimeClock,
    )
    .expect("synthetic source");
    (sink, src)
}

/// One burst: receive, parse, update the table, expire.
fn poll(src: &mut SyntheticSource<RealtimeClock>, sink: &mut Sink) {
    src.poll_burst(64, sink);
    let Sink { table, burst, .. } = sink;
    table.update_burst(burst);
    burst.clear();
    table.take_expired(&mut |_| {});
}

/// ns per packet of the flow path for about `seconds`; the table after.
fn run_once(heads: bool, seconds: f64) -> (f64, FlowTable) {
    let (mut sink, mut src) = setup(heads);
    while sink.table.counters().packets < u64::from(FLOWS) {
        poll(&mut src, &mut sink);
    }
    let before = sink.table.counters().packets;
    let deadline = Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let mut polls = 0u64;
    loop {
        poll(&mut src, &mut sink);
        polls += 1;
        if polls.is_multiple_of(256) && start.elapsed() >= deadline {
            break;
        }
    }
    let el = start.elapsed().as_secs_f64();
    let n = sink.table.counters().packets - before;
    assert_eq!(sink.table.counters().active, u64::from(FLOWS));
    (el * 1e9 / n as f64, sink.table)
}

/// The flow path for exactly `packets` packets after the warm-up (every
/// flow seen once): the work `applabel-count` does under callgrind.
fn run_packets(heads: bool, packets: u64) -> u64 {
    let (mut sink, mut src) = setup(heads);
    let target = u64::from(FLOWS) + packets;
    while sink.table.counters().packets < target {
        poll(&mut src, &mut sink);
    }
    sink.table.counters().packets
}

/// `bench applabel-count on|off PACKETS`: the child `--callgrind` runs.
pub fn count_child(args: &[String]) -> i32 {
    let heads = match args.first().map(String::as_str) {
        Some("on") => true,
        Some("off") => false,
        _ => {
            eprintln!("usage: bench applabel-count on|off PACKETS");
            return 2;
        }
    };
    let Some(n) = args.get(1).and_then(|a| a.parse::<u64>().ok()) else {
        eprintln!("usage: bench applabel-count on|off PACKETS");
        return 2;
    };
    println!("{}", run_packets(heads, n));
    0
}

/// Instructions of one run of a bench child (`child` + PACKETS) under callgrind.
pub(crate) fn callgrind_ir(
    child: &[&str],
    packets: u64,
    dir: &std::path::Path,
) -> Result<u64, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = dir.join(format!("callgrind.{}.{packets}", child.join(".")));
    let st = std::process::Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg(&exe)
        .args(child)
        .arg(packets.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map_err(|e| format!("valgrind: {e} (apt install valgrind)"))?;
    if !st.success() {
        return Err(format!("valgrind exited {st}"));
    }
    let text = std::fs::read_to_string(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    text.lines()
        .find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| format!("{}: no summary line", out.display()))
}

/// Instructions per packet, off and on, from two run lengths each (the
/// difference cancels set-up and warm-up).
fn callgrind_per_packet(o: &Opts) -> Result<(f64, f64), String> {
    let dir = o.out.join("applabel-callgrind");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let (short, long) = (100_000u64, 600_000u64);
    let per = |mode: &str| -> Result<f64, String> {
        let a = callgrind_ir(&["applabel-count", mode], short, &dir)?;
        let b = callgrind_ir(&["applabel-count", mode], long, &dir)?;
        Ok(b.saturating_sub(a) as f64 / (long - short) as f64)
    };
    Ok((per("off")?, per("on")?))
}

pub fn suite(o: &Opts) -> Vec<serde_json::Value> {
    println!(
        "applabel: synthetic 64 B UDP frames, {FLOWS} flows, parse + flow table burst update, one core"
    );
    let per = o.seconds / 10.0;
    let (mut off, mut on) = (Vec::new(), Vec::new());
    let mut last = None;
    for _ in 0..5 {
        off.push(run_once(false, per).0);
        let (ns, t) = run_once(true, per);
        on.push(ns);
        last = Some(t);
    }
    let (off_ns, on_ns) = (median(off.clone()), median(on.clone()));
    // Label every record of the last `on` table (100 k flows with heads).
    let mut t = last.expect("five runs");
    let mut recs: Vec<FlowRecord> = Vec::with_capacity(FLOWS as usize);
    t.drain(&mut |r| recs.push(*r));
    let with_heads = recs
        .iter()
        .filter(|r| r.first_payload.dir.iter().any(|h| h.is_some()))
        .count();
    assert_eq!(
        with_heads,
        recs.len(),
        "every synthetic flow carries payload"
    );
    let c = applabel::classifier().expect("built-in rules");
    let mut label_ns = Vec::new();
    let mut known = 0usize;
    for _ in 0..5 {
        let start = Instant::now();
        known = recs
            .iter()
            .filter(|r| applabel::label_with(c, std::hint::black_box(r)).is_known())
            .count();
        label_ns.push(start.elapsed().as_secs_f64() * 1e9 / recs.len() as f64);
    }
    let label_ns = median(label_ns);
    let heads_share = (on_ns - off_ns) / on_ns;
    let share10 = (on_ns - off_ns + label_ns / 10.0) / (on_ns + label_ns / 10.0);
    println!(
        "{:>12} {:>12} {:>12} {:>14} {:>16}",
        "off_ns/pkt", "on_ns/pkt", "heads_share", "label_ns/flow", "share_10pkt_flows"
    );
    println!(
        "{off_ns:>12.1} {on_ns:>12.1} {:>11.1}% {label_ns:>14.1} {:>15.1}%",
        heads_share * 100.0,
        share10 * 100.0
    );
    println!(
        "  runs off {off:.1?}\n  runs on  {on:.1?}\n  labelled known: {known}/{}",
        recs.len()
    );
    let mut ir = serde_json::Value::Null;
    if o.callgrind {
        match callgrind_per_packet(o) {
            Ok((off_ir, on_ir)) => {
                let share = (on_ir - off_ir) / on_ir;
                println!(
                    "  callgrind instructions/packet: off {off_ir:.1}, on {on_ir:.1}, heads share {:.2}%",
                    share * 100.0
                );
                ir = serde_json::json!({"off_ir_per_packet": off_ir, "on_ir_per_packet": on_ir, "heads_share_ir": share});
            }
            Err(e) => println!("  callgrind: {e}"),
        }
    }
    vec![serde_json::json!({
        "suite": "applabel", "frame_bytes": 64, "flows": FLOWS, "callgrind": ir,
        "off_ns_per_packet_median_of_5": off_ns, "on_ns_per_packet_median_of_5": on_ns,
        "heads_share": heads_share, "label_ns_per_flow_median_of_5": label_ns,
        "label_share_10pkt": share10,
    })]
}

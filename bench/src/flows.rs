//! `flows` suite: the flow table alone on one core, next to
//! `hashbrown::HashMap` on the same keys and the same packet sequence.
//!
//! Keys are IPv4/UDP 5-tuples made from a flow id (made once, before the
//! timed part, for every implementation); both directions occur.
//! Per configuration (1 k, 100 k, 1 M, 4 M flows; uniform or Zipf s = 1
//! popularity, popular ids scattered by a permutation) a sequence of 4 Mi
//! packet choices is drawn once; each implementation first sees every flow
//! once (warm-up), then replays the sequence in bursts of 64 for the
//! measured time. Per burst the time is taken (`Instant`, ~25 ns of it per
//! 64 packets) for p50 / p99 / p99.9 / max.
//!
//! Every column first prefetches the burst's inputs (a NIC's frames are in
//! cache when the worker reads them; `rte_hash_lookup_bulk` also reads its
//! keys in a tight first pass).
//!
//! - `linecap`: the table as the capture worker runs it: per packet
//!   `BurstPacket::common` (from the 24-byte `wire::flow::CommonFlow` that
//!   the worker's flows-only path gets; hashes the key) and
//!   `prefetch_bucket`; per burst `stage` of this burst and `apply` of the
//!   one staged a burst before, + `take_expired`; table of 2x flows slots.
//! - `hashbrown`: `HashMap<FlowKey, counters>` with the capacity reserved,
//!   `entry().or_insert` + the same counter update (no expiry, no eviction),
//!   from the packets' `PacketInfo`.
//! - `churn`: 1 M live flows, a new flow every 100 packets and one leaving
//!   (100 k new flows/s at a packet clock of 10 Mpps), 1 s idle timeout:
//!   flows end by expiry ([`FlowTable::expire_step`] per burst, inside the
//!   timed burst), steady state after 2 s of packet time.
//!
//! - `rte_hash` (feature `dpdk`): DPDK 22.11's `rte_hash` (CRC32 hash,
//!   `rte_hash_lookup_bulk` in bursts of 32, `rte_hash_add_key` on a miss,
//!   the same counter update) on the same keys and sequence, in a child
//!   program (`csrc/rte_hash_bench.c`, compiled here with `cc` and
//!   `pkg-config libdpdk`; EAL with `--no-huge`).

use std::time::Instant;

use hashbrown::HashMap;
use linecap_dataplane::flowtable::{
    BurstPacket, EXPIRE_STEP_BUCKETS, FlowTable, NO_SLOT, Timeouts,
};
use linecap_dataplane::prefetch::prefetch;
use linecap_wire::flow::{CommonFlow, FlowKey, IpFamily, PacketInfo, VlanStack};

use crate::Opts;
use crate::jitter::{percentiles, print_floors};

const BURST: usize = 64;
const SEQ_LEN: usize = 1 << 22;

/// xorshift64*.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }
}

fn packet(id: u64, a_to_b: bool) -> PacketInfo {
    let mut src = [0u8; 16];
    src[..4].copy_from_slice(&(0x0a00_0000u32 | (id as u32 & 0x00ff_ffff)).to_be_bytes());
    let mut dst = [0u8; 16];
    dst[..4].copy_from_slice(&[192, 168, 0, 1]);
    let sport = 1024 + (id >> 24) as u16;
    let (s, sp, d, dp) = if a_to_b {
        (src, sport, dst, 53)
    } else {
        (dst, 53, src, sport)
    };
    let (key, a_to_b) =
        FlowKey::from_endpoints(VlanStack::new(), 17, false, IpFamily::V4, s, sp, d, dp);
    PacketInfo {
        key,
        a_to_b,
        tcp_flags: 0,
        l4_truncated: false,
        l4_malformed: false,
        ip_truncated: false,
        fragment: None,
        mpls_labels: 0,
        l3_offset: 14,
        l4_offset: 34,
        payload: linecap_wire::applabel::PayloadHead::NONE,
    }
}

/// Flow ids of `SEQ_LEN` packets: uniform, or Zipf(1) over ranks mapped to
/// ids by a random permutation.
fn sequence(flows: u64, zipf: bool, rng: &mut Rng) -> Vec<u32> {
    if !zipf {
        return (0..SEQ_LEN).map(|_| rng.below(flows) as u32).collect();
    }
    let mut cdf = Vec::with_capacity(flows as usize);
    let mut acc = 0.0f64;
    for r in 1..=flows {
        acc += 1.0 / r as f64;
        cdf.push(acc);
    }
    let mut perm: Vec<u32> = (0..flows as u32).collect();
    for i in (1..perm.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        perm.swap(i, j);
    }
    (0..SEQ_LEN)
        .map(|_| {
            let u = (rng.next() >> 11) as f64 / (1u64 << 53) as f64 * acc;
            let r = cdf.partition_point(|c| *c < u).min(perm.len() - 1);
            perm[r]
        })
        .collect()
}

struct Run {
    /// Packets per µs of median burst time (robust to preemption).
    mpps: f64,
    /// Packets / summed burst time (includes preempted bursts).
    mpps_mean: f64,
    lat: (f64, f64, f64, f64),
    /// Bursts timed.
    samples: usize,
    mem: usize,
}

/// The packet as the worker's flows-only path hands it to the table
/// (`wire::flow::parse_common`'s 24 bytes; the hash is computed in the timed
/// part from it, as the worker does).
fn common_of(p: &PacketInfo) -> CommonFlow {
    let four = |a: &[u8; 16]| [a[0], a[1], a[2], a[3]];
    CommonFlow {
        addr_a: four(p.key.addr_a_bytes()),
        port_a: p.key.port_a(),
        addr_b: four(p.key.addr_b_bytes()),
        port_b: p.key.port_b(),
        proto: p.key.proto(),
        a_to_b: p.a_to_b,
        tcp_flags: p.tcp_flags,
        payload: p.payload,
    }
}

fn run_linecap(flows: u64, infos: &[PacketInfo], seq: &[u32], seconds: f64) -> Run {
    let common: Vec<CommonFlow> = infos.iter().map(common_of).collect();
    let slots = (flows as usize * 2).next_power_of_two().max(1024);
    let mut t = FlowTable::new(slots, Timeouts::default()).expect("flow table");
    t.first_touch();
    let mut burst = Vec::with_capacity(BURST);
    let mut sink = |_: &linecap_dataplane::flowtable::FlowRecord| {};
    for info in infos {
        burst.push(BurstPacket::new(info, 1, 64, 64));
        if burst.len() == BURST {
            t.update_burst(&burst);
            burst.clear();
        }
    }
    t.update_burst(&burst);
    burst.clear();
    let mut lat = Vec::with_capacity(1 << 20);
    let mut n = 0u64;
    let mut busy = 0.0f64;
    let (mut prev, mut slots, mut prev_slots) = (Vec::with_capacity(BURST), vec![], vec![]);
    let start = Instant::now();
    let mut ts = 2u64;
    'outer: loop {
        for chunk in seq.chunks(BURST) {
            let t0 = Instant::now();
            // The burst's packets first come into cache, as a NIC's frames
            // are when the worker reads them (all three columns do this).
            for &id in chunk {
                prefetch(&common[id as usize]);
            }
            for &id in chunk {
                let p = BurstPacket::common(&common[id as usize], ts, 64, 64);
                t.prefetch_bucket(p.hash());
                burst.push(p);
            }
            // As the capture worker runs the table: stage this burst, apply
            // the one staged a burst ago (the same work, a burst apart).
            slots.clear();
            slots.resize(burst.len(), NO_SLOT);
            t.stage(&burst, &mut slots);
            t.apply(&prev, &prev_slots);
            std::mem::swap(&mut burst, &mut prev);
            std::mem::swap(&mut slots, &mut prev_slots);
            t.take_expired(&mut sink);
            burst.clear();
            let d = t0.elapsed();
            busy += d.as_secs_f64();
            if lat.len() < lat.capacity() {
                lat.push(d.as_nanos().min(u128::from(u32::MAX)) as u32);
            }
            n += chunk.len() as u64;
            ts += 1;
            if n.is_multiple_of(1 << 16) && start.elapsed().as_secs_f64() >= seconds {
                break 'outer;
            }
        }
    }
    t.apply(&prev, &prev_slots);
    let c = t.counters();
    assert_eq!(c.evicted, 0, "the table holds every flow: {c:?}");
    assert_eq!(c.packets, infos.len() as u64 + n, "every packet applied");
    let samples = lat.len();
    let lat = percentiles(lat);
    Run {
        mpps: BURST as f64 / lat.0 * 1e3,
        mpps_mean: n as f64 / busy / 1e6,
        lat,
        samples,
        mem: t.memory_bytes(),
    }
}

#[derive(Default, Clone, Copy)]
struct Ctr {
    first_ns: u64,
    last_ns: u64,
    packets: [u64; 2],
    bytes: [u64; 2],
}

fn run_hashbrown(flows: u64, infos: &[PacketInfo], seq: &[u32], seconds: f64) -> Run {
    let mut m: HashMap<FlowKey, Ctr> = HashMap::with_capacity(flows as usize);
    let upd = |m: &mut HashMap<FlowKey, Ctr>, p: &PacketInfo, ts: u64| {
        let c = m.entry(p.key).or_insert(Ctr {
            first_ns: ts,
            ..Ctr::default()
        });
        let d = usize::from(!p.a_to_b);
        c.packets[d] += 1;
        c.bytes[d] += 64;
        c.last_ns = c.last_ns.max(ts);
    };
    for info in infos {
        upd(&mut m, info, 1);
    }
    let mut lat = Vec::with_capacity(1 << 20);
    let mut n = 0u64;
    let mut busy = 0.0f64;
    let start = Instant::now();
    let mut ts = 2u64;
    'outer: loop {
        for chunk in seq.chunks(BURST) {
            let t0 = Instant::now();
            for &id in chunk {
                prefetch(&infos[id as usize]);
            }
            for &id in chunk {
                upd(&mut m, &infos[id as usize], ts);
            }
            let d = t0.elapsed();
            busy += d.as_secs_f64();
            if lat.len() < lat.capacity() {
                lat.push(d.as_nanos().min(u128::from(u32::MAX)) as u32);
            }
            n += chunk.len() as u64;
            ts += 1;
            if n.is_multiple_of(1 << 16) && start.elapsed().as_secs_f64() >= seconds {
                break 'outer;
            }
        }
    }
    std::hint::black_box(m.values().map(|c| c.first_ns).max());
    let samples = lat.len();
    let lat = percentiles(lat);
    Run {
        mpps: BURST as f64 / lat.0 * 1e3,
        mpps_mean: n as f64 / busy / 1e6,
        lat,
        samples,
        mem: m.allocation_size(),
    }
}

/// 1 M live flows, one new (and one leaving) every 100 packets, packet
/// clock 100 ns per packet, idle timeout 1 s; expiry step per burst.
fn run_churn(live: u64, seconds: f64) -> (Run, u64, u64) {
    let slots = (live as usize * 2).next_power_of_two();
    let timeouts = Timeouts {
        idle_ns: 1_000_000_000,
        active_ns: 300_000_000_000,
        linger_ns: 2_000_000_000,
    };
    let mut t = FlowTable::new(slots, timeouts).expect("flow table");
    t.first_touch();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut burst = Vec::with_capacity(BURST);
    let mut ended = 0u64;
    let mut base = 0u64;
    let mut ts = 1_000u64;
    let mut k = 0u64;
    let mut lat = Vec::with_capacity(1 << 21);
    let mut n = 0u64;
    let mut busy = 0.0f64;
    // Steady state: the first 2 s of packet time (idle timeout + one
    // cursor round and more) are not measured.
    let warm_ns = 2_000_000_000 + ts;
    let mut start: Option<Instant> = None;
    loop {
        let t0 = Instant::now();
        for _ in 0..BURST {
            k += 1;
            if k.is_multiple_of(100) {
                base += 1;
            }
            let id = base + rng.below(live);
            burst.push(BurstPacket::new(&packet(id, id & 1 == 0), ts, 64, 64));
            ts += 100;
        }
        t.update_burst(&burst);
        burst.clear();
        t.expire_step(0, EXPIRE_STEP_BUCKETS, &mut |_| ended += 1);
        let d = t0.elapsed();
        if ts >= warm_ns {
            let s = *start.get_or_insert_with(Instant::now);
            busy += d.as_secs_f64();
            n += BURST as u64;
            if lat.len() < lat.capacity() {
                lat.push(d.as_nanos().min(u128::from(u32::MAX)) as u32);
            }
            if n.is_multiple_of(1 << 16) && s.elapsed().as_secs_f64() >= seconds {
                break;
            }
        }
    }
    let c = *t.counters();
    (
        Run {
            mpps: BURST as f64 / percentiles(lat.clone()).0 * 1e3,
            mpps_mean: n as f64 / busy / 1e6,
            samples: lat.len(),
            lat: percentiles(lat),
            mem: t.memory_bytes(),
        },
        c.active,
        c.evicted,
    )
}

/// `--flows`: table sizes, each 1 to 2^28 flows (the table holds twice as
/// many slots).
pub fn parse_flows(list: &str) -> Result<Vec<u64>, String> {
    list.split(',')
        .map(|x| {
            x.trim()
                .parse::<u64>()
                .ok()
                .filter(|n| (1..=1 << 28).contains(n))
                .ok_or_else(|| format!("--flows: {x:?} is not a flow count from 1 to 268435456"))
        })
        .collect()
}

pub fn suite(o: &Opts) -> Vec<serde_json::Value> {
    let seconds = (o.seconds / 2.0).max(0.5);
    println!(
        "flows: flow table alone (lookup-or-add + counter update), one core, bursts of 64, {seconds:.1} s each"
    );
    println!(
        "{:>9} {:>8} {:>10} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "flows", "dist", "impl", "Mpps_p50", "p50_ns", "p99_ns", "p99.9_ns", "max_ns", "MiB"
    );
    let mut out = Vec::new();
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let mut ratio_1m = None;
    for flows in parse_flows(&o.flows).unwrap_or_default() {
        for zipf in [false, true] {
            let seq = sequence(flows, zipf, &mut rng);
            // The packets of each flow, made once: no implementation pays
            // for building keys in the timed part.
            let infos: Vec<PacketInfo> = (0..flows).map(|id| packet(id, id & 1 == 0)).collect();
            let dist = if zipf { "zipf1" } else { "uniform" };
            let lc = run_linecap(flows, &infos, &seq, seconds);
            let hb = run_hashbrown(flows, &infos, &seq, seconds);
            let rte = rte_hash_mpps(flows, &seq, seconds);
            if let Some(m) = rte {
                println!("{flows:>9} {dist:>8} {:>10} {m:>8.2}", "rte_hash");
                out.push(serde_json::json!({
                    "suite": "flows", "impl": "rte_hash", "flows": flows, "dist": dist, "mpps": m,
                }));
            }
            for (name, r) in [("linecap", &lc), ("hashbrown", &hb)] {
                println!(
                    "{flows:>9} {dist:>8} {name:>10} {:>8.2} {:>9.0} {:>9.0} {:>9.0} {:>9.0} {:>9.1}",
                    r.mpps,
                    r.lat.0,
                    r.lat.1,
                    r.lat.2,
                    r.lat.3,
                    r.mem as f64 / f64::from(1 << 20)
                );
                out.push(serde_json::json!({
                    "suite": "flows", "impl": name, "flows": flows, "dist": dist,
                    "mpps": r.mpps, "mpps_mean": r.mpps_mean, "burst_ns_p50": r.lat.0, "burst_ns_p99": r.lat.1,
                    "burst_ns_p999": r.lat.2, "burst_ns_max": r.lat.3, "memory_bytes": r.mem,
                }));
            }
            let ratio = lc.mpps / hb.mpps;
            let vs_rte = rte.map_or(String::new(), |m| {
                format!(", linecap/rte_hash = {:.2}x", lc.mpps / m)
            });
            println!(
                "{:>9} {dist:>8} linecap/hashbrown = {ratio:.2}x{vs_rte}",
                ""
            );
            if flows == 1_000_000 && !zipf {
                ratio_1m = Some((lc.mpps, hb.mpps, ratio, rte));
            }
        }
    }
    let (ch, active, evicted) = run_churn(1_000_000, seconds * 2.0);
    let spread = ch.lat.3 / ch.lat.0.max(1.0);
    println!(
        "\nchurn: 1 M live flows, 100 k new flows/s of packet time, 1 s idle timeout, expiry step per burst"
    );
    println!(
        "  {:.2} Mpps, burst p50 {:.0} ns, p99 {:.0}, p99.9 {:.0}, max {:.0} ns; active at end {active}, evicted {evicted}",
        ch.mpps, ch.lat.0, ch.lat.1, ch.lat.2, ch.lat.3
    );
    out.push(serde_json::json!({
        "suite": "flows", "impl": "linecap", "flows": 1_000_000, "dist": "churn_100k_new_per_s",
        "mpps": ch.mpps, "burst_ns_p50": ch.lat.0, "burst_ns_p99": ch.lat.1,
        "burst_ns_p999": ch.lat.2, "burst_ns_max": ch.lat.3, "memory_bytes": ch.mem,
        "active_at_end": active, "evicted": evicted,
    }));
    let floor = memory_floor();
    println!(
        "\nmemory floor (320 MiB, THP advised, 1 M random 64-B lines): dependent load {:.0} ns; \
         independent loads {:.1} ns/line, aligned 128-B pairs {:.1} ns/pair, two unrelated lines {:.1} ns/pair",
        floor.0, floor.1, floor.2, floor.3
    );
    out.push(serde_json::json!({
        "suite": "flows", "memory_floor": true, "dependent_load_ns": floor.0,
        "random_line_ns": floor.1, "line_pair_ns": floor.2, "two_lines_ns": floor.3,
    }));
    println!("\ngoal ratios (issue 19):");
    if let Some((lc, hb, r, rte)) = ratio_1m {
        println!("  flow table / hashbrown, 1 M flows uniform: {r:.2}x ({lc:.2} / {hb:.2} Mpps)");
        out.push(serde_json::json!({
            "suite": "flows", "goal": "table_vs_hashbrown_1m", "ratio": r,
            "linecap_mpps": lc, "hashbrown_mpps": hb,
        }));
        match rte {
            Some(m) => {
                println!(
                    "  flow table / rte_hash, 1 M flows uniform: {:.2}x ({lc:.2} / {m:.2} Mpps), goal >= 1.5x",
                    lc / m
                );
                out.push(serde_json::json!({
                    "suite": "flows", "goal": "table_vs_rte_hash_1m", "ratio": lc / m,
                    "linecap_mpps": lc, "rte_hash_mpps": m,
                }));
            }
            None => println!("  flow table / rte_hash: not measured (build with --features dpdk)"),
        }
    }
    println!(
        "  max / median burst time, 1 M flows with expiry (churn): {spread:.1}x ({:.0} / {:.0} ns, p99.9 {:.1}x), goal <= 10x",
        ch.lat.3,
        ch.lat.0,
        ch.lat.2 / ch.lat.0.max(1.0)
    );
    // What the VM adds by itself (`jitter.rs`).
    let mut row = print_floors(ch.lat, ch.samples);
    row["suite"] = "flows".into();
    row["goal"] = "burst_max_over_median_1m_churn".into();
    row["ratio"] = spread.into();
    row["burst_ns_max"] = ch.lat.3.into();
    row["burst_ns_p50"] = ch.lat.0.into();
    row["burst_ns_p999"] = ch.lat.2.into();
    out.push(row);
    out
}

/// The 48-byte key the `rte_hash` child stores for flow `id` (any fixed
/// encoding of the same canonical key will do: it only has to be equal for
/// equal flows and different for different ones).
#[cfg(feature = "dpdk")]
fn key_bytes(id: u64) -> [u8; 48] {
    let k = packet(id, true).key;
    let mut b = [0u8; 48];
    b[..16].copy_from_slice(k.addr_a_bytes());
    b[16..32].copy_from_slice(k.addr_b_bytes());
    b[32..34].copy_from_slice(&k.port_a().to_le_bytes());
    b[34..36].copy_from_slice(&k.port_b().to_le_bytes());
    b[36] = k.proto();
    b[37] = k.family() as u8;
    b
}

/// Mpps of `rte_hash` lookup-or-add + counter update on the same keys and
/// sequence, or `None` (with a message) when it cannot run.
#[cfg(feature = "dpdk")]
fn rte_hash_mpps(flows: u64, seq: &[u32], seconds: f64) -> Option<f64> {
    use std::io::Write;
    use std::process::Command;
    let dir = std::env::temp_dir().join(format!("lc-rtehash-{}", std::process::id()));
    std::fs::create_dir_all(&dir).ok()?;
    let src = dir.join("rte_hash_bench.c");
    let exe = dir.join("rte_hash_bench");
    if !exe.exists() {
        std::fs::write(&src, include_str!("../csrc/rte_hash_bench.c")).ok()?;
        let cmd = format!(
            "cc -O2 -o '{}' '{}' $(pkg-config --cflags --libs libdpdk)",
            exe.display(),
            src.display()
        );
        let ok = Command::new("sh")
            .args(["-c", &cmd])
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("flows: could not build the rte_hash child ({cmd})");
            return None;
        }
    }
    let keys = dir.join("keys.bin");
    let seqf = dir.join("seq.bin");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&keys).ok()?);
        for id in 0..flows {
            f.write_all(&key_bytes(id)).ok()?;
        }
        let mut g = std::io::BufWriter::new(std::fs::File::create(&seqf).ok()?);
        for id in seq {
            g.write_all(&id.to_le_bytes()).ok()?;
        }
    }
    let out = Command::new(&exe)
        .arg(&keys)
        .arg(&seqf)
        .arg(seconds.to_string())
        .output()
        .ok()?;
    let _ = std::fs::remove_dir_all(&dir);
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = match text.lines().last().map(serde_json::from_str) {
        Some(Ok(v)) => v,
        _ => {
            eprintln!(
                "flows: rte_hash child failed: {}{}",
                text,
                String::from_utf8_lossy(&out.stderr)
            );
            return None;
        }
    };
    // Per-packet cost from the median burst (robust to preemption on a
    // shared machine), as for the other implementations.
    let p50 = v["burst_ns_p50"].as_f64()?;
    let burst = v["burst"].as_f64()?;
    Some(burst / p50 * 1e3)
}

#[cfg(not(feature = "dpdk"))]
fn rte_hash_mpps(_flows: u64, _seq: &[u32], _seconds: f64) -> Option<f64> {
    None
}

/// What this machine's memory gives a table in DRAM: ns per access of a
/// dependent chain of random 64-byte lines (latency), and per access of
/// independent random lines, of aligned 128-byte pairs (both lines read)
/// and of two unrelated lines (throughput with every miss in flight the
/// core allows). Over 320 MiB (about the 1 M-flow table's 340 MiB) with
/// `MADV_HUGEPAGE`, as the table's arrays are.
fn memory_floor() -> (f64, f64, f64, f64) {
    const BYTES: usize = 320 << 20;
    const LINES: usize = BYTES / 64;
    let Ok(mut map) = memmap2::MmapMut::map_anon(BYTES) else {
        return (0.0, 0.0, 0.0, 0.0);
    };
    let _ = map.advise(memmap2::Advice::HugePage);
    for (i, b) in map.iter_mut().enumerate().step_by(64) {
        *b = i as u8;
    }
    let word = |m: &[u8], line: usize| -> u64 {
        let at = (line % LINES) * 64;
        m.get(at..at + 8)
            .and_then(|s| s.try_into().ok())
            .map_or(0, u64::from_le_bytes)
    };
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let idx: Vec<usize> = (0..1 << 20)
        .map(|_| rng.below(LINES as u64) as usize)
        .collect();
    let time = |f: &mut dyn FnMut() -> u64| {
        let t = Instant::now();
        std::hint::black_box(f());
        t.elapsed().as_secs_f64() * 1e9 / idx.len() as f64
    };
    let m = &map[..];
    let dependent = time(&mut || {
        // An LCG step plus the loaded word: each address depends on the
        // previous load.
        let (mut x, mut j) = (1u64, 0usize);
        for _ in 0..idx.len() / 8 {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407 ^ (word(m, j) & 1));
            j = (x >> 24) as usize;
        }
        j as u64
    }) * 8.0;
    let lines = time(&mut || idx.iter().fold(0, |a, &i| a ^ word(m, i)));
    let pairs = time(&mut || {
        idx.iter()
            .fold(0, |a, &i| a ^ word(m, i & !1) ^ word(m, i | 1))
    });
    let two = time(&mut || {
        idx.iter()
            .fold(0, |a, &i| a ^ word(m, i) ^ word(m, i + LINES / 2))
    });
    (dependent, lines, pairs, two)
}

//! `bench dpdk` (feature `dpdk`): the DPDK receive path on `net_null` (64-byte
//! frames, one queue, one core each, `--no-huge`), in one run:
//!
//! 1. `dpdk-testpmd --forward-mode=rxonly`: DPDK's own receive loop (Rx-pps
//!    from its `--stats-period 1` lines, median of the last readings);
//! 2. linecap with the writer off (a child process of this bench, since the
//!    EAL initialises once per process): (a) the bare `DpdkQueue` loop
//!    (rx_burst, read each mbuf, free the burst) and (b) the linecap worker
//!    (parse + ERF record into a ring slot) with the ring released in the same
//!    thread between bursts, as `bench worker` does; each with a TSC read per
//!    frame (`--dpdk-timestamps frame`, the default) and per burst (`burst`),
//!    on two net_null ports of the same EAL;
//! 3. the `linecap` binary (built with `--features dpdk`, found next to this
//!    bench) capturing to files, LZ4 on and off: received and written Mpps.
//!
//! It prints Mpps and the ratio to testpmd. The goal (issue 4) is ≥ 0.8×
//! testpmd for 2(b). Figures in docs/benchmarks.md.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use linecap_dataplane::clock::ManualClock;
use linecap_dataplane::counters::SharedCounters;
use linecap_dataplane::dpdk::{Eal, Port, PortConfig, TscStamps};
use linecap_dataplane::ring::{HugePages, RingConfig, ring};
use linecap_dataplane::source::{Frame, FrameSink, RxQueue};
use linecap_dataplane::worker::{Worker, WorkerConfig};

const VDEV: &str = "net_null0,size=64";

/// The second port of the rx child (TSC stamps per burst).
const VDEV_BURST: &str = "net_null1,size=64";

fn eal_args(core: usize, vdevs: &[&str]) -> Vec<String> {
    let vdevs: String = vdevs.iter().map(|v| format!(" --vdev {v}")).collect();
    format!(
        "-l {core} --no-pci --no-huge -m 1024 --no-shconf --no-telemetry --log-level notice \
         --file-prefix lcbench-{}{vdevs}",
        std::process::id()
    )
    .split_whitespace()
    .map(String::from)
    .collect()
}

/// The orchestrating run.
pub fn suite(seconds: f64) -> Vec<serde_json::Value> {
    let secs = seconds.max(2.0);
    let testpmd = testpmd_mpps(secs);
    println!("dpdk-testpmd rxonly, net_null 64 B, 1 core:   {testpmd:6.2} Mpps");
    let exe = std::env::current_exe().expect("current exe");
    let out = Command::new(&exe)
        .args(["dpdk-rx", "--seconds", &secs.to_string()])
        .stderr(Stdio::inherit())
        .output()
        .expect("running the rx child");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("rx child: {e}: {}", String::from_utf8_lossy(&out.stdout)));
    let bare = v["bare_mpps"].as_f64().unwrap_or(0.0);
    let worker = v["worker_mpps"].as_f64().unwrap_or(0.0);
    let bare_b = v["bare_burst_mpps"].as_f64().unwrap_or(0.0);
    let worker_b = v["worker_burst_mpps"].as_f64().unwrap_or(0.0);
    let ratio = |x: f64| if testpmd > 0.0 { x / testpmd } else { 0.0 };
    println!(
        "linecap DpdkQueue loop (no worker), TSC/frame: {bare:6.2} Mpps  ({:.2}x testpmd)",
        ratio(bare)
    );
    println!(
        "linecap DpdkQueue loop (no worker), TSC/burst: {bare_b:6.2} Mpps  ({:.2}x testpmd)",
        ratio(bare_b)
    );
    println!(
        "linecap worker, writer off, TSC/frame:         {worker:6.2} Mpps  ({:.2}x testpmd; goal >= 0.8x)",
        ratio(worker)
    );
    println!(
        "linecap worker, writer off, TSC/burst:         {worker_b:6.2} Mpps  ({:.2}x testpmd; goal >= 0.8x)",
        ratio(worker_b)
    );
    if bare > 0.0 && bare_b > 0.0 {
        println!(
            "  a TSC read per frame costs {:.1} ns/frame in the bare loop",
            1e3 / bare - 1e3 / bare_b
        );
    }
    let mut results = vec![
        serde_json::json!({"bench": "dpdk_testpmd_rxonly", "mpps": testpmd}),
        serde_json::json!({"bench": "dpdk_linecap_rx_loop", "stamps": "frame", "mpps": bare, "ratio": ratio(bare)}),
        serde_json::json!({"bench": "dpdk_linecap_rx_loop", "stamps": "burst", "mpps": bare_b, "ratio": ratio(bare_b)}),
        serde_json::json!({"bench": "dpdk_linecap_worker_writer_off", "stamps": "frame", "mpps": worker, "ratio": ratio(worker)}),
        serde_json::json!({"bench": "dpdk_linecap_worker_writer_off", "stamps": "burst", "mpps": worker_b, "ratio": ratio(worker_b)}),
    ];
    let linecap = exe.with_file_name("linecap");
    if !linecap.exists() {
        println!(
            "linecap with the writer: skipped, {} is missing (cargo build --release -p linecap --features dpdk)",
            linecap.display()
        );
        return results;
    }
    for (compress, stamps) in [(true, "frame"), (false, "frame"), (false, "burst")] {
        match linecap_capture(&linecap, compress, stamps, secs) {
            Ok((rx, written)) => {
                println!(
                    "linecap capture, writer on, LZ4 {:3}, TSC/{stamps:5}: {rx:6.2} Mpps received ({:.2}x testpmd), {written:6.2} Mpps written",
                    if compress { "on" } else { "off" },
                    ratio(rx)
                );
                results.push(serde_json::json!({
                    "bench": if compress { "dpdk_linecap_writer_lz4" } else { "dpdk_linecap_writer_plain" },
                    "stamps": stamps,
                    "rx_mpps": rx, "written_mpps": written, "ratio": ratio(rx),
                }));
            }
            Err(e) => println!("linecap capture (compress {compress}, stamps {stamps}): {e}"),
        }
    }
    results
}

/// Run testpmd for `secs`; the median of its Rx-pps readings after the first.
fn testpmd_mpps(secs: f64) -> f64 {
    let mut child = Command::new("dpdk-testpmd")
        .args(
            eal_args(0, &[VDEV])
                .iter()
                .filter(|a| !a.starts_with("-l"))
                .skip(1),
        )
        .args(["-l", "0,1", "--"])
        .args([
            "--forward-mode=rxonly",
            "--auto-start",
            "--stats-period",
            "1",
            "--nb-cores",
            "1",
            "--total-num-mbufs",
            "16384",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("dpdk-testpmd (apt-get install dpdk)");
    std::thread::sleep(Duration::from_secs_f64(secs + 1.5));
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let out = child.wait_with_output().expect("testpmd output");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut pps: Vec<f64> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Rx-pps:"))
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .filter(|&v: &f64| v > 0.0)
        .collect();
    if pps.len() > 1 {
        pps.remove(0);
    }
    pps.sort_by(|a, b| a.total_cmp(b));
    pps.get(pps.len() / 2).copied().unwrap_or(0.0) / 1e6
}

/// One capture by the linecap binary: (received Mpps, written Mpps).
fn linecap_capture(
    linecap: &PathBuf,
    compress: bool,
    stamps: &str,
    secs: f64,
) -> Result<(f64, f64), String> {
    let dir = std::env::temp_dir().join(format!("lcbench-dpdk-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let json = dir.with_extension("json");
    let mut c = Command::new(linecap);
    c.args(["capture", "--no-metrics", "--source"])
        .arg(format!("dpdk:{VDEV}"))
        .args(["--duration", &secs.to_string(), "-C", "256M", "-W", "2"])
        .args(["--cores", "1", "--dpdk-timestamps", stamps])
        .arg("--out")
        .arg(&dir)
        .arg("--report-json")
        .arg(&json)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if !compress {
        c.arg("--no-compress");
    }
    let st = c.status().map_err(|e| e.to_string())?;
    let _ = std::fs::remove_dir_all(&dir);
    if !st.success() {
        return Err(format!("linecap exited {st}"));
    }
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(&json);
    let q = &r["queues"][0];
    let rx = q["worker"]["rx_packets"].as_f64().unwrap_or(0.0);
    let written = q["written"].as_f64().unwrap_or(0.0);
    Ok((rx / secs / 1e6, written / secs / 1e6))
}

struct Count(u64);

impl FrameSink for Count {
    #[inline]
    fn frame(&mut self, f: Frame<'_>) {
        // Touch the frame as a consumer would (length and first byte).
        self.0 += 1 + u64::from(f.data.first().copied().unwrap_or(0) == 0xff);
    }
}

/// Frames per second of the bare queue loop for `for_` (rx_burst, each
/// mbuf read and handed to a counting sink, free).
fn bare_loop(q: &mut linecap_dataplane::dpdk::DpdkQueue, for_: Duration) -> f64 {
    let mut sink = Count(0);
    let start = Instant::now();
    let mut polls = 0u64;
    loop {
        q.poll_burst(64, &mut sink);
        polls += 1;
        if polls.is_multiple_of(1024) && start.elapsed() >= for_ {
            break;
        }
    }
    sink.0 as f64 / start.elapsed().as_secs_f64() / 1e6
}

/// Frames per second of the linecap worker (writer off: the ring released
/// in the same thread) on `q` for `for_`.
fn worker_loop(q: &mut linecap_dataplane::dpdk::DpdkQueue, for_: Duration) -> f64 {
    let (producer, mut consumer) = ring(RingConfig {
        slots: 16,
        batch_bytes: 1 << 20,
        hugepages: HugePages::Try,
    })
    .expect("ring");
    let mut w = Worker::new(
        WorkerConfig::new(0),
        producer,
        Arc::new(SharedCounters::default()),
    );
    let clock = ManualClock::new(0);
    let start = Instant::now();
    let mut polls = 0u64;
    loop {
        w.poll_once(q, &clock);
        while consumer.peek().is_some() {
            consumer.release();
        }
        polls += 1;
        if polls.is_multiple_of(1024) && start.elapsed() >= for_ {
            break;
        }
    }
    w.counters().rx_packets as f64 / start.elapsed().as_secs_f64() / 1e6
}

/// The child: EAL up, two net_null ports (TSC stamps per frame and per
/// burst), the bare loop and the worker on each; prints JSON.
pub fn rx_child(seconds: f64) {
    let _ = core_affinity::set_for_current(core_affinity::CoreId { id: 1 });
    let eal = Eal::init(&eal_args(1, &[VDEV, VDEV_BURST])).unwrap_or_else(|e| panic!("{e}"));
    let port = Port::open(eal, &PortConfig::new("net_null0")).unwrap_or_else(|e| panic!("{e}"));
    let port_b = Port::open(
        eal,
        &PortConfig {
            tsc_stamps: TscStamps::Burst,
            ..PortConfig::new("net_null1")
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut q = port.queues().pop().expect("one queue");
    let mut qb = port_b.queues().pop().expect("one queue");
    // Eight phases (four kinds, twice), interleaved so that drift of the
    // host hits both modes.
    let phase = Duration::from_secs_f64(seconds / 8.0);
    let (mut bare, mut bare_b, mut worker, mut worker_b) = (0.0, 0.0, 0.0, 0.0);
    for _ in 0..2 {
        bare += bare_loop(&mut q, phase) / 2.0;
        bare_b += bare_loop(&mut qb, phase) / 2.0;
        worker += worker_loop(&mut q, phase) / 2.0;
        worker_b += worker_loop(&mut qb, phase) / 2.0;
    }
    drop(q);
    drop(qb);
    drop(port);
    drop(port_b);
    let _ = linecap_dataplane::dpdk::eal::cleanup();
    println!(
        "{}",
        serde_json::json!({"bare_mpps": bare, "worker_mpps": worker,
            "bare_burst_mpps": bare_b, "worker_burst_mpps": worker_b})
    );
}

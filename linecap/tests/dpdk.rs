//! The DPDK receive path end to end on DPDK's virtual devices (feature
//! `dpdk`): each test starts its own `linecap` process, since the EAL
//! initialises once per process.
//!
//! - net_pcap: a real trace read back equals the trace (count, bytes, frames,
//!   timestamps to the µs the PMD gives), with 1 queue and with 3 queues (one
//!   `rx_pcap=` per queue);
//! - net_ring: frames injected with `tx_burst` come out of the writer byte for byte;
//! - net_null: SIGTERM stops the ports, flushes, cleans up the EAL;
//! - bad input gives clear errors;
//! - as root (`#[ignore]`, run by `.ci/privileged-tests`): net_af_packet on a
//!   veth inside the test's own namespaces, 500 k frames all accounted for;
//!   100 k frames from `bench gen` at a steady rate, each with its own
//!   timestamp (the kernel's receive stamp), never backwards, the gaps the
//!   kernel's; overload (seen = the generator's count, lctr = the drops); and
//!   a capture on hugepages (`vm.nr_hugepages` is restored afterwards).
//!
//! The unprivileged tests run DPDK with `--no-huge` (no hugepages are
//! reserved unless a test does it).
#![cfg(feature = "dpdk")]

mod common;

use common::*;
use linecap_reader::output::{OutFormat, PacketWriter};
use linecap_reader::read::{CaptureReader, Packet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// (µs timestamp, wire length, bytes) of every frame of a capture file.
type Frames = Vec<(u64, u32, Vec<u8>)>;

fn read_us(path: &Path) -> Frames {
    let mut r = CaptureReader::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut p = Packet::default();
    let mut v = Vec::new();
    while r.next(&mut p).unwrap_or_else(|e| panic!("{e}")) {
        // The trace's ns are cut to µs as libpcap does for net_pcap.
        v.push((p.ts_ns / 1000, p.wire_len, p.data.clone()));
    }
    v
}

/// `linecap read DIR -w pcap`, read back.
fn read_back(dir: &Path, tmp: &Path, name: &str) -> Frames {
    let out = tmp.join(format!("{name}.pcap"));
    run_ok(linecap().arg("read").arg(dir).arg("-w").arg(&out));
    read_us(&out)
}

fn tmpdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// A DPDK capture that ends after `seconds`; returns (stderr, report).
fn capture(args: &[&str], out: &Path, seconds: &str) -> (String, serde_json::Value) {
    let json = out.with_extension("json");
    let o = run(linecap()
        .args(["capture", "--no-metrics", "--duration", seconds])
        .arg("--out")
        .arg(out)
        .arg("--report-json")
        .arg(&json)
        .args(args));
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        o.status.success(),
        "linecap {args:?} failed ({}):\n{}\n{err}",
        o.status,
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(err.contains("EAL cleaned up"), "{err}");
    let r = report(&json);
    assert_balanced(&r);
    (err, r)
}

/// Traces whose frames are all complete (net_pcap keeps only the captured
/// length) and fit one mbuf.
const TRACES: [&str; 3] = [
    "tcpreplay__test.pcap",
    "zeek__wikipedia.pcap",
    "libtrace__vlan.pcap",
];

#[test]
fn net_pcap_one_queue_reads_back_the_trace() {
    let tmp = tmpdir();
    for t in TRACES {
        let trace = shared(&format!("traces/{t}"));
        let want = read_us(&trace);
        assert!(want.iter().all(|(_, w, d)| *w as usize == d.len()), "{t}");
        let out = tmp.path().join(t);
        let dev = format!("dpdk:net_pcap0,rx_pcap={}", trace.display());
        let (err, r) = capture(&["--source", &dev], &out, "2");
        assert!(err.contains("timestamps from the PMD (µs)"), "{err}");
        // `--hugepages try` (the default) runs EAL without hugepages
        // exactly when none are free (a fresh machine has none reserved).
        assert_eq!(err.contains("--no-huge"), no_hugepages_free(), "{err}");
        let got = read_back(&out, tmp.path(), t);
        assert_eq!(got.len(), want.len(), "{t}: count");
        let bytes = |f: &Frames| f.iter().map(|x| x.1 as u64).sum::<u64>();
        assert_eq!(bytes(&got), bytes(&want), "{t}: bytes");
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g, w, "{t}: frame {i} (µs, wire length, bytes)");
        }
        let q = &r["queues"][0];
        assert_eq!(q["written"], want.len() as u64);
        assert_eq!(q["nic"]["port_rx_packets"], want.len() as u64, "{q:#}");
        assert_eq!(q["dropped"]["nic"], 0);
    }
}

#[test]
fn net_pcap_three_queues_one_file_each() {
    let tmp = tmpdir();
    let trace = shared("traces/zeek__wikipedia.pcap");
    let want = read_us(&trace);
    // Queue k replays the frames i with i % 3 == k, with their own times.
    let mut files = Vec::new();
    for k in 0..3 {
        let p = tmp.path().join(format!("part{k}.pcap"));
        let mut w = PacketWriter::create(&p, OutFormat::Pcap).unwrap();
        for (_, (ts_us, wire, data)) in want.iter().enumerate().filter(|(i, _)| i % 3 == k) {
            w.write(&Packet {
                ts_ns: ts_us * 1000,
                wire_len: *wire,
                data: data.clone(),
                ..Packet::default()
            })
            .unwrap();
        }
        w.finish().unwrap();
        files.push(p);
    }
    let dev = format!(
        "dpdk:net_pcap0,{}",
        files
            .iter()
            .map(|f| format!("rx_pcap={}", f.display()))
            .collect::<Vec<_>>()
            .join(",")
    );
    let out = tmp.path().join("cap");
    let (err, r) = capture(&["--source", &dev, "--dpdk-queues", "3"], &out, "2");
    assert!(err.contains("3 queue(s)"), "{err}");
    assert_eq!(r["queues"].as_array().unwrap().len(), 3);
    for k in 0..3usize {
        let got = read_back(&out.join(format!("q{k:02}")), tmp.path(), &format!("q{k}"));
        let mine: Frames = want
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 3 == k)
            .map(|(_, f)| f.clone())
            .collect();
        assert_eq!(got, mine, "queue {k}");
        assert_eq!(r["queues"][k]["written"], mine.len() as u64);
    }
    // All queues merged by time give the whole trace back.
    let mut all = read_back(&out, tmp.path(), "all");
    let mut w = want.clone();
    all.sort();
    w.sort();
    assert_eq!(all, w);
}

#[test]
fn net_ring_injected_frames_come_out_byte_for_byte() {
    let tmp = tmpdir();
    for (t, queues) in [("zeek__wikipedia.pcap", "1"), ("tcpreplay__test.pcap", "1")] {
        let trace = shared(&format!("traces/{t}"));
        let want = read_us(&trace);
        let out = tmp.path().join(t);
        let (err, r) = capture(
            &[
                "--source",
                "dpdk:net_ring0",
                "--dpdk-queues",
                queues,
                "--dpdk-selftest-inject",
                trace.to_str().unwrap(),
            ],
            &out,
            "2",
        );
        assert!(
            err.contains(&format!("injected {} of {} frames", want.len(), want.len())),
            "{err}"
        );
        assert!(err.contains("timestamps from the TSC"), "{err}");
        let got = read_back(&out, tmp.path(), t);
        assert_eq!(got.len(), want.len(), "{t}");
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!((g.1, &g.2), (w.1, &w.2), "{t}: frame {i}");
        }
        // TSC timestamps are now-ish and never go back.
        let now_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros() as u64;
        assert!(got.windows(2).all(|p| p[0].0 <= p[1].0));
        assert!(
            got.iter()
                .all(|g| g.0 + 60_000_000 > now_us && g.0 <= now_us)
        );
        assert_eq!(r["queues"][0]["written"], want.len() as u64);
    }
}

/// GET http://127.0.0.1:port/metrics.
fn scrape(port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let (head, body) = buf.split_once("\r\n\r\n")?;
    head.contains(" 200 ").then(|| body.to_string())
}

#[test]
fn net_null_stops_cleanly_on_sigterm() {
    let tmp = tmpdir();
    let out = tmp.path().join("cap");
    let json = tmp.path().join("r.json");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (mut child, rx) = spawn_until(
        linecap()
            .args([
                "capture",
                "--source",
                "dpdk:net_null0,size=64",
                "-C",
                "64M",
                "-W",
                "2",
            ])
            .args(["--metrics", &format!("127.0.0.1:{port}")])
            .arg("--out")
            .arg(&out)
            .arg("--report-json")
            .arg(&json),
        "DPDK port net_null0",
    );
    // A failed assertion below must not leave the capture spinning.
    let mut guard = KillOnDrop::new(&child);
    std::thread::sleep(Duration::from_millis(1500));
    // The NIC drop counters are exported, and the exposition is valid.
    let body = scrape(port).expect("metrics endpoint");
    assert!(
        body.contains("linecap_nic_dropped_packets_total{capture_job=\"main\",queue=\"0\",counter=\"imissed\"}"),
        "{body}"
    );
    assert!(body.contains("counter=\"rx_nombuf\"") && body.contains("counter=\"ierrors\""));
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (package prometheus; bash .ci/setup)");
    {
        use std::io::Write;
        promtool
            .stdin
            .take()
            .unwrap()
            .write_all(body.as_bytes())
            .unwrap();
    }
    let p = promtool.wait_with_output().unwrap();
    assert!(
        p.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&p.stdout),
        String::from_utf8_lossy(&p.stderr)
    );
    signal(&child, "TERM");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            guard.disarm();
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let err: Vec<String> = rx.try_iter().collect();
    assert!(status.success(), "{status}: {err:?}");
    assert!(err.iter().any(|l| l.contains("EAL cleaned up")), "{err:?}");
    let r = report(&json);
    assert_balanced(&r);
    assert_eq!(r["stopped"], true);
    let q = &r["queues"][0];
    assert!(q["seen"].as_u64().unwrap() > 10_000, "{q:#}");
    // Everything the port delivered reached the worker (none left uncounted).
    assert_eq!(
        q["nic"]["port_rx_packets"], q["worker"]["rx_packets"],
        "{q:#}"
    );
    assert!(files_with(&out, ".part").is_empty(), "a file left open");
    assert!(!files_with(&out, ".erf.lz4").is_empty());
}

/// `--dpdk-timestamps`: on net_null (no PMD stamps) `frame` gives every frame
/// its own TSC stamp, `burst` one per receive burst (at most 64 frames);
/// the manifests name the clock, and stamps never go backwards.
#[test]
fn net_null_tsc_stamps_per_frame_or_per_burst() {
    let tmp = tmpdir();
    for (mode, clock) in [("frame", "tsc"), ("burst", "tsc-burst")] {
        let out = tmp.path().join(mode);
        let (err, r) = capture(
            &[
                "--source",
                "dpdk:net_null0,size=64",
                "--count",
                "100000",
                "--no-compress",
                "--dpdk-timestamps",
                mode,
            ],
            &out,
            "20",
        );
        assert!(
            err.contains(&format!("manifest clock {clock})")),
            "{mode}: the start-up line names the clock:\n{err}"
        );
        assert_eq!(r["queues"][0]["written"], 100_000, "{mode}: {r:#}");
        let mut files = files_with(&out, ".erf");
        files.sort();
        let mut ts = Vec::new();
        for f in &files {
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            let man: serde_json::Value = serde_json::from_slice(
                &std::fs::read(f.with_file_name(format!("{name}.json"))).unwrap(),
            )
            .unwrap();
            assert_eq!(man["clock"], clock, "{mode}: {name}");
            let mut rd = CaptureReader::open(f).unwrap();
            let mut p = Packet::default();
            while rd.next(&mut p).unwrap() {
                ts.push(p.ts_ns);
            }
        }
        assert_eq!(ts.len(), 100_000, "{mode}");
        assert!(ts.windows(2).all(|w| w[0] <= w[1]), "{mode}: backwards");
        let mut runs = vec![1usize];
        for w in ts.windows(2) {
            if w[0] == w[1] {
                *runs.last_mut().unwrap() += 1;
            } else {
                runs.push(1);
            }
        }
        let longest = runs.iter().copied().max().unwrap();
        match mode {
            // A TSC read per frame is 10+ ns apart: nearly every frame differs.
            "frame" => assert!(
                runs.len() * 10 >= ts.len() * 9,
                "{mode}: {} stamps",
                runs.len()
            ),
            // One per burst: net_null fills every burst the worker asks for.
            _ => {
                assert!(longest <= 64, "{mode}: {longest} frames share a stamp");
                assert!(runs.len() * 8 <= ts.len(), "{mode}: {} stamps", runs.len());
            }
        }
    }
}

#[test]
fn bad_dpdk_input_gives_clear_errors() {
    let tmp = tmpdir();
    let trace = shared("traces/tcpreplay__test.pcap");
    let pcap = format!("dpdk:net_pcap0,rx_pcap={}", trace.display());
    for (args, want) in [
        (vec!["--source", "dpdk:eth0"], "not a PCI address"),
        (vec!["--source", "dpdk:"], "needs a device"),
        (vec!["--source", "dpdk:net_bogus0"], "rte_eal_init failed"),
        (
            vec!["--source", "dpdk:net_pcap0,rx_pcap=/nonexistent.pcap"],
            "net_pcap0: no such port",
        ),
        (vec!["--source", "dpdk:0000:00:1f.7"], "no such port"),
        (
            vec!["--source", &pcap, "--dpdk-queues", "2"],
            "the device has at most 1",
        ),
        (
            vec!["--source", &pcap, "--eal-args", "--bogus-eal-flag"],
            "rte_eal_init failed",
        ),
        (
            vec!["--source", &pcap, "--rss-key", "00:01:02:03"],
            "--rss-key",
        ),
    ] {
        let o = run(linecap()
            .args(["capture", "--no-metrics", "--duration", "1", "--out"])
            .arg(tmp.path().join("x"))
            .args(&args));
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: want {want:?} in:\n{err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

/// Whether `/proc/meminfo` says no hugepage is free (what linecap's
/// `--hugepages try` falls back to `--no-huge` on).
fn no_hugepages_free() -> bool {
    let m = std::fs::read_to_string("/proc/meminfo").expect("/proc/meminfo");
    m.lines()
        .find_map(|l| l.strip_prefix("HugePages_Free:"))
        .is_none_or(|v| v.trim() == "0")
}

/// `vm.nr_hugepages` as found, restored on drop (also when the test panics).
struct HugepagesGuard(String);

impl HugepagesGuard {
    fn reserve(n: u32) -> HugepagesGuard {
        let old = std::fs::read_to_string("/proc/sys/vm/nr_hugepages")
            .unwrap()
            .trim()
            .to_string();
        let g = HugepagesGuard(old);
        run_ok(Command::new("sysctl").args(["-qw", &format!("vm.nr_hugepages={n}")]));
        g
    }
}

impl Drop for HugepagesGuard {
    fn drop(&mut self) {
        let _ = Command::new("sysctl")
            .args(["-qw", &format!("vm.nr_hugepages={}", self.0)])
            .status();
    }
}

fn require_root() {
    if let Some(why) = privileged_unavailable() {
        panic!("this privileged test cannot run: {why}");
    }
}

#[test]
#[ignore = "needs root: reserves hugepages (run by .ci/privileged-tests)"]
fn net_pcap_on_hugepages_and_nr_hugepages_restored() {
    require_root();
    let before = std::fs::read_to_string("/proc/sys/vm/nr_hugepages").unwrap();
    {
        let _g = HugepagesGuard::reserve(512);
        assert!(
            !no_hugepages_free(),
            "could not reserve hugepages:\n{}",
            std::fs::read_to_string("/proc/meminfo").unwrap_or_default()
        );
        let tmp = tmpdir();
        let trace = shared("traces/zeek__wikipedia.pcap");
        let want = read_us(&trace);
        let out = tmp.path().join("cap");
        let dev = format!("dpdk:net_pcap0,rx_pcap={}", trace.display());
        let (err, _) = capture(&["--source", &dev, "--hugepages", "require"], &out, "2");
        assert!(
            err.contains("--in-memory") && !err.contains("--no-huge"),
            "{err}"
        );
        assert_eq!(read_back(&out, tmp.path(), "h"), want);
    }
    assert_eq!(
        std::fs::read_to_string("/proc/sys/vm/nr_hugepages").unwrap(),
        before,
        "vm.nr_hugepages not restored"
    );
    // With none free, `--hugepages require` is a clear error, never a panic.
    if no_hugepages_free() {
        let tmp = tmpdir();
        let o = run(linecap()
            .args(["capture", "--no-metrics", "--hugepages", "require"])
            .args(["--source", "dpdk:net_null0", "--out"])
            .arg(tmp.path()));
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(err.contains("no free hugepages"), "{err}");
    }
}

/// A pcap of `n` distinct 128-byte frames (a local EtherType; the index in the payload).
fn frames_pcap(path: &Path, n: usize) {
    let mut w = PacketWriter::create(path, OutFormat::Pcap).unwrap();
    for i in 0..n {
        let mut f = vec![0u8; 128];
        f[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0xaa]);
        f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0xbb]);
        f[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
        f[14..22].copy_from_slice(&(i as u64).to_be_bytes());
        w.write(&Packet {
            ts_ns: 1_700_000_000_000_000_000 + i as u64 * 1000,
            wire_len: 128,
            data: f,
            ..Packet::default()
        })
        .unwrap();
    }
    w.finish().unwrap();
}

#[test]
#[ignore = "needs root: network namespaces and a veth (run by .ci/privileged-tests)"]
fn net_af_packet_on_a_veth_accounts_for_500k_frames() {
    require_root();
    let tmp = tmpdir();
    let veth = VethPair::new("dpdk-afp", 1);
    let pcap = tmp.path().join("send.pcap");
    frames_pcap(&pcap, 1000);
    let out = tmp.path().join("cap");
    let json = tmp.path().join("r.json");
    let (mut child, rx) = spawn_until(
        veth.in_cap(env!("CARGO_BIN_EXE_linecap"))
            .args(["capture", "--no-metrics", "--no-compress"])
            .args([
                "--source",
                "dpdk:net_af_packet0,iface=vA,framecnt=8192,framesz=2048,blocksz=4096,qpairs=1",
            ])
            .args(["--duration", "60"])
            .arg("--out")
            .arg(&out)
            .arg("--report-json")
            .arg(&json),
        "DPDK port net_af_packet0",
    );
    // 1000 frames × 500 loops, rate-bounded and time-bounded.
    let replay = run_ok(
        veth.in_send("timeout")
            .args([
                "60",
                "tcpreplay",
                "-i",
                "vB",
                "--loop",
                "500",
                "--pps",
                "150000",
            ])
            .arg(&pcap),
    );
    assert!(replay.contains("500000 packets"), "tcpreplay:\n{replay}");
    std::thread::sleep(Duration::from_millis(500));
    signal(&child, "INT");
    let status = child.wait().unwrap();
    let err: Vec<String> = rx.try_iter().collect();
    assert!(status.success(), "{status}: {err:?}");
    let r = report(&json);
    assert_balanced(&r);
    let q = &r["queues"][0];
    // The kernel interface received exactly what was sent, and every frame
    // it received is in the files or in a counted drop.
    assert_eq!(q["nic"]["iface_rx_packets"], 500_000, "{q:#}");
    assert_eq!(q["seen"], 500_000, "{q:#}");
    let written = q["written"].as_u64().unwrap();
    eprintln!(
        "af_packet: written {written} of 500000; drops {}",
        q["dropped"]
    );
    assert!(written > 0);
    // The files hold the frames in order (per loop, indices 0..1000).
    let got = read_back(&out, tmp.path(), "all");
    assert_eq!(got.len() as u64, written);
    assert!(
        got.iter()
            .all(|f| f.2.len() == 128 && f.2[12..14] == [0x88, 0xb5])
    );
}

/// The packet generator (`bench gen`), built next to linecap
/// (`cargo build -p bench`; `.ci/privileged-tests` does it first).
fn bench_bin() -> std::path::PathBuf {
    let p = Path::new(env!("CARGO_BIN_EXE_linecap")).with_file_name("bench");
    assert!(
        p.exists(),
        "{} is missing: build the generator first (cargo build -p bench)",
        p.display()
    );
    p
}

/// Run `bench gen` on vB in the sending namespace; its JSON report.
fn generate(veth: &VethPair, args: &[&str]) -> serde_json::Value {
    let out = veth
        .in_send("timeout")
        .arg("120")
        .arg(bench_bin())
        .args(["gen", "-i", "vB", "--json", "-"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bench gen {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "bench gen JSON: {e}: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// A counter of vB (the sending end), from `ip -s -j link`.
fn send_counter(veth: &VethPair, dir: &str, field: &str) -> u64 {
    let o =
        run_ok(Command::new("ip").args(["-n", &veth.ns_send, "-s", "-j", "link", "show", "vB"]));
    let v: serde_json::Value = serde_json::from_str(&o).unwrap();
    v[0]["stats64"][dir][field]
        .as_u64()
        .unwrap_or_else(|| panic!("no stats64.{dir}.{field} in {o}"))
}

/// (sequence number, ns timestamp, lctr) of every generator frame in the
/// files of one queue, in file order; and the manifests' clock names.
fn seq_frames(dir: &Path) -> (Vec<(u64, u64)>, u64, Vec<String>) {
    let mut got = Vec::new();
    let mut lctr = 0u64;
    let mut clocks = Vec::new();
    for f in files_with(dir, ".erf") {
        let name = f.file_name().unwrap().to_str().unwrap().to_string();
        let man: serde_json::Value = serde_json::from_slice(
            &std::fs::read(f.with_file_name(format!("{name}.json"))).unwrap(),
        )
        .unwrap();
        clocks.push(man["clock"].as_str().unwrap_or("?").to_string());
        let mut r = CaptureReader::open(&f).unwrap();
        let mut p = Packet::default();
        while r.next(&mut p).unwrap() {
            lctr += u64::from(p.lctr);
            // bench gen's synthetic frames: UDP to port 4789, sequence at 42..50.
            if p.data.len() >= 50
                && p.data[12..14] == [0x08, 0x00]
                && p.data[36..38] == [0x12, 0xb5]
            {
                got.push((
                    u64::from_be_bytes(p.data[42..50].try_into().unwrap()),
                    p.ts_ns,
                ));
            }
        }
    }
    (got, lctr, clocks)
}

/// Start a DPDK capture of vA through net_af_packet with `ring` frames in
/// the packet socket's ring, uncompressed files; returns once it is ready.
fn start_af_packet(
    veth: &VethPair,
    out: &Path,
    json: &Path,
    ring: u32,
    extra: &[&str],
) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    let dev =
        format!("dpdk:net_af_packet0,iface=vA,framecnt={ring},framesz=2048,blocksz=4096,qpairs=1");
    spawn_until(
        veth.in_cap(env!("CARGO_BIN_EXE_linecap"))
            .args(["capture", "--no-metrics", "--no-compress"])
            .args(["--source", &dev, "--duration", "100"])
            .args(extra)
            .arg("--out")
            .arg(out)
            .arg("--report-json")
            .arg(json),
        "ready: capturing",
    )
}

/// Stop the capture with SIGINT; its stderr lines.
fn stop_capture(
    mut child: std::process::Child,
    rx: std::sync::mpsc::Receiver<String>,
) -> Vec<String> {
    let mut guard = KillOnDrop::new(&child);
    std::thread::sleep(Duration::from_millis(500));
    signal(&child, "INT");
    let status = child.wait().unwrap();
    guard.disarm();
    let err: Vec<String> = rx.try_iter().collect();
    assert!(status.success(), "{status}: {err:#?}");
    err
}

const STEADY_FRAMES: u64 = 100_000;
const STEADY_PPS: u64 = 5_000;

#[test]
#[ignore = "needs root: network namespaces and a veth (run by .ci/privileged-tests)"]
fn net_af_packet_stamps_every_frame_at_a_steady_rate() {
    require_root();
    let tmp = tmpdir();
    let veth = VethPair::new("dpdk-ts", 1);
    let out = tmp.path().join("cap");
    let json = tmp.path().join("r.json");
    let (child, rx) = start_af_packet(&veth, &out, &json, 8192, &[]);
    let mut guard = KillOnDrop::new(&child);
    // The reference: tcpdump on vA stamps each frame as the kernel receives
    // it, in the sender's context (veth), i.e. the sender's pacing as it was
    // achieved on this machine. (On vB it would see nothing: bench gen's
    // AF_PACKET socket bypasses the qdisc, and with it the packet taps.)
    let sent_pcap = tmp.path().join("sent.pcap");
    let (tcpdump, _td) = spawn_until(
        veth.in_cap("tcpdump")
            .args([
                "-i",
                "vA",
                "-Q",
                "in",
                "-n",
                "--time-stamp-precision=nano",
                "-w",
            ])
            .arg(&sent_pcap)
            .args(["udp", "port", "4789"]),
        "listening on",
    );
    let mut td_guard = KillOnDrop::new(&tcpdump);
    let g = generate(
        &veth,
        &[
            "--size",
            "64",
            "--flows",
            "1",
            "--batch",
            "1",
            "--pps",
            &STEADY_PPS.to_string(),
            "--count",
            &STEADY_FRAMES.to_string(),
        ],
    );
    assert_eq!(g["sent"], STEADY_FRAMES, "{g:#}");
    std::thread::sleep(Duration::from_millis(500));
    signal(&tcpdump, "INT");
    let mut tcpdump = tcpdump;
    tcpdump.wait().unwrap();
    td_guard.disarm();
    guard.disarm();
    let err = stop_capture(child, rx);
    assert!(
        err.iter()
            .any(|l| l.contains("queue 0: rx queue stop refused by the PMD (Operation not supported); inflow stopped by a drop-all filter")),
        "{err:#?}"
    );
    let r = report(&json);
    assert_balanced(&r);
    let (got, lctr, clocks) = seq_frames(&out);
    // The kernel's receive stamp of each frame, read from the ring (so the
    // stamps do not depend on when the worker ran: on this shared 2-vCPU VM
    // TSC stamps taken at poll time came out in bursts).
    assert!(
        !clocks.is_empty() && clocks.iter().all(|c| c == "packet-socket"),
        "{clocks:?}"
    );
    assert_eq!(
        got.len() as u64,
        STEADY_FRAMES,
        "every frame captured: {:#}",
        r["queues"][0]
    );
    assert_eq!(lctr, 0);
    assert!(
        got.windows(2).all(|w| w[1].0 == w[0].0 + 1),
        "frames out of send order"
    );
    let back = got.windows(2).filter(|w| w[1].1 < w[0].1).count();
    assert_eq!(back, 0, "timestamps went backwards {back} times");
    let mut ts: Vec<u64> = got.iter().map(|g| g.1).collect();
    ts.dedup();
    assert_eq!(
        ts.len() as u64,
        STEADY_FRAMES,
        "every frame has its own timestamp"
    );
    let mut gaps: Vec<u64> = got.windows(2).map(|w| w[1].1 - w[0].1).collect();
    gaps.sort_unstable();
    let median = gaps[gaps.len() / 2];
    let pacing = 1_000_000_000 / STEADY_PPS;
    let mean = (got[got.len() - 1].1 - got[0].1) / (got.len() as u64 - 1);
    eprintln!(
        "net_af_packet: median gap {median} ns, mean {mean} ns (pacing {pacing} ns), p1 {} ns, p99 {} ns",
        gaps[gaps.len() / 100],
        gaps[gaps.len() * 99 / 100]
    );
    // The sender's gaps as the kernel received them, frame by frame.
    let (sent_ts, n_sent) = stamps_by_seq(&sent_pcap, STEADY_FRAMES, 42);
    assert!(
        n_sent * 10 >= STEADY_FRAMES * 9,
        "tcpdump saw only {n_sent} frames arrive"
    );
    let mut sgaps: Vec<u64> = sent_ts
        .windows(2)
        .filter(|w| w[0] != 0 && w[1] >= w[0])
        .map(|w| w[1] - w[0])
        .collect();
    sgaps.sort_unstable();
    let sent_median = sgaps[sgaps.len() / 2];
    let mut errs: Vec<u64> = got
        .windows(2)
        .filter_map(|w| {
            let (a, b) = (sent_ts[w[0].0 as usize], sent_ts[w[1].0 as usize]);
            (a != 0 && b != 0 && b >= a).then(|| (w[1].1 - w[0].1).abs_diff(b - a))
        })
        .collect();
    errs.sort_unstable();
    eprintln!(
        "net_af_packet: sender's median gap {sent_median} ns (p1 {} ns, p99 {} ns); |captured gap - sent gap|: median {} ns, p99 {} ns",
        sgaps[sgaps.len() / 100],
        sgaps[sgaps.len() * 99 / 100],
        errs[errs.len() / 2],
        errs[errs.len() * 99 / 100]
    );
    assert!(
        median.abs_diff(sent_median) * 10 <= sent_median,
        "captured median gap {median} ns is not within 10 % of the sender's {sent_median} ns"
    );
    // Frame by frame the gaps are the kernel's (tcpdump reads the same
    // receive stamp): at most 1 µs apart for 99 % of them.
    assert!(
        errs[errs.len() * 99 / 100] <= 1_000,
        "captured gaps differ from the kernel's arrival gaps (p99 {} ns)",
        errs[errs.len() * 99 / 100]
    );
    assert!(
        mean.abs_diff(pacing) * 10 <= pacing,
        "mean gap {mean} ns is not within 10 % of the sender's {pacing} ns"
    );
    drop(veth);
}

#[test]
#[ignore = "needs root: network namespaces and a veth (run by .ci/privileged-tests)"]
fn net_af_packet_overload_counts_every_frame_once() {
    require_root();
    let tmp = tmpdir();
    let veth = VethPair::new("dpdk-ov", 1);
    let out = tmp.path().join("cap");
    let json = tmp.path().join("r.json");
    // A 64-frame socket ring and a writer slowed to 2 ms a batch: the
    // socket overflows (its drops) and the worker's ring fills (ring_full).
    let (child, rx) = start_af_packet(&veth, &out, &json, 64, &["--fault-writer-delay-ms", "2"]);
    let mut guard = KillOnDrop::new(&child);
    let g = generate(
        &veth,
        &["--size", "64", "--flows", "16", "--count", "300000"],
    );
    let sent = g["sent"].as_u64().unwrap();
    assert_eq!(sent, 300_000, "{g:#}");
    // Nothing was lost between the two ends of the veth (vB's tx_dropped:
    // frames vA's backlog refused), so every frame sent reached vA.
    assert_eq!(send_counter(&veth, "tx", "dropped"), 0);
    guard.disarm();
    let err = stop_capture(child, rx);
    let r = report(&json);
    assert_balanced(&r);
    let q = &r["queues"][0];
    eprintln!("net_af_packet overload: sent {sent}, report {q:#}");
    assert_eq!(
        q["seen"].as_u64(),
        Some(sent),
        "seen = the generator's exact count: {q:#}"
    );
    let nic = &q["nic"];
    // The packet socket saw every frame vA received, each taken or dropped.
    assert_eq!(nic["socket_packets"].as_u64(), Some(sent), "{q:#}");
    assert_eq!(nic["iface_rx_packets"].as_u64(), Some(sent), "{q:#}");
    let socket = nic["socket_dropped"].as_u64().unwrap();
    let d = &q["dropped"];
    let ring_full = d["ring_full"].as_u64().unwrap();
    assert!(socket > 0, "the socket's ring never overflowed: {q:#}");
    // Each drop once, at the stage where it happened: here only the socket
    // dropped at the nic stage (the port and vA counted none).
    assert_eq!(d["nic"].as_u64(), Some(socket), "{q:#}");
    assert_eq!(nic["socket_or_port"].as_u64(), Some(socket), "{q:#}");
    let written = q["written"].as_u64().unwrap();
    let dropped = common::dropped_sum(q);
    assert_eq!(written + dropped, sent, "{q:#}");
    // The files say what is missing: Σ lctr + what came after the last record.
    let (got, lctr, _) = seq_frames(&out);
    assert_eq!(got.len() as u64, written);
    let pending = q["worker"]["lctr_pending"].as_u64().unwrap();
    assert_eq!(lctr + pending, socket + ring_full, "{q:#}");
    // And `linecap read --stats` says the same from the files alone.
    let stats = run_ok(linecap().arg("read").arg(&out).arg("--stats"));
    assert!(
        stats.contains(&format!("loss recorded in ERF lctr: {lctr} packets")),
        "{stats}"
    );
    assert!(
        err.iter().any(|l| l.contains("drop-all filter")),
        "{err:#?}"
    );
    drop(veth);
}

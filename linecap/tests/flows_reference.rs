//! `linecap flows` judged by outside truth:
//!
//! - every trace's `--format tsv` listing, sorted, equals the sorted
//!   tshark-made reference table in ../shared/reference/flows (one table, and
//!   spread over 3 tables by symmetric hash);
//! - IPFIX sent to Debian's `nfcapd` on 127.0.0.1 is read back with
//!   `nfdump -r FILE -o csv`: flows, packets and bytes equal the reference;
//! - DuckDB (from PyPI) reads the Parquet flow logs: flows, packets and bytes
//!   equal the reference.
//!
//! Missing tools fail the test with a message saying to run `.ci/setup`.

mod common;

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{linecap, run, shared, traces};

/// Timeouts longer than any trace: one record per flow key, as the reference.
const NO_TIMEOUTS: [&str; 6] = [
    "--idle-timeout",
    "1e9",
    "--active-timeout",
    "1e9",
    "--linger",
    "1e9",
];

fn reference_path(trace: &Path) -> PathBuf {
    shared("reference/flows").join(format!(
        "{}.flows.tsv",
        trace.file_name().unwrap().to_string_lossy()
    ))
}

/// The lines, cut to the reference layout's 14 columns (`linecap flows`
/// adds the application label columns after them), sorted.
fn sorted_lines(text: &str) -> Vec<String> {
    let mut v: Vec<String> = text
        .lines()
        .map(|l| l.split('\t').take(14).collect::<Vec<_>>().join("\t"))
        .collect();
    v.sort();
    v
}

/// (flows, packets, bytes) of a reference table.
fn reference_totals(trace: &Path) -> (u64, u64, u64) {
    let text = std::fs::read_to_string(reference_path(trace)).unwrap();
    let mut t = (0, 0, 0);
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let c: Vec<u64> = line
            .split('\t')
            .skip(6)
            .take(4)
            .map(|x| x.parse().unwrap())
            .collect();
        t.0 += 1;
        t.1 += c[0] + c[2];
        t.2 += c[1] + c[3];
    }
    t
}

fn flows_tsv(trace: &Path, extra: &[&str]) -> String {
    let out = run(linecap()
        .arg("flows")
        .arg(trace)
        .args(["--format", "tsv"])
        .args(NO_TIMEOUTS)
        .args(extra));
    assert!(
        out.status.success(),
        "linecap flows {}: {}",
        trace.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn every_trace_equals_its_reference_table() {
    let mut failures = Vec::new();
    let mut matched = 0;
    for trace in traces() {
        let reference = std::fs::read_to_string(reference_path(&trace)).unwrap();
        let want = sorted_lines(&reference);
        for extra in [&[][..], &["--spread", "3"][..]] {
            let got = sorted_lines(&flows_tsv(&trace, extra));
            if got == want {
                matched += 1;
            } else {
                let missing: Vec<_> = want.iter().filter(|l| !got.contains(l)).collect();
                let extra_rows: Vec<_> = got.iter().filter(|l| !want.contains(l)).collect();
                eprintln!(
                    "MISMATCH {} {extra:?}\n  missing: {missing:#?}\n  extra: {extra_rows:#?}",
                    trace.display()
                );
                failures.push(format!("{} {extra:?}", trace.display()));
            }
        }
    }
    eprintln!("{matched} of 80 runs (40 traces × 1 and 3 tables) equal the reference");
    assert!(
        failures.is_empty(),
        "differ from the reference: {failures:#?}"
    );
}

fn need(tool: &str, probe: &[&str]) {
    let ok = Command::new(tool)
        .args(probe)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(
        ok,
        "`{tool}` is not installed: run .ci/setup (it installs nfdump and duckdb)"
    );
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills the collector if the test fails half-way.
struct Collector(std::process::Child);

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn ipfix_reaches_nfcapd_with_the_reference_totals() {
    need("nfcapd", &["-V"]);
    need("nfdump", &["-V"]);
    let dir = tempfile::tempdir().unwrap();
    let flowdir = dir.path().join("nfcapd");
    std::fs::create_dir(&flowdir).unwrap();
    let log = dir.path().join("nfcapd.log");
    let port = free_udp_port();
    let child = Command::new("nfcapd")
        .args(["-w"])
        .arg(&flowdir)
        .args(["-b", "127.0.0.1", "-p", &port.to_string(), "-t", "60"])
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::from(
            std::fs::File::create(dir.path().join("err")).unwrap(),
        ))
        .spawn()
        .expect("starting nfcapd (run .ci/setup)");
    let mut collector = Collector(child);
    // Wait until it listens (it logs "Startup" once bound).
    let t0 = Instant::now();
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default()
            + &std::fs::read_to_string(dir.path().join("err")).unwrap_or_default();
        if text.contains("Startup") {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "nfcapd did not start: {text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // A pcap with VLAN, MPLS, IPv4 and IPv6 flows, and an ERF trace (FCS bytes).
    let chosen = [
        shared("traces/tcpreplay__test.pcap"),
        shared("traces/libtrace__100_packets.erf"),
        shared("traces/zeek__ftp_ipv6.pcap"),
    ];
    let mut want = (0, 0, 0);
    for trace in &chosen {
        let out = run(linecap()
            .arg("flows")
            .arg(trace)
            .args(["--format", "none", "--ipfix", &format!("127.0.0.1:{port}")])
            .args(NO_TIMEOUTS));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let r = reference_totals(trace);
        want = (want.0 + r.0, want.1 + r.1, want.2 + r.2);
    }
    // Let the collector take the last datagrams, then stop it: it closes its file.
    std::thread::sleep(Duration::from_millis(500));
    let pid = collector.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let t0 = Instant::now();
    while collector.0.try_wait().unwrap().is_none() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "nfcapd does not stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let files: Vec<PathBuf> = std::fs::read_dir(&flowdir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("nfcapd.2")
        })
        .collect();
    assert!(
        !files.is_empty(),
        "nfcapd wrote no file in {}",
        flowdir.display()
    );
    let mut got = (0u64, 0u64, 0u64);
    for f in &files {
        let out = run(Command::new("nfdump").arg("-r").arg(f).args(["-o", "csv"]));
        assert!(
            out.status.success(),
            "nfdump: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap_or("").split(',').collect();
        let col = |name: &str| {
            header
                .iter()
                .position(|h| *h == name)
                .unwrap_or_else(|| panic!("nfdump csv has no {name} column: {header:?}"))
        };
        let (ipkt, ibyt, opkt, obyt) = (col("ipkt"), col("ibyt"), col("opkt"), col("obyt"));
        for line in lines {
            if line.is_empty() || line.starts_with("Summary") {
                break;
            }
            let c: Vec<&str> = line.split(',').collect();
            let n = |i: usize| c[i].trim().parse::<u64>().unwrap();
            got.0 += 1;
            got.1 += n(ipkt) + n(opkt);
            got.2 += n(ibyt) + n(obyt);
        }
    }
    eprintln!("nfdump: {got:?} (flows, packets, bytes); reference: {want:?}");
    assert_eq!(
        got, want,
        "nfdump's flows, packets and bytes vs the reference"
    );
}

#[test]
fn duckdb_reads_the_parquet_flow_logs_with_the_reference_totals() {
    common::require_duckdb();
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("flowlogs");
    let chosen = [
        shared("traces/zeek__http_bro.org.pcap"),
        shared("traces/libtrace__5_packets.erf"),
        shared("traces/community-id-spec__combined.pcap"),
        shared("traces/zeek__vlan-qinqinq.pcap"),
    ];
    let mut want = (0, 0, 0);
    for trace in &chosen {
        let out = run(linecap()
            .arg("flows")
            .arg(trace)
            .args(["--format", "none", "--parquet"])
            .arg(&logs)
            .args(NO_TIMEOUTS));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let r = reference_totals(trace);
        want = (want.0 + r.0, want.1 + r.1, want.2 + r.2);
    }
    let query = format!(
        "import duckdb\n\
         r = duckdb.connect().execute(\"SELECT count(*), sum(packets + rev_packets), sum(bytes + rev_bytes), \
         count(DISTINCT date || ' ' || hour) FROM read_parquet('{}/**/*.parquet', \
         hive_partitioning = true)\").fetchone()\n\
         print(*r)",
        logs.display()
    );
    let out = run(Command::new("python3").args(["-c", &query]));
    assert!(
        out.status.success(),
        "duckdb: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let v: Vec<u64> = text
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    eprintln!("duckdb: {v:?} (flows, packets, bytes, partitions); reference: {want:?}");
    assert_eq!((v[0], v[1], v[2]), want);
    // The four traces come from different days: one partition each at least.
    assert!(v[3] >= 4, "partitions: {}", v[3]);
}

/// The live capture path: each worker's own flow table (three queues, flows
/// spread by symmetric hash) sees every reference flow exactly once, for
/// all 40 traces.
#[test]
fn capture_workers_track_the_reference_flows_of_every_trace() {
    let mut failures = Vec::new();
    for trace in traces() {
        let dir = tempfile::tempdir().unwrap();
        let report = dir.path().join("r.json");
        let out = run(linecap()
            .arg("capture")
            .arg("--source")
            .arg(format!("file:{}", trace.display()))
            .args(["--spread", "3", "--flows", "--flow-capacity", "4096"])
            .args(NO_TIMEOUTS)
            .arg("--out")
            .arg(dir.path().join("cap"))
            .arg("--report-json")
            .arg(&report));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let r: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
        let sum = |k: &str| -> u64 {
            r["queues"]
                .as_array()
                .unwrap()
                .iter()
                .map(|q| q["flows"][k].as_u64().unwrap())
                .sum()
        };
        let (flows, packets, _) = reference_totals(&trace);
        let got = (sum("created"), sum("packets"), sum("expired_input_end"));
        if got != (flows, packets, flows) {
            failures.push(format!(
                "{}: created/packets/ended {got:?}, reference {flows} flows {packets} packets",
                trace.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Flow records the capture workers end reach the Parquet exporter.
#[test]
fn capture_exports_parquet_that_duckdb_reads() {
    common::require_duckdb();
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("flowlogs");
    let trace = shared("traces/zeek__http_bro.org.pcap");
    let out = run(linecap()
        .arg("capture")
        .arg("--source")
        .arg(format!("file:{}", trace.display()))
        .args(["--spread", "2", "--flow-capacity", "4096", "--parquet"])
        .arg(&logs)
        .args(NO_TIMEOUTS)
        .arg("--out")
        .arg(dir.path().join("cap")));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let query = format!(
        "import duckdb\n\
         r = duckdb.connect().execute(\"SELECT count(*), sum(packets + rev_packets), sum(bytes + rev_bytes) \
         FROM read_parquet('{}/**/*.parquet', hive_partitioning = true)\").fetchone()\n\
         print(*r)",
        logs.display()
    );
    let out = run(Command::new("python3").args(["-c", &query]));
    assert!(
        out.status.success(),
        "duckdb: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Vec<u64> = String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    assert_eq!((v[0], v[1], v[2]), reference_totals(&trace));
}

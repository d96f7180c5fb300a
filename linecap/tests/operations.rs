//! Operating a capture: the Prometheus endpoint (checked by promtool and
//! scraped by a real Prometheus server on loopback), SIGTERM and SIGHUP.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A port nobody listens on right now (on 127.0.0.1).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` over HTTP/1.0 on loopback; the body, or `None` if unreachable.
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let (head, body) = buf.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.")
        .then(|| head.contains(" 200 "))?
        .then(|| body.to_string())
}

fn wait_for<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A live (paced) synthetic capture with metrics on `port`.
fn paced_capture(out: &Path, pps: u32, port: u16, extra: &[&str]) -> std::process::Child {
    let (child, _) = spawn_until(
        linecap()
            .arg("capture")
            .arg("--source")
            .arg(format!("synth:200:50:-:{pps}"))
            .args([
                "--metrics",
                &format!("127.0.0.1:{port}"),
                "--flush-ms",
                "20",
            ])
            .args(extra)
            .arg("--out")
            .arg(out.join("cap"))
            .arg("--report-json")
            .arg(out.join("report.json")),
        "metrics on",
    );
    child
}

#[test]
fn metrics_pass_promtool_check() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = paced_capture(dir.path(), 2000, port, &["--flows"]);
    let body = wait_for("a scrape with packets", 20, || {
        http_get(port, "/metrics").filter(|b| {
            b.contains("linecap_received_packets_total{capture_job=\"main\",queue=\"0\"} ")
                && !b.contains(
                    "linecap_received_packets_total{capture_job=\"main\",queue=\"0\"} 0\n",
                )
        })
    });
    for name in [
        "linecap_received_packets_total",
        "linecap_dropped_packets_total{capture_job=\"main\",queue=\"0\",stage=\"ring_full\"}",
        "linecap_written_bytes_total{capture_job=\"main\",queue=\"0\",kind=\"file\"}",
        "linecap_ring_occupancy_slots",
        "linecap_flows_active",
        "linecap_build_info",
    ] {
        assert!(body.contains(name), "{name} missing from:\n{body}");
    }
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (package prometheus; bash .ci/setup)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(http_get(port, "/nope"), None, "only /metrics is served");
    signal(&child, "TERM");
    assert!(child.wait().unwrap().success());
}

#[test]
fn prometheus_scrapes_the_packet_count_of_a_known_trace() {
    let dir = tempfile::tempdir().unwrap();
    let lc_port = free_port();
    let prom_port = free_port();
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: linecap\n    static_configs:\n      - targets: ['127.0.0.1:{lc_port}']\n"
        ),
    )
    .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _prometheus = Kill(
        Command::new("prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (package prometheus; bash .ci/setup)"),
    );
    wait_for("prometheus to start", 30, || {
        http_get(prom_port, "/-/ready")
    });

    // A known trace (751 frames), spread over 2 queues; the final values stay
    // on /metrics for 8 s, long enough for several scrapes.
    let trace = shared("traces/zeek__http_bro.org.pcap");
    let capture = run(linecap()
        .arg("capture")
        .arg("--source")
        .arg(format!("file:{}", trace.display()))
        .args([
            "--spread",
            "2",
            "--metrics",
            &format!("127.0.0.1:{lc_port}"),
        ])
        .args(["--metrics-hold", "8"])
        .arg("--out")
        .arg(dir.path().join("cap")));
    assert!(
        capture.status.success(),
        "{}",
        String::from_utf8_lossy(&capture.stderr)
    );

    let query = |q: &str| -> Option<f64> {
        let body = http_get(prom_port, &format!("/api/v1/query?query={q}"))?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    };
    let received = wait_for("Prometheus to have the final count", 30, || {
        query("sum(linecap_received_packets_total)").filter(|&v| v == 751.0)
    });
    assert_eq!(received, 751.0);
    assert_eq!(query("sum(linecap_written_packets_total)"), Some(751.0));
    // The drop series exist: 7 stages (filter, sample, source, nic, xdp,
    // ring_full, writer) on each of the 2 queues, all zero.
    assert_eq!(query("count(linecap_dropped_packets_total)"), Some(14.0));
    assert_eq!(query("sum(linecap_dropped_packets_total)"), Some(0.0));
}

#[test]
fn sigterm_mid_capture_keeps_everything_received() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = paced_capture(dir.path(), 5000, port, &[]);
    std::thread::sleep(Duration::from_millis(1500));
    signal(&child, "TERM");
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status {status}");
    let r = report(&dir.path().join("report.json"));
    assert_balanced(&r);
    assert_eq!(r["stopped"], true);
    let written = total(&r, |q| q["written"].as_u64().unwrap());
    let seen = total(&r, |q| q["seen"].as_u64().unwrap());
    assert!(written > 1000, "1.5 s at 5000/s: {written}");
    assert_eq!(seen, written, "nothing dropped at 5000/s: {r:#}");
    // On disk: every packet the summary counts, in complete visible files.
    assert!(
        files_with(&dir.path().join("cap"), ".part").is_empty(),
        "no partial file left"
    );
    let stats = run_ok(
        linecap()
            .arg("read")
            .arg(dir.path().join("cap"))
            .arg("--stats"),
    );
    assert!(stats.contains(&format!("packets: {written} ")), "{stats}");
}

#[test]
fn sighup_completes_the_current_file_and_starts_a_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cap = dir.path().join("cap");
    let mut child = paced_capture(dir.path(), 2000, port, &[]);
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        files_with(&cap, ".erf.lz4").is_empty(),
        "nothing complete yet"
    );
    signal(&child, "HUP");
    let first = wait_for("the file to be completed", 10, || {
        let v = files_with(&cap, ".erf.lz4");
        (!v.is_empty()).then_some(v)
    });
    assert_eq!(first.len(), 1);
    // The completed file is whole and readable while the capture goes on.
    let part1 = run_ok(linecap().arg("read").arg(&first[0]).arg("--stats"));
    assert!(part1.contains("1 complete frames"), "{part1}");
    std::thread::sleep(Duration::from_millis(700));
    signal(&child, "TERM");
    assert!(child.wait().unwrap().success());
    let files = files_with(&cap, ".erf.lz4");
    assert_eq!(files.len(), 2, "{files:?}");
    let r = report(&dir.path().join("report.json"));
    assert_balanced(&r);
    let written = total(&r, |q| q["written"].as_u64().unwrap());
    let stats = run_ok(linecap().arg("read").arg(&cap).arg("--stats"));
    assert!(stats.contains(&format!("packets: {written} ")), "{stats}");
}

#[test]
fn disk_budget_keeps_the_newest_files_within_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cap");
    let r = run(linecap()
        .args([
            "capture",
            "--source",
            "synth:1000:100:30000:50000",
            "--no-compress",
            "--no-metrics",
        ])
        .args([
            "--batch-bytes",
            "64K",
            "--rotate-bytes",
            "256K",
            "--disk-budget",
            "1M",
        ])
        .arg("--out")
        .arg(&out)
        .arg("--report-json")
        .arg(dir.path().join("r.json")));
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let rep = report(&dir.path().join("r.json"));
    assert_balanced(&rep);
    let written = total(&rep, |q| q["written"].as_u64().unwrap());
    assert!(
        written * 1018 > 4 << 20,
        "the capture must be larger than the budget: {written}"
    );
    let mut bytes = 0;
    let mut seqs = Vec::new();
    for e in std::fs::read_dir(out.join("q00")).unwrap() {
        let e = e.unwrap();
        bytes += e.metadata().unwrap().len();
        let name = e.file_name().into_string().unwrap();
        if name.ends_with(".erf") {
            seqs.push(name[4..12].parse::<u64>().unwrap());
        }
    }
    assert!(bytes <= 1 << 20, "{bytes} bytes on disk for a 1 MiB budget");
    seqs.sort();
    assert!(seqs.len() >= 2, "{seqs:?}");
    // The newest files are kept: consecutive sequence numbers up to the last one.
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    assert!(seqs[0] > 0, "the oldest files were recycled: {seqs:?}");
    // And a capture whose budget cannot hold two files is refused up front.
    let bad = run(linecap()
        .args(["capture", "--source", "synth:64:1:10", "--no-metrics"])
        .args(["--rotate-bytes", "1M", "--disk-budget", "1M"])
        .arg("--out")
        .arg(dir.path().join("bad")));
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--disk-budget"));
}

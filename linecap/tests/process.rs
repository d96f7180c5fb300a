//! `linecap process` end to end: capture directories made by `linecap
//! capture`, `kill -9` at several moments then a re-run equal a clean run,
//! and Spark (PySpark, local[2]) reads the output: a batch read gives the
//! totals of linecap's summary, and a Structured Streaming query (file
//! source, availableNow, checkpoint) run before and after new partitions
//! reaches the same totals incrementally.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use common::{linecap, run_ok, shared};
use linecap_process::{BUILTIN, Row, Settings, builtin, output, sorted};

const TIMEOUTS: [&str; 4] = ["--idle-timeout", "0.5", "--active-timeout", "2"];

/// Merge traces by time into one pcap, capture it into `dir` (2 queues, small files).
fn capture(traces: &[&str], dir: &Path) {
    let merged = dir.with_extension("pcap");
    let mut m = Command::new("mergecap");
    m.arg("-F").arg("pcap").arg("-w").arg(&merged);
    for t in traces {
        m.arg(shared("traces").join(t));
    }
    run_ok(&mut m);
    run_ok(
        linecap()
            .arg("capture")
            .arg("--source")
            .arg(format!("file:{}", merged.display()))
            .args([
                "--spread",
                "2",
                "--rotate-bytes",
                "4K",
                "--rotate-seconds",
                "1",
            ])
            .args(["--batch-bytes", "64K", "--out"])
            .arg(dir),
    );
}

fn process(inputs: &[&Path], state: &Path, out: &Path) -> Command {
    let mut c = linecap();
    c.arg("process")
        .args(inputs)
        .arg("--state")
        .arg(state)
        .arg("--out")
        .arg(out)
        .args(TIMEOUTS)
        .args(["--threads", "2"]);
    c
}

/// Every table (written rows and open rows, sorted) and the summary.
fn tables(out: &Path) -> (Vec<Vec<Row>>, serde_json::Value) {
    let s = Settings::default();
    let mut v = Vec::new();
    for n in BUILTIN {
        let p = builtin(n, &s).unwrap();
        v.push(sorted(
            output::read_rows(&out.join(n), p.columns()).unwrap(),
        ));
        let d = tempfile::tempdir().unwrap();
        std::fs::copy(
            out.join("open").join(format!("{n}.parquet")),
            d.path().join("o.parquet"),
        )
        .unwrap();
        v.push(sorted(output::read_rows(d.path(), p.columns()).unwrap()));
    }
    let summary =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    (v, summary)
}

#[test]
fn kill_9_at_any_moment_then_a_rerun_equals_a_clean_run() {
    let d = tempfile::tempdir().unwrap();
    let cap = d.path().join("cap");
    capture(
        &[
            "zeek__wikipedia.pcap",
            "zeek__http_bro.org.pcap",
            "zeek__ftp_ipv6.pcap",
        ],
        &cap,
    );
    let t0 = Instant::now();
    run_ok(&mut process(
        &[&cap],
        &d.path().join("s0"),
        &d.path().join("o0"),
    ));
    let clean_time = t0.elapsed();
    let clean = tables(&d.path().join("o0"));
    assert!(!clean.0[0].is_empty(), "flows ended");
    let mut killed = 0;
    for k in 0..8u32 {
        let state = d.path().join(format!("s{}", k + 1));
        let out = d.path().join(format!("o{}", k + 1));
        let mut child = process(&[&cap], &state, &out).spawn().unwrap();
        std::thread::sleep(clean_time.mul_f64(f64::from(k) / 8.0));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            killed += 1;
        }
        child.wait().unwrap();
        run_ok(&mut process(&[&cap], &state, &out));
        assert_eq!(tables(&out), clean, "killed at {k}/8 of a clean run");
    }
    assert!(
        killed >= 4,
        "only {killed} runs were killed before their end"
    );
}

fn python() -> Command {
    let ok = Command::new("python3")
        .args(["-c", "import pyspark"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "pyspark (PyPI) is needed: run .ci/setup");
    Command::new("python3")
}

fn spark(out: &Path, ckpt: &Path) -> serde_json::Value {
    let result = ckpt.join("result.json");
    std::fs::create_dir_all(ckpt).unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/spark_process.py");
    let o = python()
        .arg(script)
        .arg(out)
        .arg(ckpt)
        .arg(&result)
        .env("SPARK_LOCAL_IP", "127.0.0.1")
        .env("PYSPARK_PYTHON", "python3")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "spark: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&std::fs::read(result).unwrap()).unwrap()
}

fn check_totals(spark: &serde_json::Value, summary: &serde_json::Value) {
    let p = &summary["processors"];
    for mode in ["batch", "stream"] {
        let s = &spark[mode];
        for (table, keys) in [
            ("flows", &["rows", "packets", "bytes"][..]),
            (
                "hosts",
                &["rows", "pkts_out", "bytes_out", "pkts_in", "bytes_in"][..],
            ),
            ("dns", &["rows"][..]),
        ] {
            for k in keys {
                assert_eq!(
                    s[table][k].as_u64().unwrap_or(0),
                    p[table][k].as_u64().unwrap(),
                    "{mode} {table}.{k}: spark {} linecap {}",
                    s[table],
                    p[table]
                );
            }
        }
    }
}

#[test]
fn spark_batch_and_structured_streaming_reach_the_summary_totals() {
    let d = tempfile::tempdir().unwrap();
    let (cap1, cap2) = (d.path().join("cap1"), d.path().join("cap2"));
    // Two dates and several hours, so hours end and partitions differ.
    capture(&["zeek__wikipedia.pcap", "zeek__ftp_ipv6.pcap"], &cap1);
    capture(
        &["zeek__http_bro.org.pcap", "zeek__icmp_5-pings.pcap"],
        &cap2,
    );
    let (state, out, ckpt) = (
        d.path().join("s"),
        d.path().join("o"),
        d.path().join("ckpt"),
    );
    run_ok(&mut process(&[&cap1], &state, &out));
    let (_, s1) = tables(&out);
    assert!(s1["processors"]["hosts"]["rows"].as_u64().unwrap() > 0);
    assert!(s1["processors"]["dns"]["rows"].as_u64().unwrap() > 0);
    let r1 = spark(&out, &ckpt);
    check_totals(&r1, &s1);

    run_ok(&mut process(&[&cap1, &cap2], &state, &out));
    let (_, s2) = tables(&out);
    assert!(
        s2["processors"]["flows"]["rows"].as_u64() > s1["processors"]["flows"]["rows"].as_u64()
    );
    let r2 = spark(&out, &ckpt);
    check_totals(&r2, &s2);
    assert!(
        r2["batch"]["flows"]["partitions"].as_u64() > r1["batch"]["flows"]["partitions"].as_u64(),
        "new partitions: {} then {}",
        r1["batch"]["flows"],
        r2["batch"]["flows"]
    );
    // The second streaming run read only the new files.
    let lines = std::fs::read_to_string(ckpt.join("flows.totals.jsonl")).unwrap();
    assert!(lines.lines().count() >= 2, "{lines}");
}

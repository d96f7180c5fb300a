//! Each benchmark suite runs briefly and writes well-formed JSON and CSV.
//! Benchmarks are not tests: nothing here looks at a figure, only at the
//! shape of the output. The `veth` suite needs root: see `privileged.rs`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn bench() -> Command {
    Command::new(env!("CARGO_BIN_EXE_bench"))
}

/// The `linecap` binary beside `bench` (built by `cargo test --workspace`).
pub fn linecap_bin() -> PathBuf {
    let p = Path::new(env!("CARGO_BIN_EXE_bench")).with_file_name("linecap");
    assert!(
        p.exists(),
        "{} is missing: run `cargo test --workspace` or `cargo build -p linecap` first",
        p.display()
    );
    p
}

fn out_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("bench-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Run `bench SUITE --seconds S --out DIR`, then check DIR/SUITE.json and .csv.
fn run_suite(suite: &str, seconds: &str) -> serde_json::Value {
    let dir = out_dir(suite);
    let out = bench()
        .args([suite, "--seconds", seconds, "--out"])
        .arg(&dir)
        .env("LINECAP_BIN", linecap_bin())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bench {suite}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.lines().count() >= 3,
        "bench {suite} prints a table:\n{stdout}"
    );
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join(format!("{suite}.json"))).unwrap())
            .unwrap_or_else(|e| panic!("{suite}.json is not JSON: {e}"));
    for k in ["command", "date", "machine", "results"] {
        assert!(!doc[k].is_null(), "{suite}.json has {k}: {doc:#}");
    }
    let rows = doc["results"].as_array().unwrap();
    assert!(!rows.is_empty(), "{suite}: no rows");
    for r in rows {
        assert!(r.is_object(), "{suite}: a row is an object: {r}");
        assert!(r.get("error").is_none_or(|e| e.is_null()), "{suite}: {r}");
    }
    let csv = std::fs::read_to_string(dir.join(format!("{suite}.csv"))).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines.len(),
        rows.len() + 1,
        "{suite}.csv: header + one line per row"
    );
    let header: Vec<&str> = lines[0].split(',').collect();
    assert!(
        header.iter().all(|h| !h.is_empty()),
        "{suite}.csv header: {}",
        lines[0]
    );
    let _ = std::fs::remove_dir_all(&dir);
    doc
}

#[test]
fn pipeline_suite_writes_json_and_csv() {
    let doc = run_suite("pipeline", "0.3");
    let rows = doc["results"].as_array().unwrap();
    assert_eq!(rows.len(), 8, "4 frame sets x flows off/on");
    assert!(
        rows.iter()
            .all(|r| r["mpps_median_of_3"].as_f64().unwrap() > 0.0)
    );
}

#[test]
fn worker_suite_writes_json_and_csv() {
    run_suite("worker", "0.5");
}

#[test]
fn flows_suite_writes_json_and_csv() {
    run_suite("flows", "0.5");
}

#[test]
fn writer_suite_writes_json_and_csv() {
    let doc = run_suite("writer", "0.6");
    let tools: Vec<&str> = doc["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["tool"].as_str())
        .collect();
    assert!(tools.iter().any(|t| t.starts_with("lz4")), "{tools:?}");
    assert!(
        tools
            .iter()
            .any(|t| t.starts_with("fio") || t.starts_with("dd")),
        "{tools:?}"
    );
}

#[test]
fn policy_suite_writes_json_and_csv() {
    run_suite("policy", "0.5");
}

#[test]
fn memory_suite_writes_json_and_csv() {
    let doc = run_suite("memory", "0.2");
    let rows = doc["results"].as_array().unwrap();
    assert!(
        rows.iter()
            .any(|r| r["long_over_short_peak_rss"].as_f64().is_some()),
        "{doc:#}"
    );
}

#[test]
fn veth_suite_without_root_says_skipped() {
    if std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
    {
        // As root the suite would run for real: `privileged.rs` covers it.
        return;
    }
    let doc = run_suite("veth", "0.2");
    assert!(doc["results"][0]["skipped"].is_string());
}

#[test]
fn bad_flags_are_clear_errors_not_panics() {
    for args in [
        vec!["nosuch"],
        vec!["pipeline", "--seconds", "-1"],
        vec!["veth", "--tools", "wireshark"],
        vec!["veth", "--sizes", "40"],
        vec!["gen", "-i", "lo"],
        vec!["gen", "-i", "lo", "--count", "10", "--pps", "fast"],
        vec!["gen", "-i", "lo", "--count", "10", "--size", "20"],
        vec!["gen", "-i", "lo", "--count", "10", "--threads", "0"],
        vec!["gen", "-i", "lo", "--duration", "99999"],
        vec!["gen", "-i", "lo", "--count", "10", "--speed", "2"],
        vec!["seqcheck", "/nonexistent/capture"],
    ] {
        let out = bench().args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(!err.trim().is_empty(), "{args:?} says why");
    }
    for help in [
        vec!["--help"],
        vec!["gen", "--help"],
        vec!["seqcheck", "--help"],
    ] {
        let out = bench().args(&help).output().unwrap();
        assert!(out.status.success(), "{help:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Example"),
            "{help:?}"
        );
    }
}

//! Capture every trace of ../shared/traces through the whole chain (several
//! queues, rotation on) and read it back: tshark must see the same packets.

mod common;

use common::*;
use std::path::Path;
use std::sync::Mutex;

/// Capture `trace` into `dir` with `spread` queues and rotation, return the report.
fn capture(trace: &Path, dir: &Path, spread: u32) -> serde_json::Value {
    let report = dir.join("report.json");
    run_ok(
        linecap()
            .arg("capture")
            .arg("--source")
            .arg(format!("file:{}", trace.display()))
            .args(["--spread", &spread.to_string()])
            .args([
                "--rotate-seconds",
                "1",
                "--rotate-bytes",
                "4K",
                "--batch-bytes",
                "64K",
            ])
            .arg("--out")
            .arg(dir.join("cap"))
            .arg("--report-json")
            .arg(&report),
    );
    common::report(&report)
}

/// tshark's frames of the original, only those that hold an Ethernet frame
/// (ERF metadata records are counted as source drops, not captured).
fn expected(trace: &Path) -> Vec<String> {
    tshark_frames(trace)
        .into_iter()
        .filter(|l| l.split('\t').nth(4).is_some_and(|p| p.starts_with("eth")))
        .collect()
}

fn check_trace(trace: &Path, spread: u32) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let name = trace.file_name().unwrap().to_string_lossy().into_owned();
    let is_erf = name.ends_with(".erf");
    let r = capture(trace, dir.path(), spread);
    assert_balanced(&r);
    let mut want = expected(trace);
    let written = total(&r, |q| q["written"].as_u64().unwrap());
    if written as usize != want.len() {
        return Err(format!(
            "{name}: wrote {written}, tshark sees {}",
            want.len()
        ));
    }
    if want.is_empty() {
        // Only metadata records: all counted as source drops, no files.
        let dropped = total(&r, |q| q["dropped"]["source"].as_u64().unwrap());
        let seen = total(&r, |q| q["seen"].as_u64().unwrap());
        return (dropped == seen && seen > 0).then_some(()).ok_or(format!(
            "{name}: {seen} seen, {dropped} counted at the source"
        ));
    }
    // ERF in → ERF out keeps the wire length in ERF's convention; pcap and
    // pcapng in → nanosecond pcap out.
    let (fmt, out) = if is_erf {
        ("erf", dir.path().join("out.erf"))
    } else {
        ("pcap", dir.path().join("out.pcap"))
    };
    run_ok(
        linecap()
            .arg("read")
            .arg(dir.path().join("cap"))
            .args(["-w"])
            .arg(&out)
            .args(["--format", fmt]),
    );
    let mut got = tshark_frames(&out);
    if spread > 1 {
        // Queues are merged by time; traces whose clock steps back may
        // interleave differently from the original order.
        want.sort();
        got.sort();
    }
    if got != want {
        let first = got.iter().zip(&want).position(|(g, w)| g != w);
        return Err(format!(
            "{name}: read-back differs (got {} frames, want {}); first difference at {first:?}: got {:?} want {:?}",
            got.len(),
            want.len(),
            first.map(|i| &got[i]),
            first.map(|i| &want[i]),
        ));
    }
    if !is_erf {
        // The same capture as pcapng must carry the same frames too.
        let ng = dir.path().join("out.pcapng");
        run_ok(
            linecap()
                .arg("read")
                .arg(dir.path().join("cap"))
                .arg("-w")
                .arg(&ng)
                .args(["-F", "pcapng"]),
        );
        let mut got_ng = tshark_frames(&ng);
        if spread > 1 {
            got_ng.sort();
        }
        if got_ng != want {
            return Err(format!("{name}: pcapng read-back differs"));
        }
    }
    Ok(())
}

fn check_all(spread: u32) {
    let traces = traces();
    let failures = Mutex::new(Vec::new());
    let next = Mutex::new(0usize);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                loop {
                    let i = {
                        let mut n = next.lock().unwrap();
                        *n += 1;
                        *n - 1
                    };
                    let Some(t) = traces.get(i) else { break };
                    if let Err(e) = check_trace(t, spread) {
                        failures.lock().unwrap().push(e);
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} traces failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_trace_round_trips_through_three_queues_with_rotation() {
    check_all(3);
}

#[test]
fn every_trace_round_trips_in_order_through_one_queue() {
    check_all(1);
}

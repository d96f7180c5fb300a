//! `linecap query` against the truth: for every trace of ../shared/traces,
//! captured with several queues and rotation, a fixed set of expressions and
//! time windows must return exactly what `tcpdump -r` returns on the full
//! read-back (frames and timestamps compared with tshark); damaged indexes
//! are scanned around and repaired by `linecap index`; a live capture's open
//! file is searched.

mod common;

use common::*;
use linecap_reader::read::{CaptureReader, Packet};
use linecap_wire::index::{index_key, key_flags};
use std::path::{Path, PathBuf};
use std::process::Command;

fn capture(trace: &Path, out: &Path) {
    run_ok(
        linecap()
            .arg("capture")
            .arg("--source")
            .arg(format!("file:{}", trace.display()))
            .args(["--spread", "3"])
            .args(["--rotate-seconds", "1", "--rotate-bytes", "4K"])
            .args(["--batch-bytes", "64K"])
            .arg("--out")
            .arg(out),
    );
}

fn packets(file: &Path) -> Vec<(u64, Vec<u8>)> {
    let mut r = CaptureReader::open(file).unwrap();
    let mut p = Packet::default();
    let mut v = Vec::new();
    while r.next(&mut p).unwrap() {
        v.push((p.ts_ns, p.data.clone()));
    }
    v
}

/// Expressions built from the trace's first keyable packet.
fn expressions(full: &[(u64, Vec<u8>)]) -> Vec<String> {
    let mut v = vec![
        "host 203.0.113.254".to_string(), // matches nothing
        "udp or icmp".into(),
        "not tcp".into(),
        "vlan".into(),
        "ip6".into(),
    ];
    let Some(k) = full
        .iter()
        .map(|(_, d)| index_key(d))
        .find(|k| !k.is_wild())
    else {
        return v;
    };
    let ip = |a: [u8; 16]| -> String {
        if k.flags & key_flags::V6 != 0 {
            std::net::Ipv6Addr::from(a).to_string()
        } else {
            std::net::Ipv4Addr::new(a[12], a[13], a[14], a[15]).to_string()
        }
    };
    let (a, b) = (ip(k.addr_a), ip(k.addr_b));
    let (prefix, keep) = if k.flags & key_flags::V6 != 0 {
        (64, 8)
    } else {
        (16, 14)
    };
    let mut netaddr = k.addr_a;
    netaddr[keep..].fill(0);
    v.push(format!("host {a}"));
    v.push(format!("net {}/{prefix}", ip(netaddr)));
    if a != b {
        v.push(format!("host {a} and not host {b}"));
    }
    v.push(format!("host {b} or port 53"));
    if k.nvlan > 0 {
        v.push(format!("vlan {} and host {a}", k.vlans[0]));
    }
    if k.flags & key_flags::PORTS != 0 {
        let proto = match k.proto {
            6 => "tcp",
            17 => "udp",
            _ => "sctp",
        };
        v.push(format!("port {}", k.port_b));
        v.push(format!(
            "{proto} and host {a} and host {b} and port {} and port {}",
            k.port_a, k.port_b
        ));
    }
    v
}

/// The reference: tcpdump on the full read-back, then the window.
fn reference(full_pcap: &Path, expr: &str, dir: &Path, lo: u64, hi: u64) -> Vec<(u64, Vec<u8>)> {
    let out = dir.join("ref.pcap");
    run_ok(
        Command::new("tcpdump")
            .args(["-q", "--time-stamp-precision=nano", "-r"])
            .arg(full_pcap)
            .arg("-w")
            .arg(&out)
            .arg(expr),
    );
    packets(&out)
        .into_iter()
        .filter(|(t, _)| *t >= lo && *t < hi)
        .collect()
}

fn query(dirs: &[&Path], extra: &[String], expr: &str, out: &Path) -> String {
    let o = run(linecap()
        .arg("query")
        .args(dirs)
        .args(extra)
        .arg("-w")
        .arg(out)
        .arg(expr));
    assert!(
        o.status.success(),
        "query {expr:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn sorted(mut v: Vec<(u64, Vec<u8>)>) -> Vec<(u64, Vec<u8>)> {
    v.sort();
    v
}

fn check_trace(trace: &Path) -> Result<usize, String> {
    let tmp = tempfile::tempdir().unwrap();
    let cap = tmp.path().join("cap");
    capture(trace, &cap);
    let full = tmp.path().join("full.pcap");
    if files_with(&cap, ".erf.lz4").is_empty() {
        // Nothing Ethernet in the trace (ERF metadata only): nothing to find.
        return Ok(0);
    }
    run_ok(linecap().arg("read").arg(&cap).arg("-w").arg(&full));
    let all = packets(&full);
    if all.is_empty() {
        return Ok(0);
    }
    let mut ts: Vec<u64> = all.iter().map(|(t, _)| *t).collect();
    ts.sort();
    let n = ts.len();
    let mid_lo = ts[n / 3] + 1; // ns edges: excludes a packet at ts[n/3] exactly
    let mid_hi = ts[2 * n / 3];
    let windows = [
        (0, u64::MAX),
        (mid_lo, mid_hi),
        (ts[n / 2], ts[n / 2]), // empty
    ];
    let monotonic = all.windows(2).all(|w| w[0].0 <= w[1].0);
    let mut checked = 0;
    let mut tshark_done = false;
    for expr in expressions(&all) {
        for &(lo, hi) in &windows {
            let mut extra = Vec::new();
            if lo > 0 {
                extra.push("--after".to_string());
                extra.push(format!("{}.{:09}", lo / 1_000_000_000, lo % 1_000_000_000));
            }
            if hi < u64::MAX {
                extra.push("--before".to_string());
                extra.push(format!("{}.{:09}", hi / 1_000_000_000, hi % 1_000_000_000));
            }
            let out = tmp.path().join("q.pcap");
            query(&[&cap], &extra, &expr, &out);
            let want = reference(&full, &expr, tmp.path(), lo, hi);
            let got = packets(&out);
            let same = if monotonic {
                got == want
            } else {
                sorted(got.clone()) == sorted(want.clone())
            };
            if !same {
                return Err(format!(
                    "{}: {expr:?} window [{lo}, {hi}): query gave {} packets, tcpdump {}",
                    trace.display(),
                    got.len(),
                    want.len()
                ));
            }
            // And tshark agrees on time and bytes, frame by frame (once
            // per trace: tshark is slow to start).
            if lo == 0 && !want.is_empty() && !tshark_done {
                tshark_done = true;
                let refp = tmp.path().join("ref.pcap");
                let a: Vec<String> = tshark_frames(&out).into_iter().collect();
                let b: Vec<String> = tshark_frames(&refp).into_iter().collect();
                let (mut a, mut b) = (a, b);
                if !monotonic {
                    a.sort();
                    b.sort();
                }
                if a != b {
                    return Err(format!("{}: {expr:?}: tshark differs", trace.display()));
                }
            }
            checked += 1;
        }
    }
    Ok(checked)
}

#[test]
fn every_trace_every_expression_every_window_equals_tcpdump() {
    let traces = traces();
    let mut failures = Vec::new();
    let mut checked = 0;
    for t in &traces {
        match check_trace(t) {
            Ok(n) => checked += n,
            Err(e) => failures.push(e),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(checked > 40 * 10, "only {checked} comparisons ran");
}

fn data_files(dir: &Path) -> Vec<PathBuf> {
    let mut v = files_with(dir, ".erf.lz4");
    v.retain(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'));
    v.sort();
    v
}

#[test]
fn a_missing_truncated_or_corrupt_index_is_scanned_around_and_repaired() {
    let tmp = tempfile::tempdir().unwrap();
    let cap = tmp.path().join("cap");
    capture(&shared("traces/zeek__wikipedia.pcap"), &cap);
    let full = tmp.path().join("full.pcap");
    run_ok(linecap().arg("read").arg(&cap).arg("-w").arg(&full));
    let files = data_files(&cap);
    assert!(files.len() >= 3, "{files:?}");
    let idx = |p: &Path| linecap_writer::indexer::index_path(p);
    for f in &files {
        assert!(idx(f).exists(), "{} has no index", f.display());
    }
    // Damage three indexes three ways.
    std::fs::remove_file(idx(&files[0])).unwrap();
    let b = std::fs::read(idx(&files[1])).unwrap();
    std::fs::write(idx(&files[1]), &b[..b.len() / 2]).unwrap();
    let mut b = std::fs::read(idx(&files[2])).unwrap();
    let at = b.len() - 20;
    b[at] ^= 0xff;
    std::fs::write(idx(&files[2]), &b).unwrap();
    let expr = "tcp and port 80";
    let want = reference(&full, expr, tmp.path(), 0, u64::MAX);
    assert!(!want.is_empty());
    let out = tmp.path().join("q.pcap");
    let err = query(&[&cap], &[], expr, &out);
    assert_eq!(packets(&out), want, "the scan answers correctly");
    assert!(err.contains("no index"), "{err}");
    assert!(err.contains("truncated"), "{err}");
    assert!(err.contains("checksum"), "{err}");
    assert_eq!(err.matches("scanning the whole file").count(), 3, "{err}");
    // A crash between writing an index and renaming it leaves a stray.
    let name = files[0].file_name().unwrap().to_string_lossy().into_owned();
    let stray = files[0].with_file_name(format!(".{name}.idx.tmp"));
    std::fs::write(&stray, b"half an index").unwrap();
    // Repair; a second run has nothing to do.
    let o = run_ok(linecap().arg("index").arg(&cap));
    assert!(
        o.contains(&format!(
            "{} intact, 3 built, 0 failed, 1 stray .idx.tmp removed",
            files.len() - 3
        )),
        "{o}"
    );
    assert!(!stray.exists());
    // The sizes, by section, against the data.
    assert!(o.contains("index bytes: ") && o.contains("flows "), "{o}");
    let o = run_ok(linecap().arg("index").arg(&cap));
    assert!(
        o.contains(&format!("{} intact, 0 built", files.len())),
        "{o}"
    );
    let err = query(&[&cap], &[], expr, &out);
    assert!(!err.contains("scanning"), "{err}");
    assert_eq!(packets(&out), want);
    // An index built from the file equals the one written at rotation.
    let written = std::fs::read(idx(&files[3])).unwrap();
    run_ok(linecap().args(["index", "--force"]).arg(&cap));
    assert_eq!(std::fs::read(idx(&files[3])).unwrap(), written);
}

#[test]
fn several_directories_merge_into_one_answer_with_an_interface_per_queue() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("probe-a");
    let b = tmp.path().join("probe-b");
    capture(&shared("traces/zeek__http_bro.org.pcap"), &a);
    capture(&shared("traces/libtrace__100_packets.pcap"), &b);
    let full = tmp.path().join("full.pcap");
    run_ok(linecap().arg("read").arg(&a).arg(&b).arg("-w").arg(&full));
    let want = reference(&full, "tcp", tmp.path(), 0, u64::MAX);
    let out = tmp.path().join("q.pcapng");
    let o = run(linecap()
        .arg("query")
        .arg(&a)
        .arg(&b)
        .args(["-F", "pcapng", "-w"])
        .arg(&out)
        .arg("tcp"));
    assert!(o.status.success());
    assert_eq!(sorted(packets(&out)), sorted(want.clone()));
    let ifaces = run_ok(Command::new("tshark").args(["-r"]).arg(&out).args([
        "-T",
        "fields",
        "-e",
        "frame.interface_name",
    ]));
    let mut names: Vec<&str> = ifaces.lines().collect();
    names.sort();
    names.dedup();
    assert!(
        names.len() >= 4,
        "one interface per queue of both probes: {names:?}"
    );
    assert!(names.iter().any(|n| n.contains("probe-a/q0")), "{names:?}");
    // --count and -w - agree.
    let n = run_ok(
        linecap()
            .arg("query")
            .arg(&a)
            .arg(&b)
            .args(["--count", "tcp"]),
    );
    assert_eq!(n.trim(), want.len().to_string());
    let o = run(linecap()
        .arg("query")
        .arg(&a)
        .arg(&b)
        .args(["-w", "-", "tcp"]));
    assert!(o.status.success());
    std::fs::write(tmp.path().join("stdout.pcap"), &o.stdout).unwrap();
    assert_eq!(packets(&tmp.path().join("stdout.pcap")).len(), want.len());
    assert!(
        !Path::new("-").exists(),
        "-w - must not create a file named -"
    );
}

#[test]
fn explain_reports_pruning_and_a_5_tuple_reads_few_blocks() {
    let tmp = tempfile::tempdir().unwrap();
    let cap = tmp.path().join("cap");
    capture(&shared("traces/zeek__wikipedia.pcap"), &cap);
    let full = tmp.path().join("full.pcap");
    run_ok(linecap().arg("read").arg(&cap).arg("-w").arg(&full));
    let all = packets(&full);
    let k = all
        .iter()
        .map(|(_, d)| index_key(d))
        .find(|k| !k.is_wild() && k.flags & key_flags::PORTS != 0)
        .unwrap();
    let v4 = |a: [u8; 16]| std::net::Ipv4Addr::new(a[12], a[13], a[14], a[15]).to_string();
    let expr = format!(
        "host {} and host {} and port {} and port {}",
        v4(k.addr_a),
        v4(k.addr_b),
        k.port_a,
        k.port_b
    );
    let o = run(linecap()
        .arg("query")
        .arg(&cap)
        .args(["--explain", "--count", &expr]));
    let err = String::from_utf8_lossy(&o.stderr);
    let line = err.lines().find(|l| l.starts_with("read:")).unwrap();
    let nums: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    // "files A of B (C pruned by time, D pruned by the index, E ..., F scanned); blocks R of T"
    let (r, t) = (nums[6], nums[7]);
    assert!(
        r < t,
        "the index chose fewer blocks than the files hold: {line}"
    );
    let want = reference(&full, &expr, tmp.path(), 0, u64::MAX);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        want.len().to_string()
    );
    // A window after the last packet: every file pruned by its index header.
    let last = all.iter().map(|(t, _)| *t).max().unwrap() + 1;
    let o = run(linecap().arg("query").arg(&cap).args([
        "--explain",
        "--count",
        "--after",
        &format!("{}.{:09}", last / 1_000_000_000, last % 1_000_000_000),
        "tcp",
    ]));
    let err = String::from_utf8_lossy(&o.stderr);
    let files = data_files(&cap).len();
    assert!(err.contains(&format!("({files} pruned by time")), "{err}");
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "0");
}

#[test]
fn read_takes_the_window_and_an_expression_and_writes_stdout() {
    let tmp = tempfile::tempdir().unwrap();
    let cap = tmp.path().join("cap");
    capture(&shared("traces/zeek__http_bro.org.pcap"), &cap);
    let full = tmp.path().join("full.pcap");
    run_ok(linecap().arg("read").arg(&cap).arg("-w").arg(&full));
    let want = reference(&full, "tcp port 80", tmp.path(), 0, u64::MAX);
    let o = run(linecap()
        .arg("read")
        .arg(&cap)
        .args(["-w", "-", "tcp", "port", "80"]));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::write(tmp.path().join("o.pcap"), &o.stdout).unwrap();
    assert_eq!(packets(&tmp.path().join("o.pcap")), want);
    let t = want[want.len() / 2].0;
    let o = run(linecap().arg("read").arg(&cap).args([
        "-w",
        "-",
        "--after",
        &format!("{}.{:09}", t / 1_000_000_000, t % 1_000_000_000),
        "tcp port 80",
    ]));
    std::fs::write(tmp.path().join("o.pcap"), &o.stdout).unwrap();
    let got = packets(&tmp.path().join("o.pcap"));
    assert_eq!(
        got,
        want.into_iter()
            .filter(|(x, _)| *x >= t)
            .collect::<Vec<_>>()
    );
}

#[test]
fn a_live_capture_is_queryable_within_a_second() {
    let tmp = tempfile::tempdir().unwrap();
    let cap = tmp.path().join("cap");
    // 1000 frames/s over 10 flows, for at most 30 s; files never rotate.
    let mut child = linecap()
        .arg("capture")
        .args(["--source", "synth:100:10:30000:1000", "--flush-ms", "100"])
        .arg("--out")
        .arg(&cap)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut guard = KillOnDrop::new(&child);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut found = None;
    std::thread::sleep(std::time::Duration::from_secs(2));
    while std::time::Instant::now() < deadline {
        let o = run(linecap()
            .arg("query")
            .arg(&cap)
            .args(["--count", "--after", "1s ago", "udp"]));
        let n: u64 = String::from_utf8_lossy(&o.stdout)
            .trim()
            .parse()
            .unwrap_or(0);
        if n > 0 {
            found = Some(n);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let _ = child.kill();
    let _ = child.wait();
    guard.disarm();
    let n = found.expect("a frame sent in the last second was not found");
    assert!(n <= 2_000, "{n} frames in one second at 1000/s?");
    assert!(
        data_files(&cap).is_empty(),
        "the data was still in the open file"
    );
}

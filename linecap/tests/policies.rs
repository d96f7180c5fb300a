//! Capture policies in the live path: BPF filter (judged by tcpdump),
//! sampling, snaplen and Crypto-PAn anonymisation (judged by the published
//! vectors), each with exact accounting.

mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn capture(trace: &Path, dir: &Path, extra: &[&str]) -> serde_json::Value {
    let report = dir.join("report.json");
    run_ok(
        linecap()
            .arg("capture")
            .arg("--source")
            .arg(format!("file:{}", trace.display()))
            .args(extra)
            .arg("--out")
            .arg(dir.join("cap"))
            .arg("--report-json")
            .arg(&report),
    );
    let r = common::report(&report);
    assert_balanced(&r);
    r
}

fn read_back(dir: &Path) -> PathBuf {
    let out = dir.join("back.pcap");
    run_ok(
        linecap()
            .arg("read")
            .arg(dir.join("cap"))
            .arg("-w")
            .arg(&out),
    );
    out
}

fn sum(r: &serde_json::Value, f: impl Fn(&serde_json::Value) -> u64) -> u64 {
    total(r, f)
}

#[test]
fn filter_keeps_exactly_what_tcpdump_keeps() {
    for (trace, expr) in [
        ("traces/tcpreplay__test.pcap", "tcp"),
        ("traces/tcpreplay__test.pcap", "udp port 53"),
        ("traces/libtrace__vlan.pcap", "vlan and icmp"),
        ("traces/ndpi__http_ipv6.pcap", "ip6 and tcp"),
        (
            "traces/suricata-verify__icmp_and_ssh.pcap",
            "tcp[tcpflags] & tcp-syn != 0",
        ),
    ] {
        let trace = shared(trace);
        let dir = tempfile::tempdir().unwrap();
        let r = capture(&trace, dir.path(), &["--spread", "2", "--filter", expr]);
        let want_file = dir.path().join("tcpdump.pcap");
        run_ok(
            Command::new("tcpdump")
                .arg("-r")
                .arg(&trace)
                .arg("-w")
                .arg(&want_file)
                .arg(expr),
        );
        let mut want = tshark_frames(&want_file);
        let mut got = tshark_frames(&read_back(dir.path()));
        want.sort();
        got.sort();
        assert_eq!(got, want, "{expr} on {}", trace.display());
        let all = tshark_frames(&trace).len() as u64;
        assert_eq!(
            sum(&r, |q| q["dropped"]["filter"].as_u64().unwrap()),
            all - want.len() as u64
        );
    }
    // A bad expression is refused before anything starts, with libpcap's words.
    let dir = tempfile::tempdir().unwrap();
    let out = run(linecap()
        .args(["capture", "--source", "synth:64", "--filter", "tcp and and"])
        .arg("--out")
        .arg(dir.path()));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--filter"),
        "{out:?}"
    );
}

#[test]
fn sampling_one_in_n_is_exact_and_flow_sampling_never_splits_a_flow() {
    let trace = shared("traces/zeek__http_bro.org.pcap"); // 751 frames
    let dir = tempfile::tempdir().unwrap();
    // Exactly every 7th frame: the 7th, 14th, ... (1-indexed).
    let r = capture(&trace, dir.path(), &["--sample", "every:7"]);
    assert_eq!(sum(&r, |q| q["written"].as_u64().unwrap()), 751 / 7);
    assert_eq!(
        sum(&r, |q| q["dropped"]["sample"].as_u64().unwrap()),
        751 - 751 / 7
    );

    // Flow-consistent: every flow in the output has all its packets.
    let trace = shared("traces/suricata-verify__icmp_and_ssh.pcap");
    let dir = tempfile::tempdir().unwrap();
    let r = capture(&trace, dir.path(), &["--sample", "flows:2:7"]);
    let written = sum(&r, |q| q["written"].as_u64().unwrap());
    assert!(written > 0 && written < 362, "{written}");
    let tsv = run_ok(linecap().arg("flows").arg(dir.path().join("cap")).args([
        "--format",
        "tsv",
        "--idle-timeout",
        "1e9",
        "--active-timeout",
        "1e9",
        "--linger",
        "1e9",
        // The capture is ERF, whose wlen counts the FCS; the reference was
        // made from the pcap: compare wire bytes without it.
        "--erf-fcs-bytes",
        "0",
    ]));
    let reference = std::fs::read_to_string(shared(
        "reference/flows/suricata-verify__icmp_and_ssh.pcap.flows.tsv",
    ))
    .unwrap();
    let key = |l: &str| l.split('\t').take(6).collect::<Vec<_>>().join("\t");
    let counts = |l: &str| l.split('\t').skip(6).take(4).collect::<Vec<_>>().join("\t");
    let mut kept = 0;
    for line in tsv.lines().filter(|l| !l.starts_with('#')) {
        let refline = reference
            .lines()
            .find(|r| key(r) == key(line))
            .unwrap_or_else(|| panic!("flow not in the reference: {line}"));
        assert_eq!(
            counts(line),
            counts(refline),
            "flow split by sampling: {line}"
        );
        kept += 1;
    }
    assert!(kept > 0);
}

#[test]
fn snaplen_keeps_the_first_bytes_and_the_wire_length() {
    let trace = shared("traces/zeek__http_bro.org.pcap");
    let dir = tempfile::tempdir().unwrap();
    let r = capture(&trace, dir.path(), &["--snaplen", "64"]);
    assert_eq!(sum(&r, |q| q["written"].as_u64().unwrap()), 751);
    let orig = tshark_frames(&trace);
    let got = tshark_frames(&read_back(dir.path()));
    for (o, g) in orig.iter().zip(&got) {
        let of: Vec<&str> = o.split('\t').collect();
        let gf: Vec<&str> = g.split('\t').collect();
        assert_eq!(of[0], gf[0], "time");
        assert_eq!(of[2], gf[2], "wire length kept");
        let cap: usize = gf[1].parse().unwrap();
        assert_eq!(cap, of[1].parse::<usize>().unwrap().min(64));
    }
}

/// The published Crypto-PAn key, copied to a private file (keys must not
/// be world-readable).
fn private_key(dir: &Path) -> PathBuf {
    // The shared file has comment lines; the key is the hex line.
    let text = std::fs::read_to_string(shared("vectors/cryptopan_reference_key.hex")).unwrap();
    let hex = text
        .lines()
        .find(|l| !l.starts_with('#') && !l.trim().is_empty())
        .unwrap();
    let p = dir.join("key.hex");
    std::fs::write(&p, hex.trim()).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

fn anonymize(key: &Path, input: &str) -> String {
    let mut child = linecap()
        .arg("anonymize")
        .arg("--key")
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn anonymize_command_reproduces_the_published_vectors() {
    let dir = tempfile::tempdir().unwrap();
    let key = private_key(dir.path());
    let col = |f: &str| -> Vec<String> {
        std::fs::read_to_string(shared(f))
            .unwrap()
            .lines()
            .map(|l| l.split_whitespace().nth(2).unwrap().to_string())
            .collect()
    };
    let raw = col("vectors/cryptopan_reference_sample_trace_raw.dat");
    let want = col("vectors/cryptopan_reference_sample_trace_sanitized.dat");
    assert_eq!(raw.len(), 100);
    let got: Vec<String> = anonymize(&key, &raw.join("\n"))
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(got, want);
    // A world-readable key is refused.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = run(linecap()
        .arg("anonymize")
        .arg("--key")
        .arg(&key)
        .stdin(Stdio::null()));
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_capture_with_anonymisation_maps_every_address_as_crypto_pan_says() {
    let dir = tempfile::tempdir().unwrap();
    let key = private_key(dir.path());
    for trace in ["traces/tcpreplay__test.pcap", "traces/zeek__ftp_ipv6.pcap"] {
        let trace = shared(trace);
        let d = dir.path().join(trace.file_name().unwrap());
        std::fs::create_dir_all(&d).unwrap();
        let r = capture(&trace, &d, &["--anonymize-key", key.to_str().unwrap()]);
        let n = tshark_frames(&trace).len() as u64;
        assert_eq!(sum(&r, |q| q["written"].as_u64().unwrap()), n);
        let fields = |f: &Path| {
            run_ok(Command::new("tshark").arg("-r").arg(f).args([
                "-T",
                "fields",
                "-e",
                "ip.src",
                "-e",
                "ip.dst",
                "-e",
                "ipv6.src",
                "-e",
                "ipv6.dst",
                "-E",
                "occurrence=f",
            ]))
        };
        let orig = fields(&trace);
        let got = fields(&read_back(&d));
        let orig_addrs: Vec<&str> = orig.split(['\t', '\n']).filter(|s| !s.is_empty()).collect();
        let got_addrs: Vec<&str> = got.split(['\t', '\n']).filter(|s| !s.is_empty()).collect();
        assert_eq!(orig_addrs.len(), got_addrs.len());
        assert!(!orig_addrs.is_empty());
        let mapped = anonymize(&key, &orig_addrs.join("\n"));
        let mapped: Vec<&str> = mapped.lines().collect();
        assert_eq!(got_addrs, mapped, "{}", trace.display());
        assert_ne!(orig_addrs, got_addrs, "addresses must change");
    }
}

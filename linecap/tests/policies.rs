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

/// Frames of a capture directory, read back with `linecap read`.
fn frames_of(dir: &Path, name: &str) -> Vec<String> {
    let out = dir.with_extension(format!("{name}.pcap"));
    run_ok(linecap().arg("read").arg(dir).arg("-w").arg(&out));
    let mut f = tshark_frames(&out);
    f.sort();
    f
}

/// What `tcpdump EXPR` keeps of `trace`, as tshark lines, sorted.
fn tcpdump_keeps(trace: &Path, expr: &str, scratch: &Path) -> Vec<String> {
    let want = scratch.join(format!("want-{}.pcap", expr.replace(' ', "_")));
    run_ok(
        Command::new("tcpdump")
            .arg("-r")
            .arg(trace)
            .arg("-w")
            .arg(&want)
            .arg(expr),
    );
    let mut f = tshark_frames(&want);
    f.sort();
    f
}

fn manifests(dir: &Path) -> Vec<serde_json::Value> {
    files_with(dir, ".json")
        .iter()
        .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
        .collect()
}

#[test]
fn two_jobs_with_different_filters_write_the_two_expected_outputs_with_separate_accounting() {
    let trace = shared("traces/tcpreplay__test.pcap");
    let all = tshark_frames(&trace).len() as u64;
    let dir = tempfile::tempdir().unwrap();
    let dns_dir = dir.path().join("dns");
    let r = capture(
        &trace,
        dir.path(),
        &[
            "--spread",
            "3",
            "--filter",
            "tcp",
            "--job",
            &format!("dns:{};filter=udp port 53", dns_dir.display()),
        ],
    );
    // Each job's output is exactly what tcpdump keeps with its expression.
    let want_tcp = tcpdump_keeps(&trace, "tcp", dir.path());
    let want_dns = tcpdump_keeps(&trace, "udp port 53", dir.path());
    assert!(!want_tcp.is_empty() && !want_dns.is_empty());
    assert_eq!(frames_of(&dir.path().join("cap"), "main"), want_tcp);
    assert_eq!(frames_of(&dns_dir, "dns"), want_dns);

    // Separate, exact accounting: 3 queues per job, each job saw every frame.
    let lines = r["queues"].as_array().unwrap();
    assert_eq!(lines.len(), 6, "{r:#}");
    let jobs = r["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 2);
    for (job, want) in [("main", &want_tcp), ("dns", &want_dns)] {
        let j = jobs.iter().find(|j| j["name"] == job).unwrap();
        assert_eq!(j["seen"].as_u64().unwrap(), all, "{job}");
        assert_eq!(j["written"].as_u64().unwrap(), want.len() as u64, "{job}");
        let filtered: u64 = lines
            .iter()
            .filter(|q| q["job"] == job)
            .map(|q| q["dropped"]["filter"].as_u64().unwrap())
            .sum();
        assert_eq!(filtered, all - want.len() as u64, "{job}");
    }
    // Every manifest says which job and policy made its file.
    let m = manifests(&dns_dir);
    assert!(!m.is_empty());
    for m in &m {
        assert_eq!(m["capture"]["job"], "dns", "{m:#}");
        assert_eq!(m["capture"]["filter"], "udp port 53", "{m:#}");
        assert_eq!(m["capture"]["sampling_rate"], 1.0, "{m:#}");
    }
    for m in manifests(&dir.path().join("cap")) {
        assert_eq!(m["capture"]["job"], "main", "{m:#}");
        assert_eq!(m["capture"]["filter"], "tcp", "{m:#}");
    }
}

#[test]
fn jobs_are_checked_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    for (args, says) in [
        (
            vec![
                "--out".to_string(),
                format!("{d}/a"),
                "--job".into(),
                format!("main:{d}/b"),
            ],
            "two capture jobs are named",
        ),
        (
            vec![
                "--out".to_string(),
                format!("{d}/a"),
                "--job".into(),
                format!("x:{d}/a/x"),
            ],
            "inside one another",
        ),
        (
            vec!["--job".to_string(), format!("x:{d}/x;filter=tcp and and")],
            "--job x",
        ),
        (
            vec!["--job".to_string(), format!("x:{d}/x;colour=blue")],
            "unknown job key",
        ),
        (vec!["--job".to_string(), "nodir".into()], "NAME:DIR"),
        (
            vec![
                "--filter".to_string(),
                "tcp".into(),
                "--job".into(),
                format!("x:{d}/x"),
            ],
            "main job",
        ),
    ] {
        let out = run(linecap()
            .args(["capture", "--source", "synth:64:1:10"])
            .args(&args));
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

/// (eth.src, eth.dst, ip.src, ip.dst) of every frame.
fn eth_ip(file: &Path) -> Vec<[String; 4]> {
    let out = run_ok(Command::new("tshark").arg("-r").arg(file).args([
        "-T", "fields", "-e", "eth.src", "-e", "eth.dst", "-e", "ip.src", "-e", "ip.dst",
    ]));
    out.lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            std::array::from_fn(|i| f.get(i).unwrap_or(&"").to_string())
        })
        .collect()
}

#[test]
fn mac_pseudonyms_are_stable_per_key_and_keep_group_addresses() {
    let trace = shared("traces/tcpreplay__test.pcap");
    let dir = tempfile::tempdir().unwrap();
    let key_a = private_key(dir.path());
    let key_b = dir.path().join("other.key");
    std::fs::write(&key_b, "ab".repeat(32)).unwrap();
    std::fs::set_permissions(&key_b, std::fs::Permissions::from_mode(0o600)).unwrap();
    let b_dir = dir.path().join("b");
    capture(
        &trace,
        dir.path(),
        &[
            "--mac-key",
            key_a.to_str().unwrap(),
            "--job",
            &format!("b:{};mac-key={}", b_dir.display(), key_b.display()),
        ],
    );
    let orig = eth_ip(&trace);
    let a = eth_ip(&read_back(dir.path()));
    let b_file = dir.path().join("b.pcap");
    run_ok(linecap().arg("read").arg(&b_dir).arg("-w").arg(&b_file));
    let b = eth_ip(&b_file);
    assert_eq!(orig.len(), a.len());
    assert_eq!(orig.len(), b.len());
    let mut map_a = std::collections::HashMap::new();
    let mut unicast = 0;
    for ((o, a), b) in orig.iter().zip(&a).zip(&b) {
        assert_eq!(o[2..], a[2..], "IP addresses untouched");
        for i in 0..2 {
            let first = u8::from_str_radix(&o[i][..2], 16).unwrap();
            if first & 1 == 1 {
                assert_eq!(o[i], a[i], "group address kept");
                assert_eq!(o[i], b[i], "group address kept");
                continue;
            }
            unicast += 1;
            assert_ne!(o[i], a[i]);
            assert_ne!(a[i], b[i], "two keys, two pseudonyms");
            let pa = u8::from_str_radix(&a[i][..2], 16).unwrap();
            assert_eq!(pa & 3, 2, "unicast, locally administered: {}", a[i]);
            // Stable: one address always gets the same pseudonym.
            let prev = map_a.insert(o[i].clone(), a[i].clone());
            assert!(prev.is_none_or(|p| p == a[i]), "{} unstable", o[i]);
        }
    }
    assert!(unicast > 0);
    // Distinct addresses keep distinct pseudonyms.
    let images: std::collections::HashSet<_> = map_a.values().collect();
    assert_eq!(images.len(), map_a.len());
}

#[test]
fn the_sampling_rate_is_in_the_manifests_and_the_flow_records() {
    require_duckdb();
    let trace = shared("traces/zeek__http_bro.org.pcap");
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("flowlogs");
    capture(
        &trace,
        dir.path(),
        &["--sample", "every:4", "--parquet", logs.to_str().unwrap()],
    );
    for m in manifests(&dir.path().join("cap")) {
        assert_eq!(m["capture"]["sampling"], "every:4", "{m:#}");
        assert_eq!(m["capture"]["sampling_rate"], 0.25, "{m:#}");
    }
    let query = format!(
        "import duckdb\n\
         r = duckdb.connect().execute(\"SELECT count(*), min(sampling_rate), max(sampling_rate) \
         FROM read_parquet('{}/**/*.parquet')\").fetchone()\n\
         print(*r)",
        logs.display()
    );
    let out = run_ok(Command::new("python3").arg("-c").arg(query));
    let f: Vec<&str> = out.split_whitespace().collect();
    assert!(f[0].parse::<u64>().unwrap() > 0, "{out}");
    assert_eq!(&f[1..], ["0.25", "0.25"], "{out}");
}

//! The control API on a live AF_XDP capture, in network namespaces this test
//! creates (both veth ends inside them): tcpreplay sends numbered frames in
//! three phases; a job added between the first and second and stopped
//! between the second and third holds exactly the second phase's frames its
//! filter keeps, and the job that ran all along holds every frame sent.
//!
//! Needs root, XDP and AF_XDP: `#[ignore]`d, run by `.ci/privileged-tests`.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use common::*;
use linecap::api::ApiListen;
use linecap::ctl::request;
use linecap_reader::output::{OutFormat, PacketWriter};
use linecap_reader::read::{CaptureReader, Packet};
use serde_json::{Value, json};

const TOKEN: &str = "veth-test-token-0123456789";
const PER_PHASE: u64 = 3000;

/// `PER_PHASE` Ethernet/IPv4/UDP frames numbered from `first` (the number in
/// bytes 42..50), alternating UDP source ports 5000 and 5001.
fn phase_pcap(path: &Path, first: u64) {
    let mut w = PacketWriter::create(path, OutFormat::Pcap).unwrap();
    for i in 0..PER_PHASE {
        let seq = first + i;
        let mut f = vec![0u8; 64];
        f[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0xaa]);
        f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0xbb]);
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        f[14] = 0x45;
        f[16..18].copy_from_slice(&50u16.to_be_bytes()); // IP total length
        f[22] = 64;
        f[23] = 17;
        f[26..30].copy_from_slice(&[10, 9, 0, 1]);
        f[30..34].copy_from_slice(&[10, 9, 0, 2]);
        let sport = 5000 + (seq % 2) as u16;
        f[34..36].copy_from_slice(&sport.to_be_bytes());
        f[36..38].copy_from_slice(&6000u16.to_be_bytes());
        f[38..40].copy_from_slice(&30u16.to_be_bytes()); // UDP length
        f[42..50].copy_from_slice(&seq.to_be_bytes());
        w.write(&Packet {
            ts_ns: 1_700_000_000_000_000_000 + seq * 1000,
            wire_len: 64,
            data: f,
            ..Packet::default()
        })
        .unwrap();
    }
    w.finish().unwrap();
}

fn sequences(dir: &Path) -> Vec<u64> {
    let mut out = Vec::new();
    for f in files_with(dir, ".erf.lz4") {
        let mut r = CaptureReader::open(&f).unwrap();
        let mut p = Packet::default();
        while r.next(&mut p).unwrap() {
            if p.data.len() >= 50 && p.data[12..14] == [0x08, 0x00] {
                out.push(u64::from_be_bytes(p.data[42..50].try_into().unwrap()));
            }
        }
    }
    out.sort_unstable();
    out
}

#[test]
#[ignore = "needs root, XDP and AF_XDP: run by `make test` as root"]
fn a_job_added_through_the_api_on_a_live_link_holds_exactly_the_frames_sent_while_it_ran() {
    if let Some(why) = privileged_unavailable() {
        panic!("this privileged test cannot run: {why}");
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (i, name) in ["p1.pcap", "p2.pcap", "p3.pcap"].iter().enumerate() {
        phase_pcap(&d.join(name), i as u64 * PER_PHASE);
    }
    let tok = d.join("api.token");
    std::fs::write(&tok, format!("{TOKEN}\n")).unwrap();
    std::fs::set_permissions(&tok, std::fs::Permissions::from_mode(0o600)).unwrap();
    let sock = d.join("api.sock");
    let veth = VethPair::new("api", 2);
    let report = d.join("report.json");
    let (mut child, _stderr) = spawn_until(
        veth.in_cap(env!("CARGO_BIN_EXE_linecap"))
            .args([
                "capture",
                "--source",
                "afxdp:vA",
                "--no-metrics",
                "--flush-ms",
                "20",
            ])
            .arg("--out")
            .arg(d.join("main"))
            .arg("--api")
            .arg(format!("unix:{}", sock.display()))
            .arg("--api-token")
            .arg(&tok)
            .arg("--report-json")
            .arg(&report),
        "ready",
    );
    let mut guard = KillOnDrop::new(&child);
    let api = ApiListen::Unix(sock);
    let call = |method: &str, path: &str, body: Option<Value>| -> (u16, Value) {
        let b = body.map(|b| b.to_string().into_bytes());
        let a = request(&api, Some(TOKEN), method, path, b.as_deref()).unwrap();
        (
            a.status,
            serde_json::from_slice(&a.body).unwrap_or(Value::Null),
        )
    };
    let send = |name: &str| {
        let out = run_ok(
            veth.in_send("tcpreplay")
                .args(["-i", "vB", "--pps", "20000"])
                .arg(d.join(name)),
        );
        let sent: Option<u64> = out
            .lines()
            .find_map(|l| l.trim().strip_prefix("Successful packets:"))
            .and_then(|v| v.trim().parse().ok());
        assert_eq!(sent, Some(PER_PHASE), "tcpreplay sent the phase:\n{out}");
        // Let every frame sent reach the files before the next step.
        std::thread::sleep(Duration::from_millis(500));
    };
    send("p1.pcap");
    let (st, v) = call(
        "POST",
        "/v1/jobs",
        Some(json!({"name": "odd", "directory": "odd", "filter": "udp src port 5001"})),
    );
    assert_eq!(st, 201, "{v}");
    send("p2.pcap");
    let (st, stopped) = call("DELETE", "/v1/jobs/odd", None);
    assert_eq!(st, 200, "{stopped}");
    send("p3.pcap");
    let (_, status) = call("GET", "/v1/status", None);
    signal(&child, "INT");
    let exit = child.wait().unwrap();
    guard.disarm();
    assert!(exit.success(), "linecap exited with {exit}");

    let odd = sequences(&d.join("odd"));
    let want: Vec<u64> = (PER_PHASE..2 * PER_PHASE).filter(|s| s % 2 == 1).collect();
    assert_eq!(odd, want, "the job holds exactly phase 2's odd frames");
    let main = sequences(&d.join("main"));
    assert_eq!(
        main,
        (0..3 * PER_PHASE).collect::<Vec<_>>(),
        "the main job lost nothing"
    );
    let r = common::report(&report);
    assert_balanced(&r);
    let jobs = r["jobs"].as_array().unwrap();
    let m = jobs.iter().find(|j| j["name"] == "main").unwrap();
    assert_eq!(m["dropped"], 0, "{m}");
    let o = jobs.iter().find(|j| j["name"] == "odd").unwrap();
    assert_eq!(o["written"], stopped["written"]);
    assert_eq!(o["written"].as_u64(), Some(want.len() as u64));
    assert_eq!(o["seen"], stopped["seen"]);
    // The status read after the traffic equals the final report for both jobs.
    let sj = status["jobs"].as_array().unwrap();
    for j in [m, o] {
        let s = sj.iter().find(|s| s["name"] == j["name"]).unwrap();
        assert_eq!(
            (&s["seen"], &s["written"]),
            (&j["seen"], &j["written"]),
            "{s} vs {j}"
        );
    }
}

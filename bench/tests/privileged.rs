//! The generator against a real receiver, and the `veth` suite, in network
//! namespaces these tests create (both ends of the veth inside them) and
//! remove, also when a test fails.
//!
//! They need root and a kernel with XDP/AF_XDP, so they are `#[ignore]`d:
//! a plain `cargo test` lists them as ignored, `.ci/privileged-tests` runs
//! them as root (and says SKIPPED otherwise).

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn bench() -> Command {
    Command::new(env!("CARGO_BIN_EXE_bench"))
}

fn linecap_bin() -> PathBuf {
    let p = Path::new(env!("CARGO_BIN_EXE_bench")).with_file_name("linecap");
    assert!(
        p.exists(),
        "{} is missing: run `cargo test --workspace` or `cargo build -p linecap` first",
        p.display()
    );
    p
}

fn require_root() {
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
    assert!(
        root,
        "this privileged test cannot run: not root (run .ci/privileged-tests as root)"
    );
}

fn ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Namespaces `cap` (vA) and `snd` (vB) joined by a `queues`-queue veth.
struct Veth {
    cap: String,
    snd: String,
}

impl Veth {
    fn new(tag: &str, queues: u32) -> Veth {
        let id = format!("{}-{tag}", std::process::id());
        let v = Veth {
            cap: format!("lcgt-c-{id}"),
            snd: format!("lcgt-s-{id}"),
        };
        let q = queues.to_string();
        for ns in [&v.cap, &v.snd] {
            ok(Command::new("ip").args(["netns", "add", ns]));
        }
        ok(Command::new("ip")
            .args(["link", "add", "vA", "netns", &v.cap])
            .args(["numtxqueues", &q, "numrxqueues", &q, "type", "veth"])
            .args(["peer", "name", "vB", "netns", &v.snd])
            .args(["numtxqueues", &q, "numrxqueues", &q]));
        ok(Command::new("ip").args(["-n", &v.cap, "link", "set", "vA", "up"]));
        ok(Command::new("ip").args(["-n", &v.snd, "link", "set", "vB", "up"]));
        v
    }

    fn generator(&self) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.snd])
            .arg(env!("CARGO_BIN_EXE_bench"))
            .args(["gen", "-i", "vB", "--json", "-"]);
        c
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        for ns in [&self.cap, &self.snd] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Start linecap capturing vA; returns once it says "ready".
fn start_linecap(veth: &Veth, out: &Path) -> Child {
    let mut child = Command::new("ip")
        .args(["netns", "exec", &veth.cap])
        .arg(linecap_bin())
        .args(["capture", "--source", "afxdp:vA", "--no-metrics", "--out"])
        .arg(out)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(l);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(l) if l.contains("ready") => break,
            Ok(_) => {}
            Err(_) => {
                let _ = child.kill();
                panic!("linecap did not get ready");
            }
        }
    }
    child
}

fn stop(child: &mut Child) {
    std::thread::sleep(Duration::from_millis(300));
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let st = child.wait().unwrap();
    assert!(st.success(), "linecap exited with {st}");
}

fn gen_report(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "bench gen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
#[ignore = "needs root and AF_XDP: run by .ci/privileged-tests"]
fn generator_sends_exact_counts_at_the_rate_and_linecap_receives_every_sequence_number() {
    require_root();
    for (tx, threads, size, pps, count) in [
        ("packet", 2, "64", 50_000u64, 100_000u64),
        ("packet", 1, "imix", 100_000, 150_000),
        ("xdp", 2, "1514", 40_000, 60_000),
    ] {
        let veth = Veth::new(&format!("r{tx}{threads}"), 2);
        let dir = std::env::temp_dir().join(format!("lcgt-{}-{tx}{threads}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut child = start_linecap(&veth, &dir);
        let out = veth
            .generator()
            .args([
                "--tx",
                tx,
                "--threads",
                &threads.to_string(),
                "--size",
                size,
            ])
            .args(["--pps", &pps.to_string(), "--count", &count.to_string()])
            .output()
            .unwrap();
        stop(&mut child);
        let r = gen_report(&out);
        assert_eq!(r["sent"].as_u64(), Some(count), "exact count: {r:#}");
        let achieved = r["achieved_pps"].as_f64().unwrap();
        assert!(
            (achieved - pps as f64).abs() <= 0.05 * pps as f64,
            "{tx} x{threads} {size}: rate within 5% of {pps}: {r:#}"
        );
        assert_eq!(r["generator_limited"], false, "{r:#}");
        let check = bench()
            .arg("seqcheck")
            .arg(&dir)
            .args(["--expect", &count.to_string(), "--json", "-"])
            .output()
            .unwrap();
        let c: serde_json::Value = serde_json::from_slice(&check.stdout).unwrap();
        assert_eq!(
            c["exact"], true,
            "{tx} x{threads} {size}: every number once: {c:#}"
        );
        assert_eq!(c["distinct"].as_u64(), Some(count));
        if tx == "xdp" {
            // AF_XDP: thread t sends on queue t, so both queues carry frames.
            assert_eq!(c["streams"].as_u64(), Some(2), "both queues wrote: {c:#}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
#[ignore = "needs root: run by .ci/privileged-tests"]
fn generator_reports_its_ceiling_when_asked_for_more() {
    require_root();
    let veth = Veth::new("ceil", 1);
    let out = veth
        .generator()
        .args(["--size", "64", "--pps", "100M", "--duration", "0.5"])
        .output()
        .unwrap();
    let r = gen_report(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(r["generator_limited"], true, "{r:#}");
    assert!(r["achieved_pps"].as_f64().unwrap() < 100e6);
    assert!(err.contains("could not reach the target"), "{err}");
    // Bounded by the duration even though frames remained.
    assert!(r["seconds"].as_f64().unwrap() < 1.0, "{r:#}");
}

#[test]
#[ignore = "needs root, AF_XDP, tcpdump: run by .ci/privileged-tests"]
fn veth_suite_runs_briefly_and_writes_json_csv_and_plot() {
    require_root();
    let dir = std::env::temp_dir().join(format!("lcgt-veth-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = bench()
        .args(["veth", "--tools", "linecap-native,tcpdump", "--sizes", "64"])
        .args([
            "--seconds",
            "0.2",
            "--steps",
            "0",
            "--max-pps",
            "100000",
            "--out",
        ])
        .arg(&dir)
        .env("LINECAP_BIN", linecap_bin())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("veth.json")).unwrap()).unwrap();
    let rows = doc["results"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{doc:#}");
    for r in rows {
        assert!(r["error"].is_null(), "{r:#}");
        assert!(r["zero_loss_pps"].as_f64().unwrap() > 0.0, "{r:#}");
        assert!(!r["trials"].as_array().unwrap().is_empty());
    }
    let csv = std::fs::read_to_string(dir.join("veth.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3);
    let svg = std::fs::read_to_string(dir.join("veth-loss.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("<polyline"));
    // No namespace of the suite's is left behind.
    let ns = ok(Command::new("ip").args(["netns", "list"]));
    assert!(!ns.contains("lcbc-") && !ns.contains("lcbs-"), "{ns}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
#[ignore = "needs root, AF_XDP, stenographer, tcpdump: run by .ci/privileged-tests"]
fn query_suite_runs_briefly_and_the_three_answers_agree() {
    require_root();
    let dir = std::env::temp_dir().join(format!("lcgt-query-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = bench()
        .args([
            "query",
            "--bytes",
            "8M",
            "--runs",
            "1",
            "--query-flows",
            "2000",
        ])
        .arg("--out")
        .arg(&dir)
        .env("LINECAP_BIN", linecap_bin())
        .output()
        .unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("query.json")).unwrap()).unwrap();
    let rows = doc["results"].as_array().unwrap();
    // 2 queries x 2 windows x 3 tools, and the summary.
    assert_eq!(rows.len(), 13, "{said}");
    for r in &rows[..12] {
        assert!(r["error"].is_null(), "{r:#}");
        assert_eq!(
            r["counts_agree"], true,
            "linecap query, the scan and stenoread differ: {said}"
        );
        assert!(r["frames"].as_u64().unwrap() > 0, "{r:#}");
    }
    let s = &rows[12];
    assert!(s["linecap_index_bytes"].as_u64().unwrap() > 0, "{s:#}");
    assert!(!said.contains("MISMATCH"), "{said}");
    // No namespace or process of the suite's is left behind.
    let ns = ok(Command::new("ip").args(["netns", "list"]));
    assert!(!ns.contains("lcq-"), "{ns}");
    // Nor its work directory (the captures): lcq-PID of a process now gone.
    for e in std::fs::read_dir(std::env::temp_dir()).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix("lcq-") {
            assert!(
                Path::new(&format!("/proc/{pid}")).exists(),
                "{} was left behind",
                e.path().display()
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

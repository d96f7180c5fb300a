//! Helpers shared by the integration tests: run the built binary, run the
//! outside tools that judge its output, read the JSON accounting.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `linecap` binary under test.
pub fn linecap() -> Command {
    Command::new(env!("CARGO_BIN_EXE_linecap"))
}

/// `../shared` relative to the repository root.
pub fn shared(rel: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared")
        .join(rel);
    assert!(
        p.exists(),
        "test material {} is missing: the tests need ../shared beside the checkout",
        p.display()
    );
    p
}

/// Every trace in ../shared/traces, sorted.
pub fn traces() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(shared("traces"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    assert_eq!(v.len(), 40, "expected the 40 traces of ../shared/traces");
    v
}

/// Run a command, panicking with its output if it cannot start.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (is it installed? see .ci/run)"))
}

/// Run and require exit 0; return stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// tshark's view of every frame: time, captured length, wire length, MD5
/// of the captured bytes, and the decoded protocol stack (ERF's own layer
/// removed so ERF and pcap files compare).
pub fn tshark_frames(file: &Path) -> Vec<String> {
    let out = run_ok(
        Command::new("tshark")
            .args(["-n", "-o", "frame.generate_md5_hash:TRUE", "-T", "fields"])
            // Decode every frame on its own: reassembly would make a frame's
            // protocols depend on its neighbours, and merged queues may order
            // frames of equal timestamps differently from the original.
            .args(["-o", "ip.defragment:FALSE", "-o", "ipv6.defragment:FALSE"])
            .args(["-o", "tcp.desegment_tcp_streams:FALSE"])
            .args([
                "-e",
                "frame.time_epoch",
                "-e",
                "frame.cap_len",
                "-e",
                "frame.len",
            ])
            .args(["-e", "frame.md5_hash", "-e", "frame.protocols", "-r"])
            .arg(file),
    );
    out.lines().map(|l| l.replace("\terf:", "\t")).collect()
}

/// Drop the wire-length column (for comparisons across the FCS convention).
pub fn without_len(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .map(|l| {
            let mut f: Vec<&str> = l.split('\t').collect();
            if f.len() > 2 {
                f.remove(2);
            }
            f.join("\t")
        })
        .collect()
}

/// The JSON accounting a capture wrote with `--report-json`.
pub fn report(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Every counted drop of one queue line of the report, over all stages.
pub fn dropped_sum(q: &serde_json::Value) -> u64 {
    let d = &q["dropped"];
    [
        "filter",
        "sample",
        "source",
        "nic",
        "xdp",
        "ring_full",
        "writer",
        "after_count",
    ]
    .iter()
    .map(|k| d[k].as_u64().unwrap())
    .sum()
}

/// Assert received = written + every counted drop, per queue and per stage.
pub fn assert_balanced(r: &serde_json::Value) {
    assert_eq!(r["balanced"], true, "{r:#}");
    for q in r["queues"].as_array().unwrap() {
        let d = &q["dropped"];
        let dropped = dropped_sum(q);
        assert_eq!(
            q["seen"].as_u64().unwrap(),
            q["written"].as_u64().unwrap() + dropped,
            "{q:#}"
        );
        let w = &q["worker"];
        assert_eq!(
            w["rx_packets"].as_u64().unwrap(),
            w["ring_packets"].as_u64().unwrap()
                + d["ring_full"].as_u64().unwrap()
                + d["filter"].as_u64().unwrap()
                + d["sample"].as_u64().unwrap(),
            "{q:#}"
        );
    }
    if r.get("jobs").is_some() {
        assert_jobs_balanced(r);
    }
}

/// Per capture job too: its (job, queue) lines balance, and its totals are
/// the sums of its lines.
pub fn assert_jobs_balanced(r: &serde_json::Value) {
    for j in r["jobs"].as_array().unwrap() {
        let name = j["name"].as_str().unwrap();
        let mine: Vec<_> = r["queues"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|q| q["job"] == name)
            .collect();
        assert!(!mine.is_empty(), "job {name} has no queue lines");
        assert_eq!(j["balanced"], true, "{j:#}");
        let s = |k: &str| mine.iter().map(|q| q[k].as_u64().unwrap()).sum::<u64>();
        assert_eq!(j["seen"].as_u64().unwrap(), s("seen"), "{j:#}");
        assert_eq!(j["written"].as_u64().unwrap(), s("written"), "{j:#}");
        assert_eq!(
            j["seen"].as_u64().unwrap(),
            j["written"].as_u64().unwrap() + j["dropped"].as_u64().unwrap(),
            "{j:#}"
        );
    }
}

/// Totals of one field over all queues.
pub fn total(r: &serde_json::Value, f: impl Fn(&serde_json::Value) -> u64) -> u64 {
    r["queues"].as_array().unwrap().iter().map(f).sum()
}

/// Files below `dir` whose name ends with `suffix`, sorted.
pub fn files_with(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut v = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().unwrap().to_string_lossy().ends_with(suffix) {
                v.push(p);
            }
        }
    }
    v.sort();
    v
}

/// Two network namespaces joined by a veth pair, both ends inside them;
/// deleted on drop (also when the test panics).
pub struct VethPair {
    /// Namespace of the capture end (`vA`).
    pub ns_cap: String,
    /// Namespace of the sending end (`vB`).
    pub ns_send: String,
}

impl VethPair {
    /// Create the namespaces and a veth with `queues` RX/TX queues per end.
    /// IPv6 is off on both ends so the kernel sends nothing of its own.
    pub fn new(tag: &str, queues: u32) -> VethPair {
        let id = format!("{}-{}", std::process::id(), tag);
        let pair = VethPair {
            ns_cap: format!("lccap-{id}"),
            ns_send: format!("lcsnd-{id}"),
        };
        for ns in [&pair.ns_cap, &pair.ns_send] {
            run_ok(Command::new("ip").args(["netns", "add", ns]));
            run_ok(
                Command::new("ip")
                    .args(["netns", "exec", ns, "sysctl", "-qw"])
                    .args([
                        "net.ipv6.conf.all.disable_ipv6=1",
                        "net.ipv6.conf.default.disable_ipv6=1",
                    ]),
            );
        }
        let q = queues.to_string();
        run_ok(
            Command::new("ip")
                .args(["link", "add", "vA", "netns", &pair.ns_cap])
                .args([
                    "numrxqueues",
                    &q,
                    "numtxqueues",
                    &q,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    "vB",
                    "netns",
                    &pair.ns_send,
                    "numrxqueues",
                    &q,
                    "numtxqueues",
                    &q,
                ]),
        );
        // Loopback up, so a capture's metrics endpoint (127.0.0.1) can bind.
        for ns in [&pair.ns_cap, &pair.ns_send] {
            run_ok(Command::new("ip").args(["-n", ns, "link", "set", "lo", "up"]));
        }
        run_ok(Command::new("ip").args(["-n", &pair.ns_cap, "link", "set", "vA", "up"]));
        run_ok(Command::new("ip").args(["-n", &pair.ns_send, "link", "set", "vB", "up"]));
        pair
    }

    /// A command run inside the capture namespace.
    pub fn in_cap(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns_cap, program]);
        c
    }

    /// A command run inside the sending namespace.
    pub fn in_send(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns_send, program]);
        c
    }

    /// `ip link show vA` in the capture namespace.
    pub fn link_cap(&self) -> String {
        run_ok(Command::new("ip").args(["-n", &self.ns_cap, "link", "show", "vA"]))
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        for ns in [&self.ns_cap, &self.ns_send] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Why privileged tests cannot run here, if they cannot.
pub fn privileged_unavailable() -> Option<String> {
    let uid = run(Command::new("id").arg("-u"));
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Some("not root".into());
    }
    for tool in ["ip", "tcpreplay"] {
        if Command::new(tool).arg("-V").output().is_err() {
            return Some(format!("{tool} is not installed (bash .ci/setup)"));
        }
    }
    None
}

/// Start `cmd` with stderr piped and wait (at most 20 s) until it prints a
/// line containing `marker`; the rest of stderr is collected in the background.
pub fn spawn_until(
    cmd: &mut Command,
    marker: &str,
) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    use std::io::BufRead;
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let hit = line.contains(marker);
                seen.push(line);
                if hit {
                    return (child, rx);
                }
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{cmd:?} did not print {marker:?} within 20 s; stderr:\n{}",
                    seen.join("\n")
                );
            }
        }
    }
}

/// Send SIGINT/SIGTERM/SIGKILL to a child.
pub fn signal(child: &std::process::Child, sig: &str) {
    run_ok(
        Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(child.id().to_string()),
    );
}

/// Kills a spawned capture if the test panics before waiting for it, so a
/// failed assertion never leaves a capture (and its XDP program) behind.
pub struct KillOnDrop(Option<u32>);

impl KillOnDrop {
    /// Guard `child`.
    pub fn new(child: &std::process::Child) -> Self {
        KillOnDrop(Some(child.id()))
    }
    /// The child was waited for: nothing to do on drop.
    pub fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

/// Fail with a clear message when python3's duckdb module (installed by
/// `.ci/setup`) is missing.
pub fn require_duckdb() {
    let probe = Command::new("python3")
        .args(["-c", "import duckdb"])
        .output();
    assert!(
        matches!(&probe, Ok(o) if o.status.success()),
        "python3 with the duckdb module is missing: run .ci/setup \
         (python3 -m pip install duckdb): {probe:?}"
    );
}

/// The timestamp of each frame of `pcap` by the sequence number the
/// generator put at `seq_off` (8 bytes, big endian; 0 = not seen), for
/// sequence numbers below `frames`, and how many frames were found.
pub fn stamps_by_seq(pcap: &Path, frames: u64, seq_off: usize) -> (Vec<u64>, u64) {
    use linecap_reader::read::{CaptureReader, Packet};
    let mut ts = vec![0u64; frames as usize];
    let mut rd = CaptureReader::open(pcap).unwrap_or_else(|e| panic!("{}: {e}", pcap.display()));
    let mut p = Packet::default();
    let mut found = 0u64;
    while rd.next(&mut p).unwrap() {
        if let Some(b) = p.data.get(seq_off..seq_off + 8) {
            let seq = u64::from_be_bytes(b.try_into().unwrap());
            if let Some(t) = ts.get_mut(seq as usize) {
                *t = p.ts_ns;
                found += 1;
            }
        }
    }
    (ts, found)
}

/// `linecap anonymize --key KEY` of `input` (one address a line).
pub fn anonymize(key: &Path, input: &str) -> String {
    let mut child = linecap()
        .arg("anonymize")
        .arg("--key")
        .arg(key)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

//! `veth` suite: the highest offered rate each capture tool takes with zero
//! loss, on the same multi-queue veth pair, with the same generator
//! (`bench gen`, AF_PACKET `sendmmsg` with the qdisc bypassed, several TX
//! threads) and the same frames, in network namespaces this suite creates
//! (both ends of the veth inside them) and removes, also on panic.
//!
//! Per tool and frame size (RFC 2544-style, bounded time per step): offered
//! rates double from 50 kpps until a trial loses a frame or the generator
//! cannot reach the rate (its ceiling: the result is then a lower bound),
//! then `--steps` bisection steps narrow the zero-loss rate. A trial sends
//! `max(2000, rate × seconds)` numbered frames over 1000 flows, waits 1.5 s
//! (libpcap's TPACKET_V3 blocks retire after 1 s; stenotype writes a block
//! at least every second), stops the tool with SIGINT, and reads the
//! sequence numbers back from what the tool wrote to disk: loss = frames
//! sent − distinct numbers on disk.
//!
//! Every tool gets a 64 MiB kernel buffer: `tcpdump -B 65536`,
//! `netsniff-ng -S 64MiB`, `stenotype --blocks=64` (1 MiB blocks); linecap
//! has 16 Ki RX ring entries per queue (its default).

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::Opts;
use crate::seqcheck::{read_streams, summarize};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tool {
    LinecapNative,
    LinecapNativeSoftirq,
    LinecapGeneric,
    Tcpdump,
    NetsniffNg,
    Stenotype,
}

const ALL: [Tool; 6] = [
    Tool::LinecapNative,
    Tool::LinecapNativeSoftirq,
    Tool::LinecapGeneric,
    Tool::Tcpdump,
    Tool::NetsniffNg,
    Tool::Stenotype,
];

const DEFAULT: [Tool; 5] = [
    Tool::LinecapNative,
    Tool::LinecapGeneric,
    Tool::Tcpdump,
    Tool::NetsniffNg,
    Tool::Stenotype,
];

impl Tool {
    pub fn key(self) -> &'static str {
        match self {
            Tool::LinecapNative => "linecap-native",
            Tool::LinecapNativeSoftirq => "linecap-native-softirq",
            Tool::LinecapGeneric => "linecap-generic",
            Tool::Tcpdump => "tcpdump",
            Tool::NetsniffNg => "netsniff-ng",
            Tool::Stenotype => "stenotype",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Tool::LinecapNative => "linecap AF_XDP native, threaded NAPI",
            Tool::LinecapNativeSoftirq => "linecap AF_XDP native, softirq NAPI",
            Tool::LinecapGeneric => "linecap AF_XDP generic",
            Tool::Tcpdump => "tcpdump -w",
            Tool::NetsniffNg => "netsniff-ng --out",
            Tool::Stenotype => "stenotype (stenographer)",
        }
    }
}

/// `--tools`: comma-separated keys; `None` for the default set.
pub fn parse_tools(list: Option<&str>) -> Result<Vec<Tool>, String> {
    let Some(list) = list else {
        return Ok(DEFAULT.to_vec());
    };
    list.split(',')
        .map(|k| {
            ALL.iter()
                .copied()
                .find(|t| t.key() == k.trim())
                .ok_or_else(|| {
                    let keys: Vec<&str> = ALL.iter().map(|t| t.key()).collect();
                    format!("--tools: unknown tool {k:?}: one of {}", keys.join(", "))
                })
        })
        .collect()
}

/// `--sizes`: comma-separated frame sizes, 60..=1514 B (veth MTU 1500).
pub fn parse_sizes(list: &str) -> Result<Vec<usize>, String> {
    list.split(',')
        .map(|s| match s.trim().parse::<usize>() {
            Ok(n) if (60..=1514).contains(&n) => Ok(n),
            _ => Err(format!(
                "--sizes: {s:?} is not a frame size in bytes from 60 to 1514"
            )),
        })
        .collect()
}

/// Two namespaces joined by a veth pair with `queues` queues each way;
/// removed on drop (also when a panic unwinds).
pub struct Veth {
    pub cap: String,
    pub snd: String,
}

impl Veth {
    pub fn new(tag: &str, queues: usize) -> Result<Veth, String> {
        let id = format!("{}-{tag}", std::process::id());
        let v = Veth {
            cap: format!("lcbc-{id}"),
            snd: format!("lcbs-{id}"),
        };
        let q = queues.to_string();
        for ns in [&v.cap, &v.snd] {
            sh(Command::new("ip").args(["netns", "add", ns]))?;
            sh(Command::new("ip")
                .args(["netns", "exec", ns, "sysctl", "-qw"])
                .args([
                    "net.ipv6.conf.all.disable_ipv6=1",
                    "net.ipv6.conf.default.disable_ipv6=1",
                ]))?;
        }
        sh(Command::new("ip")
            .args(["link", "add", "vA", "netns", &v.cap])
            .args(["numtxqueues", &q, "numrxqueues", &q, "type", "veth"])
            .args(["peer", "name", "vB", "netns", &v.snd])
            .args(["numtxqueues", &q, "numrxqueues", &q]))?;
        sh(Command::new("ip").args(["-n", &v.cap, "link", "set", "vA", "up"]))?;
        sh(Command::new("ip").args(["-n", &v.snd, "link", "set", "vB", "up"]))?;
        Ok(v)
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        for ns in [&self.cap, &self.snd] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Remove namespaces left by a run of this suite that was killed (its
/// process no longer exists).
pub fn remove_stale_namespaces() {
    let Ok(o) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for l in String::from_utf8_lossy(&o.stdout).lines() {
        let name = l.split_whitespace().next().unwrap_or("");
        let pid = name
            .strip_prefix("lcbc-")
            .or_else(|| name.strip_prefix("lcbs-"))
            .and_then(|r| r.split('-').next());
        if let Some(pid) = pid
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

/// The lines `child` writes on its piped stdout and stderr, as they come
/// (one reader thread per pipe; they end with the pipes).
pub(crate) fn output_lines(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    for pipe in [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
    }
    rx
}

/// Run `cmd`; its stdout, or an error with the command and its stderr.
pub(crate) fn sh(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// CPU seconds (user + system, all threads) a process has used so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// Call `f` with every file below `dir` (name and metadata).
pub fn walk_files(dir: &Path, mut f: impl FnMut(&str, &std::fs::Metadata)) {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => f(&e.file_name().to_string_lossy(), &m),
                Err(_) => {}
            }
        }
    }
}

/// Bytes of the files below `dir`.
fn disk_bytes(dir: &Path) -> u64 {
    let mut n = 0;
    walk_files(dir, |_, m| n += m.len());
    n
}

/// Sequence numbers in stenotype's packet files: raw TPACKET_V3 blocks
/// (1 MiB each: block header with the packet count and the first packet's
/// offset, then `tpacket3_hdr`s chained by `tp_next_offset`).
fn stenotype_streams(dir: &Path) -> Vec<Vec<u64>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("PKT0"))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    let rd32 = |b: &[u8], o: usize| -> Option<u32> {
        Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?))
    };
    let mut seqs = Vec::new();
    for f in files {
        let Ok(d) = std::fs::read(&f) else { continue };
        for blk in d.chunks(1 << 20) {
            let (Some(n), Some(first)) = (rd32(blk, 12), rd32(blk, 16)) else {
                continue;
            };
            let mut off = first as usize;
            for _ in 0..n {
                let (Some(next), Some(snap), Some(mac)) = (
                    rd32(blk, off),
                    rd32(blk, off + 12),
                    blk.get(off + 24..off + 26)
                        .map(|m| u16::from_le_bytes([m[0], m[1]])),
                ) else {
                    break;
                };
                let start = off + mac as usize;
                if let Some(s) = blk
                    .get(start..start + snap as usize)
                    .and_then(crate::pktgen::frames::sequence)
                {
                    seqs.push(s);
                }
                if next == 0 {
                    break;
                }
                off += next as usize;
            }
        }
    }
    vec![seqs]
}

/// Start `tool` capturing on vA in the capture namespace; returns once it
/// says it is capturing.
fn start(
    tool: Tool,
    veth: &Veth,
    out: &Path,
    linecap: &Path,
    report: &Path,
) -> Result<Child, String> {
    std::fs::create_dir_all(out).map_err(|e| e.to_string())?;
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &veth.cap]);
    let marker = match tool {
        Tool::LinecapNative | Tool::LinecapNativeSoftirq | Tool::LinecapGeneric => {
            let mode = if tool == Tool::LinecapGeneric {
                "generic"
            } else {
                "native"
            };
            cmd.arg(linecap)
                .args(["capture", "--source", "afxdp:vA", "--xdp-mode", mode])
                .args(["--batch-bytes", "4M", "--ring-slots", "64", "--no-metrics"])
                .arg("--out")
                .arg(out)
                .arg("--report-json")
                .arg(report);
            if tool == Tool::LinecapNativeSoftirq {
                cmd.arg("--no-threaded-napi");
            }
            "ready"
        }
        Tool::Tcpdump => {
            cmd.args(["tcpdump", "-n", "-B", "65536", "-i", "vA", "-w"])
                .arg(out.join("t.pcap"));
            "listening on"
        }
        Tool::NetsniffNg => {
            cmd.args(["stdbuf", "-oL", "netsniff-ng", "--in", "vA", "--silent"])
                .args(["-S", "64MiB", "--out"])
                .arg(out.join("n.pcap"));
            "Running!"
        }
        Tool::Stenotype => {
            for d in ["PKT0", "IDX0"] {
                std::fs::create_dir_all(out.join(d)).map_err(|e| e.to_string())?;
            }
            // stenotype drops privileges to nobody:nogroup and writes there.
            sh(Command::new("chown")
                .args(["-R", "nobody:nogroup"])
                .arg(out))?;
            cmd.args(["stenotype", "--iface=vA", "--threads=1", "--blocks=64"])
                .args(["--aiops=32", "--blockage_sec=1", "--fileage_sec=10"])
                .args(["--no_watchdogs", "--seccomp=none", "-v"])
                .arg(format!("--dir={}", out.display()));
            "starting to process packets"
        }
    };
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", tool.name()))?;
    let rx = output_lines(&mut child);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut said = Vec::new();
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(l) if l.contains(marker) => break,
            Ok(l) => said.push(l),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{} did not start: {}",
                    tool.name(),
                    said.join(" | ")
                ));
            }
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    Ok(child)
}

/// Sum of linecap's per-queue drop counters by stage, from its `--report-json`.
fn linecap_drops(path: &Path) -> Option<serde_json::Value> {
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    let _ = std::fs::remove_file(path);
    let mut sum = serde_json::Map::new();
    for q in r["queues"].as_array()? {
        for (k, v) in q["dropped"].as_object()? {
            let n = sum.get(k).and_then(|x| x.as_u64()).unwrap_or(0) + v.as_u64().unwrap_or(0);
            sum.insert(k.clone(), n.into());
        }
    }
    Some(serde_json::Value::Object(sum))
}

/// One trial's outcome.
#[derive(Debug, Clone)]
struct Trial {
    offered_pps: u64,
    sent: u64,
    achieved_pps: f64,
    captured: u64,
    cpu_s: f64,
    disk_bytes: u64,
    /// linecap only: its own drop counts by stage (from `--report-json`).
    linecap_drops: Option<serde_json::Value>,
}

impl Trial {
    fn lost(&self) -> u64 {
        self.sent.saturating_sub(self.captured)
    }
    fn generator_short(&self) -> bool {
        self.achieved_pps < 0.95 * self.offered_pps as f64
    }
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "offered_pps": self.offered_pps, "achieved_pps": self.achieved_pps,
            "sent": self.sent, "captured": self.captured, "lost": self.lost(),
            "loss_fraction": if self.sent > 0 { self.lost() as f64 / self.sent as f64 } else { 0.0 },
            "tool_cpu_s": self.cpu_s, "disk_bytes": self.disk_bytes,
            "linecap_drops": self.linecap_drops,
        })
    }
}

struct Env<'a> {
    o: &'a Opts,
    linecap: PathBuf,
    bench: PathBuf,
    tmp: PathBuf,
}

fn trial(env: &Env, tool: Tool, len: usize, rate: u64) -> Result<Trial, String> {
    let o = env.o;
    let veth = Veth::new(tool.key(), o.gen_threads)?;
    let out = env.tmp.join(format!("out-{}-{len}-{rate}", tool.key()));
    let _ = std::fs::remove_dir_all(&out);
    let report_path = env
        .tmp
        .join(format!("report-{}-{len}-{rate}.json", tool.key()));
    let _ = std::fs::remove_file(&report_path);
    let mut child = start(tool, &veth, &out, &env.linecap, &report_path)?;
    let count = ((rate as f64 * o.seconds) as u64).max(2000);
    let cpu0 = cpu_seconds(child.id());
    let gen_out = Command::new("ip")
        .args(["netns", "exec", &veth.snd])
        .arg(&env.bench)
        .args(["gen", "-i", "vB", "--flows", "1000", "--json", "-"])
        .args(["--size", &len.to_string(), "--pps", &rate.to_string()])
        .args(["--count", &count.to_string()])
        .args(["--threads", &o.gen_threads.to_string()])
        .args([
            "--tx",
            if o.gen_tx == crate::pktgen::tx::TxKind::Xdp {
                "xdp"
            } else {
                "packet"
            },
        ])
        .args(["--duration", &format!("{}", o.seconds * 4.0 + 5.0)])
        .output();
    // Let every tool write what it has (see the module comment).
    std::thread::sleep(Duration::from_millis(1500));
    let cpu = cpu_seconds(child.id()) - cpu0;
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let stop_deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            _ if Instant::now() > stop_deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    let gen_out = gen_out.map_err(|e| format!("bench gen: {e}"))?;
    let report: serde_json::Value = serde_json::from_slice(&gen_out.stdout).map_err(|_| {
        format!(
            "bench gen failed: {}",
            String::from_utf8_lossy(&gen_out.stderr).trim()
        )
    })?;
    let sent = report["sent"].as_u64().unwrap_or(0);
    let streams = match tool {
        Tool::Stenotype => stenotype_streams(&out),
        _ => read_streams(std::slice::from_ref(&out))
            .map(|s| s.0)
            .unwrap_or_default(),
    };
    let seq = summarize(&streams, Some(sent));
    let t = Trial {
        offered_pps: rate,
        sent,
        achieved_pps: report["achieved_pps"].as_f64().unwrap_or(0.0),
        captured: seq.distinct - seq.beyond,
        cpu_s: cpu,
        disk_bytes: disk_bytes(&out),
        linecap_drops: linecap_drops(&report_path),
    };
    let _ = std::fs::remove_dir_all(&out);
    drop(veth);
    Ok(t)
}

/// Zero-loss search for one tool and frame size.
fn search(env: &Env, tool: Tool, len: usize) -> serde_json::Value {
    let mut trials: Vec<Trial> = Vec::new();
    let mut best: Option<Trial> = None;
    let mut lossy: Option<u64> = None;
    let mut generator_ceiling: Option<f64> = None;
    let mut error = None;
    let mut rate = 50_000u64;
    let run = |rate: u64, trials: &mut Vec<Trial>| -> Result<Trial, String> {
        let t = trial(env, tool, len, rate)?;
        eprintln!(
            "  {:<24} {len:>5} B offered {:>8} achieved {:>9.0} sent {:>8} captured {:>8} lost {}{}",
            tool.key(),
            rate,
            t.achieved_pps,
            t.sent,
            t.captured,
            t.lost(),
            t.linecap_drops
                .as_ref()
                .filter(|_| t.lost() > 0)
                .map_or(String::new(), |d| format!(" (linecap drops by stage: {d})"))
        );
        trials.push(t.clone());
        Ok(t)
    };
    // A trial where the generator fell short of the offered rate ends the
    // search: beyond its ceiling it sends as fast as it can, in bursts, and
    // a loss there says nothing about the tool at the offered rate.
    let mut lossy_at_ceiling = false;
    let mut keep = |t: Trial, best: &mut Option<Trial>, ceiling: &mut Option<f64>| {
        *ceiling = Some(t.achieved_pps);
        if t.lost() > 0 {
            lossy_at_ceiling = true;
        } else if best
            .as_ref()
            .is_none_or(|b| t.achieved_pps > b.offered_pps as f64)
        {
            *best = Some(t);
        }
    };
    loop {
        let t = match run(rate, &mut trials) {
            Ok(t) => t,
            Err(e) => {
                error = Some(e);
                break;
            }
        };
        if t.generator_short() {
            keep(t, &mut best, &mut generator_ceiling);
            break;
        }
        if t.lost() > 0 {
            lossy = Some(rate);
            break;
        }
        best = Some(t);
        rate *= 2;
        if rate > env.o.max_pps {
            break;
        }
    }
    if let (Some(mut hi), None) = (lossy, &error) {
        let mut lo = best.as_ref().map_or(0, |b| b.offered_pps);
        for _ in 0..env.o.steps {
            let mid = (lo + hi) / 2;
            if mid <= lo || hi - lo < hi / 50 {
                break;
            }
            match run(mid, &mut trials) {
                Ok(t) if t.generator_short() => {
                    keep(t, &mut best, &mut generator_ceiling);
                    break;
                }
                Ok(t) if t.lost() == 0 => {
                    lo = mid;
                    best = Some(t);
                }
                Ok(_) => hi = mid,
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
    }
    let zero_loss = best.as_ref().map_or(0.0, |b| {
        if b.generator_short() {
            b.achieved_pps
        } else {
            b.offered_pps as f64
        }
    });
    let (cpu_ns, disk_per_pkt) = best.as_ref().map_or((0.0, 0.0), |b| {
        let n = b.captured.max(1) as f64;
        (b.cpu_s * 1e9 / n, b.disk_bytes as f64 / n)
    });
    serde_json::json!({
        "suite": "veth",
        "tool": tool.key(),
        "tool_name": tool.name(),
        "frame_bytes": len,
        "zero_loss_pps": zero_loss,
        "zero_loss_is_lower_bound": (generator_ceiling.is_some() && !lossy_at_ceiling) || (lossy.is_none() && error.is_none() && !lossy_at_ceiling),
        "lost_frames_at_generator_ceiling": lossy_at_ceiling,
        "generator_ceiling_pps": generator_ceiling,
        "first_lossy_offered_pps": lossy,
        "cpu_ns_per_packet_at_zero_loss": cpu_ns,
        "disk_bytes_per_packet_at_zero_loss": disk_per_pkt,
        "error": error,
        "trials": trials.iter().map(Trial::json).collect::<Vec<_>>(),
    })
}

/// Run the suite: requires root, `ip`, the tools, and the `linecap` binary.
pub fn suite(o: &Opts) -> Vec<serde_json::Value> {
    let uid = sh(Command::new("id").arg("-u")).unwrap_or_default();
    if uid.trim() != "0" {
        println!("veth: SKIPPED (needs root for namespaces and AF_XDP)");
        return vec![serde_json::json!({"suite": "veth", "skipped": "needs root"})];
    }
    let linecap = match crate::linecap_bin() {
        Ok(p) => p,
        Err(e) => {
            println!("veth: SKIPPED: {e}");
            return vec![serde_json::json!({"suite": "veth", "skipped": e})];
        }
    };
    let bench = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("bench"));
    let bench = std::env::var_os("BENCH_BIN").map_or(bench, PathBuf::from);
    let tools = parse_tools(o.tools.as_deref()).unwrap_or_default();
    let sizes = parse_sizes(&o.sizes).unwrap_or_default();
    remove_stale_namespaces();
    let tmp = std::env::temp_dir().join(format!("linecap-veth-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&tmp);
    let env = Env {
        o,
        linecap,
        bench,
        tmp: tmp.clone(),
    };
    println!(
        "veth: zero-loss rate on a {}-queue veth pair; generator: bench gen, {} x {}, {} s of traffic per trial",
        o.gen_threads,
        o.gen_tx.name(),
        o.gen_threads,
        o.seconds
    );
    let mut out = Vec::new();
    for &len in &sizes {
        let mut rows = Vec::new();
        for &tool in &tools {
            rows.push(search(&env, tool, len));
        }
        println!(
            "\n{:<38} {:>6} {:>15} {:>14} {:>12} {:>11} {:>10}",
            "tool", "frame", "zero-loss pps", "gen ceiling", "CPU ns/pkt", "disk B/pkt", "linecap÷"
        );
        let lc = rows
            .iter()
            .find(|r| r["tool"] == Tool::LinecapNative.key())
            .or_else(|| {
                rows.iter()
                    .find(|r| r["tool"].as_str().is_some_and(|k| k.starts_with("linecap")))
            })
            .and_then(|r| r["zero_loss_pps"].as_f64())
            .unwrap_or(0.0);
        for r in &mut rows {
            let z = r["zero_loss_pps"].as_f64().unwrap_or(0.0);
            let ratio = if z > 0.0 { lc / z } else { 0.0 };
            r["linecap_native_over_this"] = ratio.into();
            println!(
                "{:<38} {:>6} {:>15} {:>14} {:>12.0} {:>11.1} {:>10}",
                r["tool_name"].as_str().unwrap_or(""),
                len,
                format!(
                    "{}{:.0}",
                    if r["zero_loss_is_lower_bound"] == true {
                        ">= "
                    } else {
                        ""
                    },
                    z
                ),
                r["generator_ceiling_pps"]
                    .as_f64()
                    .map_or("-".to_string(), |v| format!("{v:.0}")),
                r["cpu_ns_per_packet_at_zero_loss"].as_f64().unwrap_or(0.0),
                r["disk_bytes_per_packet_at_zero_loss"]
                    .as_f64()
                    .unwrap_or(0.0),
                if z > 0.0 {
                    format!("{ratio:.2}x")
                } else {
                    "-".into()
                },
            );
            if let Some(e) = r["error"].as_str() {
                println!("    error: {e}");
            }
        }
        out.extend(rows);
    }
    let svg = crate::plot::loss_svg(&out);
    let path = o.out.join("veth-loss.svg");
    if std::fs::create_dir_all(&o.out).is_ok() && std::fs::write(&path, svg).is_ok() {
        eprintln!("veth: plot in {}", path.display());
    }
    let _ = std::fs::remove_dir_all(&tmp);
    out
}

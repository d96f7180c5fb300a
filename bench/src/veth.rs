//! `veth` suite: the highest offered rate each capture tool takes with zero
//! loss, on the same veth pair and with the same generator (tcpreplay), in
//! namespaces this benchmark creates (both ends inside them) and removes.
//!
//! Per tool and frame size: offered rates double from 10 kpps until a trial
//! loses a frame (or the generator cannot reach the rate: reported as such),
//! then 5 bisection steps narrow the zero-loss rate. A trial sends
//! `rate × seconds` frames (at least 2000), waits, stops the tool with
//! SIGINT, and compares frames on disk with frames sent.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use linecap_writer::output::{OutFormat, PacketWriter};
use linecap_writer::read::{CaptureReader, Packet};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tool {
    LinecapNative,
    LinecapGeneric,
    Tcpdump,
    Dumpcap,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::LinecapNative => "linecap AF_XDP native",
            Tool::LinecapGeneric => "linecap AF_XDP generic",
            Tool::Tcpdump => "tcpdump -w",
            Tool::Dumpcap => "dumpcap -w",
        }
    }
}

struct Veth {
    cap: String,
    snd: String,
}

impl Veth {
    fn new(tag: &str) -> Veth {
        let id = format!("{}-{tag}", std::process::id());
        let v = Veth {
            cap: format!("lcbc-{id}"),
            snd: format!("lcbs-{id}"),
        };
        for ns in [&v.cap, &v.snd] {
            sh(Command::new("ip").args(["netns", "add", ns]));
            sh(Command::new("ip")
                .args(["netns", "exec", ns, "sysctl", "-qw"])
                .args([
                    "net.ipv6.conf.all.disable_ipv6=1",
                    "net.ipv6.conf.default.disable_ipv6=1",
                ]));
        }
        sh(Command::new("ip")
            .args(["link", "add", "vA", "netns", &v.cap, "type", "veth"])
            .args(["peer", "name", "vB", "netns", &v.snd]));
        sh(Command::new("ip").args(["-n", &v.cap, "link", "set", "vA", "up"]));
        sh(Command::new("ip").args(["-n", &v.snd, "link", "set", "vB", "up"]));
        v
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        for ns in [&self.cap, &self.snd] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A pcap of 1000 frames of `len` bytes over 1000 UDP flows.
fn frames(dir: &Path, len: usize) -> PathBuf {
    let path = dir.join(format!("frames-{len}.pcap"));
    let mut w = PacketWriter::create(&path, OutFormat::Pcap).unwrap();
    for i in 0..1000u32 {
        let mut f = vec![0u8; len];
        f[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 2]);
        f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 1]);
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        f[14] = 0x45;
        f[16..18].copy_from_slice(&((len - 14) as u16).to_be_bytes());
        f[22] = 64;
        f[23] = 17;
        f[26..30].copy_from_slice(&[10, 0, (i >> 8) as u8, i as u8]);
        f[30..34].copy_from_slice(&[10, 255, 0, 1]);
        f[34..36].copy_from_slice(&(1024 + i as u16).to_be_bytes());
        f[36..38].copy_from_slice(&4789u16.to_be_bytes());
        f[38..40].copy_from_slice(&((len - 34) as u16).to_be_bytes());
        w.write(&Packet {
            ts_ns: 1_700_000_000_000_000_000 + i as u64,
            wire_len: len as u32,
            data: f,
            ..Packet::default()
        })
        .unwrap();
    }
    w.finish().unwrap();
    path
}

fn count_frames(path: &Path) -> u64 {
    let mut n = 0;
    for f in linecap_writer::merge::plan(&[path.to_path_buf()], false)
        .unwrap_or_default()
        .concat()
    {
        let Ok(mut r) = CaptureReader::open(&f) else {
            continue;
        };
        let mut p = Packet::default();
        while let Ok(true) = r.next(&mut p) {
            n += 1;
        }
    }
    n
}

/// Start `tool` in the capture namespace; returns the child once it is capturing.
fn start(tool: Tool, veth: &Veth, out: &Path, linecap: &Path) -> Child {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &veth.cap]);
    let marker = match tool {
        Tool::LinecapNative | Tool::LinecapGeneric => {
            let mode = if tool == Tool::LinecapNative {
                "native"
            } else {
                "generic"
            };
            cmd.arg(linecap)
                .args(["capture", "--source", "afxdp:vA", "--xdp-mode", mode])
                .args(["--batch-bytes", "4M", "--ring-slots", "64"])
                .arg("--out")
                .arg(out);
            "ready"
        }
        Tool::Tcpdump => {
            cmd.args(["tcpdump", "-n", "-i", "vA", "-w"])
                .arg(out.join("t.pcap"));
            "listening on"
        }
        Tool::Dumpcap => {
            cmd.args(["dumpcap", "-q", "-i", "vA", "-w"])
                .arg(out.join("d.pcapng"));
            "Capturing on"
        }
    };
    std::fs::create_dir_all(out).unwrap();
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", tool.name()));
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
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(l) if l.contains(marker) => break,
            Ok(_) => {}
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{} did not start", tool.name());
            }
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    child
}

struct Trial {
    sent: u64,
    captured: u64,
    achieved_pps: f64,
    cpu_s: f64,
}

/// CPU seconds (user + system) a process has used so far.
fn cpu_seconds(pid: u32) -> f64 {
    // /proc/PID/stat fields 14 and 15 are utime and stime in clock ticks.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// The processes below `pid` (the `ip netns exec` wrapper execs, so the
/// tool is usually `pid` itself).
fn trial(tool: Tool, pcap: &Path, rate: u64, seconds: f64, linecap: &Path, tmp: &Path) -> Trial {
    let veth = Veth::new("t");
    let out = tmp.join(format!("out-{}", rate));
    let _ = std::fs::remove_dir_all(&out);
    let child = start(tool, &veth, &out, linecap);
    let loops = ((rate as f64 * seconds) / 1000.0).ceil().max(2.0) as u64;
    let cpu0 = cpu_seconds(child.id());
    let replay = sh(Command::new("ip")
        .args(["netns", "exec", &veth.snd, "tcpreplay", "-i", "vB"])
        .arg(format!("--pps={rate}"))
        .arg(format!("--loop={loops}"))
        .arg(pcap));
    // libpcap (tcpdump, dumpcap) hands frames over in TPACKET_V3 blocks that
    // retire after a 1 s timeout, and a tool stopped by SIGINT does not read
    // the last partial block: wait longer than that before stopping anyone.
    std::thread::sleep(Duration::from_millis(1500));
    let cpu = cpu_seconds(child.id()) - cpu0;
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let _ = child.wait_with_output();
    let sent = replay
        .lines()
        .find_map(|l| l.trim().strip_prefix("Successful packets:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let achieved_pps = replay
        .lines()
        .find_map(|l| l.trim().strip_prefix("Rated:"))
        .and_then(|v| v.split(',').find(|f| f.trim_end().ends_with("pps")))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    let captured = count_frames(&out);
    let _ = std::fs::remove_dir_all(&out);
    Trial {
        sent,
        captured,
        achieved_pps,
        cpu_s: cpu,
    }
}

/// Zero-loss search for one tool and frame size.
fn search(tool: Tool, pcap: &Path, seconds: f64, linecap: &Path, tmp: &Path) -> serde_json::Value {
    let mut ok: Option<(u64, Trial)> = None;
    let mut bad: Option<u64> = None;
    let mut generator_limit = None;
    let mut trials = Vec::new();
    let mut rate = 10_000u64;
    // Grow until a loss or the generator's ceiling.
    loop {
        let t = trial(tool, pcap, rate, seconds, linecap, tmp);
        trials.push(serde_json::json!({"offered_pps": rate, "achieved_pps": t.achieved_pps, "sent": t.sent, "captured": t.captured}));
        let lossless = t.captured >= t.sent && t.sent > 0;
        if t.achieved_pps < 0.9 * rate as f64 {
            generator_limit = Some(t.achieved_pps);
            if lossless {
                ok = Some((t.achieved_pps as u64, t));
            } else {
                bad = Some(rate);
            }
            break;
        }
        if !lossless {
            bad = Some(rate);
            break;
        }
        ok = Some((rate, t));
        rate *= 2;
        if rate > 4_000_000 {
            break;
        }
    }
    // Bisect between the last lossless and the first lossy rate.
    if let (Some(hi), true) = (bad, generator_limit.is_none()) {
        let mut lo = ok.as_ref().map_or(0, |o| o.0);
        let mut hi = hi;
        for _ in 0..5 {
            let mid = (lo + hi) / 2;
            if mid <= lo || mid < 1000 {
                break;
            }
            let t = trial(tool, pcap, mid, seconds, linecap, tmp);
            trials.push(serde_json::json!({"offered_pps": mid, "achieved_pps": t.achieved_pps, "sent": t.sent, "captured": t.captured}));
            if t.captured >= t.sent && t.sent > 0 && t.achieved_pps >= 0.9 * mid as f64 {
                lo = mid;
                ok = Some((mid, t));
            } else {
                hi = mid;
            }
        }
    }
    let (zero_loss, cpu_ns) = ok.as_ref().map_or((0, 0.0), |(r, t)| {
        (
            *r,
            if t.captured > 0 {
                t.cpu_s * 1e9 / t.captured as f64
            } else {
                0.0
            },
        )
    });
    serde_json::json!({
        "tool": tool.name(),
        "zero_loss_pps": zero_loss,
        "generator_limited_at_pps": generator_limit,
        "cpu_ns_per_packet_at_zero_loss": cpu_ns,
        "trials": trials,
    })
}

/// Run the suite; requires root, ip, tcpreplay, tcpdump, dumpcap and the
/// release `linecap` binary next to this one.
pub fn suite(seconds: f64) -> Vec<serde_json::Value> {
    let linecap = std::env::current_exe().unwrap().with_file_name("linecap");
    if !linecap.exists() {
        println!("veth: build linecap first: cargo build --release -p linecap");
        return Vec::new();
    }
    let uid = sh(Command::new("id").arg("-u"));
    if uid.trim() != "0" {
        println!("veth: SKIPPED (needs root for namespaces and AF_XDP)");
        return Vec::new();
    }
    let tmp = std::env::temp_dir().join(format!("linecap-veth-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    println!(
        "\nveth: zero-loss rate on one veth pair, tcpreplay as the generator, {seconds} s per trial"
    );
    println!(
        "{:<26} {:>6} {:>14} {:>16} {:>14}",
        "tool", "frame", "zero-loss pps", "generator limit", "CPU ns/pkt"
    );
    let mut out = Vec::new();
    for len in [64usize, 1514] {
        let pcap = frames(&tmp, len);
        let mut rows = Vec::new();
        for tool in [
            Tool::LinecapNative,
            Tool::LinecapGeneric,
            Tool::Tcpdump,
            Tool::Dumpcap,
        ] {
            let mut r = search(tool, &pcap, seconds, &linecap, &tmp);
            r["frame_bytes"] = len.into();
            println!(
                "{:<26} {:>6} {:>14} {:>16} {:>14.0}",
                tool.name(),
                len,
                r["zero_loss_pps"],
                r["generator_limited_at_pps"]
                    .as_f64()
                    .map_or("-".to_string(), |v| format!("{v:.0}")),
                r["cpu_ns_per_packet_at_zero_loss"].as_f64().unwrap_or(0.0)
            );
            rows.push(r);
        }
        let lc = rows[0]["zero_loss_pps"].as_f64().unwrap_or(0.0);
        let td = rows[2]["zero_loss_pps"].as_f64().unwrap_or(0.0);
        if td > 0.0 {
            println!(
                "  ratio linecap native / tcpdump at {len} B: {:.2}",
                lc / td
            );
        }
        out.extend(rows);
    }
    let _ = std::fs::remove_dir_all(&tmp);
    out
}

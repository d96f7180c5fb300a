//! `linecap demo`: a self-contained capture a newcomer can run and inspect.
//!
//! As root (with `ip` and `tcpreplay`): two network namespaces joined by a
//! veth pair (both ends inside them, nothing touches the host's interfaces),
//! linecap capturing one end by AF_XDP, and tcpreplay replaying the bundled
//! real trace (suricata-verify's icmp_and_ssh, MIT, embedded in the binary)
//! from the other end at a set rate. Then the accounting, a read-back, and
//! how to open the files. The namespaces are removed at the end, also when
//! a step fails.
//!
//! Without root (or those tools) it says why and runs the same trace through
//! the pipeline from a file instead.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::capture::{run_capture, stop_on_signals};
use crate::cli::DemoArgs;
use crate::config::CaptureConfig;
use crate::source::SourceSpec;
use crate::summary;
use linecap_dataplane::ring::HugePages;

const TRACE: &[u8] = include_bytes!("../assets/suricata-verify__icmp_and_ssh.pcap");
const TRACE_NAME: &str = "suricata-verify__icmp_and_ssh.pcap";
const TRACE_FRAMES: u64 = 362;
const REPLAY_PPS: u32 = 2000;

/// Run the demo.
pub fn run(a: DemoArgs) -> anyhow::Result<i32> {
    std::fs::create_dir_all(&a.out)?;
    let out = std::fs::canonicalize(&a.out)?;
    let trace = out.join(TRACE_NAME);
    std::fs::write(&trace, TRACE)?;
    let cap = out.join("capture");
    if cap.exists() {
        std::fs::remove_dir_all(&cap)?;
    }
    match veth_unavailable() {
        None => veth_demo(&out, &trace, &cap),
        Some(why) => {
            println!(
                "linecap demo: the AF_XDP demo needs {why}; capturing the trace from a file instead.\n"
            );
            file_demo(&out, &trace, &cap)
        }
    }
}

fn veth_unavailable() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Some("root (sudo make demo)".into());
    }
    for tool in ["ip", "tcpreplay"] {
        if Command::new(tool).arg("-V").output().is_err() {
            return Some(format!("{tool} (bash .ci/setup installs it)"));
        }
    }
    None
}

/// Namespaces removed on drop.
struct Namespaces(Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn sh(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    anyhow::ensure!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn veth_demo(out: &Path, trace: &Path, cap: &Path) -> anyhow::Result<i32> {
    let id = std::process::id();
    let (ns_cap, ns_send) = (format!("lcdemo-cap-{id}"), format!("lcdemo-snd-{id}"));
    let _guard = Namespaces(vec![ns_cap.clone(), ns_send.clone()]);
    // The capture child gets the terminal's Ctrl-C; the demo itself keeps
    // going so it can clean up.
    let _stop = stop_on_signals()?;

    println!("linecap demo: AF_XDP capture of a real trace replayed through a veth pair\n");
    println!("1. network namespaces {ns_cap} and {ns_send}, a veth pair vA <-> vB with 2 queues");
    println!(
        "   between them (both ends inside the namespaces; the host's interfaces are untouched)"
    );
    for ns in [&ns_cap, &ns_send] {
        sh(Command::new("ip").args(["netns", "add", ns]))?;
        sh(Command::new("ip")
            .args(["netns", "exec", ns, "sysctl", "-qw"])
            .args([
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ]))?;
    }
    sh(Command::new("ip")
        .args(["link", "add", "vA", "netns", &ns_cap])
        .args([
            "numrxqueues",
            "2",
            "numtxqueues",
            "2",
            "mtu",
            "1600",
            "type",
            "veth",
            "peer",
            "name",
            "vB",
            "netns",
            &ns_send,
            "numrxqueues",
            "2",
            "numtxqueues",
            "2",
            "mtu",
            "1600",
        ]))?;
    sh(Command::new("ip").args(["-n", &ns_cap, "link", "set", "vA", "up"]))?;
    sh(Command::new("ip").args(["-n", &ns_send, "link", "set", "vB", "up"]))?;

    println!("2. linecap captures vA by AF_XDP (XDP program attached, one socket per queue):");
    let report = out.join("report.json");
    let exe = std::env::current_exe()?;
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns_cap])
        .arg(&exe)
        .args([
            "capture",
            "--source",
            "afxdp:vA",
            "--rotate-bytes",
            "16K",
            "--flush-ms",
            "20",
        ])
        .arg("--out")
        .arg(cap)
        .arg("--report-json")
        .arg(&report)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting the capture")?;
    let stderr = child.stderr.take().context("capture stderr")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                println!("   {line}");
                if line.contains("ready") {
                    break;
                }
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                anyhow::bail!("the capture did not start within 20 s (see its messages above)");
            }
        }
    }

    println!(
        "3. tcpreplay sends {TRACE_NAME} ({TRACE_FRAMES} frames) from vB at {REPLAY_PPS} frames/s"
    );
    let replay = sh(Command::new("ip")
        .args(["netns", "exec", &ns_send, "tcpreplay", "-i", "vB", "--pps"])
        .arg(REPLAY_PPS.to_string())
        .arg(trace))?;
    let sent: u64 = replay
        .lines()
        .find_map(|l| l.trim().strip_prefix("Successful packets:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    println!("   tcpreplay: {sent} frames sent");
    std::thread::sleep(Duration::from_millis(300));

    println!(
        "4. stop the capture (SIGINT): it cuts the XDP redirect, drains the queues, completes the files\n"
    );
    sh(Command::new("kill").args(["-INT", &child.id().to_string()]))?;
    let output = child.wait_with_output()?;
    while let Ok(line) = rx.try_recv() {
        println!("   {line}");
    }
    print!("{}", String::from_utf8_lossy(&output.stdout));
    let written = std::fs::read(&report)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .map(|r| {
            r["queues"].as_array().map_or(0, |q| {
                q.iter()
                    .map(|q| q["written"].as_u64().unwrap_or(0))
                    .sum::<u64>()
            })
        })
        .unwrap_or(0);
    println!(
        "\nsent {sent}, captured and written {written}{}",
        if sent == written {
            ": every frame is on disk"
        } else {
            ": see the drop columns above"
        }
    );
    let code = output.status.code().unwrap_or(1);
    show_files(out, cap)?;
    println!(
        "\nthe namespaces are removed now; the capture stays in {}",
        out.display()
    );
    Ok(if sent == written { code } else { code.max(1) })
}

fn file_demo(out: &Path, trace: &Path, cap: &Path) -> anyhow::Result<i32> {
    println!("linecap demo: capturing the bundled trace {TRACE_NAME} ({TRACE_FRAMES} frames)");
    println!("  through 2 queues (flows spread by symmetric hash), 16 KiB files, LZ4 on\n");
    let cfg = CaptureConfig {
        sources: vec![SourceSpec::File(trace.to_path_buf())],
        spread: 2,
        jobs: vec![crate::config::JobConfig::main(cap.to_path_buf())],
        rotate_bytes: Some(16 << 10),
        rotate_seconds: None,
        rotate_files: None,
        compress: true,
        direct_io: false,
        batch_bytes: 64 << 10,
        ring_slots: 8,
        writer_threads: 1,
        hugepages: HugePages::Try,
        flush_ns: 100_000_000,
        duration: None,
        drop_when_full: false,
        xdp: Default::default(),
        cores: Vec::new(),
        housekeeping: Vec::new(),
        queue_dirs: None,
        max_frames: None,
        api: None,
        max_jobs: 1,
        flows: None,
        metrics: None,
        disk_budget: None,
        ship: None,
        writer_delay: None,
        user: None,
    };
    let report = run_capture(&cfg, &stop_on_signals()?)?;
    summary::print(&report);
    show_files(out, cap)?;
    Ok(summary::exit_code(&report))
}

fn show_files(out: &Path, cap: &Path) -> anyhow::Result<()> {
    let files = files_under(cap);
    println!(
        "\n{} capture files, one directory per queue, for example:",
        files.len()
    );
    for f in files.iter().take(3) {
        println!("  {}", f.display());
    }
    let me = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or("linecap".into());
    let merged = out.join("merged.pcap");
    let read = Command::new(&me)
        .arg("read")
        .arg(cap)
        .arg("-w")
        .arg(&merged)
        .output()?;
    anyhow::ensure!(read.status.success(), "reading the capture back failed");
    println!(
        "\nall queues merged by time into {} (nanosecond pcap)",
        merged.display()
    );
    println!("\nOpen them:");
    if let Some(f) = files.first() {
        println!(
            "  tshark -r {}        # Wireshark and tshark read .erf.lz4 as is",
            f.display()
        );
        println!("  lz4 -dc {} | tracestats erf:-", f.display());
    }
    println!("  wireshark {}", merged.display());
    println!("  {me} read {} --stats", cap.display());
    Ok(())
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(rd) = std::fs::read_dir(&d) {
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.to_string_lossy().ends_with(".erf.lz4") {
                    v.push(p);
                }
            }
        }
    }
    v.sort();
    v
}

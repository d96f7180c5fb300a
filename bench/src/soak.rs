//! `soak` suite (root, issue 9): a bounded soak of the whole appliance.
//!
//! `bench gen` sends IMIX frames at a fixed rate (`--soak-pps`, default
//! 50 000/s, well below the zero-loss rates of the `veth` suite) for
//! `--seconds` (use 600 for the documented 10-minute run) through a 2-queue
//! veth pair in namespaces this suite creates and removes. `linecap capture
//! --source afxdp:vA` writes it with time rotation every 5 s and a file-count
//! ring of 6 files per queue (`-G 5 -W 6`). Every 5 s the suite samples
//! linecap's resident memory (VmRSS) and the number of complete capture
//! files; at the end it stops linecap with SIGINT and reads its accounting.
//!
//! It reports: memory first vs last vs peak (flat: everything is allocated at
//! start-up), the file count (bounded by the ring: at most 6 per queue, plus
//! the open one), the frames the generator sent, what linecap saw, wrote and
//! dropped by stage, and whether the accounting balanced. It asserts
//! nothing: a benchmark prints figures.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::Opts;
use crate::veth::Veth;

const QUEUES: usize = 2;
const KEEP_FILES: usize = 6;
const ROTATE_S: u64 = 5;
const SAMPLE_EVERY: Duration = Duration::from_secs(5);

fn rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Complete capture files (visible `*.erf.lz4`) below `dir`.
fn complete_files(dir: &Path) -> usize {
    let mut n = 0;
    crate::veth::walk_files(dir, |name, _| {
        n += usize::from(name.ends_with(".erf.lz4") && !name.starts_with('.'));
    });
    n
}

fn skipped(why: String) -> Vec<serde_json::Value> {
    println!("soak: SKIPPED: {why}");
    vec![serde_json::json!({"suite": "soak", "skipped": why})]
}

pub fn suite(o: &Opts) -> Vec<serde_json::Value> {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    if uid != "0" {
        return skipped("needs root for namespaces and AF_XDP".into());
    }
    let linecap = match crate::linecap_bin() {
        Ok(p) => p,
        Err(e) => return skipped(e),
    };
    let bench = std::env::var_os("BENCH_BIN").map_or_else(
        || std::env::current_exe().unwrap_or_else(|_| PathBuf::from("bench")),
        PathBuf::from,
    );
    match run(o, &linecap, &bench) {
        Ok(rows) => rows,
        Err(e) => {
            println!("soak: {e}");
            vec![serde_json::json!({"suite": "soak", "error": e})]
        }
    }
}

fn run(o: &Opts, linecap: &Path, bench: &Path) -> Result<Vec<serde_json::Value>, String> {
    crate::veth::remove_stale_namespaces();
    let seconds = o.seconds.max(1.0);
    let pps = o.soak_pps;
    let tmp = std::env::temp_dir().join(format!("linecap-soak-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| e.to_string())?;
    let out = tmp.join("cap");
    let report = tmp.join("report.json");
    let veth = Veth::new("soak", QUEUES)?;
    let mut cap = Command::new("ip")
        .args(["netns", "exec", &veth.cap])
        .arg(linecap)
        .args(["capture", "--source", "afxdp:vA", "--no-metrics"])
        .args(["-G", &ROTATE_S.to_string(), "-W", &KEEP_FILES.to_string()])
        .arg("--out")
        .arg(&out)
        .arg("--report-json")
        .arg(&report)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", linecap.display()))?;
    // Ready when the worker threads are up (the XDP program attached).
    let ready = Instant::now() + Duration::from_secs(30);
    while !out.join("q00").exists() {
        if Instant::now() > ready || matches!(cap.try_wait(), Ok(Some(_))) {
            let _ = cap.kill();
            let _ = cap.wait();
            return Err("linecap capture did not start".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    let count = (pps as f64 * seconds) as u64;
    println!(
        "soak: {seconds:.0} s of IMIX at {pps} pps ({count} frames) through a {QUEUES}-queue veth; \
         linecap AF_XDP -G {ROTATE_S} -W {KEEP_FILES}"
    );
    let mut generator = Command::new("ip")
        .args(["netns", "exec", &veth.snd])
        .arg(bench)
        .args(["gen", "-i", "vB", "--size", "imix", "--flows", "1000"])
        .args(["--pps", &pps.to_string(), "--count", &count.to_string()])
        .args(["--threads", &QUEUES.to_string(), "--json", "-"])
        .args(["--duration", &format!("{}", seconds * 1.5 + 10.0)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("bench gen: {e}"))?;
    let start = Instant::now();
    let mut samples: Vec<(f64, u64, usize)> = Vec::new();
    println!("{:>8} {:>10} {:>6}", "t (s)", "RSS MiB", "files");
    let mut next = Instant::now();
    let gen_done = loop {
        if Instant::now() >= next {
            next += SAMPLE_EVERY;
            let t = start.elapsed().as_secs_f64();
            let rss = rss_kib(cap.id()).unwrap_or(0);
            let files = complete_files(&out);
            println!("{t:>8.0} {:>10.1} {files:>6}", rss as f64 / 1024.0);
            samples.push((t, rss, files));
        }
        if start.elapsed() > Duration::from_secs_f64(seconds * 1.5 + 20.0) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
        // The generator ends by itself (count or duration).
        if let Ok(Some(_)) = generator.try_wait() {
            break Some(());
        }
    };
    let gen_out = generator
        .wait_with_output()
        .map_err(|e| format!("bench gen: {e}"))?;
    std::thread::sleep(Duration::from_millis(1500));
    let _ = Command::new("kill")
        .args(["-INT", &cap.id().to_string()])
        .status();
    let stop = Instant::now() + Duration::from_secs(30);
    let status = loop {
        match cap.try_wait() {
            Ok(Some(s)) => break Some(s),
            _ if Instant::now() > stop => {
                let _ = cap.kill();
                let _ = cap.wait();
                break None;
            }
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    drop(veth);
    let g: serde_json::Value = serde_json::from_slice(&gen_out.stdout).map_err(|_| {
        format!(
            "bench gen failed: {}",
            String::from_utf8_lossy(&gen_out.stderr).trim()
        )
    })?;
    let r: serde_json::Value = std::fs::read(&report)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or("linecap wrote no report")?;
    let _ = std::fs::remove_dir_all(&tmp);

    let sent = g["sent"].as_u64().unwrap_or(0);
    let q = r["queues"].as_array().cloned().unwrap_or_default();
    let sum = |f: &dyn Fn(&serde_json::Value) -> u64| q.iter().map(f).sum::<u64>();
    let seen = sum(&|x| x["seen"].as_u64().unwrap_or(0));
    let written = sum(&|x| x["written"].as_u64().unwrap_or(0));
    let mut drops = serde_json::Map::new();
    for stage in ["source", "nic", "xdp", "ring_full", "writer"] {
        let v = sum(&|x| x["dropped"][stage].as_u64().unwrap_or(0));
        drops.insert(stage.into(), v.into());
    }
    let files_deleted = sum(&|x| x["writer"]["files_deleted"].as_u64().unwrap_or(0));
    // Memory after the first minute (or the first sample) against the end and the peak.
    let warm = samples
        .iter()
        .find(|s| s.0 >= 60.0_f64.min(seconds / 2.0))
        .or(samples.first())
        .map_or(0, |s| s.1);
    let last = samples.last().map_or(0, |s| s.1);
    let peak = samples.iter().map(|s| s.1).max().unwrap_or(0);
    let max_files = samples.iter().map(|s| s.2).max().unwrap_or(0);
    let bound = QUEUES * KEEP_FILES;
    println!(
        "memory: {:.1} MiB after warm-up, {:.1} MiB at the end, peak {:.1} MiB (end / warm {:.3})",
        warm as f64 / 1024.0,
        last as f64 / 1024.0,
        peak as f64 / 1024.0,
        last as f64 / warm.max(1) as f64
    );
    println!(
        "files: at most {max_files} complete files at once (ring bound {bound}); {files_deleted} deleted by the ring"
    );
    println!(
        "frames: generator sent {sent}, linecap saw {seen}, wrote {written}, dropped {}; accounting {}; \
         exit {}",
        drops
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", "),
        if r["balanced"] == true {
            "exact"
        } else {
            "MISMATCH"
        },
        status.map_or("killed (no exit after SIGINT)".to_string(), |s| s
            .to_string())
    );
    if gen_done.is_none() {
        println!("soak: the run went past its time limit");
    }
    let mut rows: Vec<serde_json::Value> = samples
        .iter()
        .map(|(t, rss, files)| {
            serde_json::json!({"suite": "soak", "what": "sample", "t_s": t, "rss_kib": rss, "complete_files": files})
        })
        .collect();
    rows.push(serde_json::json!({
        "suite": "soak", "what": "summary", "seconds": seconds, "pps": pps,
        "rss_warm_kib": warm, "rss_end_kib": last, "rss_peak_kib": peak,
        "rss_end_over_warm": last as f64 / warm.max(1) as f64,
        "max_complete_files": max_files, "file_ring_bound": bound, "files_deleted": files_deleted,
        "sent": sent, "seen": seen, "written": written, "dropped": drops,
        "balanced": r["balanced"], "generator_limited": g["generator_limited"],
    }));
    Ok(rows)
}

//! `memory` suite: peak resident memory (VmHWM) of a real `linecap capture`
//! of synthetic traffic (64 B frames, 1000 flows, flow tracking on, files
//! rotated and recycled so the disk use stays bounded) over a short run and
//! a run 10 times longer. Everything is allocated at start-up, so the two
//! peaks should be the same: the suite prints the ratio.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::Opts;

/// Peak RSS (kB) of `linecap capture` running `seconds`, sampled every 20 ms
/// (the high-water mark only grows, so the last sample is the peak).
fn peak_kb(linecap: &Path, seconds: f64, out: &Path) -> Result<u64, String> {
    let _ = std::fs::remove_dir_all(out);
    let mut child = Command::new(linecap)
        .args([
            "capture",
            "--source",
            "synth:64:1000",
            "--flows",
            "--no-metrics",
        ])
        .args(["-C", "32M", "-W", "2", "--duration"])
        .arg(format!("{seconds}"))
        .arg("--out")
        .arg(out)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: {e}", linecap.display()))?;
    let status = format!("/proc/{}/status", child.id());
    let mut peak = 0u64;
    let limit = Instant::now() + Duration::from_secs_f64(seconds + 30.0);
    loop {
        if let Ok(s) = std::fs::read_to_string(&status)
            && let Some(v) = s
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        {
            peak = peak.max(v);
        }
        if let Ok(Some(st)) = child.try_wait() {
            if !st.success() {
                return Err(format!("linecap capture exited with {st}"));
            }
            break;
        }
        if Instant::now() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return Err("linecap capture did not stop after --duration".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = std::fs::remove_dir_all(out);
    Ok(peak)
}

pub fn suite(o: &Opts) -> Vec<serde_json::Value> {
    let linecap = match crate::linecap_bin() {
        Ok(p) => p,
        Err(e) => {
            println!("memory: SKIPPED: {e}");
            return vec![serde_json::json!({"suite": "memory", "skipped": e})];
        }
    };
    let out = std::env::temp_dir().join(format!("linecap-bench-memory-{}", std::process::id()));
    println!(
        "memory: peak RSS of `linecap capture --source synth:64:1000 --flows`, short run vs 10x longer"
    );
    println!("{:>10} {:>14}", "seconds", "peak RSS MiB");
    let mut rows = Vec::new();
    let mut peaks = Vec::new();
    for s in [o.seconds, o.seconds * 10.0] {
        match peak_kb(&linecap, s, &out) {
            Ok(kb) => {
                println!("{s:>10.1} {:>14.1}", kb as f64 / 1024.0);
                peaks.push(kb as f64);
                rows.push(serde_json::json!({
                    "suite": "memory", "seconds": s, "peak_rss_kib": kb,
                }));
            }
            Err(e) => {
                println!("memory: {e}");
                rows.push(serde_json::json!({"suite": "memory", "seconds": s, "error": e}));
            }
        }
    }
    if let [a, b] = peaks[..] {
        println!("  long / short peak RSS: {:.3}", b / a);
        rows.push(serde_json::json!({"suite": "memory", "long_over_short_peak_rss": b / a}));
    }
    rows
}

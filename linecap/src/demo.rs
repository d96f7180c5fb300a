//! `linecap demo`: a self-contained capture a newcomer can run and inspect.
//!
//! Until the AF_XDP path lands, the demo replays the bundled real trace
//! (suricata-verify's icmp_and_ssh, MIT, embedded in the binary) through the
//! whole pipeline from a file source spread over two queues, with rotation
//! on, then reads the capture back and says how to open it.

use std::path::{Path, PathBuf};

use crate::cli::{DemoArgs, stop_on_signals};
use crate::pipeline::{CaptureConfig, SourceSpec, run_capture};
use crate::summary;
use linecap_dataplane::ring::HugePages;

const TRACE: &[u8] = include_bytes!("../assets/suricata-verify__icmp_and_ssh.pcap");
const TRACE_NAME: &str = "suricata-verify__icmp_and_ssh.pcap";

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
    println!("linecap demo: capturing the bundled trace {TRACE_NAME} (362 frames)");
    println!("  through 2 queues (flows spread by symmetric hash), 16 KiB files, LZ4 on\n");
    let cfg = CaptureConfig {
        sources: vec![SourceSpec::File(trace.clone())],
        spread: 2,
        out: cap.clone(),
        rotate_bytes: Some(16 << 10),
        rotate_seconds: None,
        rotate_files: None,
        compress: true,
        batch_bytes: 64 << 10,
        ring_slots: 8,
        writer_threads: 1,
        hugepages: HugePages::Try,
        flush_ns: 100_000_000,
        duration: None,
        drop_when_full: false,
        xdp: Default::default(),
        cores: Vec::new(),
    };
    let report = run_capture(&cfg, stop_on_signals()?)?;
    summary::print(&report, &cap);
    let files = files_under(&cap);
    println!("\n{} capture files written, for example:", files.len());
    for f in files.iter().take(3) {
        println!("  {}", f.display());
    }
    let me = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or("linecap".into());
    println!("\nLook at them:");
    if let Some(f) = files.first() {
        println!(
            "  tshark -r {}            # Wireshark/tshark read .erf.lz4 as is",
            f.display()
        );
        println!("  lz4 -dc {} | tracestats erf:-", f.display());
    }
    println!(
        "  {me} read {} --stats        # counts per file",
        cap.display()
    );
    println!(
        "  {me} read {} -w {}/merged.pcap   # both queues merged by time, for Wireshark",
        cap.display(),
        out.display()
    );
    Ok(summary::exit_code(&report))
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

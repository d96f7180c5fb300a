//! `linecap process`: incremental, parallel processors over capture
//! directories (the `linecap-process` crate does the work).

use std::path::PathBuf;

use clap::Args;
use linecap_process::run::{Options, run as run_processors};
use linecap_process::{BUILTIN, Settings, builtin};

#[derive(Args, Debug)]
#[command(after_help = "\
Processes the completed files (those with a manifest) of each queue series in sequence order, series in
parallel. After each file the processors' rows are written to OUT/TABLE/date=YYYY-MM-DD/hour=HH/ and
their state is saved in STATE with a cursor; a re-run processes only files not yet seen. Kill it at any
moment and run it again: the result is that of one clean run. OUT/summary.json is the merged global
summary; OUT/open/TABLE.parquet holds the rows still open (flows not ended, hours not over).

EXAMPLES:
  linecap process /data/cap --state /var/lib/linecap/proc --out /data/processed
  linecap process /data/cap /data/dns --state S --out O --processors flows,dns --threads 4")]
pub struct ProcessArgs {
    /// Capture directories (their queue series files are processed).
    #[arg(required = true, value_name = "DIR")]
    pub inputs: Vec<PathBuf>,
    /// State directory (per-series state and cursor; keep it with --out).
    #[arg(long, value_name = "STATE")]
    pub state: PathBuf,
    /// Output directory (partitioned Parquet tables, summary.json).
    #[arg(long, value_name = "OUT")]
    pub out: PathBuf,
    /// Processors, comma-separated: flows, hosts, dns.
    #[arg(
        long,
        value_name = "LIST",
        default_value = "flows,hosts,dns",
        value_delimiter = ','
    )]
    pub processors: Vec<String>,
    /// Worker threads (series are processed in parallel).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub threads: usize,
    /// Seconds of packet time without a packet after which a flow ends.
    #[arg(long, value_name = "SECONDS", default_value_t = 60.0)]
    pub idle_timeout: f64,
    /// Seconds after its first packet at which a flow is cut (it continues as a new row).
    #[arg(long, value_name = "SECONDS", default_value_t = 300.0)]
    pub active_timeout: f64,
    /// Most open flows (and DNS address mappings) kept per series.
    #[arg(long, value_name = "N", default_value_t = 1 << 20)]
    pub flow_capacity: usize,
}

fn seconds_ns(v: f64, flag: &str) -> anyhow::Result<u64> {
    anyhow::ensure!(
        v.is_finite() && v > 0.0,
        "{flag} must be a positive number of seconds, got {v}"
    );
    Ok((v * 1e9).min(u64::MAX as f64 / 2.0) as u64)
}

/// Run `linecap process`; exit code 1 when a series had an error.
pub fn run(a: ProcessArgs) -> anyhow::Result<i32> {
    anyhow::ensure!(
        (1..=256).contains(&a.threads),
        "--threads must be 1..=256, got {}",
        a.threads
    );
    anyhow::ensure!(a.flow_capacity > 0, "--flow-capacity must be at least 1");
    let settings = Settings {
        idle_ns: seconds_ns(a.idle_timeout, "--idle-timeout")?,
        active_ns: seconds_ns(a.active_timeout, "--active-timeout")?,
        capacity: a.flow_capacity,
    };
    let mut processors = Vec::new();
    for name in &a.processors {
        let name = name.trim();
        anyhow::ensure!(
            a.processors
                .iter()
                .filter(|n| n.trim() == name)
                .nth(1)
                .is_none(),
            "--processors: {name} given twice"
        );
        processors.push(builtin(name, &settings).ok_or_else(|| {
            anyhow::anyhow!(
                "--processors: unknown processor {name:?} (known: {})",
                BUILTIN.join(", ")
            )
        })?);
    }
    let report = run_processors(&Options {
        inputs: a.inputs,
        state: a.state,
        out: a.out.clone(),
        processors,
        threads: a.threads,
        crash_at_step: None,
    })?;
    for e in &report.errors {
        eprintln!("linecap process: error: {e}");
    }
    eprintln!(
        "process: {} series; {} files ({} records) processed, {} already done, {} waiting for a manifest; \
         summary in {}",
        report.series,
        report.files,
        report.records,
        report.already_done,
        report.waiting,
        a.out.join("summary.json").display()
    );
    Ok(i32::from(!report.errors.is_empty()))
}

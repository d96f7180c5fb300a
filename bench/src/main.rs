//! linecap benchmarks and packet generator (benchmarks print figures and
//! write them as JSON and CSV; they assert nothing about speed).
//!
//! `cargo run -p bench --release -- SUITE [--seconds S] [--out DIR]`, where
//! SUITE is one of [`SUITES`] (see `--help`), or `all` for the quick ones.
//! Each run prints a table and writes `DIR/SUITE.json` and `DIR/SUITE.csv`.
//!
//! Tools in the same binary: `bench gen` (the packet generator, see
//! `gen/`) and `bench seqcheck` (the receiver-side check of its sequence
//! numbers in a capture).
#![deny(unsafe_code)]

mod applabel;
#[cfg(feature = "dpdk")]
mod dpdk;
mod flows;
mod jitter;
mod memory;
mod pipeline;
mod pktgen;
mod plot;
mod policy;
mod query;
mod seqcheck;
mod soak;
mod veth;
mod worker;
mod writer;

use std::path::PathBuf;

use clap::Parser;

/// A suite: its name, one line on what it measures, whether `all` runs it,
/// and its entry point. Adding a suite is one line here.
pub struct Suite {
    pub name: &'static str,
    pub about: &'static str,
    pub in_all: bool,
    pub run: fn(&Opts) -> Vec<serde_json::Value>,
}

pub const SUITES: &[Suite] = &[
    Suite {
        name: "pipeline",
        about: "synthetic source -> worker (flows off/on) -> ring -> writer thread: Mpps, ns/packet per core at 64/512/1500 B and IMIX",
        in_all: true,
        run: pipeline::suite,
    },
    Suite {
        name: "worker",
        about: "the worker alone on one core (ring drained in the same thread), with and without flow tracking",
        in_all: true,
        run: worker::worker_suite,
    },
    Suite {
        name: "flows",
        about: "flow table alone vs hashbrown: 1 k-4 M flows, uniform/Zipf, churn with expiry, per-burst latency",
        in_all: true,
        run: flows::suite,
    },
    Suite {
        name: "applabel",
        about: "application labels: flow path with and without payload heads at 100 k flows, label ns per record",
        in_all: false,
        run: applabel::suite,
    },
    Suite {
        name: "writer",
        about: "MB/s per writer thread (LZ4 and plain) next to the lz4 CLI and fio/dd O_DIRECT on the same directory",
        in_all: true,
        run: writer::suite,
    },
    Suite {
        name: "policy",
        about: "Crypto-PAn, BPF filters, sampling: ns/packet each",
        in_all: false,
        run: policy::suite,
    },
    Suite {
        name: "memory",
        about: "peak RSS of a capture over a short and a 10x longer run (should be flat)",
        in_all: true,
        run: memory::suite,
    },
    #[cfg(feature = "dpdk")]
    Suite {
        name: "dpdk",
        about: "(feature dpdk) net_null: dpdk-testpmd rxonly next to linecap's receive loop, worker and capture (LZ4 on/off)",
        in_all: false,
        run: dpdk_suite,
    },
    Suite {
        name: "soak",
        about: "(root) --seconds of generator traffic through a veth into linecap AF_XDP with -G 5 -W 6: memory, file count, loss, accounting",
        in_all: false,
        run: soak::suite,
    },
    Suite {
        name: "query",
        about: "(root) --bytes of Zipf random-payload traffic captured by linecap and stenographer; 5-tuple and host queries: linecap query vs read|tcpdump vs stenoread",
        in_all: false,
        run: query::suite,
    },
    Suite {
        name: "veth",
        about: "(root) zero-loss rate search: linecap AF_XDP, tcpdump, netsniff-ng, stenotype on a multi-queue veth, bench gen as generator; plot",
        in_all: false,
        run: veth::suite,
    },
];

const AFTER_HELP: &str = "\
Suites:
  pipeline  synthetic -> worker (flows off/on) -> ring -> writer thread, per core
  worker    the worker alone on one core, with and without flow tracking
  flows     flow table alone vs hashbrown (1k-4M flows, uniform/Zipf, churn)
  applabel  labelling cost: payload heads on/off at 100 k flows, label ns/record
  writer    writer thread MB/s, LZ4 ratio, next to lz4 CLI and fio/dd O_DIRECT
  policy    Crypto-PAn, BPF, sampling costs
  memory    peak RSS over a short and a 10x longer capture
  veth      (root) zero-loss throughput search per capture tool on a veth; plot
  query     (root) linecap query vs full scan vs stenoread on the same traffic (--bytes 4G)
  soak      (root) long run through a veth with rotation and a file ring (--seconds 600)
  dpdk      (built with --features dpdk) testpmd vs linecap on net_null
  all       pipeline, worker, flows, writer, memory

Tools:
  bench gen --help        the rate-controlled packet generator
  bench seqcheck --help   check a capture's sequence numbers (count, gaps, reordering)

Examples:
  cargo run -p bench --release -- pipeline --seconds 5 --out docs/bench-results
  cargo build --release -p linecap -p bench && sudo ./target/release/bench veth --out docs/bench-results";

/// Options shared by the suites.
#[derive(Parser, Debug, Clone)]
#[command(name = "bench", about = "linecap benchmarks: each suite prints a table and writes JSON + CSV", after_help = AFTER_HELP)]
pub struct Opts {
    /// Suite to run (see below), or `all`.
    #[arg(value_name = "SUITE")]
    pub suite: String,
    /// Scale of the run: roughly the seconds each measured configuration
    /// gets (veth: seconds of traffic per trial).
    #[arg(long, default_value_t = 2.0, value_name = "S")]
    pub seconds: f64,
    /// applabel, worker: also count instructions per packet under `valgrind
    /// --tool=callgrind` (applabel: heads off and on; worker: flows off, 1 k,
    /// 100 k, 1 M flows) — repeatable whatever else the machine does.
    #[arg(long)]
    pub callgrind: bool,
    /// Directory for SUITE.json and SUITE.csv (and the veth plot).
    #[arg(long, default_value = "target/bench-results", value_name = "DIR")]
    pub out: PathBuf,
    /// Also write the JSON to this file (as older versions did).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// veth: capture tools, comma-separated, from linecap-native,
    /// linecap-native-threaded, linecap-generic, tcpdump, netsniff-ng, stenotype.
    #[arg(long, value_name = "LIST")]
    pub tools: Option<String>,
    /// flows: table sizes in flows, comma-separated (the goal ratios need
    /// 1000000; the churn run and the memory floor always run).
    #[arg(
        long,
        value_name = "LIST",
        default_value = "1000,100000,1000000,4000000"
    )]
    pub flows: String,
    /// veth: frame sizes, comma-separated (default 64,1514).
    #[arg(long, value_name = "LIST", default_value = "64,1514")]
    pub sizes: String,
    /// veth: generator TX threads (and veth queues).
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub gen_threads: usize,
    /// veth: generator transmit path (packet or xdp).
    #[arg(long, default_value = "packet", value_name = "PATH")]
    pub gen_tx: pktgen::tx::TxKind,
    /// veth: highest offered rate to try, in frames/s (bounds the doubling).
    #[arg(long, default_value_t = 8_000_000, value_name = "PPS")]
    pub max_pps: u64,
    /// veth: bisection steps after the first loss (time bound per tool and size).
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub steps: u32,
    /// soak: the generator's rate, frames/s (IMIX) for the whole run.
    #[arg(long, default_value_t = 50_000, value_name = "PPS")]
    pub soak_pps: u64,
    /// query: ERF bytes (frames + 18 B each) to send and capture; K/M/G
    /// suffixes (powers of 1024). The figure uses 4G.
    #[arg(long, default_value = "32M", value_name = "BYTES", value_parser = parse_bytes)]
    pub bytes: u64,
    /// query: flows in the Zipf model.
    #[arg(long, default_value_t = 50_000, value_name = "N")]
    pub query_flows: usize,
    /// query: the sender's rate, frames/s.
    #[arg(long, default_value_t = 100_000, value_name = "PPS")]
    pub query_pps: u64,
    /// query: runs of each query (the median is printed).
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub runs: usize,
}

/// `--bytes`: a number with an optional K/M/G suffix (powers of 1024).
fn parse_bytes(s: &str) -> Result<u64, String> {
    let (num, mul) = match s.as_bytes().last() {
        Some(b'K' | b'k') => (&s[..s.len() - 1], 1u64 << 10),
        Some(b'M' | b'm') => (&s[..s.len() - 1], 1 << 20),
        Some(b'G' | b'g') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mul))
        .filter(|&n| n >= 1 << 20)
        .ok_or_else(|| format!("--bytes: {s:?} is not a size of at least 1M (like 64M or 4G)"))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("gen") => std::process::exit(pktgen::main(args[1..].to_vec())),
        Some("seqcheck") => std::process::exit(seqcheck::main(args[1..].to_vec())),
        // The child `bench applabel --callgrind` runs under valgrind.
        Some("applabel-count") => std::process::exit(applabel::count_child(&args[1..])),
        // The child `bench worker --callgrind` runs under valgrind.
        Some("worker-count") => std::process::exit(worker::count_child(&args[1..])),
        // The sender `bench query` runs inside its namespace.
        Some("query-send") => std::process::exit(query::send_main(args[1..].to_vec())),
        Some("query-pcap") => std::process::exit(query::pcap_main(args[1..].to_vec())),
        #[cfg(feature = "dpdk")]
        Some("dpdk-rx") => {
            // The child process `bench dpdk` spawns (EAL initialises once per process).
            let seconds = args
                .iter()
                .position(|a| a == "--seconds")
                .and_then(|i| args.get(i + 1))
                .and_then(|s| s.parse().ok())
                .unwrap_or(2.0);
            dpdk::rx_child(seconds);
            return;
        }
        _ => {}
    }
    let o = match Opts::try_parse() {
        Ok(o) => o,
        Err(e) => e.exit(),
    };
    if let Err(e) = check(&o) {
        eprintln!("bench: {e}");
        std::process::exit(2);
    }
    let chosen: Vec<&Suite> = if o.suite == "all" {
        SUITES.iter().filter(|s| s.in_all).collect()
    } else {
        SUITES.iter().filter(|s| s.name == o.suite).collect()
    };
    let mut all = Vec::new();
    for s in chosen {
        let rows = (s.run)(&o);
        match write_results(&o, s.name, &rows) {
            Ok((j, c)) => eprintln!("{}: results in {} and {}", s.name, j.display(), c.display()),
            Err(e) => {
                eprintln!("bench: writing results of {}: {e}", s.name);
                std::process::exit(1);
            }
        }
        all.extend(rows);
    }
    if let Some(p) = &o.json
        && let Err(e) = std::fs::write(
            p,
            serde_json::to_vec_pretty(&document(&o, &all)).unwrap_or_default(),
        )
    {
        eprintln!("bench: {}: {e}", p.display());
        std::process::exit(1);
    }
}

fn check(o: &Opts) -> Result<(), String> {
    if o.suite != "all" && !SUITES.iter().any(|s| s.name == o.suite) {
        let names: Vec<&str> = SUITES.iter().map(|s| s.name).collect();
        return Err(format!(
            "unknown suite {:?}: one of {} or all (bench --help)",
            o.suite,
            names.join(", ")
        ));
    }
    if !(o.seconds > 0.0 && o.seconds <= 600.0) {
        return Err(format!(
            "--seconds must be above 0 and at most 600, got {}",
            o.seconds
        ));
    }
    if !(1..=8).contains(&o.gen_threads) {
        return Err(format!(
            "--gen-threads must be 1..=8, got {}",
            o.gen_threads
        ));
    }
    if !(50_000..=100_000_000).contains(&o.max_pps) {
        return Err(format!(
            "--max-pps must be 50000..=100000000, got {}",
            o.max_pps
        ));
    }
    if !(1..=100_000_000).contains(&o.query_pps) || !(1..=10_000_000).contains(&o.query_flows) {
        return Err(format!(
            "--query-pps must be 1..=100000000 and --query-flows 1..=10000000, got {} and {}",
            o.query_pps, o.query_flows
        ));
    }
    if !(1..=50).contains(&o.runs) {
        return Err(format!("--runs must be 1..=50, got {}", o.runs));
    }
    if o.steps > 12 {
        return Err(format!("--steps must be at most 12, got {}", o.steps));
    }
    veth::parse_sizes(&o.sizes)?;
    flows::parse_flows(&o.flows)?;
    veth::parse_tools(o.tools.as_deref())?;
    Ok(())
}

/// The JSON document of a run: what, where, when, and the rows.
pub fn document(o: &Opts, rows: &[serde_json::Value]) -> serde_json::Value {
    serde_json::json!({
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "suite": o.suite,
        "seconds": o.seconds,
        "date": now_utc(),
        "machine": machine(),
        "results": rows,
    })
}

/// Write `DIR/NAME.json` (the document) and `DIR/NAME.csv` (one line per row).
fn write_results(
    o: &Opts,
    name: &str,
    rows: &[serde_json::Value],
) -> std::io::Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(&o.out)?;
    let j = o.out.join(format!("{name}.json"));
    let c = o.out.join(format!("{name}.csv"));
    std::fs::write(&j, serde_json::to_vec_pretty(&document(o, rows))?)?;
    std::fs::write(&c, csv(rows))?;
    Ok((j, c))
}

/// Rows as CSV: the union of their keys (in first-seen order) as the
/// header; nested values as JSON text; quotes doubled.
pub fn csv(rows: &[serde_json::Value]) -> String {
    let mut cols: Vec<String> = Vec::new();
    for r in rows {
        if let Some(m) = r.as_object() {
            for k in m.keys() {
                if !cols.contains(k) {
                    cols.push(k.clone());
                }
            }
        }
    }
    let cell = |v: Option<&serde_json::Value>| -> String {
        let s = match v {
            None | Some(serde_json::Value::Null) => String::new(),
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
        };
        if s.contains([',', '"', '\n']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s
        }
    };
    let mut out = cols.join(",");
    out.push('\n');
    for r in rows {
        let line: Vec<String> = cols.iter().map(|k| cell(r.get(k))).collect();
        out.push_str(&line.join(","));
        out.push('\n');
    }
    out
}

fn now_utc() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn machine() -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    serde_json::json!({
        "cpu": cpu,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "kernel": kernel.trim(),
    })
}

/// `$LINECAP_BIN`, or the `linecap` binary next to this one, built first when missing
/// and this runs under `cargo run` (so a suite is one command on a fresh clone).
pub fn linecap_bin() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("LINECAP_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let bin = exe.with_file_name("linecap");
    if bin.exists() {
        return Ok(bin);
    }
    let profile = if exe.parent().is_some_and(|d| d.ends_with("release")) {
        "--release"
    } else {
        "--profile=dev"
    };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("bench: building linecap ({cargo} build {profile} -p linecap)");
    let ok = std::process::Command::new(&cargo)
        .args(["build", profile, "-p", "linecap"])
        .status()
        .is_ok_and(|s| s.success());
    if ok && bin.exists() {
        Ok(bin)
    } else {
        Err(format!(
            "{} is missing: cargo build --release -p linecap",
            bin.display()
        ))
    }
}

/// Median of a set of measurements (NaN-free).
pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[cfg(feature = "dpdk")]
fn dpdk_suite(o: &Opts) -> Vec<serde_json::Value> {
    dpdk::suite(o.seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_and_flattens() {
        let rows = vec![
            serde_json::json!({"a": 1, "b": "x,y"}),
            serde_json::json!({"a": 2.5, "c": [1, 2], "b": null}),
        ];
        assert_eq!(csv(&rows), "a,b,c\n1,\"x,y\",\n2.5,,\"[1,2]\"\n");
    }

    #[test]
    fn every_suite_is_named_in_the_help() {
        for s in SUITES {
            assert!(
                AFTER_HELP.contains(&format!("  {} ", s.name)),
                "{} missing from --help",
                s.name
            );
        }
    }
}

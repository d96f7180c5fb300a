//! Application labels judged by nDPI (Debian `libndpi-bin`'s `ndpiReader`).
//!
//! For every trace in ../shared/traces: the trace is converted to pcap with
//! `editcap` (ndpiReader reads no ERF or pcapng) in a temporary directory,
//! `ndpiReader -i T.pcap -C out.csv` names its flows, and `linecap flows
//! --format tsv` labels ours. Flows are matched by 5-tuple (protocol and the
//! two endpoints in either order; ports ignored for protocols without them,
//! which nDPI reports as 0). Over the nDPI flows whose protocol (the master
//! part of `MASTER.APP`) is one the rule set names, linecap's label must
//! agree on at least 95 %. The confusion table of the disagreements is
//! printed (docs/applabel.md keeps a copy with the reason for each kind).
//!
//! Missing tools fail the test (install them with `.ci/setup`).

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::Path;
use std::process::Command;

use common::{linecap, run, run_ok, traces};

const NO_TIMEOUTS: [&str; 6] = [
    "--idle-timeout",
    "1e9",
    "--active-timeout",
    "1e9",
    "--linger",
    "1e9",
];

/// nDPI's protocol name (master part) in the rule set's spelling.
fn ndpi_name(proto: &str) -> String {
    let master = proto.split('.').next().unwrap_or(proto);
    match master {
        "SMBv1" | "SMBv23" => "SMB".into(),
        m => m.into(),
    }
}

/// (IP protocol, endpoints sorted) — ports zeroed for non-TCP/UDP.
type Tuple = (u8, (IpAddr, u16), (IpAddr, u16));

fn tuple(proto: u8, a: (&str, u16), b: (&str, u16)) -> Tuple {
    // Parsed, so that inet_ntop's and Rust's IPv6 spellings compare.
    let ip = |s: &str| -> IpAddr { s.parse().unwrap_or_else(|_| panic!("bad address {s}")) };
    let (a, b) = ((ip(a.0), a.1), (ip(b.0), b.1));
    let (a, b) = if proto == 6 || proto == 17 {
        (a, b)
    } else {
        ((a.0, 0), (b.0, 0))
    };
    if a <= b { (proto, a, b) } else { (proto, b, a) }
}

fn proto_number(name: &str) -> Option<u8> {
    match name {
        "tcp" => Some(6),
        "udp" => Some(17),
        "icmp" => Some(1),
        "icmpv6" => Some(58),
        "sctp" => Some(132),
        n => n.strip_prefix("ipproto").and_then(|p| p.parse().ok()),
    }
}

/// linecap's labels by tuple (several flows can share one: VLANs).
/// (app, method) of every flow, by tuple.
type Labels = HashMap<Tuple, Vec<(String, String)>>;

fn linecap_labels(trace: &Path) -> Labels {
    let out = run_ok(
        linecap()
            .arg("flows")
            .arg(trace)
            .args(["--format", "tsv"])
            .args(NO_TIMEOUTS),
    );
    let mut m: HashMap<Tuple, Vec<(String, String)>> = HashMap::new();
    let mut lines = out.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split('\t').collect();
    let col = |n: &str| {
        header
            .iter()
            .position(|h| h.trim_start_matches('#') == n)
            .unwrap()
    };
    let (pc, aa, pa, ab, pb, app, meth) = (
        col("proto"),
        col("addr_a"),
        col("port_a"),
        col("addr_b"),
        col("port_b"),
        col("app"),
        col("app_method"),
    );
    for l in lines {
        let c: Vec<&str> = l.split('\t').collect();
        let Some(proto) = proto_number(c[pc]) else {
            continue; // fragments of later offsets
        };
        let t = tuple(
            proto,
            (c[aa], c[pa].parse().unwrap()),
            (c[ab], c[pb].parse().unwrap()),
        );
        m.entry(t)
            .or_default()
            .push((c[app].to_string(), c[meth].to_string()));
    }
    m
}

/// nDPI's flows: (tuple, protocol name) for the identified ones.
fn ndpi_flows(trace: &Path, tmp: &Path) -> Vec<(Tuple, String)> {
    let name = trace.file_name().unwrap().to_string_lossy().to_string();
    let pcap = tmp.join(format!("{name}.pcap"));
    run_ok(
        Command::new("editcap")
            .args(["-F", "pcap"])
            .arg(trace)
            .arg(&pcap),
    );
    let csv = tmp.join(format!("{name}.csv"));
    let out = run(Command::new("ndpiReader")
        .arg("-i")
        .arg(&pcap)
        .arg("-C")
        .arg(&csv)
        .arg("-q"));
    assert!(
        out.status.success(),
        "ndpiReader on {name} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&csv).unwrap_or_default();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split(',').collect();
    let col = |n: &str| {
        header
            .iter()
            .position(|h| h.trim_start_matches('#') == n)
            .unwrap_or_else(|| panic!("ndpiReader CSV without {n}: {header:?}"))
    };
    let (pc, si, sp, di, dp, np) = (
        col("protocol"),
        col("src_ip"),
        col("src_port"),
        col("dst_ip"),
        col("dst_port"),
        col("ndpi_proto"),
    );
    lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let c: Vec<&str> = l.split(',').collect();
            let t = tuple(
                c[pc].parse().unwrap(),
                (c[si], c[sp].parse().unwrap()),
                (c[di], c[dp].parse().unwrap()),
            );
            (t, ndpi_name(c[np]))
        })
        .collect()
}

#[test]
fn labels_agree_with_ndpi_on_95_percent_of_covered_flows() {
    judge(linecap_labels);
}

/// The same judgement on the `flows` table of `linecap process` (issue 17's
/// processing output): each trace captured (one queue), then processed with
/// no timeouts, so every flow is in `OUT/open/flows.parquet`.
#[test]
fn processing_output_labels_agree_with_ndpi_on_95_percent() {
    judge(process_labels);
}

fn process_labels(trace: &Path) -> Labels {
    use linecap_process::{Cell, Settings, builtin, output};
    let d = tempfile::tempdir().unwrap();
    let cap = d.path().join("cap");
    run_ok(
        linecap()
            .arg("capture")
            .arg("--source")
            .arg(format!("file:{}", trace.display()))
            .arg("-w")
            .arg(&cap),
    );
    if common::files_with(&cap, ".erf.lz4").is_empty() {
        // No Ethernet frames (libtrace__provenance.erf holds provenance
        // records only): nothing to process, as `linecap flows` finds none.
        return Labels::new();
    }
    let out = d.path().join("out");
    run_ok(
        linecap()
            .arg("process")
            .arg(&cap)
            .arg("--state")
            .arg(d.path().join("state"))
            .arg("--out")
            .arg(&out)
            .args(["--processors", "flows"])
            .args(&NO_TIMEOUTS[..4]),
    );
    let p = builtin("flows", &Settings::default()).unwrap();
    let cols = p.columns();
    let at = |n: &str| cols.iter().position(|c| c.name == n).unwrap();
    let mut rows = output::read_rows(&out.join("flows"), cols).unwrap();
    let open = d.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::copy(out.join("open/flows.parquet"), open.join("o.parquet")).unwrap();
    rows.extend(output::read_rows(&open, cols).unwrap());
    let text = |c: &Cell| match c {
        Cell::Str(s) => s.clone(),
        Cell::I64(i) => i.to_string(),
        Cell::Null => String::new(),
    };
    let mut m: HashMap<Tuple, Vec<(String, String)>> = HashMap::new();
    for r in &rows {
        let c = |n: &str| text(&r.cells[at(n)]);
        let Some(proto) = proto_number(&c("proto")) else {
            continue;
        };
        let t = tuple(
            proto,
            (&c("addr_a"), c("port_a").parse().unwrap()),
            (&c("addr_b"), c("port_b").parse().unwrap()),
        );
        m.entry(t).or_default().push((c("app"), c("app_method")));
    }
    m
}

/// Compare `ours` (labels by tuple for one trace) with nDPI over every
/// trace; print the confusion table; at least 95 % must agree.
fn judge(ours_of: fn(&Path) -> Labels) {
    let covered: BTreeSet<String> = linecap_dataplane::applabel::classifier()
        .unwrap()
        .apps()
        .map(|(_, n)| n.to_string())
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let (mut judged, mut agreed, mut ndpi_total) = (0u32, 0u32, 0u32);
    // (nDPI, linecap label/method) -> flows, over the disagreements.
    let mut confusion: BTreeMap<(String, String), u32> = BTreeMap::new();
    let mut by_method: BTreeMap<String, u32> = BTreeMap::new();
    let mut not_covered: BTreeMap<String, u32> = BTreeMap::new();
    for trace in traces() {
        let ours = ours_of(&trace);
        for (t, name) in ndpi_flows(&trace, tmp.path()) {
            ndpi_total += 1;
            if !covered.contains(&name) {
                *not_covered.entry(name).or_default() += 1;
                continue;
            }
            judged += 1;
            let labels = ours.get(&t).cloned().unwrap_or_default();
            if let Some((_, m)) = labels.iter().find(|(n, _)| *n == name) {
                agreed += 1;
                *by_method.entry(format!("{name}/{m}")).or_default() += 1;
            } else {
                let got = labels
                    .first()
                    .map_or("no such flow".to_string(), |(n, m)| format!("{n}/{m}"));
                eprintln!(
                    "DISAGREE {}: {t:?} nDPI {name}, linecap {got}",
                    trace.file_name().unwrap().to_string_lossy()
                );
                *confusion.entry((name, got)).or_default() += 1;
            }
        }
    }
    eprintln!("nDPI flows {ndpi_total}, of protocols the rules cover {judged}, agreed {agreed}");
    eprintln!("agreed by method: {by_method:?}");
    eprintln!("nDPI protocols not covered: {not_covered:?}");
    eprintln!("| nDPI | linecap | flows |\n|---|---|---:|");
    for ((n, l), c) in &confusion {
        eprintln!("| {n} | {l} | {c} |");
    }
    assert!(
        judged >= 100,
        "only {judged} nDPI flows judged: did ndpiReader run?"
    );
    let share = f64::from(agreed) / f64::from(judged);
    assert!(
        share >= 0.95,
        "labels agree with nDPI on {agreed}/{judged} = {:.1} % (< 95 %)",
        share * 100.0
    );
}

/// DuckDB reads the label columns of the Parquet flow logs: the HTTP
/// flows of zeek__wikipedia.pcap are labelled by payload, and the raw
/// first bytes of their initiators are the request's "GET ".
#[test]
fn parquet_carries_the_label_and_the_raw_first_bytes() {
    common::require_duckdb();
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("flowlogs");
    let out = run(linecap()
        .arg("flows")
        .arg(common::shared("traces/zeek__wikipedia.pcap"))
        .args(["--format", "none", "--parquet"])
        .arg(&logs)
        .args(NO_TIMEOUTS));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let query = format!(
        "import duckdb\n\
         r = duckdb.connect().execute(\"SELECT count(*), count(*) FILTER (WHERE first_bytes = 'GET '::BLOB), \
         min(first_len), count(*) FILTER (WHERE rev_first_len > 0) FROM read_parquet('{}/**/*.parquet', \
         hive_partitioning = true) WHERE app = 'HTTP' AND app_method = 'payload'\").fetchone()\n\
         print(*r)",
        logs.display()
    );
    let text = run_ok(Command::new("python3").args(["-c", &query]));
    let v: Vec<u64> = text
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    assert!(v[0] > 0, "no HTTP flows labelled by payload: {text}");
    assert_eq!(v[1], v[0], "every HTTP flow's initiator sent GET: {text}");
    assert!(v[2] > 4, "request sizes: {text}");
    assert!(v[3] > 0, "responses' first payloads recorded: {text}");
}

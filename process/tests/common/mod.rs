//! Shared test material: capture series made from the ../shared traces.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};

use linecap_process::run::{Options, Report, run};
use linecap_process::{BUILTIN, DynProcessor, Row, Settings, builtin, output, sorted};
use linecap_reader::read::{CaptureReader, Packet};
use linecap_wire::batch::{BatchMeta, batch_flags};
use linecap_wire::erf;
use linecap_wire::flow::{Parsed, parse_frame, symmetric_hash};
use linecap_writer::series::{FileSeries, SeriesConfig};

/// `../shared/REL` (must exist: the test fails, not skips, without it).
pub fn shared(rel: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared")
        .join(rel);
    assert!(
        p.exists(),
        "{} is missing (the shared test material)",
        p.display()
    );
    p
}

/// Every trace in ../shared/traces.
pub fn traces() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(shared("traces"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

/// Write `traces` (one after the other) as a capture directory under `dir`:
/// `queues` queue series (frames spread by symmetric flow hash, as RSS would),
/// one file per `per_file` frames of a queue, with manifests. Returns the
/// number of frames written.
pub fn capture(traces: &[PathBuf], dir: &Path, queues: u32, per_file: usize) -> u64 {
    let mut series: Vec<FileSeries> = (0..queues)
        .map(|q| {
            let mut c = SeriesConfig::new(dir.join(format!("q{q:02}")), q);
            c.sync_on_close = false;
            c.capture = Some(serde_json::json!({"job": "main", "anonymized": null}));
            FileSeries::new(c).unwrap()
        })
        .collect();
    let mut pending: Vec<Vec<(u64, u32, Vec<u8>)>> = vec![Vec::new(); queues as usize];
    let mut seqs = vec![0u64; queues as usize];
    let flush =
        |q: usize, batch: &mut Vec<(u64, u32, Vec<u8>)>, s: &mut FileSeries, seq: &mut u64| {
            if batch.is_empty() {
                return;
            }
            let mut recs = Vec::new();
            let mut meta = BatchMeta {
                queue: q as u32,
                seq: *seq,
                flags: batch_flags::ROTATE_BEFORE,
                first_ts_ns: batch[0].0,
                ..BatchMeta::default()
            };
            for (ts, wire, data) in batch.drain(..) {
                let mut r = vec![0u8; erf::ETH_RECORD_OVERHEAD + data.len()];
                erf::write_eth_header(&mut r, ts, 0, 0, data.len(), wire, 0);
                r[erf::ETH_RECORD_OVERHEAD..].copy_from_slice(&data);
                recs.extend_from_slice(&r);
                meta.packets += 1;
                meta.bytes_wire += u64::from(wire);
                meta.bytes_captured += data.len() as u64;
                meta.last_ts_ns = meta.last_ts_ns.max(ts);
            }
            meta.records_len = recs.len() as u64;
            s.write_batch(&meta, &recs).unwrap();
            *seq += 1;
        };
    let mut n = 0;
    let mut pkt = Packet::default();
    for t in traces {
        let mut r = CaptureReader::open(t).unwrap();
        let mut i = 0u64;
        while r.next(&mut pkt).unwrap() {
            let q = match parse_frame(&pkt.data) {
                Parsed::Ip(info) => symmetric_hash(&info.key) % queues,
                _ => (i % u64::from(queues)) as u32,
            } as usize;
            i += 1;
            n += 1;
            pending[q].push((pkt.ts_ns, pkt.wire_len, pkt.data.clone()));
            if pending[q].len() >= per_file {
                flush(q, &mut pending[q], &mut series[q], &mut seqs[q]);
            }
        }
    }
    for q in 0..queues as usize {
        flush(q, &mut pending[q], &mut series[q], &mut seqs[q]);
        series[q].close_current().unwrap();
    }
    n
}

/// Copy the series files (and manifests) of `from` with `pick(seq)` into `to`.
pub fn copy_files(from: &Path, to: &Path, pick: impl Fn(u64) -> bool) {
    for q in fs::read_dir(from).unwrap() {
        let q = q.unwrap().path();
        let dst = to.join(q.file_name().unwrap());
        fs::create_dir_all(&dst).unwrap();
        for f in fs::read_dir(&q).unwrap() {
            let f = f.unwrap().path();
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            let (_, seq) = linecap_writer::names::parse(&name).unwrap();
            if pick(seq) && !dst.join(&name).exists() {
                fs::copy(&f, dst.join(&name)).unwrap();
            }
        }
    }
}

/// The built-in processors.
pub fn processors(s: &Settings) -> Vec<Box<dyn DynProcessor>> {
    BUILTIN.iter().map(|n| builtin(n, s).unwrap()).collect()
}

/// Run the built-ins.
pub fn process(inputs: &[&Path], state: &Path, out: &Path, threads: usize, s: &Settings) -> Report {
    let r = run(&Options {
        inputs: inputs.iter().map(|p| p.to_path_buf()).collect(),
        state: state.into(),
        out: out.into(),
        processors: processors(s),
        threads,
        crash_at_step: None,
    })
    .unwrap();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    r
}

/// Every table of an output tree (written and open rows), sorted, plus the summary.
#[derive(Debug, PartialEq)]
pub struct Tables {
    pub written: Vec<(String, Vec<Row>)>,
    pub open: Vec<(String, Vec<Row>)>,
    pub summary: serde_json::Value,
}

pub fn tables(out: &Path, s: &Settings) -> Tables {
    let mut written = Vec::new();
    let mut open = Vec::new();
    for p in processors(s) {
        written.push((
            p.name().to_string(),
            sorted(output::read_rows(&out.join(p.name()), p.columns()).unwrap()),
        ));
        open.push((
            p.name().to_string(),
            sorted(
                read_one(
                    &out.join("open").join(format!("{}.parquet", p.name())),
                    p.as_ref(),
                )
                .unwrap(),
            ),
        ));
    }
    let summary = serde_json::from_slice(&fs::read(out.join("summary.json")).unwrap()).unwrap();
    Tables {
        written,
        open,
        summary,
    }
}

fn read_one(path: &Path, p: &dyn DynProcessor) -> std::io::Result<Vec<Row>> {
    let d = tempfile::tempdir()?;
    fs::copy(path, d.path().join("x.parquet"))?;
    output::read_rows(d.path(), p.columns())
}

/// Timeouts longer than any trace.
pub fn no_timeouts() -> Settings {
    Settings {
        idle_ns: u64::MAX / 4,
        active_ns: u64::MAX / 4,
        ..Settings::default()
    }
}

/// Short timeouts, so that flows do end inside the traces.
pub fn short_timeouts() -> Settings {
    Settings {
        idle_ns: 500_000_000,
        active_ns: 2_000_000_000,
        ..Settings::default()
    }
}

//! `writer` suite: what one writer thread takes, in MB/s of ERF, with LZ4
//! frames and plain, next to the `lz4` CLI on the same bytes and to `fio`
//! (or `dd oflag=direct`) writing sequentially to the same directory.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use linecap_reader::read::{CaptureReader, Packet};
use linecap_wire::batch::BatchMeta;
use linecap_writer::series::{FileSeries, SeriesConfig};

use crate::{Opts, median};

/// ERF records of every trace in ../shared/traces, as the worker writes them.
fn corpus() -> Vec<u8> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/traces");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (the writer bench uses ../shared/traces)",
                dir.display()
            )
        })
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut out = Vec::new();
    let mut p = Packet::default();
    for f in files {
        let Ok(mut r) = CaptureReader::open(&f) else {
            continue;
        };
        while let Ok(true) = r.next(&mut p) {
            let mut h = [0u8; linecap_wire::erf::ETH_RECORD_OVERHEAD];
            linecap_wire::erf::write_eth_header(&mut h, p.ts_ns, 0, 0, p.data.len(), p.wire_len, 0);
            out.extend_from_slice(&h);
            out.extend_from_slice(&p.data);
        }
    }
    out
}

/// Cut `corpus` into batches of up to 1 MiB on record boundaries.
fn batches(corpus: &[u8]) -> Vec<(BatchMeta, Vec<u8>)> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let mut meta = BatchMeta::default();
    let mut off = 0;
    while off < corpus.len() {
        let rlen = u16::from_be_bytes([corpus[off + 10], corpus[off + 11]]) as usize;
        if cur.len() + rlen > 1 << 20 {
            meta.records_len = cur.len() as u64;
            out.push((meta, std::mem::take(&mut cur)));
            meta = BatchMeta::default();
        }
        cur.extend_from_slice(&corpus[off..off + rlen]);
        meta.packets += 1;
        off += rlen;
    }
    meta.records_len = cur.len() as u64;
    out.push((meta, cur));
    out
}

pub fn suite(o: &Opts) -> Vec<serde_json::Value> {
    let seconds = o.seconds;
    let corpus = corpus();
    let batches = batches(&corpus);
    let tmp = std::env::temp_dir().join(format!("linecap-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    println!(
        "\nwriter: one thread, 1 MiB batches of the ERF records of the 40 shared traces ({} KiB), repeated; output on {}",
        corpus.len() >> 10,
        tmp.display()
    );
    println!("{:<28} {:>10} {:>12}", "writer", "MB/s in", "ratio");
    let mut out = Vec::new();
    for compress in [true, false] {
        let mut rates = Vec::new();
        let mut ratio = 1.0;
        for run in 0..3 {
            let dir = tmp.join(format!("w{compress}{run}"));
            let mut s = FileSeries::new(SeriesConfig {
                compress,
                rotate_bytes: Some(256 << 20),
                sync_on_close: false,
                ..SeriesConfig::new(dir.clone(), 0)
            })
            .unwrap();
            let start = Instant::now();
            let mut bytes = 0u64;
            'outer: loop {
                for (m, r) in &batches {
                    s.write_batch(m, r).unwrap();
                    bytes += r.len() as u64;
                    if start.elapsed().as_secs_f64() > seconds / 3.0 {
                        break 'outer;
                    }
                }
            }
            s.close_current().unwrap();
            let el = start.elapsed().as_secs_f64();
            rates.push(bytes as f64 / el / 1e6);
            ratio = s.counters().bytes_erf as f64 / s.counters().bytes_file as f64;
            let _ = std::fs::remove_dir_all(&dir);
        }
        let name = if compress {
            "linecap LZ4 frames"
        } else {
            "linecap plain ERF"
        };
        let mbps = median(rates);
        println!("{name:<28} {mbps:>10.0} {ratio:>12.2}");
        out.push(serde_json::json!({
            "suite": "writer", "tool": name, "mb_per_s_median_of_3": mbps, "ratio": ratio,
        }));
    }
    // The lz4 CLI on the same bytes (about 64 MiB of the repeated corpus).
    let input = tmp.join("corpus.erf");
    let reps = (64 << 20) / corpus.len().max(1) + 1;
    std::fs::write(&input, corpus.repeat(reps)).unwrap();
    let size = std::fs::metadata(&input).unwrap().len() as f64;
    let mut rates = Vec::new();
    let mut ratio = 0.0;
    for _ in 0..3 {
        let start = Instant::now();
        let st = Command::new("lz4")
            .args(["-1", "-q", "-f"])
            .arg(&input)
            .arg(tmp.join("corpus.erf.lz4"))
            .status();
        let el = start.elapsed().as_secs_f64();
        match st {
            Ok(s) if s.success() => {
                rates.push(size / el / 1e6);
                ratio = size / std::fs::metadata(tmp.join("corpus.erf.lz4")).unwrap().len() as f64;
            }
            _ => {
                println!("lz4 -1 (CLI): not available (apt-get install lz4)");
                break;
            }
        }
    }
    if !rates.is_empty() {
        let mbps = median(rates);
        println!(
            "{:<28} {mbps:>10.0} {ratio:>12.2}",
            "lz4 -1 (CLI, same bytes)"
        );
        out.push(serde_json::json!({
            "suite": "writer", "tool": "lz4 -1", "mb_per_s_median_of_3": mbps, "ratio": ratio,
        }));
    }
    let _ = std::fs::remove_file(&input);
    let _ = std::fs::remove_file(tmp.join("corpus.erf.lz4"));
    // Sequential writes of 1 MiB blocks to the same directory, as the plain
    // writer does: buffered (the writer's own mode: page cache, no sync)
    // and O_DIRECT (what the disk itself takes).
    for direct in [false, true] {
        let (tool, mbps) = match fio(&tmp, direct, seconds / 3.0) {
            Some(v) => (
                format!("fio seq write 1M{}", if direct { " direct" } else { "" }),
                v,
            ),
            None => match dd(&tmp, direct) {
                Some(v) => (
                    format!("dd bs=1M{}", if direct { " oflag=direct" } else { "" }),
                    v,
                ),
                None => {
                    println!("fio/dd: not available (apt-get install fio)");
                    continue;
                }
            },
        };
        println!("{tool:<28} {mbps:>10.0} {:>12}", "-");
        out.push(serde_json::json!({
            "suite": "writer", "tool": tool, "mb_per_s": mbps, "direct": direct,
        }));
    }
    let _ = std::fs::remove_dir_all(&tmp);
    out
}

/// `fio` sequential write of 1 MiB blocks for `seconds` in `dir`: MB/s.
fn fio(dir: &Path, direct: bool, seconds: f64) -> Option<f64> {
    let ms = (seconds * 1000.0).max(300.0) as u64;
    let o = Command::new("fio")
        .args([
            "--name=seqwrite",
            "--rw=write",
            "--bs=1M",
            "--size=512M",
            "--ioengine=psync",
        ])
        .arg(format!("--direct={}", u8::from(direct)))
        .arg(format!("--runtime={ms}ms"))
        .args(["--time_based", "--output-format=json"])
        .arg(format!("--directory={}", dir.display()))
        .output()
        .ok()?;
    let _ = std::fs::remove_file(dir.join("seqwrite.0.0"));
    if !o.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
    v["jobs"][0]["write"]["bw_bytes"].as_f64().map(|b| b / 1e6)
}

/// `dd` of 256 MiB in 1 MiB blocks into `dir`: MB/s.
fn dd(dir: &Path, direct: bool) -> Option<f64> {
    let f = dir.join("dd.bin");
    let start = Instant::now();
    let mut c = Command::new("dd");
    c.args(["if=/dev/zero", "bs=1M", "count=256", "status=none"])
        .arg(format!("of={}", f.display()));
    if direct {
        c.arg("oflag=direct");
    }
    let ok = c.status().ok()?.success();
    let el = start.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&f);
    ok.then(|| 256.0 * 1048576.0 / el / 1e6)
}

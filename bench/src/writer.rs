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

/// Cut `corpus`, repeated to 16 MiB or more, into batches of up to 1 MiB on
/// record boundaries: full batches, as a busy worker hands over (the corpus
/// alone, 1.4 MiB, would give one batch in two of a third of that).
fn batches(corpus: &[u8]) -> Vec<(BatchMeta, Vec<u8>)> {
    let corpus = &corpus.repeat((16 << 20) / corpus.len().max(1) + 1)[..];
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

/// One writer thread on `batches` for `seconds` into a new series in `dir`,
/// files of 256 MiB synced at completion (the capture's default), the last
/// one's sync timed too: (MB/s of ERF in, ERF bytes ÷ file bytes, files
/// whose index the index thread gave up).
fn run_writer(
    dir: &Path,
    batches: &[(BatchMeta, Vec<u8>)],
    compress: bool,
    direct_io: bool,
    seconds: f64,
) -> (f64, f64, u64) {
    let mut s = FileSeries::new(SeriesConfig {
        compress,
        direct_io,
        rotate_bytes: Some(256 << 20),
        ..SeriesConfig::new(dir.to_path_buf(), 0)
    })
    .unwrap();
    let start = Instant::now();
    let mut bytes = 0u64;
    'outer: loop {
        for (m, r) in batches {
            s.write_batch(m, r).unwrap();
            bytes += r.len() as u64;
            if start.elapsed().as_secs_f64() > seconds {
                break 'outer;
            }
        }
    }
    s.close_current().unwrap();
    let el = start.elapsed().as_secs_f64();
    // Not timed: the index thread's last index. A figure bought by indexes
    // given up (the thread fell behind) would not be the writer's.
    s.finish().unwrap();
    let c = *s.counters();
    warn_if_index_skipped(&c);
    let ratio = c.bytes_erf as f64 / c.bytes_file as f64;
    drop(s);
    let _ = std::fs::remove_dir_all(dir);
    (bytes as f64 / el / 1e6, ratio, c.index_skipped)
}

/// A figure bought by indexes given up (the thread fell behind) would not
/// be the writer's: say so.
fn warn_if_index_skipped(c: &linecap_writer::series::SeriesCounters) {
    if c.index_skipped > 0 {
        println!(
            "warning: the index thread fell behind this run: {} of {} files without an index \
             (the MB/s below is not the writer's with indexes)",
            c.index_skipped,
            c.index_skipped + c.index_written
        );
    }
}

/// [`run_writer`] with plain files and `--direct-io` the way `linecap
/// capture` feeds its writer: from the slots of a ring that a second thread
/// (in the worker's place) keeps full, copying each batch in as the worker
/// writes its records. With `in_place`, as `linecap capture` writes
/// (`linecap/src/capture/writer.rs`): each slot whose records sit at the
/// file's phase is written from the slot, the index thread reading it there
/// (the slot is released when both are done), and the phase published for
/// the next slots; without, each batch is copied as by `write_batch`, for
/// comparison. Also returns the batches written in place and those copied.
///
/// Threads are placed as `linecap capture --cores N --housekeeping-cores 0`
/// places them on a 2-core probe: the filling thread (the worker) on the
/// last core, the writer and the index thread it starts on core 0, shared.
fn run_writer_ring(
    dir: &Path,
    batches: &[(BatchMeta, Vec<u8>)],
    seconds: f64,
    in_place: bool,
) -> (f64, u64, (u64, u64), bool) {
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let worker_core = cores.last().copied().filter(|_| cores.len() >= 2);
    std::thread::scope(|sc| {
        sc.spawn(|| {
            if worker_core.is_some() {
                core_affinity::set_for_current(core_affinity::CoreId { id: 0 });
            }
            ring_writer_pinned(dir, batches, seconds, in_place, worker_core)
        })
        .join()
        .unwrap()
    })
}

fn ring_writer_pinned(
    dir: &Path,
    batches: &[(BatchMeta, Vec<u8>)],
    seconds: f64,
    in_place: bool,
    worker_core: Option<core_affinity::CoreId>,
) -> (f64, u64, (u64, u64), bool) {
    use linecap_dataplane::ring::{HugePages, RingConfig, ring};
    use std::sync::atomic::{AtomicBool, Ordering};
    let mut s = FileSeries::new(SeriesConfig {
        compress: false,
        direct_io: true,
        rotate_bytes: Some(256 << 20),
        ..SeriesConfig::new(dir.to_path_buf(), 0)
    })
    .unwrap();
    let (mut p, mut c) = ring(RingConfig {
        slots: 16,
        batch_bytes: 1 << 20,
        hugepages: HugePages::Try,
    })
    .unwrap();
    let huge = c.hugepages();
    let stop = AtomicBool::new(false);
    let mut bytes = 0u64;
    let start = Instant::now();
    std::thread::scope(|sc| {
        sc.spawn(|| {
            if let Some(c) = worker_core {
                core_affinity::set_for_current(c);
            }
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                if !p.acquire() {
                    std::thread::sleep(std::time::Duration::from_micros(20));
                    continue;
                }
                let (m, r) = &batches[i % batches.len()];
                let (meta, data) = p.slot_mut();
                data[..r.len()].copy_from_slice(r);
                *meta = *m;
                p.commit();
                i += 1;
            }
        });
        while start.elapsed().as_secs_f64() <= seconds {
            let Some(b) = c.peek_mut() else {
                std::thread::yield_now();
                continue;
            };
            let meta = *b.meta;
            let plan = if in_place {
                s.prepare_in_place(&meta, b.area, b.at)
            } else {
                None
            };
            match plan {
                Some(plan) => {
                    let lent: linecap_writer::indexer::Lent = c.lend().unwrap();
                    s.write_in_place(&meta, plan, &lent).unwrap();
                }
                None => s.write_batch(&meta, c.peek().unwrap().records).unwrap(),
            }
            if let Some(phase) = s.next_phase().filter(|_| in_place) {
                c.publish_phase(phase, s.bytes_to_rotation());
            }
            c.release();
            bytes += meta.records_len;
        }
        stop.store(true, Ordering::Relaxed);
    });
    s.close_current().unwrap();
    let el = start.elapsed().as_secs_f64();
    s.finish().unwrap();
    let c = *s.counters();
    warn_if_index_skipped(&c);
    let counts = (c.direct_in_place, c.direct_copied);
    drop(s);
    let _ = std::fs::remove_dir_all(dir);
    (bytes as f64 / el / 1e6, c.index_skipped, counts, huge)
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
    println!(
        "ring rows: a filling thread (the worker) on the last core, the writer and its index \
         thread on core 0, as `linecap capture --housekeeping-cores 0` places them"
    );
    println!("{:<36} {:>10} {:>8}", "writer", "MB/s in", "ratio");
    let mut out = Vec::new();
    // LZ4: what one thread compresses (CPU-bound), next to the lz4 CLI.
    let mut rates = Vec::new();
    let mut ratio = 1.0;
    let mut skipped = 0;
    for run in 0..3 {
        let (r, q, k) = run_writer(
            &tmp.join(format!("lz4-{run}")),
            &batches,
            true,
            false,
            seconds / 3.0,
        );
        rates.push(r);
        ratio = q;
        skipped += k;
    }
    let mbps = median(rates);
    println!("{:<36} {mbps:>10.0} {ratio:>8.2}", "linecap LZ4 frames");
    out.push(serde_json::json!({
        "suite": "writer", "tool": "linecap LZ4 frames", "mb_per_s_median_of_3": mbps, "ratio": ratio,
        "direct_io": false, "index_skipped": skipped,
    }));
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
            "{:<36} {mbps:>10.0} {ratio:>8.2}",
            "lz4 -1 (CLI, same bytes)"
        );
        out.push(serde_json::json!({
            "suite": "writer", "tool": "lz4 -1", "mb_per_s_median_of_3": mbps, "ratio": ratio,
        }));
    }
    let _ = std::fs::remove_file(&input);
    let _ = std::fs::remove_file(tmp.join("corpus.erf.lz4"));
    // The index thread's work alone (parse each record, key its flow, add
    // it to the file's flow table): it runs beside the writer, on the other
    // core of a 2-core machine, and must keep up with the disk.
    let mut rates = Vec::new();
    for _ in 0..3 {
        let mut b = linecap_writer::indexer::IndexBuilder::new();
        let start = Instant::now();
        let mut bytes = 0u64;
        let mut records = 0u64;
        let mut file = 0u64;
        while start.elapsed().as_secs_f64() < (seconds / 9.0).max(0.2) {
            for (_, r) in &batches {
                records += u64::from(b.add_block(file, r.len() as u32, r));
                file += r.len() as u64;
            }
            // A file's worth: finish it, as the thread does at rotation.
            if file >= 256 << 20 {
                std::hint::black_box(b.finish(0, file));
                bytes += file;
                file = 0;
            }
        }
        bytes += file;
        let el = start.elapsed().as_secs_f64();
        rates.push((bytes as f64 / el / 1e6, records as f64 / el / 1e6));
    }
    rates.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (mbps, mrps) = rates[1];
    println!(
        "{:<36} {mbps:>10.0}        -   ({mrps:.2} M records/s)",
        "index builder alone"
    );
    out.push(serde_json::json!({
        "suite": "writer", "tool": "index builder alone", "mb_per_s_median_of_3": mbps,
        "m_records_per_s": mrps,
    }));
    // Compression off: what the disk takes. The writer's two modes and fio
    // (1 MiB sequential writes to the same directory), interleaved in short
    // rounds (one per second of --seconds, 3 to 12 of them) so that the members of
    // a round see the same disk: on this project's VMs the disk's rate
    // drifts 10-15 % from minute to minute, more than most changes. The goal
    // ratio is the median of the per-round ratios. fio: buffered with a
    // final fsync and O_DIRECT into new blocks (a file that grows, as the
    // writer's do), and O_DIRECT over a preallocated 512 MiB file rewritten
    // in turn (fio's defaults; the reference figure).
    // Writer rows: Some(0) buffered, Some(1) O_DIRECT from a Vec (each
    // batch copied into the aligned staging buffer), Some(2) O_DIRECT from
    // ring slots filled by another thread, as `linecap capture` writes (in
    // place, no copy), Some(3) the same ring with each batch copied.
    let configs: [(&str, Option<u8>, bool, bool); 7] = [
        ("linecap plain ERF", Some(0), false, false),
        ("linecap plain ERF, O_DIRECT", Some(1), false, false),
        ("linecap O_DIRECT, ring, in place", Some(2), false, false),
        ("linecap O_DIRECT, ring, copied", Some(3), false, false),
        ("fio 1M, buffered + fsync", None, false, true),
        ("fio 1M, direct, new blocks", None, true, true),
        ("fio 1M, direct, 512M rewritten", None, true, false),
    ];
    let rounds = (seconds.round() as usize).clamp(3, 12);
    let each = seconds / rounds as f64;
    // Per config, per round (None: that run gave no figure).
    let mut per_round: Vec<Vec<Option<f64>>> = vec![Vec::new(); configs.len()];
    let mut skipped = vec![0u64; configs.len()];
    let mut in_place = (0u64, 0u64);
    let mut ring_huge = false;
    let mut dd_fallback = false;
    for run in 0..rounds {
        for (i, (_, writer_direct, direct, fresh)) in configs.iter().enumerate() {
            let at = tmp.join(format!("plain-{i}-{run}"));
            let r = match writer_direct {
                Some(m @ (2 | 3)) => {
                    let (r, k, (w, c), huge) = run_writer_ring(&at, &batches, each, *m == 2);
                    ring_huge = huge;
                    skipped[i] += k;
                    if *m == 2 {
                        in_place = (in_place.0 + w, in_place.1 + c);
                    }
                    Some(r)
                }
                Some(d) => {
                    let (r, _, k) = run_writer(&at, &batches, false, *d == 1, each);
                    skipped[i] += k;
                    Some(r)
                }
                None => fio(&tmp, *direct, *fresh, each).or_else(|| {
                    dd_fallback = true;
                    (*fresh).then(|| dd(&tmp, *direct)).flatten()
                }),
            };
            per_round[i].push(r);
        }
    }
    if dd_fallback {
        println!(
            "fio: not available (apt-get install fio); dd bs=1M count=256 stands in where it can"
        );
    }
    let mut fig = Vec::new();
    for (((name, writer_direct, direct, fresh), r), skipped) in
        configs.iter().zip(per_round.iter()).zip(skipped)
    {
        let r: Vec<f64> = r.iter().flatten().copied().collect();
        if r.is_empty() {
            fig.push(None);
            continue;
        }
        let got = r.len();
        let mbps = median(r);
        println!(
            "{name:<36} {mbps:>10.0} {:>8}",
            if writer_direct.is_some() { "1.00" } else { "-" }
        );
        fig.push(Some(mbps));
        out.push(serde_json::json!({
            "suite": "writer", "tool": name, "mb_per_s_median": mbps, "rounds": got,
            "direct": writer_direct.map_or(*direct, |d| d > 0), "new_blocks": *fresh || writer_direct.is_some(),
            "from_ring_slots": *writer_direct == Some(2),
            "synced": writer_direct.is_some() || !direct,
            // Files whose index the thread gave up (writer rows): a figure
            // with any is not the writer's with indexes.
            "index_skipped": writer_direct.map(|_| skipped),
        }));
    }
    println!(
        "ring, in place: {} batches written from their slot, {} copied (placed at another phase, \
         or the index thread busy with a file's completion); the ring on {}",
        in_place.0,
        in_place.1,
        if ring_huge {
            "reserved 2 MiB hugepages"
        } else {
            "normal pages advised to be transparent hugepages (no vm.nr_hugepages reserved; \
             AnonHugePages in /proc/meminfo says whether the kernel gave them)"
        }
    );
    out.push(serde_json::json!({
        "suite": "writer", "tool": "linecap O_DIRECT, ring, in place",
        "batches_in_place": in_place.0, "batches_copied": in_place.1, "ring_hugepages": ring_huge,
    }));
    // issue 19's goal row: the writer with compression off ÷ fio --direct=1,
    // against both fio figures: the median of the ratios within a round,
    // with the ratio of the medians beside it. `linecap capture` with
    // `--direct-io` writes as "ring, in place"; the others are beside it.
    for (w, wname) in [
        (0, "buffered"),
        (1, "O_DIRECT"),
        (2, "O_DIRECT, ring, in place"),
        (3, "O_DIRECT, ring, copied"),
    ] {
        for (f, fname) in [(5, "direct, new blocks"), (6, "direct, 512M rewritten")] {
            let pairs: Vec<f64> = per_round[w]
                .iter()
                .zip(&per_round[f])
                .filter_map(|(a, b)| Some((*a)? / (*b)?))
                .collect();
            if let (Some(a), Some(b), false) = (fig[w], fig[f], pairs.is_empty()) {
                let n = pairs.len();
                let (lo, hi) = pairs
                    .iter()
                    .fold((f64::MAX, f64::MIN), |(l, h), &x| (l.min(x), h.max(x)));
                let r = median(pairs);
                println!(
                    "goal: writer {wname} / fio {fname}: {r:.2}x, median of {n} rounds \
                     ({lo:.2}-{hi:.2}; medians {a:.0} / {b:.0} MB/s = {:.2}x; goal >= 0.9x)",
                    a / b
                );
                out.push(serde_json::json!({
                    "suite": "writer", "goal": "plain writer / fio direct", "writer": wname,
                    "fio": fname, "ratio": r, "rounds": n, "ratio_min": lo, "ratio_max": hi,
                    "ratio_of_medians": a / b, "mb_per_s": a, "fio_mb_per_s": b, "goal_ratio": 0.9,
                }));
            }
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
    out
}

/// `fio` sequential write of 1 MiB blocks for `seconds` in `dir`: MB/s.
/// `fresh`: into a file of up to 16 GiB that grows as it is written (no
/// preallocation), else fio's default, a preallocated 512 MiB file rewritten.
fn fio(dir: &Path, direct: bool, fresh: bool, seconds: f64) -> Option<f64> {
    let ms = (seconds * 1000.0).max(300.0) as u64;
    let o = Command::new("fio")
        .args([
            "--name=seqwrite",
            "--rw=write",
            "--bs=1M",
            "--ioengine=psync",
        ])
        .args(if fresh {
            ["--size=16G", "--fallocate=none"]
        } else {
            ["--size=512M", "--fallocate=native"]
        })
        .arg(format!("--direct={}", u8::from(direct)))
        .args((!direct).then_some("--end_fsync=1"))
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

/// `dd` of 256 MiB in 1 MiB blocks into `dir` (O_DIRECT, or synced at the end): MB/s.
fn dd(dir: &Path, direct: bool) -> Option<f64> {
    let f = dir.join("dd.bin");
    let start = Instant::now();
    let mut c = Command::new("dd");
    c.args(["if=/dev/zero", "bs=1M", "count=256", "status=none"])
        .arg(format!("of={}", f.display()));
    c.arg(if direct {
        "oflag=direct"
    } else {
        "conv=fdatasync"
    });
    let ok = c.status().ok()?.success();
    let el = start.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&f);
    ok.then(|| 256.0 * 1048576.0 / el / 1e6)
}

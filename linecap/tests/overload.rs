//! Overload (issue 9): a writer slower than the capture. Ring-full drops
//! are counted per queue, carried in the ERF `lctr` of the following
//! records and in the manifests, the accounting stays exact, and an
//! overloaded queue does not take the others down with it.
//!
//! The slow writer is the hidden fault-injection flag
//! `--fault-writer-delay-ms` (the writer sleeps after every batch, as on a
//! slow disk); the sources are synthetic, i.e. live (they drop when the ring
//! is full instead of waiting).

mod common;

use common::*;
use std::path::Path;
use std::process::Command;

/// (records, Σ lctr, records with lctr > 0) of every capture file below
/// `dir`, decompressed by the lz4 CLI and walked as ERF.
fn lctr_in_files(dir: &Path) -> (u64, u64, u64) {
    let (mut recs, mut sum, mut marked) = (0, 0, 0);
    for f in files_with(dir, ".erf.lz4") {
        let out = Command::new("lz4").arg("-dc").arg(&f).output().unwrap();
        assert!(out.status.success(), "lz4 -dc {}: {out:?}", f.display());
        let b = out.stdout;
        let mut off = 0;
        while off + 16 <= b.len() {
            let rlen = u16::from_be_bytes([b[off + 10], b[off + 11]]) as usize;
            let lctr = u16::from_be_bytes([b[off + 12], b[off + 13]]) as u64;
            assert!(rlen >= 16, "bad record in {}", f.display());
            recs += 1;
            sum += lctr;
            marked += u64::from(lctr > 0);
            off += rlen;
        }
        assert_eq!(off, b.len(), "{} ends inside a record", f.display());
    }
    (recs, sum, marked)
}

fn manifest_lost(dir: &Path) -> u64 {
    files_with(dir, ".json")
        .iter()
        .map(|p| {
            let m: serde_json::Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
            m["lost_packets"].as_u64().unwrap()
        })
        .sum()
}

#[test]
fn a_slow_writer_shows_ring_full_drops_in_the_counters_and_in_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let cap = dir.path().join("cap");
    let report = dir.path().join("r.json");
    run_ok(
        linecap()
            .args(["capture", "--source", "synth:512:100:300000", "--out"])
            .arg(&cap)
            .args(["--ring-slots", "2", "--batch-bytes", "64K", "--no-metrics"])
            .args(["--fault-writer-delay-ms", "20", "--report-json"])
            .arg(&report),
    );
    let r = common::report(&report);
    assert_balanced(&r);
    let q = &r["queues"][0];
    let ring_full = q["dropped"]["ring_full"].as_u64().unwrap();
    let written = q["written"].as_u64().unwrap();
    let pending = q["worker"]["lctr_pending"].as_u64().unwrap();
    assert!(ring_full > 0, "the writer was not slow enough: {q:#}");
    assert_eq!(written + ring_full, 300_000);
    // The loss is in the data: the lctr of the records that follow each gap
    // add up to every drop but those after the last record.
    let (recs, lctr_sum, marked) = lctr_in_files(&cap);
    assert_eq!(recs, written);
    assert!(marked > 0);
    assert_eq!(lctr_sum + pending, ring_full, "{q:#}");
    // ... and in the manifests (loss before each file's batches).
    assert_eq!(manifest_lost(&cap) + pending, ring_full);
}

#[test]
fn an_overloaded_queue_does_not_affect_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let cap = dir.path().join("cap");
    let report = dir.path().join("r.json");
    // Queue 0 floods 200 000 frames as fast as it can; queue 1 sends 2 000
    // at 2 000/s. One slow writer thread each.
    run_ok(
        linecap()
            .args(["capture", "--source", "synth:512:100:200000"])
            .args(["--source", "synth:512:10:2000:2000", "--out"])
            .arg(&cap)
            .args(["--ring-slots", "4", "--batch-bytes", "64K", "--no-metrics"])
            .args(["--writer-threads", "2", "--fault-writer-delay-ms", "20"])
            .arg("--report-json")
            .arg(&report),
    );
    let r = common::report(&report);
    assert_balanced(&r);
    let q0 = &r["queues"][0];
    let q1 = &r["queues"][1];
    assert!(q0["dropped"]["ring_full"].as_u64().unwrap() > 0, "{q0:#}");
    assert_eq!(q1["dropped"]["ring_full"].as_u64().unwrap(), 0, "{q1:#}");
    assert_eq!(q1["written"].as_u64().unwrap(), 2000, "{q1:#}");
    let (recs, lctr_sum, _) = lctr_in_files(&cap.join("q01"));
    assert_eq!((recs, lctr_sum), (2000, 0));
}

//! Outside tools judge the files as written: tshark and capinfos open
//! `.erf.lz4` directly, `lz4 -t` validates them, and libtrace's tracestats
//! counts the same packets in the decompressed ERF.

mod common;

use common::*;
use std::process::{Command, Stdio};

fn capture_trace(trace: &str, out: &std::path::Path, extra: &[&str]) -> serde_json::Value {
    let report = out.join("report.json");
    run_ok(
        linecap()
            .arg("capture")
            .arg("--source")
            .arg(format!(
                "file:{}",
                shared(&format!("traces/{trace}")).display()
            ))
            .args(extra)
            .arg("--out")
            .arg(out.join("cap"))
            .arg("--report-json")
            .arg(&report),
    );
    let r = report_of(&report);
    assert_balanced(&r);
    r
}

fn report_of(p: &std::path::Path) -> serde_json::Value {
    common::report(p)
}

#[test]
fn tshark_capinfos_lz4_and_tracestats_accept_the_files_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let r = capture_trace(
        "zeek__http_bro.org.pcap",
        dir.path(),
        &[
            "--spread",
            "2",
            "--rotate-bytes",
            "64K",
            "--batch-bytes",
            "64K",
        ],
    );
    let files = files_with(&dir.path().join("cap"), ".erf.lz4");
    assert!(
        files.len() >= 4,
        "rotation should give several files: {files:?}"
    );
    let mut total = 0u64;
    for f in &files {
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(format!("{}.json", f.display())).unwrap())
                .unwrap();
        let want = manifest["packets"].as_u64().unwrap();
        total += want;
        // tshark reads the compressed ERF as it is.
        let frames = tshark_frames(f);
        assert_eq!(frames.len() as u64, want, "{}", f.display());
        // capinfos agrees and names the format.
        let info = run_ok(Command::new("capinfos").args(["-M", "-c"]).arg("-t").arg(f));
        assert!(info.contains("erf (lz4 compressed)"), "{info}");
        assert!(
            info.contains(&format!("Number of packets:   {want}")),
            "{info}"
        );
        // lz4 validates every frame.
        run_ok(Command::new("lz4").arg("-t").arg(f));
        // libtrace counts the same packets in the decompressed file.
        let erf = dir.path().join("plain.erf");
        let plain = run(Command::new("lz4")
            .args(["-dc"])
            .arg(f)
            .stdout(Stdio::piped()));
        assert!(plain.status.success());
        std::fs::write(&erf, &plain.stdout).unwrap();
        let stats = run_ok(Command::new("tracestats").arg(format!("erf:{}", erf.display())));
        assert_eq!(tracestats_total(&stats), Some(want), "{stats}");
    }
    assert_eq!(total, 751);
    assert_eq!(total_written(&r), 751);
}

/// The packet count of tracestats' `Total:` row (stdout).
fn tracestats_total(stats: &str) -> Option<u64> {
    stats
        .lines()
        .find_map(|l| l.trim().strip_prefix("Total:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

fn total_written(r: &serde_json::Value) -> u64 {
    total(r, |q| q["written"].as_u64().unwrap())
}

#[test]
fn uncompressed_output_is_plain_erf_libtrace_reads() {
    let dir = tempfile::tempdir().unwrap();
    capture_trace("libtrace__100_packets.pcap", dir.path(), &["--no-compress"]);
    let files = files_with(&dir.path().join("cap"), ".erf");
    assert_eq!(files.len(), 1);
    let stats = run_ok(Command::new("tracestats").arg(format!("erf:{}", files[0].display())));
    assert_eq!(tracestats_total(&stats), Some(100), "{stats}");
    assert_eq!(tshark_frames(&files[0]).len(), 100);
}

/// `--direct-io` (whole 4 KiB blocks through O_DIRECT): the files, plain and
/// LZ4, hold the same frames, in the same order, as tshark decodes them, as
/// a capture of the same trace with buffered writes.
#[test]
fn direct_io_files_hold_what_buffered_files_hold() {
    let trace = "zeek__http_bro.org.pcap";
    for (ext, extra) in [(".erf", &["--no-compress"][..]), (".erf.lz4", &[][..])] {
        let mut frames = Vec::new();
        for direct in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let mut args = vec!["--batch-bytes", "64K", "--rotate-bytes", "192K"];
            args.extend_from_slice(extra);
            if direct {
                args.push("--direct-io");
            }
            let r = capture_trace(trace, dir.path(), &args);
            let files = files_with(&dir.path().join("cap"), ext);
            assert!(files.len() >= 2, "{files:?}");
            let got: Vec<_> = files.iter().flat_map(|f| tshark_frames(f)).collect();
            assert_eq!(total_written(&r), got.len() as u64);
            // Plain files with --direct-io are written from the ring slots
            // themselves, records placed at the file's phase; after the
            // first files (the worker placing ahead of the writer's word)
            // every slot is where its file needs it.
            let way = |k: &str| total(&r, |q| q["writer"]["direct_batches"][k].as_u64().unwrap());
            let batches = total(&r, |q| q["writer"]["batches"].as_u64().unwrap());
            if direct && ext == ".erf" {
                assert!(way("in_place") > 0, "{r}");
                assert_eq!(way("in_place") + way("copied"), batches, "{r}");
            } else {
                assert_eq!(way("in_place") + way("copied"), 0, "{r}");
            }
            frames.push(got);
        }
        assert_eq!(frames[0].len(), 751);
        assert!(
            frames[0] == frames[1],
            "{ext}: direct and buffered files differ"
        );
    }
}

#[test]
fn reference_lz4_files_decode_to_the_original_trace() {
    let dir = tempfile::tempdir().unwrap();
    let orig = tshark_frames(&shared("traces/tcpreplay__test.pcap"));
    for f in ["default", "B4-blockcrc-nocontentcrc", "B4-linked"] {
        let input = shared(&format!("reference/lz4/tcpreplay__test.pcap.{f}.lz4"));
        let out = dir.path().join(format!("{f}.pcap"));
        run_ok(linecap().arg("read").arg(&input).arg("-w").arg(&out));
        assert_eq!(tshark_frames(&out), orig, "{f}");
    }
}

#[test]
fn reference_erf_files_from_other_writers_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let orig = tshark_frames(&shared("traces/tcpreplay__test.pcap"));
    for f in ["mergecap-4.0.17", "traceconvert-3.0.22"] {
        let input = shared(&format!("reference/erf_writers/tcpreplay__test.{f}.erf"));
        let out = dir.path().join(format!("{f}.pcap"));
        let stats = run_ok(
            linecap()
                .arg("read")
                .arg(&input)
                .arg("-w")
                .arg(&out)
                .arg("--stats"),
        );
        assert!(stats.contains("packets: 179"), "{f}: {stats}");
        // Same frames, times, lengths (wlen - 4 = the pcap's orig_len) and decode.
        assert_eq!(tshark_frames(&out), orig, "{f}");
    }
}

#[test]
fn tshark_reads_a_large_file_to_the_end() {
    // Wireshark 4.0 stops after about 9 MB in a concatenation of LZ4 frames;
    // linecap writes one frame per file so files of any size open.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cap");
    run_ok(
        linecap()
            .arg("capture")
            .arg("--source")
            .arg("synth:1500:1000:25000")
            .args(["--batch-bytes", "64K", "--ring-slots", "2048"])
            .arg("--out")
            .arg(&out),
    );
    let files = files_with(&out, ".erf.lz4");
    assert_eq!(files.len(), 1);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(format!("{}.json", files[0].display())).unwrap())
            .unwrap();
    let packets = manifest["packets"].as_u64().unwrap();
    assert!(
        manifest["bytes_erf"].as_u64().unwrap() > 20 << 20,
        "want a file over 20 MiB of ERF: {manifest}"
    );
    let frames = run_ok(Command::new("tshark").arg("-r").arg(&files[0]).args([
        "-T",
        "fields",
        "-e",
        "frame.number",
    ]));
    assert_eq!(frames.lines().count() as u64, packets);
    let info = run_ok(Command::new("capinfos").args(["-M", "-c"]).arg(&files[0]));
    assert!(
        info.contains(&format!("Number of packets:   {packets}")),
        "{info}"
    );
    run_ok(Command::new("lz4").arg("-t").arg(&files[0]));
}

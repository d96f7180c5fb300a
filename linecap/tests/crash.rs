//! A capture killed with SIGKILL while it writes leaves files every reader
//! can trust: complete visible files, and a hidden partial file readable up
//! to its last complete LZ4 frame. No packet is invented.

mod common;

use common::*;
use linecap_reader::read::{CaptureReader, Packet};
use std::path::Path;
use std::time::{Duration, Instant};

const FRAME_LEN: usize = 128;
const SEQ_OFF: usize = 42;

/// Every packet in `files`: (queue file, sequence number stamped by the synthetic source).
fn read_seqs(files: &[std::path::PathBuf]) -> (Vec<u64>, u64) {
    let mut seqs = Vec::new();
    let mut truncated = 0;
    for f in files {
        let mut r = CaptureReader::open(f).unwrap_or_else(|e| panic!("{e}"));
        let mut p = Packet::default();
        loop {
            match r.next(&mut p) {
                Ok(true) => {
                    assert_eq!(p.data.len(), FRAME_LEN, "{}", f.display());
                    seqs.push(u64::from_be_bytes(
                        p.data[SEQ_OFF..SEQ_OFF + 8].try_into().unwrap(),
                    ));
                }
                Ok(false) => break,
                Err(e) => panic!("only an incomplete last frame is acceptable: {e}"),
            }
        }
        truncated += r.stats().truncated_bytes;
    }
    (seqs, truncated)
}

fn hidden_files(dir: &Path) -> Vec<std::path::PathBuf> {
    files_with(dir, ".part")
}

#[test]
fn sigkill_mid_write_leaves_readable_files_and_invents_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cap");
    let mut child = linecap()
        .arg("capture")
        .arg("--source")
        .arg(format!("synth:{FRAME_LEN}:1000"))
        .args([
            "--rotate-bytes",
            "2M",
            "--batch-bytes",
            "256K",
            "--flush-ms",
            "5",
        ])
        .arg("--out")
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until at least one file is complete and a newer one is open.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let done = out.exists()
            && !files_with(&out, ".erf.lz4").is_empty()
            && !hidden_files(&out).is_empty();
        if done || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let visible = files_with(&out, ".erf.lz4");
    let hidden = hidden_files(&out);
    assert!(!visible.is_empty(), "no complete file within 30 s");
    assert_eq!(hidden.len(), 1, "exactly one file was open: {hidden:?}");

    // Visible files are complete: no truncation at all.
    let (vis_seqs, vis_trunc) = read_seqs(&visible);
    assert_eq!(vis_trunc, 0);
    // The partial file reads up to its last complete frame.
    let (part_seqs, _) = read_seqs(&hidden);
    // Nothing invented: the synthetic source numbers its frames 0, 1, 2, …
    // and one queue writes them in order. A live source may drop (counted,
    // ring full) so gaps are allowed; repeats, reordering or numbers never
    // generated are not.
    let all: Vec<u64> = vis_seqs.iter().chain(&part_seqs).copied().collect();
    assert!(!all.is_empty());
    let bad = all.windows(2).position(|w| w[1] <= w[0]);
    assert!(bad.is_none(), "sequence goes back at packet {bad:?}");
    // Every record between the sequence numbers is intact (checked above by
    // the frame length) and the first file starts at the first frame.
    assert_eq!(all[0], 0);

    // The CLI reads everything, partial included, with only a truncation note.
    let res = run(linecap()
        .arg("read")
        .arg(&out)
        .arg("--include-partial")
        .arg("--stats"));
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let stdout = String::from_utf8_lossy(&res.stdout);
    assert!(
        stdout.contains(&format!("packets: {}", all.len())),
        "{stdout}"
    );

    // issue 14: a restart into the same directory completes the leftover
    // `.part` up to its last verified block and renames it into view; `-W`
    // counts it; nothing is invented.
    let part_name = hidden[0]
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .strip_prefix('.')
        .unwrap()
        .strip_suffix(".part")
        .unwrap()
        .to_string();
    let keep = visible.len() + 2; // the old files, the recovered one, the new one
    run_ok(
        linecap()
            .arg("capture")
            .arg("--source")
            .arg(format!("synth:{FRAME_LEN}:1000:10"))
            .arg("--out")
            .arg(&out)
            .args(["-W", &keep.to_string()]),
    );
    assert!(
        hidden_files(&out).is_empty(),
        "no .part left after a restart"
    );
    let recovered = hidden[0].with_file_name(&part_name);
    assert!(recovered.exists(), "{part_name} completed and in view");
    let (rec_seqs, rec_trunc) = read_seqs(std::slice::from_ref(&recovered));
    assert_eq!(
        rec_trunc, 0,
        "the recovered file is complete (end mark, checksum)"
    );
    assert_eq!(
        rec_seqs, part_seqs,
        "exactly the verified blocks, nothing invented"
    );
    let man: serde_json::Value = serde_json::from_slice(
        &std::fs::read(recovered.with_file_name(format!("{part_name}.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(man["recovered"], true, "{man:#}");
    assert_eq!(
        man["packets"].as_u64(),
        Some(part_seqs.len() as u64),
        "{man:#}"
    );
    // -W: the ring counts the recovered file. With one fewer kept, the
    // oldest file goes on the next rotation.
    let after = files_with(&out, ".erf.lz4");
    assert_eq!(after.len(), keep, "{after:?}");
    run_ok(
        linecap()
            .arg("capture")
            .arg("--source")
            .arg(format!("synth:{FRAME_LEN}:1000:10"))
            .arg("--out")
            .arg(&out)
            .args(["-W", &keep.to_string()]),
    );
    let after2 = files_with(&out, ".erf.lz4");
    assert_eq!(after2.len(), keep, "{after2:?}");
    assert!(recovered.exists() || keep == 1);
}

#[test]
fn a_file_cut_anywhere_reads_to_its_last_complete_frame() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cap");
    run_ok(
        linecap()
            .arg("capture")
            .arg("--source")
            .arg(format!(
                "file:{}",
                shared("traces/zeek__http_bro.org.pcap").display()
            ))
            .args(["--batch-bytes", "64K"])
            .arg("--out")
            .arg(&out),
    );
    let files = files_with(&out, ".erf.lz4");
    assert_eq!(files.len(), 1);
    let bytes = std::fs::read(&files[0]).unwrap();
    let full = read_packets(&files[0]).0;
    assert_eq!(full.len(), 751);
    let cut_path = dir.path().join("cut.erf.lz4");
    let mut last = 0;
    for cut in (0..bytes.len()).step_by(bytes.len() / 97).skip(1) {
        std::fs::write(&cut_path, &bytes[..cut]).unwrap();
        let (got, trunc) = read_packets(&cut_path);
        assert!(trunc > 0, "cut at {cut} must be reported");
        assert!(
            got.len() < full.len() && got.len() >= last,
            "cut at {cut}: {} packets",
            got.len()
        );
        assert!(
            got == full[..got.len()],
            "cut at {cut}: not a prefix of the full file"
        );
        last = got.len();
        let res = run(linecap().arg("read").arg(&cut_path).arg("--stats"));
        assert!(res.status.success());
        let err = String::from_utf8_lossy(&res.stderr);
        assert!(err.contains("last frame incomplete"), "{err}");
    }
    assert!(last > 0, "some cut must keep complete frames");
}

fn read_packets(f: &Path) -> (Vec<Packet>, u64) {
    let mut r = CaptureReader::open(f).unwrap_or_else(|e| panic!("{e}"));
    let mut v = Vec::new();
    let mut p = Packet::default();
    while r.next(&mut p).unwrap_or_else(|e| panic!("{e}")) {
        v.push(p.clone());
    }
    (v, r.stats().truncated_bytes)
}

//! A full output file system: the capture keeps running, what cannot be
//! written is counted as `writer` drops, the accounting balances, every file
//! left on disk is readable, and writing resumes once space is freed.
//!
//! The output is a small tmpfs this test mounts (under a unique path in /tmp,
//! unmounted on drop, also when the test panics), so the test needs root. It
//! is `#[ignore]`d so a plain `cargo test` lists it as ignored; `make test`
//! runs it with `--ignored` as root (`.ci/privileged-tests`) and says SKIPPED
//! otherwise.

mod common;

use common::*;
use linecap_reader::read::{CaptureReader, Packet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A tmpfs of `size` mounted at a fresh directory; unmounted and removed on drop.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(tag: &str, size: &str) -> Tmpfs {
        let uid = run(Command::new("id").arg("-u"));
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            panic!("this privileged test cannot run: not root (mounting a tmpfs)");
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let dir = std::env::temp_dir().join(format!(
            "linecap-diskfull-{}-{tag}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir(&dir).unwrap();
        let t = Tmpfs { dir };
        run_ok(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o"])
                .arg(format!("size={size},mode=0755"))
                .arg("linecap-test")
                .arg(&t.dir),
        );
        t
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Read every file below `dir` (hidden ones too); only a cut last frame is
/// acceptable. Returns the packets.
fn read_everything(dir: &Path) -> u64 {
    let mut total = 0;
    for f in files_with(dir, "").into_iter().filter(|f| {
        let name = f.to_string_lossy();
        !name.ends_with(".json") && !name.ends_with(".idx")
    }) {
        let mut r = CaptureReader::open(&f).unwrap_or_else(|e| panic!("{e}"));
        let mut p = Packet::default();
        loop {
            match r.next(&mut p) {
                Ok(true) => total += 1,
                Ok(false) => break,
                Err(e) => panic!(
                    "{}: only an incomplete last frame is acceptable: {e}",
                    f.display()
                ),
            }
        }
        // And the binary agrees, file by file.
        let out = run(linecap().arg("read").arg(&f).arg("--stats"));
        assert!(
            out.status.success(),
            "linecap read {}:\n{}",
            f.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    total
}

fn dir_bytes(dir: &Path) -> u64 {
    files_with(dir, "")
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum()
}

#[test]
#[ignore = "needs root: run by make test as root"]
fn a_full_disk_drops_and_counts_and_every_file_stays_readable() {
    let fs = Tmpfs::mount("full", "4m");
    let out = fs.dir.join("cap");
    let scratch = tempfile::tempdir().unwrap();
    let rep = scratch.path().join("r.json");
    // 200 000 frames of 1500 bytes (300 MB) into 4 MiB, uncompressed.
    let cap = run(linecap()
        .arg("capture")
        .args(["--source", "synth:1500:100:200000", "--no-compress"])
        .args(["--rotate-bytes", "1M", "--batch-bytes", "256K"])
        .arg("--out")
        .arg(&out)
        .arg("--report-json")
        .arg(&rep));
    let stderr = String::from_utf8_lossy(&cap.stderr);
    assert_eq!(cap.status.code(), Some(1), "writer drops exit 1:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let r = report(&rep);
    assert_balanced(&r);
    let q = &r["queues"][0];
    let (seen, written) = (q["seen"].as_u64().unwrap(), q["written"].as_u64().unwrap());
    let writer_drops = q["dropped"]["writer"].as_u64().unwrap();
    assert_eq!(seen, 200_000);
    assert!(written > 1000, "{q:#}");
    // The synthetic source outruns the writer, so most of the loss is
    // ring-full; what reached the writer and did not fit is writer drops.
    assert!(writer_drops > 1000, "a full disk is writer drops: {q:#}");
    assert_eq!(
        q["worker"]["ring_packets"].as_u64().unwrap(),
        written + writer_drops,
        "{q:#}"
    );
    // What is on disk is what the report says was written, and all readable.
    assert_eq!(read_everything(&out), written);
}

#[test]
#[ignore = "needs root: run by make test as root"]
fn writing_resumes_when_space_is_freed_mid_capture() {
    let fs = Tmpfs::mount("resume", "4m");
    let out = fs.dir.join("cap");
    let scratch = tempfile::tempdir().unwrap();
    let rep = scratch.path().join("r.json");
    let child = linecap()
        .arg("capture")
        .args([
            "--source",
            "synth:1500:100",
            "--no-compress",
            "--duration",
            "8",
        ])
        .args(["--rotate-bytes", "512K", "--batch-bytes", "128K"])
        .arg("--out")
        .arg(&out)
        .arg("--report-json")
        .arg(&rep)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the disk to fill (3.5 of 4 MiB used). Its size need not
    // settle: each failed write is cut back, so the open file's size moves.
    let deadline = Instant::now() + Duration::from_secs(6);
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let used = if out.exists() { dir_bytes(&out) } else { 0 };
        if used > 3_500_000 {
            std::thread::sleep(Duration::from_millis(300));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the disk did not fill ({used} bytes)"
        );
    }
    // Free the space: delete every complete file (the open one stays).
    let before: Vec<PathBuf> = files_with(&out, ".erf");
    assert!(
        !before.is_empty(),
        "no complete file before the disk filled"
    );
    let mut freed_packets = 0;
    let mut freed_lctr = 0u64;
    for f in &before {
        let mut r = CaptureReader::open(f).unwrap();
        let mut p = Packet::default();
        while r.next(&mut p).unwrap() {
            freed_packets += 1;
            freed_lctr += u64::from(p.lctr);
        }
        std::fs::remove_file(f).unwrap();
        let _ = std::fs::remove_file(PathBuf::from(format!("{}.json", f.display())));
    }
    let out_cmd = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out_cmd.stderr);
    assert_eq!(
        out_cmd.status.code(),
        Some(1),
        "writer drops exit 1:\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    let r = report(&rep);
    assert_balanced(&r);
    let q = &r["queues"][0];
    let written = q["written"].as_u64().unwrap();
    assert!(q["dropped"]["writer"].as_u64().unwrap() > 0, "{q:#}");
    // Files written after the freeing: new complete files, and the packets on
    // disk now plus the ones deleted are exactly what was written.
    let after: Vec<PathBuf> = files_with(&out, ".erf")
        .into_iter()
        .filter(|f| !before.contains(f))
        .collect();
    assert!(!after.is_empty(), "no file completed after space was freed");
    let on_disk = read_everything(&out);
    assert!(on_disk > 0);
    assert_eq!(on_disk + freed_packets, written, "{q:#}");
    // issue 14: the writer's drops are in the data too: the lctr of the
    // records written after them (plus what came after the last record).
    let mut lctr = freed_lctr;
    for f in files_with(&out, ".erf") {
        let mut r = CaptureReader::open(&f).unwrap();
        let mut p = Packet::default();
        while r.next(&mut p).unwrap() {
            lctr += u64::from(p.lctr);
        }
    }
    let d = &q["dropped"];
    let lost = d["writer"].as_u64().unwrap() + d["ring_full"].as_u64().unwrap();
    let pending = q["worker"]["lctr_pending"].as_u64().unwrap();
    assert!(q["writer"]["lctr_carried"].as_u64().unwrap() > 0, "{q:#}");
    assert_eq!(lctr + pending, lost, "{q:#}");
}

/// A disk that fills during a live capture is said on stderr when it
/// happens, naming the file, while the capture runs (not only at exit), and
/// rate-limited: not one line per failed batch.
#[test]
#[ignore = "needs root: run by make test as root"]
fn a_disk_filling_mid_capture_is_logged_promptly_with_the_path() {
    use std::io::{BufRead, BufReader};
    let fs = Tmpfs::mount("log", "4m");
    let out = fs.dir.join("cap");
    let mut child = linecap()
        .arg("capture")
        .args(["--source", "synth:1500:100", "--no-compress"])
        .args([
            "--duration",
            "20",
            "--rotate-bytes",
            "1M",
            "--batch-bytes",
            "128K",
        ])
        .arg("--out")
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut guard = KillOnDrop::new(&child);
    let started = Instant::now();
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("writer failing") {
                let _ = tx.send((Instant::now(), line.clone()));
            }
            all.push(line);
        }
        all
    });
    // 4 MiB fills in well under a second at the synthetic rate.
    let (at, line) = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("no 'writer failing' line within 10 s of the disk filling");
    assert!(
        at.duration_since(started) < Duration::from_secs(10),
        "logged late: {line}"
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "the line must come while the capture runs: {line}"
    );
    let cap = out.join("q00");
    assert!(
        line.contains(&cap.display().to_string()) && line.contains("No space left on device"),
        "the line names the file and the cause: {line}"
    );
    // The supervisor looks at the drop counters once a second: give it one
    // look after the drops began before stopping.
    std::thread::sleep(Duration::from_millis(1500));
    signal(&child, "INT");
    let status = child.wait().unwrap();
    guard.disarm();
    let all = reader.join().unwrap();
    assert_eq!(
        status.code(),
        Some(1),
        "writer drops exit 1:\n{}",
        all.join("\n")
    );
    // Rate-limited: a few seconds of failing batches give a handful of lines.
    let failing = all.iter().filter(|l| l.contains("writer failing")).count();
    assert!(
        (1..=4).contains(&failing),
        "{failing} lines:\n{}",
        all.join("\n")
    );
    // And the drop stage is named once it starts.
    assert!(
        all.iter()
            .any(|l| l.contains("drops began at stage writer")),
        "{}",
        all.join("\n")
    );
}

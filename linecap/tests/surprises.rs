//! Surprises users reported (issue 13, point 6), each fixed or made loud,
//! one test each.

mod common;

use common::*;
use std::path::Path;
use std::process::Command;

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// A profile whose `[[job]]` tables replace the main capture says so.
#[test]
fn profile_jobs_replacing_the_main_capture_are_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let trace = shared("traces/zeek__http_bro.org.pcap");
    let dns = dir.path().join("dns");
    let profile = dir.path().join("jobs.toml");
    std::fs::write(
        &profile,
        format!(
            "[host]\nname = \"f\"\n[nic]\nbackend = \"file\"\nfile = \"{}\"\nqueues = 1\n\
             [memory]\nbatch_bytes = \"128K\"\nring_slots = 4\n\
             [writer]\nthreads = 1\ndirs = [\"{}\"]\n\
             [[job]]\nname = \"dns\"\nout = \"{}\"\nfilter = \"udp port 53\"\n",
            trace.display(),
            dir.path().join("main").display(),
            dns.display()
        ),
    )
    .unwrap();
    let o = run(linecap().arg("capture").arg("--profile").arg(&profile));
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{e}");
    assert!(
        e.contains("[[job]] table(s) are the whole capture") && e.contains("--out"),
        "{e}"
    );
    assert!(dns.is_dir(), "{e}");
    // With --out the main capture is back and nothing is warned.
    let o = run(linecap()
        .arg("capture")
        .arg("--profile")
        .arg(&profile)
        .arg("--out")
        .arg(dir.path().join("all")));
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{e}");
    assert!(!e.contains("are the whole capture"), "{e}");
}

/// `make demo` / `make install` follow CARGO_TARGET_DIR (no hard-coded
/// ./target/release), and `make install` honours PREFIX and DESTDIR.
#[test]
fn makefile_follows_cargo_target_dir_and_installs_under_destdir() {
    let o = run(Command::new("make")
        .current_dir(repo())
        .env("CARGO_TARGET_DIR", "/tmp/linecap-13b-elsewhere")
        .args([
            "-n",
            "demo",
            "install",
            "DESTDIR=/tmp/stage",
            "PREFIX=/opt/lc",
        ]));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}{}", stderr(&o));
    assert!(!out.contains("./target/release"), "{out}");
    assert!(
        out.contains("cargo run --release -p linecap -- demo"),
        "{out}"
    );
    assert!(
        out.contains("/tmp/linecap-13b-elsewhere/release/linecap")
            && out.contains("/tmp/stage/opt/lc/bin/linecap")
            && out.contains("/tmp/stage/etc/systemd/system/linecap.service"),
        "{out}"
    );
    // The unit's ExecStart is the default install path.
    let unit = std::fs::read_to_string(repo().join("docs/linecap.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/linecap "), "{unit}");
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    assert!(
        readme.contains("make install"),
        "the README says how to install"
    );
}

/// A capture that fails a check after its output directory was made takes
/// the directory back (it did not exist before).
#[test]
fn a_failed_start_leaves_no_output_directory_behind() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("new/cap");
    let o = run(linecap()
        .arg("capture")
        .args(["--source", "synth:64:1:100"])
        .arg("--out")
        .arg(&out)
        .arg("--ipfix-file")
        .arg(dir.path().join("no-such-dir/flows.ipfix")));
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(e.contains("no-such-dir/flows.ipfix"), "{e}");
    assert!(!out.exists() && !dir.path().join("new").exists(), "{e}");
}

/// A read that fails before writing a packet leaves no header-only output;
/// the message names the file in words, not the parser's `Incomplete(4)`.
#[test]
fn a_failed_read_leaves_no_output_and_says_why_in_words() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("cut.pcap");
    // The pcap magic, then 6 of the header's 24 bytes.
    std::fs::write(&bad, [0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0]).unwrap();
    let out = dir.path().join("out.pcap");
    let o = run(linecap().arg("read").arg(&bad).arg("-w").arg(&out));
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(!out.exists(), "no 24-byte pcap left behind: {e}");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "{leftovers:?}");
    assert!(!e.contains("Incomplete("), "{e}");
    assert!(
        e.contains(&bad.display().to_string()) && e.contains("truncated pcap file"),
        "{e}"
    );
    // A good read still writes its output, in place.
    let good = shared("traces/zeek__http_bro.org.pcap");
    let o = run(linecap().arg("read").arg(&good).arg("-w").arg(&out));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(std::fs::metadata(&out).unwrap().len() > 24);
}

/// A truncated input (an incomplete last record) exits 0 with a note that
/// names the file and the bytes skipped: linecap's own files are cut
/// legitimately (a crash, a full disk, the file being written), see
/// docs/operations.md. A file that cannot be read at all exits 1.
#[test]
fn a_truncated_input_exits_0_with_a_note_and_a_missing_one_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read(shared("traces/zeek__http_bro.org.pcap")).unwrap();
    let cut = dir.path().join("cut.pcap");
    std::fs::write(&cut, &good[..good.len() - 7]).unwrap();
    let o = run(linecap().arg("read").arg(&cut).arg("--stats"));
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{e}");
    assert!(
        e.contains(&cut.display().to_string()) && e.contains("last frame incomplete"),
        "{e}"
    );
    // A missing file: named once, its OS error said once.
    let missing = dir.path().join("missing.pcap");
    let o = run(linecap().arg("read").arg(&missing).arg("--stats"));
    let e = stderr(&o);
    assert_ne!(o.status.code(), Some(0), "{e}");
    assert!(e.contains("missing.pcap"), "{e}");
    assert!(e.matches("(os error 2)").count() <= 1, "doubled: {e}");
}

/// An anonymisation key file may carry `#` comment lines.
#[test]
fn key_files_accept_comment_lines() {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let hex = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    let plain = dir.path().join("plain.key");
    let commented = dir.path().join("commented.key");
    std::fs::write(&plain, hex).unwrap();
    std::fs::write(
        &commented,
        format!("# Crypto-PAn key of probe 3\n# made 2026-12-01, rotate yearly\n\n{hex}\n"),
    )
    .unwrap();
    let anon = |key: &Path| {
        std::fs::set_permissions(key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut child = linecap()
            .arg("anonymize")
            .arg("--key")
            .arg(key)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"192.0.2.1\n2001:db8::1\n")
            .unwrap();
        let o = child.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let a = anon(&plain);
    assert_eq!(a.lines().count(), 2, "{a}");
    assert_eq!(anon(&commented), a);
}

/// `--log-format json` gives one JSON object per log line, for journald /
/// Loki; a bad `--log-level` is refused naming the flag.
#[test]
fn log_format_json_and_a_bad_level_named() {
    let dir = tempfile::tempdir().unwrap();
    // 20 000 frames of 1000 bytes in 64 KiB batches and files of 1 batch,
    // keeping 2 files: -W deletes files, each deletion is logged.
    let cap = dir.path().join("cap");
    let o = run(linecap()
        .args([
            "--log-format",
            "json",
            "capture",
            "--source",
            "synth:1000:10:20000",
        ])
        .arg("--out")
        .arg(&cap)
        .args([
            "--batch-bytes",
            "64K",
            "--rotate-bytes",
            "64K",
            "--rotate-files",
            "2",
        ])
        .arg("--no-compress"));
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{e}");
    let events: Vec<serde_json::Value> = e
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|x| panic!("{x}: {l}")))
        .collect();
    let deleted: Vec<_> = events
        .iter()
        .filter(|v| {
            v["message"]
                .as_str()
                .is_some_and(|m| m.contains("(file ring, -W)"))
        })
        .collect();
    assert!(!deleted.is_empty(), "{e}");
    for d in &deleted {
        assert_eq!(d["level"], "INFO", "{d}");
        let m = d["message"].as_str().unwrap();
        assert!(
            m.contains(&cap.display().to_string()),
            "names the file: {m}"
        );
        assert!(d["timestamp"].is_string() && d["bytes"].is_u64(), "{d}");
    }
    let left = files_with(&cap, ".erf").len();
    assert_eq!(left, 2, "-W 2 keeps two files");
    let o = run(linecap().args([
        "--log-level",
        "linecap=loud",
        "read",
        "/nonexistent",
        "--stats",
    ]));
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(e.contains("--log-level"), "{e}");
}

/// A negative number given to a numeric flag (`-G -1`) is refused naming
/// that flag, not taken for an unknown flag `-1`.
#[test]
fn a_negative_number_names_its_flag() {
    let dir = tempfile::tempdir().unwrap();
    for (flag, long) in [
        ("-G", "--rotate-seconds"),
        ("-C", "--file-size"),
        ("-W", "--rotate-files"),
        ("-c", "--count"),
        ("-s", "--snaplen"),
        ("-B", "--buffer-size"),
    ] {
        let o = run(linecap()
            .args(["capture", "-i", "file:/nonexistent.pcap", "-w"])
            .arg(dir.path().join("out"))
            .args([flag, "-1"]));
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{flag}: {e}");
        assert!(
            e.contains(long) && e.contains("'-1'") && !e.contains("unexpected argument"),
            "{flag}: {e}"
        );
        assert!(!dir.path().join("out").exists(), "{flag}: {e}");
    }
}

/// Start-up facts are log events: with `--log-format json` the line saying
/// where metrics listen is a JSON object at level INFO.
#[test]
fn start_up_lines_are_log_events() {
    let dir = tempfile::tempdir().unwrap();
    let o = run(linecap()
        .args([
            "--log-format",
            "json",
            "capture",
            "--source",
            "synth:200:10:1000",
        ])
        .arg("--out")
        .arg(dir.path().join("cap"))
        .args(["--metrics", "127.0.0.1:0"]));
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{e}");
    let ev = e
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|x| panic!("{x}: {l}"))
        })
        .find(|v| {
            v["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("metrics on http://127.0.0.1:"))
        })
        .unwrap_or_else(|| panic!("no metrics log event: {e}"));
    assert_eq!(ev["level"], "INFO", "{ev}");
    assert!(!e.contains("linecap: metrics on"), "a plain line too: {e}");
}

//! Issue 13: every configuration key takes effect, and tcpdump habits work.
//! Each test runs the binary and checks the effect on disk, in the report or
//! in /proc, not just the parsed value.

mod common;

use std::path::{Path, PathBuf};

use common::{assert_balanced, files_with, linecap, report, run, run_ok, shared};

fn trace(name: &str) -> PathBuf {
    shared(&format!("traces/{name}"))
}

/// Frames tcpdump keeps of `file` for `expr`.
fn tcpdump_count(file: &Path, expr: &str) -> u64 {
    let out = run_ok(
        std::process::Command::new("tcpdump")
            .args(["-nr"])
            .arg(file)
            .arg(expr),
    );
    out.lines().count() as u64
}

#[test]
fn a_trailing_filter_expression_keeps_what_tcpdump_keeps() {
    let dir = tempfile::tempdir().unwrap();
    let t = trace("tcpreplay__test.pcap");
    let want = tcpdump_count(&t, "udp port 53");
    assert!(want > 0);
    let r = dir.path().join("r.json");
    run_ok(
        linecap()
            .args(["capture", "-i"])
            .arg(format!("file:{}", t.display()))
            .arg("-w")
            .arg(dir.path().join("cap"))
            .args(["--no-metrics", "--report-json"])
            .arg(&r)
            .args(["udp", "port", "53"]),
    );
    let rep = report(&r);
    assert_balanced(&rep);
    assert_eq!(rep["jobs"][0]["written"].as_u64(), Some(want), "{rep:#}");
    // The same frames: read back and filtered again, nothing is lost.
    let out = dir.path().join("out.pcap");
    run_ok(
        linecap()
            .arg("read")
            .arg(dir.path().join("cap"))
            .arg("-w")
            .arg(&out),
    );
    assert_eq!(tcpdump_count(&out, "udp port 53"), want);
    assert_eq!(tcpdump_count(&out, ""), want);
}

#[test]
fn count_stops_after_exactly_count_frames_and_accounts_for_them() {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path().join("r.json");
    run_ok(
        linecap()
            .args(["capture", "-i"])
            .arg(format!(
                "file:{}",
                trace("zeek__http_bro.org.pcap").display()
            ))
            .args(["--spread", "3", "-c", "100", "-w"])
            .arg(dir.path().join("cap"))
            .args(["--no-metrics", "--report-json"])
            .arg(&r),
    );
    let rep = report(&r);
    assert_balanced(&rep);
    assert_eq!(rep["jobs"][0]["written"].as_u64(), Some(100), "{rep:#}");
    assert_eq!(rep["jobs"][0]["seen"].as_u64(), Some(100), "{rep:#}");
}

#[test]
fn several_output_directories_get_the_queues_round_robin_or_as_mapped() {
    let dir = tempfile::tempdir().unwrap();
    let (d1, d2) = (dir.path().join("disk1"), dir.path().join("disk2"));
    let t = format!("file:{}", trace("zeek__http_bro.org.pcap").display());
    let cap = |extra: &[&str]| {
        let _ = std::fs::remove_dir_all(&d1);
        let _ = std::fs::remove_dir_all(&d2);
        run_ok(
            linecap()
                .args(["capture", "--source", &t, "--spread", "4", "--no-metrics"])
                .arg("-w")
                .arg(&d1)
                .arg("-w")
                .arg(&d2)
                .args(extra),
        );
        let names = |d: &Path| {
            let mut v: Vec<String> = std::fs::read_dir(d)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        (names(&d1), names(&d2))
    };
    assert_eq!(
        cap(&[]),
        (
            vec!["q00".into(), "q02".into()],
            vec!["q01".into(), "q03".into()]
        )
    );
    assert_eq!(
        cap(&["--queue-dirs", "1,1,1,0"]),
        (
            vec!["q03".into()],
            vec!["q00".into(), "q01".into(), "q02".into()]
        )
    );
    // A map naming a directory that is not there is an error naming the flag.
    let out = run(linecap()
        .args(["capture", "--source", &t, "--no-metrics", "-w"])
        .arg(&d1)
        .arg("-w")
        .arg(&d2)
        .args(["--queue-dirs", "0,2"]));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--queue-dirs"));
}

fn dir_bytes(d: &Path) -> u64 {
    files_with(d, ".erf")
        .iter()
        .map(|f| std::fs::metadata(f).map_or(0, |m| m.len()))
        .sum()
}

#[test]
fn a_profile_with_two_dirs_places_queues_and_holds_the_budget_per_directory() {
    let dir = tempfile::tempdir().unwrap();
    let (d1, d2) = (dir.path().join("data1"), dir.path().join("data2"));
    let budget: u64 = 1 << 20;
    let profile = dir.path().join("p.toml");
    std::fs::write(
        &profile,
        format!(
            "[host]\nname = \"t\"\n[nic]\nbackend = \"file\"\nfile = \"{}\"\nqueues = 4\n\
             [memory]\nbatch_bytes = \"64K\"\nring_slots = 4\n\
             [writer]\nthreads = 2\ndirs = [\"{}\", \"{}\"]\ncompress = false\n\
             rotate_bytes = \"64K\"\ndisk_budget = {budget}\n",
            trace("zeek__http_bro.org.pcap").display(),
            d1.display(),
            d2.display()
        ),
    )
    .unwrap();
    let r = dir.path().join("r.json");
    // Four generated queues of 3 MB each: far more than each disk's budget.
    let mut cmd = linecap();
    cmd.args(["capture", "--profile"]).arg(&profile);
    for _ in 0..4 {
        cmd.args(["--source", "synth:1000:10:3000:20000"]);
    }
    run_ok(cmd.args(["--no-metrics", "--report-json"]).arg(&r));
    let rep = report(&r);
    assert_balanced(&rep);
    let total_written = rep["jobs"][0]["written"].as_u64().unwrap();
    assert!(total_written > 2_000, "{rep:#}");
    // The budget acted: more was written than both directories may hold.
    let file_bytes = common::total(&rep, |q| q["writer"]["bytes_file"].as_u64().unwrap());
    assert!(file_bytes > 2 * budget, "{rep:#}");
    assert!(total_written > 0);
    for (d, qs) in [(&d1, ["q00", "q02"]), (&d2, ["q01", "q03"])] {
        for q in qs {
            assert!(d.join(q).is_dir(), "{} missing in {}", q, d.display());
        }
        let used = dir_bytes(d);
        assert!(
            used <= budget,
            "{} holds {used} bytes, over its budget of {budget}",
            d.display()
        );
        assert!(used > 0, "{} is empty", d.display());
    }
}

/// Cpus_allowed_list of every thread of `pid`, by thread name.
fn thread_cpus(pid: u32) -> Vec<(String, String)> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        let status = std::fs::read_to_string(e.path().join("status")).unwrap_or_default();
        let cpus = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap_or("")
            .trim()
            .to_string();
        v.push((comm.trim().to_string(), cpus));
    }
    v
}

#[test]
fn writer_and_metrics_threads_run_on_the_housekeeping_cores_and_workers_on_theirs() {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert!(n >= 2, "this test needs 2 CPUs, the machine has {n}");
    let dir = tempfile::tempdir().unwrap();
    let mut child = linecap()
        .args([
            "capture",
            "-i",
            "synth:200:10:-:20000",
            "--cores",
            "1",
            "--housekeeping-cores",
            "0",
            "--metrics",
            "127.0.0.1:0",
            "--duration",
            "4",
            "-w",
        ])
        .arg(dir.path().join("cap"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut guard = common::KillOnDrop::new(&child);
    let mut seen = Vec::new();
    for _ in 0..100 {
        std::thread::sleep(std::time::Duration::from_millis(50));
        seen = thread_cpus(child.id());
        let has = |p: &str| seen.iter().any(|(c, _)| c.starts_with(p));
        if has("lc-worker") && has("lc-writer") && has("lc-metrics") {
            break;
        }
    }
    let status = child.wait().unwrap();
    guard.disarm();
    assert!(status.success());
    let on = |p: &str| -> Vec<&str> {
        seen.iter()
            .filter(|(c, _)| c.starts_with(p))
            .map(|(_, cpus)| cpus.as_str())
            .collect()
    };
    assert_eq!(on("lc-worker"), ["1"], "{seen:?}");
    assert_eq!(on("lc-writer"), ["0"], "{seen:?}");
    assert_eq!(on("lc-metrics"), ["0"], "{seen:?}");
}

/// Issue 15: the control API's threads (and tiny_http's, which they start)
/// and the shipper's threads run on the housekeeping cores too: every
/// thread but the workers does.
#[test]
fn api_and_shipper_threads_run_on_the_housekeeping_cores() {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert!(n >= 2, "this test needs 2 CPUs, the machine has {n}");
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("api.sock");
    let mut child = linecap()
        .args([
            "capture",
            "-i",
            "synth:200:10:-:5000",
            "--cores",
            "1",
            "--housekeeping-cores",
            "0",
            "--no-metrics",
            "--duration",
            "4",
            // A store on a port where nothing listens: the shipper's
            // threads start (and retry); the capture is not affected.
            "--ship",
            "s3://caps/hk",
            "--ship-endpoint",
            "http://127.0.0.1:1",
            "--ship-drain-timeout",
            "0",
        ])
        .arg("--api")
        .arg(format!("unix:{}", sock.display()))
        .arg("-w")
        .arg(dir.path().join("cap"))
        .env("AWS_ACCESS_KEY_ID", "hk")
        .env("AWS_SECRET_ACCESS_KEY", "hk")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut guard = common::KillOnDrop::new(&child);
    let mut seen = Vec::new();
    for _ in 0..100 {
        std::thread::sleep(std::time::Duration::from_millis(50));
        seen = thread_cpus(child.id());
        let has = |p: &str| seen.iter().any(|(c, _)| c.starts_with(p));
        if has("lc-worker") && has("lc-api-") && has("ship-s3") && has("lc-writer") {
            break;
        }
    }
    let status = child.wait().unwrap();
    guard.disarm();
    assert!(status.success());
    let on = |p: &str| -> Vec<&str> {
        seen.iter()
            .filter(|(c, _)| c.starts_with(p))
            .map(|(_, cpus)| cpus.as_str())
            .collect()
    };
    assert_eq!(on("lc-worker"), ["1"], "{seen:?}");
    assert_eq!(on("lc-api-"), ["0", "0"], "{seen:?}");
    assert_eq!(on("ship-s3"), ["0", "0"], "{seen:?}");
    let elsewhere: Vec<_> = seen
        .iter()
        .filter(|(c, cpus)| !c.starts_with("lc-worker") && cpus != "0")
        .collect();
    assert!(
        elsewhere.is_empty(),
        "off the housekeeping cores: {elsewhere:?}"
    );
}

#[test]
fn a_rotation_size_below_the_batch_is_honoured_and_said() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(linecap()
        .args(["capture", "-i"])
        .arg(format!(
            "file:{}",
            trace("zeek__http_bro.org.pcap").display()
        ))
        .args(["-C", "4K", "--no-compress", "--no-metrics", "-w"])
        .arg(dir.path().join("cap")));
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("-C 4096 is smaller than a batch"), "{err}");
    // Without --batch-bytes the batch shrank to the smallest (64K): files
    // are about one batch, not the 1 MiB default.
    let files = files_with(&dir.path().join("cap"), ".erf");
    assert!(files.len() >= 5, "{files:?}");
    for f in &files {
        assert!(
            std::fs::metadata(f).unwrap().len() <= 64 << 10,
            "{}",
            f.display()
        );
    }
}

#[test]
fn help_shows_the_tcpdump_forms_first() {
    let help = run_ok(linecap().args(["capture", "--help"]));
    let at = |s: &str| {
        help.find(s)
            .unwrap_or_else(|| panic!("{s:?} not in:\n{help}"))
    };
    assert!(at("-i, --interface") < at("--profile <FILE>"), "{help}");
    assert!(at("-w, --out") < at("--profile <FILE>"));
    assert!(at("-s, --snaplen") < at("--profile <FILE>"));
    assert!(at("-c, --count") < at("--profile <FILE>"));
    assert!(
        at("linecap capture -i ens1f0 -w /data/dns -s 256 udp port 53") < at("-i, --interface")
    );
    // -s is the snap length now, as in tcpdump; -s 0 is the whole frame.
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path().join("r.json");
    run_ok(
        linecap()
            .args(["capture", "-i"])
            .arg(format!(
                "file:{}",
                trace("libtrace__100_packets.pcap").display()
            ))
            .args(["-s", "0", "--no-metrics", "-w"])
            .arg(dir.path().join("cap"))
            .arg("--report-json")
            .arg(&r),
    );
    let rep = report(&r);
    assert_eq!(
        rep["jobs"][0]["policies"]["snaplen"],
        serde_json::Value::Null,
        "{rep:#}"
    );
}

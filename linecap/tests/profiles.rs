//! `linecap check-host` and `linecap capture --profile` through the built binary.
//!
//! Read-only host checks: no root needed. (Run as root, the AF_XDP probe opens
//! and closes one socket; without root it is reported as SKIP.)

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn linecap(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_linecap"))
        .args(args)
        .output()
        .expect("run linecap")
}

fn profiles() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../hw-profiles")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn dev_veth_holds_on_this_machine() {
    let p = profiles().join("dev-veth.toml");
    let o = linecap(&["check-host", "--profile", p.to_str().unwrap()]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert!(t.contains("0 failed"), "{t}");
    assert!(!t.contains("FAIL"), "{t}");
    assert!(t.contains("disk-write"), "{t}");
}

#[test]
fn probe_40g_fails_here_with_clear_lines() {
    let p = profiles().join("probe-40g.toml");
    let o = linecap(&[
        "check-host",
        "--profile",
        p.to_str().unwrap(),
        "--no-write-test",
    ]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    let fail = |name: &str| {
        t.lines()
            .any(|l| l.starts_with("FAIL") && l.split_whitespace().nth(1) == Some(name))
    };
    assert!(fail("nic"), "no NIC line:\n{t}");
    assert!(t.contains("no interface ens1f0"), "{t}");
    assert!(fail("isolated-cores"), "no isolated-cores line:\n{t}");
    assert!(t.contains("isolcpus=2-9"), "the fix is shown:\n{t}");
    assert!(fail("hugepages"), "{t}");
    assert!(t.contains("fix:"), "{t}");
}

fn bad_profile(name: &str, edit: impl Fn(String) -> String) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read_to_string(profiles().join("dev-veth.toml")).unwrap();
    let path = dir.path().join(format!("{name}.toml"));
    let bad = edit(good.clone());
    assert_ne!(bad, good, "{name}: the edit changed nothing");
    std::fs::write(&path, bad).unwrap();
    let o = linecap(&["check-host", "--profile", path.to_str().unwrap()]);
    (o.status.code(), text(&o))
}

#[test]
fn bad_profiles_exit_2_naming_the_key() {
    for (name, key, edit) in [
        (
            "unknown-key",
            "queue_count",
            Box::new(|s: String| s.replace("queues = 1\n", "queues = 1\nqueue_count = 1\n"))
                as Box<dyn Fn(String) -> String>,
        ),
        (
            "zero-queues",
            "nic.queues",
            Box::new(|s: String| s.replace("queues = 1\n", "queues = 0\n")),
        ),
        (
            "batch-larger-than-ring",
            "memory.batch_bytes",
            Box::new(|s: String| s.replace("ring_slots = 4\n", "ring_bytes = \"256K\"\n")),
        ),
        (
            "remote-metrics",
            "metrics.allow_remote",
            Box::new(|s: String| s.replace("127.0.0.1:9464", "0.0.0.0:9464")),
        ),
    ] {
        let (code, t) = bad_profile(name, edit);
        assert_eq!(code, Some(2), "{name}: {t}");
        assert!(t.contains(key), "{name}: the key {key} is not named: {t}");
    }
}

#[test]
fn capture_takes_profile_defaults_and_flags_win() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cap");
    let json = dir.path().join("report.json");
    let trace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/traces")
        .read_dir()
        .ok()
        .and_then(|mut d| {
            d.find_map(|e| {
                let p = e.ok()?.path();
                p.extension().is_some_and(|x| x == "pcap").then_some(p)
            })
        });
    // A profile of the file backend (2 queues), with the output directory given as a flag.
    let profile = dir.path().join("file.toml");
    let src = match &trace {
        Some(t) => format!("file = \"{}\"", t.display()),
        None => {
            eprintln!("SKIPPED part: no trace in ../shared/traces; using a synthetic source flag");
            "file = \"/nonexistent.pcap\"".into()
        }
    };
    std::fs::write(
        &profile,
        format!(
            "[host]\nname = \"f\"\n[nic]\nbackend = \"file\"\n{src}\nqueues = 2\n\
             [memory]\nbatch_bytes = \"128K\"\nring_slots = 4\n\
             [writer]\nthreads = 2\ndirs = [\"/nonexistent-linecap-profile-dir\"]\ncompress = false\n"
        ),
    )
    .unwrap();
    let mut args = vec![
        "capture",
        "--profile",
        profile.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--report-json",
        json.to_str().unwrap(),
    ];
    if trace.is_none() {
        args.extend(["--source", "synth:64:4:1000"]);
    }
    let o = linecap(&args);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    // --out won over writer.dirs; compress = false from the profile gives plain .erf files.
    let q0 = out.join("q00");
    let files: Vec<String> = std::fs::read_dir(&q0)
        .unwrap_or_else(|e| panic!("{}: {e}\n{t}", q0.display()))
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    assert!(files.iter().any(|f| f.ends_with(".erf")), "{files:?}");
    assert!(!files.iter().any(|f| f.ends_with(".lz4")), "{files:?}");
    if trace.is_some() {
        // The file backend with nic.queues = 2 spreads the trace over two queues.
        assert!(out.join("q01").is_dir(), "{t}");
    }
}

//! Shipping completed captures to a real S3 server (SeaweedFS `weed mini` on
//! 127.0.0.1, started and stopped here), checked independently with boto3.
//! `weed` and boto3 missing FAIL these tests (.ci/setup installs both).

mod common;
#[path = "../../ship/tests/common/weed.rs"]
mod weed;

use common::*;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use weed::Weed;

fn ship_cmd(w: &Weed, out: &Path, prefix: &str) -> Command {
    let mut c = linecap();
    c.arg("capture")
        .arg("--out")
        .arg(out)
        .arg("--ship")
        .arg(format!("s3://{}/{prefix}", w.bucket))
        .arg("--ship-endpoint")
        .arg(w.endpoint())
        .args(["--ship-probe", "probe1", "--no-metrics"])
        .env("AWS_ACCESS_KEY_ID", weed::ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", weed::SECRET_KEY);
    c
}

/// Local completed files (data, index, manifest) by name, with their paths.
fn local_files(out: &Path) -> BTreeMap<String, PathBuf> {
    let mut m = BTreeMap::new();
    // Files come and go while this looks (rotation, --ship-then-delete).
    let Ok(rd) = std::fs::read_dir(out) else {
        return m;
    };
    for q in rd.flatten() {
        let q = q.path();
        if !q.is_dir() {
            continue;
        }
        let Ok(rd) = std::fs::read_dir(&q) else {
            continue;
        };
        for f in rd.flatten() {
            let n = f.file_name().into_string().unwrap();
            if !n.starts_with('.') {
                m.insert(n, f.path());
            }
        }
    }
    m
}

/// The objects' file names (last key part) with (size, sha256, mtime), and
/// a check that every key is in the partitioned layout.
fn objects_by_name(w: &Weed, prefix: &str) -> BTreeMap<String, (u64, String, f64)> {
    let mut m = BTreeMap::new();
    for (k, v) in w.objects(prefix) {
        let parts: Vec<&str> = k.split('/').collect();
        assert_eq!(parts.len(), 7, "{k}");
        assert_eq!(parts[1], "probe1", "{k}");
        assert_eq!(parts[2], "main", "{k}");
        assert!(
            parts[3].starts_with('q') && parts[5].starts_with("hour="),
            "{k}"
        );
        assert!(parts[4].starts_with("date=") && parts[4].len() == 15, "{k}");
        assert!(parts[6].starts_with(parts[3]), "{k}");
        assert!(m.insert(parts[6].to_string(), v).is_none(), "duplicate {k}");
    }
    m
}

/// Every listed manifest's data object is listed too; every listed data
/// object has its full size. Returns how many listings were taken.
fn watch_bucket(
    w: &Weed,
    prefix: &str,
    sizes: Option<&BTreeMap<String, u64>>,
) -> Result<(), String> {
    let list = w.list(prefix);
    let names: BTreeMap<String, u64> = list
        .iter()
        .map(|(k, s)| (k.rsplit('/').next().unwrap().to_string(), *s))
        .collect();
    if names.len() != list.len() {
        return Err(format!("two objects with one name: {list:?}"));
    }
    for (n, s) in &names {
        if let Some(data) = n.strip_suffix(".json")
            && !names.contains_key(data)
        {
            return Err(format!("manifest {n} visible before its data"));
        }
        if let Some(sz) = sizes.and_then(|m| m.get(n))
            && sz != s
        {
            return Err(format!("{n} visible with {s} bytes of {sz}"));
        }
    }
    Ok(())
}

#[test]
fn a_capture_with_rotation_ships_every_file() {
    let tmp = tempfile::tempdir().unwrap();
    let w = Weed::start(&tmp.path().join("weed"), "caps", true);
    let out = tmp.path().join("cap");
    let rep = tmp.path().join("r.json");
    let mut child = ship_cmd(&w, &out, "rot")
        .args(["--source", "synth:300:200:300000:100000", "--spread", "1"])
        .args(["-C", "512K", "--batch-bytes", "64K"])
        .arg("--report-json")
        .arg(&rep)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lists = 0;
    while child.try_wait().unwrap().is_none() {
        watch_bucket(&w, "rot/", None).unwrap();
        lists += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(child.wait().unwrap().success(), "{err}");
    let r = report(&rep);
    assert_balanced(&r);
    assert_eq!(r["ship"]["left_files"], 0, "{err}");
    let local = local_files(&out);
    let objs = objects_by_name(&w, "rot/");
    assert!(local.len() >= 6, "rotation made several files: {local:?}");
    assert_eq!(
        local.keys().collect::<Vec<_>>(),
        objs.keys().collect::<Vec<_>>()
    );
    for (n, p) in &local {
        assert_eq!(objs[n].1, weed::sha256_hex(p), "{n}");
        if let Some(data) = n.strip_suffix(".json") {
            assert!(objs[n].2 >= objs[data].2, "{n} stored before its data");
        }
    }
    eprintln!("{lists} listings during the capture");
}

#[test]
fn kill_9_mid_multipart_then_a_restart_completes_it_once() {
    let tmp = tempfile::tempdir().unwrap();
    let w = Weed::start(&tmp.path().join("weed"), "caps", true);
    let out = tmp.path().join("cap");
    // Two 12 MB plain-ERF files, uploaded in 5 MiB parts at 3 MB/s.
    let mut child = ship_cmd(&w, &out, "k9")
        .args([
            "--source",
            "synth:1500:100:16000",
            "--no-compress",
            "-C",
            "12M",
        ])
        .args(["--ship-part-size", "5M", "--ship-bandwidth", "3M"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let journal = out.join("q00/.ship-journal");
    let end = Instant::now() + Duration::from_secs(120);
    loop {
        let j = std::fs::read_to_string(&journal).unwrap_or_default();
        if j.lines().any(|l| l.starts_with("P ")) {
            break;
        }
        assert!(Instant::now() < end, "no part uploaded in 120 s: {j}");
        assert!(
            child.try_wait().unwrap().is_none(),
            "linecap ended before a part went up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let sizes: BTreeMap<String, u64> = local_files(&out)
        .iter()
        .map(|(n, p)| (n.clone(), std::fs::metadata(p).unwrap().len()))
        .collect();
    watch_bucket(&w, "k9/", Some(&sizes)).unwrap();
    let first = &sizes.keys().find(|n| n.ends_with(".erf")).unwrap().clone();
    assert!(
        !w.list("k9/")
            .iter()
            .any(|(k, _)| k.ends_with(first.as_str())),
        "the interrupted multipart object must not be visible"
    );
    assert_eq!(w.uploads(), 1, "one multipart upload in progress");
    // Restart on the same directory: the pending upload resumes and completes.
    let rep = tmp.path().join("r.json");
    let mut child = ship_cmd(&w, &out, "k9")
        .args(["--source", "synth:1500:100:1", "--no-compress", "-C", "12M"])
        .args(["--ship-part-size", "5M", "--ship-drain-timeout", "180"])
        .arg("--report-json")
        .arg(&rep)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut all_sizes = sizes.clone();
    while child.try_wait().unwrap().is_none() {
        for (n, p) in local_files(&out) {
            all_sizes
                .entry(n)
                .or_insert_with(|| std::fs::metadata(&p).map_or(0, |m| m.len()));
        }
        watch_bucket(&w, "k9/", Some(&all_sizes)).unwrap();
        std::thread::sleep(Duration::from_millis(150));
    }
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(child.wait().unwrap().success(), "{err}");
    assert_eq!(report(&rep)["ship"]["left_files"], 0, "{err}");
    let local = local_files(&out);
    let objs = objects_by_name(&w, "k9/");
    assert_eq!(
        local.keys().collect::<Vec<_>>(),
        objs.keys().collect::<Vec<_>>()
    );
    for (n, p) in &local {
        assert_eq!(objs[n].1, weed::sha256_hex(p), "{n}");
    }
    assert_eq!(
        w.uploads(),
        0,
        "the interrupted upload was completed, not left or duplicated"
    );
}

/// Every counted drop of every queue.
fn drops(r: &serde_json::Value) -> u64 {
    total(r, |q| {
        q["dropped"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap_or(0))
            .sum()
    })
}

fn metric(addr: &str, name: &str) -> Option<f64> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    body.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn the_store_down_for_20_s_loses_nothing_and_the_backlog_drains() {
    let tmp = tempfile::tempdir().unwrap();
    let mut w = Weed::start(&tmp.path().join("weed"), "caps", true);
    let out = tmp.path().join("cap");
    let rep = tmp.path().join("r.json");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut c = linecap();
    c.arg("capture")
        .arg("--out")
        .arg(&out)
        .arg("--ship")
        .arg("s3://caps/down")
        .arg("--ship-endpoint")
        .arg(w.endpoint())
        .args(["--ship-probe", "probe1"])
        .arg("--metrics")
        .arg(&addr)
        .env("AWS_ACCESS_KEY_ID", weed::ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", weed::SECRET_KEY);
    let mut child = c
        .args([
            "--source",
            "synth:300:100:-:20000",
            "--duration",
            "40",
            "-C",
            "256K",
            "--batch-bytes",
            "64K",
        ])
        .arg("--report-json")
        .arg(&rep)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(5));
    w.stop();
    let down = Instant::now();
    let mut backlog_max = 0.0f64;
    while down.elapsed() < Duration::from_secs(20) {
        if let Some(b) = metric(&addr, "linecap_ship_backlog_files") {
            backlog_max = backlog_max.max(b);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    w.restart();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(child.wait().unwrap().success(), "{err}");
    assert!(
        backlog_max >= 2.0,
        "the backlog grew while the store was down: {backlog_max}\n{err}"
    );
    let r = report(&rep);
    assert_balanced(&r);
    assert_eq!(drops(&r), 0, "{r}");
    assert_eq!(r["ship"]["left_files"], 0, "{err}");
    assert!(
        r["ship"]["failures"]
            .as_object()
            .is_some_and(|f| !f.is_empty()),
        "{r}"
    );
    let local = local_files(&out);
    let objs = objects_by_name(&w, "down/");
    assert_eq!(
        local.keys().collect::<Vec<_>>(),
        objs.keys().collect::<Vec<_>>()
    );
    for (n, p) in &local {
        assert_eq!(objs[n].1, weed::sha256_hex(p), "{n}");
    }
}

#[test]
fn wrong_credentials_or_a_missing_bucket_are_said_and_the_capture_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let w = Weed::start(&tmp.path().join("weed"), "caps", true);
    let test = |bucket: &str, secret: &str| {
        let o = linecap()
            .args(["ship", "--test", "--ship"])
            .arg(format!("s3://{bucket}/t"))
            .arg("--ship-endpoint")
            .arg(w.endpoint())
            .env("AWS_ACCESS_KEY_ID", weed::ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", secret)
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        )
    };
    let (code, text) = test("caps", weed::SECRET_KEY);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("ship test passed"), "{text}");
    let (code, text) = test("caps", "wrong");
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("FAIL  put: credentials:"), "{text}");
    let (code, text) = test("nosuchbucket", weed::SECRET_KEY);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("FAIL  put: bucket:"), "{text}");

    for (bucket, secret, word) in [
        ("caps", "wrong", "credentials"),
        ("nosuchbucket", weed::SECRET_KEY, "bucket"),
    ] {
        let out = tmp.path().join(format!("cap-{word}"));
        let rep = tmp.path().join(format!("r-{word}.json"));
        let o = linecap()
            .arg("capture")
            .args(["--source", "synth:200:10:5000", "-C", "64K", "--no-metrics"])
            .arg("--out")
            .arg(&out)
            .arg("--ship")
            .arg(format!("s3://{bucket}/t"))
            .arg("--ship-endpoint")
            .arg(w.endpoint())
            .args(["--ship-drain-timeout", "2"])
            .arg("--report-json")
            .arg(&rep)
            .env("AWS_ACCESS_KEY_ID", weed::ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", secret)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "the capture itself runs: {err}");
        assert!(
            err.contains("WARNING") && err.contains(&format!("{word}:")),
            "{err}"
        );
        let r = report(&rep);
        assert_balanced(&r);
        assert!(
            r["ship"]["failures"][word].as_u64().unwrap_or(0) >= 1,
            "{r}"
        );
        assert!(r["ship"]["left_files"].as_u64().unwrap() >= 1, "{r}");
        assert!(err.contains("left for the next start"), "{err}");
    }
}

#[test]
fn ship_then_delete_keeps_local_space_bounded_and_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let w = Weed::start(&tmp.path().join("weed"), "caps", true);
    let out = tmp.path().join("cap");
    let rep = tmp.path().join("r.json");
    let budget = 4u64 << 20;
    let mut child = ship_cmd(&w, &out, "del")
        .args([
            "--source",
            "synth:1000:100:-:1500",
            "--duration",
            "12",
            "--no-compress",
        ])
        .args([
            "-C",
            "256K",
            "--batch-bytes",
            "64K",
            "--disk-budget",
            "4M",
            "--ship-then-delete",
        ])
        .arg("--report-json")
        .arg(&rep)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut peak = 0;
    while child.try_wait().unwrap().is_none() {
        // Every file in the queue directory, hidden ones too (not the journal).
        let used: u64 = std::fs::read_dir(out.join("q00"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name() != ".ship-journal")
            .map(|e| e.metadata().map_or(0, |m| m.len()))
            .sum();
        peak = peak.max(used);
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let mut outp = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut outp)
        .unwrap();
    assert!(child.wait().unwrap().success(), "{err}\n{outp}");
    assert!(
        peak <= budget,
        "local space {peak} over the budget {budget}"
    );
    let r = report(&rep);
    assert_balanced(&r);
    assert_eq!(drops(&r), 0, "{r}");
    assert_eq!(r["ship"]["left_files"], 0, "{err}");
    assert!(
        local_files(&out).is_empty(),
        "everything shipped was deleted locally"
    );
    // Nothing lost: the manifests in the bucket add up to every packet written.
    let objs = w
        .py(
            "tot = 0\n\
             for page in s3.get_paginator('list_objects_v2').paginate(Bucket='caps', Prefix='del/'):\n\
             \x20   for o in page.get('Contents', []):\n\
             \x20       if o['Key'].endswith('.json'):\n\
             \x20           tot += json.loads(s3.get_object(Bucket='caps', Key=o['Key'])['Body'].read())['packets']\n\
             print(tot)",
        )
        .unwrap();
    let written = total(&r, |q| q["written"].as_u64().unwrap_or(0));
    assert_eq!(objs.trim().parse::<u64>().unwrap(), written, "{r}");
    assert!(written > 10_000, "{r}");
}

//! The shipper against a real S3 server (SeaweedFS on 127.0.0.1), checked
//! independently with boto3.

mod common;
use common::weed::{self, Weed};

use std::fs;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use linecap_ship::{S3Target, ShipConfig, Shipper};

fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn target(w: &Weed, bucket: &str, key: &str, secret: &str) -> S3Target {
    S3Target {
        bucket: bucket.into(),
        prefix: "site/a".into(),
        endpoint: w.endpoint(),
        region: "us-east-1".into(),
        path_style: true,
        access_key: key.into(),
        secret_key: secret.into(),
        session_token: None,
    }
}

fn write_completed(dir: &Path, seq: u64, data: &[u8], idx: bool) -> String {
    let name = format!("q01-{seq:08}-20260301T1{seq}0000.000000000Z.erf.lz4");
    fs::write(dir.join(&name), data).unwrap();
    if idx {
        fs::write(dir.join(format!("{name}.idx")), noise(3000, seq + 99)).unwrap();
    }
    fs::write(
        dir.join(format!("{name}.json")),
        format!("{{\"seq\":{seq}}}"),
    )
    .unwrap();
    name
}

#[test]
fn ships_every_file_checked_by_boto3_and_a_restart_sends_nothing_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let w = Weed::start(&tmp.path().join("weed"), "caps", true);
    let q = tmp.path().join("cap/q01");
    fs::create_dir_all(&q).unwrap();
    let small = write_completed(&q, 1, &noise(100_000, 1), true);
    let big = write_completed(&q, 2, &noise(12 << 20, 2), false);
    let cfg = ShipConfig {
        s3: Some(target(&w, "caps", weed::ACCESS_KEY, weed::SECRET_KEY)),
        probe: "p1".into(),
        part_bytes: 5 << 20,
        drain_timeout: Duration::from_secs(60),
        ..ShipConfig::default()
    };
    let dirs = vec![("main".to_string(), tmp.path().join("cap"))];
    let s = Shipper::start(cfg.clone(), dirs.clone(), None).unwrap();
    let r = s.finish();
    assert_eq!(r.left_files, 0, "{r:?}");
    assert_eq!(r.files_shipped, 2, "{r:?}");
    let objs = w.objects("site/a/");
    let prefix = "site/a/p1/main/q01/date=2026-03-01";
    let mut want = Vec::new();
    for (n, hour) in [(&small, "11"), (&big, "12")] {
        want.push(format!("{prefix}/hour={hour}/{n}"));
        want.push(format!("{prefix}/hour={hour}/{n}.json"));
    }
    want.push(format!("{prefix}/hour=11/{small}.idx"));
    want.sort();
    assert_eq!(objs.keys().cloned().collect::<Vec<_>>(), want);
    for (k, (size, sha, _)) in &objs {
        let local = q.join(k.rsplit('/').next().unwrap());
        assert_eq!(*size, fs::metadata(&local).unwrap().len(), "{k}");
        assert_eq!(sha, &weed::sha256_hex(&local), "{k}");
    }
    // The manifest goes last.
    for n in [&small, &big] {
        let data = objs
            .iter()
            .find(|(k, _)| k.ends_with(n.as_str()))
            .unwrap()
            .1
            .2;
        let man = objs
            .iter()
            .find(|(k, _)| k.ends_with(&format!("{n}.json")))
            .unwrap()
            .1
            .2;
        assert!(man >= data, "{n}: manifest {man} before data {data}");
    }
    assert_eq!(w.uploads(), 0, "no multipart upload left open");
    // A restart ships nothing again.
    let s = Shipper::start(cfg, dirs, None).unwrap();
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(s.counters().objects_uploaded.load(Ordering::Relaxed), 0);
    let r = s.finish();
    assert_eq!((r.left_files, r.files_shipped), (0, 0), "{r:?}");
}

#[test]
fn ship_test_says_what_failed() {
    let tmp = tempfile::tempdir().unwrap();
    let w = Weed::start(&tmp.path().join("weed"), "caps", true);
    let ok = ShipConfig {
        s3: Some(target(&w, "caps", weed::ACCESS_KEY, weed::SECRET_KEY)),
        ..ShipConfig::default()
    };
    let steps = linecap_ship::shipper::self_test(&ok);
    assert!(steps.iter().all(|(_, r)| r.is_ok()), "{steps:?}");
    assert_eq!(steps.len(), 4, "{steps:?}");
    assert!(w.list("").is_empty(), "the probe object is deleted");

    let bad_secret = ShipConfig {
        s3: Some(target(&w, "caps", weed::ACCESS_KEY, "wrong")),
        ..ShipConfig::default()
    };
    let steps = linecap_ship::shipper::self_test(&bad_secret);
    let e = steps[0].1.clone().unwrap_err();
    assert!(e.starts_with("credentials:"), "{e}");

    let bad_key = ShipConfig {
        s3: Some(target(&w, "caps", "nobody", "wrong")),
        ..ShipConfig::default()
    };
    let e = linecap_ship::shipper::self_test(&bad_key)[0]
        .1
        .clone()
        .unwrap_err();
    assert!(e.starts_with("credentials:"), "{e}");

    let no_bucket = ShipConfig {
        s3: Some(target(
            &w,
            "nosuchbucket",
            weed::ACCESS_KEY,
            weed::SECRET_KEY,
        )),
        ..ShipConfig::default()
    };
    let e = linecap_ship::shipper::self_test(&no_bucket)[0]
        .1
        .clone()
        .unwrap_err();
    assert!(e.starts_with("bucket:"), "{e}");

    let mut no_tcp = target(&w, "caps", weed::ACCESS_KEY, weed::SECRET_KEY);
    no_tcp.endpoint = "http://127.0.0.1:1".into();
    let e = linecap_ship::shipper::self_test(&ShipConfig {
        s3: Some(no_tcp),
        ..ShipConfig::default()
    })[0]
        .1
        .clone()
        .unwrap_err();
    assert!(e.starts_with("TCP:"), "{e}");

    let mut no_dns = target(&w, "caps", weed::ACCESS_KEY, weed::SECRET_KEY);
    no_dns.endpoint = "http://no-such-host.invalid:8333".into();
    let e = linecap_ship::shipper::self_test(&ShipConfig {
        s3: Some(no_dns),
        ..ShipConfig::default()
    })[0]
        .1
        .clone()
        .unwrap_err();
    assert!(e.starts_with("DNS:"), "{e}");

    let mut tls = target(&w, "caps", weed::ACCESS_KEY, weed::SECRET_KEY);
    tls.endpoint = tls.endpoint.replace("http://", "https://");
    let e = linecap_ship::shipper::self_test(&ShipConfig {
        s3: Some(tls),
        ..ShipConfig::default()
    })[0]
        .1
        .clone()
        .unwrap_err();
    assert!(e.starts_with("TLS:"), "{e}");
}

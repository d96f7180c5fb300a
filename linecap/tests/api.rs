//! The control API against a live capture (a paced synthetic source, which
//! numbers its frames): authentication, jobs added and stopped while frames
//! flow, exact per-job accounting, and bad requests that leave the capture
//! untouched; `/v1/query` and `linecap ctl query` against `linecap query`
//! and tcpdump; `/v1/storage/test` against SeaweedFS; runtime jobs on
//! `/metrics`. The veth version (AF_XDP, the generator) is in `api_veth.rs`.

mod common;
#[path = "../../ship/tests/common/weed.rs"]
mod weed;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;
use linecap::api::ApiListen;
use linecap::ctl::request;
use linecap_reader::read::{CaptureReader, Packet};
use serde_json::{Value, json};

const TOKEN: &str = "test-token-0123456789abcdef";

struct Capture {
    child: Child,
    api: ApiListen,
    dir: PathBuf,
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn token_file(dir: &Path, mode: u32) -> PathBuf {
    let p = dir.join("api.token");
    std::fs::write(&p, format!("# test token\n{TOKEN}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}

/// A capture of 4 synthetic flows at `pps`, with the API on a socket.
fn start(dir: &Path, pps: u64, extra: &[&str]) -> Capture {
    start_env(dir, pps, extra, &[])
}

/// [`start`] with environment variables (the S3 keys); `--metrics` in
/// `extra` replaces the default `--no-metrics`.
fn start_env(dir: &Path, pps: u64, extra: &[&str], env: &[(&str, &str)]) -> Capture {
    let sock = dir.join("api.sock");
    let tok = token_file(dir, 0o600);
    let metrics = if extra.contains(&"--metrics") {
        None
    } else {
        Some("--no-metrics")
    };
    let child = linecap()
        .envs(env.iter().copied())
        .args(["capture", "--source", &format!("synth:64:4:-:{pps}")])
        .arg("--out")
        .arg(dir.join("main"))
        .arg("--api")
        .arg(format!("unix:{}", sock.display()))
        .arg("--api-token")
        .arg(&tok)
        .args(["--duration", "60", "--flush-ms", "20", "--report-json"])
        .arg(dir.join("report.json"))
        .args(metrics)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(20);
    while !sock.exists() {
        assert!(Instant::now() < end, "the API socket never appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
    Capture {
        child,
        api: ApiListen::Unix(sock),
        dir: dir.to_path_buf(),
    }
}

fn call(c: &Capture, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    call_raw(
        c,
        Some(TOKEN),
        method,
        path,
        body.map(|b| b.to_string().into_bytes()),
    )
}

fn call_raw(
    c: &Capture,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Option<Vec<u8>>,
) -> (u16, Value) {
    let a = request(&c.api, token, method, path, body.as_deref()).unwrap();
    let v = serde_json::from_slice(&a.body).unwrap_or(Value::Null);
    (a.status, v)
}

/// `f` of every frame in a job's files, in file order.
fn of_frames<T>(dir: &Path, f: impl Fn(&[u8]) -> T) -> Vec<T> {
    let mut out = Vec::new();
    for file in files_with(dir, ".erf.lz4") {
        let mut r = CaptureReader::open(&file).unwrap();
        let mut p = Packet::default();
        while r.next(&mut p).unwrap() {
            out.push(f(&p.data));
        }
    }
    out
}

/// Sequence numbers of the synthetic frames in a job's files.
fn sequences(dir: &Path) -> Vec<u64> {
    let mut out = of_frames(dir, |d| u64::from_be_bytes(d[42..50].try_into().unwrap()));
    out.sort_unstable();
    out
}

fn stop(mut c: Capture) -> (Value, String) {
    signal(&c.child, "TERM");
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(_s) = c.child.try_wait().unwrap() {
            break;
        }
        assert!(Instant::now() < end, "the capture did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut err = String::new();
    use std::io::Read;
    if let Some(mut e) = c.child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    (report(&c.dir.join("report.json")), err)
}

#[test]
fn a_job_added_and_stopped_while_frames_flow_keeps_exactly_its_frames_and_the_main_job_loses_none()
{
    let d = tempfile::tempdir().unwrap();
    let c = start(d.path(), 20_000, &[]);
    std::thread::sleep(Duration::from_millis(300));

    let (st, v) = call(
        &c,
        "POST",
        "/v1/jobs",
        Some(json!({"name": "one", "directory": "one", "filter": "udp src port 1025"})),
    );
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["state"], "running");
    assert_eq!(v["added_at_runtime"], true);
    // Every frame the main job had not seen yet went through the new job.
    let (_, main) = call(&c, "GET", "/v1/jobs/main", None);
    let added_at = main["seen"].as_u64().unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let (_, main) = call(&c, "GET", "/v1/jobs/main", None);
    let stopped_after = main["seen"].as_u64().unwrap();
    let (st, stopped) = call(&c, "DELETE", "/v1/jobs/one", None);
    assert_eq!(st, 200, "{stopped}");
    assert_eq!(stopped["state"], "stopped");
    assert_eq!(stopped["balanced"], true, "{stopped}");

    // The job's files: flow 1's frames (seq ≡ 1 mod 4), none missing from
    // the first to the last, covering [added_at, stopped_after).
    let seqs = sequences(&d.path().join("one"));
    assert!(!seqs.is_empty());
    assert!(seqs.iter().all(|s| s % 4 == 1), "only the filter's frames");
    let (first, last) = (seqs[0], *seqs.last().unwrap());
    assert_eq!(
        seqs,
        (first..=last).filter(|s| s % 4 == 1).collect::<Vec<_>>(),
        "no gap"
    );
    assert!(
        first <= added_at + 4,
        "first {first} after the add returned at {added_at}"
    );
    assert!(
        last + 4 >= stopped_after,
        "last {last} before the stop began at {stopped_after}"
    );
    assert_eq!(stopped["written"].as_u64().unwrap(), seqs.len() as u64);
    let filtered = stopped["queues"][0]["dropped"]["filter"].as_u64().unwrap();
    assert_eq!(
        stopped["seen"].as_u64().unwrap(),
        seqs.len() as u64 + filtered
    );
    // Its last manifest says it stopped.
    let manifests = files_with(&d.path().join("one"), ".json");
    assert!(!manifests.is_empty());
    let last_manifest: Value =
        serde_json::from_slice(&std::fs::read(manifests.last().unwrap()).unwrap()).unwrap();
    assert_eq!(
        last_manifest["capture"]["state"], "stopped",
        "{last_manifest}"
    );
    // Its counters are final: the same a second later, and kept in the status.
    std::thread::sleep(Duration::from_millis(300));
    let (_, again) = call(&c, "GET", "/v1/jobs/one", None);
    assert_eq!(again["written"], stopped["written"]);
    assert_eq!(again["seen"], stopped["seen"]);
    let (st, status) = call(&c, "GET", "/v1/status", None);
    assert_eq!(st, 200);
    assert_eq!(status["jobs"].as_array().unwrap().len(), 2);
    assert_eq!(status["running_jobs"], 1);

    let (r, _) = stop(c);
    assert_balanced(&r);
    // The final report has the stopped job with the counters the API gave.
    let one = r["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["name"] == "one")
        .unwrap();
    assert_eq!(one["written"], stopped["written"]);
    assert_eq!(one["seen"], stopped["seen"]);
    // The main job, running all along, has every frame: no drop anywhere.
    let main_seqs = sequences(&d.path().join("main"));
    let n = main_seqs.len() as u64;
    assert_eq!(main_seqs, (0..n).collect::<Vec<_>>());
    let m = r["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["name"] == "main")
        .unwrap();
    assert_eq!(
        (m["written"].as_u64(), m["dropped"].as_u64()),
        (Some(n), Some(0))
    );
}

/// The (source, destination) IPv4 addresses of every frame in a job's files.
fn ipv4_pairs(dir: &Path) -> Vec<([u8; 4], [u8; 4])> {
    of_frames(dir, |d| {
        (d[26..30].try_into().unwrap(), d[30..34].try_into().unwrap())
    })
}

/// `a.b.c.d` of four address bytes.
fn dotted(a: [u8; 4]) -> String {
    format!("{}.{}.{}.{}", a[0], a[1], a[2], a[3])
}

#[test]
fn a_job_added_with_anonymisation_to_a_capture_that_parses_nothing_anonymises_every_frame() {
    // The main job has no policy that needs the parse (the worker starts on
    // its unparsed fast path); the job added at runtime anonymises both
    // addresses, so from then on the worker must parse. Before 2026-12-03 it
    // did not, and the added job wrote every address in clear.
    let d = tempfile::tempdir().unwrap();
    // A fixture key (32 bytes as 64 hex digits), private as the API requires.
    let key = d.path().join("anon.key");
    std::fs::write(
        &key,
        "00112233445566778899aabbccddeeff0f1e2d3c4b5a69788796a5b4c3d2e1f0\n",
    )
    .unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let c = start(d.path(), 20_000, &[]);
    std::thread::sleep(Duration::from_millis(300));
    let (st, v) = call(
        &c,
        "POST",
        "/v1/jobs",
        Some(json!({"name": "anon", "directory": "anon", "anonymize_key": key})),
    );
    assert_eq!(st, 201, "{v}");
    std::thread::sleep(Duration::from_millis(500));
    let (st, stopped) = call(&c, "DELETE", "/v1/jobs/anon", None);
    assert_eq!(st, 200, "{stopped}");
    let (r, _) = stop(c);
    assert_balanced(&r);

    // The synthetic flows: 10.0.0.0-3 -> 10.255.0.1, kept as they are by the
    // main job.
    let main = ipv4_pairs(&d.path().join("main"));
    assert!(!main.is_empty());
    let (dst, srcs) = (main[0].1, [0u8, 1, 2, 3].map(|i| [10, 0, 0, i]));
    assert!(main.iter().all(|(s, t)| srcs.contains(s) && *t == dst));
    // The added job's: every address as `linecap anonymize` maps it.
    let input: Vec<String> = srcs.iter().chain([&dst]).map(|a| dotted(*a)).collect();
    let mapped: Vec<String> = anonymize(&key, &(input.join("\n") + "\n"))
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(mapped.len(), 5, "{mapped:?}");
    let anon = ipv4_pairs(&d.path().join("anon"));
    assert_eq!(anon.len() as u64, stopped["written"].as_u64().unwrap());
    assert!(!anon.is_empty());
    for (s, t) in &anon {
        assert!(
            mapped[..4].contains(&dotted(*s)),
            "source {} is not an anonymised synthetic source ({mapped:?})",
            dotted(*s)
        );
        assert_eq!(dotted(*t), mapped[4], "destination");
    }
}

#[test]
fn without_the_token_or_with_a_wrong_one_every_route_answers_401() {
    let d = tempfile::tempdir().unwrap();
    let c = start(d.path(), 1000, &[]);
    for path in ["/v1/status", "/v1/jobs", "/v1/jobs/main"] {
        assert_eq!(call_raw(&c, None, "GET", path, None).0, 401, "{path}");
        assert_eq!(
            call_raw(&c, Some("wrong-token-0123456789abcd"), "GET", path, None).0,
            401
        );
        assert_eq!(call_raw(&c, Some("short"), "GET", path, None).0, 401);
        assert_eq!(
            call_raw(&c, Some(TOKEN), "GET", path, None).0,
            200,
            "{path}"
        );
    }
    let (st, _) = call_raw(&c, None, "DELETE", "/v1/jobs/main", None);
    assert_eq!(st, 401);
    // The OpenAPI document is public, and is the one in docs/.
    let (st, doc) = call_raw(&c, None, "GET", "/v1/openapi.json", None);
    assert_eq!(st, 200);
    assert_eq!(doc["openapi"], "3.0.3");
    let (r, _) = stop(c);
    assert_balanced(&r);
}

#[test]
fn bad_requests_get_4xx_naming_the_field_and_the_capture_goes_on() {
    let d = tempfile::tempdir().unwrap();
    let c = start(d.path(), 5000, &[]);
    let post = |body: &[u8]| call_raw(&c, Some(TOKEN), "POST", "/v1/jobs", Some(body.to_vec()));
    let (st, v) = post(b"{not json");
    assert_eq!(st, 400, "{v}");
    let (st, v) = post(&vec![b' '; 70 * 1024]);
    assert_eq!(st, 413, "{v}");
    let (st, v) = post(br#"{"name":"x","directory":"x","colour":"red"}"#);
    assert_eq!(st, 400);
    assert!(
        v["error"]["message"].as_str().unwrap().contains("colour"),
        "{v}"
    );
    let (st, v) = post(br#"{"name":"x","directory":"x","filter":"tcp port"}"#);
    assert_eq!(
        (st, v["error"]["field"].as_str()),
        (400, Some("filter")),
        "{v}"
    );
    let (st, v) = post(br#"{"name":"x","directory":"x","sample":"sometimes"}"#);
    assert_eq!(
        (st, v["error"]["field"].as_str()),
        (400, Some("sample")),
        "{v}"
    );
    let (st, v) = post(br#"{"name":"x","directory":"x","snaplen":3}"#);
    assert_eq!(
        (st, v["error"]["field"].as_str()),
        (400, Some("snaplen")),
        "{v}"
    );
    let (st, v) = post(br#"{"name":"x","directory":"/etc/x"}"#);
    assert_eq!(
        (st, v["error"]["field"].as_str()),
        (400, Some("directory")),
        "{v}"
    );
    let (st, v) = post(br#"{"name":"x","directory":"../x"}"#);
    assert_eq!(
        (st, v["error"]["field"].as_str()),
        (400, Some("directory")),
        "{v}"
    );
    let (st, v) = post(br#"{"name":"bad name!","directory":"x"}"#);
    assert_eq!(
        (st, v["error"]["field"].as_str()),
        (400, Some("name")),
        "{v}"
    );
    let (st, v) = post(br#"{"name":"main","directory":"x"}"#);
    assert_eq!(
        (st, v["error"]["field"].as_str()),
        (409, Some("name")),
        "{v}"
    );
    let (st, v) = post(br#"{"name":"x","directory":"main/q00"}"#);
    assert_eq!(
        (st, v["error"]["field"].as_str()),
        (400, Some("directory")),
        "{v}"
    );
    let (st, v) = post(br#"{"name":"x","directory":"x","anonymize_key":"/nonexistent/key"}"#);
    assert_eq!(
        (st, v["error"]["field"].as_str()),
        (400, Some("anonymize_key")),
        "{v}"
    );
    assert_eq!(call(&c, "DELETE", "/v1/jobs/nosuch", None).0, 404);
    assert_eq!(
        call(&c, "DELETE", "/v1/jobs/main", None).0,
        409,
        "the last job cannot stop"
    );
    assert_eq!(call(&c, "PUT", "/v1/jobs", None).0, 405);
    assert_eq!(call(&c, "GET", "/v2/nothing", None).0, 404);
    // Jobs beyond --max-jobs (1 + 4 by default) are refused.
    for i in 0..4 {
        let (st, v) = call(
            &c,
            "POST",
            "/v1/jobs",
            Some(json!({"name": format!("j{i}"), "directory": format!("j{i}")})),
        );
        assert_eq!(st, 201, "{v}");
    }
    let (st, v) = call(
        &c,
        "POST",
        "/v1/jobs",
        Some(json!({"name": "j9", "directory": "j9"})),
    );
    assert_eq!(st, 409, "{v}");
    let (st, status) = call(&c, "GET", "/v1/status", None);
    assert_eq!((st, status["running_jobs"].as_u64()), (200, Some(5)));
    let (r, _) = stop(c);
    assert_balanced(&r);
    assert_jobs_balanced(&r);
    assert_eq!(r["jobs"].as_array().unwrap().len(), 5);
}

#[test]
fn a_token_file_others_can_read_is_refused_at_start() {
    let d = tempfile::tempdir().unwrap();
    let tok = token_file(d.path(), 0o644);
    let out = run(linecap()
        .args(["capture", "--source", "synth:64:1:10"])
        .arg("--out")
        .arg(d.path().join("o"))
        .arg("--api")
        .arg(format!("unix:{}", d.path().join("s").display()))
        .arg("--api-token")
        .arg(&tok));
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("chmod 600") && err.contains("api.token"),
        "{err}"
    );
    assert!(!d.path().join("o").exists(), "nothing was created");
    // A TCP listener without a token, and a remote one, are refused too.
    let out = run(linecap()
        .args([
            "capture",
            "--source",
            "synth:64:1:10",
            "--api",
            "127.0.0.1:0",
        ])
        .arg("--out")
        .arg(d.path().join("o")));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--api-token"));
    let out = run(linecap()
        .args(["capture", "--source", "synth:64:1:10", "--api", "0.0.0.0:0"])
        .arg("--api-token")
        .arg(token_file(d.path(), 0o600))
        .arg("--out")
        .arg(d.path().join("o")));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--api-allow-remote"));
}

#[test]
fn linecap_ctl_adds_lists_and_stops_jobs() {
    let d = tempfile::tempdir().unwrap();
    let c = start(d.path(), 2000, &[]);
    let sock = match &c.api {
        ApiListen::Unix(p) => p.clone(),
        ApiListen::Tcp(_) => unreachable!(),
    };
    let ctl = |args: &[&str]| {
        let mut cmd = linecap();
        cmd.arg("ctl")
            .arg("--api")
            .arg(format!("unix:{}", sock.display()))
            .arg("--api-token")
            .arg(d.path().join("api.token"))
            .args(args);
        run(&mut cmd)
    };
    let out = ctl(&["job", "add", "dns", "dns", "--filter", "udp port 53"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = ctl(&["jobs"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("dns") && text.contains("running"), "{text}");
    let out = ctl(&["job", "rm", "dns"]);
    assert!(out.status.success());
    let out = ctl(&["job", "rm", "dns"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("409"));
    let out = ctl(&["status"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["jobs"][1]["state"], "stopped");
    let (r, _) = stop(c);
    assert_balanced(&r);
}

/// schemathesis (PyPI; installed by .ci/setup) against the served OpenAPI
/// document: no 5xx, every response matches the schema, undocumented
/// methods get 405, auth is enforced. Two checks are left out, by design:
/// `positive_data_acceptance`, because what makes a job request valid beyond
/// its JSON shape (a filter libpcap compiles, a key file that exists, a
/// directory inside the job root) cannot be said in JSON Schema, and such
/// requests rightly get 400; and `use_after_free`, because DELETE stops a
/// job and the stopped job stays readable with its final counters.
#[test]
fn schemathesis_finds_no_server_error_and_no_response_off_the_schema() {
    let have = std::process::Command::new("schemathesis")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        have,
        "schemathesis is not installed: bash .ci/setup installs it (pip)"
    );
    let d = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let tok = token_file(d.path(), 0o600);
    let addr = format!("127.0.0.1:{port}");
    let child = linecap()
        .args(["capture", "--source", "synth:64:4:-:2000", "--api", &addr])
        .arg("--api-token")
        .arg(&tok)
        .arg("--out")
        .arg(d.path().join("jobs/main"))
        .args(["--duration", "300", "--no-metrics", "--report-json"])
        .arg(d.path().join("report.json"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let c = Capture {
        child,
        api: ApiListen::Tcp(addr.parse().unwrap()),
        dir: d.path().to_path_buf(),
    };
    let end = Instant::now() + Duration::from_secs(20);
    while request(&c.api, None, "GET", "/v1/openapi.json", None).is_err() {
        assert!(Instant::now() < end, "the API never answered");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = run(std::process::Command::new("schemathesis")
        .env("SCHEMATHESIS_TELEMETRY", "false")
        .args(["run", &format!("http://{addr}/v1/openapi.json")])
        .args(["-H", &format!("Authorization: Bearer {TOKEN}")])
        .args([
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance,use_after_free",
        ])
        // A fixed seed: the same cases on every run, so CI is repeatable.
        .args(["--max-examples", "30", "--no-color", "--seed", "20261201"]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Warnings (requests the API rejects more often than the schema says,
    // see above) are not failures; a failure is listed under "Failures:".
    assert!(
        !text.contains("Failures:") && text.contains("passed"),
        "{text}"
    );
    // The capture went on and still balances.
    let (r, _) = stop(c);
    assert_balanced(&r);
}

/// Now, as epoch seconds with 9 decimals (a `--before` both sides read alike).
fn epoch_arg(ns: u64) -> String {
    format!("{}.{:09}", ns / 1_000_000_000, ns % 1_000_000_000)
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// GET a query over the API: (status, body, trailers).
fn api_query(c: &Capture, path: &str) -> (u16, Vec<u8>, Vec<(String, String)>) {
    let mut body = Vec::new();
    let a = linecap::ctl::request_stream(&c.api, Some(TOKEN), path, &mut body).unwrap();
    if a.status != 200 {
        body = a.error_body;
    }
    (a.status, body, a.trailers)
}

fn frame_count_tshark(file: &Path) -> usize {
    run_ok(
        std::process::Command::new("tshark")
            .args(["-n", "-T", "fields", "-e", "frame.number", "-r"])
            .arg(file),
    )
    .lines()
    .count()
}

#[test]
fn query_over_the_api_and_ctl_is_byte_for_byte_linecap_query_and_tcpdump_agrees() {
    let d = tempfile::tempdir().unwrap();
    let c = start(d.path(), 5000, &[]);
    let main = d.path().join("main");
    let one = d.path().join("one");
    let (st, v) = call(
        &c,
        "POST",
        "/v1/jobs",
        Some(json!({"name": "one", "directory": "one", "filter": "udp src port 1025"})),
    );
    assert_eq!(st, 201, "{v}");
    std::thread::sleep(Duration::from_millis(1500));
    // Everything before this instant is on disk (flushes every 20 ms), and
    // still in the open files: nothing has rotated (-C is 1 GiB by default).
    let before = epoch_arg(now_ns() - 500_000_000);
    assert!(
        files_with(&main, ".erf.lz4").is_empty(),
        "a file was completed: the test wants the open one"
    );
    let sock = match &c.api {
        ApiListen::Unix(p) => p.clone(),
        ApiListen::Tcp(_) => unreachable!(),
    };
    let cases: [(&str, &str, Option<&str>, Vec<&Path>); 4] = [
        // (expr, format, job, the directories linecap query gets)
        (
            "udp src port 1025 or udp src port 1026",
            "pcap",
            None,
            vec![&main, &one],
        ),
        ("udp src port 1027", "pcap", Some("main"), vec![&main]),
        ("", "pcapng", None, vec![&main, &one]),
        ("udp", "erf", Some("one"), vec![&one]),
    ];
    for (expr, fmt, job, dirs) in &cases {
        let tag = format!("{fmt}-{}", job.unwrap_or("all"));
        let path = linecap::ctl::query_path(expr, None, Some(&before), fmt.parse().unwrap(), *job);
        let (st, body, trailers) = api_query(&c, &path);
        assert_eq!(st, 200, "{path}: {}", String::from_utf8_lossy(&body));
        let matched: u64 = trailers
            .iter()
            .find(|(k, _)| k == "linecap-matched")
            .and_then(|(_, v)| v.parse().ok())
            .expect("a Linecap-Matched trailer");
        assert!(
            matched > 100,
            "{tag}: only {matched} packets: fresh data missing?"
        );
        assert!(trailers.contains(&("linecap-errors".into(), "0".into())));
        // linecap query on the same directories, the same arguments.
        let cli_out = d.path().join(format!("cli-{tag}"));
        let mut q = linecap();
        q.arg("query")
            .args(dirs.iter())
            .args(["--before", &before, "-F", fmt, "-w"])
            .arg(&cli_out);
        if !expr.is_empty() {
            q.arg(*expr);
        }
        run_ok(&mut q);
        let cli = std::fs::read(&cli_out).unwrap();
        assert!(body == cli, "{tag}: /v1/query differs from linecap query");
        // linecap ctl query, written to a file and to standard output.
        let ctl_out = d.path().join(format!("ctl-{tag}"));
        let mut ctl = linecap();
        ctl.arg("ctl")
            .arg("--api")
            .arg(format!("unix:{}", sock.display()))
            .arg("--api-token")
            .arg(d.path().join("api.token"))
            .args(["query", "--before", &before, "-F", fmt, "-w"])
            .arg(&ctl_out)
            .args(job.iter().flat_map(|j| ["--job", j]))
            .args(expr.split_whitespace());
        run_ok(&mut ctl);
        assert!(
            std::fs::read(&ctl_out).unwrap() == cli,
            "{tag}: ctl query differs from linecap query"
        );
        if *fmt == "pcap" {
            let mut ctl = linecap();
            ctl.arg("ctl")
                .arg("--api")
                .arg(format!("unix:{}", sock.display()))
                .arg("--api-token")
                .arg(d.path().join("api.token"))
                .args(["query", "--before", &before, "-w", "-"])
                .args(job.iter().flat_map(|j| ["--job", j]))
                .args(expr.split_whitespace());
            let o = run(&mut ctl);
            assert!(o.status.success());
            assert!(o.stdout == cli, "{tag}: ctl query -w - differs");
            // tshark reads the answer; tcpdump on the full read-back of the
            // window finds as many frames.
            let full = d.path().join(format!("full-{tag}.pcap"));
            run_ok(
                linecap()
                    .arg("read")
                    .args(dirs.iter())
                    .args(["--include-partial", "--before", &before, "-w"])
                    .arg(&full),
            );
            let reference = run_ok(
                std::process::Command::new("tcpdump")
                    .args(["-q", "-n", "-r"])
                    .arg(&full)
                    .arg(*expr),
            )
            .lines()
            .count();
            assert_eq!(frame_count_tshark(&cli_out), reference, "{tag}");
            assert_eq!(reference as u64, matched, "{tag}");
        }
    }

    // Bad arguments: 400 naming the parameter, nothing streamed.
    for (path, status, field) in [
        ("/v1/query?format=pcapx", 400, Some("format")),
        ("/v1/query?after=yesterday", 400, Some("after")),
        ("/v1/query?before=2026-13-01T00:00:00Z", 400, Some("before")),
        ("/v1/query?expr=tcp%20port", 400, Some("expr")),
        ("/v1/query?expr=udp&expr=tcp", 400, Some("expr")),
        ("/v1/query?colour=red", 400, Some("colour")),
        ("/v1/query?job=nosuch", 404, Some("job")),
    ] {
        let (st, body, _) = api_query(&c, path);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            (st, v["error"]["field"].as_str()),
            (status, field),
            "{path}: {v}"
        );
    }
    assert_eq!(call(&c, "POST", "/v1/query", None).0, 405);
    assert_eq!(call_raw(&c, None, "GET", "/v1/query", None).0, 401);
    let out = run(linecap()
        .arg("ctl")
        .arg("--api")
        .arg(format!("unix:{}", sock.display()))
        .arg("--api-token")
        .arg(d.path().join("api.token"))
        .args(["query", "-w"])
        .arg(d.path().join("bad.pcap"))
        .args(["tcp", "port"]));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("400 (field expr)"), "{err}");
    assert!(!d.path().join("bad.pcap").exists());
    // Not configured: the storage test says so.
    let (st, v) = call(&c, "POST", "/v1/storage/test", None);
    assert_eq!(st, 409, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not configured"),
        "{v}"
    );
    let (r, _) = stop(c);
    assert_balanced(&r);
}

#[test]
fn storage_test_answers_200_from_seaweedfs_502_for_a_missing_bucket_and_503_when_unreachable() {
    let d = tempfile::tempdir().unwrap();
    let w = weed::Weed::start(&d.path().join("weed"), "caps", true);
    let keys = [
        ("AWS_ACCESS_KEY_ID", weed::ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", weed::SECRET_KEY),
    ];
    let endpoint = w.endpoint();
    for (bucket, endpoint, status) in [
        ("caps", endpoint.as_str(), 200),
        ("nosuchbucket", endpoint.as_str(), 502),
        // Port 1 on loopback: nothing listens, the connection is refused.
        ("caps", "http://127.0.0.1:1", 503),
    ] {
        let dir = d.path().join(format!("c{status}"));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("s3://{bucket}/api-test");
        let c = start_env(
            &dir,
            1000,
            &[
                "--ship",
                &url,
                "--ship-endpoint",
                endpoint,
                "--ship-drain-timeout",
                "2",
            ],
            &keys,
        );
        let (st, v) = call(&c, "POST", "/v1/storage/test", None);
        assert_eq!(st, status, "{v}");
        assert_eq!(v["target"]["bucket"], bucket, "{v}");
        match status {
            200 => {
                assert_eq!(v["ok"], true);
                let steps: Vec<&str> = v["steps"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s["step"].as_str().unwrap())
                    .collect();
                assert_eq!(steps, ["put", "read back", "delete", "check deleted"]);
                // The probe object is gone again.
                assert!(w.list("api-test").is_empty(), "{:?}", w.list("api-test"));
            }
            502 => {
                let m = v["error"]["message"].as_str().unwrap();
                assert!(m.contains("at put") && m.contains("bucket"), "{v}");
            }
            _ => {
                let m = v["error"]["message"].as_str().unwrap();
                assert!(m.contains("TCP"), "{v}");
            }
        }
        // linecap ctl storage-test says the same, with its exit status.
        let sock = dir.join("api.sock");
        let out = run(linecap()
            .arg("ctl")
            .arg("--api")
            .arg(format!("unix:{}", sock.display()))
            .arg("--api-token")
            .arg(dir.join("api.token"))
            .arg("storage-test"));
        assert_eq!(out.status.success(), status == 200, "{out:?}");
        let (r, _) = stop(c);
        assert_balanced(&r);
    }

    // A job added through the API is shipped like the jobs of the start,
    // and its manifests say which clock stamped its records.
    let dir = d.path().join("runtime");
    std::fs::create_dir_all(&dir).unwrap();
    let c = start_env(
        &dir,
        4000,
        &[
            "--ship",
            "s3://caps/rt",
            "--ship-endpoint",
            &endpoint,
            "--ship-probe",
            "p1",
            "-C",
            "64K",
            "--ship-drain-timeout",
            "10",
        ],
        &keys,
    );
    let (st, v) = call(
        &c,
        "POST",
        "/v1/jobs",
        Some(json!({"name": "one", "directory": "one", "filter": "udp src port 1025"})),
    );
    assert_eq!(st, 201, "{v}");
    std::thread::sleep(Duration::from_millis(1500));
    let (st, v) = call(&c, "DELETE", "/v1/jobs/one", None);
    assert_eq!(st, 200, "{v}");
    let local = files_with(&dir.join("one"), ".erf.lz4");
    assert!(!local.is_empty());
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(files_with(&dir.join("one"), ".json")[0].clone()).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["clock"], "synthetic", "{manifest}");
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let shipped = w
            .list("rt/p1/one/q00/")
            .iter()
            .filter(|(k, _)| k.ends_with(".erf.lz4"))
            .count();
        if shipped == local.len() {
            break;
        }
        assert!(
            Instant::now() < end,
            "{shipped} of {} files of the runtime job shipped: {:?}",
            local.len(),
            w.list("rt/")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (r, _) = stop(c);
    assert_balanced(&r);
}

/// One scrape of `/metrics`.
fn scrape(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.split_once("\r\n\r\n").unwrap().1.to_string()
}

/// The value of `name{labels}` (labels as written, in order).
fn sample(text: &str, name: &str, labels: &str) -> Option<f64> {
    let key = format!("{name}{{{labels}}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&key))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn a_job_added_through_the_api_is_on_metrics_and_keeps_its_final_counters_once_stopped() {
    let d = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr = format!("127.0.0.1:{port}");
    let c = start(d.path(), 4000, &["--metrics", &addr]);
    let end = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(Instant::now() < end, "/metrics never answered");
        std::thread::sleep(Duration::from_millis(50));
    }
    let l1 = r#"capture_job="one",queue="0""#;
    assert_eq!(
        sample(&scrape(&addr), "linecap_written_packets_total", l1),
        None
    );
    let (st, v) = call(
        &c,
        "POST",
        "/v1/jobs",
        Some(json!({"name": "one", "directory": "one", "filter": "udp src port 1025"})),
    );
    assert_eq!(st, 201, "{v}");
    std::thread::sleep(Duration::from_millis(800));
    let text = scrape(&addr);
    let promtool = |text: &str| {
        let mut p = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("promtool (Debian prometheus) is needed: .ci/setup installs it");
        use std::io::Write;
        p.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        let o = p.wait_with_output().unwrap();
        assert!(
            o.status.success(),
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    };
    promtool(&text);
    let written = sample(&text, "linecap_written_packets_total", l1).expect("job one on /metrics");
    assert!(written > 0.0, "{text}");
    let filtered = sample(
        &text,
        "linecap_dropped_packets_total",
        &format!("{l1},stage=\"filter\""),
    )
    .unwrap();
    assert!(filtered > written, "3 of 4 flows are filtered out: {text}");
    assert!(sample(&text, "linecap_ring_capacity_slots", l1).is_some());
    // Stopped: the final counters stay (equal to the API's), the ring goes.
    let (st, stopped) = call(&c, "DELETE", "/v1/jobs/one", None);
    assert_eq!(st, 200, "{stopped}");
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..2 {
        let text = scrape(&addr);
        promtool(&text);
        assert_eq!(
            sample(&text, "linecap_written_packets_total", l1),
            Some(stopped["written"].as_u64().unwrap() as f64),
            "{text}"
        );
        assert_eq!(
            sample(&text, "linecap_received_packets_total", l1),
            Some(stopped["seen"].as_u64().unwrap() as f64),
            "{text}"
        );
        assert_eq!(sample(&text, "linecap_ring_capacity_slots", l1), None);
        // The main job goes on.
        assert!(
            sample(
                &text,
                "linecap_written_packets_total",
                r#"capture_job="main",queue="0""#
            )
            .unwrap()
                > 0.0
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let (r, _) = stop(c);
    assert_balanced(&r);
}

#[test]
fn at_most_two_queries_stream_at_once_and_a_client_that_leaves_frees_its_slot() {
    use std::io::{Read, Write};
    let d = tempfile::tempdir().unwrap();
    let c = start(d.path(), 40_000, &[]);
    // Enough packets that an answer cannot fit in the socket's buffers.
    std::thread::sleep(Duration::from_secs(2));
    let sock = match &c.api {
        ApiListen::Unix(p) => p.clone(),
        ApiListen::Tcp(_) => unreachable!(),
    };
    let ask = || {
        let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
        write!(
            s,
            "GET /v1/query?format=pcap HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
        )
        .unwrap();
        s
    };
    // Two clients that do not read: their answers stall, holding both slots.
    let mut stalled = vec![ask(), ask()];
    for s in &mut stalled {
        let mut head = [0u8; 12];
        s.read_exact(&mut head).unwrap();
        assert_eq!(&head, b"HTTP/1.1 200");
    }
    std::thread::sleep(Duration::from_millis(300));
    let (st, body, _) = api_query(&c, "/v1/query?expr=udp");
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(st, 503, "{v}");
    // The other routes are still answered.
    assert_eq!(call(&c, "GET", "/v1/status", None).0, 200);
    // They leave: their threads see the closed connection and end.
    drop(stalled);
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let (st, _, trailers) = api_query(&c, "/v1/query?expr=udp%20src%20port%201025");
        if st == 200 {
            assert!(trailers.iter().any(|(k, _)| k == "linecap-matched"));
            break;
        }
        assert!(Instant::now() < end, "the slots were never freed ({st})");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (r, _) = stop(c);
    assert_balanced(&r);
}

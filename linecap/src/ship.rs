//! The binary's side of shipping (`linecap-ship` does the work): the
//! `--ship*` / `-z` flags (flattened into `capture`), the profile's `[ship]`
//! table, `linecap ship --test`, and starting/finishing the shipper around a
//! capture. Flags win over the profile, the profile over the defaults.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use linecap_ship::{S3Target, ShipConfig, ShipReport, Shipper, config};
use serde::Deserialize;

use crate::values::parse_size;

/// Shipping flags of `linecap capture` (and `linecap ship`).
#[derive(Args, Debug, Clone, Default)]
pub struct ShipArgs {
    /// Upload every completed file, its index and manifest (the manifest last) to this
    /// S3-compatible bucket and prefix; keys PREFIX/PROBE/JOB/qNN/date=YYYY-MM-DD/hour=HH/FILE.
    #[arg(long = "ship", value_name = "s3://BUCKET/PREFIX")]
    pub ship: Option<String>,
    /// S3 endpoint URL (default: https://s3.REGION.amazonaws.com).
    #[arg(long, value_name = "URL")]
    pub ship_endpoint: Option<String>,
    /// Signing region (default us-east-1).
    #[arg(long, value_name = "REGION")]
    pub ship_region: Option<String>,
    /// URL style: path (ENDPOINT/BUCKET/KEY) or virtual (BUCKET.HOST/KEY); default path with
    /// --ship-endpoint, virtual for AWS.
    #[arg(long, value_name = "STYLE", value_parser = ["path", "virtual"])]
    pub ship_url_style: Option<String>,
    /// Credentials file (mode 0600): AWS shared-credentials form or two lines (key, secret);
    /// default: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN.
    #[arg(long, value_name = "FILE")]
    pub ship_credentials: Option<PathBuf>,
    /// Probe name in object keys (default: the host name).
    #[arg(long, value_name = "NAME")]
    pub ship_probe: Option<String>,
    /// Uploader threads (default 2; queues are shared out among them).
    #[arg(long, value_name = "N")]
    pub ship_threads: Option<usize>,
    /// Files of at least SIZE go by multipart upload in parts of SIZE (default 16M, min 5M).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub ship_part_size: Option<u64>,
    /// Cap the upload bandwidth at SIZE bytes per second, all threads together (K, M, G).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub ship_bandwidth: Option<u64>,
    /// Delete a local file (with its index and manifest) once it is shipped.
    #[arg(long)]
    pub ship_then_delete: bool,
    /// Let -W and --disk-budget delete files not yet shipped (each one counted and logged by
    /// name); without it they keep unshipped files (a full budget then drops new batches,
    /// counted as writer drops).
    #[arg(long)]
    pub ship_may_drop: bool,
    /// At a normal exit keep shipping the backlog at most this many seconds (default 60).
    #[arg(long, value_name = "SECONDS")]
    pub ship_drain_timeout: Option<f64>,
    /// Run CMD with each completed file's path as its last argument (like tcpdump -z), through
    /// `sh -c`; its exit status is counted and a failure retried with backoff.
    #[arg(short = 'z', long = "post-rotate", value_name = "CMD")]
    pub post_rotate: Option<String>,
    /// At most N post-rotate commands at once (default 2).
    #[arg(long, value_name = "N")]
    pub post_rotate_jobs: Option<usize>,
}

/// The profile's `[ship]` table (same meanings as the flags).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShipTable {
    /// `s3://BUCKET/PREFIX`.
    pub url: Option<String>,
    /// Endpoint URL.
    pub endpoint: Option<String>,
    /// Region.
    pub region: Option<String>,
    /// `path` or `virtual`.
    pub url_style: Option<String>,
    /// Credentials file.
    pub credentials: Option<PathBuf>,
    /// Probe name.
    pub probe: Option<String>,
    /// Uploader threads.
    pub threads: Option<usize>,
    /// Multipart part size, bytes.
    pub part_bytes: Option<u64>,
    /// Bandwidth cap, bytes per second.
    pub bandwidth_bytes_per_s: Option<u64>,
    /// Delete after shipping.
    #[serde(default)]
    pub then_delete: bool,
    /// Retention may delete unshipped files.
    #[serde(default)]
    pub may_drop: bool,
    /// Drain timeout, seconds.
    pub drain_timeout_s: Option<f64>,
    /// Post-rotate command.
    pub post_rotate: Option<String>,
    /// Post-rotate concurrency.
    pub post_rotate_jobs: Option<usize>,
}

/// Merge flags over the profile table over the defaults; `None` when nothing ships.
pub fn ship_config(a: &ShipArgs, t: Option<&ShipTable>) -> anyhow::Result<Option<ShipConfig>> {
    let t = t.cloned().unwrap_or_default();
    let url = a.ship.clone().or(t.url);
    let post_rotate = a.post_rotate.clone().or(t.post_rotate);
    let then_delete = a.ship_then_delete || t.then_delete;
    let may_drop = a.ship_may_drop || t.may_drop;
    if url.is_none() && post_rotate.is_none() {
        if then_delete || may_drop || a.ship_endpoint.is_some() {
            bail!(
                "--ship-then-delete, --ship-may-drop and --ship-endpoint need --ship or --post-rotate"
            );
        }
        return Ok(None);
    }
    let d = ShipConfig::default();
    let s3 = match url {
        None => None,
        Some(url) => {
            let (bucket, prefix) = config::parse_s3_url(&url).map_err(anyhow::Error::msg)?;
            let region = a
                .ship_region
                .clone()
                .or(t.region)
                .unwrap_or_else(|| "us-east-1".into());
            let endpoint = a.ship_endpoint.clone().or(t.endpoint);
            let path_style = match a.ship_url_style.clone().or(t.url_style).as_deref() {
                Some("path") => true,
                Some("virtual") => false,
                Some(other) => bail!("--ship-url-style {other:?}: path or virtual"),
                None => endpoint.is_some(),
            };
            let endpoint = endpoint.unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                bail!("--ship-endpoint {endpoint:?}: expected http://HOST[:PORT] or https://...");
            }
            let creds = a.ship_credentials.clone().or(t.credentials);
            let (access_key, secret_key, session_token) =
                config::load_credentials(creds.as_deref()).map_err(anyhow::Error::msg)?;
            Some(S3Target {
                bucket,
                prefix,
                endpoint,
                region,
                path_style,
                access_key,
                secret_key,
                session_token,
            })
        }
    };
    let drain = a.ship_drain_timeout.or(t.drain_timeout_s).unwrap_or(60.0);
    if !(0.0..=86_400.0).contains(&drain) {
        bail!("--ship-drain-timeout {drain}: 0 to 86400 seconds");
    }
    let cfg = ShipConfig {
        s3,
        post_rotate,
        post_rotate_jobs: a
            .post_rotate_jobs
            .or(t.post_rotate_jobs)
            .unwrap_or(d.post_rotate_jobs),
        probe: a.ship_probe.clone().or(t.probe).unwrap_or(d.probe),
        threads: a.ship_threads.or(t.threads).unwrap_or(d.threads),
        part_bytes: a.ship_part_size.or(t.part_bytes).unwrap_or(d.part_bytes),
        bandwidth_bytes_per_s: a.ship_bandwidth.or(t.bandwidth_bytes_per_s),
        then_delete,
        may_drop,
        drain_timeout: Duration::from_secs_f64(drain),
        ..d
    };
    cfg.validate().map_err(anyhow::Error::msg)?;
    Ok(Some(cfg))
}

/// What the pipeline gets from a running shipper.
#[derive(Clone)]
pub struct ShipHooks {
    /// Asked before -W / the disk budget delete a file.
    pub may_delete: linecap_writer::series::MayDelete,
    /// Prometheus text appended to `/metrics`.
    pub metrics: Arc<dyn Fn() -> String + Send + Sync>,
    /// Ship a job added while capturing: `(job, its output directory)`.
    pub add_root: AddRoot,
}

/// [`ShipHooks::add_root`]: an error is a journal that cannot be opened.
pub type AddRoot = Arc<dyn Fn(&str, &std::path::Path) -> Result<(), String> + Send + Sync>;

impl std::fmt::Debug for ShipHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ShipHooks")
    }
}

/// Start shipping the jobs' output directories; every shipper thread first
/// moves onto `housekeeping` (the capture's housekeeping cores; empty: left
/// where it starts).
pub fn start(
    cfg: ShipConfig,
    roots: Vec<(String, PathBuf)>,
    housekeeping: &[usize],
) -> anyhow::Result<(Arc<Shipper>, ShipHooks)> {
    if let Some(t) = &cfg.s3 {
        tracing::info!(
            "ship: to s3://{}/{} at {} ({} threads{})",
            t.bucket,
            t.prefix,
            t.endpoint,
            cfg.threads,
            cfg.bandwidth_bytes_per_s
                .map_or(String::new(), |b| format!(", capped at {b} B/s"))
        );
    }
    let pin = pin_to(housekeeping)?;
    let shipper = Arc::new(Shipper::start(cfg, roots, pin).map_err(anyhow::Error::msg)?);
    let hook = shipper.retention_hook();
    let m = shipper.clone();
    let r = shipper.clone();
    let hooks = ShipHooks {
        may_delete: linecap_writer::series::MayDelete(hook),
        metrics: Arc::new(move || linecap_ship::shipper::metrics_text(&m)),
        add_root: Arc::new(move |job, dir| r.add_root(job, dir)),
    };
    Ok((shipper, hooks))
}

/// A shipper thread's pinning to the housekeeping cores (the shipper is
/// started before the capture moves its main thread there, so its threads
/// do not inherit it). A core that cannot be used is refused here, at start.
fn pin_to(cores: &[usize]) -> anyhow::Result<Option<linecap_ship::shipper::PinFn>> {
    use nix::sched::{CpuSet, sched_setaffinity};
    if cores.is_empty() {
        return Ok(None);
    }
    let mut set = CpuSet::new();
    for &c in cores {
        set.set(c)
            .map_err(|e| anyhow::anyhow!("--housekeeping-cores {cores:?}: {e}"))?;
    }
    let cores = cores.to_vec();
    let pin: linecap_ship::shipper::PinFn = Arc::new(move |i| {
        if let Err(e) = sched_setaffinity(nix::unistd::Pid::from_raw(0), &set) {
            tracing::warn!(
                "ship: thread {i} cannot move onto the housekeeping cores {cores:?}: {e}"
            );
        }
    });
    Ok(Some(pin))
}

/// `POST /v1/storage/test` of the control API: `linecap ship --test`'s
/// steps against `cfg`'s store, as (HTTP status, JSON): 200 when every
/// step passed, 503 when the store could not be reached (DNS, TCP, TLS,
/// timeout), 502 when it answered with an error (credentials, bucket,
/// permission, checksum, 5xx), 409 when only a --post-rotate command is
/// configured (no store to test).
pub fn storage_test(cfg: &ShipConfig) -> (u16, serde_json::Value) {
    use linecap_ship::s3::FailKind;
    use serde_json::json;
    let Some(t) = &cfg.s3 else {
        return (
            409,
            json!({"error": {"status": 409, "field": null, "message":
                "shipping runs a --post-rotate command only: there is no object store to test \
                 (give --ship s3://BUCKET/PREFIX)"}}),
        );
    };
    let started = std::time::Instant::now();
    let steps = linecap_ship::shipper::self_test_steps(cfg);
    let seconds = started.elapsed().as_secs_f64();
    let failed = steps
        .iter()
        .find_map(|(step, r)| r.as_ref().err().map(|e| (step, e)));
    let list: Vec<serde_json::Value> = steps
        .iter()
        .map(|(step, r)| match r {
            Ok(m) => json!({"step": step, "ok": true, "message": m}),
            Err(e) => {
                json!({"step": step, "ok": false, "message": linecap_ship::shipper::describe(e)})
            }
        })
        .collect();
    let target = json!({
        "bucket": t.bucket, "prefix": t.prefix, "endpoint": t.endpoint, "region": t.region,
    });
    match failed {
        None => (
            200,
            json!({"ok": true, "target": target, "steps": list, "seconds": seconds}),
        ),
        Some((step, e)) => {
            let status = match e.kind {
                FailKind::Dns | FailKind::Tcp | FailKind::Tls | FailKind::Timeout => 503,
                _ => 502,
            };
            let message = format!(
                "storage test failed at {step}: {}",
                linecap_ship::shipper::describe(e)
            );
            (
                status,
                json!({
                    "error": {"status": status, "field": null, "message": message},
                    "ok": false, "target": target, "steps": list, "seconds": seconds,
                }),
            )
        }
    }
}

/// Drain and stop; print what is left.
pub fn finish(shipper: &Shipper) -> ShipReport {
    let r = shipper.finish();
    tracing::info!(
        "ship: {} files ({} bytes) shipped this run; {} files ({} bytes) left for the next start{}",
        r.files_shipped,
        r.bytes_shipped,
        r.left_files,
        r.left_bytes,
        if r.drain_timed_out && r.left_files > 0 {
            " (--ship-drain-timeout reached)"
        } else {
            ""
        }
    );
    for n in &r.left_names {
        tracing::info!("ship: left: {n}");
    }
    if !r.failures.is_empty() {
        let f: Vec<String> = r.failures.iter().map(|(k, n)| format!("{k}={n}")).collect();
        tracing::warn!("ship: failed attempts: {}", f.join(" "));
    }
    if let Some(e) = &r.last_error {
        tracing::warn!("ship: last error: {e}");
    }
    r
}

/// `linecap ship`.
#[derive(Args, Debug)]
#[command(after_help = "\
EXAMPLES:
  linecap ship --test --ship s3://caps/site1 --ship-endpoint http://127.0.0.1:8333
  linecap ship --test --profile hw-profiles/probe.toml")]
pub struct ShipCmdArgs {
    /// Put a probe object, read it back and delete it; say exactly what failed (DNS, TCP, TLS,
    /// credentials, bucket, permission).
    #[arg(long)]
    pub test: bool,
    /// Take the [ship] table of this profile (flags win).
    #[arg(long, value_name = "FILE")]
    pub profile: Option<PathBuf>,
    /// The same flags as `capture`.
    #[command(flatten)]
    pub ship: ShipArgs,
}

/// `linecap ship --test`: exit 0 when every step passed, 1 otherwise.
pub fn run(a: ShipCmdArgs) -> anyhow::Result<i32> {
    if !a.test {
        bail!("linecap ship: nothing to do (give --test)");
    }
    let table = match &a.profile {
        Some(p) => {
            crate::profile::Profile::load(p)
                .with_context(|| format!("--profile {}", p.display()))?
                .ship
        }
        None => None,
    };
    let Some(cfg) = ship_config(&a.ship, table.as_ref())? else {
        bail!("linecap ship --test: give --ship s3://BUCKET/PREFIX (or a profile with [ship] url)");
    };
    let Some(t) = &cfg.s3 else {
        bail!("linecap ship --test: tests the S3 store; give --ship s3://BUCKET/PREFIX");
    };
    println!(
        "linecap ship --test: s3://{}/{} at {} (region {})",
        t.bucket, t.prefix, t.endpoint, t.region
    );
    let steps = linecap_ship::shipper::self_test(&cfg);
    let mut ok = true;
    for (step, r) in &steps {
        match r {
            Ok(m) => println!("  ok    {step}: {m}"),
            Err(e) => {
                ok = false;
                println!("  FAIL  {step}: {e}");
            }
        }
    }
    println!(
        "{}",
        if ok {
            "ship test passed"
        } else {
            "ship test FAILED"
        }
    );
    Ok(if ok { 0 } else { 1 })
}

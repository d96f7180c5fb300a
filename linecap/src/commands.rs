//! The commands that are not a module of their own: `capture` (profile,
//! layering, validation, run, report) and `anonymize`.

use std::sync::Arc;

use anyhow::Context;
use clap::ArgMatches;

use crate::capture::stop_on_signals;
use crate::cli::{AnonymizeArgs, CaptureArgs};
use crate::summary;

/// `linecap capture`; `matches` are the `capture` subcommand's, from the
/// parse that gave `a`.
pub fn capture(mut a: CaptureArgs, matches: &ArgMatches) -> anyhow::Result<i32> {
    let profile = crate::config::layer(&mut a, matches)?;
    let mut cfg = crate::config::capture_config(&a)?;
    let shipping =
        crate::ship::ship_config(&a.ship, profile.as_ref().and_then(|p| p.ship.as_ref()))?
            .map(|s| {
                crate::ship::start(
                    s,
                    cfg.jobs
                        .iter()
                        .map(|j| (j.name.clone(), j.out.clone()))
                        .collect(),
                    &cfg.housekeeping,
                )
            })
            .transpose()?;
    cfg.ship = shipping.as_ref().map(|(_, h)| h.clone());
    let signals = stop_on_signals()?;
    let api_cfg = cfg.api.clone();
    // POST /v1/storage/test: the shipper's store, tested as `ship --test` does.
    let storage: Option<crate::api::StorageTest> = shipping.as_ref().map(|(s, _)| {
        let ship_cfg = s.config().clone();
        Arc::new(move || crate::ship::storage_test(&ship_cfg)) as crate::api::StorageTest
    });
    let api_start = move |rt, info| -> anyhow::Result<Box<dyn std::any::Any>> {
        let a = api_cfg
            .as_ref()
            .expect("--api is on when the registry exists");
        let server = crate::api::ApiServer::start(a, rt, info, storage.clone())?;
        tracing::info!("control API on {}", server.describe());
        Ok(Box::new(server))
    };
    let report = crate::capture::run_capture_with(&cfg, &signals, Some(&api_start));
    // Drain the backlog (bounded by --ship-drain-timeout) whatever the capture's outcome.
    let ship_report = shipping.as_ref().map(|(s, _)| crate::ship::finish(s));
    // Every queue is closed by now (the ports with them): end DPDK here, on
    // the main thread, whether the capture succeeded or not.
    crate::dpdksource::shutdown();
    let report = report?;
    summary::print(&report);
    if let Some(p) = &a.report_json {
        let mut json = summary::to_json(&report);
        if let (Some(r), Some(o)) = (&ship_report, json.as_object_mut()) {
            o.insert("ship".into(), r.to_json());
        }
        let json = serde_json::to_vec_pretty(&json)?;
        std::fs::write(p, json).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(summary::exit_code(&report))
}

/// `linecap anonymize`: stdin addresses → anonymised addresses on stdout;
/// exit 1 if a line is not an address (it is reported, the rest go on).
pub fn anonymize(a: AnonymizeArgs) -> anyhow::Result<i32> {
    use std::io::{BufRead, Write};
    let key = linecap_dataplane::policy::cryptopan::load_key(&a.key)
        .map_err(|e| anyhow::anyhow!("--key {}: {e}", a.key.display()))?;
    let mut pan = linecap_dataplane::policy::cryptopan::CryptoPan::new(&key);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut bad = 0;
    for (n, line) in std::io::stdin().lock().lines().enumerate() {
        let line = line?;
        let t = line.trim();
        if t.is_empty() {
            continue;
        }
        match t.parse::<std::net::IpAddr>() {
            Ok(ip) => writeln!(out, "{}", pan.anonymize_ip(ip))?,
            Err(_) => {
                eprintln!(
                    "linecap: line {}: {t:?} is not an IPv4 or IPv6 address",
                    n + 1
                );
                bad += 1;
            }
        }
    }
    out.flush()?;
    Ok(i32::from(bad > 0))
}

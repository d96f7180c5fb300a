//! The one validation: the command line, with the profile layered under it
//! (`config::layer`), becomes the one [`CaptureConfig`] the capture runs.
//! Every limit comes from `crate::limits`; every error names the flag.

use std::time::Duration;

use anyhow::{Context, bail};

use super::types::{
    CaptureConfig, FlowConfig, JobConfig, MetricsConfig, PolicyConfig, XdpOptions, validate_jobs,
};
use crate::cli::CaptureArgs;
use crate::limits;
use crate::source::{SourceSpec, parse_interface, parse_source};
use crate::values::{IdList, JobSpec};

/// Validate the flags into a [`CaptureConfig`], and check that this host
/// has the cores and the user they name.
pub fn capture_config(a: &CaptureArgs) -> anyhow::Result<CaptureConfig> {
    let cfg = effective_config(a)?;
    host_checks(a)?;
    Ok(cfg)
}

/// What this host must have for `a`: the cores it pins to, the user it
/// becomes.
pub fn host_checks(a: &CaptureArgs) -> anyhow::Result<()> {
    let n_cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    for (flag, list) in [
        ("--cores", &a.cores),
        ("--housekeeping-cores", &a.housekeeping_cores),
    ] {
        if let Some(cores) = list
            && let Some(c) = cores.0.iter().find(|&&c| c >= n_cpus)
        {
            bail!("{flag}: core {c} does not exist (this machine has {n_cpus})");
        }
    }
    if let Some(u) = &a.user {
        crate::privileges::resolve_user(u).map_err(|e| anyhow::anyhow!("--user: {e:#}"))?;
    }
    Ok(())
}

/// The configuration `a` means, on any host (no host checks).
pub fn effective_config(a: &CaptureArgs) -> anyhow::Result<CaptureConfig> {
    let sources = sources(a)?;
    let sizes = sizes(a)?;
    check_threads_and_times(a)?;
    let duration = a
        .duration
        .map(|d| {
            anyhow::ensure!(
                d.is_finite() && d > 0.0,
                "--duration must be a positive number of seconds"
            );
            Duration::try_from_secs_f64(d)
                .map_err(|_| anyhow::anyhow!("--duration {d} is out of range"))
        })
        .transpose()?;
    if let Some(c) = a.count {
        anyhow::ensure!(c >= 1, "-c/--count must be at least 1");
        anyhow::ensure!(
            c <= limits::COUNT_MAX,
            "-c/--count must be at most {}, got {c}",
            limits::COUNT_MAX
        );
    }
    let jobs = jobs(a)?;
    let (api, max_jobs) = a.api.config(jobs.len(), &jobs[0].out)?;
    let queue_dirs = queue_dirs(a)?;
    // The flow tables see what the first job keeps: its sampling rate goes
    // into every flow record.
    let flow_sampling = jobs[0].policies.sample.map(|s| s.rate());
    Ok(CaptureConfig {
        user: a.user.clone(),
        disk_budget: a.disk_budget,
        ship: None,
        writer_delay: a
            .fault_writer_delay_ms
            .map(|ms| Duration::from_secs_f64(ms.clamp(0.0, 10_000.0) / 1000.0)),
        jobs,
        sources,
        spread: a.spread,
        rotate_bytes: sizes.rotate_bytes,
        rotate_seconds: a.rotate_seconds,
        rotate_files: a.rotate_files,
        compress: !a.no_compress,
        direct_io: a.direct_io,
        batch_bytes: sizes.batch_bytes,
        ring_slots: sizes.ring_slots,
        writer_threads: a.writer_threads,
        hugepages: a.hugepages,
        flush_ns: a.flush_ms.saturating_mul(1_000_000),
        duration,
        drop_when_full: a.drop_when_full,
        xdp: XdpOptions {
            mode: a.xdp_mode,
            timestamps: a.xdp_timestamps,
            ring_entries: a.xsk_ring,
            zero_copy: a.zero_copy,
            threaded_napi: !a.no_threaded_napi,
        },
        metrics: metrics(a)?,
        flows: if a.flows || a.flow.exports() {
            Some(FlowConfig {
                capacity: a.flow.capacity,
                timeouts: a.flow.timeouts()?,
                export: linecap_flowexport::ExportConfig {
                    sampling_rate: flow_sampling,
                    ..a.flow.export_config(1 << 16)
                },
            })
        } else {
            None
        },
        cores: core_list(&a.cores),
        housekeeping: core_list(&a.housekeeping_cores),
        queue_dirs,
        max_frames: a.count,
        api,
        max_jobs,
    })
}

/// `-i`/`--source`, else the profile's; DPDK options applied.
fn sources(a: &CaptureArgs) -> anyhow::Result<Vec<SourceSpec>> {
    let mut sources = a
        .interfaces
        .iter()
        .map(|s| parse_interface(s))
        .chain(a.sources.iter().map(|s| parse_source(s)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if sources.is_empty() {
        sources = a.profile_sources.clone();
    }
    for s in &mut sources {
        if let SourceSpec::Dpdk(d) = s {
            d.apply(&a.dpdk)?;
        }
    }
    if !sources.iter().any(|s| matches!(s, SourceSpec::Dpdk(_)))
        && let Some(flag) = a.dpdk.first_given()
    {
        anyhow::bail!(
            "{flag} applies to dpdk: sources, and this capture has none \
             (give --source dpdk:DEVICE, or drop {flag})"
        );
    }
    anyhow::ensure!(
        !sources.is_empty(),
        "no source: give -i IFACE (or --source SPEC, or --profile)"
    );
    Ok(sources)
}

/// Batch, rotation size and ring, which depend on each other.
struct Sizes {
    batch_bytes: usize,
    rotate_bytes: Option<u64>,
    ring_slots: usize,
}

fn sizes(a: &CaptureArgs) -> anyhow::Result<Sizes> {
    anyhow::ensure!(
        a.batch_bytes >= limits::BATCH_BYTES_MIN,
        "--batch-bytes must be at least 64K (one ERF record can be 64 KiB), got {}",
        a.batch_bytes
    );
    anyhow::ensure!(
        a.batch_bytes <= limits::BATCH_BYTES_MAX,
        "--batch-bytes must be at most 4M (one LZ4 block), got {}",
        a.batch_bytes
    );
    let rotate_bytes = a.file_size.or(a.rotate_bytes);
    let rotate_flag = if a.file_size.is_some() {
        "-C"
    } else {
        "--rotate-bytes"
    };
    let batch_bytes = rotation_batch(
        a.batch_bytes,
        a.batch_bytes_given,
        rotate_bytes,
        rotate_flag,
    );
    let batch_bytes = usize::try_from(batch_bytes).context("--batch-bytes too large")?;
    let ring_slots = match a.buffer_size {
        Some(b) => {
            let n = b / batch_bytes as u64;
            anyhow::ensure!(
                n >= limits::RING_SLOTS_MIN as u64,
                "-B {b}: the ring must hold at least {} batches of {batch_bytes} bytes",
                limits::RING_SLOTS_MIN
            );
            let slots = (1u64 << (63 - n.leading_zeros())).min(limits::RING_SLOTS_MAX as u64);
            if slots * batch_bytes as u64 != b {
                tracing::warn!(
                    "-B {b}: each queue's ring holds {slots} batches of {batch_bytes} bytes \
                     ({} bytes; a power of two of batches)",
                    slots * batch_bytes as u64
                );
            }
            slots as usize
        }
        None => a.ring_slots,
    };
    anyhow::ensure!(
        (limits::RING_SLOTS_MIN..=limits::RING_SLOTS_MAX).contains(&ring_slots)
            && ring_slots.is_power_of_two(),
        "--ring-slots must be a power of two from {} to {}, got {ring_slots}",
        limits::RING_SLOTS_MIN,
        limits::RING_SLOTS_MAX
    );
    Ok(Sizes {
        batch_bytes,
        rotate_bytes,
        ring_slots,
    })
}

/// Writer threads, XSK ring, cores, rotation counts and times, spread.
fn check_threads_and_times(a: &CaptureArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=limits::WRITER_THREADS_MAX).contains(&a.writer_threads),
        "--writer-threads must be 1..={}, got {}",
        limits::WRITER_THREADS_MAX,
        a.writer_threads
    );
    anyhow::ensure!(
        a.rotate_seconds != Some(0),
        "--rotate-seconds must be at least 1"
    );
    anyhow::ensure!(
        a.xsk_ring.is_power_of_two()
            && (limits::XSK_RING_MIN..=limits::XSK_RING_MAX).contains(&a.xsk_ring),
        "--xsk-ring must be a power of two from 64 to 1048576, got {}",
        a.xsk_ring
    );
    if let (Some(w), Some(h)) = (&a.cores, &a.housekeeping_cores)
        && let Some(c) = h.0.iter().find(|c| w.0.contains(c))
    {
        bail!("--housekeeping-cores: core {c} is also a worker core (--cores)");
    }
    anyhow::ensure!(
        a.rotate_files != Some(0),
        "--rotate-files must be at least 1"
    );
    if let Some(g) = a.rotate_seconds {
        anyhow::ensure!(
            g <= limits::ROTATE_SECONDS_MAX,
            "--rotate-seconds {g} is out of range (at most 100 years)"
        );
    }
    anyhow::ensure!(
        (1..=limits::SPREAD_MAX).contains(&a.spread),
        "--spread must be 1..={}, got {}",
        limits::SPREAD_MAX,
        a.spread
    );
    Ok(())
}

/// The main job (`-w`, the trailing expression and the policy flags), then
/// every `--job`.
fn jobs(a: &CaptureArgs) -> anyhow::Result<Vec<JobConfig>> {
    let filter = if a.expression.is_empty() {
        a.filter.clone()
    } else {
        Some(a.expression.join(" "))
    };
    // tcpdump's -s 0: the whole frame.
    let snaplen = a.snaplen.filter(|&n| n != 0);
    let mut jobs = Vec::new();
    if let Some(out) = a.out.first() {
        let main = JobSpec {
            name: "main".into(),
            out: out.clone(),
            filter: filter.clone(),
            sample: a.sample,
            snaplen,
            anonymize_key: a.anonymize_key.clone(),
            anonymize: Some(a.anonymize),
            mac_key: a.mac_key.clone(),
        };
        let mut job = main.config("")?;
        job.extra_dirs = a.out[1..].to_vec();
        jobs.push(job);
    } else if filter.is_some()
        || a.sample.is_some()
        || snaplen.is_some()
        || a.anonymize_key.is_some()
        || a.mac_key.is_some()
    {
        bail!(
            "a filter expression, --sample, --snaplen, --anonymize-key and --mac-key set the \
             policies of the main job (-w/--out), and there is none: give them inside --job (like \
             --job 'dns:/data/dns;filter=udp port 53')"
        );
    }
    for j in &a.jobs {
        jobs.push(j.config(&format!("--job {}: ", j.name))?);
    }
    validate_jobs(&jobs)?;
    Ok(jobs)
}

/// `--queue-dirs`: every entry an output directory, every directory used.
fn queue_dirs(a: &CaptureArgs) -> anyhow::Result<Option<Vec<usize>>> {
    let queue_dirs = a.queue_dirs.as_ref().map(|m| m.0.clone());
    if let Some(m) = &queue_dirs {
        let n = a.out.len();
        anyhow::ensure!(
            n > 1,
            "--queue-dirs maps queues to several output directories: give -w/--out more than once"
        );
        anyhow::ensure!(!m.is_empty(), "--queue-dirs is empty");
        if let Some(bad) = m.iter().find(|&&i| i >= n) {
            bail!(
                "--queue-dirs: {bad} is not an output directory (0 to {})",
                n - 1
            );
        }
        if let Some(empty) = (0..n).find(|i| !m.contains(i)) {
            bail!(
                "--queue-dirs puts no queue on output directory {empty} ({})",
                a.out[empty].display()
            );
        }
    }
    Ok(queue_dirs)
}

/// `--metrics` / `--no-metrics`: loopback unless allowed, the hold bounded.
fn metrics(a: &CaptureArgs) -> anyhow::Result<Option<MetricsConfig>> {
    if a.no_metrics {
        return Ok(None);
    }
    let addr = a
        .metrics
        .unwrap_or(std::net::SocketAddr::from(limits::METRICS_DEFAULT_ADDR));
    anyhow::ensure!(
        addr.ip().is_loopback() || a.metrics_allow_remote,
        "--metrics {addr}: not a loopback address; the endpoint has no authentication, \
         give --metrics-allow-remote to serve it there anyway"
    );
    anyhow::ensure!(
        a.metrics_hold.is_finite() && (0.0..=limits::METRICS_HOLD_MAX_S).contains(&a.metrics_hold),
        "--metrics-hold must be 0 to 3600 seconds"
    );
    Ok(Some(MetricsConfig {
        addr,
        required: a.metrics.is_some(),
        hold: Duration::from_secs_f64(a.metrics_hold),
    }))
}

impl JobSpec {
    /// Load the keys, compile the filter, check the policies; errors start
    /// with `ctx` (which job or flag).
    pub fn config(&self, ctx: &str) -> anyhow::Result<JobConfig> {
        use linecap_dataplane::policy::{anon::AnonMode, cryptopan::load_key};
        let anonymize = match &self.anonymize_key {
            Some(p) => Some((
                load_key(p)
                    .map_err(|e| anyhow::anyhow!("{ctx}anonymize key {}: {e}", p.display()))?,
                self.anonymize.unwrap_or(AnonMode::Both),
            )),
            None => None,
        };
        let mac_key = match &self.mac_key {
            Some(p) => Some(
                load_key(p).map_err(|e| anyhow::anyhow!("{ctx}MAC key {}: {e}", p.display()))?,
            ),
            None => None,
        };
        let job = JobConfig {
            name: self.name.clone(),
            out: self.out.clone(),
            extra_dirs: Vec::new(),
            policies: PolicyConfig {
                filter: self.filter.clone(),
                sample: self.sample,
                snaplen: self.snaplen,
                anonymize,
                mac_key,
            },
        };
        // Compile once here so a bad expression or sampling policy is
        // reported before anything starts, with libpcap's own message.
        job.policies
            .build()
            .map_err(|e| anyhow::anyhow!("{ctx}{e:#}"))?;
        Ok(job)
    }
}

fn core_list(l: &Option<IdList>) -> Vec<usize> {
    l.as_ref()
        .map(|l| l.0.iter().map(|&c| c as usize).collect())
        .unwrap_or_default()
}

/// The batch size a rotation size allows. A file holds whole batches, so a
/// rotation size below the batch would be ignored: when `--batch-bytes` was
/// not given, the batch shrinks to the rotation size (not below the
/// smallest batch); when the rotation size is still below the batch, every
/// file holds one batch, and the user is told so.
fn rotation_batch(batch: u64, batch_given: bool, rotate: Option<u64>, flag: &str) -> u64 {
    let Some(r) = rotate else { return batch };
    let batch = if !batch_given && r < batch {
        r.max(limits::BATCH_BYTES_MIN)
    } else {
        batch
    };
    if r < batch {
        tracing::warn!(
            "{flag} {r} is smaller than a batch ({batch} bytes{}): every file holds \
             one batch (files complete after each batch)",
            if batch_given {
                ", --batch-bytes"
            } else {
                ", the smallest"
            }
        );
    }
    batch
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    #[test]
    fn bad_flags_are_rejected_with_the_flag_named() {
        let base = ["linecap", "capture", "--source", "file:x", "--out", "o"];
        let parse = |extra: &[&str]| {
            let mut v: Vec<&str> = base.to_vec();
            v.extend_from_slice(extra);
            match Cli::try_parse_from(v) {
                Ok(Cli {
                    command: Command::Capture(a),
                    ..
                }) => capture_config(&a).map(|_| ()).map_err(|e| e.to_string()),
                Ok(_) => unreachable!(),
                Err(e) => Err(e.to_string()),
            }
        };
        assert!(parse(&[]).is_ok());
        for (extra, word) in [
            (&["--ring-slots", "3"][..], "--ring-slots"),
            (&["--batch-bytes", "1K"][..], "--batch-bytes"),
            (&["--writer-threads", "0"][..], "--writer-threads"),
            (&["-G", "0"][..], "--rotate-seconds"),
            (&["-W", "0"][..], "--rotate-files"),
            (&["--hugepages", "maybe"][..], "--hugepages"),
            (&["--duration", "0"][..], "--duration"),
            (&["--duration", "1e30"][..], "--duration"),
            (&["-G", "20000000000"][..], "--rotate-seconds"),
            (&["--xsk-ring", "1000"][..], "--xsk-ring"),
            (&["--xdp-mode", "fast"][..], "--xdp-mode"),
            (&["--cores", "9999"][..], "--cores"),
            (&["--metrics", "0.0.0.0:9464"][..], "--metrics"),
            (&["--metrics-hold", "99999"][..], "--metrics-hold"),
            // DPDK flags on a capture without a dpdk: source did nothing.
            (&["--dpdk-queues", "4"][..], "--dpdk-queues"),
            (&["--rss-key", "6d5a"][..], "--rss-key"),
            (&["--dpdk-timestamps", "burst"][..], "--dpdk-timestamps"),
        ] {
            let err = parse(extra).expect_err(&format!("{extra:?} must be rejected"));
            assert!(err.contains(word), "{extra:?}: {err}");
        }
    }
}

//! The Prometheus endpoint (`GET /metrics`, text exposition format 0.0.4).
//!
//! Served by one thread off the capture cores. A scrape reads the same
//! per-queue single-writer counters the summary uses (relaxed atomics the
//! workers publish once per burst, the writers' counters, the flow tables'
//! counters, the rings' fill levels): nothing on the capture path knows the
//! endpoint exists, and nothing is registered or updated per packet.
//!
//! The text is written here (about sixty lines) rather than through a
//! client library: the values already live in our own counters, which a
//! library registry could only expose through a custom collector producing
//! the same families; `promtool check metrics` validates the output in the
//! tests.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use linecap_dataplane::counters::SharedCounters;
use linecap_dataplane::flowtable::FlowCounters;
use linecap_dataplane::ring::RingProbe;
use linecap_writer::series::SeriesCounters;

/// What the endpoint reads for one queue.
#[derive(Clone)]
pub struct QueueProbe {
    /// Capture job (the `capture_job` label; not `job`, which Prometheus
    /// sets itself from its scrape configuration).
    pub job: String,
    /// Queue number (the `queue` label).
    pub queue: u32,
    /// The worker's published counters.
    pub worker: Arc<SharedCounters>,
    /// The writer's counters for this queue.
    pub writer: Arc<Mutex<SeriesCounters>>,
    /// The flow table's counters, when flows are tracked.
    pub flows: Option<Arc<Mutex<FlowCounters>>>,
    /// The ring's fill level (`None` once the job stopped: its ring is freed).
    pub ring: Option<RingProbe>,
    /// AF_XDP queues: drops before the socket, refreshed twice a second.
    pub xdp: Option<Arc<Mutex<XdpLive>>>,
    /// The queue's drops before the socket when the job joined it (jobs
    /// added through the control API count from then on).
    pub xdp_base: XdpLive,
}

impl QueueProbe {
    /// A probe of a job's queue.
    pub fn new(
        job: &str,
        queue: u32,
        worker: Arc<SharedCounters>,
        writer: Arc<Mutex<SeriesCounters>>,
        ring: RingProbe,
    ) -> Self {
        QueueProbe {
            job: job.to_string(),
            queue,
            worker,
            writer,
            flows: None,
            ring: Some(ring),
            xdp: None,
            xdp_base: XdpLive::default(),
        }
    }
}

/// What the endpoint reads: a probe per (job, queue) for the jobs given at
/// start and those the control API adds while the capture runs. Bounded:
/// at most `--max-jobs` jobs run at once, and of the stopped jobs (whose
/// final counters stay) the `stopped_kept_max` most recent are kept, the
/// oldest leaving first. Locked by a scrape and by an add or a stop, never
/// by the capture path.
pub struct ProbeTable {
    inner: Mutex<Probes>,
    stopped_kept_max: usize,
}

struct Probes {
    /// (probe, when its job stopped: the stop's sequence number).
    probes: Vec<(QueueProbe, Option<u64>)>,
    stops: u64,
}

impl ProbeTable {
    /// The probes of the jobs the capture starts with.
    pub fn new(probes: Vec<QueueProbe>, stopped_kept_max: usize) -> Self {
        ProbeTable {
            inner: Mutex::new(Probes {
                probes: probes.into_iter().map(|p| (p, None)).collect(),
                stops: 0,
            }),
            stopped_kept_max,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Probes> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A job added while capturing: its probes, one per queue.
    pub fn add(&self, probes: Vec<QueueProbe>) {
        self.lock()
            .probes
            .extend(probes.into_iter().map(|p| (p, None)));
    }

    /// Job `job` stopped: its counters stay as they ended, its ring gauge
    /// goes (the ring is freed); beyond `stopped_kept_max` stopped jobs the
    /// oldest one's series leave the endpoint.
    pub fn stopped(&self, job: &str) {
        let mut t = self.lock();
        t.stops += 1;
        let seq = t.stops;
        for (p, stopped) in t.probes.iter_mut().filter(|(p, _)| p.job == job) {
            p.ring = None;
            stopped.get_or_insert(seq);
        }
        loop {
            let mut seqs: Vec<u64> = t.probes.iter().filter_map(|(_, s)| *s).collect();
            seqs.sort_unstable();
            seqs.dedup();
            if seqs.len() <= self.stopped_kept_max {
                break;
            }
            let oldest = seqs[0];
            t.probes.retain(|(_, s)| *s != Some(oldest));
        }
    }

    /// The probes now (cheap clones of the handles).
    pub fn snapshot(&self) -> Vec<QueueProbe> {
        self.lock().probes.iter().map(|(p, _)| p.clone()).collect()
    }
}

/// Drops an AF_XDP queue has before its socket, since the capture started.
#[derive(Debug, Clone, Copy, Default)]
pub struct XdpLive {
    /// Frames the XDP program passed to the kernel stack (stage `xdp`).
    pub not_redirected: u64,
    /// Drops the interface counted before XDP (in stage `nic`; on the
    /// interface's first queue).
    pub iface_drops: u64,
    /// Of these, what the queue's worker may fold into `lctr`: every
    /// `not_redirected`, and the interface's drops where they are a plain
    /// counter (not on veth in native mode, where they are `rx_dropped`
    /// minus the sockets' drops read at another moment, so a reading can
    /// be transiently high; a loss folded into a record cannot be taken back).
    pub lctr_foldable: u64,
    /// Frames the device-bound XDP program stamped with the NIC's RX
    /// hardware timestamp (0 with the plain program).
    pub hw_stamped: u64,
    /// Frames the device-bound program saw without a hardware stamp (they
    /// carry the ktime stamp instead; 0 with the plain program).
    pub hw_missing: u64,
}

impl XdpLive {
    /// The counts since `base` (a job that joined the queue later).
    pub fn since(&self, base: &XdpLive) -> XdpLive {
        XdpLive {
            not_redirected: self.not_redirected.saturating_sub(base.not_redirected),
            iface_drops: self.iface_drops.saturating_sub(base.iface_drops),
            lctr_foldable: self.lctr_foldable.saturating_sub(base.lctr_foldable),
            hw_stamped: self.hw_stamped.saturating_sub(base.hw_stamped),
            hw_missing: self.hw_missing.saturating_sub(base.hw_missing),
        }
    }
}

/// The running endpoint; stops when dropped.
pub struct MetricsServer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    addr: SocketAddr,
}

impl MetricsServer {
    /// Bind `addr` and serve the probes' counters from a thread (the table
    /// is read at every scrape, so jobs added later appear).
    /// `extra` (the shipper's metrics) is appended to every answer.
    pub fn start(
        addr: SocketAddr,
        probes: Arc<ProbeTable>,
        extra: Option<Arc<dyn Fn() -> String + Send + Sync>>,
    ) -> anyhow::Result<Self> {
        let server = tiny_http::Server::http(addr)
            .map_err(|e| anyhow::anyhow!("metrics: cannot listen on {addr}: {e}"))?;
        let addr = server
            .server_addr()
            .to_ip()
            .context("metrics: not an IP listener")?;
        let stop = Arc::new(AtomicBool::new(false));
        let start_s = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("lc-metrics".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    let Ok(Some(req)) = server.recv_timeout(Duration::from_millis(100)) else {
                        continue;
                    };
                    let resp = if req.url() == "/metrics" || req.url().starts_with("/metrics?") {
                        let mut body = render(&probes.snapshot(), start_s);
                        if let Some(x) = &extra {
                            body.push_str(&x());
                        }
                        tiny_http::Response::from_string(body).with_header(
                            tiny_http::Header::from_bytes(
                                &b"Content-Type"[..],
                                &b"text/plain; version=0.0.4; charset=utf-8"[..],
                            )
                            .expect("static header"),
                        )
                    } else {
                        tiny_http::Response::from_string("linecap: metrics are at /metrics\n")
                            .with_status_code(404)
                    };
                    let _ = req.respond(resp);
                }
            })
            .context("metrics: starting the thread")?;
        Ok(MetricsServer {
            stop,
            thread: Some(thread),
            addr,
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One metric family: HELP, TYPE, then a sample per (labels, value).
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, f64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, v) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {v}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
    }
}

/// The exposition text for the probes' current values.
pub fn render(probes: &[QueueProbe], start_s: f64) -> String {
    struct Snap<'a> {
        job: &'a str,
        queue: u32,
        worker: linecap_dataplane::counters::WorkerCounters,
        writer: SeriesCounters,
        flows: Option<FlowCounters>,
        occupancy: u64,
        /// `None` once the job stopped (its ring is gone).
        capacity: Option<u64>,
        xdp: XdpLive,
    }
    let snaps: Vec<Snap> = probes
        .iter()
        .map(|p| Snap {
            job: &p.job,
            queue: p.queue,
            worker: p.worker.snapshot(),
            writer: *p.writer.lock().unwrap_or_else(|e| e.into_inner()),
            flows: p
                .flows
                .as_ref()
                .map(|f| *f.lock().unwrap_or_else(|e| e.into_inner())),
            xdp: p
                .xdp
                .as_ref()
                .map(|x| {
                    x.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .since(&p.xdp_base)
                })
                .unwrap_or_default(),
            occupancy: p.ring.as_ref().map_or(0, RingProbe::occupancy),
            capacity: p.ring.as_ref().map(RingProbe::capacity),
        })
        .collect();
    let q = |s: &Snap| format!("capture_job=\"{}\",queue=\"{}\"", s.job, s.queue);
    let per = |f: &dyn Fn(&Snap) -> f64| snaps.iter().map(|s| (q(s), f(s))).collect::<Vec<_>>();
    // One series per queue and value of `label`.
    let by = |label: &str, f: &dyn Fn(&Snap) -> Vec<(&'static str, u64)>| {
        let mut out = Vec::new();
        for s in &snaps {
            for (value, v) in f(s) {
                out.push((format!("{},{label}=\"{value}\"", q(s)), v as f64));
            }
        }
        out
    };
    let mut o = String::with_capacity(4096);
    family(
        &mut o,
        "linecap_build_info",
        "gauge",
        "linecap version (value is 1).",
        &[(format!("version=\"{}\"", env!("CARGO_PKG_VERSION")), 1.0)],
    );
    family(
        &mut o,
        "linecap_start_time_seconds",
        "gauge",
        "Start time of the capture, seconds since the Unix epoch.",
        &[(String::new(), start_s)],
    );
    family(
        &mut o,
        "linecap_received_packets_total",
        "counter",
        "Frames the queue's source saw (delivered plus dropped at the source).",
        &per(&|s| (s.worker.source_seen() + s.xdp.not_redirected + s.xdp.iface_drops) as f64),
    );
    family(
        &mut o,
        "linecap_received_bytes_total",
        "counter",
        "Wire bytes (FCS excluded) of the frames delivered to the worker.",
        &per(&|s| s.worker.rx_bytes as f64),
    );
    let drops = by("stage", &|s| {
        vec![
            ("filter", s.worker.filter_packets),
            ("sample", s.worker.sample_packets),
            ("source", s.worker.source_unsupported),
            ("nic", s.worker.source_nic + s.xdp.iface_drops),
            ("xdp", s.xdp.not_redirected),
            ("ring_full", s.worker.ring_full_packets),
            ("writer", s.writer.drop_packets),
        ]
    });
    family(
        &mut o,
        "linecap_dropped_packets_total",
        "counter",
        "Frames dropped, by the stage that dropped them.",
        &drops,
    );
    let stamps = by("result", &|s| {
        vec![("stamped", s.xdp.hw_stamped), ("missing", s.xdp.hw_missing)]
    });
    family(
        &mut o,
        "linecap_xdp_hw_timestamps_total",
        "counter",
        "Frames the device-bound XDP program saw with the NIC's RX hardware timestamp (stamped) or without one, stamped with ktime instead (missing); both 0 with the plain program and on other sources.",
        &stamps,
    );
    let nic = by("counter", &|s| {
        vec![
            ("imissed", s.worker.nic_imissed),
            ("ierrors", s.worker.nic_ierrors),
            ("rx_nombuf", s.worker.nic_rx_nombuf),
            ("iface_dropped", s.worker.nic_iface_dropped),
            ("queue_dropped", s.worker.nic_queue_dropped),
            ("socket_dropped", s.worker.nic_socket_dropped),
        ]
    });
    family(
        &mut o,
        "linecap_nic_dropped_packets_total",
        "counter",
        "The nic stage's drops by the counter that reported them (DPDK rte_eth_stats and the bound kernel interface, per port on the port's first queue; per-queue xstats and net_af_packet's socket drops on their own queue).",
        &nic,
    );
    family(
        &mut o,
        "linecap_written_packets_total",
        "counter",
        "Frames written to capture files.",
        &per(&|s| s.writer.packets as f64),
    );
    let mut bytes = Vec::new();
    for s in &snaps {
        bytes.push((format!("{},kind=\"erf\"", q(s)), s.writer.bytes_erf as f64));
        bytes.push((
            format!("{},kind=\"file\"", q(s)),
            s.writer.bytes_file as f64,
        ));
    }
    family(
        &mut o,
        "linecap_written_bytes_total",
        "counter",
        "Bytes written: ERF records before compression (erf) and bytes in files (file).",
        &bytes,
    );
    family(
        &mut o,
        "linecap_index_files_total",
        "counter",
        "Per-file indexes (NAME.idx) written at rotation.",
        &per(&|s| s.writer.index_written as f64),
    );
    family(
        &mut o,
        "linecap_index_bytes_total",
        "counter",
        "Bytes of the per-file indexes written at rotation.",
        &per(&|s| s.writer.index_bytes as f64),
    );
    let ixerr = by("reason", &|s| {
        vec![
            ("io", s.writer.index_errors),
            ("behind", s.writer.index_skipped),
            ("over_budget", s.writer.index_over_budget),
        ]
    });
    family(
        &mut o,
        "linecap_index_errors_total",
        "counter",
        "Files left without an index at rotation, by reason: a write error (io), the index thread fell behind (behind), larger than the disk budget's room (over_budget). linecap index DIR builds them.",
        &ixerr,
    );
    family(
        &mut o,
        "linecap_batches_total",
        "counter",
        "Batches the worker handed to the writer.",
        &per(&|s| s.worker.batches as f64),
    );
    family(
        &mut o,
        "linecap_ring_occupancy_slots",
        "gauge",
        "Batches waiting in the queue's ring for the writer (running jobs).",
        &snaps
            .iter()
            .filter(|s| s.capacity.is_some())
            .map(|s| (q(s), s.occupancy as f64))
            .collect::<Vec<_>>(),
    );
    family(
        &mut o,
        "linecap_ring_capacity_slots",
        "gauge",
        "Slots of the queue's ring (running jobs).",
        &snaps
            .iter()
            .filter_map(|s| s.capacity.map(|c| (q(s), c as f64)))
            .collect::<Vec<_>>(),
    );
    family(
        &mut o,
        "linecap_writer_lag_batches",
        "gauge",
        "Batches committed by the worker and not yet written (the writer's backlog).",
        &per(&|s| {
            s.worker
                .batches
                .saturating_sub(s.writer.batches + s.writer.drop_batches) as f64
        }),
    );
    family(
        &mut o,
        "linecap_files_rotated_total",
        "counter",
        "Capture files completed (renamed into view).",
        &per(&|s| s.writer.files_closed as f64),
    );
    family(
        &mut o,
        "linecap_file_close_errors_total",
        "counter",
        "Capture files whose completion (end mark, sync, rename, manifest) failed.",
        &per(&|s| (s.writer.close_errors + s.writer.manifest_errors) as f64),
    );
    family(
        &mut o,
        "linecap_writer_direct_batches_total",
        "counter",
        "With --direct-io and plain files: batches written from their ring slot (in_place, no copy) and batches copied first (copied: placed at another phase than the file's, carrying a loss, or the index thread busy with earlier batches or a file's completion).",
        &by("way", &|s| {
            vec![
                ("in_place", s.writer.direct_in_place),
                ("copied", s.writer.direct_copied),
            ]
        }),
    );
    let rec = by("outcome", &|s| {
        vec![
            ("completed", s.writer.files_recovered),
            ("removed", s.writer.parts_removed),
            ("manifest_rebuilt", s.writer.manifests_rebuilt),
            ("failed", s.writer.parts_failed),
            ("index_tmp_removed", s.writer.index_tmp_removed),
        ]
    });
    family(
        &mut o,
        "linecap_startup_recovery_files_total",
        "counter",
        "Files a crash left in the queue's directory, found at start: .part files completed or removed (no verified block), files in view given their missing manifest, files left as they were (failed), stray index temporaries removed.",
        &rec,
    );
    if snaps.iter().any(|s| s.flows.is_some()) {
        let fl: Vec<_> = snaps
            .iter()
            .filter_map(|s| s.flows.map(|f| (s, f)))
            .collect();
        family(
            &mut o,
            "linecap_flows_active",
            "gauge",
            "Flows in the queue's flow table.",
            &fl.iter()
                .map(|(qq, f)| (q(qq), f.active as f64))
                .collect::<Vec<_>>(),
        );
        family(
            &mut o,
            "linecap_flows_created_total",
            "counter",
            "Flow records created.",
            &fl.iter()
                .map(|(qq, f)| (q(qq), f.created as f64))
                .collect::<Vec<_>>(),
        );
        let mut exp = Vec::new();
        for (qq, f) in &fl {
            for (reason, v) in [
                ("idle", f.expired_idle),
                ("active", f.expired_active),
                ("end", f.expired_end),
                ("evicted", f.evicted),
                ("stop", f.expired_input_end),
            ] {
                exp.push((format!("{},reason=\"{reason}\"", q(qq)), v as f64));
            }
        }
        family(
            &mut o,
            "linecap_flows_expired_total",
            "counter",
            "Flow records ended, by reason (active: exported by the active timeout, the flow goes on).",
            &exp,
        );
        family(
            &mut o,
            "linecap_flows_relocated_total",
            "counter",
            "Flows moved to their other bucket to make room for a new flow (one cuckoo step; nothing ends).",
            &fl.iter()
                .map(|(qq, f)| (q(qq), f.relocated as f64))
                .collect::<Vec<_>>(),
        );
        family(
            &mut o,
            "linecap_flow_export_drops_total",
            "counter",
            "Flow records lost because the table's export queue was full.",
            &fl.iter()
                .map(|(qq, f)| (q(qq), f.export_drops as f64))
                .collect::<Vec<_>>(),
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use linecap_dataplane::ring::{self, HugePages, RingConfig};

    fn probe(job: &str, packets: u64) -> (QueueProbe, ring::Producer, ring::Consumer) {
        let (p, c) = ring::ring(RingConfig {
            slots: 2,
            batch_bytes: 64 * 1024,
            hugepages: HugePages::Never,
        })
        .unwrap();
        let writer = Arc::new(Mutex::new(SeriesCounters {
            packets,
            files_recovered: 2,
            manifests_rebuilt: 1,
            ..Default::default()
        }));
        let probe = QueueProbe::new(
            job,
            0,
            Arc::new(SharedCounters::default()),
            writer,
            c.probe(),
        );
        (probe, p, c)
    }

    fn written(text: &str, job: &str) -> Option<String> {
        let key = format!("linecap_written_packets_total{{capture_job=\"{job}\",queue=\"0\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&key).map(str::to_string))
    }

    #[test]
    fn added_jobs_appear_stopped_ones_keep_counters_and_the_oldest_stopped_leave() {
        let (main, _p0, _c0) = probe("main", 7);
        let t = ProbeTable::new(vec![main], 2);
        let mut keep = Vec::new();
        for (i, job) in ["a", "b", "c"].iter().enumerate() {
            let (p, prod, cons) = probe(job, 10 + i as u64);
            keep.push((prod, cons));
            t.add(vec![p]);
        }
        let text = render(&t.snapshot(), 0.0);
        assert_eq!(written(&text, "b").as_deref(), Some("11"));
        assert!(
            text.contains(
                "linecap_xdp_hw_timestamps_total{capture_job=\"b\",queue=\"0\",result=\"missing\"} 0"
            ),
            "{text}"
        );
        assert_eq!(text.matches("linecap_ring_capacity_slots{").count(), 4);
        // Start-up recovery is exported, not only logged.
        for (outcome, v) in [("completed", 2), ("manifest_rebuilt", 1), ("failed", 0)] {
            let line = format!(
                "linecap_startup_recovery_files_total{{capture_job=\"b\",queue=\"0\",outcome=\"{outcome}\"}} {v}\n"
            );
            assert!(text.contains(&line), "{line} in {text}");
        }
        // Stopped: the counter stays, the ring gauges go.
        t.stopped("a");
        let text = render(&t.snapshot(), 0.0);
        assert_eq!(written(&text, "a").as_deref(), Some("10"));
        assert!(!text.contains("linecap_ring_capacity_slots{capture_job=\"a\""));
        assert!(!text.contains("linecap_ring_occupancy_slots{capture_job=\"a\""));
        // Three stopped, two kept: "a", the first stopped, leaves.
        t.stopped("b");
        t.stopped("c");
        let text = render(&t.snapshot(), 0.0);
        assert_eq!(written(&text, "a"), None);
        assert_eq!(written(&text, "b").as_deref(), Some("11"));
        assert_eq!(written(&text, "c").as_deref(), Some("12"));
        assert_eq!(written(&text, "main").as_deref(), Some("7"));
        // A second stop of the same job changes nothing.
        t.stopped("c");
        assert_eq!(t.snapshot().len(), 3);
    }
}

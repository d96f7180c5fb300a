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
    /// The ring's fill level.
    pub ring: RingProbe,
    /// AF_XDP queues: drops before the socket, refreshed twice a second.
    pub xdp: Option<Arc<Mutex<XdpLive>>>,
}

/// Drops an AF_XDP queue has before its socket, since the capture started.
#[derive(Debug, Clone, Copy, Default)]
pub struct XdpLive {
    /// Frames the XDP program passed to the kernel stack (stage `xdp`).
    pub not_redirected: u64,
    /// Drops the interface counted before XDP (in stage `nic`; on the
    /// interface's first queue).
    pub iface_drops: u64,
}

/// The running endpoint; stops when dropped.
pub struct MetricsServer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    addr: SocketAddr,
}

impl MetricsServer {
    /// Bind `addr` and serve the probes' counters from a thread.
    /// `extra` (the shipper's metrics) is appended to every answer.
    pub fn start(
        addr: SocketAddr,
        probes: Vec<QueueProbe>,
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
                        let mut body = render(&probes, start_s);
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
        capacity: u64,
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
                .map(|x| *x.lock().unwrap_or_else(|e| e.into_inner()))
                .unwrap_or_default(),
            occupancy: p.ring.occupancy(),
            capacity: p.ring.capacity(),
        })
        .collect();
    let q = |s: &Snap| format!("capture_job=\"{}\",queue=\"{}\"", s.job, s.queue);
    let per = |f: &dyn Fn(&Snap) -> f64| snaps.iter().map(|s| (q(s), f(s))).collect::<Vec<_>>();
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
    let mut drops = Vec::new();
    for s in &snaps {
        for (stage, v) in [
            ("filter", s.worker.filter_packets),
            ("sample", s.worker.sample_packets),
            ("source", s.worker.source_unsupported),
            ("nic", s.worker.source_nic + s.xdp.iface_drops),
            ("xdp", s.xdp.not_redirected),
            ("ring_full", s.worker.ring_full_packets),
            ("writer", s.writer.drop_packets),
        ] {
            drops.push((format!("{},stage=\"{stage}\"", q(s)), v as f64));
        }
    }
    family(
        &mut o,
        "linecap_dropped_packets_total",
        "counter",
        "Frames dropped, by the stage that dropped them.",
        &drops,
    );
    let mut nic = Vec::new();
    for s in &snaps {
        for (counter, v) in [
            ("imissed", s.worker.nic_imissed),
            ("ierrors", s.worker.nic_ierrors),
            ("rx_nombuf", s.worker.nic_rx_nombuf),
            ("iface_dropped", s.worker.nic_iface_dropped),
        ] {
            nic.push((format!("{},counter=\"{counter}\"", q(s)), v as f64));
        }
    }
    family(
        &mut o,
        "linecap_nic_dropped_packets_total",
        "counter",
        "The nic stage's drops by the counter that reported them (DPDK rte_eth_stats, the bound kernel interface); per port, on the port's first queue.",
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
    let mut ixerr = Vec::new();
    for s in &snaps {
        for (reason, v) in [
            ("io", s.writer.index_errors),
            ("behind", s.writer.index_skipped),
            ("over_budget", s.writer.index_over_budget),
        ] {
            ixerr.push((format!("{},reason=\"{reason}\"", q(s)), v as f64));
        }
    }
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
        "Batches waiting in the queue's ring for the writer.",
        &per(&|s| s.occupancy as f64),
    );
    family(
        &mut o,
        "linecap_ring_capacity_slots",
        "gauge",
        "Slots of the queue's ring.",
        &per(&|s| s.capacity as f64),
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
        "Capture files whose completion (end mark, sync, rename) failed.",
        &per(&|s| s.writer.close_errors as f64),
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

//! Flow export off the capture path: expired flow records go through a
//! bounded queue per exporter to its own thread, which writes IPFIX (UDP to a
//! collector and/or a file) or Parquet flow logs.
//!
//! [`Exporters::offer`] never blocks in live mode: a full queue drops the
//! record and counts it. Offline (`linecap flows`) the file is the buffer, so
//! [`Exporters::send`] waits instead and nothing is lost.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use linecap_dataplane::flowtable::FlowRecord;

use crate::ipfix::Encoder;

/// Where expired flows go.
#[derive(Debug, Clone, Default)]
pub struct ExportConfig {
    /// IPFIX over UDP to this collector.
    pub ipfix_udp: Option<SocketAddr>,
    /// IPFIX messages appended to this file (RFC 5655 file = message stream).
    pub ipfix_file: Option<PathBuf>,
    /// Parquet flow logs under this directory (`date=…/hour=…/`).
    pub parquet_dir: Option<PathBuf>,
    /// Records each exporter's queue holds.
    pub queue_len: usize,
    /// Seconds between IPFIX template re-sends.
    pub template_refresh_s: u32,
    /// IPFIX observation domain id.
    pub domain_id: u32,
    /// The fraction of packets (or flows) the flow table saw, from the
    /// first job's sampling (1.0 when unsampled), in every record.
    pub sampling_rate: Option<f64>,
}

/// What an exporter thread did.
#[derive(Debug, Default, Clone)]
pub struct ExportReport {
    /// Which exporter.
    pub name: String,
    /// Records written.
    pub records: u64,
    /// Messages / files written.
    pub units: u64,
    /// Errors met (sending or writing), counted.
    pub errors: u64,
}

type Handle = JoinHandle<anyhow::Result<ExportReport>>;

/// The running exporters.
pub struct Exporters {
    queues: Vec<SyncSender<FlowRecord>>,
    handles: Vec<Handle>,
    /// Records dropped because a queue was full ([`Exporters::offer`]).
    pub drops: u64,
    /// Records dropped by the capture workers' handles.
    live_drops: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// A capture worker's way into the exporters: never blocks; a full queue
/// drops the record and counts it.
#[derive(Clone)]
pub struct ExportHandle {
    queues: Vec<SyncSender<FlowRecord>>,
    drops: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl ExportHandle {
    /// Queue `r` for every exporter, or count it as dropped.
    pub fn offer(&self, r: &FlowRecord) {
        for q in &self.queues {
            if q.try_send(*r).is_err() {
                self.drops
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }
}

fn wall_s() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(0)
}

/// Batch records from `rx` (up to `max`, or what came within 100 ms) and
/// hand each batch to `f`; returns when every sender is gone.
fn batches(
    rx: &Receiver<FlowRecord>,
    max: usize,
    mut f: impl FnMut(&[FlowRecord]) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut batch = Vec::with_capacity(max);
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(r) => {
                batch.push(r);
                while batch.len() < max {
                    match rx.try_recv() {
                        Ok(r) => batch.push(r),
                        Err(_) => break,
                    }
                }
                if batch.len() >= max || rx.try_recv().is_err() {
                    f(&batch)?;
                    batch.clear();
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                if !batch.is_empty() {
                    f(&batch)?;
                    batch.clear();
                }
            }
            Err(RecvTimeoutError::Disconnected) => {
                if !batch.is_empty() {
                    f(&batch)?;
                }
                return Ok(());
            }
        }
    }
}

fn ipfix_thread(cfg: ExportConfig, rx: Receiver<FlowRecord>) -> anyhow::Result<ExportReport> {
    let socket = match cfg.ipfix_udp {
        Some(addr) => {
            let bind: SocketAddr = if addr.is_ipv4() {
                "0.0.0.0:0".parse()?
            } else {
                "[::]:0".parse()?
            };
            let s = UdpSocket::bind(bind).context("IPFIX: binding a UDP socket")?;
            s.connect(addr)
                .with_context(|| format!("IPFIX: connecting to {addr}"))?;
            Some(s)
        }
        None => None,
    };
    let mut file = match &cfg.ipfix_file {
        Some(p) => {
            Some(BufWriter::new(File::create(p).with_context(|| {
                format!("IPFIX: creating {}", p.display())
            })?))
        }
        None => None,
    };
    let mut enc = Encoder::new(cfg.domain_id, 1400, cfg.template_refresh_s.max(1))
        .with_sampling(cfg.sampling_rate.unwrap_or(1.0));
    let mut report = ExportReport {
        name: "ipfix".into(),
        ..Default::default()
    };
    batches(&rx, 256, |recs| {
        report.records += recs.len() as u64;
        let mut err = None;
        enc.encode(wall_s(), recs, &mut |m| {
            report.units += 1;
            if let Some(s) = &socket {
                // A collector that is not listening yet refuses with ICMP;
                // count it and go on (UDP export is best effort).
                if s.send(m).is_err() {
                    report.errors += 1;
                }
            }
            if let Some(f) = file.as_mut()
                && let Err(e) = f.write_all(m)
            {
                err = Some(e);
            }
        });
        if let Some(e) = err {
            return Err(e).context("IPFIX: writing the file");
        }
        Ok(())
    })?;
    if let Some(mut f) = file {
        f.flush().context("IPFIX: writing the file")?;
    }
    Ok(report)
}

impl Exporters {
    /// Start the configured exporters (none: a no-op sink).
    pub fn start(cfg: &ExportConfig) -> anyhow::Result<Exporters> {
        let mut queues = Vec::new();
        let mut handles: Vec<Handle> = Vec::new();
        let qlen = cfg.queue_len.max(1);
        if cfg.ipfix_udp.is_some() || cfg.ipfix_file.is_some() {
            let (tx, rx) = sync_channel(qlen);
            let c = cfg.clone();
            handles.push(
                std::thread::Builder::new()
                    .name("ipfix".into())
                    .spawn(move || ipfix_thread(c, rx))?,
            );
            queues.push(tx);
        }
        if let Some(dir) = &cfg.parquet_dir {
            #[cfg(feature = "parquet")]
            {
                let (tx, rx) = sync_channel(qlen);
                let dir = dir.clone();
                let rate = cfg.sampling_rate.unwrap_or(1.0);
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
                handles.push(
                    std::thread::Builder::new()
                        .name("parquet".into())
                        .spawn(move || crate::flowlog::run(dir, rx, rate))?,
                );
                queues.push(tx);
            }
            #[cfg(not(feature = "parquet"))]
            anyhow::bail!(
                "--parquet {}: this build has no Parquet support (cargo feature `parquet`)",
                dir.display()
            );
        }
        Ok(Exporters {
            queues,
            handles,
            drops: 0,
            live_drops: Default::default(),
        })
    }

    /// A handle for a capture worker (live mode).
    pub fn handle(&self) -> ExportHandle {
        ExportHandle {
            queues: self.queues.clone(),
            drops: self.live_drops.clone(),
        }
    }

    /// Records the capture workers' handles dropped (full queues).
    pub fn live_drops(&self) -> u64 {
        self.live_drops.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Live mode: queue `r` for every exporter; a full queue drops it (counted).
    #[allow(dead_code)] // kept for offline tools that must not wait
    pub fn offer(&mut self, r: &FlowRecord) {
        for q in &self.queues {
            match q.try_send(*r) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => self.drops += 1,
            }
        }
    }

    /// Offline mode: queue `r` for every exporter, waiting for room.
    pub fn send(&mut self, r: &FlowRecord) {
        for q in &self.queues {
            if q.send(*r).is_err() {
                self.drops += 1;
            }
        }
    }

    /// Close the queues and wait for the exporters to write everything.
    pub fn finish(self) -> anyhow::Result<Vec<ExportReport>> {
        drop(self.queues);
        let mut out = Vec::new();
        for h in self.handles {
            let r = h
                .join()
                .map_err(|_| anyhow::anyhow!("an exporter thread panicked"))??;
            out.push(r);
        }
        Ok(out)
    }
}

//! The exporter runner: one thread, off the capture path, that takes the
//! expired flow records every capture worker hands over and writes them to
//! the configured sinks (IPFIX over UDP and/or to a file, Parquet flow logs).
//!
//! Each worker owns a [`FlowProducer`], the producing end of its own bounded
//! wait-free SPSC queue ([`rtrb`]); the runner owns every consuming end and
//! sweeps them in turn. [`FlowProducer::offer`] never blocks (live capture):
//! a full queue drops the record and counts it in that producer's counter,
//! once per record whatever the number of sinks. Offline (`linecap flows`)
//! the input file is the buffer, so [`FlowProducer::send`] waits for room
//! instead and nothing is lost.
//!
//! Queues are sized at start-up: [`ExportConfig::queue_len`] records in all,
//! split over the producers, at least [`MIN_QUEUE_PER_PRODUCER`] each.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;

use crate::{ExportReport, FlowRecord, ipfix::Encoder};

/// The fewest records one producer's queue holds.
pub const MIN_QUEUE_PER_PRODUCER: usize = 4096;
/// Records the runner hands to the sinks at once, at most.
const BATCH: usize = 256;
/// How long the runner sleeps when every queue is empty.
const IDLE_SLEEP: Duration = Duration::from_millis(2);

/// Where expired flows go.
#[derive(Debug, Clone, Default)]
pub struct ExportConfig {
    /// IPFIX over UDP to this collector.
    pub ipfix_udp: Option<SocketAddr>,
    /// IPFIX messages appended to this file (RFC 5655 file = message stream).
    pub ipfix_file: Option<PathBuf>,
    /// Parquet flow logs under this directory (`date=…/hour=…/`).
    pub parquet_dir: Option<PathBuf>,
    /// Records the producers' queues hold in all (split over the producers,
    /// at least [`MIN_QUEUE_PER_PRODUCER`] each).
    pub queue_len: usize,
    /// Seconds between IPFIX template re-sends.
    pub template_refresh_s: u32,
    /// IPFIX observation domain id.
    pub domain_id: u32,
    /// The fraction of packets (or flows) the flow table saw, from the
    /// first job's sampling (1.0 when unsampled), in every record.
    pub sampling_rate: Option<f64>,
}

impl ExportConfig {
    /// Whether any sink is configured.
    pub fn any(&self) -> bool {
        self.ipfix_udp.is_some() || self.ipfix_file.is_some() || self.parquet_dir.is_some()
    }
}

/// One capture worker's way into the exporter: the producing end of its own
/// bounded SPSC queue. With no sink configured it accepts and discards.
pub struct FlowProducer {
    tx: Option<rtrb::Producer<FlowRecord>>,
    drops: Arc<AtomicU64>,
}

impl FlowProducer {
    /// Queue `r`, or count it as dropped if the queue is full. Never blocks.
    #[inline]
    pub fn offer(&mut self, r: &FlowRecord) {
        if let Some(tx) = &mut self.tx
            && tx.push(*r).is_err()
        {
            self.drops.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Queue `r`, waiting for room (offline use). A record the runner can no
    /// longer take (its thread ended on an error) is counted as dropped.
    pub fn send(&mut self, r: &FlowRecord) {
        let Some(tx) = &mut self.tx else { return };
        loop {
            match tx.push(*r) {
                Ok(()) => return,
                Err(_) if tx.is_abandoned() => {
                    self.drops.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Err(_) => std::thread::sleep(Duration::from_micros(200)),
            }
        }
    }

    /// Records this producer dropped so far.
    pub fn drops(&self) -> u64 {
        self.drops.load(Ordering::Relaxed)
    }
}

/// The running exporter.
pub struct Exporter {
    handle: Option<JoinHandle<anyhow::Result<Vec<ExportReport>>>>,
    drops: Vec<Arc<AtomicU64>>,
    stop: Arc<AtomicBool>,
}

impl Exporter {
    /// Open the configured sinks and start the runner, with one queue per
    /// producer (`producers` = the number of capture workers). With no sink
    /// configured no thread starts and the producers discard.
    pub fn start(
        cfg: &ExportConfig,
        producers: usize,
    ) -> anyhow::Result<(Exporter, Vec<FlowProducer>)> {
        let drops: Vec<Arc<AtomicU64>> = (0..producers).map(|_| Arc::default()).collect();
        let stop = Arc::new(AtomicBool::new(false));
        if !cfg.any() {
            let ps = drops
                .iter()
                .map(|d| FlowProducer {
                    tx: None,
                    drops: d.clone(),
                })
                .collect();
            return Ok((
                Exporter {
                    handle: None,
                    drops,
                    stop,
                },
                ps,
            ));
        }
        let sinks = open_sinks(cfg)?;
        let per = (cfg.queue_len / producers.max(1)).max(MIN_QUEUE_PER_PRODUCER);
        let mut ps = Vec::with_capacity(producers);
        let mut consumers = Vec::with_capacity(producers);
        for d in &drops {
            let (tx, rx) = rtrb::RingBuffer::new(per);
            ps.push(FlowProducer {
                tx: Some(tx),
                drops: d.clone(),
            });
            consumers.push(rx);
        }
        let s = stop.clone();
        let handle = std::thread::Builder::new()
            .name("flow-export".into())
            .spawn(move || run(consumers, sinks, &s))
            .context("starting the flow exporter thread")?;
        Ok((
            Exporter {
                handle: Some(handle),
                drops,
                stop,
            },
            ps,
        ))
    }

    /// Records the producers dropped on full queues, in all.
    pub fn drops(&self) -> u64 {
        self.drops.iter().map(|d| d.load(Ordering::Relaxed)).sum()
    }

    /// Wait for the runner to write everything queued and close the sinks.
    /// Call it once the producers are dropped (the workers have ended); a
    /// producer still alive then is not waited for.
    pub fn finish(mut self) -> anyhow::Result<Vec<ExportReport>> {
        self.stop.store(true, Ordering::Release);
        match self.handle.take() {
            Some(h) => h
                .join()
                .map_err(|_| anyhow::anyhow!("the flow exporter thread panicked"))?,
            None => Ok(Vec::new()),
        }
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        // An exporter dropped without `finish` (an error path) must not
        // leave its thread waiting for producers that are gone.
        self.stop.store(true, Ordering::Release);
    }
}

fn wall_s() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(0)
}

/// The runner: sweep the queues, hand batches to the sinks, end when every
/// producer is gone (or `finish` was called) and the queues are empty.
fn run(
    mut consumers: Vec<rtrb::Consumer<FlowRecord>>,
    mut sinks: Vec<Sink>,
    stop: &AtomicBool,
) -> anyhow::Result<Vec<ExportReport>> {
    let mut batch: Vec<FlowRecord> = Vec::with_capacity(BATCH);
    loop {
        // Read before the sweep: a producer that ends after it may have
        // pushed during the sweep, and is seen on the next round.
        let ending = stop.load(Ordering::Acquire) || consumers.iter().all(|c| c.is_abandoned());
        let mut got = 0usize;
        for c in &mut consumers {
            while let Ok(r) = c.pop() {
                batch.push(r);
                got += 1;
                if batch.len() == BATCH {
                    write_all(&mut sinks, &batch);
                    batch.clear();
                }
            }
        }
        if !batch.is_empty() {
            write_all(&mut sinks, &batch);
            batch.clear();
        }
        if got == 0 {
            if ending {
                break;
            }
            std::thread::sleep(IDLE_SLEEP);
        }
    }
    let mut reports = Vec::new();
    let mut first_err = None;
    for s in sinks {
        match s.finish() {
            Ok(r) => reports.push(r),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(reports),
    }
}

fn write_all(sinks: &mut [Sink], recs: &[FlowRecord]) {
    for s in sinks {
        s.write(recs);
    }
}

fn open_sinks(cfg: &ExportConfig) -> anyhow::Result<Vec<Sink>> {
    let mut sinks = Vec::new();
    if cfg.ipfix_udp.is_some() || cfg.ipfix_file.is_some() {
        sinks.push(Sink::new(Kind::Ipfix(IpfixSink::open(cfg)?)));
    }
    if let Some(dir) = &cfg.parquet_dir {
        #[cfg(feature = "parquet")]
        sinks.push(Sink::new(Kind::Parquet(crate::parquet::ParquetSink::new(
            dir.clone(),
            cfg.sampling_rate.unwrap_or(1.0),
        )?)));
        #[cfg(not(feature = "parquet"))]
        anyhow::bail!(
            "--parquet {}: this build has no Parquet support (cargo feature `parquet`)",
            dir.display()
        );
    }
    Ok(sinks)
}

/// A sink, and the first error it met: a sink that failed writes no more
/// (its records are counted in its report's `errors`), the others go on,
/// and the error is returned by [`Exporter::finish`].
struct Sink {
    kind: Kind,
    failed: Option<anyhow::Error>,
    lost: u64,
}

enum Kind {
    Ipfix(IpfixSink),
    #[cfg(feature = "parquet")]
    Parquet(crate::parquet::ParquetSink),
}

impl Sink {
    fn new(kind: Kind) -> Sink {
        Sink {
            kind,
            failed: None,
            lost: 0,
        }
    }

    fn write(&mut self, recs: &[FlowRecord]) {
        if self.failed.is_some() {
            self.lost += recs.len() as u64;
            return;
        }
        let r = match &mut self.kind {
            Kind::Ipfix(s) => s.write(recs),
            #[cfg(feature = "parquet")]
            Kind::Parquet(s) => s.write(recs),
        };
        if let Err(e) = r {
            tracing::error!(
                error = %format!("{e:#}"),
                "flow export failed; this sink writes no more"
            );
            self.lost += recs.len() as u64;
            self.failed = Some(e);
        }
    }

    fn finish(self) -> anyhow::Result<ExportReport> {
        if let Some(e) = self.failed {
            return Err(e.context(format!("{} flow records not exported", self.lost)));
        }
        match self.kind {
            Kind::Ipfix(s) => s.finish(),
            #[cfg(feature = "parquet")]
            Kind::Parquet(s) => s.finish(),
        }
    }
}

/// IPFIX over UDP and/or to a file.
struct IpfixSink {
    socket: Option<UdpSocket>,
    file: Option<(PathBuf, BufWriter<File>)>,
    enc: Encoder,
    report: ExportReport,
}

impl IpfixSink {
    fn open(cfg: &ExportConfig) -> anyhow::Result<IpfixSink> {
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
        let file = match &cfg.ipfix_file {
            Some(p) => Some((
                p.clone(),
                BufWriter::new(
                    File::create(p).with_context(|| format!("IPFIX: creating {}", p.display()))?,
                ),
            )),
            None => None,
        };
        Ok(IpfixSink {
            socket,
            file,
            enc: Encoder::new(cfg.domain_id, 1400, cfg.template_refresh_s.max(1))
                .with_sampling(cfg.sampling_rate.unwrap_or(1.0)),
            report: ExportReport {
                name: "ipfix".into(),
                ..Default::default()
            },
        })
    }

    fn write(&mut self, recs: &[FlowRecord]) -> anyhow::Result<()> {
        self.report.records += recs.len() as u64;
        let mut err = None;
        let (socket, file, report) = (&self.socket, &mut self.file, &mut self.report);
        self.enc.encode(wall_s(), recs, &mut |m| {
            report.units += 1;
            if let Some(s) = socket {
                // A collector that is not listening yet refuses with ICMP;
                // count it and go on (UDP export is best effort).
                if s.send(m).is_err() {
                    report.errors += 1;
                }
            }
            if let Some((_, f)) = file.as_mut()
                && err.is_none()
                && let Err(e) = f.write_all(m)
            {
                err = Some(e);
            }
        });
        if let Some(e) = err {
            let p = self.file.as_ref().map(|(p, _)| p.display().to_string());
            return Err(e).with_context(|| format!("IPFIX: writing {}", p.unwrap_or_default()));
        }
        Ok(())
    }

    fn finish(mut self) -> anyhow::Result<ExportReport> {
        if let Some((p, f)) = self.file.as_mut() {
            f.flush()
                .with_context(|| format!("IPFIX: writing {}", p.display()))?;
        }
        Ok(self.report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use linecap_dataplane::flowtable::EndReason;
    use linecap_wire::flow::{FlowKey, IpFamily, VlanStack};

    fn rec(i: u8) -> FlowRecord {
        let mut a = [0u8; 16];
        a[..4].copy_from_slice(&[10, 0, 0, i]);
        let mut b = [0u8; 16];
        b[..4].copy_from_slice(&[10, 0, 1, 1]);
        FlowRecord {
            key: FlowKey::from_endpoints(VlanStack::new(), 17, false, IpFamily::V4, a, 1000, b, 53)
                .0,
            first_ns: 1,
            last_ns: 2,
            packets: [1, 0],
            bytes: [100, 0],
            captured_bytes: [100, 0],
            tcp_flags: [0, 0],
            a_initiated: true,
            end_reason: EndReason::Idle,
            first_payload: linecap_wire::applabel::FirstPayload::EMPTY,
        }
    }

    #[test]
    fn every_producer_reaches_the_file_and_nothing_is_lost_offline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.ipfix");
        let cfg = ExportConfig {
            ipfix_file: Some(path.clone()),
            queue_len: 16,
            template_refresh_s: 600,
            ..Default::default()
        };
        let (ex, ps) = Exporter::start(&cfg, 3).unwrap();
        let threads: Vec<_> = ps
            .into_iter()
            .map(|mut p| {
                std::thread::spawn(move || {
                    for i in 0..10_000u32 {
                        p.send(&rec(i as u8));
                    }
                    p.drops()
                })
            })
            .collect();
        let dropped: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(dropped, 0);
        assert_eq!(ex.drops(), 0);
        let reports = ex.finish().unwrap();
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].records, 30_000);
        assert!(std::fs::metadata(&path).unwrap().len() > 30_000 * 40);
    }

    #[test]
    fn a_full_queue_drops_and_counts_in_its_producer() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = ExportConfig {
            ipfix_file: Some(dir.path().join("f.ipfix")),
            queue_len: 0,
            template_refresh_s: 600,
            ..Default::default()
        };
        let (ex, mut ps) = Exporter::start(&cfg, 1).unwrap();
        // Far more than the queue holds, faster than the runner drains.
        let n = 50 * MIN_QUEUE_PER_PRODUCER as u64;
        for i in 0..n {
            ps[0].offer(&rec(i as u8));
        }
        let dropped = ps[0].drops();
        assert_eq!(ex.drops(), dropped);
        drop(ps);
        let reports = ex.finish().unwrap();
        // Every record is either written or counted, once.
        assert_eq!(reports[0].records + dropped, n);
    }

    #[test]
    fn no_sink_means_no_thread_and_no_drops() {
        let (ex, mut ps) = Exporter::start(&ExportConfig::default(), 2).unwrap();
        ps[1].offer(&rec(1));
        assert_eq!(ex.drops(), 0);
        assert!(ex.finish().unwrap().is_empty());
    }

    #[test]
    fn a_bad_ipfix_path_fails_at_start_naming_it() {
        let cfg = ExportConfig {
            ipfix_file: Some("/nonexistent-dir-13b/x.ipfix".into()),
            ..Default::default()
        };
        let e = Exporter::start(&cfg, 1).err().unwrap();
        assert!(format!("{e:#}").contains("/nonexistent-dir-13b/x.ipfix"));
    }
}

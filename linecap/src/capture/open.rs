//! Opening the sources: files, generators, AF_XDP sockets behind an XDP
//! program, DPDK ports; one [`Queue`] per receive queue.

use std::sync::{Arc, Mutex};

use anyhow::Context;
use linecap_dataplane::afxdp::{XdpAttachment, XdpQueueStats, XskConfig, XskSocket};
use linecap_dataplane::clock::RealtimeClock;
use linecap_dataplane::synthetic::SyntheticSource;

use crate::config::CaptureConfig;
use crate::filesource::FileSource;
use crate::limits;
use crate::source::SourceSpec;

/// One queue's receive side.
pub(super) enum QueueSource {
    File(FileSource),
    Synthetic(SyntheticSource<RealtimeClock>),
    AfXdp(Box<XskSocket>),
    #[cfg(feature = "dpdk")]
    Dpdk(Box<crate::dpdksource::DpdkQueue>),
}

impl QueueSource {
    /// issue 14: the source's timestamp clock, for the manifests.
    pub(super) fn clock_source(&self) -> &'static str {
        use linecap_dataplane::source::RxQueue;
        match self {
            QueueSource::File(s) => s.clock_source(),
            QueueSource::Synthetic(s) => s.clock_source(),
            QueueSource::AfXdp(s) => s.clock_source(),
            #[cfg(feature = "dpdk")]
            QueueSource::Dpdk(s) => s.clock_source(),
        }
    }
}

/// One opened queue.
pub(super) struct Queue {
    pub(super) id: u32,
    pub(super) label: String,
    pub(super) source: QueueSource,
    /// AF_XDP: (attachment index, hardware queue).
    pub(super) xdp: Option<(usize, u32)>,
}

/// Interfaces with linecap's XDP program attached, kept for the whole capture.
#[derive(Default)]
pub(super) struct Attachments {
    pub(super) list: Vec<XdpAttachment>,
    /// Per attachment: interface drop counters at start.
    pub(super) iface_drops_start: Vec<linecap_dataplane::afxdp::IfaceCounters>,
    /// issue 14: per (attachment, hardware queue), the XDP program's counts
    /// read before the queue's socket was registered (before any frame
    /// could reach it).
    pub(super) xdp_base: Vec<((usize, u32), XdpQueueStats)>,
}

/// issue 14: the interface's drops not counted by a later stage (see
/// `linecap_dataplane::afxdp::ifstats` for the rule per driver), given what
/// its AF_XDP sockets counted as dropped (`xsk_drops`).
pub(super) fn iface_drops_since_start(att: &Attachments, ai: usize, xsk_drops: u64) -> u64 {
    let a = &att.list[ai];
    linecap_dataplane::afxdp::ifstats::iface_drops(
        a.driver(),
        a.native(),
        &att.iface_drops_start[ai],
        &linecap_dataplane::afxdp::IfaceCounters::read(a.ifname()),
        xsk_drops,
    )
}

/// issue 14: per attachment, the sum of its sockets' drops (`xsk[qi]` per queue).
pub(super) fn xsk_drops_of(ids: &[Option<(usize, u32)>], ai: usize, xsk: &[u64]) -> u64 {
    ids.iter()
        .zip(xsk)
        .filter(|(id, _)| id.is_some_and(|(a, _)| a == ai))
        .map(|(_, d)| d)
        .sum()
}

/// Publish what the XDP programs and the interfaces counted since the start
/// (for the metrics); the interface's drops go to its first queue, as in
/// the report.
pub(super) fn refresh_xdp_live(
    att: &Attachments,
    ids: &[Option<(usize, u32)>],
    base: &[Option<XdpQueueStats>],
    live: &[Option<Arc<Mutex<crate::metrics::XdpLive>>>],
    xsk: &[u64],
) {
    for (qi, (id, b)) in ids.iter().zip(base).enumerate() {
        let (Some((a, hq)), Some(b), Some(slot)) = (id, b, &live[qi]) else {
            continue;
        };
        let now = att.list[*a].queue_stats(*hq);
        let first = ids.iter().position(|x| x.is_some_and(|(i, _)| i == *a)) == Some(qi);
        let iface = if first {
            iface_drops_since_start(att, *a, xsk_drops_of(ids, *a, xsk))
        } else {
            0
        };
        let not_redirected = now.not_redirected.saturating_sub(b.not_redirected);
        let derived = att.list[*a].driver() == "veth" && att.list[*a].native();
        let mut l = slot.lock().unwrap_or_else(|e| e.into_inner());
        *l = crate::metrics::XdpLive {
            not_redirected,
            iface_drops: iface,
            // Never less than before: the worker folds only increases.
            lctr_foldable: l
                .lctr_foldable
                .max(not_redirected + if derived { 0 } else { iface }),
            hw_stamped: now.hw_stamped.saturating_sub(b.hw_stamped),
            hw_missing: now.hw_missing.saturating_sub(b.hw_missing),
        };
    }
}

/// Receive queues of an interface (from sysfs).
fn rx_queues(ifname: &str) -> anyhow::Result<Vec<u32>> {
    let dir = format!("/sys/class/net/{ifname}/queues");
    let mut q: Vec<u32> = std::fs::read_dir(&dir)
        .with_context(|| format!("interface {ifname:?}: cannot list {dir} (no such interface in this network namespace?)"))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.strip_prefix("rx-")?.parse().ok())
        .collect();
    q.sort();
    anyhow::ensure!(!q.is_empty(), "interface {ifname:?} has no receive queues");
    Ok(q)
}

pub(super) fn open_queues(
    cfg: &CaptureConfig,
    att: &mut Attachments,
) -> anyhow::Result<Vec<Queue>> {
    anyhow::ensure!(!cfg.sources.is_empty(), "no --source given");
    anyhow::ensure!(cfg.spread >= 1, "--spread must be at least 1");
    let mut queues: Vec<Queue> = Vec::new();
    let mut push = |source, label: String, xdp| {
        let id = queues.len() as u32;
        queues.push(Queue {
            id,
            label,
            source,
            xdp,
        });
    };
    for spec in &cfg.sources {
        match spec {
            SourceSpec::File(path) => {
                for i in 0..cfg.spread {
                    let src = FileSource::open(path, cfg.spread, i)
                        .with_context(|| format!("opening source {}", spec.label()))?;
                    let label = if cfg.spread > 1 {
                        format!("{} ({}/{})", spec.label(), i + 1, cfg.spread)
                    } else {
                        spec.label()
                    };
                    push(QueueSource::File(src), label, None);
                }
            }
            SourceSpec::Synthetic(c) => {
                let src = SyntheticSource::new(*c, RealtimeClock).map_err(anyhow::Error::msg)?;
                push(QueueSource::Synthetic(src), spec.label(), None);
            }
            SourceSpec::AfXdp {
                ifname,
                queues: wanted,
            } => {
                let present = rx_queues(ifname)?;
                let list = match wanted {
                    Some(w) => {
                        for q in w {
                            anyhow::ensure!(
                                present.contains(q),
                                "interface {ifname} has no receive queue {q} (it has {present:?})"
                            );
                        }
                        w.clone()
                    }
                    None => present,
                };
                let mut a = XdpAttachment::attach(
                    ifname,
                    cfg.xdp.mode,
                    cfg.xdp.timestamps,
                    cfg.xdp.threaded_napi,
                )?;
                if let Some(why) = a.device_bound_refused() {
                    tracing::warn!(
                        "{ifname}: the device-bound XDP program (RX hardware timestamps) was \
                         refused ({why}); {}",
                        if a.metadata_refused().is_some() {
                            "the plain program was refused too (next message)"
                        } else {
                            "stamping with bpf_ktime_get_ns() only"
                        }
                    );
                }
                if let Some(why) = a.metadata_refused() {
                    tracing::warn!(
                        "{ifname}: this kernel refused the XDP program that stamps each frame in \
                         its metadata ({why}); the program without metadata runs, and frames are \
                         stamped in user space, one clock read per frame as it is received (each counted \
                         in the report's xdp.no_meta)"
                    );
                }
                if let Some(why) = a.native_refused() {
                    tracing::warn!("{ifname}: native XDP refused ({why}); using generic mode");
                }
                let ai = att.list.len();
                // issue 14: baselines before any socket can receive.
                att.iface_drops_start
                    .push(linecap_dataplane::afxdp::IfaceCounters::read(ifname));
                let mut sockets = Vec::new();
                for &q in &list {
                    let xcfg = XskConfig {
                        ring_entries: cfg.xdp.ring_entries,
                        frames: cfg.xdp.ring_entries * 2,
                        zero_copy: cfg.xdp.zero_copy,
                        hugepages: cfg.hugepages,
                        ..XskConfig::new(ifname, q)
                    };
                    let mut sock = XskSocket::open(&xcfg)?;
                    sock.set_device_bound(a.device_bound());
                    if a.metadata_refused().is_some() {
                        sock.set_no_metadata();
                    }
                    att.xdp_base.push(((ai, q), a.queue_stats(q)));
                    a.register(q, sock.raw_fd())?;
                    sockets.push((q, sock));
                }
                if let Some((_, s)) = sockets.first() {
                    let b = s.bind_info();
                    let zc = if b.zero_copy {
                        "zero-copy".to_string()
                    } else if let Some(e) = b.zero_copy_refused {
                        format!(
                            "copy mode (zero-copy refused: {})",
                            std::io::Error::from_raw_os_error(e)
                        )
                    } else {
                        "copy mode".to_string()
                    };
                    tracing::info!(
                        "{ifname}: XDP {} mode, {} program, AF_XDP {zc}, queues {list:?}, UMEM on {}",
                        if a.native() { "native" } else { "generic" },
                        if a.device_bound() {
                            "device-bound (hardware RX timestamps where the driver gives them)"
                        } else if a.metadata_refused().is_some() {
                            "no-metadata (user-space stamps)"
                        } else {
                            "ktime"
                        },
                        if b.hugepages {
                            "hugepages"
                        } else {
                            "normal pages"
                        }
                    );
                }
                att.list.push(a);
                for (q, sock) in sockets {
                    push(
                        QueueSource::AfXdp(Box::new(sock)),
                        format!("afxdp:{ifname}:{q}"),
                        Some((ai, q)),
                    );
                }
            }
            #[cfg(feature = "dpdk")]
            SourceSpec::Dpdk(d) => {
                let all: Vec<&crate::source::DpdkSpec> = cfg
                    .sources
                    .iter()
                    .filter_map(|s| match s {
                        SourceSpec::Dpdk(d) => Some(d),
                        _ => None,
                    })
                    .collect();
                for (q, label) in crate::dpdksource::open(&all, cfg.hugepages, d)? {
                    push(QueueSource::Dpdk(Box::new(q)), label, None);
                }
            }
            #[cfg(not(feature = "dpdk"))]
            SourceSpec::Dpdk(_) => anyhow::bail!(
                "source {}: this linecap was built without DPDK (rebuild with --features dpdk)",
                spec.label()
            ),
        }
    }
    anyhow::ensure!(
        queues.len() <= limits::QUEUES_MAX as usize,
        "at most {} queues, got {}",
        limits::QUEUES_MAX,
        queues.len()
    );
    Ok(queues)
}

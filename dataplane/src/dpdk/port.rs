//! One DPDK port: configured with its receive queues, RSS and a mempool per
//! queue, started, and read queue by queue as [`RxQueue`]s.
//!
//! Per burst a queue makes one call into the shim (`rte_eth_rx_burst`), reads
//! each mbuf's data pointer, lengths and flags straight from the struct (field
//! offsets taken once from the shim), hands the frames to the worker, and
//! frees the burst with one `rte_pktmbuf_free_bulk`. No call, allocation or
//! `Result` per packet.
//!
//! The port's drop counters (`rte_eth_stats`: imissed, ierrors, rx_nombuf;
//! plus the kernel interface's own drop counters for vdevs bound to an
//! `iface=`) are read on the worker's stats tick by the port's first queue,
//! which carries them in the accounting: DPDK counts them per port. Each
//! queue also reads its own drops where the PMD has them per queue: the
//! per-queue extended statistic of the PMDs in [`PER_QUEUE_DROP_XSTATS`],
//! and on net_af_packet the queue's kernel socket ([`super::pktsock`]).
//!
//! At the end of a capture each queue stops its inflow
//! ([`RxQueue::stop_inflow`]): `rte_eth_dev_rx_queue_stop` where the PMD has
//! it, else (net_af_packet) a drop-all filter on the queue's socket; the
//! worker then drains the queue and the last counter read is final.

use std::ffi::{CStr, CString};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::eal::{self, Eal, PORTS_OPEN, strerror};
use super::sys;
use crate::source::{Frame, FrameSink, NicDrops, RxQueue, RxStatus, SourceDrops};

/// Most mbufs one `rx_burst` returns (the worker asks for at most this).
pub const BURST_MAX: usize = 64;

/// PMDs whose per-queue extended statistic named here (`{q}` is the queue)
/// is a receive drop of that queue alone, disjoint from the port counters
/// linecap adds (imissed, ierrors, rx_nombuf), so it can be counted on its
/// queue without counting a frame twice:
///
/// - `net_ixgbe`: `rx_q{q}_errors` is `q_errors[q]`, the queue's QPRDC
///   register (frames dropped because the queue had no free descriptor);
///   the port's imissed is MPC (packet buffer full) and ierrors are CRC and
///   length errors: disjoint.
///
/// Not listed, so the port counters on the first queue are used: `net_i40e`
/// and `net_ice` (no per-queue drop counter; their drops are port-level
/// `rx_discards`, in imissed), `net_mlx5` (its `rx_q{q}_errors` are the
/// queue's software `idropped`, which it also counts in the port's
/// rx_nombuf; `rx_out_of_buffer` is port-level, in imissed), and the
/// software PMDs (net_null, net_ring, net_pcap: no drops; net_af_packet:
/// `rx_q{q}_errors` is always 0, its socket is read instead).
pub const PER_QUEUE_DROP_XSTATS: &[(&str, &str)] = &[("net_ixgbe", "rx_q{q}_errors")];

/// The per-queue drop statistic's name for `driver`'s queue `q`, if it has one.
pub fn per_queue_drop_xstat(driver: &str, q: u16) -> Option<String> {
    PER_QUEUE_DROP_XSTATS
        .iter()
        .find(|(d, _)| *d == driver)
        .map(|(_, pat)| pat.replace("{q}", &q.to_string()))
}

/// How a queue's inflow was stopped at the end of the capture.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StopMethod {
    /// Not stopped (yet).
    #[default]
    Running,
    /// `rte_eth_dev_rx_queue_stop` succeeded.
    QueueStop,
    /// The PMD refused the queue stop (the errno); a drop-all filter on
    /// the queue's kernel socket stopped the inflow (net_af_packet).
    SocketFilter(i32),
    /// The PMD refused the queue stop (the errno) and has no socket to
    /// filter: the inflow is whatever the PMD makes (net_null, net_ring,
    /// net_pcap generate or replay frames only when polled).
    Refused(i32),
    /// The queue stop was refused and filtering the socket failed.
    Failed(String),
}

/// A port's settings, fixed at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortConfig {
    /// The ethdev name: a PCI address (`0000:3b:00.0`) or a vdev name
    /// (`net_pcap0`, the part of the vdev string before the first comma).
    pub name: String,
    /// Receive queues (one worker each).
    pub queues: u16,
    /// Receive descriptors per queue (adjusted to the device's limits).
    pub rx_desc: u16,
    /// Mbufs per queue's mempool (raised to what the ring and cache need).
    pub mbufs: u32,
    /// Per-lcore mempool cache.
    pub mbuf_cache: u32,
    /// RSS key (repeated or cut to the device's key size; it must then be
    /// symmetric, repeating every 2 bytes, for that to keep its meaning).
    pub rss_key: Vec<u8>,
    /// Also set up this many transmit queues (0 for capture; the net_ring
    /// self-test injects through them).
    pub tx_queues: u16,
    /// A kernel interface whose drop counters belong to this port (the
    /// `iface=` of net_af_packet / net_af_xdp).
    pub iface: Option<String>,
    /// Put the port in promiscuous mode.
    pub promiscuous: bool,
    /// Without NIC or kernel stamps: one TSC read per frame, or one per
    /// receive burst shared by its frames.
    pub tsc_stamps: TscStamps,
}

/// How frames are stamped from the TSC when neither the PMD nor the kernel
/// gives a receive time (the start-up line and the manifest say which).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TscStamps {
    /// One `rdtsc` per frame as the receive loop reaches it (manifest clock
    /// `tsc`): each frame has its own stamp, at a cost per frame measured
    /// by `bench dpdk` (13 ns on the project's VM).
    #[default]
    Frame,
    /// One `rdtsc` right after each `rx_burst`, shared by the burst's frames
    /// (manifest clock `tsc-burst`; what libtrace's DPDK format does with
    /// `clock_gettime`). The frames of one burst were all in the NIC ring
    /// when the burst was taken, so a stamp per frame says when the loop
    /// reached the frame, not when it arrived.
    Burst,
}

impl TscStamps {
    /// The manifest's clock name.
    pub fn clock_name(self) -> &'static str {
        match self {
            TscStamps::Frame => "tsc",
            TscStamps::Burst => "tsc-burst",
        }
    }
}

/// The first 44 bytes of DPDK 22.11's `struct rte_mbuf` (x86-64), read by
/// the receive loop at fixed offsets. `dpdk_shim.c` asserts the same
/// offsets against the installed headers at build time, and
/// [`Port::open`] compares them with the C compiler's at start.
#[repr(C)]
struct MbufHead {
    buf_addr: *const u8,
    buf_iova: u64,
    data_off: u16,
    refcnt: u16,
    nb_segs: u16,
    port: u16,
    ol_flags: u64,
    packet_type: u32,
    pkt_len: u32,
    data_len: u16,
    vlan_tci: u16,
}

const _: () = {
    assert!(std::mem::offset_of!(MbufHead, buf_addr) == 0);
    assert!(std::mem::offset_of!(MbufHead, data_off) == 16);
    assert!(std::mem::offset_of!(MbufHead, nb_segs) == 20);
    assert!(std::mem::offset_of!(MbufHead, ol_flags) == 24);
    assert!(std::mem::offset_of!(MbufHead, pkt_len) == 36);
    assert!(std::mem::offset_of!(MbufHead, data_len) == 40);
};

/// Whether the C compiler's offsets (`lc_mbuf_layout`) are the mirror's.
fn layout_matches(l: &sys::lc_mbuf_layout) -> bool {
    use std::mem::offset_of;
    let at = |o: usize| o as u32;
    l.size as usize >= std::mem::size_of::<MbufHead>()
        && l.buf_addr == at(offset_of!(MbufHead, buf_addr))
        && l.data_off == at(offset_of!(MbufHead, data_off))
        && l.nb_segs == at(offset_of!(MbufHead, nb_segs))
        && l.ol_flags == at(offset_of!(MbufHead, ol_flags))
        && l.pkt_len == at(offset_of!(MbufHead, pkt_len))
        && l.data_len == at(offset_of!(MbufHead, data_len))
}

/// The symmetric Toeplitz key: 0x6d5a repeated. Both directions of a flow
/// hash to the same queue (Woo & Park, "Scalable TCP Session Monitoring with
/// Symmetric Receive-side Scaling").
pub fn symmetric_rss_key(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| if i % 2 == 0 { 0x6d } else { 0x5a })
        .collect()
}

impl PortConfig {
    /// Defaults for `name`: one queue, 4096 descriptors, 16 Ki mbufs per
    /// queue, the symmetric key.
    pub fn new(name: &str) -> Self {
        PortConfig {
            name: name.into(),
            queues: 1,
            rx_desc: 4096,
            mbufs: 16 * 1024,
            mbuf_cache: 256,
            rss_key: symmetric_rss_key(40),
            tx_queues: 0,
            iface: None,
            promiscuous: true,
            tsc_stamps: TscStamps::Frame,
        }
    }
}

/// What the port turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortInfo {
    /// Port id.
    pub port_id: u16,
    /// The PMD (`net_pcap`, `net_i40e`, …).
    pub driver: String,
    /// Receive descriptors per queue after adjustment.
    pub rx_desc: u16,
    /// Mbufs per queue.
    pub mbufs: u32,
    /// RSS hash functions in use (0: no RSS, a single queue or a device
    /// without it, such as net_pcap and net_ring).
    pub rss_hf: u64,
    /// Bytes of the RSS key given to the device.
    pub rss_key_len: usize,
    /// Receive timestamps from the PMD in µs (net_pcap), else one calibrated
    /// TSC read per burst.
    pub pmd_timestamps_us: bool,
    /// NUMA socket of the mempools.
    pub socket: i32,
}

/// Port-wide counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct PortStats {
    ipackets: u64,
    imissed: u64,
    ierrors: u64,
    rx_nombuf: u64,
    iface_dropped: u64,
    iface_rx_packets: u64,
}

/// A started port. Dropping the last handle (the queues hold one each) stops
/// and closes it and frees its mempools.
pub struct Port {
    id: u16,
    info: PortInfo,
    cfg: PortConfig,
    pools: Vec<*mut sys::rte_mempool>,
    inject_pool: *mut sys::rte_mempool,
    base: PortStats,
    eal: Eal,
}

// SAFETY: the mempool pointers are DPDK objects that any thread may use (the
// mempool is multi-producer/multi-consumer); the port id is a plain number.
// The port itself is only stopped and closed in Drop, by the last owner.
unsafe impl Send for Port {}
// SAFETY: shared access only reads `info`/`cfg` and calls thread-safe DPDK
// functions (stats, tx on a queue the caller owns).
unsafe impl Sync for Port {}

fn err(what: &str, name: &str, rc: i32) -> String {
    format!(
        "DPDK port {name}: {what}: {}",
        strerror(rc.saturating_abs())
    )
}

fn read_u64(path: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn iface_counters(ifname: &str) -> (u64, u64) {
    let dropped = ["rx_dropped", "rx_missed_errors", "rx_fifo_errors"]
        .iter()
        .map(|f| read_u64(&format!("/sys/class/net/{ifname}/statistics/{f}")))
        .sum();
    let rx = read_u64(&format!("/sys/class/net/{ifname}/statistics/rx_packets"));
    (dropped, rx)
}

impl Port {
    /// Find, configure and start the port `cfg.name`. Errors name the step.
    pub fn open(eal: Eal, cfg: &PortConfig) -> Result<Arc<Port>, String> {
        let name = cfg.name.as_str();
        if cfg.queues == 0 {
            return Err(format!("DPDK port {name}: at least one queue"));
        }
        let mut layout = sys::lc_mbuf_layout::default();
        // SAFETY: fills a plain struct.
        unsafe { sys::lc_mbuf_layout(&mut layout) };
        if !layout_matches(&layout) {
            return Err(format!(
                "DPDK port {name}: this DPDK's struct rte_mbuf is laid out as {layout:?}, \
                 not as linecap reads it (DPDK 22.11, x86-64)"
            ));
        }
        let cname = CString::new(name).map_err(|_| format!("{name:?}: NUL in the name"))?;
        let mut id: u16 = 0;
        // SAFETY: cname is NUL-terminated and outlives the call; id is a
        // valid out-pointer.
        let rc = unsafe { sys::rte_eth_dev_get_port_by_name(cname.as_ptr(), &mut id) };
        if rc != 0 {
            // SAFETY: no arguments; reads the ethdev table.
            let n = unsafe { sys::rte_eth_dev_count_avail() };
            return Err(format!(
                "DPDK port {name}: no such port (EAL found {n} port(s); a vdev must be given as \
                 dpdk:net_XXX0,args and a PCI device must be bound to vfio-pci)"
            ));
        }
        let mut dev: sys::rte_eth_dev_info = Default::default();
        // SAFETY: id is a valid port (looked up above); dev is a valid out struct.
        let rc = unsafe { sys::rte_eth_dev_info_get(id, &mut dev) };
        if rc != 0 {
            return Err(err("rte_eth_dev_info_get", name, rc));
        }
        let driver = if dev.driver_name.is_null() {
            String::from("?")
        } else {
            // SAFETY: driver_name points to the driver's static NUL-terminated name.
            unsafe { CStr::from_ptr(dev.driver_name) }
                .to_string_lossy()
                .into_owned()
        };
        if cfg.queues > dev.max_rx_queues {
            return Err(format!(
                "DPDK port {name} ({driver}): {} receive queues asked, the device has at most {} \
                 (net_pcap: one rx_pcap= per queue)",
                cfg.queues, dev.max_rx_queues
            ));
        }
        let tx_queues = cfg.tx_queues.min(dev.max_tx_queues);

        // RSS: only with several queues and a device that hashes.
        let mut conf: sys::rte_eth_conf = Default::default();
        let rss_hf = if cfg.queues > 1 {
            sys::RSS_WANTED & dev.flow_type_rss_offloads
        } else {
            0
        };
        let mut key = Vec::new();
        if rss_hf != 0 {
            let want = if dev.hash_key_size == 0 {
                40
            } else {
                dev.hash_key_size as usize
            };
            if cfg.rss_key.is_empty() {
                return Err(format!("DPDK port {name}: empty RSS key"));
            }
            if cfg.rss_key.len() != want {
                let periodic = cfg.rss_key.len() >= 2
                    && cfg
                        .rss_key
                        .iter()
                        .enumerate()
                        .all(|(i, b)| *b == cfg.rss_key[i % 2]);
                if !periodic {
                    return Err(format!(
                        "DPDK port {name} ({driver}): the RSS key has {} bytes, the device takes {want}; \
                         only a key that repeats every 2 bytes (symmetric) can be resized",
                        cfg.rss_key.len()
                    ));
                }
                key = (0..want).map(|i| cfg.rss_key[i % 2]).collect();
            } else {
                key = cfg.rss_key.clone();
            }
            conf.rxmode.mq_mode = sys::rte_eth_rx_mq_mode_RTE_ETH_MQ_RX_RSS;
            conf.rx_adv_conf.rss_conf.rss_key = key.as_mut_ptr();
            conf.rx_adv_conf.rss_conf.rss_key_len = key.len() as u8;
            conf.rx_adv_conf.rss_conf.rss_hf = rss_hf;
        }
        // SAFETY: id is valid and stopped (never started by us); conf and the
        // key it points to live across the call (DPDK copies the key).
        let rc = unsafe { sys::rte_eth_dev_configure(id, cfg.queues, tx_queues, &conf) };
        if rc != 0 {
            return Err(err("rte_eth_dev_configure", name, rc));
        }
        let mut nb_rxd = cfg.rx_desc;
        let mut nb_txd: u16 = 1024;
        // SAFETY: id is configured; both pointers are valid in/out values.
        let rc = unsafe { sys::rte_eth_dev_adjust_nb_rx_tx_desc(id, &mut nb_rxd, &mut nb_txd) };
        if rc != 0 {
            return Err(err("adjusting descriptor counts", name, rc));
        }
        // SAFETY: id is valid.
        let mut socket = unsafe { sys::rte_eth_dev_socket_id(id) };
        if socket < 0 {
            // SAFETY: no preconditions.
            socket = unsafe { sys::rte_socket_id() } as i32;
        }
        let mbufs = cfg
            .mbufs
            .max(nb_rxd as u32 + 2 * BURST_MAX as u32 + cfg.mbuf_cache * 2)
            .max(1024);

        // From here on the port owns what it created: an error drops it,
        // which closes the device and frees the pools made so far.
        PORTS_OPEN.fetch_add(1, Ordering::AcqRel);
        let mut port = Port {
            id,
            info: PortInfo {
                port_id: id,
                driver,
                rx_desc: nb_rxd,
                mbufs,
                rss_hf,
                rss_key_len: key.len(),
                pmd_timestamps_us: false,
                socket,
            },
            cfg: cfg.clone(),
            pools: Vec::with_capacity(cfg.queues as usize),
            inject_pool: std::ptr::null_mut(),
            base: PortStats::default(),
            eal,
        };
        for q in 0..cfg.queues {
            let pool = port.make_pool(&format!("lc{id}q{q}"), mbufs, cfg.mbuf_cache)?;
            port.pools.push(pool);
            let mut rxconf = dev.default_rxconf;
            rxconf.offloads = 0;
            // SAFETY: id is configured with cfg.queues rx queues; q is in
            // range; rxconf is a valid struct; pool is a live pktmbuf pool.
            let rc =
                unsafe { sys::rte_eth_rx_queue_setup(id, q, nb_rxd, socket as u32, &rxconf, pool) };
            if rc != 0 {
                return Err(err(&format!("setting up receive queue {q}"), name, rc));
            }
        }
        for q in 0..tx_queues {
            // SAFETY: id is configured with tx_queues tx queues; a null txconf
            // means the driver's default.
            let rc = unsafe {
                sys::rte_eth_tx_queue_setup(id, q, nb_txd, socket as u32, std::ptr::null())
            };
            if rc != 0 {
                return Err(err(&format!("setting up transmit queue {q}"), name, rc));
            }
        }
        if tx_queues > 0 {
            port.inject_pool = port.make_pool(&format!("lc{id}inj"), 8191, 0)?;
        }
        // SAFETY: every configured queue is set up.
        let rc = unsafe { sys::rte_eth_dev_start(id) };
        if rc != 0 {
            return Err(err("rte_eth_dev_start", name, rc));
        }
        if cfg.promiscuous {
            // Not every PMD has the notion (vdevs); a refusal is not an error.
            // SAFETY: id is started.
            let _ = unsafe { sys::rte_eth_promiscuous_enable(id) };
        }
        // Timestamps: net_pcap registers the standard dynamic field and flag
        // and fills them with the pcap record's time in µs.
        let ts_name = CString::new("rte_dynfield_timestamp").expect("no NUL");
        let flag_name = CString::new("rte_dynflag_rx_timestamp").expect("no NUL");
        // SAFETY: NUL-terminated names; a null params pointer is allowed.
        let (off, bit) = unsafe {
            (
                sys::rte_mbuf_dynfield_lookup(ts_name.as_ptr(), std::ptr::null_mut()),
                sys::rte_mbuf_dynflag_lookup(flag_name.as_ptr(), std::ptr::null_mut()),
            )
        };
        port.info.pmd_timestamps_us = port.info.driver == "net_pcap" && off >= 0 && bit >= 0;
        port.base = port
            .read_stats()
            .map_err(|e| err("rte_eth_stats_get", name, e))?;
        Ok(Arc::new(port))
    }

    fn make_pool(&self, pname: &str, n: u32, cache: u32) -> Result<*mut sys::rte_mempool, String> {
        let cpool = CString::new(pname).expect("no NUL");
        // SAFETY: cpool is NUL-terminated; sizes are in range (cache ≤ 512,
        // n ≥ 1024); socket is a valid socket id.
        let pool = unsafe {
            sys::rte_pktmbuf_pool_create(
                cpool.as_ptr(),
                n,
                cache.min(512),
                0,
                sys::RTE_MBUF_DEFAULT_BUF_SIZE as u16,
                self.info.socket,
            )
        };
        if pool.is_null() {
            let e = eal::errno();
            return Err(format!(
                "DPDK port {}: creating mempool {pname} of {n} mbufs: {}{}",
                self.cfg.name,
                strerror(e),
                if e == libc::ENOMEM {
                    " (reserve hugepages, e.g. sysctl vm.nr_hugepages=512, or give -m more memory with --no-huge)"
                } else {
                    ""
                }
            ));
        }
        Ok(pool)
    }

    fn read_stats(&self) -> Result<PortStats, i32> {
        let mut s: sys::rte_eth_stats = Default::default();
        // SAFETY: the port is valid while self lives; s is a valid out struct.
        let rc = unsafe { sys::rte_eth_stats_get(self.id, &mut s) };
        if rc != 0 {
            return Err(rc);
        }
        let (iface_dropped, iface_rx_packets) =
            self.cfg.iface.as_deref().map_or((0, 0), iface_counters);
        Ok(PortStats {
            ipackets: s.ipackets,
            imissed: s.imissed,
            ierrors: s.ierrors,
            rx_nombuf: s.rx_nombuf,
            iface_dropped,
            iface_rx_packets,
        })
    }

    /// The port's drop counters since it started.
    pub fn drops(&self) -> NicDrops {
        let Ok(s) = self.read_stats() else {
            return NicDrops::default();
        };
        let b = self.base;
        NicDrops {
            imissed: s.imissed.saturating_sub(b.imissed),
            ierrors: s.ierrors.saturating_sub(b.ierrors),
            rx_nombuf: s.rx_nombuf.saturating_sub(b.rx_nombuf),
            iface_dropped: s.iface_dropped.saturating_sub(b.iface_dropped),
            iface_rx_packets: s.iface_rx_packets.saturating_sub(b.iface_rx_packets),
            port_rx_packets: s.ipackets.saturating_sub(b.ipackets),
            ..NicDrops::default()
        }
    }

    /// What the port is.
    pub fn info(&self) -> &PortInfo {
        &self.info
    }

    /// Its queues, each an [`RxQueue`] for one worker. The first carries the
    /// port-wide drop counters.
    pub fn queues(self: &Arc<Self>) -> Vec<DpdkQueue> {
        let ts_name = CString::new("rte_dynfield_timestamp").expect("no NUL");
        let flag_name = CString::new("rte_dynflag_rx_timestamp").expect("no NUL");
        // SAFETY: as in `open`.
        let (off, bit) = unsafe {
            (
                sys::rte_mbuf_dynfield_lookup(ts_name.as_ptr(), std::ptr::null_mut()),
                sys::rte_mbuf_dynflag_lookup(flag_name.as_ptr(), std::ptr::null_mut()),
            )
        };
        let (ts_off, ts_flag) = if self.info.pmd_timestamps_us {
            (off as usize, 1u64 << bit)
        } else {
            (0, 0)
        };
        let names = self.xstat_names();
        (0..self.cfg.queues)
            .map(|q| {
                let xstat = per_queue_drop_xstat(&self.info.driver, q)
                    .and_then(|n| names.iter().position(|x| *x == n).map(|i| (n, i as u64)));
                let (sock, sock_note) = match (&*self.info.driver, self.cfg.iface.as_deref()) {
                    ("net_af_packet", Some(ifname)) => {
                        // SAFETY: the port is started with this rx queue set up.
                        let fd = unsafe { sys::lc_rxq_first_int(self.id, q) };
                        match super::pktsock::PacketSocket::check(fd, ifname) {
                            Ok(s) => (Some(s), None),
                            Err(e) => (None, Some(e)),
                        }
                    }
                    _ => (None, None),
                };
                let mut dq = DpdkQueue {
                    port: self.clone(),
                    port_id: self.id,
                    queue: q,
                    ts_off,
                    ts_flag,
                    clock: TscClock::new(self.eal.tsc_hz()),
                    burst_stamps: self.cfg.tsc_stamps == TscStamps::Burst,
                    burst: [std::ptr::null_mut(); BURST_MAX],
                    carries_port_drops: q == 0,
                    drops: NicDrops::default(),
                    registered: false,
                    multi_seg: 0,
                    xstat: xstat.map(|(n, id)| (n, id, 0)),
                    // The kernel's receive stamp of each frame in the ring,
                    // when the queue is net_af_packet's as linecap knows it.
                    // SAFETY: the port is started with this rx queue set up;
                    // the check only reads the PMD's queue struct.
                    kstamps: sock.is_some() && unsafe { sys::lc_afp_check(self.id, q) } == 0,
                    kts: [0; BURST_MAX],
                    last_ts: 0,
                    sock,
                    sock_note,
                    stop: StopMethod::Running,
                };
                if let Some((_, id, base)) = dq.xstat.as_mut() {
                    *base = self.xstat_by_id(*id).unwrap_or(0);
                }
                dq
            })
            .collect()
    }

    /// The names of the port's extended statistics, in id order.
    fn xstat_names(&self) -> Vec<String> {
        // SAFETY: a null buffer with size 0 asks for the count only.
        let n = unsafe { sys::rte_eth_xstats_get_names(self.id, std::ptr::null_mut(), 0) };
        if n <= 0 {
            return Vec::new();
        }
        let mut v: Vec<sys::rte_eth_xstat_name> = vec![Default::default(); n as usize];
        // SAFETY: v has room for n names; the port is valid while self lives.
        let got = unsafe { sys::rte_eth_xstats_get_names(self.id, v.as_mut_ptr(), n as u32) };
        if got <= 0 {
            return Vec::new();
        }
        v.truncate(got.min(n) as usize);
        v.iter()
            .map(|x| {
                // SAFETY: DPDK writes NUL-terminated names into the 64-byte array.
                unsafe { CStr::from_ptr(x.name.as_ptr()) }
                    .to_string_lossy()
                    .into_owned()
            })
            .collect()
    }

    /// One extended statistic by id.
    fn xstat_by_id(&self, id: u64) -> Option<u64> {
        let mut v = 0u64;
        // SAFETY: one id in, one value out; the port is valid while self lives.
        let rc = unsafe { sys::rte_eth_xstats_get_by_id(self.id, &id, &mut v, 1) };
        (rc == 1).then_some(v)
    }

    /// Send `frames` out of transmit queue `queue` (the net_ring self-test:
    /// on a `net_ringN` vdev a queue's transmit ring is its receive ring).
    /// Retries while the ring is full until `deadline`; returns how many
    /// were sent. Test tooling, not the capture path: one shim call per frame.
    pub fn inject<'a>(
        &self,
        queue: u16,
        frames: impl IntoIterator<Item = &'a [u8]>,
        deadline: std::time::Instant,
    ) -> Result<u64, String> {
        if self.inject_pool.is_null() || queue >= self.cfg.tx_queues {
            return Err(format!(
                "DPDK port {}: no transmit queue {queue} to inject through",
                self.cfg.name
            ));
        }
        let mut sent = 0u64;
        for f in frames {
            let m = loop {
                // SAFETY: the pool is live while self lives; f is a valid
                // slice of f.len() bytes, copied into the mbuf.
                let m = unsafe {
                    sys::lc_mbuf_from_bytes(self.inject_pool, f.as_ptr(), f.len() as u32)
                };
                if !m.is_null() {
                    break m;
                }
                if f.len() > 2048 {
                    return Err(format!(
                        "a frame of {} bytes does not fit one mbuf",
                        f.len()
                    ));
                }
                if std::time::Instant::now() > deadline {
                    return Ok(sent);
                }
                std::thread::sleep(std::time::Duration::from_micros(50));
            };
            let mut one = [m];
            loop {
                // SAFETY: the port is started with this tx queue; `one` holds
                // one valid mbuf whose ownership passes to the PMD when sent.
                let n = unsafe { sys::lc_tx_burst(self.id, queue, one.as_mut_ptr(), 1) };
                if n == 1 {
                    sent += 1;
                    break;
                }
                if std::time::Instant::now() > deadline {
                    // SAFETY: the mbuf was not sent, so it is still ours.
                    unsafe { sys::lc_pktmbuf_free(one[0]) };
                    return Ok(sent);
                }
                std::thread::yield_now();
            }
        }
        Ok(sent)
    }
}

impl Drop for Port {
    fn drop(&mut self) {
        // SAFETY: the last handle is going away: no queue reads the port any
        // more. Stop, then close (which releases the queues' mbufs back to
        // the pools), then free the pools nobody references.
        unsafe {
            sys::rte_eth_dev_stop(self.id);
            sys::rte_eth_dev_close(self.id);
            for p in self.pools.drain(..) {
                sys::rte_mempool_free(p);
            }
            if !self.inject_pool.is_null() {
                sys::rte_mempool_free(self.inject_pool);
            }
        }
        PORTS_OPEN.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The TSC, read inline (`rte_rdtsc` is `static inline` in DPDK: through
/// the shim it was a function call per frame).
#[inline(always)]
fn rdtsc() -> u64 {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `rdtsc` reads the time-stamp counter: no memory access, no
    // precondition (it is in the x86-64 baseline).
    unsafe {
        core::arch::x86_64::_rdtsc()
    }
    #[cfg(not(target_arch = "x86_64"))]
    // SAFETY: the shim's rte_rdtsc has no preconditions.
    unsafe {
        sys::lc_rdtsc()
    }
}

/// Wall-clock ns from the TSC: one `rdtsc` per frame, mapped by a
/// [`WallMap`](crate::clock::WallMap) that the stats tick re-anchors against
/// `CLOCK_REALTIME` with a bounded step (the TSC rate DPDK measured at start
/// drifts from wall time; NTP slews the wall clock).
#[derive(Debug, Clone)]
struct TscClock {
    map: crate::clock::WallMap,
}

impl TscClock {
    fn new(hz: u64) -> Self {
        let (tsc, wall) = Self::pair();
        TscClock {
            map: crate::clock::WallMap::new(tsc, wall, hz.max(1)),
        }
    }

    /// A (TSC, CLOCK_REALTIME) pair: of three tries of tsc-real-tsc, the
    /// tightest bracket's middle.
    fn pair() -> (u64, u64) {
        let mut best = (u64::MAX, 0, 0);
        for _ in 0..3 {
            let a = rdtsc();
            let r = crate::clock::Clock::now_ns(&crate::clock::RealtimeClock);
            let b = rdtsc();
            let w = b.wrapping_sub(a);
            if w < best.0 {
                best = (w, a + w / 2, r);
            }
        }
        (best.1, best.2)
    }

    #[inline]
    fn now_ns(&mut self) -> u64 {
        let t = rdtsc();
        self.map.map(t)
    }

    fn resync(&mut self) {
        let (tsc, wall) = Self::pair();
        self.map.reanchor(tsc, wall);
    }
}

/// One receive queue of a started port.
pub struct DpdkQueue {
    port: Arc<Port>,
    port_id: u16,
    queue: u16,
    /// Offset of the timestamp dynamic field, and the flag that says it is
    /// set (0: the PMD gives no timestamps linecap understands).
    ts_off: usize,
    ts_flag: u64,
    clock: TscClock,
    /// One TSC read per burst instead of per frame (see [`TscStamps`]).
    burst_stamps: bool,
    burst: [*mut sys::rte_mbuf; BURST_MAX],
    carries_port_drops: bool,
    drops: NicDrops,
    registered: bool,
    multi_seg: u64,
    /// The queue's own drop statistic: (name, xstat id, value at start).
    xstat: Option<(String, u64, u64)>,
    /// net_af_packet: stamp frames with the kernel's receive time from the
    /// ring's TPACKET_V2 header (read just before each rx_burst).
    kstamps: bool,
    kts: [u64; BURST_MAX],
    /// The last stamp given (kernel stamps: never backwards per queue).
    last_ts: u64,
    /// net_af_packet: the queue's kernel socket.
    sock: Option<super::pktsock::PacketSocket>,
    /// Why the socket is not read, when it should have been.
    sock_note: Option<String>,
    stop: StopMethod,
}

// SAFETY: the mbuf pointers in `burst` are only valid within one poll_burst
// call; between calls the queue owns no DPDK object but its Arc<Port>. One
// thread polls a queue at a time (DPDK's rule for rx queues).
unsafe impl Send for DpdkQueue {}

impl DpdkQueue {
    /// The port this queue belongs to.
    pub fn port(&self) -> &Arc<Port> {
        &self.port
    }

    /// The queue number on its port.
    pub fn queue(&self) -> u16 {
        self.queue
    }

    /// Frames that arrived in several segments (only the first was kept;
    /// not expected: scatter is not enabled).
    pub fn multi_seg(&self) -> u64 {
        self.multi_seg
    }

    /// Where this queue's drops are read from, for the start-up line.
    pub fn drop_sources(&self) -> String {
        let mut v = Vec::new();
        if self.carries_port_drops {
            v.push("port counters (imissed, ierrors, rx_nombuf)".to_string());
            if self.port.cfg.iface.is_some() {
                v.push("the kernel interface's rx_dropped/rx_missed_errors/rx_fifo_errors".into());
            }
        }
        if let Some((n, _, _)) = &self.xstat {
            v.push(format!("xstat {n}"));
        }
        if self.sock.is_some() {
            v.push("its packet socket's PACKET_STATISTICS".into());
        }
        if let Some(e) = &self.sock_note {
            v.push(format!("NOT its packet socket ({e})"));
        }
        let drops = if v.is_empty() {
            "none of its own (the port's are on queue 0)".into()
        } else {
            v.join(", ")
        };
        let clock = if self.kstamps {
            "the kernel's receive stamp in its packet socket's ring (manifest clock packet-socket)"
        } else if self.ts_flag != 0 {
            "the PMD's (manifest clock pmd)"
        } else if self.burst_stamps {
            "one TSC read per receive burst, shared by its frames (manifest clock tsc-burst)"
        } else {
            "one TSC read per frame (manifest clock tsc)"
        };
        format!("{drops}; timestamps: {clock}")
    }

    /// How the inflow was stopped at the end ([`StopMethod::Running`] before).
    pub fn stop_method(&self) -> &StopMethod {
        &self.stop
    }
}

impl RxQueue for DpdkQueue {
    #[inline]
    fn poll_burst<S: FrameSink>(&mut self, max: usize, sink: &mut S) -> RxStatus {
        if !self.registered {
            // Give the worker thread an lcore id so the mempool's per-lcore
            // cache serves it. A refusal (all lcore ids taken) still leaves
            // a working, cache-less thread.
            // SAFETY: called on the worker thread that polls this queue.
            unsafe { sys::rte_thread_register() };
            self.registered = true;
        }
        let mut want = max.min(BURST_MAX) as u16;
        let mut k = 0usize;
        if self.kstamps {
            // SAFETY: lc_afp_check accepted this queue's layout; only this
            // thread polls the queue, so the PMD's next slot cannot move
            // during the call; kts has room for `want` stamps.
            k = usize::from(unsafe {
                sys::lc_afp_peek_stamps(self.port_id, self.queue, self.kts.as_mut_ptr(), want)
            });
            // Ask for exactly the frames whose stamps were read (the ring
            // hands them out in order); frames that arrive meanwhile wait
            // for the next burst, so every frame gets its kernel stamp.
            if k == 0 {
                return RxStatus::Idle;
            }
            want = k as u16;
        }
        // SAFETY: the port is started with this rx queue, which only this
        // thread polls; `burst` has room for `want` pointers.
        let n = unsafe { sys::lc_rx_burst(self.port_id, self.queue, self.burst.as_mut_ptr(), want) }
            as usize;
        if n == 0 {
            return RxStatus::Idle;
        }
        // TscStamps::Burst: one read for the whole burst, taken as it arrived.
        let burst_ts = if self.burst_stamps && k == 0 {
            self.clock.now_ns()
        } else {
            0
        };
        for (i, &m) in self.burst[..n].iter().enumerate() {
            let b = m as *const u8;
            // SAFETY: `m` is an mbuf the PMD just handed us, valid until we
            // free it below, cache-line aligned; MbufHead mirrors the start
            // of this DPDK's struct rte_mbuf (offsets asserted by the shim
            // at build time and by Port::open at start).
            let (addr, data_off, data_len, pkt_len, nb_segs, ol_flags) = unsafe {
                let h = &*(m as *const MbufHead);
                (
                    h.buf_addr, h.data_off, h.data_len, h.pkt_len, h.nb_segs, h.ol_flags,
                )
            };
            let ts_ns = if i < k {
                // The kernel's CLOCK_REALTIME receive stamp: never backwards
                // on the queue (a clock step back holds it).
                let t = self.kts[i].max(self.last_ts);
                self.last_ts = t;
                t
            } else if ol_flags & self.ts_flag != 0 {
                // SAFETY: the flag says the PMD wrote the u64 dynamic field
                // at this offset (looked up from DPDK's registry).
                let us = unsafe { (b.add(self.ts_off) as *const u64).read_unaligned() };
                us.wrapping_mul(1000)
            } else if self.burst_stamps {
                burst_ts
            } else {
                self.clock.now_ns()
            };
            self.multi_seg += u64::from(nb_segs > 1);
            // SAFETY: the first segment's data is data_len bytes at
            // buf_addr + data_off, owned by the mbuf until it is freed below,
            // after the sink has returned.
            let data = unsafe {
                std::slice::from_raw_parts(addr.add(data_off as usize), data_len as usize)
            };
            sink.frame(Frame {
                data,
                wire_len: pkt_len,
                ts_ns,
            });
        }
        // SAFETY: the n mbufs are ours and no slice into them survives (the
        // sink copied what it kept).
        unsafe { sys::rte_pktmbuf_free_bulk(self.burst.as_mut_ptr(), n as u32) };
        RxStatus::Frames(n)
    }

    fn drops(&self) -> SourceDrops {
        SourceDrops {
            unsupported: 0,
            nic: self.drops.total(),
        }
    }

    fn nic_drops(&self) -> NicDrops {
        self.drops
    }

    fn clock_source(&self) -> &'static str {
        if self.kstamps {
            "packet-socket"
        } else if self.ts_flag != 0 {
            "pmd"
        } else if self.burst_stamps {
            TscStamps::Burst.clock_name()
        } else {
            TscStamps::Frame.clock_name()
        }
    }

    fn refresh(&mut self) {
        self.clock.resync();
        if self.carries_port_drops {
            let own = (
                self.drops.queue_dropped,
                self.drops.socket_dropped,
                self.drops.socket_packets,
            );
            self.drops = self.port.drops();
            (
                self.drops.queue_dropped,
                self.drops.socket_dropped,
                self.drops.socket_packets,
            ) = own;
        }
        if let Some((_, id, base)) = &self.xstat
            && let Some(v) = self.port.xstat_by_id(*id)
        {
            self.drops.queue_dropped = v.saturating_sub(*base);
        }
        if let Some(s) = self.sock.as_mut() {
            s.read();
            (self.drops.socket_packets, self.drops.socket_dropped) = s.counts();
        }
    }

    fn drain_on_stop(&self) -> bool {
        true
    }

    fn busy_poll(&self) -> bool {
        true
    }

    fn stop_inflow(&mut self) -> bool {
        // SAFETY: the port is started with this rx queue; only this thread
        // polls it, and it does not poll while the call runs.
        let rc = unsafe { sys::rte_eth_dev_rx_queue_stop(self.port_id, self.queue) };
        if rc == 0 {
            // The PMD released the queue's ring: nothing more to read.
            self.stop = StopMethod::QueueStop;
            return false;
        }
        match self.sock.as_mut().map(|s| s.block_all()) {
            Some(Ok(())) => {
                self.stop = StopMethod::SocketFilter(rc.saturating_abs());
                true
            }
            Some(Err(e)) => {
                self.stop = StopMethod::Failed(e);
                true
            }
            None => {
                self.stop = StopMethod::Refused(rc.saturating_abs());
                false
            }
        }
    }
}

impl Drop for DpdkQueue {
    fn drop(&mut self) {
        if self.registered {
            // SAFETY: this thread registered itself in poll_burst; queues are
            // dropped by the worker thread that polled them.
            unsafe { sys::rte_thread_unregister() };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::per_queue_drop_xstat;

    #[test]
    fn per_queue_drop_statistics_only_where_they_are_disjoint() {
        assert_eq!(
            per_queue_drop_xstat("net_ixgbe", 3).as_deref(),
            Some("rx_q3_errors")
        );
        // mlx5's rx_qN_errors overlap rx_nombuf; af_packet's are always 0.
        for d in [
            "net_mlx5",
            "net_i40e",
            "net_ice",
            "net_af_packet",
            "net_null",
        ] {
            assert_eq!(per_queue_drop_xstat(d, 0), None, "{d}");
        }
    }
}

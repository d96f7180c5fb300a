//! The burst interface every receive path implements (file, synthetic, and
//! later AF_XDP and DPDK), so one worker loop serves them all.

/// One received frame, borrowed from the source for the duration of a call.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    /// Captured bytes (starting at the Ethernet header).
    pub data: &'a [u8],
    /// Length of the frame on the wire, FCS excluded (pcap's `orig_len`).
    pub wire_len: u32,
    /// Receive time, ns since the Unix epoch.
    pub ts_ns: u64,
}

/// Receives the frames of one burst.
pub trait FrameSink {
    /// Called once per frame, in receive order.
    fn frame(&mut self, frame: Frame<'_>);
}

/// What one poll of a source produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxStatus {
    /// This many frames were handed to the sink (at least one).
    Frames(usize),
    /// Nothing now; try again later.
    Idle,
    /// The source has no more frames (end of file, or a fatal error the
    /// source has recorded in its counters).
    Ended,
}

/// Frames a source saw but did not deliver, by reason. Each is a drop at the
/// `source` stage of the accounting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SourceDrops {
    /// Records that hold no Ethernet frame (ERF metadata records, …).
    pub unsupported: u64,
    /// Drops the NIC or kernel reported (AF_XDP / DPDK counters).
    pub nic: u64,
}

impl SourceDrops {
    /// All source-stage drops.
    pub fn total(&self) -> u64 {
        self.unsupported + self.nic
    }
}

/// The NIC-stage drops of a kernel-bypass port, by counter (DPDK
/// `rte_eth_stats` and the kernel interface a vdev is bound to). Their sum is
/// [`SourceDrops::nic`]; `*_rx_packets` are cross-checks, not drops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NicDrops {
    /// Frames the NIC could not place in a receive ring (`imissed`).
    pub imissed: u64,
    /// Erroneous frames the NIC discarded (`ierrors`).
    pub ierrors: u64,
    /// Receive mbuf allocation failures (`rx_nombuf`).
    pub rx_nombuf: u64,
    /// The bound kernel interface's own receive drops (rx_dropped,
    /// rx_missed_errors, rx_fifo_errors).
    pub iface_dropped: u64,
    /// Frames the bound kernel interface received (cross-check).
    pub iface_rx_packets: u64,
    /// Frames the port says it delivered (`ipackets`; cross-check).
    pub port_rx_packets: u64,
    /// This queue's own drops from the PMD's per-queue extended statistics
    /// (on the PMDs where that counter is a drop disjoint from the port
    /// counters; see docs/architecture.md, "DPDK").
    pub queue_dropped: u64,
    /// net_af_packet: frames the kernel packet socket behind this queue
    /// dropped because its ring was full (`PACKET_STATISTICS` `tp_drops`).
    pub socket_dropped: u64,
    /// net_af_packet: frames that reached that socket, taken or dropped
    /// (`tp_packets`; cross-check, not a drop).
    pub socket_packets: u64,
}

impl NicDrops {
    /// All drops.
    pub fn total(&self) -> u64 {
        self.imissed
            + self.ierrors
            + self.rx_nombuf
            + self.iface_dropped
            + self.queue_dropped
            + self.socket_dropped
    }
}

/// A receive queue.
pub trait RxQueue {
    /// Hand up to `max` frames to `sink`.
    fn poll_burst<S: FrameSink>(&mut self, max: usize, sink: &mut S) -> RxStatus;

    /// Drops the source counted so far.
    fn drops(&self) -> SourceDrops;

    /// The NIC drops by counter (kernel-bypass ports; zero elsewhere).
    fn nic_drops(&self) -> NicDrops {
        NicDrops::default()
    }

    /// Re-read counters kept outside the process (kernel statistics). Called
    /// on the worker's stats tick and at the end, never per packet.
    fn refresh(&mut self) {}

    /// Whether frames already queued should be read after a stop (live
    /// queues: yes, the kernel has them and would drop them uncounted;
    /// files: no, stopping means stopping).
    fn drain_on_stop(&self) -> bool {
        false
    }

    /// Whether the worker should poll this queue without ever sleeping when
    /// it is idle (it spins, then yields). DPDK queues: a frame's TSC stamp is
    /// taken when `rx_burst` returns it, so a sleeping worker would add its
    /// sleep (50 µs plus timer slack) to the stamps; DPDK lcores busy-poll.
    fn busy_poll(&self) -> bool {
        false
    }

    /// Stop frames from entering this queue at the end of a capture, after
    /// the worker drained what was there (DPDK: `rte_eth_dev_rx_queue_stop`,
    /// or a drop-all filter on net_af_packet's socket). Returns whether the
    /// queue can still be read, so the worker drains it once more: frames
    /// that arrived between the first drain and the stop are then read and
    /// counted, not freed uncounted. Default: nothing to stop (the caller
    /// cut the inflow itself, as the AF_XDP pipeline does).
    fn stop_inflow(&mut self) -> bool {
        false
    }

    /// Where the frames' timestamps come from, as the manifest says it
    /// (`clock` field): e.g. `xdp-ktime`, `tsc`, `nic`, `file`.
    fn clock_source(&self) -> &'static str {
        "host-realtime"
    }

    /// Why the source ended early, if it did (a read error, a truncated file).
    fn error(&self) -> Option<String> {
        None
    }
}

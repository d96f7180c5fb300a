//! Per-queue counters of the capture path.
//!
//! The worker counts into a plain struct it owns (no atomics, no sharing per
//! packet) and publishes a copy into [`SharedCounters`] once per burst with
//! relaxed stores; readers (the summary, the metrics endpoint) take
//! snapshots. Each field has exactly one writer.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($(#[$doc:meta] $name:ident,)*) => {
        /// Counters of one queue's worker (and its source).
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct WorkerCounters {
            $(#[$doc] pub $name: u64,)*
        }

        /// The published copy of [`WorkerCounters`], readable from any thread.
        #[derive(Debug, Default)]
        pub struct SharedCounters {
            $($name: AtomicU64,)*
        }

        impl SharedCounters {
            /// Store a new copy (called by the single writer).
            pub fn publish(&self, c: &WorkerCounters) {
                $(self.$name.store(c.$name, Ordering::Relaxed);)*
            }
            /// Read the latest copy.
            pub fn snapshot(&self) -> WorkerCounters {
                WorkerCounters { $($name: self.$name.load(Ordering::Relaxed),)* }
            }
        }
    };
}

counters! {
    /// Frames the worker received from its source.
    rx_packets,
    /// Their wire bytes (FCS excluded).
    rx_bytes,
    /// Their captured bytes.
    rx_captured_bytes,
    /// Frames committed to the ring inside a batch.
    ring_packets,
    /// Batches committed to the ring.
    batches,
    /// Frames the capture filter rejected (stage `filter`).
    filter_packets,
    /// Frames sampling left out (stage `sample`).
    sample_packets,
    /// Frames dropped because the ring had no free slot (stage `ring_full`).
    ring_full_packets,
    /// Wire bytes of those frames.
    ring_full_bytes,
    /// Ring-full drops not (yet) carried in the `lctr` of a written record (at the end of a capture: the loss after its last record, which no record can carry).
    lctr_pending,
    /// Loss counted outside the worker (AF_XDP: the XDP program's `not_redirected`, the interface's drops) that was folded into the `lctr` of the following records.
    lctr_outside,
    /// Times the worker waited for the writer (backpressure mode; not a drop).
    backpressure_waits,
    /// Frames longer than an ERF record can hold, kept cut to fit (not a drop).
    frames_cut,
    /// Frames the source did not deliver because they hold no Ethernet frame (stage `source`).
    source_unsupported,
    /// Drops the NIC/kernel reported (stage `nic`).
    source_nic,
    /// Of `source_nic`: frames the NIC could not place in a ring (DPDK `imissed`).
    nic_imissed,
    /// Of `source_nic`: erroneous frames the NIC discarded (DPDK `ierrors`).
    nic_ierrors,
    /// Of `source_nic`: receive mbuf allocation failures (DPDK `rx_nombuf`).
    nic_rx_nombuf,
    /// Of `source_nic`: drops counted by the kernel interface a vdev is bound to.
    nic_iface_dropped,
    /// Frames the kernel interface a vdev is bound to received (cross-check, not a drop).
    nic_iface_rx_packets,
    /// Frames the port reported delivered (DPDK `ipackets`; cross-check, not a drop).
    nic_port_rx_packets,
    /// Of `source_nic`: this queue's own drops from the PMD's per-queue extended statistics (DPDK).
    nic_queue_dropped,
    /// Of `source_nic`: drops of the kernel packet socket behind a net_af_packet queue (`tp_drops`).
    nic_socket_dropped,
    /// Frames that reached that socket, taken or dropped (`tp_packets`; cross-check, not a drop).
    nic_socket_packets,
    /// Frames that parsed as IPv4/IPv6 (not a drop; the `parsed_*` counters stay 0 when nothing needs the parse).
    parsed_ip,
    /// Frames without an IP header (not a drop).
    parsed_non_ip,
    /// Frames whose headers were cut by the capture length (not a drop).
    parsed_truncated,
    /// Frames with inconsistent headers (not a drop).
    parsed_malformed,
}

impl WorkerCounters {
    /// Frames the source saw: delivered plus dropped at the source.
    pub fn source_seen(&self) -> u64 {
        self.rx_packets + self.source_unsupported + self.source_nic
    }
}

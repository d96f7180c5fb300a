//! Loss before the XDP program: which of an interface's own receive
//! counters count frames XDP never saw, per driver, so each drop is counted
//! once, at the stage where it happened.
//!
//! The kernel's `rx_dropped` means different things per driver:
//!
//! - **veth, native XDP**: `veth_xdp_rcv_skb` increments the receive queue's
//!   `rx_drops` (reported as `rx_dropped`) when `xdp_do_redirect` fails, i.e.
//!   for every frame the AF_XDP socket could not take, which the socket
//!   already counts in `XDP_STATISTICS` (`rx_dropped`, `rx_ring_full`).
//!   Adding both counted such a frame twice. So on veth in native mode the
//!   socket's drops are taken out of `rx_dropped`; what remains (frames veth
//!   could not turn into an XDP buffer, `XDP_DROP`/`XDP_ABORTED`) is counted
//!   at this stage. veth has no hardware: `rx_missed_errors` and
//!   `rx_fifo_errors` are 0. Frames veth's peer could not queue at all
//!   (its ring full) are the peer's `tx_dropped`: never seen on this side.
//! - **veth, generic XDP**: generic XDP runs after the backlog queue, so
//!   `rx_dropped` counts backlog drops, before XDP; a failed redirect in
//!   generic mode is freed without touching `rx_dropped`. Counted as is.
//! - **every other driver** (physical NICs: ixgbe, i40e, ice, mlx5, ...):
//!   `rx_missed_errors` (no receive descriptor free: the ring overflowed)
//!   and `rx_fifo_errors` (the NIC's FIFO overflowed) are the hardware's
//!   drops before a frame reaches a ring, hence before XDP. `rx_dropped` is
//!   *not* used: drivers put software drops into it, including drops of
//!   frames XDP already saw and frames the stack dropped after `XDP_PASS`,
//!   which the XDP stage counts already.
//!
//! The interface's counters are per interface, not per queue: the report
//! puts them on the interface's first queue.

use std::path::Path;

/// An interface's receive drop counters (sysfs `statistics/`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IfaceCounters {
    /// `rx_dropped`.
    pub rx_dropped: u64,
    /// `rx_missed_errors`.
    pub rx_missed_errors: u64,
    /// `rx_fifo_errors`.
    pub rx_fifo_errors: u64,
}

impl IfaceCounters {
    /// Read them from `/sys/class/net/IFNAME/statistics` (0 when absent).
    pub fn read(ifname: &str) -> Self {
        let dir = Path::new("/sys/class/net").join(ifname).join("statistics");
        let get = |f: &str| {
            std::fs::read_to_string(dir.join(f))
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        IfaceCounters {
            rx_dropped: get("rx_dropped"),
            rx_missed_errors: get("rx_missed_errors"),
            rx_fifo_errors: get("rx_fifo_errors"),
        }
    }

    fn since(&self, start: &IfaceCounters) -> IfaceCounters {
        IfaceCounters {
            rx_dropped: self.rx_dropped.saturating_sub(start.rx_dropped),
            rx_missed_errors: self.rx_missed_errors.saturating_sub(start.rx_missed_errors),
            rx_fifo_errors: self.rx_fifo_errors.saturating_sub(start.rx_fifo_errors),
        }
    }
}

/// Frames the interface lost that no later stage counted, between `start`
/// and `end`, for an interface with driver `driver` (`ethtool -i`) in
/// native (`native`) or generic mode; `xsk_drops` is what the interface's
/// AF_XDP sockets counted as dropped (XDP_STATISTICS) over the same time.
pub fn iface_drops(
    driver: &str,
    native: bool,
    start: &IfaceCounters,
    end: &IfaceCounters,
    xsk_drops: u64,
) -> u64 {
    let d = end.since(start);
    let hw = d.rx_missed_errors + d.rx_fifo_errors;
    match (driver, native) {
        ("veth", true) => hw + d.rx_dropped.saturating_sub(xsk_drops),
        ("veth", false) => hw + d.rx_dropped,
        _ => hw,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(rx_dropped: u64, missed: u64, fifo: u64) -> IfaceCounters {
        IfaceCounters {
            rx_dropped,
            rx_missed_errors: missed,
            rx_fifo_errors: fifo,
        }
    }

    #[test]
    fn veth_native_does_not_count_socket_drops_twice() {
        // 500 frames the XSK ring could not take: in the socket's stats and
        // in veth's rx_dropped. Counted here: none of them.
        assert_eq!(
            iface_drops("veth", true, &c(7, 0, 0), &c(507, 0, 0), 500),
            0
        );
        // Three more veth drops the socket never saw: those count.
        assert_eq!(
            iface_drops("veth", true, &c(0, 0, 0), &c(503, 0, 0), 500),
            3
        );
    }

    #[test]
    fn veth_generic_counts_backlog_drops() {
        assert_eq!(
            iface_drops("veth", false, &c(0, 0, 0), &c(40, 0, 0), 500),
            40
        );
    }

    #[test]
    fn nics_count_hardware_drops_only() {
        assert_eq!(
            iface_drops("ixgbe", true, &c(0, 0, 0), &c(900, 12, 3), 0),
            15
        );
        assert_eq!(
            iface_drops("mlx5_core", false, &c(5, 5, 5), &c(5, 9, 5), 0),
            4
        );
    }
}

//! The kernel packet socket behind one net_af_packet queue.
//!
//! net_af_packet (DPDK 22.11) receives each queue pair through its own
//! `AF_PACKET` socket with a `PACKET_RX_RING`, bound to the `iface=` at EAL
//! probe time. Two facts about it matter to the accounting, and DPDK reports
//! neither:
//!
//! - a frame the kernel cannot place in the socket's ring (full) is dropped
//!   and counted only in the socket's `PACKET_STATISTICS` (`tp_drops`): not
//!   in `rte_eth_stats` (the PMD has no `imissed`) and not in the
//!   interface's `rx_dropped` (the frame was delivered to the tap);
//! - the PMD has no `rx_queue_stop` (`rte_eth_dev_rx_queue_stop` returns
//!   `-ENOTSUP`), and `rte_eth_dev_stop` closes the socket's descriptor and
//!   swaps the burst function for a dummy, so frames still in the ring can
//!   no longer be read, and they are freed uncounted at `rte_eth_dev_close`.
//!
//! So linecap finds the queue's socket (the first field of the PMD's queue
//! struct, as `rte_eth_rx_burst` sees it; checked to be an `AF_PACKET` raw
//! socket bound to the interface before it is used), reads its statistics
//! on the stats tick (they reset on each read and are summed here), and at
//! the end of a capture attaches a classic BPF filter that accepts nothing:
//! frames the filter rejects are neither queued nor counted by the socket,
//! so from then on no frame reaches the queue, the worker drains what the
//! ring holds, and the last statistics read is final.

use std::os::fd::RawFd;

/// `struct tpacket_stats` (TPACKET_V1/V2).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct TpacketStats {
    tp_packets: u32,
    tp_drops: u32,
}

/// `SOL_PACKET` / `PACKET_STATISTICS` (linux/if_packet.h).
const SOL_PACKET: libc::c_int = 263;
const PACKET_STATISTICS: libc::c_int = 6;

/// One queue's socket and its counters since linecap first read them.
#[derive(Debug)]
pub(super) struct PacketSocket {
    fd: RawFd,
    /// Frames that reached the socket (queued or dropped).
    packets: u64,
    /// Frames the socket dropped (ring full).
    drops: u64,
    blocked: bool,
}

impl PacketSocket {
    /// The socket at `fd` if it is an `AF_PACKET` raw socket bound to
    /// `ifname`; its counters are read once and dropped (they start at the
    /// queue's start, like the port's baseline).
    pub(super) fn check(fd: RawFd, ifname: &str) -> Result<PacketSocket, String> {
        if fd < 0 {
            return Err("the PMD's queue has no socket".into());
        }
        let domain = sockopt_int(fd, libc::SOL_SOCKET, libc::SO_DOMAIN)
            .map_err(|e| format!("descriptor {fd}: SO_DOMAIN: {e}"))?;
        let kind = sockopt_int(fd, libc::SOL_SOCKET, libc::SO_TYPE)
            .map_err(|e| format!("descriptor {fd}: SO_TYPE: {e}"))?;
        if domain != libc::AF_PACKET || kind != libc::SOCK_RAW {
            return Err(format!(
                "descriptor {fd} is not an AF_PACKET raw socket (domain {domain}, type {kind}): \
                 this PMD's queue layout is not the one linecap knows (DPDK 22.11)"
            ));
        }
        let Ok(cname) = std::ffi::CString::new(ifname) else {
            return Err(format!("interface {ifname:?}: NUL in the name"));
        };
        // SAFETY: cname is a valid NUL-terminated string.
        let want = unsafe { libc::if_nametoindex(cname.as_ptr()) } as i32;
        // SAFETY: a zeroed sockaddr_ll is valid; len is its size; fd is an
        // open socket (checked above) that getsockname only reads.
        let bound = unsafe {
            let mut sa: libc::sockaddr_ll = std::mem::zeroed();
            let mut len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            if libc::getsockname(fd, (&mut sa as *mut libc::sockaddr_ll).cast(), &mut len) != 0 {
                return Err(format!(
                    "descriptor {fd}: getsockname: {}",
                    std::io::Error::last_os_error()
                ));
            }
            sa.sll_ifindex
        };
        if want == 0 || bound != want {
            return Err(format!(
                "descriptor {fd} is bound to interface index {bound}, not to {ifname} ({want})"
            ));
        }
        let mut s = PacketSocket {
            fd,
            packets: 0,
            drops: 0,
            blocked: false,
        };
        s.read();
        s.packets = 0;
        s.drops = 0;
        Ok(s)
    }

    /// Add what the kernel counted since the last read (the read resets it).
    pub(super) fn read(&mut self) {
        let mut st = TpacketStats::default();
        let mut len = std::mem::size_of::<TpacketStats>() as libc::socklen_t;
        // SAFETY: fd is the queue's open packet socket (the port, which owns
        // it, outlives the queue); st/len describe a valid out buffer of the
        // size the kernel writes for TPACKET_V2.
        let rc = unsafe {
            libc::getsockopt(
                self.fd,
                SOL_PACKET,
                PACKET_STATISTICS,
                (&mut st as *mut TpacketStats).cast(),
                &mut len,
            )
        };
        if rc == 0 {
            // tp_packets includes tp_drops (the kernel adds them in).
            self.packets += u64::from(st.tp_packets);
            self.drops += u64::from(st.tp_drops);
        }
    }

    /// Frames that reached the socket, and frames it dropped.
    pub(super) fn counts(&self) -> (u64, u64) {
        (self.packets, self.drops)
    }

    /// Attach a filter that accepts nothing: from now on no frame enters
    /// the socket (none is queued, none is counted as a drop).
    pub(super) fn block_all(&mut self) -> Result<(), String> {
        if self.blocked {
            return Ok(());
        }
        // BPF_RET | BPF_K, k = 0: keep 0 bytes of every frame.
        let mut code = [libc::sock_filter {
            code: 0x06,
            jt: 0,
            jf: 0,
            k: 0,
        }];
        let prog = libc::sock_fprog {
            len: 1,
            filter: code.as_mut_ptr(),
        };
        // SAFETY: fd is the queue's open packet socket; prog points to one
        // valid instruction that outlives the call (the kernel copies it).
        let rc = unsafe {
            libc::setsockopt(
                self.fd,
                libc::SOL_SOCKET,
                libc::SO_ATTACH_FILTER,
                (&prog as *const libc::sock_fprog).cast(),
                std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(format!(
                "SO_ATTACH_FILTER: {}",
                std::io::Error::last_os_error()
            ));
        }
        self.blocked = true;
        Ok(())
    }
}

fn sockopt_int(fd: RawFd, level: libc::c_int, opt: libc::c_int) -> Result<i32, std::io::Error> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: v/len describe a valid int-sized out buffer; getsockopt on a
    // descriptor that is not a socket fails with ENOTSOCK, nothing else.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            level,
            opt,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(v)
    } else {
        Err(std::io::Error::last_os_error())
    }
}

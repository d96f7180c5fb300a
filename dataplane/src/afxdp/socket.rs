//! One AF_XDP socket on one queue, with its own UMEM, as an [`RxQueue`].
//!
//! Set-up follows the kernel's sequence: register the UMEM, size the fill,
//! completion and RX rings (the completion ring must be sized even for
//! receive-only sockets), map the rings, fill the fill ring, bind, with
//! zero-copy tried first where asked and copy mode as the fallback.
//!
//! Per burst: read up to `max` RX descriptors, hand each frame to the sink
//! straight from UMEM (no copy), give the descriptors back, and return the
//! frames to the fill ring; one wake-up syscall only when the kernel sets
//! `XDP_RING_NEED_WAKEUP`. One wall-clock read per burst stamps its frames.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use memmap2::{MmapMut, MmapOptions};

use super::ring::{ConsRing, ProdRing, RingPtrs};
use super::sys::{self, MmapOffsets, UmemReg, XdpDesc, XdpStatistics};
use crate::clock::{Clock, RealtimeClock};
use crate::ring::HugePages;
use crate::source::{Frame, FrameSink, RxQueue, RxStatus, SourceDrops};

/// Whether to ask for zero-copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ZeroCopy {
    /// Try zero-copy, fall back to copy mode.
    #[default]
    Auto,
    /// Zero-copy or fail.
    Require,
    /// Copy mode only.
    Off,
}

/// One socket's sizes, fixed at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XskConfig {
    /// Interface name (in the current network namespace).
    pub ifname: String,
    /// Receive queue.
    pub queue: u32,
    /// Entries of the RX and fill rings (power of two).
    pub ring_entries: u32,
    /// UMEM frames (power of two, at least `ring_entries`).
    pub frames: u32,
    /// Bytes per UMEM frame: 2048 or 4096.
    pub frame_bytes: u32,
    /// Zero-copy policy.
    pub zero_copy: ZeroCopy,
    /// UMEM memory source.
    pub hugepages: HugePages,
}

impl XskConfig {
    /// Defaults for `ifname`/`queue`: 16 Ki-entry rings, 32 Ki frames of 2 KiB.
    pub fn new(ifname: &str, queue: u32) -> Self {
        XskConfig {
            ifname: ifname.into(),
            queue,
            ring_entries: 16 * 1024,
            frames: 32 * 1024,
            frame_bytes: 2048,
            zero_copy: ZeroCopy::Auto,
            hugepages: HugePages::Try,
        }
    }
}

/// How the socket ended up bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BindInfo {
    /// Zero-copy (driver writes into UMEM) or copy mode.
    pub zero_copy: bool,
    /// Why zero-copy was not used, when it was asked for and refused.
    pub zero_copy_refused: Option<i32>,
    /// UMEM on hugepages.
    pub hugepages: bool,
}

/// An AF_XDP socket bound to one queue.
pub struct XskSocket {
    // Field order is drop order: rings are unmapped before the socket closes
    // and before the UMEM they point into is unmapped.
    fill: ProdRing,
    rx: ConsRing,
    _fill_map: sys::RingMap,
    _rx_map: sys::RingMap,
    fd: OwnedFd,
    umem: MmapMut,
    umem_base: *const u8,
    umem_len: usize,
    frame_mask: u64,
    /// Frames not in the fill ring nor in user hands (preallocated).
    spare: Vec<u64>,
    /// Scratch for the addresses one burst returns.
    returned: Vec<u64>,
    clock: RealtimeClock,
    stats: XdpStatistics,
    invalid_descs: u64,
    info: BindInfo,
}

// SAFETY: the raw pointers (ring words and UMEM) point into mappings owned by
// this struct and move with it; the kernel is the only other party, and it
// synchronises through the ring indices. The socket is used by one thread at
// a time (the worker that owns it).
unsafe impl Send for XskSocket {}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

impl XskSocket {
    /// Create, map and bind the socket. Errors say which step failed.
    pub fn open(cfg: &XskConfig) -> io::Result<Self> {
        if !cfg.ring_entries.is_power_of_two() || cfg.ring_entries < 64 {
            return Err(invalid(format!(
                "AF_XDP ring entries must be a power of two >= 64, got {}",
                cfg.ring_entries
            )));
        }
        if !cfg.frames.is_power_of_two() || cfg.frames < cfg.ring_entries {
            return Err(invalid(format!(
                "AF_XDP UMEM frames must be a power of two >= the ring entries, got {}",
                cfg.frames
            )));
        }
        if cfg.frame_bytes != 2048 && cfg.frame_bytes != 4096 {
            return Err(invalid(format!(
                "AF_XDP frame bytes must be 2048 or 4096, got {}",
                cfg.frame_bytes
            )));
        }
        let ifindex = sys::ifindex(&cfg.ifname)?;
        let ctx = |what: &str| {
            let what = what.to_string();
            let q = cfg.queue;
            let ifn = cfg.ifname.clone();
            move |e: io::Error| {
                io::Error::new(e.kind(), format!("AF_XDP {ifn} queue {q}: {what}: {e}"))
            }
        };
        let umem_len = cfg.frames as usize * cfg.frame_bytes as usize;
        let (mut umem, hugepages) = map_umem(umem_len, cfg.hugepages).map_err(ctx("UMEM"))?;
        let fd =
            sys::xdp_socket().map_err(ctx("socket(AF_XDP) (kernel without AF_XDP? not root?)"))?;
        let raw = fd.as_raw_fd();
        let reg = UmemReg {
            addr: umem.as_mut_ptr() as u64,
            len: umem_len as u64,
            chunk_size: cfg.frame_bytes,
            headroom: 0,
            flags: 0,
            tx_metadata_len: 0,
        };
        sys::set_opt(raw, sys::XDP_UMEM_REG, &reg).map_err(ctx("XDP_UMEM_REG (memlock limit?)"))?;
        sys::set_opt(raw, sys::XDP_UMEM_FILL_RING, &cfg.ring_entries).map_err(ctx("fill ring"))?;
        sys::set_opt(raw, sys::XDP_UMEM_COMPLETION_RING, &cfg.ring_entries)
            .map_err(ctx("completion ring"))?;
        sys::set_opt(raw, sys::XDP_RX_RING, &cfg.ring_entries).map_err(ctx("RX ring"))?;
        let off: MmapOffsets =
            sys::get_opt(raw, sys::XDP_MMAP_OFFSETS).map_err(ctx("XDP_MMAP_OFFSETS"))?;
        let n = cfg.ring_entries as usize;
        let fill_map = sys::RingMap::new(
            &fd,
            off.fr.desc as usize + n * 8,
            sys::XDP_UMEM_PGOFF_FILL_RING,
        )
        .map_err(ctx("mapping the fill ring"))?;
        let rx_map = sys::RingMap::new(
            &fd,
            off.rx.desc as usize + n * std::mem::size_of::<XdpDesc>(),
            sys::XDP_PGOFF_RX_RING,
        )
        .map_err(ctx("mapping the RX ring"))?;
        // SAFETY: the mappings were made with the kernel's offsets and sizes
        // for `ring_entries` entries, and are owned by the socket we return,
        // which outlives the ring handles (field order).
        let (fill_p, rx_p) = unsafe {
            (
                RingPtrs::at(fill_map.ptr, &off.fr, cfg.ring_entries),
                RingPtrs::at(rx_map.ptr, &off.rx, cfg.ring_entries),
            )
        };
        let mut fill = ProdRing::new(fill_p);
        let fb = cfg.frame_bytes as u64;
        let all: Vec<u64> = (0..cfg.frames as u64).map(|i| i * fb).collect();
        let first = n.min(all.len());
        let pushed = fill.push(&all[..first]);
        let mut spare = Vec::with_capacity(cfg.frames as usize);
        spare.extend_from_slice(&all[pushed..]);

        let (info_zc, refused) = bind_with_policy(raw, ifindex, cfg)?;
        let umem_base = umem.as_ptr();
        Ok(XskSocket {
            fill,
            rx: ConsRing::new(rx_p),
            _fill_map: fill_map,
            _rx_map: rx_map,
            fd,
            umem,
            umem_base,
            umem_len,
            frame_mask: !(fb - 1),
            spare,
            returned: Vec::with_capacity(cfg.ring_entries as usize),
            clock: RealtimeClock,
            stats: XdpStatistics::default(),
            invalid_descs: 0,
            info: BindInfo {
                zero_copy: info_zc,
                zero_copy_refused: refused,
                hugepages,
            },
        })
    }

    /// The socket's descriptor (for the XSKMAP).
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// How it was bound.
    pub fn bind_info(&self) -> BindInfo {
        self.info
    }

    /// The kernel's statistics for this socket, as last refreshed.
    pub fn statistics(&self) -> XdpStatistics {
        self.stats
    }

    /// Descriptors the kernel gave that pointed outside UMEM (never expected).
    pub fn invalid_descs(&self) -> u64 {
        self.invalid_descs
    }

    fn umem_len(&self) -> usize {
        // Keep the mapping alive and its length at hand.
        self.umem.len().min(self.umem_len)
    }
}

fn map_umem(len: usize, policy: HugePages) -> io::Result<(MmapMut, bool)> {
    if policy != HugePages::Never {
        let huge = len.next_multiple_of(2 << 20);
        match MmapOptions::new()
            .len(huge)
            .huge(Some(21))
            .populate()
            .map_anon()
        {
            Ok(m) => return Ok((m, true)),
            Err(e) if policy == HugePages::Require => return Err(e),
            Err(_) => {}
        }
    }
    Ok((MmapOptions::new().len(len).populate().map_anon()?, false))
}

/// Bind with zero-copy first when asked; returns (zero_copy, refusal errno).
fn bind_with_policy(fd: RawFd, ifindex: u32, cfg: &XskConfig) -> io::Result<(bool, Option<i32>)> {
    let ctx = |e: io::Error| {
        io::Error::new(
            e.kind(),
            format!("AF_XDP {} queue {}: bind: {e}", cfg.ifname, cfg.queue),
        )
    };
    let mut refused = None;
    if cfg.zero_copy != ZeroCopy::Off {
        match sys::bind(
            fd,
            ifindex,
            cfg.queue,
            sys::XDP_ZEROCOPY | sys::XDP_USE_NEED_WAKEUP,
        ) {
            Ok(()) => return Ok((true, None)),
            Err(e) if cfg.zero_copy == ZeroCopy::Require => return Err(ctx(e)),
            Err(e) => refused = e.raw_os_error(),
        }
    }
    sys::bind(
        fd,
        ifindex,
        cfg.queue,
        sys::XDP_COPY | sys::XDP_USE_NEED_WAKEUP,
    )
    .map_err(ctx)?;
    let opts: u32 = sys::get_opt(fd, sys::XDP_OPTIONS).unwrap_or(0);
    Ok((opts & sys::XDP_OPTIONS_ZEROCOPY != 0, refused))
}

impl RxQueue for XskSocket {
    #[inline]
    fn poll_burst<S: FrameSink>(&mut self, max: usize, sink: &mut S) -> RxStatus {
        let n = self.rx.available(max.min(u32::MAX as usize) as u32);
        if n == 0 {
            if self.fill.needs_wakeup() {
                sys::wakeup_rx(self.fd.as_raw_fd());
            }
            return RxStatus::Idle;
        }
        let ts_ns = self.clock.now_ns();
        let umem_len = self.umem_len();
        self.returned.clear();
        for i in 0..n {
            let d = self.rx.desc(i);
            let start = d.addr as usize;
            let len = d.len as usize;
            if start.checked_add(len).is_none_or(|end| end > umem_len) {
                self.invalid_descs += 1;
            } else {
                // SAFETY: [start, start+len) lies inside UMEM (checked), and
                // the kernel handed this frame to us through the RX ring; it
                // will not write it again until we return it to the fill
                // ring below, after the sink is done with the slice.
                let data = unsafe { std::slice::from_raw_parts(self.umem_base.add(start), len) };
                sink.frame(Frame {
                    data,
                    wire_len: d.len,
                    ts_ns,
                });
            }
            self.returned.push(d.addr & self.frame_mask);
        }
        self.rx.release(n);
        let pushed = self.fill.push(&self.returned);
        if pushed < self.returned.len() {
            self.spare.extend_from_slice(&self.returned[pushed..]);
        }
        if !self.spare.is_empty() {
            let k = self.fill.push(&self.spare);
            let keep = self.spare.len() - k;
            self.spare.copy_within(k.., 0);
            self.spare.truncate(keep);
        }
        if self.fill.needs_wakeup() {
            sys::wakeup_rx(self.fd.as_raw_fd());
        }
        RxStatus::Frames(n as usize)
    }

    fn drops(&self) -> SourceDrops {
        SourceDrops {
            unsupported: 0,
            nic: self.stats.rx_dropped + self.stats.rx_ring_full + self.invalid_descs,
        }
    }

    fn drain_on_stop(&self) -> bool {
        true
    }

    fn refresh(&mut self) {
        if let Ok(s) = sys::get_opt::<XdpStatistics>(self.fd.as_raw_fd(), sys::XDP_STATISTICS) {
            self.stats = s;
        }
    }
}

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
//! `XDP_RING_NEED_WAKEUP`.
//!
//! Timestamps: the XDP program stamps every frame at the hook with
//! `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) in 16 bytes of XDP metadata right
//! before the frame ([`XdpMeta`]); the kernel copies the metadata into UMEM
//! with the frame. The socket maps each stamp to wall-clock ns with a
//! [`WallMap`] re-anchored on the worker's stats tick (bounded steps, never
//! backwards). The device-bound program also writes the driver's RX
//! hardware stamp in 8 more bytes in front ([`META_HW_BYTES`]) and says so
//! in the clock field ([`CLOCK_HW`]); such a frame's time is the hardware
//! stamp aligned to wall time by [`HwAlign`] (from the frame's own host
//! stamp) and held never-backwards by the same `WallMap`. A frame without valid metadata (a driver that gives no room)
//! is stamped with one monotonic read per burst through the same map, and
//! counted in [`XskSocket::ts_fallback`]. The metadata's magic is cleared
//! after reading, so a stale stamp left in a reused UMEM frame is never
//! taken for a fresh one.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use memmap2::{MmapMut, MmapOptions};

use super::ring::{ConsRing, ProdRing, RingPtrs};
use super::sys::{self, MmapOffsets, UmemReg, XdpDesc, XdpStatistics};
use crate::clock::{HwAlign, WallMap};
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
    umem_base: *mut u8,
    umem_len: usize,
    frame_mask: u64,
    /// Frames not in the fill ring nor in user hands (preallocated).
    spare: Vec<u64>,
    /// Scratch for the addresses one burst returns.
    returned: Vec<u64>,
    wall: WallMap,
    hw_align: HwAlign,
    ts_fallback: u64,
    ts_hw: u64,
    clock_name: &'static str,
    /// No frame carries a stamp (the program without metadata): read the
    /// clock per frame, not once per burst, so each frame has its own.
    stamp_each: bool,
    stats: XdpStatistics,
    invalid_descs: u64,
    info: BindInfo,
}

// SAFETY: the raw pointers (ring words and UMEM) point into mappings owned by
// this struct and move with it; the kernel is the only other party, and it
// synchronises through the ring indices. The socket is used by one thread at
// a time (the worker that owns it).
unsafe impl Send for XskSocket {}

/// The XDP metadata linecap's program writes before each frame
/// (`struct linecap_meta` in `ebpf/linecap_xdp.c`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct XdpMeta {
    /// `bpf_ktime_get_ns()` at the XDP hook (CLOCK_MONOTONIC ns).
    pub rx_ns: u64,
    /// [`CLOCK_KTIME`], or [`CLOCK_HW`]: the 8 bytes before this struct
    /// hold the NIC's RX hardware stamp too.
    pub clock: u32,
    /// [`META_MAGIC`] when the program wrote it.
    pub magic: u32,
}

/// Bytes of [`XdpMeta`].
pub const META_BYTES: usize = std::mem::size_of::<XdpMeta>();
/// `LINECAP_META_MAGIC` ("LCTS").
pub const META_MAGIC: u32 = 0x4c43_5453;
/// `LINECAP_CLOCK_KTIME`: `rx_ns` alone.
pub const CLOCK_KTIME: u32 = 1;
/// `LINECAP_CLOCK_HW`: a hardware stamp (`u64`, the NIC's PHC in ns) right
/// before the [`XdpMeta`].
pub const CLOCK_HW: u32 = 2;
/// Bytes of metadata the device-bound program writes (`struct linecap_meta_hw`).
pub const META_HW_BYTES: usize = META_BYTES + 8;
/// What the manifest says about AF_XDP timestamps with the plain program.
pub const CLOCK_NAME: &str = "xdp-ktime";
/// ... and with the device-bound program: per frame the NIC's hardware
/// stamp where the driver gave one, else `bpf_ktime_get_ns()` (the
/// report's `xdp.hw_stamped` / `hw_missing` count which, per queue).
pub const CLOCK_NAME_HW: &str = "xdp-hw-or-ktime";
/// ... and with the program without metadata (a kernel that refuses
/// `bpf_xdp_adjust_meta`, `loader.rs`): one `CLOCK_MONOTONIC` read in user
/// space per frame as the socket takes it from the RX ring, mapped to wall
/// time, every frame counted in `ts_fallback`.
pub const CLOCK_NAME_RECEIVE: &str = "afxdp-receive";

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
        let umem_base = umem.as_mut_ptr();
        let (mono, real) = sys::mono_real_pair();
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
            wall: WallMap::new(mono, real, 1_000_000_000),
            hw_align: HwAlign::default(),
            ts_fallback: 0,
            ts_hw: 0,
            clock_name: CLOCK_NAME,
            stamp_each: false,
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

    /// Frames that carried no valid XDP metadata stamp and were stamped
    /// per burst instead (0 with linecap's program on drivers that support
    /// XDP metadata, veth included).
    pub fn ts_fallback(&self) -> u64 {
        self.ts_fallback
    }

    /// Frames stamped with the NIC's RX hardware timestamp.
    pub fn ts_hw(&self) -> u64 {
        self.ts_hw
    }

    /// Tell the socket that the device-bound program feeds it (the
    /// manifest's `clock` is then [`CLOCK_NAME_HW`]).
    pub fn set_device_bound(&mut self, yes: bool) {
        self.clock_name = if yes { CLOCK_NAME_HW } else { CLOCK_NAME };
    }

    /// Tell the socket that the program without metadata feeds it (the
    /// manifest's `clock` is then [`CLOCK_NAME_RECEIVE`]).
    pub fn set_no_metadata(&mut self) {
        self.clock_name = CLOCK_NAME_RECEIVE;
        self.stamp_each = true;
    }

    /// Frames whose wall time was held at the previous frame's so that the
    /// queue's timestamps never go backwards.
    pub fn ts_clamped(&self) -> u64 {
        self.wall.clamped()
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
        let umem_len = self.umem_len();
        let chunk_mask = !self.frame_mask as usize;
        // Lazily read, once per burst, for frames without a stamp.
        let mut burst_mono = 0u64;
        self.returned.clear();
        for i in 0..n {
            let d = self.rx.desc(i);
            let start = d.addr as usize;
            let len = d.len as usize;
            if start.checked_add(len).is_none_or(|end| end > umem_len) {
                self.invalid_descs += 1;
            } else {
                let in_chunk = start & chunk_mask;
                // (host stamp, hardware stamp)
                let stamp = if in_chunk >= META_BYTES {
                    // SAFETY: [start-16, start) lies inside the same UMEM
                    // chunk as the frame (its offset in the chunk is at least
                    // 16), which the kernel handed us with the descriptor and
                    // which no reference covers (the frame slice starts at
                    // `start`). Any bit pattern is a valid XdpMeta; reads and
                    // the write are unaligned-safe.
                    unsafe {
                        let p = self.umem_base.add(start - META_BYTES).cast::<XdpMeta>();
                        let m = p.read_unaligned();
                        if m.magic == META_MAGIC {
                            // Forget it: a later frame in this chunk without
                            // a stamp must not inherit this one.
                            std::ptr::addr_of_mut!((*p).magic).write_unaligned(0);
                            let hw = if m.clock == CLOCK_HW && in_chunk >= META_HW_BYTES {
                                // SAFETY: [start-24, start-16) is in the same
                                // chunk (offset checked just above), written
                                // by the program with this clock id.
                                self.umem_base
                                    .add(start - META_HW_BYTES)
                                    .cast::<u64>()
                                    .read_unaligned()
                            } else {
                                0
                            };
                            Some((m.rx_ns, hw))
                        } else {
                            None
                        }
                    }
                } else {
                    None
                };
                let ts_ns = match stamp {
                    Some((mono, 0)) => self.wall.map(mono),
                    Some((mono, hw)) => {
                        self.ts_hw += 1;
                        let host = self.wall.peek(mono);
                        let w = self.hw_align.wall(hw, host);
                        self.wall.hold(w)
                    }
                    None => {
                        self.ts_fallback += 1;
                        if self.stamp_each {
                            // (The program without metadata: every frame.)
                            self.wall.map(sys::monotonic_ns())
                        } else {
                            if burst_mono == 0 {
                                burst_mono = sys::monotonic_ns();
                            }
                            self.wall.map(burst_mono)
                        }
                    }
                };
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

    fn clock_source(&self) -> &'static str {
        self.clock_name
    }

    fn refresh(&mut self) {
        let (mono, real) = sys::mono_real_pair();
        self.wall.reanchor(mono, real);
        self.hw_align.reanchor();
        if let Ok(s) = sys::get_opt::<XdpStatistics>(self.fd.as_raw_fd(), sys::XDP_STATISTICS) {
            self.stats = s;
        }
    }
}

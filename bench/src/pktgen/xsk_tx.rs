//! A transmit-only AF_XDP socket, for the packet generator in `bench/`.
//!
//! Set-up: register a UMEM, size the fill ring (the kernel requires it even
//! when nothing is received) and the completion and TX rings, map the TX
//! and completion rings, bind to one queue (copy mode: veth and most
//! drivers without zero-copy TX support).
//!
//! Per batch: take back the UMEM chunks the kernel has finished with (the
//! completion ring), copy each frame into a free chunk, publish the
//! descriptors on the TX ring and kick the kernel with `sendto`. In copy
//! mode the kernel transmits only inside that call, at most 32 frames per
//! call, so the kick is repeated until the ring is drained or the driver
//! pushes back.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use memmap2::{MmapMut, MmapOptions};

use linecap_dataplane::afxdp::ring::RingPtrs;
use linecap_dataplane::afxdp::sys::{self, MmapOffsets, UmemReg, XdpDesc};

/// Ring entries (TX and completion).
pub const TX_RING_ENTRIES: u32 = 2048;
/// UMEM chunks: twice the ring, so a full ring still leaves chunks to fill.
pub const TX_FRAMES: u32 = 4096;
/// Bytes per chunk (the longest frame it sends).
pub const TX_FRAME_BYTES: u32 = 4096;

/// The user-space producer side of the TX ring (`xdp_desc` entries).
struct TxRing {
    p: RingPtrs,
    cached_prod: u32,
    cached_cons: u32,
}

impl TxRing {
    fn free(&mut self) -> u32 {
        let free = self.p.size() - self.cached_prod.wrapping_sub(self.cached_cons);
        if free > 0 {
            return free;
        }
        self.cached_cons = self.p.consumer().load(Ordering::Acquire);
        self.p.size() - self.cached_prod.wrapping_sub(self.cached_cons)
    }

    /// Entries published but not yet taken by the kernel.
    fn pending(&mut self) -> u32 {
        self.cached_cons = self.p.consumer().load(Ordering::Acquire);
        self.cached_prod.wrapping_sub(self.cached_cons)
    }

    fn write(&mut self, i: u32, d: XdpDesc) {
        let idx = (self.cached_prod.wrapping_add(i) & (self.p.size() - 1)) as usize;
        // SAFETY: idx < size, inside the descriptor array; slots from the
        // producer index on are ours until the release-store in `publish`.
        unsafe {
            (self.p.desc_ptr() as *mut XdpDesc)
                .add(idx)
                .write_volatile(d)
        };
    }

    fn publish(&mut self, n: u32) {
        self.cached_prod = self.cached_prod.wrapping_add(n);
        self.p.producer().store(self.cached_prod, Ordering::Release);
    }
}

/// The user-space consumer side of the completion ring (`u64` addresses).
struct CompRing {
    p: RingPtrs,
    cached_cons: u32,
}

impl CompRing {
    /// Take every completed address into `out`.
    fn drain(&mut self, out: &mut Vec<u64>) -> u32 {
        let prod = self.p.producer().load(Ordering::Acquire);
        let n = prod.wrapping_sub(self.cached_cons);
        for i in 0..n {
            let idx = (self.cached_cons.wrapping_add(i) & (self.p.size() - 1)) as usize;
            // SAFETY: idx < size; the kernel wrote the entry before its
            // release-store of the producer index acquired above, and will
            // not reuse it until the consumer index moves past it below.
            out.push(unsafe { (self.p.desc_ptr() as *const u64).add(idx).read_volatile() });
        }
        self.cached_cons = prod;
        self.p.consumer().store(prod, Ordering::Release);
        n
    }
}

/// An AF_XDP socket that only transmits, on one queue of one interface.
pub struct XskTx {
    // Field order is drop order: rings unmapped, then the socket closed,
    // then the UMEM unmapped.
    tx: TxRing,
    comp: CompRing,
    _tx_map: sys::RingMap,
    _comp_map: sys::RingMap,
    fd: OwnedFd,
    umem: MmapMut,
    /// Chunks neither in the TX ring nor waiting for completion.
    free: Vec<u64>,
}

// SAFETY: the ring pointers point into mappings owned by this struct and
// move with it; the kernel synchronises through the ring indices only. One
// thread uses the socket at a time (the generator thread that owns it).
unsafe impl Send for XskTx {}

impl XskTx {
    /// Create, map and bind a TX socket on `ifname` queue `queue` (copy mode).
    pub fn open(ifname: &str, queue: u32) -> io::Result<Self> {
        let ctx = |what: &'static str| {
            let ifn = ifname.to_string();
            move |e: io::Error| {
                io::Error::new(
                    e.kind(),
                    format!("AF_XDP TX {ifn} queue {queue}: {what}: {e}"),
                )
            }
        };
        let ifindex = sys::ifindex(ifname)?;
        let len = TX_FRAMES as usize * TX_FRAME_BYTES as usize;
        let mut umem = MmapOptions::new()
            .len(len)
            .populate()
            .map_anon()
            .map_err(ctx("UMEM"))?;
        let fd =
            sys::xdp_socket().map_err(ctx("socket(AF_XDP) (kernel without AF_XDP? not root?)"))?;
        let raw = fd.as_raw_fd();
        let reg = UmemReg {
            addr: umem.as_mut_ptr() as u64,
            len: len as u64,
            chunk_size: TX_FRAME_BYTES,
            headroom: 0,
            flags: 0,
            tx_metadata_len: 0,
        };
        sys::set_opt(raw, sys::XDP_UMEM_REG, &reg).map_err(ctx("XDP_UMEM_REG (memlock limit?)"))?;
        let n = TX_RING_ENTRIES;
        sys::set_opt(raw, sys::XDP_UMEM_FILL_RING, &n).map_err(ctx("fill ring"))?;
        sys::set_opt(raw, sys::XDP_UMEM_COMPLETION_RING, &n).map_err(ctx("completion ring"))?;
        sys::set_opt(raw, sys::XDP_TX_RING, &n).map_err(ctx("TX ring"))?;
        let off: MmapOffsets =
            sys::get_opt(raw, sys::XDP_MMAP_OFFSETS).map_err(ctx("XDP_MMAP_OFFSETS"))?;
        let tx_map = sys::RingMap::new(
            &fd,
            off.tx.desc as usize + n as usize * std::mem::size_of::<XdpDesc>(),
            sys::XDP_PGOFF_TX_RING,
        )
        .map_err(ctx("mapping the TX ring"))?;
        let comp_map = sys::RingMap::new(
            &fd,
            off.cr.desc as usize + n as usize * 8,
            sys::XDP_UMEM_PGOFF_COMPLETION_RING,
        )
        .map_err(ctx("mapping the completion ring"))?;
        // SAFETY: both mappings were made with the kernel's offsets and sizes
        // for `n` entries and are owned by the socket returned, which drops
        // the ring handles before them (field order).
        let (tx_p, comp_p) = unsafe {
            (
                RingPtrs::at(tx_map.ptr, &off.tx, n),
                RingPtrs::at(comp_map.ptr, &off.cr, n),
            )
        };
        sys::bind(
            raw,
            ifindex,
            queue,
            sys::XDP_COPY | sys::XDP_USE_NEED_WAKEUP,
        )
        .map_err(ctx("bind"))?;
        let tx = TxRing {
            cached_prod: tx_p.producer().load(Ordering::Relaxed),
            cached_cons: tx_p.consumer().load(Ordering::Acquire),
            p: tx_p,
        };
        let comp = CompRing {
            cached_cons: comp_p.consumer().load(Ordering::Relaxed),
            p: comp_p,
        };
        let free = (0..TX_FRAMES as u64)
            .rev()
            .map(|i| i * TX_FRAME_BYTES as u64)
            .collect();
        Ok(XskTx {
            tx,
            comp,
            _tx_map: tx_map,
            _comp_map: comp_map,
            fd,
            umem,
            free,
        })
    }

    /// Queue up to `frames.len()` frames and kick the kernel; returns how
    /// many went into the TX ring (fewer when chunks or ring slots run out:
    /// the caller retries the rest).
    pub fn send(&mut self, frames: &[&[u8]]) -> io::Result<usize> {
        self.comp.drain(&mut self.free);
        let k = frames
            .len()
            .min(self.free.len())
            .min(self.tx.free() as usize);
        for (i, f) in frames[..k].iter().enumerate() {
            if f.len() > TX_FRAME_BYTES as usize {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "a {} B frame is longer than an AF_XDP TX chunk ({TX_FRAME_BYTES} B)",
                        f.len()
                    ),
                ));
            }
            let addr = self.free.pop().unwrap_or_default();
            let at = addr as usize;
            self.umem[at..at + f.len()].copy_from_slice(f);
            self.tx.write(
                i as u32,
                XdpDesc {
                    addr,
                    len: f.len() as u32,
                    options: 0,
                },
            );
        }
        if k > 0 {
            self.tx.publish(k as u32);
        }
        // Copy mode sends at most 32 per kick: kick until the kernel has
        // taken everything, or stops taking (driver back-pressure).
        let mut pending = self.tx.pending();
        for _ in 0..(k / 32 + 2) {
            if pending == 0 {
                break;
            }
            sys::wakeup_tx(self.fd.as_raw_fd())?;
            let now = self.tx.pending();
            if now == pending {
                break;
            }
            pending = now;
        }
        Ok(k)
    }

    /// Kick until the kernel has sent and completed everything queued, or `timeout`.
    pub fn flush(&mut self, timeout: Duration) -> io::Result<()> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            self.comp.drain(&mut self.free);
            if self.free.len() == TX_FRAMES as usize {
                return Ok(());
            }
            if self.tx.pending() > 0 {
                sys::wakeup_tx(self.fd.as_raw_fd())?;
            } else {
                std::thread::sleep(Duration::from_micros(100));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use linecap_dataplane::afxdp::sys::RingOffset;

    /// A ring laid out like the kernel's: producer, consumer, flags, then entries.
    fn layout(size: u32, entry_bytes: usize) -> (Vec<u64>, RingOffset) {
        let mem = vec![0u64; 8 + size as usize * entry_bytes / 8];
        let off = RingOffset {
            producer: 0,
            consumer: 8,
            flags: 16,
            desc: 64,
        };
        (mem, off)
    }

    #[test]
    fn tx_ring_publishes_descriptors_and_respects_the_kernels_consumer() {
        let (mut mem, off) = layout(4, 16);
        // SAFETY: `mem` outlives the ring and holds the layout `off` describes.
        let p = unsafe { RingPtrs::at(mem.as_mut_ptr() as *mut u8, &off, 4) };
        let mut tx = TxRing {
            p,
            cached_prod: 0,
            cached_cons: 0,
        };
        assert_eq!(tx.free(), 4);
        for i in 0..4 {
            tx.write(
                i,
                XdpDesc {
                    addr: u64::from(i) * 4096,
                    len: 60 + i,
                    options: 0,
                },
            );
        }
        tx.publish(4);
        assert_eq!(p.producer().load(Ordering::Acquire), 4);
        assert_eq!((tx.free(), tx.pending()), (0, 4));
        // The "kernel" takes 3: their slots are free again, and wrap around.
        p.consumer().store(3, Ordering::Release);
        assert_eq!((tx.free(), tx.pending()), (3, 1));
        tx.write(
            0,
            XdpDesc {
                addr: 9 * 4096,
                len: 99,
                options: 0,
            },
        );
        tx.publish(1);
        // Slot 0 (index 4 & 3) holds the new descriptor: addr at mem[8], len in mem[9].
        assert_eq!(mem[8], 9 * 4096);
        assert_eq!(mem[9] as u32, 99);
    }

    #[test]
    fn completion_ring_returns_every_completed_address_once() {
        let (mut mem, off) = layout(4, 8);
        // SAFETY: as above.
        let p = unsafe { RingPtrs::at(mem.as_mut_ptr() as *mut u8, &off, 4) };
        let mut comp = CompRing { p, cached_cons: 0 };
        let mut out = Vec::new();
        assert_eq!(comp.drain(&mut out), 0);
        for (i, a) in [4096u64, 8192, 12288].iter().enumerate() {
            // SAFETY: index < 4, inside the test's entry array.
            unsafe { (p.desc_ptr() as *mut u64).add(i).write(*a) };
        }
        p.producer().store(3, Ordering::Release);
        assert_eq!(comp.drain(&mut out), 3);
        assert_eq!(out, [4096, 8192, 12288]);
        assert_eq!(p.consumer().load(Ordering::Acquire), 3);
        assert_eq!(comp.drain(&mut out), 0, "nothing twice");
    }
}

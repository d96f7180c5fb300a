//! The single-producer single-consumer rings an AF_XDP socket shares with
//! the kernel: 32-bit free-running producer and consumer indices, a flags
//! word, and a power-of-two array of descriptors.
//!
//! User space produces into the fill ring and consumes from the RX ring.
//! Indices are read with Acquire and published with Release, and the other
//! side's index is cached so the shared line is read only when the cached
//! value says there is nothing (or no room). The code works over any memory
//! with that layout, so it is tested here over an ordinary allocation.

use std::sync::atomic::{AtomicU32, Ordering};

/// Raw pointers to one ring's parts.
///
/// The fields are private to `afxdp`: the only way to make one outside
/// this module tree is the `unsafe` [`RingPtrs::at`], whose contract makes
/// the safe ring handles built on it ([`ProdRing::new`], [`ConsRing::new`])
/// sound. Safe code cannot point a ring at arbitrary memory.
#[derive(Debug, Clone, Copy)]
pub struct RingPtrs {
    pub(super) producer: *const AtomicU32,
    pub(super) consumer: *const AtomicU32,
    pub(super) flags: *const AtomicU32,
    pub(super) desc: *mut u8,
    pub(super) size: u32,
}

impl RingPtrs {
    /// Entries in the ring (a power of two).
    pub fn size(&self) -> u32 {
        self.size
    }

    /// The first descriptor. Reading or writing through it is `unsafe` at
    /// the caller, under [`RingPtrs::at`]'s contract.
    pub fn desc_ptr(&self) -> *mut u8 {
        self.desc
    }

    /// Pointers into a mapping at the kernel-given offsets.
    ///
    /// # Safety
    /// `base` must point to a live mapping that holds the producer, consumer
    /// and flags words (4-byte aligned) and `size` descriptors of the ring's
    /// type at `desc`, `size` must be a power of two, and the mapping must
    /// outlive every use of the result.
    pub unsafe fn at(base: *mut u8, off: &super::sys::RingOffset, size: u32) -> Self {
        debug_assert!(
            size.is_power_of_two(),
            "ring size {size} is not a power of two"
        );
        // SAFETY: the caller guarantees the offsets lie inside the mapping.
        unsafe {
            RingPtrs {
                producer: base.add(off.producer as usize).cast(),
                consumer: base.add(off.consumer as usize).cast(),
                flags: base.add(off.flags as usize).cast(),
                desc: base.add(off.desc as usize),
                size,
            }
        }
    }

    pub fn producer(&self) -> &AtomicU32 {
        // SAFETY: RingPtrs::at's contract: a live, aligned u32 in shared memory.
        unsafe { &*self.producer }
    }
    pub fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as above.
        unsafe { &*self.consumer }
    }
    pub fn flags(&self) -> &AtomicU32 {
        // SAFETY: as above.
        unsafe { &*self.flags }
    }
}

/// The user-space producer side (fill ring): entries are `u64` frame addresses.
pub struct ProdRing {
    p: RingPtrs,
    cached_prod: u32,
    cached_cons: u32,
}

impl ProdRing {
    /// A producer over `p` (indices start where the kernel left them).
    pub fn new(p: RingPtrs) -> Self {
        let prod = p.producer().load(Ordering::Relaxed);
        let cons = p.consumer().load(Ordering::Acquire);
        ProdRing {
            p,
            cached_prod: prod,
            cached_cons: cons,
        }
    }

    /// Free entries. The indices are free-running `u32`s that wrap after
    /// 2^32 entries, so their distance is a wrapping difference.
    pub fn free(&mut self) -> u32 {
        let free = self.p.size - self.cached_prod.wrapping_sub(self.cached_cons);
        if free > 0 {
            return free;
        }
        self.cached_cons = self.p.consumer().load(Ordering::Acquire);
        self.p.size - self.cached_prod.wrapping_sub(self.cached_cons)
    }

    /// Write `addrs` (at most [`ProdRing::free`] of them) and publish them.
    pub fn push(&mut self, addrs: &[u64]) -> usize {
        let n = (self.free() as usize).min(addrs.len());
        let mask = self.p.size - 1;
        for (i, &a) in addrs[..n].iter().enumerate() {
            let idx = (self.cached_prod.wrapping_add(i as u32) & mask) as usize;
            // SAFETY: idx < size, so the slot lies in the descriptor array;
            // entries between the consumer and producer+n are ours to write
            // (the kernel reads them only after the release-store below).
            unsafe { (self.p.desc as *mut u64).add(idx).write_volatile(a) };
        }
        self.cached_prod = self.cached_prod.wrapping_add(n as u32);
        self.p.producer().store(self.cached_prod, Ordering::Release);
        n
    }

    /// Whether the kernel asks to be woken (needs_wakeup mode).
    pub fn needs_wakeup(&self) -> bool {
        self.p.flags().load(Ordering::Relaxed) & super::sys::XDP_RING_NEED_WAKEUP != 0
    }
}

/// The user-space consumer side (RX ring): entries are `xdp_desc`.
pub struct ConsRing {
    p: RingPtrs,
    cached_prod: u32,
    cached_cons: u32,
}

impl ConsRing {
    /// A consumer over `p`.
    pub fn new(p: RingPtrs) -> Self {
        let cons = p.consumer().load(Ordering::Relaxed);
        let prod = p.producer().load(Ordering::Acquire);
        ConsRing {
            p,
            cached_prod: prod,
            cached_cons: cons,
        }
    }

    /// Entries ready, up to `max`.
    pub fn available(&mut self, max: u32) -> u32 {
        let mut n = self.cached_prod.wrapping_sub(self.cached_cons);
        if n == 0 {
            self.cached_prod = self.p.producer().load(Ordering::Acquire);
            n = self.cached_prod.wrapping_sub(self.cached_cons);
        }
        n.min(max)
    }

    /// The `i`-th ready descriptor (`i` < what [`ConsRing::available`] returned).
    pub fn desc(&self, i: u32) -> super::sys::XdpDesc {
        let idx = (self.cached_cons.wrapping_add(i) & (self.p.size - 1)) as usize;
        // SAFETY: idx < size; the kernel wrote this entry before its
        // release-store of the producer index, which `available` acquired,
        // and will not reuse it until `release` moves the consumer past it.
        unsafe {
            (self.p.desc as *const super::sys::XdpDesc)
                .add(idx)
                .read_volatile()
        }
    }

    /// Give `n` entries back to the kernel.
    pub fn release(&mut self, n: u32) {
        self.cached_cons = self.cached_cons.wrapping_add(n);
        self.p.consumer().store(self.cached_cons, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::super::sys::{RingOffset, XdpDesc};
    use super::*;

    /// A ring laid out like the kernel's: producer, consumer, flags, then descriptors.
    fn layout(size: u32, desc_bytes: usize) -> (Vec<u64>, RingOffset) {
        let mem = vec![0u64; 8 + size as usize * desc_bytes / 8];
        let off = RingOffset {
            producer: 0,
            consumer: 8,
            flags: 16,
            desc: 64,
        };
        (mem, off)
    }

    #[test]
    fn fill_ring_respects_free_space_and_wraps() {
        let (mut mem, off) = layout(4, 8);
        let base = mem.as_mut_ptr() as *mut u8;
        // SAFETY: `mem` outlives the ring and holds the layout `off` describes.
        let p = unsafe { RingPtrs::at(base, &off, 4) };
        let mut fill = ProdRing::new(p);
        assert_eq!(fill.push(&[10, 20, 30, 40, 50]), 4, "only 4 fit");
        assert_eq!(fill.free(), 0);
        // The "kernel" consumes 3.
        p.consumer().store(3, Ordering::Release);
        assert_eq!(fill.push(&[50, 60]), 2);
        assert_eq!(p.producer().load(Ordering::Acquire), 6);
        // Slots 0 and 1 were reused for 50 and 60.
        assert_eq!(&mem[8..12], &[50, 60, 30, 40]);
    }

    #[test]
    fn rx_ring_reads_what_the_kernel_published() {
        let (mut mem, off) = layout(8, 16);
        let base = mem.as_mut_ptr() as *mut u8;
        // SAFETY: as above.
        let p = unsafe { RingPtrs::at(base, &off, 8) };
        let mut rx = ConsRing::new(p);
        assert_eq!(rx.available(64), 0);
        for i in 0..3u64 {
            // SAFETY: index < 8, inside the test's descriptor array.
            unsafe {
                (p.desc as *mut XdpDesc).add(i as usize).write(XdpDesc {
                    addr: i * 2048,
                    len: 60 + i as u32,
                    options: 0,
                })
            };
        }
        p.producer().store(3, Ordering::Release);
        assert_eq!(rx.available(2), 2);
        assert_eq!(rx.desc(1).addr, 2048);
        rx.release(2);
        assert_eq!(rx.available(64), 1);
        assert_eq!(rx.desc(0).len, 62);
        rx.release(1);
        assert_eq!(p.consumer().load(Ordering::Acquire), 3);
    }

    #[test]
    fn indices_wrap_past_u32_max() {
        // Both rings start 3 entries short of 2^32 (as after ~4 G frames),
        // then run 10 laps of the ring across the wrap. A non-wrapping
        // subtraction panics here in a debug build and returns a huge free
        // count (an overwrite of unconsumed entries) in a release build.
        let start = u32::MAX - 2;
        let (mut fmem, off) = layout(4, 8);
        let fbase = fmem.as_mut_ptr() as *mut u8;
        // SAFETY: `fmem` outlives the ring and holds the layout `off` describes.
        let fp = unsafe { RingPtrs::at(fbase, &off, 4) };
        fp.producer().store(start, Ordering::Release);
        fp.consumer().store(start, Ordering::Release);
        let mut fill = ProdRing::new(fp);

        let (mut rmem, roff) = layout(4, 16);
        let rbase = rmem.as_mut_ptr() as *mut u8;
        // SAFETY: as above.
        let rp = unsafe { RingPtrs::at(rbase, &roff, 4) };
        rp.producer().store(start, Ordering::Release);
        rp.consumer().store(start, Ordering::Release);
        let mut rx = ConsRing::new(rp);

        let mut next = 0u64;
        for lap in 0..10u64 {
            assert_eq!(fill.free(), 4, "lap {lap}: empty ring has 4 free");
            let addrs = [next, next + 1, next + 2];
            assert_eq!(fill.push(&addrs), 3);
            assert_eq!(fill.free(), 1);
            assert_eq!(fill.push(&[9, 9]), 1, "only one slot left");
            assert_eq!(fill.free(), 0);
            // The "kernel" consumes the fill ring and publishes 4 RX entries.
            let prod = fp.producer().load(Ordering::Acquire);
            fp.consumer().store(prod, Ordering::Release);
            let rprod = rp.producer().load(Ordering::Acquire);
            for i in 0..4u32 {
                let idx = (rprod.wrapping_add(i) & 3) as usize;
                // SAFETY: idx < 4, inside the test's descriptor array.
                unsafe {
                    (rp.desc as *mut XdpDesc).add(idx).write(XdpDesc {
                        addr: next + i as u64,
                        len: 60,
                        options: 0,
                    })
                };
            }
            rp.producer()
                .store(rprod.wrapping_add(4), Ordering::Release);
            assert_eq!(rx.available(64), 4, "lap {lap}");
            for i in 0..4u32 {
                assert_eq!(rx.desc(i).addr, next + i as u64, "lap {lap} entry {i}");
            }
            rx.release(4);
            assert_eq!(rx.available(64), 0);
            next += 4;
        }
        // 10 laps of 4 entries from 2^32 - 3 ended past the wrap.
        let end = start.wrapping_add(40);
        assert!(end < start, "the test really crossed 2^32");
        assert_eq!(fp.producer().load(Ordering::Acquire), end);
        assert_eq!(rp.consumer().load(Ordering::Acquire), end);
    }
}

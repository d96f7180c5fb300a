//! Single-producer single-consumer ring of fixed-size batch slots in one
//! memory-mapped region.
//!
//! Shape taken from rtrb: a [`Producer`] and a [`Consumer`] handle, each
//! keeping a cached copy of the other side's index so the shared cache line
//! is touched only when the cached value says the ring looks full (or empty);
//! indices are cache-padded; a full ring is reported by [`Producer::acquire`]
//! returning `false`, never by overwriting.
//!
//! Unlike rtrb the element is not moved in: the producer *fills a slot in
//! place* (an ERF batch is written straight into shared memory) and then
//! commits it, and the consumer reads it in place and releases it. No copy
//! of the batch is made between the worker and the writer.
//!
//! Memory layout of the region (offsets from its start):
//!
//! ```text
//! 0      control block: head (producer), tail (consumer), closed flag; 64-byte padded each
//! 256    slot 0: BatchMeta (padded to 128 bytes) then `batch_bytes` of records
//! 256+S  slot 1 ...           (S = slot stride, a multiple of 64)
//! ```
//!
//! The region comes from 2 MiB hugepages when they are reserved
//! (`vm.nr_hugepages`), else from normal pages; it is pre-faulted at start-up
//! so the capture path never takes a page fault on it.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use linecap_wire::batch::BatchMeta;
use memmap2::{MmapMut, MmapOptions};

const CONTROL_BYTES: usize = 256;
const META_BYTES: usize = 128;
const CACHE_LINE: usize = 64;
const HUGEPAGE_BYTES: usize = 2 << 20;

const _: () = assert!(std::mem::size_of::<BatchMeta>() <= META_BYTES);
const _: () = assert!(std::mem::align_of::<BatchMeta>() <= CACHE_LINE);

/// Where the ring's memory should come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HugePages {
    /// Hugepages when the kernel gives them, normal pages otherwise.
    #[default]
    Try,
    /// Hugepages or fail.
    Require,
    /// Normal pages only.
    Never,
}

/// Sizes of one ring, fixed at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingConfig {
    /// Number of slots; a power of two, at least 2.
    pub slots: usize,
    /// Bytes of ERF records one slot holds.
    pub batch_bytes: usize,
    /// Memory source.
    pub hugepages: HugePages,
}

/// The control block at the start of the region.
#[repr(C)]
struct Control {
    head: AtomicU64,
    _pad0: [u8; CACHE_LINE - 8],
    tail: AtomicU64,
    _pad1: [u8; CACHE_LINE - 8],
    closed: AtomicBool,
    _pad2: [u8; CACHE_LINE - 1],
}

const _: () = assert!(std::mem::size_of::<Control>() <= CONTROL_BYTES);

/// The mapping and the numbers both handles derive addresses from.
struct Shared {
    /// Keeps the mapping alive; accessed through `base`.
    _map: MmapMut,
    base: *mut u8,
    slots: u64,
    mask: u64,
    stride: usize,
    batch_bytes: usize,
    hugepages: bool,
}

// SAFETY: `base` points into `map`, which lives as long as `Shared`. All
// cross-thread access to the region goes through the atomics in `Control`
// (acquire/release on head and tail), which hand each slot to exactly one
// side at a time; the raw pointer itself is never written after creation.
unsafe impl Send for Shared {}
// SAFETY: as above: shared references to `Shared` only read immutable fields
// or use atomics; slot memory is accessed by the side that owns the slot.
unsafe impl Sync for Shared {}

impl Shared {
    fn control(&self) -> &Control {
        // SAFETY: the region starts with CONTROL_BYTES reserved for a
        // `Control`, page-aligned (mmap), zero-initialised (a valid value for
        // atomics and padding), and lives as long as `self`.
        unsafe { &*(self.base as *const Control) }
    }

    fn slot_ptr(&self, index: u64) -> *mut u8 {
        let slot = (index & self.mask) as usize;
        // SAFETY: slot < slots, and the region was sized as
        // CONTROL_BYTES + slots * stride, so the offset stays inside it.
        unsafe { self.base.add(CONTROL_BYTES + slot * self.stride) }
    }
}

/// Create a ring; returns its two handles.
pub fn ring(cfg: RingConfig) -> io::Result<(Producer, Consumer)> {
    if cfg.slots < 2 || !cfg.slots.is_power_of_two() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("ring slots must be a power of two >= 2, got {}", cfg.slots),
        ));
    }
    if cfg.batch_bytes < linecap_wire::erf::RLEN_MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "batch bytes must hold the largest ERF record ({} bytes), got {}",
                linecap_wire::erf::RLEN_MAX,
                cfg.batch_bytes
            ),
        ));
    }
    let stride = (META_BYTES + cfg.batch_bytes).next_multiple_of(CACHE_LINE);
    let len = stride
        .checked_mul(cfg.slots)
        .and_then(|b| b.checked_add(CONTROL_BYTES))
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "ring size overflows"))?;
    let (mut map, hugepages) = map_region(len, cfg.hugepages)?;
    let base = map.as_mut_ptr();
    let shared = Arc::new(Shared {
        _map: map,
        base,
        slots: cfg.slots as u64,
        mask: cfg.slots as u64 - 1,
        stride,
        batch_bytes: cfg.batch_bytes,
        hugepages,
    });
    Ok((
        Producer {
            shared: shared.clone(),
            head: 0,
            cached_tail: 0,
            acquired: false,
        },
        Consumer {
            shared,
            tail: 0,
            cached_head: 0,
            peeked: false,
        },
    ))
}

fn map_region(len: usize, policy: HugePages) -> io::Result<(MmapMut, bool)> {
    if policy != HugePages::Never {
        let huge_len = len.next_multiple_of(HUGEPAGE_BYTES);
        match MmapOptions::new()
            .len(huge_len)
            .huge(Some(21))
            .populate()
            .map_anon()
        {
            Ok(map) => return Ok((map, true)),
            Err(e) if policy == HugePages::Require => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("no hugepages for a {huge_len}-byte ring (vm.nr_hugepages?): {e}"),
                ));
            }
            Err(_) => {}
        }
    }
    let map = MmapOptions::new().len(len).populate().map_anon()?;
    Ok((map, false))
}

/// The capture side of a ring: fills slots in place and commits them.
pub struct Producer {
    shared: Arc<Shared>,
    head: u64,
    cached_tail: u64,
    acquired: bool,
}

impl Producer {
    /// Bytes of records one slot holds.
    pub fn batch_bytes(&self) -> usize {
        self.shared.batch_bytes
    }

    /// Whether the region is backed by hugepages.
    pub fn hugepages(&self) -> bool {
        self.shared.hugepages
    }

    /// Claim the next free slot. Returns `false` when the ring is full
    /// (the caller drops and counts); `true` when a slot is held, also if
    /// one was already held.
    #[inline]
    pub fn acquire(&mut self) -> bool {
        if self.acquired {
            return true;
        }
        if self.head - self.cached_tail >= self.shared.slots {
            self.cached_tail = self.shared.control().tail.load(Ordering::Acquire);
            if self.head - self.cached_tail >= self.shared.slots {
                return false;
            }
        }
        self.acquired = true;
        true
    }

    /// Whether a slot is held.
    #[inline]
    pub fn holds_slot(&self) -> bool {
        self.acquired
    }

    /// The held slot: its metadata and record area.
    ///
    /// # Panics
    /// If no slot is held (a bug in the caller: call [`Producer::acquire`] first).
    #[inline(always)]
    pub fn slot_mut(&mut self) -> (&mut BatchMeta, &mut [u8]) {
        assert!(self.acquired, "slot_mut without an acquired slot");
        let p = self.shared.slot_ptr(self.head);
        // SAFETY: the slot at `head` lies inside the region (slot_ptr), and
        // is owned by the producer: head - tail < slots, so the consumer has
        // released it (tail > head - slots) and will not read it until the
        // release-store of head in `commit`. `&mut self` makes this the only
        // reference. The slot starts 64-byte aligned, enough for BatchMeta,
        // and any bit pattern is a valid BatchMeta (plain integers).
        unsafe {
            let meta = &mut *(p as *mut BatchMeta);
            let data = std::slice::from_raw_parts_mut(p.add(META_BYTES), self.shared.batch_bytes);
            (meta, data)
        }
    }

    /// Hand the held slot to the consumer.
    #[inline]
    pub fn commit(&mut self) {
        debug_assert!(self.acquired);
        if !self.acquired {
            return;
        }
        self.head += 1;
        self.acquired = false;
        self.shared
            .control()
            .head
            .store(self.head, Ordering::Release);
    }

    /// Slots committed and not yet released by the consumer.
    pub fn occupancy(&self) -> u64 {
        self.head - self.shared.control().tail.load(Ordering::Acquire)
    }

    /// Tell the consumer no more slots will come (any held slot is not committed).
    pub fn close(&mut self) {
        self.shared.control().closed.store(true, Ordering::Release);
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.close();
    }
}

/// A read-only view of a ring's fill level, for metrics (any thread).
#[derive(Clone)]
pub struct RingProbe {
    shared: Arc<Shared>,
}

impl RingProbe {
    /// Slots committed and not yet released.
    pub fn occupancy(&self) -> u64 {
        let c = self.shared.control();
        let tail = c.tail.load(Ordering::Acquire);
        c.head.load(Ordering::Acquire).saturating_sub(tail)
    }
    /// Number of slots.
    pub fn capacity(&self) -> u64 {
        self.shared.slots
    }
}

/// A committed slot as the consumer sees it.
pub struct Batch<'a> {
    /// What the slot holds.
    pub meta: &'a BatchMeta,
    /// The ERF records, `meta.records_len` bytes.
    pub records: &'a [u8],
}

/// The writer side of a ring: reads committed slots in place and releases them.
pub struct Consumer {
    shared: Arc<Shared>,
    tail: u64,
    cached_head: u64,
    /// `peek` returned the slot at `tail` and it has not been released.
    peeked: bool,
}

impl Consumer {
    /// The oldest committed slot, if any. A corrupted `records_len` (larger
    /// than the slot) is clamped to the slot size.
    #[inline]
    pub fn peek(&mut self) -> Option<Batch<'_>> {
        if self.tail == self.cached_head {
            self.cached_head = self.shared.control().head.load(Ordering::Acquire);
            if self.tail == self.cached_head {
                return None;
            }
        }
        self.peeked = true;
        let p = self.shared.slot_ptr(self.tail);
        // SAFETY: tail < head (acquire-loaded), so the producer committed this
        // slot with a release-store after writing it, and will not touch it
        // again until `release` stores tail past it. The slot lies inside the
        // region and is 64-byte aligned; any bit pattern is a valid BatchMeta.
        unsafe {
            let meta = &*(p as *const BatchMeta);
            let len = (meta.records_len as usize).min(self.shared.batch_bytes);
            let records = std::slice::from_raw_parts(p.add(META_BYTES), len);
            Some(Batch { meta, records })
        }
    }

    /// Return the slot last seen by [`Consumer::peek`] to the producer.
    #[inline]
    pub fn release(&mut self) {
        // A release with no peeked slot (a second release, or one before any
        // peek) is a no-op in every build: it must never free a committed
        // slot the writer has not read.
        if self.peeked && self.tail < self.cached_head {
            self.peeked = false;
            self.tail += 1;
            self.shared
                .control()
                .tail
                .store(self.tail, Ordering::Release);
        }
    }

    /// Whether the producer has closed the ring and every committed slot was released.
    pub fn is_finished(&self) -> bool {
        let c = self.shared.control();
        c.closed.load(Ordering::Acquire) && c.head.load(Ordering::Acquire) == self.tail
    }

    /// Slots committed and not yet released.
    pub fn occupancy(&self) -> u64 {
        self.shared.control().head.load(Ordering::Acquire) - self.tail
    }

    /// Number of slots.
    pub fn capacity(&self) -> u64 {
        self.shared.slots
    }

    /// Whether the region is backed by hugepages.
    pub fn hugepages(&self) -> bool {
        self.shared.hugepages
    }

    /// A probe of this ring's fill level for other threads.
    pub fn probe(&self) -> RingProbe {
        RingProbe {
            shared: self.shared.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(slots: usize) -> RingConfig {
        RingConfig {
            slots,
            batch_bytes: 1 << 16,
            hugepages: HugePages::Never,
        }
    }

    #[test]
    fn rejects_bad_sizes() {
        assert!(ring(cfg(3)).is_err());
        assert!(ring(cfg(1)).is_err());
        assert!(
            ring(RingConfig {
                batch_bytes: 100,
                ..cfg(4)
            })
            .is_err()
        );
    }

    #[test]
    fn full_ring_refuses_and_never_overwrites() {
        let (mut p, mut c) = ring(cfg(4)).unwrap();
        for i in 0..4u64 {
            assert!(p.acquire());
            let (meta, data) = p.slot_mut();
            meta.seq = i;
            meta.records_len = 1;
            data[0] = i as u8;
            p.commit();
        }
        assert!(!p.acquire(), "fifth slot must be refused");
        assert_eq!(c.occupancy(), 4);
        let b = c.peek().unwrap();
        assert_eq!((b.meta.seq, b.records[0]), (0, 0));
        c.release();
        assert!(p.acquire());
        p.slot_mut().0.seq = 4;
        p.commit();
        for i in 1..5u64 {
            let b = c.peek().unwrap();
            assert_eq!(b.meta.seq, i);
            c.release();
        }
        assert!(c.peek().is_none());
        assert!(!c.is_finished());
        drop(p);
        assert!(c.is_finished());
    }

    #[test]
    fn release_without_peek_frees_nothing() {
        let (mut p, mut c) = ring(cfg(4)).unwrap();
        for i in 0..2 {
            assert!(p.acquire());
            p.slot_mut().0.seq = i;
            p.commit();
        }
        assert_eq!(c.peek().unwrap().meta.seq, 0);
        c.release();
        c.release(); // a stray second release, in debug and release builds alike
        assert_eq!(c.occupancy(), 1, "the stray release freed a slot");
        assert_eq!(c.peek().unwrap().meta.seq, 1, "batch 1 must still be there");
    }

    #[test]
    fn clamps_corrupt_length() {
        let (mut p, mut c) = ring(cfg(2)).unwrap();
        assert!(p.acquire());
        p.slot_mut().0.records_len = u64::MAX;
        p.commit();
        assert_eq!(c.peek().unwrap().records.len(), 1 << 16);
    }

    #[test]
    fn threads_see_every_batch_in_order() {
        let (mut p, mut c) = ring(cfg(8)).unwrap();
        const N: u64 = 100_000;
        let t = std::thread::spawn(move || {
            let mut i = 0;
            while i < N {
                if p.acquire() {
                    let (meta, data) = p.slot_mut();
                    meta.seq = i;
                    data[..8].copy_from_slice(&i.to_le_bytes());
                    meta.records_len = 8;
                    p.commit();
                    i += 1;
                } else {
                    std::hint::spin_loop();
                }
            }
        });
        let mut expect = 0;
        while !c.is_finished() || c.occupancy() > 0 {
            if let Some(b) = c.peek() {
                assert_eq!(b.meta.seq, expect);
                assert_eq!(b.records, &expect.to_le_bytes());
                c.release();
                expect += 1;
            } else {
                std::hint::spin_loop();
            }
        }
        t.join().unwrap();
        assert_eq!(expect, N);
    }
}

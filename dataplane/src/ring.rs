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
//! 0        control block: head (producer), tail (consumer), closed flag,
//!          the writer's phase; 64-byte padded each (one 4 KiB page)
//! 4096     slot 0: BatchMeta and the slot's phase (one 4 KiB page), then the
//!          record area: 4096 + batch_bytes (rounded up to 4 KiB) bytes
//! 4096+S   slot 1 ...           (S = slot stride, a multiple of 4 KiB)
//! ```
//!
//! **Records at the file's phase** (issue 19 item 5). The record area of
//! every slot starts on a 4 KiB boundary, and a batch's records start
//! `phase` bytes into it (0 ≤ phase < 4096): the offset, modulo 4 KiB, at
//! which they will land in the writer's file. A writer with `O_DIRECT`
//! then writes the batch from the slot itself: it puts the bytes of the
//! file's last partial block (exactly `phase` of them) in front of the
//! records, zeros after them to the next block, and writes the aligned
//! span; no copy of the batch. The writer publishes, after each batch,
//! the phase at which the next slot's records would start
//! ([`Consumer::publish_phase`]); the producer adds the lengths of the
//! batches it committed since then ([`Producer::acquire`]). A phase that
//! turns out wrong (a rotation, a dropped batch, a publication not yet
//! seen) costs the writer one copy of that batch, never a wrong byte.
//!
//! The region comes from 2 MiB hugepages when they are reserved
//! (`vm.nr_hugepages`), else from normal pages advised to be transparent
//! hugepages (`MADV_HUGEPAGE`, on a 2 MiB boundary; `HugePages::Never`:
//! plain 4 KiB pages); it is pre-faulted at start-up so the capture path
//! never takes a page fault on it.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use linecap_wire::batch::BatchMeta;
use memmap2::{MmapMut, MmapOptions};

/// Alignment of every slot's record area, and the modulus of its phase:
/// 4 KiB suits `O_DIRECT` on every logical block size Linux devices have.
pub const SLOT_ALIGN: usize = 4096;
const CONTROL_BYTES: usize = SLOT_ALIGN;
/// The slot's header page: its `BatchMeta`, then (at `PHASE_AT`) its phase.
const META_BYTES: usize = SLOT_ALIGN;
const PHASE_AT: usize = 128;
const CACHE_LINE: usize = 64;
const HUGEPAGE_BYTES: usize = 2 << 20;
/// Bits of the packed (slot index, phase) the writer publishes.
const PHASE_BITS: u32 = SLOT_ALIGN.trailing_zeros();

const _: () = assert!(std::mem::size_of::<BatchMeta>() <= PHASE_AT);
const _: () = assert!(SLOT_ALIGN.is_power_of_two());
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
    /// The writer's phase: `index << PHASE_BITS | phase`, where `phase` is
    /// where the records of slot `index` would start in its file, modulo
    /// [`SLOT_ALIGN`] (0 until the writer says).
    phase: AtomicU64,
    /// Bytes the writer's file takes before it rotates by size, for the
    /// slot of the last `phase`: `tag << LEFT_BITS | bytes`, where `tag` is
    /// that slot's index modulo 2^24 (a publication half seen is ignored).
    phase_left: AtomicU64,
    _pad3: [u8; CACHE_LINE - 16],
}

/// Bits of `Control::phase_left` for the byte count; its largest value
/// means "no rotation in sight".
const LEFT_BITS: u32 = 40;
const LEFT_MAX: u64 = (1 << LEFT_BITS) - 1;

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
    /// Bytes of a slot's record area (`SLOT_ALIGN` + `batch_bytes`
    /// rounded up to `SLOT_ALIGN`): room for any phase and the zeros to
    /// the block after the records.
    area_bytes: usize,
    hugepages: bool,
    /// Bytes of the region the kernel backed with transparent hugepages
    /// when the ring was made (0 on reserved hugepages or 4 KiB pages).
    transparent_huge_bytes: u64,
    /// Whether the region was advised `MADV_HUGEPAGE`.
    advised: bool,
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

/// Bytes of the region of a ring of `slots` slots holding `batch_bytes` of
/// records each (before rounding up to hugepages), saturating.
pub fn region_bytes(slots: u64, batch_bytes: u64) -> u64 {
    let rounded = batch_bytes
        .checked_next_multiple_of(SLOT_ALIGN as u64)
        .unwrap_or(u64::MAX);
    let area = (SLOT_ALIGN as u64).saturating_add(rounded);
    slots
        .saturating_mul(area.saturating_add(META_BYTES as u64))
        .saturating_add(CONTROL_BYTES as u64)
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
    let area_bytes = SLOT_ALIGN + cfg.batch_bytes.next_multiple_of(SLOT_ALIGN);
    let stride = META_BYTES + area_bytes;
    let len = stride
        .checked_mul(cfg.slots)
        .and_then(|b| b.checked_add(CONTROL_BYTES))
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "ring size overflows"))?;
    let (mut map, offset, hugepages, transparent_huge_bytes) = map_region(len, cfg.hugepages)?;
    let advised = !hugepages && cfg.hugepages != HugePages::Never;
    // SAFETY: `map_region` returns a mapping of at least `offset + len`
    // bytes, so the region `base..base + len` lies inside it.
    let base = unsafe { map.as_mut_ptr().add(offset) };
    // SAFETY: the region starts with a zeroed `Control` (see `control`);
    // nothing else holds the region yet.
    unsafe { &*(base as *const Control) }
        .phase_left
        .store(LEFT_MAX, Ordering::Relaxed);
    let shared = Arc::new(Shared {
        _map: map,
        base,
        slots: cfg.slots as u64,
        mask: cfg.slots as u64 - 1,
        stride,
        batch_bytes: cfg.batch_bytes,
        area_bytes,
        hugepages,
        transparent_huge_bytes,
        advised,
    });
    Ok((
        Producer {
            shared: shared.clone(),
            head: 0,
            cached_tail: 0,
            acquired: false,
            data: std::ptr::null_mut(),
            committed_bytes: 0,
            starts: vec![(u64::MAX, 0); cfg.slots],
            file_started: None,
        },
        Consumer {
            shared,
            tail: 0,
            cached_head: 0,
            peeked: false,
            lent: None,
        },
    ))
}

/// The ring's mapping, the offset of the region in it, whether it is on
/// reserved hugepages, and how many of its bytes the kernel backed with
/// transparent hugepages.
fn map_region(len: usize, policy: HugePages) -> io::Result<(MmapMut, usize, bool, u64)> {
    if policy != HugePages::Never {
        let huge_len = len.next_multiple_of(HUGEPAGE_BYTES);
        match MmapOptions::new()
            .len(huge_len)
            .huge(Some(21))
            .populate()
            .map_anon()
        {
            Ok(map) => return Ok((map, 0, true, 0)),
            Err(e) if policy == HugePages::Require => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("no hugepages for a {huge_len}-byte ring (vm.nr_hugepages?): {e}"),
                ));
            }
            Err(_) => {}
        }
    }
    if policy == HugePages::Never {
        let map = MmapOptions::new().len(len).populate().map_anon()?;
        return Ok((map, 0, false, 0));
    }
    // No hugepages reserved: ask for transparent ones (THP, `madvise` mode)
    // on a region that starts on a 2 MiB boundary, then fault every page in
    // (what MAP_POPULATE does for the other two ways). Writes from a slot in
    // 4 KiB pages measured no faster than a copy (`docs/benchmarks.md`,
    // the writer's eighth and ninth rounds); in a 2 MiB page a slot is one
    // DMA segment. The kernel may still give 4 KiB pages: nothing depends
    // on it.
    // The region's last 2 MiB frame lies inside the mapping too (the length
    // rounded up, as for reserved hugepages): a frame that overhangs the
    // mapping's end can never be a hugepage, and a ring under 2 MiB got one
    // or not by the luck of the alignment.
    let huge_len = len.next_multiple_of(HUGEPAGE_BYTES);
    let mut map = MmapOptions::new()
        .len(huge_len + HUGEPAGE_BYTES)
        .map_anon()?;
    let _ = map.advise(memmap2::Advice::HugePage);
    let offset = map
        .as_ptr()
        .align_offset(HUGEPAGE_BYTES)
        .min(HUGEPAGE_BYTES);
    // The kernel may merge this mapping with a neighbouring one advised the
    // same way (another ring's), and smaps counts per mapping: what this
    // region got is the count after touching it less the count before.
    let start = map.as_ptr() as usize + offset;
    let before = transparent_huge_bytes(start, huge_len);
    // Only the region: the pages of the slack mapped to align it stay
    // untouched, never resident (but for the rest of the region's last
    // frame when the kernel makes it a hugepage).
    for i in (offset..offset + len).step_by(4096) {
        map[i] = 0;
    }
    let got = transparent_huge_bytes(start, huge_len).saturating_sub(before);
    Ok((map, offset, false, got.min(len as u64)))
}

/// Bytes in transparent hugepages of the mappings of `/proc/self/smaps`
/// that overlap `start..start + len` (their `AnonHugePages`, whole: a
/// mapping the kernel merged with a neighbour counts the neighbour's too;
/// 0 when smaps cannot be read). Start-up only: it is how the summary can
/// say what the kernel gave rather than what was asked.
fn transparent_huge_bytes(start: usize, len: usize) -> u64 {
    match std::fs::read_to_string("/proc/self/smaps") {
        Ok(smaps) => huge_bytes_in(&smaps, start, len),
        Err(_) => 0,
    }
}

/// [`transparent_huge_bytes`] of the text of an smaps file.
fn huge_bytes_in(smaps: &str, start: usize, len: usize) -> u64 {
    let end = start.saturating_add(len);
    let mut overlaps = false;
    let mut total = 0u64;
    for line in smaps.lines() {
        // A mapping's first line: "start-end perms offset dev inode path".
        if let Some((range, _)) = line.split_once(' ')
            && let Some((a, b)) = range.split_once('-')
            && let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
        {
            overlaps = a < end && start < b;
            continue;
        }
        if overlaps && let Some(v) = line.strip_prefix("AnonHugePages:") {
            let kb = v.trim().trim_end_matches("kB").trim();
            total += kb.parse::<u64>().unwrap_or(0) * 1024;
        }
    }
    total
}

/// What a ring's region is made of, for the capture summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RingPages {
    /// Bytes of the region.
    pub bytes: u64,
    /// Bytes on reserved hugepages (a ring is on them whole or not at all).
    pub reserved: u64,
    /// Bytes the kernel gave as transparent hugepages (not reserved).
    pub transparent: u64,
    /// Whether transparent hugepages were asked for (`MADV_HUGEPAGE`: no
    /// hugepages reserved and the policy not `Never`).
    pub advised: bool,
}

impl RingPages {
    /// Whether every byte is on reserved hugepages.
    pub fn all_reserved(&self) -> bool {
        self.bytes > 0 && self.reserved == self.bytes
    }

    /// These pages and another ring's, together (`default()` is the
    /// empty set: `and` with it changes nothing).
    pub fn and(self, o: RingPages) -> RingPages {
        RingPages {
            bytes: self.bytes + o.bytes,
            reserved: self.reserved + o.reserved,
            transparent: self.transparent + o.transparent,
            advised: self.advised || o.advised,
        }
    }
}

impl Shared {
    fn pages(&self) -> RingPages {
        let bytes = self.stride as u64 * self.slots + CONTROL_BYTES as u64;
        RingPages {
            bytes,
            reserved: if self.hugepages { bytes } else { 0 },
            transparent: self.transparent_huge_bytes,
            advised: self.advised,
        }
    }
}

/// The capture side of a ring: fills slots in place and commits them.
pub struct Producer {
    shared: Arc<Shared>,
    head: u64,
    cached_tail: u64,
    acquired: bool,
    /// Where the held slot's records start (its area plus its phase).
    data: *mut u8,
    /// Record bytes of every slot committed so far.
    committed_bytes: u64,
    /// For the last `slots` slots: (index, `committed_bytes` when it was
    /// acquired), to add the lengths since the writer's published phase.
    starts: Vec<(u64, u64)>,
    /// The last slot [`Producer::start_file`] placed at phase 0.
    file_started: Option<u64>,
}

// SAFETY: `data` points into the region `shared` keeps alive and is only
// dereferenced through `&mut self` while the producer owns the slot (see
// `slot_mut`); moving the handle to another thread moves that ownership.
unsafe impl Send for Producer {}

impl Producer {
    /// Bytes of records one slot holds.
    pub fn batch_bytes(&self) -> usize {
        self.shared.batch_bytes
    }

    /// Whether the region is backed by reserved hugepages.
    pub fn hugepages(&self) -> bool {
        self.shared.hugepages
    }

    /// What the region is made of.
    pub fn pages(&self) -> RingPages {
        self.shared.pages()
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
        let phase = self.phase_of_head();
        let p = self.shared.slot_ptr(self.head);
        // SAFETY: the slot at `head` lies inside the region and is owned by
        // the producer (head - tail < slots, as in `slot_mut`); its header
        // page holds the phase at PHASE_AT (8-byte aligned, inside the page),
        // and `META_BYTES + phase` is inside the slot (phase < SLOT_ALIGN).
        unsafe {
            (p.add(PHASE_AT) as *mut u64).write(phase as u64);
            self.data = p.add(META_BYTES + phase);
        }
        self.acquired = true;
        true
    }

    /// Where the records of the slot at `head` will start in the writer's
    /// file, modulo [`SLOT_ALIGN`]: from the writer's last published phase
    /// (or the last slot this side started a file with, if newer), plus the
    /// bytes committed since; when those bytes reach what the file takes
    /// before it rotates by size, from the first slot of the next file
    /// instead. 0 when the slot it was published for is too old to know
    /// (the writer then copies one batch).
    fn phase_of_head(&mut self) -> usize {
        let c = self.shared.control();
        let packed = c.phase.load(Ordering::Acquire);
        let left_packed = c.phase_left.load(Ordering::Relaxed);
        let (mut at, mut phase) = (packed >> PHASE_BITS, packed & (SLOT_ALIGN as u64 - 1));
        let tag_mask = (1u64 << (64 - LEFT_BITS)) - 1;
        let mut left = if left_packed >> LEFT_BITS == at & tag_mask {
            left_packed & LEFT_MAX
        } else {
            LEFT_MAX
        };
        if let Some(r) = self.file_started.filter(|&r| r >= at) {
            (at, phase, left) = (r, 0, LEFT_MAX);
        }
        let placed = self.place(at, phase, left);
        self.starts[self.head as usize & self.shared.mask as usize] =
            (self.head, self.committed_bytes);
        placed.map_or(0, |p| (p & (SLOT_ALIGN as u64 - 1)) as usize)
    }

    /// [`Producer::phase_of_head`]'s reckoning (not reduced modulo 4 KiB).
    fn place(&self, at: u64, phase: u64, left: u64) -> Option<u64> {
        let h = self.head;
        let start_of = |k: u64| -> Option<u64> {
            if k == h {
                return Some(self.committed_bytes);
            }
            let (idx, start) = self.starts[k as usize & self.shared.mask as usize];
            (idx == k && k < h).then_some(start)
        };
        let s0 = start_of(at)?;
        let since = self.committed_bytes.wrapping_sub(s0);
        if since < left || left == LEFT_MAX {
            return Some(phase.wrapping_add(since));
        }
        // The file rotates after the first slot that brings it to `left`
        // bytes: the next file starts with the slot after it (at the
        // latest with `head`, whose start is `since` >= `left` bytes on).
        let mut k = at;
        while k < h {
            k += 1;
            let sk = start_of(k)?;
            if sk.wrapping_sub(s0) >= left {
                return Some(self.committed_bytes.wrapping_sub(sk));
            }
        }
        None
    }

    /// The held slot starts a new file of the writer's (a time rotation:
    /// its batch is flagged `ROTATE_BEFORE`): place its records at phase 0,
    /// and those of the slots after it from there until the writer says
    /// otherwise. Call before writing any record into the slot.
    pub fn start_file(&mut self) {
        if !self.acquired {
            return;
        }
        self.file_started = Some(self.head);
        let p = self.shared.slot_ptr(self.head);
        // SAFETY: as in `acquire`: the held slot is the producer's; phase 0
        // puts the records at the start of its record area.
        unsafe {
            (p.add(PHASE_AT) as *mut u64).write(0);
            self.data = p.add(META_BYTES);
        }
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
        // `data` (set by `acquire`) is the held slot's area plus its phase,
        // which leaves `batch_bytes` inside the area (area_bytes >=
        // SLOT_ALIGN + batch_bytes).
        unsafe {
            let meta = &mut *(p as *mut BatchMeta);
            let data = std::slice::from_raw_parts_mut(self.data, self.shared.batch_bytes);
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
        let len = self
            .slot_mut()
            .0
            .records_len
            .min(self.shared.batch_bytes as u64);
        self.committed_bytes = self.committed_bytes.wrapping_add(len);
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

/// A committed slot as the consumer may change it: the whole record area,
/// for a writer that writes the batch from the slot (see the module's
/// "records at the file's phase").
pub struct BatchMut<'a> {
    /// What the slot holds.
    pub meta: &'a BatchMeta,
    /// The slot's record area: [`SLOT_ALIGN`]-aligned, room for the phase,
    /// the records and the zeros to the next [`SLOT_ALIGN`] boundary.
    pub area: &'a mut [u8],
    /// The records are `area[at..at + meta.records_len]` (`at` < [`SLOT_ALIGN`]).
    pub at: usize,
}

/// The phase the producer wrote in the header page of the slot at `p`
/// (when it acquired it), clamped below [`SLOT_ALIGN`].
///
/// # Safety
/// `p` is the start of a committed slot the consumer owns (see `peek`).
unsafe fn slot_phase(p: *const u8) -> usize {
    // SAFETY: the caller's slot starts with its header page, which holds
    // the phase at PHASE_AT (8-byte aligned, inside the page).
    (unsafe { *(p.add(PHASE_AT) as *const u64) } as usize).min(SLOT_ALIGN - 1)
}

/// The writer side of a ring: reads committed slots in place and releases them.
pub struct Consumer {
    shared: Arc<Shared>,
    tail: u64,
    cached_head: u64,
    /// `peek` returned the slot at `tail` and it has not been released.
    peeked: bool,
    /// The slot at `tail`, lent ([`Consumer::lend`]); released (and
    /// changed) only once every other `Arc` of it is gone.
    lent: Option<Arc<SlotLoan>>,
}

/// A committed slot's record area lent out for reading ([`Consumer::lend`]),
/// to another thread too (the writer's index thread): the slot is neither
/// released to the producer nor given out writable until every `Arc` of
/// the loan is dropped.
pub struct SlotLoan {
    /// Keeps the mapping alive.
    _shared: Arc<Shared>,
    area: *const u8,
    len: usize,
}

// SAFETY: the loan only reads slot memory, which the mapping held by
// `_shared` keeps alive; while any `Arc<SlotLoan>` lives, the consumer that
// made it neither releases the slot (so the producer cannot write it) nor
// hands out `&mut` views of it (`wait_loans` in `release` and `peek_mut`),
// so no thread writes the bytes while they are read.
unsafe impl Send for SlotLoan {}
// SAFETY: as above: every access through a shared `SlotLoan` is a read.
unsafe impl Sync for SlotLoan {}

impl AsRef<[u8]> for SlotLoan {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `area..area + len` is the lent slot's record area, inside
        // the live mapping and not written while the loan exists (see the
        // `Send` impl).
        unsafe { std::slice::from_raw_parts(self.area, self.len) }
    }
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
        // The phase at PHASE_AT was written by the producer when it
        // acquired the slot (before the commit), and is clamped here.
        unsafe {
            let meta = &*(p as *const BatchMeta);
            let len = (meta.records_len as usize).min(self.shared.batch_bytes);
            let at = slot_phase(p);
            let records = std::slice::from_raw_parts(p.add(META_BYTES + at), len);
            Some(Batch { meta, records })
        }
    }

    /// [`Consumer::peek`] with the slot's whole record area, writable: the
    /// writer may put bytes in front of the records and after them (never
    /// in them) before writing the area out. The producer does not touch
    /// the slot until [`Consumer::release`].
    #[inline]
    pub fn peek_mut(&mut self) -> Option<BatchMut<'_>> {
        self.wait_loans();
        self.peek()?;
        let p = self.shared.slot_ptr(self.tail);
        // SAFETY: as in `peek` (which just succeeded, so tail < head and the
        // slot is the consumer's until `release`); the header page and the
        // record area do not overlap (META_BYTES + area_bytes = stride),
        // and `&mut self` makes these the only references to the slot.
        unsafe {
            let meta = &*(p as *const BatchMeta);
            let len = (meta.records_len as usize).min(self.shared.batch_bytes);
            let at = slot_phase(p);
            let area = std::slice::from_raw_parts_mut(p.add(META_BYTES), self.shared.area_bytes);
            debug_assert!(at + len <= area.len());
            Some(BatchMut { meta, area, at })
        }
    }

    /// Lend the peeked slot's whole record area for reading, as an `Arc`
    /// that may go to other threads; `None` if no slot is peeked.
    /// [`Consumer::release`] and [`Consumer::peek_mut`] wait until every
    /// clone of it is dropped.
    pub fn lend(&mut self) -> Option<Arc<SlotLoan>> {
        if !self.peeked || self.tail >= self.cached_head {
            return None;
        }
        if let Some(l) = &self.lent {
            return Some(l.clone());
        }
        let p = self.shared.slot_ptr(self.tail);
        // SAFETY: the peeked slot lies inside the region; its record area
        // starts META_BYTES in and is area_bytes long (the stride's rest).
        let area = unsafe { p.add(META_BYTES) } as *const u8;
        let l = Arc::new(SlotLoan {
            _shared: self.shared.clone(),
            area,
            len: self.shared.area_bytes,
        });
        self.lent = Some(l.clone());
        Some(l)
    }

    /// Wait (spin, yield, then sleep) until the lent slot, if any, is back.
    fn wait_loans(&mut self) {
        let Some(mut l) = self.lent.take() else {
            return;
        };
        let mut polls: u32 = 0;
        // `get_mut` succeeds once ours is the only `Arc`, and synchronises
        // with the other holders' drops (acquire), so their reads happen
        // before the slot is written again.
        while Arc::get_mut(&mut l).is_none() {
            polls = polls.saturating_add(1);
            if polls < 64 {
                std::hint::spin_loop();
            } else if polls < 1024 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(std::time::Duration::from_micros(50));
            }
        }
    }

    /// Say where the records of the next slot (the one after the slot last
    /// peeked, or the first one) would start in the writer's file, modulo
    /// [`SLOT_ALIGN`], and how many bytes that file takes before it
    /// rotates by size (`None`: no size rotation); the producer places the
    /// records of the slots it acquires from then on accordingly.
    pub fn publish_phase(&self, phase: usize, bytes_to_rotation: Option<u64>) {
        let next = self.tail + u64::from(self.peeked);
        let tag = next & ((1u64 << (64 - LEFT_BITS)) - 1);
        let left = bytes_to_rotation.map_or(LEFT_MAX, |b| b.min(LEFT_MAX - 1));
        let c = self.shared.control();
        c.phase_left
            .store((tag << LEFT_BITS) | left, Ordering::Relaxed);
        let packed = (next << PHASE_BITS) | (phase & (SLOT_ALIGN - 1)) as u64;
        c.phase.store(packed, Ordering::Release);
    }

    /// Return the slot last seen by [`Consumer::peek`] to the producer.
    #[inline]
    pub fn release(&mut self) {
        // A release with no peeked slot (a second release, or one before any
        // peek) is a no-op in every build: it must never free a committed
        // slot the writer has not read.
        self.wait_loans();
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

    /// Whether the region is backed by reserved hugepages.
    pub fn hugepages(&self) -> bool {
        self.shared.hugepages
    }

    /// What the region is made of.
    pub fn pages(&self) -> RingPages {
        self.shared.pages()
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

    /// The producer places each slot's records at the phase the writer
    /// published plus the bytes committed since; the area is aligned and
    /// has room for the phase, the records and the zeros after them.
    #[test]
    fn records_start_at_the_published_phase() {
        let (mut p, mut c) = ring(cfg(4)).unwrap();
        let put = |p: &mut Producer, len: usize, tag: u8| {
            assert!(p.acquire());
            let (meta, data) = p.slot_mut();
            data[..len].fill(tag);
            meta.records_len = len as u64;
            p.commit();
        };
        // Nothing published: phase 0 for the first slot, then the lengths add.
        put(&mut p, 100, 1);
        put(&mut p, 5000, 2);
        let want = |len_before: usize| len_before % SLOT_ALIGN;
        let b = c.peek_mut().unwrap();
        assert_eq!(b.at, 0);
        assert_eq!(b.area.as_ptr().align_offset(SLOT_ALIGN), 0);
        assert!(b.area.len() >= SLOT_ALIGN + (1 << 16));
        assert!(b.area[..100].iter().all(|&x| x == 1));
        c.publish_phase(700, None); // the writer's file: slot 1 starts at 700
        c.release();
        let b = c.peek_mut().unwrap();
        assert_eq!(b.at, want(100), "slot 1 was placed before the publication");
        assert!(b.area[b.at..b.at + 5000].iter().all(|&x| x == 2));
        c.release();
        // Slot 2 is acquired after it: 700 + 5000 (slot 1's length).
        put(&mut p, 3, 3);
        put(&mut p, 9, 4);
        let b = c.peek().unwrap();
        assert_eq!(b.records, &[3, 3, 3]);
        assert_eq!(c.peek_mut().unwrap().at, (700 + 5000) % SLOT_ALIGN);
        c.publish_phase(4095, None);
        c.release();
        let b = c.peek_mut().unwrap();
        assert_eq!(b.at, (700 + 5000 + 3) % SLOT_ALIGN);
        c.release();
        // Published for slot 3, already placed: slot 4 adds its length.
        put(&mut p, 1, 5);
        assert_eq!(c.peek_mut().unwrap().at, (4095 + 9) % SLOT_ALIGN);
        assert_eq!(c.peek().unwrap().records, &[5]);
        c.release();
        // A publication for a slot whose start the producer no longer
        // remembers (older than the ring): phase 0, never a wrong place.
        let (mut p, mut c) = ring(cfg(2)).unwrap();
        c.publish_phase(123, None); // for slot 0, not yet acquired: taken as is
        for i in 0..5u8 {
            put(&mut p, 10, i);
            let at = c.peek_mut().unwrap().at;
            assert_eq!(
                at,
                if i < 3 { 123 + 10 * i as usize } else { 0 },
                "slot {i}"
            );
            c.release();
        }
        put(&mut p, 10, 9);
        assert_eq!(c.peek_mut().unwrap().at, 0);
    }

    /// With the bytes the writer's file takes before it rotates by size,
    /// the first slot of the next file is placed at phase 0 and those after
    /// it from there; a slot that starts a file by time likewise.
    #[test]
    fn the_next_file_starts_at_phase_0() {
        let (mut p, mut c) = ring(cfg(8)).unwrap();
        let put = |p: &mut Producer, len: usize, new_file: bool| {
            assert!(p.acquire());
            if new_file {
                p.start_file();
            }
            let (meta, data) = p.slot_mut();
            data[..len].fill(7);
            meta.records_len = len as u64;
            p.commit();
        };
        // Slot 0 at 100; the file rotates once 10 000 more bytes are in it.
        c.publish_phase(100, Some(10_000));
        put(&mut p, 6_000, false); // slot 0: 100
        put(&mut p, 6_000, false); // slot 1: 6 100 (the file reaches 12 000 >= 10 000)
        put(&mut p, 500, false); // slot 2: a new file, 0
        put(&mut p, 300, false); // slot 3: 500
        put(&mut p, 300, true); // slot 4: a new file by time, 0
        put(&mut p, 300, false); // slot 5: 300
        let mut ats = Vec::new();
        while let Some(b) = c.peek_mut() {
            ats.push(b.at);
            c.release();
        }
        assert_eq!(ats, [100, 6_100 % SLOT_ALIGN, 0, 500, 0, 300]);
        // The writer's word for a slot after the one started by time wins.
        c.publish_phase(40, None);
        put(&mut p, 10, false);
        assert_eq!(c.peek_mut().unwrap().at, 40);
    }

    /// A lent slot is released (and given out writable) only once every
    /// `Arc` of the loan is gone, wherever it went.
    #[test]
    fn a_lent_slot_comes_back_only_when_the_loan_ends() {
        let (mut p, mut c) = ring(cfg(2)).unwrap();
        for i in 0..2u8 {
            assert!(p.acquire());
            let (meta, data) = p.slot_mut();
            data[..4].fill(i + 1);
            meta.records_len = 4;
            p.commit();
        }
        assert!(c.lend().is_none(), "nothing peeked, nothing lent");
        let at = c.peek().unwrap().records.as_ptr() as usize;
        let loan = c.lend().unwrap();
        let base = (*loan).as_ref().as_ptr() as usize;
        assert_eq!(&(*loan).as_ref()[at - base..at - base + 4], &[1, 1, 1, 1]);
        let held = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let h2 = held.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(30));
            let first = (*loan).as_ref()[at - base];
            h2.store(false, std::sync::atomic::Ordering::Release);
            drop(loan);
            first
        });
        c.release();
        assert!(
            !held.load(std::sync::atomic::Ordering::Acquire),
            "released while the loan was held"
        );
        assert_eq!(t.join().unwrap(), 1);
        assert!(p.acquire(), "the slot is free again");
        assert_eq!(c.peek().unwrap().records, &[2, 2, 2, 2]);
    }

    /// Without reserved hugepages, `Try` maps a region on a 2 MiB boundary
    /// (for transparent hugepages) that works as any other.
    #[test]
    fn a_ring_without_reserved_hugepages_starts_on_a_2_mib_boundary() {
        let (mut p, mut c) = ring(RingConfig {
            hugepages: HugePages::Try,
            ..cfg(4)
        })
        .unwrap();
        if !c.hugepages() {
            assert_eq!(p.shared.base.align_offset(HUGEPAGE_BYTES), 0);
        }
        assert!(p.acquire());
        let (meta, data) = p.slot_mut();
        data[..3].copy_from_slice(b"abc");
        meta.records_len = 3;
        p.commit();
        assert_eq!(c.peek().unwrap().records, b"abc");
        let b = c.peek_mut().unwrap();
        assert_eq!(b.area.as_ptr().align_offset(SLOT_ALIGN), 0);
    }

    #[test]
    fn a_ring_says_what_pages_it_is_on() {
        let (p, c) = ring(RingConfig {
            hugepages: HugePages::Never,
            ..cfg(4)
        })
        .unwrap();
        let pages = p.pages();
        assert_eq!(pages, c.pages());
        assert_eq!(pages.bytes, region_bytes(4, cfg(4).batch_bytes as u64));
        assert!(pages.reserved == 0 && !pages.advised);
        assert_eq!(pages.transparent, 0, "4 KiB pages were asked for");
        let (p, _c) = ring(RingConfig {
            hugepages: HugePages::Try,
            ..cfg(4)
        })
        .unwrap();
        let pages = p.pages();
        assert!(pages.transparent <= pages.bytes);
        assert_eq!(pages.advised, !pages.all_reserved());
        let sum = pages.and(RingPages {
            bytes: 10,
            reserved: 0,
            transparent: 4,
            advised: true,
        });
        assert_eq!(sum.bytes, pages.bytes + 10);
        assert_eq!(sum.transparent, pages.transparent + 4);
        assert!(!sum.all_reserved() && sum.advised);
        assert_eq!(sum.reserved, pages.reserved);
    }

    #[test]
    fn transparent_huge_bytes_are_read_from_the_mappings_that_overlap() {
        let smaps = "\
7f0000000000-7f0000600000 rw-p 00000000 00:00 0
Size:               6144 kB
AnonHugePages:      4096 kB
7f0000600000-7f0000800000 rw-p 00000000 00:00 0
AnonHugePages:      2048 kB
7f0000800000-7f0000a00000 r--p 00000000 08:01 42   /usr/lib/x.so
AnonHugePages:         0 kB
";
        let mib = 1 << 20;
        let base = 0x7f00_0000_0000usize;
        assert_eq!(huge_bytes_in(smaps, base, 6 * mib), 4 * mib as u64);
        // Both anonymous mappings overlap: both count (a mapping is counted
        // whole, so `map_region` takes the difference across its touch).
        assert_eq!(huge_bytes_in(smaps, base + mib, 6 * mib), 6 * mib as u64);
        assert_eq!(huge_bytes_in(smaps, base + 7 * mib, mib), 2 * mib as u64);
        assert_eq!(huge_bytes_in(smaps, 0x1000, 4096), 0);
        assert_eq!(huge_bytes_in("", base, mib), 0);
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

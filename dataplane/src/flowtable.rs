//! The per-queue bidirectional flow table.
//!
//! One table per receive queue, owned by that queue's worker: no locks, no
//! sharing. Everything is allocated in [`FlowTable::new`]; the per-packet
//! path ([`FlowTable::update`]) never allocates, never grows the table, never
//! formats and never returns a `Result`.
//!
//! # Layout (built for DRAM: one random DRAM line per packet, prefetched)
//!
//! `capacity` slots (a power of two) in `capacity / 8` **buckets of
//! [`WAYS`] = 8 ways**. Four fixed arrays, indexed by bucket or by slot
//! (`bucket * 8 + way`):
//!
//! | array   | per entry | what                                             | touched by            |
//! |---------|----------:|--------------------------------------------------|-----------------------|
//! | buckets | 16 B (a bucket) | 8 tags of 16 bits (15 hash bits + a used bit; 0 = empty), four buckets to a line: 2 B a slot, so the array stays in the last-level cache (4 MiB at 2^21 slots) | every lookup |
//! | hot     | 64 B (a line) | the flow's hash and **check**, first/last ns, packets (u32) and bytes per direction, TCP flags, FIN bits, payload-seen and linger bits (size asserted at compile time) | every packet of the flow |
//! | keys    | 64 B (a line) | the canonical key as six words, the linger start | flow start; per packet only for general keys (below) and during a TCP linger; export |
//! | cold    | 40 B      | initiator, first payload bytes per direction, bytes not captured per direction | flow start, a direction's first payload, a frame captured shorter than its wire length, export |
//!
//! **Compact keys** — IPv4, no VLAN tag, not a fragment: nearly all traffic
//! — are identified by the hot line alone. Their 104 bits (addresses, ports,
//! protocol) are re-coded by a two-round Feistel network on 63-bit halves
//! ([`compact_image`], a bijection) into the pair (hash, check): the hash
//! picks the buckets and gives the tag, the hot line holds both, and equal
//! hash and check means an equal key, exactly — no key line is read. Other
//! keys (IPv6, VLAN-tagged, fragments) hash with [`hash_words`], have check
//! 0, and compare the key line too (two DRAM lines per packet for them).
//! So a packet of a compact flow reads its bucket's tags (in cache) and
//! writes its hot line (one DRAM miss, prefetched a burst ahead); the key
//! line is written once and read at export.
//!
//! A key has **two candidate buckets** (from different bits of its 63-bit
//! hash). A new flow takes a free way of its **first** bucket, else of its
//! second; when both are full, one flow of the first (then the second)
//! bucket moves to a free way of its own other bucket (one cuckoo step,
//! counted in `relocated`) and the new flow takes its way. So most flows
//! sit where a lookup looks first: a lookup reads the first bucket's tags,
//! then the second's only when the first has no matching tag (at most
//! [`PROBE_MAX`] = 16 slots, never more), and reads a slot's hot line only
//! on a tag match (a false 15-bit match costs one more hot line and is
//! rejected there). Removal just clears the tag.
//!
//! [`FlowTable::update_burst`] runs in stages per 64 packets: prefetch every
//! packet's first tag line ([`FlowTable::prefetch_bucket`]), find each
//! packet's slot from the tags alone and prefetch its hot line (and a
//! general key's key line; or the second tag line) ([`FlowTable::stage`]), then update in order starting
//! from those slots, each checked again ([`FlowTable::apply`]). The capture
//! worker calls the stages itself, spread over time: the tag line as soon as
//! a frame's hash is known, the stage at the end of the burst, and the
//! updates one burst later, so the misses overlap a burst of other work.
//!
//! Memory: the arrays are anonymous mappings from 2 MiB hugepages when
//! they are reserved (`vm.nr_hugepages`), else normal pages with
//! `MADV_HUGEPAGE`; all fixed at creation ([`FlowTable::memory_bytes`]).
//! Zero bytes are the empty state, so nothing is written at creation: the
//! worker calls [`FlowTable::first_touch`] on its own core so the pages are
//! local to that core and the capture path takes no page fault.
//!
//! The hash is [`flow_hash`] (63 bits: the compact image's half, or a
//! multiply-xorshift mix over the six words a general key is stored as), so
//! a frame's key is encoded once. It is deliberately *not* `symmetric_hash` (which
//! picks the queue): inside one queue the queue hash's low bits are all
//! equal, so indexing the table with it would use a fraction of the slots.
//! The worker computes it once per frame and hands it to flow sampling and
//! the table ([`BurstPacket::hash`]).
//!
//! # When the table is full (eviction policy)
//!
//! A new flow whose two buckets are both full, and none of whose 16 flows
//! can move to its other bucket, evicts the flow of those 16 slots with the
//! oldest last-packet time (if that flow was already past
//! its idle timeout it ends as `Idle`, otherwise as `Evicted`, counted in
//! `evicted`); this can happen before the very last slot is taken. The
//! table never grows and never refuses a packet.
//!
//! # Expiry (the packet clock)
//!
//! Time is an argument: the table's clock is the largest packet timestamp it
//! has seen, or the `now_ns` given to [`FlowTable::tick`]. A flow ends when
//!
//! * no packet came for `idle_ns` ([`EndReason::Idle`]);
//! * it has lasted `active_ns` since its record started: the record is
//!   exported ([`EndReason::Active`]) and the flow continues in the same slot
//!   with counters from zero (IPFIX delta semantics); the same happens
//!   early when a direction's packet count this period reaches `u32::MAX`
//!   (the hot line counts packets in 32 bits: ≈ 72 s of one 64-byte flow
//!   at 40 Gb/s);
//! * TCP: `linger_ns` after an RST, or after FIN was seen in both directions
//!   (or in the only direction seen so far) ([`EndReason::EndOfFlow`]);
//!   packets during the linger still count to the flow;
//! * the table needs its slot ([`EndReason::Evicted`]);
//! * the input ends ([`FlowTable::drain`], [`EndReason::EndOfInput`]).
//!
//! A packet of a flow that is already due ends the old record first, then
//! starts a new one. Flows that simply stop are ended by
//! [`FlowTable::expire_step`]: a cursor that visits a fixed number of
//! buckets per call and wraps round the table; the worker calls it once per
//! burst and per idle poll (with 1 to [`EXPIRE_STEP_BUCKETS`] buckets, paced
//! to one round per second of packet time), so the expiry work of one burst
//! is bounded (`EXPIRE_STEP_BUCKETS * WAYS` = 32 slots) whatever the table's size, and
//! a flow ends at most one cursor round after it is due (two when a cuckoo
//! step moved it behind the cursor in that round). [`FlowTable::tick`]
//! sweeps the whole table at once, for offline use (`linecap flows`).
//!
//! Records ended on the packet path go into a bounded, preallocated export
//! queue ([`FlowTable::take_expired`] empties it); when it is full the record
//! is dropped and counted (`export_drops`). Records ended by `expire_step`,
//! `tick` and `drain` go straight to the caller's sink.
//!
//! # What is tracked
//!
//! Every frame with an IP header: TCP, UDP, SCTP (with ports), ICMP, ICMPv6
//! and other protocols (ports 0), and non-first fragments as their own
//! `frag` flows (ports 0) — the semantics of `wire::flow`. Non-IP, truncated
//! and malformed frames are counted (`non_ip`, `truncated`, `malformed`) and
//! not tracked.
//!
//! # Bytes
//!
//! `bytes` is the sum of the `wire_len` the caller passes, `captured_bytes`
//! the sum of `cap_len`. The table adds nothing: the convention (with or
//! without the 4-byte FCS) is the caller's and is documented where the caller
//! is (`linecap flows` adds 4 per frame for ERF input, as ERF's `wlen` and
//! the reference tables count it; NIC queues pass the frame length without
//! FCS).

use std::marker::PhantomData;

use bytemuck::{Pod, Zeroable};
use linecap_wire::applabel::{FirstPayload, PayloadHead};
use linecap_wire::flow::{
    CommonFlow, FlowKey, IpFamily, PacketInfo, Parsed, VLAN_DEPTH_MAX, VlanStack,
};
use linecap_wire::ipv4::protocol;
use linecap_wire::tcp::flags;
use memmap2::{Advice, MmapMut, MmapOptions};

use crate::prefetch::{prefetch, prefetch_addr};
use crate::ring::HugePages;

const HUGEPAGE_BYTES: usize = 2 << 20;

/// Smallest capacity accepted.
pub const CAPACITY_MIN: usize = 64;
/// Largest capacity accepted (2^30 slots).
pub const CAPACITY_MAX: usize = 1 << 30;

/// Why a flow record ended; the values are IPFIX `flowEndReason` (IE 136).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[repr(u8)]
pub enum EndReason {
    /// No packet for the idle timeout.
    #[default]
    Idle = 1,
    /// The active timeout: a long flow exported periodically; it continues.
    Active = 2,
    /// TCP FIN (both directions) or RST, after the linger.
    EndOfFlow = 3,
    /// The input ended (end of file, shutdown).
    EndOfInput = 4,
    /// The table needed the slot.
    Evicted = 5,
}

impl EndReason {
    /// A short lowercase name (`idle`, `active`, `end`, `input_end`, `evicted`).
    pub fn name(self) -> &'static str {
        match self {
            EndReason::Idle => "idle",
            EndReason::Active => "active",
            EndReason::EndOfFlow => "end",
            EndReason::EndOfInput => "input_end",
            EndReason::Evicted => "evicted",
        }
    }
}

/// Direction index into the per-direction arrays of a [`FlowRecord`].
pub const A_TO_B: usize = 0;
/// Direction index: from endpoint b to endpoint a.
pub const B_TO_A: usize = 1;

/// One flow's record, as exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowRecord {
    /// The canonical key (endpoint a is the smaller `(address, port)`).
    pub key: FlowKey,
    /// Earliest packet time of this record (ns since the epoch).
    pub first_ns: u64,
    /// Latest packet time of this record.
    pub last_ns: u64,
    /// Packets `[a→b, b→a]`.
    pub packets: [u64; 2],
    /// Wire bytes `[a→b, b→a]` (the caller's `wire_len`; see the module docs).
    pub bytes: [u64; 2],
    /// Captured bytes `[a→b, b→a]`.
    pub captured_bytes: [u64; 2],
    /// TCP flags OR-ed `[a→b, b→a]` (0 for other protocols).
    pub tcp_flags: [u8; 2],
    /// Whether endpoint a sent the flow's first packet (the initiator). For
    /// records after an active-timeout export this is still the side that
    /// started the flow.
    pub a_initiated: bool,
    /// Why the record ended.
    pub end_reason: EndReason,
    /// Cold part: the first payload (size + first ≤ 4 bytes) of each
    /// direction, kept once per direction for application labels
    /// (`linecap_wire::applabel`); it survives active-timeout exports.
    pub first_payload: FirstPayload,
}

impl FlowRecord {
    /// Total packets in both directions.
    pub fn total_packets(&self) -> u64 {
        self.packets[A_TO_B] + self.packets[B_TO_A]
    }

    /// Total wire bytes in both directions.
    pub fn total_bytes(&self) -> u64 {
        self.bytes[A_TO_B] + self.bytes[B_TO_A]
    }
}

/// Timeouts, in ns of packet time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// A flow with no packet for this long ends.
    pub idle_ns: u64,
    /// A flow lasting this long is exported and continues.
    pub active_ns: u64,
    /// After RST, or FIN in both directions, the flow ends this much later.
    pub linger_ns: u64,
}

impl Default for Timeouts {
    /// 60 s idle, 300 s active, 2 s linger.
    fn default() -> Self {
        Timeouts {
            idle_ns: 60_000_000_000,
            active_ns: 300_000_000_000,
            linger_ns: 2_000_000_000,
        }
    }
}

/// The table's counters (plain integers; the worker publishes them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowCounters {
    /// IP frames counted into flows.
    pub packets: u64,
    /// Frames without an IP header (not tracked).
    pub non_ip: u64,
    /// Frames cut before the IP header was complete (not tracked).
    pub truncated: u64,
    /// Frames with an inconsistent header before or in IP (not tracked).
    pub malformed: u64,
    /// Flows in the table now.
    pub active: u64,
    /// Flows created.
    pub created: u64,
    /// Records ended by the idle timeout.
    pub expired_idle: u64,
    /// Records exported by the active timeout (the flow continues).
    pub expired_active: u64,
    /// Records ended by TCP FIN/RST.
    pub expired_end: u64,
    /// Records evicted because the table needed the slot.
    pub evicted: u64,
    /// Records ended by [`FlowTable::drain`].
    pub expired_input_end: u64,
    /// Records lost because the export queue was full.
    pub export_drops: u64,
    /// Flows moved to their other bucket to make room for a new flow (one
    /// cuckoo step; not an end of anything).
    pub relocated: u64,
}

/// Set in every used way's tag (0 = empty).
const TAG_USED: u16 = 1 << 15;
const FIN_A: u8 = 1;
const FIN_B: u8 = 2;

/// Ways per bucket: one bucket's eight 16-bit tags are 16 bytes, four
/// buckets to a cache line.
pub const WAYS: usize = 8;
/// Slots a lookup may look at: the ways of the key's two buckets.
pub const PROBE_MAX: usize = 2 * WAYS;

/// One bucket: the tags of its [`WAYS`] slots (15 bits of the flow hash
/// with [`TAG_USED`] set; 0 = empty), 16 bytes. Tags are small so that the
/// whole tag array stays in the last-level cache (2 bytes a slot: 4 MiB at
/// 2^21 slots) and a lookup's first step is a cache hit, not a DRAM
/// miss; a lookup touches a slot's hot line only on a tag match (a false
/// match, about 8 in 2^15 lookups, costs one more hot line and is then
/// rejected by the full hash and check there).
#[repr(C, align(16))]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Bucket {
    tags: [u16; WAYS],
}

/// The per-packet part of a flow: one 64-byte aligned cache line, the only
/// line a packet of a compact flow reads or writes besides its tags (but
/// for a direction's first payload, a cut frame or a TCP linger). It
/// holds the key's check (so a compact flow is identified by its tag and
/// this line alone), the counters, the TCP state and the first-payload bits.
#[repr(C, align(64))]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Hot {
    /// The flow's [`flow_hash`] (its buckets; with the check, a compact key).
    hash: u64,
    /// A compact flow's check: the other half of its key's image
    /// ([`compact_image`]) with [`CHECK_COMPACT`] set, so that hash and check
    /// together are the key. 0: a general flow, whose key is compared in its
    /// [`KeyRec`].
    check: u64,
    first_ns: u64,
    last_ns: u64,
    bytes: [u64; 2],
    /// Packets this period per direction; a period whose count would pass
    /// `u32::MAX` ends there (exported as `Active`, counted in
    /// `expired_active`) and the flow goes on in a new one.
    packets: [u32; 2],
    /// TCP flags OR-ed `[a→b, b→a]` (this period).
    tcp_flags: [u8; 2],
    /// FIN seen per direction (`FIN_A`, `FIN_B`).
    fins: u8,
    /// Bit `d`: direction `d`'s first payload is in the cold part (a flow's
    /// later packets never touch the cold line, issue 18); [`LINGER`]: the
    /// TCP linger started (its start time is in the [`KeyRec`]).
    state: u8,
    _pad: [u8; 4],
}

/// The key line: the canonical key as six words and the linger start.
/// Written when the flow starts; read per packet only by general flows
/// (IPv6, VLAN-tagged, fragments) for the key comparison and by packets
/// during a TCP linger, else only at export.
#[repr(C, align(64))]
#[derive(Clone, Copy, Pod, Zeroable)]
struct KeyRec {
    key: [u64; 6],
    /// Time the TCP linger started (valid when the hot line's [`LINGER`] bit
    /// is set).
    linger_from_ns: u64,
    _pad: u64,
}

/// The cold part of a flow: written when the flow starts, read when its
/// record is exported, never touched by the flow's later packets except a
/// direction's first payload and frames captured shorter than their wire
/// length. Fields that are set once per flow (such as first payload bytes
/// for an application classifier) belong here, not in [`Hot`].
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Cold {
    /// Whether endpoint a sent the flow's first packet.
    a_initiated: u8,
    /// First payload per direction `[a→b, b→a]`: bytes captured of the first 4.
    payload_captured: [u8; 2],
    _reserved: [u8; 5],
    /// First payload size per direction (0 = none yet).
    payload_len: [u32; 2],
    /// First ≤ 4 payload bytes per direction.
    payload_bytes: [[u8; 4]; 2],
    /// Σ (wire length − captured length) per direction this period, in
    /// wrapping arithmetic (exact for any lengths): captured bytes are
    /// `bytes − uncaptured`, so a frame whose captured length equals its
    /// wire length never touches this line (offline ERF input, whose wire
    /// length counts the FCS, touches it with every frame).
    uncaptured: [u64; 2],
}

const _: () = assert!(size_of::<Bucket>() == 16 && align_of::<Bucket>() == 16);
const _: () = assert!(size_of::<Hot>() == 64 && align_of::<Hot>() == 64);
const _: () = assert!(size_of::<KeyRec>() == 64 && align_of::<KeyRec>() == 64);
const _: () = assert!(size_of::<Cold>() == 40);

/// The hot line's `state` bit: the TCP linger started.
const LINGER: u8 = 4;
/// Set in every compact flow's check (a general flow's is 0).
const CHECK_COMPACT: u64 = 1 << 63;
/// The low 63 bits.
const M63: u64 = !(1 << 63);

/// A flow key as six words: the table's stored form (plain data, so the
/// arrays can live in an anonymous mapping) and what it compares.
#[inline]
fn encode_key(key: &FlowKey) -> [u64; 6] {
    #[inline(always)]
    fn halves(b: &[u8; 16]) -> (u64, u64) {
        let mut lo = [0u8; 8];
        let mut hi = [0u8; 8];
        lo.copy_from_slice(&b[..8]);
        hi.copy_from_slice(&b[8..]);
        (u64::from_le_bytes(lo), u64::from_le_bytes(hi))
    }
    let mut vl = 0u64;
    for (i, v) in key.vlan_ids().iter().enumerate() {
        vl |= u64::from(*v) << (16 * i);
    }
    let misc = u64::from(key.vlan_depth())
        | u64::from(key.proto()) << 8
        | u64::from(key.is_fragment()) << 16
        | u64::from(key.family() as u8) << 24
        | u64::from(key.port_a()) << 32
        | u64::from(key.port_b()) << 48;
    let (a0, a1) = halves(key.addr_a_bytes());
    let (b0, b1) = halves(key.addr_b_bytes());
    [vl, misc, a0, a1, b0, b1]
}

/// The [`FlowKey`] of a stored key (export path only).
fn decode_key(w: &[u64; 6]) -> FlowKey {
    let [vl, misc, a0, a1, b0, b1] = *w;
    let depth = misc as u8;
    let mut vlans = VlanStack::new();
    for i in 0..usize::from(depth) {
        let id = if i < VLAN_DEPTH_MAX {
            (vl >> (16 * i)) as u16
        } else {
            0
        };
        vlans.push(id);
    }
    let family = if (misc >> 24) as u8 == IpFamily::V6 as u8 {
        IpFamily::V6
    } else {
        IpFamily::V4
    };
    let mut a = [0u8; 16];
    a[..8].copy_from_slice(&a0.to_le_bytes());
    a[8..].copy_from_slice(&a1.to_le_bytes());
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&b0.to_le_bytes());
    b[8..].copy_from_slice(&b1.to_le_bytes());
    // Stored keys are canonical (a <= b), so this gives the same key back.
    FlowKey::from_endpoints(
        vlans,
        (misc >> 8) as u8,
        (misc >> 16) as u8 != 0,
        family,
        a,
        (misc >> 32) as u16,
        b,
        (misc >> 48) as u16,
    )
    .0
}

/// The two candidate buckets of a key with this [`flow_hash`] (always
/// different).
#[inline(always)]
fn bucket_pair(hash: u64, bmask: usize) -> (usize, usize) {
    let b1 = hash as usize & bmask;
    let mut b2 = ((hash >> 32) ^ (hash >> 13)) as usize & bmask;
    if b2 == b1 {
        b2 = b1 ^ 1;
    }
    (b1, b2)
}

/// A fixed array of plain-data records in an anonymous mapping: from 2 MiB
/// hugepages when the policy allows and the kernel has them reserved, else
/// from normal pages with `MADV_HUGEPAGE` (transparent hugepages where
/// enabled). Zero bytes are the empty state; pages are not touched here, so
/// the first thread to write them (the worker, see
/// [`FlowTable::first_touch`]) gets them on its own NUMA node.
struct Region<T> {
    map: MmapMut,
    len: usize,
    huge: bool,
    _t: PhantomData<T>,
}

impl<T: Pod> Region<T> {
    fn new(len: usize, policy: HugePages) -> std::io::Result<Self> {
        let bytes = (len * size_of::<T>()).max(1);
        if policy != HugePages::Never {
            let huge_len = bytes.next_multiple_of(HUGEPAGE_BYTES);
            match MmapOptions::new().len(huge_len).huge(Some(21)).map_anon() {
                Ok(map) => {
                    return Ok(Region {
                        map,
                        len,
                        huge: true,
                        _t: PhantomData,
                    });
                }
                Err(e) if policy == HugePages::Require => {
                    return Err(std::io::Error::new(
                        e.kind(),
                        format!(
                            "no hugepages for a {huge_len}-byte flow table array (vm.nr_hugepages?): {e}"
                        ),
                    ));
                }
                Err(_) => {}
            }
        }
        let map = MmapOptions::new().len(bytes).map_anon()?;
        if policy != HugePages::Never {
            // Best effort: transparent hugepages in `madvise` mode.
            let _ = map.advise(Advice::HugePage);
        }
        Ok(Region {
            map,
            len,
            huge: false,
            _t: PhantomData,
        })
    }

    #[inline(always)]
    fn get(&self) -> &[T] {
        bytemuck::cast_slice(self.map.get(..self.len * size_of::<T>()).unwrap_or(&[]))
    }

    #[inline(always)]
    fn get_mut(&mut self) -> &mut [T] {
        let n = self.len * size_of::<T>();
        bytemuck::cast_slice_mut(self.map.get_mut(..n).unwrap_or(&mut []))
    }

    fn bytes(&self) -> usize {
        self.map.len()
    }

    /// Fault every page in now (write one byte per 4 KiB).
    fn touch(&mut self) {
        let len = self.map.len();
        for i in (0..len).step_by(4096) {
            if let Some(b) = self.map.get_mut(i) {
                *b = 0;
            }
        }
    }
}

/// A 63-bit hash of a canonical flow key (the table's index and tag): for a
/// compact key (IPv4, no VLAN, not a fragment) half of its bijective image
/// ([`compact_image`]), else [`hash_words`] of the six words the table stores
/// the key as; either way a frame's key is encoded once and hashed from that
/// ([`BurstPacket::new`]).
#[inline]
pub fn flow_hash(key: &FlowKey) -> u64 {
    hash_check(&encode_key(key)).0
}

/// A key's [`flow_hash`] together with the table's check of it, computed
/// once per frame ([`KeyHash::of`]) and shared by flow sampling (which uses
/// [`KeyHash::hash`]) and the table ([`BurstPacket::hashed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyHash {
    hash: u64,
    check: u64,
}

impl KeyHash {
    /// Hash and check of `key`.
    #[inline]
    pub fn of(key: &FlowKey) -> KeyHash {
        let (hash, check) = hash_check(&encode_key(key));
        KeyHash { hash, check }
    }

    /// The key's [`flow_hash`].
    #[inline(always)]
    pub fn hash(&self) -> u64 {
        self.hash
    }
}

/// [`flow_hash`] and the hot line's check of an encoded key: a compact key
/// ([`compact_halves`]) hashes to its image's first half and checks with the
/// second; any other key hashes with [`hash_words`] and checks with 0 (its
/// key is compared in full).
#[inline(always)]
fn hash_check(w: &[u64; 6]) -> (u64, u64) {
    match compact_halves(w) {
        Some((l, r)) => compact_image(l, r),
        None => (hash_words(w), 0),
    }
}

/// A compact key's 104 bits in two 63-bit halves: `l` = address a, port a,
/// protocol; `r` = address b, port b. Compact keys are the IPv4 keys without
/// VLAN tags that are not fragments (the words' other fields are then fixed,
/// so the halves determine the key); any other key gives `None`.
#[inline(always)]
fn compact_halves(w: &[u64; 6]) -> Option<(u64, u64)> {
    let [vl, misc, a0, a1, b0, b1] = *w;
    // misc: VLAN depth (bits 0-7), protocol (8-15), fragment (16-23),
    // family (24-31), port a (32-47), port b (48-63).
    let fixed = u64::from(IpFamily::V4 as u8) << 24;
    if vl | a1 | b1 | (a0 >> 32) | (b0 >> 32) != 0 || misc & 0xffff_00ff != fixed {
        return None;
    }
    let proto = (misc >> 8) & 0xff;
    let (pa, pb) = ((misc >> 32) & 0xffff, misc >> 48);
    Some(compact_pack(a0, pa, proto, b0, pb))
}

/// The halves of a compact key from its fields (each within its width):
/// `l` = address a | port a << 32 | protocol << 48, `r` = address b |
/// port b << 32. Shared by [`compact_halves`] and [`BurstPacket::common`].
#[inline(always)]
fn compact_pack(a: u64, port_a: u64, proto: u64, b: u64, port_b: u64) -> (u64, u64) {
    (a | port_a << 32 | proto << 48, b | port_b << 32)
}

/// The image of a compact key's halves under a two-round Feistel network on
/// 63-bit halves, `(l, r) → (r, l ^ F(r))`: a bijection, so the pair
/// `(hash, check)` it gives is the key itself, re-coded. The hash (63 bits,
/// well mixed: it is `r ^ F(l ^ F(r))`) picks the buckets and is the tag; the
/// check (with [`CHECK_COMPACT`] set) sits in the hot line. Tag and check
/// both equal means the key is equal, exactly, without reading the key line.
#[inline(always)]
fn compact_image(l: u64, r: u64) -> (u64, u64) {
    #[inline(always)]
    fn f(x: u64, k: u64) -> u64 {
        let mut h = x ^ k;
        h = (h ^ (h >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
        h = (h ^ (h >> 33)).wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        (h ^ (h >> 33)) & M63
    }
    let (l, r) = (r, l ^ f(r, 0x243f_6a88_85a3_08d3));
    let (l, r) = (r, l ^ f(r, 0x1319_8a2e_0370_7344));
    (r, l | CHECK_COMPACT)
}

/// The hash of a general key's words: a multiply-xorshift mix per word,
/// then murmur3's 64-bit finaliser, cut to 63 bits like a compact key's
/// hash (so every [`flow_hash`] has the same range).
#[inline(always)]
fn hash_words(w: &[u64; 6]) -> u64 {
    #[inline(always)]
    fn mix(h: u64, w: u64) -> u64 {
        let m = (h ^ w).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        m ^ (m >> 29)
    }
    let mut h = 0x243f_6a88_85a3_08d3u64;
    for x in w {
        h = mix(h, *x);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    (h ^ (h >> 33)) & M63
}

/// A fixed-size ring of records waiting to be exported.
struct ExportQueue {
    buf: Box<[FlowRecord]>,
    head: usize,
    len: usize,
}

impl ExportQueue {
    fn new(cap: usize) -> Self {
        let blank = FlowRecord {
            key: FlowKey::from_endpoints(
                Default::default(),
                0,
                false,
                IpFamily::V4,
                [0; 16],
                0,
                [0; 16],
                0,
            )
            .0,
            first_ns: 0,
            last_ns: 0,
            packets: [0; 2],
            bytes: [0; 2],
            captured_bytes: [0; 2],
            tcp_flags: [0; 2],
            a_initiated: true,
            end_reason: EndReason::Idle,
            first_payload: FirstPayload::EMPTY,
        };
        ExportQueue {
            buf: vec![blank; cap.max(1)].into_boxed_slice(),
            head: 0,
            len: 0,
        }
    }

    #[inline]
    fn push(&mut self, r: &FlowRecord) -> bool {
        if self.len == self.buf.len() {
            return false;
        }
        let i = (self.head + self.len) % self.buf.len();
        if let Some(s) = self.buf.get_mut(i) {
            *s = *r;
        }
        self.len += 1;
        true
    }

    fn drain(&mut self, sink: &mut impl FnMut(&FlowRecord)) {
        while self.len > 0 {
            if let Some(r) = self.buf.get(self.head) {
                sink(r);
            }
            self.head = (self.head + 1) % self.buf.len();
            self.len -= 1;
        }
    }
}

/// One queue's flow table. See the module documentation.
pub struct FlowTable {
    buckets: Region<Bucket>,
    hot: Region<Hot>,
    keys: Region<KeyRec>,
    cold: Region<Cold>,
    meta: Meta,
}

/// Everything of a table but its four arrays.
struct Meta {
    /// Buckets - 1 (the bucket count is a power of two).
    bmask: usize,
    /// Address of bucket 0 (the mapping does not move), for
    /// [`FlowTable::prefetch_bucket`].
    bucket_base: usize,
    /// Next bucket [`FlowTable::expire_step`] visits.
    cursor: usize,
    timeouts: Timeouts,
    now_ns: u64,
    counters: FlowCounters,
    out: ExportQueue,
}

/// The table's arrays as plain slices, taken once per burst (or per call),
/// with the rest of the table: every per-packet step works on this, so a
/// packet pays one bounds check per array access and no re-derivation of
/// the arrays from their mappings.
struct View<'a> {
    buckets: &'a mut [Bucket],
    hot: &'a mut [Hot],
    keys: &'a mut [KeyRec],
    cold: &'a mut [Cold],
    m: &'a mut Meta,
}

/// Packets [`FlowTable::update_burst`] looks ahead over.
pub const BURST_MAX: usize = 64;

/// One packet of a burst for [`FlowTable::update_burst`]: what the table
/// needs of the frame, in the table's own form (the key as the six words it
/// stores and compares), built once per frame by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BurstPacket {
    /// The canonical key as the six words the table stores.
    key: [u64; 6],
    /// [`flow_hash`] of the key.
    hash: u64,
    /// The hot line's check of the key (0: a general key).
    check: u64,
    /// Packet time (ns).
    ts_ns: u64,
    /// Wire length (the caller's convention; see the module docs).
    wire_len: u32,
    /// Captured length.
    cap_len: u32,
    /// The TCP/UDP payload's head.
    payload: PayloadHead,
    /// Whether the packet went a → b.
    a_to_b: bool,
    /// TCP flags of a TCP packet that is not a non-first fragment, else 0
    /// (the only packets whose flags drive the TCP state).
    tcp_flags: u8,
}

impl BurstPacket {
    /// A burst entry, hashing the key.
    #[inline]
    pub fn new(info: &PacketInfo, ts_ns: u64, wire_len: u32, cap_len: u32) -> Self {
        let key = encode_key(&info.key);
        let (hash, check) = hash_check(&key);
        Self::with_words(key, hash, check, info, ts_ns, wire_len, cap_len)
    }

    /// A burst entry whose hash and check the caller already has (they
    /// were computed once for the frame, for flow sampling: `kh` must be
    /// [`KeyHash::of`] the frame's key).
    #[inline]
    pub fn hashed(info: &PacketInfo, kh: KeyHash, ts_ns: u64, wire_len: u32, cap_len: u32) -> Self {
        // A compact flow is identified by hash and check alone: a wrong
        // pair would merge this packet into another flow.
        debug_assert_eq!(kh, KeyHash::of(&info.key), "KeyHash of another key");
        let key = encode_key(&info.key);
        Self::with_words(key, kh.hash, kh.check, info, ts_ns, wire_len, cap_len)
    }

    /// The key's hash and check.
    #[inline(always)]
    pub fn key_hash(&self) -> KeyHash {
        KeyHash {
            hash: self.hash,
            check: self.check,
        }
    }

    /// A burst entry for a frame [`linecap_wire::flow::parse_common`] took:
    /// the key's words straight from the IPv4 endpoints (equal to
    /// `BurstPacket::new` of the frame's `parse_frame`, property-tested).
    #[inline(always)]
    pub fn common(c: &CommonFlow, ts_ns: u64, wire_len: u32, cap_len: u32) -> Self {
        let misc = u64::from(c.proto) << 8
            | u64::from(IpFamily::V4 as u8) << 24
            | u64::from(c.port_a) << 32
            | u64::from(c.port_b) << 48;
        let a = u64::from(u32::from_le_bytes(c.addr_a));
        let b = u64::from(u32::from_le_bytes(c.addr_b));
        let key = [0, misc, a, 0, b, 0];
        // The halves `compact_halves` takes from these words.
        let (l, r) = compact_pack(
            a,
            u64::from(c.port_a),
            u64::from(c.proto),
            b,
            u64::from(c.port_b),
        );
        let (hash, check) = compact_image(l, r);
        BurstPacket {
            key,
            hash,
            check,
            ts_ns,
            wire_len,
            cap_len,
            payload: c.payload,
            a_to_b: c.a_to_b,
            tcp_flags: if c.proto == protocol::TCP {
                c.tcp_flags
            } else {
                0
            },
        }
    }

    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn with_words(
        key: [u64; 6],
        hash: u64,
        check: u64,
        info: &PacketInfo,
        ts_ns: u64,
        wire_len: u32,
        cap_len: u32,
    ) -> Self {
        let tcp = info.key.proto() == protocol::TCP && !info.key.is_fragment();
        BurstPacket {
            key,
            hash,
            check,
            ts_ns,
            wire_len,
            cap_len,
            payload: info.payload,
            a_to_b: info.a_to_b,
            tcp_flags: if tcp { info.tcp_flags } else { 0 },
        }
    }

    /// The key's [`flow_hash`].
    pub fn hash(&self) -> u64 {
        self.hash
    }

    /// The bucket tag: the hash's top 15 bits (the bucket index takes its
    /// low bits) with [`TAG_USED`].
    #[inline(always)]
    fn tag(&self) -> u16 {
        (self.hash >> 48) as u16 | TAG_USED
    }
}

/// Records the export queue holds by default (see [`FlowTable::with_export_queue`]).
pub const EXPORT_QUEUE_DEFAULT: usize = 4096;

/// Buckets the worker's [`FlowTable::expire_step`] visits per burst at most.
pub const EXPIRE_STEP_BUCKETS: usize = 4;

/// No slot (a stage-2 miss).
pub const NO_SLOT: u32 = u32::MAX;

impl FlowTable {
    /// A table of `capacity` slots (a power of two, [`CAPACITY_MIN`] to
    /// [`CAPACITY_MAX`]) with the default export queue, memory from
    /// hugepages when reserved.
    pub fn new(capacity: usize, timeouts: Timeouts) -> Result<FlowTable, String> {
        Self::with_export_queue(capacity, timeouts, EXPORT_QUEUE_DEFAULT)
    }

    /// A table whose packet-path export queue holds `export_queue` records.
    pub fn with_export_queue(
        capacity: usize,
        timeouts: Timeouts,
        export_queue: usize,
    ) -> Result<FlowTable, String> {
        Self::with_options(capacity, timeouts, export_queue, HugePages::Try)
    }

    /// A table with every option: `hugepages` says where the arrays' memory
    /// comes from (see [`HugePages`]).
    pub fn with_options(
        capacity: usize,
        timeouts: Timeouts,
        export_queue: usize,
        hugepages: HugePages,
    ) -> Result<FlowTable, String> {
        if !capacity.is_power_of_two() || !(CAPACITY_MIN..=CAPACITY_MAX).contains(&capacity) {
            return Err(format!(
                "flow table capacity must be a power of two in {CAPACITY_MIN}..={CAPACITY_MAX}, got {capacity}"
            ));
        }
        if timeouts.idle_ns == 0 || timeouts.active_ns == 0 {
            return Err("flow timeouts must be above 0".into());
        }
        let nb = capacity / WAYS;
        let err = |e: std::io::Error| format!("flow table of {capacity} slots: {e}");
        let buckets = Region::new(nb, hugepages).map_err(err)?;
        let bucket_base = buckets.get().as_ptr() as usize;
        Ok(FlowTable {
            buckets,
            hot: Region::new(capacity, hugepages).map_err(err)?,
            keys: Region::new(capacity, hugepages).map_err(err)?,
            cold: Region::new(capacity, hugepages).map_err(err)?,
            meta: Meta {
                bmask: nb - 1,
                bucket_base,
                cursor: 0,
                timeouts,
                now_ns: 0,
                counters: FlowCounters::default(),
                out: ExportQueue::new(export_queue),
            },
        })
    }

    /// The arrays as slices, with the rest of the table.
    #[inline(always)]
    fn view(&mut self) -> View<'_> {
        View {
            buckets: self.buckets.get_mut(),
            hot: self.hot.get_mut(),
            keys: self.keys.get_mut(),
            cold: self.cold.get_mut(),
            m: &mut self.meta,
        }
    }

    /// Fault every page of the table in, from the calling thread: the
    /// worker calls this on its own core before its first burst, so the
    /// memory is local to that core's NUMA node and the capture path takes
    /// no page faults. (Without it, pages fault in on first use.)
    pub fn first_touch(&mut self) {
        self.buckets.touch();
        self.hot.touch();
        self.keys.touch();
        self.cold.touch();
    }

    /// Whether the table's arrays are on reserved 2 MiB hugepages.
    pub fn hugepages(&self) -> bool {
        self.buckets.huge && self.hot.huge && self.keys.huge && self.cold.huge
    }

    /// Slots in the table (fixed).
    pub fn capacity(&self) -> usize {
        self.hot.len
    }

    /// Bytes of memory the table holds (fixed at creation).
    pub fn memory_bytes(&self) -> usize {
        self.buckets.bytes()
            + self.hot.bytes()
            + self.keys.bytes()
            + self.cold.bytes()
            + self.meta.out.buf.len() * size_of::<FlowRecord>()
    }

    /// The counters.
    pub fn counters(&self) -> &FlowCounters {
        &self.meta.counters
    }

    /// The table's packet clock (ns).
    pub fn now_ns(&self) -> u64 {
        self.meta.now_ns
    }

    /// The timeouts.
    pub fn timeouts(&self) -> Timeouts {
        self.meta.timeouts
    }

    /// Count a frame that has no flow key (non-IP, truncated, malformed).
    #[inline]
    pub fn count_untracked(&mut self, parsed: &Parsed) {
        let c = &mut self.meta.counters;
        match parsed {
            Parsed::Ip(_) => {}
            Parsed::NonIp => c.non_ip += 1,
            Parsed::Truncated => c.truncated += 1,
            Parsed::Malformed => c.malformed += 1,
        }
    }

    /// Account one parsed frame: IP frames go to [`FlowTable::update`], the
    /// others are counted. `wire_len` and `cap_len` as for `update`.
    #[inline]
    pub fn update_parsed(&mut self, parsed: &Parsed, ts_ns: u64, wire_len: u32, cap_len: u32) {
        match parsed {
            Parsed::Ip(info) => self.update(info, ts_ns, wire_len, cap_len),
            other => self.count_untracked(other),
        }
    }

    /// Count one IP packet into its flow. Records this ends (a due flow's
    /// old record, an eviction, an active-timeout export) go to the export
    /// queue ([`FlowTable::take_expired`]).
    #[inline]
    pub fn update(&mut self, info: &PacketInfo, ts_ns: u64, wire_len: u32, cap_len: u32) {
        let p = BurstPacket::new(info, ts_ns, wire_len, cap_len);
        self.view().update_one(NO_SLOT, &p);
    }

    /// [`FlowTable::update`] for a burst of packets, in order, in three
    /// stages per 64 packets: [`FlowTable::prefetch_bucket`] for each,
    /// [`FlowTable::stage`], [`FlowTable::apply`]. The result equals calling
    /// `update` per packet. (The capture worker runs the stages itself, a
    /// burst apart, so the lines arrive while it does other work.)
    pub fn update_burst(&mut self, pkts: &[BurstPacket]) {
        let mut slots = [NO_SLOT; BURST_MAX];
        for chunk in pkts.chunks(BURST_MAX) {
            for p in chunk {
                self.prefetch_bucket(p.hash);
            }
            let slots = &mut slots[..chunk.len()];
            self.stage(chunk, slots);
            self.apply(chunk, slots);
        }
    }

    /// Stage 1: prefetch the first bucket's tag line of a packet with this
    /// [`flow_hash`] (where its flow lives unless that bucket was full when
    /// it started). Call it as soon as the hash is known.
    #[inline(always)]
    pub fn prefetch_bucket(&self, hash: u64) {
        // The address from the mapping's base (fixed for the table's life),
        // not through a slice of the mapping per frame: that cast and its
        // checks cost more than the rest of this stage.
        let b = hash as usize & self.meta.bmask;
        prefetch_addr(self.meta.bucket_base + b * size_of::<Bucket>());
    }

    /// Stage 2, once the tag lines are in: find each packet's slot from its
    /// first bucket's tags alone (`slots[i]`, or `u32::MAX` when no tag
    /// matches) and prefetch that slot's hot line (and, for a general key,
    /// its key line), or the second bucket's tag line when there was no
    /// match. Reads only; the slots are checked again by [`FlowTable::apply`].
    pub fn stage(&self, pkts: &[BurstPacket], slots: &mut [u32]) {
        let buckets = self.buckets.get();
        let hot = self.hot.get();
        let keys = self.keys.get();
        let bmask = self.meta.bmask;
        for (s, p) in slots.iter_mut().zip(pkts) {
            let tag = p.tag();
            let b1 = p.hash as usize & bmask;
            *s = NO_SLOT;
            if let Some(i) = tag_match(buckets, b1, tag)
                && let Some(h) = hot.get(i)
            {
                prefetch(h);
                if p.check == 0
                    && let Some(k) = keys.get(i)
                {
                    prefetch(k);
                }
                *s = i as u32;
            } else if let Some(y) = buckets.get(bucket_pair(p.hash, bmask).1) {
                prefetch(y);
            }
        }
    }

    /// Stage 3: update the table with `pkts` in order, starting from the
    /// slots [`FlowTable::stage`] gave (`slots` as long as `pkts`; a slot
    /// that no longer holds the packet's key — the table changed since —
    /// is looked up again).
    pub fn apply(&mut self, pkts: &[BurstPacket], slots: &[u32]) {
        let mut v = self.view();
        for (s, p) in slots.iter().zip(pkts) {
            v.update_one(*s, p);
        }
    }

    /// Hand the records queued on the packet path to `sink`.
    pub fn take_expired(&mut self, sink: &mut impl FnMut(&FlowRecord)) {
        self.meta.out.drain(sink);
    }

    /// Advance the clock to `now_ns` (if later), hand the queued records to
    /// `sink`, then visit the next `buckets_max` buckets (a cursor that
    /// wraps round the table) and end their due flows. The work is bounded
    /// by `buckets_max * WAYS` slots whatever the table's size: the worker
    /// calls this once per burst (and per idle poll) with 1 to
    /// [`EXPIRE_STEP_BUCKETS`], so a flow ends at most one cursor round
    /// (`capacity / WAYS / buckets_max` calls) after it is due. For the next
    /// call, the tag line of the next bucket and the hot lines of the next
    /// `buckets_max` buckets (up to the table's end) are prefetched.
    /// Returns the slots looked at.
    pub fn expire_step(
        &mut self,
        now_ns: u64,
        buckets_max: usize,
        sink: &mut impl FnMut(&FlowRecord),
    ) -> usize {
        let mut v = self.view();
        if now_ns > v.m.now_ns {
            v.m.now_ns = now_ns;
        }
        v.m.out.drain(sink);
        let now = v.m.now_ns;
        let n = buckets_max.min(v.m.bmask + 1);
        for _ in 0..n {
            let b = v.m.cursor;
            v.m.cursor = (b + 1) & v.m.bmask;
            v.expire_bucket(b, now, sink);
        }
        // The next step's lines (as many buckets as this one), asked for
        // now: its tag line and hot lines arrive during the next burst
        // instead of being waited for in turn (tags, then each used slot's
        // line).
        let next = v.m.cursor;
        let end = (next + n).min(v.m.bmask + 1);
        if let Some(bk) = v.buckets.get(next) {
            prefetch(bk);
        }
        for h in v.hot.get(next * WAYS..end * WAYS).unwrap_or(&[]) {
            prefetch(h);
        }
        n * WAYS
    }

    /// Advance the clock to `now_ns` (if later), hand the queued records to
    /// `sink`, then sweep the whole table and end every flow that is due.
    /// Cost: one pass over the table. For offline use (`linecap flows`,
    /// tests); a capture worker uses [`FlowTable::expire_step`] instead.
    pub fn tick(&mut self, now_ns: u64, sink: &mut impl FnMut(&FlowRecord)) {
        let mut v = self.view();
        if now_ns > v.m.now_ns {
            v.m.now_ns = now_ns;
        }
        v.m.out.drain(sink);
        let now = v.m.now_ns;
        for b in 0..=v.m.bmask {
            v.expire_bucket(b, now, sink);
        }
    }

    /// End every flow (`EndOfInput`) after handing over the queued records:
    /// at the end of a file or at shutdown. The table is empty afterwards.
    pub fn drain(&mut self, sink: &mut impl FnMut(&FlowRecord)) {
        let mut v = self.view();
        v.m.out.drain(sink);
        for i in 0..v.hot.len() {
            if v.used(i) {
                let mut rec = v.record(i);
                rec.end_reason = EndReason::EndOfInput;
                v.remove(i);
                v.m.count_end(EndReason::EndOfInput);
                sink(&rec);
            }
        }
    }

    /// Records in the table whose flows are active now (for tests and
    /// diagnostics; visits every slot).
    pub fn for_each_active(&mut self, mut f: impl FnMut(&FlowRecord)) {
        let v = self.view();
        for i in 0..v.hot.len() {
            if v.used(i) {
                f(&v.record(i));
            }
        }
    }
}

impl Meta {
    fn count_end(&mut self, reason: EndReason) {
        let c = &mut self.counters;
        match reason {
            EndReason::Idle => c.expired_idle += 1,
            EndReason::Active => c.expired_active += 1,
            EndReason::EndOfFlow => c.expired_end += 1,
            EndReason::EndOfInput => c.expired_input_end += 1,
            EndReason::Evicted => c.evicted += 1,
        }
    }

    fn queue_export(&mut self, rec: &FlowRecord) {
        if !self.out.push(rec) {
            self.counters.export_drops += 1;
        }
    }
}

impl View<'_> {
    /// One packet, in order. `hint` is the slot stage 2 found from the tags
    /// ([`NO_SLOT`]: none): used when it still holds the key, else the
    /// packet takes [`View::place`].
    #[inline(always)]
    fn update_one(&mut self, hint: u32, p: &BurstPacket) {
        self.m.counters.packets += 1;
        if p.ts_ns > self.m.now_ns {
            self.m.now_ns = p.ts_ns;
        }
        let hint = hint as usize;
        let idx = if self.holds(hint, p) {
            self.end_if_due(hint, p);
            hint
        } else {
            self.place(p)
        };
        let d = usize::from(!p.a_to_b);
        if self.hot.get(idx).is_some_and(|h| h.packets[d] == u32::MAX) {
            self.end_due(idx, p, EndReason::Active);
        }
        let Some(h) = self.hot.get_mut(idx) else {
            return;
        };
        h.packets[d] += 1;
        h.bytes[d] += u64::from(p.wire_len);
        if p.ts_ns < h.first_ns {
            h.first_ns = p.ts_ns;
        }
        if p.ts_ns > h.last_ns {
            h.last_ns = p.ts_ns;
        }
        let other_silent = h.packets[d ^ 1] == 0;
        let first_payload = p.payload.len != 0 && h.state & (1 << d) == 0;
        if first_payload || p.cap_len != p.wire_len {
            h.state |= u8::from(first_payload) << d;
            self.cold_update(idx, d, first_payload, p);
        }
        let Some(h) = self.hot.get_mut(idx) else {
            return;
        };
        if p.tcp_flags != 0 {
            h.tcp_flags[d] |= p.tcp_flags;
            if p.tcp_flags & flags::FIN != 0 {
                h.fins |= if d == A_TO_B { FIN_A } else { FIN_B };
            }
            let ends = p.tcp_flags & flags::RST != 0
                || h.fins == FIN_A | FIN_B
                || (h.fins != 0 && other_silent);
            if ends && h.state & LINGER == 0 {
                h.state |= LINGER;
                if let Some(k) = self.keys.get_mut(idx) {
                    k.linger_from_ns = p.ts_ns;
                }
            }
        }
    }

    /// The cold line's part of a packet: a direction's first payload, and
    /// the bytes a frame captured shorter (or longer) than its wire length
    /// did not capture.
    #[cold]
    #[inline(never)]
    fn cold_update(&mut self, idx: usize, d: usize, first_payload: bool, p: &BurstPacket) {
        let Some(c) = self.cold.get_mut(idx) else {
            return;
        };
        if first_payload {
            c.payload_len[d] = p.payload.len;
            c.payload_bytes[d] = p.payload.bytes;
            c.payload_captured[d] = p.payload.captured;
        }
        c.uncaptured[d] =
            c.uncaptured[d].wrapping_add(u64::from(p.wire_len).wrapping_sub(u64::from(p.cap_len)));
    }

    /// Whether slot `i` holds the flow of `p`: its tag, then its check (a
    /// compact key: tag and check are the key), then for a general key the
    /// key itself.
    #[inline(always)]
    fn holds(&self, i: usize, p: &BurstPacket) -> bool {
        self.buckets
            .get(i / WAYS)
            .is_some_and(|bk| bk.tags[i % WAYS] == p.tag())
            && self.same_flow(i, p)
    }

    /// Whether slot `i`, whose tag equals `p`'s, holds `p`'s key.
    #[inline(always)]
    fn same_flow(&self, i: usize, p: &BurstPacket) -> bool {
        self.hot
            .get(i)
            .is_some_and(|h| (h.hash ^ p.hash) | (h.check ^ p.check) == 0)
            && (p.check != 0 || self.keys.get(i).is_some_and(|k| same_key(&k.key, &p.key)))
    }

    /// The slot for a packet whose stage-2 slot did not hold its key: its
    /// flow's slot if it has one after all, else a free way, else the
    /// evicted oldest flow's slot (the flow is started there).
    #[inline(never)]
    fn place(&mut self, p: &BurstPacket) -> usize {
        let (b1, b2) = bucket_pair(p.hash, self.m.bmask);
        if let Some(idx) = self.find(p, b1, b2) {
            self.end_if_due(idx, p);
            idx
        } else if let Some(idx) = self
            .free_slot(b1, b2)
            .or_else(|| self.make_room(b1))
            .or_else(|| self.make_room(b2))
        {
            self.m.counters.active += 1;
            self.start(idx, p);
            idx
        } else {
            let idx = self.evict_oldest(b1, b2);
            self.start(idx, p);
            idx
        }
    }

    /// The slot holding `p`'s flow (tag and key equal), if any.
    #[inline(always)]
    fn find(&self, p: &BurstPacket, b1: usize, b2: usize) -> Option<usize> {
        let tag = p.tag();
        for b in [b1, b2] {
            let Some(bk) = self.buckets.get(b) else {
                continue;
            };
            for (w, t) in bk.tags.iter().enumerate() {
                if *t == tag && self.same_flow(b * WAYS + w, p) {
                    return Some(b * WAYS + w);
                }
            }
        }
        None
    }

    /// A free way of the first bucket, else of the second, if either has
    /// one. First-bucket-first keeps most flows where stage 1 of
    /// [`FlowTable::update_burst`] looks (one tag line per packet).
    #[inline(always)]
    fn free_slot(&self, b1: usize, b2: usize) -> Option<usize> {
        [b1, b2].into_iter().find_map(|b| {
            let w = self.buckets.get(b)?.tags.iter().position(|t| *t == 0)?;
            Some(b * WAYS + w)
        })
    }

    /// Bucket `b` is full: move one of its flows to a free way of that
    /// flow's other bucket (one cuckoo step) and return the way it left, or
    /// `None` when every flow's other bucket is full too. The flow keeps its
    /// tag, hot line, key line and cold part; only its slot changes.
    #[cold]
    #[inline(never)]
    fn make_room(&mut self, b: usize) -> Option<usize> {
        let tags = self.buckets.get(b)?.tags;
        for (w, t) in tags.iter().enumerate() {
            let (x1, x2) = bucket_pair(self.hot.get(b * WAYS + w)?.hash, self.m.bmask);
            let alt = if x1 == b { x2 } else { x1 };
            let Some(fw) = self.buckets.get(alt)?.tags.iter().position(|t| *t == 0) else {
                continue;
            };
            let (from, to) = (b * WAYS + w, alt * WAYS + fw);
            let hot = *self.hot.get(from)?;
            let key = *self.keys.get(from)?;
            let cold = *self.cold.get(from)?;
            *self.hot.get_mut(to)? = hot;
            *self.keys.get_mut(to)? = key;
            *self.cold.get_mut(to)? = cold;
            self.buckets.get_mut(alt)?.tags[fw] = *t;
            self.buckets.get_mut(b)?.tags[w] = 0;
            self.m.counters.relocated += 1;
            return Some(from);
        }
        None
    }

    /// Start `p`'s flow in slot `idx` (its tag, check and key; counters
    /// from zero at the packet's time; `p`'s side as the initiator).
    #[inline]
    fn start(&mut self, idx: usize, p: &BurstPacket) {
        self.m.counters.created += 1;
        if let Some(t) = self
            .buckets
            .get_mut(idx / WAYS)
            .and_then(|bk| bk.tags.get_mut(idx % WAYS))
        {
            *t = p.tag();
        }
        if let Some(k) = self.keys.get_mut(idx) {
            k.key = p.key;
            k.linger_from_ns = 0;
        }
        if let Some(h) = self.hot.get_mut(idx) {
            *h = Hot {
                hash: p.hash,
                check: p.check,
                first_ns: p.ts_ns,
                last_ns: p.ts_ns,
                ..Hot::zeroed()
            };
        }
        if let Some(c) = self.cold.get_mut(idx) {
            *c = Cold {
                a_initiated: u8::from(p.a_to_b),
                ..Cold::zeroed()
            };
        }
    }

    /// Whether slot `idx` is in use.
    #[inline(always)]
    fn used(&self, idx: usize) -> bool {
        self.buckets
            .get(idx / WAYS)
            .and_then(|bk| bk.tags.get(idx % WAYS))
            .is_some_and(|t| *t != 0)
    }

    /// The record of slot `idx` as exported (end reason `Idle` until set).
    fn record(&self, idx: usize) -> FlowRecord {
        let h = self.hot.get(idx).copied().unwrap_or_else(Hot::zeroed);
        let k = self.keys.get(idx).copied().unwrap_or_else(KeyRec::zeroed);
        let c = self.cold.get(idx).copied().unwrap_or_else(Cold::zeroed);
        FlowRecord {
            key: decode_key(&k.key),
            first_ns: h.first_ns,
            last_ns: h.last_ns,
            packets: h.packets.map(u64::from),
            bytes: h.bytes,
            captured_bytes: [0, 1].map(|d| h.bytes[d].wrapping_sub(c.uncaptured[d])),
            tcp_flags: h.tcp_flags,
            a_initiated: c.a_initiated != 0,
            end_reason: EndReason::Idle,
            first_payload: FirstPayload {
                dir: [0, 1].map(|d| PayloadHead {
                    len: c.payload_len[d],
                    bytes: c.payload_bytes[d],
                    captured: c.payload_captured[d],
                }),
            },
        }
    }

    /// Why the flow in slot `idx` is over at `now_ns`, if it is.
    #[inline(always)]
    fn due(&self, idx: usize, now_ns: u64) -> Option<EndReason> {
        let t = &self.m.timeouts;
        let h = self.hot.get(idx)?;
        if h.state & LINGER != 0
            && now_ns
                >= self
                    .keys
                    .get(idx)?
                    .linger_from_ns
                    .saturating_add(t.linger_ns)
        {
            Some(EndReason::EndOfFlow)
        } else if now_ns >= h.last_ns.saturating_add(t.idle_ns) {
            Some(EndReason::Idle)
        } else if now_ns >= h.first_ns.saturating_add(t.active_ns) {
            Some(EndReason::Active)
        } else {
            None
        }
    }

    /// The next period of an active-timeout flow: counters restart at
    /// `now_ns`, the key, TCP state and initiator stay.
    fn restart_period(&mut self, idx: usize, now_ns: u64) {
        if let Some(h) = self.hot.get_mut(idx) {
            *h = Hot {
                hash: h.hash,
                check: h.check,
                first_ns: now_ns,
                last_ns: now_ns,
                fins: h.fins,
                state: h.state,
                ..Hot::zeroed()
            };
        }
        if let Some(c) = self.cold.get_mut(idx) {
            c.uncaptured = [0; 2];
        }
    }

    /// A packet arrived for the flow in `idx`: if the flow is due, end its
    /// record (queued for export) and restart it in place.
    #[inline(always)]
    fn end_if_due(&mut self, idx: usize, p: &BurstPacket) {
        let Some(reason) = self.due(idx, p.ts_ns) else {
            return;
        };
        self.end_due(idx, p, reason);
    }

    #[cold]
    #[inline(never)]
    fn end_due(&mut self, idx: usize, p: &BurstPacket, reason: EndReason) {
        let mut rec = self.record(idx);
        rec.end_reason = reason;
        self.m.count_end(reason);
        self.m.queue_export(&rec);
        if reason == EndReason::Active {
            self.restart_period(idx, p.ts_ns);
        } else {
            // A new flow with the same key (`p`'s: the slot holds it).
            self.start(idx, p);
        }
    }

    /// Both buckets are full: free the slot of their least recently seen
    /// flow (exported as `Idle` if it was past the idle timeout, else
    /// `Evicted`) and return it.
    #[cold]
    #[inline(never)]
    fn evict_oldest(&mut self, b1: usize, b2: usize) -> usize {
        let mut victim = b1 * WAYS;
        let mut oldest = u64::MAX;
        for b in [b1, b2] {
            for w in 0..WAYS {
                let i = b * WAYS + w;
                if let Some(h) = self.hot.get(i)
                    && h.last_ns < oldest
                {
                    oldest = h.last_ns;
                    victim = i;
                }
            }
        }
        let mut rec = self.record(victim);
        rec.end_reason = if self.m.now_ns >= rec.last_ns.saturating_add(self.m.timeouts.idle_ns) {
            EndReason::Idle
        } else {
            EndReason::Evicted
        };
        self.m.count_end(rec.end_reason);
        self.m.queue_export(&rec);
        victim
    }

    /// Empty slot `idx` (clear its tag).
    fn remove(&mut self, idx: usize) {
        if let Some(t) = self
            .buckets
            .get_mut(idx / WAYS)
            .and_then(|bk| bk.tags.get_mut(idx % WAYS))
        {
            *t = 0;
        }
        self.m.counters.active -= 1;
    }

    /// End the due flows of bucket `b` at `now`.
    #[inline]
    fn expire_bucket(&mut self, b: usize, now: u64, sink: &mut impl FnMut(&FlowRecord)) {
        let tags = match self.buckets.get(b) {
            Some(bk) => bk.tags,
            None => return,
        };
        for (w, t) in tags.iter().enumerate() {
            if *t == 0 {
                continue;
            }
            let i = b * WAYS + w;
            if let Some(reason) = self.due(i, now) {
                self.expire_slot(i, now, reason, sink);
            }
        }
    }

    #[cold]
    fn expire_slot(
        &mut self,
        i: usize,
        now: u64,
        reason: EndReason,
        sink: &mut impl FnMut(&FlowRecord),
    ) {
        let mut rec = self.record(i);
        rec.end_reason = reason;
        self.m.count_end(reason);
        sink(&rec);
        if reason == EndReason::Active {
            self.restart_period(i, now);
        } else {
            self.remove(i);
        }
    }
}

/// Whether two stored keys are equal: six XORs OR-ed, no branch and no
/// `memcmp` call (which is what `==` on the arrays compiles to).
#[inline(always)]
fn same_key(a: &[u64; 6], b: &[u64; 6]) -> bool {
    ((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]) | (a[4] ^ b[4]) | (a[5] ^ b[5]))
        == 0
}

/// The way of bucket `b` whose tag is `tag`, as a slot index (tags only).
/// Branch-free over the eight ways (a mask of equal tags, then its lowest
/// bit): the way a flow sits in is random, so a search loop that stops at
/// the match mispredicts about once per packet.
#[inline(always)]
fn tag_match(buckets: &[Bucket], b: usize, tag: u16) -> Option<usize> {
    let bk = buckets.get(b)?;
    let m = crate::prefetch::lanes_equal(&bk.tags, tag);
    (m != 0).then(|| b * WAYS + m.trailing_zeros() as usize / 2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use linecap_wire::flow::VlanStack;

    const S: u64 = 1_000_000_000;

    fn info(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, tcp: u8) -> PacketInfo {
        let mut s16 = [0u8; 16];
        s16[..4].copy_from_slice(&src);
        let mut d16 = [0u8; 16];
        d16[..4].copy_from_slice(&dst);
        let (key, a_to_b) = FlowKey::from_endpoints(
            VlanStack::new(),
            protocol::TCP,
            false,
            IpFamily::V4,
            s16,
            sport,
            d16,
            dport,
        );
        PacketInfo {
            key,
            a_to_b,
            tcp_flags: tcp,
            l4_truncated: false,
            l4_malformed: false,
            ip_truncated: false,
            fragment: None,
            mpls_labels: 0,
            l3_offset: 14,
            l4_offset: 34,
            payload: linecap_wire::applabel::PayloadHead::NONE,
        }
    }

    const C: [u8; 4] = [10, 0, 0, 1];
    const SV: [u8; 4] = [10, 0, 0, 2];

    fn fwd(flags: u8) -> PacketInfo {
        info(C, 40000, SV, 80, flags)
    }
    fn rev(flags: u8) -> PacketInfo {
        info(SV, 80, C, 40000, flags)
    }

    fn timeouts() -> Timeouts {
        Timeouts {
            idle_ns: 30 * S,
            active_ns: 100 * S,
            linger_ns: 2 * S,
        }
    }

    fn collect(t: &mut FlowTable, now: u64) -> Vec<FlowRecord> {
        let mut v = Vec::new();
        t.tick(now, &mut |r| v.push(*r));
        v
    }

    #[test]
    fn both_directions_one_record() {
        let mut t = FlowTable::new(1024, timeouts()).unwrap();
        t.update(&rev(flags::SYN | flags::ACK), 5 * S, 60, 60);
        t.update(&fwd(flags::SYN), 4 * S, 74, 64);
        t.update(&fwd(flags::ACK), 6 * S, 66, 66);
        assert_eq!(t.counters().active, 1);
        let mut v = Vec::new();
        t.drain(&mut |r| v.push(*r));
        assert_eq!(v.len(), 1);
        let r = v[0];
        // C (10.0.0.1) is a; its first packet came second, with an earlier time.
        let d = usize::from(!fwd(0).a_to_b);
        assert_eq!(r.packets[d], 2);
        assert_eq!(r.bytes[d], 140);
        assert_eq!(r.captured_bytes[d], 130);
        assert_eq!(r.packets[d ^ 1], 1);
        assert_eq!(r.tcp_flags[d], flags::SYN | flags::ACK);
        assert_eq!(r.tcp_flags[d ^ 1], flags::SYN | flags::ACK);
        assert_eq!((r.first_ns, r.last_ns), (4 * S, 6 * S));
        assert_eq!(
            r.a_initiated,
            rev(0).a_to_b,
            "the first packet seen was b→a"
        );
        assert_eq!(r.end_reason, EndReason::EndOfInput);
        assert_eq!(t.counters().expired_input_end, 1);
        assert_eq!(t.counters().active, 0);
    }

    #[test]
    fn first_payload_once_per_direction_and_kept_over_active_exports() {
        use linecap_wire::applabel::PayloadHead;
        let with = |mut i: PacketInfo, p: &[u8]| {
            i.payload = PayloadHead::new(p.len() as u32, p);
            i
        };
        let mut t = FlowTable::new(1024, timeouts()).unwrap();
        t.update(&fwd(flags::SYN), S, 60, 60);
        t.update(&with(fwd(flags::ACK), b"GET / HTTP/1.1"), 2 * S, 100, 100);
        t.update(&with(fwd(flags::ACK), b"more"), 3 * S, 100, 100);
        t.update(&with(rev(flags::ACK), b"HTTP/1.1 200 OK"), 4 * S, 100, 100);
        // Past the active timeout (100 s): exported, the flow continues.
        for at in [25, 50, 75, 102] {
            t.update(&with(rev(flags::ACK), b"late"), at * S, 100, 100);
        }
        let mut v = Vec::new();
        t.take_expired(&mut |r| v.push(*r));
        t.drain(&mut |r| v.push(*r));
        assert_eq!(v.len(), 2);
        let f = usize::from(!fwd(0).a_to_b);
        for r in &v {
            assert_eq!(r.first_payload.dir[f], PayloadHead::new(14, b"GET "));
            assert_eq!(r.first_payload.dir[f ^ 1], PayloadHead::new(15, b"HTTP"));
        }
        // A new flow on the same key starts empty.
        t.update(&fwd(flags::SYN), 500 * S, 60, 60);
        let mut v = Vec::new();
        t.drain(&mut |r| v.push(*r));
        assert_eq!(v[0].first_payload, FirstPayload::EMPTY);
    }

    #[test]
    fn idle_timeout_by_tick_on_an_idle_queue() {
        let mut t = FlowTable::new(1024, timeouts()).unwrap();
        t.update(&fwd(0), 10 * S, 100, 100);
        t.update(&info([1, 1, 1, 1], 1, [2, 2, 2, 2], 2, 0), 20 * S, 100, 100);
        assert!(collect(&mut t, 39 * S).is_empty());
        let v = collect(&mut t, 40 * S);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].end_reason, EndReason::Idle);
        assert_eq!(v[0].first_ns, 10 * S);
        assert_eq!(t.counters().active, 1);
        // No packets at all: the tick alone ends the other flow.
        let v = collect(&mut t, 50 * S);
        assert_eq!(v.len(), 1);
        assert_eq!(t.counters().expired_idle, 2);
        assert_eq!(t.counters().active, 0);
        assert_eq!(t.now_ns(), 50 * S);
    }

    #[test]
    fn idle_timeout_on_the_packet_path_restarts_the_flow() {
        let mut t = FlowTable::new(1024, timeouts()).unwrap();
        t.update(&fwd(0), 10 * S, 100, 100);
        t.update(&rev(0), 40 * S + 1, 50, 50);
        let mut v = Vec::new();
        t.take_expired(&mut |r| v.push(*r));
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].end_reason, EndReason::Idle);
        assert_eq!(v[0].total_packets(), 1);
        assert_eq!(t.counters().created, 2);
        let mut v = Vec::new();
        t.drain(&mut |r| v.push(*r));
        assert_eq!(v[0].total_packets(), 1);
        assert_eq!(v[0].first_ns, 40 * S + 1);
        assert_eq!(v[0].a_initiated, rev(0).a_to_b);
    }

    #[test]
    fn active_timeout_exports_and_continues() {
        let mut t = FlowTable::new(1024, timeouts()).unwrap();
        for i in 0..296 {
            t.update(&fwd(0), i * S, 100, 100);
        }
        let mut v = Vec::new();
        t.take_expired(&mut |r| v.push(*r));
        assert_eq!(v.len(), 2, "at 100 s and 200 s");
        assert!(v.iter().all(|r| r.end_reason == EndReason::Active));
        assert_eq!(v[0].total_packets(), 100);
        assert_eq!((v[0].first_ns, v[0].last_ns), (0, 99 * S));
        assert_eq!(v[1].first_ns, 100 * S);
        assert_eq!(t.counters().expired_active, 2);
        assert_eq!(t.counters().created, 1);
        assert_eq!(t.counters().active, 1);
        // The tick path: an active flow past its active timeout.
        let v = collect(&mut t, 300 * S);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].end_reason, EndReason::Active);
        assert_eq!(v[0].total_packets(), 96);
        assert_eq!(t.counters().active, 1);
    }

    #[test]
    fn fin_in_both_directions_ends_after_the_linger() {
        let mut t = FlowTable::new(1024, timeouts()).unwrap();
        t.update(&fwd(flags::SYN), S, 60, 60);
        t.update(&rev(flags::SYN | flags::ACK), S, 60, 60);
        t.update(&fwd(flags::FIN | flags::ACK), 2 * S, 60, 60);
        // One FIN only: a half-close, the flow goes on.
        assert!(collect(&mut t, 10 * S).is_empty());
        t.update(&rev(flags::FIN | flags::ACK), 11 * S, 60, 60);
        t.update(&fwd(flags::ACK), 11 * S + 1, 60, 60); // the last ACK, in the linger
        assert!(collect(&mut t, 13 * S - 1).is_empty());
        let v = collect(&mut t, 13 * S);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].end_reason, EndReason::EndOfFlow);
        assert_eq!(v[0].total_packets(), 5);
        assert_eq!(t.counters().expired_end, 1);
        assert_eq!(t.counters().active, 0);
    }

    #[test]
    fn rst_ends_after_the_linger_and_a_later_packet_starts_a_new_flow() {
        let mut t = FlowTable::new(1024, timeouts()).unwrap();
        t.update(&fwd(flags::SYN), S, 60, 60);
        t.update(&rev(flags::RST | flags::ACK), S + 5, 60, 60);
        t.update(&fwd(flags::ACK), 2 * S, 60, 60); // within the linger: counted
        t.update(&fwd(flags::SYN), 3 * S + 5, 60, 60); // past it: new flow
        let mut v = Vec::new();
        t.take_expired(&mut |r| v.push(*r));
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].end_reason, EndReason::EndOfFlow);
        assert_eq!(v[0].total_packets(), 3);
        assert_eq!(t.counters().created, 2);
        assert_eq!(t.counters().active, 1);
    }

    #[test]
    fn fin_on_a_one_sided_flow_starts_the_linger() {
        let mut t = FlowTable::new(1024, timeouts()).unwrap();
        t.update(&fwd(flags::ACK), S, 60, 60);
        t.update(&fwd(flags::FIN | flags::ACK), 2 * S, 60, 60);
        let v = collect(&mut t, 4 * S);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].end_reason, EndReason::EndOfFlow);
    }

    #[test]
    fn full_table_evicts_the_oldest_in_the_window_and_never_grows() {
        let mut t = FlowTable::with_export_queue(64, timeouts(), 1024).unwrap();
        let mem = t.memory_bytes();
        let n = 1000u32;
        for i in 0..n {
            let [_, a, b, c] = i.to_be_bytes();
            t.update(
                &info([10, a, b, c], 1, SV, 2, 0),
                u64::from(i) * 1000,
                60,
                60,
            );
        }
        let c = *t.counters();
        assert_eq!(t.capacity(), 64);
        assert_eq!(t.memory_bytes(), mem);
        // Two-choice buckets: a new flow evicts once both its buckets are
        // full, which can happen before the last slot is taken.
        assert!(c.active >= 56 && c.active <= 64, "{c:?}");
        assert_eq!(c.created, u64::from(n));
        assert_eq!(c.evicted, u64::from(n) - c.active);
        let mut ev = Vec::new();
        t.take_expired(&mut |r| ev.push(*r));
        assert_eq!(ev.len() as u64, c.evicted);
        assert!(ev.iter().all(|r| r.end_reason == EndReason::Evicted));
        // Every evicted flow is older than every flow still in the table
        // except (at most) those outside its window; the newest flow is in.
        let mut newest_in = false;
        t.for_each_active(|r| newest_in |= r.first_ns == u64::from(n - 1) * 1000);
        assert!(newest_in);
        // Whatever went out plus what is left accounts for every packet.
        let mut left = 0;
        t.drain(&mut |r| left += r.total_packets());
        let out: u64 = ev.iter().map(FlowRecord::total_packets).sum();
        assert_eq!(out + left, u64::from(n));
    }

    #[test]
    fn full_export_queue_counts_drops() {
        let mut t = FlowTable::with_export_queue(64, timeouts(), 4).unwrap();
        for i in 0..100u8 {
            t.update(&info([10, 1, 0, i], 1, SV, 2, 0), u64::from(i), 60, 60);
        }
        let c = *t.counters();
        assert_eq!(c.evicted, 100 - c.active);
        assert!(c.evicted >= 36);
        assert_eq!(c.export_drops, c.evicted - 4);
    }

    #[test]
    fn burst_update_equals_per_packet_update() {
        let mut one = FlowTable::new(64, timeouts()).unwrap();
        let mut burst = FlowTable::new(64, timeouts()).unwrap();
        let mut pkts = Vec::new();
        for i in 0..300u32 {
            let p = info([10, 2, 0, (i % 90) as u8], 5, SV, 6, flags::ACK);
            let ts = u64::from(i) * S / 3;
            one.update(&p, ts, 100, 90);
            pkts.push(BurstPacket::new(&p, ts, 100, 90));
        }
        burst.update_burst(&pkts);
        assert_eq!(one.counters(), burst.counters());
        let (mut a, mut b) = (Vec::new(), Vec::new());
        one.drain(&mut |r| a.push(*r));
        burst.drain(&mut |r| b.push(*r));
        assert_eq!(a, b);
    }

    #[test]
    fn rejects_bad_capacity() {
        assert!(FlowTable::new(100, timeouts()).is_err());
        assert!(FlowTable::new(32, timeouts()).is_err());
        assert!(FlowTable::new(1 << 31, timeouts()).is_err());
    }

    /// Random traffic with random ticks against a model: every packet is
    /// accounted for exactly once, lookups keep finding their flows through
    /// backward-shift deletions, and the table never holds a key twice.
    #[test]
    fn random_traffic_conserves_packets() {
        let mut seed = 0x1234_5678_9abc_def0u64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut t = FlowTable::with_export_queue(256, timeouts(), 1 << 16).unwrap();
        let mut out = 0u64;
        let mut now = 0u64;
        let mut sent = 0u64;
        for _ in 0..200_000 {
            now += rnd() % (S / 50);
            let f = (rnd() % 300) as u8;
            let p = if rnd() % 2 == 0 {
                info([10, 0, 1, f], 7, SV, 9, 0)
            } else {
                info(SV, 9, [10, 0, 1, f], 7, 0)
            };
            t.update(&p, now, 1, 1);
            sent += 1;
            if rnd() % 1000 == 0 {
                t.tick(now + rnd() % (40 * S), &mut |r| out += r.total_packets());
                now = t.now_ns();
                let mut keys = Vec::new();
                t.for_each_active(|r| keys.push(r.key));
                let n = keys.len();
                keys.sort();
                keys.dedup();
                assert_eq!(keys.len(), n, "a key twice in the table");
                assert_eq!(n as u64, t.counters().active);
            }
        }
        t.drain(&mut |r| out += r.total_packets());
        assert_eq!(t.counters().export_drops, 0);
        assert_eq!(out, sent);
        let c = t.counters();
        assert_eq!(
            c.created,
            c.expired_idle + c.expired_end + c.evicted + c.expired_input_end
        );
    }

    /// A key with VLANs, IPv6 or fragments goes through the stored
    /// six-word form and comes back equal.
    #[test]
    fn stored_keys_decode_to_the_same_key() {
        let mut vl = VlanStack::new();
        for v in [100, 200, 300, 400, 500, 600] {
            vl.push(v);
        }
        let mut a6 = [0u8; 16];
        a6[0] = 0x20;
        a6[15] = 1;
        let keys = [
            fwd(0).key,
            FlowKey::from_endpoints(vl, 17, false, IpFamily::V6, a6, 53, [0xfe; 16], 9).0,
            FlowKey::from_endpoints(vl, 6, true, IpFamily::V4, [9; 16], 0, [1; 16], 0).0,
        ];
        for k in keys {
            assert_eq!(decode_key(&encode_key(&k)), k);
        }
    }

    /// The per-burst expiry step looks at a bounded number of slots,
    /// whatever the table's size, and a full cursor round ends every due
    /// flow of the table.
    #[test]
    fn expire_step_work_is_bounded_whatever_the_size() {
        for cap in [64usize, 1024, 1 << 16, 1 << 20] {
            let mut t = FlowTable::with_export_queue(cap, timeouts(), 16).unwrap();
            let n = (cap / 4) as u32;
            for i in 0..n {
                let [_, a, b, c] = i.to_be_bytes();
                t.update(&info([10, a, b, c], 1, SV, 2, 0), S, 60, 60);
            }
            let active = t.counters().active;
            assert_eq!(active, u64::from(n) - t.counters().evicted);
            let mut ended = 0u64;
            let mut calls = 0usize;
            // Not yet due: a step ends nothing.
            let w = t.expire_step(2 * S, EXPIRE_STEP_BUCKETS, &mut |_| ended += 1);
            assert_eq!(w, EXPIRE_STEP_BUCKETS * WAYS);
            assert_eq!(ended, 0);
            while t.counters().active > 0 {
                let w = t.expire_step(40 * S, EXPIRE_STEP_BUCKETS, &mut |r| {
                    assert_eq!(r.end_reason, EndReason::Idle);
                    ended += 1;
                });
                assert!(w <= EXPIRE_STEP_BUCKETS * WAYS, "{w} slots in one step");
                calls += 1;
                assert!(
                    calls <= cap / WAYS / EXPIRE_STEP_BUCKETS + 1,
                    "more than one round"
                );
            }
            assert_eq!(ended, active);
        }
    }

    #[test]
    fn expire_step_ends_idle_active_and_tcp_flows_by_the_injected_clock() {
        let mut t = FlowTable::new(64, timeouts()).unwrap();
        let round = 64 / WAYS / EXPIRE_STEP_BUCKETS;
        let step = |t: &mut FlowTable, now: u64| {
            let mut v = Vec::new();
            for _ in 0..round {
                t.expire_step(now, EXPIRE_STEP_BUCKETS, &mut |r| v.push(*r));
            }
            v
        };
        t.update(&fwd(flags::SYN), S, 60, 60);
        t.update(&rev(flags::RST), 2 * S, 60, 60);
        t.update(&info([1, 1, 1, 1], 1, [2, 2, 2, 2], 2, 0), S, 60, 60);
        let long = info([3, 3, 3, 3], 1, [4, 4, 4, 4], 2, 0);
        let v = step(&mut t, 4 * S - 1);
        assert!(v.is_empty());
        let v = step(&mut t, 4 * S);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].end_reason, EndReason::EndOfFlow);
        for i in 1..=6 {
            t.update(&long, i * 5 * S, 60, 60);
        }
        let v = step(&mut t, 31 * S - 1);
        assert!(v.is_empty());
        let v = step(&mut t, 31 * S);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].end_reason, EndReason::Idle);
        for i in 7..=20 {
            t.update(&long, i * 5 * S, 60, 60);
        }
        assert!(step(&mut t, 105 * S - 1).is_empty());
        let v = step(&mut t, 105 * S);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].end_reason, EndReason::Active);
        assert_eq!(v[0].total_packets(), 20);
        assert_eq!(t.counters().active, 1);
        let c = t.counters();
        assert_eq!((c.expired_end, c.expired_idle, c.expired_active), (1, 1, 1));
    }

    /// Frames captured shorter (and, from a bad file, longer) than their
    /// wire length: captured bytes are exact per direction and per period
    /// (the cold line's uncaptured sum restarts with an active-timeout
    /// period), for a compact and a general (VLAN) key.
    #[test]
    fn captured_bytes_exact_when_frames_are_cut() {
        let mut tagged = fwd(0);
        let mut vl = VlanStack::new();
        vl.push(7);
        tagged.key = FlowKey::from_endpoints(
            vl,
            protocol::TCP,
            false,
            IpFamily::V4,
            [10; 16],
            1,
            [11; 16],
            2,
        )
        .0;
        let long_idle = Timeouts {
            idle_ns: 1000 * S,
            ..timeouts()
        };
        for p in [fwd(0), tagged] {
            let mut t = FlowTable::new(1024, long_idle).unwrap();
            t.update(&p, S, 1500, 64);
            t.update(&p, 2 * S, 60, 60);
            t.update(&p, 3 * S, 40, 64);
            let v = collect(&mut t, 101 * S);
            assert_eq!(v.len(), 1);
            let d = usize::from(!p.a_to_b);
            assert_eq!((v[0].bytes[d], v[0].captured_bytes[d]), (1600, 188));
            assert_eq!(v[0].end_reason, EndReason::Active);
            t.update(&p, 102 * S, 100, 90);
            let mut w = Vec::new();
            t.drain(&mut |r| w.push(*r));
            assert_eq!((w[0].bytes[d], w[0].captured_bytes[d]), (100, 90));
            assert_eq!((w[0].packets[d], w[0].packets[d ^ 1]), (1, 0));
        }
    }

    /// A period whose packet count would pass `u32::MAX` in one direction
    /// ends there as `Active` (nothing is lost or wrapped) and the flow goes
    /// on in a new period.
    #[test]
    fn packet_count_at_u32_max_ends_the_period() {
        let mut t = FlowTable::new(1024, timeouts()).unwrap();
        t.update(&fwd(0), S, 60, 60);
        let d = usize::from(!fwd(0).a_to_b);
        let i = (0..t.capacity()).find(|&i| t.view().used(i)).unwrap();
        t.hot.get_mut()[i].packets[d] = u32::MAX - 1;
        t.update(&fwd(0), 2 * S, 60, 60);
        assert!(t.meta.out.len == 0, "not yet at the limit");
        t.update(&fwd(0), 3 * S, 70, 70);
        let mut v = Vec::new();
        t.take_expired(&mut |r| v.push(*r));
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].end_reason, EndReason::Active);
        assert_eq!(v[0].packets[d], u64::from(u32::MAX));
        assert_eq!((v[0].first_ns, v[0].last_ns), (S, 2 * S));
        let mut w = Vec::new();
        t.drain(&mut |r| w.push(*r));
        assert_eq!(
            (w[0].packets[d], w[0].bytes[d], w[0].first_ns),
            (1, 70, 3 * S)
        );
        assert_eq!(t.counters().expired_active, 1);
    }

    /// Two flows whose hashes share the first bucket and the 15-bit tag
    /// (a false tag match: stage finds the other flow's slot, `holds`
    /// rejects it by hash and check, `find` goes on): their packets,
    /// interleaved, per packet and in bursts, still make two records.
    #[test]
    fn flows_with_the_same_bucket_and_tag_stay_apart() {
        let t0 = FlowTable::new(64, timeouts()).unwrap();
        let bmask = t0.meta.bmask;
        let mut seen: std::collections::HashMap<(usize, u16), u16> = Default::default();
        let (mut x, mut y) = (None, None);
        for port in 1..=u16::MAX {
            let p = BurstPacket::new(&info(C, port, SV, 80, 0), S, 60, 60);
            let k = (p.hash as usize & bmask, p.tag());
            if let Some(other) = seen.insert(k, port) {
                (x, y) = (Some(other), Some(port));
                break;
            }
        }
        let (x, y) = (
            info(C, x.unwrap(), SV, 80, 0),
            info(C, y.unwrap(), SV, 80, 0),
        );
        assert_ne!(x.key, y.key);
        for burst in [false, true] {
            let mut t = FlowTable::new(64, timeouts()).unwrap();
            let mut pending = Vec::new();
            for i in 0..10u64 {
                let p = if i % 3 == 0 { &x } else { &y };
                if burst {
                    pending.push(BurstPacket::new(p, S + i, 100, 100));
                } else {
                    t.update(p, S + i, 100, 100);
                }
            }
            t.update_burst(&pending);
            let mut v = Vec::new();
            t.drain(&mut |r| v.push(*r));
            v.sort_by_key(|r| r.packets.iter().sum::<u64>());
            let count = |r: &FlowRecord| r.packets.iter().sum::<u64>();
            assert_eq!(v.len(), 2, "burst {burst}");
            assert_eq!((count(&v[0]), count(&v[1])), (4, 6));
            assert_eq!(v[0].key, x.key);
            assert_eq!(v[1].key, y.key);
        }
    }

    /// Inverts `compact_image` (two Feistel rounds backwards).
    fn compact_inverse(hash: u64, check: u64) -> (u64, u64) {
        fn f(x: u64, k: u64) -> u64 {
            let mut h = x ^ k;
            h = (h ^ (h >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
            h = (h ^ (h >> 33)).wrapping_mul(0xc4ce_b9fe_1a85_ec53);
            (h ^ (h >> 33)) & M63
        }
        let (l2, r2) = (check & M63, hash);
        let (l1, r1) = (r2 ^ f(l2, 0x1319_8a2e_0370_7344), l2);
        (r1 ^ f(l1, 0x243f_6a88_85a3_08d3), l1)
    }

    use proptest::prelude::*;

    proptest! {
        /// The worker's flows-only path (`parse_common` + `BurstPacket::common`)
        /// gives the table the same entry as the general path
        /// (`parse_frame` + `BurstPacket::new`): key words, hash, direction,
        /// TCP flags, payload head.
        #[test]
        fn common_frames_give_the_same_burst_entry(
            tcp in any::<bool>(),
            src in any::<[u8; 4]>(),
            dst in any::<[u8; 4]>(),
            ports in any::<(u16, u16)>(),
            same in 0u8..4,
            flags in any::<u8>(),
            payload in proptest::collection::vec(any::<u8>(), 0..12),
        ) {
            let dst = if same == 0 { src } else { dst };
            let (sp, dp) = if same == 0 { (ports.0, ports.0) } else { ports };
            let mut l4 = Vec::new();
            l4.extend_from_slice(&sp.to_be_bytes());
            l4.extend_from_slice(&dp.to_be_bytes());
            if tcp {
                l4.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 2, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
            } else {
                l4.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
                l4.extend_from_slice(&[0, 0]);
            }
            l4.extend_from_slice(&payload);
            let mut f = vec![0u8; 12];
            f.extend_from_slice(&[0x08, 0x00, 0x45, 0]);
            f.extend_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
            f.extend_from_slice(&[0, 0, 0x40, 0, 64, if tcp { 6 } else { 17 }, 0, 0]);
            f.extend_from_slice(&src);
            f.extend_from_slice(&dst);
            f.extend_from_slice(&l4);
            let c = linecap_wire::flow::parse_common(&f).expect("a common frame");
            let Parsed::Ip(info) = linecap_wire::flow::parse_frame(&f) else {
                panic!("not IP")
            };
            let len = f.len() as u32;
            prop_assert_eq!(BurstPacket::common(&c, 7, len, len), BurstPacket::new(&info, 7, len, len));
            prop_assert_eq!(BurstPacket::new(&info, 7, len, len).hash(), flow_hash(&info.key));
        }

        /// A compact key's hash and check are its halves re-coded: the
        /// Feistel image inverts to them (so equal tag and check means an
        /// equal key), the check is marked compact, and keys that are not
        /// compact (IPv6, VLAN-tagged, fragments) check with 0.
        #[test]
        fn compact_keys_are_their_tag_and_check(
            a in any::<[u8; 4]>(),
            b in any::<[u8; 4]>(),
            pa in any::<u16>(),
            pb in any::<u16>(),
            proto in any::<u8>(),
            kind in 0u8..4,
        ) {
            let mut x = [0u8; 16];
            x[..4].copy_from_slice(&a);
            let mut y = [0u8; 16];
            y[..4].copy_from_slice(&b);
            let mut vl = VlanStack::new();
            if kind == 1 {
                vl.push(pa & 0xfff);
            }
            let fam = if kind == 2 { IpFamily::V6 } else { IpFamily::V4 };
            let key = FlowKey::from_endpoints(vl, proto, kind == 3, fam, x, pa, y, pb).0;
            let w = encode_key(&key);
            let (hash, check) = hash_check(&w);
            prop_assert_eq!(hash >> 63, 0);
            prop_assert_eq!(hash, flow_hash(&key));
            match compact_halves(&w) {
                Some((l, r)) => {
                    prop_assert_eq!(kind, 0);
                    prop_assert!(check & CHECK_COMPACT != 0);
                    prop_assert_eq!(compact_inverse(hash, check), (l, r));
                    // The halves hold every field of the key.
                    let k = decode_key(&w);
                    let mut a4 = [0u8; 4];
                    a4.copy_from_slice(&k.addr_a_bytes()[..4]);
                    let a4 = u64::from(u32::from_le_bytes(a4));
                    prop_assert_eq!(l, a4 | u64::from(k.port_a()) << 32 | u64::from(proto) << 48);
                    prop_assert_eq!(k, key);
                }
                None => {
                    prop_assert!(kind != 0);
                    prop_assert_eq!(check, 0);
                }
            }
        }

        /// The burst path (stage-2 slot hints, the updates a burst later)
        /// and the per-packet path (no hint) give the same records and
        /// counters, through idle, active and TCP ends (FIN seen before an
        /// active restart, RST, linger), cut frames, first payloads and
        /// reordered timestamps.
        #[test]
        fn burst_path_equals_the_per_packet_path(
            ops in proptest::collection::vec(
                (0u16..4, any::<bool>(), 0usize..7, 0u64..40, 40u32..200, 0u8..4, any::<bool>()),
                1..400,
            ),
        ) {
            let tcp = [0, flags::ACK, flags::ACK | flags::PSH, flags::SYN, flags::FIN | flags::ACK, flags::RST, 0];
            let t = Timeouts { idle_ns: 120, active_ns: 200, linger_ns: 15 };
            let mut a = FlowTable::new(1024, t).unwrap();
            let mut b = FlowTable::new(1024, t).unwrap();
            let mut now = 1_000u64;
            let mut burst = Vec::new();
            for (f, dir, fl, dt, len, cut, pay) in ops {
                // Mostly forward in time, sometimes a little back.
                now = if dt < 4 { now.saturating_sub(dt) } else { now + dt - 4 };
                let (s, d) = ([10, 0, 0, f as u8], [10, 9, 0, 1]);
                let mut p = if dir { info(s, 1000 + f, d, 80, tcp[fl]) } else { info(d, 80, s, 1000 + f, tcp[fl]) };
                if pay {
                    p.payload = linecap_wire::applabel::PayloadHead { len: 7, bytes: [1, 2, 3, 4], captured: 4 };
                }
                let cap = if cut == 0 { len / 2 } else { len };
                a.update(&p, now, len, cap);
                burst.push(BurstPacket::new(&p, now, len, cap));
                if burst.len() == 23 {
                    b.update_burst(&burst);
                    burst.clear();
                }
            }
            b.update_burst(&burst);
            let mut ra = Vec::new();
            let mut rb = Vec::new();
            a.take_expired(&mut |r| ra.push(*r));
            b.take_expired(&mut |r| rb.push(*r));
            a.drain(&mut |r| ra.push(*r));
            b.drain(&mut |r| rb.push(*r));
            prop_assert_eq!(ra, rb);
            prop_assert_eq!(a.counters(), b.counters());
        }

        /// Random packets (IPv4/IPv6, VLANs, both directions, burst or
        /// single updates) against a `HashMap` model: while nothing is
        /// evicted or expires, the table holds exactly the model's flows
        /// with the same counters.
        #[test]
        fn table_equals_a_hashmap_model(
            ops in proptest::collection::vec((0u16..300, any::<bool>(), 0u8..3, 1u32..1500, 0u64..1000), 1..600),
            burst in any::<bool>(),
        ) {
            use std::collections::HashMap;
            let mut t = FlowTable::new(1024, timeouts()).unwrap();
            // packets, bytes, first, last, a_initiated
            type Model = ([u64; 2], [u64; 2], u64, u64, bool);
            let mut model: HashMap<FlowKey, Model> = HashMap::new();
            let mut now = 0u64;
            let mut pending = Vec::new();
            for (f, dir, kind, len, dt) in ops {
                now += dt;
                let mut vl = VlanStack::new();
                let fam = if kind == 1 { IpFamily::V6 } else { IpFamily::V4 };
                if kind == 2 {
                    vl.push(f % 7);
                }
                let mut x = [0u8; 16];
                x[..2].copy_from_slice(&f.to_be_bytes());
                let y = [0xaa; 16];
                let (src, dst) = if dir { (x, y) } else { (y, x) };
                let (key, a_to_b) = FlowKey::from_endpoints(vl, protocol::UDP, false, fam, src, 10, dst, 20);
                let mut p = fwd(0);
                p.key = key;
                p.a_to_b = a_to_b;
                let e = model.entry(key).or_insert(([0; 2], [0; 2], now, now, a_to_b));
                let d = usize::from(!a_to_b);
                e.0[d] += 1;
                e.1[d] += u64::from(len);
                e.3 = now;
                if burst {
                    pending.push(BurstPacket::new(&p, now, len, len));
                    if pending.len() == 37 {
                        t.update_burst(&pending);
                        pending.clear();
                    }
                } else {
                    t.update(&p, now, len, len);
                }
            }
            t.update_burst(&pending);
            prop_assert_eq!(t.counters().evicted, 0);
            prop_assert_eq!(t.counters().active, model.len() as u64);
            let mut seen = 0;
            t.for_each_active(|r| {
                seen += 1;
                let m = model.get(&r.key).copied();
                assert_eq!(m, Some((r.packets, r.bytes, r.first_ns, r.last_ns, r.a_initiated)));
                assert_eq!(r.bytes, r.captured_bytes);
            });
            prop_assert_eq!(seen, model.len());
        }
    }
}

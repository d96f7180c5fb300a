//! The per-file packet index (`NAME.idx`): its key extraction, its in-memory
//! form and its byte layout (`docs/index-format.md` describes it byte by byte).
//!
//! An index answers one question for the query planner: *which blocks of the
//! data file can hold a packet that matches a `host`/`net`/`port`/`proto`/
//! `vlan` term?* It may over-answer, never under-answer. To keep that
//! promise the key is taken exactly where libpcap's filters look (see
//! [`index_key`]); every frame whose fields a filter could read elsewhere is
//! marked *wild* and its blocks are chosen for every term.
//!
//! Layout, version 2 (all integers little-endian; "var" is unsigned LEB128,
//! "zz" a zigzag-coded signed difference as a var):
//!
//! ```text
//! header   84 bytes  magic "LCAPIDX\0", version, counts, time range, section lengths, header CRC
//! blocks   n_blocks entries: offset gap, len, erf_len, zz ts_min step, ts span, records (vars)
//! flows    n_flows entries sorted by key: control byte, [proto, VLANs], zz address-number step,
//!          address-number gap, [ports], block list, zz first/last time from their blocks, packets, bytes
//! addrs    n_addrs entries: front-coded 16-byte address (IPv4 as ::ffff:a.b.c.d), block list
//! ports    n_ports entries: port step, block list
//! trailer  4 bytes   CRC-32 (IEEE) of everything before it
//! ```
//!
//! A block list is delta varints or a bitmap, whichever is shorter. The
//! address and port posting lists hold block numbers. Version 1 (fixed-size
//! tables, 72-byte header) is still read.

extern crate alloc;

use alloc::vec::Vec;

/// First 8 bytes of every index file.
pub const MAGIC: [u8; 8] = *b"LCAPIDX\0";
/// Layout version this code writes (and the newest it reads).
pub const VERSION: u16 = 2;
/// Bytes of the fixed header of [`VERSION`] 2.
pub const HEADER_LEN: usize = 88;
/// Bytes of the fixed header of version 1 (still read).
pub const HEADER_LEN_V1: usize = 72;
/// The most header bytes any readable version has: read this many (or the
/// whole file, if shorter) to decode a header.
pub const HEADER_LEN_MAX: usize = HEADER_LEN;
const BLOCK_LEN_V1: usize = 36;
const FLOW_LEN_V1: usize = 60;
const ADDR_LEN_V1: usize = 24;
const PORT_LEN_V1: usize = 12;
/// Header flag: the data file is one LZ4 frame (block offsets point at LZ4 blocks).
pub const FLAG_LZ4: u32 = 1;

/// Bits of [`FlowKey::flags`].
pub mod key_flags {
    /// The addresses are IPv6 (else IPv4, stored v4-mapped).
    pub const V6: u8 = 1;
    /// The ports were read (TCP/UDP/SCTP, first fragment, 4 bytes present).
    pub const PORTS: u8 = 2;
    /// Protocol and ports are unknown to the index (IPv6 with extension
    /// headers): the flow's blocks are chosen for every proto/port term.
    pub const L4_WILD: u8 = 4;
    /// Not an IPv4/IPv6 frame the index can key (ARP, MPLS, more than two
    /// VLAN tags, truncated, ...): chosen for every term.
    pub const WILD: u8 = 8;
}

/// What the index knows of one packet; the bidirectional flow key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlowKey {
    /// VLAN IDs outer to inner (0 where absent).
    pub vlans: [u16; 2],
    /// Number of VLAN tags (0..=2).
    pub nvlan: u8,
    /// IPv4 protocol / IPv6 next header of the fixed header.
    pub proto: u8,
    /// The lower (address, port) pair's address (IPv4 v4-mapped).
    pub addr_a: [u8; 16],
    /// The higher pair's address.
    pub addr_b: [u8; 16],
    /// Port of `addr_a`.
    pub port_a: u16,
    /// Port of `addr_b`.
    pub port_b: u16,
    /// See [`key_flags`].
    pub flags: u8,
}

impl FlowKey {
    /// The key every unkeyable frame shares.
    pub const WILD: FlowKey = FlowKey {
        vlans: [0; 2],
        nvlan: 0,
        proto: 0,
        addr_a: [0; 16],
        addr_b: [0; 16],
        port_a: 0,
        port_b: 0,
        flags: key_flags::WILD,
    };

    /// Whether the key is the wild key.
    pub fn is_wild(&self) -> bool {
        self.flags & key_flags::WILD != 0
    }
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn addr16(b: &[u8], at: usize, len: usize) -> Option<[u8; 16]> {
    let s = b.get(at..at + len)?;
    let mut a = [0u8; 16];
    if len == 4 {
        a[10] = 0xff;
        a[11] = 0xff;
        a[12..].copy_from_slice(s);
    } else {
        a.copy_from_slice(s);
    }
    Some(a)
}

/// The index key of one Ethernet frame, read where libpcap's `host`, `net`,
/// `port`, `proto` and `vlan` primitives read: the EtherType at offset 12
/// (after at most two VLAN tags 0x8100/0x88A8/0x9100), the IPv4 header's
/// protocol and addresses (ports only when the fragment offset is 0), the
/// IPv6 fixed header (ports only when its next header is TCP/UDP/SCTP
/// directly; other next headers than ICMPv6 make the flow [`key_flags::L4_WILD`]).
/// Anything else gives [`FlowKey::WILD`]. Never panics.
pub fn index_key(frame: &[u8]) -> FlowKey {
    key_of(frame).unwrap_or(FlowKey::WILD)
}

fn key_of(f: &[u8]) -> Option<FlowKey> {
    let mut et = be16(f, 12)?;
    let mut off = 14;
    let mut k = FlowKey::default();
    while matches!(et, 0x8100 | 0x88a8 | 0x9100) {
        if k.nvlan == 2 {
            return None;
        }
        k.vlans[k.nvlan as usize] = be16(f, off)? & 0x0fff;
        k.nvlan += 1;
        et = be16(f, off + 2)?;
        off += 4;
    }
    let (a, b, l4) = match et {
        0x0800 => {
            let h = f.get(off..off + 20)?;
            if h[0] >> 4 != 4 {
                return None;
            }
            let ihl = usize::from(h[0] & 0x0f) * 4;
            k.proto = h[9];
            let frag = u16::from_be_bytes([h[6], h[7]]) & 0x1fff;
            (
                addr16(f, off + 12, 4)?,
                addr16(f, off + 16, 4)?,
                (frag == 0).then_some(off + ihl),
            )
        }
        0x86dd => {
            let h = f.get(off..off + 40)?;
            if h[0] >> 4 != 6 {
                return None;
            }
            k.flags |= key_flags::V6;
            k.proto = h[6];
            if !matches!(k.proto, 6 | 17 | 132 | 58) {
                k.flags |= key_flags::L4_WILD;
            }
            (
                addr16(f, off + 8, 16)?,
                addr16(f, off + 24, 16)?,
                Some(off + 40),
            )
        }
        _ => return None,
    };
    let (mut pa, mut pb) = (0, 0);
    if matches!(k.proto, 6 | 17 | 132)
        && k.flags & key_flags::L4_WILD == 0
        && let Some(at) = l4
        && let (Some(s), Some(d)) = (be16(f, at), be16(f, at + 2))
    {
        k.flags |= key_flags::PORTS;
        (pa, pb) = (s, d);
    }
    if (a, pa) <= (b, pb) {
        (k.addr_a, k.port_a, k.addr_b, k.port_b) = (a, pa, b, pb);
    } else {
        (k.addr_a, k.port_a, k.addr_b, k.port_b) = (b, pb, a, pa);
    }
    Some(k)
}

/// One block of the data file: a run of bytes that decodes on its own (one
/// or more LZ4 blocks, or plain ERF records).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlockEntry {
    /// Offset in the data file.
    pub offset: u64,
    /// Bytes in the data file.
    pub len: u32,
    /// ERF bytes once decoded.
    pub erf_len: u32,
    /// Smallest record timestamp, ns.
    pub ts_min: u64,
    /// Largest record timestamp, ns.
    pub ts_max: u64,
    /// Records in the block.
    pub records: u32,
}

/// One flow of the file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlowEntry {
    /// Its key.
    pub key: FlowKey,
    /// First packet's time, ns.
    pub first_ns: u64,
    /// Last packet's time, ns.
    pub last_ns: u64,
    /// Packets.
    pub packets: u64,
    /// Wire bytes.
    pub bytes: u64,
    /// Blocks it appears in (ascending block numbers).
    pub blocks: Vec<u32>,
}

/// A whole index in memory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Index {
    /// Header flags ([`FLAG_LZ4`]).
    pub flags: u32,
    /// Size of the data file the index describes.
    pub data_bytes: u64,
    /// Blocks in file order.
    pub blocks: Vec<BlockEntry>,
    /// Flows sorted by key.
    pub flows: Vec<FlowEntry>,
    /// Sorted addresses, each with the (ascending) blocks holding a packet
    /// of one of its flows (the posting list `host X` reads).
    pub addrs: Vec<([u8; 16], Vec<u32>)>,
    /// Sorted ports, each with the (ascending) blocks holding a packet of
    /// one of its flows.
    pub ports: Vec<(u16, Vec<u32>)>,
}

/// Bytes of each section of an index file (what `linecap index` and
/// `bench query` print as the breakdown).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sections {
    /// The block table.
    pub blocks: u64,
    /// The flow table (version 2: with each flow's block list).
    pub flows: u64,
    /// The address table with its posting lists (version 1: the table only).
    pub addrs: u64,
    /// The port table with its posting lists (version 1: the table only).
    pub ports: u64,
    /// Version 1 only: the shared lists section (0 in version 2).
    pub lists: u64,
    /// Version 2: the blocks holding a wild packet and those holding a
    /// wild or L4-wild packet (two block lists).
    pub wild: u64,
}

impl Sections {
    /// All sections together (the file less its header and trailer).
    pub fn total(&self) -> u64 {
        self.blocks + self.flows + self.addrs + self.ports + self.lists + self.wild
    }
}

/// The fixed header alone (what time pruning reads).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Header {
    /// Layout version (1 or 2).
    pub version: u16,
    /// Bytes of the fixed header ([`HEADER_LEN`] or [`HEADER_LEN_V1`]).
    pub header_len: u16,
    /// Header flags.
    pub flags: u32,
    /// Size of the data file the index describes.
    pub data_bytes: u64,
    /// Smallest packet time in the file, ns (`u64::MAX` when empty).
    pub ts_min: u64,
    /// Largest packet time, ns (0 when empty).
    pub ts_max: u64,
    /// Packets.
    pub packets: u64,
    /// Counts of the sections.
    pub n_blocks: u32,
    /// Flows.
    pub n_flows: u32,
    /// Addresses.
    pub n_addrs: u32,
    /// Ports.
    pub n_ports: u32,
    /// Bytes of each section.
    pub sections: Sections,
}

impl Header {
    /// Total bytes of the index file this header announces.
    pub fn file_len(&self) -> u64 {
        u64::from(self.header_len) + self.sections.total() + 4
    }
}

/// Why an index could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexError {
    /// Shorter than its header or than the header announces.
    Truncated,
    /// Not an index (bad magic).
    BadMagic,
    /// A version this code does not read.
    Version(u16),
    /// A checksum does not match (corruption).
    Checksum,
    /// Internally inconsistent (a list reference out of range).
    Inconsistent,
}

impl core::fmt::Display for IndexError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            IndexError::Truncated => f.write_str("index truncated"),
            IndexError::BadMagic => f.write_str("not a linecap index (bad magic)"),
            IndexError::Version(v) => write!(f, "index version {v} not supported"),
            IndexError::Checksum => f.write_str("index checksum mismatch (corrupt)"),
            IndexError::Inconsistent => f.write_str("index inconsistent"),
        }
    }
}

/// CRC-32 (IEEE 802.3, reflected, as zlib's `crc32`).
pub fn crc32(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut t = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    };
    let mut c = !0u32;
    for &b in data {
        c = TABLE[((c ^ b as u32) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

// ---- version 2: varints ------------------------------------------------

/// Unsigned LEB128.
fn put_var(o: &mut Vec<u8>, mut v: u64) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            o.push(b);
            return;
        }
        o.push(b | 0x80);
    }
}

fn var_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// Zigzag: small signed differences as small unsigned numbers.
fn zz(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzz(u: u64) -> i64 {
    ((u >> 1) as i64) ^ -((u & 1) as i64)
}

/// A cursor over one section; every read is checked.
struct Rd<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Rd<'a> {
    fn var(&mut self) -> Option<u64> {
        let mut v = 0u64;
        let mut shift = 0u32;
        loop {
            let byte = *self.b.get(self.pos)?;
            self.pos += 1;
            let bits = u64::from(byte & 0x7f);
            if shift == 63 && bits > 1 {
                return None;
            }
            v |= bits << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
            shift += 7;
            if shift > 63 {
                return None;
            }
        }
    }
    fn var32(&mut self) -> Option<u32> {
        u32::try_from(self.var()?).ok()
    }
    fn u8(&mut self) -> Option<u8> {
        let b = *self.b.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }
    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }
    fn u16le(&mut self) -> Option<u16> {
        let s = self.bytes(2)?;
        Some(u16::from_le_bytes([s[0], s[1]]))
    }
    fn left(&self) -> usize {
        self.b.len() - self.pos
    }
    fn done(&self) -> bool {
        self.pos == self.b.len()
    }
}

/// A block list (ascending block numbers): `n << 1 | bitmap` as a varint,
/// then either the first block and each next one as `(v - prev - 1)`
/// varints, or the first block, the bitmap's length in bytes and the
/// bitmap (bit `i` of byte `j`: block `first + 8j + i`), whichever is
/// shorter.
fn put_blocks(o: &mut Vec<u8>, list: &[u32]) {
    let (Some(&first), Some(&last)) = (list.first(), list.last()) else {
        put_var(o, 0);
        return;
    };
    let n = list.len() as u64;
    let mut delta_cost = var_len(u64::from(first));
    for w in list.windows(2) {
        delta_cost += var_len(u64::from(w[1].wrapping_sub(w[0]).wrapping_sub(1)));
    }
    let map_bytes = (u64::from(last - first.min(last)) / 8) + 1;
    let map_cost = var_len(u64::from(first)) + var_len(map_bytes) + map_bytes as usize;
    if map_cost < delta_cost {
        put_var(o, (n << 1) | 1);
        put_var(o, u64::from(first));
        put_var(o, map_bytes);
        let start = o.len();
        o.resize(start + map_bytes as usize, 0);
        for &v in list {
            let bit = (v - first) as usize;
            o[start + bit / 8] |= 1 << (bit % 8);
        }
    } else {
        put_var(o, n << 1);
        put_var(o, u64::from(first));
        for w in list.windows(2) {
            put_var(o, u64::from(w[1].wrapping_sub(w[0]).wrapping_sub(1)));
        }
    }
}

/// Read a block list whose values must be below `limit`.
fn get_blocks(r: &mut Rd<'_>, limit: u32) -> Option<Vec<u32>> {
    let head = r.var()?;
    let n = head >> 1;
    if n == 0 {
        return (head == 0).then(Vec::new);
    }
    // Ascending and below `limit`: at most `limit` values.
    if n > u64::from(limit) {
        return None;
    }
    let mut v = Vec::with_capacity(n as usize);
    let first = r.var32()?;
    if first >= limit {
        return None;
    }
    if head & 1 == 1 {
        let map_bytes = usize::try_from(r.var()?).ok()?;
        let map = r.bytes(map_bytes)?;
        for (j, &byte) in map.iter().enumerate() {
            for i in 0..8 {
                if byte & (1 << i) != 0 {
                    let x = u64::from(first) + (j as u64) * 8 + i;
                    if x >= u64::from(limit) || v.len() as u64 == n {
                        return None;
                    }
                    v.push(x as u32);
                }
            }
        }
        if v.len() as u64 != n || v.first() != Some(&first) {
            return None;
        }
    } else {
        v.push(first);
        let mut prev = first;
        for _ in 1..n {
            let d = r.var32()?;
            let x = prev.checked_add(d)?.checked_add(1)?;
            if x >= limit {
                return None;
            }
            v.push(x);
            prev = x;
        }
    }
    Some(v)
}

fn put_u32s(o: &mut Vec<u8>, xs: &[u32]) {
    for x in xs {
        o.extend_from_slice(&x.to_le_bytes());
    }
}

impl Index {
    /// Smallest and largest record time over the blocks.
    pub fn ts_range(&self) -> (u64, u64) {
        self.blocks.iter().fold((u64::MAX, 0), |(lo, hi), b| {
            (lo.min(b.ts_min), hi.max(b.ts_max))
        })
    }

    /// Number of `addr` in the address table (`u32::MAX` when it is not in
    /// the table).
    fn addr_no(&self, addr: &[u8; 16]) -> u32 {
        self.addrs
            .binary_search_by(|(a, _)| a.cmp(addr))
            .map_or(u32::MAX, |i| i as u32)
    }

    /// The blocks holding a wild packet, and those holding a wild or an
    /// L4-wild packet (ascending).
    pub fn wild_blocks(&self) -> (Vec<u32>, Vec<u32>) {
        let (mut w, mut l4) = (Vec::new(), Vec::new());
        for f in &self.flows {
            if f.key.is_wild() {
                w.extend_from_slice(&f.blocks);
                l4.extend_from_slice(&f.blocks);
            } else if f.key.flags & key_flags::L4_WILD != 0 {
                l4.extend_from_slice(&f.blocks);
            }
        }
        for v in [&mut w, &mut l4] {
            v.sort_unstable();
            v.dedup();
        }
        (w, l4)
    }

    fn block_ts(&self, list: &[u32], last: bool) -> u64 {
        let b = if last { list.last() } else { list.first() };
        b.and_then(|&b| self.blocks.get(b as usize))
            .map_or(0, |b| b.ts_min)
    }

    /// The index's bytes (version 2, `docs/index-format.md`).
    pub fn encode(&self) -> Vec<u8> {
        // Blocks.
        let mut blocks = Vec::with_capacity(self.blocks.len() * 16);
        let (mut end, mut prev_ts) = (0u64, 0u64);
        for b in &self.blocks {
            put_var(&mut blocks, b.offset.wrapping_sub(end));
            put_var(&mut blocks, u64::from(b.len));
            put_var(&mut blocks, u64::from(b.erf_len));
            put_var(&mut blocks, zz(b.ts_min.wrapping_sub(prev_ts) as i64));
            put_var(&mut blocks, b.ts_max.wrapping_sub(b.ts_min));
            put_var(&mut blocks, u64::from(b.records));
            end = b.offset.wrapping_add(u64::from(b.len));
            prev_ts = b.ts_min;
        }
        // Flows.
        let mut flows = Vec::with_capacity(self.flows.len() * 24);
        let mut prev_a = 0u32;
        let mut class: Option<([u16; 2], u8, u8)> = None;
        for f in &self.flows {
            let k = &f.key;
            let mut ctl = k.flags & 0x0f;
            if !k.is_wild() {
                let c = (k.vlans, k.nvlan, k.proto);
                if class != Some(c) {
                    ctl |= CTL_CLASS;
                }
                flows.push(ctl);
                if class != Some(c) {
                    flows.push(k.proto);
                    flows.push(k.nvlan);
                    for v in &k.vlans[..usize::from(k.nvlan.min(2))] {
                        put_var(&mut flows, u64::from(*v));
                    }
                    class = Some(c);
                }
                let a = self.addr_no(&k.addr_a);
                let b = self.addr_no(&k.addr_b);
                put_var(&mut flows, zz(i64::from(a.wrapping_sub(prev_a) as i32)));
                put_var(&mut flows, u64::from(b.wrapping_sub(a)));
                prev_a = a;
                if k.flags & key_flags::PORTS != 0 {
                    flows.extend_from_slice(&k.port_a.to_le_bytes());
                    flows.extend_from_slice(&k.port_b.to_le_bytes());
                }
            } else {
                flows.push(ctl);
            }
            put_blocks(&mut flows, &f.blocks);
            let t0 = self.block_ts(&f.blocks, false);
            let t1 = self.block_ts(&f.blocks, true);
            put_var(&mut flows, zz(f.first_ns.wrapping_sub(t0) as i64));
            put_var(&mut flows, zz(f.last_ns.wrapping_sub(t1) as i64));
            put_var(&mut flows, f.packets);
            put_var(&mut flows, f.bytes);
        }
        // Addresses, front-coded.
        let mut addrs = Vec::with_capacity(self.addrs.len() * 8);
        let mut prev = [0u8; 16];
        for (a, list) in &self.addrs {
            let p = prev.iter().zip(a).take_while(|(x, y)| x == y).count();
            addrs.push(p as u8);
            addrs.extend_from_slice(&a[p..]);
            put_blocks(&mut addrs, list);
            prev = *a;
        }
        // Ports.
        let mut ports = Vec::with_capacity(self.ports.len() * 4);
        let mut prev_p = 0u16;
        for (p, list) in &self.ports {
            put_var(&mut ports, u64::from(p.wrapping_sub(prev_p)));
            put_blocks(&mut ports, list);
            prev_p = *p;
        }
        // Wild blocks, so `host`/`port` terms need not walk the flows.
        let (w, l4) = self.wild_blocks();
        let mut wild = Vec::new();
        put_blocks(&mut wild, &w);
        put_blocks(&mut wild, &l4);
        let (ts_min, ts_max) = self.ts_range();
        let packets: u64 = self.blocks.iter().map(|b| b.records as u64).sum();
        let mut o = Vec::with_capacity(
            HEADER_LEN + blocks.len() + flows.len() + addrs.len() + ports.len() + wild.len() + 4,
        );
        o.extend_from_slice(&MAGIC);
        o.extend_from_slice(&VERSION.to_le_bytes());
        o.extend_from_slice(&(HEADER_LEN as u16).to_le_bytes());
        o.extend_from_slice(&self.flags.to_le_bytes());
        o.extend_from_slice(&self.data_bytes.to_le_bytes());
        o.extend_from_slice(&ts_min.to_le_bytes());
        o.extend_from_slice(&ts_max.to_le_bytes());
        o.extend_from_slice(&packets.to_le_bytes());
        put_u32s(
            &mut o,
            &[
                self.blocks.len() as u32,
                self.flows.len() as u32,
                self.addrs.len() as u32,
                self.ports.len() as u32,
                blocks.len() as u32,
                flows.len() as u32,
                addrs.len() as u32,
                ports.len() as u32,
                wild.len() as u32,
            ],
        );
        let hcrc = crc32(&o[..HEADER_LEN - 4]);
        o.extend_from_slice(&hcrc.to_le_bytes());
        for s in [&blocks, &flows, &addrs, &ports, &wild] {
            o.extend_from_slice(s);
        }
        let crc = crc32(&o);
        o.extend_from_slice(&crc.to_le_bytes());
        o
    }

    /// Read a whole index (version 2, or version 1 written by earlier
    /// releases), verifying both checksums and every reference.
    pub fn decode(b: &[u8]) -> Result<Index, IndexError> {
        let h = checked_header(b)?;
        if h.version == 1 {
            return decode_v1(b, &h);
        }
        decode_v2(b, &h).ok_or(IndexError::Inconsistent)
    }
}

/// Flow control byte: bits 0-3 are the key's flags ([`key_flags`]); this
/// bit says the VLAN stack and protocol follow (they differ from the
/// previous keyed flow's).
const CTL_CLASS: u8 = 0x10;

/// The header of a whole index file `b`, after checking the file's length
/// against it and the trailing checksum (both decoders start here).
fn checked_header(b: &[u8]) -> Result<Header, IndexError> {
    let h = decode_header(b)?;
    if (b.len() as u64) < h.file_len() {
        return Err(IndexError::Truncated);
    }
    if b.len() as u64 != h.file_len() {
        return Err(IndexError::Inconsistent);
    }
    let body = b.len() - 4;
    if crc32(&b[..body]) != u32_at(b, body) {
        return Err(IndexError::Checksum);
    }
    Ok(h)
}

/// The block table of a version 2 index: `n` delta-coded entries filling
/// the section `rb` exactly (`None` if they do not). Shared by the whole
/// decode and the light [`IndexView`].
fn decode_blocks(rb: &mut Rd<'_>, n: u32) -> Option<Vec<BlockEntry>> {
    let mut blocks = Vec::with_capacity(n as usize);
    let (mut end, mut prev_ts) = (0u64, 0u64);
    for _ in 0..n {
        let offset = end.wrapping_add(rb.var()?);
        let len = rb.var32()?;
        let erf_len = rb.var32()?;
        let ts_min = prev_ts.wrapping_add(unzz(rb.var()?) as u64);
        let ts_max = ts_min.wrapping_add(rb.var()?);
        let records = rb.var32()?;
        blocks.push(BlockEntry {
            offset,
            len,
            erf_len,
            ts_min,
            ts_max,
            records,
        });
        end = offset.wrapping_add(u64::from(len));
        prev_ts = ts_min;
    }
    rb.done().then_some(blocks)
}

fn decode_v2(b: &[u8], h: &Header) -> Option<Index> {
    let s = &h.sections;
    let mut at = usize::from(h.header_len);
    let mut section = |len: u64| {
        let start = at;
        at += len as usize;
        Rd {
            b: &b[start..at],
            pos: 0,
        }
    };
    let (mut rb, mut rf, mut ra, mut rp, mut rw) = (
        section(s.blocks),
        section(s.flows),
        section(s.addrs),
        section(s.ports),
        section(s.wild),
    );
    // Every entry takes at least one byte: bound the allocations by the data.
    if h.n_blocks as usize > rb.left()
        || h.n_flows as usize > rf.left()
        || h.n_addrs as usize > ra.left()
        || h.n_ports as usize > rp.left()
    {
        return None;
    }
    let blocks = decode_blocks(&mut rb, h.n_blocks)?;
    // Addresses first: the flows refer to them by number.
    let mut addrs: Vec<([u8; 16], Vec<u32>)> = Vec::with_capacity(h.n_addrs as usize);
    let mut prev = [0u8; 16];
    for i in 0..h.n_addrs {
        let p = usize::from(ra.u8()?);
        if p > 16 {
            return None;
        }
        let mut a = prev;
        a[p..].copy_from_slice(ra.bytes(16 - p)?);
        if i > 0 && a <= prev {
            return None;
        }
        addrs.push((a, get_blocks(&mut ra, h.n_blocks)?));
        prev = a;
    }
    if !ra.done() {
        return None;
    }
    let mut ports: Vec<(u16, Vec<u32>)> = Vec::with_capacity(h.n_ports as usize);
    let mut prev_p = 0u16;
    for i in 0..h.n_ports {
        let d = u16::try_from(rp.var()?).ok()?;
        let p = prev_p.checked_add(d)?;
        if i > 0 && d == 0 {
            return None;
        }
        ports.push((p, get_blocks(&mut rp, h.n_blocks)?));
        prev_p = p;
    }
    if !rp.done() {
        return None;
    }
    let addr = |n: u32| addrs.get(n as usize).map(|(a, _)| *a);
    let mut flows = Vec::with_capacity(h.n_flows as usize);
    let mut prev_a = 0u32;
    let (mut vlans, mut nvlan, mut proto) = ([0u16; 2], 0u8, 0u8);
    let mut have_class = false;
    for _ in 0..h.n_flows {
        let ctl = rf.u8()?;
        if ctl & !(CTL_CLASS | 0x0f) != 0 {
            return None;
        }
        let flags = ctl & 0x0f;
        let key = if flags & key_flags::WILD != 0 {
            if ctl != key_flags::WILD {
                return None;
            }
            FlowKey::WILD
        } else {
            if ctl & CTL_CLASS != 0 {
                proto = rf.u8()?;
                nvlan = rf.u8()?;
                if nvlan > 2 {
                    return None;
                }
                vlans = [0; 2];
                for v in vlans.iter_mut().take(usize::from(nvlan)) {
                    *v = u16::try_from(rf.var()?).ok()?;
                }
                have_class = true;
            } else if !have_class {
                return None;
            }
            let da = i32::try_from(unzz(rf.var()?)).ok()?;
            let a = prev_a.wrapping_add(da as u32);
            let bn = a.wrapping_add(rf.var32()?);
            prev_a = a;
            let (port_a, port_b) = if flags & key_flags::PORTS != 0 {
                (rf.u16le()?, rf.u16le()?)
            } else {
                (0, 0)
            };
            FlowKey {
                vlans,
                nvlan,
                proto,
                addr_a: addr(a)?,
                addr_b: addr(bn)?,
                port_a,
                port_b,
                flags,
            }
        };
        let list = get_blocks(&mut rf, h.n_blocks)?;
        let t0 = list.first().map_or(0, |&x| blocks[x as usize].ts_min);
        let t1 = list.last().map_or(0, |&x| blocks[x as usize].ts_min);
        let first_ns = t0.wrapping_add(unzz(rf.var()?) as u64);
        let last_ns = t1.wrapping_add(unzz(rf.var()?) as u64);
        flows.push(FlowEntry {
            key,
            first_ns,
            last_ns,
            packets: rf.var()?,
            bytes: rf.var()?,
            blocks: list,
        });
    }
    if !rf.done() {
        return None;
    }
    let ix = Index {
        flags: h.flags,
        data_bytes: h.data_bytes,
        blocks,
        flows,
        addrs,
        ports,
    };
    // The wild section must say what the flows say.
    let (w, l4) = (
        get_blocks(&mut rw, h.n_blocks)?,
        get_blocks(&mut rw, h.n_blocks)?,
    );
    if !rw.done() || (w, l4) != ix.wild_blocks() {
        return None;
    }
    Some(ix)
}

/// A version 2 index read for one query: the header and the block table
/// decoded, the address and port sections walked on demand without
/// building their lists, the flows never touched. Opening checks the
/// whole file's checksum as [`Index::decode`] does.
pub struct IndexView<'a> {
    b: &'a [u8],
    h: Header,
    /// The block table.
    pub blocks: Vec<BlockEntry>,
}

impl<'a> IndexView<'a> {
    /// Open a version 2 index; `Err(Version(1))` for version 1 (decode it
    /// whole with [`Index::decode`]).
    pub fn open(b: &'a [u8]) -> Result<IndexView<'a>, IndexError> {
        let h = checked_header(b)?;
        if h.version != VERSION {
            return Err(IndexError::Version(h.version));
        }
        let mut rb = Rd {
            b: &b[usize::from(h.header_len)..][..h.sections.blocks as usize],
            pos: 0,
        };
        if h.n_blocks as usize > rb.left() {
            return Err(IndexError::Inconsistent);
        }
        let blocks = decode_blocks(&mut rb, h.n_blocks).ok_or(IndexError::Inconsistent)?;
        Ok(IndexView { b, h, blocks })
    }

    /// The header.
    pub fn header(&self) -> &Header {
        &self.h
    }

    fn section(&self, which: usize) -> Rd<'a> {
        let s = &self.h.sections;
        let lens = [s.blocks, s.flows, s.addrs, s.ports, s.wild];
        let start = usize::from(self.h.header_len) + lens[..which].iter().sum::<u64>() as usize;
        Rd {
            b: &self.b[start..start + lens[which] as usize],
            pos: 0,
        }
    }

    /// The union of the block lists of the addresses `pick` accepts;
    /// `stop` ends the walk early (addresses ascend).
    pub fn addr_blocks(
        &self,
        pick: impl Fn(&[u8; 16]) -> bool,
        stop: impl Fn(&[u8; 16]) -> bool,
    ) -> Result<Vec<u32>, IndexError> {
        let mut r = self.section(2);
        let mut prev = [0u8; 16];
        let mut out = Vec::new();
        let bad = IndexError::Inconsistent;
        for _ in 0..self.h.n_addrs {
            let p = usize::from(r.u8().ok_or(bad)?);
            if p > 16 {
                return Err(bad);
            }
            let mut a = prev;
            a[p..].copy_from_slice(r.bytes(16 - p).ok_or(bad)?);
            if stop(&a) {
                break;
            }
            if pick(&a) {
                out.extend(get_blocks(&mut r, self.h.n_blocks).ok_or(bad)?);
            } else {
                skip_blocks(&mut r).ok_or(bad)?;
            }
            prev = a;
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// The union of the block lists of the ports in `lo..=hi`.
    pub fn port_blocks(&self, lo: u16, hi: u16) -> Result<Vec<u32>, IndexError> {
        let mut r = self.section(3);
        let mut prev = 0u16;
        let mut out = Vec::new();
        let bad = IndexError::Inconsistent;
        for _ in 0..self.h.n_ports {
            let d = u16::try_from(r.var().ok_or(bad)?).map_err(|_| bad)?;
            let p = prev.checked_add(d).ok_or(bad)?;
            if p > hi {
                break;
            }
            if p >= lo {
                out.extend(get_blocks(&mut r, self.h.n_blocks).ok_or(bad)?);
            } else {
                skip_blocks(&mut r).ok_or(bad)?;
            }
            prev = p;
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// The blocks holding a wild packet, and those holding a wild or an
    /// L4-wild packet.
    pub fn wild_blocks(&self) -> Result<(Vec<u32>, Vec<u32>), IndexError> {
        let mut r = self.section(4);
        let n = self.h.n_blocks;
        let bad = IndexError::Inconsistent;
        Ok((
            get_blocks(&mut r, n).ok_or(bad)?,
            get_blocks(&mut r, n).ok_or(bad)?,
        ))
    }
}

/// Step over a block list without building it.
fn skip_blocks(r: &mut Rd<'_>) -> Option<()> {
    let head = r.var()?;
    let n = head >> 1;
    if n == 0 {
        return Some(());
    }
    r.var()?;
    if head & 1 == 1 {
        let k = usize::try_from(r.var()?).ok()?;
        r.bytes(k)?;
    } else {
        for _ in 1..n {
            r.var()?;
        }
    }
    Some(())
}

// ---- version 1 (read only) ----------------------------------------------

fn get_list_v1(lists: &[u8], off: u32, n: u32) -> Option<Vec<u32>> {
    let mut pos = off as usize;
    let mut prev = 0u32;
    // A list entry takes at least one byte: bound the allocation by the data.
    if (n as usize) > lists.len().saturating_sub(pos) {
        return None;
    }
    let mut v = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let mut d = 0u32;
        let mut shift = 0;
        loop {
            let b = *lists.get(pos)?;
            pos += 1;
            d |= u32::from(b & 0x7f).checked_shl(shift)?;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 28 {
                return None;
            }
        }
        prev = prev.wrapping_add(d);
        v.push(prev);
    }
    Some(v)
}

/// Version 1: fixed-size tables; its posting lists hold flow numbers, which
/// are turned into the blocks of those flows (what version 2 stores).
fn decode_v1(b: &[u8], h: &Header) -> Result<Index, IndexError> {
    let mut pos = HEADER_LEN_V1;
    let mut blocks = Vec::with_capacity(h.n_blocks as usize);
    for _ in 0..h.n_blocks {
        blocks.push(BlockEntry {
            offset: u64_at(b, pos),
            len: u32_at(b, pos + 8),
            erf_len: u32_at(b, pos + 12),
            ts_min: u64_at(b, pos + 16),
            ts_max: u64_at(b, pos + 24),
            records: u32_at(b, pos + 32),
        });
        pos += BLOCK_LEN_V1;
    }
    let flows_at = pos;
    pos += h.n_flows as usize * FLOW_LEN_V1;
    let addrs_at = pos;
    pos += h.n_addrs as usize * ADDR_LEN_V1;
    let ports_at = pos;
    pos += h.n_ports as usize * PORT_LEN_V1;
    let lists = &b[pos..pos + h.sections.lists as usize];
    let bad = IndexError::Inconsistent;
    let mut addrs = Vec::with_capacity(h.n_addrs as usize);
    for i in 0..h.n_addrs as usize {
        let p = addrs_at + i * ADDR_LEN_V1;
        let mut a = [0u8; 16];
        a.copy_from_slice(&b[p..p + 16]);
        let l = get_list_v1(lists, u32_at(b, p + 16), u32_at(b, p + 20)).ok_or(bad)?;
        addrs.push((a, l));
    }
    let mut ports = Vec::with_capacity(h.n_ports as usize);
    for i in 0..h.n_ports as usize {
        let p = ports_at + i * PORT_LEN_V1;
        let port = u16::from_le_bytes([b[p], b[p + 1]]);
        let l = get_list_v1(lists, u32_at(b, p + 4), u32_at(b, p + 8)).ok_or(bad)?;
        ports.push((port, l));
    }
    let addr = |i: u32| -> Result<[u8; 16], IndexError> {
        if i == u32::MAX {
            return Ok([0; 16]);
        }
        addrs.get(i as usize).map(|(a, _)| *a).ok_or(bad)
    };
    let mut flows: Vec<FlowEntry> = Vec::with_capacity(h.n_flows as usize);
    for i in 0..h.n_flows as usize {
        let p = flows_at + i * FLOW_LEN_V1;
        let key = FlowKey {
            addr_a: addr(u32_at(b, p))?,
            addr_b: addr(u32_at(b, p + 4))?,
            port_a: u16::from_le_bytes([b[p + 8], b[p + 9]]),
            port_b: u16::from_le_bytes([b[p + 10], b[p + 11]]),
            proto: b[p + 12],
            flags: b[p + 13],
            nvlan: b[p + 14],
            vlans: [
                u16::from_le_bytes([b[p + 16], b[p + 17]]),
                u16::from_le_bytes([b[p + 18], b[p + 19]]),
            ],
        };
        let blist = get_list_v1(lists, u32_at(b, p + 52), u32_at(b, p + 56)).ok_or(bad)?;
        if blist.iter().any(|&x| x >= h.n_blocks) {
            return Err(bad);
        }
        flows.push(FlowEntry {
            key,
            first_ns: u64_at(b, p + 20),
            last_ns: u64_at(b, p + 28),
            packets: u64_at(b, p + 36),
            bytes: u64_at(b, p + 44),
            blocks: blist,
        });
    }
    let to_blocks = |l: &Vec<u32>| -> Result<Vec<u32>, IndexError> {
        let mut v = Vec::new();
        for &f in l {
            v.extend_from_slice(&flows.get(f as usize).ok_or(bad)?.blocks);
        }
        v.sort_unstable();
        v.dedup();
        Ok(v)
    };
    let addrs = addrs
        .iter()
        .map(|(a, l)| Ok((*a, to_blocks(l)?)))
        .collect::<Result<Vec<_>, IndexError>>()?;
    let ports = ports
        .iter()
        .map(|(p, l)| Ok((*p, to_blocks(l)?)))
        .collect::<Result<Vec<_>, IndexError>>()?;
    Ok(Index {
        flags: h.flags,
        data_bytes: h.data_bytes,
        blocks,
        flows,
        addrs,
        ports,
    })
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

/// Read and verify the fixed header only: pass the first
/// [`HEADER_LEN_MAX`] bytes (or the whole file, if it is shorter).
pub fn decode_header(b: &[u8]) -> Result<Header, IndexError> {
    if b.len() < 12 {
        return Err(IndexError::Truncated);
    }
    if b[..8] != MAGIC {
        return Err(IndexError::BadMagic);
    }
    let version = u16::from_le_bytes([b[8], b[9]]);
    let hlen = u16::from_le_bytes([b[10], b[11]]);
    let want = match version {
        1 => HEADER_LEN_V1,
        2 => HEADER_LEN,
        v => return Err(IndexError::Version(v)),
    };
    if usize::from(hlen) != want {
        return Err(IndexError::Version(version));
    }
    if b.len() < want {
        return Err(IndexError::Truncated);
    }
    if crc32(&b[..want - 4]) != u32_at(b, want - 4) {
        return Err(IndexError::Checksum);
    }
    let mut h = Header {
        version,
        header_len: hlen,
        flags: u32_at(b, 12),
        data_bytes: u64_at(b, 16),
        ts_min: u64_at(b, 24),
        ts_max: u64_at(b, 32),
        packets: u64_at(b, 40),
        n_blocks: u32_at(b, 48),
        n_flows: u32_at(b, 52),
        n_addrs: u32_at(b, 56),
        n_ports: u32_at(b, 60),
        sections: Sections::default(),
    };
    h.sections = if version == 1 {
        Sections {
            blocks: u64::from(h.n_blocks) * BLOCK_LEN_V1 as u64,
            flows: u64::from(h.n_flows) * FLOW_LEN_V1 as u64,
            addrs: u64::from(h.n_addrs) * ADDR_LEN_V1 as u64,
            ports: u64::from(h.n_ports) * PORT_LEN_V1 as u64,
            lists: u64::from(u32_at(b, 64)),
            wild: 0,
        }
    } else {
        Sections {
            blocks: u64::from(u32_at(b, 64)),
            flows: u64::from(u32_at(b, 68)),
            addrs: u64::from(u32_at(b, 72)),
            ports: u64::from(u32_at(b, 76)),
            lists: 0,
            wild: u64::from(u32_at(b, 80)),
        }
    };
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn udp4(src: [u8; 4], dst: [u8; 4], sp: u16, dp: u16, vlan: Option<u16>) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        if let Some(v) = vlan {
            f.extend_from_slice(&[0x81, 0x00]);
            f.extend_from_slice(&v.to_be_bytes());
        }
        f.extend_from_slice(&[0x08, 0x00, 0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0]);
        f.extend_from_slice(&src);
        f.extend_from_slice(&dst);
        f.extend_from_slice(&sp.to_be_bytes());
        f.extend_from_slice(&dp.to_be_bytes());
        f.extend_from_slice(&[0, 8, 0, 0]);
        f
    }

    #[test]
    fn keys_are_bidirectional_and_read_vlans() {
        let a = index_key(&udp4([10, 0, 0, 1], [10, 0, 0, 2], 1000, 53, Some(7)));
        let b = index_key(&udp4([10, 0, 0, 2], [10, 0, 0, 1], 53, 1000, Some(7)));
        assert_eq!(a, b);
        assert_eq!((a.nvlan, a.vlans[0], a.proto), (1, 7, 17));
        assert_eq!(a.flags, key_flags::PORTS);
        assert_eq!(&a.addr_a[12..], &[10, 0, 0, 1]);
        assert_eq!(a.port_a, 1000);
        // Cut inside the IP header, ARP, and garbage: wild.
        let f = udp4([1, 2, 3, 4], [5, 6, 7, 8], 1, 2, None);
        assert!(index_key(&f[..30]).is_wild());
        let mut arp = f.clone();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert!(index_key(&arp).is_wild());
        assert!(index_key(&[]).is_wild());
        // A non-first fragment keeps addresses, has no ports.
        let mut frag = f.clone();
        frag[20] = 0x00;
        frag[21] = 0x10;
        let k = index_key(&frag);
        assert!(!k.is_wild());
        assert_eq!(k.flags & key_flags::PORTS, 0);
    }

    type Sample = (Index, Vec<Vec<u32>>, Vec<Vec<u32>>);

    fn sample() -> Sample {
        let k1 = index_key(&udp4([10, 0, 0, 1], [10, 0, 0, 2], 1000, 53, None));
        let k2 = index_key(&udp4([10, 0, 0, 1], [192, 168, 0, 9], 5, 443, None));
        let mut flows = vec![
            FlowEntry {
                key: k1,
                first_ns: 1,
                last_ns: 9,
                packets: 3,
                bytes: 180,
                blocks: vec![0, 2],
            },
            FlowEntry {
                key: k2,
                first_ns: 4,
                last_ns: 5,
                packets: 2,
                bytes: 120,
                blocks: vec![1],
            },
            FlowEntry {
                key: FlowKey::WILD,
                first_ns: 2,
                last_ns: 2,
                packets: 1,
                bytes: 60,
                blocks: vec![1],
            },
        ];
        flows.sort_by_key(|f| f.key);
        // Postings by flow number (version 1) and by block (version 2).
        let mut addr_flows: Vec<([u8; 16], Vec<u32>)> = Vec::new();
        let mut port_flows: Vec<(u16, Vec<u32>)> = Vec::new();
        for (i, f) in flows.iter().enumerate() {
            if f.key.is_wild() {
                continue;
            }
            for a in [f.key.addr_a, f.key.addr_b] {
                match addr_flows.iter_mut().find(|(x, _)| *x == a) {
                    Some((_, l)) => l.push(i as u32),
                    None => addr_flows.push((a, vec![i as u32])),
                }
            }
            for p in [f.key.port_a, f.key.port_b] {
                match port_flows.iter_mut().find(|(x, _)| *x == p) {
                    Some((_, l)) => l.push(i as u32),
                    None => port_flows.push((p, vec![i as u32])),
                }
            }
        }
        addr_flows.sort();
        port_flows.sort();
        let to_blocks = |l: &Vec<u32>| {
            let mut v: Vec<u32> = l
                .iter()
                .flat_map(|&f| flows[f as usize].blocks.clone())
                .collect();
            v.sort();
            v.dedup();
            v
        };
        let addrs = addr_flows.iter().map(|(a, l)| (*a, to_blocks(l))).collect();
        let ports = port_flows.iter().map(|(p, l)| (*p, to_blocks(l))).collect();
        let ix = Index {
            flags: FLAG_LZ4,
            data_bytes: 12345,
            blocks: (0..3)
                .map(|i| BlockEntry {
                    offset: 7 + 100 * i,
                    len: 100,
                    erf_len: 300,
                    ts_min: 1 + i * 3,
                    ts_max: 3 + i * 3,
                    records: 2,
                })
                .collect(),
            flows,
            addrs,
            ports,
        };
        (
            ix,
            addr_flows.into_iter().map(|(_, l)| l).collect(),
            port_flows.into_iter().map(|(_, l)| l).collect(),
        )
    }

    #[test]
    fn encode_decode_round_trip_and_damage_is_detected() {
        let (ix, _, _) = sample();
        let bytes = ix.encode();
        assert_eq!(Index::decode(&bytes).unwrap(), ix);
        let h = decode_header(&bytes).unwrap();
        assert_eq!(h.file_len(), bytes.len() as u64);
        assert_eq!((h.ts_min, h.ts_max, h.packets), (1, 9, 6));
        assert_eq!(
            Index::decode(&bytes[..bytes.len() - 1]),
            Err(IndexError::Truncated)
        );
        assert_eq!(Index::decode(&bytes[..10]), Err(IndexError::Truncated));
        for at in [3, 20, HEADER_LEN + 5, bytes.len() - 10] {
            let mut bad = bytes.clone();
            bad[at] ^= 0x40;
            assert!(Index::decode(&bad).is_err(), "flip at {at}");
        }
    }

    fn put_list(out: &mut Vec<u8>, list: &[u32]) -> (u32, u32) {
        let off = out.len() as u32;
        let mut prev = 0u32;
        for &v in list {
            let mut d = v.wrapping_sub(prev);
            prev = v;
            loop {
                let byte = (d & 0x7f) as u8;
                d >>= 7;
                if d == 0 {
                    out.push(byte);
                    break;
                }
                out.push(byte | 0x80);
            }
        }
        (off, list.len() as u32)
    }

    fn addr_no(ix: &Index, addr: &[u8; 16]) -> u32 {
        ix.addrs
            .binary_search_by(|(a, _)| a.cmp(addr))
            .map_or(u32::MAX, |i| i as u32)
    }

    /// Version 1 as earlier releases wrote it (postings: flow numbers).
    fn encode_v1(ix: &Index, addr_flows: &[Vec<u32>], port_flows: &[Vec<u32>]) -> Vec<u8> {
        let mut lists = Vec::new();
        let flow_refs: Vec<(u32, u32)> = ix
            .flows
            .iter()
            .map(|f| put_list(&mut lists, &f.blocks))
            .collect();
        let addr_refs: Vec<(u32, u32)> = ix
            .addrs
            .iter()
            .zip(addr_flows)
            .map(|(_, l)| put_list(&mut lists, l))
            .collect();
        let port_refs: Vec<(u32, u32)> = ix
            .ports
            .iter()
            .zip(port_flows)
            .map(|(_, l)| put_list(&mut lists, l))
            .collect();
        let (ts_min, ts_max) = ix.ts_range();
        let packets: u64 = ix.blocks.iter().map(|b| b.records as u64).sum();
        let mut o = Vec::with_capacity(
            HEADER_LEN_V1
                + ix.blocks.len() * BLOCK_LEN_V1
                + ix.flows.len() * FLOW_LEN_V1
                + ix.addrs.len() * ADDR_LEN_V1
                + ix.ports.len() * PORT_LEN_V1
                + lists.len()
                + 4,
        );
        o.extend_from_slice(&MAGIC);
        o.extend_from_slice(&1u16.to_le_bytes());
        o.extend_from_slice(&(HEADER_LEN_V1 as u16).to_le_bytes());
        o.extend_from_slice(&ix.flags.to_le_bytes());
        o.extend_from_slice(&ix.data_bytes.to_le_bytes());
        o.extend_from_slice(&ts_min.to_le_bytes());
        o.extend_from_slice(&ts_max.to_le_bytes());
        o.extend_from_slice(&packets.to_le_bytes());
        for n in [
            ix.blocks.len(),
            ix.flows.len(),
            ix.addrs.len(),
            ix.ports.len(),
            lists.len(),
        ] {
            o.extend_from_slice(&(n as u32).to_le_bytes());
        }
        let hcrc = crc32(&o[..68]);
        o.extend_from_slice(&hcrc.to_le_bytes());
        for b in &ix.blocks {
            o.extend_from_slice(&b.offset.to_le_bytes());
            o.extend_from_slice(&b.len.to_le_bytes());
            o.extend_from_slice(&b.erf_len.to_le_bytes());
            o.extend_from_slice(&b.ts_min.to_le_bytes());
            o.extend_from_slice(&b.ts_max.to_le_bytes());
            o.extend_from_slice(&b.records.to_le_bytes());
        }
        for (f, (off, n)) in ix.flows.iter().zip(&flow_refs) {
            let k = &f.key;
            let ai = addr_no(ix, &k.addr_a);
            let bi = addr_no(ix, &k.addr_b);
            o.extend_from_slice(&ai.to_le_bytes());
            o.extend_from_slice(&bi.to_le_bytes());
            o.extend_from_slice(&k.port_a.to_le_bytes());
            o.extend_from_slice(&k.port_b.to_le_bytes());
            o.extend_from_slice(&[k.proto, k.flags, k.nvlan, 0]);
            o.extend_from_slice(&k.vlans[0].to_le_bytes());
            o.extend_from_slice(&k.vlans[1].to_le_bytes());
            o.extend_from_slice(&f.first_ns.to_le_bytes());
            o.extend_from_slice(&f.last_ns.to_le_bytes());
            o.extend_from_slice(&f.packets.to_le_bytes());
            o.extend_from_slice(&f.bytes.to_le_bytes());
            o.extend_from_slice(&off.to_le_bytes());
            o.extend_from_slice(&n.to_le_bytes());
        }
        for ((a, _), (off, n)) in ix.addrs.iter().zip(&addr_refs) {
            o.extend_from_slice(a);
            o.extend_from_slice(&off.to_le_bytes());
            o.extend_from_slice(&n.to_le_bytes());
        }
        for ((p, _), (off, n)) in ix.ports.iter().zip(&port_refs) {
            o.extend_from_slice(&p.to_le_bytes());
            o.extend_from_slice(&[0, 0]);
            o.extend_from_slice(&off.to_le_bytes());
            o.extend_from_slice(&n.to_le_bytes());
        }
        o.extend_from_slice(&lists);
        let crc = crc32(&o);
        o.extend_from_slice(&crc.to_le_bytes());
        o
    }

    #[test]
    fn version_1_is_still_read_with_its_postings_turned_into_blocks() {
        let (ix, af, pf) = sample();
        let v1 = encode_v1(&ix, &af, &pf);
        let h = decode_header(&v1).unwrap();
        assert_eq!((h.version, h.file_len()), (1, v1.len() as u64));
        assert_eq!(Index::decode(&v1).unwrap(), ix);
        // And it is larger than version 2 for the same contents.
        assert!(ix.encode().len() < v1.len());
        let mut bad = v1.clone();
        bad[8] = 3;
        assert_eq!(decode_header(&bad), Err(IndexError::Version(3)));
    }

    #[test]
    fn block_lists_round_trip_as_deltas_and_as_bitmaps() {
        let dense: Vec<u32> = (5..900).filter(|x| x % 3 != 0).collect();
        let sparse = vec![0, 7, 300, 70_000, 1_000_000];
        for (list, map) in [(&dense, true), (&sparse, false), (&vec![42], false)] {
            let mut o = Vec::new();
            put_blocks(&mut o, list);
            assert_eq!(o[0] & 1 == 1, map, "{list:?}");
            let mut r = Rd { b: &o, pos: 0 };
            assert_eq!(get_blocks(&mut r, 2_000_000).as_ref(), Some(list));
            assert!(r.done());
            // A limit below a value is refused.
            let mut r = Rd { b: &o, pos: 0 };
            assert_eq!(get_blocks(&mut r, *list.last().unwrap()), None);
        }
        // The dense list takes about one bit a block.
        let mut o = Vec::new();
        put_blocks(&mut o, &dense);
        assert!(o.len() < 120, "{}", o.len());
    }

    #[test]
    fn every_cut_and_every_byte_flip_is_refused_without_panic() {
        let (ix, _, _) = sample();
        let bytes = ix.encode();
        for n in 0..bytes.len() {
            assert!(Index::decode(&bytes[..n]).is_err());
        }
        for at in 0..bytes.len() {
            for bit in [0x01, 0x80] {
                let mut bad = bytes.clone();
                bad[at] ^= bit;
                assert!(Index::decode(&bad).is_err(), "flip at {at}");
            }
        }
    }

    #[test]
    fn the_view_answers_as_the_whole_index() {
        let (ix, _, _) = sample();
        let bytes = ix.encode();
        let v = IndexView::open(&bytes).unwrap();
        assert_eq!(v.blocks, ix.blocks);
        for (a, l) in &ix.addrs {
            assert_eq!(&v.addr_blocks(|x| x == a, |x| x > a).unwrap(), l);
        }
        for (p, l) in &ix.ports {
            assert_eq!(&v.port_blocks(*p, *p).unwrap(), l);
        }
        assert!(
            v.addr_blocks(|x| x[15] == 77, |_| false)
                .unwrap()
                .is_empty()
        );
        assert_eq!(v.port_blocks(0, u16::MAX).unwrap(), vec![0, 1, 2]);
        assert_eq!(v.wild_blocks().unwrap(), (vec![1], vec![1]));
    }

    #[test]
    fn crc32_matches_zlib() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }
}

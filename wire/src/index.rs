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
//! Layout (all integers little-endian):
//!
//! ```text
//! header   72 bytes  magic "LCAPIDX\0", version, counts, time range, header CRC
//! blocks   n_blocks × 36 bytes   (offset, len, erf_len, ts_min, ts_max, records)
//! flows    n_flows  × 60 bytes   sorted by key; blocks list reference
//! addrs    n_addrs  × 24 bytes   sorted 16-byte addresses (IPv4 as ::ffff:a.b.c.d); flow list
//! ports    n_ports  × 12 bytes   sorted ports; flow list
//! lists    lists_len bytes       LEB128 delta-coded u32 lists
//! trailer  4 bytes               CRC-32 (IEEE) of everything before it
//! ```

extern crate alloc;

use alloc::vec::Vec;

/// First 8 bytes of every index file.
pub const MAGIC: [u8; 8] = *b"LCAPIDX\0";
/// Layout version this code writes and reads.
pub const VERSION: u16 = 1;
/// Bytes of the fixed header.
pub const HEADER_LEN: usize = 72;
const BLOCK_LEN: usize = 36;
const FLOW_LEN: usize = 60;
const ADDR_LEN: usize = 24;
const PORT_LEN: usize = 12;
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
    /// Sorted addresses, each with the (ascending) flows it appears in.
    pub addrs: Vec<([u8; 16], Vec<u32>)>,
    /// Sorted ports, each with the (ascending) flows it appears in.
    pub ports: Vec<(u16, Vec<u32>)>,
}

/// The fixed header alone (what time pruning reads).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Header {
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
    /// Bytes of the lists section.
    pub lists_len: u32,
}

impl Header {
    /// Total bytes of the index file this header announces.
    pub fn file_len(&self) -> u64 {
        HEADER_LEN as u64
            + self.n_blocks as u64 * BLOCK_LEN as u64
            + self.n_flows as u64 * FLOW_LEN as u64
            + self.n_addrs as u64 * ADDR_LEN as u64
            + self.n_ports as u64 * PORT_LEN as u64
            + self.lists_len as u64
            + 4
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

fn get_list(lists: &[u8], off: u32, n: u32) -> Option<Vec<u32>> {
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

impl Index {
    /// Smallest and largest record time over the blocks.
    pub fn ts_range(&self) -> (u64, u64) {
        self.blocks.iter().fold((u64::MAX, 0), |(lo, hi), b| {
            (lo.min(b.ts_min), hi.max(b.ts_max))
        })
    }

    /// The index's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut lists = Vec::new();
        let flow_refs: Vec<(u32, u32)> = self
            .flows
            .iter()
            .map(|f| put_list(&mut lists, &f.blocks))
            .collect();
        let addr_refs: Vec<(u32, u32)> = self
            .addrs
            .iter()
            .map(|(_, l)| put_list(&mut lists, l))
            .collect();
        let port_refs: Vec<(u32, u32)> = self
            .ports
            .iter()
            .map(|(_, l)| put_list(&mut lists, l))
            .collect();
        let (ts_min, ts_max) = self.ts_range();
        let packets: u64 = self.blocks.iter().map(|b| b.records as u64).sum();
        let mut o = Vec::with_capacity(
            HEADER_LEN
                + self.blocks.len() * BLOCK_LEN
                + self.flows.len() * FLOW_LEN
                + self.addrs.len() * ADDR_LEN
                + self.ports.len() * PORT_LEN
                + lists.len()
                + 4,
        );
        o.extend_from_slice(&MAGIC);
        o.extend_from_slice(&VERSION.to_le_bytes());
        o.extend_from_slice(&(HEADER_LEN as u16).to_le_bytes());
        o.extend_from_slice(&self.flags.to_le_bytes());
        o.extend_from_slice(&self.data_bytes.to_le_bytes());
        o.extend_from_slice(&ts_min.to_le_bytes());
        o.extend_from_slice(&ts_max.to_le_bytes());
        o.extend_from_slice(&packets.to_le_bytes());
        for n in [
            self.blocks.len(),
            self.flows.len(),
            self.addrs.len(),
            self.ports.len(),
            lists.len(),
        ] {
            o.extend_from_slice(&(n as u32).to_le_bytes());
        }
        let hcrc = crc32(&o[..68]);
        o.extend_from_slice(&hcrc.to_le_bytes());
        for b in &self.blocks {
            o.extend_from_slice(&b.offset.to_le_bytes());
            o.extend_from_slice(&b.len.to_le_bytes());
            o.extend_from_slice(&b.erf_len.to_le_bytes());
            o.extend_from_slice(&b.ts_min.to_le_bytes());
            o.extend_from_slice(&b.ts_max.to_le_bytes());
            o.extend_from_slice(&b.records.to_le_bytes());
        }
        for (f, (off, n)) in self.flows.iter().zip(&flow_refs) {
            let k = &f.key;
            let ai = self.addr_no(&k.addr_a);
            let bi = self.addr_no(&k.addr_b);
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
        for ((a, _), (off, n)) in self.addrs.iter().zip(&addr_refs) {
            o.extend_from_slice(a);
            o.extend_from_slice(&off.to_le_bytes());
            o.extend_from_slice(&n.to_le_bytes());
        }
        for ((p, _), (off, n)) in self.ports.iter().zip(&port_refs) {
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

    /// Number of `addr` in the address table (`u32::MAX` for the wild key's
    /// zero address when it is not in the table).
    fn addr_no(&self, addr: &[u8; 16]) -> u32 {
        self.addrs
            .binary_search_by(|(a, _)| a.cmp(addr))
            .map_or(u32::MAX, |i| i as u32)
    }

    /// Read a whole index, verifying both checksums and every reference.
    pub fn decode(b: &[u8]) -> Result<Index, IndexError> {
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
        let mut pos = HEADER_LEN;
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
            pos += BLOCK_LEN;
        }
        let flows_at = pos;
        pos += h.n_flows as usize * FLOW_LEN;
        let addrs_at = pos;
        pos += h.n_addrs as usize * ADDR_LEN;
        let ports_at = pos;
        pos += h.n_ports as usize * PORT_LEN;
        let lists = &b[pos..pos + h.lists_len as usize];
        let bad = IndexError::Inconsistent;
        let mut addrs = Vec::with_capacity(h.n_addrs as usize);
        for i in 0..h.n_addrs as usize {
            let p = addrs_at + i * ADDR_LEN;
            let mut a = [0u8; 16];
            a.copy_from_slice(&b[p..p + 16]);
            let l = get_list(lists, u32_at(b, p + 16), u32_at(b, p + 20)).ok_or(bad)?;
            addrs.push((a, l));
        }
        let mut ports = Vec::with_capacity(h.n_ports as usize);
        for i in 0..h.n_ports as usize {
            let p = ports_at + i * PORT_LEN;
            let port = u16::from_le_bytes([b[p], b[p + 1]]);
            let l = get_list(lists, u32_at(b, p + 4), u32_at(b, p + 8)).ok_or(bad)?;
            ports.push((port, l));
        }
        let addr = |i: u32| -> Result<[u8; 16], IndexError> {
            if i == u32::MAX {
                return Ok([0; 16]);
            }
            addrs.get(i as usize).map(|(a, _)| *a).ok_or(bad)
        };
        let mut flows = Vec::with_capacity(h.n_flows as usize);
        for i in 0..h.n_flows as usize {
            let p = flows_at + i * FLOW_LEN;
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
            let blist = get_list(lists, u32_at(b, p + 52), u32_at(b, p + 56)).ok_or(bad)?;
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
        let lists_ok = |l: &Vec<u32>| l.iter().all(|&f| f < h.n_flows);
        if !addrs.iter().all(|(_, l)| lists_ok(l)) || !ports.iter().all(|(_, l)| lists_ok(l)) {
            return Err(bad);
        }
        Ok(Index {
            flags: h.flags,
            data_bytes: h.data_bytes,
            blocks,
            flows,
            addrs,
            ports,
        })
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

/// Read and verify the fixed header only (the first [`HEADER_LEN`] bytes).
pub fn decode_header(b: &[u8]) -> Result<Header, IndexError> {
    if b.len() < HEADER_LEN {
        return Err(IndexError::Truncated);
    }
    if b[..8] != MAGIC {
        return Err(IndexError::BadMagic);
    }
    if crc32(&b[..68]) != u32_at(b, 68) {
        return Err(IndexError::Checksum);
    }
    let version = u16::from_le_bytes([b[8], b[9]]);
    if version != VERSION || u16::from_le_bytes([b[10], b[11]]) as usize != HEADER_LEN {
        return Err(IndexError::Version(version));
    }
    Ok(Header {
        flags: u32_at(b, 12),
        data_bytes: u64_at(b, 16),
        ts_min: u64_at(b, 24),
        ts_max: u64_at(b, 32),
        packets: u64_at(b, 40),
        n_blocks: u32_at(b, 48),
        n_flows: u32_at(b, 52),
        n_addrs: u32_at(b, 56),
        n_ports: u32_at(b, 60),
        lists_len: u32_at(b, 64),
    })
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

    fn sample() -> Index {
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
        let mut addrs: Vec<([u8; 16], Vec<u32>)> = Vec::new();
        for (i, f) in flows.iter().enumerate() {
            if f.key.is_wild() {
                continue;
            }
            for a in [f.key.addr_a, f.key.addr_b] {
                match addrs.iter_mut().find(|(x, _)| *x == a) {
                    Some((_, l)) => l.push(i as u32),
                    None => addrs.push((a, vec![i as u32])),
                }
            }
        }
        addrs.sort();
        Index {
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
            ports: vec![(53, vec![0]), (443, vec![1]), (1000, vec![0])],
        }
    }

    #[test]
    fn encode_decode_round_trip_and_damage_is_detected() {
        let ix = sample();
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

    #[test]
    fn crc32_matches_zlib() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }
}

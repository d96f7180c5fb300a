//! Flow key extraction: one Ethernet frame in, its bidirectional flow key out.
//!
//! [`parse_frame`] is what the capture workers call for every frame. It does
//! not allocate, does not panic (every read is bounded, every loop has a
//! limit) and returns plain data.
//!
//! # Semantics (those of the reference flow tables in `shared/reference/flows`)
//!
//! The key is `(vlan stack, proto, addr_a, port_a, addr_b, port_b)`:
//!
//! * **Encapsulations walked**: Ethernet II; 802.3 + LLC/SNAP carrying an
//!   EtherType; VLAN tags 0x8100 / 0x88A8 / 0x9100 stacked to any depth (at
//!   most [`VLAN_WALK_MAX`] walked, more is `Malformed`); MPLS label stacks (at
//!   most [`MPLS_DEPTH_MAX`] entries). After the bottom of the MPLS stack the
//!   first nibble decides, as Wireshark's MPLS dissector does: 4 = IPv4,
//!   6 = IPv6, 1 = associated channel (non-IP), 0 = an Ethernet pseudowire with
//!   a 4-byte control word, anything else = an Ethernet pseudowire without
//!   one. Wireshark guesses a control-word-less pseudowire behind a 0 nibble
//!   from the MAC vendor database; linecap instead takes it for one when the
//!   EtherType at offset 12 is IP/VLAN/MPLS and the one after a control word
//!   is not. The inner Ethernet frame (EoMPLS) is walked like the outer one,
//!   at most [`ETHERNET_DEPTH_MAX`] Ethernet headers in all.
//! * **VLAN stack**: the IDs of every VLAN tag met on the way to the IP
//!   header, outer to inner, including tags of an EoMPLS inner frame (as
//!   tshark's `vlan.id` lists them). The key keeps the outer
//!   [`VLAN_DEPTH_MAX`] IDs and the total count: deeper stacks that differ
//!   only below the fourth tag share a key.
//! * **IP header**: the outermost one (ICMP errors quoting a packet, IP in IP,
//!   VXLAN and the like are keyed by the outer header).
//! * **proto**: IPv4's protocol field; for IPv6 the protocol after the
//!   extension headers hop-by-hop, routing, fragment, destination options and
//!   AH (see [`crate::ipv6::Packet::upper_layer`]).
//! * **ports**: for TCP, UDP and SCTP the first 4 bytes of the L4 header,
//!   taken whenever the capture holds them, even if the rest of the header is
//!   cut by the snaplen (as tshark does); 0 for every other protocol (ICMP,
//!   ICMPv6, ESP, IGMP, ...) and when fewer than 4 bytes are captured.
//! * **fragments**: a non-first fragment (IPv4 offset != 0, or an IPv6
//!   fragment header with offset != 0) is keyed with `is_fragment` set and
//!   ports 0 (the reference's `frag:<proto>`). Its proto is IPv4's protocol
//!   field or the IPv6 fragment header's next header (the reference writes
//!   `frag:ipv6` for all IPv6 ones, so IPv6 non-first fragments of different
//!   upper protocols between the same hosts are one reference flow and
//!   several linecap flows). First fragments (offset 0) are keyed normally.
//! * **orientation**: `(addr, port)` pairs are ordered by bytes, address
//!   first, so both directions give the same key; [`PacketInfo::a_to_b`] says
//!   which way the packet went. (The reference orders by the printed
//!   `"addr|port"` string instead; only the labels a/b differ, not the flows.)
//!
//! # Non-IP, truncated and malformed frames
//!
//! A frame with no IP header on its path (ARP, STP, IPX, LLC without SNAP,
//! MPLS with a non-IP payload, unknown EtherTypes) is [`Parsed::NonIp`].
//! A frame that ends before the IP header is complete (Ethernet, a tag or
//! label, the IPv4 header with options, the IPv6 fixed header or its
//! extension header chain) is [`Parsed::Truncated`]; one whose IP header is
//! inconsistent (version, IHL < 5, total length < header length, extension
//! chain longer than its payload length or than the bound) is
//! [`Parsed::Malformed`]. tshark shows no IP addresses for such frames
//! (it stops at the bad header), so the reference counts all three in
//! `#non_ip_frames`; a flow meter matching it does the same, and can still
//! tell them apart through this enum. None of the reference traces holds a
//! truncated or malformed IP header.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::applabel::PayloadHead;
use crate::error::WireError;
use crate::ethernet::{self, ethertype};
use crate::ipv4::{self, protocol};
use crate::ipv6::{self, FragmentInfo};
use crate::{mpls, tcp, udp, vlan};

/// VLAN IDs a [`FlowKey`] keeps (the outermost ones).
pub const VLAN_DEPTH_MAX: usize = 4;
/// VLAN tags [`parse_frame`] walks before it calls the frame `Malformed`.
pub const VLAN_WALK_MAX: usize = 16;
/// MPLS label stack entries walked before the frame is `Malformed`.
pub const MPLS_DEPTH_MAX: usize = 16;
/// Ethernet headers walked (outer plus EoMPLS inner ones) before the frame is
/// `Malformed`.
pub const ETHERNET_DEPTH_MAX: usize = 4;

/// IP version of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum IpFamily {
    /// IPv4.
    V4 = 4,
    /// IPv6.
    V6 = 6,
}

/// The VLAN IDs met on the way to the IP header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VlanStack {
    ids: [u16; VLAN_DEPTH_MAX],
    depth: u8,
}

impl VlanStack {
    /// An empty stack.
    pub const fn new() -> VlanStack {
        VlanStack {
            ids: [0; VLAN_DEPTH_MAX],
            depth: 0,
        }
    }

    /// Add the next inner tag's VLAN ID. Past [`VLAN_DEPTH_MAX`] tags only the
    /// count grows (saturating at 255).
    pub fn push(&mut self, vid: u16) {
        if let Some(slot) = self.ids.get_mut(usize::from(self.depth)) {
            *slot = vid;
        }
        self.depth = self.depth.saturating_add(1);
    }

    /// The kept IDs, outer to inner (at most [`VLAN_DEPTH_MAX`]).
    pub fn ids(&self) -> &[u16] {
        let n = usize::from(self.depth).min(VLAN_DEPTH_MAX);
        self.ids.get(..n).unwrap_or(&[])
    }

    /// Number of tags seen (may exceed [`VLAN_DEPTH_MAX`]).
    pub const fn depth(&self) -> u8 {
        self.depth
    }

    /// Whether tags beyond [`VLAN_DEPTH_MAX`] were dropped from the key.
    pub const fn overflowed(&self) -> bool {
        self.depth as usize > VLAN_DEPTH_MAX
    }
}

/// Bidirectional flow key: the same value for both directions of a flow.
///
/// Addresses are 16 bytes; IPv4 addresses fill the first 4 and leave the rest
/// zero ([`FlowKey::family`] tells which). The endpoint with the smaller
/// `(address bytes, port)` is "a".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    vlan_ids: [u16; VLAN_DEPTH_MAX],
    vlan_depth: u8,
    proto: u8,
    is_fragment: bool,
    family: IpFamily,
    addr_a: [u8; 16],
    port_a: u16,
    addr_b: [u8; 16],
    port_b: u16,
}

/// Widen an IPv4 address into the key's 16-byte form.
#[inline(always)]
fn v4_bytes(a: [u8; 4]) -> [u8; 16] {
    let mut out = [0u8; 16];
    if let Some(dst) = out.get_mut(..4) {
        dst.copy_from_slice(&a);
    }
    out
}

impl FlowKey {
    /// The canonical key of a packet from `(src, src_port)` to
    /// `(dst, dst_port)`, and whether that packet went a → b.
    ///
    /// `is_fragment` marks a non-first fragment; the caller passes ports 0 then.
    #[allow(clippy::too_many_arguments)]
    pub fn from_endpoints(
        vlans: VlanStack,
        proto: u8,
        is_fragment: bool,
        family: IpFamily,
        src: [u8; 16],
        src_port: u16,
        dst: [u8; 16],
        dst_port: u16,
    ) -> (FlowKey, bool) {
        let a_to_b = (src, src_port) <= (dst, dst_port);
        let ((addr_a, port_a), (addr_b, port_b)) = if a_to_b {
            ((src, src_port), (dst, dst_port))
        } else {
            ((dst, dst_port), (src, src_port))
        };
        let key = FlowKey {
            vlan_ids: vlans.ids,
            vlan_depth: vlans.depth,
            proto,
            is_fragment,
            family,
            addr_a,
            port_a,
            addr_b,
            port_b,
        };
        (key, a_to_b)
    }

    /// The VLAN stack of the key.
    pub fn vlans(&self) -> VlanStack {
        VlanStack {
            ids: self.vlan_ids,
            depth: self.vlan_depth,
        }
    }

    /// Kept VLAN IDs, outer to inner.
    pub fn vlan_ids(&self) -> &[u16] {
        let n = usize::from(self.vlan_depth).min(VLAN_DEPTH_MAX);
        self.vlan_ids.get(..n).unwrap_or(&[])
    }

    /// Number of VLAN tags the packets carried (may exceed [`VLAN_DEPTH_MAX`]).
    pub fn vlan_depth(&self) -> u8 {
        self.vlan_depth
    }

    /// IP protocol (after IPv6 extension headers).
    pub fn proto(&self) -> u8 {
        self.proto
    }

    /// Whether the key is that of non-first fragments (ports are 0).
    pub fn is_fragment(&self) -> bool {
        self.is_fragment
    }

    /// IP version.
    pub fn family(&self) -> IpFamily {
        self.family
    }

    /// Endpoint a's address bytes (IPv4: first 4 bytes).
    pub fn addr_a_bytes(&self) -> &[u8; 16] {
        &self.addr_a
    }

    /// Endpoint b's address bytes (IPv4: first 4 bytes).
    pub fn addr_b_bytes(&self) -> &[u8; 16] {
        &self.addr_b
    }

    fn ip(&self, bytes: &[u8; 16]) -> IpAddr {
        match self.family {
            IpFamily::V4 => {
                let [a, b, c, d, ..] = *bytes;
                IpAddr::V4(Ipv4Addr::new(a, b, c, d))
            }
            IpFamily::V6 => IpAddr::V6(Ipv6Addr::from(*bytes)),
        }
    }

    /// Endpoint a's address.
    pub fn addr_a(&self) -> IpAddr {
        self.ip(&self.addr_a)
    }

    /// Endpoint b's address.
    pub fn addr_b(&self) -> IpAddr {
        self.ip(&self.addr_b)
    }

    /// Endpoint a's port (0 for protocols without ports and fragments).
    pub fn port_a(&self) -> u16 {
        self.port_a
    }

    /// Endpoint b's port.
    pub fn port_b(&self) -> u16 {
        self.port_b
    }

    /// Whether a packet of this flow sent from `(src, src_port)` went a → b
    /// (false means b → a; for a flow from an endpoint to itself, a → b).
    pub fn is_a_to_b(&self, src: IpAddr, src_port: u16) -> bool {
        let bytes = match src {
            IpAddr::V4(a) => v4_bytes(a.octets()),
            IpAddr::V6(a) => a.octets(),
        };
        bytes == self.addr_a && src_port == self.port_a
    }
}

/// What [`parse_frame`] learnt about an IP frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketInfo {
    /// The flow key.
    pub key: FlowKey,
    /// Whether the packet went from endpoint a to endpoint b.
    pub a_to_b: bool,
    /// TCP flags byte (see [`crate::tcp::flags`]); 0 if not TCP, a non-first
    /// fragment, or the byte is not captured.
    pub tcp_flags: u8,
    /// The L4 header of a TCP, UDP, SCTP, ICMP or ICMPv6 packet (not a
    /// non-first fragment) is not entirely in the capture.
    pub l4_truncated: bool,
    /// The L4 header is inconsistent (TCP data offset < 5, UDP length < 8).
    pub l4_malformed: bool,
    /// The capture ends before the IP packet's stated length.
    pub ip_truncated: bool,
    /// Fragment information: IPv4 when MF is set or the offset is not 0, IPv6
    /// when the chain had a fragment header.
    pub fragment: Option<FragmentInfo>,
    /// MPLS label stack entries walked (all stacks on the path).
    pub mpls_labels: u8,
    /// Offset of the IP header in the frame.
    pub l3_offset: usize,
    /// Offset of the L4 header in the frame (for a non-first fragment: of the
    /// fragment's data).
    pub l4_offset: usize,
    /// TCP/UDP payload: its size as the IP header states it and its first up
    /// to 4 captured bytes ([`crate::applabel::PayloadHead::NONE`] for other
    /// protocols, non-first fragments and cut or bad L4 headers).
    pub payload: crate::applabel::PayloadHead,
}

/// Result of [`parse_frame`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// An IP packet and its flow key.
    Ip(PacketInfo),
    /// No IP header on the frame's path.
    NonIp,
    /// The frame ends inside a header on the way to (or of) the IP header.
    Truncated,
    /// A header on the way to (or of) the IP header is inconsistent.
    Malformed,
}

impl From<WireError> for Parsed {
    fn from(e: WireError) -> Parsed {
        match e {
            WireError::Truncated => Parsed::Truncated,
            WireError::Malformed => Parsed::Malformed,
        }
    }
}

impl Parsed {
    /// The packet information, if this is an IP frame.
    pub fn ip(&self) -> Option<&PacketInfo> {
        match self {
            Parsed::Ip(info) => Some(info),
            _ => None,
        }
    }
}

/// Whether `t` is an EtherType [`parse_frame`] follows.
fn followed(t: u16) -> bool {
    matches!(t, ethertype::IPV4 | ethertype::IPV6) || ethertype::is_vlan(t) || ethertype::is_mpls(t)
}

/// Whether `b` starts like an Ethernet header carrying something we follow.
fn looks_like_ethernet(b: &[u8]) -> bool {
    b.len() >= ethernet::HEADER_LEN && followed(ethernet::Packet::new_unchecked(b).ethertype())
}

/// Where a frame's walk goes next.
enum Next<'a> {
    /// Another Ethernet header (EoMPLS).
    Ethernet(&'a [u8]),
    /// An IPv4 header.
    Ipv4(&'a [u8]),
    /// An IPv6 header.
    Ipv6(&'a [u8]),
}

/// Extract the flow key of one Ethernet frame (see the module documentation).
/// Inlined: the common frame's fast path belongs in the caller's loop; the
/// full walk stays one out-of-line call.
#[inline]
pub fn parse_frame(frame: &[u8]) -> Parsed {
    parse_frame_opt(frame, true)
}

/// [`parse_frame`] without the payload heads (`payload` is always
/// [`PayloadHead::NONE`]): the baseline `bench applabel` measures their
/// cost against.
pub fn parse_frame_without_payload(frame: &[u8]) -> Parsed {
    parse_frame_opt(frame, false)
}

/// [`parse_frame`] without its fast path: the full walk for every frame.
/// The property test `fast_path_equals_the_full_walk` checks that the two
/// agree; nothing else should need it.
#[doc(hidden)]
pub fn parse_frame_full_walk(frame: &[u8]) -> Parsed {
    parse_frame_walk(frame, true)
}

#[inline(always)]
fn parse_frame_opt(frame: &[u8], payload: bool) -> Parsed {
    match common_ipv4(frame) {
        Some(c) => common_ipv4_info(frame, c, payload),
        None => parse_frame_walk(frame, payload),
    }
}

/// What [`common_ipv4`] checked of a frame: small, so it travels in
/// registers and the (large) [`PacketInfo`] is built once, in place.
#[derive(Clone, Copy)]
pub(crate) struct CommonIpv4 {
    /// The IP total length.
    total: u16,
    /// The L4 header's length (TCP data offset × 4, or 8 for UDP).
    hdr: u8,
    proto: u8,
    tcp_flags: u8,
}

/// The common frame (issue 19): untagged Ethernet II, IPv4 without
/// options, not a fragment, TCP or UDP whose header is entirely captured
/// and consistent. Anything else (`None`) takes the full walk, which gives
/// the same answer for these frames too (property-tested,
/// `fast_path_equals_the_full_walk`); this path only skips the walk's
/// generality: no header loop, no VLAN or MPLS stack, no 16-byte address
/// compare for the canonical order.
#[inline(always)]
pub(crate) fn common_ipv4(frame: &[u8]) -> Option<CommonIpv4> {
    const ETH: usize = ethernet::HEADER_LEN;
    const L4: usize = ETH + ipv4::HEADER_LEN;
    let h: &[u8; L4 + udp::HEADER_LEN] = frame.get(..L4 + udp::HEADER_LEN)?.try_into().ok()?;
    // EtherType 0x0800, version 4 with a 20-byte header, MF clear and
    // offset 0 (the DF and reserved bits do not matter to the key).
    if h[12] != 0x08 || h[13] != 0x00 || h[14] != 0x45 || h[20] & 0x3f != 0 || h[21] != 0 {
        return None;
    }
    let total = u16::from_be_bytes([h[16], h[17]]);
    // The L4 bytes inside both the capture and the IP packet.
    let l4_len = (ETH + usize::from(total))
        .min(frame.len())
        .checked_sub(L4)?;
    match h[23] {
        protocol::TCP => {
            let hdr = usize::from(*frame.get(L4 + 12)? >> 4) * 4;
            if hdr < tcp::HEADER_LEN || l4_len < hdr {
                return None;
            }
            Some(CommonIpv4 {
                total,
                hdr: hdr as u8,
                proto: protocol::TCP,
                tcp_flags: *frame.get(L4 + tcp::FLAGS_OFFSET)?,
            })
        }
        protocol::UDP => {
            let len = u16::from_be_bytes([h[L4 + 4], h[L4 + 5]]);
            if l4_len < udp::HEADER_LEN || usize::from(len) < udp::HEADER_LEN {
                return None;
            }
            Some(CommonIpv4 {
                total,
                hdr: udp::HEADER_LEN as u8,
                proto: protocol::UDP,
                tcp_flags: 0,
            })
        }
        _ => None,
    }
}

/// A frame of the common kind (see [`parse_common`]), with just what a flow
/// table needs: the canonical endpoints, the direction, the TCP flags and
/// the payload head. Small and built in registers; [`CommonFlow::key`] gives
/// the [`FlowKey`] that [`parse_frame`] would.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommonFlow {
    /// Endpoint a (the smaller `(address, port)`): IPv4 address bytes.
    pub addr_a: [u8; 4],
    /// Endpoint a's port.
    pub port_a: u16,
    /// Endpoint b's IPv4 address bytes.
    pub addr_b: [u8; 4],
    /// Endpoint b's port.
    pub port_b: u16,
    /// [`protocol::TCP`] or [`protocol::UDP`].
    pub proto: u8,
    /// Whether the packet went a → b.
    pub a_to_b: bool,
    /// The TCP flags byte (0 for UDP).
    pub tcp_flags: u8,
    /// The payload's size and first bytes.
    pub payload: PayloadHead,
}

impl CommonFlow {
    /// The flow key, equal to what [`parse_frame`] gives for the frame.
    #[inline]
    pub fn key(&self) -> FlowKey {
        FlowKey {
            vlan_ids: [0; VLAN_DEPTH_MAX],
            vlan_depth: 0,
            proto: self.proto,
            is_fragment: false,
            family: IpFamily::V4,
            addr_a: v4_bytes(self.addr_a),
            port_a: self.port_a,
            addr_b: v4_bytes(self.addr_b),
            port_b: self.port_b,
        }
    }
}

/// The common frame — untagged Ethernet II, IPv4 without options, not a
/// fragment, TCP or UDP with its header entirely captured and consistent —
/// without building a [`PacketInfo`]; `None` for every other frame (then
/// use [`parse_frame`]). For a frame it takes, `parse_frame` gives the same
/// key, direction, TCP flags and payload head (property-tested).
#[inline]
pub fn parse_common(frame: &[u8]) -> Option<CommonFlow> {
    common_ipv4(frame).map(|c| common_flow(frame, c, true))
}

#[inline(always)]
fn common_flow(frame: &[u8], c: CommonIpv4, want_payload: bool) -> CommonFlow {
    const L4: usize = ethernet::HEADER_LEN + ipv4::HEADER_LEN;
    let total = usize::from(c.total);
    let l4 = tail_of(frame, L4);
    let l4 = l4
        .get(..(total - ipv4::HEADER_LEN).min(l4.len()))
        .unwrap_or(&[]);
    let word = |at: usize| -> [u8; 4] {
        match frame.get(at..at + 4) {
            Some(&[a, b, c, d]) => [a, b, c, d],
            _ => [0; 4],
        }
    };
    let (src, dst, ports) = (word(26), word(30), word(L4));
    let sport = u16::from_be_bytes([ports[0], ports[1]]);
    let dport = u16::from_be_bytes([ports[2], ports[3]]);
    // The canonical order on (address bytes, port): for IPv4 the 16-byte
    // form is the 4 bytes then zeros, so comparing the big-endian words
    // gives the same order.
    let end = |a: [u8; 4], port: u16| u64::from(u32::from_be_bytes(a)) << 16 | u64::from(port);
    let a_to_b = end(src, sport) <= end(dst, dport);
    let ((addr_a, port_a), (addr_b, port_b)) = if a_to_b {
        ((src, sport), (dst, dport))
    } else {
        ((dst, dport), (src, sport))
    };
    CommonFlow {
        addr_a,
        port_a,
        addr_b,
        port_b,
        proto: c.proto,
        a_to_b,
        tcp_flags: c.tcp_flags,
        payload: if want_payload {
            payload_head_after(usize::from(c.hdr), l4, total - ipv4::HEADER_LEN)
        } else {
            PayloadHead::NONE
        },
    }
}

/// The [`PacketInfo`] of a frame [`common_ipv4`] accepted.
#[inline(always)]
fn common_ipv4_info(frame: &[u8], c: CommonIpv4, want_payload: bool) -> Parsed {
    const ETH: usize = ethernet::HEADER_LEN;
    let f = common_flow(frame, c, want_payload);
    Parsed::Ip(PacketInfo {
        key: f.key(),
        a_to_b: f.a_to_b,
        tcp_flags: f.tcp_flags,
        l4_truncated: false,
        l4_malformed: false,
        ip_truncated: frame.len() - ETH < usize::from(c.total),
        fragment: None,
        mpls_labels: 0,
        l3_offset: ETH,
        l4_offset: ETH + ipv4::HEADER_LEN,
        payload: f.payload,
    })
}

/// The fast path's answer for a frame [`common_ipv4`] accepts, else `None`
/// (for the property tests).
#[cfg(test)]
pub(crate) fn parse_common_ipv4(frame: &[u8], want_payload: bool) -> Option<Parsed> {
    common_ipv4(frame).map(|c| common_ipv4_info(frame, c, want_payload))
}

#[inline(never)]
fn parse_frame_walk(frame: &[u8], payload: bool) -> Parsed {
    let mut vlans = VlanStack::new();
    let mut mpls_labels = 0u8;
    let mut tags_walked = 0usize;
    let mut next = Next::Ethernet(frame);
    for _ in 0..ETHERNET_DEPTH_MAX {
        let eth_buf = match next {
            Next::Ethernet(b) => b,
            Next::Ipv4(b) => return ipv4_info(frame, b, vlans, mpls_labels, payload),
            Next::Ipv6(b) => return ipv6_info(frame, b, vlans, mpls_labels, payload),
        };
        next = match walk_ethernet(eth_buf, &mut vlans, &mut mpls_labels, &mut tags_walked) {
            Ok(Some(n)) => n,
            Ok(None) => return Parsed::NonIp,
            Err(e) => return e.into(),
        };
    }
    match next {
        Next::Ethernet(_) => Parsed::Malformed,
        Next::Ipv4(b) => ipv4_info(frame, b, vlans, mpls_labels, payload),
        Next::Ipv6(b) => ipv6_info(frame, b, vlans, mpls_labels, payload),
    }
}

/// Walk one Ethernet header with its tags and MPLS stack; `Ok(None)` = non-IP.
fn walk_ethernet<'a>(
    buf: &'a [u8],
    vlans: &mut VlanStack,
    mpls_labels: &mut u8,
    tags_walked: &mut usize,
) -> Result<Option<Next<'a>>, WireError> {
    let eth = ethernet::Packet::new_checked(buf)?;
    let mut etype = eth.ethertype();
    let mut rest = tail_of(buf, ethernet::HEADER_LEN);
    loop {
        if ethertype::is_length(etype) {
            // 802.3: only LLC/SNAP carries an EtherType on.
            match ethernet::snap_ethertype(rest) {
                Some(t) => {
                    etype = t;
                    rest = tail_of(rest, ethernet::SNAP_HEADER_LEN);
                }
                None => return Ok(None),
            }
        }
        match etype {
            ethertype::IPV4 => return Ok(Some(Next::Ipv4(rest))),
            ethertype::IPV6 => return Ok(Some(Next::Ipv6(rest))),
            t if ethertype::is_vlan(t) => {
                *tags_walked += 1;
                if *tags_walked > VLAN_WALK_MAX {
                    return Err(WireError::Malformed);
                }
                let tag = vlan::Packet::new_checked(rest)?;
                vlans.push(tag.vid());
                etype = tag.ethertype();
                rest = tail_of(rest, vlan::HEADER_LEN);
            }
            t if ethertype::is_mpls(t) => return walk_mpls(rest, mpls_labels),
            _ => return Ok(None),
        }
    }
}

/// Walk an MPLS label stack and decide what follows it.
fn walk_mpls<'a>(mut rest: &'a [u8], mpls_labels: &mut u8) -> Result<Option<Next<'a>>, WireError> {
    let mut bottom = false;
    for _ in 0..MPLS_DEPTH_MAX {
        let entry = mpls::Packet::new_checked(rest)?;
        *mpls_labels = mpls_labels.saturating_add(1);
        rest = tail_of(rest, mpls::HEADER_LEN);
        if entry.bottom_of_stack() {
            bottom = true;
            break;
        }
    }
    if !bottom {
        return Err(WireError::Malformed);
    }
    let Some(&first) = rest.first() else {
        return Err(WireError::Truncated);
    };
    match first >> 4 {
        4 => Ok(Some(Next::Ipv4(rest))),
        6 => Ok(Some(Next::Ipv6(rest))),
        // Pseudowire associated channel (OAM): not a packet we key.
        1 => Ok(None),
        0 => {
            let after_cw = tail_of(rest, mpls::CONTROL_WORD_LEN);
            if looks_like_ethernet(rest) && !looks_like_ethernet(after_cw) {
                Ok(Some(Next::Ethernet(rest)))
            } else {
                Ok(Some(Next::Ethernet(after_cw)))
            }
        }
        _ => Ok(Some(Next::Ethernet(rest))),
    }
}

/// `b` from `start` on (empty if `start` is past the end).
fn tail_of(b: &[u8], start: usize) -> &[u8] {
    b.get(start..).unwrap_or(&[])
}

/// Offset of `part` (a tail of `frame`) within `frame`.
fn offset_in(frame: &[u8], part: &[u8]) -> usize {
    frame.len().saturating_sub(part.len())
}

/// What the first bytes of an L4 header give the key.
struct L4 {
    ports: (u16, u16),
    tcp_flags: u8,
    truncated: bool,
    malformed: bool,
}

/// Read ports and TCP flags from an L4 header that may be cut short.
fn l4_fields(proto: u8, l4: &[u8], family: IpFamily) -> L4 {
    let ports_of = |l4: &[u8]| -> (u16, u16) {
        match l4.get(..4) {
            Some(&[a, b, c, d]) => (u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d])),
            _ => (0, 0),
        }
    };
    let mut out = L4 {
        ports: (0, 0),
        tcp_flags: 0,
        truncated: false,
        malformed: false,
    };
    match proto {
        protocol::TCP => {
            out.ports = ports_of(l4);
            out.tcp_flags = l4.get(tcp::FLAGS_OFFSET).copied().unwrap_or(0);
            match tcp::Packet::new_checked(l4) {
                Ok(_) => {}
                Err(WireError::Truncated) => out.truncated = true,
                Err(WireError::Malformed) => out.malformed = true,
            }
        }
        protocol::UDP => {
            out.ports = ports_of(l4);
            match udp::Packet::new_checked(l4) {
                Ok(_) => {}
                Err(WireError::Truncated) => out.truncated = true,
                Err(WireError::Malformed) => out.malformed = true,
            }
        }
        protocol::SCTP => {
            out.ports = ports_of(l4);
            out.truncated = l4.len() < crate::sctp::HEADER_LEN;
        }
        protocol::ICMP if family == IpFamily::V4 => {
            out.truncated = l4.len() < crate::icmp::HEADER_LEN;
        }
        protocol::ICMPV6 if family == IpFamily::V6 => {
            out.truncated = l4.len() < crate::icmp::HEADER_LEN;
        }
        _ => {}
    }
    out
}

/// Shared tail of the IPv4 and IPv6 paths.
#[allow(clippy::too_many_arguments)]
fn finish(
    vlans: VlanStack,
    family: IpFamily,
    proto: u8,
    src: [u8; 16],
    dst: [u8; 16],
    non_first_fragment: bool,
    l4: &[u8],
    l4_stated_len: usize,
    ip_truncated: bool,
    fragment: Option<FragmentInfo>,
    mpls_labels: u8,
    l3_offset: usize,
    l4_offset: usize,
    want_payload: bool,
) -> Parsed {
    let fields = if non_first_fragment {
        L4 {
            ports: (0, 0),
            tcp_flags: 0,
            truncated: false,
            malformed: false,
        }
    } else {
        l4_fields(proto, l4, family)
    };
    let payload = if !want_payload || non_first_fragment || fields.truncated || fields.malformed {
        PayloadHead::NONE
    } else {
        payload_head(proto, l4, l4_stated_len)
    };
    let (sport, dport) = fields.ports;
    let (key, a_to_b) = FlowKey::from_endpoints(
        vlans,
        proto,
        non_first_fragment,
        family,
        src,
        sport,
        dst,
        dport,
    );
    Parsed::Ip(PacketInfo {
        key,
        a_to_b,
        tcp_flags: fields.tcp_flags,
        l4_truncated: fields.truncated,
        l4_malformed: fields.malformed,
        ip_truncated,
        fragment,
        mpls_labels,
        l3_offset,
        l4_offset,
        payload,
    })
}

/// The TCP or UDP payload's stated size and first bytes (`l4` as captured,
/// `stated` = the L4 length the IP header gives).
#[inline]
fn payload_head(proto: u8, l4: &[u8], stated: usize) -> PayloadHead {
    let hdr = match proto {
        protocol::TCP => usize::from(l4.get(12).copied().unwrap_or(0) >> 4) * 4,
        protocol::UDP => udp::HEADER_LEN,
        _ => return PayloadHead::NONE,
    };
    payload_head_after(hdr, l4, stated)
}

/// [`payload_head`] with the L4 header's length `hdr` known.
#[inline(always)]
fn payload_head_after(hdr: usize, l4: &[u8], stated: usize) -> PayloadHead {
    let len = stated.saturating_sub(hdr);
    if len == 0 {
        return PayloadHead::NONE;
    }
    let len32 = len.min(u32::MAX as usize) as u32;
    // The common case (4 or more payload bytes captured) is one bounds check
    // and a 4-byte load; `bench applabel --callgrind` counts it.
    match l4.get(hdr..hdr.wrapping_add(4)) {
        Some(&[b0, b1, b2, b3]) if len >= 4 => PayloadHead {
            len: len32,
            bytes: [b0, b1, b2, b3],
            captured: 4,
        },
        _ => PayloadHead::new(len32, tail_of(l4, hdr)),
    }
}

#[inline(always)]
fn ipv4_info(
    frame: &[u8],
    buf: &[u8],
    vlans: VlanStack,
    mpls_labels: u8,
    want_payload: bool,
) -> Parsed {
    let ip = match ipv4::Packet::new_checked(buf) {
        Ok(ip) => ip,
        Err(e) => return e.into(),
    };
    let fragment = ip.is_fragment().then(|| FragmentInfo {
        offset: ip.frag_offset(),
        more_fragments: ip.more_frags(),
        ident: u32::from(ip.ident()),
    });
    let l3_offset = offset_in(frame, buf);
    finish(
        vlans,
        IpFamily::V4,
        ip.protocol(),
        v4_bytes(ip.src_bytes()),
        v4_bytes(ip.dst_bytes()),
        ip.is_non_first_fragment(),
        ip.payload(),
        usize::from(ip.total_len()).saturating_sub(ip.header_len()),
        ip.payload_truncated(),
        fragment,
        mpls_labels,
        l3_offset,
        l3_offset + ip.header_len(),
        want_payload,
    )
}

#[inline(always)]
fn ipv6_info(
    frame: &[u8],
    buf: &[u8],
    vlans: VlanStack,
    mpls_labels: u8,
    want_payload: bool,
) -> Parsed {
    let ip = match ipv6::Packet::new_checked(buf) {
        Ok(ip) => ip,
        Err(e) => return e.into(),
    };
    let upper = match ip.upper_layer() {
        Ok(u) => u,
        Err(e) => return e.into(),
    };
    let l3_offset = offset_in(frame, buf);
    finish(
        vlans,
        IpFamily::V6,
        upper.protocol,
        ip.src_bytes(),
        ip.dst_bytes(),
        upper.is_non_first_fragment(),
        ip.bytes_from(upper.offset),
        (usize::from(ip.payload_len()) + ipv6::HEADER_LEN).saturating_sub(upper.offset),
        ip.payload_truncated(),
        upper.fragment,
        mpls_labels,
        l3_offset,
        l3_offset + upper.offset,
        want_payload,
    )
}

/// A cheap 32-bit hash of a key, the same for both directions of a flow (the
/// key is canonical), for spreading flows over queues or table buckets.
/// Murmur3-style mixing of 12 words; deterministic on every host (no seed).
pub fn symmetric_hash(key: &FlowKey) -> u32 {
    let word = |b: &[u8; 16], i: usize| -> u32 {
        match b.get(i * 4..i * 4 + 4) {
            Some(&[w, x, y, z]) => u32::from_le_bytes([w, x, y, z]),
            _ => 0,
        }
    };
    let mut h = 0x9747_b28c_u32;
    for i in 0..4 {
        h = mix(h, word(&key.addr_a, i));
        h = mix(h, word(&key.addr_b, i));
    }
    h = mix(h, (u32::from(key.port_a) << 16) | u32::from(key.port_b));
    h = mix(
        h,
        u32::from(key.proto)
            | (key.family as u32) << 8
            | u32::from(key.is_fragment) << 16
            | u32::from(key.vlan_depth) << 24,
    );
    let [v0, v1, v2, v3] = key.vlan_ids;
    h = mix(h, (u32::from(v0) << 16) | u32::from(v1));
    h = mix(h, (u32::from(v2) << 16) | u32::from(v3));
    fmix32(h ^ 48)
}

#[inline(always)]
fn mix(h: u32, k: u32) -> u32 {
    let k = k
        .wrapping_mul(0xcc9e_2d51)
        .rotate_left(15)
        .wrapping_mul(0x1b87_3593);
    (h ^ k)
        .rotate_left(13)
        .wrapping_mul(5)
        .wrapping_add(0xe654_6b64)
}

#[inline(always)]
fn fmix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use crate::tcp::flags;

    // tcpreplay__test.pcap frame 142 (cut at 80 bytes): MPLS 19/16, control word, inner Ethernet, VLAN 1, ICMP 192.168.1.1 -> 192.168.1.2.
    const EOMPLS_CW_VLAN: [u8; 80] = [
        0xcc, 0x03, 0x04, 0xdc, 0x00, 0x10, 0xcc, 0x04, 0x04, 0xdc, 0x00, 0x10, 0x88, 0x47, 0x00,
        0x01, 0x30, 0xfe, 0x00, 0x01, 0x01, 0xff, 0x00, 0x00, 0x00, 0x00, 0xcc, 0x00, 0x0a, 0x64,
        0x00, 0x00, 0xcc, 0x07, 0x0d, 0x08, 0x00, 0x00, 0x81, 0x00, 0x00, 0x01, 0x08, 0x00, 0x45,
        0x00, 0x00, 0x64, 0x00, 0x05, 0x00, 0x00, 0xff, 0x01, 0x38, 0x40, 0xc0, 0xa8, 0x01, 0x01,
        0xc0, 0xa8, 0x01, 0x02, 0x08, 0x00, 0xb4, 0x90, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x04, 0xc9, 0xb4,
    ];

    // tcpreplay__test.pcap frame 11 (cut at 60 bytes): MPLS 18/16, ICMP 10.31.0.1 -> 10.34.0.1.
    const MPLS_ICMP: [u8; 60] = [
        0x00, 0x30, 0x96, 0xe6, 0xfc, 0x39, 0x00, 0x30, 0x96, 0x05, 0x28, 0x38, 0x88, 0x47, 0x00,
        0x01, 0x20, 0xff, 0x00, 0x01, 0x01, 0xff, 0x45, 0x00, 0x00, 0xff, 0x00, 0x51, 0x00, 0x00,
        0xff, 0x01, 0xa7, 0x05, 0x0a, 0x1f, 0x00, 0x01, 0x0a, 0x22, 0x00, 0x01, 0x08, 0x00, 0xbd,
        0x10, 0x0f, 0x66, 0x12, 0xa0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x53, 0x9e, 0xe0, 0xab, 0xcd,
    ];

    // zeek__tcp_truncated-header.pcap frame 1: SYN|ECE|CWR 201.186.157.67:60827 -> 128.3.26.249:25, TCP header cut after 34 of 40 bytes.
    const TCP_HEADER_CUT: [u8; 68] = [
        0xea, 0xf6, 0x1c, 0x2d, 0x9f, 0xd2, 0x80, 0x0b, 0x98, 0x3b, 0xb9, 0xec, 0x08, 0x00, 0x45,
        0x00, 0x00, 0x3c, 0x38, 0xe0, 0x40, 0x00, 0x33, 0x06, 0x0c, 0xe2, 0xc9, 0xba, 0x9d, 0x43,
        0x80, 0x03, 0x1a, 0xf9, 0xed, 0x9b, 0x00, 0x19, 0x3e, 0x17, 0x75, 0xde, 0x00, 0x00, 0x00,
        0x00, 0xa0, 0xc2, 0x16, 0xd0, 0x90, 0xd6, 0x00, 0x00, 0x02, 0x04, 0x05, 0xb4, 0x04, 0x02,
        0x08, 0x08, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00,
    ];

    // zeek__ipv6-fragmented-dns.pcap frame 4 (cut at 70 bytes): IPv6 fragment, offset 2896, of a UDP datagram 2607:f740:b::f93 -> 2001:470:1f11:81f:d138:5f55:6d4:1fe2.
    const V6_LATER_FRAG: [u8; 70] = [
        0xc4, 0x2c, 0x03, 0x3b, 0x6c, 0xaa, 0xd8, 0x30, 0x62, 0x48, 0xc5, 0xb5, 0x86, 0xdd, 0x60,
        0x00, 0x00, 0x00, 0x01, 0x5e, 0x2c, 0x35, 0x26, 0x07, 0xf7, 0x40, 0x00, 0x0b, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0f, 0x93, 0x20, 0x01, 0x04, 0x70, 0x1f, 0x11, 0x08,
        0x1f, 0xd1, 0x38, 0x5f, 0x55, 0x06, 0xd4, 0x1f, 0xe2, 0x11, 0x00, 0x0b, 0x50, 0x00, 0x00,
        0x00, 0x01, 0x58, 0x58, 0x58, 0x58, 0x58, 0x58, 0x58, 0x58,
    ];

    // zeek__ipv6-fragmented-dns.pcap frame 6 (cut at 70 bytes): first IPv6 fragment, UDP 53 -> 51851.
    const V6_FIRST_FRAG: [u8; 70] = [
        0xc4, 0x2c, 0x03, 0x3b, 0x6c, 0xaa, 0xd8, 0x30, 0x62, 0x48, 0xc5, 0xb5, 0x86, 0xdd, 0x60,
        0x00, 0x00, 0x00, 0x05, 0xa0, 0x2c, 0x35, 0x26, 0x07, 0xf7, 0x40, 0x00, 0x0b, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0f, 0x93, 0x20, 0x01, 0x04, 0x70, 0x1f, 0x11, 0x08,
        0x1f, 0xd1, 0x38, 0x5f, 0x55, 0x06, 0xd4, 0x1f, 0xe2, 0x11, 0x00, 0x00, 0x01, 0x00, 0x00,
        0x00, 0x02, 0x00, 0x35, 0xca, 0x8b, 0x0c, 0xa6, 0x68, 0x8f,
    ];

    // zeek__snap-tcp.pcap frame 1: 802.3 + LLC/SNAP, TCP SYN 192.168.1.1:12345 -> 192.168.1.2:80.
    const SNAP_TCP: [u8; 62] = [
        0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x00, 0x30, 0xaa,
        0xaa, 0x03, 0x00, 0x00, 0x00, 0x08, 0x00, 0x45, 0x00, 0x00, 0x28, 0x00, 0x01, 0x00, 0x00,
        0x40, 0x06, 0xf7, 0x7b, 0xc0, 0xa8, 0x01, 0x01, 0xc0, 0xa8, 0x01, 0x02, 0x30, 0x39, 0x00,
        0x50, 0x00, 0x00, 0x00, 0x64, 0x00, 0x00, 0x00, 0x00, 0x50, 0x02, 0x20, 0x00, 0xdb, 0xa1,
        0x00, 0x00,
    ];

    // zeek__vlan-qinqinq.pcap frame 1 (cut at 80 bytes): VLAN 30/20/10, TCP 141.142.228.5:59856 -> 192.150.187.43:80.
    const QINQINQ: [u8; 80] = [
        0x00, 0x10, 0xdb, 0x88, 0xd2, 0xef, 0xc8, 0xbc, 0xc8, 0x96, 0xd2, 0xa0, 0x81, 0x00, 0x00,
        0x1e, 0x81, 0x00, 0x00, 0x14, 0x81, 0x00, 0x00, 0x0a, 0x08, 0x00, 0x45, 0x00, 0x00, 0x40,
        0xdf, 0x8e, 0x40, 0x00, 0x40, 0x06, 0x6d, 0xd3, 0x8d, 0x8e, 0xe4, 0x05, 0xc0, 0x96, 0xbb,
        0x2b, 0xe9, 0xd0, 0x00, 0x50, 0xfe, 0x21, 0x32, 0x3a, 0x00, 0x00, 0x00, 0x00, 0xb0, 0x02,
        0xff, 0xff, 0x3b, 0xc0, 0x00, 0x00, 0x02, 0x04, 0x05, 0xb4, 0x01, 0x03, 0x03, 0x04, 0x01,
        0x01, 0x08, 0x0a, 0x16, 0x4a,
    ];

    // zeek__communityid_sctp.pcap frame 1 (cut at 60 bytes): SCTP 192.168.170.8:7 -> 192.168.170.56:7.
    const SCTP_INIT: [u8; 60] = [
        0x00, 0x60, 0x08, 0x45, 0xe4, 0x55, 0x00, 0xe0, 0x18, 0xb1, 0x0c, 0xad, 0x08, 0x00, 0x45,
        0x10, 0x00, 0x40, 0x00, 0x00, 0x40, 0x00, 0x40, 0x84, 0x64, 0x98, 0xc0, 0xa8, 0xaa, 0x08,
        0xc0, 0xa8, 0xaa, 0x38, 0x00, 0x07, 0x00, 0x07, 0x00, 0x00, 0x00, 0x00, 0x37, 0x61, 0xa7,
        0x46, 0x01, 0x00, 0x00, 0x20, 0x43, 0x23, 0x25, 0x44, 0x00, 0x00, 0xff, 0xff, 0x00, 0x11,
    ];

    // zeek__ipv4_fragmented-4.pcap frame 3: non-first IPv4 fragment (offset 48) of TCP, 128.32.46.142 -> 10.0.0.1.
    const V4_LATER_FRAG: [u8; 58] = [
        0x00, 0x01, 0x30, 0x24, 0x9d, 0x00, 0x00, 0xb0, 0xd0, 0xe4, 0x13, 0x11, 0x08, 0x00, 0x45,
        0x10, 0x00, 0x2c, 0x00, 0x00, 0x20, 0x06, 0xff, 0x06, 0xe3, 0x06, 0x80, 0x20, 0x2e, 0x8e,
        0x0a, 0x00, 0x00, 0x01, 0x2e, 0x25, 0x32, 0x66, 0x2e, 0x2e, 0x2f, 0x77, 0x69, 0x6e, 0x6e,
        0x74, 0x2f, 0x73, 0x79, 0x73, 0x74, 0x65, 0x6d, 0x33, 0x32, 0x2f, 0x63, 0x6d,
    ];

    // tcpreplay__test.pcap frame 10: ARP.
    const ARP: [u8; 42] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x1f, 0xf3, 0x3c, 0xe1, 0x13, 0x08, 0x06, 0x00,
        0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x00, 0x1f, 0xf3, 0x3c, 0xe1, 0x13, 0xac, 0x10,
        0x0b, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xac, 0x10, 0x0b, 0xc2,
    ];

    fn ip(frame: &[u8]) -> PacketInfo {
        match parse_frame(frame) {
            Parsed::Ip(info) => info,
            other => panic!("not IP: {other:?}"),
        }
    }

    fn v4(s: &str) -> IpAddr {
        IpAddr::V4(s.parse().unwrap())
    }

    fn v6(s: &str) -> IpAddr {
        IpAddr::V6(s.parse().unwrap())
    }

    /// (src, sport, dst, dport) of a packet, from its key and direction.
    fn endpoints(info: &PacketInfo) -> (IpAddr, u16, IpAddr, u16) {
        let k = &info.key;
        if info.a_to_b {
            (k.addr_a(), k.port_a(), k.addr_b(), k.port_b())
        } else {
            (k.addr_b(), k.port_b(), k.addr_a(), k.port_a())
        }
    }

    #[test]
    fn eompls_with_control_word_and_inner_vlan() {
        let info = ip(&EOMPLS_CW_VLAN);
        assert_eq!(info.key.vlan_ids(), &[1]);
        assert_eq!(info.key.proto(), protocol::ICMP);
        assert_eq!(info.key.family(), IpFamily::V4);
        assert_eq!(
            endpoints(&info),
            (v4("192.168.1.1"), 0, v4("192.168.1.2"), 0)
        );
        assert_eq!(info.mpls_labels, 2);
        assert_eq!(info.l3_offset, 14 + 8 + 4 + 14 + 4);
        assert!(info.ip_truncated);
        assert!(!info.l4_truncated);
    }

    #[test]
    fn mpls_then_ipv4() {
        let info = ip(&MPLS_ICMP);
        assert!(info.key.vlan_ids().is_empty());
        assert_eq!(endpoints(&info), (v4("10.31.0.1"), 0, v4("10.34.0.1"), 0));
        assert_eq!(info.mpls_labels, 2);
        assert_eq!(info.l3_offset, 22);
        assert_eq!(info.l4_offset, 42);
    }

    #[test]
    fn ports_and_flags_from_a_cut_tcp_header() {
        let info = ip(&TCP_HEADER_CUT);
        assert_eq!(info.key.proto(), protocol::TCP);
        assert_eq!(
            endpoints(&info),
            (v4("201.186.157.67"), 60827, v4("128.3.26.249"), 25)
        );
        assert_eq!(info.tcp_flags, flags::SYN | flags::ECE | flags::CWR);
        assert!(info.l4_truncated);
        assert!(info.ip_truncated);
        // Only 3 bytes of TCP: no ports, no flags.
        let info = ip(&TCP_HEADER_CUT[..37]);
        assert_eq!(
            (info.key.port_a(), info.key.port_b(), info.tcp_flags),
            (0, 0, 0)
        );
        assert!(info.l4_truncated);
        // Exactly the ports.
        let info = ip(&TCP_HEADER_CUT[..38]);
        assert_eq!(endpoints(&info).1, 60827);
        assert_eq!(info.tcp_flags, 0);
    }

    #[test]
    fn tcp_data_offset_below_five() {
        let mut f = SNAP_TCP;
        f[22 + 20 + 12] = 0x40;
        let info = ip(&f);
        assert!(info.l4_malformed);
        assert_eq!(endpoints(&info).1, 12345);
    }

    #[test]
    fn ipv6_non_first_fragment() {
        let info = ip(&V6_LATER_FRAG);
        assert!(info.key.is_fragment());
        assert_eq!(info.key.proto(), protocol::UDP);
        assert_eq!(info.key.family(), IpFamily::V6);
        assert_eq!(
            endpoints(&info),
            (
                v6("2607:f740:b::f93"),
                0,
                v6("2001:470:1f11:81f:d138:5f55:6d4:1fe2"),
                0
            )
        );
        let frag = info.fragment.unwrap();
        assert_eq!(
            (frag.offset, frag.more_fragments, frag.ident),
            (2896, false, 1)
        );
        assert_eq!(info.l4_offset, 14 + 40 + 8);
    }

    #[test]
    fn ipv6_first_fragment_has_ports() {
        let info = ip(&V6_FIRST_FRAG);
        assert!(!info.key.is_fragment());
        assert_eq!(info.key.proto(), protocol::UDP);
        assert_eq!(
            endpoints(&info),
            (
                v6("2607:f740:b::f93"),
                53,
                v6("2001:470:1f11:81f:d138:5f55:6d4:1fe2"),
                51851
            )
        );
        assert_eq!(info.fragment.unwrap().offset, 0);
    }

    #[test]
    fn ipv4_non_first_fragment() {
        let info = ip(&V4_LATER_FRAG);
        assert!(info.key.is_fragment());
        assert_eq!(info.key.proto(), protocol::TCP);
        assert_eq!(
            endpoints(&info),
            (v4("128.32.46.142"), 0, v4("10.0.0.1"), 0)
        );
        assert_eq!(info.tcp_flags, 0);
        assert_eq!(info.fragment.unwrap().offset, 48);
    }

    #[test]
    fn llc_snap_ipv4() {
        let info = ip(&SNAP_TCP);
        assert_eq!(
            endpoints(&info),
            (v4("192.168.1.1"), 12345, v4("192.168.1.2"), 80)
        );
        assert_eq!(info.tcp_flags, flags::SYN);
        assert!(!info.l4_truncated && !info.ip_truncated);
        assert_eq!(info.l3_offset, 22);
    }

    #[test]
    fn three_vlan_tags() {
        let info = ip(&QINQINQ);
        assert_eq!(info.key.vlan_ids(), &[30, 20, 10]);
        assert_eq!(info.key.vlan_depth(), 3);
        assert_eq!(
            endpoints(&info),
            (v4("141.142.228.5"), 59856, v4("192.150.187.43"), 80)
        );
    }

    /// Ethernet + IPv4 (total length 40 + `payload`) + TCP (20) + payload,
    /// padded to 60 bytes as on the wire (RFC 894 minimum frame).
    fn tcp_frame(payload: &[u8]) -> std::vec::Vec<u8> {
        let mut f = std::vec![0u8; 14];
        f[12] = 0x08;
        let total = (40 + payload.len()) as u16;
        f.extend_from_slice(&[
            0x45,
            0,
            (total >> 8) as u8,
            total as u8,
            0,
            0,
            0x40,
            0,
            64,
            6,
            0,
            0,
        ]);
        f.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
        f.extend_from_slice(&[
            0x9c, 0x40, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0,
        ]);
        f.extend_from_slice(payload);
        while f.len() < 60 {
            f.push(0xee);
        }
        f
    }

    #[test]
    fn payload_head_of_tcp_and_udp() {
        let f = tcp_frame(b"GET / HTTP/1.1\r\n");
        let i = ip(&f);
        assert_eq!(i.payload.len, 16);
        assert_eq!(&i.payload.bytes, b"GET ");
        assert_eq!(i.payload.captured, 4);
        let Parsed::Ip(bare) = parse_frame_without_payload(&f) else {
            panic!("not IP")
        };
        assert_eq!(
            bare,
            PacketInfo {
                payload: PayloadHead::NONE,
                ..i
            }
        );
        // A snaplen cut keeps the stated size, with fewer bytes.
        let i = ip(&f[..56]);
        assert_eq!((i.payload.len, i.payload.captured), (16, 2));
        // Ethernet padding is not payload: a 1-byte payload stays 1 byte.
        let i = ip(&tcp_frame(b"x"));
        assert_eq!(
            (i.payload.len, i.payload.captured, i.payload.bytes),
            (1, 1, *b"x\0\0\0")
        );
        // A bare ACK has none.
        assert_eq!(
            ip(&tcp_frame(b"")).payload,
            crate::applabel::PayloadHead::NONE
        );
        // Not TCP/UDP, or a non-first fragment: none.
        assert_eq!(ip(&SCTP_INIT).payload, crate::applabel::PayloadHead::NONE);
        assert_eq!(
            ip(&V4_LATER_FRAG).payload,
            crate::applabel::PayloadHead::NONE
        );
    }

    #[test]
    fn sctp_ports() {
        let info = ip(&SCTP_INIT);
        assert_eq!(info.key.proto(), protocol::SCTP);
        assert_eq!(
            endpoints(&info),
            (v4("192.168.170.8"), 7, v4("192.168.170.56"), 7)
        );
    }

    #[test]
    fn non_ip_frames() {
        assert_eq!(parse_frame(&ARP), Parsed::NonIp);
        // STP over LLC.
        let mut stp = [0u8; 20];
        stp[12..14].copy_from_slice(&6u16.to_be_bytes());
        stp[14..17].copy_from_slice(&[0x42, 0x42, 0x03]);
        assert_eq!(parse_frame(&stp), Parsed::NonIp);
        // MPLS followed by a pseudowire associated channel (first nibble 1).
        let mut ach = MPLS_ICMP;
        ach[22] = 0x10;
        assert_eq!(parse_frame(&ach), Parsed::NonIp);
    }

    #[test]
    fn truncated_and_malformed_ip_headers() {
        assert_eq!(parse_frame(&[]), Parsed::Truncated);
        assert_eq!(parse_frame(&SNAP_TCP[..13]), Parsed::Truncated);
        assert_eq!(parse_frame(&SNAP_TCP[..22 + 19]), Parsed::Truncated);
        assert_eq!(parse_frame(&QINQINQ[..22]), Parsed::Truncated);
        assert_eq!(parse_frame(&MPLS_ICMP[..20]), Parsed::Truncated);
        assert_eq!(parse_frame(&MPLS_ICMP[..22]), Parsed::Truncated);
        assert_eq!(parse_frame(&V6_FIRST_FRAG[..14 + 39]), Parsed::Truncated);
        // The IPv6 fragment header cut.
        assert_eq!(parse_frame(&V6_FIRST_FRAG[..14 + 44]), Parsed::Truncated);
        let mut f = SNAP_TCP;
        f[22] = 0x44; // IHL 4
        assert_eq!(parse_frame(&f), Parsed::Malformed);
        let mut f = SNAP_TCP;
        f[22 + 2..22 + 4].copy_from_slice(&10u16.to_be_bytes()); // total length < 20
        assert_eq!(parse_frame(&f), Parsed::Malformed);
        let mut f = V6_FIRST_FRAG;
        f[14] = 0x40; // version 4 behind an IPv6 EtherType
        assert_eq!(parse_frame(&f), Parsed::Malformed);
    }

    #[test]
    fn deep_vlan_stacks() {
        // 6 tags then IPv4 (the SNAP_TCP IP packet).
        let mut f = [0u8; 12 + 4 * 6 + 2 + 40];
        for i in 0..6 {
            f[12 + 4 * i..12 + 4 * i + 2].copy_from_slice(&0x8100u16.to_be_bytes());
            f[14 + 4 * i..14 + 4 * i + 2].copy_from_slice(&(100 + i as u16).to_be_bytes());
        }
        f[36..38].copy_from_slice(&0x0800u16.to_be_bytes());
        f[38..].copy_from_slice(&SNAP_TCP[22..]);
        let info = ip(&f);
        assert_eq!(info.key.vlan_ids(), &[100, 101, 102, 103]);
        assert_eq!(info.key.vlan_depth(), 6);
        assert!(info.key.vlans().overflowed());
        // More than VLAN_WALK_MAX tags.
        let mut f = [0u8; 14 + 4 * (VLAN_WALK_MAX + 1)];
        f[12..14].copy_from_slice(&0x88a8u16.to_be_bytes());
        for i in 0..=VLAN_WALK_MAX {
            f[16 + 4 * i..18 + 4 * i].copy_from_slice(&0x8100u16.to_be_bytes());
        }
        assert_eq!(parse_frame(&f), Parsed::Malformed);
    }

    #[test]
    fn mpls_stack_without_bottom() {
        let mut f = [0u8; 14 + 4 * (MPLS_DEPTH_MAX + 1)];
        f[12..14].copy_from_slice(&0x8847u16.to_be_bytes());
        assert_eq!(parse_frame(&f), Parsed::Malformed);
        // Ends before a bottom-of-stack entry.
        assert_eq!(parse_frame(&f[..14 + 8]), Parsed::Truncated);
    }

    #[test]
    fn eompls_nesting_is_bounded() {
        // Ethernet → MPLS (bos) → CW → Ethernet → MPLS ... repeated.
        let unit: [u8; 22] = [
            0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 2, 0x88, 0x47, 0, 0, 0x11, 64, 0, 0, 0, 0,
        ];
        let mut f = [0u8; 22 * (ETHERNET_DEPTH_MAX + 1)];
        for c in f.chunks_exact_mut(22) {
            c.copy_from_slice(&unit);
        }
        assert_eq!(parse_frame(&f), Parsed::Malformed);
    }

    #[test]
    fn keys_are_symmetric() {
        let fwd = ip(&SNAP_TCP);
        // Swap addresses and ports.
        let mut rev = SNAP_TCP;
        rev[22 + 12..22 + 16].copy_from_slice(&SNAP_TCP[22 + 16..22 + 20]);
        rev[22 + 16..22 + 20].copy_from_slice(&SNAP_TCP[22 + 12..22 + 16]);
        rev[42..44].copy_from_slice(&SNAP_TCP[44..46]);
        rev[44..46].copy_from_slice(&SNAP_TCP[42..44]);
        let rev = ip(&rev);
        assert_eq!(fwd.key, rev.key);
        assert_ne!(fwd.a_to_b, rev.a_to_b);
        assert_eq!(symmetric_hash(&fwd.key), symmetric_hash(&rev.key));
        assert!(fwd.key.is_a_to_b(v4("192.168.1.1"), 12345));
        assert!(!fwd.key.is_a_to_b(v4("192.168.1.2"), 80));
        // Different flows hash differently (for these two, at least).
        assert_ne!(symmetric_hash(&fwd.key), symmetric_hash(&ip(&QINQINQ).key));
    }

    #[test]
    fn same_endpoint_both_sides() {
        let (k, a_to_b) = FlowKey::from_endpoints(
            VlanStack::new(),
            protocol::TCP,
            false,
            IpFamily::V4,
            v4_bytes([65, 65, 65, 65]),
            80,
            v4_bytes([65, 65, 65, 65]),
            32828,
        );
        assert!(a_to_b);
        assert_eq!((k.port_a(), k.port_b()), (80, 32828));
    }
}

//! IPv6 fixed header (RFC 8200) and the extension header chain.
//!
//! ```text
//!  0       4               12                                     31
//! +-------+---------------+---------------------------------------+
//! |version| traffic class |              flow label               |
//! +-------+---------------+---------------+-----------------------+
//! |        payload length         |  next header  |   hop limit   |
//! +-------------------------------+---------------+---------------+
//! |                 source address (16 bytes)                     |
//! |               destination address (16 bytes)                  |
//! +---------------------------------------------------------------+
//! ```
//!
//! [`Packet::check_len`] demands version 6 (`Malformed`) and the 40-byte
//! header in the buffer (`Truncated`); a buffer shorter than 40 + payload
//! length is accepted (cut capture). [`Packet::payload`] is bounded by the
//! payload length and the buffer. Jumbograms (payload length 0 with a
//! hop-by-hop jumbo option) are not supported: their payload reads as empty.
//!
//! [`Packet::upper_layer`] walks the extension headers hop-by-hop (0),
//! routing (43), fragment (44), destination options (60) and authentication
//! (51, length in 4-byte units + 2), at most [`EXT_HEADERS_MAX`] of them, and
//! returns the upper-layer protocol, its offset and the fragment header's
//! contents if one was seen. The walk stops at a fragment header whose offset
//! is not 0: what follows is the middle of the fragmented payload, and the
//! header's next-header field is reported as the upper-layer protocol.

use core::net::Ipv6Addr;

use crate::bytes::{array, be16, be32, slice, u8_at};
use crate::error::{Result, WireError};
use crate::ipv4::protocol;

mod field {
    use core::ops::Range;
    pub const VER_TC_FLOW: Range<usize> = 0..4;
    pub const LENGTH: Range<usize> = 4..6;
    pub const NXT_HDR: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC: Range<usize> = 8..24;
    pub const DST: Range<usize> = 24..40;
}

/// Length of the fixed header.
pub const HEADER_LEN: usize = field::DST.end;

/// Most extension headers [`Packet::upper_layer`] walks before it calls the
/// chain `Malformed`.
pub const EXT_HEADERS_MAX: usize = 16;

/// Length of the fragment extension header.
pub const FRAG_HEADER_LEN: usize = 8;

/// The contents of a fragment extension header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FragmentInfo {
    /// Fragment offset in bytes.
    pub offset: u16,
    /// More-fragments flag.
    pub more_fragments: bool,
    /// Identification.
    pub ident: u32,
}

/// Where the extension header chain ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UpperLayer {
    /// Upper-layer protocol (the first next-header value that is not a
    /// walked extension header; for a non-first fragment the fragment
    /// header's next header).
    pub protocol: u8,
    /// Offset of the upper-layer header from the start of the IPv6 header.
    pub offset: usize,
    /// The fragment header, if the chain had one.
    pub fragment: Option<FragmentInfo>,
    /// Number of extension headers walked.
    pub ext_headers: u8,
}

impl UpperLayer {
    /// Whether a fragment header with a non-zero offset was seen.
    pub fn is_non_first_fragment(&self) -> bool {
        matches!(self.fragment, Some(f) if f.offset != 0)
    }
}

/// A read-only view of an IPv6 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wrap `buffer` without checks (short buffers read as zeros).
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wrap `buffer` after [`check_len`](Self::check_len).
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// `Truncated` if the buffer is shorter than 40 bytes, `Malformed` if the
    /// version is not 6.
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if self.version() != 6 {
            return Err(WireError::Malformed);
        }
        Ok(())
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn first_word(&self) -> u32 {
        be32(self.buffer.as_ref(), field::VER_TC_FLOW.start)
    }

    /// IP version (6 for a checked view).
    pub fn version(&self) -> u8 {
        (self.first_word() >> 28) as u8
    }

    /// Traffic class.
    pub fn traffic_class(&self) -> u8 {
        ((self.first_word() >> 20) & 0xff) as u8
    }

    /// Flow label (20 bits).
    pub fn flow_label(&self) -> u32 {
        self.first_word() & 0x000f_ffff
    }

    /// Payload length (extension headers included) as the header states it.
    pub fn payload_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::LENGTH.start)
    }

    /// Next header of the fixed header.
    pub fn next_header(&self) -> u8 {
        u8_at(self.buffer.as_ref(), field::NXT_HDR)
    }

    /// Hop limit.
    pub fn hop_limit(&self) -> u8 {
        u8_at(self.buffer.as_ref(), field::HOP_LIMIT)
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.src_bytes())
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.dst_bytes())
    }

    /// Source address as bytes.
    pub fn src_bytes(&self) -> [u8; 16] {
        array(self.buffer.as_ref(), field::SRC.start)
    }

    /// Destination address as bytes.
    pub fn dst_bytes(&self) -> [u8; 16] {
        array(self.buffer.as_ref(), field::DST.start)
    }

    /// End of the packet as the header states it.
    fn stated_end(&self) -> usize {
        HEADER_LEN + usize::from(self.payload_len())
    }

    /// End of the payload: the stated end, or the buffer's end if sooner.
    fn payload_end(&self) -> usize {
        self.stated_end().min(self.buffer.as_ref().len())
    }

    /// Everything after the fixed header (extension headers included),
    /// bounded by the payload length and by the buffer.
    pub fn payload(&self) -> &[u8] {
        slice(self.buffer.as_ref(), HEADER_LEN..self.payload_end())
    }

    /// Whether the buffer ends before 40 + payload length (a cut capture).
    pub fn payload_truncated(&self) -> bool {
        self.buffer.as_ref().len() < self.stated_end()
    }

    /// Bytes from `offset` (from the start of the IPv6 header) to the end of
    /// the payload, e.g. the upper-layer header at [`UpperLayer::offset`].
    pub fn bytes_from(&self, offset: usize) -> &[u8] {
        slice(self.buffer.as_ref(), offset..self.payload_end())
    }

    /// Walk the extension header chain (see the module documentation).
    ///
    /// `Truncated` if the capture ends inside the chain, `Malformed` if a
    /// header runs past the stated payload length or the chain is longer than
    /// [`EXT_HEADERS_MAX`].
    pub fn upper_layer(&self) -> Result<UpperLayer> {
        let buf = self.buffer.as_ref();
        let stated_end = self.stated_end();
        let mut next = self.next_header();
        let mut offset = HEADER_LEN;
        let mut fragment = None;
        for walked in 0..=EXT_HEADERS_MAX {
            let len = match next {
                protocol::HOPOPT | protocol::IPV6_ROUTE | protocol::IPV6_OPTS => {
                    // Length in 8-byte units, not counting the first 8.
                    (usize::from(self.ext_byte(offset + 1, stated_end)?) + 1) * 8
                }
                protocol::AH => {
                    // Length in 4-byte units, not counting the first 2.
                    (usize::from(self.ext_byte(offset + 1, stated_end)?) + 2) * 4
                }
                protocol::IPV6_FRAG => FRAG_HEADER_LEN,
                _ => {
                    return Ok(UpperLayer {
                        protocol: next,
                        offset,
                        fragment,
                        ext_headers: walked as u8,
                    });
                }
            };
            if walked == EXT_HEADERS_MAX {
                break;
            }
            let end = offset + len;
            if end > stated_end {
                return Err(WireError::Malformed);
            }
            if end > buf.len() {
                return Err(WireError::Truncated);
            }
            let this = next;
            next = u8_at(buf, offset);
            if this == protocol::IPV6_FRAG {
                let off_flags = be16(buf, offset + 2);
                let info = FragmentInfo {
                    offset: off_flags & 0xfff8,
                    more_fragments: off_flags & 1 != 0,
                    ident: be32(buf, offset + 4),
                };
                fragment = Some(info);
                if info.offset != 0 {
                    return Ok(UpperLayer {
                        protocol: next,
                        offset: end,
                        fragment,
                        ext_headers: walked as u8 + 1,
                    });
                }
            }
            offset = end;
        }
        Err(WireError::Malformed)
    }

    /// Byte `at` of an extension header, checked against the stated and the
    /// captured end.
    fn ext_byte(&self, at: usize, stated_end: usize) -> Result<u8> {
        if at >= stated_end {
            return Err(WireError::Malformed);
        }
        match self.buffer.as_ref().get(at) {
            Some(&b) => Ok(b),
            None => Err(WireError::Truncated),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // zeek__ipv6-fragmented-dns.pcap frame 6 from the IPv6 header on (first 56
    // bytes): first fragment (offset 0, M) of a UDP datagram.
    const FIRST_FRAG: [u8; 56] = [
        0x60, 0x00, 0x00, 0x00, 0x05, 0xa0, 0x2c, 0x35, 0x26, 0x07, 0xf7, 0x40, 0x00, 0x0b, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0f, 0x93, 0x20, 0x01, 0x04, 0x70, 0x1f, 0x11,
        0x08, 0x1f, 0xd1, 0x38, 0x5f, 0x55, 0x06, 0xd4, 0x1f, 0xe2, 0x11, 0x00, 0x00, 0x01, 0x00,
        0x00, 0x00, 0x02, 0x00, 0x35, 0xca, 0x8b, 0x0c, 0xa6, 0x68, 0x8f,
    ];

    // Same trace, frame 4 (first 52 bytes): a later fragment, offset 2896.
    const LATER_FRAG: [u8; 52] = [
        0x60, 0x00, 0x00, 0x00, 0x01, 0x5e, 0x2c, 0x35, 0x26, 0x07, 0xf7, 0x40, 0x00, 0x0b, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0f, 0x93, 0x20, 0x01, 0x04, 0x70, 0x1f, 0x11,
        0x08, 0x1f, 0xd1, 0x38, 0x5f, 0x55, 0x06, 0xd4, 0x1f, 0xe2, 0x11, 0x00, 0x0b, 0x50, 0x00,
        0x00, 0x00, 0x01, 0x58, 0x58, 0x58, 0x58,
    ];

    // zeek__icmp_icmp6-ping.pcap frame 1 from the IPv6 header on (first 48 bytes).
    const ICMP6_ECHO: [u8; 48] = [
        0x60, 0x00, 0x00, 0x00, 0x00, 0x28, 0x3a, 0x80, 0x26, 0x20, 0x00, 0x00, 0x0e, 0x00, 0x40,
        0x0e, 0x0d, 0x1d, 0xdb, 0x37, 0x0b, 0xeb, 0x5a, 0xac, 0x20, 0x01, 0x48, 0x60, 0x80, 0x06,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x63, 0x80, 0x00, 0x29, 0x10, 0x00,
        0x01, 0x00, 0x03,
    ];

    #[test]
    fn parses_fixed_header() {
        let p = Packet::new_checked(&ICMP6_ECHO[..]).unwrap();
        assert_eq!(p.version(), 6);
        assert_eq!(p.traffic_class(), 0);
        assert_eq!(p.flow_label(), 0);
        assert_eq!(p.payload_len(), 40);
        assert_eq!(p.next_header(), protocol::ICMPV6);
        assert_eq!(p.hop_limit(), 128);
        assert_eq!(
            p.src_addr(),
            "2620:0:e00:400e:d1d:db37:beb:5aac"
                .parse::<Ipv6Addr>()
                .unwrap()
        );
        assert_eq!(
            p.dst_addr(),
            "2001:4860:8006::63".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(p.payload().len(), 8);
        assert!(p.payload_truncated());
        let u = p.upper_layer().unwrap();
        assert_eq!(u.protocol, protocol::ICMPV6);
        assert_eq!(u.offset, 40);
        assert_eq!(u.fragment, None);
        assert_eq!(u.ext_headers, 0);
    }

    #[test]
    fn first_fragment_reaches_udp() {
        let p = Packet::new_checked(&FIRST_FRAG[..]).unwrap();
        let u = p.upper_layer().unwrap();
        assert_eq!(u.protocol, protocol::UDP);
        assert_eq!(u.offset, 48);
        assert_eq!(
            u.fragment,
            Some(FragmentInfo {
                offset: 0,
                more_fragments: true,
                ident: 2
            })
        );
        assert!(!u.is_non_first_fragment());
        assert_eq!(&p.bytes_from(u.offset)[..4], &[0x00, 0x35, 0xca, 0x8b]);
    }

    #[test]
    fn later_fragment_stops_the_walk() {
        let p = Packet::new_checked(&LATER_FRAG[..]).unwrap();
        let u = p.upper_layer().unwrap();
        assert_eq!(u.protocol, protocol::UDP);
        assert_eq!(u.offset, 48);
        assert_eq!(
            u.fragment,
            Some(FragmentInfo {
                offset: 2896,
                more_fragments: false,
                ident: 1
            })
        );
        assert!(u.is_non_first_fragment());
    }

    /// A header with the given chain of (next header, 8-byte ext header body)
    /// followed by 8 bytes of upper-layer data.
    fn with_chain(first: u8, chain: &[[u8; 8]]) -> ([u8; 40 + 8 * 20], usize) {
        let mut b = [0u8; 40 + 8 * 20];
        b[..40].copy_from_slice(&ICMP6_ECHO[..40]);
        b[6] = first;
        let mut off = 40;
        for h in chain {
            b[off..off + 8].copy_from_slice(h);
            off += 8;
        }
        off += 8;
        b[4..6].copy_from_slice(&((off - 40) as u16).to_be_bytes());
        (b, off)
    }

    #[test]
    fn walks_every_kind_of_ext_header() {
        let (b, len) = with_chain(
            protocol::HOPOPT,
            &[
                [protocol::IPV6_ROUTE, 0, 1, 4, 0, 0, 0, 0],
                [protocol::AH, 0, 0, 0, 0, 0, 0, 0],
                // AH: length 0 → (0 + 2) × 4 = 8 bytes.
                [protocol::IPV6_OPTS, 0, 0, 0, 0, 0, 0, 0],
                [protocol::IPV6_FRAG, 0, 0, 0, 0, 0, 0, 0],
                [protocol::TCP, 0, 0x00, 0x00, 0, 0, 0, 9],
            ],
        );
        let p = Packet::new_checked(&b[..len]).unwrap();
        let u = p.upper_layer().unwrap();
        assert_eq!(u.protocol, protocol::TCP);
        assert_eq!(u.offset, 80);
        assert_eq!(u.ext_headers, 5);
        assert_eq!(
            u.fragment,
            Some(FragmentInfo {
                offset: 0,
                more_fragments: false,
                ident: 9
            })
        );
    }

    #[test]
    fn chain_past_the_buffer_is_truncated() {
        let (mut b, _) = with_chain(
            protocol::HOPOPT,
            &[[protocol::IPV6_OPTS, 1, 0, 0, 0, 0, 0, 0]],
        );
        // Hop-by-hop says 16 bytes; payload length agrees (16 + 8), capture stops at 44.
        b[4..6].copy_from_slice(&24u16.to_be_bytes());
        let p = Packet::new_checked(&b[..44]).unwrap();
        assert_eq!(p.upper_layer().unwrap_err(), WireError::Truncated);
        // Capture stops right after the fixed header.
        let p = Packet::new_checked(&b[..40]).unwrap();
        assert_eq!(p.upper_layer().unwrap_err(), WireError::Truncated);
    }

    #[test]
    fn chain_past_the_payload_length_is_malformed() {
        let (mut b, len) = with_chain(protocol::HOPOPT, &[[protocol::UDP, 3, 0, 0, 0, 0, 0, 0]]);
        // Hop-by-hop claims 32 bytes; the payload length says 16.
        b[4..6].copy_from_slice(&16u16.to_be_bytes());
        let p = Packet::new_checked(&b[..len]).unwrap();
        assert_eq!(p.upper_layer().unwrap_err(), WireError::Malformed);
        // Payload length 0 with an extension header.
        b[4..6].copy_from_slice(&0u16.to_be_bytes());
        let p = Packet::new_checked(&b[..len]).unwrap();
        assert_eq!(p.upper_layer().unwrap_err(), WireError::Malformed);
    }

    #[test]
    fn chain_longer_than_the_bound_is_malformed() {
        let opts = [protocol::IPV6_OPTS, 0, 0, 0, 0, 0, 0, 0];
        let (b, len) = with_chain(protocol::IPV6_OPTS, &[opts; EXT_HEADERS_MAX + 1]);
        let p = Packet::new_checked(&b[..len]).unwrap();
        assert_eq!(p.upper_layer().unwrap_err(), WireError::Malformed);
        // Exactly the bound is fine.
        let mut chain = [opts; EXT_HEADERS_MAX];
        chain[EXT_HEADERS_MAX - 1][0] = protocol::UDP;
        let (b, len) = with_chain(protocol::IPV6_OPTS, &chain);
        let u = Packet::new_checked(&b[..len])
            .unwrap()
            .upper_layer()
            .unwrap();
        assert_eq!(u.protocol, protocol::UDP);
        assert_eq!(usize::from(u.ext_headers), EXT_HEADERS_MAX);
    }

    #[test]
    fn rejects_bad_fixed_headers() {
        assert_eq!(
            Packet::new_checked(&ICMP6_ECHO[..39]).unwrap_err(),
            WireError::Truncated
        );
        let mut b = ICMP6_ECHO;
        b[0] = 0x45;
        assert_eq!(
            Packet::new_checked(&b[..]).unwrap_err(),
            WireError::Malformed
        );
        // Payload length 0: empty payload, walk ends at once for a non-extension protocol.
        let mut b = ICMP6_ECHO;
        b[4] = 0;
        b[5] = 0;
        let p = Packet::new_checked(&b[..]).unwrap();
        assert!(p.payload().is_empty());
        assert_eq!(p.upper_layer().unwrap().offset, 40);
    }
}

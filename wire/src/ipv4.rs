//! IPv4 header (RFC 791).
//!
//! ```text
//!  0       4       8              16   19                       31
//! +-------+-------+---------------+-------------------------------+
//! |version|  IHL  |   DSCP/ECN    |          total length         |
//! +-------+-------+---------------+-----+-------------------------+
//! |         identification        |flags|     fragment offset     |
//! +---------------+---------------+-----+-------------------------+
//! |      TTL      |   protocol    |        header checksum        |
//! +---------------+---------------+-------------------------------+
//! |                        source address                         |
//! |                     destination address                       |
//! |                    options (IHL > 5) ...                      |
//! +---------------------------------------------------------------+
//! ```
//!
//! [`Packet::check_len`] demands version 4, IHL >= 5, total length >= the
//! header length (else `Malformed`) and the whole header, options included,
//! in the buffer (else `Truncated`). A buffer shorter than the total length is
//! accepted: captures cut by a snaplen are normal. [`Packet::payload`] is
//! bounded by both the total length (Ethernet padding is not payload) and the
//! buffer; [`Packet::payload_truncated`] tells whether the capture cut it.

use core::net::Ipv4Addr;

use crate::bytes::{array, be16, slice, u8_at};
use crate::error::{Result, WireError};

/// IP protocol numbers linecap knows by name (shared by IPv4 and IPv6).
pub mod protocol {
    /// IPv6 hop-by-hop options.
    pub const HOPOPT: u8 = 0;
    /// ICMP.
    pub const ICMP: u8 = 1;
    /// IGMP.
    pub const IGMP: u8 = 2;
    /// IPv4 in IP.
    pub const IPIP: u8 = 4;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// IPv6 in IP.
    pub const IPV6: u8 = 41;
    /// IPv6 routing header.
    pub const IPV6_ROUTE: u8 = 43;
    /// IPv6 fragment header.
    pub const IPV6_FRAG: u8 = 44;
    /// GRE.
    pub const GRE: u8 = 47;
    /// ESP.
    pub const ESP: u8 = 50;
    /// Authentication header.
    pub const AH: u8 = 51;
    /// ICMPv6.
    pub const ICMPV6: u8 = 58;
    /// No next header (IPv6).
    pub const IPV6_NONXT: u8 = 59;
    /// IPv6 destination options.
    pub const IPV6_OPTS: u8 = 60;
    /// SCTP.
    pub const SCTP: u8 = 132;
}

mod field {
    use core::ops::Range;
    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const LENGTH: Range<usize> = 2..4;
    pub const IDENT: Range<usize> = 4..6;
    pub const FLG_OFF: Range<usize> = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Range<usize> = 10..12;
    pub const SRC: Range<usize> = 12..16;
    pub const DST: Range<usize> = 16..20;
}

/// Length of the header without options.
pub const HEADER_LEN: usize = field::DST.end;

/// A read-only view of an IPv4 packet.
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

    /// Validate the header: see the module documentation.
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if self.version() != 4 {
            return Err(WireError::Malformed);
        }
        let hl = self.header_len();
        if hl < HEADER_LEN || usize::from(self.total_len()) < hl {
            return Err(WireError::Malformed);
        }
        if len < hl {
            return Err(WireError::Truncated);
        }
        Ok(())
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// IP version (4 for a checked view).
    pub fn version(&self) -> u8 {
        u8_at(self.buffer.as_ref(), field::VER_IHL) >> 4
    }

    /// Header length in bytes (IHL × 4), options included.
    pub fn header_len(&self) -> usize {
        usize::from(u8_at(self.buffer.as_ref(), field::VER_IHL) & 0x0f) * 4
    }

    /// Differentiated services code point.
    pub fn dscp(&self) -> u8 {
        u8_at(self.buffer.as_ref(), field::DSCP_ECN) >> 2
    }

    /// Explicit congestion notification bits.
    pub fn ecn(&self) -> u8 {
        u8_at(self.buffer.as_ref(), field::DSCP_ECN) & 0x03
    }

    /// Total length (header + payload) as the header states it.
    pub fn total_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::LENGTH.start)
    }

    /// Identification.
    pub fn ident(&self) -> u16 {
        be16(self.buffer.as_ref(), field::IDENT.start)
    }

    /// Don't-fragment flag.
    pub fn dont_frag(&self) -> bool {
        be16(self.buffer.as_ref(), field::FLG_OFF.start) & 0x4000 != 0
    }

    /// More-fragments flag.
    pub fn more_frags(&self) -> bool {
        be16(self.buffer.as_ref(), field::FLG_OFF.start) & 0x2000 != 0
    }

    /// Fragment offset in bytes (the field × 8).
    pub fn frag_offset(&self) -> u16 {
        (be16(self.buffer.as_ref(), field::FLG_OFF.start) & 0x1fff) << 3
    }

    /// Whether this is a fragment other than the first (offset != 0).
    pub fn is_non_first_fragment(&self) -> bool {
        self.frag_offset() != 0
    }

    /// Whether this is a fragment at all (MF set or offset != 0).
    pub fn is_fragment(&self) -> bool {
        self.more_frags() || self.is_non_first_fragment()
    }

    /// Time to live.
    pub fn ttl(&self) -> u8 {
        u8_at(self.buffer.as_ref(), field::TTL)
    }

    /// Protocol of the payload.
    pub fn protocol(&self) -> u8 {
        u8_at(self.buffer.as_ref(), field::PROTOCOL)
    }

    /// Header checksum as stored.
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM.start)
    }

    /// Whether the header checksum verifies (false if the header is not all there).
    pub fn verify_checksum(&self) -> bool {
        let hl = self.header_len();
        let Some(h) = self.buffer.as_ref().get(..hl) else {
            return false;
        };
        let mut sum: u32 = 0;
        for pair in h.chunks_exact(2) {
            if let &[x, y] = pair {
                sum += u32::from(u16::from_be_bytes([x, y]));
            }
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum == 0xffff
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(array::<4>(self.buffer.as_ref(), field::SRC.start))
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(array::<4>(self.buffer.as_ref(), field::DST.start))
    }

    /// Source address as bytes.
    pub fn src_bytes(&self) -> [u8; 4] {
        array(self.buffer.as_ref(), field::SRC.start)
    }

    /// Destination address as bytes.
    pub fn dst_bytes(&self) -> [u8; 4] {
        array(self.buffer.as_ref(), field::DST.start)
    }

    /// The options (empty when IHL = 5).
    pub fn options(&self) -> &[u8] {
        slice(self.buffer.as_ref(), HEADER_LEN..self.header_len())
    }

    /// End of the payload: the total length, or the buffer's end if sooner.
    fn payload_end(&self) -> usize {
        usize::from(self.total_len()).min(self.buffer.as_ref().len())
    }

    /// The payload, bounded by the total length and by the buffer.
    pub fn payload(&self) -> &[u8] {
        slice(self.buffer.as_ref(), self.header_len()..self.payload_end())
    }

    /// Whether the buffer ends before the total length (a cut capture).
    pub fn payload_truncated(&self) -> bool {
        self.buffer.as_ref().len() < usize::from(self.total_len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // zeek__ipv4_fragmented-4.pcap frame 2, from the IP header on: first
    // fragment (MF, offset 0) of a TCP segment, 44 bytes.
    const FIRST_FRAG: [u8; 44] = [
        0x45, 0x10, 0x00, 0x2c, 0x00, 0x00, 0x20, 0x00, 0xff, 0x06, 0xe3, 0x0c, 0x80, 0x20, 0x2e,
        0x8e, 0x0a, 0x00, 0x00, 0x01, 0x1e, 0x6e, 0x00, 0x50, 0x00, 0xe0, 0x89, 0x25, 0x00, 0x2d,
        0x97, 0xf2, 0x50, 0x00, 0xff, 0xff, 0x4f, 0x69, 0x00, 0x00, 0x47, 0x45, 0x54, 0x20,
    ];

    // Same trace, frame 3: a non-first fragment (offset 6 × 8 = 48, MF).
    const LATER_FRAG_HDR: [u8; 20] = [
        0x45, 0x10, 0x00, 0x2c, 0x00, 0x00, 0x20, 0x06, 0xff, 0x06, 0xe3, 0x06, 0x80, 0x20, 0x2e,
        0x8e, 0x0a, 0x00, 0x00, 0x01,
    ];

    #[test]
    fn parses_first_fragment() {
        let p = Packet::new_checked(&FIRST_FRAG[..]).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.dscp(), 4);
        assert_eq!(p.ecn(), 0);
        assert_eq!(p.total_len(), 44);
        assert_eq!(p.ident(), 0);
        assert!(!p.dont_frag());
        assert!(p.more_frags());
        assert_eq!(p.frag_offset(), 0);
        assert!(p.is_fragment());
        assert!(!p.is_non_first_fragment());
        assert_eq!(p.ttl(), 255);
        assert_eq!(p.protocol(), protocol::TCP);
        assert_eq!(p.checksum(), 0xe30c);
        assert!(p.verify_checksum());
        assert_eq!(p.src_addr(), Ipv4Addr::new(128, 32, 46, 142));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(10, 0, 0, 1));
        assert!(p.options().is_empty());
        assert_eq!(p.payload().len(), 24);
        assert_eq!(&p.payload()[..4], &[0x1e, 0x6e, 0x00, 0x50]);
        assert!(!p.payload_truncated());
    }

    #[test]
    fn parses_later_fragment() {
        let p = Packet::new_checked(&LATER_FRAG_HDR[..]).unwrap();
        assert!(p.more_frags());
        assert_eq!(p.frag_offset(), 48);
        assert!(p.is_non_first_fragment());
        // Capture holds only the header: payload empty, cut by the capture.
        assert!(p.payload().is_empty());
        assert!(p.payload_truncated());
    }

    #[test]
    fn payload_excludes_ethernet_padding() {
        let mut buf = [0u8; 60];
        buf[..44].copy_from_slice(&FIRST_FRAG);
        let p = Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(p.payload().len(), 24);
    }

    #[test]
    fn options_are_exposed() {
        // IHL 6: one 4-byte option (NOP NOP NOP EOL), total length 28.
        let mut buf = [0u8; 28];
        buf[..20].copy_from_slice(&LATER_FRAG_HDR);
        buf[0] = 0x46;
        buf[2..4].copy_from_slice(&28u16.to_be_bytes());
        buf[20..24].copy_from_slice(&[1, 1, 1, 0]);
        let p = Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(p.header_len(), 24);
        assert_eq!(p.options(), &[1, 1, 1, 0]);
        assert_eq!(p.payload().len(), 4);
        // Options cut by the capture.
        assert_eq!(
            Packet::new_checked(&buf[..22]).unwrap_err(),
            WireError::Truncated
        );
    }

    #[test]
    fn rejects_bad_headers() {
        assert_eq!(
            Packet::new_checked(&FIRST_FRAG[..19]).unwrap_err(),
            WireError::Truncated
        );
        let mut b = FIRST_FRAG;
        b[0] = 0x44; // IHL 4 < 5
        assert_eq!(
            Packet::new_checked(&b[..]).unwrap_err(),
            WireError::Malformed
        );
        let mut b = FIRST_FRAG;
        b[0] = 0x65; // version 6
        assert_eq!(
            Packet::new_checked(&b[..]).unwrap_err(),
            WireError::Malformed
        );
        let mut b = FIRST_FRAG;
        b[2..4].copy_from_slice(&19u16.to_be_bytes()); // total length < header
        assert_eq!(
            Packet::new_checked(&b[..]).unwrap_err(),
            WireError::Malformed
        );
        let mut b = FIRST_FRAG;
        b[0] = 0x4f; // IHL 15 = 60 bytes > total length 44
        assert_eq!(
            Packet::new_checked(&b[..]).unwrap_err(),
            WireError::Malformed
        );
        let mut b = FIRST_FRAG;
        b[10] ^= 1;
        assert!(!Packet::new_checked(&b[..]).unwrap().verify_checksum());
    }
}

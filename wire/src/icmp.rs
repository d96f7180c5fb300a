//! ICMP (RFC 792) and ICMPv6 (RFC 4443) header: both start with type, code,
//! checksum and a 4-byte rest-of-header, so one view serves both.
//!
//! ```text
//!  0               8              16                              31
//! +---------------+---------------+-------------------------------+
//! |     type      |     code      |           checksum            |
//! |              rest of header (echo: identifier, sequence)      |
//! +---------------------------------------------------------------+
//! ```
//!
//! [`Packet::check_len`]: `Truncated` if fewer than 8 bytes.

use crate::bytes::{be16, tail, u8_at};
use crate::error::{Result, WireError};

/// ICMPv4 message types linecap knows by name.
pub mod v4_type {
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 0;
    /// Destination unreachable.
    pub const DST_UNREACHABLE: u8 = 3;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = 8;
    /// Time exceeded.
    pub const TIME_EXCEEDED: u8 = 11;
}

/// ICMPv6 message types linecap knows by name.
pub mod v6_type {
    /// Destination unreachable.
    pub const DST_UNREACHABLE: u8 = 1;
    /// Packet too big.
    pub const PACKET_TOO_BIG: u8 = 2;
    /// Time exceeded.
    pub const TIME_EXCEEDED: u8 = 3;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = 128;
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 129;
    /// Router solicitation.
    pub const ROUTER_SOLICIT: u8 = 133;
    /// Router advertisement.
    pub const ROUTER_ADVERT: u8 = 134;
    /// Neighbour solicitation.
    pub const NEIGHBOR_SOLICIT: u8 = 135;
    /// Neighbour advertisement.
    pub const NEIGHBOR_ADVERT: u8 = 136;
}

mod field {
    use core::ops::Range;
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Range<usize> = 2..4;
    pub const ECHO_IDENT: Range<usize> = 4..6;
    pub const ECHO_SEQNO: Range<usize> = 6..8;
}

/// Length of the header (type, code, checksum, rest of header).
pub const HEADER_LEN: usize = field::ECHO_SEQNO.end;

/// A read-only view of an ICMP or ICMPv6 message.
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

    /// `Truncated` if the buffer is shorter than 8 bytes.
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(WireError::Truncated)
        } else {
            Ok(())
        }
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Message type.
    pub fn msg_type(&self) -> u8 {
        u8_at(self.buffer.as_ref(), field::TYPE)
    }

    /// Message code.
    pub fn msg_code(&self) -> u8 {
        u8_at(self.buffer.as_ref(), field::CODE)
    }

    /// Checksum as stored.
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM.start)
    }

    /// Echo identifier (meaningful for echo request/reply).
    pub fn echo_ident(&self) -> u16 {
        be16(self.buffer.as_ref(), field::ECHO_IDENT.start)
    }

    /// Echo sequence number (meaningful for echo request/reply).
    pub fn echo_seq_no(&self) -> u16 {
        be16(self.buffer.as_ref(), field::ECHO_SEQNO.start)
    }

    /// Everything after the 8-byte header.
    pub fn payload(&self) -> &[u8] {
        tail(self.buffer.as_ref(), HEADER_LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // zeek__icmp_icmp6-ping.pcap frame 1: ICMPv6 echo request (first 12 bytes).
    const ECHO6: [u8; 12] = [
        0x80, 0x00, 0x29, 0x10, 0x00, 0x01, 0x00, 0x03, 0x61, 0x62, 0x63, 0x64,
    ];

    // tcpreplay__test.pcap frame 11: ICMPv4 echo request (first 10 bytes).
    const ECHO4: [u8; 10] = [0x08, 0x00, 0xbd, 0x10, 0x0f, 0x66, 0x12, 0xa0, 0x00, 0x00];

    #[test]
    fn parses_icmpv6_echo() {
        let p = Packet::new_checked(&ECHO6[..]).unwrap();
        assert_eq!(p.msg_type(), v6_type::ECHO_REQUEST);
        assert_eq!(p.msg_code(), 0);
        assert_eq!(p.checksum(), 0x2910);
        assert_eq!(p.echo_ident(), 1);
        assert_eq!(p.echo_seq_no(), 3);
        assert_eq!(p.payload(), b"abcd");
    }

    #[test]
    fn parses_icmpv4_echo() {
        let p = Packet::new_checked(&ECHO4[..]).unwrap();
        assert_eq!(p.msg_type(), v4_type::ECHO_REQUEST);
        assert_eq!(p.echo_ident(), 0x0f66);
        assert_eq!(p.echo_seq_no(), 0x12a0);
        assert_eq!(p.payload().len(), 2);
    }

    #[test]
    fn truncated_header() {
        assert_eq!(
            Packet::new_checked(&ECHO4[..7]).unwrap_err(),
            WireError::Truncated
        );
        let p = Packet::new_unchecked(&ECHO4[..2]);
        assert_eq!((p.msg_type(), p.msg_code(), p.checksum()), (8, 0, 0));
    }
}

//! UDP header (RFC 768).
//!
//! ```text
//!  0                              16                              31
//! +-------------------------------+-------------------------------+
//! |          source port          |       destination port        |
//! |            length             |           checksum            |
//! +-------------------------------+-------------------------------+
//! ```
//!
//! [`Packet::check_len`]: `Truncated` if fewer than 8 bytes, `Malformed` if
//! the length field is below 8. A buffer shorter than the length field is
//! accepted (cut capture); [`Packet::payload`] is bounded by both.

use crate::bytes::{be16, slice};
use crate::error::{Result, WireError};

mod field {
    use core::ops::Range;
    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    pub const LENGTH: Range<usize> = 4..6;
    pub const CHECKSUM: Range<usize> = 6..8;
}

/// Length of the header.
pub const HEADER_LEN: usize = field::CHECKSUM.end;

/// A read-only view of a UDP datagram.
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
        if self.buffer.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if usize::from(self.len()) < HEADER_LEN {
            return Err(WireError::Malformed);
        }
        Ok(())
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Source port.
    pub fn src_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::SRC_PORT.start)
    }

    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::DST_PORT.start)
    }

    /// Length (header + payload) as the header states it.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::LENGTH.start)
    }

    /// Checksum as stored (0 = none, over IPv4).
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM.start)
    }

    /// The payload, bounded by the length field and by the buffer.
    pub fn payload(&self) -> &[u8] {
        let end = usize::from(self.len()).min(self.buffer.as_ref().len());
        slice(self.buffer.as_ref(), HEADER_LEN..end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // zeek__ipv6-fragmented-dns.pcap frame 6: UDP header, 53 → 51851, length 3238.
    const DNS: [u8; 12] = [
        0x00, 0x35, 0xca, 0x8b, 0x0c, 0xa6, 0x68, 0x8f, 0x9f, 0x91, 0x85, 0x00,
    ];

    #[test]
    fn parses_header() {
        let p = Packet::new_checked(&DNS[..]).unwrap();
        assert_eq!(p.src_port(), 53);
        assert_eq!(p.dst_port(), 51851);
        assert_eq!(p.len(), 3238);
        assert_eq!(p.checksum(), 0x688f);
        // Capture shorter than the length: the payload is what is there.
        assert_eq!(p.payload(), &[0x9f, 0x91, 0x85, 0x00]);
    }

    #[test]
    fn payload_bounded_by_length() {
        let mut b = DNS;
        b[4..6].copy_from_slice(&10u16.to_be_bytes());
        assert_eq!(
            Packet::new_checked(&b[..]).unwrap().payload(),
            &[0x9f, 0x91]
        );
    }

    #[test]
    fn rejects_bad_headers() {
        assert_eq!(
            Packet::new_checked(&DNS[..7]).unwrap_err(),
            WireError::Truncated
        );
        let mut b = DNS;
        b[4..6].copy_from_slice(&7u16.to_be_bytes());
        assert_eq!(
            Packet::new_checked(&b[..]).unwrap_err(),
            WireError::Malformed
        );
    }
}

//! SCTP common header (RFC 9260).
//!
//! ```text
//!  0                              16                              31
//! +-------------------------------+-------------------------------+
//! |          source port          |       destination port        |
//! |                      verification tag                         |
//! |                     checksum (CRC32c)                         |
//! |                         chunks ...                            |
//! +---------------------------------------------------------------+
//! ```
//!
//! [`Packet::check_len`]: `Truncated` if fewer than 12 bytes.

use crate::bytes::{be16, be32, tail};
use crate::error::{Result, WireError};

mod field {
    use core::ops::Range;
    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    pub const VERIFICATION_TAG: Range<usize> = 4..8;
    pub const CHECKSUM: Range<usize> = 8..12;
}

/// Length of the common header.
pub const HEADER_LEN: usize = field::CHECKSUM.end;

/// A read-only view of an SCTP packet.
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

    /// `Truncated` if the buffer is shorter than 12 bytes.
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

    /// Source port.
    pub fn src_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::SRC_PORT.start)
    }

    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::DST_PORT.start)
    }

    /// Verification tag.
    pub fn verification_tag(&self) -> u32 {
        be32(self.buffer.as_ref(), field::VERIFICATION_TAG.start)
    }

    /// Checksum as stored.
    pub fn checksum(&self) -> u32 {
        be32(self.buffer.as_ref(), field::CHECKSUM.start)
    }

    /// The chunks after the common header.
    pub fn chunks(&self) -> &[u8] {
        tail(self.buffer.as_ref(), HEADER_LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // zeek__communityid_sctp.pcap frame 1: SCTP INIT, 7 → 7 (first 16 bytes).
    const INIT: [u8; 16] = [
        0x00, 0x07, 0x00, 0x07, 0x00, 0x00, 0x00, 0x00, 0x37, 0x61, 0xa7, 0x46, 0x01, 0x00, 0x00,
        0x20,
    ];

    #[test]
    fn parses_common_header() {
        let p = Packet::new_checked(&INIT[..]).unwrap();
        assert_eq!(p.src_port(), 7);
        assert_eq!(p.dst_port(), 7);
        assert_eq!(p.verification_tag(), 0);
        assert_eq!(p.checksum(), 0x3761_a746);
        assert_eq!(p.chunks(), &[0x01, 0x00, 0x00, 0x20]);
    }

    #[test]
    fn truncated_header() {
        assert_eq!(
            Packet::new_checked(&INIT[..11]).unwrap_err(),
            WireError::Truncated
        );
        assert_eq!(Packet::new_unchecked(&INIT[..6]).verification_tag(), 0);
    }
}

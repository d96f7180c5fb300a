//! IEEE 802.1Q / 802.1ad VLAN tag (the 4 bytes after a tag EtherType).
//!
//! ```text
//!  0               2               4
//! +---+-+---------+---------------+---------
//! |PCP|D|   VID   | inner type    | payload
//! +---+-+---------+---------------+---------
//! ```
//!
//! The view starts *after* the tag protocol identifier (0x8100, 0x88A8 or
//! 0x9100) that the enclosing header carries as its EtherType. A stack of tags
//! is a chain of these views; [`crate::flow::parse_frame`] walks it with a bound.

use crate::bytes::{be16, tail};
use crate::error::{Result, WireError};

mod field {
    use core::ops::Range;
    pub const TCI: Range<usize> = 0..2;
    pub const ETHERTYPE: Range<usize> = 2..4;
    pub const PAYLOAD: usize = 4;
}

/// Length of one tag (TCI + inner EtherType).
pub const HEADER_LEN: usize = field::PAYLOAD;

/// A read-only view of one VLAN tag.
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

    /// `Truncated` if the buffer is shorter than 4 bytes.
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

    /// The whole tag control information (PCP, DEI, VID).
    pub fn tci(&self) -> u16 {
        be16(self.buffer.as_ref(), field::TCI.start)
    }

    /// Priority code point (0-7).
    pub fn pcp(&self) -> u8 {
        (self.tci() >> 13) as u8
    }

    /// Drop eligible indicator (formerly CFI).
    pub fn dei(&self) -> bool {
        self.tci() & 0x1000 != 0
    }

    /// VLAN identifier (0-4095).
    pub fn vid(&self) -> u16 {
        self.tci() & 0x0fff
    }

    /// EtherType (or 802.3 length) of what follows the tag.
    pub fn ethertype(&self) -> u16 {
        be16(self.buffer.as_ref(), field::ETHERTYPE.start)
    }

    /// Everything after the tag.
    pub fn payload(&self) -> &[u8] {
        tail(self.buffer.as_ref(), field::PAYLOAD)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ethernet::{self, ethertype};

    // zeek__vlan-qinqinq.pcap frame 1: three 0x8100 tags (30, 20, 10) then IPv4.
    const QINQINQ: [u8; 28] = [
        0x00, 0x10, 0xdb, 0x88, 0xd2, 0xef, 0xc8, 0xbc, 0xc8, 0x96, 0xd2, 0xa0, 0x81, 0x00, 0x00,
        0x1e, 0x81, 0x00, 0x00, 0x14, 0x81, 0x00, 0x00, 0x0a, 0x08, 0x00, 0x45, 0x00,
    ];

    #[test]
    fn walks_a_stack() {
        let eth = ethernet::Packet::new_checked(&QINQINQ[..]).unwrap();
        assert!(ethertype::is_vlan(eth.ethertype()));
        let t1 = Packet::new_checked(eth.payload()).unwrap();
        assert_eq!(t1.vid(), 30);
        assert_eq!(t1.ethertype(), ethertype::VLAN);
        let t2 = Packet::new_checked(t1.payload()).unwrap();
        assert_eq!(t2.vid(), 20);
        let t3 = Packet::new_checked(t2.payload()).unwrap();
        assert_eq!(t3.vid(), 10);
        assert_eq!(t3.ethertype(), ethertype::IPV4);
        assert_eq!(t3.payload(), &[0x45, 0x00]);
    }

    #[test]
    fn pcp_dei_vid() {
        // PCP 5, DEI set, VID 0xabc.
        let t = Packet::new_checked(&[0xba, 0xbc, 0x86, 0xdd][..]).unwrap();
        assert_eq!(t.pcp(), 5);
        assert!(t.dei());
        assert_eq!(t.vid(), 0xabc);
        assert_eq!(t.ethertype(), ethertype::IPV6);
        assert!(t.payload().is_empty());
    }

    #[test]
    fn truncated_tag() {
        assert_eq!(
            Packet::new_checked(&[0x00, 0x1e, 0x81][..]).unwrap_err(),
            WireError::Truncated
        );
        assert_eq!(Packet::new_unchecked(&[0x00][..]).vid(), 0);
    }
}

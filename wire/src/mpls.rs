//! MPLS label stack entry (RFC 3032).
//!
//! ```text
//!  0                   1                   2                   3
//! +-------------------------------------------+-----+-+-----------+
//! |                 label (20)                | TC  |S|   TTL     |
//! +-------------------------------------------+-----+-+-----------+
//! ```
//!
//! A stack is a chain of entries ending with the one whose S
//! (bottom-of-stack) bit is set. What follows the stack is not self-describing:
//! [`crate::flow`] looks at the first nibble (4 = IPv4, 6 = IPv6, 0 = a
//! pseudowire control word) as Wireshark does.

use crate::bytes::{be32, tail};
use crate::error::{Result, WireError};

mod field {
    use core::ops::Range;
    pub const ENTRY: Range<usize> = 0..4;
    pub const PAYLOAD: usize = 4;
}

/// Length of one label stack entry.
pub const HEADER_LEN: usize = field::PAYLOAD;

/// Length of the pseudowire control word (RFC 4385) that may follow the stack.
pub const CONTROL_WORD_LEN: usize = 4;

/// A read-only view of one label stack entry.
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

    fn entry(&self) -> u32 {
        be32(self.buffer.as_ref(), field::ENTRY.start)
    }

    /// Label value (20 bits).
    pub fn label(&self) -> u32 {
        self.entry() >> 12
    }

    /// Traffic class (3 bits, formerly EXP).
    pub fn tc(&self) -> u8 {
        ((self.entry() >> 9) & 0x7) as u8
    }

    /// Whether this is the last entry of the stack.
    pub fn bottom_of_stack(&self) -> bool {
        self.entry() & 0x100 != 0
    }

    /// Time to live.
    pub fn ttl(&self) -> u8 {
        (self.entry() & 0xff) as u8
    }

    /// Everything after this entry (the next entry, or the payload).
    pub fn payload(&self) -> &[u8] {
        tail(self.buffer.as_ref(), field::PAYLOAD)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // tcpreplay__test.pcap frame 142 after the Ethernet header: labels 19 and
    // 16, then a zero control word.
    const STACK: [u8; 12] = [
        0x00, 0x01, 0x30, 0xfe, 0x00, 0x01, 0x01, 0xff, 0x00, 0x00, 0x00, 0x00,
    ];

    #[test]
    fn walks_a_stack() {
        let e1 = Packet::new_checked(&STACK[..]).unwrap();
        assert_eq!(e1.label(), 19);
        assert_eq!(e1.tc(), 0);
        assert!(!e1.bottom_of_stack());
        assert_eq!(e1.ttl(), 254);
        let e2 = Packet::new_checked(e1.payload()).unwrap();
        assert_eq!(e2.label(), 16);
        assert!(e2.bottom_of_stack());
        assert_eq!(e2.ttl(), 255);
        assert_eq!(e2.payload(), &[0, 0, 0, 0]);
    }

    #[test]
    fn traffic_class_bits() {
        // label 0xfffff, TC 7, S 1, TTL 1
        let e = Packet::new_checked(&[0xff, 0xff, 0xff, 0x01][..]).unwrap();
        assert_eq!(e.label(), 0xfffff);
        assert_eq!(e.tc(), 7);
        assert!(e.bottom_of_stack());
        assert_eq!(e.ttl(), 1);
    }

    #[test]
    fn truncated_entry() {
        assert_eq!(
            Packet::new_checked(&STACK[..3]).unwrap_err(),
            WireError::Truncated
        );
        assert_eq!(Packet::new_unchecked(&STACK[..3]).label(), 0);
    }
}

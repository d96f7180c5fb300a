//! TCP header (RFC 9293).
//!
//! ```text
//!  0                              16                              31
//! +-------------------------------+-------------------------------+
//! |          source port          |       destination port        |
//! |                        sequence number                        |
//! |                    acknowledgment number                      |
//! +-------+-------+---------------+-------------------------------+
//! | offset|  rsvd |     flags     |            window             |
//! +-------+-------+---------------+-------------------------------+
//! |           checksum            |        urgent pointer         |
//! |                       options ...                             |
//! +---------------------------------------------------------------+
//! ```
//!
//! [`Packet::check_len`]: `Truncated` if fewer than 20 bytes or fewer than the
//! data offset says, `Malformed` if the data offset is below 5.

use crate::bytes::{be16, be32, slice, tail, u8_at};
use crate::error::{Result, WireError};

/// Flag bits of [`Packet::flags`].
pub mod flags {
    /// No more data from sender.
    pub const FIN: u8 = 0x01;
    /// Synchronise sequence numbers.
    pub const SYN: u8 = 0x02;
    /// Reset the connection.
    pub const RST: u8 = 0x04;
    /// Push function.
    pub const PSH: u8 = 0x08;
    /// Acknowledgment field is significant.
    pub const ACK: u8 = 0x10;
    /// Urgent pointer field is significant.
    pub const URG: u8 = 0x20;
    /// ECN echo.
    pub const ECE: u8 = 0x40;
    /// Congestion window reduced.
    pub const CWR: u8 = 0x80;
}

mod field {
    use core::ops::Range;
    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    pub const SEQ_NUM: Range<usize> = 4..8;
    pub const ACK_NUM: Range<usize> = 8..12;
    pub const DATA_OFF: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WIN_SIZE: Range<usize> = 14..16;
    pub const CHECKSUM: Range<usize> = 16..18;
    pub const URGENT: Range<usize> = 18..20;
}

/// Length of the header without options.
pub const HEADER_LEN: usize = field::URGENT.end;

/// Offset of the flags byte (readable in a header cut short by a snaplen).
pub const FLAGS_OFFSET: usize = field::FLAGS;

/// A read-only view of a TCP segment.
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
        let hl = self.header_len();
        if hl < HEADER_LEN {
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

    /// Source port.
    pub fn src_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::SRC_PORT.start)
    }

    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::DST_PORT.start)
    }

    /// Sequence number.
    pub fn seq_number(&self) -> u32 {
        be32(self.buffer.as_ref(), field::SEQ_NUM.start)
    }

    /// Acknowledgment number.
    pub fn ack_number(&self) -> u32 {
        be32(self.buffer.as_ref(), field::ACK_NUM.start)
    }

    /// Data offset in 32-bit words.
    pub fn data_offset(&self) -> u8 {
        u8_at(self.buffer.as_ref(), field::DATA_OFF) >> 4
    }

    /// Header length in bytes (data offset × 4), options included.
    pub fn header_len(&self) -> usize {
        usize::from(self.data_offset()) * 4
    }

    /// The flags byte (see [`flags`]).
    pub fn flags(&self) -> u8 {
        u8_at(self.buffer.as_ref(), field::FLAGS)
    }

    /// FIN flag.
    pub fn fin(&self) -> bool {
        self.flags() & flags::FIN != 0
    }

    /// SYN flag.
    pub fn syn(&self) -> bool {
        self.flags() & flags::SYN != 0
    }

    /// RST flag.
    pub fn rst(&self) -> bool {
        self.flags() & flags::RST != 0
    }

    /// PSH flag.
    pub fn psh(&self) -> bool {
        self.flags() & flags::PSH != 0
    }

    /// ACK flag.
    pub fn ack(&self) -> bool {
        self.flags() & flags::ACK != 0
    }

    /// URG flag.
    pub fn urg(&self) -> bool {
        self.flags() & flags::URG != 0
    }

    /// ECE flag.
    pub fn ece(&self) -> bool {
        self.flags() & flags::ECE != 0
    }

    /// CWR flag.
    pub fn cwr(&self) -> bool {
        self.flags() & flags::CWR != 0
    }

    /// Window size (unscaled).
    pub fn window_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::WIN_SIZE.start)
    }

    /// Checksum as stored.
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM.start)
    }

    /// Urgent pointer.
    pub fn urgent_at(&self) -> u16 {
        be16(self.buffer.as_ref(), field::URGENT.start)
    }

    /// The options (empty when the data offset is 5).
    pub fn options(&self) -> &[u8] {
        slice(self.buffer.as_ref(), HEADER_LEN..self.header_len())
    }

    /// Everything after the header.
    pub fn payload(&self) -> &[u8] {
        tail(self.buffer.as_ref(), self.header_len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // zeek__tcp_truncated-header.pcap frame 1 from the TCP header on: a SYN
    // with ECE+CWR whose 40-byte header the capture cut after 34 bytes.
    const SYN_CUT: [u8; 34] = [
        0xed, 0x9b, 0x00, 0x19, 0x3e, 0x17, 0x75, 0xde, 0x00, 0x00, 0x00, 0x00, 0xa0, 0xc2, 0x16,
        0xd0, 0x90, 0xd6, 0x00, 0x00, 0x02, 0x04, 0x05, 0xb4, 0x04, 0x02, 0x08, 0x08, 0x00, 0x00,
        0x00, 0x01, 0x00, 0x00,
    ];

    // zeek__snap-tcp.pcap frame 1 TCP header: SYN, no options.
    const SYN: [u8; 20] = [
        0x30, 0x39, 0x00, 0x50, 0x00, 0x00, 0x00, 0x64, 0x00, 0x00, 0x00, 0x00, 0x50, 0x02, 0x20,
        0x00, 0xdb, 0xa1, 0x00, 0x00,
    ];

    #[test]
    fn parses_header() {
        let p = Packet::new_checked(&SYN[..]).unwrap();
        assert_eq!(p.src_port(), 12345);
        assert_eq!(p.dst_port(), 80);
        assert_eq!(p.seq_number(), 100);
        assert_eq!(p.ack_number(), 0);
        assert_eq!(p.data_offset(), 5);
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.flags(), flags::SYN);
        assert!(p.syn() && !p.ack() && !p.fin() && !p.rst());
        assert_eq!(p.window_len(), 0x2000);
        assert_eq!(p.checksum(), 0xdba1);
        assert_eq!(p.urgent_at(), 0);
        assert!(p.options().is_empty());
        assert!(p.payload().is_empty());
    }

    #[test]
    fn every_flag() {
        let mut b = SYN;
        b[13] = 0xff;
        let p = Packet::new_checked(&b[..]).unwrap();
        assert!(p.fin() && p.syn() && p.rst() && p.psh() && p.ack() && p.urg() && p.ece());
        assert!(p.cwr());
    }

    #[test]
    fn header_cut_by_snaplen() {
        assert_eq!(
            Packet::new_checked(&SYN_CUT[..]).unwrap_err(),
            WireError::Truncated
        );
        // The unchecked view still reads what is there.
        let p = Packet::new_unchecked(&SYN_CUT[..]);
        assert_eq!((p.src_port(), p.dst_port()), (60827, 25));
        assert_eq!(p.header_len(), 40);
        assert_eq!(p.flags(), flags::SYN | flags::ECE | flags::CWR);
        assert_eq!(p.options().len(), 0); // the 20 option bytes are not all there
        assert!(p.payload().is_empty());
        // With the whole header the options appear.
        let mut full = [0u8; 40];
        full[..34].copy_from_slice(&SYN_CUT);
        let p = Packet::new_checked(&full[..]).unwrap();
        assert_eq!(&p.options()[..4], &[0x02, 0x04, 0x05, 0xb4]);
    }

    #[test]
    fn rejects_bad_headers() {
        assert_eq!(
            Packet::new_checked(&SYN[..19]).unwrap_err(),
            WireError::Truncated
        );
        let mut b = SYN;
        b[12] = 0x40; // data offset 4 < 5
        assert_eq!(
            Packet::new_checked(&b[..]).unwrap_err(),
            WireError::Malformed
        );
        b[12] = 0x00;
        assert_eq!(
            Packet::new_checked(&b[..]).unwrap_err(),
            WireError::Malformed
        );
        b[12] = 0x60; // 24 bytes claimed, 20 there
        assert_eq!(
            Packet::new_checked(&b[..]).unwrap_err(),
            WireError::Truncated
        );
    }
}

//! Ethernet II / IEEE 802.3 frame header and LLC/SNAP.
//!
//! ```text
//!  0      6      12        14
//! +------+------+---------+---------
//! | dst  | src  | type or | payload
//! |      |      | length  |
//! +------+------+---------+---------
//! ```
//!
//! A type field of at most [`ethertype::LENGTH_MAX`] (1500) is an 802.3 length:
//! an LLC header follows. [`snap_ethertype`] recognises the LLC/SNAP
//! encapsulation (`AA AA 03`, OUI `00 00 00`) that carries an EtherType, as
//! used for IP over 802.3 (RFC 1042).

use crate::bytes::{array, be16, tail};
use crate::error::{Result, WireError};

/// EtherType values linecap knows by name.
pub mod ethertype {
    /// IPv4.
    pub const IPV4: u16 = 0x0800;
    /// ARP.
    pub const ARP: u16 = 0x0806;
    /// Reverse ARP.
    pub const RARP: u16 = 0x8035;
    /// IEEE 802.1Q VLAN tag (C-tag).
    pub const VLAN: u16 = 0x8100;
    /// IEEE 802.1ad service tag (S-tag, "QinQ").
    pub const QINQ: u16 = 0x88A8;
    /// Pre-standard QinQ tag used by some vendors.
    pub const QINQ_OLD: u16 = 0x9100;
    /// IPv6.
    pub const IPV6: u16 = 0x86DD;
    /// MPLS unicast.
    pub const MPLS_UNICAST: u16 = 0x8847;
    /// MPLS multicast.
    pub const MPLS_MULTICAST: u16 = 0x8848;
    /// PPPoE discovery.
    pub const PPPOE_DISCOVERY: u16 = 0x8863;
    /// PPPoE session.
    pub const PPPOE_SESSION: u16 = 0x8864;
    /// Ethernet loopback (configuration testing protocol).
    pub const LOOPBACK: u16 = 0x9000;
    /// Largest value that is an 802.3 length rather than an EtherType.
    pub const LENGTH_MAX: u16 = 1500;

    /// Whether `t` is one of the VLAN tag types (0x8100, 0x88A8, 0x9100).
    pub const fn is_vlan(t: u16) -> bool {
        matches!(t, VLAN | QINQ | QINQ_OLD)
    }

    /// Whether `t` is MPLS (unicast or multicast).
    pub const fn is_mpls(t: u16) -> bool {
        matches!(t, MPLS_UNICAST | MPLS_MULTICAST)
    }

    /// Whether `t` is an 802.3 length (an LLC header follows), not an EtherType.
    pub const fn is_length(t: u16) -> bool {
        t <= LENGTH_MAX
    }
}

mod field {
    use core::ops::Range;
    pub const DST: Range<usize> = 0..6;
    pub const SRC: Range<usize> = 6..12;
    pub const ETHERTYPE: Range<usize> = 12..14;
    pub const PAYLOAD: usize = 14;
}

/// Length of the Ethernet header (no tags).
pub const HEADER_LEN: usize = field::PAYLOAD;

/// A read-only view of an Ethernet frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wrap `buffer` without checks; accessors then return zeros for bytes
    /// that are not there.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wrap `buffer` after [`check_len`](Self::check_len).
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// `Truncated` if the buffer is shorter than the 14-byte header.
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

    /// Destination MAC address.
    pub fn dst_addr(&self) -> [u8; 6] {
        array(self.buffer.as_ref(), field::DST.start)
    }

    /// Source MAC address.
    pub fn src_addr(&self) -> [u8; 6] {
        array(self.buffer.as_ref(), field::SRC.start)
    }

    /// EtherType, or an 802.3 length if at most 1500 (see [`ethertype::is_length`]).
    pub fn ethertype(&self) -> u16 {
        be16(self.buffer.as_ref(), field::ETHERTYPE.start)
    }

    /// Everything after the 14-byte header (tags, if any, included).
    pub fn payload(&self) -> &[u8] {
        tail(self.buffer.as_ref(), field::PAYLOAD)
    }
}

/// Length of an LLC/SNAP header (`AA AA 03` + OUI + EtherType).
pub const SNAP_HEADER_LEN: usize = 8;

/// If `llc` starts with an LLC/SNAP header whose OUI is 0 (an encapsulated
/// EtherType, RFC 1042) or 00-00-F8 (802.1H), the EtherType it carries.
/// The encapsulated protocol starts [`SNAP_HEADER_LEN`] bytes in.
pub fn snap_ethertype(llc: &[u8]) -> Option<u16> {
    match llc.get(..SNAP_HEADER_LEN) {
        Some(&[0xAA, 0xAA, 0x03, 0x00, 0x00, oui3, t0, t1]) if oui3 == 0x00 || oui3 == 0xF8 => {
            Some(u16::from_be_bytes([t0, t1]))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // zeek__snap-tcp.pcap frame 1: 802.3 length 0x30, LLC/SNAP, IPv4 (first 30 bytes).
    const SNAP_FRAME: [u8; 30] = [
        0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x00, 0x30, 0xaa,
        0xaa, 0x03, 0x00, 0x00, 0x00, 0x08, 0x00, 0x45, 0x00, 0x00, 0x28, 0x00, 0x01, 0x00, 0x00,
    ];

    // tcpreplay__test.pcap frame 11: Ethernet, MPLS (first 18 bytes).
    const MPLS_FRAME: [u8; 18] = [
        0x00, 0x30, 0x96, 0xe6, 0xfc, 0x39, 0x00, 0x30, 0x96, 0x05, 0x28, 0x38, 0x88, 0x47, 0x00,
        0x01, 0x20, 0xff,
    ];

    #[test]
    fn parses_ethernet_ii() {
        let p = Packet::new_checked(&MPLS_FRAME[..]).unwrap();
        assert_eq!(p.dst_addr(), [0x00, 0x30, 0x96, 0xe6, 0xfc, 0x39]);
        assert_eq!(p.src_addr(), [0x00, 0x30, 0x96, 0x05, 0x28, 0x38]);
        assert_eq!(p.ethertype(), ethertype::MPLS_UNICAST);
        assert!(ethertype::is_mpls(p.ethertype()));
        assert_eq!(p.payload(), &[0x00, 0x01, 0x20, 0xff]);
    }

    #[test]
    fn parses_llc_snap() {
        let p = Packet::new_checked(&SNAP_FRAME[..]).unwrap();
        assert!(ethertype::is_length(p.ethertype()));
        assert_eq!(snap_ethertype(p.payload()), Some(ethertype::IPV4));
        assert_eq!(p.payload()[SNAP_HEADER_LEN], 0x45);
        // Plain LLC (STP: 42 42 03) is no SNAP.
        assert_eq!(snap_ethertype(&[0x42, 0x42, 0x03, 0, 0, 0, 0, 0]), None);
        // SNAP with a vendor OUI carries no EtherType we follow.
        assert_eq!(
            snap_ethertype(&[0xaa, 0xaa, 0x03, 0x00, 0x00, 0x0c, 0x20, 0x00]),
            None
        );
        assert_eq!(snap_ethertype(&[0xaa, 0xaa, 0x03]), None);
    }

    #[test]
    fn truncated_header() {
        assert_eq!(
            Packet::new_checked(&MPLS_FRAME[..13]).unwrap_err(),
            WireError::Truncated
        );
        assert!(
            Packet::new_checked(&MPLS_FRAME[..14])
                .unwrap()
                .payload()
                .is_empty()
        );
        // Unchecked views over short buffers read zeros instead of panicking.
        let p = Packet::new_unchecked(&MPLS_FRAME[..3]);
        assert_eq!(p.ethertype(), 0);
        assert_eq!(p.src_addr(), [0; 6]);
        assert!(p.payload().is_empty());
    }

    #[test]
    fn tag_types() {
        for t in [0x8100, 0x88a8, 0x9100] {
            assert!(ethertype::is_vlan(t));
        }
        assert!(!ethertype::is_vlan(ethertype::IPV4));
        assert!(ethertype::is_mpls(0x8848));
    }
}

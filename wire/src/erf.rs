//! ERF (Endace Extensible Record Format) records.
//!
//! Layout of the 16-byte generic header (all offsets in bytes):
//!
//! | off | size | field | encoding |
//! |-----|------|-------|----------|
//! | 0   | 8    | `ts`  | little-endian u64: high 32 bits seconds, low 32 bits binary fraction (2^-32 s) |
//! | 8   | 1    | `type`| bit 7 = an extension header follows; bits 0-6 record type (2 = ETH) |
//! | 9   | 1    | `flags` | bits 0-1 interface, 0x04 varying length, 0x08 truncated, 0x10 rx error |
//! | 10  | 2    | `rlen` | big-endian record length including this header |
//! | 12  | 2    | `lctr` | big-endian loss counter since the previous record (saturating) |
//! | 14  | 2    | `wlen` | big-endian wire length |
//!
//! Extension headers (8 bytes each, bit 7 of the first byte = another follows)
//! come next, then for ETH records 2 bytes (offset, pad) and the frame.
//!
//! ## Wire-length convention
//!
//! Wireshark (`mergecap -F erf`) and libtrace (`traceconvert`) both write
//! `wlen = frame length + 4`: ERF's wire length counts the Ethernet FCS even
//! though the captured bytes do not hold it. linecap does the same on write
//! ([`FCS_LEN`] added) and subtracts it on read, so a pcap converted to ERF and
//! back keeps its original length.

use core::fmt;

/// Length of the generic ERF header.
pub const HEADER_LEN: usize = 16;
/// Length of the ETH sub-header (offset and pad bytes).
pub const ETH_PAD_LEN: usize = 2;
/// Header bytes before the frame in the records linecap writes.
pub const ETH_RECORD_OVERHEAD: usize = HEADER_LEN + ETH_PAD_LEN;
/// Length of one extension header.
pub const EXT_HEADER_LEN: usize = 8;
/// The FCS bytes ERF's `wlen` counts and the captured frame does not hold.
pub const FCS_LEN: u32 = 4;
/// Largest record `rlen` can describe.
pub const RLEN_MAX: usize = u16::MAX as usize;
/// Largest frame one linecap ETH record can hold.
pub const FRAME_MAX: usize = RLEN_MAX - ETH_RECORD_OVERHEAD;

/// Record types linecap knows by name (bits 0-6 of the type byte).
pub mod record_type {
    /// Ethernet frame.
    pub const ETH: u8 = 2;
    /// Colour Ethernet (ETH with a colour in lctr).
    pub const COLOR_ETH: u8 = 10;
    /// Dynamic-size colour Ethernet.
    pub const DSM_COLOR_ETH: u8 = 16;
    /// Colour hash Ethernet.
    pub const COLOR_HASH_ETH: u8 = 22;
    /// Provenance / metadata record.
    pub const META: u8 = 27;
    /// Pad record (no packet; used to fill buffers).
    pub const PAD: u8 = 48;

    /// Whether records of this type carry an Ethernet frame after the 2-byte pad.
    pub const fn is_ethernet(t: u8) -> bool {
        matches!(t, ETH | COLOR_ETH | DSM_COLOR_ETH | COLOR_HASH_ETH)
    }
}

/// Flag bits.
pub mod flags {
    /// Mask of the interface (port) number.
    pub const IFACE_MASK: u8 = 0x03;
    /// Varying-length record: `rlen` fits the data, no fixed padding.
    pub const VARLEN: u8 = 0x04;
    /// The record was cut because of insufficient buffer space.
    pub const TRUNC: u8 = 0x08;
    /// Receive error on the frame.
    pub const RX_ERROR: u8 = 0x10;
}

/// Why a byte slice is not an ERF record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErfError {
    /// Fewer bytes than the generic header, or than `rlen` says.
    Truncated,
    /// `rlen` is smaller than the headers it must hold.
    BadLength,
}

impl fmt::Display for ErfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErfError::Truncated => f.write_str("ERF record truncated"),
            ErfError::BadLength => f.write_str("ERF rlen smaller than its headers"),
        }
    }
}

/// Convert nanoseconds since the epoch into the ERF 32.32 fixed-point stamp.
///
/// The fraction is rounded to the nearest 2^-32 s, so [`ts_to_ns`] gives the
/// same nanosecond back for every input.
///
/// ERF's seconds are 32 bits: times from 2^32 s (2106-02-07) on cannot be
/// written and saturate to the largest stamp, instead of wrapping to a time
/// near 1970 (a pcapng's 64-bit timestamps can be that far out).
pub const fn ns_to_ts(ns: u64) -> u64 {
    let secs = ns / 1_000_000_000;
    if secs > u32::MAX as u64 {
        return u64::MAX;
    }
    let sub = ns % 1_000_000_000;
    let frac = ((sub << 32) + 500_000_000) / 1_000_000_000;
    // A sub-second part near 1 s rounds up to 2^32: carry into the seconds.
    (secs << 32) + frac
}

/// Convert an ERF stamp to nanoseconds since the epoch, rounding half up
/// (as Wireshark does).
pub const fn ts_to_ns(ts: u64) -> u64 {
    let secs = ts >> 32;
    let frac = ts & 0xffff_ffff;
    secs * 1_000_000_000 + ((frac * 1_000_000_000 + (1 << 31)) >> 32)
}

/// Parsed generic header plus where the payload starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    /// ERF 32.32 timestamp.
    pub ts: u64,
    /// Record type with the extension bit cleared.
    pub rtype: u8,
    /// Flag byte.
    pub flags: u8,
    /// Record length including all headers.
    pub rlen: u16,
    /// Loss counter.
    pub lctr: u16,
    /// Wire length as written in the record (FCS included by convention).
    pub wlen: u16,
    /// Number of extension headers.
    pub ext_headers: u8,
}

impl RecordHeader {
    /// Offset of the type-specific payload (after extension headers).
    pub const fn payload_offset(&self) -> usize {
        HEADER_LEN + self.ext_headers as usize * EXT_HEADER_LEN
    }

    /// Timestamp in nanoseconds since the epoch.
    pub const fn ts_ns(&self) -> u64 {
        ts_to_ns(self.ts)
    }
}

/// A view over one ERF record (`&[u8]` holding at least `rlen` bytes).
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    header: RecordHeader,
    bytes: &'a [u8],
}

impl<'a> Record<'a> {
    /// Parse the generic header of the first record in `buf`.
    ///
    /// Returns the header alone so a streaming reader can learn `rlen`
    /// before it has the whole record.
    pub fn parse_header(buf: &[u8]) -> Result<RecordHeader, ErfError> {
        if buf.len() < HEADER_LEN {
            return Err(ErfError::Truncated);
        }
        let ts = u64::from_le_bytes([
            buf[0], buf[1], buf[2], buf[3], buf[4], buf[5], buf[6], buf[7],
        ]);
        let type_byte = buf[8];
        let rlen = u16::from_be_bytes([buf[10], buf[11]]);
        if (rlen as usize) < HEADER_LEN {
            return Err(ErfError::BadLength);
        }
        // Count extension headers: each one's top bit says whether another follows.
        let mut ext_headers = 0u8;
        if type_byte & 0x80 != 0 {
            let mut off = HEADER_LEN;
            loop {
                if off + EXT_HEADER_LEN > rlen as usize {
                    return Err(ErfError::BadLength);
                }
                if off >= buf.len() {
                    return Err(ErfError::Truncated);
                }
                ext_headers = ext_headers.saturating_add(1);
                if buf[off] & 0x80 == 0 {
                    break;
                }
                off += EXT_HEADER_LEN;
            }
        }
        Ok(RecordHeader {
            ts,
            rtype: type_byte & 0x7f,
            flags: buf[9],
            rlen,
            lctr: u16::from_be_bytes([buf[12], buf[13]]),
            wlen: u16::from_be_bytes([buf[14], buf[15]]),
            ext_headers,
        })
    }

    /// Parse the first record of `buf`; `buf` may hold more after it.
    pub fn new_checked(buf: &'a [u8]) -> Result<Self, ErfError> {
        let header = Self::parse_header(buf)?;
        let rlen = header.rlen as usize;
        if buf.len() < rlen {
            return Err(ErfError::Truncated);
        }
        if record_type::is_ethernet(header.rtype) && header.payload_offset() + ETH_PAD_LEN > rlen {
            return Err(ErfError::BadLength);
        }
        Ok(Record {
            header,
            bytes: &buf[..rlen],
        })
    }

    /// The parsed generic header.
    pub const fn header(&self) -> &RecordHeader {
        &self.header
    }

    /// The whole record.
    pub const fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// For Ethernet-type records: the captured frame, without ERF padding.
    ///
    /// Padding after the frame (writers that align `rlen` to 8 bytes) is cut
    /// off using `wlen`: the frame is never longer than `wlen - 4`, the
    /// length the wire-length convention implies. Records whose data hold
    /// the FCS (`wlen` = captured bytes) lose those 4 bytes, which pcap
    /// does not keep either. Returns `None` for non-Ethernet records.
    pub fn eth_frame(&self) -> Option<&'a [u8]> {
        if !record_type::is_ethernet(self.header.rtype) {
            return None;
        }
        let start = self.header.payload_offset() + ETH_PAD_LEN;
        let area = &self.bytes[start..];
        let frame_len = area.len().min(self.wire_len() as usize);
        Some(&area[..frame_len])
    }

    /// Wire length of the frame in pcap's convention (without FCS).
    pub const fn wire_len(&self) -> u32 {
        (self.header.wlen as u32).saturating_sub(FCS_LEN)
    }
}

/// Write the header of an ETH record that holds `frame_len` captured bytes
/// of a frame `wire_len` bytes long (pcap convention, FCS excluded).
///
/// `out` must be at least [`ETH_RECORD_OVERHEAD`] long and `frame_len` at most
/// [`FRAME_MAX`]; both are the caller's contract (checked in debug builds).
/// `wlen` saturates at 65535 for frames longer than ERF can describe.
#[inline(always)]
pub fn write_eth_header(
    out: &mut [u8],
    ts_ns: u64,
    iface: u8,
    extra_flags: u8,
    frame_len: usize,
    wire_len: u32,
    lctr: u16,
) {
    write_eth_header_ts(
        out,
        ns_to_ts(ts_ns),
        iface,
        extra_flags,
        frame_len,
        wire_len,
        lctr,
    );
}

/// [`write_eth_header`] with the timestamp already in ERF's 32.32 fixed
/// point ([`ns_to_ts`]), for a writer that converts a stamp shared by
/// several records once.
#[inline(always)]
pub fn write_eth_header_ts(
    out: &mut [u8],
    ts: u64,
    iface: u8,
    extra_flags: u8,
    frame_len: usize,
    wire_len: u32,
    lctr: u16,
) {
    debug_assert!(frame_len <= FRAME_MAX);
    let out = &mut out[..ETH_RECORD_OVERHEAD];
    let rlen = (ETH_RECORD_OVERHEAD + frame_len) as u16;
    let wlen = (wire_len.saturating_add(FCS_LEN)).min(u16::MAX as u32) as u16;
    out[0..8].copy_from_slice(&ts.to_le_bytes());
    out[8] = record_type::ETH;
    out[9] = (iface & flags::IFACE_MASK) | flags::VARLEN | extra_flags;
    out[10..12].copy_from_slice(&rlen.to_be_bytes());
    out[12..14].copy_from_slice(&lctr.to_be_bytes());
    out[14..16].copy_from_slice(&wlen.to_be_bytes());
    out[16] = 0;
    out[17] = 0;
}

#[cfg(test)]
mod tests {
    use super::*;

    // First record of tcpreplay__test written by libtrace's traceconvert
    // (../shared/reference/erf_writers), frame cut after 8 bytes.
    const TRACECONVERT_HDR: [u8; 26] = [
        0x20, 0x78, 0x7c, 0x77, 0x83, 0xf1, 0x33, 0x4c, 0x02, 0x01, 0x00, 0x1a, 0x00, 0x00, 0x00,
        0x61, 0x40, 0xa5, 0x00, 0x1f, 0xf3, 0x3c, 0xe1, 0x13, 0xf8, 0x1e,
    ];

    #[test]
    fn parses_traceconvert_record() {
        let r = Record::new_checked(&TRACECONVERT_HDR).unwrap();
        let h = r.header();
        assert_eq!(h.rtype, record_type::ETH);
        assert_eq!(h.flags & flags::IFACE_MASK, 1);
        assert_eq!(h.rlen, 26);
        assert_eq!(h.wlen, 97);
        assert_eq!(r.wire_len(), 93);
        assert_eq!(r.eth_frame().unwrap(), &TRACECONVERT_HDR[18..]);
        // 0x4c33f183 s + 0x777c7820 / 2^32 s = 1278472579.466743000 (tshark)
        assert_eq!(h.ts_ns(), 1_278_472_579_466_743_000);
    }

    #[test]
    fn extension_headers_are_skipped_and_padding_cut() {
        // mergecap-style record: type 0x82 (ETH + ext), one ext header,
        // frame of 4 bytes, wlen 8 (4 + FCS), rlen padded to 40.
        let mut rec = [0u8; 40];
        rec[8] = 0x82;
        rec[9] = 0x04;
        rec[10..12].copy_from_slice(&40u16.to_be_bytes());
        rec[14..16].copy_from_slice(&8u16.to_be_bytes());
        rec[16] = 0x11; // ext header type, no further ones
        rec[26..30].copy_from_slice(&[1, 2, 3, 4]);
        let r = Record::new_checked(&rec).unwrap();
        assert_eq!(r.header().ext_headers, 1);
        assert_eq!(r.eth_frame().unwrap(), &[1, 2, 3, 4]);
    }

    #[test]
    fn rejects_bad_records() {
        assert_eq!(
            Record::new_checked(&[0u8; 15]).unwrap_err(),
            ErfError::Truncated
        );
        let mut rec = [0u8; 16];
        rec[10..12].copy_from_slice(&8u16.to_be_bytes());
        assert_eq!(Record::new_checked(&rec).unwrap_err(), ErfError::BadLength);
        // ETH record too short for its pad bytes.
        rec[8] = 2;
        rec[10..12].copy_from_slice(&16u16.to_be_bytes());
        assert_eq!(Record::new_checked(&rec).unwrap_err(), ErfError::BadLength);
        // rlen larger than the buffer.
        rec[10..12].copy_from_slice(&100u16.to_be_bytes());
        assert_eq!(Record::new_checked(&rec).unwrap_err(), ErfError::Truncated);
        // Extension chain running past rlen.
        let mut rec = [0u8; 24];
        rec[8] = 0x82;
        rec[10..12].copy_from_slice(&24u16.to_be_bytes());
        rec[16] = 0x80; // says another ext header follows, but rlen ends here
        assert_eq!(Record::new_checked(&rec).unwrap_err(), ErfError::BadLength);
    }

    #[test]
    fn non_ethernet_records_have_no_frame() {
        let mut rec = [0u8; 24];
        rec[8] = record_type::META;
        rec[10..12].copy_from_slice(&24u16.to_be_bytes());
        assert!(Record::new_checked(&rec).unwrap().eth_frame().is_none());
    }

    #[test]
    fn header_round_trip() {
        let mut out = [0u8; 18];
        write_eth_header(&mut out, 1_500_000_000_123_456_789, 1, 0, 60, 60, 7);
        let h = Record::parse_header(&out).unwrap();
        assert_eq!(h.rtype, record_type::ETH);
        assert_eq!(h.flags, 0x05);
        assert_eq!(h.rlen, 78);
        assert_eq!(h.wlen, 64);
        assert_eq!(h.lctr, 7);
        assert_eq!(h.ts_ns(), 1_500_000_000_123_456_789);
    }

    #[test]
    fn wlen_saturates() {
        let mut out = [0u8; 18];
        write_eth_header(&mut out, 0, 0, 0, 100, 70_000, 0);
        assert_eq!(Record::parse_header(&out).unwrap().wlen, u16::MAX);
    }

    #[test]
    fn timestamp_edges() {
        for ns in [0u64, 1, 999_999_999, 1_000_000_000, 999_999_999_999_999_999] {
            assert_eq!(ts_to_ns(ns_to_ts(ns)), ns, "{ns}");
        }
        // 999_999_999.6 ns rounds up into the next second's fraction space.
        assert_eq!(ns_to_ts(999_999_999) >> 32, 0);
        // The last representable second, and past it saturation (found by
        // the erf_record fuzz target: 4383360020098741944 ns wrapped to
        // 88392724098741944 ns, i.e. 2108 became 1972).
        let last = u32::MAX as u64 * 1_000_000_000 + 999_999_999;
        assert_eq!(ts_to_ns(ns_to_ts(last)), last);
        for ns in [last + 1, 4_383_360_020_098_741_944, u64::MAX] {
            assert_eq!(ns_to_ts(ns), u64::MAX, "{ns}");
            assert!(ts_to_ns(ns_to_ts(ns)) >= last, "{ns}");
        }
    }

    proptest::proptest! {
        #[test]
        fn ns_round_trip(ns in 0u64..(u32::MAX as u64 * 1_000_000_000)) {
            proptest::prop_assert_eq!(ts_to_ns(ns_to_ts(ns)), ns);
        }

        #[test]
        fn random_bytes_never_panic(buf in proptest::collection::vec(proptest::num::u8::ANY, 0..128)) {
            if let Ok(r) = Record::new_checked(&buf) {
                let _ = r.eth_frame();
                let _ = r.wire_len();
            }
        }
    }
}

//! Snaplen: keep the first N bytes of each frame.
//!
//! The record keeps `min(captured, snaplen)` bytes; the wire length is never
//! changed. In the ERF record the worker writes:
//!
//! * `flags` always has **varying-length (0x04)** set, so `rlen` is exactly
//!   16 (header) + 2 (ETH offset/pad) + kept bytes, with no padding;
//! * `wlen` stays the frame's wire length (+ 4 for the FCS, as today), so a
//!   snaplen cut shows as `rlen - 18 < wlen - 4` — that is how tshark,
//!   libtrace and `linecap read` see "captured < on the wire";
//! * the **truncated flag (0x08) is NOT set** for a snaplen cut: ERF defines
//!   it as "cut for lack of buffer space" (an error the capture could not
//!   avoid), and Wireshark shows it as such. The worker keeps setting it only
//!   when a frame is longer than an ERF record can hold
//!   ([`linecap_wire::erf::FRAME_MAX`], counted in `frames_cut`).
//!
//! Snaplen applies after anonymisation (the checksums of a frame are fixed
//! up before its tail is cut, which does not matter to a reader, but
//! anonymisation never reads past what is kept either way) and before the
//! copy into the ring slot, so a cut frame also costs less ring space.

/// A snaplen: the largest number of frame bytes a record keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Snaplen {
    bytes: u32,
}

/// Smallest snaplen accepted: an Ethernet header.
pub const SNAPLEN_MIN: u32 = 14;

impl Snaplen {
    /// A snaplen of `bytes` (at least [`SNAPLEN_MIN`]); `None` if smaller.
    pub const fn new(bytes: u32) -> Option<Snaplen> {
        if bytes < SNAPLEN_MIN {
            None
        } else {
            Some(Snaplen { bytes })
        }
    }

    /// The limit in bytes.
    pub const fn bytes(self) -> u32 {
        self.bytes
    }

    /// How many of `captured_len` captured bytes to keep.
    #[inline(always)]
    pub const fn kept_len(self, captured_len: usize) -> usize {
        let limit = self.bytes as usize;
        if captured_len < limit {
            captured_len
        } else {
            limit
        }
    }

    /// The kept prefix of `data`, and whether the snaplen cut it.
    #[inline(always)]
    pub fn apply(self, data: &[u8]) -> (&[u8], bool) {
        let n = self.kept_len(data.len());
        (data.get(..n).unwrap_or(data), n < data.len())
    }
}

/// What a job keeps: `None` keeps whole frames.
#[inline(always)]
pub fn kept_len(snaplen: Option<Snaplen>, captured_len: usize) -> usize {
    match snaplen {
        Some(s) => s.kept_len(captured_len),
        None => captured_len,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_first_n_bytes() {
        let s = Snaplen::new(64).unwrap();
        assert_eq!(s.bytes(), 64);
        assert_eq!(s.kept_len(0), 0);
        assert_eq!(s.kept_len(60), 60);
        assert_eq!(s.kept_len(64), 64);
        assert_eq!(s.kept_len(1514), 64);
        let frame: Vec<u8> = (0..200u8).collect();
        let (kept, cut) = s.apply(&frame);
        assert_eq!(kept, &frame[..64]);
        assert!(cut);
        let (kept, cut) = s.apply(&frame[..64]);
        assert_eq!(kept.len(), 64);
        assert!(!cut);
        assert_eq!(kept_len(None, 1514), 1514);
        assert_eq!(kept_len(Some(s), 1514), 64);
        assert_eq!(Snaplen::new(13), None);
        assert_eq!(Snaplen::new(SNAPLEN_MIN).map(Snaplen::bytes), Some(14));
    }

    #[test]
    fn erf_record_of_a_cut_frame_keeps_wire_length() {
        use linecap_wire::erf::{self, ETH_RECORD_OVERHEAD};
        let s = Snaplen::new(100).unwrap();
        let frame = [0xabu8; 1500];
        let (kept, _) = s.apply(&frame);
        let mut rec = vec![0u8; ETH_RECORD_OVERHEAD + kept.len()];
        erf::write_eth_header(&mut rec, 1, 0, 0, kept.len(), frame.len() as u32, 0);
        rec[ETH_RECORD_OVERHEAD..].copy_from_slice(kept);
        let r = erf::Record::new_checked(&rec[..]).unwrap();
        let h = r.header();
        assert_eq!(h.rlen as usize, ETH_RECORD_OVERHEAD + 100);
        assert_eq!(h.wlen, 1504, "wire length + FCS, unchanged by the snaplen");
        assert_eq!(h.flags & erf::flags::VARLEN, erf::flags::VARLEN);
        assert_eq!(h.flags & erf::flags::TRUNC, 0);
        assert_eq!(r.wire_len(), 1500);
    }
}

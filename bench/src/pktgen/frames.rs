//! What the generator sends: a cycle of template frames, and the per-frame
//! changes made as it copies each template into the send buffer.
//!
//! Global frame number `g` (0, 1, 2, … across every TX thread) picks
//! template `g % n` of the cycle, and `g / n` is the pass over it.
//!
//! - Synthetic frames are Ethernet/IPv4/UDP, the same layout as
//!   `linecap_dataplane::synthetic`: flow `g % flows` sets the source
//!   address (10.a.b.c) and source port (1024 + low 16 bits), and the **64-bit
//!   big-endian sequence number `g` sits at bytes 42..50** (the first 8 bytes
//!   of the UDP payload). The IPv4 header checksum is rewritten per frame.
//! - Frames from a file are sent as recorded on the first pass; on pass
//!   `k > 0` each IPv4 source and destination address (after up to two VLAN
//!   tags) has `k` added to its low 16 bits, checksum patched, so a looped
//!   trace shows new flows each time. Other frames are sent unchanged.

use std::path::Path;

use linecap_reader::read::{CaptureReader, Packet};

/// Byte offset of the sequence number in synthetic frames (after Ethernet,
/// IPv4 and UDP headers).
pub const SEQ_OFF: usize = 42;
/// Smallest synthetic frame: headers + the 8-byte sequence number.
pub const SYNTH_MIN: usize = SEQ_OFF + 8;
/// Largest frame the generator sends (an Ethernet frame for a 9000 B MTU).
pub const FRAME_MAX: usize = 9018;
/// Frames read from a file, at most (they are held in memory).
pub const FILE_FRAMES_MAX: usize = 4 << 20;
/// Bytes read from a file, at most.
pub const FILE_BYTES_MAX: usize = 1 << 30;

/// The simple IMIX: 7 × 64 B, 4 × 594 B, 1 × 1514 B (FCS excluded), interleaved.
pub const IMIX: [usize; 12] = [64, 594, 64, 64, 1514, 64, 594, 64, 64, 594, 64, 594];

const IP: usize = 14;
const UDP: usize = IP + 20;

/// The frames of one cycle plus how to change them per frame.
pub struct FrameSet {
    templates: Vec<Vec<u8>>,
    /// Capture timestamps (ns) of file frames, for `--timing original`.
    pub ts_ns: Vec<u64>,
    kind: Kind,
}

enum Kind {
    Synthetic { flows: u32 },
    File,
}

impl FrameSet {
    /// Synthetic frames of the given sizes (one per template), over `flows` flows.
    pub fn synthetic(sizes: &[usize], flows: u32) -> Result<Self, String> {
        if flows == 0 {
            return Err("--flows must be at least 1".into());
        }
        let mut templates = Vec::new();
        for &len in sizes {
            if !(SYNTH_MIN..=FRAME_MAX).contains(&len) {
                return Err(format!(
                    "synthetic frame size must be {SYNTH_MIN}..={FRAME_MAX} bytes (FCS excluded), got {len}"
                ));
            }
            templates.push(template(len));
        }
        Ok(FrameSet {
            templates,
            ts_ns: Vec::new(),
            kind: Kind::Synthetic { flows },
        })
    }

    /// Every frame of a pcap, pcapng or ERF file (plain or LZ4).
    pub fn file(path: &Path) -> Result<Self, String> {
        let mut r = CaptureReader::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut p = Packet::default();
        let (mut templates, mut ts_ns, mut bytes) = (Vec::new(), Vec::new(), 0usize);
        while r
            .next(&mut p)
            .map_err(|e| format!("{}: {e}", path.display()))?
        {
            if p.data.len() < 14 || p.data.len() > FRAME_MAX {
                continue; // not a frame we can send
            }
            bytes += p.data.len();
            if templates.len() >= FILE_FRAMES_MAX || bytes > FILE_BYTES_MAX {
                return Err(format!(
                    "{}: more than {FILE_FRAMES_MAX} frames or {FILE_BYTES_MAX} bytes: cut it first",
                    path.display()
                ));
            }
            templates.push(p.data.clone());
            ts_ns.push(p.ts_ns);
        }
        if templates.is_empty() {
            return Err(format!("{}: no Ethernet frame to send", path.display()));
        }
        Ok(FrameSet {
            templates,
            ts_ns,
            kind: Kind::File,
        })
    }

    /// Templates in one cycle.
    pub fn len(&self) -> usize {
        self.templates.len()
    }

    /// Length of frame `g`.
    pub fn frame_len(&self, g: u64) -> usize {
        self.templates[(g % self.len() as u64) as usize].len()
    }

    /// Longest template.
    pub fn max_len(&self) -> usize {
        self.templates.iter().map(Vec::len).max().unwrap_or(0)
    }

    /// Write frame `g` into `buf` (at least [`FrameSet::max_len`] bytes);
    /// returns its length.
    #[inline]
    pub fn build(&self, g: u64, buf: &mut [u8]) -> usize {
        let n = self.len() as u64;
        let t = &self.templates[(g % n) as usize];
        let f = &mut buf[..t.len()];
        f.copy_from_slice(t);
        match self.kind {
            Kind::Synthetic { flows } => {
                let flow = (g % u64::from(flows)) as u32;
                f[IP + 12..IP + 16].copy_from_slice(&[
                    10,
                    (flow >> 24) as u8 & 0x7f,
                    (flow >> 16) as u8,
                    (flow >> 8) as u8,
                ]);
                // the low 8 bits go into the port, with the next 8
                f[UDP..UDP + 2].copy_from_slice(&1024u16.wrapping_add(flow as u16).to_be_bytes());
                f[SEQ_OFF..SEQ_OFF + 8].copy_from_slice(&g.to_be_bytes());
                let c = ipv4_checksum(&f[IP..UDP]);
                f[IP + 10..IP + 12].copy_from_slice(&c.to_be_bytes());
            }
            Kind::File => {
                let pass = g / n;
                if pass > 0 {
                    vary_addresses(f, pass as u16);
                }
            }
        }
        t.len()
    }
}

/// The sequence number in a synthetic frame, if it is one of ours.
pub fn sequence(frame: &[u8]) -> Option<u64> {
    let ours = frame.len() >= SYNTH_MIN
        && frame[12..14] == [0x08, 0x00]
        && frame[IP + 9] == 17
        && frame[UDP + 2..UDP + 4] == 4789u16.to_be_bytes()
        && frame[0..6] == [0x02, 0, 0, 0, 0, 0x02];
    ours.then(|| u64::from_be_bytes(frame[SEQ_OFF..SEQ_OFF + 8].try_into().unwrap()))
}

/// An Ethernet/IPv4/UDP frame of `len` bytes to 10.255.0.1:4789, between
/// locally administered MACs; the payload after the sequence number is zero.
fn template(len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len];
    f[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x02]);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip = &mut f[IP..UDP];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((len - IP) as u16).to_be_bytes());
    ip[6] = 0x40; // DF
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&[10, 0, 0, 0]);
    ip[16..20].copy_from_slice(&[10, 255, 0, 1]);
    f[UDP + 2..UDP + 4].copy_from_slice(&4789u16.to_be_bytes());
    f[UDP + 4..UDP + 6].copy_from_slice(&((len - UDP) as u16).to_be_bytes());
    f
}

fn ipv4_checksum(h: &[u8]) -> u16 {
    let mut sum = 0u32;
    for (i, w) in h.chunks_exact(2).enumerate() {
        if i != 5 {
            sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Add `k` to the low 16 bits of both IPv4 addresses (Ethernet, up to two
/// VLAN tags) and recompute the header checksum. UDP/TCP checksums are left
/// as they are (receivers of this traffic capture it, they do not verify).
fn vary_addresses(f: &mut [u8], k: u16) {
    let mut off = 12;
    let mut tags = 0;
    while off + 2 <= f.len() && tags <= 2 {
        match u16::from_be_bytes([f[off], f[off + 1]]) {
            0x8100 | 0x88a8 => {
                off += 4;
                tags += 1;
            }
            0x0800 => break,
            _ => return,
        }
    }
    let ip = off + 2;
    if tags > 2 || f.len() < ip + 20 || f[ip] >> 4 != 4 {
        return;
    }
    let ihl = usize::from(f[ip] & 0x0f) * 4;
    if ihl < 20 || f.len() < ip + ihl {
        return;
    }
    for a in [ip + 14, ip + 18] {
        let v = u16::from_be_bytes([f[a], f[a + 1]]).wrapping_add(k);
        f[a..a + 2].copy_from_slice(&v.to_be_bytes());
    }
    let c = ipv4_checksum(&f[ip..ip + ihl]);
    f[ip + 10..ip + 12].copy_from_slice(&c.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_frames_carry_flow_sequence_and_valid_checksum() {
        let s = FrameSet::synthetic(&IMIX, 3).unwrap();
        let mut buf = vec![0u8; s.max_len()];
        for g in [0u64, 1, 4, 13, 1 << 40] {
            let n = s.build(g, &mut buf);
            let f = &buf[..n];
            assert_eq!(n, IMIX[(g % 12) as usize]);
            assert_eq!(sequence(f), Some(g));
            assert_eq!(
                ipv4_checksum(&f[IP..UDP]),
                u16::from_be_bytes([f[24], f[25]])
            );
            let port = u16::from_be_bytes([f[UDP], f[UDP + 1]]);
            assert_eq!(port, 1024 + (g % 3) as u16);
            match linecap_wire::flow::parse_frame(f) {
                linecap_wire::flow::Parsed::Ip(_) => {}
                _ => panic!("not parsed as IP"),
            }
        }
        assert!(FrameSet::synthetic(&[49], 1).is_err());
        assert!(FrameSet::synthetic(&[64], 0).is_err());
    }

    #[test]
    fn looped_file_frames_get_new_addresses_with_a_valid_checksum() {
        let mut f = template(100);
        let c = ipv4_checksum(&f[IP..UDP]);
        f[IP + 10..IP + 12].copy_from_slice(&c.to_be_bytes());
        let mut g = f.clone();
        vary_addresses(&mut g, 7);
        assert_eq!(&g[IP + 12..IP + 16], &[10, 0, 0, 7]);
        assert_eq!(&g[IP + 16..IP + 20], &[10, 255, 0, 8]);
        assert_eq!(
            ipv4_checksum(&g[IP..UDP]),
            u16::from_be_bytes([g[24], g[25]])
        );
        // Not IPv4: unchanged.
        let mut arp = f.clone();
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        let before = arp.clone();
        vary_addresses(&mut arp, 7);
        assert_eq!(arp, before);
    }
}

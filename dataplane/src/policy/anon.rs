//! Rewriting the addresses of a captured frame in place with Crypto-PAn.
//!
//! # Which headers
//!
//! The IP header [`linecap_wire::flow::parse_frame`] found: the **outermost**
//! IPv4 or IPv6 header (behind any VLAN tags, MPLS labels, LLC/SNAP, and for
//! an Ethernet-over-MPLS pseudowire the IP header of the inner frame, which
//! is the first one on the path). Its source and/or destination address is
//! replaced ([`AnonMode`]).
//!
//! **Not rewritten** (the packet views do not reach them today): inner IP
//! headers of tunnels (IP-in-IP, 6in4, GRE, VXLAN, GTP), the packet quoted
//! inside an ICMP/ICMPv6 error, addresses in IPv6 extension headers (routing
//! header, home address option), ARP, and addresses in payloads (DNS, SIP,
//! FTP PORT...). A deployment that must not keep those combines
//! anonymisation with a filter (e.g. `not arp and not icmp`) or a snaplen
//! that stops before them.
//!
//! # Checksums: updated incrementally (RFC 1624)
//!
//! The choice is to keep checksums *meaningful* rather than to zero them:
//! every checksum whose covered bytes change is adjusted by the difference
//! (`HC' = ~(~HC + ~m + m')`, RFC 1624 eq. 3), without reading the payload:
//!
//! * the IPv4 header checksum, always (the header is always in the capture:
//!   `parse_frame` checks it);
//! * the TCP, UDP, UDP-Lite and ICMPv6 checksums, whose pseudo-header holds
//!   the addresses — when the checksum field itself is in the capture (the
//!   rest of the segment need not be: the update only needs the old value),
//!   and not for a non-first fragment (its L4 header is in another fragment).
//!   A UDP checksum of 0 ("none", IPv4) stays 0; an updated UDP checksum
//!   that comes out as 0 is written as 0xFFFF (RFC 768).
//!
//! So a checksum that was right stays right, and one that was wrong (NIC
//! offload leaves many outgoing checksums wrong in captures) stays wrong by
//! exactly the same amount: an analyst still sees the error the original
//! packet had. ICMPv4 and SCTP checksums do not cover the addresses and are
//! untouched. Known gap: with an IPv6 routing header the pseudo-header holds
//! the final destination (from the routing header), not the destination
//! field; such packets' L4 checksums are adjusted as if it were the field.

use linecap_wire::flow::{IpFamily, PacketInfo};
use linecap_wire::ipv4::protocol;

use super::cryptopan::CryptoPan;

/// Which addresses to anonymise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AnonMode {
    /// Source addresses only.
    Src,
    /// Destination addresses only.
    Dst,
    /// Both.
    Both,
}

impl AnonMode {
    fn src(self) -> bool {
        matches!(self, AnonMode::Src | AnonMode::Both)
    }

    fn dst(self) -> bool {
        matches!(self, AnonMode::Dst | AnonMode::Both)
    }
}

impl std::fmt::Display for AnonMode {
    /// The text [`AnonMode::from_str`] reads: `src`, `dst` or `both`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AnonMode::Src => "src",
            AnonMode::Dst => "dst",
            AnonMode::Both => "both",
        })
    }
}

impl std::str::FromStr for AnonMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "src" => Ok(AnonMode::Src),
            "dst" => Ok(AnonMode::Dst),
            "both" => Ok(AnonMode::Both),
            _ => Err(format!(
                "anonymisation mode {s:?}: expected src, dst or both"
            )),
        }
    }
}

/// What happened to the L4 checksum of a rewritten frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum L4Checksum {
    /// Updated for the new addresses.
    Updated,
    /// A UDP checksum of 0 (none) left as it was.
    NoneUdp,
    /// The protocol's checksum does not cover the addresses (ICMP, SCTP,
    /// ESP, ...), or no address was changed.
    NotCovered,
    /// The checksum field is not in the capture (snaplen, truncation).
    NotCaptured,
    /// A non-first fragment: its L4 header is in another fragment.
    Fragment,
}

/// The outcome of [`CryptoPan::anonymize_frame`] (plain data, for counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rewrite {
    /// Addresses replaced (0, 1 or 2; fewer than asked when the capture
    /// ends inside the IP header's addresses — then nothing is left to hide).
    pub addresses: u8,
    /// The L4 checksum.
    pub l4: L4Checksum,
}

/// `sum` adjusted for 16-bit words `old` replaced by `new` (RFC 1624 eq. 3).
#[inline(always)]
pub fn checksum_adjust(check: u16, old: &[u8], new: &[u8]) -> u16 {
    let mut sum = u32::from(!check);
    for (o, n) in old.chunks_exact(2).zip(new.chunks_exact(2)) {
        if let (&[o0, o1], &[n0, n1]) = (o, n) {
            sum += u32::from(!u16::from_be_bytes([o0, o1]));
            sum += u32::from(u16::from_be_bytes([n0, n1]));
        }
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[inline(always)]
fn read16(frame: &[u8], at: usize) -> Option<u16> {
    match frame.get(at..at.checked_add(2)?) {
        Some(&[a, b]) => Some(u16::from_be_bytes([a, b])),
        _ => None,
    }
}

#[inline(always)]
fn write16(frame: &mut [u8], at: usize, v: u16) {
    if let Some(f) = at.checked_add(2).and_then(|end| frame.get_mut(at..end)) {
        f.copy_from_slice(&v.to_be_bytes());
    }
}

impl CryptoPan {
    /// Replace the outer IP header's source and/or destination address of
    /// `frame` (whose parse is `info`) by their Crypto-PAn images, and update
    /// the checksums (see the module documentation). `frame` may be a prefix
    /// of the frame `info` was parsed from (a snaplen cut): nothing past its
    /// end is read or written. No allocation, no panic.
    #[inline]
    pub fn anonymize_frame(
        &mut self,
        frame: &mut [u8],
        info: &PacketInfo,
        mode: AnonMode,
    ) -> Rewrite {
        let l3 = info.l3_offset;
        let v4 = info.key.family() == IpFamily::V4;
        let (alen, src_at, dst_at) = if v4 { (4, 12, 16) } else { (16, 8, 24) };
        // Old and new address bytes, concatenated, for the checksum updates.
        let mut old = [0u8; 32];
        let mut new = [0u8; 32];
        let mut used = 0usize;
        let mut addresses = 0u8;
        for (wanted, at) in [(mode.src(), src_at), (mode.dst(), dst_at)] {
            if !wanted {
                continue;
            }
            let Some(field) = l3.checked_add(at).and_then(|s| frame.get_mut(s..s + alen)) else {
                continue;
            };
            let (Some(o), Some(n)) = (
                old.get_mut(used..used + alen),
                new.get_mut(used..used + alen),
            ) else {
                continue;
            };
            o.copy_from_slice(field);
            if v4 {
                let mut a = [0u8; 4];
                a.copy_from_slice(field);
                field.copy_from_slice(&self.anonymize_v4(a));
            } else {
                let mut a = [0u8; 16];
                a.copy_from_slice(field);
                field.copy_from_slice(&self.anonymize_v6(a));
            }
            n.copy_from_slice(field);
            used += alen;
            addresses += 1;
        }
        let (old, new) = (&old[..used], &new[..used]);
        if addresses == 0 {
            return Rewrite {
                addresses,
                l4: L4Checksum::NotCovered,
            };
        }
        if v4 && let Some(c) = read16(frame, l3 + 10) {
            write16(frame, l3 + 10, checksum_adjust(c, old, new));
        }
        let l4 = if info.key.is_fragment() {
            L4Checksum::Fragment
        } else {
            let field = match info.key.proto() {
                protocol::TCP => Some(16),
                protocol::UDP | UDPLITE => Some(6),
                protocol::ICMPV6 if !v4 => Some(2),
                _ => None,
            };
            match field.map(|f| (f, read16(frame, info.l4_offset + f))) {
                None => L4Checksum::NotCovered,
                Some((_, None)) => L4Checksum::NotCaptured,
                Some((_, Some(0))) if info.key.proto() == protocol::UDP => L4Checksum::NoneUdp,
                Some((f, Some(c))) => {
                    let mut c = checksum_adjust(c, old, new);
                    if c == 0 && info.key.proto() == protocol::UDP {
                        c = 0xffff;
                    }
                    write16(frame, info.l4_offset + f, c);
                    L4Checksum::Updated
                }
            }
        };
        Rewrite { addresses, l4 }
    }
}

/// IP protocol number of UDP-Lite (RFC 3828), whose checksum covers the
/// same pseudo-header as UDP's.
pub const UDPLITE: u8 = 136;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::cryptopan::{CacheConfig, KEY_LEN, parse_key};
    use linecap_reader::read::{CaptureReader, Packet};
    use linecap_wire::flow::{Parsed, parse_frame};
    use std::path::Path;

    const TRACES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/traces/");

    fn key() -> [u8; KEY_LEN] {
        parse_key(b"1522178d33a4cf80130a5b1649907d10d8988f837979652762574c2d2a842202").unwrap()
    }

    /// One's-complement sum of `b` (odd length padded), folded.
    fn sum(mut acc: u32, b: &[u8]) -> u32 {
        for c in b.chunks(2) {
            acc += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
        while acc >> 16 != 0 {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        acc
    }

    fn ipv4_header_ok(frame: &[u8], l3: usize) -> bool {
        let ihl = usize::from(frame[l3] & 0xf) * 4;
        sum(0, &frame[l3..l3 + ihl]) == 0xffff
    }

    /// Whether the L4 checksum of a whole (uncut, unfragmented) TCP/UDP/
    /// ICMPv6 segment verifies; None when it cannot be checked.
    fn l4_ok(frame: &[u8], info: &PacketInfo) -> Option<bool> {
        if info.ip_truncated || info.l4_truncated || info.fragment.is_some() {
            return None;
        }
        let l3 = info.l3_offset;
        let v4 = info.key.family() == IpFamily::V4;
        let proto = info.key.proto();
        let checked = match proto {
            protocol::TCP | protocol::UDP => true,
            protocol::ICMPV6 => !v4,
            _ => false,
        };
        if !checked {
            return None;
        }
        let (addrs, ip_end) = if v4 {
            let total = usize::from(u16::from_be_bytes([frame[l3 + 2], frame[l3 + 3]]));
            (&frame[l3 + 12..l3 + 20], l3 + total)
        } else {
            let plen = usize::from(u16::from_be_bytes([frame[l3 + 4], frame[l3 + 5]]));
            (&frame[l3 + 8..l3 + 40], l3 + 40 + plen)
        };
        let seg = frame.get(info.l4_offset..ip_end)?;
        if proto == protocol::UDP && seg[6..8] == [0, 0] {
            return None;
        }
        let len = seg.len() as u32;
        let pseudo = sum(0, addrs) + u32::from(proto) + (len >> 16) + (len & 0xffff);
        Some(sum(pseudo, seg) == 0xffff)
    }

    /// (src, dst) address bytes of a parsed packet.
    fn src_dst(info: &PacketInfo) -> ([u8; 16], [u8; 16]) {
        let (a, b) = (*info.key.addr_a_bytes(), *info.key.addr_b_bytes());
        if info.a_to_b { (a, b) } else { (b, a) }
    }

    fn expected(c: &mut CryptoPan, v4: bool, a: [u8; 16]) -> [u8; 16] {
        let mut out = [0u8; 16];
        if v4 {
            out[..4].copy_from_slice(&c.anonymize_v4(a[..4].try_into().unwrap()));
        } else {
            out = c.anonymize_v6(a);
        }
        out
    }

    #[derive(Default, Debug)]
    struct Tally {
        frames: u64,
        rewritten: u64,
        v4_header_ok_before: u64,
        l4_ok_before: u64,
        l4_updated: u64,
    }

    fn rewrite_trace(name: &str, mode: AnonMode, tally: &mut Tally) {
        let mut reader = CaptureReader::open(Path::new(&format!("{TRACES}{name}"))).unwrap();
        let mut pkt = Packet::default();
        let mut cached = CryptoPan::with_cache(&key(), CacheConfig::default());
        let mut reference = CryptoPan::new(&key());
        while reader.next(&mut pkt).unwrap() {
            tally.frames += 1;
            let Parsed::Ip(before) = parse_frame(&pkt.data) else {
                continue;
            };
            let v4 = before.key.family() == IpFamily::V4;
            let hdr_ok = v4 && ipv4_header_ok(&pkt.data, before.l3_offset);
            let l4_before = l4_ok(&pkt.data, &before);
            let mut frame = pkt.data.clone();
            let rw = cached.anonymize_frame(&mut frame, &before, mode);
            assert_eq!(rw.addresses, if mode == AnonMode::Both { 2 } else { 1 });
            tally.rewritten += 1;
            let Parsed::Ip(after) = parse_frame(&frame) else {
                panic!("{name}: frame {} no longer parses", tally.frames)
            };
            let (s0, d0) = src_dst(&before);
            let (s1, d1) = src_dst(&after);
            let want_s = if mode.src() {
                expected(&mut reference, v4, s0)
            } else {
                s0
            };
            let want_d = if mode.dst() {
                expected(&mut reference, v4, d0)
            } else {
                d0
            };
            assert_eq!((s1, d1), (want_s, want_d), "{name}: frame {}", tally.frames);
            // Everything but the addresses and checksums is untouched.
            assert_eq!(frame.len(), pkt.data.len());
            assert_eq!(after.key.proto(), before.key.proto());
            assert_eq!(after.key.vlan_ids(), before.key.vlan_ids());
            if hdr_ok {
                tally.v4_header_ok_before += 1;
                assert!(
                    ipv4_header_ok(&frame, after.l3_offset),
                    "{name}: frame {}: IPv4 header checksum",
                    tally.frames
                );
            }
            if rw.l4 == L4Checksum::Updated {
                tally.l4_updated += 1;
            }
            if let Some(ok) = l4_before {
                assert_eq!(
                    l4_ok(&frame, &after),
                    Some(ok),
                    "{name}: frame {}: L4",
                    tally.frames
                );
                if ok {
                    tally.l4_ok_before += 1;
                    assert_eq!(rw.l4, L4Checksum::Updated);
                }
            }
        }
    }

    #[test]
    fn rewrites_every_address_of_real_traces_and_keeps_checksums() {
        let mut tally = Tally::default();
        for name in [
            "tcpreplay__test.pcap",
            "community-id-spec__combined.pcap",
            "zeek__http_bro.org.pcap",
            "zeek__ftp_ipv6.pcap",
            "ndpi__http_ipv6.pcap",
            "libtrace__vlan.pcap",
            "zeek__mixed-vlan-mpls.pcap",
            "zeek__ipv4_fragmented-4.pcap",
            "zeek__ipv6-fragmented-dns.pcap",
            "zeek__tcp_truncated-header.pcap",
            "zeek__icmp_icmp6-ping.pcap",
            "libtrace__100_packets.erf",
        ] {
            for mode in [AnonMode::Both, AnonMode::Src, AnonMode::Dst] {
                rewrite_trace(name, mode, &mut tally);
            }
        }
        eprintln!("{tally:?}");
        assert!(tally.rewritten > 5000, "{tally:?}");
        assert!(tally.v4_header_ok_before > 3000, "{tally:?}");
        assert!(tally.l4_ok_before > 1000, "{tally:?}");
    }

    #[test]
    fn a_cut_frame_is_rewritten_as_far_as_it_goes() {
        // zeek__snap-tcp frame 1 (LLC/SNAP, TCP SYN 192.168.1.1 -> 192.168.1.2).
        let frame: [u8; 62] = [
            0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x00, 0x30,
            0xaa, 0xaa, 0x03, 0x00, 0x00, 0x00, 0x08, 0x00, 0x45, 0x00, 0x00, 0x28, 0x00, 0x01,
            0x00, 0x00, 0x40, 0x06, 0xf7, 0x7b, 0xc0, 0xa8, 0x01, 0x01, 0xc0, 0xa8, 0x01, 0x02,
            0x30, 0x39, 0x00, 0x50, 0x00, 0x00, 0x00, 0x64, 0x00, 0x00, 0x00, 0x00, 0x50, 0x02,
            0x20, 0x00, 0xdb, 0xa1, 0x00, 0x00,
        ];
        let Parsed::Ip(info) = parse_frame(&frame) else {
            panic!()
        };
        let mut c = CryptoPan::new(&key());
        let mut full = frame;
        let rw = c.anonymize_frame(&mut full, &info, AnonMode::Both);
        assert_eq!(
            rw,
            Rewrite {
                addresses: 2,
                l4: L4Checksum::Updated
            }
        );
        assert_eq!(l4_ok(&full, &info), Some(true));
        // Every cut of the frame: no panic, an address is rewritten only
        // when it is whole in the capture, and the L4 checksum is updated
        // only when captured.
        for cut in 0..frame.len() {
            let mut part = frame[..cut].to_vec();
            let rw = c.anonymize_frame(&mut part, &info, AnonMode::Both);
            let want = (cut >= 22 + 16) as u8 + (cut >= 22 + 20) as u8;
            assert_eq!(rw.addresses, want, "cut at {cut}");
            match want {
                0 => assert_eq!(&part[..], &frame[..cut], "cut at {cut}"),
                1 => {
                    assert_eq!(&part[34..38], &full[34..38], "cut at {cut}");
                    assert_eq!(&part[38..], &frame[38..cut], "cut at {cut}");
                    let mut one = frame;
                    c.anonymize_frame(&mut one, &info, AnonMode::Src);
                    assert_eq!(&part[..], &one[..cut], "cut at {cut}");
                }
                // The TCP checksum (bytes 58..60) only when it is whole.
                _ if cut == 59 => assert_eq!(&part[..58], &full[..58]),
                _ => assert_eq!(&part[..], &full[..cut], "cut at {cut}"),
            }
            if cut >= 42 + 18 {
                assert_eq!(rw.l4, L4Checksum::Updated);
            } else if want > 0 {
                assert_eq!(rw.l4, L4Checksum::NotCaptured, "cut at {cut}");
            }
        }
    }

    #[test]
    fn udp_without_checksum_stays_without() {
        // IPv4/UDP 10.0.0.1:53 -> 10.0.0.2:53, checksum 0.
        let mut f = vec![0u8; 14 + 20 + 8];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[16..18].copy_from_slice(&28u16.to_be_bytes());
        f[22] = 64;
        f[23] = protocol::UDP;
        f[26..30].copy_from_slice(&[10, 0, 0, 1]);
        f[30..34].copy_from_slice(&[10, 0, 0, 2]);
        let c = !(sum(0, &f[14..34]) as u16);
        f[24..26].copy_from_slice(&c.to_be_bytes());
        f[34..36].copy_from_slice(&53u16.to_be_bytes());
        f[36..38].copy_from_slice(&53u16.to_be_bytes());
        f[38..40].copy_from_slice(&8u16.to_be_bytes());
        let Parsed::Ip(info) = parse_frame(&f) else {
            panic!()
        };
        let rw = CryptoPan::new(&key()).anonymize_frame(&mut f, &info, AnonMode::Both);
        assert_eq!(rw.l4, L4Checksum::NoneUdp);
        assert_eq!(&f[40..42], &[0, 0]);
        assert!(ipv4_header_ok(&f, 14));
    }

    #[test]
    fn checksum_adjust_matches_recomputation() {
        let mut hdr: [u8; 20] = [
            0x45, 0x00, 0x00, 0x3c, 0x1c, 0x46, 0x40, 0x00, 0x40, 0x06, 0x00, 0x00, 0xac, 0x10,
            0x0a, 0x63, 0xac, 0x10, 0x0a, 0x0c,
        ];
        let c = !(sum(0, &hdr) as u16);
        hdr[10..12].copy_from_slice(&c.to_be_bytes());
        for new in [
            [0u8, 0, 0, 0],
            [255, 255, 255, 255],
            [1, 2, 3, 4],
            [0xac, 0x10, 0x0a, 0x63],
        ] {
            let mut h = hdr;
            h[12..16].copy_from_slice(&new);
            h[10..12].copy_from_slice(&[0, 0]);
            let full = !(sum(0, &h) as u16);
            let inc = checksum_adjust(c, &hdr[12..16], &new);
            // 0x0000 and 0xffff are the same one's-complement value.
            assert!(
                inc == full || (inc ^ full) == 0xffff && (inc == 0 || full == 0),
                "{new:?}"
            );
            h[10..12].copy_from_slice(&inc.to_be_bytes());
            assert_eq!(sum(0, &h), 0xffff, "{new:?}");
        }
    }
}

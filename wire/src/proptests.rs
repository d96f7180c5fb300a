//! Property tests: no input makes `parse_frame` or a view accessor (after
//! `new_checked`) panic.

use proptest::collection::vec;
use proptest::prelude::*;

use crate::flow::{Parsed, parse_common_ipv4, parse_frame, parse_frame_full_walk, symmetric_hash};
use crate::{ethernet, icmp, ipv4, ipv6, mpls, sctp, tcp, udp, vlan};

/// Call every accessor of every view that accepts `b`.
fn exercise_views(b: &[u8]) {
    if let Ok(p) = ethernet::Packet::new_checked(b) {
        let _ = (p.dst_addr(), p.src_addr(), p.ethertype(), p.payload());
        let _ = ethernet::snap_ethertype(p.payload());
    }
    if let Ok(p) = vlan::Packet::new_checked(b) {
        let _ = (
            p.tci(),
            p.pcp(),
            p.dei(),
            p.vid(),
            p.ethertype(),
            p.payload(),
        );
    }
    if let Ok(p) = mpls::Packet::new_checked(b) {
        let _ = (p.label(), p.tc(), p.bottom_of_stack(), p.ttl(), p.payload());
    }
    if let Ok(p) = ipv4::Packet::new_checked(b) {
        let _ = (
            p.version(),
            p.header_len(),
            p.dscp(),
            p.ecn(),
            p.total_len(),
            p.ident(),
        );
        let _ = (
            p.dont_frag(),
            p.more_frags(),
            p.frag_offset(),
            p.is_fragment(),
        );
        let _ = (p.ttl(), p.protocol(), p.checksum(), p.verify_checksum());
        let _ = (
            p.src_addr(),
            p.dst_addr(),
            p.options(),
            p.payload(),
            p.payload_truncated(),
        );
        assert!(p.payload().len() <= b.len());
    }
    if let Ok(p) = ipv6::Packet::new_checked(b) {
        let _ = (
            p.version(),
            p.traffic_class(),
            p.flow_label(),
            p.payload_len(),
        );
        let _ = (p.next_header(), p.hop_limit(), p.src_addr(), p.dst_addr());
        let _ = (p.payload(), p.payload_truncated());
        if let Ok(u) = p.upper_layer() {
            assert!(u.offset <= b.len());
            let _ = p.bytes_from(u.offset);
        }
    }
    if let Ok(p) = tcp::Packet::new_checked(b) {
        let _ = (p.src_port(), p.dst_port(), p.seq_number(), p.ack_number());
        let _ = (p.data_offset(), p.header_len(), p.flags(), p.window_len());
        let _ = (p.checksum(), p.urgent_at(), p.options(), p.payload());
        assert!(p.header_len() >= tcp::HEADER_LEN && p.header_len() <= b.len());
    }
    if let Ok(p) = udp::Packet::new_checked(b) {
        let _ = (
            p.src_port(),
            p.dst_port(),
            p.len(),
            p.checksum(),
            p.payload(),
        );
    }
    if let Ok(p) = icmp::Packet::new_checked(b) {
        let _ = (
            p.msg_type(),
            p.msg_code(),
            p.checksum(),
            p.echo_ident(),
            p.echo_seq_no(),
        );
        let _ = p.payload();
    }
    if let Ok(p) = sctp::Packet::new_checked(b) {
        let _ = (
            p.src_port(),
            p.dst_port(),
            p.verification_tag(),
            p.checksum(),
            p.chunks(),
        );
    }
}

fn exercise_frame(f: &[u8]) {
    exercise_views(f);
    if let Parsed::Ip(info) = parse_frame(f) {
        let k = info.key;
        let _ = (
            k.addr_a(),
            k.addr_b(),
            k.port_a(),
            k.port_b(),
            k.vlan_ids(),
            k.proto(),
        );
        let _ = symmetric_hash(&k);
        assert!(info.l3_offset <= f.len());
        assert!(k.vlan_ids().len() <= crate::flow::VLAN_DEPTH_MAX);
        if k.is_fragment() {
            assert_eq!((k.port_a(), k.port_b()), (0, 0));
        }
    }
}

/// Ethernet prefixes (with tags / labels) that lead the walk into the random tail.
fn prefixes() -> impl Strategy<Value = &'static [u8]> {
    const ETH_V4: &[u8] = &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 0x08, 0x00];
    const ETH_V6: &[u8] = &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 0x86, 0xdd];
    const VLAN_V4: &[u8] = &[
        0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 0x81, 0x00, 0x00, 0x05, 0x08, 0x00,
    ];
    const QINQ_V6: &[u8] = &[
        0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 0x88, 0xa8, 0x00, 0x05, 0x81, 0x00, 0x00, 0x06, 0x86,
        0xdd,
    ];
    const MPLS: &[u8] = &[
        0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 0x88, 0x47, 0x00, 0x01, 0x01, 0xff,
    ];
    const SNAP: &[u8] = &[
        0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 0x00, 0x40, 0xaa, 0xaa, 0x03, 0, 0, 0, 0x08, 0x00,
    ];
    prop_oneof![
        Just(ETH_V4),
        Just(ETH_V6),
        Just(VLAN_V4),
        Just(QINQ_V6),
        Just(MPLS),
        Just(SNAP)
    ]
}

/// A valid-looking IPv4 header (random addresses, protocol, flags) followed
/// by random bytes, so the L4 paths are reached often.
fn ipv4_packet() -> impl Strategy<Value = std::vec::Vec<u8>> {
    (
        5u8..=15,
        prop_oneof![Just(1u8), Just(6), Just(17), Just(132), any::<u8>()],
        any::<u16>(),
        any::<u16>(),
        vec(any::<u8>(), 0..96),
    )
        .prop_map(|(ihl, proto, total, flags_off, rest)| {
            let mut p = std::vec![0x40 | ihl, 0, 0, 0, 0, 0, 0, 0, 64, proto, 0, 0];
            p[2..4].copy_from_slice(&total.to_be_bytes());
            p[6..8].copy_from_slice(&flags_off.to_be_bytes());
            p.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
            p.extend_from_slice(&rest);
            p
        })
}

/// A valid-looking IPv6 header with a random next header and payload length,
/// followed by random bytes (random extension chains).
fn ipv6_packet() -> impl Strategy<Value = std::vec::Vec<u8>> {
    (
        prop_oneof![
            Just(0u8),
            Just(43),
            Just(44),
            Just(51),
            Just(60),
            Just(6),
            any::<u8>()
        ],
        any::<u16>(),
        vec(any::<u8>(), 0..160),
    )
        .prop_map(|(nh, plen, rest)| {
            let mut p = std::vec![0x60, 0, 0, 0, 0, 0, nh, 64];
            p[4..6].copy_from_slice(&plen.to_be_bytes());
            p.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
            p.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
            p.extend_from_slice(&rest);
            p
        })
}

/// An untagged Ethernet frame that is mostly the fast path's common case
/// (IPv4, 20-byte header, TCP or UDP, consistent lengths) with each field
/// sometimes off by a little: random addresses and ports (both orders),
/// TCP data offsets around 5, UDP lengths around 8, total lengths around
/// the true one, flags and fragment bits now and then, other EtherTypes,
/// versions and header lengths now and then.
fn near_common_ipv4() -> impl Strategy<Value = std::vec::Vec<u8>> {
    (
        prop_oneof![8 => Just(0x0800u16), 1 => Just(0x86dd), 1 => any::<u16>()],
        prop_oneof![8 => Just(0x45u8), 1 => Just(0x46), 1 => any::<u8>()],
        prop_oneof![4 => Just(6u8), 4 => Just(17), 1 => any::<u8>()],
        prop_oneof![6 => Just(0u16), 1 => Just(0x4000), 1 => Just(0x2000), 1 => any::<u16>()],
        (
            any::<[u8; 4]>(),
            any::<[u8; 4]>(),
            any::<u16>(),
            any::<u16>(),
        ),
        prop_oneof![6 => Just(5u8), 1 => 0u8..16],
        vec(any::<u8>(), 0..64),
        (-6i32..6, 0u8..8),
        any::<u16>(),
    )
        .prop_map(
            |(
                etype,
                vihl,
                proto,
                frag,
                (src, dst, sp, dp),
                doff,
                payload,
                (dlen, same),
                udp_len,
            )| {
                // Now and then the same address (and port) at both ends: the
                // canonical order's tie.
                let dst = if same < 2 { src } else { dst };
                let dp = if same == 0 { sp } else { dp };
                let mut f = std::vec![0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
                f.extend_from_slice(&etype.to_be_bytes());
                let mut l4 = std::vec::Vec::new();
                l4.extend_from_slice(&sp.to_be_bytes());
                l4.extend_from_slice(&dp.to_be_bytes());
                if proto == 17 {
                    let real = (8 + payload.len()) as u16;
                    let ul = if udp_len % 4 == 0 { udp_len } else { real };
                    l4.extend_from_slice(&ul.to_be_bytes());
                    l4.extend_from_slice(&[0, 0]);
                } else {
                    l4.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 2]);
                    l4.push(doff << 4);
                    l4.push(payload.first().copied().unwrap_or(0x12));
                    l4.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]);
                }
                l4.extend_from_slice(&payload);
                let total = (20 + l4.len() as i32 + dlen).clamp(0, 0xffff) as u16;
                let mut ip = std::vec![vihl, 0, 0, 0, 0, 0, 0, 0, 64, proto, 0, 0];
                ip[2..4].copy_from_slice(&total.to_be_bytes());
                ip[6..8].copy_from_slice(&frag.to_be_bytes());
                ip.extend_from_slice(&src);
                ip.extend_from_slice(&dst);
                f.extend_from_slice(&ip);
                f.extend_from_slice(&l4);
                f
            },
        )
}

extern crate std;

#[test]
fn the_fast_path_takes_the_common_frame() {
    // TCP 10.0.0.2:80 -> 10.0.0.1:1234, 20-byte header, 4 payload bytes.
    let mut f = std::vec![0u8; 12];
    f.extend_from_slice(&[0x08, 0x00, 0x45, 0, 0, 44, 0, 0, 0x40, 0, 64, 6, 0, 0]);
    f.extend_from_slice(&[10, 0, 0, 2, 10, 0, 0, 1]);
    f.extend_from_slice(&[
        0, 80, 0x04, 0xd2, 0, 0, 0, 1, 0, 0, 0, 2, 0x50, 0x18, 0xff, 0xff,
    ]);
    f.extend_from_slice(&[0, 0, 0, 0, b'G', b'E', b'T', b' ']);
    let fast = parse_common_ipv4(&f, true).expect("the fast path takes it");
    assert_eq!(fast, parse_frame_full_walk(&f));
    let Parsed::Ip(info) = fast else {
        panic!("not IP")
    };
    assert!(!info.a_to_b, "10.0.0.2 > 10.0.0.1: b -> a");
    assert_eq!((info.key.port_a(), info.key.port_b()), (1234, 80));
    assert_eq!(info.payload.bytes, *b"GET ");
    // A VLAN tag, an IP option or a fragment bit leaves it to the full walk.
    let mut frag = f.clone();
    frag[20] = 0x20;
    assert!(parse_common_ipv4(&frag, true).is_none());
    let mut opt = f.clone();
    opt[14] = 0x46;
    assert!(parse_common_ipv4(&opt, true).is_none());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn random_bytes(f in vec(any::<u8>(), 0..256)) {
        exercise_frame(&f);
    }

    #[test]
    fn random_bytes_behind_a_prefix(prefix in prefixes(), tail in vec(any::<u8>(), 0..200)) {
        let mut f = prefix.to_vec();
        f.extend_from_slice(&tail);
        exercise_frame(&f);
        // Every cut of it too.
        for cut in [0, 1, 13, 14, 17, 18, 21, 22, 33, 34, 41, 53, 54, 61] {
            if cut <= f.len() {
                exercise_frame(&f[..cut]);
            }
        }
    }

    #[test]
    fn plausible_ipv4(prefix in prefixes(), pkt in ipv4_packet(), cut in any::<usize>()) {
        let mut f = prefix.to_vec();
        f.extend_from_slice(&pkt);
        exercise_frame(&f);
        exercise_frame(&f[..cut % (f.len() + 1)]);
        exercise_views(&pkt);
    }

    #[test]
    fn plausible_ipv6(pkt in ipv6_packet(), cut in any::<usize>()) {
        let mut f = std::vec![0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 0x86, 0xdd];
        f.extend_from_slice(&pkt);
        exercise_frame(&f);
        exercise_frame(&f[..cut % (f.len() + 1)]);
        exercise_views(&pkt);
    }

    /// The fast path (issue 19) gives exactly what the full walk gives, for
    /// the frames it takes and every cut of them (that it takes the common
    /// frame at all is `the_fast_path_takes_the_common_frame`).
    #[test]
    fn fast_path_equals_the_full_walk(f in near_common_ipv4(), cut in any::<usize>()) {
        for g in [&f[..], &f[..cut % (f.len() + 1)]] {
            prop_assert_eq!(parse_frame(g), parse_frame_full_walk(g));
            if let Some(p) = parse_common_ipv4(g, true) {
                prop_assert_eq!(p, parse_frame_full_walk(g));
            }
            if let Some(c) = crate::flow::parse_common(g) {
                let Parsed::Ip(info) = parse_frame_full_walk(g) else {
                    panic!("parse_common took a frame the walk does not call IP");
                };
                prop_assert_eq!(c.key(), info.key);
                prop_assert_eq!((c.a_to_b, c.tcp_flags, c.payload), (info.a_to_b, info.tcp_flags, info.payload));
            } else {
                prop_assert!(parse_common_ipv4(g, true).is_none());
            }
            if let Some(p) = parse_common_ipv4(g, false) {
                let mut full = parse_frame_full_walk(g);
                if let Parsed::Ip(info) = &mut full {
                    info.payload = crate::applabel::PayloadHead::NONE;
                }
                prop_assert_eq!(p, full);
            }
        }
    }

    #[test]
    fn both_directions_share_a_key(pkt in ipv4_packet()) {
        let mut f = std::vec![0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 0x08, 0x00];
        f.extend_from_slice(&pkt);
        if let Parsed::Ip(fwd) = parse_frame(&f) {
            // Swap addresses (offsets 26..30 / 30..34) and the first 4 L4 bytes.
            let mut r = f.clone();
            r[26..30].copy_from_slice(&f[30..34]);
            r[30..34].copy_from_slice(&f[26..30]);
            let l4 = fwd.l4_offset;
            if let (Some(a), Some(b)) = (f.get(l4..l4 + 2), f.get(l4 + 2..l4 + 4)) {
                r[l4..l4 + 2].copy_from_slice(b);
                r[l4 + 2..l4 + 4].copy_from_slice(a);
            }
            let Parsed::Ip(rev) = parse_frame(&r) else { panic!("reverse not IP") };
            prop_assert_eq!(fwd.key, rev.key);
            prop_assert_eq!(symmetric_hash(&fwd.key), symmetric_hash(&rev.key));
        }
    }
}

//! `wire`: `flow::parse_frame` and every header view's accessors, over
//! arbitrary bytes. The contract under test: nothing panics, checked or not,
//! and the offsets `parse_frame` reports lie inside the frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use linecap_wire::flow::{self, Parsed};
use linecap_wire::{ethernet, icmp, ipv4, ipv6, mpls, sctp, tcp, udp, vlan};
use std::hint::black_box;

fn ethernet_view(b: &[u8]) {
    for p in [
        Some(ethernet::Packet::new_unchecked(b)),
        ethernet::Packet::new_checked(b).ok(),
    ]
    .into_iter()
    .flatten()
    {
        black_box((p.dst_addr(), p.src_addr(), p.ethertype(), p.payload()));
        black_box(ethernet::snap_ethertype(p.payload()));
    }
}

fn vlan_view(b: &[u8]) {
    for p in [
        Some(vlan::Packet::new_unchecked(b)),
        vlan::Packet::new_checked(b).ok(),
    ]
    .into_iter()
    .flatten()
    {
        black_box((
            p.tci(),
            p.pcp(),
            p.dei(),
            p.vid(),
            p.ethertype(),
            p.payload(),
        ));
    }
}

fn mpls_view(b: &[u8]) {
    for p in [
        Some(mpls::Packet::new_unchecked(b)),
        mpls::Packet::new_checked(b).ok(),
    ]
    .into_iter()
    .flatten()
    {
        black_box((p.label(), p.tc(), p.bottom_of_stack(), p.ttl(), p.payload()));
    }
}

fn ipv4_view(b: &[u8]) {
    for p in [
        Some(ipv4::Packet::new_unchecked(b)),
        ipv4::Packet::new_checked(b).ok(),
    ]
    .into_iter()
    .flatten()
    {
        black_box((
            p.version(),
            p.header_len(),
            p.dscp(),
            p.ecn(),
            p.total_len(),
        ));
        black_box((p.ident(), p.dont_frag(), p.more_frags(), p.frag_offset()));
        black_box((
            p.is_non_first_fragment(),
            p.is_fragment(),
            p.ttl(),
            p.protocol(),
        ));
        black_box((
            p.checksum(),
            p.verify_checksum(),
            p.src_addr(),
            p.dst_addr(),
        ));
        black_box((p.src_bytes(), p.dst_bytes(), p.options(), p.payload()));
        black_box(p.payload_truncated());
    }
}

fn ipv6_view(b: &[u8]) {
    for p in [
        Some(ipv6::Packet::new_unchecked(b)),
        ipv6::Packet::new_checked(b).ok(),
    ]
    .into_iter()
    .flatten()
    {
        black_box((
            p.version(),
            p.traffic_class(),
            p.flow_label(),
            p.payload_len(),
        ));
        black_box((p.next_header(), p.hop_limit(), p.src_addr(), p.dst_addr()));
        black_box((
            p.src_bytes(),
            p.dst_bytes(),
            p.payload(),
            p.payload_truncated(),
        ));
        if let Ok(ul) = p.upper_layer() {
            black_box(ul.is_non_first_fragment());
            l4_views(p.bytes_from(ul.offset));
        }
        black_box(p.bytes_from(b.len()));
        black_box(p.bytes_from(usize::MAX));
    }
}

fn l4_views(b: &[u8]) {
    for p in [
        Some(tcp::Packet::new_unchecked(b)),
        tcp::Packet::new_checked(b).ok(),
    ]
    .into_iter()
    .flatten()
    {
        black_box((p.src_port(), p.dst_port(), p.seq_number(), p.ack_number()));
        black_box((p.data_offset(), p.header_len(), p.flags(), p.fin(), p.syn()));
        black_box((p.rst(), p.psh(), p.ack(), p.urg(), p.ece(), p.cwr()));
        black_box((
            p.window_len(),
            p.checksum(),
            p.urgent_at(),
            p.options(),
            p.payload(),
        ));
    }
    for p in [
        Some(udp::Packet::new_unchecked(b)),
        udp::Packet::new_checked(b).ok(),
    ]
    .into_iter()
    .flatten()
    {
        black_box((
            p.src_port(),
            p.dst_port(),
            p.len(),
            p.checksum(),
            p.payload(),
        ));
    }
    for p in [
        Some(icmp::Packet::new_unchecked(b)),
        icmp::Packet::new_checked(b).ok(),
    ]
    .into_iter()
    .flatten()
    {
        black_box((p.msg_type(), p.msg_code(), p.checksum()));
        black_box((p.echo_ident(), p.echo_seq_no(), p.payload()));
    }
    for p in [
        Some(sctp::Packet::new_unchecked(b)),
        sctp::Packet::new_checked(b).ok(),
    ]
    .into_iter()
    .flatten()
    {
        black_box((
            p.src_port(),
            p.dst_port(),
            p.verification_tag(),
            p.checksum(),
        ));
        black_box(p.chunks());
    }
}

fuzz_target!(|data: &[u8]| {
    match flow::parse_frame(data) {
        Parsed::Ip(info) => {
            assert!(info.l3_offset <= data.len(), "l3_offset past the frame");
            assert!(info.l3_offset <= info.l4_offset, "l4 before l3");
            let k = info.key;
            black_box((k.vlans(), k.vlan_ids(), k.vlan_depth(), k.proto()));
            black_box((
                k.is_fragment(),
                k.family(),
                k.addr_a_bytes(),
                k.addr_b_bytes(),
            ));
            black_box((k.addr_a(), k.addr_b(), k.port_a(), k.port_b()));
            assert_eq!(info.a_to_b || !info.a_to_b, true);
            black_box(flow::symmetric_hash(&k));
            let l3 = &data[info.l3_offset..];
            ipv4_view(l3);
            ipv6_view(l3);
            if let Some(l4) = data.get(info.l4_offset..) {
                l4_views(l4);
            }
        }
        Parsed::NonIp | Parsed::Truncated | Parsed::Malformed => {}
    }
    // Every view over the raw bytes and over every small offset into them
    // (headers start anywhere a tag stack or an option put them).
    for off in [0usize, 12, 14, 18, 22, 34, 54] {
        let b = data.get(off..).unwrap_or(&[]);
        ethernet_view(b);
        vlan_view(b);
        mpls_view(b);
        ipv4_view(b);
        ipv6_view(b);
        l4_views(b);
    }
});

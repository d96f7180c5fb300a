//! `wire::erf`: the record view over arbitrary bytes, walked as a stream of
//! records the way a reader walks a file. Nothing may panic, and a record
//! that parses must lie within the buffer with its frame inside it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use linecap_wire::erf::{self, Record, record_type};
use std::hint::black_box;

fuzz_target!(|data: &[u8]| {
    let mut at = 0usize;
    // Bounded: each step consumes at least HEADER_LEN bytes.
    while at < data.len() {
        let buf = &data[at..];
        if let Ok(h) = Record::parse_header(buf) {
            black_box((h.ts_ns(), h.payload_offset(), erf::ts_to_ns(h.ts)));
            assert!(h.rlen as usize >= erf::HEADER_LEN);
            assert!(
                h.payload_offset() <= h.rlen as usize,
                "extension headers past rlen"
            );
        }
        match Record::new_checked(buf) {
            Ok(rec) => {
                let h = *rec.header();
                assert_eq!(rec.bytes().len(), h.rlen as usize);
                black_box(rec.wire_len());
                if let Some(frame) = rec.eth_frame() {
                    assert!(record_type::is_ethernet(h.rtype));
                    assert!(frame.len() <= rec.bytes().len());
                    assert!(frame.len() <= rec.wire_len() as usize);
                }
                // Round trip of the time stamp conversion on whatever is there.
                let ns = erf::ts_to_ns(h.ts);
                black_box(erf::ns_to_ts(ns));
                at += h.rlen as usize;
            }
            Err(_) => break,
        }
    }
    // The writer side: a header written for any lengths parses back.
    if data.len() >= 12 {
        let ts_ns = u64::from_le_bytes(data[0..8].try_into().unwrap_or([0; 8]));
        let frame_len = u16::from_le_bytes([data[8], data[9]]) as usize % (erf::FRAME_MAX + 1);
        let wire_len = u16::from_le_bytes([data[10], data[11]]) as u32;
        let mut rec = vec![0u8; erf::ETH_RECORD_OVERHEAD + frame_len];
        erf::write_eth_header(
            &mut rec,
            ts_ns,
            0,
            0,
            frame_len,
            wire_len.max(frame_len as u32),
            0,
        );
        let r = Record::new_checked(&rec).expect("a record linecap writes must parse");
        // Exact up to the last second ERF holds (2^32 - 1), saturated past it.
        const LAST_NS: u64 = u32::MAX as u64 * 1_000_000_000 + 999_999_999;
        if ts_ns <= LAST_NS {
            assert_eq!(r.header().ts_ns(), ts_ns, "time stamp round trip");
        } else {
            assert!(
                r.header().ts_ns() >= LAST_NS,
                "a time past 2106 must saturate"
            );
        }
    }
});

//! `linecap_flowexport::ipfix::Encoder` round trip: arbitrary flow records (IPv4 and
//! IPv6, either orientation, any counters and times), any MTU, domain and
//! template refresh, encoded in one to three calls at increasing export
//! times, then decoded by the independent decoder below. Asserted:
//!
//! * every message: version 10, its length field equals its size and stays
//!   within the MTU (at least 512, at most 65535), the export time and the
//!   domain are the ones given, the sequence number counts the data records
//!   sent before it, and it carries at least one set;
//! * every set: a length of at least 4 that ends inside the message; a data
//!   set holds a whole number of records (no padding, no empty set), of a
//!   template announced before it;
//! * the templates: the 22 fields of the module's table, sent in the first
//!   message and again exactly when the refresh interval has passed;
//! * the records decode, in order, to the values of the records given.
#![no_main]

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use linecap_flowexport::ipfix::{Encoder, REVERSE_PEN, TEMPLATE_V4, TEMPLATE_V6};
use linecap_dataplane::flowtable::{EndReason, FlowRecord};
use linecap_wire::flow::{FlowKey, IpFamily, VlanStack};
use std::collections::HashMap;

const NTP_UNIX_OFFSET_S: u64 = 2_208_988_800;

fn record(u: &mut Unstructured) -> Result<FlowRecord> {
    let family = if u.arbitrary::<bool>()? {
        IpFamily::V6
    } else {
        IpFamily::V4
    };
    let mut a: [u8; 16] = u.arbitrary()?;
    let mut b: [u8; 16] = u.arbitrary()?;
    if family == IpFamily::V4 {
        // As the packet parser stores them: the address, then zeros.
        a[4..].fill(0);
        b[4..].fill(0);
    }
    let mut vlans = VlanStack::new();
    for _ in 0..u.int_in_range(0..=4u8)? {
        vlans.push(u.arbitrary()?);
    }
    let is_fragment: bool = u.arbitrary()?;
    let (sp, dp) = if is_fragment {
        (0, 0)
    } else {
        (u.arbitrary()?, u.arbitrary()?)
    };
    let (key, _) =
        FlowKey::from_endpoints(vlans, u.arbitrary()?, is_fragment, family, a, sp, b, dp);
    let end_reason = match u.int_in_range(0..=4u8)? {
        0 => EndReason::Idle,
        1 => EndReason::Active,
        2 => EndReason::EndOfFlow,
        3 => EndReason::EndOfInput,
        _ => EndReason::Evicted,
    };
    Ok(FlowRecord {
        key,
        first_ns: u.arbitrary()?,
        last_ns: u.arbitrary()?,
        packets: u.arbitrary()?,
        bytes: u.arbitrary()?,
        captured_bytes: u.arbitrary()?,
        tcp_flags: u.arbitrary()?,
        a_initiated: u.arbitrary()?,
        end_reason,
        first_payload: Default::default(),
    })
}

/// A template field: (IE id without the enterprise bit, length, PEN).
type Field = (u16, u16, u32);

fn expected_template(family: IpFamily) -> Vec<Field> {
    let (src, dst, alen) = match family {
        IpFamily::V4 => (8, 12, 4),
        IpFamily::V6 => (27, 28, 16),
    };
    let r = REVERSE_PEN;
    vec![
        (src, alen, 0),
        (dst, alen, 0),
        (7, 2, 0),
        (11, 2, 0),
        (4, 1, 0),
        (58, 2, 0),
        (152, 8, 0),
        (153, 8, 0),
        (156, 8, 0),
        (157, 8, 0),
        (2, 8, 0),
        (1, 8, 0),
        (2, 8, r),
        (1, 8, r),
        (6, 2, 0),
        (6, 2, r),
        (136, 1, 0),
        (239, 1, 0),
        (305, 4, 0),
        (311, 8, 0),
        (95, 3, 0),
        (96, 24, 0),
    ]
}

fn be(b: &[u8]) -> u64 {
    assert!(b.len() <= 8);
    b.iter().fold(0, |a, &x| (a << 8) | u64::from(x))
}

/// Check one decoded record (its fields in template order) against `r`,
/// exported with `sampling` = (samplingPacketInterval, samplingProbability).
fn check_record(r: &FlowRecord, fields: &[Field], vals: &[&[u8]], sampling: (u32, f64)) {
    let k = &r.key;
    let (src, dst, sp, dp, fwd, rev) = if r.a_initiated {
        (
            k.addr_a_bytes(),
            k.addr_b_bytes(),
            k.port_a(),
            k.port_b(),
            0,
            1,
        )
    } else {
        (
            k.addr_b_bytes(),
            k.addr_a_bytes(),
            k.port_b(),
            k.port_a(),
            1,
            0,
        )
    };
    let alen = match k.family() {
        IpFamily::V4 => 4,
        IpFamily::V6 => 16,
    };
    let get = |id: u16, pen: u32| -> &[u8] {
        let i = fields
            .iter()
            .position(|f| f.0 == id && f.2 == pen)
            .unwrap_or_else(|| panic!("field {pen}/{id} missing"));
        vals[i]
    };
    let (sid, did) = if alen == 4 { (8, 12) } else { (27, 28) };
    assert_eq!(get(sid, 0), &src[..alen], "source address");
    assert_eq!(get(did, 0), &dst[..alen], "destination address");
    assert_eq!(be(get(7, 0)), u64::from(sp), "source port");
    assert_eq!(be(get(11, 0)), u64::from(dp), "destination port");
    assert_eq!(be(get(4, 0)), u64::from(k.proto()), "protocol");
    let vlan = k.vlan_ids().first().copied().unwrap_or(0);
    assert_eq!(be(get(58, 0)), u64::from(vlan), "vlanId");
    assert_eq!(
        be(get(152, 0)),
        r.first_ns / 1_000_000,
        "flowStartMilliseconds"
    );
    assert_eq!(
        be(get(153, 0)),
        r.last_ns / 1_000_000,
        "flowEndMilliseconds"
    );
    for (id, ns) in [(156, r.first_ns), (157, r.last_ns)] {
        // NTP format: seconds since 1900 (mod 2^32, the NTP era), and a
        // binary fraction that must come back to the ns within 1 ns.
        let v = be(get(id, 0));
        let secs = (ns / 1_000_000_000 + NTP_UNIX_OFFSET_S) & 0xffff_ffff;
        assert_eq!(v >> 32, secs, "IE {id}: NTP seconds");
        let frac_ns = ((v & 0xffff_ffff) * 1_000_000_000) >> 32;
        let want = ns % 1_000_000_000;
        assert!(
            frac_ns <= want && want - frac_ns <= 1,
            "IE {id}: NTP fraction {frac_ns} ns for {want} ns"
        );
    }
    assert_eq!(be(get(2, 0)), r.packets[fwd], "packetDeltaCount");
    assert_eq!(be(get(1, 0)), r.bytes[fwd], "octetDeltaCount");
    assert_eq!(be(get(2, REVERSE_PEN)), r.packets[rev], "reverse packets");
    assert_eq!(be(get(1, REVERSE_PEN)), r.bytes[rev], "reverse octets");
    assert_eq!(be(get(6, 0)), u64::from(r.tcp_flags[fwd]), "tcpControlBits");
    assert_eq!(
        be(get(6, REVERSE_PEN)),
        u64::from(r.tcp_flags[rev]),
        "reverse tcp flags"
    );
    assert_eq!(be(get(136, 0)), r.end_reason as u64, "flowEndReason");
    assert_eq!(be(get(239, 0)), 1, "biflowDirection");
    assert_eq!(be(get(305, 0)), u64::from(sampling.0), "samplingPacketInterval");
    assert_eq!(
        f64::from_bits(be(get(311, 0))).to_bits(),
        sampling.1.to_bits(),
        "samplingProbability"
    );
}

struct Decoder<'a> {
    templates: HashMap<u16, Vec<Field>>,
    /// The records given, checked in order as they are decoded.
    expect: &'a [FlowRecord],
    /// Data records decoded so far.
    decoded: usize,
    /// What every record must say of its sampling.
    sampling: (u32, f64),
}

impl Decoder<'_> {
    /// Decode one message; returns whether it carried a template set.
    fn message(&mut self, m: &[u8], mtu: usize, time: u32, domain: u32, seq: u32) -> bool {
        assert!(m.len() >= 16, "message shorter than its header");
        assert!(
            m.len() <= mtu,
            "message of {} bytes over the MTU {mtu}",
            m.len()
        );
        assert_eq!(be(&m[0..2]), 10, "version");
        assert_eq!(be(&m[2..4]) as usize, m.len(), "message length field");
        assert_eq!(be(&m[4..8]), u64::from(time), "export time");
        assert_eq!(be(&m[8..12]), u64::from(seq), "sequence number");
        assert_eq!(be(&m[12..16]), u64::from(domain), "observation domain");
        assert!(m.len() > 16, "a message without sets");
        let mut at = 16;
        let mut templates = false;
        while at < m.len() {
            assert!(at + 4 <= m.len(), "set header past the message end");
            let id = be(&m[at..at + 2]) as u16;
            let len = be(&m[at + 2..at + 4]) as usize;
            assert!(len >= 4 && at + len <= m.len(), "set length {len} at {at}");
            let body = &m[at + 4..at + len];
            if id == 2 {
                assert!(!templates, "two template sets in one message");
                templates = true;
                let mut p = 0;
                while p < body.len() {
                    assert!(p + 4 <= body.len(), "template header cut");
                    let tid = be(&body[p..p + 2]) as u16;
                    let n = be(&body[p + 2..p + 4]) as usize;
                    p += 4;
                    let mut fs = Vec::new();
                    for _ in 0..n {
                        assert!(p + 4 <= body.len(), "template field cut");
                        let ie = be(&body[p..p + 2]) as u16;
                        let flen = be(&body[p + 2..p + 4]) as u16;
                        p += 4;
                        let pen = if ie & 0x8000 != 0 {
                            assert!(p + 4 <= body.len(), "enterprise number cut");
                            p += 4;
                            be(&body[p - 4..p]) as u32
                        } else {
                            0
                        };
                        fs.push((ie & 0x7fff, flen, pen));
                    }
                    let family = match tid {
                        TEMPLATE_V4 => IpFamily::V4,
                        TEMPLATE_V6 => IpFamily::V6,
                        other => panic!("unexpected template id {other}"),
                    };
                    assert_eq!(fs, expected_template(family), "template {tid}");
                    self.templates.insert(tid, fs);
                }
            } else {
                assert!(id == TEMPLATE_V4 || id == TEMPLATE_V6, "set id {id}");
                let t = self
                    .templates
                    .get(&id)
                    .expect("data set before its template");
                let rlen: usize = t.iter().map(|f| usize::from(f.1)).sum();
                assert!(!body.is_empty(), "an empty data set");
                assert_eq!(
                    body.len() % rlen,
                    0,
                    "a data set with padding or a cut record"
                );
                for rec in body.chunks(rlen) {
                    let mut vals = [&[][..]; 22];
                    assert_eq!(t.len(), vals.len(), "template length");
                    let mut p = 0;
                    for (v, f) in vals.iter_mut().zip(t) {
                        *v = &rec[p..p + usize::from(f.1)];
                        p += usize::from(f.1);
                    }
                    let r = self
                        .expect
                        .get(self.decoded)
                        .expect("more records than given");
                    let want = match r.key.family() {
                        IpFamily::V4 => TEMPLATE_V4,
                        IpFamily::V6 => TEMPLATE_V6,
                    };
                    assert_eq!(id, want, "template of record {}", self.decoded);
                    check_record(r, t, &vals, self.sampling);
                    self.decoded += 1;
                }
            }
            at += len;
        }
        templates
    }
}

fn run(u: &mut Unstructured) -> Result<()> {
    let domain: u32 = u.arbitrary()?;
    // Below 512 the encoder raises the MTU to 512; above 65535 a message
    // length no longer fits its 16-bit field.
    let mtu: usize = u.int_in_range(0..=70_000)?;
    let refresh: u32 = u.arbitrary()?;
    // Mostly a few records (fast); one input in 8 up to 1000, enough for a
    // message of 65535 bytes.
    let n = if u.ratio(1, 8)? {
        u.int_in_range(0..=1_000usize)?
    } else {
        u.int_in_range(0..=64usize)?
    };
    let calls = u.int_in_range(1..=3usize)?;
    let mut times = Vec::new();
    let mut t: u32 = u.arbitrary()?;
    for _ in 0..calls {
        times.push(t);
        t = t.saturating_add(u.int_in_range(0..=200)?);
    }
    let cuts: Vec<usize> = (0..calls - 1)
        .map(|_| u.int_in_range(0..=n))
        .collect::<Result<_>>()?;
    let mut recs = Vec::with_capacity(n);
    for _ in 0..n {
        recs.push(record(u)?);
    }
    let mut bounds = cuts;
    bounds.sort_unstable();
    bounds.insert(0, 0);
    bounds.push(n);

    // Any rate, including nonsense (0, negative, NaN, above 1): the encoder
    // reports unsampled (1, 1.0) for what is not in (0, 1], and otherwise
    // the rate with its rounded interval.
    let rate: f64 = u.arbitrary()?;
    let sampling = if rate.is_finite() && rate > 0.0 {
        let p = rate.min(1.0);
        ((1.0 / p).round().clamp(1.0, u32::MAX as f64) as u32, p)
    } else {
        (1, 1.0)
    };
    let max_len = mtu.clamp(512, 65_535);
    let mut enc = Encoder::new(domain, mtu, refresh).with_sampling(rate);
    let mut dec = Decoder {
        templates: HashMap::new(),
        expect: &recs,
        decoded: 0,
        sampling,
    };
    let mut seq: u32 = 0;
    let mut messages = 0u64;
    let mut last_templates: Option<u32> = None;
    for (c, &time) in times.iter().enumerate() {
        let batch = &recs[bounds[c]..bounds[c + 1]];
        let mut msgs: Vec<Vec<u8>> = Vec::new();
        enc.encode(time, batch, &mut |m| msgs.push(m.to_vec()));
        let due = last_templates.is_none_or(|l| time.saturating_sub(l) >= refresh);
        assert!(
            !msgs.is_empty() || (batch.is_empty() && !due),
            "nothing emitted"
        );
        for (i, m) in msgs.iter().enumerate() {
            let before = dec.decoded;
            let with_templates = dec.message(m, max_len, time, domain, seq);
            assert_eq!(with_templates, due && i == 0, "template set in message {i}");
            seq = seq.wrapping_add((dec.decoded - before) as u32);
            messages += 1;
        }
        if due {
            last_templates = Some(time);
        }
    }
    assert_eq!(enc.messages, messages, "message count");
    assert_eq!(dec.decoded, recs.len(), "records decoded");
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});

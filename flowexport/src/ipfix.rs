//! IPFIX (RFC 7011) encoding of bidirectional flow records (RFC 5103).
//!
//! Two templates: 256 for IPv4 flows, 257 for IPv6 flows. The record is
//! oriented from the flow's initiator ("source" = the side that sent the
//! first packet, `biflowDirection` = 1 initiator); the forward counters are
//! initiator → responder and the reverse ones, the same Information Elements
//! with the enterprise bit set and Private Enterprise Number 29305 (RFC 5103
//! reverse information elements), are responder → initiator.
//!
//! | IE | id | bytes |
//! |---|---:|---:|
//! | sourceIPv4Address / sourceIPv6Address | 8 / 27 | 4 / 16 |
//! | destinationIPv4Address / destinationIPv6Address | 12 / 28 | 4 / 16 |
//! | sourceTransportPort, destinationTransportPort | 7, 11 | 2, 2 |
//! | protocolIdentifier | 4 | 1 |
//! | vlanId (outermost tag, 0 if none) | 58 | 2 |
//! | flowStartMilliseconds, flowEndMilliseconds | 152, 153 | 8, 8 |
//! | flowStartNanoseconds, flowEndNanoseconds (NTP format) | 156, 157 | 8, 8 |
//! | packetDeltaCount, octetDeltaCount | 2, 1 | 8, 8 |
//! | reverse packetDeltaCount, reverse octetDeltaCount | 29305/2, 29305/1 | 8, 8 |
//! | tcpControlBits, reverse tcpControlBits | 6, 29305/6 | 2, 2 |
//! | flowEndReason | 136 | 1 |
//! | biflowDirection | 239 | 1 |
//! | samplingPacketInterval (1 = every packet; N for 1-in-N, 1/p rounded for random) | 305 | 4 |
//! | samplingProbability (the fraction of packets or flows kept) | 311 | 8 |
//! | applicationId (RFC 6759: engine id + 2-byte selector; see below) | 95 | 3 |
//! | applicationName (UTF-8, NUL-padded) | 96 | 24 |
//!
//! Application labels (`docs/applabel.md`): `applicationId` is the
//! classification engine id then the selector: engine 6 (USER-Defined) with
//! linecap's application id from `wire/src/applabel/rules.txt` for labels
//! reached by payload or IP protocol, engine 3 (IANA-L4) with the port for
//! port-only guesses, and all zeros (engine 0, invalid) for unknown flows,
//! whose `applicationName` is empty.
//!
//! The sampling fields carry the capture job's policy (the flow table sees
//! the packets the first job keeps), so a collector can scale the counts:
//! a flow-consistent policy keeps whole flows, so its counts need no
//! scaling per flow, only the number of flows does.
//! Octets are wire bytes in the flow table's convention. The template set
//! opens the first message and is re-sent every `template_refresh_s` seconds
//! of export time (UDP collectors that start late learn it then).
//! Messages stay under `mtu` bytes, and under 65535 (the most a message's
//! 16-bit length field can say) whatever the `mtu`.

use linecap_dataplane::flowtable::{A_TO_B, B_TO_A, FlowRecord};
use linecap_wire::applabel::{Label, Method, engine};
use linecap_wire::flow::IpFamily;

/// Template id of IPv4 flow records.
pub const TEMPLATE_V4: u16 = 256;
/// Template id of IPv6 flow records.
pub const TEMPLATE_V6: u16 = 257;
/// RFC 5103 reverse information element PEN.
pub const REVERSE_PEN: u32 = 29305;
const ENTERPRISE_BIT: u16 = 0x8000;
const HEADER_LEN: usize = 16;
/// The largest message: its length field has 16 bits.
const MESSAGE_MAX: usize = u16::MAX as usize;
/// Seconds between 1900-01-01 (NTP era 0) and 1970-01-01.
const NTP_UNIX_OFFSET_S: u64 = 2_208_988_800;
/// Octets of the fixed-length `applicationName` field.
pub const APP_NAME_LEN: usize = 24;

/// (IE id, length, reverse) of the template, with the address IEs of `family`.
fn fields(family: IpFamily) -> [(u16, u16, bool); 22] {
    let (src, dst, alen) = match family {
        IpFamily::V4 => (8, 12, 4),
        IpFamily::V6 => (27, 28, 16),
    };
    [
        (src, alen, false),
        (dst, alen, false),
        (7, 2, false),
        (11, 2, false),
        (4, 1, false),
        (58, 2, false),
        (152, 8, false),
        (153, 8, false),
        (156, 8, false),
        (157, 8, false),
        (2, 8, false),
        (1, 8, false),
        (2, 8, true),
        (1, 8, true),
        (6, 2, false),
        (6, 2, true),
        (136, 1, false),
        (239, 1, false),
        (305, 4, false),
        (311, 8, false),
        (95, 3, false),
        (96, APP_NAME_LEN as u16, false),
    ]
}

/// Bytes of one data record of `family`.
pub fn record_len(family: IpFamily) -> usize {
    fields(family).iter().map(|f| usize::from(f.1)).sum()
}

/// ns since the Unix epoch → IPFIX dateTimeNanoseconds (NTP 64-bit format).
pub fn ntp_time(ns: u64) -> u64 {
    let secs = ns / 1_000_000_000 + NTP_UNIX_OFFSET_S;
    let frac = ((ns % 1_000_000_000) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

/// The `applicationId` (IE 95) and `applicationName` (IE 96) octets of a
/// label (see the module documentation).
pub fn application_fields(l: &Label) -> ([u8; 3], [u8; APP_NAME_LEN]) {
    let mut id = [0u8; 3];
    let mut name = [0u8; APP_NAME_LEN];
    match l.method {
        Method::Unknown => {}
        Method::Port => id = [engine::IANA_L4, (l.selector >> 8) as u8, l.selector as u8],
        Method::Payload | Method::Proto => {
            id = [engine::USER_DEFINED, (l.app >> 8) as u8, l.app as u8]
        }
    }
    if l.is_known() {
        for (d, s) in name.iter_mut().zip(l.name.bytes()) {
            *d = s;
        }
    }
    (id, name)
}

/// Encodes flow records into IPFIX messages.
pub struct Encoder {
    domain_id: u32,
    mtu: usize,
    template_refresh_s: u32,
    /// Export time the templates were last sent (`None`: never).
    templates_sent_s: Option<u32>,
    /// Data records sent so far (the header's sequence number).
    sequence: u32,
    /// Messages encoded so far.
    pub messages: u64,
    /// (samplingPacketInterval, samplingProbability) of every record.
    sampling: (u32, f64),
}

impl Encoder {
    /// An encoder for observation domain `domain_id`; messages of at most
    /// `mtu` bytes (taken as 512 below 512, as 65535 above 65535).
    pub fn new(domain_id: u32, mtu: usize, template_refresh_s: u32) -> Self {
        Encoder {
            domain_id,
            mtu: mtu.clamp(512, MESSAGE_MAX),
            template_refresh_s,
            templates_sent_s: None,
            sequence: 0,
            messages: 0,
            sampling: (1, 1.0),
        }
    }

    /// Records describe flows seen through sampling that kept `rate` (0 <
    /// rate <= 1) of the packets or flows.
    pub fn with_sampling(mut self, rate: f64) -> Self {
        let rate = if rate.is_finite() && rate > 0.0 {
            rate.min(1.0)
        } else {
            1.0
        };
        let interval = (1.0 / rate).round().clamp(1.0, u32::MAX as f64) as u32;
        self.sampling = (interval, rate);
        self
    }

    fn template_set(out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&2u16.to_be_bytes()); // template set
        out.extend_from_slice(&0u16.to_be_bytes()); // length, patched below
        for (id, family) in [(TEMPLATE_V4, IpFamily::V4), (TEMPLATE_V6, IpFamily::V6)] {
            let f = fields(family);
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&(f.len() as u16).to_be_bytes());
            for (ie, len, reverse) in f {
                if reverse {
                    out.extend_from_slice(&(ie | ENTERPRISE_BIT).to_be_bytes());
                    out.extend_from_slice(&len.to_be_bytes());
                    out.extend_from_slice(&REVERSE_PEN.to_be_bytes());
                } else {
                    out.extend_from_slice(&ie.to_be_bytes());
                    out.extend_from_slice(&len.to_be_bytes());
                }
            }
        }
        let len = (out.len() - start) as u16;
        out[start + 2..start + 4].copy_from_slice(&len.to_be_bytes());
    }

    fn data_record(&self, r: &FlowRecord, out: &mut Vec<u8>) {
        let k = &r.key;
        let (src, dst, sp, dp, fwd, rev) = if r.a_initiated {
            (
                k.addr_a_bytes(),
                k.addr_b_bytes(),
                k.port_a(),
                k.port_b(),
                A_TO_B,
                B_TO_A,
            )
        } else {
            (
                k.addr_b_bytes(),
                k.addr_a_bytes(),
                k.port_b(),
                k.port_a(),
                B_TO_A,
                A_TO_B,
            )
        };
        let alen = match k.family() {
            IpFamily::V4 => 4,
            IpFamily::V6 => 16,
        };
        out.extend_from_slice(&src[..alen]);
        out.extend_from_slice(&dst[..alen]);
        out.extend_from_slice(&sp.to_be_bytes());
        out.extend_from_slice(&dp.to_be_bytes());
        out.push(k.proto());
        out.extend_from_slice(&k.vlan_ids().first().copied().unwrap_or(0).to_be_bytes());
        out.extend_from_slice(&(r.first_ns / 1_000_000).to_be_bytes());
        out.extend_from_slice(&(r.last_ns / 1_000_000).to_be_bytes());
        out.extend_from_slice(&ntp_time(r.first_ns).to_be_bytes());
        out.extend_from_slice(&ntp_time(r.last_ns).to_be_bytes());
        out.extend_from_slice(&r.packets[fwd].to_be_bytes());
        out.extend_from_slice(&r.bytes[fwd].to_be_bytes());
        out.extend_from_slice(&r.packets[rev].to_be_bytes());
        out.extend_from_slice(&r.bytes[rev].to_be_bytes());
        out.extend_from_slice(&u16::from(r.tcp_flags[fwd]).to_be_bytes());
        out.extend_from_slice(&u16::from(r.tcp_flags[rev]).to_be_bytes());
        out.push(r.end_reason as u8);
        out.push(1); // biflowDirection: initiator
        out.extend_from_slice(&self.sampling.0.to_be_bytes());
        out.extend_from_slice(&self.sampling.1.to_bits().to_be_bytes());
        let (id, name) = application_fields(&linecap_dataplane::applabel::label(r));
        out.extend_from_slice(&id);
        out.extend_from_slice(&name);
    }

    /// Encode `records` as one or more messages with export time
    /// `export_time_s`; each message is passed to `emit`.
    pub fn encode(
        &mut self,
        export_time_s: u32,
        records: &[FlowRecord],
        emit: &mut dyn FnMut(&[u8]),
    ) {
        let mut msg = Vec::with_capacity(self.mtu);
        let mut i = 0;
        let templates_due = self
            .templates_sent_s
            .is_none_or(|t| export_time_s.saturating_sub(t) >= self.template_refresh_s);
        let mut with_templates = templates_due;
        while i < records.len() || with_templates {
            msg.clear();
            msg.resize(HEADER_LEN, 0);
            if with_templates {
                Self::template_set(&mut msg);
                self.templates_sent_s = Some(export_time_s);
                with_templates = false;
            }
            let first_seq = self.sequence;
            // Data sets: runs of records of one family.
            while let Some(r) = records.get(i) {
                let family = r.key.family();
                let rlen = record_len(family);
                if msg.len() + 4 + rlen > self.mtu {
                    break;
                }
                let set_start = msg.len();
                let id = match family {
                    IpFamily::V4 => TEMPLATE_V4,
                    IpFamily::V6 => TEMPLATE_V6,
                };
                msg.extend_from_slice(&id.to_be_bytes());
                msg.extend_from_slice(&0u16.to_be_bytes());
                while let Some(r) = records.get(i) {
                    if r.key.family() != family || msg.len() + rlen > self.mtu {
                        break;
                    }
                    self.data_record(r, &mut msg);
                    self.sequence = self.sequence.wrapping_add(1);
                    i += 1;
                }
                let len = (msg.len() - set_start) as u16;
                msg[set_start + 2..set_start + 4].copy_from_slice(&len.to_be_bytes());
            }
            let len = msg.len() as u16;
            msg[0..2].copy_from_slice(&10u16.to_be_bytes());
            msg[2..4].copy_from_slice(&len.to_be_bytes());
            msg[4..8].copy_from_slice(&export_time_s.to_be_bytes());
            msg[8..12].copy_from_slice(&first_seq.to_be_bytes());
            msg[12..16].copy_from_slice(&self.domain_id.to_be_bytes());
            self.messages += 1;
            emit(&msg);
        }
    }
}

#[cfg(test)]
pub mod decode {
    //! A small IPFIX decoder for the tests: templates and data records.
    use std::collections::HashMap;

    /// One template field.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Field {
        pub id: u16,
        pub len: u16,
        pub pen: u32,
    }

    /// A decoded data record: (template id, [(field, value bytes)]).
    pub type Record = (u16, Vec<(Field, Vec<u8>)>);

    /// Decoded messages: headers (version, length, time, seq, domain) and records.
    #[derive(Default)]
    pub struct Decoder {
        pub templates: HashMap<u16, Vec<Field>>,
        pub headers: Vec<(u16, u16, u32, u32, u32)>,
        pub records: Vec<Record>,
    }

    fn be16(b: &[u8], at: usize) -> u16 {
        u16::from_be_bytes([b[at], b[at + 1]])
    }
    fn be32(b: &[u8], at: usize) -> u32 {
        u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
    }

    impl Decoder {
        /// Decode one message; panics on malformed input.
        pub fn message(&mut self, m: &[u8]) {
            let len = usize::from(be16(m, 2));
            assert_eq!(len, m.len(), "message length");
            self.headers
                .push((be16(m, 0), be16(m, 2), be32(m, 4), be32(m, 8), be32(m, 12)));
            let mut at = 16;
            while at < len {
                let set_id = be16(m, at);
                let set_len = usize::from(be16(m, at + 2));
                assert!(set_len >= 4 && at + set_len <= len, "set length");
                let body = &m[at + 4..at + set_len];
                if set_id == 2 {
                    let mut p = 0;
                    while p + 4 <= body.len() {
                        let tid = be16(body, p);
                        let n = be16(body, p + 2);
                        p += 4;
                        let mut fs = Vec::new();
                        for _ in 0..n {
                            let id = be16(body, p);
                            let flen = be16(body, p + 2);
                            p += 4;
                            let pen = if id & 0x8000 != 0 {
                                p += 4;
                                be32(body, p - 4)
                            } else {
                                0
                            };
                            fs.push(Field {
                                id: id & 0x7fff,
                                len: flen,
                                pen,
                            });
                        }
                        self.templates.insert(tid, fs);
                    }
                } else if set_id >= 256 {
                    let t = self.templates.get(&set_id).expect("data before template");
                    let rlen: usize = t.iter().map(|f| usize::from(f.len)).sum();
                    let mut p = 0;
                    while p + rlen <= body.len() {
                        let mut rec = Vec::new();
                        for f in t {
                            rec.push((*f, body[p..p + usize::from(f.len)].to_vec()));
                            p += usize::from(f.len);
                        }
                        self.records.push((set_id, rec));
                    }
                    assert!(body.len() - p < rlen, "padding longer than a record");
                }
                at += set_len;
            }
        }
    }

    /// A field's value as an unsigned number.
    pub fn num(rec: &Record, id: u16, pen: u32) -> u64 {
        let (_, v) = rec
            .1
            .iter()
            .find(|(f, _)| f.id == id && f.pen == pen)
            .unwrap_or_else(|| panic!("field {pen}/{id} missing"));
        v.iter().fold(0u64, |a, b| (a << 8) | u64::from(*b))
    }

    /// A field's raw bytes.
    pub fn bytes(rec: &Record, id: u16) -> Vec<u8> {
        rec.1
            .iter()
            .find(|(f, _)| f.id == id && f.pen == 0)
            .map(|(_, v)| v.clone())
            .unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::decode::{Decoder, bytes, num};
    use super::*;
    use linecap_dataplane::flowtable::EndReason;
    use linecap_wire::applabel::{FirstPayload, PayloadHead};
    use linecap_wire::flow::{FlowKey, VlanStack};

    fn rec(family: IpFamily, i: u8, a_initiated: bool) -> FlowRecord {
        let mut a = [0u8; 16];
        let mut b = [0u8; 16];
        match family {
            IpFamily::V4 => {
                a[..4].copy_from_slice(&[10, 0, 0, i]);
                b[..4].copy_from_slice(&[192, 168, 0, 1]);
            }
            IpFamily::V6 => {
                a[0] = 0x20;
                a[15] = i;
                b[0] = 0xfe;
                b[15] = 1;
            }
        }
        let mut vlans = VlanStack::new();
        vlans.push(100 + u16::from(i));
        let (key, _) = FlowKey::from_endpoints(vlans, 6, false, family, a, 1000, b, 443);
        FlowRecord {
            key,
            first_ns: 1_700_000_000_123_456_789,
            last_ns: 1_700_000_001_987_654_321,
            packets: [3, 5],
            bytes: [300, 5000],
            captured_bytes: [300, 5000],
            tcp_flags: [0x02 | 0x10, 0x12],
            a_initiated,
            end_reason: EndReason::EndOfFlow,
            first_payload: if i.is_multiple_of(2) {
                // A TLS ClientHello / ServerHello (RFC 8446 s5.1).
                FirstPayload {
                    dir: [
                        PayloadHead::new(517, &[0x16, 3, 1, 2]),
                        PayloadHead::new(1400, &[0x16, 3, 3, 0]),
                    ],
                }
            } else {
                FirstPayload::EMPTY
            },
        }
    }

    #[test]
    fn ntp_times() {
        assert_eq!(ntp_time(0) >> 32, NTP_UNIX_OFFSET_S);
        assert_eq!(ntp_time(500_000_000) & 0xffff_ffff, 1 << 31);
    }

    #[test]
    fn round_trip_through_a_decoder() {
        let mut recs = Vec::new();
        for i in 0..100u8 {
            let fam = if i % 3 == 0 {
                IpFamily::V6
            } else {
                IpFamily::V4
            };
            recs.push(rec(fam, i, i % 2 == 0));
        }
        let mut enc = Encoder::new(7, 1400, 60).with_sampling(0.01);
        let mut msgs: Vec<Vec<u8>> = Vec::new();
        enc.encode(1_700_000_002, &recs, &mut |m| msgs.push(m.to_vec()));
        assert!(msgs.len() > 1, "split at the MTU");
        assert!(msgs.iter().all(|m| m.len() <= 1400));
        let mut d = Decoder::default();
        for m in &msgs {
            d.message(m);
        }
        assert_eq!(d.templates.len(), 2);
        assert_eq!(d.templates[&TEMPLATE_V4].len(), 22);
        assert!(
            d.templates[&TEMPLATE_V6]
                .iter()
                .any(|f| f.id == 2 && f.pen == REVERSE_PEN)
        );
        // Sequence numbers count data records before each message.
        let mut expect = 0;
        for (m, h) in msgs.iter().zip(&d.headers) {
            assert_eq!(h.0, 10);
            assert_eq!(usize::from(h.1), m.len());
            assert_eq!(h.2, 1_700_000_002);
            assert_eq!(h.3, expect);
            assert_eq!(h.4, 7);
            let mut one = Decoder {
                templates: d.templates.clone(),
                ..Default::default()
            };
            one.message(m);
            expect += one.records.len() as u32;
        }
        assert_eq!(d.records.len(), 100);
        for (r, d) in recs.iter().zip(&d.records) {
            let (fwd, rev) = if r.a_initiated { (0, 1) } else { (1, 0) };
            let v4 = r.key.family() == IpFamily::V4;
            assert_eq!(d.0, if v4 { TEMPLATE_V4 } else { TEMPLATE_V6 });
            let src = bytes(d, if v4 { 8 } else { 27 });
            let init = if r.a_initiated {
                r.key.addr_a_bytes()
            } else {
                r.key.addr_b_bytes()
            };
            assert_eq!(src, init[..src.len()]);
            let sport = if r.a_initiated { 1000 } else { 443 };
            assert_eq!(num(d, 7, 0), sport);
            assert_eq!(num(d, 4, 0), 6);
            assert_eq!(num(d, 58, 0), u64::from(r.key.vlan_ids()[0]));
            assert_eq!(num(d, 2, 0), r.packets[fwd]);
            assert_eq!(num(d, 1, 0), r.bytes[fwd]);
            assert_eq!(num(d, 2, REVERSE_PEN), r.packets[rev]);
            assert_eq!(num(d, 1, REVERSE_PEN), r.bytes[rev]);
            assert_eq!(num(d, 6, 0), u64::from(r.tcp_flags[fwd]));
            assert_eq!(num(d, 6, REVERSE_PEN), u64::from(r.tcp_flags[rev]));
            assert_eq!(num(d, 152, 0), r.first_ns / 1_000_000);
            assert_eq!(num(d, 305, 0), 100, "samplingPacketInterval");
            assert_eq!(f64::from_bits(num(d, 311, 0)), 0.01, "samplingProbability");
            assert_eq!(num(d, 153, 0), r.last_ns / 1_000_000);
            assert_eq!(num(d, 156, 0), ntp_time(r.first_ns));
            assert_eq!(num(d, 136, 0), 3);
            assert_eq!(num(d, 239, 0), 1);
            // applicationId / applicationName: TLS by payload (USER-Defined
            // engine 6, linecap id 2) or a port guess on 443 (IANA-L4, 3).
            let mut name = b"TLS".to_vec();
            name.resize(APP_NAME_LEN, 0);
            assert_eq!(bytes(d, 96), name);
            if r.first_payload.dir[0].is_some() {
                assert_eq!(bytes(d, 95), [6, 0, 2]);
            } else {
                assert_eq!(bytes(d, 95), [3, 1, 187]);
            }
        }
    }

    #[test]
    fn every_application_name_fits_its_field() {
        let c = linecap_dataplane::applabel::classifier().unwrap();
        for (_, n) in c.apps() {
            assert!(n.len() <= APP_NAME_LEN, "{n}");
        }
    }

    #[test]
    fn unknown_flows_carry_zero_application_fields() {
        let (id, name) = application_fields(&Label::UNKNOWN);
        assert_eq!(id, [0; 3]);
        assert_eq!(name, [0; APP_NAME_LEN]);
    }

    /// Found by the `ipfix_roundtrip` fuzz target: with an MTU above 65535 a
    /// message grew past 65535 bytes and its 16-bit length field wrapped.
    #[test]
    fn messages_stay_within_the_16_bit_length_field_whatever_the_mtu() {
        let recs: Vec<FlowRecord> = (0..2000)
            .map(|i| rec(IpFamily::V4, i as u8, true))
            .collect();
        for mtu in [65_535, 65_536, 100_000, usize::MAX] {
            let mut enc = Encoder::new(1, mtu, 60);
            let mut msgs: Vec<Vec<u8>> = Vec::new();
            enc.encode(1, &recs, &mut |m| msgs.push(m.to_vec()));
            assert!(msgs.len() >= 2, "{mtu}: split");
            let mut d = Decoder::default();
            for m in &msgs {
                assert!(m.len() <= 65_535, "{mtu}: a message of {} bytes", m.len());
                d.message(m);
            }
            assert_eq!(d.records.len(), recs.len());
        }
    }

    #[test]
    fn templates_are_resent_after_the_refresh_interval() {
        let recs = [rec(IpFamily::V4, 1, true)];
        let mut enc = Encoder::new(1, 1400, 60);
        let mut with_template = Vec::new();
        for t in [100, 120, 159, 160, 161] {
            enc.encode(t, &recs, &mut |m| {
                with_template.push(u16::from_be_bytes([m[16], m[17]]) == 2)
            });
        }
        assert_eq!(with_template, [true, false, false, true, false]);
        // Templates only (no records): one message.
        let mut n = 0;
        let mut enc = Encoder::new(1, 1400, 60);
        enc.encode(5, &[], &mut |_| n += 1);
        assert_eq!(n, 1);
    }
}

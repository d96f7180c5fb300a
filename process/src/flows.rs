//! The `flows` processor: bidirectional flows (pathspider's Observer:
//! one record per flow key while packets keep coming), continued across file
//! boundaries and runs, ended by timeouts on the packet clock:
//!
//! - *idle*: a packet more than `idle` after the flow's last one starts a new
//!   flow, and a sweep once per second of packet time ends every flow idle
//!   for longer than `idle`;
//! - *active*: a packet `active` or more after the flow's first one ends it
//!   and starts a new flow with that packet.
//!
//! TCP FIN/RST do not end a flow (a port reused within the idle timeout
//! continues it), so with timeouts longer than a trace the rows equal the
//! reference flow tables (`shared/reference/flows`, made with tshark).
//! Key, VLAN stack and fragment rules are those of `wire::flow`. Bytes are
//! wire lengths without FCS.
//!
//! Each flow gets an application label (`app`, `app_method`: the compiled-in
//! rules of `wire::applabel`, as `linecap flows` and the live exporters
//! label) from its protocol, ports and first payload head each way, kept with
//! the flow's state; the raw heads are columns too, for relabelling.
//!
//! Each flow gets the `domain` its responder's (else its initiator's) address
//! was resolved from by a DNS response seen earlier on the series and still
//! within its TTL when the flow started (see [`crate::dnsproc`]).

use std::collections::HashMap;
use std::net::IpAddr;

use linecap_wire::applabel::{Classifier, FirstPayload, Label, PayloadHead};
use linecap_wire::flow::{FlowKey, IpFamily, Parsed, VlanStack};
use serde::{Deserialize, Serialize};

use crate::dnsproc::{self, Correlation, Seen};
use crate::{ColType, Column, FileInfo, Processor, Record, Row, SeriesInfo, Settings, col};

const SWEEP_NS: u64 = 1_000_000_000;

/// The `flows` processor.
pub struct Flows {
    s: Settings,
}

impl Flows {
    /// With the timeouts and capacity of `s`.
    pub fn new(s: Settings) -> Flows {
        Flows { s }
    }
}

/// One open flow.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acc {
    /// First packet time.
    pub first_ns: u64,
    /// Last (largest) packet time.
    pub last_ns: u64,
    /// Packets a→b, b→a (the key's orientation).
    pub pkts: [u64; 2],
    /// Bytes a→b, b→a.
    pub bytes: [u64; 2],
    /// Captured bytes a→b, b→a.
    pub cap: [u64; 2],
    /// Whether the key's endpoint a sent the first packet.
    pub a_initiated: bool,
    /// The name the responder's address was resolved from.
    pub domain: Option<String>,
    /// The first payload head a→b, b→a (`len` 0: none yet).
    #[serde(default)]
    pub heads: [Head; 2],
}

/// One direction's first payload head as saved: payload size and the
/// captured first bytes (at most 4).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    /// Payload bytes of that packet (0: no payload seen).
    pub len: u32,
    /// Its captured first bytes.
    pub bytes: Vec<u8>,
}

impl Head {
    fn of(p: &PayloadHead) -> Head {
        Head {
            len: p.len,
            bytes: p.bytes[..usize::from(p.captured).min(4)].to_vec(),
        }
    }

    fn payload_head(&self) -> PayloadHead {
        PayloadHead::new(self.len, &self.bytes)
    }

    fn hex(&self) -> String {
        use std::fmt::Write;
        let mut s = String::with_capacity(8);
        for b in &self.bytes {
            let _ = write!(s, "{b:02x}");
        }
        s
    }
}

/// The compiled-in rules, parsed once per process (a unit test of
/// `wire::applabel` proves they parse; if they did not, flows are `unknown`).
fn classifier() -> Option<&'static Classifier> {
    static C: std::sync::OnceLock<Option<Classifier>> = std::sync::OnceLock::new();
    C.get_or_init(|| Classifier::builtin().ok()).as_ref()
}

/// The flow's label, by the same rule as a live flow record's
/// ([`Classifier::classify_key`]).
fn label(k: &FlowKey, f: &Acc) -> Label {
    let Some(c) = classifier() else {
        return Label::UNKNOWN;
    };
    let fp = FirstPayload {
        dir: [f.heads[0].payload_head(), f.heads[1].payload_head()],
    };
    c.classify_key(k, &fp)
}

/// A flow key as saved.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct SavedKey {
    vlans: Vec<u16>,
    depth: u8,
    proto: u8,
    frag: bool,
    v6: bool,
    a: [u8; 16],
    pa: u16,
    b: [u8; 16],
    pb: u16,
}

impl SavedKey {
    fn of(k: &FlowKey) -> SavedKey {
        SavedKey {
            vlans: k.vlan_ids().to_vec(),
            depth: k.vlan_depth(),
            proto: k.proto(),
            frag: k.is_fragment(),
            v6: k.family() == IpFamily::V6,
            a: *k.addr_a_bytes(),
            pa: k.port_a(),
            b: *k.addr_b_bytes(),
            pb: k.port_b(),
        }
    }

    fn key(&self) -> FlowKey {
        let mut v = VlanStack::new();
        for &id in &self.vlans {
            v.push(id);
        }
        while v.depth() < self.depth {
            v.push(0);
        }
        let fam = if self.v6 { IpFamily::V6 } else { IpFamily::V4 };
        FlowKey::from_endpoints(
            v, self.proto, self.frag, fam, self.a, self.pa, self.b, self.pb,
        )
        .0
    }
}

mod flowmap {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(m: &HashMap<FlowKey, Acc>, s: S) -> Result<S::Ok, S::Error> {
        let mut v: Vec<(SavedKey, &Acc)> = m.iter().map(|(k, a)| (SavedKey::of(k), a)).collect();
        v.sort_by(|x, y| x.0.cmp(&y.0));
        v.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<HashMap<FlowKey, Acc>, D::Error> {
        let v: Vec<(SavedKey, Acc)> = Vec::deserialize(d)?;
        Ok(v.into_iter().map(|(k, a)| (k.key(), a)).collect())
    }
}

/// Totals of rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Rows.
    pub rows: u64,
    /// Packets (both directions).
    pub packets: u64,
    /// Bytes (both directions).
    pub bytes: u64,
}

impl Totals {
    fn add(&mut self, a: &Acc) {
        self.rows += 1;
        self.packets += a.pkts[0] + a.pkts[1];
        self.bytes += a.bytes[0] + a.bytes[1];
    }
}

/// The `flows` state.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FlowsState {
    /// The series' anonymisation context.
    pub context: String,
    /// Open flows.
    #[serde(with = "flowmap")]
    pub open: HashMap<FlowKey, Acc>,
    /// Packet time of the next idle sweep.
    pub next_sweep_ns: u64,
    /// DNS correlation for the `domain` column.
    pub dns: Correlation,
    /// Rows written.
    pub written: Totals,
    /// Flows ended by the idle timeout / the active timeout.
    pub ended_idle: u64,
    /// See `ended_idle`.
    pub ended_active: u64,
    /// Records without an IP header (not in any flow).
    pub non_ip: u64,
    /// IP packets not counted because the flow table was full.
    pub table_full: u64,
}

fn proto_name(k: &FlowKey) -> String {
    if k.is_fragment() {
        return match k.family() {
            IpFamily::V4 => format!("frag:{}", k.proto()),
            IpFamily::V6 => "frag:ipv6".to_string(),
        };
    }
    match k.proto() {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        58 => "icmpv6".into(),
        132 => "sctp".into(),
        p => format!("ipproto{p}"),
    }
}

const COLUMNS: &[Column] = &[
    col("first_ts_ns", ColType::I64),
    col("last_ts_ns", ColType::I64),
    col("context", ColType::Str),
    col("vlans", ColType::Str),
    col("proto", ColType::Str),
    col("addr_a", ColType::Str),
    col("port_a", ColType::I64),
    col("addr_b", ColType::Str),
    col("port_b", ColType::I64),
    col("pkts_a_to_b", ColType::I64),
    col("bytes_a_to_b", ColType::I64),
    col("pkts_b_to_a", ColType::I64),
    col("bytes_b_to_a", ColType::I64),
    col("caplen_a_to_b", ColType::I64),
    col("caplen_b_to_a", ColType::I64),
    col("initiator", ColType::Str),
    col("end_reason", ColType::Str),
    col("domain", ColType::Str),
    col("app", ColType::Str),
    col("app_method", ColType::Str),
    col("first_bytes_a_to_b", ColType::Str),
    col("first_len_a_to_b", ColType::I64),
    col("first_bytes_b_to_a", ColType::Str),
    col("first_len_b_to_a", ColType::I64),
];

/// A row; "a" is the lexically smaller `"addr|port"` (the reference tables' rule).
fn row(context: &str, k: &FlowKey, f: &Acc, reason: &str) -> Row {
    let ea = (k.addr_a().to_string(), k.port_a());
    let eb = (k.addr_b().to_string(), k.port_b());
    let swap = format!("{}|{}", ea.0, ea.1) > format!("{}|{}", eb.0, eb.1);
    let (x, y, d0, d1) = if swap { (eb, ea, 1, 0) } else { (ea, eb, 0, 1) };
    let vlans = if k.vlan_ids().is_empty() {
        "-".to_string()
    } else {
        let v: Vec<String> = k.vlan_ids().iter().map(u16::to_string).collect();
        v.join(".")
    };
    let initiator = if f.a_initiated != swap { "a" } else { "b" };
    let l = label(k, f);
    Row {
        ts_ns: f.first_ns,
        cells: vec![
            f.first_ns.into(),
            f.last_ns.into(),
            context.to_string().into(),
            vlans.into(),
            proto_name(k).into(),
            x.0.into(),
            u64::from(x.1).into(),
            y.0.into(),
            u64::from(y.1).into(),
            f.pkts[d0].into(),
            f.bytes[d0].into(),
            f.pkts[d1].into(),
            f.bytes[d1].into(),
            f.cap[d0].into(),
            f.cap[d1].into(),
            initiator.to_string().into(),
            reason.to_string().into(),
            f.domain.clone().into(),
            l.name.to_string().into(),
            l.method.name().to_string().into(),
            f.heads[d0].hex().into(),
            u64::from(f.heads[d0].len).into(),
            f.heads[d1].hex().into(),
            u64::from(f.heads[d1].len).into(),
        ],
    }
}

impl Flows {
    fn start(&self, st: &FlowsState, k: &FlowKey, a_to_b: bool, ts: u64) -> Acc {
        let (src, dst) = if a_to_b {
            (k.addr_a(), k.addr_b())
        } else {
            (k.addr_b(), k.addr_a())
        };
        let look = |a: &IpAddr| st.dns.lookup(a, ts).map(str::to_string);
        Acc {
            first_ns: ts,
            last_ns: ts,
            a_initiated: a_to_b,
            domain: look(&dst).or_else(|| look(&src)),
            ..Acc::default()
        }
    }

    fn end(st: &mut FlowsState, k: &FlowKey, f: &Acc, reason: &str, out: &mut Vec<Row>) {
        st.written.add(f);
        out.push(row(&st.context, k, f, reason));
    }
}

impl Processor for Flows {
    type State = FlowsState;

    fn name(&self) -> &'static str {
        "flows"
    }

    fn columns(&self) -> &'static [Column] {
        COLUMNS
    }

    fn init(&self, series: &SeriesInfo) -> FlowsState {
        FlowsState {
            context: series.context.clone(),
            ..FlowsState::default()
        }
    }

    fn record(&self, st: &mut FlowsState, rec: &Record<'_>, out: &mut Vec<Row>) {
        let ts = rec.ts_ns;
        if ts >= st.next_sweep_ns {
            let idle = self.s.idle_ns;
            let mut gone: Vec<FlowKey> = st
                .open
                .iter()
                .filter(|(_, f)| f.last_ns.saturating_add(idle) < ts)
                .map(|(k, _)| *k)
                .collect();
            gone.sort();
            for k in gone {
                if let Some(f) = st.open.remove(&k) {
                    st.ended_idle += 1;
                    Self::end(st, &k, &f, "idle", out);
                }
            }
            st.next_sweep_ns = ts.saturating_add(SWEEP_NS);
        }
        let Parsed::Ip(info) = rec.parsed else {
            st.non_ip += 1;
            return;
        };
        if let Seen::Response(r) = dnsproc::response(rec) {
            st.dns.learn(ts, &r.msg, self.s.capacity);
        }
        let k = info.key;
        let d = usize::from(!info.a_to_b);
        let mut f = match st.open.remove(&k) {
            Some(f) if f.last_ns.saturating_add(self.s.idle_ns) < ts => {
                st.ended_idle += 1;
                Self::end(st, &k, &f, "idle", out);
                self.start(st, &k, info.a_to_b, ts)
            }
            Some(f) if ts.saturating_sub(f.first_ns) >= self.s.active_ns => {
                st.ended_active += 1;
                Self::end(st, &k, &f, "active", out);
                self.start(st, &k, info.a_to_b, ts)
            }
            Some(f) => f,
            None if st.open.len() >= self.s.capacity => {
                st.table_full += 1;
                return;
            }
            None => self.start(st, &k, info.a_to_b, ts),
        };
        f.last_ns = f.last_ns.max(ts);
        f.pkts[d] += 1;
        f.bytes[d] += u64::from(rec.wire_len);
        f.cap[d] += rec.data.len() as u64;
        if f.heads[d].len == 0 && info.payload.len != 0 {
            f.heads[d] = Head::of(&info.payload);
        }
        st.open.insert(k, f);
    }

    fn end_of_file(&self, _st: &mut FlowsState, _file: &FileInfo, _out: &mut Vec<Row>) {}

    fn merge(&self, into: &mut FlowsState, other: FlowsState) {
        if into.context.is_empty() {
            into.context = other.context.clone();
        } else if into.context != other.context {
            into.context = "(several)".into();
        }
        for (k, f) in other.open {
            match into.open.get_mut(&k) {
                Some(m) => {
                    m.a_initiated = if f.first_ns < m.first_ns {
                        f.a_initiated
                    } else {
                        m.a_initiated
                    };
                    // The earlier part's first payloads come first.
                    let f_first = f.first_ns < m.first_ns;
                    for (mh, fh) in m.heads.iter_mut().zip(&f.heads) {
                        if fh.len != 0 && (mh.len == 0 || f_first) {
                            *mh = fh.clone();
                        }
                    }
                    m.first_ns = m.first_ns.min(f.first_ns);
                    m.last_ns = m.last_ns.max(f.last_ns);
                    for i in 0..2 {
                        m.pkts[i] += f.pkts[i];
                        m.bytes[i] += f.bytes[i];
                        m.cap[i] += f.cap[i];
                    }
                    if m.domain.is_none() {
                        m.domain = f.domain;
                    }
                }
                None => {
                    into.open.insert(k, f);
                }
            }
        }
        into.next_sweep_ns = into.next_sweep_ns.max(other.next_sweep_ns);
        into.dns.merge(other.dns);
        into.written.rows += other.written.rows;
        into.written.packets += other.written.packets;
        into.written.bytes += other.written.bytes;
        into.ended_idle += other.ended_idle;
        into.ended_active += other.ended_active;
        into.non_ip += other.non_ip;
        into.table_full += other.table_full;
    }

    fn summary(&self, st: &FlowsState) -> serde_json::Value {
        let mut open = Totals::default();
        for f in st.open.values() {
            open.add(f);
        }
        serde_json::json!({
            "rows": st.written.rows,
            "packets": st.written.packets,
            "bytes": st.written.bytes,
            "ended_idle": st.ended_idle,
            "ended_active": st.ended_active,
            "open_flows": open.rows,
            "open_packets": open.packets,
            "open_bytes": open.bytes,
            "non_ip_records": st.non_ip,
            "table_full_packets": st.table_full,
        })
    }

    fn open_rows(&self, st: &FlowsState, out: &mut Vec<Row>) {
        let mut v: Vec<(&FlowKey, &Acc)> = st.open.iter().collect();
        v.sort_by(|x, y| x.0.cmp(y.0));
        for (k, f) in v {
            out.push(row(&st.context, k, f, "open"));
        }
    }
}

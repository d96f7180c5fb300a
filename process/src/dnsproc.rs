//! The `dns` processor: bismark-passive's DNS correlation. Every DNS
//! response (UDP, source port 53) becomes a row of the `dns` table (the
//! question name and the A, AAAA and CNAME records of the message, as
//! tshark's `dns.qry.name`, `dns.a`, `dns.aaaa`, `dns.cname` list them), and
//! each address the answer section resolves (following the CNAME chain from
//! the question) is remembered, per anonymisation context, as "resolved from
//! that name" until its TTL runs out on the packet clock. The `flows`
//! processor keeps the same mapping to give each flow a `domain` column.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::dns::{self, Data};
use crate::{
    ColType, Column, FileInfo, Processor, Record, Row, SeriesInfo, Settings, addr_text, col,
};
use linecap_wire::flow::{IpFamily, Parsed};

/// A DNS response seen in a record.
pub struct Response {
    /// The resolver (source) address.
    pub server: String,
    /// The client (destination) address.
    pub client: String,
    /// The decoded message.
    pub msg: dns::Message,
}

/// Result of looking at a record for DNS.
pub enum Seen {
    /// Not a UDP packet from port 53.
    NotDns,
    /// A DNS response.
    Response(Response),
    /// From port 53 but not a decodable response (a query, a fragment, garbage).
    Undecodable,
}

/// Decode the record if it is a DNS response over UDP from port 53.
pub fn response(rec: &Record<'_>) -> Seen {
    let Parsed::Ip(info) = rec.parsed else {
        return Seen::NotDns;
    };
    let k = &info.key;
    if k.proto() != 17 || k.is_fragment() {
        return Seen::NotDns;
    }
    let (sport, src, dst) = if info.a_to_b {
        (k.port_a(), k.addr_a_bytes(), k.addr_b_bytes())
    } else {
        (k.port_b(), k.addr_b_bytes(), k.addr_a_bytes())
    };
    if sport != 53 {
        return Seen::NotDns;
    }
    let Some(payload) = rec.data.get(info.l4_offset + 8..) else {
        return Seen::Undecodable;
    };
    match dns::parse(payload) {
        Some(msg) if msg.response => {
            let v6 = k.family() == IpFamily::V6;
            Seen::Response(Response {
                server: addr_text(v6, src),
                client: addr_text(v6, dst),
                msg,
            })
        }
        _ => Seen::Undecodable,
    }
}

/// Address → the name it was resolved from, valid until a packet time.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Correlation {
    /// address text → (domain, expires at ns).
    pub map: BTreeMap<String, (String, u64)>,
    /// Mappings not kept because the table was full of unexpired ones.
    pub full: u64,
}

impl Correlation {
    /// Learn what a response resolves.
    pub fn learn(&mut self, ts_ns: u64, msg: &dns::Message, capacity: usize) {
        let Some(q) = msg.questions.first() else {
            return;
        };
        let (addrs, _) = dns::resolve(msg, q);
        for (a, ttl) in addrs {
            let expires = ts_ns.saturating_add(u64::from(ttl) * 1_000_000_000);
            let key = a.to_string();
            if self.map.len() >= capacity && !self.map.contains_key(&key) {
                self.map.retain(|_, v| v.1 > ts_ns);
                if self.map.len() >= capacity {
                    self.full += 1;
                    continue;
                }
            }
            self.map.insert(key, (q.clone(), expires));
        }
    }

    /// The name `addr` was resolved from, if still valid at `ts_ns`.
    pub fn lookup(&self, addr: &IpAddr, ts_ns: u64) -> Option<&str> {
        self.map
            .get(&addr.to_string())
            .filter(|(_, exp)| *exp >= ts_ns)
            .map(|(d, _)| d.as_str())
    }

    /// Union (the later expiry wins a conflict; ties keep the smaller name).
    pub fn merge(&mut self, other: Correlation) {
        for (k, v) in other.map {
            match self.map.get_mut(&k) {
                Some(mine) => {
                    if (v.1, std::cmp::Reverse(&v.0)) > (mine.1, std::cmp::Reverse(&mine.0)) {
                        *mine = v;
                    }
                }
                None => {
                    self.map.insert(k, v);
                }
            }
        }
        self.full += other.full;
    }
}

/// The `dns` processor.
pub struct Dns {
    capacity: usize,
}

impl Dns {
    /// With the mapping bound of `s`.
    pub fn new(s: Settings) -> Dns {
        Dns {
            capacity: s.capacity,
        }
    }
}

/// The `dns` processor's state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsState {
    /// The series' anonymisation context.
    pub context: String,
    /// Rows written (responses).
    pub rows: u64,
    /// Packets from UDP port 53 that did not decode as a response.
    pub undecodable: u64,
    /// What addresses were resolved from.
    pub correlation: Correlation,
}

const COLUMNS: &[Column] = &[
    col("ts_ns", ColType::I64),
    col("context", ColType::Str),
    col("client", ColType::Str),
    col("server", ColType::Str),
    col("query", ColType::Str),
    col("a", ColType::Str),
    col("aaaa", ColType::Str),
    col("cname", ColType::Str),
    col("resolved", ColType::Str),
    col("ttl", ColType::I64),
];

fn joined(it: impl Iterator<Item = String>) -> Option<String> {
    let v: Vec<String> = it.collect();
    (!v.is_empty()).then(|| v.join(","))
}

impl Processor for Dns {
    type State = DnsState;

    fn name(&self) -> &'static str {
        "dns"
    }

    fn columns(&self) -> &'static [Column] {
        COLUMNS
    }

    fn init(&self, series: &SeriesInfo) -> DnsState {
        DnsState {
            context: series.context.clone(),
            ..DnsState::default()
        }
    }

    fn record(&self, st: &mut DnsState, rec: &Record<'_>, out: &mut Vec<Row>) {
        let r = match response(rec) {
            Seen::NotDns => return,
            Seen::Undecodable => {
                st.undecodable += 1;
                return;
            }
            Seen::Response(r) => r,
        };
        let m = &r.msg;
        let of =
            |f: fn(&Data) -> Option<String>| joined(m.records.iter().filter_map(|x| f(&x.data)));
        let q = m.questions.first().cloned();
        let (addrs, _) = q
            .as_deref()
            .map_or((Vec::new(), Vec::new()), |q| dns::resolve(m, q));
        let ttl = addrs.iter().map(|a| a.1).min();
        st.correlation.learn(rec.ts_ns, m, self.capacity);
        st.rows += 1;
        out.push(Row {
            ts_ns: rec.ts_ns,
            cells: vec![
                rec.ts_ns.into(),
                st.context.clone().into(),
                r.client.into(),
                r.server.into(),
                joined(m.questions.iter().cloned()).into(),
                of(|d| match d {
                    Data::A(a) => Some(a.to_string()),
                    _ => None,
                })
                .into(),
                of(|d| match d {
                    Data::Aaaa(a) => Some(a.to_string()),
                    _ => None,
                })
                .into(),
                of(|d| match d {
                    Data::Cname(c) => Some(c.clone()),
                    _ => None,
                })
                .into(),
                joined(addrs.iter().map(|a| a.0.to_string())).into(),
                ttl.map_or(crate::Cell::Null, |t| u64::from(t).into()),
            ],
        });
    }

    fn end_of_file(&self, _st: &mut DnsState, _file: &FileInfo, _out: &mut Vec<Row>) {}

    fn merge(&self, into: &mut DnsState, other: DnsState) {
        if into.context.is_empty() {
            into.context = other.context.clone();
        } else if !other.context.is_empty() && other.context != into.context {
            // Several contexts merged: the summary says so.
            into.context = "(several)".into();
        }
        into.rows += other.rows;
        into.undecodable += other.undecodable;
        into.correlation.merge(other.correlation);
    }

    fn summary(&self, st: &DnsState) -> serde_json::Value {
        serde_json::json!({
            "rows": st.rows,
            "undecodable": st.undecodable,
            "mappings": st.correlation.map.len(),
            "mappings_not_kept": st.correlation.full,
        })
    }
}

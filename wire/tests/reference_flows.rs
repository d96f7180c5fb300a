//! Every trace in `shared/traces` through `parse_frame`, aggregated per flow
//! key and compared with the tshark-made tables in `shared/reference/flows`:
//! the set of flows, packets and wire bytes per direction, captured bytes per
//! direction, and the non-IP frame count.
//!
//! Truncated and malformed frames count as non-IP, as in the reference (see
//! the `flow` module documentation). Traces listed in [`KNOWN_DIFFERENCES`]
//! are compared and reported but do not fail the test; every other trace must
//! match exactly. The test fails when `shared/` is absent.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use linecap_wire::erf;
use linecap_wire::flow::{IpFamily, PacketInfo, Parsed, parse_frame};
use pcap_parser::{Block, PcapBlockOwned, PcapError, create_reader};

const SHARED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared");

/// Traces whose reference table linecap does not reproduce, and why.
const KNOWN_DIFFERENCES: &[(&str, &str)] = &[];

/// One frame: its bytes and wire length as the reference counts it.
struct Frame {
    data: Vec<u8>,
    wire_len: u64,
}

/// Per-flow counters in the reference's a/b orientation.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Counts {
    pkts_ab: u64,
    bytes_ab: u64,
    pkts_ba: u64,
    bytes_ba: u64,
    caplen_ab: u64,
    caplen_ba: u64,
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Table {
    flows: BTreeMap<String, Counts>,
    non_ip: u64,
}

fn read_pcap(path: &Path) -> Vec<Frame> {
    let file = fs::File::open(path).unwrap();
    let mut reader = create_reader(1 << 20, file).unwrap();
    let mut out = Vec::new();
    loop {
        match reader.next() {
            Ok((offset, block)) => {
                match block {
                    PcapBlockOwned::Legacy(b) => out.push(Frame {
                        data: b.data.to_vec(),
                        wire_len: u64::from(b.origlen),
                    }),
                    PcapBlockOwned::NG(Block::EnhancedPacket(b)) => {
                        let cap = (b.caplen as usize).min(b.data.len());
                        out.push(Frame {
                            data: b.data[..cap].to_vec(),
                            wire_len: u64::from(b.origlen),
                        });
                    }
                    PcapBlockOwned::NG(Block::SimplePacket(b)) => out.push(Frame {
                        data: b.data.to_vec(),
                        wire_len: u64::from(b.origlen),
                    }),
                    _ => {}
                }
                reader.consume(offset);
            }
            Err(PcapError::Eof) => break,
            Err(PcapError::Incomplete(_)) => reader.refill().unwrap(),
            Err(e) => panic!("{}: {e:?}", path.display()),
        }
    }
    out
}

/// ERF records; non-Ethernet records become empty frames (non-IP).
fn read_erf(path: &Path) -> Vec<Frame> {
    let bytes = fs::read(path).unwrap();
    let mut rest = &bytes[..];
    let mut out = Vec::new();
    while !rest.is_empty() {
        let rec = erf::Record::new_checked(rest).unwrap();
        out.push(Frame {
            data: rec.eth_frame().unwrap_or(&[]).to_vec(),
            wire_len: u64::from(rec.header().wlen),
        });
        rest = &rest[usize::from(rec.header().rlen)..];
    }
    out
}

fn proto_name(info: &PacketInfo) -> String {
    let k = &info.key;
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

fn endpoint(addr: IpAddr, port: u16) -> String {
    format!("{addr}|{port}")
}

fn aggregate(frames: &[Frame]) -> Table {
    let mut t = Table::default();
    for f in frames {
        let info = match parse_frame(&f.data) {
            Parsed::Ip(info) => info,
            Parsed::NonIp | Parsed::Truncated | Parsed::Malformed => {
                t.non_ip += 1;
                continue;
            }
        };
        let k = &info.key;
        let (src, dst) = {
            let a = endpoint(k.addr_a(), k.port_a());
            let b = endpoint(k.addr_b(), k.port_b());
            if info.a_to_b { (a, b) } else { (b, a) }
        };
        // The reference's a is the lexically smaller "addr|port".
        let src_is_a = src <= dst;
        let (a, b) = if src_is_a { (&src, &dst) } else { (&dst, &src) };
        let vlans = if k.vlan_ids().is_empty() {
            "-".to_string()
        } else {
            k.vlan_ids()
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(".")
        };
        let (addr_a, port_a) = a.split_once('|').unwrap();
        let (addr_b, port_b) = b.split_once('|').unwrap();
        let key = format!(
            "{vlans}\t{}\t{addr_a}\t{port_a}\t{addr_b}\t{port_b}",
            proto_name(&info)
        );
        let c = t.flows.entry(key).or_default();
        let cap = f.data.len() as u64;
        if src_is_a {
            c.pkts_ab += 1;
            c.bytes_ab += f.wire_len;
            c.caplen_ab += cap;
        } else {
            c.pkts_ba += 1;
            c.bytes_ba += f.wire_len;
            c.caplen_ba += cap;
        }
    }
    t
}

fn read_reference(path: &Path) -> Table {
    let text = fs::read_to_string(path).unwrap();
    let mut t = Table::default();
    for line in text.lines() {
        let cols: Vec<&str> = line.split('\t').collect();
        if cols[0] == "#non_ip_frames" {
            t.non_ip = cols[1].parse().unwrap();
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let n = |i: usize| -> u64 { cols[i].parse().unwrap() };
        let counts = Counts {
            pkts_ab: n(6),
            bytes_ab: n(7),
            pkts_ba: n(8),
            bytes_ba: n(9),
            caplen_ab: n(10),
            caplen_ba: n(11),
        };
        let prev = t.flows.insert(cols[..6].join("\t"), counts);
        assert!(prev.is_none(), "duplicate reference row {line}");
    }
    t
}

/// Human-readable differences between ours and the reference ("" if none).
fn diff(ours: &Table, reference: &Table) -> String {
    let mut out = String::new();
    if ours.non_ip != reference.non_ip {
        writeln!(
            out,
            "  non-IP frames: ours {} reference {}",
            ours.non_ip, reference.non_ip
        )
        .unwrap();
    }
    for (k, c) in &reference.flows {
        match ours.flows.get(k) {
            None => writeln!(out, "  missing flow {k} {c:?}").unwrap(),
            Some(o) if o != c => writeln!(out, "  flow {k}: ours {o:?} reference {c:?}").unwrap(),
            Some(_) => {}
        }
    }
    for (k, c) in &ours.flows {
        if !reference.flows.contains_key(k) {
            writeln!(out, "  extra flow {k} {c:?}").unwrap();
        }
    }
    out
}

#[test]
fn reference_flow_tables() {
    let traces = PathBuf::from(SHARED).join("traces");
    let refs = PathBuf::from(SHARED).join("reference/flows");
    // The reference material is required: a missing ../shared is a failure
    // (in CI too), never a silent pass.
    let dir = fs::read_dir(&traces).unwrap_or_else(|e| {
        panic!(
            "no traces at {}: {e} (the test material in ../shared is missing)",
            traces.display()
        )
    });
    let mut names: Vec<String> = dir
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let mut failures = Vec::new();
    let mut matched = 0;
    for name in &names {
        let path = traces.join(name);
        let frames = if name.ends_with(".erf") {
            read_erf(&path)
        } else {
            read_pcap(&path)
        };
        let ours = aggregate(&frames);
        let reference = read_reference(&refs.join(format!("{name}.flows.tsv")));
        let d = diff(&ours, &reference);
        let known = KNOWN_DIFFERENCES.iter().find(|(n, _)| n == name);
        if d.is_empty() {
            matched += 1;
            eprintln!(
                "match    {name}: {} flows, {} non-IP",
                ours.flows.len(),
                ours.non_ip
            );
        } else if let Some((_, why)) = known {
            eprintln!("KNOWN    {name}: {why}\n{d}");
        } else {
            eprintln!("MISMATCH {name}\n{d}");
            failures.push(name.clone());
        }
    }
    eprintln!(
        "{matched} of {} traces match their reference exactly",
        names.len()
    );
    assert!(
        failures.is_empty(),
        "traces differing from the reference: {failures:?}"
    );
}

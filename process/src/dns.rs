//! A DNS message decoder for responses (RFC 1035): the question name and the
//! A, AAAA and CNAME records of every section, with TTLs. Every read is
//! bounded; compression pointers are followed at most [`MAX_JUMPS`] times.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Compression pointers followed in one name before it is malformed.
pub const MAX_JUMPS: usize = 32;
/// Resource records decoded per message (more are ignored).
pub const MAX_RECORDS: usize = 256;

/// Which section a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// Answer.
    Answer,
    /// Authority.
    Authority,
    /// Additional.
    Additional,
}

/// The data of a record linecap uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    /// IPv4 address.
    A(Ipv4Addr),
    /// IPv6 address.
    Aaaa(Ipv6Addr),
    /// Canonical name.
    Cname(String),
}

/// One A, AAAA or CNAME record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rr {
    /// Section.
    pub section: Section,
    /// Owner name (as in the message, no trailing dot).
    pub name: String,
    /// TTL, seconds.
    pub ttl: u32,
    /// Data.
    pub data: Data,
}

/// A decoded response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Transaction id.
    pub id: u16,
    /// Whether QR is set.
    pub response: bool,
    /// Question names, in order.
    pub questions: Vec<String>,
    /// A, AAAA and CNAME records in message order.
    pub records: Vec<Rr>,
}

fn u16_at(b: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(i)?, *b.get(i + 1)?]))
}

fn u32_at(b: &[u8], i: usize) -> Option<u32> {
    Some(u32::from_be_bytes([
        *b.get(i)?,
        *b.get(i + 1)?,
        *b.get(i + 2)?,
        *b.get(i + 3)?,
    ]))
}

/// Read a name at `pos`; returns it and the position after it.
fn name(b: &[u8], mut pos: usize) -> Option<(String, usize)> {
    let mut out = String::new();
    let mut end = None;
    let mut jumps = 0;
    loop {
        let len = *b.get(pos)?;
        match len >> 6 {
            0 if len == 0 => {
                return Some((out, end.unwrap_or(pos + 1)));
            }
            0 => {
                let label = b.get(pos + 1..pos + 1 + usize::from(len))?;
                if !out.is_empty() {
                    out.push('.');
                }
                for &c in label {
                    out.push(char::from(c));
                }
                if out.len() > 1024 {
                    return None;
                }
                pos += 1 + usize::from(len);
            }
            3 => {
                let off = usize::from(u16_at(b, pos)? & 0x3fff);
                end.get_or_insert(pos + 2);
                jumps += 1;
                if jumps > MAX_JUMPS {
                    return None;
                }
                pos = off;
            }
            _ => return None,
        }
    }
}

/// Decode a DNS message (the UDP payload). `None` when it is malformed.
pub fn parse(b: &[u8]) -> Option<Message> {
    let id = u16_at(b, 0)?;
    let flags = u16_at(b, 2)?;
    let qd = usize::from(u16_at(b, 4)?);
    let counts = [
        (Section::Answer, usize::from(u16_at(b, 6)?)),
        (Section::Authority, usize::from(u16_at(b, 8)?)),
        (Section::Additional, usize::from(u16_at(b, 10)?)),
    ];
    let mut pos = 12;
    let mut questions = Vec::new();
    for _ in 0..qd.min(MAX_RECORDS) {
        let (n, p) = name(b, pos)?;
        u32_at(b, p)?;
        questions.push(n);
        pos = p + 4;
    }
    let mut records = Vec::new();
    let mut seen = 0;
    for (section, n) in counts {
        for _ in 0..n {
            seen += 1;
            if seen > MAX_RECORDS {
                break;
            }
            let (owner, p) = name(b, pos)?;
            let ty = u16_at(b, p)?;
            let ttl = u32_at(b, p + 4)?;
            let rdlen = usize::from(u16_at(b, p + 8)?);
            let rd = p + 10;
            let rdata = b.get(rd..rd + rdlen)?;
            let data = match (ty, rdlen) {
                (1, 4) => Some(Data::A(Ipv4Addr::new(
                    rdata[0], rdata[1], rdata[2], rdata[3],
                ))),
                (28, 16) => {
                    let mut a = [0u8; 16];
                    a.copy_from_slice(rdata);
                    Some(Data::Aaaa(Ipv6Addr::from(a)))
                }
                (5, _) => Some(Data::Cname(name(b, rd)?.0)),
                _ => None,
            };
            if let Some(data) = data {
                records.push(Rr {
                    section,
                    name: owner,
                    ttl,
                    data,
                });
            }
            pos = rd + rdlen;
        }
    }
    Some(Message {
        id,
        response: flags & 0x8000 != 0,
        questions,
        records,
    })
}

/// What an answer section resolves, following CNAME chains from `qname`:
/// each address reached, with the smallest TTL on its chain, and the chain.
pub fn resolve(m: &Message, qname: &str) -> (Vec<(std::net::IpAddr, u32)>, Vec<String>) {
    let answers: Vec<&Rr> = m
        .records
        .iter()
        .filter(|r| r.section == Section::Answer)
        .collect();
    let mut chain: Vec<String> = Vec::new();
    let mut cur = qname.to_string();
    let mut ttl = u32::MAX;
    let mut addrs = Vec::new();
    // Follow at most as many CNAMEs as there are answers (no loops).
    for _ in 0..=answers.len() {
        let mut next = None;
        for r in &answers {
            if !r.name.eq_ignore_ascii_case(&cur) {
                continue;
            }
            match &r.data {
                Data::A(a) => addrs.push((std::net::IpAddr::V4(*a), ttl.min(r.ttl))),
                Data::Aaaa(a) => addrs.push((std::net::IpAddr::V6(*a), ttl.min(r.ttl))),
                Data::Cname(c) => {
                    if next.is_none() {
                        next = Some((c.clone(), r.ttl));
                    }
                }
            }
        }
        match next {
            Some((c, t))
                if !chain.iter().any(|x| x.eq_ignore_ascii_case(&c))
                    && !c.eq_ignore_ascii_case(qname) =>
            {
                ttl = ttl.min(t);
                chain.push(c.clone());
                cur = c;
            }
            _ => break,
        }
    }
    (addrs, chain)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A response for www.example.com: CNAME to web.example.net (TTL 300),
    /// which has A 192.0.2.7 (TTL 60); a pointer-compressed owner name.
    fn response() -> Vec<u8> {
        let mut m = vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0, 2, 0, 0, 0, 0];
        m.extend_from_slice(b"\x03www\x07example\x03com\x00\x00\x01\x00\x01");
        // Answer 1: owner = pointer to 12, CNAME.
        m.extend_from_slice(&[0xc0, 12, 0, 5, 0, 1, 0, 0, 1, 44]);
        let cname = b"\x03web\x07example\x03net\x00";
        m.extend_from_slice(&(cname.len() as u16).to_be_bytes());
        let cname_at = m.len();
        m.extend_from_slice(cname);
        // Answer 2: owner = pointer to the CNAME target, A.
        m.extend_from_slice(&[0xc0, cname_at as u8, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        m.extend_from_slice(&[192, 0, 2, 7]);
        m
    }

    #[test]
    fn a_cname_chain_resolves_with_the_smallest_ttl() {
        let m = parse(&response()).unwrap();
        assert!(m.response);
        assert_eq!(m.questions, vec!["www.example.com"]);
        assert_eq!(m.records.len(), 2);
        let (addrs, chain) = resolve(&m, "www.example.com");
        assert_eq!(chain, vec!["web.example.net"]);
        assert_eq!(addrs, vec![("192.0.2.7".parse().unwrap(), 60)]);
    }

    #[test]
    fn hostile_messages_are_refused_not_panicked_on() {
        let good = response();
        for cut in 0..good.len() {
            let _ = parse(&good[..cut]);
        }
        assert!(parse(&good[..good.len() - 1]).is_none());
        // A pointer loop.
        let mut m = vec![
            0, 0, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1,
        ];
        assert!(parse(&m).is_none());
        m[13] = 200;
        assert!(parse(&m).is_none());
    }
}

//! The part of a tcpdump filter expression the index can answer.
//!
//! [`prune_terms`] reads the expression with a small parser of the tcpdump
//! grammar's common subset — `host`/`net`/`port`/`portrange` with `src`/
//! `dst` and protocol qualifiers, `tcp`/`udp`/`sctp`/`icmp`/`icmp6`,
//! `[ip|ip6] proto N`, `vlan [N]`, `and`/`or`/`not`/`&&`/`||`/`!`,
//! parentheses and tcpdump's qualifier inheritance (`host a or b`) — into a
//! [`Term`] tree. It is only ever used to *choose blocks*: exact matching is
//! the compiled BPF program's job. So the rule is one-sided: the blocks a
//! term chooses must hold every packet the expression can match. Anything
//! the parser does not understand becomes [`Term::All`] (scan), `not X` is
//! [`Term::All`], and keywords that move libpcap's offsets in ways the index
//! does not follow (`mpls`, `pppoes`, `geneve`, `vxlan`, packet accessors
//! like `tcp[13]`, arithmetic) make the whole expression [`Term::All`].

use std::net::IpAddr;

/// What the index can prune with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Term {
    /// Cannot prune: every block.
    All,
    /// A 16-byte address (IPv4 v4-mapped).
    Host([u8; 16]),
    /// Addresses under a prefix (bits counted over the 16 bytes).
    Net([u8; 16], u8),
    /// A port range, inclusive.
    Port(u16, u16),
    /// IPv4 protocol / IPv6 next header.
    Proto(u8),
    /// A VLAN tag, any ID or one.
    Vlan(Option<u16>),
    /// Both.
    And(Box<Term>, Box<Term>),
    /// Either.
    Or(Box<Term>, Box<Term>),
}

impl Term {
    /// Whether the term prunes nothing.
    pub fn is_all(&self) -> bool {
        matches!(self, Term::All)
    }
}

fn and(a: Term, b: Term) -> Term {
    match (a, b) {
        (Term::All, x) | (x, Term::All) => x,
        (a, b) => Term::And(Box::new(a), Box::new(b)),
    }
}

fn or(a: Term, b: Term) -> Term {
    match (a, b) {
        (Term::All, _) | (_, Term::All) => Term::All,
        (a, b) => Term::Or(Box::new(a), Box::new(b)),
    }
}

fn tokens(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let chars: Vec<char> = expr.chars().collect();
    let mut i = 0;
    let flush = |cur: &mut String, out: &mut Vec<String>| {
        if !cur.is_empty() {
            out.push(std::mem::take(cur));
        }
    };
    while i < chars.len() {
        let c = chars[i];
        let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
        if c.is_whitespace() {
            flush(&mut cur, &mut out);
        } else if two == "&&" || two == "||" || two == "!=" {
            flush(&mut cur, &mut out);
            out.push(two);
            i += 1;
        } else if matches!(
            c,
            '(' | ')' | '!' | '[' | ']' | '&' | '|' | '<' | '>' | '=' | '+' | '*'
        ) {
            flush(&mut cur, &mut out);
            out.push(c.to_string());
        } else {
            cur.push(c);
        }
        i += 1;
    }
    flush(&mut cur, &mut out);
    out
}

/// Words that change what the following primitives read in ways the index
/// does not follow, or packet accessors: the whole expression is a scan.
const OPAQUE: [&str; 15] = [
    "mpls", "pppoes", "pppoed", "geneve", "vxlan", "[", "]", "<", ">", "=", "!=", "+", "*", "&",
    "|",
];

#[derive(Clone, Copy, Default, PartialEq, Eq)]
enum Kind {
    #[default]
    None,
    Host,
    Net,
    Port,
    PortRange,
    Proto,
}

#[derive(Clone, Copy, Default)]
struct Quals {
    /// Protocol qualifier's number, when it is one that restricts L4.
    proto: Option<u8>,
    kind: Kind,
}

struct Parser {
    toks: Vec<String>,
    pos: usize,
    last: Quals,
}

type R<T> = Result<T, ()>;

impl Parser {
    fn peek(&self) -> Option<&str> {
        self.toks.get(self.pos).map(String::as_str)
    }
    fn bump(&mut self) -> Option<String> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }
    fn expr(&mut self) -> R<Term> {
        let mut t = self.conj()?;
        while matches!(self.peek(), Some("or" | "||")) {
            self.bump();
            let r = self.conj()?;
            t = or(t, r);
        }
        Ok(t)
    }
    fn conj(&mut self) -> R<Term> {
        let mut t = self.unary()?;
        while matches!(self.peek(), Some("and" | "&&")) {
            self.bump();
            let r = self.unary()?;
            t = and(t, r);
        }
        Ok(t)
    }
    fn unary(&mut self) -> R<Term> {
        match self.peek() {
            Some("not" | "!") => {
                self.bump();
                self.unary()?;
                Ok(Term::All)
            }
            Some("(") => {
                self.bump();
                let t = self.expr()?;
                if self.bump().as_deref() != Some(")") {
                    return Err(());
                }
                Ok(t)
            }
            Some(_) => self.primitive(),
            None => Err(()),
        }
    }

    fn primitive(&mut self) -> R<Term> {
        let mut q = Quals::default();
        let mut any_qual = false;
        while let Some(t) = self.peek() {
            match t {
                "tcp" => q.proto = Some(6),
                "udp" => q.proto = Some(17),
                "sctp" => q.proto = Some(132),
                "icmp" => q.proto = Some(1),
                "icmp6" => q.proto = Some(58),
                "ip" | "ip6" | "ether" | "arp" | "rarp" => {}
                "src" | "dst" => {}
                "host" => q.kind = Kind::Host,
                "net" => q.kind = Kind::Net,
                "port" => q.kind = Kind::Port,
                "portrange" => q.kind = Kind::PortRange,
                "proto" => q.kind = Kind::Proto,
                _ => break,
            }
            any_qual = true;
            let word = self.bump().unwrap_or_default();
            if word == "ether" || word == "arp" || word == "rarp" {
                // Link-layer or ARP primitives: the index says nothing.
                return self.opaque_leaf();
            }
        }
        let next = self.peek().map(str::to_string);
        let is_id = next
            .as_deref()
            .is_some_and(|t| !matches!(t, "and" | "or" | "&&" | "||" | ")" | "not" | "!"));
        if !any_qual {
            // A bare id inherits the previous primitive's qualifiers.
            let t = next.ok_or(())?;
            match t.as_str() {
                "vlan" => {
                    self.bump();
                    return Ok(self.vlan());
                }
                "less" | "greater" | "len" | "broadcast" | "multicast" => {
                    self.bump();
                    if self.peek().is_some_and(|t| t.parse::<u64>().is_ok()) {
                        self.bump();
                    }
                    return Ok(Term::All);
                }
                _ => {}
            }
            if self.last.kind == Kind::None {
                return Err(());
            }
            q = self.last;
        } else if q.kind == Kind::None {
            // `tcp`, `udp`, `ip`... alone.
            self.last = q;
            return Ok(q.proto.map_or(Term::All, Term::Proto));
        }
        if !is_id {
            return Err(());
        }
        self.last = q;
        let id = self.bump().ok_or(())?;
        let leaf = match q.kind {
            Kind::Host => match id.parse::<IpAddr>() {
                Ok(a) => Term::Host(addr16(a)),
                Err(_) => Term::All, // a host name: libpcap resolves it
            },
            Kind::Net => {
                let leaf = net(&id);
                if self.peek() == Some("mask") {
                    self.bump();
                    self.bump();
                    Term::All
                } else {
                    leaf
                }
            }
            Kind::Port => match id.parse::<u16>() {
                Ok(p) => Term::Port(p, p),
                Err(_) => Term::All, // a service name
            },
            Kind::PortRange => match id.split_once('-') {
                Some((a, b)) => match (a.parse::<u16>(), b.parse::<u16>()) {
                    (Ok(a), Ok(b)) => Term::Port(a.min(b), a.max(b)),
                    _ => Term::All,
                },
                None => Term::All,
            },
            Kind::Proto => match id.trim_start_matches('\\') {
                "tcp" => Term::Proto(6),
                "udp" => Term::Proto(17),
                "icmp" => Term::Proto(1),
                "sctp" => Term::Proto(132),
                "icmp6" => Term::Proto(58),
                n => n.parse::<u8>().map_or(Term::All, Term::Proto),
            },
            Kind::None => Term::All,
        };
        // `tcp port 80`: the port and the protocol.
        Ok(match (q.kind, q.proto) {
            (Kind::Port | Kind::PortRange, Some(p)) => and(Term::Proto(p), leaf),
            _ => leaf,
        })
    }

    fn opaque_leaf(&mut self) -> R<Term> {
        // Skip qualifiers and one id (`ether host aa:bb:..`, `arp net ...`).
        while matches!(
            self.peek(),
            Some("src" | "dst" | "host" | "net" | "proto" | "broadcast" | "multicast")
        ) {
            self.bump();
        }
        if self
            .peek()
            .is_some_and(|t| !matches!(t, "and" | "or" | "&&" | "||" | ")" | "not" | "!"))
        {
            self.bump();
        }
        self.last = Quals::default();
        Ok(Term::All)
    }

    fn vlan(&mut self) -> Term {
        match self.peek().and_then(|t| t.parse::<u16>().ok()) {
            Some(v) => {
                self.bump();
                Term::Vlan(Some(v))
            }
            None => Term::Vlan(None),
        }
    }
}

fn addr16(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

fn net(id: &str) -> Term {
    let (a, bits) = match id.split_once('/') {
        Some((a, b)) => match b.parse::<u8>() {
            Ok(b) => (a, Some(b)),
            Err(_) => return Term::All,
        },
        None => (id, None),
    };
    match a.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => {
            let bits = bits.unwrap_or(32);
            if bits > 32 {
                return Term::All;
            }
            Term::Net(addr16(IpAddr::V4(v4)), 96 + bits)
        }
        Ok(IpAddr::V6(v6)) => {
            let bits = bits.unwrap_or(128);
            if bits > 128 {
                return Term::All;
            }
            Term::Net(v6.octets(), bits)
        }
        // `net 10` / `net 192.168`: abbreviated networks, left to BPF.
        Err(_) => Term::All,
    }
}

/// The index-answerable part of `expr` (see the module documentation).
/// An empty expression (match everything) is [`Term::All`].
pub fn prune_terms(expr: &str) -> Term {
    let toks = tokens(expr);
    if toks.is_empty() || toks.iter().any(|t| OPAQUE.contains(&t.as_str())) {
        return Term::All;
    }
    let mut p = Parser {
        toks,
        pos: 0,
        last: Quals::default(),
    };
    match p.expr() {
        Ok(t) if p.pos == p.toks.len() => t,
        _ => Term::All,
    }
}

/// Whether `addr` lies in `net`/`bits` (both 16 bytes).
pub fn in_net(addr: &[u8; 16], net: &[u8; 16], bits: u8) -> bool {
    let a = u128::from_be_bytes(*addr);
    let n = u128::from_be_bytes(*net);
    let mask = if bits == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(bits.min(128)))
    };
    a & mask == n & mask
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Term {
        Term::Host(addr16(s.parse().unwrap()))
    }

    #[test]
    fn the_common_primitives_parse() {
        assert_eq!(prune_terms("host 10.0.0.1"), h("10.0.0.1"));
        assert_eq!(prune_terms("src host 2001:db8::1"), h("2001:db8::1"));
        assert_eq!(prune_terms("port 53"), Term::Port(53, 53));
        assert_eq!(prune_terms("portrange 1-1023"), Term::Port(1, 1023));
        assert_eq!(prune_terms("udp"), Term::Proto(17));
        assert_eq!(prune_terms("ip proto 47"), Term::Proto(47));
        assert_eq!(prune_terms("vlan 100"), Term::Vlan(Some(100)));
        assert_eq!(prune_terms("vlan"), Term::Vlan(None));
        assert_eq!(
            prune_terms("tcp port 80"),
            and(Term::Proto(6), Term::Port(80, 80))
        );
        assert_eq!(
            prune_terms("net 10.1.0.0/16"),
            Term::Net(addr16("10.1.0.0".parse().unwrap()), 112)
        );
    }

    #[test]
    fn booleans_and_inheritance() {
        assert_eq!(
            prune_terms("host 1.2.3.4 or 5.6.7.8"),
            or(h("1.2.3.4"), h("5.6.7.8"))
        );
        assert_eq!(
            prune_terms("(host 1.2.3.4 and port 80) or port 443"),
            or(and(h("1.2.3.4"), Term::Port(80, 80)), Term::Port(443, 443))
        );
        assert_eq!(prune_terms("host 1.2.3.4 and not port 22"), h("1.2.3.4"));
        assert_eq!(prune_terms("not host 1.2.3.4"), Term::All);
        assert_eq!(
            prune_terms("host 1.2.3.4 || port 22"),
            or(h("1.2.3.4"), Term::Port(22, 22))
        );
    }

    #[test]
    fn what_the_index_cannot_follow_is_a_scan() {
        for e in [
            "",
            "tcp[13] & 2 != 0",
            "mpls and host 1.2.3.4",
            "geneve and host 1.2.3.4",
            "ether host 00:11:22:33:44:55",
            "arp",
            "host example.com",
            "net 10",
            "port http",
            "greater 100",
            "host 1.2.3.4 or arp",
            "( host 1.2.3.4",
        ] {
            assert!(prune_terms(e).is_all(), "{e:?} -> {:?}", prune_terms(e));
        }
        // An unknown part under `and` still lets the other part prune.
        assert_eq!(prune_terms("arp or host 1.2.3.4"), Term::All);
        assert_eq!(prune_terms("greater 100 and host 1.2.3.4"), h("1.2.3.4"));
    }

    #[test]
    fn nets_contain_their_addresses() {
        let n = addr16("10.1.0.0".parse().unwrap());
        assert!(in_net(&addr16("10.1.2.3".parse().unwrap()), &n, 112));
        assert!(!in_net(&addr16("10.2.0.1".parse().unwrap()), &n, 112));
        assert!(in_net(&[7; 16], &n, 0));
    }
}

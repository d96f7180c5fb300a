//! The rules file parser and the fixed-size tables it fills.
//!
//! Format (one statement a line; `#` starts a comment outside quotes):
//!
//! ```text
//! app     ID NAME                                  # declare an application
//! payload NAME L4 a=PAT [b=PAT] [port=P,P,...]     # payload rule
//! port    NAME L4 P,P,...                          # port-only guess
//! proto   NAME NUMBER                              # IP protocol number
//! ```
//!
//! `L4` is `tcp`, `udp` or `any` (TCP or UDP). A payload rule matches when
//! one direction's first payload matches `a` and the other's matches `b`
//! (`b` defaults to `any`). `PAT` is alternatives joined by `|`; each is a
//! base, optional `&CHECK`s and an optional `@LEN`:
//!
//! * bases: `'text'` (1–4 bytes, a prefix; escapes `\r \n \t \\ \' \xHH`),
//!   `HEX` (2–8 hex digits, `?` = any nibble), `none` (no payload),
//!   `some` (any payload), `any` (anything, also no payload);
//! * checks (on the first bytes and the payload size `len`): `lp16` (BE u16
//!   at 0 = len − 2), `be32` (BE u32 at 0 = len), `rm32` (BE u32 at 0 =
//!   len − 4), `le24` (LE u24 at 0 = len − 4), `tpkt` (BE u16 at 2 = len),
//!   `nbss` (BE u24 at 1 = len − 4), `stun` (BE u16 at 2 = len − 20);
//! * `@N`, `@N-M`, `@N-`: the payload size is N, in N..=M, or at least N.

use super::PayloadHead;

/// Rules a rule set holds at most.
pub const RULES_MAX: usize = 256;
/// Pattern alternatives a rule set holds at most (all rules together).
pub const ALTS_MAX: usize = 1024;
/// Applications a rule set declares at most.
pub const APPS_MAX: usize = 128;
/// Ports one rule lists at most.
pub const PORTS_MAX: usize = 12;

/// Why a rules file was refused: the 1-based line and what is wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleError {
    /// 1-based line number in the rules text.
    pub line: usize,
    /// What is wrong.
    pub what: &'static str,
}

impl core::fmt::Display for RuleError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "rules line {}: {}", self.line, self.what)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum L4Sel {
    Tcp,
    Udp,
    TcpUdp,
    Proto(u8),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RuleKind {
    Payload,
    Port,
    Proto,
}

const CHK_LP16: u8 = 1;
const CHK_BE32: u8 = 2;
const CHK_RM32: u8 = 4;
const CHK_LE24: u8 = 8;
const CHK_TPKT: u8 = 16;
const CHK_NBSS: u8 = 32;
const CHK_STUN: u8 = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Base {
    /// No payload.
    None,
    /// Any payload.
    Some,
    /// Anything.
    Any,
    /// The first `n` bytes, masked, equal `value`.
    Bytes {
        value: [u8; 4],
        mask: [u8; 4],
        n: u8,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Alt {
    base: Base,
    checks: u8,
    len_min: u32,
    len_max: u32,
}

const ALT_BLANK: Alt = Alt {
    base: Base::Any,
    checks: 0,
    len_min: 0,
    len_max: u32::MAX,
};

/// A pattern: `alts[start..start + len]` of the rule set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Pat {
    start: u16,
    len: u16,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Rule {
    pub(super) kind: RuleKind,
    pub(super) app: u8,
    pub(super) l4: L4Sel,
    pub(super) a: Pat,
    pub(super) b: Pat,
    ports: [u16; PORTS_MAX],
    nports: u8,
}

impl Rule {
    pub(super) fn ports(&self) -> &[u16] {
        self.ports.get(..usize::from(self.nports)).unwrap_or(&[])
    }
}

const RULE_BLANK: Rule = Rule {
    kind: RuleKind::Port,
    app: 0,
    l4: L4Sel::TcpUdp,
    a: Pat { start: 0, len: 0 },
    b: Pat { start: 0, len: 0 },
    ports: [0; PORTS_MAX],
    nports: 0,
};

#[derive(Debug, Clone, Copy)]
pub(super) struct App {
    pub(super) id: u16,
    pub(super) name: &'static str,
}

#[derive(Clone)]
pub(super) struct RuleSet {
    rules: [Rule; RULES_MAX],
    pub(super) rules_len: usize,
    alts: [Alt; ALTS_MAX],
    alts_len: usize,
    apps: [App; APPS_MAX],
    pub(super) apps_len: usize,
}

/// Tokens of one line: split on whitespace outside single quotes.
struct Tokens<'a> {
    s: &'a str,
}

impl<'a> Iterator for Tokens<'a> {
    type Item = &'a str;
    fn next(&mut self) -> Option<&'a str> {
        let s = self.s.trim_start();
        if s.is_empty() || s.starts_with('#') {
            self.s = "";
            return None;
        }
        let b = s.as_bytes();
        let mut i = 0;
        let mut quoted = false;
        while let Some(&c) = b.get(i) {
            if quoted {
                if c == b'\\' {
                    i += 1;
                } else if c == b'\'' {
                    quoted = false;
                }
            } else if c == b'\'' {
                quoted = true;
            } else if c.is_ascii_whitespace() || c == b'#' {
                break;
            }
            i += 1;
        }
        let i = i.min(s.len());
        let (tok, rest) = s.split_at(i);
        self.s = rest;
        Some(tok)
    }
}

fn num<T: core::str::FromStr>(s: &str, what: &'static str, line: usize) -> Result<T, RuleError> {
    s.parse().map_err(|_| RuleError { line, what })
}

fn hexval(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl RuleSet {
    pub(super) fn rules(&self) -> &[Rule] {
        self.rules.get(..self.rules_len).unwrap_or(&[])
    }

    pub(super) fn apps(&self) -> &[App] {
        self.apps.get(..self.apps_len).unwrap_or(&[])
    }

    pub(super) fn app(&self, i: u8) -> (u16, &'static str) {
        self.apps
            .get(usize::from(i))
            .map_or((0, "unknown"), |a| (a.id, a.name))
    }

    pub(super) fn parse(text: &'static str) -> Result<RuleSet, RuleError> {
        let mut set = RuleSet {
            rules: [RULE_BLANK; RULES_MAX],
            rules_len: 0,
            alts: [ALT_BLANK; ALTS_MAX],
            alts_len: 0,
            apps: [App { id: 0, name: "" }; APPS_MAX],
            apps_len: 0,
        };
        for (n, line) in text.lines().enumerate() {
            set.statement(line, n + 1)?;
        }
        Ok(set)
    }

    fn statement(&mut self, line: &'static str, ln: usize) -> Result<(), RuleError> {
        let err = |what| RuleError { line: ln, what };
        let mut t = Tokens { s: line };
        let Some(verb) = t.next() else {
            return Ok(());
        };
        match verb {
            "app" => {
                let id: u16 = num(t.next().ok_or(err("app: id missing"))?, "app: bad id", ln)?;
                let name = t.next().ok_or(err("app: name missing"))?;
                if id == 0 {
                    return Err(err("app: id 0 is reserved for unknown"));
                }
                if self.apps().iter().any(|a| a.id == id || a.name == name) {
                    return Err(err("app: id or name declared twice"));
                }
                let slot = self
                    .apps
                    .get_mut(self.apps_len)
                    .ok_or(err("too many apps (APPS_MAX)"))?;
                *slot = App { id, name };
                self.apps_len += 1;
            }
            "payload" | "port" | "proto" => {
                let name = t.next().ok_or(err("application name missing"))?;
                let app = self
                    .apps()
                    .iter()
                    .position(|a| a.name == name)
                    .ok_or(err("application not declared by an app line"))?
                    as u8;
                let mut r = Rule { app, ..RULE_BLANK };
                let l4 = t.next().ok_or(err("transport or protocol missing"))?;
                r.l4 = match (verb, l4) {
                    ("proto", p) => L4Sel::Proto(num(p, "proto: bad protocol number", ln)?),
                    (_, "tcp") => L4Sel::Tcp,
                    (_, "udp") => L4Sel::Udp,
                    (_, "any") => L4Sel::TcpUdp,
                    _ => return Err(err("transport must be tcp, udp or any")),
                };
                match verb {
                    "proto" => r.kind = RuleKind::Proto,
                    "port" => {
                        r.kind = RuleKind::Port;
                        let p = t.next().ok_or(err("port: port list missing"))?;
                        self.ports(&mut r, p, ln)?;
                        if r.nports == 0 {
                            return Err(err("port: empty port list"));
                        }
                    }
                    _ => {
                        r.kind = RuleKind::Payload;
                        let mut a = None;
                        let mut b = None;
                        for tok in t.by_ref() {
                            if let Some(p) = tok.strip_prefix("a=") {
                                a = Some(self.pattern(p, ln)?);
                            } else if let Some(p) = tok.strip_prefix("b=") {
                                b = Some(self.pattern(p, ln)?);
                            } else if let Some(p) = tok.strip_prefix("port=") {
                                self.ports(&mut r, p, ln)?;
                            } else {
                                return Err(err("payload: expected a=, b= or port="));
                            }
                        }
                        r.a = a.ok_or(err("payload: a= missing"))?;
                        r.b = match b {
                            Some(b) => b,
                            None => self.pattern("any", ln)?,
                        };
                    }
                }
                if t.next().is_some() {
                    return Err(err("trailing words"));
                }
                let slot = self
                    .rules
                    .get_mut(self.rules_len)
                    .ok_or(err("too many rules (RULES_MAX)"))?;
                *slot = r;
                self.rules_len += 1;
            }
            _ => return Err(err("unknown statement (app, payload, port, proto)")),
        }
        Ok(())
    }

    fn ports(&mut self, r: &mut Rule, list: &str, ln: usize) -> Result<(), RuleError> {
        for p in list.split(',').filter(|p| !p.is_empty()) {
            let v: u16 = num(p, "bad port", ln)?;
            let slot = r.ports.get_mut(usize::from(r.nports)).ok_or(RuleError {
                line: ln,
                what: "too many ports (PORTS_MAX)",
            })?;
            *slot = v;
            r.nports += 1;
        }
        Ok(())
    }

    fn pattern(&mut self, s: &str, ln: usize) -> Result<Pat, RuleError> {
        let err = |what| RuleError { line: ln, what };
        let start = self.alts_len;
        let b = s.as_bytes();
        let mut i = 0;
        loop {
            let mut alt = ALT_BLANK;
            // Base.
            if b.get(i) == Some(&b'\'') {
                i += 1;
                let mut value = [0u8; 4];
                let mut n = 0usize;
                loop {
                    let c = *b.get(i).ok_or(err("unterminated quote"))?;
                    i += 1;
                    let byte = match c {
                        b'\'' => break,
                        b'\\' => {
                            let e = *b.get(i).ok_or(err("bad escape"))?;
                            i += 1;
                            match e {
                                b'r' => b'\r',
                                b'n' => b'\n',
                                b't' => b'\t',
                                b'\\' => b'\\',
                                b'\'' => b'\'',
                                b'x' => {
                                    let h = b.get(i).copied().and_then(hexval);
                                    let l = b.get(i + 1).copied().and_then(hexval);
                                    i += 2;
                                    match (h, l) {
                                        (Some(h), Some(l)) => h << 4 | l,
                                        _ => return Err(err("bad \\x escape")),
                                    }
                                }
                                _ => return Err(err("bad escape")),
                            }
                        }
                        c => c,
                    };
                    *value.get_mut(n).ok_or(err("text longer than 4 bytes"))? = byte;
                    n += 1;
                }
                if n == 0 {
                    return Err(err("empty text"));
                }
                let mut mask = [0u8; 4];
                for m in mask.iter_mut().take(n) {
                    *m = 0xff;
                }
                alt.base = Base::Bytes {
                    value,
                    mask,
                    n: n as u8,
                };
            } else {
                let end = b[i..]
                    .iter()
                    .position(|c| matches!(c, b'|' | b'&' | b'@'))
                    .map_or(b.len(), |p| i + p);
                let word = s.get(i..end).ok_or(err("bad pattern"))?;
                i = end;
                alt.base = match word {
                    "none" => Base::None,
                    "some" => Base::Some,
                    "any" => Base::Any,
                    w => {
                        let wb = w.as_bytes();
                        if wb.is_empty() || wb.len() % 2 != 0 || wb.len() > 8 {
                            return Err(err("hex pattern needs 2, 4, 6 or 8 digits"));
                        }
                        let mut value = [0u8; 4];
                        let mut mask = [0u8; 4];
                        for (k, c) in wb.iter().enumerate() {
                            let (v, m) = match c {
                                b'?' => (0, 0),
                                c => (hexval(*c).ok_or(err("bad hex digit"))?, 0xf),
                            };
                            let shift = if k % 2 == 0 { 4 } else { 0 };
                            value[k / 2] |= v << shift;
                            mask[k / 2] |= m << shift;
                        }
                        Base::Bytes {
                            value,
                            mask,
                            n: (wb.len() / 2) as u8,
                        }
                    }
                };
            }
            // Checks.
            while b.get(i) == Some(&b'&') {
                i += 1;
                let end = b[i..]
                    .iter()
                    .position(|c| matches!(c, b'|' | b'&' | b'@'))
                    .map_or(b.len(), |p| i + p);
                alt.checks |= match s.get(i..end) {
                    Some("lp16") => CHK_LP16,
                    Some("be32") => CHK_BE32,
                    Some("rm32") => CHK_RM32,
                    Some("le24") => CHK_LE24,
                    Some("tpkt") => CHK_TPKT,
                    Some("nbss") => CHK_NBSS,
                    Some("stun") => CHK_STUN,
                    _ => return Err(err("unknown check")),
                };
                i = end;
            }
            // Size.
            if b.get(i) == Some(&b'@') {
                i += 1;
                let end = b[i..]
                    .iter()
                    .position(|c| *c == b'|')
                    .map_or(b.len(), |p| i + p);
                let spec = s.get(i..end).ok_or(err("bad size"))?;
                i = end;
                match spec.split_once('-') {
                    None => {
                        let n = num(spec, "bad size", ln)?;
                        alt.len_min = n;
                        alt.len_max = n;
                    }
                    Some((lo, "")) => alt.len_min = num(lo, "bad size", ln)?,
                    Some((lo, hi)) => {
                        alt.len_min = num(lo, "bad size", ln)?;
                        alt.len_max = num(hi, "bad size", ln)?;
                    }
                }
                if alt.base == Base::None {
                    return Err(err("none has no size"));
                }
            }
            let slot = self
                .alts
                .get_mut(self.alts_len)
                .ok_or(err("too many pattern alternatives (ALTS_MAX)"))?;
            *slot = alt;
            self.alts_len += 1;
            match b.get(i) {
                None => break,
                Some(b'|') => i += 1,
                Some(_) => return Err(err("bad pattern")),
            }
        }
        Ok(Pat {
            start: start as u16,
            len: (self.alts_len - start) as u16,
        })
    }

    pub(super) fn pat_matches(&self, p: Pat, h: &PayloadHead) -> bool {
        let s = usize::from(p.start);
        let alts = self.alts.get(s..s + usize::from(p.len)).unwrap_or(&[]);
        alts.iter().any(|a| alt_matches(a, h))
    }
}

fn alt_matches(a: &Alt, h: &PayloadHead) -> bool {
    match a.base {
        Base::Any => return true,
        Base::None => return h.len == 0,
        Base::Some => {
            if h.len == 0 {
                return false;
            }
        }
        Base::Bytes { value, mask, n } => {
            if h.len == 0 || h.captured < n {
                return false;
            }
            for k in 0..usize::from(n) {
                if h.bytes[k] & mask[k] != value[k] {
                    return false;
                }
            }
        }
    }
    if h.len < a.len_min || h.len > a.len_max {
        return false;
    }
    a.checks == 0 || checks_pass(a.checks, h)
}

fn checks_pass(c: u8, h: &PayloadHead) -> bool {
    let b = h.bytes;
    let len = h.len;
    let cap = h.captured;
    let need = |n: u8| cap >= n;
    let be16 = |i: usize| u32::from(u16::from_be_bytes([b[i], b[i + 1]]));
    (c & CHK_LP16 == 0 || (need(2) && be16(0) + 2 == len))
        && (c & CHK_BE32 == 0 || (need(4) && u32::from_be_bytes(b) == len))
        && (c & CHK_RM32 == 0
            || (need(4) && u64::from(u32::from_be_bytes(b)) + 4 == u64::from(len)))
        && (c & CHK_LE24 == 0 || (need(3) && u32::from_le_bytes([b[0], b[1], b[2], 0]) + 4 == len))
        && (c & CHK_TPKT == 0 || (need(4) && be16(2) == len))
        && (c & CHK_NBSS == 0 || (need(4) && u32::from_be_bytes([0, b[1], b[2], b[3]]) + 4 == len))
        && (c & CHK_STUN == 0 || (need(4) && be16(2) + 20 == len))
}

//! Application labels per flow, libprotoident-style.
//!
//! A flow is named from very little: the first up to 4 payload bytes and the
//! size of the first payload in each direction ([`FirstPayload`]), the ports
//! and the IP protocol. That survives snaplen truncation and address
//! anonymisation, and costs the flow table one branch per packet (the head is
//! kept once per direction, at the first packet that carries payload).
//!
//! The rules are data: [`RULES_TEXT`] (`rules.txt` next to this file, written
//! from the protocols' specifications, each rule citing its source) is
//! compiled in and parsed once at start-up by [`Classifier::builtin`] into
//! fixed-size tables (no allocation; [`RULES_MAX`], [`ALTS_MAX`], [`APPS_MAX`]
//! bound it). [`Classifier::classify`] is a pure function of the flow's
//! protocol, ports and first payloads; it tries rules in file order:
//!
//! 1. `payload` rules (the label's [`Method::Payload`]): the first bytes and
//!    sizes in the two directions match the rule's two patterns (in either
//!    order: the rules do not need to know who spoke first);
//! 2. `port` rules ([`Method::Port`]): a port-only guess, marked as such;
//! 3. `proto` rules ([`Method::Proto`]): IP protocols without ports (GRE,
//!    ESP, ICMP, ...).
//!
//! Nothing matched: [`Label::UNKNOWN`]. The rules file format is documented
//! at the top of `rules.txt` and in `docs/applabel.md`.

mod rules;

pub use rules::{ALTS_MAX, APPS_MAX, PORTS_MAX, RULES_MAX, RuleError};

use rules::{L4Sel, Rule, RuleKind};

/// The compiled-in rules file.
pub const RULES_TEXT: &str = include_str!("rules.txt");

/// The first payload of one direction of a flow: its size (L4 payload bytes
/// as the IP header states them, so snaplen does not change it) and its
/// first up to 4 bytes as captured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct PayloadHead {
    /// Payload bytes of the packet (0 = no payload seen in this direction).
    pub len: u32,
    /// The first `captured` payload bytes (the rest are 0).
    pub bytes: [u8; 4],
    /// How many of `bytes` were in the capture (0..=4; below 4 when the
    /// payload is shorter or the snaplen cut it).
    pub captured: u8,
}

impl PayloadHead {
    /// No payload.
    pub const NONE: PayloadHead = PayloadHead {
        len: 0,
        bytes: [0; 4],
        captured: 0,
    };

    /// The head of a payload of `len` bytes whose captured part is `data`.
    #[inline]
    pub fn new(len: u32, data: &[u8]) -> PayloadHead {
        let mut bytes = [0u8; 4];
        let n = data.len().min(4).min(len as usize);
        if let (Some(dst), Some(src)) = (bytes.get_mut(..n), data.get(..n)) {
            dst.copy_from_slice(src);
        }
        PayloadHead {
            len,
            bytes,
            captured: n as u8,
        }
    }

    /// Whether a payload was seen.
    #[inline]
    pub fn is_some(&self) -> bool {
        self.len > 0
    }
}

/// The first payload of each direction of a flow, indexed like the flow
/// record's per-direction arrays (`[a→b, b→a]`). Kept once per direction:
/// [`FirstPayload::note`] only writes while that direction is still empty.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct FirstPayload {
    /// `[a→b, b→a]`.
    pub dir: [PayloadHead; 2],
}

impl FirstPayload {
    /// Nothing seen yet.
    pub const EMPTY: FirstPayload = FirstPayload {
        dir: [PayloadHead::NONE; 2],
    };

    /// Keep `p` as direction `d`'s first payload if that direction has none
    /// yet and `p` carries payload. One compare for every later packet.
    #[inline(always)]
    pub fn note(&mut self, d: usize, p: &PayloadHead) {
        if p.len != 0
            && let Some(s) = self.dir.get_mut(d)
            && s.len == 0
        {
            *s = *p;
        }
    }
}

/// How a label was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Method {
    /// No rule matched.
    Unknown = 0,
    /// The payload heads (and sizes) matched a `payload` rule.
    Payload = 1,
    /// A port-only guess (`port` rule): nothing in the payload confirmed it.
    Port = 2,
    /// The IP protocol number (`proto` rule), for protocols without ports.
    Proto = 3,
}

impl Method {
    /// `unknown`, `payload`, `port` or `proto`.
    pub fn name(self) -> &'static str {
        match self {
            Method::Unknown => "unknown",
            Method::Payload => "payload",
            Method::Port => "port",
            Method::Proto => "proto",
        }
    }
}

/// RFC 6759 classification engine ids linecap uses in IPFIX
/// `applicationId` (IE 95). See `docs/applabel.md`.
pub mod engine {
    /// IANA-L3: the selector is the IP protocol number (1 byte); `proto` labels.
    pub const IANA_L3: u8 = 1;
    /// IANA-L4: the selector is the well-known port (2 bytes); `port` labels.
    pub const IANA_L4: u8 = 3;
    /// USER-Defined: the selector is linecap's application id from
    /// `rules.txt` (2 bytes, big-endian); `payload` labels.
    pub const USER_DEFINED: u8 = 6;
}

/// A flow's application label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Label {
    /// linecap's application id (the `app` lines of `rules.txt`; 0 = unknown).
    pub app: u16,
    /// The application's name (`unknown` when none).
    pub name: &'static str,
    /// How the label was reached.
    pub method: Method,
    /// For `port` labels the port that matched; for `proto` labels the IP
    /// protocol number; else 0.
    pub selector: u16,
}

impl Label {
    /// No rule matched.
    pub const UNKNOWN: Label = Label {
        app: 0,
        name: "unknown",
        method: Method::Unknown,
        selector: 0,
    };

    /// Whether a rule named the flow.
    pub fn is_known(&self) -> bool {
        self.method != Method::Unknown
    }

    /// The RFC 6759 `applicationId` (IE 95) octets: engine id then selector,
    /// written into `out`; returns the length used (0 for unknown).
    pub fn application_id(&self, out: &mut [u8; 3]) -> usize {
        match self.method {
            Method::Unknown => 0,
            Method::Payload => {
                let s = self.app.to_be_bytes();
                *out = [engine::USER_DEFINED, s[0], s[1]];
                3
            }
            Method::Port => {
                let s = self.selector.to_be_bytes();
                *out = [engine::IANA_L4, s[0], s[1]];
                3
            }
            Method::Proto => {
                *out = [engine::IANA_L3, self.selector as u8, 0];
                2
            }
        }
    }
}

/// The parsed rule set. See the module documentation.
#[derive(Clone)]
pub struct Classifier {
    set: rules::RuleSet,
}

impl core::fmt::Debug for Classifier {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Classifier")
            .field("rules", &self.set.rules_len)
            .field("apps", &self.set.apps_len)
            .finish()
    }
}

impl Classifier {
    /// The compiled-in rules ([`RULES_TEXT`]).
    pub fn builtin() -> Result<Classifier, RuleError> {
        Self::parse(RULES_TEXT)
    }

    /// Rules from `text` (the `rules.txt` format).
    pub fn parse(text: &'static str) -> Result<Classifier, RuleError> {
        Ok(Classifier {
            set: rules::RuleSet::parse(text)?,
        })
    }

    /// Number of rules.
    pub fn rules(&self) -> usize {
        self.set.rules_len
    }

    /// The application names with their ids, in file order.
    pub fn apps(&self) -> impl Iterator<Item = (u16, &'static str)> + '_ {
        self.set.apps().iter().map(|a| (a.id, a.name))
    }

    /// Name a flow from its IP protocol, its two ports (either order) and
    /// its first payloads (either order).
    pub fn classify(
        &self,
        proto: u8,
        port_x: u16,
        port_y: u16,
        x: &PayloadHead,
        y: &PayloadHead,
    ) -> Label {
        for r in self.set.rules() {
            if let Some(sel) = self.rule_matches(r, proto, port_x, port_y, x, y) {
                let (id, name) = self.set.app(r.app);
                return Label {
                    app: id,
                    name,
                    method: match r.kind {
                        RuleKind::Payload => Method::Payload,
                        RuleKind::Port => Method::Port,
                        RuleKind::Proto => Method::Proto,
                    },
                    selector: sel,
                };
            }
        }
        Label::UNKNOWN
    }

    /// Name a flow from its [`FirstPayload`].
    pub fn classify_flow(&self, proto: u8, port_a: u16, port_b: u16, fp: &FirstPayload) -> Label {
        self.classify(proto, port_a, port_b, &fp.dir[0], &fp.dir[1])
    }

    /// Name the flow of `key` from its [`FirstPayload`]: a non-first
    /// fragment flow has no ports and no L4 header, so only its protocol
    /// counts. The one rule for live records, `linecap flows` and
    /// `linecap process`.
    pub fn classify_key(&self, key: &crate::flow::FlowKey, fp: &FirstPayload) -> Label {
        if key.is_fragment() {
            return self.classify(key.proto(), 0, 0, &PayloadHead::NONE, &PayloadHead::NONE);
        }
        self.classify_flow(key.proto(), key.port_a(), key.port_b(), fp)
    }

    fn rule_matches(
        &self,
        r: &Rule,
        proto: u8,
        px: u16,
        py: u16,
        x: &PayloadHead,
        y: &PayloadHead,
    ) -> Option<u16> {
        let l4_ok = match r.l4 {
            L4Sel::Tcp => proto == 6,
            L4Sel::Udp => proto == 17,
            L4Sel::TcpUdp => proto == 6 || proto == 17,
            L4Sel::Proto(p) => proto == p,
        };
        if !l4_ok {
            return None;
        }
        let port = if r.ports().is_empty() {
            0
        } else if r.ports().contains(&px) {
            px
        } else if r.ports().contains(&py) {
            py
        } else {
            return None;
        };
        match r.kind {
            RuleKind::Payload => {
                let fwd = self.set.pat_matches(r.a, x) && self.set.pat_matches(r.b, y);
                let rev = fwd || (self.set.pat_matches(r.a, y) && self.set.pat_matches(r.b, x));
                rev.then_some(0)
            }
            RuleKind::Port => Some(port),
            RuleKind::Proto => Some(u16::from(proto)),
        }
    }
}

#[cfg(test)]
mod tests;

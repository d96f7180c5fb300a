//! Application labels of flow records: the compiled-in rule set
//! (`linecap_wire::applabel`, parsed once per process) applied to a record's
//! protocol, ports and [`FirstPayload`](linecap_wire::applabel::FirstPayload).
//!
//! Labelling happens when a record is exported or listed, once per record;
//! the packet path only keeps the first payload heads (see `flowtable`).

use std::sync::OnceLock;

use linecap_wire::applabel::{Classifier, Label, RuleError};

use crate::flowtable::FlowRecord;

static BUILTIN: OnceLock<Result<Classifier, RuleError>> = OnceLock::new();

/// The compiled-in classifier, parsed on first use.
pub fn classifier() -> Result<&'static Classifier, RuleError> {
    BUILTIN
        .get_or_init(Classifier::builtin)
        .as_ref()
        .map_err(|e| *e)
}

/// The label of `r` ([`Label::UNKNOWN`] if the compiled-in rules do not
/// parse, which a unit test rules out; callers check [`classifier`] at
/// start-up to report it).
pub fn label(r: &FlowRecord) -> Label {
    match classifier() {
        Ok(c) => label_with(c, r),
        Err(_) => Label::UNKNOWN,
    }
}

/// The label of `r` by the rules in `c`.
pub fn label_with(c: &Classifier, r: &FlowRecord) -> Label {
    c.classify_key(&r.key, &r.first_payload)
}

/// `HHHHHHHH/LEN` of one direction's first payload (the captured bytes in
/// hex, then the payload size), or `-` when that direction had none: the
/// raw material for relabelling outside linecap.
pub fn head_text(h: &linecap_wire::applabel::PayloadHead) -> String {
    use std::fmt::Write;
    if !h.is_some() {
        return "-".into();
    }
    let mut s = String::with_capacity(16);
    for b in h.bytes.iter().take(usize::from(h.captured)) {
        let _ = write!(s, "{b:02x}");
    }
    let _ = write!(s, "/{}", h.len);
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use linecap_wire::applabel::PayloadHead;

    #[test]
    fn builtin_parses() {
        assert!(classifier().is_ok());
    }

    #[test]
    fn head_text_format() {
        assert_eq!(head_text(&PayloadHead::NONE), "-");
        assert_eq!(head_text(&PayloadHead::new(300, b"GET /")), "47455420/300");
        assert_eq!(head_text(&PayloadHead::new(2, b"ab")), "6162/2");
    }
}

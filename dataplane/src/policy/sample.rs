//! Packet sampling: 1-in-N, probabilistic, and flow-consistent.
//!
//! A [`Sampler`] belongs to one queue's worker (per queue, per job): no
//! sharing, no atomics. Randomness is an argument: the probabilistic modes
//! take a seed, so a run is reproducible, and the PRNG is SplitMix64 (no
//! crate, 8 bytes of state).
//!
//! * [`SamplePolicy::EveryNth`] keeps exactly the N-th, 2N-th, ... packet the
//!   sampler is asked about (count-based, deterministic);
//! * [`SamplePolicy::Random`] keeps each packet independently with
//!   probability `p` (the number kept over `n` packets is Binomial(n, p));
//! * [`SamplePolicy::FlowsOneIn`] / [`SamplePolicy::FlowsRandom`] decide per
//!   flow: a keyed mix of the flow key's hash ([`crate::flowtable::flow_hash`]
//!   of the canonical, direction-free key), so both directions and every
//!   packet of a flow get the same decision and a kept flow is never split.
//!   The seed picks which flows; the same seed picks the same flows on every
//!   queue and every run. Frames without a flow key (non-IP, truncated,
//!   malformed) are sampled per packet at the same rate (count-based for
//!   `FlowsOneIn`, random for `FlowsRandom`).
//!
//! The worker runs the sampler after the filter (only frames the filter
//! kept are counted for 1-in-N) and, for the flow modes, after the parse.

use linecap_wire::flow::{FlowKey, Parsed};

use crate::flowtable::{KeyHash, flow_hash};

/// How a job samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SamplePolicy {
    /// Keep every packet.
    All,
    /// Keep exactly every `n`-th packet (the `n`-th, `2n`-th, ...).
    EveryNth {
        /// 1 or more.
        n: u64,
    },
    /// Keep each packet with probability `p`.
    Random {
        /// In `[0, 1]`.
        p: f64,
        /// PRNG seed.
        seed: u64,
    },
    /// Keep the flows whose keyed hash is 0 modulo `n` (about 1 in `n`).
    FlowsOneIn {
        /// 1 or more.
        n: u64,
        /// Picks which flows.
        seed: u64,
    },
    /// Keep the flows whose keyed hash is below `p · 2^64`.
    FlowsRandom {
        /// In `[0, 1]`.
        p: f64,
        /// Picks which flows.
        seed: u64,
    },
}

/// Why a policy was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum SampleError {
    /// `n` was 0.
    ZeroN,
    /// `p` was outside `[0, 1]` or not a number.
    BadProbability(f64),
    /// The text form did not parse.
    Syntax(String),
}

impl std::fmt::Display for SampleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SampleError::ZeroN => write!(f, "sampling 1-in-N needs N >= 1"),
            SampleError::BadProbability(p) => {
                write!(f, "sampling probability {p} is not in [0, 1]")
            }
            SampleError::Syntax(s) => write!(
                f,
                "sampling {s:?}: expected all, N (1-in-N), every:N, random:P[:SEED], \
                 flows:N[:SEED] or flows-random:P[:SEED]"
            ),
        }
    }
}

impl std::error::Error for SampleError {}

impl SamplePolicy {
    /// The fraction of packets (or flows) kept, nominally: 1/N or p. For the
    /// manifest and the flow records.
    pub fn rate(&self) -> f64 {
        match *self {
            SamplePolicy::All => 1.0,
            SamplePolicy::EveryNth { n } | SamplePolicy::FlowsOneIn { n, .. } => 1.0 / n as f64,
            SamplePolicy::Random { p, .. } | SamplePolicy::FlowsRandom { p, .. } => p,
        }
    }

    /// Whether the decision is per flow.
    pub fn is_flow_consistent(&self) -> bool {
        matches!(
            self,
            SamplePolicy::FlowsOneIn { .. } | SamplePolicy::FlowsRandom { .. }
        )
    }
}

impl std::fmt::Display for SamplePolicy {
    /// The text form [`SamplePolicy::from_str`] reads (for manifests).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            SamplePolicy::All => write!(f, "all"),
            SamplePolicy::EveryNth { n } => write!(f, "every:{n}"),
            SamplePolicy::Random { p, seed } => write!(f, "random:{p}:{seed}"),
            SamplePolicy::FlowsOneIn { n, seed } => write!(f, "flows:{n}:{seed}"),
            SamplePolicy::FlowsRandom { p, seed } => write!(f, "flows-random:{p}:{seed}"),
        }
    }
}

impl std::str::FromStr for SamplePolicy {
    type Err = SampleError;
    /// `all`, `N` or `every:N`, `random:P[:SEED]`, `flows:N[:SEED]`,
    /// `flows-random:P[:SEED]` (seed 0 when left out).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let syntax = || SampleError::Syntax(s.to_string());
        let mut parts = s.split(':');
        let kind = parts.next().unwrap_or("");
        let a = parts.next();
        let seed = match parts.next() {
            Some(x) => x.parse::<u64>().map_err(|_| syntax())?,
            None => 0,
        };
        if parts.next().is_some() {
            return Err(syntax());
        }
        let n = |x: Option<&str>| x.and_then(|x| x.parse::<u64>().ok()).ok_or_else(syntax);
        let p = |x: Option<&str>| x.and_then(|x| x.parse::<f64>().ok()).ok_or_else(syntax);
        let policy = match kind {
            "all" if a.is_none() => SamplePolicy::All,
            "every" => SamplePolicy::EveryNth { n: n(a)? },
            "random" => SamplePolicy::Random { p: p(a)?, seed },
            "flows" => SamplePolicy::FlowsOneIn { n: n(a)?, seed },
            "flows-random" => SamplePolicy::FlowsRandom { p: p(a)?, seed },
            k if a.is_none() => SamplePolicy::EveryNth {
                n: k.parse().map_err(|_| syntax())?,
            },
            _ => return Err(syntax()),
        };
        if (kind == "every" || kind == "all") && s.matches(':').count() > 1 {
            return Err(syntax());
        }
        Sampler::new(policy).map(|_| policy)
    }
}

/// SplitMix64's output mix (a bijection of u64 with good avalanche).
#[inline(always)]
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// SplitMix64 (Steele, Lea, Flood 2014): the seeded, reproducible PRNG.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator from `seed`.
    pub const fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// The next 64 random bits.
    #[inline(always)]
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.state)
    }
}

/// `p · 2^64` as a threshold: keep when a uniform u64 is below it; `None`
/// means keep always (p = 1).
fn threshold(p: f64) -> Option<u64> {
    if p >= 1.0 {
        None
    } else {
        // p in [0, 1): the product is below 2^64 and the cast exact enough
        // (53-bit mantissa).
        Some((p * 18_446_744_073_709_551_616.0) as u64)
    }
}

#[derive(Debug, Clone, Copy)]
enum Rule {
    All,
    Count { n: u64, left: u64 },
    Random { below: Option<u64>, rng: SplitMix64 },
}

impl Rule {
    #[inline(always)]
    fn keep(&mut self) -> bool {
        match self {
            Rule::All => true,
            Rule::Count { n, left } => {
                *left -= 1;
                if *left == 0 {
                    *left = *n;
                    true
                } else {
                    false
                }
            }
            Rule::Random { below, rng } => {
                let r = rng.next_u64();
                below.is_none_or(|b| r < b)
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum FlowRule {
    OneIn(u64),
    Below(Option<u64>),
}

/// A sampler: one per queue and job. See the module documentation.
#[derive(Debug, Clone)]
pub struct Sampler {
    policy: SamplePolicy,
    /// The per-packet rule (also for frames without a flow key in the flow
    /// modes).
    packets: Rule,
    /// The per-flow rule and its key, in the flow modes.
    flows: Option<(FlowRule, u64)>,
}

impl Sampler {
    /// A sampler for `policy`; refuses `n = 0` and `p` outside `[0, 1]`.
    pub fn new(policy: SamplePolicy) -> Result<Sampler, SampleError> {
        let check_n = |n: u64| {
            if n == 0 {
                Err(SampleError::ZeroN)
            } else {
                Ok(n)
            }
        };
        let check_p = |p: f64| {
            if (0.0..=1.0).contains(&p) {
                Ok(p)
            } else {
                Err(SampleError::BadProbability(p))
            }
        };
        let (packets, flows) = match policy {
            SamplePolicy::All => (Rule::All, None),
            SamplePolicy::EveryNth { n } => (
                Rule::Count {
                    n: check_n(n)?,
                    left: n,
                },
                None,
            ),
            SamplePolicy::Random { p, seed } => (
                Rule::Random {
                    below: threshold(check_p(p)?),
                    rng: SplitMix64::new(seed),
                },
                None,
            ),
            SamplePolicy::FlowsOneIn { n, seed } => (
                Rule::Count {
                    n: check_n(n)?,
                    left: n,
                },
                Some((FlowRule::OneIn(n), seed)),
            ),
            SamplePolicy::FlowsRandom { p, seed } => {
                let below = threshold(check_p(p)?);
                (
                    Rule::Random {
                        below,
                        rng: SplitMix64::new(seed),
                    },
                    Some((FlowRule::Below(below), seed)),
                )
            }
        };
        Ok(Sampler {
            policy,
            packets,
            flows,
        })
    }

    /// The policy.
    pub fn policy(&self) -> SamplePolicy {
        self.policy
    }

    /// Whether the decision needs the parse ([`Sampler::keep`]'s `parsed`);
    /// when false, [`Sampler::keep_packet`] is enough.
    pub fn needs_parse(&self) -> bool {
        self.flows.is_some()
    }

    /// The per-packet decision (count or PRNG); in the flow modes, the rule
    /// for frames without a flow key.
    #[inline(always)]
    pub fn keep_packet(&mut self) -> bool {
        self.packets.keep()
    }

    /// The per-flow decision for a canonical flow key (a pure function of
    /// the key and the seed); `true` when the policy is not per flow.
    #[inline(always)]
    pub fn keep_flow(&self, key: &FlowKey) -> bool {
        match self.flows {
            None => true,
            Some((rule, seed)) => {
                let h = mix64(flow_hash(key) ^ seed);
                match rule {
                    FlowRule::OneIn(n) => h.is_multiple_of(n),
                    FlowRule::Below(below) => below.is_none_or(|b| h < b),
                }
            }
        }
    }

    /// [`Sampler::keep`] with the frame's [`flow_hash`] (and the table's
    /// check, [`KeyHash`]) cached in `hash`: computed here only if the flow
    /// modes need it and nobody did yet, so the worker hashes a frame once
    /// for sampling and the flow table.
    #[inline(always)]
    pub fn keep_hashed(&mut self, parsed: &Parsed, hash: &mut Option<KeyHash>) -> bool {
        match (self.flows, parsed) {
            (Some((rule, seed)), Parsed::Ip(info)) => {
                let kh = hash.get_or_insert_with(|| KeyHash::of(&info.key));
                let h = mix64(kh.hash() ^ seed);
                match rule {
                    FlowRule::OneIn(n) => h.is_multiple_of(n),
                    FlowRule::Below(below) => below.is_none_or(|b| h < b),
                }
            }
            _ => self.keep_packet(),
        }
    }

    /// The decision for one frame: per flow for IP frames in the flow modes,
    /// per packet otherwise.
    #[inline(always)]
    pub fn keep(&mut self, parsed: &Parsed) -> bool {
        match (self.flows.is_some(), parsed) {
            (true, Parsed::Ip(info)) => self.keep_flow(&info.key),
            _ => self.keep_packet(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use linecap_reader::read::{CaptureReader, Packet};
    use linecap_wire::flow::parse_frame;
    use std::collections::HashMap;
    use std::path::Path;

    #[test]
    fn keep_hashed_equals_keep_and_hashes_once() {
        let frames: Vec<Vec<u8>> = (0..200u8)
            .map(|i| {
                let mut f = vec![0u8; 60];
                f[12] = 0x08;
                f[14] = 0x45;
                f[16] = 0;
                f[17] = 46;
                f[23] = 17;
                f[26..30].copy_from_slice(&[10, 0, 0, i]);
                f[30..34].copy_from_slice(&[10, 0, 1, 1]);
                f[34] = i;
                f
            })
            .collect();
        for policy in [
            SamplePolicy::FlowsOneIn { n: 3, seed: 7 },
            SamplePolicy::EveryNth { n: 3 },
        ] {
            let mut a = Sampler::new(policy).unwrap();
            let mut b = Sampler::new(policy).unwrap();
            for f in &frames {
                let p = parse_frame(f);
                let mut h = None;
                assert_eq!(a.keep(&p), b.keep_hashed(&p, &mut h));
                if let (Parsed::Ip(info), Some(h)) = (p, h) {
                    assert_eq!(h, KeyHash::of(&info.key));
                    assert_eq!(h.hash(), flow_hash(&info.key));
                }
            }
        }
    }

    #[test]
    fn every_nth_keeps_exactly_every_nth() {
        for n in [1u64, 2, 3, 7, 100, 1000] {
            let mut s = Sampler::new(SamplePolicy::EveryNth { n }).unwrap();
            for i in 1..=10_000u64 {
                assert_eq!(s.keep_packet(), i % n == 0, "n={n} packet {i}");
            }
        }
        let mut all = Sampler::new(SamplePolicy::All).unwrap();
        assert!((0..1000).all(|_| all.keep(&Parsed::NonIp)));
    }

    /// Kept count over `n` packets within 5 standard deviations of n·p.
    fn assert_binomial(kept: u64, n: u64, p: f64) {
        let mean = n as f64 * p;
        let sd = (n as f64 * p * (1.0 - p)).sqrt();
        assert!(
            (kept as f64 - mean).abs() <= 5.0 * sd + 1e-9,
            "kept {kept} of {n} at p={p}: mean {mean}, sd {sd}"
        );
    }

    #[test]
    fn random_is_binomial_and_reproducible() {
        const N: u64 = 1_000_000;
        for (p, seed) in [(0.5, 1u64), (0.1, 2), (0.01, 3), (0.001, 4), (0.9999, 5)] {
            let mut s = Sampler::new(SamplePolicy::Random { p, seed }).unwrap();
            let mut kept = 0u64;
            let mut runs_of_keeps = Vec::new();
            for i in 0..N {
                if s.keep_packet() {
                    kept += 1;
                    if runs_of_keeps.len() < 1000 {
                        runs_of_keeps.push(i);
                    }
                }
            }
            assert_binomial(kept, N, p);
            // The same seed gives the same packets.
            let mut again = Sampler::new(SamplePolicy::Random { p, seed }).unwrap();
            let replay: Vec<u64> = (0..N).filter(|_| again.keep_packet()).take(1000).collect();
            assert_eq!(replay, runs_of_keeps);
            // Another seed gives others.
            let mut other = Sampler::new(SamplePolicy::Random {
                p,
                seed: seed + 100,
            })
            .unwrap();
            let o: Vec<u64> = (0..N).filter(|_| other.keep_packet()).take(1000).collect();
            assert_ne!(o, runs_of_keeps);
        }
        let mut none = Sampler::new(SamplePolicy::Random { p: 0.0, seed: 9 }).unwrap();
        assert!((0..100_000).all(|_| !none.keep_packet()));
        let mut all = Sampler::new(SamplePolicy::Random { p: 1.0, seed: 9 }).unwrap();
        assert!((0..100_000).all(|_| all.keep_packet()));
    }

    #[test]
    fn flow_sampling_of_synthetic_flows_is_binomial() {
        use linecap_wire::flow::{IpFamily, VlanStack};
        const FLOWS: u64 = 1_000_000;
        for policy in [
            SamplePolicy::FlowsOneIn { n: 10, seed: 7 },
            SamplePolicy::FlowsOneIn { n: 1000, seed: 8 },
            SamplePolicy::FlowsRandom { p: 0.25, seed: 9 },
        ] {
            let s = Sampler::new(policy).unwrap();
            let mut kept = 0u64;
            for i in 0..FLOWS {
                let mut src = [0u8; 16];
                src[..4].copy_from_slice(&(0x0a00_0000u32 + (i as u32 >> 8)).to_be_bytes());
                let mut dst = [0u8; 16];
                dst[..4].copy_from_slice(&[192, 0, 2, 1]);
                let (key, _) = FlowKey::from_endpoints(
                    VlanStack::new(),
                    6,
                    false,
                    IpFamily::V4,
                    src,
                    1024 + (i & 0xff) as u16,
                    dst,
                    80,
                );
                kept += u64::from(s.keep_flow(&key));
            }
            assert_binomial(kept, FLOWS, policy.rate());
        }
    }

    #[test]
    fn flow_sampling_never_splits_a_flow_of_real_traces() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/traces/");
        let mut traces: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        traces.sort();
        assert_eq!(traces.len(), 40);
        let mut flows_seen = 0usize;
        let mut flows_kept = 0usize;
        for policy in [
            SamplePolicy::FlowsOneIn { n: 3, seed: 1 },
            SamplePolicy::FlowsRandom { p: 0.5, seed: 2 },
        ] {
            for t in &traces {
                let mut s = Sampler::new(policy).unwrap();
                // flow key -> (packets, kept)
                let mut per_flow: HashMap<FlowKey, (u64, u64)> = HashMap::new();
                let mut r = CaptureReader::open(Path::new(t)).unwrap();
                let mut pkt = Packet::default();
                while r.next(&mut pkt).unwrap() {
                    let parsed = parse_frame(&pkt.data);
                    let keep = s.keep(&parsed);
                    if let Parsed::Ip(info) = parsed {
                        let e = per_flow.entry(info.key).or_default();
                        e.0 += 1;
                        e.1 += u64::from(keep);
                    }
                }
                for (key, (packets, kept)) in &per_flow {
                    assert!(
                        *kept == 0 || kept == packets,
                        "{}: flow {key:?} split: {kept} of {packets}",
                        t.display()
                    );
                }
                flows_seen += per_flow.len();
                flows_kept += per_flow.values().filter(|(_, k)| *k > 0).count();
            }
        }
        // Some flows kept, some not.
        assert!(
            flows_kept > 0 && flows_kept < flows_seen,
            "{flows_kept}/{flows_seen}"
        );
    }

    #[test]
    fn flow_modes_sample_non_ip_frames_per_packet() {
        let mut s = Sampler::new(SamplePolicy::FlowsOneIn { n: 4, seed: 0 }).unwrap();
        assert!(s.needs_parse());
        let kept: Vec<bool> = (0..8).map(|_| s.keep(&Parsed::NonIp)).collect();
        assert_eq!(kept, [false, false, false, true, false, false, false, true]);
        assert!(
            !Sampler::new(SamplePolicy::EveryNth { n: 4 })
                .unwrap()
                .needs_parse()
        );
    }

    #[test]
    fn policies_parse_validate_and_print() {
        for (text, want) in [
            ("all", SamplePolicy::All),
            ("100", SamplePolicy::EveryNth { n: 100 }),
            ("every:7", SamplePolicy::EveryNth { n: 7 }),
            ("random:0.25", SamplePolicy::Random { p: 0.25, seed: 0 }),
            ("random:0.25:42", SamplePolicy::Random { p: 0.25, seed: 42 }),
            ("flows:16:3", SamplePolicy::FlowsOneIn { n: 16, seed: 3 }),
            (
                "flows-random:0.5:1",
                SamplePolicy::FlowsRandom { p: 0.5, seed: 1 },
            ),
        ] {
            let got: SamplePolicy = text.parse().unwrap();
            assert_eq!(got, want, "{text}");
            assert_eq!(got.to_string().parse::<SamplePolicy>().unwrap(), want);
        }
        for bad in [
            "",
            "0",
            "every:0",
            "random:1.5",
            "random:-0.1",
            "random:nan",
            "x:1",
            "every:3:4:5",
            "every:2:1",
            "flows",
        ] {
            assert!(bad.parse::<SamplePolicy>().is_err(), "{bad:?} accepted");
        }
        assert_eq!(SamplePolicy::EveryNth { n: 4 }.rate(), 0.25);
        assert!(SamplePolicy::FlowsRandom { p: 0.1, seed: 0 }.is_flow_consistent());
    }
}

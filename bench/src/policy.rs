//! `policy` suite: the per-packet cost of the capture policies (issue 8),
//! each measured alone on one core.
//!
//! - anonymisation: `CryptoPan::anonymize_frame` (both addresses, checksums
//!   updated) on 64 B IPv4/TCP and 84 B IPv6/TCP frames, without and with
//!   the prefix cache, on three address mixes of 2^16 frames: *uniform*
//!   (every address a random 32/128-bit value: the host and prefix caches
//!   almost never hit, only the 16-bit table helps), *clustered* (random
//!   hosts in 256 /24s or 256 /64s: prefix hits) and *hosts* (1024 hosts in
//!   those prefixes, the shape of real traffic where a flow's hosts repeat:
//!   host hits);
//! - BPF: `Filter::matches` on the frames of real traces (the pcap traces in
//!   ../shared/traces, cycled) for a few expressions;
//! - sampling: `Sampler::keep` (1-in-N, probabilistic, flow-consistent on
//!   already parsed frames);
//! - MAC pseudonyms: `MacPseudonyms::rewrite_frame` on the real trace frames
//!   (a link's few addresses: cache hits) and on frames with random unicast
//!   addresses (every lookup an AES computation).

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use linecap_dataplane::policy::anon::AnonMode;
use linecap_dataplane::policy::bpf::Filter;
use linecap_dataplane::policy::cryptopan::{CacheConfig, CryptoPan};
use linecap_dataplane::policy::macpseudo::MacPseudonyms;
use linecap_dataplane::policy::sample::{SamplePolicy, Sampler, SplitMix64};
use linecap_reader::read::{CaptureReader, Packet};
use linecap_wire::flow::{PacketInfo, Parsed, parse_frame};

use crate::median;

/// The published Crypto-PAn sample key.
const KEY: [u8; 32] = [
    21, 34, 23, 141, 51, 164, 207, 128, 19, 10, 91, 22, 73, 144, 125, 16, 216, 152, 143, 131, 121,
    121, 101, 39, 98, 87, 76, 45, 42, 132, 34, 2,
];

/// Frames in one working set (distinct address pairs).
const FRAMES: usize = 1 << 16;

/// ns per item of `f` (called once per pass over `n` items), median of 3
/// runs of about `seconds / 3` each.
fn ns_per_item(seconds: f64, n: usize, mut f: impl FnMut()) -> f64 {
    f(); // warm up (caches, page faults)
    let runs: Vec<f64> = (0..3)
        .map(|_| {
            let deadline = Duration::from_secs_f64(seconds / 3.0);
            let start = Instant::now();
            let mut passes = 0u64;
            while start.elapsed() < deadline {
                f();
                passes += 1;
            }
            start.elapsed().as_nanos() as f64 / (passes as f64 * n as f64)
        })
        .collect();
    median(runs)
}

/// A 64 B IPv4/TCP frame (or 84 B IPv6/TCP) between `src` and `dst`, with
/// a valid IPv4 header checksum.
fn tcp_frame(src: &[u8], dst: &[u8]) -> Vec<u8> {
    let v6 = src.len() == 16;
    let mut f = vec![0u8; if v6 { 84 } else { 64 }];
    f[12..14].copy_from_slice(if v6 { &[0x86, 0xdd] } else { &[0x08, 0x00] });
    let l4 = if v6 {
        f[14] = 0x60;
        f[18..20].copy_from_slice(&20u16.to_be_bytes());
        f[20] = 6;
        f[21] = 64;
        f[22..38].copy_from_slice(src);
        f[38..54].copy_from_slice(dst);
        54
    } else {
        f[14] = 0x45;
        f[16..18].copy_from_slice(&46u16.to_be_bytes());
        f[22] = 64;
        f[23] = 6;
        f[26..30].copy_from_slice(src);
        f[30..34].copy_from_slice(dst);
        let mut sum = 0u32;
        for c in f[14..34].chunks(2) {
            sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
        }
        while sum >> 16 != 0 {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        f[24..26].copy_from_slice(&(!(sum as u16)).to_be_bytes());
        34
    };
    f[l4..l4 + 2].copy_from_slice(&40000u16.to_be_bytes());
    f[l4 + 2..l4 + 4].copy_from_slice(&443u16.to_be_bytes());
    f[l4 + 12] = 0x50;
    f[l4 + 13] = 0x10;
    f
}

#[derive(Clone, Copy, PartialEq)]
enum Mix {
    Uniform,
    Clustered,
    Hosts,
}

impl Mix {
    fn name(self) -> &'static str {
        match self {
            Mix::Uniform => "uniform",
            Mix::Clustered => "clustered",
            Mix::Hosts => "hosts",
        }
    }
}

/// `FRAMES` frames with addresses of the given mix, IPv4 or IPv6.
fn address_set(v6: bool, mix: Mix, seed: u64) -> Vec<(Vec<u8>, PacketInfo)> {
    let mut rng = SplitMix64::new(seed);
    let r128 = |rng: &mut SplitMix64| u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64());
    let prefixes: Vec<u128> = (0..256).map(|_| r128(&mut rng)).collect();
    // Keep /24 (v4, left-aligned) or /64 (v6) of a prefix, random host part.
    let host_mask = if v6 {
        (1u128 << 64) - 1
    } else {
        (1u128 << 104) - 1
    };
    let in_prefix = |rng: &mut SplitMix64, r: u128| {
        (prefixes[(rng.next_u64() % 256) as usize] & !host_mask) | (r & host_mask)
    };
    let hosts: Vec<u128> = (0..1024)
        .map(|_| {
            let r = r128(&mut rng);
            in_prefix(&mut rng, r)
        })
        .collect();
    let addr = |rng: &mut SplitMix64| -> Vec<u8> {
        let r = r128(rng);
        let a = match mix {
            Mix::Uniform => r,
            Mix::Clustered => in_prefix(rng, r),
            Mix::Hosts => hosts[(r % 1024) as usize],
        };
        let b = a.to_be_bytes();
        if v6 { b.to_vec() } else { b[..4].to_vec() }
    };
    (0..FRAMES)
        .map(|_| {
            let s = addr(&mut rng);
            let d = addr(&mut rng);
            let f = tcp_frame(&s, &d);
            let Parsed::Ip(info) = parse_frame(&f) else {
                panic!("synthetic frame does not parse")
            };
            (f, info)
        })
        .collect()
}

fn anonymisation(seconds: f64, out: &mut Vec<serde_json::Value>) {
    println!("anonymisation: anonymize_frame(Both) + checksum updates, {FRAMES} frames per set");
    println!(
        "{:>6} {:>10} {:>10} {:>12} {:>8} {:>8}",
        "family", "addresses", "cache", "ns/packet", "host %", "prefix %"
    );
    for v6 in [false, true] {
        for mix in [Mix::Uniform, Mix::Clustered, Mix::Hosts] {
            let mut set = address_set(v6, mix, 42);
            for cached in [false, true] {
                let mut c = if cached {
                    CryptoPan::with_cache(&KEY, CacheConfig::default())
                } else {
                    CryptoPan::new(&KEY)
                };
                let ns = ns_per_item(seconds, set.len(), || {
                    for (f, info) in set.iter_mut() {
                        black_box(c.anonymize_frame(f, info, AnonMode::Both));
                    }
                });
                let s = c.cache_stats();
                let (h, p, m) = if v6 {
                    (s.v6_host_hits, s.v6_prefix_hits, s.v6_misses)
                } else {
                    (s.v4_host_hits, s.v4_prefix_hits, s.v4_misses)
                };
                let all = (h + p + m).max(1) as f64;
                let (host_pct, prefix_pct) = (100.0 * h as f64 / all, 100.0 * p as f64 / all);
                let family = if v6 { "ipv6" } else { "ipv4" };
                let mix = mix.name();
                let cache = if cached { "default" } else { "none" };
                println!(
                    "{family:>6} {mix:>10} {cache:>10} {ns:>12.1} {host_pct:>8.1} {prefix_pct:>8.1}"
                );
                out.push(serde_json::json!({
                    "suite": "policy", "what": "anonymize_frame", "family": family,
                    "addresses": mix, "cache": cache, "ns_per_packet": ns,
                    "host_hit_percent": host_pct, "prefix_hit_percent": prefix_pct,
                }));
            }
        }
    }
}

/// (data, wire_len) of every frame of the pcap traces (tcpdump-readable).
fn trace_frames() -> Vec<(Vec<u8>, u32)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/traces");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .expect("../shared/traces")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "pcap" || e == "pcapng"))
        .collect();
    paths.sort();
    let mut v = Vec::new();
    for p in paths {
        let mut r = CaptureReader::open(&p).expect("trace");
        let mut pkt = Packet::default();
        while r.next(&mut pkt).expect("trace") {
            v.push((pkt.data.clone(), pkt.wire_len));
        }
    }
    v
}

fn filters(seconds: f64, frames: &[(Vec<u8>, u32)], out: &mut Vec<serde_json::Value>) {
    println!(
        "bpf: Filter::matches on {} frames of the pcap traces",
        frames.len()
    );
    println!(
        "{:>44} {:>6} {:>8} {:>12}",
        "expression", "insns", "kept %", "ns/packet"
    );
    for e in [
        "tcp",
        "udp port 53",
        "net 10.0.0.0/8",
        "port 80 or port 443",
        "tcp[tcpflags] & tcp-syn != 0",
        "vlan and host 131.151.32.129",
        "ip6 and tcp port 21",
        "not arp and not (ip and icmp) and greater 100",
    ] {
        let f = Filter::compile(e).expect("filter");
        let kept = frames.iter().filter(|(d, w)| f.matches(d, *w)).count();
        let ns = ns_per_item(seconds, frames.len(), || {
            for (d, w) in frames {
                black_box(f.matches(black_box(d), *w));
            }
        });
        let pct = 100.0 * kept as f64 / frames.len() as f64;
        let insns = f.program().insns().len();
        println!("{e:>44} {insns:>6} {pct:>8.1} {ns:>12.1}");
        out.push(serde_json::json!({
            "suite": "policy", "what": "bpf", "expression": e, "insns": insns,
            "kept_percent": pct, "ns_per_packet": ns,
        }));
    }
}

fn sampling(seconds: f64, frames: &[(Vec<u8>, u32)], out: &mut Vec<serde_json::Value>) {
    let parsed: Vec<Parsed> = frames.iter().map(|(d, _)| parse_frame(d)).collect();
    println!("sampling: Sampler::keep on the parsed trace frames");
    println!("{:>28} {:>8} {:>12}", "policy", "kept %", "ns/packet");
    for p in [
        SamplePolicy::EveryNth { n: 100 },
        SamplePolicy::Random { p: 0.01, seed: 1 },
        SamplePolicy::FlowsOneIn { n: 100, seed: 1 },
        SamplePolicy::FlowsRandom { p: 0.01, seed: 1 },
    ] {
        let mut s = Sampler::new(p).expect("policy");
        let mut kept = 0u64;
        let mut seen = 0u64;
        let ns = ns_per_item(seconds, parsed.len(), || {
            for x in &parsed {
                kept += u64::from(s.keep(black_box(x)));
                seen += 1;
            }
        });
        let pct = 100.0 * kept as f64 / seen as f64;
        println!("{:>28} {pct:>8.2} {ns:>12.2}", p.to_string());
        out.push(serde_json::json!({
            "suite": "policy", "what": "sample", "policy": p.to_string(),
            "kept_percent": pct, "ns_per_packet": ns,
        }));
    }
}

fn mac_pseudonyms(seconds: f64, frames: &[(Vec<u8>, u32)], out: &mut Vec<serde_json::Value>) {
    println!("MAC pseudonyms: MacPseudonyms::rewrite_frame (both addresses)");
    println!("{:>28} {:>10} {:>12}", "frames", "cache hit %", "ns/packet");
    let mut rng = SplitMix64::new(7);
    let random: Vec<Vec<u8>> = (0..FRAMES)
        .map(|_| {
            let mut f = vec![0u8; 64];
            for b in f[..12].iter_mut() {
                *b = rng.next_u64() as u8;
            }
            f[0] &= 0xfe; // unicast
            f[6] &= 0xfe;
            f
        })
        .collect();
    let trace: Vec<Vec<u8>> = frames.iter().map(|(d, _)| d.clone()).collect();
    for (name, set) in [("trace frames", trace), ("random unicast MACs", random)] {
        let mut m = MacPseudonyms::new(&KEY);
        let mut work = set.clone();
        let ns = ns_per_item(seconds / 2.0, work.len(), || {
            for (w, orig) in work.iter_mut().zip(&set) {
                w[..12].copy_from_slice(&orig[..12]);
                m.rewrite_frame(black_box(w));
            }
        });
        let (hits, misses) = m.cache_stats();
        let pct = 100.0 * hits as f64 / (hits + misses).max(1) as f64;
        println!("{name:>28} {pct:>10.1} {ns:>12.2}");
        out.push(serde_json::json!({
            "suite": "policy", "what": "mac_pseudonyms", "frames": name,
            "cache_hit_percent": pct, "ns_per_packet": ns,
        }));
    }
}

/// The `policy` suite.
pub fn suite(o: &crate::Opts) -> Vec<serde_json::Value> {
    let seconds = o.seconds;
    let mut out = Vec::new();
    anonymisation(seconds / 4.0, &mut out);
    let frames = trace_frames();
    filters(seconds / 4.0, &frames, &mut out);
    sampling(seconds / 4.0, &frames, &mut out);
    mac_pseudonyms(seconds / 4.0, &frames, &mut out);
    out
}

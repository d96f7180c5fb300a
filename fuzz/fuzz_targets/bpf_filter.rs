//! `dataplane::policy::bpf`: the classic BPF validator and interpreter, with
//! libpcap's own interpreter as the reference.
//!
//! The first byte picks the part:
//!
//! * even: **arbitrary programs**. `[0, L, L × (code u16le, jt, jf, k u32le),
//!   wire_len u32le, packet…]` (fewer instructions if the input ends first).
//!   `Program::new` must refuse or accept without panicking; an accepted
//!   program runs over the packet (an exact-size copy, so any read past it
//!   is ASan's) without panicking and, within libFuzzer's timeout, to an
//!   end. If libpcap's `bpf_validate` accepts the program too, libpcap's
//!   `bpf_filter` must return the same value for the same packet, wire
//!   length and captured length. (libpcap's interpreter is only run on
//!   programs both validators accept: its own validator lets through
//!   programs its interpreter would misread, like a `ja` whose offset wraps
//!   around 32 bits. Nor is it compared on programs that may read a scratch
//!   word before storing to it: linecap's start at 0, libpcap's are left
//!   undefined, and the kernel refuses such programs.)
//! * odd: **libpcap-compiled expressions** (a fixed list, compiled once by
//!   `Filter::compile`). The rest of the input is a frame; every filter's
//!   decision must equal libpcap's `pcap_offline_filter` (through the pcap
//!   crate's `BpfProgram::filter`, captured = wire length), and its return
//!   value libpcap's `bpf_filter` with a wire length of up to 127 bytes more
//!   than captured (the first byte's upper bits).
#![no_main]

use libfuzzer_sys::fuzz_target;
use linecap_dataplane::policy::bpf::{Filter, Insn, Program};

/// `struct bpf_insn`.
#[repr(C)]
#[derive(Clone, Copy)]
struct BpfInsn {
    code: u16,
    jt: u8,
    jf: u8,
    k: u32,
}

#[link(name = "pcap")]
unsafe extern "C" {
    /// `u_int bpf_filter(const struct bpf_insn *, const u_char *, u_int wirelen, u_int buflen)`.
    fn bpf_filter(pc: *const BpfInsn, p: *const u8, wirelen: u32, buflen: u32) -> u32;
    /// `int bpf_validate(const struct bpf_insn *, int len)`.
    fn bpf_validate(f: *const BpfInsn, len: i32) -> i32;
}

fn to_c(insns: &[Insn]) -> Vec<BpfInsn> {
    insns
        .iter()
        .map(|i| BpfInsn {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        })
        .collect()
}

fn libpcap_validate(insns: &[BpfInsn]) -> bool {
    // SAFETY: the pointer and length describe `insns`, which bpf_validate only reads.
    !insns.is_empty() && unsafe { bpf_validate(insns.as_ptr(), insns.len() as i32) } != 0
}

fn libpcap_run(insns: &[BpfInsn], pkt: &[u8], wire_len: u32) -> u32 {
    // SAFETY: the program passed both validators (so every jump lands inside
    // it and every opcode is one bpf_filter knows), and bpf_filter reads the
    // packet only below `buflen` = `pkt.len()`.
    unsafe { bpf_filter(insns.as_ptr(), pkt.as_ptr(), wire_len, pkt.len() as u32) }
}

const EXPRESSIONS: &[&str] = &[
    "ip",
    "ip6",
    "arp",
    "not ip and not ip6",
    "tcp",
    "udp",
    "icmp or icmp6",
    "ip proto 132",
    "tcp port 80 or tcp port 443",
    "udp port 53",
    "portrange 1000-2000",
    "host 10.0.0.1",
    "net 192.168.0.0/16 and not host 192.168.1.1",
    "ip6 net 2001:db8::/32",
    "vlan",
    "vlan 100 and udp",
    "vlan and vlan and ip",
    "mpls and ip",
    "ether broadcast or ether multicast",
    "ether host 00:11:22:33:44:55",
    "greater 100",
    "less 64",
    "ip[6:2] & 0x1fff != 0",
    "tcp[tcpflags] & (tcp-syn|tcp-fin) != 0",
    "tcp[((tcp[12:1] & 0xf0) >> 2):4] = 0x47455420",
    "ip6[6] = 6 and ip6[53] & 2 != 0",
    "udp[8:4] = 0x01020304 or ip[2:2] > 1000",
    "len % 7 = 3 and len / 3 > 20",
];

struct Compiled {
    ours: Filter,
    libpcap: pcap::BpfProgram,
    c: Vec<BpfInsn>,
}

thread_local! {
    static COMPILED: Vec<Compiled> = EXPRESSIONS
        .iter()
        .map(|e| {
            let ours = Filter::compile(e).unwrap_or_else(|err| panic!("{e}: {err}"));
            let cap = pcap::Capture::dead(pcap::Linktype::ETHERNET).expect("pcap_open_dead");
            let libpcap = cap.compile(e, true).expect("pcap_compile");
            let c = to_c(ours.program().insns());
            Compiled { ours, libpcap, c }
        })
        .collect();
}

/// Whether a path through a valid program loads a scratch word (`ld M[k]`,
/// `ldx M[k]`) that no instruction on that path stored to.
fn reads_unset_scratch(insns: &[Insn]) -> bool {
    let n = insns.len();
    // stored[pc]: the words stored on every path to pc (None: unreachable).
    let mut stored: Vec<Option<u16>> = vec![None; n];
    stored[0] = Some(0);
    let merge = |stored: &mut Vec<Option<u16>>, t: usize, m: u16| {
        if let Some(s) = stored.get_mut(t) {
            *s = Some(s.map_or(m, |o| o & m));
        }
    };
    for pc in 0..n {
        let Some(mut m) = stored[pc] else {
            continue;
        };
        let i = insns[pc];
        let bit = 1u16 << (i.k & 15);
        match i.code {
            0x60 | 0x61 if m & bit == 0 => return true,
            0x02 | 0x03 => m |= bit,
            _ => {}
        }
        match i.code & 7 {
            5 if i.code == 0x05 => merge(&mut stored, pc + 1 + i.k as usize, m),
            5 => {
                merge(&mut stored, pc + 1 + usize::from(i.jt), m);
                merge(&mut stored, pc + 1 + usize::from(i.jf), m);
            }
            6 => {}
            _ => merge(&mut stored, pc + 1, m),
        }
    }
    false
}

fn arbitrary_program(data: &[u8]) {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(n).min(rest.len() / 8);
    let (code, rest) = rest.split_at(n * 8);
    let insns: Vec<Insn> = code
        .chunks_exact(8)
        .map(|c| {
            Insn::new(
                u16::from_le_bytes([c[0], c[1]]),
                c[2],
                c[3],
                u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
            )
        })
        .collect();
    let (wire_len, pkt) = match rest.split_first_chunk::<4>() {
        Some((w, p)) => (u32::from_le_bytes(*w), p),
        None => (0, &[][..]),
    };
    let c = to_c(&insns);
    let pcap_ok = libpcap_validate(&c);
    let Ok(prog) = Program::new(&insns) else {
        return;
    };
    assert_eq!(
        prog.insns(),
        &insns[..],
        "the program keeps its instructions"
    );
    // An exact-size copy: a read past the packet is a heap overflow for ASan.
    let pkt = pkt.to_vec();
    let ours = prog.run(&pkt, wire_len);
    if pcap_ok && !reads_unset_scratch(&insns) {
        let theirs = libpcap_run(&c, &pkt, wire_len);
        assert_eq!(ours, theirs, "linecap and libpcap disagree on {insns:?}");
    }
}

fn compiled_expressions(data: &[u8], extra: u32) {
    let frame = data.to_vec();
    let len = frame.len() as u32;
    COMPILED.with(|all| {
        for f in all {
            let ours = f.ours.matches(&frame, len);
            assert_eq!(
                ours,
                f.libpcap.filter(&frame),
                "{:?}: linecap and pcap_offline_filter disagree",
                f.ours.expression()
            );
            let wire = len.saturating_add(extra);
            assert_eq!(
                f.ours.program().run(&frame, wire),
                libpcap_run(&f.c, &frame, wire),
                "{:?}: linecap and bpf_filter disagree (wire length {wire})",
                f.ours.expression()
            );
        }
    });
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    if sel & 1 == 0 {
        arbitrary_program(rest);
    } else {
        compiled_expressions(rest, u32::from(sel >> 1));
    }
});

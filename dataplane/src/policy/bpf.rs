//! tcpdump-syntax filters: compiled by libpcap to classic BPF at start-up,
//! run per packet by a small user-space interpreter.
//!
//! # Why a user-space interpreter
//!
//! AF_XDP and DPDK deliver frames to the worker without passing any kernel
//! socket filter, and the XDP program only steers queues; a filter per
//! capture *job* (several jobs share a queue) has to run where the jobs
//! are: in the worker. libpcap compiles the expression (so the syntax and
//! semantics are exactly tcpdump's, errors included) and the worker runs the
//! resulting classic BPF program itself. A cBPF program is short (tens of
//! instructions), loop-free (jumps only go forward) and touches only the
//! first bytes of the frame; interpreting it costs a few ns per
//! instruction, with no system call, no copy and no `unsafe`. A JIT (or a
//! translation to eBPF run in the XDP program) could come later if the
//! benchmark asks for it.
//!
//! # Semantics
//!
//! Those of libpcap's `bpf_filter()` (which `tcpdump -r` uses) and of the
//! kernel's classic BPF:
//!
//! * A, X and the 16 scratch words start at 0 (libpcap's `bpf_filter()`
//!   leaves the scratch words undefined, and the kernel refuses a program
//!   that may load one before storing it; libpcap's compiler emits no such
//!   load, so its programs run alike here and there);
//! * packet loads (`ld`/`ldh`/`ldb` absolute and indirect, `ldx 4*([k]&0xf)`)
//!   read big-endian from the captured bytes; a load past the captured end
//!   (or an offset that overflows) **rejects the packet** (returns 0);
//! * `len` is the wire length (pcap's `orig_len`), not the captured length;
//! * division or modulo by X = 0 rejects the packet; shifts by X >= 32 give
//!   0 (libpcap's rule); Linux ancillary loads (`k >= 0xfffff000`) are
//!   out-of-bounds loads here (libpcap generates none for a dead handle);
//! * the return value is the number of bytes to keep; the worker uses it as
//!   a boolean (non-zero = keep).
//!
//! # Validity check at load ([`Program::new`])
//!
//! 1 to [`INSNS_MAX`] instructions; every opcode a known classic one;
//! jump targets inside the program (they only go forward, so every run ends
//! in at most `len` steps); the last instruction a `ret`; no division or
//! modulo by a constant 0; no constant shift >= 32; scratch indices < 16.
//! After this check [`Program::run`] cannot panic or loop on any packet.
//!
//! # libpcap and snaplen
//!
//! [`Filter::compile`] uses the `pcap` crate: `pcap_open_dead(DLT_EN10MB)`
//! and `pcap_compile(expr, optimize = 1, netmask = 0)`. The crate opens the
//! dead handle with a snaplen of 65535 (not linecap's 262144); the snaplen
//! only appears as the accept value (`ret #65535`), and since the worker
//! uses the result as a boolean, decisions are the same for every frame.

use std::fmt;

/// Most instructions a program may have (the kernel's `BPF_MAXINSNS`).
pub const INSNS_MAX: usize = 4096;
/// Scratch memory words (`BPF_MEMWORDS`).
pub const MEM_WORDS: usize = 16;

/// One classic BPF instruction, as `struct bpf_insn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Insn {
    /// Opcode.
    pub code: u16,
    /// Jump offset if true.
    pub jt: u8,
    /// Jump offset if false.
    pub jf: u8,
    /// Constant.
    pub k: u32,
}

impl Insn {
    /// An instruction.
    pub const fn new(code: u16, jt: u8, jf: u8, k: u32) -> Insn {
        Insn { code, jt, jf, k }
    }
}

/// Opcode fields and values (`<pcap/bpf.h>`).
pub mod op {
    #![allow(missing_docs)]
    pub const LD: u16 = 0x00;
    pub const LDX: u16 = 0x01;
    pub const ST: u16 = 0x02;
    pub const STX: u16 = 0x03;
    pub const ALU: u16 = 0x04;
    pub const JMP: u16 = 0x05;
    pub const RET: u16 = 0x06;
    pub const MISC: u16 = 0x07;

    pub const W: u16 = 0x00;
    pub const H: u16 = 0x08;
    pub const B: u16 = 0x10;

    pub const IMM: u16 = 0x00;
    pub const ABS: u16 = 0x20;
    pub const IND: u16 = 0x40;
    pub const MEM: u16 = 0x60;
    pub const LEN: u16 = 0x80;
    pub const MSH: u16 = 0xa0;

    pub const ADD: u16 = 0x00;
    pub const SUB: u16 = 0x10;
    pub const MUL: u16 = 0x20;
    pub const DIV: u16 = 0x30;
    pub const OR: u16 = 0x40;
    pub const AND: u16 = 0x50;
    pub const LSH: u16 = 0x60;
    pub const RSH: u16 = 0x70;
    pub const NEG: u16 = 0x80;
    pub const MOD: u16 = 0x90;
    pub const XOR: u16 = 0xa0;

    pub const JA: u16 = 0x00;
    pub const JEQ: u16 = 0x10;
    pub const JGT: u16 = 0x20;
    pub const JGE: u16 = 0x30;
    pub const JSET: u16 = 0x40;

    pub const K: u16 = 0x00;
    pub const X: u16 = 0x08;
    /// `ret a` (BPF_RVAL A).
    pub const A: u16 = 0x10;

    pub const TAX: u16 = 0x00;
    pub const TXA: u16 = 0x80;
}

/// Why a program was refused at load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgramError {
    /// No instructions, or more than [`INSNS_MAX`].
    BadLength(usize),
    /// An opcode that is not a classic BPF instruction.
    BadOpcode {
        /// Instruction index.
        pc: usize,
        /// The opcode.
        code: u16,
    },
    /// A jump past the last instruction.
    JumpOutOfRange {
        /// Instruction index.
        pc: usize,
    },
    /// Division or modulo by a constant 0.
    DivisionByZero {
        /// Instruction index.
        pc: usize,
    },
    /// A constant shift of 32 or more.
    BadShift {
        /// Instruction index.
        pc: usize,
    },
    /// A scratch memory index >= [`MEM_WORDS`].
    BadScratch {
        /// Instruction index.
        pc: usize,
    },
    /// The last instruction is not a `ret`.
    NoFinalReturn,
}

impl fmt::Display for ProgramError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProgramError::BadLength(n) => {
                write!(f, "BPF program of {n} instructions (1 to {INSNS_MAX})")
            }
            ProgramError::BadOpcode { pc, code } => {
                write!(f, "BPF instruction {pc}: unknown opcode {code:#06x}")
            }
            ProgramError::JumpOutOfRange { pc } => {
                write!(f, "BPF instruction {pc}: jump past the end of the program")
            }
            ProgramError::DivisionByZero { pc } => {
                write!(f, "BPF instruction {pc}: division by constant 0")
            }
            ProgramError::BadShift { pc } => {
                write!(f, "BPF instruction {pc}: constant shift of 32 or more")
            }
            ProgramError::BadScratch { pc } => {
                write!(f, "BPF instruction {pc}: scratch memory index out of range")
            }
            ProgramError::NoFinalReturn => write!(f, "BPF program does not end with ret"),
        }
    }
}

impl std::error::Error for ProgramError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Size {
    W,
    H,
    B,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Alu {
    Add,
    Sub,
    Mul,
    Div,
    Or,
    And,
    Lsh,
    Rsh,
    Mod,
    Xor,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cond {
    Eq,
    Gt,
    Ge,
    Set,
}

/// A decoded instruction (decoded once at load; `k`, jump targets as
/// absolute indices).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    LdAbs(Size, u32),
    LdInd(Size, u32),
    LdLen,
    LdImm(u32),
    LdMem(u8),
    LdxImm(u32),
    LdxMem(u8),
    LdxLen,
    LdxMsh(u32),
    St(u8),
    Stx(u8),
    AluK(Alu, u32),
    AluX(Alu),
    Neg,
    Ja(u16),
    JmpK(Cond, u32, u16, u16),
    JmpX(Cond, u16, u16),
    RetK(u32),
    RetA,
    Tax,
    Txa,
}

/// A validated classic BPF program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    insns: Box<[Insn]>,
    ops: Box<[Op]>,
}

fn decode(pc: usize, len: usize, i: Insn) -> Result<Op, ProgramError> {
    let bad = ProgramError::BadOpcode { pc, code: i.code };
    let target = |off: u64| -> Result<u16, ProgramError> {
        let t = pc as u64 + 1 + off;
        if t < len as u64 {
            Ok(t as u16)
        } else {
            Err(ProgramError::JumpOutOfRange { pc })
        }
    };
    let mem = |k: u32| -> Result<u8, ProgramError> {
        if (k as usize) < MEM_WORDS {
            Ok(k as u8)
        } else {
            Err(ProgramError::BadScratch { pc })
        }
    };
    let size = |code: u16| match code & 0x18 {
        op::W => Ok(Size::W),
        op::H => Ok(Size::H),
        op::B => Ok(Size::B),
        _ => Err(bad),
    };
    let code = i.code;
    if code > 0xff {
        return Err(bad);
    }
    Ok(match code & 0x07 {
        op::LD => match code & 0xe0 {
            op::ABS => Op::LdAbs(size(code)?, i.k),
            op::IND => Op::LdInd(size(code)?, i.k),
            op::LEN if code & 0x18 == op::W => Op::LdLen,
            op::IMM if code & 0x18 == op::W => Op::LdImm(i.k),
            op::MEM if code & 0x18 == op::W => Op::LdMem(mem(i.k)?),
            _ => return Err(bad),
        },
        op::LDX => match code {
            0x01 => Op::LdxImm(i.k),
            0x61 => Op::LdxMem(mem(i.k)?),
            0x81 => Op::LdxLen,
            0xb1 => Op::LdxMsh(i.k),
            _ => return Err(bad),
        },
        op::ST if code == op::ST => Op::St(mem(i.k)?),
        op::STX if code == op::STX => Op::Stx(mem(i.k)?),
        op::ALU => {
            if code == op::ALU | op::NEG {
                Op::Neg
            } else {
                let alu = match code & 0xf0 {
                    op::ADD => Alu::Add,
                    op::SUB => Alu::Sub,
                    op::MUL => Alu::Mul,
                    op::DIV => Alu::Div,
                    op::OR => Alu::Or,
                    op::AND => Alu::And,
                    op::LSH => Alu::Lsh,
                    op::RSH => Alu::Rsh,
                    op::MOD => Alu::Mod,
                    op::XOR => Alu::Xor,
                    _ => return Err(bad),
                };
                if code & 0x08 == op::X {
                    Op::AluX(alu)
                } else {
                    match alu {
                        Alu::Div | Alu::Mod if i.k == 0 => {
                            return Err(ProgramError::DivisionByZero { pc });
                        }
                        Alu::Lsh | Alu::Rsh if i.k >= 32 => {
                            return Err(ProgramError::BadShift { pc });
                        }
                        _ => Op::AluK(alu, i.k),
                    }
                }
            }
        }
        op::JMP => {
            if code == op::JMP | op::JA {
                Op::Ja(target(u64::from(i.k))?)
            } else {
                let cond = match code & 0xf0 {
                    op::JEQ => Cond::Eq,
                    op::JGT => Cond::Gt,
                    op::JGE => Cond::Ge,
                    op::JSET => Cond::Set,
                    _ => return Err(bad),
                };
                let jt = target(u64::from(i.jt))?;
                let jf = target(u64::from(i.jf))?;
                if code & 0x08 == op::X {
                    Op::JmpX(cond, jt, jf)
                } else {
                    Op::JmpK(cond, i.k, jt, jf)
                }
            }
        }
        op::RET => match code {
            0x06 => Op::RetK(i.k),
            0x16 => Op::RetA,
            _ => return Err(bad),
        },
        op::MISC => match code {
            0x07 => Op::Tax,
            0x87 => Op::Txa,
            _ => return Err(bad),
        },
        _ => return Err(bad),
    })
}

#[inline(always)]
fn load(pkt: &[u8], off: u64, size: Size) -> Option<u32> {
    let off = usize::try_from(off).ok()?;
    match size {
        Size::W => match pkt.get(off..off.checked_add(4)?)? {
            &[a, b, c, d] => Some(u32::from_be_bytes([a, b, c, d])),
            _ => None,
        },
        Size::H => match pkt.get(off..off.checked_add(2)?)? {
            &[a, b] => Some(u32::from(u16::from_be_bytes([a, b]))),
            _ => None,
        },
        Size::B => pkt.get(off).map(|&b| u32::from(b)),
    }
}

/// `a op b`; `None` rejects the packet (division by 0).
#[inline(always)]
fn alu(op: Alu, a: u32, b: u32) -> Option<u32> {
    Some(match op {
        Alu::Add => a.wrapping_add(b),
        Alu::Sub => a.wrapping_sub(b),
        Alu::Mul => a.wrapping_mul(b),
        Alu::Div => a.checked_div(b)?,
        Alu::Mod => a.checked_rem(b)?,
        Alu::Or => a | b,
        Alu::And => a & b,
        Alu::Xor => a ^ b,
        Alu::Lsh => a.checked_shl(b).unwrap_or(0),
        Alu::Rsh => a.checked_shr(b).unwrap_or(0),
    })
}

#[inline(always)]
fn test(c: Cond, a: u32, b: u32) -> bool {
    match c {
        Cond::Eq => a == b,
        Cond::Gt => a > b,
        Cond::Ge => a >= b,
        Cond::Set => a & b != 0,
    }
}

impl Program {
    /// Validate `insns` (see the module documentation).
    pub fn new(insns: &[Insn]) -> Result<Program, ProgramError> {
        let len = insns.len();
        if len == 0 || len > INSNS_MAX {
            return Err(ProgramError::BadLength(len));
        }
        let ops = insns
            .iter()
            .enumerate()
            .map(|(pc, &i)| decode(pc, len, i))
            .collect::<Result<Vec<Op>, ProgramError>>()?;
        if !matches!(ops.last(), Some(Op::RetK(_) | Op::RetA)) {
            return Err(ProgramError::NoFinalReturn);
        }
        Ok(Program {
            insns: insns.into(),
            ops: ops.into(),
        })
    }

    /// The instructions.
    pub fn insns(&self) -> &[Insn] {
        &self.insns
    }

    /// Run the program on a frame: `pkt` is the captured bytes, `wire_len`
    /// the frame's length on the wire. Returns the program's result (0 =
    /// reject). No allocation, no panic, at most `len` steps.
    #[inline]
    pub fn run(&self, pkt: &[u8], wire_len: u32) -> u32 {
        let mut a: u32 = 0;
        let mut x: u32 = 0;
        let mut mem = [0u32; MEM_WORDS];
        let mut pc = 0usize;
        // Every step moves pc forward (validated), so this ends.
        while let Some(&o) = self.ops.get(pc) {
            pc += 1;
            match o {
                Op::LdAbs(s, k) => match load(pkt, u64::from(k), s) {
                    Some(v) => a = v,
                    None => return 0,
                },
                Op::LdInd(s, k) => match load(pkt, u64::from(k) + u64::from(x), s) {
                    Some(v) => a = v,
                    None => return 0,
                },
                Op::LdLen => a = wire_len,
                Op::LdImm(k) => a = k,
                Op::LdMem(i) => a = mem.get(usize::from(i)).copied().unwrap_or(0),
                Op::LdxImm(k) => x = k,
                Op::LdxMem(i) => x = mem.get(usize::from(i)).copied().unwrap_or(0),
                Op::LdxLen => x = wire_len,
                Op::LdxMsh(k) => match load(pkt, u64::from(k), Size::B) {
                    Some(v) => x = (v & 0xf) << 2,
                    None => return 0,
                },
                Op::St(i) => {
                    if let Some(m) = mem.get_mut(usize::from(i)) {
                        *m = a;
                    }
                }
                Op::Stx(i) => {
                    if let Some(m) = mem.get_mut(usize::from(i)) {
                        *m = x;
                    }
                }
                Op::AluK(op, k) => match alu(op, a, k) {
                    Some(v) => a = v,
                    None => return 0,
                },
                Op::AluX(op) => match alu(op, a, x) {
                    Some(v) => a = v,
                    None => return 0,
                },
                Op::Neg => a = a.wrapping_neg(),
                Op::Ja(t) => pc = usize::from(t),
                Op::JmpK(c, k, jt, jf) => pc = usize::from(if test(c, a, k) { jt } else { jf }),
                Op::JmpX(c, jt, jf) => pc = usize::from(if test(c, a, x) { jt } else { jf }),
                Op::RetK(k) => return k,
                Op::RetA => return a,
                Op::Tax => x = a,
                Op::Txa => a = x,
            }
        }
        0
    }
}

/// Why a filter expression was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterError {
    /// libpcap refused the expression; its message.
    Compile {
        /// The expression.
        expression: String,
        /// libpcap's error message.
        message: String,
    },
    /// libpcap's program did not pass the validity check (a bug somewhere).
    Invalid {
        /// The expression.
        expression: String,
        /// What the check found.
        error: ProgramError,
    },
}

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FilterError::Compile {
                expression,
                message,
            } => write!(f, "filter {expression:?}: {message}"),
            FilterError::Invalid { expression, error } => {
                write!(
                    f,
                    "filter {expression:?}: libpcap produced an invalid program: {error}"
                )
            }
        }
    }
}

impl std::error::Error for FilterError {}

/// A compiled tcpdump-syntax filter for Ethernet frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    expression: String,
    program: Program,
}

impl Filter {
    /// Compile a tcpdump expression with libpcap (Ethernet link type,
    /// optimised) and validate the program. Bad expressions give libpcap's
    /// error message. Start-up only (allocates, calls libpcap).
    pub fn compile(expression: &str) -> Result<Filter, FilterError> {
        let compile_err = |message: String| FilterError::Compile {
            expression: expression.to_string(),
            message,
        };
        let message = |e: pcap::Error| match e {
            pcap::Error::PcapError(m) => m,
            other => other.to_string(),
        };
        let cap =
            pcap::Capture::dead(pcap::Linktype::ETHERNET).map_err(|e| compile_err(message(e)))?;
        let prog = cap
            .compile(expression, true)
            .map_err(|e| compile_err(message(e)))?;
        // The pcap crate exposes the instructions only through Display
        // ("code jt jf k"); reading that keeps this module free of unsafe.
        let insns = prog
            .get_instructions()
            .iter()
            .map(|i| {
                let text = i.to_string();
                let f: Vec<&str> = text.split_whitespace().collect();
                match f.as_slice() {
                    [c, jt, jf, k] => Some(Insn {
                        code: c.parse().ok()?,
                        jt: jt.parse().ok()?,
                        jf: jf.parse().ok()?,
                        k: k.parse().ok()?,
                    }),
                    _ => None,
                }
            })
            .collect::<Option<Vec<Insn>>>()
            .ok_or_else(|| compile_err("unreadable instruction from libpcap".to_string()))?;
        let program = Program::new(&insns).map_err(|error| FilterError::Invalid {
            expression: expression.to_string(),
            error,
        })?;
        Ok(Filter {
            expression: expression.to_string(),
            program,
        })
    }

    /// The expression as given.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The compiled program.
    pub fn program(&self) -> &Program {
        &self.program
    }

    /// Whether the filter keeps a frame (`data` captured, `wire_len` on the
    /// wire, FCS excluded as in pcap).
    #[inline]
    pub fn matches(&self, data: &[u8], wire_len: u32) -> bool {
        self.program.run(data, wire_len) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use linecap_reader::read::{CaptureReader, Packet};
    use std::path::Path;
    use std::process::Command;

    const TRACES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/traces/");

    fn i(code: u16, jt: u8, jf: u8, k: u32) -> Insn {
        Insn::new(code, jt, jf, k)
    }

    const RET_A: u16 = op::RET | op::A;
    const RET_K: u16 = op::RET | op::K;

    #[test]
    fn validity_check() {
        assert_eq!(Program::new(&[]), Err(ProgramError::BadLength(0)));
        let long = vec![i(RET_K, 0, 0, 1); INSNS_MAX + 1];
        assert_eq!(
            Program::new(&long),
            Err(ProgramError::BadLength(INSNS_MAX + 1))
        );
        assert!(Program::new(&long[..INSNS_MAX]).is_ok());
        assert_eq!(
            Program::new(&[i(op::LD | op::IMM, 0, 0, 1)]),
            Err(ProgramError::NoFinalReturn)
        );
        assert_eq!(
            Program::new(&[i(op::JMP | op::JA, 0, 0, 1), i(RET_K, 0, 0, 0)]),
            Err(ProgramError::JumpOutOfRange { pc: 0 })
        );
        assert_eq!(
            Program::new(&[i(op::JMP | op::JA, 0, 0, u32::MAX), i(RET_K, 0, 0, 0)]),
            Err(ProgramError::JumpOutOfRange { pc: 0 })
        );
        assert_eq!(
            Program::new(&[i(op::JMP | op::JEQ | op::K, 0, 1, 0), i(RET_K, 0, 0, 0)]),
            Err(ProgramError::JumpOutOfRange { pc: 0 })
        );
        assert_eq!(
            Program::new(&[i(op::ALU | op::DIV | op::K, 0, 0, 0), i(RET_A, 0, 0, 0)]),
            Err(ProgramError::DivisionByZero { pc: 0 })
        );
        assert_eq!(
            Program::new(&[i(op::ALU | op::MOD | op::K, 0, 0, 0), i(RET_A, 0, 0, 0)]),
            Err(ProgramError::DivisionByZero { pc: 0 })
        );
        assert_eq!(
            Program::new(&[i(op::ALU | op::LSH | op::K, 0, 0, 32), i(RET_A, 0, 0, 0)]),
            Err(ProgramError::BadShift { pc: 0 })
        );
        assert_eq!(
            Program::new(&[i(op::ST, 0, 0, 16), i(RET_A, 0, 0, 0)]),
            Err(ProgramError::BadScratch { pc: 0 })
        );
        for code in [
            0x0008u16,
            0x0018,
            0x00e0,
            0x0e,
            0x1e,
            0x27 | 0x40,
            0x0f,
            0x100,
            0xb4,
        ] {
            assert!(
                matches!(
                    Program::new(&[i(code, 0, 0, 0), i(RET_A, 0, 0, 0)]),
                    Err(ProgramError::BadOpcode { pc: 0, .. })
                ),
                "{code:#x}"
            );
        }
        // `ret x` is not a classic instruction.
        assert!(Program::new(&[i(op::RET | op::X, 0, 0, 0)]).is_err());
    }

    fn run(insns: &[Insn], pkt: &[u8]) -> u32 {
        Program::new(insns).unwrap().run(pkt, pkt.len() as u32 + 4)
    }

    #[test]
    fn loads_and_out_of_bounds() {
        let pkt = [0x12u8, 0x34, 0x56, 0x78, 0x9a];
        let ld = |size: u16, k: u32| [i(op::LD | op::ABS | size, 0, 0, k), i(RET_A, 0, 0, 0)];
        assert_eq!(run(&ld(op::W, 0), &pkt), 0x1234_5678);
        assert_eq!(run(&ld(op::W, 1), &pkt), 0x3456_789a);
        assert_eq!(run(&ld(op::W, 2), &pkt), 0, "past the end rejects");
        assert_eq!(run(&ld(op::H, 3), &pkt), 0x789a);
        assert_eq!(run(&ld(op::H, 4), &pkt), 0);
        assert_eq!(run(&ld(op::B, 4), &pkt), 0x9a);
        assert_eq!(run(&ld(op::B, 5), &pkt), 0);
        assert_eq!(run(&ld(op::W, u32::MAX), &pkt), 0);
        assert_eq!(
            run(&ld(op::B, 0xffff_f000), &pkt),
            0,
            "ancillary loads reject"
        );
        // Indirect: X + k, no wrap-around.
        let ind = |x: u32, k: u32| {
            [
                i(op::LDX | op::IMM, 0, 0, x),
                i(op::LD | op::IND | op::H, 0, 0, k),
                i(RET_A, 0, 0, 0),
            ]
        };
        assert_eq!(run(&ind(1, 2), &pkt), 0x789a);
        assert_eq!(run(&ind(u32::MAX, 1), &pkt), 0);
        assert_eq!(run(&ind(1, u32::MAX), &pkt), 0);
        // MSH: X = 4 * (P[k] & 0xf).
        let msh = [
            i(op::LDX | op::MSH | op::B, 0, 0, 0),
            i(op::MISC | op::TXA, 0, 0, 0),
            i(RET_A, 0, 0, 0),
        ];
        assert_eq!(run(&msh, &[0x45]), 20);
        assert_eq!(run(&msh, &[]), 0);
        // len is the wire length; ldx len too.
        assert_eq!(
            run(&[i(op::LD | op::LEN, 0, 0, 0), i(RET_A, 0, 0, 0)], &pkt),
            9
        );
        assert_eq!(
            run(
                &[
                    i(op::LDX | op::LEN, 0, 0, 0),
                    i(op::MISC | op::TXA, 0, 0, 0),
                    i(RET_A, 0, 0, 0)
                ],
                &pkt
            ),
            9
        );
    }

    #[test]
    fn alu_jumps_scratch_and_misc() {
        let alu_k = |o: u16, a: u32, k: u32| {
            run(
                &[
                    i(op::LD | op::IMM, 0, 0, a),
                    i(op::ALU | o | op::K, 0, 0, k),
                    i(RET_A, 0, 0, 0),
                ],
                &[],
            )
        };
        let alu_x = |o: u16, a: u32, x: u32| {
            run(
                &[
                    i(op::LD | op::IMM, 0, 0, a),
                    i(op::LDX | op::IMM, 0, 0, x),
                    i(op::ALU | o | op::X, 0, 0, 0),
                    i(RET_A, 0, 0, 0),
                ],
                &[],
            )
        };
        assert_eq!(alu_k(op::ADD, u32::MAX, 2), 1);
        assert_eq!(alu_k(op::SUB, 1, 2), u32::MAX);
        assert_eq!(alu_k(op::MUL, 0x8000_0000, 2), 0);
        assert_eq!(alu_k(op::DIV, 7, 2), 3);
        assert_eq!(alu_k(op::MOD, 7, 4), 3);
        assert_eq!(alu_k(op::OR, 5, 2), 7);
        assert_eq!(alu_k(op::AND, 6, 3), 2);
        assert_eq!(alu_k(op::XOR, 6, 3), 5);
        assert_eq!(alu_k(op::LSH, 1, 31), 0x8000_0000);
        assert_eq!(alu_k(op::RSH, 0x8000_0000, 31), 1);
        assert_eq!(alu_x(op::DIV, 7, 0), 0, "division by X = 0 rejects");
        assert_eq!(alu_x(op::MOD, 7, 0), 0);
        assert_eq!(alu_x(op::DIV, 9, 3), 3);
        assert_eq!(alu_x(op::LSH, 1, 32), 0);
        assert_eq!(alu_x(op::RSH, u32::MAX, 40), 0);
        assert_eq!(alu_x(op::SUB, 10, 3), 7);
        assert_eq!(
            run(
                &[
                    i(op::LD | op::IMM, 0, 0, 1),
                    i(op::ALU | op::NEG, 0, 0, 0),
                    i(RET_A, 0, 0, 0)
                ],
                &[]
            ),
            u32::MAX
        );
        // Scratch memory: st/stx/ld mem/ldx mem, tax/txa.
        let p = [
            i(op::LD | op::IMM, 0, 0, 11),
            i(op::ST, 0, 0, 15),
            i(op::LDX | op::IMM, 0, 0, 22),
            i(op::STX, 0, 0, 0),
            i(op::LD | op::MEM, 0, 0, 0),          // A = 22
            i(op::LDX | op::MEM, 0, 0, 15),        // X = 11
            i(op::ALU | op::ADD | op::X, 0, 0, 0), // A = 33
            i(op::MISC | op::TAX, 0, 0, 0),
            i(op::LD | op::MEM, 0, 0, 7), // 0: untouched scratch
            i(op::MISC | op::TXA, 0, 0, 0),
            i(RET_A, 0, 0, 0),
        ];
        assert_eq!(run(&p, &[]), 33);
        // Jumps: jeq/jgt/jge/jset with K and X, ja.
        let cond = |c: u16, a: u32, k: u32| {
            run(
                &[
                    i(op::LD | op::IMM, 0, 0, a),
                    i(op::JMP | c | op::K, 1, 0, k),
                    i(RET_K, 0, 0, 0),
                    i(RET_K, 0, 0, 1),
                ],
                &[],
            ) == 1
        };
        assert!(cond(op::JEQ, 5, 5) && !cond(op::JEQ, 5, 6));
        assert!(cond(op::JGT, 6, 5) && !cond(op::JGT, 5, 5));
        assert!(cond(op::JGE, 5, 5) && !cond(op::JGE, 4, 5));
        assert!(cond(op::JSET, 6, 2) && !cond(op::JSET, 4, 2));
        let jx = run(
            &[
                i(op::LD | op::IMM, 0, 0, 5),
                i(op::LDX | op::IMM, 0, 0, 5),
                i(op::JMP | op::JEQ | op::X, 0, 2, 0),
                i(op::JMP | op::JA, 0, 0, 1),
                i(RET_K, 0, 0, 0),
                i(RET_K, 0, 0, 77),
            ],
            &[],
        );
        assert_eq!(jx, 77);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// Any program that passes the check runs on any packet without
        /// panicking; most random programs are refused without panicking.
        #[test]
        fn random_programs_never_panic(
            raw in proptest::collection::vec((0u16..0x100, 0u8..4, 0u8..4, proptest::prelude::any::<u32>()), 1..24),
            small_k in proptest::prelude::any::<bool>(),
            pkt in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80),
        ) {
            let mut insns: Vec<Insn> = raw
                .iter()
                .map(|&(c, jt, jf, k)| Insn::new(c, jt, jf, if small_k { k % 64 } else { k }))
                .collect();
            if let Ok(p) = Program::new(&insns) {
                p.run(&pkt, pkt.len() as u32);
            }
            insns.push(Insn::new(RET_A, 0, 0, 0));
            if let Ok(p) = Program::new(&insns) {
                p.run(&pkt, pkt.len() as u32);
            }
        }
    }

    #[test]
    fn bad_expressions_give_libpcaps_message() {
        let e = Filter::compile("tcp and and").unwrap_err();
        assert!(matches!(e, FilterError::Compile { .. }));
        assert!(e.to_string().contains("syntax error"), "{e}");
        let e = Filter::compile("port 99999").unwrap_err();
        assert!(e.to_string().contains("port 99999"), "{e}");
        let e = Filter::compile("host no.such.host.invalid").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("filter \"host no.such.host.invalid\": "),
            "{e}"
        );
        let e = Filter::compile("net 10.0.0.1/8").unwrap_err();
        assert!(e.to_string().contains("non-network bits"), "{e}");
        let f = Filter::compile("").unwrap();
        assert!(
            f.matches(&[0u8; 60], 60),
            "empty expression keeps everything"
        );
    }

    /// Expressions checked against tcpdump.
    const EXPRESSIONS: &[&str] = &[
        "tcp",
        "udp",
        "udp port 53",
        "ip6",
        "ip",
        "icmp",
        "icmp6",
        "arp",
        "not arp",
        "net 10.0.0.0/8",
        "tcp[tcpflags] & tcp-syn != 0",
        "tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn",
        "ether proto 0x88cc",
        "port 80 or port 443",
        "vlan",
        "vlan 10",
        "vlan and host 131.151.32.129",
        "vlan and host 146.254.115.10",
        "vlan and tcp",
        "vlan and not ip",
        "vlan and vlan",
        "mpls",
        "mpls and icmp",
        "host 192.168.1.1 or host 10.0.0.1",
        "src net 192.168.0.0/16 and dst port 80",
        "ip[6:2] & 0x1fff != 0",
        "ip[6] & 0x20 != 0",
        "ip6 and tcp port 21",
        "ip6 and udp",
        "greater 1000",
        "less 64",
        "len > 100 and len < 200",
        "ether broadcast",
        "ether multicast",
        "ip multicast",
        "sctp",
        "tcp portrange 1-1023",
        "udp[8:2] = 0x0800",
        "icmp[icmptype] = icmp-echo",
        "ip proto 47 or stp",
        "ether proto 0x9000",
        "ip and ip[8] < 64",
    ];

    /// Traces checked (pcap/pcapng, Ethernet: tcpdump reads them).
    const FILTER_TRACES: &[&str] = &[
        "tcpreplay__test.pcap",
        "community-id-spec__combined.pcap",
        "libtrace__vlan.pcap",
        "libtrace__mpls.pcap",
        "libtrace__qinq.pcap",
        "libtrace__vxlan.pcap",
        "libtrace__100_packets.pcapng",
        "ndpi__http_ipv6.pcap",
        "ndpi__icmp-tunnel.pcap",
        "suricata-verify__icmp_and_ssh.pcap",
        "suricata-verify__vlan-http-truncate-applayer.pcap",
        "zeek__communityid_sctp.pcap",
        "zeek__ftp_ipv6.pcap",
        "zeek__icmp_dot1q.pcap",
        "zeek__ipv4_fragmented-4.pcap",
        "zeek__ipv6-fragmented-dns.pcap",
        "zeek__mixed-vlan-mpls.pcap",
        "zeek__mpls-in-vlan.pcap",
        "zeek__q-in-q.pcap",
        "zeek__snap-tcp.pcap",
        "zeek__tcp_truncated-header.pcap",
        "zeek__vlan-pcp-dei.pcapng",
        "zeek__vlan-qinqinq.pcap",
        "zeek__wikipedia.pcap",
    ];

    /// (ts_ns, captured bytes) of every frame of a file.
    fn frames(path: &Path) -> Vec<(u64, u32, Vec<u8>)> {
        let mut r = CaptureReader::open(path).unwrap();
        let mut p = Packet::default();
        let mut v = Vec::new();
        while r.next(&mut p).unwrap() {
            v.push((p.ts_ns, p.wire_len, p.data.clone()));
        }
        v
    }

    #[test]
    fn filters_keep_exactly_what_tcpdump_keeps() {
        if Command::new("tcpdump").arg("--version").output().is_err() {
            eprintln!("SKIPPED: tcpdump is not installed (.ci/setup installs it)");
            return;
        }
        let out_dir = std::env::temp_dir().join(format!("linecap-bpf-{}", std::process::id()));
        std::fs::create_dir_all(&out_dir).unwrap();
        let filters: Vec<Filter> = EXPRESSIONS
            .iter()
            .map(|e| Filter::compile(e).unwrap_or_else(|err| panic!("{err}")))
            .collect();
        let mut compared = 0usize;
        let mut kept_total = 0usize;
        let mut nonempty = vec![false; EXPRESSIONS.len()];
        for trace in FILTER_TRACES {
            let path = Path::new(TRACES).join(trace);
            let all = frames(&path);
            for (n, f) in filters.iter().enumerate() {
                let out = out_dir.join(format!("{n}.pcap"));
                let st = Command::new("tcpdump")
                    .arg("-r")
                    .arg(&path)
                    .arg("-w")
                    .arg(&out)
                    .arg(f.expression())
                    .output()
                    .unwrap();
                assert!(
                    st.status.success(),
                    "tcpdump {trace} {:?}: {}",
                    f.expression(),
                    String::from_utf8_lossy(&st.stderr)
                );
                let want = frames(&out);
                let got: Vec<_> = all
                    .iter()
                    .filter(|(_, wire, data)| f.matches(data, *wire))
                    .cloned()
                    .collect();
                let idx = |v: &[(u64, u32, Vec<u8>)]| -> Vec<usize> {
                    v.iter()
                        .map(|x| all.iter().position(|y| y == x).unwrap())
                        .collect()
                };
                assert_eq!(
                    idx(&got),
                    idx(&want),
                    "{trace}: {:?}: frame indices kept (linecap vs tcpdump)",
                    f.expression()
                );
                assert!(got == want);
                compared += 1;
                kept_total += got.len();
                nonempty[n] |= !got.is_empty();
            }
        }
        std::fs::remove_dir_all(&out_dir).unwrap();
        let never: Vec<_> = EXPRESSIONS
            .iter()
            .zip(&nonempty)
            .filter(|(_, k)| !**k)
            .map(|(e, _)| *e)
            .collect();
        eprintln!(
            "{compared} (trace, expression) pairs agree with tcpdump; {kept_total} frames kept; \
             expressions that kept nothing anywhere: {never:?}"
        );
        assert!(
            never.len() <= 1,
            "too many expressions never match: {never:?}"
        );
    }

    #[test]
    fn interpreter_agrees_with_libpcap_on_mutated_frames() {
        // libpcap's own bpf_filter() (pcap_offline_filter) as the oracle, on
        // every frame of a trace and on bytes flipped / cut at every place.
        let trace = Path::new(TRACES).join("tcpreplay__test.pcap");
        let all = frames(&trace);
        let cap = pcap::Capture::dead(pcap::Linktype::ETHERNET).unwrap();
        let mut rng = crate::policy::sample::SplitMix64::new(1);
        for e in EXPRESSIONS {
            let ours = Filter::compile(e).unwrap();
            let theirs = cap.compile(e, true).unwrap();
            for (_, _, data) in all.iter().take(60) {
                for _ in 0..20 {
                    let mut d = data.clone();
                    let r = rng.next_u64();
                    let at = (r as usize) % d.len().max(1);
                    if let Some(b) = d.get_mut(at) {
                        *b ^= (r >> 32) as u8 | 1;
                    }
                    let cut = ((r >> 40) as usize) % (d.len() + 1);
                    if r & 1 == 0 {
                        d.truncate(cut);
                    }
                    // pcap_offline_filter takes len = caplen = d.len().
                    assert_eq!(
                        ours.matches(&d, d.len() as u32),
                        theirs.filter(&d),
                        "{e:?} on {d:02x?}"
                    );
                }
            }
        }
    }
}

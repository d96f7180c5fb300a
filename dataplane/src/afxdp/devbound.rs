//! The device-bound variant of linecap's XDP program (`linecap_xdp_hw.o`,
//! `ebpf/linecap_xdp.c` built with `-DLINECAP_DEV_BOUND`), loaded and
//! attached without aya.
//!
//! It calls the kfunc `bpf_xdp_metadata_rx_timestamp` (the driver's RX
//! hardware timestamp), which the verifier accepts only in a program loaded
//! *device-bound*: `BPF_PROG_LOAD` with `prog_ifindex` and
//! `BPF_F_XDP_DEV_BOUND_ONLY`. aya 0.14 can express neither, nor relocate a
//! call to an extern kernel function, so this module does the few steps
//! itself:
//!
//! 1. find the kfunc's BTF id in the kernel's BTF (`/sys/kernel/btf/vmlinux`,
//!    [`btf_func_id`]: header, type section, string section);
//! 2. take the program's instructions from the ELF object (`object` crate)
//!    and apply its relocations ([`relocate`]): a `ld_imm64` of a map becomes
//!    a `BPF_PSEUDO_MAP_FD` load of the map aya created for the plain
//!    program (the two programs share the maps, so the loader's `register`
//!    and `queue_stats` work whichever runs), and the call to the extern
//!    becomes a `BPF_PSEUDO_KFUNC_CALL` with the BTF id; any other
//!    relocation is refused;
//! 3. `BPF_PROG_LOAD` (verifier log kept for the error), then
//!    `BPF_LINK_CREATE` with `XDP_FLAGS_DRV_MODE` (a device-bound program
//!    cannot run in generic mode). As with aya, the program is attached
//!    through a `bpf_link`: it detaches when [`DevBound`] drops or the
//!    process dies.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use anyhow::{Context, bail};

/// The kfunc the program calls.
pub const KFUNC: &str = "bpf_xdp_metadata_rx_timestamp";

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;
const BPF_F_XDP_DEV_BOUND_ONLY: u32 = 1 << 6;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
const BPF_PSEUDO_MAP_FD: u8 = 1;
const BPF_PSEUDO_CALL: u8 = 1;
const BPF_PSEUDO_KFUNC_CALL: u8 = 2;
const OP_LD_IMM64: u8 = 0x18;
const OP_CALL: u8 = 0x85;
const BTF_KIND_FUNC: u32 = 12;

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Insn {
    /// Opcode.
    pub code: u8,
    /// dst_reg (low 4 bits), src_reg (high 4 bits).
    pub regs: u8,
    /// Offset.
    pub off: i16,
    /// Immediate.
    pub imm: i32,
}

impl Insn {
    fn src_reg(&self) -> u8 {
        self.regs >> 4
    }
    fn set_src_reg(&mut self, r: u8) {
        self.regs = (self.regs & 0x0f) | (r << 4);
    }
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The BTF type id of the `BTF_KIND_FUNC` named `name` in a BTF blob (the
/// kernel's `/sys/kernel/btf/vmlinux`, native little-endian). Errors name
/// what is wrong with the blob.
pub fn btf_func_id(btf: &[u8], name: &str) -> Result<u32, String> {
    let bad = |what: &str| format!("kernel BTF: {what}");
    if btf.get(0..2) != Some(&0xeb9fu16.to_le_bytes()[..]) {
        return Err(bad("no BTF magic (or not little-endian)"));
    }
    let field = |i: usize| u32_at(btf, 4 + 4 * i).ok_or_else(|| bad("header cut short"));
    let hdr_len = field(0)? as usize;
    let (type_off, type_len) = (field(1)? as usize, field(2)? as usize);
    let (str_off, str_len) = (field(3)? as usize, field(4)? as usize);
    let section = |off: usize, len: usize, what: &str| {
        hdr_len
            .checked_add(off)
            .and_then(|s| Some((s, s.checked_add(len)?)))
            .and_then(|(s, e)| btf.get(s..e))
            .ok_or_else(|| bad(&format!("{what} section outside the blob")))
    };
    let types = section(type_off, type_len, "type")?;
    let strings = section(str_off, str_len, "string")?;
    let name_at = |off: usize| -> Option<&[u8]> {
        let s = strings.get(off..)?;
        Some(&s[..s.iter().position(|&b| b == 0)?])
    };
    let mut at = 0usize;
    let mut id = 1u32;
    while at < types.len() {
        let (Some(name_off), Some(info)) = (u32_at(types, at), u32_at(types, at + 4)) else {
            return Err(bad(&format!("type {id} cut short")));
        };
        let kind = (info >> 24) & 0x1f;
        let vlen = (info & 0xffff) as usize;
        if kind == BTF_KIND_FUNC && name_at(name_off as usize) == Some(name.as_bytes()) {
            return Ok(id);
        }
        // Bytes after the 12-byte common header, by kind (linux/btf.h).
        let extra = match kind {
            1 | 14 | 17 => 4,          // INT, VAR, DECL_TAG
            3 => 12,                   // ARRAY
            4 | 5 => vlen * 12,        // STRUCT, UNION
            6 | 13 => vlen * 8,        // ENUM, FUNC_PROTO
            15 | 19 => vlen * 12,      // DATASEC, ENUM64
            2 | 7..=12 | 16 | 18 => 0, // PTR, FWD, TYPEDEF..FUNC, FLOAT, TYPE_TAG
            k => return Err(bad(&format!("type {id} has unknown kind {k}"))),
        };
        at += 12 + extra;
        id += 1;
    }
    Err(format!(
        "the kernel's BTF has no function {name} (kernel older than 6.3?)"
    ))
}

/// The program section's instructions from the ELF object, relocated: map
/// loads point at `maps` (name, fd), the call to [`KFUNC`] is a kfunc call
/// to BTF id `kfunc_id`. Any other relocation, or a call to a subprogram,
/// is an error.
pub fn relocate(
    elf: &[u8],
    section: &str,
    maps: &[(&str, RawFd)],
    kfunc_id: u32,
) -> anyhow::Result<Vec<Insn>> {
    use object::{Object, ObjectSection, ObjectSymbol, RelocationTarget};
    let file = object::File::parse(elf).context("parsing the XDP object")?;
    let sec = file
        .section_by_name(section)
        .with_context(|| format!("XDP object has no section {section:?}"))?;
    let data = sec.data()?;
    anyhow::ensure!(
        data.len() % 8 == 0 && !data.is_empty(),
        "section {section:?} is not a whole number of instructions"
    );
    let mut insns: Vec<Insn> = data
        .chunks_exact(8)
        .map(|c| Insn {
            code: c[0],
            regs: c[1],
            off: i16::from_le_bytes([c[2], c[3]]),
            imm: i32::from_le_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect();
    let mut kfunc_calls = 0;
    for (offset, rel) in sec.relocations() {
        let RelocationTarget::Symbol(si) = rel.target() else {
            bail!("relocation at {offset:#x} in {section:?} has no symbol");
        };
        let sym = file.symbol_by_index(si)?;
        let name = sym.name()?;
        let i = (offset / 8) as usize;
        let n = insns.len();
        let Some(insn) = insns.get_mut(i) else {
            bail!("relocation at {offset:#x} is outside {section:?}");
        };
        if let Some(&(_, fd)) = maps.iter().find(|(m, _)| *m == name) {
            anyhow::ensure!(
                insn.code == OP_LD_IMM64 && i + 1 < n,
                "map {name} used at instruction {i} by opcode {:#x}, not ld_imm64",
                insn.code
            );
            insns[i].set_src_reg(BPF_PSEUDO_MAP_FD);
            insns[i].imm = fd;
            insns[i + 1].imm = 0;
        } else if name == KFUNC {
            anyhow::ensure!(
                insn.code == OP_CALL,
                "{KFUNC} referenced at instruction {i} by opcode {:#x}, not a call",
                insn.code
            );
            insn.set_src_reg(BPF_PSEUDO_KFUNC_CALL);
            insn.imm = kfunc_id as i32;
            insn.off = 0; // 0: the id is in vmlinux's BTF
            kfunc_calls += 1;
        } else {
            bail!("unexpected relocation against {name:?} at instruction {i} of {section:?}");
        }
    }
    anyhow::ensure!(kfunc_calls > 0, "the XDP object never calls {KFUNC}");
    if let Some(i) = insns
        .iter()
        .position(|n| n.code == OP_CALL && n.src_reg() == BPF_PSEUDO_CALL)
    {
        bail!("instruction {i} calls a subprogram; the device-bound loader links none");
    }
    Ok(insns)
}

fn sys_bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_int> {
    // SAFETY: `attr` is a live, writable, zero-padded `bpf_attr` prefix of
    // the size passed, laid out for `cmd`; the pointers inside it (if any)
    // point to buffers that outlive the call. The kernel reads it and may
    // write back into it (info lengths), nothing else.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            (attr as *mut T).cast::<libc::c_void>(),
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as libc::c_int)
    }
}

#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
    // The rest of the PROG_LOAD attributes (BTF, func/line info, ...): zero.
    rest: [u64; 12],
}

#[repr(C)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
    rest: [u64; 6],
}

#[repr(C)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// What the kernel says about a loaded program (`struct bpf_prog_info`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProgInfo {
    /// Program id (`bpftool prog show id N`). (`bpf_prog_info.ifindex` is
    /// not read: the kernel fills it for offloaded programs only, so it is 0
    /// for a device-bound one too; the proof that the program is bound is
    /// in its translated code, where the kfunc call has become a call to
    /// the driver's own function, e.g. `veth_xdp_rx_timestamp` in
    /// `bpftool prog dump xlated id N`.)
    pub id: u32,
    /// Total run time, with `kernel.bpf_stats_enabled=1`.
    pub run_time_ns: u64,
    /// Runs counted, with `kernel.bpf_stats_enabled=1`.
    pub run_cnt: u64,
}

/// `BPF_OBJ_GET_INFO_BY_FD` of a program descriptor.
pub fn prog_info(fd: RawFd) -> io::Result<ProgInfo> {
    // struct bpf_prog_info up to run_cnt is 208 bytes; the kernel fills
    // what it has and leaves the array pointers (all 0 here) alone.
    let mut buf = [0u64; 32];
    let mut attr = InfoAttr {
        bpf_fd: fd as u32,
        info_len: std::mem::size_of_val(&buf) as u32,
        info: buf.as_mut_ptr() as u64,
    };
    sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    Ok(ProgInfo {
        // `id` is the u32 at byte 4 (after `type`), little-endian.
        id: (buf[0] >> 32) as u32,
        run_time_ns: buf[192 / 8],
        run_cnt: buf[200 / 8],
    })
}

/// The device-bound program, loaded and attached in native mode; detached
/// when dropped (the link's descriptor closes).
#[derive(Debug)]
pub struct DevBound {
    // Field order is drop order: the link first.
    _link: OwnedFd,
    prog: OwnedFd,
    info: ProgInfo,
}

impl DevBound {
    /// Load `insns` bound to `ifindex` and attach them there in native mode.
    /// The error says which step failed, with the verifier's last words.
    pub fn attach(insns: &[Insn], ifindex: u32) -> anyhow::Result<Self> {
        let license = c"Dual BSD/GPL";
        let mut name = [0u8; 16];
        name[..11].copy_from_slice(b"linecap_xdp");
        let mut log = vec![0u8; 1 << 20];
        let mut attr = ProgLoadAttr {
            prog_type: BPF_PROG_TYPE_XDP,
            insn_cnt: insns.len() as u32,
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            log_level: 0,
            log_size: 0,
            log_buf: 0,
            kern_version: 0,
            prog_flags: BPF_F_XDP_DEV_BOUND_ONLY,
            prog_name: name,
            prog_ifindex: ifindex,
            expected_attach_type: BPF_XDP,
            rest: [0; 12],
        };
        let fd = match sys_bpf(BPF_PROG_LOAD, &mut attr) {
            Ok(fd) => fd,
            Err(first) => {
                // Again with the verifier's log, for the reason.
                attr.log_level = 1;
                attr.log_size = log.len() as u32;
                attr.log_buf = log.as_mut_ptr() as u64;
                let again = sys_bpf(BPF_PROG_LOAD, &mut attr);
                let end = log.iter().position(|&b| b == 0).unwrap_or(0);
                let text = String::from_utf8_lossy(&log[..end]);
                let tail: Vec<&str> = text.lines().rev().take(3).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                if let Ok(fd) = again {
                    // SAFETY: a fresh program descriptor we own alone.
                    drop(unsafe { OwnedFd::from_raw_fd(fd) });
                }
                if tail.is_empty() {
                    bail!(
                        "BPF_PROG_LOAD of the device-bound program refused before verification \
                         ({first}): the kernel or the interface's driver cannot bind XDP programs"
                    );
                }
                bail!(
                    "BPF_PROG_LOAD of the device-bound program refused ({first}); verifier: {}",
                    tail.join(" | ")
                );
            }
        };
        // SAFETY: the kernel returned a new program descriptor owned by nobody else.
        let prog = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut link = LinkCreateAttr {
            prog_fd: prog.as_raw_fd() as u32,
            target_ifindex: ifindex,
            attach_type: BPF_XDP,
            flags: XDP_FLAGS_DRV_MODE,
            rest: [0; 6],
        };
        let lfd = sys_bpf(BPF_LINK_CREATE, &mut link)
            .context("attaching the device-bound program in native mode (BPF_LINK_CREATE)")?;
        // SAFETY: the kernel returned a new link descriptor owned by nobody else.
        let link = unsafe { OwnedFd::from_raw_fd(lfd) };
        let info = prog_info(prog.as_raw_fd()).unwrap_or_default();
        Ok(DevBound {
            _link: link,
            prog,
            info,
        })
    }

    /// The kernel's view at attach time.
    pub fn info(&self) -> ProgInfo {
        self.info
    }

    /// The kernel's view now (run time and count with bpf stats enabled).
    pub fn info_now(&self) -> io::Result<ProgInfo> {
        prog_info(self.prog.as_raw_fd())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A BTF blob with the given (kind, name) types, each with vlen members.
    fn blob(types: &[(u32, &str, usize)]) -> Vec<u8> {
        let mut strings = vec![0u8];
        let mut ty = Vec::new();
        for &(kind, name, vlen) in types {
            let off = strings.len() as u32;
            strings.extend_from_slice(name.as_bytes());
            strings.push(0);
            ty.extend_from_slice(&off.to_le_bytes());
            ty.extend_from_slice(&((kind << 24) | vlen as u32).to_le_bytes());
            ty.extend_from_slice(&0u32.to_le_bytes());
            let extra = match kind {
                1 => 4,
                4 => vlen * 12,
                13 => vlen * 8,
                _ => 0,
            };
            ty.extend(std::iter::repeat_n(0xa5, extra));
        }
        let mut b = Vec::new();
        b.extend_from_slice(&0xeb9fu16.to_le_bytes());
        b.extend_from_slice(&[1, 0]);
        for v in [
            24u32,
            0,
            ty.len() as u32,
            ty.len() as u32,
            strings.len() as u32,
        ] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&ty);
        b.extend_from_slice(&strings);
        b
    }

    #[test]
    fn btf_finds_the_func_by_name_and_kind() {
        let b = blob(&[
            (1, "int", 0),
            (4, "xdp_md", 6),
            (13, "", 2),
            (12, "bpf_xdp_metadata_rx_hash", 0),
            (2, "bpf_xdp_metadata_rx_timestamp", 0), // a PTR of that name: not it
            (12, "bpf_xdp_metadata_rx_timestamp", 0),
        ]);
        assert_eq!(btf_func_id(&b, KFUNC), Ok(6));
        assert_eq!(btf_func_id(&b, "bpf_xdp_metadata_rx_hash"), Ok(4));
        let e = btf_func_id(&b, "nope").unwrap_err();
        assert!(e.contains("no function nope"), "{e}");
    }

    #[test]
    fn btf_rejects_bad_blobs_without_panicking() {
        assert!(btf_func_id(b"", KFUNC).unwrap_err().contains("magic"));
        let mut b = blob(&[(4, "s", 3)]);
        let n = b.len();
        b.truncate(n - 4); // strings cut: section outside the blob
        assert!(btf_func_id(&b, KFUNC).unwrap_err().contains("outside"));
        let mut b = blob(&[(1, "int", 0)]);
        b[24 + 7] = 31; // kind 31
        assert!(btf_func_id(&b, KFUNC).unwrap_err().contains("unknown kind"));
    }

    static HW: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/linecap_xdp_hw.o"));
    static KTIME: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/linecap_xdp.o"));

    #[test]
    fn relocate_patches_maps_and_the_kfunc_call() {
        let maps = [("linecap_xsks", 7), ("linecap_stats", 9)];
        let insns = relocate(HW, "xdp", &maps, 4242).unwrap();
        let kcalls: Vec<&Insn> = insns
            .iter()
            .filter(|n| n.code == OP_CALL && n.src_reg() == BPF_PSEUDO_KFUNC_CALL)
            .collect();
        assert_eq!(kcalls.len(), 1);
        assert_eq!(kcalls[0].imm, 4242);
        let fds: Vec<i32> = insns
            .iter()
            .filter(|n| n.code == OP_LD_IMM64 && n.src_reg() == BPF_PSEUDO_MAP_FD)
            .map(|n| n.imm)
            .collect();
        assert!(fds.contains(&7) && fds.contains(&9), "{fds:?}");
        // A map the loader was not given is refused, not left unpatched.
        let e = relocate(HW, "xdp", &maps[..1], 1).unwrap_err();
        assert!(format!("{e:#}").contains("linecap_stats"), "{e:#}");
        // The plain program has no kfunc call to patch.
        let e = relocate(KTIME, "xdp", &maps, 1).unwrap_err();
        assert!(format!("{e:#}").contains("never calls"), "{e:#}");
        assert!(relocate(HW, "nosuch", &maps, 1).is_err());
    }
}

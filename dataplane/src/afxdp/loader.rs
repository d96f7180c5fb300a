//! Loading and attaching linecap's XDP program (`ebpf/linecap_xdp.c`,
//! compiled by `dataplane/build.rs` with clang and embedded here).
//!
//! Two variants of one source share the maps aya creates from the plain
//! object: in native mode linecap first tries the device-bound variant,
//! which also takes the driver's RX hardware timestamp
//! ([`super::devbound`]); when the kernel or the driver refuses it (the
//! reason is kept, [`XdpAttachment::device_bound_refused`]), and always in
//! generic mode, the plain variant is loaded and attached by aya as before.
//! When the kernel refuses to load the plain variant too (a 6.18 build
//! whose verifier rejects `bpf_xdp_adjust_meta` in every XDP program was
//! met), a third variant without the metadata stamp is loaded from its own
//! object (its maps replace the first object's, which no program used):
//! frames are then stamped in user space as they are received, and the
//! program counts each in the queue's `no_meta`
//! ([`XdpAttachment::metadata_refused`] says why). Any other load failure
//! is an error, as before.
//!
//! Both attach through a `bpf_link`: the kernel detaches the program when
//! the link's descriptor closes, which happens on drop, on any exit, and
//! when the process is killed, so an interface is never left redirecting
//! into a socket that no longer exists.

use std::os::fd::RawFd;

use aya::Ebpf;
use aya::maps::{MapData, PerCpuArray, XskMap};
use aya::programs::{Xdp, XdpMode};

const PROGRAM: &str = "linecap_xdp";
const XSKS_MAP: &str = "linecap_xsks";
const STATS_MAP: &str = "linecap_stats";
/// Queues the program's maps can hold (QUEUES_MAX in the C source).
pub const QUEUES_MAX: u32 = 256;

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/linecap_xdp.o"));
static OBJECT_HW: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/linecap_xdp_hw.o"));
/// The plain program without XDP metadata (`-DLINECAP_NO_META`): for a
/// kernel whose verifier refuses `bpf_xdp_adjust_meta` in XDP programs.
static OBJECT_NO_META: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/linecap_xdp_nometa.o"));

/// Which XDP attach mode to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AttachMode {
    /// Native (driver) mode, falling back to generic when the driver refuses.
    #[default]
    Auto,
    /// Native (driver) mode only.
    Native,
    /// Generic (skb) mode.
    Generic,
}

/// Which timestamps the XDP program takes (`--xdp-timestamps`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XdpTimestamps {
    /// Native mode: the device-bound program (hardware stamp where the
    /// driver gives one, else `bpf_ktime_get_ns()`), falling back to the
    /// plain program when it cannot be loaded; generic mode: the plain one.
    #[default]
    Auto,
    /// The device-bound program or fail (needs native mode).
    Hardware,
    /// The plain program: `bpf_ktime_get_ns()` for every frame.
    Ktime,
}

/// The program attached to one interface, with its maps.
pub struct XdpAttachment {
    // Field order is drop order: the device-bound link closes before the
    // maps it uses.
    devbound: Option<super::devbound::DevBound>,
    device_bound_refused: Option<String>,
    metadata_refused: Option<String>,
    ebpf: Ebpf,
    ifname: String,
    native: bool,
    native_refused: Option<String>,
    threaded_before: Option<String>,
    driver: String,
}

/// Per-queue counts kept by the XDP program.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XdpQueueStats {
    /// Frames the program ran on.
    pub seen: u64,
    /// Frames it passed to the kernel stack (no socket bound yet/any more).
    pub not_redirected: u64,
    /// Frames it could not stamp (no XDP metadata room; not a drop).
    pub no_meta: u64,
    /// Device-bound program: frames the driver gave a hardware stamp.
    pub hw_stamped: u64,
    /// Device-bound program: frames stamped without one (the kfunc returned
    /// an error or 0; they carry `bpf_ktime_get_ns()` alone).
    pub hw_missing: u64,
}

impl XdpQueueStats {
    /// The counts since `base` (an earlier reading of the same queue).
    pub fn since(&self, base: &XdpQueueStats) -> XdpQueueStats {
        XdpQueueStats {
            seen: self.seen - base.seen,
            not_redirected: self.not_redirected - base.not_redirected,
            no_meta: self.no_meta - base.no_meta,
            hw_stamped: self.hw_stamped - base.hw_stamped,
            hw_missing: self.hw_missing - base.hw_missing,
        }
    }
}

/// A load error in one line: the verifier's line that refuses the metadata
/// helper (not the line of the call itself), else the error's first line.
fn refusal_gist(err: &str) -> String {
    let first = err.lines().next().unwrap_or("").trim();
    match err
        .lines()
        .map(str::trim)
        // (Not the source line the verifier echoes, "; if (bpf_xdp_adjust_meta(...",
        // nor the instruction, "14: (85) call bpf_xdp_adjust_meta#54".)
        .find(|l| l.contains("bpf_xdp_adjust_meta") && !l.starts_with(';') && !l.contains("call "))
    {
        Some(l) => {
            let head = first.split(" Verifier output").next().unwrap_or(first);
            format!("{}: {l}", head.trim_end_matches('.'))
        }
        None => first.to_string(),
    }
}

/// The plain program of `ebpf`.
fn plain_prog(ebpf: &mut Ebpf) -> anyhow::Result<&mut Xdp> {
    use anyhow::Context;
    ebpf.program_mut(PROGRAM)
        .context("XDP program missing from the object")?
        .try_into()
        .context("program is not XDP")
}

/// Load (not attach) the plain program of `ebpf` into the kernel.
fn load_plain(ebpf: &mut Ebpf) -> anyhow::Result<()> {
    use anyhow::Context;
    plain_prog(ebpf)?
        .load()
        .context("loading the XDP program into the kernel")
}

impl XdpAttachment {
    /// Load the program and attach it to `ifname` (in the calling thread's
    /// network namespace). With `threaded_napi`, switch the interface to
    /// threaded NAPI after attaching (writable only then on veth) and
    /// restore the old setting on drop. `timestamps` chooses the program
    /// (see [`XdpTimestamps`]); `Hardware` fails, saying why, when the
    /// device-bound program cannot be attached.
    pub fn attach(
        ifname: &str,
        mode: AttachMode,
        timestamps: XdpTimestamps,
        threaded_napi: bool,
    ) -> anyhow::Result<Self> {
        use anyhow::Context;
        // The maps (both programs use these); no program is loaded yet.
        let mut ebpf =
            Ebpf::load(OBJECT).context("loading the XDP program (BPF verifier, memlock limit?)")?;
        let try_devbound = match (mode, timestamps) {
            (_, XdpTimestamps::Ktime) => false,
            (AttachMode::Generic, XdpTimestamps::Hardware) => anyhow::bail!(
                "--xdp-timestamps hardware needs native XDP (--xdp-mode native or auto): a \
                 device-bound program cannot attach in generic mode"
            ),
            (AttachMode::Generic, XdpTimestamps::Auto) => false,
            _ => true,
        };
        let mut devbound = None;
        let mut device_bound_refused = None;
        if try_devbound {
            match attach_devbound(&ebpf, ifname) {
                Ok(d) => devbound = Some(d),
                Err(e) if timestamps == XdpTimestamps::Hardware => {
                    return Err(e.context(format!(
                        "--xdp-timestamps hardware: the device-bound XDP program cannot run on \
                         {ifname}"
                    )));
                }
                Err(e) => device_bound_refused = Some(format!("{e:#}")),
            }
        }
        let mut native_refused = None;
        let mut metadata_refused = None;
        let native = if devbound.is_some() {
            true
        } else {
            if let Err(e) = load_plain(&mut ebpf) {
                // Only the verifier's refusal of the metadata helper leads to
                // the program without it; any other failure is the error.
                let text = format!("{e:#}");
                if !text.contains("bpf_xdp_adjust_meta") {
                    return Err(e);
                }
                // From its own object (nothing used the first one's maps yet).
                let why = refusal_gist(&text);
                let after = || {
                    format!(
                        "loading the XDP program without metadata, after the program with it \
                         was refused ({why})"
                    )
                };
                let mut plain = Ebpf::load(OBJECT_NO_META).with_context(after)?;
                load_plain(&mut plain).with_context(after)?;
                ebpf = plain;
                metadata_refused = Some(why);
            }
            let prog = plain_prog(&mut ebpf)?;
            match mode {
                AttachMode::Generic => {
                    prog.attach(ifname, XdpMode::Skb)
                        .with_context(|| format!("attaching XDP (generic) to {ifname}"))?;
                    false
                }
                AttachMode::Native => {
                    prog.attach(ifname, XdpMode::Driver)
                        .with_context(|| format!("attaching XDP (native) to {ifname}"))?;
                    true
                }
                AttachMode::Auto => match prog.attach(ifname, XdpMode::Driver) {
                    Ok(_) => true,
                    Err(e) => {
                        native_refused = Some(format!("{e:#}"));
                        prog.attach(ifname, XdpMode::Skb)
                            .with_context(|| format!("attaching XDP (generic) to {ifname}"))?;
                        false
                    }
                },
            }
        };
        let threaded_before = if threaded_napi {
            let path = format!("/sys/class/net/{ifname}/threaded");
            let before = std::fs::read_to_string(&path)
                .ok()
                .map(|s| s.trim().to_string());
            match &before {
                Some(b) if b != "1" => std::fs::write(&path, "1").ok().and(before.clone()),
                _ => None,
            }
        } else {
            None
        };
        let driver = super::sys::driver_name(ifname).unwrap_or_default();
        Ok(XdpAttachment {
            devbound,
            device_bound_refused,
            metadata_refused,
            ebpf,
            driver,
            ifname: ifname.into(),
            native,
            native_refused,
            threaded_before,
        })
    }

    /// Whether the program runs in native (driver) mode.
    pub fn native(&self) -> bool {
        self.native
    }

    /// Whether the device-bound program (hardware RX timestamps through
    /// the XDP metadata kfunc) is the one attached.
    pub fn device_bound(&self) -> bool {
        self.devbound.is_some()
    }

    /// Why the device-bound program was not used although it was tried
    /// (native mode, `--xdp-timestamps auto`): the plain program runs.
    pub fn device_bound_refused(&self) -> Option<&str> {
        self.device_bound_refused.as_deref()
    }

    /// Why the program that stamps frames in the XDP metadata was refused,
    /// when the one without metadata runs instead (frames stamped in user
    /// space as they are received, each counted in the queue's `no_meta`).
    pub fn metadata_refused(&self) -> Option<&str> {
        self.metadata_refused.as_deref()
    }

    /// The kernel's view of the device-bound program (its id; run time and
    /// count with `kernel.bpf_stats_enabled=1`), when it is the one attached.
    pub fn device_bound_info(&self) -> Option<super::devbound::ProgInfo> {
        let d = self.devbound.as_ref()?;
        Some(d.info_now().unwrap_or(d.info()))
    }

    /// Why native mode was refused (Auto mode fell back to generic).
    pub fn native_refused(&self) -> Option<&str> {
        self.native_refused.as_deref()
    }

    /// The interface's driver (`ethtool -i`; empty when it would not say).
    pub fn driver(&self) -> &str {
        &self.driver
    }

    /// The interface.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    fn xsks(&mut self) -> anyhow::Result<XskMap<&mut MapData>> {
        use anyhow::Context;
        XskMap::try_from(self.ebpf.map_mut(XSKS_MAP).context("XSKMAP missing")?)
            .context("XSKMAP has the wrong type")
    }

    /// Redirect `queue` into the socket `fd`.
    pub fn register(&mut self, queue: u32, fd: RawFd) -> anyhow::Result<()> {
        anyhow::ensure!(
            queue < QUEUES_MAX,
            "queue {queue} beyond the XDP map's {QUEUES_MAX}"
        );
        self.xsks()?.set(queue, RawFdRef(fd), 0)?;
        Ok(())
    }

    /// Stop redirecting `queue` (its frames go to the kernel stack and are
    /// counted as not redirected).
    pub fn unregister(&mut self, queue: u32) {
        if let Ok(mut m) = self.xsks() {
            let _ = m.unset(queue);
        }
    }

    /// The program's counts for `queue`, summed over CPUs.
    pub fn queue_stats(&self, queue: u32) -> XdpQueueStats {
        let Some(map) = self.ebpf.map(STATS_MAP) else {
            return XdpQueueStats::default();
        };
        // struct queue_stats in the C source: five u64.
        let Ok(arr) = PerCpuArray::<&MapData, [u64; 5]>::try_from(map) else {
            return XdpQueueStats::default();
        };
        match arr.get(&queue, 0) {
            Ok(values) => values
                .iter()
                .fold(XdpQueueStats::default(), |a, v| XdpQueueStats {
                    // [0] redirected, [1] not redirected: seen is their sum.
                    seen: a.seen + v[0] + v[1],
                    not_redirected: a.not_redirected + v[1],
                    no_meta: a.no_meta + v[2],
                    hw_stamped: a.hw_stamped + v[3],
                    hw_missing: a.hw_missing + v[4],
                }),
            Err(_) => XdpQueueStats::default(),
        }
    }
}

/// Load the device-bound program into the maps of `ebpf` and attach it to
/// `ifname` in native mode.
fn attach_devbound(ebpf: &Ebpf, ifname: &str) -> anyhow::Result<super::devbound::DevBound> {
    use super::devbound;
    use anyhow::Context;
    use aya::maps::Map;
    use std::os::fd::{AsFd, AsRawFd};
    let fd_of = |name: &str| -> anyhow::Result<RawFd> {
        match ebpf.map(name) {
            Some(Map::XskMap(d)) | Some(Map::PerCpuArray(d)) => Ok(d.fd().as_fd().as_raw_fd()),
            _ => anyhow::bail!("map {name} missing or of an unexpected type"),
        }
    };
    let maps = [(XSKS_MAP, fd_of(XSKS_MAP)?), (STATS_MAP, fd_of(STATS_MAP)?)];
    let btf_path = "/sys/kernel/btf/vmlinux";
    let btf = std::fs::read(btf_path)
        .with_context(|| format!("reading {btf_path} (kernel without BTF?)"))?;
    let id = devbound::btf_func_id(&btf, devbound::KFUNC).map_err(anyhow::Error::msg)?;
    let insns = devbound::relocate(OBJECT_HW, "xdp", &maps, id)?;
    let ifindex = super::sys::ifindex(ifname)?;
    devbound::DevBound::attach(&insns, ifindex)
}

/// An fd borrowed for one map update.
struct RawFdRef(RawFd);

impl std::os::fd::AsRawFd for RawFdRef {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

impl Drop for XdpAttachment {
    fn drop(&mut self) {
        if let Some(before) = &self.threaded_before {
            let _ = std::fs::write(format!("/sys/class/net/{}/threaded", self.ifname), before);
        }
        // Dropping `ebpf` closes the link descriptor: the kernel detaches the program.
    }
}

#[cfg(test)]
mod tests {
    use super::refusal_gist;

    #[test]
    fn a_refusal_is_told_in_one_line() {
        let err = "loading the XDP program into the kernel: the BPF_PROG_LOAD syscall returned \
                   Invalid argument (os error 22). Verifier output: 0: R1=ctx() R10=fp0\n\
                   ; int linecap_xdp(struct xdp_md *ctx) @ linecap_xdp.c:87\n\
                   ; if (bpf_xdp_adjust_meta(ctx, -(int)META_SIZE) == 0) { @ linecap_xdp.c:110\n\
                   14: (85) call bpf_xdp_adjust_meta#54\n\
                   program of this type cannot use helper bpf_xdp_adjust_meta#54\n\
                   verification time 66 usec\n";
        assert_eq!(
            refusal_gist(err),
            "loading the XDP program into the kernel: the BPF_PROG_LOAD syscall returned Invalid \
             argument (os error 22): program of this type cannot use helper bpf_xdp_adjust_meta#54"
        );
        assert_eq!(
            refusal_gist("memlock limit\nmore"),
            "memlock limit",
            "no verifier line: the first line"
        );
    }
}

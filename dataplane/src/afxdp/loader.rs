//! Loading and attaching linecap's XDP program (`ebpf/linecap_xdp.c`,
//! compiled by `dataplane/build.rs` with clang and embedded here) with aya.
//!
//! aya attaches through a `bpf_link`: the kernel detaches the program when
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

/// The program attached to one interface, with its maps.
pub struct XdpAttachment {
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
}

impl XdpAttachment {
    /// Load the program and attach it to `ifname` (in the calling thread's
    /// network namespace). With `threaded_napi`, switch the interface to
    /// threaded NAPI after attaching (writable only then on veth) and
    /// restore the old setting on drop.
    pub fn attach(ifname: &str, mode: AttachMode, threaded_napi: bool) -> anyhow::Result<Self> {
        use anyhow::Context;
        let mut ebpf =
            Ebpf::load(OBJECT).context("loading the XDP program (BPF verifier, memlock limit?)")?;
        let prog: &mut Xdp = ebpf
            .program_mut(PROGRAM)
            .context("XDP program missing from the object")?
            .try_into()
            .context("program is not XDP")?;
        prog.load()
            .context("loading the XDP program into the kernel")?;
        let mut native_refused = None;
        let native = match mode {
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
        let Ok(arr) = PerCpuArray::<&MapData, [u64; 3]>::try_from(map) else {
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
                }),
            Err(_) => XdpQueueStats::default(),
        }
    }
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

//! `linecap check-host --profile P`: does this host hold what the profile
//! needs? One line per check, OK / FAIL / SKIP, with what to fix.
//!
//! Checks are data ([`Check`]) computed by [`run_checks`] from a [`Host`]:
//! every `/sys` and `/proc` file is read under `Host::root`, and `ethtool`
//! output comes from `Host::ethtool`, so tests build a fake tree in a temporary
//! directory. Only the output-directory checks (free space, write test) and the
//! AF_XDP socket probe touch the real machine, the latter only when the root is `/`.
//!
//! Exit codes: 0 every check holds (or is skipped, with the reason), 1 some
//! check failed, 2 the profile is bad (the error names the key).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub use crate::cli::CheckHostArgs;
use crate::config::profile::{Backend, HugepageSize, Profile};
use crate::values::{parse_list, parse_rss_key};

/// Outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Holds.
    Ok,
    /// Does not hold: see `fix`.
    Fail,
    /// Not applicable to this profile, or cannot be checked here (the detail says why).
    Skip,
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What is checked (`hugepages`, `nic`, `irq-affinity`…).
    pub name: String,
    /// Outcome.
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// What to do when it failed (empty otherwise).
    pub fix: String,
}

impl Check {
    fn ok(name: &str, detail: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            status: Status::Ok,
            detail: detail.into(),
            fix: String::new(),
        }
    }
    fn skip(name: &str, detail: impl Into<String>) -> Check {
        Check {
            status: Status::Skip,
            ..Check::ok(name, detail)
        }
    }
    fn fail(name: &str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            status: Status::Fail,
            detail: detail.into(),
            fix: fix.into(),
        }
    }
    fn holds(name: &str, ok: bool, detail: String, fix: impl Into<String>) -> Check {
        if ok {
            Check::ok(name, detail)
        } else {
            Check::fail(name, detail, fix)
        }
    }
}

type EthtoolFn = Box<dyn Fn(&[&str]) -> Option<String>>;

/// The host as the checks see it.
pub struct Host {
    /// Where `/sys`, `/proc` and `/etc` are (`/` on a real host).
    pub root: PathBuf,
    /// `ethtool ARGS` output, `None` when it cannot be run.
    pub ethtool: EthtoolFn,
    /// Run the write test of each output directory.
    pub write_test: bool,
}

impl Host {
    /// This machine: files under `root`; ethtool run for real when `root` is `/`,
    /// else read from `root/ethtool/ARG_ARG` (like `ethtool/-x_ens1f0`).
    pub fn new(root: &Path, write_test: bool) -> Host {
        let ethtool: EthtoolFn = if root == Path::new("/") {
            Box::new(|args: &[&str]| {
                let out = std::process::Command::new("ethtool")
                    .args(args)
                    .output()
                    .ok()?;
                out.status
                    .success()
                    .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
            })
        } else {
            let dir = root.join("ethtool");
            Box::new(move |args: &[&str]| std::fs::read_to_string(dir.join(args.join("_"))).ok())
        };
        Host {
            root: root.to_path_buf(),
            ethtool,
            write_test,
        }
    }

    fn is_real(&self) -> bool {
        self.root == Path::new("/")
    }

    fn path(&self, p: &str) -> PathBuf {
        self.root.join(p.trim_start_matches('/'))
    }

    fn read(&self, p: &str) -> Option<String> {
        std::fs::read_to_string(self.path(p))
            .ok()
            .map(|s| s.trim().to_string())
    }

    fn read_list(&self, p: &str) -> Option<Vec<u32>> {
        let s = self.read(p)?;
        if s.is_empty() {
            return Some(Vec::new());
        }
        parse_list(&s).ok()
    }
}

/// Run `linecap check-host`.
pub fn run(a: CheckHostArgs) -> anyhow::Result<i32> {
    let profile = Profile::load(&a.profile)?;
    let host = Host::new(&a.root, !a.no_write_test);
    println!(
        "check-host: profile {} ({}): {}",
        a.profile.display(),
        profile.host.name,
        profile.host.description
    );
    let checks = run_checks(&profile, &host);
    print!("{}", render(&checks));
    let failed = checks.iter().filter(|c| c.status == Status::Fail).count();
    println!(
        "check-host: {} checks, {} failed{}",
        checks.len(),
        failed,
        if failed == 0 {
            ": this host holds the profile"
        } else {
            ""
        }
    );
    Ok(if failed == 0 { 0 } else { 1 })
}

/// The report, one line per check (and a `fix:` line under each failure).
pub fn render(checks: &[Check]) -> String {
    let mut s = String::new();
    for c in checks {
        let tag = match c.status {
            Status::Ok => "OK  ",
            Status::Fail => "FAIL",
            Status::Skip => "SKIP",
        };
        s.push_str(&format!("{tag}  {:<16} {}\n", c.name, c.detail));
        if c.status == Status::Fail && !c.fix.is_empty() {
            s.push_str(&format!("      {:<16} fix: {}\n", "", c.fix));
        }
    }
    s
}

fn list(v: &[u32]) -> String {
    if v.is_empty() {
        return "none".into();
    }
    let mut out = Vec::new();
    let mut i = 0;
    while i < v.len() {
        let mut j = i;
        while j + 1 < v.len() && v[j + 1] == v[j] + 1 {
            j += 1;
        }
        out.push(if i == j {
            v[i].to_string()
        } else {
            format!("{}-{}", v[i], v[j])
        });
        i = j + 1;
    }
    out.join(",")
}

fn mib(b: u64) -> String {
    if b >= 10 << 30 {
        format!("{} GiB", b >> 30)
    } else {
        format!("{} MiB", b.div_ceil(1 << 20))
    }
}

/// Every check, in a fixed order.
pub fn run_checks(p: &Profile, h: &Host) -> Vec<Check> {
    let mut v = vec![kernel(p, h), xdp_sockets(p, h)];
    v.extend(hugepages(p, h));
    v.push(cores_present(p, h));
    v.push(cores_isolated(p, h));
    v.push(nic_present(p, h));
    v.push(numa(p, h));
    v.push(queues(p, h));
    v.push(rss_key(p, h));
    v.push(irq_affinity(p, h));
    v.push(memlock(p, h));
    v.push(user(p, h));
    for i in 0..p.writer.dirs.len() {
        v.extend(disk(p, h, i));
    }
    v
}

fn kernel_version(s: &str) -> Option<(u32, u32)> {
    let mut it = s.split(|c: char| !c.is_ascii_digit());
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

fn kernel(p: &Profile, h: &Host) -> Check {
    const NAME: &str = "kernel";
    let Some(rel) = h.read("proc/sys/kernel/osrelease") else {
        return Check::fail(NAME, "no /proc/sys/kernel/osrelease", "mount /proc");
    };
    if p.nic.backend != Backend::Afxdp {
        return Check::ok(NAME, format!("{rel} (backend needs no XDP)"));
    }
    let btf = h.path("sys/kernel/btf/vmlinux").exists();
    let v = kernel_version(&rel).unwrap_or((0, 0));
    Check::holds(
        NAME,
        v >= (5, 10),
        format!(
            "{rel}: AF_XDP + XDP links need 5.10 or newer; BTF {}",
            if btf { "present" } else { "absent" }
        ),
        "boot a 5.10+ kernel (Debian 12's 6.1 is fine)",
    )
}

fn xdp_sockets(p: &Profile, h: &Host) -> Check {
    const NAME: &str = "af_xdp";
    if p.nic.backend != Backend::Afxdp {
        return Check::skip(NAME, "backend does not use AF_XDP");
    }
    if h.is_real() {
        return match linecap_dataplane::afxdp::sys::xdp_socket() {
            Ok(_) => Check::ok(NAME, "an AF_XDP socket opens"),
            Err(e)
                if e.raw_os_error() == Some(libc::EPERM)
                    || e.raw_os_error() == Some(libc::EACCES) =>
            {
                Check::skip(
                    NAME,
                    format!("cannot try without CAP_NET_RAW ({e}): run check-host as root"),
                )
            }
            Err(e) => Check::fail(
                NAME,
                format!("no AF_XDP socket: {e}"),
                "use a kernel built with CONFIG_XDP_SOCKETS=y and CONFIG_BPF_SYSCALL=y",
            ),
        };
    }
    let rel = h.read("proc/sys/kernel/osrelease").unwrap_or_default();
    match std::fs::read_to_string(h.path(&format!("boot/config-{rel}"))) {
        Ok(cfg) => Check::holds(
            NAME,
            cfg.lines().any(|l| l.trim() == "CONFIG_XDP_SOCKETS=y"),
            format!("CONFIG_XDP_SOCKETS in /boot/config-{rel}"),
            "use a kernel built with CONFIG_XDP_SOCKETS=y",
        ),
        Err(_) => Check::skip(NAME, "not tried (not the real root) and no /boot/config"),
    }
}

fn hugepages(p: &Profile, h: &Host) -> Vec<Check> {
    const NAME: &str = "hugepages";
    let m = &p.memory;
    if m.hugepages == 0 {
        return vec![Check::ok(
            NAME,
            "none required (rings take hugepages when reserved, normal pages otherwise)",
        )];
    }
    let size = match m.hugepage_size {
        HugepageSize::M2 => "2M",
        HugepageSize::G1 => "1G",
    };
    let dir = format!("sys/kernel/mm/hugepages/{}", m.hugepage_size.sysfs_name());
    let have: u64 = h
        .read(&format!("{dir}/nr_hugepages"))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let free: u64 = h
        .read(&format!("{dir}/free_hugepages"))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let fix = match m.hugepage_size {
        HugepageSize::M2 => format!(
            "sysctl -w vm.nr_hugepages={n} (keep it in /etc/sysctl.d/linecap.conf), or hugepages={n} on the kernel command line",
            n = m.hugepages
        ),
        HugepageSize::G1 => format!(
            "1 GiB pages are reserved at boot: add 'default_hugepagesz=1G hugepagesz=1G hugepages={}' to GRUB_CMDLINE_LINUX, update-grub, reboot",
            m.hugepages
        ),
    };
    let mut v = vec![Check::holds(
        NAME,
        have >= m.hugepages && free >= m.hugepages,
        format!(
            "{} × {size} needed; {have} reserved, {free} free",
            m.hugepages
        ),
        fix,
    )];
    // The rings map MAP_HUGETLB pages of the default size.
    let default_kb = h.read("proc/meminfo").and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Hugepagesize:"))
            .and_then(|r| r.split_whitespace().next()?.parse::<u64>().ok())
    });
    let want_kb = m.hugepage_size.bytes() >> 10;
    v.push(Check::holds(
        "hugepage-size",
        default_kb == Some(want_kb),
        format!(
            "default hugepage size {} kB, profile {size} (rings take the default size)",
            default_kb.map_or("unknown".into(), |k| k.to_string())
        ),
        format!("add 'default_hugepagesz={size}' to the kernel command line and reboot"),
    ));
    v
}

fn cores_present(p: &Profile, h: &Host) -> Check {
    const NAME: &str = "cores";
    let want: Vec<u32> = p
        .cores
        .workers
        .0
        .iter()
        .chain(&p.cores.housekeeping.0)
        .copied()
        .collect();
    if want.is_empty() {
        return Check::ok(NAME, "profile pins no cores (workers float)");
    }
    let Some(online) = h.read_list("sys/devices/system/cpu/online") else {
        return Check::fail(NAME, "no /sys/devices/system/cpu/online", "mount /sys");
    };
    let mut missing: Vec<u32> = want
        .iter()
        .copied()
        .filter(|c| !online.contains(c))
        .collect();
    missing.sort();
    Check::holds(
        NAME,
        missing.is_empty(),
        format!(
            "workers {}, housekeeping {}; online here: {}{}",
            list(&p.cores.workers.0),
            list(&p.cores.housekeeping.0),
            list(&online),
            if missing.is_empty() {
                String::new()
            } else {
                format!("; missing {}", list(&missing))
            }
        ),
        "this host lacks those cores: run on the probe host, or change cores.workers",
    )
}

fn cores_isolated(p: &Profile, h: &Host) -> Check {
    const NAME: &str = "isolated-cores";
    if !p.cores.isolated {
        return Check::skip(NAME, "not required by the profile (cores.isolated = false)");
    }
    let iso = h
        .read_list("sys/devices/system/cpu/isolated")
        .unwrap_or_default();
    let missing: Vec<u32> = p
        .cores
        .workers
        .0
        .iter()
        .copied()
        .filter(|c| !iso.contains(c))
        .collect();
    let cmdline = h.read("proc/cmdline").unwrap_or_default();
    let has_isolcpus = cmdline
        .split_whitespace()
        .any(|w| w.starts_with("isolcpus="));
    let w = list(&p.cores.workers.0);
    Check::holds(
        NAME,
        missing.is_empty(),
        format!(
            "workers {w}; isolated: {}{}",
            list(&iso),
            if has_isolcpus {
                ""
            } else {
                " (no isolcpus= on the kernel command line)"
            }
        ),
        format!(
            "add 'isolcpus={w} nohz_full={w} rcu_nocbs={w}' to GRUB_CMDLINE_LINUX, update-grub, reboot"
        ),
    )
}

fn iface_dir(p: &Profile) -> Option<String> {
    p.nic
        .interface
        .as_ref()
        .map(|i| format!("sys/class/net/{i}"))
}

fn nic_present(p: &Profile, h: &Host) -> Check {
    const NAME: &str = "nic";
    match p.nic.backend {
        Backend::File => {
            let f = p.nic.file.as_deref().unwrap_or(Path::new(""));
            Check::holds(
                NAME,
                f.is_file(),
                format!("capture file {}", f.display()),
                "set nic.file to an existing capture file",
            )
        }
        Backend::Dpdk => {
            let pci = p.nic.pci.as_deref().unwrap_or("");
            let dev = format!("sys/bus/pci/devices/{pci}");
            let drv = std::fs::read_link(h.path(&format!("{dev}/driver")))
                .ok()
                .and_then(|l| l.file_name().map(|n| n.to_string_lossy().into_owned()));
            if !h.path(&dev).exists() {
                return Check::fail(
                    NAME,
                    format!("no PCI device {pci}"),
                    "check nic.pci against `lspci -D | grep Ethernet`",
                );
            }
            Check::holds(
                NAME,
                drv.as_deref() == Some("vfio-pci"),
                format!("PCI {pci}, driver {}", drv.as_deref().unwrap_or("none")),
                format!("dpdk-devbind.py --bind=vfio-pci {pci}"),
            )
        }
        Backend::Afxdp => {
            let i = p.nic.interface.as_deref().unwrap_or("");
            let dir = iface_dir(p).unwrap_or_default();
            if !h.path(&dir).exists() {
                return Check::fail(
                    NAME,
                    format!("no interface {i} on this host"),
                    format!(
                        "check the name with `ip -br link` and set nic.interface (profile {})",
                        p.host.name
                    ),
                );
            }
            let drv = std::fs::read_link(h.path(&format!("{dir}/device/driver")))
                .ok()
                .and_then(|l| l.file_name().map(|n| n.to_string_lossy().into_owned()));
            match (&p.nic.driver, drv) {
                (Some(want), Some(got)) if *want != got => Check::fail(
                    NAME,
                    format!("{i} present, driver {got}, profile expects {want}"),
                    "point nic.interface at the capture NIC, or correct nic.driver",
                ),
                (_, Some(got)) => Check::ok(NAME, format!("{i} present, driver {got}")),
                (_, None) => Check::ok(NAME, format!("{i} present (virtual: no device driver)")),
            }
        }
    }
}

fn nic_device_dir(p: &Profile) -> Option<String> {
    match p.nic.backend {
        Backend::Afxdp => iface_dir(p).map(|d| format!("{d}/device")),
        Backend::Dpdk => p
            .nic
            .pci
            .as_ref()
            .map(|x| format!("sys/bus/pci/devices/{x}")),
        Backend::File => None,
    }
}

fn numa(p: &Profile, h: &Host) -> Check {
    const NAME: &str = "numa";
    let Some(node) = p.nic.numa_node else {
        return Check::skip(NAME, "profile names no nic.numa_node");
    };
    let Some(dev) = nic_device_dir(p) else {
        return Check::skip(NAME, "no NIC device");
    };
    let got: Option<i64> = h
        .read(&format!("{dev}/numa_node"))
        .and_then(|s| s.parse().ok());
    let nodes = h.read_list("sys/devices/system/node/online");
    let got_ok = match got {
        Some(n) => n == node as i64 || (n == -1 && nodes.as_ref().is_some_and(|v| v.len() <= 1)),
        None => false,
    };
    if got.is_none() {
        return Check::skip(
            NAME,
            format!("NIC not present ({dev}/numa_node missing): see the nic line"),
        );
    }
    let cpus = h
        .read_list(&format!("sys/devices/system/node/node{node}/cpulist"))
        .unwrap_or_default();
    let off: Vec<u32> = p
        .cores
        .workers
        .0
        .iter()
        .copied()
        .filter(|c| !cpus.is_empty() && !cpus.contains(c))
        .collect();
    Check::holds(
        NAME,
        got_ok && off.is_empty(),
        format!(
            "NIC on node {}, profile node {node} (cpus {}){}",
            got.unwrap_or(-1),
            list(&cpus),
            if off.is_empty() {
                String::new()
            } else {
                format!("; workers {} are on another node", list(&off))
            }
        ),
        "set nic.numa_node to the NIC's node and take cores.workers from that node's cpulist",
    )
}

fn queues(p: &Profile, h: &Host) -> Check {
    const NAME: &str = "queues";
    if p.nic.backend != Backend::Afxdp {
        return Check::skip(NAME, "only checked for AF_XDP interfaces");
    }
    let i = p.nic.interface.as_deref().unwrap_or("");
    let dir = format!("{}/queues", iface_dir(p).unwrap_or_default());
    let Ok(rd) = std::fs::read_dir(h.path(&dir)) else {
        return Check::skip(
            NAME,
            format!("NIC not present (no {dir}): see the nic line"),
        );
    };
    let rx = rd
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
        .count() as u32;
    let want = p.nic.queues;
    Check::holds(
        NAME,
        rx >= want,
        format!("{i} has {rx} receive queues, profile captures {want}"),
        format!("ethtool -L {i} combined {want}"),
    )
}

/// The key printed by `ethtool -x` (lines after "RSS hash key:").
fn ethtool_key(out: &str) -> Option<Vec<u8>> {
    let mut lines = out.lines().skip_while(|l| !l.starts_with("RSS hash key"));
    lines.next()?;
    let hex: String = lines
        .take_while(|l| !l.trim().is_empty() && !l.contains("function"))
        .collect::<Vec<_>>()
        .join(":");
    parse_rss_key(&hex).ok()
}

fn rss_key(p: &Profile, h: &Host) -> Check {
    const NAME: &str = "rss-key";
    let Some(key) = &p.nic.rss_key else {
        return Check::skip(NAME, "profile sets no nic.rss_key");
    };
    let Some(i) = p.nic.interface.as_deref() else {
        return Check::skip(NAME, "no nic.interface");
    };
    if !h.path(&format!("sys/class/net/{i}")).exists() {
        return Check::skip(NAME, "NIC not present: see the nic line");
    }
    let want = parse_rss_key(key).unwrap_or_default();
    let set = format!(
        "ethtool -X {i} hkey {} equal {}",
        want.iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":"),
        p.nic.queues
    );
    let Some(out) = (h.ethtool)(&["-x", i]) else {
        return Check::fail(
            NAME,
            format!("`ethtool -x {i}` gave nothing (no ethtool, or no such interface)"),
            format!("apt-get install ethtool; then {set}"),
        );
    };
    match ethtool_key(&out) {
        Some(got) => Check::holds(
            NAME,
            got == want,
            format!(
                "{i} key {}…, profile {}…",
                got.iter()
                    .take(4)
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>(),
                want.iter()
                    .take(4)
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
            ),
            set,
        ),
        None => Check::fail(NAME, format!("no RSS key in `ethtool -x {i}`"), set),
    }
}

fn irq_affinity(p: &Profile, h: &Host) -> Check {
    const NAME: &str = "irq-affinity";
    let workers = &p.cores.workers.0;
    if workers.is_empty() {
        return Check::skip(NAME, "profile pins no worker cores");
    }
    let mut tags: Vec<String> = Vec::new();
    if let Some(i) = &p.nic.interface {
        tags.push(i.clone());
    }
    if let Some(pci) = &p.nic.pci {
        tags.push(pci.clone());
    }
    let interrupts = h.read("proc/interrupts").unwrap_or_default();
    let irqs: Vec<u32> = interrupts
        .lines()
        .filter(|l| {
            let name = l.split_whitespace().last().unwrap_or("");
            tags.iter().any(|t| name.contains(t.as_str()))
        })
        .filter_map(|l| l.split(':').next()?.trim().parse().ok())
        .collect();
    if irqs.is_empty() {
        return Check::skip(
            NAME,
            format!("no IRQs of {} in /proc/interrupts", tags.join("/")),
        );
    }
    let mut bad = Vec::new();
    for n in &irqs {
        let aff = h
            .read_list(&format!("proc/irq/{n}/smp_affinity_list"))
            .unwrap_or_default();
        if aff.iter().any(|c| workers.contains(c)) {
            bad.push(*n);
        }
    }
    let hk = if p.cores.housekeeping.0.is_empty() {
        "the other cores of the NIC's node".to_string()
    } else {
        list(&p.cores.housekeeping.0)
    };
    Check::holds(
        NAME,
        bad.is_empty(),
        format!(
            "{} NIC IRQs; {} land on worker cores {}",
            irqs.len(),
            bad.len(),
            list(workers)
        ),
        format!(
            "stop irqbalance (or IRQBALANCE_BANNED_CPULIST={}), then for each IRQ N of the NIC: echo {hk} > /proc/irq/N/smp_affinity_list",
            list(workers)
        ),
    )
}

fn memlock(p: &Profile, h: &Host) -> Check {
    const NAME: &str = "memlock";
    let need = p.locked_memory_bytes();
    let soft = h.read("proc/self/limits").and_then(|s| {
        s.lines()
            .find(|l| l.starts_with("Max locked memory"))
            .and_then(|l| l.split_whitespace().nth(3).map(str::to_string))
    });
    let limit: Option<u64> = match soft.as_deref() {
        Some("unlimited") => Some(u64::MAX),
        Some(v) => v.parse().ok(),
        None => None,
    };
    // CAP_IPC_LOCK (bit 14) lifts the limit; linecap keeps it after dropping privileges.
    let cap_ipc_lock = h
        .read("proc/self/status")
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << 14) != 0);
    let shown = match limit {
        Some(u64::MAX) => "unlimited".to_string(),
        Some(l) => mib(l),
        None => "unknown".into(),
    };
    Check::holds(
        NAME,
        limit.is_some_and(|l| l >= need) || cap_ipc_lock,
        format!(
            "needs {} locked (rings + UMEM); limit {shown}; CAP_IPC_LOCK {}",
            mib(need),
            if cap_ipc_lock {
                "held (the limit does not apply)"
            } else {
                "not held"
            }
        ),
        "LimitMEMLOCK=infinity in the systemd unit (docs/linecap.service), or `ulimit -l unlimited`",
    )
}

fn user(p: &Profile, h: &Host) -> Check {
    const NAME: &str = "user";
    let Some(u) = &p.host.user else {
        return Check::skip(NAME, "profile drops to no user (host.user unset)");
    };
    let passwd = h.read("etc/passwd").unwrap_or_default();
    let entry = passwd
        .lines()
        .find(|l| l.split(':').next() == Some(u.as_str()));
    match entry {
        Some(l) => Check::ok(
            NAME,
            format!("{u} exists (uid {})", l.split(':').nth(2).unwrap_or("?")),
        ),
        None => Check::fail(
            NAME,
            format!("no user {u}"),
            format!("useradd --system --no-create-home --shell /usr/sbin/nologin {u}"),
        ),
    }
}

fn disk(p: &Profile, h: &Host, i: usize) -> Vec<Check> {
    let dir = &p.writer.dirs[i];
    let name = dir.display().to_string();
    let short = "disk";
    let queues = p.queues_on_dir(i);
    // The directory itself, or its parent when the capture will create it.
    let target = if dir.is_dir() {
        dir.clone()
    } else if let Some(parent) = dir.parent().filter(|d| d.is_dir()) {
        parent.to_path_buf()
    } else {
        return vec![Check::fail(
            short,
            format!("{} does not exist (nor its parent)", dir.display()),
            format!(
                "mount the capture array and `mkdir -p {}`{}",
                dir.display(),
                p.host.user.as_ref().map_or(String::new(), |u| format!(
                    " && chown {u} {}",
                    dir.display()
                ))
            ),
        )];
    };
    let created = if &target == dir {
        ""
    } else {
        " (will be created)"
    };
    let need = match (
        p.writer.disk_budget,
        p.writer.rotate_bytes,
        p.writer.rotate_files,
    ) {
        (Some(b), _, _) => Some(b.0 / p.writer.dirs.len() as u64),
        (None, Some(b), Some(n)) => Some(b.0 * n as u64 * queues as u64),
        _ => None,
    };
    let free = nix::sys::statvfs::statvfs(&target)
        .map(|s| s.blocks_available() * s.fragment_size())
        .ok();
    let mut v = vec![match (free, need) {
        (None, _) => Check::fail(short, format!("{name}: statvfs failed"), "check the mount"),
        (Some(f), None) => Check::ok(
            short,
            format!("{name}{created}: {} free, no budget set", mib(f)),
        ),
        (Some(f), Some(n)) => Check::holds(
            short,
            f >= n,
            format!(
                "{name}{created}: {} free, {} needed ({queues} queues)",
                mib(f),
                mib(n)
            ),
            "free space, or lower writer.disk_budget / rotate_files",
        ),
    }];
    if h.write_test {
        let rate_needed = p.nic.line_rate_gbps * 1e9 / 8.0 * queues as f64 / p.nic.queues as f64;
        v.push(match write_test(&target, p.writer.write_test_bytes.0) {
            Ok(rate) => Check::holds(
                "disk-write",
                rate >= rate_needed,
                format!(
                    "{}: {:.0} MB/s sequential with fsync, {:.0} MB/s needed at line rate uncompressed",
                    target.display(),
                    rate / 1e6,
                    rate_needed / 1e6
                ),
                "spread queues over more disks (writer.dirs), use a faster array, or rely on LZ4 (check the ratio)",
            ),
            Err(e) => Check::fail(
                "disk-write",
                format!("{}: write test failed: {e}", target.display()),
                "make the directory writable",
            ),
        });
    }
    v
}

/// Write `bytes` in 1 MiB blocks with one fsync at the end; bytes per second.
fn write_test(dir: &Path, bytes: u64) -> std::io::Result<f64> {
    let path = dir.join(format!(".linecap-check-host-{}", std::process::id()));
    let block: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    let t = Instant::now();
    let res = (|| {
        let mut f = std::fs::File::create(&path)?;
        let mut left = bytes;
        while left > 0 {
            let n = left.min(block.len() as u64) as usize;
            f.write_all(&block[..n])?;
            left -= n as u64;
        }
        f.sync_all()
    })();
    let secs = t.elapsed().as_secs_f64().max(1e-6);
    let _ = std::fs::remove_file(&path);
    res.map(|()| bytes as f64 / secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(root: &Path, p: &str, s: &str) {
        let f = root.join(p);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, s).unwrap();
    }

    fn profile(out: &Path, extra_nic: &str, rest: &str) -> Profile {
        Profile::parse(&format!(
            r#"
[host]
name = "t"
user = "linecap"
[nic]
backend = "afxdp"
interface = "ens1f0"
driver = "i40e"
queues = 4
numa_node = 0
{extra_nic}
[cores]
workers = "2-5"
housekeeping = "0-1"
isolated = true
[memory]
hugepages = 4
hugepage_size = "1G"
[writer]
threads = 2
dirs = ["{}"]
write_test_bytes = "1M"
{rest}
"#,
            out.display()
        ))
        .unwrap()
    }

    /// A probe host that holds the profile.
    fn good_tree(root: &Path) {
        put(root, "proc/sys/kernel/osrelease", "6.1.0-18-amd64\n");
        put(root, "sys/kernel/btf/vmlinux", "");
        put(
            root,
            "boot/config-6.1.0-18-amd64",
            "CONFIG_BPF_SYSCALL=y\nCONFIG_XDP_SOCKETS=y\n",
        );
        put(
            root,
            "sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages",
            "4\n",
        );
        put(
            root,
            "sys/kernel/mm/hugepages/hugepages-1048576kB/free_hugepages",
            "4\n",
        );
        put(
            root,
            "proc/meminfo",
            "MemTotal: 1 kB\nHugepagesize:    1048576 kB\n",
        );
        put(root, "sys/devices/system/cpu/online", "0-7\n");
        put(root, "sys/devices/system/cpu/isolated", "2-5\n");
        put(
            root,
            "proc/cmdline",
            "BOOT_IMAGE=/vmlinuz isolcpus=2-5 nohz_full=2-5\n",
        );
        put(root, "sys/class/net/ens1f0/device/numa_node", "0\n");
        std::fs::create_dir_all(root.join("drivers/i40e")).unwrap();
        std::os::unix::fs::symlink(
            root.join("drivers/i40e"),
            root.join("sys/class/net/ens1f0/device/driver"),
        )
        .unwrap();
        for q in 0..8 {
            put(root, &format!("sys/class/net/ens1f0/queues/rx-{q}/x"), "");
        }
        put(root, "sys/devices/system/node/online", "0-1\n");
        put(root, "sys/devices/system/node/node0/cpulist", "0-7\n");
        put(
            root,
            "ethtool/-x_ens1f0",
            &format!(
                "RX flow hash indirection table for ens1f0 with 4 RX ring(s):\n    0:      0     1     2     3\nRSS hash key:\n{}\nRSS hash function:\n    toeplitz: on\n",
                ["6d", "5a"].repeat(20).join(":")
            ),
        );
        put(
            root,
            "proc/interrupts",
            "           CPU0       CPU1\n 120:   1   2   IR-PCI-MSI 1  i40e-ens1f0-TxRx-0\n 121:  1  2  IR-PCI-MSI 2  i40e-ens1f0-TxRx-1\n 9:  0 0 IO-APIC acpi\n",
        );
        put(root, "proc/irq/120/smp_affinity_list", "0\n");
        put(root, "proc/irq/121/smp_affinity_list", "1\n");
        put(
            root,
            "proc/self/limits",
            "Max locked memory         unlimited            unlimited            bytes\n",
        );
        put(root, "proc/self/status", "CapEff:\t0000000000000000\n");
        put(
            root,
            "etc/passwd",
            "root:x:0:0::/root:/bin/sh\nlinecap:x:998:998::/:/usr/sbin/nologin\n",
        );
    }

    const KEY: &str = "rss_key = \"6d5a6d5a6d5a6d5a6d5a6d5a6d5a6d5a6d5a6d5a6d5a6d5a6d5a6d5a6d5a6d5a6d5a6d5a6d5a6d5a\"";

    #[test]
    fn a_good_host_passes_every_check() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        good_tree(&root);
        let out = t.path().join("cap");
        let p = profile(&out, KEY, "");
        let checks = run_checks(&p, &Host::new(&root, true));
        let text = render(&checks);
        assert!(checks.iter().all(|c| c.status == Status::Ok), "{text}");
        assert!(text.contains("will be created"), "{text}");
    }

    #[test]
    fn each_broken_piece_is_one_failing_line_with_a_fix() {
        let t = tempfile::tempdir().unwrap();
        let out = t.path().join("cap");
        for (name, breakage, check) in [
            (
                "old kernel",
                ("proc/sys/kernel/osrelease", "4.19.0\n"),
                "kernel",
            ),
            (
                "no hugepages",
                (
                    "sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages",
                    "0\n",
                ),
                "hugepages",
            ),
            (
                "2M default",
                ("proc/meminfo", "Hugepagesize: 2048 kB\n"),
                "hugepage-size",
            ),
            (
                "few cores",
                ("sys/devices/system/cpu/online", "0-3\n"),
                "cores",
            ),
            (
                "not isolated",
                ("sys/devices/system/cpu/isolated", "\n"),
                "isolated-cores",
            ),
            (
                "wrong node",
                ("sys/class/net/ens1f0/device/numa_node", "1\n"),
                "numa",
            ),
            (
                "irq on worker",
                ("proc/irq/121/smp_affinity_list", "1-3\n"),
                "irq-affinity",
            ),
            (
                "memlock",
                ("proc/self/limits", "Max locked memory 65536 65536 bytes\n"),
                "memlock",
            ),
            (
                "no user",
                ("etc/passwd", "root:x:0:0::/root:/bin/sh\n"),
                "user",
            ),
            (
                "asymmetric key",
                (
                    "ethtool/-x_ens1f0",
                    "RSS hash key:\n00:01:02:03:04:05:06:07:08:09:0a:0b:0c:0d:0e:0f:10:11:12:13:14:15:16:17:18:19:1a:1b:1c:1d:1e:1f:20:21:22:23:24:25:26:27\n",
                ),
                "rss-key",
            ),
        ] {
            let root = t.path().join(name.replace(' ', "_"));
            good_tree(&root);
            put(&root, breakage.0, breakage.1);
            let p = profile(&out, KEY, "");
            let checks = run_checks(&p, &Host::new(&root, false));
            let failed: Vec<&Check> = checks.iter().filter(|c| c.status == Status::Fail).collect();
            assert_eq!(failed.len(), 1, "{name}: {}", render(&checks));
            assert_eq!(failed[0].name, check, "{name}");
            assert!(!failed[0].fix.is_empty(), "{name}");
        }
    }

    #[test]
    fn a_missing_nic_fails_its_checks() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        good_tree(&root);
        std::fs::remove_dir_all(root.join("sys/class/net/ens1f0")).unwrap();
        let p = profile(&t.path().join("cap"), "", "");
        let checks = run_checks(&p, &Host::new(&root, false));
        let failed: Vec<&str> = checks
            .iter()
            .filter(|c| c.status == Status::Fail)
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(failed, ["nic"], "{}", render(&checks));
    }

    #[test]
    fn ethtool_key_parsing() {
        let out = "RSS hash key:\n6d:5a:6d:5a:6d:5a:6d:5a:6d:5a:6d:5a:6d:5a:6d:5a:6d:5a:6d:5a:\n6d:5a:6d:5a:6d:5a:6d:5a:6d:5a:6d:5a:6d:5a:6d:5a:6d:5a:6d:5a\nRSS hash function:\n";
        assert_eq!(ethtool_key(out).unwrap(), [0x6d, 0x5a].repeat(20));
        assert_eq!(ethtool_key("nothing"), None);
        assert_eq!(list(&[0, 1, 2, 5, 7, 8]), "0-2,5,7-8");
        assert_eq!(kernel_version("6.18.44-fc"), Some((6, 18)));
    }
}

//! `dpdk:DEVICE` sources: parsing, flags, and (with the `dpdk` feature) the
//! EAL start, the ports and their queues.
//!
//! DEVICE is a PCI address (`0000:3b:00.0`, bound to vfio-pci) or a vdev
//! string (`net_pcap0,rx_pcap=trace.pcap`, `net_ring0`,
//! `net_af_packet0,iface=veth1`, `net_null0`). Each `dpdk:` source is one
//! port; its queues are captured by one worker each. The EAL is started once
//! per process with every DPDK source's device in its arguments.

use std::path::PathBuf;

use clap::Args;

/// DPDK flags of `linecap capture` (the profile's `[dpdk]` and `[nic]` give the defaults).
#[derive(Args, Debug, Clone, Default)]
pub struct DpdkArgs {
    /// More EAL arguments for dpdk: sources, as one string (e.g. "-l 0 --socket-mem 1024");
    /// linecap adds --in-memory, --file-prefix, --no-pci (vdevs only), --vdev / -a for the
    /// devices, and --no-huge -m 512 when no hugepages are free, unless given here.
    #[arg(long, value_name = "ARGS", allow_hyphen_values = true)]
    pub eal_args: Option<String>,
    /// Receive queues per dpdk: port (one worker each; RSS spreads flows over them).
    #[arg(long, value_name = "N")]
    pub dpdk_queues: Option<u16>,
    /// Receive descriptors per DPDK queue (adjusted to the device's limits).
    #[arg(long, value_name = "N")]
    pub dpdk_rx_desc: Option<u16>,
    /// Mbufs per DPDK queue's mempool.
    #[arg(long, value_name = "N")]
    pub dpdk_mbufs: Option<u32>,
    /// RSS key, hex (colons allowed); must be symmetric (repeat every 2 bytes). Default 6d5a….
    #[arg(long, value_name = "HEX")]
    pub rss_key: Option<String>,
    /// Self-test (net_ring vdevs only): transmit the frames of this capture file into the port's
    /// own queues (frame i to queue i mod N), so the capture reads them back. Tests only.
    #[arg(long, value_name = "FILE", hide = true)]
    pub dpdk_selftest_inject: Option<PathBuf>,
}

/// One `dpdk:` source, with its settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DpdkSpec {
    /// The device as given (PCI address or vdev string).
    pub device: String,
    /// Receive queues.
    pub queues: u16,
    /// Receive descriptors per queue.
    pub rx_desc: u16,
    /// Mbufs per queue.
    pub mbufs: u32,
    /// RSS key bytes.
    pub rss_key: Vec<u8>,
    /// Extra EAL arguments.
    pub eal_args: Vec<String>,
    /// Self-test injection file (net_ring).
    pub inject: Option<PathBuf>,
}

/// Whether `s` is a PCI address (`0000:3b:00.0` or `3b:00.0`).
pub fn is_pci(s: &str) -> bool {
    let b = s.as_bytes();
    let short = |b: &[u8]| {
        b.len() == 7
            && b[2] == b':'
            && b[5] == b'.'
            && b.iter()
                .enumerate()
                .all(|(i, c)| i == 2 || i == 5 || c.is_ascii_hexdigit())
    };
    short(b)
        || (b.len() == 12
            && b[4] == b':'
            && b[..4].iter().all(u8::is_ascii_hexdigit)
            && short(&b[5..]))
}

impl DpdkSpec {
    /// Parse the part after `dpdk:`.
    pub fn parse(device: &str) -> anyhow::Result<DpdkSpec> {
        let device = device.trim();
        anyhow::ensure!(
            !device.is_empty(),
            "dpdk: needs a device: a PCI address (0000:3b:00.0) or a vdev (net_pcap0,rx_pcap=FILE)"
        );
        anyhow::ensure!(
            !device.chars().any(|c| c.is_whitespace() || c == '\0'),
            "dpdk:{device}: a device string has no spaces"
        );
        if !is_pci(device) {
            let name = device.split(',').next().unwrap_or("");
            let ok = name.starts_with("net_")
                && name.len() > 4
                && name.len() < 32
                && name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_')
                && name.as_bytes().last().is_some_and(u8::is_ascii_digit);
            anyhow::ensure!(
                ok,
                "dpdk:{device}: not a PCI address (0000:3b:00.0) nor a vdev string \
                 (net_<driver><N>[,key=value...], like net_pcap0,rx_pcap=FILE)"
            );
        }
        Ok(DpdkSpec {
            device: device.into(),
            queues: 1,
            rx_desc: 4096,
            mbufs: 16 * 1024,
            rss_key: symmetric_key(),
            eal_args: Vec::new(),
            inject: None,
        })
    }

    /// The ethdev name: the PCI address, or the vdev name before the first comma.
    pub fn port_name(&self) -> &str {
        self.device.split(',').next().unwrap_or(&self.device)
    }

    #[cfg_attr(not(feature = "dpdk"), allow(dead_code))] // used by the dpdk build
    /// The `iface=` a vdev is bound to (net_af_packet, net_af_xdp).
    pub fn iface(&self) -> Option<&str> {
        self.device
            .split(',')
            .skip(1)
            .find_map(|kv| kv.strip_prefix("iface="))
    }

    /// Apply the flags.
    pub fn apply(&mut self, a: &DpdkArgs) -> anyhow::Result<()> {
        if let Some(q) = a.dpdk_queues {
            anyhow::ensure!(
                (1..=256).contains(&q),
                "--dpdk-queues must be 1..=256, got {q}"
            );
            self.queues = q;
        }
        if let Some(d) = a.dpdk_rx_desc {
            anyhow::ensure!(d >= 64, "--dpdk-rx-desc must be at least 64, got {d}");
            self.rx_desc = d;
        }
        if let Some(m) = a.dpdk_mbufs {
            anyhow::ensure!(
                (1024..=(1 << 24)).contains(&m),
                "--dpdk-mbufs must be 1024..=16777216, got {m}"
            );
            self.mbufs = m;
        }
        if let Some(k) = &a.rss_key {
            let key =
                crate::profile::parse_rss_key(k).map_err(|e| anyhow::anyhow!("--rss-key: {e}"))?;
            anyhow::ensure!(
                crate::profile::rss_key_is_symmetric(&key),
                "--rss-key is not symmetric (it must repeat every 2 bytes, like 6d:5a:6d:5a:…): \
                 the two directions of a flow would land on different queues"
            );
            self.rss_key = key;
        }
        if let Some(e) = &a.eal_args {
            self.eal_args = e.split_whitespace().map(String::from).collect();
        }
        // Only a net_ring vdev loops its transmit rings back to its receive
        // rings; elsewhere injected frames would leave the port.
        self.inject = if self.port_name().starts_with("net_ring") {
            a.dpdk_selftest_inject.clone()
        } else {
            None
        };
        Ok(())
    }
}

/// The symmetric Toeplitz key (0x6d5a repeated, 40 bytes).
pub fn symmetric_key() -> Vec<u8> {
    (0..40)
        .map(|i| if i % 2 == 0 { 0x6d } else { 0x5a })
        .collect()
}

#[cfg_attr(not(feature = "dpdk"), allow(dead_code))] // used by the dpdk build
/// EAL arguments for these DPDK sources: the user's, then linecap's defaults
/// for what the user did not give, then the devices.
pub fn eal_args(
    specs: &[&DpdkSpec],
    hugepages_free: u64,
    no_huge_policy: bool,
) -> anyhow::Result<Vec<String>> {
    // --eal-args / `[dpdk] eal_args` is one setting of the capture, copied
    // into every dpdk: source: take it once.
    let mut args: Vec<String> = specs
        .first()
        .map(|s| s.eal_args.clone())
        .unwrap_or_default();
    let has = |args: &[String], f: &[&str]| {
        args.iter()
            .any(|a| f.iter().any(|f| a == f || a.starts_with(&format!("{f}="))))
    };
    let mut add = Vec::new();
    if !has(&args, &["-l", "-c", "--lcores"]) {
        // The main lcore only: workers are registered as lcores on their own
        // threads (see docs/architecture.md).
        add.extend(["-l".to_string(), first_allowed_cpu().to_string()]);
    }
    let no_huge = has(&args, &["--no-huge"]) || no_huge_policy || hugepages_free == 0;
    // --no-huge means legacy memory, which EAL refuses with --in-memory;
    // --no-shconf then keeps EAL from writing its shared config.
    if !no_huge && !has(&args, &["--in-memory"]) {
        add.push("--in-memory".into());
    }
    if !has(&args, &["--file-prefix"]) {
        add.extend([
            "--file-prefix".to_string(),
            format!("linecap-{}", std::process::id()),
        ]);
    }
    if !has(&args, &["--no-telemetry", "--telemetry"]) {
        add.push("--no-telemetry".into());
    }
    if !has(&args, &["--log-level"]) {
        add.extend(["--log-level".to_string(), "notice".to_string()]);
    }
    let any_pci = specs.iter().any(|s| is_pci(&s.device));
    if !any_pci && !has(&args, &["--no-pci", "-a", "--allow", "-b", "--block"]) {
        add.push("--no-pci".into());
    }
    if no_huge {
        if !has(&args, &["--no-huge"]) {
            add.push("--no-huge".into());
        }
        if !has(&args, &["--no-shconf"]) {
            add.push("--no-shconf".into());
        }
        if !has(&args, &["-m", "--socket-mem"]) {
            add.extend(["-m".to_string(), "512".to_string()]);
        }
    }
    args.extend(add);
    for s in specs {
        if is_pci(&s.device) {
            args.extend(["-a".to_string(), s.device.clone()]);
        } else {
            args.extend(["--vdev".to_string(), s.device.clone()]);
        }
    }
    Ok(args)
}

#[cfg_attr(not(feature = "dpdk"), allow(dead_code))] // used by the dpdk build
/// The first CPU this process may run on.
fn first_allowed_cpu() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .and_then(|l| crate::cli::parse_list(l.trim()).ok())
                .and_then(|v| v.first().copied())
        })
        .unwrap_or(0) as usize
}

#[cfg_attr(not(feature = "dpdk"), allow(dead_code))] // used by the dpdk build
/// Free hugepages of the default size (from /proc/meminfo).
pub fn hugepages_free() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("HugePages_Free:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

#[cfg(feature = "dpdk")]
pub use imp::{DpdkQueue, open, shutdown};

#[cfg(feature = "dpdk")]
mod imp {
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    use anyhow::Context;
    use linecap_dataplane::dpdk::{Eal, Port, PortConfig, eal};
    use linecap_dataplane::ring::HugePages;

    use super::{DpdkSpec, eal_args, hugepages_free};
    use crate::pipeline::{CaptureConfig, SourceSpec};

    pub use linecap_dataplane::dpdk::DpdkQueue;

    static INJECTORS: Mutex<Vec<std::thread::JoinHandle<()>>> = Mutex::new(Vec::new());

    /// Start the EAL (first call; with every dpdk: source of `cfg`), open and
    /// start the port of `spec`, and return its queues with their labels.
    pub fn open(cfg: &CaptureConfig, spec: &DpdkSpec) -> anyhow::Result<Vec<(DpdkQueue, String)>> {
        let eal = if Eal::is_up() {
            Eal::init(&[]).map_err(anyhow::Error::msg)?
        } else {
            let specs: Vec<&DpdkSpec> = cfg
                .sources
                .iter()
                .filter_map(|s| match s {
                    SourceSpec::Dpdk(d) => Some(d),
                    _ => None,
                })
                .collect();
            let free = hugepages_free();
            if cfg.hugepages == HugePages::Require && free == 0 {
                anyhow::bail!(
                    "--hugepages require: no free hugepages for DPDK (reserve some: sysctl vm.nr_hugepages=512)"
                );
            }
            let args = eal_args(&specs, free, cfg.hugepages == HugePages::Never)?;
            eprintln!("linecap: DPDK EAL arguments: {}", args.join(" "));
            Eal::init(&args).map_err(|e| anyhow::anyhow!("DPDK: {e}"))?
        };
        let pc = PortConfig {
            queues: spec.queues,
            rx_desc: spec.rx_desc,
            mbufs: spec.mbufs,
            rss_key: spec.rss_key.clone(),
            tx_queues: if spec.inject.is_some() {
                spec.queues
            } else {
                0
            },
            iface: spec.iface().map(String::from),
            ..PortConfig::new(spec.port_name())
        };
        let port = Port::open(eal, &pc).map_err(anyhow::Error::msg)?;
        let i = port.info();
        eprintln!(
            "linecap: DPDK port {} ({}, port {}): {} queue(s), {} descriptors, {} mbufs each, {}, timestamps {}",
            spec.port_name(),
            i.driver,
            i.port_id,
            spec.queues,
            i.rx_desc,
            i.mbufs,
            if i.rss_hf != 0 {
                format!(
                    "RSS hf {:#x} with a {}-byte symmetric key",
                    i.rss_hf, i.rss_key_len
                )
            } else if spec.queues > 1 {
                "no RSS (the device feeds each queue itself)".to_string()
            } else {
                "no RSS (one queue)".to_string()
            },
            if i.pmd_timestamps_us {
                "from the PMD (µs)"
            } else {
                "from the TSC, one per burst"
            }
        );
        if let Some(path) = &spec.inject {
            let mut reader = linecap_reader::read::CaptureReader::open(path)
                .with_context(|| format!("--dpdk-selftest-inject {}", path.display()))?;
            let mut frames = Vec::new();
            let mut pkt = linecap_reader::read::Packet::default();
            while reader.next(&mut pkt)? {
                frames.push(pkt.data.clone());
            }
            let port = port.clone();
            let nq = spec.queues;
            let h = std::thread::Builder::new()
                .name("lc-dpdk-inject".into())
                .spawn(move || {
                    let deadline = Instant::now() + Duration::from_secs(60);
                    let mut sent = 0;
                    for q in 0..nq {
                        let mine = frames
                            .iter()
                            .enumerate()
                            .filter(|(k, _)| *k % nq as usize == q as usize)
                            .map(|(_, f)| f.as_slice());
                        match port.inject(q, mine, deadline) {
                            Ok(n) => sent += n,
                            Err(e) => eprintln!("linecap: self-test injection: {e}"),
                        }
                    }
                    eprintln!(
                        "linecap: self-test: injected {sent} of {} frames",
                        frames.len()
                    );
                })
                .context("spawning the injection thread")?;
            INJECTORS.lock().unwrap_or_else(|e| e.into_inner()).push(h);
        }
        let name = spec.port_name().to_string();
        Ok(port
            .queues()
            .into_iter()
            .map(|q| {
                let label = format!("dpdk:{name}:{}", q.queue());
                (q, label)
            })
            .collect())
    }

    /// End of the process's DPDK use: wait for self-test injectors, then
    /// `rte_eal_cleanup` (every port was closed by its last queue).
    pub fn shutdown() {
        for h in INJECTORS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            let _ = h.join();
        }
        match eal::cleanup() {
            Ok(true) => eprintln!("linecap: DPDK ports stopped, EAL cleaned up"),
            Ok(false) => {}
            Err(e) => eprintln!("linecap: warning: {e}"),
        }
    }
}

/// Without the `dpdk` feature: nothing to clean up.
#[cfg(not(feature = "dpdk"))]
pub fn shutdown() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices() {
        for ok in [
            "0000:3b:00.0",
            "3b:00.0",
            "net_pcap0,rx_pcap=/x.pcap",
            "net_ring0",
            "net_af_packet0,iface=veth1,framecnt=4096",
        ] {
            DpdkSpec::parse(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "",
            "eth0",
            "net_",
            "net_pcap",
            "0000:3b:00",
            "net_pcap0 ,x",
            "pcap0",
        ] {
            assert!(DpdkSpec::parse(bad).is_err(), "{bad:?}");
        }
        let s = DpdkSpec::parse("net_af_packet0,iface=veth1,framecnt=4096").unwrap();
        assert_eq!(s.port_name(), "net_af_packet0");
        assert_eq!(s.iface(), Some("veth1"));
    }

    #[test]
    fn eal_arguments() {
        let mut a = DpdkSpec::parse("net_null0").unwrap();
        let args = eal_args(&[&a], 0, false).unwrap();
        let j = args.join(" ");
        assert!(j.contains("--no-huge --no-shconf -m 512"), "{j}");
        assert!(j.contains("--no-pci") && !j.contains("--in-memory"), "{j}");
        assert!(j.ends_with("--vdev net_null0"), "{j}");
        let j = eal_args(&[&a], 10, false).unwrap().join(" ");
        assert!(!j.contains("--no-huge") && j.contains("--in-memory"), "{j}");
        a.eal_args = vec!["-l".into(), "1".into(), "-m".into(), "256".into()];
        let p = DpdkSpec::parse("0000:3b:00.0").unwrap();
        let j = eal_args(&[&a, &p], 0, true).unwrap().join(" ");
        assert!(j.starts_with("-l 1 -m 256"), "{j}");
        assert!(!j.contains("--no-pci") && !j.contains("-m 512"), "{j}");
        assert!(j.contains("-a 0000:3b:00.0"), "{j}");
        // Two sources share one set of EAL arguments, each device once.
        let mut c = DpdkSpec::parse("net_ring0").unwrap();
        c.eal_args = a.eal_args.clone();
        let j = eal_args(&[&a, &c], 0, false).unwrap().join(" ");
        assert!(j.starts_with("-l 1 -m 256 --file-prefix"), "{j}");
        assert!(j.ends_with("--vdev net_null0 --vdev net_ring0"), "{j}");
        let mut b = DpdkSpec::parse("net_null0").unwrap();
        let bad = DpdkArgs {
            rss_key: Some((0..40).map(|i| format!("{i:02x}")).collect()),
            ..Default::default()
        };
        assert!(b.apply(&bad).unwrap_err().to_string().contains("--rss-key"));
        let bad = DpdkArgs {
            dpdk_queues: Some(0),
            ..Default::default()
        };
        assert!(
            b.apply(&bad)
                .unwrap_err()
                .to_string()
                .contains("--dpdk-queues")
        );
    }
}

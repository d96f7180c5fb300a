//! `dpdk:DEVICE` sources: parsing, flags, and (with the `dpdk` feature) the
//! EAL start, the ports and their queues.
//!
//! DEVICE is a PCI address (`0000:3b:00.0`, bound to vfio-pci) or a vdev
//! string (`net_pcap0,rx_pcap=trace.pcap`, `net_ring0`,
//! `net_af_packet0,iface=veth1`, `net_null0`). Each `dpdk:` source is one
//! port; its queues are captured by one worker each. The EAL is started once
//! per process with every DPDK source's device in its arguments.

use crate::source::{DpdkSpec, is_pci};

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
                .and_then(|l| crate::values::parse_list(l.trim()).ok())
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
pub use imp::{DpdkQueue, open, shutdown, stop_note};

#[cfg(feature = "dpdk")]
mod imp {
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    use anyhow::Context;
    use linecap_dataplane::dpdk::{Eal, Port, PortConfig, eal};
    use linecap_dataplane::ring::HugePages;

    use super::{DpdkSpec, eal_args, hugepages_free};

    pub use linecap_dataplane::dpdk::DpdkQueue;

    static INJECTORS: Mutex<Vec<std::thread::JoinHandle<()>>> = Mutex::new(Vec::new());

    /// Start the EAL (first call; with every dpdk: source of the capture,
    /// `specs`), open and start the port of `spec`, and return its queues
    /// with their labels.
    pub fn open(
        specs: &[&DpdkSpec],
        hugepages: HugePages,
        spec: &DpdkSpec,
    ) -> anyhow::Result<Vec<(DpdkQueue, String)>> {
        let eal = if Eal::is_up() {
            Eal::init(&[]).map_err(anyhow::Error::msg)?
        } else {
            let free = hugepages_free();
            if hugepages == HugePages::Require && free == 0 {
                anyhow::bail!(
                    "--hugepages require: no free hugepages for DPDK (reserve some: sysctl vm.nr_hugepages=512)"
                );
            }
            let args = eal_args(specs, free, hugepages == HugePages::Never)?;
            tracing::info!("DPDK EAL arguments: {}", args.join(" "));
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
            tsc_stamps: match spec.stamps {
                crate::source::DpdkStamps::Frame => linecap_dataplane::dpdk::TscStamps::Frame,
                crate::source::DpdkStamps::Burst => linecap_dataplane::dpdk::TscStamps::Burst,
            },
            ..PortConfig::new(spec.port_name())
        };
        let port = Port::open(eal, &pc).map_err(anyhow::Error::msg)?;
        let i = port.info();
        tracing::info!(
            "DPDK port {} ({}, port {}): {} queue(s), {} descriptors, {} mbufs each, {}, timestamps {}",
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
            } else if i.driver == "net_af_packet" {
                "from the kernel's receive stamp in each queue's packet socket ring (else the TSC: see each queue's line)"
            } else if spec.stamps == crate::source::DpdkStamps::Burst {
                "from the TSC, one read per receive burst shared by its frames (--dpdk-timestamps burst), mapped to CLOCK_REALTIME (re-anchored every 100 ms, steps of at most 1 ms)"
            } else {
                "from the TSC, one read per frame, mapped to CLOCK_REALTIME (re-anchored every 100 ms, steps of at most 1 ms)"
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
                            Err(e) => tracing::warn!("self-test injection: {e}"),
                        }
                    }
                    tracing::info!("self-test: injected {sent} of {} frames", frames.len());
                })
                .context("spawning the injection thread")?;
            INJECTORS.lock().unwrap_or_else(|e| e.into_inner()).push(h);
        }
        let name = spec.port_name().to_string();
        Ok(port
            .queues()
            .into_iter()
            .map(|q| {
                tracing::info!(
                    "DPDK port {name} queue {}: drops read from {}",
                    q.queue(),
                    q.drop_sources()
                );
                let label = format!("dpdk:{name}:{}", q.queue());
                (q, label)
            })
            .collect())
    }

    /// How a queue's inflow was stopped at the end, for the log.
    pub fn stop_note(q: &DpdkQueue) -> String {
        use linecap_dataplane::dpdk::StopMethod;
        let what = match q.stop_method() {
            StopMethod::Running => "not stopped (the worker ended first)".to_string(),
            StopMethod::QueueStop => "rx queue stopped (rte_eth_dev_rx_queue_stop)".to_string(),
            StopMethod::SocketFilter(e) => format!(
                "rx queue stop refused by the PMD ({}); inflow stopped by a drop-all filter on its packet socket, then drained",
                linecap_dataplane::dpdk::eal::strerror(*e)
            ),
            StopMethod::Refused(e) => format!(
                "rx queue stop refused by the PMD ({}); drained until idle",
                linecap_dataplane::dpdk::eal::strerror(*e)
            ),
            StopMethod::Failed(e) => format!(
                "rx queue stop refused by the PMD, and the socket filter failed ({e}); drained until idle"
            ),
        };
        format!(
            "DPDK port {} queue {}: {what}",
            q.port().info().port_id,
            q.queue()
        )
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
            Ok(true) => tracing::info!("DPDK ports stopped, EAL cleaned up"),
            Ok(false) => {}
            Err(e) => tracing::warn!("{e}"),
        }
    }
}

/// Without the `dpdk` feature: nothing to clean up.
#[cfg(not(feature = "dpdk"))]
pub fn shutdown() {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::DpdkArgs;

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

//! Layering: defaults (clap's) < profile < flags given on the command line.
//! Which flags were given is clap's own `ArgMatches::value_source` of the
//! one parse `main` did; nothing parses argv a second time.

use anyhow::Context;
use clap::ArgMatches;
use clap::parser::ValueSource;
use linecap_dataplane::afxdp::{AttachMode, XdpTimestamps};
use linecap_dataplane::ring::HugePages;

use super::profile::{Backend, Job, Profile, XdpMode, XdpTimestampsKey};
use crate::cli::CaptureArgs;
use crate::values::{IdList, IndexList};

/// `linecap capture [--profile P]`: load P, if given, and make its values the
/// defaults of `args` (`matches` are the `capture` subcommand's, from the
/// same parse as `args`). Returns the profile.
pub fn layer(args: &mut CaptureArgs, matches: &ArgMatches) -> anyhow::Result<Option<Profile>> {
    args.batch_bytes_given |= matches.value_source("batch_bytes") == Some(ValueSource::CommandLine);
    let Some(path) = args.profile.clone() else {
        return Ok(None);
    };
    let profile = Profile::load(&path)?;
    profile
        .apply_to(args, matches)
        .with_context(|| format!("profile {}", path.display()))?;
    Ok(Some(profile))
}

impl Profile {
    /// Make this profile's values the defaults of `args`: every capture
    /// setting the profile has is written into `args` unless that flag was
    /// given on the command line (`matches` are the `capture` subcommand's).
    pub fn apply_to(&self, args: &mut CaptureArgs, matches: &ArgMatches) -> anyhow::Result<()> {
        let given = |id: &str| matches.value_source(id) == Some(ValueSource::CommandLine);
        if !given("sources") && !given("interfaces") {
            args.profile_sources = vec![self.source_spec()?];
            if self.nic.backend == Backend::File && !given("spread") {
                args.spread = self.nic.queues;
            }
        }
        if !given("user") && args.user.is_none() {
            args.user = self.host.user.clone();
        }
        if !given("jobs") && !self.jobs.is_empty() {
            if !given("out") {
                // Loud, not silent: the operator may expect a main capture too.
                tracing::warn!(
                    "the profile's {} [[job]] table(s) are the whole capture: there is no \
                     unfiltered main capture in writer.dirs; give --out DIR to capture \
                     everything there as well",
                    self.jobs.len()
                );
            }
            args.jobs = self
                .jobs
                .iter()
                .map(Job::spec)
                .collect::<anyhow::Result<_>>()?;
        }
        let w = &self.writer;
        if !given("out") && args.jobs.is_empty() {
            // Queues spread over the disks: round robin, or `writer.queue_dirs`.
            args.out = w.dirs.clone();
            if !given("queue_dirs") {
                args.queue_dirs = w.queue_dirs.clone().map(IndexList);
            }
        }
        if !given("disk_budget") && w.disk_budget.is_some() {
            args.disk_budget = w.disk_budget.map(|b| b.0);
        }
        if !given("metrics") && !given("no_metrics") && self.metrics.address.is_some() {
            args.metrics = self.metrics.address;
        }
        if !given("metrics_allow_remote") {
            args.metrics_allow_remote = self.metrics.allow_remote;
        }
        if !given("housekeeping_cores") && !self.cores.housekeeping.0.is_empty() {
            args.housekeeping_cores = Some(IdList(self.cores.housekeeping.0.clone()));
        }
        if !given("rotate_bytes") && !given("file_size") && w.rotate_bytes.is_some() {
            args.rotate_bytes = w.rotate_bytes.map(|b| b.0);
        }
        if !given("rotate_seconds") && w.rotate_seconds.is_some() {
            args.rotate_seconds = w.rotate_seconds;
        }
        if !given("rotate_files") && w.rotate_files.is_some() {
            args.rotate_files = w.rotate_files;
        }
        if !given("no_compress") {
            args.no_compress = !w.compress;
        }
        if !given("direct_io") {
            args.direct_io = w.direct_io;
        }
        if !given("writer_threads") {
            args.writer_threads = w.threads;
        }
        if !given("batch_bytes") {
            args.batch_bytes = self.memory.batch_bytes.0;
            args.batch_bytes_given = true;
        }
        if !given("ring_slots") && !given("buffer_size") {
            args.ring_slots = self.ring_slots();
        }
        if !given("hugepages") && self.memory.hugepages > 0 {
            args.hugepages = HugePages::Require;
        }
        if !given("xdp_mode") {
            args.xdp_mode = match self.nic.xdp_mode {
                XdpMode::Auto => AttachMode::Auto,
                XdpMode::Native => AttachMode::Native,
                XdpMode::Generic => AttachMode::Generic,
            };
        }
        if !given("xdp_timestamps") {
            args.xdp_timestamps = timestamps_of(self.nic.xdp_timestamps);
        }
        if !given("xsk_ring") {
            args.xsk_ring = self.nic.xsk_ring_entries;
        }
        // The profile's DPDK settings go with its DPDK port, or with dpdk:
        // sources given here; not onto an AF_XDP or file capture.
        let cli_dpdk = args.sources.iter().any(|s| s.starts_with("dpdk:"));
        let cli_source = given("sources") || given("interfaces");
        if self.nic.backend == Backend::Dpdk && (!cli_source || cli_dpdk) {
            let d = &mut args.dpdk;
            if !given("dpdk_queues") {
                d.dpdk_queues = Some(u16::try_from(self.nic.queues).unwrap_or(u16::MAX));
            }
            if !given("rss_key") && self.nic.rss_key.is_some() {
                d.rss_key = self.nic.rss_key.clone();
            }
            if !given("eal_args") && self.dpdk.eal_args.is_some() {
                d.eal_args = self.dpdk.eal_args.clone();
            }
            if !given("dpdk_rx_desc") && self.dpdk.rx_desc.is_some() {
                d.dpdk_rx_desc = self.dpdk.rx_desc;
            }
            if !given("dpdk_mbufs") && self.dpdk.mbufs.is_some() {
                d.dpdk_mbufs = self.dpdk.mbufs;
            }
            if !given("dpdk_timestamps") && self.dpdk.timestamps.is_some() {
                d.dpdk_timestamps = self.dpdk.timestamps;
            }
        }
        if !given("cores") && !self.cores.workers.0.is_empty() {
            args.cores = Some(IdList(self.cores.workers.0.clone()));
        }
        if let Some(f) = &self.flows {
            if !given("flows") {
                args.flows = true;
            }
            if !given("capacity") {
                args.flow.capacity = f.capacity;
            }
            if !given("idle_timeout") {
                args.flow.idle_timeout = f.idle_timeout_s;
            }
            if !given("active_timeout") {
                args.flow.active_timeout = f.active_timeout_s;
            }
            if !given("linger") {
                args.flow.linger = f.linger_s;
            }
        }
        Ok(())
    }
}

/// The flag's value for a profile's `nic.xdp_timestamps`.
fn timestamps_of(k: XdpTimestampsKey) -> XdpTimestamps {
    match k {
        XdpTimestampsKey::Auto => XdpTimestamps::Auto,
        XdpTimestampsKey::Hardware => XdpTimestamps::Hardware,
        XdpTimestampsKey::Ktime => XdpTimestamps::Ktime,
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::cli::{Cli, Command};
    use crate::source::{DpdkStamps, SourceSpec};
    use clap::{CommandFactory, FromArgMatches};

    fn args(p: &Profile, argv: &[&str]) -> CaptureArgs {
        let m = Cli::command().try_get_matches_from(argv).unwrap();
        let (_, sub) = m.subcommand().unwrap();
        let Command::Capture(mut a) = Cli::from_arg_matches(&m).unwrap().command else {
            unreachable!()
        };
        p.apply_to(&mut a, sub).unwrap();
        a
    }

    /// `linecap capture --profile x EXTRA…` with profile `p`.
    fn args_with(p: &Profile, extra: &[&str]) -> CaptureArgs {
        let mut argv = vec!["linecap", "capture", "--profile", "x"];
        argv.extend_from_slice(extra);
        args(p, &argv)
    }

    fn probe() -> Profile {
        Profile::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../hw-profiles/probe-40g.toml"))
            .unwrap()
    }

    #[test]
    fn dpdk_profile_gives_queues_rss_key_and_eal_args() {
        let p = Profile::load(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("../hw-profiles/probe-40g-dpdk.toml"),
        )
        .unwrap();
        let a = args(&p, &["linecap", "capture", "--profile", "x"]);
        let [SourceSpec::Dpdk(d)] = &a.profile_sources[..] else {
            panic!("{:?}", a.profile_sources)
        };
        assert_eq!(d.device, "0000:3b:00.0");
        assert_eq!(a.dpdk.dpdk_queues, Some(8));
        assert_eq!(a.dpdk.dpdk_rx_desc, Some(4096));
        assert_eq!(a.dpdk.dpdk_mbufs, Some(32767));
        assert!(a.dpdk.rss_key.as_deref().unwrap().starts_with("6d:5a"));
        assert!(a.dpdk.eal_args.as_deref().unwrap().contains("--socket-mem"));
        // Flags win.
        let a = args(
            &p,
            &["linecap", "capture", "--profile", "x", "--dpdk-queues", "2"],
        );
        assert_eq!(a.dpdk.dpdk_queues, Some(2));
        // [dpdk] timestamps, and the flag over it.
        let mut p = p;
        assert_eq!(a.dpdk.dpdk_timestamps, Some(DpdkStamps::Frame));
        p.dpdk.timestamps = Some(DpdkStamps::Burst);
        let a = args(&p, &["linecap", "capture", "--profile", "x"]);
        assert_eq!(a.dpdk.dpdk_timestamps, Some(DpdkStamps::Burst));
        let a = args_with(&p, &["--dpdk-timestamps", "frame"]);
        assert_eq!(a.dpdk.dpdk_timestamps, Some(DpdkStamps::Frame));
        // An AF_XDP interface given over the DPDK profile takes none of its
        // DPDK settings (validation refuses DPDK flags without a dpdk: source).
        let a = args_with(&p, &["-i", "veth0"]);
        assert_eq!(a.dpdk.first_given(), None);
        let a = args_with(&p, &["--source", "dpdk:net_null0"]);
        assert_eq!(a.dpdk.dpdk_queues, Some(8));
    }

    #[test]
    fn writer_direct_io_key_and_flag() {
        let mut p = probe();
        assert!(!args_with(&p, &[]).direct_io);
        assert!(args_with(&p, &["--direct-io"]).direct_io);
        p.writer.direct_io = true;
        assert!(effective(&p, &["linecap", "capture", "--profile", "x"]).direct_io);
    }

    #[test]
    fn xdp_timestamps_key_is_the_default_and_the_flag_wins() {
        let mut p = probe();
        assert_eq!(
            args(&p, &["linecap", "capture", "--profile", "x"]).xdp_timestamps,
            XdpTimestamps::Auto
        );
        p.nic.xdp_timestamps = XdpTimestampsKey::Ktime;
        assert_eq!(
            args(&p, &["linecap", "capture", "--profile", "x"]).xdp_timestamps,
            XdpTimestamps::Ktime
        );
        let a = args_with(&p, &["--xdp-timestamps", "hardware"]);
        assert_eq!(a.xdp_timestamps, XdpTimestamps::Hardware);
    }

    #[test]
    fn profile_values_become_the_defaults() {
        let p = probe();
        let a = args(&p, &["linecap", "capture", "--profile", "x"]);
        assert_eq!(
            a.profile_sources,
            [SourceSpec::AfXdp {
                ifname: "ens1f0".into(),
                queues: Some((0..8).collect())
            }]
        );
        assert_eq!(a.out, [PathBuf::from("/data/cap")]);
        assert_eq!(a.cores, Some(IdList((2..=9).collect())));
        assert_eq!(a.ring_slots, 64);
        assert_eq!(a.batch_bytes, 1 << 20);
        assert_eq!(a.writer_threads, 4);
        assert_eq!(a.hugepages, HugePages::Require);
        assert_eq!(a.xdp_mode, AttachMode::Native);
        assert_eq!(a.rotate_bytes, Some(1 << 30));
        assert_eq!(a.rotate_files, Some(400));
        assert!(a.flows);
        assert_eq!(a.flow.capacity, 1 << 20);
        crate::config::capture_config(&a)
            .map(|_| ())
            .unwrap_or_else(|e| {
                // Only the core check may fail on a small machine.
                assert!(e.to_string().contains("--cores"), "{e:#}")
            });
    }

    #[test]
    fn job_tables_become_the_capture_jobs() {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../hw-profiles/probe-40g.toml"),
        )
        .unwrap()
            + "\n[[job]]\nname = \"dns\"\nout = \"/data/dns\"\nfilter = \"udp port 53\"\nsnaplen = 256\n\
               \n[[job]]\nname = \"sampled\"\nout = \"/data/sampled\"\nsample = \"flows:100:7\"\n";
        let p: Profile = toml::from_str(&text).unwrap();
        p.validate().unwrap();
        let a = args(&p, &["linecap", "capture", "--profile", "x"]);
        // The jobs are the capture: no main job in writer.dirs.
        assert!(a.out.is_empty());
        assert_eq!(a.jobs.len(), 2);
        assert_eq!(a.jobs[0].name, "dns");
        assert_eq!(a.jobs[0].filter.as_deref(), Some("udp port 53"));
        assert_eq!(a.jobs[0].snaplen, Some(256));
        assert_eq!(a.jobs[1].out, Path::new("/data/sampled"));
        assert_eq!(
            a.jobs[1].sample.map(|s| s.to_string()).as_deref(),
            Some("flows:100:7")
        );
        // --out given: the main job comes back beside the profile's jobs.
        let a = args(
            &p,
            &["linecap", "capture", "--profile", "x", "--out", "/tmp/o"],
        );
        assert_eq!(a.out, [PathBuf::from("/tmp/o")]);
        assert_eq!(a.jobs.len(), 2);
        // A bad policy names the job and the key.
        let bad: Profile =
            toml::from_str(&(text + "\n[[job]]\nname = \"x\"\nout = \"/x\"\nsample = \"often\"\n"))
                .unwrap();
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains("[[job]] \"x\": sample"), "{e}");
    }

    #[test]
    fn flags_given_win_over_the_profile() {
        let p = probe();
        let a = args(
            &p,
            &[
                "linecap",
                "capture",
                "--profile",
                "x",
                "--source",
                "afxdp:veth0",
                "--out",
                "/tmp/o",
                "--cores",
                "1",
                "--ring-slots",
                "8",
                "--batch-bytes",
                "64K",
                "--writer-threads",
                "1",
                "--hugepages",
                "never",
                "--xdp-mode",
                "generic",
                "--xsk-ring",
                "2048",
                "-C",
                "1M",
                "-W",
                "3",
                "--flow-capacity",
                "1024",
                "--idle-timeout",
                "5",
            ],
        );
        assert_eq!(a.sources, ["afxdp:veth0"]);
        assert!(a.profile_sources.is_empty());
        assert_eq!(a.out, [PathBuf::from("/tmp/o")]);
        assert_eq!(a.cores, Some(IdList(vec![1])));
        assert_eq!(a.ring_slots, 8);
        assert_eq!(a.batch_bytes, 64 << 10);
        assert_eq!(a.writer_threads, 1);
        assert_eq!(a.hugepages, HugePages::Never);
        assert_eq!(a.xdp_mode, AttachMode::Generic);
        assert_eq!(a.xsk_ring, 2048);
        assert_eq!(a.file_size.or(a.rotate_bytes), Some(1 << 20));
        assert_eq!(a.rotate_files, Some(3));
        assert_eq!(a.flow.capacity, 1024);
        assert_eq!(a.flow.idle_timeout, 5.0);
        // Not given: still the profile's.
        assert_eq!(a.flow.active_timeout, 300.0);
        assert!(a.flows);
    }

    #[test]
    fn without_a_profile_source_and_out_stay_required() {
        assert!(
            Cli::command()
                .try_get_matches_from(["linecap", "capture"])
                .is_err()
        );
        assert!(
            Cli::command()
                .try_get_matches_from(["linecap", "capture", "--profile", "p"])
                .is_ok()
        );
    }

    fn effective(p: &Profile, argv: &[&str]) -> crate::config::CaptureConfig {
        crate::config::validate::effective_config(&args(p, argv))
            .unwrap_or_else(|e| panic!("{}: {e:#}", p.host.name))
    }

    /// Every shipped profile: each key the capture takes is in the
    /// effective configuration, field by field. (The keys only check-host
    /// reads — nic.driver, nic.numa_node, nic.line_rate_gbps, nic.pci's
    /// format, memory.hugepage_size, cores.isolated, writer.write_test_bytes,
    /// host.name/description — are checked by checkhost's own tests.)
    #[test]
    fn every_shipped_profile_takes_effect_key_by_key() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../hw-profiles");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            if path.extension().is_none_or(|x| x != "toml") {
                continue;
            }
            n += 1;
            let p = Profile::load(&path).unwrap();
            let c = effective(&p, &["linecap", "capture", "--profile", "x"]);
            let name = path.display().to_string();
            // [nic]
            match (&c.sources[..], p.nic.backend) {
                ([SourceSpec::AfXdp { ifname, queues }], Backend::Afxdp) => {
                    assert_eq!(Some(ifname), p.nic.interface.as_ref(), "{name}");
                    assert_eq!(queues, &Some((0..p.nic.queues).collect()), "{name}");
                }
                ([SourceSpec::Dpdk(d)], Backend::Dpdk) => {
                    assert_eq!(Some(&d.device), p.nic.pci.as_ref(), "{name}");
                    assert_eq!(u32::from(d.queues), p.nic.queues, "{name}");
                    if let Some(k) = &p.nic.rss_key {
                        assert_eq!(d.rss_key, crate::values::parse_rss_key(k).unwrap());
                    }
                    if let Some(r) = p.dpdk.rx_desc {
                        assert_eq!(d.rx_desc, r, "{name}");
                    }
                    if let Some(m) = p.dpdk.mbufs {
                        assert_eq!(d.mbufs, m, "{name}");
                    }
                    assert_eq!(d.stamps, p.dpdk.timestamps.unwrap_or_default(), "{name}");
                    if let Some(e) = &p.dpdk.eal_args {
                        assert_eq!(
                            d.eal_args.join(" "),
                            e.split_whitespace().collect::<Vec<_>>().join(" ")
                        );
                    }
                }
                ([SourceSpec::File(f)], Backend::File) => {
                    assert_eq!(Some(f), p.nic.file.as_ref(), "{name}");
                    assert_eq!(c.spread, p.nic.queues, "{name}");
                }
                (s, b) => panic!("{name}: {b:?} gave {s:?}"),
            }
            assert_eq!(
                c.xdp.mode,
                match p.nic.xdp_mode {
                    XdpMode::Auto => AttachMode::Auto,
                    XdpMode::Native => AttachMode::Native,
                    XdpMode::Generic => AttachMode::Generic,
                },
                "{name}"
            );
            assert_eq!(c.xdp.ring_entries, p.nic.xsk_ring_entries, "{name}");
            assert_eq!(
                c.xdp.timestamps,
                timestamps_of(p.nic.xdp_timestamps),
                "{name}"
            );
            // [host]
            assert_eq!(c.user, p.host.user, "{name}");
            // [cores]
            let cores = |l: &Vec<u32>| l.iter().map(|&c| c as usize).collect::<Vec<_>>();
            let mut workers = cores(&p.cores.workers.0);
            workers.sort();
            assert_eq!(c.cores, workers, "{name}");
            let mut hk = cores(&p.cores.housekeeping.0);
            hk.sort();
            hk.dedup();
            assert_eq!(c.housekeeping, hk, "{name}");
            // [memory]
            assert_eq!(c.batch_bytes as u64, p.memory.batch_bytes.0, "{name}");
            assert_eq!(c.ring_slots, p.ring_slots(), "{name}");
            let want = if p.memory.hugepages > 0 {
                HugePages::Require
            } else {
                HugePages::Try
            };
            assert_eq!(c.hugepages, want, "{name}");
            // [flows]
            match (&c.flows, &p.flows) {
                (Some(f), Some(pf)) => {
                    assert_eq!(f.capacity, pf.capacity, "{name}");
                    assert_eq!(
                        f.timeouts.idle_ns,
                        (pf.idle_timeout_s * 1e9) as u64,
                        "{name}"
                    );
                    assert_eq!(
                        f.timeouts.active_ns,
                        (pf.active_timeout_s * 1e9) as u64,
                        "{name}"
                    );
                }
                (None, None) => {}
                (a, b) => panic!("{name}: flows {a:?} vs {b:?}"),
            }
            // [writer]
            let w = &p.writer;
            assert_eq!(c.writer_threads, w.threads, "{name}");
            assert_eq!(c.compress, w.compress, "{name}");
            assert_eq!(c.direct_io, w.direct_io, "{name}");
            assert_eq!(c.rotate_bytes, w.rotate_bytes.map(|b| b.0), "{name}");
            assert_eq!(c.rotate_seconds, w.rotate_seconds, "{name}");
            assert_eq!(c.rotate_files, w.rotate_files, "{name}");
            assert_eq!(c.disk_budget, w.disk_budget.map(|b| b.0), "{name}");
            if p.jobs.is_empty() {
                assert_eq!(c.jobs.len(), 1, "{name}");
                let job = &c.jobs[0];
                let dirs: Vec<&Path> = job.dirs().collect();
                let want: Vec<&Path> = w.dirs.iter().map(PathBuf::as_path).collect();
                assert_eq!(dirs, want, "{name}");
                for q in 0..p.nic.queues {
                    assert_eq!(
                        job.dir_of(q as usize, c.queue_dirs.as_deref()),
                        p.queue_dir(q),
                        "{name}: queue {q}"
                    );
                }
            }
            // [metrics]
            let m = c.metrics.expect("metrics on");
            assert_eq!(m.addr, p.metrics.address(), "{name}");
            assert_eq!(m.required, p.metrics.address.is_some(), "{name}");
        }
        assert!(n >= 4, "{n} profiles");
    }

    #[test]
    fn the_10g_profile_puts_queues_0_2_on_data1_and_1_3_on_data2() {
        let p = Profile::load(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("../hw-profiles/probe-10g.toml"),
        )
        .unwrap();
        let c = effective(&p, &["linecap", "capture", "--profile", "x"]);
        let job = &c.jobs[0];
        let on = |q| job.dir_of(q, c.queue_dirs.as_deref()).to_path_buf();
        assert_eq!(on(0), PathBuf::from("/data1/cap"));
        assert_eq!(on(1), PathBuf::from("/data2/cap"));
        assert_eq!(on(2), PathBuf::from("/data1/cap"));
        assert_eq!(on(3), PathBuf::from("/data2/cap"));
        assert_eq!(c.housekeeping, [0, 1, 6, 7]);
        assert_eq!(c.disk_budget, Some(1100 << 30));
    }

    #[test]
    fn metrics_keys_take_effect_and_flags_win() {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../hw-profiles/dev-veth.toml"),
        )
        .unwrap();
        let remote = text.replace(
            "address = \"127.0.0.1:9464\"",
            "address = \"0.0.0.0:9470\"\nallow_remote = true",
        );
        let p = Profile::parse(&remote).unwrap();
        let c = effective(&p, &["linecap", "capture", "--profile", "x"]);
        assert_eq!(c.metrics.unwrap().addr, "0.0.0.0:9470".parse().unwrap());
        // allow_remote also lets a remote --metrics flag through…
        let c = effective(
            &p,
            &[
                "linecap",
                "capture",
                "--profile",
                "x",
                "--metrics",
                "10.0.0.1:1",
            ],
        );
        assert_eq!(c.metrics.unwrap().addr, "10.0.0.1:1".parse().unwrap());
        // …which the loopback-only profile refuses, naming the flag.
        let p = Profile::parse(&text).unwrap();
        let a = args(
            &p,
            &[
                "linecap",
                "capture",
                "--profile",
                "x",
                "--metrics",
                "10.0.0.1:1",
            ],
        );
        let e = crate::config::validate::effective_config(&a).unwrap_err();
        assert!(e.to_string().contains("--metrics"), "{e:#}");
        // --no-metrics wins over the profile's address.
        let c = effective(
            &p,
            &["linecap", "capture", "--profile", "x", "--no-metrics"],
        );
        assert!(c.metrics.is_none());
    }

    #[test]
    fn queue_dirs_map_and_bad_maps_name_the_key() {
        let base = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../hw-profiles/probe-10g.toml"),
        )
        .unwrap();
        let t = base.replace(
            "dirs = [\"/data1/cap\", \"/data2/cap\"]",
            "dirs = [\"/data1/cap\", \"/data2/cap\"]\nqueue_dirs = [1, 1, 1, 0]",
        );
        let p = Profile::parse(&t).unwrap();
        let c = effective(&p, &["linecap", "capture", "--profile", "x"]);
        let job = &c.jobs[0];
        let on = |q| job.dir_of(q, c.queue_dirs.as_deref()).to_path_buf();
        assert_eq!(on(0), PathBuf::from("/data2/cap"));
        assert_eq!(on(2), PathBuf::from("/data2/cap"));
        assert_eq!(on(3), PathBuf::from("/data1/cap"));
        for (map, word) in [
            ("[0, 1]", "writer.queue_dirs"),
            ("[0, 1, 2, 0]", "writer.queue_dirs"),
            ("[0, 0, 0, 0]", "writer.queue_dirs"),
        ] {
            let t = base.replace(
                "dirs = [\"/data1/cap\", \"/data2/cap\"]",
                &format!("dirs = [\"/data1/cap\", \"/data2/cap\"]\nqueue_dirs = {map}"),
            );
            let e = format!("{:#}", Profile::parse(&t).unwrap_err());
            assert!(e.contains(word), "{map}: {e}");
        }
    }
}

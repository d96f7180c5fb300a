//! `bench gen`: a rate-controlled packet generator (the pktgen / trafgen /
//! tcpreplay role), used by the `veth` suite and usable on its own.
//!
//! Each TX thread owns one socket and sends the global frame numbers
//! `t, t + T, t + 2T, …` (T threads), so synthetic sequence numbers are
//! unique across threads and a receiver can check the set `0..count`.
//! Pacing is against an absolute schedule (frame `g` is due at a time fixed
//! by the rate), so sleeping late or a slow syscall never changes the
//! average rate: the frames that became due meanwhile go in the next batch.
//! The kernel refusing frames (driver queue full) is back-pressure: they are
//! retried, never skipped, so the count sent is exactly the count asked.

// The generator's transmit sockets share memory with the kernel (AF_XDP
// rings and UMEM, `sendmmsg` arrays): the only `unsafe` in `bench`, each
// block with its `// SAFETY:` comment.
#[allow(unsafe_code)]
pub mod afpacket;
pub mod frames;
pub mod tx;
#[allow(unsafe_code)]
pub mod xsk_tx;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use clap::Parser;

use frames::FrameSet;
use tx::{TxKind, TxSocket};

/// Most frames handed to the kernel in one call.
pub const BATCH_MAX: usize = 256;
/// Longest run the generator accepts.
pub const DURATION_MAX_S: f64 = 3600.0;
/// Most TX threads.
pub const THREADS_MAX: usize = 64;

const ABOUT: &str = "Rate-controlled packet generator: sends raw Ethernet frames on one interface.";
const LONG_ABOUT: &str = "\
Rate-controlled packet generator: sends raw Ethernet frames on one interface, paced to a
target rate, for a bounded count and/or duration, from synthetic templates or a capture file.

Synthetic frames are Ethernet/IPv4/UDP to 10.255.0.1:4789 over N flows (source 10.a.b.c and
port vary, so RSS spreads them); bytes 42..50 of each frame (the first 8 bytes of the UDP
payload) hold a 64-bit big-endian sequence number 0, 1, 2, ... unique across threads, so a
receiver can check count, gaps and reordering (`bench seqcheck`).

Frames from a pcap/pcapng/ERF file go out as recorded; each further pass over the file adds the
pass number to the low 16 bits of the IPv4 addresses (new flows on every loop).

It reports the offered (target) and achieved rates and the exact count sent. When the target is
above what this host can send, it says so: the achieved rate is then its ceiling.

Examples (as root; the interface must be one you own, e.g. a veth end inside a namespace):
  bench gen -i vB --size 64 --pps 200k --count 1M
  bench gen -i vB --size imix --flows 1000 --bps 1G --duration 10 --threads 2
  bench gen -i vB --file trace.pcap --speed 2 --loops 10
  bench gen -i vB --size 1514 --duration 5            # no rate: as fast as possible (ceiling)";

/// `bench gen` flags.
#[derive(Parser, Debug, Clone)]
#[command(name = "bench gen", about = ABOUT, long_about = LONG_ABOUT)]
pub struct GenArgs {
    /// Interface to send on, in the current network namespace.
    #[arg(short = 'i', long, value_name = "IFACE")]
    pub iface: String,
    /// Synthetic frame size in bytes, FCS excluded (50..=9018), or `imix`
    /// (7 × 64, 4 × 594, 1 × 1514 B).
    #[arg(long, default_value = "64", value_name = "BYTES|imix")]
    pub size: String,
    /// Synthetic flows (distinct 5-tuples), cycled in order.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub flows: u32,
    /// Send the frames of this pcap, pcapng or ERF file (plain or .lz4) instead of synthetic ones.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["size", "flows"])]
    pub file: Option<PathBuf>,
    /// Target rate in frames per second (suffixes k, M, G).
    #[arg(long, value_name = "RATE", value_parser = parse_rate, conflicts_with_all = ["bps", "speed"])]
    pub pps: Option<f64>,
    /// Target rate in bits per second of frames, FCS excluded (suffixes k, M, G).
    #[arg(long, value_name = "RATE", value_parser = parse_rate, conflicts_with = "speed")]
    pub bps: Option<f64>,
    /// With --file: keep the recorded gaps between frames, played SPEED times faster.
    #[arg(long, value_name = "SPEED", requires = "file")]
    pub speed: Option<f64>,
    /// Frames to send in all (suffixes k, M, G).
    #[arg(long, value_name = "N", value_parser = parse_count)]
    pub count: Option<u64>,
    /// With --file: passes over the file (count = passes × frames in the file).
    #[arg(long, value_name = "N", requires = "file", conflicts_with = "count")]
    pub loops: Option<u64>,
    /// Stop after this many seconds even if frames remain (at most 3600).
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<f64>,
    /// TX threads, each with its own socket (AF_XDP: its own queue, 0..N-1).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub threads: usize,
    /// Transmit path: `packet` (AF_PACKET sendmmsg, qdisc bypassed) or `xdp` (AF_XDP TX ring, copy mode).
    #[arg(long, default_value = "packet", value_name = "PATH")]
    pub tx: TxKind,
    /// Most frames per system call (1..=256).
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub batch: usize,
    /// Write the report as JSON to FILE (`-` for stdout).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

fn suffixed(s: &str) -> Result<f64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, 'k' | 'K')) => (&s[..i], 1e3),
        Some((i, 'm' | 'M')) => (&s[..i], 1e6),
        Some((i, 'g' | 'G')) => (&s[..i], 1e9),
        _ => (s, 1.0),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a number (like 250000, 250k, 1.5M, 10G)"))?;
    if !v.is_finite() || v <= 0.0 {
        return Err(format!("{s:?} must be above zero"));
    }
    Ok(v * mult)
}

fn parse_rate(s: &str) -> Result<f64, String> {
    suffixed(s)
}

fn parse_count(s: &str) -> Result<u64, String> {
    let v = suffixed(s)?;
    if v.fract() != 0.0 || v > 1e15 {
        return Err(format!("{s:?} must be a whole number of frames"));
    }
    Ok(v as u64)
}

/// When frame `g` is due, in ns after the start.
#[derive(Debug, Clone)]
enum Schedule {
    /// As fast as the socket takes them.
    Unpaced,
    /// Frames per second.
    Pps(f64),
    /// Bits per second: frame `g` is due when the bits before it are.
    Bps {
        bps: f64,
        prefix_bytes: Vec<u64>,
        cycle_bytes: u64,
    },
    /// The file's own gaps, divided by `speed`.
    Original {
        speed: f64,
        offset_ns: Vec<u64>,
        cycle_ns: u64,
    },
}

impl Schedule {
    #[inline]
    fn due_ns(&self, g: u64) -> u64 {
        match self {
            Schedule::Unpaced => 0,
            Schedule::Pps(r) => (g as f64 * 1e9 / r) as u64,
            Schedule::Bps {
                bps,
                prefix_bytes,
                cycle_bytes,
            } => {
                let n = prefix_bytes.len() as u64;
                let bytes =
                    (g / n) as f64 * *cycle_bytes as f64 + prefix_bytes[(g % n) as usize] as f64;
                (bytes * 8.0 * 1e9 / bps) as u64
            }
            Schedule::Original {
                speed,
                offset_ns,
                cycle_ns,
            } => {
                let n = offset_ns.len() as u64;
                let ns = (g / n) as f64 * *cycle_ns as f64 + offset_ns[(g % n) as usize] as f64;
                (ns / speed) as u64
            }
        }
    }
}

/// A validated generator run.
pub struct GenConfig {
    pub iface: String,
    frames: FrameSet,
    schedule: Schedule,
    /// Frames in all (`u64::MAX`: until the duration).
    pub count: u64,
    pub duration: Option<Duration>,
    pub threads: usize,
    pub tx: TxKind,
    pub batch: usize,
    /// The target in frames/s, when the schedule has one.
    pub target_pps: Option<f64>,
    /// What is being sent, for the report.
    pub what: String,
}

impl GenConfig {
    /// Check every flag; errors say which and why.
    pub fn from_args(a: &GenArgs) -> Result<GenConfig, String> {
        if a.iface.is_empty() || a.iface.len() > 15 {
            return Err("--iface needs an interface name (at most 15 characters)".into());
        }
        if !(1..=THREADS_MAX).contains(&a.threads) {
            return Err(format!(
                "--threads must be 1..={THREADS_MAX}, got {}",
                a.threads
            ));
        }
        if !(1..=BATCH_MAX).contains(&a.batch) {
            return Err(format!("--batch must be 1..={BATCH_MAX}, got {}", a.batch));
        }
        let (frames, what) = match &a.file {
            Some(p) => {
                let f = FrameSet::file(p)?;
                let what = format!("{} ({} frames)", p.display(), f.len());
                (f, what)
            }
            None => {
                let sizes: Vec<usize> = if a.size.eq_ignore_ascii_case("imix") {
                    frames::IMIX.to_vec()
                } else {
                    vec![a.size.parse().map_err(|_| {
                        format!(
                            "--size must be a frame length in bytes or `imix`, got {:?}",
                            a.size
                        )
                    })?]
                };
                let what = format!("synthetic {} B, {} flows", a.size, a.flows);
                (FrameSet::synthetic(&sizes, a.flows)?, what)
            }
        };
        let duration = match a.duration {
            Some(d) if !(d > 0.0 && d <= DURATION_MAX_S) => {
                return Err(format!(
                    "--duration must be above 0 and at most {DURATION_MAX_S} s, got {d}"
                ));
            }
            Some(d) => Some(Duration::from_secs_f64(d)),
            None => None,
        };
        let count = match (a.count, a.loops) {
            (Some(c), _) => c,
            (None, Some(l)) => l
                .checked_mul(frames.len() as u64)
                .ok_or("--loops is too large")?,
            (None, None) if duration.is_some() => u64::MAX,
            (None, None) => {
                return Err(
                    "give --count, --loops or --duration: every run of the generator is bounded"
                        .into(),
                );
            }
        };
        if count == 0 {
            return Err("--count must be at least 1".into());
        }
        let n = frames.len();
        let (schedule, target_pps) = if let Some(r) = a.pps {
            (Schedule::Pps(r), Some(r))
        } else if let Some(bps) = a.bps {
            let mut prefix_bytes = Vec::with_capacity(n);
            let mut acc = 0u64;
            for i in 0..n as u64 {
                prefix_bytes.push(acc);
                acc += frames.frame_len(i) as u64;
            }
            let pps = bps / 8.0 / (acc as f64 / n as f64);
            (
                Schedule::Bps {
                    bps,
                    prefix_bytes,
                    cycle_bytes: acc,
                },
                Some(pps),
            )
        } else if let Some(speed) = a.speed {
            if !(speed > 0.0 && speed.is_finite()) {
                return Err(format!("--speed must be above 0, got {speed}"));
            }
            let ts = &frames.ts_ns;
            let first = ts[0];
            // Times can go backwards in a merged trace: never schedule before the previous frame.
            let mut offset_ns = Vec::with_capacity(n);
            let mut last = 0u64;
            for &t in ts {
                last = last.max(t.saturating_sub(first));
                offset_ns.push(last);
            }
            let gap = if n > 1 {
                last / (n as u64 - 1)
            } else {
                1_000_000
            };
            let cycle_ns = last + gap.max(1);
            let pps = n as f64 * 1e9 / cycle_ns as f64 * speed;
            (
                Schedule::Original {
                    speed,
                    offset_ns,
                    cycle_ns,
                },
                Some(pps),
            )
        } else {
            (Schedule::Unpaced, None)
        };
        Ok(GenConfig {
            iface: a.iface.clone(),
            frames,
            schedule,
            count,
            duration,
            threads: a.threads,
            tx: a.tx,
            batch: a.batch,
            target_pps,
            what,
        })
    }
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct GenReport {
    /// Frames the kernel took, in all.
    pub sent: u64,
    /// Frame bytes (FCS excluded) sent.
    pub bytes: u64,
    /// Seconds from the start to the last frame sent.
    pub seconds: f64,
    /// Times the kernel refused frames (driver queue full); they were retried.
    pub refused: u64,
    /// Frames per thread.
    pub per_thread: Vec<u64>,
}

impl GenReport {
    pub fn achieved_pps(&self) -> f64 {
        if self.seconds > 0.0 {
            self.sent as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// Send as configured; `stop` ends the run early (signals).
pub fn run(cfg: &GenConfig, stop: &AtomicBool) -> Result<GenReport, String> {
    // Open every socket first so a bad interface fails before anything is sent.
    let mut sockets = Vec::with_capacity(cfg.threads);
    for t in 0..cfg.threads {
        sockets.push(TxSocket::open(cfg.tx, &cfg.iface, t as u32).map_err(|e| e.to_string())?);
    }
    let barrier = Barrier::new(cfg.threads);
    let start = std::sync::OnceLock::new();
    let results: Vec<Result<(u64, u64, u64, Duration), String>> = std::thread::scope(|s| {
        let handles: Vec<_> = sockets
            .into_iter()
            .enumerate()
            .map(|(t, sock)| {
                let (barrier, start) = (&barrier, &start);
                s.spawn(move || {
                    barrier.wait();
                    let t0 = *start.get_or_init(Instant::now);
                    tx_loop(cfg, t as u64, sock, t0, stop)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a TX thread panicked".into()))
            })
            .collect()
    });
    let mut r = GenReport::default();
    for x in results {
        let (sent, bytes, refused, last) = x?;
        r.sent += sent;
        r.bytes += bytes;
        r.refused += refused;
        r.seconds = r.seconds.max(last.as_secs_f64());
        r.per_thread.push(sent);
    }
    Ok(r)
}

/// One thread's frames: `t, t + T, …` below `count`, until the deadline.
/// Returns (sent, bytes, refused, time of the last send).
fn tx_loop(
    cfg: &GenConfig,
    t: u64,
    mut sock: TxSocket,
    t0: Instant,
    stop: &AtomicBool,
) -> Result<(u64, u64, u64, Duration), String> {
    let step = cfg.threads as u64;
    let stride = cfg.frames.max_len();
    let mut buf = vec![0u8; stride * cfg.batch];
    let mut lens = [0usize; BATCH_MAX];
    let deadline = cfg.duration.map(|d| d.as_nanos() as u64);
    let (mut g, mut sent, mut bytes, mut refused) = (t, 0u64, 0u64, 0u64);
    let mut last = Duration::ZERO;
    let mut checks = 0u32;
    while g < cfg.count {
        let now = t0.elapsed().as_nanos() as u64;
        if deadline.is_some_and(|d| now >= d) {
            break;
        }
        checks = checks.wrapping_add(1);
        if checks.is_multiple_of(64) && stop.load(Ordering::Relaxed) {
            break;
        }
        // Every frame due by now, up to a batch.
        let mut k = 0;
        let mut h = g;
        while k < cfg.batch && h < cfg.count && cfg.schedule.due_ns(h) <= now {
            lens[k] = cfg.frames.build(h, &mut buf[k * stride..(k + 1) * stride]);
            k += 1;
            h += step;
        }
        if k == 0 {
            let wait = cfg.schedule.due_ns(g).saturating_sub(now);
            let wait = deadline.map_or(wait, |d| wait.min(d.saturating_sub(now)));
            if wait > 20_000 {
                std::thread::sleep(Duration::from_nanos(wait));
            } else {
                // Short gaps: a short sleep lets frames gather into one batch.
                std::thread::sleep(Duration::from_micros(20));
            }
            continue;
        }
        let mut frames: [&[u8]; BATCH_MAX] = [&[]; BATCH_MAX];
        for (i, f) in frames[..k].iter_mut().enumerate() {
            *f = &buf[i * stride..i * stride + lens[i]];
        }
        let m = sock.send(&frames[..k]).map_err(|e| e.to_string())?;
        if m > 0 {
            sent += m as u64;
            bytes += lens[..m].iter().map(|&l| l as u64).sum::<u64>();
            g += m as u64 * step;
            last = t0.elapsed();
        }
        if m < k {
            refused += 1;
            std::thread::yield_now();
        }
    }
    sock.flush(Duration::from_millis(500));
    Ok((sent, bytes, refused, last))
}

/// The report as JSON.
pub fn report_json(cfg: &GenConfig, r: &GenReport) -> serde_json::Value {
    let achieved = r.achieved_pps();
    let limited = cfg.target_pps.is_some_and(|t| achieved < 0.95 * t);
    serde_json::json!({
        "iface": cfg.iface,
        "what": cfg.what,
        "tx": cfg.tx.name(),
        "threads": cfg.threads,
        "requested_count": (cfg.count != u64::MAX).then_some(cfg.count),
        "sent": r.sent,
        "bytes": r.bytes,
        "seconds": r.seconds,
        "offered_pps": cfg.target_pps,
        "achieved_pps": achieved,
        "achieved_bps": if r.seconds > 0.0 { r.bytes as f64 * 8.0 / r.seconds } else { 0.0 },
        "refused_retried": r.refused,
        "per_thread": r.per_thread,
        "generator_limited": limited || cfg.target_pps.is_none(),
    })
}

/// `bench gen ARGS`: parse, run, report. Exit status 2 on bad flags, 1 on a failed run.
pub fn main(args: Vec<String>) -> i32 {
    let a = match GenArgs::try_parse_from(std::iter::once("bench gen".to_string()).chain(args)) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    let cfg = match GenConfig::from_args(&a) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("bench gen: {e}");
            return 2;
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register(sig, Arc::clone(&stop));
    }
    let r = match run(&cfg, &stop) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bench gen: {e}");
            return 1;
        }
    };
    let j = report_json(&cfg, &r);
    let offered = cfg
        .target_pps
        .map_or("as fast as possible".to_string(), |p| format!("{p:.0} pps"));
    eprintln!(
        "bench gen: {} on {} by {} x{}: sent {} frames ({} B) in {:.3} s; offered {offered}, achieved {:.0} pps ({:.3} Gbit/s); kernel refused {} times (retried)",
        cfg.what,
        cfg.iface,
        cfg.tx.name(),
        cfg.threads,
        r.sent,
        r.bytes,
        r.seconds,
        r.achieved_pps(),
        j["achieved_bps"].as_f64().unwrap_or(0.0) / 1e9,
        r.refused
    );
    if let Some(t) = cfg.target_pps
        && r.achieved_pps() < 0.95 * t
    {
        eprintln!(
            "bench gen: could not reach the target: this host's ceiling here is about {:.0} pps (more --threads may help)",
            r.achieved_pps()
        );
    }
    if let Some(p) = &a.json {
        let s = serde_json::to_string_pretty(&j).unwrap_or_default();
        if p.as_os_str() == "-" {
            println!("{s}");
        } else if let Err(e) = std::fs::write(p, s) {
            eprintln!("bench gen: {}: {e}", p.display());
            return 1;
        }
    }
    0
}

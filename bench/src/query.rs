//! `query` suite (issue 20): find packets in a capture through linecap's
//! per-file index, next to the full scan and stenographer 1.0.1, on the same
//! generated traffic, in one run.
//!
//! 1. Traffic: `--query-flows` flows (default 50 000) with Zipf popularity
//!    (s = 1), clients `10.x.y.z`, 2000 servers `172.16.x.y` on common
//!    ports (TCP and UDP), frame sizes like real traffic (45 % 66–100 B,
//!    15 % 100–600 B, 40 % 1514 B), payloads random (LZ4 cannot shrink
//!    them). All of it is a function of a seed, so the sender (a child
//!    process inside the namespace, `bench query-send`) and this process
//!    agree on the flows without talking.
//! 2. Capture: one network namespace made for the run, a veth pair with both
//!    ends in it. The sender transmits on `vqA` with AF_PACKET (through the
//!    qdisc, so packet taps see the frames), at `--query-pps`, until
//!    `--bytes` of ERF records (frame + 18 bytes) were sent. stenographer
//!    (stenotype, AF_PACKET) captures `vqA`'s outgoing frames; linecap
//!    (AF_XDP, generic mode) receives them on `vqB`. The same frames, sent
//!    once, captured by both. Afterwards the sender trickles filler frames
//!    (192.0.2.1 → 192.0.2.2, matched by no query) for 12 s: stenotype
//!    completes a file only when later packets arrive.
//! 3. Queries: one 5-tuple and one host, each over everything and over a
//!    1-minute window around the middle of the capture, with (a) `linecap
//!    query DIR -w FILE`, (b) `linecap read DIR -w - | tcpdump -r - -w FILE
//!    EXPR` (the full scan) and (c) `stenoread 'QUERY' -w FILE`. Each runs
//!    `--runs` times; the median wall time is printed, with the bytes read
//!    (linecap's `--explain`; the data bytes for the scan; stenographer's
//!    `/proc/PID/io` read bytes) and the frames matched, which must agree
//!    (a mismatch is printed loudly and recorded). Then index size against
//!    capture size for both.
//!
//! Everything stays inside the namespace; stenographer listens on the
//! namespace's own 127.0.0.1. The namespace and every process are removed
//! on exit, also on failure.

use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::Opts;
use crate::pktgen::afpacket::PacketTx;
use crate::veth::sh;

/// ERF bytes of a record for a frame of `len` bytes (header 16 + 2 pad).
const ERF_OVERHEAD: u64 = 18;
const FILLER_SRC: [u8; 4] = [192, 0, 2, 1];
const FILLER_DST: [u8; 4] = [192, 0, 2, 2];
const FILLER_SECONDS: u64 = 12;
const FILLER_PPS: u64 = 200;

/// xorshift64*: the traffic is a function of the seed.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        (((self.next() >> 11) as u128 * n as u128) >> 53) as u64
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Flow {
    pub client: [u8; 4],
    pub server: [u8; 4],
    pub cport: u16,
    pub sport: u16,
    pub proto: u8,
}

/// The flows (rank 0 most popular) and the Zipf CDF over them.
pub struct Model {
    pub flows: Vec<Flow>,
    cdf: Vec<f64>,
}

impl Model {
    pub fn new(seed: u64, n: usize) -> Model {
        let mut r = Rng::new(seed);
        let servers: Vec<[u8; 4]> = (0..2000u32)
            .map(|i| [172, 16, (i >> 8) as u8, i as u8])
            .collect();
        let flows = (0..n)
            .map(|_| {
                let c = r.next();
                let client = [10, (c >> 8) as u8, (c >> 16) as u8, (c >> 24) as u8 | 1];
                let server = servers[r.below(servers.len() as u64) as usize];
                let (sport, proto) = match r.below(20) {
                    0..=9 => (443, 6),
                    10..=13 => (80, 6),
                    14..=15 => (53, 17),
                    16 => (443, 17),
                    17 => (22, 6),
                    18 => (8080, 6),
                    _ => (1024 + r.below(60000) as u16, 17),
                };
                Flow {
                    client,
                    server,
                    cport: 1024 + r.below(64000) as u16,
                    sport,
                    proto,
                }
            })
            .collect();
        let mut cdf = Vec::with_capacity(n);
        let mut sum = 0.0;
        for k in 1..=n {
            sum += 1.0 / k as f64;
            cdf.push(sum);
        }
        for c in &mut cdf {
            *c /= sum;
        }
        Model { flows, cdf }
    }

    fn pick(&self, r: &mut Rng) -> usize {
        let u = r.unit();
        self.cdf
            .partition_point(|&c| c < u)
            .min(self.flows.len() - 1)
    }
}

/// A frame size like real traffic's mix.
fn frame_len(r: &mut Rng) -> usize {
    match r.below(100) {
        0..=44 => 66 + r.below(35) as usize,
        45..=59 => 100 + r.below(501) as usize,
        _ => 1514,
    }
}

/// Ethernet + IPv4 + TCP/UDP header for `f` in direction `up` (client to
/// server), `len` bytes in all, payload random.
fn build(buf: &mut Vec<u8>, f: &Flow, up: bool, len: usize, r: &mut Rng) {
    buf.clear();
    buf.extend_from_slice(&[0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00]);
    let (src, dst, sp, dp) = if up {
        (f.client, f.server, f.cport, f.sport)
    } else {
        (f.server, f.client, f.sport, f.cport)
    };
    let ip_len = (len - 14) as u16;
    buf.extend_from_slice(&[0x45, 0]);
    buf.extend_from_slice(&ip_len.to_be_bytes());
    buf.extend_from_slice(&[0, 0, 0x40, 0, 64, f.proto, 0, 0]);
    buf.extend_from_slice(&src);
    buf.extend_from_slice(&dst);
    let sum = ipv4_checksum(&buf[14..34]);
    buf[24..26].copy_from_slice(&sum.to_be_bytes());
    buf.extend_from_slice(&sp.to_be_bytes());
    buf.extend_from_slice(&dp.to_be_bytes());
    if f.proto == 6 {
        buf.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
    } else {
        buf.extend_from_slice(&((len - 34) as u16).to_be_bytes());
        buf.extend_from_slice(&[0, 0]);
    }
    while buf.len() + 8 <= len {
        buf.extend_from_slice(&r.next().to_le_bytes());
    }
    while buf.len() < len {
        buf.push(r.next() as u8);
    }
}

fn ipv4_checksum(h: &[u8]) -> u16 {
    let mut s: u32 = h
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// `bench query-send IFACE SEED FLOWS BYTES PPS`: the sender, run inside the
/// namespace. Prints `sent FRAMES ERF_BYTES FIRST_NS LAST_NS` and then
/// trickles filler for 12 s.
pub fn send_main(args: Vec<String>) -> i32 {
    let num = |i: usize, what: &str| -> Result<u64, String> {
        args.get(i)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("query-send: argument {i} ({what}) must be a number"))
    };
    let run = || -> Result<(), String> {
        let iface = args.first().ok_or("query-send: IFACE missing")?;
        let (seed, flows, bytes, pps) = (
            num(1, "SEED")?,
            num(2, "FLOWS")?,
            num(3, "BYTES")?,
            num(4, "PPS")?.max(1),
        );
        let model = Model::new(seed, flows as usize);
        let mut tx = PacketTx::open(iface, false).map_err(|e| format!("{iface}: {e}"))?;
        let mut r = Rng::new(seed ^ 0x5EED);
        let mut bufs: Vec<Vec<u8>> = (0..32).map(|_| Vec::with_capacity(1514)).collect();
        let (mut frames, mut erf) = (0u64, 0u64);
        let t0 = Instant::now();
        let wall0 = now_ns();
        while erf < bytes {
            for b in bufs.iter_mut() {
                let f = &model.flows[model.pick(&mut r)];
                let len = frame_len(&mut r);
                let up = r.below(2) == 0;
                build(b, f, up, len, &mut r);
            }
            let refs: Vec<&[u8]> = bufs.iter().map(|b| b.as_slice()).collect();
            let mut off = 0;
            let mut tries = 0;
            while off < refs.len() {
                match tx.send(&refs[off..]) {
                    Ok(n) => off += n,
                    Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {}
                    Err(e) => return Err(format!("send: {e}")),
                }
                tries += 1;
                if tries > 100_000 {
                    return Err("send: the interface takes no frames".into());
                }
                if off < refs.len() {
                    std::thread::sleep(Duration::from_micros(50));
                }
            }
            for b in &bufs {
                frames += 1;
                erf += b.len() as u64 + ERF_OVERHEAD;
            }
            // Pace: never ahead of `pps`.
            let due = Duration::from_secs_f64(frames as f64 / pps as f64);
            if let Some(w) = due.checked_sub(t0.elapsed()) {
                std::thread::sleep(w);
            }
        }
        let wall1 = now_ns();
        println!("sent {frames} {erf} {wall0} {wall1}");
        let _ = std::io::stdout().flush();
        let filler = Flow {
            client: FILLER_SRC,
            server: FILLER_DST,
            cport: 9,
            sport: 9,
            proto: 17,
        };
        let mut b = Vec::new();
        for _ in 0..FILLER_SECONDS * FILLER_PPS {
            build(&mut b, &filler, true, 100, &mut r);
            let _ = tx.send(&[b.as_slice()]);
            std::thread::sleep(Duration::from_micros(1_000_000 / FILLER_PPS));
        }
        Ok(())
    };
    match run() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("bench: {e}");
            1
        }
    }
}

/// `bench query-pcap OUT SEED FLOWS BYTES PPS`: the same traffic as a
/// nanosecond pcap file (times `1/PPS` apart from 2026-12-02T00:00:00Z), to
/// measure the index on it without a namespace.
pub fn pcap_main(args: Vec<String>) -> i32 {
    let num = |i: usize| -> Option<u64> { args.get(i).and_then(|s| s.parse().ok()) };
    let (Some(out), Some(seed), Some(flows), Some(bytes), Some(pps)) =
        (args.first(), num(1), num(2), num(3), num(4))
    else {
        eprintln!("usage: bench query-pcap OUT SEED FLOWS BYTES PPS");
        return 2;
    };
    let run = || -> std::io::Result<u64> {
        let model = Model::new(seed, flows.max(1) as usize);
        let mut r = Rng::new(seed ^ 0x5EED);
        let mut w = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(out)?);
        w.write_all(&[0x4d, 0x3c, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0])?;
        w.write_all(&[0xff, 0xff, 0, 0, 1, 0, 0, 0])?;
        let (mut erf, mut n) = (0u64, 0u64);
        let mut b = Vec::with_capacity(1514);
        let t0 = 1_796_169_600_000_000_000u64;
        while erf < bytes {
            let f = &model.flows[model.pick(&mut r)];
            let len = frame_len(&mut r);
            let up = r.below(2) == 0;
            build(&mut b, f, up, len, &mut r);
            let ts = t0 + n * 1_000_000_000 / pps.max(1);
            w.write_all(&((ts / 1_000_000_000) as u32).to_le_bytes())?;
            w.write_all(&((ts % 1_000_000_000) as u32).to_le_bytes())?;
            w.write_all(&(b.len() as u32).to_le_bytes())?;
            w.write_all(&(b.len() as u32).to_le_bytes())?;
            w.write_all(&b)?;
            erf += b.len() as u64 + ERF_OVERHEAD;
            n += 1;
        }
        w.flush()?;
        Ok(n)
    };
    match run() {
        Ok(n) => {
            println!("{n} frames");
            0
        }
        Err(e) => {
            eprintln!("bench query-pcap: {out}: {e}");
            1
        }
    }
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The namespace, the processes started in it and the work directory;
/// all removed on drop (also when a panic unwinds).
struct Run {
    ns: String,
    children: Vec<Child>,
    dir: PathBuf,
    keep: bool,
}

impl Drop for Run {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for c in &mut self.children {
            while Instant::now() < deadline {
                if matches!(c.try_wait(), Ok(Some(_))) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        // stenographer's stenotype child runs as its own process in the
        // namespace: deleting the namespace does not stop it, so stop
        // every process still inside it (they are all ours: it is new).
        // Wait (at most 5 s) until they are gone: a stenotype still exiting
        // writes into the directory removed below.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let pids = sh(Command::new("ip").args(["netns", "pids", &self.ns])).unwrap_or_default();
            if pids.trim().is_empty() || Instant::now() > deadline {
                break;
            }
            for p in pids.split_whitespace() {
                let _ = Command::new("kill").args(["-KILL", p]).status();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
        if !self.keep {
            // Retried: gigabytes of capture must not be left in /tmp.
            for _ in 0..5 {
                match std::fs::remove_dir_all(&self.dir) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        std::thread::sleep(Duration::from_millis(500));
                    }
                    _ => break,
                }
            }
            if self.dir.exists() {
                eprintln!("bench query: could not remove {}", self.dir.display());
            }
        }
    }
}

/// Remove namespaces a killed run left behind (its process is gone).
fn remove_stale() {
    let Ok(o) = sh(Command::new("ip").args(["netns", "list"])) else {
        return;
    };
    for l in o.lines() {
        let name = l.split_whitespace().next().unwrap_or("");
        if let Some(pid) = name.strip_prefix("lcq-")
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            if let Ok(pids) = sh(Command::new("ip").args(["netns", "pids", name])) {
                for p in pids.split_whitespace() {
                    let _ = Command::new("kill").args(["-KILL", p]).status();
                }
            }
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

/// Frames in a pcap file (either byte order; 0 for a missing file).
fn pcap_frames(path: &Path) -> u64 {
    let Ok(f) = std::fs::File::open(path) else {
        return 0;
    };
    let mut r = std::io::BufReader::with_capacity(1 << 20, f);
    let mut h = [0u8; 24];
    if r.read_exact(&mut h).is_err() {
        return 0;
    }
    let le = matches!(h[..4], [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1]);
    let mut n = 0;
    let mut rec = [0u8; 16];
    let mut skip = vec![0u8; 1 << 16];
    while r.read_exact(&mut rec).is_ok() {
        let b = [rec[8], rec[9], rec[10], rec[11]];
        let incl = if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        } as usize;
        if incl > skip.len() {
            skip.resize(incl, 0);
        }
        if r.read_exact(&mut skip[..incl]).is_err() {
            break;
        }
        n += 1;
    }
    n
}

fn file_bytes(dir: &Path, pick: impl Fn(&str) -> bool) -> u64 {
    let mut n = 0;
    crate::veth::walk_files(dir, |name, m| {
        if pick(name) {
            n += m.len();
        }
    });
    n
}

fn ip(a: [u8; 4]) -> String {
    format!("{}.{}.{}.{}", a[0], a[1], a[2], a[3])
}

/// Bytes a process (all its threads) has read from storage so far.
fn proc_read_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("rchar: ").map(|v| v.trim().parse().ok()))
                .flatten()
        })
        .unwrap_or(0)
}

fn rfc3339(ns: u64) -> String {
    linecap_writer::names::utc_rfc3339(ns)
        .split('.')
        .next()
        .unwrap_or("")
        .to_string()
        + "Z"
}

struct Query {
    name: &'static str,
    window: &'static str,
    /// tcpdump / linecap expression.
    expr: String,
    /// stenographer's query (explicit `and`s, its time terms).
    steno: String,
    after_ns: Option<u64>,
    before_ns: Option<u64>,
}

pub fn suite(o: &Opts) -> Vec<serde_json::Value> {
    match run(o) {
        Ok(rows) => rows,
        Err(e) => {
            eprintln!("bench query: FAILED: {e}");
            vec![serde_json::json!({"suite": "query", "error": e})]
        }
    }
}

fn run(o: &Opts) -> Result<Vec<serde_json::Value>, String> {
    if sh(Command::new("id").arg("-u"))?.trim() != "0" {
        return Err("SKIPPED: needs root (network namespace, AF_XDP, stenographer)".into());
    }
    for tool in [
        "stenographer",
        "stenotype",
        "stenoread",
        "stenokeys",
        "jq",
        "tcpdump",
    ] {
        if sh(Command::new("sh").args(["-c", &format!("command -v {tool}")])).is_err() {
            return Err(format!(
                "{tool} is not installed (.ci/setup installs stenographer, stenographer-client, jq, tcpdump)"
            ));
        }
    }
    remove_stale();
    let linecap = crate::linecap_bin()?;
    let bench = std::env::current_exe().map_err(|e| e.to_string())?;
    let pid = std::process::id();
    let dir = std::env::temp_dir().join(format!("lcq-{pid}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut run = Run {
        ns: format!("lcq-{pid}"),
        children: Vec::new(),
        dir: dir.clone(),
        keep: std::env::var_os("BENCH_QUERY_KEEP").is_some(),
    };
    let ns = run.ns.clone();
    sh(Command::new("ip").args(["netns", "add", &ns]))?;
    let nsx = |c: &mut Command| {
        c.args(["netns", "exec", &ns]);
    };
    for args in [
        vec!["link", "add", "vqA", "type", "veth", "peer", "name", "vqB"],
        vec!["link", "set", "vqA", "up"],
        vec!["link", "set", "vqB", "up"],
        vec!["link", "set", "lo", "up"],
    ] {
        sh(Command::new("ip").args(["-n", &ns]).args(&args))?;
    }
    let _ = sh(Command::new("ip")
        .args(["netns", "exec", &ns, "sysctl", "-qw"])
        .args([
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
        ]));

    // stenographer: config, keys (its own stenokeys), started as its user.
    let sd = dir.join("steno");
    for d in ["certs", "pkt", "idx", "tmp"] {
        std::fs::create_dir_all(sd.join(d)).map_err(|e| e.to_string())?;
    }
    let config = sd.join("config");
    let cfg = serde_json::json!({
        "Threads": [{"PacketsDirectory": sd.join("pkt"), "IndexDirectory": sd.join("idx"),
                     "MaxDirectoryFiles": 30000, "DiskFreePercentage": 1}],
        "StenotypePath": "/usr/sbin/stenotype",
        "Interface": "vqA",
        "Port": 19234,
        "Host": "127.0.0.1",
        "Flags": ["--seccomp=none", "--no_watchdogs", "--blocks=64", "--aiops=16",
                  "--fileage_sec=5", "--blockage_sec=1"],
        "CertPath": sd.join("certs"),
    });
    std::fs::write(&config, cfg.to_string()).map_err(|e| e.to_string())?;
    let t = Instant::now();
    sh(Command::new("stenokeys")
        .args(["stenographer", "stenographer"])
        .current_dir(sd.join("certs"))
        .env("STENOGRAPHER_CONFIG", &config))?;
    eprintln!(
        "query: stenokeys made the certificates in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    sh(Command::new("chown")
        .args(["-R", "stenographer:stenographer"])
        .arg(&sd))?;
    sh(Command::new("chmod").arg("755").arg(&dir))?;
    let mut c = Command::new("ip");
    nsx(&mut c);
    let steno = c
        .arg("env")
        .arg(format!("TMPDIR={}", sd.join("tmp").display()))
        .args([
            "setpriv",
            "--reuid=stenographer",
            "--regid=stenographer",
            "--init-groups",
        ])
        .arg("stenographer")
        .arg(format!("--config={}", config.display()))
        .arg("--syslog=false")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("stenographer.log")).map_err(|e| e.to_string())?)
        .spawn()
        .map_err(|e| format!("stenographer: {e}"))?;
    run.children.push(steno);

    // linecap on the other end.
    let cap = dir.join("cap");
    let file_bytes_max = (o.bytes / 4).clamp(4 << 20, 1 << 30);
    let mut c = Command::new("ip");
    nsx(&mut c);
    c.arg(&linecap)
        .args(["capture", "--source", "afxdp:vqB", "--xdp-mode", "generic"])
        .args(["--no-metrics", "-C"])
        .arg(format!("{}M", file_bytes_max >> 20))
        .arg("--out")
        .arg(&cap)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut lc = c.spawn().map_err(|e| format!("linecap: {e}"))?;
    let rx = crate::veth::output_lines(&mut lc);
    let lc_pid = lc.id();
    run.children.push(lc);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut said = Vec::new();
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(l) if l.contains("ready") => break,
            Ok(l) => said.push(l),
            Err(_) => return Err(format!("linecap did not start: {}", said.join(" | "))),
        }
    }
    // stenotype is started by stenographer; give it a moment to open its socket.
    std::thread::sleep(Duration::from_secs(3));

    // Send.
    let seed = 20;
    let model = Model::new(seed, o.query_flows);
    let mut c = Command::new("ip");
    nsx(&mut c);
    let t = Instant::now();
    let mut sender = c
        .arg(&bench)
        .args(["query-send", "vqA"])
        .args([
            seed.to_string(),
            o.query_flows.to_string(),
            o.bytes.to_string(),
            o.query_pps.to_string(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("bench query-send: {e}"))?;
    let mut line = String::new();
    if let Some(out) = sender.stdout.take() {
        let _ = std::io::BufReader::new(out).read_line(&mut line);
    }
    let send_s = t.elapsed().as_secs_f64();
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let [sent, sent_erf, first_ns, last_ns] = f[..] else {
        let _ = sender.wait();
        return Err(format!("the sender said {line:?}"));
    };
    eprintln!(
        "query: sent {sent} frames, {sent_erf} ERF bytes in {send_s:.1} s ({:.0} frames/s, {:.1} MB/s); filler for {FILLER_SECONDS} s",
        sent as f64 / send_s,
        sent_erf as f64 / send_s / 1e6
    );
    let st = sender.wait().map_err(|e| e.to_string())?;
    if !st.success() {
        return Err(format!("the sender failed: {st}"));
    }
    // Stop linecap (SIGINT: completes its files and writes their indexes).
    let _ = Command::new("kill")
        .args(["-INT", &lc_pid.to_string()])
        .status();
    if let Some(mut lc) = run.children.pop() {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(_)) = lc.try_wait() {
                break;
            }
            if Instant::now() > deadline {
                let _ = lc.kill();
                let _ = lc.wait();
                return Err("linecap did not stop within 60 s of SIGINT".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let accounting: Vec<String> = rx
        .try_iter()
        .filter(|l| l.contains("seen") || l.starts_with("total") || l.starts_with("q0"))
        .collect();
    eprintln!("query: linecap stopped: {}", accounting.join(" | "));

    // The flows to look for: the 5-tuple of the Zipf rank expected to carry
    // about 20 packets of those sent, and the client host of the rank
    // expected to carry about 100 (a connection and a host an analyst looks
    // for, not the heaviest flows, which are in every block).
    let h_n: f64 = (1..=model.flows.len()).map(|k| 1.0 / k as f64).sum();
    let rank = |pkts: f64| ((sent as f64 / (pkts * h_n)) as usize).clamp(1, model.flows.len());
    let f5 = model.flows[rank(20.0) - 1];
    let fh = model.flows[rank(100.0) - 1];
    eprintln!(
        "query: 5-tuple of Zipf rank {}, host of rank {} (of {})",
        rank(20.0),
        rank(100.0),
        model.flows.len()
    );
    let proto = if f5.proto == 6 { "tcp" } else { "udp" };
    let five = format!(
        "{proto} and host {} and host {} and port {} and port {}",
        ip(f5.client),
        ip(f5.server),
        f5.cport,
        f5.sport
    );
    let host = format!("host {}", ip(fh.client));
    let mid = first_ns / 2 + last_ns / 2;
    let (w0, w1) = (mid.saturating_sub(30_000_000_000), mid + 30_000_000_000);
    let steno_win = format!("after {} and before {}", rfc3339(w0), rfc3339(w1));
    let queries = vec![
        Query {
            name: "5-tuple",
            window: "everything",
            expr: five.clone(),
            steno: five.clone(),
            after_ns: None,
            before_ns: None,
        },
        Query {
            name: "5-tuple",
            window: "1 minute",
            expr: five.clone(),
            steno: format!("{five} and {steno_win}"),
            after_ns: Some(w0),
            before_ns: Some(w1),
        },
        Query {
            name: "host",
            window: "everything",
            expr: host.clone(),
            steno: host.clone(),
            after_ns: None,
            before_ns: None,
        },
        Query {
            name: "host",
            window: "1 minute",
            expr: host.clone(),
            steno: format!("{host} and {steno_win}"),
            after_ns: Some(w0),
            before_ns: Some(w1),
        },
    ];

    // Wait until stenographer answers the first query as linecap does (its
    // files complete only while the filler flows), at most 60 s.
    let out = dir.join("q.pcap");
    let lc_count = |q: &Query| -> Result<u64, String> {
        let mut c = Command::new(&linecap);
        c.arg("query").arg(&cap).args(["-w"]).arg(&out);
        window_args(&mut c, q);
        sh(c.arg(&q.expr))?;
        Ok(pcap_frames(&out))
    };
    let want = lc_count(&queries[0])?;
    let steno_read = |q: &str| -> Result<(), String> {
        let mut c = Command::new("ip");
        nsx(&mut c);
        sh(c.arg("env")
            .arg(format!("STENOGRAPHER_CONFIG={}", config.display()))
            .args(["stenoread", q, "-w"])
            .arg(&out))
        .map(|_| ())
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut got = 0;
    while Instant::now() < deadline {
        if steno_read(&queries[0].steno).is_ok() {
            got = pcap_frames(&out);
            if got >= want {
                break;
            }
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    eprintln!("query: stenographer answers the 5-tuple with {got} frames, linecap with {want}");
    let steno_pids = || -> Vec<u32> {
        sh(Command::new("ip").args(["netns", "pids", &ns]))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .filter(|&p| {
                std::fs::read_to_string(format!("/proc/{p}/comm"))
                    .is_ok_and(|c| c.trim() == "stenographer")
            })
            .collect()
    };

    // Sizes.
    let data = file_bytes(&cap, |n| n.ends_with(".erf.lz4") && !n.starts_with('.'));
    let idx = file_bytes(&cap, |n| n.ends_with(".idx"));
    let breakdown = sh(Command::new(&linecap).arg("index").arg(&cap)).unwrap_or_default();
    let steno_pkt = file_bytes(&sd.join("pkt"), |_| true);
    let steno_idx = file_bytes(&sd.join("idx"), |_| true);
    eprintln!(
        "query: linecap data {data} B (ERF sent {sent_erf} B), index {idx} B = {:.3} % of the data file bytes; stenographer packets {steno_pkt} B, index {steno_idx} B = {:.3} %",
        100.0 * idx as f64 / data.max(1) as f64,
        100.0 * steno_idx as f64 / steno_pkt.max(1) as f64
    );
    for l in breakdown.lines() {
        eprintln!("query: {l}");
    }

    // The queries, `--runs` times each.
    let mut rows = Vec::new();
    println!(
        "{:<8} {:<10} {:<22} {:>10} {:>14} {:>10}",
        "query", "window", "tool", "median s", "bytes read", "frames"
    );
    for q in &queries {
        let mut counts = Vec::new();
        let mut per_tool = Vec::new();
        for tool in ["linecap query", "linecap read | tcpdump", "stenoread"] {
            let mut times = Vec::new();
            let mut bytes_read = 0u64;
            let mut frames = 0u64;
            for _ in 0..o.runs.max(1) {
                let _ = std::fs::remove_file(&out);
                let t = Instant::now();
                match tool {
                    "linecap query" => {
                        let mut c = Command::new(&linecap);
                        c.arg("query")
                            .arg(&cap)
                            .arg("--explain")
                            .arg("-w")
                            .arg(&out);
                        window_args(&mut c, q);
                        let o = c.arg(&q.expr).output().map_err(|e| e.to_string())?;
                        let err = String::from_utf8_lossy(&o.stderr);
                        bytes_read = explain_bytes(&err);
                        if !o.status.success() {
                            return Err(format!("linecap query: {err}"));
                        }
                    }
                    "linecap read | tcpdump" => {
                        let mut c = Command::new(&linecap);
                        c.arg("read").arg(&cap).args(["-w", "-"]);
                        window_args(&mut c, q);
                        let mut rd = c
                            .stdout(Stdio::piped())
                            .spawn()
                            .map_err(|e| e.to_string())?;
                        let st = Command::new("tcpdump")
                            .args(["-r", "-", "-w"])
                            .arg(&out)
                            .arg(&q.expr)
                            .stdin(rd.stdout.take().ok_or("no pipe")?)
                            .stderr(Stdio::null())
                            .status()
                            .map_err(|e| e.to_string())?;
                        let _ = rd.wait();
                        if !st.success() {
                            return Err(format!("tcpdump: {st}"));
                        }
                        bytes_read = data;
                    }
                    _ => {
                        let pids = steno_pids();
                        let before: u64 = pids.iter().map(|&p| proc_read_bytes(p)).sum();
                        steno_read(&q.steno)?;
                        let after: u64 = pids.iter().map(|&p| proc_read_bytes(p)).sum();
                        bytes_read = after.saturating_sub(before);
                    }
                }
                times.push(t.elapsed().as_secs_f64());
                frames = pcap_frames(&out);
            }
            let med = crate::median(times.clone());
            println!(
                "{:<8} {:<10} {:<22} {:>10.4} {:>14} {:>10}",
                q.name, q.window, tool, med, bytes_read, frames
            );
            counts.push((tool, frames));
            per_tool.push((tool, med, bytes_read, frames, times));
        }
        let agree = counts.iter().all(|(_, n)| *n == counts[0].1);
        if !agree {
            println!(
                "!!! MISMATCH: {} over {}: frames {:?}",
                q.name, q.window, counts
            );
        }
        let scan = per_tool[1].1;
        let steno_t = per_tool[2].1;
        let lq = per_tool[0].1;
        println!(
            "    linecap query is {:.1}x faster than the full scan, {:.1}x faster than stenoread",
            scan / lq.max(1e-9),
            steno_t / lq.max(1e-9)
        );
        for (tool, med, bytes_read, frames, times) in per_tool {
            rows.push(serde_json::json!({
                "query": q.name, "window": q.window, "expr": q.expr, "steno_query": q.steno,
                "tool": tool, "median_s": med, "runs_s": times, "bytes_read": bytes_read,
                "frames": frames, "counts_agree": agree,
                "speedup_vs_scan": scan / lq.max(1e-9), "speedup_vs_steno": steno_t / lq.max(1e-9),
            }));
        }
    }
    rows.push(serde_json::json!({
        "summary": true, "sent_frames": sent, "sent_erf_bytes": sent_erf,
        "send_seconds": send_s, "send_pps": sent as f64 / send_s,
        "linecap_data_bytes": data, "linecap_index_bytes": idx,
        "linecap_index_pct_of_data": 100.0 * idx as f64 / data.max(1) as f64,
        "linecap_index_pct_of_erf": 100.0 * idx as f64 / sent_erf.max(1) as f64,
        "linecap_index_breakdown": breakdown.trim(),
        "linecap_accounting": accounting,
        "steno_packet_bytes": steno_pkt, "steno_index_bytes": steno_idx,
        "flows": o.query_flows, "pps": o.query_pps, "bytes": o.bytes,
    }));
    drop(run);
    Ok(rows)
}

fn window_args(c: &mut Command, q: &Query) {
    if let Some(a) = q.after_ns {
        c.arg("--after")
            .arg(format!("{}.{:09}", a / 1_000_000_000, a % 1_000_000_000));
    }
    if let Some(b) = q.before_ns {
        c.arg("--before")
            .arg(format!("{}.{:09}", b / 1_000_000_000, b % 1_000_000_000));
    }
}

/// The bytes figure of `--explain`'s `read:` line.
fn explain_bytes(err: &str) -> u64 {
    err.lines()
        .filter(|l| l.contains("read:"))
        .flat_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (1..w.len())
                .filter(|&i| w[i].starts_with("bytes"))
                .filter_map(|i| w[i - 1].replace(',', "").parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .next()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_is_a_function_of_the_seed_and_zipf_skewed() {
        let a = Model::new(7, 1000);
        let b = Model::new(7, 1000);
        assert_eq!(a.flows[10].client, b.flows[10].client);
        let mut r = Rng::new(1);
        let mut top = 0;
        for _ in 0..10_000 {
            if a.pick(&mut r) < 10 {
                top += 1;
            }
        }
        // H(10)/H(1000) = 2.93/7.49: about 39 % of the picks.
        assert!((3000..5000).contains(&top), "{top}");
        let mut f = Vec::new();
        build(&mut f, &a.flows[0], true, 1514, &mut r);
        assert_eq!(f.len(), 1514);
        assert_eq!(ipv4_checksum(&f[14..34]), 0);
    }
}

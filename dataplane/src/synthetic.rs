//! An in-memory source of Ethernet/IPv4/UDP frames, for benchmarks and tests.
//!
//! One template frame is built at start-up; per frame only the flow fields
//! (source address and port), the IPv4 checksum and a 64-bit sequence number
//! in the payload are patched in place, so the source costs a few stores per
//! frame and the benchmark measures the worker, not the generator.
//! Timestamps: one clock read per burst, shared by the burst's frames.

use crate::clock::Clock;
use crate::source::{Frame, FrameSink, RxQueue, RxStatus, SourceDrops};

/// Smallest frame: Ethernet (14) + IPv4 (20) + UDP (8) + sequence number (8).
pub const FRAME_MIN: usize = 50;
/// Largest frame the synthetic source builds.
pub const FRAME_MAX: usize = 9018;

const IP_OFF: usize = 14;
const UDP_OFF: usize = IP_OFF + 20;
const SEQ_OFF: usize = UDP_OFF + 8;

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyntheticConfig {
    /// Captured frame length in bytes (FCS excluded), FRAME_MIN..=FRAME_MAX.
    pub frame_len: usize,
    /// Number of distinct flows, cycled through in order (at least 1).
    pub flows: u32,
    /// Frames to produce; `None` for no end.
    pub count: Option<u64>,
    /// Frames per second to pace to; `None` for as fast as the worker takes them.
    pub pps: Option<u64>,
}

/// The synthetic source.
pub struct SyntheticSource<C: Clock> {
    cfg: SyntheticConfig,
    frame: Vec<u8>,
    base_checksum: u16,
    sent: u64,
    clock: C,
    /// Clock reading at the first poll (pacing).
    started_ns: Option<u64>,
}

impl<C: Clock> SyntheticSource<C> {
    /// Build the template. Errors name the bad field.
    pub fn new(cfg: SyntheticConfig, clock: C) -> Result<Self, String> {
        if !(FRAME_MIN..=FRAME_MAX).contains(&cfg.frame_len) {
            return Err(format!(
                "synthetic frame length must be {FRAME_MIN}..={FRAME_MAX}, got {}",
                cfg.frame_len
            ));
        }
        if cfg.flows == 0 {
            return Err("synthetic flows must be at least 1".into());
        }
        let len = cfg.frame_len;
        let mut f = vec![0u8; len];
        f[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x02]); // dst, locally administered
        f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x01]); // src
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        let ip_len = (len - IP_OFF) as u16;
        let ip = &mut f[IP_OFF..UDP_OFF];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
        ip[6] = 0x40; // DF
        ip[8] = 64; // TTL
        ip[9] = 17; // UDP
        ip[12..16].copy_from_slice(&[10, 0, 0, 0]);
        ip[16..20].copy_from_slice(&[10, 255, 0, 1]);
        let udp_len = (len - UDP_OFF) as u16;
        f[UDP_OFF + 2..UDP_OFF + 4].copy_from_slice(&4789u16.to_be_bytes());
        f[UDP_OFF + 4..UDP_OFF + 6].copy_from_slice(&udp_len.to_be_bytes());
        // UDP checksum 0 = not computed (allowed for IPv4).
        let base_checksum = ipv4_checksum_partial(&f[IP_OFF..UDP_OFF]);
        Ok(SyntheticSource {
            cfg,
            frame: f,
            base_checksum,
            sent: 0,
            clock,
            started_ns: None,
        })
    }

    /// Frames produced so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    #[inline(always)]
    fn patch(&mut self, seq: u64) {
        let flow = (seq % self.cfg.flows as u64) as u32;
        // Source 10.a.b.c from the flow's high bits, port from the low 16.
        let addr = [
            10,
            (flow >> 24) as u8 & 0x7f,
            (flow >> 16) as u8,
            (flow >> 8) as u8,
        ];
        let port = 1024u16.wrapping_add(flow as u16);
        let f = &mut self.frame;
        f[IP_OFF + 12..IP_OFF + 16].copy_from_slice(&addr);
        f[UDP_OFF..UDP_OFF + 2].copy_from_slice(&port.to_be_bytes());
        f[SEQ_OFF..SEQ_OFF + 8].copy_from_slice(&seq.to_be_bytes());
        // Incremental checksum: add the patched address words to the base sum.
        let mut sum = self.base_checksum as u32;
        sum += u16::from_be_bytes([addr[0], addr[1]]) as u32;
        sum += u16::from_be_bytes([addr[2], addr[3]]) as u32;
        sum -= 10 << 8; // the base already holds 10.0.0.0
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        f[IP_OFF + 10..IP_OFF + 12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    }
}

/// One's-complement sum of the header with its checksum field as is.
fn ipv4_checksum_partial(h: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for w in h.chunks(2) {
        sum += u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]) as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

impl<C: Clock> RxQueue for SyntheticSource<C> {
    #[inline]
    fn poll_burst<S: FrameSink>(&mut self, max: usize, sink: &mut S) -> RxStatus {
        let left = self.cfg.count.map_or(u64::MAX, |c| c - self.sent);
        if left == 0 {
            return RxStatus::Ended;
        }
        let ts_ns = self.clock.now_ns();
        let mut n = (max as u64).min(left);
        if let Some(pps) = self.cfg.pps {
            let start = *self.started_ns.get_or_insert(ts_ns);
            let due =
                (ts_ns.saturating_sub(start) as u128 * pps as u128 / 1_000_000_000) as u64 + 1;
            n = n.min(due.saturating_sub(self.sent));
            if n == 0 {
                return RxStatus::Idle;
            }
        }
        let n = n as usize;
        let wire_len = self.frame.len() as u32;
        for _ in 0..n {
            let seq = self.sent;
            self.patch(seq);
            self.sent += 1;
            sink.frame(Frame {
                data: &self.frame,
                wire_len,
                ts_ns,
            });
        }
        RxStatus::Frames(n)
    }

    fn drops(&self) -> SourceDrops {
        SourceDrops::default()
    }

    fn clock_source(&self) -> &'static str {
        "synthetic"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    struct Collect(Vec<Vec<u8>>);
    impl FrameSink for Collect {
        fn frame(&mut self, f: Frame<'_>) {
            assert_eq!(f.ts_ns, 7);
            self.0.push(f.data.to_vec());
        }
    }

    #[test]
    fn produces_count_frames_with_valid_checksums_and_sequence() {
        let cfg = SyntheticConfig {
            frame_len: 64,
            flows: 3,
            count: Some(10),
            pps: None,
        };
        let mut s = SyntheticSource::new(cfg, ManualClock::new(7)).unwrap();
        let mut sink = Collect(Vec::new());
        assert_eq!(s.poll_burst(8, &mut sink), RxStatus::Frames(8));
        assert_eq!(s.poll_burst(8, &mut sink), RxStatus::Frames(2));
        assert_eq!(s.poll_burst(8, &mut sink), RxStatus::Ended);
        assert_eq!(sink.0.len(), 10);
        for (i, f) in sink.0.iter().enumerate() {
            assert_eq!(f.len(), 64);
            assert_eq!(
                ipv4_checksum_partial(&f[IP_OFF..UDP_OFF]),
                0xffff,
                "frame {i}"
            );
            assert_eq!(
                u64::from_be_bytes(f[SEQ_OFF..SEQ_OFF + 8].try_into().unwrap()),
                i as u64
            );
            let port = u16::from_be_bytes([f[UDP_OFF], f[UDP_OFF + 1]]);
            assert_eq!(port, 1024 + (i as u16 % 3));
        }
    }

    #[test]
    fn many_flows_get_distinct_addresses_and_valid_checksums() {
        let cfg = SyntheticConfig {
            frame_len: 60,
            flows: 1 << 20,
            count: None,
            pps: None,
        };
        let mut s = SyntheticSource::new(cfg, ManualClock::new(7)).unwrap();
        for seq in [0u64, 1, 255, 65_535, 65_536, 1_000_003, (1 << 20) - 1] {
            s.patch(seq);
            assert_eq!(
                ipv4_checksum_partial(&s.frame[IP_OFF..UDP_OFF]),
                0xffff,
                "{seq}"
            );
        }
    }

    #[test]
    fn pacing_follows_the_clock() {
        let clock = ManualClock::new(1_000_000_000);
        let cfg = SyntheticConfig {
            frame_len: 64,
            flows: 1,
            count: None,
            pps: Some(1000),
        };
        let mut s = SyntheticSource::new(cfg, &clock).unwrap();
        struct Count(u64);
        impl FrameSink for Count {
            fn frame(&mut self, _: Frame<'_>) {
                self.0 += 1;
            }
        }
        let mut sink = Count(0);
        assert_eq!(s.poll_burst(64, &mut sink), RxStatus::Frames(1));
        assert_eq!(s.poll_burst(64, &mut sink), RxStatus::Idle);
        clock.set(1_010_000_000); // 10 ms later: 10 more are due
        assert_eq!(s.poll_burst(64, &mut sink), RxStatus::Frames(10));
        clock.set(2_000_000_000); // 1 s after start: 1001 in all, bursts of 64
        while s.poll_burst(64, &mut sink) != RxStatus::Idle {}
        assert_eq!(sink.0, 1001);
    }

    #[test]
    fn rejects_bad_config() {
        let c = ManualClock::new(0);
        let mut cfg = SyntheticConfig {
            frame_len: 10,
            flows: 1,
            count: None,
            pps: None,
        };
        assert!(SyntheticSource::new(cfg, &c).is_err());
        cfg.frame_len = 64;
        cfg.flows = 0;
        assert!(SyntheticSource::new(cfg, &c).is_err());
    }
}

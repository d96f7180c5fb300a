//! Capture files as receive queues: the reader side of `linecap-writer`
//! adapted to the dataplane's [`RxQueue`], so a trace goes through exactly the
//! pipeline a NIC queue does.
//!
//! A file can feed several queues (`--spread N`): each queue reads the whole
//! file and keeps the frames that fall to it, as RSS would spread a link over
//! NIC queues. Frames that another queue takes are not this queue's and are
//! not counted by it; frames no queue can take (non-Ethernet records) are
//! counted once, by queue 0 of the file.

use linecap_dataplane::source::{Frame, FrameSink, RxQueue, RxStatus, SourceDrops};
use linecap_reader::read::{CaptureReader, Packet};
use std::path::Path;

/// One queue's share of a capture file.
pub struct FileSource {
    reader: CaptureReader,
    pkt: Packet,
    spread: u32,
    index: u32,
    seen: u64,
    ended: bool,
    error: Option<String>,
}

impl FileSource {
    /// Open `path` as share `index` of `spread` queues.
    pub fn open(path: &Path, spread: u32, index: u32) -> anyhow::Result<Self> {
        anyhow::ensure!(spread >= 1 && index < spread, "bad spread {index}/{spread}");
        Ok(FileSource {
            reader: CaptureReader::open(path)?,
            pkt: Packet::default(),
            spread,
            index,
            seen: 0,
            ended: false,
            error: None,
        })
    }

    /// Whether this frame belongs to this queue.
    fn mine(&self) -> bool {
        self.spread == 1 || queue_of(&self.pkt.data, self.seen, self.spread) == self.index
    }

    /// Bytes at the end of the file that formed no complete record.
    pub fn truncated_bytes(&self) -> u64 {
        self.reader.stats().truncated_bytes
    }
}

/// Which of `spread` queues a frame goes to: by symmetric flow hash so both
/// directions of a conversation meet on one queue (as a symmetric RSS key
/// does); frames without a flow key go by position.
pub fn queue_of(frame: &[u8], position: u64, spread: u32) -> u32 {
    match linecap_wire::flow::parse_frame(frame) {
        linecap_wire::flow::Parsed::Ip(info) => {
            linecap_wire::flow::symmetric_hash(&info.key) % spread
        }
        _ => (position % spread as u64) as u32,
    }
}

impl RxQueue for FileSource {
    fn poll_burst<S: FrameSink>(&mut self, max: usize, sink: &mut S) -> RxStatus {
        if self.ended {
            return RxStatus::Ended;
        }
        let mut n = 0;
        while n < max {
            match self.reader.next(&mut self.pkt) {
                Ok(true) => {
                    let mine = self.mine();
                    self.seen += 1;
                    if mine {
                        sink.frame(Frame {
                            data: &self.pkt.data,
                            wire_len: self.pkt.wire_len,
                            ts_ns: self.pkt.ts_ns,
                        });
                        n += 1;
                    }
                }
                Ok(false) => {
                    self.ended = true;
                    break;
                }
                Err(e) => {
                    self.error = Some(e.to_string());
                    self.ended = true;
                    break;
                }
            }
        }
        if n > 0 {
            RxStatus::Frames(n)
        } else {
            RxStatus::Ended
        }
    }

    /// issue 14: timestamps are the input file's own.
    fn clock_source(&self) -> &'static str {
        "file"
    }

    fn drops(&self) -> SourceDrops {
        SourceDrops {
            unsupported: if self.index == 0 {
                self.reader.stats().skipped_non_ethernet
            } else {
                0
            },
            nic: 0,
        }
    }

    fn error(&self) -> Option<String> {
        self.error.clone()
    }
}

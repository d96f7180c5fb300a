//! The generator's two transmit paths behind one type.

use std::io;
use std::time::Duration;

use super::afpacket::PacketTx;
use super::xsk_tx::XskTx;

/// Which socket sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TxKind {
    /// AF_PACKET, `sendmmsg` batches, `PACKET_QDISC_BYPASS`.
    Packet,
    /// AF_XDP TX ring (copy mode), one queue per thread.
    Xdp,
}

impl TxKind {
    pub fn name(self) -> &'static str {
        match self {
            TxKind::Packet => "af_packet sendmmsg+qdisc_bypass",
            TxKind::Xdp => "af_xdp tx (copy)",
        }
    }
}

/// One thread's socket.
pub enum TxSocket {
    Packet(PacketTx),
    Xdp(Box<XskTx>),
}

impl TxSocket {
    /// Open thread `thread`'s socket (AF_XDP: on queue `thread`).
    pub fn open(kind: TxKind, iface: &str, thread: u32) -> io::Result<Self> {
        Ok(match kind {
            TxKind::Packet => TxSocket::Packet(PacketTx::open(iface, true)?),
            TxKind::Xdp => TxSocket::Xdp(Box::new(XskTx::open(iface, thread)?)),
        })
    }

    /// Frames the kernel took, in order, from the front of `frames`.
    #[inline]
    pub fn send(&mut self, frames: &[&[u8]]) -> io::Result<usize> {
        match self {
            TxSocket::Packet(s) => s.send(frames),
            TxSocket::Xdp(s) => s.send(frames),
        }
    }

    /// Wait (bounded) until queued frames have left.
    pub fn flush(&mut self, timeout: Duration) {
        if let TxSocket::Xdp(s) = self {
            let _ = s.flush(timeout);
        }
    }
}

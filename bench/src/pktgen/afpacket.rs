//! AF_PACKET transmit: raw Ethernet frames handed to one interface in
//! batches of `sendmmsg`, with `PACKET_QDISC_BYPASS` (the frame goes
//! straight to the driver's transmit, as pktgen and trafgen do).
//!
//! This is the transmit side of the packet generator in `bench/`; the
//! capture path never sends. The socket is bound with protocol 0, so it
//! receives nothing and adds no work to the receive path.
//!
//! `unsafe` here: the socket, bind and `sendmmsg` calls (each with a
//! `// SAFETY:` line).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Most frames one `sendmmsg` call takes (the kernel's `UIO_MAXIOV`).
pub const BATCH_MAX: usize = 1024;

/// One AF_PACKET socket bound to one interface for sending.
pub struct PacketTx {
    fd: OwnedFd,
    msgs: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
}

// SAFETY: the raw pointers in `msgs`/`iovs` are rewritten from borrowed
// slices at the start of every `send` and never dereferenced outside it, so
// moving the socket to another thread carries no dangling use.
unsafe impl Send for PacketTx {}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

impl PacketTx {
    /// A sending socket on `ifname` (in the calling thread's network
    /// namespace), with the qdisc bypassed when `qdisc_bypass`.
    pub fn open(ifname: &str, qdisc_bypass: bool) -> io::Result<Self> {
        let ifindex = linecap_dataplane::afxdp::sys::ifindex(ifname)?;
        let ctx = |what: &'static str| {
            let ifn = ifname.to_string();
            move |e: io::Error| io::Error::new(e.kind(), format!("AF_PACKET {ifn}: {what}: {e}"))
        };
        // SAFETY: plain syscall with constant arguments; protocol 0 means the
        // socket receives nothing.
        let fd =
            cvt(unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) })
                .map_err(ctx("socket (needs CAP_NET_RAW)"))?;
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        if qdisc_bypass {
            let one: libc::c_int = 1;
            // SAFETY: `one` is a live c_int of the size passed; the kernel only reads it.
            cvt(unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_PACKET,
                    libc::PACKET_QDISC_BYPASS,
                    (&one as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            })
            .map_err(ctx("PACKET_QDISC_BYPASS"))?;
        }
        // SAFETY: an all-zero sockaddr_ll is a valid value of the plain-integer struct.
        let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sa.sll_family = libc::AF_PACKET as u16;
        sa.sll_protocol = 0;
        sa.sll_ifindex = ifindex as i32;
        // SAFETY: `sa` is a valid sockaddr_ll of the length passed.
        cvt(unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        })
        .map_err(ctx("bind"))?;
        // SAFETY: all-zero mmsghdr/iovec are valid (null pointers, zero lengths).
        let (msgs, iovs) = unsafe {
            (
                vec![std::mem::zeroed::<libc::mmsghdr>(); BATCH_MAX],
                vec![std::mem::zeroed::<libc::iovec>(); BATCH_MAX],
            )
        };
        Ok(PacketTx { fd, msgs, iovs })
    }

    /// Hand up to [`BATCH_MAX`] frames to the kernel in one call. Returns
    /// how many it took, in order; the rest (the driver's queue was full:
    /// `ENOBUFS`, or the call was interrupted) are for the caller to retry.
    /// An error only when the first frame is refused for another reason (a
    /// frame longer than the MTU allows: `EMSGSIZE`; the interface is down).
    pub fn send(&mut self, frames: &[&[u8]]) -> io::Result<usize> {
        let n = frames.len().min(BATCH_MAX);
        if n == 0 {
            return Ok(0);
        }
        for (i, f) in frames[..n].iter().enumerate() {
            self.iovs[i] = libc::iovec {
                iov_base: f.as_ptr() as *mut libc::c_void,
                iov_len: f.len(),
            };
            let h = &mut self.msgs[i].msg_hdr;
            h.msg_iov = &mut self.iovs[i];
            h.msg_iovlen = 1;
            self.msgs[i].msg_len = 0;
        }
        // SAFETY: `msgs[..n]` are initialised headers whose single iovec each
        // points at a live frame borrowed for the duration of this call (the
        // kernel only reads them); no name or control data.
        let r = unsafe {
            libc::sendmmsg(
                self.fd.as_raw_fd(),
                self.msgs.as_mut_ptr(),
                n as libc::c_uint,
                0,
            )
        };
        if r >= 0 {
            return Ok(r as usize);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ENOBUFS) | Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(0),
            Some(libc::EMSGSIZE) => Err(io::Error::new(
                e.kind(),
                format!(
                    "a {} B frame is longer than the interface's MTU allows (EMSGSIZE)",
                    frames[0].len()
                ),
            )),
            _ => Err(e),
        }
    }
}

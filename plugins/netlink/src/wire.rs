//! The transport: one NETLINK_ROUTE socket, a request, and its replies up to the ACK or
//! NLMSG_DONE. Replies are handed on as raw payloads so that one attribute the crate cannot
//! decode never loses a whole message (see `parse`).

use super::Netlink;
use netlink_packet_core::{
    parse_string, NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, NlasIterator, NLMSG_DONE, NLMSG_ERROR,
    NLMSG_NOOP, NLMSG_OVERRUN, NLM_F_ACK, NLM_F_ACK_TLVS, NLM_F_CAPPED, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use std::fmt;
use std::io;
use std::os::fd::AsRawFd;

/// Initial receive buffer; grown when the kernel announces a larger datagram.
const RECV_BUF_LEN: usize = 64 * 1024;
/// Asked of the kernel for the socket's receive queue, so that large dumps are not dropped.
const SOCK_RCVBUF: libc::c_int = 1024 * 1024;
const NLMSG_HDRLEN: usize = 16;
/// `NLMSGERR_ATTR_MSG`: the extended ACK's human-readable message.
const NLMSGERR_ATTR_MSG: u16 = 1;

/// Why an exchange with the kernel failed.
#[derive(Debug)]
pub enum NlError {
    /// The kernel answered with a negative errno, and maybe an extended-ACK message.
    Kernel { errno: i32, msg: Option<String> },
    /// The socket itself failed.
    Io(io::Error),
    /// The reply could not be understood.
    Protocol(String),
}

impl NlError {
    pub fn errno(&self) -> Option<i32> {
        match self {
            NlError::Kernel { errno, .. } => Some(*errno),
            NlError::Io(e) => e.raw_os_error(),
            NlError::Protocol(_) => None,
        }
    }
}

impl fmt::Display for NlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NlError::Kernel { errno, msg } => {
                write!(f, "{}", io::Error::from_raw_os_error(*errno))?;
                if let Some(msg) = msg {
                    write!(f, ": {msg}")?;
                }
                Ok(())
            }
            NlError::Io(e) => write!(f, "netlink socket: {e}"),
            NlError::Protocol(s) => write!(f, "netlink protocol: {s}"),
        }
    }
}

impl std::error::Error for NlError {}

impl From<&str> for NlError {
    fn from(s: &str) -> NlError {
        NlError::Protocol(s.to_string())
    }
}

impl From<String> for NlError {
    fn from(s: String) -> NlError {
        NlError::Protocol(s)
    }
}

impl From<io::Error> for NlError {
    fn from(e: io::Error) -> NlError {
        NlError::Io(e)
    }
}

impl Netlink {
    /// A bound NETLINK_ROUTE socket in the calling thread's namespace.
    pub(super) fn connect() -> io::Result<Netlink> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        let local = socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        // Best effort: older kernels lack these, and nothing depends on them.
        let _ = socket.set_ext_ack(true);
        let _ = socket.set_cap_ack(true);
        let _ = socket.set_rx_buf_sz(SOCK_RCVBUF);
        // Lets the kernel filter dumps by the header's fields (an address dump for one link
        // returns that link's addresses, not every address of every veth on the host).
        let _ = socket.set_netlink_get_strict_chk(true);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        Ok(Netlink { socket, seq: now.as_secs() as u32, port: local.port_number(), buf: vec![0; RECV_BUF_LEN] })
    }

    /// A request answered by an ACK (NLM_F_REQUEST | NLM_F_ACK | `extra_flags`).
    pub(super) fn ack(&mut self, msg: RouteNetlinkMessage, extra_flags: u16) -> Result<(), NlError> {
        self.exchange(msg, NLM_F_REQUEST | NLM_F_ACK | extra_flags, |_, _| {})
    }

    /// A request whose replies are wanted (a single GET), then the ACK.
    pub(super) fn query(&mut self, msg: RouteNetlinkMessage, each: impl FnMut(u16, &[u8])) -> Result<(), NlError> {
        self.exchange(msg, NLM_F_REQUEST | NLM_F_ACK, each)
    }

    /// A dump: every part of the multi-part reply, up to NLMSG_DONE.
    pub(super) fn dump(&mut self, msg: RouteNetlinkMessage, each: impl FnMut(u16, &[u8])) -> Result<(), NlError> {
        self.exchange(msg, NLM_F_REQUEST | NLM_F_DUMP, each)
    }

    /// Sends one message and hands every reply carrying its sequence number to `each`
    /// (message type, payload), until the ACK, an error, or NLMSG_DONE.
    fn exchange(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
        mut each: impl FnMut(u16, &[u8]),
    ) -> Result<(), NlError> {
        let (seq, out) = self.next_request(msg, flags);
        self.send(&out)?;

        loop {
            let len = self.recv()?;
            let mut off = 0;
            while off + NLMSG_HDRLEN <= len {
                let nb = NetlinkBuffer::new_checked(&self.buf[off..len])
                    .map_err(|e| NlError::Protocol(format!("malformed reply: {e}")))?;
                let msg_len = nb.length() as usize;
                off += (msg_len + 3) & !3;
                if nb.sequence_number() != seq || (nb.port_number() != self.port && nb.port_number() != 0) {
                    // A late answer to an earlier request that was given up on.
                    continue;
                }
                let payload = nb.payload();
                match nb.message_type() {
                    NLMSG_NOOP => {}
                    NLMSG_ERROR => {
                        let code =
                            read_i32(payload).ok_or_else(|| NlError::Protocol("truncated NLMSG_ERROR".into()))?;
                        if code == 0 {
                            return Ok(());
                        }
                        return Err(NlError::Kernel { errno: -code, msg: error_extack(nb.flags(), payload) });
                    }
                    NLMSG_DONE => {
                        // A dump that failed part-way reports it here.
                        let code = read_i32(payload).unwrap_or(0);
                        if code < 0 {
                            let msg = if nb.flags() & NLM_F_ACK_TLVS != 0 { extack_msg(&payload[4..]) } else { None };
                            return Err(NlError::Kernel { errno: -code, msg });
                        }
                        return Ok(());
                    }
                    NLMSG_OVERRUN => return Err(NlError::Protocol("NLMSG_OVERRUN: data lost".into())),
                    kind => each(kind, payload),
                }
            }
        }
    }

    /// Sends one request from a detached grandchild process and returns as soon as this
    /// socket, subscribed to the multicast `group`, receives a notification `done` accepts
    /// (message type, payload), or the kernel answers the request with an error.
    ///
    /// For requests whose effect is complete before the kernel's answer: unregistering a
    /// device ends, after the device is gone and announced, with an RCU barrier in the context
    /// of the process that asked (netdev_run_todo; 15-18 ms here), which the grandchild waits
    /// out instead of the caller. It shares this socket and closes nothing else, so the
    /// caller's other kernel objects (an nfnetlink socket whose release would wait for a grace
    /// period too) are released when it exits. Consumes the socket: notifications and the
    /// grandchild's late ACK must not reach a later request.
    pub(super) fn exchange_detached(
        mut self,
        msg: RouteNetlinkMessage,
        group: u32,
        mut done: impl FnMut(u16, &[u8]) -> bool,
    ) -> Result<(), NlError> {
        self.socket.add_membership(group).map_err(NlError::Io)?;
        set_receive_timeout(&self.socket, DETACHED_TIMEOUT).map_err(NlError::Io)?;
        let (seq, out) = self.next_request(msg, NLM_F_REQUEST | NLM_F_ACK);
        send_from_grandchild(self.socket.as_raw_fd(), &out).map_err(NlError::Io)?;

        loop {
            let len = match self.recv() {
                Err(NlError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Err(NlError::Protocol(format!("no answer within {} s", DETACHED_TIMEOUT.as_secs())))
                }
                other => other?,
            };
            let mut off = 0;
            while off + NLMSG_HDRLEN <= len {
                let nb = NetlinkBuffer::new_checked(&self.buf[off..len])
                    .map_err(|e| NlError::Protocol(format!("malformed reply: {e}")))?;
                off += (nb.length() as usize + 3) & !3;
                let ours = nb.sequence_number() == seq && nb.port_number() == self.port;
                match nb.message_type() {
                    NLMSG_ERROR if ours => {
                        let code =
                            read_i32(nb.payload()).ok_or_else(|| NlError::Protocol("truncated NLMSG_ERROR".into()))?;
                        if code == 0 {
                            return Ok(());
                        }
                        return Err(NlError::Kernel { errno: -code, msg: error_extack(nb.flags(), nb.payload()) });
                    }
                    kind if nb.sequence_number() == 0 && done(kind, nb.payload()) => return Ok(()),
                    _ => {}
                }
            }
        }
    }

    /// `msg` with the next sequence number and `flags`, serialized; and that number.
    fn next_request(&mut self, msg: RouteNetlinkMessage, flags: u16) -> (u32, Vec<u8>) {
        self.seq = self.seq.wrapping_add(1).max(1);
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        packet.finalize();
        let mut out = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut out);
        (self.seq, out)
    }

    fn send(&mut self, out: &[u8]) -> Result<(), NlError> {
        loop {
            match self.socket.send(out, 0) {
                Ok(n) if n == out.len() => return Ok(()),
                Ok(n) => return Err(NlError::Protocol(format!("short send: {n} of {} bytes", out.len()))),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(NlError::Io(e)),
            }
        }
    }

    /// Receives one datagram whole into `self.buf`, growing it when the kernel's is larger.
    fn recv(&mut self) -> Result<usize, NlError> {
        loop {
            // Peek first: a datagram larger than the buffer would otherwise be cut and lost.
            let mut probe: &mut [u8] = &mut self.buf[..];
            let size = match self.socket.recv(&mut probe, libc::MSG_PEEK | libc::MSG_TRUNC) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(NlError::Io(e)),
            };
            if size > self.buf.len() {
                self.buf.resize(size, 0);
            }
            let mut dst: &mut [u8] = &mut self.buf[..];
            match self.socket.recv(&mut dst, 0) {
                Ok(n) => return Ok(n.min(self.buf.len())),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(NlError::Io(e)),
            }
        }
    }
}

/// How long [`Netlink::exchange_detached`] waits for the kernel.
const DETACHED_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

fn set_receive_timeout(socket: &Socket, timeout: std::time::Duration) -> io::Result<()> {
    let tv = libc::timeval { tv_sec: timeout.as_secs() as libc::time_t, tv_usec: 0 };
    // SAFETY: SO_RCVTIMEO reads a timeval of the given size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sends `out` on `fd` from a grandchild that nobody waits for: the child forks it and exits
/// at once (reaped here), so the grandchild belongs to init (or the nearest subreaper) and
/// leaves no zombie behind. Between fork and exit both only make system calls, which is what
/// is safe in the child of a process that may have other threads. The grandchild closes
/// stdin, stdout and stderr first: a runtime reading our output to its end must not wait for
/// it.
fn send_from_grandchild(fd: std::os::fd::RawFd, out: &[u8]) -> io::Result<()> {
    // SAFETY: the children below call only async-signal-safe functions (fork, close, send,
    // _exit) on memory prepared before the fork.
    unsafe {
        match libc::fork() {
            -1 => Err(io::Error::last_os_error()),
            0 => {
                if libc::fork() == 0 {
                    for stdio in 0..3 {
                        libc::close(stdio);
                    }
                    libc::send(fd, out.as_ptr().cast(), out.len(), 0);
                }
                libc::_exit(0)
            }
            child => {
                let mut status = 0;
                while libc::waitpid(child, &mut status, 0) == -1 {
                    if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                        return Err(io::Error::last_os_error());
                    }
                }
                Ok(())
            }
        }
    }
}

fn read_i32(b: &[u8]) -> Option<i32> {
    Some(i32::from_ne_bytes(b.get(..4)?.try_into().ok()?))
}

/// The extended-ACK message of an NLMSG_ERROR: after the errno comes the request's header
/// (alone when NLM_F_CAPPED, else the whole request), then the TLVs.
fn error_extack(flags: u16, payload: &[u8]) -> Option<String> {
    if flags & NLM_F_ACK_TLVS == 0 {
        return None;
    }
    let request = payload.get(4..)?;
    let echoed = if flags & NLM_F_CAPPED != 0 {
        NLMSG_HDRLEN
    } else {
        u32::from_ne_bytes(request.get(..4)?.try_into().ok()?) as usize
    };
    extack_msg(request.get((echoed + 3) & !3..)?)
}

fn extack_msg(tlvs: &[u8]) -> Option<String> {
    for nla in NlasIterator::new(tlvs) {
        let nla = nla.ok()?;
        if nla.kind() == NLMSGERR_ATTR_MSG {
            return parse_string(nla.value()).ok().filter(|s| !s.is_empty());
        }
    }
    None
}

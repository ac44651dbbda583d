//! The one netlink transport, whatever the protocol: a socket bound in the calling thread's
//! namespace, requests sent as raw bytes, datagrams received whole and split into messages,
//! and one reader of the kernel's answers (ACK, errno, extended-ACK message). The rtnetlink
//! client ([`crate::Netlink`]) and berth-firewall's nfnetlink batches both go through it.

use netlink_packet_core::{
    parse_string, NlasIterator, NLA_TYPE_MASK, NLMSG_DONE, NLMSG_ERROR, NLMSG_NOOP, NLMSG_OVERRUN, NLM_F_ACK_TLVS, NLM_F_CAPPED,
};
use netlink_sys::{protocols, Socket, SocketAddr};
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, RawFd};

/// Initial receive buffer; grown when the kernel announces a larger datagram. Never zeroed:
/// only the pages the kernel writes are touched, so a plugin's memory is what it receives.
const RECV_BUF_LEN: usize = 64 * 1024;
/// Asked of the kernel for a route socket's receive queue, so that large dumps are not dropped.
const SOCK_RCVBUF: libc::c_int = 1024 * 1024;
/// A netlink message header's length (`struct nlmsghdr`).
pub const NLMSG_HDRLEN: usize = 16;
/// `NLMSGERR_ATTR_MSG`: the extended ACK's human-readable message.
const NLMSGERR_ATTR_MSG: u16 = 1;

/// The netlink protocols berth speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// NETLINK_ROUTE: links, addresses, routes.
    Route,
    /// NETLINK_NETFILTER: nf_tables batches.
    Netfilter,
}

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

/// A netlink socket of one protocol, connected to the kernel, with its receive buffer.
pub struct Transport {
    socket: Socket,
    /// Our netlink port id, to recognise the kernel's answers.
    port: u32,
    buf: Vec<u8>,
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transport").field("port", &self.port).finish()
    }
}

impl Transport {
    /// A bound socket in the calling thread's namespace. ACKs come without a copy of the
    /// request and errors with the kernel's message, where the kernel can.
    pub fn open(protocol: Protocol) -> io::Result<Transport> {
        let number = match protocol {
            Protocol::Route => protocols::NETLINK_ROUTE,
            Protocol::Netfilter => protocols::NETLINK_NETFILTER,
        };
        let mut socket = Socket::new(number)?;
        let local = socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        // Best effort: older kernels lack these, and nothing depends on them.
        let _ = socket.set_ext_ack(true);
        let _ = socket.set_cap_ack(true);
        if protocol == Protocol::Route {
            let _ = socket.set_rx_buf_sz(SOCK_RCVBUF);
            // Lets the kernel filter dumps by the header's fields (an address dump for one link
            // returns that link's addresses, not every address of every veth on the host).
            let _ = socket.set_netlink_get_strict_chk(true);
        }
        Ok(Transport { socket, port: local.port_number(), buf: Vec::with_capacity(RECV_BUF_LEN) })
    }

    /// Our netlink port id: the kernel's answers carry it.
    pub fn port(&self) -> u32 {
        self.port
    }

    /// Sends one datagram (a request, or a whole batch) whole.
    pub fn send(&self, bytes: &[u8]) -> Result<(), NlError> {
        loop {
            match self.socket.send(bytes, 0) {
                Ok(n) if n == bytes.len() => return Ok(()),
                Ok(n) => return Err(NlError::Protocol(format!("short send: {n} of {} bytes", bytes.len()))),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(NlError::Io(e)),
            }
        }
    }

    /// Waits for the next datagram and returns it whole.
    pub fn recv(&mut self) -> Result<&[u8], NlError> {
        let len = self.recv_with(0)?;
        Ok(&self.buf[..len])
    }

    /// The next datagram already queued, or `None` when there is none.
    pub fn try_recv(&mut self) -> Result<Option<&[u8]>, NlError> {
        match self.recv_with(libc::MSG_DONTWAIT) {
            Ok(len) => Ok(Some(&self.buf[..len])),
            Err(NlError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Receives one datagram whole into `self.buf`, growing it when the kernel's is larger.
    fn recv_with(&mut self, flags: libc::c_int) -> Result<usize, NlError> {
        loop {
            // The size first (MSG_TRUNC reports it whole, nothing copied): a datagram larger
            // than the buffer would otherwise be cut and lost.
            let size = match recv_into(self.socket.as_raw_fd(), &mut Vec::new(), flags | libc::MSG_PEEK | libc::MSG_TRUNC) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(NlError::Io(e)),
            };
            self.buf.clear();
            self.buf.reserve(size);
            match recv_into(self.socket.as_raw_fd(), &mut self.buf, flags) {
                Ok(n) => return Ok(n.min(self.buf.len())),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(NlError::Io(e)),
            }
        }
    }

    /// Sends one request whose messages carry sequence number `seq` and hands every reply to
    /// it to `each` (message type, payload), until the ACK, an error, or NLMSG_DONE (the end of
    /// a dump, which carries the error that stopped a dump part-way).
    pub fn exchange(&mut self, bytes: &[u8], seq: u32, mut each: impl FnMut(u16, &[u8])) -> Result<(), NlError> {
        self.send(bytes)?;
        let port = self.port;
        loop {
            for reply in messages(self.recv()?) {
                let reply = reply?;
                if reply.seq != seq || (reply.port != port && reply.port != 0) {
                    // A late answer to an earlier request that was given up on.
                    continue;
                }
                match reply.kind {
                    NLMSG_NOOP => {}
                    NLMSG_ERROR => return reply.ack().unwrap_or(Ok(())),
                    NLMSG_DONE => return reply.done(),
                    NLMSG_OVERRUN => return Err(NlError::Protocol("NLMSG_OVERRUN: data lost".into())),
                    kind => each(kind, reply.payload),
                }
            }
        }
    }

    /// Subscribes to a multicast group (notifications).
    pub fn add_membership(&mut self, group: u32) -> io::Result<()> {
        self.socket.add_membership(group)
    }

    /// Makes [`Transport::recv`] give up (WouldBlock) after `timeout`.
    pub fn set_receive_timeout(&self, timeout: std::time::Duration) -> io::Result<()> {
        let tv = libc::timeval { tv_sec: timeout.as_secs() as libc::time_t, tv_usec: 0 };
        // SAFETY: the socket is open for as long as `self`; SO_RCVTIMEO reads a timeval of the
        // size given, which lives across the call.
        let rc = unsafe {
            libc::setsockopt(
                self.socket.as_raw_fd(),
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
}

impl AsRawFd for Transport {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

/// One netlink message of a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    pub kind: u16,
    pub flags: u16,
    pub seq: u32,
    pub port: u32,
    /// What follows the header.
    pub payload: &'a [u8],
}

impl Message<'_> {
    /// For an NLMSG_ERROR, the kernel's answer to a request: `Ok` for an ACK, else its errno
    /// and extended-ACK message. `None` for any other message.
    pub fn ack(&self) -> Option<Result<(), NlError>> {
        if self.kind != NLMSG_ERROR {
            return None;
        }
        Some(match read_i32(self.payload) {
            None => Err(NlError::Protocol("truncated NLMSG_ERROR".into())),
            Some(0) => Ok(()),
            Some(code) => Err(NlError::Kernel { errno: code.saturating_neg(), msg: error_extack(self.flags, self.payload) }),
        })
    }

    /// For an NLMSG_DONE, how the dump ended: its errno when it failed part-way.
    pub(crate) fn done(&self) -> Result<(), NlError> {
        match read_i32(self.payload) {
            Some(code) if code < 0 => {
                let tlvs = &self.payload[4..];
                let msg = if self.flags & NLM_F_ACK_TLVS != 0 { extack_msg(tlvs) } else { None };
                Err(NlError::Kernel { errno: code.saturating_neg(), msg })
            }
            _ => Ok(()),
        }
    }
}

/// `recv(2)` into `buf`'s spare capacity, which is never zeroed; `buf` holds what was
/// written. Returns what the kernel returned: with MSG_TRUNC, the datagram's whole size.
fn recv_into(fd: RawFd, buf: &mut Vec<u8>, flags: libc::c_int) -> io::Result<usize> {
    let spare = buf.spare_capacity_mut();
    // SAFETY: the kernel writes at most `spare.len()` bytes into memory `buf` owns.
    let rc = unsafe { libc::recv(fd, spare.as_mut_ptr().cast(), spare.len(), flags) };
    let Ok(n) = usize::try_from(rc) else { return Err(io::Error::last_os_error()) };
    let written = n.min(spare.len());
    // SAFETY: the first `written` bytes of the spare capacity were just initialised.
    unsafe { buf.set_len(buf.len() + written) };
    Ok(n)
}

/// The attributes of a message or of a nested attribute, in order: type (without the
/// NLA_F_NESTED and byte-order flags) and payload; a malformed one ends them.
pub fn attributes(buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut rest = buf;
    std::iter::from_fn(move || {
        let len = usize::from(u16::from_ne_bytes([*rest.first()?, *rest.get(1)?]));
        let kind = u16::from_ne_bytes([*rest.get(2)?, *rest.get(3)?]) & NLA_TYPE_MASK;
        let value = rest.get(4..len)?;
        rest = rest.get(len.next_multiple_of(4)..).unwrap_or_default();
        Some((kind, value))
    })
}

/// The messages of one datagram, in order; a malformed one ends it with an error.
pub fn messages(datagram: &[u8]) -> impl Iterator<Item = Result<Message<'_>, NlError>> {
    let mut rest = datagram;
    std::iter::from_fn(move || {
        if rest.len() < NLMSG_HDRLEN {
            return None;
        }
        let u16_at = |i: usize| u16::from_ne_bytes([rest[i], rest[i + 1]]);
        let u32_at = |i: usize| u32::from_ne_bytes([rest[i], rest[i + 1], rest[i + 2], rest[i + 3]]);
        let len = u32_at(0) as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            rest = &[];
            return Some(Err(NlError::Protocol(format!("malformed reply: message length {len}"))));
        }
        let msg =
            Message { kind: u16_at(4), flags: u16_at(6), seq: u32_at(8), port: u32_at(12), payload: &rest[NLMSG_HDRLEN..len] };
        rest = &rest[len.next_multiple_of(4).min(rest.len())..];
        Some(Ok(msg))
    })
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
    let echoed =
        if flags & NLM_F_CAPPED != 0 { NLMSG_HDRLEN } else { u32::from_ne_bytes(request.get(..4)?.try_into().ok()?) as usize };
    extack_msg(request.get((echoed + 3) & !3..)?)
}

/// The message among extended-ACK attributes (also those after NLMSG_DONE's errno).
pub(crate) fn extack_msg(tlvs: &[u8]) -> Option<String> {
    for nla in NlasIterator::new(tlvs) {
        let nla = nla.ok()?;
        if nla.kind() == NLMSGERR_ATTR_MSG {
            return parse_string(nla.value()).ok().filter(|s| !s.is_empty());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fuzzing (berth-fuzz, target `netlink_reply`): an NLMSG_ERROR or NLMSG_DONE whose
    /// errno is i32::MIN panicked negating it ("attempt to negate with overflow").
    #[test]
    fn an_errno_of_i32_min_is_an_error_not_a_panic() {
        for kind in [NLMSG_ERROR, NLMSG_DONE] {
            let mut d = Vec::new();
            d.extend_from_slice(&36u32.to_ne_bytes());
            d.extend_from_slice(&kind.to_ne_bytes());
            d.extend_from_slice(&[0; 10]);
            d.extend_from_slice(&i32::MIN.to_ne_bytes());
            d.extend_from_slice(&[0; NLMSG_HDRLEN]);
            let message = messages(&d).next().unwrap().unwrap();
            let answer = if kind == NLMSG_ERROR { message.ack().unwrap() } else { message.done() };
            assert!(matches!(answer, Err(NlError::Kernel { errno: i32::MAX, .. })), "{answer:?}");
        }
    }

    #[test]
    fn acks_and_errnos_with_extended_messages() {
        // An ACK and an ENOENT with an extended-ACK message, as NETLINK_CAP_ACK sends them.
        let mut d = Vec::new();
        for (errno, msg) in [(0i32, None), (-libc::ENOENT, Some("no set"))] {
            let start = d.len();
            let flags = if msg.is_some() { NLM_F_CAPPED | NLM_F_ACK_TLVS } else { NLM_F_CAPPED };
            d.extend_from_slice(&0u32.to_ne_bytes());
            d.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
            d.extend_from_slice(&flags.to_ne_bytes());
            d.extend_from_slice(&[0; 8]);
            d.extend_from_slice(&errno.to_ne_bytes());
            d.extend_from_slice(&[0; NLMSG_HDRLEN]);
            if let Some(m) = msg {
                let mut s = m.as_bytes().to_vec();
                s.push(0);
                d.extend_from_slice(&((4 + s.len()) as u16).to_ne_bytes());
                d.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
                d.extend_from_slice(&s);
                d.resize(d.len().next_multiple_of(4), 0);
            }
            let len = (d.len() - start) as u32;
            d[start..start + 4].copy_from_slice(&len.to_ne_bytes());
        }
        let answers: Vec<Result<(), NlError>> = messages(&d).map(|m| m.unwrap().ack().unwrap()).collect();
        assert!(answers[0].is_ok());
        match &answers[1] {
            Err(NlError::Kernel { errno, msg }) => assert_eq!((*errno, msg.as_deref()), (libc::ENOENT, Some("no set"))),
            other => panic!("{other:?}"),
        }
        assert!(messages(&d[..20]).next().unwrap().is_err(), "a cut message is malformed");
    }
}

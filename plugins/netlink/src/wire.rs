//! rtnetlink over the shared transport ([`crate::socket`]): a request, and its replies up to
//! the ACK or NLMSG_DONE. Replies are handed on as raw payloads so that one attribute the crate
//! cannot decode never loses a whole message (see `parse`).

use super::Netlink;
pub use crate::socket::NlError;
use crate::socket::{messages, Protocol, Transport};
use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLMSG_ERROR, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_route::RouteNetlinkMessage;
use std::io;
use std::os::fd::AsRawFd;

impl Netlink {
    /// A bound NETLINK_ROUTE socket in the calling thread's namespace.
    pub(super) fn connect() -> io::Result<Netlink> {
        let transport = Transport::open(Protocol::Route)?;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        Ok(Netlink { transport, seq: now.as_secs() as u32 })
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
    fn exchange(&mut self, msg: RouteNetlinkMessage, flags: u16, each: impl FnMut(u16, &[u8])) -> Result<(), NlError> {
        let (seq, out) = self.next_request(msg, flags);
        self.transport.exchange(&out, seq, each)
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
        self.transport.add_membership(group).map_err(NlError::Io)?;
        self.transport.set_receive_timeout(DETACHED_TIMEOUT).map_err(NlError::Io)?;
        let (seq, out) = self.next_request(msg, NLM_F_REQUEST | NLM_F_ACK);
        send_from_grandchild(self.transport.as_raw_fd(), &out).map_err(NlError::Io)?;
        let port = self.transport.port();
        loop {
            let datagram = match self.transport.recv() {
                Err(NlError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Err(NlError::Protocol(format!("no answer within {} s", DETACHED_TIMEOUT.as_secs())))
                }
                other => other?,
            };
            for reply in messages(datagram) {
                let reply = reply?;
                let ours = reply.seq == seq && reply.port == port;
                match reply.kind {
                    NLMSG_ERROR if ours => return reply.ack().unwrap_or(Ok(())),
                    kind if reply.seq == 0 && done(kind, reply.payload) => return Ok(()),
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
}

/// How long [`Netlink::exchange_detached`] waits for the kernel.
const DETACHED_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

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

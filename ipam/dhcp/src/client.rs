//! The DHCP client side: a UDP socket on port 68 inside the container's namespace, bound to
//! its interface, and the exchanges of RFC 2131 over it (DISCOVER/OFFER/REQUEST/ACK, renew,
//! rebind, reboot, release). Bound to the device with SO_BROADCAST, the socket sends and
//! receives broadcasts before the interface has an address: no raw sockets needed.

use crate::error::{DhcpError, Result};
use crate::lease::{Claim, Grant, Lease};
use crate::message::{opt, Message, MessageType, CLIENT_PORT, SERVER_PORT};
use berth_netns::NetNs;
use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

/// The first retransmission comes after this, then twice as late each time up to 4 s (RFC
/// 2131 4.1 starts at 4 s; a container's ADD cannot wait that long). ADD sends once the
/// link is operational, yet on a busy host the far end of a new veth (the bridge port) can
/// still be a few milliseconds from forwarding: early retries cost a duplicate or two on a
/// slow server, and save an ADD from waiting for a packet that was never delivered. (The
/// kernel rounds a receive timeout up to its clock tick, 4 ms on a 250 Hz kernel.)
const FIRST_RETRY: Duration = Duration::from_millis(2);
const MAX_RETRY: Duration = Duration::from_secs(4);
/// Between a refused REQUEST and the next DISCOVER.
const RESTART_PAUSE: Duration = Duration::from_millis(50);
const BROADCAST: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::BROADCAST, SERVER_PORT);

pub struct Client {
    socket: UdpSocket,
    ifname: String,
    mac: [u8; 6],
}

/// What the client sends with every message (besides the message type).
pub struct Identity<'a> {
    pub provide: &'a [(u8, Vec<u8>)],
    pub request: &'a [u8],
}

impl Client {
    /// The client socket for `ifname` (MAC `mac`) in the namespace `ns`.
    pub fn open(ns: &NetNs, ifname: &str, mac: [u8; 6]) -> Result<Client> {
        let failed = |what: &str| {
            let (what, ifname) = (what.to_string(), ifname.to_string());
            move |e: nix::errno::Errno| DhcpError::Socket { what, ifname, source: e.into() }
        };
        // A socket belongs to the namespace it was made in, whatever thread uses it later.
        let fd = ns
            .run(|| socket::socket(AddressFamily::Inet, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None))?
            .map_err(failed("cannot open a UDP socket"))?;
        socket::setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(failed("SO_REUSEADDR"))?;
        socket::setsockopt(&fd, sockopt::Broadcast, &true).map_err(failed("SO_BROADCAST"))?;
        socket::setsockopt(&fd, sockopt::BindToDevice, &std::ffi::OsString::from(ifname))
            .map_err(failed("cannot bind the DHCP socket to the interface"))?;
        let any = SockaddrIn::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, CLIENT_PORT));
        socket::bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &any).map_err(failed("cannot bind UDP port 68"))?;
        Ok(Client { socket: UdpSocket::from(fd), ifname: ifname.to_string(), mac })
    }

    /// DISCOVER, OFFER, REQUEST, ACK: a new lease, within `timeout`. `before_request` is
    /// told each offered address and its server before the REQUEST for it goes out (from
    /// then on the server may commit the lease); an error there ends the exchange.
    pub fn acquire(
        &self,
        id: &Identity,
        timeout: Duration,
        before_request: &mut dyn FnMut(Ipv4Addr, Ipv4Addr) -> Result<()>,
    ) -> Result<(Grant, Ipv4Addr)> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.acquire_once(id, timeout, deadline, before_request) {
                // A server may offer one address to two clients at once and refuse the one
                // that asks second: that one starts over (RFC 2131 3.1, step 5).
                Err(DhcpError::Refused { .. }) if Instant::now() + RESTART_PAUSE < deadline => std::thread::sleep(RESTART_PAUSE),
                done => return done,
            }
        }
    }

    fn acquire_once(
        &self,
        id: &Identity,
        timeout: Duration,
        deadline: Instant,
        before_request: &mut dyn FnMut(Ipv4Addr, Ipv4Addr) -> Result<()>,
    ) -> Result<(Grant, Ipv4Addr)> {
        let xid = random_u32();
        let mut discover = self.message(MessageType::Discover, xid, id);
        discover.broadcast = true;
        let offer = self
            .transact(&discover, BROADCAST, deadline, |m| m.kind() == Some(MessageType::Offer))?
            .ok_or_else(|| self.no_answer(timeout, "DHCPDISCOVER, no DHCPOFFER"))?;
        let server = offer
            .addr_option(opt::SERVER_ID)
            .ok_or_else(|| DhcpError::Malformed("an OFFER without a server identifier".into()))?;
        before_request(offer.yiaddr, server)?;
        let mut request = self.message(MessageType::Request, xid, id);
        request.broadcast = true;
        request.push(opt::REQUESTED_IP, offer.yiaddr.octets().to_vec());
        request.push(opt::SERVER_ID, server.octets().to_vec());
        let from_server = |m: &Message| m.addr_option(opt::SERVER_ID).is_none_or(|s| s == server);
        let reply = self
            .transact(&request, BROADCAST, deadline, |m| is_ack_or_nak(m) && from_server(m))?
            .ok_or_else(|| self.no_answer(timeout, "DHCPREQUEST, no DHCPACK"))?;
        Ok((self.granted(reply, Some(server))?, server))
    }

    /// Extends `lease`: unicast to its server (renewing, after T1) or broadcast to any
    /// server (rebinding, after T2, `broadcast`), waiting at most `timeout`.
    pub fn renew(&self, lease: &Lease, broadcast: bool, timeout: Duration) -> Result<Grant> {
        let id = Identity { provide: &lease.endpoint.provide, request: &lease.request };
        let mut request = self.message(MessageType::Request, random_u32(), &id);
        request.ciaddr = lease.address.addr();
        let to = if broadcast { BROADCAST } else { SocketAddrV4::new(lease.server, SERVER_PORT) };
        let what = if broadcast { "rebinding DHCPREQUEST" } else { "renewing DHCPREQUEST" };
        let reply =
            self.transact(&request, to, Instant::now() + timeout, is_ack_or_nak)?.ok_or_else(|| self.no_answer(timeout, what))?;
        self.granted(reply, Some(lease.server))
    }

    /// After the lease ran out: asks any server for the same address again (INIT-REBOOT).
    pub fn reboot(&self, lease: &Lease, timeout: Duration) -> Result<Grant> {
        let id = Identity { provide: &lease.endpoint.provide, request: &lease.request };
        let mut request = self.message(MessageType::Request, random_u32(), &id);
        request.broadcast = true;
        request.push(opt::REQUESTED_IP, lease.address.addr().octets().to_vec());
        let reply = self
            .transact(&request, BROADCAST, Instant::now() + timeout, is_ack_or_nak)?
            .ok_or_else(|| self.no_answer(timeout, "INIT-REBOOT DHCPREQUEST"))?;
        self.granted(reply, None)
    }

    /// Gives the address back: unicast to the server from the leased address, as RFC 2131
    /// 4.4.6 has it, whether or not the interface holds that address yet (an ADD killed before
    /// the main plugin configured it). The server does not answer a DHCPRELEASE.
    pub fn release(&self, claim: &Claim) -> Result<()> {
        let mut release = Message::request(MessageType::Release, random_u32(), self.mac);
        release.ciaddr = claim.address;
        release.push(opt::SERVER_ID, claim.server.octets().to_vec());
        if let Some((_, client_id)) = claim.endpoint.provide.iter().find(|(c, _)| *c == opt::CLIENT_ID) {
            release.push(opt::CLIENT_ID, client_id.clone());
        }
        self.send_from(&release, claim.address, SocketAddrV4::new(claim.server, SERVER_PORT))
    }

    /// Sends with `source` as the packet's source address even when no interface holds it:
    /// from the unspecified address the kernel would send 0.0.0.0, which a Linux server drops
    /// as a martian (only broadcasts may come from it). The source is set per packet (IP_PKTINFO,
    /// allowed by IP_TRANSPARENT): binding the socket to it is not enough in a namespace that
    /// never had an address, whose kernel then takes it for a broadcast address and sends
    /// from 0.0.0.0 all the same.
    fn send_from(&self, message: &Message, source: Ipv4Addr, to: SocketAddrV4) -> Result<()> {
        let failed = |what: String| {
            let ifname = self.ifname.clone();
            move |e: nix::errno::Errno| DhcpError::Socket { what, ifname, source: e.into() }
        };
        socket::setsockopt(&self.socket, sockopt::IpTransparent, &true).map_err(failed("IP_TRANSPARENT".into()))?;
        let info = libc::in_pktinfo {
            ipi_ifindex: 0,
            ipi_spec_dst: libc::in_addr { s_addr: u32::from(source).to_be() },
            ipi_addr: libc::in_addr { s_addr: 0 },
        };
        let bytes = message.encode();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&self.socket);
        socket::sendmsg(
            fd,
            &[std::io::IoSlice::new(&bytes)],
            &[socket::ControlMessage::Ipv4PacketInfo(&info)],
            socket::MsgFlags::empty(),
            Some(&SockaddrIn::from(to)),
        )
        .map(drop)
        .map_err(failed(format!("cannot send a DHCP message from {source} to {to}")))
    }

    fn message(&self, kind: MessageType, xid: u32, id: &Identity) -> Message {
        let mut m = Message::request(kind, xid, self.mac);
        for (code, value) in id.provide {
            m.push(*code, value.clone());
        }
        m.push(opt::PARAMETER_LIST, id.request.to_vec());
        m.push(opt::MAX_SIZE, 1500u16.to_be_bytes().to_vec());
        m
    }

    fn granted(&self, reply: Message, server: Option<Ipv4Addr>) -> Result<Grant> {
        if reply.kind() == Some(MessageType::Nak) {
            let message = reply.option(opt::MESSAGE).map(|m| String::from_utf8_lossy(m).into_owned()).unwrap_or_default();
            let server = reply.addr_option(opt::SERVER_ID).or(server).map(|s| s.to_string()).unwrap_or_default();
            return Err(DhcpError::Refused { ifname: self.ifname.clone(), server, message });
        }
        Grant::from_ack(&reply, server)
    }

    fn no_answer(&self, waited: Duration, what: &'static str) -> DhcpError {
        DhcpError::NoAnswer { ifname: self.ifname.clone(), waited, what }
    }

    fn send(&self, message: &Message, to: SocketAddrV4) -> Result<()> {
        self.socket.send_to(&message.encode(), to).map(drop).map_err(|source| DhcpError::Socket {
            what: format!("cannot send a DHCP message to {to}"),
            ifname: self.ifname.clone(),
            source,
        })
    }

    /// Sends `message` and waits for a reply to it that `wanted` accepts, sending again
    /// after 0.5 s, 1 s, 2 s, ...; `None` when `deadline` passes first.
    fn transact(
        &self,
        message: &Message,
        to: SocketAddrV4,
        deadline: Instant,
        wanted: impl Fn(&Message) -> bool,
    ) -> Result<Option<Message>> {
        let mut retry = FIRST_RETRY;
        let mut buf = vec![0u8; 4096];
        loop {
            self.send(message, to)?;
            let resend_at = (Instant::now() + retry).min(deadline);
            while let Some(left) = resend_at.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
                self.socket.set_read_timeout(Some(left)).map_err(|source| self.io("set a receive timeout", source))?;
                let len = match self.socket.recv_from(&mut buf) {
                    Ok((len, SocketAddr::V4(_))) => len,
                    Ok(_) => continue,
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut | std::io::ErrorKind::Interrupted
                        ) =>
                    {
                        continue
                    }
                    Err(source) => return Err(self.io("cannot receive a DHCP reply", source)),
                };
                // Other clients' replies and stray packets on port 68 are not ours.
                let Ok(reply) = Message::decode(&buf[..len]) else { continue };
                if reply.op == 2 && reply.xid == message.xid && reply.chaddr == self.mac && wanted(&reply) {
                    return Ok(Some(reply));
                }
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            retry = (retry * 2).min(MAX_RETRY);
        }
    }

    fn io(&self, what: &str, source: std::io::Error) -> DhcpError {
        DhcpError::Socket { what: what.to_string(), ifname: self.ifname.clone(), source }
    }
}

fn is_ack_or_nak(m: &Message) -> bool {
    matches!(m.kind(), Some(MessageType::Ack | MessageType::Nak))
}

/// A transaction ID.
fn random_u32() -> u32 {
    random_u64() as u32
}

/// Random enough for transaction and attempt IDs: std's per-process random hash keys, so no
/// extra crate and no syscall that could block for entropy.
pub fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    h.write_u128(nanos);
    h.write_u32(std::process::id());
    h.finish()
}

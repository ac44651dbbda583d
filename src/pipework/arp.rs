//! Gratuitous ARP after an address is set, as pipework sends with `arping -A` when arping is
//! installed: switches and neighbours learn at once where the address now is (a container
//! wired again with the same address, a macvlan on a LAN).

use berth_netlink::Netlink;
use berth_netns::NetNs;
use std::net::{IpAddr, Ipv4Addr};

const ETH_P_ARP: u16 = 0x0806;
const BROADCAST: [u8; 6] = [0xff; 6];

/// Best effort, as in pipework: a failure to announce never fails the wiring.
pub fn announce(guest: &NetNs, ifname: &str, addresses: &[IpAddr]) {
    let v4: Vec<Ipv4Addr> = addresses.iter().filter_map(|a| if let IpAddr::V4(v4) = a { Some(*v4) } else { None }).collect();
    if v4.is_empty() {
        return;
    }
    if let Ok(Err(e)) = guest.run(|| send(ifname, &v4)) {
        eprintln!("berth: gratuitous ARP on {ifname}: {e}");
    }
}

fn send(ifname: &str, addresses: &[Ipv4Addr]) -> std::io::Result<()> {
    let link = Netlink::open()
        .and_then(|mut nl| nl.link_by_name(ifname))
        .map_err(std::io::Error::other)?
        .ok_or_else(|| std::io::Error::other(format!("no interface {ifname}")))?;
    let Some(mac) = link.mac else { return Ok(()) };
    // SAFETY: socket() has no memory-safety preconditions; the descriptor is owned below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(ETH_P_ARP.to_be())) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a descriptor we just opened and nobody else owns.
    let socket = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    for address in addresses {
        let frame = arp_reply(mac.0, *address);
        send_frame(&socket, link.index, &frame)?;
    }
    Ok(())
}

/// An Ethernet broadcast ARP reply announcing `address` at `mac` (sender and target both
/// `address`), what `arping -A` sends.
fn arp_reply(mac: [u8; 6], address: Ipv4Addr) -> Vec<u8> {
    let mut frame = Vec::with_capacity(42);
    frame.extend_from_slice(&BROADCAST);
    frame.extend_from_slice(&mac);
    frame.extend_from_slice(&ETH_P_ARP.to_be_bytes());
    frame.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 2]); // Ethernet, IPv4, lengths, reply
    frame.extend_from_slice(&mac);
    frame.extend_from_slice(&address.octets());
    frame.extend_from_slice(&BROADCAST);
    frame.extend_from_slice(&address.octets());
    frame
}

fn send_frame(socket: &std::os::fd::OwnedFd, ifindex: u32, frame: &[u8]) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: sockaddr_ll is plain data; zeroed is a valid value that we then fill in.
    let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    to.sll_family = libc::AF_PACKET as u16;
    to.sll_protocol = ETH_P_ARP.to_be();
    to.sll_ifindex = ifindex as i32;
    to.sll_halen = 6;
    to.sll_addr[..6].copy_from_slice(&BROADCAST);
    // SAFETY: the buffer and the address are valid for the lengths given.
    let sent = unsafe {
        libc::sendto(
            socket.as_raw_fd(),
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&to as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if sent < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_announcement_is_an_arp_reply_about_itself() {
        let frame = super::arp_reply([2, 0, 0, 0, 0, 1], "10.0.0.5".parse().unwrap());
        assert_eq!(frame.len(), 42);
        assert_eq!(&frame[12..14], &[0x08, 0x06]);
        assert_eq!(frame[21], 2, "op: reply");
        assert_eq!(&frame[28..32], &[10, 0, 0, 5], "sender address");
        assert_eq!(&frame[38..42], &[10, 0, 0, 5], "target address");
    }
}

//! DHCPv4 messages (RFC 2131) and the options berth sends and reads (RFC 2132, RFC 3442),
//! encoded and decoded by hand: a fixed 236-byte header, the magic cookie and a list of
//! type-length-value options. Small enough that a crate (dhcproto pulls in hickory-proto
//! for domain names) would cost more in start-up and size than it saves.

use crate::error::DhcpError;
use std::net::Ipv4Addr;

pub const SERVER_PORT: u16 = 67;
pub const CLIENT_PORT: u16 = 68;
const MAGIC: [u8; 4] = [99, 130, 83, 99];
const HEADER: usize = 236;
/// BOOTP's minimum message size: some servers and relays drop shorter ones.
const MIN_LEN: usize = 300;
/// Replies ask the server to broadcast: before the address is configured, the kernel would
/// drop a unicast reply to it.
const FLAG_BROADCAST: u16 = 0x8000;

pub mod opt {
    pub const PAD: u8 = 0;
    pub const SUBNET_MASK: u8 = 1;
    pub const ROUTER: u8 = 3;
    pub const DNS: u8 = 6;
    pub const HOST_NAME: u8 = 12;
    pub const DOMAIN_NAME: u8 = 15;
    pub const REQUESTED_IP: u8 = 50;
    pub const LEASE_TIME: u8 = 51;
    pub const MESSAGE_TYPE: u8 = 53;
    pub const SERVER_ID: u8 = 54;
    pub const PARAMETER_LIST: u8 = 55;
    pub const MESSAGE: u8 = 56;
    pub const MAX_SIZE: u8 = 57;
    pub const T1: u8 = 58;
    pub const T2: u8 = 59;
    pub const CLIENT_ID: u8 = 61;
    pub const CLASSLESS_ROUTES: u8 = 121;
    pub const END: u8 = 255;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    Discover = 1,
    Offer = 2,
    Request = 3,
    Decline = 4,
    Ack = 5,
    Nak = 6,
    Release = 7,
}

impl MessageType {
    fn from_u8(v: u8) -> Option<MessageType> {
        use MessageType::*;
        Some(match v {
            1 => Discover,
            2 => Offer,
            3 => Request,
            4 => Decline,
            5 => Ack,
            6 => Nak,
            7 => Release,
            _ => return None,
        })
    }
}

/// A message, header fields and options in the order they were added or read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub op: u8,
    pub xid: u32,
    pub broadcast: bool,
    pub ciaddr: Ipv4Addr,
    pub yiaddr: Ipv4Addr,
    pub chaddr: [u8; 6],
    pub options: Vec<(u8, Vec<u8>)>,
}

impl Message {
    /// A client's message (BOOTREQUEST) of `kind`.
    pub fn request(kind: MessageType, xid: u32, chaddr: [u8; 6]) -> Message {
        Message {
            op: 1,
            xid,
            broadcast: false,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: Ipv4Addr::UNSPECIFIED,
            chaddr,
            options: vec![(opt::MESSAGE_TYPE, vec![kind as u8])],
        }
    }

    pub fn push(&mut self, code: u8, value: impl Into<Vec<u8>>) {
        self.options.push((code, value.into()));
    }

    pub fn option(&self, code: u8) -> Option<&[u8]> {
        self.options.iter().find(|(c, _)| *c == code).map(|(_, v)| v.as_slice())
    }

    pub fn kind(&self) -> Option<MessageType> {
        self.option(opt::MESSAGE_TYPE).and_then(|v| v.first().copied()).and_then(MessageType::from_u8)
    }

    pub fn addr_option(&self, code: u8) -> Option<Ipv4Addr> {
        self.addrs_option(code).into_iter().next()
    }

    /// An option holding a list of addresses (routers, DNS servers).
    pub fn addrs_option(&self, code: u8) -> Vec<Ipv4Addr> {
        self.option(code).map(|v| v.chunks_exact(4).map(|c| Ipv4Addr::new(c[0], c[1], c[2], c[3])).collect()).unwrap_or_default()
    }

    pub fn u32_option(&self, code: u8) -> Option<u32> {
        self.option(code).and_then(|v| <[u8; 4]>::try_from(v).ok()).map(u32::from_be_bytes)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![0u8; HEADER];
        out[0] = self.op;
        out[1] = 1; // Ethernet
        out[2] = 6;
        out[4..8].copy_from_slice(&self.xid.to_be_bytes());
        let flags = if self.broadcast { FLAG_BROADCAST } else { 0 };
        out[10..12].copy_from_slice(&flags.to_be_bytes());
        out[12..16].copy_from_slice(&self.ciaddr.octets());
        out[16..20].copy_from_slice(&self.yiaddr.octets());
        out[28..34].copy_from_slice(&self.chaddr);
        out.extend_from_slice(&MAGIC);
        for (code, value) in &self.options {
            // Longer values are split over several instances of the option (RFC 3396).
            for chunk in value.chunks(255).chain(value.is_empty().then_some(&[][..])) {
                out.push(*code);
                out.push(chunk.len() as u8);
                out.extend_from_slice(chunk);
            }
        }
        out.push(opt::END);
        if out.len() < MIN_LEN {
            out.resize(MIN_LEN, opt::PAD);
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Message, DhcpError> {
        let bad = |why: &str| DhcpError::Malformed(why.to_string());
        if bytes.len() < HEADER + MAGIC.len() || bytes[HEADER..HEADER + 4] != MAGIC {
            return Err(bad("too short or no magic cookie"));
        }
        let addr = |at: usize| Ipv4Addr::new(bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]);
        let mut chaddr = [0u8; 6];
        chaddr.copy_from_slice(&bytes[28..34]);
        let mut message = Message {
            op: bytes[0],
            xid: u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]),
            broadcast: u16::from_be_bytes([bytes[10], bytes[11]]) & FLAG_BROADCAST != 0,
            ciaddr: addr(12),
            yiaddr: addr(16),
            chaddr,
            options: Vec::new(),
        };
        decode_options(&bytes[HEADER + 4..], &mut message.options).map_err(bad)?;
        Ok(message)
    }
}

/// Reads options up to END, joining the parts of a split option (RFC 3396).
fn decode_options(mut rest: &[u8], into: &mut Vec<(u8, Vec<u8>)>) -> Result<(), &'static str> {
    while let Some((&code, tail)) = rest.split_first() {
        match code {
            opt::PAD => rest = tail,
            opt::END => return Ok(()),
            _ => {
                let (&len, tail) = tail.split_first().ok_or("option without a length")?;
                let value = tail.get(..len as usize).ok_or("option longer than the message")?;
                match into.iter_mut().find(|(c, _)| *c == code) {
                    Some((_, existing)) => existing.extend_from_slice(value),
                    None => into.push((code, value.to_vec())),
                }
                rest = &tail[len as usize..];
            }
        }
    }
    Ok(())
}

/// Option 121 (RFC 3442): each route is a prefix length, the significant octets of the
/// destination, and the router (0.0.0.0: on the link).
pub fn classless_routes(value: &[u8]) -> Result<Vec<(ipnet::Ipv4Net, Ipv4Addr)>, DhcpError> {
    let mut routes = Vec::new();
    let mut rest = value;
    while let Some((&len, tail)) = rest.split_first() {
        let bad = || DhcpError::Malformed(format!("classless static route with prefix length {len}"));
        let significant = (len as usize).div_ceil(8);
        if len > 32 || tail.len() < significant + 4 {
            return Err(bad());
        }
        let mut dst = [0u8; 4];
        dst[..significant].copy_from_slice(&tail[..significant]);
        let gw = &tail[significant..significant + 4];
        let net = ipnet::Ipv4Net::new(Ipv4Addr::from(dst), len).map_err(|_| bad())?;
        routes.push((net.trunc(), Ipv4Addr::new(gw[0], gw[1], gw[2], gw[3])));
        rest = &tail[significant + 4..];
    }
    Ok(routes)
}

/// The prefix length of a subnet mask; `None` unless its ones are contiguous.
pub fn mask_prefix(mask: Ipv4Addr) -> Option<u8> {
    let bits = u32::from(mask);
    let len = bits.leading_ones();
    (bits.checked_shl(len).unwrap_or(0) == 0).then_some(len as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_survive_a_round_trip() {
        let mut m = Message::request(MessageType::Discover, 0x1234_5678, [2, 0, 0, 0, 0, 1]);
        m.broadcast = true;
        m.push(opt::CLIENT_ID, b"\0abc".to_vec());
        m.push(opt::HOST_NAME, vec![b'x'; 300]);
        let bytes = m.encode();
        assert!(bytes.len() >= MIN_LEN);
        let back = Message::decode(&bytes).unwrap();
        assert_eq!(back, m, "split options are joined again");
        assert_eq!(back.kind(), Some(MessageType::Discover));
    }

    #[test]
    fn classless_routes_decode_as_rfc3442_says() {
        // 10.0.0.0/8 via 10.1.1.1, 0.0.0.0/0 via 10.1.1.2, 192.168.4.0/22 on-link
        let v = [8, 10, 10, 1, 1, 1, 0, 10, 1, 1, 2, 22, 192, 168, 4, 0, 0, 0, 0];
        let routes = classless_routes(&v).unwrap();
        assert_eq!(routes[0], ("10.0.0.0/8".parse().unwrap(), Ipv4Addr::new(10, 1, 1, 1)));
        assert_eq!(routes[1], ("0.0.0.0/0".parse().unwrap(), Ipv4Addr::new(10, 1, 1, 2)));
        assert_eq!(routes[2], ("192.168.4.0/22".parse().unwrap(), Ipv4Addr::UNSPECIFIED));
        assert!(classless_routes(&[33, 1, 2, 3, 4, 5, 6, 7, 8, 9]).is_err());
        assert!(classless_routes(&[24, 10, 0]).is_err());
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        assert!(Message::decode(&[0; 10]).is_err());
        let mut bytes = Message::request(MessageType::Offer, 1, [0; 6]).encode();
        bytes.truncate(HEADER + 4);
        bytes.extend_from_slice(&[opt::LEASE_TIME, 200, 1]);
        assert!(Message::decode(&bytes).is_err());
    }

    #[test]
    fn masks_become_prefix_lengths() {
        assert_eq!(mask_prefix(Ipv4Addr::new(255, 255, 255, 0)), Some(24));
        assert_eq!(mask_prefix(Ipv4Addr::new(255, 255, 255, 255)), Some(32));
        assert_eq!(mask_prefix(Ipv4Addr::UNSPECIFIED), Some(0));
        assert_eq!(mask_prefix(Ipv4Addr::new(255, 0, 255, 0)), None);
    }
}

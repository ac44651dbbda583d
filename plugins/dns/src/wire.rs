//! The DNS wire format, as much as the server needs (RFC 1035 sections 4.1 and 3.3): a query's
//! header and one question, and answers of A, AAAA and PTR records or an error code. Other
//! queries are relayed as bytes, never decoded.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const TYPE_A: u16 = 1;
pub const TYPE_PTR: u16 = 12;
pub const TYPE_AAAA: u16 = 28;
pub const TYPE_ANY: u16 = 255;
pub const CLASS_IN: u16 = 1;

pub const RCODE_FORMERR: u8 = 1;
pub const RCODE_SERVFAIL: u8 = 2;
pub const RCODE_NXDOMAIN: u8 = 3;
pub const RCODE_NOTIMP: u8 = 4;

const HEADER_LEN: usize = 12;
const FLAG_QR: u16 = 0x8000;
const FLAG_AA: u16 = 0x0400;
const FLAG_RD: u16 = 0x0100;
const FLAG_RA: u16 = 0x0080;
/// A pointer to the question's name, which always starts right after the header.
const NAME_POINTER: [u8; 2] = [0xc0, HEADER_LEN as u8];

/// One query, as far as it was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query<'a> {
    pub id: u16,
    pub flags: u16,
    /// The name asked for, lower case, without the final dot (`""` for the root).
    pub name: String,
    pub qtype: u16,
    pub qclass: u16,
    /// The question section as received (name, type, class), echoed in the answer.
    pub question: &'a [u8],
}

/// Why a packet gets no answer of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// Too short for a header, or a response: dropped.
    Drop,
    /// A header, but no question the server can read: answered with this code.
    Reply { id: u16, flags: u16, rcode: u8 },
}

/// An answer record's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rdata {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Ptr(String),
}

impl Rdata {
    pub fn of(ip: IpAddr) -> Rdata {
        match ip {
            IpAddr::V4(v4) => Rdata::A(v4),
            IpAddr::V6(v6) => Rdata::Aaaa(v6),
        }
    }
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*bytes.get(at)?, *bytes.get(at + 1)?]))
}

/// Reads the header and the one question of a standard query.
pub fn parse_query(packet: &[u8]) -> Result<Query<'_>, Malformed> {
    let (Some(id), Some(flags), Some(qdcount)) = (u16_at(packet, 0), u16_at(packet, 2), u16_at(packet, 4)) else {
        return Err(Malformed::Drop);
    };
    if packet.len() < HEADER_LEN || flags & FLAG_QR != 0 {
        return Err(Malformed::Drop);
    }
    let reply = |rcode| Malformed::Reply { id, flags, rcode };
    if (flags >> 11) & 0xf != 0 {
        return Err(reply(RCODE_NOTIMP));
    }
    if qdcount != 1 {
        return Err(reply(RCODE_FORMERR));
    }
    let (name, end) = read_name(packet, HEADER_LEN).ok_or(reply(RCODE_FORMERR))?;
    let (Some(qtype), Some(qclass)) = (u16_at(packet, end), u16_at(packet, end + 2)) else {
        return Err(reply(RCODE_FORMERR));
    };
    Ok(Query { id, flags, name, qtype, qclass, question: &packet[HEADER_LEN..end + 4] })
}

/// An uncompressed name at `at`: the name in lower case and where it ends.
fn read_name(packet: &[u8], mut at: usize) -> Option<(String, usize)> {
    let mut name = String::new();
    loop {
        let len = *packet.get(at)? as usize;
        at += 1;
        if len == 0 {
            return Some((name, at));
        }
        // Compression (0xc0) and the reserved label kinds have no place in a question.
        if len > 63 || name.len() + len > 253 {
            return None;
        }
        let label = packet.get(at..at + len)?;
        if !name.is_empty() {
            name.push('.');
        }
        name.extend(label.iter().map(|b| b.to_ascii_lowercase() as char));
        at += len;
    }
}

/// The answer to `query`: `rcode`, authoritative or not, and `answers` for its name.
pub fn response(query: &Query, rcode: u8, authoritative: bool, answers: &[Rdata], ttl: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + query.question.len() + answers.len() * 28);
    header(&mut out, query.id, query.flags, rcode, authoritative, answers.len() as u16, 1);
    out.extend_from_slice(query.question);
    for rdata in answers {
        out.extend_from_slice(&NAME_POINTER);
        let (kind, data): (u16, Vec<u8>) = match rdata {
            Rdata::A(ip) => (TYPE_A, ip.octets().to_vec()),
            Rdata::Aaaa(ip) => (TYPE_AAAA, ip.octets().to_vec()),
            Rdata::Ptr(name) => (TYPE_PTR, encode_name(name)),
        };
        out.extend_from_slice(&kind.to_be_bytes());
        out.extend_from_slice(&CLASS_IN.to_be_bytes());
        out.extend_from_slice(&ttl.to_be_bytes());
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(&data);
    }
    out
}

/// A header-only answer, for a query whose question could not be read.
pub fn error_response(id: u16, flags: u16, rcode: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN);
    header(&mut out, id, flags, rcode, false, 0, 0);
    out
}

fn header(out: &mut Vec<u8>, id: u16, query_flags: u16, rcode: u8, authoritative: bool, ancount: u16, qdcount: u16) {
    // The query's opcode and RD are echoed; recursion is available (the server forwards).
    let mut flags = FLAG_QR | FLAG_RA | (query_flags & (0x7800 | FLAG_RD)) | u16::from(rcode & 0xf);
    if authoritative {
        flags |= FLAG_AA;
    }
    for field in [id, flags, qdcount, ancount, 0, 0] {
        out.extend_from_slice(&field.to_be_bytes());
    }
}

/// `a.b.` as labels; the names given here are checked names, so every label fits.
pub fn encode_name(name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len() + 2);
    for label in name.split('.').filter(|l| !l.is_empty()) {
        out.push(label.len().min(63) as u8);
        out.extend_from_slice(&label.as_bytes()[..label.len().min(63)]);
    }
    out.push(0);
    out
}

/// A query for `name` of `qtype` (clients: tests, the benchmark, CHECK).
pub fn build_query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + name.len() + 6);
    for field in [id, FLAG_RD, 1, 0, 0, 0] {
        out.extend_from_slice(&field.to_be_bytes());
    }
    out.extend_from_slice(&encode_name(name));
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    out
}

/// A decoded answer: its code and the A, AAAA and PTR records (others skipped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub id: u16,
    pub rcode: u8,
    pub authoritative: bool,
    pub records: Vec<Rdata>,
}

/// Reads an answer to a query built by [`build_query`] (for clients; names in answers may be
/// compressed).
pub fn parse_answer(packet: &[u8]) -> Option<Answer> {
    let (id, flags) = (u16_at(packet, 0)?, u16_at(packet, 2)?);
    let (qdcount, ancount) = (u16_at(packet, 4)?, u16_at(packet, 6)?);
    let mut at = HEADER_LEN;
    for _ in 0..qdcount {
        at = skip_name(packet, at)? + 4;
    }
    let mut records = Vec::new();
    for _ in 0..ancount {
        at = skip_name(packet, at)?;
        let (kind, len) = (u16_at(packet, at)?, u16_at(packet, at + 8)? as usize);
        let data = packet.get(at + 10..at + 10 + len)?;
        match (kind, len) {
            (TYPE_A, 4) => records.push(Rdata::A(Ipv4Addr::from(<[u8; 4]>::try_from(data).ok()?))),
            (TYPE_AAAA, 16) => records.push(Rdata::Aaaa(Ipv6Addr::from(<[u8; 16]>::try_from(data).ok()?))),
            (TYPE_PTR, _) => records.push(Rdata::Ptr(read_name(data, 0)?.0)),
            _ => {}
        }
        at += 10 + len;
    }
    Some(Answer { id, rcode: (flags & 0xf) as u8, authoritative: flags & FLAG_AA != 0, records })
}

fn skip_name(packet: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *packet.get(at)?;
        match len {
            0 => return Some(at + 1),
            l if l & 0xc0 == 0xc0 => return Some(at + 2),
            l => at += 1 + l as usize,
        }
    }
}

/// The address a reverse name stands for: `4.3.2.1.in-addr.arpa` or the 32 nibbles of
/// `….ip6.arpa`; `None` for any other name.
pub fn reverse_address(name: &str) -> Option<IpAddr> {
    if let Some(rest) = name.strip_suffix(".in-addr.arpa") {
        let mut octets: Vec<u8> = rest.split('.').map(|p| p.parse().ok()).collect::<Option<_>>()?;
        octets.reverse();
        return Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(octets).ok()?)));
    }
    let rest = name.strip_suffix(".ip6.arpa")?;
    let nibbles: Vec<u8> =
        rest.split('.').map(|p| u8::from_str_radix(p, 16).ok().filter(|_| p.len() == 1)).collect::<Option<_>>()?;
    if nibbles.len() != 32 {
        return None;
    }
    let mut bytes = [0u8; 16];
    for (i, pair) in nibbles.rchunks(2).enumerate() {
        bytes[i] = pair[1] << 4 | pair[0];
    }
    Some(IpAddr::V6(Ipv6Addr::from(bytes)))
}

/// The reverse name of `ip` (for PTR queries).
pub fn reverse_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut parts: Vec<String> = Vec::with_capacity(33);
            for byte in v6.octets().iter().rev() {
                parts.push(format!("{:x}", byte & 0xf));
                parts.push(format!("{:x}", byte >> 4));
            }
            parts.push("ip6.arpa".into());
            parts.join(".")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_round_trips() {
        let packet = build_query(0x1234, "Web.Example", TYPE_A);
        let q = parse_query(&packet).unwrap();
        assert_eq!((q.id, q.name.as_str(), q.qtype, q.qclass), (0x1234, "web.example", TYPE_A, CLASS_IN));
        let out = response(&q, 0, true, &[Rdata::A("10.0.0.2".parse().unwrap()), Rdata::Ptr("web.dns.podman".into())], 0);
        let answer = parse_answer(&out).unwrap();
        assert_eq!(answer.id, 0x1234);
        assert!(answer.authoritative);
        assert_eq!(answer.records, [Rdata::A("10.0.0.2".parse().unwrap()), Rdata::Ptr("web.dns.podman".into())]);
    }

    #[test]
    fn bad_packets_are_dropped_or_refused() {
        assert_eq!(parse_query(&[0; 5]), Err(Malformed::Drop));
        let mut response_bit = build_query(1, "a", TYPE_A);
        response_bit[2] |= 0x80;
        assert_eq!(parse_query(&response_bit), Err(Malformed::Drop));
        let mut truncated = build_query(2, "abc", TYPE_A);
        truncated.truncate(15);
        assert_eq!(parse_query(&truncated), Err(Malformed::Reply { id: 2, flags: FLAG_RD, rcode: RCODE_FORMERR }));
        let mut pointer = build_query(3, "abc", TYPE_A);
        pointer[12] = 0xc0;
        assert!(matches!(parse_query(&pointer), Err(Malformed::Reply { rcode: RCODE_FORMERR, .. })));
        let err = error_response(3, FLAG_RD, RCODE_FORMERR);
        assert_eq!(parse_answer(&err).unwrap().rcode, RCODE_FORMERR);
    }

    #[test]
    fn reverse_names_both_ways() {
        for ip in ["10.1.2.3", "fd00::1:abcd", "::1"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(reverse_address(&reverse_name(ip)), Some(ip), "{ip}");
        }
        assert_eq!(reverse_address("3.2.1.in-addr.arpa"), None);
        assert_eq!(reverse_address("web.dns.podman"), None);
    }
}

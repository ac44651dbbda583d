//! Packets from the network: DNS queries to berth-dns's server (and the answers its
//! forwarder relays), DHCP replies to berth-dhcp.

use crate::engine::Target;
use berth_dhcp::lease::Grant;
use berth_dhcp::message::{classless_routes, opt, Message, MessageType};
use berth_dns::store::{Entry, NetworkState};
use berth_dns::wire::{self, parse_answer, parse_query, reverse_address, Malformed};
use berth_dns::zone::{Decision, Zone};
use std::net::Ipv4Addr;

fn zone() -> Zone {
    let entry = |id: &str, names: &[&str], ips: &[&str]| Entry {
        container_id: id.into(),
        ifname: "eth0".into(),
        netns: "/var/run/netns/c1".into(),
        names: names.iter().map(|n| n.to_string()).collect(),
        ips: ips.iter().map(|ip| ip.parse().unwrap()).collect(),
    };
    Zone::new(&NetworkState {
        domain: "dns.podman".into(),
        entries: vec![entry("c1", &["web", "www"], &["10.88.0.2", "fd00::2"]), entry("c2", &["db"], &["10.88.0.3"])],
        ..NetworkState::default()
    })
}

fn run_dns(packet: &[u8]) -> bool {
    // Whatever a client sent, what the server would relay back from upstream is parsed too.
    let _ = parse_answer(packet);
    let query = match parse_query(packet) {
        Ok(query) => query,
        Err(Malformed::Drop) => return false,
        Err(Malformed::Reply { id, flags, rcode }) => {
            let reply = wire::error_response(id, flags, rcode);
            assert_eq!(parse_answer(&reply).map(|a| a.rcode), Some(rcode), "an error reply reads back");
            return false;
        }
    };
    let _ = reverse_address(&query.name);
    if let Decision::Reply(reply) = zone().answer(&query) {
        let answer = parse_answer(&reply).expect("the server's answers parse");
        assert_eq!(answer.id, query.id);
    }
    true
}

fn dns_seeds() -> Vec<Vec<u8>> {
    let mut seeds: Vec<Vec<u8>> = [
        ("web", wire::TYPE_A),
        ("web.dns.podman", wire::TYPE_AAAA),
        ("db.dns.podman", wire::TYPE_ANY),
        ("nothere.dns.podman", wire::TYPE_A),
        ("example.com", wire::TYPE_A),
        ("2.0.88.10.in-addr.arpa", wire::TYPE_PTR),
        (&wire::reverse_name("fd00::2".parse().unwrap()), wire::TYPE_PTR),
    ]
    .iter()
    .map(|(name, qtype)| wire::build_query(0x1234, name, *qtype))
    .collect();
    let query = wire::build_query(7, "web.dns.podman", wire::TYPE_A);
    if let Ok(q) = parse_query(&query) {
        if let Decision::Reply(reply) = zone().answer(&q) {
            seeds.push(reply);
        }
    }
    seeds
}

fn run_dhcp(packet: &[u8]) -> bool {
    let Ok(message) = Message::decode(packet) else { return false };
    let _ = message.kind();
    let encoded = message.encode();
    let again = Message::decode(&encoded).expect("an encoded message decodes");
    assert_eq!(again, message, "decode(encode(m)) == m");
    if let Some(routes) = message.option(opt::CLASSLESS_ROUTES) {
        let _ = classless_routes(routes);
    }
    if let Ok(grant) = Grant::from_ack(&message, Some(Ipv4Addr::new(192, 0, 2, 1))) {
        assert!(grant.t1 < grant.t2 && grant.t2 < grant.lease_time, "renew, rebind, expire in order");
    }
    true
}

fn dhcp_seeds() -> Vec<Vec<u8>> {
    let mut ack = Message::request(MessageType::Ack, 0xdead_beef, [0x0a, 0, 0, 0, 0, 1]);
    ack.op = 2;
    ack.yiaddr = Ipv4Addr::new(192, 0, 2, 50);
    ack.push(opt::SERVER_ID, [192, 0, 2, 1]);
    ack.push(opt::SUBNET_MASK, [255, 255, 255, 0]);
    ack.push(opt::ROUTER, [192, 0, 2, 1]);
    ack.push(opt::DNS, [192, 0, 2, 1, 192, 0, 2, 2]);
    ack.push(opt::DOMAIN_NAME, b"lan".to_vec());
    ack.push(opt::LEASE_TIME, 3600u32.to_be_bytes());
    ack.push(opt::T1, 1800u32.to_be_bytes());
    ack.push(opt::T2, 3150u32.to_be_bytes());
    ack.push(opt::CLASSLESS_ROUTES, vec![24, 10, 1, 2, 192, 0, 2, 1, 0, 192, 0, 2, 1]);
    ack.push(opt::MESSAGE, vec![b'x'; 300]);
    let mut offer = ack.clone();
    offer.options[0] = (opt::MESSAGE_TYPE, vec![MessageType::Offer as u8]);
    let discover = Message::request(MessageType::Discover, 1, [2, 0, 0, 0, 0, 2]);
    vec![ack.encode(), offer.encode(), discover.encode()]
}

pub fn targets() -> Vec<Target> {
    vec![
        Target {
            name: "dns_packet",
            seeds: dns_seeds,
            dictionary: &[b"\xc0\x0c", b"\x00\x01\x00\x01", b"\x3f", b"\x00"],
            run: run_dns,
        },
        Target {
            name: "dhcp_packet",
            seeds: dhcp_seeds,
            dictionary: &[b"\x63\x82\x53\x63", b"\xff", b"\x79\x05", b"\x35\x01\x05"],
            run: run_dhcp,
        },
    ]
}

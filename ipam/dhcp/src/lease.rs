//! A lease as the plugin obtained it and the keeper holds it: what the server said, whom it
//! was for, and when it must be renewed; and the pending record that comes before it, while
//! the plugin asks the server for an address. Either is the keeper's state file for an
//! attachment.

use crate::error::{DhcpError, Result};
use crate::message::{self, opt, Message};
use berth_cni::spec::{Dns, IpConfig, Route, RunResult};
use ipnet::{IpNet, Ipv4Net};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

/// Which attachment a lease belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Owner {
    pub network: String,
    pub container_id: String,
    pub ifname: String,
}

impl Owner {
    /// A file name for the lease: stable, and safe whatever the names hold.
    pub fn key(&self) -> String {
        let parts = [self.network.as_bytes(), b"\0", self.container_id.as_bytes(), b"\0", self.ifname.as_bytes()];
        format!("{:016x}", berth_util::hash::fnv1a64(parts))
    }
}

/// The client an address is for: the attachment, where its interface is, and how it names
/// itself to the server. A lease and a pending record each have one (written inline in their
/// JSON, as before it was a struct of its own).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Endpoint {
    pub owner: Owner,
    /// The container's namespace as CNI_NETNS named it, and its (device, inode) then: a
    /// namespace gone, or another one at the same path, ends the lease.
    pub netns: PathBuf,
    pub netns_id: (u64, u64),
    pub mac: [u8; 6],
    /// The options sent with every message (client identifier, hostname, `provide`).
    pub provide: Vec<(u8, Vec<u8>)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lease {
    #[serde(flatten)]
    pub endpoint: Endpoint,
    pub request: Vec<u8>,
    pub address: Ipv4Net,
    pub server: Ipv4Addr,
    pub routers: Vec<Ipv4Addr>,
    /// Option 121, when the server sent it.
    pub classless_routes: Vec<(Ipv4Net, Ipv4Addr)>,
    pub dns: Vec<Ipv4Addr>,
    pub domain: String,
    pub priority: Option<u32>,
    /// Unix seconds when the server granted or last renewed the lease.
    pub bound_at: u64,
    /// Seconds after `bound_at`: renew (T1), rebind (T2), expiry.
    pub t1: u32,
    pub t2: u32,
    pub lease_time: u32,
}

/// An address the plugin is about to ask the server for (its DHCPREQUEST). The keeper records
/// it before the request goes out: from then on the server may commit the lease at any
/// instant, and a plugin killed before it hands the lease over leaves this record for DEL,
/// GC or the keeper itself to release. The plugin's Hold turns it into the [`Lease`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    #[serde(flatten)]
    pub endpoint: Endpoint,
    /// What the server offered, and which server.
    pub address: Ipv4Addr,
    pub server: Ipv4Addr,
    /// The ADD's own number: its Hold names it, so a Hold whose record a DEL, a GC or a later
    /// ADD of the same attachment replaced is recognised.
    pub attempt: u64,
    /// Unix seconds after which the ADD can no longer hand the lease over (its exchange and
    /// its Hold have timed out): the keeper then releases the address on its own.
    pub abandon_at: u64,
}

/// What giving an address back takes (a DHCPRELEASE): the client, the address and the server
/// it came from. A held lease and a pending record both have it.
pub struct Claim<'a> {
    pub endpoint: &'a Endpoint,
    pub address: Ipv4Addr,
    pub server: Ipv4Addr,
}

impl Pending {
    pub fn claim(&self) -> Claim<'_> {
        Claim { endpoint: &self.endpoint, address: self.address, server: self.server }
    }
}

pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// What an ACK grants: the address and the options the lease is made of.
pub struct Grant {
    pub address: Ipv4Net,
    pub server: Ipv4Addr,
    pub routers: Vec<Ipv4Addr>,
    pub classless_routes: Vec<(Ipv4Net, Ipv4Addr)>,
    pub dns: Vec<Ipv4Addr>,
    pub domain: String,
    pub t1: u32,
    pub t2: u32,
    pub lease_time: u32,
}

impl Grant {
    /// Reads an ACK; `server` is the server identifier of the exchange, when the ACK lacks one.
    pub fn from_ack(ack: &Message, server: Option<Ipv4Addr>) -> Result<Grant> {
        let server = ack
            .addr_option(opt::SERVER_ID)
            .or(server)
            .ok_or_else(|| DhcpError::Malformed("an ACK without a server identifier".into()))?;
        let prefix = match ack.addr_option(opt::SUBNET_MASK) {
            Some(mask) => message::mask_prefix(mask).ok_or_else(|| DhcpError::Malformed(format!("subnet mask {mask}")))?,
            // RFC 2131 lets a server leave it out; the classful mask is what clients assume.
            None => classful_prefix(ack.yiaddr),
        };
        let address = Ipv4Net::new(ack.yiaddr, prefix).map_err(|e| DhcpError::Malformed(e.to_string()))?;
        // An infinite lease (0xffffffff) is renewed daily all the same: the keeper then
        // notices a namespace that is gone.
        let lease_time = ack.u32_option(opt::LEASE_TIME).unwrap_or(3600).clamp(4, u32::MAX / 2);
        // T1 < T2 < lease time (RFC 2131, 4.4.5): a T1 that leaves no second for T2 before
        // the lease runs out is the server's mistake, and the default is taken instead.
        let t1 = ack.u32_option(opt::T1).filter(|&t| t < lease_time - 1).unwrap_or(lease_time / 2);
        let t2 = ack.u32_option(opt::T2).filter(|&t| t > t1 && t < lease_time).unwrap_or((lease_time / 8 * 7).max(t1 + 1));
        let classless_routes = match ack.option(opt::CLASSLESS_ROUTES) {
            Some(v) => message::classless_routes(v)?,
            None => Vec::new(),
        };
        let domain = ack.option(opt::DOMAIN_NAME).map(|v| String::from_utf8_lossy(v).trim_end_matches('\0').to_string());
        Ok(Grant {
            address,
            server,
            routers: ack.addrs_option(opt::ROUTER),
            classless_routes,
            dns: ack.addrs_option(opt::DNS),
            domain: domain.unwrap_or_default(),
            t1,
            t2,
            lease_time,
        })
    }
}

fn classful_prefix(addr: Ipv4Addr) -> u8 {
    match addr.octets()[0] {
        0..=127 => 8,
        128..=191 => 16,
        _ => 24,
    }
}

impl Lease {
    pub fn claim(&self) -> Claim<'_> {
        Claim { endpoint: &self.endpoint, address: self.address.addr(), server: self.server }
    }

    /// Takes a renewal's ACK: new times, and options the server may have changed.
    pub fn renewed(&mut self, grant: Grant) {
        self.server = grant.server;
        self.routers = grant.routers;
        self.classless_routes = grant.classless_routes;
        self.dns = grant.dns;
        self.domain = grant.domain;
        self.t1 = grant.t1;
        self.t2 = grant.t2;
        self.lease_time = grant.lease_time;
        self.bound_at = now();
    }

    pub fn renew_at(&self) -> u64 {
        self.bound_at + u64::from(self.t1)
    }

    pub fn rebind_at(&self) -> u64 {
        self.bound_at + u64::from(self.t2)
    }

    pub fn expires_at(&self) -> u64 {
        self.bound_at + u64::from(self.lease_time)
    }

    /// The ADD result: the address with the first router as its gateway; the classless
    /// routes when the server sent them (RFC 3442: then the router option gives no route),
    /// else a default route through the router; the DNS servers and domain.
    pub fn result(&self) -> RunResult {
        let gateway = self.routers.first().copied().map(IpAddr::V4);
        let ips = vec![IpConfig { interface: None, address: IpNet::V4(self.address), gateway }];
        let mut routes: Vec<Route> = if self.classless_routes.is_empty() {
            gateway.map(|gw| Route::new(IpNet::V4(Ipv4Net::default()), Some(gw))).into_iter().collect()
        } else {
            let gw = |g: Ipv4Addr| (!g.is_unspecified()).then_some(IpAddr::V4(g));
            self.classless_routes.iter().map(|(dst, g)| Route::new(IpNet::V4(*dst), gw(*g))).collect()
        };
        for route in &mut routes {
            route.priority = self.priority;
        }
        let dns = Dns {
            nameservers: self.dns.iter().map(ToString::to_string).collect(),
            domain: self.domain.clone(),
            ..Default::default()
        };
        RunResult { ips, routes, dns, ..Default::default() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::MessageType;

    fn ack(options: &[(u8, &[u8])]) -> Message {
        let mut m = Message::request(MessageType::Ack, 1, [0; 6]);
        m.op = 2;
        m.yiaddr = Ipv4Addr::new(10, 5, 0, 23);
        for (c, v) in options {
            m.push(*c, v.to_vec());
        }
        m
    }

    /// Fuzzing (berth-fuzz, AFL++ on `dhcp_packet`): an ACK with a lease time of 16843022 s
    /// and a T1 one second shorter, without T2, gave T2 == the lease time: the keeper would
    /// have tried to rebind only when the lease had already run out.
    #[test]
    fn renew_and_rebind_come_before_expiry_whatever_t1_says() {
        for t1 in [16_843_021u32, 16_843_022, 16_843_020, 0] {
            let m = ack(&[
                (opt::SERVER_ID, &[10, 5, 0, 1]),
                (opt::LEASE_TIME, &16_843_022u32.to_be_bytes()),
                (opt::T1, &t1.to_be_bytes()),
            ]);
            let g = Grant::from_ack(&m, None).unwrap();
            assert!(g.t1 < g.t2 && g.t2 < g.lease_time, "T1 {t1}: {} {} {}", g.t1, g.t2, g.lease_time);
        }
        let shortest =
            ack(&[(opt::SERVER_ID, &[10, 5, 0, 1]), (opt::LEASE_TIME, &0u32.to_be_bytes()), (opt::T1, &3u32.to_be_bytes())]);
        let g = Grant::from_ack(&shortest, None).unwrap();
        assert!(g.t1 < g.t2 && g.t2 < g.lease_time, "{} {} {}", g.t1, g.t2, g.lease_time);
    }

    #[test]
    fn an_ack_becomes_a_result() {
        let m = ack(&[
            (opt::SERVER_ID, &[10, 5, 0, 1]),
            (opt::SUBNET_MASK, &[255, 255, 255, 0]),
            (opt::ROUTER, &[10, 5, 0, 1]),
            (opt::DNS, &[10, 5, 0, 2, 10, 5, 0, 3]),
            (opt::DOMAIN_NAME, b"lan.example"),
            (opt::LEASE_TIME, &120u32.to_be_bytes()),
            (opt::T1, &10u32.to_be_bytes()),
        ]);
        let g = Grant::from_ack(&m, None).unwrap();
        assert_eq!((g.t1, g.t2, g.lease_time), (10, 105, 120));
        let lease = sample(g);
        let r = lease.result();
        assert_eq!(r.ips[0].address.to_string(), "10.5.0.23/24");
        assert_eq!(r.ips[0].gateway, Some("10.5.0.1".parse().unwrap()));
        assert_eq!(r.routes[0].dst.to_string(), "0.0.0.0/0");
        assert_eq!(r.dns.nameservers, ["10.5.0.2", "10.5.0.3"]);
        assert_eq!(r.dns.domain, "lan.example");
    }

    #[test]
    fn classless_routes_replace_the_router_route() {
        let m = ack(&[(opt::ROUTER, &[10, 5, 0, 1]), (opt::CLASSLESS_ROUTES, &[8, 172, 10, 5, 0, 9, 0, 10, 5, 0, 1])]);
        let r = sample(Grant::from_ack(&m, Some(Ipv4Addr::new(10, 5, 0, 1))).unwrap()).result();
        let routes: Vec<String> = r.routes.iter().map(|r| format!("{} {:?}", r.dst, r.gw)).collect();
        assert_eq!(routes, ["172.0.0.0/8 Some(10.5.0.9)", "0.0.0.0/0 Some(10.5.0.1)"]);
        assert_eq!(r.ips[0].address.to_string(), "10.5.0.23/8", "classful without a mask");
    }

    /// Lease files and the plugin's Hold carry the endpoint's fields inline, as they did
    /// before it was a struct: keepers and plugins of either layout read each other.
    #[test]
    fn the_endpoint_is_written_inline() {
        let m = ack(&[(opt::SERVER_ID, &[10, 5, 0, 1])]);
        let lease = sample(Grant::from_ack(&m, None).unwrap());
        let json = serde_json::to_value(&lease).unwrap();
        for key in ["owner", "netns", "netns_id", "mac", "provide", "request", "address", "server"] {
            assert!(json.get(key).is_some(), "{key} at the top level: {json}");
        }
        assert!(json.get("endpoint").is_none());
        let earlier = r#"{"owner": {"network": "n", "container_id": "c", "ifname": "eth0"}, "netns": "/var/run/netns/c",
            "netns_id": [1, 2], "mac": [2, 0, 0, 0, 0, 1], "provide": [], "request": [], "address": "10.5.0.23/8",
            "server": "10.5.0.1", "routers": [], "classless_routes": [], "dns": [], "domain": "", "priority": null,
            "bound_at": 0, "t1": 1800, "t2": 3150, "lease_time": 3600}"#;
        assert_eq!(serde_json::from_str::<Lease>(earlier).unwrap().endpoint, lease.endpoint);
    }

    fn sample(g: Grant) -> Lease {
        Lease {
            endpoint: Endpoint {
                owner: Owner { network: "n".into(), container_id: "c".into(), ifname: "eth0".into() },
                netns: "/var/run/netns/c".into(),
                netns_id: (1, 2),
                mac: [2, 0, 0, 0, 0, 1],
                provide: vec![],
            },
            request: vec![],
            address: g.address,
            server: g.server,
            routers: g.routers,
            classless_routes: g.classless_routes,
            dns: g.dns,
            domain: g.domain,
            priority: None,
            bound_at: 0,
            t1: g.t1,
            t2: g.t2,
            lease_time: g.lease_time,
        }
    }
}

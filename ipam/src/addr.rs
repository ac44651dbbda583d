//! Addresses as integers, so both families can be walked and compared the same way.

use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub fn to_int(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The address numbered `n` in the family of `like`; IPv4 values are truncated to 32 bits.
pub fn from_int(like: IpAddr, n: u128) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(n as u32)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(n)),
    }
}

/// First and last address of a prefix (network and broadcast for IPv4).
pub fn bounds(net: &IpNet) -> (u128, u128) {
    (to_int(net.network()), to_int(net.broadcast()))
}

/// IPv4-mapped IPv6 addresses become IPv4, as the reference plugins canonicalize them.
pub fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_both_families() {
        for s in ["10.0.0.1", "255.255.255.255", "fd00::1", "::"] {
            let ip: IpAddr = s.parse().unwrap();
            assert_eq!(from_int(ip, to_int(ip)), ip);
        }
        let net: IpNet = "10.0.0.0/30".parse().unwrap();
        assert_eq!(bounds(&net), (0x0a00_0000, 0x0a00_0003));
        assert_eq!(canonical("::ffff:10.0.0.5".parse().unwrap()), "10.0.0.5".parse::<IpAddr>().unwrap());
    }
}

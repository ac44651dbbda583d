//! pipework's command lines, as its script reads them, into what they ask for.
//!
//! ```text
//! pipework [--direct-phys] HOSTIF [-i CONTAINER_IF] [-l LOCAL_IF] [-a 4|6] GUEST ADDRESS [MAC][@VLAN]
//! pipework route|rule|tc GUEST ARGS...
//! pipework --wait [-i CONTAINER_IF]
//! ```
//!
//! berth adds `--remove` (anywhere after HOSTIF) and `ls`.

use ipnet::IpNet;
use std::net::IpAddr;

/// pipework's default container interface.
pub const DEFAULT_CONTAINER_IF: &str = "eth1";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    Wire(Wiring),
    /// `route GUEST ARGS`, `rule GUEST ARGS`, `tc GUEST ARGS`: `ip route ARGS`, `ip rule
    /// ARGS`, `tc ARGS` inside the guest.
    InGuest { tool: GuestTool, guest: String, args: Vec<String> },
    /// `--wait [-i IF]`: inside a container, until IF exists and has carrier.
    Wait { ifname: String },
    /// What berth pipework wired and has not removed.
    List,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestTool {
    Route,
    Rule,
    Tc,
}

/// One wiring: a host interface, a guest, an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wiring {
    pub host: HostInterface,
    pub container_if: String,
    /// `-l`: the host end's name (Linux and OVS bridges).
    pub local_if: Option<String>,
    /// `-a 4|6`.
    pub family: Option<u8>,
    pub guest: String,
    pub address: Address,
    pub mac: Option<MacSpec>,
    pub vlan: Option<u16>,
    /// `--direct-phys`: the host interface itself moves into the guest.
    pub direct_phys: bool,
    /// `--remove`: undo this wiring.
    pub remove: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostInterface {
    Named(String),
    /// `mac:HOSTMAC`: the host interface with that MAC.
    ByMac(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// `IP/PREFIX[@GATEWAY]`.
    Static { address: IpNet, gateway: Option<IpAddr> },
    /// `0/0`: up, no address.
    None,
    /// `dhcp[:OPTIONS]` (berth-dhcp), or a client pipework runs in the guest.
    Dhcp { client: DhcpClient, options: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DhcpClient {
    /// `dhcp`: berth-dhcp, whose keeper renews the lease.
    Berth,
    Udhcpc { foreground: bool },
    Dhclient { foreground: bool },
    Dhcpcd,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MacSpec {
    Fixed(String),
    /// `U:STRING`: pipework's stable MAC derived from STRING.
    Derived(String),
}

/// What is wrong with a command line, for the person who typed it.
pub type SyntaxError = String;

pub fn parse(args: &[String]) -> Result<Line, SyntaxError> {
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    match words.as_slice() {
        [] => Err("nothing to do: see `berth pipework --help`".into()),
        ["ls"] => Ok(Line::List),
        ["--wait", rest @ ..] => parse_wait(rest),
        [tool @ ("route" | "rule" | "tc"), guest, rest @ ..] => Ok(Line::InGuest {
            tool: match *tool {
                "route" => GuestTool::Route,
                "rule" => GuestTool::Rule,
                _ => GuestTool::Tc,
            },
            guest: guest.to_string(),
            args: rest.iter().map(|s| s.to_string()).collect(),
        }),
        ["--direct-phys", rest @ ..] => parse_wiring(rest, true),
        rest => parse_wiring(rest, false),
    }
}

fn parse_wait(rest: &[&str]) -> Result<Line, SyntaxError> {
    match rest {
        [] => Ok(Line::Wait { ifname: DEFAULT_CONTAINER_IF.into() }),
        ["-i", ifname] => Ok(Line::Wait { ifname: ifname.to_string() }),
        _ => Err(format!("--wait takes only -i IFNAME, not {:?}", rest.join(" "))),
    }
}

/// HOSTIF, the options between it and GUEST, then GUEST ADDRESS [MAC][@VLAN].
fn parse_wiring(words: &[&str], direct_phys: bool) -> Result<Line, SyntaxError> {
    let (host, rest) = words.split_first().ok_or("the host interface is missing")?;
    let mut options = WiringOptions::default();
    let positional = options.take_from(rest)?;
    let (guest, address, last) = match positional.as_slice() {
        [guest, address] => (guest, address, None),
        [guest, address, last] => (guest, address, Some(*last)),
        [] | [_] => return Err("GUEST and ADDRESS are required (e.g. `berth pipework br1 web 192.168.1.5/24`)".into()),
        _ => return Err(format!("too many arguments: {:?}", positional.join(" "))),
    };
    let (mac, vlan) = last.map(parse_mac_and_vlan).transpose()?.unwrap_or((None, None));
    Ok(Line::Wire(Wiring {
        host: parse_host(host)?,
        container_if: options.container_if.unwrap_or_else(|| DEFAULT_CONTAINER_IF.into()),
        local_if: options.local_if,
        family: options.family,
        guest: guest.to_string(),
        address: parse_address(address)?,
        mac,
        vlan,
        direct_phys,
        remove: options.remove,
    }))
}

#[derive(Default)]
struct WiringOptions {
    container_if: Option<String>,
    local_if: Option<String>,
    family: Option<u8>,
    remove: bool,
}

impl WiringOptions {
    /// Takes `-i`, `-l`, `-a` and `--remove` out of `words`; the rest, in order.
    fn take_from<'a>(&mut self, words: &[&'a str]) -> Result<Vec<&'a str>, SyntaxError> {
        let mut rest = Vec::new();
        let mut words = words.iter();
        while let Some(&word) = words.next() {
            let mut value = |flag: &str| words.next().map(|v| v.to_string()).ok_or(format!("{flag} needs a value"));
            match word {
                "-i" => self.container_if = Some(value("-i")?),
                "-l" => self.local_if = Some(value("-l")?),
                "-a" => self.family = Some(parse_family(&value("-a")?)?),
                "--remove" => self.remove = true,
                flag if flag.starts_with('-') && flag.len() > 1 => return Err(format!("unknown option {flag}")),
                other => rest.push(other),
            }
        }
        Ok(rest)
    }
}

fn parse_family(value: &str) -> Result<u8, SyntaxError> {
    match value {
        "4" => Ok(4),
        "6" => Ok(6),
        other => Err(format!("-a takes 4 or 6, not {other:?}")),
    }
}

fn parse_host(word: &str) -> Result<HostInterface, SyntaxError> {
    match word.strip_prefix("mac:") {
        Some(mac) => Ok(HostInterface::ByMac(mac.to_ascii_lowercase())),
        None if word.is_empty() => Err("the host interface is empty".into()),
        None => Ok(HostInterface::Named(word.to_string())),
    }
}

fn parse_address(word: &str) -> Result<Address, SyntaxError> {
    let (name, options) = match word.split_once(':') {
        Some((name, options)) if is_dhcp_word(name) => (name, options.to_string()),
        _ => (word, String::new()),
    };
    let client = match name {
        "dhcp" => Some(DhcpClient::Berth),
        "udhcpc" => Some(DhcpClient::Udhcpc { foreground: false }),
        "udhcpc-f" => Some(DhcpClient::Udhcpc { foreground: true }),
        "dhclient" => Some(DhcpClient::Dhclient { foreground: false }),
        "dhclient-f" => Some(DhcpClient::Dhclient { foreground: true }),
        "dhcpcd" => Some(DhcpClient::Dhcpcd),
        _ => None,
    };
    if let Some(client) = client {
        return Ok(Address::Dhcp { client, options });
    }
    if word == "0/0" {
        return Ok(Address::None);
    }
    let (address, gateway) = match word.split_once('@') {
        Some((a, g)) => (a, Some(g)),
        None => (word, None),
    };
    let address: IpNet =
        address.parse().map_err(|_| format!("{address:?} is not IP/PREFIX (e.g. 172.17.2.24/24), 0/0 or dhcp"))?;
    let gateway = gateway
        .map(|g| g.parse::<IpAddr>().map_err(|_| format!("gateway {g:?} is not an IP address")))
        .transpose()?;
    if gateway.is_some_and(|g| g.is_ipv4() != address.addr().is_ipv4()) {
        return Err(format!("gateway and address {address} are of different families"));
    }
    Ok(Address::Static { address, gateway })
}

fn is_dhcp_word(word: &str) -> bool {
    matches!(word, "dhcp" | "udhcpc" | "udhcpc-f" | "dhclient" | "dhclient-f" | "dhcpcd")
}

/// `[MAC][@VLAN]`: `02:42:ac:11:00:02`, `U:web1`, `@100`, `MAC@100`.
fn parse_mac_and_vlan(word: &str) -> Result<(Option<MacSpec>, Option<u16>), SyntaxError> {
    let (mac, vlan) = match word.split_once('@') {
        Some((mac, vlan)) => (mac, Some(vlan)),
        None => (word, None),
    };
    let vlan = vlan
        .map(|v| match v.parse::<u16>() {
            Ok(id) if (1..=4094).contains(&id) => Ok(id),
            _ => Err(format!("VLAN {v:?} is not a number from 1 to 4094")),
        })
        .transpose()?;
    let mac = match mac {
        "" => None,
        m => Some(match m.strip_prefix("U:") {
            Some(seed) => MacSpec::Derived(seed.to_string()),
            None => {
                m.parse::<berth_netlink::MacAddr>().map_err(|_| format!("{m:?} is not a MAC address (or U:STRING)"))?;
                MacSpec::Fixed(m.to_ascii_lowercase())
            }
        }),
    };
    Ok((mac, vlan))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(s: &str) -> Result<Line, SyntaxError> {
        parse(&s.split_whitespace().map(str::to_string).collect::<Vec<_>>())
    }

    fn wiring(s: &str) -> Wiring {
        match line(s) {
            Ok(Line::Wire(w)) => w,
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn every_pipework_form_is_read() {
        let w = wiring("br1 web 192.168.1.5/24@192.168.1.254");
        assert_eq!(w.host, HostInterface::Named("br1".into()));
        assert_eq!((w.container_if.as_str(), w.guest.as_str()), ("eth1", "web"));
        assert_eq!(w.address, Address::Static { address: "192.168.1.5/24".parse().unwrap(), gateway: Some("192.168.1.254".parse().unwrap()) });
        let w = wiring("ovs0 ovs-test-01 172.20.0.2/24 @100");
        assert_eq!((w.vlan, w.mac), (Some(100), None));
        let w = wiring("br1 -i eth2 -l vethweb -a 6 web 2001:db8::5/64 26:2e:71:98:60:8f@10");
        assert_eq!((w.container_if.as_str(), w.local_if.as_deref(), w.family), ("eth2", Some("vethweb"), Some(6)));
        assert_eq!((w.mac, w.vlan), (Some(MacSpec::Fixed("26:2e:71:98:60:8f".into())), Some(10)));
        assert_eq!(wiring("eth0 web dhcp U:web").mac, Some(MacSpec::Derived("web".into())));
        assert_eq!(wiring("eth0 web dhcp:-f").address, Address::Dhcp { client: DhcpClient::Berth, options: "-f".into() });
        assert_eq!(wiring("eth0 web udhcpc-f").address, Address::Dhcp { client: DhcpClient::Udhcpc { foreground: true }, options: String::new() });
        assert_eq!(wiring("br1 web 0/0").address, Address::None);
        assert_eq!(wiring("mac:AA:BB:CC:DD:EE:FF web 10.0.0.2/24").host, HostInterface::ByMac("aa:bb:cc:dd:ee:ff".into()));
        assert!(wiring("--direct-phys eth1 web 10.0.0.2/24").direct_phys);
        assert!(wiring("br1 web 10.0.0.2/24 --remove").remove);
        assert_eq!(line("--wait").unwrap(), Line::Wait { ifname: "eth1".into() });
        assert_eq!(line("--wait -i eth3").unwrap(), Line::Wait { ifname: "eth3".into() });
        assert_eq!(line("ls").unwrap(), Line::List);
        let Line::InGuest { tool, guest, args } = line("route web add 10.0.0.0/8 via 192.168.1.254").unwrap() else { panic!() };
        assert_eq!((tool, guest.as_str(), args.len()), (GuestTool::Route, "web", 4));
    }

    #[test]
    fn bad_lines_say_what_is_wrong() {
        for (bad, says) in [
            ("br1 web", "required"),
            ("br1 web 10.0.0.2", "IP/PREFIX"),
            ("br1 web 10.0.0.2/24@fe80::1", "families"),
            ("br1 web 10.0.0.2/24 @5000", "VLAN"),
            ("br1 web 10.0.0.2/24 zz:zz", "MAC"),
            ("br1 -x web 10.0.0.2/24", "unknown option"),
            ("br1 -a 5 web 10.0.0.2/24", "-a takes"),
            ("br1 web 10.0.0.2/24 @1 extra", "too many"),
        ] {
            let err = line(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}

//! `berth pipework`: pipework's command lines, done with berth's plugins and netlink.
//! [`line`] reads a command line; [`wire`] wires (or, with `--remove`, unwires) a guest
//! through a one-plugin network named after the host interface; [`guest`] and [`tc`] run
//! `ip route`, `ip rule` and `tc` forms inside a guest; [`wait`] is `--wait`.

mod dhcp_client;
mod guest;
pub mod line;
mod tc;
mod wait;
mod wire;

use crate::error::{BerthError, BerthResult};
use crate::Context;
use clap::Args;
use line::Line;

#[derive(Args)]
#[command(
    disable_help_flag = false,
    after_long_help = FORMS,
    after_help = "Run `berth pipework --help` for every form, with examples."
)]
pub struct PipeworkArgs {
    /// A pipework command line (see below).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0.., value_name = "PIPEWORK ARGS")]
    pub words: Vec<String>,
}

const FORMS: &str = "\
Forms (pipework's, plus --remove and ls):
  berth pipework HOSTIF [-i CONTAINER_IF] [-l LOCAL_IF] [-a 4|6] GUEST IP/PREFIX[@GATEWAY] [MAC][@VLAN]
  berth pipework HOSTIF [-i CONTAINER_IF] GUEST dhcp[:OPTIONS] [MAC][@VLAN]
  berth pipework HOSTIF GUEST udhcpc|udhcpc-f|dhclient|dhclient-f|dhcpcd [MAC][@VLAN]
  berth pipework mac:HOST_MAC GUEST ...           the host interface with that MAC
  berth pipework --direct-phys HOSTIF GUEST ...   move HOSTIF itself into the guest
  berth pipework route|rule|tc GUEST ARGS...      ip route / ip rule / tc inside the guest
  berth pipework --wait [-i CONTAINER_IF]         inside a container: wait for the interface
  berth pipework ... --remove                     undo a wiring
  berth pipework ls                               what was wired

HOSTIF: an existing Linux bridge (a veth on it), an existing Open vSwitch bridge (a veth
port; @VLAN is its tag), a missing br* name (a new Linux bridge), a missing ovs* name (a new
OVS bridge), or any other interface (a macvlan in bridge mode on it; @VLAN puts it on
HOSTIF.VLAN, created when missing). GUEST: a Docker or podman container (name, ID or
prefix), a netns name or path, a PID. CONTAINER_IF defaults to eth1; the MTU is HOSTIF's.
IP/PREFIX 0/0 brings the interface up without an address; U:STRING as MAC derives a stable
MAC from STRING. The firewall is never touched.

Examples:
  berth pipework br1 web 192.168.1.5/24@192.168.1.254
  berth pipework ovs0 ovs-test-01 172.20.0.2/24 @100
  berth pipework eth2 -i eth1 db dhcp U:db
  berth pipework eth0 web 10.0.0.7/24@10.0.0.1 @42
  berth pipework route web add 10.9.0.0/16 via 192.168.1.254
  berth pipework tc web qdisc add dev eth1 root tbf rate 10mbit burst 32kb latency 50ms
  berth pipework br1 web 192.168.1.5/24 --remove";

pub fn run(ctx: &Context, args: &PipeworkArgs) -> BerthResult<()> {
    match line::parse(&args.words).map_err(BerthError::InvalidArgument)? {
        Line::Wire(w) => wire::wire(ctx, &w),
        Line::InGuest { tool, guest, args } => guest::run(tool, &guest, &args),
        Line::Wait { ifname } => wait::run(&ifname),
        Line::List => list(ctx),
    }
}

fn list(ctx: &Context) -> BerthResult<()> {
    println!("{:<24} {:<16} {:<8} {:<6} ADDRESSES", "GUEST", "HOST INTERFACE", "IFACE", "VLAN");
    for cached in wire::wired(ctx)? {
        let host = cached.network.trim_start_matches(wire::NETWORK_PREFIX);
        let guest = cached.attachment.container_id.get(..12).unwrap_or(&cached.attachment.container_id);
        let vlan = wire::vlan_of(&cached).map_or("-".to_string(), |v| v.to_string());
        let addresses: Vec<String> = wire::addresses_of(&cached).iter().map(|a| a.to_string()).collect();
        println!("{guest:<24} {host:<16} {:<8} {vlan:<6} {}", cached.attachment.ifname, addresses.join(","));
    }
    Ok(())
}

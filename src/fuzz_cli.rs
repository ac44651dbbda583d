//! Fuzz targets of the front-end's own parsers, run with berth-fuzz's engine as every other
//! target is (conformance/fuzz): the clap tree with what it derives from a command line (the
//! network a `net create` writes, `-p` mappings, rates and sizes), and pipework's command
//! lines. An input is one argument per line.

use crate::{net, pipework, target, Cli, Commands};
use berth_fuzz::{check, Target};
use clap::Parser;

const DEFAULT_SECS: f64 = 3.0;

fn words(input: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(input).split('\n').map(str::to_string).collect()
}

fn run_cli(input: &[u8]) -> bool {
    let Ok(cli) = Cli::try_parse_from(std::iter::once("berth".to_string()).chain(words(input))) else { return false };
    match cli.command {
        Commands::Net { command: net::NetCommand::Create(args), .. } => {
            if let Ok(list) = net::create_list(&args) {
                let written = serde_json::to_vec(&list).expect("a conflist serializes");
                berth_cni::spec::ConfList::from_slice(&written).expect("the conflist berth writes reads back");
            }
        }
        Commands::Attach { args, .. } => {
            for spec in &args.publish {
                let _ = target::port_mapping(spec, None);
            }
        }
        Commands::Pipework { args, .. } => {
            let _ = pipework::line::parse(&args.words);
        }
        _ => {}
    }
    true
}

fn cli_seeds() -> Vec<Vec<u8>> {
    [
        "net create web --subnet 10.31.0.0/24 --subnet fd31::/64 --ipv6 --gateway 10.31.0.1 --ip-range 10.31.0.128/25",
        "net create lan -d macvlan --subnet 192.168.1.0/24 -o parent=eth0.42 -o macvlan_mode=bridge",
        "net create sw -d ovs --subnet 10.40.0.0/24 -o bridge=ovs0 -o vlan=100",
        "net create quiet --subnet 10.32.0.0/24 --internal -o icc=false -o mtu=1400 --label team=a --bandwidth",
        "net create ov -d overlay --vni 42 --remote 192.0.2.2 --vxlan-dev eth0 --vxlan-port 4789 --subnet 10.70.0.0/24 --ip-range 10.70.0.0/25",
        "net create ra --subnet 10.61.0.0/24 --peer 10.62.0.0/24=192.0.2.2 --aux-address gw2=10.61.0.2",
        "attach web mycontainer -p 8080:80 -p 127.0.0.1:5353:53/udp -p [::1]:80:80 --ip 10.31.0.42 --mac 02:42:0a:1f:00:2a",
        "attach web mycontainer --ingress-rate 10mbit --egress-rate 512kbit --burst 32kb",
        "attach web mycontainer --egress-rate 1gbit --burst 9223372036854775807",
        "detach web 4242 --ifname eth1",
        "volume create db --driver thin -o size=10G -o fs=xfs",
        "quota set /srv/xfs/vols/web --size 10M --inodes 10000",
        "pipework br1 -i eth2 -l vethweb web 10.1.0.5/24@10.1.0.1 U:web@42",
        "ps --format json",
    ]
    .iter()
    .map(|line| line.replace(' ', "\n").into_bytes())
    .collect()
}

fn run_pipework(input: &[u8]) -> bool {
    pipework::line::parse(&words(input)).is_ok()
}

fn pipework_seeds() -> Vec<Vec<u8>> {
    [
        "--direct-phys eth3 db 10.2.0.5/24",
        "--wait -i eth1",
        "br1 -i eth2 -l vethweb web 10.1.0.5/24 U:web",
        "br1 web 192.168.1.5/24@192.168.1.254 --remove",
        "eth0 web 10.0.0.7/24@10.0.0.1 @42",
        "eth2 db dhcp:-f",
        "mac:0a:00:00:00:00:01 -a 6 web fd00::5/64 0a:00:00:00:00:02@7",
        "ovs0 ovs-test-01 172.20.0.2/24 @100",
        "route web add 10.9.0.0/16 via 192.168.1.254",
        "tc web qdisc add dev eth1 root tbf rate 1mbit burst 32kbit latency 400ms",
        "ls",
    ]
    .iter()
    .map(|line| line.replace(' ', "\n").into_bytes())
    .collect()
}

const TOKENS: &[&[u8]] = &[b"\n--", b"\n-o\n", b"\n-p\n", b"=", b":", b"/", b"@", b"\n--ipv6", b"\n-d\n", b"\n--help", b"\x00"];

#[test]
fn cli_arguments() {
    check(&Target { name: "cli_arguments", seeds: cli_seeds, dictionary: TOKENS, run: run_cli }, DEFAULT_SECS);
}

#[test]
fn pipework_lines() {
    check(&Target { name: "pipework_lines", seeds: pipework_seeds, dictionary: TOKENS, run: run_pipework }, DEFAULT_SECS);
}

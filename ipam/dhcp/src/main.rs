//! `berth-dhcp`: the CNI IPAM plugin; `berth-dhcp daemon` runs its lease keeper.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("daemon") {
        std::process::exit(berth_dhcp::keeper::main(&args[1..]));
    }
    berth_cni::skel::run_main(&berth_dhcp::Dhcp)
}

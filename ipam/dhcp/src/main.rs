//! `berth-dhcp`: the CNI IPAM plugin; `berth-dhcp daemon` runs its lease keeper.

fn main() {
    // args_os: std::env::args panics when a runtime's CNI_PATH makes argv[0] not UTF-8. The
    // keeper's own arguments come from the JSON configuration, so they are UTF-8.
    let args: Vec<String> = std::env::args_os().skip(1).map(|a| a.to_string_lossy().into_owned()).collect();
    if args.first().map(String::as_str) == Some("daemon") {
        std::process::exit(berth_dhcp::keeper::main(&args[1..]));
    }
    berth_cni::skel::run_main(&berth_dhcp::Dhcp)
}

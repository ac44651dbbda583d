fn main() {
    // `berth-dns serve --dir DIR`: the network's DNS server, started by the first ADD.
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    if args.first().is_some_and(|a| a == "serve") {
        std::process::exit(berth_dns::server::main(&args[1..]));
    }
    berth_cni::skel::run_main(&berth_dns::DnsPlugin)
}

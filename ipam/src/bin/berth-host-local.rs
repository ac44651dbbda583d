fn main() {
    berth_plugins::skel::run_main(&berth_ipam::host_local::HostLocal)
}

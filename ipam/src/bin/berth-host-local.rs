fn main() {
    berth_cni::skel::run_main(&berth_ipam::host_local::HostLocal)
}

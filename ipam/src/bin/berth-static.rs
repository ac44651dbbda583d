fn main() {
    berth_cni::skel::run_main(&berth_ipam::static_ipam::Static)
}

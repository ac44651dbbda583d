fn main() {
    berth_plugins::skel::run_main(&berth_ipam::static_ipam::Static)
}

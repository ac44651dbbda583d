fn main() {
    // The default options: DEL waits for the kernel to free the veth, as it always has.
    berth_cni::skel::run_main(&berth_ovs::OvsPlugin)
}

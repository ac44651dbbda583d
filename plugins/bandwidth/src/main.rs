fn main() {
    // DEL returns once the ifb is unregistered; a detached child waits for the kernel to
    // free it (see berth-bridge's main).
    let options = berth_cni::skel::Options { return_before_kernel_frees_links: true };
    berth_cni::skel::run_main_with(&berth_bandwidth::BandwidthPlugin, options)
}

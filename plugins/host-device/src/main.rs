fn main() {
    berth_cni::skel::run_main(&berth_host_device::HostDevicePlugin)
}

fn main() { berth_ovs::run() }

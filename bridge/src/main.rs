fn main() { berth_bridge::run() }

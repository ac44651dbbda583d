fn main() { berth_macvlan::run() }

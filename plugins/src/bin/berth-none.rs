fn main() {
    berth_plugins::skel::run_main(&berth_plugins::none::NonePlugin)
}

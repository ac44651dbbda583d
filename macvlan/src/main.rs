use berth_cni::skel::{run_main_with, Options};

fn main() {
    // DEL returns once the macvlan is gone from its namespace, not once the kernel has also
    // freed it (15-18 ms of every DEL): a detached grandchild waits that out instead, holding
    // the trunk lock until then. Made here, not in the library, because only a process that
    // exits right after its answer may leave such a child behind; code calling the plugin
    // in-process keeps the default.
    let options = Options { return_before_kernel_frees_links: true };
    run_main_with(&berth_macvlan::MacvlanPlugin, options)
}

//! `TestHost`: a throwaway host namespace with container namespaces beside it.

use berth_cni::exec::{exec_plugin, find_plugin, CallEnv};
use berth_netlink::Netlink;
use berth_netns::{NetNs, NETNS_RUN_DIR};
use berth_cni::runtime::Runtime;
use berth_cni::skel::Command;
use berth_cni::CniResult;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A network namespace playing the container.
pub struct Container {
    pub name: String,
    pub path: PathBuf,
}

/// See [`TestHost::outside`].
pub struct Outside {
    pub world: Container,
    pub host_v4: std::net::Ipv4Addr,
    pub host_v6: std::net::Ipv6Addr,
    pub world_v4: std::net::Ipv4Addr,
    pub world_v6: std::net::Ipv6Addr,
}

/// A host network namespace in which plugins run; removed with its containers on drop,
/// even when the test panics.
pub struct TestHost {
    pub name: String,
    pub ns: NetNs,
    /// Scratch space for IPAM data, result caches and configs.
    pub dir: tempfile::TempDir,
    namespaces: std::cell::RefCell<Vec<String>>,
}

pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    assert_eq!(uid, 0, "this test creates network namespaces and needs root (run the README's test command as root)");
}

impl TestHost {
    pub fn new() -> TestHost {
        require_root();
        let name = unique_name("h");
        let ns = berth_netlink::create_named_netns(&name).unwrap_or_else(|e| panic!("create host namespace {name}: {e}"));
        let dir = tempfile::Builder::new().prefix("berth-test-").tempdir().expect("temp dir");
        TestHost { namespaces: std::cell::RefCell::new(vec![name.clone()]), name, ns, dir }
    }

    pub fn path(&self) -> PathBuf {
        Path::new(NETNS_RUN_DIR).join(&self.name)
    }

    /// A new container namespace with `lo` up.
    pub fn container(&self) -> Container {
        let name = unique_name("c");
        berth_netlink::create_named_netns(&name).unwrap_or_else(|e| panic!("create container namespace {name}: {e}"));
        self.namespaces.borrow_mut().push(name.clone());
        Container { path: Path::new(NETNS_RUN_DIR).join(&name), name }
    }

    /// Removes a container's namespace before the end of the test (the runtime lost it).
    pub fn remove_container(&self, container: &Container) {
        NetNs::delete_named(&container.name).expect("delete container namespace");
        self.namespaces.borrow_mut().retain(|n| n != &container.name);
    }

    /// An "outside" namespace playing the rest of the world: a veth `uplink0` from the host
    /// (192.0.2.1/24, fd00:1::1/64) to the outside's `eth0` (192.0.2.2/24, fd00:1::2/64), the
    /// host's default routes through it. The outside knows nothing of container subnets, so
    /// it reaches containers only through the host's address (published ports), and sees
    /// their traffic only when masqueraded.
    pub fn outside(&self) -> Outside {
        use berth_netlink::{RouteEntry, VethPeer};
        let world = self.container();
        let world_ns = NetNs::open(&world.path).expect("outside namespace");
        for ns in [&self.ns, &world_ns] {
            ns.run(|| berth_netns::sysctl::set("net/ipv6/conf/default/accept_dad", "0"))
                .expect("enter")
                .expect("no DAD, so addresses work at once");
        }
        let mut host = self.netlink();
        let peer = VethPeer { name: "eth0", netns: Some(&world_ns), mac: None };
        let uplink = host.create_veth("uplink0", &peer, None, None).expect("uplink veth");
        let mut outside = Netlink::open_in(&world_ns).expect("netlink in outside");
        let eth0 = outside.link_by_name("eth0").expect("list").expect("outside eth0");
        let o = Outside {
            host_v4: "192.0.2.1".parse().unwrap(),
            host_v6: "fd00:1::1".parse().unwrap(),
            world_v4: "192.0.2.2".parse().unwrap(),
            world_v6: "fd00:1::2".parse().unwrap(),
            world,
        };
        for (nl, index, v4, v6) in [(&mut host, uplink.index, o.host_v4, o.host_v6), (&mut outside, eth0.index, o.world_v4, o.world_v6)] {
            nl.add_address(index, ipnet::IpNet::new(v4.into(), 24).unwrap()).expect("v4 address");
            nl.add_address(index, ipnet::IpNet::new(v6.into(), 64).unwrap()).expect("v6 address");
            nl.set_up(index).expect("up");
        }
        for (dst, gw) in [("0.0.0.0/0", IpAddr::from(o.world_v4)), ("::/0", IpAddr::from(o.world_v6))] {
            let route = RouteEntry { dst: dst.parse().unwrap(), gateway: Some(gw), oif: Some(uplink.index), table: None, priority: None, mtu: None, scope: None };
            host.add_route(&route).expect("host default route");
        }
        o
    }

    /// A netlink socket in the host namespace, to look at what plugins did there.
    pub fn netlink(&self) -> Netlink {
        Netlink::open_in(&self.ns).expect("netlink in host namespace")
    }

    /// A runtime that runs conflists with plugins from `cni_path`, inside this host.
    pub fn runtime(&self, cni_path: Vec<PathBuf>) -> Runtime {
        Runtime {
            cni_path,
            cache_dir: self.dir.path().join("cache"),
            host: Some(NetNs::open(self.path()).expect("host namespace")),
        }
    }

    /// One raw plugin call inside the host, as a runtime makes it: one argument per CNI_*
    /// variable, so tests read like the spec.
    #[allow(clippy::too_many_arguments)]
    pub fn call(
        &self,
        cni_path: &[PathBuf],
        plugin_type: &str,
        command: Command,
        container_id: &str,
        netns: Option<&Path>,
        ifname: &str,
        config: &serde_json::Value,
    ) -> CniResult<Vec<u8>> {
        let plugin = find_plugin(plugin_type, cni_path)?;
        let env = CallEnv { command, container_id, netns, ifname, args: "", cni_path };
        exec_plugin(&plugin, &env, config.to_string().as_bytes(), Some(&self.ns))
    }

    /// Whether an ICMP echo from the namespace at `from` to `to` is answered.
    pub fn ping(from: &Path, to: IpAddr) -> bool {
        let ns = NetNs::open(from).expect("namespace to ping from");
        let mut cmd = std::process::Command::new("ping");
        cmd.args(["-c", "1", "-W", "2", "-q", &to.to_string()]).stdout(Stdio::null()).stderr(Stdio::null());
        ns.prepare_command(&mut cmd).expect("namespace handle");
        cmd.status().expect("run ping (apt-get install iputils-ping)").success()
    }

    /// `ping -M do -s SIZE` (don't fragment, SIZE bytes of ICMP payload) from the namespace at
    /// `from`: whether it was answered, and what ping printed ("message too long, mtu=1450"
    /// when the sender's own MTU refuses it, "Frag needed and DF set (mtu = 1400)" when a
    /// router on the way does).
    pub fn ping_df(from: &Path, to: IpAddr, size: u32) -> (bool, String) {
        let ns = NetNs::open(from).expect("namespace to ping from");
        let mut cmd = std::process::Command::new("ping");
        cmd.args(["-M", "do", "-s", &size.to_string(), "-c", "1", "-W", "2", &to.to_string()]);
        ns.prepare_command(&mut cmd).expect("namespace handle");
        let out = cmd.output().expect("run ping (apt-get install iputils-ping)");
        (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    }
}

impl Default for TestHost {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        // Containers first: deleting their namespaces removes the veth pairs into the host.
        for name in self.namespaces.borrow().iter().rev() {
            if let Err(e) = NetNs::delete_named(name) {
                eprintln!("cleanup: cannot delete namespace {name}: {e}");
            }
        }
    }
}

fn unique_name(kind: &str) -> String {
    format!("berth-t{}-{}{}", std::process::id(), kind, NEXT.fetch_add(1, Ordering::Relaxed))
}

//! The checks of one cniVersion, in a fresh test host: ADD, its result, CHECK, DEL in every
//! situation the spec names, STATUS and GC, the error JSON, parallel ADDs, and what is left.

use super::checks;
use super::invoke::{self, Call, Reply};
use super::kinds::{self, Role};
use super::report::{fail, Report, Verdict};
use super::state::{Places, Snapshot, MARKER};
use super::{Target, S_ERROR, S_PARAMS};
use crate::{eventually, Container, TestHost};
use berth_cni::spec::{RunResult, Version};
use serde_json::{json, Value};
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

const S_ADD: &str = "Section 2: Execution Protocol (ADD); Section 3: Adding an attachment";
const S_DEL: &str = "Section 2: Execution Protocol (DEL); Section 3: Deleting an attachment";
const S_CHECK: &str = "Section 2: Execution Protocol (CHECK); Section 3: Checking an attachment";
const S_STATUS: &str = "Section 2: Execution Protocol (STATUS)";
const S_GC: &str = "Section 2: Execution Protocol (GC); Section 3: Garbage-collecting a network";
const S_RESULT: &str = "Section 5: Result Types (ADD Success)";
const S_IFNAME: &str = "Section 2: Execution Protocol (Parameters: CNI_IFNAME); Section 5: Result Types (interfaces)";
const S_CHAIN: &str = "Section 3: Adding an attachment (prevResult); Section 5: Result Types (ADD Success)";
const S_LIFECYCLE: &str = "Section 3: Lifecycle & Ordering (parallel operations on different containers)";
const S_LEAK: &str = "Section 2: Execution Protocol (DEL: remove what ADD made)";
const S_IPAM: &str = "Section 4: Plugin Delegation";
/// Attachments made at once by the parallel check.
const PARALLEL: usize = 16;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// One container's attachment: its ID, namespace, and what ADD printed.
struct Attachment {
    id: String,
    netns: PathBuf,
    raw: Option<Value>,
    result: Option<RunResult>,
    /// For a chained plugin, the main plugin's result (its prevResult).
    main_raw: Option<Value>,
}

struct Run<'a> {
    t: &'a Target,
    host: TestHost,
    version: String,
    conf: Value,
    main_conf: Option<Value>,
    containers: RefCell<Vec<Container>>,
    /// Container IDs and addresses of the run, so leftovers can be traced to an attachment.
    markers: RefCell<Vec<String>>,
}

/// What a plugin call needs, shareable between the threads of the parallel check.
struct Caller<'a> {
    t: &'a Target,
    ns: &'a berth_netns::NetNs,
    conf: &'a Value,
    main_conf: Option<&'a Value>,
}

impl Caller<'_> {
    fn call(&self, plugin: &Path, command: &str, a: &Attachment, conf: &Value) -> Result<Reply, Verdict> {
        let call = Call {
            command: Some(command),
            container_id: Some(&a.id),
            netns: Some(&a.netns),
            ifname: Some(self.t.ifname),
            cni_path: &self.t.cni_path,
        };
        invoke::run(plugin, &call, conf.to_string().as_bytes(), self.ns).map_err(Verdict::Fail)
    }

    /// ADD, after the main plugin's ADD for a chained plugin; the result is kept in `a`.
    fn add(&self, a: &mut Attachment) -> Result<String, Verdict> {
        let mut conf = self.conf.clone();
        if let (Some(main), Some(main_conf)) = (&self.t.main, self.main_conf) {
            let reply = self.call(main, "ADD", a, main_conf)?;
            if !reply.success {
                return Err(Verdict::Skip(format!("the main plugin's ADD failed: {}", reply.describe())));
            }
            let raw = reply.json().map_err(Verdict::Skip)?;
            conf["prevResult"] = raw.clone();
            a.main_raw = Some(raw);
        }
        let reply = self.call(&self.t.plugin, "ADD", a, &conf)?;
        if !reply.success {
            return fail(format!("failed: {}", reply.describe()));
        }
        let raw = reply.json().map_err(Verdict::Fail)?;
        let result = RunResult::from_value(&raw).map_err(|e| Verdict::Fail(format!("result does not decode: {e}")))?;
        a.result = Some(result);
        a.raw = Some(raw);
        Ok("succeeded".into())
    }
}

/// Every check of `version`; the version-independent error checks and the parallel ADDs
/// run once, with the newest version (`last`).
pub fn run_version(t: &Target, version: &str, last: bool, report: &mut Report) {
    let host = TestHost::new();
    if let Err(reason) = prepare(t, &host) {
        report.skip("all checks", version, S_ADD, reason);
        return;
    }
    let (conf, main_conf) = configs(t, &host, version);
    let run = Run {
        t,
        host,
        version: version.to_string(),
        conf,
        main_conf,
        containers: RefCell::new(Vec::new()),
        markers: RefCell::new(Vec::new()),
    };
    // A chained plugin's run also holds what its main plugin keeps for the network.
    let main_kind = t.main.as_deref().and_then(kinds::kind_of);
    let keeps: Vec<&str> = [t.kind, main_kind].into_iter().flatten().flat_map(|k| k.keeps.iter().copied()).collect();
    let places = Places { scratch: run.host.dir.path(), keeps: &keeps };
    let before = Snapshot::take(&run.host, &places);
    run.lifecycle(report);
    run.missing_variables(report);
    if last {
        run.bad_input(report);
        run.parallel(report);
    }
    run.leak_check(&before, &places, report);
}

/// The kind's setup in the test host, and a probe for the link kinds it needs.
fn prepare(t: &Target, host: &TestHost) -> Result<(), String> {
    let Some(kind) = t.kind else { return Ok(()) };
    if let Some(setup) = kind.setup {
        setup(host).map_err(|e| format!("cannot prepare the test host: {e}"))?;
    }
    for link_kind in kind.needs {
        probe_link_kind(host, link_kind)?;
    }
    Ok(())
}

/// Whether this kernel can make a link of `kind`: berth_netlink knows only the kinds berth
/// creates, so any kind is probed with `ip` inside the test host.
fn probe_link_kind(host: &TestHost, kind: &str) -> Result<(), String> {
    let args: Vec<&str> = match kind {
        "vlan" => vec!["link", "add", "cfprobe0", "link", kinds::MASTER, "type", "vlan", "id", "7"],
        "ipvlan" => vec!["link", "add", "cfprobe0", "link", kinds::MASTER, "type", "ipvlan"],
        "vrf" => vec!["link", "add", "cfprobe0", "type", "vrf", "table", "4242"],
        other => vec!["link", "add", "cfprobe0", "type", other],
    };
    let mut cmd = std::process::Command::new("ip");
    cmd.args(&args).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    host.ns.prepare_command(&mut cmd).map_err(|e| format!("enter the test host: {e}"))?;
    let ok = cmd.status().map_err(|e| format!("run ip (apt-get install iproute2): {e}"))?.success();
    if !ok {
        return Err(format!("this kernel cannot create {kind} links (module missing); run it in the kernel lab"));
    }
    let mut del = std::process::Command::new("ip");
    del.args(["link", "del", "cfprobe0"]);
    host.ns.prepare_command(&mut del).map_err(|e| format!("enter the test host: {e}"))?;
    del.status().map_err(|e| format!("remove the probe link: {e}"))?;
    Ok(())
}

/// The plugin's configuration for `version`, and for a chained plugin its main plugin's.
fn configs(t: &Target, host: &TestHost, version: &str) -> (Value, Option<Value>) {
    let scratch = host.dir.path();
    let conf = match &t.user_conf {
        Some(user) => user.clone(),
        None => {
            let kind = t.kind.expect("a known kind without --config");
            let env = kinds::Env { host, ipam: kinds::ipam_for(plugin_dir(&t.plugin), scratch), scratch };
            let mut conf = (kind.conf)(&env);
            if t.role == Role::Ipam {
                conf["ipam"]["type"] = json!(t.type_name);
            }
            conf
        }
    };
    let main_conf = t.main.as_ref().map(|main| {
        let kind = kinds::kind_of(main).expect("the main plugin is a known kind");
        let env = kinds::Env { host, ipam: kinds::ipam_for(plugin_dir(main), scratch), scratch };
        let mut conf = (kind.conf)(&env);
        // The main plugin's own firewall rules would blur what the chained plugin leaves.
        if let Some(map) = conf.as_object_mut() {
            map.remove("ipMasq");
        }
        complete(conf, main, version)
    });
    (complete(conf, &t.plugin, version), main_conf)
}

fn plugin_dir(plugin: &Path) -> &Path {
    plugin.parent().unwrap_or(Path::new("."))
}

/// Adds cniVersion, and name and type unless the configuration has them.
fn complete(mut conf: Value, plugin: &Path, version: &str) -> Value {
    conf["cniVersion"] = json!(version);
    if conf.get("name").is_none() {
        conf["name"] = json!("conformnet");
    }
    if conf.get("type").is_none() {
        conf["type"] = json!(plugin.file_name().map(|n| n.to_string_lossy().into_owned()));
    }
    conf
}

fn since(version: &str, first: Version) -> bool {
    Version::parse(version).is_ok_and(|v| v >= first)
}

impl Run<'_> {
    /// A new attachment in a new container namespace (the host's own for host networking).
    fn attachment(&self) -> Attachment {
        let id = format!("{MARKER}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        self.markers.borrow_mut().push(id.clone());
        let netns = if self.t.role == Role::HostNamespace {
            self.host.path()
        } else {
            let c = self.host.container();
            let path = c.path.clone();
            self.containers.borrow_mut().push(c);
            path
        };
        Attachment { id, netns, raw: None, result: None, main_raw: None }
    }

    fn caller(&self) -> Caller<'_> {
        Caller { t: self.t, ns: &self.host.ns, conf: &self.conf, main_conf: self.main_conf.as_ref() }
    }

    fn call(&self, plugin: &Path, command: &str, a: &Attachment, conf: &Value) -> Result<Reply, Verdict> {
        self.caller().call(plugin, command, a, conf)
    }

    /// ADD (see [`Caller::add`]); the result's addresses become markers of the run.
    fn add(&self, a: &mut Attachment) -> Result<String, Verdict> {
        let outcome = self.caller().add(a);
        self.remember(a);
        outcome
    }

    fn remember(&self, a: &Attachment) {
        if let Some(result) = &a.result {
            self.markers.borrow_mut().extend(result.ips.iter().map(|ip| ip.address.addr().to_string()));
        }
    }

    /// The configuration with `prev` as prevResult (CHECK and DEL carry ADD's result from 0.4.0).
    fn with_prev(&self, conf: &Value, prev: Option<&Value>) -> Value {
        let mut conf = conf.clone();
        if let Some(prev) = prev.filter(|_| since(&self.version, Version::V0_4_0)) {
            conf["prevResult"] = prev.clone();
        }
        conf
    }

    /// DEL of the plugin, then of the main plugin for a chained one (reverse order).
    fn del(&self, a: &Attachment) -> Result<String, Verdict> {
        let reply = self.call(&self.t.plugin, "DEL", a, &self.with_prev(&self.conf, a.raw.as_ref()))?;
        if !reply.success {
            return fail(format!("failed: {}", reply.describe()));
        }
        if let (Some(main), Some(main_conf)) = (&self.t.main, &self.main_conf) {
            let reply = self.call(main, "DEL", a, &self.with_prev(main_conf, a.main_raw.as_ref()))?;
            if !reply.success {
                return Err(Verdict::Skip(format!("the main plugin's DEL failed: {}", reply.describe())));
            }
        }
        Ok("succeeded".into())
    }
}

impl Run<'_> {
    fn lifecycle(&self, report: &mut Report) {
        let v = self.version.clone();
        let mut a1 = self.attachment();
        let added = self.add(&mut a1);
        let ok = added.is_ok();
        report.push("ADD", &v, S_ADD, added);
        if !ok {
            for check in ["result", "CHECK", "DEL"] {
                report.skip(check, &v, S_ADD, "ADD did not succeed");
            }
            let _ = self.del(&a1);
            return;
        }
        self.result_checks(&a1, report);
        self.check(&a1, report);
        report.push("DEL", &v, S_DEL, self.del(&a1).and_then(|ok| self.gone(&a1).map(|gone| format!("{ok}; {gone}"))));
        report.push("DEL again", &v, S_DEL, self.del(&a1));
        let never = self.attachment();
        report.push("DEL of a container never added", &v, S_DEL, self.del(&never));
        self.status_and_gc(report);
        self.del_without_namespace(report);
    }

    fn gone(&self, a: &Attachment) -> Result<String, Verdict> {
        match (&a.result, self.t.role) {
            (Some(result), Role::Interface | Role::Meta) => checks::gone_from_namespace(result, &a.netns),
            _ => Ok(String::new()),
        }
    }

    /// The result's schema, CNI_IFNAME in it, its contents in the namespace, prevResult.
    fn result_checks(&self, a: &Attachment, report: &mut Report) {
        let v = &self.version;
        let (Some(raw), Some(result)) = (&a.raw, &a.result) else { return };
        report.push("result schema", v, S_RESULT, checks::result_schema(raw, v));
        match self.t.role {
            Role::Ipam => {
                let why = "an IPAM plugin returns no interfaces; its caller applies the addresses";
                report.skip("result names CNI_IFNAME", v, S_IPAM, why);
                report.skip("result present in namespace", v, S_IPAM, why);
            }
            Role::HostNamespace => {
                report.push("result present in namespace", v, S_RESULT, checks::present_in_namespace(result, &a.netns));
            }
            Role::Interface | Role::Meta => {
                let named = checks::names_ifname(result, self.t.ifname, &a.netns);
                report.push("result names CNI_IFNAME", v, S_IFNAME, named);
                report.push("result present in namespace", v, S_RESULT, checks::present_in_namespace(result, &a.netns));
            }
        }
        if let Some(prev) = a.main_raw.as_ref().and_then(|p| RunResult::from_value(p).ok()) {
            report.push("prevResult passed on", v, S_CHAIN, checks::passes_prev_result(&prev, result));
        }
    }

    fn check(&self, a: &Attachment, report: &mut Report) {
        let v = &self.version;
        if !since(v, Version::V0_4_0) {
            report.skip("CHECK", v, S_CHECK, "CHECK is defined from 0.4.0 on");
            return;
        }
        let outcome = self.call(&self.t.plugin, "CHECK", a, &self.with_prev(&self.conf, a.raw.as_ref())).and_then(|r| {
            if r.success {
                Ok("succeeded with ADD's result as prevResult".to_string())
            } else {
                fail(format!("failed on a healthy attachment: {}", r.describe()))
            }
        });
        report.push("CHECK", v, S_CHECK, outcome);
    }

    /// ADD, then the runtime loses the namespace, then DEL: it must still succeed.
    fn del_without_namespace(&self, report: &mut Report) {
        let v = &self.version;
        if self.t.role == Role::HostNamespace {
            report.skip("DEL with the namespace gone", v, S_DEL, "host networking uses the host's namespace");
            return;
        }
        let mut a = self.attachment();
        if let Err(e) = self.add(&mut a) {
            report.skip("DEL with the namespace gone", v, S_DEL, format!("ADD did not succeed: {e:?}"));
            return;
        }
        let mut containers = self.containers.borrow_mut();
        if let Some(i) = containers.iter().position(|c| c.path == a.netns) {
            self.host.remove_container(&containers.remove(i));
        }
        drop(containers);
        let outcome = self.del(&a).and_then(|ok| {
            // A plugin that opens CNI_NETNS with O_CREAT leaves a plain file where the
            // namespace was; it is removed here so the run leaves nothing.
            if a.netns.exists() {
                let _ = std::fs::remove_file(&a.netns);
                return fail(format!("DEL created a file at the vanished CNI_NETNS {}", a.netns.display()));
            }
            Ok(ok)
        });
        if a.netns.exists() {
            let _ = std::fs::remove_file(&a.netns);
        }
        report.push("DEL with the namespace gone", v, S_DEL, outcome);
    }

    fn status_and_gc(&self, report: &mut Report) {
        let v = &self.version;
        if !since(v, Version::V1_1_0) {
            report.skip("STATUS", v, S_STATUS, "STATUS is defined from 1.1.0 on");
            report.skip("GC", v, S_GC, "GC is defined from 1.1.0 on");
            return;
        }
        let status = self.call_without_container("STATUS", &self.conf).and_then(|r| {
            if r.success {
                Ok("ready".to_string())
            } else {
                fail(format!("not ready: {}", r.describe()))
            }
        });
        report.push("STATUS", v, S_STATUS, status);
        report.push("GC", v, S_GC, self.gc());
    }

    /// GC keeping one live attachment must leave it whole; GC keeping none must succeed.
    fn gc(&self) -> Result<String, Verdict> {
        let mut a = self.attachment();
        self.add(&mut a).map_err(|e| Verdict::Skip(format!("ADD did not succeed: {e:?}")))?;
        let mut keep = self.conf.clone();
        keep["cni.dev/valid-attachments"] = json!([{"containerID": a.id, "ifname": self.t.ifname}]);
        let outcome = (|| {
            let reply = self.call_without_container("GC", &keep)?;
            if !reply.success {
                return fail(format!("GC keeping the live attachment failed: {}", reply.describe()));
            }
            if let (Some(result), Role::Interface | Role::Meta) = (&a.result, self.t.role) {
                checks::present_in_namespace(result, &a.netns)
                    .map_err(|e| Verdict::Fail(format!("GC damaged an attachment it was told to keep: {e:?}")))?;
            }
            let mut none = self.conf.clone();
            none["cni.dev/valid-attachments"] = json!([]);
            let reply = self.call_without_container("GC", &none)?;
            if !reply.success {
                return fail(format!("GC keeping nothing failed: {}", reply.describe()));
            }
            Ok("kept the live attachment; GC of everything succeeded".to_string())
        })();
        let _ = self.del(&a);
        outcome
    }

    fn call_without_container(&self, command: &str, conf: &Value) -> Result<Reply, Verdict> {
        let call = Call { command: Some(command), container_id: None, netns: None, ifname: None, cni_path: &self.t.cni_path };
        invoke::run(&self.t.plugin, &call, conf.to_string().as_bytes(), &self.host.ns).map_err(Verdict::Fail)
    }
}

impl Run<'_> {
    /// ADD without CNI_NETNS, then without CNI_CONTAINERID: code 4, in the request's version.
    fn missing_variables(&self, report: &mut Report) {
        let v = &self.version;
        let a = self.attachment();
        for missing in ["CNI_NETNS", "CNI_CONTAINERID"] {
            let call = Call {
                command: Some("ADD"),
                container_id: (missing != "CNI_CONTAINERID").then_some(a.id.as_str()),
                netns: (missing != "CNI_NETNS").then_some(a.netns.as_path()),
                ifname: Some(self.t.ifname),
                cni_path: &self.t.cni_path,
            };
            let outcome = invoke::run(&self.t.plugin, &call, self.conf.to_string().as_bytes(), &self.host.ns)
                .map_err(Verdict::Fail)
                .and_then(|reply| checks::error_shape(&reply, Some(v), &[4]));
            report.push(&format!("error: ADD without {missing}"), v, S_PARAMS, outcome);
        }
        // Whatever a lax plugin made anyway is undone, so the leak check sees only real leaks.
        let _ = self.del(&a);
    }

    /// Input no version can accept: broken JSON (code 6) and an unknown cniVersion (code 1).
    fn bad_input(&self, report: &mut Report) {
        let a = self.attachment();
        let call = Call {
            command: Some("ADD"),
            container_id: Some(&a.id),
            netns: Some(&a.netns),
            ifname: Some(self.t.ifname),
            cni_path: &self.t.cni_path,
        };
        let broken = format!("{{\"cniVersion\": \"{}\", \"name\": ", self.version);
        let outcome = invoke::run(&self.t.plugin, &call, broken.as_bytes(), &self.host.ns)
            .map_err(Verdict::Fail)
            .and_then(|reply| checks::error_shape(&reply, None, &[6]));
        report.push("error: configuration not JSON", "-", S_ERROR, outcome);
        let mut future = self.conf.clone();
        future["cniVersion"] = json!("99.0.0");
        let outcome = invoke::run(&self.t.plugin, &call, future.to_string().as_bytes(), &self.host.ns)
            .map_err(Verdict::Fail)
            .and_then(|reply| checks::error_shape(&reply, None, &[1]));
        report.push("error: unsupported cniVersion", "-", S_ERROR, outcome);
        let _ = self.del(&a);
    }

    /// 16 ADDs at once for 16 containers: all succeed, each with its own address.
    fn parallel(&self, report: &mut Report) {
        let v = &self.version;
        let name = format!("{PARALLEL} parallel ADDs");
        if let Some(why) = self.t.kind.and_then(|k| k.no_parallel) {
            report.skip(&name, v, S_LIFECYCLE, why);
            return;
        }
        let mut all: Vec<Attachment> = (0..PARALLEL).map(|_| self.attachment()).collect();
        let caller = self.caller();
        let outcomes: Vec<Result<String, Verdict>> = std::thread::scope(|s| {
            let handles: Vec<_> = all.iter_mut().map(|a| s.spawn(|| caller.add(a))).collect();
            handles.into_iter().map(|h| h.join().unwrap_or_else(|_| fail("the ADD thread panicked"))).collect()
        });
        all.iter().for_each(|a| self.remember(a));
        report.push(&name, v, S_LIFECYCLE, distinct(&all, &outcomes));
        for a in &all {
            let _ = self.del(a);
        }
    }

    /// Removes every container, then waits for the kernel and the plugins to settle: what
    /// is still there that was not before the first ADD was left behind.
    fn leak_check(&self, before: &Snapshot, places: &Places, report: &mut Report) {
        for c in self.containers.borrow_mut().drain(..) {
            self.host.remove_container(&c);
        }
        let markers = self.markers.borrow().clone();
        let mut last = (Vec::new(), 0);
        // A deleted namespace's veths and a plugin's detached helpers go away asynchronously.
        let settled = eventually(Duration::from_secs(5), || {
            last = Snapshot::take(&self.host, places).leaks_since(before, &markers);
            last.0.is_empty()
        });
        let outcome = if settled {
            Ok(format!("nothing left ({} network-level firewall lines kept by design)", last.1))
        } else {
            let shown: Vec<&str> = last.0.iter().take(8).map(String::as_str).collect();
            fail(format!("{} left after DEL: {}", last.0.len(), shown.join("; ")))
        };
        report.push("nothing left after DEL", &self.version, S_LEAK, outcome);
    }
}

fn distinct(all: &[Attachment], outcomes: &[Result<String, Verdict>]) -> Result<String, Verdict> {
    if let Some(Err(e)) = outcomes.iter().find(|o| o.is_err()) {
        return fail(format!("an ADD failed: {e:?}"));
    }
    let mut seen = std::collections::BTreeSet::new();
    for a in all {
        let Some(ip) = a.result.as_ref().and_then(|r| r.ips.first()) else {
            return fail(format!("{} got no address", a.id));
        };
        if !seen.insert(ip.address.addr()) {
            return fail(format!("{} was given to two containers", ip.address.addr()));
        }
    }
    Ok(format!("{} distinct addresses", seen.len()))
}

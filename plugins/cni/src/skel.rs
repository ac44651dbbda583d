//! The plugin entry point: reads CNI_* and stdin, checks them for the verb, dispatches to a
//! [`Plugin`], prints the result or the error in the runtime's cniVersion, sets the exit status.

use crate::error::{CniError, CniResult, Code};
use crate::spec::{NetConf, RunResult, Version, LATEST, SUPPORTED};
use berth_util::names::{check_identifier, check_interface_name};
use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Status,
    Gc,
    Version,
}

impl Command {
    pub fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            "VERSION" => Command::Version,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Status => "STATUS",
            Command::Gc => "GC",
            Command::Version => "VERSION",
        }
    }
}

/// One invocation, checked: what the runtime asked for and with which configuration.
#[derive(Debug, Clone)]
pub struct Request {
    pub command: Command,
    pub container_id: String,
    /// Absent on DEL when the runtime no longer has the namespace, and on STATUS/GC.
    pub netns: Option<PathBuf>,
    pub ifname: String,
    /// CNI_ARGS, `K=V;K2=V2`.
    pub args: Vec<(String, String)>,
    pub cni_path: Vec<PathBuf>,
    /// stdin as received: delegated plugins get exactly these bytes.
    pub stdin: Vec<u8>,
    pub conf: NetConf,
    pub version: Version,
    /// How the plugin's `main` asked to be run.
    pub options: Options,
}

/// Choices a plugin's `main` makes for its process, which library code and tests calling the
/// plugin in-process do not get unless they ask.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// DEL deletes links with [`berth_netlink::Netlink::delete_link_detached`]: it returns
    /// once the link is gone from its namespace, and a detached grandchild process waits for
    /// the kernel to free it (15-18 ms of every deletion). Only for a process that exits soon
    /// after: the grandchild outlives the call, holding the netlink socket and every open
    /// file (locks included) until the kernel is done.
    pub return_before_kernel_frees_links: bool,
}

impl Request {
    pub fn arg(&self, key: &str) -> Option<&str> {
        self.args.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// The namespace path; ADD and CHECK always have one.
    pub fn netns_path(&self) -> CniResult<&PathBuf> {
        self.netns.as_ref().ok_or_else(|| CniError::invalid_env("CNI_NETNS is required"))
    }
}

pub trait Plugin {
    /// The cniVersions this plugin accepts in its configuration.
    fn supported_versions(&self) -> &'static [&'static str] {
        SUPPORTED
    }
    fn add(&self, req: &Request) -> CniResult<RunResult>;
    /// Must succeed when what ADD made is already gone.
    fn del(&self, req: &Request) -> CniResult<()>;
    fn check(&self, req: &Request) -> CniResult<()>;
    fn status(&self, _req: &Request) -> CniResult<()> {
        Ok(())
    }
    fn gc(&self, _req: &Request) -> CniResult<()> {
        Ok(())
    }
}

/// Environment and stdin as a plugin process receives them; split out so tests can feed it.
pub struct Invocation {
    pub env: Vec<(String, String)>,
    pub stdin: Vec<u8>,
}

impl Invocation {
    pub fn from_process() -> CniResult<Invocation> {
        let mut stdin = Vec::new();
        std::io::stdin().read_to_end(&mut stdin).map_err(|e| CniError::io("cannot read stdin", e))?;
        Ok(Invocation { env: text_env(std::env::vars_os())?, stdin })
    }

    fn var(&self, key: &str) -> Option<&str> {
        self.env.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
    }
}

/// The variables of a process as text. `std::env::vars` panics on one that is not UTF-8 (an
/// abort, with panic=abort); a CNI_* one is refused (code 4), any other is none of a plugin's
/// business and left out.
fn text_env(vars: impl Iterator<Item = (OsString, OsString)>) -> CniResult<Vec<(String, String)>> {
    let mut env = Vec::new();
    for (key, value) in vars {
        match (key.into_string(), value.into_string()) {
            (Ok(key), Ok(value)) => env.push((key, value)),
            (Ok(key), Err(value)) if key.starts_with("CNI_") => {
                return Err(CniError::invalid_env(format!("{key} is not UTF-8")).with_details(value.to_string_lossy()));
            }
            _ => {}
        }
    }
    Ok(env)
}

/// The request `plugin` would get for `command` from `inv`, checked as the skel checks it:
/// for callers that run a plugin's library code in-process (the `berth` front-end).
pub fn request(plugin: &dyn Plugin, command: Command, inv: &Invocation) -> CniResult<Request> {
    parse_request(plugin, command, inv, Options::default())
}

/// What the process prints and how it exits.
#[derive(Debug)]
pub struct Outcome {
    pub stdout: String,
    pub success: bool,
}

/// The whole of a plugin's `main`, with the default [`Options`].
pub fn run_main(plugin: &dyn Plugin) -> ! {
    run_main_with(plugin, Options::default())
}

/// The whole of a plugin's `main`, with the choices it makes for its process.
pub fn run_main_with(plugin: &dyn Plugin, options: Options) -> ! {
    let outcome = match Invocation::from_process() {
        Ok(inv) => dispatch_with(plugin, &inv, options),
        Err(e) => Outcome { stdout: e.to_json(LATEST), success: false },
    };
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(outcome.stdout.as_bytes());
    let _ = out.flush();
    std::process::exit(if outcome.success { 0 } else { 1 });
}

/// Runs one invocation and renders its output, with the default [`Options`].
pub fn dispatch(plugin: &dyn Plugin, inv: &Invocation) -> Outcome {
    dispatch_with(plugin, inv, Options::default())
}

/// Runs one invocation with `options` and renders its output.
pub fn dispatch_with(plugin: &dyn Plugin, inv: &Invocation, options: Options) -> Outcome {
    let version_hint = stdin_version(&inv.stdin);
    let fail = |e: CniError| Outcome { stdout: e.to_json(version_hint.as_deref().unwrap_or(LATEST)), success: false };
    let command = match inv.var("CNI_COMMAND") {
        None => return fail(CniError::invalid_env("required env variables [CNI_COMMAND] missing")),
        Some(c) => match Command::parse(c) {
            Some(c) => c,
            None => return fail(CniError::invalid_env(format!("unknown CNI_COMMAND: {c}"))),
        },
    };
    if command == Command::Version {
        let info = serde_json::json!({ "cniVersion": LATEST, "supportedVersions": plugin.supported_versions() });
        return Outcome { stdout: info.to_string(), success: true };
    }
    let req = match parse_request(plugin, command, inv, options) {
        Ok(req) => req,
        Err(e) => return fail(e),
    };
    let result = match command {
        Command::Add => plugin.add(&req).and_then(|r| r.to_value(&req.conf.cni_version)).map(|v| v.to_string()),
        Command::Del => plugin.del(&req).map(|()| String::new()),
        Command::Check => plugin.check(&req).map(|()| String::new()),
        Command::Status => plugin.status(&req).map(|()| String::new()),
        Command::Gc => plugin.gc(&req).map(|()| String::new()),
        Command::Version => unreachable!("answered above"),
    };
    match result {
        Ok(stdout) => Outcome { stdout, success: true },
        Err(e) => Outcome { stdout: e.to_json(&req.conf.cni_version), success: false },
    }
}

fn stdin_version(stdin: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct OnlyVersion {
        #[serde(rename = "cniVersion")]
        cni_version: Option<String>,
    }
    serde_json::from_slice::<OnlyVersion>(stdin).ok()?.cni_version.filter(|v| Version::parse(v).is_ok())
}

fn parse_request(plugin: &dyn Plugin, command: Command, inv: &Invocation, options: Options) -> CniResult<Request> {
    use Command::{Add, Check, Del, Gc, Status};
    // Which variables each verb needs, as the spec's "Parameters" section lists them.
    let required: &[&str] = match command {
        Add | Check => &["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"],
        Del => &["CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"],
        Status | Gc => &["CNI_PATH"],
        Command::Version => &[],
    };
    let missing: Vec<&str> = required.iter().copied().filter(|k| inv.var(k).is_none()).collect();
    if !missing.is_empty() {
        return Err(CniError::invalid_env(format!("required env variables [{}] missing", missing.join(","))));
    }
    let container_id = inv.var("CNI_CONTAINERID").unwrap_or_default().to_string();
    if matches!(command, Add | Del | Check) {
        validate_container_id(&container_id)?;
    }
    let ifname = inv.var("CNI_IFNAME").unwrap_or_default().to_string();
    if matches!(command, Add | Del | Check) {
        validate_ifname(&ifname)?;
    }
    let args = parse_cni_args(inv.var("CNI_ARGS").unwrap_or_default())?;
    let cni_path = std::env::split_paths(inv.var("CNI_PATH").unwrap_or_default()).filter(|p| !p.as_os_str().is_empty()).collect();

    let conf = NetConf::from_slice(&inv.stdin)?;
    // A config without cniVersion is 0.1.0 by the spec, which no berth plugin speaks.
    let version_str = if conf.cni_version.is_empty() { "0.1.0" } else { conf.cni_version.as_str() };
    let version = Version::require_supported(version_str, plugin.supported_versions())?;
    let needs = match command {
        Check => Some(Version::V0_4_0),
        Status | Gc => Some(Version::V1_1_0),
        _ => None,
    };
    if let Some(min) = needs {
        if version < min {
            return Err(CniError::new(
                Code::IncompatibleVersion,
                format!("config version {version} does not allow {}", command.as_str()),
            ));
        }
    }
    Ok(Request {
        command,
        container_id,
        netns: inv.var("CNI_NETNS").map(PathBuf::from),
        ifname,
        args,
        cni_path,
        stdin: inv.stdin.clone(),
        conf,
        version,
        options,
    })
}

/// CNI_CONTAINERID: [`check_identifier`]'s alphabet; code 4 otherwise.
pub fn validate_container_id(id: &str) -> CniResult<()> {
    check_identifier(id).map_err(|e| CniError::invalid_env(format!("invalid containerID: {e}")).with_details(id))
}

/// CNI_IFNAME: a Linux interface name ([`check_interface_name`]); code 4 otherwise.
pub fn validate_ifname(name: &str) -> CniResult<()> {
    check_interface_name(name).map_err(|e| CniError::invalid_env(e.to_string()).with_details(name))
}

fn parse_cni_args(raw: &str) -> CniResult<Vec<(String, String)>> {
    raw.split(';')
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(CniError::invalid_env(format!("invalid CNI_ARGS pair {pair:?}"))),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    struct Recorder(RefCell<Vec<Request>>);
    impl Plugin for Recorder {
        fn add(&self, req: &Request) -> CniResult<RunResult> {
            self.0.borrow_mut().push(req.clone());
            Ok(RunResult {
                ips: vec![crate::spec::IpConfig { interface: None, address: "10.0.0.2/24".parse().unwrap(), gateway: None }],
                ..Default::default()
            })
        }
        fn del(&self, _: &Request) -> CniResult<()> {
            Ok(())
        }
        fn check(&self, _: &Request) -> CniResult<()> {
            Err(CniError::new(Code::Kernel, "eth0 has no address 10.0.0.2/24"))
        }
    }

    fn inv(command: &str, stdin: &str, drop: &[&str]) -> Invocation {
        let env = [
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/var/run/netns/c1"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/opt/cni/bin:/usr/lib/cni"),
            ("CNI_ARGS", "IgnoreUnknown=1;IP=10.0.0.9"),
        ];
        Invocation {
            env: env.iter().filter(|(k, _)| !drop.contains(k)).map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            stdin: stdin.as_bytes().to_vec(),
        }
    }

    fn code(out: &Outcome) -> u64 {
        assert!(!out.success);
        serde_json::from_str::<serde_json::Value>(&out.stdout).unwrap()["code"].as_u64().unwrap()
    }

    const CONF: &str = r#"{"cniVersion":"0.4.0","name":"n","type":"t"}"#;

    #[test]
    fn add_prints_result_in_requested_version() {
        let p = Recorder(RefCell::new(vec![]));
        let out = dispatch(&p, &inv("ADD", CONF, &[]));
        assert!(out.success, "{}", out.stdout);
        let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(v["cniVersion"], "0.4.0");
        assert_eq!(v["ips"][0]["version"], "4");
        let req = &p.0.borrow()[0];
        assert_eq!(req.arg("IP"), Some("10.0.0.9"));
        assert_eq!(req.cni_path.len(), 2);
    }

    #[test]
    fn missing_environment_is_code_4() {
        let p = Recorder(RefCell::new(vec![]));
        assert_eq!(code(&dispatch(&p, &inv("ADD", CONF, &["CNI_NETNS"]))), 4);
        assert_eq!(code(&dispatch(&p, &inv("ADD", CONF, &["CNI_COMMAND"]))), 4);
        assert_eq!(code(&dispatch(&p, &inv("FROB", CONF, &[]))), 4);
        // DEL may come without a namespace.
        assert!(dispatch(&p, &inv("DEL", CONF, &["CNI_NETNS"])).success);
    }

    #[test]
    fn bad_names_are_code_4() {
        let p = Recorder(RefCell::new(vec![]));
        let mut i = inv("ADD", CONF, &[]);
        i.env.retain(|(k, _)| k != "CNI_IFNAME");
        i.env.push(("CNI_IFNAME".into(), "a-name-far-too-long".into()));
        assert_eq!(code(&dispatch(&p, &i)), 4);
        i.env.retain(|(k, _)| k != "CNI_CONTAINERID");
        i.env.push(("CNI_CONTAINERID".into(), "../etc".into()));
        assert_eq!(code(&dispatch(&p, &i)), 4);
    }

    #[test]
    fn names_are_checked_as_everywhere_else() {
        assert!(validate_ifname("eth@0").is_ok(), "the kernel takes it, so does every berth check");
        assert_eq!(validate_ifname("a/b").unwrap_err().code, 4);
        assert_eq!(validate_container_id("").unwrap_err().code, 4);
        assert!(validate_container_id("abc-1_2.3").is_ok());
    }

    #[test]
    fn options_reach_the_plugin_only_when_asked_for() {
        let p = Recorder(RefCell::new(vec![]));
        assert!(dispatch(&p, &inv("ADD", CONF, &[])).success);
        let opted = Options { return_before_kernel_frees_links: true };
        assert!(dispatch_with(&p, &inv("ADD", CONF, &[]), opted).success);
        let seen: Vec<Options> = p.0.borrow().iter().map(|r| r.options).collect();
        assert_eq!(seen, vec![Options::default(), opted]);
        assert!(!Options::default().return_before_kernel_frees_links, "in-process callers do not fork");
    }

    #[test]
    fn config_errors_have_their_codes() {
        let p = Recorder(RefCell::new(vec![]));
        assert_eq!(code(&dispatch(&p, &inv("ADD", "{not json", &[]))), 6);
        let old = r#"{"cniVersion":"0.2.0","name":"n","type":"t"}"#;
        assert_eq!(code(&dispatch(&p, &inv("ADD", old, &[]))), 1);
        let check_030 = r#"{"cniVersion":"0.3.0","name":"n","type":"t"}"#;
        assert_eq!(code(&dispatch(&p, &inv("CHECK", check_030, &[]))), 1);
        assert_eq!(code(&dispatch(&p, &inv("STATUS", CONF, &[]))), 1);
    }

    #[test]
    fn plugin_errors_are_printed_with_the_config_version() {
        let p = Recorder(RefCell::new(vec![]));
        let out = dispatch(&p, &inv("CHECK", CONF, &[]));
        let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(v["code"], 100);
        assert_eq!(v["cniVersion"], "0.4.0");
        assert!(v["msg"].as_str().unwrap().contains("eth0"));
    }

    /// Black-box fuzzing (berth-fuzz, tests/blackbox.rs): a variable that is not UTF-8, a
    /// stray `BERTH_FUZZ_STRAY=\xff\xfex` or CNI_ARGS with `\xff`, made every plugin abort
    /// (std::env::vars panics) instead of answering.
    #[test]
    fn variables_that_are_not_utf8_are_left_out_or_refused() {
        use std::os::unix::ffi::OsStringExt;
        let bytes = |b: &[u8]| OsString::from_vec(b.to_vec());
        let stray = vec![(bytes(b"CNI_COMMAND"), bytes(b"ADD")), (bytes(b"BERTH_FUZZ_STRAY"), bytes(b"\xff\xfex"))];
        assert_eq!(text_env(stray.into_iter()).unwrap(), vec![("CNI_COMMAND".to_string(), "ADD".to_string())]);
        let args = vec![(bytes(b"CNI_ARGS"), bytes(b"IP=\xff"))];
        assert_eq!(text_env(args.into_iter()).unwrap_err().code, 4);
    }

    #[test]
    fn version_lists_supported_versions() {
        let p = Recorder(RefCell::new(vec![]));
        let out = dispatch(&p, &inv("VERSION", "", &[]));
        let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(v["supportedVersions"].as_array().unwrap().len(), SUPPORTED.len());
    }
}

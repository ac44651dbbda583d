//! What the tests that run the `berth` binary against a Docker lab share.
#![allow(dead_code)]

use berth_conformance::docker::DockerLab;
use berth_conformance::TestHost;
use serde_json::Value;
use std::process::{Command, Output};

/// The `berth` binary run inside the lab's host namespace, finding containers through the
/// lab's dockerd, with its config, state and IPAM data in the lab's folder.
pub struct Berth<'a> {
    pub lab: &'a DockerLab,
}

impl Berth<'_> {
    pub fn run(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
        cmd.args(args)
            .env("BERTH_CONFIG_DIR", self.lab.path("net.d"))
            .env("BERTH_STATE_DIR", self.lab.path("state"))
            .env("DOCKER_HOST", self.lab.docker_host())
            .env_remove("CNI_PATH");
        self.lab.host.ns.prepare_command(&mut cmd).unwrap();
        cmd.output().expect("run berth")
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "berth {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("utf-8")
    }

    /// `berth net create NAME --subnet SUBNET`, with masquerade and IPAM data in the lab.
    pub fn network(&self, name: &str, subnet: &str) {
        self.ok(&["net", "create", name, "--subnet", subnet]);
        let path = self.lab.path(&format!("net.d/{name}.conflist"));
        let mut conf: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        conf["plugins"][0]["ipMasq"] = true.into();
        conf["plugins"][0]["ipam"]["dataDir"] = self.lab.path("ipam").display().to_string().into();
        std::fs::write(&path, conf.to_string()).unwrap();
    }
}


/// The `berth` binary run inside a test host's namespace, with its config and state in the
/// host's folder and no Docker to ask.
pub struct HostBerth<'a> {
    pub host: &'a TestHost,
}

impl HostBerth<'_> {
    pub fn run(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
        cmd.args(args)
            .env("BERTH_CONFIG_DIR", self.host.dir.path().join("net.d"))
            .env("BERTH_STATE_DIR", self.host.dir.path().join("state"))
            .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
            .env_remove("CNI_PATH");
        self.host.ns.prepare_command(&mut cmd).unwrap();
        cmd.output().expect("run berth")
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "berth {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `berth net create ARGS`, with the IPAM data kept in the test's folder.
    pub fn network(&self, args: &[&str]) {
        let mut full = vec!["net", "create"];
        full.extend_from_slice(args);
        self.ok(&full);
        let path = self.host.dir.path().join(format!("net.d/{}.conflist", args[0]));
        let mut conf: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        conf["plugins"][0]["ipam"]["dataDir"] = self.host.dir.path().join("ipam").display().to_string().into();
        std::fs::write(&path, conf.to_string()).unwrap();
    }
}

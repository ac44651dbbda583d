//! pipework's DHCP client forms (`udhcpc`, `udhcpc-f`, `dhclient`, `dhclient-f`, `dhcpcd`):
//! that client, run from the host inside the guest's network namespace, when it is
//! installed. The `-f` forms leave it running, so it renews the lease; the others quit once
//! they have one. (`dhcp` is berth-dhcp, whose keeper renews leases itself.)
//!
//! The clients' scripts also write the DNS servers into /etc/resolv.conf. pipework ran them
//! in a helper container; here they run in a mount namespace of their own where
//! /etc/resolv.conf is a file of berth's, so the host's is never touched.

use super::line::DhcpClient;
use crate::error::{BerthError, BerthResult};
use berth_netns::NetNs;
use std::path::Path;
use std::process::{Command, Stdio};

pub fn run(guest: &NetNs, client: DhcpClient, options: &str, ifname: &str, resolv_conf: &Path) -> BerthResult<()> {
    let Some((program, args)) = command_line(client, ifname) else {
        return Err(BerthError::InvalidArgument("dhcp is berth-dhcp's, not a client berth runs".into()));
    };
    let path = berth_util::tool::find(program)
        .ok_or_else(|| BerthError::NotFound(format!("{program} is not installed (apt-get install {})", package(client))))?;
    let mut cmd = Command::new(&path);
    cmd.args(&args).args(options.split_whitespace()).stdin(Stdio::null());
    guest.prepare_command(&mut cmd)?;
    if let Some(dir) = resolv_conf.parent() {
        std::fs::create_dir_all(dir).map_err(BerthError::io(format!("create {}", dir.display())))?;
    }
    std::fs::write(resolv_conf, b"").map_err(BerthError::io(format!("create {}", resolv_conf.display())))?;
    with_own_resolv_conf(&mut cmd, resolv_conf)?;
    if keeps_running(client) {
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        cmd.spawn().map_err(BerthError::io(format!("start {program}")))?;
        return Ok(());
    }
    let out = cmd.output().map_err(BerthError::io(format!("run {program}")))?;
    if !out.status.success() {
        return Err(BerthError::Io {
            what: format!("{program} got no lease on {ifname}"),
            source: std::io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_string()),
        });
    }
    Ok(())
}

/// Makes `cmd` run in a mount namespace of its own whose /etc/resolv.conf is `file`.
fn with_own_resolv_conf(cmd: &mut Command, file: &Path) -> BerthResult<()> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::process::CommandExt;
    let source = std::ffi::CString::new(file.as_os_str().as_bytes())
        .map_err(|_| BerthError::InvalidArgument(format!("{} has a NUL byte", file.display())))?;
    // SAFETY: between fork and exec only unshare and mount, async-signal-safe system calls,
    // on C strings made before the fork.
    unsafe {
        cmd.pre_exec(move || {
            let fail = || Err(std::io::Error::last_os_error());
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return fail();
            }
            // Private first: the bind mount below must not propagate back to the host.
            if libc::mount(std::ptr::null(), c"/".as_ptr(), std::ptr::null(), libc::MS_REC | libc::MS_PRIVATE, std::ptr::null()) != 0 {
                return fail();
            }
            if libc::mount(source.as_ptr(), c"/etc/resolv.conf".as_ptr(), std::ptr::null(), libc::MS_BIND, std::ptr::null()) != 0 {
                return fail();
            }
            Ok(())
        });
    }
    Ok(())
}

/// The client's program and its arguments for one lease on `ifname`.
fn command_line(client: DhcpClient, ifname: &str) -> Option<(&'static str, Vec<String>)> {
    let ifname = ifname.to_string();
    Some(match client {
        DhcpClient::Udhcpc { foreground: false } => ("udhcpc", vec!["-q".into(), "-n".into(), "-i".into(), ifname]),
        DhcpClient::Udhcpc { foreground: true } => ("udhcpc", vec!["-f".into(), "-i".into(), ifname]),
        DhcpClient::Dhclient { foreground: false } => ("dhclient", vec!["-1".into(), ifname]),
        DhcpClient::Dhclient { foreground: true } => ("dhclient", vec!["-d".into(), ifname]),
        DhcpClient::Dhcpcd => ("dhcpcd", vec!["-q".into(), ifname]),
        DhcpClient::Berth => return None,
    })
}

fn keeps_running(client: DhcpClient) -> bool {
    matches!(client, DhcpClient::Udhcpc { foreground: true } | DhcpClient::Dhclient { foreground: true })
}

fn package(client: DhcpClient) -> &'static str {
    match client {
        DhcpClient::Udhcpc { .. } => "udhcpc",
        DhcpClient::Dhclient { .. } => "isc-dhcp-client",
        DhcpClient::Dhcpcd | DhcpClient::Berth => "dhcpcd5",
    }
}

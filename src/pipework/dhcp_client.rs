//! pipework's DHCP client forms (`udhcpc`, `udhcpc-f`, `dhclient`, `dhclient-f`, `dhcpcd`):
//! that client, run from the host inside the guest's network namespace, when it is
//! installed. The `-f` forms leave it running, so it renews the lease; the others quit once
//! they have one. (`dhcp` is berth-dhcp, whose keeper renews leases itself.)

use super::line::DhcpClient;
use crate::error::{BerthError, BerthResult};
use berth_netns::NetNs;
use std::process::{Command, Stdio};

pub fn run(guest: &NetNs, client: DhcpClient, options: &str, ifname: &str) -> BerthResult<()> {
    let Some((program, args)) = command_line(client, ifname) else {
        return Err(BerthError::InvalidArgument("dhcp is berth-dhcp's, not a client berth runs".into()));
    };
    let path = berth_util::tool::find(program)
        .ok_or_else(|| BerthError::NotFound(format!("{program} is not installed (apt-get install {})", package(client))))?;
    let mut cmd = Command::new(&path);
    cmd.args(&args).args(options.split_whitespace()).stdin(Stdio::null());
    guest.prepare_command(&mut cmd)?;
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

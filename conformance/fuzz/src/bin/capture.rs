//! `berth-fuzz capture-netlink DIR`: the replies of this namespace's kernel to the dumps and
//! requests berth-netlink makes, one file per datagram, as seeds for `netlink_reply`. Run it
//! in a namespace with links of every kind, addresses, routes, qdiscs and filters
//! (RELIABILITY.md says how the checked-in corpus was made).

use berth_netlink::socket::{messages, Protocol, Transport};
use std::path::Path;

const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLM_F_DUMP: u16 = 0x300;
const AF_BRIDGE: u8 = 7;
const NLMSG_DONE: u16 = 3;
const NLMSG_ERROR: u16 = 2;

fn request(kind: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + payload.len());
    out.extend_from_slice(&(16 + payload.len() as u32).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(payload);
    out
}

/// `struct tcmsg` for link `index` under `parent`.
fn tcmsg(index: u32, parent: u32) -> Vec<u8> {
    let mut out = vec![0u8; 4];
    out.extend_from_slice(&index.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(&parent.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out
}

pub fn netlink(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let mut transport = Transport::open(Protocol::Route).map_err(|e| format!("netlink socket: {e}"))?;
    let mut requests: Vec<(String, Vec<u8>)> = vec![
        ("links".into(), request(18, NLM_F_DUMP, 1, &[0; 16])),
        ("bridge-ports".into(), request(18, NLM_F_DUMP, 2, &[AF_BRIDGE, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])),
        ("addresses".into(), request(22, NLM_F_DUMP, 3, &[0; 8])),
        ("routes".into(), request(26, NLM_F_DUMP, 4, &[0; 12])),
        ("fdb".into(), request(30, NLM_F_DUMP, 5, &[AF_BRIDGE, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])),
        ("nsids".into(), request(90, NLM_F_DUMP, 6, &[0; 4])),
        ("qdiscs".into(), request(38, NLM_F_DUMP, 7, &tcmsg(0, 0))),
        // A request the kernel refuses: an error with its extended ACK.
        ("error".into(), request(17, NLM_F_ACK, 8, &[0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])),
    ];
    for index in 1..16u32 {
        requests.push((format!("filters-{index}"), request(46, NLM_F_DUMP, 100 + index, &tcmsg(index, 0xffff_fff1))));
    }
    let mut saved = 0;
    for (name, bytes) in &requests {
        transport.send(bytes).map_err(|e| format!("send {name}: {e}"))?;
        for n in 0.. {
            let datagram = transport.recv().map_err(|e| format!("receive {name}: {e}"))?.to_vec();
            let last = messages(&datagram).flatten().any(|m| m.kind == NLMSG_DONE || m.kind == NLMSG_ERROR);
            // Empty filter dumps say nothing new.
            if !(name.starts_with("filters") && datagram.len() <= 40) {
                std::fs::write(dir.join(format!("{name}-{n}")), &datagram).map_err(|e| format!("write: {e}"))?;
                saved += 1;
            }
            if last {
                break;
            }
        }
    }
    println!("{saved} datagrams in {}", dir.display());
    Ok(())
}

//! The nftables backend: everything lives in `table inet berth`: four base chains whose rules
//! never change with the containers, twelve maps holding every container's state as
//! elements, and three more indexing them by container (see DEL without prevResult below). An ADD is one batch of a handful of `add element` commands, whatever the number
//! of containers already there; a DEL one batch of element commands too. Those two batches,
//! the hot path, go straight to the kernel over nfnetlink ([`super::nfnl`]: no `nft` process);
//! so does the first ADD on a host, which creates the whole table in one batch (below), and so
//! does a DEL without prevResult (below); `nft` lists the table and rewrites it on ADD's slow
//! path, and lists it for CHECK.
//!
//! Every element is a map entry commented `berth net=.. id=.. if=..`. The address maps carry
//! the attachment's 32-bit tag as data, the port maps their DNAT target, and `add element` of
//! a key that exists with *different* data fails (EEXIST) while an identical one is a no-op.
//! So the kernel itself tells our elements from another attachment's, within one transaction:
//! - ADD: `add` each element: fails if another attachment holds an address or a host port;
//!   nothing is deleted, which matters: a batch that removes anything costs an RCU grace
//!   period when its netlink socket is closed (about 10 ms, measured), so the fast path
//!   removes nothing;
//! - DEL: `add` (the same check: never removes another attachment's element), then `delete`:
//!   absent elements are no error, without a listing (`destroy element` needs nft >= 1.0.8).
//!
//! A DEL without prevResult (a runtime that lost its result cache: containerd after a
//! restart, Kubernetes) is not told the addresses, from which the keys follow. The table
//! keeps an index for it, written and removed in the same batches as the elements: map
//! `owners` takes an attachment's key (a 64-bit hash of its container ID and interface, as
//! two marks) to the fingerprint of its elements (a hash of their maps, keys and data), and
//! `addrs4`/`addrs6` take its key and a rank to each of its addresses. Such a DEL looks up
//! single elements by key (NFT_MSG_GETSETELEM without a dump: the same cost with a thousand
//! attachments as with one), derives the elements from the addresses and its configuration,
//! and when their fingerprint is the one ADD recorded, sends the add-then-delete batch of a
//! DEL with prevResult. A DEL with prevResult checks the fingerprint too, in its batch: the
//! `add` of the fingerprint it derives fails (EEXIST) when ADD recorded another. When it differs
//! (the configuration changed since ADD, the runtime passes no port mappings now), when the
//! batch fails (a key another attachment holds now), or when the table keeps no index (one
//! an earlier version wrote, which the next ADD's slow path indexes), the DEL finds the
//! elements by their comments instead: it dumps each map over nfnetlink, picks the elements
//! whose comment names the attachment and sends the same batch for them; so does GC, for
//! the attachments it collects. An attachment the index does not know holds nothing, and a
//! missing table or map holds nothing: such a DEL succeeds.
//!
//! The ADD batch also adds an element to a set named after a hash of the rules
//! (`rules_XXXXXXXX`): when the table, a map or that set is missing (first ADD, rules of
//! another berth version, someone deleted the table), the batch fails (ENOENT). The ADD then
//! sends one batch that *creates* the table (fails if it exists) with its maps, chains, rules,
//! sentinel and the attachment's elements: on a host without the table, that is all, and no
//! `nft` process runs (its peak memory is over twice the plugin's). When that batch fails too,
//! another ADD created the table meanwhile (the ADD batch is retried once) or the table is
//! there but not as this version writes it: the slow path writes the table, maps and chains,
//! flushes the chains and writes their rules with `nft -f`. Each rule is written once, as a
//! [`nfnl::Rule`] ([`rules`]) that renders both its nft text and its nfnetlink expressions; the
//! tests check that `nft` lists both alike.
//!
//! Only when a batch fails is the table listed and the batch rebuilt from what is there:
//! that is where "host port .. is already mapped to container X" comes from, and where
//! stale elements of the container's own addresses (an attachment that never had its DEL)
//! are taken over.
//!
//! A port element whose data is identical to what an ADD writes is taken as it is (its
//! comment may still name a container that had the same address before). Listings therefore
//! attribute a port element to the owner of its target address in `ctr4`/`ctr6` when there
//! is one, and to its comment otherwise.
//!
//! A container open to other networks (`isolate` false) has, besides its `ctr4`/`ctr6`
//! elements, the same keys in `open4`/`open6`; the forward chain accepts routed traffic from
//! or to those before its isolation drop. DEL removes open elements whatever `isolate` says
//! now (an absent one is added and deleted in the same batch), and the slow path of an
//! isolated ADD removes any left on its keys, so a stale one never opens the next holder of
//! an address.
//!
//! A masqueraded container's exceptions (`no_masquerade`) are elements of `nomasq4`/`nomasq6`,
//! interval maps keyed `container address . destination prefix` (`10.1.0.2 . 10.62.0.0/24`),
//! which postrouting looks up before the masquerade, to `return`. A prefix is a range: its
//! element carries the first and the last key (NFTA_SET_ELEM_KEY_END) in nfnetlink, as nft
//! writes it, and its DEL names both. A key overlapping another element's fails the `add`
//! with EEXIST as a held key does; the slow path of an ADD removes the exceptions listed for
//! its addresses that it does not ask for (stale, or of its own configuration before), and
//! so it does with every element of its own it does not ask for (an ADD again, with other
//! port mappings), which the fingerprint would not describe.

use super::nfnl;
use super::{
    enable_forwarding, port_taken, require_tool, run_tool, socket, Attachment, Family, Firewall, FirewallError, FirewallResult,
    Mapping, Owner, Plan, Proto,
};
use berth_netlink::socket::NlError;
use ipnet::IpNet;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv6Addr};
use std::path::PathBuf;

/// The table, as nft commands name it.
pub const TABLE: &str = "inet berth";
/// Its name, as nfnetlink messages name it (with NFPROTO_INET).
const TABLE_NAME: &str = "berth";
const TABLE_COMMENT: &str = "berth CNI plugins: NAT, port mappings, isolation";
const SENTINEL_COMMENT: &str = "marks the chains' rules as those of this berth version";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    Addr,
    /// A prefix, in an interval map: `10.62.0.0/24`.
    Net,
    Ifname,
    Proto,
    Port,
    /// A 32-bit number: half an attachment's index key, or an address's rank.
    Mark,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataTy {
    /// A mark: an owner's tag, or the fingerprint in `owners`.
    Tag,
    Target,
    Addr,
}

struct MapDef {
    name: &'static str,
    key: &'static [Ty],
    data: DataTy,
    decl: &'static str,
    /// `flags interval`: its keys may be prefixes.
    interval: bool,
}

const MAPS: &[MapDef] = &[
    // Every container address and its bridge (isolation, hairpin): data is the owner's tag.
    MapDef { name: "ctr4", key: &[Ty::Addr, Ty::Ifname], data: DataTy::Tag, decl: "ipv4_addr . ifname : mark", interval: false },
    MapDef { name: "ctr6", key: &[Ty::Addr, Ty::Ifname], data: DataTy::Tag, decl: "ipv6_addr . ifname : mark", interval: false },
    // Containers open to other berth networks (isolateNetworks false), keyed like ctr4/ctr6.
    MapDef { name: "open4", key: &[Ty::Addr, Ty::Ifname], data: DataTy::Tag, decl: "ipv4_addr . ifname : mark", interval: false },
    MapDef { name: "open6", key: &[Ty::Addr, Ty::Ifname], data: DataTy::Tag, decl: "ipv6_addr . ifname : mark", interval: false },
    // Addresses of containers with ipMasq.
    MapDef { name: "masq4", key: &[Ty::Addr], data: DataTy::Tag, decl: "ipv4_addr : mark", interval: false },
    MapDef { name: "masq6", key: &[Ty::Addr], data: DataTy::Tag, decl: "ipv6_addr : mark", interval: false },
    // Published ports on every local address: protocol . port -> container address . port.
    MapDef {
        name: "ports4",
        key: &[Ty::Proto, Ty::Port],
        data: DataTy::Target,
        decl: "inet_proto . inet_service : ipv4_addr . inet_service",
        interval: false,
    },
    MapDef {
        name: "ports6",
        key: &[Ty::Proto, Ty::Port],
        data: DataTy::Target,
        decl: "inet_proto . inet_service : ipv6_addr . inet_service",
        interval: false,
    },
    // Published ports on one host address (hostIP): looked up first.
    MapDef {
        name: "hostports4",
        key: &[Ty::Addr, Ty::Proto, Ty::Port],
        data: DataTy::Target,
        decl: "ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service",
        interval: false,
    },
    MapDef {
        name: "hostports6",
        key: &[Ty::Addr, Ty::Proto, Ty::Port],
        data: DataTy::Target,
        decl: "ipv6_addr . inet_proto . inet_service : ipv6_addr . inet_service",
        interval: false,
    },
    // Destinations a masqueraded container's traffic keeps its own address to
    // (noMasqueradeDestinations): container address . destination prefix.
    MapDef {
        name: "nomasq4",
        key: &[Ty::Addr, Ty::Net],
        data: DataTy::Tag,
        decl: "ipv4_addr . ipv4_addr : mark",
        interval: true,
    },
    MapDef {
        name: "nomasq6",
        key: &[Ty::Addr, Ty::Net],
        data: DataTy::Tag,
        decl: "ipv6_addr . ipv6_addr : mark",
        interval: true,
    },
    // The index of attachments, for a DEL without prevResult: an attachment's key (a hash of
    // its container ID and interface, two marks) to the fingerprint of its elements above...
    MapDef { name: "owners", key: &[Ty::Mark, Ty::Mark], data: DataTy::Tag, decl: "mark . mark : mark", interval: false },
    // ... and its key and a rank to each of its addresses.
    MapDef {
        name: "addrs4",
        key: &[Ty::Mark, Ty::Mark, Ty::Mark],
        data: DataTy::Addr,
        decl: "mark . mark . mark : ipv4_addr",
        interval: false,
    },
    MapDef {
        name: "addrs6",
        key: &[Ty::Mark, Ty::Mark, Ty::Mark],
        data: DataTy::Addr,
        decl: "mark . mark . mark : ipv6_addr",
        interval: false,
    },
];

/// The maps of the index (see the module docs), by their place in [`MAPS`].
const OWNERS: usize = 12;
const ADDRS4: usize = 13;
const ADDRS6: usize = 14;

/// More addresses than an attachment has on one family.
const MAX_RANK: u32 = 1024;
/// The ranks of an attachment's addresses one lookup asks for (an attachment has one or two).
const RANKS_A_LOOKUP: u32 = 8;

fn is_index_map(map: &str) -> bool {
    [OWNERS, ADDRS4, ADDRS6].iter().any(|i| MAPS[*i].name == map)
}

/// The key and data types of an index map.
fn index_types(map: usize) -> MapTypes {
    map_types(MAPS[map].decl).expect("the index maps' declarations are nft types")
}

const CHAINS: &str = "\
add chain inet berth prerouting { type nat hook prerouting priority dstnat; policy accept; }
add chain inet berth output { type nat hook output priority -100; policy accept; }
add chain inet berth postrouting { type nat hook postrouting priority srcnat; policy accept; }
add chain inet berth forward { type filter hook forward priority filter; policy accept; }
";

impl MapDef {
    /// What `add map` declares: `type ...;`, and `flags interval;` for an interval map.
    fn declaration(&self) -> String {
        let flags = if self.interval { " flags interval;" } else { "" };
        format!("type {};{flags}", self.decl)
    }
}

/// The set whose presence says the chains hold this version's rules: named after a hash of
/// the chains, the maps' types and the rules' text (computed once: every ADD names it).
fn sentinel() -> String {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        let mut text = String::from(CHAINS);
        for m in MAPS {
            text += &m.declaration();
        }
        for (chain, rules) in rules() {
            text += chain;
            rules.iter().for_each(|r| text += &r.text());
        }
        format!("rules_{:08x}", berth_util::hash::fnv1a32([text.as_bytes()]))
    })
    .clone()
}

/// The fast path's proof that the table is set up: fails when the sentinel set is missing.
fn sentinel_ref() -> String {
    format!("add element {TABLE} {} {{ 1 }}\n", sentinel())
}

/// [`sentinel_ref`] in an nfnetlink batch.
fn sentinel_ref_nfnl(batch: &mut nfnl::Batch) {
    batch.add(&sentinel(), nfnl::Value::default().push(&1u32.to_ne_bytes()), None, None);
}

/// The table, maps and chains (idempotent `add`s), the chains' rules (flushed and rewritten),
/// and the sentinel, replacing those of other versions.
fn setup(listing: &Listing) -> String {
    let mut s = format!("add table {TABLE} {{ comment \"{TABLE_COMMENT}\"; }}\n");
    for m in MAPS {
        let _ = writeln!(s, "add map {TABLE} {} {{ {} }}", m.name, m.declaration());
    }
    s += CHAINS;
    for (chain, rules) in rules() {
        let _ = writeln!(s, "flush chain {TABLE} {chain}");
        for rule in rules {
            let _ = writeln!(s, "add rule {TABLE} {chain} {}", rule.text());
        }
    }
    let current = sentinel();
    for old in listing.sentinels.iter().filter(|name| **name != current) {
        let _ = writeln!(s, "delete set {TABLE} {old}");
    }
    let _ = writeln!(s, "add set {TABLE} {current} {{ type mark; comment \"{SENTINEL_COMMENT}\"; }}");
    s + &sentinel_ref()
}

/// The rules of each base chain, written once: `nft -f` is given their text, nfnetlink their
/// expressions. They only ever change with berth itself: the slow path flushes and rewrites
/// them, so the table repairs and upgrades itself.
#[rustfmt::skip] // one rule a line
fn rules() -> [(&'static str, Vec<nfnl::Rule>); 4] {
    use nfnl::Field::{Daddr, Dport, Iifname, L4proto, Oifname, Saddr};
    use nfnl::{Rule, CT_STATE_ESTABLISHED, CT_STATE_RELATED, CT_STATUS_DNAT};
    use Family::{V4, V6};
    let r = Rule::new;
    let (lo4, multicast4) = ([127, 0, 0, 0], [224, 0, 0, 0]);
    let (lo6, multicast6) = (Ipv6Addr::LOCALHOST, [0xff00, 0, 0, 0, 0, 0, 0, 0]);
    [
        ("prerouting", vec![
            r().nfproto(V4).fib_daddr_local().dnat_map(V4, &[Daddr(V4), L4proto, Dport], "hostports4"),
            r().nfproto(V4).fib_daddr_local().dnat_map(V4, &[L4proto, Dport], "ports4"),
            r().nfproto(V6).fib_daddr_local().dnat_map(V6, &[Daddr(V6), L4proto, Dport], "hostports6"),
            r().nfproto(V6).fib_daddr_local().dnat_map(V6, &[L4proto, Dport], "ports6"),
        ]),
        ("output", vec![
            r().nfproto(V4).not_in(Daddr(V4), lo4, 8).fib_daddr_local().dnat_map(V4, &[Daddr(V4), L4proto, Dport], "hostports4"),
            r().nfproto(V4).not_in(Daddr(V4), lo4, 8).fib_daddr_local().dnat_map(V4, &[L4proto, Dport], "ports4"),
            r().nfproto(V6).not_in(Daddr(V6), lo6, 128).fib_daddr_local().dnat_map(V6, &[Daddr(V6), L4proto, Dport], "hostports6"),
            r().nfproto(V6).not_in(Daddr(V6), lo6, 128).fib_daddr_local().dnat_map(V6, &[L4proto, Dport], "ports6"),
        ]),
        ("postrouting", vec![
            r().nfproto(V4).ct_status(CT_STATUS_DNAT).lookup(&[Saddr(V4), Oifname], "ctr4").masquerade().comment("hairpin"),
            r().nfproto(V4).lookup(&[Saddr(V4), Oifname], "ctr4").ret().comment("stays on its own bridge"),
            r().nfproto(V4).lookup(&[Saddr(V4), Daddr(V4)], "nomasq4").ret().comment("noMasqueradeDestinations"),
            r().nfproto(V4).lookup(&[Saddr(V4)], "masq4").not_in(Daddr(V4), multicast4, 4).masquerade().comment("ipMasq"),
            r().nfproto(V6).ct_status(CT_STATUS_DNAT).lookup(&[Saddr(V6), Oifname], "ctr6").masquerade().comment("hairpin"),
            r().nfproto(V6).lookup(&[Saddr(V6), Oifname], "ctr6").ret().comment("stays on its own bridge"),
            r().nfproto(V6).lookup(&[Saddr(V6), Daddr(V6)], "nomasq6").ret().comment("noMasqueradeDestinations"),
            r().nfproto(V6).lookup(&[Saddr(V6)], "masq6").not_in(Daddr(V6), multicast6, 8).masquerade().comment("ipMasq"),
        ]),
        ("forward", vec![
            r().ct_state(CT_STATE_ESTABLISHED | CT_STATE_RELATED).accept(),
            r().ct_status(CT_STATUS_DNAT).accept().comment("published ports"),
            r().nfproto(V4).lookup(&[Saddr(V4), Oifname], "ctr4").accept().comment("stays on its own bridge"),
            r().nfproto(V4).lookup(&[Saddr(V4), Iifname], "open4").accept().comment("from a network open to others"),
            r().nfproto(V4).lookup(&[Daddr(V4), Oifname], "open4").accept().comment("to a network open to others"),
            r().nfproto(V4).lookup(&[Saddr(V4), Iifname], "ctr4").lookup(&[Daddr(V4), Oifname], "ctr4").drop()
                .comment("isolation between berth networks"),
            r().nfproto(V6).lookup(&[Saddr(V6), Oifname], "ctr6").accept().comment("stays on its own bridge"),
            r().nfproto(V6).lookup(&[Saddr(V6), Iifname], "open6").accept().comment("from a network open to others"),
            r().nfproto(V6).lookup(&[Daddr(V6), Oifname], "open6").accept().comment("to a network open to others"),
            r().nfproto(V6).lookup(&[Saddr(V6), Iifname], "ctr6").lookup(&[Daddr(V6), Oifname], "ctr6").drop()
                .comment("isolation between berth networks"),
        ]),
    ]
}

/// A map's key and data types.
type MapTypes = (Vec<nfnl::Type>, Vec<nfnl::Type>);

/// A map's `type` declaration (`ipv4_addr . ifname : mark`): key and data types.
fn map_types(decl: &str) -> Option<MapTypes> {
    let types = |s: &str| s.split('.').map(|t| nfnl::Type::parse(t.trim())).collect::<Option<Vec<_>>>();
    let (key, data) = decl.split_once(':')?;
    Some((types(key)?, types(data)?))
}

/// One line of [`CHAINS`] (`add chain inet berth NAME { type T hook H priority P; policy
/// accept; }`): name, type, hook and priority.
fn base_chain(line: &str) -> Option<(&str, &str, nfnl::Hook, i32)> {
    let words: Vec<&str> = line.split(|c: char| c.is_whitespace() || c == ';').filter(|w| !w.is_empty()).collect();
    let ["add", "chain", "inet", TABLE_NAME, name, "{", "type", ty, "hook", hook, "priority", priority, "policy", "accept", "}"] =
        words[..]
    else {
        return None;
    };
    let hook = match hook {
        "prerouting" => nfnl::Hook::Prerouting,
        "forward" => nfnl::Hook::Forward,
        "output" => nfnl::Hook::Output,
        "postrouting" => nfnl::Hook::Postrouting,
        _ => return None,
    };
    // nft's names of the standard priorities of the inet family's hooks.
    let priority = match priority {
        "dstnat" => -100,
        "filter" => 0,
        "srcnat" => 100,
        number => number.parse().ok()?,
    };
    Some((name, ty, hook, priority))
}

/// The first ADD on a host: [`setup`] of an empty listing and the attachment's elements, as
/// one nfnetlink batch that creates the table, so that it fails when the table exists.
fn create_batch(elems: &[Elem], comment: &str) -> Result<nfnl::Batch, String> {
    let mut batch = nfnl::Batch::new(TABLE_NAME);
    batch.create_table(TABLE_COMMENT);
    for m in MAPS {
        let (key, data) = map_types(m.decl).ok_or_else(|| format!("map {}: cannot read type {:?}", m.name, m.decl))?;
        batch.add_set(m.name, &key, Some(&data), m.interval, None);
    }
    for line in CHAINS.lines() {
        let (name, ty, hook, priority) = base_chain(line).ok_or_else(|| format!("cannot read chain {line:?}"))?;
        batch.add_base_chain(name, ty, hook, priority);
    }
    for (chain, rules) in rules() {
        rules.iter().for_each(|rule| batch.add_rule(chain, rule));
    }
    batch.add_set(&sentinel(), &[nfnl::Type::Mark], None, false, Some(SENTINEL_COMMENT));
    sentinel_ref_nfnl(&mut batch);
    elems.iter().for_each(|e| e.add_nfnl(&mut batch, comment));
    Ok(batch)
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Addr(IpAddr),
    /// A prefix (truncated), in an interval map's key.
    Net(IpNet),
    Ifname(String),
    Proto(Proto),
    Port(u16),
    Mark(u32),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Data {
    Tag(u32),
    Target(IpAddr, u16),
    Addr(IpAddr),
}

/// One map element of an attachment.
#[derive(Debug, Clone)]
struct Elem {
    map: &'static str,
    key: Vec<Part>,
    data: Data,
    /// For port elements: the mapping, to name it in errors.
    mapping: Option<Mapping>,
}

impl Elem {
    fn key_text(&self) -> String {
        key_text(&self.key)
    }
    fn add(&self, comment: &str) -> String {
        add_text(self.map, &self.key, &self.data, comment)
    }
    fn delete(&self) -> String {
        delete_text(self.map, &self.key)
    }
    /// [`Elem::add`] in an nfnetlink batch (a key with a prefix is a range).
    fn add_nfnl(&self, batch: &mut nfnl::Batch, comment: &str) {
        batch.add_range(self.map, &key_value(&self.key), &key_last(&self.key), Some(&self.data.value()), Some(comment));
    }
    /// [`Elem::delete`] in an nfnetlink batch.
    fn delete_nfnl(&self, batch: &mut nfnl::Batch) {
        batch.delete_range(self.map, &key_value(&self.key), &key_last(&self.key));
    }
}

/// A key as the kernel compares it (see [`nfnl::Value`] for each type's bytes); in an interval
/// map, the first value of its range (a prefix's network address).
fn key_value(key: &[Part]) -> nfnl::Value {
    let mut v = nfnl::Value::default();
    for part in key {
        part.push_to(&mut v);
    }
    v
}

/// The last value of a key's range: a prefix's last address (the key itself without one).
fn key_last(key: &[Part]) -> nfnl::Value {
    let mut v = nfnl::Value::default();
    for part in key {
        match part {
            Part::Net(net) => Part::Addr(net.broadcast()).push_to(&mut v),
            other => other.push_to(&mut v),
        }
    }
    v
}

impl Part {
    fn push_to(&self, v: &mut nfnl::Value) {
        match self {
            Part::Addr(IpAddr::V4(ip)) => v.push(&ip.octets()),
            Part::Addr(IpAddr::V6(ip)) => v.push(&ip.octets()),
            Part::Net(net) => match net.network() {
                IpAddr::V4(ip) => v.push(&ip.octets()),
                IpAddr::V6(ip) => v.push(&ip.octets()),
            },
            Part::Ifname(name) => v.push_ifname(name),
            Part::Proto(proto) => v.push(&[proto.number()]),
            Part::Port(port) => v.push(&port.to_be_bytes()),
            Part::Mark(mark) => v.push(&mark.to_ne_bytes()),
        };
    }

    /// One component of a key of type `ty` as the kernel holds it
    /// ([`nfnl::Value::components`]), `nf` its nft type; `last`, the same component of the
    /// range's last value (in an interval map; else the same bytes). A prefix is the range
    /// from its network address to its last address.
    fn read(ty: Ty, nf: nfnl::Type, first: &[u8], last: &[u8]) -> Option<Part> {
        let addr = |bytes: &[u8]| match nf {
            nfnl::Type::Ipv4Addr => Some(IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?)),
            nfnl::Type::Ipv6Addr => Some(IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?)),
            _ => None,
        };
        Some(match ty {
            Ty::Addr => Part::Addr(addr(first)?),
            Ty::Net => {
                let (first, last) = (addr(first)?, addr(last)?);
                let bits = if first.is_ipv4() { 32 } else { 128 };
                let prefix = (0..=bits)
                    .rev()
                    .map(|len| IpNet::new(first, len))
                    .find_map(|net| net.ok().filter(|net| net.network() == first && net.broadcast() == last));
                Part::Net(prefix?)
            }
            Ty::Ifname => {
                let name = first.split(|b| *b == 0).next().unwrap_or_default();
                Part::Ifname(String::from_utf8(name.to_vec()).ok()?)
            }
            Ty::Proto => Part::Proto(Proto::from_number(u64::from(*first.first()?))?),
            Ty::Port => Part::Port(u16::from_be_bytes(first.try_into().ok()?)),
            Ty::Mark => Part::Mark(u32::from_ne_bytes(first.try_into().ok()?)),
        })
    }
}

impl Data {
    /// A tag is a `mark` (host byte order), a target `addr . inet_service`.
    fn value(&self) -> nfnl::Value {
        let mut v = nfnl::Value::default();
        match self {
            Data::Tag(tag) => v.push(&tag.to_ne_bytes()),
            Data::Target(ip, port) => {
                Part::Addr(*ip).push_to(&mut v);
                v.push(&port.to_be_bytes())
            }
            Data::Addr(ip) => {
                Part::Addr(*ip).push_to(&mut v);
                &mut v
            }
        };
        v
    }

    /// As nft writes it.
    fn text(&self) -> String {
        match self {
            Data::Tag(tag) => format!("0x{tag:08x}"),
            Data::Target(ip, port) => format!("{ip} . {port}"),
            Data::Addr(ip) => ip.to_string(),
        }
    }
}

fn key_text(key: &[Part]) -> String {
    let parts: Vec<String> = key
        .iter()
        .map(|p| match p {
            Part::Addr(ip) => ip.to_string(),
            // A whole address is written, and listed, without its prefix length.
            Part::Net(net) if net.prefix_len() == net.max_prefix_len() => net.addr().to_string(),
            Part::Net(net) => net.to_string(),
            Part::Ifname(name) => format!("\"{name}\""),
            Part::Proto(proto) => proto.to_string(),
            Part::Port(port) => port.to_string(),
            Part::Mark(mark) => format!("0x{mark:08x}"),
        })
        .collect();
    parts.join(" . ")
}

fn add_text(map: &str, key: &[Part], data: &Data, comment: &str) -> String {
    format!("add element {TABLE} {map} {{ {} comment \"{comment}\" : {} }}\n", key_text(key), data.text())
}

fn delete_text(map: &str, key: &[Part]) -> String {
    format!("delete element {TABLE} {map} {{ {} }}\n", key_text(key))
}

fn v(family: Family, v4: &'static str, v6: &'static str) -> &'static str {
    match family {
        Family::V4 => v4,
        Family::V6 => v6,
    }
}

/// The elements ADD writes for an attachment: its state ([`state_elements`]) and its entries
/// in the index.
fn elements(a: &Attachment, plan: &Plan) -> Vec<Elem> {
    let mut out = state_elements(a, plan);
    let fingerprint = fingerprint(out.iter().map(|e| (e.map, &e.key[..], &e.data)));
    out.extend(index_elements(&plan.owner, a.addresses, fingerprint));
    out
}

/// The elements the chains look up for an attachment.
fn state_elements(a: &Attachment, plan: &Plan) -> Vec<Elem> {
    let tag = Data::Tag(plan.owner.tag());
    let mut out = Vec::new();
    for ip in a.addresses {
        let family = Family::of(ip);
        out.push(Elem {
            map: v(family, "ctr4", "ctr6"),
            key: vec![Part::Addr(*ip), Part::Ifname(a.bridge.to_string())],
            data: tag.clone(),
            mapping: None,
        });
        if !a.isolate {
            out.push(open_element(a, plan, *ip));
        }
        if a.masquerade {
            out.push(Elem { map: v(family, "masq4", "masq6"), key: vec![Part::Addr(*ip)], data: tag.clone(), mapping: None });
            for dst in a.no_masquerade.iter().filter(|d| Family::of(&d.addr()) == family) {
                let key = vec![Part::Addr(*ip), Part::Net(dst.trunc())];
                out.push(Elem { map: v(family, "nomasq4", "nomasq6"), key, data: tag.clone(), mapping: None });
            }
        }
    }
    for m in &plan.mappings {
        let (map, mut key) = match m.host_ip {
            Some(ip) => (v(m.family, "hostports4", "hostports6"), vec![Part::Addr(ip)]),
            None => (v(m.family, "ports4", "ports6"), vec![]),
        };
        key.extend([Part::Proto(m.proto), Part::Port(m.host_port)]);
        out.push(Elem { map, key, data: Data::Target(m.target, m.container_port), mapping: Some(*m) });
    }
    out
}

/// An attachment's key in the index: a 64-bit hash of what [`Owner::same_attachment`]
/// compares, as two marks.
fn index_key(owner: &Owner) -> [Part; 2] {
    let hash = berth_util::hash::fnv1a64([owner.id.as_bytes(), b"\0", owner.ifname.as_bytes()]);
    [Part::Mark((hash >> 32) as u32), Part::Mark(hash as u32)]
}

/// What identifies a set of elements (map, key and data of each, in any order): the index
/// keeps it for each attachment, so that a DEL without prevResult knows whether the elements
/// it derives from the addresses and its configuration are the ones ADD wrote.
fn fingerprint<'a>(elems: impl Iterator<Item = ElemParts<'a>>) -> u32 {
    let mut texts: Vec<String> = elems.map(|(map, key, data)| add_text(map, key, data, "")).collect();
    texts.sort_unstable();
    berth_util::hash::fnv1a32(texts.iter().map(String::as_bytes))
}

/// An attachment's entries in the index: its fingerprint, and each address with its rank
/// among those of its family. None for an attachment without addresses, which has no elements.
fn index_elements<'a>(owner: &Owner, addresses: impl IntoIterator<Item = &'a IpAddr>, fingerprint: u32) -> Vec<Elem> {
    let [hi, lo] = index_key(owner);
    let mut out = Vec::new();
    let mut ranks = [0u32; 2];
    for ip in addresses {
        let family = Family::of(ip);
        let rank = &mut ranks[usize::from(family == Family::V6)];
        let key = vec![hi.clone(), lo.clone(), Part::Mark(*rank)];
        out.push(Elem { map: v(family, "addrs4", "addrs6"), key, data: Data::Addr(*ip), mapping: None });
        *rank += 1;
    }
    if !out.is_empty() {
        out.insert(0, Elem { map: "owners", key: vec![hi, lo], data: Data::Tag(fingerprint), mapping: None });
    }
    out
}

/// The element that opens one address of an attachment to other berth networks.
fn open_element(a: &Attachment, plan: &Plan, ip: IpAddr) -> Elem {
    Elem {
        map: v(Family::of(&ip), "open4", "open6"),
        key: vec![Part::Addr(ip), Part::Ifname(a.bridge.to_string())],
        data: Data::Tag(plan.owner.tag()),
        mapping: None,
    }
}

/// The open elements an isolated attachment must not have (left by an ADD with
/// `isolateNetworks: false` whose DEL never came, or came with the configuration changed).
fn unwanted_open_elements(a: &Attachment, plan: &Plan) -> Vec<Elem> {
    if !a.isolate {
        return Vec::new();
    }
    a.addresses.iter().map(|ip| open_element(a, plan, *ip)).collect()
}

/// An element as `nft -j list` shows it.
#[derive(Debug, Clone)]
struct Listed {
    map: &'static str,
    key: Vec<Part>,
    data: Option<Data>,
    owner: Option<Owner>,
}

/// The table as it is now: rules per chain and every element.
#[derive(Debug, Default)]
struct Listing {
    exists: bool,
    rules: HashMap<String, usize>,
    elems: Vec<Listed>,
    /// `rules_*` sets, of this version or others.
    sentinels: Vec<String>,
}

impl Listing {
    fn find(&self, map: &str, key: &[Part]) -> Option<&Listed> {
        self.elems.iter().find(|l| l.map == map && l.key == key)
    }

    /// Whom an element belongs to: its comment's owner, except for a port element aimed at an
    /// address another attachment now holds (see the module docs).
    fn owner_of<'a>(&'a self, l: &'a Listed) -> Option<&'a Owner> {
        owner_among(l, &self.address_holders())
    }

    /// The elements of the attachments `pick` chooses, with their owners. The address holders
    /// are gathered once, not once per port element (a listing of a thousand attachments).
    fn owned_by<'a>(&'a self, pick: impl Fn(&Owner) -> bool + 'a) -> impl Iterator<Item = (&'a Listed, &'a Owner)> + 'a {
        let holders = self.address_holders();
        self.elems.iter().filter_map(move |l| owner_among(l, &holders).filter(|o| pick(o)).map(|o| (l, o)))
    }

    /// The attachments whose `ctr4`/`ctr6` elements hold each address, in listing order.
    fn address_holders(&self) -> HashMap<IpAddr, Vec<&Owner>> {
        let mut holders: HashMap<IpAddr, Vec<&Owner>> = HashMap::new();
        for e in self.elems.iter().filter(|e| matches!(e.map, "ctr4" | "ctr6")) {
            if let (Some(Part::Addr(ip)), Some(owner)) = (e.key.first(), &e.owner) {
                holders.entry(*ip).or_default().push(owner);
            }
        }
        holders
    }
}

/// What [`fingerprint`] reads of an element: its map, key and data.
type ElemParts<'a> = (&'a str, &'a [Part], &'a Data);

/// Index entries for the attachments of a listing that have none (their elements written by a
/// version before the index), except `except`'s: the slow path of an ADD writes them with the
/// sentinel of this version, which says the index is whole.
fn backfill_index(listing: &Listing, except: &Owner) -> String {
    let holders = listing.address_holders();
    let indexed: HashSet<(&str, &str)> = listing
        .elems
        .iter()
        .filter(|l| l.map == MAPS[OWNERS].name)
        .filter_map(|l| l.owner.as_ref().map(|o| (o.id.as_str(), o.ifname.as_str())))
        .collect();
    // Per attachment (ID and interface): its owner and its elements' maps, keys and data.
    let mut unindexed: BTreeMap<(&str, &str), (&Owner, Vec<ElemParts>)> = BTreeMap::new();
    for l in listing.elems.iter().filter(|l| !is_index_map(l.map)) {
        let (Some(owner), Some(data)) = (owner_among(l, &holders), &l.data) else { continue };
        if owner.same_attachment(except) || indexed.contains(&(owner.id.as_str(), owner.ifname.as_str())) {
            continue;
        }
        let (_, elems) = unindexed.entry((&owner.id, &owner.ifname)).or_insert((owner, Vec::new()));
        elems.push((l.map, &l.key, data));
    }
    let mut out = String::new();
    for (owner, elems) in unindexed.values() {
        let addresses = elems.iter().filter(|(map, ..)| matches!(*map, "ctr4" | "ctr6")).filter_map(|(_, key, _)| match key {
            [Part::Addr(ip), ..] => Some(ip),
            _ => None,
        });
        let fingerprint = fingerprint(elems.iter().copied());
        index_elements(owner, addresses, fingerprint).iter().for_each(|e| out += &e.add(&owner.comment()));
    }
    out
}

/// [`Listing::owner_of`], given the listing's [`Listing::address_holders`].
fn owner_among<'a>(l: &'a Listed, holders: &HashMap<IpAddr, Vec<&'a Owner>>) -> Option<&'a Owner> {
    let Some(Data::Target(target, _)) = l.data else { return l.owner.as_ref() };
    let holders = holders.get(&target).map(Vec::as_slice).unwrap_or_default();
    match (&l.owner, holders.first()) {
        (Some(own), _) if holders.iter().any(|h| h.same_attachment(own)) => Some(own),
        (_, Some(holder)) => Some(*holder),
        (own, None) => own.as_ref(),
    }
}

/// An element of map `def` as nfnetlink lists it; `None` when its key or data is not of the
/// map's types (a map of that name that berth did not write).
fn listed_element(def: &MapDef, (key_types, data_types): &MapTypes, e: &nfnl::SetElement) -> Option<Listed> {
    let first = e.key.components(key_types)?;
    let last = match &e.key_end {
        Some(end) => end.components(key_types)?,
        None => first.clone(),
    };
    let types = def.key.iter().zip(key_types);
    let key =
        types.zip(first.iter().zip(&last)).map(|((ty, nf), (f, l))| Part::read(*ty, *nf, f, l)).collect::<Option<Vec<_>>>()?;
    let data = match (def.data, &e.data.as_ref()?.components(data_types)?[..], &data_types[..]) {
        (DataTy::Tag, [mark], _) => Data::Tag(u32::from_ne_bytes((*mark).try_into().ok()?)),
        (DataTy::Target, [addr, port], [addr_type, _]) => match Part::read(Ty::Addr, *addr_type, addr, addr)? {
            Part::Addr(ip) => Data::Target(ip, u16::from_be_bytes((*port).try_into().ok()?)),
            _ => return None,
        },
        (DataTy::Addr, [addr], [addr_type]) => match Part::read(Ty::Addr, *addr_type, addr, addr)? {
            Part::Addr(ip) => Data::Addr(ip),
            _ => return None,
        },
        _ => return None,
    };
    Some(Listed { map: def.name, key, data: Some(data), owner: e.comment.as_deref().and_then(Owner::parse) })
}

/// [`parse_listing`] and every element's owner, for [`crate::fuzzing`].
pub(crate) fn decode_for_fuzzing(json: &str) -> bool {
    let Ok(listing) = parse_listing(json) else { return false };
    for elem in &listing.elems {
        let _ = listing.owner_of(elem);
    }
    true
}

fn parse_listing(json: &str) -> Result<Listing, String> {
    let doc: Value = serde_json::from_str(json).map_err(|e| format!("cannot parse `nft -j list table {TABLE}`: {e}"))?;
    let items = doc["nftables"].as_array().ok_or("no \"nftables\" array in `nft -j` output")?;
    let mut listing = Listing { exists: true, ..Listing::default() };
    for item in items {
        if let Some(rule) = item.get("rule") {
            if let Some(chain) = rule["chain"].as_str() {
                *listing.rules.entry(chain.to_string()).or_default() += 1;
            }
        }
        let Some(set) = item.get("map").or_else(|| item.get("set")) else { continue };
        if let Some(name) = set["name"].as_str().filter(|n| n.starts_with("rules_")) {
            listing.sentinels.push(name.to_string());
        }
        let Some(def) = MAPS.iter().find(|m| set["name"].as_str() == Some(m.name)) else { continue };
        for elem in set["elem"].as_array().map(Vec::as_slice).unwrap_or_default() {
            // A map element is [key, data]; the key is {"elem": {"val", "comment"}} or bare.
            let (key, data) = match elem.as_array().map(Vec::as_slice) {
                Some([key, data]) => (key, Some(data)),
                _ => (elem, None),
            };
            let (val, comment) = match key.get("elem") {
                Some(e) => (&e["val"], e["comment"].as_str()),
                None => (key, None),
            };
            let Some(key) = parse_parts(val, def.key) else { continue };
            let data = data.and_then(|d| parse_data(d, def.data));
            listing.elems.push(Listed { map: def.name, key, data, owner: comment.and_then(Owner::parse) });
        }
    }
    Ok(listing)
}

fn parse_parts(val: &Value, types: &[Ty]) -> Option<Vec<Part>> {
    let values: Vec<&Value> = match val.get("concat") {
        Some(Value::Array(vals)) => vals.iter().collect(),
        _ => vec![val],
    };
    if values.len() != types.len() {
        return None;
    }
    values.iter().zip(types).map(|(v, ty)| parse_part(v, *ty)).collect()
}

fn parse_part(v: &Value, ty: Ty) -> Option<Part> {
    match ty {
        Ty::Addr => v.as_str()?.parse().ok().map(Part::Addr),
        // `"10.62.0.5"` (a whole address) or `{"prefix": {"addr": "10.62.0.0", "len": 24}}`.
        Ty::Net => match (v.as_str(), v.get("prefix")) {
            (Some(addr), _) => addr.parse::<IpAddr>().ok().map(IpNet::from),
            (None, Some(prefix)) => {
                IpNet::new(prefix["addr"].as_str()?.parse().ok()?, u8::try_from(prefix["len"].as_u64()?).ok()?).ok()
            }
            (None, None) => None,
        }
        .map(Part::Net),
        Ty::Ifname => v.as_str().map(|s| Part::Ifname(s.to_string())),
        Ty::Proto => match v {
            Value::String(s) => Proto::parse(s),
            Value::Number(n) => Proto::from_number(n.as_u64()?),
            _ => None,
        }
        .map(Part::Proto),
        Ty::Port => match v {
            Value::String(s) => s.parse().ok(),
            Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
            _ => None,
        }
        .map(Part::Port),
        Ty::Mark => parse_mark(v).map(Part::Mark),
    }
}

/// A mark as `nft -j` lists it: a number, or hexadecimal text.
fn parse_mark(v: &Value) -> Option<u32> {
    match v {
        Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        Value::String(s) => u32::from_str_radix(s.trim_start_matches("0x"), 16).ok(),
        _ => None,
    }
}

fn parse_data(v: &Value, ty: DataTy) -> Option<Data> {
    match ty {
        DataTy::Tag => parse_mark(v).map(Data::Tag),
        DataTy::Addr => v.as_str()?.parse().ok().map(Data::Addr),
        DataTy::Target => match parse_parts(v, &[Ty::Addr, Ty::Port])?.as_slice() {
            [Part::Addr(ip), Part::Port(port)] => Some(Data::Target(*ip, *port)),
            _ => None,
        },
    }
}

/// The nftables backend (`firewallBackend: "nftables"`).
#[derive(Debug, Clone)]
pub struct Nftables {
    nft: PathBuf,
    /// The socket of the element batches.
    nfnl: nfnl::Conn,
}

impl Nftables {
    /// Errors when `nft` is not installed.
    pub fn new() -> FirewallResult<Nftables> {
        Ok(Nftables::with_binary(require_tool("nft", "nftables")?))
    }

    pub fn with_binary(nft: PathBuf) -> Nftables {
        Nftables { nft, nfnl: nfnl::Conn::default() }
    }

    fn apply(&self, batch: &str) -> Result<(), String> {
        run_tool(&self.nft, &["-f", "-"], Some(batch)).map(drop)
    }

    /// The table now; a table that does not exist is an empty listing.
    fn list(&self) -> FirewallResult<Listing> {
        let what = || format!("nftables: cannot list table {TABLE}");
        match run_tool(&self.nft, &["-j", "list", "table", "inet", "berth"], None) {
            Ok(out) => parse_listing(&out).map_err(|e| FirewallError::kernel_because(what(), e)),
            Err(e) if e.contains("No such file or directory") => Ok(Listing::default()),
            Err(e) => Err(FirewallError::kernel_because(what(), e)),
        }
    }

    /// ADD's slow path: the table set up anew and the elements written from the listing,
    /// taking over stale elements of the container's own addresses and refusing host ports
    /// another attachment holds.
    fn add_from_listing(&self, a: &Attachment, plan: &Plan, elems: &[Elem]) -> FirewallResult<()> {
        let listing = self.list()?;
        let comment = plan.owner.comment();
        let mut batch = setup(&listing);
        let mut doomed: Vec<String> = Vec::new();
        for e in unwanted_open_elements(a, plan) {
            if let Some(have) = listing.find(e.map, &e.key) {
                doomed.push(delete_text(have.map, &have.key));
            }
        }
        // Exceptions of its addresses it does not ask for (an address has one holder: they are
        // stale, or of its own configuration before): one overlapping a wanted prefix would
        // make the `add` fail.
        let wanted = |l: &Listed| elems.iter().any(|e| e.map == l.map && e.key == l.key);
        for l in listing.elems.iter().filter(|l| matches!(l.map, "nomasq4" | "nomasq6") && !wanted(l)) {
            if matches!(l.key.first(), Some(Part::Addr(ip)) if a.addresses.contains(ip)) {
                doomed.push(delete_text(l.map, &l.key));
            }
        }
        // Its own elements it does not ask for now (an ADD again, with another configuration):
        // the index's fingerprint describes only those it asks for.
        for (l, _) in listing.owned_by(|o| o.same_attachment(&plan.owner)).filter(|(l, _)| !wanted(l)) {
            doomed.push(delete_text(l.map, &l.key));
        }
        doomed.sort_unstable();
        doomed.dedup();
        doomed.iter().for_each(|delete| batch += delete);
        batch += &backfill_index(&listing, &plan.owner);
        for e in elems {
            if let Some(have) = listing.find(e.map, &e.key) {
                let holder = listing.owner_of(have);
                let ours = holder.is_some_and(|o| o.same_attachment(&plan.owner));
                if let (Some(m), false) = (&e.mapping, ours || have.data.as_ref() == Some(&e.data)) {
                    let target = match have.data {
                        Some(Data::Target(ip, port)) => Some(socket(ip, port)),
                        _ => None,
                    };
                    return Err(port_taken(m, holder, target));
                }
                batch += &e.delete();
            }
            batch += &e.add(&comment);
        }
        self.apply(&batch).map_err(|e| FirewallError::kernel_because(format!("nftables: cannot set up {}", plan.owner), e))
    }

    /// The first ADD on a host over nfnetlink ([`create_batch`]); fails when the table exists.
    fn create(&self, elems: &[Elem], comment: &str) -> Result<(), String> {
        create_batch(elems, comment)?.send(&self.nfnl).map_err(|e| format!("nfnetlink batch: {e}"))
    }

    /// What `nft -f` is given to set the table up on a host without it, which the first ADD
    /// writes over nfnetlink instead (for tests: both must list alike).
    pub fn setup_script() -> String {
        setup(&Listing::default())
    }

    /// The elements of the table's maps that attachments `pick` chooses may own, listed over
    /// nfnetlink (one dump per map), without `nft`: every `ctr4`/`ctr6` element (their holders
    /// decide whom a port element belongs to, see [`Listing::owner_of`]), and of the other
    /// maps those whose comment names such an attachment, or, in the port maps, aimed at an
    /// address one holds. What DEL without prevResult and GC look for; the others are not
    /// decoded (a thousand attachments have a few thousand elements). A table or map that
    /// does not exist holds nothing.
    fn list_elements(&self, pick: &dyn Fn(&Owner) -> bool) -> FirewallResult<Listing> {
        let mut listing = Listing::default();
        // Filled from ctr4 and ctr6, which come first in MAPS.
        let mut picked_holds: HashSet<IpAddr> = HashSet::new();
        for def in MAPS {
            let elements = match self.nfnl.set_elements(TABLE_NAME, def.name) {
                Ok(elements) => elements,
                Err(e) if e.errno() == Some(libc::ENOENT) => continue,
                Err(e) => {
                    return Err(FirewallError::kernel_because(format!("nftables: cannot list map {} of {TABLE}", def.name), e))
                }
            };
            listing.exists = true;
            let (Some(types), holders) = (map_types(def.decl), matches!(def.name, "ctr4" | "ctr6")) else { continue };
            for e in &elements {
                let picked = e.comment.as_deref().and_then(Owner::parse).is_some_and(|o| pick(&o));
                if !(picked || holders || def.data == DataTy::Target) {
                    continue;
                }
                let Some(listed) = listed_element(def, &types, e) else { continue };
                match (&listed.key[..], &listed.data) {
                    ([Part::Addr(ip), ..], _) if holders && picked => _ = picked_holds.insert(*ip),
                    (_, Some(Data::Target(ip, _))) if !picked && !picked_holds.contains(ip) => continue,
                    _ => {}
                }
                listing.elems.push(listed);
            }
        }
        Ok(listing)
    }

    /// Deletes the elements a listing attributes to attachments `pick` chooses, in nfnetlink
    /// batches that add each as listed, then delete it (as DEL's own batch does): an element
    /// another DEL or GC removed since the listing is no error. When a batch fails all the
    /// same (an ADD took a key over since, the table was deleted), the maps are listed again.
    fn delete_owned(&self, pick: impl Fn(&Owner) -> bool, what: impl Fn() -> String) -> FirewallResult<()> {
        const ATTEMPTS: usize = 3;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let listing = self.list_elements(&pick)?;
            let doomed: Vec<(Elem, String)> = listing
                .owned_by(&pick)
                .filter_map(|(listed, owner)| {
                    let elem = Elem { map: listed.map, key: listed.key.clone(), data: listed.data.clone()?, mapping: None };
                    Some((elem, owner.comment()))
                })
                .collect();
            match self.delete_elements(&doomed) {
                Ok(()) => return Ok(()),
                Err(_) if attempt < ATTEMPTS => continue,
                Err(e) => {
                    return Err(FirewallError::kernel_because(
                        format!("nftables: cannot remove {}", what()),
                        format!("nfnetlink batch: {e}"),
                    ))
                }
            }
        }
    }

    /// The fingerprint the index holds for an attachment (one lookup); `None` when it holds
    /// none, or there is no index (no table, a table of an earlier version).
    fn indexed_fingerprint(&self, owner: &Owner) -> Result<Option<u32>, NlError> {
        let key = key_value(&index_key(owner));
        let found = self.nfnl.set_elements_of(TABLE_NAME, MAPS[OWNERS].name, &[key])?;
        match found.first().map(|e| listed_element(&MAPS[OWNERS], &index_types(OWNERS), e).and_then(|l| l.data)) {
            None => Ok(None),
            Some(Some(Data::Tag(fingerprint))) => Ok(Some(fingerprint)),
            Some(_) => Err(NlError::Protocol("an element of map owners of another type".into())),
        }
    }

    /// The addresses the index holds for an attachment, in ADD's order: one lookup a family
    /// for the first [`RANKS_A_LOOKUP`] ranks, and one for each further such number.
    fn indexed_addresses(&self, owner: &Owner) -> Result<Vec<IpAddr>, NlError> {
        let [hi, lo] = index_key(owner);
        let mut addresses = Vec::new();
        for map in [ADDRS4, ADDRS6] {
            let types = index_types(map);
            for first in (0..MAX_RANK).step_by(RANKS_A_LOOKUP as usize) {
                let keys: Vec<nfnl::Value> =
                    (first..first + RANKS_A_LOOKUP).map(|rank| key_value(&[hi.clone(), lo.clone(), Part::Mark(rank)])).collect();
                let found = self.nfnl.set_elements_of(TABLE_NAME, MAPS[map].name, &keys)?;
                for elem in &found {
                    match listed_element(&MAPS[map], &types, elem).and_then(|l| l.data) {
                        Some(Data::Addr(ip)) => addresses.push(ip),
                        _ => return Err(NlError::Protocol(format!("an element of map {} of another type", MAPS[map].name))),
                    }
                }
                if found.len() < keys.len() {
                    break;
                }
            }
        }
        Ok(addresses)
    }

    /// Whether the table is as this version writes it, which an attachment's ADD and DEL keep
    /// in the index (its sentinel set holds the element every ADD names).
    fn keeps_index(&self) -> bool {
        let one = nfnl::Value::default().push(&1u32.to_ne_bytes()).clone();
        matches!(self.nfnl.set_elements_of(TABLE_NAME, &sentinel(), &[one]), Ok(found) if !found.is_empty())
    }

    /// [`Nftables::delete_owned`]'s batches, each of at most [`BATCH_ELEMENTS`] elements.
    fn delete_elements(&self, doomed: &[(Elem, String)]) -> Result<(), NlError> {
        for chunk in doomed.chunks(BATCH_ELEMENTS) {
            let mut batch = nfnl::Batch::new(TABLE_NAME);
            for (elem, comment) in chunk {
                elem.add_nfnl(&mut batch, comment);
                elem.delete_nfnl(&mut batch);
            }
            batch.send(&self.nfnl)?;
        }
        Ok(())
    }
}

/// A batch is one datagram, which must fit the socket's send buffer, and the kernel answers
/// each of its messages with an ACK of its own, which must fit the receive buffer (both
/// net.core.[rw]mem_default, 208 KiB here; an ACK takes about 1 KiB of it): 64 elements added
/// and deleted are 128 ACKs. One batch for a GC of 560 attachments failed with EMSGSIZE, one
/// of 256 elements with ENOBUFS.
const BATCH_ELEMENTS: usize = 64;

impl Firewall for Nftables {
    fn name(&self) -> &'static str {
        "nftables"
    }

    fn add(&self, a: &Attachment) -> FirewallResult<()> {
        let plan = Plan::new(a)?;
        let elems = elements(a, &plan);
        let comment = plan.owner.comment();
        let add = || {
            let mut batch = nfnl::Batch::new(TABLE_NAME);
            sentinel_ref_nfnl(&mut batch);
            elems.iter().for_each(|e| e.add_nfnl(&mut batch, &comment));
            batch.send(&self.nfnl)
        };
        let done = match add() {
            Ok(()) => true,
            // No table, map or sentinel: create the table, unless another ADD just did.
            Err(e) if e.errno() == Some(libc::ENOENT) => self.create(&elems, &comment).is_ok() || add().is_ok(),
            // A key another attachment holds (EEXIST), or anything else: the listing tells.
            Err(_) => false,
        };
        if !done {
            self.add_from_listing(a, &plan, &elems)?;
        }
        enable_forwarding(a, &plan)
    }

    fn del(&self, a: &Attachment) -> FirewallResult<()> {
        let owner = Owner::of(a);
        // Finds the elements by their comments: the slow way, for whatever the index cannot tell.
        let by_owner = || self.delete_owned(|o| o.same_attachment(&owner), || format!("the elements of {owner}"));
        // With addresses (prevResult), the batch itself checks the index: its `add` of the
        // attachment's fingerprint fails (EEXIST) when ADD recorded another one. Without, the
        // index gives the addresses and the fingerprint to compare before any batch.
        let (recorded, from_index);
        let a = if !a.addresses.is_empty() {
            recorded = None;
            *a
        } else {
            match self.indexed_fingerprint(&owner) {
                Ok(Some(fingerprint)) => {
                    let Ok(addresses) = self.indexed_addresses(&owner) else { return by_owner() };
                    (recorded, from_index) = (Some(fingerprint), addresses);
                    Attachment { addresses: &from_index, ..*a }
                }
                // Not in the index of a table that keeps one: it holds nothing.
                Ok(None) if self.keeps_index() => return Ok(()),
                _ => return by_owner(),
            }
        };
        // A configuration ADD would not have taken.
        let Ok(plan) = Plan::new(&a) else { return by_owner() };
        let mut elems = state_elements(&a, &plan);
        let fingerprint = fingerprint(elems.iter().map(|e| (e.map, &e.key[..], &e.data)));
        if recorded.is_some_and(|recorded| recorded != fingerprint) {
            // ADD wrote other elements: its configuration was another, or the runtime passes
            // other port mappings now (or none).
            return by_owner();
        }
        elems.extend(index_elements(&plan.owner, a.addresses, fingerprint));
        // The open elements go whatever `isolate` says now: the configuration may have
        // changed since ADD, and a stale one would open the next holder of the address.
        elems.extend(unwanted_open_elements(&a, &plan));
        let comment = plan.owner.comment();
        let mut batch = nfnl::Batch::new(TABLE_NAME);
        for e in &elems {
            e.add_nfnl(&mut batch, &comment);
            e.delete_nfnl(&mut batch);
        }
        match batch.send(&self.nfnl) {
            Ok(()) => Ok(()),
            // The table is missing, another attachment now holds one of the keys, or the
            // index records another fingerprint for this one.
            Err(_) => by_owner(),
        }
    }

    fn check(&self, a: &Attachment) -> FirewallResult<()> {
        let plan = Plan::new(a)?;
        let listing = self.list()?;
        let fail = |msg: String| Err(FirewallError::kernel(format!("nftables: {msg}")));
        if !listing.exists {
            return fail(format!("table {TABLE} does not exist"));
        }
        if !listing.sentinels.contains(&sentinel()) {
            return fail(format!("the chains of table {TABLE} do not hold this berth version's rules"));
        }
        for (chain, rules) in rules() {
            let have = listing.rules.get(chain).copied().unwrap_or(0);
            if have != rules.len() {
                return fail(format!("chain {chain} of table {TABLE} has {have} rules, expected {}", rules.len()));
            }
        }
        for e in elements(a, &plan) {
            let what = || format!("element {{ {} }} of map {} for {}", e.key_text(), e.map, plan.owner);
            let Some(have) = listing.find(e.map, &e.key) else { return fail(format!("{} is missing", what())) };
            if have.data.as_ref() != Some(&e.data) {
                return fail(format!("{} has other data", what()));
            }
            match listing.owner_of(have) {
                Some(o) if o.same_attachment(&plan.owner) => {}
                holder => {
                    let holder = holder.map_or_else(|| "no berth comment".to_string(), Owner::to_string);
                    return fail(format!("{} belongs to {holder}", what()));
                }
            }
        }
        if let Some(e) = unwanted_open_elements(a, &plan).into_iter().find(|e| listing.find(e.map, &e.key).is_some()) {
            return fail(format!(
                "element {{ {} }} of map {} opens {} to other networks, but isolateNetworks is true",
                e.key_text(),
                e.map,
                plan.owner
            ));
        }
        Ok(())
    }

    fn gc(&self, network: &str, keep: &[(String, String)]) -> FirewallResult<()> {
        let keep = super::keep_set(keep);
        self.delete_owned(|o| o.collectable(network, &keep), || format!("stale elements of network {network}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_parses_keys_data_and_comments() {
        let json = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}},
          {"table": {"family": "inet", "name": "berth"}},
          {"map": {"name": "ctr4", "type": ["ipv4_addr", "ifname"], "map": "mark", "elem": [
             [{"elem": {"val": {"concat": ["10.1.0.2", "br0"]}, "comment": "berth net=n id=c1 if=eth0"}}, 4660]]}},
          {"map": {"name": "ports6", "type": ["inet_proto", "inet_service"], "map": "ipv6_addr . inet_service", "elem": [
             [{"elem": {"val": {"concat": ["tcp", 8080]}, "comment": "berth net=n id=c1 if=eth0"}}, {"concat": ["fd00::2", 80]}],
             [{"concat": [17, 53]}, {"concat": ["fd00::3", 53]}]]}},
          {"map": {"name": "ports4", "type": ["inet_proto", "inet_service"], "map": "ipv4_addr . inet_service", "elem": [
             [{"elem": {"val": {"concat": ["tcp", 80]}, "comment": "berth net=n id=ghost if=eth0"}}, {"concat": ["10.1.0.2", 80]}],
             [{"elem": {"val": {"concat": ["tcp", 81]}, "comment": "berth net=n id=ghost if=eth0"}}, {"concat": ["10.1.0.9", 80]}]]}},
          {"set": {"name": "rules_0badc0de", "type": "mark"}},
          {"chain": {"name": "forward"}},
          {"rule": {"chain": "forward", "expr": []}}]}"#;
        let l = parse_listing(json).unwrap();
        assert_eq!(l.rules["forward"], 1);
        assert_eq!(l.elems.len(), 5);
        assert_eq!(l.sentinels, ["rules_0badc0de"]);
        let ctr = l.find("ctr4", &[Part::Addr("10.1.0.2".parse().unwrap()), Part::Ifname("br0".into())]).unwrap();
        assert_eq!(ctr.data, Some(Data::Tag(4660)));
        assert_eq!(ctr.owner.as_ref().unwrap().id, "c1");
        let udp = l.find("ports6", &[Part::Proto(Proto::Udp), Part::Port(53)]).unwrap();
        assert_eq!(udp.data, Some(Data::Target("fd00::3".parse().unwrap(), 53)));
        assert!(udp.owner.is_none());
        // A port element aimed at an address c1 holds is c1's, whatever its comment says.
        let adopted = l.find("ports4", &[Part::Proto(Proto::Tcp), Part::Port(80)]).unwrap();
        assert_eq!(l.owner_of(adopted).unwrap().id, "c1");
        let orphan = l.find("ports4", &[Part::Proto(Proto::Tcp), Part::Port(81)]).unwrap();
        assert_eq!(l.owner_of(orphan).unwrap().id, "ghost");
        let c1 = Owner::new("n", "c1", "eth0");
        assert_eq!(l.owned_by(|o| o.same_attachment(&c1)).count(), 3, "ctr4, ports6 and the adopted ports4 element");
    }

    /// The ruleset as text, as it was written before the rules were [`Rule`] values: rendering
    /// them must give exactly this (the sentinel's hash, and `nft list`, depend on it).
    const RULES_TEXT: &[(&str, &[&str])] = &[
        (
            "prerouting",
            &[
                "meta nfproto ipv4 fib daddr type local dnat ip to ip daddr . meta l4proto . th dport map @hostports4",
                "meta nfproto ipv4 fib daddr type local dnat ip to meta l4proto . th dport map @ports4",
                "meta nfproto ipv6 fib daddr type local dnat ip6 to ip6 daddr . meta l4proto . th dport map @hostports6",
                "meta nfproto ipv6 fib daddr type local dnat ip6 to meta l4proto . th dport map @ports6",
            ],
        ),
        (
            "output",
            &[
                "meta nfproto ipv4 ip daddr != 127.0.0.0/8 fib daddr type local dnat ip to ip daddr . meta l4proto . th dport map @hostports4",
                "meta nfproto ipv4 ip daddr != 127.0.0.0/8 fib daddr type local dnat ip to meta l4proto . th dport map @ports4",
                "meta nfproto ipv6 ip6 daddr != ::1 fib daddr type local dnat ip6 to ip6 daddr . meta l4proto . th dport map @hostports6",
                "meta nfproto ipv6 ip6 daddr != ::1 fib daddr type local dnat ip6 to meta l4proto . th dport map @ports6",
            ],
        ),
        (
            "postrouting",
            &[
                "meta nfproto ipv4 ct status dnat ip saddr . oifname @ctr4 masquerade comment \"hairpin\"",
                "meta nfproto ipv4 ip saddr . oifname @ctr4 return comment \"stays on its own bridge\"",
                "meta nfproto ipv4 ip saddr . ip daddr @nomasq4 return comment \"noMasqueradeDestinations\"",
                "meta nfproto ipv4 ip saddr @masq4 ip daddr != 224.0.0.0/4 masquerade comment \"ipMasq\"",
                "meta nfproto ipv6 ct status dnat ip6 saddr . oifname @ctr6 masquerade comment \"hairpin\"",
                "meta nfproto ipv6 ip6 saddr . oifname @ctr6 return comment \"stays on its own bridge\"",
                "meta nfproto ipv6 ip6 saddr . ip6 daddr @nomasq6 return comment \"noMasqueradeDestinations\"",
                "meta nfproto ipv6 ip6 saddr @masq6 ip6 daddr != ff00::/8 masquerade comment \"ipMasq\"",
            ],
        ),
        (
            "forward",
            &[
                "ct state established,related accept",
                "ct status dnat accept comment \"published ports\"",
                "meta nfproto ipv4 ip saddr . oifname @ctr4 accept comment \"stays on its own bridge\"",
                "meta nfproto ipv4 ip saddr . iifname @open4 accept comment \"from a network open to others\"",
                "meta nfproto ipv4 ip daddr . oifname @open4 accept comment \"to a network open to others\"",
                "meta nfproto ipv4 ip saddr . iifname @ctr4 ip daddr . oifname @ctr4 drop comment \"isolation between berth networks\"",
                "meta nfproto ipv6 ip6 saddr . oifname @ctr6 accept comment \"stays on its own bridge\"",
                "meta nfproto ipv6 ip6 saddr . iifname @open6 accept comment \"from a network open to others\"",
                "meta nfproto ipv6 ip6 daddr . oifname @open6 accept comment \"to a network open to others\"",
                "meta nfproto ipv6 ip6 saddr . iifname @ctr6 ip6 daddr . oifname @ctr6 drop comment \"isolation between berth networks\"",
            ],
        ),
    ];

    #[test]
    fn rules_render_as_their_text() {
        let rendered = rules();
        assert_eq!(RULES_TEXT.len(), rendered.len());
        for ((chain, text), (rendered_chain, rules)) in RULES_TEXT.iter().zip(&rendered) {
            assert_eq!(chain, rendered_chain);
            let rendered: Vec<String> = rules.iter().map(nfnl::Rule::text).collect();
            assert_eq!(&rendered, text, "rules of chain {chain}");
        }
    }

    // Captured on x86_64 (little endian) with nftables 1.0.6: `nft --debug=mnl -f -` of
    // `Nftables::setup_script()` in a fresh network namespace, whose sentinel is renamed
    // rules_00000000 here. Every message of that batch but the chain flushes (none are sent
    // over nfnetlink: the chains are new) matched byte for byte; a few are kept here.
    #[cfg(target_endian = "little")]
    const NFT_TABLE: &str = "01000000 0a000100 62657274 68000000 08000200 00000000 37000600 00316265 72746820
        434e4920 706c7567 696e733a 204e4154 2c20706f 7274206d 61707069 6e67732c 2069736f
        6c617469 6f6e0000";

    // add map inet berth ctr4 { type ipv4_addr . ifname : mark; }
    #[cfg(target_endian = "little")]
    const NFT_MAP_CTR4: &str = "01000000 0a000100 62657274 68000000 09000200 63747234 00000000 08000300 00000008
        08000400 000001e9 08000500 00000014 08000600 00000013 08000700 00000004 08000a00
        00000001 20000d00 00040000 00000104 01000000 03080004 0d000000 01000604 00000000";

    // add map inet berth ports4 { type inet_proto . inet_service : ipv4_addr . inet_service; }
    #[cfg(target_endian = "little")]
    const NFT_MAP_PORTS4: &str = "01000000 0a000100 62657274 68000000 0b000200 706f7274 73340000 08000300 00000008
        08000400 0000030d 08000500 00000008 08000600 000001cd 08000700 00000008 08000a00
        00000007 2a000d00 00040000 00000104 00000000 03080004 0d000000 01000408 00040d00
        00000100 06040000 00000000";

    // add chain inet berth prerouting { type nat hook prerouting priority dstnat; policy accept; }
    #[cfg(target_endian = "little")]
    const NFT_CHAIN_PREROUTING: &str = "01000000 0a000100 62657274 68000000 0f000300 70726572 6f757469 6e670000 08000700
        6e617400 08000500 00000001 14000480 08000100 00000000 08000200 ffffff9c";

    // output: meta nfproto ipv6 ip6 daddr != ::1 fib daddr type local
    //   dnat ip6 to ip6 daddr . meta l4proto . th dport map @hostports6
    #[cfg(target_endian = "little")]
    const NFT_RULE_OUTPUT_HOSTPORTS6: &str = "01000000 0a000100 62657274 68000000 0b000200 6f757470 75740000 0c020480 24000180
        09000100 6d657461 00000000 14000280 08000200 0000000f 08000100 00000001 2c000180
        08000100 636d7000 20000280 08000100 00000001 08000200 00000000 0c000380 05000100
        0a000000 34000180 0c000100 7061796c 6f616400 24000280 08000100 00000001 08000200
        00000001 08000300 00000018 08000400 00000010 38000180 08000100 636d7000 2c000280
        08000100 00000001 08000200 00000001 18000380 14000100 00000000 00000000 00000000
        00000001 28000180 08000100 66696200 1c000280 08000300 00000002 08000200 00000003
        08000100 00000001 2c000180 08000100 636d7000 20000280 08000100 00000001 08000200
        00000000 0c000380 08000100 02000000 34000180 0c000100 7061796c 6f616400 24000280
        08000100 00000001 08000200 00000001 08000300 00000018 08000400 00000010 24000180
        09000100 6d657461 00000000 14000280 08000200 00000010 08000100 00000002 34000180
        0c000100 7061796c 6f616400 24000280 08000100 0000000d 08000200 00000002 08000300
        00000002 08000400 00000002 3c000180 0b000100 6c6f6f6b 75700000 2c000280 08000200
        00000001 08000300 00000001 0f000100 686f7374 706f7274 73360000 08000400 0000000a
        30000180 08000100 6e617400 24000280 08000100 00000001 08000200 0000000a 08000300
        00000001 08000500 00000002";

    // postrouting: meta nfproto ipv4 ip saddr @masq4 ip daddr != 224.0.0.0/4 masquerade comment "ipMasq"
    #[cfg(target_endian = "little")]
    const NFT_RULE_MASQ4: &str = "01000000 0a000100 62657274 68000000 10000200 706f7374 726f7574 696e6700 70010480
        24000180 09000100 6d657461 00000000 14000280 08000200 0000000f 08000100 00000001
        2c000180 08000100 636d7000 20000280 08000100 00000001 08000200 00000000 0c000380
        05000100 02000000 34000180 0c000100 7061796c 6f616400 24000280 08000100 00000001
        08000200 00000001 08000300 0000000c 08000400 00000004 30000180 0b000100 6c6f6f6b
        75700000 20000280 08000200 00000001 0a000100 6d617371 34000000 08000400 00000005
        34000180 0c000100 7061796c 6f616400 24000280 08000100 00000001 08000200 00000001
        08000300 00000010 08000400 00000004 44000180 0c000100 62697477 69736500 34000280
        08000100 00000001 08000200 00000001 08000300 00000004 0c000480 08000100 f0000000
        0c000580 08000100 00000000 2c000180 08000100 636d7000 20000280 08000100 00000001
        08000200 00000001 0c000380 08000100 e0000000 14000180 09000100 6d617371 00000000
        04000280 0d000700 00076970 4d617371 00000000";

    // forward: ct state established,related accept
    #[cfg(target_endian = "little")]
    const NFT_RULE_ESTABLISHED: &str = "01000000 0a000100 62657274 68000000 0c000200 666f7277 61726400 c4000480 20000180
        07000100 63740000 14000280 08000200 00000000 08000100 00000001 44000180 0c000100
        62697477 69736500 34000280 08000100 00000001 08000200 00000001 08000300 00000004
        0c000480 08000100 06000000 0c000580 08000100 00000000 2c000180 08000100 636d7000
        20000280 08000100 00000001 08000200 00000001 0c000380 08000100 00000000 30000180
        0e000100 696d6d65 64696174 65000000 1c000280 08000100 00000000 10000280 0c000280
        08000100 00000001";

    // add set inet berth rules_00000000 { type mark; comment "marks the chains' rules as those of this berth version"; }
    // (the batch's thirteenth set: set ID 0x0d)
    #[cfg(target_endian = "little")]
    const NFT_SENTINEL: &str = "01000000 0a000100 62657274 68000000 13000200 72756c65 735f3030 30303030 30300000
        08000300 00000000 08000400 00000013 08000500 00000004 08000a00 0000000d 43000d00
        00040100 00000737 6d61726b 73207468 65206368 61696e73 27207275 6c657320 61732074
        686f7365 206f6620 74686973 20626572 74682076 65727369 6f6e0000";

    // add map inet berth nomasq4 { type ipv4_addr . ipv4_addr : mark; flags interval; }, the
    // eleventh set of the batch (set ID 0x0b): flags map, interval and concat, and the lengths
    // of the concatenation's fields (NFTA_SET_DESC).
    #[cfg(target_endian = "little")]
    const NFT_MAP_NOMASQ4: &str = "01000000 0a000100 62657274 68000000 0c000200 6e6f6d61 73713400 08000300 0000008c
        08000400 000001c7 08000500 00000008 08000600 00000013 08000700 00000004 08000a00 0000000b
        20000980 1c000280 0c000180 08000100 00000004 0c000180 08000100 00000004 20000d00 00040000
        00000104 01000000 03080004 0d000000 01000604 00000000";

    // postrouting: meta nfproto ipv4 ip saddr . ip daddr @nomasq4 return comment "noMasqueradeDestinations"
    // (the lookup names set ID 0x0b, nomasq4 in the same batch)
    #[cfg(target_endian = "little")]
    const NFT_RULE_NOMASQ4: &str = "01000000 0a000100 62657274 68000000 10000200 706f7374 726f7574 696e6700 1c010480
        24000180 09000100 6d657461 00000000 14000280 08000200 0000000f 08000100 00000001 2c000180
        08000100 636d7000 20000280 08000100 00000001 08000200 00000000 0c000380 05000100 02000000
        34000180 0c000100 7061796c 6f616400 24000280 08000100 00000001 08000200 00000001 08000300
        0000000c 08000400 00000004 34000180 0c000100 7061796c 6f616400 24000280 08000100 00000009
        08000200 00000001 08000300 00000010 08000400 00000004 30000180 0b000100 6c6f6f6b 75700000
        20000280 08000200 00000001 0c000100 6e6f6d61 73713400 08000400 0000000b 30000180 0e000100
        696d6d65 64696174 65000000 1c000280 08000100 00000000 10000280 0c000280 08000100 fffffffb
        1f000700 00196e6f 4d617371 75657261 64654465 7374696e 6174696f 6e730000";

    #[test]
    #[cfg(target_endian = "little")]
    fn create_batch_matches_what_nft_sends() {
        use super::nfnl::tests::{hex, messages, unhex};
        let (bytes, acks) = create_batch(&[], "").unwrap().into_bytes();
        let msgs = messages(&bytes);
        let all = rules();
        let rules: usize = all.iter().map(|(_, rules)| rules.len()).sum();
        // BEGIN, the table, the maps, 4 chains, the rules, the sentinel and its element, END.
        assert_eq!(msgs.len(), 2 + MAPS.len() + 4 + rules + 2 + 1);
        assert_eq!(acks, msgs.len() - 2);
        let first_rule = 2 + MAPS.len() + 4;
        let rule = |chain: &str, i: usize| {
            first_rule + all.iter().take_while(|(c, _)| *c != chain).map(|(_, r)| r.len()).sum::<usize>() + i
        };
        let nomasq4 = MAPS.iter().position(|m| m.name == "nomasq4").unwrap();
        assert_eq!(nomasq4 + 1, 0x0b, "nomasq4's set ID in the captures");
        // The sentinel was captured as the thirteenth set of its batch (set ID 0x0d).
        let sentinel_id = format!("08000a00{:08x}", MAPS.len() + 1);
        let renamed = |captured: &str| {
            hex(&unhex(captured))
                .replace(&hex(b"rules_00000000"), &hex(sentinel().as_bytes()))
                .replace("08000a000000000d", if captured == NFT_SENTINEL { &sentinel_id } else { "08000a000000000d" })
        };
        for (i, captured) in [
            (1, NFT_TABLE),
            (2, NFT_MAP_CTR4),
            (8, NFT_MAP_PORTS4),
            (2 + MAPS.len(), NFT_CHAIN_PREROUTING),
            (rule("output", 2), NFT_RULE_OUTPUT_HOSTPORTS6),
            (rule("postrouting", 3), NFT_RULE_MASQ4),
            (2 + nomasq4, NFT_MAP_NOMASQ4),
            (rule("postrouting", 2), NFT_RULE_NOMASQ4),
            (rule("forward", 0), NFT_RULE_ESTABLISHED),
            (first_rule + rules, NFT_SENTINEL),
        ] {
            assert_eq!(hex(&msgs[i].2), renamed(captured), "message {i}");
        }
        // Types and flags (REQUEST 0x1, ACK 0x4, EXCL 0x200, CREATE 0x400, APPEND 0x800): the
        // table is created, so that the batch fails when it exists; everything else is added.
        let (newtable, newset, newchain, newrule, newsetelem) = (0x0a00, 0x0a09, 0x0a03, 0x0a06, 0x0a0c);
        assert_eq!((msgs[1].0, msgs[1].1), (newtable, 0x605));
        assert!(msgs[2..2 + MAPS.len()].iter().all(|m| (m.0, m.1) == (newset, 0x405)));
        assert!(msgs[2 + MAPS.len()..first_rule].iter().all(|m| (m.0, m.1) == (newchain, 0x405)));
        assert!(msgs[first_rule..first_rule + rules].iter().all(|m| (m.0, m.1) == (newrule, 0xc05)));
        assert_eq!((msgs[first_rule + rules].0, msgs[first_rule + rules].1), (newset, 0x405));
        assert_eq!((msgs[first_rule + rules + 1].0, msgs[first_rule + rules + 1].1), (newsetelem, 0x405));
    }

    /// Each map's elements, as the kernel holds them (the bytes an ADD's batch writes), read
    /// back as the keys, data and owners the listing compares.
    #[test]
    fn elements_read_back_from_the_kernels_bytes() {
        use berth_cni::spec::PortMapping;
        let addrs: Vec<IpAddr> = vec!["10.1.0.2".parse().unwrap(), "fd01::2".parse().unwrap()];
        let nets: Vec<IpNet> = ["10.62.0.0/24", "192.0.2.7/32", "fd62::/64"].iter().map(|n| n.parse().unwrap()).collect();
        let pms = [
            PortMapping { host_port: 8080, container_port: 80, protocol: "tcp".into(), host_ip: String::new() },
            PortMapping { host_port: 5353, container_port: 53, protocol: "sctp".into(), host_ip: "fd99::1".into() },
        ];
        let a = Attachment {
            network: "n",
            container_id: "c1",
            ifname: "eth0",
            bridge: "br-long-name-15",
            addresses: &addrs,
            masquerade: true,
            no_masquerade: &nets,
            isolate: false,
            port_mappings: &pms,
        };
        // `list_elements` learns the address holders from ctr4 and ctr6 before the port maps.
        let position = |pred: &dyn Fn(&MapDef) -> bool| MAPS.iter().position(pred).unwrap();
        assert!(position(&|m| m.name == "ctr6") < position(&|m| m.data == DataTy::Target));
        let plan = Plan::new(&a).unwrap();
        let elems = elements(&a, &plan);
        assert_eq!(
            elems.len(),
            15,
            "ctr, open and masq of two addresses, three no-masquerade and three port elements; the index's three"
        );
        for e in &elems {
            let def = MAPS.iter().find(|m| m.name == e.map).unwrap();
            let (first, last) = (key_value(&e.key), key_last(&e.key));
            let key_end = Some(last).filter(|last| *last != first);
            let held = nfnl::SetElement { key: first, key_end, data: Some(e.data.value()), comment: Some(plan.owner.comment()) };
            let types = map_types(def.decl).unwrap();
            let listed = listed_element(def, &types, &held).unwrap_or_else(|| panic!("{} {{ {} }}", e.map, e.key_text()));
            assert_eq!((listed.map, &listed.key, listed.data.as_ref()), (e.map, &e.key, Some(&e.data)));
            assert_eq!(listed.owner.as_ref(), Some(&plan.owner));
            // The same bytes in a map of other types are not berth's elements.
            let other = MAPS.iter().find(|m| m.key.len() != def.key.len()).unwrap();
            assert!(listed_element(other, &map_types(other.decl).unwrap(), &held).is_none(), "{} read as {}", e.map, other.name);
        }
    }

    // add element inet berth nomasq4 { 10.1.0.2 . 10.62.0.0/24 comment "berth net=n id=c1 if=eth0" : 0x12345678 }
    // minus NFTA_SET_ELEM_LIST_SET_ID: the prefix is a range, its last address in
    // NFTA_SET_ELEM_KEY_END.
    #[cfg(target_endian = "little")]
    const NFT_NOMASQ4: &str = "01000000 0a000100 62657274 68000000 0c000200 6e6f6d61 73713400 54000380 50000180
        10000180 0c000100 0a010002 0a3e0000 10000a80 0c000100 0a010002 0a3e00ff 0c000280 08000100
        78563412 20000600 001a6265 72746820 6e65743d 6e206964 3d633120 69663d65 74683000";

    // add element inet berth nomasq6 { fd01::2 . fd02::/64 comment "x" : 0x12345678 }, the same.
    #[cfg(target_endian = "little")]
    const NFT_NOMASQ6: &str = "01000000 0a000100 62657274 68000000 0c000200 6e6f6d61 73713600 6c000380 68000180
        28000180 24000100 fd010000 00000000 00000000 00000002 fd020000 00000000 00000000 00000000
        28000a80 24000100 fd010000 00000000 00000000 00000002 fd020000 00000000 ffffffff ffffffff
        0c000280 08000100 78563412 08000600 00027800";

    /// The exceptions of a masqueraded attachment: one element per address and destination of
    /// its family, a range as nft writes it, and as `nft -f` text.
    #[test]
    #[cfg(target_endian = "little")]
    fn exceptions_are_ranges_of_their_family() {
        use super::nfnl::tests::{hex, messages, unhex};
        let addrs: Vec<IpAddr> = vec!["10.1.0.2".parse().unwrap(), "fd01::2".parse().unwrap()];
        let peers: Vec<IpNet> =
            vec!["10.62.0.7/24".parse().unwrap(), "fd02::/64".parse().unwrap(), "10.63.0.9/32".parse().unwrap()];
        let a = Attachment {
            network: "n",
            container_id: "c1",
            ifname: "eth0",
            bridge: "br0",
            addresses: &addrs,
            masquerade: true,
            no_masquerade: &peers,
            isolate: true,
            port_mappings: &[],
        };
        let plan = Plan::new(&a).unwrap();
        let keys = |a: &Attachment| -> Vec<String> {
            elements(a, &plan)
                .iter()
                .filter(|e| e.map.starts_with("nomasq"))
                .map(|e| format!("{} {}", e.map, e.key_text()))
                .collect()
        };
        assert_eq!(keys(&a), ["nomasq4 10.1.0.2 . 10.62.0.0/24", "nomasq4 10.1.0.2 . 10.63.0.9", "nomasq6 fd01::2 . fd02::/64"]);
        assert!(keys(&Attachment { masquerade: false, ..a }).is_empty(), "nothing to except without ipMasq");

        let tag = Data::Tag(0x1234_5678);
        let nomasq4 = Elem {
            map: "nomasq4",
            key: vec![Part::Addr(addrs[0]), Part::Net(peers[0].trunc())],
            data: tag.clone(),
            mapping: None,
        };
        let nomasq6 = Elem { map: "nomasq6", key: vec![Part::Addr(addrs[1]), Part::Net(peers[1])], data: tag, mapping: None };
        let mut batch = nfnl::Batch::new(TABLE_NAME);
        nomasq4.add_nfnl(&mut batch, "berth net=n id=c1 if=eth0");
        nomasq6.add_nfnl(&mut batch, "x");
        let (bytes, _) = batch.into_bytes();
        let msgs = messages(&bytes);
        assert_eq!(hex(&msgs[1].2), hex(&unhex(NFT_NOMASQ4)));
        assert_eq!(hex(&msgs[2].2), hex(&unhex(NFT_NOMASQ6)));
        assert_eq!(nomasq4.add("c"), "add element inet berth nomasq4 { 10.1.0.2 . 10.62.0.0/24 comment \"c\" : 0x12345678 }\n");
        assert_eq!(nomasq4.delete(), "delete element inet berth nomasq4 { 10.1.0.2 . 10.62.0.0/24 }\n");
    }

    /// `nft -j` lists a prefix as `{"prefix": ..}` and a whole address bare.
    #[test]
    fn listed_exceptions_parse_as_prefixes() {
        let json = r#"{"nftables": [{"map": {"name": "nomasq4", "type": ["ipv4_addr", "ipv4_addr"], "map": "mark",
          "flags": ["interval"], "elem": [
            [{"elem": {"val": {"concat": ["10.1.0.2", {"prefix": {"addr": "10.62.0.0", "len": 24}}]}, "comment": "berth net=n id=c1 if=eth0"}}, 305419896],
            [{"elem": {"val": {"concat": ["10.1.0.2", "10.63.0.9"]}, "comment": "berth net=n id=c1 if=eth0"}}, 305419896]]}}]}"#;
        let l = parse_listing(json).unwrap();
        let net = |s: &str| Part::Net(s.parse().unwrap());
        let addr = Part::Addr("10.1.0.2".parse().unwrap());
        assert!(l.find("nomasq4", &[addr.clone(), net("10.62.0.0/24")]).is_some());
        assert!(l.find("nomasq4", &[addr, net("10.63.0.9/32")]).is_some());
    }

    #[test]
    fn element_commands() {
        let e = Elem {
            map: "hostports6",
            key: vec![Part::Addr("fd99::1".parse().unwrap()), Part::Proto(Proto::Tcp), Part::Port(8080)],
            data: Data::Target("fd01::2".parse().unwrap(), 80),
            mapping: None,
        };
        assert_eq!(
            e.add("berth net=n id=c if=eth0"),
            "add element inet berth hostports6 { fd99::1 . tcp . 8080 comment \"berth net=n id=c if=eth0\" : fd01::2 . 80 }\n"
        );
        assert_eq!(e.delete(), "delete element inet berth hostports6 { fd99::1 . tcp . 8080 }\n");
    }

    #[test]
    fn an_open_attachment_has_open_elements_and_del_always_removes_them() {
        let addrs: Vec<IpAddr> = vec!["10.1.0.2".parse().unwrap(), "fd01::2".parse().unwrap()];
        let open = Attachment {
            network: "n",
            container_id: "c1",
            ifname: "eth0",
            bridge: "br0",
            addresses: &addrs,
            masquerade: false,
            no_masquerade: &[],
            isolate: false,
            port_mappings: &[],
        };
        let plan = Plan::new(&open).unwrap();
        let maps = |elems: Vec<Elem>| elems.iter().map(|e| e.map).collect::<Vec<_>>();
        assert_eq!(maps(state_elements(&open, &plan)), ["ctr4", "open4", "ctr6", "open6"]);
        assert!(unwanted_open_elements(&open, &plan).is_empty());
        let isolated = Attachment { isolate: true, ..open };
        assert_eq!(maps(state_elements(&isolated, &plan)), ["ctr4", "ctr6"]);
        assert_eq!(maps(unwanted_open_elements(&isolated, &plan)), ["open4", "open6"]);
        let comment = plan.owner.comment();
        assert_eq!(
            elements(&open, &plan)[1].add(&comment),
            format!(
                "add element inet berth open4 {{ 10.1.0.2 . \"br0\" comment \"berth net=n id=c1 if=eth0\" : 0x{:08x} }}\n",
                plan.owner.tag()
            )
        );
    }

    fn attachment<'a>(addrs: &'a [IpAddr], pms: &'a [berth_cni::spec::PortMapping]) -> Attachment<'a> {
        Attachment {
            network: "n",
            container_id: "c1",
            ifname: "eth0",
            bridge: "br0",
            addresses: addrs,
            masquerade: true,
            no_masquerade: &[],
            isolate: true,
            port_mappings: pms,
        }
    }

    #[test]
    fn the_index_holds_the_fingerprint_and_each_address_by_rank() {
        assert_eq!([MAPS[OWNERS].name, MAPS[ADDRS4].name, MAPS[ADDRS6].name], ["owners", "addrs4", "addrs6"]);
        let addrs: Vec<IpAddr> = ["10.1.0.2", "fd01::2", "10.2.0.2"].iter().map(|a| a.parse().unwrap()).collect();
        let a = attachment(&addrs, &[]);
        let plan = Plan::new(&a).unwrap();
        let index: Vec<Elem> = elements(&a, &plan).into_iter().filter(|e| is_index_map(e.map)).collect();
        let [hi, lo] = index_key(&plan.owner);
        let listed: Vec<(&str, Vec<Part>, Data)> = index.iter().map(|e| (e.map, e.key.clone(), e.data.clone())).collect();
        let state = state_elements(&a, &plan);
        let expected_fingerprint = fingerprint(state.iter().rev().map(|e| (e.map, &e.key[..], &e.data)));
        assert_eq!(
            listed,
            [
                ("owners", vec![hi.clone(), lo.clone()], Data::Tag(expected_fingerprint)),
                ("addrs4", vec![hi.clone(), lo.clone(), Part::Mark(0)], Data::Addr(addrs[0])),
                ("addrs6", vec![hi.clone(), lo.clone(), Part::Mark(0)], Data::Addr(addrs[1])),
                ("addrs4", vec![hi, lo, Part::Mark(1)], Data::Addr(addrs[2])),
            ],
            "the fingerprint does not depend on the elements' order"
        );
        assert!(index_elements(&plan.owner, &[], 0).is_empty(), "no addresses, no elements: nothing to index");
        // Another interface of the container is another attachment.
        assert_ne!(index_key(&Owner::new("n", "c1", "eth1")), index_key(&plan.owner));
        assert_eq!(index_key(&Owner::new("renamed", "c1", "eth0")), index_key(&plan.owner));
    }

    #[test]
    fn the_fingerprint_tells_another_configuration() {
        use berth_cni::spec::PortMapping;
        let addrs: Vec<IpAddr> = vec!["10.1.0.2".parse().unwrap()];
        let pm = |port| PortMapping { host_port: port, container_port: 80, protocol: "tcp".into(), host_ip: String::new() };
        let of = |a: &Attachment| {
            let plan = Plan::new(a).unwrap();
            fingerprint(state_elements(a, &plan).iter().map(|e| (e.map, &e.key[..], &e.data)))
        };
        let (with_8080, with_9090) = ([pm(8080)], [pm(9090)]);
        let base = attachment(&addrs, &with_8080);
        let nets = ["10.62.0.0/24".parse().unwrap()];
        for other in [
            attachment(&addrs, &with_9090),
            attachment(&addrs, &[]),
            Attachment { masquerade: false, ..base },
            Attachment { isolate: false, ..base },
            Attachment { bridge: "br1", ..base },
            Attachment { no_masquerade: &nets, ..base },
        ] {
            assert_ne!(of(&other), of(&base), "{other:?}");
        }
        assert_eq!(of(&Attachment { network: "renamed", ..base }), of(&base));
    }

    /// A listing of a table an earlier version wrote (no index): the slow path indexes every
    /// attachment but the one it adds, with the fingerprint a DEL without prevResult derives
    /// from the same configuration.
    #[test]
    fn a_table_without_index_is_indexed_by_the_slow_path() {
        use berth_cni::spec::PortMapping;
        let (x_addrs, y_addrs): (Vec<IpAddr>, Vec<IpAddr>) =
            (vec!["10.1.0.2".parse().unwrap(), "fd01::2".parse().unwrap()], vec!["10.1.0.3".parse().unwrap()]);
        let pms = [PortMapping { host_port: 8080, container_port: 80, protocol: "tcp".into(), host_ip: String::new() }];
        let x = attachment(&x_addrs, &pms);
        let y = Attachment { container_id: "c2", ..attachment(&y_addrs, &[]) };
        let mut listing = Listing { exists: true, ..Listing::default() };
        for a in [&x, &y] {
            let plan = Plan::new(a).unwrap();
            for e in state_elements(a, &plan) {
                listing.elems.push(Listed { map: e.map, key: e.key, data: Some(e.data), owner: Some(plan.owner.clone()) });
            }
        }
        let y_owner = Owner::new("n", "c2", "eth0");
        let text = backfill_index(&listing, &y_owner);
        let x_plan = Plan::new(&x).unwrap();
        let x_index: String =
            elements(&x, &x_plan).iter().filter(|e| is_index_map(e.map)).map(|e| e.add(&x_plan.owner.comment())).collect();
        assert_eq!(text, x_index);
        // Indexed already: nothing to add.
        for e in elements(&x, &x_plan).into_iter().filter(|e| e.map == "owners") {
            listing.elems.push(Listed { map: e.map, key: e.key, data: Some(e.data), owner: Some(x_plan.owner.clone()) });
        }
        assert_eq!(backfill_index(&listing, &y_owner), "");
    }
}

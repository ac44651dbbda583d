//! The iptables backend, for hosts without nft (`iptables-nft` or `iptables-legacy`): per
//! container rules, unavoidable with iptables, in berth's own chains. Each operation is, per
//! IP family, one `iptables-save` read and one `iptables-restore --noflush` batch, under a
//! file lock so that two plugins do not build on the same stale read.
//!
//! Chains (`h` is a hash of the network name; `C` the comment `berth net=.. id=.. if=..`):
//!
//! ```text
//! *nat
//! -A PREROUTING -m addrtype --dst-type LOCAL -m comment --comment "berth jump" -j BERTH-DNAT
//! -A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -m comment --comment "berth jump" -j BERTH-DNAT
//! -A POSTROUTING -m comment --comment "berth jump" -j BERTH-POSTROUTING
//! -A BERTH-POSTROUTING -m comment --comment "berth net=NAME" -j BERTH-POST-h
//! -A BERTH-POST-h -s A/32 -o BR -m conntrack --ctstate DNAT -m comment --comment C -j MASQUERADE    (hairpin)
//! -A BERTH-POST-h -s A/32 -d PEER/24 -m comment --comment C -j RETURN       (ipMasq, each no-masquerade destination)
//! -A BERTH-POST-h -s A/32 ! -d 224.0.0.0/4 ! -o BR -m comment --comment C -j MASQUERADE          (ipMasq)
//! -A BERTH-DNAT [-d HOSTIP/32] -p tcp -m tcp --dport P -m comment --comment C -j DNAT --to-destination A:p
//! *filter
//! -I FORWARD 1 -m comment --comment "berth jump" -j BERTH-FORWARD
//! -A BERTH-FORWARD -m comment --comment "berth net=NAME" -j BERTH-FWD-h
//! -A BERTH-FWD-h -d A/32 -o BR -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment C -j ACCEPT
//! -A BERTH-FWD-h -d A/32 -o BR -m conntrack --ctstate DNAT -m comment --comment C -j ACCEPT
//! -A BERTH-FWD-h -s A/32 -i BR ! -o BR -m conntrack ! --ctstate DNAT -m comment --comment C -j BERTH-ISOLATION (isolated)
//! -A BERTH-FWD-h -s A/32 -i BR -m comment --comment C -j ACCEPT
//! -A BERTH-ISOLATION -d A/32 -o BR -m comment --comment C -j DROP                              (isolated)
//! ```
//!
//! Isolation is those two rules: an isolated container's routed traffic to another bridge
//! (not DNATed) goes through BERTH-ISOLATION, where traffic to every isolated container is
//! dropped. An open container (`isolate` false) has neither: its traffic skips the drops and
//! nothing drops traffic to it, so it is blocked only between two isolated containers.
//!
//! Mappings with a hostIP are inserted at the top of BERTH-DNAT, so they win over one on every
//! address, as with nftables. ADD takes over what an attachment that never had its DEL left
//! on the same address: its DNAT rules to that address, and its rules about that address on
//! the same bridge in BERTH-ISOLATION and the network's chains (a stale ACCEPT of an open
//! container would otherwise come before an isolated successor's jump to BERTH-ISOLATION). Rules are written exactly as `iptables-save` prints them, so
//! CHECK compares text; DEL deletes (`-D`) the lines `iptables-save` shows with the
//! attachment's comment, then a per-network chain left empty and its jump.

use super::{
    enable_forwarding, port_taken, require_tool, run_tool, socket, Attachment, Family, Firewall, FirewallError, FirewallResult,
    Owner, Plan,
};
use berth_util::fs::LockFile;
use berth_util::tool::find as find_tool;
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Which iptables: the nf_tables-based one or the legacy x_tables one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IptablesVariant {
    Nft,
    Legacy,
}

impl IptablesVariant {
    fn suffix(self) -> &'static str {
        match self {
            IptablesVariant::Nft => "nft",
            IptablesVariant::Legacy => "legacy",
        }
    }
}

const LOCK_FILE: &str = "/run/berth/iptables.lock";

const POSTROUTING: &str = "BERTH-POSTROUTING";
const DNAT: &str = "BERTH-DNAT";
const FORWARD: &str = "BERTH-FORWARD";
const ISOLATION: &str = "BERTH-ISOLATION";
const POST_PREFIX: &str = "BERTH-POST-";
const FWD_PREFIX: &str = "BERTH-FWD-";
const JUMP_COMMENT: &str = "-m comment --comment \"berth jump\"";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Table {
    Nat,
    Filter,
}

impl Table {
    fn name(self) -> &'static str {
        match self {
            Table::Nat => "nat",
            Table::Filter => "filter",
        }
    }
}

/// One rule: its chain and its specification as `iptables-save` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    table: Table,
    chain: String,
    spec: String,
    /// Inserted at the top of the chain instead of appended.
    first: bool,
}

impl Rule {
    fn new(table: Table, chain: &str, spec: String) -> Rule {
        Rule { table, chain: chain.to_string(), spec, first: false }
    }
}

struct Names {
    post: String,
    fwd: String,
}

fn names(network: &str) -> Names {
    let h = berth_util::hash::fnv1a32([network.as_bytes()]);
    Names { post: format!("{POST_PREFIX}{h:08x}"), fwd: format!("{FWD_PREFIX}{h:08x}") }
}

/// The shared chains, and the jumps into them from the built-in chains.
fn infrastructure(family: Family) -> (Vec<(Table, &'static str)>, Vec<Rule>) {
    let loopback = match family {
        Family::V4 => "127.0.0.0/8",
        Family::V6 => "::1/128",
    };
    let chains = vec![(Table::Nat, POSTROUTING), (Table::Nat, DNAT), (Table::Filter, FORWARD), (Table::Filter, ISOLATION)];
    let mut forward = Rule::new(Table::Filter, "FORWARD", format!("{JUMP_COMMENT} -j {FORWARD}"));
    forward.first = true;
    let jumps = vec![
        Rule::new(Table::Nat, "PREROUTING", format!("-m addrtype --dst-type LOCAL {JUMP_COMMENT} -j {DNAT}")),
        Rule::new(Table::Nat, "OUTPUT", format!("! -d {loopback} -m addrtype --dst-type LOCAL {JUMP_COMMENT} -j {DNAT}")),
        Rule::new(Table::Nat, "POSTROUTING", format!("{JUMP_COMMENT} -j {POSTROUTING}")),
        forward,
    ];
    (chains, jumps)
}

/// A network's chains, and the jumps into them.
fn network_chains(network: &str) -> (Names, Vec<Rule>) {
    let n = names(network);
    let comment = format!("-m comment --comment \"berth net={}\"", super::net_label(network));
    let jumps = vec![
        Rule::new(Table::Nat, POSTROUTING, format!("{comment} -j {}", n.post)),
        Rule::new(Table::Filter, FORWARD, format!("{comment} -j {}", n.fwd)),
    ];
    (n, jumps)
}

/// The rules of one attachment in one family.
fn attachment_rules(a: &Attachment, plan: &Plan, family: Family) -> Vec<Rule> {
    let n = names(a.network);
    let c = format!("-m comment --comment \"{}\"", plan.owner.comment());
    let br = a.bridge;
    let (host_len, multicast) = match family {
        Family::V4 => (32, "224.0.0.0/4"),
        Family::V6 => (128, "ff00::/8"),
    };
    let mut out = Vec::new();
    for ip in a.addresses.iter().filter(|ip| Family::of(ip) == family) {
        let me = format!("{ip}/{host_len}");
        out.push(Rule::new(Table::Nat, &n.post, format!("-s {me} -o {br} -m conntrack --ctstate DNAT {c} -j MASQUERADE")));
        if a.masquerade {
            for dst in a.no_masquerade.iter().filter(|d| Family::of(&d.addr()) == family) {
                out.push(Rule::new(Table::Nat, &n.post, format!("-s {me} -d {} {c} -j RETURN", dst.trunc())));
            }
            out.push(Rule::new(Table::Nat, &n.post, format!("-s {me} ! -d {multicast} ! -o {br} {c} -j MASQUERADE")));
        }
        let fwd = |spec: String| Rule::new(Table::Filter, &n.fwd, spec);
        out.push(fwd(format!("-d {me} -o {br} -m conntrack --ctstate RELATED,ESTABLISHED {c} -j ACCEPT")));
        out.push(fwd(format!("-d {me} -o {br} -m conntrack --ctstate DNAT {c} -j ACCEPT")));
        if a.isolate {
            out.push(fwd(format!("-s {me} -i {br} ! -o {br} -m conntrack ! --ctstate DNAT {c} -j {ISOLATION}")));
        }
        out.push(fwd(format!("-s {me} -i {br} {c} -j ACCEPT")));
        if a.isolate {
            out.push(Rule::new(Table::Filter, ISOLATION, format!("-d {me} -o {br} {c} -j DROP")));
        }
    }
    for m in plan.mappings.iter().filter(|m| m.family == family) {
        let dst = m.host_ip.map(|ip| format!("-d {ip}/{host_len} ")).unwrap_or_default();
        let p = m.proto;
        let to = socket(m.target, m.container_port);
        let mut rule =
            Rule::new(Table::Nat, DNAT, format!("{dst}-p {p} -m {p} --dport {} {c} -j DNAT --to-destination {to}", m.host_port));
        rule.first = m.host_ip.is_some();
        out.push(rule);
    }
    out
}

/// What `iptables-save` shows: per table, its chains and rules in order.
#[derive(Debug, Default)]
struct Saved {
    chains: HashMap<Table, HashSet<String>>,
    rules: Vec<Rule>,
}

impl Saved {
    fn parse(text: &str) -> Saved {
        let mut saved = Saved::default();
        let mut table = None;
        for line in text.lines() {
            if let Some(name) = line.strip_prefix('*') {
                table = match name.trim() {
                    "nat" => Some(Table::Nat),
                    "filter" => Some(Table::Filter),
                    _ => None,
                };
                continue;
            }
            let Some(t) = table else { continue };
            if let Some(decl) = line.strip_prefix(':') {
                if let Some(chain) = decl.split_whitespace().next() {
                    saved.chains.entry(t).or_default().insert(chain.to_string());
                }
            } else if let Some(rest) = line.strip_prefix("-A ") {
                if let Some((chain, spec)) = rest.split_once(' ') {
                    saved.rules.push(Rule::new(t, chain, spec.trim_end().to_string()));
                }
            }
        }
        saved
    }

    fn has_chain(&self, table: Table, chain: &str) -> bool {
        self.chains.get(&table).is_some_and(|c| c.contains(chain))
    }

    fn has_rule(&self, rule: &Rule) -> bool {
        self.rules.iter().any(|r| same_rule(r, rule))
    }
}

/// [`Saved::parse`] and what the backend reads from each rule, for [`crate::fuzzing`].
pub(crate) fn decode_for_fuzzing(text: &str) -> bool {
    let saved = Saved::parse(text);
    for rule in &saved.rules {
        let _ = (owner_of(rule), jump_target(rule), dnat_of(rule), is_network_chain(&rule.chain));
    }
    !saved.rules.is_empty()
}

/// The same rule, wherever it was inserted.
fn same_rule(a: &Rule, b: &Rule) -> bool {
    a.table == b.table && a.chain == b.chain && a.spec == b.spec
}

/// The words of a rule specification, with `"quoted strings"` as one word.
fn words(spec: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = spec.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c == ' ' {
            chars.next();
            continue;
        }
        let mut word = String::new();
        if c == '"' {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => word.extend(chars.next()),
                    '"' => break,
                    c => word.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ' ' {
                    break;
                }
                word.push(c);
                chars.next();
            }
        }
        out.push(word);
    }
    out
}

fn option(words: &[String], name: &str) -> Option<String> {
    words.windows(2).find(|w| w[0] == name && !w[1].starts_with('!')).map(|w| w[1].clone())
}

fn owner_of(rule: &Rule) -> Option<Owner> {
    option(&words(&rule.spec), "--comment").and_then(|c| Owner::parse(&c))
}

fn jump_target(rule: &Rule) -> Option<String> {
    option(&words(&rule.spec), "-j")
}

/// A DNAT rule's host side (hostIP, protocol, port) and target.
fn dnat_of(rule: &Rule) -> Option<(Option<IpAddr>, String, u16, String)> {
    let w = words(&rule.spec);
    if option(&w, "-j").as_deref() != Some("DNAT") {
        return None;
    }
    let host_ip = option(&w, "-d").and_then(|d| d.split('/').next().and_then(|ip| ip.parse().ok()));
    Some((host_ip, option(&w, "-p")?, option(&w, "--dport")?.parse().ok()?, option(&w, "--to-destination")?))
}

fn is_network_chain(chain: &str) -> bool {
    chain.starts_with(POST_PREFIX) || chain.starts_with(FWD_PREFIX)
}

/// One `iptables-restore --noflush` input, built per table.
#[derive(Debug, Default)]
struct Batch {
    tables: Vec<(Table, Vec<String>, Vec<String>)>,
}

impl Batch {
    fn table(&mut self, table: Table) -> &mut (Table, Vec<String>, Vec<String>) {
        if let Some(i) = self.tables.iter().position(|t| t.0 == table) {
            return &mut self.tables[i];
        }
        self.tables.push((table, Vec::new(), Vec::new()));
        self.tables.last_mut().expect("just pushed")
    }
    /// Declares a chain (only ever one that does not exist: with --noflush, declaring an
    /// existing chain flushes it).
    fn chain(&mut self, table: Table, chain: &str) {
        let decl = format!(":{chain} - [0:0]");
        let t = self.table(table);
        if !t.1.contains(&decl) {
            t.1.push(decl);
        }
    }
    fn append(&mut self, rule: &Rule) {
        let cmd =
            if rule.first { format!("-I {} 1 {}", rule.chain, rule.spec) } else { format!("-A {} {}", rule.chain, rule.spec) };
        self.table(rule.table).2.push(cmd);
    }
    fn delete(&mut self, rule: &Rule) {
        self.table(rule.table).2.push(format!("-D {} {}", rule.chain, rule.spec));
    }
    fn delete_chain(&mut self, table: Table, chain: &str) {
        self.table(table).2.push(format!("-X {chain}"));
    }
    fn is_empty(&self) -> bool {
        self.tables.iter().all(|(_, chains, cmds)| chains.is_empty() && cmds.is_empty())
    }
    fn render(&self) -> String {
        let mut s = String::new();
        for (table, chains, cmds) in &self.tables {
            let _ = writeln!(s, "*{}", table.name());
            for line in chains.iter().chain(cmds) {
                let _ = writeln!(s, "{line}");
            }
            s += "COMMIT\n";
        }
        s
    }
}

/// Deletes `doomed` rules, and the per-network chains they leave empty with their jumps.
fn delete_rules(saved: &Saved, doomed: &[&Rule], batch: &mut Batch) {
    for rule in doomed {
        batch.delete(rule);
    }
    let mut emptied: Vec<(Table, &str)> = Vec::new();
    for rule in doomed {
        let left = saved.rules.iter().filter(|r| r.table == rule.table && r.chain == rule.chain);
        let all_doomed = left.clone().all(|r| doomed.iter().any(|d| std::ptr::eq(*d, r)));
        if is_network_chain(&rule.chain) && all_doomed && !emptied.contains(&(rule.table, rule.chain.as_str())) {
            emptied.push((rule.table, rule.chain.as_str()));
        }
    }
    for (table, chain) in emptied {
        for jump in saved.rules.iter().filter(|r| r.table == table && jump_target(r).as_deref() == Some(chain)) {
            batch.delete(jump);
        }
        batch.delete_chain(table, chain);
    }
}

#[derive(Debug, Clone)]
struct Tools {
    save: PathBuf,
    restore: PathBuf,
}

/// The iptables backend (`firewallBackend: "iptables" | "iptables-nft" | "iptables-legacy"`).
#[derive(Debug, Clone)]
pub struct Iptables {
    variant: IptablesVariant,
    v4: Tools,
    v6: Tools,
}

impl Iptables {
    /// Errors when the variant's save/restore tools are not installed.
    pub fn new(variant: IptablesVariant) -> FirewallResult<Iptables> {
        let backend = format!("iptables-{}", variant.suffix());
        let tool = |cmd: &str, op: &str| require_tool(&format!("{cmd}-{}-{op}", variant.suffix()), &backend);
        Ok(Iptables {
            variant,
            v4: Tools { save: tool("iptables", "save")?, restore: tool("iptables", "restore")? },
            v6: Tools { save: tool("ip6tables", "save")?, restore: tool("ip6tables", "restore")? },
        })
    }

    /// The variant whose tables already hold rules in this namespace, else iptables-nft.
    pub fn detect() -> FirewallResult<Iptables> {
        let legacy_loaded = ["ip_tables_names", "ip6_tables_names"]
            .iter()
            .any(|f| std::fs::read_to_string(format!("/proc/thread-self/net/{f}")).is_ok_and(|s| !s.trim().is_empty()));
        let have = |variant: IptablesVariant| find_tool(&format!("iptables-{}-restore", variant.suffix())).is_some();
        let variant = if !have(IptablesVariant::Nft) {
            IptablesVariant::Legacy
        } else if legacy_loaded && have(IptablesVariant::Legacy) {
            // Both could be in use: the one holding more rules is the host's.
            let count = |variant: IptablesVariant| {
                find_tool(&format!("iptables-{}-save", variant.suffix()))
                    .and_then(|save| run_tool(&save, &[], None).ok())
                    .map_or(0, |out| out.lines().filter(|l| l.starts_with("-A ")).count())
            };
            if count(IptablesVariant::Legacy) > count(IptablesVariant::Nft) {
                IptablesVariant::Legacy
            } else {
                IptablesVariant::Nft
            }
        } else {
            IptablesVariant::Nft
        };
        Iptables::new(variant)
    }

    pub fn variant(&self) -> IptablesVariant {
        self.variant
    }

    fn tools(&self, family: Family) -> &Tools {
        match family {
            Family::V4 => &self.v4,
            Family::V6 => &self.v6,
        }
    }

    fn save(&self, family: Family) -> FirewallResult<Saved> {
        let tools = self.tools(family);
        run_tool(&tools.save, &[], None)
            .map(|out| Saved::parse(&out))
            .map_err(|e| FirewallError::kernel_because(format!("{}: cannot read the rules", self.name()), e))
    }

    fn restore(&self, family: Family, batch: &Batch, what: impl FnOnce() -> String) -> FirewallResult<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let tools = self.tools(family);
        run_tool(&tools.restore, &["--noflush", "-w"], Some(&batch.render())).map(drop).map_err(|e| {
            FirewallError::kernel_because(format!("{}: {}", self.name(), what()), format!("{e}\ninput:\n{}", batch.render()))
        })
    }

    /// Serialises read-modify-write cycles between plugins (iptables' own lock only covers
    /// the restore).
    fn lock(&self) -> FirewallResult<LockFile> {
        Ok(LockFile::acquire(Path::new(LOCK_FILE))?)
    }

    fn families(a: &Attachment) -> Vec<Family> {
        [Family::V4, Family::V6].into_iter().filter(|f| a.addresses.iter().any(|ip| Family::of(ip) == *f)).collect()
    }

    /// Host ports of `family` that another attachment's DNAT rule holds.
    fn check_ports(saved: &Saved, plan: &Plan, family: Family, takeover: &mut Vec<Rule>) -> FirewallResult<()> {
        for m in plan.mappings.iter().filter(|m| m.family == family) {
            for rule in saved.rules.iter().filter(|r| r.table == Table::Nat && r.chain == DNAT) {
                let Some((host_ip, proto, port, to)) = dnat_of(rule) else { continue };
                if (host_ip, proto.as_str(), port) != (m.host_ip, m.proto.to_string().as_str(), m.host_port) {
                    continue;
                }
                let owner = owner_of(rule);
                if owner.as_ref().is_some_and(|o| o.same_attachment(&plan.owner)) {
                    continue; // ours: replaced below
                }
                if to == socket(m.target, m.container_port) && owner.is_some() {
                    takeover.push(rule.clone()); // stale, of a container that had this address
                    continue;
                }
                return Err(port_taken(m, owner.as_ref(), Some(to)));
            }
        }
        Ok(())
    }

    /// Rules of other attachments about this one's addresses on its bridge, in the chains its
    /// own rules go to: an address on a bridge has one holder, so they are stale.
    fn stale_rules(saved: &Saved, a: &Attachment, plan: &Plan, family: Family, stale: &mut Vec<Rule>) {
        let n = names(a.network);
        let host_len = match family {
            Family::V4 => 32,
            Family::V6 => 128,
        };
        let mine: Vec<String> =
            a.addresses.iter().filter(|ip| Family::of(ip) == family).map(|ip| format!("{ip}/{host_len}")).collect();
        let chains = [n.fwd.as_str(), n.post.as_str(), ISOLATION];
        for rule in saved.rules.iter().filter(|r| chains.contains(&r.chain.as_str())) {
            match owner_of(rule) {
                Some(owner) if !owner.same_attachment(&plan.owner) => {}
                _ => continue,
            }
            let w = words(&rule.spec);
            let about = |opts: [&str; 2], value: &dyn Fn(&str) -> bool| {
                w.windows(2).any(|p| opts.contains(&p[0].as_str()) && value(&p[1]))
            };
            if about(["-s", "-d"], &|v| mine.iter().any(|m| m == v)) && about(["-i", "-o"], &|v| v == a.bridge) {
                stale.push(rule.clone());
            }
        }
    }

    /// The batch that sets up one family of the attachment on top of `saved`, replacing its
    /// own earlier rules and stale DNAT rules to its address (`stale`).
    fn add_batch(a: &Attachment, plan: &Plan, family: Family, saved: &Saved, stale: &[Rule]) -> Batch {
        let mut batch = Batch::default();
        let (chains, jumps) = infrastructure(family);
        let (n, net_jumps) = network_chains(a.network);
        let net_chains = [(Table::Nat, n.post.as_str()), (Table::Filter, n.fwd.as_str())];
        for (table, chain) in chains.into_iter().chain(net_chains) {
            if !saved.has_chain(table, chain) {
                batch.chain(table, chain);
            }
        }
        for jump in jumps.iter().chain(&net_jumps) {
            if !saved.has_rule(jump) {
                batch.append(jump);
            }
        }
        // Running ADD again replaces the attachment's rules.
        for rule in saved.rules.iter().filter(|r| owner_of(r).is_some_and(|o| o.same_attachment(&plan.owner))) {
            batch.delete(rule);
        }
        for rule in stale {
            batch.delete(rule);
        }
        for rule in attachment_rules(a, plan, family) {
            batch.append(&rule);
        }
        batch
    }

    /// Deletes the rules of attachments `doomed` picks, in both families.
    fn delete_where(&self, families: &[Family], doomed: impl Fn(&Owner) -> bool, what: &str) -> FirewallResult<()> {
        let _lock = self.lock()?;
        for family in families {
            let saved = self.save(*family)?;
            let picked: Vec<&Rule> =
                saved.rules.iter().filter(|r| r.chain.starts_with("BERTH-") && owner_of(r).is_some_and(|o| doomed(&o))).collect();
            let mut batch = Batch::default();
            delete_rules(&saved, &picked, &mut batch);
            self.restore(*family, &batch, || format!("cannot remove the rules of {what}"))?;
        }
        Ok(())
    }
}

impl Firewall for Iptables {
    fn name(&self) -> &'static str {
        match self.variant {
            IptablesVariant::Nft => "iptables-nft",
            IptablesVariant::Legacy => "iptables-legacy",
        }
    }

    fn add(&self, a: &Attachment) -> FirewallResult<()> {
        let plan = Plan::new(a)?;
        let _lock = self.lock()?;
        // Every family's host ports are checked before anything is written.
        let mut batches = Vec::new();
        for family in Self::families(a) {
            let saved = self.save(family)?;
            let mut stale = Vec::new();
            Self::check_ports(&saved, &plan, family, &mut stale)?;
            Self::stale_rules(&saved, a, &plan, family, &mut stale);
            batches.push((family, Self::add_batch(a, &plan, family, &saved, &stale)));
        }
        for (family, batch) in batches {
            self.restore(family, &batch, || format!("cannot set up {}", plan.owner))?;
        }
        enable_forwarding(a, &plan)
    }

    fn del(&self, a: &Attachment) -> FirewallResult<()> {
        let owner = Owner::new(a.network, a.container_id, a.ifname);
        let families = match Self::families(a) {
            f if f.is_empty() => vec![Family::V4, Family::V6], // addresses unknown: look everywhere
            f => f,
        };
        self.delete_where(&families, |o| o.same_attachment(&owner), &owner.to_string())
    }

    fn check(&self, a: &Attachment) -> FirewallResult<()> {
        let plan = Plan::new(a)?;
        for family in Self::families(a) {
            let saved = self.save(family)?;
            let (_, jumps) = infrastructure(family);
            let (_, net_jumps) = network_chains(a.network);
            let own = attachment_rules(a, &plan, family);
            let wanted = jumps.into_iter().chain(net_jumps).chain(own.iter().cloned());
            if let Some(missing) = wanted.into_iter().find(|r| !saved.has_rule(r)) {
                return Err(FirewallError::kernel(format!(
                    "{}: rule of {} is missing in table {}: -A {} {}",
                    self.name(),
                    plan.owner,
                    missing.table.name(),
                    missing.chain,
                    missing.spec
                )));
            }
            // A rule ADD would not write now (isolateNetworks or ipMasq changed since) is wrong
            // too: a stale isolation rule keeps an open container closed, and the reverse.
            let mine = |r: &&Rule| r.chain.starts_with("BERTH-") && owner_of(r).is_some_and(|o| o.same_attachment(&plan.owner));
            if let Some(extra) = saved.rules.iter().filter(mine).find(|r| !own.iter().any(|w| same_rule(w, r))) {
                return Err(FirewallError::kernel(format!(
                    "{}: table {} holds a rule of {} that its configuration does not ask for: -A {} {}",
                    self.name(),
                    extra.table.name(),
                    plan.owner,
                    extra.chain,
                    extra.spec
                )));
            }
        }
        Ok(())
    }

    fn gc(&self, network: &str, keep: &[(String, String)]) -> FirewallResult<()> {
        let keep = super::keep_set(keep);
        self.delete_where(
            &[Family::V4, Family::V6],
            |o| o.collectable(network, &keep),
            &format!("stale attachments of network {network}"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_cni::spec::PortMapping;

    #[test]
    fn save_output_parses_and_comments_identify_owners() {
        let text = "# Generated by iptables-save\n*nat\n:PREROUTING ACCEPT [3:180]\n:BERTH-DNAT - [0:0]\n\
            -A BERTH-DNAT -d 192.0.2.1/32 -p tcp -m tcp --dport 8080 -m comment --comment \"berth net=n id=c1 if=eth0\" -j DNAT --to-destination 10.1.0.2:80\n\
            -A PREROUTING -m addrtype --dst-type LOCAL -m comment --comment \"berth jump\" -j BERTH-DNAT\nCOMMIT\n*filter\n:FORWARD DROP [0:0]\nCOMMIT\n";
        let saved = Saved::parse(text);
        assert!(saved.has_chain(Table::Nat, "BERTH-DNAT"));
        assert!(saved.has_chain(Table::Filter, "FORWARD"));
        assert_eq!(saved.rules.len(), 2);
        assert_eq!(owner_of(&saved.rules[0]).unwrap().id, "c1");
        assert_eq!(owner_of(&saved.rules[1]), None);
        assert_eq!(jump_target(&saved.rules[1]).as_deref(), Some("BERTH-DNAT"));
        let (ip, proto, port, to) = dnat_of(&saved.rules[0]).unwrap();
        assert_eq!((ip, proto.as_str(), port, to.as_str()), (Some("192.0.2.1".parse().unwrap()), "tcp", 8080, "10.1.0.2:80"));
    }

    #[test]
    fn rules_are_written_as_iptables_save_prints_them() {
        let addrs: Vec<IpAddr> = vec!["fd01::2".parse().unwrap()];
        let pms = [PortMapping { host_port: 8080, container_port: 80, protocol: "udp".into(), host_ip: "fd99::1".into() }];
        let a = Attachment {
            network: "n",
            container_id: "c1",
            ifname: "eth0",
            bridge: "br0",
            addresses: &addrs,
            masquerade: true,
            no_masquerade: &["fd02::/64".parse().unwrap(), "10.2.0.0/24".parse().unwrap()],
            isolate: true,
            port_mappings: &pms,
        };
        let plan = Plan::new(&a).unwrap();
        let rules = attachment_rules(&a, &plan, Family::V6);
        let post: Vec<&str> = rules.iter().filter(|r| r.chain.starts_with(POST_PREFIX)).map(|r| r.spec.as_str()).collect();
        let c = "-m comment --comment \"berth net=n id=c1 if=eth0\"";
        let expected = [
            format!("-s fd01::2/128 -d fd02::/64 {c} -j RETURN"),
            format!("-s fd01::2/128 ! -d ff00::/8 ! -o br0 {c} -j MASQUERADE"),
        ];
        assert_eq!(
            post[1..],
            expected.iter().map(String::as_str).collect::<Vec<_>>(),
            "the exception of its family, before the masquerade"
        );
        let dnat = rules.iter().find(|r| r.chain == DNAT).unwrap();
        assert_eq!(
            dnat.spec,
            "-d fd99::1/128 -p udp -m udp --dport 8080 -m comment --comment \"berth net=n id=c1 if=eth0\" -j DNAT --to-destination [fd01::2]:80"
        );
        assert!(dnat.first);
        assert!(attachment_rules(&a, &plan, Family::V4).is_empty());
    }

    #[test]
    fn an_open_attachment_has_no_isolation_rules() {
        let addrs: Vec<IpAddr> = vec!["10.1.0.2".parse().unwrap()];
        let isolated = Attachment {
            network: "n",
            container_id: "c1",
            ifname: "eth0",
            bridge: "br0",
            addresses: &addrs,
            masquerade: false,
            no_masquerade: &[],
            isolate: true,
            port_mappings: &[],
        };
        let open = Attachment { isolate: false, ..isolated };
        let plan = Plan::new(&isolated).unwrap();
        let isolation = |a: &Attachment| -> Vec<Rule> {
            attachment_rules(a, &plan, Family::V4)
                .into_iter()
                .filter(|r| r.chain == ISOLATION || r.spec.contains(ISOLATION))
                .collect()
        };
        let closed = isolation(&isolated);
        assert_eq!(closed.len(), 2, "{closed:?}");
        assert!(closed.iter().any(|r| r.chain == ISOLATION && r.spec.ends_with("-j DROP")));
        assert!(isolation(&open).is_empty());
        let rules = attachment_rules(&open, &plan, Family::V4);
        assert!(rules
            .iter()
            .any(|r| r.spec == "-s 10.1.0.2/32 -i br0 -m comment --comment \"berth net=n id=c1 if=eth0\" -j ACCEPT"));
    }
}

//! Whose an ifb is. Its name is a hash of its owner (the network, the container ID and the
//! interface), which DEL finds without prevResult; its alias spells the owner out, so GC can
//! tell whose every ifb is, and ADD, CHECK and DEL that the ifb of that name is theirs and
//! not another attachment's whose name hashes alike.
//!
//! IFLA_IFALIAS holds at most 255 bytes, and CNI puts no limit on container IDs or network
//! names: an alias that would be longer records them as labels
//! ([`berth_util::names::label`]: a prefix and a hash of the whole), matched against a name
//! through the same function. An alias that fits is written whole, as before labels existed,
//! so every alias an earlier berth-bandwidth wrote reads the same.

use berth_cni::skel::Request;
use berth_cni::CniResult;
use berth_netlink::{Link, Netlink};
use berth_util::hash::fnv1a32;
use berth_util::names::{label, records};

const ALIAS_PREFIX: &str = "berth-bandwidth net=";
/// IFALIASZ less the terminating NUL.
const MAX_ALIAS_LEN: usize = 255;
/// The longest network label and container-ID label: with the prefix, ` id=`, ` if=` and an
/// interface name of 15 bytes, an alias of labels takes at most 235 bytes.
const NET_LABEL_MAX: usize = 64;
const ID_LABEL_MAX: usize = 128;

/// The attachment an ifb shapes the egress of.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Owner<'a> {
    pub network: &'a str,
    pub container_id: &'a str,
    pub ifname: &'a str,
}

impl<'a> Owner<'a> {
    pub fn of(req: &'a Request) -> Owner<'a> {
        Owner { network: &req.conf.name, container_id: &req.container_id, ifname: &req.ifname }
    }

    /// The ifb's name, from what every command has (prevResult may be missing on DEL).
    pub fn ifb_name(&self) -> String {
        ifb_name(self.network, self.container_id, self.ifname)
    }

    /// The alias naming this owner: whole when that fits, else with the network and the
    /// container ID as labels.
    pub fn alias(&self) -> String {
        let whole = alias_of(self.network, self.container_id, self.ifname);
        if whole.len() <= MAX_ALIAS_LEN {
            return whole;
        }
        alias_of(&label(self.network, NET_LABEL_MAX), &label(self.container_id, ID_LABEL_MAX), self.ifname)
    }
}

/// See [`Owner::ifb_name`].
pub fn ifb_name(network: &str, container_id: &str, ifname: &str) -> String {
    // The NULs keep ("ab", "c") and ("a", "bc") apart.
    let hash = fnv1a32([network.as_bytes(), &[0], container_id.as_bytes(), &[0], ifname.as_bytes()]);
    format!("bwb{hash:08x}")
}

/// Whether `name` has the form of [`ifb_name`]'s names: `bwb` and eight hex digits.
pub(crate) fn is_ifb_name(name: &str) -> bool {
    name.strip_prefix("bwb").is_some_and(|hash| hash.len() == 8 && hash.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn alias_of(network: &str, container_id: &str, ifname: &str) -> String {
    format!("{ALIAS_PREFIX}{network} id={container_id} if={ifname}")
}

/// An owner as an alias records it: each name whole or as its label.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct RecordedOwner<'a> {
    network: &'a str,
    container_id: &'a str,
    ifname: &'a str,
}

impl<'a> RecordedOwner<'a> {
    /// The owner an alias [`Owner::alias`] wrote records; `None` for any other alias.
    /// Container IDs, labels and interface names hold no spaces.
    pub fn parse(alias: &'a str) -> Option<RecordedOwner<'a>> {
        let rest = alias.strip_prefix(ALIAS_PREFIX)?;
        let (network, rest) = rest.split_once(" id=")?;
        let (container_id, ifname) = rest.split_once(" if=")?;
        Some(RecordedOwner { network, container_id, ifname })
    }

    pub fn is_of_network(&self, network: &str) -> bool {
        records(self.network, network, NET_LABEL_MAX)
    }

    pub fn is_attachment(&self, container_id: &str, ifname: &str) -> bool {
        self.ifname == ifname && records(self.container_id, container_id, ID_LABEL_MAX)
    }

    pub fn is(&self, owner: &Owner) -> bool {
        self.is_of_network(owner.network) && self.is_attachment(owner.container_id, owner.ifname)
    }
}

/// What holds the name of an owner's ifb.
pub(crate) enum IfbName {
    Free,
    /// Its ifb: the alias names it, or nobody (an ADD killed before it wrote the alias).
    Ours(Link),
    /// Why the link of that name is not its ifb: another kind of link, or the ifb of an
    /// attachment whose name hashes alike.
    Taken(String),
}

impl IfbName {
    pub fn ours(self) -> Option<Link> {
        match self {
            IfbName::Ours(ifb) => Some(ifb),
            IfbName::Free | IfbName::Taken(_) => None,
        }
    }
}

/// What holds the name of `owner`'s ifb in `host`'s namespace.
pub(crate) fn ifb_in_place(host: &mut Netlink, owner: &Owner) -> CniResult<IfbName> {
    let name = owner.ifb_name();
    let Some(link) = host.link_by_name(&name)? else { return Ok(IfbName::Free) };
    if link.kind.as_deref() != Some("ifb") {
        return Ok(IfbName::Taken(format!("link {name} exists and is not an ifb")));
    }
    let alias = host.link_detail(link.index)?.and_then(|d| d.alias);
    match alias {
        Some(alias) if !RecordedOwner::parse(&alias).is_some_and(|o| o.is(owner)) => {
            Ok(IfbName::Taken(format!("the ifb {name} is another's: its alias is {alias:?}")))
        }
        _ => Ok(IfbName::Ours(link)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner<'a>(network: &'a str, container_id: &'a str) -> Owner<'a> {
        Owner { network, container_id, ifname: "eth0" }
    }

    #[test]
    fn ifb_names_are_recognised() {
        assert!(is_ifb_name(&ifb_name("n", "c1", "eth0")));
        for other in ["bwb", "bwb1234567", "bwb123456789", "bwbxyz12345", "veth1234abcd"] {
            assert!(!is_ifb_name(other), "{other}");
        }
    }

    /// The aliases berth-bandwidth wrote before labels existed are what it writes now, and
    /// name their owner.
    #[test]
    fn aliases_that_fit_are_written_as_before() {
        let id = "c".repeat(200);
        let alias = owner("bw-net", &id).alias();
        assert_eq!(alias, format!("berth-bandwidth net=bw-net id={id} if=eth0"));
        let recorded = RecordedOwner::parse(&alias).expect("ours");
        assert!(recorded.is(&owner("bw-net", &id)));
        assert!(!recorded.is(&owner("bw-net", &id[1..])) && !recorded.is(&owner("other", &id)));
        assert_eq!(
            RecordedOwner::parse("berth-bandwidth net=n1 id=c-1 if=eth0"),
            Some(RecordedOwner { network: "n1", container_id: "c-1", ifname: "eth0" })
        );
        assert_eq!(RecordedOwner::parse("berth-bridge id=c if=eth0"), None);
    }

    /// IDs and network names of any length: the alias fits, names its owner and no other,
    /// even one sharing its first 250 characters.
    #[test]
    fn long_names_are_recorded_as_labels() {
        let shared = "x".repeat(250);
        let (a, b) = (format!("{shared}-a{}", "0".repeat(48)), format!("{shared}-b{}", "0".repeat(48)));
        let network = "n".repeat(300);
        for (net, id, other) in [("bw-net", &a, &b), (&network, &a, &b), (&network, &"c1".to_string(), &"c2".to_string())] {
            let alias = owner(net, id).alias();
            assert!(alias.len() <= MAX_ALIAS_LEN, "{} bytes", alias.len());
            let recorded = RecordedOwner::parse(&alias).expect("ours");
            assert!(recorded.is(&owner(net, id)), "{alias}");
            assert!(!recorded.is(&owner(net, other)), "{alias}");
            assert!(!recorded.is_of_network(&net[1..]), "{alias}");
        }
        let longest = Owner { network: &network, container_id: &a, ifname: "abcdefghijklmno" }.alias();
        assert_eq!(longest.len(), ALIAS_PREFIX.len() + NET_LABEL_MAX + 4 + ID_LABEL_MAX + 4 + 15);
    }
}

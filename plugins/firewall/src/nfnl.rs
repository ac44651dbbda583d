//! nftables over nfnetlink, without `nft`: the hot path of the nftables backend (ADD's element
//! batch, DEL's add-then-delete batch) and the first ADD on a host (the whole table, created in
//! one batch), sent from the plugin process over one NETLINK_NETFILTER socket of berth-netlink's
//! transport ([`berth_netlink::socket::Transport`], which also reads the kernel's answers);
//! and the lookups of DEL: elements by their keys ([`Conn::set_elements_of`])
//! or a map's elements, dumped ([`Conn::set_elements`]).
//! Everything else (repairs, upgrades, the whole table's listing) stays with `nft`.
//!
//! A batch is what `nft -f` sends for the same commands (compared byte for byte with
//! `nft --debug=mnl`, see the tests here and in [`super::nft`]):
//!
//! ```text
//! NFNL_MSG_BATCH_BEGIN   nfgenmsg { AF_UNSPEC, v0, res_id = NFNL_SUBSYS_NFTABLES (big endian) }
//! NFT_MSG_NEWSETELEM     nfgenmsg { NFPROTO_INET, v0, 0 }       (NLM_F_CREATE: `add`, not `create`)
//!   NFTA_SET_ELEM_LIST_TABLE     "berth\0"
//!   NFTA_SET_ELEM_LIST_SET       "ctr4\0"
//!   NFTA_SET_ELEM_LIST_ELEMENTS  (nested)
//!     NFTA_LIST_ELEM             (nested)
//!       NFTA_SET_ELEM_KEY        (nested) NFTA_DATA_VALUE  key bytes
//!       NFTA_SET_ELEM_DATA       (nested) NFTA_DATA_VALUE  data bytes (maps only)
//!       NFTA_SET_ELEM_USERDATA   NFTNL_UDATA_SET_ELEM_COMMENT TLV: type, len, "comment\0"
//! NFT_MSG_DELSETELEM     same, key only
//! NFNL_MSG_BATCH_END     like BEGIN
//! ```
//!
//! Tables, sets, base chains and rules ([`Batch::create_table`], [`Batch::add_set`],
//! [`Batch::add_base_chain`], [`Batch::add_rule`]) carry the attributes and libnftnl user data
//! `nft` 1.0.6 writes, so that `nft list` shows them as if `nft` had written them (set types,
//! comments). A rule is a list of expressions ([`Rule`]), built in the order of its nft text
//! with registers allocated as `nft` allocates them.
//!
//! The kernel runs the whole batch as one transaction within `send`: either every message
//! applies or none does, and with NLM_F_ACK on each message every one is answered (an ACK or
//! its errno) before `send` returns. As with `nft`, `add` of a key that exists with the same
//! data is a no-op and with other data fails with EEXIST (no NLM_F_EXCL); a missing table or
//! set fails with ENOENT; `create table` of a table that exists fails with EEXIST.
//!
//! The socket is kept open ([`Conn`]) rather than closed after each batch: releasing a
//! NETLINK_NETFILTER socket makes the kernel flush nf_tables' pending destroy work, which,
//! after a batch that deleted elements, is a wait for an RCU grace period with nf_tables'
//! commit mutex held. berth-bridge's DEL leaves the release to the process that waits for its
//! veth to be freed (`Netlink::delete_link_detached`), which inherits the socket. Any other
//! process's release in that window still waits, holding the mutex, and so does whoever needs
//! it meanwhile: a burst of DELs sometimes waits one grace period (their p90 in BENCHMARKS.md).

mod rules;

pub(super) use rules::{Field, Rule, CT_STATE_ESTABLISHED, CT_STATE_RELATED, CT_STATUS_DNAT};

use berth_netlink::socket::{attributes, messages, NlError, Protocol, Transport};
use std::os::unix::fs::MetadataExt;
use std::sync::Mutex;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
/// NLM_F_ROOT | NLM_F_MATCH.
const NLM_F_DUMP: u16 = 0x300;
const NLA_F_NESTED: u16 = 0x8000;

const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_NEWSET: u16 = 9;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_GETSETELEM: u16 = 13;
const NFT_MSG_DELSETELEM: u16 = 14;
const NFPROTO_INET: u8 = 1;

const NFTA_TABLE_NAME: u16 = 1;
const NFTA_TABLE_FLAGS: u16 = 2;
const NFTA_TABLE_USERDATA: u16 = 6;

const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
/// A base chain's policy: NF_ACCEPT.
const POLICY_ACCEPT: u32 = 1;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;

const NFTA_SET_TABLE: u16 = 1;
const NFTA_SET_NAME: u16 = 2;
const NFTA_SET_FLAGS: u16 = 3;
const NFTA_SET_KEY_TYPE: u16 = 4;
const NFTA_SET_KEY_LEN: u16 = 5;
const NFTA_SET_DATA_TYPE: u16 = 6;
const NFTA_SET_DATA_LEN: u16 = 7;
const NFTA_SET_DESC: u16 = 9;
const NFTA_SET_ID: u16 = 10;
const NFTA_SET_USERDATA: u16 = 13;
const NFT_SET_INTERVAL: u32 = 0x4;
const NFT_SET_MAP: u32 = 0x8;
const NFT_SET_CONCAT: u32 = 0x80;
const NFTA_SET_DESC_CONCAT: u16 = 2;
const NFTA_SET_FIELD_LEN: u16 = 1;

const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_SET_ELEM_LIST_SET_ID: u16 = 4;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_SET_ELEM_USERDATA: u16 = 6;
const NFTA_SET_ELEM_KEY_END: u16 = 10;
const NFTA_DATA_VALUE: u16 = 1;

// libnftnl's user data: TLVs (u8 type, u8 length) that the kernel stores and `nft` reads back.
const NFTNL_UDATA_TABLE_COMMENT: u8 = 0;
const NFTNL_UDATA_SET_ELEM_COMMENT: u8 = 0;
const NFTNL_UDATA_SET_KEYBYTEORDER: u8 = 0;
const NFTNL_UDATA_SET_DATABYTEORDER: u8 = 1;
const NFTNL_UDATA_SET_KEY_TYPEOF: u8 = 3;
const NFTNL_UDATA_SET_DATA_TYPEOF: u8 = 4;
const NFTNL_UDATA_SET_DATA_INTERVAL: u8 = 6;
const NFTNL_UDATA_SET_COMMENT: u8 = 7;
const NFTNL_UDATA_SET_TYPEOF_EXPR: u8 = 0;
const NFTNL_UDATA_SET_TYPEOF_DATA: u8 = 1;
/// nft's `enum expr_types`: a concatenation's key or data.
const EXPR_CONCAT: u32 = 13;
/// nft's `enum byteorder`; a concatenation has none.
const BYTEORDER_INVALID: u32 = 0;
const BYTEORDER_HOST_ENDIAN: u32 = 1;
const BYTEORDER_BIG_ENDIAN: u32 = 2;

/// The value of a set element's key or data: concatenated components, each padded to the
/// 4-byte registers nftables compares (`ipv4_addr` 4, `ipv6_addr` 16, `ifname` 16 zero-padded,
/// `inet_proto` 1 padded to 4, `inet_service` 2 big endian padded to 4, `mark` 4 host order).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Value(Vec<u8>);

impl Value {
    /// Appends one component, zero-padded to a multiple of 4 bytes.
    pub(super) fn push(&mut self, bytes: &[u8]) -> &mut Value {
        self.0.extend_from_slice(bytes);
        self.0.resize(self.0.len().next_multiple_of(4), 0);
        self
    }
    /// The components of a key or data of `types`, each without its padding; `None` when the
    /// length is not theirs.
    pub(super) fn components(&self, types: &[Type]) -> Option<Vec<&[u8]>> {
        let mut rest = self.0.as_slice();
        let mut out = Vec::with_capacity(types.len());
        for ty in types {
            let len = ty.len() as usize;
            out.push(rest.get(..len)?);
            rest = rest.get(len.next_multiple_of(4)..)?;
        }
        rest.is_empty().then_some(out)
    }
    /// An interface name: 16 bytes (IFNAMSIZ), zero-padded.
    pub(super) fn push_ifname(&mut self, name: &str) -> &mut Value {
        let mut buf = [0u8; 16];
        let n = name.len().min(15);
        buf[..n].copy_from_slice(&name.as_bytes()[..n]);
        self.push(&buf)
    }
}

/// An nft data type of a set's key or data, as `type` declarations name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Type {
    Ipv4Addr,
    Ipv6Addr,
    Ifname,
    InetProto,
    InetService,
    Mark,
}

impl Type {
    pub(super) fn parse(name: &str) -> Option<Type> {
        Some(match name {
            "ipv4_addr" => Type::Ipv4Addr,
            "ipv6_addr" => Type::Ipv6Addr,
            "ifname" => Type::Ifname,
            "inet_proto" => Type::InetProto,
            "inet_service" => Type::InetService,
            "mark" => Type::Mark,
            _ => return None,
        })
    }
    /// nft's datatype number (`enum datatypes`).
    fn id(self) -> u32 {
        match self {
            Type::Ipv4Addr => 7,
            Type::Ipv6Addr => 8,
            Type::InetProto => 12,
            Type::InetService => 13,
            Type::Mark => 19,
            Type::Ifname => 41,
        }
    }
    fn len(self) -> u32 {
        match self {
            Type::Ipv4Addr | Type::Mark => 4,
            Type::Ipv6Addr | Type::Ifname => 16,
            Type::InetProto => 1,
            Type::InetService => 2,
        }
    }
    fn byteorder(self) -> u32 {
        match self {
            Type::Ifname | Type::Mark => BYTEORDER_HOST_ENDIAN,
            _ => BYTEORDER_BIG_ENDIAN,
        }
    }
}

/// A set's key or data type as the kernel and nft's user data describe it: a concatenation's
/// type is its types' numbers, 6 bits each, its length theirs padded to 4 bytes each.
fn type_attrs(types: &[Type]) -> (u32, u32, u32) {
    match types {
        [one] => (one.id(), one.len(), one.byteorder()),
        _ => (
            types.iter().fold(0, |id, t| id << 6 | t.id()),
            types.iter().map(|t| t.len().next_multiple_of(4)).sum(),
            BYTEORDER_INVALID,
        ),
    }
}

/// A base chain's hook (NF_INET_*).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Hook {
    Prerouting = 0,
    Forward = 2,
    Output = 3,
    Postrouting = 4,
}

/// One nfnetlink batch of nf_tables messages for `table inet <table>`.
pub(super) struct Batch {
    buf: Vec<u8>,
    table: String,
    seq: u32,
    /// Messages that will be answered (all but BEGIN and END).
    acks: usize,
    /// Sets created in this batch: the n-th has set ID n + 1, which rules and elements name
    /// besides its name, as nft does.
    sets: Vec<String>,
}

impl Batch {
    pub(super) fn new(table: &str) -> Batch {
        let mut b = Batch { buf: Vec::with_capacity(1024), table: table.to_string(), seq: 0, acks: 0, sets: Vec::new() };
        b.batch_marker(NFNL_MSG_BATCH_BEGIN);
        b
    }

    /// `create table inet <table> { comment ".." }`: fails (EEXIST) when the table exists.
    pub(super) fn create_table(&mut self, comment: &str) {
        let start = self.header(NFT_MSG_NEWTABLE, NLM_F_CREATE | NLM_F_EXCL);
        let table = self.table.clone();
        self.attr_str(NFTA_TABLE_NAME, &table);
        self.attr_u32(NFTA_TABLE_FLAGS, 0);
        self.attr(NFTA_TABLE_USERDATA, &udata_str(NFTNL_UDATA_TABLE_COMMENT, comment));
        self.set_len(start);
    }

    /// `add set inet <table> <name> { type <key>; [flags interval;] [comment ".."]; }`, or
    /// with `data` `add map` (`type <key> : <data>`). An interval set whose key is a
    /// concatenation also describes each field's length, as nft does (the kernel's pipapo set
    /// needs them).
    pub(super) fn add_set(&mut self, name: &str, key: &[Type], data: Option<&[Type]>, interval: bool, comment: Option<&str>) {
        let start = self.header(NFT_MSG_NEWSET, NLM_F_CREATE);
        let table = self.table.clone();
        self.attr_str(NFTA_SET_TABLE, &table);
        self.attr_str(NFTA_SET_NAME, name);
        let mut flags = if data.is_some() { NFT_SET_MAP } else { 0 };
        if interval {
            flags |= NFT_SET_INTERVAL | if key.len() > 1 { NFT_SET_CONCAT } else { 0 };
        }
        self.attr_u32(NFTA_SET_FLAGS, flags);
        let (key_type, key_len, key_order) = type_attrs(key);
        self.attr_u32(NFTA_SET_KEY_TYPE, key_type);
        self.attr_u32(NFTA_SET_KEY_LEN, key_len);
        let mut user = udata_u32(NFTNL_UDATA_SET_KEYBYTEORDER, key_order);
        if let Some(data) = data {
            let (data_type, data_len, data_order) = type_attrs(data);
            self.attr_u32(NFTA_SET_DATA_TYPE, data_type);
            self.attr_u32(NFTA_SET_DATA_LEN, data_len);
            user.extend(udata_u32(NFTNL_UDATA_SET_DATABYTEORDER, data_order));
        }
        self.sets.push(name.to_string());
        self.attr_u32(NFTA_SET_ID, self.sets.len() as u32);
        if interval && key.len() > 1 {
            let desc = self.nest(NFTA_SET_DESC);
            let fields = self.nest(NFTA_SET_DESC_CONCAT);
            for ty in key {
                let field = self.nest(NFTA_LIST_ELEM);
                self.attr_u32(NFTA_SET_FIELD_LEN, ty.len());
                self.end_nest(field);
            }
            self.end_nest(fields);
            self.end_nest(desc);
        }
        // nft describes a concatenation ("typeof" user data) with no expressions in it.
        let concat = |ty| {
            let mut inner = udata_u32(NFTNL_UDATA_SET_TYPEOF_EXPR, EXPR_CONCAT);
            inner.extend(udata(NFTNL_UDATA_SET_TYPEOF_DATA, &[]));
            udata(ty, &inner)
        };
        if key.len() > 1 {
            user.extend(concat(NFTNL_UDATA_SET_KEY_TYPEOF));
        }
        if let Some(data) = data {
            if data.len() > 1 {
                user.extend(concat(NFTNL_UDATA_SET_DATA_TYPEOF));
            }
            user.extend(udata_u32(NFTNL_UDATA_SET_DATA_INTERVAL, 0));
        }
        if let Some(comment) = comment {
            user.extend(udata_str(NFTNL_UDATA_SET_COMMENT, comment));
        }
        self.attr(NFTA_SET_USERDATA, &user);
        self.set_len(start);
    }

    /// `add chain inet <table> <name> { type <ty> hook <hook> priority <priority>; policy accept; }`.
    pub(super) fn add_base_chain(&mut self, name: &str, ty: &str, hook: Hook, priority: i32) {
        let start = self.header(NFT_MSG_NEWCHAIN, NLM_F_CREATE);
        let table = self.table.clone();
        self.attr_str(NFTA_CHAIN_TABLE, &table);
        self.attr_str(NFTA_CHAIN_NAME, name);
        self.attr_str(NFTA_CHAIN_TYPE, ty);
        self.attr_u32(NFTA_CHAIN_POLICY, POLICY_ACCEPT);
        let h = self.nest(NFTA_CHAIN_HOOK);
        self.attr_u32(NFTA_HOOK_HOOKNUM, hook as u32);
        self.attr_u32(NFTA_HOOK_PRIORITY, priority as u32);
        self.end_nest(h);
        self.set_len(start);
    }

    /// `add element inet <table> <set> { key [comment ".."] [: data] }`.
    pub(super) fn add(&mut self, set: &str, key: &Value, data: Option<&Value>, comment: Option<&str>) {
        self.add_range(set, key, key, data, comment);
    }

    /// `add element` of an interval set's range (a prefix: `10.62.0.0/24`) from `first` to
    /// `last`. As nft writes it, the last value (NFTA_SET_ELEM_KEY_END) is left out when it is
    /// the first.
    pub(super) fn add_range(&mut self, set: &str, first: &Value, last: &Value, data: Option<&Value>, comment: Option<&str>) {
        let start = self.header(NFT_MSG_NEWSETELEM, NLM_F_CREATE);
        self.elem_list(set, first, Some(last).filter(|l| *l != first), data, comment);
        self.set_len(start);
    }

    /// `delete element inet <table> <set> { key }`, the key a range as [`Batch::add_range`]
    /// takes it (`first` and `last` the same for a single value).
    pub(super) fn delete_range(&mut self, set: &str, first: &Value, last: &Value) {
        let start = self.header(NFT_MSG_DELSETELEM, 0);
        self.elem_list(set, first, Some(last).filter(|l| *l != first), None, None);
        self.set_len(start);
    }

    /// The batch's bytes, END included.
    pub(super) fn into_bytes(mut self) -> (Vec<u8>, usize) {
        self.batch_marker(NFNL_MSG_BATCH_END);
        (self.buf, self.acks)
    }

    /// Sends the batch and waits for the kernel's verdict: Ok when every message applied, else
    /// the first failing message's errno (ENOENT: a table, set or map is missing; EEXIST: a
    /// key is held with other data, or a created table exists).
    pub(super) fn send(self, conn: &Conn) -> Result<(), NlError> {
        let (bytes, acks) = self.into_bytes();
        conn.exchange(&bytes, acks)
    }

    fn batch_marker(&mut self, ty: u16) {
        let start = self.buf.len();
        self.nlmsghdr(ty, NLM_F_REQUEST);
        self.buf.extend_from_slice(&[libc::AF_UNSPEC as u8, 0]);
        self.buf.extend_from_slice(&NFNL_SUBSYS_NFTABLES.to_be_bytes());
        self.set_len(start);
    }

    /// nlmsghdr and nfgenmsg of one nf_tables message; returns where it starts.
    fn header(&mut self, msg: u16, flags: u16) -> usize {
        let start = self.buf.len();
        self.nlmsghdr(NFNL_SUBSYS_NFTABLES << 8 | msg, NLM_F_REQUEST | NLM_F_ACK | flags);
        self.buf.extend_from_slice(&[NFPROTO_INET, 0, 0, 0]);
        self.acks += 1;
        start
    }

    fn nlmsghdr(&mut self, ty: u16, flags: u16) {
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set by `set_len`
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&self.seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
        self.seq += 1;
    }

    fn set_len(&mut self, start: usize) {
        let len = (self.buf.len() - start) as u32;
        self.buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
    }

    /// The ID of a set created in this batch.
    fn set_id(&self, set: &str) -> Option<u32> {
        self.sets.iter().position(|s| s == set).map(|i| i as u32 + 1)
    }

    /// The list of one element (`key`, the last value of its range, its data and comment).
    fn elem_list(&mut self, set: &str, key: &Value, key_end: Option<&Value>, data: Option<&Value>, comment: Option<&str>) {
        self.elem_list_start(set);
        let elements = self.nest(NFTA_SET_ELEM_LIST_ELEMENTS);
        let elem = self.nest(NFTA_LIST_ELEM);
        self.data_value(NFTA_SET_ELEM_KEY, &key.0);
        if let Some(end) = key_end {
            self.data_value(NFTA_SET_ELEM_KEY_END, &end.0);
        }
        if let Some(data) = data {
            let d = self.nest(NFTA_SET_ELEM_DATA);
            self.attr(NFTA_DATA_VALUE, &data.0);
            self.end_nest(d);
        }
        if let Some(comment) = comment {
            self.attr(NFTA_SET_ELEM_USERDATA, &udata_str(NFTNL_UDATA_SET_ELEM_COMMENT, comment));
        }
        self.end_nest(elem);
        self.end_nest(elements);
    }

    /// The list of elements named by their keys only.
    fn keys_list(&mut self, set: &str, keys: &[Value]) {
        self.elem_list_start(set);
        let elements = self.nest(NFTA_SET_ELEM_LIST_ELEMENTS);
        for key in keys {
            let elem = self.nest(NFTA_LIST_ELEM);
            self.data_value(NFTA_SET_ELEM_KEY, &key.0);
            self.end_nest(elem);
        }
        self.end_nest(elements);
    }

    /// Which set an element list is of.
    fn elem_list_start(&mut self, set: &str) {
        let table = self.table.clone();
        self.attr_str(NFTA_SET_ELEM_LIST_TABLE, &table);
        self.attr_str(NFTA_SET_ELEM_LIST_SET, set);
        if let Some(id) = self.set_id(set) {
            self.attr_u32(NFTA_SET_ELEM_LIST_SET_ID, id);
        }
    }

    /// An attribute: nlattr header, payload, padding to 4 bytes (not counted in its length).
    fn attr(&mut self, ty: u16, payload: &[u8]) {
        let len = (4 + payload.len()) as u16;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        self.buf.resize(self.buf.len().next_multiple_of(4), 0);
    }

    fn attr_str(&mut self, ty: u16, s: &str) {
        let mut payload = s.as_bytes().to_vec();
        payload.push(0);
        self.attr(ty, &payload);
    }

    /// nf_tables' numbers are big endian on the wire.
    fn attr_u32(&mut self, ty: u16, v: u32) {
        self.attr(ty, &v.to_be_bytes());
    }

    /// A nested NFTA_DATA_VALUE.
    fn data_value(&mut self, ty: u16, value: &[u8]) {
        let n = self.nest(ty);
        self.attr(NFTA_DATA_VALUE, value);
        self.end_nest(n);
    }

    fn nest(&mut self, ty: u16) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf.extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        start
    }

    fn end_nest(&mut self, start: usize) {
        let len = (self.buf.len() - start) as u16;
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    }
}

/// One element of a set or map as the kernel lists it: key (in an interval set, the first
/// value of its range, and the last when it differs), data (maps only) and the comment
/// libnftnl's user data carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SetElement {
    pub key: Value,
    pub key_end: Option<Value>,
    pub data: Option<Value>,
    pub comment: Option<String>,
}

/// The sequence number of dump requests (a batch's messages count from 0).
const DUMP_SEQ: u32 = 0x6265_7274;

/// The sequence number of lookups by key ([`Conn::set_elements_of`]).
const GET_SEQ: u32 = 0x6765_7465;

/// `list set inet <table> <set>`'s request for the elements: NFT_MSG_GETSETELEM with
/// NLM_F_DUMP, outside any batch, answered by NFT_MSG_NEWSETELEM messages (see
/// [`parse_elements`]) and NLMSG_DONE, or by ENOENT when the table or the set is missing.
fn get_elements_request(table: &str, set: &str) -> Vec<u8> {
    let mut msg = Batch { buf: Vec::with_capacity(64), table: table.to_string(), seq: DUMP_SEQ, acks: 0, sets: Vec::new() };
    msg.nlmsghdr(NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_GETSETELEM, NLM_F_REQUEST | NLM_F_DUMP);
    msg.buf.extend_from_slice(&[NFPROTO_INET, 0, 0, 0]);
    // In nft's order.
    msg.attr_str(NFTA_SET_ELEM_LIST_SET, set);
    msg.attr_str(NFTA_SET_ELEM_LIST_TABLE, table);
    msg.set_len(0);
    msg.buf
}

/// The elements of one NFT_MSG_NEWSETELEM message of a dump: nfgenmsg, then the list's
/// attributes, laid out as in a batch's (see the module docs). An element without a key is
/// skipped.
fn parse_elements(payload: &[u8], out: &mut Vec<SetElement>) {
    let lists = attributes(payload.get(4..).unwrap_or_default()).filter(|(ty, _)| *ty == NFTA_SET_ELEM_LIST_ELEMENTS);
    for (_, list) in lists {
        for (_, elem) in attributes(list).filter(|(ty, _)| *ty == NFTA_LIST_ELEM) {
            let (mut key, mut key_end, mut data, mut comment) = (None, None, None, None);
            for (ty, value) in attributes(elem) {
                match ty {
                    NFTA_SET_ELEM_KEY => key = data_value(value),
                    NFTA_SET_ELEM_KEY_END => key_end = data_value(value),
                    NFTA_SET_ELEM_DATA => data = data_value(value),
                    NFTA_SET_ELEM_USERDATA => comment = udata_comment(value),
                    _ => {}
                }
            }
            if let Some(key) = key {
                out.push(SetElement { key, key_end, data, comment });
            }
        }
    }
}

/// The NFTA_DATA_VALUE of a nested key or data attribute.
fn data_value(nested: &[u8]) -> Option<Value> {
    attributes(nested).find(|(ty, _)| *ty == NFTA_DATA_VALUE).map(|(_, bytes)| Value(bytes.to_vec()))
}

/// An element's comment in libnftnl's user data (TLVs, see [`udata`]), without its NUL.
fn udata_comment(mut udata: &[u8]) -> Option<String> {
    while let [ty, len, rest @ ..] = udata {
        let value = rest.get(..usize::from(*len))?;
        if *ty == NFTNL_UDATA_SET_ELEM_COMMENT {
            let text = value.split(|b| *b == 0).next().unwrap_or_default();
            return String::from_utf8(text.to_vec()).ok();
        }
        udata = &rest[value.len()..];
    }
    None
}

/// One TLV of libnftnl's user data: type, length, value (no padding).
fn udata(ty: u8, value: &[u8]) -> Vec<u8> {
    let len = u8::try_from(value.len()).unwrap_or(u8::MAX);
    let mut out = vec![ty, len];
    out.extend_from_slice(&value[..usize::from(len)]);
    out
}

/// A string TLV, NUL included (comments).
fn udata_str(ty: u8, s: &str) -> Vec<u8> {
    let mut value = s.as_bytes().to_vec();
    value.push(0);
    udata(ty, &value)
}

/// A u32 TLV, in host byte order.
fn udata_u32(ty: u8, v: u32) -> Vec<u8> {
    udata(ty, &v.to_ne_bytes())
}

/// A NETLINK_NETFILTER socket, opened on first use in the calling thread's network namespace
/// and kept until dropped (see the module docs); a thread in another namespace gets a socket
/// of its own namespace.
#[derive(Debug, Default)]
pub(super) struct Conn(Mutex<Option<(NetNsId, Transport)>>);

/// A network namespace: device and inode of its nsfs file.
type NetNsId = (u64, u64);

impl Clone for Conn {
    /// A clone opens its own socket.
    fn clone(&self) -> Conn {
        Conn::default()
    }
}

impl Conn {
    fn exchange(&self, bytes: &[u8], acks: usize) -> Result<(), NlError> {
        self.with_transport(|transport| exchange(transport, bytes, acks))
    }

    /// Every element of `set` in `table inet <table>`, from a dump during which nothing
    /// changed in nf_tables (see [`dump_elements`]); ENOENT when the table or the set does not
    /// exist.
    pub(super) fn set_elements(&self, table: &str, set: &str) -> Result<Vec<SetElement>, NlError> {
        const ATTEMPTS: usize = 8;
        self.with_transport(|transport| {
            for _ in 0..ATTEMPTS {
                if let Some(elements) = dump_elements(transport, table, set)? {
                    return Ok(elements);
                }
            }
            Err(NlError::Protocol(format!("set {set} changed during each of {ATTEMPTS} dumps of its elements")))
        })
    }

    /// The elements of `set` in `table inet <table>` whose keys are `keys` (a map's data
    /// included), in that order, up to the first key that has none; none when there is no
    /// such set or table (nf_tables answers ENOENT to all three). One NFT_MSG_GETSETELEM
    /// without NLM_F_DUMP, which the kernel answers with one NFT_MSG_NEWSETELEM per element
    /// until it misses one: lookups that cost the same however large the set.
    pub(super) fn set_elements_of(&self, table: &str, set: &str, keys: &[Value]) -> Result<Vec<SetElement>, NlError> {
        const NEWSETELEM: u16 = NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWSETELEM;
        let mut request =
            Batch { buf: Vec::with_capacity(256), table: table.to_string(), seq: GET_SEQ, acks: 0, sets: Vec::new() };
        let start = request.header(NFT_MSG_GETSETELEM, 0);
        request.keys_list(set, keys);
        request.set_len(start);
        let mut found = Vec::new();
        let asked = self.with_transport(|transport| {
            transport.exchange(&request.buf, GET_SEQ, |kind, payload| {
                if kind == NEWSETELEM {
                    parse_elements(payload, &mut found);
                }
            })
        });
        match asked {
            Ok(()) => Ok(found),
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(found),
            Err(e) => Err(e),
        }
    }

    /// Runs `f` on the socket of the calling thread's namespace, opened when there is none.
    /// The socket is kept after a success or the kernel's refusal, when every answer has been
    /// read, and not after a failure part-way, which may leave answers unread.
    fn with_transport<T>(&self, f: impl FnOnce(&mut Transport) -> Result<T, NlError>) -> Result<T, NlError> {
        let ns = std::fs::metadata("/proc/thread-self/ns/net").map(|m| (m.dev(), m.ino()))?;
        let mut guard = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut transport = match guard.take() {
            Some((have, transport)) if have == ns => transport,
            _ => Transport::open(Protocol::Netfilter)?,
        };
        let out = f(&mut transport);
        if matches!(out, Ok(_) | Err(NlError::Kernel { .. })) {
            *guard = Some((ns, transport));
        }
        out
    }
}

/// One dump of a set's elements; `None` when nf_tables' generation changed between two of
/// its datagrams. A dump resumes by counting the elements it has sent, so a commit in between
/// (another plugin's DEL) makes it skip some: 20 elements deleted between the first and the
/// second datagram of a dump of 2000 made it miss 20 others (kernel 6.18), and it flags no
/// interrupted dump (NLM_F_DUMP_INTR). Each message's nfgenmsg carries the generation
/// counter (res_id), which a commit changes.
fn dump_elements(transport: &mut Transport, table: &str, set: &str) -> Result<Option<Vec<SetElement>>, NlError> {
    const NEWSETELEM: u16 = NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWSETELEM;
    // The datagrams are read first and parsed after, so that the dump takes as short a
    // time as it can: the kernel makes each next part when the previous one has been read.
    let (mut parts, mut generation, mut changed) = (Vec::new(), None, false);
    transport.exchange(&get_elements_request(table, set), DUMP_SEQ, |kind, payload| {
        if kind == NEWSETELEM {
            let res_id = payload.get(2..4).map(|b| u16::from_be_bytes([b[0], b[1]]));
            changed |= *generation.get_or_insert(res_id) != res_id;
            parts.push(payload.to_vec());
        }
    })?;
    if changed {
        return Ok(None);
    }
    let mut elements = Vec::new();
    parts.iter().for_each(|part| parse_elements(part, &mut elements));
    Ok(Some(elements))
}

/// Sends one batch and reads every answer. The kernel processes a batch synchronously in
/// `send`, so all answers are queued by then: they are read without blocking, and the batch
/// applied when there are `acks` ACKs and no error.
fn exchange(transport: &mut Transport, bytes: &[u8], acks: usize) -> Result<(), NlError> {
    transport.send(bytes)?;
    let mut acked = 0;
    let mut error = None;
    while let Some(datagram) = transport.try_recv()? {
        for message in messages(datagram) {
            match message?.ack() {
                Some(Ok(())) => acked += 1,
                Some(Err(e)) if error.is_none() => error = Some(e),
                _ => {}
            }
        }
    }
    match error {
        Some(e) => Err(e),
        None if acked < acks => Err(NlError::Protocol(format!("{acked} of {acks} messages acknowledged"))),
        None => Ok(()),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Hex of bytes, for readable failures.
    pub(crate) fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    pub(crate) fn unhex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    /// The messages of a batch: type, flags and what follows the nlmsghdr (`nft --debug=mnl`
    /// prints neither the flags nor the sequence numbers in full).
    pub(crate) fn messages(bytes: &[u8]) -> Vec<(u16, u16, Vec<u8>)> {
        let mut out = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            let len = u32::from_ne_bytes(rest[0..4].try_into().unwrap()) as usize;
            let (ty, flags) = (u16::from_ne_bytes([rest[4], rest[5]]), u16::from_ne_bytes([rest[6], rest[7]]));
            out.push((ty, flags, rest[16..len].to_vec()));
            rest = &rest[len..];
        }
        out
    }

    // Captured on x86_64 (little endian) with nftables 1.0.6:
    // `nft --debug=mnl -f -` of
    //   add element inet berth ctr4 { 10.1.0.2 . "br0" comment "berth net=n id=c1 if=eth0" : 0x12345678 }
    // minus NFTA_SET_ELEM_LIST_SET_ID (nft's reference to sets created in the same batch,
    // which the kernel only needs when the name is not found).
    #[cfg(target_endian = "little")]
    const NFT_CTR4: &str = "01000000 0a000100 62657274 68000000 09000200 63747234 00000000
        50000380 4c000180 1c000180 18000100 0a010002 62723000 00000000 00000000 00000000
        0c000280 08000100 78563412 20000600 001a6265 72746820 6e65743d 6e206964 3d633120
        69663d65 74683000";

    // add element inet berth hostports6 { fd99::1 . udp . 53 comment "x" : fd01::2 . 5353 }
    #[cfg(target_endian = "little")]
    const NFT_HOSTPORTS6: &str = "01000000 0a000100 62657274 68000000 0f000200 686f7374 706f7274
        73360000 4c000380 48000180 20000180 1c000100 fd990000 00000000 00000000 00000001
        11000000 00350000 1c000280 18000100 fd010000 00000000 00000000 00000002 14e90000
        08000600 00027800";

    // delete element inet berth masq4 { 10.1.0.2 }
    #[cfg(target_endian = "little")]
    const NFT_DEL_MASQ4: &str = "01000000 0a000100 62657274 68000000 0a000200 6d617371 34000000
        14000380 10000180 0c000180 08000100 0a010002";

    /// `nft --debug=mnl list map inet berth ctr4` (nftables 1.0.6) sends NFT_MSG_GETSETELEM
    /// with NLM_F_DUMP, nfgenmsg { NFPROTO_INET, v0, 0 }, the set's name, then the table's.
    #[test]
    fn element_dump_request_is_what_nft_sends() {
        let bytes = get_elements_request("berth", "ctr4");
        let msgs = messages(&bytes);
        assert_eq!(msgs.len(), 1);
        let (ty, flags, payload) = &msgs[0];
        assert_eq!((*ty, *flags), (0x0a0d, NLM_F_REQUEST | NLM_F_DUMP));
        assert_eq!(payload[..4], [NFPROTO_INET, 0, 0, 0]);
        let attrs: Vec<(u16, &[u8])> = attributes(&payload[4..]).collect();
        assert_eq!(attrs, [(NFTA_SET_ELEM_LIST_SET, &b"ctr4\0"[..]), (NFTA_SET_ELEM_LIST_TABLE, &b"berth\0"[..])]);
    }

    /// A dump's NFT_MSG_NEWSETELEM lays its elements out as a batch's does (the kernel adds
    /// flags, which are skipped); user data may hold other TLVs before the comment.
    #[test]
    fn dumped_elements_give_key_data_and_comment() {
        let mut key = Value::default();
        key.push(&[10, 1, 0, 2]).push_ifname("br0");
        let mut tag = Value::default();
        tag.push(&0x1234_5678u32.to_ne_bytes());
        let mut b = Batch::new("berth");
        b.add("ctr4", &key, Some(&tag), Some("berth net=n id=c1 if=eth0"));
        let (mut first, mut last) = (Value::default(), Value::default());
        first.push(&[10, 1, 0, 2]).push(&[10, 62, 0, 0]);
        last.push(&[10, 1, 0, 2]).push(&[10, 62, 0, 255]);
        b.add_range("nomasq4", &first, &last, None, None);
        let (bytes, _) = b.into_bytes();
        let mut elements = Vec::new();
        for (_, _, payload) in &messages(&bytes)[1..3] {
            parse_elements(payload, &mut elements);
        }
        let comment = Some("berth net=n id=c1 if=eth0".to_string());
        let commented = SetElement { key: key.clone(), key_end: None, data: Some(tag), comment };
        let range = SetElement { key: first, key_end: Some(last), data: None, comment: None };
        assert_eq!(elements, [commented, range]);

        let mut udata = udata_u32(3, 7);
        udata.extend(udata_str(NFTNL_UDATA_SET_ELEM_COMMENT, "berth net=n id=c2 if=eth1"));
        assert_eq!(udata_comment(&udata).as_deref(), Some("berth net=n id=c2 if=eth1"));
        assert_eq!(udata_comment(&udata[..udata.len() - 3]), None, "a cut TLV is no comment");
        assert_eq!(key.components(&[Type::Ipv4Addr, Type::Ifname]).unwrap(), [&[10, 1, 0, 2][..], &key.0[4..20]]);
        assert_eq!(key.components(&[Type::Ipv4Addr]), None, "a key of other types");
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn messages_match_what_nft_sends() {
        let mut b = Batch::new("berth");
        let mut key = Value::default();
        key.push(&[10, 1, 0, 2]).push_ifname("br0");
        let mut tag = Value::default();
        tag.push(&0x1234_5678u32.to_ne_bytes());
        b.add("ctr4", &key, Some(&tag), Some("berth net=n id=c1 if=eth0"));

        let mut key = Value::default();
        let fd99: std::net::Ipv6Addr = "fd99::1".parse().unwrap();
        key.push(&fd99.octets()).push(&[17]).push(&53u16.to_be_bytes());
        let mut target = Value::default();
        let fd01: std::net::Ipv6Addr = "fd01::2".parse().unwrap();
        target.push(&fd01.octets()).push(&5353u16.to_be_bytes());
        b.add("hostports6", &key, Some(&target), Some("x"));

        let mut key = Value::default();
        key.push(&[10, 1, 0, 2]);
        b.delete_range("masq4", &key, &key);

        let (bytes, acks) = b.into_bytes();
        assert_eq!(acks, 3);
        let msgs = messages(&bytes);
        let types: Vec<u16> = msgs.iter().map(|m| m.0).collect();
        // BEGIN (16), NEWSETELEM (0x0a0c = 2572), NEWSETELEM, DELSETELEM (2574), END (17).
        assert_eq!(types, [16, 2572, 2572, 2574, 17]);
        assert_eq!(hex(&msgs[0].2), "0000000a", "BEGIN: AF_UNSPEC, v0, res_id 10 big endian");
        assert_eq!(hex(&msgs[4].2), "0000000a");
        assert_eq!(hex(&msgs[1].2), hex(&unhex(NFT_CTR4)));
        assert_eq!(hex(&msgs[2].2), hex(&unhex(NFT_HOSTPORTS6)));
        assert_eq!(hex(&msgs[3].2), hex(&unhex(NFT_DEL_MASQ4)));
        // Flags: element messages are acknowledged requests, `add` with NLM_F_CREATE.
        assert_eq!(msgs[0].1, NLM_F_REQUEST);
        assert_eq!(msgs[1].1, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE);
        assert_eq!(msgs[3].1, NLM_F_REQUEST | NLM_F_ACK);
    }
}

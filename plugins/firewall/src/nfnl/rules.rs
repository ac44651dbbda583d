//! berth's rules, written once as [`Rule`] values: rendered as the nft text `nft -f` is given,
//! and as the expressions `nft` 1.0.6 generates for that text (`nft --debug=netlink` prints
//! them), written as the NFT_MSG_NEWRULE message `nft` sends (`nft --debug=mnl`):
//!
//! ```text
//! meta nfproto ipv4 ip saddr . oifname @ctr4 accept comment "c"
//!   [ meta load nfproto => reg 1 ]
//!   [ cmp eq reg 1 0x00000002 ]
//!   [ payload load 4b @ network header + 12 => reg 1 ]
//!   [ meta load oifname => reg 9 ]
//!   [ lookup reg 1 set ctr4 ]
//!   [ immediate reg 0 accept ]
//!   userdata = { NFTNL_UDATA_RULE_COMMENT "c" }
//! ```
//!
//! Each statement loads into the first register; a concatenation's fields follow each other,
//! each in as many 32-bit registers as it needs.

use super::{udata_str, Batch, NFTA_LIST_ELEM, NLM_F_CREATE};
use crate::Family;
use std::net::IpAddr;

const NLM_F_APPEND: u16 = 0x800;
const NFT_MSG_NEWRULE: u16 = 6;
const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_RULE_USERDATA: u16 = 7;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTNL_UDATA_RULE_COMMENT: u8 = 0;

/// A 32-bit register, counted from the first. The kernel numbers them as nft writes them: a
/// 16-byte register (NFT_REG_1..4) where one starts, NFT_REG32_xx elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Reg(u32);

impl Reg {
    fn number(self) -> u32 {
        const NFT_REG_1: u32 = 1;
        const NFT_REG32_00: u32 = 8;
        match self.0 % 4 {
            0 => NFT_REG_1 + self.0 / 4,
            _ => NFT_REG32_00 + self.0,
        }
    }
}

/// The verdict register.
const NFT_REG_VERDICT: u32 = 0;

/// What a rule matches on or loads into a register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Field {
    /// `ip saddr` / `ip6 saddr`.
    Saddr(Family),
    /// `ip daddr` / `ip6 daddr`.
    Daddr(Family),
    /// `meta iifname`.
    Iifname,
    /// `meta oifname`.
    Oifname,
    /// `meta l4proto`.
    L4proto,
    /// `th dport`.
    Dport,
}

const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
const NFT_META_IIFNAME: u32 = 6;
const NFT_META_OIFNAME: u32 = 7;
const NFT_META_NFPROTO: u32 = 15;
const NFT_META_L4PROTO: u32 = 16;

impl Field {
    fn len(self) -> u32 {
        match self {
            Field::Saddr(Family::V4) | Field::Daddr(Family::V4) => 4,
            Field::Saddr(Family::V6) | Field::Daddr(Family::V6) | Field::Iifname | Field::Oifname => 16,
            Field::L4proto => 1,
            Field::Dport => 2,
        }
    }
    /// Loads the field's first `len` bytes (a header field) or the whole field (meta).
    fn load(self, dreg: Reg, len: u32) -> Expr {
        let payload = |base, offset| Expr::Payload { base, offset, len, dreg };
        match self {
            Field::Saddr(Family::V4) => payload(NFT_PAYLOAD_NETWORK_HEADER, 12),
            Field::Daddr(Family::V4) => payload(NFT_PAYLOAD_NETWORK_HEADER, 16),
            Field::Saddr(Family::V6) => payload(NFT_PAYLOAD_NETWORK_HEADER, 8),
            Field::Daddr(Family::V6) => payload(NFT_PAYLOAD_NETWORK_HEADER, 24),
            Field::Dport => payload(NFT_PAYLOAD_TRANSPORT_HEADER, 2),
            Field::Iifname => Expr::Meta { key: NFT_META_IIFNAME, dreg },
            Field::Oifname => Expr::Meta { key: NFT_META_OIFNAME, dreg },
            Field::L4proto => Expr::Meta { key: NFT_META_L4PROTO, dreg },
        }
    }
}

/// One nf_tables expression; the attributes of each are written in libnftnl's order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expr {
    Meta { key: u32, dreg: Reg },
    Payload { base: u32, offset: u32, len: u32, dreg: Reg },
    Cmp { sreg: Reg, op: u32, data: Vec<u8> },
    Bitwise { reg: Reg, mask: Vec<u8> },
    Fib { flags: u32, result: u32, dreg: Reg },
    Ct { key: u32, dreg: Reg },
    Lookup { set: &'static str, sreg: Reg, dreg: Option<Reg> },
    Dnat { family: u8, addr: Reg, proto: Reg },
    Masq,
    Verdict(i32),
}

const NFT_CMP_EQ: u32 = 0;
const NFT_CMP_NEQ: u32 = 1;
const NFTA_FIB_F_DADDR: u32 = 1 << 1;
const NFT_FIB_RESULT_ADDRTYPE: u32 = 3;
const RTN_LOCAL: u32 = 2;
const NFT_CT_STATE: u32 = 0;
const NFT_CT_STATUS: u32 = 2;
const NFT_NAT_DNAT: u32 = 1;
const NF_DROP: i32 = 0;
const NF_ACCEPT: i32 = 1;
const NFT_RETURN: i32 = -5;

/// `ct state` bits (NF_CT_STATE_BIT).
pub(crate) const CT_STATE_ESTABLISHED: u32 = 1 << 1;
pub(crate) const CT_STATE_RELATED: u32 = 1 << 2;
/// `ct status dnat` (IPS_DST_NAT).
pub(crate) const CT_STATUS_DNAT: u32 = 1 << 5;

/// `ct state` bits (NF_CT_STATE_BIT), with nft's names, in the order nft lists them.
const CT_STATE_NAMES: &[(u32, &str)] = &[(CT_STATE_ESTABLISHED, "established"), (CT_STATE_RELATED, "related")];
/// `ct status` bits (IPS_*), with nft's names.
const CT_STATUS_NAMES: &[(u32, &str)] = &[(CT_STATUS_DNAT, "dnat")];

/// One statement of a rule, as its nft text says it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Stmt {
    /// `meta nfproto ipv4|ipv6`.
    Nfproto(Family),
    /// `fib daddr type local`.
    FibDaddrLocal,
    /// `<address field> != <net>/<prefix>`.
    NotIn {
        field: Field,
        net: IpAddr,
        prefix: u32,
    },
    /// `ct state|status <bits>`: any of them.
    Ct {
        key: u32,
        bits: u32,
    },
    /// `a . b . c @set`.
    Lookup {
        key: Vec<Field>,
        set: &'static str,
    },
    /// `dnat ip|ip6 to a . b . c map @map`.
    DnatMap {
        family: Family,
        key: Vec<Field>,
        map: &'static str,
    },
    Masquerade,
    /// `accept`, `drop` or `return`.
    Verdict(i32),
}

/// A rule of berth's table, written once: [`Rule::text`] is what `nft -f` is given,
/// [`Batch::add_rule`] what nfnetlink carries, the same expressions `nft` makes of that text.
/// Built statement by statement in the order of its text (`meta nfproto ipv4 ip saddr .
/// oifname @ctr4 accept` is `Rule::new().nfproto(V4).lookup(&[Saddr(V4), Oifname],
/// "ctr4").accept()`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Rule {
    stmts: Vec<Stmt>,
    comment: Option<&'static str>,
}

impl Rule {
    pub(crate) fn new() -> Rule {
        Rule::default()
    }

    fn with(mut self, stmt: Stmt) -> Rule {
        self.stmts.push(stmt);
        self
    }

    /// `meta nfproto ipv4|ipv6`.
    pub(crate) fn nfproto(self, family: Family) -> Rule {
        self.with(Stmt::Nfproto(family))
    }

    /// `fib daddr type local`.
    pub(crate) fn fib_daddr_local(self) -> Rule {
        self.with(Stmt::FibDaddrLocal)
    }

    /// `<address field> != <net>/<prefix>`.
    pub(crate) fn not_in(self, field: Field, net: impl Into<IpAddr>, prefix: u32) -> Rule {
        self.with(Stmt::NotIn { field, net: net.into(), prefix })
    }

    /// `ct state <bits>`: any of them.
    pub(crate) fn ct_state(self, bits: u32) -> Rule {
        self.with(Stmt::Ct { key: NFT_CT_STATE, bits })
    }

    /// `ct status <bits>`: any of them.
    pub(crate) fn ct_status(self, bits: u32) -> Rule {
        self.with(Stmt::Ct { key: NFT_CT_STATUS, bits })
    }

    /// `a . b . c @set`.
    pub(crate) fn lookup(self, key: &[Field], set: &'static str) -> Rule {
        self.with(Stmt::Lookup { key: key.to_vec(), set })
    }

    /// `dnat ip|ip6 to a . b . c map @map`, the map's data an address and a port.
    pub(crate) fn dnat_map(self, family: Family, key: &[Field], map: &'static str) -> Rule {
        self.with(Stmt::DnatMap { family, key: key.to_vec(), map })
    }

    pub(crate) fn masquerade(self) -> Rule {
        self.with(Stmt::Masquerade)
    }

    pub(crate) fn accept(self) -> Rule {
        self.with(Stmt::Verdict(NF_ACCEPT))
    }

    pub(crate) fn drop(self) -> Rule {
        self.with(Stmt::Verdict(NF_DROP))
    }

    pub(crate) fn ret(self) -> Rule {
        self.with(Stmt::Verdict(NFT_RETURN))
    }

    pub(crate) fn comment(mut self, comment: &'static str) -> Rule {
        self.comment = Some(comment);
        self
    }

    /// The rule as nft writes it (`nft -f` input, the ruleset's hash).
    pub(crate) fn text(&self) -> String {
        let mut words: Vec<String> = self.stmts.iter().map(Stmt::text).collect();
        if let Some(comment) = self.comment {
            words.push(format!("comment \"{comment}\""));
        }
        words.join(" ")
    }

    /// The expressions `nft` makes of the rule, each statement starting from the first
    /// register.
    fn exprs(&self) -> Vec<Expr> {
        let mut out = Vec::new();
        for stmt in &self.stmts {
            stmt.push_exprs(&mut out);
        }
        out
    }
}

impl Field {
    fn text(self) -> &'static str {
        match self {
            Field::Saddr(Family::V4) => "ip saddr",
            Field::Daddr(Family::V4) => "ip daddr",
            Field::Saddr(Family::V6) => "ip6 saddr",
            Field::Daddr(Family::V6) => "ip6 daddr",
            Field::Iifname => "iifname",
            Field::Oifname => "oifname",
            Field::L4proto => "meta l4proto",
            Field::Dport => "th dport",
        }
    }
}

fn concat_text(key: &[Field]) -> String {
    key.iter().map(|f| f.text()).collect::<Vec<_>>().join(" . ")
}

fn family_text(family: Family) -> (&'static str, &'static str) {
    match family {
        Family::V4 => ("ipv4", "ip"),
        Family::V6 => ("ipv6", "ip6"),
    }
}

/// `ct` bits by name (`established,related`), in nft's order; unnamed bits in hex.
fn ct_bits_text(key: u32, bits: u32) -> String {
    let names = if key == NFT_CT_STATE { CT_STATE_NAMES } else { CT_STATUS_NAMES };
    let mut words: Vec<String> = names.iter().filter(|(bit, _)| bits & bit != 0).map(|(_, n)| n.to_string()).collect();
    let unnamed = names.iter().fold(bits, |rest, (bit, _)| rest & !bit);
    if unnamed != 0 {
        words.push(format!("0x{unnamed:08x}"));
    }
    words.join(",")
}

impl Stmt {
    fn text(&self) -> String {
        match self {
            Stmt::Nfproto(family) => format!("meta nfproto {}", family_text(*family).0),
            Stmt::FibDaddrLocal => "fib daddr type local".to_string(),
            Stmt::NotIn { field, net, prefix } => {
                let full = if net.is_ipv4() { 32 } else { 128 };
                match *prefix == full {
                    true => format!("{} != {net}", field.text()),
                    false => format!("{} != {net}/{prefix}", field.text()),
                }
            }
            Stmt::Ct { key, bits } => {
                let what = if *key == NFT_CT_STATE { "state" } else { "status" };
                format!("ct {what} {}", ct_bits_text(*key, *bits))
            }
            Stmt::Lookup { key, set } => format!("{} @{set}", concat_text(key)),
            Stmt::DnatMap { family, key, map } => {
                format!("dnat {} to {} map @{map}", family_text(*family).1, concat_text(key))
            }
            Stmt::Masquerade => "masquerade".to_string(),
            Stmt::Verdict(NF_ACCEPT) => "accept".to_string(),
            Stmt::Verdict(NF_DROP) => "drop".to_string(),
            Stmt::Verdict(_) => "return".to_string(),
        }
    }

    fn push_exprs(&self, out: &mut Vec<Expr>) {
        match self {
            Stmt::Nfproto(family) => {
                let proto = match family {
                    Family::V4 => NFPROTO_IPV4,
                    Family::V6 => NFPROTO_IPV6,
                };
                out.push(Expr::Meta { key: NFT_META_NFPROTO, dreg: Reg(0) });
                out.push(Expr::Cmp { sreg: Reg(0), op: NFT_CMP_EQ, data: vec![proto] });
            }
            Stmt::FibDaddrLocal => {
                out.push(Expr::Fib { flags: NFTA_FIB_F_DADDR, result: NFT_FIB_RESULT_ADDRTYPE, dreg: Reg(0) });
                out.push(Expr::Cmp { sreg: Reg(0), op: NFT_CMP_EQ, data: RTN_LOCAL.to_ne_bytes().to_vec() });
            }
            Stmt::NotIn { field, net, prefix } => not_in_exprs(*field, *net, *prefix, out),
            Stmt::Ct { key, bits } => {
                out.push(Expr::Ct { key: *key, dreg: Reg(0) });
                out.push(Expr::Bitwise { reg: Reg(0), mask: bits.to_ne_bytes().to_vec() });
                out.push(Expr::Cmp { sreg: Reg(0), op: NFT_CMP_NEQ, data: 0u32.to_ne_bytes().to_vec() });
            }
            Stmt::Lookup { key, set } => {
                load_concat(key, out);
                out.push(Expr::Lookup { set, sreg: Reg(0), dreg: None });
            }
            Stmt::DnatMap { family, key, map } => {
                load_concat(key, out);
                out.push(Expr::Lookup { set: map, sreg: Reg(0), dreg: Some(Reg(0)) });
                let (family, addr_len) = match family {
                    Family::V4 => (NFPROTO_IPV4, 4),
                    Family::V6 => (NFPROTO_IPV6, 16),
                };
                out.push(Expr::Dnat { family, addr: Reg(0), proto: Reg(addr_len / 4) });
            }
            Stmt::Masquerade => out.push(Expr::Masq),
            Stmt::Verdict(code) => out.push(Expr::Verdict(*code)),
        }
    }
}

/// `<address field> != <net>/<prefix>`: as nft, only the prefix's bytes when it ends on a
/// byte, else the whole address masked.
fn not_in_exprs(field: Field, net: IpAddr, prefix: u32, out: &mut Vec<Expr>) {
    let bytes = match net {
        IpAddr::V4(ip) => ip.octets().to_vec(),
        IpAddr::V6(ip) => ip.octets().to_vec(),
    };
    match prefix % 8 {
        0 => {
            let len = (prefix / 8).min(field.len());
            let data = bytes.iter().take(len as usize).copied().collect();
            out.push(field.load(Reg(0), len));
            out.push(Expr::Cmp { sreg: Reg(0), op: NFT_CMP_NEQ, data });
        }
        _ => {
            let mask: Vec<u8> = (0..bytes.len() as u32)
                .map(|i| match prefix.saturating_sub(i * 8) {
                    0 => 0,
                    bits if bits >= 8 => 0xff,
                    bits => 0xffu8 << (8 - bits),
                })
                .collect();
            let masked = bytes.iter().zip(&mask).map(|(b, m)| b & m).collect();
            out.push(field.load(Reg(0), field.len()));
            out.push(Expr::Bitwise { reg: Reg(0), mask });
            out.push(Expr::Cmp { sreg: Reg(0), op: NFT_CMP_NEQ, data: masked });
        }
    }
}

/// Each field in the registers after the previous one's, as a concatenation is compared.
fn load_concat(key: &[Field], out: &mut Vec<Expr>) {
    let mut reg = 0;
    for field in key {
        out.push(field.load(Reg(reg), field.len()));
        reg += field.len().div_ceil(4);
    }
}

// Expression attributes (NFTA_<EXPR>_*).
const NFTA_META_DREG: u16 = 1;
const NFTA_META_KEY: u16 = 2;
const NFTA_PAYLOAD_DREG: u16 = 1;
const NFTA_PAYLOAD_BASE: u16 = 2;
const NFTA_PAYLOAD_OFFSET: u16 = 3;
const NFTA_PAYLOAD_LEN: u16 = 4;
const NFTA_CMP_SREG: u16 = 1;
const NFTA_CMP_OP: u16 = 2;
const NFTA_CMP_DATA: u16 = 3;
const NFTA_BITWISE_SREG: u16 = 1;
const NFTA_BITWISE_DREG: u16 = 2;
const NFTA_BITWISE_LEN: u16 = 3;
const NFTA_BITWISE_MASK: u16 = 4;
const NFTA_BITWISE_XOR: u16 = 5;
const NFTA_FIB_DREG: u16 = 1;
const NFTA_FIB_RESULT: u16 = 2;
const NFTA_FIB_FLAGS: u16 = 3;
const NFTA_CT_DREG: u16 = 1;
const NFTA_CT_KEY: u16 = 2;
const NFTA_LOOKUP_SET: u16 = 1;
const NFTA_LOOKUP_SREG: u16 = 2;
const NFTA_LOOKUP_DREG: u16 = 3;
const NFTA_LOOKUP_SET_ID: u16 = 4;
const NFTA_NAT_TYPE: u16 = 1;
const NFTA_NAT_FAMILY: u16 = 2;
const NFTA_NAT_REG_ADDR_MIN: u16 = 3;
const NFTA_NAT_REG_PROTO_MIN: u16 = 5;
const NFTA_IMMEDIATE_DREG: u16 = 1;
const NFTA_IMMEDIATE_DATA: u16 = 2;

impl Expr {
    /// The expression's name in NFTA_EXPR_NAME.
    fn name(&self) -> &'static str {
        match self {
            Expr::Meta { .. } => "meta",
            Expr::Payload { .. } => "payload",
            Expr::Cmp { .. } => "cmp",
            Expr::Bitwise { .. } => "bitwise",
            Expr::Fib { .. } => "fib",
            Expr::Ct { .. } => "ct",
            Expr::Lookup { .. } => "lookup",
            Expr::Dnat { .. } => "nat",
            Expr::Masq => "masq",
            Expr::Verdict(_) => "immediate",
        }
    }
}

impl Batch {
    /// `add rule inet <table> <chain> <rule>`.
    pub(crate) fn add_rule(&mut self, chain: &str, rule: &Rule) {
        let start = self.header(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND);
        let table = self.table.clone();
        self.attr_str(NFTA_RULE_TABLE, &table);
        self.attr_str(NFTA_RULE_CHAIN, chain);
        let exprs = self.nest(NFTA_RULE_EXPRESSIONS);
        for expr in &rule.exprs() {
            self.expr(expr);
        }
        self.end_nest(exprs);
        if let Some(comment) = rule.comment {
            self.attr(NFTA_RULE_USERDATA, &udata_str(NFTNL_UDATA_RULE_COMMENT, comment));
        }
        self.set_len(start);
    }

    /// One NFTA_LIST_ELEM of a rule's expressions: its name and its attributes.
    fn expr(&mut self, expr: &Expr) {
        let elem = self.nest(NFTA_LIST_ELEM);
        self.attr_str(NFTA_EXPR_NAME, expr.name());
        let data = self.nest(NFTA_EXPR_DATA);
        self.expr_attrs(expr);
        self.end_nest(data);
        self.end_nest(elem);
    }

    /// An expression's attributes, in libnftnl's order.
    fn expr_attrs(&mut self, expr: &Expr) {
        match expr {
            Expr::Meta { key, dreg } => {
                self.attr_u32(NFTA_META_KEY, *key);
                self.attr_u32(NFTA_META_DREG, dreg.number());
            }
            Expr::Payload { base, offset, len, dreg } => {
                self.attr_u32(NFTA_PAYLOAD_DREG, dreg.number());
                self.attr_u32(NFTA_PAYLOAD_BASE, *base);
                self.attr_u32(NFTA_PAYLOAD_OFFSET, *offset);
                self.attr_u32(NFTA_PAYLOAD_LEN, *len);
            }
            Expr::Cmp { sreg, op, data } => {
                self.attr_u32(NFTA_CMP_SREG, sreg.number());
                self.attr_u32(NFTA_CMP_OP, *op);
                self.data_value(NFTA_CMP_DATA, data);
            }
            Expr::Bitwise { reg, mask } => {
                self.attr_u32(NFTA_BITWISE_SREG, reg.number());
                self.attr_u32(NFTA_BITWISE_DREG, reg.number());
                self.attr_u32(NFTA_BITWISE_LEN, mask.len() as u32);
                self.data_value(NFTA_BITWISE_MASK, mask);
                self.data_value(NFTA_BITWISE_XOR, &vec![0; mask.len()]);
            }
            Expr::Fib { flags, result, dreg } => {
                self.attr_u32(NFTA_FIB_FLAGS, *flags);
                self.attr_u32(NFTA_FIB_RESULT, *result);
                self.attr_u32(NFTA_FIB_DREG, dreg.number());
            }
            Expr::Ct { key, dreg } => {
                self.attr_u32(NFTA_CT_KEY, *key);
                self.attr_u32(NFTA_CT_DREG, dreg.number());
            }
            Expr::Lookup { set, sreg, dreg } => self.lookup_attrs(set, *sreg, *dreg),
            Expr::Dnat { family, addr, proto } => {
                self.attr_u32(NFTA_NAT_TYPE, NFT_NAT_DNAT);
                self.attr_u32(NFTA_NAT_FAMILY, u32::from(*family));
                self.attr_u32(NFTA_NAT_REG_ADDR_MIN, addr.number());
                self.attr_u32(NFTA_NAT_REG_PROTO_MIN, proto.number());
            }
            Expr::Masq => {}
            Expr::Verdict(code) => {
                self.attr_u32(NFTA_IMMEDIATE_DREG, NFT_REG_VERDICT);
                let d = self.nest(NFTA_IMMEDIATE_DATA);
                let v = self.nest(NFTA_DATA_VERDICT);
                self.attr_u32(NFTA_VERDICT_CODE, *code as u32);
                self.end_nest(v);
                self.end_nest(d);
            }
        }
    }

    fn lookup_attrs(&mut self, set: &str, sreg: Reg, dreg: Option<Reg>) {
        self.attr_u32(NFTA_LOOKUP_SREG, sreg.number());
        if let Some(dreg) = dreg {
            self.attr_u32(NFTA_LOOKUP_DREG, dreg.number());
        }
        self.attr_str(NFTA_LOOKUP_SET, set);
        if let Some(id) = self.set_id(set) {
            self.attr_u32(NFTA_LOOKUP_SET_ID, id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_and_prefixes_as_nft_writes_them() {
        use Family::{V4, V6};
        use Field::{Daddr, Dport, L4proto};
        let numbers = |r: Rule| r.exprs();
        // `ip6 daddr . meta l4proto . th dport`: reg 1 (16 bytes), reg 2, reg 13 (NFT_REG32_05).
        let loads = numbers(Rule::new().lookup(&[Daddr(V6), L4proto, Dport], "m"));
        let regs: Vec<u32> = loads
            .iter()
            .filter_map(|e| match e {
                Expr::Payload { dreg, .. } | Expr::Meta { dreg, .. } => Some(dreg.number()),
                _ => None,
            })
            .collect();
        assert_eq!(regs, [1, 2, 13]);
        // `dnat ip to ... map`: the port follows the address, in NFT_REG32_01 (9).
        let dnat = numbers(Rule::new().dnat_map(V4, &[L4proto, Dport], "m"));
        assert!(matches!(dnat.last(), Some(Expr::Dnat { addr, proto, .. }) if addr.number() == 1 && proto.number() == 9));
        // A prefix ending on a byte compares its bytes; another masks the whole address.
        let lo = numbers(Rule::new().not_in(Daddr(V4), [127, 0, 0, 0], 8));
        assert!(matches!(&lo[..], [Expr::Payload { len: 1, offset: 16, .. }, Expr::Cmp { data, .. }] if data == &[127]));
        let mc = numbers(Rule::new().not_in(Daddr(V4), [224, 0, 0, 0], 4));
        assert!(matches!(&mc[..], [Expr::Payload { len: 4, .. }, Expr::Bitwise { mask, .. }, Expr::Cmp { data, .. }]
            if mask == &[0xf0, 0, 0, 0] && data == &[224, 0, 0, 0]));
    }
}

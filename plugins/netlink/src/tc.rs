//! Traffic control over rtnetlink, what shaping a link needs: a token bucket filter (tbf) as a
//! link's root qdisc, the ingress qdisc, a u32 filter on it that redirects everything a link
//! receives to another link (the mirred action), and ifb links to redirect to. The `tc` binary
//! is never run. netlink-packet-route has no tbf options and its typed filters and actions
//! fail to parse on attributes it does not know, so the options are written and read here as
//! raw attributes, laid out as the kernel's structs (`linux/pkt_sched.h`, `pkt_cls.h`,
//! `tc_act/tc_mirred.h`).

use super::{Link, Netlink, NetlinkError, Result};
use netlink_packet_core::{DefaultNla, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use netlink_packet_route::tc::{TcAttribute, TcHeader, TcMessage};
use netlink_packet_route::RouteNetlinkMessage as Rtm;

/// A token bucket as tbf takes it: bytes, not bits, as the kernel counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenBucket {
    /// Bytes per second.
    pub rate: u64,
    /// Bytes that may leave at once after a quiet spell; at least one packet of the link's MTU.
    pub burst: u32,
    /// Bytes that may wait in the queue before tbf drops.
    pub limit: u32,
}

/// A qdisc as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qdisc {
    pub kind: String,
    pub handle: u32,
    pub parent: u32,
    /// For a tbf: its rate, burst (from the buffer time the kernel keeps) and limit.
    pub token_bucket: Option<TokenBucket>,
}

impl Qdisc {
    pub fn is_root(&self) -> bool {
        self.parent == TC_H_ROOT
    }
    pub fn is_ingress(&self) -> bool {
        self.parent == TC_H_INGRESS && self.kind == "ingress"
    }
}

/// The handle berth gives a root tbf (`1:`), as `tc qdisc add ... root handle 1:` would.
pub const TBF_HANDLE: u32 = 0x0001_0000;

const TC_H_ROOT: u32 = 0xFFFF_FFFF;
const TC_H_INGRESS: u32 = 0xFFFF_FFF1;
const INGRESS_HANDLE: u32 = 0xFFFF_0000;
const TCA_KIND: u16 = 1;
const TCA_OPTIONS: u16 = 2;
const TCA_TBF_PARMS: u16 = 1;
const TCA_TBF_RATE64: u16 = 4;
const TCA_TBF_BURST: u16 = 6;
const TCA_U32_SEL: u16 = 5;
const TCA_U32_ACT: u16 = 7;
const TCA_ACT_KIND: u16 = 1;
const TCA_ACT_OPTIONS: u16 = 2;
const TCA_MIRRED_PARMS: u16 = 2;
const TC_U32_TERMINAL: u8 = 1;
const TC_ACT_STOLEN: i32 = 4;
const TCA_EGRESS_REDIR: i32 = 1;
const TC_LINKLAYER_ETHERNET: u8 = 1;
const ETH_P_ALL: u16 = 0x0003;
pub(super) const RTM_NEWQDISC: u16 = 36;
pub(super) const RTM_NEWTFILTER: u16 = 44;
const TC_HEADER_LEN: usize = 20;
/// The filter's priority among the ingress qdisc's filters (`tc filter ... prio 1`).
const FILTER_PRIO: u32 = 1;

impl Netlink {
    /// Creates an ifb link (`ip link add NAME type ifb`), up, with `mtu`, labelled with
    /// `alias` (the kernel ignores an alias in the creating request, hence a second one).
    pub fn create_ifb(&mut self, name: &str, mtu: Option<u32>, alias: &str) -> Result<Link> {
        let mut msg = LinkMessage::default();
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        if let Some(mtu) = mtu {
            msg.attributes.push(LinkAttribute::Mtu(mtu));
        }
        msg.attributes.push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Ifb)]));
        self.ack(Rtm::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)
            .map_err(|e| NetlinkError::kernel(format!("create ifb {name}"), e))?;
        let link =
            self.link_by_name(name)?.ok_or_else(|| NetlinkError::kernel(format!("create ifb {name}"), "the new link is gone"))?;
        if let Err(e) = self.set_alias(link.index, alias) {
            // An ifb without its alias belongs to nobody: it goes with the failed call.
            let _ = self.delete_link(link.index);
            return Err(e);
        }
        Ok(link)
    }

    /// Makes a tbf the root qdisc of `index` (handle `1:`), replacing what was there; an
    /// existing tbf takes the new rate, burst and limit in place.
    pub fn set_root_tbf(&mut self, index: u32, bucket: &TokenBucket) -> Result<()> {
        let ticks = Psched::read()?;
        let mut msg = tc_message(index, TBF_HANDLE, TC_H_ROOT);
        msg.attributes.push(TcAttribute::Kind("tbf".into()));
        msg.attributes.push(TcAttribute::Other(DefaultNla::new(TCA_OPTIONS, tbf_options(bucket, &ticks))));
        self.ack(Rtm::NewQueueDiscipline(msg), NLM_F_CREATE | NLM_F_REPLACE).map_err(|e| {
            self.fail(e, |me| {
                format!("set a tbf of {} bytes/s, burst {} bytes on {}", bucket.rate, bucket.burst, me.describe(index))
            })
        })
    }

    /// Adds the ingress qdisc to `index`; one already there is kept.
    pub fn add_ingress_qdisc(&mut self, index: u32) -> Result<()> {
        let mut msg = tc_message(index, INGRESS_HANDLE, TC_H_INGRESS);
        msg.attributes.push(TcAttribute::Kind("ingress".into()));
        match self.ack(Rtm::NewQueueDiscipline(msg), NLM_F_CREATE | NLM_F_EXCL) {
            Ok(()) => Ok(()),
            Err(e) if e.errno() == Some(libc::EEXIST) => Ok(()),
            Err(e) => Err(self.fail(e, |me| format!("add the ingress qdisc to {}", me.describe(index)))),
        }
    }

    /// Redirects everything `index` receives to the egress of `to` (`tc filter add dev X
    /// parent ffff: protocol all prio 1 u32 match u32 0 0 action mirred egress redirect dev
    /// TO`); the ingress qdisc must be there.
    pub fn redirect_ingress(&mut self, index: u32, to: u32) -> Result<()> {
        let mut msg = tc_message(index, 0, INGRESS_HANDLE);
        msg.header.info = (FILTER_PRIO << 16) | u32::from(ETH_P_ALL.to_be());
        msg.attributes.push(TcAttribute::Kind("u32".into()));
        msg.attributes.push(TcAttribute::Other(DefaultNla::new(TCA_OPTIONS, redirect_options(to))));
        self.ack(Rtm::NewTrafficFilter(msg), NLM_F_CREATE | NLM_F_EXCL)
            .map_err(|e| self.fail(e, |me| format!("redirect the ingress of {} to {}", me.describe(index), me.describe(to))))
    }

    /// Deletes the root qdisc of `index` if it is `kind` with `handle`; `Ok(false)` when it is
    /// not (another's, or the kernel's default) or the link is gone.
    pub fn delete_root_qdisc(&mut self, index: u32, kind: &str, handle: u32) -> Result<bool> {
        let ours = self.qdiscs(index)?.into_iter().any(|q| q.is_root() && q.kind == kind && q.handle == handle);
        if !ours {
            return Ok(false);
        }
        self.delete_qdisc(index, handle, TC_H_ROOT, "root")
    }

    /// Deletes the ingress qdisc of `index` with its filters; `Ok(false)` when there is none.
    pub fn delete_ingress_qdisc(&mut self, index: u32) -> Result<bool> {
        if !self.qdiscs(index)?.iter().any(Qdisc::is_ingress) {
            return Ok(false);
        }
        self.delete_qdisc(index, INGRESS_HANDLE, TC_H_INGRESS, "ingress")
    }

    /// The qdiscs of `index` (empty when the link is gone).
    pub fn qdiscs(&mut self, index: u32) -> Result<Vec<Qdisc>> {
        let ticks = Psched::read()?;
        let mut out = Vec::new();
        let res = self.dump(Rtm::GetQueueDiscipline(tc_message(index, 0, 0)), |kind, payload| {
            if kind == RTM_NEWQDISC {
                if let Some((i, q)) = parse_qdisc(payload, &ticks) {
                    if i == index {
                        out.push(q);
                    }
                }
            }
        });
        match res {
            Ok(()) => Ok(out),
            Err(e) if e.errno() == Some(libc::ENODEV) => Ok(Vec::new()),
            Err(e) => Err(self.fail(e, |me| format!("list the qdiscs of {}", me.describe(index)))),
        }
    }

    /// The links the ingress filters of `index` redirect to (mirred egress redirect).
    pub fn ingress_redirects(&mut self, index: u32) -> Result<Vec<u32>> {
        let mut out = Vec::new();
        let res = self.dump(Rtm::GetTrafficFilter(tc_message(index, 0, INGRESS_HANDLE)), |kind, payload| {
            if kind == RTM_NEWTFILTER {
                out.extend(parse_redirects(payload));
            }
        });
        match res {
            Ok(()) => Ok(out),
            Err(e) if matches!(e.errno(), Some(libc::ENODEV | libc::EINVAL | libc::ENOENT)) => Ok(Vec::new()),
            Err(e) => Err(self.fail(e, |me| format!("list the ingress filters of {}", me.describe(index)))),
        }
    }

    fn delete_qdisc(&mut self, index: u32, handle: u32, parent: u32, which: &str) -> Result<bool> {
        match self.ack(Rtm::DelQueueDiscipline(tc_message(index, handle, parent)), 0) {
            Ok(()) => Ok(true),
            Err(e) if matches!(e.errno(), Some(libc::ENOENT | libc::ENODEV)) => Ok(false),
            Err(e) => Err(self.fail(e, |me| format!("delete the {which} qdisc of {}", me.describe(index)))),
        }
    }
}

fn tc_message(index: u32, handle: u32, parent: u32) -> TcMessage {
    let header = TcHeader { index: index as i32, handle: handle.into(), parent: parent.into(), ..Default::default() };
    TcMessage::from_parts(header, Vec::new())
}

/// The kernel's clock for qdisc times, from /proc/net/psched, as iproute2's `tc_core_init`
/// reads it: tbf takes its buffer in these ticks, not in bytes or microseconds.
#[derive(Debug, Clone, Copy)]
pub(super) struct Psched {
    ticks_per_usec: f64,
}

impl Psched {
    /// Read once per process: the clock does not change while it runs.
    fn read() -> Result<Psched> {
        static READ: std::sync::OnceLock<Psched> = std::sync::OnceLock::new();
        if let Some(p) = READ.get() {
            return Ok(*p);
        }
        let p = Psched::read_now()?;
        Ok(*READ.get_or_init(|| p))
    }

    fn read_now() -> Result<Psched> {
        let text = std::fs::read_to_string("/proc/net/psched").map_err(|e| NetlinkError::kernel("read /proc/net/psched", e))?;
        Psched::parse(&text).ok_or_else(|| NetlinkError::kernel("read /proc/net/psched", format!("unexpected content {text:?}")))
    }

    pub(super) fn parse(text: &str) -> Option<Psched> {
        let mut fields = text.split_whitespace().map(|f| u32::from_str_radix(f, 16).ok());
        let (mut t2us, us2t, clock_res) = (fields.next()??, fields.next()??, fields.next()??);
        if us2t == 0 {
            return None;
        }
        // iproute2's compatibility rule: with a nanosecond clock the kernel still advertises
        // a multiplier of 1000 for old binaries, which really is 1.
        if clock_res == 1_000_000_000 {
            t2us = us2t;
        }
        let clock_factor = f64::from(clock_res) / 1_000_000.0;
        Some(Psched { ticks_per_usec: f64::from(t2us) / f64::from(us2t) * clock_factor })
    }

    /// Ticks to send `bytes` at `rate` bytes per second (iproute2's `tc_calc_xmittime`).
    fn xmit_ticks(&self, rate: u64, bytes: u32) -> u32 {
        let usec = 1_000_000.0 * f64::from(bytes) / rate.max(1) as f64;
        (usec * self.ticks_per_usec).min(f64::from(u32::MAX)) as u32
    }

    /// The bytes sent at `rate` in `ticks` (the inverse, for what the kernel reports).
    fn bytes_in(&self, rate: u64, ticks: u32) -> u32 {
        let usec = f64::from(ticks) / self.ticks_per_usec;
        (usec * rate as f64 / 1_000_000.0).round().min(f64::from(u32::MAX)) as u32
    }
}

/// TCA_OPTIONS of a tbf: `struct tc_tbf_qopt`, the 64-bit rate when it does not fit, and the
/// burst in bytes (the kernel then takes it over the buffer time).
fn tbf_options(bucket: &TokenBucket, ticks: &Psched) -> Vec<u8> {
    let mut qopt = Vec::with_capacity(36);
    // struct tc_ratespec rate: cell_log, linklayer, overhead, cell_align, mpu, rate.
    qopt.extend_from_slice(&[0, TC_LINKLAYER_ETHERNET]);
    qopt.extend_from_slice(&0u16.to_ne_bytes());
    qopt.extend_from_slice(&(-1i16).to_ne_bytes());
    qopt.extend_from_slice(&0u16.to_ne_bytes());
    qopt.extend_from_slice(&u32::try_from(bucket.rate).unwrap_or(u32::MAX).to_ne_bytes());
    qopt.extend_from_slice(&[0; 12]); // peakrate: none
    qopt.extend_from_slice(&bucket.limit.to_ne_bytes());
    qopt.extend_from_slice(&ticks.xmit_ticks(bucket.rate, bucket.burst).to_ne_bytes());
    qopt.extend_from_slice(&0u32.to_ne_bytes()); // mtu: only with a peak rate
    let mut out = nla(TCA_TBF_PARMS, &qopt);
    if bucket.rate > u64::from(u32::MAX) {
        out.extend(nla(TCA_TBF_RATE64, &bucket.rate.to_ne_bytes()));
    }
    out.extend(nla(TCA_TBF_BURST, &bucket.burst.to_ne_bytes()));
    out
}

/// TCA_OPTIONS of a u32 filter matching every packet (`match u32 0 0`) with one mirred action
/// redirecting it to the egress of `to`.
fn redirect_options(to: u32) -> Vec<u8> {
    // struct tc_u32_sel: flags, offshift, nkeys, pad, offmask, off, offoff, hoff, hmask; then
    // one struct tc_u32_key (mask, val, off, offmask), all zero: every packet matches.
    let mut sel = vec![TC_U32_TERMINAL, 0, 1, 0];
    sel.extend_from_slice(&[0; 12]);
    sel.extend_from_slice(&[0; 16]);
    // struct tc_mirred: tc_gen (index, capab, action, refcnt, bindcnt), eaction, ifindex.
    let mut mirred = Vec::with_capacity(28);
    mirred.extend_from_slice(&[0; 8]);
    mirred.extend_from_slice(&TC_ACT_STOLEN.to_ne_bytes());
    mirred.extend_from_slice(&[0; 8]);
    mirred.extend_from_slice(&TCA_EGRESS_REDIR.to_ne_bytes());
    mirred.extend_from_slice(&to.to_ne_bytes());
    let mut action = nla(TCA_ACT_KIND, b"mirred\0");
    action.extend(nla(TCA_ACT_OPTIONS, &nla(TCA_MIRRED_PARMS, &mirred)));
    // Actions are numbered from 1 in the order they run.
    let actions = nla(1, &action);
    let mut out = nla(TCA_U32_SEL, &sel);
    out.extend(nla(TCA_U32_ACT, &actions));
    out
}

/// One netlink attribute, padded to 4 bytes.
fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
    let len = 4 + value.len();
    let mut out = Vec::with_capacity(len.next_multiple_of(4));
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(value);
    out.resize(len.next_multiple_of(4), 0);
    out
}

/// The attributes of a TC message after its header, as (kind, value).
/// A malformed attribute ends the walk.
fn attributes(payload: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut rest = payload;
    std::iter::from_fn(move || {
        let len = usize::from(u16::from_ne_bytes(rest.get(..2)?.try_into().ok()?));
        let kind = u16::from_ne_bytes(rest.get(2..4)?.try_into().ok()?);
        let value = rest.get(4..len)?;
        rest = rest.get(len.next_multiple_of(4)..).unwrap_or(&[]);
        Some((kind & NLA_TYPE_MASK, value))
    })
}

/// Without NLA_F_NESTED and NLA_F_NET_BYTEORDER.
const NLA_TYPE_MASK: u16 = 0x3fff;

fn read_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// An RTM_NEWQDISC payload: (link index, qdisc).
pub(super) fn parse_qdisc(payload: &[u8], ticks: &Psched) -> Option<(u32, Qdisc)> {
    let header = TcHeader::parse(payload).ok()?;
    let mut qdisc = Qdisc { kind: String::new(), handle: header.handle.into(), parent: header.parent.into(), token_bucket: None };
    let mut options = None;
    for (kind, value) in attributes(payload.get(TC_HEADER_LEN..)?) {
        match kind {
            TCA_KIND => qdisc.kind = String::from_utf8_lossy(value).trim_end_matches('\0').to_string(),
            TCA_OPTIONS => options = Some(value),
            _ => {}
        }
    }
    if let (Some(options), "tbf") = (options, qdisc.kind.as_str()) {
        qdisc.token_bucket = parse_tbf(options, ticks);
    }
    Some((header.index as u32, qdisc))
}

/// A tbf's TCA_OPTIONS as the kernel dumps them: its parameters, and the rate again in 64
/// bits when it does not fit in 32.
fn parse_tbf(options: &[u8], ticks: &Psched) -> Option<TokenBucket> {
    let (mut rate, mut limit, mut buffer) = (None, 0, 0);
    for (kind, value) in attributes(options) {
        match kind {
            TCA_TBF_PARMS => {
                rate = rate.or(read_u32(value, 8).map(u64::from));
                limit = read_u32(value, 24)?;
                buffer = read_u32(value, 28)?;
            }
            TCA_TBF_RATE64 => rate = Some(u64::from_ne_bytes(value.get(..8)?.try_into().ok()?)),
            _ => {}
        }
    }
    let rate = rate?;
    Some(TokenBucket { rate, burst: ticks.bytes_in(rate, buffer), limit })
}

/// The redirect targets of the mirred actions of one RTM_NEWTFILTER payload (u32 filters).
pub(super) fn parse_redirects(payload: &[u8]) -> Vec<u32> {
    let mut out = Vec::new();
    let Some(attrs) = payload.get(TC_HEADER_LEN..) else { return out };
    for (kind, options) in attributes(attrs) {
        if kind != TCA_OPTIONS {
            continue;
        }
        for (_, actions) in attributes(options).filter(|(k, _)| *k == TCA_U32_ACT) {
            for (_, action) in attributes(actions) {
                out.extend(mirred_redirect(action));
            }
        }
    }
    out
}

/// The link a mirred action redirects to (egress redirect only).
fn mirred_redirect(action: &[u8]) -> Option<u32> {
    let mut mirred = false;
    let mut target = None;
    for (kind, value) in attributes(action) {
        match kind {
            TCA_ACT_KIND => mirred = value.starts_with(b"mirred\0"),
            TCA_ACT_OPTIONS => {
                for (k, parms) in attributes(value) {
                    if k == TCA_MIRRED_PARMS && read_u32(parms, 20) == Some(TCA_EGRESS_REDIR as u32) {
                        target = read_u32(parms, 24);
                    }
                }
            }
            _ => {}
        }
    }
    target.filter(|_| mirred)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psched_ticks_as_iproute2_counts_them() {
        // This machine's kernel: 64 ticks per 1000 us, a microsecond clock.
        let p = Psched::parse("000003e8 00000040 000f4240 3b9aca00\n").unwrap();
        assert_eq!(p.ticks_per_usec, 15.625);
        // 32 KiB at 1 MB/s: 32.768 ms.
        assert_eq!(p.xmit_ticks(1_000_000, 32_768), 512_000);
        assert_eq!(p.bytes_in(1_000_000, 512_000), 32_768);
        // A nanosecond clock advertises 1000 ticks per microsecond for old binaries.
        let ns = Psched::parse("000003e8 00000040 3b9aca00 3b9aca00").unwrap();
        assert_eq!(ns.ticks_per_usec, 1000.0);
        assert!(Psched::parse("garbage").is_none());
    }

    #[test]
    fn tbf_options_round_trip() {
        let p = Psched::parse("000003e8 00000040 000f4240 3b9aca00").unwrap();
        for rate in [1_000_000u64, 10_000_000_000] {
            let bucket = TokenBucket { rate, burst: 65_536, limit: 90_000 };
            let back = parse_tbf(&tbf_options(&bucket, &p), &p).unwrap();
            assert_eq!((back.rate, back.limit), (rate, 90_000));
            // The kernel keeps whole ticks (64 ns here): 0.4% at 10 GB/s.
            assert!(back.burst.abs_diff(65_536) < 65_536 / 200, "{back:?}");
        }
    }

    #[test]
    fn redirect_options_name_their_target() {
        let mut payload = vec![0; TC_HEADER_LEN];
        payload.extend(nla(TCA_OPTIONS, &redirect_options(42)));
        assert_eq!(parse_redirects(&payload), [42]);
    }
}

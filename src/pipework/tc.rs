//! `pipework tc GUEST ARGS`: the `tc` forms that shape an interface of the guest, over
//! netlink: a token bucket as the root qdisc, and its removal.

use crate::error::{BerthError, BerthResult};
use berth_netlink::{Netlink, TokenBucket, TBF_HANDLE};
use berth_util::units;

const TC_SYNTAX: &str =
    "tc GUEST qdisc add|replace|change dev IF root tbf rate RATE burst SIZE [latency TIME | limit SIZE], or qdisc del dev IF root";

fn unsupported(what: &str) -> BerthError {
    BerthError::InvalidArgument(format!("{what}; supported: {TC_SYNTAX}"))
}

pub fn run(nl: &mut Netlink, words: &[&str]) -> BerthResult<()> {
    match words {
        ["qdisc", verb @ ("add" | "replace" | "change"), "dev", ifname, "root", "tbf", options @ ..] => {
            let index = link(nl, ifname)?;
            let bucket = token_bucket(options)?;
            let _ = verb;
            nl.set_root_tbf(index, &bucket)?;
            Ok(())
        }
        ["qdisc", "del" | "delete", "dev", ifname, "root", ..] => {
            let index = link(nl, ifname)?;
            let removed = nl.delete_root_qdisc(index, "tbf", TBF_HANDLE)?;
            if !removed {
                return Err(BerthError::NotFound(format!("{ifname} has no tbf root qdisc to delete")));
            }
            Ok(())
        }
        _ => Err(unsupported(&format!("tc {:?}", words.join(" ")))),
    }
}

fn link(nl: &mut Netlink, ifname: &str) -> BerthResult<u32> {
    Ok(nl.link_by_name(ifname)?.ok_or_else(|| BerthError::NotFound(format!("no interface {ifname} in the guest")))?.index)
}

/// `rate R burst B [latency L | limit S]`, as tc reads them; without latency or limit the
/// queue holds 50 ms at the rate, as a common `latency 50ms` would.
fn token_bucket(options: &[&str]) -> BerthResult<TokenBucket> {
    let (mut rate_bits, mut burst, mut limit, mut latency_us) = (None, None, None, None);
    let mut rest = options;
    while let [key, value, tail @ ..] = rest {
        let invalid = |e: units::InvalidUnit| BerthError::InvalidArgument(format!("{key}: {e}"));
        match *key {
            "rate" => rate_bits = Some(units::rate_bits(value).map_err(invalid)?),
            "burst" | "buffer" | "maxburst" => burst = Some(units::size_bytes(value).map_err(invalid)?),
            "limit" => limit = Some(units::size_bytes(value).map_err(invalid)?),
            "latency" => latency_us = Some(units::time_micros(value).map_err(invalid)?),
            other => return Err(unsupported(&format!("tbf option {other:?}"))),
        }
        rest = tail;
    }
    if !rest.is_empty() {
        return Err(unsupported(&format!("{:?} needs a value", rest[0])));
    }
    let rate = rate_bits.filter(|&r| r > 0).ok_or_else(|| unsupported("tbf needs a rate above zero"))? / 8;
    let burst = burst.filter(|&b| b > 0).ok_or_else(|| unsupported("tbf needs a burst"))?;
    let limit = limit.unwrap_or_else(|| burst + rate * latency_us.unwrap_or(50_000) / 1_000_000);
    let fits = |v: u64, what: &str| u32::try_from(v).map_err(|_| BerthError::InvalidArgument(format!("{what} {v} is too large")));
    Ok(TokenBucket { rate, burst: fits(burst, "burst")?, limit: fits(limit, "limit")? })
}

#[cfg(test)]
mod tests {
    #[test]
    fn token_buckets_as_tc_writes_them() {
        let b = super::token_bucket(&["rate", "8mbit", "burst", "32kb", "latency", "50ms"]).unwrap();
        assert_eq!((b.rate, b.burst, b.limit), (1_000_000, 32 * 1024, 32 * 1024 + 50_000));
        assert!(super::token_bucket(&["rate", "8mbit"]).is_err());
        assert!(super::token_bucket(&["rate", "0", "burst", "10kb"]).is_err());
        assert!(super::token_bucket(&["peakrate", "1mbit"]).is_err());
    }
}

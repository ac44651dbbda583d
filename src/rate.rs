//! Rates and sizes as `tc` writes them, for `berth attach --ingress-rate 10mbit --burst 32kb`,
//! turned into the bits per second and bits of the `bandwidth` capability.
//!
//! The units are tc(8)'s, read by `berth_util::units` (as `berth pipework tc` reads them).

use crate::error::{BerthError, BerthResult};
use berth_util::units;
use berth_cni::spec::ConfList;
use serde_json::{json, Value};

/// A rate in bits per second; zero is refused (a shaped direction needs a rate).
pub fn parse_rate(s: &str) -> Result<u64, String> {
    match units::rate_bits(s).map_err(|e| e.to_string())? {
        0 => Err(format!("{s:?}: a rate must be positive")),
        bits => Ok(bits),
    }
}

/// A size in bits (the `bandwidth` capability counts bursts in bits); zero is refused.
pub fn parse_size(s: &str) -> Result<u64, String> {
    match units::size_bytes(s).map_err(|e| e.to_string())? {
        0 => Err(format!("{s:?}: a size must be positive")),
        bytes => bytes.checked_mul(8).ok_or_else(|| format!("{s:?}: a size must be below 2 EiB")),
    }
}

/// Without `--burst`: 10 ms at the rate, at least 16 KiB (over ten full packets at MTU 1500),
/// so the bucket never holds less than a packet and a fast rate is not held back by timers.
pub fn default_burst(rate: u64) -> u64 {
    (rate / 100).max(16 * 1024 * 8)
}

/// The `bandwidth` capability argument (`runtimeConfig.bandwidth`) for the given limits;
/// `None` when neither direction is limited.
pub fn bandwidth_capability(ingress: Option<u64>, egress: Option<u64>, burst: Option<u64>) -> Option<Value> {
    if ingress.is_none() && egress.is_none() {
        return None;
    }
    let mut cap = serde_json::Map::new();
    for (rate, rate_key, burst_key) in [(ingress, "ingressRate", "ingressBurst"), (egress, "egressRate", "egressBurst")] {
        if let Some(rate) = rate {
            cap.insert(rate_key.into(), json!(rate));
            cap.insert(burst_key.into(), json!(burst.unwrap_or_else(|| default_burst(rate))));
        }
    }
    Some(Value::Object(cap))
}

/// `berth attach`'s shaping flags as the `bandwidth` capability argument, for a network whose
/// chain has a plugin declaring it (the runtime gives the argument to no other plugin, so
/// without one the limits would silently do nothing).
pub fn bandwidth_arg(
    list: &ConfList,
    ingress: Option<u64>,
    egress: Option<u64>,
    burst: Option<u64>,
) -> BerthResult<Option<Value>> {
    let Some(cap) = bandwidth_capability(ingress, egress, burst) else {
        return match burst {
            Some(_) => {
                Err(BerthError::InvalidArgument("--burst sizes the buckets of --ingress-rate and --egress-rate: give one".into()))
            }
            None => Ok(None),
        };
    };
    crate::target::require_capability(list, "bandwidth", "--ingress-rate/--egress-rate", "berth net create --bandwidth")?;
    Ok(Some(cap))
}

/// The plugin `berth net create --bandwidth` chains after the bridge.
pub fn bandwidth_plugin() -> serde_json::Map<String, Value> {
    let mut plugin = serde_json::Map::new();
    plugin.insert("type".into(), json!("berth-bandwidth"));
    plugin.insert("capabilities".into(), json!({"bandwidth": true}));
    plugin
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_sizes_as_tc_writes_them() {
        assert_eq!(parse_rate("10mbit"), Ok(10_000_000));
        assert_eq!(parse_rate("512kbit"), Ok(512_000));
        assert_eq!(parse_rate("1.5Gbit"), Ok(1_500_000_000));
        assert_eq!(parse_rate("1mibit"), Ok(1_048_576));
        assert_eq!(parse_rate("100kbps"), Ok(800_000));
        assert_eq!(parse_rate("8000"), Ok(8000));
        assert_eq!(parse_size("32kb"), Ok(32 * 1024 * 8));
        assert_eq!(parse_size("1m"), Ok(8 * 1024 * 1024));
        assert_eq!(parse_size("1500"), Ok(12_000));
        assert_eq!(parse_size("10kbit"), Ok(10_240));
    }

    #[test]
    fn bad_rates_are_refused() {
        for bad in ["0", "0mbit", "-10mbit", "ten", "10 parsecs", "", "nan"] {
            assert!(parse_rate(bad).is_err(), "{bad:?}");
        }
        assert!(parse_size("-1kb").is_err());
    }

    /// Reviewing the fuzz target `cli_arguments` (src/fuzz_cli.rs): `berth attach --burst
    /// 9223372036854775807` panicked ("attempt to multiply with overflow"); a release build
    /// would have wrapped it into a small burst.
    #[test]
    fn a_burst_too_large_for_bits_is_refused() {
        assert!(parse_size("9223372036854775807").is_err());
        assert!(parse_size("2305843009213693952").is_err(), "2^61 bytes are 2^64 bits");
        assert_eq!(parse_size("1152921504606846976"), Ok(1 << 63), "2^60 bytes still fit");
    }

    #[test]
    fn the_capability_with_default_bursts() {
        assert_eq!(bandwidth_capability(None, None, None), None);
        let cap = bandwidth_capability(Some(10_000_000), None, None).unwrap();
        assert_eq!(cap, json!({"ingressRate": 10_000_000, "ingressBurst": 131_072}));
        let cap = bandwidth_capability(Some(1_000_000_000), Some(512_000), Some(80_000)).unwrap();
        assert_eq!(cap["ingressBurst"], 80_000);
        assert_eq!(cap["egressBurst"], 80_000);
    }
}

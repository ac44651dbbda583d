//! The reference bandwidth plugin's keys: `ingressRate`, `ingressBurst`, `egressRate`,
//! `egressBurst` (bits per second, bits), in the plugin's configuration or, replacing them
//! all, in the `bandwidth` capability (`runtimeConfig.bandwidth`). Every value is checked
//! here, before anything is touched.

use berth_cni::skel::Request;
use berth_cni::{CniError, CniResult};
use serde_json::{Map, Value};

/// One direction's token bucket, in the units of the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// Bits per second.
    pub rate: u64,
    /// Bits.
    pub burst: u64,
}

/// What to shape; `None` leaves that direction alone. Directions are the container's:
/// ingress is what it receives, egress what it sends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shaping {
    pub ingress: Option<Limit>,
    pub egress: Option<Limit>,
    /// Where the keys were read: `""` (the plugin's configuration) or
    /// `"runtimeConfig.bandwidth."`, so errors name the field the user wrote.
    pub source: &'static str,
}

/// tbf keeps its burst in a 32-bit count of bytes.
const MAX_BURST_BITS: u64 = (u32::MAX as u64) * 8;

impl Shaping {
    /// The shaping a request asks for: `runtimeConfig.bandwidth` when the runtime passed it,
    /// else the plugin's own keys.
    pub fn parse(req: &Request) -> CniResult<Shaping> {
        if let Some(runtime) = req.conf.runtime::<Map<String, Value>>("bandwidth")? {
            return Shaping::from_keys(&runtime, "runtimeConfig.bandwidth.");
        }
        Shaping::from_keys(&req.conf.extra, "")
    }

    pub fn is_empty(&self) -> bool {
        self.ingress.is_none() && self.egress.is_none()
    }

    fn from_keys(keys: &Map<String, Value>, prefix: &'static str) -> CniResult<Shaping> {
        Ok(Shaping {
            ingress: direction(keys, prefix, "ingressRate", "ingressBurst")?,
            egress: direction(keys, prefix, "egressRate", "egressBurst")?,
            source: prefix,
        })
    }

    /// Refuses a burst that cannot hold one packet of `mtu` bytes (plus its Ethernet header,
    /// which tbf counts too): tbf would drop every full-sized packet.
    pub fn check_burst_fits(&self, mtu: u32) -> CniResult<()> {
        let prefix = self.source;
        let packet_bits = (u64::from(mtu) + ETHERNET_HEADER) * 8;
        for (limit, field) in [(self.ingress, "ingressBurst"), (self.egress, "egressBurst")] {
            if let Some(limit) = limit.filter(|l| l.burst < packet_bits) {
                return Err(CniError::invalid_config(format!(
                    "{prefix}{field} {} bits is smaller than one packet of the interface's MTU ({mtu} bytes + {ETHERNET_HEADER} of header = {packet_bits} bits)",
                    limit.burst
                )));
            }
        }
        Ok(())
    }
}

const ETHERNET_HEADER: u64 = 14;

/// One direction. Rate and burst go together; both absent or both zero leave the direction
/// unshaped (runtimes such as containerd's CRI send zeros for a direction nobody limited, as
/// the reference plugin accepts).
fn direction(keys: &Map<String, Value>, prefix: &str, rate_key: &str, burst_key: &str) -> CniResult<Option<Limit>> {
    let rate = count(keys, prefix, rate_key)?.filter(|&r| r != 0);
    let burst = count(keys, prefix, burst_key)?.filter(|&b| b != 0);
    match (rate, burst) {
        (None, None) => Ok(None),
        (Some(_), None) => Err(CniError::invalid_config(format!(
            "{prefix}{burst_key} is required with {prefix}{rate_key}: the bits that may leave at once"
        ))),
        (None, Some(_)) => Err(CniError::invalid_config(format!(
            "{prefix}{rate_key} must be a positive number of bits per second with {prefix}{burst_key}"
        ))),
        (Some(_), Some(burst)) if burst > MAX_BURST_BITS => {
            Err(CniError::invalid_config(format!("{prefix}{burst_key} {burst} bits is over the 4 GiB a token bucket holds")))
        }
        (Some(rate), Some(burst)) => Ok(Some(Limit { rate, burst })),
    }
}

/// A non-negative whole number, or absent (null counts as absent).
fn count(keys: &Map<String, Value>, prefix: &str, key: &str) -> CniResult<Option<u64>> {
    match keys.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) if n.as_u64().is_some() => Ok(n.as_u64()),
        Some(Value::Number(n)) if n.as_i64().is_some() || n.as_f64().is_some_and(|f| f < 0.0) => {
            Err(CniError::invalid_config(format!("{prefix}{key} must not be negative (got {n})")))
        }
        Some(other) => Err(CniError::invalid_config(format!("{prefix}{key} must be a whole number (got {other})"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> CniResult<Shaping> {
        let Value::Object(map) = v else { panic!("an object") };
        Shaping::from_keys(&map, "")
    }

    #[test]
    fn the_reference_keys() {
        let s =
            parse(json!({"ingressRate": 8_000_000, "ingressBurst": 262_144, "egressRate": 20_000_000, "egressBurst": 524_288}))
                .unwrap();
        assert_eq!(s.ingress, Some(Limit { rate: 8_000_000, burst: 262_144 }));
        assert_eq!(s.egress, Some(Limit { rate: 20_000_000, burst: 524_288 }));
        let one_way =
            parse(json!({"egressRate": 1_000_000, "egressBurst": 100_000, "ingressRate": 0, "ingressBurst": 0})).unwrap();
        assert_eq!(one_way.ingress, None, "zeros leave a direction alone, as CRI sends them");
        assert!(parse(json!({})).unwrap().is_empty());
    }

    #[test]
    fn bad_values_name_their_field() {
        for (conf, field) in [
            (json!({"ingressRate": -1, "ingressBurst": 100_000}), "ingressRate"),
            (json!({"egressRate": 1_000_000, "egressBurst": -5}), "egressBurst"),
            (json!({"ingressRate": 1.5, "ingressBurst": 100_000}), "ingressRate"),
            (json!({"ingressRate": "10mbit", "ingressBurst": 100_000}), "ingressRate"),
            (json!({"ingressRate": 1_000_000}), "ingressBurst"),
            (json!({"egressBurst": 100_000}), "egressRate"),
            (json!({"egressRate": 0, "egressBurst": 100_000}), "egressRate"),
            (json!({"egressRate": 1, "egressBurst": 40_000_000_000u64}), "egressBurst"),
        ] {
            let err = parse(conf.clone()).expect_err(&conf.to_string());
            assert_eq!(err.code, 7, "{err:?}");
            assert!(err.msg.starts_with(field), "{conf}: {}", err.msg);
        }
    }

    #[test]
    fn a_burst_holds_one_full_packet() {
        let s = parse(json!({"egressRate": 1_000_000, "egressBurst": 12_000})).unwrap();
        let err = s.check_burst_fits(1500).unwrap_err();
        assert!(err.msg.starts_with("egressBurst 12000 bits"), "{}", err.msg);
        s.check_burst_fits(1486).expect("1486 + 14 bytes = 12000 bits fit");
    }
}

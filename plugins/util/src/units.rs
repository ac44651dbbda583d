//! Rates, sizes and times written as `tc` writes them (tc(8), "PARAMETERS"): `10mbit`,
//! `512kbit`, `1mbps`, `32kb`, `1500`, `50ms`. Rates come out in bits per second, sizes in
//! bytes, times in microseconds.

/// What is wrong with a value; the caller names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a {1} (e.g. {2})")]
pub struct InvalidUnit(pub String, pub &'static str, pub &'static str);

/// Splits `10.5mbit` into 10.5 and `mbit`.
fn split(text: &str) -> Option<(f64, String)> {
    let text = text.trim();
    let at = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let number: f64 = text[..at].parse().ok()?;
    (number.is_finite() && number >= 0.0).then(|| (number, text[at..].to_ascii_lowercase()))
}

/// A rate in bits per second: a bare number or `bit` are bits, `kbit` `mbit` `gbit` `tbit`
/// powers of 1000, `kibit` `mibit` `gibit` `tibit` of 1024; `bps` and its prefixed forms
/// are bytes per second.
pub fn rate_bits(text: &str) -> Result<u64, InvalidUnit> {
    let invalid = || InvalidUnit(text.to_string(), "rate", "10mbit, 512kbit, 1mbps");
    let (number, unit) = split(text).ok_or_else(invalid)?;
    let (scale, bytes) = match unit.as_str() {
        "" | "bit" => (1.0, false),
        "bps" => (1.0, true),
        _ => {
            let (prefix, bytes) = match (unit.strip_suffix("bit"), unit.strip_suffix("bps")) {
                (Some(p), _) => (p, false),
                (None, Some(p)) => (p, true),
                _ => return Err(invalid()),
            };
            (prefix_scale(prefix).ok_or_else(invalid)?, bytes)
        }
    };
    whole(number * scale * if bytes { 8.0 } else { 1.0 }).ok_or_else(invalid)
}

/// A size in bytes: a bare number or `b` are bytes, `k`/`kb` `m`/`mb` `g`/`gb` powers of
/// 1024 bytes, `kbit` `mbit` `gbit` powers of 1024 bits.
pub fn size_bytes(text: &str) -> Result<u64, InvalidUnit> {
    let invalid = || InvalidUnit(text.to_string(), "size", "32kb, 1500, 1mbit");
    let (number, unit) = split(text).ok_or_else(invalid)?;
    let bytes = match unit.as_str() {
        "" | "b" => number,
        "k" | "kb" => number * 1024.0,
        "m" | "mb" => number * 1024.0 * 1024.0,
        "g" | "gb" => number * 1024.0 * 1024.0 * 1024.0,
        "kbit" => number * 1024.0 / 8.0,
        "mbit" => number * 1024.0 * 1024.0 / 8.0,
        "gbit" => number * 1024.0 * 1024.0 * 1024.0 / 8.0,
        _ => return Err(invalid()),
    };
    whole(bytes).ok_or_else(invalid)
}

/// A time in microseconds: `s` `ms` `us` (and their `sec` `msec` `usec` spellings), a bare
/// number is microseconds.
pub fn time_micros(text: &str) -> Result<u64, InvalidUnit> {
    let invalid = || InvalidUnit(text.to_string(), "time", "50ms, 1s, 400us");
    let (number, unit) = split(text).ok_or_else(invalid)?;
    let scale = match unit.as_str() {
        "s" | "sec" | "secs" => 1_000_000.0,
        "ms" | "msec" | "msecs" => 1000.0,
        "" | "us" | "usec" | "usecs" => 1.0,
        _ => return Err(invalid()),
    };
    whole(number * scale).ok_or_else(invalid)
}

/// `value` rounded, when a u64 holds it: `as` would turn anything larger into u64::MAX.
fn whole(value: f64) -> Option<u64> {
    const TWO_TO_64: f64 = 18_446_744_073_709_551_616.0;
    let rounded = value.round();
    (rounded < TWO_TO_64).then_some(rounded as u64)
}

fn prefix_scale(prefix: &str) -> Option<f64> {
    Some(match prefix {
        "k" => 1e3,
        "m" => 1e6,
        "g" => 1e9,
        "t" => 1e12,
        "ki" => 1024.0,
        "mi" => 1024.0 * 1024.0,
        "gi" => 1024.0 * 1024.0 * 1024.0,
        "ti" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_tc_reads_them() {
        assert_eq!(rate_bits("10mbit"), Ok(10_000_000));
        assert_eq!(rate_bits("512kbit"), Ok(512_000));
        assert_eq!(rate_bits("1mbps"), Ok(8_000_000));
        assert_eq!(rate_bits("1kibit"), Ok(1024));
        assert_eq!(rate_bits("8000"), Ok(8000));
        assert_eq!(size_bytes("32kb"), Ok(32 * 1024));
        assert_eq!(size_bytes("1500"), Ok(1500));
        assert_eq!(size_bytes("1mbit"), Ok(131_072));
        assert_eq!(time_micros("50ms"), Ok(50_000));
        assert_eq!(time_micros("1s"), Ok(1_000_000));
        for bad in ["", "fast", "-1mbit", "10mbits", "1.2.3kbit"] {
            assert!(rate_bits(bad).is_err(), "{bad}");
        }
    }

    /// Fuzzing (berth-fuzz, target `units`): "18446744073709551615" and anything larger came
    /// back as u64::MAX, a value nobody wrote; now they are refused.
    #[test]
    fn values_past_u64_are_refused_not_saturated() {
        for huge in ["18446744073709551615", "99999999999999999999999", "1e30", "20000000000000000000tbit"] {
            assert!(rate_bits(huge).is_err(), "{huge}");
            assert!(size_bytes(huge).is_err(), "{huge}");
            assert!(time_micros(huge).is_err(), "{huge}");
        }
        assert!(size_bytes("20000000000000000gb").is_err());
        assert_eq!(
            rate_bits("18446744073709500000"),
            Ok(18_446_744_073_709_500_416),
            "below 2^64 still reads (to f64 precision)"
        );
    }
}

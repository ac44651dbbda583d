//! Sizes in bytes, kept apart from other integers (block counts, inode counts, IDs).

use serde::{Deserialize, Serialize};
use std::fmt;

/// A size in bytes, kept apart from other integers so sizes cannot be confused with counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Bytes(pub u64);

impl Bytes {
    pub const KIB: u64 = 1 << 10;
    pub const MIB: u64 = 1 << 20;

    /// Parses an integer with an optional binary unit (`64M`, `1G`, `512KiB`; K, M, G, T,
    /// with or without a trailing `B` or `iB`), or plain bytes.
    pub fn parse(text: &str) -> Result<Bytes, String> {
        let trimmed = text.trim();
        let digits_end = trimmed.find(|c: char| !c.is_ascii_digit()).unwrap_or(trimmed.len());
        let (digits, unit) = trimmed.split_at(digits_end);
        if digits.is_empty() {
            return Err("expected a number with an optional unit K, M, G or T, like 64M or 1G".into());
        }
        let number: u64 = digits.parse().map_err(|_| "the number is too large".to_string())?;
        let shift = match unit.to_ascii_uppercase().as_str() {
            "" | "B" => 0,
            "K" | "KB" | "KIB" => 10,
            "M" | "MB" | "MIB" => 20,
            "G" | "GB" | "GIB" => 30,
            "T" | "TB" | "TIB" => 40,
            _ => return Err(format!("unknown unit {unit:?} (use K, M, G or T)")),
        };
        number.checked_mul(1u64 << shift).map(Bytes).ok_or_else(|| "the size is too large".to_string())
    }

    /// Whole units of `unit` bytes, rounding up (`Bytes(1025).div_ceil(1024) == 2`).
    pub fn div_ceil(self, unit: u64) -> u64 {
        self.0.div_ceil(unit)
    }
}

impl fmt::Display for Bytes {
    /// The shortest exact form: `64M` rather than `67108864`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (unit, shift) in [("T", 40), ("G", 30), ("M", 20), ("K", 10)] {
            if self.0 != 0 && self.0.trailing_zeros() >= shift {
                return f.pad(&format!("{}{unit}", self.0 >> shift));
            }
        }
        f.pad(&self.0.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_binary_units_and_prints_the_shortest_exact_form() {
        assert_eq!(Bytes::parse("10M"), Ok(Bytes(10 << 20)));
        assert_eq!(Bytes::parse("1g"), Ok(Bytes(1 << 30)));
        assert_eq!(Bytes::parse("512KiB"), Ok(Bytes(512 << 10)));
        assert_eq!(Bytes::parse("4096"), Ok(Bytes(4096)));
        for bad in ["", "M", "-1M", "1.5G", "10Q", "99999999999999999999", "20000000T"] {
            assert!(Bytes::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Bytes(10 << 20).to_string(), "10M");
        assert_eq!(Bytes(1536).to_string(), "1536");
        assert_eq!(format!("{:>5}", Bytes(1 << 20)), "   1M");
        assert_eq!(Bytes(1025).div_ceil(1024), 2);
    }
}

//! FNV-1a: tiny and stable across Rust releases (std's `DefaultHasher` is not promised to
//! be), for names derived from other names (host veth names, device-mapper prefixes, rule
//! labels, index files) that must come out the same in every later run.

const FNV32_OFFSET: u32 = 0x811c_9dc5;
const FNV32_PRIME: u32 = 0x0100_0193;
const FNV64_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV64_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a, 32 bits, over the bytes of every part in turn.
pub fn fnv1a32<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> u32 {
    parts.into_iter().flatten().fold(FNV32_OFFSET, |h, &b| (h ^ u32::from(b)).wrapping_mul(FNV32_PRIME))
}

/// FNV-1a, 64 bits, over the bytes of every part in turn.
pub fn fnv1a64<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> u64 {
    parts.into_iter().flatten().fold(FNV64_OFFSET, |h, &b| (h ^ u64::from(b)).wrapping_mul(FNV64_PRIME))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_values() {
        assert_eq!(fnv1a32([&b""[..]]), 0x811c_9dc5);
        assert_eq!(fnv1a32([&b"a"[..]]), 0xe40c_292c);
        assert_eq!(fnv1a64([&b"a"[..]]), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a32([&b"ab"[..]]), fnv1a32([&b"a"[..], &b"b"[..]]), "parts hash as their concatenation");
    }
}

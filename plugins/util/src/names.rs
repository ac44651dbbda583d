//! The names berth is handed from outside, checked once with the same rules everywhere.

use std::fmt;

/// What is wrong with a name; the caller says which field or argument it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct InvalidName {
    pub reason: &'static str,
}

fn invalid(reason: &'static str) -> Result<(), InvalidName> {
    Err(InvalidName { reason })
}

/// CNI's alphabet for container IDs and network names, and berth's for volumes:
/// `[a-zA-Z0-9][a-zA-Z0-9_.-]*`. Such a name is always one safe path component and needs no
/// quoting in nft or iptables input.
pub fn check_identifier(name: &str) -> Result<(), InvalidName> {
    let mut chars = name.chars();
    match chars.next() {
        None => invalid("it is empty"),
        Some(first) if !first.is_ascii_alphanumeric() => invalid("it must start with a letter or a digit"),
        Some(_) if !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) => {
            invalid("only letters, digits, '_', '.' and '-' are allowed")
        }
        Some(_) => Ok(()),
    }
}

/// The longest Linux interface name (IFNAMSIZ less the terminating NUL).
pub const MAX_IFNAME_LEN: usize = 15;

/// A Linux interface name as the kernel takes it (and CNI's `ValidateInterfaceName`): 1 to 15
/// bytes, not `.` or `..`, no `/`, `:` or white space.
pub fn check_interface_name(name: &str) -> Result<(), InvalidName> {
    if name.is_empty() {
        invalid("interface name is empty")
    } else if name.len() > MAX_IFNAME_LEN {
        invalid("interface name is longer than 15 bytes")
    } else if name == "." || name == ".." {
        invalid("interface name is . or ..")
    } else if name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace()) {
        invalid("interface name contains / or : or white space")
    } else {
        Ok(())
    }
}

/// One path component for a file berth creates (a named network namespace, say): not empty,
/// `.` or `..`, no `/`.
pub fn check_file_name(name: &str) -> Result<(), InvalidName> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        invalid("it must be one file name: not empty, '.' or '..', no '/'")
    } else {
        Ok(())
    }
}

/// Characters a [`label`] keeps as they are: those of [`check_identifier`]'s alphabet, which
/// need no quoting in nft or iptables input and hold no space, and `~`, which starts a
/// label's hash.
fn is_label_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

/// `name` as a label of at most `max` bytes (at least 10), for where a kernel object records
/// its owner in little room (a link's alias, a rule's comment), with no space or quoting:
/// `name` itself when it is at most `max` bytes of identifier characters; else a prefix of it
/// (other characters written `_`), `~` and a hash of the whole, so names sharing a long
/// prefix keep different labels. The same `name` and `max` give the same label in every run
/// and release: compare a stored label with `label(name, max)` (berth-firewall's comments,
/// berth-bandwidth's ifb aliases).
pub fn label(name: &str, max: usize) -> String {
    if name.len() <= max && name.chars().all(is_label_char) {
        return name.to_string();
    }
    // The prefix is ASCII: `max - 9` characters are `max - 9` bytes.
    let prefix: String = name.chars().map(|c| if is_label_char(c) { c } else { '_' }).take(max - 9).collect();
    format!("{prefix}~{:08x}", crate::hash::fnv1a32([name.as_bytes()]))
}

/// Whether a stored value records `name`: whole (written when it fit), or as its
/// [`label`] of at most `max` bytes.
pub fn records(stored: &str, name: &str, max: usize) -> bool {
    stored == name || stored == label(name, max)
}

/// Shows a name in a message: quoted, so empty or odd names stay visible.
pub struct Quoted<'a>(pub &'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers() {
        for ok in ["a", "0", "abc-1_2.3", "Z"] {
            assert!(check_identifier(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", ".a", "a/b", "a b", "é", "a:b"] {
            assert!(check_identifier(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn labels_fit_and_tell_long_names_apart() {
        assert_eq!(label("c-1_2.3", 10), "c-1_2.3", "a short identifier is its own label");
        let long = "a".repeat(100);
        assert_eq!(label(&long, 64), format!("{}~{:08x}", &long[..55], crate::hash::fnv1a32([long.as_bytes()])));
        let shared = "x".repeat(250);
        let (a, b) = (label(&format!("{shared}a"), 64), label(&format!("{shared}b"), 64));
        assert!(a.len() == 64 && b.len() == 64 && a != b, "{a} {b}");
        let odd = label(&"é".repeat(70), 64);
        assert!(odd.len() <= 64 && odd.is_ascii() && !odd.contains(' '), "{odd}");
        assert_ne!(label("my net", 64), "my net", "a space is never kept");
    }

    #[test]
    fn interface_names() {
        for ok in ["eth0", "eth@0", "a", "123456789012345", "net1.100"] {
            assert!(check_interface_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "a:b", "a b", "1234567890123456"] {
            assert!(check_interface_name(bad).is_err(), "{bad}");
        }
    }
}

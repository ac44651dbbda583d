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
    fn interface_names() {
        for ok in ["eth0", "eth@0", "a", "123456789012345", "net1.100"] {
            assert!(check_interface_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "a:b", "a b", "1234567890123456"] {
            assert!(check_interface_name(bad).is_err(), "{bad}");
        }
    }
}

//! Name rules shared by members, nodes, roles and keygroup parts: `[A-Za-z0-9][A-Za-z0-9_.-]*`.

/// Longest accepted name; a DNS label is at most 63 bytes and names end up in DNS.
pub const MAX_NAME_LEN: usize = 63;

/// Whether `name` is a valid member, node, role or keygroup-part name.
pub fn is_valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_NAME_LEN
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn examples() {
        for good in ["a", "web-1", "cp0", "Host_2.lan", "9"] {
            assert!(is_valid_name(good), "{good}");
        }
        for bad in ["", "-a", ".a", "a b", "a/b", "é", &"x".repeat(64)] {
            assert!(!is_valid_name(bad), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn generated_names_are_valid(name in "[A-Za-z0-9][A-Za-z0-9_.-]{0,62}") {
            prop_assert!(is_valid_name(&name));
        }
    }
}

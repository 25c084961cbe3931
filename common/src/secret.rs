//! Secret checks, in one place: every comparison of a secret a caller presents (the cluster
//! secret on internal routes, the join token, the join's cluster proof, the admin token) goes
//! through [`constant_time_eq`], so its timing tells nothing about how much of a guess matched.
//! ACL tokens (DESIGN.md §6e) are drawn, shaped and hashed here too: the registry keeps only
//! [`token_hash`] of a secret, and a presented secret is matched by comparing hashes in
//! constant time.

use sha2::{Digest, Sha256};

/// The header carrying the cluster secret on internal routes.
pub const CLUSTER_SECRET_HEADER: &str = "x-hivemind-cluster-secret";

/// `a == b` in time that depends on their lengths only (secrets here have fixed lengths).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether a request may pass a check for `required`: anything passes when nothing is required;
/// otherwise `given` must be present and equal, compared in constant time.
pub fn satisfies(required: Option<impl AsRef<[u8]>>, given: Option<impl AsRef<[u8]>>) -> bool {
    match (required, given) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(required), Some(given)) => constant_time_eq(required.as_ref(), given.as_ref()),
    }
}

/// Whether two optional secrets are the same (both absent counts as the same): for a proof that
/// must match what this side holds, e.g. the join's cluster proof against our cluster secret.
pub fn same(a: Option<impl AsRef<[u8]>>, b: Option<impl AsRef<[u8]>>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => constant_time_eq(a.as_ref(), b.as_ref()),
        _ => false,
    }
}

/// Whether `text` has the shape of an ACL token's secret or accessor: a UUID in its lower-case
/// 8-4-4-4-12 hex form, as Consul's.
pub fn is_token(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups.iter().zip([8, 4, 4, 4, 12]).all(|(g, len)| {
            g.len() == len && g.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        })
}

/// A fresh token secret or accessor: 122 random bits in UUID v4 form.
pub fn new_token(rng: &mut impl rand::RngCore) -> String {
    let mut b = [0u8; 16];
    rng.fill_bytes(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// What the registry keeps of a token's secret.
pub fn token_hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn constant_time_eq_is_equality(a: Vec<u8>, b: Vec<u8>) {
            prop_assert_eq!(constant_time_eq(&a, &b), a == b);
            prop_assert!(constant_time_eq(&a, &a));
        }
    }

    #[test]
    fn tokens_are_uuid_shaped_and_fresh() {
        let mut rng = rand::thread_rng();
        let a = new_token(&mut rng);
        assert!(is_token(&a), "{a}");
        assert_ne!(a, new_token(&mut rng));
        assert!(!is_token("s3cret"));
        assert!(!is_token(&a.to_uppercase()));
        assert!(!is_token(&a[1..]));
        assert!(!is_token(&format!("{a}0")));
        assert_eq!(token_hash(&a), token_hash(&a));
        assert_ne!(token_hash(&a), token_hash(&new_token(&mut rng)));
    }

    #[test]
    fn a_required_secret_must_be_given_exactly() {
        const NONE: Option<&str> = None;
        assert!(satisfies(NONE, NONE));
        assert!(satisfies(NONE, Some("x")));
        assert!(!satisfies(Some("s3cret"), NONE));
        assert!(!satisfies(Some("s3cret"), Some("s3cre")));
        assert!(!satisfies(Some("s3cret"), Some("s3cref")));
        assert!(satisfies(Some("s3cret"), Some("s3cret")));
    }

    #[test]
    fn optional_secrets_are_the_same_only_when_both_absent_or_equal() {
        const NONE: Option<&str> = None;
        assert!(same(NONE, NONE));
        assert!(!same(Some("a"), NONE));
        assert!(!same(NONE, Some("a")));
        assert!(same(Some("a"), Some("a")));
        assert!(!same(Some("a"), Some("b")));
    }
}

//! Secret checks, in one place: every comparison of a secret a caller presents (the cluster
//! secret on internal routes, the join token, the join's cluster proof, the admin token) goes
//! through [`constant_time_eq`], so its timing tells nothing about how much of a guess matched.

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

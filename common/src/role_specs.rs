//! The roles hivemind knows, what each performs, requires and needs to bootstrap (seed 002's
//! three lists), and the readiness rule built on them: a member is ready only when every role
//! it requires is performed by a live member, and, until it was ready once, every role it
//! needs to bootstrap too.

/// A role's declaration: the roles it performs, requires to operate (always), and needs to
/// bootstrap (only until the member was ready once: a consumer that starts before any source
/// exists would serve an empty view as if it were the truth).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoleSpec {
    pub name: &'static str,
    pub performs: &'static [&'static str],
    pub requires: &'static [&'static str],
    pub bootstrap: &'static [&'static str],
    /// Whether it holds the host records of its keygroups (a consuming role, DESIGN.md §5):
    /// members with one answer the catalog's service queries (`member::catalog`).
    pub consumes: bool,
}

/// Every role this build can load.
pub const ROLES: &[RoleSpec] = &[
    RoleSpec {
        name: "host",
        performs: &["host"],
        requires: &["dns"],
        bootstrap: &[],
        consumes: false,
    },
    RoleSpec {
        name: "dns",
        performs: &["dns"],
        requires: &[],
        bootstrap: &["host"],
        consumes: true,
    },
    RoleSpec {
        name: "trigger",
        performs: &["trigger"],
        requires: &[],
        bootstrap: &[],
        consumes: true,
    },
    RoleSpec {
        name: "nginx",
        performs: &["nginx"],
        requires: &[],
        bootstrap: &["host"],
        consumes: true,
    },
    RoleSpec {
        name: "backup",
        performs: &["backup"],
        requires: &[],
        bootstrap: &[],
        consumes: false,
    },
];

/// Whether a member with `roles` holds host records (performs a consuming role).
pub fn consumes<'a>(roles: impl IntoIterator<Item = &'a String>) -> bool {
    roles
        .into_iter()
        .any(|r| spec(r).is_some_and(|s| s.consumes))
}

pub fn spec(name: &str) -> Option<&'static RoleSpec> {
    ROLES.iter().find(|r| r.name == name)
}

/// What a member with `roles` still waits for, given the roles live members perform and
/// whether it was ready once (`bootstrapped`): `role:<name>` per missing required role, and
/// before it was ready once `bootstrap:<name>` per missing role it needs to bootstrap; sorted,
/// without duplicates.
pub fn missing_requirements<'a>(
    roles: &[String],
    live_roles: impl IntoIterator<Item = &'a str>,
    bootstrapped: bool,
) -> Vec<String> {
    let performed: std::collections::BTreeSet<&str> = live_roles
        .into_iter()
        .flat_map(|r| spec(r).map(|s| s.performs).unwrap_or(&[]).iter().copied())
        .collect();
    let specs: Vec<&RoleSpec> = roles.iter().filter_map(|r| spec(r)).collect();
    let required = specs
        .iter()
        .flat_map(|s| s.requires.iter())
        .filter(|req| !performed.contains(*req))
        .map(|req| format!("role:{req}"));
    let to_bootstrap = specs
        .iter()
        .filter(|_| !bootstrapped)
        .flat_map(|s| s.bootstrap.iter())
        .filter(|need| !performed.contains(*need))
        .map(|need| format!("bootstrap:{need}"));
    let mut missing: Vec<String> = required.chain(to_bootstrap).collect();
    missing.sort();
    missing.dedup();
    missing
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roles(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_host_waits_for_a_live_dns_member_always() {
        for bootstrapped in [false, true] {
            assert_eq!(
                missing_requirements(&roles(&["host"]), ["host"], bootstrapped),
                ["role:dns"]
            );
            assert!(
                missing_requirements(&roles(&["host"]), ["host", "dns"], bootstrapped).is_empty()
            );
        }
    }

    #[test]
    fn dns_and_nginx_wait_for_a_host_only_to_bootstrap() {
        assert_eq!(
            missing_requirements(&roles(&["dns", "nginx"]), ["dns", "nginx"], false),
            ["bootstrap:host"]
        );
        assert!(missing_requirements(&roles(&["dns"]), ["host"], false).is_empty());
        // Once ready, a consumer stays ready when the last host goes.
        assert!(missing_requirements(&roles(&["dns"]), [], true).is_empty());
    }

    #[test]
    fn role_less_members_wait_for_nothing() {
        assert!(missing_requirements(&roles(&[]), [], false).is_empty());
    }

    #[test]
    fn every_known_role_requires_only_known_roles() {
        for role in ROLES {
            for req in role.requires.iter().chain(role.bootstrap) {
                assert!(
                    ROLES.iter().any(|r| r.performs.contains(req)),
                    "{} requires unknown {req}",
                    role.name
                );
            }
        }
    }
}

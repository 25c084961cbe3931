//! The ACL table (DESIGN.md §6e): policies (named TOML rules, checked by `common::acl` when they
//! are written) and tokens (an accessor, the hash of the secret, the policies it holds or
//! management rights). Secrets never enter the log: the CP member that receives a request draws
//! them (`member_requests.rs`), puts only [`token_hash`](hivemind_common::secret::token_hash) of it in
//! the command, and answers the secret to the one who asked.
//!
//! Rules enforced here: bootstrap happens once; a policy's rules parse; a token names only
//! existing policies; names are valid. Sans IO, like the rest of the registry.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::error::RegistryError;

/// The name of the policy anonymous requests get once ACLs are bootstrapped.
pub const ANONYMOUS: &str = "anonymous";
/// The longest description a token may carry.
pub const MAX_DESCRIPTION: usize = 256;
/// The largest policy rules text.
pub const MAX_RULES_BYTES: usize = 64 * 1024;

/// A named set of rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub name: String,
    /// TOML, as written (parsed again where it is enforced).
    pub rules: String,
    pub modify_index: u64,
}

/// A token as the registry keeps it: no secret, only its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    pub accessor: String,
    pub secret_hash: [u8; 32],
    pub policies: Vec<String>,
    /// A management token may do everything (the bootstrap token).
    pub management: bool,
    pub description: String,
    pub create_index: u64,
    /// When it stops working (ms since the Unix epoch), if it was made with a TTL.
    pub expires_at_ms: Option<u64>,
}

impl Token {
    /// Whether the token has expired at `now_ms` (wall clock).
    pub fn expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_some_and(|at| now_ms >= at)
    }
}

/// A change of the ACL table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AclOp {
    /// The first management token; refused once ACLs are bootstrapped.
    Bootstrap {
        accessor: String,
        secret_hash: [u8; 32],
    },
    /// Creates or replaces policy `name`.
    PolicySet {
        name: String,
        rules: String,
    },
    PolicyDelete {
        name: String,
    },
    TokenCreate {
        accessor: String,
        secret_hash: [u8; 32],
        policies: Vec<String>,
        description: String,
        /// Drawn from the asking CP member's clock and the TTL asked for, outside apply.
        expires_at_ms: Option<u64>,
    },
    TokenDelete {
        accessor: String,
    },
}

impl AclOp {
    /// What the op does, for the event feed: names and accessors, never a hash.
    pub fn describe(&self) -> String {
        match self {
            AclOp::Bootstrap { accessor, .. } => format!("bootstrapped by token {accessor}"),
            AclOp::PolicySet { name, .. } => format!("policy {name} set"),
            AclOp::PolicyDelete { name } => format!("policy {name} deleted"),
            AclOp::TokenCreate { accessor, .. } => format!("token {accessor} created"),
            AclOp::TokenDelete { accessor } => format!("token {accessor} deleted"),
        }
    }
}

/// Policies and tokens, and whether ACLs are on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclTable {
    /// Once true, requests without a token get only the anonymous policy.
    pub bootstrapped: bool,
    pub policies: BTreeMap<String, Policy>,
    /// By accessor.
    pub tokens: BTreeMap<String, Token>,
}

impl AclTable {
    /// Applies `op` committed at `index`; a rejected op changes nothing.
    pub fn apply(&mut self, index: u64, op: &AclOp) -> Result<(), RegistryError> {
        match op {
            AclOp::Bootstrap {
                accessor,
                secret_hash,
            } => {
                if self.bootstrapped {
                    return Err(RegistryError::AclBootstrapped);
                }
                self.check_new_accessor(accessor)?;
                self.bootstrapped = true;
                self.tokens.insert(
                    accessor.clone(),
                    Token {
                        accessor: accessor.clone(),
                        secret_hash: *secret_hash,
                        policies: Vec::new(),
                        management: true,
                        description: "bootstrap token (management)".into(),
                        create_index: index,
                        expires_at_ms: None,
                    },
                );
            }
            AclOp::PolicySet { name, rules } => {
                if !hivemind_common::names::is_valid_name(name) {
                    return Err(RegistryError::invalid(
                        "policy",
                        format!("{name:?} is not a valid name"),
                    ));
                }
                if rules.len() > MAX_RULES_BYTES {
                    return Err(RegistryError::invalid(
                        "rules",
                        format!("{} bytes, at most {MAX_RULES_BYTES}", rules.len()),
                    ));
                }
                hivemind_common::acl::Rules::parse(rules)
                    .map_err(|e| RegistryError::invalid("rules", e.to_string()))?;
                self.policies.insert(
                    name.clone(),
                    Policy {
                        name: name.clone(),
                        rules: rules.clone(),
                        modify_index: index,
                    },
                );
            }
            AclOp::PolicyDelete { name } => {
                if self.policies.remove(name).is_none() {
                    return Err(RegistryError::UnknownPolicy { name: name.clone() });
                }
            }
            AclOp::TokenCreate {
                accessor,
                secret_hash,
                policies,
                description,
                expires_at_ms,
            } => {
                self.check_new_accessor(accessor)?;
                if policies.is_empty() {
                    return Err(RegistryError::invalid(
                        "policies",
                        "a token needs at least one policy",
                    ));
                }
                if let Some(unknown) = policies.iter().find(|p| !self.policies.contains_key(*p)) {
                    return Err(RegistryError::UnknownPolicy {
                        name: unknown.clone(),
                    });
                }
                if description.len() > MAX_DESCRIPTION {
                    return Err(RegistryError::invalid(
                        "description",
                        format!("at most {MAX_DESCRIPTION} bytes"),
                    ));
                }
                self.tokens.insert(
                    accessor.clone(),
                    Token {
                        accessor: accessor.clone(),
                        secret_hash: *secret_hash,
                        policies: policies.clone(),
                        management: false,
                        description: description.clone(),
                        create_index: index,
                        expires_at_ms: *expires_at_ms,
                    },
                );
            }
            AclOp::TokenDelete { accessor } => {
                if self.tokens.remove(accessor).is_none() {
                    return Err(RegistryError::UnknownToken {
                        accessor: accessor.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    fn check_new_accessor(&self, accessor: &str) -> Result<(), RegistryError> {
        if !hivemind_common::secret::is_token(accessor) {
            return Err(RegistryError::invalid("accessor", "not a token id"));
        }
        if self.tokens.contains_key(accessor) {
            return Err(RegistryError::invalid("accessor", "already in use"));
        }
        Ok(())
    }

    /// The token whose secret is `secret`: hashes compared in constant time, every token
    /// looked at (no early exit on a match).
    pub fn token_by_secret(&self, secret: &str) -> Option<&Token> {
        let hash = hivemind_common::secret::token_hash(secret);
        let mut found = None;
        for token in self.tokens.values() {
            if hivemind_common::secret::constant_time_eq(&token.secret_hash, &hash) {
                found = Some(token);
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hivemind_common::secret::{new_token, token_hash};

    fn token(rng: &mut impl rand::RngCore) -> (String, String) {
        (new_token(rng), new_token(rng))
    }

    #[test]
    fn bootstrap_once_then_policies_and_tokens() {
        let mut rng = rand::thread_rng();
        let mut acl = AclTable::default();
        let (accessor, secret) = token(&mut rng);
        let bootstrap = AclOp::Bootstrap {
            accessor: accessor.clone(),
            secret_hash: token_hash(&secret),
        };
        acl.apply(1, &bootstrap).unwrap();
        assert!(acl.bootstrapped);
        assert!(acl.token_by_secret(&secret).unwrap().management);
        let (again, _) = token(&mut rng);
        let before = acl.clone();
        let err = acl
            .apply(
                2,
                &AclOp::Bootstrap {
                    accessor: again,
                    secret_hash: [0; 32],
                },
            )
            .unwrap_err();
        assert_eq!(err.code(), "acl_bootstrapped");
        assert_eq!(acl, before, "a refused op changes nothing");

        // A token may only name policies that exist.
        let (reader, reader_secret) = token(&mut rng);
        let create = AclOp::TokenCreate {
            accessor: reader.clone(),
            secret_hash: token_hash(&reader_secret),
            policies: vec!["app-read".into()],
            description: "reads app/".into(),
            expires_at_ms: None,
        };
        assert_eq!(acl.apply(3, &create).unwrap_err().code(), "unknown_policy");
        assert_eq!(acl, before);
        acl.apply(
            4,
            &AclOp::PolicySet {
                name: "app-read".into(),
                rules: "[kv]\n\"app/\" = \"read\"\n".into(),
            },
        )
        .unwrap();
        acl.apply(5, &create).unwrap();
        let found = acl.token_by_secret(&reader_secret).unwrap();
        assert_eq!(found.accessor, reader);
        assert!(!found.management);
        assert!(acl.token_by_secret(&new_token(&mut rng)).is_none());

        acl.apply(6, &AclOp::TokenDelete { accessor: reader })
            .unwrap();
        assert!(acl.token_by_secret(&reader_secret).is_none());
    }

    #[test]
    fn bad_policies_are_named_and_change_nothing() {
        let mut acl = AclTable::default();
        for (name, rules, field) in [
            ("p", "[kv]\n\"a/\" = \"sudo\"\n", "rules"),
            ("p", "cluster = \"read\"\n", "rules"),
            ("p", "not toml [", "rules"),
            ("bad name", "cp = \"read\"\n", "policy"),
        ] {
            let err = acl
                .apply(
                    1,
                    &AclOp::PolicySet {
                        name: name.into(),
                        rules: rules.into(),
                    },
                )
                .unwrap_err();
            assert!(err.to_string().contains(field), "{err}");
            assert_eq!(acl, AclTable::default());
        }
        let err = acl
            .apply(
                1,
                &AclOp::PolicyDelete {
                    name: "nope".into(),
                },
            )
            .unwrap_err();
        assert_eq!(err.code(), "unknown_policy");
        let err = acl
            .apply(
                1,
                &AclOp::TokenDelete {
                    accessor: "nope".into(),
                },
            )
            .unwrap_err();
        assert_eq!(err.code(), "unknown_token");
    }
}

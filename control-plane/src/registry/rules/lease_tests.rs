//! Tests of the one rule that needs an entry's term: a lease expiry stands only in an entry of
//! the term whose leader decided it (`Registry::apply_entry`).

use crate::registry::*;

/// A registry with lease 1 (TTL 3 s) and the key `job/owner` on it.
fn leased() -> Registry {
    let mut reg = Registry::default();
    let granted = reg.apply_entry(5, 1, &Command::LeaseGrant { ttl_ms: 3_000 });
    assert!(matches!(
        granted,
        Ok(CommandOutput::LeaseGranted { id: 1, .. })
    ));
    let put = Command::Txn(Txn {
        compare: vec![],
        success: vec![TxnOp::Put {
            key: "job/owner".into(),
            value: b"me".to_vec(),
            lease: Some(1),
        }],
        failure: vec![],
    });
    reg.apply_entry(5, 2, &put).unwrap();
    reg
}

#[test]
fn an_expiry_decided_in_another_term_changes_nothing() {
    let mut reg = leased();
    let before = reg.clone();
    // Decided by the leader of term 5, committed in an entry of term 6 (forwarded to, or
    // proposed through, the next leader): rejected, the key stays.
    let stale = reg.apply_entry(6, 3, &Command::LeaseExpire { id: 1, term: 5 });
    assert_eq!(
        stale,
        Err(RegistryError::StaleExpiry {
            id: 1,
            decided: 5,
            entry: 6
        })
    );
    assert_eq!(reg, before);
    assert!(reg.kv().get("job/owner").is_some());
}

#[test]
fn an_expiry_in_its_own_terms_entry_ends_the_lease_and_its_keys() {
    let mut reg = leased();
    let ended = reg.apply_entry(6, 3, &Command::LeaseExpire { id: 1, term: 6 });
    assert_eq!(ended, Ok(CommandOutput::LeaseEnded { keys: 1 }));
    assert!(reg.kv().get("job/owner").is_none());
    // A revoke carries no decision of a leader: any entry's term will do.
    let mut reg = leased();
    let revoked = reg.apply_entry(9, 3, &Command::LeaseRevoke { id: 1 });
    assert_eq!(revoked, Ok(CommandOutput::LeaseEnded { keys: 1 }));
}

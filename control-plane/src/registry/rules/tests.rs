//! Unit and property tests of every registry rule.

use hivemind_common::MemberId;
use proptest::prelude::*;

use crate::registry::*;

fn id(n: u64) -> MemberId {
    MemberId::new(n).unwrap()
}

fn member(n: u64, name: &str, node: &str, generation: u64) -> MemberInfo {
    MemberInfo {
        id: id(n),
        name: name.to_string(),
        node: node.to_string(),
        roles: vec!["host".to_string()],
        http_addr: format!("127.0.0.1:{}", 7000 + n),
        gossip_addr: format!("127.0.0.1:{}", 8000 + n),
        generation,
        control_plane: false,
    }
}

fn join(m: MemberInfo) -> Command {
    Command::Join {
        member: m,
        epoch: None,
    }
}

/// Applies and asserts that a rejection left the registry exactly as it was.
fn apply(reg: &mut Registry, index: u64, cmd: Command) -> Result<CommandOutput, RegistryError> {
    let before = reg.clone();
    let out = reg.apply(index, &cmd);
    if out.is_err() {
        assert_eq!(*reg, before, "rejected {cmd:?} changed the registry");
    }
    out
}

fn kinds(reg: &Registry) -> Vec<&'static str> {
    reg.events().iter().map(|e| e.kind.name()).collect()
}

#[test]
fn join_admits_member_and_adds_it_to_its_node() {
    let mut reg = Registry::default();
    let out = apply(&mut reg, 3, join(member(1, "web-1", "web", 1))).unwrap();
    assert_eq!(out, CommandOutput::Joined { epoch: 1, index: 3 });
    assert_eq!(reg.member(id(1)).unwrap().state, MemberState::Alive);
    let node = &reg.nodes()["web"];
    assert_eq!(node.version, 1);
    assert!(node.machines.contains(&id(1)));
    assert_eq!(kinds(&reg), ["member_joined", "node_config_updated"]);
    assert!(reg.events().iter().all(|e| e.index == 3 && e.epoch == 1));
}

#[test]
fn join_with_stale_epoch_is_rejected() {
    let mut reg = Registry::default();
    let err = apply(
        &mut reg,
        1,
        Command::Join {
            member: member(1, "a", "a", 1),
            epoch: Some(7),
        },
    )
    .unwrap_err();
    assert_eq!(
        err,
        RegistryError::StaleEpoch {
            current: 1,
            given: 7
        }
    );
    assert_eq!(err.code(), "stale_epoch");
    // The current epoch is accepted.
    let ok = Command::Join {
        member: member(1, "a", "a", 1),
        epoch: Some(1),
    };
    apply(&mut reg, 2, ok).unwrap();
}

#[test]
fn join_with_a_name_held_by_another_live_member_is_rejected() {
    let mut reg = Registry::default();
    apply(&mut reg, 1, join(member(1, "web-1", "web", 1))).unwrap();
    let err = apply(&mut reg, 2, join(member(2, "web-1", "other", 1))).unwrap_err();
    assert_eq!(err.code(), "name_taken");
}

#[test]
fn the_name_of_a_failed_or_left_member_can_be_reused() {
    let mut reg = Registry::default();
    apply(&mut reg, 1, join(member(1, "web-1", "web", 1))).unwrap();
    apply(
        &mut reg,
        2,
        Command::Fail {
            id: id(1),
            generation: 1,
        },
    )
    .unwrap();
    apply(&mut reg, 3, join(member(2, "web-1", "web", 1))).unwrap();
    apply(&mut reg, 4, Command::Leave { id: id(2) }).unwrap();
    apply(&mut reg, 5, join(member(3, "web-1", "web", 1))).unwrap();
}

#[test]
fn rejoin_needs_a_generation_at_least_the_recorded_one() {
    let mut reg = Registry::default();
    apply(&mut reg, 1, join(member(1, "a", "a", 5))).unwrap();
    apply(
        &mut reg,
        2,
        Command::Fail {
            id: id(1),
            generation: 5,
        },
    )
    .unwrap();
    let err = apply(&mut reg, 3, join(member(1, "a", "a", 4))).unwrap_err();
    assert_eq!(err.code(), "stale_generation");
    apply(&mut reg, 4, join(member(1, "a", "a", 6))).unwrap();
    let record = reg.member(id(1)).unwrap();
    assert_eq!(
        (record.state, record.info.generation),
        (MemberState::Alive, 6)
    );
}

#[test]
fn a_retried_join_that_already_committed_is_idempotent() {
    let mut reg = Registry::default();
    apply(&mut reg, 1, join(member(1, "a", "a", 1))).unwrap();
    let events = reg.events().len();
    let out = apply(&mut reg, 2, join(member(1, "a", "a", 1))).unwrap();
    assert_eq!(out, CommandOutput::Joined { epoch: 1, index: 1 });
    assert_eq!(reg.events().len(), events, "no new events");
    assert_eq!(reg.nodes()["a"].version, 1);
}

#[test]
fn a_member_that_moves_node_leaves_its_old_node_config() {
    let mut reg = Registry::default();
    apply(&mut reg, 1, join(member(1, "a", "n1", 1))).unwrap();
    apply(&mut reg, 2, join(member(1, "a", "n2", 2))).unwrap();
    assert!(reg.nodes()["n1"].machines.is_empty());
    assert_eq!(reg.nodes()["n1"].version, 2);
    assert!(reg.nodes()["n2"].machines.contains(&id(1)));
}

#[test]
fn join_validates_names_and_addresses() {
    let mut reg = Registry::default();
    let mut bad_name = member(1, "a", "a", 1);
    bad_name.name = "bad name".into();
    let mut bad_node = member(1, "a", "a", 1);
    bad_node.node = "".into();
    let mut bad_role = member(1, "a", "a", 1);
    bad_role.roles = vec!["-x".into()];
    let mut bad_addr = member(1, "a", "a", 1);
    bad_addr.http_addr = "localhost".into();
    for m in [bad_name, bad_node, bad_role, bad_addr] {
        assert_eq!(apply(&mut reg, 1, join(m)).unwrap_err().code(), "invalid");
    }
    assert!(reg.members().is_empty());
}

#[test]
fn leave_marks_left_and_drops_the_machine_from_its_node() {
    let mut reg = Registry::default();
    apply(&mut reg, 1, join(member(1, "a", "n", 1))).unwrap();
    assert_eq!(
        apply(&mut reg, 2, Command::Leave { id: id(1) }).unwrap(),
        CommandOutput::Left { changed: true }
    );
    assert_eq!(reg.member(id(1)).unwrap().state, MemberState::Left);
    assert!(reg.nodes()["n"].machines.is_empty());
    assert_eq!(reg.nodes()["n"].version, 2);
    let events = reg.events().len();
    assert_eq!(
        apply(&mut reg, 3, Command::Leave { id: id(1) }).unwrap(),
        CommandOutput::Left { changed: false }
    );
    assert_eq!(reg.events().len(), events);
    assert_eq!(
        apply(&mut reg, 4, Command::Leave { id: id(9) })
            .unwrap_err()
            .code(),
        "unknown_member"
    );
}

#[test]
fn fail_commits_once_per_generation() {
    let mut reg = Registry::default();
    apply(&mut reg, 1, join(member(1, "a", "n", 3))).unwrap();
    // A report about an older incarnation changes nothing.
    assert_eq!(
        apply(
            &mut reg,
            2,
            Command::Fail {
                id: id(1),
                generation: 2
            }
        )
        .unwrap(),
        CommandOutput::Failed { changed: false }
    );
    assert_eq!(
        apply(
            &mut reg,
            3,
            Command::Fail {
                id: id(1),
                generation: 3
            }
        )
        .unwrap(),
        CommandOutput::Failed { changed: true }
    );
    assert_eq!(
        apply(
            &mut reg,
            4,
            Command::Fail {
                id: id(1),
                generation: 3
            }
        )
        .unwrap(),
        CommandOutput::Failed { changed: false }
    );
    let failed = kinds(&reg)
        .iter()
        .filter(|k| **k == "member_failed")
        .count();
    assert_eq!(failed, 1);
    assert!(reg.nodes()["n"].machines.is_empty());
    assert_eq!(
        apply(
            &mut reg,
            5,
            Command::Fail {
                id: id(9),
                generation: 1
            }
        )
        .unwrap_err()
        .code(),
        "unknown_member"
    );
}

#[test]
fn update_address_rules() {
    let mut reg = Registry::default();
    apply(&mut reg, 1, join(member(1, "a", "n", 2))).unwrap();
    let update = |generation: u64, http: &str| Command::UpdateAddress {
        id: id(1),
        generation,
        http_addr: http.to_string(),
        gossip_addr: "10.0.0.2:7701".to_string(),
    };
    assert_eq!(
        apply(&mut reg, 2, update(1, "10.0.0.2:7700"))
            .unwrap_err()
            .code(),
        "stale_generation"
    );
    assert_eq!(
        apply(&mut reg, 2, update(3, "nope")).unwrap_err().code(),
        "invalid"
    );
    apply(&mut reg, 3, update(3, "10.0.0.2:7700")).unwrap();
    let info = &reg.member(id(1)).unwrap().info;
    assert_eq!(
        (info.http_addr.as_str(), info.generation),
        ("10.0.0.2:7700", 3)
    );
    assert_eq!(kinds(&reg).last(), Some(&"member_address_changed"));
    apply(&mut reg, 4, Command::Leave { id: id(1) }).unwrap();
    assert_eq!(
        apply(&mut reg, 5, update(4, "10.0.0.3:7700"))
            .unwrap_err()
            .code(),
        "not_alive"
    );
}

fn put(key: &str, value: &[u8], cas: Option<u64>) -> Command {
    Command::KvPut {
        key: key.to_string(),
        value: value.to_vec(),
        cas,
    }
}

#[test]
fn kv_put_tracks_create_and_modify_index() {
    let mut reg = Registry::default();
    assert_eq!(
        apply(&mut reg, 4, put("a/b", b"1", None)).unwrap(),
        CommandOutput::KvWritten { modify_index: 4 }
    );
    apply(&mut reg, 9, put("a/b", b"2", None)).unwrap();
    let entry = reg.kv_get("a/b").unwrap();
    assert_eq!(
        (
            entry.create_index,
            entry.modify_index,
            entry.value.as_slice()
        ),
        (4, 9, &b"2"[..])
    );
    assert!(
        reg.events().is_empty(),
        "KV writes are not membership events"
    );
}

#[test]
fn kv_compare_and_set() {
    let mut reg = Registry::default();
    apply(&mut reg, 2, put("k", b"1", Some(0))).unwrap();
    // cas=0 means "only if absent".
    let err = apply(&mut reg, 3, put("k", b"2", Some(0))).unwrap_err();
    assert_eq!(
        err,
        RegistryError::CasFailed {
            key: "k".into(),
            expected: 0,
            actual: Some(2)
        }
    );
    assert_eq!(
        apply(&mut reg, 4, put("k", b"2", Some(3)))
            .unwrap_err()
            .code(),
        "cas_failed"
    );
    apply(&mut reg, 5, put("k", b"2", Some(2))).unwrap();
    let del = |cas| Command::KvDelete {
        key: "k".into(),
        cas,
    };
    assert_eq!(
        apply(&mut reg, 6, del(Some(2))).unwrap_err().code(),
        "cas_failed"
    );
    assert_eq!(
        apply(&mut reg, 7, del(Some(5))).unwrap(),
        CommandOutput::KvDeleted { deleted: true }
    );
    assert_eq!(
        apply(&mut reg, 8, del(None)).unwrap(),
        CommandOutput::KvDeleted { deleted: false }
    );
    assert_eq!(
        apply(&mut reg, 9, del(Some(5))).unwrap_err().code(),
        "cas_failed"
    );
}

#[test]
fn kv_rejects_bad_keys_and_oversized_values() {
    let mut reg = Registry::default();
    for key in ["", "a\nb", &"k".repeat(MAX_KEY_BYTES + 1)] {
        assert_eq!(
            apply(&mut reg, 1, put(key, b"", None)).unwrap_err().code(),
            "invalid"
        );
    }
    let big = vec![0u8; MAX_VALUE_BYTES + 1];
    assert_eq!(
        apply(&mut reg, 1, put("k", &big, None)).unwrap_err().code(),
        "invalid"
    );
    apply(&mut reg, 1, put("k", &big[..MAX_VALUE_BYTES], None)).unwrap();
}

#[test]
fn kv_prefix_lists_only_matching_keys() {
    let mut reg = Registry::default();
    for (i, k) in ["a/1", "a/2", "ab", "b"].iter().enumerate() {
        apply(&mut reg, i as u64 + 1, put(k, b"", None)).unwrap();
    }
    let keys: Vec<_> = reg.kv_prefix("a/").map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["a/1", "a/2"]);
}

#[test]
fn epoch_bump_starts_a_new_feed_and_old_readers_are_gone() {
    let mut reg = Registry::default();
    apply(&mut reg, 1, join(member(1, "a", "n", 1))).unwrap();
    assert_eq!(reg.events_after(0, Some(1), 100).unwrap().len(), 2);
    let out = apply(
        &mut reg,
        5,
        Command::EpochBump {
            reason: "operator".into(),
        },
    )
    .unwrap();
    assert_eq!(out, CommandOutput::EpochStarted { epoch: 2, index: 5 });
    assert_eq!(kinds(&reg), ["epoch_started"]);
    let gone = Err(FeedError::Gone {
        epoch: 2,
        first_index: 5,
    });
    assert_eq!(reg.events_after(1, None, 100), gone);
    assert_eq!(reg.events_after(6, Some(1), 100), gone);
    assert_eq!(reg.events_after(5, Some(2), 100).unwrap().len(), 0);
    assert_eq!(reg.events_after(4, Some(2), 100), gone);
    // Membership survives the bump; only the feed is dropped.
    assert_eq!(reg.member(id(1)).unwrap().state, MemberState::Alive);
    // A joiner that saw the old epoch must re-bootstrap.
    let stale = Command::Join {
        member: member(2, "b", "b", 1),
        epoch: Some(1),
    };
    assert_eq!(apply(&mut reg, 6, stale).unwrap_err().code(), "stale_epoch");
}

#[test]
fn events_after_pages_through_the_feed() {
    let mut reg = Registry::default();
    for n in 1..=5 {
        apply(
            &mut reg,
            n * 10,
            join(member(n, &format!("m{n}"), &format!("n{n}"), 1)),
        )
        .unwrap();
    }
    // Each join yields two events at one index; a page of 3 is widened to keep the second
    // join's pair whole, because the reader continues after the last index it saw.
    let page = reg.events_after(0, None, 3).unwrap();
    assert_eq!(
        page.iter().map(|e| e.index).collect::<Vec<_>>(),
        [10, 10, 20, 20]
    );
    let page = reg.events_after(0, None, 2).unwrap();
    assert_eq!(page.iter().map(|e| e.index).collect::<Vec<_>>(), [10, 10]);
    let rest = reg.events_after(20, None, 100).unwrap();
    assert_eq!(rest.first().unwrap().index, 30);
    assert!(reg.events_after(50, None, 100).unwrap().is_empty());
}

// ---- property tests over random command sequences ----

fn command() -> impl Strategy<Value = Command> {
    let ids = 1u64..6;
    let names = prop_oneof![Just("a"), Just("b"), Just("c"), Just("bad name")];
    let nodes = prop_oneof![Just("n1"), Just("n2")];
    let generation = 0u64..4;
    prop_oneof![
        (
            ids.clone(),
            names,
            nodes,
            generation.clone(),
            proptest::option::of(0u64..3)
        )
            .prop_map(|(n, name, node, generation, epoch)| Command::Join {
                member: member(n, name, node, generation),
                epoch
            }),
        ids.clone().prop_map(|n| Command::Leave { id: id(n) }),
        (ids.clone(), generation.clone()).prop_map(|(n, generation)| Command::Fail {
            id: id(n),
            generation
        }),
        (ids, generation, prop_oneof![Just("10.0.0.1:1"), Just("x")]).prop_map(
            |(n, generation, addr)| {
                Command::UpdateAddress {
                    id: id(n),
                    generation,
                    http_addr: addr.to_string(),
                    gossip_addr: "10.0.0.1:2".to_string(),
                }
            }
        ),
        (
            prop_oneof![Just("k1"), Just("k2"), Just("")],
            proptest::option::of(0u64..40)
        )
            .prop_map(|(k, cas)| put(k, b"v", cas)),
        (
            prop_oneof![Just("k1"), Just("k2")],
            proptest::option::of(0u64..40)
        )
            .prop_map(|(k, cas)| Command::KvDelete {
                key: k.to_string(),
                cas
            }),
        Just(Command::EpochBump {
            reason: "test".into()
        }),
        (0u64..70).prop_map(|through| Command::TrimFeed { through }),
    ]
}

proptest! {
    #[test]
    fn registry_invariants_hold_for_any_command_sequence(commands in proptest::collection::vec(command(), 1..60)) {
        let mut reg = Registry::default();
        let mut versions = std::collections::BTreeMap::new();
        for (i, cmd) in commands.iter().enumerate() {
            let index = i as u64 + 1;
            let before = reg.clone();
            if reg.apply(index, cmd).is_err() {
                prop_assert_eq!(&reg, &before, "a rejected command changed the registry");
            }
            // At most one live member per name.
            let mut live_names: Vec<_> = reg.members().values()
                .filter(|m| m.state == MemberState::Alive).map(|m| m.info.name.clone()).collect();
            let total = live_names.len();
            live_names.sort();
            live_names.dedup();
            prop_assert_eq!(live_names.len(), total);
            // A node config lists exactly its live machines.
            for (name, config) in reg.nodes() {
                let live: std::collections::BTreeSet<_> = reg.members().values()
                    .filter(|m| m.state == MemberState::Alive && &m.info.node == name)
                    .map(|m| m.info.id).collect();
                prop_assert_eq!(&config.machines, &live);
                let previous = versions.insert(name.clone(), config.version).unwrap_or(0);
                prop_assert!(config.version >= previous, "node config version went back");
            }
            // The feed is in index order and belongs to the current epoch.
            prop_assert!(reg.events().windows(2).all(|w| w[0].index <= w[1].index));
            prop_assert!(reg.events().iter().all(|e| e.epoch == reg.epoch() && e.index >= reg.feed_start_index()));
        }
    }

    #[test]
    fn replicas_applying_the_same_log_agree(commands in proptest::collection::vec(command(), 1..40)) {
        let (mut a, mut b) = (Registry::default(), Registry::default());
        for (i, cmd) in commands.iter().enumerate() {
            prop_assert_eq!(a.apply(i as u64 + 1, cmd), b.apply(i as u64 + 1, cmd));
        }
        prop_assert_eq!(a, b);
    }

    #[test]
    fn commands_round_trip_through_the_codec(cmd in command()) {
        let bytes = hivemind_common::encode(&cmd);
        prop_assert_eq!(hivemind_common::decode::<Command>(&bytes).unwrap(), cmd);
    }

    #[test]
    fn registry_round_trips_through_the_codec(commands in proptest::collection::vec(command(), 1..30)) {
        let mut reg = Registry::default();
        for (i, cmd) in commands.iter().enumerate() {
            let _ = reg.apply(i as u64 + 1, cmd);
        }
        let bytes = hivemind_common::encode(&reg);
        prop_assert_eq!(hivemind_common::decode::<Registry>(&bytes).unwrap(), reg);
    }

    #[test]
    fn garbage_never_decodes_into_a_command_by_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
        let _ = hivemind_common::decode::<Command>(&bytes);
    }
}

// ---- batches ----

#[test]
fn a_batch_applies_each_write_at_one_index_and_rejects_items_individually() {
    let mut reg = Registry::default();
    apply(&mut reg, 1, put("taken", b"x", None)).unwrap();
    let batch = Command::Batch(vec![
        put("a", b"1", None),
        put("taken", b"y", Some(0)), // CAS fails: only this item is rejected
        Command::KvDelete {
            key: "b".into(),
            cas: None,
        },
    ]);
    let CommandOutput::Batch(results) = apply(&mut reg, 7, batch).unwrap() else {
        panic!("batch output");
    };
    assert_eq!(results[0], Ok(CommandOutput::KvWritten { modify_index: 7 }));
    assert_eq!(results[1].as_ref().unwrap_err().code(), "cas_failed");
    assert_eq!(results[2], Ok(CommandOutput::KvDeleted { deleted: false }));
    assert_eq!(reg.kv_get("a").unwrap().modify_index, 7);
    assert_eq!(reg.kv_get("taken").unwrap().value, b"x");
}

#[test]
fn a_batch_with_a_repeated_key_or_a_non_kv_command_is_rejected_whole() {
    let mut reg = Registry::default();
    let repeated = Command::Batch(vec![put("k", b"1", None), put("k", b"2", None)]);
    assert_eq!(apply(&mut reg, 1, repeated).unwrap_err().code(), "invalid");
    let mixed = Command::Batch(vec![
        put("k", b"1", None),
        Command::EpochBump { reason: "x".into() },
    ]);
    assert_eq!(apply(&mut reg, 1, mixed).unwrap_err().code(), "invalid");
    let nested = Command::Batch(vec![Command::Batch(vec![put("k", b"1", None)])]);
    assert_eq!(apply(&mut reg, 1, nested).unwrap_err().code(), "invalid");
    assert_eq!(
        apply(&mut reg, 1, Command::Batch(vec![]))
            .unwrap_err()
            .code(),
        "invalid"
    );
    let too_many = Command::Batch(
        (0..=MAX_BATCH)
            .map(|i| put(&format!("k{i}"), b"", None))
            .collect(),
    );
    assert_eq!(apply(&mut reg, 1, too_many).unwrap_err().code(), "invalid");
}

proptest! {
    #[test]
    fn a_valid_batch_equals_its_items_applied_alone_at_the_same_index(
        items in proptest::collection::btree_map("[a-d]", (any::<bool>(), proptest::option::of(0u64..4)), 1..4),
        prior in proptest::collection::vec(command(), 0..10),
    ) {
        let mut base = Registry::default();
        for (i, cmd) in prior.iter().enumerate() {
            let _ = base.apply(i as u64 + 1, cmd);
        }
        let items: Vec<Command> = items
            .into_iter()
            .map(|(key, (is_put, cas))| if is_put { put(&key, b"v", cas) } else { Command::KvDelete { key, cas } })
            .collect();
        let index = 100;
        let (mut batched, mut alone) = (base.clone(), base);
        let CommandOutput::Batch(results) = batched.apply(index, &Command::Batch(items.clone())).unwrap() else {
            panic!("batch output");
        };
        let singles: Vec<_> = items.iter().map(|item| alone.apply(index, item)).collect();
        prop_assert_eq!(results, singles);
        prop_assert_eq!(batched, alone);
    }
}

#[test]
fn a_role_report_of_a_known_member_becomes_an_event_of_its_name() {
    use hivemind_common::role::RoleReport;
    let mut reg = Registry::default();
    apply(&mut reg, 1, join(member(1, "edge-1", "edge", 1))).unwrap();
    let report = RoleReport::NginxRenderFailed {
        error: "template line 3: undefined value".into(),
    };
    let stranger = Command::Report {
        member: id(9),
        report: report.clone(),
    };
    assert_eq!(
        apply(&mut reg, 2, stranger),
        Err(RegistryError::UnknownMember { id: id(9) })
    );
    let out = apply(
        &mut reg,
        3,
        Command::Report {
            member: id(1),
            report,
        },
    );
    assert_eq!(out, Ok(CommandOutput::Reported));
    assert_eq!(kinds(&reg).last(), Some(&"nginx_render_failed"));
    let view = crate::http::views::event(reg.events().last().unwrap());
    assert_eq!(view.0["name"], "edge-1");
    assert_eq!(view.0["error"], "template line 3: undefined value");
}

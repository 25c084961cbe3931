//! Unit and property tests of the naming-service rules and of responsibilities.

use hivemind_common::MemberId;
use proptest::prelude::*;

use crate::registry::*;

const KG: &str = "app/tenant/hosts";

fn id(n: u64) -> MemberId {
    MemberId::new(n).unwrap()
}

fn member(n: u64, node: &str) -> MemberInfo {
    MemberInfo {
        id: id(n),
        name: format!("m{n}"),
        node: node.to_string(),
        roles: vec!["dns".to_string()],
        http_addr: format!("127.0.0.1:{}", 7000 + n),
        gossip_addr: format!("127.0.0.1:{}", 8000 + n),
        generation: 1,
        control_plane: false,
    }
}

fn create(name: &str, creator: &str, open: bool) -> Command {
    Command::KeygroupCreate {
        name: name.to_string(),
        creator: creator.to_string(),
        ttl_secs: DEFAULT_TTL_SECS,
        open,
        secret: vec![7; SECRET_BYTES],
    }
}

fn update(by: Actor, deltas: Vec<KeygroupDelta>) -> Command {
    Command::KeygroupUpdate {
        name: KG.to_string(),
        by,
        deltas,
    }
}

fn delete(by: Actor) -> Command {
    Command::KeygroupDelete {
        name: KG.to_string(),
        by,
    }
}

fn node(n: &str) -> Actor {
    Actor::Node(n.to_string())
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

fn code(r: Result<CommandOutput, RegistryError>) -> &'static str {
    r.unwrap_err().code()
}

fn keygroup_output(version: u64, changed: bool) -> CommandOutput {
    CommandOutput::Keygroup { version, changed }
}

#[test]
fn the_creator_node_becomes_the_first_replica_at_version_1() {
    let mut reg = Registry::default();
    apply(&mut reg, 1, create(KG, "dns-a", false)).unwrap();
    let k = reg.keygroup(KG).unwrap();
    assert_eq!(k.version, 1);
    assert_eq!(k.replicas.iter().collect::<Vec<_>>(), ["dns-a"]);
    assert_eq!(k.ttl_secs, DEFAULT_TTL_SECS);
    assert_eq!(reg.events().last().unwrap().kind.name(), "keygroup_created");
    assert_eq!(
        code(apply(&mut reg, 2, create(KG, "dns-b", false))),
        "keygroup_exists"
    );
}

#[test]
fn create_validates_name_ttl_and_secret() {
    let mut reg = Registry::default();
    assert_eq!(
        code(apply(&mut reg, 1, create("only/two", "n", false))),
        "invalid"
    );
    assert_eq!(
        code(apply(&mut reg, 1, create("a/b/c d", "n", false))),
        "invalid"
    );
    let mut bad = create(KG, "n", false);
    if let Command::KeygroupCreate { ttl_secs, .. } = &mut bad {
        *ttl_secs = 0;
    }
    assert_eq!(code(apply(&mut reg, 1, bad)), "invalid");
    let mut bad = create(KG, "n", false);
    if let Command::KeygroupCreate { secret, .. } = &mut bad {
        secret.truncate(5);
    }
    assert_eq!(code(apply(&mut reg, 1, bad)), "invalid");
}

#[test]
fn seed_event_4_only_replicas_or_the_admin_modify() {
    let mut reg = Registry::default();
    apply(&mut reg, 1, create(KG, "a", false)).unwrap();
    let outsider = update(node("x"), vec![KeygroupDelta::SetTtl(30)]);
    assert_eq!(code(apply(&mut reg, 2, outsider)), "not_a_replica");
    // A closed keygroup does not let a node add itself.
    let self_add = update(node("x"), vec![KeygroupDelta::AddReplica("x".into())]);
    assert_eq!(code(apply(&mut reg, 2, self_add)), "not_a_replica");
    apply(
        &mut reg,
        3,
        update(node("a"), vec![KeygroupDelta::SetTtl(30)]),
    )
    .unwrap();
    let add_b = update(Actor::Admin, vec![KeygroupDelta::AddReplica("b".into())]);
    apply(&mut reg, 4, add_b).unwrap();
    let k = reg.keygroup(KG).unwrap();
    assert_eq!((k.ttl_secs, k.version), (30, 3));
    assert!(k.replicas.contains("b"));
}

#[test]
fn an_open_keygroup_lets_a_node_add_itself_and_nothing_more() {
    let mut reg = Registry::default();
    apply(&mut reg, 1, create(KG, "a", true)).unwrap();
    let self_add = update(node("x"), vec![KeygroupDelta::AddReplica("x".into())]);
    apply(&mut reg, 2, self_add).unwrap();
    assert!(reg.keygroup(KG).unwrap().replicas.contains("x"));
    let other = update(node("y"), vec![KeygroupDelta::AddReplica("z".into())]);
    assert_eq!(code(apply(&mut reg, 3, other)), "not_a_replica");
    let more = update(
        node("y"),
        vec![
            KeygroupDelta::AddReplica("y".into()),
            KeygroupDelta::SetTtl(9),
        ],
    );
    assert_eq!(code(apply(&mut reg, 3, more)), "not_a_replica");
}

#[test]
fn the_last_replica_is_protected_and_an_update_is_all_or_nothing() {
    let mut reg = Registry::default();
    apply(&mut reg, 1, create(KG, "a", false)).unwrap();
    let last = update(node("a"), vec![KeygroupDelta::RemoveReplica("a".into())]);
    assert_eq!(code(apply(&mut reg, 2, last)), "last_replica");
    // A valid delta next to an invalid one changes nothing.
    let mixed = update(
        node("a"),
        vec![KeygroupDelta::SetTtl(9), KeygroupDelta::SetTtl(0)],
    );
    assert_eq!(code(apply(&mut reg, 2, mixed)), "invalid");
    // Handing over: add b, remove a, in one update.
    let handover = update(
        node("a"),
        vec![
            KeygroupDelta::AddReplica("b".into()),
            KeygroupDelta::RemoveReplica("a".into()),
        ],
    );
    apply(&mut reg, 3, handover).unwrap();
    let replicas: Vec<_> = reg.keygroup(KG).unwrap().replicas.iter().collect();
    assert_eq!(replicas, ["b"]);
}

#[test]
fn a_redundant_update_keeps_the_version_and_every_change_adds_one() {
    let mut reg = Registry::default();
    apply(&mut reg, 1, create(KG, "a", false)).unwrap();
    let same = update(node("a"), vec![KeygroupDelta::AddReplica("a".into())]);
    assert_eq!(apply(&mut reg, 2, same).unwrap(), keygroup_output(1, false));
    let rotate = update(
        node("a"),
        vec![KeygroupDelta::RotateSecret(vec![9; SECRET_BYTES])],
    );
    assert_eq!(
        apply(&mut reg, 3, rotate).unwrap(),
        keygroup_output(2, true)
    );
    assert_eq!(reg.keygroup(KG).unwrap().secret, vec![9; SECRET_BYTES]);
}

#[test]
fn a_tombstone_is_irreversible_and_versioned() {
    let mut reg = Registry::default();
    apply(&mut reg, 1, create(KG, "a", false)).unwrap();
    assert_eq!(code(apply(&mut reg, 2, delete(node("x")))), "not_a_replica");
    assert_eq!(
        apply(&mut reg, 3, delete(node("a"))).unwrap(),
        keygroup_output(2, true)
    );
    let k = reg.keygroup(KG).unwrap();
    assert!(k.tombstoned && k.secret.is_empty());
    assert_eq!(reg.events().last().unwrap().kind.name(), "keygroup_deleted");
    assert_eq!(
        code(apply(&mut reg, 4, create(KG, "a", false))),
        "tombstoned"
    );
    let revive = update(Actor::Admin, vec![KeygroupDelta::SetOpen(true)]);
    assert_eq!(code(apply(&mut reg, 4, revive)), "tombstoned");
    // Deleting again is a harmless retry.
    assert_eq!(
        apply(&mut reg, 5, delete(Actor::Admin)).unwrap(),
        keygroup_output(2, false)
    );
}

fn claim(node: &str, machine: u64) -> Command {
    Command::Claim {
        node: node.into(),
        keygroup: KG.into(),
        machine: id(machine),
    }
}

/// A keygroup replicated by node "dns" with machines 1 and 2 (and 3 in node "other").
fn with_machines() -> Registry {
    let mut reg = Registry::default();
    apply(&mut reg, 1, create(KG, "dns", false)).unwrap();
    for (n, node) in [(1, "dns"), (2, "dns"), (3, "other")] {
        let join = Command::Join {
            member: member(n, node),
            epoch: None,
        };
        apply(&mut reg, 1 + n, join).unwrap();
    }
    reg
}

#[test]
fn seed_event_2_a_claim_is_granted_once_and_fenced_by_its_index() {
    let mut reg = with_machines();
    let fence = |f| CommandOutput::Claimed { fence: f };
    assert_eq!(apply(&mut reg, 10, claim("dns", 1)).unwrap(), fence(10));
    // The holder re-claiming keeps its fence; a sibling is refused while the holder lives.
    assert_eq!(apply(&mut reg, 11, claim("dns", 1)).unwrap(), fence(10));
    assert_eq!(code(apply(&mut reg, 12, claim("dns", 2))), "held");
    // Only machines of the node, only nodes that consume the keygroup.
    assert_eq!(code(apply(&mut reg, 12, claim("dns", 3))), "not_alive");
    assert_eq!(code(apply(&mut reg, 12, claim("other", 3))), "invalid");
}

#[test]
fn seed_event_1_task_a_a_failed_holder_releases_and_a_sibling_claims_with_a_new_fence() {
    let mut reg = with_machines();
    apply(&mut reg, 10, claim("dns", 1)).unwrap();
    let fail = Command::Fail {
        id: id(1),
        generation: 1,
    };
    apply(&mut reg, 11, fail).unwrap();
    assert!(reg
        .events()
        .iter()
        .any(|e| e.index == 11 && e.kind.name() == "responsibility_released"));
    assert_eq!(reg.responsibilities().count(), 0);
    assert_eq!(
        apply(&mut reg, 12, claim("dns", 2)).unwrap(),
        CommandOutput::Claimed { fence: 12 }
    );
}

#[test]
fn seed_event_4_release_by_a_non_holder_changes_nothing_and_delete_releases_everything() {
    let mut reg = with_machines();
    apply(&mut reg, 10, claim("dns", 1)).unwrap();
    let by_other = Command::Release {
        node: "dns".into(),
        keygroup: KG.into(),
        machine: id(2),
    };
    assert_eq!(
        apply(&mut reg, 11, by_other).unwrap(),
        CommandOutput::Released { changed: false }
    );
    apply(&mut reg, 12, delete(Actor::Admin)).unwrap();
    assert_eq!(reg.responsibilities().count(), 0);
    assert_eq!(code(apply(&mut reg, 13, claim("dns", 1))), "tombstoned");
}

#[test]
fn seed_event_8_task_c_a_node_that_stops_replicating_gives_up_its_responsibility() {
    let mut reg = with_machines();
    let add = update(
        Actor::Admin,
        vec![KeygroupDelta::AddReplica("other".into())],
    );
    apply(&mut reg, 10, add).unwrap();
    apply(&mut reg, 11, claim("other", 3)).unwrap();
    let remove = update(
        Actor::Admin,
        vec![KeygroupDelta::RemoveReplica("other".into())],
    );
    apply(&mut reg, 12, remove).unwrap();
    assert!(reg.responsibilities().all(|r| r.node != "other"));
}

fn command() -> impl Strategy<Value = Command> {
    let machine = 1u64..7;
    let nodes = prop_oneof![Just("n1"), Just("n2"), Just("n3")];
    prop_oneof![
        (machine.clone(), nodes.clone(), 1u64..4).prop_map(|(m, n, g)| Command::Join {
            member: MemberInfo {
                generation: g,
                ..member(m, n)
            },
            epoch: None,
        }),
        (machine.clone(), 1u64..4).prop_map(|(m, g)| Command::Fail {
            id: id(m),
            generation: g
        }),
        machine.clone().prop_map(|m| Command::Leave { id: id(m) }),
        (nodes.clone(), machine.clone()).prop_map(|(n, m)| claim(n, m)),
        (nodes.clone(), machine).prop_map(|(n, m)| Command::Release {
            node: n.into(),
            keygroup: KG.into(),
            machine: id(m),
        }),
        nodes
            .clone()
            .prop_map(|n| update(Actor::Admin, vec![KeygroupDelta::AddReplica(n.into())])),
        nodes.prop_map(|n| update(Actor::Admin, vec![KeygroupDelta::RemoveReplica(n.into())])),
        Just(update(
            Actor::Admin,
            vec![KeygroupDelta::RotateSecret(vec![3; SECRET_BYTES])]
        )),
    ]
}

proptest! {
    /// Over random interleavings of joins, failures, leaves, claims, releases and config
    /// updates: after every command each (node, keygroup) has at most one holder, every holder
    /// is a live machine of its node and that node consumes the keygroup, versions only grow,
    /// and a rejected command changes nothing (checked by `apply`). At the end, every replica
    /// node with a live machine can be given a holder.
    #[test]
    fn responsibilities_stay_single_live_and_consistent(
        commands in proptest::collection::vec(command(), 1..60),
    ) {
        let mut reg = Registry::default();
        apply(&mut reg, 1, create(KG, "n1", false)).unwrap();
        let mut version = 1;
        for (i, command) in commands.into_iter().enumerate() {
            let _ = apply(&mut reg, i as u64 + 2, command);
            let mut seen = std::collections::BTreeSet::new();
            for r in reg.responsibilities() {
                prop_assert!(seen.insert((r.node.clone(), r.keygroup.clone())));
                let m = reg.member(r.machine).expect("holder is a member");
                prop_assert_eq!(m.state, MemberState::Alive);
                prop_assert_eq!(&m.info.node, &r.node);
                prop_assert!(reg.keygroup(KG).unwrap().is_member(&r.node));
            }
            let now = reg.keygroup(KG).unwrap().version;
            prop_assert!(now >= version);
            version = now;
        }
        let nodes: Vec<String> = reg.keygroup(KG).unwrap().replicas.iter().cloned().collect();
        for node in nodes {
            let live = reg
                .members()
                .values()
                .find(|m| m.state == MemberState::Alive && m.info.node == node)
                .map(|m| m.info.id);
            let held = reg.responsibilities().any(|r| r.node == node);
            if let (Some(machine), false) = (live, held) {
                let claim = Command::Claim { node: node.clone(), keygroup: KG.into(), machine };
                prop_assert!(apply(&mut reg, 1000, claim).is_ok());
            }
        }
    }
}

#[test]
fn the_admin_and_member_nodes_see_a_secret_nobody_else_does() {
    let mut reg = Registry::default();
    apply(&mut reg, 1, create(KG, "a", false)).unwrap();
    let add = vec![KeygroupDelta::AddTrigger("t".into())];
    apply(&mut reg, 2, update(node("a"), add)).unwrap();
    let k = &reg.keygroups()[KG];
    assert!(k.may_see_secret(&Actor::Admin));
    assert!(k.may_see_secret(&node("a")), "a replica");
    assert!(k.may_see_secret(&node("t")), "a trigger node");
    assert!(!k.may_see_secret(&node("x")));
    assert_eq!(new_secret().len(), SECRET_BYTES);
    assert_ne!(new_secret(), new_secret());
}

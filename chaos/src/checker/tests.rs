//! Hand-made histories that are and are not linearizable, and generated ones that are.

use proptest::prelude::*;

use super::*;

fn ev(client: usize, op: Op, outcome: Outcome, invoked: u64, completed: u64) -> Event {
    Event {
        client,
        key: "k".into(),
        op,
        invoked_ns: invoked,
        completed_ns: completed,
        outcome,
    }
}

fn w(v: &str) -> Op {
    Op::Write(v.into())
}

fn r(v: Option<&str>) -> Outcome {
    Outcome::Read(v.map(str::to_string))
}

fn cas(expect: &str, new: &str) -> Op {
    Op::Cas {
        expect: expect.into(),
        new: new.into(),
    }
}

#[test]
fn sequential_writes_and_reads_are_linearizable() {
    let h = [
        ev(0, Op::Read, r(None), 0, 1),
        ev(0, w("a"), Outcome::Done, 2, 3),
        ev(1, Op::Read, r(Some("a")), 4, 5),
        ev(1, cas("a", "b"), Outcome::Done, 6, 7),
        ev(0, cas("a", "c"), Outcome::CasRefused, 8, 9),
        ev(0, Op::Delete, Outcome::Deleted(true), 10, 11),
        ev(1, Op::Delete, Outcome::Deleted(false), 12, 13),
        ev(1, Op::Read, r(None), 14, 15),
    ];
    assert!(linearizable(&h));
    assert!(check(&h).is_empty());
}

/// Issue 16's violation: a write acknowledged, then a read that began later saw the value
/// before it.
#[test]
fn a_stale_read_after_an_acknowledged_write_is_a_violation() {
    let h = [
        ev(0, w("old"), Outcome::Done, 0, 1),
        ev(0, w("new"), Outcome::Done, 2, 3),
        ev(1, Op::Read, r(Some("old")), 4, 5),
    ];
    let found = check(&h);
    assert_eq!(found.len(), 1);
    let v = &found[0];
    assert_eq!(v.stuck_at.op, Op::Read);
    // Nothing can be dropped: the two writes and the stale read are the evidence.
    assert_eq!(v.minimal.len(), 3);
    assert!(v.to_string().contains("not linearizable"));
}

#[test]
fn a_read_concurrent_with_a_write_may_see_either_value() {
    for seen in ["old", "new"] {
        let h = [
            ev(0, w("old"), Outcome::Done, 0, 1),
            ev(0, w("new"), Outcome::Done, 2, 10),
            ev(1, Op::Read, r(Some(seen)), 3, 5),
        ];
        assert!(linearizable(&h), "{seen}");
    }
}

#[test]
fn reads_must_not_go_back_in_time() {
    // Two reads during one long write: new then old is impossible.
    let h = [
        ev(0, w("old"), Outcome::Done, 0, 1),
        ev(0, w("new"), Outcome::Done, 2, 20),
        ev(1, Op::Read, r(Some("new")), 3, 5),
        ev(1, Op::Read, r(Some("old")), 6, 8),
    ];
    assert!(!linearizable(&h));
}

#[test]
fn an_unknown_write_may_take_effect_later_or_never_but_not_both() {
    let unknown = ev(0, w("x"), Outcome::Unknown, 0, 1);
    let later = |v: Option<&str>, t| ev(1, Op::Read, r(v), t, t + 1);
    assert!(linearizable(&[unknown.clone(), later(None, 5)]));
    assert!(linearizable(&[unknown.clone(), later(Some("x"), 5)]));
    // Seen long after it timed out, then gone again with nothing else written: impossible.
    assert!(linearizable(&[
        unknown.clone(),
        later(None, 5),
        later(Some("x"), 10)
    ]));
    assert!(!linearizable(&[
        unknown,
        later(Some("x"), 5),
        later(None, 10)
    ]));
}

#[test]
fn a_failed_operation_never_took_effect() {
    let h = [
        ev(0, w("x"), Outcome::Fail, 0, 1),
        ev(1, Op::Read, r(Some("x")), 5, 6),
    ];
    assert_eq!(check(&h).len(), 1);
}

#[test]
fn cas_outcomes_must_match_the_register() {
    let base = ev(0, w("a"), Outcome::Done, 0, 1);
    assert!(!linearizable(&[
        base.clone(),
        ev(1, cas("a", "b"), Outcome::CasRefused, 2, 3)
    ]));
    assert!(!linearizable(&[
        base.clone(),
        ev(1, cas("z", "b"), Outcome::Done, 2, 3)
    ]));
    assert!(linearizable(&[
        base.clone(),
        ev(1, cas("a", "b"), Outcome::Unknown, 2, 3),
        ev(2, Op::Read, r(Some("b")), 9, 10)
    ]));
    assert!(!linearizable(&[
        base,
        ev(1, cas("z", "b"), Outcome::Unknown, 2, 3),
        ev(2, Op::Read, r(Some("b")), 9, 10)
    ]));
}

#[test]
fn deletes_report_whether_the_key_existed() {
    assert!(!linearizable(&[ev(
        0,
        Op::Delete,
        Outcome::Deleted(true),
        0,
        1
    )]));
    assert!(!linearizable(&[
        ev(0, w("a"), Outcome::Done, 0, 1),
        ev(0, Op::Delete, Outcome::Deleted(false), 2, 3)
    ]));
}

#[test]
fn the_minimal_sub_history_drops_reads_that_do_not_matter() {
    let mut h = vec![ev(0, w("old"), Outcome::Done, 0, 1)];
    for t in 0..20 {
        h.push(ev(2, Op::Read, r(Some("old")), 2 + t * 2, 3 + t * 2));
    }
    h.push(ev(0, w("new"), Outcome::Done, 100, 101));
    h.push(ev(1, Op::Read, r(Some("old")), 102, 103));
    let v = &check(&h)[0];
    assert_eq!(
        v.minimal,
        vec![
            ev(0, w("old"), Outcome::Done, 0, 1),
            ev(0, w("new"), Outcome::Done, 100, 101),
            ev(1, Op::Read, r(Some("old")), 102, 103)
        ]
    );
}

/// A history made by running operations on a real register at linearization points drawn
/// inside each operation's interval: linearizable by construction.
fn generated(spec: &[(u8, u64, u64, u64, bool)], corrupt_read: Option<usize>) -> Vec<Event> {
    let mut ops: Vec<(u64, usize, Op, u64, u64, bool)> = Vec::new();
    for (i, &(kind, start, len, at, unknown)) in spec.iter().enumerate() {
        let op = match kind % 4 {
            0 => Op::Read,
            1 => Op::Write(format!("v{i}")),
            2 => Op::Cas {
                expect: format!("v{}", (i / 2) * 2 + 1),
                new: format!("v{i}"),
            },
            _ => Op::Delete,
        };
        let point = start + at % (len + 1);
        ops.push((point, i, op, start, start + len, unknown));
    }
    ops.sort_by_key(|o| (o.0, o.1));
    let mut state: Option<String> = None;
    let mut events = Vec::new();
    for (_, i, op, invoked, completed, unknown) in ops {
        let mut outcome = match &op {
            Op::Read => Outcome::Read(state.clone()),
            Op::Write(v) => {
                state = Some(v.clone());
                Outcome::Done
            }
            Op::Cas { expect, new } => {
                if state.as_ref() == Some(expect) {
                    state = Some(new.clone());
                    Outcome::Done
                } else {
                    Outcome::CasRefused
                }
            }
            Op::Delete => Outcome::Deleted(state.take().is_some()),
        };
        if unknown && op != Op::Read && outcome != Outcome::CasRefused {
            outcome = Outcome::Unknown;
        }
        if corrupt_read == Some(i) && op == Op::Read {
            outcome = Outcome::Read(Some("never-written".into()));
        }
        events.push(ev(i % 5, op, outcome, invoked, completed));
    }
    events
}

fn spec() -> impl Strategy<Value = Vec<(u8, u64, u64, u64, bool)>> {
    proptest::collection::vec(
        (
            0u8..4,
            0u64..400,
            0u64..40,
            0u64..1000,
            proptest::bool::weighted(0.1),
        ),
        1..60,
    )
}

proptest! {
    #[test]
    fn histories_of_a_real_register_are_linearizable(spec in spec()) {
        let h = generated(&spec, None);
        prop_assert!(check(&h).is_empty(), "{:?}", check(&h));
    }
}

proptest! {
    // Each case shrinks its violation (a search per operation): fewer cases.
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn a_read_of_a_value_never_written_is_caught(spec in spec(), which in 0usize..60) {
        let which = which % spec.len();
        prop_assume!(spec[which].0 % 4 == 0);
        let h = generated(&spec, Some(which));
        let found = check(&h);
        prop_assert_eq!(found.len(), 1);
        prop_assert!(!linearizable(&found[0].minimal));
    }
}

#[test]
fn a_long_history_with_many_concurrent_clients_checks_quickly() {
    let spec: Vec<_> = (0..3000u64)
        .map(|i| ((i % 4) as u8, i * 3, 10 + (i * 7) % 25, i * 13, i % 17 == 0))
        .collect();
    let started = std::time::Instant::now();
    assert!(check(&generated(&spec, None)).is_empty());
    // Generous: about 30 ms here; the bound only catches an exponential search.
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
}

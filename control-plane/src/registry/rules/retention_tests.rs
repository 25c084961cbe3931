//! Tests of the feed's retention: where the leader trims (`Registry::retention_trim_point`)
//! and what `TrimFeed` does to readers.

use proptest::prelude::*;

use crate::registry::*;

fn trim(through: u64) -> Command {
    Command::TrimFeed { through }
}

/// A join of member `n` into a node of its own: two events (`MemberJoined`,
/// `NodeConfigUpdated`) at the command's index.
fn join(n: u64) -> Command {
    Command::Join {
        member: MemberInfo {
            id: hivemind_common::MemberId::new(n).unwrap(),
            name: format!("m{n}"),
            node: format!("n{n}"),
            roles: vec![],
            http_addr: format!("127.0.0.1:{}", 7000 + n),
            gossip_addr: format!("127.0.0.1:{}", 8000 + n),
            generation: 1,
            control_plane: false,
        },
        epoch: None,
    }
}

/// A registry whose feed holds the two events of one join at each of `indexes`.
fn with_joins(indexes: impl IntoIterator<Item = u64>) -> Registry {
    let mut reg = Registry::default();
    for index in indexes {
        reg.apply(index, &join(index)).unwrap();
    }
    reg
}

fn indexes(events: &[Event]) -> Vec<u64> {
    events.iter().map(|e| e.index).collect()
}

#[test]
fn a_trim_keeps_the_epoch_and_only_readers_behind_it_are_gone() {
    let mut reg = with_joins(1..=10);
    let out = reg.apply(11, &trim(6)).unwrap();
    assert_eq!(
        out,
        CommandOutput::FeedTrimmed {
            feed_start_index: 6,
            dropped: 12
        }
    );
    assert_eq!(reg.epoch(), 1);
    assert_eq!(reg.feed_start_index(), 6);
    // A caught-up reader, and one at the trim point, go on reading.
    assert!(reg.events_after(10, Some(1), 100).unwrap().is_empty());
    let from_start = indexes(reg.events_after(6, Some(1), 100).unwrap());
    assert_eq!(from_start, [7, 7, 8, 8, 9, 9, 10, 10]);
    // One behind it re-bootstraps, told where the feed starts now.
    let gone = Err(FeedError::Gone {
        epoch: 1,
        first_index: 6,
    });
    assert_eq!(reg.events_after(5, Some(1), 100), gone);
    assert_eq!(reg.events_after(0, None, 100), gone);
}

#[test]
fn a_trim_never_moves_the_start_back_nor_past_its_own_index() {
    let mut reg = with_joins(1..=10);
    reg.apply(11, &trim(6)).unwrap();
    let out = reg.apply(12, &trim(3)).unwrap();
    assert_eq!(
        out,
        CommandOutput::FeedTrimmed {
            feed_start_index: 6,
            dropped: 0
        }
    );
    reg.apply(13, &trim(99)).unwrap();
    assert_eq!(
        reg.feed_start_index(),
        13,
        "clamped to the trim's own index"
    );
    assert_eq!(reg.feed_len(), 0);
}

#[test]
fn the_trim_point_keeps_the_newest_half_of_the_retention_in_whole_commands() {
    let reg = with_joins(1..=10);
    assert_eq!(reg.feed_len(), 20);
    assert_eq!(reg.retention_trim_point(20), None, "within the retention");
    // Keep 8 of 20: the events of joins 7 to 10.
    assert_eq!(reg.retention_trim_point(16), Some(6));
    // Keep 9: the 9th newest is the second event of join 6, so join 6 stays whole.
    assert_eq!(reg.retention_trim_point(19), Some(5));
    // One command alone: nothing can go without splitting it.
    let reg = with_joins([4]);
    assert_eq!(reg.retention_trim_point(1), None);
}

#[derive(Debug, Clone)]
enum Step {
    Write,
    Trim(u64),
    Bump,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => Just(Step::Write),
        3 => (0u64..60).prop_map(Step::Trim),
        1 => Just(Step::Bump),
    ]
}

proptest! {
    /// Trimming loses nothing a reader is not told about: replayed without its trims, the
    /// same log gives the same events after any position the trimmed feed still answers, and
    /// positions it does not answer get `Gone`. The leader's trim point leaves at least half
    /// of the retention.
    #[test]
    fn a_trimmed_feed_answers_exactly_as_the_untrimmed_one_or_says_gone(
        steps in proptest::collection::vec(step(), 1..60),
        retention in 1usize..12,
    ) {
        let (mut trimmed, mut whole) = (Registry::default(), Registry::default());
        for (i, step) in steps.iter().enumerate() {
            let index = i as u64 + 1;
            match step {
                Step::Write => {
                    let cmd = join(index);
                    trimmed.apply(index, &cmd).unwrap();
                    whole.apply(index, &cmd).unwrap();
                }
                Step::Bump => {
                    let cmd = Command::EpochBump { reason: "test".into() };
                    trimmed.apply(index, &cmd).unwrap();
                    whole.apply(index, &cmd).unwrap();
                }
                Step::Trim(through) => {
                    trimmed.apply(index, &trim(*through)).unwrap();
                }
            }
            if let Some(through) = trimmed.retention_trim_point(retention) {
                let mut after = trimmed.clone();
                after.apply(index, &trim(through)).unwrap();
                prop_assert!(after.feed_len() >= (retention / 2).max(1));
                prop_assert!(after.feed_len() < trimmed.feed_len());
            }
            prop_assert_eq!(trimmed.epoch(), whole.epoch());
            for position in 0..=index {
                let limit = 1000;
                match trimmed.events_after(position, Some(trimmed.epoch()), limit) {
                    Ok(events) => {
                        prop_assert!(position >= trimmed.feed_start_index());
                        prop_assert_eq!(
                            events,
                            whole.events_after(position, Some(whole.epoch()), limit).unwrap()
                        );
                    }
                    Err(FeedError::Gone { first_index, .. }) => {
                        prop_assert!(position < trimmed.feed_start_index());
                        prop_assert_eq!(first_index, trimmed.feed_start_index());
                    }
                }
            }
        }
    }
}

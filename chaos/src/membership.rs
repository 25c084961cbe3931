//! The membership and claims rules the end state must satisfy (sans-IO): every acknowledged
//! join and leave is in the final registry, and the event feed never shows two holders of one
//! (node, keygroup) responsibility: a claim over a holder that is still alive in the feed's own
//! account, or a fence that does not grow, is a violation.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// A churn operation's kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChurnKind {
    Join,
    Leave,
    Claim { node: String, keygroup: String },
}

/// How a churn operation ended, as the client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChurnOutcome {
    /// Acknowledged: it is in the registry.
    Ok,
    /// Refused by the registry's rules, or never sent: surely not applied.
    Refused,
    /// Timeout, 503, reset: may have applied.
    Unknown,
}

/// One churn operation on the synthetic member `member` (its id as the API prints it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChurnOp {
    pub member: String,
    pub kind: ChurnKind,
    pub outcome: ChurnOutcome,
}

/// Problems with the acknowledged joins and leaves, given the final registry's `members` (as
/// `GET /v1/cp/snapshot` shows them: objects with `id` and `state`).
pub fn acknowledged_present(ops: &[ChurnOp], members: &[Value]) -> Vec<String> {
    let state_of: BTreeMap<&str, &str> = members
        .iter()
        .filter_map(|m| Some((m["id"].as_str()?, m["state"].as_str()?)))
        .collect();
    let mut problems = Vec::new();
    for op in ops.iter().filter(|op| op.outcome == ChurnOutcome::Ok) {
        let state = state_of.get(op.member.as_str());
        match (&op.kind, state) {
            (ChurnKind::Join, None) => problems.push(format!(
                "member {} joined (acknowledged) but is not in the registry",
                op.member
            )),
            (ChurnKind::Leave, s) if s != Some(&"left") => problems.push(format!(
                "member {} left (acknowledged) but the registry has it as {}",
                op.member,
                s.unwrap_or(&"absent")
            )),
            _ => {}
        }
    }
    problems
}

/// Problems in the event feed `events` (as `GET /v1/cp/snapshot` or `/v1/events` show them, in
/// index order): a responsibility claimed while another machine that the feed still has alive
/// holds it, or a claim whose fence is not above every earlier fence of its responsibility.
pub fn one_holder_at_a_time(events: &[Value]) -> Vec<String> {
    let mut alive: BTreeSet<String> = BTreeSet::new();
    let mut holders: BTreeMap<(String, String), String> = BTreeMap::new();
    let mut fences: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut problems = Vec::new();
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    for event in events {
        let index = event["index"].as_u64().unwrap_or(0);
        match event["kind"].as_str().unwrap_or("") {
            "member_joined" => {
                alive.insert(text(&event["member"]["id"]));
            }
            "member_left" | "member_failed" => {
                alive.remove(&text(&event["id"]));
            }
            "responsibility_claimed" => {
                let key = (text(&event["node"]), text(&event["keygroup"]));
                let machine = text(&event["machine"]);
                let fence = event["fence"].as_u64().unwrap_or(0);
                if let Some(holder) = holders.get(&key) {
                    if *holder != machine && alive.contains(holder) {
                        problems.push(format!(
                            "index {index}: {} claimed {:?} while {holder} (alive) held it",
                            machine, key
                        ));
                    }
                }
                if let Some(last) = fences.get(&key) {
                    if fence <= *last {
                        problems.push(format!(
                            "index {index}: fence {fence} for {key:?} after fence {last}"
                        ));
                    }
                }
                holders.insert(key.clone(), machine);
                fences.insert(key, fence);
            }
            "responsibility_released" => {
                let key = (text(&event["node"]), text(&event["keygroup"]));
                if holders.get(&key) == Some(&text(&event["machine"])) {
                    holders.remove(&key);
                }
            }
            _ => {}
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn joined(index: u64, id: &str) -> Value {
        json!({"index": index, "kind": "member_joined", "member": {"id": id}})
    }
    fn claimed(index: u64, machine: &str, fence: u64) -> Value {
        json!({"index": index, "kind": "responsibility_claimed", "node": "n", "keygroup": "a/b/c",
               "machine": machine, "fence": fence})
    }

    #[test]
    fn a_takeover_after_the_holder_failed_is_fine() {
        let events = [
            joined(1, "a"),
            joined(2, "b"),
            claimed(3, "a", 3),
            json!({"index": 4, "kind": "member_failed", "id": "a"}),
            claimed(5, "b", 5),
            json!({"index": 6, "kind": "responsibility_released", "node": "n", "keygroup": "a/b/c", "machine": "b"}),
            claimed(7, "a", 7),
        ];
        assert_eq!(one_holder_at_a_time(&events), Vec::<String>::new());
    }

    #[test]
    fn a_claim_over_a_live_holder_or_a_stale_fence_is_reported() {
        let events = [
            joined(1, "a"),
            joined(2, "b"),
            claimed(3, "a", 3),
            claimed(4, "b", 4),
        ];
        let problems = one_holder_at_a_time(&events);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("(alive) held it"));

        let events = [
            joined(1, "a"),
            claimed(2, "a", 2),
            json!({"index": 3, "kind": "member_left", "id": "a"}),
            joined(4, "b"),
            claimed(5, "b", 2),
        ];
        let problems = one_holder_at_a_time(&events);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("fence 2"));
    }

    #[test]
    fn acknowledged_joins_and_leaves_must_be_in_the_registry() {
        let op = |member: &str, kind, outcome| ChurnOp {
            member: member.into(),
            kind,
            outcome,
        };
        let ops = [
            op("a", ChurnKind::Join, ChurnOutcome::Ok),
            op("b", ChurnKind::Join, ChurnOutcome::Ok),
            op("b", ChurnKind::Leave, ChurnOutcome::Ok),
            op("c", ChurnKind::Join, ChurnOutcome::Unknown),
            op("d", ChurnKind::Join, ChurnOutcome::Ok),
            op("e", ChurnKind::Leave, ChurnOutcome::Ok),
        ];
        let members = [
            json!({"id": "a", "state": "failed"}),
            json!({"id": "b", "state": "left"}),
            json!({"id": "e", "state": "alive"}),
        ];
        let problems = acknowledged_present(&ops, &members);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("member d joined"));
        assert!(problems[1].contains("member e left"));
    }
}

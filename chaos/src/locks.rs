//! The lock workload (DESIGN.md §6h) beside the KV clients, and its checks.
//!
//! Each lock client takes lock `chaos` as `hivemind lock` does (a lease, a key
//! `_locks/chaos/<lease>` created only if absent, waiting until no key has a lower create index),
//! then makes fenced writes to `fenced/log`: a transaction that puts `<fence> <client> <n>` only
//! if its own lock key still exists (etcd's `IsOwner` fence), and releases by revoking its lease.
//! It keeps the lease alive every TTL/3 and believes it valid until TTL after the last
//! keep-alive it sent that was answered (or the grant); it writes only while it believes so.
//!
//! Checks (sans IO, [`check`]):
//! - mutual exclusion by fence: the applied fenced writes, in index order (read from the watch
//!   log at the end), never go back to a lower fence: no two holders' writes interleave;
//! - no early expiry: a fenced write refused (its lock key gone) that completed while its
//!   client still believed the lease valid means the lease ended before its TTL ran out.

use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::pki::Access;
use crate::workload::Recorder;

pub const LOCK_PREFIX: &str = "_locks/chaos/";
pub const FENCED_KEY: &str = "fenced/log";
/// The lock lease's TTL.
pub const TTL: Duration = Duration::from_secs(3);
/// How long a client keeps the lock, in fenced writes.
const WRITES_PER_HOLD: u64 = 5;
/// A client stops writing this long before its lease could end (clock steps, request time).
const MARGIN: Duration = Duration::from_millis(500);

/// One applied fenced write, in index order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FencedWrite {
    pub index: u64,
    pub fence: u64,
    pub client: usize,
}

/// A fenced write refused because the writer's lock key was gone, with when it completed and
/// until when the writer believed its lease valid (nanoseconds since the run started).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub client: usize,
    pub fence: u64,
    pub completed_ns: u64,
    pub valid_until_ns: u64,
}

/// What the lock clients did, for the checks.
#[derive(Debug, Default, Clone)]
pub struct LockLog {
    pub acquired: u64,
    pub writes_ok: u64,
    /// The fenced writes acknowledged, with the index they were applied at.
    pub acked: Vec<FencedWrite>,
    pub refused: Vec<Refused>,
}

/// `t` in nanoseconds since the run started, by the recorder's clock.
fn run_ns(recorder: &Recorder, t: Instant) -> u64 {
    let now = Instant::now();
    let now_ns = recorder.now_ns();
    if t >= now {
        now_ns + (t - now).as_nanos() as u64
    } else {
        now_ns.saturating_sub((now - t).as_nanos() as u64)
    }
}

/// The fenced writes to check: those the watch log still holds, and the acknowledged ones (all
/// that the log no longer holds), each once, in index order.
pub fn merged(mut from_log: Vec<FencedWrite>, acked: &[FencedWrite]) -> Vec<FencedWrite> {
    from_log.extend(acked.iter().cloned());
    from_log.sort_by_key(|w| w.index);
    from_log.dedup_by_key(|w| w.index);
    from_log
}

/// The violations of the two rules, as readable lines.
pub fn check(writes: &[FencedWrite], refused: &[Refused]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut highest: Option<&FencedWrite> = None;
    for w in writes {
        match highest {
            Some(h) if w.fence < h.fence => problems.push(format!(
                "fenced write at index {} by client {} with fence {} after client {}'s fence {} wrote at index {}: two holders interleaved",
                w.index, w.client, w.fence, h.client, h.fence, h.index
            )),
            Some(h) if w.fence == h.fence && w.client != h.client => problems.push(format!(
                "fence {} used by clients {} and {}",
                w.fence, h.client, w.client
            )),
            _ => highest = Some(w),
        }
    }
    for r in refused {
        if r.completed_ns < r.valid_until_ns {
            problems.push(format!(
                "client {}'s lease (fence {}) ended early: its lock key was gone {} ms before its TTL ran out",
                r.client,
                r.fence,
                (r.valid_until_ns - r.completed_ns) / 1_000_000
            ));
        }
    }
    problems
}

/// Parses the applied fenced writes from the watch log's events on [`FENCED_KEY`].
pub fn fenced_writes(events: &[Value]) -> Vec<FencedWrite> {
    events
        .iter()
        .filter(|e| e["kind"] == "put" && e["key"] == FENCED_KEY)
        .filter_map(|e| {
            let value = base64::engine::general_purpose::STANDARD
                .decode(e["value_base64"].as_str()?)
                .ok()?;
            let text = String::from_utf8(value).ok()?;
            let mut parts = text.split_whitespace();
            Some(FencedWrite {
                index: e["modify_index"].as_u64()?,
                fence: parts.next()?.parse().ok()?,
                client: parts.next()?.parse().ok()?,
            })
        })
        .collect()
}

struct Session<'a> {
    http: &'a reqwest::Client,
    access: &'a Access,
    members: &'a [String],
    current: usize,
}

impl Session<'_> {
    /// Sends to the current member, moving on to the next after a failure; `None` when none
    /// answered with a status.
    async fn call(
        &mut self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Option<(u16, Value)> {
        for _ in 0..self.members.len() {
            let url = self.access.url(&self.members[self.current], path);
            let mut request = self.http.request(method.clone(), url);
            if let Some(body) = &body {
                request = request.json(body);
            }
            match request.send().await {
                Ok(r) => {
                    let status = r.status().as_u16();
                    if status == 503 {
                        self.current = (self.current + 1) % self.members.len();
                        continue;
                    }
                    return Some((status, r.json().await.unwrap_or(Value::Null)));
                }
                Err(_) => self.current = (self.current + 1) % self.members.len(),
            }
        }
        None
    }
}

/// Runs one lock client until `stop`; what it saw goes into `log`.
pub async fn client(
    id: usize,
    access: Access,
    members: Vec<String>,
    recorder: Recorder,
    log: std::sync::Arc<std::sync::Mutex<LockLog>>,
    stop: CancellationToken,
) {
    let http = access.client(None, Duration::from_secs(7));
    let mut s = Session {
        http: &http,
        access: &access,
        members: &members,
        current: id % members.len(),
    };
    while !stop.is_cancelled() {
        if hold_once(id, &mut s, &recorder, &log, &stop)
            .await
            .is_none()
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// One round: take the lock, write while holding, release. `None` when a step failed.
async fn hold_once(
    id: usize,
    s: &mut Session<'_>,
    recorder: &Recorder,
    log: &std::sync::Mutex<LockLog>,
    stop: &CancellationToken,
) -> Option<()> {
    let sent = Instant::now();
    let (status, lease) = s
        .call(
            reqwest::Method::POST,
            "/v1/leases",
            Some(json!({"ttl": "3s"})),
        )
        .await?;
    if status != 200 {
        return None;
    }
    let lease_id = lease["id"].as_u64()?;
    let mut valid_until = sent + TTL;
    let key = format!("{LOCK_PREFIX}{lease_id:016x}");
    let create = json!({
        "compare": [{"key": key, "exists": false}],
        "success": [{"put": {"key": key, "value_base64": "", "lease": lease_id}}],
    });
    let (status, answer) = s
        .call(reqwest::Method::POST, "/v1/txn", Some(create))
        .await?;
    let fence = match (status, answer["succeeded"].as_bool()) {
        (200, Some(true)) => answer["results"][0]["put"]["modify_index"].as_u64()?,
        _ => return None,
    };
    // Wait for the turn: no key with a lower create index (polling, with keep-alives).
    let mut last_keep = Instant::now();
    loop {
        if stop.is_cancelled() || Instant::now() + MARGIN >= valid_until {
            return None;
        }
        if last_keep.elapsed() >= TTL / 3 {
            last_keep = Instant::now();
            let sent = Instant::now();
            match s
                .call(
                    reqwest::Method::PUT,
                    &format!("/v1/leases/{lease_id}/keepalive"),
                    None,
                )
                .await
            {
                Some((200, _)) => valid_until = sent + TTL,
                Some((404, _)) => return None,
                _ => {}
            }
        }
        let (status, keys) = s
            .call(
                reqwest::Method::GET,
                &format!("/v1/kv?prefix={LOCK_PREFIX}"),
                None,
            )
            .await?;
        if status == 200 {
            let keys = keys.as_array()?;
            if !keys.iter().any(|k| k["key"] == key.as_str()) {
                return None;
            }
            if keys
                .iter()
                .all(|k| k["create_index"].as_u64().unwrap_or(u64::MAX) >= fence)
            {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    log.lock().unwrap_or_else(|p| p.into_inner()).acquired += 1;
    for n in 0..WRITES_PER_HOLD {
        if Instant::now() + MARGIN >= valid_until {
            break;
        }
        let sent = Instant::now();
        if let Some((200, _)) = s
            .call(
                reqwest::Method::PUT,
                &format!("/v1/leases/{lease_id}/keepalive"),
                None,
            )
            .await
        {
            valid_until = sent + TTL;
        }
        if Instant::now() + MARGIN >= valid_until {
            break;
        }
        let value = base64::engine::general_purpose::STANDARD.encode(format!("{fence} {id} {n}"));
        let write = json!({
            "compare": [{"key": key, "exists": true}],
            "success": [{"put": {"key": FENCED_KEY, "value_base64": value}}],
        });
        let believed = valid_until;
        match s.call(reqwest::Method::POST, "/v1/txn", Some(write)).await {
            Some((200, answer)) if answer["succeeded"] == true => {
                let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
                log.writes_ok += 1;
                if let Some(index) = answer["results"][0]["put"]["modify_index"].as_u64() {
                    log.acked.push(FencedWrite {
                        index,
                        fence,
                        client: id,
                    });
                }
            }
            Some((200, _)) => {
                log.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .refused
                    .push(Refused {
                        client: id,
                        fence,
                        completed_ns: recorder.now_ns(),
                        valid_until_ns: run_ns(recorder, believed),
                    });
                return None;
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = s
        .call(
            reqwest::Method::DELETE,
            &format!("/v1/leases/{lease_id}"),
            None,
        )
        .await;
    Some(())
}

/// Every applied fenced write, read from the watch log through `member` at the end (an error
/// when the log was compacted past the first; then the acknowledged writes are checked).
pub async fn read_fenced(access: &Access, member: &str) -> Result<Vec<FencedWrite>, String> {
    let http = access.client(None, Duration::from_secs(10));
    let url = access.url(
        member,
        &format!("/v1/kv?prefix={FENCED_KEY}&watch=true&after=0&wait=1s"),
    );
    let page: Value = http
        .get(url)
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    let events = page["events"]
        .as_array()
        .ok_or_else(|| format!("no events in {page}"))?;
    Ok(fenced_writes(events))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(index: u64, fence: u64, client: usize) -> FencedWrite {
        FencedWrite {
            index,
            fence,
            client,
        }
    }

    #[test]
    fn holders_in_fence_order_pass_and_interleaved_ones_do_not() {
        assert!(check(&[w(1, 10, 0), w(2, 10, 0), w(5, 20, 1), w(6, 30, 2)], &[]).is_empty());
        let interleaved = check(&[w(1, 10, 0), w(2, 20, 1), w(3, 10, 0)], &[]);
        assert_eq!(interleaved.len(), 1, "{interleaved:?}");
        assert!(interleaved[0].contains("interleaved"));
        assert_eq!(
            check(&[w(1, 10, 0), w(2, 10, 1)], &[]).len(),
            1,
            "one fence, two clients"
        );
    }

    #[test]
    fn a_refusal_while_the_lease_was_believed_valid_is_early_expiry() {
        let late = Refused {
            client: 0,
            fence: 4,
            completed_ns: 5_000_000_000,
            valid_until_ns: 4_000_000_000,
        };
        assert!(
            check(&[], &[late]).is_empty(),
            "refused after the TTL ran out: fine"
        );
        let early = Refused {
            client: 0,
            fence: 4,
            completed_ns: 3_000_000_000,
            valid_until_ns: 4_000_000_000,
        };
        assert!(check(&[], &[early])[0].contains("ended early"));
    }

    #[test]
    fn fenced_writes_parse_from_watch_events() {
        let value = base64::engine::general_purpose::STANDARD.encode("17 2 0");
        let events = vec![
            json!({"kind": "put", "key": FENCED_KEY, "value_base64": value, "modify_index": 30}),
            json!({"kind": "put", "key": "other", "value_base64": value, "modify_index": 31}),
        ];
        assert_eq!(fenced_writes(&events), [w(30, 17, 2)]);
    }
}

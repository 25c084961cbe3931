//! Concurrent clients doing linearizable reads, writes, compare-and-set and deletes over a
//! small rotating key set through any member's HTTP API, recording every operation (IO).
//!
//! Each client stays with one member until an operation fails or times out there (and moves
//! on now and then anyway), as a client library does. Keys rotate every
//! [`KEY_EPOCH`] (`k<epoch>-<n>`), so every key's history stays short enough to check, and
//! every write puts a value no one wrote before (`c<client>-<n>`). A CAS replaces the value
//! the client just read, by the modify index that read returned.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_util::sync::CancellationToken;

use crate::history::{Event, Op, Outcome};
use crate::pki::Access;

/// How long one set of keys is in use.
pub const KEY_EPOCH: Duration = Duration::from_secs(5);
/// Keys in use at once.
pub const KEYS: usize = 4;
/// How long a client waits for an answer before it calls the outcome unknown (longer than the
/// members' bounded wait, so a 503 usually comes first).
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(7);

/// The client id of the reads after the last fault (not counted toward any fault).
pub const FINAL_READER: usize = usize::MAX;
/// Final reads in flight at once, and how long they may take in all: a cluster that does not
/// answer at the end costs a bounded wait, not one client timeout per key ever used.
pub const FINAL_READERS: usize = 16;
pub const FINAL_READS_WITHIN: Duration = Duration::from_secs(60);

/// The shared record of a run's operations.
#[derive(Clone)]
pub struct Recorder {
    started: Instant,
    events: Arc<Mutex<Vec<Event>>>,
}

impl Recorder {
    pub fn new(started: Instant) -> Self {
        Self {
            started,
            events: Arc::default(),
        }
    }

    pub fn now_ns(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }

    /// Records an operation that completed just now.
    fn record(&self, client: usize, key: &str, op: Op, invoked_ns: u64, outcome: Outcome) {
        let event = Event {
            client,
            key: key.to_string(),
            op,
            invoked_ns,
            completed_ns: self.now_ns(),
            outcome,
        };
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(event);
    }

    pub fn events(&self) -> Vec<Event> {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// What an HTTP exchange came to, before it is read as an outcome.
enum Answer {
    Status(u16, Vec<u8>),
    /// Connection refused: the request surely never arrived.
    Refused,
    /// Timeout, reset, or anything else after the request may have left.
    Lost,
}

async fn send(request: reqwest::RequestBuilder) -> Answer {
    match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            match response.bytes().await {
                Ok(body) => Answer::Status(status, body.to_vec()),
                Err(_) => Answer::Lost,
            }
        }
        Err(e) if e.is_connect() => Answer::Refused,
        Err(_) => Answer::Lost,
    }
}

/// The outcome of a write-like answer: 2xx as `ok`, 409 as a refused CAS, other 4xx and a
/// refused connection as surely without effect, everything else unknown.
fn write_outcome(answer: &Answer, ok: impl Fn(&[u8]) -> Outcome) -> Outcome {
    match answer {
        Answer::Status(200, body) => ok(body),
        Answer::Status(409, _) => Outcome::CasRefused,
        Answer::Status(s, _) if (400..500).contains(s) => Outcome::Fail,
        Answer::Refused => Outcome::Fail,
        _ => Outcome::Unknown,
    }
}

/// Runs one client until `stop`.
pub async fn client(
    id: usize,
    access: Access,
    members: Vec<String>,
    seed: u64,
    recorder: Recorder,
    stop: CancellationToken,
) {
    let http = access.client(None, CLIENT_TIMEOUT);
    let mut rng = StdRng::seed_from_u64(seed ^ (id as u64).wrapping_mul(0x9e37_79b9));
    let mut n = 0u64;
    let mut current = rng.gen_range(0..members.len());
    while !stop.is_cancelled() {
        let epoch = recorder.now_ns() / KEY_EPOCH.as_nanos() as u64;
        let key = format!("k{epoch}-{}", rng.gen_range(0..KEYS));
        let member = &members[current];
        let url = access.url(member, &format!("/v1/kv/{key}"));
        n += 1;
        let value = format!("c{id}-{n}");
        let roll = rng.gen_range(0..100);
        let invoked = recorder.now_ns();
        let (op, invoked, outcome) = if roll < 40 {
            let answer = send(http.get(&url)).await;
            (Op::Read, invoked, read_outcome(&answer))
        } else if roll < 75 {
            let answer = send(http.put(&url).body(value.clone())).await;
            let outcome = write_outcome(&answer, |_| Outcome::Done);
            (Op::Write(value), invoked, outcome)
        } else if roll < 90 {
            // Read with the entry's meta, then CAS on its modify index.
            let answer = send(http.get(format!("{url}?meta=true"))).await;
            match read_meta(&answer) {
                Some((expect, index)) => {
                    let seen = Outcome::Read(Some(expect.clone()));
                    recorder.record(id, &key, Op::Read, invoked, seen);
                    let invoked = recorder.now_ns();
                    let cas = http.put(format!("{url}?cas={index}")).body(value.clone());
                    let outcome = write_outcome(&send(cas).await, |_| Outcome::Done);
                    (Op::Cas { expect, new: value }, invoked, outcome)
                }
                // Nothing to replace: the read is the operation.
                None => {
                    let outcome = match answer {
                        Answer::Status(404, _) => Outcome::Read(None),
                        _ => Outcome::Unknown,
                    };
                    (Op::Read, invoked, outcome)
                }
            }
        } else {
            let answer = send(http.delete(&url)).await;
            let deleted = |body: &[u8]| {
                let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
                match v["deleted"].as_bool() {
                    Some(d) => Outcome::Deleted(d),
                    None => Outcome::Unknown,
                }
            };
            (Op::Delete, invoked, write_outcome(&answer, deleted))
        };
        let pause = matches!(outcome, Outcome::Fail | Outcome::Unknown);
        recorder.record(id, &key, op, invoked, outcome);
        if pause || rng.gen_range(0..100) < 5 {
            // Like a client library: another member after a failure (and now and then anyway,
            // to spread the load); a short pause so as not to hammer a member that is down.
            current = (current + rng.gen_range(1..members.len())) % members.len();
            if pause {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// A plain read: 200 with the value, 404 for none, anything else unknown (and dropped).
fn read_outcome(answer: &Answer) -> Outcome {
    match answer {
        Answer::Status(200, body) => {
            Outcome::Read(Some(String::from_utf8_lossy(body).into_owned()))
        }
        Answer::Status(404, _) => Outcome::Read(None),
        _ => Outcome::Unknown,
    }
}

/// A `?meta=true` read: the value and its modify index.
fn read_meta(answer: &Answer) -> Option<(String, u64)> {
    let Answer::Status(200, body) = answer else {
        return None;
    };
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let value = base64::engine::general_purpose::STANDARD
        .decode(v["value_base64"].as_str()?)
        .ok()?;
    Some((String::from_utf8(value).ok()?, v["modify_index"].as_u64()?))
}

/// Reads every key the run used once more through `member`, after the faults healed, so that
/// every acknowledged write is checked against what the cluster finally holds. Answers how many
/// keys were not read because the reads ran past [`FINAL_READS_WITHIN`].
pub async fn final_reads(
    access: &Access,
    member: &str,
    keys: &[String],
    recorder: &Recorder,
) -> usize {
    use futures::StreamExt;
    let http = access.client(None, CLIENT_TIMEOUT);
    let deadline = Instant::now() + FINAL_READS_WITHIN;
    let skipped = std::sync::atomic::AtomicUsize::new(0);
    futures::stream::iter(keys)
        .for_each_concurrent(FINAL_READERS, |key| {
            let (http, skipped) = (&http, &skipped);
            async move {
                if Instant::now() >= deadline {
                    skipped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    return;
                }
                let invoked = recorder.now_ns();
                let url = access.url(member, &format!("/v1/kv/{key}"));
                let answer = send(http.get(url)).await;
                recorder.record(FINAL_READER, key, Op::Read, invoked, read_outcome(&answer));
            }
        })
        .await;
    skipped.into_inner()
}

//! Writes: through the leader (forwarded when this member is not it), KV writes in group
//! commits ([`run_batcher`]: concurrent writes become one `Command::Batch` entry).

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::{mpsc, oneshot};

use super::ControlPlane;
use crate::cp_types::Applied;
use crate::error::CpError;
use crate::ops;
use crate::registry::{Command, CommandOutput, MAX_BATCH, MAX_BATCH_BYTES};

/// A KV write waiting for its batch, and where its verdict goes.
pub(super) struct PendingWrite {
    command: Command,
    reply: oneshot::Sender<Result<Applied, CpError>>,
    /// Forwarded by another member: if this member lost the leadership, answer `NotLeader` (the
    /// sender retries towards the new leader) rather than forwarding again.
    forwarded: bool,
}

/// Takes the KV writes waiting right now (up to [`MAX_BATCH`] writes and [`MAX_BATCH_BYTES`]
/// of values, never the same key twice; the rest waits for the next batch) as one batch.
pub(super) fn take_batch(
    first: PendingWrite,
    queue: &mut mpsc::Receiver<PendingWrite>,
    held: &mut VecDeque<PendingWrite>,
) -> Vec<PendingWrite> {
    let mut batch = vec![first];
    let mut keys: BTreeSet<String> = batch[0]
        .command
        .kv_key()
        .map(str::to_string)
        .into_iter()
        .collect();
    let mut bytes = batch[0].command.value_len();
    let mut deferred = VecDeque::new();
    while batch.len() < MAX_BATCH {
        let Some(next) = held.pop_front().or_else(|| queue.try_recv().ok()) else {
            break;
        };
        if next.reply.is_closed() {
            continue; // its caller gave up (bounded wait): never propose it
        }
        let size = next.command.value_len();
        if bytes + size > MAX_BATCH_BYTES {
            deferred.push_back(next);
            break;
        }
        let key = next.command.kv_key().unwrap_or_default().to_string();
        if keys.insert(key) {
            bytes += size;
            batch.push(next);
        } else {
            deferred.push_back(next);
        }
    }
    deferred.extend(held.drain(..));
    *held = deferred;
    batch
}

/// Group commit at the proposal layer, on the leader: concurrent KV writes (its own clients'
/// and those forwarded by other members) become one `Command::Batch` entry, so one append, one
/// fsync and one replication round carry them all. At most `max_batches_in_flight` batches (default 1) are in flight; the
/// writes that arrive meanwhile form the next batch, so batches grow with the load by
/// themselves. A write that finds no batch in flight is proposed at once on its caller's task
/// (see [`ControlPlane::batched_write`]).
pub(super) async fn run_batcher(
    cp: std::sync::Weak<ControlPlane>,
    mut queue: mpsc::Receiver<PendingWrite>,
    in_flight: Arc<tokio::sync::Semaphore>,
) {
    let mut held = VecDeque::new();
    loop {
        let first = match held.pop_front() {
            Some(write) => write,
            None => match queue.recv().await {
                Some(write) => write,
                None => return,
            },
        };
        if first.reply.is_closed() {
            continue;
        }
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        // Writes that arrived while we waited for a slot join this batch.
        let batch = take_batch(first, &mut queue, &mut held);
        if batch.iter().all(|w| w.reply.is_closed()) {
            continue;
        }
        let Some(cp) = cp.upgrade() else { return };
        tokio::spawn(async move {
            let _permit = permit;
            let (command, replies): (Command, Vec<_>) = if batch.len() == 1 {
                let write = batch.into_iter().next().expect("one write");
                (write.command, vec![(write.reply, write.forwarded, None)])
            } else {
                let (commands, replies) = batch
                    .into_iter()
                    .map(|w| (w.command.clone(), (w.reply, w.forwarded, Some(w.command))))
                    .unzip();
                (Command::Batch(commands), replies)
            };
            let single = replies.len() == 1;
            let retry = command.clone();
            let outcome = cp.bounded_local_write(command).await;
            match outcome {
                Ok(Applied {
                    index,
                    output: CommandOutput::Batch(results),
                }) if !single => {
                    for ((reply, _, _), result) in replies.into_iter().zip(results) {
                        let _ = reply.send(
                            result
                                .map(|output| Applied { index, output })
                                .map_err(CpError::from),
                        );
                    }
                }
                // Leadership moved: forwarded writes go back to their sender (it retries towards
                // the new leader); this member's own clients' writes are forwarded from here.
                Err(CpError::NotLeader { leader }) => {
                    for (reply, forwarded, command) in replies {
                        if forwarded {
                            let _ = reply.send(Err(CpError::NotLeader {
                                leader: leader.clone(),
                            }));
                        } else {
                            let cp = cp.clone();
                            let command = command.unwrap_or_else(|| retry.clone());
                            tokio::spawn(
                                async move { drop(reply.send(cp.propose(command).await)) },
                            );
                        }
                    }
                }
                other => {
                    for (reply, _, _) in replies {
                        let _ = reply.send(other.clone());
                    }
                }
            }
        });
    }
}

impl ControlPlane {
    /// Commits `command` through the leader (forwarding when needed) and returns its outcome.
    /// On the leader, KV writes are batched with concurrent ones into one log entry (see
    /// [`run_batcher`]); other members forward each write, so that all of the cluster's
    /// concurrent writes meet in the leader's batches.
    #[tracing::instrument(skip_all, fields(member = %format_args!("{:016x}", self.config.id), command = command.name()))]
    pub async fn write(&self, command: Command) -> Result<Applied, CpError> {
        if command.kv_key().is_some() && self.is_leader() {
            return self.batched_write(command, false).await;
        }
        self.propose(command).await
    }

    /// The leader's HTTP address when this member's metrics name another member as leader.
    pub(super) fn leader_elsewhere(&self) -> Option<String> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let leader = metrics.current_leader?;
        if leader == self.config.id {
            return None;
        }
        metrics
            .membership_config
            .membership()
            .get_node(&leader)
            .map(|n| n.http_addr.clone())
    }

    /// Whether this member is the Raft leader now (as its own metrics say).
    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().current_leader == Some(self.config.id)
    }

    /// Queues a KV write for the leader's next batch and waits for its verdict, all within the
    /// bounded wait (a write that times out before its batch is taken is never proposed).
    pub(super) async fn batched_write(
        &self,
        command: Command,
        forwarded: bool,
    ) -> Result<Applied, CpError> {
        // No batch in flight: this write is a batch of one, proposed on this task rather than
        // handed to the batcher and on to a task of its own. (The semaphore is fair: while the
        // batcher waits for a slot, released slots go to it, so queued writes never starve.)
        if let Ok(slot) = self.in_flight.clone().try_acquire_owned() {
            let outcome = self.bounded_local_write(command.clone()).await;
            drop(slot);
            return match outcome {
                // Leadership moved: as in the batcher, a forwarded write goes back to its sender,
                // this member's own client's write is forwarded from here.
                Err(CpError::NotLeader { .. }) if !forwarded => self.propose(command).await,
                other => other,
            };
        }
        let (reply, verdict) = oneshot::channel();
        let stopped = || CpError::Fatal("the write batcher stopped".into());
        let queued_and_answered = async {
            let pending = PendingWrite {
                command,
                reply,
                forwarded,
            };
            self.kv_writes.send(pending).await.map_err(|_| stopped())?;
            verdict.await.map_err(|_| stopped())?
        };
        tokio::time::timeout(self.config.request_timeout, queued_and_answered)
            .await
            .unwrap_or_else(|_| Err(self.no_quorum("the write waited for its batch too long")))
    }

    /// A write forwarded to this member as the leader: KV writes join the batch, others are
    /// proposed directly; never forwarded again.
    pub(crate) async fn forwarded_write(&self, command: Command) -> Result<Applied, CpError> {
        if command.kv_key().is_some() {
            self.batched_write(command, true).await
        } else {
            self.local_write(command).await
        }
    }

    /// Commits `command` as one log entry.
    pub(super) async fn propose(&self, command: Command) -> Result<Applied, CpError> {
        self.on_leader::<ops::Write, _, _, _>(
            self.config.request_timeout,
            || self.local_write(command.clone()),
            &command,
        )
        .await
    }

    /// [`ControlPlane::local_write`] of a KV write or batch, bounded like every other wait: a
    /// leader deposed mid-write may never hear back about its entry, and a stuck write would
    /// hold a batch slot forever.
    pub(super) async fn bounded_local_write(&self, command: Command) -> Result<Applied, CpError> {
        tokio::time::timeout(self.config.request_timeout, self.local_write(command))
            .await
            .unwrap_or_else(|_| Err(self.no_quorum("the write was not committed in time")))
    }

    /// Proposes on this member; `NotLeader` when it is not the leader.
    pub(crate) async fn local_write(&self, command: Command) -> Result<Applied, CpError> {
        match self.raft.client_write(command).await {
            Ok(response) => {
                let index = response.log_id.index;
                let output = response.data.0?;
                Ok(Applied { index, output })
            }
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(CpError::NotLeader {
                    leader: f.leader_node.map(|n| n.http_addr),
                })
            }
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
                Err(CpError::Membership(e.to_string()))
            }
            Err(RaftError::Fatal(f)) => Err(CpError::Fatal(f.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(key: &str) -> (PendingWrite, oneshot::Receiver<Result<Applied, CpError>>) {
        let (reply, verdict) = oneshot::channel();
        let command = Command::KvPut {
            key: key.to_string(),
            value: Vec::new(),
            cas: None,
        };
        (
            PendingWrite {
                command,
                reply,
                forwarded: false,
            },
            verdict,
        )
    }

    fn keys(batch: &[PendingWrite]) -> Vec<&str> {
        batch.iter().map(|w| w.command.kv_key().unwrap()).collect()
    }

    #[tokio::test]
    async fn a_batch_never_holds_a_key_twice_and_keeps_arrival_order() {
        let (tx, mut queue) = mpsc::channel(16);
        let mut verdicts = Vec::new();
        for key in ["b", "a", "b", "c", "a"] {
            let (w, v) = write(key);
            tx.send(w).await.unwrap();
            verdicts.push(v);
        }
        let mut held = VecDeque::new();
        let (first, _v) = write("a");
        let batch = take_batch(first, &mut queue, &mut held);
        assert_eq!(keys(&batch), ["a", "b", "c"]);
        // The repeated keys wait, in order, for the next batch.
        let next = held.pop_front().unwrap();
        let batch = take_batch(next, &mut queue, &mut held);
        assert_eq!(keys(&batch), ["a", "b"]);
        let next = held.pop_front().unwrap();
        assert_eq!(keys(&take_batch(next, &mut queue, &mut held)), ["a"]);
        assert!(held.is_empty());
    }

    #[tokio::test]
    async fn a_batch_stays_within_its_byte_budget() {
        let (tx, mut queue) = mpsc::channel(16);
        let mut verdicts = Vec::new();
        for key in ["b", "c", "d"] {
            let (reply, verdict) = oneshot::channel();
            let command = Command::KvPut {
                key: key.to_string(),
                value: vec![0; MAX_BATCH_BYTES / 2 + 1],
                cas: None,
            };
            tx.send(PendingWrite {
                command,
                reply,
                forwarded: false,
            })
            .await
            .unwrap();
            verdicts.push(verdict);
        }
        let (first, _v) = write("a");
        let mut held = VecDeque::new();
        assert_eq!(keys(&take_batch(first, &mut queue, &mut held)), ["a", "b"]);
        let next = held.pop_front().unwrap();
        assert_eq!(keys(&take_batch(next, &mut queue, &mut held)), ["c"]);
        let next = held.pop_front().unwrap();
        assert_eq!(keys(&take_batch(next, &mut queue, &mut held)), ["d"]);
    }

    #[tokio::test]
    async fn writes_whose_caller_gave_up_are_not_proposed() {
        let (tx, mut queue) = mpsc::channel(16);
        let (abandoned, verdict) = write("x");
        drop(verdict);
        tx.send(abandoned).await.unwrap();
        let (kept, _v) = write("y");
        tx.send(kept).await.unwrap();
        let (first, _v1) = write("z");
        let mut held = VecDeque::new();
        assert_eq!(keys(&take_batch(first, &mut queue, &mut held)), ["z", "y"]);
    }
}

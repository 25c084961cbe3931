//! Delivery of the changes to `--trigger-webhook`: each change POSTed as JSON, in order, by the
//! machine responsible for its keygroup, retried with backoff.

use std::sync::atomic::Ordering;
use std::time::Duration;

use hivemind_common::backoff::Backoff;
use tokio_util::sync::CancellationToken;

use crate::changes::Page;
use crate::RoleState;
use crate::MAX_PAGE;

/// Delivers every change of the keygroups this machine is responsible for to `url`, in
/// order; a failed POST is retried with backoff (counted), never skipped unless the log
/// dropped it meanwhile (counted too).
pub(crate) async fn run(state: RoleState, url: String, shutdown: CancellationToken) {
    let trigger = &state.trigger;
    let mut changed = trigger.change_tx.subscribe();
    let mut after = trigger
        .changes
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .last();
    loop {
        let page = trigger
            .changes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .after(after, MAX_PAGE);
        let changes = match page {
            Page::Gone { first_index } => {
                let lost = first_index - after - 1;
                trigger.webhook_dropped.fetch_add(lost, Ordering::Relaxed);
                tracing::warn!(lost, "webhook fell behind the change log; changes skipped");
                after = first_index - 1;
                continue;
            }
            Page::Changes { changes, .. } => changes,
        };
        if changes.is_empty() {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = changed.changed() => continue,
            }
        }
        for change in changes {
            after = change.index;
            let mine = if change.is_report() {
                delivers_reports(&state)
            } else {
                state.intake.holds(&change.keygroup)
            };
            if !mine {
                continue; // the machine responsible for it delivers it
            }
            let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
            loop {
                let sent = trigger
                    .http
                    .post(&url)
                    .json(&change)
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().is_success() => {
                        trigger.webhook_delivered.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    outcome => {
                        trigger.webhook_failures.fetch_add(1, Ordering::Relaxed);
                        let error = match outcome {
                            Ok(r) => format!("answered {}", r.status()),
                            Err(e) => e.to_string(),
                        };
                        tracing::warn!(%url, %error, index = change.index, "webhook delivery failed; retrying");
                    }
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff.next_wait()) => {}
                }
            }
        }
    }
}

/// Reports belong to no keygroup: the live trigger member with the lowest id delivers them, so
/// the webhook hears each once.
fn delivers_reports(state: &RoleState) -> bool {
    let membership = state.intake.membership();
    let me = state.me;
    membership
        .performing("trigger")
        .map(|p| p.id)
        .min()
        .is_none_or(|lowest| lowest == me)
}

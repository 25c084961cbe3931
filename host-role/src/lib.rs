//! The `host` role: publishes this machine's record (name, addresses, services) with a seq
//! that only grows, and (with the keygroups issue) serves subscription streams to dns members.
//!
//! Layout:
//! - [`record`]: the host record and its seq bookkeeping (sans IO).
//! - [`HostRole`]: the running role: keeps the record current with the member's address and
//!   serves it at `GET /v1/roles/host/record`.

pub mod record;

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use hivemind_common::role::{Me, Role, RoleContext, RoleEvent, RoleStore, Started};
use hivemind_common::roles::{self, RoleSpec};

use record::HostRecord;

const SEQ_KEY: &[u8] = b"seq";

pub struct HostRole;

struct Shared {
    record: Mutex<HostRecord>,
    store: Arc<dyn RoleStore>,
}

impl Shared {
    /// Persists the record's seq before anyone can see the record, so a restart never reuses it.
    fn publish(&self, next: impl FnOnce(&HostRecord) -> Option<HostRecord>) {
        let mut current = self.record.lock().unwrap_or_else(|p| p.into_inner());
        let Some(record) = next(&current) else { return };
        if let Err(e) = self.store.put(SEQ_KEY, &record.seq.to_be_bytes()) {
            tracing::error!(error = %e, "cannot persist the host record's seq; keeping the old record");
            return;
        }
        tracing::info!(seq = record.seq, addrs = ?record.addrs, "host record published");
        *current = record;
    }
}

fn stored_seq(store: &dyn RoleStore) -> u64 {
    match store.get(SEQ_KEY) {
        Ok(Some(bytes)) => bytes
            .as_slice()
            .try_into()
            .map(u64::from_be_bytes)
            .unwrap_or_else(|_| {
                tracing::error!("corrupt stored seq; starting above it is impossible, using 0");
                0
            }),
        Ok(None) => 0,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the stored seq");
            0
        }
    }
}

impl Role for HostRole {
    fn spec(&self) -> &'static RoleSpec {
        roles::spec("host").expect("host is a known role")
    }

    fn start(self: Box<Self>, mut ctx: RoleContext) -> Started {
        let me: Me = ctx.me.borrow().clone();
        let shared = Arc::new(Shared {
            record: Mutex::new(HostRecord::initial(&me, stored_seq(ctx.store.as_ref()))),
            store: ctx.store.clone(),
        });
        // The first record of this incarnation takes a fresh seq too.
        shared.publish(|r| Some(r.next(&me)));
        let routes = Router::new()
            .route("/record", get(record_route))
            .with_state(shared.clone());
        let task = Box::pin(async move {
            loop {
                let event = tokio::select! {
                    _ = ctx.shutdown.cancelled() => return,
                    event = ctx.events.recv() => match event { Some(e) => e, None => return },
                };
                if let RoleEvent::SelfAddressChanged { me } = event {
                    // Republish at once rather than at the next periodic round.
                    shared.publish(|r| r.changed_for(&me));
                }
            }
        });
        Started { routes, task }
    }
}

async fn record_route(State(shared): State<Arc<Shared>>) -> Json<HostRecord> {
    Json(
        shared
            .record
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone(),
    )
}

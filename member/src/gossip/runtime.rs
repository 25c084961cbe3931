//! The gossip runtime: one task owns foca and the UDP socket. It feeds foca received packets
//! (opened first), commands and due timers (in deadline order), sends what foca produced
//! (sealed), and publishes the membership view. Every loop turn is short; nothing in it waits on
//! the control plane: down members go out on a channel.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use foca::{AccumulatingRuntime, Foca, OwnedNotification, State, Timer};
use hivemind_common::MemberId;
use rand10::rngs::StdRng;
use rand10::SeedableRng;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::seal::Sealer;
use super::{BincodeCodec, GossipId, Profile};

/// What the gossip layer reports to the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GossipEvent {
    /// SWIM declared this incarnation down.
    Down(GossipId),
    /// We were declared down and rejoined as this renewed identity.
    Renewed(GossipId),
}

#[derive(Debug)]
pub enum GossipCommand {
    Announce(GossipId),
    /// Move to a renewed identity (a new address): foca tells the cluster at once.
    ChangeIdentity(GossipId),
}

/// Counters for `/metrics` and `/v1/status`.
#[derive(Debug, Default)]
pub struct GossipCounters {
    pub packets_in: AtomicU64,
    pub packets_out: AtomicU64,
    pub dropped_unopened: AtomicU64,
    pub rejected_by_foca: AtomicU64,
}

/// foca as hivemind runs it: our identities, our codec, no custom broadcasts.
pub type Member = Foca<GossipId, BincodeCodec, StdRng, foca::NoCustomBroadcast>;

/// What one received datagram did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// Opened and taken by foca.
    Handled,
    /// Opened, but foca refused it (malformed, not for us, from a stale identity).
    Rejected,
    /// Did not open with the gossip key: never decoded.
    Unopened,
}

/// Takes one received datagram: opened with the gossip key first, then handed to foca; a packet
/// that does not open is never decoded. (Also the gossip fuzz target's entry.)
pub fn receive(
    foca: &mut Member,
    runtime: &mut AccumulatingRuntime<GossipId>,
    sealer: &Sealer,
    packet: &[u8],
) -> Received {
    match sealer.open(packet) {
        Ok(plain) => match foca.handle_data(&plain, runtime) {
            Ok(()) => Received::Handled,
            Err(_) => Received::Rejected,
        },
        Err(_) => Received::Unopened,
    }
}

/// The member's view as SWIM sees it: id -> (identity, state).
pub type View = BTreeMap<MemberId, (GossipId, State)>;

pub struct Gossip {
    pub commands: mpsc::Sender<GossipCommand>,
    pub view: watch::Receiver<View>,
    pub counters: Arc<GossipCounters>,
}

pub struct GossipSettings {
    pub identity: GossipId,
    pub profile: Profile,
    pub key: Option<[u8; 32]>,
    pub cluster_size_hint: usize,
}

/// Starts the gossip task on `socket`; events go to `events`.
pub fn spawn(
    settings: GossipSettings,
    socket: UdpSocket,
    events: mpsc::UnboundedSender<GossipEvent>,
    cancel: CancellationToken,
) -> Gossip {
    let (commands, commands_rx) = mpsc::channel(64);
    let (view_tx, view) = watch::channel(View::new());
    let counters = Arc::new(GossipCounters::default());
    tokio::spawn(run(
        settings,
        socket,
        commands_rx,
        view_tx,
        events,
        counters.clone(),
        cancel,
    ));
    Gossip {
        commands,
        view,
        counters,
    }
}

async fn run(
    settings: GossipSettings,
    socket: UdpSocket,
    mut commands: mpsc::Receiver<GossipCommand>,
    view_tx: watch::Sender<View>,
    events: mpsc::UnboundedSender<GossipEvent>,
    counters: Arc<GossipCounters>,
    cancel: CancellationToken,
) {
    let mut cluster_size = settings.cluster_size_hint;
    let config = settings.profile.config(cluster_size);
    let mut foca: Member = Foca::new(
        settings.identity,
        config,
        StdRng::seed_from_u64(rand::random()),
        BincodeCodec,
    );
    let mut runtime = AccumulatingRuntime::new();
    let sealer = Sealer::new(settings.key);
    let mut timers: BTreeMap<(Instant, u64), Timer<GossipId>> = BTreeMap::new();
    let mut seq = 0u64;
    let mut buf = vec![0u8; 65536];
    loop {
        let next_timer = timers.first_key_value().map(|(k, _)| k.0);
        tokio::select! {
            _ = cancel.cancelled() => {
                let _ = foca.leave_cluster(&mut runtime);
                flush_sends(&mut runtime, &socket, &sealer, &counters).await;
                return;
            }
            received = socket.recv_from(&mut buf) => {
                if let Ok((len, _from)) = received {
                    counters.packets_in.fetch_add(1, Ordering::Relaxed);
                    match receive(&mut foca, &mut runtime, &sealer, &buf[..len]) {
                        Received::Handled => {}
                        Received::Rejected => {
                            counters.rejected_by_foca.fetch_add(1, Ordering::Relaxed);
                        }
                        Received::Unopened => {
                            counters.dropped_unopened.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
            Some(command) = commands.recv() => match command {
                GossipCommand::Announce(target) => {
                    if let Err(e) = foca.announce(target, &mut runtime) {
                        tracing::debug!(error = %e, "announce failed");
                    }
                }
                GossipCommand::ChangeIdentity(id) => {
                    if let Err(e) = foca.change_identity(id, &mut runtime) {
                        tracing::warn!(error = %e, "cannot change the gossip identity");
                    }
                }
            },
            _ = sleep_until(next_timer) => {
                let now = Instant::now();
                // Every due timer, earliest first.
                while let Some(entry) = timers.first_entry() {
                    if entry.key().0 > now {
                        break;
                    }
                    let timer = entry.remove();
                    let _ = foca.handle_timer(timer, &mut runtime);
                }
            }
        }
        flush_sends(&mut runtime, &socket, &sealer, &counters).await;
        while let Some((after, timer)) = runtime.to_schedule() {
            seq += 1;
            timers.insert((Instant::now() + after, seq), timer);
        }
        // Suspicion time and retransmissions scale with the cluster (log10 of its size, as in
        // memberlist), so keep foca's configuration sized to the members it knows.
        let size = foca.num_members() + 1;
        if size != cluster_size {
            cluster_size = size;
            if let Err(e) = foca.set_config(settings.profile.config(size)) {
                tracing::warn!(error = %e, size, "cannot resize the SWIM configuration");
            }
        }
        let mut changed = false;
        while let Some(notification) = runtime.to_notify() {
            changed = true;
            match notification {
                OwnedNotification::MemberUp(id) => {
                    tracing::info!(peer = %id.id, generation = id.generation, "swim: member up");
                }
                OwnedNotification::MemberDown(id) => {
                    tracing::info!(peer = %id.id, generation = id.generation, "swim: member down");
                    drop(events.send(GossipEvent::Down(id)));
                }
                OwnedNotification::Rejoin(id) => drop(events.send(GossipEvent::Renewed(id))),
                _ => {}
            }
        }
        if changed || view_tx.borrow().len() != foca.iter_membership_state().len() {
            let view = foca
                .iter_membership_state()
                .map(|m| (m.id().id, (*m.id(), m.state())))
                .collect();
            view_tx.send_replace(view);
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn flush_sends(
    runtime: &mut AccumulatingRuntime<GossipId>,
    socket: &UdpSocket,
    sealer: &Sealer,
    counters: &GossipCounters,
) {
    while let Some((to, data)) = runtime.to_send() {
        let packet = sealer.seal(rand::random(), &data);
        // UDP: a failed send is a lost packet, which SWIM tolerates.
        if socket.send_to(&packet, to.addr).await.is_ok() {
            counters.packets_out.fetch_add(1, Ordering::Relaxed);
        }
    }
}

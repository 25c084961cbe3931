//! The address watchdog (seed: the consumer scheduler's IP watchdog). Every `--address-check`
//! the member compares the IP it advertises with the one it should advertise: the forced one
//! (`--advertise`, possibly changed at runtime by a config reload) or, when none is forced, the
//! local IP the OS routes toward the control plane. On a change it renews its identity, commits
//! `UpdateAddress`, then moves its gossip identity and tells its roles.
//!
//! The decision ([`next_address`]) is a pure function; detection and the change are the edges.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hivemind_common::backoff::Backoff;
use hivemind_control_plane::member_requests::MemberRequest;
use tokio_util::sync::CancellationToken;

use crate::gossip::{GossipCommand, GossipId};
use crate::state::{me, Agent};

/// The address to move to, if any: the forced one wins over the detected one; an unspecified
/// or unchanged address is no move.
pub fn next_address(
    current: IpAddr,
    forced: Option<IpAddr>,
    detected: Option<IpAddr>,
) -> Option<IpAddr> {
    let wanted = forced.or(detected)?;
    (wanted != current && !wanted.is_unspecified()).then_some(wanted)
}

/// The local IP the OS would use to reach `peer` (a connected UDP socket; nothing is sent).
pub fn route_to(peer: SocketAddr) -> Option<IpAddr> {
    let any: SocketAddr = if peer.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = std::net::UdpSocket::bind(any).ok()?;
    socket.connect(peer).ok()?;
    Some(socket.local_addr().ok()?.ip())
}

/// Runs the watchdog until `cancel`; reacts at once to a runtime `--advertise` change.
pub(crate) async fn watch(agent: Arc<Agent>, cancel: CancellationToken) {
    let mut forced_updates = agent.config.advertise_updates.clone();
    let mut tick = tokio::time::interval(agent.config.address_check);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
            Ok(()) = async {
                match forced_updates.as_mut() {
                    Some(rx) => rx.changed().await,
                    None => std::future::pending().await,
                }
            } => {}
        }
        let forced = match &forced_updates {
            Some(rx) => *rx.borrow(),
            None => agent
                .config
                .advertise_forced
                .then_some(agent.config.advertise),
        };
        let detected = if forced.is_none() {
            detect(&agent)
        } else {
            None
        };
        let current = agent.incarnation.advertise();
        if let Some(new) = next_address(current, forced, detected) {
            tracing::warn!(%current, %new, "advertised address changed");
            change_address(&agent, new, &cancel).await;
        }
    }
}

/// The IP toward the first control-plane member (or `--join` address) that resolves.
fn detect(agent: &Agent) -> Option<IpAddr> {
    let view = agent.membership.view();
    let peers = view
        .live_members()
        .filter(|m| m.info.control_plane && m.info.id != agent.identity.id)
        .map(|m| m.info.http_addr.clone())
        .chain(agent.config.join.iter().cloned())
        .collect::<Vec<_>>();
    peers.iter().find_map(|peer| {
        use std::net::ToSocketAddrs;
        let addr = peer.to_socket_addrs().ok()?.next()?;
        route_to(addr)
    })
}

/// Renews the identity at `new`, commits `UpdateAddress` (retrying until it is committed: it
/// must precede the gossip move, so that SWIM's report of the old identity is a stale no-op),
/// then moves the gossip identity and tells the roles.
async fn change_address(agent: &Arc<Agent>, new: IpAddr, cancel: &CancellationToken) {
    let generation = agent.incarnation.moved(new);
    let info = agent.info();
    if agent.config.control_plane {
        tracing::warn!("a control-plane member's Raft address does not follow; re-add it as a voter at the new address");
    }
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    while agent.incarnation.is_admitted() {
        let update = MemberRequest::MoveAddress {
            id: info.id,
            generation,
            http_addr: info.http_addr.clone(),
            gossip_addr: info.gossip_addr.clone(),
        };
        match agent.cp.apply(update).await {
            Ok(_) => {
                tracing::info!(generation, http = %info.http_addr, "address change committed");
                break;
            }
            Err(e) => tracing::warn!(error = %e, "cannot commit the address change; retrying"),
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(backoff.next_wait()) => {}
        }
    }
    let gossip_id = GossipId {
        id: info.id,
        addr: info
            .gossip_addr
            .parse()
            .expect("built from an IP and a port"),
        generation,
    };
    if agent
        .gossip
        .commands
        .send(GossipCommand::ChangeIdentity(gossip_id))
        .await
        .is_err()
    {
        tracing::warn!("gossip stopped; cannot move its identity");
    }
    agent.roles.address_changed(me(&info));
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn a_forced_address_wins_over_the_detected_one() {
        assert_eq!(next_address(ip(1), Some(ip(2)), Some(ip(3))), Some(ip(2)));
        assert_eq!(next_address(ip(1), None, Some(ip(3))), Some(ip(3)));
    }

    #[test]
    fn no_move_without_a_change_or_an_answer() {
        assert_eq!(next_address(ip(1), Some(ip(1)), Some(ip(3))), None);
        assert_eq!(next_address(ip(1), None, None), None);
        assert_eq!(
            next_address(ip(1), None, Some(IpAddr::from([0, 0, 0, 0]))),
            None
        );
    }

    #[test]
    fn loopback_routes_to_loopback() {
        assert_eq!(
            route_to("127.0.0.1:9".parse().unwrap()),
            Some(IpAddr::from([127, 0, 0, 1]))
        );
    }

    proptest! {
        /// Applying the decision reaches a fixed point: once moved, the same inputs move no more.
        #[test]
        fn the_decision_is_idempotent(cur in 1u8..5, forced in proptest::option::of(1u8..5), detected in proptest::option::of(1u8..5)) {
            let (forced, detected) = (forced.map(ip), detected.map(ip));
            let after = next_address(ip(cur), forced, detected).unwrap_or(ip(cur));
            prop_assert_eq!(next_address(after, forced, detected), None);
        }
    }
}

//! [`Incarnation`]: who this member is to the cluster now (its generation and advertised
//! address) and whether the registry admitted that incarnation. The one owner of these: every
//! change goes through a method here that says what happened (admitted, renewed by gossip,
//! moved, dropped by a new epoch), so the rules that move them together live in one place, and
//! a new generation is persisted before anyone is told of it.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::RwLock;

use crate::identity::MemberStore;

pub(crate) struct Incarnation {
    /// Current generation: the start's, or higher after a renewal or an address move.
    generation: AtomicU64,
    /// The address advertised now.
    advertise: RwLock<IpAddr>,
    admitted: AtomicBool,
    /// Index of the `Join` that admitted the current incarnation.
    admitted_index: AtomicU64,
    store: MemberStore,
}

impl Incarnation {
    /// This start's incarnation; `joined`: the index of the `Join` that admitted it, when it
    /// joined through another member (a CP member admits itself later).
    pub(crate) fn new(
        generation: u64,
        advertise: IpAddr,
        store: MemberStore,
        joined: Option<u64>,
    ) -> Self {
        Self {
            generation: AtomicU64::new(generation),
            advertise: RwLock::new(advertise),
            admitted: AtomicBool::new(joined.is_some()),
            admitted_index: AtomicU64::new(joined.unwrap_or(0)),
            store,
        }
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    pub(crate) fn advertise(&self) -> IpAddr {
        *self.advertise.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the registry admitted the current incarnation.
    pub(crate) fn is_admitted(&self) -> bool {
        self.admitted.load(Ordering::Relaxed)
    }

    /// The control plane committed this incarnation's `Join` (at `index`, when it says).
    pub(crate) fn admitted(&self, index: Option<u64>) {
        if let Some(index) = index {
            self.admitted_index.store(index, Ordering::Relaxed);
        }
        self.admitted.store(true, Ordering::Relaxed);
    }

    /// Declared down, gossip renewed this member as `generation`: it is no longer admitted
    /// until it joins again.
    pub(crate) fn renewed(&self, generation: u64) {
        let generation = self
            .generation
            .fetch_max(generation, Ordering::Relaxed)
            .max(generation);
        self.persist(generation);
        self.admitted.store(false, Ordering::Relaxed);
    }

    /// The advertised address moved to `ip`: a new generation (answered), persisted before
    /// the address is shown to anyone.
    pub(crate) fn moved(&self, ip: IpAddr) -> u64 {
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        self.persist(generation);
        *self.advertise.write().unwrap_or_else(|p| p.into_inner()) = ip;
        generation
    }

    /// A snapshot of the registry at `index` that does (`listed`) or does not list this
    /// incarnation alive: only one at least as new as the admission can say it is gone, and
    /// then it is no longer admitted. Answers whether it must join again.
    pub(crate) fn judged_by(&self, index: u64, listed: bool) -> bool {
        let judged = index >= self.admitted_index.load(Ordering::Relaxed);
        let gone = self.is_admitted() && judged && !listed;
        if gone {
            self.admitted.store(false, Ordering::Relaxed);
        }
        gone
    }

    fn persist(&self, generation: u64) {
        if let Err(e) = self.store.set_generation(generation) {
            tracing::warn!(error = %e, "cannot persist the renewed generation");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incarnation() -> (Incarnation, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = MemberStore::open(dir.path()).unwrap();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        (Incarnation::new(1, ip, store, None), dir)
    }

    #[test]
    fn a_renewal_raises_the_generation_persists_it_and_ends_the_admission() {
        let (i, _dir) = incarnation();
        i.admitted(Some(7));
        i.renewed(3);
        assert_eq!(i.generation(), 3);
        assert!(!i.is_admitted());
        assert_eq!(i.store.generation().unwrap(), Some(3));
        // An older renewal never lowers it.
        i.renewed(2);
        assert_eq!(i.generation(), 3);
    }

    #[test]
    fn a_move_is_a_new_generation_persisted_with_the_address() {
        let (i, _dir) = incarnation();
        let ip: IpAddr = "10.0.0.9".parse().unwrap();
        assert_eq!(i.moved(ip), 2);
        assert_eq!(i.advertise(), ip);
        assert_eq!(i.store.generation().unwrap(), Some(2));
    }

    #[test]
    fn only_a_snapshot_as_new_as_the_admission_can_say_it_is_gone() {
        let (i, _dir) = incarnation();
        i.admitted(Some(10));
        assert!(!i.judged_by(9, false), "older than the admission");
        assert!(i.is_admitted());
        assert!(!i.judged_by(12, true), "listed alive");
        assert!(i.judged_by(12, false));
        assert!(!i.is_admitted());
        assert!(!i.judged_by(13, false), "not admitted: nothing to lose");
    }
}

//! Gossip timing profiles: `lan` (foca's memberlist-like LAN defaults) and `local` (fast timers
//! for loopback clusters, tests and `hivemind dev`).

use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Lan,
    Local,
}

impl Profile {
    /// foca's configuration for a cluster of about `cluster_size` members.
    pub fn config(self, cluster_size: usize) -> foca::Config {
        let size = NonZeroU32::new(cluster_size.clamp(1, u32::MAX as usize) as u32)
            .expect("clamped to >= 1");
        let mut config = foca::Config::new_lan(size);
        // foca sizes retransmissions like memberlist (4 x log10(n+1)), but it has no periodic
        // push-pull to repair a member an update missed; a few more retransmissions make a
        // straggler (one member hearing of a failure seconds after the rest) rare.
        config.max_transmissions = config
            .max_transmissions
            .saturating_add(config.max_transmissions.get() / 2);
        // Down members stay known long enough for the registry to hear about them, then go.
        config.remove_down_after = Some(Duration::from_secs(120));
        if self == Profile::Local {
            config.probe_period = Duration::from_millis(200);
            config.probe_rtt = Duration::from_millis(100);
            config.suspect_to_down_after = Duration::from_millis(1200);
            config.periodic_gossip = Some(foca::PeriodicParams {
                frequency: Duration::from_millis(50),
                num_members: NonZeroUsize::new(3).expect("3 > 0"),
            });
            config.periodic_announce = Some(foca::PeriodicParams {
                frequency: Duration::from_secs(5),
                num_members: NonZeroUsize::new(1).expect("1 > 0"),
            });
            config.periodic_announce_to_down_members = Some(foca::PeriodicParams {
                frequency: Duration::from_secs(2),
                num_members: NonZeroUsize::new(2).expect("2 > 0"),
            });
        }
        config
    }
}

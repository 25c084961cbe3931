//! The coordination commands' arguments (DESIGN.md §6h): `kv watch`, `lock` and `elect`.

use clap::Args;

#[derive(Args, Debug)]
pub struct WatchArgs {
    /// Watch every key starting with this prefix.
    pub prefix: String,
    /// Print the changes after this index (default: list the keys now, then watch from there).
    #[arg(long)]
    pub after: Option<u64>,
}

#[derive(Args, Debug)]
pub struct LockArgs {
    /// The lock's name (its keys live under `_locks/NAME/`).
    pub name: String,
    /// The lease's TTL: if this process stops keeping it alive, the lock is freed after it.
    #[arg(long, default_value = "10s")]
    pub ttl: String,
    /// The command to run while holding the lock, with HIVEMIND_LOCK_FENCE set to the lock
    /// key's create index (a fencing token that only grows).
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ElectArgs {
    /// The election's name (its keys live under `_elections/NAME/`).
    pub name: String,
    /// Campaign with this value, printed by every observer while this process leads.
    #[arg(long, required_unless_present = "observe")]
    pub value: Option<String>,
    /// Only print the leader on every change; do not campaign.
    #[arg(long, conflicts_with = "value")]
    pub observe: bool,
    /// The campaign's lease TTL.
    #[arg(long, default_value = "10s")]
    pub ttl: String,
}

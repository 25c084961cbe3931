//! The keygroup rules (FBase's subscription management, DESIGN.md §6): how commands create,
//! change, join and hand over keygroups, as [`Registry`] methods. The keygroups' data and its
//! checks are in `keygroups.rs`.

use std::collections::BTreeSet;

use hivemind_common::MemberId;

use super::command::CommandOutput;
use super::error::RegistryError;
use super::event::EventKind;
use super::keygroups::{
    validate_keygroup_name, validate_node, validate_secret, validate_ttl, Actor, KeygroupConfig,
    KeygroupDelta, Responsibility,
};
use super::member::MemberState;
use super::state::Registry;

impl Registry {
    pub fn keygroups(&self) -> &std::collections::BTreeMap<String, KeygroupConfig> {
        &self.keygroups
    }

    pub fn keygroup(&self, name: &str) -> Option<&KeygroupConfig> {
        self.keygroups.get(name)
    }

    pub fn responsibilities(&self) -> impl Iterator<Item = &Responsibility> {
        self.responsibilities.values()
    }

    /// The live keygroup `name`, or why there is none.
    fn live_keygroup(&self, name: &str) -> Result<&KeygroupConfig, RegistryError> {
        match self.keygroups.get(name) {
            None => Err(RegistryError::UnknownKeygroup {
                name: name.to_string(),
            }),
            Some(k) if k.tombstoned => Err(RegistryError::Tombstoned {
                name: name.to_string(),
            }),
            Some(k) => Ok(k),
        }
    }

    pub(crate) fn keygroup_create(
        &mut self,
        index: u64,
        name: &str,
        creator: &str,
        ttl_secs: u32,
        open: bool,
        secret: &[u8],
    ) -> Result<CommandOutput, RegistryError> {
        validate_keygroup_name(name)?;
        validate_node("node", creator)?;
        validate_ttl(ttl_secs)?;
        validate_secret(secret)?;
        match self.keygroups.get(name) {
            Some(k) if k.tombstoned => {
                return Err(RegistryError::Tombstoned {
                    name: name.to_string(),
                })
            }
            Some(_) => {
                return Err(RegistryError::KeygroupExists {
                    name: name.to_string(),
                })
            }
            None => {}
        }
        let config = KeygroupConfig {
            name: name.to_string(),
            version: 1,
            replicas: BTreeSet::from([creator.to_string()]),
            triggers: BTreeSet::new(),
            ttl_secs,
            open,
            secret: secret.to_vec(),
            tombstoned: false,
            updated_index: index,
        };
        self.keygroups.insert(name.to_string(), config);
        self.push_event(
            index,
            EventKind::KeygroupCreated {
                name: name.to_string(),
                version: 1,
            },
        );
        Ok(CommandOutput::Keygroup {
            version: 1,
            changed: true,
        })
    }

    pub(crate) fn keygroup_update(
        &mut self,
        index: u64,
        name: &str,
        by: &Actor,
        deltas: &[KeygroupDelta],
    ) -> Result<CommandOutput, RegistryError> {
        let current = self.live_keygroup(name)?;
        if deltas.is_empty() {
            return Err(RegistryError::invalid("update", "no change given"));
        }
        if let Actor::Node(node) = by {
            let self_join = current.open
                && deltas
                    .iter()
                    .all(|d| matches!(d, KeygroupDelta::AddReplica(n) if n == node));
            if !current.replicas.contains(node) && !self_join {
                return Err(RegistryError::NotAReplica {
                    node: node.clone(),
                    keygroup: name.to_string(),
                });
            }
        }
        // Apply to a copy: the rules may still reject it, and then nothing changes.
        let mut next = current.clone();
        for delta in deltas {
            match delta {
                KeygroupDelta::AddReplica(n) => {
                    validate_node("replica", n)?;
                    next.replicas.insert(n.clone());
                }
                KeygroupDelta::RemoveReplica(n) => {
                    next.replicas.remove(n);
                }
                KeygroupDelta::AddTrigger(n) => {
                    validate_node("trigger", n)?;
                    next.triggers.insert(n.clone());
                }
                KeygroupDelta::RemoveTrigger(n) => {
                    next.triggers.remove(n);
                }
                KeygroupDelta::SetTtl(ttl) => {
                    validate_ttl(*ttl)?;
                    next.ttl_secs = *ttl;
                }
                KeygroupDelta::RotateSecret(secret) => {
                    validate_secret(secret)?;
                    next.secret = secret.clone();
                }
                KeygroupDelta::SetOpen(open) => next.open = *open,
            }
        }
        if next.replicas.is_empty() {
            return Err(RegistryError::LastReplica {
                keygroup: name.to_string(),
            });
        }
        if next == *current {
            // A retried or redundant update: nothing to version.
            return Ok(CommandOutput::Keygroup {
                version: current.version,
                changed: false,
            });
        }
        next.version += 1;
        next.updated_index = index;
        let version = next.version;
        // Nodes that stopped replicating give up their responsibility for it.
        let gone: Vec<String> = current
            .replicas
            .union(&current.triggers)
            .filter(|n| !next.is_member(n))
            .cloned()
            .collect();
        self.keygroups.insert(name.to_string(), next);
        self.push_event(
            index,
            EventKind::KeygroupUpdated {
                name: name.to_string(),
                version,
            },
        );
        for node in gone {
            self.release_where(index, |r| r.node == node && r.keygroup == name);
        }
        Ok(CommandOutput::Keygroup {
            version,
            changed: true,
        })
    }

    pub(crate) fn keygroup_delete(
        &mut self,
        index: u64,
        name: &str,
        by: &Actor,
    ) -> Result<CommandOutput, RegistryError> {
        let current = match self.keygroups.get(name) {
            None => {
                return Err(RegistryError::UnknownKeygroup {
                    name: name.to_string(),
                })
            }
            // Deleting a tombstone again is a retry: nothing changes.
            Some(k) if k.tombstoned => {
                return Ok(CommandOutput::Keygroup {
                    version: k.version,
                    changed: false,
                })
            }
            Some(k) => k,
        };
        if let Actor::Node(node) = by {
            if !current.replicas.contains(node) {
                return Err(RegistryError::NotAReplica {
                    node: node.clone(),
                    keygroup: name.to_string(),
                });
            }
        }
        let config = self.keygroups.get_mut(name).expect("checked above");
        config.tombstoned = true;
        config.secret.clear();
        config.version += 1;
        config.updated_index = index;
        let version = config.version;
        self.push_event(
            index,
            EventKind::KeygroupDeleted {
                name: name.to_string(),
                version,
            },
        );
        self.release_where(index, |r| r.keygroup == name);
        Ok(CommandOutput::Keygroup {
            version,
            changed: true,
        })
    }

    pub(crate) fn claim(
        &mut self,
        index: u64,
        node: &str,
        keygroup: &str,
        machine: MemberId,
    ) -> Result<CommandOutput, RegistryError> {
        let config = self.live_keygroup(keygroup)?;
        if !config.is_member(node) {
            return Err(RegistryError::invalid(
                "node",
                format!("{node:?} neither replicates nor triggers {keygroup}"),
            ));
        }
        let live_machine_of = |id: MemberId| {
            self.members
                .get(&id)
                .is_some_and(|m| m.state == MemberState::Alive && m.info.node == node)
        };
        if !live_machine_of(machine) {
            // Not alive, or alive in another node: either way not a machine that may hold it.
            return Err(RegistryError::NotAlive { id: machine });
        }
        let key = (node.to_string(), keygroup.to_string());
        if let Some(held) = self.responsibilities.get(&key) {
            if held.machine == machine {
                return Ok(CommandOutput::Claimed { fence: held.fence });
            }
            if live_machine_of(held.machine) {
                return Err(RegistryError::Held {
                    node: node.to_string(),
                    keygroup: keygroup.to_string(),
                    holder: held.machine,
                });
            }
        }
        self.responsibilities.insert(
            key,
            Responsibility {
                node: node.to_string(),
                keygroup: keygroup.to_string(),
                machine,
                fence: index,
            },
        );
        self.push_event(
            index,
            EventKind::ResponsibilityClaimed {
                node: node.to_string(),
                keygroup: keygroup.to_string(),
                machine,
                fence: index,
            },
        );
        Ok(CommandOutput::Claimed { fence: index })
    }

    pub(crate) fn release(
        &mut self,
        index: u64,
        node: &str,
        keygroup: &str,
        machine: MemberId,
    ) -> CommandOutput {
        let before = self.responsibilities.len();
        self.release_where(index, |r| {
            r.node == node && r.keygroup == keygroup && r.machine == machine
        });
        CommandOutput::Released {
            changed: self.responsibilities.len() != before,
        }
    }

    /// Task A's part: every responsibility `id` held is released.
    pub(crate) fn release_machine(&mut self, index: u64, id: MemberId) {
        self.release_where(index, |r| r.machine == id);
    }

    fn release_where(&mut self, index: u64, matches: impl Fn(&Responsibility) -> bool) {
        let released: Vec<Responsibility> = self
            .responsibilities
            .values()
            .filter(|r| matches(r))
            .cloned()
            .collect();
        for r in released {
            self.responsibilities
                .remove(&(r.node.clone(), r.keygroup.clone()));
            self.push_event(
                index,
                EventKind::ResponsibilityReleased {
                    node: r.node,
                    keygroup: r.keygroup,
                    machine: r.machine,
                },
            );
        }
    }
}

#[cfg(test)]
#[path = "keygroups/tests.rs"]
mod tests;

//! The registry rules: [`Registry::apply`] validates a command completely, then mutates.
//!
//! Every rule is a check that either rejects (nothing changed) or lets the command through to
//! a mutation that cannot fail. Keep it that way: a rule that fails half-way through a mutation
//! would make replicas diverge from a rejected command's partial effects.

use hivemind_common::MemberId;

use super::command::{Command, CommandOutput};
use super::error::RegistryError;
use super::event::{Event, EventKind};
use super::member::{validate_addr, MemberInfo, MemberState};
use super::state::{MemberRecord, NodeConfig, Registry, MAX_BATCH, MAX_BATCH_BYTES};

impl Registry {
    /// Applies `command` from the log entry of `term` at `index`: [`Registry::apply`], with the
    /// one rule that needs the entry's term. A lease expiry stands only in an entry of the term
    /// whose leader decided it. A leader that was paused past a deadline may decide an expiry
    /// after a newer leader restarted that lease's TTL and took keep-alives; forwarded to the
    /// newer leader, or committed by it, that entry carries another term and changes nothing.
    pub fn apply_entry(
        &mut self,
        term: u64,
        index: u64,
        command: &Command,
    ) -> Result<CommandOutput, RegistryError> {
        if let Command::LeaseExpire { id, term: decided } = command {
            if *decided != term {
                return Err(RegistryError::StaleExpiry {
                    id: *id,
                    decided: *decided,
                    entry: term,
                });
            }
        }
        self.apply(index, command)
    }

    /// Applies `command` committed at log `index`. Rejections change nothing.
    pub fn apply(&mut self, index: u64, command: &Command) -> Result<CommandOutput, RegistryError> {
        match command {
            Command::Join { member, epoch } => self.join(index, member, *epoch),
            Command::Leave { id } => self.leave(index, *id),
            Command::Fail { id, generation } => self.fail(index, *id, *generation),
            Command::UpdateAddress {
                id,
                generation,
                http_addr,
                gossip_addr,
            } => self.update_address(index, *id, *generation, http_addr, gossip_addr),
            Command::KvPut { key, value, cas } => self
                .kv
                .put(index, key, value, *cas)
                .map(|modify_index| CommandOutput::KvWritten { modify_index }),
            Command::KvDelete { key, cas } => self
                .kv
                .delete(index, key, *cas)
                .map(|deleted| CommandOutput::KvDeleted { deleted }),
            Command::LeaseGrant { ttl_ms } => {
                self.kv
                    .grant(index, *ttl_ms)
                    .map(|id| CommandOutput::LeaseGranted {
                        id,
                        ttl_ms: *ttl_ms,
                    })
            }
            Command::LeaseRevoke { id } | Command::LeaseExpire { id, .. } => self
                .kv
                .end_lease(index, *id)
                .map(|keys| CommandOutput::LeaseEnded { keys }),
            Command::Txn(txn) => self
                .kv
                .txn(index, txn)
                .map(|(succeeded, results)| CommandOutput::Txn { succeeded, results }),
            Command::EpochBump { reason } => Ok(self.epoch_bump(index, reason)),
            Command::TrimFeed { through } => Ok(self.trim_feed(index, *through)),
            Command::Batch(items) => self.batch(index, items),
            Command::KeygroupCreate {
                name,
                creator,
                ttl_secs,
                open,
                secret,
            } => self.keygroup_create(index, name, creator, *ttl_secs, *open, secret),
            Command::KeygroupUpdate { name, by, deltas } => {
                self.keygroup_update(index, name, by, deltas)
            }
            Command::KeygroupDelete { name, by } => self.keygroup_delete(index, name, by),
            Command::Claim {
                node,
                keygroup,
                machine,
            } => self.claim(index, node, keygroup, *machine),
            Command::Release {
                node,
                keygroup,
                machine,
            } => Ok(self.release(index, node, keygroup, *machine)),
            Command::Report { member, report } => self.report(index, *member, report),
            Command::Backup { member, now_ms, op } => {
                let name = self
                    .members
                    .get(member)
                    .map(|m| m.info.name.clone())
                    .ok_or(RegistryError::UnknownMember { id: *member })?;
                let outcome = self.backup.apply(*member, &name, *now_ms, op)?;
                Ok(CommandOutput::Backup(outcome))
            }
            Command::Acl(op) => {
                self.acl.apply(index, op)?;
                self.push_event(
                    index,
                    EventKind::AclChanged {
                        what: op.describe(),
                    },
                );
                Ok(CommandOutput::AclChanged)
            }
        }
    }

    /// A role's report: only a member the registry knows may make one.
    fn report(
        &mut self,
        index: u64,
        member: MemberId,
        report: &hivemind_common::role::RoleReport,
    ) -> Result<CommandOutput, RegistryError> {
        let name = self
            .members
            .get(&member)
            .map(|m| m.info.name.clone())
            .ok_or(RegistryError::UnknownMember { id: member })?;
        self.push_event(
            index,
            EventKind::RoleReported {
                member,
                name,
                report: report.clone(),
            },
        );
        Ok(CommandOutput::Reported)
    }

    /// Applies each KV write of a batch at the same index. The batch as a whole is checked
    /// first (only KV writes, distinct keys, bounded size); then each item succeeds or is
    /// rejected on its own, exactly as if proposed alone.
    fn batch(&mut self, index: u64, items: &[Command]) -> Result<CommandOutput, RegistryError> {
        if items.is_empty() || items.len() > MAX_BATCH {
            return Err(RegistryError::invalid(
                "batch",
                format!("must hold 1 to {MAX_BATCH} commands, not {}", items.len()),
            ));
        }
        let bytes: usize = items.iter().map(Command::value_len).sum();
        if items.len() > 1 && bytes > MAX_BATCH_BYTES {
            return Err(RegistryError::invalid(
                "batch",
                format!("{bytes} value bytes is more than the limit of {MAX_BATCH_BYTES}"),
            ));
        }
        let mut keys = std::collections::BTreeSet::new();
        for item in items {
            match item.kv_key() {
                None => {
                    return Err(RegistryError::invalid(
                        "batch",
                        format!("{} cannot be batched", item.name()),
                    ))
                }
                Some(key) if !keys.insert(key) => {
                    return Err(RegistryError::invalid(
                        "batch",
                        format!("key {key:?} appears twice"),
                    ))
                }
                Some(_) => {}
            }
        }
        Ok(CommandOutput::Batch(
            items.iter().map(|item| self.apply(index, item)).collect(),
        ))
    }

    pub(crate) fn push_event(&mut self, index: u64, kind: EventKind) {
        self.events.push(Event {
            index,
            epoch: self.epoch,
            kind,
        });
    }

    fn join(
        &mut self,
        index: u64,
        member: &MemberInfo,
        epoch: Option<u64>,
    ) -> Result<CommandOutput, RegistryError> {
        member.validate()?;
        if let Some(given) = epoch {
            if given != self.epoch {
                return Err(RegistryError::StaleEpoch {
                    current: self.epoch,
                    given,
                });
            }
        }
        if let Some(holder) = self.live_member_named(&member.name) {
            if holder.info.id != member.id {
                return Err(RegistryError::NameTaken {
                    name: member.name.clone(),
                    holder: holder.info.id,
                });
            }
        }
        let previous = self.members.get(&member.id).cloned();
        if let Some(prev) = &previous {
            if member.generation < prev.info.generation {
                return Err(RegistryError::StaleGeneration {
                    id: member.id,
                    recorded: prev.info.generation,
                    given: member.generation,
                });
            }
            if prev.state == MemberState::Alive && prev.info == *member {
                // A retried join that already committed: idempotent.
                return Ok(CommandOutput::Joined {
                    epoch: self.epoch,
                    index: prev.updated_index,
                });
            }
        }

        // Validated; from here on nothing fails.
        if let Some(prev) = &previous {
            if prev.info.node != member.node {
                self.remove_machine(index, &prev.info.node.clone(), member.id);
                // It is no machine of its old node any more: what it held there is free.
                self.release_machine(index, member.id);
            }
        }
        self.members.insert(
            member.id,
            MemberRecord {
                info: member.clone(),
                state: MemberState::Alive,
                updated_index: index,
            },
        );
        self.push_event(
            index,
            EventKind::MemberJoined {
                member: member.clone(),
            },
        );
        self.add_machine(index, &member.node, member.id);
        Ok(CommandOutput::Joined {
            epoch: self.epoch,
            index,
        })
    }

    fn leave(&mut self, index: u64, id: MemberId) -> Result<CommandOutput, RegistryError> {
        let record = self
            .members
            .get(&id)
            .ok_or(RegistryError::UnknownMember { id })?;
        if record.state == MemberState::Left {
            return Ok(CommandOutput::Left { changed: false });
        }
        let (name, node) = (record.info.name.clone(), record.info.node.clone());
        self.set_state(index, id, MemberState::Left);
        self.push_event(index, EventKind::MemberLeft { id, name });
        self.remove_machine(index, &node, id);
        self.release_machine(index, id);
        self.backup.release_space(id);
        Ok(CommandOutput::Left { changed: true })
    }

    fn fail(
        &mut self,
        index: u64,
        id: MemberId,
        generation: u64,
    ) -> Result<CommandOutput, RegistryError> {
        let record = self
            .members
            .get(&id)
            .ok_or(RegistryError::UnknownMember { id })?;
        // Reports of an older incarnation, repeated reports and reports about members that are
        // no longer alive are no-ops: SWIM observers report independently and the CP commits once.
        if record.state != MemberState::Alive || record.info.generation != generation {
            return Ok(CommandOutput::Failed { changed: false });
        }
        let (name, node) = (record.info.name.clone(), record.info.node.clone());
        self.set_state(index, id, MemberState::Failed);
        self.push_event(
            index,
            EventKind::MemberFailed {
                id,
                name,
                generation,
            },
        );
        self.remove_machine(index, &node, id);
        self.release_machine(index, id);
        self.backup.release_space(id);
        Ok(CommandOutput::Failed { changed: true })
    }

    fn update_address(
        &mut self,
        index: u64,
        id: MemberId,
        generation: u64,
        http_addr: &str,
        gossip_addr: &str,
    ) -> Result<CommandOutput, RegistryError> {
        let record = self
            .members
            .get(&id)
            .ok_or(RegistryError::UnknownMember { id })?;
        if record.state != MemberState::Alive {
            return Err(RegistryError::NotAlive { id });
        }
        if generation < record.info.generation {
            return Err(RegistryError::StaleGeneration {
                id,
                recorded: record.info.generation,
                given: generation,
            });
        }
        validate_addr("http_addr", http_addr)?;
        validate_addr("gossip_addr", gossip_addr)?;

        let record = self.members.get_mut(&id).expect("checked above");
        record.info.generation = generation;
        record.info.http_addr = http_addr.to_string();
        record.info.gossip_addr = gossip_addr.to_string();
        record.updated_index = index;
        self.push_event(
            index,
            EventKind::MemberAddressChanged {
                id,
                generation,
                http_addr: http_addr.to_string(),
                gossip_addr: gossip_addr.to_string(),
            },
        );
        Ok(CommandOutput::AddressUpdated)
    }

    /// Drops the feed's events through `through` (never past this command's own index). No
    /// event: readers after the trim point have nothing new to learn, those behind it are
    /// `Gone` and re-bootstrap.
    fn trim_feed(&mut self, index: u64, through: u64) -> CommandOutput {
        let through = through.min(index);
        let mut dropped = 0;
        if through > self.feed_start_index {
            dropped = self.events.partition_point(|e| e.index <= through);
            self.events.drain(..dropped);
            self.feed_start_index = through;
        }
        CommandOutput::FeedTrimmed {
            feed_start_index: self.feed_start_index,
            dropped: dropped as u64,
        }
    }

    fn epoch_bump(&mut self, index: u64, reason: &str) -> CommandOutput {
        self.epoch += 1;
        self.feed_start_index = index;
        self.events.clear();
        self.push_event(
            index,
            EventKind::EpochStarted {
                epoch: self.epoch,
                reason: reason.to_string(),
            },
        );
        CommandOutput::EpochStarted {
            epoch: self.epoch,
            index,
        }
    }

    fn set_state(&mut self, index: u64, id: MemberId, state: MemberState) {
        let record = self
            .members
            .get_mut(&id)
            .expect("caller checked the member exists");
        record.state = state;
        record.updated_index = index;
    }

    /// AddMachineToNode: the node's config gains the machine, version+1.
    fn add_machine(&mut self, index: u64, node: &str, id: MemberId) {
        let config = self
            .nodes
            .entry(node.to_string())
            .or_insert_with(|| NodeConfig {
                node: node.to_string(),
                machines: Default::default(),
                version: 0,
            });
        if config.machines.insert(id) {
            config.version += 1;
            let (version, machines) = (config.version, config.machines.clone());
            self.push_event(
                index,
                EventKind::NodeConfigUpdated {
                    node: node.to_string(),
                    version,
                    machines,
                },
            );
        }
    }

    /// RemoveMachineFromNode: the node's config loses the machine, version+1. The config itself
    /// stays (with its version) so that versions only grow even if the node empties and refills.
    fn remove_machine(&mut self, index: u64, node: &str, id: MemberId) {
        if let Some(config) = self.nodes.get_mut(node) {
            if config.machines.remove(&id) {
                config.version += 1;
                let (version, machines) = (config.version, config.machines.clone());
                self.push_event(
                    index,
                    EventKind::NodeConfigUpdated {
                        node: node.to_string(),
                        version,
                        machines,
                    },
                );
            }
        }
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod retention_tests;

#[cfg(test)]
mod lease_tests;

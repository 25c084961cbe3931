//! The numbered, bounded log of record changes a trigger machine keeps (sans IO): what the
//! events long-poll pages through and the webhook delivers in order.

use std::collections::VecDeque;

use hivemind_common::records::HostRecord;
use serde::Serialize;

/// Changes kept for readers that fall behind (older ones answer `gone`).
pub const KEPT: usize = 10_000;

/// One change of a keygroup's records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Change {
    /// Numbers changes on this machine, from 1; `after` cursors use it.
    pub index: u64,
    /// `updated` (a newer record) or `removed` (the host failed or left, or the keygroup was
    /// deleted), or what a role reported to the feed (`backup_failed`, `nginx_render_failed`:
    /// then `host` names the reporting member, `seq` is the feed index, `keygroup` is empty).
    #[schema(value_type = String)]
    pub kind: &'static str,
    pub keygroup: String,
    pub host: String,
    pub member: String,
    pub seq: u64,
    #[schema(value_type = Vec<String>)]
    pub addrs: Vec<std::net::IpAddr>,
    pub services: Vec<hivemind_common::records::Service>,
    /// A report's details (e.g. why a backup failed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Change {
    pub fn of(kind: &'static str, record: &HostRecord) -> Self {
        Self {
            index: 0,
            kind,
            keygroup: record.keygroup.clone(),
            host: record.host.clone(),
            member: record.member.to_string(),
            seq: record.seq,
            addrs: record.addrs.clone(),
            services: record.services.clone(),
            reason: None,
        }
    }

    /// A member's report from the feed at `index` (the seed's e-mail to the owner).
    pub fn report(index: u64, member: &str, report: &hivemind_common::role::RoleReport) -> Self {
        Self {
            index: 0,
            kind: report.name(),
            keygroup: String::new(),
            host: member.to_string(),
            member: String::new(),
            seq: index,
            addrs: Vec::new(),
            services: Vec::new(),
            reason: Some(report.detail().to_string()),
        }
    }

    pub fn is_report(&self) -> bool {
        self.keygroup.is_empty()
    }
}

/// The numbered, bounded log of changes.
#[derive(Debug, Default)]
pub struct ChangeLog {
    changes: VecDeque<Change>,
    last: u64,
}

/// A page of the log after a cursor.
#[derive(Debug, PartialEq, Eq)]
pub enum Page {
    Changes {
        changes: Vec<Change>,
        next_after: u64,
    },
    /// The cursor points before the oldest change kept.
    Gone { first_index: u64 },
}

impl ChangeLog {
    pub fn push(&mut self, mut change: Change) -> u64 {
        self.last += 1;
        change.index = self.last;
        self.changes.push_back(change);
        while self.changes.len() > KEPT {
            self.changes.pop_front();
        }
        self.last
    }

    pub fn last(&self) -> u64 {
        self.last
    }

    /// Up to `limit` changes after `after`.
    pub fn after(&self, after: u64, limit: usize) -> Page {
        let first = self.changes.front().map_or(self.last + 1, |c| c.index);
        if after + 1 < first {
            return Page::Gone { first_index: first };
        }
        let changes: Vec<Change> = self
            .changes
            .iter()
            .filter(|c| c.index > after)
            .take(limit)
            .cloned()
            .collect();
        let next_after = changes.last().map_or(after.max(first - 1), |c| c.index);
        Page::Changes {
            changes,
            next_after,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hivemind_common::MemberId;

    fn record(seq: u64) -> HostRecord {
        HostRecord {
            member: MemberId::new(1).unwrap(),
            host: "web-1".into(),
            keygroup: "a/b/c".into(),
            addrs: vec![],
            services: vec![],
            seq,
            generation: 1,
            keygroup_version: 1,
        }
    }

    fn indexes(page: Page) -> (Vec<u64>, u64) {
        match page {
            Page::Changes {
                changes,
                next_after,
            } => (changes.iter().map(|c| c.index).collect(), next_after),
            Page::Gone { .. } => panic!("gone"),
        }
    }

    #[test]
    fn changes_are_numbered_and_paged_after_a_cursor() {
        let mut log = ChangeLog::default();
        assert_eq!(indexes(log.after(0, 10)), (vec![], 0));
        for seq in 1..=5 {
            log.push(Change::of("updated", &record(seq)));
        }
        assert_eq!(indexes(log.after(0, 2)), (vec![1, 2], 2));
        assert_eq!(indexes(log.after(2, 10)), (vec![3, 4, 5], 5));
        assert_eq!(indexes(log.after(5, 10)), (vec![], 5));
    }

    #[test]
    fn a_cursor_before_the_kept_changes_is_gone() {
        let mut log = ChangeLog::default();
        for seq in 0..(KEPT as u64 + 3) {
            log.push(Change::of("updated", &record(seq)));
        }
        assert_eq!(log.after(0, 10), Page::Gone { first_index: 4 });
        assert_eq!(log.after(2, 10), Page::Gone { first_index: 4 });
        assert_eq!(indexes(log.after(3, 1)), (vec![4], 4));
    }
}

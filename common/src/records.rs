//! Host records on the wire (DESIGN.md §5): what a `host` member publishes into a keygroup and a
//! `dns` member consumes. A record travels sealed with the keygroup's secret (ChaCha20-Poly1305,
//! `nonce || ciphertext`), framed on a subscription stream as `u32 length (BE) || sealed`.
//! Consumers keep the highest seq per (keygroup, member) ([`SeqBook`]).

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::seal::{Cipher, NONCE_LEN};
use crate::MemberId;
/// Largest frame a subscriber accepts: it bounds a hostile stream, and is above the largest
/// record a host may publish (its services, checks and outputs are bounded where they are
/// registered).
pub const MAX_FRAME: usize = 4 * 1024 * 1024;

/// A service instance on a host, as its record carries it (DESIGN.md §5, §6g).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Service {
    pub name: String,
    pub port: u16,
    /// `tcp` or `udp`.
    pub proto: String,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Consul's service ID, unique on its host; empty means the name.
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
    /// Where the service listens when that is not the host's address (Consul's `Address`).
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub address: Option<IpAddr>,
    /// Its health checks as the host last ran them; none means it is always passing.
    #[serde(default)]
    pub checks: Vec<CheckStatus>,
}

/// A check's or an instance's health in Consul's words, from best to worst.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
#[schema(as = CheckHealth)]
pub enum Health {
    Passing,
    Warning,
    Critical,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Passing => "passing",
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }

    /// `passing`, `warning` or `critical` (Consul's words, any case).
    pub fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_lowercase().as_str() {
            "passing" => Some(Self::Passing),
            "warning" => Some(Self::Warning),
            "critical" => Some(Self::Critical),
            _ => None,
        }
    }
}

/// One health check of a service, as its host last reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CheckStatus {
    /// Consul's `CheckID`: unique on its host (`service:<service id>` unless named).
    pub id: String,
    pub name: String,
    pub status: Health,
    /// What the check said when its status last changed.
    pub output: String,
}

impl Service {
    /// Consul's service ID: the given one, else the name.
    pub fn id(&self) -> &str {
        if self.id.is_empty() {
            &self.name
        } else {
            &self.id
        }
    }

    /// The worst of its checks; `passing` without checks.
    pub fn health(&self) -> Health {
        self.checks
            .iter()
            .map(|c| c.status)
            .max()
            .unwrap_or(Health::Passing)
    }

    /// Whether DNS answers with it and nginx routes to it: unless a check is critical (passing
    /// and warning instances serve, as in Consul's DNS).
    pub fn serves(&self) -> bool {
        self.health() != Health::Critical
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRecord {
    pub member: MemberId,
    pub host: String,
    pub keygroup: String,
    pub addrs: Vec<IpAddr>,
    pub services: Vec<Service>,
    /// Grows with every change of this host's records; persisted by the publisher.
    pub seq: u64,
    pub generation: u64,
    /// The keygroup config version the publisher knew when it sealed this record: config
    /// changes travel on the stream too (DESIGN.md §5 event [7]), so a subscriber that knows an
    /// older version re-reads the config even if it missed the event.
    pub keygroup_version: u64,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("the record does not open with the keygroup secret")]
    Seal,
    #[error("the record opened but does not decode: {0}")]
    Decode(String),
}

/// Seals `record` with the keygroup `secret` (32 bytes) and a caller-chosen random `nonce`.
pub fn seal(secret: &[u8], nonce: [u8; NONCE_LEN], record: &HostRecord) -> Option<Vec<u8>> {
    Some(Cipher::new(secret)?.seal(nonce, &crate::encode(record)))
}

/// Opens a sealed record; never decodes what did not open.
pub fn open(secret: &[u8], sealed: &[u8]) -> Result<HostRecord, OpenError> {
    let plain = Cipher::new(secret)
        .ok_or(OpenError::Seal)?
        .open(sealed)
        .map_err(|_| OpenError::Seal)?;
    crate::decode(&plain).map_err(|e| OpenError::Decode(e.to_string()))
}

/// A frame of a subscription stream: `u32 length (BE) || payload`.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

/// Splits complete frames off the front of `buf`; answers them, or an error for a frame larger
/// than [`MAX_FRAME`] (the stream is then abandoned).
pub fn take_frames(buf: &mut Vec<u8>) -> Result<Vec<Vec<u8>>, usize> {
    let mut frames = Vec::new();
    loop {
        if buf.len() < 4 {
            return Ok(frames);
        }
        let len = u32::from_be_bytes(buf[..4].try_into().expect("4 bytes")) as usize;
        if len > MAX_FRAME {
            return Err(len);
        }
        if buf.len() < 4 + len {
            return Ok(frames);
        }
        frames.push(buf[4..4 + len].to_vec());
        buf.drain(..4 + len);
    }
}

/// What a consumer holds: the newest record per (keygroup, member), newest by seq.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeqBook {
    records: BTreeMap<(String, MemberId), HostRecord>,
}

impl SeqBook {
    /// Keeps `record` if its seq is higher than the one held; answers whether it did (stale
    /// and duplicate records change nothing).
    pub fn apply(&mut self, record: HostRecord) -> bool {
        let key = (record.keygroup.clone(), record.member);
        match self.records.get(&key) {
            Some(held) if held.seq >= record.seq => false,
            _ => {
                self.records.insert(key, record);
                true
            }
        }
    }

    /// Forgets every record of `member` (it failed or left); answers whether any went.
    pub fn remove_member(&mut self, member: MemberId) -> bool {
        let before = self.records.len();
        self.records.retain(|(_, m), _| *m != member);
        self.records.len() != before
    }

    /// Forgets every record of `keygroup` (tombstoned, or no longer served).
    pub fn remove_keygroup(&mut self, keygroup: &str) -> bool {
        let before = self.records.len();
        self.records.retain(|(k, _), _| k != keygroup);
        self.records.len() != before
    }

    /// Removes every record `select` picks; answers them.
    pub fn remove_where(&mut self, select: impl Fn(&HostRecord) -> bool) -> Vec<HostRecord> {
        let mut removed = Vec::new();
        self.records.retain(|_, r| {
            let keep = !select(r);
            if !keep {
                removed.push(r.clone());
            }
            keep
        });
        removed
    }

    pub fn records(&self) -> impl Iterator<Item = &HostRecord> {
        self.records.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record(member: u64, seq: u64) -> HostRecord {
        HostRecord {
            member: MemberId::new(member).unwrap(),
            host: format!("web-{member}"),
            keygroup: "a/b/c".into(),
            addrs: vec![IpAddr::from([127, 0, 0, 1])],
            services: vec![Service {
                name: "web".into(),
                port: 80,
                proto: "tcp".into(),
                tags: vec!["v1".into()],
                id: "web-a".into(),
                meta: BTreeMap::from([("k".into(), "v".into())]),
                address: Some(IpAddr::from([10, 0, 0, 9])),
                checks: vec![CheckStatus {
                    id: "service:web-a".into(),
                    name: "Service 'web' check".into(),
                    status: Health::Warning,
                    output: "HTTP GET http://x/: 429".into(),
                }],
            }],
            seq,
            generation: 1,
            keygroup_version: 1,
        }
    }

    #[test]
    fn a_sealed_record_opens_only_with_its_secret() {
        let sealed = seal(&[1; 32], [9; 12], &record(1, 3)).unwrap();
        assert_eq!(open(&[1; 32], &sealed).unwrap(), record(1, 3));
        assert_eq!(open(&[2; 32], &sealed), Err(OpenError::Seal));
        assert_eq!(open(&[1; 32], &sealed[..5]), Err(OpenError::Seal));
        assert!(seal(&[1; 5], [9; 12], &record(1, 3)).is_none());
    }

    #[test]
    fn an_instance_serves_unless_a_check_is_critical() {
        let mut service = record(1, 1).services.remove(0);
        assert_eq!(service.id(), "web-a");
        assert_eq!(
            (service.health(), service.serves()),
            (Health::Warning, true)
        );
        service.checks.push(CheckStatus {
            status: Health::Critical,
            ..service.checks[0].clone()
        });
        assert_eq!(
            (service.health(), service.serves()),
            (Health::Critical, false)
        );
        service.checks.clear();
        service.id.clear();
        assert_eq!((service.id(), service.health()), ("web", Health::Passing));
        assert_eq!(Health::parse("Passing"), Some(Health::Passing));
        assert_eq!(Health::parse("ok"), None);
    }

    #[test]
    fn frames_split_across_reads_reassemble() {
        let mut stream = frame(b"one");
        stream.extend(frame(b"second"));
        let mut buf = stream[..5].to_vec();
        assert_eq!(take_frames(&mut buf).unwrap(), Vec::<Vec<u8>>::new());
        buf.extend_from_slice(&stream[5..]);
        assert_eq!(
            take_frames(&mut buf).unwrap(),
            vec![b"one".to_vec(), b"second".to_vec()]
        );
        assert!(buf.is_empty());
        let mut huge = ((MAX_FRAME + 1) as u32).to_be_bytes().to_vec();
        assert!(take_frames(&mut huge).is_err());
    }

    #[test]
    fn stale_and_duplicate_records_are_ignored() {
        let mut book = SeqBook::default();
        assert!(book.apply(record(1, 5)));
        assert!(!book.apply(record(1, 5)), "duplicate");
        assert!(!book.apply(record(1, 4)), "stale");
        assert!(book.apply(record(1, 6)));
        assert!(book.remove_member(MemberId::new(1).unwrap()));
        assert_eq!(book.records().count(), 0);
    }

    proptest! {
        /// Whatever order updates arrive in (reordered, repeated), the book ends at the
        /// highest seq of each member.
        #[test]
        fn the_book_converges_to_the_highest_seq(updates in proptest::collection::vec((1u64..4, 0u64..20), 1..50)) {
            let mut book = SeqBook::default();
            for (member, seq) in &updates {
                book.apply(record(*member, *seq));
            }
            for r in book.records() {
                let best = updates.iter().filter(|(m, _)| *m == r.member.get()).map(|(_, s)| *s).max();
                prop_assert_eq!(Some(r.seq), best);
            }
        }
    }
}

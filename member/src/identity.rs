//! The member's durable state in `<data-dir>/member` (sled): the member id, its generation
//! (bumped at every start, so a restarted member is a new incarnation), the last epoch it saw,
//! its membership view with the feed position it reached, and each role's own key space.

use std::path::Path;
use std::sync::Arc;

use hivemind_common::role::{RoleStore, StoreError};

use hivemind_common::MemberId;

use crate::view::MembershipView;

const ID: &[u8] = b"id";
const GENERATION: &[u8] = b"generation";
const EPOCH: &[u8] = b"epoch";
const VIEW: &[u8] = b"view";

/// The member store's page cache.
const STORE_CACHE_BYTES: u64 = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("member store at {path}")]
    Store { path: String, source: sled::Error },
    #[error("member store holds a corrupt {what}")]
    Corrupt { what: &'static str },
}

/// The member's durable identity store.
#[derive(Clone)]
pub struct MemberStore {
    db: sled::Db,
}

/// Who this process is: a stable id and this run's generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub id: MemberId,
    pub generation: u64,
}

impl MemberStore {
    pub fn open(dir: &Path) -> Result<Self, IdentityError> {
        // What is read back is read at start (the id, the view, the roles' keys); sled's
        // default page cache of 1 GiB would keep every rewritten view resident instead.
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(STORE_CACHE_BYTES)
            .open()
            .map_err(|source| IdentityError::Store {
                path: dir.display().to_string(),
                source,
            })?;
        Ok(Self { db })
    }

    fn err(&self, source: sled::Error) -> IdentityError {
        IdentityError::Store {
            path: "member".into(),
            source,
        }
    }

    fn get_u64(&self, key: &[u8], what: &'static str) -> Result<Option<u64>, IdentityError> {
        match self.db.get(key).map_err(|e| self.err(e))? {
            None => Ok(None),
            Some(v) => Ok(Some(u64::from_be_bytes(
                v.as_ref()
                    .try_into()
                    .map_err(|_| IdentityError::Corrupt { what })?,
            ))),
        }
    }

    fn put_u64(&self, key: &[u8], value: u64) -> Result<(), IdentityError> {
        self.db
            .insert(key, &value.to_be_bytes())
            .map_err(|e| self.err(e))?;
        self.db.flush().map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Loads the id (creating a random one on first start) and bumps the generation.
    pub fn start_incarnation<R: rand::Rng>(&self, rng: &mut R) -> Result<Identity, IdentityError> {
        let id = match self.get_u64(ID, "id")? {
            Some(raw) => MemberId::new(raw).map_err(|_| IdentityError::Corrupt { what: "id" })?,
            None => {
                let id = MemberId::random(rng);
                self.put_u64(ID, id.get())?;
                id
            }
        };
        let generation = self.get_u64(GENERATION, "generation")?.unwrap_or(0) + 1;
        self.put_u64(GENERATION, generation)?;
        Ok(Identity { id, generation })
    }

    /// The generation recorded last (`None` before the first start).
    pub fn generation(&self) -> Result<Option<u64>, IdentityError> {
        self.get_u64(GENERATION, "generation")
    }

    /// Records a generation reached by renewal, so the next start begins above it.
    pub fn set_generation(&self, generation: u64) -> Result<(), IdentityError> {
        self.put_u64(GENERATION, generation)
    }

    pub fn epoch(&self) -> Result<Option<u64>, IdentityError> {
        self.get_u64(EPOCH, "epoch")
    }

    pub fn set_epoch(&self, epoch: u64) -> Result<(), IdentityError> {
        self.put_u64(EPOCH, epoch)
    }

    /// The membership view and feed position saved by the last run, if any.
    pub fn view(&self) -> Result<Option<MembershipView>, IdentityError> {
        match self.db.get(VIEW).map_err(|e| self.err(e))? {
            None => Ok(None),
            Some(bytes) => hivemind_common::decode(&bytes)
                .map(Some)
                .map_err(|_| IdentityError::Corrupt { what: "view" }),
        }
    }

    /// Saves the view (and with it the feed position) durably.
    pub fn set_view(&self, view: &MembershipView) -> Result<(), IdentityError> {
        self.db
            .insert(VIEW, hivemind_common::encode(view))
            .map_err(|e| self.err(e))?;
        self.db.flush().map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The durable key space of role `name`.
    pub fn role_store(&self, name: &str) -> Result<Arc<dyn RoleStore>, IdentityError> {
        let tree = self
            .db
            .open_tree(format!("role/{name}"))
            .map_err(|e| self.err(e))?;
        Ok(Arc::new(SledRoleStore {
            tree,
            db: self.db.clone(),
        }))
    }
}

struct SledRoleStore {
    tree: sled::Tree,
    db: sled::Db,
}

impl RoleStore for SledRoleStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.tree
            .get(key)
            .map(|v| v.map(|v| v.to_vec()))
            .map_err(|e| StoreError(e.to_string()))
    }

    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.tree
            .insert(key, value)
            .map_err(|e| StoreError(e.to_string()))?;
        self.db.flush().map_err(|e| StoreError(e.to_string()))?;
        Ok(())
    }

    fn remove(&self, key: &[u8]) -> Result<(), StoreError> {
        self.tree
            .remove(key)
            .map_err(|e| StoreError(e.to_string()))?;
        self.db.flush().map_err(|e| StoreError(e.to_string()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Opens the store again once the previous handle let go of it (sled releases its file
    /// lock from a background thread, shortly after the last handle is dropped).
    fn reopen(dir: &Path) -> MemberStore {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match MemberStore::open(dir) {
                Ok(store) => return store,
                Err(e) if std::time::Instant::now() > deadline => panic!("{e}"),
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
            }
        }
    }

    #[test]
    fn a_restart_keeps_the_id_and_bumps_the_generation() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = rand::thread_rng();
        let first = MemberStore::open(dir.path())
            .unwrap()
            .start_incarnation(&mut rng)
            .unwrap();
        let second = reopen(dir.path()).start_incarnation(&mut rng).unwrap();
        assert_eq!(first.id, second.id);
        assert_eq!((first.generation, second.generation), (1, 2));
    }

    #[test]
    fn role_state_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = MemberStore::open(dir.path()).unwrap();
        store.role_store("host").unwrap().put(b"seq", b"7").unwrap();
        assert_eq!(store.role_store("dns").unwrap().get(b"seq").unwrap(), None);
        drop(store);
        let store = reopen(dir.path());
        assert_eq!(
            store.role_store("host").unwrap().get(b"seq").unwrap(),
            Some(b"7".to_vec())
        );
    }

    #[test]
    fn the_epoch_is_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let store = MemberStore::open(dir.path()).unwrap();
        assert_eq!(store.epoch().unwrap(), None);
        store.set_epoch(3).unwrap();
        drop(store);
        assert_eq!(reopen(dir.path()).epoch().unwrap(), Some(3));
    }
}

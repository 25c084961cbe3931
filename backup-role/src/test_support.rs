//! What the crate's tests share: a ledger that grants or refuses consumes, a space served over
//! HTTP on loopback (its public reads, and the internal upload and reads an owner calls),
//! trees with the awkward cases, and a comparison of two trees.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use axum::routing::{get, post};
use hivemind_common::backup::{BackupOp, BackupOutcome, BackupState};
use hivemind_common::role::{
    BoxFuture, Claim, ControlPlaneClient, CpCallError, KeygroupInfo, RoleReport,
};

use crate::space::SpaceStore;

/// A control plane that grants or refuses every consume, and remembers what it was asked.
#[derive(Default)]
pub struct Ledger {
    pub refuse: bool,
    pub asked: Mutex<Vec<BackupOp>>,
}

fn unused<T>() -> BoxFuture<Result<T, CpCallError>> {
    unreachable!("a space asks the control plane only about its ledger")
}

impl ControlPlaneClient for Ledger {
    fn keygroup(&self, _: String) -> BoxFuture<Result<Option<KeygroupInfo>, CpCallError>> {
        unused()
    }
    fn join_keygroup(&self, _: String) -> BoxFuture<Result<KeygroupInfo, CpCallError>> {
        unused()
    }
    fn claim(&self, _: String) -> BoxFuture<Result<Claim, CpCallError>> {
        unused()
    }
    fn report(&self, _: RoleReport) -> BoxFuture<Result<u64, CpCallError>> {
        unused()
    }
    fn backup(&self, op: BackupOp) -> BoxFuture<Result<BackupOutcome, CpCallError>> {
        self.asked.lock().unwrap().push(op);
        let refuse = self.refuse;
        Box::pin(async move {
            if refuse {
                Err(CpCallError {
                    code: "unknown_reservation".into(),
                    message: "expired".into(),
                })
            } else {
                Ok(BackupOutcome::Consumed)
            }
        })
    }
    fn backup_state(&self) -> BoxFuture<Result<BackupState, CpCallError>> {
        unused()
    }
}

/// Serves `space`'s public chunk routes on a loopback port; answers its address.
pub async fn serve(space: Arc<SpaceStore>) -> String {
    let shared = crate::RoleState {
        owner: None,
        space: Some(space),
        cp: Arc::new(Ledger::default()),
    };
    let app = axum::Router::new()
        .route(
            "/v1/roles/backup/chunks/{owner}",
            get(crate::api::list_route),
        )
        .route(
            "/v1/roles/backup/chunks/{owner}/read",
            post(crate::api::read_many_route),
        )
        .route(
            "/internal/v1/roles/backup/chunks/{owner}/read",
            post(crate::api::read_many_route),
        )
        .route(
            "/internal/v1/roles/backup/upload",
            post(crate::api::upload_route),
        )
        .with_state(shared);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A small tree with the awkward cases: nesting, an empty file, odd modes, an old mtime,
/// symlinks (one dangling), a file of several chunks, text that compresses.
pub fn make_tree(root: &Path) {
    fs::create_dir_all(root.join("a/b/c")).unwrap();
    fs::create_dir_all(root.join("other")).unwrap();
    fs::write(root.join("a/empty"), b"").unwrap();
    fs::write(root.join("a/b/c/odd"), b"odd mode").unwrap();
    fs::set_permissions(root.join("a/b/c/odd"), fs::Permissions::from_mode(0o741)).unwrap();
    fs::write(root.join("other/text"), b"hivemind ".repeat(5000)).unwrap();
    fs::write(root.join("big"), noise(9, 3_000_000)).unwrap();
    fs::File::options()
        .write(true)
        .open(root.join("big"))
        .unwrap()
        .set_modified(UNIX_EPOCH + Duration::from_secs(1_000_000_000))
        .unwrap();
    symlink("a/empty", root.join("link")).unwrap();
    symlink("/nowhere/at/all", root.join("dangling")).unwrap();
    fs::set_permissions(root.join("a/b"), fs::Permissions::from_mode(0o750)).unwrap();
}

/// Every entry below `root`: its kind, mode, mtime, and content or target.
pub fn inventory(root: &Path) -> BTreeMap<PathBuf, String> {
    fn walk(root: &Path, path: &Path, out: &mut BTreeMap<PathBuf, String>) {
        let meta = fs::symlink_metadata(path).unwrap();
        let rel = path.strip_prefix(root).unwrap().to_path_buf();
        let what = if meta.is_dir() {
            let mut children: Vec<PathBuf> = fs::read_dir(path)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            children.sort();
            for child in children {
                walk(root, &child, out);
            }
            "dir".to_string()
        } else if meta.is_symlink() {
            format!("-> {}", fs::read_link(path).unwrap().display())
        } else {
            blake3::hash(&fs::read(path).unwrap()).to_hex().to_string()
        };
        let mode = if meta.is_symlink() {
            0
        } else {
            meta.mode() & 0o7777
        };
        out.insert(
            rel,
            format!("{what} {mode:o} {}.{}", meta.mtime(), meta.mtime_nsec()),
        );
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

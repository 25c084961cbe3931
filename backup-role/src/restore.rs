//! Bringing a snapshot back (the seed's "restauration": fetch the chunks, rebuild the
//! directory), shared by the owner member and the CLI on a fresh machine: both know where the
//! chunks are ([`Source`]) and hold the owner key. Tree blobs are fetched a directory level at
//! a time; file content in jobs of about [`JOB_BYTES`], many chunks per request, several
//! requests at once, opened on every core, and written into the files at their offsets while
//! the next job is fetched: memory stays bounded by two jobs, never a whole file.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::stream::{self, StreamExt, TryStreamExt};
use hivemind_common::backup::{ChunkId, SnapshotRecord};
use serde::Serialize;

use crate::crypto::OwnerKey;
use crate::progress::Progress;
use crate::tree::{self, v1, FormatError, Item, ItemKind, NodeKind, SnapshotRoot, Tree};
use crate::wire::Spaces;

/// Plain bytes of file content a restore job fetches and writes at once.
pub const JOB_BYTES: u64 = 4 << 20;
/// Chunk ids per read request, and read requests in flight.
const IDS_PER_READ: usize = 64;
const READS_IN_FLIGHT: usize = 6;

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(
        "the key does not open snapshot {0}'s manifest: a wrong key, or another owner's snapshot"
    )]
    WrongKey(String),
    #[error("chunk {0} is on no reachable space ({1})")]
    Unavailable(ChunkId, String),
    #[error("snapshot {snapshot} has nothing at {path}")]
    NoSuchPath { snapshot: String, path: PathBuf },
    #[error("the manifest of snapshot {0} does not decode: {1}")]
    BadManifest(String, String),
    #[error("snapshot {0}: {1}")]
    Format(String, FormatError),
    #[error("restoring into {path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(
        "no copy of chunk {0} that was read opens with this key (a wrong key, or damaged copies)"
    )]
    DoesNotOpen(ChunkId),
}

/// What a restore wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct RestoreView {
    pub snapshot: String,
    pub files: u64,
    pub bytes: u64,
}

/// Sealed chunks opened and checked against their ids on the compute threads (rayon's, one
/// per core), off the task runtime: each with its sealed bytes and its plaintext (`None`: it
/// does not open with `key`, a damaged copy or another owner's).
pub(crate) async fn open_on_cores(
    key: &OwnerKey,
    sealed: Vec<(ChunkId, crate::tree::ByteBuf)>,
) -> Vec<(ChunkId, Vec<u8>, Option<Vec<u8>>)> {
    let key = key.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    rayon::spawn(move || {
        let opened = sealed
            .into_iter()
            .map(|(id, b)| {
                let plain = key.open(&id, &b.0).ok();
                (id, b.0, plain)
            })
            .collect();
        let _ = tx.send(opened);
    });
    rx.await.expect("opening chunks does not panic")
}

/// Where an owner's chunks can be read.
pub struct Source {
    pub spaces: Spaces,
    pub owner: String,
    /// Each chunk's spaces (HTTP addresses), tried in order.
    pub at: BTreeMap<ChunkId, Vec<String>>,
}

/// A snapshot read back: what to write, and every blob and chunk it references.
pub struct Walked {
    pub items: Vec<Item>,
    pub referenced: BTreeSet<ChunkId>,
}

impl Source {
    /// One chunk, opened and checked against its id.
    pub async fn open(&self, key: &OwnerKey, id: &ChunkId) -> Result<Vec<u8>, RestoreError> {
        let mut found = self.open_many(key, vec![*id]).await?;
        Ok(found.remove(id).expect("open_many answers every id"))
    }

    /// Chunks, opened and checked: each from the first of its spaces whose copy opens, many
    /// per request and several requests at once. Fails naming a chunk no copy of which opens.
    pub async fn open_many(
        &self,
        key: &OwnerKey,
        ids: Vec<ChunkId>,
    ) -> Result<HashMap<ChunkId, Vec<u8>>, RestoreError> {
        let mut pending: BTreeSet<ChunkId> = ids.into_iter().collect();
        let mut out = HashMap::with_capacity(pending.len());
        let mut read_one: BTreeSet<ChunkId> = BTreeSet::new();
        let mut why = "no space holds it".to_string();
        for attempt in 0.. {
            let mut by_space: BTreeMap<&str, Vec<ChunkId>> = BTreeMap::new();
            let mut exhausted = Vec::new();
            for id in &pending {
                match self.at.get(id).and_then(|a| a.get(attempt)) {
                    Some(addr) => by_space.entry(addr).or_default().push(*id),
                    None => exhausted.push(*id),
                }
            }
            if let Some(id) = exhausted.first() {
                return Err(if read_one.contains(id) {
                    RestoreError::DoesNotOpen(*id)
                } else {
                    RestoreError::Unavailable(*id, why)
                });
            }
            if by_space.is_empty() {
                break;
            }
            let requests: Vec<(String, Vec<ChunkId>)> = by_space
                .into_iter()
                .flat_map(|(addr, ids)| {
                    ids.chunks(IDS_PER_READ)
                        .map(|c| (addr.to_string(), c.to_vec()))
                        .collect::<Vec<_>>()
                })
                .collect();
            let mut answers = Vec::with_capacity(requests.len());
            for wave in requests.chunks(READS_IN_FLIGHT) {
                let reads = wave
                    .iter()
                    .map(|(addr, ids)| self.read_opened(key, addr, ids));
                answers.extend(futures::future::join_all(reads).await);
            }
            for answer in answers {
                match answer {
                    Ok(opened) => {
                        for (id, plain) in opened {
                            match plain {
                                Some(plain) if pending.remove(&id) => {
                                    out.insert(id, plain);
                                }
                                Some(_) => {}
                                None => {
                                    read_one.insert(id);
                                }
                            }
                        }
                    }
                    Err(e) => why = e,
                }
            }
            if pending.is_empty() {
                break;
            }
        }
        Ok(out)
    }

    /// One read request: the chunks `addr` answered, each opened (`None`: it did not open).
    async fn read_opened(
        &self,
        key: &OwnerKey,
        addr: &str,
        ids: &[ChunkId],
    ) -> Result<Vec<(ChunkId, Option<Vec<u8>>)>, String> {
        let sealed = self
            .spaces
            .read_many(addr, &self.owner, ids)
            .await
            .map_err(|e| e.to_string())?;
        Ok(open_on_cores(key, sealed)
            .await
            .into_iter()
            .map(|(id, _, plain)| (id, plain))
            .collect())
    }

    /// The snapshot's items (those at or below `sub`, and the directories on the way) and
    /// everything it references, in either format.
    pub async fn walk(
        &self,
        key: &OwnerKey,
        record: &SnapshotRecord,
        sub: Option<&Path>,
    ) -> Result<Walked, RestoreError> {
        let wrong_key = |e: RestoreError| match e {
            // The root's copies do not open: the key is not the owner's.
            RestoreError::DoesNotOpen(_) => RestoreError::WrongKey(record.id.clone()),
            e => e,
        };
        let first = *record
            .manifest
            .first()
            .ok_or_else(|| RestoreError::BadManifest(record.id.clone(), "empty".into()))?;
        let first_plain = self.open(key, &first).await.map_err(wrong_key)?;
        let mut referenced: BTreeSet<ChunkId> = record.manifest.iter().copied().collect();
        let items = match SnapshotRoot::decode(&first_plain) {
            Ok(Some(root)) => self.walk_trees(key, root, sub, &mut referenced).await?,
            Ok(None) => {
                let mut pieces = vec![first_plain];
                let rest = self
                    .open_many(key, record.manifest[1..].to_vec())
                    .await
                    .map_err(wrong_key)?;
                pieces.extend(record.manifest[1..].iter().map(|id| rest[id].clone()));
                let manifest = v1::Manifest::from_pieces(&pieces)
                    .map_err(|e| RestoreError::BadManifest(record.id.clone(), e.to_string()))?;
                manifest
                    .items()
                    .into_iter()
                    .filter(|i| tree::leads_to(&i.path, sub))
                    .collect()
            }
            Err(e) => return Err(RestoreError::Format(record.id.clone(), e)),
        };
        for item in &items {
            if let ItemKind::File { chunks, .. } = &item.kind {
                referenced.extend(chunks.iter().map(|(id, _)| *id));
            }
        }
        Ok(Walked { items, referenced })
    }

    /// Reads the tree blobs a level at a time, from the roots down.
    async fn walk_trees(
        &self,
        key: &OwnerKey,
        root: SnapshotRoot,
        sub: Option<&Path>,
        referenced: &mut BTreeSet<ChunkId>,
    ) -> Result<Vec<Item>, RestoreError> {
        let mut items = Vec::new();
        let mut level: Vec<(PathBuf, ChunkId)> = Vec::new();
        for node in &root.roots {
            let path = node.name.path().to_path_buf();
            if !tree::leads_to(&path, sub) {
                continue;
            }
            if let NodeKind::Dir { tree, .. } = &node.kind {
                level.push((path.clone(), *tree));
            }
            items.push(Item::of(path, node));
        }
        while !level.is_empty() {
            referenced.extend(level.iter().map(|(_, id)| *id));
            let blobs = self
                .open_many(key, level.iter().map(|(_, id)| *id).collect())
                .await?;
            let mut next = Vec::new();
            for (path, id) in level {
                let tree = Tree::decode(&blobs[&id]).map_err(|e| {
                    RestoreError::BadManifest(path.display().to_string(), e.to_string())
                })?;
                for node in tree.nodes {
                    let child = path.join(node.name.path());
                    if !tree::leads_to(&child, sub) {
                        continue;
                    }
                    if let NodeKind::Dir { tree, .. } = &node.kind {
                        next.push((child.clone(), *tree));
                    }
                    items.push(Item::of(child, &node));
                }
            }
            level = next;
        }
        Ok(items)
    }
}

/// A run of one file's chunks a job writes at `offset`.
struct Part {
    file: usize,
    chunks: std::ops::Range<usize>,
    offset: u64,
    last: bool,
}

/// Cuts the files into jobs of about [`JOB_BYTES`] of content.
fn jobs(files: &[&Item]) -> Vec<Vec<Part>> {
    let mut jobs = Vec::new();
    let mut job = Vec::new();
    let mut bytes = 0u64;
    for (f, item) in files.iter().enumerate() {
        let ItemKind::File { chunks, .. } = &item.kind else {
            continue;
        };
        let (mut start, mut offset) = (0, 0u64);
        for (i, (_, len)) in chunks.iter().enumerate() {
            bytes += u64::from(*len);
            if bytes >= JOB_BYTES {
                let end = i + 1;
                let part_len: u64 = chunks[start..end].iter().map(|(_, l)| u64::from(*l)).sum();
                job.push(Part {
                    file: f,
                    chunks: start..end,
                    offset,
                    last: end == chunks.len(),
                });
                offset += part_len;
                start = end;
                jobs.push(std::mem::take(&mut job));
                bytes = 0;
            }
        }
        if start < chunks.len() || chunks.is_empty() {
            job.push(Part {
                file: f,
                chunks: start..chunks.len(),
                offset,
                last: true,
            });
        }
    }
    if !job.is_empty() {
        jobs.push(job);
    }
    jobs
}

/// Writes one job's parts (blocking).
fn write_job(
    to: &Path,
    files: &[Item],
    parts: &[Part],
    content: &HashMap<ChunkId, Vec<u8>>,
    progress: &Progress,
) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    for part in parts {
        let item = &files[part.file];
        let ItemKind::File { size, chunks } = &item.kind else {
            continue;
        };
        let target = tree::target_of(to, &item.path);
        let file = if part.offset == 0 {
            std::fs::File::create(&target)?
        } else {
            std::fs::OpenOptions::new().write(true).open(&target)?
        };
        let mut at = part.offset;
        for (id, len) in &chunks[part.chunks.clone()] {
            let data = content
                .get(id)
                .ok_or_else(|| std::io::Error::other(format!("chunk {id} not fetched")))?;
            if data.len() != *len as usize {
                return Err(std::io::Error::other(format!(
                    "chunk {id} has the wrong length"
                )));
            }
            file.write_all_at(data, at)?;
            at += u64::from(*len);
            progress.bytes_done(u64::from(*len));
        }
        if part.last {
            if at != *size {
                return Err(std::io::Error::other(format!(
                    "{}: {at} bytes restored of {size}",
                    target.display()
                )));
            }
            tree::finish_file(&target, &item.meta)?;
            progress.file_done();
        }
    }
    Ok(())
}

/// Restores `record` (or only what lies at or below `sub`) under `to`, byte-identical:
/// content, modes, mtimes, symlink targets.
pub async fn restore(
    key: &OwnerKey,
    record: &SnapshotRecord,
    source: &Source,
    to: &Path,
    sub: Option<&Path>,
    progress: &Arc<Progress>,
) -> Result<RestoreView, RestoreError> {
    progress.start();
    let result = restore_walked(key, record, source, to, sub, progress).await;
    progress.finish();
    result
}

async fn restore_walked(
    key: &OwnerKey,
    record: &SnapshotRecord,
    source: &Source,
    to: &Path,
    sub: Option<&Path>,
    progress: &Arc<Progress>,
) -> Result<RestoreView, RestoreError> {
    let walked = source.walk(key, record, sub).await?;
    let selected: Vec<Item> = walked
        .items
        .into_iter()
        .filter(|i| tree::selected(&i.path, sub))
        .collect();
    if let (Some(sub), true) = (sub, selected.is_empty()) {
        return Err(RestoreError::NoSuchPath {
            snapshot: record.id.clone(),
            path: sub.to_path_buf(),
        });
    }
    let io = |error| RestoreError::Io {
        path: to.to_path_buf(),
        error,
    };
    let mut view = RestoreView {
        snapshot: record.id.clone(),
        ..Default::default()
    };
    let mut dirs = Vec::new();
    let mut files = Vec::new();
    for item in selected {
        match &item.kind {
            ItemKind::File { size, .. } => {
                view.files += 1;
                view.bytes += size;
                if let Some(parent) = tree::target_of(to, &item.path).parent() {
                    std::fs::create_dir_all(parent).map_err(io)?;
                }
                files.push(item);
            }
            ItemKind::Dir => {
                tree::make_entry(to, &item).map_err(io)?;
                dirs.push((item.path.clone(), item.meta));
            }
            ItemKind::Symlink { .. } => tree::make_entry(to, &item).map_err(io)?,
        }
    }
    progress.set_totals(view.files, view.bytes);
    let files = Arc::new(files);
    let refs: Vec<&Item> = files.iter().collect();
    let jobs = jobs(&refs);
    let fetched = stream::iter(jobs)
        .map(|parts| {
            let files = files.clone();
            async move {
                let ids: BTreeSet<ChunkId> = parts
                    .iter()
                    .flat_map(|p| match &files[p.file].kind {
                        ItemKind::File { chunks, .. } => chunks[p.chunks.clone()]
                            .iter()
                            .map(|(id, _)| *id)
                            .collect::<Vec<_>>(),
                        _ => Vec::new(),
                    })
                    .collect();
                let content = source.open_many(key, ids.into_iter().collect()).await?;
                Ok::<_, RestoreError>((parts, content))
            }
        })
        .buffered(2);
    futures::pin_mut!(fetched);
    while let Some((parts, content)) = fetched.try_next().await? {
        let (to, files) = (to.to_path_buf(), files.clone());
        // Written on a blocking thread while the next job is fetched.
        let progress = progress.clone();
        tokio::task::spawn_blocking(move || write_job(&to, &files, &parts, &content, &progress))
            .await
            .expect("writing does not panic")
            .map_err(io)?;
    }
    tree::finish_dirs(to, &mut dirs).map_err(io)?;
    Ok(view)
}

/// `ms` since the Unix epoch as RFC 3339 in UTC (`2026-11-26T21:00:02Z`).
pub fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
#[path = "restore/tests.rs"]
mod tests;

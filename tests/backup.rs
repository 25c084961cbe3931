//! End-to-end: the backup role (seed 004, DESIGN.md §6d) with real processes: 3 CP members,
//! spaces, an owner; backups driven through the CLI; trees compared byte for byte (content,
//! modes, file mtimes, symlink targets).

mod support;

use std::collections::BTreeMap;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use hivemind_control_plane::ops::Op;
use serde_json::Value;
use support::{cli, get_json, stderr, stdout, wait_for, Cluster};

/// What a tree holds, by path relative to its root: kind, content, mode, mtime.
fn inventory(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let rel = path.strip_prefix(root).unwrap().to_path_buf();
        let mode = meta.mode() & 0o7777;
        let what = if meta.is_dir() {
            for e in std::fs::read_dir(&path).unwrap() {
                stack.push(e.unwrap().path());
            }
            // A directory's mtime moves with its children: compared for the leaves only.
            format!("dir {mode:o}")
        } else if meta.file_type().is_symlink() {
            format!("link -> {}", std::fs::read_link(&path).unwrap().display())
        } else {
            let data = std::fs::read(&path).unwrap();
            format!(
                "file {mode:o} {}.{:09} len {} blake3 {}",
                meta.mtime(),
                meta.mtime_nsec(),
                data.len(),
                blake3_hex(&data)
            )
        };
        out.insert(rel, what);
    }
    out
}

fn blake3_hex(data: &[u8]) -> String {
    // A cheap, good-enough digest for comparisons (not a security property).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for chunk in data.chunks(8) {
        for b in chunk {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

fn assert_same_tree(original: &Path, restored: &Path) {
    let (a, b) = (inventory(original), inventory(restored));
    if a != b {
        let only_a: Vec<_> = a
            .iter()
            .filter(|(k, v)| b.get(*k) != Some(v))
            .take(5)
            .collect();
        let only_b: Vec<_> = b
            .iter()
            .filter(|(k, v)| a.get(*k) != Some(v))
            .take(5)
            .collect();
        panic!(
            "{} and {} differ ({} vs {} entries): original has {only_a:?}, restored has {only_b:?}",
            original.display(),
            restored.display(),
            a.len(),
            b.len()
        );
    }
}

/// Deterministic pseudo-random bytes.
fn noise(seed: u64, len: usize) -> Vec<u8> {
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

/// The tree the issue names: nested directories, empty files, odd modes, old mtimes, symlinks
/// including a dangling one, a 24 MB binary file, hundreds of small files.
fn make_tree(root: &Path) {
    std::fs::create_dir_all(root.join("deep/er/and/deeper")).unwrap();
    std::fs::create_dir_all(root.join("empty-dir")).unwrap();
    std::fs::write(root.join("deep/empty"), b"").unwrap();
    std::fs::write(root.join("deep/er/and/deeper/leaf.txt"), b"leaf\n").unwrap();
    std::fs::write(root.join("odd-mode"), b"x").unwrap();
    std::fs::set_permissions(
        root.join("odd-mode"),
        std::fs::Permissions::from_mode(0o4751),
    )
    .unwrap();
    std::fs::write(root.join("read-only"), b"ro").unwrap();
    std::fs::set_permissions(
        root.join("read-only"),
        std::fs::Permissions::from_mode(0o400),
    )
    .unwrap();
    std::fs::write(root.join("big.bin"), noise(24, 24 * 1024 * 1024)).unwrap();
    for i in 0..300 {
        let dir = root.join(format!("small/{}", i % 10));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join(format!("f{i}.txt")),
            format!("small file {i}\n").repeat(i % 17 + 1),
        )
        .unwrap();
    }
    let old = UNIX_EPOCH + Duration::from_secs(500_000_000);
    std::fs::File::options()
        .write(true)
        .open(root.join("deep/er/and/deeper/leaf.txt"))
        .unwrap()
        .set_modified(old)
        .unwrap();
    symlink("deep/er", root.join("link-to-dir")).unwrap();
    symlink("../odd-mode", root.join("deep/link-up")).unwrap();
    symlink("/does/not/exist", root.join("dangling")).unwrap();
    std::fs::set_permissions(root.join("deep/er"), std::fs::Permissions::from_mode(0o750)).unwrap();
}

fn json(output: &std::process::Output) -> Value {
    assert!(
        output.status.success(),
        "stdout: {}\nstderr: {}",
        stdout(output),
        stderr(output)
    );
    serde_json::from_str(&stdout(output)).unwrap_or_else(|e| panic!("{e}: {}", stdout(output)))
}

fn backup(addr: &str, args: &[&str]) -> std::process::Output {
    let mut all = vec!["backup"];
    all.extend_from_slice(args);
    all.extend(["--http-addr", addr]);
    cli(&all)
}

/// The spaces in the ledger, by member name: (capacity, stored, reserved).
async fn spaces(addr: &str) -> BTreeMap<String, (u64, u64, u64)> {
    let list = get_json(&format!("http://{addr}/v1/backup/spaces"))
        .await
        .unwrap_or(Value::Null);
    list.as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                (
                    s["capacity"].as_u64().unwrap(),
                    s["stored"].as_u64().unwrap(),
                    s["reserved"].as_u64().unwrap(),
                ),
            )
        })
        .collect()
}

async fn wait_spaces(addr: &str, n: usize) {
    wait_for(&format!("{n} spaces in the ledger"), || async {
        (spaces(addr).await.len() == n).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tree_restores_identically_after_changes_and_the_loss_of_two_spaces() {
    let mut cluster = Cluster::local_control_plane().await;
    let cp = cluster.agents[0].http_addr();
    let work = cluster.dir.path().join("work");
    let (src, pristine) = (work.join("src"), work.join("pristine"));
    make_tree(&src);
    assert!(std::process::Command::new("cp")
        .args(["-a", src.to_str().unwrap(), pristine.to_str().unwrap()])
        .status()
        .unwrap()
        .success());

    let space_flags = ["--backup-space", "200MB", "--backup-heartbeat", "1s"];
    let s: Vec<usize> = ["space-1", "space-2", "space-3"]
        .iter()
        .map(|n| cluster.start_role_member(n, "backup", &space_flags))
        .collect();
    let src_text = src.display().to_string();
    let owner = cluster.start_role_member(
        "owner",
        "backup",
        &[
            "--backup-path",
            &src_text,
            // The default heartbeat, so that only a prompt repair can restore R copies below.
            "--backup-heartbeat",
            "10m",
            "--backup-batch",
            "2MiB",
        ],
    );
    let owner_addr = cluster.agents[owner].http_addr();
    wait_spaces(&cp, 3).await;

    // A run interrupted by kill -9 of the owner: the run after its restart does not send again
    // what the spaces already hold.
    let mut interrupted = std::process::Command::new(support::BIN)
        .args(["backup", "run", "--http-addr", &owner_addr])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let status_url = cluster.agents[owner].url("/v1/roles/backup/status");
    loop {
        let status = get_json(&status_url).await.unwrap_or(Value::Null);
        assert_eq!(
            status["runs_ok"], 0,
            "the run ended before it could be interrupted"
        );
        if status["bytes_sent"].as_u64().unwrap_or(0) >= 10 << 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster.agents[owner].kill9();
    interrupted.wait().unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let space_urls: Vec<String> = s
        .iter()
        .map(|i| cluster.agents[*i].url("/v1/roles/backup/status"))
        .collect();
    let on_spaces = || async {
        let mut sum = 0;
        for url in &space_urls {
            sum += get_json(url).await.unwrap()["space_stored"]
                .as_u64()
                .unwrap();
        }
        sum
    };
    let before = on_spaces().await;
    assert!(
        before >= 10 << 20,
        "{before} bytes on the spaces before the restart"
    );
    cluster.agents[owner].start();

    // The first snapshot, and a restore identical to the original.
    let first = wait_for("the first backup", || async {
        let out = backup(&owner_addr, &["run", "--json"]);
        out.status.success().then(|| json(&out))
    })
    .await;
    let after = on_spaces().await;
    let resent = first["bytes_sent"]
        .as_u64()
        .unwrap()
        .saturating_sub(after - before);
    assert!(
        resent <= 6 << 20,
        "at most the batch in flight at the kill is sent again: {first}, {before} before, {after} after"
    );
    let first_id = first["snapshot"].as_str().unwrap().to_string();
    let first_chunks = first["chunks_new"].as_u64().unwrap();
    assert_eq!(first["files"].as_u64(), Some(305), "{first}");
    // New to this run: what the interrupted run had not stored yet (it was killed once 10 MiB
    // were sent, of two copies of 25 MB), so how many depends on the moment of the kill.
    assert!(first_chunks > 5, "{first}");
    assert!(after >= 2 * 24 * 1024 * 1024, "R = 2 copies: {after}");
    let r1 = work.join("r1");
    json(&backup(
        &owner_addr,
        &["restore", &first_id, "--to", r1.to_str().unwrap(), "--json"],
    ));
    assert_same_tree(&pristine, &r1.join(src.strip_prefix("/").unwrap()));

    // Change about 1%: three small files and 256 KiB in the middle of the big one.
    for i in [3, 77, 150] {
        std::fs::write(
            src.join(format!("small/{}/f{i}.txt", i % 10)),
            format!("changed {i}\n"),
        )
        .unwrap();
    }
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut big = std::fs::File::options()
            .write(true)
            .open(src.join("big.bin"))
            .unwrap();
        big.seek(SeekFrom::Start(12 * 1024 * 1024)).unwrap();
        big.write_all(&noise(99, 256 * 1024)).unwrap();
    }
    let second = json(&backup(&owner_addr, &["run", "--json"]));
    let second_id = second["snapshot"].as_str().unwrap().to_string();
    let new = second["chunks_new"].as_u64().unwrap();
    // 3 small files, 1–3 chunks of the big file around the change, and 6 tree blobs: the three
    // changed directories, `small`, the top and the snapshot root. Nothing else.
    assert!(
        (10..=12).contains(&new),
        "only the changed chunks are sent: {second}"
    );
    assert!(
        second["bytes_sent"].as_u64().unwrap() < after / 5,
        "{second} against {after} bytes for the first"
    );
    let snapshots = json(&backup(&owner_addr, &["snapshots", "--json"]));
    let ids: Vec<&str> = snapshots
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [first_id.as_str(), second_id.as_str()], "newest last");
    assert_eq!(snapshots[0]["paths"], serde_json::json!([src_text]));
    let r2 = work.join("r2");
    json(&backup(
        &owner_addr,
        &["restore", &first_id, "--to", r2.to_str().unwrap(), "--json"],
    ));
    assert_same_tree(&pristine, &r2.join(src.strip_prefix("/").unwrap()));
    let r3 = work.join("r3");
    json(&backup(
        &owner_addr,
        &[
            "restore",
            &second_id,
            "--to",
            r3.to_str().unwrap(),
            "--json",
        ],
    ));
    assert_same_tree(&src, &r3.join(src.strip_prefix("/").unwrap()));

    // A space dies with its disk: the owner repairs to R = 2 on the two left.
    let held = |name: &str, m: &BTreeMap<String, (u64, u64, u64)>| m.get(name).map_or(0, |v| v.1);
    let before = spaces(&cp).await;
    assert!(
        held("space-1", &before) > 0
            && held("space-2", &before) > 0
            && held("space-3", &before) > 0,
        "{before:?}"
    );
    // No `backup check` and a 10 minute heartbeat: the owner repairs on the SWIM verdict.
    let killed = std::time::Instant::now();
    cluster.agents[s[0]].kill9();
    std::fs::remove_dir_all(&cluster.agents[s[0]].data_dir).unwrap();
    wait_for("the dead space shown failed", || async {
        let list = json(&backup(&cp, &["spaces", "--json"]));
        let dead = list
            .as_array()?
            .iter()
            .find(|v| v["name"] == "space-1")?
            .clone();
        (dead["state"] == "failed").then_some(())
    })
    .await;
    let detected = killed.elapsed();
    wait_for("the owner to repair to R copies by itself", || async {
        let status = get_json(&status_url).await.ok()?;
        let copied =
            metrics_value(&cluster.agents[owner], "hivemind_backup_copies_made_total").await;
        (copied > 0 && status["runs_ok"].as_u64() >= Some(2)).then_some(())
    })
    .await;
    // Done by itself within the wait's deadline; how soon after detection is a timing, which on
    // two cores busy with the whole suite ranged from under 10 s to 14 s: printed, not asserted.
    let repaired = killed.elapsed();
    eprintln!("repair took {repaired:?}, detection {detected:?}");
    assert!(
        metrics_value(
            &cluster.agents[owner],
            "hivemind_backup_prompt_repairs_total"
        )
        .await
            >= 1
    );
    let check = json(&backup(&owner_addr, &["check", "--json"]));
    assert_eq!(check["copied"], 0, "nothing left to copy: {check}");
    assert_eq!(check["ok"], true, "{check}");
    let after = spaces(&cp).await;
    let total: u64 = ["space-2", "space-3"].iter().map(|n| held(n, &after)).sum();
    assert!(
        total >= 2 * 24 * 1024 * 1024,
        "every chunk twice on the two spaces left: {after:?}"
    );
    // Every chunk read back from a space, opened with the key and checked against its id.
    let check = json(&backup(
        &owner_addr,
        &["check", "--read-data", "100", "--json"],
    ));
    assert!(check["chunks"].as_u64().unwrap() > 20, "{check}");
    assert_eq!(check["read"], check["chunks"], "{check}");
    assert_eq!(check["damaged"], serde_json::json!([]), "{check}");
    assert_eq!(check["ok"], true, "{check}");

    // A second space dies: every chunk still has a copy on the third.
    cluster.agents[s[1]].kill9();
    let r4 = work.join("r4");
    wait_for("a restore from the last space", || async {
        let out = backup(
            &owner_addr,
            &[
                "restore",
                &second_id,
                "--to",
                r4.to_str().unwrap(),
                "--json",
            ],
        );
        out.status.success().then_some(())
    })
    .await;
    assert_same_tree(&src, &r4.join(src.strip_prefix("/").unwrap()));

    // A fresh machine with only the key restores through a CP member.
    let key = work.join("owner.key");
    std::fs::copy(cluster.agents[owner].data_dir.join("backup.key"), &key).unwrap();
    let r5 = work.join("r5");
    let fresh = backup(
        &cp,
        &[
            "restore",
            &first_id,
            "--to",
            r5.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            "--owner",
            "owner",
            "--json",
        ],
    );
    json(&fresh);
    assert_same_tree(&pristine, &r5.join(src.strip_prefix("/").unwrap()));
    let listed = json(&backup(
        &cp,
        &[
            "snapshots",
            "--key",
            key.to_str().unwrap(),
            "--owner",
            "owner",
            "--json",
        ],
    ));
    assert_eq!(listed.as_array().unwrap().len(), 2);
    assert_eq!(listed[1]["paths"], serde_json::json!([src_text]));

    // Only a sub-path.
    let r6 = work.join("r6");
    let sub = src.join("deep");
    json(&backup(
        &owner_addr,
        &[
            "restore",
            &second_id,
            "--to",
            r6.to_str().unwrap(),
            "--path",
            sub.to_str().unwrap(),
            "--json",
        ],
    ));
    assert_same_tree(&src.join("deep"), &r6.join(sub.strip_prefix("/").unwrap()));
    assert!(!r6
        .join(src.strip_prefix("/").unwrap())
        .join("big.bin")
        .exists());

    // A wrong key opens nothing and writes nothing.
    let wrong = work.join("wrong.key");
    std::fs::write(&wrong, stdout(&cli(&["backup", "key", "create"]))).unwrap();
    let r7 = work.join("r7");
    let out = backup(
        &cp,
        &[
            "restore",
            &first_id,
            "--to",
            r7.to_str().unwrap(),
            "--key",
            wrong.to_str().unwrap(),
            "--owner",
            "owner",
        ],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("wrong key"), "{}", stderr(&out));
    assert!(!r7.exists());
}

/// A tmpfs mounted at a directory for the test's length (unmounted on drop, also on panic).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(at).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Self(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// A member's id (hex in `/v1/members`) by name, among the alive ones.
async fn member_id(cp: &str, name: &str) -> hivemind_common::MemberId {
    let members = get_json(&format!("http://{cp}/v1/members")).await.unwrap();
    let hex = members
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name && m["state"] == "alive")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    hivemind_common::MemberId::new(u64::from_str_radix(&hex, 16).unwrap()).unwrap()
}

/// A backup request to the control plane as member `member` (the internal route a member uses;
/// this cluster runs without TLS, one trust domain).
async fn ledger_op(
    cp: &str,
    member: hivemind_common::MemberId,
    op: hivemind_common::backup::BackupOp,
) -> Result<hivemind_common::backup::BackupOutcome, hivemind_control_plane::CpError> {
    use hivemind_control_plane::member_requests::{MemberAnswer, MemberCall, MemberRequest};
    use hivemind_control_plane::registry::CommandOutput;
    let call = MemberCall {
        request: MemberRequest::Backup { member, op },
        client_token: None,
    };
    let body = support::client()
        .post(format!(
            "http://{cp}{}",
            hivemind_control_plane::ops::Request::PATH
        ))
        .body(hivemind_common::encode(&call))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let answer: Result<MemberAnswer, hivemind_control_plane::CpError> =
        hivemind_common::decode(&body).unwrap();
    match answer {
        Ok(MemberAnswer::Applied(applied)) => match applied.output {
            CommandOutput::Backup(outcome) => Ok(outcome),
            other => panic!("{other:?}"),
        },
        Ok(other) => panic!("{other:?}"),
        Err(e) => Err(e),
    }
}

/// Writes a snapshot of `tree` in the v1 format (before trees and compression) for `owner`
/// the way builds before it did: its chunks uploaded to `space` against a reservation, its
/// record in the ledger. Answers the snapshot id.
async fn write_v1_snapshot(
    cp: &str,
    owner: (&str, &Path),
    space: (&str, &str),
    tree: &Path,
) -> String {
    use hivemind_backup_role::crypto::OwnerKey;
    use hivemind_common::backup::{BackupOp, BackupOutcome, SnapshotRecord};
    let key = OwnerKey::parse(&std::fs::read_to_string(owner.1).unwrap()).unwrap();
    let time_ms = std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let (pieces, sealed) = hivemind_backup_role::tree::v1::write(tree, &key, time_ms).unwrap();
    let owner_id = member_id(cp, owner.0).await;
    let bytes: u64 = sealed.iter().map(|(_, b)| b.len() as u64).sum();
    let asked = hivemind_backup_role::pack::upper_bound(sealed.len(), bytes);
    let BackupOutcome::Reserved(granted) = ledger_op(
        cp,
        owner_id,
        BackupOp::Reserve {
            spaces: vec![(member_id(cp, space.0).await, asked)],
            ttl_ms: 60_000,
        },
    )
    .await
    .unwrap() else {
        panic!("no reservation")
    };
    let header = hivemind_backup_role::wire::UploadHeader {
        owner: owner.0.to_string(),
        reservation: granted[0].1,
        chunks: sealed.iter().map(|(id, b)| (*id, b.len() as u32)).collect(),
    };
    let body = hivemind_backup_role::wire::upload_parts(
        &header,
        sealed.into_iter().map(|(_, b)| b.into()).collect(),
    )
    .concat();
    let answer = support::client()
        .post(format!(
            "http://{}{}/upload",
            space.1,
            hivemind_backup_role::wire::INTERNAL_PREFIX
        ))
        .body(body)
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success(), "{:?}", answer.text().await);
    // v1 sealed the paths raw too: the id, then the sealed list.
    let paths = hivemind_common::encode(&vec![hivemind_backup_role::tree::ByteBuf::of(tree)]);
    let paths_id = key.chunk_id(&paths);
    let mut sealed_paths = paths_id.0.to_vec();
    sealed_paths.extend(key.seal_v1(&paths_id, &paths));
    let id: String = pieces[0].0[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let record = SnapshotRecord {
        id: id.clone(),
        owner: owner.0.to_string(),
        time_ms,
        files: 0,
        bytes: 0,
        manifest: pieces,
        sealed_paths,
    };
    ledger_op(cp, owner_id, BackupOp::Record { snapshot: record })
        .await
        .unwrap();
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_and_failing_spaces_are_replaced_an_unchanged_rerun_sends_a_root_and_v1_restores() {
    if !nix_is_root() {
        support::cannot_run("a space on a full disk needs a tmpfs mount (root)");
        return;
    }
    let mut cluster = Cluster::local_control_plane().await;
    let cp = cluster.agents[0].http_addr();
    let work = cluster.dir.path().join("work");
    let src = work.join("src");
    make_tree(&src);
    let flags = ["--backup-space", "200MB"];
    let s1 = cluster.start_role_member("space-1", "backup", &flags);
    cluster.start_role_member("space-2", "backup", &flags);
    // A space with the most room, which another member reserves whole while a run is under
    // way: the run's next reservations there are refused, and it places them on the others.
    cluster.start_role_member("space-big", "backup", &["--backup-space", "1GB"]);
    let src_text = src.display().to_string();
    let owner = cluster.start_role_member(
        "owner",
        "backup",
        &["--backup-path", &src_text, "--backup-batch", "1MiB"],
    );
    let owner_addr = cluster.agents[owner].http_addr();
    wait_spaces(&cp, 3).await;
    let owner_metrics = cluster.agents[owner].url("/metrics");
    let replaced = || metric_at(&owner_metrics, "hivemind_backup_replaced_shares_total");
    let bulk = work.join("bulk");
    std::fs::create_dir_all(&bulk).unwrap();
    for i in 0..10 {
        std::fs::write(bulk.join(format!("n{i}")), noise(100 + i, 4 << 20)).unwrap();
    }
    let run = std::process::Command::new(support::BIN)
        .args(["backup", "run", "--json", "--path", bulk.to_str().unwrap()])
        .args(["--http-addr", &owner_addr])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the run's first share on space-big", || async {
        (spaces(&cp).await.get("space-big")?.1 > 0).then_some(())
    })
    .await;
    let (big, other) = (
        member_id(&cp, "space-big").await,
        member_id(&cp, "space-2").await,
    );
    let mut taken = false;
    for _ in 0..50 {
        let (capacity, stored, reserved) = spaces(&cp).await["space-big"];
        let op = hivemind_common::backup::BackupOp::Reserve {
            spaces: vec![(big, capacity - stored - reserved)],
            ttl_ms: 600_000,
        };
        if ledger_op(&cp, other, op).await.is_ok() {
            taken = true;
            break;
        }
    }
    assert!(taken, "space-big's room could not be reserved");
    let out = run.wait_with_output().unwrap();
    let bulk_run = json(&out);
    assert!(
        replaced().await >= 1,
        "a refused share was placed elsewhere"
    );
    let r0 = work.join("r0");
    let id = bulk_run["snapshot"].as_str().unwrap();
    json(&backup(
        &owner_addr,
        &["restore", id, "--to", r0.to_str().unwrap(), "--json"],
    ));
    assert_same_tree(&bulk, &r0.join(bulk.strip_prefix("/").unwrap()));
    let refused = replaced().await;

    // A space that offers the most room now but whose disk holds 1 MiB: placement picks it
    // first, and its uploads fail (no space left on the device).
    let full = cluster.add_member(
        "space-full",
        &cp,
        &[
            "--gossip-profile",
            "local",
            "--roles",
            "backup",
            "--backup-space",
            "1GB",
        ],
    );
    let packs = cluster.agents[full].data_dir.join("backup/packs");
    let _tmpfs = match Tmpfs::mount(&packs, "1m") {
        Some(t) => t,
        None => {
            support::cannot_run("mount -t tmpfs failed");
            return;
        }
    };
    cluster.agents[full].start();
    wait_spaces(&cp, 4).await;

    let first = json(&backup(&owner_addr, &["run", "--json"]));
    assert_eq!(first["files"].as_u64(), Some(305), "{first}");
    assert!(
        replaced().await > refused,
        "the full space's share was placed elsewhere"
    );
    let r1 = work.join("r1");
    let id = first["snapshot"].as_str().unwrap();
    json(&backup(
        &owner_addr,
        &["restore", id, "--to", r1.to_str().unwrap(), "--json"],
    ));
    assert_same_tree(&src, &r1.join(src.strip_prefix("/").unwrap()));
    let check = json(&backup(&owner_addr, &["check", "--json"]));
    assert_eq!(check["ok"], true, "every chunk at R copies: {check}");

    // Nothing changed: no file is read again and only a new snapshot root is sent.
    let again = json(&backup(&owner_addr, &["run", "--json"]));
    assert!(
        again["bytes_sent"].as_u64().unwrap() <= 64 * 1024,
        "an unchanged rerun: {again}"
    );
    assert_eq!(again["chunks_new"], 1, "{again}");

    // A snapshot written before trees and compression (format v1) restores.
    let old = work.join("old");
    std::fs::create_dir_all(old.join("sub")).unwrap();
    std::fs::write(old.join("sub/text"), b"written by v1\n".repeat(1000)).unwrap();
    std::fs::write(old.join("noise"), noise(5, 3 << 20)).unwrap();
    symlink("sub/text", old.join("link")).unwrap();
    let v1 = write_v1_snapshot(
        &cp,
        ("owner", &cluster.agents[owner].data_dir.join("backup.key")),
        ("space-1", &cluster.agents[s1].http_addr()),
        &old,
    )
    .await;
    let listed = json(&backup(&owner_addr, &["snapshots", "--json"]));
    let entry = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == v1.as_str())
        .unwrap()
        .clone();
    assert_eq!(
        entry["paths"],
        serde_json::json!([old.display().to_string()])
    );
    let r2 = work.join("r2");
    json(&backup(
        &owner_addr,
        &["restore", &v1, "--to", r2.to_str().unwrap(), "--json"],
    ));
    assert_same_tree(&old, &r2.join(old.strip_prefix("/").unwrap()));
}

fn nix_is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_reservations_leases_and_failures() {
    let mut cluster = Cluster::local_control_plane().await;
    let cp = cluster.agents[0].http_addr();
    let work = cluster.dir.path().join("work");
    std::fs::create_dir_all(work.join("small")).unwrap();
    std::fs::create_dir_all(work.join("large")).unwrap();
    for i in 0..20 {
        std::fs::write(work.join(format!("small/f{i}")), noise(2 * i + 1, 10_000)).unwrap();
    }
    std::fs::write(work.join("large/blob"), noise(7, 8 * 1024 * 1024)).unwrap();

    // Bad flags are named, and the member does not start.
    let bad = cluster.add_member("bad", &cp, &["--roles", "backup", "--backup-space", "lots"]);
    let out = cluster.agents[bad].run_to_exit();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--backup-space"), "{}", stderr(&out));

    // The trigger webhook hears backup failures (the seed's e-mail to the owner).
    let (hook, received) = support::webhook_receiver().await;
    let audit = cluster.start_role_member("audit-1", "trigger", &["--trigger-webhook", &hook]);
    wait_for("the trigger member's intake", || async {
        get_json(&cluster.agents[audit].url("/v1/roles/trigger/status"))
            .await
            .ok()
    })
    .await;

    let flags = [
        "--backup-space",
        "6MB",
        "--backup-lease",
        "8s",
        "--backup-heartbeat",
        "1s",
    ];
    let s1 = cluster.start_role_member("space-1", "backup", &flags);
    cluster.start_role_member("space-2", "backup", &flags);
    let owner = cluster.start_role_member("owner", "backup", &["--backup-heartbeat", "1s"]);
    let owner_addr = cluster.agents[owner].http_addr();
    wait_spaces(&cp, 2).await;

    // Bad input: named, nothing recorded.
    let out = backup(&owner_addr, &["run", "--path", "/no/such/dir"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("/no/such/dir"), "{}", stderr(&out));
    let out = backup(
        &owner_addr,
        &["restore", "00000000deadbeef", "--to", "/tmp/x"],
    );
    assert!(
        stderr(&out).contains("unknown_snapshot"),
        "{}",
        stderr(&out)
    );
    let out = backup(&owner_addr, &["forget", "nope"]);
    assert!(stderr(&out).contains("SNAPSHOT"), "{}", stderr(&out));

    // Not enough space: 8 MB twice does not fit in 2 × 6 MB. backup_failed, no snapshot.
    let large = work.join("large");
    let out = backup(&owner_addr, &["run", "--path", large.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("backup_failed"), "{}", stderr(&out));
    // The role reports the failure to the feed as it answers the request: wait for it.
    let events_url = format!("http://{cp}/v1/events?after=0");
    let events = wait_for("backup_failed in the feed", || async {
        let events = get_json(&events_url).await.ok()?;
        let any = events["events"]
            .as_array()?
            .iter()
            .any(|e| e["kind"] == "backup_failed");
        any.then_some(events)
    })
    .await;
    let failed: Vec<&Value> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "backup_failed")
        .collect();
    assert_eq!(failed.len(), 1, "{events}");
    assert_eq!(failed[0]["owner"], "owner");
    assert!(
        failed[0]["reason"]
            .as_str()
            .unwrap()
            .contains("not enough space"),
        "{}",
        failed[0]
    );
    assert_eq!(
        json(&backup(&owner_addr, &["snapshots", "--json"])),
        serde_json::json!([])
    );
    let hooked = wait_for("backup_failed on the trigger webhook", || async {
        received
            .lock()
            .unwrap()
            .iter()
            .find(|c| c["kind"] == "backup_failed")
            .cloned()
    })
    .await;
    assert_eq!(hooked["host"], "owner", "{hooked}");
    assert!(
        hooked["reason"]
            .as_str()
            .unwrap()
            .contains("not enough space"),
        "{hooked}"
    );
    assert_eq!(
        metrics_value(&cluster.agents[owner], "hivemind_backup_failures_total").await,
        1
    );

    // The quota holds whatever happens: a reservation without upload is released at expiry.
    let small = work.join("small");
    let run = json(&backup(
        &owner_addr,
        &["run", "--path", small.to_str().unwrap(), "--json"],
    ));
    assert_eq!(run["files"], 20);
    let stored_with_chunks = wait_for("the spaces to report what they store", || async {
        let m = spaces(&cp).await;
        let stored: u64 = m.values().map(|v| v.1).sum();
        (stored >= 2 * 200_000 && m.values().all(|v| v.2 == 0)).then_some(stored)
    })
    .await;

    // While the owner heartbeats, the chunks outlive the 8 s lease.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let m = spaces(&cp).await;
    assert_eq!(
        m.values().map(|v| v.1).sum::<u64>(),
        stored_with_chunks,
        "{m:?}"
    );
    let status = get_json(&cluster.agents[s1].url("/v1/roles/backup/status"))
        .await
        .unwrap();
    assert_eq!(status["space_owners"][0][0], "owner", "{status}");

    // A reservation without upload: its bytes are reserved, then return at its expiry.
    let reserve = hivemind_common::backup::BackupOp::Reserve {
        spaces: vec![(member_id(&cp, "space-1").await, 1_000_000)],
        ttl_ms: 6_000,
    };
    ledger_op(&cp, member_id(&cp, "owner").await, reserve)
        .await
        .unwrap();
    // The ledger as `cp` applied it (a follower applies a moment after the leader answered).
    wait_for("the reservation in the ledger", || async {
        (spaces(&cp).await["space-1"].2 == 1_000_000).then_some(())
    })
    .await;
    wait_for("the unused reservation to expire", || async {
        (spaces(&cp).await["space-1"].2 == 0).then_some(())
    })
    .await;

    // Forgetting the only snapshot: its chunks go at the next heartbeat, long before the lease.
    let id = run["snapshot"].as_str().unwrap().to_string();
    assert!(backup(&owner_addr, &["forget", &id]).status.success());
    wait_for("the forgotten snapshot's chunks to be dropped", || async {
        spaces(&cp).await.values().all(|v| v.1 == 0).then_some(())
    })
    .await;
    assert_eq!(
        json(&backup(&owner_addr, &["snapshots", "--json"])),
        serde_json::json!([])
    );

    // An owner that stops heartbeating keeps its chunks until the lease ends, then loses them.
    json(&backup(
        &owner_addr,
        &["run", "--path", small.to_str().unwrap(), "--json"],
    ));
    wait_for("the second snapshot's chunks stored", || async {
        let stored: u64 = spaces(&cp).await.values().map(|v| v.1).sum();
        (stored == stored_with_chunks).then_some(())
    })
    .await;
    cluster.agents[owner].kill9();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stored: u64 = spaces(&cp).await.values().map(|v| v.1).sum();
    assert_eq!(stored, stored_with_chunks, "kept until the lease ends");
    wait_for("the spaces to drop the silent owner's chunks", || async {
        spaces(&cp).await.values().all(|v| v.1 == 0).then_some(())
    })
    .await;
}

/// A metric's value (the first sample of `name`) in `agent`'s `/metrics`.
async fn metrics_value(agent: &support::Agent, name: &str) -> u64 {
    metric_at(&agent.url("/metrics"), name).await
}

/// A metric's value (the first sample of `name`) in the `/metrics` at `url`.
async fn metric_at(url: &str, name: &str) -> u64 {
    let text = support::client()
        .get(url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| {
            let (n, v) = l.split_once(' ')?;
            let ours = n == name || n.starts_with(&format!("{name}{{"));
            ours.then(|| v.parse::<f64>().ok()).flatten()
        })
        .unwrap_or_else(|| panic!("no {name} in\n{text}")) as u64
}

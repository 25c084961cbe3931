//! No test writes into the working tree: every test keeps its files in a temporary directory
//! (an agent started with the default `--data-dir` once left a 64 MiB `hivemind-data/` in the
//! repository). Cargo builds every test binary before it runs any and runs the integration
//! tests in name order, so this one runs after the others of this package: any file in the
//! tree (build output and `.git` aside) changed after cargo last wrote a test binary was written
//! by a test (run it with the others: `cargo test --workspace`). Files git tracks as modified are left out when git can tell (a developer editing
//! during a run), new files never are.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

/// Where build tools write, and git's own files. `cargo fuzz run` creates
/// `artifacts/<target>` for every run, crash or not (a crash fails `tests/fuzz_smoke.rs`).
const OUTPUT: [&str; 4] = [
    "target",
    ".git",
    "fuzz/libfuzzer/target",
    "fuzz/libfuzzer/artifacts",
];

fn changed_since(root: &Path, dir: &Path, since: SystemTime, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let rel = path.strip_prefix(root).unwrap_or(&path);
        if OUTPUT.iter().any(|o| rel == Path::new(o)) {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            if meta.modified().is_ok_and(|m| m > since) && !rel.as_os_str().is_empty() {
                // A new directory shows through its files, an emptied one through itself.
                let before = out.len();
                changed_since(root, &path, since, out);
                if out.len() == before
                    && std::fs::read_dir(&path).is_ok_and(|mut d| d.next().is_none())
                {
                    out.push(rel.to_path_buf());
                }
            } else {
                changed_since(root, &path, since, out);
            }
        } else if meta.modified().is_ok_and(|m| m > since) {
            out.push(rel.to_path_buf());
        }
    }
}

/// Files git tracks and sees modified (`None` when git cannot tell).
fn tracked_and_modified(root: &Path) -> Option<Vec<PathBuf>> {
    let out = Command::new("git")
        .args(["diff", "--name-only", "HEAD"])
        .current_dir(root)
        .output()
        .ok()?;
    out.status.success().then(|| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(PathBuf::from)
            .collect()
    })
}

#[test]
fn no_test_wrote_into_the_working_tree() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // When cargo last put something where the test binaries live: every source edit before
    // this run is older (a changed source is rebuilt first), and this binary may be older
    // still when nothing it is made of changed.
    let exe = std::env::current_exe().expect("this test binary");
    let built = [exe.as_path(), exe.parent().expect("its directory")]
        .iter()
        .filter_map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .max()
        .expect("this test binary's build time");
    let mut changed = Vec::new();
    changed_since(root, root, built, &mut changed);
    if let Some(edited) = tracked_and_modified(root) {
        changed.retain(|p| !edited.contains(p));
    }
    assert!(
        changed.is_empty(),
        "tests wrote into the working tree (keep test files in a temporary directory): {changed:?}"
    );
}

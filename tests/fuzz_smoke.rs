//! The fuzzing smoke run: every cargo-fuzz target (fuzz/libfuzzer) built with libFuzzer and run
//! for a few seconds from its committed corpus. The long runs (10 minutes per target) and their
//! results are in RELIABILITY.md; the corpus replay on stable is `fuzz/tests/corpus.rs`.
//! Needs `cargo fuzz` (`.ci/run` installs it); builds with `RUSTC_BOOTSTRAP=1` on stable.

mod support;

use std::path::Path;
use std::process::Command;

/// Seconds of fuzzing per target.
const SECONDS_PER_TARGET: u32 = 10;

fn cargo_fuzz(root: &Path) -> Command {
    let mut command = Command::new(env!("CARGO"));
    command
        .current_dir(root)
        .env("RUSTC_BOOTSTRAP", "1")
        .args(["fuzz"]);
    command
}

#[test]
fn every_fuzz_target_runs_clean_for_a_few_seconds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let available = cargo_fuzz(root)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !available {
        support::cannot_run("cargo fuzz is not installed (cargo install cargo-fuzz)");
        return;
    }
    let build = [
        "--fuzz-dir",
        "fuzz/libfuzzer",
        "--dev",
        "--sanitizer",
        "none",
    ];
    let built = cargo_fuzz(root)
        .arg("build")
        .args(build)
        .output()
        .expect("cargo fuzz build");
    assert!(
        built.status.success(),
        "cargo fuzz build failed ({}):\n{}",
        built.status,
        tail(&String::from_utf8_lossy(&built.stderr), 60)
    );
    for target in hivemind_fuzz_names() {
        let scratch = tempfile::tempdir().expect("a scratch corpus");
        let corpus = root.join("fuzz/corpus").join(&target);
        let out = cargo_fuzz(root)
            .arg("run")
            .args(build)
            .arg(&target)
            .arg(scratch.path())
            .arg(&corpus)
            .arg("--")
            .arg(format!("-max_total_time={SECONDS_PER_TARGET}"))
            .arg("-rss_limit_mb=2048")
            .output()
            .expect("cargo fuzz run");
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "fuzz target {target} failed:\n{}",
            tail(&log, 60)
        );
        assert!(
            log.contains("Done "),
            "{target} did not finish its run:\n{}",
            tail(&log, 20)
        );
    }
}

/// The targets, as fuzz/libfuzzer/Cargo.toml lists them.
fn hivemind_fuzz_names() -> Vec<String> {
    let manifest = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/libfuzzer/Cargo.toml"),
    )
    .expect("the fuzz manifest");
    let names: Vec<String> = manifest
        .lines()
        .filter_map(|l| l.strip_prefix("name = \""))
        .filter_map(|l| l.strip_suffix('"'))
        .filter(|n| *n != "hivemind-fuzz-targets")
        .map(str::to_string)
        .collect();
    assert!(
        !names.is_empty(),
        "no fuzz targets in fuzz/libfuzzer/Cargo.toml"
    );
    names
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

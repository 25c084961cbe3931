//! Every committed corpus file and every seed, through its target on stable Rust (the
//! coverage-guided runs are in `smoke.rs` and RELIABILITY.md); and the seeds reach the deep end
//! of each decoder rather than its first error.

use std::path::Path;

use hivemind_fuzz::{seeds, TARGETS};

#[test]
fn every_corpus_file_and_seed_runs_clean() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for target in TARGETS {
        let dir = root.join(target.name);
        let files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|f| f.expect("a corpus entry").path())
            .collect();
        assert!(!files.is_empty(), "{} has no corpus", target.name);
        for file in files {
            (target.run)(&std::fs::read(&file).expect("a corpus file"));
        }
        let seeds = seeds::of(target.name);
        assert!(!seeds.is_empty(), "{} has no seeds", target.name);
        for seed in seeds {
            (target.run)(&seed);
        }
    }
}

#[test]
fn the_seed_commands_apply_and_the_deploy_configs_parse() {
    use clap::Parser;
    let mut registry = hivemind_control_plane::registry::Registry::default();
    for (i, command) in seeds::commands().iter().enumerate() {
        registry
            .apply(i as u64 + 1, command)
            .unwrap_or_else(|e| panic!("seed command {i} ({}) refused: {e}", command.name()));
    }
    for file in seeds::of("config_toml") {
        let text = String::from_utf8(file).expect("utf-8");
        let flags = hivemind::config::settings_as_flags(&text, "seed.toml", &[], |_| false)
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        let args = ["hivemind", "agent"].into_iter().map(String::from);
        hivemind::cli::Cli::try_parse_from(args.chain(flags)).unwrap_or_else(|e| panic!("{e}"));
    }
}

#[test]
fn the_dns_seeds_are_answered_from_the_zone() {
    use hivemind_dns_role::wire::{rcode_of, WireAnswers};
    let zone = hivemind_fuzz::dns::zone();
    let wire = WireAnswers::build(&zone);
    let answered = seeds::of("dns_udp")
        .iter()
        .filter_map(|q| wire.respond(&zone, q))
        .filter(|a| rcode_of(a) == hickory_proto::op::ResponseCode::NoError)
        .count();
    assert!(
        answered >= 40,
        "only {answered} seed queries were answered NOERROR"
    );
}

#[test]
fn the_snapshot_seed_is_a_file_a_start_accepts() {
    let file = seeds::of("snapshot_file").remove(0);
    let (_, state) = hivemind_control_plane::store::decode_snapshot_file(file).expect("decodes");
    assert!(!state.registry.members().is_empty());
}

#[test]
fn every_target_has_its_cargo_fuzz_binary_and_no_binary_lacks_a_target() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("libfuzzer");
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).expect("manifest");
    for target in TARGETS {
        assert!(
            manifest.contains(&format!("name = \"{}\"", target.name)),
            "{} is not a cargo-fuzz binary",
            target.name
        );
        let source = std::fs::read_to_string(dir.join(format!("fuzz_targets/{}.rs", target.name)))
            .unwrap_or_else(|e| panic!("{}: {e}", target.name));
        assert!(source.contains(&format!("run(\"{}\"", target.name)));
    }
    let binaries = manifest.matches("[[bin]]").count();
    assert_eq!(
        binaries,
        TARGETS.len(),
        "a cargo-fuzz binary without a target"
    );
}

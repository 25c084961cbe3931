//! Writes every target's seeds into `fuzz/corpus/<target>/seed-<n>` (existing files are kept).

fn main() -> std::io::Result<()> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/corpus");
    for target in hivemind_fuzz::TARGETS {
        let dir = format!("{root}/{}", target.name);
        std::fs::create_dir_all(&dir)?;
        let seeds = hivemind_fuzz::seeds::of(target.name);
        for (n, seed) in seeds.iter().enumerate() {
            std::fs::write(format!("{dir}/seed-{n}"), seed)?;
        }
        println!("{}: {} seeds", target.name, seeds.len());
    }
    Ok(())
}

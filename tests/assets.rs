//! The committed completions and man pages match what the clap definition generates.

#[path = "../examples/gen_assets.rs"]
mod gen_assets;

use std::fs;
use std::path::Path;

#[test]
fn completions_and_man_pages_are_up_to_date() {
    let fresh = tempfile::tempdir().unwrap();
    let files = gen_assets::generate(fresh.path()).unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    // Five shells, memo(1), and a page per subcommand.
    assert!(files.len() > 6, "generated {files:?}");
    for rel in &files {
        let want = fs::read(fresh.path().join(rel)).unwrap();
        let have = fs::read(repo.join(rel)).unwrap_or_default();
        assert!(
            want == have,
            "{} is stale: run `cargo run --example gen_assets` and commit the result",
            rel.display()
        );
    }
    for dir in ["completions", "man"] {
        for entry in fs::read_dir(repo.join(dir)).unwrap() {
            let rel = Path::new(dir).join(entry.unwrap().file_name());
            assert!(
                files.contains(&rel),
                "{} is not generated any more: delete it",
                rel.display()
            );
        }
    }
}

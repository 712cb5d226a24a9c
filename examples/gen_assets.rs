//! Generates the shell completions (completions/) and man pages (man/) from the clap
//! definition. Run after changing any flag, and commit the result:
//!
//!     cargo run --example gen_assets
//!
//! tests/assets.rs fails when the committed files are stale.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;

/// Writes every generated file under `root` and returns their paths relative to it.
pub fn generate(root: &Path) -> io::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let completions = root.join("completions");
    fs::create_dir_all(&completions)?;
    for shell in [
        Shell::Bash,
        Shell::Zsh,
        Shell::Fish,
        Shell::Elvish,
        Shell::PowerShell,
    ] {
        let mut cmd = memo_cli::cli::Cli::command();
        let path = clap_complete::generate_to(shell, &mut cmd, "memo", &completions)?;
        written.push(path.strip_prefix(root).expect("under root").to_path_buf());
    }
    let man = root.join("man");
    fs::create_dir_all(&man)?;
    let cmd = memo_cli::cli::Cli::command();
    let mut pages = vec![("memo.1".to_string(), cmd.clone())];
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        // A page title must be 'static; this process ends right after.
        let name: &'static str = Box::leak(format!("memo-{}", sub.get_name()).into_boxed_str());
        let usage: &'static str = Box::leak(format!("memo {}", sub.get_name()).into_boxed_str());
        pages.push((format!("{name}.1"), sub.clone().name(name).bin_name(usage)));
    }
    for (file, page) in pages {
        let mut out = Vec::new();
        clap_mangen::Man::new(page).render(&mut out)?;
        fs::write(man.join(&file), out)?;
        written.push(PathBuf::from("man").join(file));
    }
    written.sort();
    Ok(written)
}

#[allow(dead_code)]
fn main() -> io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for path in generate(root)? {
        println!("wrote {}", path.display());
    }
    Ok(())
}

//! Issue 8, acceptance: checks written from the words and real use, beyond the
//! examples it gives.

use crate::support::*;

/// `src/**` is how Turborepo, Nx and gitignore spell "everything under src": a file
/// changed anywhere below it must change the key, whatever subdirectories there are.
#[test]
fn a_trailing_double_star_glob_keys_every_file_below_it() {
    for spec in ["src/**", "./src/**", "src/**/", "src/**/**"] {
        for subdir in [None, Some("src/empty"), Some("src/deep")] {
            let env = TestEnv::new();
            env.tool("cat src/a.txt");
            env.write("src/a.txt", "one");
            if let Some(dir) = subdir {
                std::fs::create_dir_all(env.path(dir)).unwrap();
            }
            assert!(env.ran_tool(&["-i", spec]), "{spec} {subdir:?}: first call");
            assert!(!env.ran_tool(&["-i", spec]), "{spec} {subdir:?}: no hit");
            env.write("src/a.txt", "two");
            assert!(
                env.ran_tool(&["-i", spec]),
                "{spec} {subdir:?}: src/a.txt changed but the stale result was replayed"
            );
        }
    }
}

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

/// `-o out.txt` where out.txt -> l2 -> data/out.txt (a chain, as `alternatives` and
/// versioned installs make): the kernel follows every link when the command writes, so
/// a hit restores the content at the end of the chain and leaves the links alone.
#[test]
fn an_output_behind_a_chain_of_symlinks_is_restored_through_it() {
    for (link_to, output, written) in [
        ("data/out.txt", "out.txt", "data/out.txt"),
        ("real", "build", "real/a.txt"),
    ] {
        let env = TestEnv::new();
        let target = env.path(link_to);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(link_to, env.path("l2")).unwrap();
        std::os::unix::fs::symlink("l2", env.path(output)).unwrap();
        if output == "build" {
            std::fs::create_dir(&target).unwrap();
            env.tool("echo v1 > build/a.txt");
        } else {
            env.tool("echo v1 > out.txt");
        }
        assert!(env.ran_tool(&["-o", output]), "{output}: first call");
        if output == "build" {
            std::fs::remove_dir_all(&target).unwrap();
        } else {
            std::fs::remove_file(&target).unwrap();
        }
        assert!(!env.ran_tool(&["-o", output]), "{output}: no hit");
        assert_eq!(
            env.read(written),
            b"v1\n",
            "{output}: not restored at {written}"
        );
        for link in [output, "l2"] {
            assert!(
                std::fs::symlink_metadata(env.path(link))
                    .unwrap()
                    .is_symlink(),
                "{output}: the link {link} was replaced"
            );
        }
    }
}

//! What input listings leave out: `--exclude PATTERN` (gitignore-style, relative to each
//! input directory), ignore files under `--gitignore`, and declared outputs that lie
//! inside an input directory. Hits and misses are told by counting invocations.

use std::fs;

use crate::support::*;

/// `explain ARGS -- ./tool`: its exit code (0 a hit, 1 a miss) and its report.
fn explain(env: &TestEnv, args: &[&str]) -> (i32, String) {
    let mut all = vec!["explain".to_string()];
    all.extend(args.iter().map(|a| a.to_string()));
    all.extend(["--".to_string(), "./tool".to_string()]);
    let out = env.run(&all);
    (out.status.code().unwrap(), stdout(&out))
}

#[test]
fn a_pycache_directory_appearing_under_an_excluded_name_keeps_the_hit() {
    let env = TestEnv::new();
    env.tool("cat src/a.py");
    env.write("src/a.py", "print(1)");
    env.write("src/pkg/b.py", "print(2)");
    let args = ["-i", "src", "--exclude", "__pycache__"];
    assert!(env.ran_tool(&args));
    // At any depth, and whatever it holds.
    env.write("src/__pycache__/a.cpython-312.pyc", "bytecode");
    env.write("src/pkg/__pycache__/b.cpython-312.pyc", "bytecode");
    assert!(!env.ran_tool(&args), "__pycache__ is left out of the key");
    assert_eq!(explain(&env, &args).0, 0, "explain agrees: a hit");
    // Without the exclude the same tree is another key.
    assert!(env.ran_tool(&["-i", "src"]));
    // Everything not excluded still counts.
    env.write("src/pkg/b.py", "print(3)");
    assert!(env.ran_tool(&args), "b.py changed");
}

#[test]
fn excludes_that_list_the_same_files_share_a_key() {
    let env = TestEnv::new();
    env.tool("true");
    env.write("src/a.c", "a");
    assert!(env.ran_tool(&["-i", "src"]));
    // Nothing matches these: the listing, and so the key, is the one without excludes.
    assert!(!env.ran_tool(&["-i", "src", "--exclude", "*.o"]));
    assert!(!env.ran_tool(&["-i", "src", "--gitignore"]));
}

#[test]
fn gitignore_files_under_input_directories_are_honoured_with_the_flag() {
    let env = TestEnv::new();
    env.tool("cat src/a.txt");
    env.write("src/a.txt", "a");
    env.write("src/.gitignore", "*.tmp\n");
    env.write("src/sub/.ignore", "scratch/\n");
    fs::create_dir(env.path("src/sub/deep")).unwrap();
    let args = ["-i", "src", "--gitignore"];
    assert!(env.ran_tool(&args));
    env.write("src/x.tmp", "1");
    env.write("src/sub/deep/y.tmp", "1");
    env.write("src/sub/scratch/z", "1");
    assert!(!env.ran_tool(&args), "*.tmp and scratch/ are ignored");
    assert_eq!(explain(&env, &args).0, 0, "explain agrees: a hit");
    // The ignore files are inputs themselves: changing the rules changes the key.
    env.write("src/.gitignore", "*.tmp\n*.log\n");
    assert!(env.ran_tool(&args), ".gitignore changed");
    // Without the flag, the ignore files are just files.
    assert!(env.ran_tool(&["-i", "src"]));
    env.write("src/w.tmp", "1");
    assert!(
        env.ran_tool(&["-i", "src"]),
        "w.tmp counts without --gitignore"
    );
}

#[test]
fn gitignore_files_outside_the_input_directories_and_the_users_global_one_are_not_read() {
    let env = TestEnv::new();
    env.tool("true");
    env.write("src/a.txt", "a");
    // Above the input directory, in git's info/exclude, and in the user's global ignore.
    env.write(".gitignore", "*.tmp\n");
    env.write(".git/info/exclude", "*.tmp\n");
    fs::create_dir_all(env.root.path().join("home/.config/git")).unwrap();
    fs::write(env.root.path().join("home/.config/git/ignore"), "*.tmp\n").unwrap();
    let args = ["-i", "src", "--gitignore"];
    assert!(env.ran_tool(&args));
    env.write("src/x.tmp", "1");
    assert!(
        env.ran_tool(&args),
        "x.tmp counts: no ignore file under src names it"
    );
}

#[test]
fn a_negated_pattern_brings_a_file_back() {
    let env = TestEnv::new();
    env.tool("true");
    env.write("logs/a.log", "a");
    env.write("logs/keep.log", "1");
    let args = ["-i", "logs", "--exclude", "*.log", "--exclude", "!keep.log"];
    assert!(env.ran_tool(&args));
    env.write("logs/a.log", "changed");
    env.write("logs/b.log", "new");
    assert!(!env.ran_tool(&args), "other logs are excluded");
    env.write("logs/keep.log", "2");
    assert!(env.ran_tool(&args), "keep.log is not");
    let (code, text) = explain(&env, &args);
    assert_eq!(code, 0, "{text}");
}

#[test]
fn an_exclude_pattern_negates_a_gitignore_rule() {
    let env = TestEnv::new();
    env.tool("true");
    env.write("src/.gitignore", "*.gen\n");
    env.write("src/keep.gen", "1");
    let args = ["-i", "src", "--gitignore", "--exclude", "!keep.gen"];
    assert!(env.ran_tool(&args));
    env.write("src/other.gen", "1");
    assert!(!env.ran_tool(&args));
    env.write("src/keep.gen", "2");
    assert!(env.ran_tool(&args), "--exclude has the last word");
}

#[test]
fn a_pattern_with_a_slash_is_anchored_to_the_input_directory() {
    let env = TestEnv::new();
    env.tool("true");
    env.write("src/build/out", "1");
    env.write("src/lib/build/out", "1");
    // Directories count as inputs: these exist before the first call.
    for dir in ["src/docs/sub", "src/lib/docs"] {
        fs::create_dir_all(env.path(dir)).unwrap();
    }
    let args = ["-i", "src", "--exclude", "/build", "--exclude", "docs/*.md"];
    assert!(env.ran_tool(&args));
    env.write("src/build/out", "2");
    env.write("src/docs/a.md", "new");
    assert!(
        !env.ran_tool(&args),
        "src/build and src/docs/*.md are excluded"
    );
    env.write("src/lib/build/out", "2");
    assert!(
        env.ran_tool(&args),
        "/build is anchored: src/lib/build counts"
    );
    env.write("src/lib/docs/a.md", "new");
    assert!(
        env.ran_tool(&args),
        "docs/*.md is anchored too (it has a slash)"
    );
    env.write("src/docs/sub/b.md", "new");
    assert!(env.ran_tool(&args), "* does not cross a slash");
}

#[test]
fn a_directory_only_pattern_leaves_files_of_that_name() {
    let env = TestEnv::new();
    env.tool("true");
    env.write("src/out", "a file named out");
    fs::create_dir(env.path("src/sub")).unwrap();
    let args = ["-i", "src", "--exclude", "out/"];
    assert!(env.ran_tool(&args));
    env.write("src/out", "changed");
    assert!(env.ran_tool(&args), "out/ names directories only");
    env.write("src/sub/out/x", "1");
    assert!(!env.ran_tool(&args), "a directory out is excluded");
}

#[test]
fn excludes_apply_below_each_input_directory_and_under_globs() {
    let env = TestEnv::new();
    env.tool("true");
    env.write("a/x.c", "1");
    env.write("b/y.c", "1");
    env.write("lib/z.c", "1");
    fs::create_dir(env.path("b/deep")).unwrap();
    let args = ["-i", "a", "-i", "b", "-i", "lib/*", "--exclude", "*.o"];
    assert!(env.ran_tool(&args));
    env.write("a/x.o", "1");
    env.write("b/deep/y.o", "1");
    env.write("lib/z.o", "1");
    assert!(!env.ran_tool(&args), "*.o left out everywhere");
    env.write("lib/w.c", "1");
    assert!(env.ran_tool(&args), "lib/w.c is a new match");
}

#[test]
fn a_file_named_explicitly_is_never_excluded() {
    let env = TestEnv::new();
    env.tool("true");
    env.write("app.log", "1");
    let args = ["-i", "app.log", "--exclude", "*.log"];
    assert!(env.ran_tool(&args));
    env.write("app.log", "2");
    assert!(
        env.ran_tool(&args),
        "named with -i: keyed whatever the patterns say"
    );
}

#[test]
fn a_file_written_into_an_excluded_place_while_running_does_not_stop_the_store() {
    let env = TestEnv::new();
    env.tool("mkdir -p src/__pycache__; date > src/__pycache__/a.pyc; date > src/x.tmp");
    env.write("src/a.py", "1");
    env.write("src/.gitignore", "*.tmp\n");
    let args = ["-i", "src", "--exclude", "__pycache__", "--gitignore"];
    let out = env.run(run_tool(&args));
    assert_success(&out);
    assert_eq!(stderr(&out), "", "the race guard sees no change");
    assert_eq!(env.entries().len(), 1, "stored");
    assert!(!env.ran_tool(&args));
}

#[test]
fn a_bad_exclude_pattern_is_an_error_naming_it() {
    let env = TestEnv::new();
    env.tool("true");
    env.write("src/a", "1");
    for (pattern, says) in [("", "is empty"), ("#x", "comment")] {
        let out = env.run(run_tool(&["-i", "src", "--exclude", pattern]));
        assert_code(&out, 125);
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(&format!("--exclude '{pattern}'")), "{err}");
        assert!(err.contains(says), "{err}");
        assert_eq!(env.count(), 0, "nothing ran");
    }
}

#[test]
fn an_unreadable_ignore_file_is_an_error_naming_it() {
    let env = TestEnv::new();
    env.tool("true");
    env.write("src/a", "1");
    // A directory named .gitignore cannot be read as a file, even by root.
    fs::create_dir_all(env.path("src/sub/.gitignore")).unwrap();
    let out = env.run(run_tool(&["-i", "src", "--gitignore"]));
    assert_code(&out, 125);
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("src/sub/.gitignore"), "{err}");
    assert!(err.contains("--gitignore"), "{err}");
}

#[test]
fn a_stale_refresh_keys_with_the_same_excludes() {
    let env = TestEnv::new();
    env.tool("date +%N");
    env.write("src/a.py", "1");
    env.write("src/__pycache__/a.pyc", "1");
    let args = [
        "-i",
        "src",
        "--exclude",
        "__pycache__",
        "--ttl",
        "1s",
        "--stale",
        "1h",
    ];
    assert!(env.ran_tool(&args));
    std::thread::sleep(std::time::Duration::from_millis(1100));
    // A stale hit: replayed at once, refreshed in the background under the same key.
    assert!(!env.ran_tool(&args));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while env.count() < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(env.count(), 2, "the refresh ran");
    // Wait for the refresh to store, then: one entry, the refreshed one, fresh.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (code, text) = explain(&env, &args);
        if code == 0 && !text.contains("stale") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{text}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(
        env.entries().len(),
        1,
        "the refresh stored under the same key"
    );
}

#[test]
fn an_output_inside_an_input_directory_hits_on_the_second_call() {
    let env = TestEnv::new();
    env.write("src/a.txt", "a");
    env.tool("cat src/a.txt > src/gen.txt; date +%N >> src/gen.txt");
    let args = ["-i", "src", "-o", "src/gen.txt"];
    assert!(env.ran_tool(&args));
    let first = env.read("src/gen.txt");
    assert!(!env.ran_tool(&args), "the output is not part of the key");
    assert_eq!(env.read("src/gen.txt"), first);
    assert_eq!(explain(&env, &args).0, 0, "explain agrees: a hit");
    // Gone, it is restored by a hit; the rest of src still counts.
    fs::remove_file(env.path("src/gen.txt")).unwrap();
    assert!(!env.ran_tool(&args));
    assert_eq!(env.read("src/gen.txt"), first);
    env.write("src/a.txt", "b");
    assert!(env.ran_tool(&args), "a.txt changed");
}

#[test]
fn an_output_directory_inside_an_input_directory_is_left_out_however_it_is_spelled() {
    let env = TestEnv::new();
    env.write("src/a.txt", "a");
    env.tool("mkdir -p src/gen; date +%N > src/gen/x");
    let cwd = env.work();
    let absolute = cwd.join("src/gen");
    for output in ["./src/gen/", "src/../src/gen", absolute.to_str().unwrap()] {
        let args = ["-i", "src", "-o", output];
        let _ = fs::remove_dir_all(env.path("src/gen"));
        assert!(env.ran_tool(&args), "{output}");
        assert!(!env.ran_tool(&args), "{output}: a hit on the second call");
    }
}

#[test]
fn an_output_through_a_symlinked_input_directory_is_left_out() {
    let env = TestEnv::new();
    env.write("real/a.txt", "a");
    std::os::unix::fs::symlink("real", env.path("link")).unwrap();
    env.tool("date +%N > real/gen.txt");
    let args = ["-i", "link", "-o", "real/gen.txt"];
    assert!(env.ran_tool(&args));
    assert!(!env.ran_tool(&args));
}

#[test]
fn a_path_declared_as_input_and_output_is_still_keyed_on_its_content_before_the_run() {
    let env = TestEnv::new();
    env.write("src/a.txt", "a");
    env.write("src/gen.txt", "seed");
    env.tool("date +%N > src/gen.txt");
    // Named explicitly with -i as well: the trust rule, keyed before the run.
    let args = ["-i", "src", "-i", "src/gen.txt", "-o", "src/gen.txt"];
    assert!(env.ran_tool(&args));
    assert!(
        env.ran_tool(&args),
        "gen.txt as keyed changed: a miss once more"
    );
    env.write("src/gen.txt", "seed");
    assert!(!env.ran_tool(&args), "back to the first key: a hit");
    // An input directory that is itself the output stays keyed as it was.
    env.tool("date +%N > out/x");
    env.write("out/x", "seed");
    assert!(env.ran_tool(&["-i", "out", "-o", "out"]));
    assert!(env.ran_tool(&["-i", "out", "-o", "out"]));
}

#[test]
fn an_output_matched_by_an_input_glob_is_left_out() {
    let env = TestEnv::new();
    env.write("a.txt", "a");
    env.tool("date +%N > out.txt");
    let args = ["-i", "*.txt", "-o", "out.txt"];
    assert!(env.ran_tool(&args));
    assert!(!env.ran_tool(&args));
}

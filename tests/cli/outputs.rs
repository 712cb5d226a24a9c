//! Declared output files and directories: recorded after a run, restored on a hit.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::time::{Duration, SystemTime};

use crate::support::*;

fn mode(path: &std::path::Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn a_file_output_is_restored_byte_for_byte_with_a_fresh_mtime() {
    let env = TestEnv::new();
    env.tool("printf 'report\\000\\377' > report.html");
    assert!(env.ran_tool(&["-o", "report.html"]));
    let recorded = env.read("report.html");
    fs::remove_file(env.path("report.html")).unwrap();
    let before_hit = SystemTime::now() - Duration::from_secs(2);
    assert!(!env.ran_tool(&["-o", "report.html"]));
    assert_eq!(env.read("report.html"), recorded);
    let mtime = fs::metadata(env.path("report.html"))
        .unwrap()
        .modified()
        .unwrap();
    assert!(mtime > before_hit, "make must see a restored output as new");
}

#[test]
fn a_large_file_output_is_restored_from_an_object() {
    let env = TestEnv::new();
    env.tool("head -c 1000000 /dev/urandom > big.bin");
    assert!(env.ran_tool(&["-o", "big.bin"]));
    let recorded = env.read("big.bin");
    fs::write(env.path("big.bin"), "clobbered").unwrap();
    assert!(!env.ran_tool(&["-o", "big.bin"]));
    assert_eq!(env.read("big.bin"), recorded);
}

#[test]
fn a_file_output_keeps_its_exec_bit() {
    let env = TestEnv::new();
    env.tool("printf '#!/bin/sh\\necho built\\n' > built.sh; chmod 755 built.sh; printf x > plain");
    assert!(env.ran_tool(&["-o", "built.sh", "-o", "plain"]));
    fs::remove_file(env.path("built.sh")).unwrap();
    fs::remove_file(env.path("plain")).unwrap();
    assert!(!env.ran_tool(&["-o", "built.sh", "-o", "plain"]));
    assert_ne!(mode(&env.path("built.sh")) & 0o100, 0);
    assert_eq!(mode(&env.path("plain")) & 0o111, 0);
}

#[test]
fn an_output_in_a_missing_directory_is_restored_with_its_parents() {
    let env = TestEnv::new();
    env.tool("mkdir -p build/x; echo hi > build/x/out.txt");
    assert!(env.ran_tool(&["-o", "build/x/out.txt"]));
    fs::remove_dir_all(env.path("build")).unwrap();
    assert!(!env.ran_tool(&["-o", "build/x/out.txt"]));
    assert_eq!(env.read("build/x/out.txt"), b"hi\n");
}

fn make_tree(env: &TestEnv) {
    env.tool(
        "mkdir -p dist/sub/empty; echo a > dist/a.txt; echo b > dist/sub/b.txt; \
         printf '#!/bin/sh\\n' > dist/run.sh; chmod 755 dist/run.sh; ln -sf a.txt dist/link; \
         ln -sf ../../outside dist/sub/escape",
    );
}

fn snapshot(dir: &std::path::Path) -> Vec<(String, String)> {
    let mut seen = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = fs::symlink_metadata(&path).unwrap();
        let rel = path.strip_prefix(dir).unwrap().display().to_string();
        let what = if meta.file_type().is_symlink() {
            format!("link -> {}", fs::read_link(&path).unwrap().display())
        } else if meta.is_dir() {
            for entry in fs::read_dir(&path).unwrap() {
                stack.push(entry.unwrap().path());
            }
            "dir".to_string()
        } else {
            format!(
                "file {:o} {:?}",
                meta.permissions().mode() & 0o111,
                fs::read(&path).unwrap()
            )
        };
        seen.push((rel, what));
    }
    seen.sort();
    seen
}

#[test]
fn a_directory_output_is_restored_exactly() {
    let env = TestEnv::new();
    make_tree(&env);
    assert!(env.ran_tool(&["-o", "dist"]));
    let recorded = snapshot(&env.path("dist"));
    assert!(recorded
        .iter()
        .any(|(p, w)| p == "link" && w == "link -> a.txt"));
    assert!(recorded.iter().any(|(p, w)| p == "sub/empty" && w == "dir"));
    fs::remove_dir_all(env.path("dist")).unwrap();
    assert!(!env.ran_tool(&["-o", "dist"]));
    assert_eq!(snapshot(&env.path("dist")), recorded);
}

#[test]
fn files_memo_did_not_record_are_left_in_place_and_recorded_ones_restored() {
    let env = TestEnv::new();
    make_tree(&env);
    assert!(env.ran_tool(&["-o", "dist"]));
    let mut expected = snapshot(&env.path("dist"));
    env.write("dist/stale.o", "old");
    env.write("dist/sub/b.txt", "edited");
    assert!(!env.ran_tool(&["-o", "dist"]));
    // Another step may have written stale.o: a hit deletes no file it did not write.
    expected.push(("stale.o".to_string(), format!("file 0 {:?}", b"old")));
    expected.sort();
    assert_eq!(snapshot(&env.path("dist")), expected);
    env.assert_no_staging();
}

#[test]
fn an_output_directory_replaced_by_a_symlink_is_written_through_as_the_command_would() {
    let env = TestEnv::new();
    make_tree(&env);
    assert!(env.ran_tool(&["-o", "dist"]));
    let mut expected = snapshot(&env.path("dist"));
    env.write("elsewhere/keep.txt", "precious");
    fs::remove_dir_all(env.path("dist")).unwrap();
    symlink(env.path("elsewhere"), env.path("dist")).unwrap();
    assert!(!env.ran_tool(&["-o", "dist"]));
    assert!(fs::symlink_metadata(env.path("dist"))
        .unwrap()
        .file_type()
        .is_symlink());
    expected.push(("keep.txt".to_string(), format!("file 0 {:?}", b"precious")));
    expected.sort();
    assert_eq!(snapshot(&env.path("elsewhere")), expected);
}

#[test]
fn an_output_file_replaced_by_a_symlink_is_written_through_as_the_command_would() {
    let env = TestEnv::new();
    env.tool("echo out > result.txt");
    assert!(env.ran_tool(&["-o", "result.txt"]));
    env.write("elsewhere.txt", "old");
    fs::remove_file(env.path("result.txt")).unwrap();
    symlink(env.path("elsewhere.txt"), env.path("result.txt")).unwrap();
    assert!(!env.ran_tool(&["-o", "result.txt"]));
    assert!(fs::symlink_metadata(env.path("result.txt"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(env.read("elsewhere.txt"), b"out\n");
}

#[test]
fn an_output_replaced_by_a_symlink_to_the_wrong_kind_is_replaced_not_followed() {
    let env = TestEnv::new();
    env.tool("echo out > result.txt");
    assert!(env.ran_tool(&["-o", "result.txt"]));
    env.write("victim/keep.txt", "precious");
    fs::remove_file(env.path("result.txt")).unwrap();
    symlink(env.path("victim"), env.path("result.txt")).unwrap();
    assert!(!env.ran_tool(&["-o", "result.txt"]));
    assert!(!fs::symlink_metadata(env.path("result.txt"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(env.read("result.txt"), b"out\n");
    assert_eq!(
        snapshot(&env.path("victim")),
        vec![
            ("".to_string(), "dir".to_string()),
            ("keep.txt".to_string(), format!("file 0 {:?}", b"precious")),
        ]
    );
}

#[test]
fn a_symlink_output_is_restored_as_a_link() {
    let env = TestEnv::new();
    env.tool("ln -sf /nonexistent/target current");
    assert!(env.ran_tool(&["-o", "current"]));
    fs::remove_file(env.path("current")).unwrap();
    assert!(!env.ran_tool(&["-o", "current"]));
    assert_eq!(
        fs::read_link(env.path("current")).unwrap().to_str(),
        Some("/nonexistent/target")
    );
}

#[test]
fn an_output_the_command_did_not_create_is_not_stored() {
    let env = TestEnv::new();
    env.tool("echo hi");
    let out = env.run(run_tool(&["-o", "never.txt"]));
    assert_success(&out);
    assert_eq!(stdout(&out), "hi\n");
    assert!(
        stderr(&out).contains("'never.txt' was not created"),
        "{}",
        stderr(&out)
    );
    assert!(env.ran_tool(&["-o", "never.txt"]));
    assert!(env.entries().is_empty());
}

#[test]
fn identical_contents_are_stored_once() {
    let env = TestEnv::new();
    env.tool("head -c 100000 /dev/zero > a.bin; head -c 100000 /dev/zero > b.bin");
    assert!(env.ran_tool(&["-o", "a.bin", "-o", "b.bin"]));
    assert_eq!(env.objects().len(), 1);
}

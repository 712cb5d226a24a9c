//! `memo explain`: hit or miss, and on a miss exactly what changed. It runs nothing.

use std::fs;

use crate::support::*;

fn explain(env: &TestEnv, args: &[&str]) -> (i32, String) {
    let mut all = vec!["explain".to_string()];
    all.extend(args.iter().map(|a| a.to_string()));
    all.extend(["--".to_string(), "./tool".to_string()]);
    let before = env.count();
    let out = env.run(&all);
    assert_eq!(env.count(), before, "explain must not run the command");
    (out.status.code().unwrap(), stdout(&out))
}

#[test]
fn a_command_never_stored() {
    let env = TestEnv::new();
    env.tool("echo hi");
    // The (named) cache exists: explain never creates one, and a missing named one is
    // an error (tests/cli/show_entry.rs).
    std::fs::create_dir_all(env.cache()).unwrap();
    let (code, text) = explain(&env, &[]);
    assert_eq!(code, 1);
    assert!(text.contains("was never stored"), "{text}");
}

#[test]
fn a_hit() {
    let env = TestEnv::new();
    env.tool("echo hi");
    env.run(run_tool(&[]));
    let (code, text) = explain(&env, &[]);
    assert_eq!(code, 0);
    assert!(text.starts_with("hit "), "{text}");
}

#[test]
fn names_the_input_that_changed_appeared_or_vanished() {
    let env = TestEnv::new();
    env.tool("cat data/*");
    env.write("data/a.csv", "1");
    env.write("data/b.csv", "2");
    env.run(run_tool(&["-i", "data"]));
    env.write("data/a.csv", "changed");
    fs::remove_file(env.path("data/b.csv")).unwrap();
    env.write("data/c.csv", "3");
    let (code, text) = explain(&env, &["-i", "data"]);
    assert_eq!(code, 1);
    assert!(text.contains("input changed: data/a.csv"), "{text}");
    assert!(text.contains("input vanished: data/b.csv"), "{text}");
    assert!(text.contains("input appeared: data/c.csv"), "{text}");
}

#[test]
fn names_the_environment_variable_but_never_its_value() {
    let env = TestEnv::new();
    env.tool("true");
    let mut cmd = env.memo(run_tool(&["-e", "DEPLOY_KEY"]));
    cmd.env("DEPLOY_KEY", "first-secret");
    env.ran(cmd);
    let out = env
        .memo(["explain", "-e", "DEPLOY_KEY", "--", "./tool"])
        .env("DEPLOY_KEY", "second-secret")
        .output()
        .unwrap();
    let text = stdout(&out);
    assert!(
        text.contains("environment variable changed: DEPLOY_KEY"),
        "{text}"
    );
    assert!(!text.contains("secret"), "{text}");
}

#[test]
fn names_the_executable_salt_and_key_command() {
    let env = TestEnv::new();
    env.tool("echo v1");
    env.write("rev", "a");
    env.run(run_tool(&["--salt", "1", "--key-cmd", "cat rev"]));
    env.tool("echo v2");
    env.write("rev", "b");
    let (code, text) = explain(&env, &["--salt", "2", "--key-cmd", "cat rev"]);
    assert_eq!(code, 1);
    assert!(text.contains("executable changed: ./tool"), "{text}");
    assert!(text.contains("salt changed"), "{text}");
    assert!(
        text.contains("key command output changed: cat rev"),
        "{text}"
    );
}

#[test]
fn says_how_long_ago_a_ttl_expired() {
    let env = TestEnv::new();
    env.tool("echo hi");
    env.run(run_tool(&[]));
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let (code, text) = explain(&env, &["--ttl", "1s"]);
    assert_eq!(code, 1);
    assert!(text.contains("expired") && text.contains("ago"), "{text}");
}

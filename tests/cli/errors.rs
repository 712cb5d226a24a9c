//! Bad input stops memo before the command runs, with one clear line and a distinct code.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use crate::support::*;

#[test]
fn a_missing_input_is_an_error_and_nothing_runs() {
    let env = TestEnv::new();
    env.tool("true");
    let out = env.run(run_tool(&["-i", "data.csv"]));
    assert_one_line_error(&out, 125, "input 'data.csv' does not exist");
    assert_eq!(env.count(), 0);
}

#[test]
fn a_glob_matching_nothing_is_an_error() {
    let env = TestEnv::new();
    env.tool("true");
    let out = env.run(run_tool(&["-i", "data/*.csv"]));
    assert_one_line_error(&out, 125, "matches no file");
    assert_eq!(env.count(), 0);
}

#[test]
fn no_command_is_an_error() {
    let env = TestEnv::new();
    let out = env.run(["run", "-i", "x", "--"]);
    assert_one_line_error(&out, 125, "no command given");
}

#[test]
fn an_unknown_flag_is_a_one_line_error() {
    let env = TestEnv::new();
    let out = env.run(["run", "--bogus", "--", "true"]);
    assert_one_line_error(&out, 125, "--bogus");
}

#[test]
fn a_command_not_found_exits_127() {
    let env = TestEnv::new();
    let out = env.run(["run", "--", "no-such-command-anywhere"]);
    assert_one_line_error(&out, 127, "'no-such-command-anywhere' not found");
    let out = env.run(["run", "--", "./missing.sh"]);
    assert_one_line_error(&out, 127, "not found");
}

#[test]
fn a_command_that_is_not_executable_exits_126() {
    let env = TestEnv::new();
    let script = env.write("plain.sh", "#!/bin/sh\necho hi\n");
    fs::set_permissions(&script, fs::Permissions::from_mode(0o644)).unwrap();
    let out = env.run(["run", "--", "./plain.sh"]);
    assert_one_line_error(&out, 126, "not an executable");
    let out = env.run(["run", "--", "/tmp"]);
    assert_one_line_error(&out, 126, "not an executable");
}

/// Only `memo run` falls back to a plain run; the subcommands that manage the cache
/// cannot do their job without one.
#[test]
fn a_cache_dir_that_is_a_file_is_an_error_for_the_management_commands() {
    let env = TestEnv::new();
    let file = env.write("not-a-dir", "");
    for sub in ["stats", "ls", "gc", "log"] {
        let out = env.run(["--cache-dir", file.to_str().unwrap(), sub]);
        assert_one_line_error(&out, 125, "is not a directory");
    }
}

#[test]
fn a_failing_key_command_is_an_error() {
    let env = TestEnv::new();
    env.tool("true");
    let out = env.run(run_tool(&["--key-cmd", "exit 4"]));
    assert_one_line_error(&out, 125, "--key-cmd 'exit 4' failed");
    assert_eq!(env.count(), 0);
}

#[test]
fn an_env_assignment_instead_of_a_name_is_an_error() {
    let env = TestEnv::new();
    env.tool("true");
    let out = env.run(run_tool(&["-e", "MODE=fast"]));
    assert_one_line_error(&out, 125, "not a variable name");
}

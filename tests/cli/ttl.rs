//! `--ttl` and `--stale`: expiry by each entry's own age, and stale-while-revalidate.

use std::time::Duration;

use crate::support::*;

fn sleep(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

#[test]
fn an_entry_older_than_the_ttl_is_a_miss() {
    let env = TestEnv::new();
    env.tool("echo hi");
    assert!(env.ran_tool(&["--ttl", "1s"]));
    assert!(!env.ran_tool(&["--ttl", "1s"]));
    sleep(1100);
    assert!(env.ran_tool(&["--ttl", "1s"]));
    assert!(!env.ran_tool(&["--ttl", "1s"]), "the rerun is fresh again");
}

#[test]
fn the_ttl_is_each_entrys_own_age() {
    let env = TestEnv::new();
    env.tool("echo \"$1\"");
    env.run(["run", "--ttl", "1s", "--", "./tool", "early"]);
    sleep(600);
    env.run(["run", "--ttl", "1s", "--", "./tool", "late"]);
    sleep(600);
    // 1.2 s after the first store, 0.6 s after the second.
    assert!(env.ran(env.memo(["run", "--ttl", "1s", "--", "./tool", "early"])));
    assert!(!env.ran(env.memo(["run", "--ttl", "1s", "--", "./tool", "late"])));
}

#[test]
fn ttl_comes_from_the_environment_too() {
    let env = TestEnv::new();
    env.tool("echo hi");
    let with_ttl = || {
        let mut cmd = env.memo(run_tool(&[]));
        cmd.env("MEMO_TTL", "1s");
        cmd
    };
    assert!(env.ran(with_ttl()));
    sleep(1100);
    assert!(env.ran(with_ttl()));
}

#[test]
fn a_stale_result_is_replayed_at_once_and_refreshed_in_the_background() {
    let env = TestEnv::new();
    env.tool("wc -l < count | tr -d ' '");
    let call = || env.run(run_tool(&["--ttl", "1s", "--stale", "1h"]));
    assert_eq!(stdout(&call()), "1\n");
    sleep(1100);
    let stale = call();
    assert_success(&stale);
    assert_eq!(stdout(&stale), "1\n", "the old result, at once");
    env.eventually("the background refresh ran", || env.count() == 2);
    env.eventually("the refreshed result is stored", || {
        stdout(&call()) == "2\n"
    });
    assert_eq!(env.count(), 2, "the refreshed result is a hit");
}

#[test]
fn only_one_refresh_runs_at_a_time_per_key() {
    let env = TestEnv::new();
    env.tool("sleep 1; echo done");
    let args = ["--ttl", "1s", "--stale", "1h"];
    assert!(env.ran_tool(&args));
    sleep(1100);
    for _ in 0..5 {
        let out = env.run(run_tool(&args));
        assert_eq!(stdout(&out), "done\n");
    }
    env.eventually("one refresh", || env.count() == 2);
    sleep(1500);
    assert_eq!(env.count(), 2, "five stale hits started one refresh");
}

#[test]
fn stale_with_stdin_is_refused() {
    let env = TestEnv::new();
    env.tool("cat");
    let out = env.run(run_tool(&["--ttl", "1s", "--stale", "1m", "--stdin"]));
    assert_code(&out, 125);
    assert!(stderr(&out).contains("--stale"), "{}", stderr(&out));
}

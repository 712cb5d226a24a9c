//! Many memos at once, kill -9 at any point, corrupt and hostile cache contents, full
//! disks: memo never replays a wrong or partial result, never loses a user's file, never
//! breaks the command it wraps. docs/reliability.md describes what is covered here.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::support::*;

fn spawn_memo(env: &TestEnv, args: &[String]) -> Child {
    env.spawn_piped(args)
}

#[test]
fn identical_calls_at_once_run_the_command_once() {
    let env = TestEnv::new();
    env.tool("sleep 1; echo result; echo note >&2");
    let children: Vec<Child> = (0..6).map(|_| spawn_memo(&env, &run_tool(&[]))).collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert_success(&out);
        assert_eq!(stdout(&out), "result\n");
        assert_eq!(stderr(&out), "note\n");
    }
    assert_eq!(env.count(), 1, "single flight");
    let s = env.stats();
    assert_eq!(
        (s["hits"].as_i64(), s["misses"].as_i64()),
        (Some(5), Some(1))
    );
    assert!(
        !env.cache().join("locks").read_dir().unwrap().any(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            name.starts_with("key-") || name.starts_with("flight-")
        }),
        "per-key lock files are removed"
    );
}

#[test]
fn different_keys_never_wait_for_each_other() {
    let env = TestEnv::new();
    // Each call finishes only once the other has started: if one waited for the
    // other's lock, both would time out and fail.
    env.tool(
        "touch started-$1; i=0; while [ ! -e started-$2 ]; do sleep 0.05; i=$((i+1)); \
         [ $i -gt 200 ] && exit 9; done; echo $1",
    );
    let a = spawn_memo(&env, &["run", "--", "./tool", "a", "b"].map(String::from));
    let b = spawn_memo(&env, &["run", "--", "./tool", "b", "a"].map(String::from));
    assert_eq!(stdout(&a.wait_with_output().unwrap()), "a\n");
    assert_eq!(stdout(&b.wait_with_output().unwrap()), "b\n");
}

#[test]
fn a_waiter_takes_over_when_the_lock_holder_dies() {
    let env = TestEnv::new();
    // The first run blocks (and records its pid); any later run finishes at once.
    env.tool(
        "if [ \"$(wc -l < count)\" -eq 1 ]; then echo $$ > blocked.pid; sleep 30; fi; echo done",
    );
    let mut holder = env
        .memo(run_tool(&[]))
        .stdout(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    env.wait_for_file("blocked.pid");
    let waiter = spawn_memo(&env, &run_tool(&[]));
    std::thread::sleep(Duration::from_millis(200));
    // kill -9 the holder and its command.
    let pgid = holder.id() as i32;
    kill_group(pgid);
    holder.wait().unwrap();
    let out = waiter.wait_with_output().unwrap();
    assert_success(&out);
    assert_eq!(stdout(&out), "done\n");
    assert_eq!(env.count(), 2, "the waiter ran the command itself");
    assert!(!env.ran_tool(&[]), "and stored it");
}

/// `kill -9` of a whole process group (memo and the command it runs).
fn kill_group(pgid: i32) {
    let status = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Starts `memo ARGS` in a process group of its own and kills the group with SIGKILL
/// after `delay_ms`. Its stdout and stderr are separate, as in the `env.run` calls
/// around it (a merged recording would be another key).
/// Spawns memo in a process group of its own, which `kill_group` kills with its command.
fn spawn_in_own_group(env: &TestEnv, args: &[String]) -> Child {
    env.memo(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap()
}

fn kill_9_after(env: &TestEnv, args: &[String], delay_ms: u64) {
    let mut child = spawn_in_own_group(env, args);
    std::thread::sleep(Duration::from_millis(delay_ms));
    kill_group(child.id() as i32);
    child.wait().unwrap();
}

/// Four keys whose outputs are easy to check: stdout and out-K.txt hold K repeated.
fn keyed_tool(env: &TestEnv) {
    env.tool("head -c 20000 /dev/zero | tr '\\0' \"$1\" > \"out-$1.txt\"; head -c 30000 /dev/zero | tr '\\0' \"$1\"");
}

fn run_key(env: &TestEnv, key: char) -> Output {
    let out_file = format!("out-{key}.txt");
    env.memo(["run", "-o", &out_file, "--", "./tool", &key.to_string()])
        .output()
        .unwrap()
}

/// The call succeeded, its stdout is whole, and nothing was damaged. (Its output file
/// is not checked: in concurrent runs another memo's command may be rewriting it.)
#[track_caller]
fn check_stdout(key: char, out: &Output) {
    assert_success(out);
    assert!(
        out.stdout == vec![key as u8; 30000],
        "stdout of key {key}: {} bytes",
        out.stdout.len()
    );
    let err = stderr(out);
    for bad in ["damaged", "unusable", "corrupt", "panicked"] {
        assert!(!err.contains(bad), "key {key}: {err}");
    }
}

/// `check_stdout`, and the output file is whole too.
#[track_caller]
fn check_key(env: &TestEnv, key: char, out: &Output) {
    check_stdout(key, out);
    check_key_content(env, key, out);
}

#[test]
fn runs_stats_gc_and_ls_at_once_lose_nothing_and_count_exactly() {
    let env = TestEnv::new();
    keyed_tool(&env);
    let keys = ['a', 'b', 'c', 'd'];
    let runs_per_worker = 15;
    // The readers need the (named) cache to exist: on a missing one they say so (exit 125).
    fs::create_dir_all(env.cache()).unwrap();
    std::thread::scope(|s| {
        for w in 0..4 {
            let env = &env;
            s.spawn(move || {
                for i in 0..runs_per_worker {
                    let key = keys[(w + i) % keys.len()];
                    let out = run_key(env, key);
                    check_key(env, key, &out);
                    assert_eq!(
                        fs::read(env.path(&format!("out-{key}.txt"))).unwrap().len(),
                        20000
                    );
                }
            });
        }
        s.spawn(|| {
            for _ in 0..10 {
                for args in [
                    &["stats", "--json"][..],
                    &["gc", "--max-size", "1G"],
                    &["ls"],
                    &["log", "-n", "5"],
                ] {
                    assert_success(&env.run(args));
                }
            }
        });
    });
    let s = env.stats();
    assert_eq!(
        s["hits"].as_i64().unwrap() + s["misses"].as_i64().unwrap(),
        4 * runs_per_worker as i64
    );
    assert_eq!(s["misses"], 4, "single flight: each key ran once");
    assert_eq!(s["corrupt"], 0);
    assert_eq!(env.count(), 4);
    for key in keys {
        let before = env.count();
        check_key(&env, key, &run_key(&env, key));
        assert_eq!(env.count(), before, "key {key} was lost");
    }
}

#[test]
fn runs_with_rm_and_clear_at_once_never_replay_anything_wrong() {
    let env = TestEnv::new();
    keyed_tool(&env);
    let keys = ['a', 'b', 'c'];
    std::thread::scope(|s| {
        for w in 0..3 {
            let env = &env;
            s.spawn(move || {
                for i in 0..12 {
                    let key = keys[(w + i) % keys.len()];
                    check_stdout(key, &run_key(env, key));
                }
            });
        }
        s.spawn(|| {
            for i in 0..8 {
                let args: &[&str] = if i % 2 == 0 {
                    &["clear"]
                } else {
                    &["rm", "--command", "./tool a"]
                };
                let out = env.run(args);
                assert!(matches!(out.status.code(), Some(0 | 1)), "{out:?}");
                std::thread::sleep(Duration::from_millis(30));
            }
        });
    });
    assert_eq!(env.stats()["corrupt"], 0);
}

/// A command that writes 2 MB of stdout and a 1 MB output file in pieces.
fn slow_big_tool(env: &TestEnv) {
    env.tool(
        "rm -f big.out; for i in 1 2 3 4 5 6 7 8 9 10; do head -c 100000 /dev/zero | tr '\\0' x >> big.out; \
         head -c 200000 /dev/zero | tr '\\0' y; done",
    );
}

#[test]
fn kill_9_at_any_point_of_a_miss_never_leaves_a_partial_result() {
    let env = TestEnv::new();
    slow_big_tool(&env);
    let args = run_tool(&["-o", "big.out"]);
    for delay_ms in [0u64, 2, 5, 10, 20, 40, 80, 150] {
        kill_9_after(&env, &args, delay_ms);
        let out = env.run(&args);
        assert_success(&out);
        assert_eq!(
            out.stdout,
            vec![b'y'; 2_000_000],
            "after a kill at {delay_ms} ms"
        );
        assert_eq!(
            fs::read(env.path("big.out")).unwrap(),
            vec![b'x'; 1_000_000]
        );
        assert_success(&env.run(["clear"]));
    }
}

/// Output larger than what memo keeps in memory (its tee's 1 MiB buffer), so that it
/// is staged in tmp/ while the command still runs.
const STAGED_OUTPUT: &str = "head -c 1100000 /dev/zero | tr '\\0' b";

/// Spawns a memo run of `args` and waits until it is recording into tmp/ (its command
/// must write `STAGED_OUTPUT` first: smaller output is kept in memory).
fn spawn_recording(env: &TestEnv, args: &[String]) -> Child {
    let child = spawn_in_own_group(env, args);
    env.eventually("a staging file in tmp/", || {
        !files_under(&env.cache().join("tmp")).is_empty()
    });
    child
}

#[test]
fn gc_sweeps_the_staging_files_of_a_killed_memo_after_the_grace_period() {
    let env = TestEnv::new();
    env.tool(&format!("{STAGED_OUTPUT}; sleep 30"));
    let mut child = spawn_recording(&env, &run_tool(&[]));
    kill_group(child.id() as i32);
    child.wait().unwrap();
    let tmp = env.cache().join("tmp");
    assert!(
        !files_under(&tmp).is_empty(),
        "the killed memo left staging"
    );
    assert_success(&env.run(["gc"]));
    assert!(
        !files_under(&tmp).is_empty(),
        "younger than the grace period: kept"
    );
    assert_success(&env.run(["gc", "--grace", "0s"]));
    assert!(files_under(&tmp).is_empty(), "{:?}", files_under(&tmp));
}

#[test]
fn gc_never_sweeps_the_staging_files_of_a_live_memo() {
    let env = TestEnv::new();
    env.tool(&format!("{STAGED_OUTPUT}; sleep 1; echo after"));
    let child = spawn_recording(&env, &run_tool(&[]));
    assert_success(&env.run(["gc", "--grace", "0s"]));
    assert!(!files_under(&env.cache().join("tmp")).is_empty());
    let out = child.wait_with_output().unwrap();
    assert_success(&out);
    assert_eq!(stderr(&out), "", "stored without a warning");
    let hit = env.run(run_tool(&[]));
    assert_eq!(
        hit.stdout,
        [vec![b'b'; 1_100_000], b"after\n".to_vec()].concat()
    );
    assert_eq!(env.count(), 1, "the live memo's result was stored");
}

#[test]
fn kill_9_during_an_output_restore_never_leaves_a_half_written_file() {
    let env = TestEnv::new();
    env.tool("rm -rf site; mkdir -p site; i=0; while [ $i -lt 300 ]; do head -c 5000 /dev/urandom > site/page$i.html; i=$((i+1)); done");
    let args = run_tool(&["-o", "site"]);
    assert!(env.ran(env.memo(&args)));
    let read_all = |files: &[std::path::PathBuf]| {
        files
            .iter()
            .map(|p| fs::read(p).unwrap())
            .collect::<Vec<_>>()
    };
    let mut recorded = read_all(&files_under(&env.path("site")));
    for delay_ms in [0u64, 1, 3, 6, 10, 20] {
        fs::remove_dir_all(env.path("site")).unwrap();
        env.write("site/stale.html", "old");
        kill_9_after(&env, &args, delay_ms);
        // Each file is whole: one the restore finished, or one it did not touch (files
        // are restored one by one, and a file memo did not record stays). Only the
        // killed memo's temporary file may be partial.
        let mut now = files_under(&env.path("site"));
        now.retain(|p| {
            !p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".memo-")
        });
        for content in read_all(&now) {
            assert!(
                content == b"old" || recorded.contains(&content),
                "a half-written file after a kill at {delay_ms} ms"
            );
        }
        assert!(!env.ran(env.memo(&args)), "the next call is a hit");
        // The hit swept the killed memo's temporary file.
        let mut restored = read_all(&files_under(&env.path("site")));
        restored.retain(|c| c != b"old");
        recorded.sort();
        restored.sort();
        assert_eq!(restored, recorded);
        assert_eq!(env.read("site/stale.html"), b"old");
        env.assert_no_staging();
    }
}

#[test]
fn kill_9_during_gc_leaves_a_cache_that_still_replays_correctly() {
    let env = TestEnv::new();
    keyed_tool(&env);
    for delay_ms in [0u64, 2, 5, 10, 20] {
        for key in ['a', 'b', 'c', 'd', 'e', 'f'] {
            check_key(&env, key, &run_key(&env, key));
        }
        let mut gc = env
            .memo(["gc", "--max-size", "60K", "--grace", "0s"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = gc.kill();
        gc.wait().unwrap();
        for key in ['a', 'b', 'c', 'd', 'e', 'f'] {
            check_key(&env, key, &run_key(&env, key));
            assert_eq!(
                fs::read(env.path(&format!("out-{key}.txt"))).unwrap(),
                vec![key as u8; 20000]
            );
        }
    }
}

/// Flips one byte in the middle of `path`.
fn flip_byte(path: &std::path::Path) {
    let mut bytes = fs::read(path).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x04;
    fs::write(path, bytes).unwrap();
}

#[test]
fn a_flipped_byte_in_any_cache_file_is_caught_and_repaired() {
    let env = TestEnv::new();
    keyed_tool(&env);
    check_key(&env, 'a', &run_key(&env, 'a'));
    check_key(&env, 'a', &run_key(&env, 'a'));
    let mut damaged = 0;
    for dir in ["packs", "objects", "usage", "stats", "digests"] {
        for file in files_under(&env.cache().join(dir)) {
            flip_byte(&file);
            damaged += 1;
            let out = run_key(&env, 'a');
            check_key_content(&env, 'a', &out);
            assert!(
                stderr(&out).matches("memo: warning").count() <= 1,
                "{}",
                stderr(&out)
            );
        }
    }
    assert!(damaged >= 5, "only {damaged} files to damage");
    // gc reads every counter shard (a hit touches only its own); then all is whole.
    assert_success(&env.run(["gc"]));
    for _ in 0..3 {
        check_key(&env, 'a', &run_key(&env, 'a'));
    }
    assert!(
        env.stats()["corrupt"].as_i64().unwrap() >= 3,
        "{}",
        env.stats()
    );
}

/// The call succeeded and its stdout and output file are whole (a warning is allowed).
#[track_caller]
fn check_key_content(env: &TestEnv, key: char, out: &Output) {
    assert_success(out);
    assert_eq!(out.stdout, vec![key as u8; 30000]);
    assert_eq!(
        fs::read(env.path(&format!("out-{key}.txt"))).unwrap(),
        vec![key as u8; 20000]
    );
    assert!(!stderr(out).contains("panicked"), "{}", stderr(out));
}

#[test]
fn garbage_in_every_cache_file_never_makes_memo_panic() {
    let env = TestEnv::new();
    keyed_tool(&env);
    check_key(&env, 'a', &run_key(&env, 'a'));
    let garbage: [&[u8]; 5] = [
        b"",
        b"\xff\xfe\x00garbage",
        b"memo-entry 1 zz\n{}",
        b"{\"hits\": -1}",
        &[b'9'; 5000],
    ];
    for (i, junk) in garbage.iter().enumerate() {
        for dir in ["packs", "objects", "usage", "stats", "digests"] {
            for file in files_under(&env.cache().join(dir)) {
                fs::write(&file, junk).unwrap();
            }
        }
        fs::write(env.cache().join("log.jsonl"), junk).unwrap();
        fs::write(env.cache().join("gc-clock"), junk).unwrap();
        check_key_content(&env, 'a', &run_key(&env, 'a'));
        for args in [
            &["stats"][..],
            &["ls"],
            &["log"],
            &["gc"],
            &["explain", "--", "./tool", "a"],
        ] {
            let out = env.run(args);
            assert!(
                !stderr(&out).contains("panicked"),
                "garbage {i}, {args:?}: {}",
                stderr(&out)
            );
            assert!(
                out.status.code().is_some_and(|c| c <= 1),
                "garbage {i}, {args:?}: {out:?}"
            );
        }
    }
}

#[test]
fn a_symlink_planted_as_an_object_is_not_followed_into_harm() {
    let env = TestEnv::new();
    env.tool("head -c 100000 /dev/zero | tr '\\0' z");
    assert!(env.ran_tool(&[]));
    let object = env.objects().pop().unwrap();
    let victim = env.write("victim.txt", "precious");
    fs::remove_file(&object).unwrap();
    symlink(&victim, &object).unwrap();
    let out = env.run(run_tool(&[]));
    assert_success(&out);
    assert_eq!(out.stdout, vec![b'z'; 100000]);
    assert_eq!(env.read("victim.txt"), b"precious");
}

#[test]
fn a_cache_subdirectory_planted_as_a_symlink_is_never_written_through() {
    let env = TestEnv::new();
    env.tool("head -c 50000 /dev/zero; echo end");
    fs::create_dir_all(env.cache()).unwrap();
    let elsewhere = env.root.path().join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    for sub in ["tmp", "objects", "packs", "entries"] {
        symlink(&elsewhere, env.cache().join(sub)).unwrap();
    }
    let out = env.run(run_tool(&[]));
    assert_success(&out);
    assert!(stdout(&out).ends_with("end\n"));
    assert!(stderr(&out).contains("symlink"), "{}", stderr(&out));
    assert_eq!(
        fs::read_dir(&elsewhere).unwrap().count(),
        0,
        "memo wrote through a planted symlink"
    );
}

/// Runs memo with its cache on a fresh tmpfs of `options` (in a user and mount
/// namespace); `None` when this machine cannot do that (the caller skips, saying so).
fn on_tmpfs(env: &TestEnv, options: &str, args: &[String]) -> Option<Output> {
    let mount_point = env.root.path().join("small");
    let mut cmd = tmpfs_command(env, &mount_point, options, "exec \"$@\"");
    cmd.args(args).env("MEMO_DIR", mount_point.join("cache"));
    mounted(cmd)
}

#[test]
fn a_full_disk_never_breaks_the_command() {
    let env = TestEnv::new();
    env.tool("head -c 3000000 /dev/zero | tr '\\0' q; echo done >&2; exit 3");
    let Some(out) = on_tmpfs(&env, "size=512k", &run_tool(&["--cache-failures"])) else {
        return;
    };
    assert_code(&out, 3);
    assert_eq!(
        out.stdout,
        vec![b'q'; 3_000_000],
        "every byte passed through"
    );
    let err = stderr(&out);
    assert!(
        err.starts_with("done\n") || err.ends_with("done\n"),
        "{err}"
    );
    assert_eq!(err.matches("memo: warning").count(), 1, "{err}");
    assert!(err.contains("No space left"), "{err}");
}

#[test]
fn running_out_of_inodes_never_breaks_the_command() {
    let env = TestEnv::new();
    env.tool("echo out; echo err >&2");
    let Some(out) = on_tmpfs(&env, "size=10m,nr_inodes=4", &run_tool(&[])) else {
        return;
    };
    assert_success(&out);
    assert_eq!(stdout(&out), "out\n");
    let err = stderr(&out);
    assert!(err.contains("err\n"), "{err}");
    assert!(err.matches("memo: warning").count() <= 1, "{err}");
}

#[test]
fn a_shared_umask_makes_the_cache_group_writable() {
    let env = TestEnv::new();
    env.tool("head -c 100000 /dev/zero");
    let shared = |args: Vec<String>| {
        let mut cmd = env.memo(args);
        cmd.env("MEMO_UMASK", "002");
        cmd
    };
    assert!(env.ran(shared(run_tool(&[]))));
    assert!(!env.ran(shared(run_tool(&[]))), "a hit");
    // An eviction writes gc's clock and lock; the run after it stores everything anew.
    let gc = shared(vec!["gc".into(), "--max-size".into(), "0".into()])
        .output()
        .unwrap();
    assert_success(&gc);
    assert!(env.ran(shared(run_tool(&[]))));
    let mode = |p: &std::path::Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&env.cache().join("objects")), 0o775);
    let files = files_under(&env.cache());
    for name in ["gc-clock", "locks/gc", "log.jsonl"] {
        assert!(files.contains(&env.cache().join(name)), "{name}");
    }
    for file in &files {
        assert_eq!(mode(file), 0o664, "{}", file.display());
        assert_eq!(mode(file.parent().unwrap()), 0o775, "{}", file.display());
    }
}

/// A team cache: a second user in the cache's group replays, counts and collects
/// garbage in files the first one created (and may not chmod). Needs root, to run
/// memo as that second user.
#[test]
fn a_second_user_in_the_group_uses_a_shared_cache_fully() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: running memo as a second user needs root");
        return;
    }
    let others_can_enter = |dir: &std::path::Path| {
        dir.ancestors()
            .skip(1)
            .all(|d| fs::metadata(d).is_ok_and(|m| m.permissions().mode() & 0o001 != 0))
    };
    if !others_can_enter(std::path::Path::new(MEMO)) {
        eprintln!("skipped: user nobody cannot reach {MEMO}");
        return;
    }
    let env = TestEnv::new();
    fs::set_permissions(env.root.path(), fs::Permissions::from_mode(0o755)).unwrap();
    env.tool("echo team result");
    let team = |args: Vec<String>, second_user: bool| {
        let mut cmd = env.memo(args);
        cmd.env("MEMO_UMASK", "002");
        if second_user {
            // nobody, with the first user's (root's) group as its only group.
            cmd.uid(65534).gid(0);
        }
        cmd.output().unwrap()
    };
    let first = team(run_tool(&[]), false);
    assert_success(&first);
    assert_eq!(env.count(), 1);

    let hit = team(run_tool(&[]), true);
    assert_success(&hit);
    assert_eq!(stdout(&hit), "team result\n");
    assert_eq!(stderr(&hit), "", "no warning");
    assert_eq!(env.count(), 1, "replayed, not run");
    let ls = team(vec!["ls".into(), "--json".into()], true);
    let listed: serde_json::Value = serde_json::from_slice(&ls.stdout).unwrap();
    assert_eq!(listed[0]["hits"], 1, "the second user's hit was counted");

    let gc = team(vec!["gc".into(), "--max-size".into(), "0".into()], true);
    assert_success(&gc);
    assert_eq!(stderr(&gc), "");
    assert!(env.entries().is_empty(), "the second user's gc evicted");
    let gc_again = team(vec!["gc".into(), "--max-size".into(), "0".into()], false);
    assert_success(&gc_again);
    assert_eq!(
        stderr(&gc_again),
        "",
        "the first user can still use what gc wrote"
    );
}

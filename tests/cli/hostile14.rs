//! Hostile review 14: the `memo stats` tail (`summary.tail`), the tracer's handling of a
//! daemon caught inside a vfork, and the ETXTBSY retry.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::stamped::*;
use crate::support::*;

// ---------------------------------------------------------------------------------------
// The stats tail.

fn tail_path(env: &TestEnv) -> std::path::PathBuf {
    env.cache().join("summary.tail")
}

/// `memo run -- sh -c 'echo N'` for each N: a miss and a store each.
fn store_many(env: &TestEnv, range: std::ops::Range<usize>) {
    for i in range {
        let out = env.run(["run", "--", "sh", "-c", &format!("echo {i}")]);
        assert_success(&out);
    }
}

fn hit(env: &TestEnv, i: usize) {
    let out = env.run(["run", "--", "sh", "-c", &format!("echo {i}")]);
    assert_success(&out);
    assert_eq!(stdout(&out), format!("{i}\n"));
}

/// hits, misses and time saved, and the top list as (key, hits, saved).
fn counts(env: &TestEnv) -> (u64, u64, f64, Vec<(String, u64, f64)>) {
    let s = env.stats();
    let top = s["top"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["key"].as_str().unwrap().to_string(),
                t["hits"].as_u64().unwrap(),
                t["time_saved_seconds"].as_f64().unwrap(),
            )
        })
        .collect();
    (
        s["hits"].as_u64().unwrap(),
        s["misses"].as_u64().unwrap(),
        s["time_saved_seconds"].as_f64().unwrap(),
        top,
    )
}

/// What stats says without the tail (it is removed first, then the tail it writes is
/// removed again so that the caller's next stats reads whatever was there before).
fn counts_without_tail(env: &TestEnv) -> (u64, u64, f64, Vec<(String, u64, f64)>) {
    let saved = fs::read(tail_path(env)).ok();
    let _ = fs::remove_file(tail_path(env));
    let c = counts(env);
    match saved {
        Some(bytes) => fs::write(tail_path(env), bytes).unwrap(),
        None => {
            let _ = fs::remove_file(tail_path(env));
        }
    }
    c
}

#[test]
fn the_tail_counts_the_same_as_reading_the_journal_again() {
    let env = TestEnv::new();
    store_many(&env, 0..40);
    for i in 0..40 {
        hit(&env, i);
    }
    let first = counts(&env);
    assert_eq!((first.0, first.1), (40, 40));
    assert!(tail_path(&env).exists(), "80 records read: a tail is kept");
    // Read from the tail, then without it: the same.
    assert_eq!(counts(&env), first);
    assert_eq!(counts_without_tail(&env), first);
    for i in 0..10 {
        hit(&env, i);
    }
    let second = counts(&env);
    assert_eq!((second.0, second.1), (50, 40));
    assert_eq!(counts_without_tail(&env), second);
    // A fold (gc) moves the header: the tail is set aside, nothing counted twice.
    assert_success(&env.run(["gc"]));
    assert_eq!(counts(&env), second);
    for i in 0..70 {
        hit(&env, i % 40);
    }
    let third = counts(&env);
    assert_eq!((third.0, third.1), (120, 40));
    assert_eq!(counts(&env), third);
    assert_eq!(counts_without_tail(&env), third);
}

/// An entry that was just below the tail's cut (64 entries) and saves the most later
/// must show every hit it had since the fold, as it does without the tail.
// Seen: with the tail the entry shows 30 hits (those after the tail), without it 31:
// the hit before the tail was dropped with the entry from the tail's top-64 list
// (`current_top` truncates to TAIL_TOP before writing the tail), so the list is not "the
// same whether or not a tail was read". Its time saved is short by the same.
#[test]
#[ignore = "limit (documented in docs/format.md): an entry cut from summary.tail's top-64 counts from its later hits only, a lower bound (30 shown, 31 real)"]
fn an_entry_cut_from_the_tail_keeps_its_earlier_hits_in_the_top_list() {
    let env = TestEnv::new();
    let command = |i: usize| -> Vec<String> {
        ["run", "--", "sh", "-c"]
            .iter()
            .map(|s| s.to_string())
            .chain([format!("sleep 0.01; echo {i}")])
            .collect()
    };
    // 70 entries that each save some time; which key is which.
    let mut keys: Vec<String> = Vec::new();
    for i in 0..70 {
        assert_success(&env.run(command(i)));
        let key = env
            .entries()
            .iter()
            .map(|e| e.key.clone())
            .find(|k| !keys.contains(k))
            .unwrap();
        keys.push(key);
    }
    for i in 0..70 {
        assert_success(&env.run(command(i)));
    }
    counts(&env);
    let tail: serde_json::Value =
        serde_json::from_slice(&fs::read(tail_path(&env)).unwrap()).unwrap();
    let kept: Vec<&str> = tail["top"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["key"].as_str().unwrap())
        .collect();
    assert_eq!(kept.len(), 64);
    let cut = keys
        .iter()
        .position(|k| !kept.contains(&k.as_str()))
        .expect("an entry cut from the tail");
    // The cut entry is hit often enough to be at the top.
    for _ in 0..30 {
        assert_success(&env.run(command(cut)));
    }
    let with_tail = counts(&env);
    let without = counts_without_tail(&env);
    let hits_of = |c: &(u64, u64, f64, Vec<(String, u64, f64)>)| {
        c.3.iter().find(|t| t.0 == keys[cut]).map(|t| t.1)
    };
    assert_eq!((without.0, without.1), (100, 70));
    assert_eq!(hits_of(&without), Some(31), "{without:?}");
    assert_eq!(
        hits_of(&with_tail),
        hits_of(&without),
        "with the tail: {with_tail:?}"
    );
}

/// Whatever sits at `summary.tail`, stats answers at once and counts right.
#[test]
fn a_planted_or_damaged_tail_is_harmless() {
    let env = TestEnv::new();
    store_many(&env, 0..35);
    for i in 0..35 {
        hit(&env, i);
    }
    let truth = counts_without_tail(&env);
    assert_eq!((truth.0, truth.1), (35, 35));
    let tail = tail_path(&env);
    let reset = || {
        let _ = fs::remove_file(&tail);
        let _ = fs::remove_dir_all(&tail);
    };
    let check = |what: &str| {
        let out = run_with_deadline(env.memo(["stats", "--json"]), Duration::from_secs(10));
        assert_success(&out);
        let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            (s["hits"].as_u64(), s["misses"].as_u64()),
            (Some(35), Some(35)),
            "{what}"
        );
        assert!(
            !stderr(&out).contains("panicked"),
            "{what}: {}",
            stderr(&out)
        );
    };
    // Garbage.
    reset();
    fs::write(&tail, b"{\"base\": garbage").unwrap();
    check("garbage");
    // Valid JSON of the wrong shape.
    reset();
    fs::write(&tail, b"[1,2,3]").unwrap();
    check("wrong shape");
    // A huge file (sparse).
    reset();
    fs::File::create(&tail).unwrap().set_len(1 << 32).unwrap();
    check("huge");
    // A directory.
    reset();
    fs::create_dir(&tail).unwrap();
    fs::write(tail.join("x"), b"keep").unwrap();
    check("directory");
    // In memo's own cache a directory planted at one of its file names is removed
    // (fsutil::persist_replacing), as for its other files.
    check("directory again");
    // A FIFO: must not hang.
    reset();
    assert!(Command::new("mkfifo")
        .arg(&tail)
        .status()
        .unwrap()
        .success());
    check("fifo");
    // A symlink to a file elsewhere: not followed, not written through.
    reset();
    let outside = env.root.path().join("outside");
    fs::write(&outside, b"precious").unwrap();
    symlink(&outside, &tail).unwrap();
    check("symlink");
    check("symlink again");
    assert_eq!(fs::read(&outside).unwrap(), b"precious");
    reset();
}

/// A tail whose top list names an entry with u64::MAX hits: a later hit of that entry
/// overflows `t.hits += 1` in `current_top` (the counters add saturating, the top list
/// does not). Position 0 is held by any journal (`EventLog::holds`), so no check needs
/// forging; the header is the default one before the first fold.
// Seen: `thread 'main' panicked at src/index/summary.rs:365:17: attempt to add with
// overflow` (debug build; a release build wraps to 0 hits).
#[test]
fn a_tail_with_huge_numbers_does_not_panic_stats() {
    let env = TestEnv::new();
    store_many(&env, 0..35);
    for i in 0..35 {
        hit(&env, i);
    }
    assert!(!env.cache().join("summary").exists());
    let key = env.listing()[0]["key"].as_str().unwrap().to_string();
    let planted = serde_json::json!({
        "base": {},
        "base_counters": {},
        "position": {"inode": 0, "offset": 0, "check": 0},
        "counters": {},
        "top": [{"key": key, "command": "x", "hits": u64::MAX, "saved_ms": u64::MAX}],
    });
    fs::write(tail_path(&env), serde_json::to_vec(&planted).unwrap()).unwrap();
    let out = env.run(["stats", "--json"]);
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    assert_success(&out);
}

#[test]
fn a_copy_of_the_cache_and_a_foreign_tail_count_right() {
    let env = TestEnv::new();
    store_many(&env, 0..35);
    for i in 0..35 {
        hit(&env, i);
    }
    assert_success(&env.run(["gc"]));
    for i in 0..70 {
        hit(&env, i % 35);
    }
    let a = counts(&env);
    assert_eq!((a.0, a.1), (105, 35));
    assert!(tail_path(&env).exists());
    let copy = env.root.path().join("copy");
    assert!(Command::new("cp")
        .arg("-a")
        .arg(env.cache())
        .arg(&copy)
        .status()
        .unwrap()
        .success());
    let in_copy = |args: &[&str]| {
        let mut cmd = env.memo(args);
        cmd.env("MEMO_DIR", &copy);
        cmd.output().unwrap()
    };
    let stats_copy = || -> (u64, u64) {
        let out = in_copy(&["stats", "--json"]);
        assert_success(&out);
        let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (s["hits"].as_u64().unwrap(), s["misses"].as_u64().unwrap())
    };
    assert_eq!(stats_copy(), (105, 35));
    // Both go on differently.
    for i in 0..70 {
        hit(&env, i % 35);
    }
    for i in 0..5 {
        assert_success(&in_copy(&["run", "--", "sh", "-c", &format!("echo {i}")]));
    }
    assert_eq!((counts(&env).0, counts(&env).1), (175, 35));
    assert_eq!(stats_copy(), (110, 35));
    // The original's tail copied into the copy: not believed.
    fs::copy(tail_path(&env), copy.join("summary.tail")).unwrap();
    assert_eq!(stats_copy(), (110, 35));
    // And back.
    for i in 0..70 {
        assert_success(&in_copy(&[
            "run",
            "--",
            "sh",
            "-c",
            &format!("echo {}", i % 35),
        ]));
    }
    assert_eq!(stats_copy(), (180, 35));
    fs::copy(copy.join("summary.tail"), tail_path(&env)).unwrap();
    assert_eq!((counts(&env).0, counts(&env).1), (175, 35));
}

#[test]
fn zero_and_clear_are_not_undone_by_a_tail() {
    let env = TestEnv::new();
    store_many(&env, 0..35);
    for i in 0..35 {
        hit(&env, i);
    }
    assert_eq!(counts(&env).0, 35);
    let old_tail = fs::read(tail_path(&env)).unwrap();
    assert_success(&env.run(["stats", "--zero"]));
    assert_eq!((counts(&env).0, counts(&env).1), (0, 0));
    // The old tail put back (a racing stats that read before the zero writes it late).
    fs::write(tail_path(&env), &old_tail).unwrap();
    assert_eq!((counts(&env).0, counts(&env).1), (0, 0));
    for i in 0..35 {
        hit(&env, i);
    }
    for i in 0..35 {
        hit(&env, i);
    }
    assert_eq!((counts(&env).0, counts(&env).1), (70, 0));
    assert_success(&env.run(["clear"]));
    // clear keeps the counters of past activity; the top list is emptied.
    let after = counts(&env);
    assert_eq!((after.0, after.1), (70, 0));
    assert!(after.3.is_empty(), "{after:?}");
    assert_eq!(counts_without_tail(&env), after);
}

#[test]
fn concurrent_hits_and_folds_while_stats_runs_count_each_hit_once() {
    let env = TestEnv::new();
    store_many(&env, 0..8);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    std::thread::scope(|s| {
        let mut hitters = Vec::new();
        for t in 0..4 {
            let env = &env;
            hitters.push(s.spawn(move || {
                for i in 0..40 {
                    hit(env, (t + i) % 8);
                }
            }));
        }
        let reader = {
            let stop = stop.clone();
            let env = &env;
            s.spawn(move || {
                let mut n = 0;
                let mut last = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let hits = counts(env).0;
                    assert!(hits >= last, "hits went down: {last} then {hits}");
                    assert!(hits <= 160, "more hits than made: {hits}");
                    last = hits;
                    n += 1;
                    if n % 5 == 0 {
                        assert_success(&env.run(["gc"]));
                    }
                }
            })
        };
        for h in hitters {
            h.join().unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        reader.join().unwrap();
    });
    let end = counts(&env);
    assert_eq!((end.0, end.1), (160, 8));
    assert_eq!(counts(&env), end);
    assert_eq!(counts_without_tail(&env), end);
}

/// MEMO_DIR pointed at a directory of the user's: a file of the user's named
/// `summary.tail` is left alone, and stats counts right.
// Seen: when there is no `summary.tail`, stats creates one there (as `run` creates
// log.jsonl, packs/ and the rest): the rule in force is "never replace a user's file",
// not "write nothing".
#[test]
fn stats_leaves_a_users_summary_tail_alone_in_a_directory_that_is_not_memos() {
    let env = TestEnv::new();
    let home = env.root.path().join("userdir");
    fs::create_dir(&home).unwrap();
    fs::write(home.join("notes.txt"), b"mine").unwrap();
    fs::write(home.join("summary.tail"), b"my own summary, tail end").unwrap();
    let memo = |args: &[&str]| {
        let mut cmd = env.memo(args);
        cmd.env("MEMO_DIR", &home);
        cmd.output().unwrap()
    };
    for i in 0..80 {
        let out = memo(&["run", "--", "sh", "-c", &format!("echo {}", i % 20)]);
        assert_success(&out);
    }
    for _ in 0..2 {
        let out = memo(&["stats", "--json"]);
        assert_success(&out);
        let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            (s["hits"].as_u64(), s["misses"].as_u64()),
            (Some(60), Some(20))
        );
    }
    assert_eq!(
        fs::read(home.join("summary.tail")).unwrap(),
        b"my own summary, tail end"
    );
    assert_eq!(fs::read(home.join("notes.txt")).unwrap(), b"mine");
}

/// The journal rotated at 4 MiB (made big by a long line that is no record): the
/// tail, set aside by the fold before the rotation, counts nothing twice or not at all.
#[test]
fn a_rotation_between_two_stats_counts_each_record_once() {
    let env = TestEnv::new();
    store_many(&env, 0..35);
    for i in 0..35 {
        hit(&env, i);
    }
    assert_eq!(counts(&env).0, 35);
    assert!(tail_path(&env).exists());
    {
        use std::io::Write;
        let mut log = fs::OpenOptions::new()
            .append(true)
            .open(env.cache().join("log.jsonl"))
            .unwrap();
        let mut junk = vec![b'x'; 4 << 20];
        junk.push(b'\n');
        log.write_all(&junk).unwrap();
    }
    hit(&env, 0);
    assert!(
        env.cache().join("log.1.jsonl").exists(),
        "the journal was rotated"
    );
    assert_eq!(counts(&env).0, 36);
    for i in 0..70 {
        hit(&env, i % 35);
    }
    let end = counts(&env);
    assert_eq!((end.0, end.1), (106, 35));
    assert_eq!(counts(&env), end);
    assert_eq!(counts_without_tail(&env), end);
}

/// A cache stats cannot write to: the counts are right, no tail is left.
#[test]
fn a_read_only_cache_still_counts() {
    let env = TestEnv::new();
    store_many(&env, 0..35);
    for i in 0..35 {
        hit(&env, i);
    }
    let _ = fs::remove_file(tail_path(&env));
    // Root ignores permissions: make the tail's place unwritable another way, a
    // directory at a temp name would not do; use a read-only bind of the dir is too much.
    // Instead: the cache made read-only for a non-root user when we can.
    if !nobody_can_run_in(&env) {
        return;
    }
    Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(env.cache())
        .status()
        .unwrap();
    fs::set_permissions(env.cache(), fs::Permissions::from_mode(0o555)).unwrap();
    let out = as_nobody(env.memo(["stats", "--json"]));
    fs::set_permissions(env.cache(), fs::Permissions::from_mode(0o755)).unwrap();
    assert_success(&out);
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (s["hits"].as_u64(), s["misses"].as_u64()),
        (Some(35), Some(35))
    );
    assert!(!tail_path(&env).exists());
}

// ---------------------------------------------------------------------------------------
// The tracer and daemons inside vfork.

const VF_C: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <signal.h>
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
extern char **environ;
static void mark(const char *name, const char *what) {
    int fd = open(name, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) { write(fd, what, strlen(what)); close(fd); }
}
int main(int argc, char **argv) {
    const char *mode = argv[1];
    if (!strcmp(mode, "sleep-exec")) {
        /* vfork, the child sleeps before its exec */
        pid_t p = vfork();
        if (p == 0) { sleep(atoi(argv[2])); execl("/bin/true", "true", (char *)0); _exit(127); }
        int st; waitpid(p, &st, 0);
        mark("daemon.out", WIFEXITED(st) && WEXITSTATUS(st) == 0 ? "done\n" : "bad\n");
    } else if (!strcmp(mode, "sleep-exit")) {
        /* vfork, the child never execs: it sleeps then _exits */
        pid_t p = vfork();
        if (p == 0) { sleep(atoi(argv[2])); _exit(7); }
        int st; waitpid(p, &st, 0);
        mark("daemon.out", WIFEXITED(st) && WEXITSTATUS(st) == 7 ? "done\n" : "bad\n");
    } else if (!strcmp(mode, "loop")) {
        /* vfork+exec in a loop until `stop` exists */
        int n = 0;
        while (access("stop", F_OK) != 0) {
            pid_t p = vfork();
            if (p == 0) { execl("/bin/true", "true", (char *)0); _exit(127); }
            int st; waitpid(p, &st, 0);
            if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) { mark("daemon.out", "bad\n"); return 1; }
            n++;
        }
        char buf[64]; snprintf(buf, sizeof buf, "done %d\n", n > 0);
        mark("daemon.out", buf);
    } else if (!strcmp(mode, "nested")) {
        /* a vfork child that vforks again before they exec (the grandchild sleeps) */
        pid_t p = vfork();
        if (p == 0) {
            pid_t q = vfork();
            if (q == 0) { sleep(1); execl("/bin/true", "true", (char *)0); _exit(127); }
            execl("/bin/sh", "sh", "-c", "sleep 1; exit 3", (char *)0);
            _exit(127);
        }
        int st; waitpid(p, &st, 0);
        sleep(1);
        mark("daemon.out", WIFEXITED(st) && WEXITSTATUS(st) == 3 ? "done\n" : "bad\n");
    } else if (!strcmp(mode, "spawn")) {
        /* posix_spawn in a loop */
        int n = 0;
        while (access("stop", F_OK) != 0) {
            pid_t p; char *args[] = {"true", 0};
            if (posix_spawn(&p, "/bin/true", 0, 0, args, environ) != 0) { mark("daemon.out", "bad\n"); return 1; }
            int st; waitpid(p, &st, 0);
            n++;
        }
        mark("daemon.out", n > 0 ? "done\n" : "bad\n");
    }
    return 0;
}
"#;

/// Compiles the helper into the work dir, or says why not.
fn vf(env: &TestEnv) -> bool {
    if !traceable() {
        return false;
    }
    env.write("vf.c", VF_C);
    let ok = Command::new("gcc")
        .args(["-O0", "-o", "vf", "vf.c"])
        .current_dir(env.work())
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("skipped: no gcc");
    }
    ok
}

/// Runs the traced tool (which starts `./vf ARGS` in the background, then prints
/// `started` a little later) and returns how long memo took.
fn traced_daemon(env: &TestEnv, vf_args: &str, delay: &str) -> (std::process::Output, Duration) {
    stamped_tool(
        env,
        &format!("./vf {vf_args} > /dev/null 2>&1 < /dev/null &\nsleep {delay}\necho started"),
    );
    let started = Instant::now();
    let out = run_with_deadline(
        env.memo(["run", "--trace", "--", "./tool"]),
        Duration::from_secs(15),
    );
    (out, started.elapsed())
}

fn assert_outlived(out: &std::process::Output) {
    assert_success(out);
    assert_eq!(stdout(out).lines().nth(1), Some("started"));
    let err = stderr(out);
    assert!(
        err.lines()
            .any(|l| l.starts_with(NOT_CACHED) && l.contains("outlived")),
        "{err}"
    );
}

/// Runs `./vf VF_ARGS` as a traced run's daemon (the tool prints `started` after
/// `delay`): memo says it outlived the run, returns within `bound`, and the daemon ends
/// its work.
fn a_vfork_daemon_is_left_to_finish(vf_args: &str, delay: &str, bound: Duration) {
    let env = TestEnv::new();
    if !vf(&env) {
        return;
    }
    let _daemons = Daemons(&env);
    let (out, took) = traced_daemon(&env, vf_args, delay);
    assert_outlived(&out);
    eprintln!("`vf {vf_args}`: memo returned after {took:?}");
    assert!(took < bound, "{took:?}");
    env.wait_until_written("daemon.out");
    assert_eq!(env.read("daemon.out"), b"done\n");
}

#[test]
fn a_vfork_child_sleeping_before_its_exec_delays_memo_at_most_that_long() {
    // The vfork child sleeps 3 s before its exec.
    a_vfork_daemon_is_left_to_finish("sleep-exec 3", "0.3", Duration::from_secs(5));
}

#[test]
fn a_vfork_child_that_exits_without_exec_is_fine() {
    // The vfork child sleeps 2 s, then calls _exit.
    a_vfork_daemon_is_left_to_finish("sleep-exit 2", "0.3", Duration::from_secs(4));
}

#[test]
fn nested_vforks_in_a_daemon_do_not_hold_memo() {
    a_vfork_daemon_is_left_to_finish("nested", "0.2", Duration::from_secs(4));
}

#[test]
fn a_threaded_python_daemon_spawning_programs_runs_on() {
    if !traceable()
        || !Command::new("python3")
            .args(["-c", "import os; os.posix_spawn"])
            .status()
            .is_ok_and(|s| s.success())
    {
        return;
    }
    let env = TestEnv::new();
    let _daemons = Daemons(&env);
    env.write(
        "d.py",
        r#"
import os, threading, time
def work():
    while not os.path.exists("stop"):
        pid = os.posix_spawn("/bin/true", ["true"], os.environ)
        os.waitpid(pid, 0)
ts = [threading.Thread(target=work) for _ in range(3)]
for t in ts: t.start()
for t in ts: t.join()
open("daemon.out", "w").write("done\n")
"#,
    );
    stamped_tool(
        &env,
        "python3 d.py > /dev/null 2>&1 < /dev/null &\nsleep 0.5\necho started",
    );
    for round in 0..2 {
        let started = Instant::now();
        let out = run_with_deadline(
            env.memo(["run", "--trace", "--", "./tool"]),
            Duration::from_secs(15),
        );
        let took = started.elapsed();
        fs::write(env.path("stop"), b"").unwrap();
        assert_outlived(&out);
        assert!(took < Duration::from_secs(4), "round {round}: {took:?}");
        env.wait_until_written("daemon.out");
        assert_eq!(env.read("daemon.out"), b"done\n");
        fs::remove_file(env.path("daemon.out")).unwrap();
        fs::remove_file(env.path("stop")).unwrap();
    }
}

/// A daemon stopped (SIGSTOP, by its parent) when the main process exits does not hold
/// memo, and once continued (the helper that adopts it sends SIGCONT, as the kernel
/// does to the stopped members of a process group orphaned by the main process's exit)
/// it does its work.
// Seen: without --trace the kernel sends the orphaned group SIGHUP then SIGCONT, and this
// daemon dies of the SIGHUP; under --trace (its stop is a ptrace stop, which the orphan
// rule does not see) it gets no SIGHUP and is resumed by the helper: it runs on.
#[test]
fn a_daemon_stopped_by_its_parent_does_not_hold_memo() {
    if !traceable() {
        return;
    }
    let env = TestEnv::new();
    let _daemons = Daemons(&env);
    stamped_tool(
        &env,
        "( sleep 1; echo done > daemon.out ) > /dev/null 2>&1 < /dev/null &
echo $! > daemon.pid
kill -STOP $!
sleep 0.1
echo started",
    );
    let started = Instant::now();
    let out = run_with_deadline(
        env.memo(["run", "--trace", "--", "./tool"]),
        Duration::from_secs(15),
    );
    let took = started.elapsed();
    let pid = String::from_utf8(env.read("daemon.pid"))
        .unwrap()
        .trim()
        .to_string();
    assert_outlived(&out);
    assert!(took < Duration::from_secs(3), "{took:?}");
    env.wait_until_written("daemon.out");
    let _ = Command::new("kill").args(["-CONT", &pid]).status();
    assert_eq!(env.read("daemon.out"), b"done\n");
}

/// A daemon killed right as the main process exits does not hold memo.
#[test]
fn a_daemon_killed_meanwhile_does_not_hold_memo() {
    if !traceable() {
        return;
    }
    let env = TestEnv::new();
    let _daemons = Daemons(&env);
    stamped_tool(
        &env,
        "sleep 30 > /dev/null 2>&1 < /dev/null &
p=$!
( sleep 0.2; kill -9 $p ) > /dev/null 2>&1 < /dev/null &
echo started",
    );
    let started = Instant::now();
    let out = run_with_deadline(
        env.memo(["run", "--trace", "--", "./tool"]),
        Duration::from_secs(15),
    );
    assert_outlived(&out);
    assert!(started.elapsed() < Duration::from_secs(3));
    // The sleep was killed by its sibling: nothing is left of it.
    env.eventually("the sleep is gone", || {
        !String::from_utf8_lossy(
            &Command::new("pgrep")
                .args(["-f", "^sleep 30$"])
                .output()
                .unwrap()
                .stdout,
        )
        .lines()
        .any(|p| {
            fs::read_to_string(format!("/proc/{p}/cwd")).is_ok()
                && fs::read_link(format!("/proc/{p}/cwd")).ok() == Some(env.work())
        })
    });
}

// ---------------------------------------------------------------------------------------
// ETXTBSY.

fn busy_args(traced: bool, extra: &[&str]) -> Vec<String> {
    let mut all = vec!["run".to_string()];
    if traced {
        all.push("--trace".into());
    }
    all.extend(extra.iter().map(|s| s.to_string()));
    all.extend(["--".to_string(), "./tool".to_string()]);
    all
}

#[test]
fn a_busy_program_fails_once_in_one_line_and_stores_nothing() {
    for traced in [false, true] {
        if traced && !traceable() {
            continue;
        }
        let env = TestEnv::new();
        env.tool("echo ran");
        let _writer = fs::OpenOptions::new()
            .append(true)
            .open(env.path("tool"))
            .unwrap();
        let started = Instant::now();
        let out = run_with_deadline(env.memo(busy_args(traced, &[])), Duration::from_secs(10));
        let took = started.elapsed();
        assert_one_line_error(&out, 126, "busy");
        assert!(
            stderr(&out).contains("cannot be executed"),
            "{}",
            stderr(&out)
        );
        assert!(
            took >= Duration::from_millis(400) && took < Duration::from_secs(3),
            "traced {traced}: {took:?}"
        );
        assert_eq!(env.count(), 0);
        assert!(env.entries().is_empty(), "traced {traced}");
        assert_eq!(stdout(&out), "");
        // Again (nothing stored means it is tried again, and fails the same way).
        let out = env.run(busy_args(traced, &[]));
        assert_one_line_error(&out, 126, "busy");
        assert!(env.entries().is_empty());
    }
}

/// A busy first attempt reads nothing of memo's stdin: the attempt that runs sees it
/// all, with and without --stdin; the command ran once.
#[test]
fn a_busy_attempt_consumes_no_stdin_and_runs_the_command_once() {
    for traced in [false, true] {
        if traced && !traceable() {
            continue;
        }
        // Without --stdin the command reads /dev/null (memo says so): only --stdin
        // passes memo's stdin on.
        {
            let extra: &[&str] = &["--stdin"];
            let env = TestEnv::new();
            env.tool("cat");
            let writer = fs::OpenOptions::new()
                .append(true)
                .open(env.path("tool"))
                .unwrap();
            let mut memo = env
                .memo(busy_args(traced, extra))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            {
                use std::io::Write;
                let mut input = memo.stdin.take().unwrap();
                input.write_all(b"line one\nline two\n").unwrap();
            }
            std::thread::sleep(Duration::from_millis(80));
            drop(writer);
            let out = memo.wait_with_output().unwrap();
            assert_success(&out);
            assert_eq!(
                stdout(&out),
                "line one\nline two\n",
                "traced {traced} {extra:?}: {}",
                stderr(&out)
            );
            assert_eq!(env.count(), 1, "traced {traced} {extra:?}");
        }
    }
}

/// Every process whose working directory is `dir`.
fn processes_in(dir: &std::path::Path) -> Vec<i32> {
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| fs::read_link(format!("/proc/{pid}/cwd")).ok().as_deref() == Some(dir))
        .collect()
}

/// Ends the daemons left in a work dir when dropped (a failing test included).
struct Daemons<'a>(&'a TestEnv);

impl Drop for Daemons<'_> {
    fn drop(&mut self) {
        end_daemons(self.0);
    }
}

/// Ends the daemons a test left in `env`'s work dir: `stop` written, every one of them
/// continued (a stopped vfork child holds its parent), then killed if still there.
fn end_daemons(env: &TestEnv) {
    let _ = fs::write(env.path("stop"), b"");
    for _ in 0..50 {
        let left = processes_in(&env.work());
        if left.is_empty() {
            return;
        }
        for pid in &left {
            // SAFETY: plain signals to processes this test started.
            unsafe { libc::kill(*pid, libc::SIGCONT) };
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for pid in processes_in(&env.work()) {
        // SAFETY: as above.
        unsafe {
            libc::kill(pid, libc::SIGCONT);
            libc::kill(pid, libc::SIGKILL);
        }
    }
}

/// Many daemons that vfork (or posix_spawn, a clone with CLONE_VFORK) in a loop, each
/// caught by the end of its command's main process, in parallel: memo must return every
/// time.
// Seen (about 1 run in 40 under load, here 8 at a time): memo hangs for good in
// `stop_and_detach`. The daemon's new child reported its first SIGSTOP before its
// parent's PTRACE_EVENT_VFORK, so it was not yet known as a vfork child and was detached
// stopped (State T, TracerPid 0); its parent then sits in D (kernel_clone) waiting for the
// vfork to end, still traced, and memo waits (do_wait) for a stop that never comes. The
// daemon stays wedged after memo is killed, until someone sends the child SIGCONT.
//
// Since fixed: the hang (memo now holds such a child until its parent's event says it is
// a vfork's, forgets children that came and went before their parent's event, and
// hands the daemons over only once the helper waits for them). Left (seen in 2 of
// about 260 runs, only beside the `script`-based progress tests): in an orphaned
// process group (the test runner's), a process of the group that exits while the
// daemons are group-stopped for their hand-over to the helper makes the kernel send
// them SIGHUP and SIGCONT, and they die. Only tracing from a process of its own from the
// start (no hand-over) would close that window.
#[test]
#[ignore = "defect: during the hand-over of a traced run's daemons to the helper, a process of an orphaned process group exiting makes the kernel SIGHUP them (about 1 run in 130 beside the script-based tests)"]
fn many_daemons_caught_inside_vfork_or_posix_spawn_never_hold_memo() {
    let mut envs = Vec::new();
    for i in 0..8 {
        let env = TestEnv::new();
        if !vf(&env) {
            return;
        }
        let mode = if i % 2 == 0 { "spawn" } else { "loop" };
        stamped_tool(
            &env,
            &format!("./vf {mode} > /dev/null 2>&1 < /dev/null &\nsleep 0.05\necho started"),
        );
        envs.push(env);
    }
    // Each in a thread of its own, as independent as separate builds: the other
    // daemons' loops (traced by their helpers) are the load that makes the race likely.
    let started = Instant::now();
    let results: Vec<(usize, Vec<String>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = envs
            .iter()
            .map(|env| {
                scope.spawn(move || {
                    let mut runs = 0;
                    let mut hangs = Vec::new();
                    while started.elapsed() < Duration::from_secs(5) && hangs.is_empty() {
                        let _ = fs::remove_file(env.path("stop"));
                        let _ = fs::remove_file(env.path("daemon.out"));
                        let mut child = env
                            .memo(["run", "--trace", "--", "./tool"])
                            .stdout(Stdio::null())
                            .stderr(Stdio::null())
                            .spawn()
                            .unwrap();
                        let run = Instant::now();
                        while child.try_wait().unwrap().is_none() {
                            if run.elapsed() > Duration::from_secs(3) {
                                let stuck: Vec<String> = processes_in(&env.work())
                                    .iter()
                                    .map(|p| {
                                        let status =
                                            fs::read_to_string(format!("/proc/{p}/status"))
                                                .unwrap_or_default();
                                        let field = |name: &str| {
                                            status
                                                .lines()
                                                .find(|l| l.starts_with(name))
                                                .unwrap_or("")
                                                .replace('\t', " ")
                                        };
                                        format!("{p} {} {}", field("State"), field("TracerPid"))
                                    })
                                    .collect();
                                hangs.push(format!("memo {} hung; {stuck:?}", child.id()));
                                let _ = child.kill();
                                let _ = child.wait();
                                break;
                            }
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        runs += 1;
                        let _ = fs::write(env.path("stop"), b"");
                        for _ in 0..40 {
                            if env.path("daemon.out").exists() {
                                break;
                            }
                            std::thread::sleep(Duration::from_millis(50));
                        }
                        let done = fs::read_to_string(env.path("daemon.out")).unwrap_or_default();
                        if hangs.is_empty() && !done.starts_with("done") {
                            hangs.push(format!("the daemon did not finish: {done:?}"));
                        }
                        end_daemons(env);
                    }
                    (runs, hangs)
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    for env in &envs {
        end_daemons(env);
    }
    let runs: usize = results.iter().map(|r| r.0).sum();
    let hangs: Vec<String> = results.into_iter().flat_map(|r| r.1).collect();
    assert!(hangs.is_empty(), "after {runs} runs: {hangs:?}");
}

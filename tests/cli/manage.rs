//! Seeing into the cache and keeping it in bounds: stats, gc, clear, ls, rm, log, config.

use std::fs;
use std::os::unix::fs::FileTypeExt;
use std::process::{Command, Stdio};

use crate::support::*;

#[test]
fn stats_count_hits_misses_entries_bytes_and_time_saved() {
    let env = TestEnv::new();
    env.tool("sleep 0.2; echo \"$1\"");
    env.run(["run", "--", "./tool", "a"]);
    env.run(["run", "--", "./tool", "a"]);
    env.run(["run", "--", "./tool", "a"]);
    env.run(["run", "--", "./tool", "b"]);
    let s = env.stats();
    assert_eq!(s["hits"], 2);
    assert_eq!(s["misses"], 2);
    assert_eq!(s["entries"], 2);
    assert!(s["bytes"].as_i64().unwrap() > 0);
    assert!(s["time_saved_seconds"].as_f64().unwrap() > 0.3, "{s}");
    assert_eq!(s["evictions"], 0);
    assert_eq!(s["corrupt"], 0);
    let human = stdout(&env.run(["stats"]));
    assert!(human.contains("hit rate     50.0%"), "{human}");
    assert!(
        human.contains("commands that saved the most time"),
        "{human}"
    );
    assert!(human.contains("./tool a"), "{human}");
}

#[test]
fn counters_are_exact_when_many_memos_run_at_once() {
    let env = TestEnv::new();
    env.tool("echo hi");
    env.run(run_tool(&[]));
    let children: Vec<_> = (0..8)
        .map(|_| {
            let script = format!("for i in 1 2 3 4 5; do {MEMO} run -- ./tool >/dev/null; done");
            std::process::Command::new("/bin/sh")
                .args(["-c", &script])
                .current_dir(env.work())
                .env("MEMO_DIR", env.cache())
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
    let s = env.stats();
    assert_eq!(s["hits"], 40);
    assert_eq!(s["misses"], 1);
    assert_eq!(env.count(), 1);
    assert_eq!(env.listing()[0]["hits"], 40, "per-entry hits are exact too");
}

#[test]
fn stats_zero_resets_counters_but_keeps_results() {
    let env = TestEnv::new();
    env.tool("echo hi");
    env.run(run_tool(&[]));
    env.run(run_tool(&[]));
    assert_success(&env.run(["stats", "--zero"]));
    let s = env.stats();
    assert_eq!(
        (s["hits"].as_i64(), s["misses"].as_i64()),
        (Some(0), Some(0))
    );
    assert_eq!(s["entries"], 1);
    assert!(!env.ran_tool(&[]), "results survive --zero");
}

#[test]
fn corrupt_entries_are_counted_and_logged() {
    let env = TestEnv::new();
    env.tool("echo hi");
    env.run(run_tool(&[]));
    let entry = env.entries().pop().unwrap();
    entry.replace(b"garbage");
    env.run(run_tool(&[]));
    assert_eq!(env.stats()["corrupt"], 1);
    assert!(env.events().iter().any(|e| e["event"] == "corrupt"));
}

/// A result that took long and is small (`slow`) against one that is big and was cheap
/// (`bulk`), the cheap one used more often and more recently.
fn slow_and_bulk(env: &TestEnv) {
    env.script("slow", "sleep 0.6; echo small");
    // Random bytes: zeros would be stored compressed, in a few hundred bytes.
    env.script("bulk", "head -c 300000 /dev/urandom");
    assert_success(&env.run(["run", "--", "./slow"]));
    for _ in 0..3 {
        assert_success(&env.run(["run", "--", "./bulk"]));
    }
}

fn commands(env: &TestEnv) -> Vec<String> {
    let mut names: Vec<String> = env
        .listing()
        .iter()
        .map(|e| e["command"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

#[test]
fn gc_keeps_what_is_expensive_to_recompute_and_cheap_to_keep() {
    let env = TestEnv::new();
    slow_and_bulk(&env);
    assert_eq!(commands(&env), ["./bulk", "./slow"]);
    let out = env.run(["gc", "--max-size", "100K"]);
    assert_success(&out);
    assert!(stdout(&out).contains("removed"), "{}", stdout(&out));
    assert_eq!(
        commands(&env),
        ["./slow"],
        "plain LRU would have kept ./bulk"
    );
    let s = env.stats();
    assert_eq!(s["evictions"], 1);
    assert_eq!(s["entries"], 1);
    assert!(s["bytes"].as_i64().unwrap() < 100 * 1024);
    assert!(
        env.objects().is_empty(),
        "the evicted result's object went with it"
    );
    assert!(env
        .events()
        .iter()
        .any(|e| e["event"] == "evict" && e["command"] == "./bulk"));
}

#[test]
fn gc_dry_run_changes_nothing() {
    let env = TestEnv::new();
    slow_and_bulk(&env);
    let before = env.objects();
    let out = env.run(["gc", "--max-size", "100K", "--dry-run"]);
    assert_success(&out);
    assert!(stdout(&out).contains("would remove"), "{}", stdout(&out));
    assert!(stdout(&out).contains("./bulk"), "{}", stdout(&out));
    assert_eq!(commands(&env), ["./bulk", "./slow"]);
    assert_eq!(env.objects(), before);
    assert_eq!(env.stats()["evictions"], 0);
}

/// Every file under `dir` but its lock files, with the digest of its bytes (none for a
/// FIFO, which is not opened).
fn snapshot(dir: &std::path::Path) -> Vec<(std::path::PathBuf, String)> {
    use sha2::Digest as _;
    files_under(dir)
        .into_iter()
        .filter(|path| !path.starts_with(dir.join("locks")))
        .map(|path| {
            let meta = fs::symlink_metadata(&path).unwrap();
            let digest = if meta.is_file() {
                format!("{:x}", sha2::Sha256::digest(fs::read(&path).unwrap()))
            } else {
                format!("{:?}", meta.file_type())
            };
            (path, digest)
        })
        .collect()
}

/// A record whose header is damaged, a table planted as a FIFO and an object file to
/// verify: `gc --dry-run --verify` reports the damaged entry as corrupt and leaves the
/// cache byte for byte (no tombstone, the FIFO in place, no digest recorded for the
/// object it verified); `gc --verify` then removes the damage and records the digest,
/// and the other results go on hitting.
#[test]
fn gc_dry_run_leaves_the_damage_it_finds_where_it_is() {
    let env = TestEnv::new();
    env.tool("echo \"result $1\"");
    for n in 0..6 {
        assert_success(&env.run(["run", "--", "./tool", &n.to_string()]));
    }
    // Random bytes, too many to sit in the entry: an object file of their own.
    env.script("bulk", "head -c 100000 /dev/urandom");
    assert_success(&env.run(["run", "--", "./bulk"]));
    assert_eq!(env.objects().len(), 1);
    let entries = env.entries();
    let damaged = entries
        .iter()
        .find(|e| String::from_utf8_lossy(&e.bytes()).contains("\"./tool\""))
        .unwrap()
        .clone();
    // The record's header: the slot no longer matches its record, which is damage a
    // read removes (a tombstone).
    damaged.overwrite_header(&[b'#'; 48]);
    // A FIFO in place of the table of a shard that holds no entry.
    let shards: Vec<String> = entries.iter().map(|e| e.key[..2].to_string()).collect();
    let free = (0..=255u8)
        .map(|b| format!("{b:02x}"))
        .find(|s| !shards.contains(s))
        .unwrap();
    let fifo = env.cache().join("packs").join(format!("{free}.idx"));
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let before = snapshot(&env.cache());
    // Files written just now are remembered by digest at once (no racy-timestamp wait).
    let gc = |args: &[&str]| {
        let mut cmd = env.memo(args);
        cmd.env("MEMO_DEBUG_RACY_MARGIN_MS", "0");
        cmd.output().unwrap()
    };
    let out = gc(&["gc", "--dry-run", "--verify"]);
    assert_success(&out);
    let said = format!("would remove {} (corrupt entry)", &damaged.key[..12]);
    assert!(stdout(&out).contains(&said), "{}", stdout(&out));
    assert_eq!(
        snapshot(&env.cache()),
        before,
        "gc --dry-run changed the cache"
    );
    assert!(fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
    assert_success(&gc(&["gc", "--verify"]));
    assert!(fs::symlink_metadata(&fifo).is_err(), "gc left the FIFO");
    let digests = |files: Vec<(std::path::PathBuf, String)>| {
        let dir = env.cache().join("digests");
        files
            .into_iter()
            .filter(|(path, _)| path.starts_with(&dir))
            .collect::<Vec<_>>()
    };
    assert_ne!(
        digests(snapshot(&env.cache())),
        digests(before),
        "gc --verify recorded no digest: the dry run's check proved nothing"
    );
    let keys: Vec<String> = env.entries().into_iter().map(|e| e.key).collect();
    assert_eq!(keys.len(), 6, "{keys:?}");
    assert!(!keys.contains(&damaged.key));
    for n in 0..6 {
        let out = env.run(["run", "--", "./tool", &n.to_string()]);
        assert_eq!(stdout(&out), format!("result {n}\n"));
    }
    assert_eq!(env.count(), 7, "only the damaged result runs again");
}

#[test]
fn gc_max_age_evicts_results_not_used_lately() {
    let env = TestEnv::new();
    env.script("old", "echo old");
    env.script("new", "echo new");
    env.run(["run", "--", "./old"]);
    std::thread::sleep(std::time::Duration::from_millis(800));
    env.run(["run", "--", "./new"]);
    assert_success(&env.run(["gc", "--max-age", "500ms"]));
    assert_eq!(commands(&env), ["./new"]);
}

#[test]
fn shared_objects_count_once() {
    let env = TestEnv::new();
    env.script("one", "head -c 200000 /dev/zero");
    env.script("two", "head -c 200000 /dev/zero");
    env.run(["run", "--", "./one"]);
    env.run(["run", "--", "./two"]);
    assert_eq!(env.objects().len(), 1);
    assert_success(&env.run(["gc", "--max-size", "300K"]));
    assert_eq!(
        commands(&env),
        ["./one", "./two"],
        "both fit: the object counts once"
    );
    assert!(env.stats()["bytes"].as_i64().unwrap() < 300 * 1024);
}

#[test]
fn unreferenced_objects_go_only_after_the_grace_period() {
    let env = TestEnv::new();
    env.tool("head -c 100000 /dev/zero");
    env.run(run_tool(&[]));
    // An object whose entry is not written yet (a store in flight); `memo rm` would
    // list the objects of what it removes for the next gc.
    let entries = env.entries();
    assert_eq!(entries.len(), 1);
    entries.iter().for_each(StoredEntry::remove);
    assert_eq!(env.objects().len(), 1);
    assert_success(&env.run(["gc"]));
    assert_eq!(
        env.objects().len(),
        1,
        "a fresh unreferenced object may be in flight"
    );
    assert_success(&env.run(["gc", "--grace", "0s"]));
    assert!(env.objects().is_empty());
}

#[test]
fn a_store_past_the_limit_trims_the_cache_in_the_background() {
    let env = TestEnv::new();
    env.tool("head -c 100000 /dev/urandom");
    for i in 0..6 {
        let mut cmd = env.memo(run_tool(&["--salt", &i.to_string()]));
        cmd.env("MEMO_MAX_SIZE", "250K");
        assert!(env.ran(cmd));
    }
    env.eventually("the background gc trims the cache", || {
        let s = env.stats();
        s["evictions"].as_i64().unwrap() > 0 && s["bytes"].as_i64().unwrap() <= 250 * 1024
    });
}

#[test]
fn gc_prints_no_progress_bar_when_stderr_is_not_a_terminal() {
    let env = TestEnv::new();
    slow_and_bulk(&env);
    let out = env.run(["gc", "--max-size", "1M"]);
    assert_success(&out);
    assert_eq!(stderr(&out), "");
}

#[test]
fn clear_empties_the_cache_and_keeps_the_history() {
    let env = TestEnv::new();
    env.tool("head -c 50000 /dev/zero");
    env.run(run_tool(&[]));
    env.run(run_tool(&[]));
    let out = env.run(["clear"]);
    assert_success(&out);
    assert!(
        stdout(&out).contains("cleared 1 entries"),
        "{}",
        stdout(&out)
    );
    assert!(env.entries().is_empty() && env.objects().is_empty());
    let s = env.stats();
    assert_eq!(
        (s["entries"].as_i64(), s["bytes"].as_i64()),
        (Some(0), Some(0))
    );
    assert_eq!(s["hits"], 1);
    assert!(env.ran_tool(&[]));
}

#[test]
fn ls_lists_command_age_size_hits_and_time_saved() {
    let env = TestEnv::new();
    env.tool("sleep 0.1; echo hi");
    env.run(run_tool(&[]));
    env.run(run_tool(&[]));
    let listing = env.listing();
    assert_eq!(listing.len(), 1);
    let e = &listing[0];
    assert_eq!(e["command"], "./tool");
    assert_eq!(e["hits"], 1);
    assert!(e["size"].as_u64().unwrap() > 0);
    assert!(e["time_saved_seconds"].as_f64().unwrap() > 0.05);
    assert!(e["age_seconds"].as_f64().unwrap() >= 0.0);
    let human = stdout(&env.run(["ls"]));
    assert!(human.starts_with("KEY"), "{human}");
    assert!(human.contains("./tool"), "{human}");
}

#[test]
fn rm_removes_by_key_prefix_or_command_pattern() {
    let env = TestEnv::new();
    env.script("make-a", "echo a");
    env.script("make-b", "echo b");
    env.script("other", "echo o");
    for cmd in ["./make-a", "./make-b", "./other"] {
        env.run(["run", "--", cmd]);
    }
    let out = env.run(["rm", "--command", "./make-*"]);
    assert_success(&out);
    assert!(
        stdout(&out).contains("removed 2 entries"),
        "{}",
        stdout(&out)
    );
    assert_eq!(commands(&env), ["./other"]);
    let key = env.listing()[0]["key"].as_str().unwrap().to_string();
    assert_success(&env.run(["rm", &key[..6]]));
    assert!(env.listing().is_empty());
    assert_code(&env.run(["rm", "abcdef"]), 1);
    let bad = env.run(["rm", "zz"]);
    assert_code(&bad, 125);
    assert!(stderr(&bad).contains("not a key prefix"));
}

#[test]
fn the_log_records_hits_misses_stores_and_errors() {
    let env = TestEnv::new();
    env.tool("echo hi");
    env.run(run_tool(&[]));
    env.run(run_tool(&[]));
    let kinds: Vec<String> = env
        .events()
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kinds, ["miss", "store", "hit"]);
    let hit = env.events().pop().unwrap();
    assert_eq!(hit["command"], "./tool");
    assert_eq!(hit["key"].as_str().unwrap().len(), 64);
    assert!(hit["time_ms"].as_u64().unwrap() > 1_700_000_000_000);
    env.tool("echo hi; exit 0");
    env.run(run_tool(&["-o", "missing.txt"]));
    assert!(env
        .events()
        .iter()
        .any(|e| e["event"] == "error" && e["message"].as_str().unwrap().contains("missing.txt")));
    let human = stdout(&env.run(["log", "-n", "2"]));
    assert_eq!(human.lines().count(), 2, "{human}");
}

#[test]
fn environment_values_never_reach_the_log() {
    let env = TestEnv::new();
    env.tool("echo hi");
    let mut cmd = env.memo(run_tool(&["-e", "TOKEN"]));
    cmd.env("TOKEN", "hunter2-value");
    env.ran(cmd);
    let log = fs::read_to_string(env.cache().join("log.jsonl")).unwrap();
    assert!(!log.contains("hunter2"));
}

#[test]
fn config_shows_each_setting_and_where_it_comes_from() {
    let env = TestEnv::new();
    let file = env.write(
        "memo.toml",
        "max_size = \"1G\"\nttl = \"1h\"\nverbose = true\n",
    );
    let out = env
        .memo(["config"])
        .env("MEMO_CONFIG", &file)
        .env("MEMO_MAX_SIZE", "2G")
        .output()
        .unwrap();
    assert_success(&out);
    let text = stdout(&out);
    let line = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        line("max_size").contains("2.0 GiB") && line("max_size").contains("env MEMO_MAX_SIZE"),
        "{text}"
    );
    assert!(
        line("ttl").contains("1h00m") && line("ttl").contains("config file"),
        "{text}"
    );
    assert!(line("verbose").contains("true"), "{text}");
    assert!(line("cache_dir").contains("env MEMO_DIR"), "{text}");
    assert!(line("cache_failures").contains("default"), "{text}");
}

#[test]
fn flags_win_over_environment_and_environment_over_the_config_file() {
    let env = TestEnv::new();
    env.tool("echo hi");
    let file = env.write("memo.toml", "verbose = false\ncache_failures = true\n");
    // The file turns --cache-failures on: a failure is stored.
    env.tool("echo failing; exit 3");
    let run = |extra: &[(&str, &str)], args: &[&str]| {
        let mut cmd = env.memo(run_tool(args));
        cmd.env("MEMO_CONFIG", &file).envs(extra.iter().copied());
        cmd.output().unwrap()
    };
    assert_code(&run(&[], &[]), 3);
    assert_code(&run(&[], &[]), 3);
    assert_eq!(env.count(), 1, "config file's cache_failures applied");
    // The environment overrides the file.
    assert_code(&run(&[("MEMO_CACHE_FAILURES", "0")], &[]), 3);
    assert_eq!(env.count(), 2);
    // A flag overrides the environment.
    let out = run(&[("MEMO_VERBOSE", "0")], &["-v"]);
    assert!(stderr(&out).contains("memo: hit"), "{}", stderr(&out));
}

#[test]
fn an_invalid_config_file_is_a_one_line_error() {
    let env = TestEnv::new();
    env.tool("true");
    let file = env.write("memo.toml", "max_size = [1, 2]\n");
    let out = env
        .memo(run_tool(&[]))
        .env("MEMO_CONFIG", &file)
        .output()
        .unwrap();
    assert_code(&out, 125);
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("memo.toml"));
    assert_eq!(env.count(), 0);
}

#[test]
fn gc_verify_drops_damaged_objects_and_the_results_that_use_them() {
    let env = TestEnv::with_raw_objects();
    env.script("good", "head -c 100000 /dev/zero | tr '\\0' g");
    env.script("bad", "head -c 100000 /dev/zero | tr '\\0' b");
    env.run(["run", "--", "./good"]);
    env.run(["run", "--", "./bad"]);
    let healthy = env.run(["gc", "--verify"]);
    assert_success(&healthy);
    assert!(
        stdout(&healthy).contains("removed 0 entries"),
        "{}",
        stdout(&healthy)
    );
    let bad_object = env
        .objects()
        .into_iter()
        .find(|p| fs::read(p).unwrap()[0] == b'b')
        .unwrap();
    let mut bytes = fs::read(&bad_object).unwrap();
    bytes[5000] = b'x';
    fs::write(&bad_object, bytes).unwrap();
    let out = env.run(["gc", "--verify"]);
    assert_success(&out);
    assert!(
        stdout(&out).contains("./bad (refers to a damaged object)"),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains("do not match its digest"),
        "{}",
        stdout(&out)
    );
    assert_eq!(commands(&env), ["./good"]);
    assert_eq!(env.stats()["corrupt"], 1);
    assert!(!bad_object.exists());
    let rerun = env.run(["run", "--", "./bad"]);
    assert_eq!(rerun.stdout, vec![b'b'; 100000]);
}

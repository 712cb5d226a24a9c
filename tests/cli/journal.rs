//! The journal and the summary (docs/format.md, "The journal, the summary and the
//! counters"): a hit appends one record and rewrites nothing; the counters and usage
//! records are folded from it; concurrent processes lose no record; a torn record is
//! skipped; a cache of the previous layout (a usage file per entry) keeps its counts.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::support::*;

fn journal_lines(env: &TestEnv) -> usize {
    fs::read_to_string(env.cache().join("log.jsonl"))
        .unwrap_or_default()
        .lines()
        .count()
}

/// Every file under `dir` with its contents.
fn contents_under(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    files_under(dir)
        .into_iter()
        .map(|p| {
            let bytes = fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

fn listed_hits(env: &TestEnv) -> Vec<i64> {
    let out = env.run(["ls", "--json"]);
    assert_success(&out);
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    listed
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["hits"].as_i64().unwrap())
        .collect()
}

#[test]
fn a_hit_appends_one_record_and_rewrites_no_file() {
    let env = TestEnv::new();
    // Slow enough that a hit saves time: it is then in the summary's list.
    env.tool("sleep 0.2; echo hi");
    assert_success(&env.run(run_tool(&[])));
    let shards = contents_under(&env.cache().join("stats"));
    let packs = contents_under(&env.cache().join("packs"));
    let lines = journal_lines(&env);
    assert_success(&env.run(run_tool(&[])));
    assert_eq!(env.count(), 1);
    assert_eq!(journal_lines(&env), lines + 1, "one record per hit");
    assert_eq!(contents_under(&env.cache().join("stats")), shards);
    assert!(
        !env.cache().join("usage").exists(),
        "no usage file per entry"
    );
    assert_eq!(env.entries().len(), 1);
    assert_eq!(
        contents_under(&env.cache().join("packs")),
        packs,
        "the hit wrote into the packs"
    );
    let stats = env.stats();
    assert_eq!(
        (stats["hits"].as_i64(), stats["misses"].as_i64()),
        (Some(1), Some(1))
    );
    assert_eq!(stats["top"][0]["hits"].as_i64(), Some(1));
    assert_eq!(listed_hits(&env), [1]);
    // Folded (gc folds first), the counts are the same.
    assert_success(&env.run(["gc"]));
    assert!(env.cache().join("summary").is_file());
    let stats = env.stats();
    assert_eq!(
        (stats["hits"].as_i64(), stats["misses"].as_i64()),
        (Some(1), Some(1))
    );
    assert_eq!(listed_hits(&env), [1]);
}

#[test]
fn concurrent_hits_lose_no_record() {
    let env = TestEnv::new();
    env.tool("echo hi");
    assert_success(&env.run(run_tool(&[])));
    let children: Vec<_> = (0..8)
        .map(|_| {
            let mut cmd = Command::new("/bin/sh");
            cmd.arg("-c")
                .arg(
                    "for i in 1 2 3 4 5 6 7 8 9 10; do \"$MEMO\" run -- ./tool >/dev/null || exit 1; done",
                )
                .env("MEMO", MEMO)
                .env("MEMO_DIR", env.cache())
                .env("HOME", env.root.path().join("home"))
                .current_dir(env.work())
                .stdout(Stdio::null());
            cmd.spawn().unwrap()
        })
        .collect();
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
    assert_eq!(env.count(), 1);
    assert_eq!(env.stats()["hits"].as_i64(), Some(80));
    assert_eq!(listed_hits(&env), [80]);
}

#[test]
fn a_torn_record_is_skipped_and_the_records_after_it_counted() {
    let env = TestEnv::new();
    env.tool("echo hi");
    assert_success(&env.run(run_tool(&[])));
    assert_success(&env.run(run_tool(&[])));
    use std::io::Write;
    let mut log = fs::OpenOptions::new()
        .append(true)
        .open(env.cache().join("log.jsonl"))
        .unwrap();
    // A record cut short, as by a writer killed mid-line: no newline.
    log.write_all(br#"{"time_ms":1,"event":"hit","counts":{"hits":1"#)
        .unwrap();
    assert_eq!(env.stats()["hits"].as_i64(), Some(1));
    assert_success(&env.run(run_tool(&[])));
    assert_eq!(env.count(), 1);
    assert_eq!(env.stats()["hits"].as_i64(), Some(2));
    assert_success(&env.run(["gc"]));
    assert_eq!(env.stats()["hits"].as_i64(), Some(2));
    assert_eq!(listed_hits(&env), [2]);
}

#[test]
fn a_damaged_summary_is_rebuilt_and_listing_still_reads_every_entry() {
    let env = TestEnv::new();
    env.tool("echo hi");
    assert_success(&env.run(run_tool(&[])));
    assert_success(&env.run(["gc"]));
    fs::write(env.cache().join("summary"), b"\0\xffgarbage\n[1,2]\n").unwrap();
    let out = env.run(["ls", "--json"]);
    assert_success(&out);
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["command"].as_str(), Some("./tool"));
    assert_success(&env.run(run_tool(&[])));
    assert_eq!(env.count(), 1);
    assert_success(&env.run(["gc"]));
    assert_eq!(listed_hits(&env), [1]);
}

/// The record format of an earlier memo's usage files and counter shards: the first 12
/// hex digits of the SHA-256 of the JSON, a space, the JSON.
fn legacy_record(json: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(json.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{} {json}", &hex[..12])
}

#[test]
fn a_cache_of_the_previous_layout_keeps_its_usage_and_counts() {
    let env = TestEnv::new();
    env.tool("echo hi");
    assert_success(&env.run(run_tool(&[])));
    let entry = env.entries().pop().unwrap();
    let key = entry.key.clone();
    // Made into the previous layout: the entry a file of its own (no packs), no
    // summary, log lines without `counts` (counted in the shards instead), and a usage
    // file for the entry.
    let legacy = env.legacy_entry_path(&key);
    fs::create_dir_all(legacy.parent().unwrap()).unwrap();
    fs::write(&legacy, entry.bytes()).unwrap();
    fs::remove_dir_all(env.cache().join("packs")).unwrap();
    let _ = fs::remove_file(env.cache().join("summary"));
    let log = fs::read_to_string(env.cache().join("log.jsonl")).unwrap();
    let old_log: String = log
        .lines()
        .map(|line| {
            let mut event: serde_json::Value = serde_json::from_str(line).unwrap();
            let map = event.as_object_mut().unwrap();
            map.remove("counts");
            map.remove("usage");
            format!("{event}\n")
        })
        .collect();
    fs::write(env.cache().join("log.jsonl"), old_log).unwrap();
    for shard in 0..16 {
        let _ = fs::remove_file(env.cache().join("stats").join(format!("{shard:02}")));
    }
    fs::create_dir_all(env.cache().join("stats")).unwrap();
    fs::write(
        env.cache().join("stats").join("07"),
        legacy_record(
            r#"{"hits":5,"misses":1,"stores":1,"time_saved_ms":5000,"entries":1,"bytes":300}"#,
        ),
    )
    .unwrap();
    let usage_dir = env.cache().join("usage").join(&key[..2]);
    fs::create_dir_all(&usage_dir).unwrap();
    fs::write(
        usage_dir.join(&key),
        legacy_record(
            r#"{"command":"./tool","created_ms":1,"duration_ms":1000,"size":300,"hits":5,"saved_ms":5000,"last_access_ms":2,"clock":0.0}"#,
        ),
    )
    .unwrap();

    let stats = env.stats();
    assert_eq!(
        (stats["hits"].as_i64(), stats["misses"].as_i64()),
        (Some(5), Some(1))
    );
    assert_eq!(stats["top"][0]["key"].as_str(), Some(key.as_str()));
    assert_eq!(stats["top"][0]["hits"].as_i64(), Some(5));
    assert_eq!(listed_hits(&env), [5]);
    assert_success(&env.run(run_tool(&[])));
    assert_eq!(env.count(), 1, "the old entry replays");
    assert_eq!(listed_hits(&env), [6]);
    assert_eq!(env.stats()["hits"].as_i64(), Some(6));
    assert_success(&env.run(["gc"]));
    assert!(
        !env.cache().join("usage").exists(),
        "the usage files are folded and gone"
    );
    assert!(!legacy.exists(), "gc left the entry file");
    assert_eq!(env.only_key(), key, "gc moved the entry into the packs");
    assert_eq!(listed_hits(&env), [6]);
    let stats = env.stats();
    assert_eq!(
        (stats["hits"].as_i64(), stats["misses"].as_i64()),
        (Some(6), Some(1))
    );
}

#[test]
fn a_copy_of_the_cache_counts_nothing_twice() {
    let env = TestEnv::new();
    env.tool("echo hi");
    assert_success(&env.run(run_tool(&[])));
    assert_success(&env.run(run_tool(&[])));
    assert_success(&env.run(["gc"]));
    assert_success(&env.run(run_tool(&[])));
    // A copy has new inodes: the summary must still know what it has folded.
    let original = env.root.path().join("cache.orig");
    fs::rename(env.cache(), &original).unwrap();
    let copied = Command::new("cp")
        .arg("-a")
        .arg(&original)
        .arg(env.cache())
        .status()
        .unwrap();
    assert!(copied.success());
    let stats = env.stats();
    assert_eq!(
        (stats["hits"].as_i64(), stats["misses"].as_i64()),
        (Some(2), Some(1))
    );
    assert_success(&env.run(["gc"]));
    let stats = env.stats();
    assert_eq!(
        (stats["hits"].as_i64(), stats["misses"].as_i64()),
        (Some(2), Some(1))
    );
    assert_eq!(listed_hits(&env), [2]);
}

/// Runs `./tool` through memo `times` times in one shell loop.
fn run_tool_times(env: &TestEnv, times: usize) {
    let status = Command::new("/bin/sh")
        .arg("-c")
        .arg(format!(
            "i=0; while [ $i -lt {times} ]; do \"$MEMO\" run -- ./tool >/dev/null || exit 1; i=$((i+1)); done"
        ))
        .env("MEMO", MEMO)
        .env("MEMO_DIR", env.cache())
        .env("HOME", env.root.path().join("home"))
        .current_dir(env.work())
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn stats_goes_on_from_where_the_last_one_stopped_and_counts_each_hit_once() {
    let env = TestEnv::new();
    // Slow enough that each hit saves time: it is then in the list of the top entries.
    env.tool("sleep 0.05; echo hi");
    run_tool_times(&env, 81);
    let hits = |env: &TestEnv| {
        let stats = env.stats();
        (
            stats["hits"].as_i64().unwrap(),
            stats["misses"].as_i64().unwrap(),
        )
    };
    assert_eq!(hits(&env), (80, 1));
    assert!(
        env.cache().join("summary.tail").is_file(),
        "stats keeps where it stopped reading the journal"
    );
    assert_eq!(hits(&env), (80, 1), "read again, nothing counted twice");
    run_tool_times(&env, 3);
    assert_eq!(hits(&env), (83, 1));
    assert_eq!(env.stats()["top"][0]["hits"].as_i64(), Some(83));
    assert_success(&env.run(["stats", "--zero"]));
    assert_eq!(hits(&env), (0, 0));
    run_tool_times(&env, 70);
    assert_eq!(hits(&env), (70, 0));
    // gc folds the journal: the same counts.
    assert_success(&env.run(["gc"]));
    assert_eq!(hits(&env), (70, 0));
    // A damaged tail is read past.
    run_tool_times(&env, 66);
    assert_eq!(hits(&env), (136, 0));
    fs::write(env.cache().join("summary.tail"), b"{\"base\":").unwrap();
    assert_eq!(hits(&env), (136, 0));
    assert_eq!(listed_hits(&env), [136 + 83]);
}

//! The summary's format 2 (docs/format.md): the usage records in a binary table after
//! the header line. A summary of format 1 (JSON lines) is read and rewritten; a damaged
//! table reads as empty and listing falls back to the entries; `memo ls` lists from the
//! summary and the journal since, so an entry stored or removed after the fold is shown
//! as it is.

use std::fs;

use crate::support::*;

/// `run -- ./tool ARG`.
fn tool_with(arg: &str) -> [&str; 4] {
    ["run", "--", "./tool", arg]
}

fn summary(env: &TestEnv) -> Vec<u8> {
    fs::read(env.cache().join("summary")).unwrap()
}

fn header(env: &TestEnv) -> serde_json::Value {
    let bytes = summary(env);
    let line = bytes.split(|&b| b == b'\n').next().unwrap();
    serde_json::from_slice(line).unwrap()
}

/// (command, hits) of every listed entry, by command.
fn listed(env: &TestEnv) -> Vec<(String, i64)> {
    let mut listed: Vec<(String, i64)> = env
        .listing()
        .iter()
        .map(|e| {
            (
                e["command"].as_str().unwrap().to_string(),
                e["hits"].as_i64().unwrap(),
            )
        })
        .collect();
    listed.sort();
    listed
}

#[test]
fn gc_writes_the_records_in_binary_after_the_header() {
    let env = TestEnv::new();
    env.tool("echo hi");
    assert_success(&env.run(tool_with("a")));
    assert_success(&env.run(tool_with("a")));
    assert_success(&env.run(["gc"]));
    let header = header(&env);
    assert_eq!(header["version"], 2);
    let table = summary(&env).len() - summary(&env).iter().position(|&b| b == b'\n').unwrap() - 1;
    assert_eq!(header["table"]["bytes"].as_u64(), Some(table as u64));
    assert!(table < 200, "one record takes {table} bytes");
    assert_eq!(listed(&env), [("./tool a".to_string(), 1)]);
}

#[test]
fn a_summary_of_format_1_is_read_and_rewritten() {
    let env = TestEnv::new();
    env.tool("echo hi");
    assert_success(&env.run(tool_with("a")));
    assert_success(&env.run(["gc"]));
    let key = env.listing()[0]["key"].as_str().unwrap().to_string();
    // The same summary as format 1 wrote it: the header at the same journal position,
    // then a JSON line per record (this one without what `ls` shows: read from the entry).
    let mut old = header(&env);
    old["version"] = 1.into();
    old["counters"]["hits"] = 7.into();
    old.as_object_mut().unwrap().remove("table");
    let record = serde_json::json!([key, {
        "command": "./tool a", "created_ms": 1, "duration_ms": 1000, "size": 300,
        "hits": 7, "saved_ms": 7000, "last_access_ms": 2, "clock": 0.0
    }]);
    fs::write(env.cache().join("summary"), format!("{old}\n{record}\n")).unwrap();
    assert_eq!(env.stats()["hits"].as_i64(), Some(7));
    assert_eq!(listed(&env), [("./tool a".to_string(), 7)]);
    assert_eq!(header(&env)["version"], 2, "listing rewrote it");
    assert_eq!(listed(&env), [("./tool a".to_string(), 7)]);
    assert_eq!(env.listing()[0]["inputs"].as_i64(), Some(0));
    assert_success(&env.run(tool_with("a")));
    assert_eq!(env.count(), 1, "the entry replays");
    assert_success(&env.run(["gc"]));
    assert_eq!(listed(&env), [("./tool a".to_string(), 8)]);
    assert_eq!(env.stats()["hits"].as_i64(), Some(8));
}

#[test]
fn a_damaged_table_reads_as_empty_and_listing_reads_the_entries() {
    let env = TestEnv::new();
    env.tool("echo hi");
    for arg in ["a", "b"] {
        assert_success(&env.run(tool_with(arg)));
    }
    assert_success(&env.run(["gc"]));
    let mut bytes = summary(&env);
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    fs::write(env.cache().join("summary"), &bytes).unwrap();
    let out = env.run(["ls"]);
    assert_success(&out);
    assert!(stderr(&out).contains("damaged"), "{}", stderr(&out));
    assert_eq!(
        listed(&env),
        [("./tool a".to_string(), 0), ("./tool b".to_string(), 0)]
    );
    // Cut short: the same.
    fs::write(env.cache().join("summary"), &bytes[..bytes.len() - 9]).unwrap();
    assert_eq!(listed(&env).len(), 2);
    assert_success(&env.run(["gc"]));
    assert_eq!(header(&env)["version"], 2);
    assert_eq!(listed(&env).len(), 2);
}

#[test]
fn listing_follows_the_journal_after_the_fold() {
    let env = TestEnv::new();
    env.tool("echo hi");
    for arg in ["a", "b", "c"] {
        assert_success(&env.run(tool_with(arg)));
    }
    assert_success(&env.run(["gc"]));
    assert_eq!(header(&env)["version"], 2);
    // After the fold: one stored, one hit, one removed, each only in the journal.
    assert_success(&env.run(tool_with("d")));
    assert_success(&env.run(tool_with("a")));
    let b = env
        .listing()
        .into_iter()
        .find(|e| e["command"] == "./tool b")
        .unwrap();
    let prefix = &b["key"].as_str().unwrap()[..12];
    assert_success(&env.run(["rm", prefix]));
    let expected = [
        ("./tool a".to_string(), 1),
        ("./tool c".to_string(), 0),
        ("./tool d".to_string(), 0),
    ];
    assert_eq!(listed(&env), expected);
    assert_eq!(env.stats()["entries"].as_i64(), Some(3));
    // `memo clear` empties the listing too.
    assert_success(&env.run(["clear"]));
    assert_eq!(listed(&env), []);
}

#[test]
fn gc_forgets_the_records_of_entries_removed_by_hand() {
    let env = TestEnv::new();
    env.tool("echo hi");
    for arg in ["a", "b"] {
        assert_success(&env.run(tool_with(arg)));
    }
    assert_success(&env.run(["gc"]));
    let a = env
        .listing()
        .into_iter()
        .find(|e| e["command"] == "./tool a")
        .unwrap();
    let key = a["key"].as_str().unwrap().to_string();
    let entry = env.entries().into_iter().find(|e| e.key == key).unwrap();
    entry.remove();
    let out = env.run(["gc"]);
    assert_success(&out);
    assert!(stdout(&out).contains("in 1 entries"), "{}", stdout(&out));
    assert_eq!(listed(&env), [("./tool b".to_string(), 0)]);
    // The record is gone from the summary itself, not only hidden.
    assert_success(&env.run(tool_with("a")));
    assert_eq!(env.count(), 3, "ran again");
    assert_eq!(
        listed(&env),
        [("./tool a".to_string(), 0), ("./tool b".to_string(), 0)]
    );
}

#[test]
fn gc_evicting_many_entries_removes_each_and_keeps_the_rest() {
    let env = TestEnv::new();
    env.tool("echo hi");
    // More than gc removes on one thread.
    for i in 0..100 {
        assert_success(&env.run(tool_with(&i.to_string())));
    }
    let bytes = env.stats()["bytes"].as_u64().unwrap();
    let out = env.run(["gc", "--max-size", &(bytes / 3).to_string()]);
    assert_success(&out);
    let left = env.entries().len();
    assert!((20..=40).contains(&left), "{left} entries left");
    assert_eq!(env.listing().len(), left);
    let evicted = env
        .events()
        .iter()
        .filter(|e| e["event"] == "evict")
        .count();
    assert_eq!(evicted, 100 - left);
    assert_eq!(env.stats()["entries"].as_u64(), Some(left as u64));
}

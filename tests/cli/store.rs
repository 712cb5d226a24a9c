//! The store: fail-open behaviour, corruption, privacy, and the flags that steer caching.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use crate::support::*;

#[test]
fn force_reruns_and_replaces_the_entry() {
    let env = TestEnv::new();
    env.tool("cat n");
    env.write("n", "1\n");
    assert!(env.ran_tool(&[]));
    env.write("n", "2\n");
    assert_eq!(
        stdout(&env.run(run_tool(&[]))),
        "1\n",
        "n is not a declared input"
    );
    assert!(env.ran_tool(&["--force"]));
    assert_eq!(stdout(&env.run(run_tool(&[]))), "2\n");
    assert_eq!(env.count(), 2);
}

#[test]
fn memo_disable_bypasses_the_cache_entirely() {
    let env = TestEnv::new();
    env.tool("echo hi; exit 5");
    for _ in 0..2 {
        let out = env
            .memo(run_tool(&[]))
            .env("MEMO_DISABLE", "1")
            .output()
            .unwrap();
        assert_code(&out, 5);
        assert_eq!(stdout(&out), "hi\n");
    }
    assert_eq!(env.count(), 2);
    assert!(
        !env.cache().exists(),
        "a disabled memo must not touch the cache"
    );
}

#[test]
fn verbose_says_hit_or_miss_with_the_short_key() {
    let env = TestEnv::new();
    env.tool("echo hi");
    let miss = env.run(run_tool(&["-v"]));
    let hit = env.run(run_tool(&["-v"]));
    assert!(
        stderr(&miss).starts_with("memo: miss "),
        "{}",
        stderr(&miss)
    );
    assert!(stderr(&miss).contains("stored"));
    assert!(stderr(&hit).starts_with("memo: hit "), "{}", stderr(&hit));
    assert!(stderr(&hit).contains("saved"));
    let key = |s: String| {
        s.split_whitespace()
            .nth(2)
            .unwrap()
            .trim_end_matches([',', ':'])
            .to_string()
    };
    assert_eq!(key(stderr(&miss)), key(stderr(&hit)));
    assert_eq!(stderr(&hit).lines().count(), 1);
}

#[test]
fn without_verbose_a_hit_prints_only_the_commands_output() {
    let env = TestEnv::new();
    env.tool("echo hi; echo warn >&2");
    env.run(run_tool(&[]));
    let hit = env.run(run_tool(&[]));
    assert_eq!(stdout(&hit), "hi\n");
    assert_eq!(stderr(&hit), "warn\n");
}

/// After damage to the one stored entry of `echo result`: the next run is a miss that
/// prints the result, warns once and runs the tool again; the run after is a hit.
#[track_caller]
fn assert_a_miss_that_warns_once_and_repairs(env: &TestEnv) {
    let out = env.run(run_tool(&[]));
    assert_success(&out);
    assert_eq!(stdout(&out), "result\n");
    assert_eq!(
        stderr(&out).matches("memo: warning").count(),
        1,
        "{}",
        stderr(&out)
    );
    assert_eq!(env.count(), 2);
    assert!(!env.ran_tool(&[]), "the rerun repaired the entry");
}

#[test]
fn a_corrupt_entry_is_a_miss_that_warns_once_and_is_repaired() {
    let env = TestEnv::new();
    env.tool("echo result; exit 0");
    assert!(env.ran_tool(&[]));
    // Damaged in place: a byte near the end of the record's body.
    let entry = env.entries().pop().unwrap();
    let mut bytes = entry.bytes();
    let last = bytes.len() - 3;
    bytes[last] ^= 0x20;
    entry.overwrite(&bytes);
    assert_a_miss_that_warns_once_and_repairs(&env);
}

/// The record's header no longer matches its slot (a stray write into the pack): the
/// same as a corrupt entry.
#[test]
fn a_damaged_record_header_is_a_miss_that_warns_once_and_is_repaired() {
    let env = TestEnv::new();
    env.tool("echo result; exit 0");
    assert!(env.ran_tool(&[]));
    let entry = env.entries().pop().unwrap();
    // A byte of the key in the header (its 19th, 30 bytes before the entry's own).
    let mut header = entry.header();
    header[18] ^= 0x01;
    entry.overwrite_header(&header);
    assert_a_miss_that_warns_once_and_repairs(&env);
    assert_eq!(env.stats()["corrupt"], 1);
}

#[test]
fn a_truncated_entry_is_a_miss() {
    let env = TestEnv::new();
    env.tool("echo result");
    assert!(env.ran_tool(&[]));
    // Stored again as its first half, with a record and slot that match it.
    let entry = env.entries().pop().unwrap();
    let bytes = entry.bytes();
    entry.replace(&bytes[..bytes.len() / 2]);
    let out = env.run(run_tool(&[]));
    assert_eq!(stdout(&out), "result\n");
    assert_eq!(env.count(), 2);
}

#[test]
fn a_corrupt_object_is_never_replayed() {
    let env = TestEnv::with_raw_objects();
    env.tool("head -c 200000 /dev/zero | tr '\\0' x");
    assert!(env.ran_tool(&[]));
    let object = env.objects().pop().unwrap();
    let mut bytes = fs::read(&object).unwrap();
    bytes[100000] = b'y';
    fs::write(&object, &bytes).unwrap();
    let out = env.run(run_tool(&[]));
    assert_success(&out);
    assert_eq!(
        out.stdout,
        vec![b'x'; 200000],
        "corrupt bytes reached stdout"
    );
    assert!(stderr(&out).contains("damaged"), "{}", stderr(&out));
    assert_eq!(env.count(), 2);
    assert!(!env.ran_tool(&[]), "the rerun repaired the object");
}

#[test]
fn a_corrupt_output_object_is_never_restored() {
    let env = TestEnv::new();
    env.tool("head -c 200000 /dev/zero > out.bin");
    assert!(env.ran_tool(&["-o", "out.bin"]));
    let object = env.objects().pop().unwrap();
    fs::write(&object, vec![1u8; 200000]).unwrap();
    fs::remove_file(env.path("out.bin")).unwrap();
    assert!(env.ran_tool(&["-o", "out.bin"]));
    assert_eq!(env.read("out.bin"), vec![0u8; 200000]);
}

#[test]
fn an_unusable_default_cache_warns_and_runs_the_command_untouched() {
    let env = TestEnv::new();
    env.tool("echo out; echo err >&2; exit 7");
    let blocker = env.write("blocker", "a file where a directory should be");
    for _ in 0..2 {
        let out = env
            .memo(run_tool(&[]))
            .env_remove("MEMO_DIR")
            .env("XDG_CACHE_HOME", blocker.join("cache"))
            .output()
            .unwrap();
        assert_code(&out, 7);
        assert_eq!(stdout(&out), "out\n");
        let err = stderr(&out);
        assert!(err.starts_with("err\n") || err.ends_with("err\n"), "{err}");
        assert_eq!(err.matches("memo: warning").count(), 1, "{err}");
    }
    assert_eq!(env.count(), 2);
}

#[test]
fn the_cache_is_private() {
    let env = TestEnv::new();
    env.tool("head -c 100000 /dev/zero");
    assert!(env.ran_tool(&[]));
    let mode = |p: &std::path::Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&env.cache()), 0o700);
    assert_eq!(mode(&env.cache().join("packs")), 0o700);
    let packs = files_under(&env.cache().join("packs"));
    assert_eq!(packs.len(), 2, "a pack and its table: {packs:?}");
    for file in packs.iter().chain(env.objects().iter()) {
        assert_eq!(
            mode(file) & 0o077,
            0,
            "{} is readable by others",
            file.display()
        );
    }
}

#[test]
fn environment_values_are_not_written_to_the_cache() {
    let env = TestEnv::new();
    env.tool("true");
    let mut cmd = env.memo(run_tool(&["-e", "API_TOKEN"]));
    cmd.env("API_TOKEN", "s3cr3t-value-xyz");
    assert!(env.ran(cmd));
    let entries = env.entries();
    assert_eq!(entries.len(), 1);
    assert!(String::from_utf8_lossy(&entries[0].bytes()).contains("API_TOKEN"));
    for file in files_under(&env.cache()) {
        let text = String::from_utf8_lossy(&fs::read(&file).unwrap()).into_owned();
        assert!(
            !text.contains("s3cr3t"),
            "an env value leaked into the cache: {}",
            file.display()
        );
    }
}

#[test]
fn cache_dir_flag_wins_over_memo_dir() {
    let env = TestEnv::new();
    env.tool("true");
    let other = env.root.path().join("other-cache");
    let mut args = vec!["--cache-dir".to_string(), other.display().to_string()];
    args.extend(run_tool(&[]));
    assert!(env.ran(env.memo(&args)));
    assert!(other.join("packs").is_dir());
    assert!(env.entries().is_empty());
}

#[test]
fn an_input_that_changes_while_the_command_runs_is_not_stored() {
    let env = TestEnv::new();
    env.tool("cat data; echo more >> data");
    env.write("data", "v1\n");
    let out = env.run(run_tool(&["-i", "data"]));
    assert_success(&out);
    assert!(
        stderr(&out).contains("input 'data' changed while the command ran"),
        "{}",
        stderr(&out)
    );
    assert!(env.entries().is_empty());
}

#[test]
fn the_default_cache_is_under_xdg_cache_home_then_home() {
    let env = TestEnv::new();
    env.tool("true");
    let xdg = env.root.path().join("xdg");
    let mut cmd = env.memo(run_tool(&[]));
    cmd.env_remove("MEMO_DIR").env("XDG_CACHE_HOME", &xdg);
    assert!(env.ran(cmd));
    assert!(xdg.join("memo/packs").is_dir());
    let mut cmd = env.memo(run_tool(&["--salt", "home"]));
    cmd.env_remove("MEMO_DIR");
    assert!(env.ran(cmd));
    assert!(env.root.path().join("home/.cache/memo/packs").is_dir());
}

/// Rewrites the one entry in the cache through `edit` on its JSON body, with a valid
/// checksum: what someone with write access to a shared cache could do.
fn forge_entry(env: &TestEnv, edit: impl FnOnce(&mut serde_json::Value)) {
    rewrite_entry(&env.entries().pop().unwrap(), edit);
}

#[test]
fn a_forged_entry_with_an_escaping_path_is_refused_and_nothing_is_written_outside() {
    let env = TestEnv::new();
    env.tool("mkdir -p dist; echo ok > dist/f");
    assert!(env.ran_tool(&["-o", "dist"]));
    forge_entry(&env, |body| {
        let nodes = body["outputs"][0]["nodes"].as_array_mut().unwrap();
        let mut evil = nodes[1].clone();
        evil["path"] = "../../escaped".into();
        nodes.push(evil);
    });
    let out = env.run(run_tool(&["-o", "dist"]));
    assert_success(&out);
    assert!(stderr(&out).contains("unsafe path"), "{}", stderr(&out));
    assert_eq!(env.count(), 2, "the refused entry was a miss");
    assert!(!env.root.path().join("escaped").exists());
    assert!(!env.work().join("escaped").exists());
}

#[test]
fn a_forged_entry_for_other_inputs_is_not_replayed() {
    let env = TestEnv::new();
    env.tool("echo real");
    assert!(env.ran_tool(&[]));
    forge_entry(&env, |body| {
        body["material"]["salt"] = "something else".into();
        body["streams"]["stdout"]["inline"] = "forged\n".into();
    });
    let out = env.run(run_tool(&[]));
    assert_eq!(stdout(&out), "real\n");
    assert_eq!(env.count(), 2);
}

#[test]
fn a_read_only_cache_still_replays_and_runs_misses_with_one_warning() {
    let env = TestEnv::new();
    env.tool("echo \"$1\"");
    assert!(env.ran(env.memo(["run", "--", "./tool", "stored"])));
    let ro = |args: &[&str]| {
        let mut cmd = std::process::Command::new("unshare");
        cmd.args(["--mount", "--map-root-user", "sh", "-c"])
            .arg("mount --bind -o ro \"$0\" \"$0\" 2>/dev/null || exit 99; exec \"$@\"")
            .arg(env.cache())
            .arg(MEMO)
            .args(args)
            .current_dir(env.work())
            .env("MEMO_DIR", env.cache());
        cmd.output().unwrap()
    };
    let probe = ro(&["run", "--", "./tool", "stored"]);
    if probe.status.code() == Some(99) || stderr(&probe).contains("unshare") {
        eprintln!(
            "skipped: cannot make a read-only bind mount here ({})",
            stderr(&probe).trim()
        );
        return;
    }
    assert_success(&probe);
    assert_eq!(stdout(&probe), "stored\n");
    assert_eq!(env.count(), 1, "a read-only cache still serves hits");
    let miss = ro(&["run", "--", "./tool", "new"]);
    assert_success(&miss);
    assert_eq!(stdout(&miss), "new\n");
    assert_eq!(
        stderr(&miss).matches("memo: warning").count(),
        1,
        "{}",
        stderr(&miss)
    );
    assert_eq!(env.count(), 2);
}

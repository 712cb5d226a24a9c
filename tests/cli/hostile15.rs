//! Hostile review 15: entries as records in packs (`packs/ab` + `packs/ab.idx`,
//! src/store/packs.rs). These tests race stores, hits, removals, gc and clear in one
//! shard, kill memo and gc with -9, cut, flip and forge the bytes of packs and tables,
//! fill the disk, make packs immutable, mix in an earlier memo's entry files, and grow
//! packs and shards large; then check that the command's output always passes through
//! whole, that nothing replayed is partial or another key's, that nothing hangs, and that
//! `ls`, `stats` and `gc` agree with what is stored.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::support::*;

/// Only to catch a hang: nothing here takes more than a few seconds.
const DEADLINE: Duration = Duration::from_secs(60);

fn memo<S: AsRef<std::ffi::OsStr>>(env: &TestEnv, args: &[S]) -> Output {
    run_with_deadline(env.memo(args), DEADLINE)
}

fn sigkill(pid: u32) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
}

fn warnings(out: &Output) -> usize {
    stderr(out).matches("memo: warning").count()
}

/// `memo run --cache-failures -- ./tool SALT`.
fn salted(salt: &str) -> Vec<String> {
    ["run", "--cache-failures", "--", "./tool", salt]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// `args` (a `memo run` command line) with `--force`: run and stored again.
fn forced(args: &[String]) -> Vec<String> {
    let mut forced = args.to_vec();
    forced.insert(1, "--force".into());
    forced
}

/// The standard tool: a line on each stream that names its argument, and exit code 3.
fn standard_tool(env: &TestEnv) {
    env.tool("printf 'out %s\\n' \"$1\"; printf 'err %s\\n' \"$1\" >&2; exit 3");
}

/// What `salted(salt)` with the standard tool must print, hit or miss: its own output,
/// whole, with its exit code, and at most one warning.
#[track_caller]
fn assert_standard(out: &Output, salt: &str, what: &str) {
    assert_eq!(
        out.status.code(),
        Some(3),
        "{what}: {salt}: stderr {}",
        stderr(out)
    );
    assert_eq!(stdout(out), format!("out {salt}\n"), "{what}: {salt}");
    let err = stderr(out);
    assert!(
        err.contains(&format!("err {salt}\n")),
        "{what}: {salt}: {err}"
    );
    assert!(!err.contains("panicked"), "{what}: {salt}: {err}");
    assert!(warnings(out) <= 1, "{what}: {salt}: {err}");
}

/// Runs `salted(salt)` and checks it is a clean hit: the right output, no warning, the
/// tool not run.
#[track_caller]
fn assert_clean_hit(env: &TestEnv, salt: &str, what: &str) {
    let before = env.count();
    let out = memo(env, &salted(salt));
    assert_standard(&out, salt, what);
    assert_eq!(warnings(&out), 0, "{what}: {salt}: {}", stderr(&out));
    assert_eq!(env.count(), before, "{what}: {salt} ran again");
}

fn keys(env: &TestEnv) -> BTreeSet<String> {
    env.entries().into_iter().map(|e| e.key).collect()
}

/// Stores `args(salt)` for salts s0, s1, ... until `n` of the keys start with the same
/// byte (so live in one pack); returns those salts and keys, in the order stored.
fn same_shard(
    env: &TestEnv,
    n: usize,
    args: impl Fn(&str) -> Vec<String>,
) -> Vec<(String, String)> {
    let mut known = keys(env);
    let mut by_shard: HashMap<String, Vec<(String, String)>> = HashMap::new();
    for i in 0..3000 {
        let salt = format!("s{i}");
        let out = memo(env, &args(&salt));
        assert!(out.status.code().is_some(), "{}", stderr(&out));
        let now = keys(env);
        let new: Vec<&String> = now.difference(&known).collect();
        assert_eq!(new.len(), 1, "{salt}: {}", stderr(&out));
        let key = new[0].clone();
        known = now;
        let group = by_shard.entry(key[..2].to_string()).or_default();
        group.push((salt, key));
        if group.len() == n {
            return group.clone();
        }
    }
    panic!("no {n} keys in one shard");
}

/// The live entry of `key`.
#[track_caller]
fn entry_of(env: &TestEnv, key: &str) -> StoredEntry {
    env.entries()
        .into_iter()
        .find(|e| e.key == key)
        .unwrap_or_else(|| panic!("{key} is not stored"))
}

/// `packs/ab` of the key `key`.
fn pack_of(env: &TestEnv, key: &str) -> PathBuf {
    env.cache().join("packs").join(&key[..2])
}

fn append(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .unwrap()
        .write_all(bytes)
        .unwrap();
}

/// The keys `memo ls --json` lists.
fn listed(env: &TestEnv) -> BTreeSet<String> {
    env.listing()
        .iter()
        .map(|e| e["key"].as_str().unwrap().to_string())
        .collect()
}

/// After a `memo gc`: `ls`, `stats`, `gc --dry-run` and the packs name the same entries.
#[track_caller]
fn assert_agree_after_gc(env: &TestEnv, what: &str) {
    let gc = memo(env, &["gc"]);
    assert_success(&gc);
    let stored = keys(env);
    assert_eq!(listed(env), stored, "{what}: ls");
    assert_eq!(
        env.stats()["entries"].as_u64(),
        Some(stored.len() as u64),
        "{what}: stats"
    );
    let dry = memo(env, &["gc", "--dry-run"]);
    assert_success(&dry);
    assert!(
        stdout(&dry).contains(&format!("in {} entries", stored.len())),
        "{what}: gc --dry-run: {}",
        stdout(&dry)
    );
}

/// Sets a file attribute (`chattr +i`, `+a`) until dropped; `None` where that cannot
/// be done here (not root, a file system without attributes).
struct Attr {
    path: PathBuf,
    flag: &'static str,
}

impl Attr {
    fn set(path: &Path, flag: &'static str) -> Option<Attr> {
        let done = Command::new("chattr")
            .arg(format!("+{flag}"))
            .arg(path)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !done {
            eprintln!("skipped: cannot chattr +{flag} here");
        }
        done.then(|| Attr {
            path: path.to_path_buf(),
            flag,
        })
    }
}

impl Drop for Attr {
    fn drop(&mut self) {
        let _ = Command::new("chattr")
            .arg(format!("-{}", self.flag))
            .arg(&self.path)
            .status();
    }
}

// ---------------------------------------------------------------------------------------
// gc's rewrite of a pack.

/// gc rewrites a pack by renaming a new table, then a new pack, over the old ones. Where
/// the pack cannot be replaced (immutable, append-only), the new table must not be left
/// naming offsets in the old pack: the entries gc keeps must stay readable.
// Seen: gc evicts A, renames the new table over packs/ab.idx, fails to rename the new
// pack (EPERM), and every entry it meant to keep reads as damaged: "cache entry … is
// unusable (its record is damaged)", a rerun, a lost result.
#[test]
fn gc_that_cannot_replace_a_pack_leaves_the_entries_it_keeps_readable() {
    for flag in ["i", "a"] {
        let env = TestEnv::new();
        standard_tool(&env);
        let pair = same_shard(&env, 2, salted);
        let (evicted, kept) = (&pair[0], &pair[1]);
        // The kept one is worth keeping: often hit.
        for _ in 0..20 {
            assert_clean_hit(&env, &kept.0, "before gc");
        }
        let limit = (entry_of(&env, &kept.1).len * 3 / 2).to_string();
        // What gc is about to do: evict the first, keep the second (a rewrite of their
        // pack).
        let dry = memo(&env, &["gc", "--dry-run", "--max-size", &limit]);
        assert!(
            stdout(&dry).contains(&evicted.1[..12]) && !stdout(&dry).contains(&kept.1[..12]),
            "+{flag}: {}",
            stdout(&dry)
        );
        let pack = pack_of(&env, &kept.1);
        let Some(_attr) = Attr::set(&pack, flag) else {
            return;
        };
        let out = memo(&env, &["gc", "--max-size", &limit]);
        assert!(out.status.code().is_some(), "{}", stderr(&out));
        assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
        assert_clean_hit(&env, &kept.0, &format!("after gc with the pack +{flag}"));
    }
}

/// A copy of a pack and its table under another shard's name names no entry of that
/// shard: nothing reads it, and gc must not keep it for ever.
// Seen: packs/XY and XY.idx stay after any number of gc runs: `Packs::usage` counts the
// foreign slots as live (unlike `live` and `rewrite`), so the pack is never rewritten.
#[test]
fn a_pack_copied_under_another_shards_name_is_collected_by_gc() {
    let env = TestEnv::new();
    standard_tool(&env);
    assert_standard(&memo(&env, &salted("a")), "a", "store");
    let key = env.only_key();
    let pack = pack_of(&env, &key);
    let other = format!("{:02x}", u8::from_str_radix(&key[..2], 16).unwrap() ^ 0xff);
    let copy = env.cache().join("packs").join(&other);
    fs::copy(&pack, &copy).unwrap();
    fs::copy(table_of(&pack), table_of(&copy)).unwrap();
    assert_eq!(listed(&env).len(), 1, "the copy is no entry");
    assert_clean_hit(&env, "a", "beside the copy");
    assert_agree_after_gc(&env, "copy");
    assert_success(&memo(&env, &["gc"]));
    assert!(
        !copy.exists() && !table_of(&copy).exists(),
        "gc kept the copy under {other}"
    );
    assert_clean_hit(&env, "a", "after gc");
}

/// A pack cut short (a torn write, a copy that stopped): the entries whose records are
/// gone are gone. An entry file of an earlier memo that was cut short changed size,
/// which gc noticed; after a gc, `ls` and `stats` must not go on listing what no longer
/// exists.
// Seen: after `memo gc`, ls, stats and gc --dry-run still count the entry whose record
// was cut off: gc trusts the summary while the slot's length is unchanged, and the
// pack, shorter than its slots say, is not rewritten (usage() sees no waste).
#[test]
fn gc_forgets_entries_whose_records_were_cut_off_their_pack() {
    let env = TestEnv::new();
    standard_tool(&env);
    let pair = same_shard(&env, 2, salted);
    let (first, second) = (&pair[0], &pair[1]);
    let mut others = keys(&env);
    others.remove(&second.1);
    assert_success(&memo(&env, &["gc"]));
    let entry = entry_of(&env, &second.1);
    // Cut in the middle of the second record.
    let file = fs::OpenOptions::new()
        .write(true)
        .open(&entry.pack)
        .unwrap();
    file.set_len(entry.at + entry.len as u64 / 2).unwrap();
    drop(file);
    let gc = memo(&env, &["gc"]);
    assert_success(&gc);
    assert_eq!(listed(&env), others, "ls after gc");
    assert_eq!(
        env.stats()["entries"].as_u64(),
        Some(others.len() as u64),
        "stats after gc"
    );
    let dry = memo(&env, &["gc", "--dry-run"]);
    assert!(
        stdout(&dry).contains(&format!("in {} entries", others.len())),
        "{}",
        stdout(&dry)
    );
    assert_clean_hit(&env, &first.0, "the record before the cut");
    let before = env.count();
    let out = memo(&env, &salted(&second.0));
    assert_standard(&out, &second.0, "the record cut off");
    assert_eq!(env.count(), before + 1);
    assert_clean_hit(&env, &second.0, "stored again");
}

// ---------------------------------------------------------------------------------------
// Hits racing clear and gc.

/// Stores `./tool` (one line), then gives its shard's table a million blank slots before
/// its own: the lookup's read of the table takes milliseconds, a window a racing clear
/// or gc falls into. Returns the pack, its bytes and the table's bytes.
fn store_behind_a_long_table(env: &TestEnv, blank: usize) -> (PathBuf, Vec<u8>, Vec<u8>) {
    env.tool("echo hello");
    assert_success(&memo(env, &run_tool(&[])));
    let key = env.only_key();
    let pack = pack_of(env, &key);
    let bytes = fs::read(&pack).unwrap();
    let mut table = vec![0u8; 48 * blank];
    table.extend(fs::read(table_of(&pack)).unwrap());
    (pack, bytes, table)
}

fn put_back(pack: &Path, bytes: &[u8], table: &[u8]) {
    fs::create_dir_all(pack.parent().unwrap()).unwrap();
    fs::write(pack, bytes).unwrap();
    fs::write(table_of(pack), table).unwrap();
}

/// A hit that races `memo clear` finds its entry or does not: a plain miss, as for an
/// object a clear removed (run.rs: "an object removed by a concurrent gc, clear or rm is
/// a plain miss, not damage"), never a damaged entry to warn about and count.
// Seen (about 4 runs in 10): "warning: cache entry … is unusable (its record is
// damaged)", and `corrupt` counted: `Packs::get` read the table before clear renamed
// packs/ away, then found no pack in the fresh packs/ and returned `Got::Damaged`
// without the retry under the lock.
#[test]
fn a_hit_racing_clear_is_a_plain_miss_never_a_damaged_entry() {
    let env = TestEnv::new();
    let (pack, bytes, table) = store_behind_a_long_table(&env, 1_000_000);
    for round in 0..15 {
        put_back(&pack, &bytes, &table);
        let hit = env.spawn_piped(run_tool(&[]));
        let clear = env.spawn_piped(["clear"]);
        let out = hit.wait_with_output().unwrap();
        assert_success(&clear.wait_with_output().unwrap());
        assert_success(&out);
        assert_eq!(stdout(&out), "hello\n", "round {round}");
        assert!(
            !stderr(&out).contains("damaged"),
            "round {round}: {}",
            stderr(&out)
        );
    }
    assert_eq!(env.stats()["corrupt"].as_u64(), Some(0));
}

/// A hit that races a gc evicting its entry (the last of its shard: gc removes the table,
/// then the pack) is a hit or a plain miss, never a damaged entry.
// Seen: "warning: cache entry … is unusable (its record is damaged)": the lookup read the
// table before gc removed it, then found no pack (`Got::Damaged`, no retry).
#[test]
fn a_hit_racing_a_gc_that_empties_its_shard_is_a_plain_miss_never_a_damaged_entry() {
    let env = TestEnv::new();
    let (pack, bytes, table) = store_behind_a_long_table(&env, 200_000);
    let mut damaged = Vec::new();
    for round in 0..6 {
        let _ = fs::remove_dir_all(pack.parent().unwrap());
        put_back(&pack, &bytes, &table);
        let mut gc = env.spawn_piped(["gc", "--max-size", "1"]);
        loop {
            let done = gc.try_wait().unwrap().is_some();
            let out = memo(&env, &run_tool(&[]));
            assert_success(&out);
            assert_eq!(stdout(&out), "hello\n", "round {round}");
            if stderr(&out).contains("damaged") {
                damaged.push(format!("round {round}: {}", stderr(&out)));
            }
            if done {
                break;
            }
        }
        assert_success(&gc.wait_with_output().unwrap());
    }
    assert!(damaged.is_empty(), "{damaged:#?}");
}

// ---------------------------------------------------------------------------------------
// Concurrency.

/// `./tool SALT` printing 15000 bytes made of its argument: an entry of about 16 kB, so
/// that a few `--force` runs leave gc enough dead records to rewrite the pack.
fn wide_tool(env: &TestEnv) {
    env.tool("yes \"$1\" | head -c 15000; printf 'err %s\\n' \"$1\" >&2; exit 3");
}

fn wide_output(salt: &str) -> Vec<u8> {
    format!("{salt}\n")
        .repeat(15000 / (salt.len() + 1) + 1)
        .into_bytes()[..15000]
        .to_vec()
}

#[track_caller]
fn assert_wide(out: &Output, salt: &str, what: &str) {
    assert_eq!(out.status.code(), Some(3), "{what}: {}", stderr(out));
    assert!(
        out.stdout == wide_output(salt),
        "{what}: {salt}: wrong stdout ({} bytes, starts {:?}); stderr {}",
        out.stdout.len(),
        String::from_utf8_lossy(&out.stdout[..out.stdout.len().min(40)]),
        stderr(out)
    );
    let err = stderr(out);
    assert!(err.contains(&format!("err {salt}\n")), "{what}: {err}");
    assert!(!err.contains("panicked"), "{what}: {err}");
    assert!(warnings(out) <= 1, "{what}: {err}");
}

/// Three keys in one shard; at once: three loops of runs (hits or misses), a loop of
/// `--force` reruns, a loop of `memo rm`, and a loop of `memo gc` (rewriting the pack
/// as the reruns leave it dead records, and once evicting). Every run prints its own
/// output whole with its exit code; afterwards `ls`, `stats` and the packs agree, and
/// what they list replays.
#[test]
fn stores_hits_removals_reruns_and_gcs_racing_in_one_shard_never_replay_a_wrong_result() {
    let env = TestEnv::new();
    wide_tool(&env);
    let trio = same_shard(&env, 3, salted);
    let salts: Vec<String> = trio.iter().map(|t| t.0.clone()).collect();
    let by_salt: HashMap<String, String> = trio.iter().cloned().collect();
    std::thread::scope(|scope| {
        let mut workers = Vec::new();
        for w in 0..3 {
            let (env, salts) = (&env, &salts);
            workers.push(scope.spawn(move || {
                for i in 0..12 {
                    let salt = &salts[(i + w) % 3];
                    assert_wide(&memo(env, &salted(salt)), salt, "run");
                }
            }));
        }
        {
            let (env, salts) = (&env, &salts);
            workers.push(scope.spawn(move || {
                for i in 0..8 {
                    let salt = &salts[i % 3];
                    let args = forced(&salted(salt));
                    assert_wide(&memo(env, &args), salt, "--force");
                }
            }));
        }
        {
            let (env, salts, by_salt) = (&env, &salts, &by_salt);
            workers.push(scope.spawn(move || {
                for i in 0..8 {
                    let key = &by_salt[&salts[(i + 1) % 3]];
                    let out = memo(env, &["rm", &key[..12]]);
                    assert!(out.status.code().is_some(), "{}", stderr(&out));
                    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
                }
            }));
        }
        {
            let env = &env;
            workers.push(scope.spawn(move || {
                for i in 0..6 {
                    let out = if i == 3 {
                        memo(env, &["gc", "--max-size", "40000"])
                    } else {
                        memo(env, &["gc"])
                    };
                    assert_success(&out);
                }
            }));
        }
        for worker in workers {
            worker.join().unwrap();
        }
    });
    assert_agree_after_gc(&env, "after the race");
    for e in env.entries() {
        let salt = by_salt
            .iter()
            .find(|(_, k)| **k == e.key)
            .map(|(s, _)| s.clone());
        let Some(salt) = salt else { continue };
        let before = env.count();
        let out = memo(&env, &salted(&salt));
        assert_wide(&out, &salt, "listed after the race");
        assert_eq!(warnings(&out), 0, "{}", stderr(&out));
        assert_eq!(env.count(), before, "{salt} is listed but ran");
    }
}

/// N identical runs at once, while another key of the same shard is rerun and removed
/// and gc rewrites the shard: the command runs once, and every caller gets its output.
#[test]
fn single_flight_holds_while_the_shard_is_appended_to_and_rewritten() {
    let env = TestEnv::new();
    env.tool(
        "[ -e \"slow-$1\" ] && sleep 0.6; echo \"$1\" >> runs; \
         yes \"$1\" | head -c 15000; printf 'err %s\\n' \"$1\" >&2; exit 3",
    );
    let pair = same_shard(&env, 2, salted);
    let (flown, other) = (&pair[0], &pair[1]);
    // Dead records enough for gc to rewrite the pack.
    for _ in 0..6 {
        let args = forced(&salted(&other.0));
        assert_wide(&memo(&env, &args), &other.0, "--force");
    }
    assert_success(&memo(&env, &["rm", &flown.1[..12]]));
    fs::remove_file(env.path("runs")).unwrap();
    env.write(&format!("slow-{}", flown.0), "");
    std::thread::scope(|scope| {
        let callers: Vec<_> = (0..6)
            .map(|_| {
                let (env, salt) = (&env, &flown.0);
                scope.spawn(move || memo(env, &salted(salt)))
            })
            .collect();
        let env = &env;
        let busy = scope.spawn(move || {
            for i in 0..4 {
                let args = forced(&salted(&other.0));
                assert_wide(&memo(env, &args), &other.0, "--force");
                assert_success(&memo(env, &["gc"]));
                if i == 1 {
                    assert_success(&memo(env, &["rm", &other.1[..12]]));
                }
            }
        });
        for caller in callers {
            assert_wide(&caller.join().unwrap(), &flown.0, "a caller");
        }
        busy.join().unwrap();
    });
    let runs = fs::read_to_string(env.path("runs")).unwrap();
    assert_eq!(
        runs.lines().filter(|l| *l == flown.0).count(),
        1,
        "the command ran more than once: {runs}"
    );
    assert_agree_after_gc(&env, "after the flight");
}

// ---------------------------------------------------------------------------------------
// Crashes.

/// memo killed with -9 at moments spread over its store (objects, the record, the
/// slot), again and again in one pack: the next run of each key prints its own output,
/// restores its own files, and the cache agrees with itself after gc.
#[test]
fn kill_9_while_storing_leaves_packs_that_replay_right() {
    let env = TestEnv::new();
    // An output directory of 60 files of 2 kB (objects and inline bytes) and 15 kB
    // of stdout; `done` marks the command's end.
    env.tool(
        "rm -rf \"d-$1\"; mkdir \"d-$1\"; for i in $(seq 60); do yes \"$1 $i\" | head -c 2000 > \"d-$1/f$i\"; done; \
         yes \"$1\" | head -c 15000; printf 'err %s\\n' \"$1\" >&2; touch \"done-$1\"; exit 3",
    );
    let args = |salt: &str| -> Vec<String> {
        [
            "run",
            "--cache-failures",
            "-o",
            &format!("d-{salt}"),
            "--",
            "./tool",
            salt,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let pair = same_shard(&env, 2, args);
    let check_files = |salt: &str| {
        for i in 1..=60 {
            let want = format!("{salt} {i}\n").repeat(2000).into_bytes()[..2000].to_vec();
            assert!(
                env.read(&format!("d-{salt}/f{i}")) == want,
                "d-{salt}/f{i} is not its own"
            );
        }
    };
    for round in 0..16 {
        let salt = &pair[round % 2].0;
        let done = env.path(&format!("done-{salt}"));
        let _ = fs::remove_file(&done);
        let forced = forced(&args(salt));
        let mut child = env
            .memo(&forced)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        env.eventually("the command ends", || done.exists());
        std::thread::sleep(Duration::from_micros(700 * (round as u64 / 2)));
        sigkill(child.id());
        child.wait().unwrap();
        for (salt, _) in &pair {
            let _ = fs::remove_dir_all(env.path(&format!("d-{salt}")));
            let out = memo(&env, &args(salt));
            assert_wide(&out, salt, &format!("round {round}, after the kill"));
            check_files(salt);
        }
    }
    assert_agree_after_gc(&env, "after the kills");
    for (salt, _) in &pair {
        let before = env.count();
        let _ = fs::remove_dir_all(env.path(&format!("d-{salt}")));
        let out = memo(&env, &args(salt));
        assert_wide(&out, salt, "after gc");
        assert_eq!(warnings(&out), 0, "{}", stderr(&out));
        assert_eq!(env.count(), before, "{salt} ran again after gc");
        check_files(salt);
    }
}

/// gc killed between its two renames (the new table in place, the old pack still
/// there), and gc killed at moments spread over its run: what follows costs misses at
/// worst, never a wrong replay or more than one warning a run, and heals.
#[test]
fn gc_killed_mid_rewrite_costs_misses_never_wrong_results() {
    let env = TestEnv::new();
    wide_tool(&env);
    let trio = same_shard(&env, 3, salted);
    let force = |salt: &str| {
        let args = forced(&salted(salt));
        assert_wide(&memo(&env, &args), salt, "--force");
    };
    let check_all = |what: &str| {
        for (salt, _) in &trio {
            assert_wide(&memo(&env, &salted(salt)), salt, what);
        }
        for (salt, _) in &trio {
            assert_clean_hit_wide(&env, salt, &format!("{what}, again"));
        }
    };
    // Dead records for gc to drop: the first key rerun, twice over the others' size.
    for _ in 0..8 {
        force(&trio[0].0);
    }
    let pack = pack_of(&env, &trio[0].1);
    let old_pack = fs::read(&pack).unwrap();
    assert_success(&memo(&env, &["gc"]));
    assert!(
        fs::metadata(&pack).unwrap().len() < old_pack.len() as u64,
        "gc did not rewrite the pack"
    );
    // As if killed between the renames: the new table with the old pack.
    fs::write(&pack, &old_pack).unwrap();
    check_all("new table, old pack");
    assert_agree_after_gc(&env, "new table, old pack");
    // Killed at moments spread over its run.
    for round in 0..10 {
        for _ in 0..6 {
            force(&trio[round % 3].0);
        }
        let mut gc = env
            .memo(["gc"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(1500 * round as u64));
        sigkill(gc.id());
        gc.wait().unwrap();
        check_all(&format!("gc killed, round {round}"));
    }
    assert_agree_after_gc(&env, "after the killed gcs");
}

#[track_caller]
fn assert_clean_hit_wide(env: &TestEnv, salt: &str, what: &str) {
    let before = env.count();
    let out = memo(env, &salted(salt));
    assert_wide(&out, salt, what);
    assert_eq!(warnings(&out), 0, "{what}: {}", stderr(&out));
    assert_eq!(env.count(), before, "{what}: {salt} ran again");
}

// ---------------------------------------------------------------------------------------
// Damage to packs and tables.

/// Two keys in one shard, their pack and table saved: (salts, pack, pack bytes, table
/// bytes).
/// Salts and keys, in the order stored.
type Salted = Vec<(String, String)>;

fn damage_setup(env: &TestEnv) -> (Salted, PathBuf, Vec<u8>, Vec<u8>) {
    standard_tool(env);
    // Salts of different lengths: records of different lengths.
    let pair = same_shard(env, 2, |salt| {
        salted(&format!("{salt}{}", "x".repeat(salt.len())))
    });
    let pair: Vec<(String, String)> = pair
        .into_iter()
        .map(|(salt, key)| (format!("{salt}{}", "x".repeat(salt.len())), key))
        .collect();
    let pack = pack_of(env, &pair[0].1);
    let bytes = fs::read(&pack).unwrap();
    let table = fs::read(table_of(&pack)).unwrap();
    (pair, pack, bytes, table)
}

/// Runs each key twice: its own output (hit or miss) with at most one warning, then a
/// clean hit.
#[track_caller]
fn assert_recovers(env: &TestEnv, pair: &[(String, String)], what: &str) {
    for (salt, _) in pair {
        let out = memo(env, &salted(salt));
        assert_standard(&out, salt, what);
    }
    for (salt, _) in pair {
        assert_clean_hit(env, salt, &format!("{what}, then"));
    }
}

/// The pack or the table cut at any offset, or garbage appended to either: each key
/// replays its own result or misses, with at most one warning, and is stored again.
#[test]
fn a_pack_or_table_cut_anywhere_or_grown_by_garbage_replays_right_or_misses() {
    let env = TestEnv::new();
    let (pair, pack, bytes, table) = damage_setup(&env);
    let first = entry_of(&env, &pair[0].1);
    let ends = [
        0,
        first.at - 48,
        first.at + first.len as u64,
        bytes.len() as u64,
    ];
    let mut cuts: BTreeSet<u64> = BTreeSet::new();
    for end in ends {
        for d in [0u64, 1, 7, 8, 40, 44, 47, 48, 49, 100] {
            cuts.insert(end.saturating_sub(d).min(bytes.len() as u64));
            cuts.insert((end + d).min(bytes.len() as u64));
        }
    }
    for cut in cuts {
        put_back(&pack, &bytes[..cut as usize], &table);
        assert_recovers(&env, &pair, &format!("pack cut at {cut}"));
    }
    for cut in (0..table.len()).step_by(5).chain([47, 48, 49, 95]) {
        put_back(&pack, &bytes, &table[..cut]);
        assert_recovers(&env, &pair, &format!("table cut at {cut}"));
    }
    let garbage: Vec<u8> = (0..5000u32).map(|i| (i * 7919 % 251) as u8).collect();
    for len in [1, 20, 47, 48, 49, 96, 100, 4096] {
        put_back(&pack, &bytes, &table);
        append(&table_of(&pack), &garbage[..len]);
        assert_recovers(
            &env,
            &pair,
            &format!("{len} bytes of garbage after the table"),
        );
        put_back(&pack, &bytes, &table);
        append(&pack, &garbage[..len]);
        assert_recovers(
            &env,
            &pair,
            &format!("{len} bytes of garbage after the pack"),
        );
        // Both: a torn record and a torn slot, as a kill -9 mid-append might leave.
        put_back(&pack, &bytes, &table);
        append(&pack, &garbage[..len]);
        append(&table_of(&pack), &garbage[..len % 48]);
        assert_recovers(&env, &pair, &format!("{len} torn bytes after both"));
    }
    assert_agree_after_gc(&env, "after the cuts");
}

/// `bytes` with the bits of `mask` flipped in byte `at`.
fn flipped(bytes: &[u8], at: usize, mask: u8) -> Vec<u8> {
    let mut flipped = bytes.to_vec();
    flipped[at] ^= mask;
    flipped
}

/// A byte flipped in a slot, a record header or an entry's body: the key replays its
/// own result or misses, with at most one warning, and is stored again.
#[test]
fn a_flipped_byte_in_a_slot_header_or_body_replays_right_or_misses() {
    let env = TestEnv::new();
    let (pair, pack, bytes, table) = damage_setup(&env);
    let second = entry_of(&env, &pair[1].1);
    for at in (0..table.len())
        .step_by(3)
        .chain([44, 45, 46, 47, 92, 93, 94, 95])
    {
        put_back(&pack, &bytes, &flipped(&table, at, 0x10));
        assert_recovers(&env, &pair, &format!("table byte {at} flipped"));
    }
    let headers = [0u64, second.at - 48];
    let bodies = [
        48u64,
        second.at,
        second.at + second.len as u64 / 2,
        bytes.len() as u64 - 1,
    ];
    for start in headers {
        for at in (start..start + 48).step_by(3).chain([start + 47]) {
            put_back(&pack, &flipped(&bytes, at as usize, 0x01), &table);
            assert_recovers(&env, &pair, &format!("pack byte {at} flipped (a header)"));
        }
    }
    for at in bodies {
        put_back(&pack, &flipped(&bytes, at as usize, 0x01), &table);
        assert_recovers(&env, &pair, &format!("pack byte {at} flipped (a body)"));
    }
    assert_agree_after_gc(&env, "after the flips");
}

/// Slots and records that pass their checks but lie: a slot of B that names A's record,
/// a record headed B that holds A's entry, a slot past any pack, a slot of 4 GiB, slots
/// swapped, a table twice over. B never replays A's result, nothing hangs or crashes,
/// and each key is stored again.
#[test]
fn forged_slots_and_records_never_replay_another_keys_result() {
    let env = TestEnv::new();
    let (pair, pack, bytes, table) = damage_setup(&env);
    let (a, b) = (&pair[0], &pair[1]);
    let entry_a = entry_of(&env, &a.1);
    let a_bytes = entry_a.bytes();
    let a_len = a_bytes.len() as u32;
    let forgeries: Vec<(&str, Vec<u8>, Vec<u8>)> = vec![
        ("B's slot names A's record", bytes.clone(), {
            let mut t = table.clone();
            t.extend(pack_slot(&b.1, entry_a.at - 48, a_len));
            t
        }),
        (
            "a record headed B holds A's entry",
            {
                let mut p = bytes.clone();
                p.extend(pack_header(&b.1, a_len));
                p.extend(&a_bytes);
                p
            },
            {
                let mut t = table.clone();
                t.extend(pack_slot(&b.1, bytes.len() as u64, a_len));
                t
            },
        ),
        ("B's slot past any pack (2^63)", bytes.clone(), {
            let mut t = table.clone();
            t.extend(pack_slot(&b.1, 1 << 63, 100));
            t
        }),
        ("B's slot at 2^64 - 2", bytes.clone(), {
            let mut t = table.clone();
            t.extend(pack_slot(&b.1, u64::MAX - 1, 100));
            t
        }),
        ("B's slot of 4 GiB", bytes.clone(), {
            let mut t = table.clone();
            t.extend(pack_slot(&b.1, 0, u32::MAX));
            t
        }),
        ("A's slot of length 0", bytes.clone(), {
            let mut t = table.clone();
            t.extend(pack_slot(&a.1, entry_a.at - 48, 0));
            t
        }),
        ("the slots swapped", bytes.clone(), {
            let mut t = table[48..96].to_vec();
            t.extend(&table[..48]);
            t
        }),
        ("the table twice over", bytes.clone(), table.repeat(2)),
    ];
    for (what, p, t) in forgeries {
        put_back(&pack, &p, &t);
        let out = memo(&env, &salted(&b.0));
        assert_standard(&out, &b.0, what);
        assert!(
            !stdout(&out).contains(&a.0),
            "{what}: B replayed A's result"
        );
        assert_recovers(&env, &pair, what);
    }
    assert_agree_after_gc(&env, "after the forgeries");
}

// ---------------------------------------------------------------------------------------
// An earlier memo's cache.

/// Moves every entry of the cache into an entry file of its own (`entries/ab/<key>`), as
/// an earlier memo kept them, and removes the packs and the cache's tag (which an
/// earlier memo need not have written).
fn make_earlier_layout(env: &TestEnv) {
    for e in env.entries() {
        let path = env.legacy_entry_path(&e.key);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, e.bytes()).unwrap();
    }
    fs::remove_dir_all(env.cache().join("packs")).unwrap();
    let _ = fs::remove_file(env.cache().join("CACHEDIR.TAG"));
}

/// A cache of the previous layout, with a garbage entry file among its entries: its
/// entries hit, `ls`/`stats`/`gc --dry-run` agree, `gc` moves them into packs (and
/// removes the garbage as corrupt), and they go on hitting.
#[test]
fn an_earlier_memos_cache_keeps_hitting_and_gc_moves_it_into_packs() {
    let env = TestEnv::new();
    standard_tool(&env);
    let salts: Vec<String> = (0..8).map(|i| format!("e{i}")).collect();
    for salt in &salts {
        assert_standard(&memo(&env, &salted(salt)), salt, "store");
    }
    let stored = keys(&env);
    make_earlier_layout(&env);
    // Garbage under a key's name, as a torn write of an earlier memo left it.
    let garbage_key = format!("{}{}", &stored.iter().next().unwrap()[..2], "5".repeat(62));
    let garbage = env.legacy_entry_path(&garbage_key);
    fs::write(&garbage, b"memo-entry 2 0123\n{not json").unwrap();
    for salt in &salts {
        assert_clean_hit(&env, salt, "earlier layout");
    }
    assert_eq!(listed(&env), stored, "ls of the earlier layout");
    let dry = memo(&env, &["gc", "--dry-run"]);
    assert_success(&dry);
    assert!(
        stdout(&dry).contains(&format!("in {} entries", stored.len())),
        "{}",
        stdout(&dry)
    );
    assert!(env
        .legacy_entry_path(stored.iter().next().unwrap())
        .exists());
    let gc = memo(&env, &["gc"]);
    assert_success(&gc);
    assert!(stdout(&gc).contains("corrupt"), "{}", stdout(&gc));
    assert!(
        stdout(&gc).contains(&format!("in {} entries", stored.len())),
        "{}",
        stdout(&gc)
    );
    assert!(!garbage.exists(), "the garbage entry file stayed");
    assert_moved(&env, &stored, &salts, "moved");
}

/// After a gc that moved an earlier memo's entry files into the packs: no entry file is
/// left, the packs hold `stored`, each of `salts` is a clean hit, and the listings agree.
#[track_caller]
fn assert_moved(env: &TestEnv, stored: &BTreeSet<String>, salts: &[String], what: &str) {
    let left = files_under(&env.cache().join("entries"));
    assert!(left.is_empty(), "{what}: entry files left: {left:?}");
    assert_eq!(&keys(env), stored, "{what}: the packs after gc");
    for salt in salts {
        assert_clean_hit(env, salt, what);
    }
    assert_agree_after_gc(env, what);
}

/// An entry file of an earlier memo and a record in a pack for the same key (an earlier
/// memo shares the cache and stored its own): the record wins everywhere, `memo rm`
/// removes the result (the file never comes back, before or after gc), and gc leaves no
/// file behind.
#[test]
fn a_record_wins_over_an_earlier_memos_file_of_the_same_key_and_rm_removes_both() {
    let env = TestEnv::new();
    // Prints how many times it has run: each run's result differs.
    env.tool("echo \"out $(wc -l < count)\"");
    let args = run_tool(&[]);
    let run = |want: &str, ran: bool, what: &str| {
        let before = env.count();
        let out = memo(&env, &args);
        assert_success(&out);
        assert_eq!(
            stdout(&out),
            format!("{want}\n"),
            "{what}: {}",
            stderr(&out)
        );
        assert_eq!(warnings(&out), 0, "{what}: {}", stderr(&out));
        assert_eq!(env.count() > before, ran, "{what}");
    };
    run("out 1", true, "store");
    let key = env.only_key();
    let first = entry_of(&env, &key).bytes();
    let forced = forced(&args);
    assert_success(&memo(&env, &forced));
    let legacy = env.legacy_entry_path(&key);
    fs::create_dir_all(legacy.parent().unwrap()).unwrap();
    fs::write(&legacy, &first).unwrap();
    run("out 2", false, "record and file");
    assert_eq!(listed(&env).len(), 1);
    let show = memo(&env, &["show", &key[..12]]);
    assert_success(&show);
    assert_eq!(env.stats()["entries"].as_u64(), Some(1));
    let rm = memo(&env, &["rm", &key[..12]]);
    assert_success(&rm);
    assert!(listed(&env).is_empty(), "ls after rm");
    let dry = memo(&env, &["gc", "--dry-run"]);
    assert!(stdout(&dry).contains("in 0 entries"), "{}", stdout(&dry));
    assert_success(&memo(&env, &["gc"]));
    assert!(!legacy.exists(), "gc left the earlier memo's file");
    assert!(listed(&env).is_empty(), "ls after gc");
    run("out 3", true, "after rm and gc");
    run("out 3", false, "stored again");
    assert_agree_after_gc(&env, "record and file");
}

/// Garbage in an earlier memo's entry file beside a good record of the same key: the
/// record is what is read (no warning, nothing counted corrupt), and gc removes the file.
#[test]
fn a_garbage_earlier_file_beside_a_good_record_is_never_read_and_goes_with_gc() {
    let env = TestEnv::new();
    standard_tool(&env);
    assert_standard(&memo(&env, &salted("g")), "g", "store");
    let key = env.only_key();
    let legacy = env.legacy_entry_path(&key);
    fs::create_dir_all(legacy.parent().unwrap()).unwrap();
    fs::write(&legacy, b"memo-entry 2 garbage\n\xff\xfe").unwrap();
    assert_clean_hit(&env, "g", "beside the garbage file");
    assert_eq!(listed(&env).len(), 1);
    assert_success(&memo(&env, &["show", &key[..12]]));
    let gc = memo(&env, &["gc"]);
    assert_success(&gc);
    assert!(!legacy.exists(), "gc kept the garbage file");
    assert_eq!(env.stats()["corrupt"].as_u64(), Some(0), "{}", stdout(&gc));
    assert_clean_hit(&env, "g", "after gc");
    assert_agree_after_gc(&env, "garbage file");
}

// ---------------------------------------------------------------------------------------
// Full disks and files memo may not change.

/// A full disk while memo appends a record (the cache on a small tmpfs, filled to
/// various degrees): the command's output passes through whole with at most one warning,
/// no pack keeps a torn record or a slot without one, and once there is room again
/// everything is stored and replays.
#[test]
fn a_full_disk_while_appending_leaves_no_torn_record() {
    let env = TestEnv::new();
    env.tool(
        "echo \"$1\" >> runs; if [ \"$1\" = small ]; then echo small; exit 0; fi; \
         head -c 15000 /dev/zero | tr '\\0' '\\377'; head -c 15000 /dev/zero | tr '\\0' e >&2; exit 3",
    );
    let mount = env.root.path().join("small");
    let script = r#"
export MEMO_DIR="$0/cache"
"$1" run -- ./tool small > small.out 2> small.err || exit 98
for keep in 0 4 8 12 16 20 24 28 32 36 40 48 56 64; do
  rm -f "$0/fill"
  dd if=/dev/zero of="$0/fill" bs=4096 2>/dev/null
  truncate -s -${keep}K "$0/fill"
  "$1" run --cache-failures -- ./tool "big$keep" > "big$keep.out" 2> "big$keep.err"
  echo $? > "big$keep.code"
done
cp -a "$0/cache" ../full
rm -f "$0/fill"
for keep in 0 4 8 12 16 20 24 28 32 36 40 48 56 64; do
  "$1" run --cache-failures -- ./tool "big$keep" > "again$keep.out" 2> /dev/null
  "$1" run --cache-failures -v -- ./tool "big$keep" > /dev/null 2> "hit$keep.err"
done
"$1" run -- ./tool small > small2.out 2> /dev/null
cp -a "$0/cache" ../after
"#;
    let Some(out) = mounted(tmpfs_command(&env, &mount, "size=2m", script)) else {
        return;
    };
    assert_success(&out);
    let keeps = [0, 4, 8, 12, 16, 20, 24, 28, 32, 36, 40, 48, 56, 64];
    let mut failed_stores = 0;
    for keep in keeps {
        let code = String::from_utf8(env.read(&format!("big{keep}.code"))).unwrap();
        assert_eq!(code.trim(), "3", "keep {keep}");
        assert!(
            env.read(&format!("big{keep}.out")) == vec![0xffu8; 15000],
            "keep {keep}: stdout"
        );
        let err = String::from_utf8_lossy(&env.read(&format!("big{keep}.err"))).into_owned();
        assert!(err.starts_with(&"e".repeat(15000)), "keep {keep}: stderr");
        assert!(
            err.matches("memo: warning").count() <= 1,
            "keep {keep}: {err}"
        );
        // The store that failed failed at the append of its record.
        failed_stores += usize::from(err.contains("cache/packs: No space left"));
        assert!(
            env.read(&format!("again{keep}.out")) == vec![0xffu8; 15000],
            "keep {keep}: again"
        );
        let hit = String::from_utf8_lossy(&env.read(&format!("hit{keep}.err"))).into_owned();
        assert!(
            hit.contains("memo: hit"),
            "keep {keep}: not stored once there was room: {hit}"
        );
    }
    assert!(
        failed_stores > 0,
        "the disk was never full enough to fail an append"
    );
    assert_eq!(
        String::from_utf8(env.read("small2.out")).unwrap(),
        "small\n"
    );
    let runs = String::from_utf8(env.read("runs")).unwrap();
    assert_eq!(runs.lines().filter(|l| *l == "small").count(), 1, "{runs}");
    // Every pack is exactly its records: nothing torn, nothing unnamed.
    for snapshot in ["full", "after"] {
        let packs = env.root.path().join(snapshot).join("packs");
        for table in files_under(&packs)
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "idx"))
        {
            let slots = fs::read(&table).unwrap();
            assert_eq!(slots.len() % 48, 0, "{snapshot}: {}", table.display());
            let named: u64 = slots
                .chunks_exact(48)
                .map(|s| 48 + u64::from(u32::from_le_bytes(s[40..44].try_into().unwrap())))
                .sum();
            let pack = table.with_extension("");
            let len = fs::metadata(&pack).map_or(0, |m| m.len());
            assert_eq!(
                len,
                named,
                "{snapshot}: {} holds more than its records",
                pack.display()
            );
        }
    }
}

/// A table that is immutable (`chattr +i`): a store into its pack fails with one
/// warning and the command's output untouched, the record it appended is cut off again,
/// and the entries there go on hitting.
#[test]
fn an_immutable_table_fails_a_store_cleanly_and_keeps_its_entries() {
    let env = TestEnv::new();
    standard_tool(&env);
    let pair = same_shard(&env, 2, salted);
    let pack = pack_of(&env, &pair[0].1);
    let pack_len = fs::metadata(&pack).unwrap().len();
    let Some(attr) = Attr::set(&table_of(&pack), "i") else {
        return;
    };
    let forced = forced(&salted(&pair[0].0));
    let out = memo(&env, &forced);
    assert_standard(&out, &pair[0].0, "--force into an immutable table");
    assert_eq!(warnings(&out), 1, "{}", stderr(&out));
    assert_eq!(
        fs::metadata(&pack).unwrap().len(),
        pack_len,
        "the record of the failed store stayed in the pack"
    );
    for (salt, _) in &pair {
        assert_clean_hit(&env, salt, "beside the immutable table");
    }
    drop(attr);
    let out = memo(&env, &forced);
    assert_standard(&out, &pair[0].0, "--force once mutable");
    assert_eq!(warnings(&out), 0, "{}", stderr(&out));
    for (salt, _) in &pair {
        assert_clean_hit(&env, salt, "after");
    }
    assert_agree_after_gc(&env, "immutable table");
}

// ---------------------------------------------------------------------------------------
// Size.

/// A result of 1000 declared files, an entry of 200 kB, rerun until its pack holds
/// megabytes: every hit restores all the files, before and after gc rewrites the pack.
#[test]
fn an_entry_of_a_thousand_files_in_a_pack_of_megabytes_replays_whole() {
    let env = TestEnv::new();
    env.tool(
        "rm -rf d; mkdir d; i=0; while [ $i -lt 1000 ]; do \
         echo \"file $i\" > d/a-rather-long-name-that-makes-the-entry-large-$i; i=$((i+1)); done; echo made",
    );
    let args = run_tool(&["-o", "d"]);
    let forced = forced(&args);
    assert_success(&memo(&env, &args));
    let key = env.only_key();
    let len = entry_of(&env, &key).len;
    assert!(len > 150_000, "the entry is {len} bytes");
    for _ in 0..12 {
        assert_success(&memo(&env, &forced));
    }
    let pack = pack_of(&env, &key);
    assert!(fs::metadata(&pack).unwrap().len() > 2_500_000);
    let check = |what: &str| {
        fs::remove_dir_all(env.path("d")).unwrap();
        let before = env.count();
        let out = memo(&env, &args);
        assert_success(&out);
        assert_eq!(stdout(&out), "made\n", "{what}");
        assert_eq!(warnings(&out), 0, "{what}: {}", stderr(&out));
        assert_eq!(env.count(), before, "{what}: ran again");
        let files = files_under(&env.path("d"));
        assert_eq!(files.len(), 1000, "{what}");
        for i in (0..1000).step_by(37).chain([999]) {
            let name = format!("d/a-rather-long-name-that-makes-the-entry-large-{i}");
            assert_eq!(
                String::from_utf8(env.read(&name)).unwrap(),
                format!("file {i}\n"),
                "{what}"
            );
        }
    };
    check("in a pack of megabytes");
    assert_success(&memo(&env, &["show", &key[..12]]));
    assert_agree_after_gc(&env, "big");
    assert!(
        fs::metadata(&pack).unwrap().len() < 2 * len as u64,
        "gc did not drop the dead records"
    );
    check("after gc");
}

/// A pack past 64 MiB (read one record at a time by a rewrite), with a live record
/// beyond that mark: both keys replay, before and after gc rewrites it.
#[test]
fn records_past_64_mib_in_a_pack_survive_its_rewrite() {
    let env = TestEnv::new();
    standard_tool(&env);
    let pair = same_shard(&env, 2, salted);
    let pack = pack_of(&env, &pair[0].1);
    assert_success(&memo(&env, &["rm", &pair[1].1[..12]]));
    fs::OpenOptions::new()
        .write(true)
        .open(&pack)
        .unwrap()
        .set_len(65 << 20)
        .unwrap();
    assert_standard(
        &memo(&env, &salted(&pair[1].0)),
        &pair[1].0,
        "stored past 64 MiB",
    );
    assert!(entry_of(&env, &pair[1].1).at > 65 << 20);
    for (salt, _) in &pair {
        assert_clean_hit(&env, salt, "in the giant pack");
    }
    assert_agree_after_gc(&env, "giant pack");
    assert!(
        fs::metadata(&pack).unwrap().len() < 1 << 20,
        "gc kept the giant"
    );
    for (salt, _) in &pair {
        assert_clean_hit(&env, salt, "after the rewrite");
    }
}

/// 2000 keys in one shard (copies of a real entry under keys of its shard): `ls`,
/// `stats`, `gc --dry-run` and `gc --max-size` agree on them, `rm` removes exactly what
/// it names, and the real key goes on hitting.
#[test]
fn thousands_of_keys_in_one_shard_are_listed_counted_and_evicted_consistently() {
    let env = TestEnv::new();
    standard_tool(&env);
    assert_standard(&memo(&env, &salted("real")), "real", "store");
    for _ in 0..10 {
        assert_clean_hit(&env, "real", "before");
    }
    let real = env.only_key();
    let bytes = entry_of(&env, &real).bytes();
    let mut planted = Vec::new();
    for i in 0..2000u32 {
        let digest = <sha2::Sha256 as sha2::Digest>::digest(i.to_le_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        let key = format!("{}{}", &real[..2], &hex[..62]);
        write_entry(&env.cache(), &key, &bytes);
        planted.push(key);
    }
    assert_eq!(listed(&env).len(), 2001);
    assert_clean_hit(&env, "real", "among 2000");
    assert_agree_after_gc(&env, "2001 entries");
    // rm of ten of them.
    for key in &planted[..10] {
        assert_success(&memo(&env, &["rm", &key[..16]]));
    }
    assert_eq!(listed(&env).len(), 1991);
    assert_agree_after_gc(&env, "after rm");
    // An eviction down to about half.
    let limit = (bytes.len() + 100) * 1000;
    let dry = memo(&env, &["gc", "--dry-run", "--max-size", &limit.to_string()]);
    assert_success(&dry);
    let gc = memo(&env, &["gc", "--max-size", &limit.to_string()]);
    assert_success(&gc);
    let last = |out: &Output| stdout(out).lines().last().unwrap_or_default().to_string();
    let left = keys(&env).len();
    assert!(left < 1500 && left > 100, "{left} left: {}", last(&gc));
    assert!(
        last(&dry).contains(&format!("in {left} entries")),
        "dry run {:?}, real {:?}",
        last(&dry),
        last(&gc)
    );
    assert!(
        keys(&env).contains(&real),
        "the real, often-hit result was evicted"
    );
    assert_clean_hit(&env, "real", "after eviction");
    assert_agree_after_gc(&env, "after eviction");
}

// ---------------------------------------------------------------------------------------
// More: gc moving entries while they are hit, a full disk under gc, an immutable packs/.

/// gc moving an earlier memo's entry files into packs while those results are hit: each
/// run prints its own output (a hit, or a plain miss), with no warning, and afterwards
/// every result is in a pack and hits.
#[test]
fn gc_moving_an_earlier_memos_entries_while_they_are_hit_loses_nothing() {
    let env = TestEnv::new();
    standard_tool(&env);
    let salts: Vec<String> = (0..40).map(|i| format!("m{i}")).collect();
    for salt in &salts {
        assert_standard(&memo(&env, &salted(salt)), salt, "store");
    }
    let stored = keys(&env);
    make_earlier_layout(&env);
    std::thread::scope(|scope| {
        let gc = scope.spawn(|| {
            for _ in 0..3 {
                assert_success(&memo(&env, &["gc"]));
            }
        });
        for w in 0..2 {
            let (env, salts) = (&env, &salts);
            scope.spawn(move || {
                for round in 0..2 {
                    for salt in salts.iter().skip(w).step_by(2) {
                        let out = memo(env, &salted(salt));
                        assert_standard(&out, salt, &format!("round {round}"));
                        assert_eq!(warnings(&out), 0, "{salt}: {}", stderr(&out));
                    }
                }
            });
        }
        gc.join().unwrap();
    });
    assert_success(&memo(&env, &["gc"]));
    assert_moved(&env, &stored, &salts, "moved while hit");
}

/// A full disk while gc rewrites a pack (its new files cannot be written in tmp/):
/// the pack and its table stay as they were, every result hits, and the next gc, with
/// room again, does the rewrite.
#[test]
fn a_full_disk_under_gcs_rewrite_keeps_the_pack_readable() {
    let env = TestEnv::new();
    env.tool("echo \"$1\" >> runs; yes \"$1\" | head -c 15000; exit 3");
    let mount = env.root.path().join("small");
    let script = r#"
export MEMO_DIR="$0/cache"
for i in 1 2 3 4 5 6 7; do "$1" run --force --cache-failures -- ./tool a > store.out 2> store.err; done
"$1" run --cache-failures -- ./tool b > store.out 2> store.err
cat "$0"/cache/packs/* | wc -c > size0
dd if=/dev/zero of="$0/fill" bs=4096 2>/dev/null
"$1" gc > gc.out 2> gc.err
cat "$0"/cache/packs/* | wc -c > size1
for s in a b; do "$1" run -v --cache-failures -- ./tool $s > $s.out 2> $s.err; done
rm -f "$0/fill"
"$1" gc > gc2.out 2> gc2.err
cat "$0"/cache/packs/* | wc -c > size2
for s in a b; do "$1" run -v --cache-failures -- ./tool $s > $s.2.out 2> $s.2.err; done
exit 0
"#;
    let Some(out) = mounted(tmpfs_command(&env, &mount, "size=1m", script)) else {
        return;
    };
    assert_success(&out);
    let text = |rel: &str| String::from_utf8_lossy(&env.read(rel)).into_owned();
    assert!(!text("gc.err").contains("panicked"), "{}", text("gc.err"));
    for s in ["a", "b"] {
        for run in [s.to_string(), format!("{s}.2")] {
            assert!(
                env.read(&format!("{run}.out")) == wide_output(s),
                "{run}: wrong stdout; {}",
                text(&format!("{run}.err"))
            );
            let err = text(&format!("{run}.err"));
            assert!(err.contains("memo: hit"), "{run}: {err}");
            assert!(!err.contains("damaged"), "{run}: {err}");
            assert!(err.matches("memo: warning").count() <= 1, "{run}: {err}");
        }
    }
    let runs = text("runs");
    assert_eq!(runs.lines().filter(|l| *l == "a").count(), 7, "{runs}");
    assert_eq!(runs.lines().filter(|l| *l == "b").count(), 1, "{runs}");
    let size = |rel: &str| text(rel).trim().parse::<u64>().unwrap();
    assert_eq!(
        size("size1"),
        size("size0"),
        "the packs changed on a full disk"
    );
    assert!(
        size("size2") < size("size0") / 2,
        "no rewrite with room again: {} {}",
        text("gc2.out"),
        text("gc2.err")
    );
}

/// `packs/` made immutable: stores into an existing pack still work, a store that needs
/// a new pack fails with one warning and the output untouched, gc cannot rewrite a pack
/// there and leaves it readable; once mutable again, all is well.
#[test]
fn an_immutable_packs_directory_never_breaks_a_run_or_a_pack() {
    let env = TestEnv::new();
    wide_tool(&env);
    let forced = forced(&salted("a"));
    assert_wide(&memo(&env, &salted("a")), "a", "store");
    for _ in 0..6 {
        assert_wide(&memo(&env, &forced), "a", "--force");
    }
    let Some(attr) = Attr::set(&env.cache().join("packs"), "i") else {
        return;
    };
    let gc = memo(&env, &["gc"]);
    assert!(!stderr(&gc).contains("panicked"), "{}", stderr(&gc));
    assert_clean_hit_wide(&env, "a", "after gc under an immutable packs/");
    let out = memo(&env, &forced);
    assert_wide(&out, "a", "--force into the existing pack");
    assert_eq!(warnings(&out), 0, "{}", stderr(&out));
    assert_clean_hit_wide(&env, "a", "stored into the existing pack");
    // Keys of other shards: no pack can be made for them.
    for salt in ["b", "c", "d"] {
        let out = memo(&env, &salted(salt));
        assert_wide(&out, salt, "a new shard under an immutable packs/");
    }
    drop(attr);
    assert_agree_after_gc(&env, "mutable again");
    for salt in ["a", "b", "c", "d"] {
        assert_wide(&memo(&env, &salted(salt)), salt, "mutable again");
        assert_clean_hit_wide(&env, salt, "mutable again, stored");
    }
}

// ---------------------------------------------------------------------------------------
// Windows held open with strace: a system call of memo delayed (`strace -e inject=…`),
// so that a racing clear, gc or run lands exactly inside it.

/// Whether strace can run and delay system calls here; says why not on stderr.
fn strace_works() -> bool {
    let works = Command::new("strace")
        .args(["-f", "-qq", "-o", "/dev/null", "-e", "trace=write"])
        .args(["-e", "inject=write:delay_exit=1:when=1000", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !works {
        eprintln!("skipped: strace cannot delay system calls here");
    }
    works
}

/// `memo ARGS` under strace, with the system calls `syscalls` (`read`,
/// `rename,renameat`) on `path` delayed as `inject` says (`delay_exit=1500000:when=1`):
/// same directory and environment as `env.memo`.
fn straced(env: &TestEnv, path: &Path, syscalls: &str, inject: &str, args: &[String]) -> Command {
    let plain = env.memo(args);
    let mut cmd = Command::new("strace");
    cmd.args(["-f", "-qq", "-o", "/dev/null", "-P"])
        .arg(path)
        .arg("-e")
        .arg(format!("trace={syscalls}"))
        .arg("-e")
        .arg(format!("inject={syscalls}:{inject}"))
        .arg(MEMO)
        .args(args)
        .current_dir(env.work())
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, value) in plain.get_envs() {
        if let Some(value) = value {
            cmd.env(name, value);
        }
    }
    cmd
}

/// The processes of this test's memo (its cache in their environment) whose arguments
/// include `word`: found in /proc, since under strace memo is not a child of the test.
fn memo_processes(env: &TestEnv, word: &str) -> Vec<u32> {
    let cache = format!("MEMO_DIR={}", env.cache().display());
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|p| p.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let read = |what: &str| fs::read(format!("/proc/{pid}/{what}")).unwrap_or_default();
            let (cmdline, environ) = (read("cmdline"), read("environ"));
            let mut args = cmdline.split(|&b| b == 0);
            args.next() == Some(MEMO.as_bytes())
                && args.any(|a| a == word.as_bytes())
                && environ.split(|&b| b == 0).any(|v| v == cache.as_bytes())
        })
        .collect()
}

/// The one memo of this test running with `word` among its arguments, once it runs.
fn the_memo(env: &TestEnv, word: &str) -> u32 {
    let mut found = Vec::new();
    env.eventually(&format!("memo {word} starts"), || {
        found = memo_processes(env, word);
        !found.is_empty()
    });
    assert_eq!(found.len(), 1, "{found:?}");
    found[0]
}

/// Whether some process has `path` open.
fn open_anywhere(path: &Path) -> bool {
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|p| {
            p.file_name()
                .to_str()
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .any(|p| {
            fs::read_dir(p.path().join("fd"))
                .into_iter()
                .flatten()
                .flatten()
                .any(|fd| fs::read_link(fd.path()).is_ok_and(|target| target == path))
        })
}

fn ino(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path).map_or(0, |m| m.ino())
}

/// A `--force` store that has written its record into the pack when `memo clear`
/// renames packs/ away, and then appends its slot: the slot must not land in the fresh
/// packs/ naming a record that is not there, for the next run to find "damaged".
// Seen: the fresh packs/ holds ab.idx with the slot and no pack; the next run warns
// "cache entry … is unusable (its record is damaged)" and counts it corrupt.
// `Packs::append` writes the record into the pack it locked (now in the trash) and the
// slot into the table at `table_path`, resolved again (the new packs/).
#[test]
fn a_store_racing_clear_leaves_no_slot_without_its_record() {
    if !strace_works() {
        return;
    }
    let env = TestEnv::new();
    env.tool("echo out; touch done");
    assert_success(&memo(&env, &run_tool(&[])));
    let pack = pack_of(&env, &env.only_key());
    let stored = fs::metadata(&pack).unwrap().len();
    fs::remove_file(env.path("done")).unwrap();
    let forced = run_tool(&["--force"]);
    // The record's write returns 1.5 s late: the lock is held, the pack checked.
    let store = straced(&env, &pack, "write", "delay_exit=1500000:when=1", &forced)
        .spawn()
        .unwrap();
    env.eventually("the record is written", || {
        fs::metadata(&pack).map_or(0, |m| m.len()) > stored
    });
    assert_success(&memo(&env, &["clear"]));
    let out = store.wait_with_output().unwrap();
    assert_success(&out);
    assert_eq!(stdout(&out), "out\n");
    let out = memo(&env, &run_tool(&["-v"]));
    assert_success(&out);
    assert_eq!(stdout(&out), "out\n");
    assert_eq!(warnings(&out), 0, "{}", stderr(&out));
    assert_eq!(env.stats()["corrupt"].as_u64(), Some(0));
}

/// gc moving an earlier memo's entry file into a pack while `--force` stores a new
/// result for that key: the forced result must stay what is replayed, not the older one
/// gc read from the file before.
// Seen: the hit after gc prints "out 1", the result from before `--force`: gc checked
// that no slot names the key, read the file, and appended its bytes after the forced
// record (`migrate_entry_files`: the check and the append are not under one lock).
#[test]
fn gc_moving_an_earlier_file_never_replaces_a_newer_forced_result() {
    if !strace_works() {
        return;
    }
    let env = TestEnv::new();
    env.tool("echo \"out $(wc -l < count)\"");
    assert_success(&memo(&env, &run_tool(&[])));
    let key = env.only_key();
    let legacy = env.legacy_entry_path(&key);
    fs::create_dir_all(legacy.parent().unwrap()).unwrap();
    fs::write(&legacy, entry_of(&env, &key).bytes()).unwrap();
    fs::remove_dir_all(env.cache().join("packs")).unwrap();
    let out = memo(&env, &run_tool(&[]));
    assert_eq!(stdout(&out), "out 1\n", "the earlier memo's file is read");
    // gc's open of the file returns 1.5 s late: it has checked that no slot names the key.
    let gc_args = vec!["gc".to_string()];
    let gc = straced(
        &env,
        &legacy,
        "openat",
        "delay_exit=1500000:when=1",
        &gc_args,
    )
    .spawn()
    .unwrap();
    env.eventually("gc opens the file", || open_anywhere(&legacy));
    let forced = memo(&env, &run_tool(&["--force"]));
    assert_eq!(stdout(&forced), "out 2\n");
    assert_success(&gc.wait_with_output().unwrap());
    let out = memo(&env, &run_tool(&[]));
    assert_success(&out);
    assert_eq!(
        stdout(&out),
        "out 2\n",
        "the forced result was replaced by the older one"
    );
    assert_eq!(env.count(), 2);
}

/// gc between its two renames (the new pack in place, the table's rename held 2 s):
/// hits wait for it and replay right, a store waits and lands in the new pack. Then gc
/// killed with -9 exactly there: misses at worst, never a wrong replay, and all heals.
#[test]
fn the_window_between_gcs_two_renames_holds() {
    if !strace_works() {
        return;
    }
    let env = TestEnv::new();
    wide_tool(&env);
    let pair = same_shard(&env, 2, salted);
    let (a, b) = (&pair[0], &pair[1]);
    let pack = pack_of(&env, &a.1);
    let table = table_of(&pack);
    let force = |salt: &str| {
        let args = forced(&salted(salt));
        memo(&env, &args)
    };
    let gc_args = vec!["gc".to_string()];
    for crash in [false, true] {
        for _ in 0..6 {
            assert_wide(&force(&a.0), &a.0, "--force");
        }
        let before = ino(&pack);
        let renames = "renameat,renameat2";
        // The table's rename is held: it comes second.
        let mut gc = straced(&env, &table, renames, "delay_enter=2000000", &gc_args)
            .spawn()
            .unwrap();
        let gc_pid = the_memo(&env, "gc");
        env.eventually("gc renames the new pack in", || ino(&pack) != before);
        assert!(
            gc.try_wait().unwrap().is_none(),
            "the rename of the table was not held"
        );
        if crash {
            sigkill(gc_pid);
            gc.wait().unwrap();
            for (salt, _) in &pair {
                assert_wide(&memo(&env, &salted(salt)), salt, "after gc was killed");
            }
            for (salt, _) in &pair {
                assert_clean_hit_wide(&env, salt, "after gc was killed, again");
            }
        } else {
            let count = env.count();
            std::thread::scope(|scope| {
                let runs: Vec<_> = [a, b, a]
                    .into_iter()
                    .map(|(salt, _)| {
                        let env = &env;
                        scope.spawn(move || (salt, memo(env, &salted(salt))))
                    })
                    .collect();
                let forced = scope.spawn(|| force(&b.0));
                for run in runs {
                    let (salt, out) = run.join().unwrap();
                    assert_wide(&out, salt, "a hit inside gc's window");
                    assert_eq!(warnings(&out), 0, "{}", stderr(&out));
                }
                assert_wide(&forced.join().unwrap(), &b.0, "--force inside gc's window");
            });
            assert_eq!(env.count(), count + 1, "a hit ran the command");
            assert_success(&gc.wait_with_output().unwrap());
            for (salt, _) in &pair {
                assert_clean_hit_wide(&env, salt, "after gc");
            }
        }
        assert_agree_after_gc(&env, if crash { "killed" } else { "window" });
    }
}

/// A hit that read the table before gc rewrote the pack, and opens the pack after: its
/// slot does not match the new pack; it must go round again and replay right.
#[test]
fn a_hit_holding_a_table_read_before_gcs_rewrite_replays_right() {
    if !strace_works() {
        return;
    }
    let env = TestEnv::new();
    wide_tool(&env);
    let pair = same_shard(&env, 2, salted);
    let (a, b) = (&pair[0], &pair[1]);
    let pack = pack_of(&env, &a.1);
    let table = table_of(&pack);
    for _ in 0..6 {
        let args = forced(&salted(&a.0));
        assert_wide(&memo(&env, &args), &a.0, "--force");
    }
    let old_at = entry_of(&env, &b.1).at;
    let count = env.count();
    // The hit's first read of the table (a lookup reads it from its end with pread64)
    // returns 1.5 s late, with the old slots.
    let hit = straced(
        &env,
        &table,
        "read,pread64",
        "delay_exit=1500000:when=1",
        &salted(&b.0),
    )
    .spawn()
    .unwrap();
    env.eventually("the hit reads the table", || open_anywhere(&table));
    std::thread::sleep(Duration::from_millis(100));
    assert_success(&memo(&env, &["gc"]));
    assert_ne!(
        entry_of(&env, &b.1).at,
        old_at,
        "gc did not move the record"
    );
    let out = hit.wait_with_output().unwrap();
    assert_wide(&out, &b.0, "the hit across the rewrite");
    assert_eq!(warnings(&out), 0, "{}", stderr(&out));
    assert_eq!(env.count(), count, "the hit ran the command");
    assert_agree_after_gc(&env, "hit across the rewrite");
}

/// A process that holds a pack's lock and never lets go (stopped, stuck, or a hostile
/// `flock`): a hit of that shard reads without the lock and replays at once; a store
/// into it gives up after a few seconds with one warning, the command's output and exit
/// code passed through; memo never waits for the holder.
#[test]
fn a_pack_held_locked_for_good_never_holds_a_hit_or_a_store() {
    let env = TestEnv::new();
    standard_tool(&env);
    let out = memo(&env, &salted("a"));
    assert_standard(&out, "a", "first run");
    let key = keys(&env).into_iter().next().unwrap();
    let pack = pack_of(&env, &key);
    let mut holder = Command::new("flock")
        .arg("-x")
        .arg(&pack)
        .args(["sleep", "120"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    // Held once flock has run sleep: a try-lock from here fails.
    let held = (0..500).any(|_| {
        std::thread::sleep(Duration::from_millis(10));
        let file = fs::File::open(&pack).unwrap();
        // SAFETY: flock on an open descriptor.
        unsafe {
            libc::flock(
                std::os::fd::AsRawFd::as_raw_fd(&file),
                libc::LOCK_EX | libc::LOCK_NB,
            ) != 0
        }
    });
    assert!(held, "flock never took the pack's lock");
    assert_clean_hit(&env, "a", "a hit beside the held lock");
    // A store into the held pack: --force reruns and stores again.
    let before = env.count();
    let started = std::time::Instant::now();
    let forced = forced(&salted("a"));
    let out = memo(&env, &forced);
    assert_standard(&out, "a", "a store into the held pack");
    assert_eq!(env.count(), before + 1, "the command ran");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "memo waited for the holder: {:?}",
        started.elapsed()
    );
    assert!(
        stderr(&out).contains("stayed locked"),
        "one warning naming the lock: {}",
        stderr(&out)
    );
    sigkill(holder.id());
    let _ = holder.wait();
    // The earlier record is still the key's entry.
    assert_clean_hit(&env, "a", "a hit once the holder is gone");
}

//! Hostile review of the flight kept in `locks/keys` (commit c11f31e): the flight is an
//! OFD lock on byte 2^61 + key byte of `locks/keys`, held through a description the
//! command inherits, and the note of a run is a 256-byte slot of the first MiB there,
//! found in a window of 8 slots from (key byte % 4089). These tests kill memo with -9 at
//! various moments, leave processes behind in every way a command can, make note windows
//! collide and fill, and tamper with `locks/keys`, then check that two copies of one
//! command never run at once and that nothing is left behind.

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

const SLOTS: u64 = 4096;
const PROBES: u64 = 8;
const SLOT_BYTES: u64 = 256;
const SLOT_BASE: u64 = 1 << 62;

fn sigkill(pid: u32) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
}

/// Kills, when dropped, every pid listed (one a line) in the given files and the
/// children given: whatever a test leaves running, however it ends.
struct Cleanup {
    files: Vec<std::path::PathBuf>,
    children: Vec<Child>,
}

impl Cleanup {
    fn new(env: &TestEnv) -> Cleanup {
        Cleanup {
            files: vec![env.path("leftover.pids")],
            children: Vec::new(),
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for file in &self.files {
            for pid in fs::read_to_string(file).unwrap_or_default().lines() {
                if let Ok(pid) = pid.trim().parse() {
                    sigkill(pid);
                }
            }
        }
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The key byte and the first note slot of the window of the key `hex`.
fn window_start(hex: &str) -> u64 {
    let byte = (u64::from_str_radix(&hex[..16], 16).unwrap() >> 3).max(1);
    byte % (SLOTS - PROBES + 1)
}

fn entry_keys(env: &TestEnv) -> Vec<String> {
    env.entries().iter().map(|e| e.key.clone()).collect()
}

fn names_in_locks(env: &TestEnv) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(env.cache().join("locks"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Whether every note slot of `locks/keys` is clear (all zero, or past the end).
fn notes_all_clear(env: &TestEnv) -> bool {
    let data = fs::read(env.cache().join("locks").join("keys")).unwrap_or_default();
    let notes = &data[..data.len().min((SLOTS * SLOT_BYTES) as usize)];
    notes.iter().all(|b| *b == 0)
}

/// Whether `locks/keys` holds a note of the key `hex`.
fn notes_of(env: &TestEnv, hex: &str) -> bool {
    let data = fs::read(env.cache().join("locks").join("keys")).unwrap_or_default();
    data.chunks(SLOT_BYTES as usize)
        .take(SLOTS as usize)
        .any(|slot| slot.starts_with(hex.as_bytes()))
}

/// The tool of these tests: `./tool TAG` logs `start TAG PID`, then, if `spawn-TAG`
/// exists, runs `leftover.py TAG KIND` (KIND read from that file), which starts a
/// leftover and sleeps; with `long-TAG`, sleeps that many seconds with a background
/// child; then prints TAG.
fn leftover_tool(env: &TestEnv) {
    env.tool(
        "echo \"start $1 $$\" >> log; echo $PPID > memo-$1.pid\n\
         if [ -e spawn-$1 ]; then exec python3 leftover.py $1 \"$(cat spawn-$1)\"; fi\n\
         if [ -e long-$1 ]; then sleep \"$(cat long-$1)\" & wait; fi\n\
         echo $1",
    );
    // The leftover logs `tick TAG PID` every 50 ms for 5 s, writing nothing to its
    // stdout (which would end it with SIGPIPE once memo is gone) but keeping it open.
    // Popen closes every descriptor above 2 (close_fds): the flight's among them.
    env.write(
        "leftover.py",
        "import os, subprocess, sys, time\n\
         tag, kind = sys.argv[1], sys.argv[2].strip()\n\
         body = 'echo $$ >> leftover.pids; i=0; while [ $i -lt 100 ]; do ' \\\n\
             'echo \"tick %s $$\" >> log; sleep 0.05; i=$((i+1)); done' % tag\n\
         if kind == 'nohup': body = \"trap '' HUP; \" + body\n\
         kw = {}\n\
         if kind in ('session', 'daemon'): kw['start_new_session'] = True\n\
         if kind in ('devnull', 'daemon'):\n\
         \x20   kw.update(stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n\
         if kind == 'keepfds': kw['close_fds'] = False\n\
         subprocess.Popen(['sh', '-c', body], **kw)\n\
         open('spawned-' + tag, 'w').close()\n\
         time.sleep(30)\n",
    );
}

/// `./alive PID`: whether PID is a live process (a zombie, killed but not yet
/// collected, is not: `kill -0` would say it is).
fn alive_script(env: &TestEnv) {
    env.script(
        "alive",
        "s=$(sed 's/.*) //' /proc/$1/stat 2>/dev/null | cut -c1)\n\
         [ -n \"$s\" ] && [ \"$s\" != Z ] && [ \"$s\" != X ]\n",
    );
}

fn run_tag(tag: &str) -> Vec<String> {
    ["run", "--force", "--", "./tool", tag]
        .map(String::from)
        .to_vec()
}

/// Starts `./tool TAG` under memo with a leftover of `kind`, waits until the leftover
/// runs, and kills memo alone with -9.
fn kill_a_run_leaving(env: &TestEnv, tag: &str, kind: &str, cleanup: &mut Cleanup) {
    env.write(&format!("spawn-{tag}"), kind);
    let _ = fs::remove_file(env.path(&format!("spawned-{tag}")));
    let mut holder = env.spawn_piped(run_tag(tag));
    env.wait_for_file(&format!("spawned-{tag}"));
    // The leftover has logged its pid.
    env.eventually("the leftover runs", || {
        fs::read_to_string(env.path("log")).is_ok_and(|l| l.contains(&format!("tick {tag} ")))
    });
    sigkill(holder.id());
    holder.wait().unwrap();
    fs::remove_file(env.path(&format!("spawn-{tag}"))).unwrap();
    cleanup.files.push(env.path("leftover.pids"));
}

/// Runs `./tool TAG` to the end and returns the ticks of TAG the log got after that
/// run's start (a leftover still running beside the new copy), waiting 300 ms more.
fn ticks_after_next_run(env: &TestEnv, tag: &str) -> Vec<String> {
    let out = env.run(run_tag(tag));
    assert_success(&out);
    assert_eq!(stdout(&out), format!("{tag}\n"));
    std::thread::sleep(Duration::from_millis(300));
    let log = fs::read_to_string(env.path("log")).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    let start = lines
        .iter()
        .rposition(|l| l.starts_with(&format!("start {tag} ")))
        .unwrap();
    lines[start + 1..]
        .iter()
        .filter(|l| l.starts_with(&format!("tick {tag} ")))
        .map(|l| l.to_string())
        .collect()
}

// ---------------------------------------------------------------------------------------
// (1) kill -9 at any moment: never two copies at once.

#[test]
fn kill_9_of_memo_at_any_moment_never_lets_two_copies_run_at_once() {
    let env = TestEnv::new();
    let _cleanup = Cleanup::new(&env);
    // A background subshell (the same $$) logs ticks for 0.6 s, then the shell ends.
    env.tool(
        "echo \"start $$\" >> log; \
         ( i=0; while [ $i -lt 12 ]; do echo \"tick $$\" >> log; sleep 0.05; i=$((i+1)); done ) & \
         wait; echo \"end $$\" >> log; echo done",
    );
    let args = run_tool(&["--force"]);
    for delay_ms in [0u64, 5, 20, 60, 150, 400] {
        let _ = fs::remove_file(env.path("log"));
        let mut holder = env.spawn_piped(&args);
        std::thread::sleep(Duration::from_millis(delay_ms));
        sigkill(holder.id());
        holder.wait().unwrap();
        let out = env.run(&args);
        assert_success(&out);
        assert_eq!(stdout(&out), "done\n");
        std::thread::sleep(Duration::from_millis(150));
        let log = fs::read_to_string(env.path("log")).unwrap();
        let lines: Vec<&str> = log.lines().collect();
        let start = lines.iter().rposition(|l| l.starts_with("start ")).unwrap();
        let me = lines[start].strip_prefix("start ").unwrap();
        for line in &lines[start..] {
            assert!(
                line.ends_with(&format!(" {me}")),
                "killed at {delay_ms} ms: another copy ran beside {me}:\n{log}"
            );
        }
        assert!(log.ends_with(&format!("end {me}\n")), "{log}");
    }
    assert_eq!(names_in_locks(&env), ["keys"]);
    assert!(notes_all_clear(&env));
}

/// A waiter blocked on the key while memo is killed repeatedly: at most one copy of
/// the command is ever inside its critical section.
#[test]
fn many_waiters_and_repeated_kills_never_overlap_two_copies() {
    let env = TestEnv::new();
    let _cleanup = Cleanup::new(&env);
    // `inside` is a directory: mkdir fails if another copy is inside. A killed copy
    // leaves it behind, so each copy removes a stale one whose owner is gone. The work
    // is done by a child (`crit`) that outlives the tool's shell.
    alive_script(&env);
    env.script(
        "crit",
        "if ! mkdir inside 2>/dev/null; then \
           o=$(cat inside/pid 2>/dev/null); \
           if [ -n \"$o\" ] && ./alive $o; then echo \"OVERLAP $$ $o\" >> log; fi; \
           rm -rf inside; mkdir inside; fi\n\
         echo $$ > inside/pid; echo $$ >> leftover.pids; sleep 0.4; rm -rf inside\n",
    );
    env.tool("echo \"start $$\" >> log; ./crit & wait; echo done");
    let args = run_tool(&["--force"]);
    let mut all = Vec::new();
    for round in 0..4u64 {
        let holders: Vec<Child> = (0..3).map(|_| env.spawn_piped(&args)).collect();
        std::thread::sleep(Duration::from_millis(100 + 70 * round));
        // Kill one of them (whichever holds the lock, or a waiter).
        sigkill(holders[(round % 3) as usize].id());
        all.extend(holders);
    }
    for child in all {
        let _ = child.wait_with_output();
    }
    let log = fs::read_to_string(env.path("log")).unwrap_or_default();
    assert!(!log.contains("OVERLAP"), "two copies at once:\n{log}");
    assert_eq!(names_in_locks(&env), ["keys"]);
}

// ---------------------------------------------------------------------------------------
// (2) What a killed memo's command left running is ended before the next run.

/// Control: a child that closed its inherited descriptors (the flight's) but keeps the
/// output pipes is found through the note's pipes.
#[test]
fn a_leftover_that_closed_the_flight_but_keeps_the_pipes_is_ended() {
    let env = TestEnv::new();
    let mut cleanup = Cleanup::new(&env);
    leftover_tool(&env);
    kill_a_run_leaving(&env, "a", "plain", &mut cleanup);
    let late = ticks_after_next_run(&env, "a");
    assert!(late.is_empty(), "the leftover ran beside: {late:?}");
}

/// A child that kept every descriptor (the flight among them) is found by its lock.
#[test]
fn a_leftover_that_kept_the_flight_is_ended_even_with_its_output_elsewhere() {
    let env = TestEnv::new();
    let mut cleanup = Cleanup::new(&env);
    leftover_tool(&env);
    // close_fds=False, new session, stdout and stderr on /dev/null: only the flight.
    env.write(
        "leftover.py",
        fs::read_to_string(env.path("leftover.py"))
            .unwrap()
            .replace(
                "if kind == 'keepfds': kw['close_fds'] = False",
                "kw['close_fds'] = False",
            ),
    );
    kill_a_run_leaving(&env, "a", "daemon", &mut cleanup);
    let late = ticks_after_next_run(&env, "a");
    assert!(late.is_empty(), "the leftover ran beside: {late:?}");
}

/// A child started in a session of its own (Python's `start_new_session=True`, which
/// also closes the flight's descriptor) that keeps writing the declared output. Its
/// output pipes are the noted ones, but `end_noted_copy` only ends processes of the
/// killed command's session, so it is never ended and runs beside the next copy.
#[test]
#[ignore = "defect: a leftover in a new session (start_new_session, close_fds) is not ended before the next run (also before c11f31e)"]
fn a_leftover_in_a_session_of_its_own_is_ended() {
    let env = TestEnv::new();
    let mut cleanup = Cleanup::new(&env);
    leftover_tool(&env);
    kill_a_run_leaving(&env, "a", "session", &mut cleanup);
    let late = ticks_after_next_run(&env, "a");
    assert!(late.is_empty(), "the leftover ran beside: {late:?}");
}

/// A child with its stdio on /dev/null and the flight's descriptor closed (a daemon):
/// neither mark names it. memo cannot find it; this documents the limit.
#[test]
#[ignore = "defect (limit of the design): a leftover with stdio on /dev/null and fds closed is never ended (also before c11f31e)"]
fn a_daemonized_leftover_is_ended() {
    let env = TestEnv::new();
    let mut cleanup = Cleanup::new(&env);
    leftover_tool(&env);
    kill_a_run_leaving(&env, "a", "devnull", &mut cleanup);
    let late = ticks_after_next_run(&env, "a");
    assert!(late.is_empty(), "the leftover ran beside: {late:?}");
}

/// A shell pipeline whose stages outlive the killed shell: they hold the flight.
#[test]
fn a_pipeline_left_by_a_killed_run_is_ended() {
    let env = TestEnv::new();
    let _cleanup = Cleanup::new(&env);
    env.tool(
        "echo \"start $$\" >> log; \
         sh -c 'i=0; while [ $i -lt 40 ]; do echo \"tick '$$'\" >> log; echo x; sleep 0.05; i=$((i+1)); done' \
         | cat > /dev/null; echo done",
    );
    let args = run_tool(&["--force"]);
    let mut holder = env.spawn_piped(&args);
    env.eventually("ticks", || {
        fs::read_to_string(env.path("log")).is_ok_and(|l| l.contains("tick"))
    });
    sigkill(holder.id());
    holder.wait().unwrap();
    let out = env.run(&args);
    assert_success(&out);
    std::thread::sleep(Duration::from_millis(200));
    let log = fs::read_to_string(env.path("log")).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    let first = lines[0].strip_prefix("start ").unwrap();
    let second = lines.iter().rposition(|l| l.starts_with("start ")).unwrap();
    assert!(
        !lines[second..].contains(&format!("tick {first}").as_str()),
        "the killed pipeline went on beside the new copy:\n{log}"
    );
}

// ---------------------------------------------------------------------------------------
// (3) and (6): different keys, colliding and full note windows.

/// Runs `./tool TAG` once for each tag (no leftover): each stores an entry; returns
/// the key of each tag.
fn keys_of(env: &TestEnv, tags: &[String]) -> Vec<String> {
    let mut keys = Vec::new();
    for tag in tags {
        let before = entry_keys(env);
        let out = env.run(["run", "--", "./tool", tag]);
        assert_success(&out);
        let after = entry_keys(env);
        let new: Vec<_> = after.into_iter().filter(|k| !before.contains(k)).collect();
        assert_eq!(new.len(), 1);
        keys.push(new[0].clone());
    }
    keys
}

/// Two tags whose note windows overlap: `(a, b)` with window(b) <= window(a) <=
/// window(b) + 7, so a's first slot is in b's window. `None` if none among 60.
fn colliding_pair(env: &TestEnv) -> Option<((String, u64), (String, u64))> {
    colliding_keys(env).map(|((a, wa, _), (b, wb, _))| ((a, wa), (b, wb)))
}

/// `colliding_pair`, with the two keys.
#[allow(clippy::type_complexity)]
fn colliding_keys(env: &TestEnv) -> Option<((String, u64, String), (String, u64, String))> {
    let tags: Vec<String> = (0..60).map(|i| format!("t{i}")).collect();
    let keys = keys_of(env, &tags);
    for (i, ka) in keys.iter().enumerate() {
        for (j, kb) in keys.iter().enumerate() {
            let (wa, wb) = (window_start(ka), window_start(kb));
            if i != j && wb <= wa && wa < wb + PROBES {
                return Some((
                    (tags[i].clone(), wa, ka.clone()),
                    (tags[j].clone(), wb, kb.clone()),
                ));
            }
        }
    }
    None
}

/// Holds (POSIX locks, which conflict with OFD locks) the note-slot bytes `slots` of
/// `locks/keys`, as that many other running memos would.
fn hold_slots(env: &TestEnv, slots: std::ops::Range<u64>) -> Option<Child> {
    if slots.is_empty() {
        return None;
    }
    let script = format!(
        "import fcntl,sys,time\nf=open(sys.argv[1],'r+')\n\
         for s in range({},{}): fcntl.lockf(f, fcntl.LOCK_EX|fcntl.LOCK_NB, 1, {SLOT_BASE}+s)\n\
         print('held',flush=True)\ntime.sleep(30)\n",
        slots.start, slots.end
    );
    let mut child = Command::new("python3")
        .args(["-c", &script])
        .arg(env.cache().join("locks").join("keys"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "held\n");
    Some(child)
}

/// A note as a killed holder of a key that is not ours left it (an unknown key, a
/// boot that is not this one: ignored by all).
fn plant_foreign_notes(env: &TestEnv, slots: std::ops::RangeInclusive<u64>) {
    let keys = fs::OpenOptions::new()
        .write(true)
        .open(env.cache().join("locks").join("keys"))
        .unwrap();
    for slot in slots {
        let mut note = format!("{:064x} 1 1 1 -\n", slot + 0xabc).into_bytes();
        note.resize(SLOT_BYTES as usize, 0);
        keys.write_all_at(&note, slot * SLOT_BYTES).unwrap();
    }
}

/// Key b, whose window overlaps a's, runs while a's killed run left a leftover: b
/// neither waits for nor kills a's processes, and a's next run still ends them.
#[test]
fn a_colliding_key_runs_beside_a_killed_keys_leftover_and_leaves_it_to_its_own_key() {
    let env = TestEnv::new();
    let mut cleanup = Cleanup::new(&env);
    leftover_tool(&env);
    let Some(((a, _), (b, _))) = colliding_pair(&env) else {
        eprintln!("skipped: no two of 60 keys with overlapping note windows");
        return;
    };
    kill_a_run_leaving(&env, &a, "plain", &mut cleanup);
    let began = Instant::now();
    let out = env.run(run_tag(&b));
    assert_success(&out);
    assert_eq!(stdout(&out), format!("{b}\n"));
    assert!(
        began.elapsed() < Duration::from_secs(3),
        "b waited for a's leftover"
    );
    // a's leftover still runs (b left it alone).
    let ticks = |env: &TestEnv| {
        fs::read_to_string(env.path("log"))
            .unwrap()
            .matches(&format!("tick {a} "))
            .count()
    };
    let before = ticks(&env);
    std::thread::sleep(Duration::from_millis(200));
    assert!(ticks(&env) > before, "b's run killed a's leftover");
    let late = ticks_after_next_run(&env, &a);
    assert!(late.is_empty(), "a's leftover ran beside a: {late:?}");
}

/// Key b, whose window overlaps a's, runs while a is running: b is killed with a
/// leftover and run again; a, its background child and its result are untouched.
#[test]
fn killing_and_rerunning_a_colliding_key_never_touches_a_running_key() {
    let env = TestEnv::new();
    let mut cleanup = Cleanup::new(&env);
    leftover_tool(&env);
    let Some(((a, _), (b, _))) = colliding_pair(&env) else {
        eprintln!("skipped: no two of 60 keys with overlapping note windows");
        return;
    };
    env.write(&format!("long-{a}"), "2");
    let running = env.spawn_piped(run_tag(&a));
    let began = Instant::now();
    kill_a_run_leaving(&env, &b, "plain", &mut cleanup);
    let late = ticks_after_next_run(&env, &b);
    assert!(late.is_empty(), "b's leftover ran beside b: {late:?}");
    assert!(
        began.elapsed() < Duration::from_millis(1900),
        "b waited for a"
    );
    let out = running.wait_with_output().unwrap();
    assert_success(&out);
    assert_eq!(stdout(&out), format!("{a}\n"));
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
}

/// A killed run whose note window was full (eight other keys running, their slot
/// bytes held) takes its flight as a file, note and all: a leftover found only through
/// the note's pipes (flight descriptor closed, Python's default) is ended before the
/// next copy runs, as when a slot was free (see the control above).
#[test]
fn a_leftover_is_ended_even_when_the_note_window_was_full() {
    let env = TestEnv::new();
    let mut cleanup = Cleanup::new(&env);
    leftover_tool(&env);
    let key = keys_of(&env, &["a".to_string()]).remove(0);
    let start = window_start(&key);
    let holder = hold_slots(&env, start..start + PROBES).unwrap();
    cleanup.children.push(holder);
    kill_a_run_leaving(&env, "a", "plain", &mut cleanup);
    assert!(
        !notes_of(&env, &key),
        "the window was full, yet a note was written"
    );
    // The other keys end.
    for child in &mut cleanup.children {
        let _ = child.kill();
        let _ = child.wait();
    }
    let late = ticks_after_next_run(&env, "a");
    assert!(late.is_empty(), "the leftover ran beside: {late:?}");
}

/// Key a's killed run left its note (and a leftover found only through it). The other
/// slots of colliding key b's window hold notes of other killed keys, or are held by
/// running memos: b's run must not take a's slot (it takes a flight file instead), so
/// a's next run still finds its leftover and ends it.
#[test]
fn a_colliding_key_never_overwrites_a_killed_keys_note() {
    let env = TestEnv::new();
    let mut cleanup = Cleanup::new(&env);
    leftover_tool(&env);
    let Some(((a, wa, key_a), (b, wb, _))) = colliding_keys(&env) else {
        eprintln!("skipped: no two of 60 keys with overlapping note windows");
        return;
    };
    kill_a_run_leaving(&env, &a, "plain", &mut cleanup);
    assert!(notes_of(&env, &key_a), "the killed run left its note");
    if let Some(holder) = hold_slots(&env, wb..wa) {
        cleanup.children.push(holder);
    }
    plant_foreign_notes(&env, wa + 1..=wb + PROBES - 1);
    assert_success(&env.run(run_tag(&b)));
    // b did not take a's slot.
    assert!(
        notes_of(&env, &key_a),
        "b's run wrote over or cleared a's note"
    );
    for child in &mut cleanup.children {
        let _ = child.kill();
        let _ = child.wait();
    }
    let late = ticks_after_next_run(&env, &a);
    assert!(late.is_empty(), "a's leftover ran beside a: {late:?}");
}

/// 32 distinct keys, 16 at once, each of which finishes only once all 16 of its batch
/// have started (so none waits for another), with a background child each: all
/// succeed, and nothing is left in `locks/` or in the note slots.
#[test]
fn many_distinct_keys_at_once_never_wait_and_leave_nothing_behind() {
    let env = TestEnv::new();
    env.tool(
        "touch started-$1-$2; (sleep 0.1) & i=0; \
         while [ \"$(ls | grep -c \"^started-$1-\")\" -lt 16 ]; do sleep 0.05; i=$((i+1)); \
         [ $i -gt 120 ] && exit 9; done; wait; echo $2",
    );
    for batch in 0..2 {
        let children: Vec<(usize, Child)> = (0..16)
            .map(|i| {
                (
                    i,
                    env.spawn_piped(["run", "--", "./tool", &format!("b{batch}"), &i.to_string()]),
                )
            })
            .collect();
        for (i, child) in children {
            let out = child.wait_with_output().unwrap();
            assert_success(&out);
            assert_eq!(stdout(&out), format!("{i}\n"));
        }
    }
    assert_eq!(env.count(), 32);
    assert_eq!(names_in_locks(&env), ["keys"]);
    // Notes only in the first MiB; locks take no space.
    let size = fs::metadata(env.cache().join("locks").join("keys"))
        .unwrap()
        .len();
    assert!(
        size <= SLOTS * SLOT_BYTES,
        "locks/keys grew to {size} bytes"
    );
    assert!(notes_all_clear(&env), "a note was left after normal runs");
}

// ---------------------------------------------------------------------------------------
// (4) Nothing left behind.

#[test]
fn failing_signalled_and_traced_runs_leave_only_keys_and_no_note() {
    let env = TestEnv::new();
    env.tool("if [ \"$1\" = fail ]; then echo no >&2; exit 3; fi; echo ok");
    let out = env.run(["run", "--", "./tool", "fail"]);
    assert_code(&out, 3);
    let out = env.run(["run", "--cache-failures", "--", "./tool", "fail"]);
    assert_code(&out, 3);
    assert_success(&env.run(["run", "--", "./tool", "ok"]));
    let traced = env.run(["run", "--trace", "--", "./tool", "traced"]);
    assert_success(&traced);
    // SIGTERM of memo while the command runs.
    env.script("slow", "sleep 5; echo slow");
    let child = env.spawn_piped(["run", "--", "./slow"]);
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let _ = child.wait_with_output().unwrap();
    assert_eq!(names_in_locks(&env), ["keys"]);
    assert!(notes_all_clear(&env));
}

// ---------------------------------------------------------------------------------------
// (7) A hostile `locks/keys`.

/// `locks/keys` truncated, then filled with garbage, while a memo runs the key: a second
/// memo of the key still waits (the locks are the inode's, not its data) and replays.
#[test]
fn a_truncated_or_garbage_filled_keys_file_keeps_single_flight() {
    let env = TestEnv::new();
    env.tool("echo \"start $$\" >> log; sleep 0.8; echo \"end $$\" >> log; echo done");
    let args = run_tool(&[]);
    let first = env.spawn_piped(&args);
    env.wait_for_file("log");
    let keys = env.cache().join("locks").join("keys");
    fs::OpenOptions::new()
        .write(true)
        .open(&keys)
        .unwrap()
        .set_len(0)
        .unwrap();
    fs::write(&keys, vec![0xa7u8; (SLOTS * SLOT_BYTES) as usize + 77]).unwrap();
    let second = env.spawn_piped(&args);
    for child in [first, second] {
        let out = child.wait_with_output().unwrap();
        assert_success(&out);
        assert_eq!(stdout(&out), "done\n");
    }
    assert_eq!(
        env.count(),
        1,
        "{}",
        fs::read_to_string(env.path("log")).unwrap()
    );
    // Garbage does not stop a new key either.
    env.tool("echo other");
    let out = env.run(&args);
    assert_success(&out);
    assert_eq!(stdout(&out), "other\n");
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
    assert_eq!(names_in_locks(&env), ["keys"]);
}

/// `locks/keys` replaced (by a symlink, a FIFO, or removed) while a memo runs the key:
/// the next memo replaces what it finds with a fresh file, whose bytes no one holds,
/// and runs the command beside the first copy. (`KeyLock` never checks, as `Lock` does,
/// that the path still names the file it locked.)
fn replaced_keys_file_run(replace: impl FnOnce(&Path)) -> String {
    let env = TestEnv::new();
    env.tool("echo \"start $$\" >> log; sleep 0.8; echo \"end $$\" >> log; echo done");
    let args = run_tool(&[]);
    let first = env.spawn_piped(&args);
    env.wait_for_file("log");
    let keys = env.cache().join("locks").join("keys");
    replace(&keys);
    let second = env.spawn_piped(&args);
    for child in [first, second] {
        let out = child.wait_with_output().unwrap();
        assert_success(&out);
        assert_eq!(stdout(&out), "done\n");
    }
    fs::read_to_string(env.path("log")).unwrap()
}

fn assert_no_overlap(log: &str) {
    let lines: Vec<&str> = log.lines().collect();
    for pair in lines.windows(2) {
        assert!(
            !(pair[0].starts_with("start ") && pair[1].starts_with("start ")),
            "two copies at once:\n{log}"
        );
    }
}

#[test]
#[ignore = "defect: locks/keys replaced by a symlink while a memo runs a key lets a second memo run the same command at once (also before c11f31e)"]
fn a_keys_file_replaced_by_a_symlink_keeps_single_flight() {
    let log = replaced_keys_file_run(|keys| {
        let elsewhere = keys.with_file_name("../elsewhere");
        fs::remove_file(keys).unwrap();
        std::os::unix::fs::symlink(elsewhere, keys).unwrap();
    });
    assert_no_overlap(&log);
}

#[test]
#[ignore = "defect: locks/keys replaced by a FIFO while a memo runs a key lets a second memo run the same command at once (also before c11f31e)"]
fn a_keys_file_replaced_by_a_fifo_keeps_single_flight() {
    let log = replaced_keys_file_run(|keys| {
        fs::remove_file(keys).unwrap();
        let path = std::ffi::CString::new(keys.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo reads the one NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
    });
    assert_no_overlap(&log);
}

/// A `locks/keys` user `nobody` may not write (root's, 0444): memo warns and runs the
/// command without its lock, and the result is right.
#[test]
fn a_keys_file_memo_may_not_open_for_writing_still_runs_the_command() {
    let env = TestEnv::new();
    if !nobody_can_run_in(&env) {
        return;
    }
    env.tool("echo ok");
    assert_success(&as_nobody(env.memo(run_tool(&[]))));
    let keys = env.cache().join("locks").join("keys");
    std::os::unix::fs::chown(&keys, Some(0), Some(0)).unwrap();
    fs::set_permissions(&keys, std::os::unix::fs::PermissionsExt::from_mode(0o444)).unwrap();
    let out = as_nobody(env.memo(run_tool(&["--force"])));
    assert_success(&out);
    assert_eq!(stdout(&out), "ok\n");
    assert!(stderr(&out).contains("lock"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
}

// ---------------------------------------------------------------------------------------
// (8) A flight file of the previous version.

/// `locks/flight-HEX` held (flock) by live processes, with a note naming a process
/// that ends soon: the new memo ends the holders before it runs the command, and
/// removes the file afterwards.
#[test]
fn a_previous_versions_flight_file_held_by_live_processes_is_taken_over_and_removed() {
    let env = TestEnv::new();
    let mut cleanup = Cleanup::new(&env);
    alive_script(&env);
    env.tool(
        "for p in $(cat holders.pids 2>/dev/null); do \
           if ./alive $p; then echo \"ALIVE $p\" >> log; fi; done; echo done",
    );
    assert_success(&env.run(run_tool(&["--force"])));
    let key = entry_keys(&env).remove(0);
    let flight = env.cache().join("locks").join(format!("flight-{key}"));
    let Ok(holder) = Command::new("flock")
        .arg(&flight)
        .args(["sh", "-c", "echo $$ > holders.pids; exec sleep 30"])
        .current_dir(env.work())
        .spawn()
    else {
        return;
    };
    let holder_pid = holder.id();
    cleanup.children.push(holder);
    env.wait_for_file("holders.pids");
    fs::write(
        env.path("holders.pids"),
        format!(
            "{holder_pid}\n{}",
            fs::read_to_string(env.path("holders.pids")).unwrap()
        ),
    )
    .unwrap();
    // The noted command: alive for 0.3 s more.
    let mut noted = Command::new("sleep").arg("0.3").spawn().unwrap();
    let stat = fs::read_to_string(format!("/proc/{}/stat", noted.id())).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 1..]
        .split_whitespace()
        .collect();
    let boot = fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    use std::os::unix::fs::MetadataExt;
    let namespace = fs::metadata("/proc/self/ns/pid").unwrap().ino();
    // Written in place: the holder holds the file open.
    fs::OpenOptions::new()
        .write(true)
        .open(&flight)
        .unwrap()
        .write_all_at(
            format!(
                "{} {} {} {}/{namespace}\n",
                noted.id(),
                fields[19],
                fields[3],
                boot.trim()
            )
            .as_bytes(),
            0,
        )
        .unwrap();
    let began = Instant::now();
    let out = env.run(run_tool(&["--force"]));
    assert_success(&out);
    assert_eq!(stdout(&out), "done\n");
    assert!(began.elapsed() < Duration::from_secs(4), "waited too long");
    assert!(
        !stderr(&out).contains("warning"),
        "result not stored: {}",
        stderr(&out)
    );
    assert!(
        noted.try_wait().unwrap().is_some(),
        "ran beside the noted process"
    );
    let log = fs::read_to_string(env.path("log")).unwrap_or_default();
    assert!(
        !log.contains("ALIVE"),
        "ran beside the flight's holders: {log}"
    );
    assert_eq!(names_in_locks(&env), ["keys"]);
}

// ---------------------------------------------------------------------------------------
// (9) Traced runs.

#[test]
fn a_killed_traced_runs_leftover_is_ended_before_the_next_traced_run() {
    let env = TestEnv::new();
    let _cleanup = Cleanup::new(&env);
    env.tool(
        "echo \"start $$\" >> log; \
         ( echo $$ > /dev/null; i=0; while [ $i -lt 40 ]; do echo \"tick $$\" >> log; sleep 0.05; i=$((i+1)); done ) > /dev/null 2>&1 & \
         wait; echo done",
    );
    let args = run_tool(&["--trace", "--force"]);
    let probe = env.run(&args);
    if !probe.status.success() {
        eprintln!("skipped: --trace does not run here: {}", stderr(&probe));
        return;
    }
    let _ = fs::remove_file(env.path("log"));
    let mut holder = env.spawn_piped(&args);
    env.eventually("ticks", || {
        fs::read_to_string(env.path("log")).is_ok_and(|l| l.contains("tick"))
    });
    sigkill(holder.id());
    holder.wait().unwrap();
    let out = env.run(&args);
    assert_success(&out);
    std::thread::sleep(Duration::from_millis(200));
    let log = fs::read_to_string(env.path("log")).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    let first = lines[0].strip_prefix("start ").unwrap();
    let second = lines.iter().rposition(|l| l.starts_with("start ")).unwrap();
    assert!(
        !lines[second..].contains(&format!("tick {first}").as_str()),
        "the killed traced copy's child went on beside the new one:\n{log}"
    );
    assert_eq!(names_in_locks(&env), ["keys"]);
}

// ---------------------------------------------------------------------------------------
// (5) Commands that close their descriptors.

/// A command that closes every descriptor it has (its output pipes and the flight's)
/// and then runs on: memo waits for it, stores its result, and leaves nothing behind.
#[test]
fn a_command_that_closes_all_its_descriptors_is_stored_and_leaves_nothing() {
    let env = TestEnv::new();
    env.write(
        "closer.py",
        "import os, time\nprint('before', flush=True)\nos.closerange(0, 4096)\n\
         time.sleep(0.5)\nopen('after', 'w').write('x')\n",
    );
    let args = ["run", "--", "python3", "closer.py"];
    let out = env.run(args);
    assert_success(&out);
    assert_eq!(stdout(&out), "before\n");
    assert!(
        env.path("after").exists(),
        "memo returned before its command ended"
    );
    let again = env.run(args);
    assert_success(&again);
    assert_eq!(stdout(&again), "before\n");
    assert_eq!(names_in_locks(&env), ["keys"]);
    assert!(notes_all_clear(&env));
}

// ---------------------------------------------------------------------------------------
// (9) A background refresh (`--stale`).

/// The detached memo of a stale hit's refresh is killed with -9 while its command has a
/// leftover running: the next run of the key in the foreground ends it first.
#[test]
fn a_killed_background_refreshs_leftover_is_ended_before_the_next_run() {
    let env = TestEnv::new();
    let mut cleanup = Cleanup::new(&env);
    leftover_tool(&env);
    let args = ["run", "--ttl", "1s", "--stale", "1h", "--", "./tool", "r"];
    assert_success(&env.run(args));
    std::thread::sleep(Duration::from_millis(1100));
    env.write("spawn-r", "plain");
    let stale = env.run(args);
    assert_success(&stale);
    assert_eq!(stdout(&stale), "r\n");
    env.wait_for_file("spawned-r");
    env.eventually("the leftover runs", || {
        fs::read_to_string(env.path("log")).is_ok_and(|l| l.contains("tick r "))
    });
    let refresh: u32 = fs::read_to_string(env.path("memo-r.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let cmdline = fs::read(format!("/proc/{refresh}/cmdline")).unwrap_or_default();
    assert!(
        String::from_utf8_lossy(&cmdline).contains("--refresh"),
        "the tool's parent is the refresh's memo: {:?}",
        String::from_utf8_lossy(&cmdline)
    );
    sigkill(refresh);
    fs::remove_file(env.path("spawn-r")).unwrap();
    cleanup.files.push(env.path("leftover.pids"));
    std::thread::sleep(Duration::from_millis(100));
    let mut forced = vec!["run", "--force"];
    forced.extend(&args[1..]);
    let out = env.run(&forced);
    assert_success(&out);
    assert_eq!(stdout(&out), "r\n");
    std::thread::sleep(Duration::from_millis(300));
    let log = fs::read_to_string(env.path("log")).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    let start = lines
        .iter()
        .rposition(|l| l.starts_with("start r "))
        .unwrap();
    assert!(
        !lines[start..].iter().any(|l| l.starts_with("tick r ")),
        "the killed refresh's leftover ran beside the next run:\n{log}"
    );
    // The killed refresh leaves its `refresh-HEX` lock file (a transient `Lock`, removed
    // by the next refresh of the key, not part of this change); no flight file.
    let names = names_in_locks(&env);
    assert!(names.contains(&"keys".to_string()), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with("flight-")), "{names:?}");
}

// ---------------------------------------------------------------------------------------
// `--tty`: the command writes into a pseudo-terminal, not pipes.

/// Starts memo with its stdout and stderr on a fresh terminal, drained by a thread.
fn spawn_on_terminal(mut cmd: Command) -> Child {
    use std::io::Read;
    let (mut master, slave) = open_pty(80);
    cmd.stdin(Stdio::null())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave)
        .env("TERM", "xterm");
    let child = cmd.spawn().unwrap();
    drop(cmd);
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while matches!(master.read(&mut buf), Ok(n) if n > 0) {}
    });
    child
}

/// A `--tty` run killed with -9, whose command left a child that ignores SIGHUP (as
/// `nohup` does) and closed the flight's descriptor (Python's default) but keeps the
/// terminal as its stdout. The note names the terminal's inode, and a /dev/pts link
/// with that inode is matched as a pipe is: the child is ended before the next copy
/// runs. (With pipes the same child is ended: see the control above.)
#[test]
fn a_tty_runs_leftover_that_closed_the_flight_is_ended() {
    let env = TestEnv::new();
    let mut cleanup = Cleanup::new(&env);
    leftover_tool(&env);
    let args = ["run", "--tty", "--force", "--", "./tool", "a"];
    env.write("spawn-a", "nohup");
    let mut holder = spawn_on_terminal(env.memo(args));
    env.wait_for_file("spawned-a");
    env.eventually("the leftover runs", || {
        fs::read_to_string(env.path("log")).is_ok_and(|l| l.contains("tick a "))
    });
    sigkill(holder.id());
    holder.wait().unwrap();
    fs::remove_file(env.path("spawn-a")).unwrap();
    cleanup.files.push(env.path("leftover.pids"));
    std::thread::sleep(Duration::from_millis(100));
    let mut follower = spawn_on_terminal(env.memo(args));
    assert!(follower.wait().unwrap().success());
    std::thread::sleep(Duration::from_millis(300));
    let log = fs::read_to_string(env.path("log")).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    let start = lines
        .iter()
        .rposition(|l| l.starts_with("start a "))
        .unwrap();
    assert!(start > 0, "{log}");
    assert!(
        !lines[start..].iter().any(|l| l.starts_with("tick a ")),
        "the killed tty run's leftover ran beside the next run:\n{log}"
    );
}

// ---------------------------------------------------------------------------------------
// The fallback flight file: the flight byte held by no process memo can see.

/// The killed run's leftover passes the flight's descriptor into a unix socket's queue
/// and closes it: the byte stays held, and no /proc fdinfo names it. The next run
/// waits NOTED_PROCESS_WAIT, then runs under a fresh `flight-HEX` without storing; the
/// one after uses that file without waiting and stores; once the byte is free again,
/// the file goes.
#[test]
fn a_flight_byte_held_for_good_falls_back_to_a_flight_file_that_goes_once_free() {
    let env = TestEnv::new();
    let mut cleanup = Cleanup::new(&env);
    env.tool(
        "if [ -e spawn ]; then python3 hold.py & \
           while [ ! -e held ]; do sleep 0.02; done; sleep 30; fi; echo done",
    );
    env.write(
        "hold.py",
        "import os, socket, time\n\
         fds = []\n\
         for f in os.listdir('/proc/self/fd'):\n\
         \x20   try:\n\
         \x20       if os.readlink('/proc/self/fd/' + f).endswith('/locks/keys'): fds.append(int(f))\n\
         \x20   except OSError: pass\n\
         a, b = socket.socketpair()\n\
         socket.send_fds(a, [b'x'], fds)\n\
         for f in fds: os.close(f)\n\
         null = os.open('/dev/null', os.O_RDWR)\n\
         for f in (0, 1, 2): os.dup2(null, f)\n\
         open('leftover.pids', 'a').write('%d\\n' % os.getpid())\n\
         open('held', 'w').write(str(len(fds)))\n\
         while not os.path.exists('release'): time.sleep(0.02)\n",
    );
    let args = run_tool(&["--force"]);
    env.write("spawn", "");
    let mut holder = env.spawn_piped(&args);
    env.wait_for_file("held");
    assert_eq!(fs::read_to_string(env.path("held")).unwrap(), "1");
    sigkill(holder.id());
    holder.wait().unwrap();
    fs::remove_file(env.path("spawn")).unwrap();
    cleanup.files.push(env.path("leftover.pids"));

    let began = Instant::now();
    let out = env.run(&args);
    assert_success(&out);
    assert_eq!(stdout(&out), "done\n");
    assert!(began.elapsed() >= Duration::from_secs(4), "did not wait");
    assert!(
        stderr(&out).contains("result not stored"),
        "{}",
        stderr(&out)
    );
    let flight_files = |env: &TestEnv| {
        names_in_locks(env)
            .into_iter()
            .filter(|n| n.starts_with("flight-"))
            .count()
    };
    assert_eq!(flight_files(&env), 1);

    let began = Instant::now();
    let out = env.run(&args);
    assert_success(&out);
    assert!(began.elapsed() < Duration::from_secs(3), "waited again");
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
    assert_eq!(flight_files(&env), 1, "kept while the byte is held");

    env.write("release", "");
    let pid: u32 = fs::read_to_string(env.path("leftover.pids"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    env.eventually("the holder is gone", || {
        !Path::new(&format!("/proc/{pid}")).exists()
            || fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z"))
    });
    // The description sat in a socket's queue: the kernel lets it go when it collects
    // the closed socket, which it may do a little after the process is gone (under
    // load). Until then its locks on `locks/keys` stay in /proc/locks.
    let keys_ino =
        std::os::unix::fs::MetadataExt::ino(&fs::metadata(env.cache().join("locks/keys")).unwrap());
    env.eventually("the held description is let go", || {
        !fs::read_to_string("/proc/locks")
            .unwrap_or_default()
            .lines()
            .any(|l| {
                l.split_whitespace()
                    .any(|w| w.ends_with(&format!(":{keys_ino}")))
            })
    });
    let out = env.run(&args);
    assert_success(&out);
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
    assert_eq!(names_in_locks(&env), ["keys"]);
    // That run used (and removed) the file: the killed run's note in its slot stays
    // until the next run of the key, on the byte again, takes that slot and clears it.
    let out = env.run(&args);
    assert_success(&out);
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
    assert_eq!(names_in_locks(&env), ["keys"]);
    assert!(notes_all_clear(&env));
}

// ---------------------------------------------------------------------------------------
// One cache, two paths.

/// A killed run that reached the cache through another path (a bind mount of it, as a
/// container's volume is): its leftover keeps the flight (stdout on /dev/null, so only
/// the flight byte names it). The next run through the cache's own path looks for the
/// holders by the text of their /proc fd links, which name the other path: it finds
/// none, waits NOTED_PROCESS_WAIT, and runs the command beside the leftover (result not
/// stored).
#[test]
fn a_leftover_that_reached_the_cache_by_another_path_is_ended() {
    let env = TestEnv::new();
    let _cleanup = Cleanup::new(&env);
    env.tool(
        "echo \"start $$\" >> log; \
         sh -c 'echo $$ >> leftover.pids; i=0; while [ $i -lt 300 ]; do echo \"tick $1\" >> log; \
           sleep 0.05; i=$((i+1)); done' _ $$ > /dev/null 2>&1 & \
         if [ -e spawn ]; then sleep 30; fi; echo done",
    );
    // The cache exists (with its keys file) before the bind mount.
    assert_success(&env.run(run_tool(&["--force"])));
    env.eventually("the first run's leftover", || {
        fs::read_to_string(env.path("leftover.pids")).is_ok_and(|p| p.ends_with('\n'))
    });
    for pid in fs::read_to_string(env.path("leftover.pids"))
        .unwrap()
        .lines()
    {
        sigkill(pid.parse().unwrap());
    }
    std::thread::sleep(Duration::from_millis(100));
    fs::remove_file(env.path("log")).unwrap();
    let mount_point = env.root.path().join("mnt");
    fs::create_dir(&mount_point).unwrap();
    env.write("spawn", "");
    // unshare, a private mount namespace, the bind mount, then memo through it.
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg("mount --bind \"$0\" \"$1\" || exit 99; exec \"$2\" run --force -- ./tool")
        .arg(env.cache())
        .arg(&mount_point)
        .arg(MEMO)
        .current_dir(env.work())
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", env.root.path().join("home"))
        .env("MEMO_DIR", &mount_point)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let Ok(mut holder) = cmd.spawn() else {
        eprintln!("skipped: no unshare");
        return;
    };
    env.eventually("the bound run's ticks", || {
        fs::read_to_string(env.path("log")).is_ok_and(|l| l.contains("tick"))
            || holder.try_wait().unwrap().is_some()
    });
    if holder.try_wait().unwrap().is_some() {
        eprintln!("skipped: cannot bind-mount here");
        return;
    }
    sigkill(holder.id());
    holder.wait().unwrap();
    fs::remove_file(env.path("spawn")).unwrap();
    let began = Instant::now();
    let out = env.run(run_tool(&["--force"]));
    assert_success(&out);
    let took = began.elapsed();
    std::thread::sleep(Duration::from_millis(200));
    let log = fs::read_to_string(env.path("log")).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    let first = lines[0].strip_prefix("start ").unwrap();
    let second = lines.iter().rposition(|l| l.starts_with("start ")).unwrap();
    assert!(
        !lines[second..].contains(&format!("tick {first}").as_str()),
        "the leftover went on beside the new copy (after {took:?}: {}):\n{log}",
        stderr(&out).trim()
    );
}

// ---------------------------------------------------------------------------------------
// (8) A `flight-HEX` that is not a file.

/// A `locks/flight-HEX` planted as a symlink (to a file of the user's), a FIFO or a
/// directory: memo never writes through it or blocks on it, runs the command, stores
/// the result, and leaves only `keys`.
#[test]
fn a_flight_file_planted_as_a_symlink_fifo_or_directory_is_replaced_and_removed() {
    for kind in ["symlink", "fifo", "dir"] {
        let env = TestEnv::new();
        env.tool("echo done");
        assert_success(&env.run(run_tool(&["--force"])));
        let key = entry_keys(&env).remove(0);
        let flight = env.cache().join("locks").join(format!("flight-{key}"));
        let victim = env.root.path().join("victim");
        fs::write(&victim, "precious\n").unwrap();
        match kind {
            "symlink" => std::os::unix::fs::symlink(&victim, &flight).unwrap(),
            "fifo" => {
                let path = std::ffi::CString::new(flight.as_os_str().as_encoded_bytes()).unwrap();
                // SAFETY: mkfifo reads the one NUL-terminated path.
                assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
            }
            _ => {
                fs::create_dir(&flight).unwrap();
                fs::write(flight.join("inside"), "x").unwrap();
            }
        }
        let out = run_with_deadline(env.memo(run_tool(&["--force"])), Duration::from_secs(8));
        assert_success(&out);
        assert_eq!(stdout(&out), "done\n", "{kind}");
        assert!(
            !stderr(&out).contains("warning"),
            "{kind}: {}",
            stderr(&out)
        );
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n", "{kind}");
        assert_eq!(names_in_locks(&env), ["keys"], "{kind}");
        assert!(!env.ran_tool(&[]), "{kind}: the result was stored");
    }
}

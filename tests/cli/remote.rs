//! The shared cache tier against real servers (nginx WebDAV, moto's S3): each `Machine` is
//! a work dir and a cache dir of its own, so two machines share nothing but the server.
//! Every test uses its own URL prefix (nginx) or bucket (S3) on the shared servers, and a
//! private server only where it stops one. Hits and misses are told apart by counting
//! the command's runs, never by timing; waits for the detached upload poll with a deadline.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::servers::{
    self, shared_moto, shared_nginx, Moto, Nginx, Relay, Silent, BASIC_PASSWORD, BASIC_USER,
    BEARER_TOKEN,
};
use crate::support::*;

// ---------------------------------------------------------------------------------------
// Machines.

/// The standard command: stdout, stderr, a declared output file (64 KiB, with bytes that
/// are not UTF-8) and an exit code, every one of them naming the machine that ran it, so
/// that a replay of another machine's result cannot pass for a run.
const STANDARD_TOOL: &str = r#"m=$(cat machine)
printf 'out from %s\n' "$m"
printf 'err from %s\n' "$m" >&2
{ head -c 65536 /dev/zero | tr '\0' 'x'; printf '\000\377%s' "$m"; } > out.bin
exit 3
"#;

/// The arguments `STANDARD_TOOL` is run with: its non-zero exit is stored too.
const STANDARD_ARGS: &[&str] = &["--cache-failures", "-o", "out.bin"];

/// The longest any one memo call may take before the test calls it a hang.
const HANG_GUARD: Duration = Duration::from_secs(120);

/// A machine: its own work dir (with a file `machine` naming it) and cache dir, and the
/// remote settings it runs memo with.
struct Machine {
    env: TestEnv,
    name: String,
    vars: Vec<(String, String)>,
}

impl Machine {
    fn new(name: &str, remote: &str) -> Machine {
        let env = TestEnv::new();
        env.write("machine", name);
        Machine {
            env,
            name: name.to_string(),
            vars: vec![("MEMO_REMOTE".into(), remote.into())],
        }
        .with_tool(STANDARD_TOOL)
    }

    /// A machine using the S3 bucket `bucket` (under `team/`) on `moto`.
    fn on_s3(name: &str, moto: &Moto, bucket: &str) -> Machine {
        let mut machine = Machine::new(name, &format!("s3://{bucket}/team"));
        machine.vars.extend(moto.env());
        machine
    }

    fn with(mut self, name: &str, value: &str) -> Machine {
        self.vars.retain(|(k, _)| k != name);
        self.vars.push((name.into(), value.into()));
        self
    }

    /// Writes `./tool`: it counts its runs in `count`, then runs `body`. The count goes
    /// through a relative path so that the script's bytes, part of the key, are the same
    /// on every machine.
    fn with_tool(self, body: &str) -> Machine {
        self.env
            .script("tool", &format!("echo run >> count\n{body}"));
        self
    }

    fn memo<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = self.env.memo(args);
        cmd.envs(self.vars.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// `memo run --ignore-cwd EXTRA -- ./tool`, guarded against hangs.
    fn call(&self, extra: &[&str]) -> Output {
        let mut args = vec!["run", "--ignore-cwd"];
        args.extend_from_slice(extra);
        args.extend(["--", "./tool"]);
        run_guarded(self.memo(args))
    }

    /// The standard call (`STANDARD_ARGS`).
    fn call_standard(&self) -> Output {
        self.call(STANDARD_ARGS)
    }

    /// `memo remote push`, which must succeed; then waits for this machine's detached
    /// uploader too, so that the server holds still for what the test does next (that
    /// push alone suffices is pinned by its own test).
    #[track_caller]
    fn push(&self) {
        let out = run_guarded(self.memo(["remote", "push"]));
        assert_success(&out);
        self.settle();
    }

    /// Waits until no memo process of this machine runs any more (its detached uploader
    /// included), so that the server's data and log hold still. Found in /proc by the
    /// machine's private MEMO_DIR; a memo whose environment reads empty (it is being
    /// born) counts too, and the quiet must last a few polls.
    #[track_caller]
    fn settle(&self) {
        let needle = format!("MEMO_DIR={}", self.env.cache().display()).into_bytes();
        let mut quiet_polls = 0;
        eventually(&format!("{}'s memo processes end", self.name), || {
            let busy = processes().any(|(exe, env)| {
                env.split(|&b| b == 0).any(|v| v == needle)
                    || (env.is_empty() && exe.as_deref() == Some(Path::new(MEMO)))
            });
            quiet_polls = if busy { 0 } else { quiet_polls + 1 };
            quiet_polls >= 5
        });
    }

    fn count(&self) -> usize {
        self.env.count()
    }

    #[track_caller]
    fn stats(&self) -> serde_json::Value {
        let out = self.memo(["stats", "--json"]).output().unwrap();
        assert_success(&out);
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// One counter of `memo stats --json` (0 when absent).
    #[track_caller]
    fn stat(&self, name: &str) -> u64 {
        let stats = self.stats();
        stats[name]
            .as_u64()
            .unwrap_or_else(|| panic!("memo stats --json has no counter {name}: {stats}"))
    }

    /// The kinds of `memo log --json`, oldest first.
    #[track_caller]
    fn event_kinds(&self) -> Vec<String> {
        let out = self.memo(["log", "--json", "-n", "1000"]).output().unwrap();
        assert_success(&out);
        stdout(&out)
            .lines()
            .map(|l| {
                let event: serde_json::Value = serde_json::from_str(l).unwrap();
                event["event"].as_str().unwrap_or_default().to_string()
            })
            .collect()
    }

    /// The hex key of the only result in this machine's cache.
    #[track_caller]
    fn only_key(&self) -> String {
        let out = self.memo(["ls", "--json"]).output().unwrap();
        assert_success(&out);
        let listed: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(listed.len(), 1, "{listed:?}");
        listed[0]["key"].as_str().unwrap().to_string()
    }

    /// What `STANDARD_TOOL` writes to out.bin on machine `name`.
    fn standard_output_of(name: &str) -> Vec<u8> {
        let mut bytes = vec![b'x'; 65536];
        bytes.extend([0, 0xff]);
        bytes.extend(name.as_bytes());
        bytes
    }
}

/// Runs `cmd` with stdout and stderr on files (a detached child that kept a pipe open
/// could not delay the test), killing it and failing after `HANG_GUARD`.
#[track_caller]
pub(crate) fn run_guarded(mut cmd: Command) -> Output {
    let out_file = tempfile::NamedTempFile::new().unwrap();
    let err_file = tempfile::NamedTempFile::new().unwrap();
    let mut child = cmd
        .stdout(out_file.reopen().unwrap())
        .stderr(err_file.reopen().unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + HANG_GUARD;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "memo hung for {HANG_GUARD:?}: {cmd:?}\nstderr so far: {}",
                String::from_utf8_lossy(&fs::read(err_file.path()).unwrap())
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: fs::read(out_file.path()).unwrap(),
        stderr: fs::read(err_file.path()).unwrap(),
    }
}

/// The executable and environment block of every process this user may read.
pub(crate) fn processes() -> impl Iterator<Item = (Option<PathBuf>, Vec<u8>)> {
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| {
            let env = fs::read(e.path().join("environ")).ok()?;
            Some((fs::read_link(e.path().join("exe")).ok(), env))
        })
}

/// Polls `check` every 50 ms for up to 30 s.
#[track_caller]
pub(crate) fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for: {what}");
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// memo's warning lines on stderr.
pub(crate) fn warnings(out: &Output) -> Vec<String> {
    stderr(out)
        .lines()
        .filter(|l| l.starts_with("memo: warning"))
        .map(str::to_string)
        .collect()
}

/// Every file under `dir` with its bytes: a snapshot of a server's data.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    files_under(dir)
        .into_iter()
        .map(|p| {
            let bytes = fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

/// `b` replayed `a`'s standard result: `a`'s stdout, stderr, exit code and out.bin, and
/// `b`'s command never ran.
#[track_caller]
fn assert_replayed(out: &Output, b: &Machine, a: &Machine) {
    assert_eq!(b.count(), 0, "the command ran on {}: {out:?}", b.name);
    assert_code(out, 3);
    assert_eq!(stdout(out), format!("out from {}\n", a.name));
    assert_eq!(stderr(out), format!("err from {}\n", a.name));
    assert_eq!(b.env.read("out.bin"), Machine::standard_output_of(&a.name));
}

/// `m` ran the standard command itself and delivered its own, true result (never a
/// replay of what the server held), with at most `max_warnings` warnings.
#[track_caller]
fn assert_ran_itself(out: &Output, m: &Machine, max_warnings: usize) {
    assert_eq!(
        m.count(),
        1,
        "the command did not run on {}: {out:?}",
        m.name
    );
    assert_code(out, 3);
    assert_eq!(stdout(out), format!("out from {}\n", m.name));
    assert!(
        stderr(out).contains(&format!("err from {}\n", m.name)),
        "{out:?}"
    );
    assert_eq!(m.env.read("out.bin"), Machine::standard_output_of(&m.name));
    assert!(
        warnings(out).len() <= max_warnings,
        "more than {max_warnings} warnings: {:?}",
        stderr(out)
    );
    assert!(!stderr(out).contains("panicked"), "{out:?}");
}

/// A writes the standard result to `remote` and pushes it.
fn machine_a_stores(remote: &str) -> Machine {
    let a = Machine::new("A", remote);
    let out = a.call_standard();
    assert_eq!(a.count(), 1);
    assert_code(&out, 3);
    a.push();
    a
}

// ---------------------------------------------------------------------------------------
// The harness itself.

/// Both servers start, take a PUT and give the bytes back; the access log records it.
#[test]
fn harness_servers_store_and_return_bytes() {
    let Some(nginx) = shared_nginx() else { return };
    let put = nginx
        .http("PUT", "/harness-smoke/cas/abc", &[], b"hello")
        .unwrap();
    assert!(matches!(put.status, 201 | 204), "{put:?}");
    let got = nginx
        .http("GET", "/harness-smoke/cas/abc", &[], b"")
        .unwrap();
    assert_eq!((got.status, got.body.as_slice()), (200, &b"hello"[..]));
    assert_eq!(
        fs::read(nginx.data_path("harness-smoke", "cas/abc")).unwrap(),
        b"hello"
    );
    let puts: Vec<_> = nginx
        .requests_under("harness-smoke")
        .into_iter()
        .filter(|(method, _, _)| method == "PUT")
        .collect();
    assert_eq!(puts.len(), 1, "{puts:?}");
    for (prefix, status) in [
        ("fail500", 500),
        ("forbid", 403),
        ("bearer", 401),
        ("basic", 401),
    ] {
        let r = nginx
            .http("GET", &format!("/{prefix}/x"), &[], b"")
            .unwrap();
        assert_eq!(r.status, status, "/{prefix}/");
    }
    let bearer = nginx
        .http(
            "PUT",
            "/bearer/harness-smoke/x",
            &[("Authorization", "Bearer tok123")],
            b"b",
        )
        .unwrap();
    assert!(matches!(bearer.status, 201 | 204), "{bearer:?}");

    let Some(moto) = shared_moto() else { return };
    moto.create_bucket("harness-smoke");
    moto.put_object("harness-smoke", "p/cas/abc", b"world");
    assert_eq!(
        moto.get_object("harness-smoke", "p/cas/abc").as_deref(),
        Some(&b"world"[..])
    );
    assert_eq!(moto.get_object("harness-smoke", "p/cas/nope"), None);
    assert_eq!(moto.list("harness-smoke"), vec!["p/cas/abc".to_string()]);
}

/// A private nginx speaks https with the CA's certificate, stops and restarts; the
/// refusing port refuses; the silent listener counts; the relay forwards and holds.
#[test]
fn harness_private_nginx_stops_and_speaks_https() {
    let Some(nginx) = Nginx::start() else { return };
    let out = Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(nginx.ca_file())
        .args(["-o", "/dev/null", "-w", "%{http_code}", "-T", "-"])
        .arg(format!("{}obj", nginx.https_url("tls")))
        .stdin(Stdio::null())
        .output();
    if let Ok(out) = out {
        assert_eq!(String::from_utf8_lossy(&out.stdout), "201", "{out:?}");
        assert!(nginx.data_path("tls", "obj").exists());
    }
    let hold_dir = tempfile::tempdir().unwrap();
    let hold = hold_dir.path().join("hold");
    let relay = Relay::start(nginx.port(), Some(hold.clone()));
    let via_relay = servers::http(relay.port(), "GET", "/tls/obj", &[], b"").unwrap();
    assert_eq!(via_relay.status, 200);
    assert_eq!(relay.connections(), 1);
    fs::write(&hold, "").unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let port = relay.port();
    std::thread::spawn(move || {
        let _ = tx.send(servers::http(port, "GET", "/tls/obj", &[], b"").map(|r| r.status));
    });
    assert!(
        rx.recv_timeout(Duration::from_millis(300)).is_err(),
        "not held"
    );
    fs::remove_file(&hold).unwrap();
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(10)).unwrap().unwrap(),
        200
    );

    nginx.stop();
    assert!(nginx.http("GET", "/", &[], b"").is_err());
    assert!(nginx.restart());
    assert_eq!(nginx.http("GET", "/tls/obj", &[], b"").unwrap().status, 200);

    let refusing = servers::refusing_url();
    let addr = refusing
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    assert!(std::net::TcpStream::connect(addr).is_err());
    let silent = Silent::start();
    let _held = std::net::TcpStream::connect(("127.0.0.1", silent.port())).unwrap();
    eventually("the silent listener counts", || silent.connections() == 1);
}

// ---------------------------------------------------------------------------------------
// Two machines, one server.

#[test]
fn machine_b_replays_a_result_from_nginx_without_running_it() {
    let Some(nginx) = shared_nginx() else { return };
    let a = machine_a_stores(&nginx.url("replay-http"));
    assert!(!nginx.files("replay-http", "ac").is_empty());
    let sha = sha256_hex(&a.env.read("out.bin"));
    assert!(
        nginx
            .data_path("replay-http", &format!("cas/{sha}"))
            .exists(),
        "out.bin is not on the server as cas/<its sha256>"
    );

    let b = Machine::new("B", &nginx.url("replay-http"));
    let out = b.call_standard();
    assert_replayed(&out, &b, &a);
    assert!(warnings(&out).is_empty(), "{out:?}");
    assert_eq!(b.stat("remote_hits"), 1);
    assert!(b.stat("remote_bytes_down") >= 65536);
    assert!(b.event_kinds().iter().any(|k| k == "remote-hit"));
}

/// Objects are compressed in each local store, but the server holds (and is sent) the
/// raw bytes under their digest: a plain WebDAV server stores a body as it is given.
#[test]
fn compressed_objects_travel_raw_and_are_compressed_again_on_arrival() {
    let Some(nginx) = shared_nginx() else { return };
    let a = machine_a_stores(&nginx.url("compressed-raw"));
    let raw = a.env.read("out.bin");
    let sha = sha256_hex(&raw);
    let local = |m: &Machine| fs::read(m.env.cache().join("objects").join(&sha[..2]).join(&sha));
    let on_a = local(&a).unwrap();
    assert_eq!(on_a[..4], [0x28, 0xB5, 0x2F, 0xFD], "not compressed on A");
    assert!(on_a.len() < raw.len() / 10);
    let on_server = fs::read(nginx.data_path("compressed-raw", &format!("cas/{sha}"))).unwrap();
    assert_eq!(
        on_server, raw,
        "the server holds other bytes than the raw output"
    );

    let b = Machine::new("B", &nginx.url("compressed-raw"));
    let out = b.call_standard();
    assert_replayed(&out, &b, &a);
    assert!(warnings(&out).is_empty(), "{out:?}");
    assert_eq!(
        local(&b).unwrap()[..4],
        [0x28, 0xB5, 0x2F, 0xFD],
        "not compressed on B"
    );
    let again = b.call_standard();
    assert_replayed(&again, &b, &a);
}

#[test]
fn machine_b_replays_a_result_from_s3_without_running_it() {
    let Some(moto) = shared_moto() else { return };
    moto.create_bucket("replay-s3");
    let a = Machine::on_s3("A", moto, "replay-s3");
    assert_code(&a.call_standard(), 3);
    a.push();
    let keys = moto.list("replay-s3");
    let sha = sha256_hex(&a.env.read("out.bin"));
    assert!(keys.contains(&format!("team/cas/{sha}")), "{keys:?}");
    assert!(keys.iter().any(|k| k.starts_with("team/ac/")), "{keys:?}");

    let b = Machine::on_s3("B", moto, "replay-s3");
    let out = b.call_standard();
    assert_replayed(&out, &b, &a);
    assert_eq!(b.stat("remote_hits"), 1);
}

#[test]
fn remote_verbose_says_remote_hit_with_the_namespace() {
    let Some(nginx) = shared_nginx() else { return };
    machine_a_stores(&nginx.url("verbose"));
    let b = Machine::new("B", &nginx.url("verbose"));
    let mut args = vec!["-v"];
    args.extend_from_slice(STANDARD_ARGS);
    let out = b.call(&args);
    assert_eq!(b.count(), 0);
    assert!(
        stderr(&out).contains("memo: remote hit") && stderr(&out).contains("default"),
        "{out:?}"
    );
}

#[test]
fn after_a_remote_hit_the_next_call_is_local_and_touches_no_network() {
    let Some(nginx) = Nginx::start() else { return };
    let relay = Relay::start(nginx.port(), None);
    let a = machine_a_stores(&nginx.url("local-after"));
    let b = Machine::new("B", &relay.url("local-after"));
    assert_replayed(&b.call_standard(), &b, &a);
    let connections = relay.connections();
    assert!(connections > 0, "the remote hit went around the relay");

    nginx.stop();
    fs::remove_file(b.env.path("out.bin")).unwrap();
    let out = b.call_standard();
    assert_replayed(&out, &b, &a);
    assert!(
        stderr(&out).lines().all(|l| !l.contains("warning")),
        "{out:?}"
    );
    assert_eq!(relay.connections(), connections, "a local hit connected");
    assert_eq!(b.stat("remote_hits"), 1);
}

#[test]
fn the_upload_is_detached_the_caller_gets_its_output_and_exits_first() {
    let Some(nginx) = shared_nginx() else { return };
    // The command creates `hold`, which freezes every later connection to the server:
    // those of the upload. The caller must deliver its output and exit regardless.
    let hold_dir = tempfile::tempdir().unwrap();
    let hold = hold_dir.path().join("hold");
    let relay = Relay::start(nginx.port(), Some(hold.clone()));
    let a = Machine::new("A", &relay.url("detached")).with_tool(&format!(
        "printf 'delivered\\n'\n: > '{}'\n",
        hold.display()
    ));
    let mut child = a
        .memo(["run", "--ignore-cwd", "--", "./tool"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read both pipes to their end: an uploader that kept either open would hold up
    // `$(memo run ...)` in a shell for as long as the upload runs.
    let (tx, rx) = std::sync::mpsc::channel();
    let mut out_pipe = child.stdout.take().unwrap();
    let mut err_pipe = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let mut err = Vec::new();
        let _ = out_pipe.read_to_end(&mut out);
        let _ = err_pipe.read_to_end(&mut err);
        let _ = tx.send((out, err));
    });
    let Ok((out, err)) = rx.recv_timeout(HANG_GUARD) else {
        let _ = fs::remove_file(&hold);
        let _ = child.kill();
        panic!("the caller's output did not end while the upload was held");
    };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{}", String::from_utf8_lossy(&err));
    assert_eq!(out, b"delivered\n");
    assert_eq!(a.count(), 1);
    assert!(hold.exists());
    assert!(
        nginx.files("detached", "ac").is_empty(),
        "the entry reached the server while every connection was held"
    );

    fs::remove_file(&hold).unwrap();
    eventually("the detached upload puts the entry on the server", || {
        !nginx.files("detached", "ac").is_empty()
    });
    eventually("memo stats counts the upload", || a.stat("uploads") >= 1);
    assert!(a.event_kinds().iter().any(|k| k == "upload"));
}

#[test]
fn push_returns_when_every_pending_result_is_on_the_server() {
    let Some(nginx) = shared_nginx() else { return };
    let a = Machine::new("A", &nginx.url("push-waits"));
    for salt in ["1", "2", "3"] {
        let mut args = vec!["--salt", salt];
        args.extend_from_slice(STANDARD_ARGS);
        assert_code(&a.call(&args), 3);
    }
    // At once, while the detached uploaders may still run: the end of a CI job.
    assert_success(&run_guarded(a.memo(["remote", "push"])));
    assert_eq!(
        nginx.files("push-waits", "ac").len(),
        3,
        "memo remote push returned before every result was on the server"
    );
    a.settle();
    let b = Machine::new("B", &nginx.url("push-waits"));
    for salt in ["1", "2", "3"] {
        let mut args = vec!["--salt", salt];
        args.extend_from_slice(STANDARD_ARGS);
        assert_code(&b.call(&args), 3);
    }
    assert_eq!(b.count(), 0);
}

#[test]
fn objects_already_on_the_server_are_not_sent_again() {
    let Some(nginx) = shared_nginx() else { return };
    // Two results (two salts) with the same 100 KB output file.
    let tool = "echo \"stdout of $(cat machine)\"\nyes shared-line | head -c 100000 > out.bin\n";
    let a = Machine::new("A", &nginx.url("dedup")).with_tool(tool);
    assert_success(&a.call(&["--salt", "a", "-o", "out.bin"]));
    a.push();
    let object = format!("/dedup/cas/{}", sha256_hex(&a.env.read("out.bin")));
    let puts_of_object = |requests: &[(String, String, u16)]| {
        requests
            .iter()
            .filter(|(method, uri, _)| method == "PUT" && *uri == object)
            .count()
    };
    let by_a = nginx.requests_under("dedup");
    assert!(puts_of_object(&by_a) >= 1, "A never sent out.bin: {by_a:?}");

    let b = Machine::new("B", &nginx.url("dedup")).with_tool(tool);
    assert_success(&b.call(&["--salt", "b", "-o", "out.bin"]));
    b.push();
    assert_eq!(
        nginx.files("dedup", "ac").len(),
        2,
        "B's entry is not on the server"
    );
    let by_b = nginx.requests_under("dedup")[by_a.len()..].to_vec();
    assert_eq!(
        puts_of_object(&by_b),
        0,
        "B sent an object the server had: {by_b:?}"
    );
}

#[test]
fn read_only_reads_but_never_writes() {
    let Some(nginx) = shared_nginx() else { return };
    let a = machine_a_stores(&nginx.url("readonly"));
    let before = snapshot(&nginx.data_path("readonly", ""));
    let logged = nginx.requests_under("readonly").len();

    let r = Machine::new("R", &nginx.url("readonly")).with("MEMO_REMOTE_MODE", "read-only");
    assert_replayed(&r.call_standard(), &r, &a);
    // A miss of its own: run and stored locally, never uploaded.
    let mut args = vec!["--salt", "r-only"];
    args.extend_from_slice(STANDARD_ARGS);
    assert_code(&r.call(&args), 3);
    assert_eq!(r.count(), 1);
    let _ = run_guarded(r.memo(["remote", "push"]));
    r.settle();

    let requests = nginx.requests_under("readonly")[logged..].to_vec();
    assert!(
        requests
            .iter()
            .any(|(m, u, _)| m == "GET" && u.contains("/ac/")),
        "the reader read nothing: {requests:?}"
    );
    let writes: Vec<_> = requests
        .iter()
        .filter(|(m, _, _)| !matches!(m.as_str(), "GET" | "HEAD"))
        .collect();
    assert!(writes.is_empty(), "a read-only reader wrote: {writes:?}");
    assert!(snapshot(&nginx.data_path("readonly", "")) == before);
    assert_eq!(r.stat("uploads"), 0);
}

#[test]
fn namespaces_keep_writers_apart_and_the_read_list_is_tried_in_order() {
    let Some(nginx) = shared_nginx() else { return };
    let url = nginx.url("namespaces");
    let a = Machine::new("A", &url).with("MEMO_REMOTE_NAMESPACE", "team-a");
    assert_code(&a.call_standard(), 3);
    a.push();

    let b = Machine::new("B", &url).with("MEMO_REMOTE_NAMESPACE", "team-b");
    assert_ran_itself(&b.call_standard(), &b, 0);
    assert_eq!(b.stat("remote_hits"), 0);
    b.push();

    // One key, two namespaces: two entries, neither named by the bare key.
    let key = a.only_key();
    assert_eq!(key, b.only_key(), "the two machines' keys differ");
    let names: Vec<String> = nginx
        .files("namespaces", "ac")
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(
        !names.contains(&key),
        "an entry is named by the bare key: {names:?}"
    );

    let c = Machine::new("C", &url)
        .with("MEMO_REMOTE_NAMESPACE", "team-c")
        .with("MEMO_REMOTE_READ", "team-empty,team-a");
    assert_replayed(&c.call_standard(), &c, &a);

    let d = Machine::new("D", &url)
        .with("MEMO_REMOTE_NAMESPACE", "team-d")
        .with("MEMO_REMOTE_READ", "team-b,team-a");
    assert_replayed(&d.call_standard(), &d, &b);
}

// ---------------------------------------------------------------------------------------
// Wrong answers from the server: a miss with one warning, never a wrong replay.

/// A stores the standard result under `prefix`, `tamper` edits the server's data (given
/// the path of out.bin's object), and B must run the command itself with one warning.
fn tampering_is_a_miss(prefix: &str, tamper: impl FnOnce(&Nginx, &Path)) {
    let Some(nginx) = shared_nginx() else { return };
    let a = machine_a_stores(&nginx.url(prefix));
    let object = nginx.data_path(
        prefix,
        &format!("cas/{}", sha256_hex(&a.env.read("out.bin"))),
    );
    assert!(
        object.exists(),
        "out.bin is not on the server as cas/<sha256>"
    );
    tamper(nginx, &object);

    let b = Machine::new("B", &nginx.url(prefix));
    let out = b.call_standard();
    assert_ran_itself(&out, &b, 1);
    assert_eq!(warnings(&out).len(), 1, "{out:?}");
    assert_eq!(b.stat("remote_hits"), 0);
}

#[test]
fn a_tampered_object_on_the_server_is_a_miss_with_one_warning() {
    tampering_is_a_miss("tampered", |_, object| {
        let mut bytes = fs::read(object).unwrap();
        bytes[1000] = b'y';
        fs::write(object, bytes).unwrap();
    });
}

#[test]
fn a_truncated_object_on_the_server_is_a_miss_with_one_warning() {
    tampering_is_a_miss("truncated", |_, object| {
        let bytes = fs::read(object).unwrap();
        fs::write(object, &bytes[..bytes.len() / 2]).unwrap();
    });
}

#[test]
fn a_substituted_object_on_the_server_is_a_miss_with_one_warning() {
    tampering_is_a_miss("substituted", |nginx, object| {
        // Another object's bytes, themselves valid, under out.bin's name.
        let other = nginx
            .files("substituted", "cas")
            .into_iter()
            .find(|p| p != object)
            .expect("the server holds no other object");
        fs::copy(other, object).unwrap();
    });
}

#[test]
fn a_garbage_entry_on_the_server_is_a_miss_with_one_warning() {
    tampering_is_a_miss("garbage-ac", |nginx, _| {
        let entries = nginx.files("garbage-ac", "ac");
        assert!(!entries.is_empty());
        for entry in entries {
            fs::write(entry, b"\x08\xff\xff garbage, not an ActionResult \x00").unwrap();
        }
    });
}

#[test]
fn a_tampered_object_on_s3_is_a_miss_with_one_warning() {
    let Some(moto) = shared_moto() else { return };
    moto.create_bucket("tampered-s3");
    let a = Machine::on_s3("A", moto, "tampered-s3");
    assert_code(&a.call_standard(), 3);
    a.push();
    let key = format!("team/cas/{}", sha256_hex(&a.env.read("out.bin")));
    let mut bytes = moto
        .get_object("tampered-s3", &key)
        .expect("out.bin is not in the bucket as team/cas/<sha256>");
    bytes[1000] = b'y';
    moto.put_object("tampered-s3", &key, &bytes);

    let b = Machine::on_s3("B", moto, "tampered-s3");
    let out = b.call_standard();
    assert_ran_itself(&out, &b, 1);
    assert_eq!(warnings(&out).len(), 1, "{out:?}");
}

#[test]
fn a_corrupt_object_is_uploaded_again_by_the_next_writer_with_the_good_bytes() {
    let Some(nginx) = shared_nginx() else { return };
    // out.bin is the same on every machine; stdout says which machine ran.
    let tool = "echo \"ran on $(cat machine)\"\nyes good-line | head -c 100000 > out.bin\n";
    let a = Machine::new("A", &nginx.url("heal")).with_tool(tool);
    assert_success(&a.call(&["-o", "out.bin"]));
    a.push();
    let good = a.env.read("out.bin");
    let object = nginx.data_path("heal", &format!("cas/{}", sha256_hex(&good)));
    let mut bad = fs::read(&object).unwrap();
    bad[10] = b'X';
    fs::write(&object, &bad).unwrap();

    let b = Machine::new("B", &nginx.url("heal")).with_tool(tool);
    let out = b.call(&["-o", "out.bin"]);
    assert_success(&out);
    assert_eq!(b.count(), 1, "B replayed a corrupt object");
    assert_eq!(stdout(&out), "ran on B\n");
    assert_eq!(warnings(&out).len(), 1, "{out:?}");
    b.push();
    eventually("B uploads the good bytes over the corrupt ones", || {
        fs::read(&object).is_ok_and(|bytes| bytes == good)
    });

    let c = Machine::new("C", &nginx.url("heal")).with_tool(tool);
    let out = c.call(&["-o", "out.bin"]);
    assert_success(&out);
    assert_eq!(c.count(), 0);
    assert_eq!(c.env.read("out.bin"), good);
}

// ---------------------------------------------------------------------------------------
// Signing.

#[test]
fn a_reader_with_a_signing_key_rejects_unsigned_and_wrongly_signed_entries() {
    let Some(nginx) = shared_nginx() else { return };
    for (prefix, writer_key) in [("sign-none", None), ("sign-other", Some("other-key"))] {
        let mut a = Machine::new("A", &nginx.url(prefix));
        if let Some(key) = writer_key {
            a = a.with("MEMO_REMOTE_SIGNING_KEY", key);
        }
        assert_code(&a.call_standard(), 3);
        a.push();
        assert!(!nginx.files(prefix, "ac").is_empty());

        let b = Machine::new("B", &nginx.url(prefix)).with("MEMO_REMOTE_SIGNING_KEY", "team-key");
        let out = b.call_standard();
        assert_ran_itself(&out, &b, 1);
        assert!(b.stat("remote_rejected") >= 1, "{prefix}: {}", b.stats());
        assert_eq!(b.stat("remote_hits"), 0);
        assert!(
            b.event_kinds().iter().any(|k| k == "rejected"),
            "{prefix}: {:?}",
            b.event_kinds()
        );
    }
}

#[test]
fn a_reader_with_the_writers_signing_key_replays() {
    let Some(nginx) = shared_nginx() else { return };
    let a = Machine::new("A", &nginx.url("sign-same")).with("MEMO_REMOTE_SIGNING_KEY", "team-key");
    assert_code(&a.call_standard(), 3);
    a.push();
    let b = Machine::new("B", &nginx.url("sign-same")).with("MEMO_REMOTE_SIGNING_KEY", "team-key");
    assert_replayed(&b.call_standard(), &b, &a);
    assert_eq!(b.stat("remote_rejected"), 0);
}

// ---------------------------------------------------------------------------------------
// Faults: output and exit code pass through; the breaker skips a dead server.

#[test]
fn a_server_stopped_after_the_store_costs_the_reader_nothing_but_a_warning() {
    let Some(nginx) = Nginx::start() else { return };
    machine_a_stores(&nginx.url("stopped"));
    nginx.stop();
    let b = Machine::new("B", &nginx.url("stopped"));
    assert_ran_itself(&b.call_standard(), &b, 1);
}

#[test]
fn a_refused_connection_passes_output_and_exit_code_through() {
    let m = Machine::new("M", &servers::refusing_url());
    assert_ran_itself(&m.call_standard(), &m, 1);
    assert!(m.stat("remote_errors") >= 1, "{}", m.stats());
}

#[test]
fn http_500_passes_output_and_exit_code_through() {
    let Some(nginx) = shared_nginx() else { return };
    let m = Machine::new("M", &nginx.url("fail500/x"));
    assert_ran_itself(&m.call_standard(), &m, 1);
    assert!(
        nginx
            .requests_under("fail500/x")
            .iter()
            .any(|(_, _, status)| *status == 500),
        "memo never asked the server"
    );
}

#[test]
fn http_403_passes_output_and_exit_code_through() {
    let Some(nginx) = shared_nginx() else { return };
    let m = Machine::new("M", &nginx.url("forbid/x"));
    assert_ran_itself(&m.call_standard(), &m, 1);
    assert!(nginx
        .requests_under("forbid/x")
        .iter()
        .any(|(_, _, status)| *status == 403));
}

#[test]
fn a_silent_server_passes_output_and_exit_code_through() {
    let silent = Silent::start();
    let m = Machine::new("M", &silent.url("x"));
    assert_ran_itself(&m.call_standard(), &m, 1);
    assert!(silent.connections() >= 1, "memo never connected");
}

#[test]
fn after_three_failures_the_breaker_skips_the_remote() {
    let silent = Silent::start();
    // Read-only: only lookups talk to the server, no detached upload adds attempts.
    let m = Machine::new("M", &silent.url("x")).with("MEMO_REMOTE_MODE", "read-only");
    for salt in ["1", "2", "3"] {
        let out = m.call(&["--salt", salt]);
        assert_code(&out, 3);
        assert!(warnings(&out).len() <= 1, "{out:?}");
    }
    let connections = silent.connections();
    assert!(connections >= 3, "{connections} connections for 3 lookups");
    let out = m.call(&["--salt", "4"]);
    assert_code(&out, 3);
    assert_eq!(m.count(), 4);
    assert_eq!(
        silent.connections(),
        connections,
        "an open breaker still connected"
    );
    assert!(m.stat("breaker_trips") >= 1, "{}", m.stats());
    assert!(m.stat("remote_errors") >= 3, "{}", m.stats());
    assert!(m.event_kinds().iter().any(|k| k == "breaker-trip"));
}

#[test]
fn remote_check_ignores_an_open_breaker_and_closes_it() {
    let Some(nginx) = Nginx::start() else { return };
    let m = Machine::new("M", &nginx.url("breaker")).with("MEMO_REMOTE_MODE", "read-only");
    nginx.stop();
    for salt in ["1", "2", "3"] {
        assert_code(&m.call(&["--salt", salt]), 3);
    }
    assert!(m.stat("breaker_trips") >= 1, "{}", m.stats());
    if !nginx.restart() {
        return;
    }
    let logged = nginx.requests().len();
    assert_code(&m.call(&["--salt", "4"]), 3);
    assert_eq!(
        nginx.requests().len(),
        logged,
        "an open breaker asked the server"
    );

    // The breaker is the URL's, whatever the mode: check in full, with writes.
    let mut check = m.memo(["remote", "check"]);
    check.env("MEMO_REMOTE_MODE", "read-write");
    assert_success(&run_guarded(check));
    assert!(
        nginx.requests().len() > logged,
        "check did not reach the server"
    );

    let logged = nginx.requests().len();
    assert_code(&m.call(&["--salt", "5"]), 3);
    assert!(
        nginx.requests()[logged..]
            .iter()
            .any(|(_, uri, _)| uri.contains("/ac/")),
        "the breaker stayed open after a successful check: {:?}",
        &nginx.requests()[logged..]
    );
    assert_eq!(m.count(), 5);
}

// ---------------------------------------------------------------------------------------
// memo remote check, memo config.

fn merged_lowercase(out: &Output) -> String {
    format!("{}{}", stdout(out), stderr(out)).to_lowercase()
}

#[test]
fn remote_check_succeeds_against_nginx_and_reports_each_step() {
    let Some(nginx) = shared_nginx() else { return };
    let m = Machine::new("M", &nginx.url("check-ok"));
    let out = run_guarded(m.memo(["remote", "check"]));
    assert_success(&out);
    let report = merged_lowercase(&out);
    for step in ["put", "get", "head"] {
        assert!(report.contains(step), "no {step} step in {report:?}");
    }
    let methods: Vec<String> = nginx
        .requests_under("check-ok")
        .into_iter()
        .map(|(m, _, _)| m)
        .collect();
    for method in ["PUT", "GET", "HEAD", "DELETE"] {
        assert!(
            methods.iter().any(|m| m == method),
            "no {method}: {methods:?}"
        );
    }
    assert!(
        files_under(&nginx.data_path("check-ok", "")).is_empty(),
        "the probe object was left behind"
    );
}

#[test]
fn remote_check_succeeds_against_s3() {
    let Some(moto) = shared_moto() else { return };
    moto.create_bucket("check-s3");
    let m = Machine::on_s3("M", moto, "check-s3");
    let out = run_guarded(m.memo(["remote", "check"]));
    assert_success(&out);
    assert!(merged_lowercase(&out).contains("put"), "{out:?}");
}

#[test]
fn remote_check_fails_against_a_refused_port_and_says_what_failed() {
    let m = Machine::new("M", &servers::refusing_url());
    let out = run_guarded(m.memo(["remote", "check"]));
    assert_code(&out, 1);
    let report = merged_lowercase(&out);
    assert!(
        ["put", "connect", "refused"]
            .iter()
            .any(|w| report.contains(w)),
        "does not say what failed: {report:?}"
    );
}

#[test]
fn remote_check_without_a_remote_exits_125() {
    let m = Machine::new("M", "");
    let out = run_guarded(m.memo(["remote", "check"]));
    assert_one_line_error(&out, 125, "remote");
    assert!(!stderr(&out).contains("unrecognized"), "{out:?}");
}

#[test]
fn config_shows_the_remote_with_every_secret_masked() {
    let m = Machine::new("M", "http://memo:pw-in-url-741@127.0.0.1:9/team/")
        .with("MEMO_REMOTE_PASSWORD", "pw-in-env-852")
        .with("MEMO_REMOTE_TOKEN", "token-963")
        .with("MEMO_REMOTE_SIGNING_KEY", "signing-key-159")
        .with("MEMO_REMOTE_NAMESPACE", "team-ns")
        .with("MEMO_REMOTE_READ", "team-ns,main-ns")
        .with("MEMO_REMOTE_MODE", "read-only");
    let out = m.memo(["config"]).output().unwrap();
    assert_success(&out);
    let shown = stdout(&out);
    for wanted in ["127.0.0.1:9/team", "***", "team-ns", "main-ns", "read-only"] {
        assert!(shown.contains(wanted), "{wanted:?} missing from {shown}");
    }
    for secret in [
        "pw-in-url-741",
        "pw-in-env-852",
        "token-963",
        "signing-key-159",
    ] {
        assert!(!shown.contains(secret), "{secret:?} shown in {shown}");
        assert!(!stderr(&out).contains(secret));
    }
}

/// `memo config` says whether objects travel compressed, and from where that comes.
#[test]
fn config_shows_the_remote_compression_and_its_source() {
    let line = |m: &Machine| {
        let out = m.memo(["config"]).output().unwrap();
        assert_success(&out);
        let shown = stdout(&out);
        shown
            .lines()
            .find(|l| l.split_whitespace().next() == Some("remote_compression"))
            .unwrap_or_else(|| panic!("no remote_compression line in {shown}"))
            .to_string()
    };
    let plain = line(&Machine::new("M", "http://127.0.0.1:9/team/"));
    assert!(
        plain.contains("off") && plain.contains("default"),
        "{plain}"
    );
    let zstd = line(
        &Machine::new("M", "http://127.0.0.1:9/team/").with("MEMO_REMOTE_COMPRESSION", "zstd"),
    );
    assert!(
        zstd.contains("zstd") && zstd.contains("MEMO_REMOTE_COMPRESSION"),
        "{zstd}"
    );
}

#[test]
fn the_remote_flag_and_the_config_file_select_the_remote() {
    let Some(nginx) = shared_nginx() else { return };
    let url = nginx.url("selected");
    let a = Machine::new("A", "");
    let out = run_guarded(
        a.memo(
            ["--remote", url.as_str(), "run", "--ignore-cwd"]
                .into_iter()
                .chain(STANDARD_ARGS.iter().copied())
                .chain(["--", "./tool"]),
        ),
    );
    assert_code(&out, 3);
    assert_success(&run_guarded(a.memo([
        "--remote",
        url.as_str(),
        "remote",
        "push",
    ])));
    assert!(!nginx.files("selected", "ac").is_empty());

    let b = Machine::new("B", "");
    let config = b.env.root.path().join("home/.config/memo/config.toml");
    fs::create_dir_all(config.parent().unwrap()).unwrap();
    fs::write(&config, format!("remote = \"{url}\"\n")).unwrap();
    let b = Machine {
        vars: Vec::new(),
        ..b
    };
    assert_replayed(&b.call_standard(), &b, &a);
}

// ---------------------------------------------------------------------------------------
// Credentials and TLS.

#[test]
fn basic_auth_from_the_url_and_from_the_environment() {
    let Some(nginx) = shared_nginx() else { return };
    let in_url = format!(
        "http://{BASIC_USER}:{BASIC_PASSWORD}@127.0.0.1:{}/basic/auth-url/",
        nginx.port()
    );
    let a = machine_a_stores(&in_url);
    assert!(!nginx.files("basic/auth-url", "ac").is_empty());
    let b = Machine::new("B", &in_url);
    assert_replayed(&b.call_standard(), &b, &a);

    let env_auth = |name: &str| {
        Machine::new(name, &nginx.url("basic/auth-env"))
            .with("MEMO_REMOTE_USER", BASIC_USER)
            .with("MEMO_REMOTE_PASSWORD", BASIC_PASSWORD)
    };
    let a = env_auth("A");
    assert_code(&a.call_standard(), 3);
    a.push();
    assert!(!nginx.files("basic/auth-env", "ac").is_empty());
    let b = env_auth("B");
    assert_replayed(&b.call_standard(), &b, &a);
}

#[test]
fn a_bearer_token_is_sent() {
    let Some(nginx) = shared_nginx() else { return };
    let a = Machine::new("A", &nginx.url("bearer/token")).with("MEMO_REMOTE_TOKEN", BEARER_TOKEN);
    assert_code(&a.call_standard(), 3);
    a.push();
    assert!(!nginx.files("bearer/token", "ac").is_empty());
    let b = Machine::new("B", &nginx.url("bearer/token")).with("MEMO_REMOTE_TOKEN", BEARER_TOKEN);
    assert_replayed(&b.call_standard(), &b, &a);
}

#[test]
fn wrong_credentials_are_a_miss_with_a_warning() {
    let Some(nginx) = shared_nginx() else { return };
    let a = Machine::new("A", &nginx.url("basic/wrong"))
        .with("MEMO_REMOTE_USER", BASIC_USER)
        .with("MEMO_REMOTE_PASSWORD", BASIC_PASSWORD);
    assert_code(&a.call_standard(), 3);
    a.push();
    let bearer =
        Machine::new("A", &nginx.url("bearer/wrong")).with("MEMO_REMOTE_TOKEN", BEARER_TOKEN);
    assert_code(&bearer.call_standard(), 3);
    bearer.push();

    let wrong_password = Machine::new("B", &nginx.url("basic/wrong"))
        .with("MEMO_REMOTE_USER", BASIC_USER)
        .with("MEMO_REMOTE_PASSWORD", "not-the-password");
    let wrong_token =
        Machine::new("B", &nginx.url("bearer/wrong")).with("MEMO_REMOTE_TOKEN", "nope");
    for b in [wrong_password, wrong_token] {
        let out = b.call_standard();
        assert_ran_itself(&out, &b, 1);
        assert_eq!(warnings(&out).len(), 1, "{out:?}");
    }
}

#[test]
fn https_with_a_private_ca_replays_and_without_it_misses() {
    let Some(nginx) = shared_nginx() else { return };
    let url = nginx.https_url("tls-replay");
    let ca = nginx.ca_file().display().to_string();
    let a = Machine::new("A", &url).with("MEMO_REMOTE_CA", &ca);
    assert_code(&a.call_standard(), 3);
    a.push();
    assert!(!nginx.files("tls-replay", "ac").is_empty());
    let b = Machine::new("B", &url).with("MEMO_REMOTE_CA", &ca);
    assert_replayed(&b.call_standard(), &b, &a);

    let untrusting = Machine::new("C", &url);
    let out = untrusting.call_standard();
    assert_ran_itself(&out, &untrusting, 1);
    assert_eq!(warnings(&out).len(), 1, "{out:?}");
}

// ---------------------------------------------------------------------------------------
// Many clients, the cache's own commands, large outputs.

#[test]
fn eight_clients_at_once_never_replay_a_wrong_result() {
    let Some(nginx) = shared_nginx() else { return };
    // out.bin depends on the key only; stdout also names the machine that ran it.
    let tool = "printf 'key=%s machine=%s\\n' \"$WHICH\" \"$(cat machine)\"\n\
                yes \"key=$WHICH\" | head -c 100000 > out.bin\n";
    let expected_output = |which: &str| {
        let line = format!("key={which}\n");
        line.repeat(100000 / line.len() + 1).into_bytes()[..100000].to_vec()
    };
    let call = |m: &Machine, which: &str| {
        let mut cmd = m.memo([
            "run",
            "--ignore-cwd",
            "-e",
            "WHICH",
            "-o",
            "out.bin",
            "--",
            "./tool",
        ]);
        cmd.env("WHICH", which);
        let out = run_guarded(cmd);
        assert_success(&out);
        assert!(
            stdout(&out).starts_with(&format!("key={which} machine=")),
            "wrong replay for {which}: {out:?}"
        );
        assert_eq!(
            m.env.read("out.bin"),
            expected_output(which),
            "wrong out.bin for {which}"
        );
    };
    let shared = ["k0", "k1", "k2", "k3"];
    std::thread::scope(|scope| {
        for i in 0..8 {
            let nginx = &nginx;
            let call = &call;
            scope.spawn(move || {
                let m = Machine::new(&format!("m{i}"), &nginx.url("crowd")).with_tool(tool);
                let own = format!("own{i}");
                for which in [
                    shared[i % 4],
                    own.as_str(),
                    shared[(i + 1) % 4],
                    shared[i % 4],
                ] {
                    call(&m, which);
                }
                m.push();
            });
        }
    });
    let z = Machine::new("z", &nginx.url("crowd")).with_tool(tool);
    for i in 0..8 {
        call(&z, &format!("own{i}"));
    }
    for which in shared {
        call(&z, which);
    }
    assert_eq!(z.count(), 0, "every result was pushed, yet z ran some");
}

#[test]
fn gc_and_clear_never_delete_anything_on_the_server() {
    let Some(nginx) = shared_nginx() else { return };
    let a = machine_a_stores(&nginx.url("gc-keeps"));
    let before = snapshot(&nginx.data_path("gc-keeps", ""));
    assert!(!before.is_empty());
    assert_success(&run_guarded(a.memo([
        "gc",
        "--max-size",
        "0",
        "--grace",
        "0s",
    ])));
    assert_success(&run_guarded(a.memo(["clear"])));
    assert!(
        a.env.entries().is_empty(),
        "gc and clear left the local cache"
    );
    assert!(snapshot(&nginx.data_path("gc-keeps", "")) == before);
    assert!(nginx
        .requests_under("gc-keeps")
        .iter()
        .all(|(m, _, _)| m != "DELETE"));
    let b = Machine::new("B", &nginx.url("gc-keeps"));
    assert_replayed(&b.call_standard(), &b, &a);
}

/// Runs `cmd` under GNU time and returns its exit code, its peak resident set in KiB and
/// its stderr; None (saying why) without /usr/bin/time. Not wait4's rusage in this
/// process: Linux carries the parent's high-water mark into a child's `ru_maxrss`
/// across exec, so a child of this test process (which holds 50 MB files) would seem
/// as big as it.
fn run_measuring_rss(cmd: Command) -> Option<(i32, u64, String)> {
    let time = Path::new("/usr/bin/time");
    if !time.is_file() {
        if servers::servers_required() {
            panic!(
                "MEMO_TEST_REQUIRE_SERVERS=1 but /usr/bin/time is missing: apt-get install -y time"
            );
        }
        eprintln!("skipped: /usr/bin/time is missing; install it with: apt-get install -y time");
        return None;
    }
    let report = tempfile::NamedTempFile::new().unwrap();
    let mut timed = Command::new(time);
    timed
        .arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(report.path())
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .env_clear()
        .envs(
            cmd.get_envs()
                .filter_map(|(k, v)| v.map(|v| (k.to_os_string(), v.to_os_string()))),
        )
        .stdin(Stdio::null());
    if let Some(dir) = cmd.get_current_dir() {
        timed.current_dir(dir);
    }
    let out = run_guarded(timed);
    let report = fs::read_to_string(report.path()).unwrap();
    let rss = report
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no peak RSS from GNU time: {report:?}"));
    Some((out.status.code().unwrap_or(-1), rss, stderr(&out)))
}

#[test]
fn a_50_mb_output_is_pushed_and_replayed_in_bounded_memory() {
    let Some(nginx) = Nginx::start() else {
        return;
    };
    const LIMIT_KIB: u64 = 25 * 1024;
    let tool = "head -c 52428800 /dev/urandom > big.bin\necho made\n";
    // A's own call meets a stopped server: its detached upload fails and leaves the
    // result pending, so that the push below, once the server is back, uploads the 50 MB.
    let a = Machine::new("A", &nginx.url("big")).with_tool(tool);
    nginx.stop();
    assert_success(&a.call(&["-o", "big.bin"]));
    a.settle();
    nginx.restart();
    let Some((code, rss, err)) = run_measuring_rss(a.memo(["remote", "push"])) else {
        return;
    };
    assert_eq!(code, 0, "{err}");
    let big = a.env.read("big.bin");
    let object = nginx.data_path("big", &format!("cas/{}", sha256_hex(&big)));
    assert!(
        fs::read(&object).is_ok_and(|b| b == big),
        "the push did not upload the 50 MB object"
    );
    assert!(rss < LIMIT_KIB, "memo remote push peaked at {rss} KiB");

    let b = Machine::new("B", &nginx.url("big")).with_tool(tool);
    let Some((code, rss, err)) =
        run_measuring_rss(b.memo(["run", "--ignore-cwd", "-o", "big.bin", "--", "./tool"]))
    else {
        return;
    };
    assert_eq!(code, 0, "{err}");
    assert_eq!(b.count(), 0);
    assert!(b.env.read("big.bin") == big, "B's big.bin differs from A's");
    assert!(rss < LIMIT_KIB, "the remote hit peaked at {rss} KiB");
}

#[test]
fn a_result_too_large_for_the_server_is_dropped_and_the_next_one_still_goes_up() {
    let Some(nginx) = shared_nginx() else { return };
    // /small/ takes bodies up to 4 KiB: nginx answers 413 to the big result's object.
    let a = Machine::new("A", &nginx.url("small/too-large"));
    let big = [
        "run",
        "--ignore-cwd",
        "--",
        "sh",
        "-c",
        "head -c 100000 /dev/zero",
    ];
    let small = ["run", "--ignore-cwd", "--", "echo", "small"];
    assert_success(&run_guarded(a.memo(big)));
    assert_success(&run_guarded(a.memo(small)));
    a.settle();
    // The refused result is not retried forever, and did not hold up the small one.
    let out = run_guarded(a.memo(["remote", "push"]));
    assert_success(&out);
    assert!(stdout(&out).contains("uploaded 0 results"), "{out:?}");
    assert!(a.stat("remote_errors") >= 1, "{}", a.stats());
    let b = Machine::new("B", &nginx.url("small/too-large"));
    let out = run_guarded(b.memo(["run", "-v", "--ignore-cwd", "--", "echo", "small"]));
    assert_success(&out);
    assert_eq!(stdout(&out), "small\n");
    assert!(stderr(&out).contains("remote hit"), "{out:?}");
}

#[test]
fn apache_webdav_works_its_collections_made_on_the_first_409() {
    let Some(apache) = servers::Apache::start() else {
        return;
    };
    // Apache's mod_dav answers 409 to a PUT into a missing collection: memo makes them
    // (MKCOL) and puts again.
    let a = Machine::new("A", &apache.url("team/cache"));
    assert_code(&a.call_standard(), 3);
    a.push();
    assert!(!apache.files("team/cache", "ac").is_empty());
    assert!(!apache.files("team/cache", "cas").is_empty());
    let b = Machine::new("B", &apache.url("team/cache"));
    let out = b.call_standard();
    assert_code(&out, 3);
    assert_eq!(
        b.count(),
        0,
        "B ran the command instead of replaying A's result"
    );
    let out = run_guarded(b.memo(["remote", "check"]));
    assert_success(&out);
}

//! Traced runs (`memo run --trace`) shared through the shared cache tier, against the
//! real servers the harness starts (nginx WebDAV, Apache WebDAV, moto's S3). Two
//! machines share one work dir (a traced run's observations are absolute paths) and
//! nothing else: each has a cache dir of its own. Whether the command ran is told by the
//! stamp it prints first (the wall clock in nanoseconds, as in tests/cli/trace.rs): a
//! traced command's writes are its outputs, restored on a hit, so a file counter would
//! not do.
//!
//! Where the kernel refuses ptrace, each test says so on stderr and checks nothing.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::remote::{eventually, processes, run_guarded, sha256_hex, warnings};
use crate::support::servers::{self, shared_moto, shared_nginx, Moto};
use crate::support::*;

/// The traced command: a stamp, then the config it reads with `cat`, also copied to
/// out.txt, a file nobody declared.
const TOOL: &str = "date +%s%N\ncat conf\ncat conf > out.txt\n";

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// The work dir two machines share, with `./tool` and its `conf`.
fn site(conf: &str) -> TestEnv {
    let env = TestEnv::new();
    env.script("tool", TOOL);
    env.write("conf", conf);
    env
}

/// Whether `program --version` runs here; says on stderr when not.
fn available(program: &str) -> bool {
    let ok = Command::new(program)
        .arg("--version")
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("skipped: `{program} --version` does not work here");
    }
    ok
}

/// A machine: a cache dir of its own in the shared work dir, and its remote settings.
struct Machine<'a> {
    site: &'a TestEnv,
    name: &'static str,
    cache: tempfile::TempDir,
    vars: Vec<(String, String)>,
}

/// One traced call.
struct Call {
    out: Output,
    started_ns: u128,
}

impl Call {
    /// Whether the command ran in this call: its stamp is newer than the call.
    #[track_caller]
    fn ran(&self) -> bool {
        let text = stdout(&self.out);
        let stamp: u128 = text
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or_else(|| panic!("no stamp first on stdout: {:?}", self.out));
        stamp >= self.started_ns
    }

    /// What the command printed after its stamp.
    fn printed(&self) -> String {
        let text = stdout(&self.out);
        text.split_once('\n')
            .map_or(String::new(), |(_, rest)| rest.to_string())
    }
}

impl<'a> Machine<'a> {
    fn new(site: &'a TestEnv, name: &'static str, remote: &str) -> Machine<'a> {
        Machine {
            site,
            name,
            cache: tempfile::tempdir().unwrap(),
            vars: vec![("MEMO_REMOTE".into(), remote.into())],
        }
    }

    fn on_s3(site: &'a TestEnv, name: &'static str, moto: &Moto, bucket: &str) -> Machine<'a> {
        let mut machine = Machine::new(site, name, &format!("s3://{bucket}/team"));
        machine.vars.extend(moto.env());
        machine
    }

    fn with(mut self, name: &str, value: &str) -> Machine<'a> {
        self.vars.retain(|(k, _)| k != name);
        self.vars.push((name.into(), value.into()));
        self
    }

    fn memo<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = self.site.memo(args);
        cmd.env("MEMO_DIR", self.cache.path());
        cmd.envs(self.vars.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// `memo run --trace EXTRA -- ./tool ARGS`, which must succeed.
    #[track_caller]
    fn traced_with(&self, extra: &[&str], args: &[&str]) -> Call {
        let mut all = vec!["run", "--trace"];
        all.extend_from_slice(extra);
        all.push("--");
        all.push("./tool");
        all.extend_from_slice(args);
        let started_ns = now_ns();
        let out = run_guarded(self.memo(all));
        assert_success(&out);
        assert!(
            !stderr(&out).contains("not cached"),
            "{}: the traced run was not stored: {out:?}",
            self.name
        );
        Call { out, started_ns }
    }

    #[track_caller]
    fn traced(&self) -> Call {
        self.traced_with(&[], &[])
    }

    /// `memo remote push`, which must succeed, then waits for this machine's detached
    /// uploaders too, so that the server holds still.
    #[track_caller]
    fn push(&self) -> String {
        let out = run_guarded(self.memo(["remote", "push"]));
        assert_success(&out);
        self.settle();
        stdout(&out)
    }

    /// Waits until no memo process of this machine runs any more.
    #[track_caller]
    fn settle(&self) {
        let needle = format!("MEMO_DIR={}", self.cache.path().display()).into_bytes();
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

    /// One counter of `memo stats --json`.
    #[track_caller]
    fn stat(&self, name: &str) -> u64 {
        let out = self.memo(["stats", "--json"]).output().unwrap();
        assert_success(&out);
        let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        stats[name]
            .as_u64()
            .unwrap_or_else(|| panic!("no counter {name}: {stats}"))
    }

    /// The kinds of `memo log --json`, oldest first.
    fn event_kinds(&self) -> Vec<String> {
        let out = self.memo(["log", "--json", "-n", "1000"]).output().unwrap();
        stdout(&out)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .map(|e| e["event"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// The call keys of the traced calls this machine has manifests for.
    fn calls(&self) -> Vec<String> {
        files_under(&self.cache.path().join("manifests"))
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    }

    /// The keys of the results (runs) this machine holds.
    fn runs(&self) -> Vec<String> {
        let out = self.memo(["ls", "--json"]).output().unwrap();
        assert_success(&out);
        let listed: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
        listed
            .iter()
            .map(|e| e["key"].as_str().unwrap().to_string())
            .collect()
    }
}

fn bytes_of_hex(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

/// The name under `ac/` of the manifest of `call` in `namespace` (docs/remote.md).
fn manifest_name(namespace: &str, call: &str) -> String {
    let mut input = b"memo-remote-manifest-v1\0".to_vec();
    input.extend_from_slice(namespace.as_bytes());
    input.push(0);
    input.extend_from_slice(&bytes_of_hex(call));
    sha256_hex(&input)
}

/// The name under `ac/` of the entry `key` in `namespace`.
fn entry_name(namespace: &str, key: &str) -> String {
    let mut input = b"memo-remote-ac-v1\0".to_vec();
    input.extend_from_slice(namespace.as_bytes());
    input.push(0);
    input.extend_from_slice(&bytes_of_hex(key));
    sha256_hex(&input)
}

/// B replays what A recorded, with the file A's run wrote, without running. With an
/// edited config B runs and stores its own run; with a third config A runs and stores a
/// third, its manifest merged with the server's (which A's local one lacks B's run of),
/// so that A then finds B's run and a machine C that never ran finds all three.
fn two_machines_share_traced_runs(site: &TestEnv, a: &Machine, b: &Machine, c: &Machine) {
    let first = a.traced();
    assert!(first.ran());
    assert_eq!(first.printed(), "v1\n");
    a.push();

    fs::remove_file(site.path("out.txt")).unwrap();
    let replayed = b.traced();
    assert!(!replayed.ran(), "B ran the command: {:?}", replayed.out);
    assert_eq!(replayed.printed(), "v1\n");
    assert_eq!(site.read("out.txt"), b"v1\n", "the file A's run wrote");
    assert_eq!(b.stat("remote_hits"), 1);
    assert_eq!(warnings(&replayed.out), Vec::<String>::new());

    // B's input differs: B runs, and its run joins A's in the manifest on the server.
    site.write("conf", "v2\n");
    let second = b.traced();
    assert!(second.ran());
    assert_eq!(second.printed(), "v2\n");
    b.push();

    // A, which knows only its own run, records a third: its upload keeps B's.
    site.write("conf", "v3\n");
    let third = a.traced();
    assert!(third.ran());
    assert_eq!(third.printed(), "v3\n");
    a.push();

    // A has only its own runs; the server gives it B's.
    site.write("conf", "v2\n");
    let found = a.traced();
    assert!(!found.ran(), "A did not find B's run: {:?}", found.out);
    assert_eq!(found.printed(), "v2\n");
    // A machine that never ran the command finds all three runs.
    for conf in ["v1\n", "v2\n", "v3\n"] {
        site.write("conf", conf);
        fs::remove_file(site.path("out.txt")).unwrap();
        let call = c.traced();
        assert!(
            !call.ran(),
            "C did not find the run for {conf:?}: {:?}",
            call.out
        );
        assert_eq!(call.printed(), conf);
        assert_eq!(site.read("out.txt"), conf.as_bytes());
        assert_eq!(warnings(&call.out), Vec::<String>::new());
    }
    assert_eq!(c.stat("remote_hits"), 3);
}

#[test]
fn traced_runs_are_shared_through_nginx_and_manifests_merge() {
    let Some(nginx) = shared_nginx() else { return };
    if !traceable() {
        return;
    }
    let site = site("v1\n");
    let url = nginx.url("trace-share");
    let (a, b, c) = (
        Machine::new(&site, "A", &url),
        Machine::new(&site, "B", &url),
        Machine::new(&site, "C", &url),
    );
    two_machines_share_traced_runs(&site, &a, &b, &c);
}

#[test]
fn traced_runs_are_shared_through_apache() {
    let Some(apache) = servers::Apache::start() else {
        return;
    };
    if !traceable() {
        return;
    }
    let site = site("v1\n");
    let url = apache.url("trace");
    let (a, b, c) = (
        Machine::new(&site, "A", &url),
        Machine::new(&site, "B", &url),
        Machine::new(&site, "C", &url),
    );
    two_machines_share_traced_runs(&site, &a, &b, &c);
    assert!(!apache.files("trace", "ac").is_empty());
}

#[test]
fn traced_runs_are_shared_through_s3() {
    let Some(moto) = shared_moto() else { return };
    if !traceable() {
        return;
    }
    moto.create_bucket("trace-s3");
    let site = site("v1\n");
    let (a, b, c) = (
        Machine::on_s3(&site, "A", moto, "trace-s3"),
        Machine::on_s3(&site, "B", moto, "trace-s3"),
        Machine::on_s3(&site, "C", moto, "trace-s3"),
    );
    two_machines_share_traced_runs(&site, &a, &b, &c);
    let call = &a.calls()[0];
    let listed = moto.list("trace-s3");
    assert!(
        listed.contains(&format!("team/ac/{}", manifest_name("default", call))),
        "{listed:?}"
    );
}

/// The manifest goes up after the run it names (a reader never finds a manifest whose
/// newest run is not there yet), under its own name in the writer's namespace.
#[test]
fn the_manifest_is_uploaded_after_its_run() {
    let Some(nginx) = shared_nginx() else { return };
    if !traceable() {
        return;
    }
    let site = site("v1\n");
    let a =
        Machine::new(&site, "A", &nginx.url("trace-order")).with("MEMO_REMOTE_NAMESPACE", "main");
    assert!(a.traced().ran());
    a.push();
    let (call, run) = (&a.calls()[0], &a.runs()[0]);
    let put_at = |name: &str| {
        let path = format!("/trace-order/ac/{name}");
        nginx
            .requests_under("trace-order")
            .iter()
            .position(|(method, uri, status)| method == "PUT" && *uri == path && *status < 300)
            .unwrap_or_else(|| {
                panic!(
                    "no PUT of {path}: {:?}",
                    nginx.requests_under("trace-order")
                )
            })
    };
    assert!(put_at(&entry_name("main", run)) < put_at(&manifest_name("main", call)));
    // A reader of another namespace finds nothing.
    fs::remove_file(site.path("out.txt")).unwrap();
    let other = Machine::new(&site, "B", &nginx.url("trace-order"));
    assert!(other.traced().ran());
}

#[test]
fn a_read_only_machine_never_writes_a_manifest() {
    let Some(nginx) = shared_nginx() else { return };
    if !traceable() {
        return;
    }
    let site = site("v1\n");
    let a = Machine::new(&site, "A", &nginx.url("trace-ro"));
    assert!(a.traced().ran());
    a.push();
    let before = nginx.requests_under("trace-ro").len();
    site.write("conf", "v2\n");
    let b = Machine::new(&site, "B", &nginx.url("trace-ro")).with("MEMO_REMOTE_MODE", "read-only");
    assert!(b.traced().ran());
    b.settle();
    let writes: Vec<_> = nginx.requests_under("trace-ro")[before..]
        .iter()
        .filter(|(method, _, _)| method != "GET" && method != "HEAD")
        .cloned()
        .collect();
    assert_eq!(writes, Vec::new());
}

/// The envelope of the one manifest under `prefix` on nginx.
fn manifest_envelope(nginx: &servers::Nginx, prefix: &str) -> PathBuf {
    let found: Vec<PathBuf> = nginx
        .files(prefix, "cas")
        .into_iter()
        .filter(|p| {
            fs::read(p).is_ok_and(|b| String::from_utf8_lossy(&b).contains(r#""kind":"manifest""#))
        })
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    found[0].clone()
}

/// B ran the command itself after one warning about the manifest, and replayed nothing.
#[track_caller]
fn assert_ran_after_one_warning(call: &Call, b: &Machine) {
    assert!(call.ran(), "B replayed: {:?}", call.out);
    assert_eq!(call.printed(), "v1\n");
    let said = warnings(&call.out);
    assert_eq!(said.len(), 1, "{:?}", call.out);
    assert!(said[0].contains("manifest"), "{said:?}");
    assert_eq!(b.stat("remote_hits"), 0);
}

#[test]
fn a_tampered_manifest_is_a_miss_with_one_warning() {
    let Some(nginx) = shared_nginx() else { return };
    if !traceable() {
        return;
    }
    let site = site("v1\n");
    let a = Machine::new(&site, "A", &nginx.url("trace-tamper"));
    assert!(a.traced().ran());
    a.push();
    // A run key the manifest names, changed: the envelope no longer matches its digest.
    let envelope = manifest_envelope(nginx, "trace-tamper");
    let text = fs::read_to_string(&envelope).unwrap();
    let run = &a.runs()[0];
    let forged = "0".repeat(64);
    fs::write(&envelope, text.replace(run.as_str(), &forged)).unwrap();

    let b = Machine::new(&site, "B", &nginx.url("trace-tamper"));
    let call = b.traced();
    assert_ran_after_one_warning(&call, &b);
    assert!(b.stat("remote_errors") >= 1);
}

#[test]
fn a_manifest_planted_for_another_call_is_refused() {
    let Some(nginx) = shared_nginx() else { return };
    if !traceable() {
        return;
    }
    let site = site("v1\n");
    let a = Machine::new(&site, "A", &nginx.url("trace-plant"));
    assert!(a.traced().ran());
    let first = a.calls()[0].clone();
    assert!(a.traced_with(&[], &["other"]).ran());
    let second = a
        .calls()
        .into_iter()
        .find(|c| *c != first)
        .expect("a second call key");
    a.push();
    // The first call's manifest record, copied where the second call's goes.
    let record = |call: &str| {
        nginx.data_path(
            "trace-plant",
            &format!("ac/{}", manifest_name("default", call)),
        )
    };
    fs::copy(record(&first), record(&second)).unwrap();

    let b = Machine::new(&site, "B", &nginx.url("trace-plant"));
    let call = b.traced_with(&[], &["other"]);
    assert_ran_after_one_warning(&call, &b);
    assert!(
        warnings(&call.out)[0].contains("another key or namespace"),
        "{:?}",
        call.out
    );
}

#[test]
fn a_reader_with_a_signing_key_rejects_an_unsigned_or_wrongly_signed_manifest() {
    let Some(nginx) = shared_nginx() else { return };
    if !traceable() {
        return;
    }
    for (prefix, writer_key) in [
        ("trace-sign-none", None),
        ("trace-sign-other", Some("other-key")),
    ] {
        let site = site("v1\n");
        let mut a = Machine::new(&site, "A", &nginx.url(prefix));
        if let Some(key) = writer_key {
            a = a.with("MEMO_REMOTE_SIGNING_KEY", key);
        }
        assert!(a.traced().ran());
        a.push();
        let b = Machine::new(&site, "B", &nginx.url(prefix))
            .with("MEMO_REMOTE_SIGNING_KEY", "team-key");
        let call = b.traced();
        assert_ran_after_one_warning(&call, &b);
        assert!(
            warnings(&call.out)[0].contains("rejected"),
            "{:?}",
            call.out
        );
        // Its uploader replaces the manifest quietly: rejected once.
        b.settle();
        assert_eq!(b.stat("remote_rejected"), 1, "{prefix}");
        assert!(b.event_kinds().iter().any(|k| k == "rejected"));
    }
}

#[test]
fn a_reader_with_the_writers_signing_key_replays_a_traced_run() {
    let Some(nginx) = shared_nginx() else { return };
    if !traceable() {
        return;
    }
    let site = site("v1\n");
    let url = nginx.url("trace-sign-same");
    let a = Machine::new(&site, "A", &url).with("MEMO_REMOTE_SIGNING_KEY", "team-key");
    assert!(a.traced().ran());
    a.push();
    let text = fs::read_to_string(manifest_envelope(nginx, "trace-sign-same")).unwrap();
    assert!(text.contains(r#""sig":""#), "{text}");
    let b = Machine::new(&site, "B", &url).with("MEMO_REMOTE_SIGNING_KEY", "team-key");
    let call = b.traced();
    assert!(!call.ran(), "{:?}", call.out);
    assert_eq!(b.stat("remote_rejected"), 0);
}

#[test]
fn a_compiled_object_is_shared_with_its_header_checked() {
    let Some(nginx) = shared_nginx() else { return };
    if !traceable() || !available("gcc") {
        return;
    }
    let site = TestEnv::new();
    site.script("tool", "date +%s%N\ngcc -c main.c -o main.o\n");
    site.write("config.h", "#define ANSWER 42\n");
    site.write(
        "main.c",
        "#include \"config.h\"\nint answer(void) { return ANSWER; }\n",
    );
    let url = nginx.url("trace-gcc");
    let a = Machine::new(&site, "A", &url);
    assert!(a.traced().ran());
    let object = site.read("main.o");
    a.push();

    fs::remove_file(site.path("main.o")).unwrap();
    let b = Machine::new(&site, "B", &url);
    let call = b.traced();
    assert!(!call.ran(), "B compiled: {:?}", call.out);
    assert_eq!(site.read("main.o"), object, "main.o restored");

    // The header is an input nobody declared: B compiles again when it changes.
    site.write("config.h", "#define ANSWER 43\n");
    assert!(b.traced().ran());
    assert_ne!(site.read("main.o"), object);
}

#[test]
fn namespaces_are_read_in_order_and_their_manifests_merged() {
    let Some(nginx) = shared_nginx() else { return };
    if !traceable() {
        return;
    }
    let site = site("v1\n");
    let url = nginx.url("trace-ns");
    let main = Machine::new(&site, "main", &url).with("MEMO_REMOTE_NAMESPACE", "main");
    assert!(main.traced().ran());
    main.push();
    site.write("conf", "v2\n");
    let branch = Machine::new(&site, "branch", &url).with("MEMO_REMOTE_NAMESPACE", "branch");
    assert!(
        branch.traced().ran(),
        "the branch reads only its own namespace"
    );
    branch.push();

    let reader = Machine::new(&site, "reader", &url)
        .with("MEMO_REMOTE_MODE", "read-only")
        .with("MEMO_REMOTE_READ", "branch,main");
    for conf in ["v1\n", "v2\n"] {
        site.write("conf", conf);
        let call = reader.traced();
        assert!(!call.ran(), "{conf:?}: {:?}", call.out);
        assert_eq!(call.printed(), conf);
    }
    let main_only = Machine::new(&site, "main-reader", &url)
        .with("MEMO_REMOTE_MODE", "read-only")
        .with("MEMO_REMOTE_READ", "main");
    site.write("conf", "v2\n");
    assert!(
        main_only.traced().ran(),
        "main never holds the branch's run"
    );
}

#[test]
fn a_failing_server_costs_a_traced_call_one_warning_and_the_breaker_skips_it() {
    if !traceable() {
        return;
    }
    let site = site("v1\n");
    let m = Machine::new(&site, "M", &servers::refusing_url());
    let call = m.traced();
    assert!(call.ran());
    assert_eq!(warnings(&call.out).len(), 1, "{:?}", call.out);
    // The lookup and this machine's detached uploads fail; after 3 failures in a row
    // the breaker opens, and the next calls ask nothing.
    m.settle();
    let mut skipped = None;
    for _ in 0..3 {
        // A config no run recorded: every call would ask the server.
        site.write("conf", format!("{}\n", now_ns()));
        let call = m.traced_with(&["-v"], &[]);
        assert!(call.ran());
        assert!(warnings(&call.out).len() <= 1, "{:?}", call.out);
        m.settle();
        if stderr(&call.out).contains("shared cache skipped") {
            skipped = Some(call);
            break;
        }
    }
    let skipped = skipped.expect("the breaker never opened");
    assert_eq!(warnings(&skipped.out), Vec::<String>::new());
    assert!(m.stat("remote_errors") >= 3);
    assert!(m.stat("breaker_trips") >= 1);
    m.settle();
}

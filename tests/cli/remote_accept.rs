//! Acceptance of issue 9 (the shared cache tier) through the real binary, as a user coming
//! from ccache, bkt, sccache or Turborepo would try it: the variants of each requirement
//! that `remote.rs` and `remote_hostile.rs` do not already pin (flag placement, the config
//! file with its sources, read order, read-only from the config file, the on-server layout
//! decoded by hand, S3 session tokens, every stats key and log kind, `memo remote check` in
//! its modes and failures, the breaker per URL). Real servers only (nginx WebDAV, moto S3);
//! a raw listener only to see the request bytes an S3 client sends. Tests marked EXPOSES
//! fail on purpose: each names the gap it shows.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::support::servers::{self, shared_moto, shared_nginx};
use crate::support::*;

// ---------------------------------------------------------------------------------------
// Helpers.

/// The command every machine runs: stdout, stderr, a 64 KiB output file (above the 16 KiB
/// inline limit, so it goes to cas) and exit 3, stored with --cache-failures.
const TOOL: &str = r#"m=$(cat machine)
printf 'out from %s\n' "$m"
printf 'err from %s\n' "$m" >&2
{ head -c 65536 /dev/zero | tr '\0' 'y'; printf '%s' "$m"; } > big.bin
exit 3
"#;

/// A machine: a work dir and a cache dir of its own, and its environment.
struct Host {
    env: TestEnv,
    vars: Vec<(String, String)>,
}

fn machine(name: &str) -> Host {
    let env = TestEnv::new();
    env.write("machine", name);
    env.script("tool", &format!("echo run >> count\n{TOOL}"));
    Host {
        env,
        vars: Vec::new(),
    }
}

impl Host {
    fn with(mut self, k: &str, v: &str) -> Host {
        self.vars.retain(|(n, _)| n != k);
        self.vars.push((k.into(), v.into()));
        self
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = self.env.memo(args);
        cmd.envs(self.vars.iter().map(|(k, v)| (k, v)));
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        guarded(self.cmd(args))
    }

    /// `memo [before...] run --ignore-cwd --cache-failures -o big.bin [after...] -- ./tool`.
    fn call(&self, before: &[&str], after: &[&str]) -> Output {
        let mut args: Vec<&str> = before.to_vec();
        args.extend(["run", "--ignore-cwd", "--cache-failures", "-o", "big.bin"]);
        args.extend_from_slice(after);
        args.extend(["--", "./tool"]);
        self.run(&args)
    }

    fn count(&self) -> usize {
        self.env.count()
    }

    fn stats(&self) -> serde_json::Value {
        let out = self.run(&["stats", "--json"]);
        assert_success(&out);
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn kinds(&self) -> Vec<String> {
        let out = self.run(&["log", "--json", "-n", "1000"]);
        assert_success(&out);
        stdout(&out)
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["event"].as_str().unwrap_or_default().to_string()
            })
            .collect()
    }

    fn config_file(&self, text: &str) {
        let path = self.env.root.path().join("home/.config/memo/config.toml");
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    /// Pushes and waits until the log shows an `upload` (the detached uploader may be the
    /// one that sent it) and no memo of this machine still runs an upload.
    fn push_and_wait(&self) {
        let out = self.run(&["remote", "push"]);
        assert_success(&out);
        wait_for("an upload event", || {
            self.kinds().iter().any(|k| k == "upload")
        });
        let cache = self.env.cache().display().to_string();
        wait_for("the uploader ends", || !uploader_running(&cache));
    }
}

/// True while a `memo ... remote upload` with `MEMO_DIR=cache` runs.
fn uploader_running(cache: &str) -> bool {
    let needle = format!("MEMO_DIR={cache}").into_bytes();
    let Ok(dir) = fs::read_dir("/proc") else {
        return false;
    };
    dir.filter_map(|e| e.ok()).any(|e| {
        let p = e.path();
        let env = fs::read(p.join("environ")).unwrap_or_default();
        let cmdline = fs::read(p.join("cmdline")).unwrap_or_default();
        env.split(|&b| b == 0).any(|v| v == needle)
            && cmdline.split(|&b| b == 0).any(|a| a == b"upload")
    })
}

fn guarded(mut cmd: Command) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("out");
    let err_path = dir.path().join("err");
    cmd.stdout(fs::File::create(&out_path).unwrap())
        .stderr(fs::File::create(&err_path).unwrap());
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("memo hung for 120 s: {cmd:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: fs::read(out_path).unwrap(),
        stderr: fs::read(err_path).unwrap(),
    }
}

#[track_caller]
fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn warnings(out: &Output) -> Vec<String> {
    stderr(out)
        .lines()
        .filter(|l| l.starts_with("memo: warning:"))
        .map(str::to_string)
        .collect()
}

/// `b` replayed `a`'s result: a's stdout, stderr, exit code and big.bin; b's tool did not run.
#[track_caller]
fn assert_replays(out: &Output, b: &Host, a_name: &str) {
    assert_code(out, 3);
    assert_eq!(stdout(out), format!("out from {a_name}\n"));
    assert!(
        stderr(out).contains(&format!("err from {a_name}")),
        "{out:?}"
    );
    assert!(b.env.read("big.bin").ends_with(a_name.as_bytes()));
    assert_eq!(b.count(), 0, "b's command ran");
}

// ---------------------------------------------------------------------------------------
// A hand-written protobuf wire reader: the ActionResult is checked against REAPI's field
// numbers, not against memo's own proto.rs.

#[derive(Debug, Clone)]
enum Wire {
    Varint(u64),
    Bytes(Vec<u8>),
}

fn varint(b: &[u8], i: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    let mut shift = 0;
    loop {
        let byte = *b.get(*i)?;
        *i += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Some(value);
        }
        shift += 7;
        if shift > 63 {
            return None;
        }
    }
}

/// Every (field number, value) of a message, in order; None when it is not protobuf.
fn fields(b: &[u8]) -> Option<Vec<(u64, Wire)>> {
    let mut i = 0;
    let mut out = Vec::new();
    while i < b.len() {
        let tag = varint(b, &mut i)?;
        let value = match tag & 7 {
            0 => Wire::Varint(varint(b, &mut i)?),
            2 => {
                let n = varint(b, &mut i)? as usize;
                let v = b.get(i..i.checked_add(n)?)?.to_vec();
                i += n;
                Wire::Bytes(v)
            }
            1 => {
                i += 8;
                Wire::Bytes(Vec::new())
            }
            5 => {
                i += 4;
                Wire::Bytes(Vec::new())
            }
            _ => return None,
        };
        out.push((tag >> 3, value));
    }
    (i == b.len()).then_some(out)
}

fn bytes_of(fields: &[(u64, Wire)], number: u64) -> Vec<Vec<u8>> {
    fields
        .iter()
        .filter(|(n, _)| *n == number)
        .filter_map(|(_, v)| match v {
            Wire::Bytes(b) => Some(b.clone()),
            Wire::Varint(_) => None,
        })
        .collect()
}

fn varint_of(fields: &[(u64, Wire)], number: u64) -> Option<u64> {
    fields.iter().find_map(|(n, v)| match v {
        Wire::Varint(x) if *n == number => Some(*x),
        _ => None,
    })
}

/// An OutputFile (REAPI: path 1, digest 2 {hash 1, size_bytes 2}, is_executable 4,
/// contents 5) as (path, hash, size).
fn output_file(bytes: &[u8]) -> (String, String, u64) {
    let f = fields(bytes).expect("OutputFile is not protobuf");
    let path = String::from_utf8(bytes_of(&f, 1)[0].clone()).unwrap();
    let digest = fields(&bytes_of(&f, 2)[0]).expect("Digest is not protobuf");
    let hash = String::from_utf8(bytes_of(&digest, 1)[0].clone()).unwrap();
    let size = varint_of(&digest, 2).unwrap_or(0);
    (path, hash, size)
}

// ---------------------------------------------------------------------------------------
// Selection: the flag in every position, the config file, `memo config` with sources.

/// `--remote` after `run`, after `remote check` and before `remote`; `memo config` names
/// the flag as the source, and `--remote off` turns a configured remote off.
#[test]
fn accept_remote_flag_works_before_and_after_the_subcommand() {
    let Some(nginx) = shared_nginx() else { return };
    let url = nginx.url("accept-flag");
    let a = machine("A");
    assert_code(&a.call(&[], &["--remote", &url]), 3);
    assert_success(&a.run(&["remote", "push", "--remote", &url]));
    assert_success(&a.run(&["remote", "check", "--remote", &url]));
    assert_success(&a.run(&["remote", "--remote", &url, "check"]));
    wait_for("A's entry on the server", || {
        !nginx.files("accept-flag", "ac").is_empty()
    });

    let b = machine("B");
    assert_replays(&b.call(&[], &["--remote", &url]), &b, "A");

    let out = b.run(&["config", "--remote", &url]);
    assert_success(&out);
    let line = stdout(&out)
        .lines()
        .find(|l| l.starts_with("remote "))
        .unwrap_or_default()
        .to_string();
    assert!(
        line.contains("accept-flag") && line.contains("flag"),
        "{line:?}"
    );

    let c = machine("C").with("MEMO_REMOTE", &url);
    let out = c.call(&["--remote", "off"], &[]);
    assert_code(&out, 3);
    assert_eq!(c.count(), 1, "--remote off still replayed from the server");
}

/// ccache/sccache style: everything in the config file. `memo config` shows each remote
/// setting with the config file as its source and the URL's password masked; read-only
/// from the file never writes (nothing new on the server, push refused with 125 in one
/// line); `remote_read` is asked in order; MEMO_REMOTE_READ overrides it.
#[test]
fn accept_config_file_remote_read_only_and_read_order() {
    let Some(nginx) = shared_nginx() else { return };
    let prefix = "accept-config";
    let url = nginx.url(prefix);
    // Two writers compute the same key under two namespaces with different results.
    for (name, ns) in [("ONE", "ns1"), ("TWO", "ns2")] {
        let w = machine(name)
            .with("MEMO_REMOTE", &url)
            .with("MEMO_REMOTE_NAMESPACE", ns);
        assert_code(&w.call(&[], &[]), 3);
        w.push_and_wait();
    }
    let entries_before = nginx.files(prefix, "ac").len();
    assert_eq!(entries_before, 2);

    let url_with_password = url.replace("http://", "http://reader:pw-in-file-4711@");
    let r = machine("R");
    r.config_file(&format!(
        "remote = \"{url_with_password}\"\nremote_mode = \"read-only\"\n\
         remote_namespace = \"mine\"\nremote_read = \"ns2,ns1\"\n"
    ));
    let out = r.run(&["config"]);
    assert_success(&out);
    let shown = stdout(&out);
    assert!(!shown.contains("pw-in-file-4711"), "{shown}");
    for key in ["remote", "remote_mode", "remote_namespace", "remote_read"] {
        let line = shown
            .lines()
            .find(|l| l.split_whitespace().next() == Some(key))
            .unwrap_or_else(|| panic!("no {key} line in {shown}"));
        assert!(line.contains("config file"), "{line}");
    }

    assert_replays(&r.call(&[], &[]), &r, "TWO");

    // A command nobody computed: runs, and this read-only machine writes nothing.
    assert_success(&r.run(&["run", "--ignore-cwd", "--", "sh", "-c", "echo fresh"]));
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(nginx.files(prefix, "ac").len(), entries_before);
    let out = r.run(&["remote", "push"]);
    assert_one_line_error(&out, 125, "read-only");

    // MEMO_REMOTE_READ wins over the file: ns1 first.
    let r2 = machine("R2").with("MEMO_REMOTE_READ", "ns1,ns2");
    r2.config_file(&format!(
        "remote = \"{url}\"\nremote_mode = \"read-only\"\nremote_read = \"ns2,ns1\"\n"
    ));
    assert_replays(&r2.call(&[], &[]), &r2, "ONE");
    // A read list whose first namespace is empty on the server falls through to the next.
    let r3 = machine("R3")
        .with("MEMO_REMOTE", &url)
        .with("MEMO_REMOTE_MODE", "read-only")
        .with("MEMO_REMOTE_READ", "nobody-wrote-here,ns2");
    assert_replays(&r3.call(&[], &[]), &r3, "TWO");
}

// ---------------------------------------------------------------------------------------
// The layout on the server.

/// `ac/<hex>` is not the bare key and is an ActionResult (REAPI field numbers): exit code
/// 3, stdout and stderr raw, `.memo/entry` first naming the envelope, big.bin with its
/// digest; every `cas/<sha256>` holds bytes hashing to its name (big.bin's uncompressed
/// bytes among them); every cas object the entry names was PUT before the entry.
#[test]
fn accept_the_http_layout_is_the_bazel_one_and_objects_go_up_first() {
    let Some(nginx) = shared_nginx() else { return };
    let prefix = "accept-layout";
    let a = machine("A").with("MEMO_REMOTE", &nginx.url(prefix));
    assert_code(&a.call(&[], &[]), 3);
    a.push_and_wait();

    let key = a.env.listing()[0]["key"].as_str().unwrap().to_string();
    let acs = nginx.files(prefix, "ac");
    assert_eq!(acs.len(), 1, "{acs:?}");
    let ac_name = acs[0].file_name().unwrap().to_string_lossy().into_owned();
    assert_ne!(ac_name, key, "the entry is named by the bare key");
    assert_eq!(ac_name.len(), 64);

    for cas in nginx.files(prefix, "cas") {
        let name = cas.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(sha256_hex(&fs::read(&cas).unwrap()), name, "{cas:?}");
    }

    let ar = fields(&fs::read(&acs[0]).unwrap()).expect("ac is not protobuf");
    assert_eq!(varint_of(&ar, 4), Some(3), "exit_code");
    assert_eq!(
        bytes_of(&ar, 5),
        vec![b"out from A\n".to_vec()],
        "stdout_raw"
    );
    assert_eq!(
        bytes_of(&ar, 7),
        vec![b"err from A\n".to_vec()],
        "stderr_raw"
    );
    let files: Vec<_> = bytes_of(&ar, 2).iter().map(|b| output_file(b)).collect();
    assert_eq!(files[0].0, ".memo/entry", "{files:?}");
    let big = files
        .iter()
        .find(|f| f.0 == "big.bin")
        .unwrap_or_else(|| panic!("no big.bin in {files:?}"));
    let want = a.env.read("big.bin");
    assert_eq!(big.1, sha256_hex(&want));
    assert_eq!(big.2, want.len() as u64);
    for (path, hash, size) in &files {
        let object = nginx.data_path(prefix, &format!("cas/{hash}"));
        let bytes = fs::read(&object).unwrap_or_else(|_| panic!("{path}: {hash} not in cas"));
        assert_eq!(bytes.len() as u64, *size, "{path}");
    }
    let envelope: serde_json::Value = serde_json::from_slice(
        &fs::read(nginx.data_path(prefix, &format!("cas/{}", files[0].1))).unwrap(),
    )
    .expect("the envelope is JSON");
    assert_eq!(envelope["namespace"], "default");
    assert_eq!(envelope["key"], key.as_str());

    let log = nginx.requests_under(prefix);
    let ac_put = log
        .iter()
        .position(|(m, uri, _)| m == "PUT" && uri.contains("/ac/"))
        .expect("no ac PUT");
    for (_, hash, _) in &files {
        let put = log
            .iter()
            .position(|(m, uri, s)| m == "PUT" && uri.ends_with(hash) && *s < 300);
        assert!(
            put.is_some_and(|p| p < ac_put),
            "{hash} not PUT before the entry: {log:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// S3.

/// The request head of the first S3 call memo makes to a listener that answers 404.
fn first_s3_request(vars: &[(&str, &str)], remote: &str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut head = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        let mut s = stream;
        let _ = s
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        head
    });
    let mut m = machine("S")
        .with("AWS_ENDPOINT_URL", &format!("http://127.0.0.1:{port}"))
        .with("MEMO_REMOTE_MODE", "read-only");
    for (k, v) in vars {
        m = m.with(k, v);
    }
    assert_code(&m.call(&["--remote", remote], &[]), 3);
    handle.join().unwrap()
}

/// AWS_SESSION_TOKEN and AWS_REGION go into the SigV4 request; path-style with the prefix,
/// and without a prefix the key starts at `ac/`.
#[test]
fn accept_s3_sends_the_session_token_and_the_region() {
    let vars = [
        ("AWS_ACCESS_KEY_ID", "AKIDACCEPT"),
        ("AWS_SECRET_ACCESS_KEY", "secret-accept"),
        ("AWS_SESSION_TOKEN", "session-token-accept-42"),
        ("AWS_REGION", "eu-west-3"),
    ];
    let head = first_s3_request(&vars, "s3://accept-bkt/some/prefix");
    let first = head.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("GET /accept-bkt/some/prefix/ac/"),
        "{first}"
    );
    assert!(
        head.contains("session-token-accept-42"),
        "no session token: {head}"
    );
    assert!(
        head.contains("eu-west-3"),
        "not signed for the region: {head}"
    );
    assert!(head.contains("AWS4-HMAC-SHA256"), "not SigV4: {head}");
    assert!(
        !head.contains("secret-accept"),
        "the secret was sent: {head}"
    );

    let head = first_s3_request(&vars[..2], "s3://accept-bkt");
    let first = head.lines().next().unwrap_or_default();
    assert!(first.starts_with("GET /accept-bkt/ac/"), "{first}");
    assert!(head.contains("us-east-1"), "default region: {head}");
}

/// EXPOSES: a bucket that does not exist (a typo in MEMO_REMOTE, the bucket not created
/// yet) is silent: the lookup's 404 NoSuchBucket is a plain miss with no warning, the
/// detached uploader's PUT 404 is taken as "the server refused this result for good" and
/// dropped, and `memo remote push` then reports "uploaded 0 results" with exit 0. The
/// fleet gets a 100 % miss rate and nobody is told: the sccache complaint the issue cites.
/// The issue: a wrong answer from the server is a miss with one warning; the message
/// should name the problem (no such bucket) and the fix.
#[test]
fn accept_a_missing_s3_bucket_is_not_silent() {
    let Some(moto) = shared_moto() else { return };
    let mut m = machine("M").with("MEMO_REMOTE", "s3://accept-never-created/team");
    for (k, v) in moto.env() {
        m = m.with(&k, &v);
    }
    let run = m.call(&[], &[]);
    assert_code(&run, 3);
    std::thread::sleep(Duration::from_millis(1500));
    let cache = m.env.cache().display().to_string();
    wait_for("the uploader ends", || !uploader_running(&cache));
    let push = m.run(&["remote", "push"]);
    let told = format!("{}{}{}", stderr(&run), stdout(&push), stderr(&push))
        .replace("accept-never-created", "NAME")
        .to_lowercase();
    assert!(
        push.status.code() != Some(0) || told.contains("bucket"),
        "a missing bucket went unreported: run stderr {:?}, push {:?}",
        stderr(&run),
        push
    );
}

// ---------------------------------------------------------------------------------------
// Stats, log, check.

/// Every `memo stats --json` key the issue lists is a number, `memo stats` prints the
/// section, and the log kinds not pinned elsewhere (remote-miss, remote-error) appear.
#[test]
fn accept_stats_keys_and_log_kinds() {
    let Some(nginx) = shared_nginx() else { return };
    let a = machine("A").with("MEMO_REMOTE", &nginx.url("accept-stats"));
    assert_code(&a.call(&[], &[]), 3);
    a.push_and_wait();
    let stats = a.stats();
    for key in [
        "remote_hits",
        "remote_misses",
        "uploads",
        "remote_bytes_down",
        "remote_bytes_up",
        "remote_errors",
        "remote_rejected",
        "breaker_trips",
    ] {
        assert!(stats[key].is_u64(), "{key} missing: {stats}");
    }
    assert_eq!(stats["remote_misses"], 1, "{stats}");
    assert_eq!(stats["uploads"], 1, "{stats}");
    assert!(
        stats["remote_bytes_up"].as_u64().unwrap() >= 65536,
        "{stats}"
    );
    let text = stdout(&a.run(&["stats"])).to_lowercase();
    for label in ["remote hits", "uploads", "bytes up", "breaker"] {
        assert!(text.contains(label), "{label} missing: {text}");
    }
    let kinds = a.kinds();
    assert!(kinds.iter().any(|k| k == "remote-miss"), "{kinds:?}");

    let e = machine("E").with("MEMO_REMOTE", &servers::refusing_url());
    let out = e.call(&[], &[]);
    assert_code(&out, 3);
    assert_eq!(warnings(&out).len(), 1, "{out:?}");
    assert!(
        e.kinds().iter().any(|k| k == "remote-error"),
        "{:?}",
        e.kinds()
    );
    assert!(e.stats()["remote_errors"].as_u64().unwrap() >= 1);
}

/// Read-only `memo remote check` reads only: exit 0 and no PUT or DELETE on the server.
#[test]
fn accept_check_in_read_only_mode_writes_nothing() {
    let Some(nginx) = shared_nginx() else { return };
    let m = machine("M")
        .with("MEMO_REMOTE", &nginx.url("accept-check-ro"))
        .with("MEMO_REMOTE_MODE", "read-only");
    let out = m.run(&["remote", "check"]);
    assert_success(&out);
    assert!(stdout(&out).contains("ms"), "no latency: {}", stdout(&out));
    let log = nginx.requests_under("accept-check-ro");
    assert!(!log.is_empty());
    assert!(
        log.iter().all(|(m, _, _)| m == "GET" || m == "HEAD"),
        "{log:?}"
    );
}

/// `memo remote check` over https with MEMO_REMOTE_CA works; without the CA it fails
/// (exit 1) and says it is about the certificate.
#[test]
fn accept_check_over_https() {
    let Some(nginx) = shared_nginx() else { return };
    let url = nginx.https_url("accept-https");
    let ca = nginx.ca_file().display().to_string();
    let ok = machine("M")
        .with("MEMO_REMOTE", &url)
        .with("MEMO_REMOTE_CA", &ca);
    assert_success(&ok.run(&["remote", "check"]));
    let bad = machine("N").with("MEMO_REMOTE", &url);
    let out = bad.run(&["remote", "check"]);
    assert_code(&out, 1);
    let said = format!("{}{}", stdout(&out), stderr(&out)).to_lowercase();
    assert!(
        said.contains("certificate") || said.contains("tls"),
        "does not say it is TLS: {said}"
    );
}

/// EXPOSES: when the server answers 403 (credentials the server does not accept, or
/// read-only credentials on a read-write machine, the commonest misconfigurations),
/// `memo remote check` reports "HTTP 403 to PUT/HEAD/GET cas/<hex>" and ends with
/// "failed 3 of its checks": it names neither the problem (not allowed: credentials)
/// nor the fix (MEMO_REMOTE_USER/PASSWORD/TOKEN, or MEMO_REMOTE_MODE=read-only). Its
/// refused DELETE is also printed as "ok 1.8 ms". (Against a location that forbids only
/// writes, the HEAD and GET lines say "the object just written is not there": follow-on
/// failures of the same cause.) The brief: messages name the problem and the fix.
#[test]
fn accept_check_names_the_fix_when_writes_are_forbidden() {
    let Some(nginx) = shared_nginx() else { return };
    let m = machine("M").with("MEMO_REMOTE", &nginx.url("forbid/accept"));
    let out = m.run(&["remote", "check"]);
    assert_code(&out, 1);
    let said = format!("{}{}", stdout(&out), stderr(&out));
    assert!(said.contains("403"), "{said}");
    assert!(
        said.contains("MEMO_REMOTE_") || said.to_lowercase().contains("credentials"),
        "names no fix: {said}"
    );
}

/// The breaker is per remote URL: a dead server's open breaker does not stop the same
/// cache dir from using another server.
#[test]
fn accept_the_breaker_is_per_remote_url() {
    let Some(nginx) = shared_nginx() else { return };
    let url = nginx.url("accept-breaker");
    let a = machine("A").with("MEMO_REMOTE", &url);
    assert_code(&a.call(&[], &[]), 3);
    a.push_and_wait();

    let b = machine("B");
    let dead = servers::refusing_url();
    for i in 0..4 {
        let echo = format!("echo {i}");
        let out = b.run(&["--remote", &dead, "run", "--", "sh", "-c", &echo]);
        assert_success(&out);
        assert!(warnings(&out).len() <= 1, "{out:?}");
    }
    assert!(
        b.stats()["breaker_trips"].as_u64().unwrap() >= 1,
        "{}",
        b.stats()
    );
    assert_replays(&b.call(&["--remote", &url], &[]), &b, "A");
}

// ---------------------------------------------------------------------------------------
// Settings memo cannot use: exit 125, one line, naming the setting and what it takes.

/// A typo in the mode, a comma in the namespace, an empty name in the read list, s3://
/// without credentials, basic auth and a token together: the command does not run, one
/// line names the setting.
#[test]
fn accept_bad_remote_settings_are_one_line_invalid_invocations() {
    let url = "http://127.0.0.1:9/accept-bad/";
    for (var, value, mentions) in [
        ("MEMO_REMOTE_MODE", "read-onyl", "MEMO_REMOTE_MODE"),
        ("MEMO_REMOTE_NAMESPACE", "a,b", "MEMO_REMOTE_NAMESPACE"),
        ("MEMO_REMOTE_READ", "main,,pr", "MEMO_REMOTE_READ"),
        ("MEMO_REMOTE_TOKEN", "tok", "MEMO_REMOTE_TOKEN"),
    ] {
        let remote = if var == "MEMO_REMOTE_TOKEN" {
            url.replace("http://", "http://u:p@")
        } else {
            url.to_string()
        };
        let m = machine("M").with("MEMO_REMOTE", &remote).with(var, value);
        let out = m.call(&[], &[]);
        assert_one_line_error(&out, 125, mentions);
        assert_eq!(m.count(), 0, "{var}: the command ran");
    }
    // Missing S3 credentials depend on the machine, not on the invocation (a team's
    // config file names the bucket for everyone): one warning, and the command runs.
    let m = machine("M").with("MEMO_REMOTE", "s3://accept-bad/x");
    let out = m.call(&[], &[]);
    assert_code(&out, 3);
    assert_eq!(m.count(), 1);
    let err = stderr(&out);
    assert_eq!(
        err.lines().filter(|l| l.starts_with("memo:")).count(),
        1,
        "{err}"
    );
    assert!(err.contains("AWS_ACCESS_KEY_ID"), "{err}");
}

/// EXPOSES: errors in the config file's remote settings do not name the key. With
/// `remote_mode = "nope"` memo says `config file '...': "nope" is invalid: expected
/// read-write or read-only` (which key?), and with `remote_read = ["main", "pr"]` (a list,
/// as Turborepo-style configs write it) only `TOML parse error at line 2, column 15`:
/// neither says that `remote_read` takes one comma-separated string. The brief: one line
/// naming the problem and the fix.
#[test]
fn accept_config_file_errors_name_the_remote_key() {
    for (text, key) in [
        ("remote_mode = \"nope\"\n", "remote_mode"),
        ("remote_read = [\"main\", \"pr\"]\n", "remote_read"),
    ] {
        let m = machine("M");
        m.config_file(&format!("remote = \"http://127.0.0.1:9/x/\"\n{text}"));
        let out = m.call(&[], &[]);
        assert_code(&out, 125);
        assert_eq!(stderr(&out).lines().count(), 1, "{out:?}");
        assert!(
            stderr(&out).contains(key),
            "{key} not named: {}",
            stderr(&out)
        );
    }
}

// ---------------------------------------------------------------------------------------
// Counting faults.

/// EXPOSES: `breaker_trips` counts more than the breaker's trips. After one outage has
/// opened the breaker (3 failed calls: breaker_trips 1), each `memo remote push` (which
/// does call the dead server) logs another `breaker-trip` "3 failures in a row" after a
/// single failure, so two pushes within seconds make breaker_trips 3 for one outage.
/// The issue: `memo stats` adds breaker trips, a count of the times the breaker opened.
#[test]
fn accept_a_push_while_the_breaker_is_open_is_not_another_trip() {
    let dead = servers::refusing_url();
    let m = machine("M").with("MEMO_REMOTE", &dead);
    for i in 0..4 {
        let echo = format!("echo {i}");
        assert_success(&m.run(&["run", "--", "sh", "-c", &echo]));
    }
    let cache = m.env.cache().display().to_string();
    wait_for("the uploader ends", || !uploader_running(&cache));
    assert_eq!(m.stats()["breaker_trips"], 1, "{}", m.stats());
    for _ in 0..2 {
        assert_code(&m.run(&["remote", "push"]), 1);
    }
    assert_eq!(
        m.stats()["breaker_trips"],
        1,
        "one outage, several trips: {}",
        m.stats()
    );
}

/// EXPOSES: `memo run -v` says `memo: remote miss <key>` when the lookup failed (a
/// refused connection), while `memo stats` counts it as a remote error (remote_misses 0)
/// and `memo log` records `remote-error`: the verbose line tells a user debugging a 100 %
/// miss rate that the server answered "not found" when it did not answer at all.
#[test]
fn accept_verbose_does_not_call_a_failed_lookup_a_miss() {
    let m = machine("M").with("MEMO_REMOTE", &servers::refusing_url());
    let out = m.run(&["run", "-v", "--", "sh", "-c", "echo v"]);
    assert_success(&out);
    assert_eq!(warnings(&out).len(), 1, "{out:?}");
    assert!(
        !stderr(&out).contains("remote miss"),
        "a failed lookup reported as a miss: {}",
        stderr(&out)
    );
}

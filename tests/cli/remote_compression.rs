//! `MEMO_REMOTE_COMPRESSION=zstd`: objects go up as one zstd frame with
//! `Content-Encoding: zstd` and `X-Digest-SizeBytes`, and come down in bazel-remote's
//! form (a skippable frame, then one frame per MiB) or plain, against a small server
//! here that behaves as bazel-remote does on `cas/`. Without the setting, every byte
//! travels raw.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use crate::remote::{run_guarded, sha256_hex};
use crate::support::*;

/// One request as the server saw it: method, path, Content-Encoding, Accept-Encoding.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    content_encoding: Option<String>,
    accept_encoding: Option<String>,
}

#[derive(Default)]
struct State {
    /// Raw bytes by path, as bazel-remote keeps them.
    objects: HashMap<String, Vec<u8>>,
    seen: Vec<Seen>,
    /// Cut every zstd body this many bytes short (a frame truncated in transit).
    truncate_zstd: usize,
}

/// A bazel-remote stand-in on 127.0.0.1: PUT, GET and HEAD; one request a connection.
struct ZstdServer {
    port: u16,
    state: Arc<Mutex<State>>,
}

impl ZstdServer {
    fn start() -> ZstdServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State::default()));
        let shared = Arc::clone(&state);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let state = Arc::clone(&shared);
                std::thread::spawn(move || {
                    let _ = serve(stream, &state);
                });
            }
        });
        ZstdServer { port, state }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/memo", self.port)
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    fn object(&self, path: &str) -> Option<Vec<u8>> {
        self.state.lock().unwrap().objects.get(path).cloned()
    }
}

fn serve(stream: TcpStream, state: &Mutex<State>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let mut headers = HashMap::new();
    loop {
        let mut header = String::new();
        reader.read_line(&mut header)?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
        }
    }
    let length: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    let content_encoding = headers.get("content-encoding").cloned();
    let accept_encoding = headers.get("accept-encoding").cloned();
    let mut state = state.lock().unwrap();
    state.seen.push(Seen {
        method: method.clone(),
        path: path.clone(),
        content_encoding: content_encoding.clone(),
        accept_encoding: accept_encoding.clone(),
    });
    let is_cas = path.contains("/cas/");
    let (status, reply, encoding): (u16, Vec<u8>, Option<&str>) = match method.as_str() {
        "PUT" => {
            let raw = if content_encoding.as_deref() == Some("zstd") {
                let raw = zstd::stream::decode_all(&body[..]).unwrap_or_default();
                let size: Option<usize> = headers
                    .get("x-digest-sizebytes")
                    .and_then(|v| v.parse().ok());
                if size != Some(raw.len()) {
                    None
                } else {
                    Some(raw)
                }
            } else {
                Some(body)
            };
            // bazel-remote checks a cas/ body against its name.
            match raw {
                Some(raw) if !is_cas || path.ends_with(&sha256_hex(&raw)) => {
                    state.objects.insert(path, raw);
                    (200, Vec::new(), None)
                }
                _ => (400, Vec::new(), None),
            }
        }
        "GET" | "HEAD" => match state.objects.get(&path) {
            None => (404, Vec::new(), None),
            Some(raw) if is_cas && accept_encoding.as_deref() == Some("zstd") => {
                let mut framed = bazel_remote_frames(raw);
                framed.truncate(framed.len().saturating_sub(state.truncate_zstd));
                (200, framed, Some("zstd"))
            }
            Some(raw) => (200, raw.clone(), None),
        },
        _ => (405, Vec::new(), None),
    };
    drop(state);
    let mut stream = stream;
    let mut head = format!(
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
        reply.len()
    );
    if let Some(encoding) = encoding {
        head.push_str(&format!("Content-Encoding: {encoding}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    if method != "HEAD" {
        stream.write_all(&reply)?;
    }
    stream.flush()
}

/// bazel-remote's stored form: a skippable frame (its header of offsets), then one zstd
/// frame per MiB of the raw bytes.
fn bazel_remote_frames(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let header = b"an index of frame offsets".to_vec();
    out.extend_from_slice(&0x184D_2A50u32.to_le_bytes());
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(&header);
    for chunk in raw.chunks(1 << 20) {
        out.extend(zstd::bulk::compress(chunk, 1).unwrap());
    }
    out
}

/// 3 MB of text, compressed well.
const TEXT: &str =
    "for i in $(seq 1 100000); do echo \"line $((i % 97)) of a repetitive log\"; done; echo run >> count";

fn text_bytes() -> Vec<u8> {
    (1..=100000)
        .flat_map(|i| format!("line {} of a repetitive log\n", i % 97).into_bytes())
        .collect()
}

fn machine() -> TestEnv {
    let env = TestEnv::new();
    env.script("tool", TEXT);
    env
}

fn call(
    env: &TestEnv,
    server: &ZstdServer,
    compression: Option<&str>,
    args: &[&str],
) -> std::process::Output {
    let mut cmd = env.memo(args);
    cmd.env("MEMO_REMOTE", server.url());
    if let Some(value) = compression {
        cmd.env("MEMO_REMOTE_COMPRESSION", value);
    }
    run_guarded(cmd)
}

fn run_tool_anywhere(
    env: &TestEnv,
    server: &ZstdServer,
    compression: Option<&str>,
) -> std::process::Output {
    call(
        env,
        server,
        compression,
        &["run", "--ignore-cwd", "--", "./tool"],
    )
}

fn runs(env: &TestEnv) -> usize {
    std::fs::read_to_string(env.path("count")).map_or(0, |t| t.lines().count())
}

fn stored_by(server: &ZstdServer, compression: Option<&str>) -> TestEnv {
    let a = machine();
    let out = run_tool_anywhere(&a, server, compression);
    assert_success(&out);
    assert_eq!(out.stdout, text_bytes());
    assert_success(&call(&a, server, compression, &["remote", "push"]));
    a
}

#[test]
fn with_zstd_objects_go_up_compressed_and_come_down_in_bazel_remotes_frames() {
    let server = ZstdServer::start();
    stored_by(&server, Some("zstd"));
    let sha = sha256_hex(&text_bytes());
    let cas = format!("/memo/cas/{sha}");
    assert_eq!(
        server.object(&cas),
        Some(text_bytes()),
        "the server holds the raw bytes"
    );
    let put = server
        .seen()
        .into_iter()
        .find(|s| s.method == "PUT" && s.path == cas)
        .expect("the object was uploaded");
    assert_eq!(put.content_encoding.as_deref(), Some("zstd"));

    let b = machine();
    let out = run_tool_anywhere(&b, &server, Some("zstd"));
    assert_success(&out);
    assert_eq!(out.stdout, text_bytes());
    assert_eq!(runs(&b), 0, "the command ran on B");
    assert!(out.stderr.is_empty(), "{}", stderr(&out));
    let get = server
        .seen()
        .into_iter()
        .find(|s| s.method == "GET" && s.path == cas)
        .expect("the object was downloaded");
    assert_eq!(get.accept_encoding.as_deref(), Some("zstd"));
    // Kept compressed here, and replayed from there.
    let local = b.cache().join("objects").join(&sha[..2]).join(&sha);
    assert_eq!(std::fs::read(local).unwrap()[..4], [0x28, 0xB5, 0x2F, 0xFD]);
    let again = run_tool_anywhere(&b, &server, Some("zstd"));
    assert_eq!(again.stdout, text_bytes());
    assert_eq!(runs(&b), 0);
}

#[test]
fn without_the_setting_every_byte_travels_raw() {
    let server = ZstdServer::start();
    stored_by(&server, None);
    let b = machine();
    let out = run_tool_anywhere(&b, &server, None);
    assert_success(&out);
    assert_eq!(out.stdout, text_bytes());
    assert_eq!(runs(&b), 0);
    for seen in server.seen() {
        assert_eq!(seen.content_encoding, None, "{seen:?}");
        assert_eq!(seen.accept_encoding, None, "{seen:?}");
    }
}

#[test]
fn a_machine_with_zstd_reads_what_a_raw_machine_stored_and_the_other_way() {
    let server = ZstdServer::start();
    stored_by(&server, None);
    let b = machine();
    let out = run_tool_anywhere(&b, &server, Some("zstd"));
    assert_eq!(out.stdout, text_bytes());
    assert_eq!(runs(&b), 0);

    let other = ZstdServer::start();
    stored_by(&other, Some("zstd"));
    let c = machine();
    let out = run_tool_anywhere(&c, &other, None);
    assert_eq!(out.stdout, text_bytes());
    assert_eq!(runs(&c), 0);
}

#[test]
fn a_truncated_zstd_body_is_a_miss_never_replayed() {
    let server = ZstdServer::start();
    stored_by(&server, Some("zstd"));
    server.state.lock().unwrap().truncate_zstd = 7;
    let b = machine();
    let out = run_tool_anywhere(&b, &server, Some("zstd"));
    assert_success(&out);
    assert_eq!(out.stdout, text_bytes());
    assert_eq!(runs(&b), 1, "the command ran: the download was refused");
}

#[test]
fn remote_compression_takes_zstd_or_off_only() {
    let env = TestEnv::new();
    env.script("tool", "echo hi");
    let out = env
        .memo(["run", "--", "./tool"])
        .env("MEMO_REMOTE", "http://127.0.0.1:9/memo")
        .env("MEMO_REMOTE_COMPRESSION", "gzip")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("MEMO_REMOTE_COMPRESSION"),
        "{}",
        stderr(&out)
    );
}

//! The transport to a shared cache, through the library API (`remote::open_backend`),
//! against real servers on 127.0.0.1: nginx WebDAV (http, https, basic and bearer auth),
//! moto S3, a refused port and a listener that never answers. Raw TCP listeners stand in
//! only where a real server cannot be made to misbehave on cue (a truncated body) or to
//! show the request's bytes (Content-Length, never chunked).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use memo_cli::remote::backend::{Auth, Backend, Options, TransportError};
use memo_cli::remote::s3::S3Backend;
use sha2::{Digest, Sha256};

use crate::support::servers::{self, Moto};

fn open(url: &str) -> Box<dyn Backend> {
    memo_cli::remote::open_backend(url, &Options::default()).unwrap()
}

fn open_with(url: &str, options: Options) -> Box<dyn Backend> {
    memo_cli::remote::open_backend(url, &options).unwrap()
}

/// A bucket of its own on the shared moto, opened as `s3://BUCKET/prefix`.
fn s3_backend(moto: &Moto, bucket: &str) -> S3Backend {
    moto.create_bucket(bucket);
    let env = moto.env();
    let lookup = move |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    S3Backend::open_with_env(
        &format!("s3://{bucket}/prefix"),
        &Options::default(),
        &lookup,
    )
    .unwrap()
}

fn get_bytes(backend: &dyn Backend, path: &str) -> Result<Option<Vec<u8>>, TransportError> {
    let mut sink = Vec::new();
    Ok(backend.get(path, 1 << 20, &mut sink)?.map(|n| {
        assert_eq!(n, sink.len() as u64);
        sink
    }))
}

fn put_bytes(backend: &dyn Backend, path: &str, bytes: &[u8]) -> Result<(), TransportError> {
    backend.put(path, &mut &bytes[..], bytes.len() as u64)
}

/// put, head, get, delete, then head and get of the absent object, on any backend.
fn round_trip(backend: &dyn Backend) {
    let bytes = b"hello, shared cache".to_vec();
    assert_eq!(backend.head("cas/0001").unwrap(), None);
    assert_eq!(get_bytes(backend, "cas/0001").unwrap(), None);
    put_bytes(backend, "cas/0001", &bytes).unwrap();
    put_bytes(backend, "ac/0002", b"").unwrap();
    assert_eq!(backend.head("cas/0001").unwrap(), Some(bytes.len() as u64));
    assert_eq!(backend.head("ac/0002").unwrap(), Some(0));
    assert_eq!(get_bytes(backend, "cas/0001").unwrap(), Some(bytes.clone()));
    assert_eq!(get_bytes(backend, "ac/0002").unwrap(), Some(Vec::new()));
    // An overwrite replaces the object.
    put_bytes(backend, "cas/0001", b"second").unwrap();
    assert_eq!(
        get_bytes(backend, "cas/0001").unwrap(),
        Some(b"second".to_vec())
    );
    assert!(backend.delete("cas/0001").unwrap());
    assert_eq!(backend.head("cas/0001").unwrap(), None);
    assert_eq!(get_bytes(backend, "cas/0001").unwrap(), None);
    // Deleting what is absent is no failure (S3 answers 204, WebDAV 404).
    assert!(backend.delete("cas/0001").unwrap());
}

#[test]
fn webdav_round_trip() {
    let Some(nginx) = servers::shared_nginx() else {
        return;
    };
    let backend = open(&nginx.url("transport-round-trip"));
    round_trip(backend.as_ref());
    assert!(nginx.data_path("transport-round-trip", "ac/0002").is_file());
}

#[test]
fn webdav_url_without_trailing_slash_keeps_its_prefix() {
    let Some(nginx) = servers::shared_nginx() else {
        return;
    };
    let url = format!("http://127.0.0.1:{}/transport/no-slash", nginx.port());
    put_bytes(open(&url).as_ref(), "cas/00aa", b"x").unwrap();
    assert!(nginx.data_path("transport/no-slash", "cas/00aa").is_file());
}

#[test]
fn s3_round_trip() {
    let Some(moto) = servers::shared_moto() else {
        return;
    };
    let backend = s3_backend(moto, "transport-round-trip");
    round_trip(&backend);
    assert_eq!(moto.list("transport-round-trip"), ["prefix/ac/0002"]);
}

/// Reads `len` pseudo-random bytes without holding them.
struct Generated {
    remaining: u64,
    state: u64,
}

impl Generated {
    fn new(len: u64) -> Generated {
        Generated {
            remaining: len,
            state: 0x9e37_79b9_7f4a_7c15,
        }
    }
}

impl Read for Generated {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.remaining as usize);
        for byte in &mut buf[..n] {
            // xorshift64
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            *byte = self.state as u8;
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// A sink that hashes what it is given and keeps nothing.
struct Hashing(Sha256);

impl Write for Hashing {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn sha256_of(mut reader: impl Read) -> Vec<u8> {
    let mut sink = Hashing(Sha256::new());
    io::copy(&mut reader, &mut sink).unwrap();
    sink.0.finalize().to_vec()
}

/// The peak resident set of this process so far, in bytes (Linux).
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

const BIG: u64 = 64 << 20;

/// Streams a 64 MiB object up and back down, checking its hash and that the process
/// never held it.
fn streams_a_big_object(backend: &dyn Backend, what: &str) {
    let expected = sha256_of(Generated::new(BIG));
    let started = Instant::now();
    backend
        .put("cas/big", &mut Generated::new(BIG), BIG)
        .unwrap();
    let up = started.elapsed();
    assert_eq!(backend.head("cas/big").unwrap(), Some(BIG));
    let started = Instant::now();
    let mut sink = Hashing(Sha256::new());
    assert_eq!(backend.get("cas/big", BIG, &mut sink).unwrap(), Some(BIG));
    let down = started.elapsed();
    assert_eq!(sink.0.finalize().to_vec(), expected);
    let peak = peak_rss();
    eprintln!(
        "{what}: 64 MiB up in {up:?}, down in {down:?}; peak RSS of the test process {} MiB",
        peak.map_or("?".to_string(), |p| (p >> 20).to_string())
    );
    // Not asserted: other tests share this process (one holds 50 MB files), so its peak
    // says nothing about this transfer. memo's own bounded memory is checked end to end
    // in remote::a_50_mb_output_is_pushed_and_replayed_in_bounded_memory.
}

#[test]
fn webdav_streams_a_64_mib_object_both_ways() {
    let Some(nginx) = servers::shared_nginx() else {
        return;
    };
    streams_a_big_object(open(&nginx.url("transport-big")).as_ref(), "webdav");
}

#[test]
fn s3_streams_a_64_mib_object_both_ways() {
    let Some(moto) = servers::shared_moto() else {
        return;
    };
    streams_a_big_object(&s3_backend(moto, "transport-big"), "s3");
}

#[test]
fn a_body_larger_than_the_limit_fails_before_the_sink_sees_a_byte() {
    let Some(nginx) = servers::shared_nginx() else {
        return;
    };
    let backend = open(&nginx.url("transport-limit"));
    put_bytes(backend.as_ref(), "cas/1000", &[7u8; 1000]).unwrap();
    let mut sink = Vec::new();
    match backend.get("cas/1000", 999, &mut sink) {
        Err(TransportError::TooLarge { path, limit }) => {
            assert_eq!((path.as_str(), limit), ("cas/1000", 999));
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert!(sink.is_empty());
    assert_eq!(
        backend.get("cas/1000", 1000, &mut sink).unwrap(),
        Some(1000)
    );
}

#[test]
fn s3_limit_and_absence() {
    let Some(moto) = servers::shared_moto() else {
        return;
    };
    let backend = s3_backend(moto, "transport-limit");
    put_bytes(&backend, "cas/10", &[1u8; 10]).unwrap();
    let err = backend.get("cas/10", 9, &mut Vec::new()).unwrap_err();
    assert!(matches!(err, TransportError::TooLarge { .. }), "{err:?}");
    assert_eq!(backend.head("cas/none").unwrap(), None);
    assert_eq!(get_bytes(&backend, "ac/none").unwrap(), None);
}

/// A one-shot HTTP server on 127.0.0.1 that reads a request's head, answers `response`
/// and closes; returns its URL and a handle yielding the request head it read.
fn answer_once(response: &'static [u8]) -> (String, std::thread::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://127.0.0.1:{}/c/",
        listener.local_addr().unwrap().port()
    );
    let handle = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body).unwrap();
        let mut stream = reader.into_inner();
        stream.write_all(response).unwrap();
        head
    });
    (url, handle)
}

#[test]
fn a_body_shorter_than_its_content_length_is_truncated() {
    let (url, server) = answer_once(
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nConnection: close\r\n\r\n0123456789",
    );
    let err = open(&url)
        .get("cas/short", 1000, &mut Vec::new())
        .unwrap_err();
    match err {
        TransportError::Truncated {
            path,
            got,
            expected,
        } => assert_eq!((path.as_str(), got, expected), ("cas/short", 10, 100)),
        other => panic!("expected Truncated, got {other:?}"),
    }
    server.join().unwrap();
}

#[test]
fn a_body_without_length_that_runs_past_the_limit_is_too_large() {
    let (url, server) = answer_once(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
          8\r\n01234567\r\n8\r\n89abcdef\r\n0\r\n\r\n",
    );
    let err = open(&url)
        .get("cas/chunked", 12, &mut Vec::new())
        .unwrap_err();
    assert!(
        matches!(err, TransportError::TooLarge { limit: 12, .. }),
        "{err:?}"
    );
    server.join().unwrap();
}

#[test]
fn put_sends_a_content_length_and_is_never_chunked() {
    let (url, server) = answer_once(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n");
    let mut body = Generated::new(300_000);
    open(&url).put("cas/abc", &mut body, 300_000).unwrap();
    let head = server.join().unwrap().to_ascii_lowercase();
    assert!(head.starts_with("put /c/cas/abc http/1.1\r\n"), "{head}");
    assert!(head.contains("content-length: 300000\r\n"), "{head}");
    assert!(
        head.contains("content-type: application/octet-stream\r\n"),
        "{head}"
    );
    assert!(!head.contains("transfer-encoding"), "{head}");
}

#[test]
fn a_source_shorter_than_its_length_is_local_trouble() {
    let Some(nginx) = servers::shared_nginx() else {
        return;
    };
    let backend = open(&nginx.url("transport-short-source"));
    let err = backend.put("cas/short", &mut &b"abc"[..], 10).unwrap_err();
    assert!(matches!(err, TransportError::Local(_)), "{err:?}");
    assert!(!err.is_server_fault());
    assert!(err.to_string().contains("3 of 10"), "{err}");
    // A failing source, too.
    struct Failing;
    impl Read for Failing {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::other("disk on fire"))
        }
    }
    let err = backend.put("cas/failing", &mut Failing, 10).unwrap_err();
    assert!(matches!(err, TransportError::Local(_)), "{err:?}");
    assert!(err.to_string().contains("disk on fire"), "{err}");
}

#[test]
fn a_failing_sink_is_local_trouble() {
    let Some(nginx) = servers::shared_nginx() else {
        return;
    };
    let backend = open(&nginx.url("transport-failing-sink"));
    put_bytes(backend.as_ref(), "cas/x", b"some bytes").unwrap();
    struct Full;
    impl Write for Full {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::new(io::ErrorKind::StorageFull, "no space"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let err = backend.get("cas/x", 100, &mut Full).unwrap_err();
    assert!(matches!(err, TransportError::Local(_)), "{err:?}");
}

#[test]
fn a_refused_port_is_connect_at_once() {
    let backend = open(&servers::refusing_url());
    let started = Instant::now();
    let err = backend.head("cas/x").unwrap_err();
    assert!(matches!(err, TransportError::Connect(_)), "{err:?}");
    assert!(err.is_server_fault());
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_listener_that_never_answers_times_out_within_seconds() {
    let silent = servers::Silent::start();
    let backend = open(&silent.url("c"));
    let started = Instant::now();
    let err = backend.get("cas/x", 100, &mut Vec::new()).unwrap_err();
    let waited = started.elapsed();
    assert!(matches!(err, TransportError::Timeout(_)), "{err:?}");
    assert!(waited < Duration::from_secs(8), "waited {waited:?}");
    eprintln!("silent listener: {err} after {waited:?}");
    assert_eq!(silent.connections(), 1, "no retries inside the backend");
}

#[test]
fn statuses_the_cache_does_not_expect_are_errors() {
    let Some(nginx) = servers::shared_nginx() else {
        return;
    };
    let failing = open(&format!("http://127.0.0.1:{}/fail500/", nginx.port()));
    for err in [
        failing.head("cas/x").unwrap_err(),
        get_bytes(failing.as_ref(), "cas/x").unwrap_err(),
        put_bytes(failing.as_ref(), "cas/x", b"x").unwrap_err(),
        failing.delete("cas/x").map(|_| ()).unwrap_err(),
    ] {
        assert!(
            matches!(err, TransportError::Status { status: 500, .. }),
            "{err:?}"
        );
    }
    let forbidden = open(&format!("http://127.0.0.1:{}/forbid/", nginx.port()));
    let err = get_bytes(forbidden.as_ref(), "ac/x").unwrap_err();
    assert_eq!(err.to_string(), "the server answered HTTP 403 to GET ac/x");
}

#[test]
fn a_redirect_is_not_followed() {
    let (url, server) = answer_once(
        b"HTTP/1.1 301 Moved Permanently\r\nLocation: http://127.0.0.1:1/elsewhere\r\nContent-Length: 0\r\n\r\n",
    );
    let err = open(&url).head("cas/x").unwrap_err();
    assert!(
        matches!(err, TransportError::Status { status: 301, .. }),
        "{err:?}"
    );
    server.join().unwrap();
}

#[test]
fn delete_refused_by_the_server_is_false() {
    let (url, server) =
        answer_once(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n");
    assert!(!open(&url).delete("cas/x").unwrap());
    server.join().unwrap();
}

#[test]
fn basic_auth_from_the_url_or_the_options() {
    let Some(nginx) = servers::shared_nginx() else {
        return;
    };
    let port = nginx.port();
    let (user, password) = (servers::BASIC_USER, servers::BASIC_PASSWORD);
    let anonymous = open(&format!("http://127.0.0.1:{port}/basic/transport"));
    let err = put_bytes(anonymous.as_ref(), "cas/a", b"a").unwrap_err();
    assert!(
        matches!(err, TransportError::Status { status: 401, .. }),
        "{err:?}"
    );

    let in_url = open(&format!(
        "http://{user}:{password}@127.0.0.1:{port}/basic/transport"
    ));
    assert_eq!(
        in_url.describe(),
        format!("http://{user}:***@127.0.0.1:{port}/basic/transport")
    );
    put_bytes(in_url.as_ref(), "cas/a", b"a").unwrap();
    assert_eq!(
        get_bytes(in_url.as_ref(), "cas/a").unwrap(),
        Some(b"a".to_vec())
    );

    let in_options = open_with(
        &format!("http://127.0.0.1:{port}/basic/transport"),
        Options {
            auth: Auth {
                basic: Some((user.to_string(), password.to_string())),
                bearer: None,
            },
            ca_file: None,
            compression: false,
        },
    );
    assert_eq!(in_options.head("cas/a").unwrap(), Some(1));

    let wrong = open(&format!(
        "http://{user}:wrong@127.0.0.1:{port}/basic/transport"
    ));
    let err = wrong.head("cas/a").unwrap_err();
    assert!(
        matches!(err, TransportError::Status { status: 401, .. }),
        "{err:?}"
    );
}

#[test]
fn bearer_token_from_the_options() {
    let Some(nginx) = servers::shared_nginx() else {
        return;
    };
    let url = format!("http://127.0.0.1:{}/bearer/transport", nginx.port());
    let err = open(&url).head("cas/a").unwrap_err();
    assert!(
        matches!(err, TransportError::Status { status: 401, .. }),
        "{err:?}"
    );
    let backend = open_with(
        &url,
        Options {
            auth: Auth {
                basic: None,
                bearer: Some(servers::BEARER_TOKEN.to_string()),
            },
            ca_file: None,
            compression: false,
        },
    );
    put_bytes(backend.as_ref(), "cas/b", b"bb").unwrap();
    assert_eq!(backend.head("cas/b").unwrap(), Some(2));
}

#[test]
fn https_with_the_test_ca_and_without_it() {
    let Some(nginx) = servers::shared_nginx() else {
        return;
    };
    let url = nginx.https_url("transport-tls");
    let trusted = open_with(
        &url,
        Options {
            auth: Auth::default(),
            ca_file: Some(nginx.ca_file()),
            compression: false,
        },
    );
    round_trip(trusted.as_ref());

    // The platform's roots do not know the test CA.
    let err = open(&url).head("cas/x").unwrap_err();
    assert!(matches!(err, TransportError::Connect(_)), "{err:?}");
    assert!(
        err.to_string().contains("tls") || err.to_string().contains("certificate"),
        "{err}"
    );
}

/// Not a check: the per-request latency on loopback, for the record (`--nocapture`).
#[test]
fn loopback_latency_for_the_record() {
    let Some(nginx) = servers::shared_nginx() else {
        return;
    };
    let backend = open(&nginx.url("transport-latency"));
    put_bytes(backend.as_ref(), "cas/l", b"latency").unwrap();
    let rounds = 200;
    let started = Instant::now();
    for _ in 0..rounds {
        backend.head("cas/l").unwrap();
    }
    let head = started.elapsed() / rounds;
    let started = Instant::now();
    for _ in 0..rounds {
        get_bytes(backend.as_ref(), "cas/l").unwrap();
    }
    let get = started.elapsed() / rounds;
    let started = Instant::now();
    for _ in 0..rounds {
        put_bytes(backend.as_ref(), "cas/l", b"latency").unwrap();
    }
    let put = started.elapsed() / rounds;
    eprintln!("nginx loopback, kept-alive connection: HEAD {head:?}, GET {get:?}, PUT {put:?}");
}

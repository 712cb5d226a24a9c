//! The fetch and upload logic against an in-memory backend: what is verified, what is
//! refused, and what the breaker sees. (The real servers are exercised end to end by
//! tests/cli/remote.rs.)

use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::Mutex;

use super::breaker::Breaker;
use super::*;
use crate::config::RemoteMode;
use crate::events::Kind;
use crate::index::Entry;
use crate::index::{Blob, Streams};
use crate::key::{KeyMaterial, StreamMode, KEY_VERSION};
use crate::store::local::LocalStore;
use crate::store::Store;

#[derive(Default)]
struct Memory {
    objects: Mutex<HashMap<String, Vec<u8>>>,
    fail: std::sync::atomic::AtomicBool,
    puts: Mutex<Vec<String>>,
}

impl Backend for std::sync::Arc<Memory> {
    fn describe(&self) -> String {
        "memory".into()
    }
    fn head(&self, path: &str) -> Result<Option<u64>, TransportError> {
        self.check()?;
        Ok(self
            .objects
            .lock()
            .unwrap()
            .get(path)
            .map(|b| b.len() as u64))
    }
    fn get(
        &self,
        path: &str,
        limit: u64,
        sink: &mut dyn Write,
    ) -> Result<Option<u64>, TransportError> {
        self.check()?;
        let Some(bytes) = self.objects.lock().unwrap().get(path).cloned() else {
            return Ok(None);
        };
        if bytes.len() as u64 > limit {
            return Err(TransportError::TooLarge {
                path: path.into(),
                limit,
            });
        }
        sink.write_all(&bytes).map_err(TransportError::Local)?;
        Ok(Some(bytes.len() as u64))
    }
    fn put(&self, path: &str, body: &mut dyn Read, len: u64) -> Result<(), TransportError> {
        self.check()?;
        let mut bytes = Vec::new();
        body.read_to_end(&mut bytes)
            .map_err(TransportError::Local)?;
        assert_eq!(bytes.len() as u64, len);
        self.puts.lock().unwrap().push(path.to_string());
        self.objects.lock().unwrap().insert(path.into(), bytes);
        Ok(())
    }
    fn delete(&self, path: &str) -> Result<bool, TransportError> {
        self.check()?;
        self.objects.lock().unwrap().remove(path);
        Ok(true)
    }
}

impl Memory {
    fn check(&self) -> Result<(), TransportError> {
        if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(TransportError::Connect("memory".into()));
        }
        Ok(())
    }
}

struct Machine {
    dir: tempfile::TempDir,
    store: LocalStore,
}

fn machine() -> Machine {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path()).unwrap();
    Machine { dir, store }
}

fn remote(
    server: &std::sync::Arc<Memory>,
    on: &Machine,
    namespace: &str,
    read: &[&str],
    key: Option<&[u8]>,
) -> Remote {
    Remote {
        backend: Box::new(server.clone()),
        breaker: Breaker::new(on.dir.path(), "memory"),
        root: on.dir.path().to_path_buf(),
        mode: RemoteMode::ReadWrite,
        namespace: namespace.into(),
        read: read.iter().map(|s| s.to_string()).collect(),
        signing_key: key.map(|k| k.to_vec()),
    }
}

fn material() -> KeyMaterial {
    KeyMaterial {
        version: KEY_VERSION,
        platform: crate::key::platform(),
        argv: vec!["make".into(), "report".into()],
        cwd: Some("/src".into()),
        env: vec![],
        executable: Digest::of_bytes(b"make"),
        inputs: vec![],
        outputs: vec![],
        stdin: None,
        salt: None,
        key_command: None,
        streams: StreamMode::Separate,
        traced: None,
    }
}

/// Stores a result with a 100 KB stdout (an object) on `m`, returns its key.
fn store_result(m: &Machine) -> (Digest, Vec<u8>) {
    let stdout: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let digest = Digest::of_bytes(&stdout);
    let mut staged = m.store.stage().unwrap();
    staged.write_all(&stdout).unwrap();
    m.store.put_object(&digest, staged).unwrap();
    let material = material();
    let key = crate::key::compute_key(&material);
    let entry = Entry {
        observed: None,
        material,
        created_unix_ms: 1,
        duration_ms: 5000,
        exit_code: 0,
        streams: Streams::Separate {
            stdout: Blob {
                digest,
                size: stdout.len() as u64,
                inline: None,
            },
            stderr: Blob {
                digest: Digest::of_bytes(b"warn\n"),
                size: 5,
                inline: Some(crate::bytes::ByteString(b"warn\n".to_vec())),
            },
        },
        outputs: vec![],
    };
    m.store.put_entry(&key, &entry.encode()).unwrap();
    (key, stdout)
}

/// Marks every stored result pending for `r`, then uploads.
fn push(r: &Remote, m: &Machine) -> (PushReport, Tally) {
    for key in m.store.entry_sizes().into_keys() {
        let entry = Digest::of_bytes(&m.store.get_entry(&key).unwrap().unwrap());
        r.add_pending(&key, &entry).unwrap();
    }
    let mut tally = Tally::default();
    let report = r
        .upload_pending(
            &m.store,
            &m.dir.path().join("locks"),
            Uploader::Detached,
            &mut tally,
        )
        .unwrap();
    (report, tally)
}

fn fetch(r: &Remote, m: &Machine, key: &Digest) -> (Fetched, Tally) {
    let mut tally = Tally::default();
    let fetched = r.fetch(key, &m.store, &|_| true, &mut tally);
    (fetched, tally)
}

#[test]
fn a_result_uploaded_by_one_machine_is_fetched_by_another() {
    let server = std::sync::Arc::new(Memory::default());
    let (a, b) = (machine(), machine());
    let (key, stdout) = store_result(&a);
    let (report, tally) = push(&remote(&server, &a, "ci", &["ci"], None), &a);
    assert_eq!(report.uploaded, 1);
    assert_eq!(tally.counters.uploads, 1);
    assert!(queue::pending(
        a.dir.path(),
        &remote(&server, &a, "ci", &["ci"], None).target()
    )
    .is_empty());
    // Objects first, the entry last; the entry's name is not the bare key.
    let puts = server.puts.lock().unwrap().clone();
    assert!(puts.last().unwrap().starts_with("ac/"));
    assert!(!puts.iter().any(|p| p.contains(&key.to_hex())));

    let (fetched, tally) = fetch(&remote(&server, &b, "x", &["other", "ci"], None), &b, &key);
    let Fetched::Hit {
        namespace, added, ..
    } = fetched
    else {
        panic!("expected a hit: {:?}", tally.warnings)
    };
    assert_eq!(namespace, "ci");
    // Counted at what the object takes in B's store (it compresses), not its raw size.
    let stored = std::fs::metadata(b.store.object_path(&Digest::of_bytes(&stdout)))
        .unwrap()
        .len();
    assert_eq!(added, stored);
    assert!(stored < stdout.len() as u64);
    assert_eq!(tally.counters.remote_hits, 1);
    let mut file = b
        .store
        .open_object(&Digest::of_bytes(&stdout), stdout.len() as u64)
        .unwrap();
    let mut got = Vec::new();
    file.read_to_end(&mut got).unwrap();
    assert_eq!(got, stdout);
}

#[test]
fn objects_the_server_has_are_not_sent_again() {
    let server = std::sync::Arc::new(Memory::default());
    let (a, b) = (machine(), machine());
    let (key, stdout) = store_result(&a);
    push(&remote(&server, &a, "ci", &["ci"], None), &a);
    let object = format!("cas/{}", Digest::of_bytes(&stdout).to_hex());
    server.puts.lock().unwrap().clear();
    let (key_b, _) = store_result(&b);
    assert_eq!(key, key_b);
    push(&remote(&server, &b, "ci", &["ci"], None), &b);
    assert!(!server.puts.lock().unwrap().contains(&object));
}

#[test]
fn another_namespace_misses() {
    let server = std::sync::Arc::new(Memory::default());
    let (a, b) = (machine(), machine());
    let (key, _) = store_result(&a);
    push(&remote(&server, &a, "pr-7", &["pr-7"], None), &a);
    let (fetched, tally) = fetch(&remote(&server, &b, "main", &["main"], None), &b, &key);
    assert!(matches!(fetched, Fetched::Miss));
    assert_eq!(tally.counters.remote_misses, 1);
}

#[test]
fn a_damaged_object_is_a_miss_and_marked_for_upload_again() {
    let server = std::sync::Arc::new(Memory::default());
    let (a, b) = (machine(), machine());
    let (key, stdout) = store_result(&a);
    push(&remote(&server, &a, "ci", &["ci"], None), &a);
    let digest = Digest::of_bytes(&stdout);
    let object = format!("cas/{}", digest.to_hex());
    let mut bad = stdout.clone();
    bad[10] ^= 1;
    server.objects.lock().unwrap().insert(object.clone(), bad);
    let r = remote(&server, &b, "ci", &["ci"], None);
    let (fetched, tally) = fetch(&r, &b, &key);
    assert!(matches!(fetched, Fetched::Miss));
    assert_eq!(tally.counters.remote_errors, 1);
    assert!(!b.store.has_object(&digest, stdout.len() as u64));
    assert!(queue::is_marked_corrupt(b.dir.path(), &digest));
    // B stores the good bytes itself; its upload repairs the server whatever HEAD says.
    store_result(&b);
    push(&r, &b);
    assert_eq!(server.objects.lock().unwrap()[&object], stdout);
    assert!(!queue::is_marked_corrupt(b.dir.path(), &digest));
}

#[test]
fn signatures_are_required_when_a_key_is_set() {
    let server = std::sync::Arc::new(Memory::default());
    let (a, b, c) = (machine(), machine(), machine());
    let (key, _) = store_result(&a);
    push(&remote(&server, &a, "ci", &["ci"], None), &a);
    let (fetched, tally) = fetch(&remote(&server, &b, "ci", &["ci"], Some(b"k1")), &b, &key);
    assert!(matches!(fetched, Fetched::Miss));
    assert_eq!(tally.counters.remote_rejected, 1);
    assert!(tally.events.iter().any(|e| e.event == Kind::Rejected));

    store_result(&a);
    push(&remote(&server, &a, "ci", &["ci"], Some(b"k2")), &a);
    let (fetched, _) = fetch(&remote(&server, &b, "ci", &["ci"], Some(b"k1")), &b, &key);
    assert!(matches!(fetched, Fetched::Miss));
    let (fetched, _) = fetch(&remote(&server, &c, "ci", &["ci"], Some(b"k2")), &c, &key);
    assert!(matches!(fetched, Fetched::Hit { .. }));
}

#[test]
fn three_failures_trip_the_breaker_and_then_nothing_is_asked() {
    let server = std::sync::Arc::new(Memory::default());
    let b = machine();
    server.fail.store(true, std::sync::atomic::Ordering::SeqCst);
    let r = remote(&server, &b, "ci", &["ci"], None);
    let key = Digest::of_bytes(b"k");
    let mut trips = 0;
    for _ in 0..3 {
        let (fetched, tally) = fetch(&r, &b, &key);
        assert!(matches!(fetched, Fetched::Failed));
        assert_eq!(tally.counters.remote_errors, 1);
        trips += tally.counters.breaker_trips;
    }
    assert_eq!(trips, 1);
    let (fetched, _) = fetch(&r, &b, &key);
    assert!(matches!(fetched, Fetched::Skipped(_)));
    // The pending upload waits too.
    let (key, _) = store_result(&b);
    let (report, _) = push(&r, &b);
    assert_eq!(report.left, 1);
    let left = queue::pending(b.dir.path(), &r.target());
    assert_eq!(left.iter().map(|p| p.key).collect::<Vec<_>>(), vec![key]);
}

#[test]
fn an_entry_for_other_material_under_the_key_is_refused() {
    let server = std::sync::Arc::new(Memory::default());
    let (a, b) = (machine(), machine());
    let (key, _) = store_result(&a);
    // A writer that files its entry under another key's name.
    let other = Digest::of_bytes(b"another key");
    let bytes = a.store.get_entry(&key).unwrap().unwrap();
    a.store.put_entry(&other, &bytes).unwrap();
    push(&remote(&server, &a, "ci", &["ci"], None), &a);
    let (fetched, tally) = fetch(&remote(&server, &b, "ci", &["ci"], None), &b, &other);
    assert!(matches!(fetched, Fetched::Miss));
    assert!(
        tally
            .warnings
            .iter()
            .any(|w| w.contains("different inputs")),
        "{:?}",
        tally.warnings
    );
}

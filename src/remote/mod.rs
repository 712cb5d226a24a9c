//! The shared tier: a cache on a storage server a team already runs, behind the local
//! one. Owns the remote client as the rest of memo sees it: fetching a result into the
//! local store (every byte verified before it is kept), uploading one from it, the
//! pending uploads, the probe of `memo remote check`, and the tally of what happened,
//! which the caller turns into counters, log events and warnings.
//!
//! Nothing here may break the user's command: every failure is a tally entry and a miss.

pub mod backend;
pub mod breaker;
pub mod envelope;
pub mod http;
pub mod proto;
pub mod queue;
pub mod s3;

use std::collections::HashSet;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::config::{RemoteMode, RemoteSettings};
use crate::digest::{Digest, Hasher};
use crate::events::{Event, Kind};
use crate::index::Entry;
use crate::lock::Lock;
use crate::stats::Counters;
use crate::store::local::{LocalStore, MAX_ENTRY_BYTES};
use crate::store::Store;
use backend::{Auth, Backend, Options, TransportError, UrlError};
use breaker::{Allow, Breaker};
use envelope::EnvelopeError;

/// No envelope memo writes comes near this: an entry is at most `MAX_ENTRY_BYTES`, and
/// the envelope holds it in base64. (Its download's time budget follows the size the
/// ActionResult gives it, not this.)
const MAX_RECORD_BYTES: u64 = MAX_ENTRY_BYTES * 2;

/// The largest ActionResult memo reads or writes. Its size is unknown before it
/// arrives, so its download's time budget follows this limit: kept small, a server
/// that trickles one costs seconds. An ActionResult that would be larger (a result of
/// tens of thousands of files) goes up without its list of output files: memo reads
/// only the envelope it names.
const MAX_AC_BYTES: u64 = 4 << 20;

/// The shared cache as configured for this call.
pub struct Remote {
    backend: Box<dyn Backend>,
    breaker: Breaker,
    root: PathBuf,
    mode: RemoteMode,
    namespace: String,
    read: Vec<String>,
    signing_key: Option<Vec<u8>>,
}

/// What a remote operation did, for the caller to count, log and say.
#[derive(Default)]
pub struct Tally {
    pub counters: Counters,
    pub events: Vec<Event>,
    pub warnings: Vec<String>,
}

impl Tally {
    fn event(&mut self, kind: Kind, key: Option<&Digest>, message: Option<String>) {
        let mut event = Event::new(kind);
        event.key = key.map(|k| k.to_hex());
        event.message = message;
        self.events.push(event);
    }

    /// A wrong answer or a failed call: counted, logged and said.
    fn error(&mut self, key: Option<&Digest>, message: String) {
        self.counters.remote_errors += 1;
        self.event(Kind::RemoteError, key, Some(message.clone()));
        self.warnings.push(message);
    }
}

/// The outcome of asking the shared tier for a key.
pub enum Fetched {
    /// Found and verified; its objects are in the local store, the entry itself is for
    /// the caller to install.
    Hit {
        entry: Box<Entry>,
        encoded: Vec<u8>,
        namespace: String,
        /// Bytes of objects that were new to the local store.
        added: u64,
    },
    Miss,
    /// The circuit breaker is open for this much longer: nothing was asked.
    Skipped(Duration),
}

/// One namespace's answer.
enum Step {
    Found(Fetched),
    Absent,
    /// The server failed: stop asking it.
    Failed,
}

/// What a download brought.
enum Download {
    Absent,
    /// The bytes' digest and size.
    Got(Digest, u64),
    /// More bytes than expected, or fewer than the server announced: a wrong answer.
    Wrong,
}

/// Why one pending result was not uploaded.
enum UploadFailure {
    /// The result is no longer stored here, or its local copy is damaged: nothing good
    /// to send, and its marker goes.
    Gone,
    /// The server failed: stop for now, the marker stays.
    Server,
    /// The server refused this result (too large for it): its marker goes.
    Refused,
}

/// Who uploads: see `Remote::upload_pending`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Uploader {
    Detached,
    Push,
}

/// What `upload_pending` did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PushReport {
    pub uploaded: u64,
    pub dropped: u64,
    /// Refused by the server (too large for it, say): not tried again.
    pub refused: u64,
    /// Still pending: the server failed, or the breaker is open.
    pub left: u64,
}

/// One step of `memo remote check`.
pub struct CheckStep {
    pub name: &'static str,
    pub result: Result<Duration, String>,
    /// Said beside a success (a server that refuses DELETE).
    pub note: Option<&'static str>,
}

/// `sink` with every byte also hashed.
struct Hashing<'a> {
    sink: &'a mut dyn Write,
    hasher: Hasher,
}

impl Write for Hashing<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.sink.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.sink.flush()
    }
}

/// Opens the backend a URL names: `http://`, `https://` or `s3://BUCKET/PREFIX`.
pub fn open_backend(url: &str, options: &Options) -> Result<Box<dyn Backend>, UrlError> {
    let Some((scheme, _)) = url.split_once("://") else {
        return Err(UrlError(format!(
            "remote URL {} has no scheme; {}",
            backend::mask(url),
            backend::ACCEPTED
        )));
    };
    match scheme.to_ascii_lowercase().as_str() {
        "http" | "https" if scheme.chars().all(|c| c.is_ascii_lowercase()) => {
            Ok(Box::new(http::HttpBackend::open(url, options)?))
        }
        "s3" if scheme == "s3" => Ok(Box::new(s3::S3Backend::open(url, options)?)),
        _ => Err(UrlError(format!(
            "remote URL {} has an unsupported scheme {scheme}://; {}",
            backend::mask(url),
            backend::ACCEPTED
        ))),
    }
}

/// A 4xx answer to an upload that concerns that request alone (413 Payload Too Large,
/// 400, 409, 422...), as opposed to one about every request (401, 403: credentials;
/// 408, 429: a busy server).
fn refuses_this_result(e: &TransportError) -> bool {
    matches!(e, TransportError::Status { status, method: "PUT", .. }
        if (400..500).contains(status) && ![401, 403, 408, 429].contains(status))
}

/// The backend options a settings block names.
pub fn options(settings: &RemoteSettings) -> Options {
    let basic = settings
        .user
        .clone()
        .map(|user| (user, settings.password.clone().unwrap_or_default()));
    Options {
        auth: Auth {
            basic,
            bearer: settings.token.clone(),
        },
        ca_file: settings.ca_file.clone(),
    }
}

/// Checks that the configured URL can be used, without a network call: a bad one is
/// an invalid invocation.
pub fn validate(settings: &RemoteSettings) -> Result<(), UrlError> {
    match &settings.url.value {
        Some(url) => open_backend(url, &options(settings)).map(drop),
        None => Ok(()),
    }
}

impl Remote {
    /// The configured remote, if any, keeping its breaker and markers under `root`.
    pub fn open(settings: &RemoteSettings, root: &Path) -> Result<Option<Remote>, UrlError> {
        let Some(url) = &settings.url.value else {
            return Ok(None);
        };
        Ok(Some(Remote {
            backend: open_backend(url, &options(settings))?,
            breaker: Breaker::new(root, url),
            root: root.to_path_buf(),
            mode: settings.mode.value,
            namespace: settings.namespace.value.clone(),
            read: settings.read.value.clone(),
            signing_key: settings.signing_key.clone(),
        }))
    }

    /// The URL with credentials masked.
    pub fn shown(&self) -> String {
        self.backend.describe()
    }

    pub fn writes(&self) -> bool {
        self.mode == RemoteMode::ReadWrite
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// A failed call: counted, said, and fed to the breaker. Local trouble (writing the
    /// download into the store) is said but does not count against the server.
    fn fault(&self, e: &TransportError, key: Option<&Digest>, tally: &mut Tally) {
        if !e.is_server_fault() {
            tally
                .warnings
                .push(format!("cannot use the shared cache ({e})"));
            return;
        }
        tally.error(key, format!("remote {} failed: {e}", self.shown()));
        if self.breaker.failure() {
            tally.counters.breaker_trips += 1;
            let message = format!(
                "remote {}: {} failures in a row; no remote calls for {}s",
                self.shown(),
                breaker::TRIP_AFTER,
                breaker::OPEN_FOR.as_secs()
            );
            tally.event(Kind::BreakerTrip, key, Some(message.clone()));
            tally.warnings.push(message);
        }
    }

    /// Asks the namespaces this machine reads, in order, for `key`'s result. A result is
    /// taken only if its envelope was written for this key and namespace (and signed,
    /// when a signing key is set), its entry's material hashes to `key`, `accept` takes
    /// it, and every object it names arrives intact; those objects are then in `store`.
    pub fn fetch(
        &self,
        key: &Digest,
        store: &LocalStore,
        accept: &dyn Fn(&Entry) -> bool,
        tally: &mut Tally,
    ) -> Fetched {
        if let Allow::Open(left) = self.breaker.allow() {
            return Fetched::Skipped(left);
        }
        for namespace in &self.read {
            match self.fetch_from(namespace, key, store, accept, tally) {
                Step::Found(found) => {
                    self.breaker.success();
                    return found;
                }
                Step::Absent => {}
                Step::Failed => return Fetched::Miss,
            }
        }
        self.breaker.success();
        tally.counters.remote_misses += 1;
        tally.event(Kind::RemoteMiss, Some(key), None);
        Fetched::Miss
    }

    /// Downloads `path` (at most `limit` bytes) into `sink`, hashing it. `Err(step)`
    /// when the caller must stop with that step.
    fn download(
        &self,
        path: &str,
        limit: u64,
        sink: &mut dyn Write,
        key: &Digest,
        tally: &mut Tally,
    ) -> Result<Download, Step> {
        let mut hashing = Hashing {
            sink,
            hasher: Hasher::new(),
        };
        match self.backend.get(path, limit, &mut hashing) {
            Ok(None) => Ok(Download::Absent),
            Ok(Some(_)) => {
                let (digest, size) = hashing.hasher.finish();
                tally.counters.remote_bytes_down += size as i64;
                Ok(Download::Got(digest, size))
            }
            // The server holds other bytes than the ones named, or sent fewer than it
            // announced: a wrong answer, not an unreachable server.
            Err(TransportError::TooLarge { .. }) | Err(TransportError::Truncated { .. }) => {
                Ok(Download::Wrong)
            }
            Err(e) => {
                self.fault(&e, Some(key), tally);
                Err(if e.is_server_fault() {
                    Step::Failed
                } else {
                    Step::Absent
                })
            }
        }
    }

    /// The object `digest` on the server is damaged: said, and marked so that this
    /// machine's next upload of it sends it again.
    fn damaged(&self, digest: &Digest, key: &Digest, namespace: &str, tally: &mut Tally) -> Step {
        queue::mark_corrupt(&self.root, digest);
        tally.error(
            Some(key),
            format!(
                "remote object {} (for entry {} in namespace '{namespace}') does not match its digest; not used",
                digest.short(),
                key.short()
            ),
        );
        Step::Absent
    }

    fn fetch_from(
        &self,
        namespace: &str,
        key: &Digest,
        store: &LocalStore,
        accept: &dyn Fn(&Entry) -> bool,
        tally: &mut Tally,
    ) -> Step {
        let unusable = |tally: &mut Tally, why: String| {
            tally.error(
                Some(key),
                format!(
                    "remote entry {} in namespace '{namespace}' is unusable ({why})",
                    key.short()
                ),
            );
            Step::Absent
        };
        let ac_path = format!("ac/{}", envelope::ac_name(namespace, key).to_hex());
        let mut ac = Vec::new();
        match self.download(&ac_path, MAX_AC_BYTES, &mut ac, key, tally) {
            Ok(Download::Absent) => return Step::Absent,
            Ok(Download::Wrong) => {
                return unusable(tally, "the server sent a damaged record".into())
            }
            Ok(Download::Got(..)) => {}
            Err(step) => return step,
        }
        let (meta, meta_size) = match proto::meta_of(&ac) {
            Ok(found) => found,
            Err(e) => return unusable(tally, e.to_string()),
        };
        if meta_size > MAX_RECORD_BYTES {
            return unusable(
                tally,
                "it names an envelope larger than any memo writes".into(),
            );
        }
        let mut sealed = Vec::new();
        match self.download(
            &format!("cas/{}", meta.to_hex()),
            meta_size,
            &mut sealed,
            key,
            tally,
        ) {
            // The server evicted the envelope: an incomplete entry, a plain miss.
            Ok(Download::Absent) => return Step::Absent,
            Ok(Download::Got(d, n)) if (d, n) == (meta, meta_size) => {}
            Ok(_) => return self.damaged(&meta, key, namespace, tally),
            Err(step) => return step,
        }
        let bytes = match envelope::open(&sealed, namespace, key, self.signing_key.as_deref()) {
            Ok(bytes) => bytes,
            Err(e @ (EnvelopeError::Unsigned | EnvelopeError::BadSignature)) => {
                let message = format!(
                    "remote entry {} in namespace '{namespace}' rejected: {e}",
                    key.short()
                );
                tally.counters.remote_rejected += 1;
                tally.event(Kind::Rejected, Some(key), Some(message.clone()));
                tally.warnings.push(message);
                return Step::Absent;
            }
            Err(e) => return unusable(tally, e.to_string()),
        };
        let entry = match Entry::decode(&bytes) {
            Ok(entry) => entry,
            Err(e) => return unusable(tally, e.to_string()),
        };
        if crate::key::compute_key(&entry.material) != *key {
            return unusable(tally, "it was stored for different inputs".into());
        }
        if !accept(&entry) {
            return Step::Absent;
        }
        let mut added = 0;
        let mut seen = HashSet::new();
        for blob in entry.blobs().filter(|b| b.inline.is_none()) {
            if !seen.insert(blob.digest) || store.has_object(&blob.digest, blob.size) {
                continue;
            }
            let mut staged = match store.stage() {
                Ok(staged) => staged,
                Err(e) => {
                    tally
                        .warnings
                        .push(format!("cannot keep a result from the shared cache ({e})"));
                    return Step::Absent;
                }
            };
            let path = format!("cas/{}", blob.digest.to_hex());
            match self.download(&path, blob.size, staged.as_file_mut(), key, tally) {
                Ok(Download::Absent) => return Step::Absent,
                Ok(Download::Got(d, n)) if (d, n) == (blob.digest, blob.size) => {}
                Ok(_) => return self.damaged(&blob.digest, key, namespace, tally),
                Err(step) => return step,
            }
            match store.put_object(&blob.digest, staged) {
                Ok(true) => added += blob.size,
                Ok(false) => {}
                Err(e) => {
                    tally
                        .warnings
                        .push(format!("cannot keep a result from the shared cache ({e})"));
                    return Step::Absent;
                }
            }
        }
        tally.counters.remote_hits += 1;
        tally.event(
            Kind::RemoteHit,
            Some(key),
            Some(format!("namespace '{namespace}'")),
        );
        Step::Found(Fetched::Hit {
            entry: Box::new(entry),
            encoded: bytes,
            namespace: namespace.to_string(),
            added,
        })
    }

    /// Uploads the result stored under `key`: the objects the server lacks (or holds
    /// damaged, as far as this machine knows), then the envelope, then the entry, so
    /// that no reader ever finds an entry whose objects are not there yet.
    fn upload(
        &self,
        store: &LocalStore,
        key: &Digest,
        tally: &mut Tally,
    ) -> Result<(), UploadFailure> {
        let bytes = match store.get_entry(key) {
            Ok(Some(bytes)) => bytes,
            _ => return Err(UploadFailure::Gone),
        };
        let entry = Entry::decode(&bytes).map_err(|_| UploadFailure::Gone)?;
        let server = |e: TransportError, tally: &mut Tally| {
            if refuses_this_result(&e) {
                // Too large for the server (413), or another answer about this request
                // alone: this result is never going to be taken, the next ones may be.
                tally.error(
                    Some(key),
                    format!(
                        "remote {} refused result {} ({e}); it is not uploaded",
                        self.shown(),
                        key.short()
                    ),
                );
                return UploadFailure::Refused;
            }
            self.fault(&e, Some(key), tally);
            UploadFailure::Server
        };
        let mut sent = 0u64;
        let mut seen = HashSet::new();
        for blob in entry.blobs().filter(|b| b.inline.is_none()) {
            if !seen.insert(blob.digest) {
                continue;
            }
            let path = format!("cas/{}", blob.digest.to_hex());
            let resend = queue::is_marked_corrupt(&self.root, &blob.digest);
            if !resend {
                match self.backend.head(&path) {
                    Ok(Some(size)) if size == blob.size => continue,
                    Ok(_) => {}
                    Err(e) => return Err(server(e, tally)),
                }
            }
            // Opening checks the local copy against its digest: damaged bytes are never sent.
            let mut file = store
                .open_object(&blob.digest, blob.size)
                .map_err(|_| UploadFailure::Gone)?;
            self.backend
                .put(&path, &mut file, blob.size)
                .map_err(|e| server(e, tally))?;
            sent += blob.size;
            if resend {
                queue::unmark_corrupt(&self.root, &blob.digest);
            }
        }
        let sealed = envelope::seal(&self.namespace, key, &bytes, self.signing_key.as_deref());
        let meta = Digest::of_bytes(&sealed);
        self.backend
            .put(
                &format!("cas/{}", meta.to_hex()),
                &mut sealed.as_slice(),
                sealed.len() as u64,
            )
            .map_err(|e| server(e, tally))?;
        let mut ac = proto::encode(&entry, &meta, sealed.len() as u64);
        if ac.len() as u64 > MAX_AC_BYTES {
            let slim = Entry {
                outputs: Vec::new(),
                ..entry.clone()
            };
            ac = proto::encode(&slim, &meta, sealed.len() as u64);
        }
        let name = envelope::ac_name(&self.namespace, key);
        self.backend
            .put(
                &format!("ac/{}", name.to_hex()),
                &mut ac.as_slice(),
                ac.len() as u64,
            )
            .map_err(|e| server(e, tally))?;
        sent += (sealed.len() + ac.len()) as u64;
        tally.counters.uploads += 1;
        tally.counters.remote_bytes_up += sent as i64;
        let mut event = Event::new(Kind::Upload);
        event.key = Some(key.to_hex());
        event.command = Some(crate::key::command_line(&entry.material));
        event.size = Some(sent);
        event.message = Some(format!("namespace '{}'", self.namespace));
        tally.events.push(event);
        Ok(())
    }

    /// Where this machine's results go: see `queue::target`.
    pub fn target(&self) -> String {
        queue::target(&self.shown(), &self.namespace)
    }

    /// Marks the result stored under `key` for upload.
    pub fn add_pending(&self, key: &Digest) -> io::Result<()> {
        queue::add_pending(&self.root, key, &self.target())
    }

    /// Uploads every result pending for this remote and namespace. `Uploader::Detached`
    /// (the background uploader a miss starts) leaves the work to an uploader already
    /// at it, and tries nothing while the breaker is open; `Uploader::Push` (`memo
    /// remote push`) waits for its turn and tries regardless. A server failure stops the
    /// pass: what is left stays pending.
    pub fn upload_pending(
        &self,
        store: &LocalStore,
        locks: &Path,
        uploader: Uploader,
        tally: &mut Tally,
    ) -> io::Result<PushReport> {
        let target = self.target();
        let mut report = PushReport::default();
        // Each marker once per process: one that cannot be removed must not loop.
        let mut handled = HashSet::new();
        loop {
            let lock = match uploader {
                Uploader::Push => Lock::wait(locks, "remote-upload")?,
                Uploader::Detached => match Lock::try_take(locks, "remote-upload", false)? {
                    Some(lock) => lock,
                    // The uploader at work picks up what this one was started for: it
                    // looks again after letting go of the lock.
                    None => return Ok(report),
                },
            };
            let done = self.upload_pass(store, &target, uploader, &mut handled, &mut report, tally);
            drop(lock);
            if done.is_break() {
                return Ok(report);
            }
            // Let go of the lock, then look once more: a marker written while this
            // uploader held it may belong to an uploader that found it busy and left.
            let left = queue::pending(&self.root, &target);
            if left.iter().all(|p| handled.contains(p)) {
                return Ok(report);
            }
        }
    }

    /// Uploads pending results until none is left that this process has not handled.
    /// `Break` when the pass must stop (the server failed, or the breaker is open).
    fn upload_pass(
        &self,
        store: &LocalStore,
        target: &str,
        uploader: Uploader,
        handled: &mut HashSet<queue::Pending>,
        report: &mut PushReport,
        tally: &mut Tally,
    ) -> std::ops::ControlFlow<()> {
        use std::ops::ControlFlow;
        loop {
            let todo: Vec<queue::Pending> = queue::pending(&self.root, target)
                .into_iter()
                .filter(|p| !handled.contains(p))
                .collect();
            if todo.is_empty() {
                return ControlFlow::Continue(());
            }
            if uploader == Uploader::Detached && matches!(self.breaker.allow(), Allow::Open(_)) {
                report.left = todo.len() as u64;
                return ControlFlow::Break(());
            }
            for (done, pending) in todo.iter().enumerate() {
                handled.insert(*pending);
                match self.upload(store, &pending.key, tally) {
                    Ok(()) => report.uploaded += 1,
                    Err(UploadFailure::Gone) => report.dropped += 1,
                    Err(UploadFailure::Refused) => report.refused += 1,
                    Err(UploadFailure::Server) => {
                        report.left = (todo.len() - done) as u64;
                        return ControlFlow::Break(());
                    }
                }
                queue::remove_pending(&self.root, pending, target);
            }
            self.breaker.success();
        }
    }

    /// `memo remote check`: writes, reads and deletes a probe object (in read-only
    /// mode, only reads), timing each step. Ignores the breaker, and closes it when the
    /// server answers.
    pub fn check(&self) -> Vec<CheckStep> {
        let mut steps = Vec::new();
        let probe = format!(
            "memo remote check {} {}",
            std::process::id(),
            crate::events::now_ms()
        )
        .into_bytes();
        let digest = Digest::of_bytes(&probe);
        let path = format!("cas/{}", digest.to_hex());
        let timed = |name: &'static str, f: &mut dyn FnMut() -> Result<(), String>| {
            let started = Instant::now();
            CheckStep {
                name,
                result: f().map(|()| started.elapsed()),
                note: None,
            }
        };
        if !self.writes() {
            steps.push(timed(
                "get (a missing object)",
                &mut || match self.backend.get(&path, 1024, &mut io::sink()) {
                    Ok(None) => Ok(()),
                    Ok(Some(_)) => {
                        Err("the server returned bytes for an object nobody wrote".into())
                    }
                    Err(e) => Err(e.to_string()),
                },
            ));
        } else {
            steps.push(timed("put", &mut || {
                self.backend
                    .put(&path, &mut probe.as_slice(), probe.len() as u64)
                    .map_err(|e| e.to_string())
            }));
            steps.push(timed("head", &mut || match self.backend.head(&path) {
                Ok(Some(size)) if size == probe.len() as u64 => Ok(()),
                Ok(Some(size)) => Err(format!("size {size}, expected {}", probe.len())),
                Ok(None) => Err("the object just written is not there".into()),
                Err(e) => Err(e.to_string()),
            }));
            steps.push(timed("get", &mut || {
                let mut got = Vec::new();
                match self.backend.get(&path, probe.len() as u64, &mut got) {
                    Ok(Some(_)) if got == probe => Ok(()),
                    Ok(Some(_)) => Err("the bytes read back differ from the ones written".into()),
                    Ok(None) => Err("the object just written is not there".into()),
                    Err(e) => Err(e.to_string()),
                }
            }));
            let mut refused = false;
            let mut step = timed("delete", &mut || match self.backend.delete(&path) {
                Ok(deleted) => {
                    refused = !deleted;
                    Ok(())
                }
                // Credentials that may not delete (S3 without DeleteObject): memo never
                // deletes from the server, so this is no failure.
                Err(TransportError::Status { status: 403, .. }) => {
                    refused = true;
                    Ok(())
                }
                Err(e) => Err(e.to_string()),
            });
            if refused {
                // bazel-remote refuses DELETE (405), and least-privilege S3 credentials
                // may not delete (403): such servers evict on their own.
                step.note =
                    Some("deleting is not allowed here: fine, memo never deletes from the server");
            }
            steps.push(step);
        }
        if steps.iter().all(|s| s.result.is_ok()) {
            self.breaker.success();
        }
        steps
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod url_tests {
    use super::*;

    #[test]
    fn only_a_put_refused_for_itself_drops_one_result() {
        let status = |status, method| TransportError::Status {
            status,
            method,
            path: "cas/x".into(),
        };
        assert!(refuses_this_result(&status(413, "PUT")));
        assert!(refuses_this_result(&status(400, "PUT")));
        assert!(!refuses_this_result(&status(403, "PUT")));
        assert!(!refuses_this_result(&status(429, "PUT")));
        assert!(!refuses_this_result(&status(500, "PUT")));
        assert!(!refuses_this_result(&status(405, "HEAD")));
    }

    fn open_error(url: &str) -> String {
        match open_backend(url, &Options::default()) {
            Ok(backend) => panic!("{url} opened as {}", backend.describe()),
            Err(e) => e.0,
        }
    }

    #[test]
    fn unsupported_urls_say_what_is_accepted() {
        for url in [
            "ftp://host/cache",
            "/var/cache/memo",
            "host:8080/cache",
            "",
            "HTTP://host/",
            "gs://bucket",
        ] {
            let err = open_error(url);
            assert!(err.contains("s3://BUCKET/PREFIX"), "{url}: {err}");
            assert!(err.contains("http://HOST"), "{url}: {err}");
            assert_eq!(err.lines().count(), 1, "{url}: {err}");
        }
    }

    #[test]
    fn urls_without_a_host_or_bucket_are_refused() {
        assert!(open_error("http:///cache").contains("no host"));
        assert!(open_error("https://").contains("no host"));
        assert!(open_error("s3:///prefix").contains("no bucket"));
    }

    #[test]
    fn open_accepts_http_and_https() {
        let backend = open_backend("http://127.0.0.1:1/c", &Options::default()).unwrap();
        assert_eq!(backend.describe(), "http://127.0.0.1:1/c");
        assert!(open_backend("https://cache.example/", &Options::default()).is_ok());
    }
}

//! Uploading results to the shared cache: the queue of pending results worked through
//! by one uploader per remote and namespace, objects the server lacks first, then the
//! envelope, then the entry.

use std::collections::HashSet;
use std::io::{self, Seek, SeekFrom};
use std::path::Path;

use super::backend::TransportError;
use super::breaker::Allow;
use super::{envelope, proto, queue, Remote, Tally, MAX_AC_BYTES};
use crate::digest::Digest;
use crate::events::{Event, Kind};
use crate::index::Entry;
use crate::lock::Lock;
use crate::store::local::LocalStore;
use crate::store::{Object, Store};

/// Why one pending result (or manifest) was not uploaded.
pub(super) enum UploadFailure {
    /// The result is no longer stored here, or its local copy is damaged: nothing good
    /// to send, and its marker goes.
    Gone,
    /// The server failed: stop for now, the marker stays.
    Server,
    /// The server refused this result (too large for it): its marker goes.
    Refused,
    /// Too slow to send over this link: its marker stays, the pass goes on.
    Slow,
}

/// Who uploads: see `Remote::upload_pending`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Uploader {
    Detached,
    Push,
}

/// The markers one uploader has worked on.
#[derive(Default)]
struct Handled {
    results: HashSet<queue::Pending>,
    manifests: HashSet<queue::PendingManifest>,
}

/// What `upload_pending` did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PushReport {
    pub uploaded: u64,
    /// Manifests of traced calls uploaded (or found already up to date).
    pub manifests: u64,
    pub dropped: u64,
    /// Refused by the server (too large for it, say): not tried again.
    pub refused: u64,
    /// Still pending (results and manifests): the server failed, the breaker is open,
    /// or a manifest waits for a run it names.
    pub left: u64,
}

/// An answer to an upload that concerns that request alone: 413 Payload Too Large.
/// Every other refusal (404 for a wrong base path, 405 from a server without PUT, 401
/// and 403 for credentials...) would meet every upload alike: it stops the pass and
/// leaves the results pending.
fn refuses_this_result(e: &TransportError) -> bool {
    matches!(
        e,
        TransportError::Status {
            status: 413,
            method: "PUT",
            ..
        }
    )
}

/// A body that can be read again from its start.
pub(super) trait ReadSeek: io::Read + io::Seek {}
impl<T: io::Read + io::Seek> ReadSeek for T {}

/// An object above this size that times out is the link's slowness, not a dead server.
const SLOW_OBJECT: u64 = 1 << 20;

impl Remote {
    /// PUTs `len` bytes that `open` yields to `path`. A WebDAV server that does not create
    /// missing collections (Apache, nginx without `create_full_put_path`) answers 409:
    /// then the collections are made (MKCOL), and the PUT is tried once more from the
    /// body's start.
    pub(super) fn put_creating(
        &self,
        path: &str,
        len: u64,
        body: &mut dyn ReadSeek,
    ) -> Result<(), TransportError> {
        match self.backend.put(path, body, len) {
            Err(TransportError::Status { status: 409, .. }) => {
                self.backend.make_parents(path)?;
                body.seek(SeekFrom::Start(0))
                    .map_err(TransportError::Local)?;
                self.backend.put(path, body, len)
            }
            done => done,
        }
    }

    /// PUTs a compressed local object as it is stored (zstd frames), where the
    /// backend takes zstd (`MEMO_REMOTE_COMPRESSION=zstd` on HTTP). `None`: not sent (a
    /// raw object, or a backend that takes raw bytes only); `object` is then at its start.
    fn put_compressed(
        &self,
        path: &str,
        raw_size: u64,
        object: &mut Object,
    ) -> Option<Result<(), TransportError>> {
        let Object::Compressed(decoder) = object else {
            return None;
        };
        let mut frame = match decoder.file().try_clone() {
            Ok(file) => file,
            Err(e) => return Some(Err(TransportError::Local(e))),
        };
        let len = match frame
            .seek(SeekFrom::Start(0))
            .and_then(|_| frame.metadata())
        {
            Ok(meta) => meta.len(),
            Err(e) => return Some(Err(TransportError::Local(e))),
        };
        match self.backend.put_zstd(path, &mut frame, len, raw_size) {
            Ok(true) => Some(Ok(())),
            Ok(false) => match object.seek(SeekFrom::Start(0)) {
                Ok(_) => None,
                Err(e) => Some(Err(TransportError::Local(e))),
            },
            Err(e) => Some(Err(e)),
        }
    }

    /// What a failed PUT or HEAD for the result (or manifest) `key` means for the pass.
    pub(super) fn upload_failure(
        &self,
        e: TransportError,
        key: &Digest,
        tally: &mut Tally,
    ) -> UploadFailure {
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
    }

    /// Where this machine's results go: see `queue::target`.
    pub fn target(&self) -> String {
        queue::target(&self.shown(), &self.namespace)
    }

    /// Marks the result stored under `key` (its encoded entry hashing to `entry`) for
    /// upload.
    pub fn add_pending(&self, key: &Digest, entry: &Digest) -> io::Result<()> {
        queue::add_pending(&self.root, key, &self.target(), entry)
    }

    /// Uploads every result pending for this remote and namespace, then the manifests
    /// of traced calls whose runs are all up. `Uploader::Detached`
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
        // One uploader per remote and namespace: the one at work sends exactly the
        // markers a second one would.
        let lock_name = format!("remote-upload-{target}");
        let mut report = PushReport::default();
        // Each marker once per process: one that cannot be removed must not loop.
        let mut handled = Handled::default();
        loop {
            let lock = match uploader {
                Uploader::Push => Lock::wait(locks, &lock_name)?,
                Uploader::Detached => match Lock::try_take(locks, &lock_name, false)? {
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
            let manifests = queue::pending_manifests(&self.root, &target);
            if left.iter().all(|p| handled.results.contains(p))
                && manifests.iter().all(|p| handled.manifests.contains(p))
            {
                return Ok(report);
            }
        }
    }

    /// Uploads pending results, then pending manifests, until none is left that this
    /// process has not handled. `Break` when the pass must stop (the server failed, or
    /// the breaker is open).
    fn upload_pass(
        &self,
        store: &LocalStore,
        target: &str,
        uploader: Uploader,
        handled: &mut Handled,
        report: &mut PushReport,
        tally: &mut Tally,
    ) -> std::ops::ControlFlow<()> {
        use std::ops::ControlFlow;
        loop {
            let pending = queue::pending(&self.root, target);
            let todo: Vec<queue::Pending> = pending
                .iter()
                .filter(|p| !handled.results.contains(p))
                .copied()
                .collect();
            let manifests: Vec<queue::PendingManifest> =
                queue::pending_manifests(&self.root, target)
                    .into_iter()
                    .filter(|p| !handled.manifests.contains(p))
                    .collect();
            if todo.is_empty() && manifests.is_empty() {
                return ControlFlow::Continue(());
            }
            if uploader == Uploader::Detached && matches!(self.breaker.allow(), Allow::Open(_)) {
                report.left += (todo.len() + manifests.len()) as u64;
                return ControlFlow::Break(());
            }
            if !todo.is_empty() {
                // Results first: a manifest goes up after the runs it names.
                for (done, pending) in todo.iter().enumerate() {
                    handled.results.insert(*pending);
                    match self.upload(store, pending, tally) {
                        Ok(()) => report.uploaded += 1,
                        Err(UploadFailure::Gone) => report.dropped += 1,
                        Err(UploadFailure::Refused) => report.refused += 1,
                        Err(UploadFailure::Slow) => {
                            report.left += 1;
                            continue;
                        }
                        Err(UploadFailure::Server) => {
                            report.left += (todo.len() - done + manifests.len()) as u64;
                            return ControlFlow::Break(());
                        }
                    }
                    queue::remove_pending(&self.root, pending, target);
                }
                self.breaker.success();
                continue;
            }
            // The runs still pending here (a slow one, say): their manifests wait.
            let runs_pending: HashSet<Digest> = pending.iter().map(|p| p.key).collect();
            for (done, pending) in manifests.iter().enumerate() {
                handled.manifests.insert(*pending);
                match self.upload_manifest(store, pending, &runs_pending, tally) {
                    Ok(true) => report.manifests += 1,
                    Ok(false) => {
                        report.left += 1;
                        continue;
                    }
                    Err(UploadFailure::Gone | UploadFailure::Refused) => {}
                    Err(UploadFailure::Slow) => {
                        report.left += 1;
                        continue;
                    }
                    Err(UploadFailure::Server) => {
                        report.left += (manifests.len() - done) as u64;
                        return ControlFlow::Break(());
                    }
                }
                queue::remove_pending_manifest(&self.root, pending, target);
            }
            self.breaker.success();
        }
    }

    /// Uploads the result stored under `key`: the objects the server lacks (or holds
    /// damaged, as far as this machine knows), then the envelope, then the entry, so
    /// that no reader ever finds an entry whose objects are not there yet.
    fn upload(
        &self,
        store: &LocalStore,
        pending: &queue::Pending,
        tally: &mut Tally,
    ) -> Result<(), UploadFailure> {
        let key = &pending.key;
        let bytes = match store.get_entry(key) {
            Ok(Some(bytes)) => bytes,
            _ => return Err(UploadFailure::Gone),
        };
        // Only the very result the marker was written for: one stored since (by a job
        // in another namespace, say) is not this namespace's to publish.
        if pending.entry != Some(Digest::of_bytes(&bytes)) {
            return Err(UploadFailure::Gone);
        }
        let entry = Entry::decode(&bytes).map_err(|_| UploadFailure::Gone)?;
        let server = |e: TransportError, tally: &mut Tally| self.upload_failure(e, key, tally);
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
            let mut object = store
                .open_object(&blob.digest, blob.size)
                .map_err(|_| UploadFailure::Gone)?;
            let sent_compressed = self.put_compressed(&path, blob.size, &mut object);
            match sent_compressed
                .unwrap_or_else(|| self.put_creating(&path, blob.size, &mut object))
            {
                // A large object the link is too slow for: said, and left pending for a
                // later try, while the results after it still go up.
                Err(TransportError::Timeout(budget)) if blob.size > SLOW_OBJECT => {
                    tally.error(
                        Some(key),
                        format!(
                            "uploading {} MiB of result {} to {} took longer than {budget:?}; it stays pending",
                            blob.size >> 20,
                            key.short(),
                            self.shown()
                        ),
                    );
                    return Err(UploadFailure::Slow);
                }
                sent => sent.map_err(|e| server(e, tally))?,
            }
            sent += blob.size;
            if resend {
                queue::unmark_corrupt(&self.root, &blob.digest);
            }
        }
        let sealed = envelope::seal(&self.namespace, key, &bytes, self.signing_key.as_deref());
        let meta = Digest::of_bytes(&sealed);
        self.put_creating(
            &format!("cas/{}", meta.to_hex()),
            sealed.len() as u64,
            &mut io::Cursor::new(&sealed),
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
        self.put_creating(
            &format!("ac/{}", name.to_hex()),
            ac.len() as u64,
            &mut io::Cursor::new(&ac),
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_put_refused_for_itself_drops_one_result() {
        let status = |status, method| TransportError::Status {
            status,
            method,
            path: "cas/x".into(),
        };
        assert!(refuses_this_result(&status(413, "PUT")));
        assert!(!refuses_this_result(&status(405, "PUT")));
        assert!(!refuses_this_result(&status(404, "PUT")));
        assert!(!refuses_this_result(&status(403, "PUT")));
        assert!(!refuses_this_result(&status(429, "PUT")));
        assert!(!refuses_this_result(&status(500, "PUT")));
        assert!(!refuses_this_result(&status(405, "HEAD")));
    }
}

//! Fetching a result from the shared cache into the local store: the namespaces read
//! in order, the ActionResult, the envelope and every object checked before anything is
//! kept. A wrong answer is a miss with a warning, never a wrong replay.

use std::collections::HashSet;
use std::io::{self, Write};
use std::time::Duration;

use super::backend::TransportError;
use super::breaker::Allow;
use super::envelope::{self, EnvelopeError};
use super::{proto, queue, Remote, Tally, MAX_AC_BYTES, MAX_RECORD_BYTES};
use crate::digest::{Digest, Hasher};
use crate::events::Kind;
use crate::index::Entry;
use crate::store::local::LocalStore;
use crate::store::Store;

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
    /// The server failed (the warning says how): nothing is known of the key there.
    Failed,
    /// The circuit breaker is open for this much longer: nothing was asked.
    Skipped(Duration),
}

/// One namespace's answer.
pub(super) enum Step {
    Found(Fetched),
    Absent,
    /// The server failed: stop asking it.
    Failed,
    /// This machine could not keep what came (a full disk): stop, and say so, but it
    /// is neither the server's failure nor a miss.
    Local,
}

/// What a download brought.
pub(super) enum Download {
    Absent,
    /// The bytes' digest and size.
    Got(Digest, u64),
    /// More bytes than the ones named: a wrong answer.
    Wrong,
}

/// What the download of a sealed envelope through its ac record brought.
pub(super) enum Sealed {
    /// The envelope's bytes, checked against the digest and size its record names.
    Got(Vec<u8>),
    /// No record, or the envelope it names is gone (the server evicted it): a miss.
    Absent,
    /// The record is unusable, for this reason.
    Unusable(String),
    /// The envelope does not match the digest its record names.
    Damaged(Digest),
}

/// Reads an ac record for the digest and size of the envelope it names.
pub(super) type ReadsMeta = fn(&[u8]) -> Result<(Digest, u64), proto::ProtoError>;

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

impl Remote {
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
                Step::Failed | Step::Local => return Fetched::Failed,
            }
        }
        self.breaker.success();
        tally.counters.remote_misses += 1;
        tally.event(Kind::RemoteMiss, Some(key), None);
        Fetched::Miss
    }

    /// Downloads `path` (at most `limit` bytes) into `sink`, hashing it. `Err(step)`
    /// when the caller must stop with that step.
    pub(super) fn download(
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
            // The server holds more bytes than the ones named: a wrong answer. (A body
            // cut short is the connection's failure, counted below like any other.)
            Err(TransportError::TooLarge { .. }) => Ok(Download::Wrong),
            // A redirect for this one name (a collection planted where an entry goes):
            // a wrong answer about this entry, not a failing server; the next namespace
            // may still have the result.
            Err(TransportError::Status { status, .. }) if (300..400).contains(&status) => {
                Ok(Download::Wrong)
            }
            Err(e) => {
                self.fault(&e, Some(key), tally);
                Err(if e.is_server_fault() {
                    Step::Failed
                } else {
                    Step::Local
                })
            }
        }
    }

    /// The envelope behind `ac/<name>`: the record (at most `record_limit` bytes), read
    /// by `meta_of` for the envelope's digest and size (at most `envelope_limit`), then
    /// that envelope from `cas/`, checked against them. `Err(step)` when the caller must
    /// stop with that step.
    pub(super) fn download_sealed(
        &self,
        name: &Digest,
        record_limit: u64,
        meta_of: ReadsMeta,
        envelope_limit: u64,
        key: &Digest,
        tally: &mut Tally,
    ) -> Result<Sealed, Step> {
        let mut record = Vec::new();
        let ac_path = format!("ac/{}", name.to_hex());
        match self.download(&ac_path, record_limit, &mut record, key, tally)? {
            Download::Absent => return Ok(Sealed::Absent),
            Download::Wrong => {
                return Ok(Sealed::Unusable("the server sent a damaged record".into()))
            }
            Download::Got(..) => {}
        }
        let (meta, meta_size) = match meta_of(&record) {
            Ok(found) => found,
            Err(e) => return Ok(Sealed::Unusable(e.to_string())),
        };
        if meta_size > envelope_limit {
            return Ok(Sealed::Unusable(
                "it names an envelope larger than any memo writes".into(),
            ));
        }
        let mut sealed = Vec::new();
        let cas_path = format!("cas/{}", meta.to_hex());
        Ok(
            match self.download(&cas_path, meta_size, &mut sealed, key, tally)? {
                Download::Absent => Sealed::Absent,
                Download::Got(d, n) if (d, n) == (meta, meta_size) => Sealed::Got(sealed),
                _ => Sealed::Damaged(meta),
            },
        )
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
        let name = envelope::ac_name(namespace, key);
        let sealed = match self.download_sealed(
            &name,
            MAX_AC_BYTES,
            proto::meta_of,
            MAX_RECORD_BYTES,
            key,
            tally,
        ) {
            Ok(Sealed::Got(sealed)) => sealed,
            // No entry, or the server evicted its envelope (an incomplete entry): a miss.
            Ok(Sealed::Absent) => return Step::Absent,
            Ok(Sealed::Unusable(why)) => return unusable(tally, why),
            Ok(Sealed::Damaged(meta)) => return self.damaged(&meta, key, namespace, tally),
            Err(step) => return step,
        };
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
                    tally.warnings.push(super::cannot_keep(e));
                    return Step::Local;
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
                Ok(Some(bytes)) => added += bytes,
                Ok(None) => {}
                Err(e) => {
                    tally.warnings.push(super::cannot_keep(e));
                    return Step::Local;
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
}

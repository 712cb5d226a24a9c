//! A traced call's manifest on the shared cache: the keys of the runs recorded for the
//! call, read from the namespaces this machine reads, and written, merged with what the
//! server already holds, after the runs it names are up.
//!
//! On the server a manifest is stored like an entry: `ac/<manifest_name(namespace,
//! call)>` holds an ActionResult whose one output file names the manifest's envelope in
//! `cas/` (see `envelope::seal_manifest`). It only names runs: each run is then fetched
//! and verified as an entry of its own (`fetch`), so a manifest can make a reader look
//! at a run, never replay one that is not this call's or that does not hold here.

use std::collections::HashSet;
use std::io;
use std::time::Duration;

use super::breaker::Allow;
use super::envelope::{self, EnvelopeError};
use super::fetch::Sealed;
use super::upload::UploadFailure;
use super::{proto, queue, Remote, Tally};
use crate::digest::Digest;
use crate::events::{Event, Kind};
use crate::store::local::LocalStore;
use crate::store::Store;
use crate::traced::MAX_RUNS;

/// No manifest memo writes comes near this (16 run keys, its envelope under 2 KiB); it
/// bounds both the record and the envelope a server may send.
pub(super) const MAX_MANIFEST_BYTES: u64 = 64 << 10;

/// What the shared tier records for a traced call.
pub enum Listed {
    /// The runs, newest first, the first namespace's first (empty: no manifest).
    Runs(Vec<Digest>),
    /// The server failed (the warning says how).
    Failed,
    /// The circuit breaker is open for this much longer: nothing was asked.
    Skipped(Duration),
}

/// One namespace's answer: its runs, none, or `Err` when the server failed.
type Answer = Result<Option<Vec<Digest>>, ()>;

impl Remote {
    /// Reads the manifest of `call` in every namespace this machine reads, in order, and
    /// merges them (the first namespace's runs first). A manifest found nowhere is one
    /// remote miss; the runs found are counted when each is fetched.
    pub fn fetch_runs(&self, call: &Digest, tally: &mut Tally) -> Listed {
        if let Allow::Open(left) = self.breaker.allow() {
            return Listed::Skipped(left);
        }
        let mut runs = Vec::new();
        let mut found = false;
        for namespace in &self.read {
            match self.manifest_in(namespace, call, tally) {
                Ok(Some(listed)) => {
                    found = true;
                    for run in listed {
                        if !runs.contains(&run) {
                            runs.push(run);
                        }
                    }
                }
                Ok(None) => {}
                Err(()) => return Listed::Failed,
            }
        }
        self.breaker.success();
        if !found {
            tally.counters.remote_misses += 1;
            tally.event(Kind::RemoteMiss, Some(call), Some("no manifest".into()));
        }
        Listed::Runs(runs)
    }

    /// The runs the manifest of `call` in `namespace` names, verified: `None` when there
    /// is none or it is unusable (said and counted).
    fn manifest_in(&self, namespace: &str, call: &Digest, tally: &mut Tally) -> Answer {
        let unusable = |tally: &mut Tally, why: String| {
            tally.error(
                Some(call),
                format!(
                    "remote manifest of traced call {} in namespace '{namespace}' is unusable ({why})",
                    call.short()
                ),
            );
            Ok(None)
        };
        let name = envelope::manifest_name(namespace, call);
        let sealed = match self.download_sealed(
            &name,
            MAX_MANIFEST_BYTES,
            proto::manifest_meta_of,
            MAX_MANIFEST_BYTES,
            call,
            tally,
        ) {
            Ok(Sealed::Got(sealed)) => sealed,
            Ok(Sealed::Absent) => return Ok(None),
            Ok(Sealed::Unusable(why)) => return unusable(tally, why),
            Ok(Sealed::Damaged(meta)) => {
                queue::mark_corrupt(&self.root, &meta);
                return unusable(
                    tally,
                    format!("its envelope {} does not match its digest", meta.short()),
                );
            }
            Err(_) => return Err(()),
        };
        match envelope::open_manifest(
            &sealed,
            namespace,
            call,
            self.signing_key.as_deref(),
            MAX_RUNS,
        ) {
            Ok(runs) => Ok(Some(runs)),
            Err(e @ (EnvelopeError::Unsigned | EnvelopeError::BadSignature)) => {
                let why = match e {
                    EnvelopeError::Unsigned => "the manifest is not signed",
                    _ => "the manifest's signature is wrong",
                };
                let message = format!(
                    "remote manifest of traced call {} in namespace '{namespace}' rejected: {why}",
                    call.short()
                );
                tally.counters.remote_rejected += 1;
                tally.event(Kind::Rejected, Some(call), Some(message.clone()));
                tally.warnings.push(message);
                Ok(None)
            }
            Err(e) => unusable(tally, e.to_string()),
        }
    }

    /// Marks the manifest of the traced call `call` for upload.
    pub fn add_pending_manifest(&self, call: &Digest) -> io::Result<()> {
        queue::add_pending_manifest(&self.root, call, &self.target())
    }

    /// Uploads the manifest of `pending`'s call: the runs this machine recorded for it
    /// (newest first), then those the server's manifest names, at most `MAX_RUNS`, so
    /// that two machines adding runs at once do not erase each other's (a lost race
    /// costs a miss). `Ok(false)` when it must wait: a run it names is still pending
    /// here, and a manifest never goes up before the runs it names.
    pub(super) fn upload_manifest(
        &self,
        store: &LocalStore,
        pending: &queue::PendingManifest,
        results_pending: &HashSet<Digest>,
        tally: &mut Tally,
    ) -> Result<bool, UploadFailure> {
        let call = &pending.call;
        let local: Vec<Digest> = crate::traced::Manifest::read(&self.root, call)
            .runs
            .into_iter()
            .filter(|run| matches!(store.get_entry(run), Ok(Some(_))))
            .collect();
        if local.is_empty() {
            return Err(UploadFailure::Gone);
        }
        if local.iter().any(|run| results_pending.contains(run)) {
            return Ok(false);
        }
        // What the server holds is merged in. An unusable one (damaged, unsigned) is
        // replaced without a word: the reader that met it has said so already.
        let mut read = Tally::default();
        let server = self.manifest_in(&self.namespace, call, &mut read);
        tally.counters.remote_bytes_down += read.counters.remote_bytes_down;
        let server = match server {
            Ok(runs) => runs.unwrap_or_default(),
            Err(()) => {
                tally.counters.remote_errors += read.counters.remote_errors;
                tally.counters.breaker_trips += read.counters.breaker_trips;
                tally.events.append(&mut read.events);
                tally.warnings.append(&mut read.warnings);
                return Err(UploadFailure::Server);
            }
        };
        let mut merged = local;
        for run in &server {
            if !merged.contains(run) {
                merged.push(*run);
            }
        }
        merged.truncate(MAX_RUNS);
        if merged == server {
            // The server's manifest already says all this one would.
            return Ok(true);
        }
        let sealed =
            envelope::seal_manifest(&self.namespace, call, &merged, self.signing_key.as_deref());
        let meta = Digest::of_bytes(&sealed);
        let record = proto::encode_manifest(&meta, sealed.len() as u64);
        let name = envelope::manifest_name(&self.namespace, call);
        for (path, bytes) in [
            (format!("cas/{}", meta.to_hex()), &sealed),
            (format!("ac/{}", name.to_hex()), &record),
        ] {
            self.put_creating(&path, bytes.len() as u64, &mut io::Cursor::new(bytes))
                .map_err(|e| self.upload_failure(e, call, tally))?;
        }
        let sent = (sealed.len() + record.len()) as u64;
        tally.counters.remote_bytes_up += sent as i64;
        let mut event = Event::new(Kind::Upload);
        event.key = Some(call.to_hex());
        event.size = Some(sent);
        event.message = Some(format!(
            "manifest of a traced call ({} runs), namespace '{}'",
            merged.len(),
            self.namespace
        ));
        tally.events.push(event);
        Ok(true)
    }
}

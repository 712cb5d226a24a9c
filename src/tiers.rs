//! The two tiers behind one interface: the cache directory on this machine, then the
//! shared cache a team runs (`remote`). `run` asks the tiers to bring a result into the
//! local one and replays it from there; it tells them what it stored, and the shared
//! tier takes it in the background. Owns writing an entry into the local tier with its
//! bookkeeping, for a run and for a result brought from the shared tier alike.

use crate::cache::{Cache, Warner};
use crate::config::Settings;
use crate::digest::Digest;
use crate::events::{Event, Kind};
use crate::index::usage::Usage;
use crate::index::Entry;
use crate::remote::{Fetched, Listed, Remote, Tally};
use crate::stats::Counters;
use crate::store::{Store, StoreError};

pub struct Tiers<'a> {
    cache: &'a Cache,
    settings: &'a Settings,
    remote: Option<Remote>,
}

impl<'a> Tiers<'a> {
    /// The tiers of this call: the local cache, and the shared one if configured. A
    /// shared cache that cannot be used here (no credentials, an unreadable CA file) is
    /// one warning, and the call goes on with the local tier alone.
    pub fn open(cache: &'a Cache, settings: &'a Settings, warner: &Warner) -> Tiers<'a> {
        let remote = match Remote::open(&settings.remote, cache.root()) {
            Ok(remote) => remote,
            Err(e) => {
                warner.warn(format!("{e}; not using the shared cache"));
                None
            }
        };
        Tiers {
            cache,
            settings,
            remote,
        }
    }

    /// After a local miss: brings a result `accept` takes from the next tier into the
    /// local one. Returns whether one was brought (then a local lookup finds it).
    pub fn bring(&self, key: &Digest, accept: &dyn Fn(&Entry) -> bool) -> bool {
        let Some(remote) = &self.remote else {
            return false;
        };
        let verbose = self.settings.verbose.value;
        // What a download killed here left in tmp/ goes before a new one starts.
        crate::gc::sweep_dead_staging(self.cache.root());
        let mut tally = Tally::default();
        let brought = match remote.fetch(key, &self.cache.store, accept, &mut tally) {
            Fetched::Hit {
                entry,
                encoded,
                namespace,
                added,
            } => {
                let installed = install(self.cache, key, &entry, &encoded, added, false);
                crate::gc::trim_in_background_if_needed(
                    self.cache,
                    self.settings.max_size.value,
                    key,
                    added + encoded.len() as u64,
                );
                match &installed {
                    Ok(()) if verbose => crate::console::note(format_args!(
                        "memo: remote hit {} (namespace '{namespace}')",
                        key.short()
                    )),
                    Ok(()) => {}
                    Err(e) => tally.warnings.push(crate::remote::cannot_keep(e)),
                }
                installed.is_ok()
            }
            Fetched::Miss => {
                if verbose {
                    crate::console::note(format_args!("memo: remote miss {}", key.short()));
                }
                false
            }
            Fetched::Failed => {
                if verbose {
                    crate::console::note(format_args!(
                        "memo: shared cache lookup of {} failed (see the warning)",
                        key.short()
                    ));
                }
                false
            }
            Fetched::Skipped(left) => {
                if verbose {
                    crate::console::note(format_args!(
                        "memo: shared cache skipped: it failed repeatedly (trying again in {})",
                        crate::config::format_duration(left)
                    ));
                }
                false
            }
        };
        self.cache.record_tally(tally);
        brought
    }

    /// After a local miss of the traced call `call` (`--trace`): the keys of the runs the
    /// shared tier records for it, newest first (each then brought, checked and kept by
    /// `bring` like any result). A failing server, an open breaker or an unusable
    /// manifest is no run (and at most one warning): the command runs.
    pub fn runs_of(&self, call: &Digest) -> Vec<Digest> {
        let Some(remote) = &self.remote else {
            return Vec::new();
        };
        let verbose = self.settings.verbose.value;
        let mut tally = Tally::default();
        let runs = match remote.fetch_runs(call, &mut tally) {
            Listed::Runs(runs) => {
                if verbose && runs.is_empty() {
                    crate::console::note(format_args!(
                        "memo: remote miss {}: the shared cache records no run of this traced call",
                        call.short()
                    ));
                } else if verbose {
                    crate::console::note(format_args!(
                        "memo: the shared cache records {} run{} of traced call {}",
                        runs.len(),
                        if runs.len() == 1 { "" } else { "s" },
                        call.short()
                    ));
                }
                runs
            }
            Listed::Failed => {
                if verbose {
                    crate::console::note(format_args!(
                        "memo: shared cache lookup of {} failed (see the warning)",
                        call.short()
                    ));
                }
                Vec::new()
            }
            Listed::Skipped(left) => {
                if verbose {
                    crate::console::note(format_args!(
                        "memo: shared cache skipped: it failed repeatedly (trying again in {})",
                        crate::config::format_duration(left)
                    ));
                }
                Vec::new()
            }
        };
        self.cache.record_tally(tally);
        runs
    }

    /// The traced call `call` has a new run (stored and passed to `stored` first): its
    /// manifest is queued, to go to the shared tier after the run's entry, merged with
    /// the manifest the server holds.
    pub fn stored_manifest(&self, call: &Digest) {
        let Some(remote) = self.remote.as_ref().filter(|r| r.writes()) else {
            return;
        };
        if let Err(e) = remote.add_pending_manifest(call) {
            crate::console::warn_once(format!("cannot queue the upload to the shared cache ({e})"));
            return;
        }
        // The uploader `stored` started may be done before this marker was written: one
        // more is started (it leaves at once if that one is still at work, which looks
        // again before it exits).
        self.start_uploader(remote);
    }

    /// A result was stored locally under `key` (its encoded entry hashing to `entry`):
    /// in read-write mode it is queued for the shared tier, and a detached uploader is
    /// started, so that the caller gets its output and exit code without waiting for
    /// the network.
    pub fn stored(&self, key: &Digest, entry: &Digest) {
        let Some(remote) = self.remote.as_ref().filter(|r| r.writes()) else {
            return;
        };
        if let Err(e) = remote.add_pending(key, entry) {
            crate::console::warn_once(format!("cannot queue the upload to the shared cache ({e})"));
            return;
        }
        self.start_uploader(remote);
    }

    /// Starts a detached `memo remote upload`.
    fn start_uploader(&self, remote: &Remote) {
        let args = ["remote".into(), "upload".into()];
        if let Err(e) = self
            .cache
            .spawn_detached_with(&args, &detached_env(self.settings))
        {
            crate::console::warn_once(format!(
                "cannot start the upload to {} ({e}); `memo remote push` sends it",
                remote.shown()
            ));
        }
    }
}

/// The shared cache's URL for a detached memo: through the environment, not the
/// command line, since it may hold a password.
pub fn detached_env(settings: &Settings) -> Vec<(&'static str, &str)> {
    match &settings.remote.url.value {
        Some(url) => vec![("MEMO_REMOTE", url.as_str())],
        None => vec![("MEMO_REMOTE", "off")],
    }
}

/// Writes `entry` (encoded as `encoded`, its objects already stored, `added` bytes of
/// them new) under `key`, with its usage record and the counters: what a run stores
/// (`ran`: counted and logged as a store), and what a result fetched from the shared
/// tier is kept as (logged as its remote hit instead).
pub fn install(
    cache: &Cache,
    key: &Digest,
    entry: &Entry,
    encoded: &[u8],
    added: u64,
    ran: bool,
) -> Result<(), StoreError> {
    crate::gc::note_replaced(cache, key, entry);
    let previous = cache.store.put_entry(key, encoded)?;
    let usage = Usage::of_stored(entry, encoded.len() as u64);
    let added = added as i64 + encoded.len() as i64 - previous.unwrap_or(0) as i64;
    let delta = Counters {
        stores: ran as i64,
        entries: previous.is_none() as i64,
        bytes: added,
        ..Default::default()
    };
    // The usage record rides in the store's journal record (a fetch from the shared
    // cache logs no store: `memo ls` reads such an entry itself).
    if ran {
        let mut event = Event::of_command(Kind::Store, key, &entry.material);
        event.duration_ms = Some(entry.duration_ms);
        event.size = Some(usage.size);
        event.usage = Some(usage);
        cache.record(delta, event);
    } else {
        cache.record_counters(delta);
    }
    Ok(())
}

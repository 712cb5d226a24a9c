//! The cache directory as a whole: the store, its counters and its event log, opened
//! together, plus the bookkeeping every command shares (warnings that are said once,
//! locks, detached helper processes).
//!
//! Owns the rules for opening: for `memo run`, any trouble with the cache location,
//! however it was named, is a warning and no cache (fail open); the commands that look
//! at the cache or remove from it never create it (`open_existing`).

use std::cell::{Cell, RefCell};
use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

use crate::config::{Setting, Source};
use crate::digest::Digest;
use crate::events::{Event, EventLog, Kind};
use crate::stats::{Counters, Stats};
use crate::store::local::LocalStore;
use crate::store::{Object, Store, StoreError};

pub struct Cache {
    pub store: LocalStore,
    pub stats: Stats,
    pub log: EventLog,
}

impl Cache {
    pub fn root(&self) -> &Path {
        self.store.root()
    }

    /// Counts and logs; failures here must never affect the user's command. The bytes
    /// the digest table grew by since the last call count toward the cache's size.
    ///
    /// The counts of activity travel in the event's journal record: one append, no
    /// file rewritten. Only a change to what is stored (`entries`, `bytes`) updates a
    /// stats shard, which the automatic trim reads after every store.
    pub fn record(&self, mut delta: Counters, mut event: Event) {
        delta.bytes += self.store.digest_cache().take_growth() as i64;
        let (content, activity) = delta.split_content();
        if content != Counters::default() {
            let _ = self.stats.add(&content);
        }
        event.counts = Some(activity);
        self.append(&event);
    }

    /// Appends `event` to the journal (the event log), folds the journal into the
    /// summary when it has grown past a multiple of `FOLD_EVERY`, and rotates it once
    /// past `MAX_LOG_BYTES`, folding it first, so that no record is dropped unfolded.
    pub fn append(&self, event: &Event) {
        crate::index::summary::append(self.root(), &self.log, event);
    }

    /// Every counter: what is stored from the stats shards, past activity from the
    /// shards (remote counts, older memos) and the summary with the journal's tail.
    pub fn counters(&self) -> Counters {
        self.counters_and_top().0
    }

    /// `counters`, and the entries that saved the most time (see `summary::current_top`).
    pub fn counters_and_top(&self) -> (Counters, Vec<crate::index::summary::Top>) {
        let summary = crate::index::summary::summary_path(self.root());
        if !summary.exists() && crate::fsutil::is_real_dir(&self.root().join("usage")) {
            // A cache of an earlier memo: its usage files become the summary once.
            let _ = crate::index::summary::fold(self.root(), &self.log, true, |_| {});
        }
        let mut total = self.stats.total();
        let (activity, top) = crate::index::summary::current_top(self.root(), &self.log);
        total.add(&activity);
        (total, top)
    }

    /// Every entry's usage record, as of now, for the entries that exist: those the
    /// summary does not know (fetched from the shared cache, or stored while the
    /// summary was damaged) get a record made from the entry.
    pub fn usages(&self) -> Vec<(Digest, crate::index::usage::Usage)> {
        // Many lookups: each pack's table is read once.
        let _kept = self.store.packs().keep_tables();
        crate::index::summary::listing(self.root(), &self.log, |key| {
            let bytes = self.store.get_entry(key).ok()??;
            let entry = crate::index::Entry::decode(&bytes).ok()?;
            Some((entry, bytes.len() as u64))
        })
    }

    /// `memo stats --zero`: resets the counters of past activity, keeps what describes
    /// the content.
    pub fn zero_activity(&self) -> io::Result<()> {
        crate::index::summary::fold(self.root(), &self.log, true, |summary| {
            summary.header.counters = Counters::default();
        })?;
        self.stats.zero_activity()
    }

    /// Counts, logs and says (once, like every warning) what a remote operation did.
    pub fn record_tally(&self, tally: crate::remote::Tally) {
        let _ = self.stats.add(&tally.counters);
        for event in &tally.events {
            self.append(event);
        }
        for warning in &tally.warnings {
            crate::console::warn_once(warning);
        }
    }

    /// Counts without logging an event (the event is logged by whoever knows it).
    pub fn record_counters(&self, mut delta: Counters) {
        delta.bytes += self.store.digest_cache().take_growth() as i64;
        let _ = self.stats.add(&delta);
    }

    /// Adds to the counters the bytes the digest table grew by, for a command that
    /// records no event (`memo explain`): the table counts toward the cache's size.
    pub fn count_digest_growth(&self) {
        let bytes = self.store.digest_cache().take_growth() as i64;
        if bytes > 0 {
            let _ = self.stats.add(&Counters {
                bytes,
                ..Default::default()
            });
        }
    }

    /// Removes the result stored under `key`: its entry. Its usage record goes from the
    /// summary with the event the caller logs (or at the next gc), its objects once gc
    /// finds them unreferenced. `Err` (NotFound included) when the entry could not be
    /// removed.
    pub fn remove_result(&self, key: &Digest) -> io::Result<()> {
        match self.store.remove_stored(key) {
            Ok(true) => Ok(()),
            Ok(false) => Err(io::Error::from(io::ErrorKind::NotFound)),
            Err(e) => Err(io::Error::other(e.to_string())),
        }
    }

    pub fn locks_dir(&self) -> PathBuf {
        self.root().join("locks")
    }

    /// Starts `memo ARGS` in the background, detached from this process's terminal and
    /// output, on the same cache; this process does not wait for it.
    pub fn spawn_detached(&self, args: &[OsString]) -> io::Result<()> {
        self.spawn_detached_with(args, &[])
    }

    /// `spawn_detached` with extra environment variables.
    ///
    /// A plain `fork` and `execve`, not `Command::spawn`: this process returns as soon as
    /// the child exists, without waiting for it to exec (posix_spawn's vfork waits), so a
    /// miss's caller does not pay for starting its uploader. Everything the child needs is
    /// built before the fork; the child calls only async-signal-safe functions.
    pub fn spawn_detached_with(&self, args: &[OsString], envs: &[(&str, &str)]) -> io::Result<()> {
        use crate::exec_args::{cstring, CStrings};
        use std::os::unix::ffi::{OsStrExt, OsStringExt};
        let exe = crate::fsutil::own_executable()?;
        let argv = CStrings::new(
            [
                exe.as_os_str(),
                "--cache-dir".as_ref(),
                self.root().as_os_str(),
            ]
            .into_iter()
            .chain(args.iter().map(OsString::as_os_str))
            .map(OsStrExt::as_bytes),
        )?;
        let inherited = std::env::vars_os()
            .filter(|(name, _)| !envs.iter().any(|(n, _)| name.as_bytes() == n.as_bytes()))
            .map(|(name, value)| {
                let mut pair = name.into_vec();
                pair.push(b'=');
                pair.extend_from_slice(value.as_bytes());
                pair
            });
        let envp = CStrings::new(
            inherited.chain(
                envs.iter()
                    .map(|(name, value)| format!("{name}={value}").into_bytes()),
            ),
        )?;
        let exe = cstring(exe.as_os_str().as_bytes())?;
        let null = cstring(b"/dev/null")?;
        // SAFETY: the child only calls async-signal-safe functions (setpgid, open, dup2,
        // close, execve, _exit) on memory prepared before the fork, then replaces itself.
        match unsafe { libc::fork() } {
            -1 => Err(io::Error::last_os_error()),
            0 => unsafe {
                libc::setpgid(0, 0);
                let fd = libc::open(null.as_ptr(), libc::O_RDWR);
                if fd >= 0 {
                    for target in 0..3 {
                        libc::dup2(fd, target);
                    }
                    if fd > 2 {
                        libc::close(fd);
                    }
                }
                libc::execve(exe.as_ptr(), argv.as_ptr(), envp.as_ptr());
                libc::_exit(127)
            },
            // Not waited for: once this process exits, init reaps it. Its own process
            // group is set from this side too, so that it is out of ours (and out of
            // reach of a terminal's ^C) before this process can exit.
            child => {
                // SAFETY: setpgid on our own child; it fails harmlessly once it has exec'd.
                unsafe { libc::setpgid(child, child) };
                Ok(())
            }
        }
    }
}

/// Opens the cache at `dir` for `memo run`: any trouble with the location (missing
/// parent, a regular file, no permission, no HOME to put it under) is one warning, and
/// the command runs without a cache. Never an error: only invalid invocations are.
pub fn open(dir: &Path, warner: &Warner) -> Option<Cache> {
    match try_open(dir) {
        Ok(cache) => Some(cache),
        Err(why) => {
            warner.warn(format!("{why}; running without the cache"));
            None
        }
    }
}

/// Opens the cache at `dir`, or says in a few words why it cannot be used.
pub fn try_open(dir: &Path) -> Result<Cache, String> {
    if dir.as_os_str().is_empty() {
        return Err("no cache directory: set MEMO_DIR or HOME".into());
    }
    let shown = dir.display();
    if let Ok(meta) = fs::metadata(dir) {
        if !meta.is_dir() {
            return Err(format!(
                "cache dir '{shown}' is not a directory (point --cache-dir or MEMO_DIR at one)"
            ));
        }
        if let Err(e) = crate::fsutil::check_access(dir, libc::R_OK | libc::X_OK) {
            return Err(format!("cache dir '{shown}' is not readable ({e})"));
        }
    }
    match LocalStore::open(dir) {
        Ok(store) => Ok(Cache {
            stats: Stats::new(dir),
            log: EventLog::new(dir),
            store,
        }),
        Err(e) => Err(format!("cache unavailable ({e})")),
    }
}

/// Opens the cache for a command that looks at it (`stats`, `ls`, `show`, `log`) or
/// removes from it (`rm`, `gc`, `clear`): such a command never creates the directory.
/// `Ok(None)` means there is no cache yet at the default location, which is an empty
/// cache. A location named by flag, environment or config file that does not exist is
/// an error naming it and where it was set: a typo must not read as "nothing cached".
/// The error is one line for people, without the `memo: ` prefix.
pub fn open_existing(dir: &Setting<PathBuf>) -> Result<Option<Cache>, String> {
    let path = &dir.value;
    if !path.as_os_str().is_empty() {
        if let Err(e) = fs::metadata(path) {
            let missing =
                e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR);
            if missing && dir.source == Source::Default {
                return Ok(None);
            }
            if missing {
                return Err(format!(
                    "cache dir '{}' ({}) does not exist; check the path, or run a command under memo to create it",
                    path.display(),
                    dir.source
                ));
            }
        }
    }
    open_or_say(path).map(Some)
}

/// Opens (creating if needed) the cache at `dir` for a command that needs one, or says
/// in one line, without the `memo: ` prefix, why it cannot and what to check.
pub fn open_or_say(dir: &Path) -> Result<Cache, String> {
    try_open(dir)
        .map_err(|why| format!("cannot use the cache: {why}; check the path and its permissions"))
}

/// Warns once (see `console::warn_once`) and keeps every warning for the event log.
#[derive(Default)]
pub struct Warner {
    messages: RefCell<Vec<String>>,
}

impl Warner {
    pub fn warn(&self, message: impl std::fmt::Display) {
        let message = message.to_string();
        crate::console::warn_once(&message);
        self.messages.borrow_mut().push(message);
    }

    /// Logs every warning as an error event, with the key it concerned.
    pub fn flush_to(&self, cache: &Cache, key: Option<&Digest>) {
        for message in self.messages.borrow_mut().drain(..) {
            let mut event = Event::new(Kind::Error);
            event.key = key.map(|k| k.to_hex());
            event.message = Some(message);
            cache.record(
                Counters {
                    errors: 1,
                    ..Default::default()
                },
                event,
            );
        }
    }
}

/// A store that counts the bytes of the objects that were new to it.
pub struct Counting<'a> {
    pub inner: &'a dyn Store,
    pub added: Cell<u64>,
}

impl Store for Counting<'_> {
    fn get_entry(&self, key: &Digest) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get_entry(key)
    }
    fn put_entry(&self, key: &Digest, bytes: &[u8]) -> Result<Option<u64>, StoreError> {
        self.inner.put_entry(key, bytes)
    }
    fn remove_entry(&self, key: &Digest) -> Result<(), StoreError> {
        self.inner.remove_entry(key)
    }
    fn stage(&self) -> Result<NamedTempFile, StoreError> {
        self.inner.stage()
    }
    fn put_object(
        &self,
        digest: &Digest,
        staged: NamedTempFile,
    ) -> Result<Option<u64>, StoreError> {
        let stored = self.inner.put_object(digest, staged)?;
        if let Some(bytes) = stored {
            self.added.set(self.added.get() + bytes);
        }
        Ok(stored)
    }
    fn open_object(&self, digest: &Digest, size: u64) -> Result<Object, StoreError> {
        self.inner.open_object(digest, size)
    }
}

pub use crate::index::usage::{clock_path, read_clock};

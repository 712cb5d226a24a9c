//! `memo run`: look the command up, replay it on a hit, run and record it on a miss.
//!
//! Owns the order of things and the fail-open policy: bad input stops memo before the
//! command runs (exit 125, 126, 127); trouble with the cache never does. A cache that
//! cannot be opened, read or written produces one warning, and the command runs with
//! its output and exit code passed through untouched.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Write as _};
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::bytes::ByteString;
use crate::cache::{self, Cache, Counting, Warner};
use crate::capture::{self, Finished, Kept, Outcome, Recording, Spec};
use crate::config::Settings;
use crate::digest::Digest;
use crate::digest_cache::DigestCache;
use crate::events::{now_ms, Event, Kind};
use crate::exit::{Code, Fatal};
use crate::index::{Blob, Entry, Streams, INLINE_MAX};
use crate::inputs::{self, Gathered};
use crate::key::{self, KeyCommand, KeyMaterial, StreamMode};
use crate::lock::{KeyLock, Lock};
use crate::outputs::{self, RecordError};
use crate::stats::Counters;
use crate::store::{Store, StoreError};
use crate::tiers::{self, Tiers};
use crate::traced::Observed;

/// A validated `memo run` (or `memo explain`) request.
pub struct RunRequest {
    pub argv: Vec<OsString>,
    pub inputs: Vec<OsString>,
    pub outputs: Vec<PathBuf>,
    pub env: Vec<String>,
    pub ignore_cwd: bool,
    /// Gitignore-style patterns left out of input directories.
    pub excludes: Vec<String>,
    /// Whether .gitignore and .ignore files under input directories are honoured.
    pub gitignore: bool,
    pub stdin: bool,
    pub salt: Option<OsString>,
    pub key_cmd: Option<OsString>,
    pub force: bool,
    pub settings: Settings,
    /// Set by a background refresh, which must record in its parent's stream mode.
    pub stream_mode: Option<StreamMode>,
    /// This process is a background refresh of a stale result.
    pub refresh: bool,
}

pub fn is_disabled() -> bool {
    matches!(
        std::env::var("MEMO_DISABLE").as_deref(),
        Ok("1") | Ok("true") | Ok("yes")
    )
}

/// `MEMO_DISABLE=1`: become the command, as if memo were not there.
pub fn exec_directly(argv: &[OsString]) -> Fatal {
    let err = Command::new(&argv[0]).args(&argv[1..]).exec();
    let shown = argv[0].to_string_lossy();
    match err.kind() {
        io::ErrorKind::NotFound => {
            Fatal::new(Code::NotFound, format!("memo: command '{shown}' not found"))
        }
        _ => Fatal::new(
            Code::NotExecutable,
            format!("memo: command '{shown}' cannot be executed: {err}"),
        ),
    }
}

/// Everything worked out before the lookup: the key and what running needs.
pub struct Prepared {
    pub material: KeyMaterial,
    pub key: Digest,
    pub spec: Spec,
    pub cache: Option<Cache>,
    pub gathered: Gathered,
}

/// Resolves the command, opens the cache (with `look_only`, only one that exists),
/// gathers every input and computes the key.
pub fn prepare(req: &RunRequest, warner: &Warner, look_only: bool) -> Result<Prepared, Fatal> {
    // Read the umask before any thread exists (see fsutil::file_mode).
    crate::fsutil::file_mode(false);
    let settings = &req.settings;
    // `memo explain` looks: a cache that does not exist is not created (at the default
    // place it is empty; a named one is an error, said before anything else).
    let looked = match look_only {
        true => Some(
            cache::open_existing(&settings.cache_dir)
                .map_err(|why| Fatal::failure(format!("memo: {why}")))?,
        ),
        false => None,
    };
    let program = inputs::resolve_executable(&req.argv[0], std::env::var_os("PATH").as_deref())?;
    let cache = match looked {
        Some(cache) => cache,
        None => cache::open(&settings.cache_dir.value, warner),
    };
    let no_cache = DigestCache::new(None);
    let digests = cache.as_ref().map_or(&no_cache, |c| c.store.digest_cache());

    // The cache is left out of input listings; without inputs there is nothing to list.
    let skip = cache
        .as_ref()
        .filter(|_| !req.inputs.is_empty())
        .and_then(|c| inputs::DirId::of(c.root()));
    let filter = inputs::Filter::new(skip, &req.excludes, req.gitignore, &req.outputs)?;
    let gathered = inputs::gather_inputs(&req.inputs, &req.outputs, &program, digests, filter)?;
    let vars: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    let streams = req.stream_mode.unwrap_or_else(|| stream_mode(req));
    let mut env = inputs::select_env(&req.env, &vars)?;
    if matches!(streams, StreamMode::Terminal { .. }) {
        // What a program draws on a terminal depends on the terminal's type (colours).
        env.extend(inputs::select_env(&["TERM".to_string()], &vars)?);
    }
    if traced(req) {
        // The variables that decide which programs and libraries the command finds: a
        // PATH that leads elsewhere finds other files, which no observation names.
        let steering = ["PATH", "LD_LIBRARY_PATH", "LD_PRELOAD"].map(String::from);
        env.extend(inputs::select_env(&steering, &vars)?);
    }
    let key_command = match &req.key_cmd {
        Some(cmd) => Some(run_key_command(cmd)?),
        None => None,
    };
    let mut cache = cache;
    let cwd = if req.ignore_cwd {
        None
    } else {
        match std::env::current_dir() {
            Ok(cwd) => Some(cwd),
            Err(e) => {
                // Deleted under us, most likely: the key cannot name it, so the command
                // runs, uncached.
                if cache.is_some() {
                    warner.warn(format!(
                        "cannot read the working directory ({e}); running without the cache (--ignore-cwd leaves it out of the key)"
                    ));
                }
                cache = None;
                None
            }
        }
    };
    let stdin = if req.stdin {
        Some(spool_stdin(cache.as_ref(), warner)?)
    } else {
        None
    };
    let mut material = KeyMaterial {
        version: key::KEY_VERSION,
        platform: key::platform(),
        argv: req
            .argv
            .iter()
            .map(|a| ByteString::from(a.as_os_str()))
            .collect(),
        cwd: cwd.as_deref().map(ByteString::from),
        env,
        executable: gathered.executable,
        inputs: gathered.files.clone(),
        outputs: req
            .outputs
            .iter()
            .map(|p| ByteString::from(p.as_path()))
            .collect(),
        stdin: stdin.as_ref().and_then(|(_, d)| *d),
        salt: req.salt.as_ref().map(|s| ByteString::from(s.as_os_str())),
        key_command,
        streams,
        traced: None,
    };
    material.normalize();
    let key = match traced(req) {
        true => key::manifest_key(&material),
        false => key::compute_key(&material),
    };
    let (program, argv) = program.launch(&req.argv);
    // Stdin that could not be spooled cannot be keyed: run without the cache.
    let cache = cache.filter(|_| !matches!(stdin, Some((_, None))));
    Ok(Prepared {
        spec: Spec {
            program,
            argv,
            stdin: stdin.map(|(file, _)| file),
            inherit: None,
        },
        material,
        key,
        cache,
        gathered,
    })
}

/// Whether this call is traced: `--trace` where tracing is built.
pub fn traced(req: &RunRequest) -> bool {
    req.settings.trace.value && crate::trace::is_supported()
}

/// How the command's stdout and stderr are connected: a pseudo-terminal with `--tty` when
/// memo's own are a terminal, else pipes as memo's are (one shared, or two).
fn stream_mode(req: &RunRequest) -> StreamMode {
    let tty = &req.settings.tty;
    if tty.value {
        match capture::pty::terminal_size() {
            Some((columns, _)) => return StreamMode::Terminal { columns },
            // Said for the flag and the variable; `tty = true` in the config file is a
            // standing preference, quietly off in scripts and CI.
            None if !matches!(tty.source, crate::config::Source::File(_)) => {
                crate::console::note(format_args!(
                    "memo: --tty ignored: stdout and stderr are not both a terminal; running with pipes"
                ))
            }
            None => {}
        }
    }
    capture::stream_mode()
}

pub fn run(req: RunRequest) -> Result<i32, Fatal> {
    let warner = Warner::default();
    let prepared = prepare(&req, &warner, false)?;
    let verbose = req.settings.verbose.value;
    if req.settings.trace.value && !crate::trace::is_supported() {
        crate::console::note(format_args!(
            "memo: not cached (--trace): {}",
            crate::trace::Untrusted::Unsupported
        ));
        return Ok(capture::run_passthrough(prepared.spec)?.exit_code());
    }
    let Some(cache) = &prepared.cache else {
        let code = capture::run_passthrough(prepared.spec)?.exit_code();
        if verbose {
            crate::console::note(format_args!(
                "memo: miss {}, not stored: cache unavailable",
                prepared.key.short()
            ));
        }
        return Ok(code);
    };
    let key = prepared.key;
    let result = run_with_cache(
        &req,
        key,
        prepared.material,
        prepared.spec,
        &prepared.gathered,
        cache,
        &warner,
    );
    warner.flush_to(cache, Some(&key));
    result
}

fn run_with_cache(
    req: &RunRequest,
    key: Digest,
    material: KeyMaterial,
    mut spec: Spec,
    gathered: &Gathered,
    cache: &Cache,
    warner: &Warner,
) -> Result<i32, Fatal> {
    let verbose = req.settings.verbose.value;
    let locks = cache.locks_dir();
    let _refresh_lock;
    if req.refresh {
        // One refresh at a time per key; and none if another already made it fresh.
        match Lock::try_take(&locks, &format!("refresh-{}", key.to_hex()), true) {
            Ok(Some(lock)) => _refresh_lock = lock,
            _ => return Ok(0),
        }
        if let Some(entry) = lookup(cache, &key, &material, req, warner) {
            if freshness(&entry, req) == Freshness::Fresh {
                return Ok(0);
            }
        }
    }
    let traced = traced(req);
    let hit = || match traced {
        true => try_traced_hit(cache, &key, &material, req, warner),
        false => try_hit(cache, &key, &material, req, warner),
    };
    if !req.force {
        if let Some(code) = hit()? {
            return Ok(code);
        }
    }
    // Single flight: one memo computes a key at a time; the others wait here and then
    // replay its result. The kernel releases the lock if its holder dies.
    let key_hex = key.to_hex();
    let without_lock = |e: io::Error| {
        // The lock's own name (a key's 64 hex digits) would mean nothing to a user; the
        // error names the cache's lock directory.
        warner.warn(format!(
            "cannot take this command's lock in the cache ({e}); running without it"
        ));
        None
    };
    let key_lock = match KeyLock::try_take(&locks, &key_hex) {
        Ok(Some(lock)) => Some(lock),
        Ok(None) => {
            if verbose {
                crate::console::note(format_args!(
                    "memo: waiting for another memo running the same command"
                ));
            }
            match KeyLock::wait(&locks, &key_hex) {
                Ok(lock) => {
                    // The other memo has probably stored the result by now.
                    if !req.force {
                        if let Some(code) = hit()? {
                            return Ok(code);
                        }
                    }
                    Some(lock)
                }
                Err(e) => without_lock(e),
            }
        }
        Err(e) => without_lock(e),
    };
    // Local miss: the next tier may have it. Asked under the lock, so that one process
    // per machine downloads; what it brings is replayed as a local hit.
    // A background refresh asks too: another machine may have recomputed the result.
    let tiers = Tiers::open(cache, &req.settings, warner);
    if (!req.force || req.refresh) && traced {
        // A traced call: the runs other machines recorded for it, each brought like any
        // result if its observations hold here.
        if let Some(code) = bring_traced(&tiers, cache, &key, &material, req, warner)? {
            return Ok(code);
        }
    }
    if (!req.force || req.refresh) && !traced {
        let accept = |entry: &Entry| {
            let usable = match freshness(entry, req) {
                Freshness::Fresh => true,
                Freshness::Stale(_) => !req.refresh,
                Freshness::Expired(_) => false,
            };
            usable && entry.material == material && exit_replayable(entry, req)
        };
        if tiers.bring(&key, &accept) {
            if req.refresh {
                // Fresh again, without running: a refresh replays nothing.
                return Ok(0);
            }
            if let Some(code) = try_hit(cache, &key, &material, req, warner)? {
                return Ok(code);
            }
        }
    }
    // A holder killed with -9 releases the lock a moment before its command dies of
    // its parent-death signal, and the processes that command started live on: wait
    // for that copy to be gone before starting another.
    let mut overlap = None;
    // Declared after `key_lock`, so dropped before it: the flight ends first.
    let mut flight = None;
    if let Some(lock) = &key_lock {
        if let Err(pid) = lock.end_earlier_copy(crate::lock::NOTED_PROCESS_WAIT) {
            overlap = Some(format!(
                "an earlier copy of the command (pid {pid}) still runs"
            ));
        }
        match lock.take_flight(crate::lock::NOTED_PROCESS_WAIT) {
            Ok((taken, all_gone)) => {
                if !all_gone && overlap.is_none() {
                    overlap =
                        Some("processes an earlier copy of the command started still run".into());
                }
                spec.inherit = Some(taken.fd());
                flight = Some(taken);
            }
            Err(e) => {
                // Without a flight a killed run's processes could not be found later:
                // this result is not stored.
                overlap = Some(format!(
                    "cannot take this command's lock in the cache ({e})"
                ));
            }
        }
    }
    if let Some(why) = &overlap {
        warner.warn(format!("{why}; result not stored"));
    }
    // `--force` skipped the lookup: counting it as a miss would lower the hit rate for
    // runs the user asked for. A background refresh (forced too) recomputes a result
    // that was stale, which is a miss.
    let forced = req.force && !req.refresh;
    let (kind, counters) = if forced {
        (
            Kind::Forced,
            Counters {
                forced: 1,
                ..Default::default()
            },
        )
    } else {
        (
            Kind::Miss,
            Counters {
                misses: 1,
                ..Default::default()
            },
        )
    };
    cache.record(counters, Event::of_command(kind, &key, &material));
    if verbose && !req.force && traced {
        match find_traced(cache, &key, &material, warner) {
            Found::Mismatch(run, why) => crate::console::note(format_args!(
                "memo: miss {}: the run recorded as {} no longer holds: {why}",
                key.short(),
                run.short()
            )),
            _ => crate::console::note(format_args!(
                "memo: miss {}: `{}` was never traced here",
                key.short(),
                key::escape_control(&key::command_line(&material))
            )),
        }
    } else if verbose && !req.force {
        // Why, before the command runs: the finding of `memo explain`, in one line.
        match crate::changes::closest_entry(cache, &material) {
            Some((closest, entry, diffs)) if !diffs.is_empty() => {
                crate::console::note(format_args!(
                    "memo: miss {}: differs from entry {} (stored {} ago) in: {}",
                    key.short(),
                    closest.short(),
                    crate::config::format_duration(age_of(&entry)),
                    diffs.join("; ")
                ))
            }
            _ => crate::console::note(format_args!(
                "memo: miss {}: `{}` was never stored here",
                key.short(),
                key::escape_control(&key::command_line(&material))
            )),
        }
    }

    let cache_failures = req.settings.cache_failures.value;
    let note_command = |pid, pipes: &[u64]| {
        if let Some(flight) = &flight {
            let _ = flight.note_process(pid, pipes);
        }
    };
    let store_root = cache.store.root().to_path_buf();
    let finished = capture::run_recorded(
        spec,
        material.streams,
        traced,
        &|| crate::store::local::stage_in(&store_root).map_err(io::Error::other),
        &note_command,
    )
    .inspect_err(|fatal| {
        if req.refresh {
            let why = fatal.message.trim_start_matches("memo: ");
            note_failed_refresh(
                cache,
                &key,
                &material,
                &format!("background refresh failed: {why}"),
            );
        }
    })?;
    if req.refresh {
        if let Some(failure) = refresh_failure(&finished) {
            note_failed_refresh(cache, &key, &material, &failure);
        }
    }
    if let Some(why) = &finished.undelivered {
        warner.warn(format!("{why}; it is recorded all the same"));
    }
    let code = finished.outcome.exit_code();
    let duration = finished.duration;
    let resized = match material.streams {
        // Laid out for one width, then another: no width to key it on.
        StreamMode::Terminal { columns } if !req.refresh => capture::pty::terminal_size()
            .is_some_and(|(now, _)| now != columns)
            .then(|| "the terminal was resized during the run".to_string()),
        _ => None,
    };
    let storable = match overlap.or(resized) {
        Some(reason) => Err(NotStored {
            reason,
            warn: false,
        }),
        None => decide_storable(&finished, cache_failures, gathered),
    };
    // A traced run is stored under the key of what it observed, and its call's manifest
    // names it.
    let storable = storable.and_then(|()| match traced {
        true => observe_traced(cache, &material, &finished).map(Some),
        false => Ok(None),
    });
    let verdict = match storable {
        Ok(observed) => match save_keyed(cache, key, material, finished, observed, &req.settings) {
            Ok((stored_under, entry)) => {
                tiers.stored(&stored_under, &entry);
                if stored_under != key {
                    tiers.stored_manifest(&key);
                }
                "stored".to_string()
            }
            Err(e) => {
                warner.warn(format!("{e}; result not stored"));
                "not stored".to_string()
            }
        },
        Err(why) => {
            if why.warn {
                warner.warn(format!("{}; result not stored", why.reason));
            }
            format!("not stored: {}", why.reason)
        }
    };
    if verbose {
        crate::console::note(format_args!(
            "memo: {} {}, ran {}, {verdict}",
            if forced { "forced" } else { "miss" },
            key.short(),
            crate::config::format_duration(duration)
        ));
    }
    Ok(code)
}

/// Looks the key up and replays it if it may be: fresh, or stale within the window (then
/// a background refresh starts). `Ok(None)`: the command must run.
fn try_hit(
    cache: &Cache,
    key: &Digest,
    material: &KeyMaterial,
    req: &RunRequest,
    warner: &Warner,
) -> Result<Option<i32>, Fatal> {
    let started = Instant::now();
    let Some(entry) = lookup(cache, key, material, req, warner) else {
        return Ok(None);
    };
    replay_entry(cache, key, entry, started, req, warner)
}

/// `try_hit` once the entry is read and known to be for this call.
fn replay_entry(
    cache: &Cache,
    key: &Digest,
    entry: Entry,
    started: Instant,
    req: &RunRequest,
    warner: &Warner,
) -> Result<Option<i32>, Fatal> {
    let material = &entry.material;
    let verbose = req.settings.verbose.value;
    let fresh = freshness(&entry, req);
    if let Freshness::Expired(late) = fresh {
        if verbose {
            crate::console::note(format_args!(
                "memo: entry {} expired {} ago",
                key.short(),
                crate::config::format_duration(late)
            ));
        }
        return Ok(None);
    }
    let Some(code) = replay(cache, key, &entry, warner)? else {
        return Ok(None);
    };
    let saved = Duration::from_millis(entry.duration_ms).saturating_sub(started.elapsed());
    note_hit(cache, key, &entry, saved);
    let mut how = String::new();
    if let Freshness::Stale(_) = fresh {
        how = if !req.outputs.is_empty() {
            // A refresh would rewrite the declared outputs while this caller reads them:
            // none runs, and the result is recomputed in the foreground once the stale
            // window ends.
            ", stale: no background refresh for a command with --output".into()
        } else {
            match cache.spawn_detached_with(
                &refresh_args(req, material),
                &tiers::detached_env(&req.settings),
            ) {
                Ok(()) => ", stale: refreshing in the background".into(),
                Err(e) => format!(", stale: cannot start a refresh ({e})"),
            }
        };
    }
    if verbose {
        crate::console::note(format_args!(
            "memo: hit {}, saved {:.2}s{how}",
            key.short(),
            saved.as_secs_f64()
        ));
    }
    Ok(Some(code))
}

/// Whether a stored result may be replayed under `--ttl` and `--stale`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freshness {
    Fresh,
    /// Expired this long ago, within the `--stale` window: replayed, then refreshed in
    /// the background.
    Stale(Duration),
    /// Expired this long ago, past any `--stale` window: a miss.
    Expired(Duration),
}

impl Freshness {
    /// The state of a result `age` old. Each entry ages on its own clock.
    pub fn of(age: Duration, ttl: Option<Duration>, stale: Option<Duration>) -> Freshness {
        let Some(late) = ttl
            .and_then(|ttl| age.checked_sub(ttl))
            .filter(|l| !l.is_zero())
        else {
            return Freshness::Fresh;
        };
        if late <= stale.unwrap_or_default() {
            Freshness::Stale(late)
        } else {
            Freshness::Expired(late)
        }
    }

    /// The state of a result stored at `created_ms`, at `now_ms` (Unix milliseconds).
    /// A result stored "in the future" was written before the clock moved back: its
    /// true age is unknown, so under a TTL it is expired (by the size of the jump), never
    /// fresh for as long as the clock takes to catch up.
    pub fn at(
        created_ms: u64,
        now_ms: u64,
        ttl: Option<Duration>,
        stale: Option<Duration>,
    ) -> Freshness {
        if ttl.is_some() && created_ms > now_ms {
            return Freshness::Expired(Duration::from_millis(created_ms - now_ms));
        }
        Freshness::of(
            Duration::from_millis(now_ms.saturating_sub(created_ms)),
            ttl,
            stale,
        )
    }
}

/// How long ago `entry` was stored.
/// Whether a result's exit code may be replayed: 0 always, any other only with
/// `--cache-failures`.
pub fn exit_replayable(entry: &Entry, req: &RunRequest) -> bool {
    entry.exit_code == 0 || req.settings.cache_failures.value
}

pub fn age_of(entry: &Entry) -> Duration {
    Duration::from_millis(now_ms().saturating_sub(entry.created_unix_ms))
}

/// The freshness of `entry` under the request's `--ttl` and `--stale`.
pub fn freshness(entry: &Entry, req: &RunRequest) -> Freshness {
    let settings = &req.settings;
    Freshness::at(
        entry.created_unix_ms,
        now_ms(),
        settings.ttl.value,
        settings.stale.value,
    )
}

/// The arguments of a background `memo run` that recomputes this result.
fn refresh_args(req: &RunRequest, material: &KeyMaterial) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["run".into(), "--force".into(), "--refresh".into()];
    args.push("--stream-mode".into());
    args.push(match material.streams {
        StreamMode::Merged => "merged".into(),
        StreamMode::Separate => "separate".into(),
        StreamMode::Terminal { columns } => format!("terminal={columns}").into(),
    });
    let mut pair = |flag: &str, value: OsString| {
        args.push(flag.into());
        args.push(value);
    };
    for input in &req.inputs {
        pair("--input", input.clone());
    }
    for output in &req.outputs {
        pair("--output", output.clone().into());
    }
    for name in &req.env {
        pair("--env", name.into());
    }
    for pattern in &req.excludes {
        pair("--exclude", pattern.into());
    }
    if let Some(salt) = &req.salt {
        pair("--salt", salt.clone());
    }
    if let Some(cmd) = &req.key_cmd {
        pair("--key-cmd", cmd.clone());
    }
    if let Some(ttl) = req.settings.ttl.value {
        pair("--ttl", format!("{}ms", ttl.as_millis()).into());
    }
    if req.settings.cache_failures.value {
        args.push("--cache-failures".into());
    }
    if req.ignore_cwd {
        args.push("--ignore-cwd".into());
    }
    if req.gitignore {
        args.push("--gitignore".into());
    }
    if traced(req) {
        args.push("--trace".into());
    }
    args.push("--".into());
    args.extend(req.argv.iter().cloned());
    args
}

/// How much of a failed refresh's stderr its log event keeps: the end, where the
/// reason usually is.
const REFRESH_STDERR_TAIL: u64 = 2048;

/// Why a background refresh's command failed, with the end of its stderr (escaped, on
/// one line); `None` if it succeeded. Nobody sees a refresh's output (it runs detached,
/// its stdout and stderr on /dev/null), so this is what the log keeps of it.
fn refresh_failure(finished: &Finished) -> Option<String> {
    let how = match finished.outcome {
        Outcome::Exited(0) => return None,
        Outcome::Exited(code) => format!("exit code {code}"),
        Outcome::Signaled(sig) => format!("killed by signal {sig}"),
    };
    // Separate: [stdout, stderr]; merged: [combined], which holds stderr too.
    let (stream, recording) = match &finished.recordings[..] {
        [_, stderr] => ("stderr", stderr),
        [combined] => ("output", combined),
        _ => return Some(format!("background refresh failed: {how}")),
    };
    let tail = recording.as_ref().ok().and_then(|r| {
        let bytes = r.tail(REFRESH_STDERR_TAIL).ok()?;
        let cut = bytes.len() as u64 != r.size;
        let text = String::from_utf8_lossy(&bytes);
        let text = text.trim_end();
        let cut = if cut { "..." } else { "" };
        (!text.is_empty()).then(|| format!("{cut}{}", crate::key::escape_control(text)))
    });
    Some(match tail {
        Some(tail) => format!("background refresh failed: {how}; its {stream}: {tail}"),
        None => format!("background refresh failed: {how}; its {stream} was empty"),
    })
}

/// Logs and counts a background refresh that failed: the stale result stays, and the
/// next call past the stale window runs the command in the foreground.
fn note_failed_refresh(cache: &Cache, key: &Digest, material: &KeyMaterial, why: &str) {
    let mut event = Event::of_command(Kind::Error, key, material);
    event.message = Some(why.to_string());
    cache.record(
        Counters {
            errors: 1,
            ..Default::default()
        },
        event,
    );
}

/// A hit is one record appended to the journal: the summary folds it into the
/// entry's usage and the counters later (`index::summary`).
fn note_hit(cache: &Cache, key: &Digest, entry: &Entry, saved: Duration) {
    let saved_ms = saved.as_millis() as u64;
    let mut event = Event::of_command(Kind::Hit, key, &entry.material);
    event.duration_ms = Some(entry.duration_ms);
    event.saved_ms = Some(saved_ms);
    cache.record(
        Counters {
            hits: 1,
            time_saved_ms: saved_ms as i64,
            ..Default::default()
        },
        event,
    );
}

fn run_key_command(cmd: &OsString) -> Result<KeyCommand, Fatal> {
    let shown = cmd.to_string_lossy();
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(cmd)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| Fatal::failure(format!("memo: cannot run --key-cmd '{shown}': {e}")))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let hashed = Digest::of_reader(stdout);
    let status = child
        .wait()
        .map_err(|e| Fatal::failure(format!("memo: cannot run --key-cmd '{shown}': {e}")))?;
    let (output, _) =
        hashed.map_err(|e| Fatal::failure(format!("memo: cannot read --key-cmd output: {e}")))?;
    if !status.success() {
        return Err(Fatal::failure(format!(
            "memo: --key-cmd '{shown}' failed ({status}); fix it or drop --key-cmd"
        )));
    }
    Ok(KeyCommand {
        command: ByteString::from(cmd.as_os_str()),
        output,
    })
}

/// Spools stdin for `--stdin`. The digest is `None` when the spool could not be
/// written: the file then streams stdin to the command, which runs uncached.
fn spool_stdin(cache: Option<&Cache>, warner: &Warner) -> Result<(File, Option<Digest>), Fatal> {
    let staged = match cache.map(|c| c.store.stage()) {
        Some(Ok(staged)) => Ok(staged),
        Some(Err(e)) => match tempfile::NamedTempFile::new() {
            Ok(staged) => {
                warner.warn(format!("{e}; spooling stdin to the system temp dir"));
                Ok(staged)
            }
            Err(_) => Err(e.to_string()),
        },
        None => tempfile::NamedTempFile::new().map_err(|e| e.to_string()),
    };
    let unkeyed = |why: &dyn std::fmt::Display| {
        warner.warn(format!(
            "cannot spool stdin for --stdin ({why}); running the command without the cache"
        ))
    };
    let staged = match staged {
        Ok(staged) => staged,
        Err(why) => {
            // Nowhere to spool (a full or broken disk): the command reads memo's own
            // stdin, untouched, and the run cannot be keyed.
            unkeyed(&why);
            let stdin = io::stdin()
                .as_fd()
                .try_clone_to_owned()
                .map_err(|e| Fatal::failure(format!("memo: cannot pass stdin on: {e}")))?;
            return Ok((File::from(stdin), None));
        }
    };
    let spooled = capture::spool_stdin(staged)
        .map_err(|e| Fatal::failure(format!("memo: cannot read stdin for --stdin: {e}")))?;
    Ok(match spooled {
        capture::SpooledStdin::Whole { file, digest } => (file, Some(digest)),
        capture::SpooledStdin::Streamed { reader, error } => {
            unkeyed(&error);
            (reader, None)
        }
    })
}

/// Reads and checks the entry stored under `key`. Anything wrong with it is a miss; a
/// damaged entry is counted, logged and removed.
pub fn read_entry(cache: &Cache, key: &Digest, warner: &Warner) -> Option<Entry> {
    let bytes = match cache.store.get_entry(key) {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return None,
        Err(StoreError::DamagedEntry { .. }) => {
            // Removed by the store already (a tombstone): counted and logged here.
            note_corrupt(
                cache,
                key,
                &format!(
                    "cache entry {} is unusable (its record is damaged)",
                    key.short()
                ),
                warner,
            );
            return None;
        }
        Err(e) => {
            warner.warn(format!("{e}; running the command"));
            return None;
        }
    };
    match Entry::decode(&bytes) {
        Ok(entry) => Some(entry),
        Err(e) => {
            note_corrupt(
                cache,
                key,
                &format!("cache entry {} is unusable ({e})", key.short()),
                warner,
            );
            None
        }
    }
}

fn note_corrupt(cache: &Cache, key: &Digest, what: &str, warner: &Warner) {
    warner.warn(format!("{what}; running the command"));
    let _ = cache.store.remove_entry(key);
    let mut event = Event::new(Kind::Corrupt);
    event.key = Some(key.to_hex());
    event.message = Some(what.to_string());
    cache.record(
        Counters {
            corrupt: 1,
            ..Default::default()
        },
        event,
    );
}

/// The stored entry for `key`, if it is intact, is for this very material, and may be
/// replayed under this request.
fn lookup(
    cache: &Cache,
    key: &Digest,
    material: &KeyMaterial,
    req: &RunRequest,
    warner: &Warner,
) -> Option<Entry> {
    let entry = read_entry(cache, key, warner)?;
    if entry.material != *material {
        note_corrupt(
            cache,
            key,
            &format!(
                "cache entry {} was stored for different inputs",
                key.short()
            ),
            warner,
        );
        return None;
    }
    if !exit_replayable(&entry, req) {
        return None;
    }
    Some(entry)
}

/// Replays a hit: checks every blob, restores outputs, then writes stdout and stderr.
/// Nothing reaches the terminal or the file system until every blob has been verified,
/// so a damaged entry is a clean miss, never a partial replay.
/// `Ok(None)` means the entry turned out unusable and the command must run instead.
fn replay(
    cache: &Cache,
    key: &Digest,
    entry: &Entry,
    warner: &Warner,
) -> Result<Option<i32>, Fatal> {
    let store = &cache.store;
    let damaged = |e: &StoreError| {
        // An object removed by a concurrent gc, clear or rm is a plain miss, not damage.
        if !matches!(e, StoreError::MissingObject { .. }) {
            note_corrupt(
                cache,
                key,
                &format!("cache entry {} is damaged ({e})", key.short()),
                warner,
            );
        }
        Ok(None)
    };
    let (first, second) = match &entry.streams {
        Streams::Separate { stdout, stderr } => (stdout, Some(stderr)),
        Streams::Merged { combined } => (combined, None),
    };
    let mut streams = Vec::new();
    for (blob, fd) in [(Some(first), 1), (second, 2)] {
        let Some(blob) = blob else { continue };
        match outputs::open_blob(blob, store) {
            Ok(reader) => streams.push((reader, fd)),
            Err(e) => return damaged(&e),
        }
    }
    for blob in entry.blobs().skip(streams.len()) {
        if let Err(e) = outputs::open_blob(blob, store) {
            return damaged(&e);
        }
    }
    if let Err(e) = outputs::restore_outputs(&entry.outputs, store) {
        warner.warn(format!("{e}; running the command"));
        return Ok(None);
    }
    for (reader, fd) in streams {
        let copied = if capture::streams::is_nonblocking(fd) {
            // A parent left the descriptor non-blocking (node does): write as a blocking
            // one would, waiting whenever it is full.
            let mut reader = reader;
            let mut dest = io::BufWriter::with_capacity(1 << 16, capture::streams::Patient(fd));
            let copied = io::copy(&mut reader, &mut dest).and_then(|_| dest.flush());
            // What could not be written is dropped, not tried again.
            let _ = dest.into_parts();
            copied.map(drop)
        } else {
            // File to file: the kernel's zero-copy paths (sendfile, splice). fd 1 and 2
            // stay open for the life of the process.
            capture::streams::with_fd(fd, |dest| reader.copy_to(dest).map(drop))
        };
        if let Err(e) = copied {
            if e.kind() == io::ErrorKind::BrokenPipe {
                // What the command itself would have met: death by SIGPIPE.
                return Ok(Some(128 + libc::SIGPIPE));
            }
            // A full disk or an I/O error on one destination: as on a miss, the other
            // stream is still replayed and the command's exit code passed through.
            warner.warn(format!(
                "cannot write the replayed {} ({e})",
                if fd == 1 { "stdout" } else { "stderr" }
            ));
        }
    }
    Ok(Some(entry.exit_code))
}

struct NotStored {
    reason: String,
    /// Whether the user should be told without `--verbose`.
    warn: bool,
}

fn decide_storable(
    finished: &Finished,
    cache_failures: bool,
    gathered: &Gathered,
) -> Result<(), NotStored> {
    let quiet = |reason: String| {
        Err(NotStored {
            reason,
            warn: false,
        })
    };
    match finished.outcome {
        Outcome::Signaled(sig) => return quiet(format!("killed by signal {sig}")),
        Outcome::Exited(code) if code != 0 && !cache_failures => {
            return quiet(format!("exit code {code}"))
        }
        Outcome::Exited(_) => {}
    }
    if let Some(sig) = finished.interrupted {
        return quiet(format!("interrupted by signal {sig}"));
    }
    if finished.destination_closed {
        return quiet("output could not be written".into());
    }
    if finished.output_held_open {
        return Err(NotStored {
            reason: "a process the command left running still holds its output".into(),
            warn: true,
        });
    }
    for recording in &finished.recordings {
        if let Err(e) = recording {
            return Err(NotStored {
                reason: format!("cannot record the output ({e})"),
                warn: true,
            });
        }
    }
    crate::guard::check(gathered).map_err(|change| NotStored {
        reason: change.to_string(),
        warn: true,
    })
}

/// Stores a run: an ordinary one under `key`; a traced one under the key of its
/// observations, named first in the manifest `key`. Returns the key stored under and
/// the entry's digest.
fn save_keyed(
    cache: &Cache,
    key: Digest,
    material: KeyMaterial,
    finished: Finished,
    observed: Option<Observed>,
    settings: &crate::config::Settings,
) -> Result<(Digest, Digest), RecordError> {
    let max_size = settings.max_size.value;
    let Some(observed) = observed else {
        return save(cache, key, material, finished, None, max_size).map(|e| (key, e));
    };
    let material = traced_material(&material, &observed);
    let run = key::compute_key(&material);
    let entry = save(cache, run, material, finished, Some(observed), max_size)?;
    crate::traced::Manifest::add(cache.root(), &key, run).map_err(|e| {
        let path = crate::traced::Manifest::path(cache.root(), &key);
        StoreError::io("cannot write the manifest", path, e)
    })?;
    Ok((run, entry))
}

/// The material of a traced run: its call's, with the files it wrote as outputs and its
/// observations' digest.
fn traced_material(base: &KeyMaterial, observed: &Observed) -> KeyMaterial {
    let mut material = base.clone();
    material.outputs.extend(observed.written.iter().cloned());
    material.traced = Some(observed.digest());
    material.normalize();
    material
}

/// What a traced call's manifest says now.
pub enum Found {
    /// This recorded run's observations all hold.
    Holds(Digest, Box<Entry>),
    /// None holds; the newest recorded run fails on this.
    Mismatch(Digest, crate::traced::Mismatch),
    /// No run is recorded (or none is readable).
    Nothing,
}

/// Finds the first recorded run of the traced call `key` whose observations all hold.
pub fn find_traced(cache: &Cache, key: &Digest, base: &KeyMaterial, warner: &Warner) -> Found {
    let digests = cache.store.digest_cache();
    let mut first_mismatch = None;
    let manifest = crate::traced::Manifest::read_checked(cache.root(), key).unwrap_or_else(|why| {
        warner.warn(format!(
            "the list of this traced call's runs: {why}; it is written anew by the next run"
        ));
        crate::traced::Manifest { runs: Vec::new() }
    });
    for run in manifest.runs {
        let Some(entry) = read_entry(cache, &run, warner) else {
            continue;
        };
        let Some(observed) = &entry.observed else {
            continue;
        };
        let expected = traced_material(base, observed);
        if entry.material != expected || key::compute_key(&expected) != run {
            continue;
        }
        match observed.check(digests) {
            Ok(()) => return Found::Holds(run, Box::new(entry)),
            Err(why) => {
                first_mismatch.get_or_insert((run, why));
            }
        }
    }
    match first_mismatch {
        Some((run, why)) => Found::Mismatch(run, why),
        None => Found::Nothing,
    }
}

/// Brings the first run of the traced call `key` that the shared tier records, that this
/// machine lacks and whose observations hold here; names it in the local manifest and
/// replays it. `Ok(None)`: none did (or a refresh brought one: it replays nothing).
fn bring_traced(
    tiers: &Tiers,
    cache: &Cache,
    key: &Digest,
    base: &KeyMaterial,
    req: &RunRequest,
    warner: &Warner,
) -> Result<Option<i32>, Fatal> {
    let local = crate::traced::Manifest::read(cache.root(), key).runs;
    let digests = cache.store.digest_cache();
    let accept = |entry: &Entry| {
        let Some(observed) = &entry.observed else {
            return false;
        };
        let usable = match freshness(entry, req) {
            Freshness::Fresh => true,
            Freshness::Stale(_) => !req.refresh,
            Freshness::Expired(_) => false,
        };
        usable
            && entry.material == traced_material(base, observed)
            && exit_replayable(entry, req)
            && observed.check(digests).is_ok()
    };
    for run in tiers.runs_of(key) {
        if local.contains(&run) || !tiers.bring(&run, &accept) {
            continue;
        }
        if let Err(e) = crate::traced::Manifest::add(cache.root(), key, run) {
            warner.warn(format!("cannot write the manifest of a traced call ({e})"));
        }
        if req.refresh {
            return Ok(Some(0));
        }
        return try_traced_hit(cache, key, base, req, warner);
    }
    Ok(None)
}

/// `try_hit` for a traced call: the first recorded run that holds is replayed.
fn try_traced_hit(
    cache: &Cache,
    key: &Digest,
    base: &KeyMaterial,
    req: &RunRequest,
    warner: &Warner,
) -> Result<Option<i32>, Fatal> {
    let started = Instant::now();
    match find_traced(cache, key, base, warner) {
        // Read and checked against its key by `find_traced`: not read again.
        Found::Holds(run, entry) if exit_replayable(&entry, req) => {
            replay_entry(cache, &run, *entry, started, req, warner)
        }
        _ => Ok(None),
    }
}

/// What a traced run observed, or why it cannot be trusted (said on stderr: the user
/// asked for --trace and gets no cache).
fn observe_traced(
    cache: &Cache,
    base: &KeyMaterial,
    finished: &Finished,
) -> Result<Observed, NotStored> {
    let untrusted = |why: crate::trace::Untrusted| {
        let why = key::escape_control(&why.to_string());
        crate::console::note(format_args!("memo: not cached (--trace): {why}"));
        NotStored {
            reason: format!("--trace: {why}"),
            warn: false,
        }
    };
    let trace = finished
        .trace
        .as_ref()
        .expect("a traced run returns its trace");
    if let Some(why) = &trace.untrusted {
        return Err(untrusted(why.clone()));
    }
    // The cache by the absolute path of its directory, however it was named.
    let root = std::path::absolute(cache.root()).unwrap_or_else(|_| cache.root().to_path_buf());
    let root = std::fs::canonicalize(&root).unwrap_or(root);
    let excluded = |p: &Path| {
        // Judged on the path with `..` resolved: `/proc/../etc/x` is /etc/x.
        let p = &crate::trace::observe::without_dot_dot(p);
        p.starts_with("/proc")
            || p.starts_with("/sys")
            || (p.starts_with("/dev") && !p.starts_with("/dev/shm"))
            || p.starts_with(&root)
            || p.starts_with(cache.root())
    };
    let folded = crate::trace::observe::fold(&trace.events, &excluded).map_err(untrusted)?;
    let cwd = base.cwd.as_ref().map(ByteString::to_path_buf);
    let outputs = folded
        .written
        .iter()
        .filter(|p| {
            fs::symlink_metadata(p).is_ok_and(|m| {
                // A directory the run made and left empty (`mkdir -p logs`) is one too.
                let empty_dir =
                    || m.is_dir() && fs::read_dir(p).is_ok_and(|mut d| d.next().is_none());
                m.is_file() || m.file_type().is_symlink() || empty_dir()
            })
        })
        .map(
            |p| match cwd.as_deref().and_then(|c| p.strip_prefix(c).ok()) {
                Some(rest) if !rest.as_os_str().is_empty() => ByteString::from(rest),
                _ => ByteString::from(p.as_path()),
            },
        )
        .collect();
    Observed::record(
        &folded,
        &trace.named_relative,
        outputs,
        cache.store.digest_cache(),
    )
    .map_err(untrusted)
}

fn save(
    cache: &Cache,
    key: Digest,
    material: KeyMaterial,
    finished: Finished,
    observed: Option<Observed>,
    max_size: u64,
) -> Result<Digest, RecordError> {
    let store = Counting {
        inner: &cache.store,
        added: Default::default(),
    };
    // In the material's (sorted) order, which is the order decode checks them in.
    let declared: Vec<PathBuf> = material
        .outputs
        .iter()
        .map(ByteString::to_path_buf)
        .collect();
    let outputs = outputs::record_outputs(&declared, &store)?;
    let mut blobs = Vec::new();
    for recording in finished.recordings {
        let recording = recording.expect("decide_storable checked the recordings");
        blobs.push(store_recording(recording, &store)?);
    }
    let streams = match material.streams {
        StreamMode::Merged | StreamMode::Terminal { .. } => Streams::Merged {
            combined: blobs.remove(0),
        },
        StreamMode::Separate => Streams::Separate {
            stdout: blobs.remove(0),
            stderr: blobs.remove(0),
        },
    };
    let entry = Entry {
        observed,
        material,
        created_unix_ms: now_ms(),
        duration_ms: finished.duration.as_millis() as u64,
        exit_code: finished.outcome.exit_code(),
        streams,
        outputs,
    };
    // An entry too big to read back would be reported corrupt by every later call.
    let limit = crate::store::local::MAX_ENTRY_BYTES;
    let encoded = entry
        .encode_within(limit)
        .map_err(|size| RecordError::TooLarge { size, limit })?;
    let added = store.added.get();
    tiers::install(cache, &key, &entry, &encoded, added, true)?;
    crate::gc::trim_in_background_if_needed(cache, max_size, &key, added + encoded.len() as u64);
    Ok(Digest::of_bytes(&encoded))
}

/// A recorded stream as an entry's blob: inline if small, else an object.
fn store_recording(recording: Recording, store: &dyn Store) -> Result<Blob, RecordError> {
    let Recording { kept, digest, size } = recording;
    let staged = match kept {
        Kept::Memory(bytes) if size <= INLINE_MAX => {
            return Ok(Blob {
                digest,
                size,
                inline: Some(ByteString(bytes)),
            })
        }
        Kept::Memory(bytes) => {
            let mut staged = store.stage()?;
            staged
                .write_all(&bytes)
                .map_err(|e| StoreError::io("cannot write", staged.path(), e))?;
            staged
        }
        Kept::Staged(file) if size <= INLINE_MAX => {
            let path = file.path().to_path_buf();
            let reopened = file.reopen().map_err(|e| RecordError::Read {
                path: path.clone(),
                source: e,
            })?;
            return outputs::store_blob(reopened, &path, size, store);
        }
        Kept::Staged(file) => file,
    };
    store.put_object(&digest, staged)?;
    Ok(Blob {
        digest,
        size,
        inline: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_result_from_the_future_is_expired_under_a_ttl() {
        let h = 3_600_000;
        let ttl = Some(Duration::from_secs(3600));
        assert_eq!(
            Freshness::at(10 * h, 9 * h, ttl, None),
            Freshness::Expired(Duration::from_secs(3600))
        );
        assert_eq!(Freshness::at(10 * h, 9 * h, None, None), Freshness::Fresh);
        assert_eq!(Freshness::at(9 * h, 9 * h + 1, ttl, None), Freshness::Fresh);
    }

    #[test]
    fn freshness_follows_ttl_then_the_stale_window() {
        let s = Duration::from_secs;
        assert_eq!(Freshness::of(s(100), None, None), Freshness::Fresh);
        assert_eq!(Freshness::of(s(100), None, Some(s(5))), Freshness::Fresh);
        assert_eq!(Freshness::of(s(10), Some(s(10)), None), Freshness::Fresh);
        assert_eq!(
            Freshness::of(s(11), Some(s(10)), None),
            Freshness::Expired(s(1))
        );
        assert_eq!(
            Freshness::of(s(15), Some(s(10)), Some(s(5))),
            Freshness::Stale(s(5))
        );
        assert_eq!(
            Freshness::of(s(16), Some(s(10)), Some(s(5))),
            Freshness::Expired(s(6))
        );
    }
}

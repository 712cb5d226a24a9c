//! `memo remote check|push|upload`: the shared cache's own subcommands. Thin: the work
//! is `remote`'s; this module prints it and picks the exit code.

use crate::cache::{self, Cache};
use crate::config::Settings;
use crate::exit::Fatal;
use crate::remote::{Remote, Tally, Uploader};

fn configured(settings: &Settings) -> Result<(), Fatal> {
    if settings.remote.url.value.is_none() {
        return Err(Fatal::failure(
            "memo: no shared cache is configured; give --remote URL, set MEMO_REMOTE, or remote = \"...\" in the config file",
        ));
    }
    Ok(())
}

fn open_remote(settings: &Settings) -> Result<Remote, Fatal> {
    configured(settings)?;
    Remote::open(&settings.remote, &settings.cache_dir.value)
        .map_err(|e| Fatal::failure(format!("memo: {e}")))?
        .ok_or_else(|| Fatal::failure("memo: no shared cache is configured"))
}

fn open_cache(settings: &Settings) -> Result<Cache, Fatal> {
    cache::open_or_say(&settings.cache_dir.value)
        .map_err(|why| Fatal::failure(format!("memo: {why}")))
}

/// Exit 0 when every step worked, 1 when the server failed one.
pub fn check(settings: &Settings) -> anyhow::Result<i32> {
    let remote = open_remote(settings)?;
    let mode = if remote.writes() {
        "read-write"
    } else {
        "read-only: reads only"
    };
    crate::outln!(
        "remote    {} ({mode}; namespace '{}')",
        remote.shown(),
        remote.namespace()
    );
    let mut failed = 0;
    let report = remote.check();
    for step in report.steps {
        match step.result {
            Ok(took) => {
                let note = step.note.map(|n| format!("  ({n})")).unwrap_or_default();
                crate::outln!(
                    "{:<9} ok      {:>8.1} ms{note}",
                    step.name,
                    took.as_secs_f64() * 1000.0
                );
            }
            Err(why) => {
                failed += 1;
                crate::outln!("{:<9} FAILED  {why}", step.name);
            }
        }
    }
    if failed > 0 {
        let hint = report.hint.map(|h| format!("; {h}")).unwrap_or_default();
        crate::console::note(format_args!(
            "memo: the shared cache at {} failed {failed} of its checks{hint}",
            remote.shown()
        ));
        return Ok(1);
    }
    crate::outln!("the shared cache works");
    Ok(0)
}

/// Uploads every pending result and waits. Exit 0 when none is left, 1 otherwise.
pub fn push(settings: &Settings) -> anyhow::Result<i32> {
    let remote = open_remote(settings)?;
    if !remote.writes() {
        return Err(Fatal::failure(format!(
            "memo: the shared cache is read-only here ({}); set MEMO_REMOTE_MODE=read-write to upload",
            settings.remote.mode.source
        ))
        .into());
    }
    let cache = open_cache(settings)?;
    let mut tally = Tally::default();
    let report = remote
        .upload_pending(&cache.store, &cache.locks_dir(), Uploader::Push, &mut tally)
        .map_err(|e| Fatal::failure(format!("memo: cannot take the upload lock: {e}")))?;
    cache.record_tally(tally);
    let manifests = match report.manifests {
        0 => String::new(),
        1 => " and 1 manifest of a traced call".into(),
        n => format!(" and {n} manifests of traced calls"),
    };
    crate::outln!(
        "uploaded {} result{}{manifests} to {}",
        report.uploaded,
        if report.uploaded == 1 { "" } else { "s" },
        remote.shown()
    );
    if report.refused > 0 {
        crate::console::note(format_args!(
            "memo: the server refused {} result{} (see the warning); they are not tried again",
            report.refused,
            if report.refused == 1 { "" } else { "s" }
        ));
    }
    if report.left > 0 {
        crate::console::note(format_args!(
            "memo: {} result{} not uploaded: the server failed; run `memo remote push` again later",
            report.left,
            if report.left == 1 { " was" } else { "s were" }
        ));
        return Ok(1);
    }
    Ok(if report.refused > 0 { 1 } else { 0 })
}

/// The detached uploader: quiet, and never an error (its output goes nowhere).
pub fn upload(settings: &Settings) -> anyhow::Result<i32> {
    let Ok(Some(remote)) = Remote::open(&settings.remote, &settings.cache_dir.value) else {
        return Ok(0);
    };
    if !remote.writes() {
        return Ok(0);
    }
    let Ok(cache) = cache::try_open(&settings.cache_dir.value) else {
        return Ok(0);
    };
    // Background work: it yields the CPU to the commands in the foreground.
    // SAFETY: setpriority only changes this process's scheduling priority.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 10) };
    let mut tally = Tally::default();
    let _ = remote.upload_pending(
        &cache.store,
        &cache.locks_dir(),
        Uploader::Detached,
        &mut tally,
    );
    cache.record_tally(tally);
    Ok(0)
}

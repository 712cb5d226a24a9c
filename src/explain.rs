//! `memo explain`: says whether `memo run` would hit, and on a miss exactly what differs
//! from the closest stored entry for the same command (argv and cwd). Runs nothing.
//!
//! The comparison itself is `changes`'.

use std::time::Duration;

use crate::cache::Warner;
use crate::changes;
use crate::config::format_duration;
use crate::exit::Fatal;
use crate::key;
use crate::run::{self, Freshness, RunRequest};

/// Runs `memo explain`; exits 0 for a hit, 1 for a miss.
pub fn explain(req: RunRequest) -> Result<i32, Fatal> {
    let warner = Warner::default();
    // A named cache that does not exist is an error (from `prepare`); none at the
    // default place, a miss.
    let prepared = run::prepare(&req, &warner, true)?;
    let key = prepared.key;
    let command = key::escape_control(&key::command_line(&prepared.material));
    let Some(cache) = &prepared.cache else {
        crate::outln!(
            "miss {}: nothing is cached at {} yet",
            key.short(),
            req.settings.cache_dir.value.display()
        );
        return Ok(1);
    };
    cache.count_digest_growth();
    let found = if run::traced(&req) {
        match run::find_traced(cache, &key, &prepared.material, &warner) {
            run::Found::Holds(run, entry) => Some((run, *entry)),
            run::Found::Mismatch(run, why) => {
                crate::outln!(
                    "miss {}: the run recorded as {} no longer holds: {why}",
                    key.short(),
                    run.short()
                );
                return Ok(1);
            }
            run::Found::Nothing => {
                crate::outln!("miss {}: `{command}` was never traced here", key.short());
                return Ok(1);
            }
        }
    } else {
        run::read_entry(cache, &key, &warner)
            .filter(|e| e.material == prepared.material)
            .map(|e| (key, e))
    };
    if let Some((key, entry)) = found {
        let ran = format_duration(Duration::from_millis(entry.duration_ms));
        match run::freshness(&entry, &req) {
            Freshness::Fresh => {}
            Freshness::Stale(late) => {
                crate::outln!(
                    "hit {} (stale): expired {} ago; replayed while it refreshes in the background",
                    key.short(),
                    format_duration(late)
                );
                return Ok(0);
            }
            Freshness::Expired(late) => {
                crate::outln!(
                    "miss {}: the stored result expired {} ago (--ttl {})",
                    key.short(),
                    format_duration(late),
                    format_duration(req.settings.ttl.value.unwrap_or_default())
                );
                return Ok(1);
            }
        }
        if !run::exit_replayable(&entry, &req) {
            crate::outln!(
                "miss {}: the stored run exited {}, which is replayed only with --cache-failures",
                key.short(),
                entry.exit_code
            );
            return Ok(1);
        }
        crate::outln!(
            "hit {}: stored {} ago, ran {ran}, exit code {}",
            key.short(),
            format_duration(run::age_of(&entry)),
            entry.exit_code
        );
        return Ok(0);
    }
    let Some((closest_key, closest, diffs)) = changes::closest_entry(cache, &prepared.material)
    else {
        crate::outln!("miss {}: `{command}` was never stored here", key.short());
        return Ok(1);
    };
    let age = format_duration(run::age_of(&closest));
    crate::outln!(
        "miss {}: differs from entry {} (stored {age} ago) in:",
        key.short(),
        closest_key.short()
    );
    for diff in diffs {
        crate::outln!("  {diff}");
    }
    Ok(1)
}

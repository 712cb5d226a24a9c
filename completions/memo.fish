# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_memo_global_optspecs
    string join \n cache-dir= remote= h/help V/version
end

function __fish_memo_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_memo_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_memo_using_subcommand
    set -l cmd (__fish_memo_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c memo -n "__fish_memo_needs_command" -l cache-dir -d 'Cache directory [default: $MEMO_DIR, else $XDG_CACHE_HOME/memo, else ~/.cache/memo]' -r -F
complete -c memo -n "__fish_memo_needs_command" -l remote -d 'Shared cache behind the local one: http(s)://HOST/PATH (Bazel remote-cache layout) or s3://BUCKET/PREFIX; \'off\' for none [env: MEMO_REMOTE]' -r
complete -c memo -n "__fish_memo_needs_command" -s h -l help -d 'Print help'
complete -c memo -n "__fish_memo_needs_command" -s V -l version -d 'Print version'
complete -c memo -n "__fish_memo_needs_command" -f -a "run" -d 'Run a command, or replay its recorded result'
complete -c memo -n "__fish_memo_needs_command" -f -a "explain" -d 'Say whether `memo run` would hit, and on a miss what changed; runs nothing'
complete -c memo -n "__fish_memo_needs_command" -f -a "stats" -d 'Show hits, misses, size and time saved'
complete -c memo -n "__fish_memo_needs_command" -f -a "gc" -d 'Trim the cache: evict by cost-aware priority or age, drop unreferenced objects'
complete -c memo -n "__fish_memo_needs_command" -f -a "clear" -d 'Remove every cached result'
complete -c memo -n "__fish_memo_needs_command" -f -a "ls" -d 'List cached results'
complete -c memo -n "__fish_memo_needs_command" -f -a "rm" -d 'Remove cached results by key prefix or by a pattern on the command'
complete -c memo -n "__fish_memo_needs_command" -f -a "log" -d 'Show the latest cache events (hits, misses, stores, evictions, errors)'
complete -c memo -n "__fish_memo_needs_command" -f -a "config" -d 'Print the effective settings and where each comes from'
complete -c memo -n "__fish_memo_needs_command" -f -a "show" -d 'Show one cached result: its command, inputs, outputs and streams'
complete -c memo -n "__fish_memo_needs_command" -f -a "remote" -d 'Work with the shared cache: check that it answers, upload what is pending'
complete -c memo -n "__fish_memo_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c memo -n "__fish_memo_using_subcommand run" -s i -l input -d 'A file, directory or glob whose contents the result depends on; before \'--\', several paths (-i a.c b.h); repeatable' -r
complete -c memo -n "__fish_memo_using_subcommand run" -s o -l output -d 'A file or directory the command writes, restored on a hit; before \'--\', several paths; repeatable' -r -F
complete -c memo -n "__fish_memo_using_subcommand run" -s e -l env -d 'An environment variable the result depends on; globs allowed, e.g. \'AWS_*\' (repeatable)' -r
complete -c memo -n "__fish_memo_using_subcommand run" -l exclude -d 'Leave matching paths under input directories out of the key, gitignore-style, e.g. \'__pycache__\' or \'*.log\' (repeatable)' -r
complete -c memo -n "__fish_memo_using_subcommand run" -l salt -d 'Extra text to mix into the key, e.g. a version you bump by hand' -r
complete -c memo -n "__fish_memo_using_subcommand run" -l key-cmd -d 'A shell command whose stdout joins the key, e.g. \'git rev-parse HEAD\'' -r
complete -c memo -n "__fish_memo_using_subcommand run" -l ttl -d 'Treat results older than this as misses, e.g. 10m, 12h, 7d [env: MEMO_TTL]' -r
complete -c memo -n "__fish_memo_using_subcommand run" -l stale -d 'After --ttl expires, keep replaying the old result this much longer while it is refreshed in the background; with --output, no background refresh runs (it would rewrite the outputs being read): the result is rerun once the window ends [env: MEMO_STALE]' -r
complete -c memo -n "__fish_memo_using_subcommand run" -l cache-dir -d 'Cache directory [default: $MEMO_DIR, else $XDG_CACHE_HOME/memo, else ~/.cache/memo]' -r -F
complete -c memo -n "__fish_memo_using_subcommand run" -l remote -d 'Shared cache behind the local one: http(s)://HOST/PATH (Bazel remote-cache layout) or s3://BUCKET/PREFIX; \'off\' for none [env: MEMO_REMOTE]' -r
complete -c memo -n "__fish_memo_using_subcommand run" -l ignore-cwd -d 'Leave the working directory out of the key, to share results between checkouts'
complete -c memo -n "__fish_memo_using_subcommand run" -l gitignore -d 'Honour .gitignore and .ignore files under input directories'
complete -c memo -n "__fish_memo_using_subcommand run" -l stdin -d 'Read standard input, key on it and feed it to the command (default: /dev/null)'
complete -c memo -n "__fish_memo_using_subcommand run" -l cache-failures -d 'Also store and replay non-zero exit codes [env: MEMO_CACHE_FAILURES]'
complete -c memo -n "__fish_memo_using_subcommand run" -l force -d 'Run the command even on a hit, and replace the stored result'
complete -c memo -n "__fish_memo_using_subcommand run" -l tty -d 'When stdout and stderr are a terminal, run the command on a pseudo-terminal (colours, line buffering) and replay its recording only to a terminal [env: MEMO_TTY]'
complete -c memo -n "__fish_memo_using_subcommand run" -l trace -d 'Discover the files the command reads by tracing it (Linux): later calls are keyed on exactly those, and the files it writes are restored on a hit [env: MEMO_TRACE]'
complete -c memo -n "__fish_memo_using_subcommand run" -s v -l verbose -d 'Print one line to stderr per call: hit or miss, short key, time saved [env: MEMO_VERBOSE]'
complete -c memo -n "__fish_memo_using_subcommand run" -s h -l help -d 'Print help'
complete -c memo -n "__fish_memo_using_subcommand explain" -s i -l input -d 'A file, directory or glob whose contents the result depends on; before \'--\', several paths (-i a.c b.h); repeatable' -r
complete -c memo -n "__fish_memo_using_subcommand explain" -s o -l output -d 'A file or directory the command writes, restored on a hit; before \'--\', several paths; repeatable' -r -F
complete -c memo -n "__fish_memo_using_subcommand explain" -s e -l env -d 'An environment variable the result depends on; globs allowed, e.g. \'AWS_*\' (repeatable)' -r
complete -c memo -n "__fish_memo_using_subcommand explain" -l exclude -d 'Leave matching paths under input directories out of the key, gitignore-style, e.g. \'__pycache__\' or \'*.log\' (repeatable)' -r
complete -c memo -n "__fish_memo_using_subcommand explain" -l salt -d 'Extra text to mix into the key, e.g. a version you bump by hand' -r
complete -c memo -n "__fish_memo_using_subcommand explain" -l key-cmd -d 'A shell command whose stdout joins the key, e.g. \'git rev-parse HEAD\'' -r
complete -c memo -n "__fish_memo_using_subcommand explain" -l ttl -d 'Treat results older than this as misses, e.g. 10m, 12h, 7d [env: MEMO_TTL]' -r
complete -c memo -n "__fish_memo_using_subcommand explain" -l stale -d 'After --ttl expires, keep replaying the old result this much longer while it is refreshed in the background; with --output, no background refresh runs (it would rewrite the outputs being read): the result is rerun once the window ends [env: MEMO_STALE]' -r
complete -c memo -n "__fish_memo_using_subcommand explain" -l cache-dir -d 'Cache directory [default: $MEMO_DIR, else $XDG_CACHE_HOME/memo, else ~/.cache/memo]' -r -F
complete -c memo -n "__fish_memo_using_subcommand explain" -l remote -d 'Shared cache behind the local one: http(s)://HOST/PATH (Bazel remote-cache layout) or s3://BUCKET/PREFIX; \'off\' for none [env: MEMO_REMOTE]' -r
complete -c memo -n "__fish_memo_using_subcommand explain" -l ignore-cwd -d 'Leave the working directory out of the key, to share results between checkouts'
complete -c memo -n "__fish_memo_using_subcommand explain" -l gitignore -d 'Honour .gitignore and .ignore files under input directories'
complete -c memo -n "__fish_memo_using_subcommand explain" -l stdin -d 'Read standard input, key on it and feed it to the command (default: /dev/null)'
complete -c memo -n "__fish_memo_using_subcommand explain" -l cache-failures -d 'Also store and replay non-zero exit codes [env: MEMO_CACHE_FAILURES]'
complete -c memo -n "__fish_memo_using_subcommand explain" -l force -d 'Run the command even on a hit, and replace the stored result'
complete -c memo -n "__fish_memo_using_subcommand explain" -l tty -d 'When stdout and stderr are a terminal, run the command on a pseudo-terminal (colours, line buffering) and replay its recording only to a terminal [env: MEMO_TTY]'
complete -c memo -n "__fish_memo_using_subcommand explain" -l trace -d 'Discover the files the command reads by tracing it (Linux): later calls are keyed on exactly those, and the files it writes are restored on a hit [env: MEMO_TRACE]'
complete -c memo -n "__fish_memo_using_subcommand explain" -s v -l verbose -d 'Print one line to stderr per call: hit or miss, short key, time saved [env: MEMO_VERBOSE]'
complete -c memo -n "__fish_memo_using_subcommand explain" -s h -l help -d 'Print help'
complete -c memo -n "__fish_memo_using_subcommand stats" -l cache-dir -d 'Cache directory [default: $MEMO_DIR, else $XDG_CACHE_HOME/memo, else ~/.cache/memo]' -r -F
complete -c memo -n "__fish_memo_using_subcommand stats" -l remote -d 'Shared cache behind the local one: http(s)://HOST/PATH (Bazel remote-cache layout) or s3://BUCKET/PREFIX; \'off\' for none [env: MEMO_REMOTE]' -r
complete -c memo -n "__fish_memo_using_subcommand stats" -l json -d 'Print one JSON object'
complete -c memo -n "__fish_memo_using_subcommand stats" -l zero -d 'Reset the counters (hits, misses, time saved...), keeping the cached results'
complete -c memo -n "__fish_memo_using_subcommand stats" -s h -l help -d 'Print help'
complete -c memo -n "__fish_memo_using_subcommand gc" -l max-size -d 'Evict until the cache is at most this big, e.g. 500M, 2GiB [env: MEMO_MAX_SIZE]' -r
complete -c memo -n "__fish_memo_using_subcommand gc" -l max-age -d 'Evict results not used for this long, e.g. 7d' -r
complete -c memo -n "__fish_memo_using_subcommand gc" -l grace -d 'Keep unreferenced objects and staging files younger than this: their entry may be being written' -r
complete -c memo -n "__fish_memo_using_subcommand gc" -l cache-dir -d 'Cache directory [default: $MEMO_DIR, else $XDG_CACHE_HOME/memo, else ~/.cache/memo]' -r -F
complete -c memo -n "__fish_memo_using_subcommand gc" -l remote -d 'Shared cache behind the local one: http(s)://HOST/PATH (Bazel remote-cache layout) or s3://BUCKET/PREFIX; \'off\' for none [env: MEMO_REMOTE]' -r
complete -c memo -n "__fish_memo_using_subcommand gc" -l dry-run -d 'Print what would be removed and how much it frees; change nothing'
complete -c memo -n "__fish_memo_using_subcommand gc" -l verify -d 'Also re-hash every stored object in full (slow) and drop damaged ones, with the results that use them'
complete -c memo -n "__fish_memo_using_subcommand gc" -s h -l help -d 'Print help'
complete -c memo -n "__fish_memo_using_subcommand clear" -l cache-dir -d 'Cache directory [default: $MEMO_DIR, else $XDG_CACHE_HOME/memo, else ~/.cache/memo]' -r -F
complete -c memo -n "__fish_memo_using_subcommand clear" -l remote -d 'Shared cache behind the local one: http(s)://HOST/PATH (Bazel remote-cache layout) or s3://BUCKET/PREFIX; \'off\' for none [env: MEMO_REMOTE]' -r
complete -c memo -n "__fish_memo_using_subcommand clear" -s h -l help -d 'Print help'
complete -c memo -n "__fish_memo_using_subcommand ls" -l cache-dir -d 'Cache directory [default: $MEMO_DIR, else $XDG_CACHE_HOME/memo, else ~/.cache/memo]' -r -F
complete -c memo -n "__fish_memo_using_subcommand ls" -l remote -d 'Shared cache behind the local one: http(s)://HOST/PATH (Bazel remote-cache layout) or s3://BUCKET/PREFIX; \'off\' for none [env: MEMO_REMOTE]' -r
complete -c memo -n "__fish_memo_using_subcommand ls" -l json -d 'Print a JSON array'
complete -c memo -n "__fish_memo_using_subcommand ls" -s h -l help -d 'Print help'
complete -c memo -n "__fish_memo_using_subcommand rm" -l command -d 'Remove every result whose command line matches this glob, e.g. \'make *\'' -r
complete -c memo -n "__fish_memo_using_subcommand rm" -l cache-dir -d 'Cache directory [default: $MEMO_DIR, else $XDG_CACHE_HOME/memo, else ~/.cache/memo]' -r -F
complete -c memo -n "__fish_memo_using_subcommand rm" -l remote -d 'Shared cache behind the local one: http(s)://HOST/PATH (Bazel remote-cache layout) or s3://BUCKET/PREFIX; \'off\' for none [env: MEMO_REMOTE]' -r
complete -c memo -n "__fish_memo_using_subcommand rm" -s h -l help -d 'Print help'
complete -c memo -n "__fish_memo_using_subcommand log" -s n -l count -d 'How many events to show' -r
complete -c memo -n "__fish_memo_using_subcommand log" -l cache-dir -d 'Cache directory [default: $MEMO_DIR, else $XDG_CACHE_HOME/memo, else ~/.cache/memo]' -r -F
complete -c memo -n "__fish_memo_using_subcommand log" -l remote -d 'Shared cache behind the local one: http(s)://HOST/PATH (Bazel remote-cache layout) or s3://BUCKET/PREFIX; \'off\' for none [env: MEMO_REMOTE]' -r
complete -c memo -n "__fish_memo_using_subcommand log" -l json -d 'Print the events as JSON lines'
complete -c memo -n "__fish_memo_using_subcommand log" -s h -l help -d 'Print help'
complete -c memo -n "__fish_memo_using_subcommand config" -l cache-dir -d 'Cache directory [default: $MEMO_DIR, else $XDG_CACHE_HOME/memo, else ~/.cache/memo]' -r -F
complete -c memo -n "__fish_memo_using_subcommand config" -l remote -d 'Shared cache behind the local one: http(s)://HOST/PATH (Bazel remote-cache layout) or s3://BUCKET/PREFIX; \'off\' for none [env: MEMO_REMOTE]' -r
complete -c memo -n "__fish_memo_using_subcommand config" -s h -l help -d 'Print help'
complete -c memo -n "__fish_memo_using_subcommand show" -l cache-dir -d 'Cache directory [default: $MEMO_DIR, else $XDG_CACHE_HOME/memo, else ~/.cache/memo]' -r -F
complete -c memo -n "__fish_memo_using_subcommand show" -l remote -d 'Shared cache behind the local one: http(s)://HOST/PATH (Bazel remote-cache layout) or s3://BUCKET/PREFIX; \'off\' for none [env: MEMO_REMOTE]' -r
complete -c memo -n "__fish_memo_using_subcommand show" -l json -d 'Print one JSON object'
complete -c memo -n "__fish_memo_using_subcommand show" -l stdout -d 'Print the recorded stdout (for a merged recording: the one stream)'
complete -c memo -n "__fish_memo_using_subcommand show" -l stderr -d 'Print the recorded stderr (nothing for a merged recording)'
complete -c memo -n "__fish_memo_using_subcommand show" -s h -l help -d 'Print help'
complete -c memo -n "__fish_memo_using_subcommand remote; and not __fish_seen_subcommand_from check push help" -l cache-dir -d 'Cache directory [default: $MEMO_DIR, else $XDG_CACHE_HOME/memo, else ~/.cache/memo]' -r -F
complete -c memo -n "__fish_memo_using_subcommand remote; and not __fish_seen_subcommand_from check push help" -l remote -d 'Shared cache behind the local one: http(s)://HOST/PATH (Bazel remote-cache layout) or s3://BUCKET/PREFIX; \'off\' for none [env: MEMO_REMOTE]' -r
complete -c memo -n "__fish_memo_using_subcommand remote; and not __fish_seen_subcommand_from check push help" -s h -l help -d 'Print help'
complete -c memo -n "__fish_memo_using_subcommand remote; and not __fish_seen_subcommand_from check push help" -f -a "check" -d 'Write, read and delete a probe object; report each step\'s latency and what failed'
complete -c memo -n "__fish_memo_using_subcommand remote; and not __fish_seen_subcommand_from check push help" -f -a "push" -d 'Upload every result stored here and not yet sent, and wait for it (for the end of a CI job)'
complete -c memo -n "__fish_memo_using_subcommand remote; and not __fish_seen_subcommand_from check push help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c memo -n "__fish_memo_using_subcommand remote; and __fish_seen_subcommand_from check" -l cache-dir -d 'Cache directory [default: $MEMO_DIR, else $XDG_CACHE_HOME/memo, else ~/.cache/memo]' -r -F
complete -c memo -n "__fish_memo_using_subcommand remote; and __fish_seen_subcommand_from check" -l remote -d 'Shared cache behind the local one: http(s)://HOST/PATH (Bazel remote-cache layout) or s3://BUCKET/PREFIX; \'off\' for none [env: MEMO_REMOTE]' -r
complete -c memo -n "__fish_memo_using_subcommand remote; and __fish_seen_subcommand_from check" -s h -l help -d 'Print help'
complete -c memo -n "__fish_memo_using_subcommand remote; and __fish_seen_subcommand_from push" -l cache-dir -d 'Cache directory [default: $MEMO_DIR, else $XDG_CACHE_HOME/memo, else ~/.cache/memo]' -r -F
complete -c memo -n "__fish_memo_using_subcommand remote; and __fish_seen_subcommand_from push" -l remote -d 'Shared cache behind the local one: http(s)://HOST/PATH (Bazel remote-cache layout) or s3://BUCKET/PREFIX; \'off\' for none [env: MEMO_REMOTE]' -r
complete -c memo -n "__fish_memo_using_subcommand remote; and __fish_seen_subcommand_from push" -s h -l help -d 'Print help'
complete -c memo -n "__fish_memo_using_subcommand remote; and __fish_seen_subcommand_from help" -f -a "check" -d 'Write, read and delete a probe object; report each step\'s latency and what failed'
complete -c memo -n "__fish_memo_using_subcommand remote; and __fish_seen_subcommand_from help" -f -a "push" -d 'Upload every result stored here and not yet sent, and wait for it (for the end of a CI job)'
complete -c memo -n "__fish_memo_using_subcommand remote; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c memo -n "__fish_memo_using_subcommand help; and not __fish_seen_subcommand_from run explain stats gc clear ls rm log config show remote help" -f -a "run" -d 'Run a command, or replay its recorded result'
complete -c memo -n "__fish_memo_using_subcommand help; and not __fish_seen_subcommand_from run explain stats gc clear ls rm log config show remote help" -f -a "explain" -d 'Say whether `memo run` would hit, and on a miss what changed; runs nothing'
complete -c memo -n "__fish_memo_using_subcommand help; and not __fish_seen_subcommand_from run explain stats gc clear ls rm log config show remote help" -f -a "stats" -d 'Show hits, misses, size and time saved'
complete -c memo -n "__fish_memo_using_subcommand help; and not __fish_seen_subcommand_from run explain stats gc clear ls rm log config show remote help" -f -a "gc" -d 'Trim the cache: evict by cost-aware priority or age, drop unreferenced objects'
complete -c memo -n "__fish_memo_using_subcommand help; and not __fish_seen_subcommand_from run explain stats gc clear ls rm log config show remote help" -f -a "clear" -d 'Remove every cached result'
complete -c memo -n "__fish_memo_using_subcommand help; and not __fish_seen_subcommand_from run explain stats gc clear ls rm log config show remote help" -f -a "ls" -d 'List cached results'
complete -c memo -n "__fish_memo_using_subcommand help; and not __fish_seen_subcommand_from run explain stats gc clear ls rm log config show remote help" -f -a "rm" -d 'Remove cached results by key prefix or by a pattern on the command'
complete -c memo -n "__fish_memo_using_subcommand help; and not __fish_seen_subcommand_from run explain stats gc clear ls rm log config show remote help" -f -a "log" -d 'Show the latest cache events (hits, misses, stores, evictions, errors)'
complete -c memo -n "__fish_memo_using_subcommand help; and not __fish_seen_subcommand_from run explain stats gc clear ls rm log config show remote help" -f -a "config" -d 'Print the effective settings and where each comes from'
complete -c memo -n "__fish_memo_using_subcommand help; and not __fish_seen_subcommand_from run explain stats gc clear ls rm log config show remote help" -f -a "show" -d 'Show one cached result: its command, inputs, outputs and streams'
complete -c memo -n "__fish_memo_using_subcommand help; and not __fish_seen_subcommand_from run explain stats gc clear ls rm log config show remote help" -f -a "remote" -d 'Work with the shared cache: check that it answers, upload what is pending'
complete -c memo -n "__fish_memo_using_subcommand help; and not __fish_seen_subcommand_from run explain stats gc clear ls rm log config show remote help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c memo -n "__fish_memo_using_subcommand help; and __fish_seen_subcommand_from remote" -f -a "check" -d 'Write, read and delete a probe object; report each step\'s latency and what failed'
complete -c memo -n "__fish_memo_using_subcommand help; and __fish_seen_subcommand_from remote" -f -a "push" -d 'Upload every result stored here and not yet sent, and wait for it (for the end of a CI job)'

# Cache keys for `memo show KEY` and `memo rm KEY...` (examples/gen_assets.rs).
complete -c memo -n "__fish_seen_subcommand_from show rm" -f -a "(memo __keys 2>/dev/null)"

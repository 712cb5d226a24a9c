
use builtin;
use str;

set edit:completion:arg-completer[memo] = {|@words|
    fn spaces {|n|
        builtin:repeat $n ' ' | str:join ''
    }
    fn cand {|text desc|
        edit:complex-candidate $text &display=$text' '(spaces (- 14 (wcswidth $text)))$desc
    }
    var command = 'memo'
    for word $words[1..-1] {
        if (str:has-prefix $word '-') {
            break
        }
        set command = $command';'$word
    }
    var completions = [
        &'memo'= {
            cand --cache-dir 'Cache directory [default: $MEMO_DIR, else $XDG_CACHE_HOME/memo, else ~/.cache/memo]'
            cand --remote 'Shared cache behind the local one: http(s)://HOST/PATH (Bazel remote-cache layout) or s3://BUCKET/PREFIX; ''off'' for none [env: MEMO_REMOTE]'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
            cand run 'Run a command, or replay its recorded result'
            cand explain 'Say whether `memo run` would hit, and on a miss what changed; runs nothing'
            cand stats 'Show hits, misses, size and time saved'
            cand gc 'Trim the cache: evict by cost-aware priority or age, drop unreferenced objects'
            cand clear 'Remove every cached result'
            cand ls 'List cached results'
            cand rm 'Remove cached results by key prefix or by a pattern on the command'
            cand log 'Show the latest cache events (hits, misses, stores, evictions, errors)'
            cand config 'Print the effective settings and where each comes from'
            cand show 'Show one cached result: its command, inputs, outputs and streams'
            cand remote 'Work with the shared cache: check that it answers, upload what is pending'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'memo;run'= {
            cand -i 'A file, directory or glob whose contents the result depends on; before ''--'', several paths (-i a.c b.h); repeatable'
            cand --input 'A file, directory or glob whose contents the result depends on; before ''--'', several paths (-i a.c b.h); repeatable'
            cand -o 'A file or directory the command writes, restored on a hit; before ''--'', several paths; repeatable'
            cand --output 'A file or directory the command writes, restored on a hit; before ''--'', several paths; repeatable'
            cand -e 'An environment variable the result depends on; globs allowed, e.g. ''AWS_*'' (repeatable)'
            cand --env 'An environment variable the result depends on; globs allowed, e.g. ''AWS_*'' (repeatable)'
            cand --exclude 'Leave matching paths under input directories out of the key, gitignore-style, e.g. ''__pycache__'' or ''*.log'' (repeatable)'
            cand --salt 'Extra text to mix into the key, e.g. a version you bump by hand'
            cand --key-cmd 'A shell command whose stdout joins the key, e.g. ''git rev-parse HEAD'''
            cand --ttl 'Treat results older than this as misses, e.g. 10m, 12h, 7d [env: MEMO_TTL]'
            cand --stale 'After --ttl expires, keep replaying the old result this much longer while it is refreshed in the background; with --output, no background refresh runs (it would rewrite the outputs being read): the result is rerun once the window ends [env: MEMO_STALE]'
            cand --cache-dir 'Cache directory [default: $MEMO_DIR, else $XDG_CACHE_HOME/memo, else ~/.cache/memo]'
            cand --remote 'Shared cache behind the local one: http(s)://HOST/PATH (Bazel remote-cache layout) or s3://BUCKET/PREFIX; ''off'' for none [env: MEMO_REMOTE]'
            cand --ignore-cwd 'Leave the working directory out of the key, to share results between checkouts'
            cand --gitignore 'Honour .gitignore and .ignore files under input directories'
            cand --stdin 'Read standard input, key on it and feed it to the command (default: /dev/null)'
            cand --cache-failures 'Also store and replay non-zero exit codes [env: MEMO_CACHE_FAILURES]'
            cand --force 'Run the command even on a hit, and replace the stored result'
            cand --tty 'When stdout and stderr are a terminal, run the command on a pseudo-terminal (colours, line buffering) and replay its recording only to a terminal [env: MEMO_TTY]'
            cand --trace 'Discover the files the command reads by tracing it (Linux): later calls are keyed on exactly those, and the files it writes are restored on a hit [env: MEMO_TRACE]'
            cand -v 'Print one line to stderr per call: hit or miss, short key, time saved [env: MEMO_VERBOSE]'
            cand --verbose 'Print one line to stderr per call: hit or miss, short key, time saved [env: MEMO_VERBOSE]'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'memo;explain'= {
            cand -i 'A file, directory or glob whose contents the result depends on; before ''--'', several paths (-i a.c b.h); repeatable'
            cand --input 'A file, directory or glob whose contents the result depends on; before ''--'', several paths (-i a.c b.h); repeatable'
            cand -o 'A file or directory the command writes, restored on a hit; before ''--'', several paths; repeatable'
            cand --output 'A file or directory the command writes, restored on a hit; before ''--'', several paths; repeatable'
            cand -e 'An environment variable the result depends on; globs allowed, e.g. ''AWS_*'' (repeatable)'
            cand --env 'An environment variable the result depends on; globs allowed, e.g. ''AWS_*'' (repeatable)'
            cand --exclude 'Leave matching paths under input directories out of the key, gitignore-style, e.g. ''__pycache__'' or ''*.log'' (repeatable)'
            cand --salt 'Extra text to mix into the key, e.g. a version you bump by hand'
            cand --key-cmd 'A shell command whose stdout joins the key, e.g. ''git rev-parse HEAD'''
            cand --ttl 'Treat results older than this as misses, e.g. 10m, 12h, 7d [env: MEMO_TTL]'
            cand --stale 'After --ttl expires, keep replaying the old result this much longer while it is refreshed in the background; with --output, no background refresh runs (it would rewrite the outputs being read): the result is rerun once the window ends [env: MEMO_STALE]'
            cand --cache-dir 'Cache directory [default: $MEMO_DIR, else $XDG_CACHE_HOME/memo, else ~/.cache/memo]'
            cand --remote 'Shared cache behind the local one: http(s)://HOST/PATH (Bazel remote-cache layout) or s3://BUCKET/PREFIX; ''off'' for none [env: MEMO_REMOTE]'
            cand --ignore-cwd 'Leave the working directory out of the key, to share results between checkouts'
            cand --gitignore 'Honour .gitignore and .ignore files under input directories'
            cand --stdin 'Read standard input, key on it and feed it to the command (default: /dev/null)'
            cand --cache-failures 'Also store and replay non-zero exit codes [env: MEMO_CACHE_FAILURES]'
            cand --force 'Run the command even on a hit, and replace the stored result'
            cand --tty 'When stdout and stderr are a terminal, run the command on a pseudo-terminal (colours, line buffering) and replay its recording only to a terminal [env: MEMO_TTY]'
            cand --trace 'Discover the files the command reads by tracing it (Linux): later calls are keyed on exactly those, and the files it writes are restored on a hit [env: MEMO_TRACE]'
            cand -v 'Print one line to stderr per call: hit or miss, short key, time saved [env: MEMO_VERBOSE]'
            cand --verbose 'Print one line to stderr per call: hit or miss, short key, time saved [env: MEMO_VERBOSE]'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'memo;stats'= {
            cand --cache-dir 'Cache directory [default: $MEMO_DIR, else $XDG_CACHE_HOME/memo, else ~/.cache/memo]'
            cand --remote 'Shared cache behind the local one: http(s)://HOST/PATH (Bazel remote-cache layout) or s3://BUCKET/PREFIX; ''off'' for none [env: MEMO_REMOTE]'
            cand --json 'Print one JSON object'
            cand --zero 'Reset the counters (hits, misses, time saved...), keeping the cached results'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'memo;gc'= {
            cand --max-size 'Evict until the cache is at most this big, e.g. 500M, 2GiB [env: MEMO_MAX_SIZE]'
            cand --max-age 'Evict results not used for this long, e.g. 7d'
            cand --grace 'Keep unreferenced objects and staging files younger than this: their entry may be being written'
            cand --cache-dir 'Cache directory [default: $MEMO_DIR, else $XDG_CACHE_HOME/memo, else ~/.cache/memo]'
            cand --remote 'Shared cache behind the local one: http(s)://HOST/PATH (Bazel remote-cache layout) or s3://BUCKET/PREFIX; ''off'' for none [env: MEMO_REMOTE]'
            cand --dry-run 'Print what would be removed and how much it frees; change nothing'
            cand --verify 'Also re-hash every stored object in full (slow) and drop damaged ones, with the results that use them'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'memo;clear'= {
            cand --cache-dir 'Cache directory [default: $MEMO_DIR, else $XDG_CACHE_HOME/memo, else ~/.cache/memo]'
            cand --remote 'Shared cache behind the local one: http(s)://HOST/PATH (Bazel remote-cache layout) or s3://BUCKET/PREFIX; ''off'' for none [env: MEMO_REMOTE]'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'memo;ls'= {
            cand --cache-dir 'Cache directory [default: $MEMO_DIR, else $XDG_CACHE_HOME/memo, else ~/.cache/memo]'
            cand --remote 'Shared cache behind the local one: http(s)://HOST/PATH (Bazel remote-cache layout) or s3://BUCKET/PREFIX; ''off'' for none [env: MEMO_REMOTE]'
            cand --json 'Print a JSON array'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'memo;rm'= {
            cand --command 'Remove every result whose command line matches this glob, e.g. ''make *'''
            cand --cache-dir 'Cache directory [default: $MEMO_DIR, else $XDG_CACHE_HOME/memo, else ~/.cache/memo]'
            cand --remote 'Shared cache behind the local one: http(s)://HOST/PATH (Bazel remote-cache layout) or s3://BUCKET/PREFIX; ''off'' for none [env: MEMO_REMOTE]'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'memo;log'= {
            cand -n 'How many events to show'
            cand --count 'How many events to show'
            cand --cache-dir 'Cache directory [default: $MEMO_DIR, else $XDG_CACHE_HOME/memo, else ~/.cache/memo]'
            cand --remote 'Shared cache behind the local one: http(s)://HOST/PATH (Bazel remote-cache layout) or s3://BUCKET/PREFIX; ''off'' for none [env: MEMO_REMOTE]'
            cand --json 'Print the events as JSON lines'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'memo;config'= {
            cand --cache-dir 'Cache directory [default: $MEMO_DIR, else $XDG_CACHE_HOME/memo, else ~/.cache/memo]'
            cand --remote 'Shared cache behind the local one: http(s)://HOST/PATH (Bazel remote-cache layout) or s3://BUCKET/PREFIX; ''off'' for none [env: MEMO_REMOTE]'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'memo;show'= {
            cand --cache-dir 'Cache directory [default: $MEMO_DIR, else $XDG_CACHE_HOME/memo, else ~/.cache/memo]'
            cand --remote 'Shared cache behind the local one: http(s)://HOST/PATH (Bazel remote-cache layout) or s3://BUCKET/PREFIX; ''off'' for none [env: MEMO_REMOTE]'
            cand --json 'Print one JSON object'
            cand --stdout 'Print the recorded stdout (for a merged recording: the one stream)'
            cand --stderr 'Print the recorded stderr (nothing for a merged recording)'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'memo;remote'= {
            cand --cache-dir 'Cache directory [default: $MEMO_DIR, else $XDG_CACHE_HOME/memo, else ~/.cache/memo]'
            cand --remote 'Shared cache behind the local one: http(s)://HOST/PATH (Bazel remote-cache layout) or s3://BUCKET/PREFIX; ''off'' for none [env: MEMO_REMOTE]'
            cand -h 'Print help'
            cand --help 'Print help'
            cand check 'Write, read and delete a probe object; report each step''s latency and what failed'
            cand push 'Upload every result stored here and not yet sent, and wait for it (for the end of a CI job)'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'memo;remote;check'= {
            cand --cache-dir 'Cache directory [default: $MEMO_DIR, else $XDG_CACHE_HOME/memo, else ~/.cache/memo]'
            cand --remote 'Shared cache behind the local one: http(s)://HOST/PATH (Bazel remote-cache layout) or s3://BUCKET/PREFIX; ''off'' for none [env: MEMO_REMOTE]'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'memo;remote;push'= {
            cand --cache-dir 'Cache directory [default: $MEMO_DIR, else $XDG_CACHE_HOME/memo, else ~/.cache/memo]'
            cand --remote 'Shared cache behind the local one: http(s)://HOST/PATH (Bazel remote-cache layout) or s3://BUCKET/PREFIX; ''off'' for none [env: MEMO_REMOTE]'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'memo;remote;help'= {
            cand check 'Write, read and delete a probe object; report each step''s latency and what failed'
            cand push 'Upload every result stored here and not yet sent, and wait for it (for the end of a CI job)'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'memo;remote;help;check'= {
        }
        &'memo;remote;help;push'= {
        }
        &'memo;remote;help;help'= {
        }
        &'memo;help'= {
            cand run 'Run a command, or replay its recorded result'
            cand explain 'Say whether `memo run` would hit, and on a miss what changed; runs nothing'
            cand stats 'Show hits, misses, size and time saved'
            cand gc 'Trim the cache: evict by cost-aware priority or age, drop unreferenced objects'
            cand clear 'Remove every cached result'
            cand ls 'List cached results'
            cand rm 'Remove cached results by key prefix or by a pattern on the command'
            cand log 'Show the latest cache events (hits, misses, stores, evictions, errors)'
            cand config 'Print the effective settings and where each comes from'
            cand show 'Show one cached result: its command, inputs, outputs and streams'
            cand remote 'Work with the shared cache: check that it answers, upload what is pending'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'memo;help;run'= {
        }
        &'memo;help;explain'= {
        }
        &'memo;help;stats'= {
        }
        &'memo;help;gc'= {
        }
        &'memo;help;clear'= {
        }
        &'memo;help;ls'= {
        }
        &'memo;help;rm'= {
        }
        &'memo;help;log'= {
        }
        &'memo;help;config'= {
        }
        &'memo;help;show'= {
        }
        &'memo;help;remote'= {
            cand check 'Write, read and delete a probe object; report each step''s latency and what failed'
            cand push 'Upload every result stored here and not yet sent, and wait for it (for the end of a CI job)'
        }
        &'memo;help;remote;check'= {
        }
        &'memo;help;remote;push'= {
        }
        &'memo;help;help'= {
        }
    ]
    $completions[$command]
}


using namespace System.Management.Automation
using namespace System.Management.Automation.Language

Register-ArgumentCompleter -Native -CommandName 'memo' -ScriptBlock {
    param($wordToComplete, $commandAst, $cursorPosition)

    $commandElements = $commandAst.CommandElements
    $command = @(
        'memo'
        for ($i = 1; $i -lt $commandElements.Count; $i++) {
            $element = $commandElements[$i]
            if ($element -isnot [StringConstantExpressionAst] -or
                $element.StringConstantType -ne [StringConstantType]::BareWord -or
                $element.Value.StartsWith('-') -or
                $element.Value -eq $wordToComplete) {
                break
        }
        $element.Value
    }) -join ';'

    $completions = @(switch ($command) {
        'memo' {
            [CompletionResult]::new('--cache-dir', '--cache-dir', [CompletionResultType]::ParameterName, 'Cache directory [default: $MEMO_DIR, else $XDG_CACHE_HOME/memo, else ~/.cache/memo]')
            [CompletionResult]::new('--remote', '--remote', [CompletionResultType]::ParameterName, 'Shared cache behind the local one: http(s)://HOST/PATH (Bazel remote-cache layout) or s3://BUCKET/PREFIX; ''off'' for none [env: MEMO_REMOTE]')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('run', 'run', [CompletionResultType]::ParameterValue, 'Run a command, or replay its recorded result')
            [CompletionResult]::new('explain', 'explain', [CompletionResultType]::ParameterValue, 'Say whether `memo run` would hit, and on a miss what changed; runs nothing')
            [CompletionResult]::new('stats', 'stats', [CompletionResultType]::ParameterValue, 'Show hits, misses, size and time saved')
            [CompletionResult]::new('gc', 'gc', [CompletionResultType]::ParameterValue, 'Trim the cache: evict by cost-aware priority or age, drop unreferenced objects')
            [CompletionResult]::new('clear', 'clear', [CompletionResultType]::ParameterValue, 'Remove every cached result')
            [CompletionResult]::new('ls', 'ls', [CompletionResultType]::ParameterValue, 'List cached results')
            [CompletionResult]::new('rm', 'rm', [CompletionResultType]::ParameterValue, 'Remove cached results by key prefix or by a pattern on the command')
            [CompletionResult]::new('log', 'log', [CompletionResultType]::ParameterValue, 'Show the latest cache events (hits, misses, stores, evictions, errors)')
            [CompletionResult]::new('config', 'config', [CompletionResultType]::ParameterValue, 'Print the effective settings and where each comes from')
            [CompletionResult]::new('show', 'show', [CompletionResultType]::ParameterValue, 'Show one cached result: its command, inputs, outputs and streams')
            [CompletionResult]::new('remote', 'remote', [CompletionResultType]::ParameterValue, 'Work with the shared cache: check that it answers, upload what is pending')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'memo;run' {
            [CompletionResult]::new('-i', '-i', [CompletionResultType]::ParameterName, 'A file, directory or glob whose contents the result depends on; before ''--'', several paths (-i a.c b.h); repeatable')
            [CompletionResult]::new('--input', '--input', [CompletionResultType]::ParameterName, 'A file, directory or glob whose contents the result depends on; before ''--'', several paths (-i a.c b.h); repeatable')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'A file or directory the command writes, restored on a hit; before ''--'', several paths; repeatable')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'A file or directory the command writes, restored on a hit; before ''--'', several paths; repeatable')
            [CompletionResult]::new('-e', '-e', [CompletionResultType]::ParameterName, 'An environment variable the result depends on; globs allowed, e.g. ''AWS_*'' (repeatable)')
            [CompletionResult]::new('--env', '--env', [CompletionResultType]::ParameterName, 'An environment variable the result depends on; globs allowed, e.g. ''AWS_*'' (repeatable)')
            [CompletionResult]::new('--exclude', '--exclude', [CompletionResultType]::ParameterName, 'Leave matching paths under input directories out of the key, gitignore-style, e.g. ''__pycache__'' or ''*.log'' (repeatable)')
            [CompletionResult]::new('--salt', '--salt', [CompletionResultType]::ParameterName, 'Extra text to mix into the key, e.g. a version you bump by hand')
            [CompletionResult]::new('--key-cmd', '--key-cmd', [CompletionResultType]::ParameterName, 'A shell command whose stdout joins the key, e.g. ''git rev-parse HEAD''')
            [CompletionResult]::new('--ttl', '--ttl', [CompletionResultType]::ParameterName, 'Treat results older than this as misses, e.g. 10m, 12h, 7d [env: MEMO_TTL]')
            [CompletionResult]::new('--stale', '--stale', [CompletionResultType]::ParameterName, 'After --ttl expires, keep replaying the old result this much longer while it is refreshed in the background; with --output, no background refresh runs (it would rewrite the outputs being read): the result is rerun once the window ends [env: MEMO_STALE]')
            [CompletionResult]::new('--cache-dir', '--cache-dir', [CompletionResultType]::ParameterName, 'Cache directory [default: $MEMO_DIR, else $XDG_CACHE_HOME/memo, else ~/.cache/memo]')
            [CompletionResult]::new('--remote', '--remote', [CompletionResultType]::ParameterName, 'Shared cache behind the local one: http(s)://HOST/PATH (Bazel remote-cache layout) or s3://BUCKET/PREFIX; ''off'' for none [env: MEMO_REMOTE]')
            [CompletionResult]::new('--ignore-cwd', '--ignore-cwd', [CompletionResultType]::ParameterName, 'Leave the working directory out of the key, to share results between checkouts')
            [CompletionResult]::new('--gitignore', '--gitignore', [CompletionResultType]::ParameterName, 'Honour .gitignore and .ignore files under input directories')
            [CompletionResult]::new('--stdin', '--stdin', [CompletionResultType]::ParameterName, 'Read standard input, key on it and feed it to the command (default: /dev/null)')
            [CompletionResult]::new('--cache-failures', '--cache-failures', [CompletionResultType]::ParameterName, 'Also store and replay non-zero exit codes [env: MEMO_CACHE_FAILURES]')
            [CompletionResult]::new('--force', '--force', [CompletionResultType]::ParameterName, 'Run the command even on a hit, and replace the stored result')
            [CompletionResult]::new('--tty', '--tty', [CompletionResultType]::ParameterName, 'When stdout and stderr are a terminal, run the command on a pseudo-terminal (colours, line buffering) and replay its recording only to a terminal [env: MEMO_TTY]')
            [CompletionResult]::new('--trace', '--trace', [CompletionResultType]::ParameterName, 'Discover the files the command reads by tracing it (Linux): later calls are keyed on exactly those, and the files it writes are restored on a hit [env: MEMO_TRACE]')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'Print one line to stderr per call: hit or miss, short key, time saved [env: MEMO_VERBOSE]')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'Print one line to stderr per call: hit or miss, short key, time saved [env: MEMO_VERBOSE]')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'memo;explain' {
            [CompletionResult]::new('-i', '-i', [CompletionResultType]::ParameterName, 'A file, directory or glob whose contents the result depends on; before ''--'', several paths (-i a.c b.h); repeatable')
            [CompletionResult]::new('--input', '--input', [CompletionResultType]::ParameterName, 'A file, directory or glob whose contents the result depends on; before ''--'', several paths (-i a.c b.h); repeatable')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'A file or directory the command writes, restored on a hit; before ''--'', several paths; repeatable')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'A file or directory the command writes, restored on a hit; before ''--'', several paths; repeatable')
            [CompletionResult]::new('-e', '-e', [CompletionResultType]::ParameterName, 'An environment variable the result depends on; globs allowed, e.g. ''AWS_*'' (repeatable)')
            [CompletionResult]::new('--env', '--env', [CompletionResultType]::ParameterName, 'An environment variable the result depends on; globs allowed, e.g. ''AWS_*'' (repeatable)')
            [CompletionResult]::new('--exclude', '--exclude', [CompletionResultType]::ParameterName, 'Leave matching paths under input directories out of the key, gitignore-style, e.g. ''__pycache__'' or ''*.log'' (repeatable)')
            [CompletionResult]::new('--salt', '--salt', [CompletionResultType]::ParameterName, 'Extra text to mix into the key, e.g. a version you bump by hand')
            [CompletionResult]::new('--key-cmd', '--key-cmd', [CompletionResultType]::ParameterName, 'A shell command whose stdout joins the key, e.g. ''git rev-parse HEAD''')
            [CompletionResult]::new('--ttl', '--ttl', [CompletionResultType]::ParameterName, 'Treat results older than this as misses, e.g. 10m, 12h, 7d [env: MEMO_TTL]')
            [CompletionResult]::new('--stale', '--stale', [CompletionResultType]::ParameterName, 'After --ttl expires, keep replaying the old result this much longer while it is refreshed in the background; with --output, no background refresh runs (it would rewrite the outputs being read): the result is rerun once the window ends [env: MEMO_STALE]')
            [CompletionResult]::new('--cache-dir', '--cache-dir', [CompletionResultType]::ParameterName, 'Cache directory [default: $MEMO_DIR, else $XDG_CACHE_HOME/memo, else ~/.cache/memo]')
            [CompletionResult]::new('--remote', '--remote', [CompletionResultType]::ParameterName, 'Shared cache behind the local one: http(s)://HOST/PATH (Bazel remote-cache layout) or s3://BUCKET/PREFIX; ''off'' for none [env: MEMO_REMOTE]')
            [CompletionResult]::new('--ignore-cwd', '--ignore-cwd', [CompletionResultType]::ParameterName, 'Leave the working directory out of the key, to share results between checkouts')
            [CompletionResult]::new('--gitignore', '--gitignore', [CompletionResultType]::ParameterName, 'Honour .gitignore and .ignore files under input directories')
            [CompletionResult]::new('--stdin', '--stdin', [CompletionResultType]::ParameterName, 'Read standard input, key on it and feed it to the command (default: /dev/null)')
            [CompletionResult]::new('--cache-failures', '--cache-failures', [CompletionResultType]::ParameterName, 'Also store and replay non-zero exit codes [env: MEMO_CACHE_FAILURES]')
            [CompletionResult]::new('--force', '--force', [CompletionResultType]::ParameterName, 'Run the command even on a hit, and replace the stored result')
            [CompletionResult]::new('--tty', '--tty', [CompletionResultType]::ParameterName, 'When stdout and stderr are a terminal, run the command on a pseudo-terminal (colours, line buffering) and replay its recording only to a terminal [env: MEMO_TTY]')
            [CompletionResult]::new('--trace', '--trace', [CompletionResultType]::ParameterName, 'Discover the files the command reads by tracing it (Linux): later calls are keyed on exactly those, and the files it writes are restored on a hit [env: MEMO_TRACE]')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'Print one line to stderr per call: hit or miss, short key, time saved [env: MEMO_VERBOSE]')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'Print one line to stderr per call: hit or miss, short key, time saved [env: MEMO_VERBOSE]')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'memo;stats' {
            [CompletionResult]::new('--cache-dir', '--cache-dir', [CompletionResultType]::ParameterName, 'Cache directory [default: $MEMO_DIR, else $XDG_CACHE_HOME/memo, else ~/.cache/memo]')
            [CompletionResult]::new('--remote', '--remote', [CompletionResultType]::ParameterName, 'Shared cache behind the local one: http(s)://HOST/PATH (Bazel remote-cache layout) or s3://BUCKET/PREFIX; ''off'' for none [env: MEMO_REMOTE]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print one JSON object')
            [CompletionResult]::new('--zero', '--zero', [CompletionResultType]::ParameterName, 'Reset the counters (hits, misses, time saved...), keeping the cached results')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'memo;gc' {
            [CompletionResult]::new('--max-size', '--max-size', [CompletionResultType]::ParameterName, 'Evict until the cache is at most this big, e.g. 500M, 2GiB [env: MEMO_MAX_SIZE]')
            [CompletionResult]::new('--max-age', '--max-age', [CompletionResultType]::ParameterName, 'Evict results not used for this long, e.g. 7d')
            [CompletionResult]::new('--grace', '--grace', [CompletionResultType]::ParameterName, 'Keep unreferenced objects and staging files younger than this: their entry may be being written')
            [CompletionResult]::new('--cache-dir', '--cache-dir', [CompletionResultType]::ParameterName, 'Cache directory [default: $MEMO_DIR, else $XDG_CACHE_HOME/memo, else ~/.cache/memo]')
            [CompletionResult]::new('--remote', '--remote', [CompletionResultType]::ParameterName, 'Shared cache behind the local one: http(s)://HOST/PATH (Bazel remote-cache layout) or s3://BUCKET/PREFIX; ''off'' for none [env: MEMO_REMOTE]')
            [CompletionResult]::new('--dry-run', '--dry-run', [CompletionResultType]::ParameterName, 'Print what would be removed and how much it frees; change nothing')
            [CompletionResult]::new('--verify', '--verify', [CompletionResultType]::ParameterName, 'Also re-hash every stored object in full (slow) and drop damaged ones, with the results that use them')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'memo;clear' {
            [CompletionResult]::new('--cache-dir', '--cache-dir', [CompletionResultType]::ParameterName, 'Cache directory [default: $MEMO_DIR, else $XDG_CACHE_HOME/memo, else ~/.cache/memo]')
            [CompletionResult]::new('--remote', '--remote', [CompletionResultType]::ParameterName, 'Shared cache behind the local one: http(s)://HOST/PATH (Bazel remote-cache layout) or s3://BUCKET/PREFIX; ''off'' for none [env: MEMO_REMOTE]')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'memo;ls' {
            [CompletionResult]::new('--cache-dir', '--cache-dir', [CompletionResultType]::ParameterName, 'Cache directory [default: $MEMO_DIR, else $XDG_CACHE_HOME/memo, else ~/.cache/memo]')
            [CompletionResult]::new('--remote', '--remote', [CompletionResultType]::ParameterName, 'Shared cache behind the local one: http(s)://HOST/PATH (Bazel remote-cache layout) or s3://BUCKET/PREFIX; ''off'' for none [env: MEMO_REMOTE]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print a JSON array')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'memo;rm' {
            [CompletionResult]::new('--command', '--command', [CompletionResultType]::ParameterName, 'Remove every result whose command line matches this glob, e.g. ''make *''')
            [CompletionResult]::new('--cache-dir', '--cache-dir', [CompletionResultType]::ParameterName, 'Cache directory [default: $MEMO_DIR, else $XDG_CACHE_HOME/memo, else ~/.cache/memo]')
            [CompletionResult]::new('--remote', '--remote', [CompletionResultType]::ParameterName, 'Shared cache behind the local one: http(s)://HOST/PATH (Bazel remote-cache layout) or s3://BUCKET/PREFIX; ''off'' for none [env: MEMO_REMOTE]')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'memo;log' {
            [CompletionResult]::new('-n', '-n', [CompletionResultType]::ParameterName, 'How many events to show')
            [CompletionResult]::new('--count', '--count', [CompletionResultType]::ParameterName, 'How many events to show')
            [CompletionResult]::new('--cache-dir', '--cache-dir', [CompletionResultType]::ParameterName, 'Cache directory [default: $MEMO_DIR, else $XDG_CACHE_HOME/memo, else ~/.cache/memo]')
            [CompletionResult]::new('--remote', '--remote', [CompletionResultType]::ParameterName, 'Shared cache behind the local one: http(s)://HOST/PATH (Bazel remote-cache layout) or s3://BUCKET/PREFIX; ''off'' for none [env: MEMO_REMOTE]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print the events as JSON lines')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'memo;config' {
            [CompletionResult]::new('--cache-dir', '--cache-dir', [CompletionResultType]::ParameterName, 'Cache directory [default: $MEMO_DIR, else $XDG_CACHE_HOME/memo, else ~/.cache/memo]')
            [CompletionResult]::new('--remote', '--remote', [CompletionResultType]::ParameterName, 'Shared cache behind the local one: http(s)://HOST/PATH (Bazel remote-cache layout) or s3://BUCKET/PREFIX; ''off'' for none [env: MEMO_REMOTE]')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'memo;show' {
            [CompletionResult]::new('--cache-dir', '--cache-dir', [CompletionResultType]::ParameterName, 'Cache directory [default: $MEMO_DIR, else $XDG_CACHE_HOME/memo, else ~/.cache/memo]')
            [CompletionResult]::new('--remote', '--remote', [CompletionResultType]::ParameterName, 'Shared cache behind the local one: http(s)://HOST/PATH (Bazel remote-cache layout) or s3://BUCKET/PREFIX; ''off'' for none [env: MEMO_REMOTE]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print one JSON object')
            [CompletionResult]::new('--stdout', '--stdout', [CompletionResultType]::ParameterName, 'Print the recorded stdout (for a merged recording: the one stream)')
            [CompletionResult]::new('--stderr', '--stderr', [CompletionResultType]::ParameterName, 'Print the recorded stderr (nothing for a merged recording)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'memo;remote' {
            [CompletionResult]::new('--cache-dir', '--cache-dir', [CompletionResultType]::ParameterName, 'Cache directory [default: $MEMO_DIR, else $XDG_CACHE_HOME/memo, else ~/.cache/memo]')
            [CompletionResult]::new('--remote', '--remote', [CompletionResultType]::ParameterName, 'Shared cache behind the local one: http(s)://HOST/PATH (Bazel remote-cache layout) or s3://BUCKET/PREFIX; ''off'' for none [env: MEMO_REMOTE]')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('check', 'check', [CompletionResultType]::ParameterValue, 'Write, read and delete a probe object; report each step''s latency and what failed')
            [CompletionResult]::new('push', 'push', [CompletionResultType]::ParameterValue, 'Upload every result stored here and not yet sent, and wait for it (for the end of a CI job)')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'memo;remote;check' {
            [CompletionResult]::new('--cache-dir', '--cache-dir', [CompletionResultType]::ParameterName, 'Cache directory [default: $MEMO_DIR, else $XDG_CACHE_HOME/memo, else ~/.cache/memo]')
            [CompletionResult]::new('--remote', '--remote', [CompletionResultType]::ParameterName, 'Shared cache behind the local one: http(s)://HOST/PATH (Bazel remote-cache layout) or s3://BUCKET/PREFIX; ''off'' for none [env: MEMO_REMOTE]')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'memo;remote;push' {
            [CompletionResult]::new('--cache-dir', '--cache-dir', [CompletionResultType]::ParameterName, 'Cache directory [default: $MEMO_DIR, else $XDG_CACHE_HOME/memo, else ~/.cache/memo]')
            [CompletionResult]::new('--remote', '--remote', [CompletionResultType]::ParameterName, 'Shared cache behind the local one: http(s)://HOST/PATH (Bazel remote-cache layout) or s3://BUCKET/PREFIX; ''off'' for none [env: MEMO_REMOTE]')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'memo;remote;help' {
            [CompletionResult]::new('check', 'check', [CompletionResultType]::ParameterValue, 'Write, read and delete a probe object; report each step''s latency and what failed')
            [CompletionResult]::new('push', 'push', [CompletionResultType]::ParameterValue, 'Upload every result stored here and not yet sent, and wait for it (for the end of a CI job)')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'memo;remote;help;check' {
            break
        }
        'memo;remote;help;push' {
            break
        }
        'memo;remote;help;help' {
            break
        }
        'memo;help' {
            [CompletionResult]::new('run', 'run', [CompletionResultType]::ParameterValue, 'Run a command, or replay its recorded result')
            [CompletionResult]::new('explain', 'explain', [CompletionResultType]::ParameterValue, 'Say whether `memo run` would hit, and on a miss what changed; runs nothing')
            [CompletionResult]::new('stats', 'stats', [CompletionResultType]::ParameterValue, 'Show hits, misses, size and time saved')
            [CompletionResult]::new('gc', 'gc', [CompletionResultType]::ParameterValue, 'Trim the cache: evict by cost-aware priority or age, drop unreferenced objects')
            [CompletionResult]::new('clear', 'clear', [CompletionResultType]::ParameterValue, 'Remove every cached result')
            [CompletionResult]::new('ls', 'ls', [CompletionResultType]::ParameterValue, 'List cached results')
            [CompletionResult]::new('rm', 'rm', [CompletionResultType]::ParameterValue, 'Remove cached results by key prefix or by a pattern on the command')
            [CompletionResult]::new('log', 'log', [CompletionResultType]::ParameterValue, 'Show the latest cache events (hits, misses, stores, evictions, errors)')
            [CompletionResult]::new('config', 'config', [CompletionResultType]::ParameterValue, 'Print the effective settings and where each comes from')
            [CompletionResult]::new('show', 'show', [CompletionResultType]::ParameterValue, 'Show one cached result: its command, inputs, outputs and streams')
            [CompletionResult]::new('remote', 'remote', [CompletionResultType]::ParameterValue, 'Work with the shared cache: check that it answers, upload what is pending')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'memo;help;run' {
            break
        }
        'memo;help;explain' {
            break
        }
        'memo;help;stats' {
            break
        }
        'memo;help;gc' {
            break
        }
        'memo;help;clear' {
            break
        }
        'memo;help;ls' {
            break
        }
        'memo;help;rm' {
            break
        }
        'memo;help;log' {
            break
        }
        'memo;help;config' {
            break
        }
        'memo;help;show' {
            break
        }
        'memo;help;remote' {
            [CompletionResult]::new('check', 'check', [CompletionResultType]::ParameterValue, 'Write, read and delete a probe object; report each step''s latency and what failed')
            [CompletionResult]::new('push', 'push', [CompletionResultType]::ParameterValue, 'Upload every result stored here and not yet sent, and wait for it (for the end of a CI job)')
            break
        }
        'memo;help;remote;check' {
            break
        }
        'memo;help;remote;push' {
            break
        }
        'memo;help;help' {
            break
        }
    })

    $completions.Where{ $_.CompletionText -like "$wordToComplete*" } |
        Sort-Object -Property ListItemText
}

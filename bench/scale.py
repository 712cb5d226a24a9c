#!/usr/bin/env python3
"""memo at scale (issue 12): small hits, many inputs, big pipes and a cache of 100,000 entries,
each against a baseline measured in the same run.

Run by hand from the repository root (needs a release build, about 3 GiB of free disk in
the temp dir, and 10 to 30 minutes the first time, most of it filling the big cache):

    cargo build --release && python3 bench/scale.py [--bkt PATH] [--quick]

One row per line of issue 12's table:
  1. a small hit (1.4 KB) against `cat` of the same file, and bkt's hit beside it;
  2. the same hit with 20 declared 100 KB inputs (bkt: `--modtime` of each);
  3. a 200 MiB hit into a pipe against `cat FILE | cat` (and the writer's write/splice
     calls, counted once under strace), then the same for 200 MiB of compressible text
     (stored compressed);
  4. `memo stats` at N entries against `du -s` of the cache and against `memo stats` at
     10 entries;
  5. `memo ls` and `memo gc --dry-run --max-size <half>` at N entries, and a small hit in
     the cache of N entries against the same hit at 10 entries and against `cat`;
  6. `memo gc` evicting half of a copy of the cache against `rm -rf` of the same files;
  7. disk and inodes per small entry (the event log left out);
  8. 2 GiB of compressible output stored: bytes under objects/;
  9. distinct small results stored per second with `xargs -P2`, into a fresh cache and
     then into the same cache once its packs exist, against the same loop running
     /bin/echo alone (measured first, before any row deletes many files);
and a cached compile of a small C file against a ccache hit, when ccache is installed.

The big cache is filled through `memo run -- echo I` (xargs -P2), never written by hand,
and kept in the temp dir (memo-scale-cache-N, with the layout it was filled in noted in
memo-scale-cache-N.json: a cache of another layout is refilled) for the next run of the
script. Timed commands run pinned to one CPU (--cpu), interleaved with their baseline,
except gc and its `rm -rf`, which run on every CPU (gc removes files on two threads,
`rm -rf` on one); every figure is a median. Prints a Markdown table; figures go in
docs/performance.md.
"""

import argparse
import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager

from release import memo_binary

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MEMO = memo_binary()
MIB = 1 << 20
LOGS = ("log.jsonl", "log.1.jsonl")
# The layout a kept cache was filled in: a cache kept from another layout is refilled,
# not measured. Change it with memo's on-disk format.
CACHE_FORMAT = "packs-1"

HELLO_C = """#include <stdio.h>
int greet(const char *who) { return printf("hello, %s\\n", who); }
"""


def timed(argv, env, cwd=None):
    """Runs argv with its output thrown away; returns its wall time in seconds."""
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"scale: {argv} exited with {proc.returncode}: "
                 f"{proc.stderr.decode(errors='replace').strip()}")
    return elapsed


def interleaved(runs, commands, env, cwd=None):
    """Medians of each of `commands` (name -> argv), run in turn so that drift hits all
    alike."""
    times = {name: [] for name in commands}
    for _ in range(runs):
        for name, argv in commands.items():
            times[name].append(timed(argv, env, cwd))
    return {name: statistics.median(t) for name, t in times.items()}


@contextmanager
def pinned(cpu):
    """Runs the block (and every process it starts) on one CPU, as issue 12 measured."""
    if cpu is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def run(argv, env=None, cwd=None, **kw):
    return subprocess.run(argv, env=env, cwd=cwd, check=True, **kw)


def memo_stats(env, cache):
    out = run([MEMO, "stats", "--json", "--cache-dir", cache], env, capture_output=True).stdout
    return json.loads(out)


@contextmanager
def only_hits(env, cache, what):
    """Fails the bench if anything in the block was a miss: a timed miss is not a hit."""
    misses = memo_stats(env, cache)["misses"]
    yield
    if memo_stats(env, cache)["misses"] != misses:
        sys.exit(f"scale: {what}: a timed run missed the cache")


def fill(cache, first, last, env):
    """Stores the results of `echo I` for I in first..last, two at a time (xargs -P2), as
    memo itself writes them. Returns the wall time."""
    start = time.perf_counter()
    seq = subprocess.Popen(["seq", str(first), str(last)], stdout=subprocess.PIPE)
    run(["xargs", "-P2", "-n1", MEMO, "run", "--cache-dir", cache, "--", "echo"], env,
        cwd="/", stdin=seq.stdout, stdout=subprocess.DEVNULL)
    seq.wait()
    return time.perf_counter() - start


def big_cache(entries, env):
    """A cache of `entries` results of `echo I`, filled once and kept for later runs.

    Returns (path, seconds it took to fill, or None when it was filled before)."""
    cache = os.path.join(tempfile.gettempdir(), f"memo-scale-cache-{entries}")
    marker = cache + ".json"
    if os.path.isdir(cache) and os.path.exists(marker):
        with open(marker) as f:
            kept = json.load(f)
        if kept.get("format") == CACHE_FORMAT:
            return cache, kept.get("seconds")
        print(f"scale: {cache} was filled in another layout ({kept.get('format')}); refilling",
              file=sys.stderr)
        shutil.rmtree(cache)
        os.remove(marker)
    resumed = os.path.isdir(cache)
    print(f"scale: filling {cache} with {entries} entries (xargs -P2)...", file=sys.stderr)
    seconds = fill(cache, 1, entries, env)
    if memo_stats(env, cache)["entries"] < entries:
        sys.exit(f"scale: {cache} holds fewer than {entries} entries after filling")
    with open(marker, "w") as f:
        # A resumed fill timed hits as well as stores: its time says nothing.
        json.dump({"entries": entries, "seconds": None if resumed else seconds,
                   "format": CACHE_FORMAT}, f)
    return cache, None if resumed else seconds


def files_under(top):
    found = set()
    for directory, _, names in os.walk(top):
        found.update(os.path.join(directory, name) for name in names)
    return found


def make_files(top, count, size):
    """`count` files of `size` bytes under `top`, in 256 directories as an entry file was
    kept (`entries/ab/<key>`)."""
    shutil.rmtree(top, ignore_errors=True)
    for shard in range(256):
        os.makedirs(os.path.join(top, f"{shard:02x}"))
    body = os.urandom(size)
    for i in range(count):
        name = hashlib.sha256(str(i).encode()).hexdigest()
        with open(os.path.join(top, name[:2], name), "wb") as f:
            f.write(body)


def du(path, *flags):
    out = run(["du", "-s", *flags, *(f"--exclude={log}" for log in LOGS), path],
              capture_output=True, text=True).stdout
    return int(out.split()[0])


def strace_counts(shell_line, env, cwd, trace="write,splice,sendfile,copy_file_range"):
    """The system calls (those in `trace`, or all when it is None) made by the process
    strace runs in `shell_line`, which holds STRACE where strace goes: {syscall: calls},
    with "total" for their sum."""
    with tempfile.NamedTemporaryFile("r", suffix=".strace") as out:
        traced = f"strace -f -c -o {out.name}" + (f" -e trace={trace}" if trace else "")
        run(["sh", "-c", shell_line.replace("STRACE", traced)], env, cwd=cwd)
        counts = {}
        for line in out.read().splitlines():
            fields = line.split()
            # "% time  seconds  usecs/call  calls  [errors]  syscall", then a total row.
            if len(fields) >= 5 and re.fullmatch(r"[\d.]+", fields[0]):
                counts[fields[-1]] = int(fields[3])
        return counts


def fmt(seconds):
    return f"{seconds * 1000:.2f} ms" if seconds < 1 else f"{seconds:.2f} s"


def ratio(a, b):
    return f"{a / b:.2f}x"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="fewer runs, 2,000 entries instead of 100,000, 256 MiB instead of 2 GiB")
    parser.add_argument("--entries", type=int, help="entries in the big cache (default 100000)")
    parser.add_argument("--bkt", help="bkt to compare with (default: bkt on PATH)")
    parser.add_argument("--cpu", type=int, default=1, help="CPU to pin timed runs to (default 1)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin timed runs")
    args = parser.parse_args()
    if not os.access(MEMO, os.X_OK):
        sys.exit("scale: build first: cargo build --release")
    entries = args.entries or (2000 if args.quick else 100_000)
    cpu = None if args.no_pin else args.cpu
    small_runs, scale_runs, big_runs = (40, 3, 3) if args.quick else (300, 9, 9)
    gc_runs, fill_runs, fill_count = (1, 1, 300) if args.quick else (3, 3, 2000)
    compressible = (256 if args.quick else 2048) * MIB
    bkt = args.bkt or shutil.which("bkt")
    if bkt is not None and not os.access(bkt, os.X_OK):
        sys.exit(f"scale: --bkt {bkt}: not an executable")
    ccache = shutil.which("ccache")
    gcc = shutil.which("gcc")

    work = tempfile.mkdtemp(prefix="memo-scale-")
    # The working directory is part of a key: every call below runs from the same one.
    os.chdir(work)
    env = dict(os.environ)
    for name in ("MEMO_DISABLE", "MEMO_DIR", "MEMO_REMOTE", "MEMO_MAX_SIZE", "MEMO_TTL",
                 "MEMO_VERBOSE", "MEMO_TRACE", "MEMO_CONFIG"):
        env.pop(name, None)
    env["MEMO_CONFIG"] = os.devnull
    cache = os.path.join(work, "cache")
    memo = [MEMO, "run", "--cache-dir", cache, "--"]
    bkt_run = [bkt, "--ttl=1d", f"--cache-dir={os.path.join(work, 'bkt')}", "--"] if bkt else None
    rows, notes = [], []
    load_before = os.getloadavg()

    def row(case, baseline, memo_figure, memo_ratio, bkt_ratio, before, target):
        rows.append(f"| {case} | {baseline} | {memo_figure} | {memo_ratio} | {bkt_ratio} "
                    f"| {before} | {target} |")
        print(rows[-1], file=sys.stderr, flush=True)

    try:
        # 9 (its rows come last): the rate of storing distinct small results, measured first.
        # Twice per run: into a fresh cache (whose first results create its 256 packs and
        # their tables), then as many more into the same cache, whose packs exist.
        # It runs before the rows that delete tens of thousands of files (the big cache's
        # copies, the `rm -rf` baseline of row 6): on an ext4 without a journal, a file
        # created in the minute after such a deletion waits while the allocator skips every
        # recently deleted inode (`recently_deleted` in fs/ext4/ialloc.c), which is the
        # previous rows' cost and not memo's (docs/performance.md).
        fill_times, warm_times, echo_times = [], [], []
        for i in range(fill_runs):
            rate_dir = os.path.join(work, f"rate{i}")
            # The first call in an empty cache creates its layout: not part of the rate.
            run([MEMO, "run", "--cache-dir", rate_dir, "--", "true"], env)
            fill_times.append(fill(rate_dir, 1, fill_count, env))
            warm_times.append(fill(rate_dir, fill_count + 1, 2 * fill_count, env))
            if memo_stats(env, rate_dir)["stores"] != 2 * fill_count + 1:
                sys.exit("scale: the rate run did not store one result per command")
            shutil.rmtree(rate_dir)
            start = time.perf_counter()
            seq = subprocess.Popen(["seq", "1", str(fill_count)], stdout=subprocess.PIPE)
            run(["xargs", "-P2", "-n1", "/bin/echo"], cwd="/", stdin=seq.stdout, stdout=subprocess.DEVNULL)
            seq.wait()
            echo_times.append(time.perf_counter() - start)
        fill_t, echo_t = statistics.median(fill_times), statistics.median(echo_times)
        warm_t = statistics.median(warm_times)

        # 1 and 2: small hits.
        small = os.path.join(work, "small.txt")
        with open(small, "wb") as f:
            f.write(os.urandom(700).hex().encode())  # 1,400 bytes
        inputs = []
        for i in range(20):
            inputs.append(os.path.join(work, f"input{i:02}.bin"))
            with open(inputs[-1], "wb") as f:
                f.write(os.urandom(100_000))
        with_inputs = [MEMO, "run", "--cache-dir", cache, "-i", *inputs, "--", "cat", small]
        bkt_with_inputs = None
        if bkt:
            bkt_with_inputs = bkt_run[:-1] + [f"--modtime={p}" for p in inputs] + ["--", "cat", small]
        # A digest is written to disk only for a file changed 2 s ago or more (the racy
        # timestamp rule, docs/key.md): until then every hit re-hashes. Record, wait, hit once.
        for _ in range(2):
            timed(memo + ["cat", small], env)
            timed(with_inputs, env)
            if bkt:
                timed(bkt_run + ["cat", small], env)
                timed(bkt_with_inputs, env)
            time.sleep(2.1)
        for case, commands, before, target in [
            ("small hit (1.4 KB) vs `cat`",
             {"cat": ["cat", small], "memo": memo + ["cat", small],
              "bkt": bkt_run + ["cat", small] if bkt else None},
             "1.65x (bkt 1.27x)", "<= 1.15x, below bkt"),
            ("small hit, 20 declared 100 KB inputs, vs `cat`",
             {"cat": ["cat", small], "memo": with_inputs, "bkt": bkt_with_inputs},
             "1.84x (bkt 1.36x)", "<= 1.3x"),
        ]:
            commands = {k: v for k, v in commands.items() if v is not None}
            with pinned(cpu), only_hits(env, cache, case):
                t = interleaved(small_runs, commands, env)
            row(case, f"cat {fmt(t['cat'])}", fmt(t["memo"]), ratio(t["memo"], t["cat"]),
                ratio(t["bkt"], t["cat"]) + f" ({fmt(t['bkt'])})" if bkt else "n/a", before, target)
        if not bkt:
            notes.append("bkt not found (give --bkt PATH, or `cargo install --root DIR bkt`): "
                         "no bkt column.")
        calls = strace_counts(f"STRACE {' '.join(memo)} cat {small} >/dev/null", env, work, None)
        top = sorted(((n, name) for name, n in calls.items() if name != "total"), reverse=True)[:6]
        notes.append(f"A small hit makes {calls.get('total', 0)} system calls (strace -f -c), most of "
                     f"them {', '.join(f'{name} {n}' for n, name in top)}.")

        # 3: a big hit into a pipe.
        big = os.path.join(work, "big.bin")
        with open(big, "wb") as f:
            for _ in range(200):
                f.write(os.urandom(MIB))
        pipe_memo = f"{' '.join(memo)} cat {big} | cat >/dev/null"
        pipe_cat = f"cat {big} | cat >/dev/null"
        for _ in range(2):
            run(["sh", "-c", pipe_memo], env)
            time.sleep(2.1)
        with pinned(cpu), only_hits(env, cache, "200 MiB hit"):
            t = interleaved(big_runs, {"cat": ["sh", "-c", pipe_cat], "memo": ["sh", "-c", pipe_memo]}, env)
        row("200 MiB hit into a pipe vs `cat FILE | cat`", f"cat {fmt(t['cat'])}", fmt(t["memo"]),
            ratio(t["memo"], t["cat"]), "", "1.23-1.61x", "<= 1.05x")
        for who, line in [("memo", f"STRACE {' '.join(memo)} cat {big} | cat >/dev/null"),
                          ("cat", f"STRACE cat {big} | cat >/dev/null")]:
            calls = strace_counts(line, env, work)
            shown = ", ".join(f"{n:,} {name} (about {200 * MIB / n / 1024:,.0f} KiB each)"
                              for name, n in sorted(calls.items()) if name != "total")
            notes.append(f"200 MiB into a pipe, the writer `{who}` (strace -f -c): {shown or 'none'}.")

        # 3b: a big compressible hit into a pipe: stored as zstd frames (one per MiB), verified by
        # decompressing it once (then vouched for by the digest cache), decompressed into
        # the pipe. The baseline is `cat | cat` of the raw bytes.
        text = os.path.join(work, "build.log")
        with open(text, "wb") as f:
            line = 0
            while f.tell() < 200 * MIB:
                f.write("".join(f"{n:09d} compiling src/module_{n % 997}.rs in {n % 89} ms: ok\n"
                                for n in range(line, line + 100_000)).encode())
                line += 100_000
            f.truncate(200 * MIB)
        pipe_memo = f"{' '.join(memo)} cat {text} | cat >/dev/null"
        pipe_cat = f"cat {text} | cat >/dev/null"
        for _ in range(2):
            run(["sh", "-c", pipe_memo], env)
            time.sleep(2.1)
        with pinned(cpu), only_hits(env, cache, "200 MiB compressible hit"):
            t = interleaved(big_runs, {"cat": ["sh", "-c", pipe_cat], "memo": ["sh", "-c", pipe_memo]}, env)
        row("200 MiB compressible hit (a build log) into a pipe vs `cat FILE | cat`",
            f"cat {fmt(t['cat'])}", fmt(t["memo"]), ratio(t["memo"], t["cat"]), "", "", "<= 1.5x")
        with open(text, "rb") as f:
            name = hashlib.file_digest(f, "sha256").hexdigest()
        stored = os.path.getsize(os.path.join(cache, "objects", name[:2], name))
        notes.append(f"The 200 MiB build log is stored in {stored:,} B ({stored / (200 * MIB):.3f}x).")

        # 4 and 5: a big cache.
        big_dir, fill_seconds = big_cache(entries, env)
        if fill_seconds:
            notes.append(f"Filling the cache with {entries:,} entries took {fill_seconds:.0f} s "
                         f"({entries / fill_seconds:.0f} per second, xargs -P2).")
        tiny_dir, _ = big_cache(10, env)
        size = memo_stats(env, big_dir)["bytes"]
        half = str(size // 2)
        with pinned(cpu):
            t = interleaved(scale_runs, {
                "du": ["du", "-s", big_dir],
                "stats": [MEMO, "stats", "--cache-dir", big_dir],
                "stats10": [MEMO, "stats", "--cache-dir", tiny_dir],
                "ls": [MEMO, "ls", "--cache-dir", big_dir],
                "dry": [MEMO, "gc", "--dry-run", "--max-size", half, "--cache-dir", big_dir],
            }, env)
        n = f"{entries:,}"
        row(f"`memo stats` at {n} entries vs `du -s`", f"du -s {fmt(t['du'])}", fmt(t["stats"]),
            ratio(t["stats"], t["du"]), "", "2.35x", "O(1) in entries")
        row(f"`memo stats` at {n} entries vs at 10 entries", f"stats at 10 {fmt(t['stats10'])}",
            fmt(t["stats"]), ratio(t["stats"], t["stats10"]), "", "O(entries)", "<= 1.5x")
        row(f"`memo ls` at {n} entries vs `du -s`", f"du -s {fmt(t['du'])}", fmt(t["ls"]),
            ratio(t["ls"], t["du"]), "", "1.25 s", "<= 0.3 s")
        row(f"`memo gc --dry-run --max-size <half>` at {n} entries vs `du -s`",
            f"du -s {fmt(t['du'])}", fmt(t["dry"]), ratio(t["dry"], t["du"]), "", "2.04 s", "<= 0.3 s")

        # 5b: a small hit in the big cache against the same kind of hit in the cache of 10
        # entries and against `cat` (each an `echo I` result, recorded from /).
        if entries >= 10:
            hit_big = [MEMO, "run", "--cache-dir", big_dir, "--", "echo", str(entries // 2)]
            hit_tiny = [MEMO, "run", "--cache-dir", tiny_dir, "--", "echo", "7"]
            with pinned(cpu), only_hits(env, big_dir, "hit in the big cache"), \
                    only_hits(env, tiny_dir, "hit in the cache of 10"):
                t = interleaved(small_runs, {"cat": ["cat", small], "big": hit_big,
                                             "tiny": hit_tiny}, env, cwd="/")
            row(f"small hit in the cache of {n} entries vs the same hit at 10 entries",
                f"at 10 {fmt(t['tiny'])}", fmt(t["big"]), ratio(t["big"], t["tiny"]), "", "",
                "O(1) in entries")
            row(f"small hit in the cache of {n} entries vs `cat`", f"cat {fmt(t['cat'])}",
                fmt(t["big"]), ratio(t["big"], t["cat"]), "", "1.65x", "<= 1.15x")

        # 6: gc evicting half, each time on a fresh copy, against `rm -rf` of as many files
        # as it evicts entries, each of an entry's size: what the same eviction cost when
        # every entry was a file of its own (entries are records in 256 packs now, which
        # gc rewrites without the evicted ones).
        copy = os.path.join(work, "copy")
        files = os.path.join(work, "files")
        gc_times, rm_times, evicted = [], [], 0
        for _ in range(gc_runs):
            shutil.rmtree(copy, ignore_errors=True)
            run(["cp", "-a", big_dir, copy])
            before = memo_stats(env, copy)
            # Unpinned, as the rm -rf below: gc may use the second core, rm -rf cannot.
            gc_times.append(timed([MEMO, "gc", "--max-size", half, "--cache-dir", copy], env))
            evicted = before["entries"] - memo_stats(env, copy)["entries"]
            shutil.rmtree(copy)
            entry_size = max(1, before["bytes"] // max(1, before["entries"]))
            make_files(files, evicted, entry_size)
            start = time.perf_counter()
            run(["rm", "-rf", files])
            rm_times.append(time.perf_counter() - start)
        gc_t, rm_t = statistics.median(gc_times), statistics.median(rm_times)
        row(f"`memo gc` evicting {evicted:,} of {n} entries vs `rm -rf` of {evicted:,} files "
            "of an entry's size (both unpinned)",
            f"rm -rf {fmt(rm_t)}", fmt(gc_t), ratio(gc_t, rm_t), "", "1.38x", "<= 1.0x")

        # 7: disk per small entry.
        disk = du(big_dir, "--block-size=1")
        inodes = du(big_dir, "--inodes")
        files = len(files_under(big_dir))
        row("disk per small entry (event log left out)", f"{disk:,} B / {n} entries",
            f"{disk / entries / 1000:.2f} KB, {inodes / entries:.3f} inodes "
            f"({files:,} files in the cache)", "", "",
            "8.5 KB, two inodes", "one inode, <= 4.2 KB")

        # 8: compressible output.
        store = os.path.join(work, "compressible")
        gib = compressible / (1 << 30)
        size_arg = f"{compressible // MIB}M"
        start = time.perf_counter()
        run([MEMO, "run", "--cache-dir", store, "--", "sh", "-c", f"yes memo | head -c {size_arg}"],
            env, stdout=subprocess.DEVNULL)
        stored_seconds = time.perf_counter() - start
        objects = os.path.join(store, "objects")
        stored = sum(os.path.getsize(p) for p in files_under(objects)) if os.path.isdir(objects) else 0
        row(f"{gib:g} GiB of compressible output (`yes memo`) stored", f"{compressible:,} B",
            f"{stored:,} B in objects/", f"{stored / compressible:.2f}x", "", "1.00x", "<= 0.05x")
        notes.append(f"Recording the {gib:g} GiB of `yes memo` took {stored_seconds:.1f} s.")
        shutil.rmtree(store)

        row(f"store {fill_count:,} distinct small results in a fresh cache, `xargs -P2`, "
            "vs `/bin/echo` alone",
            f"echo {fill_count / echo_t:,.0f} per s", f"{fill_count / fill_t:,.0f} per s",
            ratio(fill_t, echo_t), "", "375-620 per s, 4.3x", ">= 900 per s, < 3x")
        row(f"store {fill_count:,} more into the same cache (its packs exist), `xargs -P2`, "
            "vs `/bin/echo` alone",
            f"echo {fill_count / echo_t:,.0f} per s", f"{fill_count / warm_t:,.0f} per s",
            ratio(warm_t, echo_t), "", "", ">= 900 per s, < 3x")

        # ccache: a cached compile of a small C file.
        if ccache and gcc:
            src = os.path.join(work, "cc")
            os.mkdir(src)
            with open(os.path.join(src, "x.c"), "w") as f:
                f.write(HELLO_C)
            cenv = dict(env, CCACHE_DIR=os.path.join(work, "ccache-dir"))
            compile_memo = [MEMO, "run", "--cache-dir", cache, "-i", "x.c", "-o", "x.o", "--",
                            "gcc", "-c", "x.c"]
            compile_ccache = [ccache, "gcc", "-c", "x.c", "-o", "x.o"]
            for _ in range(2):
                timed(compile_ccache, cenv, src)
                timed(compile_memo, cenv, src)
                time.sleep(2.1)
            with pinned(cpu), only_hits(env, cache, "compile"):
                t = interleaved(scale_runs * 5, {"gcc": ["gcc", "-c", "x.c", "-o", "x.o"],
                                                 "ccache": compile_ccache, "memo": compile_memo},
                                cenv, src)
            row("cached `gcc -c` of a small C file vs a ccache hit", f"ccache {fmt(t['ccache'])}",
                fmt(t["memo"]), ratio(t["memo"], t["ccache"]), "",
                "0.55x", f"(gcc itself {fmt(t['gcc'])})")
        else:
            notes.append("ccache or gcc not found: no compile row (`apt-get install ccache`).")
    finally:
        os.chdir(ROOT)
        shutil.rmtree(work, ignore_errors=True)

    versions = [run([MEMO, "--version"], capture_output=True, text=True).stdout.strip()]
    if bkt:
        versions.append(run([bkt, "--version"], capture_output=True, text=True).stdout.strip())
    if ccache:
        versions.append(run([ccache, "--version"], capture_output=True, text=True).stdout.splitlines()[0])
    print(f"memo scale bench, {time.strftime('%Y-%m-%d %H:%M %Z')}, {os.cpu_count()} cores, "
          f"timed runs pinned to {'no CPU' if cpu is None else f'CPU {cpu}'}; medians of interleaved runs; "
          f"load average {load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after; "
          + ", ".join(versions))
    print()
    print("| case | baseline | memo | memo / baseline | bkt / baseline | issue 12 (before) | target |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(r)
    print()
    for note in notes:
        print(f"- {note}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""memo benchmarks: hits and misses against a baseline measured in the same run.

Run by hand from the repository root (needs a release build, ~3 GiB of free disk in the
temp dir and a few minutes):

    cargo build --release && python3 bench/bench.py

Prints a Markdown table of median wall times, their ratio to the baseline and the peak
resident memory of memo (with the command it ran). Figures go in docs/performance.md.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from release import memo_binary

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MEMO = memo_binary()
GIB = 1 << 30


def peak_rss_kib(argv, env):
    """Peak resident memory of argv (and the largest process it waited for), in KiB.

    Measured under GNU time in a run of its own: a process forked from this Python
    would count the Python image in its high-water mark."""
    gnu_time = shutil.which("time", path="/usr/bin:/bin")
    if gnu_time is None:
        return None
    with tempfile.NamedTemporaryFile("r") as out:
        subprocess.run([gnu_time, "-f", "%M", "-o", out.name] + argv, env=env,
                       stdout=subprocess.DEVNULL, check=True)
        return int(out.read().split()[-1])


def timed(argv, stdout_to_pipe=False, env=None, cwd=None):
    """Runs argv; returns its wall time in seconds."""
    start = time.perf_counter()
    if stdout_to_pipe:
        # The bytes go through a pipe to a reader, as in `memo ... | consumer`.
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, env=env, cwd=cwd)
        while proc.stdout.read(1 << 20):
            pass
    else:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, env=env, cwd=cwd)
    proc.wait()
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"bench: {argv} exited with {proc.returncode}")
    return elapsed


def alternate(runs, a, b, env, **kw):
    """Medians of a and b, measured interleaved so that drift hits both alike, and the
    peak memory of b."""
    ta, tb = [], []
    for _ in range(runs):
        ta.append(timed(a, env=env, **kw))
        tb.append(timed(b, env=env, **kw))
    return statistics.median(ta), statistics.median(tb), peak_rss_kib(b, env)


def row(name, baseline_name, base, memo, peak, target):
    ratio = memo / base
    verdict = "meets" if ratio <= target else "misses"
    memory = "n/a (no GNU time)" if peak is None else f"{peak / 1024:.1f} MiB"
    return (
        f"| {name} | {baseline_name} {fmt(base)} | {fmt(memo)} | {ratio:.2f}x "
        f"| {target}x ({verdict}) | {memory} |"
    )


def fmt(seconds):
    return f"{seconds * 1000:.2f} ms" if seconds < 1 else f"{seconds:.2f} s"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs, 256 MiB instead of 1 GiB")
    args = parser.parse_args()
    if not os.access(MEMO, os.X_OK):
        sys.exit("bench: build first: cargo build --release")
    size = GIB // 4 if args.quick else GIB
    small_runs, big_runs = (50, 2) if args.quick else (300, 5)

    work = tempfile.mkdtemp(prefix="memo-bench-")
    env = dict(os.environ, MEMO_DIR=os.path.join(work, "cache"))
    env.pop("MEMO_DISABLE", None)
    memo = [MEMO, "run", "--"]
    rows = []
    try:
        small = os.path.join(work, "small.bin")
        big = os.path.join(work, "big.bin")
        with open(small, "wb") as f:
            f.write(os.urandom(1024))
        with open(big, "wb") as f:
            for _ in range(size // (1 << 20)):
                f.write(os.urandom(1 << 20))
        # Text that compresses, for a command that does real work per byte.
        lines = size // 9
        text = os.path.join(work, "numbers.txt")
        with open(text, "wb") as f:
            subprocess.run(["seq", "1", str(lines)], stdout=f, check=True)
        gz = text + ".gz"
        with open(gz, "wb") as f:
            subprocess.run(["gzip", "-1", "-c", text], stdout=f, check=True)
        text_size = os.path.getsize(text)
        os.remove(text)

        # Hits: record once, then replay.
        for path in (small, big):
            timed(memo + ["cat", path], env=env)
        # A digest is written to disk only for a file changed 2 s ago or more (the racy
        # timestamp rule, docs/key.md): until then every hit re-hashes its objects. This
        # measures hits past that point, after one hit has recorded the digests.
        time.sleep(2.1)
        for path in (small, big):
            timed(memo + ["cat", path], env=env)
        cat_small, hit_small, peak = alternate(small_runs, ["cat", small], memo + ["cat", small], env=env)
        rows.append(row("hit, 1 KiB to /dev/null", "cat", cat_small, hit_small, peak, 1.5))
        cat_big, hit_big, peak = alternate(big_runs, ["cat", big], memo + ["cat", big], env=env)
        rows.append(row(f"hit, {size >> 20} MiB to /dev/null", "cat", cat_big, hit_big, peak, 1.2))
        cat_big, hit_big, peak = alternate(big_runs, ["cat", big], memo + ["cat", big], env=env, stdout_to_pipe=True)
        rows.append(row(f"hit, {size >> 20} MiB through a pipe", "cat", cat_big, hit_big, peak, 1.2))

        # Misses: --force runs and records every time.
        force = [MEMO, "run", "--force", "--"]
        for name, command in [
            (f"miss, gzip -dc ({text_size >> 20} MiB out)", ["gzip", "-dc", gz]),
            (f"miss, seq ({text_size >> 20} MiB out)", ["seq", "1", str(lines)]),
            (f"miss, cat ({size >> 20} MiB, no work)", ["cat", big]),
        ]:
            direct, missed, peak = alternate(max(big_runs - 2, 1), command, force + command, env=env)
            rows.append(row(name, "direct", direct, missed, peak, 1.5))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"memo bench, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores; medians of interleaved runs")
    print()
    print("| case | baseline | memo | ratio | target | peak RSS |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(r)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""memo stress run: many memo processes on one cache, random kill -9, gc/rm/clear churn.

Run by hand from the repository root after `cargo build --release`:

    python3 bench/stress.py [--workers 16] [--calls 150] [--keys 6] [--kill-rate 0.1]

Each worker calls `memo run -o out-K -- tool K` on random keys; the tool writes 200 KB of
stdout and a 100 KB output file that depend only on K. A share of the calls is killed
with SIGKILL (with their command) after a random delay. Meanwhile a churn thread runs
gc (with a small size limit), rm, clear, stats and ls. Every call that was not killed
must exit 0 with exactly the right stdout; at the end every key is checked once more,
its output file included, and the counters are compared with the calls made.
"""

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

from release import memo_binary

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MEMO = memo_binary()

TOOL = """#!/bin/sh
head -c 100000 /dev/zero | tr '\\0' "$1" > "out-$1.tmp" && mv "out-$1.tmp" "out-$1"
head -c 200000 /dev/zero | tr '\\0' "$1"
"""


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, default=16)
    p.add_argument("--calls", type=int, default=150, help="calls per worker")
    p.add_argument("--keys", type=int, default=6)
    p.add_argument("--kill-rate", type=float, default=0.1)
    args = p.parse_args()
    if not os.access(MEMO, os.X_OK):
        sys.exit("stress: build first: cargo build --release")
    work = tempfile.mkdtemp(prefix="memo-stress-")
    env = dict(os.environ, MEMO_DIR=os.path.join(work, "cache"), MEMO_MAX_SIZE="4M")
    env.pop("MEMO_DISABLE", None)
    with open(os.path.join(work, "tool"), "w") as f:
        f.write(TOOL)
    os.chmod(os.path.join(work, "tool"), 0o755)
    keys = "abcdefghijklmnop"[: args.keys]
    lock = threading.Lock()
    tally = {"ok": 0, "killed": 0, "wrong": [], "churn": 0}
    done = threading.Event()

    def call(key, kill):
        cmd = [MEMO, "run", "-o", f"out-{key}", "--", "./tool", key]
        proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)
        if kill:
            time.sleep(random.uniform(0, 0.05))
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.communicate()
            return None
        out, err = proc.communicate()
        return proc.returncode, out, err

    def worker(n):
        rng = random.Random(n)
        for _ in range(args.calls):
            key = rng.choice(keys)
            result = call(key, rng.random() < args.kill_rate)
            with lock:
                if result is None:
                    tally["killed"] += 1
                    continue
                code, out, err = result
                bad = [w for w in (b"damaged", b"unusable", b"panicked") if w in err]
                if code != 0 or out != key.encode() * 200000 or bad:
                    tally["wrong"].append((key, code, len(out), err[:200]))
                else:
                    tally["ok"] += 1

    def churn():
        rng = random.Random(99)
        while not done.is_set():
            choice = rng.choice([["gc", "--max-size", "2M"], ["stats"], ["ls"], ["rm", "--command", "./tool a"], ["clear"], ["gc", "--grace", "0s"]])
            r = subprocess.run([MEMO] + choice, cwd=work, env=env, capture_output=True)
            with lock:
                tally["churn"] += 1
                if r.returncode not in (0, 1) or b"panicked" in r.stderr:
                    tally["wrong"].append(("churn", choice, r.returncode, r.stderr[:200]))
            time.sleep(0.05)

    started = time.time()
    threads = [threading.Thread(target=worker, args=(n,)) for n in range(args.workers)]
    churner = threading.Thread(target=churn)
    churner.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    churner.join()
    for key in keys:
        code, out, err = call(key, False)
        content = open(os.path.join(work, f"out-{key}"), "rb").read()
        if code != 0 or out != key.encode() * 200000 or content != key.encode() * 100000:
            tally["wrong"].append(("final", key, code, len(out), len(content)))
    stats = subprocess.run([MEMO, "stats", "--json"], cwd=work, env=env, capture_output=True, text=True).stdout
    leftovers = [n for n in os.listdir(work) if n.startswith(".memo")]
    shutil.rmtree(work, ignore_errors=True)
    print(f"{args.workers} workers x {args.calls} calls on {args.keys} keys, kill rate {args.kill_rate}, "
          f"{time.time() - started:.0f}s")
    print(f"completed calls: {tally['ok']}, killed: {tally['killed']}, churn commands: {tally['churn']}")
    print(f"wrong results: {len(tally['wrong'])}")
    for w in tally["wrong"][:10]:
        print("  ", w)
    print(f"staging left in the work dir: {leftovers}")
    print(f"stats: {stats.strip()}")
    sys.exit(1 if tally["wrong"] else 0)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""memo --trace benchmarks: what tracing costs a miss and a hit, against baselines
measured in the same run.

Builds nothing: it measures the release build of memo as it is. Needs gcc, make and python3
(strace is used only if `memo show` does not list what a run observed). Run by hand from
the repository root (a minute or two):

    cargo build --release && python3 bench/trace.py

Cases, each a median of interleaved runs, for `gcc -c` of a small file with a local
header, `python3 -c 'import json, csv, email'` and `make -B` of a four-file project:
  (a) a traced miss (`memo run --trace --force`) against the plain command without memo,
      target <= 1.5x. An untraced miss (`memo run --force`) is shown beside it, so that
      what the tracer costs can be told from what recording costs;
  (b) a traced hit against a hit of the same command with the same inputs declared by
      hand: every file the traced run read or executed as `-i`, every file it wrote as
      `-o` (taken from `memo show`, else from strace), target <= 1.2x. `memo stats`
      checks that every timed hit was a hit.

Prints a Markdown table; figures go in docs/performance.md.
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from release import memo_binary

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MEMO = memo_binary()

HELLO_C = """#include <stdio.h>
#include <string.h>
#include "hello.h"
int greet(const char *who) { return printf("%s, %s\\n", GREETING, who) + (int)strlen(who); }
"""

MAKEFILE = """OBJS = main.o a.o b.o c.o
prog: $(OBJS)
\tcc -o prog $(OBJS)
%.o: %.c lib.h
\tcc -O1 -c -o $@ $<
"""


def timed(argv, env, cwd):
    """Runs argv; returns its wall time in seconds."""
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"bench: {argv} exited with {proc.returncode}: {proc.stderr.decode(errors='replace')}")
    if b"not cached (--trace)" in proc.stderr:
        sys.exit(f"bench: {argv} was not cacheable: {proc.stderr.decode(errors='replace')}")
    return elapsed


def interleaved(runs, commands, env, cwd):
    """Medians of each of `commands` (name -> argv), run in turn so that drift hits all
    alike."""
    times = {name: [] for name in commands}
    for _ in range(runs):
        for name, argv in commands.items():
            times[name].append(timed(argv, env, cwd))
    return {name: statistics.median(t) for name, t in times.items()}


def stats(env):
    out = subprocess.run([MEMO, "stats", "--json"], env=env, check=True,
                         capture_output=True).stdout
    return json.loads(out)


def fmt(seconds):
    return f"{seconds * 1000:.2f} ms" if seconds < 1 else f"{seconds:.2f} s"


def row(case, base_name, base, memo, target=None):
    ratio = memo / base
    goal = "" if target is None else f"{target}x ({'meets' if ratio <= target else 'misses'})"
    return f"| {case} | {base_name} {fmt(base)} | {fmt(memo)} | {ratio:.2f}x | {goal} |"


def observed_by_show(env, cwd, argv):
    """(read or executed files, written files) of the only recorded run of argv, from
    `memo show KEY`'s "observed:" section: each line with a kind word and a path.
    (Written against the lead's draft of that section; adjust if its format differs.)"""
    listing = json.loads(subprocess.run([MEMO, "ls", "--json"], env=env, check=True,
                                        capture_output=True).stdout)
    keys = [e["key"] for e in listing if e.get("command", "").endswith(" ".join(argv))]
    if not keys:
        keys = [e["key"] for e in listing]
    if len(keys) != 1:
        return None
    text = subprocess.run([MEMO, "show", keys[0]], env=env, check=True,
                          capture_output=True, text=True).stdout
    if "observed:" not in text:
        return None
    reads, writes = set(), set()
    for line in text.split("observed:", 1)[1].splitlines()[1:]:
        if not line.startswith((" ", "\t")):
            break
        words = line.split()
        paths = [w for w in words if "/" in w or os.path.exists(os.path.join(cwd, w))]
        if not paths:
            continue
        path = os.path.join(cwd, paths[0])
        if "written" in words:
            writes.add(path)
        elif ("read" in words or "executed" in words) and os.path.isfile(path):
            reads.add(path)
    return (reads, writes) if reads else None


OPEN = re.compile(r'^\d+\s+(?:open|openat|openat2)\((?:[^,"]+, )?"([^"]+)", ([A-Z0-9_|]+).*\) = (\d+)')
EXEC = re.compile(r'^\d+\s+execve\("([^"]+)".* = 0$')


def observed_by_strace(env, cwd, argv):
    """The same, from `strace -f`: files opened read-only and programs executed; files
    opened for writing that exist afterwards."""
    if shutil.which("strace") is None:
        return None
    with tempfile.NamedTemporaryFile("r") as log:
        subprocess.run(["strace", "-f", "-qq", "-e", "trace=open,openat,openat2,execve",
                        "-o", log.name] + argv, env=env, cwd=cwd, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        lines = log.read().splitlines()
    reads, writes = set(), set()
    for line in lines:
        if m := OPEN.match(line):
            path, flags = os.path.normpath(os.path.join(cwd, m.group(1))), m.group(2)
            if any(f in flags for f in ("O_WRONLY", "O_RDWR", "O_CREAT")):
                writes.add(path)
            elif os.path.isfile(path):
                reads.add(path)
        elif m := EXEC.match(line):
            reads.add(os.path.normpath(os.path.join(cwd, m.group(1))))
    reads = {p for p in reads if not p.startswith(("/proc/", "/sys/", "/dev/")) and p not in writes}
    writes = {p for p in writes if os.path.isfile(p) and p.startswith(cwd + "/")}
    return reads, writes


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="interleaved runs per case")
    parser.add_argument("--quick", action="store_true", help="5 runs per case")
    parser.add_argument(
        "--pin",
        type=int,
        metavar="CPU",
        help="run everything (memo, its tracer and the baselines) on this one CPU",
    )
    args = parser.parse_args()
    if args.pin is not None:
        # Inherited by every process started from here on.
        os.sched_setaffinity(0, {args.pin})
    runs = 5 if args.quick else args.runs
    if not os.access(MEMO, os.X_OK):
        sys.exit("bench: build first: cargo build --release")
    for tool in ("gcc", "make", "python3"):
        if shutil.which(tool) is None:
            sys.exit(f"bench: needs {tool}")

    root = tempfile.mkdtemp(prefix="memo-trace-bench-")
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": os.path.join(root, "home"),
        "MEMO_DIR": os.path.join(root, "cache"),
        "MEMO_CONFIG": "/dev/null",
    }
    os.mkdir(env["HOME"])
    probe = subprocess.run([MEMO, "run", "--trace", "--", "true"], env=env, cwd=root,
                           capture_output=True, text=True)
    if probe.returncode != 0 or "not cached" in probe.stderr:
        shutil.rmtree(root, ignore_errors=True)
        sys.exit(f"bench: memo cannot trace here: {probe.stderr.strip()}")

    cases = []
    try:
        gcc_dir = os.path.join(root, "gcc")
        os.mkdir(gcc_dir)
        with open(os.path.join(gcc_dir, "hello.c"), "w") as f:
            f.write(HELLO_C)
        with open(os.path.join(gcc_dir, "hello.h"), "w") as f:
            f.write('#define GREETING "hello"\n')
        cases.append(("gcc -c", gcc_dir, ["gcc", "-O1", "-c", "hello.c", "-o", "hello.o"]))

        py_dir = os.path.join(root, "python")
        os.mkdir(py_dir)
        cases.append(("python3 imports", py_dir, ["python3", "-c", "import json, csv, email"]))

        make_dir = os.path.join(root, "make")
        os.mkdir(make_dir)
        with open(os.path.join(make_dir, "Makefile"), "w") as f:
            f.write(MAKEFILE)
        with open(os.path.join(make_dir, "lib.h"), "w") as f:
            f.write("int a(void); int b(void); int c(void);\n")
        with open(os.path.join(make_dir, "main.c"), "w") as f:
            f.write('#include <stdio.h>\n#include "lib.h"\n'
                    'int main(void) { printf("%d\\n", a() + b() + c()); return 0; }\n')
        for name in "abc":
            with open(os.path.join(make_dir, f"{name}.c"), "w") as f:
                f.write(f'#include <string.h>\n#include "lib.h"\nint {name}(void) '
                        f'{{ return (int)strlen("{name * 40}"); }}\n')
        cases.append(("make -B (4 files)", make_dir, ["make", "-s", "-B"]))

        # A digest is kept on disk only for a file changed 2 s ago or more (docs/key.md):
        # wait, so that hits check the sources as they check the system's files.
        time.sleep(2.1)

        rows_miss, rows_hit, notes = [], [], []
        for name, cwd, argv in cases:
            traced_miss = [MEMO, "run", "--trace", "--force", "--"] + argv
            plain_miss = [MEMO, "run", "--force", "--"] + argv
            timed(argv, env, cwd)  # warm the page cache and python's bytecode
            timed(traced_miss, env, cwd)
            t = interleaved(runs, {"plain": argv, "traced": traced_miss, "untraced": plain_miss},
                            env, cwd)
            rows_miss.append(row(f"{name}: traced miss", "plain", t["plain"], t["traced"], 1.5))
            rows_miss.append(row(f"{name}: untraced miss (reference)", "plain", t["plain"],
                                 t["untraced"]))

            # The hit pair: a fresh cache directory, one traced run, then what it observed
            # declared by hand.
            hit_env = dict(env, MEMO_DIR=os.path.join(root, f"hits-{len(notes)}"))
            timed([MEMO, "run", "--trace", "--"] + argv, hit_env, cwd)
            found = observed_by_show(hit_env, cwd, argv)
            source = "memo show"
            if found is None:
                found, source = observed_by_strace(env, cwd, argv), "strace"
            if found is None:
                sys.exit("bench: neither memo show nor strace says what the run read")
            reads, writes = found
            declared = [MEMO, "run"]
            for path in sorted(reads):
                declared += ["-i", path]
            for path in sorted(writes):
                declared += ["-o", os.path.relpath(path, cwd)]
            declared += ["--"] + argv
            traced_hit = [MEMO, "run", "--trace", "--"] + argv
            timed(declared, hit_env, cwd)  # record
            timed(declared, hit_env, cwd)  # first hit: keeps the digests
            timed(traced_hit, hit_env, cwd)
            before = stats(hit_env)["hits"]
            t = interleaved(runs, {"declared": declared, "traced": traced_hit}, hit_env, cwd)
            hits = stats(hit_env)["hits"] - before
            if hits != 2 * runs:
                sys.exit(f"bench: {name}: {hits} of {2 * runs} timed calls were hits")
            rows_hit.append(row(f"{name}: traced hit", "declared hit", t["declared"],
                                t["traced"], 1.2))
            notes.append(f"{name}: {len(reads)} inputs and {len(writes)} outputs declared "
                         f"(from {source})")
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print(f"memo --trace bench, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores; "
          f"medians of {runs} interleaved runs")
    print()
    print("| case | baseline | memo | ratio | target |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows_miss + rows_hit:
        print(r)
    print()
    for n in notes:
        print(f"- {n}")


if __name__ == "__main__":
    main()

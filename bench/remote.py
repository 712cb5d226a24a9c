#!/usr/bin/env python3
"""memo shared-cache benchmarks: a remote hit and a miss's wait, against baselines measured
in the same run, with a real nginx WebDAV server on 127.0.0.1.

Builds nothing: it measures the release build of memo as it is. Needs python3 and nginx from
Debian (`apt-get install nginx-light`; the PUT/DELETE module is built in). Run by hand
from the repository root (about 2 GiB of free disk in the temp dir, a few minutes):

    cargo build --release && python3 bench/remote.py

Cases, each a median of interleaved runs:
  (a) a remote hit (the first call on "machine B", a fresh cache directory, with the
      result on the server) against a local hit (a warm cache directory), against the
      direct command, and against machine B without the shared cache (its first call, a
      miss in a fresh cache directory, runs the command), for a 1 KiB and a 200 MiB
      output;
  (b) the time the caller of a miss waits with the shared cache on against off: a true
      miss (a new --salt), which with the remote on also asks the server (a remote miss)
      and starts the detached uploader; and a miss with --force, which asks nothing and
      only starts the uploader. Between runs, an untimed `memo remote push` waits for
      the uploader, so that no upload overlaps the next run; its time is shown as when
      the upload was done. Every upload is real: the server forgets the object first.

For reference, the hit table also times `curl` fetching a copy of the same bytes from the
same server (skipped when curl is not installed): one transfer, without verifying,
storing or replaying.

Prints Markdown tables; figures go in docs/performance.md.
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from release import memo_binary

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MEMO = memo_binary()
MIB = 1 << 20

NGINX_CONF = """{load}
# One process, as the user running the bench, so that it can write its temp data dir.
daemon off;
master_process off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {root}/tmp/body;
    proxy_temp_path {root}/tmp/proxy;
    fastcgi_temp_path {root}/tmp/fastcgi;
    uwsgi_temp_path {root}/tmp/uwsgi;
    scgi_temp_path {root}/tmp/scgi;
    client_max_body_size 0;
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port};
        root {root}/data;
        location / {{
            dav_methods PUT DELETE MKCOL;
            create_full_put_path on;
        }}
    }}
}}
"""


def dav_ext_module():
    """The `load_module` line for Debian's dav-ext module, if installed. memo needs only
    PUT and DELETE, which nginx has built in; the module is loaded so that the server is
    the one the tests start."""
    for path in ("/usr/share/nginx/modules/ngx_http_dav_ext_module.so",
                 "/usr/lib/nginx/modules/ngx_http_dav_ext_module.so"):
        if os.path.isfile(path):
            return f"load_module {path};"
    enabled = "/etc/nginx/modules-enabled"
    for name in sorted(os.listdir(enabled)) if os.path.isdir(enabled) else []:
        with open(os.path.join(enabled, name)) as f:
            for line in f:
                words = line.split()
                if len(words) == 2 and words[0] == "load_module" and "dav_ext" in words[1]:
                    # Relative to Debian's nginx prefix; this nginx runs with its own.
                    return f"load_module {os.path.join('/usr/share/nginx', words[1].rstrip(';'))};"
    return ""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Nginx:
    """A private nginx serving WebDAV from a temp dir on 127.0.0.1. Killed by stop()."""

    def __init__(self, work):
        nginx = shutil.which("nginx", path="/usr/sbin:/usr/bin:/sbin:/bin:" + os.environ.get("PATH", ""))
        if nginx is None:
            sys.exit("bench: nginx is not installed (apt-get install nginx-light)")
        self.root = os.path.join(work, "nginx")
        self.data = os.path.join(self.root, "data")
        for sub in ("data", "tmp"):
            os.makedirs(os.path.join(self.root, sub))
        self.port = free_port()
        conf = os.path.join(self.root, "nginx.conf")
        with open(conf, "w") as f:
            f.write(NGINX_CONF.format(load=dav_ext_module(), root=self.root, port=self.port))
        self.proc = subprocess.Popen(
            [nginx, "-p", self.root, "-c", conf, "-e", os.path.join(self.root, "error.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            if self.proc.poll() is not None:
                sys.exit(f"bench: nginx exited with {self.proc.returncode}: {self.error_log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    sys.exit(f"bench: nginx did not listen on {self.port}: {self.error_log()}")
                time.sleep(0.05)
        self.url = f"http://127.0.0.1:{self.port}/bench/"

    def error_log(self):
        try:
            with open(os.path.join(self.root, "error.log")) as f:
                return f.read().strip()
        except OSError:
            return ""

    def clear(self):
        """Forgets everything stored: the next upload sends every object."""
        shutil.rmtree(os.path.join(self.data, "bench"), ignore_errors=True)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def timed(argv, env):
    """Runs argv with stdout to /dev/null; returns its wall time in seconds."""
    start = time.perf_counter()
    proc = subprocess.run(argv, stdout=subprocess.DEVNULL, env=env)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"bench: {argv} exited with {proc.returncode}")
    return elapsed


def peak_rss_kib(argv, env):
    """Peak resident memory of argv in a run of its own, under GNU time (see bench.py)."""
    gnu_time = shutil.which("time", path="/usr/bin:/bin")
    if gnu_time is None:
        return None
    with tempfile.NamedTemporaryFile("r") as out:
        subprocess.run([gnu_time, "-f", "%M", "-o", out.name] + argv, env=env,
                       stdout=subprocess.DEVNULL, check=True)
        return int(out.read().split()[-1])


def fmt(seconds):
    return f"{seconds * 1000:.2f} ms" if seconds < 1 else f"{seconds:.2f} s"


def memory(kib):
    return "n/a (no GNU time)" if kib is None else f"{kib / 1024:.1f} MiB"


def stats(env):
    """`memo stats --json` of the cache env names."""
    out = subprocess.run([MEMO, "stats", "--json"], env=env, capture_output=True, check=True)
    return json.loads(out.stdout)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs")
    args = parser.parse_args()
    if not os.access(MEMO, os.X_OK):
        sys.exit("bench: build first: cargo build --release")
    small_runs, big_runs = (20, 3) if args.quick else (100, 15)

    work = tempfile.mkdtemp(prefix="memo-bench-remote-")
    nginx = None
    hit_rows, miss_rows = [], []
    try:
        nginx = Nginx(work)
        base = dict(os.environ, MEMO_CONFIG=os.path.join(work, "no-config.toml"))
        for name in list(base):
            if name.startswith("MEMO_REMOTE") or name in ("MEMO_DISABLE", "MEMO_DIR"):
                del base[name]
        on = dict(base, MEMO_REMOTE=nginx.url)
        off = dict(base, MEMO_REMOTE="off")

        def cache_env(env, name):
            return dict(env, MEMO_DIR=os.path.join(work, name))

        machine_a = cache_env(on, "machine-a")
        check = subprocess.run([MEMO, "remote", "check"], env=machine_a, capture_output=True, text=True)
        if check.returncode != 0:
            sys.exit(f"bench: memo remote check failed:\n{check.stdout}{check.stderr}\n{nginx.error_log()}")

        files = {}
        for label, size in (("1 KiB", 1024), ("200 MiB", 200 * MIB)):
            path = os.path.join(work, f"out-{size}.bin")
            with open(path, "wb") as f:
                for offset in range(0, size, MIB):
                    f.write(os.urandom(min(MIB, size - offset)))
            files[label] = path

        # (a) Machine A records each result and uploads it (push waits for the upload).
        for path in files.values():
            timed([MEMO, "run", "--", "cat", path], machine_a)
        timed([MEMO, "remote", "push"], machine_a)
        # A digest is written to disk only for a file changed 2 s ago or more (the racy
        # timestamp rule, docs/key.md): measure local hits past that point, after one hit
        # has recorded the digests, as bench.py does.
        time.sleep(2.1)
        for path in files.values():
            timed([MEMO, "run", "--", "cat", path], machine_a)

        fresh = [0]

        def machine_b():
            fresh[0] += 1
            return cache_env(on, f"machine-b-{fresh[0]}")

        # For reference, the transfer alone: the same bytes fetched by curl (if installed).
        curl = shutil.which("curl")
        object_url = {}
        for label, path in files.items():
            # A copy of its own: memo keeps a 1 KiB output inside the entry, not in cas/.
            object_url[label] = f"{nginx.url}reference/{os.path.getsize(path)}"
            if curl:
                subprocess.run([curl, "-sfT", path, object_url[label]], check=True)

        for label, path in files.items():
            runs = small_runs if label == "1 KiB" else big_runs
            direct, local, remote, alone, fetch = [], [], [], [], []
            for _ in range(runs):
                if curl:
                    fetch.append(timed([curl, "-sfo", "/dev/null", object_url[label]], base))
                direct.append(timed(["cat", path], base))
                local.append(timed([MEMO, "run", "--", "cat", path], machine_a))
                env_b = machine_b()
                remote.append(timed([MEMO, "run", "--", "cat", path], env_b))
                counted = stats(env_b)
                if (counted["remote_hits"], counted["misses"]) != (1, 0):
                    sys.exit(f"bench: machine B did not replay from the server: {counted}")
                shutil.rmtree(env_b["MEMO_DIR"])
                # Machine B without the shared cache: its first call runs the command.
                env_b = cache_env(off, f"machine-b-{fresh[0]}-alone")
                alone.append(timed([MEMO, "run", "--", "cat", path], env_b))
                shutil.rmtree(env_b["MEMO_DIR"])
            peak = peak_rss_kib([MEMO, "run", "--", "cat", path], machine_b())
            d, l, r, m = (statistics.median(t) for t in (direct, local, remote, alone))
            c = fmt(statistics.median(fetch)) if fetch else "n/a (no curl)"
            hit_rows.append(
                f"| {label} | {runs} | {fmt(d)} | {fmt(l)} | {fmt(m)} | {fmt(r)} "
                f"| {r / l:.2f}x | {r / d:.2f}x | {r / m:.2f}x | {c} | {memory(peak)} |")

        # (b) Misses, remote off and on, interleaved. A true miss (a new salt) also asks
        # the server (a remote miss) before it runs the command; with --force it skips
        # both lookups, so that pair isolates what the detached upload costs the caller.
        salt = [0]

        def miss(env, path, force):
            salt[0] += 1
            argv = [MEMO, "run", "--salt", f"miss-{salt[0]}"] + (["--force"] if force else [])
            # Dirty pages of the previous run's store or upload are written back now, not
            # during the measured run.
            os.sync()
            return timed(argv + ["--", "cat", path], env)

        miss_off = cache_env(off, "miss-off")
        miss_on = cache_env(on, "miss-on")
        for label, path in files.items():
            runs = small_runs if label == "1 KiB" else big_runs
            for force, case in ((False, "miss"), (True, "miss with --force (no lookup)")):
                t_off, t_on, drained = [], [], []
                uploads_before = stats(miss_on)["uploads"] if os.path.isdir(miss_on["MEMO_DIR"]) else 0
                for i in range(runs):
                    # Alternate which goes first, so that neither always follows an upload.
                    if i % 2:
                        t_off.append(miss(miss_off, path, force))
                    # The server forgets the object, so that the upload really sends it.
                    nginx.clear()
                    t_on.append(miss(miss_on, path, force))
                    drained.append(timed([MEMO, "remote", "push"], miss_on))
                    if not i % 2:
                        t_off.append(miss(miss_off, path, force))
                uploaded = stats(miss_on)["uploads"] - uploads_before
                if uploaded != runs:
                    sys.exit(f"bench: {uploaded} uploads for {runs} misses")
                o, n, u = (statistics.median(t) for t in (t_off, t_on, drained))
                # The fastest runs too: what is left when no other process took the CPU.
                best = min(t_on) / min(t_off)
                miss_rows.append(
                    f"| {case}, `cat` of {label} | {runs} | {fmt(o)} | {fmt(n)} | {n / o:.2f}x "
                    f"| {best:.2f}x | {fmt(u)} |")
    finally:
        if nginx is not None:
            nginx.stop()
        shutil.rmtree(work, ignore_errors=True)

    print(f"memo remote bench, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, "
          "nginx WebDAV on 127.0.0.1; medians of interleaved runs")
    print()
    print("| output | runs | direct `cat` | local hit | B alone: miss (fresh cache dir, remote off) "
          "| remote hit (fresh cache dir) | remote / local | remote / direct | remote / B alone "
          "| `curl` of the object | peak RSS, remote hit |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in hit_rows:
        print(r)
    print()
    print("| case | runs | remote off | remote on | ratio | ratio of the fastest runs "
          "| upload done after (untimed push) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in miss_rows:
        print(r)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""memo shared-cache benchmarks: a remote hit and a miss's wait, against baselines measured
in the same run, with a real nginx WebDAV server on 127.0.0.1.

Builds nothing: it measures target/release/memo as it is. Needs python3 and nginx from
Debian (`apt-get install nginx-light`; the PUT/DELETE module is built in). Run by hand
from the repository root (about 2 GiB of free disk in the temp dir, a few minutes):

    cargo build --release && python3 bench/remote.py

Cases, each a median of interleaved runs:
  (a) a remote hit (the first call on "machine B", a fresh cache directory, with the
      result on the server) against a local hit (a warm cache directory) and against the
      direct command, for a 1 KiB and a 200 MiB output;
  (b) the time the caller of a miss waits with the shared cache on against off. Every run
      is a true miss (a new --salt); with the remote on it also asks the server (a
      remote miss) and starts the detached uploader. Between runs, an untimed
      `memo remote push` waits for that uploader, so that no upload overlaps the next
      run; its time is shown as when the upload was done.

Prints Markdown tables; figures go in docs/performance.md.
"""

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MEMO = os.path.join(ROOT, "target", "release", "memo")
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs")
    args = parser.parse_args()
    if not os.access(MEMO, os.X_OK):
        sys.exit("bench: build first: cargo build --release")
    small_runs, big_runs = (20, 3) if args.quick else (100, 7)

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

        for label, path in files.items():
            runs = small_runs if label == "1 KiB" else big_runs
            direct, local, remote = [], [], []
            for _ in range(runs):
                direct.append(timed(["cat", path], base))
                local.append(timed([MEMO, "run", "--", "cat", path], machine_a))
                env_b = machine_b()
                remote.append(timed([MEMO, "run", "--", "cat", path], env_b))
                shutil.rmtree(env_b["MEMO_DIR"])
            peak = peak_rss_kib([MEMO, "run", "--", "cat", path], machine_b())
            d, l, r = (statistics.median(t) for t in (direct, local, remote))
            hit_rows.append(
                f"| {label} | {runs} | {fmt(d)} | {fmt(l)} | {fmt(r)} "
                f"| {r / l:.2f}x | {r / d:.2f}x | {memory(peak)} |")

        # (b) True misses (a new salt each run), remote off and on, interleaved.
        salt = [0]

        def miss(env, path):
            salt[0] += 1
            return timed([MEMO, "run", "--salt", f"miss-{salt[0]}", "--", "cat", path], env)

        miss_off = cache_env(off, "miss-off")
        miss_on = cache_env(on, "miss-on")
        for label, path in files.items():
            runs = small_runs if label == "1 KiB" else big_runs
            t_off, t_on, drained = [], [], []
            # One untimed miss each first: the first store into a cache dir creates it.
            miss(miss_off, path)
            miss(miss_on, path)
            timed([MEMO, "remote", "push"], miss_on)
            for _ in range(runs):
                t_off.append(miss(miss_off, path))
                # The server forgets the object, so that the upload really sends it.
                nginx.clear()
                t_on.append(miss(miss_on, path))
                drained.append(timed([MEMO, "remote", "push"], miss_on))
            pending = os.path.join(miss_on["MEMO_DIR"], "remote", "pending")
            if os.path.isdir(pending) and os.listdir(pending):
                sys.exit(f"bench: uploads left pending in {pending}")
            o, n, u = (statistics.median(t) for t in (t_off, t_on, drained))
            miss_rows.append(
                f"| miss, `cat` of {label} | {runs} | {fmt(o)} | {fmt(n)} | {n / o:.2f}x | {fmt(u)} |")
    finally:
        if nginx is not None:
            nginx.stop()
        shutil.rmtree(work, ignore_errors=True)

    print(f"memo remote bench, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, "
          "nginx WebDAV on 127.0.0.1; medians of interleaved runs")
    print()
    print("| output | runs | direct `cat` | local hit | remote hit (fresh cache dir) "
          "| remote / local | remote / direct | peak RSS, remote hit |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in hit_rows:
        print(r)
    print()
    print("| case | runs | remote off | remote on | ratio | upload done after (untimed push) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in miss_rows:
        print(r)


if __name__ == "__main__":
    main()

"""Where `cargo build --release` put memo.

.cargo/config.toml builds for the host's target tuple explicitly (so that the binary can
be linked statically without the proc-macros), which puts it under
target/<tuple>/release/ rather than target/release/.
"""

import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def host_tuple():
    out = subprocess.run(["rustc", "-vV"], capture_output=True, text=True, check=True).stdout
    return next(line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("host: "))


def memo_binary():
    """The binary to measure: $MEMO_BENCH_BINARY if set (another build, e.g. one for
    x86_64-unknown-linux-musl), else the release binary: target/<host tuple>/release/memo,
    else target/release/memo."""
    chosen = os.environ.get("MEMO_BENCH_BINARY")
    if chosen:
        return os.path.abspath(chosen)
    try:
        candidate = os.path.join(ROOT, "target", host_tuple(), "release", "memo")
        if os.access(candidate, os.X_OK):
            return candidate
    except (OSError, subprocess.CalledProcessError, StopIteration):
        pass
    return os.path.join(ROOT, "target", "release", "memo")

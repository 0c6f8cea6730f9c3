"""Build the library that keeps tritonserver's timed waits on the monotonic clock (LD_PRELOAD).

    python -m synctalk_build.monotonic_waits --out DIR     # prints the library's path

Triton's Python backend times its waits on a stub on the wall clock: a step of that clock (a
virtual machine resumed or forked, an NTP step) fails the requests in flight with "Stub process
... is not healthy" and the next request to that model crashes the server. ``deploy/monotonic_waits.c``
has the mechanism and the measurements. ``synctalk_ops.serve`` starts every tritonserver with the library
preloaded (built here on first use, into ``build/native``); the image builds it with the same
command and preloads it (``deploy/Dockerfile``). Without a C compiler the server still starts,
without the library, and says so.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from synctalk_build import paths

SOURCE = paths.ROOT / "deploy" / "monotonic_waits.c"
LIBRARY = "libmonotonic_waits.so"
# the functions it replaces: the timed waits the Python backend's server side and stubs import
WRAPPED = ("pthread_mutex_timedlock", "sem_timedwait")
FLAGS = ("-O2", "-shared", "-fPIC", "-Wall", "-Wextra", "-Werror")
# where the image keeps it (deploy/Dockerfile builds it there and sets LD_PRELOAD to it)
IMAGE_LIBRARY = Path("/opt/synctalk/lib") / LIBRARY
_warned = False


def compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")


def build(out_dir: Path = paths.BUILD / "native") -> Path:
    """Compile the library into ``out_dir`` (again only when its source or flags changed)."""
    cc = compiler()
    if cc is None:
        raise RuntimeError("no C compiler (cc, gcc or $CC) to build " + LIBRARY)
    out_dir = Path(out_dir)
    target = out_dir / LIBRARY
    stamp = out_dir / (LIBRARY + ".sha256")
    digest = hashlib.sha256(SOURCE.read_bytes() + " ".join(FLAGS).encode()).hexdigest()
    if target.is_file() and stamp.is_file() and stamp.read_text() == digest:
        return target
    out_dir.mkdir(parents=True, exist_ok=True)
    partial = out_dir / f".{LIBRARY}.{os.getpid()}"
    done = subprocess.run([cc, *FLAGS, "-o", str(partial), str(SOURCE)], capture_output=True, text=True)
    if done.returncode != 0:
        partial.unlink(missing_ok=True)
        raise RuntimeError(f"{cc} could not build {LIBRARY}:\n{done.stderr}")
    partial.replace(target)  # atomic: a server starting meanwhile maps the old file or the new one
    stamp.write_text(digest)
    return target


def preloaded(env: dict) -> dict:
    """``env`` with the library (built here) first in LD_PRELOAD; unchanged, with a warning on
    stderr once, where it cannot be built."""
    global _warned
    try:
        library = build()
    except (RuntimeError, OSError) as exc:
        if not _warned:
            _warned = True
            print(
                f"warning: tritonserver starts without {LIBRARY} ({exc}); "
                "a step of the wall clock can crash it (deploy/monotonic_waits.c)",
                file=sys.stderr,
                flush=True,
            )
        return env
    others = [p for p in env.get("LD_PRELOAD", "").split(":") if p and Path(p).name != LIBRARY]
    env["LD_PRELOAD"] = ":".join([str(library), *others])
    return env


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=paths.BUILD / "native")
    args = parser.parse_args(argv)
    print(build(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

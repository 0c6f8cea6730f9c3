"""Viewers who vanish, on the network bench: what the page's server frees. Waves of aiortc viewers
behind the NAT (``devtools.netbench_peers``), each wave's link taken down once they play and kept
down until the server (``--viewer-timeout 2``) holds no peer; its open files, threads and resident
memory after the first wave and after the last, and how long each wave's peers took to be freed:

    python -m benchmarks.vanishing_viewers                  # 20 waves of 5: 100 viewers
    python -m benchmarks.vanishing_viewers --waves 40

Writes ``benchmarks/results/vanishing_viewers.json``. Needs root (network namespaces), iproute2 and
iptables (``make netbench``). The avatar: the network matrix's (``benchmarks.network_matrix``).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from benchmarks.network_matrix import costly_avatar
from devtools.browser import page_server
from devtools.netbench import NetBench
from devtools.netbench_peers import vanishing
from synctalk_build import paths
from synctalk_build.render_repository import render
from synctalk_ops.launched import free_port
from synctalk_ops.serve import TritonServer

RESULTS = paths.ROOT / "benchmarks" / "results" / "vanishing_viewers.json"
LOGS = paths.BUILD / "logs" / "vanishing-viewers"


def measure(waves: int, per_wave: int) -> dict:
    LOGS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch, NetBench() as bench:
        scratch = Path(scratch)
        repository = render("cpu", scratch / "repository" / "cpu", paths.MODELS / "tiny")
        ports = [free_port() for _ in range(3)]
        server = TritonServer(repository, *ports, log_path=LOGS / "tritonserver.log", model_control_mode="explicit")
        with server, costly_avatar(server, scratch / "costly") as avatar:
            started: list = []
            args = ["--viewer-timeout", "2", "--max-peers", str(per_wave)]
            with page_server(server.grpc_url, LOGS / "page.log", started, host="0.0.0.0", args=args) as url:
                report = vanishing(bench, url, avatar, started[0].pid, LOGS / "viewers.log", waves, per_wave)
    freed = sorted(report["freed_after_s"])
    return {
        "viewers": per_wave * len(freed),
        "per_wave": per_wave,
        "viewer_timeout_s": 2,
        "freed_after_s": {"min": freed[0], "median": freed[len(freed) // 2], "max": freed[-1]},
        **{key: report[key] for key in ("stuck", "first", "last")},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--waves", type=int, default=20)
    parser.add_argument("--per-wave", type=int, default=5, help="at most the replica's stream limit less 3")
    args = parser.parse_args()
    why = NetBench.unavailable()
    if why is not None:
        raise SystemExit(f"no network bench here: {why}")
    result = measure(args.waves, args.per_wave)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

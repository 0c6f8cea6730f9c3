"""Avatars on demand, for real: many stored tiny avatars asked for in Zipf order through
``make cluster ON_DEMAND=1`` (``python -m synctalk_ops.cluster --on-demand``), a live stream open
on one of them throughout.

    python -m benchmarks.avatars_on_demand                       # 60 avatars, 2 replicas, room for 8 each, 3 min
    python -m benchmarks.avatars_on_demand --avatars 20 --room 4 --seconds 60
    python -m benchmarks.avatars_on_demand --overhead 300     # what asking the activator costs a request

Clients (``--clients``) ask for one-frame renders of avatars drawn from a Zipf law (``--zipf``) as
fast as they are answered; another holds a live stream open on the most popular avatar, sending
0.2 s of speech every 2 s. Reported: requests served and refused, the first request of each cold
avatar (its load) and every request (p50/p99), the activator's loads and evictions, the
replicas' memory (their process trees' PSS) against their budget, and whether the stream was
served to its end. Writes ``benchmarks/results/avatars_on_demand.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

from synctalk_build import avatar_store, paths
from synctalk_build.render_repository import render
from synctalk_build.repository_manifest import avatar_store as avatar_store_of
from synctalk_client import CompositeBatchRequest, CompositeClient, synthetic
from synctalk_client.stream import LiveStream
from synctalk_ops.cluster import PORT_STRIDE
from synctalk_ops.launched import free_port, port_taken
from synctalk_ops.placement import replica_overhead, shared_generator_bytes, stored_need
from synctalk_ops.process_tree import server_processes

RESULTS = paths.ROOT / "benchmarks" / "results" / "avatars_on_demand.json"
OVERHEAD = paths.ROOT / "benchmarks" / "results" / "activator_overhead.json"
LOGS = paths.BUILD / "logs" / "avatars-on-demand"


def free_base(replicas: int) -> int:
    """A first port from which every replica's three ports (``synctalk_ops.cluster.default_ports``) are free."""
    for base in range(30000, 40000, PORT_STRIDE * replicas):
        if not any(port_taken(base + PORT_STRIDE * i + k) for i in range(replicas) for k in range(3)):
            return base
    raise SystemExit("no free ports for the replicas")


def activator_metrics(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        rows = [line.split() for line in answer.read().decode().splitlines() if not line.startswith("#")]
    return {name.removeprefix("synctalk_activator_").removesuffix("_total"): float(value) for name, value in rows}


def overhead(requests: int) -> dict:
    """What asking the activator costs a request: one tiny replica (the avatar loaded), an edge
    with the activator and one without in front of it, 1-frame requests sent in turn to each."""
    import cv2

    from synctalk_client import CompositeClient as Client
    from synctalk_ops.activator import ActivatorService
    from synctalk_ops.edge import Edge, Replica
    from synctalk_ops.serve import TritonServer

    root = Path(tempfile.mkdtemp(prefix="activator-overhead-"))
    repository = render("cpu", root / "repo", paths.MODELS / "tiny", avatar_store=root / "avatars")
    cv2.imwrite(str(root / "0.png"), np.full((64, 96, 3), 90, np.uint8))
    frames = root / "frames"
    frames.mkdir()
    (root / "0.png").rename(frames / "0.png")
    avatar_store.add(repository, "costly", frames, [16, 0, 80, 64])
    ports = (free_port(), free_port(), free_port())
    server = TritonServer(repository, *ports, log_path=LOGS / "overhead-replica.log", model_control_mode="explicit")
    audio = synthetic.speech_like_audio(1, seed=3)
    times: dict[str, list[float]] = {"without": [], "with": []}
    with server:
        replica = Replica.of(server, 0)
        asked = ActivatorService(repository, [replica], free_port(), log_path=LOGS / "overhead-activator.log")
        with asked:
            plain = Edge([replica], free_port(), free_port(), free_port(), config_path=root / "plain.yaml")
            edge = Edge(
                [replica],
                free_port(),
                free_port(),
                free_port(),
                config_path=root / "asked.yaml",
                activator=asked.address,
            )
            with plain, edge, Client(plain.grpc_url) as a, Client(edge.grpc_url) as b:
                for client in (a, b):  # warm: the avatar's load, the channels
                    client.warm("costly")
                    client.infer_batch_composite(CompositeBatchRequest.audio_only("costly", audio)).raise_for_error()
                for _ in range(requests):
                    for name, client in (("without", a), ("with", b)):
                        sent = time.perf_counter()
                        client.infer_batch_composite(
                            CompositeBatchRequest.audio_only("costly", audio)
                        ).raise_for_error()
                        times[name].append(time.perf_counter() - sent)
    row = {
        k: {
            "p50_ms": round(1000 * float(np.percentile(v, 50)), 1),
            "p99_ms": round(1000 * float(np.percentile(v, 99)), 1),
        }
        for k, v in times.items()
    }
    row["requests"] = requests
    return row


def main(argv=None) -> int:
    import cv2

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--avatars", type=int, default=60)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--room", type=int, default=8, help="avatars each replica has memory for")
    parser.add_argument("--zipf", type=float, default=1.0)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--idle-s", type=float, default=5.0)
    parser.add_argument(
        "--overhead", type=int, metavar="REQUESTS", help="instead: what asking the activator costs a request"
    )
    args = parser.parse_args(argv)
    if args.overhead:
        row = overhead(args.overhead)
        OVERHEAD.write_text(json.dumps(row, indent=2) + "\n")
        print(json.dumps(row, indent=2))
        return 0
    root = Path(tempfile.mkdtemp(prefix="avatars-on-demand-"))
    models = paths.MODELS / "tiny"
    repository = render("cpu", root / "repo", models, avatar_store=root / "avatars")
    frames = root / "frames"
    frames.mkdir()
    cv2.imwrite(str(frames / "0.png"), np.full((64, 96, 3), 90, np.uint8))
    names = [f"zipf{i}" for i in range(args.avatars)]
    started = time.monotonic()
    for name in names:
        avatar_store.add(repository, name, frames, [16, 0, 80, 64])
    stored_s = time.monotonic() - started
    need = stored_need(avatar_store_of(repository) / names[0], shared_generator_bytes(repository))
    budget = need * args.room + need // 2
    grpc, http, admin, activator = free_port(), free_port(), free_port(), free_port()
    described = root / "replicas.json"
    command = [
        sys.executable,
        *("-m", "synctalk_ops.cluster", "--repository", str(repository), "--on-demand"),
        *("--replicas", str(args.replicas), "--replica-memory", str(budget), "--idle-s", f"{args.idle_s:g}"),
        *("--grpc-port", str(grpc), "--http-port", str(http), "--admin-port", str(admin)),
        *("--activator-port", str(activator), "--replica-ports", str(free_base(args.replicas))),
        *("--replicas-file", str(described), "--logs", str(LOGS)),
    ]
    out = root / "cluster.out"
    with open(out, "w") as log:
        process = subprocess.Popen(command, cwd=paths.ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while "tritonserver ready" not in out.read_text():
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the cluster did not start: {out.read_text()}")
            time.sleep(0.25)
        pids = [r["pid"] for r in json.loads(described.read_text())["replicas"]]
        url = f"127.0.0.1:{grpc}"
        weights = 1.0 / np.arange(1, args.avatars + 1) ** args.zipf
        weights /= weights.sum()
        outcomes: list[tuple[str, float, bool, str, bool]] = []  # avatar, seconds, served, error, first ask
        asked: set[str] = set()
        lock = threading.Lock()
        stop = threading.Event()
        audio = synthetic.speech_like_audio(1, seed=1)
        peak = [0.0] * len(pids)

        def client(seed: int) -> None:
            rng = np.random.default_rng(seed)
            with CompositeClient(url, timeout_s=60, busy_retries=0) as c:
                while not stop.is_set():
                    avatar = names[int(rng.choice(args.avatars, p=weights))]
                    with lock:
                        first = avatar not in asked
                        asked.add(avatar)
                    sent = time.perf_counter()
                    response = c.infer_batch_composite(CompositeBatchRequest.audio_only(avatar, audio))
                    outcomes.append((avatar, time.perf_counter() - sent, response.success, response.error, first))

        stream_frames, stream_error = [0], [""]

        def streamer() -> None:
            chunk = synthetic.speech_like_audio(5, seed=2)
            try:
                with LiveStream(url, names[0], timeout_s=60) as live:
                    while not stop.is_set():
                        stream_frames[0] += len(live.send(chunk))
                        stop.wait(2.0)
                    stream_frames[0] += len(live.end())
            except Exception as exc:  # noqa: BLE001 - reported
                stream_error[0] = str(exc)

        def memory() -> None:
            while not stop.is_set():
                for i, pid in enumerate(pids):
                    try:
                        peak[i] = max(peak[i], sum(server_processes(pid, pss=True).values()) / 2**30)
                    except Exception:  # noqa: BLE001 - a process gone between two looks
                        continue
                stop.wait(2.0)

        threads = [threading.Thread(target=client, args=(s,)) for s in range(args.clients)]
        threads += [threading.Thread(target=streamer), threading.Thread(target=memory)]
        for t in threads:
            t.start()
        time.sleep(args.seconds)
        stop.set()
        for t in threads:
            t.join(120)
        counted = activator_metrics(activator)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(120)
    cold = [s for _, s, ok, _, first in outcomes if ok and first]
    every = [s for _, s, ok, _, _ in outcomes if ok]
    errors = sorted({e for _, _, ok, e, _ in outcomes if not ok})
    shared, reserve = replica_overhead(repository)
    row = {
        "date": datetime.date.today().isoformat(),
        "avatars": args.avatars,
        "stored_in_s": round(stored_s, 1),
        "replicas": args.replicas,
        "room": args.room,
        "zipf": args.zipf,
        "seconds": args.seconds,
        "requests": len(outcomes),
        "served": sum(1 for o in outcomes if o[2]),
        "errors": errors[:5],
        "avatars_asked": len(asked),
        "cold_first_p50_s": round(float(np.percentile(cold, 50)), 2) if cold else None,
        "cold_first_p99_s": round(float(np.percentile(cold, 99)), 2) if cold else None,
        # every request, the loads after an eviction included
        "all_p50_s": round(float(np.percentile(every, 50)), 3) if every else None,
        "all_p99_s": round(float(np.percentile(every, 99)), 3) if every else None,
        "activator": counted,
        "budget_gb": round(budget / 2**30, 2),
        "replica_gb_peak": [round(p, 2) for p in peak],
        "replica_gb_allowed": round((budget + shared) / 2**30, 2),
        "reserve_gb": round(reserve / 2**30, 2),
        "stream_frames": stream_frames[0],
        "stream_error": stream_error[0],
    }
    RESULTS.write_text(json.dumps(row, indent=2) + "\n")
    print(json.dumps(row, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

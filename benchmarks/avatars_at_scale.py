"""Avatars on demand at scale, simulated: many stored avatars, few in use, the activator's policy.

    python -m benchmarks.avatars_at_scale                    # 10,000 avatars, the table for benchmarks/README.md
    python -m benchmarks.avatars_at_scale --avatars 1000 --replicas 4 --room 25

Sessions arrive at random (Poisson, ``--rate`` a second), each for an avatar drawn from a Zipf law
over the stored avatars (``--zipf``: the popular few, the long tail), and last an exponential time
(``--session-s`` on average) during which their avatar is in use. The policy is
``synctalk_ops.activator``'s, decision for decision: a session goes to a replica holding its avatar
(the first in the avatar's rendezvous ranking, ``synctalk_ops.placement.ranking``); where none
does, the avatar is loaded on the first replica of its ranking with room (``--room`` avatars a
replica), made by unloading that replica's least recently used avatars that are idle (no session,
none for ``--idle-s``); an avatar in use is never unloaded, and where no replica has room the
session is refused. A session's first frame: the measured first frame of a loaded avatar, plus the
measured load where its avatar was cold (``benchmarks/results/cold_start.json``: CPU, 2 cores).

What the edge holds either way: the endpoint files Envoy reads with the avatars placed on the
replicas (today's placement routing: every avatar listed on its holders) against those of avatars
on demand (each replica by name), rendered by ``synctalk_ops.edge`` for the same replicas.
Writes ``benchmarks/results/avatars_at_scale.json``.
"""

from __future__ import annotations

import argparse
import datetime
import heapq
import json
import random
from collections import OrderedDict

import numpy as np
import yaml

from synctalk_build import paths
from synctalk_ops.edge.clusters import endpoints_of
from synctalk_ops.edge.replicas import Replica
from synctalk_ops.placement import ranking

RESULTS = paths.ROOT / "benchmarks" / "results" / "avatars_at_scale.json"
COLD = paths.ROOT / "benchmarks" / "results" / "cold_start.json"


def measured(variant: str) -> tuple[list[float], list[float], float]:
    """(load seconds, first-frame seconds, host memory GB of a loaded avatar) measured by benchmarks.cold_start."""
    rows = json.loads(COLD.read_text())[variant]
    loaded = [r["host_mb"]["loaded"] - r["host_mb"]["before"] for r in rows]
    return [r["load_s"] for r in rows], [r["first_frame_s"] for r in rows], float(np.mean(loaded)) / 1024


def simulate(
    avatars: int,
    replicas: int,
    room: int,
    zipf: float,
    rate: float,
    session_s: float,
    idle_s: float,
    seconds: float,
    variant: str,
    seed: int = 0,
) -> dict:
    rng = random.Random(seed)
    loads_s, frames_s, gb = measured(variant)
    names = [f"replica-{i}" for i in range(replicas)]
    weights = 1.0 / np.arange(1, avatars + 1) ** zipf
    cumulative = np.cumsum(weights / weights.sum())
    order_of: dict[int, list[str]] = {}
    held = {name: OrderedDict() for name in names}  # avatar: when last asked for (LRU order)
    sessions = {name: {} for name in names}  # avatar: sessions open on it
    ends: list[tuple[float, str, int]] = []  # (when, replica, avatar)
    first_frames, loads, evictions, refused, hits, peak = [], 0, 0, 0, 0, 0
    now = 0.0
    while now < seconds:
        now += rng.expovariate(rate)
        while ends and ends[0][0] <= now:
            _, name, avatar = heapq.heappop(ends)
            sessions[name][avatar] -= 1
        avatar = int(np.searchsorted(cumulative, rng.random()))
        order = order_of.setdefault(avatar, ranking(f"avatar{avatar}", names))
        holder = next((n for n in order if avatar in held[n]), None)
        cold = holder is None
        if cold:
            for name in order:
                lru = held[name]
                for candidate in list(lru):  # least recently used first
                    if len(lru) < room:
                        break
                    if sessions[name].get(candidate, 0) == 0 and now - lru[candidate] >= idle_s:
                        del lru[candidate]
                        evictions += 1
                if len(lru) < room:
                    holder = name
                    break
            if holder is None:
                refused += 1
                continue
            loads += 1
        else:
            hits += 1
        held[holder][avatar] = now
        held[holder].move_to_end(avatar)
        sessions[holder][avatar] = sessions[holder].get(avatar, 0) + 1
        heapq.heappush(ends, (now + rng.expovariate(1 / session_s), holder, avatar))
        first_frames.append(rng.choice(frames_s) + (rng.choice(loads_s) if cold else 0.0))
        peak = max(peak, sum(len(h) for h in held.values()))
    served = hits + loads
    p = np.percentile(first_frames, [50, 99]) if first_frames else [0, 0]
    return {
        "avatars": avatars,
        "replicas": replicas,
        "room": room,
        "zipf": zipf,
        "rate": rate,
        "session_s": session_s,
        "seconds": seconds,
        "variant": variant,
        "sessions": served + refused,
        "hit_rate": round(hits / served, 3) if served else 0.0,
        "loads_per_s": round(loads / seconds, 3),
        "evictions_per_s": round(evictions / seconds, 3),
        "refused": refused,
        "first_frame_p50_s": round(float(p[0]), 2),
        "first_frame_p99_s": round(float(p[1]), 2),
        "distinct_avatars": len(order_of),
        "resident_peak": peak,
        "resident_gb_peak": round(peak * gb, 1),
    }


def edge_files(avatars: int, replicas: int, factor: int = 2) -> dict:
    """Bytes of one class's endpoint file: avatars placed (each on ``factor`` holders, listed) and on demand."""
    names = [f"replica-{i}" for i in range(replicas)]
    placed: dict[str, list[str]] = {n: [] for n in names}
    for a in range(avatars):
        for name in ranking(f"avatar{a}", names)[:factor]:
            placed[name].append(f"avatar{a}")
    listed = [Replica(n, f"10.0.0.{i + 1}", 8001, 8000, tuple(placed[n])) for i, n in enumerate(names)]
    plain = [Replica(n, f"10.0.0.{i + 1}", 8001, 8000) for i, n in enumerate(names)]
    return {
        "placed_bytes": len(yaml.safe_dump(endpoints_of("grpc_bulk", listed, "grpc"))),
        "on_demand_bytes": len(yaml.safe_dump(endpoints_of("grpc_bulk", plain, "grpc"))),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--avatars", type=int, default=10_000)
    parser.add_argument("--replicas", type=int, default=8)
    parser.add_argument("--room", type=int, nargs="+", default=[25, 50, 100], help="avatars a replica holds")
    parser.add_argument("--zipf", type=float, nargs="+", default=[0.8, 1.1])
    parser.add_argument("--rate", type=float, default=2.0, help="sessions a second")
    parser.add_argument("--session-s", type=float, default=60.0)
    parser.add_argument("--idle-s", type=float, default=30.0)
    parser.add_argument("--seconds", type=float, default=3600.0, help="simulated time")
    parser.add_argument("--variant", choices=("tiny", "full"), default="full")
    args = parser.parse_args(argv)
    rows = [
        simulate(
            args.avatars, args.replicas, room, zipf, args.rate, args.session_s, args.idle_s, args.seconds, args.variant
        )
        for zipf in args.zipf
        for room in args.room
    ]
    files = edge_files(args.avatars, args.replicas)
    RESULTS.write_text(
        json.dumps({"date": datetime.date.today().isoformat(), "rows": rows, "edge_files": files}, indent=2) + "\n"
    )
    print(
        f"| zipf | room a replica | hit rate | loads/s | refused | first frame p50 / p99 | avatars asked for | "
        f"resident at peak ({args.variant}) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['zipf']} | {r['room']} | {r['hit_rate']:.1%} | {r['loads_per_s']} | {r['refused']} of "
            f"{r['sessions']} | {r['first_frame_p50_s']} / {r['first_frame_p99_s']} s | {r['distinct_avatars']} | "
            f"{r['resident_peak']} ({r['resident_gb_peak']} GB) |"
        )
    print(
        f"\nedge endpoint file, one class, {args.avatars} avatars on {args.replicas} replicas: placed "
        f"{files['placed_bytes'] / 1024:.0f} KiB, on demand {files['on_demand_bytes'] / 1024:.1f} KiB"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Overload: requests offered open loop (they arrive at a fixed rate whether or not earlier ones
were answered) at multiples of the server's unloaded throughput, each with a deadline and no busy
retries, and what comes of them: goodput, refusals and how fast they come, the latency of the
admitted, the server's peak memory, and the generator work done after the clients stopped.

The requests are an avatar's (audio only, 8 frames; its generator keeps its arena, as the shared
one does): a ``demo`` request carries 20 MB of ``VISUAL`` at 8 frames, and a load generator on
the server's own two cores spends them serialising those instead of offering load (measured: at
8x, 256 MB/s of requests built and sent by the client starved the server). ``make bench`` runs it
(``benchmarks.bench``: the full model, 1x, 2x and 8x capacity, with the door and bounded queues,
and without them, "before"); ``tests/e2e/test_overload.py`` uses the same offering with the tiny
models.

    python -m benchmarks.overload --variant full --levels 1 2 8 --seconds 15
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from synctalk_build import avatar_store, paths
from synctalk_build.render_model import LATENCY_TARGET_S, admitted_requests, read_config, write_config
from synctalk_build.render_repository import render
from synctalk_client import CompositeBatchRequest, CompositeClient, synthetic
from synctalk_common import contract
from synctalk_ops.process_tree import server_processes
from synctalk_ops.serve import TritonServer


@dataclass
class Outcome:
    served: bool
    category: str | None
    error: str
    latency_s: float


def unloaded_throughput(url: str, request: CompositeBatchRequest, clients: int = 2, seconds: float = 3.0) -> float:
    """Requests a second served to ``clients`` closed-loop clients."""
    served, stop = [], time.monotonic() + seconds

    def loop():
        with CompositeClient(url, stage_timings=False, timeout_s=60) as client:
            while time.monotonic() < stop:
                client.infer_batch_composite(request).raise_for_error()
                served.append(1)

    threads = [threading.Thread(target=loop) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(served) / seconds


class MemorySampler(threading.Thread):
    """The resident memory of the server and its stubs, sampled until stopped (RSS: cheap to read,
    where PSS would cost the server's cores; pages two processes share count twice)."""

    def __init__(self, pid: int, interval_s: float = 0.5):
        super().__init__(daemon=True)
        self.pid, self.interval_s, self.samples, self.done = pid, interval_s, [], threading.Event()

    def run(self):
        while not self.done.wait(self.interval_s):
            self.samples.append(sum(server_processes(self.pid).values()))

    def stop(self) -> int:
        self.done.set()
        self.join()
        return max(self.samples, default=0)


def offer(
    url: str,
    request: CompositeBatchRequest,
    rate: float,
    seconds: float,
    deadline_s: float,
    during: Callable[[], object] | None = None,
    clients: int = 4,
):
    """Offer ``request`` at ``rate`` a second for ``seconds``; ``during``, if given, runs once,
    beside the offered requests, after the first second. Returns the outcomes and what ``during``
    returned (or raised)."""
    outcomes, lock = [], threading.Lock()
    pool_clients = [
        CompositeClient(url, timeout_s=deadline_s, stage_timings=False, busy_retries=0) for _ in range(clients)
    ]

    def one(i: int) -> None:
        sent = time.perf_counter()
        response = pool_clients[i % clients].infer_batch_composite(request)
        outcome = Outcome(response.success, response.error_category, response.error or "", time.perf_counter() - sent)
        with lock:
            outcomes.append(outcome)

    side = None
    with ThreadPoolExecutor(max_workers=32) as pool:
        start, i = time.monotonic(), 0
        while time.monotonic() - start < seconds:
            pool.submit(one, i)
            i += 1
            if during is not None and side is None and time.monotonic() - start >= 1.0:
                side = pool.submit(during)
            time.sleep(max(0.0, start + i / rate - time.monotonic()))
    for client in pool_clients:
        client.close()
    return outcomes, (side.result() if side is not None else None)


def summarize(outcomes: list[Outcome], seconds: float, unloaded: float) -> dict:
    served = sorted(o.latency_s for o in outcomes if o.served)
    busy = sorted(o.latency_s for o in outcomes if o.category == contract.CATEGORY_BUSY)
    other = [o for o in outcomes if not o.served and o.category != contract.CATEGORY_BUSY]

    def quantile(values, q):
        return values[min(len(values) - 1, int(q * len(values)))] if values else None

    goodput = len(served) / seconds
    return {
        "offered": len(outcomes),
        "served": len(served),
        "goodput_per_s": round(goodput, 3),
        "goodput_of_unloaded": round(goodput / unloaded, 3) if unloaded else None,
        "served_p50_s": quantile(served, 0.5),
        "served_p99_s": quantile(served, 0.99),
        "refused_busy": len(busy),
        "refused_p50_s": quantile(busy, 0.5),
        "refused_max_s": busy[-1] if busy else None,
        "failed_otherwise": len(other),
        "failures": sorted({o.error[:160] for o in other})[:5],
    }


def generator_executions(client: CompositeClient) -> int:
    """Executions of every generator so far (the shared one and avatars'), from Triton's statistics."""
    stats = client._triton.get_inference_statistics(as_json=True)["model_stats"]
    return sum(
        int(m.get("execution_count", 0))
        for m in stats
        if m["name"] == contract.GENERATOR_MODEL or m["name"].endswith(contract.AVATAR_GENERATOR_SUFFIX)
    )


def without_admission(repository: Path) -> None:
    """The repository as it was before the door: no gate, no queue policy, no rate limiter."""
    for config_path in repository.glob("*/config.pbtxt"):
        config = read_config(config_path)
        if "admission_frames" in config.parameters:
            config.parameters["admission_frames"].string_value = "0"
        if config.HasField("dynamic_batching"):
            config.dynamic_batching.ClearField("default_queue_policy")
        for group in config.instance_group:
            group.ClearField("rate_limiter")
        write_config(config, config_path, "benchmarks.overload: before the door (no admission, unbounded queues)")


AVATAR = "overload"


def measure(variant: str, levels: list[float], seconds: float, before: bool, batch: int = 8, port: int = 18100) -> dict:
    request = CompositeBatchRequest.audio_only(AVATAR, synthetic.speech_like_audio(batch, seed=0))
    deadline_s = LATENCY_TARGET_S["cpu"]
    name = "before" if before else "after"
    repository = render("cpu", paths.BUILD / "overload" / name / "cpu", paths.MODELS / variant)
    frames, boxes = synthetic.avatar_background(1, 640, 360)
    folder = paths.BUILD / "overload" / "avatar"
    folder.mkdir(parents=True, exist_ok=True)
    import cv2

    cv2.imwrite(str(folder / "0.png"), frames[0][..., ::-1])
    avatar_store.add(
        repository, AVATAR, folder, boxes[0].tolist(), options=avatar_store.AvatarOptions(replace=True, arena=True)
    )
    if before:
        without_admission(repository)
    log = paths.BUILD / "logs" / f"overload-{name}-tritonserver.log"
    result = {"deadline_s": deadline_s, "batch": batch, "capacity_clients": admitted_requests("cpu"), "levels": {}}
    with TritonServer(repository, port, port + 1, port + 2, log_path=log) as server:  # loads the avatar too
        with CompositeClient(server.grpc_url, timeout_s=120) as client:
            for _ in range(2):
                client.infer_batch_composite(request).raise_for_error()
            # the capacity: as many closed-loop clients as the door admits requests (none refused)
            clients = admitted_requests("cpu")
            unloaded = unloaded_throughput(server.grpc_url, request, clients, max(4.0, seconds / 3))
            result["unloaded_per_s"] = round(unloaded, 3)
            result["memory_idle_bytes"] = sum(server_processes(server.process.pid).values())
            for level in levels:
                print(f"  {name}: {level:g}x capacity for {seconds:g} s ...", flush=True)
                sampler = MemorySampler(server.process.pid)
                sampler.start()
                outcomes, _ = offer(server.grpc_url, request, level * unloaded, seconds, deadline_s)
                stopped = generator_executions(client)  # every client has its answer, or gave up
                time.sleep(3.0)
                row = summarize(outcomes, seconds, unloaded)
                row["peak_memory_bytes"] = sampler.stop()
                row["generator_runs_after_clients_stopped"] = generator_executions(client) - stopped
                alive = server.process.poll() is None
                row["server_alive"] = alive
                result["levels"][f"{level:g}x"] = row
                print("   ", json.dumps(row), flush=True)
                if not alive:
                    break
    return result


def _request(batch: int) -> CompositeBatchRequest:
    crops = synthetic.face_crops(batch, seed=0)
    return CompositeBatchRequest.from_arrays(
        contract.DEFAULT_MODEL_ID, crops, synthetic.masked(crops), synthetic.speech_like_audio(batch, seed=0)
    )


def run(variant: str = "full", levels=(1, 2, 8), seconds: float = 15.0, before_levels=(1, 2)) -> dict:
    """With the door and the bounded queues; and without them ("before") at ``before_levels``
    only: at 8x the unbounded server grows until the kernel kills the generator (issue 20)."""
    report = {"variant": variant, "seconds": seconds, "after": measure(variant, list(levels), seconds, False)}
    if before_levels:
        report["before"] = measure(variant, list(before_levels), seconds, True)
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="full")
    parser.add_argument("--levels", type=float, nargs="+", default=[1, 2, 8])
    parser.add_argument("--before-levels", type=float, nargs="*", default=[1, 2])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--out", type=Path, default=paths.BUILD / "overload" / "report.json")
    args = parser.parse_args(argv)
    report = run(args.variant, args.levels, args.seconds, args.before_levels)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "levels"}, indent=2, default=str)[:4000])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

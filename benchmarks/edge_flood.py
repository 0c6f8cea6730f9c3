"""A flood of heavy requests, straight to Triton and through the edge, side by side in one run.

A dozen eager clients, each sending the reference's own 32-frame ``demo`` request (78 MB) again as
soon as it is answered, no busy retries, for ``--seconds``; beside them one light client sending
1-frame requests the same way, and a live stream opened mid-flood (``live_process``). The same
server takes the flood twice: once straight (its gRPC port), once through the edge
(``synctalk_ops.edge``, in front of it). For each: the heavy requests served a second, how fast
refusals come (from the call to the refusal, the client's own serialisation included: that is
what a client waits), the light client's latency, the server's peak resident
memory over its idle, and the edge's CPU per 1,000 requests. Before the flood, unloaded: what the
edge adds to a 1-frame request and to a live stream's frame (``added_latency``).

``--levels``: the same heavy requests offered open loop (they arrive at a fixed rate whether or not
earlier ones were answered) at multiples of the server's unloaded rate of them, beside the light
client, straight and through the edge in turn at each level (``offered``): goodput, refusals and
how fast they come, the light client's latency, the server's peak memory over idle.

``--prebuilt``: each client builds and serialises its request once and sends the bytes again
(``RawClient``: its own CPU per request next to nothing), and goodput is counted against what one
client alone gets served through the edge (15 s before the floods and 15 s after, their mean:
the host drifts by a tenth from server to server): the heavy requests answered within the flood's
window (not those sent in it and answered after it, the edge's line draining), and every class's
frames answered in it (the light client's and the live stream's too); ``--nice``: one flood per
CPU priority of the clients; ``--settings now before``: the edge and the server as
``synctalk-serve`` runs them, then as they were before the edge's waiting line and the server's
own share of the cores (``run``), each on a server of its own (``heavy-only``: as ``now``, the
heavy clients alone, as the issue's flood was). Through the edge, Envoy's counters and its access
log's timings of the bulk requests (refused, admitted) go in the row.

    python -m benchmarks.edge_flood --variant full --clients 12 --seconds 45
    python -m benchmarks.edge_flood --variant full --clients 0 --levels 1 2 8 --seconds 20
    python -m benchmarks.edge_flood --variant full --clients 12 --seconds 45 --prebuilt --edge-only \
        --nice 0 19 --settings now before
"""

from __future__ import annotations

import argparse
import copy
import json
import multiprocessing
import os
import time
from functools import partial
from pathlib import Path

from benchmarks.overload import MemorySampler, _request
from synctalk_build import avatar_store, paths
from synctalk_build.render_model import read_config, write_config
from synctalk_build.render_repository import render
from synctalk_client import CompositeClient, synthetic
from synctalk_client.stream import LiveStream
from synctalk_common import contract
from synctalk_ops import cpu_share
from synctalk_ops.edge import Edge, Replica, class_limits
from synctalk_ops.edge.bootstrap import connection_managers
from synctalk_ops.edge.clusters import cluster_names, cluster_of, http2_upstream
from synctalk_ops.edge.limits import WAITING_PER_REPLICA
from synctalk_ops.launched import free_port
from synctalk_ops.process_tree import server_processes
from synctalk_ops.serve import TritonServer

TICKS = 100  # /proc/<pid>/stat's clock ticks a second (Linux)


def quantile(values: list[float], q: float) -> float | None:
    values = sorted(values)
    return round(values[min(len(values) - 1, int(q * len(values)))], 3) if values else None


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


class SdkClient:
    """The SDK's client sending one request again: built once, serialised by the SDK at each call,
    no retries."""

    def __init__(self, url: str, frames: int, timeout_s: float):
        self.request = _request(frames)
        self.client = CompositeClient(url, timeout_s=timeout_s, stage_timings=False, busy_retries=0, retries=0)

    def send(self) -> tuple[str, str]:
        """(result, error): "served", the SDK's error category, or "failed"."""
        response = self.client.infer_batch_composite(self.request)
        return ("served" if response.success else (response.error_category or "failed")), response.error

    def close(self) -> None:
        self.client.close()


def client_process(
    url: str, frames: int, start_at: float, stop_at: float, results, prebuilt: bool = False, nice: int = 0
) -> None:
    """One client, a process of its own (as a dozen real clients are: no GIL shared between them),
    at ``nice`` CPU priority: builds its request (``prebuilt``: serialised once, ``RawClient``; else
    ``SdkClient``), then from ``start_at`` sends it again as soon as it is answered, until ``stop_at``
    (time.time())."""
    os.nice(nice)
    client = (RawClient if prebuilt else SdkClient)(url, frames, 25.0)
    rows = []
    time.sleep(max(0.0, start_at - time.time()))
    try:
        while time.time() < stop_at:
            sent = time.perf_counter()
            result, error = client.send()
            rows.append((result, time.perf_counter() - sent, error[:200], time.time()))
    finally:
        client.close()
    results.put(("heavy" if frames > 1 else "light", rows))


class RawClient:
    """One request built and serialised once (``ModelInferRequest`` bytes), sent again as it is on
    a plain gRPC channel with the SDK's edge headers: a client whose own CPU per request is next to
    nothing, so what a flood measures is the serving side (``--prebuilt``)."""

    def __init__(self, url: str, frames: int, timeout_s: float):
        import grpc
        from tritonclient.grpc import InferRequestedOutput, service_pb2
        from tritonclient.grpc._utils import _get_inference_request

        from synctalk_client.client import _grpc_inputs

        request = _request(frames)
        with CompositeClient(url, stage_timings=False) as client:
            takes, optional = client._inputs_of(request.model_id), client._optional_of(request.model_id)
        inputs = _grpc_inputs(request.tensors(takes, optional=optional))
        self.body = _get_inference_request(
            request.model_id,
            inputs,
            "",
            "",
            [InferRequestedOutput(contract.JPEG.name)],
            0,
            False,
            False,
            0,
            int(timeout_s * 1e6),
            None,
        ).SerializeToString()
        self.metadata = tuple(contract.edge_headers(request.model_id, frames).items())
        self.timeout_s, self.frames = timeout_s, frames
        self.channel = grpc.insecure_channel(
            url, options=[("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
        )
        self.call = self.channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=None,
            response_deserializer=service_pb2.ModelInferResponse.FromString,
        )

    def send(self) -> tuple[str, str]:
        """(result, error): "served", the SDK's busy category, or "failed"."""
        import grpc

        try:
            response = self.call(self.body, timeout=self.timeout_s, metadata=self.metadata)
        except grpc.RpcError as exc:
            code, message = exc.code(), exc.details() or ""
            busy = code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED)
            return (contract.CATEGORY_BUSY if busy else "failed"), f"{code.name}: {message}"
        served = len(response.raw_output_contents) == 1 and response.outputs[0].shape[0] == self.frames
        return ("served" if served else "failed"), "" if served else "wrong answer"

    def close(self) -> None:
        self.channel.close()


LIVE_AT_S, LIVE_SPEECH_S = 15.0, 2.0  # a live stream opened this far into the flood, this long


def live_process(url: str, start_at: float, stop_at: float, results) -> None:
    """One live stream to the benchmark's avatar, opened ``LIVE_AT_S`` into the flood: its audio
    (``LIVE_SPEECH_S`` of speech) sent at real time, a 40 ms chunk each 40 ms, then ended. Each
    frame's delay (its arrival after the chunk that completed it was sent), when its first frame
    came after its first chunk, and its last after its end; or the error that ended it. (With the
    full model a stream on 2 cores costs more than real time: a longer one would take the flood's
    share of the cores rather than show whether streams are let through.)"""
    frames = round(LIVE_SPEECH_S * contract.FPS)
    audio = synthetic.speech_like_audio(frames, seed=2)
    chunk = contract.SAMPLES_PER_FRAME
    rows, errors = [], []

    def arrived(got, error) -> None:
        now, wall = time.perf_counter(), time.time()
        rows.extend((f.index, now - f.sent_at, now, wall) for f in got)
        if error is not None:
            errors.append(str(error)[:200])

    time.sleep(max(0.0, start_at + LIVE_AT_S - time.time()))
    begun = ended = time.perf_counter()
    try:
        with LiveStream(url, AVATAR, timeout_s=120) as live:
            for i in range(frames - 1):
                time.sleep(max(0.0, begun + i / contract.FPS - time.perf_counter()))
                live.send_async(audio[i * chunk : (i + 1) * chunk], arrived)
            ended = time.perf_counter()
            arrived(live.end(audio[(frames - 1) * chunk :]), None)
    except Exception as exc:  # the stream's end, as the row says
        errors.append(f"{type(exc).__name__}: {exc}"[:200])
    results.put(
        (
            "live",
            {
                "frames_sent": frames,
                "frames_served": len({i for i, *_ in rows}),
                "frames_served_in_window": len({i for i, _, _, wall in rows if wall <= stop_at}),
                "delay_p50_s": quantile([d for _, d, _, _ in rows], 0.5),
                "delay_p99_s": quantile([d for _, d, _, _ in rows], 0.99),
                "first_frame_s": round(min(t for _, _, t, _ in rows) - begun, 3) if rows else None,
                "last_frame_after_end_s": round(max(t for _, _, t, _ in rows) - ended, 3) if rows else None,
                "errors": errors[:3],
            },
        )
    )


def open_loop_process(url: str, frames: int, times: list[float], deadline_s: float, results) -> None:
    """Sends its request at each of ``times`` (time.time()), whether or not the earlier ones were
    answered (a thread each), with a deadline and no retries."""
    from concurrent.futures import ThreadPoolExecutor

    request = _request(frames)
    rows = []

    with CompositeClient(url, timeout_s=deadline_s, stage_timings=False, busy_retries=0, retries=0) as client:

        def one(at: float) -> None:
            time.sleep(max(0.0, at - time.time()))
            sent = time.perf_counter()
            response = client.infer_batch_composite(request)
            result = "served" if response.success else (response.error_category or "failed")
            rows.append((result, time.perf_counter() - sent, response.error[:200], time.time()))

        with ThreadPoolExecutor(max_workers=max(1, len(times))) as pool:
            list(pool.map(one, times))
    results.put(("heavy", rows))


def unloaded_rate(url: str, seconds: float) -> float:
    """Heavy requests a second one closed-loop client gets served, alone (the CPU profile's edge
    admits one 32-frame request a replica at a time, and the door 40 frames: one is the capacity)."""
    request = _request(contract.MAX_BATCH_SIZE)
    served, stop = 0, time.monotonic() + seconds
    with CompositeClient(url, timeout_s=120, stage_timings=False) as client:
        client.infer_batch_composite(request).raise_for_error()  # warm: the largest batch's arena
        started = time.monotonic()
        stop = started + seconds
        while time.monotonic() < stop:
            client.infer_batch_composite(request).raise_for_error()
            served += 1
        return served / (time.monotonic() - started)


def offered(url: str, rate: float, seconds: float, server_pid: int, deadline_s: float, senders: int = 4) -> dict:
    """Heavy requests at ``rate`` a second for ``seconds`` from ``senders`` processes (each taking
    every ``senders``-th arrival), beside one light client sending 1-frame requests back to back."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    idle = sum(server_processes(server_pid).values())
    start_at = time.time() + 8.0  # every sender built its request and connected
    stop_at = start_at + seconds
    arrivals = [start_at + i / rate for i in range(max(1, round(rate * seconds)))]
    processes = [
        context.Process(
            target=open_loop_process, args=(url, contract.MAX_BATCH_SIZE, arrivals[k::senders], deadline_s, results)
        )
        for k in range(min(senders, len(arrivals)))
    ]
    processes.append(context.Process(target=client_process, args=(url, 1, start_at, stop_at, results)))
    return _collect(processes, results, seconds, server_pid, idle, start_at, deadline_s)


def flood(
    url: str, clients: int, seconds: float, server_pid: int, prebuilt: bool = False, nice: int = 0, side: bool = True
) -> dict:
    """``clients`` heavy clients, a light one and a live stream (``prebuilt``: ``RawClient``s at
    ``nice``; ``side``: False, the heavy clients alone)."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    idle = sum(server_processes(server_pid).values())
    start_at = time.time() + 8.0  # every client built its request and connected: they start together
    stop_at = start_at + seconds
    frames = [contract.MAX_BATCH_SIZE] * clients + ([1] if side else [])
    processes = [
        context.Process(target=client_process, args=(url, n, start_at, stop_at, results, prebuilt, nice))
        for n in frames
    ]
    if side:
        processes.append(context.Process(target=live_process, args=(url, start_at, stop_at, results)))
    return _collect(processes, results, seconds, server_pid, idle, start_at, 25.0)


def _collect(
    processes, results, seconds: float, server_pid: int, idle: int, start_at: float, deadline_s: float
) -> dict:
    for process in processes:
        process.start()
    time.sleep(max(0.0, start_at - time.time()))
    sampler = MemorySampler(server_pid)
    sampler.start()
    outcomes: dict[str, list[tuple[str, float, str, float]]] = {"heavy": [], "light": []}
    live = None
    for _ in processes:
        kind, rows = results.get(timeout=seconds + deadline_s + 120)
        if kind == "live":
            live = rows
        else:
            outcomes[kind] += rows
    for process in processes:
        process.join(30)
    peak = sampler.stop()
    row: dict = {"peak_memory_over_idle_mb": round((peak - idle) / 2**20)}
    for kind, rows in outcomes.items():
        served = [t for r, t, _, _ in rows if r == "served"]
        busy = [t for r, t, _, _ in rows if r == contract.CATEGORY_BUSY]
        # served within the load's window: what a request sent in it and answered after it ended
        # was served in (the edge's line draining) is not the window's work
        in_window = sum(1 for r, _, _, done in rows if r == "served" and done <= start_at + seconds)
        row[kind] = {
            "sent": len(rows),
            "served": len(served),
            "served_in_window": in_window,
            "served_per_s": round(in_window / seconds, 3),
            "served_p50_s": quantile(served, 0.5),
            "served_p99_s": quantile(served, 0.99),
            "refused": len(busy),
            "refused_p50_s": quantile(busy, 0.5),
            "refused_p90_s": quantile(busy, 0.9),
            "refused_p99_s": quantile(busy, 0.99),
            "failed_otherwise": len(rows) - len(served) - len(busy),
            "failures": sorted({e for r, _, e, _ in rows if r not in ("served", contract.CATEGORY_BUSY)})[:3],
        }
    if live is not None:
        row["live"] = live
    return row


AVATAR = "edgeflood"


def added_latency(direct_url: str, edge_url: str, rounds: int = 40) -> dict:
    """What the edge adds, unloaded: a 1-frame request and a live stream's frame (one 40 ms chunk a
    request), each sent straight and through the edge in turn (interleaved, so the host's noise
    falls on both alike); medians in ms."""
    request = _request(1)
    spent = {"direct": [], "edge": []}
    with (
        CompositeClient(direct_url, stage_timings=False) as direct,
        CompositeClient(edge_url, stage_timings=False) as edge,
    ):
        for _ in range(rounds):
            for name, client in (("direct", direct), ("edge", edge)):
                sent = time.perf_counter()
                client.infer_batch_composite(request).raise_for_error()
                spent[name].append(time.perf_counter() - sent)
    frames = {"direct": [], "edge": []}
    audio = synthetic.speech_like_audio(rounds + 20, seed=1)
    chunk = contract.SAMPLES_PER_FRAME
    with LiveStream(direct_url, AVATAR) as direct, LiveStream(edge_url, AVATAR) as edge:
        for start in range(0, len(audio) - chunk + 1, chunk):
            for name, live in (("direct", direct), ("edge", edge)):
                sent = time.perf_counter()
                if live.send(audio[start : start + chunk]):  # a frame became ready with this chunk
                    frames[name].append(time.perf_counter() - sent)
    row = {}
    for name in ("direct", "edge"):
        row[f"request_1_frame_p50_ms_{name}"] = round(1000 * quantile(spent[name], 0.5), 2)
        row[f"stream_frame_p50_ms_{name}"] = round(1000 * quantile(frames[name], 0.5), 2)
    row["edge_adds_per_request_ms"] = round(
        row["request_1_frame_p50_ms_edge"] - row["request_1_frame_p50_ms_direct"], 2
    )
    row["edge_adds_per_stream_frame_ms"] = round(row["stream_frame_p50_ms_edge"] - row["stream_frame_p50_ms_direct"], 2)
    return row


ACCESS_LOG_FORMAT = {  # Envoy's timings of each request (ms), its flags, its bytes: where a refusal's time goes
    "start": "%START_TIME(%s.%3f)%",
    "cluster": "%UPSTREAM_CLUSTER%",
    "frames": "%REQ(SYNCTALK-FRAMES)%",
    "flags": "%RESPONSE_FLAGS%",
    "grpc_status": "%GRPC_STATUS_NUMBER%",
    "duration_ms": "%DURATION%",
    "request_ms": "%REQUEST_DURATION%",
    "request_tx_ms": "%REQUEST_TX_DURATION%",
    "response_ms": "%RESPONSE_DURATION%",
    "bytes_received": "%BYTES_RECEIVED%",
    "bytes_sent": "%BYTES_SENT%",
    # an admitted request's phases: waiting in the edge's line, its body going up to the replica,
    # the replica's work until its answer starts
    "waited_ms": "%COMMON_DURATION(DS_RX_BEG:US_TX_BEG:ms)%",
    "upload_ms": "%COMMON_DURATION(US_TX_BEG:US_TX_END:ms)%",
    "served_ms": "%COMMON_DURATION(US_TX_END:US_RX_BEG:ms)%",
}


def with_access_log(edge: Edge, path: Path) -> Edge:
    """The edge's listeners write an access log to ``path`` (one JSON line a request)."""
    for manager in connection_managers(edge.config):
        manager["access_log"] = [
            {
                "name": "envoy.access_loggers.file",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                    "path": str(path),
                    "log_format": {"json_format": ACCESS_LOG_FORMAT},
                },
            }
        ]
    return edge


def access_log_summary(path: Path, since: float) -> dict:
    """The bulk requests the edge logged since ``since`` (time.time()): refused (overflow, UO) and
    admitted, with Envoy's own timings (p50 / p90 ms)."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]
    rows = [r for r in rows if float(r["start"]) >= since and r.get("frames") == str(contract.MAX_BATCH_SIZE)]

    def quantiles(values):
        values = [float(v) for v in values if v not in (None, "-", "")]
        return [quantile(values, 0.5), quantile(values, 0.9)] if values else None

    out = {}
    for name, chosen in (
        ("refused", [r for r in rows if "UO" in r["flags"]]),
        # served by a replica (an edge that receives bodies first logs each request twice: at its
        # gate, and where it goes up)
        ("admitted", [r for r in rows if "UO" not in r["flags"] and r["cluster"] == "grpc_bulk"]),
    ):
        out[name] = {
            "count": len(chosen),
            "duration_ms": quantiles(r["duration_ms"] for r in chosen),
            "request_ms": quantiles(r["request_ms"] for r in chosen),
            "response_ms": quantiles(r["response_ms"] for r in chosen),
            **{key: quantiles(r.get(key) for r in chosen) for key in ("waited_ms", "upload_ms", "served_ms")},
            "bytes_received_mb": quantiles(int(r["bytes_received"]) / 2**20 for r in chosen),
            "flags": sorted({r["flags"] for r in chosen}),
        }
    return out


def add_avatar(repository: Path) -> None:
    import cv2

    frames, boxes = synthetic.avatar_background(1, 640, 360)
    folder = paths.BUILD / "edge_flood" / "avatar"
    folder.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(folder / "0.png"), frames[0][..., ::-1])
    avatar_store.add(repository, AVATAR, folder, boxes[0].tolist(), options=avatar_store.AvatarOptions(replace=True))


def run(
    variant: str,
    clients: int,
    seconds: float,
    levels: list[float] = (),
    prebuilt: bool = False,
    nice: list[int] = (0,),
    edge_only: bool = False,
    settings: list[str] = ("now",),
) -> dict:
    """Each of ``settings`` on a server of its own, one after another: ``now`` (the edge and the
    server as ``synctalk-serve`` runs them), ``no-waiting`` (the edge refuses a bulk request past
    its replica's limit at once, with no waiting line), ``equal-share`` (the server in its caller's
    scheduling group, sharing the cores thread by thread with the clients: ``cpu_share``),
    ``before`` (both), ``waiting-<n>`` (n bulk requests wait in line instead of
    ``WAITING_PER_REPLICA``'s), ``window-<KiB>`` (the listeners' HTTP/2 stream window that size
    instead of 1 MiB), ``two-generators`` (the avatar's generator two instances that run at once,
    not one at a time)."""
    report = {"variant": variant, "clients": clients, "seconds": seconds, "heavy_frames": contract.MAX_BATCH_SIZE}
    for setting in settings:
        print(f"{setting}:", flush=True)
        report[setting] = run_setting(variant, clients, seconds, levels, prebuilt, nice, edge_only, setting)
    return report


def run_setting(
    variant: str,
    clients: int,
    seconds: float,
    levels: list[float],
    prebuilt: bool,
    nice: list[int],
    edge_only: bool,
    setting: str,
) -> dict:
    parts = setting.split("+")  # settings joined with "+" apply together
    repository = render("cpu", paths.BUILD / "edge_flood" / f"cpu-{setting}", paths.MODELS / variant)
    add_avatar(repository)
    if "two-generators" in parts:  # the avatar's generator twice, both running at once
        generator = repository / contract.avatar_models(AVATAR)["generator"] / "config.pbtxt"
        config = read_config(generator)
        for group in config.instance_group:
            group.count = 2
            group.ClearField("rate_limiter")
        write_config(config, generator, "edge_flood: two instances, no rate limiter")
    log = paths.BUILD / "logs" / f"edge-flood-tritonserver-{setting}.log"
    report: dict = {}
    access_log = paths.BUILD / "logs" / f"edge-flood-access-{setting}.log"
    access_log.unlink(missing_ok=True)
    # as synctalk-serve runs it: a scheduling group of its own (synctalk_ops.cpu_share), unless the
    # setting says otherwise (its caller's group: thread by thread with the clients)
    group_nice = None if {"equal-share", "before"} & set(parts) else cpu_share.SERVER_NICE
    for part in parts:
        if part.startswith("server-nice-"):  # the server's group at nice -<n> instead
            group_nice = -int(part.removeprefix("server-nice-"))
    with TritonServer(repository, free_port(), free_port(), free_port(), log_path=log, group_nice=group_nice) as server:
        edge = Edge(
            [Replica.of(server)],
            free_port(),
            free_port(),
            free_port(),
            log_path=paths.BUILD / "logs" / f"edge-flood-{setting}.log",
        )
        for part in parts:
            if part in ("no-waiting", "before"):
                bulk_waiting(edge, 0)
            if part.startswith("waiting-"):  # that many bulk requests wait in line per replica
                bulk_waiting(edge, int(part.split("-")[1]))
            if part == "received-first":
                bulk_received_first(edge)
            if part.startswith("window-"):  # the listeners' HTTP/2 stream window, in KiB
                for manager in connection_managers(edge.config):
                    manager["http2_protocol_options"]["initial_stream_window_size"] = 1024 * int(part.split("-")[1])
        with with_access_log(edge, access_log):
            with CompositeClient(server.grpc_url, timeout_s=120) as client:  # warm: the first requests
                client.infer_batch_composite(_request(2)).raise_for_error()
            if not edge_only:
                report["unloaded"] = added_latency(server.grpc_url, edge.grpc_url)
                print("   ", json.dumps(report["unloaded"]), flush=True)
            paths_ = (("straight to Triton", server.grpc_url), ("through the edge", edge.grpc_url))
            if clients:
                if prebuilt:  # goodput is counted against what one client alone gets served, before and after
                    alone = [unloaded_rate(edge.grpc_url, 15.0)]
                    print("    one client alone:", round(alone[0], 3), "heavy requests/s", flush=True)
                flooded = []
                for name, url in paths_[1:] if edge_only else paths_:
                    for level in nice:
                        key = name if level == 0 else f"{name}, clients at nice {level}"
                        print(f"  {key}: {clients} heavy clients and a light one for {seconds:g} s ...", flush=True)
                        side = "heavy-only" not in parts  # the heavy clients alone (the flood)
                        load = partial(flood, url, clients, seconds, server.process.pid, prebuilt, level, side)
                        since = time.time()
                        report[key] = row = measured(edge, url, load)
                        if url == edge.grpc_url:
                            row["edge_access_log"] = access_log_summary(access_log, since)
                        flooded.append(row)
                        print("   ", json.dumps(row), flush=True)
                        time.sleep(3.0)  # what was admitted drains
                if prebuilt:  # the host drifts: one client alone again after the floods, and their mean
                    alone.append(unloaded_rate(edge.grpc_url, 15.0))
                    report["one_client_heavy_per_s"] = round(sum(alone) / len(alone), 3)
                    report["one_client_before_after"] = [round(r, 3) for r in alone]
                    one_client = report["one_client_heavy_per_s"]
                    for row in flooded:
                        row["goodput_of_one_client"] = round(row["heavy"]["served_per_s"] / one_client, 3)
                        # every class's frames served in the window (the light client's and the
                        # live stream's too: the same generator's work) against one client's frames
                        live = row.get("live", {}).get("frames_served_in_window", 0)
                        frames = contract.MAX_BATCH_SIZE * row["heavy"]["served_in_window"]
                        frames += row["light"]["served_in_window"] + live
                        row["frames_goodput_of_one_client"] = round(
                            frames / seconds / (one_client * contract.MAX_BATCH_SIZE), 3
                        )
                    print(
                        "    one client alone, after:",
                        round(alone[1], 3),
                        "goodput",
                        [r["goodput_of_one_client"] for r in flooded],
                        "in frames",
                        [r["frames_goodput_of_one_client"] for r in flooded],
                        flush=True,
                    )
            if levels:
                rate = unloaded_rate(server.grpc_url, max(10.0, seconds / 2))
                deadline_s = max(10.0, 3.0 / rate)  # three times a heavy request alone
                table = {"unloaded_heavy_per_s": round(rate, 3), "deadline_s": round(deadline_s, 1), "levels": {}}
                print("   ", json.dumps(table), flush=True)
                for level in levels:
                    row = table["levels"][f"{level:g}x"] = {}
                    for name, url in paths_:  # in turn at each level: the host's drift falls on both
                        print(f"  {level:g}x, {name}, {seconds:g} s ...", flush=True)
                        row[name] = measured(
                            edge,
                            url,
                            partial(offered, url, level * rate, seconds, server.process.pid, deadline_s),
                        )
                        row[name]["goodput_of_unloaded"] = round(row[name]["heavy"]["served_per_s"] / rate, 3)
                        print("   ", json.dumps(row[name]), flush=True)
                        time.sleep(3.0)
                report["offered"] = table
    return report


def bulk_waiting(edge: Edge, waiting: int) -> None:
    """The edge's bulk clusters rendered again with a waiting line of ``waiting`` requests a
    replica instead of ``WAITING_PER_REPLICA``'s; 0: none, as before it had one (a bulk request past
    its replica's limit refused at once)."""
    clusters, limit = edge.config["static_resources"]["clusters"], class_limits("cpu")["bulk"]
    bulk = {name: protocol for name, protocol, kind in cluster_names() if kind == "bulk"}
    for i, cluster in enumerate(clusters):
        if cluster["name"] in bulk:
            protocol, size_for = bulk[cluster["name"]], len(edge.replicas)
            clusters[i] = cluster_of(
                cluster["name"], edge.replicas, protocol, limit, size_for, edge.endpoints_dir, waiting
            )


def bulk_received_first(edge: Edge, waiting: int = WAITING_PER_REPLICA["bulk"]) -> None:
    """A bulk request's body received whole by the edge before it goes up (gRPC listener): the
    listener's bulk requests go to a gate (``grpc_bulk_gate``: at most a replica's limit and its
    line at once, the next refused from its headers, as the line's is now) in front of an internal
    listener of the edge that buffers each body (Envoy's buffer filter), then routes it to
    ``grpc_bulk`` as it is (its limit, its line). The replica then waits for no client's upload."""
    config = edge.config
    config["bootstrap_extensions"] = [
        {
            "name": "envoy.bootstrap.internal_listener",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.bootstrap.internal_listener.v3.InternalListener"
            },
        }
    ]
    listeners = config["static_resources"]["listeners"]
    outer = next(listener for listener in listeners if listener["name"] == "grpc")
    room = copy.deepcopy(outer)
    room["name"] = "grpc_bulk_room"
    del room["address"]
    room["internal_listener"] = {}
    manager = room["filter_chains"][0]["filters"][0]["typed_config"]
    manager["stat_prefix"] = "grpc_bulk_room"
    manager["route_config"]["name"] = "grpc_bulk_room"
    manager["route_config"]["virtual_hosts"][0]["routes"] = [
        {"match": {"prefix": "/"}, "route": {"cluster": "grpc_bulk", "timeout": "0s"}}
    ]
    manager["http_filters"].insert(
        len(manager["http_filters"]) - 1,
        {
            "name": "envoy.filters.http.buffer",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
                "max_request_bytes": 128 << 20,
            },
        },
    )
    listeners.append(room)
    for route in outer["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]:
        if route.get("route", {}).get("cluster") == "grpc_bulk":
            route["route"]["cluster"] = "grpc_bulk_gate"
    at_once = (class_limits("cpu")["bulk"] + waiting) * len(edge.replicas)
    config["static_resources"]["clusters"].append(
        {
            "name": "grpc_bulk_gate",
            "type": "STATIC",
            "connect_timeout": "1s",
            "load_assignment": {
                "cluster_name": "grpc_bulk_gate",
                "endpoints": [
                    {
                        "lb_endpoints": [
                            {
                                "endpoint": {
                                    "address": {"envoy_internal_address": {"server_listener_name": "grpc_bulk_room"}}
                                }
                            }
                        ]
                    }
                ],
            },
            "circuit_breakers": {"thresholds": [{"max_requests": at_once, "max_pending_requests": at_once}]},
            "typed_extension_protocol_options": http2_upstream({}),
        }
    )


EDGE_COUNTERS = (  # Envoy's own counts over a flood through it (the bulk class, the gRPC listener)
    "cluster.grpc_bulk.upstream_rq_total",
    "cluster.grpc_bulk.upstream_rq_pending_overflow",
    "cluster.grpc_bulk.upstream_cx_tx_bytes_total",
    "http.grpc.downstream_rq_total",
    "http.grpc.downstream_rq_rx_reset",
    "http.grpc.downstream_rq_tx_reset",
    "http.grpc.downstream_cx_rx_bytes_total",
    "http.grpc.downstream_flow_control_paused_reading_total",
)


def measured(edge: Edge, url: str, load) -> dict:
    """``load()``'s row, with the edge's CPU per 1,000 requests and its counters' growth where the
    load went through it."""
    through = url == edge.grpc_url
    cpu_before = cpu_seconds(edge.process.pid)
    counters_before = edge.stats() if through else {}
    row = load()
    if through:
        handled = row["heavy"]["sent"] + row["light"]["sent"]
        used = cpu_seconds(edge.process.pid) - cpu_before
        row["edge_cpu_s_per_1000_requests"] = round(1000 * used / max(1, handled), 2)
        after = edge.stats()
        row["edge_counters"] = {
            name: after[name] - counters_before.get(name, 0) for name in EDGE_COUNTERS if name in after
        }
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="full")
    parser.add_argument("--clients", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=45.0)
    parser.add_argument("--levels", type=float, nargs="*", default=[], help="offered load, multiples of unloaded")
    parser.add_argument("--prebuilt", action="store_true", help="clients send one request serialised once, as bytes")
    parser.add_argument("--nice", type=int, nargs="+", default=[0], help="the clients' CPU priorities, one flood each")
    parser.add_argument("--edge-only", action="store_true", help="the flood through the edge only")
    parser.add_argument(
        "--settings",
        nargs="+",
        default=["now"],
        help="now, no-waiting, equal-share, before, waiting-<n>, window-<KiB>, two-generators, server-nice-<n>, "
        "received-first, heavy-only; joined with + to apply together",
    )
    parser.add_argument("--out", type=Path, default=paths.BUILD / "edge_flood" / "report.json")
    args = parser.parse_args(argv)
    report = run(
        args.variant, args.clients, args.seconds, args.levels, args.prebuilt, args.nice, args.edge_only, args.settings
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

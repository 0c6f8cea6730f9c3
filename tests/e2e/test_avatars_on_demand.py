"""Avatars on demand: two tiny replicas holding only the shared steps, the activator
(``python -m synctalk_ops.activator``, what an operator runs) beside the edge, which asks it about
each request. A stored avatar no replica holds is loaded on first use, on its first-ranked replica,
the concurrent first requests sharing that load; a request held past the budget gets a retryable
"the avatar is loading" (the SDK's busy category, and the SDK's retry then gets it served); an id
nobody stored still gets "model not found"."""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from synctalk_build import avatar_store, paths
from synctalk_build.render_repository import render
from synctalk_client import CompositeBatchRequest, CompositeClient, synthetic
from synctalk_common import contract
from synctalk_ops.edge import Edge, Replica
from synctalk_ops.launched import http_process
from synctalk_ops.placement import models_to_load, ranking
from synctalk_ops.serve import TritonServer
from tests.conftest import free_port

pytestmark = pytest.mark.e2e
AVATARS = ["ondemand0", "ondemand1", "ondemand2"]
BOX = [16, 0, 80, 64]
NAMES = ["replica-0", "replica-1"]


class Activator:
    """``python -m synctalk_ops.activator`` on a port, started again with another budget."""

    def __init__(self, repository, servers, port: int):
        self.repository, self.servers, self.port = repository, servers, port
        self.running = contextlib.ExitStack()

    def start(self, budget_s: float) -> None:
        self.running.close()
        command = [sys.executable, "-m", "synctalk_ops.activator", "--repository", str(self.repository)]
        command += ["--port", str(self.port), "--budget-s", str(budget_s), "--log-level", "debug"]
        for s in self.servers:
            command += ["--replica", f"{s.host}:{s.grpc_port}:{s.http_port}"]
        log = paths.BUILD / "logs" / "test-activator.log"
        self.running.enter_context(http_process("the activator", command, f"http://127.0.0.1:{self.port}/metrics", log))


def metrics(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        lines = answer.read().decode().splitlines()
    return {
        line.split()[0].removeprefix("synctalk_activator_").removesuffix("_total"): float(line.split()[1])
        for line in lines
        if not line.startswith("#")
    }


def loaded_on(server: TritonServer, avatar: str) -> bool:
    try:
        with urllib.request.urlopen(f"{server.http_url}/v2/models/{avatar}/ready", timeout=5) as answer:
            return answer.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def on_demand(models_dir, tmp_path_factory):
    """The repository's store holds three avatars; each replica loads the shared steps only."""
    import cv2

    root = tmp_path_factory.mktemp("on-demand")
    folder = root / "frames"
    folder.mkdir()
    cv2.imwrite(str(folder / "0.png"), np.full((64, 96, 3), 90, np.uint8))
    repository = render("cpu", root / "repo", models_dir / "tiny", avatar_store=root / "avatars")
    for avatar in AVATARS:
        avatar_store.add(repository, avatar, folder, BOX)
    shared = models_to_load(repository, [])
    assert not any(a in m for a in AVATARS for m in shared)
    servers = [
        TritonServer(
            repository,
            free_port(),
            free_port(),
            free_port(),
            log_path=paths.BUILD / "logs" / f"test-on-demand-{i}.log",
            model_control_mode="explicit",
            models=shared,
        )
        for i in range(2)
    ]
    port = free_port()
    with contextlib.ExitStack() as stack:
        for server in servers:
            stack.enter_context(server)
        # before the edge: it asks the activator about every request, its readiness included
        asked = Activator(repository, servers, port)
        stack.callback(asked.running.close)
        asked.start(budget_s=30)
        replicas = [Replica.of(s, i) for i, s in enumerate(servers)]
        edge = Edge(
            replicas,
            free_port(),
            free_port(),
            free_port(),
            config_path=root / "edge.yaml",
            log_path=paths.BUILD / "logs" / "test-on-demand-edge.log",
            activator=("127.0.0.1", port),
        )
        stack.enter_context(edge)
        yield repository, servers, edge, asked


def test_a_stored_avatar_is_loaded_on_first_use_once_for_concurrent_requests(on_demand):
    _, servers, edge, asked = on_demand
    port = asked.port
    avatar = AVATARS[0]
    first = NAMES.index(ranking(avatar, NAMES)[0])
    audio = synthetic.speech_like_audio(2, seed=11)
    assert not any(loaded_on(s, avatar) for s in servers), "stored, not loaded"
    results, errors = [], []

    together = threading.Barrier(2)

    def ask() -> None:
        try:
            with CompositeClient(edge.grpc_url, busy_retries=0) as client:
                together.wait(30)  # both connected: their first calls reach the edge within a moment
                results.append(client.infer_batch_composite(CompositeBatchRequest.audio_only(avatar, audio)))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert len(results) == 2 and all(r.success for r in results), [r.error for r in results]
    assert all(len(r.composited_frames) == len(results[0].composited_frames) > 0 for r in results)
    counted = metrics(port)
    assert counted["loads"] == 1, counted  # shared by the two first requests
    assert counted["cold_waits"] >= 2, counted
    assert [loaded_on(s, avatar) for s in servers] == [i == first for i in range(2)], "on its first-ranked"
    # loaded: the next request is a hit, on its holder
    with CompositeClient(edge.grpc_url, busy_retries=0) as client:
        client.infer_batch_composite(CompositeBatchRequest.audio_only(avatar, audio)).raise_for_error()
        # an id nobody stored: Triton's answer, through the edge, as ever
        missing = client.infer_batch_composite(CompositeBatchRequest.audio_only("nobody", audio))
        assert not missing.success and missing.error == "model not found: nobody", missing.error
    again = metrics(port)
    assert again["loads"] == 1 and again["hits"] > counted["hits"], again
    # HTTP clients are routed by the path's model id: ready through the edge, on its holder
    with urllib.request.urlopen(f"{edge.http_url}/v2/models/{avatar}/ready", timeout=10) as answer:
        assert answer.status == 200


def test_a_request_held_past_the_budget_is_told_the_avatar_is_loading_and_served_on_retry(on_demand):
    _, servers, edge, asked = on_demand
    port = asked.port
    avatar = AVATARS[1]
    audio = synthetic.speech_like_audio(1, seed=12)
    request = CompositeBatchRequest.audio_only(avatar, audio)
    asked.start(budget_s=0.05)
    try:
        # a plain Triton client sending the edge's header: refused as loading, retryably
        with grpcclient.InferenceServerClient(edge.grpc_url) as plain:
            with pytest.raises(InferenceServerException) as refused:
                plain.get_model_config(avatar, headers=contract.edge_headers(avatar))
        assert "UNAVAILABLE" in str(refused.value.status()), refused.value
        # and an HTTP client, by the path's model id: 503 with the KServe API's error
        with pytest.raises(urllib.error.HTTPError) as http_refused:
            urllib.request.urlopen(f"{edge.http_url}/v2/models/{AVATARS[2]}/config", timeout=10)
        assert http_refused.value.code == 503
        assert json.loads(http_refused.value.read())["error"].startswith(f"the avatar is loading: {AVATARS[2]}")
        assert contract.MSG_AVATAR_LOADING.format(model_id=avatar, budget_s=0.05) in refused.value.message()
        assert metrics(port)["loading_refusals"] >= 1
        # the SDK reads it as busy (retry); the load went on meanwhile, and a later call is served
        with CompositeClient(edge.grpc_url, busy_retries=0) as client:
            busy = client.infer_batch_composite(request)
            if not busy.success:  # else the load was done by now
                assert busy.error_category == contract.CATEGORY_BUSY and "the avatar is loading" in busy.error, busy
            deadline = time.monotonic() + 60
            while not any(loaded_on(s, avatar) for s in servers) and time.monotonic() < deadline:
                time.sleep(0.2)
            client.infer_batch_composite(request).raise_for_error()
        assert metrics(port)["loads"] == 2  # this avatar, and the HTTP client's
    finally:
        asked.start(budget_s=30)

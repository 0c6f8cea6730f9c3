"""Avatars on demand, as an operator runs them (``make cluster ON_DEMAND=1``: ``python -m
synctalk_ops.cluster --on-demand``): two tiny replicas holding only the shared steps, the activator
beside the edge, which asks it about each request. A stored avatar no replica holds is loaded on
first use, on its first-ranked replica, the concurrent first requests sharing that load; a request
held past the budget gets a retryable "the avatar is loading" (the SDK's busy category), and is
served once loaded (the SDK's warm, synctalk-avatars warm); an id nobody stored still gets "model not found"."""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from synctalk_build import avatar_store, paths
from synctalk_build.render_repository import render
from synctalk_build.repository_manifest import avatar_store as avatar_store_of
from synctalk_client import CompositeBatchRequest, CompositeClient, synthetic
from synctalk_client.stream import LiveStream
from synctalk_common import contract
from synctalk_ops import api_key
from synctalk_ops.activator import ActivatorService
from synctalk_ops.edge import Edge, Replica
from synctalk_ops.placement import ranking, shared_generator_bytes, stored_need
from tests.conftest import free_port, run_command
from tests.e2e.test_cluster_command import launch

pytestmark = pytest.mark.e2e
AVATARS = ["ondemand0", "ondemand1", "ondemand2"]
BOX = [16, 0, 80, 64]
NAMES = ["replica-0", "replica-1"]
FIRST = ranking(AVATARS[0], NAMES)[0]  # where the first test loads ondemand0
# two more stored avatars whose first choice is that replica too (synctalk_ops.placement's ranking)
ROOMERS = [name for name in (f"room{i}" for i in range(100)) if ranking(name, NAMES)[0] == FIRST][:2]
IDLE_S = 1.0  # the cluster's --idle-s: an avatar unloaded for room once idle this long
PAGE_AVATAR = "ondemandpage"  # stored, first asked for by the page
SPILL_AVATAR = "ondemandhot"  # stored, made busy until it spills over to the second replica
SPILL_AT = 1  # the cluster's --spill-at: a holder with one stream open on an avatar is busy with it


def metrics(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        lines = answer.read().decode().splitlines()
    return {
        line.split()[0].removeprefix("synctalk_activator_").removesuffix("_total"): float(line.split()[1])
        for line in lines
        if not line.startswith("#")
    }


def loaded_on(replica, avatar: str) -> bool:
    try:
        with urllib.request.urlopen(
            f"http://{replica.host}:{replica.http_port}/v2/models/{avatar}/ready", timeout=5
        ) as answer:
            return answer.status == 200
    except OSError:
        return False


@dataclass
class Running:
    repository: Path
    servers: list[SimpleNamespace]  # each replica: host, grpc_port, http_port (the cluster's description)
    edge_grpc: str
    edge_http: str
    activator_port: int
    log: Path  # the command's output


@pytest.fixture(scope="module")
def on_demand(models_dir, tmp_path_factory):
    """``python -m synctalk_ops.cluster --on-demand`` (``make cluster ON_DEMAND=1``): two replicas
    with the shared steps only, the repository's store holding three avatars."""
    import cv2

    root = tmp_path_factory.mktemp("on-demand")
    folder = root / "frames"
    folder.mkdir()
    cv2.imwrite(str(folder / "0.png"), np.full((64, 96, 3), 90, np.uint8))
    repository = render("cpu", root / "repo", models_dir / "tiny", avatar_store=root / "avatars")
    for avatar in AVATARS + ROOMERS + [PAGE_AVATAR, SPILL_AVATAR]:
        avatar_store.add(repository, avatar, folder, BOX)
    # room for one avatar a replica (each of these needs the same)
    need = stored_need(avatar_store_of(repository) / AVATARS[0], shared_generator_bytes(repository))
    activator_port = free_port()
    cluster = launch(
        repository,
        root,
        "test-on-demand",
        *("--on-demand", "--activator-port", str(activator_port)),
        *("--replica-memory", f"{need * 3 // 2}", "--idle-s", f"{IDLE_S:g}", "--spill-at", str(SPILL_AT)),
    )
    process = cluster.process
    try:
        description = cluster.wait_announced()
        assert description["activator"]["url"] == f"http://127.0.0.1:{activator_port}"
        assert [r["avatars"] for r in description["replicas"]] == [None, None], "no avatar listed"
        servers = [SimpleNamespace(**r) for r in description["replicas"]]
        yield Running(
            repository,
            servers,
            f"127.0.0.1:{cluster.grpc}",
            f"http://127.0.0.1:{cluster.http}",
            activator_port,
            cluster.log,
        )
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(60)
    assert process.returncode == 0, cluster.log.read_text()


def test_a_stored_avatar_is_loaded_on_first_use_once_for_concurrent_requests(on_demand):
    servers, port = on_demand.servers, on_demand.activator_port
    avatar = AVATARS[0]
    first = NAMES.index(ranking(avatar, NAMES)[0])
    audio = synthetic.speech_like_audio(2, seed=11)
    assert not any(loaded_on(s, avatar) for s in servers), "stored, not loaded"
    results, errors = [], []
    together = threading.Barrier(2)

    def ask() -> None:
        try:
            with CompositeClient(on_demand.edge_grpc, busy_retries=0) as client:
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
    with CompositeClient(on_demand.edge_grpc, busy_retries=0) as client:
        client.infer_batch_composite(CompositeBatchRequest.audio_only(avatar, audio)).raise_for_error()
        # an id nobody stored: Triton's answer, through the edge, as ever
        missing = client.infer_batch_composite(CompositeBatchRequest.audio_only("nobody", audio))
        assert not missing.success and missing.error == "model not found: nobody", missing.error
    again = metrics(port)
    assert again["loads"] == 1 and again["hits"] > counted["hits"], again
    # HTTP clients are routed by the path's model id: ready through the edge, on its holder
    with urllib.request.urlopen(f"{on_demand.edge_http}/v2/models/{avatar}/ready", timeout=10) as answer:
        assert answer.status == 200


def holders(servers, avatar: str) -> list[str]:
    return [NAMES[i] for i, s in enumerate(servers) if loaded_on(s, avatar)]


def test_room_is_made_from_idle_avatars_never_from_one_with_an_open_stream(on_demand):
    """Each replica has room for one avatar. ondemand0 (loaded by the test above on its first
    choice) has a live stream open, silent for longer than the idle time: a second avatar preferring
    that replica goes to the other; a third takes the second's room there once the second is idle
    (its only eviction); the stream is served throughout; once it ends, its avatar's room is taken."""
    servers, port = on_demand.servers, on_demand.activator_port
    other = next(n for n in NAMES if n != FIRST)
    first, second = ROOMERS
    audio = synthetic.speech_like_audio(1, seed=13)
    chunk = synthetic.speech_like_audio(5, seed=14)  # 0.2 s
    before = metrics(port)["evictions"]
    with CompositeClient(on_demand.edge_grpc, busy_retries=0) as client:

        def serve(avatar: str) -> None:
            client.infer_batch_composite(CompositeBatchRequest.audio_only(avatar, audio)).raise_for_error()

        assert holders(servers, AVATARS[0]) == [FIRST]
        live = LiveStream(on_demand.edge_grpc, AVATARS[0])
        try:
            live.send(chunk)
            time.sleep(IDLE_S * 2.5)  # open, and silent longer than the idle time
            serve(first)
            assert holders(servers, first) == [other], "its first choice holds an avatar with a stream open"
            assert holders(servers, AVATARS[0]) == [FIRST]
            live.send(chunk)
            time.sleep(IDLE_S * 2.5)  # the first roomer idle now
            serve(second)
            assert holders(servers, second) == [other] and holders(servers, first) == [], "the idle one made room"
            assert holders(servers, AVATARS[0]) == [FIRST]
            assert metrics(port)["evictions"] == before + 1
            live.send(chunk)
            assert live.end(), "the stream served to its end"
        finally:
            live.close()
        time.sleep(IDLE_S * 2.5)  # its stream ended: ondemand0 idle
        serve(first)
        assert holders(servers, first) == [FIRST] and holders(servers, AVATARS[0]) == []
        assert metrics(port)["evictions"] == before + 2


def test_a_request_held_past_the_budget_is_told_the_avatar_is_loading_and_served_on_retry(on_demand, tmp_path):
    """A second edge and activator over the cluster's replicas, with a budget shorter than a load."""
    servers, avatar = on_demand.servers, AVATARS[1]
    replicas = [Replica(s.name, s.host, s.grpc_port, s.http_port) for s in servers]
    request = CompositeBatchRequest.audio_only(avatar, synthetic.speech_like_audio(1, seed=12))
    logs = paths.BUILD / "logs"
    asked = ActivatorService(on_demand.repository, replicas, free_port(), 0.05, logs / "test-on-demand-short.log")
    with asked:
        edge = Edge(
            replicas,
            free_port(),
            free_port(),
            free_port(),
            config_path=tmp_path / "edge.yaml",
            log_path=logs / "test-on-demand-short-edge.log",
            activator=asked.address,
            activator_budget_s=asked.budget_s,
        )
        with edge:
            # a plain Triton client sending the edge's header: refused as loading, retryably
            with grpcclient.InferenceServerClient(edge.grpc_url) as plain:
                with pytest.raises(InferenceServerException) as refused:
                    plain.get_model_config(avatar, headers=contract.edge_headers(avatar))
            assert "UNAVAILABLE" in str(refused.value.status()), refused.value
            assert contract.MSG_AVATAR_LOADING.format(model_id=avatar, budget_s=0.05) in refused.value.message()
            # and an HTTP client, by the path's model id: 503 with the KServe API's error
            with pytest.raises(urllib.error.HTTPError) as http_refused:
                urllib.request.urlopen(f"{edge.http_url}/v2/models/{AVATARS[2]}/config", timeout=10)
            assert http_refused.value.code == 503
            error = json.loads(http_refused.value.read())["error"]
            assert error.startswith(f"the avatar is loading: {AVATARS[2]}"), error
            assert metrics(asked.port)["loading_refusals"] >= 2
            # the SDK reads it as busy (retry); the load went on meanwhile, and a later call is served
            with CompositeClient(edge.grpc_url, busy_retries=0) as client:
                busy = client.infer_batch_composite(request)
                if not busy.success:  # else the load was done by now
                    assert busy.error_category == contract.CATEGORY_BUSY, busy
                    assert "the avatar is loading" in busy.error, busy
                client.warm(avatar, timeout_s=60)  # asks again while it loads
                client.infer_batch_composite(request).raise_for_error()
            # what an operator (or a session opening) runs before any speech
            warm = ["warm", "--id", AVATARS[2], "--url", edge.grpc_url]
            warmed = run_command([sys.executable, "-m", "synctalk_ops.avatars", *warm])
            assert warmed.returncode == 0 and f"{AVATARS[2]}: ready in" in warmed.stdout, warmed
            assert metrics(asked.port)["loads"] == 2  # this avatar, and the HTTP client's


def test_the_page_lists_a_stored_avatar_and_says_it_is_loading_once_chosen(on_demand, monkeypatch):
    """The page's server in front of the edge: a stored avatar no replica holds is listed (not
    ready); chosen in the Live tab (Chromium), the page asks for it at once and says "loading the
    avatar" until it is loaded; an id nobody stored is "model not found" by name."""
    from devtools.browser import chromium_driver, element, models_loaded, page_server, switch_tab, wait

    assert not any(loaded_on(s, PAGE_AVATAR) for s in on_demand.servers)
    monkeypatch.setenv(contract.API_KEY_FILE_ENV, str(api_key.KEY_FILE))  # listing is a restricted API
    with page_server(on_demand.edge_grpc, paths.BUILD / "logs" / "test-on-demand-page.log") as page:
        with urllib.request.urlopen(f"{page}api/models", timeout=30) as answer:
            listed = {m["id"]: m for m in json.loads(answer.read())["models"]}
        assert listed[PAGE_AVATAR] == {"id": PAGE_AVATAR, "avatar": True, "images": None, "ready": False}
        unknown = urllib.request.Request(f"{page}api/warm", data=json.dumps({"id": "nobody"}).encode(), method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(unknown, timeout=30)
        assert (refused.value.code, json.loads(refused.value.read())["error"]) == (404, "model not found: nobody")
        browser = chromium_driver()
        try:
            browser.get(page)
            models_loaded(browser)
            switch_tab(browser, "live")
            models_loaded(browser)
            status = browser.execute_script(
                "const s = document.getElementById('live-model'); s.value = arguments[0];"
                "s.dispatchEvent(new Event('change')); return document.getElementById('live-status').textContent;",
                PAGE_AVATAR,
            )
            assert status == "loading the avatar…"
            wait(browser, lambda: element(browser, "live-status").text == "avatar loaded", timeout=60)
        finally:
            browser.quit()
    assert sum(loaded_on(s, PAGE_AVATAR) for s in on_demand.servers) == 1


def open_streams(replica, avatar: str) -> int:
    """The live streams open on the avatar on that replica (the stream model's gauge)."""
    with urllib.request.urlopen(f"http://{replica.host}:{replica.metrics_port}/metrics", timeout=5) as answer:
        lines = answer.read().decode().splitlines()
    prefix = f'{contract.OPEN_STREAMS_METRIC}{{avatar="{avatar}"'
    return sum(int(float(line.rsplit(" ", 1)[1])) for line in lines if line.startswith(prefix))


def test_a_busy_avatar_spills_over_to_a_second_replica(on_demand):
    """Bounded load: with a live stream open on it, the avatar's only holder is busy with it
    (``--spill-at 1``); its next request loads it on the second replica of its ranking (making room
    there from an idle avatar), beside the traffic; the next stream goes to the holder not busy."""
    servers, port = on_demand.servers, on_demand.activator_port
    first, second = (servers[NAMES.index(name)] for name in ranking(SPILL_AVATAR, NAMES))
    time.sleep(IDLE_S * 2.5)  # every avatar loaded before is idle: room may be made from any
    request = CompositeBatchRequest.audio_only(SPILL_AVATAR, synthetic.speech_like_audio(1, seed=15))
    chunk = synthetic.speech_like_audio(5, seed=16)
    spills = metrics(port).get("spills", 0)
    streams = [LiveStream(on_demand.edge_grpc, SPILL_AVATAR)]
    try:
        streams[0].send(chunk)  # its first use: loaded on its first choice, a stream open there
        assert holders(servers, SPILL_AVATAR) == [NAMES[servers.index(first)]]
        assert open_streams(first, SPILL_AVATAR) == 1
        with CompositeClient(on_demand.edge_grpc, busy_retries=0) as client:
            deadline = time.monotonic() + 60
            while not loaded_on(second, SPILL_AVATAR) and time.monotonic() < deadline:
                client.infer_batch_composite(request).raise_for_error()  # served by the busy holder meanwhile
                time.sleep(0.1)
        assert loaded_on(second, SPILL_AVATAR) and loaded_on(first, SPILL_AVATAR), "held by both now"
        assert metrics(port)["spills"] == spills + 1
        streams.append(LiveStream(on_demand.edge_grpc, SPILL_AVATAR))
        streams[1].send(chunk)
        assert (open_streams(first, SPILL_AVATAR), open_streams(second, SPILL_AVATAR)) == (1, 1)
        for stream in streams:
            assert stream.end(), "each stream served to its end"
    finally:
        for stream in streams:
            stream.close()


def test_a_lost_replicas_avatar_is_loaded_on_the_other_at_its_next_request(on_demand):
    """The replica holding an avatar is killed (SIGKILL, as the OOM killer does): the avatar's
    next request is served, the activator loading it on the other replica (the cluster starts the
    lost one again meanwhile, with the shared steps only)."""
    import os

    servers, avatar = on_demand.servers, ROOMERS[0]
    request = CompositeBatchRequest.audio_only(avatar, synthetic.speech_like_audio(1, seed=17))
    time.sleep(IDLE_S * 2.5)  # every avatar loaded before is idle: room may be made from any
    with CompositeClient(on_demand.edge_grpc, timeout_s=60) as client:
        client.infer_batch_composite(request).raise_for_error()
        (held,) = holders(servers, avatar)
        lost = servers[NAMES.index(held)]
        os.kill(lost.pid, signal.SIGKILL)
        time.sleep(0.5)  # past the activator's reading of its metrics (METRICS_TTL_S): it is seen gone
        client.infer_batch_composite(request).raise_for_error()
    other = next(s for s in servers if s is not lost)
    assert loaded_on(other, avatar), "loaded where it was asked for next"
    deadline = time.monotonic() + 120
    while f"{held}: back" not in on_demand.log.read_text():  # the command starts the lost one again
        assert time.monotonic() < deadline, on_demand.log.read_text()
        time.sleep(0.25)

"""The edge (ops/synctalk_ops/edge/): a real Envoy in front of the live CPU-profile server (tiny models),
on loopback. Clients get through it what they get from Triton itself; the restricted APIs are
answered by the edge; a class of requests at its limit is refused by the edge from the request's
headers, before its body reaches Triton, while the other classes are served."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request

import grpc
import pytest

from synctalk_build import paths
from synctalk_client import CompositeClient, synthetic
from synctalk_client.errors import PermissionDeniedError
from synctalk_client.stream import LiveStream
from synctalk_common import contract
from synctalk_ops.edge import GRPC_SERVICE, INFER_METHOD, WAITING_PER_REPLICA, Edge, Replica
from tests.conftest import free_port
from tests.e2e.one_frame_avatar import one_frame_avatar
from tests.e2e.test_pipeline import make_request

pytestmark = pytest.mark.e2e
AVATAR = "edgeavatar"


@pytest.fixture(scope="module")
def edge(server):
    grpc_port, http_port = free_port(), free_port()
    with Edge(
        [Replica.of(server)],
        grpc_port,
        http_port,
        free_port(),
        config_path=paths.BUILD / "edge" / f"test-edge-{grpc_port}.yaml",
        log_path=paths.BUILD / "logs" / "test-edge.log",
    ) as running:
        yield running
    assert running.process.returncode == 0, (paths.BUILD / "logs" / "test-edge.log").read_text()


@pytest.fixture(scope="module")
def avatar(server, tmp_path_factory):
    with one_frame_avatar(server, tmp_path_factory, AVATAR) as avatar_id:
        yield avatar_id


def served(server, model: str) -> int:
    """Requests Triton has seen for ``model`` (served or failed)."""
    with CompositeClient(server.grpc_url) as client:
        stats = client.model_stats(model)[model]["inference_stats"]
    return int(stats.get("success", {}).get("count", 0)) + int(stats.get("fail", {}).get("count", 0))


def counter(edge: Edge, name: str) -> int:
    return edge.stats(name).get(name, 0)


def test_a_request_through_the_edge_is_the_request_to_triton(server, edge):
    for batch, cluster in ((1, "grpc_light"), (8, "grpc_batch"), (12, "grpc_bulk")):
        before = counter(edge, f"cluster.{cluster}.upstream_rq_total")
        request = make_request(batch, seed=batch)
        with CompositeClient(edge.grpc_url) as through, CompositeClient(server.grpc_url) as direct:
            got = through.infer_batch_composite(request).raise_for_error().composited_frames
            assert got == direct.infer_batch_composite(request).raise_for_error().composited_frames
        assert counter(edge, f"cluster.{cluster}.upstream_rq_total") == before + 1, "counted in its class"


def test_a_live_stream_goes_through_the_edge(server, edge, avatar):
    audio = synthetic.speech_like_audio(30, seed=3)
    chunks = [
        audio[i : i + 5 * contract.SAMPLES_PER_FRAME] for i in range(0, len(audio), 5 * contract.SAMPLES_PER_FRAME)
    ]
    with LiveStream(edge.grpc_url, avatar) as live, LiveStream(server.grpc_url, avatar) as direct:
        through = [f for chunk in chunks for f in live.send(chunk)] + live.end()
        expected = [f for chunk in chunks for f in direct.send(chunk)] + direct.end()
    assert [f.index for f in through] == [f.index for f in expected] and through
    assert [f.jpeg for f in through] == [f.jpeg for f in expected]
    assert counter(edge, "cluster.grpc_stream.upstream_rq_total") >= 1


def test_restricted_apis_are_refused_at_the_edge_even_with_the_key(server, edge):
    with CompositeClient(edge.grpc_url) as client:  # this process carries the server's key
        with pytest.raises(PermissionDeniedError) as refused:
            client.load_model(contract.DEFAULT_MODEL_ID)
        assert refused.value.message == contract.MSG_EDGE_RESTRICTED.format(api="model control")
        assert client.health()["ready"], "health goes through"
    key = server.api_key
    for path in (
        f"/v2/repository/models/{contract.DEFAULT_MODEL_ID}/load",
        f"/v2/repository/models/{contract.DEFAULT_MODEL_ID}/unload",
        "/v2/systemsharedmemory/status",
        "/v2/logging",
        "/v2/trace/setting",
    ):
        request = urllib.request.Request(
            edge.http_url + path, data=b"{}", headers={contract.API_KEY_HEADER: key}, method="POST"
        )
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(request, timeout=10)
        assert answer.value.code == 403, path
        assert contract.EDGE_RESTRICTED_MESSAGE in answer.value.read().decode(), path
    with CompositeClient(edge.grpc_url) as client:  # the index is read-only: listed with the key
        assert contract.DEFAULT_MODEL_ID in client.model_ids()
    with CompositeClient(edge.grpc_url, api_key="not-the-key") as client:  # Triton still asks for it
        with pytest.raises(PermissionDeniedError):
            client.model_ids()


def _hold_bulk(edge: Edge):
    """A bulk request whose body never comes: (release, channel, future)."""
    release = threading.Event()

    def body_never_sent():
        release.wait(60)
        return
        yield

    channel = grpc.insecure_channel(edge.grpc_url)
    future = channel.stream_unary(GRPC_SERVICE + INFER_METHOD).future(
        body_never_sent(), metadata=list(contract.edge_headers(contract.DEFAULT_MODEL_ID, 32).items()), timeout=90
    )
    return release, channel, future


def _wait_for(edge: Edge, name: str, value: int, what: str) -> None:
    deadline = time.monotonic() + 30
    while counter(edge, name) != value:
        assert time.monotonic() < deadline, f"{what}: {name} is {counter(edge, name)}, not {value}"
        time.sleep(0.05)


def test_a_full_class_is_refused_before_the_body_and_the_others_are_served(server, edge, avatar):
    """Bulk requests held open at the edge (their headers sent, their bodies never) fill the bulk
    class of this one replica and its waiting line: the next bulk request is refused by the edge,
    Triton never sees it, and light and batch requests and a live stream's frames are served
    meanwhile."""
    waiting = WAITING_PER_REPLICA["bulk"]
    held = [_hold_bulk(edge) for _ in range(1 + waiting)]
    try:
        _wait_for(edge, "cluster.grpc_bulk.upstream_rq_active", 1, "the first held request goes upstream")
        _wait_for(edge, "cluster.grpc_bulk.upstream_rq_pending_active", waiting, "the others wait at the edge")
        seen = served(server, contract.INPUT_VALIDATOR_MODEL)
        assert counter(edge, "cluster.grpc_bulk.circuit_breakers.default.rq_pending_open") == 1, "the line is full"
        with CompositeClient(edge.grpc_url, busy_retries=0) as client:
            refused = client.infer_batch_composite(make_request(32, seed=1))
            assert not refused.success and refused.error_category == contract.CATEGORY_BUSY
            # the class named, no command operator left unfilled (Envoy fills them in a format only)
            assert f"{contract.EDGE_FULL_MESSAGE} (grpc_bulk)" in refused.error, refused.error
            assert "%" not in refused.error, refused.error
            # the other classes are served meanwhile
            for batch in (1, 8):
                assert (
                    len(client.infer_batch_composite(make_request(batch)).raise_for_error().composited_frames) == batch
                )
        assert served(server, contract.INPUT_VALIDATOR_MODEL) == seen + 2, "the refused request never reached Triton"
        with LiveStream(edge.grpc_url, avatar) as live:  # and live frames
            frames = live.send(synthetic.speech_like_audio(20, seed=4)) + live.end()
        assert [f.index for f in frames] == list(range(20))
        assert counter(edge, "cluster.grpc_bulk.upstream_rq_pending_active") == waiting, "still full meanwhile"
    finally:
        for release, channel, future in held:
            release.set()
            future.cancel()
            channel.close()


def test_a_bulk_request_finding_its_class_full_waits_at_the_edge_and_is_served(server, edge):
    """A bulk request that finds its class full waits at the edge, its body held back there (it
    never reaches Triton meanwhile), and goes up as soon as the request ahead of it ends."""
    release, channel, future = _hold_bulk(edge)
    try:
        _wait_for(edge, "cluster.grpc_bulk.upstream_rq_active", 1, "the held request goes upstream")
        seen = served(server, contract.INPUT_VALIDATOR_MODEL)
        before = counter(edge, "cluster.grpc_bulk.upstream_cx_tx_bytes_total")
        with CompositeClient(edge.grpc_url, busy_retries=0) as client:
            results: list = []
            answer = threading.Thread(target=lambda: results.append(client.infer_batch_composite(make_request(12))))
            answer.start()
            _wait_for(edge, "cluster.grpc_bulk.upstream_rq_pending_active", 1, "the request waits at the edge")
            time.sleep(0.5)
            assert served(server, contract.INPUT_VALIDATOR_MODEL) == seen, "Triton saw nothing of it"
            # at most its headers and the held request's went up (the body is 29 MB)
            assert counter(edge, "cluster.grpc_bulk.upstream_cx_tx_bytes_total") - before < 2**20
            release.set()
            future.cancel()  # the request ahead ends
            answer.join(60)
        assert not answer.is_alive()
        assert len(results[0].raise_for_error().composited_frames) == 12
        assert counter(edge, "cluster.grpc_bulk.upstream_rq_pending_active") == 0
    finally:
        release.set()
        future.cancel()
        channel.close()

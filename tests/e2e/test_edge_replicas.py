"""The edge in front of two replicas (tools.cluster, what make cluster runs: tiny models,
loopback), both holding the same avatar. A live stream's requests all reach one replica; a
replica killed under load: requests keep succeeding on the other within seconds."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from synctalk_client import CompositeBatchRequest, CompositeClient, contract, synthetic
from synctalk_client.stream import LiveStream
from tests.conftest import free_port
from tools import avatar_store, paths
from tools.cluster import Cluster
from tools.render_repository import render
from tools.serve import TritonServer

pytestmark = pytest.mark.e2e
AVATAR = "twoplaces"
BOX = [16, 0, 80, 64]


@pytest.fixture(scope="module")
def avatar_folder(tmp_path_factory):
    import cv2

    folder = tmp_path_factory.mktemp(AVATAR)
    cv2.imwrite(str(folder / "0.png"), np.full((64, 96, 3), 90, np.uint8))
    return folder


@pytest.fixture(scope="module")
def two_replicas(models_dir, avatar_folder, tmp_path_factory):
    """(edge, [replica-0, replica-1]): tools.cluster's Cluster of two tiny replicas on one
    repository, the avatar on both, the edge in front."""
    repository = render("cpu", tmp_path_factory.mktemp("cluster") / "repo", models_dir / "tiny")
    avatar_store.add(repository, AVATAR, avatar_folder, BOX)
    ports = [(free_port(), free_port(), free_port()) for _ in range(2)]
    cluster = Cluster(
        repository,
        2,
        free_port(),
        free_port(),
        free_port(),
        replica_ports=ports,
        logs=paths.BUILD / "logs" / "test-cluster",
    )
    with cluster:
        described = json.loads(
            cluster.write_description(tmp_path_factory.mktemp("described") / "replicas.json").read_text()
        )
        assert [r["grpc_port"] for r in described["replicas"]] == [grpc for _, grpc, _ in ports]
        assert all(r["pid"] == s.process.pid for r, s in zip(described["replicas"], cluster.servers))
        yield cluster.edge, cluster.servers


def stream_requests(replica: TritonServer) -> int:
    with CompositeClient(replica.grpc_url) as client:
        stats = client.model_stats(contract.STREAM_MODEL)[contract.STREAM_MODEL]["inference_stats"]
    return int(stats.get("success", {}).get("count", 0))


def test_a_streams_requests_all_reach_one_replica(two_replicas):
    edge, replicas = two_replicas
    audio = synthetic.speech_like_audio(20, seed=4)
    chunk = 2 * contract.SAMPLES_PER_FRAME
    for _ in range(3):
        before = [stream_requests(r) for r in replicas]
        with LiveStream(edge.grpc_url, AVATAR) as live:
            sent = 0
            for start in range(0, len(audio), chunk):
                live.send(audio[start : start + chunk])
                sent += 1
            frames = live.end()
            sent += 1
        assert frames, "the stream's last frames"
        deltas = [stream_requests(r) - b for r, b in zip(replicas, before)]
        assert sorted(deltas) == [0, sent], f"requests per replica {deltas}: one replica served all {sent}"


def test_a_replica_killed_under_load_the_others_serve_within_seconds(two_replicas):
    edge, (_, second) = two_replicas
    audio = synthetic.speech_like_audio(2, seed=5)
    outcomes: list[tuple[float, bool, str]] = []  # (sent at, served, error)
    stop = threading.Event()

    def load():
        with CompositeClient(edge.grpc_url, timeout_s=20) as client:
            while not stop.is_set():
                sent = time.monotonic()
                response = client.infer_batch_composite(CompositeBatchRequest.audio_only(AVATAR, audio))
                outcomes.append((sent, response.success, response.error))

    workers = [threading.Thread(target=load) for _ in range(2)]
    for worker in workers:
        worker.start()
    try:
        time.sleep(2.0)  # load on both replicas
        killed_at = time.monotonic()
        second.kill()  # no drain, no goodbye: a replica lost, the server and its stubs at once
        time.sleep(8.0)
    finally:
        stop.set()
        for worker in workers:
            worker.join(60)
        second.stop()
    before = [o for o in outcomes if o[0] < killed_at]
    after = [o for o in outcomes if o[0] >= killed_at]
    failed = [o for o in after if not o[1]]
    print(f"{len(before)} requests before the kill, {len(after)} after, {len(failed)} failed: {failed[:3]}")
    assert before and all(o[1] for o in before), f"failed before the kill: {[o for o in before if not o[1]][:3]}"
    assert sum(o[1] for o in after) >= 10, f"served by the replica left: {sum(o[1] for o in after)}; {failed[:3]}"
    late = [o for o in failed if o[0] > killed_at + 3.0]
    assert not late, f"requests still failing 3 s after the kill: {late[:3]}"

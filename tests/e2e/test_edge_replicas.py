"""The edge in front of two replicas (synctalk_ops.cluster, what make cluster runs: tiny models,
loopback), the avatars placed on them (synctalk_ops.placement): one avatar on both, two on one each, so
each replica holds fewer avatars than the store has. Every avatar is served through the edge, by
its holders only; an avatar added and removed on the running cluster changes the edge's routes
with no restart; a live stream's requests all reach one replica. (A replica killed under load:
tests/e2e/test_cluster_command.py, through the command an operator runs.)"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import urllib.request

import numpy as np
import pytest

from synctalk_build import avatar_store, paths
from synctalk_build.render_repository import render
from synctalk_build.repository_manifest import avatar_store as avatar_store_of
from synctalk_client import CompositeBatchRequest, CompositeClient, synthetic
from synctalk_client.stream import LiveStream
from synctalk_common import contract
from synctalk_ops import placement
from synctalk_ops.avatars import main as avatars_main
from synctalk_ops.cluster import Cluster, rebalance
from synctalk_ops.placement import ranking
from synctalk_ops.serve import TritonServer
from tests.conftest import free_port

pytestmark = pytest.mark.e2e
AVATAR = "twoplaces"
BOX = [16, 0, 80, 64]


@pytest.fixture(scope="module")
def avatar_folder(tmp_path_factory):
    import cv2

    folder = tmp_path_factory.mktemp(AVATAR)
    cv2.imwrite(str(folder / "0.png"), np.full((64, 96, 3), 90, np.uint8))
    return folder


NAMES = ["replica-0", "replica-1"]
# an avatar whose first choice is each replica (synctalk_ops.placement's ranking), placed on one replica
SOLO = {name: next(f"solo{i}" for i in range(100) if ranking(f"solo{i}", NAMES)[0] == name) for name in NAMES}


@pytest.fixture(scope="module")
def two_replicas(models_dir, avatar_folder, tmp_path_factory):
    """synctalk_ops.cluster's Cluster of two tiny replicas on one repository and its avatar store: the
    avatar on both (the default factor), a solo avatar on each, the edge in front."""
    root = tmp_path_factory.mktemp("cluster")
    repository = render("cpu", root / "repo", models_dir / "tiny", avatar_store=root / "avatars")
    avatar_store.add(repository, AVATAR, avatar_folder, BOX)
    for solo in SOLO.values():
        avatar_store.add(repository, solo, avatar_folder, BOX, options=avatar_store.AvatarOptions(replicas=1))
    ports = [(free_port(), free_port(), free_port()) for _ in range(2)]
    cluster = Cluster(
        repository,
        2,
        free_port(),
        free_port(),
        free_port(),
        replica_ports=ports,
        logs=paths.BUILD / "logs" / "test-cluster",
        replica_memory=8 * 2**30,
    )
    with cluster:
        described_path = cluster.write_description(tmp_path_factory.mktemp("described") / "replicas.json")
        described = json.loads(described_path.read_text())
        assert [r["grpc_port"] for r in described["replicas"]] == [grpc for _, grpc, _ in ports]
        assert all(r["pid"] == s.process.pid for r, s in zip(described["replicas"], cluster.servers))
        assert [r["avatars"] for r in described["replicas"]] == [sorted([AVATAR, SOLO[n]]) for n in NAMES]
        cluster.described_path = described_path
        yield cluster


def served_by(replica: TritonServer, model: str) -> int:
    with CompositeClient(replica.grpc_url) as client:
        if model not in client.model_ids():
            return 0
        stats = client.model_stats(model)[model]["inference_stats"]
    return int(stats.get("success", {}).get("count", 0))


def test_each_avatar_is_served_through_the_edge_by_its_holders_only(two_replicas):
    replicas = two_replicas.servers
    audio = synthetic.speech_like_audio(2, seed=6)
    for i in range(len(NAMES)):
        with CompositeClient(replicas[i].grpc_url) as client:
            assert SOLO[NAMES[1 - i]] not in client.model_ids(), "each replica holds fewer avatars than the store"
    with CompositeClient(two_replicas.grpc_url) as client:
        for avatar in [AVATAR, *SOLO.values()]:
            before = [served_by(r, avatar) for r in replicas]
            for _ in range(4):
                client.infer_batch_composite(CompositeBatchRequest.audio_only(avatar, audio)).raise_for_error()
            deltas = [served_by(r, avatar) - b for r, b in zip(replicas, before)]
            assert sum(deltas) == 4, (avatar, deltas)
            if avatar in SOLO.values():
                holder = NAMES.index(next(n for n, a in SOLO.items() if a == avatar))
                assert deltas[holder] == 4, f"{avatar}: requests per replica {deltas}, all on its holder"
    # HTTP clients are routed by the model id in the path: a solo avatar is ready on its holder only
    for solo in SOLO.values():
        for _ in range(6):
            with urllib.request.urlopen(f"{two_replicas.http_url}/v2/models/{solo}/ready", timeout=10) as answer:
                assert answer.status == 200, solo


def test_an_avatar_added_and_removed_live_changes_the_routes_without_a_restart(two_replicas, avatar_folder, capsys):
    """synctalk-avatars add/remove --cluster: placed, loaded on its holder, routed there; routed
    away and unloaded; the edge never restarted."""
    repository = two_replicas.servers[0].repository
    edge_pid = two_replicas.edge.process.pid
    late = "latecomer"
    avatars = ["--repository", str(repository)]
    box = ",".join(map(str, BOX))
    cluster = ["--cluster", str(two_replicas.described_path)]
    try:
        add = ["add", "--id", late, "--background", str(avatar_folder), "--boxes", box, "--replicas", "1"]
        assert avatars_main([*avatars, *add, *cluster]) == 0
        holders = ranking(late, NAMES)[:1]
        assert f"placed {late} on {holders[0]}" in capsys.readouterr().out
        avatars_main([*avatars, "list"])
        listed = next(line for line in capsys.readouterr().out.splitlines() if line.startswith(late))
        assert listed.endswith(f"on {holders[0]}"), listed
        holder = two_replicas.servers[NAMES.index(holders[0])]
        audio = synthetic.speech_like_audio(2, seed=7)
        with CompositeClient(two_replicas.grpc_url, busy_retries=0) as client:
            for _ in range(4):  # routed there as soon as the command returned
                client.infer_batch_composite(CompositeBatchRequest.audio_only(late, audio)).raise_for_error()
            assert served_by(holder, late) == 4, "all on its holder"
            assert avatars_main([*avatars, "remove", "--id", late, *cluster]) == 0
            assert f"taken off {holders[0]}" in capsys.readouterr().out
            gone = client.infer_batch_composite(CompositeBatchRequest.audio_only(late, audio))
            assert not gone.success and gone.error == f"model not found: {late}", gone.error
        assert two_replicas.edge.process.pid == edge_pid and two_replicas.edge.process.poll() is None
    finally:
        if (repository / late).exists():
            avatar_store.remove(repository, late)


def stream_requests(replica: TritonServer) -> int:
    with CompositeClient(replica.grpc_url) as client:
        stats = client.model_stats(contract.STREAM_MODEL)[contract.STREAM_MODEL]["inference_stats"]
    return int(stats.get("success", {}).get("count", 0))


def test_a_streams_requests_all_reach_one_replica(two_replicas):
    edge, replicas = two_replicas.edge, two_replicas.servers
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


@contextlib.contextmanager
def requests_running(url: str, avatars: list[str], seed: int, **client_options):
    """Two clients asking ``url`` for ``avatars`` in turn until the block ends; yields the outcomes
    as they come: (sent at, avatar, served, error)."""
    audio = synthetic.speech_like_audio(2, seed=seed)
    outcomes: list[tuple[float, str, bool, str]] = []
    stop = threading.Event()

    def load():
        with CompositeClient(url, timeout_s=20, **client_options) as client:
            while not stop.is_set():
                for avatar in avatars:
                    sent = time.monotonic()
                    response = client.infer_batch_composite(CompositeBatchRequest.audio_only(avatar, audio))
                    outcomes.append((sent, avatar, response.success, response.error))

    workers = [threading.Thread(target=load) for _ in range(2)]
    for worker in workers:
        worker.start()
    try:
        yield outcomes
    finally:
        stop.set()
        for worker in workers:
            worker.join(60)


def test_a_replica_rebalanced_away_and_one_added_lose_no_request(two_replicas):
    """Before a replica is removed, synctalk_ops.cluster.rebalance without it moves its avatars onto the
    other (loaded there, routed there, unloaded from it), then it is removed; a replica added (the
    shared steps, no avatar) is given its share by a rebalance: all while requests for every avatar
    keep coming, no retries: none fails. (Two replicas at most: a third beside the suite's server
    does not fit this host's memory.)"""
    cluster, repository = two_replicas, two_replicas.servers[0].repository
    solo = SOLO["replica-1"]
    every = [solo, AVATAR, SOLO["replica-0"]]
    with requests_running(cluster.grpc_url, every, seed=8, retries=0, busy_retries=0) as outcomes:
        time.sleep(1.0)
        described = cluster.describe()
        without = {**described, "replicas": [r for r in described["replicas"] if r["name"] != "replica-1"]}
        away = rebalance(repository, without)
        cluster.remove_replica("replica-1")
        served_while_one = len(outcomes)
        time.sleep(1.0)
        added = cluster.add_replica((free_port(), free_port(), free_port()))
        back = rebalance(repository, cluster.describe())
        time.sleep(1.0)
    assert away == {AVATAR: ([], ["replica-1"]), solo: (["replica-0"], ["replica-1"])}, away
    assert back == {AVATAR: (["replica-1"], []), solo: (["replica-1"], ["replica-0"])}, back
    failed = [o for o in outcomes if not o[2]]
    assert len(outcomes) > served_while_one >= 6 and not failed, f"{len(outcomes)} requests, failed: {failed[:3]}"
    before = served_by(added, solo)
    audio = synthetic.speech_like_audio(2, seed=8)
    with CompositeClient(cluster.grpc_url) as client:
        for _ in range(3):
            client.infer_batch_composite(CompositeBatchRequest.audio_only(solo, audio)).raise_for_error()
    assert served_by(added, solo) == before + 3, "served by its new holder"
    with CompositeClient(cluster.servers[0].grpc_url) as client:
        assert solo not in client.model_ids(), "unloaded from the one it left"
    assert placement.load(avatar_store_of(repository)).holders[solo] == ["replica-1"], "kept in the store"

"""The edge as it runs in Kubernetes: its clusters (the replicas by name, each with the avatars
placed on it) read from a ConfigMap's volume, which the kubelet swaps whole when the rebalance Job
rewrites the ConfigMap. Here the swap is made as the kubelet makes it (a fresh folder, the
``..data`` link renamed onto it), in front of the live CPU-profile server (tiny models): Envoy takes
the new clusters with no restart, and a live stream through it goes on across the swap."""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.request
from pathlib import Path

import pytest

from synctalk_build import paths
from synctalk_client import synthetic
from synctalk_client.stream import LiveStream
from synctalk_common import contract
from synctalk_ops.edge import CLUSTERS_FILE, Edge, Replica, clusters_response, text_of
from tests.conftest import free_port
from tests.e2e.one_frame_avatar import one_frame_avatar

pytestmark = pytest.mark.e2e
AVATAR = "routedavatar"


def kubelet_update(volume: Path, files: dict[str, str]) -> None:
    """What the kubelet does to a ConfigMap's volume when the ConfigMap changes: the files written
    into a fresh timestamped folder, the ``..data`` link renamed onto it (one atomic step), the
    old folder removed; each file of the volume is a link through ``..data``."""
    volume.mkdir(parents=True, exist_ok=True)
    data = volume / "..data"
    old = data.resolve() if data.is_symlink() else None
    fresh = volume / f"..{time.time_ns()}"
    fresh.mkdir()
    for name, text in files.items():
        (fresh / name).write_text(text)
    (volume / "..data_tmp").symlink_to(fresh.name)
    os.replace(volume / "..data_tmp", data)
    for name in files:
        if not (volume / name).is_symlink():
            (volume / name).symlink_to(f"..data/{name}")
    if old is not None:
        shutil.rmtree(old)


def replicas(server, avatars: tuple[str, ...]) -> list[Replica]:
    """The live server by name, as a pod is (Envoy resolves it), and a pod that does not exist
    (the StatefulSet's later ordinals until it scales: no address, no host)."""
    return [
        Replica("synctalk-triton-0", "localhost", server.grpc_port, server.http_port, avatars),
        Replica("synctalk-triton-1", "synctalk-triton-1.invalid", server.grpc_port, server.http_port, ()),
    ]


def active_versions(edge: Edge) -> dict[str, str]:
    with urllib.request.urlopen(f"{edge.admin_url}/config_dump?resource=dynamic_active_clusters", timeout=5) as r:
        dump = json.load(r)
    return {c["cluster"]["name"]: c["version_info"] for c in dump["configs"]}


def chunks_of(frames: int, seed: int) -> list:
    audio = synthetic.speech_like_audio(frames, seed=seed)
    step = 4 * contract.SAMPLES_PER_FRAME
    return [audio[i : i + step] for i in range(0, len(audio), step)]


def test_the_edge_takes_rewritten_routes_with_no_restart_and_a_stream_goes_on(server, tmp_path, tmp_path_factory):
    volume = tmp_path / "edge-routes"
    before = clusters_response(replicas(server, ()), "cpu")
    kubelet_update(volume, {CLUSTERS_FILE: text_of(before)})
    grpc_port = free_port()
    log = paths.BUILD / "logs" / "test-edge-configmap.log"
    with (
        one_frame_avatar(server, tmp_path_factory, AVATAR) as avatar,
        Edge(
            replicas(server, ()),
            grpc_port,
            free_port(),
            free_port(),
            config_path=paths.BUILD / "edge" / f"test-edge-configmap-{grpc_port}.yaml",
            log_path=log,
            clusters_dir=volume,
        ) as edge,
    ):
        assert set(active_versions(edge).values()) == {before["version_info"]}
        pid = edge.process.pid
        chunks = chunks_of(40, seed=5)
        half = len(chunks) // 2
        with LiveStream(edge.grpc_url, avatar) as live, LiveStream(server.grpc_url, avatar) as direct:
            through = [f for chunk in chunks[:half] for f in live.send(chunk)]
            assert through, "frames before the routes change"

            after = clusters_response(replicas(server, (avatar,)), "cpu")
            assert after["version_info"] != before["version_info"]
            kubelet_update(volume, {CLUSTERS_FILE: text_of(after)})
            deadline = time.monotonic() + 10
            while set(active_versions(edge).values()) != {after["version_info"]}:
                assert time.monotonic() < deadline, "the edge did not take the new clusters"
                time.sleep(0.05)

            through += [f for chunk in chunks[half:] for f in live.send(chunk)] + live.end()
            expected = [f for chunk in chunks for f in direct.send(chunk)] + direct.end()
        assert [f.index for f in through] == [f.index for f in expected]
        assert [f.jpeg for f in through] == [f.jpeg for f in expected], "the stream went on, frame for frame"
        assert edge.process.pid == pid and edge.process.poll() is None, "no restart"
        with LiveStream(edge.grpc_url, avatar) as live:  # routed to its holder now
            assert live.send(chunks[0]) + live.end()
        assert edge.stats("cluster.grpc_stream.lb_subsets_selected")["cluster.grpc_stream.lb_subsets_selected"] >= 1
    assert edge.process.returncode == 0, log.read_text()

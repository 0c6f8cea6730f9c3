"""`make cluster` as an operator runs it (``python -m synctalk_ops.cluster``, tiny models, loopback): a
replica's tritonserver killed under load (SIGKILL, its pid from the cluster's description) is logged
and started again with its share while the edge and the other replica go on serving; a budget this
host cannot give and ports that collide are refused before anything starts."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from synctalk_build import paths
from synctalk_build.render_repository import render
from synctalk_client import CompositeClient
from synctalk_common import contract
from synctalk_ops.cluster import PORT_STRIDE
from tests.conftest import free_port, run_command
from tests.e2e.test_pipeline import make_request

pytestmark = pytest.mark.e2e


def free_port_base(replicas: int) -> int:
    """A first port from which every replica's three ports (synctalk_ops.cluster.default_ports) are free."""
    return free_port([PORT_STRIDE * i + k for i in range(replicas) for k in range(3)])


def cluster_command(repository, *args) -> list[str]:
    return [sys.executable, "-m", "synctalk_ops.cluster", "--repository", str(repository), *args]


@dataclass
class Launched:
    """``python -m synctalk_ops.cluster`` running, as an operator runs it, its output in a file."""

    process: subprocess.Popen
    log: Path
    described: Path  # its replicas.json
    grpc: int  # the edge's ports
    http: int

    def wait_announced(self, timeout_s: float = 180) -> dict:
        """Its description, once it says it is ready."""
        deadline = time.monotonic() + timeout_s
        while "tritonserver ready" not in self.log.read_text():
            assert self.process.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, f"not ready in {timeout_s:.0f} s: {self.log.read_text()}"
            time.sleep(0.25)
        return json.loads(self.described.read_text())


def launch(repository, folder: Path, logs: str, *args: str) -> Launched:
    """The cluster command with ``args`` on free ports: 2 replicas unless ``args`` say otherwise."""
    grpc, http, admin, base = free_port(), free_port(), free_port(), free_port_base(2)
    described, log = folder / "replicas.json", folder / "cluster.out"
    command = cluster_command(
        repository,
        *(args if "--replicas" in args else ("--replicas", "2", *args)),
        *("--grpc-port", str(grpc), "--http-port", str(http), "--admin-port", str(admin)),
        *("--replica-ports", str(base), "--replicas-file", str(described)),
        *("--logs", str(paths.BUILD / "logs" / logs)),
    )
    with open(log, "w") as out:
        process = subprocess.Popen(command, cwd=paths.ROOT, stdout=out, stderr=subprocess.STDOUT, text=True)
    return Launched(process, log, described, grpc, http)


def served_on(grpc_port: int) -> int:
    """Successful inferences of the default ensemble on one replica (its own port)."""
    with CompositeClient(f"127.0.0.1:{grpc_port}") as client:
        stats = client.model_stats(contract.DEFAULT_MODEL_ID)[contract.DEFAULT_MODEL_ID]["inference_stats"]
    return int(stats.get("success", {}).get("count", 0))


def test_a_replica_killed_under_make_cluster_is_started_again_while_the_rest_serves(tmp_path, models_dir):
    """Three clients send 1-frame requests through the edge; replica-0's tritonserver is killed
    (its stubs left orphaned, as the OOM killer leaves them): the command keeps running, requests
    from 3 s after the kill are all served, replica-0 comes back with a new pid, ready, and serves
    through the edge again; Ctrl-C then stops everything and frees every port."""
    repository = render("cpu", tmp_path / "repo", models_dir / "tiny")
    cluster = launch(repository, tmp_path, "test-cluster-command")
    process, log, described, grpc = cluster.process, cluster.log, cluster.described, cluster.grpc
    outcomes: list[tuple[float, bool, str]] = []
    stop = threading.Event()

    def load(seed: int):
        with CompositeClient(f"127.0.0.1:{grpc}", timeout_s=30) as client:
            while not stop.is_set():
                sent = time.monotonic()
                response = client.infer_batch_composite(make_request(1, seed=seed))
                outcomes.append((sent, response.success, response.error))

    workers = [threading.Thread(target=load, args=(seed,)) for seed in range(3)]
    try:
        deadline = time.monotonic() + 180
        first = cluster.wait_announced()["replicas"]
        for worker in workers:
            worker.start()
        time.sleep(2.0)
        killed_at = time.monotonic()
        os.kill(first[0]["pid"], signal.SIGKILL)
        while "replica-0: back" not in log.read_text():
            assert process.poll() is None, f"make cluster exited with {process.returncode}: {log.read_text()}"
            assert time.monotonic() < deadline + 120, f"replica-0 not back: {log.read_text()}"
            time.sleep(0.25)
        back = json.loads(described.read_text())["replicas"]
        assert back[0]["pid"] != first[0]["pid"] and back[0]["restarts"] == 1 and back[0]["down"] is None, back
        assert back[1]["pid"] == first[1]["pid"], "the other replica was never stopped"
        served_before = served_on(back[0]["grpc_port"])
        until = time.monotonic() + 30  # the edge's health check and outlier ejection let it back in
        while served_on(back[0]["grpc_port"]) == served_before:
            assert time.monotonic() < until, "the restarted replica got no request through the edge in 30 s"
            time.sleep(0.5)
        time.sleep(1.0)
    finally:
        stop.set()
        for worker in workers:
            worker.join(60)
        if process.poll() is None:
            process.send_signal(signal.SIGINT)  # Ctrl-C
        code = process.wait(timeout=90)
    text = log.read_text()
    print(text)
    assert "replica-0 (pid" in text and "was killed by SIGKILL" in text and "starting it again" in text, text
    assert code == 0, f"make cluster exited with {code} on Ctrl-C: {text}"
    after = [o for o in outcomes if o[0] >= killed_at]
    late = [o for o in after if o[0] > killed_at + 3.0 and not o[1]]
    assert sum(o[1] for o in after) >= 10, f"served after the kill: {sum(o[1] for o in after)}"
    assert not late, f"{len(late)} requests failed 3 s or more after the kill: {late[:3]}"
    for replica in back:
        for port in (replica["grpc_port"], replica["http_port"]):
            with socket.socket() as probe:
                assert probe.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still listens after Ctrl-C"


def test_make_cluster_refuses_a_budget_this_host_cannot_give(tmp_path, models_dir):
    """REPLICA_MEMORY that, with each replica's shared steps and in-flight reserve, exceeds what
    this host has available: refused at once, with the numbers and what to give instead."""
    import psutil

    repository = render("cpu", tmp_path / "repo", models_dir / "tiny")
    budget = psutil.virtual_memory().total // 3  # three of these alone are all this host's memory
    done = run_command(cluster_command(repository, "--replicas", "3", "--replica-memory", str(budget)))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "does not fit this host: 3 x (" in done.stderr and "give at most" in done.stderr, done.stderr
    assert "tritonserver ready" not in done.stdout


def test_make_cluster_refuses_ports_that_collide_before_starting_anything(tmp_path, models_dir):
    """Replica ports from the edge's: refused at once, the colliding ports and their roles named."""
    repository = render("cpu", tmp_path / "repo", models_dir / "tiny")
    http = free_port()
    started = time.monotonic()
    done = run_command(
        cluster_command(repository, "--http-port", str(http), "--replica-ports", str(http), "--logs", str(tmp_path))
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"port {http} is given twice: the edge's HTTP port and replica-0's HTTP port" in done.stderr, done.stderr
    assert time.monotonic() - started < 30 and not list(tmp_path.glob("replica-*.log")), "nothing was started"

"""`synctalk-serve` (what `make serve` runs, synctalk_ops.serve): the edge and the server in the foreground,
ready, a clean stop of both on SIGTERM or Ctrl-C."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from synctalk_build import paths
from synctalk_build.render_repository import render
from synctalk_client import CompositeClient
from synctalk_ops import cpu_share
from synctalk_ops.serve import TritonServer
from tests.conftest import free_port, run_command
from tests.e2e.test_pipeline import make_request

pytestmark = pytest.mark.e2e


def test_serve_runs_the_edge_and_triton_in_the_foreground_and_stops_both(tmp_path, models_dir):
    """make serve: clients' ports are the edge's; Triton behind it on the replica ports, a
    scheduling group of its own; one readiness line; SIGTERM (a container's stop; Ctrl-C's SIGINT
    goes to the same handler, synctalk_ops.serve) stops both, and nothing is left listening."""
    stop_signal = signal.SIGTERM
    repository = render("cpu", tmp_path / "repo", models_dir / "tiny")
    http, grpc, metrics, replica_http, replica_grpc, admin = (free_port() for _ in range(6))
    command = [
        str(Path(sys.executable).parent / "synctalk-serve"),
        *("--repository", str(repository), "--http-port", str(http), "--grpc-port", str(grpc)),
        *("--metrics-port", str(metrics), "--replica-http-port", str(replica_http)),
        *("--replica-grpc-port", str(replica_grpc), "--admin-port", str(admin)),
    ]
    process = subprocess.Popen(command, cwd=paths.ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    through_edge = TritonServer(repository, http, grpc, metrics)
    replica = TritonServer(repository, replica_http, replica_grpc, metrics)
    try:
        deadline = time.monotonic() + 120
        while not through_edge.is_ready():
            assert process.poll() is None, process.stdout.read()
            assert time.monotonic() < deadline, "not ready in 120 s"
            time.sleep(0.25)
        assert replica.is_ready()
        with CompositeClient(through_edge.grpc_url) as client:
            assert client.infer_batch_composite(make_request(2)).raise_for_error().composited_frames
        # Triton is a scheduling group of its own, with its larger share (synctalk_ops.cpu_share)
        triton = next(p for p in psutil.Process(process.pid).children() if p.name() == "tritonserver")
        assert os.getsid(triton.pid) == triton.pid != os.getsid(process.pid)
        if cpu_share.autogroup_enabled():
            assert Path(f"/proc/{triton.pid}/autogroup").read_text().split()[-1] == str(cpu_share.SERVER_NICE)
        while not process.stdout.readline().startswith("tritonserver ready: gRPC 127.0.0.1:"):
            assert process.poll() is None and time.monotonic() < deadline, "no readiness line"
        process.send_signal(stop_signal)
        assert process.wait(timeout=60) == 0
        assert f"the replica itself: gRPC 127.0.0.1:{replica_grpc}" in process.stdout.read()
        assert not through_edge.is_ready() and not replica.is_ready()
        for port in (http, grpc, replica_http, replica_grpc, admin):
            with socket.socket() as probe:
                assert probe.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still listens"
    finally:
        if process.poll() is None:
            process.kill()


def test_serve_refuses_ports_that_collide_or_are_taken_before_starting_anything(tmp_path, models_dir):
    """The edge's ports given as Triton's own (its defaults 8100/8101), and a port something already
    listens on: refused at once with the ports and their flags named, no model loaded."""
    repository = render("cpu", tmp_path / "repo", models_dir / "tiny")
    serve = [str(Path(sys.executable).parent / "synctalk-serve"), "--repository", str(repository)]
    collide = run_command(
        [
            *serve,
            "--model-control-mode",
            "explicit",
            "--http-port",
            "8100",
            "--grpc-port",
            "8101",
            "--metrics-port",
            "8102",
        ]
    )
    assert collide.returncode == 2, collide.stdout + collide.stderr
    for port, kind in ((8100, "HTTP"), (8101, "gRPC")):
        both = (
            f"the edge's {kind} port (--{kind.lower()}-port) and Triton's {kind} port (--replica-{kind.lower()}-port)"
        )
        assert f"port {port} is given twice: {both}" in collide.stderr, collide.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ports = [str(free_port()) for _ in range(2)]
        refused = run_command(
            [*serve, "--no-edge", "--grpc-port", str(port), "--http-port", ports[0], "--metrics-port", ports[1]]
        )
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert f"port {port} (Triton's gRPC port (--grpc-port)) is already in use" in refused.stderr, refused.stderr

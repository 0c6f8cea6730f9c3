"""`synctalk-serve` (what `make serve` runs, tools.serve): foreground server, ready, clean stop on SIGTERM."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import free_port
from tools import paths
from tools.render_repository import render
from tools.serve import TritonServer

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_serve_runs_in_the_foreground_and_stops_cleanly(tmp_path, models_dir, stop_signal):
    repository = render("cpu", tmp_path / "repo", models_dir / "tiny")
    ports = [free_port() for _ in range(3)]
    command = [
        str(Path(sys.executable).parent / "synctalk-serve"),
        "--repository",
        str(repository),
        "--http-port",
        str(ports[0]),
        "--grpc-port",
        str(ports[1]),
        "--metrics-port",
        str(ports[2]),
    ]
    process = subprocess.Popen(command, cwd=paths.ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    probe = TritonServer(repository, *ports)
    try:
        deadline = time.monotonic() + 120
        while not probe.is_ready():
            assert process.poll() is None, process.stdout.read()
            assert time.monotonic() < deadline, "not ready in 120 s"
            time.sleep(0.25)
        time.sleep(1.0)  # let the launcher see readiness and announce it
        process.send_signal(stop_signal)
        assert process.wait(timeout=60) == 0
        assert "tritonserver ready: gRPC 127.0.0.1:" in process.stdout.read()
        assert not probe.is_ready()
    finally:
        if process.poll() is None:
            process.kill()


def test_a_missing_model_file_fails_the_start_loudly(tmp_path, models_dir):
    repository = render("cpu", tmp_path / "repo", models_dir / "tiny")
    (repository / "synctalk" / "1" / "model.onnx").unlink()
    server = TritonServer(repository, free_port(), free_port(), free_port(), log_path=tmp_path / "server.log")
    with pytest.raises(RuntimeError, match="exited with code") as info:
        with server:
            pass
    assert "synctalk" in str(info.value)

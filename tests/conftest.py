"""Shared fixtures: stand-in models, rendered repositories and a live tritonserver (CPU profile)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from synctalk_build import build_models, paths
from synctalk_build.render_repository import render
from synctalk_ops.launched import free_port
from synctalk_ops.serve import TritonServer  # noqa: F401 - the tests' free_port


def agents_python() -> Path:
    """The agents' environment's Python (``make agents``: pipecat-ai and this project), where the
    Pipecat tests run."""
    python = paths.ROOT / ".venv-agents" / "bin" / "python"
    if not python.exists():
        pytest.fail(f"{python} is missing: `make agents` makes it (make test does)")
    return python


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """build/models with both variants (built once if `make models` has not run)."""
    for variant in build_models.VARIANTS:
        target = paths.MODELS / variant
        files = (
            build_models.GENERATOR_FILE,
            build_models.AUDIO_ENCODER_FILE,
            build_models.SYNCTALK2D_AUDIO_ENCODER_FILE,
        )
        if not all((target / f).is_file() for f in files):
            build_models.build(paths.MODELS, [variant])
    return paths.MODELS


def _serve(tmp_path_factory, models_dir: Path, variant: str):
    repository = render("cpu", tmp_path_factory.mktemp(f"repository-{variant}") / "cpu", models_dir / variant)
    # one log per server (repository-tiny0, repository-tiny1, ...): a second server of the same
    # variant, started while the session's runs, must not write over the session server's log
    log = paths.BUILD / "logs" / f"test-tritonserver-{repository.parent.name}.log"
    # explicit model control (every model loaded at start): tests add, load and unload avatars
    server = TritonServer(
        repository, free_port(), free_port(), free_port(), log_path=log, model_control_mode="explicit"
    )
    with server:
        yield server
    assert server.process.returncode == 0, f"tritonserver exited with {server.process.returncode}; see {log}"


@pytest.fixture(scope="session")
def server(tmp_path_factory, models_dir):
    """A real tritonserver serving the CPU profile with the tiny stand-in models."""
    yield from _serve(tmp_path_factory, models_dir, "tiny")


@pytest.fixture(scope="module")
def full_server(tmp_path_factory, models_dir):
    """A real tritonserver serving the CPU profile with the full-size stand-in models."""
    yield from _serve(tmp_path_factory, models_dir, "full")


@pytest.fixture()
def client(server):
    from synctalk_client import CompositeClient

    with CompositeClient(server.grpc_url, timeout_s=120) as c:
        yield c


def run_command(command: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
    """A command run to its end from the checkout's root, its output captured as text (what an
    operator's command prints when it refuses to start)."""
    return subprocess.run(command, cwd=paths.ROOT, capture_output=True, text=True, timeout=timeout)

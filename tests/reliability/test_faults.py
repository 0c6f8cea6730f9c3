"""Faults: a backend stub killed with requests in flight, and broken model files at start."""

import os
import signal
import threading
import time
from pathlib import Path

import psutil
import pytest

from synctalk_build.render_repository import render
from synctalk_client import CompositeBatchRequest, CompositeClient, synthetic
from synctalk_common import contract
from synctalk_ops.process_tree import stub_counts
from synctalk_ops.serve import TritonServer
from synctalk_ops.shm_cleanup import shm_regions
from synctalk_preprocessing import admission
from tests.conftest import free_port

pytestmark = pytest.mark.e2e


def make_request(batch, seed=0):
    crops = synthetic.face_crops(batch, seed=seed)
    return CompositeBatchRequest.from_arrays(
        contract.DEFAULT_MODEL_ID, crops, synthetic.masked(crops), synthetic.speech_like_audio(batch, seed=seed)
    )


def stub_pids(server: TritonServer, model: str):
    pids = []
    for child in psutil.Process(server.process.pid).children(recursive=True):
        if any(arg.endswith(f"/{model}/1/model.py") for arg in child.cmdline()):
            pids.append(child.pid)
    return pids


@pytest.fixture()
def own_server(tmp_path, models_dir):
    """A server of this test's own: the fault must not leak into the shared one."""
    repository = render("cpu", tmp_path / "repo", models_dir / "tiny")
    with TritonServer(
        repository, free_port(), free_port(), free_port(), log_path=tmp_path / "server.log", supervise=True
    ) as server:
        yield server


def test_killed_stub_gives_clear_errors_and_service_recovers(own_server, tmp_path):
    request = make_request(8, seed=3)
    with CompositeClient(own_server.grpc_url, timeout_s=60) as client:
        expected = client.infer_batch_composite(request).raise_for_error().composited_frames
    (victim,) = stub_pids(own_server, contract.FRAME_RESIZE_MODEL)

    results = []

    def send():
        with CompositeClient(own_server.grpc_url, timeout_s=60, stage_timings=False) as c:
            started = time.monotonic()
            results.append((c.infer_batch_composite(request), time.monotonic() - started))

    threads = [threading.Thread(target=send) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.3)  # requests in flight
    killed_at = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    for t in threads:
        t.join(timeout=90)
    assert not any(t.is_alive() for t in threads), "a call hung past its deadline"
    for response, elapsed in results:
        assert elapsed < 60
        if not response.success:  # the affected requests get a clear processing error
            assert response.error_category == "processing" and response.error
        else:
            assert response.composited_frames == expected

    # service recovers without restarting the server
    recovered_at = None
    with CompositeClient(own_server.grpc_url, timeout_s=60, stage_timings=False) as client:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            response = client.infer_batch_composite(request)
            if response.success:
                assert response.composited_frames == expected
                recovered_at = time.monotonic()
                break
            time.sleep(0.5)
    assert recovered_at is not None, "service did not recover within 120 s"
    assert own_server.process.poll() is None, "the server itself must stay up"
    assert [r["model"] for r in own_server.supervisor.reloads] == [contract.FRAME_RESIZE_MODEL]
    assert stub_counts(own_server.process.pid)[contract.FRAME_RESIZE_MODEL] == 1
    # stopping the server (after such a fault it may have to be killed) leaves no 256 MB region behind
    regions = shm_regions(own_server.process.pid)
    assert regions and all(Path(r).exists() for r in regions)
    gate = admission.gate_path(own_server.process.pid)
    assert gate.exists()  # the door's table
    # the reloaded model's old instance (its stub killed) never finishes unloading in this Python
    # backend, so the server would wait out its 30 s exit timeout: the launcher's kill after a
    # SIGTERM not obeyed in time is what this checks, 5 s is enough to see it
    own_server.stop(timeout=5)
    assert not [r for r in regions if Path(r).exists()], "shared-memory regions left in /dev/shm"
    assert not gate.exists(), "the door's table left in /dev/shm"
    (tmp_path / "recovery_s.txt").write_text(f"{recovered_at - killed_at:.2f}\n")
    print(
        f"recovery after kill -9 of the {contract.FRAME_RESIZE_MODEL} stub: {recovered_at - killed_at:.2f} s; "
        f"{sum(not r.success for r, _ in results)} of {len(results)} in-flight requests failed"
    )


def test_broken_model_files_fail_the_start_loudly_with_the_models_names(tmp_path, models_dir):
    """One model's file missing, another's not ONNX: the start fails, naming each (one server
    start for both: Triton loads every model before it gives up)."""
    repository = render("cpu", tmp_path / "repo", models_dir / "tiny")
    (repository / contract.AUDIO_ENCODER_MODEL / "1" / "model.onnx").unlink()
    (repository / contract.GENERATOR_MODEL / "1" / "model.onnx").write_bytes(b"this is not an ONNX model" * 100)
    server = TritonServer(repository, free_port(), free_port(), free_port(), log_path=tmp_path / "server.log")
    with pytest.raises(RuntimeError, match="exited with code") as info:
        with server:
            pass
    assert server.process.returncode not in (0, None)
    assert f"failed to load '{contract.AUDIO_ENCODER_MODEL}'" in str(info.value), "the missing file's model"
    assert f"failed to load '{contract.GENERATOR_MODEL}'" in str(info.value), "the corrupt file's model"


def test_the_launcher_removes_regions_no_process_maps(tmp_path):
    """A server killed outright (or dead before its regions were read) leaves 256 MB regions in
    /dev/shm: the next start or stop of any launcher removes those no live process maps."""
    import mmap
    import os
    import uuid

    from synctalk_ops.shm_cleanup import SHM_DIR, SHM_REGION_PREFIX, remove_orphaned_shm_regions

    orphan, live, young = (
        SHM_DIR / f"{SHM_REGION_PREFIX}test-{kind}-{uuid.uuid4()}" for kind in ("orphan", "live", "young")
    )
    for region in (orphan, live, young):
        region.write_bytes(b"\0" * 4096)
    old = time.time() - 3600
    os.utime(orphan, (old, old))
    os.utime(live, (old, old))
    with open(live, "r+b") as f, mmap.mmap(f.fileno(), 4096):  # mapped by this process: in use
        removed = remove_orphaned_shm_regions()
    try:
        assert str(orphan) in removed and not orphan.exists()
        assert live.exists() and young.exists(), "a mapped region and a just-created one stay"
    finally:
        for region in (live, young):
            region.unlink(missing_ok=True)


def test_a_server_that_goes_away_ends_its_live_streams_with_a_clear_error(tmp_path, models_dir):
    import cv2
    import numpy as np

    from synctalk_build import avatar_store
    from synctalk_client.stream import LiveStream, StreamClosedError

    repository = render("cpu", tmp_path / "repo", models_dir / "tiny")
    cv2.imwrite(str(tmp_path / "0.png"), np.full((64, 96, 3), 90, np.uint8))
    avatar_store.add(repository, "gone", tmp_path, [16, 0, 80, 64])
    server = TritonServer(repository, free_port(), free_port(), free_port(), log_path=tmp_path / "server.log")
    with server:
        live = LiveStream(server.grpc_url, "gone", timeout_s=20)
        assert live.send(np.zeros(contract.SAMPLES_PER_FRAME, np.int16)) == []
        # Triton's gRPC server drains an open stream before it exits: the launcher's SIGTERM waits,
        # then kills it (here after 3 s rather than the default 30: the client sees the same)
        server.stop(timeout=3)
    started = time.perf_counter()
    with pytest.raises(StreamClosedError, match="the server went away|is not open"):
        live.send(np.zeros(contract.SAMPLES_PER_FRAME, np.int16))
    assert time.perf_counter() - started < 10, "a clear error, not a hang"
    live.close()


def test_a_server_stopped_while_it_loads_its_models_leaves_no_stub_behind(tmp_path, models_dir):
    """A replica started again and stopped with its cluster before it was ready: tritonserver exits
    during its models' loads without the stubs it had started (seen living on, 0.5 GB); the
    launcher's stop ends them."""
    from synctalk_ops.process_tree import orphaned_stubs

    repository = render("cpu", tmp_path / "cpu", models_dir / "tiny")
    server = TritonServer(repository, free_port(), free_port(), free_port(), log_path=tmp_path / "server.log")
    server.start()
    deadline = time.monotonic() + 30
    while sum(stub_counts(server.process.pid).values()) < 4 and time.monotonic() < deadline:  # loads under way
        time.sleep(0.05)
    assert sum(stub_counts(server.process.pid).values()) >= 4, "its stubs did not start within 30 s"
    server.stop()
    time.sleep(0.5)  # a stub killed is reaped by init
    assert orphaned_stubs(server.process.pid) == []

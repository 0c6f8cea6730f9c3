"""Steps of the wall clock (a virtual machine resumed or forked, an NTP step) while requests run:
none fails and the server lives on (synctalk_build.monotonic_waits; deploy/monotonic_waits.c has why).

The step tests step this machine's clock forward and put it back from the monotonic clock at the
end; they run where this process may set the clock (root with CAP_SYS_TIME), else skip."""

from __future__ import annotations

import ctypes
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from synctalk_build import monotonic_waits
from synctalk_client import CompositeBatchRequest, CompositeClient, synthetic
from synctalk_common import contract

pytestmark = pytest.mark.e2e

ETIMEDOUT = 110
SEM_T_BYTES = 32  # sizeof(sem_t), sizeof(pthread_mutex_t) on x86-64 and aarch64 Linux
MUTEX_BYTES = 40


class Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def wall_deadline(seconds: float) -> Timespec:
    t = time.clock_gettime_ns(time.CLOCK_REALTIME) + int(seconds * 1e9)
    return Timespec(t // 1_000_000_000, t % 1_000_000_000)


def can_set_the_clock() -> bool:
    try:
        time.clock_settime_ns(time.CLOCK_REALTIME, time.clock_gettime_ns(time.CLOCK_REALTIME))
    except (PermissionError, OSError):
        return False
    return True


needs_clock = pytest.mark.skipif(not can_set_the_clock(), reason="stepping the clock needs CAP_SYS_TIME")


@contextmanager
def clock_steps():
    """``step(seconds)`` moves the wall clock forward; on exit it is put back to what it would read."""
    wall0, mono0 = time.clock_gettime_ns(time.CLOCK_REALTIME), time.monotonic_ns()

    def step(seconds: float) -> None:
        time.clock_settime_ns(time.CLOCK_REALTIME, time.clock_gettime_ns(time.CLOCK_REALTIME) + int(seconds * 1e9))

    try:
        yield step
    finally:
        time.clock_settime_ns(time.CLOCK_REALTIME, wall0 + time.monotonic_ns() - mono0)


def timed_wait(function, target, seconds: float, results: dict, key: str) -> None:
    started = time.monotonic()
    rc = function(target, ctypes.byref(wall_deadline(seconds)))
    results[key] = (rc if rc != -1 else ctypes.get_errno(), time.monotonic() - started)


@needs_clock
def test_waits_keep_their_length_across_a_clock_step_where_glibcs_end_at_once():
    ours = ctypes.CDLL(str(monotonic_waits.build()), use_errno=True)
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    sem = ctypes.create_string_buffer(SEM_T_BYTES)
    mutex = ctypes.create_string_buffer(MUTEX_BYTES)
    assert libc.sem_init(sem, 0, 0) == 0 and libc.pthread_mutex_init(mutex, None) == 0
    assert libc.pthread_mutex_lock(mutex) == 0  # held here: the waiters below time out
    results: dict = {}
    waiters = [
        threading.Thread(target=timed_wait, args=(lib.sem_timedwait, sem, 2.0, results, f"{name} sem_timedwait"))
        for name, lib in (("glibc", libc), ("ours", ours))
    ] + [
        threading.Thread(target=timed_wait, args=(lib.pthread_mutex_timedlock, mutex, 2.0, results, f"{name} mutex"))
        for name, lib in (("glibc", libc), ("ours", ours))
    ]
    with clock_steps() as step:
        for w in waiters:
            w.start()
        time.sleep(0.4)
        step(30)
        for w in waiters:
            w.join(10)
    libc.pthread_mutex_unlock(mutex)
    for key, (code, elapsed) in results.items():
        assert code == ETIMEDOUT, (key, code)
        if key.startswith("glibc"):
            assert elapsed < 1.5, f"{key}: glibc's wait should end at the step (the control), took {elapsed:.2f} s"
        else:
            assert 1.9 < elapsed < 3.0, f"{key}: waited {elapsed:.2f} s of 2"
    assert len(results) == 4


def test_the_server_and_its_stubs_run_with_the_library(server):
    processes = [psutil.Process(server.process.pid), *psutil.Process(server.process.pid).children(recursive=True)]
    stubs = [p for p in processes if "triton_python_backend_stub" in " ".join(p.cmdline())]
    assert stubs
    for process in processes:
        mapped = {Path(m.path).name for m in process.memory_maps()}
        assert monotonic_waits.LIBRARY in mapped, f"{process.pid} {process.name()} runs without the library"


@needs_clock
def test_clock_steps_under_load_fail_no_request(server):
    crops = synthetic.face_crops(4, seed=11)
    request = CompositeBatchRequest.from_arrays(
        contract.DEFAULT_MODEL_ID, crops, synthetic.masked(crops), synthetic.speech_like_audio(4, seed=11)
    )
    with CompositeClient(server.grpc_url, timeout_s=60) as client:
        expected = client.infer_batch_composite(request).raise_for_error().composited_frames
    done = threading.Event()
    answers: list = []

    def send():
        with CompositeClient(server.grpc_url, timeout_s=60, stage_timings=False) as c:
            while not done.is_set():
                answers.append(c.infer_batch_composite(request))

    senders = [threading.Thread(target=send) for _ in range(2)]
    for s in senders:
        s.start()
    try:
        # without the library, 10 steps like these failed requests and killed the server every time
        with clock_steps() as step:
            for _ in range(10):
                time.sleep(0.37)
                step(2)
            time.sleep(0.5)
    finally:
        done.set()
        for s in senders:
            s.join(60)
    failed = [a.error for a in answers if not a.success]
    assert not failed, failed[:3]
    assert len(answers) >= 4 and all(a.composited_frames == expected for a in answers)
    assert server.process.poll() is None

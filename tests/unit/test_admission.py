"""The door's admission gate (synctalk_preprocessing.admission): frames in flight bounded,
tickets given back by another process, lapsed leases free their frames."""

import multiprocessing
import time

import pytest

from synctalk_preprocessing.admission import NO_TICKET, AdmissionGate, gate_path


@pytest.fixture()
def path(tmp_path):
    return tmp_path / "gate"


def test_admits_while_the_frames_fit_and_refuses_past_them(path):
    gate = AdmissionGate(16, 10, path)
    first, before = gate.admit(8)
    assert first and before == 0
    second, before = gate.admit(8)
    assert second and before == 8
    assert gate.admit(1) == (None, 16)
    assert AdmissionGate(path=path).release(first) is True  # the last step's gate: release only
    assert gate.in_flight() == 8
    assert gate.admit(8)[0] is not None


def test_a_request_larger_than_the_capacity_passes_alone(path):
    gate = AdmissionGate(16, 10, path)
    big, _ = gate.admit(32)
    assert big is not None and gate.admit(1)[0] is None
    gate.release(big)
    small, _ = gate.admit(1)
    assert gate.admit(32) == (None, 1)


def test_a_lost_ticket_lapses_with_its_lease(path):
    gate = AdmissionGate(8, 0.2, path)
    lost, _ = gate.admit(8)
    short, _ = AdmissionGate(8, 10, path).admit(0)  # zero frames: admitted, lapses by its own lease
    assert gate.admit(1)[0] is None
    time.sleep(0.25)
    assert gate.in_flight() == 0 and gate.admit(8)[0] is not None
    assert gate.release(lost) is False  # lapsed: nothing to give back
    assert gate.release(NO_TICKET) is False and short is not None


def test_the_request_deadline_shortens_the_lease(path):
    gate = AdmissionGate(8, 10, path)
    gate.admit(8, deadline_s=0.1)
    time.sleep(0.15)
    assert gate.in_flight() == 0


def test_the_lease_follows_how_full_the_pipeline_is(path):
    gate = AdmissionGate(56, 8.0, path)
    assert gate.lease_for(56) == gate.lease_for(100) == 8.0  # a request that fills the pipeline
    assert gate.lease_for(32) == 8.0 * 32 / 56
    assert gate.lease_for(8) == gate.lease_for(1) == 4.0  # never under the latency target
    assert gate.lease_for(56, deadline_s=3.0) == 3.0


def test_the_last_step_cannot_admit(path):
    with pytest.raises(RuntimeError, match="only gives tickets back"):
        AdmissionGate(path=path).admit(1)
    with pytest.raises(ValueError):
        AdmissionGate(8, 0, path)


def _hammer(path, capacity, rounds, peaks):
    gate, door = AdmissionGate(path=path), AdmissionGate(capacity, 10, path)
    for _ in range(rounds):
        ticket, before = door.admit(3)
        if ticket is not None:
            peaks.append(before + 3)
            gate.release(ticket)


def test_processes_sharing_the_gate_never_exceed_it(path):
    AdmissionGate(12, 10, path)
    with multiprocessing.Manager() as manager:
        peaks = manager.list()
        workers = [multiprocessing.Process(target=_hammer, args=(path, 12, 300, peaks)) for _ in range(4)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
        assert [w.exitcode for w in workers] == [0] * 4
        assert peaks and max(peaks) <= 12
    assert AdmissionGate(path=path).in_flight() == 0


def test_each_server_has_its_own_gate():
    assert gate_path(101) != gate_path(102) and gate_path(101).name == "synctalk_admission_101"

"""The pipeline's admission gate: frames in flight between the door and the last step.

Triton's queue policies bound each model's own queue, but an ensemble has no bound of its own
(this Triton has no ensemble-wide in-flight limit): the front steps are fast, so under overload
requests pass them and are refused only at the generator's full queue, after the validator, the
audio front end and the background step worked on them (measured: about 60 ms of the two cores'
time per refused request with the tiny models, a third of the goodput at three times capacity).

The gate moves that refusal to the door. ``input_validator``, every ensemble's first step, admits
a request when the frames already in flight past it, plus the request's own, fit the pipeline's
capacity (the frames its generators serve within the profile's latency target:
``synctalk_build.render_model.admission_frames``), and refuses it otherwise before looking at it (gRPC
UNAVAILABLE with Triton's own "Exceeds maximum queue size", which clients read as "server busy").
It hands the request a ticket (``ADMISSION_TICKET``) that travels with it; the last step,
``jpeg_encoder``, gives the ticket back. A request that never gets there (a failing step, a
cancelled request: the ensemble stops before the last step) holds its ticket until its lease
runs out (``lease_for``: up to twice the latency target, less for a request that finds the
pipeline emptier, and never past the request's own deadline), so a lost ticket costs capacity for
seconds, never for good.

The gate is a small table (one slot per admitted request) in a file in ``/dev/shm`` named after
the server's process (every model instance is a stub process the server started), locked with
``flock`` for each change: the stubs of the door and of every last step share it, and two
servers on one host do not.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import tempfile
import time
from pathlib import Path

import numpy as np

SLOT = np.dtype([("ticket", "<i8"), ("frames", "<i8"), ("expires", "<f8")])
SLOTS = 512  # admitted requests at once: far above any capacity in frames / 1 frame per request
FILE_PREFIX = "synctalk_admission_"
NO_TICKET = 0  # the gate is off, or the request came in without one
# the door's refusals, counted on Triton's /metrics (a custom metric of the Python backend)
METRIC_REFUSED = "synctalk_admission_refused_total"
METRIC_REFUSED_HELP = "Requests the door refused at once because the pipeline was full (server busy)"


def gate_directory() -> Path:
    shm = Path("/dev/shm")
    return shm if shm.is_dir() else Path(tempfile.gettempdir())


def gate_path(server_pid: int | None = None) -> Path:
    """The gate of the server ``server_pid`` (default: this stub's parent, the server)."""
    return gate_directory() / f"{FILE_PREFIX}{os.getppid() if server_pid is None else server_pid}"


class AdmissionGate:
    """At most ``capacity_frames`` frames admitted and not yet given back (a request larger than
    the capacity is admitted alone, when nothing else is in flight). The last step opens the same
    gate without a capacity (``AdmissionGate()``): it only gives tickets back."""

    def __init__(self, capacity_frames: int = 0, lease_s: float = 0.0, path: Path | None = None):
        if capacity_frames < 0 or lease_s < 0 or (capacity_frames > 0) != (lease_s > 0):
            raise ValueError(
                f"admission gate: capacity {capacity_frames} frames, lease {lease_s} s: both > 0, or both 0"
            )
        self.capacity_frames = int(capacity_frames)
        self.lease_s = float(lease_s)
        self.path = Path(path) if path is not None else gate_path()
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        with self._locked():
            if os.fstat(self._fd).st_size < SLOT.itemsize * SLOTS:
                os.ftruncate(self._fd, SLOT.itemsize * SLOTS)  # zero slots: all free

    @contextlib.contextmanager
    def _locked(self):
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _read(self) -> np.ndarray:
        return np.frombuffer(os.pread(self._fd, SLOT.itemsize * SLOTS, 0), SLOT).copy()

    def _write(self, index: int, slot: np.ndarray) -> None:
        os.pwrite(self._fd, slot.tobytes(), index * SLOT.itemsize)

    @staticmethod
    def _live(slots: np.ndarray, now: float) -> np.ndarray:
        return (slots["ticket"] != NO_TICKET) & (slots["expires"] > now)

    def lease_for(self, frames_through: int, deadline_s: float | None = None) -> float:
        """How long a request's ticket is held at most: the gate's lease for a request that fills
        the pipeline, in proportion below (``frames_through``: the frames in flight with it,
        its own included), never under half the gate's lease (the latency target), and never past
        the request's own deadline (a client that gave up cancelled it: its ticket lapses with
        it)."""
        lease = min(self.lease_s, max(self.lease_s / 2, self.lease_s * frames_through / self.capacity_frames))
        return lease if deadline_s is None else min(lease, deadline_s)

    def admit(self, frames: int, deadline_s: float | None = None) -> tuple[int | None, int]:
        """(ticket, frames in flight before this request): ticket None when refused.
        ``deadline_s``: the request's own, where it has one (``lease_for``)."""
        if not self.capacity_frames:
            raise RuntimeError("admission gate opened without a capacity: it only gives tickets back")
        now = time.monotonic()
        with self._locked():
            slots = self._read()
            live = self._live(slots, now)
            in_flight = int(slots["frames"][live].sum())
            free = np.flatnonzero(~live)
            if (in_flight and in_flight + frames > self.capacity_frames) or not len(free):
                return None, in_flight
            ticket = secrets.randbits(62) + 1
            lease = self.lease_for(in_flight + frames, deadline_s)
            self._write(int(free[0]), np.array([(ticket, frames, now + lease)], SLOT))
            return ticket, in_flight

    def release(self, ticket: int) -> bool:
        """Gives the ticket back; False when it was not held (already expired, or never issued)."""
        if ticket == NO_TICKET:
            return False
        with self._locked():
            slots = self._read()
            held = np.flatnonzero(slots["ticket"] == ticket)
            for index in held:
                self._write(int(index), np.zeros(1, SLOT))
            return bool(len(held))

    def in_flight(self) -> int:
        with self._locked():
            slots = self._read()
        return int(slots["frames"][self._live(slots, time.monotonic())].sum())

    def close(self) -> None:
        os.close(self._fd)

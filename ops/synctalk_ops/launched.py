"""What the project's launchers share (``synctalk_ops.serve.TritonServer``, ``synctalk_ops.edge.Edge``,
``synctalk_ops.cluster.Cluster``): a context manager that starts, waits until ready and stops; the
gRPC and HTTP addresses clients call; the process's log file; the check of their ports before
anything starts."""

from __future__ import annotations

import contextlib
import http.client
import random
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable
from pathlib import Path

# A command run through this ends with the process that started it: SIGTERM when that process
# dies (Linux prctl PR_SET_PDEATHSIG, kept across exec), set by a small Python that then execs the
# command (same pid). Not a Popen preexec_fn: a preexec_fn makes Python run its fork handlers in
# the parent, and gRPC's waits there for its own threads; in a process with gRPC channels (a test,
# a client) the fork then hung for good now and then.
END_WITH_PARENT = (
    sys.executable,
    "-c",
    "import ctypes, os, signal, sys; ctypes.CDLL(None).prctl(1, signal.SIGTERM); os.execvp(sys.argv[1], sys.argv[1:])",
)


FREE_PORTS_FROM = 20_000  # free_port's lowest pick: above the well-known ports the project's own servers take
_handed_out: set[int] = set()  # by free_port, in this process


def outgoing_ports() -> range:
    """The ports the OS takes its outgoing connections' local ports from (Linux's
    ``ip_local_port_range``; its default, 32768-60999, where it can't be read)."""
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    return range(low, high + 1)


def free_port(offsets: Iterable[int] = (0,)) -> int:
    """A TCP port nothing listens on now (with ``offsets``: a first port P such that every P + offset
    is), never handed out before by this process, below the ports of outgoing connections.

    Not the OS's pick (a bind to port 0): that comes from the outgoing connections' range, where a
    client's connection may take the port before the server listens there (Triton listens only
    once every model has loaded), and it gave the same port twice in a row now and then: one port
    for two of a server's roles (a fresh-clone run of the suite failed on it)."""
    offsets = sorted(set(offsets))
    top = outgoing_ports().start - offsets[-1]
    if top <= FREE_PORTS_FROM:
        top = 65536 - offsets[-1]  # an OS that lends every port to outgoing connections
    for _ in range(10_000):
        first = random.randrange(FREE_PORTS_FROM, top)
        ports = [first + offset for offset in offsets]
        if not any(port in _handed_out or port_taken(port) for port in ports):
            _handed_out.update(ports)
            return first
    raise RuntimeError(f"no free ports from {FREE_PORTS_FROM} for the offsets {offsets}")


class PortConflict(ValueError):
    """Ports given twice, or already taken: found before any process starts."""


def port_taken(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could not listen on ``host:port`` now (bound as servers bind, with
    SO_REUSEADDR: a port whose last connections are in TIME_WAIT is free)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def check_ports(roles: dict[str, int], host: str = "127.0.0.1") -> None:
    """Refuse, naming them, ports that collide (one port given two roles) and ports already
    taken; ``roles``: {what listens there, e.g. "the edge's gRPC port (--grpc-port)": port}.
    Called by the launchers before they start anything: Triton binds its ports only after it
    has loaded every model, so a collision would otherwise fail a minute late, its stubs dying
    after it."""
    by_port: dict[int, list[str]] = {}
    for role, port in roles.items():
        by_port.setdefault(int(port), []).append(role)
    problems = [
        f"port {port} is given twice: {' and '.join(names)}" for port, names in by_port.items() if len(names) > 1
    ]
    problems += [
        f"port {port} ({' and '.join(names)}) is already in use"
        for port, names in by_port.items()
        if port_taken(port, host)
    ]
    if problems:
        raise PortConflict("; ".join(problems) + "; nothing was started: choose other ports")


class Launched:
    host: str
    grpc_port: int
    http_port: int
    log_path: Path | None = None
    process: subprocess.Popen | None = None
    log_mode = "wb"  # "ab": a restarted process's log continues its predecessor's (what it died of)
    _log_file = None

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    def _open_log(self):
        """The file the process writes to (stdout and stderr), or None: the launcher's own."""
        if not self.log_path:
            return None
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self.log_path, self.log_mode)
        return self._log_file

    def _close_log(self) -> None:
        if self._log_file:
            self._log_file.close()

    name = "the process"  # in its errors: tritonserver, envoy
    poll_s = 0.25  # between two looks while waiting for it
    ready_timeout_s = 60.0  # how long wait_ready waits by default

    def start(self):
        raise NotImplementedError

    def is_ready(self) -> bool:
        raise NotImplementedError

    def _on_ready(self) -> None:
        """What happens once it is ready (TritonServer: its stub supervisor starts)."""

    def _log_hint(self) -> str:
        """The end of its log, for an error."""
        if not self.log_path or not self.log_path.exists():
            return ""
        return f"; log {self.log_path}:\n" + "\n".join(self.log_path.read_text(errors="replace").splitlines()[-20:])

    def wait_ready(self, timeout: float | None = None):
        """Returns once ``is_ready``; RuntimeError if its process exits first, TimeoutError after
        ``timeout`` (default ``ready_timeout_s``), each with its log's hint."""
        timeout = self.ready_timeout_s if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with code {self.process.returncode} before it was ready{self._log_hint()}"
                )
            if self.is_ready():
                self._on_ready()
                return self
            time.sleep(self.poll_s)
        raise TimeoutError(f"{self.name} not ready after {timeout:.0f} s{self._log_hint()}")

    def stop(self):
        raise NotImplementedError

    def _spawn(self, command: list[str], **popen) -> None:
        """``command`` in its process, its output in the log (``_open_log``); ``popen``: more of
        Popen's arguments."""
        out = self._open_log()
        self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT if out else None, **popen)

    def _terminate(self, timeout: float) -> None:
        """SIGTERM, and SIGKILL where it has not exited within ``timeout``; returns once it has."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self):
        try:
            return self.start().wait_ready()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()


def answers(url: str, timeout_s: float = 2.0) -> bool:
    """Whether ``url`` answers 200 now. Anything but an HTTP answer is "no": a port in the
    ephemeral range that nothing listens on can be connected to by the probe itself (TCP's
    simultaneous open: the probe's own port is the one it dials), and the probe then reads its own
    request back ("BadStatusLine: GET /v2/health/ready HTTP/1.1", which once ended make cluster
    while a replica restarted)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status == 200
    except (OSError, http.client.HTTPException):  # refused, reset, timed out; no HTTP answer
        return False


@contextlib.contextmanager
def http_process(name: str, command: list[str], ready_url: str, log: Path, timeout_s: float = 60.0):
    """``command`` in its own process, its output in ``log``, until the block ends (then stopped:
    SIGTERM, 30 s at most). Yields the process once ``ready_url`` answers; RuntimeError, naming
    ``name`` and with its log, if it exits or does not answer within ``timeout_s``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}: {log.read_text()}")
            try:
                urllib.request.urlopen(ready_url, timeout=2).close()
                break
            except (OSError, http.client.HTTPException):  # as in answers(): no HTTP answer yet
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} did not answer within {timeout_s:.0f} s: {log.read_text()}") from None
                time.sleep(0.1)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise RuntimeError(f"{name} did not stop within 30 s of SIGTERM: {log.read_text()}") from None

"""What the launchers decide before and after their processes run: ports checked before anything
starts (synctalk_ops.launched), a lost replica's restarts bounded (synctalk_ops.cluster)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading

import pytest

from synctalk_ops.cluster import RestartBudget, exit_reason
from synctalk_ops.launched import PortConflict, answers, check_ports, outgoing_ports, port_taken
from tests.conftest import free_port


def test_ports_given_twice_are_refused_naming_both_roles():
    port, other = free_port(), free_port()
    with pytest.raises(PortConflict) as refused:
        check_ports({"the edge's gRPC port": port, "Triton's gRPC port": port, "Triton's HTTP port": other})
    assert str(refused.value).startswith(f"port {port} is given twice: the edge's gRPC port and Triton's gRPC port;")
    assert str(other) not in str(refused.value)
    check_ports({"the edge's gRPC port": port, "Triton's gRPC port": other})  # distinct and free: accepted


def test_a_port_something_listens_on_is_refused_and_a_closed_one_is_free():
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        assert port_taken(port)
        with pytest.raises(PortConflict, match=f"port {port} \\(Triton's metrics port\\) is already in use"):
            check_ports({"Triton's metrics port": port})
    assert not port_taken(port)


def test_free_ports_are_never_handed_out_twice_and_lie_below_outgoing_connections_ports():
    """The OS's pick (a bind to port 0) once gave one server the same port for two roles."""
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    assert all(port < outgoing_ports().start and not port_taken(port) for port in ports)
    base = free_port([0, 1, 2, 10, 11, 12])
    assert not {base, base + 1, base + 2, base + 10, base + 11, base + 12} & set(ports)
    assert base + 12 < outgoing_ports().start


def test_restarts_are_bounded_within_their_window():
    budget = RestartBudget(most=3, window_s=600)
    assert [budget.take("replica-0", t) for t in (0, 10, 20)] == [1, 2, 3]
    assert budget.take("replica-0", 30) is None, "a fourth death within 10 minutes: left down"
    assert budget.take("replica-1", 30) == 1, "each replica its own count"
    assert budget.take("replica-0", 605) == 3, "the first restart has left the window"
    assert budget.total("replica-0") == 4, "restarts since the start"


def test_an_exit_is_said_in_words():
    assert exit_reason(-signal.SIGKILL) == "was killed by SIGKILL (the kernel's OOM killer, or an operator)"
    assert exit_reason(-signal.SIGSEGV) == "was killed by SIGSEGV"
    assert exit_reason(1) == "exited with code 1"


class DyingServer:
    """A replica's server whose process exits at once each time it is started (what
    Cluster.keep_replicas sees of a replica killed again and again), real processes."""

    def __init__(self, log_path):
        self.log_path, self.models, self.starts = log_path, None, -1
        self.restart()

    def restart(self):
        self.starts += 1
        self.process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
        self.process.wait()
        return self

    def stop(self):
        return self.process.returncode

    def is_ready(self):
        return False


def test_a_replica_that_dies_again_and_again_is_left_down_saying_why(tmp_path):
    """Cluster.keep_replicas restarts a dead replica within the budget, then leaves it down with
    the reason and its log; every replica down is the cluster's end (make cluster stops)."""
    from synctalk_ops.cluster import Cluster
    from synctalk_ops.edge import Replica

    cluster = object.__new__(Cluster)  # its replica-keeping alone: no tritonserver, no edge
    server = DyingServer(tmp_path / "replica-0.log")
    cluster.servers, cluster.replicas, cluster.placement = [server], [Replica("replica-0", "127.0.0.1", 1, 2)], None
    cluster.restarts, cluster.down, cluster.returning = RestartBudget(most=2, window_s=600), {}, {}
    lines = [line for now in (0.0, 1.0, 2.0, 3.0) for line in cluster.keep_replicas(now)]
    assert server.starts == 2, "two restarts, then no more"
    assert lines[0].startswith("replica-0 (pid ") and "exited with code 3: starting it again" in lines[0]
    assert "restart 2 of 2 within 10 minutes" in lines[1]
    assert "exited with code 3, after 2 restarts within 10 minutes: left down" in lines[2]
    assert str(tmp_path / "replica-0.log") in lines[2] and len(lines) == 3, lines
    assert cluster.down["replica-0"] and cluster.all_down()


def test_a_port_that_reads_back_the_probe_is_not_ready():
    """What a probe reads when it connects to itself (a port in the ephemeral range that nothing
    listens on: TCP's simultaneous open) is its own request: "not ready", never an exception (one
    ended make cluster while a replica restarted)."""

    def serve(listener: socket.socket, reply) -> None:
        connection, _ = listener.accept()
        with connection:
            request = connection.recv(4096)
            connection.sendall(reply(request))

    for reply, expected in (
        (lambda request: request, False),  # the request echoed: BadStatusLine
        (lambda request: b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", True),
    ):
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(1)
            thread = threading.Thread(target=serve, args=(listener, reply), daemon=True)
            thread.start()
            url = f"http://127.0.0.1:{listener.getsockname()[1]}/v2/health/ready"
            assert answers(url, timeout_s=5) is expected
            thread.join(5)

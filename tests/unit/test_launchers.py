"""What the launchers decide before and after their processes run: ports checked before anything
starts (synctalk_ops.launched), a lost replica's restarts bounded (synctalk_ops.cluster)."""

from __future__ import annotations

import signal
import socket

import pytest

from synctalk_ops.cluster import RestartBudget, exit_reason
from synctalk_ops.launched import PortConflict, check_ports, port_taken
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

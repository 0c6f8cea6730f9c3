"""WebRTC across a NAT, on the network bench (``devtools.netbench``): headless Chromium in a viewer
namespace behind an iptables NAT router, the page's server and coturn on the host (the TURN REST
convention: the page gets a credential of its own from ``/webrtc/config``). UDP blocked but to the
TURN port: the avatar plays through a relay over UDP, and through a 3 s dropout of the viewer's
link; all UDP blocked: through TURN over TCP. Viewers whose link goes down for good: their peers and
streams freed, leaving nothing behind. (An expired or forged credential refused by
coturn: ``test_turn_service.py``.)"""

from __future__ import annotations

import time

import pytest

from devtools import netbench_viewer
from devtools.browser import page_server
from devtools.netbench import HOST_IP, NetBench, coturn
from devtools.netbench_peers import GIVE_UP_S, vanishing
from synctalk_build import paths
from synctalk_ops.launched import free_port
from tests.e2e.streams import streams_open
from tests.e2e.test_live_stream import avatar_with_images

pytestmark = pytest.mark.e2e
SECRET = "a-shared-secret-of-the-bench-turn-service"
LOGS = paths.BUILD / "logs"


@pytest.fixture(scope="module")
def bench():
    why = NetBench.unavailable()
    if why is not None:
        pytest.skip(f"no network bench here: {why}")
    with NetBench() as made:
        yield made


@pytest.fixture(scope="module")
def turn_port(bench):
    """coturn on the host's bench address; its port (UDP and TCP)."""
    port = free_port()
    with coturn(HOST_IP, port, SECRET, LOGS / "test-bench-coturn.log"):
        yield port


@pytest.fixture(scope="module")
def bench_page(server, turn_port, tmp_path_factory):
    """``synctalk-client web`` on every address, with the TURN service's URLs and secret: the page's
    address as the viewer sees it."""
    secret = tmp_path_factory.mktemp("bench-secret") / "turn-secret"
    secret.write_text(SECRET + "\n")
    args = ["--turn-secret-file", str(secret)]
    for transport in ("udp", "tcp"):
        args += ["--turn", f"turn:{HOST_IP}:{turn_port}?transport={transport}"]
    with page_server(server.grpc_url, LOGS / "test-bench-page.log", host="0.0.0.0", args=args) as url:
        yield url.replace("127.0.0.1", HOST_IP)


@pytest.fixture(scope="module")
def bench_avatar(server, tmp_path_factory):
    with avatar_with_images(server, tmp_path_factory, "bench_avatar", "synctalk2d", silent_frames=True) as avatar:
        yield avatar


def view(bench: NetBench, page: str, avatar: str, name: str, seconds: float = 2.0, playing=None) -> dict:
    """The viewer's Chromium on the page for ``seconds`` (devtools.netbench_viewer): its report."""
    return netbench_viewer.view(bench, page, avatar, LOGS / f"test-bench-viewer-{name}.log", seconds, playing)


def test_through_turn_over_udp_with_udp_otherwise_blocked_and_a_3_s_dropout_the_session_survives(
    bench, turn_port, bench_page, bench_avatar
):
    """UDP blocked at the viewer's router but to the TURN port: the only way through is a relay
    over UDP, with the credential the page was given. Then the viewer's link goes down for 3 s
    (nothing passes either way) and comes back: the page says the connection dropped, and the same
    session (its peer connection, the server's peer and stream) plays on, ICE keeping its pair."""

    def dropout() -> None:
        time.sleep(1.0)
        bench.link(up=False)
        time.sleep(3.0)
        bench.link(up=True)

    bench.clear()
    bench.block_udp(except_port=turn_port)
    try:
        report = view(bench, bench_page, bench_avatar, "turn-udp-dropout", seconds=7.0, playing=dropout)
    finally:
        bench.link(up=True)
        bench.clear()
    timeline = report.pop("timeline")
    print(f"TURN over udp: {report}; a 3 s dropout: {timeline}")
    pair = report["pair"]
    assert pair["local"] == "relay" and pair["relay_protocol"] == "udp", f"through the relay: {pair}"
    assert timeline[0][2] < timeline[3][2], "the avatar plays"
    frames = [decoded for _, _, decoded in timeline]
    still = [i for i in range(1, len(frames)) if frames[i] == frames[i - 1]]
    assert still and len(still) * 0.25 >= 2.0, "the video stopped while the link was down"
    resumed = frames[still[-1] + 1 :]
    assert len(resumed) >= 8 and resumed[-1] - resumed[0] >= 0.8 * 25 * 0.25 * (len(resumed) - 1), "and plays on"
    assert timeline[-1][1] == "connected", "the same session: its connection never failed"
    assert report["dropouts"] == 1 and "back after a dropout" in report["status"], "the page said so"
    assert not report["error"], report


def test_through_turn_over_tcp_with_all_udp_blocked(bench, bench_page, bench_avatar):
    """All UDP blocked at the viewer's router: TURN over TCP is the only way through."""
    bench.clear()
    bench.block_udp()
    try:
        report = view(bench, bench_page, bench_avatar, "turn-tcp")
    finally:
        bench.clear()
    report.pop("timeline")
    print(f"TURN over tcp: {report}")
    assert not report["error"], report
    pair = report["pair"]
    assert pair["local"] == "relay" and pair["relay_protocol"] == "tcp", f"through the relay: {pair}"
    assert report["fps"] >= 20, f"the avatar plays: {report}"


def test_viewers_whose_link_goes_down_for_good_are_freed_and_leave_nothing_behind(bench, server, bench_avatar):
    """Viewers (aiortc's, no browser: ``devtools.netbench_peers``) in waves of 5 behind the NAT, each
    wave's link taken down once they play and kept down: the page's server (``--viewer-timeout 2``)
    ends their peers and streams within a few seconds, by itself (nothing of the viewers' reaches it).
    After 3 waves: no peer held, no place of the stream limit more taken than before (a viewer of
    the tests above may still hold one, for the bench page's viewer timeout), and the server's open
    files and threads as after the first wave. (``benchmarks/vanishing_viewers.py``: hundreds.)"""
    taken = streams_open(server, bench_avatar)
    started: list = []
    args = ["--viewer-timeout", "2", "--max-peers", "5"]
    log = LOGS / "test-bench-vanish-page.log"
    with page_server(server.grpc_url, log, started, host="0.0.0.0", args=args) as url:
        report = vanishing(bench, url, bench_avatar, started[0].pid, LOGS / "test-bench-vanish.log", 3, 5)
    print(f"viewers who vanished: {report}")
    assert report["stuck"] is None, f"peers still held {GIVE_UP_S:g} s after their viewers went: {report}"
    assert len(streams_open(server, bench_avatar)) <= len(taken), "every stream ended with its peer"
    first, last = report["first"], report["last"]
    assert last["files"] <= first["files"] + 4 and last["threads"] <= first["threads"] + 2, f"nothing left: {report}"
    assert max(report["freed_after_s"]) < 2 + 2, "freed within the viewer timeout and a second"

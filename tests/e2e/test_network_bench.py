"""WebRTC across a NAT, on the network bench (``devtools.netbench``): headless Chromium in a viewer
namespace behind an iptables NAT router, the page's server and coturn on the host (the TURN REST
convention: the page gets a credential of its own from ``/webrtc/config``). UDP blocked but to the
TURN port: the avatar plays through a relay over UDP; all UDP blocked: through TURN over TCP."""

from __future__ import annotations

import json
import sys

import pytest

from devtools.netbench import HOST_IP, NetBench, coturn
from synctalk_build import paths
from synctalk_ops.launched import free_port, http_process
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
    port = free_port()
    command = [sys.executable, "-m", "synctalk_client.cli", "--url", server.grpc_url, "web", "--host", "0.0.0.0"]
    command += ["--port", str(port), "--turn-secret-file", str(secret)]
    for transport in ("udp", "tcp"):
        command += ["--turn", f"turn:{HOST_IP}:{turn_port}?transport={transport}"]
    with http_process("the page's server", command, f"http://127.0.0.1:{port}/", LOGS / "test-bench-page.log"):
        yield f"http://{HOST_IP}:{port}/"


@pytest.fixture(scope="module")
def bench_avatar(server, tmp_path_factory):
    with avatar_with_images(server, tmp_path_factory, "bench_avatar", "synctalk2d", silent_frames=True) as avatar:
        yield avatar


def view(bench: NetBench, page: str, avatar: str, name: str, seconds: float = 2.0) -> dict:
    """The viewer's Chromium on the page for ``seconds``: devtools.netbench_viewer's report."""
    log = LOGS / f"test-bench-viewer-{name}.log"
    command = [sys.executable, "-m", "devtools.netbench_viewer", "--page", page, "--avatar", avatar]
    process = bench.viewer([*command, "--seconds", str(seconds)], log, cwd=paths.ROOT)
    try:
        process.wait(timeout=90)
    finally:
        process.kill()
    lines = [line for line in log.read_text().splitlines() if line.startswith("{")]
    assert process.returncode == 0 and lines, f"the viewer failed: see {log}"
    return json.loads(lines[-1])


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_a_viewer_behind_a_nat_with_udp_blocked_plays_through_turn(
    bench, turn_port, bench_page, bench_avatar, transport
):
    """UDP blocked at the viewer's router but to the TURN port (udp), or all of it (tcp): the only
    way through is a relay, over that transport, with the credential the page was given."""
    bench.clear()
    bench.block_udp(except_port=turn_port if transport == "udp" else None)
    try:
        report = view(bench, bench_page, bench_avatar, f"turn-{transport}")
    finally:
        bench.clear()
    print(f"TURN over {transport}: {report}")
    assert not report["error"], report
    pair = report["pair"]
    assert pair["local"] == "relay" and pair["relay_protocol"] == transport, f"through the relay: {pair}"
    assert report["fps"] >= 20, f"the avatar plays: {report}"

"""The credentials the WebRTC service mints, against a real TURN server: coturn (``make turn``)
with ``use-auth-secret``, as docs/live-streams-and-webrtc.md sets it up. An allocation is made
(UDP, TCP) with what a page gets from ``Settings.ice_config``; an expired credential, or one of
another secret, is refused."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
import urllib.request

import pytest
from aioice import stun
from aioice import turn as ice_turn

from devtools.netbench import coturn as coturn_process
from synctalk_build import paths
from synctalk_ops.launched import http_process
from synctalk_webrtc import turn
from synctalk_webrtc.service import Settings
from tests.conftest import free_port

pytestmark = pytest.mark.e2e
SECRET = "a-shared-secret-of-the-test-turn-service"


@pytest.fixture(scope="module")
def coturn():
    """coturn on loopback with the TURN REST convention (its ``static-auth-secret``); (host, port)."""
    port = free_port()
    with coturn_process("127.0.0.1", port, SECRET, paths.BUILD / "logs" / "test-coturn.log"):
        yield "127.0.0.1", port


def allocate(address, username: str, credential: str, transport: str) -> str:
    """A TURN allocation through ``address`` with the credential: the relayed address, or the refusal."""

    async def run():
        try:
            relay, _ = await ice_turn.create_turn_endpoint(
                asyncio.DatagramProtocol, address, username, credential, transport=transport
            )
        except stun.TransactionFailed as exc:
            return f"refused: {exc}"
        with contextlib.closing(relay):
            return "relayed at {}:{}".format(*relay.get_extra_info("sockname"))

    return asyncio.run(asyncio.wait_for(run(), 15))


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_a_minted_credential_allocates_a_relay_and_an_expired_or_forged_one_is_refused(coturn, transport):
    url = f"turn:{coturn[0]}:{coturn[1]}?transport={transport}"
    settings = Settings("triton:8001", turn=turn.TurnCredentials([url], SECRET.encode(), ttl_s=60))
    (page,) = settings.ice_config()  # what GET /webrtc/config hands a page
    assert allocate(coturn, page["username"], page["credential"], transport).startswith("relayed at 127.0.0.1:")
    expired = turn.rest_credential(SECRET.encode(), int(time.time()) - 5, "viewer")
    assert allocate(coturn, *expired, transport) == "refused: STUN transaction failed (401 - Unauthorized)"
    forged = turn.rest_credential(b"another-secret-a-visitor-guessed", int(time.time()) + 60, "viewer")
    assert allocate(coturn, *forged, transport) == "refused: STUN transaction failed (401 - Unauthorized)"


def test_the_pages_config_from_the_command_holds_a_fresh_expiring_credential_coturn_accepts(coturn, tmp_path):
    """``synctalk-client web --turn ... --turn-secret-file ...`` as an operator starts it: each
    ``GET /webrtc/config`` is a credential of its own, expiring after ``--turn-ttl``, never the
    secret; coturn relays with it."""
    secret_file = tmp_path / "turn_secret"
    secret_file.write_text(SECRET + "\n")
    port = free_port()
    url = f"turn:{coturn[0]}:{coturn[1]}?transport=udp"
    command = [sys.executable, "-m", "synctalk_client.cli", "--url", "127.0.0.1:1", "web", "--port", str(port)]
    command += ["--turn", url, "--turn-secret-file", str(secret_file), "--turn-ttl", "120"]
    with http_process(
        "the page's server", command, f"http://127.0.0.1:{port}/", paths.BUILD / "logs" / "test-turn-page.log"
    ):
        pages = []
        for _ in range(2):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/webrtc/config", timeout=10) as answer:
                assert answer.headers["Cache-Control"] == "no-store"
                pages.append(json.loads(answer.read()))
    servers = [page["iceServers"] for page in pages]
    assert all(len(s) == 1 and s[0]["urls"] == [url] for s in servers)
    assert servers[0][0]["username"] != servers[1][0]["username"], "a credential for each page"
    assert SECRET not in json.dumps(pages)
    expiry = int(servers[0][0]["username"].split(":")[0])
    assert 0 < expiry - time.time() <= 120
    assert allocate(coturn, servers[0][0]["username"], servers[0][0]["credential"], "udp").startswith("relayed at")

"""Short-lived TURN credentials (synctalk_webrtc.turn): the TURN REST convention, checked against
openssl's HMAC; what a page gets never holds the secret or a credential without an expiry."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from synctalk_webrtc import turn
from synctalk_webrtc.service import Settings

SECRET = b"a-long-shared-secret-for-the-turn-service"


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_the_credential_is_base64_of_hmac_sha1_of_the_username_as_openssl_computes_it():
    username, credential = turn.rest_credential(SECRET, 1_800_000_000, "viewer")
    assert username == "1800000000:viewer"
    digest = subprocess.run(
        ["openssl", "dgst", "-sha1", "-hmac", SECRET.decode(), "-binary"],
        input=username.encode(),
        capture_output=True,
        check=True,
    ).stdout
    openssl = subprocess.run(["openssl", "base64", "-A"], input=digest, capture_output=True, check=True).stdout
    assert credential == openssl.decode().strip()


def test_each_page_gets_a_credential_of_its_own_that_expires_and_never_the_secret():
    credentials = turn.TurnCredentials(
        ["turn:turn.example.org:3478?transport=udp"], SECRET, ttl_s=600, now=lambda: 1000.5
    )
    settings = Settings("triton:8001", [{"urls": "stun:stun.example.org:3478"}], turn=credentials)
    first, second = settings.ice_config(), settings.ice_config()
    assert first[0] == {"urls": "stun:stun.example.org:3478"}
    minted = [first[1], second[1]]
    for server in minted:
        expiry, name = server["username"].split(":")
        assert int(expiry) == 1600 and name, "expiry: now + ttl, Unix seconds"
        assert server["credential"] == turn.rest_credential(SECRET, 1600, name)[1]
        assert server["urls"] == ["turn:turn.example.org:3478?transport=udp"]
    assert minted[0]["username"] != minted[1]["username"], "one per page: a copied credential names its session"
    page = json.dumps(first)
    assert SECRET.decode() not in page and "secret" not in page


def test_a_turn_service_is_both_urls_and_secret_and_a_static_password_beside_it_is_refused(tmp_path):
    secret_file = tmp_path / "turn_secret"
    secret_file.write_text(SECRET.decode() + "\n")
    made = turn.turn_credentials(["turns:turn.example.org:443?transport=tcp"], str(secret_file), 300, environ={})
    assert made.secret == SECRET and made.ttl_s == 300, "the file's text, white space stripped (coturn's)"
    assert turn.turn_credentials(None, None, environ={}) is None, "none: no TURN"
    environ = {turn.TURN_URLS_ENVIRONMENT: "turn:a:3478,turn:a:3478?transport=tcp", turn.SECRET_ENVIRONMENT: "x" * 32}
    assert turn.turn_credentials(None, None, environ=environ).urls == ["turn:a:3478", "turn:a:3478?transport=tcp"]
    environ = {turn.TURN_URLS_ENVIRONMENT: "turn:a:3478", turn.SECRET_FILE_ENVIRONMENT: str(secret_file)}
    assert turn.turn_credentials(None, None, environ=environ).secret == SECRET, "a Kubernetes Secret mounted as a file"
    with pytest.raises(ValueError, match="both its URLs"):
        turn.turn_credentials(["turn:a:3478"], None, environ={})
    with pytest.raises(ValueError, match="both its URLs"):
        turn.turn_credentials(None, str(secret_file), environ={})
    with pytest.raises(ValueError, match="shorter than 16 bytes"):
        turn.TurnCredentials(["turn:a:3478"], b"short")
    with pytest.raises(ValueError, match="turn:HOST:PORT"):
        turn.TurnCredentials(["stun:a:3478"], SECRET)
    with pytest.raises(ValueError, match="no such file|No such file"):
        turn.read_secret(str(tmp_path / "missing"), {})
    static = [{"urls": "turn:a:3478", "username": "avatar", "credential": "password"}]
    with pytest.raises(ValueError, match="one or the other"):
        Settings("triton:8001", static, turn=made)

"""The peers' command-line options, shared by ``synctalk-webrtc`` and the page's server
(``synctalk-client web``), with the standard library and the SDK's CLI only (the page's subcommand
is registered whether or not aiortc is installed)."""

from __future__ import annotations

import argparse

from synctalk_client.cli import positive

MAX_PEERS = 4  # a viewer at 25 fps costs the service ~0.21 CPU-s a second, all on its one event loop
# a connected viewer that sends nothing (RTCP: a browser's reports come every second or so) for this
# long is gone: a dropout of a few seconds is ridden out (the page says so), a longer one ends the
# peer and its stream before ICE's consent checks would (30 s)
VIEWER_TIMEOUT_S = 15.0


def _seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not seconds > 0 or seconds == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: seconds, above 0")
    return seconds


def add_peer_arguments(parser: argparse.ArgumentParser) -> None:
    """``--max-peers`` and ``--viewer-timeout``."""
    parser.add_argument("--max-peers", type=positive, default=MAX_PEERS, help=f"viewers at once (default {MAX_PEERS})")
    parser.add_argument(
        "--viewer-timeout",
        type=_seconds,
        default=VIEWER_TIMEOUT_S,
        help=f"seconds a viewer may send nothing before its peer ends (default {VIEWER_TIMEOUT_S:g})",
    )

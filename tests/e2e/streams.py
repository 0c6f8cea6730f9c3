"""What a server's stream model holds, seen from outside: its stream limit's places taken."""

from __future__ import annotations

import contextlib

import numpy as np

from synctalk_client.stream import LiveStream, StreamLimitError
from synctalk_ops.edge.limits import max_streams


def streams_open(server, avatar: str) -> list[int]:
    """The stream limit's places taken (``max_streams``): [] when all of them open now (each opened
    and ended)."""
    refused = []
    streams = [LiveStream(server.grpc_url, avatar) for _ in range(max_streams())]
    try:
        for number, live in enumerate(streams):
            try:
                live.send(np.zeros(0, np.int16))
            except StreamLimitError:
                refused.append(number)
    finally:
        for live in streams:
            with contextlib.suppress(Exception):
                live.end()
            live.close()
    return refused

"""Limits of the edge: each class's requests a replica takes at once (from the door's capacity in
frames and the stream model's ``max_streams``), connections, headers, HTTP/2 windows, health checks
and drain."""

from __future__ import annotations

from synctalk_build import paths
from synctalk_common import contract

LIGHT_PER_REPLICA_FLOOR = 8  # light requests a replica takes at once, at least

META_PER_REPLICA = 64  # health, metadata, configs, statistics: cheap, never refused for load in practice

MAX_CONNECTIONS = 1024  # downstream connections the edge holds at once (overload manager)

MAX_REQUEST_HEADERS_KB = 16

STREAM_WINDOW_BYTES = 1 << 20  # HTTP/2 flow control: what a client may push before the edge reads it

CONNECTION_WINDOW_BYTES = 4 << 20

CONNECTION_BUFFER_BYTES = 1 << 20

HEALTH_INTERVAL_S = 1.0

HEALTH_TIMEOUT_S = 2.0

DRAIN_S = 10.0  # how long a stopping edge lets the requests it holds finish (make serve's Ctrl-C)

STREAM_IDLE_TIMEOUT_S = 300  # a live stream with no message this long is cut (its sequence expired long before)


# Requests that wait at the edge for room, per replica, when their class is full (Envoy's pending
# queue: in the order they came, each one's body held back by HTTP/2 flow control, so one stream
# window reaches the edge and nothing reaches Triton; the next goes up the moment one of its class
# ends, so the replica never idles between two). Only the bulk class waits: its requests take
# seconds each (3-4 s for 32 frames with the full model on 2 cores), and a client refused at once
# sends its body again at once (78 MB for the reference's 32 frames), which on a shared host
# takes the cores the server needs (benchmarks/README.md, "A flood of heavy requests"). Three:
# the last in line is served within four of its service times (about 16 s on 2 cores), inside
# the reference's 25 s deadline. The other classes are refused at once: their requests are
# short, and their clients come back within milliseconds.
WAITING_PER_REPLICA = {"bulk": 3}


def max_streams() -> int:
    """Live streams one replica holds (the stream model's ``max_streams``)."""
    from synctalk_build.render_model import read_config

    config = read_config(paths.MODEL_REPOSITORY / contract.STREAM_MODEL / "config.pbtxt")
    return int(config.parameters["max_streams"].string_value)


def class_limits(profile: str) -> dict[str, int]:
    """Requests of each class (``contract.EDGE_CLASSES``) one replica takes at once: the door's
    capacity in frames over the class's largest request (at least 1; light at least
    ``LIGHT_PER_REPLICA_FLOOR``), and ``max_streams`` live streams."""
    from synctalk_build.render_model import admission_frames

    capacity = admission_frames(profile)
    limits = {name: max(1, capacity // most) for name, _, most in contract.EDGE_CLASSES}
    limits["light"] = max(limits["light"], LIGHT_PER_REPLICA_FLOOR)
    limits["stream"] = max_streams()
    limits["meta"] = META_PER_REPLICA
    return limits


# avatars on demand (synctalk_ops.activator): a request held while its avatar loads, at most (a tiny
# avatar loads in about 1.1 s on 2 cores, a full one in 3.5 s: benchmarks/README.md)
COLD_START_BUDGET_S = 10.0

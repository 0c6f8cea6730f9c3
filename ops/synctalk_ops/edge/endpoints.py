"""The replicas of a running edge, changed with no restart: one endpoint file per cluster, written whole
and renamed into a folder Envoy watches; the admin says when it has read them."""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

from synctalk_ops.edge.clusters import cluster_names, endpoints_of
from synctalk_ops.edge.replicas import Replica


def write_endpoints(replicas: list[Replica], endpoints_dir: Path, admin_url: str | None = None) -> list[Path]:
    """Every class's endpoints, one file a cluster, each written whole and renamed into place: Envoy
    (watching the folder) takes the new set with no restart and no dropped stream. ``admin_url``:
    the running edge's admin, to return only once it has taken them (``wait_applied``)."""
    endpoints_dir = Path(endpoints_dir)
    endpoints_dir.mkdir(parents=True, exist_ok=True)
    version = str(time.time_ns())
    written = []
    for name, protocol, _ in cluster_names():
        response = {
            "version_info": version,
            "resources": [
                {"@type": "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"}
                | endpoints_of(name, replicas, protocol)
            ],
        }
        staging = endpoints_dir / f".{name}.yaml.new"
        staging.write_text(yaml.safe_dump(response, sort_keys=False))
        os.replace(staging, endpoints_dir / f"{name}.yaml")
        written.append(endpoints_dir / f"{name}.yaml")
    if admin_url:
        wait_applied(admin_url, endpoints_dir)
    return written


def _update_counts(admin_url: str) -> dict[str, int]:
    query = urllib.parse.quote(r"^cluster\.[a-z_]+\.update_success$")
    with urllib.request.urlopen(f"{admin_url}/stats?filter={query}", timeout=5) as response:
        rows = response.read().decode().splitlines()
    return {name: int(value) for name, _, value in (row.partition(": ") for row in rows)}


def wait_applied(admin_url: str, endpoints_dir: Path, timeout_s: float = 10.0) -> None:
    """Return once the edge has read its endpoint files as they are now: Envoy reloads every file of
    a watched folder on any rename into it, so one more rename (a marker) after the files, then
    every cluster's ``update_success`` counted up, means each has read its final file."""
    before = _update_counts(admin_url)
    marker = Path(endpoints_dir) / ".applied.new"
    marker.write_text(str(time.time_ns()))
    os.replace(marker, Path(endpoints_dir) / ".applied")
    deadline = time.monotonic() + timeout_s
    while any(count <= before.get(name, -1) for name, count in _update_counts(admin_url).items()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the edge at {admin_url} did not take the endpoints of {endpoints_dir} in time")
        time.sleep(0.02)

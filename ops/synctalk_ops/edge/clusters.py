"""The edge's clusters: one per class of requests and listener, over every replica, with its circuit
breaker, health checks and outlier detection, the replicas' avatars as load-balancer metadata."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from synctalk_common import contract
from synctalk_ops.edge.limits import HEALTH_INTERVAL_S, HEALTH_TIMEOUT_S, WAITING_PER_REPLICA, class_limits
from synctalk_ops.edge.replicas import AVATARS_KEY, REPLICA_KEY, Replica, address_of, is_ip
from synctalk_ops.edge.routes import ACTIVATOR_CLUSTER


def endpoints_of(name: str, replicas: list[Replica], protocol: str) -> dict:
    """A class's endpoints (Envoy's ClusterLoadAssignment): each replica's port of ``protocol``,
    its health checked on its HTTP port, and the avatars placed on it as the load balancer's
    metadata (``envoy.lb``: ``avatars``), which a request's model id is matched against, and its
    name (``replica``), which the activator's answer is matched against (avatars on demand)."""
    grpc = protocol == "grpc"
    endpoints = []
    for r in replicas:
        endpoint = {
            "endpoint": {
                "address": address_of(r.host, r.grpc_port if grpc else r.http_port),
                "hostname": r.name,
                "health_check_config": {"port_value": r.http_port},
            }
        }
        metadata = {REPLICA_KEY: r.name}  # the activator's pick (avatars on demand)
        if r.avatars is not None:
            metadata[AVATARS_KEY] = list(r.avatars)
        endpoint["metadata"] = {"filter_metadata": {"envoy.lb": metadata}}
        endpoints.append(endpoint)
    return {"cluster_name": name, "endpoints": [{"lb_endpoints": endpoints}]}


def cluster_of(
    name: str,
    replicas: list[Replica],
    protocol: str,
    limit: int,
    size_for: int,
    endpoints_dir: Path | None = None,
    waiting: int = 0,
) -> dict:
    """One class's cluster over every replica (its port of ``protocol``), ``limit`` requests at
    once on each, with its breaker sized for ``size_for`` replicas. ``waiting``: requests past a
    replica's limit wait for room (``limits.WAITING_PER_REPLICA``), that many a replica, else they
    are refused at once. ``endpoints_dir``: its endpoints are read from a file there, which Envoy
    watches (``write_endpoints`` changes them with no restart), else fixed in the bootstrap."""
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
    elif all(is_ip(r.host) for r in replicas):  # addresses as given
        where = {"type": "STATIC", "load_assignment": endpoints_of(name, replicas, protocol)}
    else:  # names (compose services, Kubernetes pods in their headless Service) resolved and followed by Envoy
        where = {
            "type": "STRICT_DNS",
            "dns_lookup_family": "V4_PREFERRED",
            "load_assignment": endpoints_of(name, replicas, protocol),
        }
    cluster = {
        "name": name,
        **where,
        "connect_timeout": "1s",
        "lb_policy": "LEAST_REQUEST",
        # a request's model id (its header, or its HTTP path: ``_model_rule``) picks the
        # replicas holding that avatar, or the activator's answer picks one replica by name;
        # neither, a shared model's, or one no replica holds: any replica (Triton answers "model
        # not found: <id>" for an unknown one)
        "lb_subset_config": {
            "fallback_policy": "ANY_ENDPOINT",
            "subset_selectors": [{"keys": [AVATARS_KEY]}, {"keys": [REPLICA_KEY]}],
            "list_as_any": True,
        },
        "circuit_breakers": {
            "thresholds": [
                {
                    "priority": "DEFAULT",
                    "max_requests": limit * size_for,
                    "max_pending_requests": (waiting or limit) * size_for,
                    "max_connections": max(16, 4 * size_for),
                    "max_retries": max(1, limit * size_for),
                }
            ],
            # waiting: each replica's limit held by its connections (one HTTP/2 connection of
            # ``limit`` streams, or ``limit`` HTTP/1.1 connections); a request finding them busy
            # waits in Envoy's pending queue (max_pending_requests) instead of being refused
            **({"per_host_thresholds": [{"max_connections": 1 if grpc else limit}]} if waiting else {}),
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
        cluster["typed_extension_protocol_options"] = http2_upstream(
            {"max_concurrent_streams": limit} if waiting else {}
        )
    return cluster


def http2_upstream(options: dict) -> dict:
    """A cluster's ``typed_extension_protocol_options`` for HTTP/2 to its endpoints (gRPC), with
    Envoy's ``http2_protocol_options`` ``options``."""
    return {
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": options},
        }
    }


def activator_cluster(host: str, port: int) -> dict:
    """The activator (``synctalk_ops.activator``), which the edge asks about each request."""
    # an address as given; a name (its Kubernetes Service) resolved and followed by Envoy
    where = {"type": "STATIC"} if is_ip(host) else {"type": "STRICT_DNS", "dns_lookup_family": "V4_PREFERRED"}
    return {
        "name": ACTIVATOR_CLUSTER,
        **where,
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": ACTIVATOR_CLUSTER,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address_of(host, port)}}]}],
        },
        # every request asks it: no queue of its own before the listeners' limits
        "circuit_breakers": {"thresholds": [{"max_requests": 4096, "max_pending_requests": 4096}]},
    }


def cluster_names() -> list[tuple[str, str, str]]:
    """(cluster, protocol, class) of every class, both listeners."""
    names = [(f"{p}_{c}", p, c) for p in ("grpc", "http") for c in [c[0] for c in contract.EDGE_CLASSES] + ["meta"]]
    return names + [("grpc_stream", "grpc", "stream")]


def clusters_of(
    replicas: list[Replica], profile: str = "cpu", size_for: int | None = None, endpoints_dir: Path | None = None
) -> list[dict]:
    """Every class's cluster over ``replicas`` (``cluster_of``)."""
    size_for = size_for or len(replicas)
    limits = class_limits(profile)
    return [
        cluster_of(name, replicas, protocol, limits[kind], size_for, endpoints_dir, WAITING_PER_REPLICA.get(kind, 0))
        for name, protocol, kind in cluster_names()
    ]


CLUSTERS_FILE = "clusters.yaml"  # the clusters of an edge whose bootstrap names a clusters_dir


def clusters_response(replicas: list[Replica], profile: str = "cpu") -> dict:
    """The clusters as Envoy reads them from a file (a CDS DiscoveryResponse), for ``clusters_dir``:
    each replica by its own name, so the limits are sized for one per replica."""
    cluster_type = {"@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster"}
    resources = [cluster_type | c for c in clusters_of(replicas, profile)]
    version = hashlib.sha256(json.dumps(resources, sort_keys=True).encode()).hexdigest()[:16]  # same set, same version
    return {"version_info": version, "resources": resources}

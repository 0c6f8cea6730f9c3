"""Avatars on Kubernetes: placed over the Triton StatefulSet's pods, moved after a scale.

    kubectl scale statefulset synctalk-triton --replicas=4
    kubectl create job --from=cronjob/synctalk-rebalance synctalk-rebalance-$(date +%s)

The rebalance Job's command (deploy/kubernetes/rebalance.yaml), ``synctalk_ops.cluster.rebalance`` over
the pods by their stable names (``synctalk-triton-<i>.synctalk-triton``, the headless Service):

1. the placement of the store's avatars over the StatefulSet's pods as it is scaled now
   (``synctalk_ops.placement``: rendezvous hashing with bounded load, each pod giving its avatars
   ``--replica-memory``); an avatar added to the store since the last run is placed, a removed
   one dropped;
2. every avatar loaded on the pods that gain it (each pod installs what the store holds within
   seconds of it being stored: its ``avatar-sync`` container), with the API key;
3. the edge's routes rewritten (the ConfigMap ``synctalk-edge-routes``); the edges' Envoys read it
   again once the kubelet has updated their volumes, which it does within its sync period and
   ConfigMap cache (a minute each by default): the Job waits ``--route-settle`` for that;
4. the avatars unloaded from the pods that lost them, and the placement saved in the store, which
   every pod's next start reads (it loads the shared steps and its share: deploy/entrypoint.sh).

Scaling down: run it with ``--replicas`` of the smaller count first (the leaving pods' avatars
move to the staying ones), then scale the StatefulSet.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from synctalk_ops import cluster, edge

ROUTES_CONFIGMAP = "synctalk-edge-routes"
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
# the kubelet's sync period (1 min) + its ConfigMap cache's TTL (1 min), and Envoy's read: an edge
# may go on routing by the old routes this long after the ConfigMap changed
ROUTE_SETTLE_S = 150.0
READY_TIMEOUT_S = 600.0
INSTALLED_TIMEOUT_S = 300.0


def pods(count: int) -> dict:
    """The StatefulSet's first ``count`` pods as ``synctalk_ops.cluster`` describes a cluster's replicas."""
    replicas = edge.kubernetes_replicas()[:count]
    if len(replicas) < count:
        raise ValueError(f"{count} pods: more than the edge routes to (the HPA's maxReplicas, {len(replicas)})")
    return {
        "replicas": [
            {"name": r.name, "host": r.host, "grpc_port": r.grpc_port, "http_port": r.http_port} for r in replicas
        ]
    }


class KubernetesApi:
    """The two calls the Job makes to the API server (the official client, in-cluster: its
    ServiceAccount, rebalance.yaml's Role): the StatefulSet's scale and the routes ConfigMap."""

    def __init__(self, namespace: str | None = None):
        from kubernetes import client, config

        config.load_incluster_config()
        self.apps, self.core = client.AppsV1Api(), client.CoreV1Api()
        self.namespace = namespace or (SERVICE_ACCOUNT / "namespace").read_text().strip()

    def replicas(self) -> int:
        scale = self.apps.read_namespaced_stateful_set_scale(edge.STATEFULSET, self.namespace)
        return int(scale.spec.replicas)

    def set_routes(self, text: str) -> None:
        body = {"data": {edge.CLUSTERS_FILE: text}}
        self.core.patch_namespaced_config_map(ROUTES_CONFIGMAP, self.namespace, body)


def wait_ready(row: dict, timeout_s: float = READY_TIMEOUT_S) -> None:
    """Until the pod answers ready (its shared steps and its share loaded)."""
    from synctalk_client import CompositeClient

    deadline = time.monotonic() + timeout_s
    while True:
        with CompositeClient(f"{row['host']}:{row['grpc_port']}") as client:
            state = client.health()  # not resolvable or not listening yet: not ready, and why
        if state["ready"]:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{row['name']} not ready after {timeout_s:.0f} s ({state.get('error', 'not ready')})")
        time.sleep(2)


def wait_installed(row: dict, avatar_id: str, timeout_s: float = INSTALLED_TIMEOUT_S) -> None:
    """Until the pod's repository holds the avatar (its ``avatar-sync`` container installs what
    the store holds), so that loading it can succeed."""
    deadline = time.monotonic() + timeout_s
    while True:
        with cluster.replica_client(row) as client:
            if avatar_id in {m["name"] for m in client.list_models()}:
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{avatar_id} not installed on {row['name']} after {timeout_s:.0f} s")
        time.sleep(2)


def rebalance(
    repository: Path, store: Path, budget: int, count: int, api: KubernetesApi, settle_s: float = ROUTE_SETTLE_S
) -> dict:
    description = pods(count)
    for row in description["replicas"]:
        wait_ready(row)

    def load(row: dict, avatar_id: str) -> None:
        wait_installed(row, avatar_id)
        cluster.load_on_replica(row, avatar_id)

    def route_to(placed) -> None:
        api.set_routes(edge.kubernetes_clusters(placed))
        print(f"routes rewritten; waiting {settle_s:.0f} s for every edge to read them", flush=True)
        time.sleep(settle_s)

    return cluster.rebalance(repository, description, budget, route_to=route_to, store=store, load=load)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, default=Path(os.environ.get("SYNCTALK_MODELS", "/models")))
    parser.add_argument("--store", type=Path, default=Path(os.environ.get("SYNCTALK_AVATAR_STORE", "/avatars")))
    parser.add_argument(
        "--replica-memory",
        type=cluster.memory_size,
        default=os.environ.get("SYNCTALK_REPLICA_MEMORY"),
        help="each pod's budget for its avatars (SYNCTALK_REPLICA_MEMORY)",
    )
    parser.add_argument("--replicas", type=int, help="place over this many pods (default: the StatefulSet's scale)")
    parser.add_argument("--route-settle", type=float, default=ROUTE_SETTLE_S, metavar="SECONDS")
    args = parser.parse_args(argv)
    if not args.replica_memory:
        parser.error("set --replica-memory or SYNCTALK_REPLICA_MEMORY")
    api = KubernetesApi()
    count = args.replicas or api.replicas()
    moves = rebalance(args.repository, args.store, args.replica_memory, count, api, args.route_settle)
    for avatar_id, (gained, lost) in moves.items():
        print(f"moved {avatar_id}: onto {', '.join(gained) or '-'}, off {', '.join(lost) or '-'}")
    print(f"{len(moves)} avatars moved over {count} pods")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

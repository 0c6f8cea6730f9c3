"""The edge in Kubernetes: its bootstrap and its routes (ConfigMaps under deploy/kubernetes/edge/,
kustomize's generators): every pod the StatefulSet may run, by name, with the avatars placed on it."""

from __future__ import annotations

from pathlib import Path

import yaml

from synctalk_build import paths
from synctalk_ops.edge.bootstrap import render, text_of, validate, write
from synctalk_ops.edge.clusters import CLUSTERS_FILE, clusters_response
from synctalk_ops.edge.replicas import Replica

KUBERNETES_DIR = paths.ROOT / "deploy" / "kubernetes" / "edge"

KUBERNETES_FILE = KUBERNETES_DIR / "edge.yaml"  # the bootstrap: ConfigMap synctalk-edge

KUBERNETES_CLUSTERS = KUBERNETES_DIR / CLUSTERS_FILE  # the routes: ConfigMap synctalk-edge-routes

KUBERNETES_HOW = "python -m synctalk_ops.edge --kubernetes"

KUBERNETES_ROUTES_MOUNT = Path("/etc/edge-routes")  # where the edge's pods mount synctalk-edge-routes

STATEFULSET = "synctalk-triton"  # the Triton pods (statefulset.yaml), and their headless Service

# avatars on demand (kubectl apply -k deploy/kubernetes-on-demand): the edge asks the activator,
# its Deployment and Service there (activator.yaml; the port: synctalk_ops.activator.ACTIVATOR_PORT)
ON_DEMAND_DIR = KUBERNETES_DIR.parent.parent / "kubernetes-on-demand"
ON_DEMAND_FILE = ON_DEMAND_DIR / "edge.yaml"  # the bootstrap: ConfigMap synctalk-edge, replaced
ACTIVATOR = ("synctalk-activator", 8090)


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


def kubernetes_on_demand_config() -> dict:
    """``kubernetes_config`` asking the activator (``ACTIVATOR``) about each request: the same
    routes ConfigMap (every pod by name, no avatar listed), each request sent to the pod the
    activator names, which loads the avatar there first where no pod holds it."""
    from synctalk_ops.edge.limits import COLD_START_BUDGET_S

    return render(
        kubernetes_replicas(),
        "gpu",
        host="0.0.0.0",
        clusters_dir=KUBERNETES_ROUTES_MOUNT,
        activator=ACTIVATOR,
        activator_budget_s=COLD_START_BUDGET_S,
    )


def kubernetes_clusters(placed=None) -> str:
    """The routes ConfigMap's ``clusters.yaml``: every class's cluster over every pod the
    StatefulSet may run, with the avatars placed on each (``synctalk_ops.kubernetes_placement``)."""
    response = clusters_response(kubernetes_replicas(placed), "gpu")
    how = "the rebalance Job rewrites it with the placement" if placed is not None else KUBERNETES_HOW
    return text_of(response, how)


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

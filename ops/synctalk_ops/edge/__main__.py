"""``python -m synctalk_ops.edge``: render (and validate) the edge's bootstrap for given replicas, or
the Kubernetes copies (``--kubernetes``: the edge's, and the one asking the activator)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from synctalk_build import paths
from synctalk_ops.edge.bootstrap import render, validate, write
from synctalk_ops.edge.kubernetes import (
    KUBERNETES_CLUSTERS,
    KUBERNETES_DIR,
    KUBERNETES_FILE,
    KUBERNETES_HOW,
    ON_DEMAND_FILE,
    kubernetes_clusters,
    kubernetes_config,
    kubernetes_on_demand_config,
    validate_kubernetes,
)
from synctalk_ops.edge.replicas import Replica


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
        on_demand = write(kubernetes_on_demand_config(), ON_DEMAND_FILE, KUBERNETES_HOW)
        validate_kubernetes(on_demand)
        print(path, KUBERNETES_CLUSTERS, on_demand, sep="\n")
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

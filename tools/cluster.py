"""A local cluster: N tritonserver replicas on loopback and the edge in front of them.

    python -m tools.cluster --repository build/repository/cpu --replicas 2     # make cluster REPLICAS=2

In the foreground like ``make serve``: clients call the edge on 8000 (HTTP) and 8001 (gRPC), as
they call one server; replica i listens on 8100 + 10 i (HTTP), 8101 + 10 i (gRPC) and 8102 + 10 i
(metrics), where its model control goes (with the API key). ``build/cluster/replicas.json`` says
each replica's name, pid and ports for operators and tools. Ctrl-C or SIGTERM stops the edge, then
the replicas. Every replica serves the whole repository (placing avatars on some replicas only is
the avatar store's job).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

from synctalk_client import contract
from tools import paths
from tools.edge import Edge, Replica
from tools.launched import Launched
from tools.serve import EDGE_ADMIN_PORT, REPLICA_GRPC_PORT, REPLICA_HTTP_PORT, TritonServer

REPLICAS_FILE = paths.BUILD / "cluster" / "replicas.json"
PORT_STRIDE = 10


class Cluster(Launched):
    """Replicas and the edge, as a context manager (the tests') or in the foreground (``main``)."""

    def __init__(
        self,
        repository: Path,
        replicas: int = 2,
        grpc_port: int = 8001,
        http_port: int = 8000,
        admin_port: int = EDGE_ADMIN_PORT,
        replica_ports: list[tuple[int, int, int]] | None = None,
        profile: str = "cpu",
        logs: Path = paths.BUILD / "logs" / "cluster",
        supervise: bool = True,
    ):
        if replicas < 1:
            raise ValueError(f"a cluster needs at least one replica, not {replicas}")
        ports = replica_ports or [
            (
                REPLICA_HTTP_PORT + PORT_STRIDE * i,
                REPLICA_GRPC_PORT + PORT_STRIDE * i,
                REPLICA_GRPC_PORT + 1 + PORT_STRIDE * i,
            )
            for i in range(replicas)
        ]
        self.servers = [
            TritonServer(repository, http, grpc, metrics, log_path=logs / f"replica-{i}.log", supervise=supervise)
            for i, (http, grpc, metrics) in enumerate(ports[:replicas])
        ]
        self.replicas = [Replica.of(server, i) for i, server in enumerate(self.servers)]
        self.edge = Edge(
            self.replicas,
            grpc_port,
            http_port,
            admin_port,
            profile=profile,
            config_path=paths.BUILD / "cluster" / f"edge-{grpc_port}.yaml",
            log_path=logs / "edge.log",
        )

    @property
    def grpc_url(self) -> str:
        return self.edge.grpc_url

    @property
    def http_url(self) -> str:
        return self.edge.http_url

    def describe(self) -> dict:
        return {
            "edge": {
                "grpc": self.edge.grpc_url,
                "http": self.edge.http_url,
                "admin": self.edge.admin_url,
                "pid": self.edge.process.pid if self.edge.process else None,
            },
            "replicas": [
                {
                    "name": replica.name,
                    "pid": server.process.pid if server.process else None,
                    "grpc_port": server.grpc_port,
                    "http_port": server.http_port,
                    "metrics_port": server.metrics_port,
                }
                for replica, server in zip(self.replicas, self.servers)
            ],
        }

    def write_description(self, path: Path = REPLICAS_FILE) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.describe(), indent=2) + "\n")
        return path

    def start(self) -> Cluster:
        for server in self.servers:
            server.start()
        self.edge.start()
        return self

    def is_ready(self) -> bool:
        return all(s.is_ready() for s in self.servers) and self.edge.is_ready()

    def wait_ready(self, timeout: float = 300.0) -> Cluster:
        for server in self.servers:
            server.wait_ready(timeout)
        self.edge.wait_ready(60)
        return self

    def stop(self) -> int:
        """The edge first (no new request reaches a replica), then the replicas; the first
        non-zero exit code, or 0."""
        codes = [self.edge.stop()] + [server.stop() for server in self.servers]
        return next((c for c in codes if c), 0)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, default=paths.RENDERED / "cpu")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--admin-port", type=int, default=EDGE_ADMIN_PORT)
    args = parser.parse_args(argv)
    cluster = Cluster(args.repository, args.replicas, args.grpc_port, args.http_port, args.admin_port)
    stopping = []
    signal.signal(signal.SIGTERM, lambda signum, _frame: stopping.append(signum))
    signal.signal(signal.SIGINT, lambda signum, _frame: stopping.append(signum))
    cluster.start()
    announced = False

    def running() -> bool:
        return all(s.process.poll() is None for s in cluster.servers) and cluster.edge.process.poll() is None

    while not stopping and running():
        if not announced and cluster.is_ready():
            for server in cluster.servers:
                server.wait_ready(timeout=5)  # starts its supervisor
            path = cluster.write_description()
            print(f"tritonserver ready: gRPC {cluster.edge.grpc_url}, HTTP {cluster.edge.http_url}", flush=True)
            print(
                f"  through the edge (Envoy; its admin on {cluster.edge.admin_url}) to {len(cluster.servers)} "
                f"replicas: {', '.join(s.grpc_url for s in cluster.servers)} (model control: each replica's own "
                f"port, with {contract.API_KEY_FILE_ENV}={os.environ.get(contract.API_KEY_FILE_ENV, '')}); {path}",
                flush=True,
            )
            announced = True
        time.sleep(0.25)
    failed = not stopping  # a replica or the edge exited by itself
    code = cluster.stop()
    return (code or 1) if failed else code


if __name__ == "__main__":
    sys.exit(main())

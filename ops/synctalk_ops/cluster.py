"""A local cluster: N tritonserver replicas on loopback and the edge in front of them.

    python -m synctalk_ops.cluster --repository build/repository/cpu --replicas 2     # make cluster REPLICAS=2

In the foreground like ``make serve``: clients call the edge on 8000 (HTTP) and 8001 (gRPC), as
they call one server; replica i listens on 8100 + 10 i (HTTP), 8101 + 10 i (gRPC) and 8102 + 10 i
(metrics), where its model control goes (with the API key). ``build/cluster/replicas.json`` says
each replica's name, pid, ports and avatars for operators and tools. Ctrl-C or SIGTERM stops the
edge, then the replicas. The ports and the budget are checked before anything starts.

A replica that dies (killed, out of memory) is logged and started again on its ports with its
share, while the edge and the other replicas go on serving: Triton listens only once its models are
loaded, so the edge (checking each replica's readiness every second) sends it nothing before. A
replica that dies more than ``MAX_RESTARTS`` times within ``RESTART_WINDOW_S`` is left down, and
says why; the edge exiting, or every replica down, stops the cluster.

Avatars are placed (``synctalk_ops.placement``): each replica loads the shared steps and the avatars placed
on it, each avatar on ``--factor`` replicas (default 2, or 1 with one replica) within
``--replica-memory`` (default: this host's available memory shared out, less each replica's shared
steps and reserve for requests in flight); the edge sends each avatar's requests to its holders.

With ``--on-demand`` (``make cluster ON_DEMAND=1``) nothing is placed: the replicas start with the
shared steps only, and the activator (``synctalk_ops.activator``, on ``--activator-port``, 8090),
which the edge asks about each request, loads each avatar where it is first asked for.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from synctalk_build import paths, repository_manifest
from synctalk_common import contract
from synctalk_ops import cpu_share, placement
from synctalk_ops.activator import ACTIVATOR_PORT, IDLE_S, SPILL_AT, ActivatorService
from synctalk_ops.edge import Edge, Replica, write_endpoints
from synctalk_ops.edge.limits import COLD_START_BUDGET_S
from synctalk_ops.launched import Launched, PortConflict, check_ports
from synctalk_ops.serve import EDGE_ADMIN_PORT, REPLICA_HTTP_PORT, TritonServer

REPLICAS_FILE = paths.BUILD / "cluster" / "replicas.json"
PORT_STRIDE = 10
MAX_RESTARTS = 3  # restarts of one replica within RESTART_WINDOW_S; it dies once more: left down
RESTART_WINDOW_S = 600.0


def default_ports(i: int, base: int = REPLICA_HTTP_PORT) -> tuple[int, int, int]:
    """Replica i's HTTP, gRPC and metrics ports: 8100 + 10 i, 8101 + 10 i, 8102 + 10 i (from
    ``base``)."""
    return base + PORT_STRIDE * i, base + 1 + PORT_STRIDE * i, base + 2 + PORT_STRIDE * i


def exit_reason(code: int) -> str:
    """A process's exit code in words."""
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.valid_signals() else f"signal {-code}"
        return f"was killed by {name}" + (
            " (the kernel's OOM killer, or an operator)" if -code == signal.SIGKILL else ""
        )
    return f"exited with code {code}"


class RestartBudget:
    """How often a replica may be started again: ``most`` times within ``window_s``."""

    def __init__(self, most: int = MAX_RESTARTS, window_s: float = RESTART_WINDOW_S):
        self.most, self.window_s = most, window_s
        self.times: dict[str, list[float]] = {}  # within the window
        self.counts: dict[str, int] = {}  # since the start

    def take(self, name: str, now: float) -> int | None:
        """Count one restart of ``name`` at ``now`` and return its number within the window, or
        None (and count nothing) where ``most`` were made within it already."""
        recent = [t for t in self.times.get(name, []) if now - t < self.window_s]
        if len(recent) >= self.most:
            return None
        self.times[name] = recent + [now]
        self.counts[name] = self.counts.get(name, 0) + 1
        return len(self.times[name])

    def total(self, name: str) -> int:
        """Restarts since the start."""
        return self.counts.get(name, 0)


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
        replica_memory: int | None = None,
        factor: int | None = None,
        on_demand: bool = False,
        activator_port: int = ACTIVATOR_PORT,
        budget_s: float = COLD_START_BUDGET_S,
        idle_s: float = IDLE_S,
        spill_at: int = SPILL_AT,
    ):
        if replicas < 1:
            raise ValueError(f"a cluster needs at least one replica, not {replicas}")
        ports = replica_ports or [default_ports(i) for i in range(replicas)]
        self.logs = logs
        self.restarts = RestartBudget()
        self.down: dict[str, str] = {}  # replica name -> why it was left down
        self.returning: dict[str, float] = {}  # replica name -> when it was restarted, until ready
        names = [f"replica-{i}" for i in range(replicas)]
        if on_demand and repository_manifest.avatar_store(repository) is None:
            raise ValueError("avatars on demand need an avatar store (render the repository with one)")
        self.placement = (
            placement.plan(repository, names, replica_memory or placement.default_budget(repository, replicas), factor)
            if repository_manifest.avatar_store(repository) is not None and not on_demand
            else None  # avatars live in the repository alone: every replica holds them all; or on demand
        )
        # on demand: the shared steps, each avatar loaded where it is first asked for (the activator)
        held = {
            name: [] if on_demand else self.placement.avatars_on(name) if self.placement else None for name in names
        }
        self.servers = [
            self._server(repository, name, replica_ports, held[name], supervise)
            for name, replica_ports in zip(names, ports[:replicas])
        ]
        self.replicas = [
            Replica.of(server, i, None if on_demand else held[names[i]]) for i, server in enumerate(self.servers)
        ]
        self.activator = (
            ActivatorService(
                repository,
                self.replicas,
                activator_port,
                budget_s,
                logs / "activator.log",
                replica_memory=replica_memory or placement.default_budget(repository, replicas),
                idle_s=idle_s,
                spill_at=spill_at,
            )
            if on_demand
            else None
        )
        self.edge = Edge(
            self.replicas,
            grpc_port,
            http_port,
            admin_port,
            profile=profile,
            config_path=paths.BUILD / "cluster" / f"edge-{grpc_port}.yaml",
            log_path=logs / "edge.log",
            activator=self.activator.address if self.activator else None,
            activator_budget_s=budget_s if self.activator else None,
        )

    def _server(
        self, repository: Path, name: str, ports: tuple[int, int, int], avatars: list[str] | None, supervise: bool
    ) -> TritonServer:
        """A replica's tritonserver on ``ports`` (HTTP, gRPC, metrics): every model of the
        repository (``avatars`` None: nothing is placed), or the shared steps and ``avatars``."""
        http, grpc, metrics = ports
        return TritonServer(
            repository,
            http,
            grpc,
            metrics,
            log_path=self.logs / f"{name}.log",
            supervise=supervise,
            models=None if avatars is None else placement.models_to_load(repository, avatars),
            group_nice=cpu_share.SERVER_NICE,
        )

    @property
    def grpc_url(self) -> str:
        return self.edge.grpc_url

    @property
    def http_url(self) -> str:
        return self.edge.http_url

    def describe(self) -> dict:
        replicas = self._as_placed()
        return {
            "edge": {
                "grpc": self.edge.grpc_url,
                "http": self.edge.http_url,
                "admin": self.edge.admin_url,
                "pid": self.edge.process.pid if self.edge.process else None,
                "endpoints": str(self.edge.endpoints_dir) if self.edge.endpoints_dir else None,
            },
            # avatars on demand: loaded where first asked for, by the activator (no avatar is listed)
            "activator": {
                "url": f"http://{self.activator.host}:{self.activator.port}",
                "pid": self.activator.process.pid if self.activator.process else None,
                "budget_s": self.activator.budget_s,
                "replica_memory": self.activator.replica_memory,
                "idle_s": self.activator.idle_s,
                "spill_at": self.activator.spill_at,
            }
            if self.activator
            else None,
            "replicas": [
                {
                    "name": replica.name,
                    "host": replica.host,
                    "avatars": list(replica.avatars) if replica.avatars is not None else None,
                    "pid": server.process.pid if server.process else None,
                    "grpc_port": server.grpc_port,
                    "http_port": server.http_port,
                    "metrics_port": server.metrics_port,
                    "restarts": self.restarts.total(replica.name),
                    "down": self.down.get(replica.name),
                }
                for replica, server in zip(replicas, self.servers)
            ],
        }

    def write_description(self, path: Path = REPLICAS_FILE) -> Path:
        """The description written whole or not at all (a new file renamed over the old): a reader
        (an operator's script, the tests) never sees it half written or empty."""
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        partial.write_text(json.dumps(self.describe(), indent=2) + "\n")
        os.replace(partial, path)
        return path

    def add_replica(self, ports: tuple[int, int, int] | None = None) -> TritonServer:
        """One more replica, started with the shared steps and no avatar (``rebalance`` gives it
        its share), ready, then in the edge's rotation; named by the first free index."""
        if self.activator is not None:
            raise ValueError("a cluster with avatars on demand keeps the replicas it started with (its activator's)")
        names = {r.name for r in self.replicas}
        i = next(i for i in range(len(names) + 1) if f"replica-{i}" not in names)
        first = self.servers[0]
        avatars = None if self.placement is None else []
        server = self._server(first.repository, f"replica-{i}", ports or default_ports(i), avatars, first.supervise)
        server.start().wait_ready()
        self.servers.append(server)
        self.replicas.append(Replica.of(server, i, None if self.placement is None else ()))
        self.edge.place(self._as_placed())
        return server

    def remove_replica(self, name: str) -> None:
        """A replica taken out (``rebalance`` without it first, so its avatars are held elsewhere):
        the edge stops sending to it (returning once Envoy has it), then it stops (Triton
        finishes what it admitted)."""
        index = [r.name for r in self.replicas].index(name)
        server = self.servers.pop(index)
        self.replicas.pop(index)
        self.edge.place(self._as_placed())
        server.stop()

    def _as_placed(self) -> list[Replica]:
        """The replicas with the avatars the store's placement gives each now (a rebalance or an
        ``add --cluster`` since the start changed it)."""
        placed = placement.load(repository_manifest.avatar_store(self.servers[0].repository))
        if self.placement is None or placed is None:
            return self.replicas
        self.replicas = [r.holding(placed.avatars_on(r.name)) for r in self.replicas]
        return self.replicas

    def port_roles(self) -> dict[str, int]:
        """Every port of the edge and the replicas by what listens there."""
        roles = self.edge.port_roles() | (self.activator.port_roles() if self.activator else {})
        for replica, server in zip(self.replicas, self.servers):
            roles.update(server.port_roles(replica.name))
        return roles

    def start(self) -> Cluster:
        check_ports(self.port_roles())  # all together, before any process starts
        for server in self.servers:
            server.start()
        if self.activator:  # before the edge, which asks it about every request (its readiness too)
            self.activator.start().wait_ready()
        self.edge.start()
        return self

    def keep_replicas(self, now: float | None = None) -> list[str]:
        """One look at the replicas: one that exited by itself is started again with its share (the
        placement's now: a rebalance since the start may have changed it), within the restart
        budget, else left down; one restarted and now ready gets its stub supervisor. Returns what
        happened, a line each, for the operator's log."""
        now = time.monotonic() if now is None else now
        lines = []
        for index, server in enumerate(self.servers):
            name = self.replicas[index].name
            if name in self.down or server.process is None:
                continue
            if server.process.poll() is None:
                if name in self.returning and server.is_ready():
                    server.wait_ready(timeout=5)  # starts its stub supervisor
                    since = now - self.returning.pop(name)
                    lines.append(
                        f"{name}: back, ready and in the edge's rotation (pid {server.process.pid}, {since:.1f} s)"
                    )
                continue
            self.returning.pop(name, None)
            dead, why = server.process.pid, exit_reason(server.process.returncode)
            count = self.restarts.take(name, now)
            if count is None:
                self.down[name] = (
                    f"{why}, after {self.restarts.most} restarts within {self.restarts.window_s / 60:.0f} minutes: "
                    f"left down (its log: {server.log_path})"
                )
                server.stop()
                lines.append(f"{name} (pid {dead}) {self.down[name]}; its avatars are served by their other holders")
                continue
            if self.placement is not None:
                avatars = self._as_placed()[index].avatars
                server.models = sorted(placement.models_to_load(server.repository, list(avatars)))
            lines.append(
                f"{name} (pid {dead}) {why}: starting it again with its share (restart {count} of "
                f"{self.restarts.most} within {self.restarts.window_s / 60:.0f} minutes); the edge sends it nothing "
                "until it is ready"
            )
            try:
                server.restart()
                self.returning[name] = now
            except (OSError, RuntimeError, ValueError) as exc:  # its ports taken meanwhile, ...: counted, tried again
                lines.append(f"{name}: could not start again: {exc}")
        return lines

    def all_down(self) -> bool:
        return len(self.down) == len(self.servers)

    def is_ready(self) -> bool:
        """The edge and every replica not left down."""
        up = [s for s, r in zip(self.servers, self.replicas) if r.name not in self.down]
        return (
            all(s.is_ready() for s in up) and self.edge.is_ready() and (not self.activator or self.activator.is_ready())
        )

    def wait_ready(self, timeout: float = 300.0) -> Cluster:
        for server in self.servers:
            server.wait_ready(timeout)
        self.edge.wait_ready(60)
        return self

    def stop(self) -> int:
        """The edge first (no new request reaches a replica), the activator, then the replicas; the first
        non-zero exit code, or 0."""
        codes = [self.edge.stop(), self.activator.stop() if self.activator else None]
        # side by side: each unloads its models and exits in a few seconds, none waits on another
        with ThreadPoolExecutor(max_workers=max(1, len(self.servers))) as stopping:
            codes += list(stopping.map(lambda server: server.stop(), self.servers))
        return next((c for c in codes if c), 0)


# --- avatars on a running cluster (synctalk-avatars add/remove --cluster) ---------------------------
def read_description(path: Path = REPLICAS_FILE) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is the cluster running (make cluster)?")
    return json.loads(path.read_text())


def route(description: dict, placed: placement.Placement) -> list[Replica]:
    """The edge's replicas and the avatars each holds, from the placement: Envoy takes them with
    no restart (the endpoint files it watches); returns once it has."""
    replicas = [
        Replica(r["name"], r["host"], r["grpc_port"], r["http_port"], tuple(placed.avatars_on(r["name"])))
        for r in description["replicas"]
    ]
    if not description["edge"].get("endpoints"):
        raise ValueError("this cluster's edge resolves its replicas by name: its routes are fixed")
    write_endpoints(replicas, Path(description["edge"]["endpoints"]), description["edge"]["admin"])
    return replicas


def replica_client(row: dict):
    """A client of one replica's own port, with the API key (a row of the cluster's replicas)."""
    from synctalk_client import CompositeClient
    from synctalk_ops import api_key

    return CompositeClient(f"{row['host']}:{row['grpc_port']}", api_key=api_key.read_key())


def load_on_replica(row: dict, avatar_id: str) -> None:
    """Load an avatar with its steps on a replica (its own port, with the key); returns once loaded."""
    with replica_client(row) as client:
        client.load_model(avatar_id)


def unload_on_replica(row: dict, avatar_id: str) -> None:
    """Unload an avatar and its own steps from a replica, where it is loaded."""
    with replica_client(row) as client:
        if avatar_id in client.model_ids():
            client.unload_model(avatar_id)


def place_avatar(repository: Path, avatar_id: str, description: dict) -> list[str]:
    """A stored avatar placed on the running cluster: a ``rebalance`` at the placed budget, which
    over the placed replicas moves only the new avatar (loaded on its holders, then routed there),
    and over replicas changed since makes every move that calls for, each loaded before it is
    routed. Returns its holders."""
    store = repository_manifest.avatar_store(repository)
    if placement.load(store) is None:
        raise ValueError("the cluster's avatars are not placed (no placement in the avatar store)")
    rebalance(repository, description)
    return placement.load(store).holders[avatar_id]


def unplace_avatar(repository: Path, avatar_id: str, description: dict) -> list[str]:
    """An avatar taken off the running cluster: routed nowhere first, then unloaded from its
    holders, then out of the placement. Returns its former holders."""
    store = repository_manifest.avatar_store(repository)
    placed = placement.load(store)
    if placed is None or avatar_id not in placed.holders:
        return []
    holders = placed.remove(avatar_id)
    route(description, placed)
    for row in description["replicas"]:
        if row["name"] in holders:
            unload_on_replica(row, avatar_id)
    placed.save(store)
    return holders


def rebalance(
    repository: Path,
    description: dict,
    budget: int | None = None,
    route_to=None,
    store: Path | None = None,
    load=None,
) -> dict[str, tuple[list, list]]:
    """The avatars placed again over the cluster's replicas as they are now (after replicas were
    added, or before some are removed), each move made so no request for it fails: loaded on its
    new holders first, then the edge's routes switched (``route_to(placement)``, returning once the
    edge has them; default: this host's edge, ``route``), then unloaded from the holders it left
    (Triton lets their requests in flight finish). Where the store has no placement yet, every
    replica is taken to hold every avatar (each loaded all at start). ``store``: the avatar store
    (default: the repository's); ``load(row, avatar_id)``: how a replica loads one (default:
    ``load_on_replica``). Returns the moves: avatar id -> (replicas that took it, replicas
    that gave it up)."""
    store = Path(store) if store else repository_manifest.avatar_store(repository)
    names = [r["name"] for r in description["replicas"]]
    stored = placement.load(store)
    if stored is None and budget is None:
        raise ValueError("the cluster's avatars are not placed (no placement in the avatar store): give a budget")
    placed = placement.plan(repository, names, budget or max(stored.budgets.values()), save=False, store=store)
    if stored is None:  # every replica holds every avatar
        stored = placement.Placement(dict(placed.budgets), {a: list(names) for a in placed.holders})
    moves = stored.moves(placed)
    rows = {r["name"]: r for r in description["replicas"]}
    for avatar_id, (gained, _) in moves.items():
        for name in gained:
            (load or load_on_replica)(rows[name], avatar_id)
    (route_to or (lambda p: route(description, p)))(placed)
    for avatar_id, (_, lost) in moves.items():
        for name in lost:
            if name in rows:  # a replica already gone has nothing to unload
                unload_on_replica(rows[name], avatar_id)
    placed.save(store)
    return moves


def memory_size(text: str) -> int:
    """``8G``, ``512M``, ``1.5G`` or bytes."""
    units = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    text = text.strip().upper().removesuffix("B").removesuffix("I")
    try:
        if text and text[-1] in units:
            return int(float(text[:-1]) * units[text[-1]])
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"memory size like 8G or 512M, got {text!r}") from None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, default=paths.RENDERED / "cpu")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--admin-port", type=int, default=EDGE_ADMIN_PORT)
    parser.add_argument(
        "--replica-memory",
        type=memory_size,
        help="memory each replica gives its avatars, e.g. 8G or 512M (default: this host's available memory, "
        "less each replica's shared steps and reserve for requests in flight, shared out)",
    )
    parser.add_argument("--factor", type=int, help="replicas each avatar is placed on (default 2; 1 with one replica)")
    parser.add_argument(
        "--replica-ports",
        type=int,
        default=REPLICA_HTTP_PORT,
        help=f"replica i's HTTP, gRPC and metrics ports: this + {PORT_STRIDE} i, + 1, + 2 (default %(default)s)",
    )
    parser.add_argument(
        "--on-demand",
        action="store_true",
        help="no placement: the replicas start with the shared steps, each avatar loaded where first asked for "
        "(the activator beside the edge: docs/operations.md)",
    )
    parser.add_argument("--activator-port", type=int, default=ACTIVATOR_PORT)
    parser.add_argument(
        "--budget-s",
        type=float,
        default=COLD_START_BUDGET_S,
        help="on demand: hold a request this long while its avatar loads",
    )
    parser.add_argument(
        "--idle-s", type=float, default=IDLE_S, help="on demand: an avatar unloaded for room only when idle this long"
    )
    parser.add_argument(
        "--spill-at",
        type=int,
        default=SPILL_AT,
        help="on demand: with every holder of an avatar busy with this many of its streams or waiting requests, "
        "it is loaded on one more replica (0: never)",
    )
    parser.add_argument("--replicas-file", type=Path, default=REPLICAS_FILE, help="where the cluster is described")
    parser.add_argument(
        "--logs", type=Path, default=paths.BUILD / "logs" / "cluster", help="the replicas' and edge's logs"
    )
    args = parser.parse_args(argv)
    try:
        if args.replica_memory is not None:  # what this host cannot give is refused, not OOM-killed later
            placement.check_budget(args.repository, args.replicas, args.replica_memory)
        cluster = Cluster(
            args.repository,
            args.replicas,
            args.grpc_port,
            args.http_port,
            args.admin_port,
            replica_memory=args.replica_memory,
            factor=args.factor,
            replica_ports=[default_ports(i, args.replica_ports) for i in range(args.replicas)],
            logs=args.logs,
            on_demand=args.on_demand,
            activator_port=args.activator_port,
            budget_s=args.budget_s,
            idle_s=args.idle_s,
            spill_at=args.spill_at,
        )
    except (MemoryError, ValueError) as exc:  # the avatars do not fit these replicas, or this host
        how = "" if args.replica_memory else f"\n{placement.describe_default_budget(args.repository, args.replicas)}"
        parser.exit(2, f"error: {exc}{how}\n")
    if cluster.placement is not None:
        for replica in cluster.replicas:
            print(f"{replica.name}: {', '.join(replica.avatars) or 'no avatars'}", flush=True)
    stopping = []
    signal.signal(signal.SIGTERM, lambda signum, _frame: stopping.append(signum))
    signal.signal(signal.SIGINT, lambda signum, _frame: stopping.append(signum))
    try:
        cluster.start()  # refused, before anything starts, where its ports collide or are taken
    except PortConflict as exc:
        parser.exit(2, f"error: {exc}\n")
    try:
        return watch(cluster, stopping, args.replicas_file)
    except BaseException:  # whatever goes wrong here, nothing is left running
        print("the cluster's watch failed: stopping the cluster", file=sys.stderr, flush=True)
        cluster.stop()
        raise


def watch(cluster: Cluster, stopping: list, replicas_file) -> int:
    """Keeps the replicas (``keep_replicas``) until a signal, the edge's exit or every replica
    down; announces the cluster once ready. Returns the exit code, the cluster stopped."""
    announced = False
    activator = cluster.activator.process if cluster.activator else None
    while (
        not stopping
        and cluster.edge.process.poll() is None
        and (activator is None or activator.poll() is None)
        and not cluster.all_down()
    ):
        changes = cluster.keep_replicas()
        for line in changes:
            print(line, file=sys.stderr, flush=True)
        if changes and announced:
            cluster.write_description(replicas_file)  # the restarted replica's pid
        if not announced and cluster.is_ready():
            for server in cluster.servers:
                if server.process.poll() is None:
                    server.wait_ready(timeout=5)  # starts its supervisor
            path = cluster.write_description(replicas_file)
            print(f"tritonserver ready: gRPC {cluster.edge.grpc_url}, HTTP {cluster.edge.http_url}", flush=True)
            print(
                f"  through the edge (Envoy; its admin on {cluster.edge.admin_url}) to {len(cluster.servers)} "
                f"replicas: {', '.join(s.grpc_url for s in cluster.servers)} (model control: each replica's own "
                f"port, with {contract.API_KEY_FILE_ENV}={os.environ.get(contract.API_KEY_FILE_ENV, '')}); {path}",
                flush=True,
            )
            announced = True
        time.sleep(0.25)
    failed = not stopping  # the edge exited by itself, or every replica is down
    if failed:
        print(
            "every replica is down: stopping the cluster"
            if cluster.all_down()
            else "the edge exited: stopping the cluster"
            if cluster.edge.process.poll() is not None
            else "the activator exited: stopping the cluster",
            file=sys.stderr,
            flush=True,
        )
    code = cluster.stop()
    return (code or 1) if failed else code


if __name__ == "__main__":
    sys.exit(main())

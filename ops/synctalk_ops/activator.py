"""The activator: avatars loaded on first use, beside the edge (Envoy's external authorization).

    python -m synctalk_ops.activator --repository build/repository/cpu \\
        --replica 127.0.0.1:8101:8100 --replica 127.0.0.1:8111:8110 --port 8090

Envoy asks it about every request before routing it (``ext_authz``, the request's headers only,
never its body): the model id (the SDK's ``synctalk-model-id`` header, or the KServe path's
``/v2/models/<id>/``) names an avatar of the repository's store, or not.

- **Not an avatar** (a shared model, a server call, an id nobody stored): allowed at once, to any
  replica; Triton answers "model not found: <id>" for an unknown one.
- **A stored avatar**: sent to a replica holding it (the first holder in the avatar's ranking of
  the replicas, ``synctalk_ops.placement.ranking``); where none holds it, it is loaded on the first
  replica of its ranking that takes it (Triton's model control, with the API key), and the request
  is held meanwhile. Concurrent first requests share that one load. Past ``--budget-s`` the request
  is answered "the avatar is loading" (503, gRPC UNAVAILABLE: the SDK's busy category, retry), never
  "model not found".
- **A hot avatar** (every holder busy with it: ``--spill-at`` of its streams open, or of its
  requests waiting, there) goes to its least busy holder, and is loaded on the next replica of its
  ranking beside the traffic: bounded load, the other avatars staying where their ranking puts them.

Its answer names the replica in the ``synctalk-replica`` header, which the edge turns into its load
balancer's metadata (``synctalk_ops.edge.routes``): the edge lists replicas, never avatars, so
nothing is rewritten when an avatar is loaded. Why ``ext_authz`` and not a proxy: Envoy stays the
only data path (a 78 MB request never crosses this process), and its decision costs one small
HTTP request (headers only) per call, one per live stream.

``/metrics``: hits, loads, their seconds, cold waits, refusals while loading, evictions, spills
(Prometheus text).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from synctalk_common import contract
from synctalk_ops.edge.limits import COLD_START_BUDGET_S
from synctalk_ops.edge.replicas import Replica
from synctalk_ops.edge.routes import CHECK_PREFIX, HTTP_MODEL_PATH, REFUSAL_STATUS
from synctalk_ops.launched import END_WITH_PARENT, Launched, answers
from synctalk_ops.placement import ranking

READY_TTL_S = 1.0  # a replica seen holding an avatar is not asked again for this long
# an avatar is unloaded to make room only when idle: no live stream open on it and no request of
# its pending on its replica (the replica's metrics), and not sent there within this long (a
# request routed a moment ago may still be on its way, its body uploading)
IDLE_S = 2.0
UNLOAD_WAIT_S = 30.0  # an avatar unloaded for room: its processes gone within this, else a warning
ROOM_POLL_S = 0.2  # a load waiting for room (every replica's avatars in use) looks again this often
STORE_REFRESH_S = 1.0  # an id not in the store is looked up again at most this often
# a holder of an avatar counts as busy with it once this many of its live streams are open there,
# or this many of its requests wait there (its metrics, read at most every METRICS_TTL_S); when
# every holder is busy, the avatar is loaded on one more replica, the next of its ranking (bounded
# load: a hot avatar spills over, the others stay where their ranking puts them)
SPILL_AT = 4
METRICS_TTL_S = 0.25

log = logging.getLogger("synctalk.activator")

METRICS = {
    "hits": "requests for an avatar already loaded on a replica",
    "loads": "avatar loads started",
    "load_failures": "avatar loads that failed on a replica",
    "cold_waits": "requests held while their avatar loaded",
    "loading_refusals": "requests answered 'the avatar is loading' past the budget",
    "evictions": "idle avatars unloaded to make room for another",
    "no_room": "loads given up because every replica's room was held by avatars in use, past the budget",
    "spills": "loads of an avatar on one more replica, every holder busy with it",
}


@dataclass(frozen=True)
class ReplicaLoad:
    """A replica's live streams open by avatar (the stream model's gauge) and requests pending by
    model (Triton's), from one read of its Prometheus text."""

    streams: dict[str, int]
    pending: dict[str, int]

    @classmethod
    def parse(cls, text: str) -> ReplicaLoad:
        streams: dict[str, int] = {}
        pending: dict[str, int] = {}
        tables = {
            contract.OPEN_STREAMS_METRIC: (streams, "avatar"),
            "nv_inference_pending_request_count": (pending, "model"),
        }
        for line in text.splitlines():
            name, _, rest = line.partition("{")
            if name in tables:
                table, label = tables[name]
                if key := re.search(rf'{label}="([^"]+)"', rest):
                    table[key.group(1)] = table.get(key.group(1), 0) + int(float(rest.rsplit(" ", 1)[1]))
        return cls(streams, pending)

    def busy_with(self, avatar: str) -> int:
        """The avatar's live streams open plus its own models' requests pending (shared steps are
        no avatar's)."""
        own = contract.avatar_models(avatar, own_audio_encoder=True).values()
        return self.streams.get(avatar, 0) + sum(self.pending.get(model, 0) for model in own)


class Activator:
    """The decisions: where a request goes, and the loads they call for."""

    def __init__(
        self,
        repository: Path,
        replicas: list[Replica],
        budget_s: float = COLD_START_BUDGET_S,
        api_key: str | None = None,
        replica_memory: int | None = None,
        idle_s: float = IDLE_S,
        spill_at: int = SPILL_AT,
        store: Path | None = None,
    ):
        from synctalk_build.repository_manifest import avatar_store

        self.repository = Path(repository)
        # the stored avatars (their entries: their ids and what each needs); default: the repository's store
        self.store = Path(store) if store else avatar_store(self.repository)
        self.replicas = {r.name: r for r in replicas}
        self.budget_s = budget_s
        self.api_key = api_key
        self.replica_memory, self.idle_s = replica_memory, idle_s  # None: no budget, nothing unloaded
        self.spill_at = spill_at  # 0: an avatar stays on its first holder however busy
        # each replica's avatars (loaded by this activator, or found there), each when last asked for
        self.used: dict[str, dict[str, float]] = {name: {} for name in self.replicas}
        self._room_locks = {name: asyncio.Lock() for name in self.replicas}
        self._needs: dict[str, int] = {}
        self.counts: Counter[str] = Counter()
        self.load_seconds = 0.0
        self._stored: set[str] = set()
        self._stored_at = -1e9
        self._ready: dict[tuple[str, str], float] = {}  # (replica, avatar): when last seen ready
        self._finding: dict[str, asyncio.Task] = {}  # avatar: its holder searched for, or its load
        self._spilling: dict[str, asyncio.Task] = {}  # avatar: its load on one more replica
        self._metrics: dict[str, tuple[float, ReplicaLoad | None]] = {}  # replica: (when read, its load)
        self._session = None

    # --- what a request names -----------------------------------------------------------------
    @staticmethod
    def model_of(path: str, headers) -> str | None:
        """The avatar a request is for: the SDK's header, else the KServe path's model id."""
        named = headers.get(contract.EDGE_MODEL_HEADER)
        if named:
            return contract.model_owner(named)
        match = re.match(HTTP_MODEL_PATH, path)
        return contract.model_owner(match.group(1)) if match else None

    def is_stored(self, avatar: str) -> bool:
        """An avatar of the repository's store (looked up again for a new id, at most once a second)."""
        now = time.monotonic()
        if avatar not in self._stored and now - self._stored_at > STORE_REFRESH_S:
            from synctalk_build.avatar_store import stored_avatars

            self._stored = {entry.name for entry in stored_avatars(self.store)}
            self._stored_at = now
        return avatar in self._stored

    # --- the replicas -------------------------------------------------------------------------
    async def _http(self):
        if self._session is None:
            import aiohttp

            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, connect=2))
        return self._session

    async def holds(self, replica: Replica, avatar: str) -> bool:
        """The replica has the avatar loaded and ready (asked of it)."""
        session = await self._http()
        try:
            async with session.get(f"http://{replica.host}:{replica.http_port}/v2/models/{avatar}/ready") as answer:
                ready = answer.status == 200
        except (OSError, asyncio.TimeoutError):
            ready = False
        if ready:
            self._ready[(replica.name, avatar)] = time.monotonic()
        else:
            self._ready.pop((replica.name, avatar), None)
        return ready

    async def load_on(self, replica: Replica, avatar: str) -> None:
        """Triton's model control on one replica: the avatar's ensemble and its own steps."""
        session = await self._http()
        headers = {contract.API_KEY_HEADER: self.api_key} if self.api_key else {}
        url = f"http://{replica.host}:{replica.http_port}/v2/repository/models/{avatar}/load"
        async with session.post(url, headers=headers) as answer:
            if answer.status != 200:
                raise RuntimeError(f"{replica.name}: {(await answer.text()).strip()[:300]}")
        self._ready[(replica.name, avatar)] = time.monotonic()

    # --- room: each replica's avatars within its budget -----------------------------------------
    def need(self, avatar: str) -> int:
        """What the avatar holds once loaded (the placement's numbers: ``avatar_memory``)."""
        if avatar not in self._needs:
            from synctalk_ops.placement import shared_generator_bytes, stored_need

            self._needs[avatar] = stored_need(self.store / avatar, shared_generator_bytes(self.repository))
        return self._needs[avatar]

    async def replica_load(self, replica: Replica, fresh: bool = True) -> ReplicaLoad | None:
        """The replica's open streams and pending requests, from its Prometheus text (None: it has
        no metrics port, or did not answer); not ``fresh``: as read within METRICS_TTL_S."""
        if replica.metrics_port is None:
            return None
        read_at, load = self._metrics.get(replica.name, (-1e9, None))
        if fresh or time.monotonic() - read_at >= METRICS_TTL_S:
            session = await self._http()
            try:
                async with session.get(f"http://{replica.host}:{replica.metrics_port}/metrics") as answer:
                    load = ReplicaLoad.parse(await answer.text())
            except (OSError, asyncio.TimeoutError):
                load = None
            self._metrics[replica.name] = (time.monotonic(), load)
        return load

    async def busy_with(self, replica: Replica, avatar: str, fresh: bool = True) -> int | None:
        """How busy the replica is with the avatar: its live streams open there plus its requests
        pending there (the replica's metrics: the stream model's gauge, Triton's pending count of
        the avatar's own models); None where that cannot be read."""
        load = await self.replica_load(replica, fresh)
        return None if load is None else load.busy_with(avatar)

    async def in_use(self, replica: Replica, avatar: str) -> bool:
        """A live stream open on the avatar, or a request of its pending, on that replica (its
        metrics); what cannot be read counts as in use."""
        busy = await self.busy_with(replica, avatar)
        return busy is None or busy > 0

    async def unload_on(self, replica: Replica, avatar: str) -> None:
        """The avatar's ensembles, then its own steps, unloaded from one replica (the shared steps stay)."""
        session = await self._http()
        headers = {contract.API_KEY_HEADER: self.api_key} if self.api_key else {}
        models = contract.avatar_models(avatar, own_audio_encoder=True)
        first = [models["ensemble"], models["from_features"]]  # an ensemble before the steps it uses
        for name in first + [m for m in models.values() if m not in first]:
            url = f"http://{replica.host}:{replica.http_port}/v2/repository/models/{name}/unload"
            async with session.post(url, headers=headers) as answer:
                await answer.read()  # a step the avatar does not have: Triton's refusal, nothing to do
        self._ready.pop((replica.name, avatar), None)
        # Triton unloads asynchronously: its room is free once its processes are gone, not before
        names, deadline = set(models.values()), time.monotonic() + UNLOAD_WAIT_S
        index = f"http://{replica.host}:{replica.http_port}/v2/repository/index"
        while time.monotonic() < deadline:
            async with session.post(index, headers=headers, json={}) as answer:
                rows = await answer.json() if answer.status == 200 else []
            if not any(r.get("name") in names and r.get("state") in ("READY", "UNLOADING") for r in rows):
                return
            await asyncio.sleep(0.05)
        log.warning("the unload of %s from %s was not complete after %g s", avatar, replica.name, UNLOAD_WAIT_S)

    async def make_room(self, replica: Replica, avatar: str) -> bool:
        """Room for ``avatar`` on ``replica`` within ``replica_memory``: its least recently asked for
        avatars unloaded while they are idle (``in_use``), never one in use. False where that is
        not enough."""
        if self.replica_memory is None:
            return True
        held = self.used[replica.name]
        need = self.need(avatar)

        def room() -> int:
            return self.replica_memory - sum(self.need(a) for a in held if a != avatar)

        for candidate in sorted(held, key=held.get):  # least recently asked for first
            if room() >= need:
                break
            if candidate not in held:  # unloaded meanwhile, for another's room
                continue
            recent = time.monotonic() - held[candidate] < self.idle_s
            if candidate == avatar or candidate in self._finding or recent:
                continue
            if await self.in_use(replica, candidate):
                continue
            log.info("unloading %s from %s to make room for %s", candidate, replica.name, avatar)
            await self.unload_on(replica, candidate)
            held.pop(candidate, None)
            self.counts["evictions"] += 1
        return room() >= need

    async def _load(self, avatar: str, order: list[Replica]) -> Replica:
        """The avatar loaded on the first replica of ``order`` that takes it; where none has room
        (their avatars in use), looked at again until the budget is spent."""
        started = time.monotonic()
        try:
            while True:
                reasons = []
                for replica in order:
                    # one decision at a time a replica: each counts the room the ones before took
                    async with self._room_locks[replica.name]:
                        if not await self.make_room(replica, avatar):
                            reasons.append(f"{replica.name}: {contract.EDGE_NO_ROOM_MESSAGE}")
                            continue
                        self.used[replica.name][avatar] = time.monotonic()  # its room taken while it loads
                    try:
                        log.info("loading %s on %s", avatar, replica.name)
                        self.counts["loads"] += 1
                        await self.load_on(replica, avatar)
                        log.info("loaded %s on %s in %.2f s", avatar, replica.name, time.monotonic() - started)
                        return replica
                    except (OSError, RuntimeError, asyncio.TimeoutError) as exc:
                        self.used[replica.name].pop(avatar, None)
                        self.counts["load_failures"] += 1
                        reasons.append(str(exc) or type(exc).__name__)
                        log.warning("could not load %s on %s: %s", avatar, replica.name, reasons[-1])
                no_room = all(contract.EDGE_NO_ROOM_MESSAGE in r for r in reasons)
                if not no_room or time.monotonic() - started + ROOM_POLL_S > self.budget_s:
                    self.counts["no_room"] += no_room
                    raise RuntimeError(f"no replica could load {avatar}: " + "; ".join(reasons))
                await asyncio.sleep(ROOM_POLL_S)  # an avatar in use now may be idle in a moment
        finally:
            self.load_seconds += time.monotonic() - started

    async def _find(self, avatar: str, order: list[Replica]) -> tuple[Replica, bool]:
        """(a replica holding the avatar, whether it was loaded for this): its holders asked (a
        replica loading a model answers once the load is done), else loaded on the first in
        ``order`` that takes it."""
        try:
            held = await asyncio.gather(*(self.holds(r, avatar) for r in order))
            holder = next((r for r, h in zip(order, held) if h), None)
            if holder is not None:
                self.used[holder.name].setdefault(avatar, time.monotonic())
                return holder, False
            return await self._load(avatar, order), True
        finally:
            self._finding.pop(avatar, None)

    async def replica_for(self, avatar: str) -> Replica:
        """A replica holding the avatar, loading it where none does. Concurrent requests for an
        avatar not seen ready within READY_TTL_S share one search, hence one load. Raises
        TimeoutError past the budget (the load goes on), RuntimeError where no replica loads it."""
        order = [self.replicas[name] for name in ranking(avatar, self.replicas)]
        holders = self._seen_holding(avatar, order)
        if not holders:
            replica, loaded = await self._search(avatar, order)
            if loaded:
                self.counts["cold_waits"] += 1
                self.used[replica.name][avatar] = time.monotonic()
                return replica
            holders = self._seen_holding(avatar, order) or [replica]
        chosen = await self._least_busy(avatar, order, holders)
        if chosen is None:  # its holders seen a moment ago are gone (a replica lost): look again
            self.counts["cold_waits"] += 1
            chosen, _ = await self._search(avatar, order)
        else:
            self.counts["hits"] += 1
        self.used[chosen.name][avatar] = time.monotonic()
        return chosen

    async def _search(self, avatar: str, order: list[Replica]) -> tuple[Replica, bool]:
        """``_find``, one search (hence one load) shared by the requests that ask at once, waited
        for within the budget (TimeoutError past it; the search goes on)."""
        if avatar not in self._finding:
            self._finding[avatar] = asyncio.ensure_future(self._find(avatar, order))
        return await asyncio.wait_for(asyncio.shield(self._finding[avatar]), self.budget_s)

    def _seen_holding(self, avatar: str, order: list[Replica]) -> list[Replica]:
        """The replicas of ``order`` seen holding the avatar within READY_TTL_S, in that order."""
        now = time.monotonic()
        return [r for r in order if now - self._ready.get((r.name, avatar), -1e9) < READY_TTL_S]

    async def _least_busy(self, avatar: str, order: list[Replica], holders: list[Replica]) -> Replica | None:
        """The first of ``holders`` not busy with the avatar (fewer than ``spill_at``); where every
        one is, the least busy, and the avatar is loaded on the next replica of ``order`` beside
        the traffic (one such load at a time; it takes room only from idle avatars). A holder whose
        metrics do not answer is taken for gone (None where every one is: look for it again)."""
        if not self.spill_at or len(order) == 1:
            return holders[0]
        busy = await asyncio.gather(*(self.busy_with(r, avatar, fresh=False) for r in holders))
        for replica, b in zip(holders, busy):
            if b is None and replica.metrics_port is not None:
                self._ready.pop((replica.name, avatar), None)
        answering = [(r, b) for r, b in zip(holders, busy) if b is not None or r.metrics_port is None]
        if not answering:
            return None
        holders, busy = [r for r, _ in answering], [b for _, b in answering]
        if None in busy:  # a holder without a metrics port: nothing to go by
            return holders[0]
        calm = next((r for r, b in zip(holders, busy) if b < self.spill_at), None)
        if calm is not None:
            return calm
        rest = [r for r in order if r not in holders]
        if rest and avatar not in self._spilling:
            self._spilling[avatar] = asyncio.ensure_future(self._spill(avatar, rest))
        return min(zip(holders, busy), key=lambda pair: pair[1])[0]

    async def _spill(self, avatar: str, order: list[Replica]) -> None:
        try:
            self.counts["spills"] += 1
            replica = await self._load(avatar, order)
            log.info("%s spilled over to %s: every holder was busy with it", avatar, replica.name)
        except RuntimeError as exc:
            log.warning("%s could not spill over: %s", avatar, exc)
        finally:
            self._spilling.pop(avatar, None)

    # --- Envoy's questions --------------------------------------------------------------------
    async def decide(self, path: str, headers) -> tuple[int, str, str]:
        """(status, replica, message) for one request: 200 and the replica's name (empty: any),
        or a refusal Envoy gives the client."""
        avatar = self.model_of(path, headers)
        if not avatar or not self.is_stored(avatar):
            return 200, "", ""
        try:
            return 200, (await self.replica_for(avatar)).name, ""
        except asyncio.TimeoutError:
            self.counts["loading_refusals"] += 1
            return REFUSAL_STATUS, "", contract.MSG_AVATAR_LOADING.format(model_id=avatar, budget_s=self.budget_s)
        except RuntimeError as exc:
            return REFUSAL_STATUS, "", str(exc)

    def metrics(self) -> str:
        lines = []
        for name, help_text in METRICS.items():
            lines += [
                f"# HELP synctalk_activator_{name}_total {help_text}",
                f"# TYPE synctalk_activator_{name}_total counter",
                f"synctalk_activator_{name}_total {self.counts[name]}",
            ]
        lines += [
            "# HELP synctalk_activator_load_seconds_total time spent loading avatars",
            "# TYPE synctalk_activator_load_seconds_total counter",
            f"synctalk_activator_load_seconds_total {self.load_seconds:.3f}",
        ]
        return "\n".join(lines) + "\n"

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def app_of(activator: Activator):
    """The aiohttp application Envoy's ext_authz calls (``CHECK_PREFIX`` + the request's path)."""
    from aiohttp import web

    async def check(request: web.Request) -> web.Response:
        path = request.path[len(CHECK_PREFIX) :] if request.path.startswith(CHECK_PREFIX) else request.path
        status, replica, message = await activator.decide(path, request.headers)
        log.debug("%s %s: %d %s %s", path, request.headers.get(contract.EDGE_MODEL_HEADER), status, replica, message)
        return web.Response(status=status, text=message, headers={contract.EDGE_REPLICA_HEADER: replica})

    async def metrics(_request: web.Request) -> web.Response:
        return web.Response(text=activator.metrics(), content_type="text/plain")

    async def closing(_app) -> None:
        await activator.close()

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_route("*", CHECK_PREFIX + "/{tail:.*}", check)
    app.on_cleanup.append(closing)
    return app


ACTIVATOR_PORT = 8090


class ActivatorService(Launched):
    """``python -m synctalk_ops.activator`` in its own process, as a context manager: ready when
    its ``/metrics`` answers (what ``synctalk_ops.cluster --on-demand`` runs beside the edge)."""

    name = "the activator"
    poll_s = 0.1

    def __init__(
        self,
        repository: Path,
        replicas: list[Replica],
        port: int = ACTIVATOR_PORT,
        budget_s: float = COLD_START_BUDGET_S,
        log_path: Path | None = None,
        host: str = "127.0.0.1",
        replica_memory: int | None = None,
        idle_s: float = IDLE_S,
        spill_at: int = SPILL_AT,
    ):
        self.repository, self.replicas, self.port, self.budget_s = Path(repository), list(replicas), port, budget_s
        self.host, self.log_path = host, log_path
        self.replica_memory, self.idle_s, self.spill_at = replica_memory, idle_s, spill_at
        self.process: subprocess.Popen | None = None

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def command(self) -> list[str]:
        command = [sys.executable, "-m", "synctalk_ops.activator", "--repository", str(self.repository)]
        command += ["--host", self.host, "--port", str(self.port), "--budget-s", f"{self.budget_s:g}"]
        command += ["--idle-s", f"{self.idle_s:g}", "--spill-at", str(self.spill_at)]
        if self.replica_memory is not None:
            command += ["--replica-memory", str(self.replica_memory)]
        for r in self.replicas:
            metrics = f":{r.metrics_port}" if r.metrics_port else ""
            command += ["--replica", f"{r.name}={r.host}:{r.grpc_port}:{r.http_port}{metrics}"]
        return command

    def port_roles(self) -> dict[str, int]:
        return {"the activator's port": self.port}

    def start(self) -> ActivatorService:
        self._spawn([*END_WITH_PARENT, *self.command()])  # it ends with its launcher, however that ends
        return self

    def is_ready(self) -> bool:
        return answers(f"http://{self.host}:{self.port}/metrics")

    def stop(self) -> int | None:
        if self.process is None:
            return None
        self._terminate(15)
        self._close_log()
        return self.process.returncode


def main(argv=None) -> int:
    from aiohttp import web

    from synctalk_ops import api_key

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, required=True, help="the replicas' rendered repository")
    parser.add_argument("--store", type=Path, help="the avatar store (default: the repository's)")
    parser.add_argument(
        "--replica",
        action="append",
        required=True,
        help="[name=]host:grpc_port:http_port[:metrics_port] (repeat; the name the edge's endpoints carry)",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=ACTIVATOR_PORT)
    parser.add_argument("--budget-s", type=float, default=COLD_START_BUDGET_S, help="hold a request this long")
    parser.add_argument(
        "--replica-memory", type=int, help="bytes each replica gives its avatars (default: no budget, none unloaded)"
    )
    parser.add_argument(
        "--idle-s", type=float, default=IDLE_S, help="an avatar unloaded for room only when idle this long"
    )
    parser.add_argument(
        "--spill-at",
        type=int,
        default=SPILL_AT,
        help="a holder busy with an avatar at this many of its live streams or waiting requests: "
        "with every holder busy, it is loaded on one more replica (0: never)",
    )
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(message)s")
    replicas = [Replica.parse(text, i) for i, text in enumerate(args.replica)]
    activator = Activator(
        args.repository,
        replicas,
        args.budget_s,
        api_key.read_key(),
        args.replica_memory,
        args.idle_s,
        args.spill_at,
        args.store,
    )
    web.run_app(app_of(activator), host=args.host, port=args.port, print=None, access_log=None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

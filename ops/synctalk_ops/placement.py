"""Placement: which replicas hold which avatars, within each replica's memory budget.

An avatar is resident (its frames, face inputs, generator and backend processes: ``synctalk_ops.avatar_memory``),
so a service holds more avatars than one server by placing each on ``R`` replicas (the replication
factor) instead of every replica holding all. The algorithm is **rendezvous (highest-random-weight)
hashing with bounded load**: every (avatar, replica) pair has a fixed pseudo-random weight; an avatar
goes to the ``R`` replicas of highest weight that still have room for it. Why this one:

- **Adding or removing a replica moves few avatars.** An avatar's ranking of the replicas never
  changes; a new replica takes only the avatars that rank it among their first ``R`` (about R/N of
  them), a removed one gives only its own away. Bin packing by memory packs tighter but reshuffles
  on every change, and each move is a load (seconds, GBs) on the new holder.
- **No coordinator state beyond the result**: any process with the store computes the same
  placement; the result is kept (``placement.json`` in the avatar store, written all-or-nothing)
  so what the replicas load and the edge routes is what operators see (``synctalk-avatars list``).
- **Bounded by memory**, not by count: an avatar that does not fit its preferred replica goes to
  the next in its ranking; one that fits nowhere is refused with the numbers.

Placing is incremental (``place``): avatars already placed keep their holders while those still
exist and hold room, so ``add`` never moves other avatars; ``rebalance`` recomputes from scratch
(the ranking), which is what a change of replicas calls for.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from synctalk_build import paths
from synctalk_ops.avatar_memory import memory_needed

FILE = "placement.json"
DEFAULT_FACTOR = 2


def weight(avatar_id: str, replica: str) -> int:
    """The rendezvous weight of a pair: stable across processes and versions (not Python's hash)."""
    return int.from_bytes(hashlib.sha256(f"{replica}\0{avatar_id}".encode()).digest()[:8], "big")


def ranking(avatar_id: str, replicas) -> list[str]:
    """The replicas in the avatar's order of preference."""
    return sorted(replicas, key=lambda r: (-weight(avatar_id, r), r))


def factor_for(replicas: int, asked: int | None = None) -> int:
    """The replication factor: as asked, else 2 where there are at least 2 replicas, else 1."""
    if asked is not None:
        if asked < 1:
            raise ValueError(f"replication factor must be at least 1, got {asked}")
        return asked
    return min(DEFAULT_FACTOR, max(1, replicas))


def gb(n: int) -> str:
    return f"{n / 2**30:.2f} GB"


@dataclass
class Placement:
    """``budgets``: replica name -> bytes its avatars may hold; ``holders``: avatar id -> replica
    names; ``needs``: avatar id -> bytes it holds once loaded; ``factors``: avatar id -> its R."""

    budgets: dict[str, int]
    holders: dict[str, list[str]] = field(default_factory=dict)
    needs: dict[str, int] = field(default_factory=dict)
    factors: dict[str, int] = field(default_factory=dict)

    def used(self, replica: str) -> int:
        return sum(self.needs[a] for a, held in self.holders.items() if replica in held)

    def room(self, replica: str) -> int:
        return self.budgets[replica] - self.used(replica)

    def avatars_on(self, replica: str) -> list[str]:
        return sorted(a for a, held in self.holders.items() if replica in held)

    def place(self, avatar_id: str, need: int, factor: int | None = None) -> list[str]:
        """Place one avatar (again): its current holders that still exist keep it where they have
        room, the rest come from its ranking. Raises MemoryError, with the numbers, when fewer
        than its factor of replicas have room (nothing changed then)."""
        factor = min(factor_for(len(self.budgets), factor), len(self.budgets))
        previous = [r for r in self.holders.pop(avatar_id, []) if r in self.budgets]
        self.needs.pop(avatar_id, None)
        chosen = [r for r in previous if self.room(r) >= need][:factor]
        for replica in ranking(avatar_id, self.budgets):
            if len(chosen) == factor:
                break
            if replica not in chosen and self.room(replica) >= need:
                chosen.append(replica)
        if len(chosen) < factor:
            if previous:  # as it was
                self.holders[avatar_id] = previous
                self.needs[avatar_id] = need
            rooms = ", ".join(f"{r} {gb(self.room(r))}" for r in sorted(self.budgets))
            raise MemoryError(
                f"avatar {avatar_id!r} needs {gb(need)} on {factor} replicas, and only {len(chosen)} have room "
                f"(room left: {rooms}): add replicas, raise their budget (REPLICA_MEMORY), lower --replicas, "
                f"or add it with fewer frames (--max-frames) or a smaller --size"
            )
        self.holders[avatar_id] = sorted(chosen)
        self.needs[avatar_id] = need
        self.factors[avatar_id] = factor
        return self.holders[avatar_id]

    def remove(self, avatar_id: str) -> list[str]:
        self.needs.pop(avatar_id, None)
        self.factors.pop(avatar_id, None)
        return self.holders.pop(avatar_id, [])

    def rebalanced(self, budgets: dict[str, int] | None = None, keep: bool = False) -> Placement:
        """Every avatar placed again over ``budgets`` (default: the same replicas), the largest
        first (they are the hardest to fit): by the ranking alone, or (``keep``) keeping each
        avatar's holders where they still exist and have room (``place``)."""
        fresh = Placement(dict(budgets or self.budgets))
        for avatar_id in sorted(self.needs, key=lambda a: (-self.needs[a], a)):
            if keep:
                fresh.holders[avatar_id] = list(self.holders.get(avatar_id, []))
            fresh.place(avatar_id, self.needs[avatar_id], self.factors.get(avatar_id))
        return fresh

    def moves(self, other: Placement) -> dict[str, tuple[list[str], list[str]]]:
        """Per avatar whose holders differ in ``other``: (replicas that gain it, replicas that lose it)."""
        out = {}
        for avatar_id in sorted(set(self.holders) | set(other.holders)):
            before, after = set(self.holders.get(avatar_id, [])), set(other.holders.get(avatar_id, []))
            if before != after:
                out[avatar_id] = (sorted(after - before), sorted(before - after))
        return out

    # --- kept in the avatar store -------------------------------------------------------------
    def to_json(self) -> dict:
        return {
            "algorithm": "rendezvous hashing with bounded load (ops/synctalk_ops/placement.py)",
            "replicas": {r: {"budget_bytes": b, "used_bytes": self.used(r)} for r, b in sorted(self.budgets.items())},
            "avatars": {
                a: {"replicas": self.holders[a], "need_bytes": self.needs[a], "factor": self.factors.get(a)}
                for a in sorted(self.holders)
            },
        }

    @classmethod
    def from_json(cls, data: dict) -> Placement:
        placement = cls({r: int(v["budget_bytes"]) for r, v in data.get("replicas", {}).items()})
        for avatar_id, row in data.get("avatars", {}).items():
            placement.holders[avatar_id] = list(row["replicas"])
            placement.needs[avatar_id] = int(row["need_bytes"])
            if row.get("factor"):
                placement.factors[avatar_id] = int(row["factor"])
        return placement

    def save(self, store: Path) -> Path:
        """Written all-or-nothing (a temporary file renamed over the old one)."""
        store = Path(store)
        store.mkdir(parents=True, exist_ok=True)
        fd, staging = tempfile.mkstemp(prefix=f".{FILE}-", dir=store)
        with os.fdopen(fd, "w") as out:
            json.dump(self.to_json(), out, indent=2)
            out.write("\n")
        os.replace(staging, store / FILE)
        return store / FILE


def load(store: Path | None) -> Placement | None:
    """The store's placement, or None where the avatars are not placed (every replica holds all)."""
    if store is None or not (Path(store) / FILE).is_file():
        return None
    return Placement.from_json(json.loads((Path(store) / FILE).read_text()))


def stored_need(entry: Path, shared_generator_bytes: int) -> int:
    """What a stored avatar (``<store>/<id>/``) holds once loaded (``avatar_memory.memory_needed``)."""
    from synctalk_build.avatar_install import GENERATOR_FILE
    from synctalk_preprocessing.avatar import read_manifest

    own = Path(entry) / GENERATOR_FILE
    return memory_needed(read_manifest(entry), own.stat().st_size if own.is_file() else shared_generator_bytes)["total"]


# --- a cluster's placement: the store's avatars over its replicas ----------------------------------
def avatar_model_names(repository: Path, avatar_id: str) -> list[str]:
    from synctalk_common import contract

    names = contract.avatar_models(avatar_id, own_audio_encoder=True).values()
    return sorted(n for n in names if (Path(repository) / n / "config.pbtxt").is_file())


def models_to_load(repository: Path, avatars: list[str]) -> list[str]:
    """What a replica holding ``avatars`` loads: every model of the repository but the other
    avatars' (the shared steps stay on every replica)."""
    from synctalk_build.avatar_store import list_avatars

    others = {
        name
        for row in list_avatars(repository)
        if row["id"] not in avatars
        for name in avatar_model_names(repository, row["id"])
    }
    return sorted(p.parent.name for p in Path(repository).glob("*/config.pbtxt") if p.parent.name not in others)


def shared_generator_bytes(repository: Path) -> int:
    from synctalk_common import contract

    model = paths.onnx_file(repository, contract.GENERATOR_MODEL)
    return model.stat().st_size if model.is_file() else 0


def replica_overhead(repository: Path) -> tuple[int, int]:
    """What each replica holds before its avatars: its shared steps idle and its reserve for the
    requests in flight (``synctalk_ops.avatar_memory``)."""
    from synctalk_ops.avatar_memory import in_flight_reserve, shared_steps_bytes

    return shared_steps_bytes(shared_generator_bytes(repository)), in_flight_reserve()


def default_budget(repository: Path, replicas: int, available: int | None = None) -> int:
    """The memory each of ``replicas`` replicas on this host gives its avatars: what the host has
    available, less each replica's ``replica_overhead``, shared out."""
    import psutil

    available = psutil.virtual_memory().available if available is None else available
    return max(0, (available - replicas * sum(replica_overhead(repository))) // replicas)


def check_budget(repository: Path, replicas: int, budget: int, available: int | None = None) -> None:
    """Refuse a budget that this host cannot give: ``replicas`` replicas each holding ``budget``
    of avatars, their shared steps and their reserve for requests in flight, more than the host
    has available (they would be killed for memory while loading). MemoryError with the numbers."""
    import psutil

    available = psutil.virtual_memory().available if available is None else available
    shared, reserve = replica_overhead(repository)
    need = replicas * (budget + shared + reserve)
    if need > available:
        most = default_budget(repository, replicas, available)
        raise MemoryError(
            f"a replica memory of {gb(budget)} does not fit this host: {replicas} x ({gb(budget)} for avatars + "
            f"{gb(shared)} of shared steps + {gb(reserve)} for requests in flight) = {gb(need)}, and this host has "
            f"{gb(available)} available; give at most {gb(most)} a replica (REPLICA_MEMORY, --replica-memory; the "
            "default), or run fewer replicas here"
        )


def describe_default_budget(repository: Path, replicas: int) -> str:
    """How ``default_budget`` came to what it is on this host, for an error that needs it."""
    import psutil

    available = psutil.virtual_memory().available
    shared, reserve = replica_overhead(repository)
    return (
        f"the default budget is {gb(default_budget(repository, replicas, available))} a replica: this host's "
        f"{gb(available)} available less {replicas} x ({gb(shared)} of shared steps + {gb(reserve)} for requests "
        f"in flight), shared out; set REPLICA_MEMORY (e.g. REPLICA_MEMORY=2G), or run fewer replicas here"
    )


def plan(
    repository: Path,
    replicas: list[str],
    budget: int,
    factor: int | None = None,
    save: bool = True,
    store: Path | None = None,
) -> Placement:
    """The placement of the repository's avatar store over ``replicas`` (names), each giving its
    avatars ``budget`` bytes, saved in the store. Over the same replicas and budgets the stored
    placement stands (avatars added to the store since are placed, removed ones dropped); over
    others the ranking places every avatar afresh (a rebalance: only what the change calls for
    moves). ``factor``: every avatar's replication factor (default: each its own, as added).
    ``store``: the avatar store (default: the repository's)."""
    from synctalk_build.avatar_store import stored_avatars
    from synctalk_build.repository_manifest import avatar_store
    from synctalk_preprocessing.avatar import read_manifest

    store = Path(store) if store else avatar_store(repository)
    shared = shared_generator_bytes(repository)
    manifests = {e: read_manifest(e) for e in stored_avatars(store)}
    needs = {m["id"]: stored_need(e, shared) for e, m in manifests.items()}
    factors = {m["id"]: m.get("source", {}).get("replicas") for m in manifests.values()}  # add --replicas
    if factor is not None:
        factors = dict.fromkeys(factors, factor)
    budgets = {name: int(budget) for name in replicas}
    stored = load(store)
    kept = stored.holders if stored is not None and stored.budgets == budgets else {}
    asked = Placement(budgets, {a: list(kept[a]) for a in needs if a in kept}, needs, factors)
    placement = asked.rebalanced(keep=True)
    if store is not None and save:
        placement.save(store)
    return placement


def share_flags(repository: Path, store: Path | None, replica: str, on_demand: bool = False) -> list[str]:
    """tritonserver's ``--load-model`` flags for ``replica`` of a placed cluster: the shared steps
    and the avatars placed on it (none where it is not in the placement yet: a pod added since
    the last rebalance). Empty where the store has no placement: every replica loads every model.
    ``on_demand``: the shared steps alone (the activator loads each avatar where it is first asked
    for: ``synctalk_ops.activator``)."""
    placed = None if on_demand else load(store)
    if placed is None and not on_demand:
        return []
    avatars = [] if on_demand else placed.avatars_on(replica)
    return [f"--load-model={name}" for name in models_to_load(repository, avatars)]


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="a replica's share of a placed cluster (deploy/entrypoint.sh)")
    parser.add_argument("--repository", type=Path, required=True, help="the replica's rendered repository")
    parser.add_argument("--store", type=Path, help="the avatar store (default: the repository's)")
    parser.add_argument("--share", metavar="REPLICA", required=True, help="print its --load-model flags, one a line")
    parser.add_argument("--on-demand", action="store_true", help="the shared steps alone: avatars load on first use")
    args = parser.parse_args(argv)
    from synctalk_build.repository_manifest import avatar_store

    store = args.store or avatar_store(args.repository)
    for flag in share_flags(args.repository, store, args.share, args.on_demand):
        print(flag)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Placement (ops/synctalk_ops/placement.py): rendezvous hashing with bounded load, within memory budgets."""

from __future__ import annotations

import json

import pytest

from synctalk_ops.placement import FILE, Placement, factor_for, load, ranking, weight

GB = 2**30
WEIGHT = 17867378989180398064  # sha256("replica-0\0anna")[:8], big-endian


def replicas(n: int, budget: int = 1000 * GB) -> dict[str, int]:
    return {f"replica-{i}": budget for i in range(n)}


def test_the_weights_are_stable_and_the_ranking_is_an_order_of_every_replica():
    assert weight("anna", "replica-0") == weight("anna", "replica-0")
    assert weight("anna", "replica-0") == WEIGHT, "the same on every host and Python version"
    order = ranking("anna", replicas(5))
    assert sorted(order) == sorted(replicas(5)) and order == ranking("anna", list(reversed(list(replicas(5)))))


def test_the_factor_defaults_to_two_where_there_are_two_replicas():
    assert factor_for(1) == 1 and factor_for(2) == 2 and factor_for(8) == 2 and factor_for(8, 3) == 3
    with pytest.raises(ValueError, match="at least 1"):
        factor_for(3, 0)


def test_each_avatar_goes_to_its_factor_of_distinct_replicas_within_their_budgets():
    placement = Placement(replicas(4, budget=10 * GB))
    for i in range(15):
        held = placement.place(f"a{i}", GB)
        assert len(held) == len(set(held)) == 2
    for replica in placement.budgets:
        assert placement.used(replica) <= 10 * GB
    assert sum(len(placement.avatars_on(r)) for r in placement.budgets) == 30


def test_an_avatar_that_fits_nowhere_is_refused_with_the_numbers_and_nothing_changes():
    placement = Placement(replicas(2, budget=3 * GB))
    placement.place("a", 2 * GB)
    before = json.dumps(placement.to_json())
    with pytest.raises(MemoryError, match=r"avatar 'b' needs 2.00 GB on 2 replicas, and only 0 have room"):
        placement.place("b", 2 * GB)
    assert json.dumps(placement.to_json()) == before
    assert placement.place("c", GB, factor=1)  # what fits still goes


def test_a_full_first_choice_sends_the_avatar_to_its_next():
    placement = Placement(replicas(3, budget=GB))
    first = ranking("big", placement.budgets)[0]
    placement.needs["filler"], placement.holders["filler"] = GB, [first]
    assert first not in placement.place("big", GB, factor=1)


def test_adding_a_replica_moves_only_what_the_new_one_takes():
    before = Placement(replicas(3))
    for i in range(300):
        before.place(f"avatar{i}", GB)
    after = before.rebalanced(replicas(4))
    moves = after.moves(before.rebalanced())  # the same avatars placed over 3 replicas, as over 4
    assert moves, "the new replica takes its share"
    for _avatar, (lost, gained) in moves.items():  # (after gains, after loses) seen from before: swapped
        assert gained == ["replica-3"] and len(lost) == 1, "every move is onto the new replica"
    copies = sum(len(h) for h in after.holders.values())
    assert 0.18 < len(after.avatars_on("replica-3")) / copies < 0.32, "about a quarter of the copies"


def test_adding_an_avatar_never_moves_the_others():
    placement = Placement(replicas(3))
    for i in range(20):
        placement.place(f"avatar{i}", GB)
    before = {a: list(h) for a, h in placement.holders.items()}
    placement.place("newcomer", GB)
    assert {a: h for a, h in placement.holders.items() if a != "newcomer"} == before


def test_it_is_kept_in_the_store_all_or_nothing(tmp_path):
    assert load(tmp_path) is None
    placement = Placement(replicas(2, budget=5 * GB))
    placement.place("anna", GB)
    placement.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [FILE], "no staging file left"
    again = load(tmp_path)
    assert again.holders == placement.holders and again.budgets == placement.budgets
    assert json.loads((tmp_path / FILE).read_text())["replicas"]["replica-0"]["used_bytes"] == GB


def test_a_replicas_memory_is_given_as_people_write_it():
    from synctalk_ops.cluster import memory_size

    assert memory_size("8G") == 8 * GB and memory_size("512M") == 512 * 2**20 and memory_size("1.5GiB") == int(1.5 * GB)
    assert memory_size("1073741824") == GB
    with pytest.raises(Exception, match="like 8G"):
        memory_size("lots")


def test_the_default_budget_is_the_hosts_memory_less_each_replicas_shared_steps_and_reserve(tmp_path):
    from synctalk_ops.avatar_memory import SHARED_STEPS_BYTES, in_flight_reserve
    from synctalk_ops.placement import default_budget

    per_replica = SHARED_STEPS_BYTES["tiny"] + in_flight_reserve()
    assert default_budget(tmp_path, 2, available=2 * per_replica + 4 * GB) == 2 * GB
    assert default_budget(tmp_path, 3, available=per_replica) == 0, "never below nothing"


def test_a_refusal_under_the_default_budget_says_how_it_was_reckoned(tmp_path):
    from synctalk_ops.avatar_memory import SHARED_STEPS_BYTES
    from synctalk_ops.placement import describe_default_budget

    said = describe_default_budget(tmp_path, 2)
    shared = f"2 x ({SHARED_STEPS_BYTES['tiny'] / 2**30:.2f} GB of shared steps"
    assert shared in said and "REPLICA_MEMORY" in said, said


def test_the_rebalance_job_places_over_the_statefulsets_pods_by_their_stable_names():
    from synctalk_ops import edge, kubernetes_placement

    pods = kubernetes_placement.pods(3)["replicas"]
    assert [(p["name"], p["host"]) for p in pods] == [
        (f"synctalk-triton-{i}", f"synctalk-triton-{i}.synctalk-triton") for i in range(3)
    ]
    assert {(p["grpc_port"], p["http_port"]) for p in pods} == {(8001, 8000)}
    with pytest.raises(ValueError, match="maxReplicas"):
        kubernetes_placement.pods(edge.kubernetes_max_replicas() + 1)


def test_a_budget_beyond_this_host_is_refused_with_the_numbers(tmp_path, monkeypatch):
    from synctalk_ops import placement

    monkeypatch.setattr(placement, "replica_overhead", lambda repository: (3 * GB, 2 * GB))
    placement.check_budget(tmp_path, 3, 1 * GB, available=18 * GB)  # 3 x (1 + 3 + 2) = 18: fits
    with pytest.raises(MemoryError) as refused:
        placement.check_budget(tmp_path, 3, 4 * GB, available=19 * GB)  # 3 x (4 + 3 + 2) = 27 GB
    text = str(refused.value)
    assert "3 x (4.00 GB for avatars + 3.00 GB of shared steps + 2.00 GB for requests in flight) = 27.00 GB" in text
    assert "this host has 19.00 GB available; give at most 1.33 GB a replica" in text


def test_a_pod_on_demand_loads_the_shared_steps_alone_and_a_placed_one_its_share(tmp_path):
    """deploy/entrypoint.sh's --load-model flags (python -m synctalk_ops.placement --share)."""
    from synctalk_common import contract
    from synctalk_ops.placement import main

    repository, store = tmp_path / "repository", tmp_path / "store"
    for name in ("demo", "input_validator", *contract.avatar_models("anna").values()):
        (repository / name).mkdir(parents=True)
        (repository / name / "config.pbtxt").write_text(f'name: "{name}"\n')
    (repository / "anna_background" / "1").mkdir()
    (repository / "anna_background" / "1" / "avatar.json").write_text(json.dumps({"id": "anna"}))
    placed = Placement({"pod-0": 10})
    placed.place("anna", 1, 1)
    placed.save(store)

    def flags(*extra) -> list[str]:
        import contextlib
        import io

        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            main(["--repository", str(repository), "--store", str(store), "--share", "pod-0", *extra])
        return out.getvalue().split()

    assert "--load-model=anna" in flags() and "--load-model=demo" in flags()
    assert flags("--on-demand") == ["--load-model=demo", "--load-model=input_validator"]


def test_a_replica_is_given_with_the_name_the_edge_knows_it_by():
    from synctalk_ops.edge import Replica

    named = Replica.parse("synctalk-triton-1=synctalk-triton-1.synctalk-triton:8001:8000:8002")
    assert (named.name, named.host, named.grpc_port, named.http_port, named.metrics_port) == (
        "synctalk-triton-1",
        "synctalk-triton-1.synctalk-triton",
        8001,
        8000,
        8002,
    )
    assert Replica.parse("127.0.0.1:8101:8100", 3).name == "replica-3"


def test_a_replicas_load_is_read_once_from_its_metrics_by_avatar_and_model():
    """The activator's view of a replica (``ReplicaLoad``): streams by avatar, pending requests by
    model, parsed once per read; how busy a replica is with an avatar, from them."""
    from synctalk_common import contract
    from synctalk_ops.activator import ReplicaLoad

    text = "\n".join(
        [
            "# HELP nv_inference_pending_request_count Instantaneous number of pending requests",
            'nv_inference_pending_request_count{model="anna",version="1"} 2',
            'nv_inference_pending_request_count{model="anna_synctalk",version="1"} 1',
            'nv_inference_pending_request_count{model="bob",version="1"} 5',
            'nv_inference_pending_request_count{model="generator",version="1"} 3',
            f'{contract.OPEN_STREAMS_METRIC}{{avatar="anna"}} 1',
            f'{contract.OPEN_STREAMS_METRIC}{{avatar="annabel"}} 4',
            'nv_inference_request_success{model="anna",version="1"} 90',
        ]
    )
    load = ReplicaLoad.parse(text)
    assert load.streams == {"anna": 1, "annabel": 4}
    assert load.pending == {"anna": 2, "anna_synctalk": 1, "bob": 5, "generator": 3}
    assert load.busy_with("anna") == 4, (
        "its stream, its ensemble's and its own step's pending; shared steps are no one's"
    )
    assert load.busy_with("annabel") == 4 and load.busy_with("carl") == 0

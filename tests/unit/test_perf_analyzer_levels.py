"""benchmarks.perf_analyzer keeps every concurrency level of a sweep, whatever perf_analyzer's sweep
does with a level that will not stabilize. The real perf_analyzer runs in tests/e2e; here its
sweep rule (``InferenceProfiler::Profile``, linear search) is replayed so each case is certain."""

import pytest

from benchmarks.perf_analyzer import STABILITY_FAILURE, measure_levels


def sweep(unstable, relaxed_unstable=()):
    """perf_analyzer over a group: levels in order; the first unstable one ends the sweep
    unreported; exit 1 with the stability error only when that was the first level."""
    calls = []

    def run(group, relaxed):
        calls.append((tuple(group), relaxed))
        bad = set(relaxed_unstable) if relaxed else set(unstable)
        rows = []
        for level in group:
            if level in bad:
                output = f"{STABILITY_FAILURE} within 3 measurement windows for concurrency {level}."
                return (1 if not rows else 0), output, rows
            rows.append({"concurrency": level, "frames_per_s": 10.0 * level})
        return 0, "", rows

    return run, calls


def levels(rows):
    return [(r["concurrency"], r["stable"]) for r in rows]


def test_a_level_dropped_from_the_sweep_is_measured_again_on_its_own():
    run, calls = sweep(unstable={2})
    assert levels(measure_levels([1, 2], run)) == [(1, True), (2, False)]
    assert calls == [((1, 2), False), ((2,), False), ((2,), True)]


def test_a_sweep_unstable_from_its_first_level_measures_every_level():
    run, _ = sweep(unstable={1, 2, 3})
    assert levels(measure_levels([1, 2, 3], run)) == [(1, False), (2, False), (3, False)]


def test_a_stable_sweep_is_one_call():
    run, calls = sweep(unstable=set())
    assert levels(measure_levels([1, 2, 3], run)) == [(1, True), (2, True), (3, True)]
    assert calls == [((1, 2, 3), False)]


def test_an_irregular_sweep_runs_one_level_per_call():
    run, calls = sweep(unstable={4})
    assert levels(measure_levels([1, 2, 4], run)) == [(1, True), (2, True), (4, False)]
    assert [group for group, _ in calls] == [(1,), (2,), (4,), (4,)]


def test_a_level_that_yields_nothing_even_relaxed_is_an_error_not_a_missing_row():
    run, _ = sweep(unstable={2}, relaxed_unstable={2})
    with pytest.raises(RuntimeError, match="measured nothing at concurrency 2"):
        measure_levels([1, 2], run)


def test_any_other_failure_is_an_error():
    def run(group, relaxed):
        return 99, "error: failed to connect", []

    with pytest.raises(RuntimeError, match=r"perf_analyzer failed \(99\)"):
        measure_levels([1], run)


def test_perf_analyzer_sends_the_api_key_where_it_registers_shared_memory(monkeypatch, tmp_path):
    from benchmarks import perf_analyzer
    from synctalk_common import contract

    monkeypatch.setenv(contract.API_KEY_ENV, "k" * 32)
    args = dict(url="127.0.0.1:8001", model="demo", batch_size=8, concurrency=[1], input_data=tmp_path / "in.json")

    def headers(command: list[str]) -> list[str]:
        return [command[i + 1] for i, arg in enumerate(command) if arg == "-H"]

    with_shm = perf_analyzer.command(**args, csv_path=tmp_path / "a.csv", measurement={"shared_memory": "system"})
    edge = [f"{contract.EDGE_MODEL_HEADER}:demo", f"{contract.EDGE_FRAMES_HEADER}:8"]  # counted as the SDK's
    assert headers(with_shm) == [*edge, f"{contract.GRPC_API_KEY_HEADER}:{'k' * 32}"]
    assert headers(perf_analyzer.command(**args, csv_path=tmp_path / "b.csv", measurement={})) == edge

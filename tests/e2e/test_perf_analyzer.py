"""NVIDIA's perf_analyzer, with real input data, against the live server (short measurement)."""

import json

import pytest
import yaml

from benchmarks import perf_analyzer

pytestmark = pytest.mark.e2e


def test_perf_analyzer_measures_the_ensemble_with_real_inputs(server, tmp_path):
    config = yaml.safe_load(perf_analyzer.SCENARIOS.read_text())
    config["measurement"] = {"mode": "count_windows", "request_count": 4, "stability_percentage": 200, "max_trials": 3}
    config["scenarios"] = [{"name": "smoke", "batch_size": 2, "concurrency": [1, 2]}]
    short = tmp_path / "scenarios.yaml"
    short.write_text(yaml.safe_dump(config))
    out = tmp_path / "results"
    assert perf_analyzer.main(["--url", server.grpc_url, "--config", str(short), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    rows = summary["smoke"]["results"]
    assert [r["concurrency"] for r in rows] == [1, 2]
    assert all(r["frames_per_s"] > 0 and 0 < r["p50_ms"] <= r["p99_ms"] for r in rows)


def test_perf_analyzer_load_tests_an_avatar(server, tmp_path):
    import cv2
    import numpy as np

    from synctalk_build import avatar_store
    from synctalk_client import CompositeClient

    cv2.imwrite(str(tmp_path / "0.png"), np.full((72, 128, 3), 60, np.uint8))
    avatar_store.add(server.repository, "perf", tmp_path, [32, 4, 96, 68])
    try:
        with CompositeClient(server.grpc_url) as client:
            client.load_model("perf")
        config = yaml.safe_load(perf_analyzer.SCENARIOS.read_text())
        config["measurement"] = {
            "mode": "count_windows",
            "request_count": 4,
            "stability_percentage": 200,
            "max_trials": 3,
        }
        config["scenarios"] = [{"name": "avatar", "batch_size": 4, "concurrency": [1]}]
        short = tmp_path / "scenarios.yaml"
        short.write_text(yaml.safe_dump(config))
        out = tmp_path / "results"
        assert (
            perf_analyzer.main(["--url", server.grpc_url, "--config", str(short), "--model", "perf", "--out", str(out)])
            == 0
        )
        (row,) = json.loads((out / "summary.json").read_text())["avatar"]["results"]
        assert row["frames_per_s"] > 0
        with CompositeClient(server.grpc_url) as client:
            client.unload_model("perf")
    finally:
        avatar_store.remove(server.repository, "perf")


def test_input_data_has_one_entry_per_sample_with_the_contract_shapes(tmp_path):
    data = json.loads(perf_analyzer.write_input_data(tmp_path / "in.json", samples=3).read_text())["data"]
    assert len(data) == 3
    assert data[0]["VISUAL"]["shape"] == [6, 320, 320] and data[0]["AUDIO"]["shape"] == [640]
    assert "FRAME_INDEX" not in data[0]
    avatar = json.loads(perf_analyzer.write_input_data(tmp_path / "a.json", samples=2, frame_index=True).read_text())[
        "data"
    ]
    assert [d["FRAME_INDEX"] for d in avatar] == [{"content": [0], "shape": [1]}, {"content": [1], "shape": [1]}]

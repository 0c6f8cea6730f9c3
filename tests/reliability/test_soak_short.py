"""The short soak (make soak runs the long one): concurrent clients, mixed batch sizes, a share
of bad requests, outputs identical to a single request's, memory steady after warm-up."""

import json

import pytest

from benchmarks import soak

pytestmark = pytest.mark.e2e


def test_short_soak(server, tmp_path):
    report = soak.soak(
        server.grpc_url,
        clients=3,
        duration_s=12,
        batch_sizes=[1, 4, 8],
        bad_share=0.2,
        server_pid=server.process.pid,
        warmup_s=4,
        max_growth=0.10,
    )
    (tmp_path / "soak.json").write_text(json.dumps(report, indent=2))
    assert report["valid_requests"] >= 10 and report["bad_requests"] >= 1
    assert report["valid_failed"] == 0, report["failures"]
    assert report["outputs_differing_from_reference"] == 0, report["failures"]
    assert report["bad_requests_without_a_clear_error"] == 0, report["failures"]
    assert any(k.startswith("stub:") for k in report["memory_bytes"]["after"])
    assert report["memory_growth_after_warmup"] <= 0.10, report["memory_bytes"]
    assert report["ok"]

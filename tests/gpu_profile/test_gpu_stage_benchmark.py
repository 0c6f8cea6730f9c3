"""The GPU stage benchmark's code paths, run with --device cpu (no GPU on CI)."""
import json

from tools import gpu_stage_benchmark


def test_stage_benchmark_runs_every_stage_on_the_cpu(tmp_path, models_dir):
    out = tmp_path / "stages.json"
    assert gpu_stage_benchmark.main(["--device", "cpu", "--variant", "tiny", "--batch-sizes", "1,2", "--iterations", "1", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(report["stages"]) == {
        "audio_encoder/cpu_ep", "synctalk/cpu_ep", "frame_resize/dali", "jpeg_encoder/nvimgcodec",
    }
    for rows in report["stages"].values():
        assert set(rows) == {"1", "2"} and all(r["ms_per_batch"] > 0 for r in rows.values())

"""The GPU check (``benchmarks.gpu_check``): its refusal on a host without a GPU, its plan, and
every stage's code run on the CPU at a tiny size, in a Python that cannot import what the bare
GPU image lacks (tritonclient, DALI, nvImageCodec, librosa, ...)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks import gpu_check

ROOT = Path(__file__).resolve().parents[2]
ON_GPU_HOST = Path("/proc/driver/nvidia/version").exists()
# Importable here, absent on the bare GPU image: the check must not need them.
NOT_ON_THE_GPU_IMAGE = ("tritonclient", "tritonserver", "pytriton", "nvidia", "librosa", "simplejpeg", "soundfile")
TINY = ["--device", "cpu", "--variant", "tiny", "--batch-sizes", "1,2", "--frame-sizes", "320x180,160x96"]
TINY += ["--frame-batches", "2", "--iterations", "1"]


def run_check(argv: list[str], prelude: str = "", timeout: float = 120) -> subprocess.CompletedProcess:
    """``benchmarks.gpu_check.main(argv)`` in a fresh interpreter that cannot import the modules
    the GPU image lacks; ``prelude`` runs first (with ``g`` the module)."""
    code = "\n".join(
        [
            "import sys",
            *(f"sys.modules[{name!r}] = None" for name in NOT_ON_THE_GPU_IMAGE),
            "import benchmarks.gpu_check as g",
            prelude,
            f"rc = g.main({argv!r})",
            "print('torch imported:', 'torch' in sys.modules)",
            "sys.exit(rc)",
        ]
    )
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.mark.skipif(ON_GPU_HOST, reason="this host has an NVIDIA driver")
def test_it_refuses_at_once_without_an_nvidia_gpu(tmp_path):
    out = tmp_path / "gpu.json"
    done = run_check(["--out", str(out)])
    assert done.returncode == gpu_check.NO_GPU_EXIT, done.stderr
    assert "no NVIDIA GPU" in done.stderr and "--plan" in done.stderr
    assert "torch imported: False" in done.stdout  # told before anything heavy is loaded
    assert not out.exists()


def test_the_plan_names_every_stage_and_runs_nothing(tmp_path, capsys):
    out = tmp_path / "gpu.json"
    assert gpu_check.main(["--plan", "--out", str(out)]) == 0
    plan = capsys.readouterr().out
    for stage in ("agreement", "generator", "audio encoders", "jpeg", "paste", "pipeline", "memory"):
        assert stage in plan
    assert "1, 8, 16, 32" in plan and "1920x1080" in plan and "budget 420 s" in plan
    assert not out.exists()


def test_every_stage_runs_on_the_cpu_without_the_servers_packages(tmp_path):
    out = tmp_path / "gpu.json"
    done = run_check([*TINY, "--out", str(out)])
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    stages = report["stages"]
    assert set(stages) == {"agreement", "generator", "audio_encoders", "jpeg", "paste", "pipeline", "video"}
    # the PyTorch module trees are the served ONNX graphs' networks
    assert set(stages["agreement"]) == {"generator", "synctalk2d_encoder", "wav2lip_encoder"}
    assert all(row["agree"] for row in stages["agreement"].values())
    generator = stages["generator"]
    for precision in ("fp32", "fp16"):
        assert all(generator[precision][b]["frames_per_s"] > 0 for b in ("1", "2"))
    assert generator["fp16_cuda_graph"]["1"] == {"skipped": "CUDA graphs need a GPU"}
    assert all(generator["fp16_psnr_db"][b] > 30 for b in ("1", "2"))
    assert set(stages["audio_encoders"]) == {
        f"{e}/{p}" for e in ("synctalk2d_encoder", "wav2lip_encoder") for p in ("fp32", "fp16")
    }
    for size in ("320x180", "160x96"):
        assert stages["jpeg"][size]["2"]["bytes_per_frame"] > 0
        assert stages["paste"][size]["2"]["frames_per_s"] > 0
    assert stages["pipeline"]["2"]["streams_at_25fps"] >= 0
    assert stages["video"]["encoder"] == "libx264"  # the CPU profile's; NVENC on a GPU that has one
    for size in ("320x180", "160x96"):
        assert stages["video"][size]["to_host"]["frames_per_s"] > 0
        assert stages["video"][size]["h264"]["bytes_per_frame"] > 0
    assert report["memory_plan"]["batch"] == 2 and report["stand_ins"]["jpeg"]
    assert out.with_suffix(".md").read_text().startswith("GPU check on CPU")


def test_a_stage_that_would_overrun_the_budget_is_skipped(tmp_path):
    out = tmp_path / "gpu.json"
    # every measurement after the first of each series estimates from the one before it: past the
    # budget, the rest are reported as skipped and the run still ends with its report
    prelude = "g.Budget.fits = lambda self, estimate: False"
    done = run_check([*TINY, "--out", str(out)], prelude)
    assert done.returncode == 0, done.stdout + done.stderr
    generator = json.loads(out.read_text())["stages"]["generator"]
    assert "ms" in generator["fp32"]["1"]
    assert generator["fp32"]["2"]["skipped"].startswith("would overrun the budget")


def test_a_hung_stage_is_ended_by_the_watchdog_with_the_report_written(tmp_path):
    out = tmp_path / "gpu.json"
    prelude = "import time\ng.watchdog_grace = lambda budget: 0.5\ng.generator_stage = lambda *a: time.sleep(60)"
    done = run_check([*TINY, "--budget-s", "3", "--out", str(out)], prelude, timeout=60)
    assert done.returncode == gpu_check.WATCHDOG_EXIT, done.stdout + done.stderr
    report = json.loads(out.read_text())
    assert report["stopped"] == "stopped by the watchdog during generator"
    assert all(row["agree"] for row in report["stages"]["agreement"].values())  # what it had, kept


def test_the_gpu_paste_is_the_served_paste_back():
    """The stage's batched torch paste against the CPU profile's ``paste_faces`` (OpenCV bicubic):
    the same box, the same pixels outside it, within resampling rounding inside."""
    torch = pytest.importorskip("torch")
    from synctalk_preprocessing.compositing import paste_faces

    hw = (180, 320)
    frames = gpu_check.backgrounds(torch, 2, hw, "cpu")
    faces = torch.rand(2, 3, 320, 320, generator=torch.Generator().manual_seed(0))
    box = gpu_check.face_box(hw)
    got = gpu_check.paste(torch, faces, frames, box).permute(0, 2, 3, 1).numpy()
    expected = paste_faces(faces.numpy(), frames.permute(0, 2, 3, 1).numpy(), np.array([box, box]))
    x0, y0, x1, y1 = box
    outside = np.ones(hw, bool)
    outside[y0:y1, x0:x1] = False
    assert np.array_equal(got[:, outside], expected[:, outside])
    diff = np.abs(got.astype(int) - expected.astype(int))[:, y0:y1, x0:x1]
    assert diff.mean() < 1.0 and np.percentile(diff, 99) <= 3

"""The GPU stage benchmark's code paths, run with --device cpu (no GPU on CI)."""

import json

from benchmarks import gpu_stage_benchmark
from synctalk_build.gpu_memory import tensor_bytes
from synctalk_common import contract


def test_stage_benchmark_runs_every_stage_on_the_cpu(tmp_path, models_dir):
    out = tmp_path / "stages.json"
    assert (
        gpu_stage_benchmark.main(
            ["--device", "cpu", "--variant", "tiny", "--batch-sizes", "1,2", "--iterations", "1", "--out", str(out)]
        )
        == 0
    )
    report = json.loads(out.read_text())
    assert set(report["stages"]) == {
        "audio_encoder/cpu_ep",
        "synctalk/cpu_ep",
        "frame_resize/dali",
        "frame_paste/dali",
        "jpeg_encoder/nvimgcodec",
    }
    for rows in report["stages"].values():
        assert set(rows) == {"1", "2"} and all(r["ms_per_batch"] > 0 for r in rows.values())
    assert "ensemble" not in report


def test_the_served_ensembles_data_movement_is_measured_in_the_same_command(tmp_path, server, capsys):
    """--url against a live server: frames/s of 32-frame requests and the least bytes per frame
    the ensemble must move; here, with no GPU, the PCIe counters say why they are absent."""
    out = tmp_path / "stages.json"
    argv = [
        "--device",
        "cpu",
        "--variant",
        "tiny",
        "--batch-sizes",
        "1",
        "--iterations",
        "1",
        "--out",
        str(out),
        "--url",
        server.grpc_url,
        "--requests",
        "1",
    ]
    assert gpu_stage_benchmark.main(argv) == 0
    served = json.loads(out.read_text())["ensemble"]
    assert served["model"] == contract.DEFAULT_MODEL_ID and not served["audio_only"]
    assert served["batch"] == contract.MAX_BATCH_SIZE and served["frames_per_s"] > 0
    assert 50_000 < served["jpeg_bytes_per_frame"] < 1_000_000  # 1080p at quality 95
    least = served["least_bytes_per_frame"]
    assert least["host_to_device"] == tensor_bytes(contract.VISUAL, batch=1) + tensor_bytes(
        contract.MEL_WINDOWS, batch=1
    )
    assert least["device_to_host"] == served["jpeg_bytes_per_frame"]
    assert served["pcie_bytes_per_frame"] is None and "not on this machine" in served["pcie_unavailable"]
    assert "ensemble demo:" in capsys.readouterr().out


def test_audio_only_requests_need_no_visual_on_the_bus():
    least = gpu_stage_benchmark.least_transfer_per_frame(audio_only=True, jpeg_bytes=300_000)
    assert least == {"host_to_device": float(tensor_bytes(contract.MEL_WINDOWS, batch=1)), "device_to_host": 300_000.0}


def test_the_pcie_counter_integrates_nvmls_rates_over_the_run(monkeypatch):
    """NVML itself needs a GPU; its two calls are stood in for by constant rates (KB/s, taking
    NVML's 20 ms each), and the counter must integrate them over the time it ran."""
    import sys
    import time
    import types

    rates = {"rx": 1000, "tx": 250}  # KB/s
    nvml = types.SimpleNamespace(
        NVML_PCIE_UTIL_RX_BYTES="rx",
        NVML_PCIE_UTIL_TX_BYTES="tx",
        nvmlInit=lambda: None,
        nvmlDeviceGetHandleByIndex=lambda gpu: gpu,
    )

    def throughput(handle, counter):
        time.sleep(0.02)
        return rates[counter]

    nvml.nvmlDeviceGetPcieThroughput = throughput
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    start = time.perf_counter()
    with gpu_stage_benchmark.PcieCounter(0) as counter:
        time.sleep(0.5)
    elapsed = time.perf_counter() - start
    assert 0.8 * elapsed * 1000 * 1024 < counter.rx <= 1.01 * elapsed * 1000 * 1024
    assert abs(counter.tx / counter.rx - 0.25) < 1e-9

"""Stage benchmark of the production (GPU) steps, per batch size, on one machine.

    python -m tools.gpu_stage_benchmark                      # on a GPU machine
    python -m tools.gpu_stage_benchmark --device cpu --batch-sizes 1 --iterations 2   # smoke run

Measures, for batch sizes 1/8/16/32: ONNX Runtime with the TensorRT EP (FP16, engine cache) and
with the CUDA EP on ``audio_encoder`` and ``synctalk``; the DALI ``frame_resize`` pipeline; the
nvImageCodec JPEG encode of its output (GPU frames in, no host copy). Median milliseconds per
batch and frames per second go to a JSON file. Needs, on the GPU machine: ``onnxruntime-gpu``
(with TensorRT libraries for the TensorRT EP), ``nvidia-dali-cuda120``, ``nvidia-nvimgcodec-cu12``
and the built models (``make models``). ``--device cpu`` runs the same code on the CPU
(CPU EP, DALI CPU operators, nvImageCodec's CPU backend), which is what the tests do.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import time
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np

from synctalk_client import contract
from tools import build_models, paths
from tools.bench import median_ms


def device_name(device: str) -> str:
    if device == "cpu":
        return f"CPU: {platform.processor() or platform.machine()}"
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "GPU (nvidia-smi unavailable)"


def onnx_sessions(model: Path, device: str, cache: Path) -> Dict[str, object]:
    import onnxruntime as ort

    if device == "cpu":
        return {"cpu_ep": ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])}
    cache.mkdir(parents=True, exist_ok=True)
    trt = (
        "TensorrtExecutionProvider",
        {"trt_fp16_enable": True, "trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache), "trt_max_workspace_size": 4 << 30},
    )
    sessions = {}
    available = ort.get_available_providers()
    if "TensorrtExecutionProvider" in available:
        sessions["tensorrt_ep_fp16"] = ort.InferenceSession(str(model), providers=[trt, "CUDAExecutionProvider"])
    if "CUDAExecutionProvider" in available:
        sessions["cuda_ep"] = ort.InferenceSession(str(model), providers=["CUDAExecutionProvider"])
    if not sessions:
        raise RuntimeError(f"onnxruntime has no GPU provider here (available: {available}); install onnxruntime-gpu")
    return sessions


def bench_onnx(models_dir: Path, device: str, batch_sizes: List[int], iterations: int) -> Dict[str, Dict]:
    rng = np.random.default_rng(0)
    results: Dict[str, Dict] = {}
    feeds = {
        contract.AUDIO_ENCODER_MODEL: lambda b: {contract.MEL_WINDOWS.name: rng.normal(-5, 2, (b, 1, 80, 16)).astype(np.float32)},
        contract.GENERATOR_MODEL: lambda b: {
            "input": rng.random((b, 6, 320, 320), dtype=np.float32),
            "audio": rng.normal(0, 1, (b, 32, 16, 16)).astype(np.float32),
        },
    }
    for name, make_feed in feeds.items():
        sessions = onnx_sessions(models_dir / f"{name}.onnx", device, paths.BUILD / "trt_cache" / name)
        for provider, session in sessions.items():
            for b in batch_sizes:
                feed = make_feed(b)
                ms = median_ms(lambda: session.run(None, feed), iterations)
                results.setdefault(f"{name}/{provider}", {})[str(b)] = {"ms_per_batch": ms, "frames_per_s": b * 1000 / ms}
    return results


def bench_compositor(device: str, batch_sizes: List[int], iterations: int) -> Dict[str, Dict]:
    import nvidia.dali as dali

    from synctalk_preprocessing.dali_pipeline import frame_resize_pipeline
    from synctalk_preprocessing.nvimgcodec_encoder import NvImageCodecEncoder

    encoder = NvImageCodecEncoder(cpu_only=device == "cpu")
    results: Dict[str, Dict] = {"frame_resize/dali": {}, "jpeg_encoder/nvimgcodec": {}}
    for b in batch_sizes:
        @dali.pipeline_def(batch_size=b, num_threads=4, device_id=None if device == "cpu" else 0,
                           prefetch_queue_depth=1, exec_async=False, exec_pipelined=False)
        def pipe():
            return frame_resize_pipeline(device=device)

        pipeline = pipe()
        pipeline.build()
        faces = list(np.random.default_rng(b).random((b, 3, 320, 320), dtype=np.float32))
        state = {}

        def resize():
            pipeline.feed_input(contract.GENERATED_FACE.name, faces)
            (out,) = pipeline.run()
            state["out"] = out

        ms = median_ms(resize, iterations)
        results["frame_resize/dali"][str(b)] = {"ms_per_batch": ms, "frames_per_s": b * 1000 / ms}
        out = state["out"]
        frames = [np.asarray(out[i]) for i in range(b)] if device == "cpu" else [out[i] for i in range(b)]
        ms = median_ms(lambda: encoder.encode(frames), iterations)
        results["jpeg_encoder/nvimgcodec"][str(b)] = {"ms_per_batch": ms, "frames_per_s": b * 1000 / ms}
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("gpu", "cpu"), default="gpu")
    parser.add_argument("--batch-sizes", default="1,8,16,32")
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--variant", default="full")
    parser.add_argument("--out", type=Path, default=paths.ROOT / "benchmarks" / "results" / "gpu_stages.json")
    args = parser.parse_args(argv)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    models_dir = paths.MODELS / args.variant
    if not (models_dir / build_models.GENERATOR_FILE).is_file():
        build_models.build(paths.MODELS, [args.variant])
    stages = {**bench_onnx(models_dir, args.device, batch_sizes, args.iterations), **bench_compositor(args.device, batch_sizes, args.iterations)}
    report = {
        "device": device_name(args.device),
        "date": time.strftime("%Y-%m-%d"),
        "variant": args.variant,
        "iterations": args.iterations,
        "stages": stages,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for stage, rows in stages.items():
        cells = "  ".join(f"b{b}: {r['ms_per_batch']:8.2f} ms ({r['frames_per_s']:7.0f} fps)" for b, r in rows.items())
        print(f"{stage:<36} {cells}")
    print(f"device: {report['device']}; written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

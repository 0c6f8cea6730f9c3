"""Stage benchmark of the production (GPU) steps, per batch size, and the served ensemble's data
movement, on one machine, in one command.

    python -m benchmarks.gpu_stage_benchmark                                   # stages, on a GPU machine
    python -m benchmarks.gpu_stage_benchmark --url 127.0.0.1:8001 --model demo # + the served ensemble
    python -m benchmarks.gpu_stage_benchmark --device cpu --batch-sizes 1 --iterations 2   # smoke run

Stages, for batch sizes 1/8/16/32: ONNX Runtime with the TensorRT EP (FP16, engine cache) and
with the CUDA EP on ``audio_encoder`` and ``synctalk``; the DALI ``frame_resize`` and
``frame_paste`` (1080p backgrounds) pipelines; the nvImageCodec JPEG encode of the resized frames
(GPU frames in, no host copy). Median milliseconds per batch and frames per second.

The served ensemble (``--url``; the server runs on this machine's GPU ``--gpu``): 32-frame
requests to ``--model`` (an avatar id sends audio only), frames per second, and the bytes that
crossed the PCIe bus per frame, host to device and back, integrated from NVML's PCIe throughput
counters (20 ms windows) while the requests run, against the least the ensemble must move: the
request's tensors in, the JPEGs out. Far more than that least means 1080p frames are going
through host memory between steps (a CUDA memory pool too small for the tensors in flight:
``synctalk_build.gpu_memory``).

Everything goes to a JSON file. Needs, on the GPU machine: ``onnxruntime-gpu`` (with TensorRT
libraries for the TensorRT EP), ``nvidia-dali-cuda120``, ``nvidia-nvimgcodec-cu12``,
``nvidia-ml-py`` (the PCIe counters) and the built models (``make models``). ``--device cpu`` runs
the same code on the CPU (CPU EP, DALI CPU operators, nvImageCodec's CPU backend; no PCIe
counters), which is what the tests do.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import subprocess
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks.bench import median_ms
from synctalk_build import build_models, paths
from synctalk_common import contract


def device_name(device: str) -> str:
    if device == "cpu":
        return f"CPU: {platform.processor() or platform.machine()}"
    try:
        return subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "GPU (nvidia-smi unavailable)"


def onnx_sessions(model: Path, device: str, cache: Path) -> dict[str, object]:
    import onnxruntime as ort

    if device == "cpu":
        return {"cpu_ep": ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])}
    cache.mkdir(parents=True, exist_ok=True)
    trt = (
        "TensorrtExecutionProvider",
        {
            "trt_fp16_enable": True,
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(cache),
            "trt_max_workspace_size": 4 << 30,
        },
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


def bench_onnx(models_dir: Path, device: str, batch_sizes: list[int], iterations: int) -> dict[str, dict]:
    rng = np.random.default_rng(0)
    results: dict[str, dict] = {}
    feeds = {
        contract.AUDIO_ENCODER_MODEL: lambda b: {
            contract.MEL_WINDOWS.name: rng.normal(-5, 2, (b, 1, 80, 16)).astype(np.float32)
        },
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
                results.setdefault(f"{name}/{provider}", {})[str(b)] = _row(
                    b, median_ms(lambda session=session, feed=feed: session.run(None, feed), iterations)
                )
    return results


def bench_compositor(device: str, batch_sizes: list[int], iterations: int) -> dict[str, dict]:
    from synctalk_preprocessing.dali_pipeline import frame_paste_pipeline, frame_resize_pipeline
    from synctalk_preprocessing.nvimgcodec_encoder import NvImageCodecEncoder

    encoder = NvImageCodecEncoder(cpu_only=device == "cpu")
    results: dict[str, dict] = {"frame_resize/dali": {}, "frame_paste/dali": {}, "jpeg_encoder/nvimgcodec": {}}
    for b in batch_sizes:
        pipeline = built_pipeline(frame_resize_pipeline, device, b)
        faces = list(np.random.default_rng(b).random((b, 3, 320, 320), dtype=np.float32))
        state = {}

        def resize(pipeline=pipeline, faces=faces, state=state):
            pipeline.feed_input(contract.GENERATED_FACE.name, faces)
            (out,) = pipeline.run()
            state["out"] = out

        results["frame_resize/dali"][str(b)] = _row(b, median_ms(resize, iterations))
        out = state["out"]
        frames = [np.asarray(out[i]) for i in range(b)] if device == "cpu" else [out[i] for i in range(b)]
        results["jpeg_encoder/nvimgcodec"][str(b)] = _row(
            b, median_ms(lambda frames=frames: encoder.encode(frames), iterations)
        )
        results["frame_paste/dali"][str(b)] = _row(b, bench_paste(device, b, faces, iterations, frame_paste_pipeline))
    return results


def _row(batch: int, ms: float) -> dict[str, float]:
    return {"ms_per_batch": ms, "frames_per_s": batch * 1000 / ms}


def built_pipeline(graph, device: str, batch: int):
    """``graph`` (a function of ``device``) as a built DALI pipeline, synchronous, for timing."""
    import nvidia.dali as dali

    @dali.pipeline_def(
        batch_size=batch,
        num_threads=4,
        device_id=None if device == "cpu" else 0,
        prefetch_queue_depth=1,
        exec_async=False,
        exec_pipelined=False,
    )
    def pipe():
        return graph(device=device)

    pipeline = pipe()
    pipeline.build()
    return pipeline


def bench_paste(device: str, b: int, faces: list, iterations: int, graph) -> float:
    """The paste of ``b`` generated faces into 1080p backgrounds (a 320 x 320 box)."""
    pipeline = built_pipeline(graph, device, b)
    height, width = contract.OUTPUT_HEIGHT, contract.OUTPUT_WIDTH
    backgrounds = list(np.random.default_rng(b).integers(0, 256, (b, height, width, 3), dtype=np.uint8))
    if device != "cpu":
        import cupy

        backgrounds = [cupy.asarray(frame) for frame in backgrounds]  # resident on the GPU, as an avatar's are
    boxes = list(np.array([[800, 300, 1120, 620]] * b, np.int32))
    sizes = list(np.array([[height, width]] * b, np.int32))

    def paste():
        for spec, data in (
            (contract.GENERATED_FACE, faces),
            (contract.BACKGROUND, backgrounds),
            (contract.CROP_BOX, boxes),
            (contract.FRAME_SIZE, sizes),
        ):
            pipeline.feed_input(spec.name, data)
        pipeline.run()

    return median_ms(paste, iterations)


class PcieCounter:
    """Bytes over the PCIe bus of one GPU while it runs (``rx``: host to device, ``tx``: back),
    estimated from NVML's throughput counters. Each reading is NVML's rate over its own 20 ms
    window (the call takes those 20 ms); RX and TX are read one after the other, back to back, and
    each rate is taken for the whole time since the previous pair: a sampled estimate, which a
    run of seconds averages."""

    def __init__(self, gpu: int = 0):
        import pynvml

        pynvml.nvmlInit()
        self._nvml, self._handle = pynvml, pynvml.nvmlDeviceGetHandleByIndex(gpu)
        self.rx = self.tx = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        nvml, last = self._nvml, time.perf_counter()
        while not self._stop.is_set():
            rx = nvml.nvmlDeviceGetPcieThroughput(self._handle, nvml.NVML_PCIE_UTIL_RX_BYTES)  # KB/s
            tx = nvml.nvmlDeviceGetPcieThroughput(self._handle, nvml.NVML_PCIE_UTIL_TX_BYTES)
            now = time.perf_counter()
            self.rx += rx * 1024 * (now - last)
            self.tx += tx * 1024 * (now - last)
            last = now

    def __enter__(self) -> PcieCounter:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def least_transfer_per_frame(audio_only: bool, jpeg_bytes: float) -> dict[str, float]:
    """The bytes per frame the ensemble cannot avoid moving: in, the request's tensors that a GPU
    step reads (VISUAL; the mel windows the CPU audio front end hands the GPU encoder); out, the
    JPEG. Everything else can stay on the GPU. (An avatar with SyncTalk_2D's audio front end hands
    the encoder 16 neighbouring windows a frame, 77 KB more than counted here.)"""
    from synctalk_build.gpu_memory import tensor_bytes

    into = tensor_bytes(contract.MEL_WINDOWS, batch=1) + (0 if audio_only else tensor_bytes(contract.VISUAL, batch=1))
    return {"host_to_device": float(into), "device_to_host": float(jpeg_bytes)}


def bench_ensemble(url: str, model: str, requests: int, gpu: int | None, batch: int = contract.MAX_BATCH_SIZE) -> dict:
    """``requests`` requests of ``batch`` frames to ``model`` on the server at ``url``, one after
    another: frames/s, and with ``gpu`` (the server's GPU, on this machine) the PCIe bytes per
    frame against the least the ensemble must move."""
    from synctalk_client import CompositeBatchRequest, CompositeClient, synthetic

    with CompositeClient(url, stage_timings=False) as client:
        audio_only = client.takes_audio_only(model)
        speech = synthetic.speech_like_audio(batch, seed=1)
        if audio_only:
            request = CompositeBatchRequest.audio_only(model, speech)
        else:
            crops = synthetic.face_crops(batch, seed=1)
            request = CompositeBatchRequest.from_arrays(model, crops, synthetic.masked(crops), speech)
        jpegs = client.infer_batch_composite(request).raise_for_error().composited_frames  # warm, and the JPEG size
        counter: PcieCounter | None = None
        reason = None
        if gpu is None:
            reason = "no --gpu: the server's GPU is not on this machine"
        else:
            try:
                counter = PcieCounter(gpu)
            except Exception as error:  # no NVML, no driver
                reason = f"NVML unavailable: {error}"
        start = time.perf_counter()
        with counter or contextlib.nullcontext():
            for _ in range(requests):
                client.infer_batch_composite(request).raise_for_error()
        seconds = time.perf_counter() - start
    frames, jpeg_bytes = requests * batch, sum(map(len, jpegs)) / len(jpegs)
    report = {
        "model": model,
        "audio_only": audio_only,
        "batch": batch,
        "requests": requests,
        "frames_per_s": frames / seconds,
        "jpeg_bytes_per_frame": jpeg_bytes,
        "least_bytes_per_frame": least_transfer_per_frame(audio_only, jpeg_bytes),
        "pcie_bytes_per_frame": None,
        "pcie_unavailable": reason,
    }
    if counter is not None:
        report["pcie_bytes_per_frame"] = {"host_to_device": counter.rx / frames, "device_to_host": counter.tx / frames}
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("gpu", "cpu"), default="gpu")
    parser.add_argument("--batch-sizes", default="1,8,16,32")
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--variant", default="full")
    parser.add_argument("--out", type=Path, default=paths.ROOT / "benchmarks" / "results" / "gpu_stages.json")
    parser.add_argument("--url", help="also measure the served ensemble at this gRPC address")
    parser.add_argument(
        "--model", default=contract.DEFAULT_MODEL_ID, help="model id for --url (an avatar id sends audio only)"
    )
    parser.add_argument("--requests", type=int, default=50, help="32-frame requests for --url")
    parser.add_argument(
        "--gpu",
        type=int,
        default=None,
        help="the server's GPU on this machine, for the PCIe counters (default: 0 with --device gpu)",
    )
    args = parser.parse_args(argv)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    models_dir = paths.MODELS / args.variant
    if not (models_dir / build_models.GENERATOR_FILE).is_file():
        build_models.build(paths.MODELS, [args.variant])
    stages = {
        **bench_onnx(models_dir, args.device, batch_sizes, args.iterations),
        **bench_compositor(args.device, batch_sizes, args.iterations),
    }
    report = {
        "device": device_name(args.device),
        "date": time.strftime("%Y-%m-%d"),
        "variant": args.variant,
        "iterations": args.iterations,
        "stages": stages,
    }
    if args.url:
        gpu = args.gpu if args.gpu is not None else (0 if args.device == "gpu" else None)
        report["ensemble"] = bench_ensemble(args.url, args.model, args.requests, gpu)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for stage, rows in stages.items():
        cells = "  ".join(f"b{b}: {r['ms_per_batch']:8.2f} ms ({r['frames_per_s']:7.0f} fps)" for b, r in rows.items())
        print(f"{stage:<36} {cells}")
    if args.url:
        served = report["ensemble"]
        least, pcie = served["least_bytes_per_frame"], served["pcie_bytes_per_frame"]
        moved = (
            (
                f"PCIe per frame: {pcie['host_to_device']:,.0f} B in, {pcie['device_to_host']:,.0f} B out"
                f" (least: {least['host_to_device']:,.0f} in, {least['device_to_host']:,.0f} out)"
            )
            if pcie
            else f"PCIe: {served['pcie_unavailable']}"
        )
        print(f"ensemble {served['model']}: {served['frames_per_s']:.1f} frames/s at batch {served['batch']}; {moved}")
    print(f"device: {report['device']}; written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

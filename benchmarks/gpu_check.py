"""The GPU check: one prepared command that measures what decides the GPU profile's speed, on a
bare GPU host, with the kernels that host has (PyTorch, torchvision's nvJPEG encoder).

    make gpu-check                                   # or, with nothing installed:
    python3 -m benchmarks.gpu_check --out benchmarks/results/gpu_check.json
    python3 -m benchmarks.gpu_check --plan           # what it would run, and for how long at most
    python3 -m benchmarks.gpu_check --device cpu --variant tiny ...   # the same code on the CPU

Needs only Python 3 with numpy, onnx, onnxruntime (CPU), torch (a CUDA build) and torchvision: a
host without the project installed runs it from the checkout (no tritonclient, DALI, nvImageCodec
or tritonserver). What it measures, in order, each within a time budget (``--budget-s``; a stage
that would overrun is reported as skipped, and a watchdog ends a run that hangs, writing what it
has):

1. **agreement** (CPU): SyncTalk_2D's module trees in PyTorch (``benchmarks.synctalk2d_modules``),
   filled by name from the ONNX graphs ``ops/synctalk_build/build_models.py`` writes, against ONNX Runtime on
   the CPU: the timings below are of the served graphs' networks.
2. **generator**: ``Model(6, "ave")`` at each batch size, FP32 and FP16 (channels-last), FP16
   replayed as a CUDA graph: frames/s, peak memory, the FP16 output's PSNR against FP32.
3. **audio encoders**: SyncTalk_2D's ``AudioEncoder`` (each distinct window once, as served) and
   the wav2lip-style stand-in, FP32 and FP16, at the same batch sizes.
4. **jpeg**: nvJPEG (torchvision's GPU ``encode_jpeg``, the library nvImageCodec drives) at each
   frame size, quality 95, batches 8 and 32.
5. **paste**: the paste-back into the avatar's backgrounds, box only, as the DALI step does it.
6. **pipeline**: audio windows in, frames out as JPEG bytes on the host, everything between on the
   GPU (the avatar path: resident face inputs and backgrounds), 8- and 32-frame batches: frames/s
   and the 25 fps streams that holds.
7. **memory**: peak allocated per stage, beside ``synctalk_build.gpu_memory``'s per-request tensors.
8. **video**: a live stream's H.264, one frame at a time as the stream model encodes it (PyAV's
   ``h264_nvenc`` with ``synctalk_preprocessing.video``'s settings, where PyAV is installed and the
   GPU has NVENC: H100, H200 and A100 have none), and a frame's copy from the GPU to the host (what
   PyAV's NVENC path costs over an encoder fed from GPU memory, such as PyNvVideoCodec).

Writes one JSON (``--out``) and prints a short table (also written beside the JSON as ``.md``).
On a host without an NVIDIA GPU it refuses at once ("no NVIDIA GPU", exit code 2) unless
``--device cpu`` asks for the CPU run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import shutil
import statistics
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if importlib.util.find_spec("synctalk_common") is None:  # a checkout, nothing installed
    sys.path.insert(0, str(ROOT / "common"))

from synctalk_common import contract  # noqa: E402  (the standard library alone)

NO_GPU_EXIT = 2
WATCHDOG_EXIT = 3
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "gpu_check.json"
STREAM_FPS = 25
# What stands in for what the production image runs, and how the two are expected to differ.
STAND_INS = {
    "generator": "PyTorch (cuDNN) eager and CUDA-graph kernels stand in for ONNX Runtime's TensorRT EP "
    "(FP16 engine): TensorRT fuses conv + batch-norm + ReLU and picks its own tactics, so expect it at "
    "least as fast as PyTorch's FP16 with CUDA graphs; the FP16 PSNR is the same question either way.",
    "audio_encoders": "PyTorch for the TensorRT EP, as for the generator.",
    "jpeg": "torchvision's GPU encode_jpeg drives nvJPEG, the library nvImageCodec's GPU encoder uses; "
    "nvImageCodec batches the same way, so the figures should be close (chroma subsampling: "
    "torchvision's default, 4:2:0).",
    "paste": "torch bicubic resizes (batched, NCHW) for DALI's per-sample INTERP_CUBIC resizes and "
    "slices (HWC): the same work, box only; DALI's kernels differ and run on their own streams.",
    "pipeline": "one Python process calling the steps back to back; Triton runs them as an ensemble "
    "with instances of each step overlapping, so this is a floor on throughput for one instance "
    "of each step, without Triton's own overhead (gRPC, the Python steps' shared memory).",
}


# --- the command line ------------------------------------------------------------------------------
def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def _sizes(text: str) -> list[tuple[int, int]]:
    """``1920x1080,1280x720`` -> [(1080, 1920), (720, 1280)] (height, width)."""
    out = []
    for item in text.split(","):
        width, height = item.lower().split("x")
        out.append((int(height), int(width)))
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--plan", action="store_true", help="print what would run and exit")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="cpu: the same stages on the CPU")
    p.add_argument("--variant", choices=("full", "tiny"), default="full", help="the models' widths")
    p.add_argument("--batch-sizes", type=_ints, default=[1, 8, 16, 32], help="generator and encoder batches")
    p.add_argument("--frame-sizes", type=_sizes, default=[(1080, 1920), (720, 1280)], help="WxH,... (JPEG, paste)")
    p.add_argument("--frame-batches", type=_ints, default=[8, 32], help="JPEG, paste and pipeline batches")
    p.add_argument("--iterations", type=int, default=20, help="timed runs per measurement (after 2 warm-ups)")
    p.add_argument("--budget-s", type=float, default=420.0, help="the whole run's time budget")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the JSON report (a .md table beside it)")
    return p.parse_args(argv)


def plan_text(args: argparse.Namespace) -> str:
    sizes = ", ".join(f"{w}x{h}" for h, w in args.frame_sizes)
    batches = ", ".join(map(str, args.batch_sizes))
    frames = ", ".join(map(str, args.frame_batches))
    return "\n".join(
        [
            f"gpu_check plan: device {args.device}, {args.variant} models, budget {args.budget_s:.0f} s "
            f"(watchdog at {args.budget_s + watchdog_grace(args.budget_s):.0f} s), "
            f"{args.iterations} timed runs per measurement",
            "  1. agreement: PyTorch module trees vs ONNX Runtime (CPU), batch 2: generator, SyncTalk_2D "
            "AudioEncoder, wav2lip stand-in encoder",
            f"  2. generator: batches {batches}; FP32, FP16 channels-last, FP16 CUDA graph; frames/s, peak "
            "memory, FP16 PSNR vs FP32",
            f"  3. audio encoders (synctalk2d, wav2lip): batches {batches}; FP32, FP16",
            f"  4. jpeg (nvJPEG via torchvision, quality {contract.JPEG_QUALITY}): {sizes}; batches {frames}",
            f"  5. paste into backgrounds, box only: {sizes}; batches {frames}",
            f"  6. pipeline (audio windows in, JPEG bytes out, GPU between): {sizes.split(',')[0]}; batches "
            f"{frames}; frames/s and {STREAM_FPS} fps streams",
            "  7. memory: peak allocated per measurement, beside synctalk_build.gpu_memory's per-request tensors",
            f"  8. video: a frame to the host and H.264 a frame (h264_nvenc via PyAV where there is NVENC): {sizes}",
            f"  report: {args.out} and {args.out.with_suffix('.md')}",
        ]
    )


def no_gpu_reason() -> str | None:
    """Why this host cannot run the CUDA stages, or None. Looks for the driver before importing
    torch, so a host without one is told at once."""
    if not Path("/proc/driver/nvidia/version").exists() and shutil.which("nvidia-smi") is None:
        return "no NVIDIA driver on this host"
    try:
        import torch
    except ImportError as exc:
        return f"torch cannot be imported ({exc})"
    if not torch.cuda.is_available():
        return f"torch {torch.__version__} sees no CUDA device (CUDA build: {torch.version.cuda})"
    return None


# --- time ----------------------------------------------------------------------------------------
def watchdog_grace(budget_s: float) -> float:
    return max(10.0, 0.1 * budget_s)


class Budget:
    """The run's clock: a measurement starts only if its estimate fits in what is left, less a
    reserve for writing the report."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.start = time.monotonic()
        self.reserve = min(5.0, 0.05 * seconds)

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def left(self) -> float:
        return self.seconds - self.elapsed() - self.reserve

    def fits(self, estimate_s: float) -> bool:
        return estimate_s < self.left()


class Watchdog:
    """Ends a run that overruns its budget by more than the grace (a hung kernel): writes the
    report as it stands, the measurement in progress named, and exits with WATCHDOG_EXIT."""

    def __init__(self, budget: Budget, write: Callable[[str], None]):
        self.current = "start"
        self._write = write
        deadline = budget.seconds + watchdog_grace(budget.seconds)
        self._timer = threading.Timer(deadline, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        self._write(f"stopped by the watchdog during {self.current}")
        os._exit(WATCHDOG_EXIT)

    def cancel(self) -> None:
        self._timer.cancel()


# --- measuring -----------------------------------------------------------------------------------
class Bench:
    """Runs measurements on one device within the budget and records each one's result or why it
    was skipped."""

    def __init__(self, torch, device: str, iterations: int, budget: Budget, watchdog: Watchdog | None = None):
        self.torch = torch
        self.device = device
        self.iterations = iterations
        self.budget = budget
        self.watchdog = watchdog
        self.cuda = device == "cuda"

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def reset_peak(self) -> int:
        if not self.cuda:
            return 0
        self.sync()
        self.torch.cuda.reset_peak_memory_stats()
        return self.torch.cuda.memory_allocated()

    def peak_mib(self, baseline: int) -> float | None:
        if not self.cuda:
            return None
        return round((self.torch.cuda.max_memory_allocated() - baseline) / 2**20, 1)

    def measure(self, name: str, fn: Callable[[], object], frames: int, estimate_s: float | None = None) -> dict:
        """Median milliseconds of ``fn`` over up to ``iterations`` runs after two warm-ups, or a
        skip if ``estimate_s`` (the whole measurement) does not fit in the budget."""
        if estimate_s is not None and not self.budget.fits(estimate_s):
            return skipped(
                f"would overrun the budget (about {estimate_s:.1f} s, {max(self.budget.left(), 0):.1f} s left)"
            )
        if self.budget.left() <= 0:
            return skipped("the budget is spent")
        if self.watchdog:
            self.watchdog.current = name
        baseline = self.reset_peak()
        with self.torch.inference_mode():
            for _ in range(2):
                fn()
            self.sync()
            times = []
            for _ in range(self.iterations):
                t0 = time.perf_counter()
                fn()
                self.sync()
                times.append(time.perf_counter() - t0)
                if self.budget.left() <= 0:
                    break
        ms = statistics.median(times) * 1e3
        return {
            "ms": round(ms, 3),
            "frames_per_s": round(frames / ms * 1e3, 1),
            "peak_mib": self.peak_mib(baseline),
            "runs": len(times),
        }

    def estimate(self, last: dict | None, last_frames: int, frames: int) -> float | None:
        """A measurement's duration from the previous one's (time scales with the frames)."""
        if not last or "ms" not in last:
            return None
        return last["ms"] / 1e3 * frames / max(last_frames, 1) * (self.iterations + 2)


def skipped(reason: str) -> dict:
    return {"skipped": reason}


def psnr(reference, test) -> float:
    """PSNR of ``test`` against ``reference``, both in [0, 1]."""
    mse = float(((reference.float() - test.float()) ** 2).mean())
    return math.inf if mse == 0 else round(10 * math.log10(1.0 / mse), 2)


# --- the models -----------------------------------------------------------------------------------
def build_modules(variant: str):
    """The three ONNX graphs of ``ops/synctalk_build/build_models.py`` (in memory) and the PyTorch module trees
    filled from them by name."""
    from benchmarks import synctalk2d_modules as m
    from synctalk_build import build_models as b

    v = b.VARIANTS[variant]
    graphs = {
        "generator": b.build_generator(variant),
        "synctalk2d_encoder": b.build_synctalk2d_audio_encoder(variant),
        "wav2lip_encoder": b.build_audio_encoder(variant),
    }
    features = math.prod(contract.AUDIO_FEATURE_SHAPE) // contract.AUDIO_NEIGHBOURS
    modules = {
        "generator": m.Generator(v["ch"], contract.AUDIO_FEATURE_SHAPE[0], stand_in_blend=b.STAND_IN_CROP_BLEND),
        "synctalk2d_encoder": m.SyncTalk2DAudioEncoder(b.SYNCTALK2D_ENCODER_BLOCKS, (*v["enc"][:4], features)),
        "wav2lip_encoder": m.Wav2LipEncoder(v["enc"], math.prod(contract.AUDIO_FEATURE_SHAPE)),
    }
    for name, module in modules.items():
        m.from_onnx(module, graphs[name])
    return graphs, modules


def make_inputs(torch, batch: int, seed: int = 0) -> dict:
    """Deterministic inputs of one batch (CPU, float32): the generator's, both encoders'."""
    g = torch.Generator().manual_seed(seed + batch)
    n = contract.AUDIO_NEIGHBOURS
    mask = torch.ones(batch, n)
    mask[0, : n // 4] = 0  # a clip's first frame: neighbours before the clip are zero rows
    return {
        "visual": torch.rand(batch, *contract.GENERATOR_VISUAL.dims, generator=g),
        "audio": torch.randn(batch, *contract.AUDIO_FEATURE_SHAPE, generator=g) * 0.5,
        "mel_neighbours": torch.randn(batch, *contract.MEL_NEIGHBOURS.dims, generator=g),
        "mask": mask,
        "mel": torch.randn(batch, *contract.MEL_WINDOWS.dims, generator=g),
    }


def agreement(torch, graphs: dict, modules: dict, out: dict) -> None:
    """Each module tree against ONNX Runtime on the CPU, batch 2, FP32."""
    import onnxruntime as ort

    x = make_inputs(torch, 2)
    feeds = {
        "generator": (
            {contract.GENERATOR_VISUAL.name: x["visual"], contract.GENERATOR_AUDIO.name: x["audio"]},
            (x["visual"], x["audio"]),
        ),
        "synctalk2d_encoder": (
            {contract.MEL_NEIGHBOURS.name: x["mel_neighbours"], contract.NEIGHBOUR_MASK.name: x["mask"]},
            (x["mel_neighbours"], x["mask"]),
        ),
        "wav2lip_encoder": ({contract.MEL_WINDOWS.name: x["mel"]}, (x["mel"],)),
    }
    for name, (feed, args) in feeds.items():
        session = ort.InferenceSession(graphs[name].SerializeToString(), providers=["CPUExecutionProvider"])
        expected = session.run(None, {k: v.numpy() for k, v in feed.items()})[0]
        with torch.inference_mode():
            got = modules[name].float().cpu()(*args).numpy()
        scale = max(1.0, float(abs(expected).max()))
        diff = float(abs(got - expected).max())
        out[name] = {"max_abs_diff": diff, "scale": round(scale, 3), "agree": diff / scale < 1e-4}


def reduced_dtype(torch, device: str):
    """FP16 on the GPU; bfloat16 on the CPU (its CPU kernels exist), so the CPU run takes the same path."""
    return torch.float16 if device == "cuda" else torch.bfloat16


def on_device(torch, module, device: str, dtype):
    """A copy of ``module`` on ``device`` in ``dtype``, channels-last; a generator without the
    stand-in's blend of its input crop (what a trained graph runs: the timings and the PSNR are of
    the network alone, not of a blend that would hide three quarters of its error)."""
    import copy

    copied = copy.deepcopy(module)
    if hasattr(copied, "stand_in_blend"):
        copied.stand_in_blend = None
    return copied.to(device=device, dtype=dtype, memory_format=torch.channels_last).eval()


def generator_stage(bench: Bench, module, batches: Sequence[int], rows: dict) -> None:
    torch, device = bench.torch, bench.device
    low = reduced_dtype(torch, device)
    nets = {"fp32": on_device(torch, module, device, torch.float32), "fp16": on_device(torch, module, device, low)}
    rows.update(fp32={}, fp16={}, fp16_cuda_graph={}, fp16_psnr_db={}, fp16_dtype=str(low).replace("torch.", ""))
    last: dict[str, tuple[dict | None, int]] = {k: (None, 1) for k in ("fp32", "fp16", "fp16_cuda_graph")}
    for b in batches:
        x = make_inputs(torch, b)
        for precision, net in nets.items():
            dtype = torch.float32 if precision == "fp32" else low
            visual = x["visual"].to(device, dtype).contiguous(memory_format=torch.channels_last)
            audio = x["audio"].to(device, dtype).contiguous(memory_format=torch.channels_last)
            prev, prev_b = last[precision]
            r = bench.measure(
                f"generator {precision} batch {b}", partial(net, visual, audio), b, bench.estimate(prev, prev_b, b)
            )
            rows[precision][str(b)] = r
            last[precision] = (r, b)
            if precision == "fp16" and "ms" in r:
                with torch.inference_mode():
                    ref = nets["fp32"](x["visual"].to(device), x["audio"].to(device))
                    rows["fp16_psnr_db"][str(b)] = psnr(ref, net(visual, audio))
                if bench.cuda:
                    prev, prev_b = last["fp16_cuda_graph"]
                    try:  # a capture that fails is this row's result, not the stage's
                        graphed = cuda_graph(torch, partial(net, visual, audio))
                    except RuntimeError as exc:
                        rows["fp16_cuda_graph"][str(b)] = {"error": f"capture failed: {exc}"}
                        continue
                    r = bench.measure(
                        f"generator fp16 CUDA graph batch {b}", graphed, b, bench.estimate(prev, prev_b, b)
                    )
                    rows["fp16_cuda_graph"][str(b)] = r
                    last["fp16_cuda_graph"] = (r, b)
                else:
                    rows["fp16_cuda_graph"][str(b)] = skipped("CUDA graphs need a GPU")


def cuda_graph(torch, fn: Callable[[], object]) -> Callable[[], object]:
    """``fn`` captured once (static inputs) and replayed."""
    with torch.inference_mode():
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                fn()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
    return graph.replay


def encoder_stage(bench: Bench, modules: dict, batches: Sequence[int], rows: dict) -> None:
    torch, device = bench.torch, bench.device
    low = reduced_dtype(torch, device)
    for name in ("synctalk2d_encoder", "wav2lip_encoder"):
        for precision, dtype in (("fp32", torch.float32), ("fp16", low)):
            net = on_device(torch, modules[name], device, dtype)
            key, prev = f"{name}/{precision}", (None, 1)
            rows[key] = {}
            for b in batches:
                x = make_inputs(torch, b)
                if name == "synctalk2d_encoder":
                    args = (x["mel_neighbours"].to(device, dtype), x["mask"].to(device, dtype))
                else:
                    args = (x["mel"].to(device, dtype),)
                r = bench.measure(f"{key} batch {b}", partial(net, *args), b, bench.estimate(*prev, b))
                rows[key][str(b)] = r
                prev = (r, b)


# --- frames: backgrounds, paste, JPEG ---------------------------------------------------------------
def backgrounds(torch, batch: int, hw: tuple[int, int], device: str):
    """``batch`` camera-like frames [B,3,H,W] uint8: smooth gradients with a little texture."""
    h, w = hw
    g = torch.Generator().manual_seed(h * w + batch)
    ys = torch.linspace(0, 1, h)[:, None]
    xs = torch.linspace(0, 1, w)[None, :]
    base = torch.stack(torch.broadcast_tensors(ys * 0.6 + xs * 0.2, 0.3 + 0.4 * xs * ys, 0.8 - ys * 0.5 + 0 * xs))
    frames = base[None] * 200 + torch.rand(batch, 3, h, w, generator=g) * 6 + 16
    return frames.clamp(0, 255).to(torch.uint8).to(device)


def face_box(hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """A face box (x0, y0, x1, y1): square, 40 % of the frame's height, centred."""
    h, w = hw
    side = max(8, int(0.4 * h))
    x0, y0 = (w - side) // 2, (h - side) // 3
    return x0, y0, x0 + side, y0 + side


def paste(torch, faces, frames, box):
    """SyncTalk_2D's paste-back on the box only, batched (the DALI step's work, NCHW): the box cut
    from each background and resized to 328 (bicubic), the prediction (x255, truncated, BGR -> RGB)
    in its inner 320, the crop resized back to the box (bicubic) and written into a copy of the frame."""
    import torch.nn.functional as F

    x0, y0, x1, y1 = box
    size, lo, hi = contract.FACE_CROP_SIZE, contract.FACE_CROP_BORDER, contract.FACE_CROP_BORDER + contract.FACE_SIZE
    crop = F.interpolate(frames[:, :, y0:y1, x0:x1].float(), size=(size, size), mode="bicubic", align_corners=False)
    crop = crop.round().clamp(0, 255)
    crop[:, :, lo:hi, lo:hi] = (faces.float() * 255).clamp(0, 255).floor().flip(1)  # BGR -> RGB
    box_pixels = F.interpolate(crop, size=(y1 - y0, x1 - x0), mode="bicubic", align_corners=False)
    out = frames.clone()
    out[:, :, y0:y1, x0:x1] = box_pixels.round().clamp(0, 255).to(torch.uint8)
    return out


def jpeg_encoder(torch, device: str):
    """(name, encode(frames [B,3,H,W] uint8 on ``device``) -> list of JPEG bytes); encode is None
    (and name says why) where this host has no encoder for ``device``."""
    try:
        from torchvision.io import encode_jpeg
    except Exception as exc:  # noqa: BLE001  (torchvision missing, or built for another torch)
        if device == "cuda":
            return f"none: torchvision's encode_jpeg cannot be imported ({type(exc).__name__}: {exc})", None
        import cv2

        def encode_cv2(frames):
            rgb = frames.permute(0, 2, 3, 1).contiguous().numpy()
            params = [cv2.IMWRITE_JPEG_QUALITY, contract.JPEG_QUALITY]
            return [cv2.imencode(".jpg", f[..., ::-1], params)[1].tobytes() for f in rgb]

        return "opencv (CPU; torchvision unavailable)", encode_cv2

    def encode_nvjpeg(frames):
        encoded = encode_jpeg(list(frames), quality=contract.JPEG_QUALITY)
        return [e.cpu().numpy().tobytes() for e in encoded]

    return ("nvjpeg (torchvision, GPU)" if device == "cuda" else "libjpeg (torchvision, CPU)"), encode_nvjpeg


def jpeg_stage(bench: Bench, sizes: Sequence[tuple[int, int]], batches: Sequence[int], rows: dict) -> None:
    torch, device = bench.torch, bench.device
    encoder_name, encode = jpeg_encoder(torch, device)
    rows["encoder"] = encoder_name
    for hw in sizes:
        key, prev = f"{hw[1]}x{hw[0]}", (None, 1)
        rows[key] = {}
        for b in batches:
            if encode is None:
                rows[key][str(b)] = skipped(encoder_name)
                continue
            frames = backgrounds(torch, b, hw, device)
            r = bench.measure(f"jpeg {key} batch {b}", partial(encode, frames), b, bench.estimate(*prev, b))
            if "ms" in r:
                r["bytes_per_frame"] = int(statistics.mean(len(j) for j in encode(frames)))
            rows[key][str(b)], prev = r, (r, b)


def h264_encoder(device: str):
    """(encoder name, the ``synctalk_preprocessing.video`` module) as the stream model would run it
    here, or (why not, None): NVENC on a GPU, libx264 on the CPU. The module needs numpy and PyAV
    only (the package's ``__init__`` imports nothing)."""
    if importlib.util.find_spec("synctalk_preprocessing") is None:  # a checkout, nothing installed
        sys.path.insert(0, str(ROOT / "preprocessing"))
    try:
        import av  # noqa: F401

        from synctalk_preprocessing import video
    except Exception as exc:  # noqa: BLE001  (a bare GPU host has no PyAV)
        return f"none: PyAV cannot be imported here ({type(exc).__name__}: {exc}); the server image has it", None
    name, why = video.usable_encoder("h264_nvenc" if device == "cuda" else "libx264")
    if why and device == "cuda":
        return f"none: {why}", None
    return name, video


def _encode_next(encoder, frames: list, sizes: list) -> None:
    sizes.append(len(encoder.encode(frames[len(sizes) % len(frames)])[0]))


def video_stage(bench: Bench, sizes: Sequence[tuple[int, int]], rows: dict) -> None:
    """One stream's frames: a frame's copy to the host, then H.264 at 2 Mbit/s a frame at a time
    (8 frames that move, in turn, so the encoder codes motion and not one still picture)."""
    torch, device = bench.torch, bench.device
    encoder_name, video = h264_encoder(device)
    rows["encoder"] = encoder_name
    for hw in sizes:
        key = f"{hw[1]}x{hw[0]}"
        frame = backgrounds(torch, 1, hw, device)[0].permute(1, 2, 0).contiguous()
        row = rows[key] = {"to_host": bench.measure(f"frame to host {key}", frame.cpu, 1)}
        if video is None:
            row["h264"] = skipped(encoder_name)
            continue
        moving = [torch.roll(frame, shifts=(3 * i, 5 * i), dims=(0, 1)).cpu().numpy() for i in range(8)]
        encoder, sizes_out = video.H264Encoder(STREAM_FPS, 2000, encoder_name), []
        encode_next = partial(_encode_next, encoder, moving, sizes_out)
        row["h264"] = bench.measure(f"h264 {key}", encode_next, 1)
        if "ms" in row["h264"]:
            row["h264"]["bytes_per_frame"] = int(statistics.mean(sizes_out))
            row["h264"]["streams_at_25fps"] = int(row["h264"]["frames_per_s"] // STREAM_FPS)


def paste_stage(bench: Bench, sizes: Sequence[tuple[int, int]], batches: Sequence[int], rows: dict) -> None:
    torch, device = bench.torch, bench.device
    for hw in sizes:
        key, prev = f"{hw[1]}x{hw[0]}", (None, 1)
        rows[key] = {}
        for b in batches:
            frames = backgrounds(torch, b, hw, device)
            faces = torch.rand(b, 3, contract.FACE_SIZE, contract.FACE_SIZE, generator=torch.Generator().manual_seed(b))
            work = partial(paste, torch, faces.to(device), frames, face_box(hw))
            r = bench.measure(f"paste {key} batch {b}", work, b, bench.estimate(*prev, b))
            rows[key][str(b)], prev = r, (r, b)


def pipeline_stage(bench: Bench, modules: dict, hw: tuple[int, int], batches: Sequence[int], rows: dict) -> None:
    """The avatar path for one request: its audio windows cross to the device, the SyncTalk_2D
    encoder and the generator (FP16, channels-last) run on the avatar's resident face inputs, the
    faces are pasted into its resident backgrounds, encoded to JPEG and the bytes come back."""
    torch, device = bench.torch, bench.device
    low = reduced_dtype(torch, device)
    encoder = on_device(torch, modules["synctalk2d_encoder"], device, low)
    generator = on_device(torch, modules["generator"], device, low)
    encoder_name, encode = jpeg_encoder(torch, device)
    if encode is None:
        rows.update({str(b): skipped(encoder_name) for b in batches})
        return
    box = face_box(hw)

    def run(mel, mask, visual, frames):
        features = encoder(mel.to(device, low, non_blocking=True), mask.to(device, low, non_blocking=True))
        faces = generator(visual, features.contiguous(memory_format=torch.channels_last))
        return encode(paste(torch, faces, frames, box))

    prev = (None, 1)
    for b in batches:
        x = make_inputs(torch, b)
        pin = bench.cuda
        mel = x["mel_neighbours"].pin_memory() if pin else x["mel_neighbours"]
        mask = x["mask"].pin_memory() if pin else x["mask"]
        visual = x["visual"].to(device, low).contiguous(memory_format=torch.channels_last)  # resident
        frames = backgrounds(torch, b, hw, device)  # resident

        r = bench.measure(f"pipeline batch {b}", partial(run, mel, mask, visual, frames), b, bench.estimate(*prev, b))
        if "ms" in r:
            r["streams_at_25fps"] = int(r["frames_per_s"] // STREAM_FPS)
        rows[str(b)], prev = r, (r, b)


def memory_plan(hw: tuple[int, int], batch: int) -> dict:
    """synctalk_build.gpu_memory's GPU tensors of one request (the Triton CUDA pool holds these per request
    executing), for the batch and frame size the pipeline measured."""
    from synctalk_build import gpu_memory

    tensors = {t.name: gpu_memory.tensor_bytes(t, batch, hw) for t in gpu_memory.GPU_TENSORS}
    return {"batch": batch, "frame": f"{hw[1]}x{hw[0]}", "request_gpu_mib": round(sum(tensors.values()) / 2**20, 1)}


# --- the report -----------------------------------------------------------------------------------
def _fps(row: dict | None) -> str:
    if not row:
        return "-"
    if "frames_per_s" not in row:
        return "skipped" if "skipped" in row else "error"
    return f"{row['frames_per_s']:,.0f}"


def table(report: dict) -> str:
    lines = [
        f"GPU check on {report['device']['name']} ({report['variant']} models), {report['elapsed_s']:.0f} s; "
        "frames/s (median), peak MiB",
        "",
    ]
    ok = {name: rows for name, rows in report["stages"].items() if "error" not in rows}
    gen = ok.get("generator", {})
    enc = ok.get("audio_encoders", {})
    batches = list(gen.get("fp32", {}))
    if batches:
        lines += [
            "| batch | generator FP32 | FP16 | FP16 CUDA graph | FP16 PSNR (dB) | SyncTalk_2D encoder FP16 "
            "| peak MiB (FP16) |",
            "|---|---|---|---|---|---|---|",
        ]
        for b in batches:
            fp16 = gen["fp16"].get(b, {})
            lines.append(
                f"| {b} | {_fps(gen['fp32'].get(b))} | {_fps(fp16)} | {_fps(gen['fp16_cuda_graph'].get(b))} | "
                f"{gen['fp16_psnr_db'].get(b, '-')} | {_fps(enc.get('synctalk2d_encoder/fp16', {}).get(b))} | "
                f"{fp16.get('peak_mib') or '-'} |"
            )
        lines.append("")
    jpeg, paste_rows = ok.get("jpeg", {}), ok.get("paste", {})
    sizes = [k for k in paste_rows]
    if sizes:
        lines += [
            f"| frame | batch | JPEG ({jpeg.get('encoder', '-')}) frames/s | bytes/frame | paste frames/s |",
            "|---|---|---|---|---|",
        ]
        for size in sizes:
            for b, row in paste_rows[size].items():
                j = jpeg.get(size, {}).get(b, {})
                lines.append(f"| {size} | {b} | {_fps(j)} | {j.get('bytes_per_frame', '-')} | {_fps(row)} |")
        lines.append("")
    pipe = ok.get("pipeline", {})
    if pipe:
        lines += ["| pipeline batch | ms | frames/s | 25 fps streams | peak MiB |", "|---|---|---|---|---|"]
        for b, row in pipe.items():
            if "skipped" in row:
                lines.append(f"| {b} | skipped: {row['skipped']} | | | |")
            else:
                lines.append(
                    f"| {b} | {row['ms']:.1f} | {row['frames_per_s']:,.0f} | {row['streams_at_25fps']} "
                    f"| {row['peak_mib'] or '-'} |"
                )
    video_rows = {k: v for k, v in ok.get("video", {}).items() if k != "encoder"}
    if video_rows:
        lines += [
            "",
            f"| frame | to host ms | H.264 ({ok['video']['encoder']}) ms | frames/s, one session | bytes/frame |",
            "|---|---|---|---|---|",
        ]
        for size, row in video_rows.items():
            h264 = row["h264"]
            lines.append(
                f"| {size} | {row['to_host'].get('ms', '-')} | {h264.get('ms', h264.get('skipped', '-'))} | "
                f"{_fps(h264)} | {h264.get('bytes_per_frame', '-')} |"
            )
    agree = ok.get("agreement", {})
    if agree:
        lines += [
            "",
            "agreement with the ONNX graphs (CPU): "
            + ", ".join(f"{k} {'yes' if v['agree'] else 'NO'} ({v['max_abs_diff']:.1e})" for k, v in agree.items()),
        ]
    lines += [f"ERROR in {name}: {rows['error']}" for name, rows in report["stages"].items() if "error" in rows]
    if report.get("stopped"):
        lines += ["", f"STOPPED: {report['stopped']}"]
    return "\n".join(lines) + "\n"


def device_info(torch, device: str) -> dict:
    info = {"kind": device, "torch": torch.__version__, "python": platform.python_version()}
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info |= {
            "name": props.name,
            "memory_gib": round(props.total_memory / 2**30, 1),
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
        }
    else:
        info |= {"name": f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores"}
    return info


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.plan:
        print(plan_text(args))
        return 0
    if args.device == "cuda":
        reason = no_gpu_reason()
        if reason:
            print(
                f"no NVIDIA GPU: {reason}. `--plan` prints what would run; `--device cpu` runs it on the CPU.",
                file=sys.stderr,
            )
            return NO_GPU_EXIT

    import torch

    budget = Budget(args.budget_s)
    report: dict = {"variant": args.variant, "budget_s": args.budget_s, "stand_ins": STAND_INS, "stages": {}}
    lock = threading.Lock()

    def write(stopped: str | None = None) -> None:
        with lock:
            if stopped:
                report["stopped"] = stopped
            report["elapsed_s"] = round(budget.elapsed(), 1)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
            args.out.with_suffix(".md").write_text(table(report))

    watchdog = Watchdog(budget, write)
    stages = report["stages"]

    def stage(name: str, run: Callable[..., None], *run_args) -> None:
        """One stage, filling its rows as it goes (so that the watchdog writes what it has); an
        error is recorded and the next stage runs."""
        watchdog.current = name
        rows = stages[name] = {}
        try:
            run(*run_args, rows)
        except Exception as exc:  # noqa: BLE001  (an unattended run reports every stage it can)
            traceback.print_exc()
            rows["error"] = f"{type(exc).__name__}: {exc}"

    try:
        report["device"] = device_info(torch, args.device)
        if args.device == "cuda":
            torch.backends.cudnn.benchmark = True
        bench = Bench(torch, args.device, args.iterations, budget, watchdog)
        watchdog.current = "building the models"
        graphs, modules = build_modules(args.variant)
        stage("agreement", agreement, torch, graphs, modules)
        stage("generator", generator_stage, bench, modules["generator"], args.batch_sizes)
        stage("audio_encoders", encoder_stage, bench, modules, args.batch_sizes)
        stage("jpeg", jpeg_stage, bench, args.frame_sizes, args.frame_batches)
        stage("paste", paste_stage, bench, args.frame_sizes, args.frame_batches)
        stage("pipeline", pipeline_stage, bench, modules, args.frame_sizes[0], args.frame_batches)
        report["memory_plan"] = memory_plan(args.frame_sizes[0], max(args.frame_batches))
        stage("video", video_stage, bench, args.frame_sizes)
    finally:
        watchdog.cancel()
    write()
    print(table(report), end="")
    print(f"report: {args.out}")
    failed = [name for name, rows in stages.items() if "error" in rows]
    disagree = [name for name, row in stages.get("agreement", {}).items() if name != "error" and not row["agree"]]
    return 1 if failed or disagree else 0


if __name__ == "__main__":
    raise SystemExit(main())

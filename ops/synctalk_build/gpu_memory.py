"""The GPU profile's memory plan: Triton's CUDA and pinned memory pools sized from the contract's
tensors, and the one ``tritonserver`` command every launcher runs (Dockerfile, compose, Kubernetes).

    python -m synctalk_build.gpu_memory             # the plan, with the numbers behind each pool
    python -m synctalk_build.gpu_memory --command   # the server command, one argument per line

Why the pools matter: Triton hands every ensemble step's output a buffer from its CUDA memory pool
(core ``ensemble_scheduler.cc`` ResponseAlloc -> ``MemoryManager``); when the pool is full it falls
back to pinned, then plain host memory, and a 1080p batch then goes GPU -> host -> GPU between two
GPU steps. The default pool is 64 MB and one 32-frame 1080p FRAMES_RGB alone is 199 MB, so the
default moves every frame through the host twice. The Python backend's GPU tensors (the avatars'
resident backgrounds, the JPEG encoder's input) travel through the same pool (CUDA IPC).

The CUDA pool holds every GPU tensor of every request the GPU steps can execute at once, at the
largest batch and the largest frame (an avatar's request is the superset: its background and its
face input are GPU tensors as well). The pinned pool stages what crosses the PCIe bus: the
client's VISUAL going to the generator (one per generator instance, one more queued) and the JPEG
bytes coming back (small).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from synctalk_build import paths
from synctalk_common import contract

MiB = 2**20
POOL_GRANULE = 64 * MiB  # pools are rounded up to this
# The largest frame a GPU deployment composites (the reference's output; an avatar's frames are
# at most this: synctalk_ops.avatars resizes larger videos down).
MAX_FRAME_HW = (contract.OUTPUT_HEIGHT, contract.OUTPUT_WIDTH)
# GPU tensors of one request, on the avatar path (the superset of the reference path): the
# generator's face input, its audio features and output, the background and the pasted frame.
GPU_TENSORS = (
    contract.FACE_INPUT,
    contract.AUDIO_FEATURES,
    contract.GENERATED_FACE,
    contract.BACKGROUND,
    contract.PASTED_FRAMES,
)
# The steps that execute on those tensors; a request holds its GPU tensors while one of them runs.
GPU_STEPS = (contract.GENERATOR_MODEL, contract.FRAME_PASTE_MODEL, contract.JPEG_ENCODER_MODEL)
# Python-backend shared memory (per stub, both profiles): CPU tensors between Triton and the
# Python steps. Each stub's region is allocated whole on the host's tmpfs (/dev/shm) when it starts,
# in no process's RSS or PSS until touched: at 256 MB every stub held 256 MB from its start, a
# server with the tiny models 4.57 GB idle, and each avatar's three stubs 0.77 GB whatever they
# served (a host's OOM killer took replicas while their PSS said 5 GB of 23). At 16 MB a region
# grows by 64 MB where a batch needs it, once (the shared steps' 32-frame warm-ups grow theirs at
# load): idle 2.75 GB, an avatar +0.43-0.47 GB loaded, 32- and 8-frame requests as fast within the
# noise (tiny 32 frames 1.0-1.8 s both; full 8 frames 0.60-0.68 s at 256 MB, 0.65-0.75 at 16:
# benchmarks/README.md, "Where an avatar's memory went").
PYTHON_SHM_DEFAULT_BYTES = 16 * MiB
PYTHON_SHM_GROWTH_BYTES = 64 * MiB


def tensor_bytes(
    tensor: contract.Tensor, batch: int = contract.MAX_BATCH_SIZE, frame_hw: tuple[int, int] = MAX_FRAME_HW
) -> int:
    """Bytes of ``tensor`` at ``batch``; a variable frame (-1, -1, 3) counts as ``frame_hw``."""
    dims = list(tensor.dims)
    if dims[:2] == [-1, -1]:
        dims[:2] = frame_hw
    if any(d < 0 for d in dims):
        raise ValueError(f"{tensor.name}: variable dims {tensor.dims} beyond a frame's height and width")
    return batch * math.prod(dims) * np.dtype(tensor.numpy_dtype).itemsize


def instance_counts(repository: Path = paths.MODEL_REPOSITORY, models: Sequence[str] = GPU_STEPS) -> dict[str, int]:
    """Instances per GPU of each model, from its config in ``repository``."""
    from synctalk_build.render_model import read_config

    counts = {}
    for name in models:
        config = read_config(repository / name / "config.pbtxt")
        counts[name] = sum(group.count or 1 for group in config.instance_group) or 1
    return counts


def _round_up(value: int) -> int:
    return -(-value // POOL_GRANULE) * POOL_GRANULE


def plan(repository: Path = paths.MODEL_REPOSITORY) -> dict:
    """The pools and the numbers they come from."""
    request_gpu = {t.name: tensor_bytes(t) for t in GPU_TENSORS}
    counts = instance_counts(repository)
    in_flight = sum(counts.values())
    visual = tensor_bytes(contract.VISUAL)
    staged = counts[contract.GENERATOR_MODEL] + 1
    return {
        "request_gpu_bytes": request_gpu,
        "instances": counts,
        "requests_in_flight": in_flight,
        "cuda_pool_bytes": _round_up(in_flight * sum(request_gpu.values())),
        "pinned_staged_visuals": staged,
        "pinned_pool_bytes": _round_up(staged * visual),
        "python_shm_default_bytes": PYTHON_SHM_DEFAULT_BYTES,
        "python_shm_growth_bytes": PYTHON_SHM_GROWTH_BYTES,
    }


def server_command(repository: Path = paths.MODEL_REPOSITORY, gpus: int = 1) -> list[str]:
    """The production ``tritonserver`` command: every model of the repository loaded at start
    (``--load-model=*``; a pod of a placed cluster loads its share instead: deploy/entrypoint.sh),
    loads and unloads while it runs for the API key's holders only (the entrypoint restricts model
    control: the rebalance, ``synctalk-avatars add --load``), the pools of :func:`plan` on each of
    ``gpus`` GPUs, Python-backend shared memory sized for 32-frame batches so it does not grow
    request by request."""
    sized = plan(repository)
    return [
        "tritonserver",
        "--model-repository=/models",
        "--model-control-mode=explicit",
        "--load-model=*",
        "--exit-on-error=true",
        "--strict-readiness=true",
        *(f"--cuda-memory-pool-byte-size={gpu}:{sized['cuda_pool_bytes']}" for gpu in range(gpus)),
        f"--pinned-memory-pool-byte-size={sized['pinned_pool_bytes']}",
        f"--backend-config=python,shm-default-byte-size={sized['python_shm_default_bytes']}",
        f"--backend-config=python,shm-growth-byte-size={sized['python_shm_growth_bytes']}",
    ]


def describe(sized: dict) -> str:
    mb = lambda n: f"{n / MiB:,.1f} MiB"  # noqa: E731
    per_request = sum(sized["request_gpu_bytes"].values())
    lines = [f"GPU tensors of one {contract.MAX_BATCH_SIZE}-frame request at {MAX_FRAME_HW[0]}x{MAX_FRAME_HW[1]}:"]
    lines += [f"  {name:<16} {mb(size):>12}" for name, size in sized["request_gpu_bytes"].items()]
    lines.append(f"  {'total':<16} {mb(per_request):>12}")
    counts = " + ".join(f"{n} {name}" for name, n in sized["instances"].items())
    lines.append(f"requests executing at once: {counts} = {sized['requests_in_flight']}")
    lines.append(
        f"CUDA memory pool per GPU: {sized['requests_in_flight']} x {mb(per_request)} -> {mb(sized['cuda_pool_bytes'])}"
    )
    lines.append(
        f"pinned memory pool: {sized['pinned_staged_visuals']} x VISUAL ({mb(tensor_bytes(contract.VISUAL))}) -> "
        f"{mb(sized['pinned_pool_bytes'])}"
    )
    lines.append(
        f"Python-backend shared memory per stub: {mb(sized['python_shm_default_bytes'])}, grows by "
        f"{mb(sized['python_shm_growth_bytes'])}"
    )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--command", action="store_true", help="print the server command, one argument per line")
    parser.add_argument("--gpus", type=int, default=1, help="GPUs per server (one pool each)")
    args = parser.parse_args(argv)
    print("\n".join(server_command(gpus=args.gpus)) if args.command else describe(plan()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

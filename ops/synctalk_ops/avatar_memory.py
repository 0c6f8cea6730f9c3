"""What an avatar costs in memory once loaded (CPU profile), and the check that refuses to load
one that would not fit (``synctalk_ops.avatars add --load``). docs/operations.md ("Memory") has the
measurements behind the constants."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from synctalk_build import paths
from synctalk_common import contract
from synctalk_ops.serve import SHM_GROWTH_BYTES
from synctalk_preprocessing.avatar import read_manifest

# What a loaded avatar costs the host besides its frames, face inputs, generator weights and
# generator arena, measured on the CPU profile (benchmarks.cold_start, host memory: its processes'
# private memory and their shared-memory regions on /dev/shm, which no RSS or PSS shows until
# touched): its three Python-backend processes (background, generator, JPEG encoder), at their most,
# once it has served 32-frame requests: 550-570 MB with the tiny and the full generator (16 MB
# regions, steps warmed up with 8 frames; an avatar only streamed live holds 250-300 MB less), with
# a tenth more. (With 256 MB regions each avatar held 0.77 GB more on /dev/shm, which these numbers,
# read from PSS then, missed: replicas were OOM-killed below their budgets.)
AVATAR_OVERHEAD_BYTES = 660 * 2**20
# A server's shared steps and ``demo`` idle after their batch-32 warm-ups (the shared generator's
# one-frame arena included), host memory measured: 2.76 GB with the tiny generator, 3.25 GB with
# the full-size one (49 MB of weights), with a tenth more. (4.57 and 5.06 GB with 256 MB regions.)
SHARED_STEPS_BYTES = {"tiny": int(3.0 * 2**30), "full": int(3.6 * 2**30)}
FULL_GENERATOR_WEIGHTS_BYTES = 10 * 2**20  # a shared generator this large is the full-size one
# What an avatar's generator holds between runs on the CPU profile: its onnxruntime arena, sized
# by one-frame runs (run_batch 1, every generator of the CPU profile; with or without add --arena),
# measured after a live stream: the full-size generator's process 0.70 GB instead of 0.24 GB
# without an arena; three tiny avatars 129 MB each more. (One batch of 32 frames of the full-size
# generator run whole needs 4.2 GB.)
FRAME_ARENA_BYTES = {"tiny": 160 * 2**20, "full": 512 * 2**20}
# An avatar with its own SyncTalk_2D audio encoder (add --audio-encoder): two more processes, the
# 16-neighbour encoder and its one-window form; the shared ones measured 87 and 96 MB idle.
OWN_AUDIO_ENCODERS_BYTES = 200 * 2**20


def shared_steps_bytes(shared_generator_bytes: int) -> int:
    """What a replica holds before any avatar, by the size of its shared generator."""
    full = shared_generator_bytes >= FULL_GENERATOR_WEIGHTS_BYTES
    return SHARED_STEPS_BYTES["full" if full else "tiny"]


def frame_arena_bytes(generator_bytes: int) -> int:
    """What an avatar's generator of this size holds between its runs (CPU profile)."""
    return FRAME_ARENA_BYTES["full" if generator_bytes >= FULL_GENERATOR_WEIGHTS_BYTES else "tiny"]


def in_flight_bytes(frames: int, height: int, width: int) -> int:
    """What ``frames`` frames in flight through an avatar's pipeline hold at most (frames of
    ``height`` x ``width``): per frame its face input, generated face, background and pasted frame,
    each in three places (the step that made it, the server between steps, the step that reads
    it), and the Python backend's shared-memory pools grown by one step (64 MB) in each of the
    pipeline's eight processes. The door's gate bounds ``frames`` (``admission_frames``)."""
    face_input = np.prod(contract.FACE_INPUT.dims) * contract.FLOAT32_BYTES
    generated = np.prod(contract.GENERATED_FACE.dims) * contract.FLOAT32_BYTES
    per_frame = face_input + generated + 2 * height * width * 3
    return int(3 * frames * per_frame + 8 * SHM_GROWTH_BYTES)


def memory_needed(manifest: dict, generator_bytes: int) -> dict[str, int]:
    """What loading an avatar adds to the server's resident memory (CPU profile), by part."""
    n, h, w = manifest["n_frames"], manifest["height"], manifest["width"]
    parts = {
        "frames": n * h * w * 3,
        "face_inputs": n * 3 * contract.FACE_SIZE * contract.FACE_SIZE,
        "generator": int(generator_bytes),
        "steps": AVATAR_OVERHEAD_BYTES,
        "frame_arena": frame_arena_bytes(generator_bytes),  # its generator's one-frame runs
        "audio_encoders": OWN_AUDIO_ENCODERS_BYTES if "audio_encoder" in manifest.get("source", {}) else 0,
    }
    parts["total"] = sum(parts.values())
    return parts


def in_flight_reserve() -> int:
    """What the requests in flight may hold at once on the CPU profile, the server's load
    whatever: the door's frames between the steps, at the reference pipeline's 1080p
    (docs/operations.md, "Memory budget"). A generator's run holds nothing more: every generator
    runs one frame at a time in the arena its model's memory counts (``add --arena``: a batch's,
    counted with the avatar)."""
    from synctalk_build.render_model import admission_frames

    frames = admission_frames("cpu")
    return in_flight_bytes(frames, contract.OUTPUT_HEIGHT, contract.OUTPUT_WIDTH)


def check_fits(repository: Path, avatar_id: str, available: int | None = None) -> dict[str, int]:
    """Refuse (MemoryError, with the numbers) to load an avatar whose resident memory, plus what
    the requests in flight may hold, exceeds the memory this host has available."""
    import psutil

    models = contract.avatar_models(avatar_id)
    manifest = read_manifest(Path(repository) / models["background"] / "1")
    need = memory_needed(manifest, paths.onnx_file(repository, models["generator"]).stat().st_size)
    available = psutil.virtual_memory().available if available is None else available
    reserve = in_flight_reserve()
    if need["total"] + reserve > available:
        gb = lambda b: f"{b / 2**30:.2f} GB"  # noqa: E731
        raise MemoryError(
            f"avatar {avatar_id!r} needs {gb(need['total'])} resident (frames {gb(need['frames'])}, face inputs "
            f"{gb(need['face_inputs'])}, generator {gb(need['generator'])}, its steps {gb(need['steps'])}) plus "
            f"{gb(reserve)} for the requests in flight (a generator run of 32 frames, the pipeline's frames between "
            f"steps), and this host has {gb(available)} available: "
            f"unload an avatar (synctalk-client unload ID), add it with fewer frames (--max-frames) or a smaller --size"
        )
    return need

"""Render one model of ``model_repository/`` (or of ``avatar_template/``) for a profile.

The GPU profile is the config as written, with every TensorRT model given its shape profile and
its own engine and timing caches. The CPU profile keeps the model's name and tensors and changes
what the CPU build of Triton cannot run: CPU instance groups, the ONNX Runtime and DALI backends
replaced by the Python-based backends of ``backends/`` (``CPU_BACKENDS``), the CPU parameters and
the CPU batching. ``synctalk_build.render_repository`` renders whole repositories with it and
``synctalk_build.avatar_install`` an avatar's models.
"""

from __future__ import annotations

import functools
import shutil
from pathlib import Path

import numpy as np
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from synctalk_build import paths
from synctalk_common import contract

PROFILES = ("cpu", "gpu")
# The CPU profile's Triton has only the Python backend: the models production serves with the
# ONNX Runtime and DALI backends are served by Python-based backends of backends/ (a folder with
# one model.py, selected by the config's `backend:`). By backend, or for DALI by model role.
CPU_BACKENDS = {
    "onnxruntime": "onnxruntime_cpu",
    contract.FRAME_RESIZE_MODEL: "frame_resize_cpu",
    contract.FRAME_PASTE_MODEL: "frame_paste_cpu",
}
# CPU-profile instance counts: one instance each on a 2-core machine; onnxruntime and the JPEG
# encoder use both cores inside one instance.
# nice: the CPU host's two cores are shared by every step; the steps that paste and encode an
# admitted request's frames (bursts on both cores) yield to the door (input_validator), so it
# refuses at once meanwhile (measured: refusals up to 150 ms without, 26 ms with). The generator
# keeps its priority: below that of the host's other processes (a load generator on the same
# host, measured) it lost a fifth of its throughput.
CPU_PARAMETERS: dict[str, dict[str, str]] = {
    contract.JPEG_ENCODER_MODEL: {"encoder": "cpu", "threads": "2", "nice": "5"},
    contract.FRAME_PASTE_MODEL: {"nice": "5"},
    contract.FRAME_RESIZE_MODEL: {"nice": "5"},
    contract.AUDIO_ENCODER_MODEL: {"intra_op_threads": "1"},
    contract.SYNCTALK2D_AUDIO_ENCODER_MODEL: {"intra_op_threads": "1"},
    contract.SYNCTALK2D_WINDOW_ENCODER_MODEL: {"intra_op_threads": "1"},
    # one frame a run (its arena then holds one frame's activations, 0.6 GB for the full generator
    # instead of 7.2 GB after a batch of 32; on a CPU a frame costs the same at any batch): see
    # backends/onnxruntime_cpu, and synctalk_build.avatar_install for avatars' own generators
    contract.GENERATOR_MODEL: {"intra_op_threads": "0", "run_batch": "1"},
    contract.STREAM_MODEL: {"video_encoder": "libx264"},  # H.264 streams (no NVENC without a GPU)
}
GPU_ONLY_PARAMETERS = ("FORCE_CPU_ONLY_INPUT_TENSORS",)
# The CPU profile's batcher does not wait to merge requests, and prefers 8-frame batches over
# larger merges (one request's frames are run one at a time anyway: run_batch above).
CPU_DYNAMIC_BATCHING = {
    contract.GENERATOR_MODEL: mc.ModelDynamicBatching(preferred_batch_size=[8], max_queue_delay_microseconds=0)
}


# Admission (docs/operations.md, "Admission"). The door, input_validator (every ensemble's first
# step), admits a request while the frames in flight past it leave room for its own
# (synctalk_preprocessing.admission): the pipeline holds what its generator instances serve
# within a latency target per profile, and refuses the rest at once, before any step works on it
# (gRPC UNAVAILABLE, "Exceeds maximum queue size": the client's "server busy"). Behind the door
# the queues are bounded too (Triton's queue policy): the generator's and the door's own hold as
# many requests as the gate admits, so they never refuse an admitted request, and refuse what
# gets past a gate switched off; a request that waits longer than the target, or than its own
# deadline (allow_timeout_override: the client sends it as the request's timeout), is refused then
# (REJECT).
LATENCY_TARGET_S = {"cpu": 4.0, "gpu": 1.0}
# One 8-frame request, measured end to end: how often the pipeline completes one (per generator
# instance) and how long one takes alone. CPU: the full model on this 2-core host,
# benchmarks.overload at 1x (1.6 requests/s, 1.2 s each); GPU: the seed's RTX 4090 figure, 195 ms
# for a batch of 8, the slowest GPU the image targets (benchmarks.gpu_stage_benchmark measures
# yours: raise these, or the target, for a faster one).
REQUEST_SERVICE_S = {"cpu": 0.625, "gpu": 0.195}
REQUEST_LATENCY_S = {"cpu": 1.2, "gpu": 0.195}
REQUEST_FRAMES = 8  # the requests the service time is measured for


def admitted_requests(profile: str) -> int:
    """8-frame requests in flight at once such that the last admitted is served within the latency
    target: it waits for those ahead (one service time each, shared by the instances), then takes
    its own latency. 5 on the CPU profile (one instance), 9 on the GPU profile (two)."""
    instances = generator_instances(profile)
    room = LATENCY_TARGET_S[profile] - REQUEST_LATENCY_S[profile]
    return max(instances, 1 + int(room * instances / REQUEST_SERVICE_S[profile]))


def admission_frames(profile: str) -> int:
    """The door's capacity in frames (``admission_frames`` of input_validator): 40 on the CPU
    profile, 72 on the GPU profile."""
    return admitted_requests(profile) * REQUEST_FRAMES


def queue_policy(profile: str) -> mc.ModelQueuePolicy:
    """A bounded queue behind the door: as many requests as the door admits, refused past it, or
    past the latency target."""
    return mc.ModelQueuePolicy(
        timeout_action=mc.ModelQueuePolicy.REJECT,
        default_timeout_microseconds=int(LATENCY_TARGET_S[profile] * 1e6),
        allow_timeout_override=True,
        max_queue_size=admitted_requests(profile),
    )


@functools.cache
def generator_instances(profile: str) -> int:
    """The generator's instance count in ``profile`` (CPU: one, as every CPU-profile model)."""
    if profile == "cpu":
        return 1
    config = read_config(paths.MODEL_REPOSITORY / contract.GENERATOR_MODEL / "config.pbtxt")
    return sum(g.count or 1 for g in config.instance_group) or 1


def set_queue_policy(config: mc.ModelConfig, profile: str, role: str) -> None:
    """The bounded queues: the generator's (``role`` synctalk: the shared one and every
    avatar's), and the door's own, ``input_validator``'s."""
    if role in (contract.GENERATOR_MODEL, contract.INPUT_VALIDATOR_MODEL):
        if not config.HasField("dynamic_batching"):  # the door: batching only to get a queue
            config.dynamic_batching.max_queue_delay_microseconds = 0
        config.dynamic_batching.default_queue_policy.CopyFrom(queue_policy(profile))
        # live before offline: level 1 (the default: live streams' frames) before level 2 (render)
        config.dynamic_batching.priority_levels = contract.PRIORITY_LEVELS
        config.dynamic_batching.default_priority_level = contract.PRIORITY_LIVE


def set_admission(config: mc.ModelConfig, profile: str, role: str) -> None:
    """The door's gate on ``input_validator``: ``admission_frames`` in flight at most, a lost
    ticket's lease twice the latency target."""
    if role == contract.INPUT_VALIDATOR_MODEL:
        config.parameters["admission_frames"].string_value = str(admission_frames(profile))
        config.parameters["admission_lease_s"].string_value = f"{2 * LATENCY_TARGET_S[profile]:g}"


def read_config(path: Path) -> mc.ModelConfig:
    return text_format.Parse(path.read_text(), mc.ModelConfig())


def write_config(config: mc.ModelConfig, path: Path, header: str) -> None:
    path.write_text(f"# {header}\n" + text_format.MessageToString(config, as_utf8=True))


# The CPU profile runs one generator at a time, the shared one or any avatar's: Triton's rate
# limiter (synctalk_ops.serve starts the server with --rate-limit=execution_count) gives each generator
# instance this resource, of which the server has one. Two generators at once on the host's cores
# serve no more frames a second (each runs on all the cores), and each would hold a batch's
# activations (1.2 GB for 8 frames of the full model, 4.2 GB for 32): the memory budget counts one.
CPU_GENERATOR_RESOURCE = "cpu_generator"


def _to_cpu(config: mc.ModelConfig, role: str) -> None:
    """GPU-profile config -> CPU profile. ``role``: the model's name in model_repository/ (an
    avatar's generator has the role of ``synctalk``)."""
    for group in config.instance_group:
        group.kind = mc.ModelInstanceGroup.KIND_CPU
        group.count = 1
        del group.gpus[:]
        if role == contract.GENERATOR_MODEL:
            resource = group.rate_limiter.resources.add(name=CPU_GENERATOR_RESOURCE, count=1)
            setattr(resource, "global", True)  # one for the whole server ("global" is a Python keyword)
    for key in GPU_ONLY_PARAMETERS:
        if key in config.parameters:
            del config.parameters[key]
    for key, value in CPU_PARAMETERS.get(role, {}).items():
        config.parameters[key].string_value = value
    if role in CPU_DYNAMIC_BATCHING:
        config.dynamic_batching.CopyFrom(CPU_DYNAMIC_BATCHING[role])


# Warm-up inputs that zero data cannot stand for, written to <model>/warmup/<input> (raw bytes).
WARMUP_DATA = {
    contract.CROP_BOX.name: np.array([800, 300, 1120, 620], dtype=np.int32),
    contract.FRAME_SIZE.name: np.array([contract.OUTPUT_HEIGHT, contract.OUTPUT_WIDTH], dtype=np.int32),
}


# TensorRT (GPU profile): every ONNX model that runs on the TensorRT EP gets, at render time, its
# own engine and timing cache under TRT_CACHE/<model name> (an avatar's generator too: engines of
# different weights must not share a file) and one optimization profile spanning batch 1 to
# max_batch_size, optimal at the largest preferred batch, from the config's own input dims.
# - One engine: without explicit shapes ONNX Runtime builds an engine for the shapes it has seen
#   and rebuilds it whenever a batch falls outside them (warm-up at 32, then 8, then 1: three
#   builds); with the profile, warm-up at 32, 8 and 1 runs one engine.
# - A safe first build: with explicit profiles the engine is built when the session is created,
#   and ONNX Runtime's TensorRT EP checks the cache file, builds and writes it while holding its
#   process-wide API lock; the instances Triton loads in parallel therefore build one after the
#   other, and every one after the first finds the engine written and reads it.
# - The timing cache keeps the kernel timings, so a rebuild (a changed profile, new weights of
#   the same architecture) takes a fraction of the first build.
TRT_CACHE = "/trt_cache"
TENSORRT = "tensorrt"


def tensorrt_profile(config: mc.ModelConfig, batch: int) -> str:
    """ONNX Runtime's profile syntax: ``name:BxD1xD2,...`` for every input at ``batch``."""
    return ",".join(f"{t.name}:" + "x".join(str(d) for d in (batch, *t.dims)) for t in config.input)


def set_tensorrt_settings(config: mc.ModelConfig) -> None:
    """Engine cache, timing cache and the shape profile for the TensorRT EP of ``config`` (a
    no-op for a model without it)."""
    preferred = list(config.dynamic_batching.preferred_batch_size) or [config.max_batch_size]
    for accelerator in config.optimization.execution_accelerators.gpu_execution_accelerator:
        if accelerator.name != TENSORRT:
            continue
        cache = f"{TRT_CACHE}/{config.name}"
        for key, value in {
            "trt_engine_cache_enable": "true",
            "trt_engine_cache_path": cache,
            "trt_timing_cache_enable": "true",
            "trt_timing_cache_path": cache,
            "trt_profile_min_shapes": tensorrt_profile(config, 1),
            "trt_profile_opt_shapes": tensorrt_profile(config, max(preferred)),
            "trt_profile_max_shapes": tensorrt_profile(config, config.max_batch_size),
        }.items():
            accelerator.parameters[key] = value


def _write_warmup_files(config: mc.ModelConfig, target: Path) -> None:
    for sample in config.model_warmup:
        for name, tensor in sample.inputs.items():
            if tensor.WhichOneof("input_data_type") == "input_data_file":
                (target / "warmup").mkdir(exist_ok=True)
                (target / "warmup" / tensor.input_data_file).write_bytes(WARMUP_DATA[name].tobytes())


def render_model(
    model_dir: Path,
    config: mc.ModelConfig,
    target: Path,
    profile: str,
    onnx_file: Path | None = None,
    role: str | None = None,
) -> Path:
    """Write one model of ``model_dir`` (config already renamed or edited) into ``target``, for ``profile``."""
    role = role or model_dir.name
    version = target / "1"
    version.mkdir(parents=True)
    header = (
        f"Rendered by synctalk_build.render_model (profile {profile}) from {model_dir.parent.name}/{model_dir.name}"
    )
    if config.platform == "ensemble":
        pass
    elif config.backend == "onnxruntime":
        shutil.copyfile(onnx_file, version / "model.onnx")
        if profile == "cpu":
            config.backend = CPU_BACKENDS["onnxruntime"]
            config.ClearField("optimization")  # TensorRT EP settings; model_warmup is kept
    elif config.backend == "dali":
        if profile == "cpu":
            config.backend = CPU_BACKENDS[role]
        else:
            shutil.copyfile(model_dir / "1" / "dali.py", version / "dali.py")
    elif config.backend == "python":
        shutil.copyfile(model_dir / "1" / "model.py", version / "model.py")
    elif config.backend in paths.python_based_backends():
        pass  # the code is the backend's model.py (backends/<name>/), not the model's
    else:
        raise ValueError(f"{model_dir.name}: unsupported backend {config.backend!r}")
    if profile == "cpu":
        _to_cpu(config, role)
    else:
        set_tensorrt_settings(config)
    set_queue_policy(config, profile, role)
    set_admission(config, profile, role)
    _write_warmup_files(config, target)
    write_config(config, target / "config.pbtxt", header)
    return target

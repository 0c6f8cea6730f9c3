"""Write a stored avatar's models into a rendered repository, for the repository's profile.

An avatar's models come from two places, each written once:

- ``avatar_template/``: its ensemble, one template per audio front end
  (``ensemble_reference/``, ``ensemble_synctalk2d/``; the latter ends in the avatar's steps after
  the audio, ``from_features/``), and its background step (``background/``). Installing renames
  the template's placeholder models (``avatar``, ``avatar_background``, ...
  ``avatar_audio_encoder``) to the avatar's; nothing else of the template changes, so an edit to a
  template is what every avatar of that pipeline gets.
- ``model_repository/``: its generator (the ``synctalk`` config, renamed, with the avatar's ONNX
  and no memory arena unless added with ``--arena``), its own SyncTalk_2D audio encoder where it
  has one (``audio_encoder_synctalk2d``, renamed, and its one-window form,
  ``audio_window_encoder_synctalk2d``, cut from it by ``synctalk_build.window_encoder``) and its JPEG encoder
  (``jpeg_encoder`` at the avatar's resolution and JPEG quality).

``synctalk_build.render_model`` renders each for the profile (CPU backends, TensorRT caches).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from synctalk_build import paths, repository_manifest, window_encoder
from synctalk_build.render_model import read_config, render_model
from synctalk_common import contract
from synctalk_preprocessing.avatar import BACKGROUNDS, MANIFEST, read_manifest

TEMPLATE = paths.ROOT / "avatar_template"
TEMPLATE_ID = "avatar"  # the placeholder id of the template's model names
# The template of an avatar's ensemble, by audio preset (contract.AUDIO_PRESETS).
ENSEMBLE_TEMPLATES = {preset: TEMPLATE / f"ensemble_{preset}" for preset in contract.AUDIO_PRESETS}
BACKGROUND_TEMPLATE = TEMPLATE / "background"
FROM_FEATURES_TEMPLATE = TEMPLATE / "from_features"  # SyncTalk_2D avatars' steps after the audio

GENERATOR_FILE = "generator.onnx"  # an avatar's own generator, in its store entry
AUDIO_ENCODER_FILE = "audio_encoder.onnx"  # an avatar's own SyncTalk_2D audio encoder
GENERATOR_INT8_FILE = "generator_int8.onnx"  # add --int8: the generator quantized (synctalk_build.int8), CPU profile

# By default an avatar's own models hold no memory arena between requests: an idle avatar costs
# its weights and frames, not a batch-32 activation arena (the full generator's process: 7.2 GB
# with the arena after the batch-32 warm-up, 169 MB without). ONNX Runtime backend parameters
# (the GPU profile, where the TensorRT engine's context holds the activations either way).
# On the CPU profile, freeing the activations after every run costs their page faults on the next
# (measured in process, full generator: 130-170 ms a frame against the arena's 60-75), so there an
# avatar's models keep the arena and run one frame a run, as the CPU profile runs every generator
# (synctalk_build.render_model.CPU_PARAMETERS: ``run_batch`` 1; on a CPU the generator's time per frame is
# the same at 1 and 32 frames): the arena holds one frame's activations, about 0.5 GB with the full
# generator (backends/onnxruntime_cpu). Its audio encoders run whole requests (the 16-neighbour
# encoder encodes a request's distinct windows once: B + 15 for B frames, 16 per frame if cut in
# runs of one). ``add --arena`` keeps ONNX Runtime's arena on the GPU profile.
LEAN_MODEL_PARAMETERS = {"enable_mem_arena": "0"}
LEAN_CPU_PARAMETERS = {"enable_mem_arena": "1"}
# On the CPU profile an avatar's own steps warm up with one request of this many frames, not 32 (the
# shared steps and the GPU profile, whose TensorRT engines are built for the largest batch, warm up
# at 32): a 32-frame warm-up there compiles nothing more, it fills the processes' heaps and
# shared-memory pools to a batch's size, which an avatar loaded on demand, or one only streamed
# live, never asks for. Measured (benchmarks.cold_start, 10 frames at 320 x 240, side by side, PSS,
# 256 MB shared-memory regions):
# tiny models, load 1.2-1.9 -> 0.7-1.0 s, memory once its first live frame is out +585 -> +300-330
# MB, first frame 0.3 s either way; full models, load 4.3-4.8 -> 1.6-2.1 s, +940 -> +680 MB, first
# frame 1.05 -> 1.07-1.25 s. The first 32-frame request after the load pays what was not warmed,
# once: tiny 0.8-1.1 -> 1.1-1.4 s, full 2.5-2.6 -> 2.9-3.3 s. (At one frame: first frames 0.2 s slower.)
CPU_WARMUP_FRAMES = 8


def warm_at(config, frames: int) -> None:
    """One warm-up request of ``frames`` frames in place of the config's (its smallest sample's
    inputs: every sample holds the same tensors)."""
    if not config.model_warmup:
        return
    sample = type(config.model_warmup[0])()
    sample.CopyFrom(min(config.model_warmup, key=lambda w: w.batch_size))
    sample.name, sample.batch_size = f"batch_{frames}", frames
    del config.model_warmup[:]
    config.model_warmup.append(sample)


def model_names(avatar_id: str, own_audio_encoder: bool) -> dict[str, str]:
    """{template model name: the avatar's}. The template's ``avatar_audio_encoder`` is the
    avatar's own encoder, or the shared SyncTalk_2D one."""
    template = contract.avatar_models(TEMPLATE_ID, own_audio_encoder=True)
    ours = contract.avatar_models(avatar_id, own_audio_encoder=own_audio_encoder, synctalk2d=True)
    ours.setdefault("audio_encoder", contract.SYNCTALK2D_AUDIO_ENCODER_MODEL)
    ours.setdefault("window_encoder", contract.SYNCTALK2D_WINDOW_ENCODER_MODEL)
    return {template[role]: ours[role] for role in template}


def rename_models(config, names: dict[str, str]) -> None:
    """The template's placeholder model names in ``config`` (its own, its steps') -> ``names``."""
    config.name = names.get(config.name, config.name)
    for step in config.ensemble_scheduling.step:
        step.model_name = names.get(step.model_name, step.model_name)


def _link_or_copy(source: str, target: str) -> None:
    """Frames and models are immutable once stored: a hard link where the file system allows."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def install(repository: Path, entry: Path) -> None:
    """Write the models of a stored avatar (``entry``: its store folder) into ``repository``. The
    generator is the entry's own, else the repository's ``synctalk``; on the CPU profile its INT8
    quantization where ``add --int8`` kept one."""
    repository, entry = Path(repository), Path(entry)
    own_generator, own_encoder = entry / GENERATOR_FILE, entry / AUDIO_ENCODER_FILE
    generator = own_generator if own_generator.is_file() else paths.onnx_file(repository, contract.GENERATOR_MODEL)
    if (entry / GENERATOR_INT8_FILE).is_file() and repository_manifest.profile(repository) == "cpu":
        generator = entry / GENERATOR_INT8_FILE
    audio_encoder = own_encoder if own_encoder.is_file() else None
    _write_models(
        repository, repository_manifest.profile(repository), read_manifest(entry), entry, generator, audio_encoder
    )


def _render_onnx_model(
    repository: Path, profile: str, role: str, name: str, onnx_file: Path, arena: bool = False
) -> None:
    """The shared model ``role``'s config, renamed ``name``, with ``onnx_file`` and (unless
    ``arena``) no memory arena between requests; rendering gives it its own TensorRT caches."""
    config = read_config(paths.MODEL_REPOSITORY / role / "config.pbtxt")
    config.name = name
    lean = {} if arena else {**LEAN_MODEL_PARAMETERS, **(LEAN_CPU_PARAMETERS if profile == "cpu" else {})}
    for key, value in lean.items():
        config.parameters[key].string_value = value
    if profile == "cpu":
        warm_at(config, CPU_WARMUP_FRAMES)
    render_model(paths.MODEL_REPOSITORY / role, config, repository / name, profile, onnx_file, role=role)


def _write_models(
    repository: Path, profile: str, manifest: dict, entry: Path, generator: Path, audio_encoder: Path | None = None
) -> None:
    avatar_id = manifest["id"]
    added_with = manifest.get("source", {})  # what add recorded: audio preset, arena, sources
    audio_preset = added_with.get("audio_preset", "reference")
    models = contract.avatar_models(avatar_id, bool(audio_encoder), synctalk2d=audio_preset == "synctalk2d")
    source = paths.MODEL_REPOSITORY

    names = model_names(avatar_id, own_audio_encoder=bool(audio_encoder))
    template = ENSEMBLE_TEMPLATES[audio_preset]
    ensemble = read_config(template / "config.pbtxt")
    rename_models(ensemble, names)
    render_model(template, ensemble, repository / models["ensemble"], profile)
    if "from_features" in models:
        from_features = read_config(FROM_FEATURES_TEMPLATE / "config.pbtxt")
        rename_models(from_features, names)
        render_model(FROM_FEATURES_TEMPLATE, from_features, repository / models["from_features"], profile)

    arena = bool(added_with.get("arena", False))
    _render_onnx_model(repository, profile, contract.GENERATOR_MODEL, models["generator"], generator, arena)
    if audio_encoder:
        _render_onnx_model(
            repository,
            profile,
            contract.SYNCTALK2D_AUDIO_ENCODER_MODEL,
            models["audio_encoder"],
            Path(audio_encoder),
            arena,
        )
        with tempfile.TemporaryDirectory() as tmp:
            _render_onnx_model(
                repository,
                profile,
                contract.SYNCTALK2D_WINDOW_ENCODER_MODEL,
                models["window_encoder"],
                window_encoder.derive(Path(audio_encoder), Path(tmp) / "window_encoder.onnx"),
                arena,
            )

    background = read_config(BACKGROUND_TEMPLATE / "config.pbtxt")
    rename_models(background, names)
    # what a client needs to run SyncTalk_2D's loop over the avatar's images (CompositeClient.avatar_images)
    background.parameters[contract.AVATAR_IMAGES_PARAMETER].string_value = str(int(manifest["n_frames"]))
    # what the stream model answers a silent chunk with (read from this config: model_repository/stream)
    silent = "avatar_frames" if added_with.get("silent_frames") else "generator"
    background.parameters[contract.AVATAR_SILENCE_PARAMETER].string_value = silent
    if profile == "cpu":
        warm_at(background, CPU_WARMUP_FRAMES)
    target = render_model(
        BACKGROUND_TEMPLATE, background, repository / models["background"], profile, role="avatar_background"
    )
    shutil.copyfile(entry / MANIFEST, target / "1" / MANIFEST)
    shutil.copytree(entry / BACKGROUNDS, target / "1" / BACKGROUNDS, copy_function=_link_or_copy)

    jpeg = read_config(source / contract.JPEG_ENCODER_MODEL / "config.pbtxt")
    jpeg.name = models["jpeg_encoder"]
    frame_dims = [manifest["height"], manifest["width"], 3]
    jpeg.input[0].dims[:] = frame_dims
    for sample in jpeg.model_warmup:
        for tensor in sample.inputs.values():
            tensor.dims[:] = frame_dims
    jpeg.parameters["quality"].string_value = str(int(manifest["jpeg_quality"]))
    if profile == "cpu":
        warm_at(jpeg, CPU_WARMUP_FRAMES)
    render_model(
        source / contract.JPEG_ENCODER_MODEL,
        jpeg,
        repository / models["jpeg_encoder"],
        profile,
        role=contract.JPEG_ENCODER_MODEL,
    )

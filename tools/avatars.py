"""Add, list and remove avatars in a rendered model repository.

An avatar = an id + its generator ONNX (trained, or the stand-in) + background frames (a video or
an image folder) + one crop rectangle per frame. ``add`` writes, for the repository's profile:

- ``<id>``: the avatar's ensemble (``avatar_template/ensemble``): the client's model id;
- ``<id>_synctalk``: its generator (the ``synctalk`` config, renamed, with its own engine cache);
- ``<id>_background``: its background frames and crop rectangles (``avatar_template/background``),
  the assets stored next to the model;
- ``<id>_jpeg_encoder``: the ``jpeg_encoder`` config at the avatar's resolution and JPEG quality;
- ``<id>_audio_encoder`` (with ``--audio-encoder``): its own SyncTalk_2D audio encoder (the
  ``audio_encoder_synctalk2d`` config, renamed, with its own engine cache); without it the avatar
  uses the shared ``audio_encoder_synctalk2d``.

The validation, audio and ``frame_paste`` steps are shared by every avatar. On a server started
with ``--model-control-mode=explicit`` (``tools.serve`` does), ``--load URL`` loads the new avatar
at once, and ``remove --url URL`` unloads it first; otherwise restart the server.

**The avatar store.** A repository rendered by ``tools.render_repository`` is bound to an avatar
store (``avatars/`` at the project root, or ``$SYNCTALK_AVATARS``; recorded in its
``repository.json``): ``add`` keeps the avatar there (``<store>/<id>/``: ``avatar.json``, the
frames as given, its own ``generator.onnx`` / ``audio_encoder.onnx``) and installs it into the
repository; every later render installs every stored avatar again, so avatars survive
``make serve``, ``make clean`` and restarts. ``add`` is all-or-nothing (the entry is staged, then
renamed into place); ``remove`` deletes that avatar's models and entry only. ``sync`` installs the
store into a repository (a container does it at start, with the store mounted).

    python -m tools.avatars add --id anna --background dataset/anna/full_body_img --boxes dataset/anna/landmarks \\
        --generator anna_synctalk.onnx --audio-encoder audio_encoder.onnx --audio-preset synctalk2d \\
        --load 127.0.0.1:8001
    python -m tools.avatars list
    python -m tools.avatars remove --id anna --url 127.0.0.1:8001
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from synctalk_client import contract
from synctalk_preprocessing.avatar import BACKGROUNDS, MANIFEST, AvatarAssets, read_manifest
from tools import paths
from tools.render_repository import read_config, render_model

TEMPLATE = paths.ROOT / "avatar_template"
TEMPLATE_ID = "avatar"  # the placeholder id of the template's model names


GENERATOR_FILE = "generator.onnx"  # an avatar's own generator, in its store entry
AUDIO_ENCODER_FILE = "audio_encoder.onnx"  # an avatar's own SyncTalk_2D audio encoder


def _repository_manifest(repository: Path) -> dict:
    manifest = Path(repository) / "repository.json"
    if not manifest.is_file():
        raise FileNotFoundError(
            f"{repository} is not a rendered repository (no repository.json): run `make render` first"
        )
    return json.loads(manifest.read_text())


def repository_profile(repository: Path) -> str:
    return _repository_manifest(repository)["profile"]


def repository_store(repository: Path) -> Path | None:
    """The avatar store a rendered repository is bound to (None: avatars live in it alone)."""
    store = _repository_manifest(repository).get("avatar_store")
    return Path(store) if store else None


def _link_or_copy(source: str, target: str) -> None:
    """Frames and models are immutable once stored: a hard link where the file system allows."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def check_id(avatar_id: str) -> None:
    if not re.match(contract.AVATAR_ID_PATTERN, avatar_id or ""):
        raise ValueError(f"avatar id {avatar_id!r}: use 1-48 lower-case letters, digits and _, starting with a letter")
    if avatar_id in contract.RESERVED_IDS:
        raise ValueError(f"avatar id {avatar_id!r} is the name of a shared model")


def _set_steps(ensemble, avatar_id: str, audio_preset: str, own_audio_encoder: bool) -> None:
    """The ensemble's steps from the contract's wiring for this avatar and audio preset."""
    del ensemble.ensemble_scheduling.step[:]
    for model_name, inputs, outputs in contract.avatar_ensemble_steps(avatar_id, audio_preset, own_audio_encoder):
        step = ensemble.ensemble_scheduling.step.add(model_name=model_name, model_version=-1)
        step.input_map.update(inputs)
        step.output_map.update(outputs)


def _rename_models(config, avatar_id: str) -> None:
    template = contract.avatar_models(TEMPLATE_ID)
    names = {template[role]: name for role, name in contract.avatar_models(avatar_id).items()}
    config.name = names.get(config.name, config.name)
    for step in config.ensemble_scheduling.step:
        step.model_name = names.get(step.model_name, step.model_name)


def add(
    repository: Path,
    avatar_id: str,
    background: Path,
    boxes: Path | Sequence[int],
    generator: Path | None = None,
    size: tuple[int, int] | None = None,
    jpeg_quality: int = contract.JPEG_QUALITY,
    max_frames: int | None = None,
    replace: bool = False,
    audio_preset: str | None = None,
    audio_encoder: Path | None = None,
    arena: bool = False,
) -> dict:
    """Keep the avatar in the repository's store and write its models into ``repository``;
    returns the avatar's manifest.
    ``audio_preset``: "reference" (the request-flow front end) or "synctalk2d" (SyncTalk_2D's,
    what a trained SyncTalk_2D generator expects; the default with ``audio_encoder``, the avatar's
    own SyncTalk_2D audio encoder ONNX, else "reference")."""
    repository = Path(repository)
    check_id(avatar_id)
    audio_preset = audio_preset or ("synctalk2d" if audio_encoder else "reference")
    if audio_preset not in contract.AUDIO_PRESETS:
        raise ValueError(f"audio preset must be one of {', '.join(contract.AUDIO_PRESETS)}, got {audio_preset!r}")
    if audio_encoder and audio_preset != "synctalk2d":
        raise ValueError("--audio-encoder is a SyncTalk_2D audio encoder: it needs --audio-preset synctalk2d")
    if audio_encoder and not Path(audio_encoder).is_file():
        raise FileNotFoundError(f"audio encoder {audio_encoder} not found")
    store = repository_store(repository)
    models = contract.avatar_models(avatar_id, own_audio_encoder=True)
    existing = [name for name in models.values() if (repository / name).exists()]
    stored = store is not None and (store / avatar_id).exists()
    if (existing or stored) and not replace:
        where = ", ".join(existing + ([str(store / avatar_id)] if stored else []))
        raise FileExistsError(f"avatar {avatar_id!r} exists ({where}); remove it or pass --replace")
    if generator and not Path(generator).is_file():
        raise FileNotFoundError(f"generator {generator} not found")
    assets = AvatarAssets.from_files(avatar_id, Path(background), boxes, size, max_frames, jpeg_quality)
    assets.source["generator"] = str(generator) if generator else "shared"
    assets.source["audio_preset"] = audio_preset
    assets.source["arena"] = bool(arena)
    if audio_encoder:
        assets.source["audio_encoder"] = str(audio_encoder)
    # staged in the store (hidden, renamed into place at the end), else in a temporary folder
    if store is not None:
        store.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{avatar_id}-adding-", dir=store))
    try:
        assets.save(staging)
        if generator:
            shutil.copyfile(generator, staging / GENERATOR_FILE)
        if audio_encoder:
            shutil.copyfile(audio_encoder, staging / AUDIO_ENCODER_FILE)
        for name in existing:
            shutil.rmtree(repository / name)
        install(repository, staging)
        if store is not None:
            shutil.rmtree(store / avatar_id, ignore_errors=True)
            staging.rename(store / avatar_id)
    except BaseException:
        for name in models.values():
            shutil.rmtree(repository / name, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return read_manifest(repository / models["background"] / "1")


def install(repository: Path, entry: Path) -> None:
    """Write the models of a stored avatar (``entry``: its store folder) into ``repository``. The
    generator is the entry's own, else the repository's ``synctalk``."""
    repository, entry = Path(repository), Path(entry)
    own_generator, own_encoder = entry / GENERATOR_FILE, entry / AUDIO_ENCODER_FILE
    generator = own_generator if own_generator.is_file() else repository / contract.GENERATOR_MODEL / "1" / "model.onnx"
    audio_encoder = own_encoder if own_encoder.is_file() else None
    _write_models(repository, repository_profile(repository), read_manifest(entry), entry, generator, audio_encoder)


# What a loaded avatar costs besides its frames, face inputs and generator weights, measured on
# the CPU profile (docs/operations.md, "Memory"): its three Python-backend processes (background,
# generator, JPEG encoder) and the shared-memory pages their batch-32 warm-ups touch; 520-570 MB
# measured with the tiny and the full generator. And what one batch of 32 frames of the full-size
# generator needs while it runs (without an arena it is returned afterwards): 4.2 GB.
AVATAR_OVERHEAD_BYTES = 640 * 2**20
GENERATOR_PEAK_BYTES = int(4.2 * 2**30)


def memory_needed(manifest: dict, generator_bytes: int) -> dict[str, int]:
    """What loading an avatar adds to the server's resident memory (CPU profile), by part."""
    n, h, w = manifest["n_frames"], manifest["height"], manifest["width"]
    parts = {
        "frames": n * h * w * 3,
        "face_inputs": n * 3 * contract.FACE_SIZE * contract.FACE_SIZE,
        "generator": int(generator_bytes),
        "steps": AVATAR_OVERHEAD_BYTES,
        # add --arena: its generator keeps the activations of a batch of 32 (the full-size one's)
        "arena": GENERATOR_PEAK_BYTES if manifest.get("source", {}).get("arena") else 0,
    }
    parts["total"] = sum(parts.values())
    return parts


def check_fits(repository: Path, avatar_id: str, available: int | None = None) -> dict[str, int]:
    """Refuse (MemoryError, with the numbers) to load an avatar whose resident memory, plus one
    batch of 32 frames in flight, exceeds the memory this host has available."""
    import psutil

    models = contract.avatar_models(avatar_id)
    manifest = read_manifest(Path(repository) / models["background"] / "1")
    need = memory_needed(manifest, (Path(repository) / models["generator"] / "1" / "model.onnx").stat().st_size)
    available = psutil.virtual_memory().available if available is None else available
    if need["total"] + GENERATOR_PEAK_BYTES > available:
        gb = lambda b: f"{b / 2**30:.2f} GB"  # noqa: E731
        raise MemoryError(
            f"avatar {avatar_id!r} needs {gb(need['total'])} resident (frames {gb(need['frames'])}, face inputs "
            f"{gb(need['face_inputs'])}, generator {gb(need['generator'])}, its steps {gb(need['steps'])}) plus "
            f"{gb(GENERATOR_PEAK_BYTES)} for a batch of 32 in flight, and this host has {gb(available)} available: "
            f"unload an avatar (synctalk-client unload ID), add it with fewer frames (--max-frames) or a smaller --size"
        )
    return need


def stored_avatars(store: Path | None) -> list[Path]:
    """The entries of an avatar store (folders with an avatar.json; staged ones are hidden)."""
    if store is None or not Path(store).is_dir():
        return []
    return sorted(p for p in Path(store).iterdir() if not p.name.startswith(".") and (p / MANIFEST).is_file())


def sync(repository: Path, store: Path | None = None) -> list[str]:
    """Install every avatar of the store (default: the repository's) that the repository lacks;
    returns their ids."""
    store = Path(store) if store else repository_store(repository)
    installed = []
    for entry in stored_avatars(store):
        avatar_id = read_manifest(entry)["id"]
        if not (Path(repository) / contract.avatar_models(avatar_id)["ensemble"]).exists():
            install(repository, entry)
            installed.append(avatar_id)
    return installed


# By default an avatar's own models hold no memory arena between requests: an idle avatar costs
# its weights and frames, not a batch-32 activation arena (the full generator's process: 7.2 GB
# with the arena after the batch-32 warm-up, 169 MB without). The price, on a CPU, is the page
# faults of fresh activations on every run (measured in process, 8-frame batches: full generator
# 403 ms with the arena, 802 ms without; tiny 90 vs 148 ms); ``add --arena`` keeps the arena for
# an avatar that must be fast more than small. ONNX Runtime backend parameters, read the same way
# by the CPU profile (which also hands freed memory back with malloc_trim).
LEAN_MODEL_PARAMETERS = {"enable_mem_arena": "0"}


def _render_onnx_model(
    repository: Path, profile: str, role: str, name: str, onnx_file: Path, arena: bool = False
) -> None:
    """The shared model ``role``'s config, renamed ``name``, with ``onnx_file`` and (unless
    ``arena``) no memory arena between requests; rendering gives it its own TensorRT caches."""
    config = read_config(paths.MODEL_REPOSITORY / role / "config.pbtxt")
    config.name = name
    for key, value in ({} if arena else LEAN_MODEL_PARAMETERS).items():
        config.parameters[key].string_value = value
    render_model(paths.MODEL_REPOSITORY / role, config, repository / name, profile, onnx_file, role=role)


def _write_models(
    repository: Path, profile: str, manifest: dict, entry: Path, generator: Path, audio_encoder: Path | None = None
) -> None:
    avatar_id = manifest["id"]
    added_with = manifest.get("source", {})  # what add recorded: audio preset, arena, sources
    audio_preset = added_with.get("audio_preset", "reference")
    models = contract.avatar_models(avatar_id, own_audio_encoder=bool(audio_encoder))
    source = paths.MODEL_REPOSITORY

    ensemble = read_config(TEMPLATE / "ensemble" / "config.pbtxt")
    _rename_models(ensemble, avatar_id)
    if audio_preset != "reference":
        _set_steps(ensemble, avatar_id, audio_preset, bool(audio_encoder))
    render_model(TEMPLATE / "ensemble", ensemble, repository / models["ensemble"], profile)

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

    background = read_config(TEMPLATE / "background" / "config.pbtxt")
    _rename_models(background, avatar_id)
    target = render_model(
        TEMPLATE / "background", background, repository / models["background"], profile, role="avatar_background"
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
    render_model(
        source / contract.JPEG_ENCODER_MODEL,
        jpeg,
        repository / models["jpeg_encoder"],
        profile,
        role=contract.JPEG_ENCODER_MODEL,
    )


def list_avatars(repository: Path) -> list[dict]:
    """The avatars of ``repository``: their manifests (without the per-frame boxes)."""
    rows = []
    for folder in sorted(Path(repository).glob(f"*{contract.AVATAR_BACKGROUND_SUFFIX}/1")):
        try:
            manifest = read_manifest(folder)
        except FileNotFoundError:
            continue
        manifest.pop("boxes", None)
        manifest["models"] = contract.avatar_models(manifest["id"], "audio_encoder" in manifest.get("source", {}))
        rows.append(manifest)
    return rows


def remove(repository: Path, avatar_id: str) -> list[str]:
    """Delete the avatar's models from the repository and its entry from the repository's store;
    nothing else. Returns what was removed."""
    check_id(avatar_id)
    removed = []
    for name in contract.avatar_models(avatar_id, own_audio_encoder=True).values():
        if (Path(repository) / name).exists():
            shutil.rmtree(Path(repository) / name)
            removed.append(name)
    store = repository_store(repository)
    if store is not None and (store / avatar_id / MANIFEST).is_file():
        shutil.rmtree(store / avatar_id)
        removed.append(str(store / avatar_id))
    if not removed:
        raise FileNotFoundError(f"no avatar {avatar_id!r} in {repository}" + (f" or {store}" if store else ""))
    return removed


def _size(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)x(\d+)", text)
    if not match:
        raise argparse.ArgumentTypeError(f"size must be WIDTHxHEIGHT, got {text!r}")
    return int(match[1]), int(match[2])


def _boxes(text: str) -> Path | list[int]:
    if re.fullmatch(r"\s*-?\d+\s*(,\s*-?\d+\s*){3}", text):
        return [int(v) for v in text.split(",")]
    return Path(text)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--repository", type=Path, default=paths.RENDERED / "cpu", help="a rendered repository (make render)"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    p_add = commands.add_parser("add", help="add an avatar")
    p_add.add_argument("--id", required=True, help="the avatar id = the client's model id")
    p_add.add_argument("--background", required=True, type=Path, help="background video, or a folder of images")
    p_add.add_argument(
        "--boxes",
        required=True,
        type=_boxes,
        help="crop boxes file (.json/.npy/.txt, x0 y0 x1 y1 per frame), SyncTalk_2D's landmarks/ folder (*.lms), "
        "or one box x0,y0,x1,y1",
    )
    p_add.add_argument(
        "--generator", type=Path, help="the avatar's generator ONNX (default: the repository's stand-in)"
    )
    p_add.add_argument(
        "--audio-encoder",
        type=Path,
        help="the avatar's SyncTalk_2D audio encoder ONNX (tools.import_checkpoint --audio-encoder; "
        "default: the shared audio_encoder_synctalk2d)",
    )
    p_add.add_argument("--size", type=_size, help="output resolution WIDTHxHEIGHT (default: the background's)")
    p_add.add_argument("--jpeg-quality", type=int, default=contract.JPEG_QUALITY)
    p_add.add_argument(
        "--audio-preset",
        choices=contract.AUDIO_PRESETS,
        help="audio front end: the request-flow reference's, or SyncTalk_2D's (trained SyncTalk_2D generators); "
        "default: synctalk2d with --audio-encoder, else reference",
    )
    p_add.add_argument("--max-frames", type=int, help="use at most this many background frames")
    p_add.add_argument(
        "--arena",
        action="store_true",
        help="keep onnxruntime's memory arena for the avatar's models: about 2x faster on a CPU, but holds the "
        "activations of the largest batch (GBs for a SyncTalk_2D generator)",
    )
    p_add.add_argument("--replace", action="store_true", help="replace an avatar of the same id")
    p_add.add_argument(
        "--load", metavar="URL", help="then load it on the server at this gRPC URL (explicit model control)"
    )
    commands.add_parser("list", help="list the avatars")
    p_sync = commands.add_parser("sync", help="install every stored avatar the repository lacks (a container's start)")
    p_sync.add_argument("--store", type=Path, help="the avatar store (default: the repository's)")
    p_rm = commands.add_parser("remove", help="remove an avatar")
    p_rm.add_argument("--id", required=True)
    p_rm.add_argument("--url", help="unload it first from the server at this gRPC URL")
    args = parser.parse_args(argv)

    try:
        if args.command == "add":
            manifest = add(
                args.repository,
                args.id,
                args.background,
                args.boxes,
                args.generator,
                args.size,
                args.jpeg_quality,
                args.max_frames,
                args.replace,
                args.audio_preset,
                args.audio_encoder,
                args.arena,
            )
            names = contract.avatar_models(args.id, own_audio_encoder=bool(args.audio_encoder)).values()
            print(
                f"added avatar {args.id}: {manifest['n_frames']} background frames "
                f"{manifest['width']}x{manifest['height']}, "
                f"JPEG quality {manifest['jpeg_quality']}, models {', '.join(names)}"
            )
            if args.load:
                from synctalk_client import CompositeClient

                if args.load.split(":")[0] in ("127.0.0.1", "localhost", "[::1]"):  # the server runs here
                    need = check_fits(args.repository, args.id)
                    print(f"{args.id} needs about {need['total'] / 2**20:.0f} MB resident once loaded")
                with CompositeClient(args.load) as client:
                    client.load_model(args.id)
                print(f"loaded {args.id} on {args.load}")
        elif args.command == "sync":
            installed = sync(args.repository, args.store)
            print(f"installed {', '.join(installed)}" if installed else "every stored avatar is installed")
        elif args.command == "list":
            for row in list_avatars(args.repository):
                print(
                    f"{row['id']:<20} {row['n_frames']:>5} frames {row['width']}x{row['height']}  JPEG "
                    f"q{row['jpeg_quality']}  "
                    f"audio {row['source'].get('audio_preset', 'reference')}  "
                    f"background {row['source'].get('background', '?')}  generator "
                    f"{row['source'].get('generator', '?')}"
                )
        else:
            if args.url:
                from synctalk_client import CompositeClient

                with CompositeClient(args.url) as client:
                    if args.id in client.model_ids():  # already unloaded: nothing to do there
                        client.unload_model(args.id)  # returns once the unload is complete
            print("removed", ", ".join(remove(args.repository, args.id)))
    except (ValueError, FileNotFoundError, FileExistsError, MemoryError) as exc:
        parser.exit(2, f"error: {exc}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

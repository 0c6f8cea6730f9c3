"""The avatar store: avatars kept across renders, and their installation into a repository.

A repository rendered by ``synctalk_build.render_repository`` is bound to an avatar store (``avatars/`` at
the project root, or ``$SYNCTALK_AVATARS``; recorded in its ``repository.json``): ``add`` keeps
the avatar there (``<store>/<id>/``: ``avatar.json``, the frames as given, its own
``generator.onnx`` / ``audio_encoder.onnx``, ``generator_int8.onnx`` with ``--int8``) and installs
it into the repository (``synctalk_build.avatar_install``); every later render installs every stored
avatar again, so avatars survive ``make serve``, ``make clean`` and restarts. ``add`` is
all-or-nothing (the entry is staged, then renamed into place); ``remove`` deletes that avatar's
models and entry only; ``sync`` installs the store into a repository (a container does it at start, with the store
mounted).
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from synctalk_build import paths
from synctalk_build.avatar_install import AUDIO_ENCODER_FILE, GENERATOR_FILE, GENERATOR_INT8_FILE, install
from synctalk_build.repository_manifest import avatar_store as repository_store
from synctalk_common import contract
from synctalk_preprocessing.avatar import MANIFEST, AvatarAssets, read_manifest


def check_id(avatar_id: str) -> None:
    if not re.match(contract.AVATAR_ID_PATTERN, avatar_id or ""):
        raise ValueError(f"avatar id {avatar_id!r}: use 1-48 lower-case letters, digits and _, starting with a letter")
    if avatar_id in contract.RESERVED_IDS:
        raise ValueError(f"avatar id {avatar_id!r} is the name of a shared model")


@dataclass(frozen=True)
class AvatarOptions:
    """How an avatar is made, besides its frames and boxes (``synctalk-avatars add``'s flags).

    ``generator``: its generator ONNX (None: the repository's stand-in). ``size``: the output
    resolution (None: the background's). ``max_frames``: at most this many background frames.
    ``replace``: an avatar of the same id is replaced. ``audio_preset``: "reference" (the
    request-flow front end) or "synctalk2d" (SyncTalk_2D's, what a trained SyncTalk_2D generator
    expects; the default with ``audio_encoder``, the avatar's own SyncTalk_2D audio encoder ONNX,
    else "reference"). ``arena``: the GPU profile keeps ONNX Runtime's memory arena for its models.
    ``silent_frames``: a live stream answers silence with the avatar's own frames. ``replicas``: how
    many replicas of a cluster hold it (``synctalk_ops.placement``; default 2, or 1 with one
    replica). ``int8``: also quantize its generator to INT8 for CPU hosts (``synctalk_build.int8``:
    calibrated on its frames and ``int8_audio``, kept if ``int8_min_speedup`` times faster; the
    measurement goes in its manifest's ``source.int8``)."""

    generator: Path | None = None
    size: tuple[int, int] | None = None
    jpeg_quality: int = contract.JPEG_QUALITY
    max_frames: int | None = None
    replace: bool = False
    audio_preset: str | None = None
    audio_encoder: Path | None = None
    arena: bool = False
    silent_frames: bool = False
    replicas: int | None = None
    int8: bool = False
    int8_audio: Path | None = None
    int8_min_speedup: float | None = None


def add(
    repository: Path,
    avatar_id: str,
    background: Path,
    boxes: Path | Sequence[int],
    options: AvatarOptions | None = None,
) -> dict:
    """Keep the avatar in the repository's store and write its models into ``repository``;
    returns the avatar's manifest. ``background``: a video or a folder of images; ``boxes``: a
    crop box per frame (a file or SyncTalk_2D's landmarks folder) or one for all."""
    options = options or AvatarOptions()
    generator, audio_encoder, audio_preset = options.generator, options.audio_encoder, options.audio_preset
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
    if (existing or stored) and not options.replace:
        where = ", ".join(existing + ([str(store / avatar_id)] if stored else []))
        raise FileExistsError(f"avatar {avatar_id!r} exists ({where}); remove it or pass --replace")
    if generator and not Path(generator).is_file():
        raise FileNotFoundError(f"generator {generator} not found")
    assets = AvatarAssets.from_files(
        avatar_id, Path(background), boxes, options.size, options.max_frames, options.jpeg_quality
    )
    assets.source["generator"] = str(generator) if generator else "shared"
    assets.source["audio_preset"] = audio_preset
    assets.source["arena"] = bool(options.arena)
    assets.source["silent_frames"] = bool(options.silent_frames)
    if options.replicas is not None:
        if options.replicas < 1:
            raise ValueError(f"--replicas must be at least 1, got {options.replicas}")
        assets.source["replicas"] = int(options.replicas)
    if audio_encoder:
        assets.source["audio_encoder"] = str(audio_encoder)
    # staged in the store (hidden, renamed into place at the end), else in a temporary folder
    if store is not None:
        store.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{avatar_id}-adding-", dir=store))
    try:
        if options.int8:
            assets.source["int8"] = _quantize(
                repository,
                staging,
                assets,
                generator,
                audio_preset,
                audio_encoder,
                options.int8_audio,
                options.int8_min_speedup,
            )
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


def _quantize(repository, staging, assets, generator, audio_preset, audio_encoder, audio_file, min_speedup) -> dict:
    from synctalk_build import int8

    fp32 = Path(generator) if generator else paths.onnx_file(repository, contract.GENERATOR_MODEL)
    shared_encoder = paths.onnx_file(repository, contract.PRESET_AUDIO_ENCODERS[audio_preset])
    encoder = Path(audio_encoder) if audio_encoder else shared_encoder
    return int8.build(
        fp32,
        staging / GENERATOR_INT8_FILE,
        assets.backgrounds,
        assets.boxes,
        audio_preset,
        encoder,
        int8.speech(audio_file),
        int8.MIN_SPEEDUP if min_speedup is None else min_speedup,
    )


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


def list_avatars(repository: Path) -> list[dict]:
    """The avatars of ``repository``: their manifests (without the per-frame boxes)."""
    rows = []
    for folder in sorted(Path(repository).glob(f"*{contract.AVATAR_BACKGROUND_SUFFIX}/1")):
        try:
            manifest = read_manifest(folder)
        except FileNotFoundError:
            continue
        manifest.pop("boxes", None)
        manifest["models"] = models_of(manifest)
        rows.append(manifest)
    return rows


def models_of(manifest: dict) -> dict[str, str]:
    """The models of a stored avatar by role (``contract.avatar_models``), as add recorded it: its
    audio preset and whether it has its own audio encoder."""
    source = manifest.get("source", {})
    return contract.avatar_models(
        manifest["id"], "audio_encoder" in source, synctalk2d=source.get("audio_preset") == "synctalk2d"
    )


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

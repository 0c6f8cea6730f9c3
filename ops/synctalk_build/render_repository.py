"""Render a servable Triton model repository for a profile from ``model_repository/``.

``model_repository/`` holds the production configs (GPU profile: ONNX Runtime backend with the
TensorRT EP, DALI backend, GPU instance groups). This tool copies it with the ONNX models built by
``ops/synctalk_build/build_models.py`` (or your own) and, for ``--profile cpu``, derives the CPU profile: same
model names, same tensors, same ensemble, with the ONNX Runtime and DALI models served by the
Python-based backends of ``backends/`` (see its README). One model is rendered by
``synctalk_build.render_model``; the avatars of the repository's store are installed by
``synctalk_build.avatar_store``.

    python -m synctalk_build.render_repository --profile cpu --variant tiny
    python -m synctalk_build.render_repository --profile gpu --generator my_trained_synctalk.onnx
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from synctalk_build import paths, repository_manifest, window_encoder
from synctalk_build.avatar_store import stored_avatars, sync
from synctalk_build.render_model import PROFILES, read_config, render_model
from synctalk_common import contract

SOURCE_ENSEMBLE = contract.DEFAULT_MODEL_ID  # the ensemble's folder in model_repository/


def onnx_sources(
    models_dir: Path,
    generator: Path | None,
    audio_encoder: Path | None,
    synctalk2d_audio_encoder: Path | None = None,
) -> dict[str, Path]:
    sources = {
        contract.GENERATOR_MODEL: generator or models_dir / f"{contract.GENERATOR_MODEL}.onnx",
        contract.AUDIO_ENCODER_MODEL: audio_encoder or models_dir / f"{contract.AUDIO_ENCODER_MODEL}.onnx",
        contract.SYNCTALK2D_AUDIO_ENCODER_MODEL: synctalk2d_audio_encoder
        or models_dir / f"{contract.SYNCTALK2D_AUDIO_ENCODER_MODEL}.onnx",
    }
    for name, path in sources.items():
        if not Path(path).is_file():
            raise FileNotFoundError(f"{name}: ONNX model {path} not found (run `make models`, or pass your own)")
    return sources


def render(
    profile: str,
    out: Path,
    models_dir: Path,
    model_id: str = contract.DEFAULT_MODEL_ID,
    generator: Path | None = None,
    audio_encoder: Path | None = None,
    source: Path = paths.MODEL_REPOSITORY,
    synctalk2d_audio_encoder: Path | None = None,
    avatar_store: Path | None = None,
) -> Path:
    """Render ``source`` for ``profile`` into ``out`` (replaced). ``avatar_store``: bind the
    repository to this avatar store and install every avatar in it (``synctalk_build.avatar_store``)."""
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    onnx_files = onnx_sources(models_dir, generator, audio_encoder, synctalk2d_audio_encoder)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as tmp:  # the one-window encoder: cut from the SyncTalk_2D encoder
        derived = {
            contract.SYNCTALK2D_WINDOW_ENCODER_MODEL: window_encoder.derive(
                onnx_files[contract.SYNCTALK2D_AUDIO_ENCODER_MODEL], Path(tmp) / "window_encoder.onnx"
            )
        }
        for model_dir in sorted(p for p in source.iterdir() if (p / "config.pbtxt").is_file()):
            config = read_config(model_dir / "config.pbtxt")
            config.name = model_id if model_dir.name == SOURCE_ENSEMBLE else config.name
            onnx_file = onnx_files.get(config.name) or derived.get(config.name)
            render_model(model_dir, config, out / config.name, profile, onnx_file)
    manifest = {
        "profile": profile,
        "model_id": model_id,
        "onnx": {k: str(v) for k, v in onnx_files.items()},
        "avatar_store": str(Path(avatar_store).resolve()) if avatar_store else None,
    }
    repository_manifest.write(out, manifest)
    if avatar_store:
        sync(out)
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=PROFILES, default="cpu")
    parser.add_argument("--variant", default="full", help="stand-in model variant under build/models (full or tiny)")
    parser.add_argument("--models-dir", type=Path, help="folder with synctalk.onnx and audio_encoder.onnx")
    parser.add_argument(
        "--generator", type=Path, help="your trained SyncTalk_2D generator (.onnx: input, audio -> output)"
    )
    parser.add_argument("--audio-encoder", type=Path, help="your audio encoder (.onnx: MEL_WINDOWS -> AUDIO_FEATURES)")
    parser.add_argument(
        "--synctalk2d-audio-encoder",
        type=Path,
        help="the shared SyncTalk_2D audio encoder "
        "(synctalk_build.import_checkpoint --audio-encoder audio_visual_encoder.pth)",
    )
    parser.add_argument("--model-id", default=contract.DEFAULT_MODEL_ID, help="ensemble name = the client's model_id")
    parser.add_argument("--out", type=Path, help="default: build/repository/<profile>")
    parser.add_argument(
        "--avatar-store",
        type=Path,
        default=paths.avatar_store(),
        help="the avatars to serve, kept across renders (default: $SYNCTALK_AVATARS or avatars/)",
    )
    parser.add_argument("--no-avatars", action="store_true", help="a repository without avatars (bound to no store)")
    args = parser.parse_args(argv)
    out = args.out or paths.RENDERED / args.profile
    store = None if args.no_avatars else args.avatar_store
    render(
        args.profile,
        out,
        args.models_dir or paths.MODELS / args.variant,
        args.model_id,
        args.generator,
        args.audio_encoder,
        synctalk2d_audio_encoder=args.synctalk2d_audio_encoder,
        avatar_store=store,
    )
    stored = ""
    if store is not None:
        ids = [entry.name for entry in stored_avatars(store)]
        stored = f" with {len(ids)} avatar(s) from {store}" + (f": {', '.join(ids)}" if ids else "")
    print(f"rendered the {args.profile} profile into {out}{stored}")


if __name__ == "__main__":
    main()

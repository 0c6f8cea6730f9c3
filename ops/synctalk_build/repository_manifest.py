"""``repository.json``: what a rendered repository was rendered as (its profile, model id, ONNX
sources) and the avatar store it is bound to. ``synctalk_build.render_repository`` writes it; the avatar
tools read it to render an avatar's models for the same profile and keep it in the same store."""

from __future__ import annotations

import json
from pathlib import Path

FILE = "repository.json"


def write(repository: Path, manifest: dict) -> None:
    (Path(repository) / FILE).write_text(json.dumps(manifest, indent=2) + "\n")


def read(repository: Path) -> dict:
    path = Path(repository) / FILE
    if not path.is_file():
        raise FileNotFoundError(f"{repository} is not a rendered repository (no {FILE}): run `make render` first")
    return json.loads(path.read_text())


def profile(repository: Path) -> str:
    return read(repository)["profile"]


def avatar_store(repository: Path) -> Path | None:
    """The avatar store a rendered repository is bound to (None: avatars live in it alone)."""
    store = read(repository).get("avatar_store")
    return Path(store) if store else None

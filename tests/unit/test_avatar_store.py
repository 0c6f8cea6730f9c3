"""The avatar store: avatars outlive the rendered repository, add is all-or-nothing, remove
touches only its own avatar, frames are kept as given."""

import json

import cv2
import pytest

from synctalk_build import avatar_install, avatar_store
from synctalk_build.render_repository import render
from synctalk_client import synthetic


@pytest.fixture()
def frames(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    pictures, boxes = synthetic.avatar_background(3, 160, 96, face=48)
    for i, picture in enumerate(pictures):
        cv2.imwrite(str(folder / f"{i}.jpg"), picture[..., ::-1])
    (tmp_path / "boxes.json").write_text(json.dumps(boxes.tolist()))
    return folder, tmp_path / "boxes.json"


def _render(tmp_path, models_dir, store):
    return render("cpu", tmp_path / "repository", models_dir / "tiny", avatar_store=store)


def test_an_added_avatar_survives_a_re_render(tmp_path, models_dir, frames):
    store = tmp_path / "store"
    repository = _render(tmp_path, models_dir, store)
    manifest = avatar_store.add(
        repository, "anna", *frames, options=avatar_store.AvatarOptions(generator=models_dir / "tiny" / "synctalk.onnx")
    )
    assert manifest["n_frames"] == 3
    entry = store / "anna"
    assert (entry / "avatar.json").is_file() and (entry / avatar_install.GENERATOR_FILE).is_file()
    # the frames as given: the JPEG files' bytes, not a re-encode
    for i, name in enumerate(sorted((entry / "backgrounds").iterdir())):
        assert name.read_bytes() == (frames[0] / f"{i}.jpg").read_bytes()
    repository = _render(tmp_path, models_dir, store)  # make serve / make render: the folder is replaced
    assert {"anna", "anna_synctalk", "anna_background", "anna_jpeg_encoder"} <= {p.name for p in repository.iterdir()}
    assert (repository / "anna_synctalk" / "1" / "model.onnx").read_bytes() == (
        entry / avatar_install.GENERATOR_FILE
    ).read_bytes()
    assert [row["id"] for row in avatar_store.list_avatars(repository)] == ["anna"]
    unbound = render("cpu", tmp_path / "plain", models_dir / "tiny")  # a repository without a store has none
    assert not (unbound / "anna").exists()


def test_add_is_all_or_nothing_and_remove_deletes_only_its_own(tmp_path, models_dir, frames, monkeypatch):
    store = tmp_path / "store"
    repository = _render(tmp_path, models_dir, store)
    avatar_store.add(repository, "anna", *frames)
    with pytest.raises(FileExistsError, match="'anna' exists"):
        avatar_store.add(repository, "anna", *frames)

    def broken_install(repository, entry):
        (repository / "bert").mkdir()  # a half-written avatar
        raise OSError("disk full")

    monkeypatch.setattr(avatar_store, "install", broken_install)
    with pytest.raises(OSError, match="disk full"):
        avatar_store.add(repository, "bert", *frames)
    monkeypatch.undo()
    assert not (repository / "bert").exists() and [p.name for p in store.iterdir()] == ["anna"], (
        "nothing of bert is left"
    )
    avatar_store.add(repository, "bert", *frames)
    removed = avatar_store.remove(repository, "bert")
    assert str(store / "bert") in removed and not (store / "bert").exists()
    assert (store / "anna" / "avatar.json").is_file() and (repository / "anna").is_dir()
    assert not any(p.name.startswith("bert") for p in repository.iterdir())


def test_sync_installs_what_a_repository_lacks(tmp_path, models_dir, frames):
    store = tmp_path / "store"
    repository = _render(tmp_path, models_dir, store)
    avatar_store.add(repository, "anna", *frames)
    other = render("cpu", tmp_path / "container", models_dir / "tiny")
    assert avatar_store.sync(other, store) == ["anna"]
    assert avatar_store.sync(other, store) == []  # already there
    assert (other / "anna_background" / "1" / "avatar.json").is_file()

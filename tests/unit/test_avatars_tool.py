"""The avatar tools (avatar_store, avatars) offline: ids, all-or-nothing writes, listing, removal, CLI errors."""

import json

import numpy as np
import pytest

from synctalk_build import avatar_store
from synctalk_build.render_repository import render
from synctalk_common import contract
from synctalk_ops import avatars


@pytest.fixture()
def repository(tmp_path, models_dir):
    return render("cpu", tmp_path / "repo", models_dir / "tiny")


@pytest.fixture()
def frames(tmp_path):
    import cv2

    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(2):
        cv2.imwrite(str(folder / f"{i}.png"), np.full((60, 80, 3), 50 * i, np.uint8))
    return folder


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "Anna",
        "../etc",
        "anna-b",
        "9lives",
        "a" * 49,
        "demo",
        "synctalk",
        "frame_paste",
        "audio_features_synctalk2d",
    ],
)
def test_bad_ids_are_refused(bad):
    with pytest.raises(ValueError, match="avatar id"):
        avatar_store.check_id(bad)


def test_add_list_remove(repository, frames, tmp_path):
    manifest = avatar_store.add(
        repository,
        "anna",
        frames,
        [10, 5, 50, 45],
        options=avatar_store.AvatarOptions(size=(160, 120), jpeg_quality=85),
    )
    assert (manifest["width"], manifest["height"], manifest["n_frames"]) == (160, 120, 2)
    assert manifest["boxes"] == [[20, 10, 100, 90]] * 2  # scaled with the backgrounds
    for name in contract.avatar_models("anna").values():
        assert (repository / name / "config.pbtxt").is_file()
    with pytest.raises(FileExistsError, match="avatar 'anna' exists"):
        avatar_store.add(repository, "anna", frames, [10, 5, 50, 45])
    avatar_store.add(repository, "anna", frames, [0, 0, 80, 60], options=avatar_store.AvatarOptions(replace=True))
    (listed,) = avatar_store.list_avatars(repository)
    assert listed["id"] == "anna" and listed["width"] == 80 and "boxes" not in listed
    assert sorted(avatar_store.remove(repository, "anna")) == sorted(contract.avatar_models("anna").values())
    assert avatar_store.list_avatars(repository) == []
    with pytest.raises(FileNotFoundError, match="no avatar 'anna'"):
        avatar_store.remove(repository, "anna")


def test_an_avatar_with_its_own_audio_encoder(repository, frames, models_dir, capsys):
    encoder = models_dir / "tiny" / f"{contract.SYNCTALK2D_AUDIO_ENCODER_MODEL}.onnx"
    with pytest.raises(ValueError, match="needs --audio-preset synctalk2d"):
        avatar_store.add(
            repository,
            "anna",
            frames,
            [10, 5, 50, 45],
            options=avatar_store.AvatarOptions(audio_preset="reference", audio_encoder=encoder),
        )
    with pytest.raises(FileNotFoundError, match="audio encoder"):
        avatar_store.add(
            repository,
            "anna",
            frames,
            [10, 5, 50, 45],
            options=avatar_store.AvatarOptions(audio_encoder=repository / "none.onnx"),
        )
    assert not (repository / "anna").exists()
    assert (
        avatars.main(
            [
                "--repository",
                str(repository),
                "add",
                "--id",
                "anna",
                "--background",
                str(frames),
                "--boxes",
                "10,5,50,45",
                "--audio-encoder",
                str(encoder),
            ]
        )
        == 0
    )
    models = contract.avatar_models("anna", own_audio_encoder=True)
    assert "anna_audio_encoder" in capsys.readouterr().out
    assert (repository / models["audio_encoder"] / "1" / "model.onnx").read_bytes() == encoder.read_bytes()
    (listed,) = avatar_store.list_avatars(repository)
    assert listed["source"]["audio_preset"] == "synctalk2d" and listed["models"] == models
    assert sorted(avatar_store.remove(repository, "anna")) == sorted(models.values())


def test_a_failed_add_leaves_nothing_behind(repository, frames):
    with pytest.raises(ValueError, match="crop box 0"):
        avatar_store.add(repository, "anna", frames, [70, 5, 90, 45])  # outside the 80-pixel-wide frame
    assert not any((repository / name).exists() for name in contract.avatar_models("anna").values())
    with pytest.raises(FileNotFoundError, match="generator"):
        avatar_store.add(
            repository,
            "anna",
            frames,
            [10, 5, 50, 45],
            options=avatar_store.AvatarOptions(generator=repository / "none.onnx"),
        )
    assert not (repository / "anna").exists()


def test_only_rendered_repositories(tmp_path, frames):
    with pytest.raises(FileNotFoundError, match="not a rendered repository"):
        avatar_store.add(tmp_path, "anna", frames, [10, 5, 50, 45])


def test_cli_add_and_list(repository, frames, tmp_path, capsys):
    (tmp_path / "boxes.json").write_text(json.dumps([[10, 5, 50, 45], [12, 5, 52, 45]]))
    assert (
        avatars.main(
            [
                "--repository",
                str(repository),
                "add",
                "--id",
                "bert",
                "--background",
                str(frames),
                "--boxes",
                str(tmp_path / "boxes.json"),
                "--audio-preset",
                "synctalk2d",
            ]
        )
        == 0
    )
    assert avatars.main(["--repository", str(repository), "list"]) == 0
    out = capsys.readouterr().out
    assert "added avatar bert: 2 background frames 80x60" in out and "audio synctalk2d" in out
    with pytest.raises(SystemExit) as exit_:
        avatars.main(
            ["--repository", str(repository), "add", "--id", "Bad", "--background", str(frames), "--boxes", "1,2,3,4"]
        )
    assert exit_.value.code == 2 and "avatar id 'Bad'" in capsys.readouterr().err


def test_every_avatar_step_counts_towards_its_stage():
    steps = [
        *contract.avatar_ensemble_steps("anna", "synctalk2d")[:-1],  # the audio steps, then anna_from_features:
        *contract.avatar_face_steps("anna"),
    ]
    stages = {name: contract.stage_of(name) for name, _, _ in steps}
    assert stages == {
        contract.INPUT_VALIDATOR_MODEL: "validation_ms",
        contract.SYNCTALK2D_AUDIO_FEATURES_MODEL: "audio_processing_ms",
        contract.SYNCTALK2D_AUDIO_ENCODER_MODEL: "audio_processing_ms",
        "anna_synctalk": "inference_time_ms",
        "anna_background": "composite_time_ms",
        contract.FRAME_PASTE_MODEL: "composite_time_ms",
        "anna_jpeg_encoder": "composite_time_ms",
    }
    own = contract.avatar_models("anna", own_audio_encoder=True)
    for encoder in (own["audio_encoder"], own["window_encoder"], contract.SYNCTALK2D_WINDOW_ENCODER_MODEL):
        assert contract.stage_of(encoder) == "audio_processing_ms"

"""Paste-back geometry (the avatars' compositing) and avatar assets: what lands where."""

import json

import cv2
import imageio_ffmpeg
import numpy as np
import pytest

from synctalk_client import synthetic
from synctalk_common.face_geometry import check_boxes, crop_faces, visual_inputs
from synctalk_common.frames import read_boxes, read_frames
from synctalk_preprocessing.avatar import AvatarAssets
from synctalk_preprocessing.compositing import face_to_rgb8, paste_faces


def backgrounds(n=3, h=90, w=160):
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def faces(n=3):
    return synthetic.face_crops(n)


def test_face_replaces_exactly_its_box_and_nothing_else():
    bg = backgrounds()
    boxes = np.array([[10, 5, 74, 69], [0, 0, 160, 90], [120, 50, 160, 90]])  # square, whole frame, corner
    out = paste_faces(faces(), bg, boxes)
    assert out.shape == bg.shape and out.dtype == np.uint8
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        inside = np.zeros(bg.shape[1:3], bool)
        inside[y0:y1, x0:x1] = True
        assert np.array_equal(out[i][~inside], bg[i][~inside]), "pixels outside the box are the background's"
        # SyncTalk_2D's paste-back: the box at 328 (bicubic), the prediction (x255, truncated) in
        # its inner 320, the 328 crop (its own border kept) back to the box (bicubic)
        crop = cv2.resize(bg[i, y0:y1, x0:x1], (328, 328), interpolation=cv2.INTER_CUBIC)
        border = crop.copy()
        crop[4:324, 4:324] = (faces()[i].transpose(1, 2, 0) * 255).astype(np.uint8)[..., ::-1]
        expected = cv2.resize(crop, (x1 - x0, y1 - y0), interpolation=cv2.INTER_CUBIC)
        assert np.array_equal(out[i, y0:y1, x0:x1], expected), "the box holds the face pasted through the 328 crop"
        wrong = cv2.resize(face_to_rgb8(faces()[i : i + 1])[0], (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
        assert not np.array_equal(out[i, y0:y1, x0:x1], wrong), "not the face resized straight to the box"
        assert np.array_equal(border[:4], crop[:4]), "the 328 crop keeps the frame's own border"
    assert not np.shares_memory(out, bg)


def test_non_square_box_keeps_the_face_centre_at_the_box_centre():
    face = np.zeros((1, 3, 320, 320), np.float32)
    face[:, :, 150:170, 150:170] = 1.0  # a white dot in the middle of the face
    out = paste_faces(face, np.zeros((1, 100, 200, 3), np.uint8), [[40, 20, 140, 70]])  # 100 x 50 box
    ys, xs = np.nonzero(out[0, :, :, 0] > 128)
    assert abs(xs.mean() - 89.5) < 1 and abs(ys.mean() - 44.5) < 1


@pytest.mark.parametrize(
    "box,problem",
    [([0, 0, 0, 10], "empty"), ([-1, 0, 10, 10], "outside"), ([0, 0, 161, 10], "outside"), ([5, 9, 10, 91], "outside")],
)
def test_boxes_outside_the_frame_or_empty_are_refused(box, problem):
    with pytest.raises(ValueError, match=r"crop box 0 .* is empty or outside the 160x90 frame"):
        check_boxes([box], 160, 90)


def test_face_inputs_are_the_inner_320_of_the_bicubic_328_crop_and_its_masked_copy():
    bg = backgrounds(2)
    boxes = np.array([[20, 10, 100, 90], [61, 3, 140, 82]])
    visual = visual_inputs(bg, boxes)
    assert visual.shape == (2, 6, 320, 320) and visual.dtype == np.float32
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        crop = cv2.resize(bg[i, y0:y1, x0:x1][..., ::-1], (328, 328), interpolation=cv2.INTER_CUBIC)[4:324, 4:324]
        masked = cv2.rectangle(crop.copy(), (5, 5, 310, 305), (0, 0, 0), -1)  # upstream's mask, drawn by OpenCV
        np.testing.assert_array_equal(visual[i, :3], crop.transpose(2, 0, 1).astype(np.float32) / 255.0)
        np.testing.assert_array_equal(visual[i, 3:], masked.transpose(2, 0, 1).astype(np.float32) / 255.0)
    straight = cv2.resize(bg[0, 10:90, 20:100][..., ::-1], (320, 320), interpolation=cv2.INTER_CUBIC)
    assert np.abs(visual[0, :3] - straight.transpose(2, 0, 1) / 255.0).mean() > 0.01, "not the box straight to 320"


def test_crop_of_the_pasted_frame_gives_the_face_back():
    bg = backgrounds(2)
    boxes = np.array([[20, 10, 100, 90], [60, 0, 140, 80]])
    face = faces(2)
    crops = crop_faces(paste_faces(face, bg, boxes), boxes)
    assert crops.shape == (2, 3, 320, 320) and crops.dtype == np.float32
    assert np.abs(crops - face).mean() < 0.03  # 320 -> 80 -> 320: blurred, same picture


def test_assets_from_a_video_and_a_folder_agree_and_round_trip(tmp_path):
    frames, boxes = synthetic.avatar_background(4, 160, 96, face=48)
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"{i:03d}.png"), frame[..., ::-1])
    video = tmp_path / "bg.mp4"
    writer = imageio_ffmpeg.write_frames(
        str(video), (160, 96), fps=25, quality=10, macro_block_size=8, ffmpeg_log_level="error"
    )
    writer.send(None)
    for frame in frames:
        writer.send(frame)
    writer.close()
    (tmp_path / "boxes.json").write_text(json.dumps(boxes.tolist()))
    np.savetxt(tmp_path / "boxes.txt", boxes)
    assert np.array_equal(read_frames(folder), frames)
    assert np.abs(read_frames(video).astype(int) - frames).mean() < 4  # H.264 at quality 10
    assert np.array_equal(read_boxes(tmp_path / "boxes.json"), read_boxes(tmp_path / "boxes.txt"))

    assets = AvatarAssets.from_files("anna", folder, tmp_path / "boxes.json", jpeg_quality=90)
    assert (assets.n_frames, assets.width, assets.height) == (4, 160, 96)
    assets.save(tmp_path / "store")
    loaded = AvatarAssets.load(tmp_path / "store")
    assert np.array_equal(loaded.boxes, boxes) and loaded.jpeg_quality == 90
    assert np.array_equal(loaded.backgrounds, frames), "the frames reach the model bit-exact"
    for i in range(4):  # image files are kept as given: their bytes, not a re-encode
        assert (tmp_path / "store" / "backgrounds" / f"{i:06d}.png").read_bytes() == (
            folder / f"{i:03d}.png"
        ).read_bytes()
    from_video = AvatarAssets.from_files("anna", video, tmp_path / "boxes.json")
    from_video.save(tmp_path / "video-store")  # decoded once, stored losslessly (PNG)
    assert np.array_equal(AvatarAssets.load(tmp_path / "video-store").backgrounds, from_video.backgrounds)


def test_jpeg_frames_are_stored_as_given_and_read_in_natural_order(tmp_path):
    """SyncTalk_2D's full_body_img/ holds 0.jpg, 1.jpg, .., 10.jpg: frame 10 is the eleventh."""
    frames = backgrounds(12, 40, 64)
    folder = tmp_path / "full_body_img"
    folder.mkdir()
    for i, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"{i}.jpg"), frame[..., ::-1])
    assets = AvatarAssets.from_files("anna", folder, [0, 0, 32, 32])
    decoded = np.stack([cv2.imread(str(folder / f"{i}.jpg"))[..., ::-1] for i in range(12)])
    assert np.array_equal(assets.backgrounds, decoded), "natural order, decoded as cv2.imread decodes"
    assets.save(tmp_path / "store")
    assert (tmp_path / "store" / "backgrounds" / "000010.jpg").read_bytes() == (folder / "10.jpg").read_bytes()
    assert np.array_equal(AvatarAssets.load(tmp_path / "store").backgrounds, decoded)


def test_boxes_from_synctalk2d_landmarks(tmp_path):
    """xmin = lms[1].x, xmax = lms[31].x, ymin = lms[52].y, ymax = ymin + width (int32 first)."""
    folder = tmp_path / "landmarks"
    folder.mkdir()
    rng = np.random.default_rng(3)
    expected = []
    for i in range(11):
        lms = rng.uniform(0, 50, (110, 2)).astype(np.float32)
        lms[1, 0], lms[31, 0], lms[52, 1] = 10.7 + i, 70.2 + i, 20.9
        np.savetxt(folder / f"{i}.lms", lms, fmt="%.3f")
        expected.append([10 + i, 20, 70 + i, 80])
    assert read_boxes(folder).tolist() == expected
    assert read_boxes(folder, (70, 200))[0].tolist() == [10, 20, 70, 70], "clipped to the frame as slicing does"


def test_resizing_the_backgrounds_scales_the_boxes():
    frames, _ = synthetic.avatar_background(2, 200, 100, face=40)
    assets = AvatarAssets("a", frames, [20, 10, 60, 50]).resized(400, 200)
    assert assets.backgrounds.shape == (2, 200, 400, 3)
    assert assets.boxes.tolist() == [[40, 20, 120, 100]] * 2


def test_one_box_for_all_frames_or_one_per_frame():
    frames = backgrounds(3)
    assert AvatarAssets("a", frames, [1, 2, 30, 40]).boxes.shape == (3, 4)
    with pytest.raises(ValueError, match="2 crop boxes for 3 background frames"):
        AvatarAssets("a", frames, [[1, 2, 30, 40]] * 2)
    with pytest.raises(ValueError, match="jpeg quality"):
        AvatarAssets("a", frames, [1, 2, 30, 40], jpeg_quality=0)

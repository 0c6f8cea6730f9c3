"""Reading an avatar's frames and face boxes: a video or a folder of images, and boxes from a
file or SyncTalk_2D's ``landmarks/`` folder (``inference_328.py``'s box from each frame's
landmarks). The server's avatar tools and the client's ``render --frames --boxes`` read them
the same way. OpenCV and imageio-ffmpeg (the ``render`` extra) are imported where they are used.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
LANDMARK_SUFFIX = ".lms"


def natural_key(path: Path):
    """``frame2.png`` before ``frame10.png``: numbers in names compare as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def image_files(folder: Path, suffixes: Sequence[str] = IMAGE_SUFFIXES) -> list[Path]:
    """The folder's files with ``suffixes``, in natural order (``0.jpg, 1.jpg, 2.jpg, .., 10.jpg``)."""
    files = sorted((p for p in Path(folder).iterdir() if p.suffix.lower() in suffixes), key=natural_key)
    if not files:
        raise ValueError(f"no {', '.join(suffixes)} files in {folder}")
    return files


def read_image(path: Path) -> np.ndarray:
    """An image file -> [H, W, 3] uint8 RGB, decoded by OpenCV (as SyncTalk_2D reads its frames)."""
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"cannot read image {path}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_frames(source: Path, max_frames: int | None = None) -> np.ndarray:
    """A video file (any format ffmpeg reads) or a folder of images -> [N, H, W, 3] uint8 RGB."""
    if source.is_dir():
        frames = [read_image(f) for f in image_files(source)[:max_frames]]
        if len({f.shape for f in frames}) != 1:
            raise ValueError(f"the images in {source} differ in size")
        return np.stack(frames)
    if not source.is_file():
        raise FileNotFoundError(f"background {source} not found")
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(source), pix_fmt="rgb24")
    meta = next(reader)
    width, height = meta["size"]
    frames = []
    for raw in reader:
        frames.append(np.frombuffer(raw, dtype=np.uint8).reshape(height, width, 3))
        if max_frames is not None and len(frames) >= max_frames:
            reader.close()
            break
    if not frames:
        raise ValueError(f"no video frames in {source}")
    return np.stack(frames)


def landmark_box(landmarks: np.ndarray, frame_hw: tuple[int, int] | None = None) -> list[int]:
    """SyncTalk_2D's face box from one frame's landmarks (``inference_328.py``): xmin = lms[1].x,
    xmax = lms[31].x, ymin = lms[52].y, ymax = ymin + (xmax - xmin), after the landmarks are cast
    to int32; clipped to the frame as NumPy's slicing clips ``img[ymin:ymax, xmin:xmax]``."""
    lms = np.asarray(landmarks, dtype=np.float32).astype(np.int32)
    xmin, xmax, ymin = int(lms[1][0]), int(lms[31][0]), int(lms[52][1])
    box = [xmin, ymin, xmax, ymin + (xmax - xmin)]
    if frame_hw is not None:
        height, width = frame_hw
        box = [min(max(box[0], 0), width), min(max(box[1], 0), height), min(box[2], width), min(box[3], height)]
    return box


def read_landmark_boxes(folder: Path, frame_hw: tuple[int, int] | None = None) -> np.ndarray:
    """[N, 4] boxes from a folder of SyncTalk_2D ``.lms`` files (one "x y" line per landmark),
    in natural order (``0.lms, 1.lms, ..``: the frames' order)."""
    boxes = []
    for path in image_files(folder, (LANDMARK_SUFFIX,)):
        boxes.append(landmark_box(np.loadtxt(path, dtype=np.float32, ndmin=2), frame_hw))
    return np.asarray(boxes, dtype=np.int64)


def read_boxes(path: str | Path, frame_hw: tuple[int, int] | None = None) -> np.ndarray:
    """Crop boxes from ``.json`` ([[x0,y0,x1,y1], ...] or one box), ``.npy``, text (4 numbers a
    line) or a folder of SyncTalk_2D landmark files (``frame_hw`` clips their boxes to the frame)."""
    path = Path(path)
    if path.is_dir():
        return read_landmark_boxes(path, frame_hw).astype(np.float64)
    if path.suffix == ".json":
        return np.asarray(json.loads(path.read_text()), dtype=np.float64).reshape(-1, 4)
    if path.suffix == ".npy":
        return np.load(path).astype(np.float64).reshape(-1, 4)
    return np.loadtxt(path, dtype=np.float64, ndmin=2).reshape(-1, 4)

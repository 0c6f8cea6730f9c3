"""An avatar's compositing assets: background frames and one crop rectangle per frame.

Stored in one folder (the ``<id>_background`` model's version folder)::

    avatar.json          id, frame size, n_frames, frame files, crop boxes, JPEG quality, source
    backgrounds/000000.png ...   the background frames, never re-encoded lossily

The frames reach the generator bit-exact: image files are stored as given (their bytes copied,
decoded by OpenCV as SyncTalk_2D's ``cv2.imread`` decodes them); frames decoded from a video or
resized are stored as PNG. (A JPEG round trip of the frames alone costs about 16 dB of face-box
PSNR against SyncTalk_2D's own inference.)

Backgrounds come from a video file (decoded with the ffmpeg of ``imageio-ffmpeg``) or a folder of
images in natural order (``0.jpg, 1.jpg, .., 10.jpg``: SyncTalk_2D's ``full_body_img/``). Crop
boxes are ``[xmin, ymin, xmax, ymax]`` in background pixels, max exclusive: one per frame, or one
for every frame; from a JSON list, a ``.npy`` array, a text file with four numbers per line, or a
folder of SyncTalk_2D landmark files (``landmarks/*.lms``, boxes as its inference makes them).
Resizing the backgrounds to an output size scales the boxes.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from synctalk_common import contract
from synctalk_common.face_geometry import check_boxes
from synctalk_common.frames import image_files, read_boxes, read_frames, read_image

MANIFEST = "avatar.json"
BACKGROUNDS = "backgrounds"


@dataclass
class AvatarAssets:
    avatar_id: str
    backgrounds: np.ndarray  # [N, H, W, 3] uint8 RGB
    boxes: np.ndarray  # [N, 4] int32
    jpeg_quality: int = contract.JPEG_QUALITY
    source: dict = field(default_factory=dict)
    files: list[Path] | None = None  # the image files the frames were read from (stored as given)

    def __post_init__(self):
        self.backgrounds = np.asarray(self.backgrounds, dtype=np.uint8)
        if self.backgrounds.ndim != 4 or self.backgrounds.shape[-1] != 3 or self.backgrounds.shape[0] == 0:
            raise ValueError(
                f"backgrounds must be [n_frames, height, width, 3] RGB, got shape {list(self.backgrounds.shape)}"
            )
        boxes = np.asarray(self.boxes)
        if boxes.ndim == 1:
            boxes = boxes[None]
        if boxes.shape[0] == 1 and self.n_frames > 1:
            boxes = np.repeat(boxes, self.n_frames, axis=0)
        if boxes.shape[0] != self.n_frames:
            raise ValueError(
                f"{boxes.shape[0]} crop boxes for {self.n_frames} background frames (give one per frame, or one "
                "for all)"
            )
        self.boxes = check_boxes(boxes, self.width, self.height)
        if not 1 <= int(self.jpeg_quality) <= 100:
            raise ValueError(f"jpeg quality must be 1..100, got {self.jpeg_quality}")

    @property
    def n_frames(self) -> int:
        return int(self.backgrounds.shape[0])

    @property
    def height(self) -> int:
        return int(self.backgrounds.shape[1])

    @property
    def width(self) -> int:
        return int(self.backgrounds.shape[2])

    # -- building from user files ---------------------------------------------------------------
    @classmethod
    def from_files(
        cls,
        avatar_id: str,
        background: Path,
        boxes: Path | Sequence[int],
        size: tuple[int, int] | None = None,
        max_frames: int | None = None,
        jpeg_quality: int = contract.JPEG_QUALITY,
    ) -> AvatarAssets:
        """Backgrounds from a video or an image folder, boxes from a file or one ``[x0,y0,x1,y1]``;
        ``size`` = (width, height) resizes both."""
        background = Path(background)
        files = image_files(background)[:max_frames] if background.is_dir() else None
        frames = read_frames(background, max_frames)
        box_array = read_boxes(boxes, frames.shape[1:3]) if isinstance(boxes, (str, Path)) else np.asarray(boxes)
        box_array = np.asarray(box_array, dtype=np.float64).reshape(-1, 4)
        if box_array.shape[0] > 1 and max_frames is not None:
            box_array = box_array[: len(frames)]
        assets = cls(
            avatar_id, frames, box_array.round().astype(np.int64), jpeg_quality, {"background": str(background)}, files
        )
        return assets.resized(*size) if size else assets

    def resized(self, width: int, height: int) -> AvatarAssets:
        """Backgrounds resized to ``width`` x ``height`` (area interpolation), boxes scaled with them."""
        import cv2

        if (width, height) == (self.width, self.height):
            return self
        interp = cv2.INTER_AREA if width < self.width else cv2.INTER_LINEAR
        frames = np.stack([cv2.resize(f, (width, height), interpolation=interp) for f in self.backgrounds])
        scale = np.array([width / self.width, height / self.height] * 2)
        boxes = np.round(self.boxes * scale).astype(np.int64)
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        return AvatarAssets(
            self.avatar_id, frames, boxes, self.jpeg_quality, dict(self.source, resized_from=[self.width, self.height])
        )

    # -- the stored form ------------------------------------------------------------------------
    def manifest(self, frame_files: list[str] | None = None) -> dict:
        manifest = {
            "id": self.avatar_id,
            "width": self.width,
            "height": self.height,
            "n_frames": self.n_frames,
            "jpeg_quality": int(self.jpeg_quality),
            "boxes": self.boxes.tolist(),
            "source": self.source,
        }
        if frame_files is not None:
            manifest["frames"] = frame_files
        return manifest

    def save(self, folder: Path) -> Path:
        """The frames without a lossy re-encode: the source image files copied as given, or PNG."""
        import cv2

        folder = Path(folder)
        (folder / BACKGROUNDS).mkdir(parents=True, exist_ok=True)
        names = []
        for i, frame in enumerate(self.backgrounds):
            if self.files is not None:
                name = f"{i:06d}{self.files[i].suffix.lower()}"
                shutil.copyfile(self.files[i], folder / BACKGROUNDS / name)
            else:
                name = f"{i:06d}.png"
                if not cv2.imwrite(
                    str(folder / BACKGROUNDS / name),
                    np.ascontiguousarray(frame[..., ::-1]),
                    [cv2.IMWRITE_PNG_COMPRESSION, 1],
                ):
                    raise OSError(f"cannot write {folder / BACKGROUNDS / name}")
            names.append(name)
        (folder / MANIFEST).write_text(json.dumps(self.manifest(names), indent=1) + "\n")
        return folder

    @classmethod
    def load(cls, folder: Path) -> AvatarAssets:
        folder = Path(folder)
        manifest = read_manifest(folder)
        names = manifest.get("frames") or [f"{i:06d}.jpg" for i in range(manifest["n_frames"])]
        files = [folder / BACKGROUNDS / name for name in names]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise FileNotFoundError(
                f"avatar {manifest['id']}: {len(missing)} background frames missing in {folder / BACKGROUNDS} "
                f"(first {missing[0]})"
            )
        frames = np.stack([read_image(f) for f in files])
        return cls(
            manifest["id"],
            frames,
            np.asarray(manifest["boxes"]),
            manifest["jpeg_quality"],
            manifest.get("source", {}),
            files,
        )


def read_manifest(folder: Path) -> dict:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"no {MANIFEST} in {folder}")
    return json.loads(path.read_text())

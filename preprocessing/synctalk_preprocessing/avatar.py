"""An avatar's compositing assets: background frames and one crop rectangle per frame.

Stored in one folder (the ``<id>_background`` model's version folder)::

    avatar.json          id, frame size, n_frames, crop boxes, JPEG quality, where it came from
    backgrounds/000000.jpg ...   the background frames, RGB, JPEG quality 95 4:4:4

Backgrounds come from a video file (decoded with the ffmpeg of ``imageio-ffmpeg``) or a folder of
images (sorted by name). Crop boxes are ``[xmin, ymin, xmax, ymax]`` in background pixels, max
exclusive: one per frame, or one for every frame; from a JSON list, a ``.npy`` array or a text
file with four numbers per line. Resizing the backgrounds to an output size scales the boxes.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import numpy as np

from synctalk_client import contract
from synctalk_preprocessing.compositing import check_boxes

MANIFEST = "avatar.json"
BACKGROUNDS = "backgrounds"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
STORE_QUALITY = 95


@dataclass
class AvatarAssets:
    avatar_id: str
    backgrounds: np.ndarray  # [N, H, W, 3] uint8 RGB
    boxes: np.ndarray  # [N, 4] int32
    jpeg_quality: int = contract.JPEG_QUALITY
    source: dict = field(default_factory=dict)

    def __post_init__(self):
        self.backgrounds = np.asarray(self.backgrounds, dtype=np.uint8)
        if self.backgrounds.ndim != 4 or self.backgrounds.shape[-1] != 3 or self.backgrounds.shape[0] == 0:
            raise ValueError(f"backgrounds must be [n_frames, height, width, 3] RGB, got shape {list(self.backgrounds.shape)}")
        boxes = np.asarray(self.boxes)
        if boxes.ndim == 1:
            boxes = boxes[None]
        if boxes.shape[0] == 1 and self.n_frames > 1:
            boxes = np.repeat(boxes, self.n_frames, axis=0)
        if boxes.shape[0] != self.n_frames:
            raise ValueError(f"{boxes.shape[0]} crop boxes for {self.n_frames} background frames (give one per frame, or one for all)")
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
        boxes: Union[Path, Sequence[int]],
        size: Optional[Tuple[int, int]] = None,
        max_frames: Optional[int] = None,
        jpeg_quality: int = contract.JPEG_QUALITY,
    ) -> "AvatarAssets":
        """Backgrounds from a video or an image folder, boxes from a file or one ``[x0,y0,x1,y1]``;
        ``size`` = (width, height) resizes both."""
        frames = read_frames(Path(background), max_frames)
        box_array = read_boxes(boxes) if isinstance(boxes, (str, Path)) else np.asarray(boxes)
        box_array = np.asarray(box_array, dtype=np.float64).reshape(-1, 4)
        if box_array.shape[0] > 1 and max_frames is not None:
            box_array = box_array[: len(frames)]
        assets = cls(avatar_id, frames, box_array.round().astype(np.int64), jpeg_quality, {"background": str(background)})
        return assets.resized(*size) if size else assets

    def resized(self, width: int, height: int) -> "AvatarAssets":
        """Backgrounds resized to ``width`` x ``height`` (area interpolation), boxes scaled with them."""
        import cv2

        if (width, height) == (self.width, self.height):
            return self
        interp = cv2.INTER_AREA if width < self.width else cv2.INTER_LINEAR
        frames = np.stack([cv2.resize(f, (width, height), interpolation=interp) for f in self.backgrounds])
        scale = np.array([width / self.width, height / self.height] * 2)
        boxes = np.round(self.boxes * scale).astype(np.int64)
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        return AvatarAssets(self.avatar_id, frames, boxes, self.jpeg_quality, dict(self.source, resized_from=[self.width, self.height]))

    # -- the stored form ------------------------------------------------------------------------
    def manifest(self) -> dict:
        return {
            "id": self.avatar_id,
            "width": self.width,
            "height": self.height,
            "n_frames": self.n_frames,
            "jpeg_quality": int(self.jpeg_quality),
            "boxes": self.boxes.tolist(),
            "source": self.source,
        }

    def save(self, folder: Path) -> Path:
        import simplejpeg

        folder = Path(folder)
        (folder / BACKGROUNDS).mkdir(parents=True, exist_ok=True)
        for i, frame in enumerate(self.backgrounds):
            jpeg = simplejpeg.encode_jpeg(np.ascontiguousarray(frame), quality=STORE_QUALITY, colorspace="RGB", colorsubsampling="444")
            (folder / BACKGROUNDS / f"{i:06d}.jpg").write_bytes(jpeg)
        (folder / MANIFEST).write_text(json.dumps(self.manifest(), indent=1) + "\n")
        return folder

    @classmethod
    def load(cls, folder: Path) -> "AvatarAssets":
        import simplejpeg

        folder = Path(folder)
        manifest = read_manifest(folder)
        files = [folder / BACKGROUNDS / f"{i:06d}.jpg" for i in range(manifest["n_frames"])]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise FileNotFoundError(f"avatar {manifest['id']}: {len(missing)} background frames missing in {folder / BACKGROUNDS} (first {missing[0]})")
        frames = np.stack([simplejpeg.decode_jpeg(f.read_bytes(), colorspace="RGB") for f in files])
        return cls(manifest["id"], frames, np.asarray(manifest["boxes"]), manifest["jpeg_quality"], manifest.get("source", {}))


def read_manifest(folder: Path) -> dict:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"no {MANIFEST} in {folder}")
    return json.loads(path.read_text())


def read_frames(source: Path, max_frames: Optional[int] = None) -> np.ndarray:
    """A video file (any format ffmpeg reads) or a folder of images -> [N, H, W, 3] uint8 RGB."""
    if source.is_dir():
        import cv2

        files = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:max_frames]
        if not files:
            raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {source}")
        frames = []
        for f in files:
            image = cv2.imread(str(f), cv2.IMREAD_COLOR)
            if image is None:
                raise ValueError(f"cannot read image {f}")
            frames.append(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
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


def read_boxes(path: Union[str, Path]) -> np.ndarray:
    """Crop boxes from ``.json`` ([[x0,y0,x1,y1], ...] or one box), ``.npy`` or text (4 numbers a line)."""
    path = Path(path)
    if path.suffix == ".json":
        return np.asarray(json.loads(path.read_text()), dtype=np.float64).reshape(-1, 4)
    if path.suffix == ".npy":
        return np.load(path).astype(np.float64).reshape(-1, 4)
    return np.loadtxt(path, dtype=np.float64, ndmin=2).reshape(-1, 4)

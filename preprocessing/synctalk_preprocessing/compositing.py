"""Compositor maths: generated BGR face -> RGB 8-bit -> bilinear 1920x1080 -> JPEG (the
reference ensemble), and SyncTalk_2D's face crop, mask and paste-back (avatars).

The same steps run on the GPU in the production DALI pipelines (``frame_resize``,
``frame_paste``); this is the CPU implementation (OpenCV, libjpeg-turbo) used by the CPU profile,
by the client to cut an avatar's face inputs, and by the tests as the reference for DALI.

The reference ensemble's order of operations (identical in both profiles): BGR->RGB, x255, round,
clamp to [0, 255] and cast to uint8 at 320x320, then a bilinear (half-pixel centres, no
antialiasing) resize of the uint8 image to the output size. Avatars follow SyncTalk_2D instead
(``paste_faces``): truncation to uint8, bicubic resizes through the 328 crop.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from synctalk_client import contract


def face_to_rgb8(face_bgr: np.ndarray) -> np.ndarray:
    """[B, 3, H, W] float BGR in [0, 1] -> [B, H, W, 3] uint8 RGB (NaN -> 0), in one float buffer."""
    rgb = np.asarray(face_bgr, dtype=np.float32)[:, ::-1].transpose(0, 2, 3, 1) * np.float32(255.0)
    np.nan_to_num(rgb, copy=False, nan=0.0, posinf=255.0, neginf=0.0)
    np.clip(rgb, 0, 255, out=rgb)
    np.rint(rgb, out=rgb)
    return rgb.astype(np.uint8)


def resize_frames(
    rgb8: np.ndarray, width: int = contract.OUTPUT_WIDTH, height: int = contract.OUTPUT_HEIGHT
) -> np.ndarray:
    """[B, h, w, 3] uint8 -> [B, height, width, 3] uint8, bilinear."""
    import cv2

    out = np.empty((rgb8.shape[0], height, width, 3), dtype=np.uint8)
    for i, frame in enumerate(rgb8):
        cv2.resize(frame, (width, height), dst=out[i], interpolation=cv2.INTER_LINEAR)
    return out


def composite_frames(
    face_bgr: np.ndarray, width: int = contract.OUTPUT_WIDTH, height: int = contract.OUTPUT_HEIGHT
) -> np.ndarray:
    """Generated faces [B, 3, 320, 320] -> full frames [B, height, width, 3] uint8 RGB."""
    return resize_frames(face_to_rgb8(face_bgr), width, height)


class CpuJpegEncoder:
    """libjpeg-turbo (simplejpeg) encoder; frames are encoded on a small thread pool
    (simplejpeg releases the GIL while it encodes)."""

    def __init__(
        self, quality: int = contract.JPEG_QUALITY, subsampling: str = contract.JPEG_SUBSAMPLING, threads: int = 2
    ):
        self.quality = int(quality)
        self.subsampling = subsampling
        self._pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="jpeg")

    def encode_one(self, frame_rgb8: np.ndarray) -> bytes:
        import simplejpeg

        return simplejpeg.encode_jpeg(
            np.ascontiguousarray(frame_rgb8), quality=self.quality, colorspace="RGB", colorsubsampling=self.subsampling
        )

    def encode(self, frames_rgb8: Sequence[np.ndarray]) -> list[bytes]:
        if len(frames_rgb8) == 1:
            return [self.encode_one(frames_rgb8[0])]
        return list(self._pool.map(self.encode_one, frames_rgb8))

    def close(self) -> None:
        self._pool.shutdown(wait=False)


# --- paste-back (avatars) ------------------------------------------------------------------------
def check_boxes(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """[N, 4] crop rectangles (xmin, ymin, xmax, ymax; max exclusive) -> int32, or ValueError
    naming the first rectangle that is empty or leaves the ``width`` x ``height`` frame."""
    boxes = np.asarray(boxes)
    if boxes.ndim != 2 or boxes.shape[1] != 4 or boxes.shape[0] == 0:
        raise ValueError(f"crop boxes must be [n_frames, 4] (xmin, ymin, xmax, ymax), got shape {list(boxes.shape)}")
    if not np.issubdtype(boxes.dtype, np.integer):
        if not np.all(np.isfinite(boxes)) or np.any(boxes != np.round(boxes)):
            raise ValueError("crop boxes must be whole pixel coordinates")
    b = boxes.astype(np.int64)
    bad = (
        (b[:, 0] < 0)
        | (b[:, 1] < 0)
        | (b[:, 2] > width)
        | (b[:, 3] > height)
        | (b[:, 2] <= b[:, 0])
        | (b[:, 3] <= b[:, 1])
    )
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"crop box {i} {b[i].tolist()} is empty or outside the {width}x{height} frame")
    return b.astype(np.int32)


def face_crop(frame_rgb8: np.ndarray, box) -> np.ndarray:
    """SyncTalk_2D's face crop: the box of ``frame_rgb8`` [H, W, 3] uint8 resized to 328 x 328
    with ``cv2.INTER_CUBIC`` -> [328, 328, 3] uint8 (the generator sees its inner 320 x 320)."""
    import cv2

    x0, y0, x1, y1 = (int(v) for v in box)
    size = contract.FACE_CROP_SIZE
    return cv2.resize(np.ascontiguousarray(frame_rgb8[y0:y1, x0:x1]), (size, size), interpolation=cv2.INTER_CUBIC)


def face_inputs(frames_rgb8: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """The generator's face inputs from an avatar's frames, as SyncTalk_2D's inference cuts them,
    before the scaling: each box of ``frames_rgb8`` [n, H, W, 3] -> ``face_crop`` (328, bicubic)
    -> its inner [4:324, 4:324] -> [n, 3, 320, 320] uint8 BGR (what an avatar keeps resident:
    300 KB a frame)."""
    frames_rgb8 = np.asarray(frames_rgb8, dtype=np.uint8)
    boxes = check_boxes(boxes, frames_rgb8.shape[2], frames_rgb8.shape[1])
    lo, hi = contract.FACE_CROP_BORDER, contract.FACE_CROP_BORDER + contract.FACE_SIZE
    out = np.empty((len(frames_rgb8), 3, contract.FACE_SIZE, contract.FACE_SIZE), np.uint8)
    for i, box in enumerate(boxes.tolist()):
        out[i] = face_crop(frames_rgb8[i], box)[lo:hi, lo:hi, ::-1].transpose(2, 0, 1)
    return out


def crop_faces(frames_rgb8: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """``face_inputs`` as the generator sees them: [n, 3, 320, 320] float32 BGR in [0, 1]
    (uint8 / 255). The masked copy, the other half of VISUAL, is ``synthetic.masked`` of these."""
    return face_inputs(frames_rgb8, boxes) / np.float32(255.0)


def visual_from_faces(faces_u8, xp=np):
    """VISUAL [n, 6, 320, 320] float32 from ``face_inputs`` [n, 3, 320, 320] uint8: the faces
    scaled to [0, 1] and their copies with ``contract.FACE_MASK_RECT`` blacked out (SyncTalk_2D's
    ``img_real_ex`` and ``img_masked``). ``xp``: numpy, or cupy for faces resident on a GPU."""
    n = faces_u8.shape[0]
    visual = xp.empty((n, 6, contract.FACE_SIZE, contract.FACE_SIZE), dtype=xp.float32)
    xp.divide(faces_u8, xp.float32(255.0), out=visual[:, :3], dtype=xp.float32)
    visual[:, 3:] = visual[:, :3]
    x, y, w, h = contract.FACE_MASK_RECT
    visual[:, 3:, y : y + h, x : x + w] = 0.0
    return visual


def visual_inputs(frames_rgb8: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """VISUAL [n, 6, 320, 320] of an avatar's frames: the faces and their masked copies (what an
    avatar's server-side step gives an audio-only request)."""
    return visual_from_faces(face_inputs(frames_rgb8, boxes))


def face_to_bgr8_truncated(face_bgr: np.ndarray) -> np.ndarray:
    """[B, 3, H, W] float BGR in [0, 1] -> [B, H, W, 3] uint8 BGR as SyncTalk_2D makes its
    prediction an image: ``x * 255`` truncated (not rounded) to uint8; NaN -> 0, clamped."""
    bgr = np.asarray(face_bgr, dtype=np.float32).transpose(0, 2, 3, 1) * np.float32(255.0)
    np.nan_to_num(bgr, copy=False, nan=0.0, posinf=255.0, neginf=0.0)
    np.clip(bgr, 0, 255, out=bgr)
    return bgr.astype(np.uint8)


def paste_faces(face_bgr: np.ndarray, backgrounds: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Paste-back as SyncTalk_2D's inference does it: generated faces [B, 3, 320, 320] (BGR
    float) into their background frames [B, H, W, 3] uint8 RGB at ``boxes`` [B, 4] (xmin, ymin,
    xmax, ymax, max exclusive).

    Per frame: the box's ``face_crop`` (328, bicubic), its inner [4:324, 4:324] replaced by the
    prediction (``face_to_bgr8_truncated``, to RGB), the 328 crop (with its own 4-pixel border)
    resized back to the box with ``cv2.INTER_CUBIC``, written over the box. The rest of the frame
    is the background, untouched. Returns new [B, H, W, 3] uint8 frames.
    """
    import cv2

    faces = face_to_bgr8_truncated(face_bgr)[..., ::-1]
    backgrounds = np.asarray(backgrounds, dtype=np.uint8)
    height, width = backgrounds.shape[1:3]
    boxes = check_boxes(boxes, width, height)
    lo, hi = contract.FACE_CROP_BORDER, contract.FACE_CROP_BORDER + contract.FACE_SIZE
    out = backgrounds.copy()
    for i, (x0, y0, x1, y1) in enumerate(boxes.tolist()):
        crop = face_crop(backgrounds[i], (x0, y0, x1, y1))
        crop[lo:hi, lo:hi] = faces[i]
        out[i, y0:y1, x0:x1] = cv2.resize(crop, (x1 - x0, y1 - y0), interpolation=cv2.INTER_CUBIC)
    return out

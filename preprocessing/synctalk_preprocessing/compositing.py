"""Compositor maths: generated BGR face -> RGB 8-bit -> bilinear 1920x1080 -> JPEG.

The same steps run on the GPU in the production ``frame_resize`` DALI pipeline; this is the CPU
implementation (OpenCV resize, libjpeg-turbo encode) used by the CPU profile and by the tests as
the reference for the DALI pipeline.

Order of operations (identical in both profiles): BGR->RGB, x255, round, clamp to [0, 255] and
cast to uint8 at 320x320, then a bilinear (half-pixel centres, no antialiasing) resize of the
uint8 image to the output size.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import List, Sequence

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


def composite_frames(face_bgr: np.ndarray, width: int = contract.OUTPUT_WIDTH, height: int = contract.OUTPUT_HEIGHT) -> np.ndarray:
    """Generated faces [B, 3, 320, 320] -> full frames [B, height, width, 3] uint8 RGB."""
    return resize_frames(face_to_rgb8(face_bgr), width, height)


class CpuJpegEncoder:
    """libjpeg-turbo (simplejpeg) encoder; frames are encoded on a small thread pool
    (simplejpeg releases the GIL while it encodes)."""

    def __init__(self, quality: int = contract.JPEG_QUALITY, subsampling: str = contract.JPEG_SUBSAMPLING, threads: int = 2):
        self.quality = int(quality)
        self.subsampling = subsampling
        self._pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="jpeg")

    def encode_one(self, frame_rgb8: np.ndarray) -> bytes:
        import simplejpeg

        return simplejpeg.encode_jpeg(
            np.ascontiguousarray(frame_rgb8), quality=self.quality, colorspace="RGB", colorsubsampling=self.subsampling
        )

    def encode(self, frames_rgb8: Sequence[np.ndarray]) -> List[bytes]:
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
    bad = (b[:, 0] < 0) | (b[:, 1] < 0) | (b[:, 2] > width) | (b[:, 3] > height) | (b[:, 2] <= b[:, 0]) | (b[:, 3] <= b[:, 1])
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"crop box {i} {b[i].tolist()} is empty or outside the {width}x{height} frame")
    return b.astype(np.int32)


def crop_faces(frames_rgb8: np.ndarray, boxes: np.ndarray, size: int = contract.FACE_SIZE) -> np.ndarray:
    """The generator's face crops from an avatar's frames: each box of ``frames_rgb8``
    [n, H, W, 3] resized to ``size`` x ``size`` -> [n, 3, size, size] float32 BGR in [0, 1]
    (the inverse of ``paste_faces``'s geometry)."""
    import cv2

    frames_rgb8 = np.asarray(frames_rgb8, dtype=np.uint8)
    boxes = check_boxes(boxes, frames_rgb8.shape[2], frames_rgb8.shape[1])
    out = np.empty((len(frames_rgb8), 3, size, size), np.float32)
    for i, (x0, y0, x1, y1) in enumerate(boxes.tolist()):
        face = cv2.resize(frames_rgb8[i, y0:y1, x0:x1], (size, size), interpolation=cv2.INTER_AREA)
        out[i] = face[..., ::-1].transpose(2, 0, 1) / np.float32(255.0)
    return out


def paste_faces(face_bgr: np.ndarray, backgrounds: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Paste-back: generated faces [B, 3, 320, 320] (BGR float) into their backgrounds.

    ``backgrounds`` [B, H, W, 3] uint8 RGB (this batch's background frames), ``boxes`` [B, 4]
    (xmin, ymin, xmax, ymax, max exclusive). Each face becomes RGB uint8 at 320x320 (as in
    ``face_to_rgb8``), is resized bilinearly to its box and replaces the box's pixels; the rest of
    the frame is the background, untouched. Returns new [B, H, W, 3] uint8 frames.
    """
    import cv2

    faces = face_to_rgb8(face_bgr)
    backgrounds = np.asarray(backgrounds, dtype=np.uint8)
    height, width = backgrounds.shape[1:3]
    boxes = check_boxes(boxes, width, height)
    out = backgrounds.copy()
    for i, (x0, y0, x1, y1) in enumerate(boxes.tolist()):
        out[i, y0:y1, x0:x1] = cv2.resize(faces[i], (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
    return out

"""Compositor maths: generated BGR face -> RGB 8-bit -> bilinear 1920x1080 -> JPEG (the
reference ensemble), and SyncTalk_2D's face crop, mask and paste-back (avatars).

The same steps run on the GPU in the production DALI pipelines (``frame_resize``,
``frame_paste``); this is the CPU implementation (OpenCV, libjpeg-turbo) used by the CPU profile,
and by the tests as the reference for DALI. The face crop and mask are the client's
(``synctalk_common.face_geometry``): every caller of the reference model cuts them.

The reference ensemble's order of operations (identical in both profiles): BGR->RGB, x255, round,
clamp to [0, 255] and cast to uint8 at 320x320, then a bilinear (half-pixel centres, no
antialiasing) resize of the uint8 image to the output size. Avatars follow SyncTalk_2D instead
(``paste_faces``): truncation to uint8, bicubic resizes through the 328 crop.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from synctalk_common import contract
from synctalk_common.face_geometry import check_boxes, face_crop


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

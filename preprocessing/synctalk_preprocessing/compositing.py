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

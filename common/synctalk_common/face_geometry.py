"""SyncTalk_2D's face geometry, as every caller of the reference model must cut its inputs.

A frame's face box ``[xmin, ymin, xmax, ymax]`` (max exclusive) is resized to 328 x 328
(bicubic); the generator sees its inner [4:324, 4:324] (BGR, / 255) and a copy with
``contract.FACE_MASK_RECT`` blacked out: VISUAL's two halves. The server's avatar step cuts an
avatar's faces with these functions once at load; a client that sends crops (``render --frames
--boxes``) cuts them with the same ones, so both give the same JPEG bytes. The paste back into
the frame (server side) is ``synctalk_preprocessing.compositing.paste_faces``.

OpenCV (``opencv-python-headless``, the ``render`` extra) is imported only where a resize is done.
"""

from __future__ import annotations

import numpy as np

from synctalk_common import contract


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

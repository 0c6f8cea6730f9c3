"""The compositor's DALI graphs, shared by the production models (``device="gpu"``) and the tests
(``device="cpu"``): same code, device switched.

- ``frame_resize_pipeline``: the reference's compositing, the whole face resized to the frame.
- ``frame_paste_pipeline``: paste-back, the face resized to the frame's crop rectangle and pasted
  into the avatar's background frame.

Both turn the generated face into RGB uint8 at 320x320 first, as
``synctalk_preprocessing.compositing`` does on the CPU.
"""
from __future__ import annotations

from synctalk_client import contract


def _face_rgb8(device: str):
    import nvidia.dali.fn as fn
    import nvidia.dali.math as dmath
    import nvidia.dali.types as types

    face = fn.external_source(name=contract.GENERATED_FACE.name, device=device, dtype=types.FLOAT, ndim=3, layout="CHW")
    scaled = dmath.clamp(face * 255.0, 0.0, 255.0)
    rgb8 = fn.cast(fn.transpose(scaled, perm=[1, 2, 0], output_layout="HWC"), dtype=types.UINT8)
    return fn.color_space_conversion(rgb8, image_type=types.BGR, output_type=types.RGB)


def frame_resize_pipeline(device: str = "gpu", width: int = contract.OUTPUT_WIDTH, height: int = contract.OUTPUT_HEIGHT):
    import nvidia.dali.fn as fn
    import nvidia.dali.types as types

    return fn.resize(_face_rgb8(device), resize_x=width, resize_y=height, interp_type=types.INTERP_LINEAR, antialias=False)


def frame_paste_pipeline(device: str = "gpu"):
    """GENERATED_FACE [3,320,320], BACKGROUND [H,W,3] uint8 (on ``device``), CROP_BOX [4] and
    FRAME_SIZE [2] (H, W) int32 (on the CPU: they size the resize and the canvas) -> FRAMES_RGB
    [H,W,3]: the background with the box replaced by the face."""
    import nvidia.dali.fn as fn
    import nvidia.dali.types as types

    face = _face_rgb8(device)
    background = fn.external_source(name=contract.BACKGROUND.name, device=device, dtype=types.UINT8, ndim=3, layout="HWC")
    box = fn.external_source(name=contract.CROP_BOX.name, device="cpu", dtype=types.INT32, ndim=1)
    frame_hw = fn.external_source(name=contract.FRAME_SIZE.name, device="cpu", dtype=types.INT32, ndim=1)
    x0, y0, x1, y1 = box[0], box[1], box[2], box[3]
    resized = fn.resize(
        face,
        resize_x=fn.cast(x1 - x0, dtype=types.FLOAT),
        resize_y=fn.cast(y1 - y0, dtype=types.FLOAT),
        interp_type=types.INTERP_LINEAR,
        antialias=False,
    )
    # Place the face on a frame-sized canvas: a slice that starts at (-ymin, -xmin) and pads
    # outside the face with 0 (the mask with 1 inside the box).
    start = fn.stack(-y0, -x0)
    placed = fn.slice(resized, start=start, shape=frame_hw, axes=[0, 1], out_of_bounds_policy="pad", fill_values=0)
    mask = fn.slice(resized * 0 + 1, start=start, shape=frame_hw, axes=[0, 1], out_of_bounds_policy="pad", fill_values=0)
    return fn.cast(background * (1 - mask) + placed * mask, dtype=types.UINT8)

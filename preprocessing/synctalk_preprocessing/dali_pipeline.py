"""The compositor's DALI graphs, shared by the production models (``device="gpu"``) and the tests
(``device="cpu"``): same code, device switched.

- ``frame_resize_pipeline``: the reference's compositing, the whole face resized to the frame.
- ``frame_paste_pipeline``: paste-back, the face resized to the frame's crop rectangle and pasted
  into the avatar's background frame.

Both turn the generated face into RGB uint8 at 320x320 first, as
``synctalk_preprocessing.compositing`` does on the CPU.
"""

from __future__ import annotations

from synctalk_common import contract


def _face_rgb8(device: str):
    import nvidia.dali.fn as fn
    import nvidia.dali.math as dmath
    import nvidia.dali.types as types

    face = fn.external_source(name=contract.GENERATED_FACE.name, device=device, dtype=types.FLOAT, ndim=3, layout="CHW")
    scaled = dmath.clamp(face * 255.0, 0.0, 255.0)
    rgb8 = fn.cast(fn.transpose(scaled, perm=[1, 2, 0], output_layout="HWC"), dtype=types.UINT8)
    return fn.color_space_conversion(rgb8, image_type=types.BGR, output_type=types.RGB)


def frame_resize_pipeline(
    device: str = "gpu", width: int = contract.OUTPUT_WIDTH, height: int = contract.OUTPUT_HEIGHT
):
    import nvidia.dali.fn as fn
    import nvidia.dali.types as types

    return fn.resize(
        _face_rgb8(device), resize_x=width, resize_y=height, interp_type=types.INTERP_LINEAR, antialias=False
    )


def frame_paste_pipeline(device: str = "gpu"):
    """GENERATED_FACE [3,320,320], BACKGROUND [H,W,3] uint8 (on ``device``), CROP_BOX [4] and
    FRAME_SIZE [2] (H, W) int32 (on the CPU: they size the crops) -> FRAMES_RGB [H,W,3]: SyncTalk_2D's
    paste-back, as ``synctalk_preprocessing.compositing.paste_faces`` does it on the CPU.

    The box is cut from the background and resized to 328 x 328 (bicubic); the prediction (x255,
    truncated to uint8, BGR -> RGB) replaces its inner 320 x 320; the 328 crop is resized back to
    the box (bicubic) and the frame is reassembled around it. Everything is uint8 and only the
    box is resampled: the rest of the frame is copied, never computed on."""
    import nvidia.dali.fn as fn
    import nvidia.dali.math as dmath
    import nvidia.dali.types as types

    size, lo, hi = contract.FACE_CROP_SIZE, contract.FACE_CROP_BORDER, contract.FACE_CROP_BORDER + contract.FACE_SIZE
    face = fn.external_source(name=contract.GENERATED_FACE.name, device=device, dtype=types.FLOAT, ndim=3, layout="CHW")
    truncated = dmath.floor(dmath.clamp(face * 255.0, 0.0, 255.0))
    bgr8 = fn.cast(fn.transpose(truncated, perm=[1, 2, 0], output_layout="HWC"), dtype=types.UINT8)
    prediction = fn.color_space_conversion(bgr8, image_type=types.BGR, output_type=types.RGB)
    background = fn.external_source(
        name=contract.BACKGROUND.name, device=device, dtype=types.UINT8, ndim=3, layout="HWC"
    )
    box = fn.external_source(name=contract.CROP_BOX.name, device="cpu", dtype=types.INT32, ndim=1)
    frame_hw = fn.external_source(name=contract.FRAME_SIZE.name, device="cpu", dtype=types.INT32, ndim=1)
    x0, y0, x1, y1 = box[0], box[1], box[2], box[3]
    height, width = frame_hw[0], frame_hw[1]

    def cubic(image, w, h):
        return fn.resize(image, resize_x=w, resize_y=h, interp_type=types.INTERP_CUBIC, antialias=False)

    def region(image, top, left, h, w):  # image[top:top+h, left:left+w] (h or w may be 0)
        return fn.slice(image, start=fn.stack(top, left), shape=fn.stack(h, w), axes=[0, 1])

    crop = cubic(region(background, y0, x0, y1 - y0, x1 - x0), float(size), float(size))
    # the prediction inside the 328 crop's own 4-pixel border
    middle = fn.cat(crop[lo:hi, 0:lo], prediction, crop[lo:hi, hi:size], axis=1)
    pasted = cubic(
        fn.cat(crop[0:lo], middle, crop[hi:size], axis=0),
        fn.cast(x1 - x0, dtype=types.FLOAT),
        fn.cast(y1 - y0, dtype=types.FLOAT),
    )
    row = fn.cat(
        region(background, y0, 0, y1 - y0, x0), pasted, region(background, y0, x1, y1 - y0, width - x1), axis=1
    )
    return fn.cat(region(background, 0, 0, y0, width), row, region(background, y1, 0, height - y1, width), axis=0)

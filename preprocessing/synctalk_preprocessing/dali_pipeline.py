"""The compositor's resize as a DALI graph, shared by the production model (``device="gpu"``)
and the tests (``device="cpu"``): same code, device switched."""
from __future__ import annotations

from synctalk_client import contract


def frame_resize_pipeline(device: str = "gpu", width: int = contract.OUTPUT_WIDTH, height: int = contract.OUTPUT_HEIGHT):
    import nvidia.dali.fn as fn
    import nvidia.dali.math as dmath
    import nvidia.dali.types as types

    face = fn.external_source(name=contract.GENERATED_FACE.name, device=device, dtype=types.FLOAT, ndim=3, layout="CHW")
    scaled = dmath.clamp(face * 255.0, 0.0, 255.0)
    rgb8 = fn.cast(fn.transpose(scaled, perm=[1, 2, 0], output_layout="HWC"), dtype=types.UINT8)
    rgb8 = fn.color_space_conversion(rgb8, image_type=types.BGR, output_type=types.RGB)
    return fn.resize(rgb8, resize_x=width, resize_y=height, interp_type=types.INTERP_LINEAR, antialias=False)

"""frame_resize (DALI backend): GENERATED_FACE [3,320,320] BGR in [0,1] -> FRAMES_RGB [1080,1920,3].

BGR->RGB, x255, round and clamp to uint8 at 320x320, then a bilinear resize to 1920x1080 on the
GPU. The steps are those of synctalk_preprocessing.compositing (the CPU profile's implementation).
The backend serializes this pipeline at load time (@autoserialize).
"""

import nvidia.dali as dali
from nvidia.dali.plugin.triton import autoserialize

from synctalk_preprocessing.dali_pipeline import frame_resize_pipeline


@autoserialize
@dali.pipeline_def(batch_size=32, num_threads=4, device_id=0)
def pipeline():
    return frame_resize_pipeline(device="gpu")

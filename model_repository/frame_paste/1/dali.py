"""frame_paste (DALI backend): GENERATED_FACE [3,320,320], BACKGROUND [H,W,3], CROP_BOX [4]
-> FRAMES_RGB [H,W,3].

SyncTalk_2D's paste-back on the GPU: the box cut from the background and resized to 328 (cubic),
the prediction (x255, truncated, RGB) inside its 4-pixel border, resized back to the box (cubic)
and the frame reassembled around it, in uint8. The steps are those of
synctalk_preprocessing.compositing.paste_faces (the CPU profile's implementation).
"""

import nvidia.dali as dali
from nvidia.dali.plugin.triton import autoserialize

from synctalk_preprocessing.dali_pipeline import frame_paste_pipeline


@autoserialize
@dali.pipeline_def(batch_size=32, num_threads=4, device_id=0)
def pipeline():
    return frame_paste_pipeline(device="gpu")

"""frame_paste (DALI backend): GENERATED_FACE [3,320,320], BACKGROUND [H,W,3], CROP_BOX [4]
-> FRAMES_RGB [H,W,3].

The face becomes RGB uint8 at 320x320, is resized bilinearly to its crop rectangle and replaces
those pixels of the background, on the GPU. The steps are those of
synctalk_preprocessing.compositing.paste_faces (the CPU profile's implementation).
"""
import nvidia.dali as dali
from nvidia.dali.plugin.triton import autoserialize

from synctalk_preprocessing.dali_pipeline import frame_paste_pipeline


@autoserialize
@dali.pipeline_def(batch_size=32, num_threads=4, device_id=0)
def pipeline():
    return frame_paste_pipeline(device="gpu")

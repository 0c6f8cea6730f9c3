"""<id>_background: FRAME_INDEX [B,1] int64 -> BACKGROUND [B,H,W,3] uint8, CROP_BOX [B,4] int32,
FRAME_SIZE [B,2] int32 (H, W: the DALI paste sizes its canvas with it, on the CPU).

Frame ``i`` of a stream is composited onto background frame ``i % n_frames`` with crop rectangle
``i % n_frames`` (the avatar's video loops). The frames and rectangles are the avatar's assets,
written next to this file by tools/avatars.py and loaded once at model load: on a GPU instance
they stay resident in GPU memory (CuPy) and leave as GPU tensors through DLPack, so the paste
step reads them without a host copy; on a CPU instance they are NumPy arrays.
"""
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from synctalk_client import contract
from synctalk_preprocessing import checks
from synctalk_preprocessing.avatar import AvatarAssets


class TritonPythonModel:
    def initialize(self, args):
        folder = Path(args["model_repository"]) / args["model_version"]
        assets = AvatarAssets.load(folder)
        self.n_frames = assets.n_frames
        self.boxes = assets.boxes
        self.frame_size = np.array([[assets.height, assets.width]], np.int32)
        if args.get("model_instance_kind") == "GPU":
            import cupy

            with cupy.cuda.Device(int(args["model_instance_device_id"])):
                self.backgrounds = cupy.asarray(assets.backgrounds)
            self.on_gpu = True
        else:
            self.backgrounds = assets.backgrounds
            self.on_gpu = False

    def execute(self, requests):
        responses = []
        for request in requests:
            index = pb_utils.get_input_tensor_by_name(request, contract.FRAME_INDEX.name).as_numpy().reshape(-1)
            problem = checks.check_frame_index(contract.FRAME_INDEX.name, index)  # when called on its own
            if problem:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(problem, pb_utils.TritonError.INVALID_ARG)))
                continue
            slots = index % self.n_frames
            if self.on_gpu:
                import cupy

                background = pb_utils.Tensor.from_dlpack(contract.BACKGROUND.name, self.backgrounds[cupy.asarray(slots)])
            else:
                background = pb_utils.Tensor(contract.BACKGROUND.name, self.backgrounds[slots])
            box = pb_utils.Tensor(contract.CROP_BOX.name, self.boxes[slots])
            size = pb_utils.Tensor(contract.FRAME_SIZE.name, np.repeat(self.frame_size, len(slots), axis=0))
            responses.append(pb_utils.InferenceResponse([background, box, size]))
        return responses

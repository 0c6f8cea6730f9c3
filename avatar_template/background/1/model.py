"""<id>_background: FRAME_INDEX [B,1] int64 (and, optionally, IMAGE_INDEX [B,1] int64 and VISUAL
[B,6,320,320]) -> BACKGROUND [B,H,W,3] uint8, CROP_BOX [B,4] int32, FRAME_SIZE [B,2] int32 (H, W:
the DALI paste sizes its canvas with it, on the CPU) and FACE_INPUT [B,6,320,320] float32 (the
generator's input).

Each frame is drawn on one image of the avatar's video, as SyncTalk_2D's inference picks it
(``synctalk_common.frame_loop``): IMAGE_INDEX where the request sends it (``render`` sends the loop
of its whole clip: start frame, loop back; a number past the last image bounces back), else the
ping-pong of a clip of unknown length from FRAME_INDEX (frame i on image i + 1, bouncing at both
ends). The frame is composited onto that image with its crop rectangle, and its face input is
SyncTalk_2D's crop and mask of that image: the 328 bicubic crop of the box, its inner 320, / 255,
and a copy with the mask rectangle blacked out (``compositing.face_inputs`` / ``visual_from_faces``). The frames and
rectangles are the avatar's assets, written next to this file by ops/synctalk_build/avatar_install.py; the crops are
cut once at load and kept resident as uint8 (300 KB a frame; the float VISUAL is made per
request). On a GPU instance frames and crops stay in GPU memory (CuPy) and leave as GPU tensors
through DLPack, so the generator and the paste read them without a host copy; on a CPU instance
they are NumPy arrays. A request that sends VISUAL (crops cut by the caller) gets it as FACE_INPUT.

GPU memory is bounded per avatar: the frames stay resident on the GPU while they fit in the
``gpu_resident_bytes`` parameter (1080p: 6.2 MB a frame, 4 GiB = 690 frames, 27 s of video);
a longer video keeps its frames in host memory and each request's frames cross the bus once
(BACKGROUND leaves as a CPU tensor; Triton copies it to the paste's GPU input). The face crops
(300 KB a frame) always stay on the GPU.
"""

from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from synctalk_common import contract, frame_loop
from synctalk_common.face_geometry import face_inputs, visual_from_faces
from synctalk_preprocessing import checks, model_config
from synctalk_preprocessing.avatar import AvatarAssets

DEFAULT_GPU_RESIDENT_BYTES = 4 * 2**30


class TritonPythonModel:
    def initialize(self, args):
        folder = Path(args["model_repository"]) / args["model_version"]
        assets = AvatarAssets.load(folder)
        self.n_frames = assets.n_frames
        self.boxes = assets.boxes
        self.frame_size = np.array([[assets.height, assets.width]], np.int32)
        faces = face_inputs(assets.backgrounds, assets.boxes)
        params = model_config.string_parameters(model_config.load(args["model_config"]))
        resident_limit = int(params.get("gpu_resident_bytes", DEFAULT_GPU_RESIDENT_BYTES))
        self.backgrounds, self.faces, self.xp = assets.backgrounds, faces, np
        if args.get("model_instance_kind") == "GPU":
            import cupy

            with cupy.cuda.Device(int(args["model_instance_device_id"])):
                self.faces = cupy.asarray(faces)
                if assets.backgrounds.nbytes <= resident_limit:
                    self.backgrounds = cupy.asarray(assets.backgrounds)
                else:
                    pb_utils.Logger.log_warn(
                        f"{args['model_name']}: {assets.n_frames} frames ({assets.backgrounds.nbytes / 2**20:.0f} "
                        "MiB) exceed "
                        f"gpu_resident_bytes ({resident_limit / 2**20:.0f} MiB): frames kept in host memory, "
                        "copied per request"
                    )
            self.xp = cupy

    @staticmethod
    def _tensor(name, array):
        if isinstance(array, np.ndarray):
            return pb_utils.Tensor(name, np.ascontiguousarray(array))
        return pb_utils.Tensor.from_dlpack(name, array)

    def execute(self, requests):
        responses = []
        for request in requests:
            index = pb_utils.get_input_tensor_by_name(request, contract.FRAME_INDEX.name).as_numpy().reshape(-1)
            image = pb_utils.get_input_tensor_by_name(request, contract.IMAGE_INDEX.name)
            image = None if image is None else image.as_numpy().reshape(-1)
            problem = checks.check_frame_index(contract.FRAME_INDEX.name, index) or checks.check_frame_index(
                contract.IMAGE_INDEX.name, image, "image indices"
            )  # when called on its own
            if problem:
                responses.append(
                    pb_utils.InferenceResponse(error=pb_utils.TritonError(problem, pb_utils.TritonError.INVALID_ARG))
                )
                continue
            slots = (
                frame_loop.live_images(index, self.n_frames) if image is None else frame_loop.fold(image, self.n_frames)
            )
            on_device = self.xp.asarray(slots)
            # VISUAL, where a request sends one, was checked by input_validator (which this step waits
            # for): a step failing here, beside the audio steps, would leave the ensemble stuck
            visual = pb_utils.get_input_tensor_by_name(request, contract.VISUAL.name)
            if visual is not None:
                face_input = (
                    pb_utils.Tensor(contract.FACE_INPUT.name, visual.as_numpy())
                    if visual.is_cpu()
                    else pb_utils.Tensor.from_dlpack(contract.FACE_INPUT.name, visual.to_dlpack())
                )
            else:
                face_input = self._tensor(contract.FACE_INPUT.name, visual_from_faces(self.faces[on_device], self.xp))
            backgrounds = self.backgrounds[slots if isinstance(self.backgrounds, np.ndarray) else on_device]
            responses.append(
                pb_utils.InferenceResponse(
                    [
                        self._tensor(contract.BACKGROUND.name, backgrounds),
                        pb_utils.Tensor(contract.CROP_BOX.name, self.boxes[slots]),
                        pb_utils.Tensor(contract.FRAME_SIZE.name, np.repeat(self.frame_size, len(slots), axis=0)),
                        face_input,
                    ]
                )
            )
        return responses

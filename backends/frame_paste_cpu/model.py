"""CPU-profile stand-in for the DALI ``frame_paste`` model: the same maths on the CPU.

GENERATED_FACE [B,3,320,320] BGR float, BACKGROUND [B,H,W,3] uint8, CROP_BOX [B,4] int32,
FRAME_SIZE [B,2] int32 -> FRAMES_RGB [B,H,W,3] uint8, with
synctalk_preprocessing.compositing.paste_faces (FRAME_SIZE must be the background's).
"""

import triton_python_backend_utils as pb_utils

from synctalk_common import contract
from synctalk_preprocessing import model_config
from synctalk_preprocessing.compositing import paste_faces


class TritonPythonModel:
    def initialize(self, args):
        model_config.apply_nice(model_config.string_parameters(model_config.load(args["model_config"])))

    def execute(self, requests):
        responses = []
        for request in requests:
            face, background, box, size = (
                pb_utils.get_input_tensor_by_name(request, t.name).as_numpy()
                for t in (contract.GENERATED_FACE, contract.BACKGROUND, contract.CROP_BOX, contract.FRAME_SIZE)
            )
            problem = None
            if (size != background.shape[1:3]).any():
                problem = (
                    f"{contract.FRAME_SIZE.name}: {size[0].tolist()} "
                    f"is not the background's size {list(background.shape[1:3])}"
                )
            else:
                try:
                    frames = paste_faces(face, background, box)
                except ValueError as exc:
                    problem = f"{contract.CROP_BOX.name}: {exc}"
            if problem:
                responses.append(
                    pb_utils.InferenceResponse(error=pb_utils.TritonError(problem, pb_utils.TritonError.INVALID_ARG))
                )
                continue
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(contract.FRAMES_RGB.name, frames)]))
        return responses

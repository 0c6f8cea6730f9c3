"""CPU-profile stand-in for the DALI ``frame_resize`` model: the same maths on the CPU.

GENERATED_FACE [B,3,320,320] BGR float -> FRAMES_RGB [B,1080,1920,3] uint8 RGB, with
synctalk_preprocessing.compositing (OpenCV bilinear resize).
"""

import triton_python_backend_utils as pb_utils

from synctalk_preprocessing import model_config
from synctalk_preprocessing.compositing import composite_frames


class TritonPythonModel:
    def initialize(self, args):
        config = model_config.load(args["model_config"])
        model_config.apply_nice(model_config.string_parameters(config))
        self.input_name = model_config.tensor_names(config, "input")[0]
        self.output_name = model_config.tensor_names(config, "output")[0]
        self.height, self.width, _ = [int(d) for d in config["output"][0]["dims"]]

    def execute(self, requests):
        responses = []
        for request in requests:
            face = pb_utils.get_input_tensor_by_name(request, self.input_name).as_numpy()
            frames = composite_frames(face, self.width, self.height)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(self.output_name, frames)]))
        return responses

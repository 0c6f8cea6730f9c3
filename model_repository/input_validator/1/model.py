"""input_validator: checks VISUAL and AUDIO values, passes AUDIO on as VALIDATED_AUDIO.

Wrong shapes, dtypes and batch sizes never get here (Triton rejects them); this catches NaN/Inf
and far out-of-range values with an INVALID_ARG error naming the tensor, so a bad request fails
before the generator runs and the server carries on.
"""
import numpy as np
import triton_python_backend_utils as pb_utils

from synctalk_preprocessing import checks, model_config


class TritonPythonModel:
    def initialize(self, args):
        config = model_config.load(args["model_config"])
        params = model_config.string_parameters(config)
        self.visual_name, self.audio_name = model_config.tensor_names(config, "input")
        self.output_name = model_config.tensor_names(config, "output")[0]
        self.visual_tolerance = float(params.get("visual_tolerance", checks.VISUAL_TOLERANCE))
        self.audio_abs_max = float(params.get("audio_abs_max", checks.AUDIO_ABS_MAX))

    def execute(self, requests):
        responses = []
        for request in requests:
            visual = pb_utils.get_input_tensor_by_name(request, self.visual_name).as_numpy()
            audio = pb_utils.get_input_tensor_by_name(request, self.audio_name).as_numpy()
            problem = checks.check_visual(self.visual_name, visual, self.visual_tolerance) or checks.check_audio(
                self.audio_name, audio, self.audio_abs_max
            )
            if problem:
                error = pb_utils.TritonError(problem, pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(error=error))
            else:
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(self.output_name, np.ascontiguousarray(audio))]))
        return responses

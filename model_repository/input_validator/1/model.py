"""input_validator: checks AUDIO values and the optional inputs (VISUAL, which the reference
ensemble requires and an avatar's request may send; the audio context of a streamed clip; an
avatar's FRAME_INDEX); passes AUDIO on as
VALIDATED_AUDIO and each optional input present as VALIDATED_<name>.

Wrong shapes, dtypes and batch sizes never get here (Triton rejects them); this catches NaN/Inf,
far out-of-range values and negative frame indices with an INVALID_ARG error naming the tensor,
so a bad request fails before any other step starts (every later step depends on an output of
this one) and the server carries on.
"""

import numpy as np
import triton_python_backend_utils as pb_utils

from synctalk_client import contract
from synctalk_preprocessing import checks, model_config


class TritonPythonModel:
    def initialize(self, args):
        config = model_config.load(args["model_config"])
        params = model_config.string_parameters(config)
        self.visual_tolerance = float(params.get("visual_tolerance", checks.VISUAL_TOLERANCE))
        self.audio_abs_max = float(params.get("audio_abs_max", checks.AUDIO_ABS_MAX))

    def execute(self, requests):
        responses = []
        for request in requests:
            audio = pb_utils.get_input_tensor_by_name(request, contract.AUDIO.name).as_numpy()
            visual, index, context, lengths = (  # optional: None where the request has none
                _optional(request, t)
                for t in (contract.VISUAL, contract.FRAME_INDEX, contract.AUDIO_CONTEXT, contract.AUDIO_CONTEXT_LENGTH)
            )
            problem = (
                (visual is not None and checks.check_visual(contract.VISUAL.name, visual, self.visual_tolerance))
                or checks.check_audio(contract.AUDIO.name, audio, self.audio_abs_max)
                or checks.check_audio_context(
                    context, lengths, contract.AUDIO_CONTEXT_SAMPLES, contract.AUDIO_CONTEXT_ALIGN, self.audio_abs_max
                )
                or checks.check_frame_index(contract.FRAME_INDEX.name, index)
            )
            if problem:
                error = pb_utils.TritonError(problem, pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(error=error))
                continue
            outputs = [pb_utils.Tensor(contract.VALIDATED_AUDIO.name, np.ascontiguousarray(audio))]
            for validated, value in (
                (contract.VALIDATED_FRAME_INDEX, index),
                (contract.VALIDATED_AUDIO_CONTEXT, context),
                (contract.VALIDATED_AUDIO_CONTEXT_LENGTH, lengths),
            ):
                if value is not None:
                    outputs.append(pb_utils.Tensor(validated.name, np.ascontiguousarray(value)))
            responses.append(pb_utils.InferenceResponse(outputs))
        return responses


def _optional(request, tensor):
    value = pb_utils.get_input_tensor_by_name(request, tensor.name)
    return None if value is None else value.as_numpy()

"""The ``audio_front_end`` Python-based backend: AUDIO [B,640] -> MEL_WINDOWS [B,1,80,16].

Serves the models ``audio_features`` and ``audio_features_synctalk2d`` (their configs say
``backend: "audio_front_end"``), in both profiles.

One request's B x 640 samples form one contiguous clip; its log-mel is computed once and frame
i's window is mel columns [4i-8, 4i+8). The optional AUDIO_CONTEXT / AUDIO_CONTEXT_LENGTH (checked
by input_validator) extend the clip with the real audio around the batch. The maths lives in
synctalk_preprocessing.audio; the mel parameters come from this model's config parameters.

For audio_features_synctalk2d (SyncTalk_2D's front end, by its parameters): its
outputs are each frame's 16 neighbouring windows (MEL_NEIGHBOURS) and their clip mask
(NEIGHBOUR_MASK), and the optional FRAME_INDEX places the windows on the stream's mel grid.
Warmed up at load, so no request pays for first-call initialisation.
"""

import numpy as np
import triton_python_backend_utils as pb_utils

from synctalk_common import contract
from synctalk_preprocessing import checks, model_config
from synctalk_preprocessing.audio import MelConfig, MelFrontEnd


class TritonPythonModel:
    def initialize(self, args):
        config = model_config.load(args["model_config"])
        self.input_name = model_config.tensor_names(config, "input")[0]
        self.output_names = model_config.tensor_names(config, "output")
        self.front_end = MelFrontEnd(MelConfig.from_parameters(model_config.string_parameters(config)))
        samples = config["input"][0]["dims"][-1]
        self.front_end.windows_for_audio(np.zeros((1, int(samples)), np.float32))  # fail at load, not on a request

    def execute(self, requests):
        responses = []
        for request in requests:
            audio = pb_utils.get_input_tensor_by_name(request, self.input_name).as_numpy()
            context, lengths, index = (  # optional
                None if t is None else t.as_numpy()
                for t in (
                    pb_utils.get_input_tensor_by_name(request, n)
                    for n in (
                        contract.AUDIO_CONTEXT.name,
                        contract.AUDIO_CONTEXT_LENGTH.name,
                        contract.FRAME_INDEX.name,
                    )
                )
            )
            # when called on its own: the ensemble's input_validator has checked all this already
            problem = (
                checks.non_finite(self.input_name, audio, unit="samples")
                or checks.check_audio_context(
                    context, lengths, contract.AUDIO_CONTEXT_SAMPLES, contract.AUDIO_CONTEXT_ALIGN
                )
                or checks.check_frame_index(contract.FRAME_INDEX.name, index)
            )
            if problem:
                responses.append(
                    pb_utils.InferenceResponse(error=pb_utils.TritonError(problem, pb_utils.TritonError.INVALID_ARG))
                )
                continue
            first_frame = int(index.reshape(-1)[0]) if index is not None else 0
            result = self.front_end.windows_for_audio(audio, context, lengths, first_frame)
            if self.front_end.config.neighbours:
                windows, mask = result
                outputs = (windows[:, :, None], mask)  # [B,16,1,80,16], [B,16]
            else:
                outputs = (result[:, None],)  # [B,1,80,16]
            responses.append(
                pb_utils.InferenceResponse([pb_utils.Tensor(n, o) for n, o in zip(self.output_names, outputs)])
            )
        return responses

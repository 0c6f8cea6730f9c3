"""input_validator: checks AUDIO values and the optional inputs (VISUAL, which the reference
ensemble requires and an avatar's request may send; the audio context of a streamed clip; an
avatar's FRAME_INDEX and IMAGE_INDEX); passes AUDIO on as
VALIDATED_AUDIO and each optional input present as VALIDATED_<name>.

Wrong shapes, dtypes and batch sizes never get here (Triton rejects them); this catches NaN/Inf,
far out-of-range values and negative frame indices with an INVALID_ARG error naming the tensor,
so a bad request fails before any other step starts (every later step depends on an output of
this one) and the server carries on.

It is also the door (``synctalk_preprocessing.admission``): with ``admission_frames`` > 0 a request
is admitted only while the frames in flight past the door leave room for its own, and refused
otherwise, before it is looked at, with UNAVAILABLE and Triton's "Exceeds maximum queue size"
(clients: "server busy"); an admitted request carries its ADMISSION_TICKET to the last step.
"""

import numpy as np
import triton_python_backend_utils as pb_utils

from synctalk_common import contract
from synctalk_preprocessing import admission, checks, model_config


class TritonPythonModel:
    def initialize(self, args):
        config = model_config.load(args["model_config"])
        params = model_config.string_parameters(config)
        self.visual_tolerance = float(params.get("visual_tolerance", checks.VISUAL_TOLERANCE))
        self.audio_abs_max = float(params.get("audio_abs_max", checks.AUDIO_ABS_MAX))
        frames = int(params.get("admission_frames", "0"))
        lease_s = float(params.get("admission_lease_s", "8"))
        self.gate = admission.AdmissionGate(frames, lease_s) if frames > 0 else None
        if self.gate is not None:  # on Triton's /metrics, for the autoscaler (deploy/kubernetes/hpa.yaml)
            self.refusals = pb_utils.MetricFamily(
                name=admission.METRIC_REFUSED,
                description=admission.METRIC_REFUSED_HELP,
                kind=pb_utils.MetricFamily.COUNTER,
            )
            self.refused = self.refusals.Metric(labels={})
        self._warm_up(int(config.get("max_batch_size", 32)) or 1)

    def _warm_up(self, batch: int) -> None:
        """The checks of a largest batch, once (this model has no model_warmup: Triton's warm-up
        requests would come through the door and take tickets no last step gives back)."""
        zeros = np.zeros((batch, *contract.VISUAL.dims), np.float32)
        checks.check_visual(contract.VISUAL.name, zeros, self.visual_tolerance)
        checks.check_audio(contract.AUDIO.name, np.zeros((batch, *contract.AUDIO.dims), np.float32), self.audio_abs_max)
        checks.check_frame_index(contract.FRAME_INDEX.name, np.zeros((batch, 1), np.int64))

    def execute(self, requests):
        responses = []
        for request in requests:
            audio = pb_utils.get_input_tensor_by_name(request, contract.AUDIO.name).as_numpy()
            ticket = admission.NO_TICKET
            # through the door: an ensemble's request (the ensemble asks for the ticket; a client
            # calling this model for some outputs of its own does not)
            if self.gate is not None and contract.ADMISSION_TICKET.name in request.requested_output_names():
                timeout_us = request.timeout()  # the client's deadline, where it sent one
                ticket, in_flight = self.gate.admit(len(audio), timeout_us / 1e6 if timeout_us else None)
                if ticket is None:
                    self.refused.increment(1)
                    message = contract.MSG_PIPELINE_FULL.format(in_flight=in_flight, capacity=self.gate.capacity_frames)
                    responses.append(
                        pb_utils.InferenceResponse(
                            error=pb_utils.TritonError(message, pb_utils.TritonError.UNAVAILABLE)
                        )
                    )
                    continue
            visual, index, image, context, lengths = (  # optional: None where the request has none
                _optional(request, t)
                for t in (
                    contract.VISUAL,
                    contract.FRAME_INDEX,
                    contract.IMAGE_INDEX,
                    contract.AUDIO_CONTEXT,
                    contract.AUDIO_CONTEXT_LENGTH,
                )
            )
            problem = (
                (visual is not None and checks.check_visual(contract.VISUAL.name, visual, self.visual_tolerance))
                or checks.check_audio(contract.AUDIO.name, audio, self.audio_abs_max)
                or checks.check_audio_context(
                    context, lengths, contract.AUDIO_CONTEXT_SAMPLES, contract.AUDIO_CONTEXT_ALIGN, self.audio_abs_max
                )
                or checks.check_frame_index(contract.FRAME_INDEX.name, index)
                or checks.check_frame_index(contract.IMAGE_INDEX.name, image, "image indices")
            )
            if problem:
                if ticket != admission.NO_TICKET:
                    self.gate.release(ticket)
                error = pb_utils.TritonError(problem, pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(error=error))
                continue
            outputs = [
                pb_utils.Tensor(contract.VALIDATED_AUDIO.name, np.ascontiguousarray(audio)),
                pb_utils.Tensor(contract.ADMISSION_TICKET.name, np.full((len(audio), 1), ticket, np.int64)),
            ]
            for validated, value in (
                (contract.VALIDATED_FRAME_INDEX, index),
                (contract.VALIDATED_IMAGE_INDEX, image),
                (contract.VALIDATED_AUDIO_CONTEXT, context),
                (contract.VALIDATED_AUDIO_CONTEXT_LENGTH, lengths),
            ):
                if value is not None:
                    outputs.append(pb_utils.Tensor(validated.name, np.ascontiguousarray(value)))
            responses.append(pb_utils.InferenceResponse(outputs))
        return responses

    def finalize(self):
        if self.gate is not None:
            self.gate.close()


def _optional(request, tensor):
    value = pb_utils.get_input_tensor_by_name(request, tensor.name)
    return None if value is None else value.as_numpy()

"""jpeg_encoder: FRAMES_RGB [B,1080,1920,3] uint8 -> JPEG [B,1] bytes (Python backend).

``encoder`` parameter: ``nvimgcodec`` (production: nvImageCodec on the GPU, frames taken as GPU
tensors through DLPack, no host round trip) or ``cpu`` (libjpeg-turbo through simplejpeg, the CPU
profile). Quality and chroma subsampling come from the config parameters.

A GPU instance loads only with a working GPU encoder: it imports CuPy and encodes one probe frame
on its device in ``initialize`` (nvImageCodec without nvJPEG would otherwise encode on the CPU,
silently), so the first request pays for neither. A frame the encoder cannot encode fails its
request with a message naming it; the model carries on.

The last step of every ensemble: it gives the door's ADMISSION_TICKET back
(``synctalk_preprocessing.admission``) once a request's frames are encoded, or failed.
"""

import numpy as np
import triton_python_backend_utils as pb_utils

from synctalk_common import contract
from synctalk_preprocessing import admission, model_config


class TritonPythonModel:
    def initialize(self, args):
        config = model_config.load(args["model_config"])
        params = model_config.string_parameters(config)
        model_config.apply_nice(params)  # before the encoder's threads start
        self.input_name = model_config.tensor_names(config, "input")[0]
        self.output_name = model_config.tensor_names(config, "output")[0]
        quality = int(params.get("quality", "95"))
        subsampling = params.get("chroma_subsampling", "420")
        self.backend = params.get("encoder", "cpu")
        self.gate = None  # opened on the first ticket: a gate exists only where a door hands them out
        if self.backend == "nvimgcodec":
            from synctalk_preprocessing.nvimgcodec_encoder import NvImageCodecEncoder

            device_id = int(args.get("model_instance_device_id", 0))
            gpu = args.get("model_instance_kind") == "GPU"
            self.encoder = NvImageCodecEncoder(
                quality=quality, subsampling=subsampling, device_id=device_id, require_gpu=gpu
            )
            if gpu:
                import cupy  # GPU tensors arrive as DLPack: viewed with CuPy, imported here, not on a request

                self.cupy = cupy
        elif self.backend == "cpu":
            from synctalk_preprocessing.compositing import CpuJpegEncoder

            self.encoder = CpuJpegEncoder(
                quality=quality, subsampling=subsampling, threads=int(params.get("threads", "2"))
            )
        else:
            raise ValueError(f"jpeg_encoder: unknown encoder '{self.backend}', expected 'nvimgcodec' or 'cpu'")

    def _frames(self, tensor):
        if tensor.is_cpu():
            return list(tensor.as_numpy())
        return list(self.cupy.from_dlpack(tensor))  # zero-copy through DLPack, one view per frame

    def execute(self, requests):
        responses = []
        for request in requests:
            frames = self._frames(pb_utils.get_input_tensor_by_name(request, self.input_name))
            try:
                encoded = self.encoder.encode(frames)
            except Exception as error:  # nvImageCodec's EncodeError, or the CPU encoder's
                self._give_back(request)
                message = f"{self.input_name}: JPEG encoding failed: {error}"
                responses.append(
                    pb_utils.InferenceResponse(error=pb_utils.TritonError(message, pb_utils.TritonError.INTERNAL))
                )
                continue
            self._give_back(request)
            out = np.empty((len(encoded), 1), dtype=np.object_)
            out[:, 0] = encoded
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(self.output_name, out)]))
        return responses

    def _give_back(self, request):
        ticket = pb_utils.get_input_tensor_by_name(request, contract.ADMISSION_TICKET.name)
        value = admission.NO_TICKET if ticket is None else int(ticket.as_numpy().flat[0])
        if value != admission.NO_TICKET:
            if self.gate is None:
                self.gate = admission.AdmissionGate()
            self.gate.release(value)

    def finalize(self):
        if self.gate is not None:
            self.gate.close()
        close = getattr(self.encoder, "close", None)
        if close:
            close()

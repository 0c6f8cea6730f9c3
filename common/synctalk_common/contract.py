"""The serving contract: model names, tensor names, shapes, dtypes, limits and error messages.

This module is the single place where the pipeline's interface is defined. The client, the
preprocessing maths, the repository tools and the tests import it; the ``config.pbtxt`` files of
``model_repository/`` are checked against it by ``tests/contract``.

Every model has ``max_batch_size: 32``: the frames of one request are Triton's batch dimension,
so a request of B frames carries tensors of shape ``[B, *dims]``.
"""

from __future__ import annotations

from dataclasses import dataclass

# --- frame geometry (the reference service's constants) -------------------------------------
SAMPLE_RATE = 16_000  # Hz
FPS = 25  # video frames per second
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640 samples = 40 ms of audio per frame
FACE_SIZE = 320  # generator crops are FACE_SIZE x FACE_SIZE
VISUAL_CHANNELS = 6  # 0-2 face crop, 3-5 masked crop (ROI), BGR in [0, 1]
OUTPUT_WIDTH, OUTPUT_HEIGHT = 1920, 1080
JPEG_QUALITY = 95
JPEG_SUBSAMPLING = "420"
MAX_BATCH_SIZE = 32
MIN_BATCH_SIZE = 1
# SyncTalk_2D's face geometry (inference_328.py): a frame's face box is resized to 328 x 328
# (bicubic) and the generator sees the inner [4:324, 4:324]; its masked copy has the rectangle
# x 5, y 5, w 310, h 305 (cv2.rectangle's (x, y, w, h): rows 5..309, columns 5..314) blacked out.
# Paste-back writes the prediction into the 328 crop (whose 4-pixel border stays the frame's) and
# resizes that to the box (bicubic).
FACE_CROP_SIZE = 328
FACE_CROP_BORDER = (FACE_CROP_SIZE - FACE_SIZE) // 2
FACE_MASK_RECT = (5, 5, 310, 305)  # x, y, width, height in the 320 face

# --- mel front end (request-flow reference) -------------------------------------------------
N_MELS = 80
MEL_WINDOW_COLUMNS = 16  # mel columns per video frame window
MEL_COLUMNS_PER_SECOND = 100  # hop 160 at 16 kHz
AUDIO_FEATURE_SHAPE = (32, 16, 16)

# --- model names -----------------------------------------------------------------------------
DEFAULT_MODEL_ID = "demo"  # the ensemble of the default avatar; one ensemble per model id
INPUT_VALIDATOR_MODEL = "input_validator"
AUDIO_FEATURES_MODEL = "audio_features"
AUDIO_ENCODER_MODEL = "audio_encoder"
GENERATOR_MODEL = "synctalk"
FRAME_RESIZE_MODEL = "frame_resize"
# the SyncTalk_2D audio front end (an avatar's --audio-preset synctalk2d), in place of the two above
SYNCTALK2D_AUDIO_FEATURES_MODEL = "audio_features_synctalk2d"
SYNCTALK2D_AUDIO_ENCODER_MODEL = "audio_encoder_synctalk2d"
# its encoder one window at a time (the same weights): what a live stream encodes each window with, once
SYNCTALK2D_WINDOW_ENCODER_MODEL = "audio_window_encoder_synctalk2d"
JPEG_ENCODER_MODEL = "jpeg_encoder"
# avatars' shared step: each generated face pasted into its background frame
FRAME_PASTE_MODEL = "frame_paste"
COMPOSING_MODELS = (
    INPUT_VALIDATOR_MODEL,
    AUDIO_FEATURES_MODEL,
    AUDIO_ENCODER_MODEL,
    GENERATOR_MODEL,
    FRAME_RESIZE_MODEL,
    JPEG_ENCODER_MODEL,
)


@dataclass(frozen=True)
class Tensor:
    """One tensor as Triton sees it: name, dtype (Triton's name) and dims without the batch."""

    name: str
    dtype: str
    dims: tuple[int, ...]

    @property
    def numpy_dtype(self) -> str:
        return {
            "FP32": "float32",
            "UINT8": "uint8",
            "INT16": "int16",
            "INT32": "int32",
            "INT64": "int64",
            "BOOL": "bool",
            "BYTES": "object",
        }[self.dtype]


# --- ensemble tensors (what a caller sends and receives) ------------------------------------
VISUAL = Tensor("VISUAL", "FP32", (VISUAL_CHANNELS, FACE_SIZE, FACE_SIZE))
AUDIO = Tensor("AUDIO", "FP32", (SAMPLES_PER_FRAME,))
JPEG = Tensor("JPEG", "BYTES", (1,))

# --- audio context (optional ensemble inputs): streaming a long clip batch by batch ---------------
# Row i of AUDIO_CONTEXT holds the AUDIO_CONTEXT_SAMPLES samples just before frame i and those just
# after it; AUDIO_CONTEXT_LENGTH row i says how many of each are real audio (the rest is zeros:
# the clip starts or ends there). The server extends the request's clip with row 0's "before"
# samples and row B-1's "after" samples, so the mel windows at a batch's edges see the audio
# around it and a clip sent batch by batch gives the windows of the whole clip sent at once.
# 8000 samples (0.5 s) covers both front ends: the reference's windows reach 1480 samples before
# their batch and 680 after; SyncTalk_2D's, with windows i-9 .. i+6 per frame, 6360 before and 6600
# after. Lengths before a frame are multiples of AUDIO_CONTEXT_ALIGN (the reference's mel hop), so
# the mel columns stay on the clip's grid; the audio after may end anywhere (the clip's end).
AUDIO_CONTEXT_SAMPLES = 8000
AUDIO_CONTEXT_ALIGN = 160
AUDIO_CONTEXT = Tensor("AUDIO_CONTEXT", "FP32", (2, AUDIO_CONTEXT_SAMPLES))
AUDIO_CONTEXT_LENGTH = Tensor("AUDIO_CONTEXT_LENGTH", "INT32", (2,))

# --- intermediate tensors (ensemble-internal names) ------------------------------------------
# AUDIO once input_validator has checked VISUAL and AUDIO: everything downstream depends on it,
# so a rejected request never reaches the generator.
VALIDATED_AUDIO = Tensor("VALIDATED_AUDIO", "FP32", AUDIO.dims)
VALIDATED_AUDIO_CONTEXT = Tensor("VALIDATED_AUDIO_CONTEXT", "FP32", AUDIO_CONTEXT.dims)
VALIDATED_AUDIO_CONTEXT_LENGTH = Tensor("VALIDATED_AUDIO_CONTEXT_LENGTH", "INT32", AUDIO_CONTEXT_LENGTH.dims)
MEL_WINDOWS = Tensor("MEL_WINDOWS", "FP32", (1, N_MELS, MEL_WINDOW_COLUMNS))
AUDIO_FEATURES = Tensor("AUDIO_FEATURES", "FP32", AUDIO_FEATURE_SHAPE)
GENERATED_FACE = Tensor("GENERATED_FACE", "FP32", (3, FACE_SIZE, FACE_SIZE))
FRAMES_RGB = Tensor("FRAMES_RGB", "UINT8", (OUTPUT_HEIGHT, OUTPUT_WIDTH, 3))

# --- the generator's own tensor names: those of SyncTalk_2D ONNX exports, kept so a user's
# exported model drops in unchanged; the ensemble maps them to the names above.
GENERATOR_VISUAL = Tensor("input", "FP32", VISUAL.dims)
GENERATOR_AUDIO = Tensor("audio", "FP32", AUDIO_FEATURES.dims)
GENERATOR_OUTPUT = Tensor("output", "FP32", GENERATED_FACE.dims)

# --- avatars' tensors: paste-back compositing ----------------------------------------------------
# An avatar is an ensemble named by its id. It shares the validation and audio steps and has its
# own generator, background store and JPEG encoder; the shared frame_paste step resizes each
# generated face to the frame's crop rectangle and pastes it into the frame's image of the
# avatar's video (the avatar's own output resolution, hence the -1 dims). Which image: SyncTalk_2D's
# loop (synctalk_common.frame_loop): IMAGE_INDEX where the request sends it (render computes the
# loop of the whole clip: start frame, loop back), else frame_loop.live_images(FRAME_INDEX), the
# ping-pong of a clip of unknown length (audio frame i on image i + 1).
FRAME_INDEX = Tensor("FRAME_INDEX", "INT64", (1,))  # the client sends start_frame_idx + i
# the image frame i is drawn on (optional); a number past the avatar's last image bounces back (frame_loop.fold)
IMAGE_INDEX = Tensor("IMAGE_INDEX", "INT64", (1,))
BACKGROUND = Tensor("BACKGROUND", "UINT8", (-1, -1, 3))  # RGB background frame of this video frame
CROP_BOX = Tensor("CROP_BOX", "INT32", (4,))  # xmin, ymin, xmax, ymax in the background (exclusive max)
FRAME_SIZE = Tensor("FRAME_SIZE", "INT32", (2,))  # the background's height, width (sizes the paste on the GPU)
PASTED_FRAMES = Tensor("FRAMES_RGB", "UINT8", (-1, -1, 3))  # FRAMES_RGB at the avatar's resolution
VALIDATED_FRAME_INDEX = Tensor("VALIDATED_FRAME_INDEX", "INT64", FRAME_INDEX.dims)
VALIDATED_IMAGE_INDEX = Tensor("VALIDATED_IMAGE_INDEX", "INT64", IMAGE_INDEX.dims)
# The door's ticket (synctalk_preprocessing.admission): input_validator admits a request into the
# pipeline and hands it this ticket (one value, repeated per frame); the last step, jpeg_encoder,
# gives it back. 0: the gate is off.
ADMISSION_TICKET = Tensor("ADMISSION_TICKET", "INT64", (1,))
# An avatar's requests carry audio only: its background step keeps the face inputs of every frame
# resident (SyncTalk_2D's crop of each frame's box, computed once at load) and gives the
# generator FACE_INPUT = VISUAL of each frame's image. A request may still send VISUAL (face
# crops cut by the caller, e.g. from a live camera): FACE_INPUT is then that VISUAL.
FACE_INPUT = Tensor("FACE_INPUT", "FP32", VISUAL.dims)

# --- SyncTalk_2D's audio front end (avatars' --audio-preset synctalk2d) ---------------------------
# 16 neighbouring windows per frame (windows i-9 .. i+6 of the clip,
# clamped to its ends, as upstream's padded list gives them) and a mask of the rows upstream fills
# (zero rows where its slice leaves the list); its encoder maps them to the same AUDIO_FEATURES.
AUDIO_NEIGHBOURS = 16
MEL_NEIGHBOURS = Tensor("MEL_NEIGHBOURS", "FP32", (AUDIO_NEIGHBOURS, 1, N_MELS, MEL_WINDOW_COLUMNS))
NEIGHBOUR_MASK = Tensor("NEIGHBOUR_MASK", "FP32", (AUDIO_NEIGHBOURS,))
# One window's encoding (SYNCTALK2D_WINDOW_ENCODER_MODEL): AUDIO_FEATURES of frame i is the 16
# encodings of its neighbours, times NEIGHBOUR_MASK, stacked row-major into AUDIO_FEATURE_SHAPE.
WINDOW_FEATURES = Tensor(
    "WINDOW_FEATURES",
    "FP32",
    (AUDIO_FEATURE_SHAPE[0] * AUDIO_FEATURE_SHAPE[1] * AUDIO_FEATURE_SHAPE[2] // AUDIO_NEIGHBOURS,),
)

# --- every shared model's tensors (model_repository/; tests/contract checks each config) ---------
MODEL_INPUTS = {
    INPUT_VALIDATOR_MODEL: (VISUAL, AUDIO, AUDIO_CONTEXT, AUDIO_CONTEXT_LENGTH, FRAME_INDEX, IMAGE_INDEX),
    AUDIO_FEATURES_MODEL: (AUDIO, AUDIO_CONTEXT, AUDIO_CONTEXT_LENGTH),
    AUDIO_ENCODER_MODEL: (MEL_WINDOWS,),
    GENERATOR_MODEL: (GENERATOR_VISUAL, GENERATOR_AUDIO),
    FRAME_RESIZE_MODEL: (GENERATED_FACE,),
    JPEG_ENCODER_MODEL: (FRAMES_RGB, ADMISSION_TICKET),
    SYNCTALK2D_AUDIO_FEATURES_MODEL: (AUDIO, AUDIO_CONTEXT, AUDIO_CONTEXT_LENGTH, FRAME_INDEX),
    SYNCTALK2D_AUDIO_ENCODER_MODEL: (MEL_NEIGHBOURS, NEIGHBOUR_MASK),
    SYNCTALK2D_WINDOW_ENCODER_MODEL: (MEL_WINDOWS,),
    FRAME_PASTE_MODEL: (GENERATED_FACE, BACKGROUND, CROP_BOX, FRAME_SIZE),
}
MODEL_OUTPUTS = {
    INPUT_VALIDATOR_MODEL: (
        VALIDATED_AUDIO,
        VALIDATED_AUDIO_CONTEXT,
        VALIDATED_AUDIO_CONTEXT_LENGTH,
        VALIDATED_FRAME_INDEX,
        VALIDATED_IMAGE_INDEX,
        ADMISSION_TICKET,
    ),
    AUDIO_FEATURES_MODEL: (MEL_WINDOWS,),
    AUDIO_ENCODER_MODEL: (AUDIO_FEATURES,),
    GENERATOR_MODEL: (GENERATOR_OUTPUT,),
    FRAME_RESIZE_MODEL: (FRAMES_RGB,),
    JPEG_ENCODER_MODEL: (JPEG,),
    SYNCTALK2D_AUDIO_FEATURES_MODEL: (MEL_NEIGHBOURS, NEIGHBOUR_MASK),
    SYNCTALK2D_AUDIO_ENCODER_MODEL: (AUDIO_FEATURES,),
    SYNCTALK2D_WINDOW_ENCODER_MODEL: (WINDOW_FEATURES,),
    FRAME_PASTE_MODEL: (PASTED_FRAMES,),
}

# input_validator takes FRAME_INDEX and IMAGE_INDEX as optional inputs (avatars' requests send them,
# the reference ensemble's do not): the background step then depends on validation like every other step, so a bad
# request fails before any other step starts. VISUAL is optional there too (avatars' requests
# may leave it out); the reference ensemble requires it.
OPTIONAL_INPUTS = {
    INPUT_VALIDATOR_MODEL: (VISUAL, AUDIO_CONTEXT, AUDIO_CONTEXT_LENGTH, FRAME_INDEX, IMAGE_INDEX),
    AUDIO_FEATURES_MODEL: (AUDIO_CONTEXT, AUDIO_CONTEXT_LENGTH),
    SYNCTALK2D_AUDIO_FEATURES_MODEL: (AUDIO_CONTEXT, AUDIO_CONTEXT_LENGTH, FRAME_INDEX),
    JPEG_ENCODER_MODEL: (ADMISSION_TICKET,),  # a JPEG encoder called on its own (perf_analyzer) has none
}

# Each step of an ensemble: model -> ({model tensor: ensemble tensor} for inputs, same for outputs).
_CONTEXT_IN = {AUDIO_CONTEXT.name: AUDIO_CONTEXT.name, AUDIO_CONTEXT_LENGTH.name: AUDIO_CONTEXT_LENGTH.name}
_CONTEXT_OUT = {
    VALIDATED_AUDIO_CONTEXT.name: VALIDATED_AUDIO_CONTEXT.name,
    VALIDATED_AUDIO_CONTEXT_LENGTH.name: VALIDATED_AUDIO_CONTEXT_LENGTH.name,
}
# The reference ensemble ("demo"): the request-flow contract, VISUAL and AUDIO only. (Avatars'
# ensembles add the optional audio context and FRAME_INDEX: see avatar_ensemble_steps.)
ENSEMBLE_STEPS = (
    (
        INPUT_VALIDATOR_MODEL,
        {VISUAL.name: VISUAL.name, AUDIO.name: AUDIO.name},
        {VALIDATED_AUDIO.name: VALIDATED_AUDIO.name, ADMISSION_TICKET.name: ADMISSION_TICKET.name},
    ),
    (AUDIO_FEATURES_MODEL, {AUDIO.name: VALIDATED_AUDIO.name}, {MEL_WINDOWS.name: MEL_WINDOWS.name}),
    (AUDIO_ENCODER_MODEL, {MEL_WINDOWS.name: MEL_WINDOWS.name}, {AUDIO_FEATURES.name: AUDIO_FEATURES.name}),
    (
        GENERATOR_MODEL,
        {GENERATOR_VISUAL.name: VISUAL.name, GENERATOR_AUDIO.name: AUDIO_FEATURES.name},
        {GENERATOR_OUTPUT.name: GENERATED_FACE.name},
    ),
    (FRAME_RESIZE_MODEL, {GENERATED_FACE.name: GENERATED_FACE.name}, {FRAMES_RGB.name: FRAMES_RGB.name}),
    (
        JPEG_ENCODER_MODEL,
        {FRAMES_RGB.name: FRAMES_RGB.name, ADMISSION_TICKET.name: ADMISSION_TICKET.name},
        {JPEG.name: JPEG.name},
    ),
)
ENSEMBLE_INPUTS = (VISUAL, AUDIO)
ENSEMBLE_OUTPUTS = (JPEG,)

AVATAR_ENSEMBLE_INPUTS = (VISUAL, AUDIO, AUDIO_CONTEXT, AUDIO_CONTEXT_LENGTH, FRAME_INDEX, IMAGE_INDEX)
AVATAR_BACKGROUND_INPUTS = (FRAME_INDEX, IMAGE_INDEX, VISUAL)
AVATAR_BACKGROUND_OPTIONAL_INPUTS = (IMAGE_INDEX, VISUAL)
AVATAR_BACKGROUND_OUTPUTS = (BACKGROUND, CROP_BOX, FRAME_SIZE, FACE_INPUT)
# Optional inputs of every avatar's ensemble. (The reference ensemble has none: perf_analyzer's
# shared-memory mode refuses models with optional inputs, and the reference contract has none.)
AVATAR_OPTIONAL_INPUTS = (VISUAL, AUDIO_CONTEXT, AUDIO_CONTEXT_LENGTH, IMAGE_INDEX)
AUDIO_PRESETS = ("reference", "synctalk2d")
# The shared audio encoder of each audio preset (an avatar's own SyncTalk_2D encoder replaces it)
PRESET_AUDIO_ENCODERS = {"reference": AUDIO_ENCODER_MODEL, "synctalk2d": SYNCTALK2D_AUDIO_ENCODER_MODEL}
SYNCTALK2D_HOP = 200  # samples per mel column of SyncTalk_2D's front end (80 columns a second)


# Every model of model_repository/: the reference ensemble, its steps, and the avatars' shared step.
SHARED_MODELS = COMPOSING_MODELS + (
    FRAME_PASTE_MODEL,
    SYNCTALK2D_AUDIO_FEATURES_MODEL,
    SYNCTALK2D_AUDIO_ENCODER_MODEL,
    SYNCTALK2D_WINDOW_ENCODER_MODEL,
)
# Per-avatar models: "<id>" (ensemble) and these suffixes.
AVATAR_GENERATOR_SUFFIX = "_" + GENERATOR_MODEL
AVATAR_BACKGROUND_SUFFIX = "_background"
AVATAR_JPEG_SUFFIX = "_" + JPEG_ENCODER_MODEL
AVATAR_AUDIO_ENCODER_SUFFIX = "_audio_encoder"  # an avatar's own SyncTalk_2D audio encoder (optional)
AVATAR_WINDOW_ENCODER_SUFFIX = "_audio_window_encoder"  # and the same weights one window at a time
# SyncTalk_2D avatars: the steps after the audio encoder as an ensemble of their own, AUDIO_FEATURES
# in, JPEG out (avatar_face_steps); the avatar's ensemble runs it as its last step, and a
# live stream calls it with the features of windows it encoded once (model_repository/stream)
AVATAR_FROM_FEATURES_SUFFIX = "_from_features"
# the <id>_background config parameter that says how many images the avatar's video has
AVATAR_IMAGES_PARAMETER = "n_images"
# and what a live stream's entirely silent frames are: "generator" (lip-synced like speech) or
# "avatar_frames" (the avatar's own images, no generator run: add --silent-frames)
AVATAR_SILENCE_PARAMETER = "silent_frames"
AVATAR_ID_PATTERN = r"^[a-z][a-z0-9_]{0,47}$"
RESERVED_IDS = (DEFAULT_MODEL_ID, *SHARED_MODELS)


def avatar_models(avatar_id: str, own_audio_encoder: bool = False, synctalk2d: bool = False) -> dict:
    """Model names of one avatar, by role. ``synctalk2d`` (SyncTalk_2D's audio preset): with the
    ensemble of its steps after the audio, ``<id>_from_features``; ``own_audio_encoder`` (implies
    ``synctalk2d``): with its own SyncTalk_2D audio encoder, ``<id>_audio_encoder``, and its
    one-window form, ``<id>_audio_window_encoder``, in place of the shared ones."""
    models = {
        "ensemble": avatar_id,
        "generator": avatar_id + AVATAR_GENERATOR_SUFFIX,
        "background": avatar_id + AVATAR_BACKGROUND_SUFFIX,
        "jpeg_encoder": avatar_id + AVATAR_JPEG_SUFFIX,
    }
    if synctalk2d or own_audio_encoder:
        models["from_features"] = avatar_id + AVATAR_FROM_FEATURES_SUFFIX
    if own_audio_encoder:
        models["audio_encoder"] = avatar_id + AVATAR_AUDIO_ENCODER_SUFFIX
        models["window_encoder"] = avatar_id + AVATAR_WINDOW_ENCODER_SUFFIX
    return models


def avatar_ensemble_steps(avatar_id: str, audio_preset: str = "reference", own_audio_encoder: bool = False) -> tuple:
    """The avatar ensemble's wiring, in pipeline order (compare ENSEMBLE_STEPS). ``audio_preset``
    "synctalk2d" puts SyncTalk_2D's audio front end in place of the reference's;
    ``own_audio_encoder``: the avatar's own encoder in place of the shared SyncTalk_2D one."""
    if audio_preset not in AUDIO_PRESETS:
        raise ValueError(f"audio preset must be one of {AUDIO_PRESETS}, got {audio_preset!r}")
    if own_audio_encoder and audio_preset != "synctalk2d":
        raise ValueError("an avatar's own audio encoder is SyncTalk_2D's: it needs the synctalk2d audio preset")
    models = avatar_models(avatar_id, own_audio_encoder)
    by_name = {step[0]: step for step in ENSEMBLE_STEPS}
    # VISUAL (optional for an avatar) is checked by input_validator too, not by the background step
    # that reads it: with this Triton a step failing while another branch of the same request runs
    # (the background step beside the audio steps) leaves the ensemble stuck at its next unload.
    validator = (
        INPUT_VALIDATOR_MODEL,
        {**by_name[INPUT_VALIDATOR_MODEL][1], **_CONTEXT_IN, **{t.name: t.name for t in (FRAME_INDEX, IMAGE_INDEX)}},
        {
            **by_name[INPUT_VALIDATOR_MODEL][2],
            **_CONTEXT_OUT,
            **{t.name: t.name for t in (VALIDATED_FRAME_INDEX, VALIDATED_IMAGE_INDEX)},
        },
    )
    features_in = {
        **by_name[AUDIO_FEATURES_MODEL][1],
        AUDIO_CONTEXT.name: VALIDATED_AUDIO_CONTEXT.name,
        AUDIO_CONTEXT_LENGTH.name: VALIDATED_AUDIO_CONTEXT_LENGTH.name,
    }
    by_name[AUDIO_FEATURES_MODEL] = (AUDIO_FEATURES_MODEL, features_in, by_name[AUDIO_FEATURES_MODEL][2])
    if audio_preset == "synctalk2d":
        neighbours = {MEL_NEIGHBOURS.name: MEL_NEIGHBOURS.name, NEIGHBOUR_MASK.name: NEIGHBOUR_MASK.name}
        features_in = {**features_in, FRAME_INDEX.name: VALIDATED_FRAME_INDEX.name}
        by_name[AUDIO_FEATURES_MODEL] = (SYNCTALK2D_AUDIO_FEATURES_MODEL, features_in, neighbours)
        encoder = models.get("audio_encoder", SYNCTALK2D_AUDIO_ENCODER_MODEL)
        by_name[AUDIO_ENCODER_MODEL] = (encoder, neighbours, by_name[AUDIO_ENCODER_MODEL][2])
    audio_steps = (validator, by_name[AUDIO_FEATURES_MODEL], by_name[AUDIO_ENCODER_MODEL])
    if audio_preset == "synctalk2d":  # the steps after the audio: the avatar's from_features ensemble
        from_features_in = {
            AUDIO_FEATURES.name: AUDIO_FEATURES.name,
            FRAME_INDEX.name: VALIDATED_FRAME_INDEX.name,
            IMAGE_INDEX.name: VALIDATED_IMAGE_INDEX.name,
            VISUAL.name: VISUAL.name,
            ADMISSION_TICKET.name: ADMISSION_TICKET.name,
        }
        return (
            *audio_steps,
            (avatar_models(avatar_id, synctalk2d=True)["from_features"], from_features_in, {JPEG.name: JPEG.name}),
        )
    # the reference preset: the same steps in the avatar's ensemble itself, on its validated tensors
    validated = {FRAME_INDEX.name: VALIDATED_FRAME_INDEX.name, IMAGE_INDEX.name: VALIDATED_IMAGE_INDEX.name}
    return (*audio_steps, *avatar_face_steps(avatar_id, validated))


def avatar_face_steps(avatar_id: str, inputs: dict[str, str] | None = None) -> tuple:
    """An avatar's steps after its audio: AUDIO_FEATURES and the frame's index -> background, the
    generator, the paste, the JPEG encoder. ``inputs``: the ensemble's tensor for each of
    FRAME_INDEX and IMAGE_INDEX where it is not the tensor of that name."""
    models = avatar_models(avatar_id)
    by_name = {step[0]: step for step in ENSEMBLE_STEPS}
    index = {t.name: (inputs or {}).get(t.name, t.name) for t in (FRAME_INDEX, IMAGE_INDEX)}
    generator_in = {**by_name[GENERATOR_MODEL][1], GENERATOR_VISUAL.name: FACE_INPUT.name}
    return (
        (
            models["background"],
            {**index, VISUAL.name: VISUAL.name},
            {t.name: t.name for t in AVATAR_BACKGROUND_OUTPUTS},
        ),
        (models["generator"], generator_in, by_name[GENERATOR_MODEL][2]),
        (
            FRAME_PASTE_MODEL,
            {t.name: t.name for t in (GENERATED_FACE, BACKGROUND, CROP_BOX, FRAME_SIZE)},
            {FRAMES_RGB.name: FRAMES_RGB.name},
        ),
        (models["jpeg_encoder"],) + by_name[JPEG_ENCODER_MODEL][1:],
    )


# <id>_from_features (SyncTalk_2D avatars): its inputs, the optional ones, its steps (avatar_face_steps)
AVATAR_FROM_FEATURES_INPUTS = (AUDIO_FEATURES, FRAME_INDEX, IMAGE_INDEX, VISUAL, ADMISSION_TICKET)
AVATAR_FROM_FEATURES_OPTIONAL = (IMAGE_INDEX, VISUAL, ADMISSION_TICKET)


def synctalk2d_window_count(n_samples: int) -> int:
    """N, the number of audio windows SyncTalk_2D's inference encodes for a clip of ``n_samples``
    16 kHz samples (``AudDataset``: ``int((columns - 16) / 80 * 25) + 2``, with ``1 + n // 200``
    mel columns); it renders N + 2 video frames (``synctalk2d_frame_count``)."""
    columns = 1 + int(n_samples) // SYNCTALK2D_HOP
    return int((columns - MEL_WINDOW_COLUMNS) / 80.0 * float(FPS)) + 2


def synctalk2d_frame_count(n_samples: int) -> int:
    """The frames SyncTalk_2D's inference renders for a clip of ``n_samples`` samples: N + 2
    (about one fewer than the clip's whole 40 ms frames)."""
    return synctalk2d_window_count(n_samples) + 2


# --- live streams: the "stream" model (model_repository/stream) --------------------------------
# A stream is a Triton sequence (correlation id, start and end flags) to the decoupled model
# "stream": each request carries only new audio (any number of samples up to STREAM_MAX_CHUNK, 16
# kHz, as float32 AUDIO_CHUNK or int16 AUDIO_CHUNK_INT16); the start request names the avatar
# (STREAM_AVATAR). Its one response holds every frame whose audio lookahead has now arrived (frame
# i once AUDIO_CONTEXT_SAMPLES samples follow its 40 ms: then its request to the avatar is the
# one render sends), as STREAM_JPEG and STREAM_FRAME_INDEX; zero frames is a valid answer. The end
# request flushes the rest with the clip-end rules of the avatar's audio front end, so a streamed
# clip has the frames of a rendered one (render --no-loop-back: a stream's length is unknown).
STREAM_MODEL = "stream"
STREAM_AVATAR = Tensor("AVATAR", "BYTES", (1,))
STREAM_AUDIO = Tensor("AUDIO_CHUNK", "FP32", (-1,))
STREAM_AUDIO_INT16 = Tensor("AUDIO_CHUNK_INT16", "INT16", (-1,))
STREAM_JPEG = Tensor("JPEG", "BYTES", (-1,))
STREAM_FRAME_INDEX = Tensor("FRAME_INDEX", "INT64", (-1,))
# Video encoded on the server: the start request may ask for H.264 (STREAM_VIDEO_CODEC "h264")
# instead of JPEGs; the stream keeps its encoder (zero latency, no B-frames, a key frame first,
# every 2 s and on request) until it ends or expires. Any request of such a stream may set the
# target bitrate from then on (kbit/s) and ask for a key frame. Each frame is then one access unit
# (Annex B, parameter sets before each key frame) in STREAM_H264, with STREAM_KEY_FRAME, and
# STREAM_JPEG is empty; a JPEG stream's STREAM_H264 and STREAM_KEY_FRAME are empty.
STREAM_VIDEO_CODEC = Tensor("VIDEO_CODEC", "BYTES", (1,))
STREAM_BITRATE = Tensor("VIDEO_BITRATE_KBPS", "INT32", (1,))
STREAM_FORCE_KEY_FRAME = Tensor("FORCE_KEY_FRAME", "BOOL", (1,))
STREAM_H264 = Tensor("H264", "BYTES", (-1,))
STREAM_KEY_FRAME = Tensor("KEY_FRAME", "BOOL", (-1,))
STREAM_CODECS = ("jpeg", "h264")
# An interrupt (the viewer cut in: the speech not yet heard goes): a request carrying
# STREAM_INTERRUPT = K turns the stream's speech from frame K on (what had arrived before this
# request) into silence, and renders frames K on again from there: the frames a client has not
# shown yet (K at most STREAM_MAX_REWIND frames before the first frame not rendered yet; -1: from
# that frame, nothing rendered again). Its answer starts at K; the frames from K in the answers
# to earlier requests are stale (a client drops them). The speech before K does not reach the
# frames from K (no lips moving to speech that was cut), and frame numbers go on without a jump.
# The request's own chunk is the speech after the interrupt. An H.264 stream's frame K is a key
# frame (the viewer never gets the frames the encoder had referenced).
STREAM_INTERRUPT = Tensor("INTERRUPT_FROM_FRAME", "INT64", (1,))
# Speech placed, not appended: a request carrying STREAM_SPEECH_AT = S writes its chunk at sample S
# of the stream (S at most STREAM_MAX_REWIND frames before the first frame not rendered yet; past
# what has arrived: silence in between), silence after it up to what had arrived, and renders the
# frames from S's frame again (the frames from there in answers to earlier requests are stale).
# A voice agent's speech starts just ahead of what the viewer is shown, over the idle audio
# already sent, instead of after it: its first word is heard sooner (a TTS engine's audio is there
# before it is due, the 0.5 s of lookahead a frame needs with it).
STREAM_SPEECH_AT = Tensor("SPEECH_AT_SAMPLE", "INT64", (1,))
STREAM_MAX_REWIND = 100  # frames (4 s): how far back an interrupt renders again
# The answer to an interrupt or a placement holds at most this many of the frames it renders again,
# and so does a request while more of the stream's requests wait for its turn behind it (they take
# the rest; the last in line takes every frame ready). Frame K is due at the viewer within a frame
# or two of the cut, and a whole rewind (10-20 frames, composited and H.264-encoded) took 80-270 ms
# on a 2-core host: the voice waited for frame K that long; the backlog a placement's speech makes
# ready came back as one batch (6-8 frames, 265-300 ms), its first frame late by as much. On the
# CPU a frame costs the same in a batch of 3 as of 8 (33-40 ms with the tiny generator).
STREAM_STEP_FRAMES = 3
STREAM_INPUTS = (  # all optional: rules in the model
    STREAM_AVATAR,
    STREAM_AUDIO,
    STREAM_AUDIO_INT16,
    STREAM_VIDEO_CODEC,
    STREAM_BITRATE,
    STREAM_FORCE_KEY_FRAME,
    STREAM_INTERRUPT,
    STREAM_SPEECH_AT,
)
STREAM_OUTPUTS = (STREAM_JPEG, STREAM_FRAME_INDEX, STREAM_H264, STREAM_KEY_FRAME)
STREAM_MAX_CHUNK = SAMPLE_RATE  # samples: at most 1 s of audio a request
STREAM_LOOKAHEAD = AUDIO_CONTEXT_SAMPLES  # samples after a frame before it is rendered
MSG_STREAM_LIMIT = "stream limit {limit} reached"
MSG_STREAM_NOT_OPEN = (
    "stream {stream_id} is not open: it never started, it ended, or it expired after {idle_s:g} s without a request"
)


# Live before offline: Triton's priority levels on the queues where requests wait (the door and
# the generators). A request without a priority (a live stream's frames: the Python backend's BLS
# requests cannot carry one; any other caller's) is at level 1; render marks its batches offline,
# level 2, which the queues serve only when no level-1 request waits. The ensemble copies a
# request's priority to every step.
PRIORITY_LEVELS = 2
PRIORITY_LIVE = 1  # the default level
PRIORITY_OFFLINE = 2


def stream_frames_ready(samples: int) -> int:
    """How many of a stream's frames can be rendered once ``samples`` samples have arrived."""
    return max(0, (int(samples) - STREAM_LOOKAHEAD) // SAMPLES_PER_FRAME)


# Stages reported in a CompositeBatchResponse, by composing model.
STAGE_MODELS = {
    "validation_ms": (INPUT_VALIDATOR_MODEL,),
    "audio_processing_ms": (
        AUDIO_FEATURES_MODEL,
        AUDIO_ENCODER_MODEL,
        SYNCTALK2D_AUDIO_FEATURES_MODEL,
        SYNCTALK2D_AUDIO_ENCODER_MODEL,
        SYNCTALK2D_WINDOW_ENCODER_MODEL,
    ),
    "inference_time_ms": (GENERATOR_MODEL,),
    "composite_time_ms": (FRAME_RESIZE_MODEL, JPEG_ENCODER_MODEL),
}


def stage_of(model_name: str) -> str:
    """The CompositeBatchResponse field a composing model's compute time counts towards."""
    for field_name, models in STAGE_MODELS.items():
        if model_name in models:
            return field_name
    if model_name.endswith(AVATAR_GENERATOR_SUFFIX):
        return "inference_time_ms"
    if model_name.endswith((AVATAR_AUDIO_ENCODER_SUFFIX, AVATAR_WINDOW_ENCODER_SUFFIX)):
        return "audio_processing_ms"
    return "composite_time_ms"  # frame_paste, <id>_background, <id>_jpeg_encoder


# --- byte sizes of the reference request layout ----------------------------------------------
FLOAT32_BYTES = 4
CROP_BYTES = 3 * FACE_SIZE * FACE_SIZE * FLOAT32_BYTES  # one 3-channel crop
VISUAL_FRAME_BYTES = 2 * CROP_BYTES  # crop + ROI = 6 x 320 x 320 x 4 = 2,457,600 bytes
AUDIO_FRAME_BYTES = SAMPLES_PER_FRAME * FLOAT32_BYTES  # 2,560 bytes

# --- error messages (the reference's, verbatim) and their categories --------------------------
MSG_MODEL_ID_EMPTY = "modelId cannot be empty"
MSG_MODEL_NOT_FOUND = "model not found: {model_id}"
MSG_VISUAL_SIZE = "visual frames size mismatch: got {got}, expected {expected}"
MSG_AUDIO_EMPTY = "audio cannot be empty"
MSG_AUDIO_SIZE = "audio size mismatch"

CATEGORY_VALIDATION = "validation"
CATEGORY_MODEL = "model"
CATEGORY_PROCESSING = "processing"
# Not one of the reference's: the server refused the request for now (a model's queue is full, or
# the request waited longer than its queue allows); retry later. HTTP 503 in the reference's terms.
CATEGORY_BUSY = "busy"
# Not one of the reference's: the call needs the server's API key (model control, shared memory).
CATEGORY_PERMISSION = "permission"
HTTP_STATUS = {
    CATEGORY_VALIDATION: 400,
    CATEGORY_MODEL: 404,
    CATEGORY_PROCESSING: 500,
    CATEGORY_BUSY: 503,
    CATEGORY_PERMISSION: 403,
}
# Triton's own messages (gRPC UNAVAILABLE) for a request its queue policy refuses: the queue is at
# max_queue_size, or the request waited default_timeout_microseconds (timeout_action REJECT).
QUEUE_FULL_MESSAGE = "Exceeds maximum queue size"
QUEUE_TIMEOUT_MESSAGE = "Request timeout expired"
# input_validator's refusal at the door (synctalk_preprocessing.admission), in Triton's words so
# that any Triton client reads it as a full queue
MSG_PIPELINE_FULL = QUEUE_FULL_MESSAGE + ": the pipeline holds {in_flight} of its {capacity} frames in flight"
MSG_SERVER_BUSY = "server busy: {model_id} refused the request ({reason}); retry later"


# --- who may change the server: Triton's restricted APIs ----------------------------------------
# Every launcher starts tritonserver with these APIs restricted to callers that send the API key
# (--http-restricted-api / --grpc-restricted-protocol); inference, health, metadata, model configs
# and statistics stay open. model-repository: load (with a client's own model files: code run on
# the server), unload, the index; shared-memory: registering a region by name (the server's own
# IPC regions included); logging and trace: the server's log and trace settings.
RESTRICTED_APIS = ("model-repository", "shared-memory", "logging", "trace")
API_KEY_HEADER = "synctalk-api-key"  # the HTTP header
GRPC_API_KEY_HEADER = "triton-grpc-protocol-" + API_KEY_HEADER  # gRPC metadata: Triton adds this prefix
API_KEY_ENV = "SYNCTALK_API_KEY"  # the key itself
API_KEY_FILE_ENV = "SYNCTALK_API_KEY_FILE"  # or a file that holds it
# Triton's refusals (gRPC UNAVAILABLE, HTTP 403) of a restricted call without the right header
RESTRICTED_MESSAGES = ("This protocol is restricted", "This API is restricted")
MSG_RESTRICTED = "this server restricts {api}: set " + API_KEY_ENV
MSG_KEY_REFUSED = "this server refused the API key for {api}: check " + API_KEY_ENV


# --- the edge: Envoy in front of the replicas (ops/synctalk_ops/edge/) -----------------------------------
# Envoy does not read the protobuf body, so the SDK says in gRPC metadata (HTTP headers for the
# KServe API) which model id a request is for and how many frames it carries. Requests are counted
# in classes by their frames, each with its own limit per replica sized from the door's capacity
# in frames (capacity // the class's largest request): a flood of 32-frame requests fills "bulk"
# and leaves "light" (live frames, 1-frame requests) and "batch" alone. A request without the
# header (a plain client) is counted as bulk.
EDGE_MODEL_HEADER = "synctalk-model-id"
EDGE_FRAMES_HEADER = "synctalk-frames"
EDGE_CLASSES = (("light", 0, 1), ("batch", 2, 8), ("bulk", 9, MAX_BATCH_SIZE))  # (name, fewest, most frames)
# The edge's own refusals. Over a class's limit: a local reply before the request's body goes
# anywhere (gRPC UNAVAILABLE, HTTP 503), read by clients as "server busy"; a restricted API: never
# routed (gRPC PERMISSION_DENIED, HTTP 403), reached on a replica's own port with the API key.
EDGE_FULL_MESSAGE = "the edge's limit for this class of requests is reached"
EDGE_OVERFLOW_MESSAGE = "reset reason: overflow"  # Envoy's own words for a limit it hit
EDGE_RESTRICTED_MESSAGE = "not served at the edge"
MSG_EDGE_RESTRICTED = "the edge does not serve {api}: call a replica's own port with the API key"
# Avatars on demand (ops/synctalk_ops/activator.py): the activator, asked by the edge about each
# request, names the replica holding its avatar (loading it there first) in this header, which the
# edge routes by; a request held past the cold-start budget is refused, retryably, as loading.
EDGE_REPLICA_HEADER = "synctalk-replica"
OPEN_STREAMS_METRIC = "synctalk_open_streams"  # a replica's gauge, label avatar: never unloaded while > 0
EDGE_LOADING_MESSAGE = "the avatar is loading"
EDGE_NO_ROOM_MESSAGE = "no room: its avatars are in use"
MSG_AVATAR_LOADING = EDGE_LOADING_MESSAGE + ": {model_id} was not ready within {budget_s:g} s; retry in a moment"


def model_owner(model_name: str) -> str:
    """The model id a model belongs to: the avatar of one of its own steps (``<id>_background``,
    ...), else the name itself. The edge sends a model's calls to the replicas holding its owner."""
    for suffix in (
        AVATAR_GENERATOR_SUFFIX,
        AVATAR_BACKGROUND_SUFFIX,
        AVATAR_JPEG_SUFFIX,
        AVATAR_AUDIO_ENCODER_SUFFIX,
        AVATAR_WINDOW_ENCODER_SUFFIX,
        AVATAR_FROM_FEATURES_SUFFIX,
    ):
        if model_name.endswith(suffix) and len(model_name) > len(suffix):
            return model_name[: -len(suffix)]
    return model_name


def edge_headers(model_id: str, frames: int | None = None) -> dict[str, str]:
    """The gRPC metadata (or HTTP headers) the edge routes and counts a request by."""
    headers = {EDGE_MODEL_HEADER: model_id}
    if frames is not None:
        headers[EDGE_FRAMES_HEADER] = str(int(frames))
    return headers

"""synctalk-client: command line for the served ensemble.

synctalk-client health
synctalk-client models
synctalk-client composite --audio speech.wav --image face.png --out out/frames
synctalk-client composite --batch-size 8 --out out/frames     # synthetic audio and crops
synctalk-client render --audio speech.wav --image face.png --out out/speech.mp4
synctalk-client render --avatar anna --audio speech.wav --out anna.mp4 --frames-dir out/anna   # audio only
synctalk-client inspect --avatar anna --audio speech.wav --out out/inspect
synctalk-client stream --avatar anna --audio speech.wav --out anna.mp4 --realtime   # a live stream
synctalk-client stream --avatar anna --text "Hello. How are you?" --out anna.mp4    # text, said by espeak-ng
tts ... | synctalk-client stream --avatar anna --audio - --out anna.mp4             # raw 16 kHz s16le PCM
synctalk-client load anna | unload anna | stats anna     # explicit model control
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np

from synctalk_client import synthetic
from synctalk_client.audio_file import AudioFileError, read_audio
from synctalk_client.client import CompositeClient
from synctalk_client.errors import CompositeError, ModelNotFoundError
from synctalk_common import contract
from synctalk_common.messages import CompositeBatchRequest

# subcommands a service installed beside the SDK adds (synctalk-client web): an entry point
# ``register(command)`` that calls ``command(name, func, help)``, which gives an argparse parser back
COMMANDS_GROUP = "synctalk_client.commands"


class UsageError(Exception):
    """A mistake in the command line or its files: printed as one line, exit status 2."""


def read_wav(path: Path) -> np.ndarray:
    """16 kHz mono float32 of an audio file (``audio_file.read_audio``); a bad file is a UsageError."""
    try:
        return read_audio(path)
    except AudioFileError as exc:
        raise UsageError(str(exc)) from None


def read_crop(path: Path) -> np.ndarray:
    """An image file -> one [3,320,320] BGR float crop in [0,1] (resized, not cropped)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise UsageError(
            f"image {path} not found" if not path.exists() else f"{path} is not an image file (a directory?)"
        )
    try:
        image = Image.open(path).convert("RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise UsageError(f"{path}: not a readable image ({exc})") from None
    rgb = np.asarray(image.resize((contract.FACE_SIZE,) * 2, Image.BILINEAR), np.float32) / 255.0
    return rgb[..., ::-1].transpose(2, 0, 1).copy()


def batch_size(text: str) -> int:
    """argparse type: a batch size of 1..32 frames."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not contract.MIN_BATCH_SIZE <= value <= contract.MAX_BATCH_SIZE:
        raise argparse.ArgumentTypeError(
            f"must be {contract.MIN_BATCH_SIZE}..{contract.MAX_BATCH_SIZE} frames, got {value}"
        )
    return value


def non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def positive(text: str) -> int:
    value = non_negative(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be >= 1, got 0")
    return value


VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv")


def check_video_out(path: Path) -> None:
    """Before any work: the MP4 (or MOV/MKV) file render writes, in a folder that can hold it."""
    if path.is_dir():
        raise UsageError(f"--out {path} is a directory: give a video file name, e.g. {path / 'render.mp4'}")
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise UsageError(f"--out {path}: the video needs one of the extensions {', '.join(VIDEO_SUFFIXES)}")
    if path.parent.exists() and not path.parent.is_dir():
        raise UsageError(f"--out {path}: {path.parent} is not a directory")


def build_request(args) -> CompositeBatchRequest:
    """The request of composite / inspect, with crops (``audio_only`` drops them for an avatar)."""
    if args.audio:
        audio = read_wav(args.audio)
        available = len(audio) // contract.SAMPLES_PER_FRAME - args.start_frame
        if available < 1:
            raise UsageError(
                f"--start-frame {args.start_frame} is past the end of {args.audio} "
                f"({len(audio) // contract.SAMPLES_PER_FRAME} whole frames of {contract.SAMPLES_PER_FRAME} samples)"
            )
        if args.batch_size and args.batch_size > available:
            raise UsageError(
                f"--batch-size {args.batch_size}: {args.audio} holds {available} frames from frame {args.start_frame}"
            )
        batch = min(args.batch_size or available, available, contract.MAX_BATCH_SIZE)
        start = args.start_frame * contract.SAMPLES_PER_FRAME
        audio = audio[start : start + batch * contract.SAMPLES_PER_FRAME]
        batch = len(audio) // contract.SAMPLES_PER_FRAME
        audio = audio[: batch * contract.SAMPLES_PER_FRAME]
    else:
        batch = args.batch_size or 8
        audio = synthetic.speech_like_audio(batch, seed=args.seed)
    if args.image:
        crops = np.repeat(read_crop(args.image)[None], batch, axis=0)
    else:
        crops = synthetic.face_crops(batch, seed=args.seed)
    return CompositeBatchRequest.from_arrays(
        args.model_id, crops, synthetic.masked(crops), audio, start_frame_idx=args.start_frame
    )


def audio_only(request: CompositeBatchRequest) -> CompositeBatchRequest:
    """The same request without crops: an avatar cuts its faces from its own frames."""
    return dataclasses.replace(request, visual_frames=b"")


def cmd_composite(args) -> int:
    request = build_request(args)  # the files and sizes are checked before the server is asked
    with CompositeClient(args.url, timeout_s=args.timeout) as client:
        if not args.image and client.takes_audio_only(args.model_id):  # an avatar: its own frames
            request = audio_only(request)
        response = client.infer_batch_composite(request)
    if not response.success:
        print(
            json.dumps(
                {
                    "success": False,
                    "error": response.error,
                    "category": response.error_category,
                    "http_status": response.http_status,
                }
            ),
            file=sys.stderr,
        )
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    for i, jpeg in enumerate(response.composited_frames):
        (args.out / f"frame_{request.start_frame_idx + i:05d}.jpg").write_bytes(jpeg)
    summary = {"frames": len(response.composited_frames), "out": str(args.out), **response.timings()}
    print(json.dumps(summary, indent=2))
    return 0


def cmd_render(args) -> int:
    from synctalk_client.render import render_video

    check_video_out(args.out)
    if args.frames_dir is not None and args.frames_dir.exists() and not args.frames_dir.is_dir():
        raise UsageError(f"--frames-dir {args.frames_dir} exists and is not a directory")
    if args.audio:
        audio = read_wav(args.audio)
    elif args.text:
        from synctalk_client import tts

        audio = tts.speech(args.text, text_engine(args)).astype(np.float32) / 32768.0
    else:
        audio = synthetic.speech_like_audio(int(args.seconds * contract.FPS), seed=args.seed)
    crops = read_crop(args.image)[None] if args.image else None
    avatar = _read_avatar(args)
    if avatar is not None:  # one crop per image of the video: render picks each frame's image
        from synctalk_common.face_geometry import crop_faces

        crops = crop_faces(*avatar)
    summary = render_video(
        args.url,
        args.model_id,
        audio,
        args.out,
        crops=crops,
        batch_size=args.batch_size,
        in_flight=args.in_flight,
        timeout_s=args.timeout,
        progress=not args.quiet,
        frames_dir=args.frames_dir,
        start_frame=args.start_frame,
        loop_back=args.loop_back,
    )
    print(json.dumps({**summary, "out": str(args.out)}, indent=2))
    return 0


def cmd_stream(args) -> int:
    from synctalk_client.live_render import file_chunks, pcm_chunks, stream_source

    if args.out is not None:
        check_video_out(args.out)
    chunk_samples = max(1, round(args.chunk_ms * contract.SAMPLE_RATE / 1000))
    if chunk_samples > contract.STREAM_MAX_CHUNK:
        raise UsageError(f"--chunk-ms {args.chunk_ms:g}: at most 1000 ms of audio a request")
    if args.text:
        from synctalk_client import tts

        chunks = tts.chunks(args.text, text_engine(args), chunk_samples)
    elif str(args.audio) == "-":
        chunks = pcm_chunks(sys.stdin.buffer, chunk_samples)
    else:
        chunks = file_chunks(read_wav(args.audio), chunk_samples)
    with CompositeClient(args.url, timeout_s=args.timeout) as client:
        if not client.takes_audio_only(args.model_id):
            raise UsageError(f"{args.model_id} is not an avatar: a live stream needs one (synctalk-avatars add)")
    summary = stream_source(
        args.url,
        args.model_id,
        chunks,
        args.out,
        frames_dir=args.frames_dir,
        realtime=args.realtime,
        chunk_ms=args.chunk_ms,
        timeout_s=args.timeout,
    )
    print(json.dumps({**summary, "out": None if args.out is None else str(args.out)}, indent=2))
    return 0


def text_engine(args):
    """The TTS engine ``--tts`` names (``synctalk_client.tts.engine``); one that cannot start is a UsageError."""
    from synctalk_client import tts

    try:
        return tts.engine(args.tts)
    except (RuntimeError, ImportError, ValueError, AttributeError, OSError) as exc:
        raise UsageError(f"--tts {args.tts}: {exc}") from None


def add_text_source(parser, audio_help: str, required: bool = False) -> None:
    """--audio or --text (said by --tts) as the speech."""
    source = parser.add_mutually_exclusive_group(required=required)
    source.add_argument("--audio", type=Path, help=audio_help)
    source.add_argument("--text", help="text the avatar says (spoken by --tts; sentence by sentence in a stream)")
    parser.add_argument(
        "--tts",
        default="espeak:en",
        help="what speaks --text: espeak[:VOICE] (default espeak:en), piper:VOICE.onnx or module:Class[:ARG]",
    )


def _read_avatar(args):
    """(frames [n,H,W,3] RGB, boxes [n,4]) from --frames and --boxes, or None without --frames."""
    if not args.frames:
        return None
    if not args.boxes:
        raise UsageError("--frames needs --boxes (the crop rectangle of each frame)")
    from synctalk_common.frames import read_boxes, read_frames

    frames = read_frames(args.frames)
    boxes = read_boxes(args.boxes, frames.shape[1:3]).round().astype(np.int64)
    return frames, (np.repeat(boxes, len(frames), axis=0) if len(boxes) == 1 else boxes[: len(frames)])


def cmd_inspect(args) -> int:
    from synctalk_client.inspect import inspect_request

    request = build_request(args)
    avatar = _read_avatar(args)
    if avatar is None and not args.image:
        with CompositeClient(args.url, timeout_s=args.timeout) as client:
            if client.takes_audio_only(args.model_id):  # an avatar: its own frames
                request = audio_only(request)
    if avatar is not None:  # frame i's face: the image the server's background step picks for FRAME_INDEX i
        from synctalk_common import frame_loop
        from synctalk_common.face_geometry import crop_faces

        frames, boxes = avatar
        slots = frame_loop.live_images(args.start_frame + np.arange(request.batch_size), len(frames))
        crops = crop_faces(frames[slots], boxes[slots])
        request = CompositeBatchRequest.from_arrays(
            args.model_id, crops, synthetic.masked(crops), request.audio_tensor(), start_frame_idx=args.start_frame
        )
    if args.audio:  # the audio around the batch, as render sends it
        audio = read_wav(args.audio)
        first = args.start_frame * contract.SAMPLES_PER_FRAME
        last = first + request.batch_size * contract.SAMPLES_PER_FRAME
        context = contract.AUDIO_CONTEXT_SAMPLES
        request.audio_context_before = audio[max(0, first - context) : first].astype("<f4").tobytes()
        request.audio_context_after = audio[last : last + context].astype("<f4").tobytes()
    with CompositeClient(args.url, timeout_s=args.timeout) as client:
        summary = inspect_request(client, request, args.out)
    for step in summary["steps"]:
        print(
            f"{step['model']:<28} {step['ms']:>9.1f} ms  -> "
            + ", ".join(f"{k} {v[0]}" for k, v in step["outputs"].items())
        )
    print(f"wrote {summary['frames']} frames and every stage to {args.out}")
    return 0


def cmd_models(args) -> int:
    with CompositeClient(args.url) as client:
        rows = client.list_models()
    if not rows:
        print("no models in the repository")
        return 0
    header = {"name": "MODEL", "kind": "KIND", "version": "VERSION", "state": "STATE"}
    widths = {key: max(len(header[key]), *(len(str(row[key])) for row in rows)) for key in header}
    print("  ".join(header[k].ljust(widths[k]) for k in header) + "  REASON")
    for row in rows:
        print(("  ".join(str(row[k]).ljust(widths[k]) for k in header) + "  " + row["reason"]).rstrip())
    return 0


def cmd_load(args) -> int:
    with CompositeClient(args.url) as client:
        client.load_model(args.model_id)
        print(f"loaded {args.model_id}; model ids: {', '.join(client.model_ids())}")
    return 0


def cmd_unload(args) -> int:
    with CompositeClient(args.url) as client:
        client.unload_model(args.model_id)
        print(f"unloaded {args.model_id}; model ids: {', '.join(client.model_ids())}")
    return 0


def cmd_stats(args) -> int:
    with CompositeClient(args.url) as client:
        stats = client.model_stats(args.model_id)
        if args.model_id and args.model_id not in stats:
            raise ModelNotFoundError(contract.MSG_MODEL_NOT_FOUND.format(model_id=args.model_id))
        print(json.dumps(stats, indent=2))
    return 0


def cmd_health(args) -> int:
    with CompositeClient(args.url) as client:
        health = client.health()
    print(json.dumps(health, indent=2))
    return 0 if health.get("ready") else 1


def add_face_source(parser: argparse.ArgumentParser) -> None:
    """Where the frames' faces come from, for ``render`` and ``inspect``: an image, a video's crops
    with their boxes, or the avatar's own frames; and the image its loop starts from."""
    parser.add_argument(
        "--image",
        type=Path,
        help="face image used as every frame's crop (default: an avatar's own frames, else synthetic crops)",
    )
    parser.add_argument(
        "--frames",
        type=Path,
        help="send crops cut from this video (or image folder), frame i's from frame i "
        "(an avatar needs none: the server holds its frames)",
    )
    parser.add_argument(
        "--boxes",
        type=Path,
        help="with --frames: crop boxes (.json/.npy/.txt, x0 y0 x1 y1 per frame, or a landmarks/ folder)",
    )
    parser.add_argument(
        "--start-frame",
        type=non_negative,
        default=0,
        help="SyncTalk_2D's start_frame: the image the clip's loop starts from (the avatar's, or the crops')",
    )


def build_parser() -> argparse.ArgumentParser:
    # --url and --debug are accepted before or after the subcommand
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=argparse.SUPPRESS, help="Triton gRPC endpoint (default 127.0.0.1:8001)")
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="print tracebacks of errors")
    parser = argparse.ArgumentParser(
        prog="synctalk-client", description="Client of the SyncTalk Triton ensemble", parents=[common]
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name, func, text):
        p = sub.add_parser(name, help=text, parents=[common])
        p.set_defaults(func=func)
        return p

    composite = command("composite", cmd_composite, "send one batch, write one JPEG per frame")
    composite.add_argument("--model-id", default=contract.DEFAULT_MODEL_ID)
    composite.add_argument(
        "--audio",
        type=Path,
        help="audio file, any rate and channels (resampled to 16 kHz mono; default: synthetic speech-like audio)",
    )
    composite.add_argument(
        "--image",
        type=Path,
        help="face image used as every frame's crop (default: an avatar's own frames, else synthetic crops)",
    )
    composite.add_argument(
        "--batch-size", type=batch_size, help="frames (1-32; default: 8, or as many as the audio holds up to 32)"
    )
    composite.add_argument("--start-frame", type=non_negative, default=0)
    composite.add_argument("--seed", type=int, default=0)
    composite.add_argument("--timeout", type=float, default=120.0, help="deadline of the call in seconds")
    composite.add_argument("--out", type=Path, default=Path("out/frames"))
    render = command("render", cmd_render, "render a whole clip to an MP4 (frames muxed with the audio)")
    render.add_argument("--model-id", "--avatar", dest="model_id", default=contract.DEFAULT_MODEL_ID)
    add_text_source(
        render, "audio file, any rate and channels (resampled to 16 kHz mono; default: synthetic speech-like audio)"
    )
    render.add_argument("--seconds", type=float, default=2.0, help="length of the synthetic audio")
    add_face_source(render)
    render.add_argument(
        "--frames-dir", type=Path, help="also write every frame as the JPEG the server returned (frame_00000.jpg, ...)"
    )
    render.add_argument(
        "--no-loop-back",
        dest="loop_back",
        action="store_false",
        help="ping-pong over the images without turning at the clip's midpoint (loop back, the default, ends "
        "the clip on the image it began with)",
    )
    render.add_argument("--batch-size", type=batch_size, default=8, help="frames per request (1-32)")
    render.add_argument("--in-flight", type=positive, default=3, help="requests kept in flight")
    render.add_argument("--seed", type=int, default=0)
    render.add_argument("--timeout", type=float, default=300.0)
    render.add_argument("--quiet", action="store_true", help="no progress bar")
    render.add_argument("--out", type=Path, default=Path("out/render.mp4"))
    stream = command("stream", cmd_stream, "play audio into a live stream to an avatar; frames as they come")
    stream.add_argument("--avatar", "--model-id", dest="model_id", required=True)
    add_text_source(
        stream,
        "audio file (any rate and channels), or - for raw 16 kHz mono s16le PCM on stdin (a TTS, arecord)",
        required=True,
    )
    stream.add_argument("--chunk-ms", type=float, default=40.0, help="audio per request (default 40 ms)")
    stream.add_argument("--realtime", action="store_true", help="pace a file at real time, as a live source")
    stream.add_argument("--out", type=Path, help="the MP4 of the frames with the audio")
    stream.add_argument("--frames-dir", type=Path, help="also write every frame (frame_00000.jpg, ...)")
    stream.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for an answer")
    inspect = command(
        "inspect",
        cmd_inspect,
        "run one batch step by step; write every stage (mel, features, visual input, generator output, frames)",
    )
    inspect.add_argument("--model-id", "--avatar", dest="model_id", default=contract.DEFAULT_MODEL_ID)
    inspect.add_argument(
        "--audio", type=Path, help="audio file, any rate and channels (default: synthetic speech-like audio)"
    )
    add_face_source(inspect)
    inspect.add_argument(
        "--batch-size", type=batch_size, help="frames (1-32; default: 8, or as many as the audio holds up to 32)"
    )
    inspect.add_argument("--seed", type=int, default=0)
    inspect.add_argument("--timeout", type=float, default=120.0)
    inspect.add_argument("--out", type=Path, default=Path("out/inspect"))
    for plugin in entry_points(group=COMMANDS_GROUP):  # the services' subcommands (synctalk-client web)
        plugin.load()(command)
    command("models", cmd_models, "list the repository's models")
    command("health", cmd_health, "server liveness/readiness and model states")
    for name, func, text in (
        ("load", cmd_load, "load a model id (explicit model control)"),
        ("unload", cmd_unload, "unload a model id and its own steps"),
        ("stats", cmd_stats, "Triton's statistics of a model (all with '')"),
    ):
        command(name, func, text).add_argument("model_id")
    return parser


def main(argv=None) -> int:
    """Every mistake is one line on stderr and a non-zero exit (2: usage, 1: the server said no,
    130: Ctrl-C); ``--debug`` shows the traceback instead."""
    args = build_parser().parse_args(argv)
    args.url = getattr(args, "url", "127.0.0.1:8001")
    debug = getattr(args, "debug", False)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        if debug:
            raise
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the one place that turns errors into a line
        if debug:
            raise
        if isinstance(exc, UsageError):
            print(f"synctalk-client: error: {exc}", file=sys.stderr)
            return 2
        if isinstance(exc, CompositeError):
            print(f"synctalk-client: {exc.category} error: {exc.message}", file=sys.stderr)
            return 1
        from tritonclient.utils import InferenceServerException

        if isinstance(exc, InferenceServerException):
            print(f"synctalk-client: server error: {exc.message() or exc}", file=sys.stderr)
            return 1
        if isinstance(exc, (OSError, ValueError)):
            print(f"synctalk-client: error: {exc}", file=sys.stderr)
            return 2
        print(f"synctalk-client: unexpected {type(exc).__name__}: {exc} (--debug shows the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

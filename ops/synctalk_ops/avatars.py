"""Add, list and remove avatars in a rendered model repository.

An avatar = an id + its generator ONNX (trained, or the stand-in) + background frames (a video or
an image folder) + one crop rectangle per frame. ``add`` writes, for the repository's profile:

- ``<id>``: the avatar's ensemble (``avatar_template/ensemble_<audio preset>``): the client's model id;
- ``<id>_synctalk``: its generator (the ``synctalk`` config, renamed, with its own engine cache);
- ``<id>_background``: its background frames and crop rectangles (``avatar_template/background``),
  the assets stored next to the model;
- ``<id>_jpeg_encoder``: the ``jpeg_encoder`` config at the avatar's resolution and JPEG quality;
- ``<id>_audio_encoder`` (with ``--audio-encoder``): its own SyncTalk_2D audio encoder (the
  ``audio_encoder_synctalk2d`` config, renamed, with its own engine cache); without it the avatar
  uses the shared ``audio_encoder_synctalk2d``.

The validation, audio and ``frame_paste`` steps are shared by every avatar. On a server started
with ``--model-control-mode=explicit`` (``synctalk_ops.serve`` does), ``--load URL`` loads the new avatar
at once, and ``remove --url URL`` unloads it first; otherwise restart the server. Against a cluster
(``make cluster``), ``add --cluster`` places the avatar (``synctalk_ops.placement``: on ``--replicas``
replicas with room), loads it on them and has the edge route it there; ``remove --cluster`` routes it
away, then unloads it; ``list`` says which replicas hold each avatar.

The command line of ``synctalk_build.avatar_store`` (the store: add, remove, sync, list),
``synctalk_build.avatar_install`` (an avatar's models from ``avatar_template/``) and
``synctalk_ops.avatar_memory`` (the memory check of ``add --load``). Installed as ``synctalk-avatars``.

    synctalk-avatars add --id anna --background dataset/anna/full_body_img --boxes dataset/anna/landmarks \\
        --generator anna_synctalk.onnx --audio-encoder audio_encoder.onnx --audio-preset synctalk2d \\
        --load 127.0.0.1:8101
    synctalk-avatars list
    synctalk-avatars remove --id anna --url 127.0.0.1:8101
    synctalk-avatars add --id bob --background bob.mp4 --boxes 400,120,656,376 --replicas 2 --cluster
    synctalk-avatars remove --id bob --cluster
    synctalk-avatars rebalance --cluster
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

from synctalk_build import paths, repository_manifest
from synctalk_build.avatar_store import AvatarOptions, add, list_avatars, models_of, remove, sync
from synctalk_client.errors import CompositeError
from synctalk_common import contract
from synctalk_ops import placement
from synctalk_ops.avatar_memory import check_fits
from synctalk_ops.cluster import REPLICAS_FILE as CLUSTER_FILE
from synctalk_ops.cluster import memory_size


def _size(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)x(\d+)", text)
    if not match:
        raise argparse.ArgumentTypeError(f"size must be WIDTHxHEIGHT, got {text!r}")
    return int(match[1]), int(match[2])


def _boxes(text: str) -> Path | list[int]:
    if re.fullmatch(r"\s*-?\d+\s*(,\s*-?\d+\s*){3}", text):
        return [int(v) for v in text.split(",")]
    return Path(text)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--repository", type=Path, default=paths.RENDERED / "cpu", help="a rendered repository (make render)"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    p_add = commands.add_parser("add", help="add an avatar")
    p_add.add_argument("--id", required=True, help="the avatar id = the client's model id")
    p_add.add_argument("--background", required=True, type=Path, help="background video, or a folder of images")
    p_add.add_argument(
        "--boxes",
        required=True,
        type=_boxes,
        help="crop boxes file (.json/.npy/.txt, x0 y0 x1 y1 per frame), SyncTalk_2D's landmarks/ folder (*.lms), "
        "or one box x0,y0,x1,y1",
    )
    p_add.add_argument(
        "--generator", type=Path, help="the avatar's generator ONNX (default: the repository's stand-in)"
    )
    p_add.add_argument(
        "--audio-encoder",
        type=Path,
        help="the avatar's SyncTalk_2D audio encoder ONNX (synctalk_build.import_checkpoint --audio-encoder; "
        "default: the shared audio_encoder_synctalk2d)",
    )
    p_add.add_argument("--size", type=_size, help="output resolution WIDTHxHEIGHT (default: the background's)")
    p_add.add_argument("--jpeg-quality", type=int, default=contract.JPEG_QUALITY)
    p_add.add_argument(
        "--audio-preset",
        choices=contract.AUDIO_PRESETS,
        help="audio front end: the request-flow reference's, or SyncTalk_2D's (trained SyncTalk_2D generators); "
        "default: synctalk2d with --audio-encoder, else reference",
    )
    p_add.add_argument("--max-frames", type=int, help="use at most this many background frames")
    p_add.add_argument(
        "--arena",
        action="store_true",
        help="GPU profile: keep ONNX Runtime's memory arena for the avatar's models (holds the activations of "
        "the largest batch: GBs for a SyncTalk_2D generator); the CPU profile gives every generator an arena "
        "of one frame's activations either way (it runs one frame at a time, as fast on a CPU)",
    )
    p_add.add_argument(
        "--int8",
        action="store_true",
        help="also quantize its generator to INT8 for CPU hosts (onnxruntime static quantization calibrated on its "
        "own frames and speech), kept if at least 1.5x faster than FP32 on this host; prints the speed-up and PSNR",
    )
    p_add.add_argument(
        "--int8-audio",
        type=Path,
        metavar="AUDIO_FILE",
        help="with --int8: the avatar's voice to calibrate on (default: synthetic speech)",
    )
    p_add.add_argument(
        "--silent-frames",
        action="store_true",
        help="live streams: answer audio that is entirely silent with the avatar's own frames, ping-ponged, "
        "without running the generator (as LiveTalking does; off: silence is lip-synced like speech)",
    )
    p_add.add_argument(
        "--replicas",
        type=int,
        help="how many replicas of a cluster hold it (synctalk_ops.placement; default 2, or 1 with one replica)",
    )
    p_add.add_argument(
        "--cluster",
        nargs="?",
        const=CLUSTER_FILE,
        type=Path,
        metavar="REPLICAS_JSON",
        help=f"then place it on the running cluster (make cluster): loaded on its holders, routed there by the "
        f"edge (default file: {CLUSTER_FILE.relative_to(paths.ROOT)})",
    )
    p_add.add_argument("--replace", action="store_true", help="replace an avatar of the same id")
    p_add.add_argument(
        "--load", metavar="URL", help="then load it on the server at this gRPC URL (explicit model control)"
    )
    commands.add_parser("list", help="list the avatars (and, placed on a cluster, their replicas)")
    p_rebalance = commands.add_parser(
        "rebalance", help="place every avatar again over a running cluster's replicas, moving each with no request lost"
    )
    p_rebalance.add_argument("--cluster", type=Path, default=CLUSTER_FILE, metavar="REPLICAS_JSON")
    p_rebalance.add_argument(
        "--replica-memory", type=memory_size, help="each replica's budget for its avatars (default: as placed)"
    )
    p_sync = commands.add_parser("sync", help="install every stored avatar the repository lacks (a container's start)")
    p_sync.add_argument("--store", type=Path, help="the avatar store (default: the repository's)")
    p_sync.add_argument(
        "--every",
        type=float,
        metavar="SECONDS",
        help="then again every SECONDS, for ever: a replica's repository follows the store (a pod's avatar-sync)",
    )
    p_warm = commands.add_parser(
        "warm", help="have an avatar ready before a session's speech (avatars on demand: loaded where it is served)"
    )
    p_warm.add_argument("--id", required=True)
    p_warm.add_argument("--url", default="127.0.0.1:8001", help="the edge's (or a server's) gRPC URL")
    p_warm.add_argument("--timeout-s", type=float, default=60.0)
    p_rm = commands.add_parser("remove", help="remove an avatar")
    p_rm.add_argument("--id", required=True)
    p_rm.add_argument("--url", help="unload it first from the server at this gRPC URL")
    p_rm.add_argument(
        "--cluster",
        nargs="?",
        const=CLUSTER_FILE,
        type=Path,
        metavar="REPLICAS_JSON",
        help="take it off the running cluster first: routed away by the edge, then unloaded from its holders",
    )
    args = parser.parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except (ValueError, FileNotFoundError, FileExistsError, MemoryError) as exc:
        parser.exit(2, f"error: {exc}\n")
    except CompositeError as exc:  # the server said no (no API key, the model failed to load)
        parser.exit(1, f"error: {exc.category} error: {exc.message}\n")
    return 0


def cmd_add(args) -> None:
    options = AvatarOptions(
        generator=args.generator,
        size=args.size,
        jpeg_quality=args.jpeg_quality,
        max_frames=args.max_frames,
        replace=args.replace,
        audio_preset=args.audio_preset,
        audio_encoder=args.audio_encoder,
        arena=args.arena,
        silent_frames=args.silent_frames,
        replicas=args.replicas,
        int8=args.int8,
        int8_audio=args.int8_audio,
    )
    manifest = add(args.repository, args.id, args.background, args.boxes, options)
    names = models_of(manifest).values()
    print(
        f"added avatar {args.id}: {manifest['n_frames']} background frames "
        f"{manifest['width']}x{manifest['height']}, "
        f"JPEG quality {manifest['jpeg_quality']}, models {', '.join(names)}"
    )
    if "int8" in manifest.get("source", {}):
        from synctalk_build.int8 import describe

        print(describe(manifest["source"]["int8"]))
    if args.load:
        from synctalk_client import CompositeClient
        from synctalk_ops import api_key

        if args.load.split(":")[0] in ("127.0.0.1", "localhost", "[::1]"):  # the server runs here
            need = check_fits(args.repository, args.id)
            print(f"{args.id} needs about {need['total'] / 2**20:.0f} MB resident once loaded")
        with CompositeClient(args.load, api_key=api_key.read_key()) as client:
            client.load_model(args.id)
        print(f"loaded {args.id} on {args.load}")
    if args.cluster:
        from synctalk_ops.cluster import place_avatar, read_description

        try:
            holders = place_avatar(args.repository, args.id, read_description(args.cluster))
        except MemoryError:  # no room on the cluster: the avatar is not kept
            remove(args.repository, args.id)
            raise
        print(f"placed {args.id} on {', '.join(holders)}; the edge routes it there")


def cmd_sync(args) -> None:
    installed = sync(args.repository, args.store)
    print(f"installed {', '.join(installed)}" if installed else "every stored avatar is installed", flush=True)
    while args.every:
        time.sleep(args.every)
        installed = sync(args.repository, args.store)
        if installed:
            print(f"installed {', '.join(installed)}", flush=True)


def cmd_rebalance(args) -> None:
    from synctalk_ops.cluster import read_description, rebalance

    moves = rebalance(args.repository, read_description(args.cluster), args.replica_memory)
    for avatar_id, (gained, lost) in moves.items():
        print(f"moved {avatar_id}: onto {', '.join(gained) or '-'}, off {', '.join(lost) or '-'}")
    print(f"{len(moves)} avatars moved")


def cmd_list(args) -> None:
    placed = placement.load(repository_manifest.avatar_store(args.repository))
    for row in list_avatars(args.repository):
        where = ""
        if placed is not None:
            where = f"  on {', '.join(placed.holders.get(row['id'], [])) or 'no replica'}"
        print(
            f"{row['id']:<20} {row['n_frames']:>5} frames {row['width']}x{row['height']}  JPEG "
            f"q{row['jpeg_quality']}  "
            f"audio {row['source'].get('audio_preset', 'reference')}  "
            f"background {row['source'].get('background', '?')}  generator "
            f"{row['source'].get('generator', '?')}{where}"
        )


def cmd_remove(args) -> None:
    if args.cluster:
        from synctalk_ops.cluster import read_description, unplace_avatar

        holders = unplace_avatar(args.repository, args.id, read_description(args.cluster))
        print(f"taken off {', '.join(holders) or 'no replica'}")
    if args.url:
        from synctalk_client import CompositeClient
        from synctalk_ops import api_key

        with CompositeClient(args.url, api_key=api_key.read_key()) as client:
            if args.id in client.model_ids():  # already unloaded: nothing to do there
                client.unload_model(args.id)  # returns once the unload is complete
    print("removed", ", ".join(remove(args.repository, args.id)))


def cmd_warm(args) -> None:
    from synctalk_client import CompositeClient

    with CompositeClient(args.url) as client:
        took = client.warm(args.id, args.timeout_s)
    print(f"{args.id}: ready in {took:.2f} s")


COMMANDS = {
    "add": cmd_add,
    "sync": cmd_sync,
    "rebalance": cmd_rebalance,
    "list": cmd_list,
    "remove": cmd_remove,
    "warm": cmd_warm,
}


if __name__ == "__main__":
    raise SystemExit(main())

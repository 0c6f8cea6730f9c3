"""``synctalk-client web``: the page's subcommand, which the SDK's CLI takes from this service
(the ``synctalk_client.commands`` entry point) so that the SDK imports no service."""

from __future__ import annotations

from synctalk_client.cli import UsageError, positive
from synctalk_webrtc.options import add_peer_arguments
from synctalk_webrtc.turn import add_turn_arguments, turn_credentials


def run(args) -> int:
    try:
        from synctalk_web.app import serve
    except ModuleNotFoundError as exc:
        raise UsageError(
            f"the web page needs the 'web' extra ({exc.name} is missing): pip install 'synctalk-triton[web]'"
        ) from None
    try:
        turn = turn_credentials(args.turn, args.turn_secret_file, args.turn_ttl)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    serve(
        args.url,
        host=args.host,
        port=args.port,
        ice_servers=args.ice_server,
        tts=args.tts,
        turn=turn,
        peers={"max_peers": args.max_peers, "viewer_timeout_s": args.viewer_timeout},
    )
    return 0


def register(command) -> None:
    """Adds ``web`` through the CLI's ``command(name, func, help)`` (an argparse parser back)."""
    web = command("web", run, "a web page to try an avatar: render an upload or a recording, or stream live")
    web.add_argument(
        "--host", default="127.0.0.1", help="address the page listens on (default 127.0.0.1: this host only)"
    )
    web.add_argument("--port", type=positive, default=7860, help="the page's port (default 7860)")
    web.add_argument(
        "--ice-server",
        action="append",
        help="WebRTC: stun:HOST:PORT or turn:HOST:PORT,USER,CREDENTIAL (repeatable; else SYNCTALK_ICE_SERVERS)",
    )
    add_turn_arguments(web)
    add_peer_arguments(web)
    web.add_argument(
        "--tts",
        default="espeak:en",
        help="what says the text typed in the Live tab: espeak[:VOICE], piper:VOICE.onnx or module:Class[:ARG]",
    )

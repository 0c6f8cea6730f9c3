"""The page's server (aiohttp): static files, the model list, render jobs, the live WebSocket.

Every failure the page can meet reaches it as ``{"error": message, "category": ...}`` with the
status of its category (``contract.HTTP_STATUS``), or as an ``error`` message on the WebSocket:
the SDK's one-line messages, never a stack trace (those go to this process's log).
"""

from __future__ import annotations

import asyncio
import logging
import struct
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from aiohttp import WSMsgType, web

from synctalk_client.audio_file import AudioFileError, read_audio
from synctalk_client.client import CompositeClient
from synctalk_client.errors import CompositeError, PermissionDeniedError
from synctalk_common import contract

STATIC = Path(__file__).parent / "static"
MAX_UPLOAD_BYTES = 64 * 2**20  # an hour of 16 kHz 16-bit WAV is 115 MB: minutes of speech fit
MAX_RENDER_SECONDS = 600.0
KEPT_RENDERS = 8  # finished renders kept for playing and downloading; older ones are deleted
FRAME_HEADER = struct.Struct("<I")  # a live frame on the WebSocket: its index, then the JPEG
WARM_TIMEOUT_S = 60.0  # an avatar loaded on first use: its load, and the activator's refusals while it loads

log = logging.getLogger("synctalk_web")


class PageError(Exception):
    """A failure shown on the page: its message and HTTP status."""

    def __init__(self, message: str, status: int = 400, category: str = contract.CATEGORY_VALIDATION):
        super().__init__(message)
        self.message, self.status, self.category = message, status, category

    @classmethod
    def of(cls, error: CompositeError) -> PageError:
        return cls(error.message, error.http_status, error.category)

    def response(self) -> web.Response:
        return web.json_response({"error": self.message, "category": self.category}, status=self.status)


def unexpected(what: str, exc: BaseException) -> PageError:
    log.exception("%s failed", what)
    return PageError(f"{what} failed: {type(exc).__name__}: {exc}", 500, contract.CATEGORY_PROCESSING)


# --- the model list ----------------------------------------------------------------------------
def catalogue(url: str) -> dict:
    """The repository's model ids, avatars first: {"models": [{"id", "avatar", "images", "ready"}],
    "note"}: those ready, then the avatars stored but not loaded (``ready`` false, ``images``
    null: loaded on first use behind an activator; the page warms one up when it is chosen).
    Listing needs the server's API key (the repository index is a restricted API); without it the
    page offers the default model id and says how to list the rest."""
    with CompositeClient(url, timeout_s=10, retries=1, backoff_s=0.2) as client:
        note, stored = "", []
        try:
            ids = client.model_ids()
            stored = client.stored_avatars()
        except PermissionDeniedError:
            ids = [contract.DEFAULT_MODEL_ID]
            note = (
                f"only {contract.DEFAULT_MODEL_ID} is listed: listing the repository needs the server's API key "
                f"(start the page with {contract.API_KEY_FILE_ENV} or {contract.API_KEY_ENV} set)"
            )
        models = []
        for model_id in ids:
            try:
                avatar = client.takes_audio_only(model_id)
                images = client.avatar_images(model_id) if avatar else None
            except CompositeError:  # unloaded meanwhile
                continue
            models.append({"id": model_id, "avatar": avatar, "images": images, "ready": True})
        models += [{"id": avatar_id, "avatar": True, "images": None, "ready": False} for avatar_id in stored]
    models.sort(key=lambda m: (not m["avatar"], m["id"]))
    return {"models": models, "note": note}


def warm(url: str, model_id: str) -> dict:
    """An avatar ready before its session's speech (``CompositeClient.warm``): {"id", "seconds"}."""
    with CompositeClient(url) as client:
        return {"id": model_id, "seconds": round(client.warm(model_id, timeout_s=WARM_TIMEOUT_S), 3)}


# --- render jobs -------------------------------------------------------------------------------
class RenderJobs:
    """Renders running on a thread each: id -> state (progress, error, summary, video file)."""

    def __init__(self, url: str, folder: Path, workers: int = 2):
        self.url, self.folder = url, folder
        self.jobs: dict[str, dict] = {}
        self.lock = threading.Lock()
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="render")

    def start(self, model_id: str, audio: np.ndarray, start_frame: int, loop_back: bool) -> dict:
        job_id = uuid.uuid4().hex[:12]
        state = {
            "id": job_id,
            "model_id": model_id,
            "state": "rendering",
            "batches": 0,
            "done": 0,
            "audio_seconds": round(len(audio) / contract.SAMPLE_RATE, 3),
        }
        with self.lock:
            self.jobs[job_id] = state
            self._forget_old()
        self.pool.submit(self._run, state, audio, start_frame, loop_back)
        return dict(state)

    def _run(self, state: dict, audio: np.ndarray, start_frame: int, loop_back: bool) -> None:
        from synctalk_client.render import render_video

        def on_batch(done: int, total: int) -> None:
            state.update(done=done, batches=total)

        out = self.folder / f"{state['id']}.mp4"
        try:
            summary = render_video(
                self.url,
                state["model_id"],
                audio,
                out,
                progress=False,
                on_batch=on_batch,
                start_frame=start_frame,
                loop_back=loop_back,
            )
        except CompositeError as exc:
            state.update(state="error", error=exc.message, category=exc.category)
        except Exception as exc:
            error = unexpected("the render", exc)
            state.update(state="error", error=error.message, category=error.category)
        else:
            state.update(state="done", summary=summary, video=f"/api/render/{state['id']}/video.mp4")

    def _forget_old(self) -> None:
        finished = [j for j in self.jobs.values() if j["state"] != "rendering"]
        for job in finished[: max(0, len(finished) - KEPT_RENDERS)]:
            (self.folder / f"{job['id']}.mp4").unlink(missing_ok=True)
            del self.jobs[job["id"]]

    def get(self, job_id: str) -> dict:
        with self.lock:
            if job_id not in self.jobs:
                raise PageError(f"no render {job_id} (finished renders are kept {KEPT_RENDERS} at a time)", 404)
            return dict(self.jobs[job_id])

    def video(self, job_id: str) -> Path:
        state = self.get(job_id)
        if state["state"] != "done":
            raise PageError(f"render {job_id} is {state['state']}", 409)
        return self.folder / f"{job_id}.mp4"


def decode_upload(name: str, data: bytes, folder: Path) -> np.ndarray:
    """16 kHz mono float32 of an uploaded audio file, read as ``synctalk-client render`` reads one."""
    if not data:
        raise PageError(f"{contract.MSG_AUDIO_EMPTY}: the upload {name or '(unnamed)'} is empty")
    with tempfile.NamedTemporaryFile(dir=folder, suffix=Path(name or "upload").suffix or ".audio") as f:
        f.write(data)
        f.flush()
        try:
            audio = read_audio(Path(f.name))
        except AudioFileError as exc:  # its message names the temporary file: name the upload instead
            raise PageError(str(exc).replace(f.name, name or "the upload")) from None
    if len(audio) > MAX_RENDER_SECONDS * contract.SAMPLE_RATE:
        raise PageError(
            f"{name}: {len(audio) / contract.SAMPLE_RATE:.0f} s of audio; the page renders at most "
            f"{MAX_RENDER_SECONDS:.0f} s (synctalk-client render has no limit)"
        )
    return audio


# --- handlers ----------------------------------------------------------------------------------
def page_errors(handler):
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except PageError as exc:
            return exc.response()
        except CompositeError as exc:
            return PageError.of(exc).response()
        except web.HTTPException:
            raise
        except Exception as exc:
            return unexpected(request.path, exc).response()

    return wrapped


async def blocking(request: web.Request, call, *args):
    return await asyncio.get_running_loop().run_in_executor(request.app["pool"], call, *args)


@page_errors
async def index(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})


@page_errors
async def models(request: web.Request) -> web.StreamResponse:
    return web.json_response(await blocking(request, catalogue, request.app["url"]))


@page_errors
async def warm_avatar(request: web.Request) -> web.StreamResponse:
    """POST /api/warm {"id": ...}: answers once the avatar is loaded (its first use, behind an
    activator, loads it), so that the page says "loading the avatar" once, before any speech."""
    try:
        model_id = (await request.json())["id"]
    except (ValueError, KeyError, TypeError):
        raise PageError('warm: send {"id": "<avatar id>"}') from None
    if not model_id:
        raise PageError(contract.MSG_MODEL_ID_EMPTY)
    return web.json_response(await blocking(request, warm, request.app["url"], model_id))


@page_errors
async def start_render(request: web.Request) -> web.StreamResponse:
    fields, upload_name, data = {}, "", b""
    reader = await request.multipart()
    async for part in reader:
        if part.name == "audio":
            upload_name, data = part.filename or "recording.wav", await part.read()
        elif part.name:
            fields[part.name] = (await part.text()).strip()
    model_id = fields.get("model_id", "")
    if not model_id:
        raise PageError(contract.MSG_MODEL_ID_EMPTY)
    try:
        start_frame = int(fields.get("start_frame") or 0)
    except ValueError:
        raise PageError(f"start frame: {fields['start_frame']!r} is not a whole number") from None
    if start_frame < 0:
        raise PageError(f"start frame: {start_frame} is negative")
    loop_back = fields.get("loop_back", "true").lower() in ("1", "true", "on", "yes")
    audio = await blocking(request, decode_upload, upload_name, data, request.app["folder"])
    frames = await blocking(request, frames_of, request.app["url"], model_id, len(audio))
    if frames < 1:
        raise PageError(f"{upload_name}: {len(audio) / contract.SAMPLE_RATE:.2f} s of audio is too short for a frame")
    return web.json_response(request.app["jobs"].start(model_id, audio, start_frame, loop_back), status=202)


def frames_of(url: str, model_id: str, n_samples: int) -> int:
    with CompositeClient(url, timeout_s=10, retries=1, backoff_s=0.2) as client:
        return client.frames_for_audio(model_id, n_samples)


@page_errors
async def render_state(request: web.Request) -> web.StreamResponse:
    return web.json_response(request.app["jobs"].get(request.match_info["job"]))


@page_errors
async def render_video_file(request: web.Request) -> web.StreamResponse:
    path = request.app["jobs"].video(request.match_info["job"])
    download = request.query.get("download")
    headers = {"Content-Disposition": f'attachment; filename="{download}"'} if download else {}
    return web.FileResponse(path, headers={"Content-Type": "video/mp4", **headers})


# --- the live WebSocket ------------------------------------------------------------------------
async def live(request: web.Request) -> web.StreamResponse:
    """One live stream. The page sends {"avatar": id} first, then the audio as binary messages
    (float32 little-endian, 16 kHz mono), then {"end": true}. This sends {"type": "started"}, each
    frame as a binary message (``FRAME_HEADER`` index + JPEG) as soon as the server answers, and
    {"type": "ended", ...} with the serving delay, or {"type": "error", "message"}. Audio (or a
    second end) that arrives after the end is nothing to send: a page's microphone can post a block
    after its Stop asked for the end, and that stream ended well."""
    ws = web.WebSocketResponse(heartbeat=30, max_msg_size=4 * contract.STREAM_MAX_CHUNK * 4)
    await ws.prepare(request)
    session = LiveSession(request.app["url"], ws, request.app["pool"])
    request.app["live"].add(session)
    try:
        await session.run()
    finally:
        request.app["live"].discard(session)
        await session.close()
    return ws


class LiveSession:
    def __init__(self, url: str, ws: web.WebSocketResponse, pool: ThreadPoolExecutor):
        self.url, self.ws, self.pool = url, ws, pool
        self.loop = asyncio.get_running_loop()
        self.outbox: asyncio.Queue = asyncio.Queue()
        self.stream = None
        self.ending = False  # the end was sent: the stream takes no more audio
        self.failed = False
        self.frames = 0
        self.delays: list[float] = []
        self.samples = 0

    async def run(self) -> None:
        sender = asyncio.create_task(self._send_out())
        try:
            async for message in self.ws:
                if self.failed:
                    break
                if message.type == WSMsgType.TEXT:
                    await self._control(message.json())
                elif message.type == WSMsgType.BINARY:
                    self._audio(message.data)
                else:
                    break
        except PageError as exc:
            self._error(exc.message)
        except CompositeError as exc:
            self._error(exc.message)
        except Exception as exc:
            self._error(unexpected("the live stream", exc).message)
        finally:
            self.outbox.put_nowait(None)
            await sender

    async def _control(self, message: dict) -> None:
        if "avatar" in message and self.stream is None:
            avatar = str(message["avatar"] or "")
            if not avatar:
                raise PageError(contract.MSG_MODEL_ID_EMPTY)
            self.stream = await self.loop.run_in_executor(self.pool, self._open, avatar)
            self.outbox.put_nowait(
                {
                    "type": "started",
                    "avatar": avatar,
                    "stream_id": self.stream.stream_id,
                    "lookahead_ms": contract.STREAM_LOOKAHEAD * 1000 // contract.SAMPLE_RATE,
                    "fps": contract.FPS,
                    "sample_rate": contract.SAMPLE_RATE,
                }
            )
        elif message.get("end"):
            if self.stream is None:
                raise PageError("the stream was not started: send the avatar first")
            if self.ending:
                log.debug("stream %s: a second end, nothing to send", self.stream.stream_id)
                return
            self.ending = True
            self.stream.send_async(None, self._answered(end=True), end=True)
        else:
            raise PageError(f"unexpected message on the live socket: {sorted(message)}")

    def _open(self, avatar: str):
        with CompositeClient(self.url, timeout_s=10, retries=1, backoff_s=0.2) as client:
            return client.stream(avatar, timeout_s=60)

    def _audio(self, data: bytes) -> None:
        if self.stream is None:
            raise PageError("audio before the stream was started: send the avatar first")
        if self.ending:
            log.debug("stream %s: %d bytes of audio after the end, not sent", self.stream.stream_id, len(data))
            return
        if len(data) % 4:
            raise PageError(f"audio chunks are float32: {len(data)} bytes is not a whole number of samples")
        chunk = np.frombuffer(data, "<f4")
        for start in range(0, len(chunk), contract.STREAM_MAX_CHUNK):
            self.stream.send_async(chunk[start : start + contract.STREAM_MAX_CHUNK], self._answered())
        self.samples += len(chunk)

    def _answered(self, end: bool = False):
        def callback(frames, error) -> None:  # on the gRPC stream's thread
            now = time.perf_counter()
            self.loop.call_soon_threadsafe(self._deliver, frames, error, end, now)

        return callback

    def _deliver(self, frames, error, end: bool, now: float) -> None:
        if error is not None:
            self._error(error.message)
            return
        for frame in frames:
            self.frames += 1
            self.delays.append((now - frame.sent_at) * 1000.0)
            self.outbox.put_nowait(FRAME_HEADER.pack(frame.index) + frame.jpeg)
        if end:
            self.outbox.put_nowait(
                {
                    "type": "ended",
                    "frames": self.frames,
                    "samples": self.samples,
                    "serving_ms_p50": round(float(np.percentile(self.delays, 50)), 1) if self.delays else None,
                }
            )
            self.outbox.put_nowait(None)

    def _error(self, message: str) -> None:
        if not self.failed:
            self.failed = True
            self.outbox.put_nowait({"type": "error", "message": message})
            self.outbox.put_nowait(None)

    async def _send_out(self) -> None:
        while (item := await self.outbox.get()) is not None:
            if self.ws.closed:
                continue
            if isinstance(item, bytes):
                await self.ws.send_bytes(item)
            else:
                await self.ws.send_json(item)
        if not self.ws.closed:
            await self.ws.close()

    async def close(self) -> None:
        stream, self.stream = self.stream, None
        if stream is not None:  # a stream left open is ended on the server (LiveStream.__exit__)
            await self.loop.run_in_executor(self.pool, self._close_stream, stream)

    @staticmethod
    def _close_stream(stream) -> None:
        try:
            stream.__exit__(None, None, None)
        except CompositeError as exc:
            log.info("closing a live stream: %s", exc.message)


# --- the application ---------------------------------------------------------------------------
def make_app(
    url: str, ice_servers: list[str] | None = None, tts: str = "espeak:en", turn=None, peers: dict | None = None
) -> web.Application:
    """The page's server. It mounts the WebRTC service's routes (``synctalk_webrtc.service``:
    ``POST /offer``, ``GET /webrtc/config``) with ``ice_servers`` (``--ice-server`` values, else
    ``SYNCTALK_ICE_SERVERS``) and ``turn`` (``synctalk_webrtc.turn.TurnCredentials``: a TURN
    service's short-lived credentials), so the page plays WebRTC from its own origin; ``tts`` says
    the text typed in the Live tab (``synctalk_client.tts.engine``)."""
    app = web.Application(client_max_size=MAX_UPLOAD_BYTES)
    folder = tempfile.TemporaryDirectory(prefix="synctalk-web-")
    app["url"], app["folder"] = url, Path(folder.name)
    app["pool"] = ThreadPoolExecutor(max_workers=8, thread_name_prefix="sdk")
    app["jobs"] = RenderJobs(url, app["folder"])
    app["live"] = set()

    async def cleanup(app: web.Application) -> None:
        for ws in [s.ws for s in app["live"]]:
            await ws.close()
        app["jobs"].pool.shutdown(wait=False, cancel_futures=True)
        app["pool"].shutdown(wait=False, cancel_futures=True)
        folder.cleanup()

    app.on_shutdown.append(cleanup)
    app.router.add_get("/", index)
    app.router.add_get("/api/models", models)
    app.router.add_post("/api/warm", warm_avatar)
    app.router.add_post("/api/render", start_render)
    app.router.add_get("/api/render/{job}", render_state)
    app.router.add_get("/api/render/{job}/video.mp4", render_video_file)
    app.router.add_get("/api/live", live)
    app.router.add_static("/static/", STATIC)
    try:
        from synctalk_webrtc import service as webrtc
    except ImportError as exc:  # the page works without it: the Live tab's WebSocket path
        log.warning("no WebRTC (%s is missing: pip install 'synctalk-triton[webrtc]')", exc.name)
    else:
        settings = webrtc.Settings(url, webrtc.ice_servers(ice_servers), tts=tts, turn=turn, **(peers or {}))
        webrtc.add_routes(app, settings)
    return app


def serve(
    url: str,
    host: str = "127.0.0.1",
    port: int = 7860,
    ice_servers: list[str] | None = None,
    tts: str = "espeak:en",
    turn=None,
    peers: dict | None = None,
) -> None:
    """Serve the page until interrupted (Ctrl-C or SIGTERM); ``peers``: the WebRTC service's
    ``max_peers`` and ``viewer_timeout_s`` (``synctalk_webrtc.service.Settings``)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    print(f"the page: http://{host}:{port}/ (Triton at {url})", flush=True)
    web.run_app(make_app(url, ice_servers, tts, turn, peers), host=host, port=port, print=None, access_log=None)

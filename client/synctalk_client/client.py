"""CompositeClient: the reference service's InferBatchComposite over Triton's gRPC API.

Where each timing of a CompositeBatchResponse comes from:

- ``total_time_ms``: client wall clock from the call to the response: validation, input
  serialisation (or the shared-memory write), the gRPC ``ModelInfer`` round trip.
- ``validation_ms`` (``input_validator``), ``audio_processing_ms`` (``audio_features`` +
  ``audio_encoder``), ``inference_time_ms``
  (``synctalk``) and ``composite_time_ms`` (``frame_resize`` + ``jpeg_encoder``): server compute
  time (compute input + infer + output) of those composing models, from the difference of Triton's
  statistics API before and after the request; ``queue_time_ms``: their queueing time. Only
  attributable when this request was the only one the ensemble served in between; otherwise
  these are ``None``. Costs two small extra RPCs; switch off with ``stage_timings=False``.

Every call has a deadline (``timeout_s``, or ``infer_batch_composite(..., timeout_s=)`` per call):
the gRPC deadline, which cancels the call on the server too when it passes, and the request's
queue timeout, which Triton's queue policies honour (``allow_timeout_override``). A call that fails
with gRPC ``UNAVAILABLE`` (server restarting, connection refused) is retried up to ``retries``
times with exponential backoff. A request the server refuses for now (a queue full, or waited too
long: ``ServerBusyError``, "server busy") is sent again up to ``busy_retries`` times, backing off
with jitter, within the call's deadline; nothing else is retried (invalid input never is).

Model control and shared memory need the server's API key (Triton's restricted APIs: every
launcher of this project restricts them): ``api_key``, else ``SYNCTALK_API_KEY``, else the file
named by ``SYNCTALK_API_KEY_FILE``. It travels only with those calls; inference, health, model
configs and statistics are open. Without it such a call raises ``PermissionDeniedError`` with one
line to act on. Model ids are looked up through the model configuration API (open), so a client
without the key can infer; listing the repository (``list_models``, ``model_ids``) needs the key.

``shared_memory=True`` sends the inputs through Triton's system shared-memory extension (client
and server on the same host; see ``synctalk_client.shared_memory``). One region per client:
calls on one client are serialised in that mode, so use one client per thread.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Sequence
from contextlib import nullcontext

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from synctalk_client.credentials import api_key_from_environment, api_key_headers
from synctalk_client.errors import (  # noqa: F401  (busy_reason, is_retryable: the client's error rules)
    CompositeError,
    ModelNotFoundError,
    PermissionDeniedError,
    ProcessingError,
    ServerBusyError,
    ServerUnreachableError,
    ValidationError,
    busy_reason,
    error_from_exception,
    is_restricted,
    is_retryable,
    permission_error,
)
from synctalk_common import contract
from synctalk_common.messages import CompositeBatchRequest, CompositeBatchResponse

WARM_PAUSE_S = 0.25  # warm: between two asks while the avatar loads

_STAT_FIELDS = ("compute_input", "compute_infer", "compute_output")
MODEL_CONTROL = "model control"
SHARED_MEMORY = "shared memory"


class CompositeClient:
    """Thin client of the served ensemble.

    ``url``: Triton's gRPC endpoint. ``timeout_s``: deadline of each inference call.
    ``shared_memory``: send inputs through system shared memory (same host only; needs the key).
    ``api_key``: the server's key for model control and shared memory (see the module docstring).
    """

    def __init__(
        self,
        url: str = "127.0.0.1:8001",
        timeout_s: float = 120.0,
        stage_timings: bool = True,
        shared_memory: bool = False,
        retries: int = 2,
        backoff_s: float = 0.25,
        busy_retries: int = 3,
        busy_backoff_s: float = 0.5,
        api_key: str | None = None,
    ):
        self.url = url
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.busy_retries = busy_retries
        self.busy_backoff_s = busy_backoff_s
        self.stage_timings = stage_timings
        self._triton = grpcclient.InferenceServerClient(url=url)
        self._closed = False
        self._api_key = api_key_from_environment(api_key)
        self._ensemble_info: dict[str, dict] = {}
        self._shm = None
        if shared_memory:
            from synctalk_client.shared_memory import SharedMemoryInputs

            self._shm = self._restricted(SHARED_MEMORY, SharedMemoryInputs, self._triton)
        self._shm_lock = threading.Lock() if shared_memory else nullcontext()

    def close(self) -> None:
        """Release the connection; calls in flight on it (from any thread) end at once, cancelled,
        and later calls fail the same way."""
        self._closed = True
        if self._shm is not None:
            self._shm.close()
            self._shm = None
        self._triton.close()

    def __enter__(self) -> CompositeClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- server and models ------------------------------------------------------------------
    def health(self) -> dict[str, object]:
        """{"live", "ready", "models": {name: ready}} from Triton's health and repository APIs
        (without the API key: "models" is None and "models_error" says why)."""
        try:
            live, ready = self._rpc(self._triton.is_server_live), self._rpc(self._triton.is_server_ready)
            try:
                models = {m["name"]: m.get("state") == "READY" for m in self._index()}
            except PermissionDeniedError as exc:
                return {"live": live, "ready": ready, "models": None, "models_error": exc.message}
        except CompositeError as exc:
            return {"live": False, "ready": False, "models": {}, "error": exc.message}
        except InferenceServerException as exc:
            return {"live": False, "ready": False, "models": {}, "error": exc.message()}
        return {"live": live, "ready": ready, "models": models}

    def _index(self) -> list[dict]:
        index = self._restricted(MODEL_CONTROL, self._triton.get_model_repository_index, as_json=True)
        return list(index.get("models", []))

    def _restricted(self, api: str, call, *args, **kwargs):
        """A call to one of the server's restricted APIs: with the key, and without it (or with a
        wrong one) a PermissionDeniedError naming ``api``."""
        try:
            return self._rpc(call, *args, headers=api_key_headers(self._api_key), **kwargs)
        except InferenceServerException as exc:
            if is_restricted(exc):
                raise permission_error(api, key_sent=self._api_key is not None, exc=exc) from None
            raise

    def list_models(self) -> list[dict[str, str]]:
        """Every model of the repository: name, version, state, and whether it is a model id
        (an ensemble a CompositeBatchRequest can name) or a composing step."""
        rows = []
        ensembles = self._refresh_ensembles()
        for m in self._index():
            rows.append(
                {
                    "name": m["name"],
                    "version": m.get("version", ""),
                    "state": m.get("state", ""),
                    "reason": m.get("reason", ""),
                    "kind": "model_id" if m["name"] in ensembles else "step",
                }
            )
        return rows

    def warm(self, model_id: str, timeout_s: float = 60.0) -> float:
        """Have an avatar ready before any speech (a session opening): returns once the server
        answers for it, asking again while it is loading (avatars on demand: the edge's activator
        loads it on first use, "the avatar is loading" past its budget), within ``timeout_s``.
        Returns the seconds it took; raises ModelNotFoundError for an id nobody stored, the last
        ServerBusyError at the deadline."""
        started = time.perf_counter()
        while True:
            self._ensemble_info.pop(model_id, None)
            try:
                self._check_model(model_id)
                return time.perf_counter() - started
            except ServerBusyError:
                if time.perf_counter() - started + WARM_PAUSE_S >= timeout_s:
                    raise
                time.sleep(WARM_PAUSE_S)

    def model_ids(self) -> list[str]:
        """The model ids a request may name: every ensemble but those that are another's step (a
        SyncTalk_2D avatar's ``<id>_from_features``)."""
        ensembles = self._refresh_ensembles()
        nested = {step for info in self._ensemble_info.values() for step in info["nested"]}
        return sorted(ensembles - nested)

    def stored_avatars(self) -> list[str]:
        """The avatars of the repository that are not loaded here: stored, loaded on their first
        request where the edge has an activator (avatars on demand), else by ``load_model``. An
        avatar is known by its background step's name (``contract.avatar_models``)."""
        index = self._index()
        names = {m["name"] for m in index}
        ready = {m["name"] for m in index if m.get("state") == "READY"}
        suffix = contract.AVATAR_BACKGROUND_SUFFIX
        return sorted(n for n in names - ready if n + suffix in names and not n.endswith(suffix))

    def audio_preset(self, model_id: str) -> str:
        """The audio front end of a model id: "synctalk2d" where its ensemble runs SyncTalk_2D's
        (``audio_features_synctalk2d``), else "reference"."""
        self._check_model(model_id)
        steps = self._ensemble_info[model_id]["steps"]
        return "synctalk2d" if contract.SYNCTALK2D_AUDIO_FEATURES_MODEL in steps else "reference"

    def frames_for_audio(self, model_id: str, n_samples: int) -> int:
        """How many video frames a clip of ``n_samples`` 16 kHz samples makes on ``model_id``: one
        per whole 40 ms, or SyncTalk_2D's N + 2 (``contract.synctalk2d_frame_count``) where the
        model id runs its front end, as its own inference renders them."""
        if self.audio_preset(model_id) == "synctalk2d":
            return contract.synctalk2d_frame_count(n_samples)
        return int(n_samples) // contract.SAMPLES_PER_FRAME

    def stream(self, avatar: str, **kwargs):
        """A live stream to an avatar (``synctalk_client.stream.LiveStream``): ``send(chunk)``
        returns the frames that became ready, ``end()`` the rest. Checks the avatar first."""
        from synctalk_client.stream import LiveStream

        if not self.takes_audio_only(avatar):
            raise ValidationError(f"{avatar} is not an avatar: a stream needs one (its frames are on the server)")
        return LiveStream(self.url, avatar, **{"timeout_s": self.timeout_s, **kwargs})

    def avatar_images(self, model_id: str) -> int:
        """How many images an avatar's video has (the ``n_images`` parameter of its background
        step): what ``frame_loop.image_indices`` needs to pick each frame's image."""
        self._check_model(model_id)
        background = contract.avatar_models(model_id)["background"]
        config = self._config(background)
        value = config.get("parameters", {}).get(contract.AVATAR_IMAGES_PARAMETER, {}).get("string_value")
        if not value:
            raise ProcessingError(f"{model_id} is not an avatar with images (no {background} with n_images)")
        return int(value)

    def _refresh_ensembles(self) -> set:
        """Every ready model id of the repository (the index: needs the API key)."""
        ensembles = {}
        for m in self._index():
            if m.get("state") != "READY":
                continue
            config = self._config(m["name"])
            if config.get("platform") == "ensemble":
                ensembles[m["name"]] = self._describe(config)
        self._ensemble_info = ensembles
        return set(ensembles)

    def load_model(self, model_id: str) -> None:
        """Load (or reload) a model id and the steps it uses: the reference's LoadModel. Needs a
        server started with ``--model-control-mode=explicit``, and the API key."""
        self._ensemble_info.pop(model_id, None)
        self._restricted(MODEL_CONTROL, self._triton.load_model, model_id)

    def unload_model(self, model_id: str) -> None:
        """Unload a model id, and the avatar's own steps (``<id>_synctalk``, ``<id>_background``,
        ``<id>_jpeg_encoder``, ``<id>_audio_encoder``) where they are loaded; shared steps stay: the
        reference's UnloadModel. Returns when the unload is complete."""
        self._check_model(model_id)
        info = self._ensemble_info.pop(model_id)
        self._restricted(MODEL_CONTROL, self._triton.unload_model, model_id)
        own = set(contract.avatar_models(model_id, own_audio_encoder=True).values()) - {model_id}
        unloaded = [model_id, *(step for step in (*info["nested"], *info["steps"]) if step in own)]
        for step in unloaded[1:]:
            self._restricted(MODEL_CONTROL, self._triton.unload_model, step)
        self._wait_unloaded(unloaded)

    def _wait_unloaded(self, names: Sequence[str], poll_s: float = 0.05) -> None:
        """Triton unloads asynchronously (a model stays UNLOADING until its in-flight requests end
        and its instances are gone): return when none of ``names`` is still loaded or unloading,
        or raise ProcessingError after ``timeout_s``."""
        deadline = time.monotonic() + self.timeout_s
        while True:
            states = {m["name"]: m.get("state", "") for m in self._index()}
            busy = [n for n in names if states.get(n) in ("READY", "UNLOADING")]
            if not busy:
                return
            if time.monotonic() > deadline:
                raise ProcessingError(f"unload of {', '.join(busy)} not complete after {self.timeout_s:g} s")
            time.sleep(poll_s)

    def model_stats(self, model_id: str = "") -> dict[str, dict]:
        """Triton's statistics of one model (or all with ""): the reference's GetModelStats."""
        try:
            stats = self._rpc(
                self._triton.get_inference_statistics,
                model_id,
                as_json=True,
                headers=contract.edge_headers(contract.model_owner(model_id)) if model_id else None,
            )
        except InferenceServerException as exc:
            raise error_from_exception(exc, model_id) from None
        return {m["name"]: m for m in stats.get("model_stats", [])}

    def _check_model(self, model_id: str) -> None:
        """Raise ModelNotFoundError unless a ready ensemble is called ``model_id``; remember its
        inputs and steps. Asks the model configuration API (open to every client), one model."""
        if model_id in self._ensemble_info:
            return
        try:
            config = self._config(model_id)
        except InferenceServerException as exc:  # an unknown or unloaded model: ModelNotFoundError
            raise error_from_exception(exc, model_id) from None
        if config.get("platform") != "ensemble":  # a composing step is not a model id
            raise ModelNotFoundError(contract.MSG_MODEL_NOT_FOUND.format(model_id=model_id))
        self._ensemble_info[model_id] = self._describe(config)

    def _describe(self, config: dict) -> dict:
        """``_ensemble_info`` of an ensemble's config, with the steps of the ensembles it runs as
        steps (a SyncTalk_2D avatar's ``<id>_from_features``) in their place: "steps" the models
        that compute, "nested" those ensembles."""
        info = _ensemble_info(config)
        steps, nested = [], []
        for step in info["steps"]:
            inner = self._config(step) if step.endswith(contract.AVATAR_FROM_FEATURES_SUFFIX) else {}
            if inner.get("platform") == "ensemble":
                described = self._describe(inner)
                nested += [step, *described["nested"]]
                steps += described["steps"]
            else:
                steps.append(step)
        info["steps"], info["nested"] = tuple(steps), tuple(nested)
        return info

    # -- inference ----------------------------------------------------------------------------
    def infer_batch_composite(
        self, request: CompositeBatchRequest, timeout_s: float | None = None, priority: int = 0
    ) -> CompositeBatchResponse:
        """Validate, send one batch, return one JPEG per frame (or success=False and the error).
        ``timeout_s``: this call's deadline (default: the client's ``timeout_s``), busy retries
        included. ``priority``: Triton's priority level (0: the default, level 1, live;
        ``contract.PRIORITY_OFFLINE``: served after every live request waiting, as render sends)."""
        started = time.perf_counter()
        try:
            request.validate_header()  # the reference's order: model id, model exists, sizes
            self._check_model(request.model_id)
            return self._infer(request, started, self.timeout_s if timeout_s is None else timeout_s, priority)
        except CompositeError as error:
            return CompositeBatchResponse.failure(error, _ms_since(started), request.start_frame_idx)
        except InferenceServerException as exc:
            error = error_from_exception(exc, request.model_id)
            return CompositeBatchResponse.failure(error, _ms_since(started), request.start_frame_idx)

    # -- one step at a time (synctalk_client.inspect) ------------------------------------------
    def ensemble_steps(self, model_id: str) -> list[dict]:
        """The steps of a model id's ensemble (``model_name``, ``input_map``, ``output_map``), in
        order; an ensemble it runs as a step (a SyncTalk_2D avatar's ``<id>_from_features``)
        replaced by its own steps, their maps on the outer ensemble's tensor names."""
        self._check_model(model_id)
        return self._flat_steps(model_id, {}, self._ensemble_info[model_id]["nested"])

    def _flat_steps(self, ensemble: str, outer: dict[str, str], nested: tuple[str, ...]) -> list[dict]:
        steps = []
        for step in self._config(ensemble).get("ensemble_scheduling", {}).get("step", []):
            if step["model_name"] in nested:
                ins, outs = step.get("input_map", {}), step.get("output_map", {})
                tensors = {
                    **{k: outer.get(v, v) for k, v in ins.items()},
                    **{k: outer.get(v, v) for k, v in outs.items()},
                }
                steps += self._flat_steps(step["model_name"], tensors, nested)
                continue
            steps.append(
                {
                    **step,
                    "input_map": {k: outer.get(v, v) for k, v in step.get("input_map", {}).items()},
                    "output_map": {k: outer.get(v, v) for k, v in step.get("output_map", {}).items()},
                }
            )
        return steps

    def input_tensors(self, request: CompositeBatchRequest) -> dict[str, np.ndarray]:
        """The ensemble inputs a request becomes, by tensor name (what ``infer_batch_composite`` sends)."""
        request.validate_header()
        self._check_model(request.model_id)
        return request.tensors(self._inputs_of(request.model_id), optional=self._optional_of(request.model_id))

    def infer_model(self, model: str, inputs: dict[str, np.ndarray], outputs: Sequence[str]) -> dict[str, np.ndarray]:
        """One call of any model (an ensemble's step) with raw tensors: {output name: array}."""
        result = self._call_with_retries(
            model, _grpc_inputs(inputs), [grpcclient.InferRequestedOutput(n) for n in outputs]
        )
        return {name: result.as_numpy(name) for name in outputs}

    def input_names(self, model_id: str) -> frozenset:
        """The input names a model id's ensemble takes."""
        self._check_model(model_id)
        return self._inputs_of(model_id)

    def _inputs_of(self, model_id: str) -> frozenset:
        """The input names of a model id's ensemble (as of the last repository refresh)."""
        return frozenset(
            self._ensemble_info.get(model_id, {}).get("inputs", (contract.VISUAL.name, contract.AUDIO.name))
        )

    def _optional_of(self, model_id: str) -> frozenset:
        return frozenset(self._ensemble_info.get(model_id, {}).get("optional", ()))

    def takes_audio_only(self, model_id: str) -> bool:
        """Whether a model id serves audio-only requests (an avatar: its frames are on the server)."""
        self._check_model(model_id)
        return contract.VISUAL.name in self._optional_of(model_id)

    def _infer(
        self, request: CompositeBatchRequest, started: float, timeout_s: float, priority: int = 0
    ) -> CompositeBatchResponse:
        outputs = [grpcclient.InferRequestedOutput(contract.JPEG.name)]
        takes, optional = self._inputs_of(request.model_id), self._optional_of(request.model_id)
        before = self._statistics() if self.stage_timings else None
        with self._shm_lock:
            if self._shm is not None:
                inputs = self._shm.inputs(request, takes, optional)
            else:
                inputs = _grpc_inputs(request.tensors(takes, optional=optional))
            result = self._call_while_busy(
                request.model_id, inputs, outputs, started, timeout_s, priority, request.batch_size
            )
        total_ms = _ms_since(started)
        jpegs = result.as_numpy(contract.JPEG.name)
        frames = [bytes(x) for x in jpegs.reshape(-1)]
        if len(frames) != request.batch_size:
            raise ProcessingError(f"server returned {len(frames)} frames for a batch of {request.batch_size}")
        response = CompositeBatchResponse(
            success=True, composited_frames=frames, total_time_ms=total_ms, start_frame_idx=request.start_frame_idx
        )
        if before is not None:
            self._attribute_stages(response, request.model_id, before, self._ensemble_info[request.model_id]["steps"])
        return response

    def _call_with_retries(
        self,
        model_id: str,
        inputs,
        outputs,
        timeout_s: float | None = None,
        priority: int = 0,
        frames: int | None = None,
    ):
        """One inference (``frames``: what the edge counts it as; None: a bulk request)."""
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        return self._rpc(
            self._triton.infer,
            model_id,
            inputs,
            outputs=outputs,
            client_timeout=timeout_s,
            timeout=max(1, int(timeout_s * 1e6)),  # the queue timeout (allow_timeout_override)
            priority=priority,
            headers=contract.edge_headers(model_id, frames),
        )

    def _call_while_busy(
        self,
        model_id: str,
        inputs,
        outputs,
        started: float,
        timeout_s: float,
        priority: int = 0,
        frames: int | None = None,
    ):
        """``_call_with_retries``, sent again while the server answers "busy" (up to
        ``busy_retries`` times, exponential backoff with full jitter, never past the deadline);
        the last refusal is a ServerBusyError saying how often and for how long it tried."""
        for attempt in range(self.busy_retries + 1):
            left = timeout_s - (time.perf_counter() - started)
            try:
                return self._call_with_retries(model_id, inputs, outputs, max(left, 0.001), priority, frames)
            except InferenceServerException as exc:
                reason = busy_reason(exc)
                if reason is None:
                    raise
                pause = random.uniform(0, self.busy_backoff_s * 2**attempt)
                spent = time.perf_counter() - started
                if attempt == self.busy_retries or spent + pause >= timeout_s:
                    tries = f"; tried {attempt + 1} time(s) over {spent:.1f} s" if attempt else ""
                    raise ServerBusyError(
                        contract.MSG_SERVER_BUSY.format(model_id=model_id, reason=reason + tries)
                    ) from exc
                time.sleep(pause)
        raise AssertionError("unreachable")

    def _config(self, model: str) -> dict:
        """A model's configuration, asked of a replica holding it (the edge routes by the header)."""
        headers = contract.edge_headers(contract.model_owner(model))
        return self._rpc(self._triton.get_model_config, model, as_json=True, headers=headers).get("config", {})

    def _rpc(self, call, *args, **kwargs):
        """One gRPC call, retried with exponential backoff while the server is UNAVAILABLE
        (restarting, connection refused); still unavailable after the retries:
        ServerUnreachableError naming the URL. Other errors are raised as they are."""
        for attempt in range(self.retries + 1):
            try:
                return call(*args, **kwargs)
            except ValueError:  # grpc: "Cannot invoke RPC on closed channel!"
                if self._closed:
                    raise ProcessingError("cancelled by the client: the client was closed") from None
                raise
            except InferenceServerException as exc:
                if not is_retryable(exc):
                    raise
                if attempt == self.retries:
                    raise ServerUnreachableError(f"server not reachable at {self.url}: {exc.message() or exc}") from exc
                time.sleep(self.backoff_s * 2**attempt)

    def statistics_snapshot(self) -> dict[str, dict[str, int]]:
        """Every model's served requests, compute and queue time so far (Triton's statistics API):
        the ``since`` of ``stage_totals``."""
        return self._statistics()

    def stage_totals(self, model_id: str, since: dict[str, dict[str, int]]) -> dict[str, float]:
        """Milliseconds the server spent on ``model_id``'s steps since the snapshot ``since``, per
        stage (the fields of ``contract.STAGE_MODELS``) and waiting in their queues: where a render
        of many batches went. Shared steps count other clients' requests too."""
        self._check_model(model_id)
        totals = _stage_ms(since, self._statistics(), self._ensemble_info[model_id]["steps"])
        return {name: round(ms, 1) for name, ms in totals.items()}

    def _statistics(self) -> dict[str, dict[str, int]]:
        stats = self._rpc(self._triton.get_inference_statistics, as_json=True)
        table = {}
        for m in stats.get("model_stats", []):
            inference = m.get("inference_stats", {})
            row = {"count": int(inference.get("success", {}).get("count", 0))}
            row["compute_ns"] = sum(int(inference.get(f, {}).get("ns", 0)) for f in _STAT_FIELDS)
            row["queue_ns"] = int(inference.get("queue", {}).get("ns", 0))
            table[m["name"]] = row
        return table

    def _attribute_stages(
        self, response: CompositeBatchResponse, model_id: str, before: dict[str, dict[str, int]], steps
    ) -> None:
        # The ensemble and its composing models record their statistics as they release a request,
        # which can trail the ensemble's response by a moment: poll briefly until the ensemble
        # itself and every step have counted this request.
        deadline = time.perf_counter() + 0.2
        while True:
            after = self._statistics()
            delta = {n: {k: after[n][k] - before.get(n, {}).get(k, 0) for k in after[n]} for n in after}
            if all(delta.get(m, {}).get("count", 0) >= 1 for m in (model_id, *steps)) or time.perf_counter() > deadline:
                break
            time.sleep(0.002)
        if delta.get(model_id, {}).get("count") != 1 or any(delta.get(m, {}).get("count") != 1 for m in steps):
            return  # other requests were served meanwhile: not attributable to this one
        for field_name, ms in _stage_ms(before, after, steps).items():
            setattr(response, field_name, ms)


def _stage_ms(before: dict[str, dict[str, int]], after: dict[str, dict[str, int]], steps) -> dict[str, float]:
    """Compute milliseconds per stage (``contract.STAGE_MODELS``' fields) and queue milliseconds
    (``queue_time_ms``) that ``steps`` added between two statistics snapshots."""
    totals = dict.fromkeys((*contract.STAGE_MODELS, "queue_time_ms"), 0.0)
    for step in steps:
        now, then = after.get(step, {}), before.get(step, {})
        totals[contract.stage_of(step)] += (now.get("compute_ns", 0) - then.get("compute_ns", 0)) / 1e6
        totals["queue_time_ms"] += (now.get("queue_ns", 0) - then.get("queue_ns", 0)) / 1e6
    return totals


def _ensemble_info(config: dict) -> dict:
    """What the client needs of an ensemble's config: its inputs, optional ones, steps in order."""
    inputs = config.get("input", [])
    return {
        "inputs": {t["name"] for t in inputs},
        "optional": {t["name"] for t in inputs if t.get("optional")},
        "steps": tuple(step["model_name"] for step in config.get("ensemble_scheduling", {}).get("step", [])),
    }


def _grpc_inputs(tensors: dict[str, np.ndarray]) -> list[grpcclient.InferInput]:
    inputs = []
    for name, array in tensors.items():
        tensor = grpcclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def _ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0

"""An avatar on a running server for as long as a block runs: added to its repository from a
folder of images (one face box for all), loaded, then unloaded and removed (the tests' and the
benchmarks' avatars)."""

from __future__ import annotations

import contextlib

from synctalk_build import avatar_store
from synctalk_client import CompositeClient


@contextlib.contextmanager
def loaded_avatar(server, avatar_id: str, folder, box, **add_options):
    """``server``: a ``synctalk_ops.serve.TritonServer`` (explicit model control); ``add_options``:
    ``avatar_store.AvatarOptions``'s (audio_preset, silent_frames, replace, ...)."""
    avatar_store.add(server.repository, avatar_id, folder, box, options=avatar_store.AvatarOptions(**add_options))
    try:
        with CompositeClient(server.grpc_url) as client:
            client.load_model(avatar_id)
            yield avatar_id
            client.unload_model(avatar_id)
    finally:
        avatar_store.remove(server.repository, avatar_id)

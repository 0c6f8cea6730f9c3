"""Avatars added to a live test server for a module's tests, loaded, then unloaded and removed: a
one-frame avatar (a flat 96x64 frame, face box 64x64), or any folder of images."""

from __future__ import annotations

import contextlib

import numpy as np

from devtools.avatars import loaded_avatar


@contextlib.contextmanager
def one_frame_avatar(server, tmp_path_factory, avatar_id: str):
    import cv2

    folder = tmp_path_factory.mktemp(avatar_id)
    cv2.imwrite(str(folder / "0.png"), np.full((64, 96, 3), 90, np.uint8))
    with loaded_avatar(server, avatar_id, folder, [16, 0, 80, 64]):
        yield avatar_id

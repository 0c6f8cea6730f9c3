"""Which of an avatar's images each video frame is drawn on: SyncTalk_2D's loop.

Upstream's inference (``inference_328.py``; the fork's ``inference_module.generate_video``) keeps
an image index starting at 0 with a step of 0. Before each frame the step turns to -1 when the
index is past the last image minus one (or, with ``loop_back``, past half the clip's frame count)
and to +1 when it is below 1; the index moves by the step and the frame uses image
``index + start_frame``. So audio frame i is drawn on image i + 1, the video bounces back and forth
(ping-pong: no jump cut), and with ``loop_back`` the clip turns at its midpoint and ends on the
image it began with.

"The last image" is the number of images - 1 (the author's ``len(os.listdir(img_dir)) - 1``; the
fork's refactor, ``len(img_files)``, lets the index reach one past the end and fail). With a start
frame the bounce stays within images ``start_frame .. n_images - 1``: upstream bounces at the
last image whatever the start frame and reads missing files past it, so wherever upstream's run
succeeds the images are the same.

``image_indices`` is the loop for a clip whose length is known (``render``); ``live_images`` is its
closed form without loop back, which needs no length (a live stream, and a request that sends only
``FRAME_INDEX``); ``fold`` brings any image number back into the avatar's images the same way.
"""

from __future__ import annotations

import numpy as np


def _last(n_images: int, start_frame: int) -> int:
    """The highest index the loop reaches: images start_frame .. n_images - 1."""
    if int(n_images) < 1:
        raise ValueError(f"an avatar has at least one image, got {n_images}")
    if not 0 <= int(start_frame) < int(n_images):
        raise ValueError(
            f"start frame must be 0..{int(n_images) - 1} (the avatar has {n_images} images), got {start_frame}"
        )
    return int(n_images) - 1 - int(start_frame)


def image_indices(n_images: int, n_frames: int, start_frame: int = 0, loop_back: bool = True) -> np.ndarray:
    """The image of each of a clip's ``n_frames`` frames, [n_frames] int64, as upstream's loop picks them."""
    last = _last(n_images, start_frame)
    images = np.empty(int(n_frames), np.int64)
    index, step = 0, 0
    for i in range(int(n_frames)):
        if index > last - 1 or (loop_back and index > n_frames / 2):
            step = -1
        if index < 1:
            step = 1
        index += step
        images[i] = start_frame + min(index, last)  # one image: the loop would step to 1 and back
    return images


def fold(image, n_images: int) -> np.ndarray:
    """Any image number >= 0 brought back into 0 .. n_images - 1 by bouncing at both ends
    (n_images .. 2 n_images - 2 run back down, and so on): the ping-pong of ``live_images``."""
    image = np.asarray(image, np.int64)
    last = int(n_images) - 1
    if last < 1:
        return np.zeros_like(image)
    phase = image % (2 * last)
    return np.where(phase <= last, phase, 2 * last - phase)


def live_images(frame_index, n_images: int, start_frame: int = 0) -> np.ndarray:
    """The image of frame ``frame_index`` (counted from 0) of a clip of unknown length: the loop of
    ``image_indices`` without loop back, in closed form (audio frame i on image i + 1, ping-pong)."""
    last = _last(n_images, start_frame)
    return start_frame + fold(np.asarray(frame_index, np.int64) + 1, last + 1)

"""Which image each frame is drawn on: synctalk_common.frame_loop against a line-by-line
transcription of SyncTalk_2D's loop (tests/synctalk2d_loop.py)."""

import numpy as np
import pytest

from synctalk_common import frame_loop
from tests.synctalk2d_loop import upstream_images

CLIPS = (1, 2, 3, 7, 15, 16, 40, 101)  # frames: shorter and longer than the videos below
VIDEOS = (2, 3, 5, 12, 25)  # images


@pytest.mark.parametrize("n_images", VIDEOS)
@pytest.mark.parametrize("loop_back", [False, True])
def test_the_loop_is_upstreams_wherever_upstream_reads_an_image(n_images, loop_back):
    for n_frames in CLIPS:
        for start in range(n_images):
            ours = frame_loop.image_indices(n_images, n_frames, start, loop_back)
            theirs = upstream_images(n_images, n_frames, start, loop_back)
            assert ours.dtype == np.int64 and len(ours) == n_frames
            if max(theirs) < n_images:  # upstream's run succeeds: the same images
                assert ours.tolist() == theirs, (n_frames, start)
            else:  # upstream reads past the last image (start frame too far): ours bounce there
                assert ours.min() >= start and ours.max() <= n_images - 1, (n_frames, start)
            assert np.abs(np.diff(ours)).max(initial=0) <= 1, "no jump cut: neighbours one image apart"


def test_audio_frame_i_is_drawn_on_image_i_plus_1_and_the_video_ping_pongs():
    assert frame_loop.image_indices(4, 10, loop_back=False).tolist() == [1, 2, 3, 2, 1, 0, 1, 2, 3, 2]
    assert frame_loop.image_indices(4, 10, start_frame=1, loop_back=False).tolist() == [2, 3, 2, 1, 2, 3, 2, 1, 2, 3]


def test_loop_back_turns_at_the_midpoint_and_ends_on_the_image_it_began_with():
    for n_frames in (4, 9, 15, 16, 24):  # shorter than twice the video: loop back turns it
        images = frame_loop.image_indices(25, n_frames, loop_back=True)
        assert images.max() <= n_frames // 2 + 1
        assert abs(int(images[-1]) - int(images[0])) <= 1, images
        assert images.tolist() == upstream_images(25, n_frames, loop_back=True)
    # without loop back the same clip runs on into the video
    assert frame_loop.image_indices(25, 15, loop_back=False).tolist() == list(range(1, 16))


def test_the_fork_refactor_reads_one_past_the_last_image_and_the_authors_loop_does_not():
    # "the last image" is the number of images - 1, as the author's inference has it
    assert max(upstream_images(5, 30, author=False)) == 5  # image 5 of 0..4: a missing file upstream
    assert frame_loop.image_indices(5, 30).max() == 4 == max(upstream_images(5, 30))


@pytest.mark.parametrize("n_images", (1, 2, 3, 7))
def test_live_images_are_the_loop_without_loop_back_in_closed_form(n_images):
    frames = np.arange(200)
    for start in range(n_images):
        expected = frame_loop.image_indices(n_images, len(frames), start, loop_back=False)
        assert frame_loop.live_images(frames, n_images, start).tolist() == expected.tolist()
        # a batch from the middle of a stream gets the same images (no state needed)
        assert frame_loop.live_images(frames[37:45], n_images, start).tolist() == expected[37:45].tolist()


def test_one_image_is_every_frame_and_fold_bounces_into_range():
    assert frame_loop.image_indices(1, 5).tolist() == [0] * 5
    assert frame_loop.fold(np.arange(10), 4).tolist() == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3]
    assert frame_loop.fold(np.arange(3), 1).tolist() == [0, 0, 0]


@pytest.mark.parametrize("n_images, start", [(0, 0), (3, 3), (3, -1)])
def test_a_start_frame_outside_the_video_is_refused_by_name(n_images, start):
    with pytest.raises(ValueError, match="start frame|at least one image"):
        frame_loop.image_indices(n_images, 10, start)

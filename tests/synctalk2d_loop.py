"""SyncTalk_2D's frame loop, transcribed line by line from upstream (independent of
``synctalk_common.frame_loop``, which the tests compare with it).

``inference_328.py`` (the author's, 9e82dcc)::

    len_img = len(os.listdir(img_dir)) - 1
    step_stride = 0
    img_idx = 0
    for i in tqdm(range(audio_feats.shape[0])):
        if img_idx>len_img - 1:
            step_stride = -1
        if img_idx<1:
            step_stride = 1
        img_idx += step_stride
        img_path = img_dir + str(img_idx+args.start_frame)+'.jpg'

``inference_module.generate_video`` (the fork's HEAD) adds ``loop_back`` (default True)::

            if img_idx > len_img - 1 or (loop_back and img_idx > total_frames / 2):
                step_stride = -1

(with ``len_img = len(img_files)``, one more than the author's: the index can reach one past the
last image; ``author=False`` reproduces that.)
"""

from __future__ import annotations


def upstream_images(
    n_images: int, total_frames: int, start_frame: int = 0, loop_back: bool = False, author: bool = True
) -> list[int]:
    """The image file number upstream reads for each of ``total_frames`` frames."""
    len_img = n_images - 1 if author else n_images
    step_stride = 0
    img_idx = 0
    files = []
    for _ in range(total_frames):
        if img_idx > len_img - 1 or (loop_back and img_idx > total_frames / 2):
            step_stride = -1
        if img_idx < 1:
            step_stride = 1
        img_idx += step_stride
        files.append(img_idx + start_frame)
    return files

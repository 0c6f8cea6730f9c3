"""An independent reference of SyncTalk_2D's inference (``inference_328.py``), written in the tests
from the facts of ``../shared/reference/synctalk2d.md``: PyTorch (CPU) functional forwards of the
generator and the AudioEncoder from their state dicts, the wav2lip mel with librosa and scipy,
the window list padded at both ends, the 328 bicubic crop, the rectangle mask, the truncated
prediction written into the 328 crop and the bicubic resize back into the frame.

Nothing here imports the served code's maths; the tests compare the two. Random weights are
saved under the real names; ``calibrate`` sets the batch-norm statistics from real inputs (the
batch statistics, as a trained network's running statistics follow its data), so the output
depends visibly on the face and on the audio.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tests.synctalk2d_loop import upstream_images

torch = __import__("pytest").importorskip("torch", reason="torch (CPU build) is in requirements.txt")
F = torch.nn.functional

# utils.AudioEncoder: (in, out, kernel, stride, padding, residual) of blocks audio_encoder.0 .. 12
AUDIO_ENCODER_BLOCKS = (
    (1, 32, 3, 1, 1, False),
    (32, 32, 3, 1, 1, True),
    (32, 32, 3, 1, 1, True),
    (32, 64, 3, (3, 1), 1, False),
    (64, 64, 3, 1, 1, True),
    (64, 64, 3, 1, 1, True),
    (64, 128, 3, 3, 1, False),
    (128, 128, 3, 1, 1, True),
    (128, 128, 3, 1, 1, True),
    (128, 256, 3, (3, 2), 1, False),
    (256, 256, 3, 1, 1, True),
    (256, 512, 3, 1, 0, False),
    (512, 512, 1, 1, 0, False),
)
MASK_RECT = (5, 5, 310, 305)  # cv2.rectangle's (x, y, w, h) in the 320 face


# --- state dicts under the real names ------------------------------------------------------------
def _bn_entries(rng, prefix: str, c: int, state: dict, small: bool = False) -> None:
    state[prefix + ".weight"] = rng.uniform(0.1, 0.3, c) if small else rng.uniform(0.8, 1.2, c)
    state[prefix + ".bias"] = rng.normal(0, 0.05, c)
    state[prefix + ".running_mean"] = rng.normal(0, 0.05, c)
    state[prefix + ".running_var"] = rng.uniform(0.5, 1.5, c)


def audio_encoder_state_dict(seed: int = 0, prefix: str = "audio_encoder.") -> dict[str, torch.Tensor]:
    """Random AudioEncoder weights, named as its state dict (``prefix`` "" as the shipped
    ``audio_visual_encoder.pth`` stores them)."""
    rng = np.random.default_rng(seed)
    state = {}
    for n, (cin, cout, k, _, _, _) in enumerate(AUDIO_ENCODER_BLOCKS):
        name = f"{prefix}{n}.conv_block"
        state[f"{name}.0.weight"] = rng.normal(0, np.sqrt(2.0 / (cin * k * k)), (cout, cin, k, k))
        state[f"{name}.0.bias"] = rng.normal(0, 0.01, cout)
        _bn_entries(rng, f"{name}.1", cout, state)
    return {k: torch.from_numpy(np.asarray(v, np.float32)) for k, v in state.items()}


def generator_state_dict(names_and_shapes: Sequence[tuple[str, tuple]], seed: int = 0) -> dict[str, torch.Tensor]:
    """Random generator weights for ``Model(6, "ave")``'s entries (name, shape)."""
    rng = np.random.default_rng(seed)
    state = {}
    for name, shape in names_and_shapes:
        if name.endswith(".running_var"):
            value = rng.uniform(0.5, 1.5, shape)
        elif name.endswith(".running_mean"):
            value = rng.normal(0, 0.05, shape)
        elif name.endswith(".weight") and len(shape) == 4:
            value = rng.normal(0, np.sqrt(1.0 / np.prod(shape[1:])), shape)
        elif name.endswith(".conv.7.weight"):  # a block's last batch-norm: small, as trained
            value = rng.uniform(0.1, 0.3, shape)
        elif name.endswith(".weight"):
            value = rng.uniform(0.8, 1.2, shape)
        else:
            value = rng.normal(0, 0.05, shape)
        state[name] = torch.from_numpy(np.asarray(value, np.float32))
    return state


# --- functional forwards ------------------------------------------------------------------------
def _bn(x, s, p, calibrate: bool):
    # calibrate: normalise with the batch's statistics and store them as the running statistics
    return F.batch_norm(
        x,
        s[p + ".running_mean"],
        s[p + ".running_var"],
        s[p + ".weight"],
        s[p + ".bias"],
        training=calibrate,
        momentum=1.0,
        eps=1e-5,
    )


def _inverted_residual(x, s, p, stride, residual, cal):
    h = F.relu(_bn(F.conv2d(x, s[p + ".conv.0.weight"]), s, p + ".conv.1", cal))
    w = s[p + ".conv.3.weight"]
    h = F.relu(_bn(F.conv2d(h, w, stride=stride, padding=1, groups=w.shape[0]), s, p + ".conv.4", cal))
    h = _bn(F.conv2d(h, s[p + ".conv.6.weight"]), s, p + ".conv.7", cal)
    return x + h if residual else h


def _double(x, s, p, stride, cal):
    h = _inverted_residual(x, s, p + ".double_conv.0", stride, False, cal)
    return _inverted_residual(h, s, p + ".double_conv.1", 1, True, cal)


def generator_forward(s, visual, audio, calibrate: bool = False):
    """unet_328.Model(6, "ave"): visual [B,6,320,320], audio [B,32,16,16] -> [B,3,320,320]."""
    cal = calibrate
    x1 = _inverted_residual(visual, s, "inc.inconv.0", 1, False, cal)
    skips = [x1]
    for k in range(1, 6):
        skips.append(_double(skips[-1], s, f"down{k}.maxpool_conv.0", 2, cal))
    a = _inverted_residual(audio, s, "audio_model.conv1", 1, False, cal)
    a = _inverted_residual(a, s, "audio_model.conv2", 1, False, cal)
    a = F.relu(
        _bn(
            F.conv2d(a, s["audio_model.conv3.weight"], s["audio_model.conv3.bias"], padding=1),
            s,
            "audio_model.bn3",
            cal,
        )
    )
    a = _inverted_residual(a, s, "audio_model.conv4", 1, True, cal)
    a = F.relu(
        _bn(
            F.conv2d(a, s["audio_model.conv5.weight"], s["audio_model.conv5.bias"], stride=2, padding=3),
            s,
            "audio_model.bn5",
            cal,
        )
    )
    a = _inverted_residual(
        _inverted_residual(a, s, "audio_model.conv6", 1, True, cal), s, "audio_model.conv7", 1, True, cal
    )
    x = _double(_double(torch.cat([skips.pop(), a], 1), s, "fuse_conv.0", 1, cal), s, "fuse_conv.1", 1, cal)
    for k in range(1, 6):
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        x = _double(torch.cat([x, skips.pop()], 1), s, f"up{k}.conv", 1, cal)
    return torch.sigmoid(F.conv2d(x, s["outc.conv.weight"], s["outc.conv.bias"]))


def audio_encoder_forward(s, mel, calibrate: bool = False, prefix: str = "audio_encoder."):
    """utils.AudioEncoder: mel windows [n,1,80,16] -> [n,512]."""
    x = mel
    for n, (_, _, _, stride, padding, residual) in enumerate(AUDIO_ENCODER_BLOCKS):
        p = f"{prefix}{n}.conv_block"
        out = _bn(
            F.conv2d(x, s[p + ".0.weight"], s[p + ".0.bias"], stride=stride, padding=padding), s, p + ".1", calibrate
        )
        x = F.relu(out + x if residual else out)
    return x.squeeze(3).squeeze(2)


# --- audio: utils.melspectrogram, AudDataset, get_audio_features ----------------------------------
def melspectrogram(wav: np.ndarray) -> np.ndarray:
    """[80, columns]: pre-emphasis 0.97, |STFT| n_fft 800 hop 200, mel 55-7600 Hz, dB - 20, [-4, 4]."""
    import librosa
    from scipy import signal

    magnitude = np.abs(librosa.stft(y=signal.lfilter([1, -0.97], [1], wav), n_fft=800, hop_length=200, win_length=800))
    mel = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600) @ magnitude
    db = 20 * np.log10(np.maximum(1e-5, mel)) - 20
    return np.clip(8 * ((db + 100) / 100) - 4, -4, 4)


def mel_windows(wav: np.ndarray) -> np.ndarray:
    """AudDataset: [N, 1, 80, 16] windows, window idx at column int(80 * idx / 25), moved back to
    the last 16 columns where it runs past the clip."""
    mel = melspectrogram(wav).T  # [columns, 80]
    n = int((mel.shape[0] - 16) / 80.0 * 25) + 2
    windows = []
    for idx in range(n):
        start = int(80.0 * (idx / 25.0))
        end = start + 16
        if end > mel.shape[0]:
            end = mel.shape[0]
            start = end - 16
        windows.append(mel[start:end].T[None])
    return np.stack(windows).astype(np.float32)


def get_audio_features(padded: np.ndarray, index: int) -> np.ndarray:
    """utils.get_audio_features: rows [index-8, index+8) of the padded list, zeros outside it."""
    rows = np.zeros((16, padded.shape[1]), np.float32)
    for j in range(16):
        if 0 <= index - 8 + j < len(padded):
            rows[j] = padded[index - 8 + j]
    return rows


def encode_clip(wav: np.ndarray, encoder_state, calibrate: bool = False) -> np.ndarray:
    """The padded list P = [W0, W0, W1, .., W(N-1), W(N-1)] of the clip's encoded windows."""
    with torch.no_grad():
        encoded = audio_encoder_forward(encoder_state, torch.from_numpy(mel_windows(wav)), calibrate).numpy()
    return np.concatenate([encoded[:1], encoded, encoded[-1:]])


# --- the face: crop, mask, paste-back ------------------------------------------------------------
def face_inputs(frame_bgr: np.ndarray, box, crop_328: bool = True, mask: str = "rectangle"):
    """(visual [6,320,320] float32, the 328 crop or None) of one frame, as inference_328.py cuts it."""
    import cv2

    x0, y0, x1, y1 = box
    crop = frame_bgr[y0:y1, x0:x1]
    if crop_328:
        crop = cv2.resize(crop, (328, 328), interpolation=cv2.INTER_CUBIC)
        face = crop[4:324, 4:324].copy()
    else:  # the mistake this reference can make on purpose: the box straight to 320
        crop, face = None, cv2.resize(crop, (320, 320), interpolation=cv2.INTER_CUBIC)
    if mask == "rectangle":
        masked = cv2.rectangle(face.copy(), MASK_RECT, (0, 0, 0), -1)
    else:  # "lower_half": the wrong mask, on purpose
        masked = face.copy()
        masked[160:] = 0
    visual = np.concatenate([face.transpose(2, 0, 1), masked.transpose(2, 0, 1)]).astype(np.float32) / 255.0
    return visual, crop


def paste_back(frame_bgr: np.ndarray, box, prediction: np.ndarray, crop_328: np.ndarray | None) -> np.ndarray:
    """The prediction [3,320,320] (x255, truncated) into the 328 crop, back to the box (bicubic)."""
    import cv2

    x0, y0, x1, y1 = box
    pred = (prediction.transpose(1, 2, 0) * 255).astype(np.uint8)
    if crop_328 is not None:
        crop_328 = crop_328.copy()
        crop_328[4:324, 4:324] = pred
        pasted = cv2.resize(crop_328, (x1 - x0, y1 - y0), interpolation=cv2.INTER_CUBIC)
    else:
        pasted = cv2.resize(pred, (x1 - x0, y1 - y0), interpolation=cv2.INTER_CUBIC)
    out = frame_bgr.copy()
    out[y0:y1, x0:x1] = pasted
    return out


def inference(
    frames_bgr: np.ndarray,
    boxes,
    wav: np.ndarray,
    generator_state,
    encoder_state,
    *,
    audio_shift: int = 0,
    crop_328: bool = True,
    mask: str = "rectangle",
    batch: int = 8,
    only: Sequence[int] | None = None,
    start_frame: int = 0,
    loop_back: bool = True,
) -> np.ndarray:
    """SyncTalk_2D's inference of ``wav`` on the avatar's frames: N + 2 frames [N+2, H, W, 3] BGR
    (``only``: just those frames, the others left black). Frame i uses the image upstream's loop
    picks (``upstream_images``: from ``start_frame``, the fork's ``loop_back``). ``audio_shift``,
    ``crop_328=False`` and ``mask="lower_half"`` are deliberate mistakes."""
    padded = encode_clip(wav, encoder_state)
    n_out = len(padded)
    images = upstream_images(len(frames_bgr), n_out, start_frame, loop_back)
    out = np.zeros((n_out, *frames_bgr.shape[1:]), np.uint8)
    wanted = list(range(n_out)) if only is None else [i for i in only if i < n_out]
    for start in range(0, len(wanted), batch):
        frames = wanted[start : start + batch]
        inputs = [face_inputs(frames_bgr[images[i]], boxes[images[i]], crop_328, mask) for i in frames]
        visual = torch.from_numpy(np.stack([v for v, _ in inputs]))
        audio = torch.from_numpy(
            np.stack([get_audio_features(padded, i + audio_shift).reshape(32, 16, 16) for i in frames])
        )
        with torch.no_grad():
            predictions = generator_forward(generator_state, visual, audio).numpy()
        for i, (_, crop), prediction in zip(frames, inputs, predictions):
            out[i] = paste_back(frames_bgr[images[i]], boxes[images[i]], prediction, crop)
    return out


def calibrate(frames_bgr: np.ndarray, boxes, wav: np.ndarray, generator_state, encoder_state, frames: int = 8) -> None:
    """Set both networks' batch-norm statistics from this avatar's faces and this clip (in place)."""
    mel = torch.from_numpy(mel_windows(wav))
    with torch.no_grad():
        audio_encoder_forward(encoder_state, mel, calibrate=True)
    padded = encode_clip(wav, encoder_state)
    chosen = np.linspace(0, len(padded) - 1, frames).astype(int)
    visual = torch.from_numpy(
        np.stack([face_inputs(frames_bgr[i % len(frames_bgr)], boxes[i % len(boxes)])[0] for i in chosen])
    )
    audio = torch.from_numpy(np.stack([get_audio_features(padded, i).reshape(32, 16, 16) for i in chosen]))
    with torch.no_grad():
        generator_forward(generator_state, visual, audio, calibrate=True)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)

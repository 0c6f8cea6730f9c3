"""The mel front end against librosa, and the per-frame window alignment."""

import numpy as np
import pytest

from synctalk_client import synthetic
from synctalk_common import contract
from synctalk_preprocessing.audio import MelConfig, MelFrontEnd, librosa_log_mel


@pytest.fixture(scope="module")
def front_end():
    return MelFrontEnd()


@pytest.mark.parametrize("n_frames", [1, 8, 25, 32])
def test_log_mel_matches_librosa(front_end, n_frames):
    clip = synthetic.speech_like_audio(n_frames, seed=n_frames)
    ours = front_end.log_mel(clip)
    reference = librosa_log_mel(clip)
    assert ours.shape == reference.shape == (80, 4 * n_frames + 1)
    assert np.abs(ours - reference).max() < 2e-3


def test_log_mel_matches_librosa_on_noise_and_silence(front_end):
    rng = np.random.default_rng(0)
    for clip in (rng.normal(0, 0.3, 8 * 640).astype(np.float32), np.zeros(8 * 640, np.float32)):
        assert np.abs(front_end.log_mel(clip) - librosa_log_mel(clip)).max() < 2e-3


def test_windows_are_reference_columns_with_zero_padding(front_end):
    n_frames = 8
    clip = synthetic.speech_like_audio(n_frames, seed=3)
    log_mel = librosa_log_mel(clip)
    windows = front_end.windows_for_audio(clip.reshape(n_frames, 640))
    assert windows.shape == (n_frames, 80, 16) and windows.dtype == np.float32
    n_cols = log_mel.shape[1]
    for i in range(n_frames):
        for j, col in enumerate(range(4 * i - 8, 4 * i + 8)):
            expected = log_mel[:, col] if 0 <= col < n_cols else np.zeros(80)
            np.testing.assert_allclose(windows[i, :, j], expected, atol=2e-3)


def test_tone_burst_lands_in_its_frames_window(front_end):
    """A 1 kHz burst during video frame 10 only is at the centre of frame 10's window."""
    n_frames, burst_frame = 20, 10
    t = np.arange(640) / 16000
    clip = np.zeros(n_frames * 640, np.float32)
    clip[burst_frame * 640 : (burst_frame + 1) * 640] = 0.5 * np.sin(2 * np.pi * 1000 * t)
    windows = front_end.windows_for_audio(clip.reshape(n_frames, 640))
    energy = windows.max(axis=1)  # [frames, 16 columns]: loudest mel bin per column
    loud = energy > np.log(1e-5) + 5  # columns with the burst in them
    # frame 10's window spans columns 32..47; the burst occupies columns 40..44 (+/- the STFT's
    # 200-sample half window), i.e. window positions 8..12: centred on the frame's own time
    positions = np.flatnonzero(loud[burst_frame])
    assert positions.min() >= 6 and positions.max() <= 13 and 8 in positions
    assert not loud[burst_frame - 4].any() and not loud[burst_frame + 4].any()
    # neighbours see the burst shifted by 4 columns per frame
    shifted_left, shifted_right = positions - 4, positions + 4
    np.testing.assert_array_equal(np.flatnonzero(loud[burst_frame + 1]), shifted_left[shifted_left >= 0])
    np.testing.assert_array_equal(np.flatnonzero(loud[burst_frame - 1]), shifted_right[shifted_right < 16])


def test_edge_windows_are_zero_outside_the_clip(front_end):
    windows = front_end.windows_for_audio(np.ones((2, 640), np.float32) * 0.1)
    assert (windows[0, :, :8] == 0).all()  # columns -8..-1
    assert (windows[1, :, 13:] == 0).all()  # columns 9..11 beyond the 9 columns of 2 frames
    assert (windows[0, :, 8:] != 0).any()


def test_mel_config_from_parameters_and_round_trip():
    config = MelConfig.from_parameters({"n_mels": "64", "fmax": "7600", "unused": "x"})
    assert config.n_mels == 64 and config.fmax == 7600.0 and config.n_fft == 400
    assert MelConfig.from_parameters(config.as_parameters()) == config
    assert MelFrontEnd(config).log_mel(np.zeros(640, np.float32)).shape == (64, 5)


def test_mel_config_rejects_inconsistent_parameters():
    with pytest.raises(ValueError, match="fmax"):
        MelConfig.from_parameters({"fmax": "9000"})
    with pytest.raises(ValueError, match="win_length"):
        MelConfig.from_parameters({"win_length": "800"})


def test_defaults_follow_the_contract():
    config = MelConfig()
    assert config.columns_per_frame * contract.FPS == contract.MEL_COLUMNS_PER_SECOND
    assert config.samples_per_frame == contract.SAMPLES_PER_FRAME


# --- streaming: a clip sent batch by batch with its audio context ------------------------------
def chunked_windows(front_end, clip, n_frames, sizes, context=True):
    from synctalk_common.messages import audio_context_rows

    spf = contract.SAMPLES_PER_FRAME
    out, start = [], 0
    for size in sizes:
        first, last = start * spf, (start + size) * spf
        audio = clip[first:last].reshape(size, spf)
        if context:
            c = contract.AUDIO_CONTEXT_SAMPLES
            rows, lengths = audio_context_rows(audio, clip[max(0, first - c) : first], clip[last : last + c])
            out.append(front_end.windows_for_audio(audio, rows, lengths))
        else:
            out.append(front_end.windows_for_audio(audio))
        start += size
    assert start == n_frames
    return np.concatenate(out)


@pytest.mark.parametrize("sizes", [(8, 8, 8, 6), (1,) * 30, (3, 27), (29, 1)])
def test_chunked_with_context_equals_the_whole_clip(front_end, sizes):
    clip = synthetic.speech_like_audio(30, seed=5)
    whole = front_end.windows_for_audio(clip.reshape(30, -1))
    chunked = chunked_windows(front_end, clip, 30, sizes)
    assert chunked.shape == whole.shape == (30, 80, 16)
    assert np.abs(chunked - whole).max() < 1e-4
    without = chunked_windows(front_end, clip, 30, sizes, context=False)
    assert np.abs(without - whole).max() > 1.0, "without context the batch edges differ (the test can fail)"


def test_context_rows_hold_each_frames_neighbourhood():
    from synctalk_common.messages import audio_context_rows

    spf, c = contract.SAMPLES_PER_FRAME, 1600  # a context shorter than the clip before the batch
    clip = np.arange(10 * spf, dtype=np.float32)  # sample k has value k
    audio = clip[4 * spf : 7 * spf].reshape(3, spf)  # frames 4-6 of a 10-frame clip
    rows, lengths = audio_context_rows(audio, clip[: 4 * spf], clip[7 * spf :], size=c)
    assert rows.shape == (3, 2, c) and lengths.shape == (3, 2)
    for i in range(3):
        start = (4 + i) * spf
        assert np.array_equal(rows[i, 0], clip[start - c : start])  # the c samples before frame 4+i
        after = clip[start + spf : start + spf + c]
        assert np.array_equal(rows[i, 1, : len(after)], after) and not rows[i, 1, len(after) :].any()
        assert lengths[i].tolist() == [c, min(c, len(after))]
    # at the clip's start: nothing before; the audio after ends where the clip ends
    rows, lengths = audio_context_rows(clip[:spf].reshape(1, spf), clip[:0], clip[spf : spf + 1000], size=c)
    assert lengths.tolist() == [[0, 1000]] and not rows[0, 0].any()
    rows, lengths = audio_context_rows(clip[:spf].reshape(1, spf), clip[:1000], clip[:0], size=c)
    assert lengths.tolist() == [[960, 0]], "the audio before stays in whole hops: the clip's start on the mel grid"


# --- the SyncTalk_2D front end -----------------------------------------------------------------
def synctalk2d_reference_mel(clip):
    """wav2lip / SyncTalk_2D's melspectrogram, with librosa and scipy."""
    import librosa
    from scipy import signal

    y = signal.lfilter([1, -0.97], [1], clip)
    magnitude = np.abs(librosa.stft(y=y, n_fft=800, hop_length=200, win_length=800, pad_mode="constant"))
    mel = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600) @ magnitude
    db = 20 * np.log10(np.maximum(1e-5, mel)) - 20
    return np.clip(8 * ((db + 100) / 100) - 4, -4, 4)


@pytest.fixture(scope="module")
def synctalk2d():
    from synctalk_preprocessing.audio import PRESETS

    return MelFrontEnd(PRESETS["synctalk2d"])


def test_synctalk2d_mel_matches_librosa(synctalk2d):
    clip = synthetic.speech_like_audio(40, seed=9)
    ours, reference = synctalk2d.log_mel(clip), synctalk2d_reference_mel(clip)
    assert ours.shape == reference.shape == (80, 40 * 640 // 200 + 1)
    assert np.abs(ours - reference).max() < 2e-3
    assert reference.min() >= -4 and reference.max() <= 4 and reference.std() > 0.5


def upstream_frame_windows(clip):
    """SyncTalk_2D's inference, written from its facts with windows in place of their encodings:
    window idx = mel columns [int(80 * idx / 25), +16), moved back to the last 16 where it runs
    past the clip; N = int((columns - 16) / 80 * 25) + 2; P = [W0, W0, W1, .., W(N-1), W(N-1)];
    frame i (0 .. N+1) = P[i-8 : i+8] with zero rows outside P."""
    mel = synctalk2d_reference_mel(clip)
    n_windows = int((mel.shape[1] - 16) / 80.0 * 25) + 2
    windows = []
    for idx in range(n_windows):
        start = int(80.0 * (idx / 25.0))
        if start + 16 > mel.shape[1]:
            start = mel.shape[1] - 16
        windows.append(mel[:, start : start + 16])
    padded = [windows[0], *windows, windows[-1]]
    frames = np.zeros((n_windows + 2, 16, 80, 16))
    for i in range(n_windows + 2):
        for j in range(16):
            if 0 <= i - 8 + j < len(padded):
                frames[i, j] = padded[i - 8 + j]
    return frames


@pytest.mark.parametrize("n", [5, 20, 37])
def test_synctalk2d_windows_are_upstreams_padded_list(synctalk2d, n):
    """Frame i sees windows i-9 .. i+6 (ends repeated, zero rows past them), the last window is
    moved back into the clip, and N + 2 frames are rendered: as upstream, to float rounding."""
    clip = synthetic.speech_like_audio(n, seed=2)
    expected = upstream_frame_windows(clip)
    assert len(expected) == contract.synctalk2d_frame_count(len(clip)) == n - 1
    windows, mask = synctalk2d.windows_for_audio(clip.reshape(n, 640))
    assert windows.shape == (n, 16, 80, 16) and mask.shape == (n, 16)
    assert np.abs(windows[: n - 1] - expected).max() < 2e-3
    assert np.array_equal(mask[: n - 1] == 0, ~expected.any(axis=(2, 3)))  # masked = upstream's zero rows
    assert not mask[0, :8].any() and mask[0, 8] == 1
    assert np.abs(windows[0, 8] - windows[0, 9]).max() == 0  # W0 twice: the list's repeated start
    # one frame later is a different answer: the test can tell a shifted indexing
    assert np.abs(windows[1 : n - 1] - expected[:-1]).max() > 0.5


@pytest.mark.parametrize("sizes", [(8, 8, 8, 6), (3, 27), (1, 7, 22), (29, 1)])
def test_synctalk2d_chunked_with_context_equals_the_whole_clip(synctalk2d, sizes):
    from synctalk_common.messages import audio_context_rows

    n, spf, c = 30, contract.SAMPLES_PER_FRAME, contract.AUDIO_CONTEXT_SAMPLES
    clip = synthetic.speech_like_audio(n, seed=4)
    whole, whole_mask = synctalk2d.windows_for_audio(clip.reshape(n, spf))
    parts, masks, start = [], [], 0
    for size in sizes:
        first, last = start * spf, (start + size) * spf
        audio = clip[first:last].reshape(size, spf)
        rows, lengths = audio_context_rows(audio, clip[max(0, first - c) : first], clip[last : last + c])
        windows, mask = synctalk2d.windows_for_audio(audio, rows, lengths, first_frame=start)
        parts.append(windows)
        masks.append(mask)
        start += size
    assert np.array_equal(np.concatenate(masks), whole_mask)
    assert np.abs(np.concatenate(parts) - whole).max() < 2e-3
    assert np.abs(whole[: n - 1] - upstream_frame_windows(clip)).max() < 2e-3


@pytest.mark.parametrize("tail", [0, 330, 639])
def test_synctalk2d_stream_of_a_clip_ending_mid_frame_is_upstreams(synctalk2d, tail):
    """A WAV is rarely whole frames: the last batch's context after carries the tail, the clip's
    end fixes N and the last window, and the N + 2 frames are upstream's."""
    from synctalk_common.messages import audio_context_rows

    spf, c = contract.SAMPLES_PER_FRAME, contract.AUDIO_CONTEXT_SAMPLES
    wav = synthetic.speech_like_audio(31, seed=8)[: 30 * spf + tail]
    expected = upstream_frame_windows(wav)
    n_out = contract.synctalk2d_frame_count(len(wav))
    assert len(expected) == n_out
    parts = []
    for start in range(0, n_out, 8):
        size = min(8, n_out - start)
        first, last = start * spf, (start + size) * spf
        audio = wav[first:last].reshape(size, spf)
        rows, lengths = audio_context_rows(audio, wav[max(0, first - c) : first], wav[last : last + c])
        parts.append(synctalk2d.windows_for_audio(audio, rows, lengths, first_frame=start)[0])
    assert np.abs(np.concatenate(parts) - expected).max() < 2e-3

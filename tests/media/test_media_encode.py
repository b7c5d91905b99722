"""Clip media helpers: resampling, centre crop, MP4 bytes round trip, exact window decodes."""

from __future__ import annotations

import numpy as np

from egocurate.actions.align import align_latent_actions
from egocurate.media.crop import cover_size, crop_box, crop_resize
from egocurate.media.encode import decode_mp4, encode_mp4, probe_mp4, resample_indices
from egocurate.shards.write import bf16_bytes, clip_offsets


def ramp(n: int = 40) -> np.ndarray:
    """Frames whose brightness encodes their index (k * 6), so decoded windows are checkable."""
    frames = np.zeros((n, 64, 96, 3), np.uint8)
    for k in range(n):
        frames[k] = k * 6
    return frames


def test_window_decodes_are_exact_across_keyframes():
    data = encode_mp4(iter([ramp()[:17], ramp()[17:]]), fps=10.0, gop=8, crf=10)
    assert probe_mp4(data) == {"num_frames": 40, "fps": 10.0, "width": 96, "height": 64}
    for start in (0, 1, 7, 8, 9, 20, 27):
        window = decode_mp4(data, start, 13)
        assert window.shape == (13, 64, 96, 3)
        assert [int(round(f.mean() / 6)) for f in window] == list(range(start, start + 13))
    assert decode_mp4(data).shape[0] == 40


def test_resampling_keeps_the_span_and_never_skips_the_first_frame():
    assert resample_indices(45, 15.0, 10.0) == [int(np.floor(k * 1.5 + 0.5)) for k in range(30)]
    assert resample_indices(45, 15.0, None) == list(range(45))
    assert resample_indices(30, 30.0, 10.0) == list(range(0, 30, 3))
    assert len(resample_indices(10, 5.0, 10.0)) == 19  # upsampling repeats frames, spans the same time
    assert clip_offsets(30, 30.0, None, 3) == (list(range(0, 30, 3)), 10.0)


def test_centre_crop_and_reduced_cover_size():
    assert crop_box(1920, 1080, 4 / 3) == (240, 0, 1440, 1080)
    assert crop_box(480, 640, 4 / 3) == (0, 140, 480, 360)
    out = crop_resize(np.zeros((2, 1080, 1920, 3), np.uint8), 640, 480)
    assert out.shape == (2, 480, 640, 3)
    w, h = cover_size(1920, 1080, 640, 480)
    _, _, crop_w, crop_h = crop_box(w, h, 4 / 3)
    assert abs(w / h - 1920 / 1080) < 0.01 and crop_w >= 640 and crop_h >= 480 and w < 1920
    assert cover_size(320, 240, 640, 480) is None  # never decode above the source size


def test_latent_actions_follow_the_rendered_frames():
    actions = np.arange(9 * 32, dtype=np.float16).reshape(9, 32)  # LAM pairs at stride 3 over 30 frames
    exact, how = align_latent_actions(actions.tobytes(), [9, 32], 3, list(range(0, 30, 3)))
    assert how == "exact" and np.array_equal(exact, actions)
    nearest, how = align_latent_actions(actions.tobytes(), [9, 32], 3, resample_indices(30, 30.0, 15.0))
    assert how == "nearest" and nearest.shape == (14, 32)
    assert align_latent_actions(None, None, 3, [0, 1]) == (None, None)


def test_bf16_packing_rounds_to_nearest():
    values = np.array([1.0, -2.5, 3.14159, 65504.0], np.float32)
    data, shape = bf16_bytes(values)
    back = (np.frombuffer(data, "<u2").astype(np.uint32) << 16).view(np.float32)
    assert shape == [4] and np.allclose(back, values, rtol=2**-8)
    import torch

    assert bf16_bytes(torch.tensor(values))[0] == data

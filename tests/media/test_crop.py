"""One crop rule for every consumer, equal to DreamDojo's human-video loader on odd sizes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from egocurate.media.crop import cover_size, crop_box, crop_resize, even_crop_box
from egocurate.shards.dreamdojo_sample import center_crop_resize

SIZES = [(1280, 720), (1440, 1080), (600, 600), (321, 257), (257, 321), (640, 480)]


def dreamdojo_crop(w: int, h: int, out_w: int = 640, out_h: int = 480) -> tuple[int, int, int, int]:
    """DreamDojo's loader arithmetic, written out here from its source: the side that is too long is
    cut to int(other * target) (truncated), and the crop is centred with floor division."""
    target = out_w / out_h
    if w / h > target:
        crop_h, crop_w = h, int(h * target)
    elif w / h < target:
        crop_h, crop_w = int(w / target), w
    else:
        crop_h, crop_w = h, w
    return (w - crop_w) // 2, (h - crop_h) // 2, crop_w, crop_h


@pytest.mark.parametrize(("w", "h"), SIZES)
def test_crop_box_is_dreamdojos_arithmetic(w, h):
    assert crop_box(w, h, 640 / 480) == dreamdojo_crop(w, h)


@pytest.mark.parametrize(("w", "h"), SIZES)
def test_numpy_and_torch_paths_cut_the_same_pixels(w, h):
    """Shards/exports (numpy, cv2) and the DreamDojo sample adapter (torch) crop the same box."""
    rng = np.random.default_rng(w * h)
    frames = rng.integers(0, 255, (1, h, w, 3), dtype=np.uint8)
    x, y, cw, ch = crop_box(w, h, 4 / 3)
    # Output size equal to the crop: no resampling, so both must return exactly the cropped pixels.
    expected = frames[:, y : y + ch, x : x + cw]
    np.testing.assert_array_equal(crop_resize(frames, cw, ch), expected)
    video = torch.from_numpy(frames).permute(3, 0, 1, 2)  # (C, T, H, W) as DreamDojo holds it
    got = center_crop_resize(video, ch, cw).permute(1, 2, 3, 0).numpy()
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize(("w", "h"), SIZES)
def test_even_box_and_cover_size_stay_inside_the_rule(w, h):
    x, y, cw, ch = even_crop_box(w, h, 4 / 3)
    _, _, rule_w, rule_h = crop_box(w, h, 4 / 3)
    assert cw % 2 == 0 and ch % 2 == 0 and rule_w - 1 <= cw <= rule_w and rule_h - 1 <= ch <= rule_h
    assert (x, y) == ((w - cw) // 2, (h - ch) // 2)
    size = cover_size(w, h, 320, 240)
    if size is not None:  # decoding at this size still leaves a crop that covers 320x240
        _, _, sw, sh = crop_box(*size, 4 / 3)
        assert sw >= 320 and sh >= 240 and size[0] <= w and size[1] <= h
    else:
        assert min(rule_w / 320, rule_h / 240) <= 1.0

"""meta/stats.json of the LeRobot export passes DreamDojo's statistics check (issue 21).

DreamDojo (commit 02f119b, ``groot_dreams/data/dataset.py``) validates every non-int value of
stats.json with ``DatasetStatisticalValues``, which requires max, min, mean, std, q01 and q99; one
feature without them rejects the whole file (and DreamDojo recomputes statistics from the parquet
columns instead). The video feature's q01/q99 are per channel, (3, 1, 1) like its mean, from the
same sampled pixels as its other statistics.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from egocurate.export.lerobot import VIDEO_KEY, ImageStats, dataset_stats, export_lerobot
from egocurate.testing.catalog import build_sample_catalog

UPSTREAM_KEYS = ("max", "min", "mean", "std", "q01", "q99")  # DatasetStatisticalValues' fields


@pytest.fixture(scope="module")
def stats(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("lerobot_q")
    catalog = build_sample_catalog(
        root, videos=2, seconds=2.0, clip_frames=20, clip_step=20, tokenizer_latents=False
    )
    out = root / "lerobot"
    report = export_lerobot(catalog, str(out), fps=15, width=64, height=48, workers=1, progress=False)
    assert report.written == 2 and not report.skipped
    return json.loads((out / "meta" / "stats.json").read_text())


def test_every_feature_has_upstreams_six_statistics_with_one_shape(stats):
    assert VIDEO_KEY in stats and "action" in stats
    for name, stat in stats.items():
        if isinstance(stat, int):  # upstream skips ints
            continue
        assert set(UPSTREAM_KEYS) <= set(stat), f"{name} lacks {set(UPSTREAM_KEYS) - set(stat)}"
        arrays = {key: np.asarray(stat[key], dtype=np.float64) for key in UPSTREAM_KEYS}
        assert len({a.shape for a in arrays.values()}) == 1, f"{name}: shapes differ"
        assert np.all(arrays["min"] <= arrays["q01"]) and np.all(arrays["q01"] <= arrays["q99"])
        assert np.all(arrays["q99"] <= arrays["max"]), name
    assert np.asarray(stats[VIDEO_KEY]["q01"]).shape == (3, 1, 1)


def test_video_quantiles_equal_numpys_over_the_pooled_sampled_pixels():
    rng = np.random.default_rng(0)
    episodes = [rng.integers(0, 256, (n, 16, 20, 3), dtype=np.uint8) for n in (3, 5)]
    episodes[1][..., 0] //= 4  # make the channels and episodes differ
    per_episode, pixels = [], []
    for frames in episodes:
        image = ImageStats()
        image.update(frames[:2])
        image.update(frames[2:])
        per_episode.append({"stats": {VIDEO_KEY: image.as_dict()}, "histogram": image.histogram})
        pixels.append(frames[:, ::4, ::4].reshape(-1, 3) / 255.0)
    out = dataset_stats(
        [],
        {},
        [{"stats": e["stats"]} for e in per_episode],
        image_histograms=[e["histogram"] for e in per_episode],
    )[VIDEO_KEY]
    pooled = np.concatenate(pixels)
    for key, q in (("q01", 0.01), ("q99", 0.99)):
        np.testing.assert_allclose(
            np.asarray(out[key]).reshape(3), np.quantile(pooled, q, axis=0), atol=1e-12
        )
    np.testing.assert_allclose(np.asarray(out["min"]).reshape(3), pooled.min(axis=0))

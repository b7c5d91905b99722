"""How the captioner shows a clip's frames to a model that takes one image."""

from __future__ import annotations

import numpy as np


def strip(frames: np.ndarray) -> np.ndarray:
    """Frames side by side as one image (a model that takes one image still sees the motion)."""
    return frames[0] if len(frames) == 1 else np.concatenate(list(frames), axis=1)

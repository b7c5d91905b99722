"""The values shot detection deals in: transitions, shots and a video's frame timing.

Kept apart from :mod:`egocurate.ingest.shots` (the detector front door) so that each detector module
imports these types without importing the front door that dispatches to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

TRANSITION_KINDS = ("cut", "dissolve", "fade", "gradual")


@dataclass(frozen=True)
class Transition:
    """Frames [start_frame, end_frame) between two shots; a cut has no frames (start == end)."""

    start_frame: int
    end_frame: int
    kind: str = "cut"
    score: float = 0.0
    confidence: float = 1.0  # 0-1; the clip policy does not trim footage at a weak boundary

    @property
    def is_cut(self) -> bool:
        return self.kind == "cut"


@dataclass(frozen=True)
class Shot:
    """Frames [start_frame, end_frame) of one shot; `kind` is how it begins."""

    start_frame: int
    end_frame: int
    kind: str = "start"
    confidence: float = 1.0  # of the boundary that opens this shot

    @property
    def num_frames(self) -> int:
        return self.end_frame - self.start_frame


@dataclass
class VideoTiming:
    """How many frames a video has and when each one is shown (seconds from the first frame)."""

    num_frames: int
    fps: float
    timestamps: np.ndarray = field(repr=False)
    decoded_frames: int = 0  # frames the detector actually decoded (a speed diagnostic)

    def time_of(self, frame: int) -> float:
        """Presentation time of `frame`; one past the last frame is the end of the video."""
        if self.num_frames == 0:
            return 0.0
        if frame >= self.num_frames:  # past the last frame: it lasts as long as the frame before it
            last = float(self.timestamps[-1])
            if self.num_frames >= 2:
                step = last - float(self.timestamps[-2])
            else:
                step = 1.0 / self.fps if self.fps > 0 else 0.0
            return last + step * (frame - self.num_frames + 1)
        return float(self.timestamps[max(frame, 0)])

"""What one stage did in one run: the numbers the run summary prints and benchmarks read."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class StageSummary:
    """What one stage did in one run."""

    stage: str
    engine: str
    rows_in: int = 0
    rows_skipped: int = 0
    rows_out: int = 0
    quarantined: int = 0
    seconds: float = 0.0
    video_seconds: float = 0.0
    worker_seconds: float = 0.0  # summed over workers: time inside the stage's own work (``process``)
    commits: int = 0
    versions: dict[str, int] = field(default_factory=dict)
    no_output: int = 0  # inputs done without any output row or quarantine row (e.g. too-short videos)
    no_output_note: str = ""  # what such an input means, in the stage's words

    @property
    def rows_per_s(self) -> float:
        return self.rows_in / self.seconds if self.seconds > 0 else 0.0

    @property
    def video_hours_per_hour(self) -> float:
        """Hours of video processed per wall-clock hour (the throughput a data team plans with)."""
        return self.video_seconds / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict:
        return {
            "stage": self.stage,
            "engine": self.engine,
            "rows_in": self.rows_in,
            "rows_skipped": self.rows_skipped,
            "rows_out": self.rows_out,
            "quarantined": self.quarantined,
            "no_output": self.no_output,
            "seconds": round(self.seconds, 3),
            "rows_per_s": round(self.rows_per_s, 3),
            "video_hours_per_hour": round(self.video_hours_per_hour, 3),
            "worker_seconds": round(self.worker_seconds, 3),
            "commits": self.commits,
        }

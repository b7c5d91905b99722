"""Where the ffmpeg tools live: the system's when on PATH, else the binary imageio-ffmpeg ships."""

from __future__ import annotations

import functools
import shutil


@functools.cache
def ffmpeg_exe() -> str:
    """Path of an ffmpeg binary (system first, then imageio-ffmpeg's bundled one)."""
    found = shutil.which("ffmpeg")
    if found:
        return found
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


@functools.cache
def ffprobe_exe() -> str | None:
    """Path of ffprobe if the system has one; imageio-ffmpeg ships no ffprobe (PyAV covers probing then)."""
    return shutil.which("ffprobe")

"""Pixels and ffmpeg: decoding, scanning for shot detection, encoding and the one crop rule."""

from egocurate import lazy_exports

_EXPORTS = {
    "read_frames": "egocurate.media.decode",
    "read_clip": "egocurate.media.decode",
    "iter_frames": "egocurate.media.decode",
    "decode_shared": "egocurate.media.decode",
    "FrameRequest": "egocurate.media.decode",
    "VideoScanner": "egocurate.media.scan",
    "crop_box": "egocurate.media.crop",
    "crop_resize": "egocurate.media.crop",
    "encode_mp4": "egocurate.media.encode",
    "decode_mp4": "egocurate.media.encode",
    "ffmpeg_exe": "egocurate.media.tools",
    "ffprobe_exe": "egocurate.media.tools",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)

"""Pixels and ffmpeg: decoding, scanning for shot detection, encoding and the one crop rule."""

from egocurate import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, (
    "decode: read_frames read_clip iter_frames decode_shared FrameRequest; scan: VideoScanner; crop: "
    "crop_box crop_resize; encode: encode_mp4 decode_mp4; tools: ffmpeg_exe ffprobe_exe"
))

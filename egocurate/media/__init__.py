"""Pixels and ffmpeg: decoding, scanning for shot detection, encoding and the one crop rule."""

import gc
import os

from egocurate import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, (
    "decode: read_frames read_clip iter_frames decode_shared FrameRequest; scan: VideoScanner; crop: "
    "crop_box crop_resize; encode: encode_mp4 decode_mp4; tools: ffmpeg_exe ffprobe_exe"
))

# Fork safety (DataLoader workers fork the trainer): PyAV's scalers own libav slice threads. If one
# is left in unreachable cyclic garbage and the garbage collector frees it in a forked child, its
# dealloc joins threads that exist only in the parent and the child hangs forever. Collecting in the
# parent right before a fork frees such garbage where its threads still exist.
if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=gc.collect)

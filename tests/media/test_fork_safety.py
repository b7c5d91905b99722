"""Forking after decoding is safe: DataLoader workers fork a process that has used PyAV scalers."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import gc, os, signal, sys, time
import av
import numpy as np
from av.video.reformatter import VideoReformatter
import egocurate.media  # registers the before-fork collection
frame = av.VideoFrame.from_ndarray(np.zeros((480, 640, 3), np.uint8), format="rgb24")
holder = {"scaler": VideoReformatter()}
holder["scaler"].reformat(frame, width=64, height=48, format="rgb24", interpolation="AREA", threads=4)
holder["self"] = holder  # a reference cycle: garbage the collector frees later
del holder
pid = os.fork()
if pid == 0:
    gc.collect()  # would free the scaler here, joining slice threads that exist only in the parent
    os._exit(0)
for _ in range(200):
    done, _status = os.waitpid(pid, os.WNOHANG)
    if done:
        sys.exit(0)
    time.sleep(0.05)
os.kill(pid, signal.SIGKILL)
sys.exit("the forked child hung freeing a scaler created in the parent")
"""


def test_a_forked_child_does_not_hang_on_scalers_the_parent_left_as_garbage():
    run = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr

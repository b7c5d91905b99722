"""Synthetic egocentric-like sample videos with ground truth, for the demo, tests and benchmarks.

Each video is a few tabletop scenes joined by hard cuts. In each scene a skin-toned "hand" moves
across a textured table and pushes objects, while the camera jitters. The generator records the
ground truth per frame (hand displacement and camera motion in pixels) and the cut frames, so
shot detection and latent-action probes can be scored. No network and no shared data are needed.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from egocurate.media.tools import ffmpeg_exe

TASKS = (
    "push the red block to the left",
    "slide the blue cup across the table",
    "nudge the green box forward",
    "sweep the yellow ball toward the edge",
)
SCENES = ("kitchen counter", "office desk", "workshop bench", "dining table")


@dataclass
class SceneTruth:
    start_frame: int
    end_frame: int  # exclusive
    task: str
    scene: str
    hand_motion: list[list[float]] = field(default_factory=list)  # per frame (dx, dy) in pixels
    camera_motion: list[list[float]] = field(default_factory=list)


def _table_texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Wood-like grain along both axes plus blurred noise, so a shift in any direction shows."""
    base = rng.integers(60, 200, size=3)
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    x = np.linspace(0, 1, width, dtype=np.float32)[None, :]
    grain_y = np.sin(2 * np.pi * (rng.uniform(3, 9) * y + 0.3 * np.sin(2 * np.pi * 2 * x)))
    grain_x = np.sin(2 * np.pi * (rng.uniform(4, 10) * x + 0.3 * np.sin(2 * np.pi * 3 * y)))
    noise = cv2.GaussianBlur(rng.normal(0, 1, (height, width)).astype(np.float32), (0, 0), 3)
    shade = 14 * grain_y + 14 * grain_x + 10 * noise + 25 * (y - 0.5)
    img = np.clip(base[None, None, :] + shade[..., None], 0, 255).astype(np.uint8)
    return img


def _draw_hand(img: np.ndarray, cx: float, cy: float, angle: float, scale: float) -> None:
    """A palm with four fingers and a thumb; the fingers point along `angle - 90` degrees."""
    skin = (150, 180, 224)  # BGR
    center = (int(cx), int(cy))
    cv2.ellipse(img, center, (int(38 * scale), int(50 * scale)), angle, 0, 360, skin, -1, cv2.LINE_AA)
    for k in range(4):
        offset = np.deg2rad(angle - 90 + (k - 1.5) * 14)
        fx = cx + np.cos(offset) * 62 * scale
        fy = cy + np.sin(offset) * 62 * scale
        cv2.line(img, center, (int(fx), int(fy)), skin, int(13 * scale), cv2.LINE_AA)
    thumb = np.deg2rad(angle + 10)
    cv2.line(
        img,
        center,
        (int(cx + np.cos(thumb) * 50 * scale), int(cy + np.sin(thumb) * 50 * scale)),
        skin,
        int(15 * scale),
        cv2.LINE_AA,
    )


def _draw_arm(img: np.ndarray, hand: np.ndarray, shoulder: np.ndarray, sleeve: tuple[int, int, int]) -> float:
    """A sleeved forearm from outside the bottom edge to the hand; returns the hand's angle (degrees).

    The hand points away from the shoulder, so its orientation follows its position, as a real
    wearer's hand does, rather than flipping with the direction of each step.
    """
    direction = hand - shoulder
    direction = direction / (np.linalg.norm(direction) + 1e-6)
    wrist = hand - direction * 40
    cv2.line(
        img, (int(shoulder[0]), int(shoulder[1])), (int(wrist[0]), int(wrist[1])), sleeve, 46, cv2.LINE_AA
    )
    cuff = tuple(int(c * 0.6) for c in sleeve)
    cv2.line(img, (int(wrist[0]), int(wrist[1])), (int(hand[0]), int(hand[1])), cuff, 30, cv2.LINE_AA)
    return float(np.degrees(np.arctan2(direction[1], direction[0]))) + 90.0


def render_scene(
    rng: np.random.Generator,
    num_frames: int,
    width: int = 640,
    height: int = 480,
    jitter: float = 2.0,
    hand_speed: float = 1.0,
) -> tuple[list[np.ndarray], list[list[float]], list[list[float]]]:
    """Frames (RGB uint8) of one scene, with per-frame hand and camera motion in pixels.

    `jitter` is the camera shake (px/frame, standard deviation); `hand_speed` scales the hand's
    random walk (1.0: about 4 px/frame, at most 9).
    """
    margin = 24
    canvas_h, canvas_w = height + 2 * margin, width + 2 * margin
    table = _table_texture(rng, canvas_h, canvas_w)
    objects = []
    for _ in range(rng.integers(3, 6)):
        objects.append(
            {
                "pos": np.array([rng.uniform(120, canvas_w - 120), rng.uniform(120, canvas_h - 120)]),
                "size": rng.uniform(22, 45),
                "color": tuple(int(c) for c in rng.integers(20, 255, size=3)),
                "round": bool(rng.integers(0, 2)),
            }
        )
    hand = np.array([rng.uniform(150, canvas_w - 150), rng.uniform(canvas_h * 0.55, canvas_h - 80)])
    velocity = rng.normal(0, 4, size=2) * hand_speed
    shoulder = np.array([rng.uniform(0.35, 0.75) * canvas_w, canvas_h + 160.0])
    sleeve = tuple(int(c) for c in rng.integers(30, 140, size=3))
    camera = np.zeros(2)
    frames, hand_motion, camera_motion = [], [], []
    for _ in range(num_frames):
        # Hand: a smooth random walk biased toward the nearest object, which it pushes on contact.
        target = min(objects, key=lambda o: np.linalg.norm(o["pos"] - hand))["pos"]
        pull = np.clip((target - hand) * 0.08, -6, 6) * hand_speed
        velocity = 0.85 * velocity + 0.15 * pull + rng.normal(0, 1.2 * hand_speed, size=2)
        step = np.clip(velocity, -9 * hand_speed, 9 * hand_speed)
        new_hand = np.clip(hand + step, [80, 80], [canvas_w - 80, canvas_h - 60])
        for obj in objects:
            if np.linalg.norm(obj["pos"] - new_hand) < obj["size"] + 40:
                obj["pos"] = np.clip(obj["pos"] + step * 1.1, [40, 40], [canvas_w - 40, canvas_h - 40])
        hand_step = new_hand - hand
        hand = new_hand
        cam_step = np.clip(rng.normal(0, jitter, size=2) - 0.2 * camera, -margin - camera, margin - camera)
        camera = camera + cam_step
        img = table.copy()
        for obj in objects:
            x, y, s = int(obj["pos"][0]), int(obj["pos"][1]), int(obj["size"])
            if obj["round"]:
                cv2.circle(img, (x, y), s, obj["color"], -1, cv2.LINE_AA)
            else:
                cv2.rectangle(img, (x - s, y - s), (x + s, y + s), obj["color"], -1, cv2.LINE_AA)
            cv2.rectangle(img, (x - s + 4, y + s - 4), (x + s + 4, y + s + 4), (30, 30, 30), -1)  # shadow
        angle = _draw_arm(img, hand, shoulder, sleeve)
        _draw_hand(img, hand[0], hand[1], angle, 1.0)
        ox, oy = int(round(margin + camera[0])), int(round(margin + camera[1]))
        frame = img[oy : oy + height, ox : ox + width]
        frames.append(np.ascontiguousarray(frame[..., ::-1]))
        hand_motion.append([float(hand_step[0]), float(hand_step[1])])
        camera_motion.append([float(cam_step[0]), float(cam_step[1])])
    return frames, hand_motion, camera_motion


def encode_frames(frames: list[np.ndarray], path: str | os.PathLike[str], fps: float, crf: int = 23) -> None:
    """Encode RGB frames to H.264 MP4 with ffmpeg (system or imageio-ffmpeg's binary)."""
    height, width = frames[0].shape[:2]
    cmd = [
        ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", f"{fps}", "-i", "-",
        "-c:v", "libx264", "-preset", "veryfast", "-crf", str(crf), "-pix_fmt", "yuv420p",
        "-g", str(int(fps * 2)), "-movflags", "+faststart", str(path),
    ]  # fmt: skip
    proc = subprocess.run(cmd, input=b"".join(f.tobytes() for f in frames), capture_output=True)
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg failed for {path}: {proc.stderr.decode(errors='replace')[-500:]}")


def make_video(
    path: str | os.PathLike[str],
    seed: int,
    scenes: int = 3,
    scene_seconds: float = 4.0,
    fps: float = 15.0,
    width: int = 640,
    height: int = 480,
    jitter: float = 2.0,
    hand_speed: float = 1.0,
) -> dict:
    """Write one multi-scene video and return its ground truth (also saved as `<path>.truth.json`).

    `jitter` and `hand_speed` set the camera shake and the hand's pace; see `render_scene`.
    """
    rng = np.random.default_rng(seed)
    frames: list[np.ndarray] = []
    truth: list[SceneTruth] = []
    for _ in range(scenes):
        n = int(round(scene_seconds * fps))
        scene_frames, hand, cam = render_scene(rng, n, width, height, jitter, hand_speed)
        truth.append(
            SceneTruth(
                start_frame=len(frames),
                end_frame=len(frames) + n,
                task=str(rng.choice(TASKS)),
                scene=str(rng.choice(SCENES)),
                hand_motion=hand,
                camera_motion=cam,
            )
        )
        frames.extend(scene_frames)
    encode_frames(frames, path, fps)
    record = {
        "uri": str(Path(path).resolve()),
        "fps": fps,
        "num_frames": len(frames),
        "width": width,
        "height": height,
        "cuts": [s.start_frame for s in truth[1:]],
        "scenes": [s.__dict__ for s in truth],
    }
    Path(f"{path}.truth.json").write_text(json.dumps(record))
    return record


def make_corrupt_copy(src: str | os.PathLike[str], dst: str | os.PathLike[str], keep: float = 0.4) -> None:
    """A truncated copy of `src`: the header survives, most of the frame data does not."""
    data = Path(src).read_bytes()
    Path(dst).write_bytes(data[: int(len(data) * keep)])


def make_sample_set(out_dir: str | os.PathLike[str], videos: int = 4, seed: int = 0, **kwargs) -> Path:
    """Sample videos, one corrupt file and a JSONL manifest with task text; returns the manifest path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest = []
    for i in range(videos):
        path = out / f"session_{i:02d}.mp4"
        if not path.exists() or not Path(f"{path}.truth.json").exists():
            make_video(path, seed=seed + i, **kwargs)
        truth = json.loads(Path(f"{path}.truth.json").read_text())
        manifest.append(
            {
                "uri": path.name,
                "dataset": "egocurate-synthetic",
                "task_text": truth["scenes"][0]["task"],
                "split": "train" if i % 4 else "val",
                "scene": truth["scenes"][0]["scene"],
            }
        )
    corrupt = out / "session_corrupt.mp4"
    if not corrupt.exists():
        make_corrupt_copy(out / "session_00.mp4", corrupt)
    manifest.append({"uri": corrupt.name, "dataset": "egocurate-synthetic", "task_text": "corrupt upload"})
    path = out / "manifest.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in manifest))
    return path

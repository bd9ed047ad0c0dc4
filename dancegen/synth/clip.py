"""`render_clip`: one synthetic dance clip with all its ground truth, deterministic per seed (DESIGN.md, "The synthetic
dance world").

Seeds split into independent streams so parts of a clip can be swapped: `appearance_seed` (the dancer: proportions,
skin, clothes, hair), `motion_seed` (the choreography), `music_seed` (tempo, drums; the dance follows its beats) and
`scene_seed` (background, camera). Each defaults to a stream derived from `seed`. The same appearance seed with
another motion gives the same dancer doing a different dance; the same motion and music seeds with another appearance
seed give the same joint rotations on a different body (what a retargeting demo needs).

The camera and the wall are fitted to the dancer (`SynthClip.framing`); `frame_on` fits them to given points
instead, so clips with the same scene seed and the same `frame_on` are filmed by the same camera in the same room
(`dancegen.synth.edit` renders one dancer doing two motions this way).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dancegen.pose.convert import HUMANML3D_TO_COCO18
from dancegen.pose.sequence import PoseSequence
from dancegen.pose.skeletons import COCO18
from dancegen.synth.appearance import Appearance, Scene
from dancegen.synth.body import J, face_points, head_frame, matrix_to_axis_angle, pose_body
from dancegen.synth.camera import CameraTrack, frame_camera
from dancegen.synth.motion import Choreography, compose, parse_motion_text
from dancegen.synth.music import SAMPLE_RATE, Music, compose_music
from dancegen.synth.render import HEAD, S_HI, S_LO, Renderer

_STREAMS = {"appearance": 1, "motion": 2, "music": 3, "scene": 4}
#: Face points count as visible when their surface direction faces the camera by more than this cosine.
FACE_VISIBLE_COS = {"nose": 0.1, "l_eye": 0.1, "r_eye": 0.1, "l_ear": -0.35, "r_ear": -0.35}


def stream_seed(seed: int, stream: str) -> int:
    """Independent sub-seed of `seed` for one stream ("appearance", "motion", "music", "scene")."""
    return int(np.random.SeedSequence([int(seed), _STREAMS[stream]]).generate_state(1)[0])


@dataclass
class SynthClip:
    """Everything `render_clip` makes. Arrays are per frame; F = num_frames.

    Attributes:
        frames: `(F, H, W, 3)` uint8 RGB (None with `render=False`).
        audio: `(N,)` float32 mono music in [-1, 1] at `sample_rate`.
        joints3d: `(F, 22, 3)` float32 HumanML3D joints, world Y-up metres (floor y = 0).
        keypoints: `(F, 18, 3)` float32 COCO-18 (x, y, conf) in pixels; off-image or hidden face points are 0, 0, 0.
        rotations: `(F, 22, 3)` float32 local joint rotations, axis-angle radians (SMPL pose parameters of the
            first 22 joints; the pelvis includes the facing).
        root: `(F, 3)` float32 pelvis translation, metres.
        flow_forward: `(F-1, 2, H, W)` float32 pixels; `flow_forward[t]` maps frame t -> t+1 (x + flow).
        flow_backward: `(F-1, 2, H, W)` float32; `flow_backward[t]` maps frame t+1 -> t.
        depth: `(F, H, W)` float32 camera z in metres (background included; 100 for no surface).
        parts: `(F, H, W)` uint8 body-part index (0 background, 1..16 see `render.PART_NAMES`).
        uv: `(F, H, W, 2)` float16 part coordinates in [0, 1] (0 on background).
        masks: `(F, H, W)` bool person mask.
        beat_phase: `(F,)` float32 position inside the current beat, [0, 1) (0 = on the beat).
        camera: Per-frame intrinsics/extrinsics.
        music: Tempo, beat times and onsets.
        appearance, scene, choreography: What was sampled.
        appearance_text, motion_text, scene_text: Descriptions.
        seeds: The seed and the four stream seeds used.
        face3d: "nose", "l_eye", "r_eye", "l_ear", "r_ear" -> `(F, 3)` world positions on the head sphere.
        meta: Extra facts (ignored words of a text motion, ...).
        framing: `(F, N, 3)` float64 world points of this clip's dancer that a camera must keep in view (joints,
            head extremes, hand tips), whatever `frame_on` was (not written to disk).
    """

    width: int
    height: int
    fps: float
    num_frames: int
    frames: np.ndarray | None
    audio: np.ndarray
    sample_rate: int
    joints3d: np.ndarray
    keypoints: np.ndarray
    rotations: np.ndarray
    root: np.ndarray
    flow_forward: np.ndarray | None
    flow_backward: np.ndarray | None
    depth: np.ndarray | None
    parts: np.ndarray | None
    uv: np.ndarray | None
    masks: np.ndarray | None
    beat_phase: np.ndarray
    camera: CameraTrack
    music: Music
    appearance: Appearance
    scene: Scene
    choreography: Choreography
    appearance_text: str
    motion_text: str
    scene_text: str
    seeds: dict
    face3d: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    framing: np.ndarray | None = None

    @property
    def beat_times(self) -> np.ndarray:
        return self.music.beat_times

    @property
    def bpm(self) -> float:
        return self.music.bpm

    def pose_sequence(self) -> PoseSequence:
        """COCO-18 keypoints as a PoseSequence (pixels of this clip's frames)."""
        return PoseSequence(
            self.keypoints.copy(),
            format="coco18",
            width=self.width,
            height=self.height,
            fps=self.fps,
            meta={"source": "dancegen synth", "seed": self.seeds["seed"]},
        )

    def beats_dict(self) -> dict:
        """Beat ground truth as JSON-able data (tempo, beat/downbeat times, per-frame phase, beat frames)."""
        d = self.music.to_dict()
        d.pop("sample_rate", None)
        d["fps"] = self.fps
        d["beat_frames"] = np.round(self.music.beat_times * self.fps).astype(int).tolist()
        d["beat_phase"] = np.round(self.beat_phase.astype(float), 6).tolist()
        d["dance_beat_synced"] = self.choreography.beat_synced
        return d

    def meta_dict(self) -> dict:
        """Description of the clip (seeds, sizes, texts, sampled attributes) for meta.json."""
        return {
            "generator": "dancegen synth",
            "seeds": self.seeds,
            "width": self.width,
            "height": self.height,
            "fps": self.fps,
            "num_frames": self.num_frames,
            "seconds": self.num_frames / self.fps,
            "sample_rate": self.sample_rate,
            "bpm": self.music.bpm,
            "appearance_text": self.appearance_text,
            "motion_text": self.motion_text,
            "scene_text": self.scene_text,
            "appearance": self.appearance.to_dict(),
            "scene": self.scene.to_dict(),
            "motion": {
                "primitives": self.choreography.primitives,
                "segments_beats": self.choreography.segments,
                "beat_synced": self.choreography.beat_synced,
            },
            **self.meta,
        }


def _parse_size(size) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        w = h = int(size)
    else:
        w, h = (int(v) for v in size)
    if not (16 <= w <= 4096 and 16 <= h <= 4096):
        raise ValueError(f"size must be within 16..4096 pixels, got {w}x{h}")
    return w, h


def _keypoints(
    joints: np.ndarray, head_c: np.ndarray, head_r: np.ndarray, radius: float, camera: CameraTrack
) -> np.ndarray:
    f = joints.shape[0]
    pts = np.zeros((f, 18, 3))
    conf = np.ones((f, 18))
    for c_name, h_name in HUMANML3D_TO_COCO18.items():
        pts[:, COCO18.index(c_name)] = joints[:, J[h_name]]
    pts[:, COCO18.index("neck")] = (joints[:, J["l_shoulder"]] + joints[:, J["r_shoulder"]]) / 2
    to_cam = camera.centers - head_c
    to_cam /= np.linalg.norm(to_cam, axis=-1, keepdims=True)
    for name, (pos, direction) in face_points(head_c, head_r, radius).items():
        pts[:, COCO18.index(name)] = pos
        conf[:, COCO18.index(name)] = ((direction * to_cam).sum(-1) > FACE_VISIBLE_COS[name]).astype(float)
    xy, z = camera.project(pts)
    ok = (conf > 0) & (z > 0.05) & np.isfinite(xy).all(-1)
    ok &= (xy[..., 0] >= 0) & (xy[..., 0] <= camera.width - 1) & (xy[..., 1] >= 0) & (xy[..., 1] <= camera.height - 1)
    out = np.zeros((f, 18, 3), np.float32)
    out[..., :2] = np.where(ok[..., None], xy, 0.0)
    out[..., 2] = ok
    return out


def render_clip(
    seed: int = 0,
    size: int | tuple[int, int] = 256,
    num_frames: int | None = None,
    fps: float = 24.0,
    motion_text: str | None = None,
    *,
    seconds: float | None = None,
    appearance_seed: int | None = None,
    motion_seed: int | None = None,
    music_seed: int | None = None,
    scene_seed: int | None = None,
    camera_motion: str | None = None,
    bpm_range: tuple[float, float] = (90.0, 150.0),
    sample_rate: int = SAMPLE_RATE,
    render: bool = True,
    flow: bool = True,
    frame_on: np.ndarray | None = None,
) -> SynthClip:
    """Render one synthetic dance clip.

    Args:
        seed: Master seed; the four stream seeds derive from it unless given.
        size: `W` (square) or `(W, H)` in pixels.
        num_frames: Frame count (default: `seconds * fps`, or 48 frames when neither is given).
        fps: Frames per second.
        motion_text: e.g. "a person jumps and spins" (keyword-matched primitives, played in order); None: a random
            dance, one move per bar, key poses on the beats.
        seconds: Duration, used when `num_frames` is None.
        appearance_seed, motion_seed, music_seed, scene_seed: Override one stream (see the module docstring).
        camera_motion: "static", "pan", "zoom" or "shake" (None: sampled from the scene seed).
        bpm_range: Tempo range of the music.
        sample_rate: Audio rate.
        render: False skips the images (motion, music, keypoints and camera only; fast, for HumanML3D-style data).
        flow: False skips the two flow arrays (they are the largest outputs).
        frame_on: `(F, N, 3)` world points (metres) to fit the camera to and to put the wall behind, instead of
            this clip's own dancer (None). Clips rendered with the same scene seed and the same `frame_on` share
            camera and background exactly; pass the concatenated `framing` of all of them (from `render=False`
            passes) so that every dancer stays in view.

    Raises:
        InputError: `motion_text` names no known motion.
        ValueError: `frame_on` is not `(num_frames, N, 3)`.
    """
    w, h = _parse_size(size)
    if num_frames is None:
        num_frames = int(round(seconds * fps)) if seconds is not None else 48
    if num_frames < 1 or fps <= 0:
        raise ValueError(f"num_frames and fps must be positive, got {num_frames} and {fps}")
    if frame_on is not None:
        frame_on = np.asarray(frame_on, np.float64)
        if frame_on.ndim != 3 or frame_on.shape[0] != num_frames or frame_on.shape[2] != 3 or not frame_on.size:
            raise ValueError(f"frame_on must have shape ({num_frames}, N, 3), got {frame_on.shape}")
    seeds = {"seed": int(seed)}
    for name, given in (
        ("appearance", appearance_seed),
        ("motion", motion_seed),
        ("music", music_seed),
        ("scene", scene_seed),
    ):
        seeds[name] = int(given) if given is not None else stream_seed(seed, name)
    prims, ignored = parse_motion_text(motion_text) if motion_text is not None else (None, [])

    app = Appearance.sample(np.random.default_rng(seeds["appearance"]))
    music = compose_music(num_frames / fps, np.random.default_rng(seeds["music"]), bpm_range, sample_rate)
    times = np.arange(num_frames) / fps
    beats = music.beat_of(times)
    choreo = compose(prims, float(beats[0]), float(beats[-1]), np.random.default_rng(seeds["motion"]))
    angles, yaw, xz, air = choreo.evaluate(beats)
    joints, glob, local, root = pose_body(angles, yaw, xz, air, app.body)
    head_c, head_r = head_frame(joints, glob, app.body)
    radius = app.body.radii["head"]

    scene_rng = np.random.default_rng(seeds["scene"])
    scene = Scene.sample(scene_rng, camera_motion)
    framing_pts = np.concatenate(
        [
            joints,
            head_c[:, None] + radius * 1.35 * np.array([[0, 1, 0], [1, 0, 0], [-1, 0, 0], [0, 0, 1], [0, 0, -1]]),
        ],
        axis=1,
    )
    # Hand tips reach past the wrists; include them in the framing.
    fore = joints[:, [J["l_wrist"], J["r_wrist"]]] - joints[:, [J["l_elbow"], J["r_elbow"]]]
    tips = joints[:, [J["l_wrist"], J["r_wrist"]]] + 0.2 * app.body.height * fore / np.linalg.norm(
        fore, axis=-1, keepdims=True
    )
    own = np.concatenate([framing_pts, tips], 1)
    camera = frame_camera(own if frame_on is None else frame_on, w, h, scene, scene_rng)
    az = np.radians(scene.azimuth)
    wall_n = np.array([np.sin(az), 0.0, np.cos(az)])
    behind = joints if frame_on is None else frame_on
    wall_d = float((behind.reshape(-1, 3) @ wall_n).min() - 0.3 - scene.wall_distance)

    keypoints = _keypoints(joints, head_c, head_r, radius, camera)
    phase = np.mod(beats, 1.0).astype(np.float32)
    clip = SynthClip(
        width=w,
        height=h,
        fps=float(fps),
        num_frames=num_frames,
        frames=None,
        audio=music.audio,
        sample_rate=music.sample_rate,
        joints3d=joints.astype(np.float32),
        keypoints=keypoints,
        rotations=matrix_to_axis_angle(local).astype(np.float32),
        root=root.astype(np.float32),
        flow_forward=None,
        flow_backward=None,
        depth=None,
        parts=None,
        uv=None,
        masks=None,
        beat_phase=phase,
        camera=camera,
        music=music,
        appearance=app,
        scene=scene,
        choreography=choreo,
        appearance_text=app.describe(),
        motion_text=choreo.text,
        scene_text=scene.describe(),
        seeds=seeds,
        face3d={k: v[0].astype(np.float32) for k, v in face_points(head_c, head_r, radius).items()},
        meta={"ignored_words": ignored} if ignored else {},
        framing=own,
    )
    if render:
        _render_images(clip, Renderer(app, scene, camera, (wall_n, wall_d)), joints, head_c, head_r, flow)
    return clip


def _render_images(clip: SynthClip, renderer: Renderer, joints, head_c, head_r, with_flow: bool) -> None:
    f, h, w = clip.num_frames, clip.height, clip.width
    frames = np.zeros((f, h, w, 3), np.uint8)
    depth = np.zeros((f, h, w), np.float32)
    parts = np.zeros((f, h, w), np.uint8)
    uv = np.zeros((f, h, w, 2), np.float16)
    fwd = np.zeros((max(f - 1, 0), 2, h, w), np.float32) if with_flow else None
    bwd = np.zeros_like(fwd) if with_flow else None
    pts = renderer.points_3d(joints)
    prev, prev_geom = None, None
    for t in range(f):
        geom = renderer.geometry(t, pts, head_c, head_r)
        out = renderer.render_frame(t, geom)
        frames[t], depth[t], parts[t] = out["rgb"], out["depth"], out["part"]
        uv[t] = _uv(out["part"], out["s"], out["r"])
        if with_flow and prev is not None:
            fwd[t - 1] = renderer.flow(prev, t - 1, geom, t)
            bwd[t - 1] = renderer.flow(out, t, prev_geom, t - 1)
        prev, prev_geom = out, geom
    clip.frames, clip.depth, clip.parts, clip.uv, clip.masks = frames, depth, parts, uv, parts > 0
    clip.flow_forward, clip.flow_backward = fwd, bwd


def _uv(part: np.ndarray, s: np.ndarray, r: np.ndarray) -> np.ndarray:
    """DensePose-like (u, v) in [0, 1]: along/around a limb; latitude/longitude on the head; 0 on background."""
    out = np.zeros(part.shape + (2,), np.float16)
    body = part > 0
    p, sb, rb = part[body], s[body], r[body]
    head = p == HEAD
    u = np.where(head, 0.5 + sb / np.pi, (sb - S_LO) / (S_HI - S_LO))
    v = np.where(head, 0.5 + rb / (2 * np.pi), (rb + 1) / 2)
    out[body] = np.stack([np.clip(u, 0, 1), np.clip(v, 0, 1)], -1)
    return out

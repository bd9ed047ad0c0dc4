"""Motion-editing cases with an exact target: one dancer in one room doing two motions (the "Ground truth" choice
of ../shared/specs/edit-your-motion.md: appearance and scene from one seed, motion from another).

`edit_clips` renders a case in memory; `layouts.render_edit_case` writes one to a folder and `generate(...,
layout="edit")` (`dancegen synth --layout edit`) writes N of them. A case is three clips with the same frame count,
fps and image size, each in the `clips` layout (`layouts.write_clip_folder`; the writers live in layouts.py so that
imports go one way, layouts -> edit), plus `case.json`:

```
case_00000/
  source/      seed A: dancer A doing motion A in room A (the video to edit)
  target/      dancer A doing motion B in room A, filmed by the source's camera: the exact result of the edit
  reference/   seed B as `render_clip(B)` makes it: dancer B doing motion B in room B (its skeletons drive the edit)
  case.json    seeds, prompt (the source's appearance text), motion texts, scene text, size, frames, fps
```

Each clip folder holds video.mp4 (+ music), audio.wav, openpose_json/, pose_coco18.npy, joints3d.npy, smpl.npz,
flow_forward.npz / flow_backward.npz (unless `flow=False`), depth.npz, iuv.npz, masks/, beats.json, camera.json,
appearance.txt, motion.txt and meta.json (whose `seeds` name the stream seeds each clip used).

How the streams are shared (`clip.render_clip`): "motion B" is seed B's motion stream *and* its music stream, since
the dance is timed on the music's beats; so the target plays B's music, and its joint rotations and floor
trajectory equal the reference's exactly (its 3D joints and keypoints differ only by dancer A's proportions and
the camera). Source and target share the appearance, scene and camera-motion streams of seed A, and both are filmed
by one camera fitted to both motions (`render_clip(frame_on=...)`, with the wall behind both): same camera, same
background and lighting, so outside the two person masks their pixels are equal in every frame. The source is
therefore seed A's clip with the shot widened to fit motion B too; it is not byte-identical to `dancegen synth`'s
clip of seed A.
"""

from __future__ import annotations

import numpy as np

from dancegen.synth.clip import SynthClip, render_clip, stream_seed

ROLES = ("source", "target", "reference")


def motion_seed_of_case(seed: int, index: int) -> int:
    """Seed B of case `index` of a `generate(layout="edit")` run with master `seed` (seed A is
    `layouts.clip_seed(seed, index)`: the dancer and room of clip `index` of a `clips` run)."""
    return int(np.random.SeedSequence([int(seed), int(index), 1]).generate_state(1)[0])


def edit_clips(
    seed_a: int,
    seed_b: int,
    size: int | tuple[int, int] = 256,
    num_frames: int = 48,
    fps: float = 24.0,
    *,
    motion: str | None = None,
    source_motion: str | None = None,
    camera_motion: str | None = None,
    bpm_range: tuple[float, float] = (90.0, 150.0),
    flow: bool = True,
) -> dict[str, SynthClip]:
    """Render the three clips of one case in memory (see the module docstring).

    Args:
        seed_a: Seed of the source: the dancer, room and camera of source and target.
        seed_b: Seed of the edit's motion (and music), and of the reference's dancer and room.
        size: `W` (square) or `(W, H)` pixels.
        num_frames: Frames of every clip.
        fps: Frame rate of every clip.
        motion: The edited motion in words (target and reference), e.g. "a person jumps and spins"; None: seed B's
            random dance.
        source_motion: The source's motion in words; None: seed A's random dance.
        camera_motion: "static", "pan", "zoom" or "shake" for all three clips (None: each from its scene seed).
        bpm_range: Music tempo range.
        flow: Render the ground-truth flow.

    Returns:
        {"source": ..., "target": ..., "reference": ...} SynthClips.
    """
    common = dict(size=size, num_frames=num_frames, fps=fps, camera_motion=camera_motion, bpm_range=bpm_range)
    src_kw = dict(seed=seed_a, motion_text=source_motion, **common)
    tgt_kw = dict(seed=seed_a, motion_text=motion, motion_seed=stream_seed(seed_b, "motion"),
                  music_seed=stream_seed(seed_b, "music"), **common)
    # Motion-only passes give both dancers' framing points; one camera and one wall fitted to all of them.
    stage = np.concatenate([render_clip(**kw, render=False).framing for kw in (src_kw, tgt_kw)], 1)
    return {
        "source": render_clip(**src_kw, flow=flow, frame_on=stage),
        "target": render_clip(**tgt_kw, flow=flow, frame_on=stage),
        "reference": render_clip(seed_b, motion_text=motion, flow=flow, **common),
    }


def case_record(clips: dict[str, SynthClip]) -> dict:
    """The JSON-able description of a case (`case.json`)."""
    src, tgt, ref = (clips[r] for r in ROLES)
    return {
        "generator": "dancegen synth (edit)",
        "source_seed": src.seeds["seed"],
        "motion_seed": ref.seeds["seed"],
        "prompt": src.appearance_text,
        "source_motion_text": src.motion_text,
        "target_motion_text": tgt.motion_text,
        "scene_text": src.scene_text,
        "reference_appearance_text": ref.appearance_text,
        "width": src.width,
        "height": src.height,
        "num_frames": src.num_frames,
        "fps": src.fps,
        "seeds": {r: clips[r].seeds for r in ROLES},
    }

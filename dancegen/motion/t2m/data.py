"""Training pairs of the tiny text-to-motion model: (text, joints `(T, 22, 3)`) from the synthetic world, no video.

`synth_motion(seed, primitives)` plays the same path as `dancegen.synth.clip.render_clip(render=False)` (the dancer's
body from the appearance stream, the music's beat grid from the music stream, `compose` from the motion stream,
`pose_body`) and stops at the joints, so a pair costs about 13 ms instead of the clip's 43 ms; `render_clip` at the
same seed, fps and text gives the same joints (tests/test_t2m.py checks it). The motion is evaluated directly at the
model's frame rate (20 fps, MDM's): the choreography is a continuous-time key-frame timeline, so no resampling is
needed.

Texts (`sample_text`): 1 to 3 primitives (no immediate repeat), written either as the canonical `describe_motion`
sentence or as a paraphrase: a subject ("someone", "the performer", ...), one phrase per primitive drawn from
`PHRASES` (synonyms `parse_motion_text` accepts: hops / leaps for jumps, twirls / pirouettes for spins, crouches for
squats, ...) and connectors ("and then", "then", ...). Every phrase parses back to its primitive (tested), so the
label of a text is what the synthetic dancer would do for it.

Direction of rotation: the world draws each spin's and turn's direction at random (50/50), so "spins" has two
mirror-image answers whose average (what an x0 model predicts at high noise) is no rotation. `sample_pair` therefore
mirrors a motion whose first turn (heading change > 45 degrees) goes towards -X (`mirror`: x negated, left / right
joints swapped, and a left-arm wave in its text becomes a right-arm wave), so every spin and turn of the training
data starts counter-clockwise seen from above. The text still says only what the dancer does; the model spins one
way. (Mirroring alone did not make the tiny model spin; the features below did, with it.)

Features (`to_features` / `from_features`, 67 per frame, exactly invertible): per sample, the pelvis xz of frame 0
is moved to the origin and the body is turned about +Y so that frame 0 faces +Z (`canonicalize`, HumanML3D's
canonical start; heights stay metres above the floor). Each frame is then [heading change since the previous frame
(radians; frame 0: its heading), pelvis x, y, z, the 21 other joints in the body's facing frame (x, z relative to
the pelvis, y their height above the floor, so a jump lifts every joint's channel)]; `from_features` integrates the
heading and turns the body back, so the heading is kept and spins and turns stay visible. Why not the world
positions of the 22 joints (66 features): a spin's joints sweep a circle whose phase varies with the tempo, so their
mean over the data (what an x0 model predicts at high noise) is a body shrunk onto its axis; classifier-free guidance
extrapolates that shrinking past zero and turns the body inside out, and the model trained on world positions (same
recipe otherwise) made 0 of 8 held-out spins rotate, every one a static body facing about -110 degrees. The heading
change is one channel whose mean over the data still integrates to the rotation, and the body-frame pose does not
rotate at all. The model works on the features z-scored by the training set's per-feature mean / std.
"""

from __future__ import annotations

import re

import numpy as np

from dancegen.synth.motion import PRIMITIVES, VOCABULARY, describe_motion

NUM_JOINTS = 22
NUM_FEATURES = 1 + 3 + (NUM_JOINTS - 1) * 3  # heading change, pelvis, body-frame joints
#: Feature channels of the root trajectory on the floor (heading change, pelvis x, pelvis z).
ROOT_CHANNELS = (0, 1, 3)
PELVIS, L_HIP, R_HIP = 0, 1, 2

#: Verb phrases per primitive, each parsed back to exactly that primitive by `parse_motion_text`.
PHRASES: dict[str, tuple[str, ...]] = {
    "jumps": ("jumps", "hops", "leaps", "jumps up and down", "jumps in place", "hops twice", "leaps high"),
    "spins": ("spins around", "spins", "twirls", "twirls around", "pirouettes", "spins in place", "rotates"),
    "waves both arms": ("waves both arms", "waves both hands", "waves his arms", "waves her hands",
                        "waves the arms"),
    "waves left arm": ("waves the left arm", "waves the left hand", "waves his left arm", "waves her left hand",
                       "waves left"),
    "waves right arm": ("waves the right arm", "waves the right hand", "waves his right arm",
                        "waves her right hand", "waves right"),
    "raises arms": ("raises both arms", "lifts both arms", "raises his arms up", "lifts her hands",
                    "puts both hands up", "raises the arms"),
    "claps": ("claps", "claps his hands", "claps her hands", "is clapping", "claps twice"),
    "kicks": ("kicks", "kicks high", "does a few kicks", "is kicking", "kicks the legs"),
    "squats": ("squats", "crouches", "squats down", "crouches down", "does squats"),
    "steps side to side": ("steps side to side", "sidesteps", "sways", "steps from side to side",
                           "steps left and right"),
    "bounces": ("bounces", "grooves", "bounces up and down", "bounces in place"),
    "turns": ("turns around", "turns", "turns in place", "turns around once"),
    "walks forward": ("walks forward", "walks", "walks ahead", "walks forwards", "is walking forward"),
    "dances": ("dances", "is dancing", "dances happily", "dances energetically"),
}
#: (No "dancer": `parse_motion_text` reads "danc..." as the primitive "dances".)
SUBJECTS = ("a person", "someone", "a man", "a woman", "the performer", "a figure", "the person", "somebody")
CONNECTORS = (" and then ", " then ", " and ", ", then ", " and after that ", ", and then ")
#: Probabilities of 1, 2 and 3 primitives per sample.
COUNT_PROBS = (0.5, 0.3, 0.2)
#: HumanML3D-22 index of each joint's mirror image (left <-> right).
MIRROR_JOINTS = (0, 2, 1, 3, 5, 4, 6, 8, 7, 9, 11, 10, 12, 14, 13, 15, 17, 16, 19, 18, 21, 20)
MIRROR_PRIMITIVE = {"waves left arm": "waves right arm", "waves right arm": "waves left arm"}
#: Version of the pairs `sample_pair` makes (part of the training data cache key).
DATA_VERSION = 4
_TEXT_STREAM = 101  # SeedSequence stream of a sample's text draw (synth's own streams are 1..4)


def tokenize(text: str) -> list[str]:
    """Lower-case words (letters only)."""
    return re.findall(r"[a-z]+", text.lower())


def vocabulary_words() -> list[str]:
    """Every word the text generator can write (sorted): the model's word vocabulary."""
    words = set()
    for phrases in PHRASES.values():
        for p in phrases:
            words.update(tokenize(p))
    for s in (*SUBJECTS, *CONNECTORS, *PRIMITIVES.values(), "a person"):
        words.update(tokenize(s))
    return sorted(words)


def sample_primitives(rng: np.random.Generator, count: int | None = None) -> list[str]:
    """1 to 3 primitives from `VOCABULARY` (uniform), never the same one twice in a row."""
    n = int(rng.choice(3, p=COUNT_PROBS)) + 1 if count is None else int(count)
    out: list[str] = []
    while len(out) < n:
        p = str(VOCABULARY[int(rng.integers(len(VOCABULARY)))])
        if not out or out[-1] != p:
            out.append(p)
    return out


def sample_text(primitives: list[str], rng: np.random.Generator, canonical: float = 0.4) -> str:
    """The canonical description (probability `canonical`) or a paraphrase of `primitives`."""
    if rng.random() < canonical:
        return describe_motion(primitives)
    subject = SUBJECTS[int(rng.integers(len(SUBJECTS)))]
    parts = [PHRASES[p][int(rng.integers(len(PHRASES[p])))] for p in primitives]
    text = subject + " " + parts[0]
    for p in parts[1:]:
        text += CONNECTORS[int(rng.integers(len(CONNECTORS)))] + p
    return text


def synth_motion(seed: int, primitives: list[str], num_frames: int = 60, fps: float = 20.0) -> np.ndarray:
    """World joints `(num_frames, 22, 3)` float32 of the synthetic dancer of clip seed `seed` doing `primitives`
    (what `render_clip(seed, num_frames=num_frames, fps=fps, motion_text=..., render=False).joints3d` holds)."""
    from dancegen.synth.appearance import Appearance
    from dancegen.synth.body import pose_body
    from dancegen.synth.clip import stream_seed
    from dancegen.synth.motion import compose
    from dancegen.synth.music import SAMPLE_RATE, compose_music

    app = Appearance.sample(np.random.default_rng(stream_seed(seed, "appearance")))
    music = compose_music(num_frames / fps, np.random.default_rng(stream_seed(seed, "music")), (90.0, 150.0),
                          SAMPLE_RATE)
    beats = music.beat_of(np.arange(num_frames) / fps)
    choreo = compose(list(primitives), float(beats[0]), float(beats[-1]),
                     np.random.default_rng(stream_seed(seed, "motion")))
    angles, yaw, xz, air = choreo.evaluate(beats)
    return pose_body(angles, yaw, xz, air, app.body)[0].astype(np.float32)


def sample_pair(seed: int, num_frames: int = 60, fps: float = 20.0, count: int | None = None
                ) -> tuple[str, list[str], np.ndarray]:
    """One training pair of clip seed `seed`: (text, primitives, canonical joints `(T, 22, 3)`)."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), _TEXT_STREAM]))
    prims = sample_primitives(rng, count)
    joints = canonicalize(synth_motion(seed, prims, num_frames, fps))
    if first_turn(joints) < 0:
        joints, prims = mirror(joints), [MIRROR_PRIMITIVE.get(p, p) for p in prims]
    text = sample_text(prims, rng)
    return text, prims, joints


def make_split(master_seed: int, first: int, count: int, num_frames: int = 60, fps: float = 20.0,
               progress=None) -> dict:
    """Pairs `first .. first + count - 1` of master seed `master_seed` (clip seeds `clip_seed(master, i)`):
    `{"texts": [...], "primitives": [[...]], "joints": (N, T, 22, 3) float32}`."""
    from dancegen.synth.layouts import clip_seed

    texts, prims, joints = [], [], []
    for k, i in enumerate(range(first, first + count)):
        t, p, j = sample_pair(clip_seed(master_seed, i), num_frames, fps)
        texts.append(t)
        prims.append(p)
        joints.append(j)
        if progress:
            progress(k + 1, count)
    return {"texts": texts, "primitives": prims,
            "joints": np.stack(joints) if joints else np.zeros((0, num_frames, NUM_JOINTS, 3), np.float32)}


# ------------------------------------------------------------------------------------------------- features
def heading(joints: np.ndarray) -> np.ndarray:
    """Facing yaw in radians per frame (0 = +Z, positive towards +X) from the hip across-vector (left - right hip)."""
    across = joints[..., L_HIP, :] - joints[..., R_HIP, :]
    # facing = across x up = (-across_z, 0, across_x) for up = +Y
    return np.arctan2(-across[..., 2], across[..., 0])


def canonicalize(joints: np.ndarray) -> np.ndarray:
    """Frame 0's pelvis moved to x = z = 0 and frame 0 turned to face +Z; heights and later headings kept."""
    j = np.asarray(joints, dtype=np.float64).copy()
    j[..., 0] -= j[0, PELVIS, 0]
    j[..., 2] -= j[0, PELVIS, 2]
    yaw = float(heading(j[0]))
    c, s = np.cos(-yaw), np.sin(-yaw)  # rotate by -yaw about +Y
    x, z = j[..., 0].copy(), j[..., 2].copy()
    j[..., 0] = c * x + s * z
    j[..., 2] = -s * x + c * z
    return j.astype(np.float32)


def first_turn(joints: np.ndarray, angle: float = 45.0) -> int:
    """Sign of the first change of heading larger than `angle` degrees from frame 0 (+1 towards +X, -1 the other
    way, 0 when the body never turns that far)."""
    yaw = np.degrees(np.unwrap(heading(joints)))
    far = np.nonzero(np.abs(yaw - yaw[0]) > angle)[0]
    return 0 if far.size == 0 else int(np.sign(yaw[far[0]] - yaw[0]))


def mirror(joints: np.ndarray) -> np.ndarray:
    """The motion reflected through the X = 0 plane (x negated, left and right joints swapped): a spin or turn
    goes the other way, a left-arm wave becomes a right-arm wave."""
    j = np.asarray(joints)[..., MIRROR_JOINTS, :].copy()
    j[..., 0] *= -1
    return j


def _turn_y(v: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Points `(..., 3)` turned about +Y by `angle` radians (broadcast over the leading axes): a body facing +Z turned
    by `angle` faces heading `angle`."""
    c, s = np.cos(angle), np.sin(angle)
    out = v.copy()
    out[..., 0] = c * v[..., 0] + s * v[..., 2]
    out[..., 2] = -s * v[..., 0] + c * v[..., 2]
    return out


def to_features(joints: np.ndarray) -> np.ndarray:
    """`(..., T, 22, 3)` joints -> `(..., T, 67)` features (no normalisation; see the module docstring)."""
    j = np.asarray(joints, dtype=np.float64)
    yaw = heading(j)
    dyaw = np.concatenate([yaw[..., :1], np.diff(yaw, axis=-1)], -1)
    dyaw[..., 1:] = (dyaw[..., 1:] + np.pi) % (2 * np.pi) - np.pi
    root = j[..., PELVIS, :]
    rel = j[..., 1:, :].copy()
    rel[..., 0] -= root[..., None, 0]
    rel[..., 2] -= root[..., None, 2]
    local = _turn_y(rel, -yaw[..., None])
    return np.concatenate([dyaw[..., None], root, local.reshape(*local.shape[:-2], -1)], -1).astype(np.float32)


def from_features(features: np.ndarray) -> np.ndarray:
    """`(..., T, 67)` features -> `(..., T, 22, 3)` joints."""
    f = np.asarray(features, dtype=np.float64)
    yaw = np.cumsum(f[..., 0], axis=-1)
    root = f[..., 1:4]
    rest = _turn_y(f[..., 4:].reshape(*f.shape[:-1], NUM_JOINTS - 1, 3), yaw[..., None])
    rest[..., 0] += root[..., None, 0]
    rest[..., 2] += root[..., None, 2]
    return np.concatenate([root[..., None, :], rest], -2).astype(np.float32)

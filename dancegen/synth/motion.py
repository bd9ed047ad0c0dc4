"""Choreography for the synthetic dancer: motion primitives, text parsing and beat-synced key-frame timelines.

A motion is a list of key poses placed on musical beats. Every channel (joint Euler angles, facing, floor position,
jump height) moves from one key to the next with the same smoothstep easing, so the whole body comes to rest exactly on
each key: the kinematic beats (local minima of joint speed, the definition used by AIST++/FACT's Beat Align Score and
by Dance-Any-Beat's 2D-MM Align, ../shared/specs/dance-any-beat.md §6.3 G8) fall on the music beats.

Text such as "a person jumps and spins" is parsed by keyword matching into primitives, played in the order written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from dancegen.errors import InputError
from dancegen.synth.body import NUM_JOINTS, J

# Canonical primitive id -> the phrase used in motion descriptions and captions.
PRIMITIVES: dict[str, str] = {
    "jumps": "jumps",
    "spins": "spins around",
    "waves both arms": "waves both arms",
    "waves left arm": "waves the left arm",
    "waves right arm": "waves the right arm",
    "raises arms": "raises both arms",
    "claps": "claps",
    "kicks": "kicks",
    "squats": "squats",
    "steps side to side": "steps side to side",
    "bounces": "bounces",
    "turns": "turns around",
    "walks forward": "walks forward",
    "dances": "dances",
}
VOCABULARY = tuple(PRIMITIVES)

# Keyword patterns, most specific first; each match consumes its span of the text.
_PATTERNS: tuple[tuple[str, str], ...] = (
    ("waves both arms", r"\bwav\w*\s+(?:both|(?:his|her|their|the)\s+)?(?:arms|hands)\b|\bwav\w*\s+both\b"),
    ("waves left arm", r"\bwav\w*\s+(?:(?:his|her|their|the)\s+)?left(?:\s+(?:arm|hand))?\b"),
    ("waves right arm", r"\bwav\w*\s+(?:(?:his|her|their|the)\s+)?right(?:\s+(?:arm|hand))?\b|\bwav\w*"),
    (
        "raises arms",
        r"\b(?:rais|lift)\w*\s+(?:(?:both|his|her|their|the)\s+)*(?:arms|hands)(?:\s+up)?\b"
        r"|\barms\s+up\b|\bhands\s+up\b|\b(?:rais|lift)\w*",
    ),
    (
        "steps side to side",
        r"\bsteps?\s+(?:from\s+)?side\s+to\s+side\b|\bside[-\s]?step\w*|\bsway\w*"
        r"|\bsteps?\s+left\s+and\s+right\b|\bstep\w*",
    ),
    ("walks forward", r"\bwalk\w*(?:\s+(?:forward|ahead|forwards))?\b"),
    ("jumps", r"\bjump\w*|\bhop\w*|\bleap\w*"),
    ("spins", r"\bspin\w*(?:\s+around)?|\btwirl\w*|\bpirouett\w*|\brotat\w*"),
    ("claps", r"\bclap\w*"),
    ("kicks", r"\bkick\w*"),
    ("squats", r"\bsquat\w*|\bcrouch\w*"),
    ("bounces", r"\bbounc\w*|\bgroov\w*"),
    ("turns", r"\bturn\w*(?:\s+around)?"),
    ("dances", r"\bdanc\w*"),
)
# Words that may appear around primitives without meaning a motion of their own.
_FILLER = set(
    "a an the person man woman someone somebody dancer figure he she they it who is and then after that afterwards "
    "while also his her their both arms arm hands hand around in place on spot with to side forward up down once "
    "twice thrice times again repeatedly quickly slowly high low energetically happily first next finally before "
    "few several multiple left right of its body at same time three four two one".split()
)


def parse_motion_text(text: str) -> tuple[list[str], list[str]]:
    """Find motion primitives in free text, in the order written.

    Args:
        text: e.g. "a person jumps and spins".

    Returns:
        `(primitives, ignored_words)`: canonical ids from `VOCABULARY`, and words that matched nothing and are not
        filler (kept for the clip's metadata).

    Raises:
        InputError: nothing in the text is a known motion; the message lists the vocabulary.
    """
    low = " " + text.lower() + " "
    taken = np.zeros(len(low), dtype=bool)
    found: list[tuple[int, str]] = []
    for prim, pattern in _PATTERNS:
        for m in re.finditer(pattern, low):
            if taken[m.start() : m.end()].any():
                continue
            taken[m.start() : m.end()] = True
            found.append((m.start(), prim))
    rest = "".join(ch if not t else " " for ch, t in zip(low, taken, strict=True))
    ignored = [w for w in re.findall(r"[a-z]+", rest) if w not in _FILLER]
    if not found:
        raise InputError(
            f"no known motion in {text!r}; the synthetic dancer knows: {', '.join(VOCABULARY)} "
            '(e.g. "a person jumps and spins")'
        )
    return [p for _, p in sorted(found)], ignored


def describe_motion(primitives: list[str]) -> str:
    """Canonical English description, e.g. ["jumps", "spins"] -> "a person jumps and then spins around"."""
    phrases = [PRIMITIVES[p] for p in primitives]
    # Collapse immediate repeats: "bounces, bounces" -> "bounces".
    phrases = [p for i, p in enumerate(phrases) if i == 0 or p != phrases[i - 1]]
    if len(phrases) == 1:
        return f"a person {phrases[0]}"
    if len(phrases) == 2:
        return f"a person {phrases[0]} and then {phrases[1]}"
    return f"a person {', '.join(phrases[:-1])}, and then {phrases[-1]}"


# ----------------------------------------------------------------------------------------------------- key poses
_SYM = {
    "shoulders": ("l_shoulder", "r_shoulder"),
    "elbows": ("l_elbow", "r_elbow"),
    "hips": ("l_hip", "r_hip"),
    "knees": ("l_knee", "r_knee"),
    "ankles": ("l_ankle", "r_ankle"),
    "collars": ("l_collar", "r_collar"),
    "wrists": ("l_wrist", "r_wrist"),
}
_MIRROR = np.array([1.0, -1.0, -1.0])


def _pose(base: np.ndarray | None = None, **joints) -> np.ndarray:
    """A `(22, 3)` Euler pose: `shoulders=(x,y,z)` sets the left joint and its mirror; `l_knee=...` one joint."""
    p = np.zeros((NUM_JOINTS, 3)) if base is None else base.copy()
    for name, val in joints.items():
        v = np.asarray(val, dtype=np.float64)
        if name in _SYM:
            left, right = _SYM[name]
            p[J[left]], p[J[right]] = v, v * _MIRROR
        elif name.startswith("r_"):
            p[J[name]] = v * _MIRROR  # right-side values are written as for the left side, then mirrored
        else:
            p[J[name]] = v
    return p


BASE = _pose(shoulders=(0, -5, -72), elbows=(0, -15, 0), hips=(-4, 0, 3), knees=(8, 0, 0), ankles=(-4, 0, 0))


def _bend(p: np.ndarray, k: float, lean: float = 0.25) -> np.ndarray:
    """Bend both knees by `k` degrees (hips and ankles follow; the trunk leans a little to stay balanced)."""
    return _pose(
        p, hips=(-4 - 0.7 * k, 0, 3), knees=(8 + k, 0, 0), ankles=(-4 - 0.35 * k, 0, 0), spine1=(lean * k, 0, 0)
    )


@dataclass
class Key:
    """A key pose at `beat` (relative to its segment) with root increments applied when it is reached."""

    beat: float
    angles: np.ndarray
    d_yaw: float = 0.0
    d_fwd: float = 0.0
    d_side: float = 0.0
    air: float = 0.0


def _cycle(prim: str, rng: np.random.Generator) -> tuple[int, list[Key]]:
    """One cycle of a primitive: its length in beats and its keys (beats in [0, length))."""
    b = BASE
    if prim == "bounces":
        return 2, [
            Key(0, _pose(_bend(b, 38), shoulders=(0, -22, -70))),
            Key(1, _pose(_bend(b, 4), shoulders=(0, 12, -74))),
        ]
    if prim == "jumps":
        crouch = _pose(_bend(b, 60, 0.35), shoulders=(0, 30, -55))
        apex = _pose(
            b, shoulders=(0, -10, 70), elbows=(0, 0, 10), hips=(-35, 0, 8), knees=(55, 0, 0), ankles=(20, 0, 0)
        )
        return 2, [Key(0, crouch), Key(1, apex, air=0.32)]
    if prim == "spins":
        sign = 1.0 if rng.random() < 0.5 else -1.0
        tuck = _pose(_bend(b, 18), shoulders=(0, -55, -35), elbows=(0, -95, 0))
        out = _pose(_bend(b, 28), shoulders=(0, -5, 5), elbows=(0, -5, 0))
        return 4, [
            Key(0, tuck),
            Key(2, _pose(_bend(b, 6), shoulders=(0, -55, -25), elbows=(0, -95, 0)), d_yaw=360 * sign),
            Key(3, out),
        ]
    if prim == "turns":
        sign = 1.0 if rng.random() < 0.5 else -1.0
        return 2, [
            Key(0, _pose(_bend(b, 14), shoulders=(0, -25, -60)), d_yaw=float(rng.choice([90, 180])) * sign),
            Key(1, _pose(_bend(b, 30), shoulders=(0, 10, -45), elbows=(0, -40, 0))),
        ]
    if prim == "waves both arms":
        up = dict(shoulders=(0, -12, 42))
        return 2, [
            Key(0, _pose(_bend(b, 22), **up, elbows=(0, -10, 105), spine2=(0, 0, 7))),
            Key(1, _pose(_bend(b, 6), **up, elbows=(0, -10, 35), spine2=(0, 0, -7))),
        ]
    if prim in ("waves left arm", "waves right arm"):
        s = "l_" if prim == "waves left arm" else "r_"
        return 2, [
            Key(0, _pose(_bend(b, 20), **{f"{s}shoulder": (0, -12, 48), f"{s}elbow": (0, -10, 110)})),
            Key(1, _pose(_bend(b, 6), **{f"{s}shoulder": (0, -12, 48), f"{s}elbow": (0, -10, 35)})),
        ]
    if prim == "raises arms":
        return 2, [
            Key(0, _pose(_bend(b, 26), shoulders=(0, -20, -65), elbows=(0, -35, 0))),
            Key(1, _pose(b, shoulders=(0, -8, 84), elbows=(0, 0, 5), ankles=(12, 0, 0), spine2=(-8, 0, 0))),
        ]
    if prim == "claps":
        return 2, [
            Key(0, _pose(_bend(b, 24), shoulders=(0, -100, -12), elbows=(0, -28, 0))),
            Key(1, _pose(_bend(b, 6), shoulders=(0, -45, -10), elbows=(0, -65, 0))),
        ]
    if prim == "kicks":
        ready = _pose(_bend(b, 16), shoulders=(0, -5, -40))
        # Kicks go forward and a little out, so a camera in front sees the leg rather than its sole.
        kick_l = _pose(
            ready,
            l_hip=(-72, 0, 24),
            l_knee=(6, 0, 0),
            r_knee=(14, 0, 0),
            r_hip=(-6, 0, 3),
            spine1=(-10, 0, 0),
            shoulders=(0, 15, -30),
        )
        kick_r = _pose(
            ready,
            r_hip=(-72, 0, 24),
            r_knee=(6, 0, 0),
            l_knee=(14, 0, 0),
            l_hip=(-6, 0, 3),
            spine1=(-10, 0, 0),
            shoulders=(0, 15, -30),
        )
        return 4, [Key(0, ready), Key(1, kick_l), Key(2, ready), Key(3, kick_r)]
    if prim == "squats":
        return 2, [
            Key(0, _pose(_bend(b, 4), shoulders=(0, -10, -70))),
            Key(
                1,
                _pose(
                    b,
                    hips=(-95, 0, 10),
                    knees=(115, 0, 0),
                    ankles=(-28, 0, 0),
                    spine1=(28, 0, 0),
                    shoulders=(0, -82, -8),
                    elbows=(0, -5, 0),
                ),
            ),
        ]
    if prim == "steps side to side":
        apart = _pose(_bend(b, 22), hips=(-19, 0, 12), shoulders=(0, -30, -58))
        close = _pose(_bend(b, 6), shoulders=(0, 20, -70))
        return 4, [
            Key(0, apart, d_side=-0.14),
            Key(1, close, d_side=-0.14),
            Key(2, apart, d_side=0.14),
            Key(3, close, d_side=0.14),
        ]
    if prim == "walks forward":
        step_l = _pose(
            b,
            l_hip=(-28, 0, 3),
            r_hip=(16, 0, 3),
            l_knee=(8, 0, 0),
            r_knee=(24, 0, 0),
            l_shoulder=(0, 22, -72),
            r_shoulder=(0, -22, -72),
        )
        step_r = _pose(
            b,
            r_hip=(-28, 0, 3),
            l_hip=(16, 0, 3),
            r_knee=(8, 0, 0),
            l_knee=(24, 0, 0),
            r_shoulder=(0, 22, -72),
            l_shoulder=(0, -22, -72),
        )
        return 2, [Key(0, step_l, d_fwd=0.22), Key(1, step_r, d_fwd=0.22)]
    raise ValueError(f"unknown primitive {prim!r}")


#: Primitives a random dance draws from, with weights (turns and walks drift the dancer, so they are left out).
DANCE_MOVES = {
    "bounces": 1.0,
    "waves both arms": 1.0,
    "waves left arm": 0.5,
    "waves right arm": 0.5,
    "raises arms": 1.0,
    "claps": 1.0,
    "kicks": 1.0,
    "squats": 0.7,
    "steps side to side": 1.0,
    "spins": 0.8,
    "jumps": 0.8,
}


@dataclass
class Choreography:
    """A key-frame timeline in beats, evaluated at any time.

    Attributes:
        times: `(K,)` key times in beats (beat 0 is the first music beat).
        angles: `(K, 22, 3)` Euler angles in degrees.
        yaw: `(K,)` facing in degrees.
        xz: `(K, 2)` floor position.
        air: `(K,)` jump height.
        segments: `[(primitive, start_beat, end_beat)]` for the metadata.
        primitives: Primitive ids in order.
        text: Canonical motion description.
        beat_synced: Whether keys sit on beats (False when a text motion was compressed into a short clip).
    """

    times: np.ndarray
    angles: np.ndarray
    yaw: np.ndarray
    xz: np.ndarray
    air: np.ndarray
    segments: list = field(default_factory=list)
    primitives: list = field(default_factory=list)
    text: str = ""
    beat_synced: bool = True

    def evaluate(self, beats: np.ndarray):
        """Channels at times `beats` `(F,)` -> `(angles (F,22,3), yaw (F,), xz (F,2), air (F,))`."""
        t = self.times
        i = np.clip(np.searchsorted(t, beats, side="right") - 1, 0, len(t) - 2)
        span = np.maximum(t[i + 1] - t[i], 1e-9)
        f = np.clip((beats - t[i]) / span, 0.0, 1.0)
        e = f * f * (3.0 - 2.0 * f)  # smoothstep: zero velocity at every key

        def lerp(v):
            a, b = v[i], v[i + 1]
            return a + (b - a) * e.reshape((-1,) + (1,) * (a.ndim - 1))

        return lerp(self.angles), lerp(self.yaw), lerp(self.xz), lerp(self.air)


def _allot_text(prims: list[str], total_beats: int, rng) -> list[tuple[str, int]]:
    """Beats for each primitive of a text motion: whole cycles, extra cycles handed out in order."""
    cycles = [_cycle(p, np.random.default_rng(0))[0] if p != "dances" else 4 for p in prims]
    counts = [1] * len(prims)
    left = total_beats - sum(cycles)
    progress = True
    while left > 0 and progress:
        progress = False
        for k, c in enumerate(cycles):
            if c <= left:
                counts[k] += 1
                left -= c
                progress = True
    return [(p, c * n) for p, c, n in zip(prims, cycles, counts, strict=True)]


def compose(
    primitives: list[str] | None, start_beat: float, end_beat: float, rng: np.random.Generator, bar: int = 4
) -> Choreography:
    """Build a choreography that covers beats `[start_beat, end_beat]`.

    Args:
        primitives: Primitive ids in order (from `parse_motion_text`), or None for a random beat-synced dance of
            one-bar segments drawn from `DANCE_MOVES`. "dances" inside a list expands to random bars.
        start_beat: Beat time of the first frame (may be negative: the first music beat can come after frame 0).
        end_beat: Beat time of the last frame.
        rng: Random generator (primitive variants, random moves).
        bar: Beats per segment of a random dance.
    """
    b0 = float(np.floor(start_beat))
    total = int(np.ceil(end_beat) - b0) + 1
    moves = list(DANCE_MOVES)
    weights = np.array([DANCE_MOVES[m] for m in moves])
    weights /= weights.sum()

    def random_bars(n_beats: int) -> list[tuple[str, int]]:
        out, prev = [], None
        while n_beats > 0:
            m = str(rng.choice(moves, p=weights))
            if m == prev:
                continue
            out.append((m, min(bar, n_beats) if m not in ("spins", "kicks", "steps side to side") else bar))
            n_beats -= bar
            prev = m
        return out

    if primitives is None:
        plan = random_bars(total)
    else:
        plan = []
        for p, n in _allot_text(primitives, total, rng):
            plan.extend(random_bars(n) if p == "dances" else [(p, n)])

    times, angles, yaws, xzs, airs, segments = [], [], [], [], [], []
    yaw, pos = 0.0, np.zeros(2)
    beat = b0
    for prim, n in plan:
        c, keys = _cycle(prim, rng)
        seg_start = beat
        for rep in range(int(np.ceil(n / c))):
            for k in keys:
                kb = rep * c + k.beat
                if kb >= n:
                    break
                yaw += k.d_yaw
                a = np.radians(yaw)
                fwd, side = np.array([np.sin(a), np.cos(a)]), np.array([np.cos(a), -np.sin(a)])
                pos = pos + k.d_fwd * fwd - k.d_side * side
                times.append(seg_start + kb)
                angles.append(k.angles)
                yaws.append(yaw)
                xzs.append(pos.copy())
                airs.append(k.air)
        beat = seg_start + n
        segments.append((prim, seg_start, beat))
    # A closing key: back to the neutral stance one beat after the last segment.
    times.append(beat)
    angles.append(_bend(BASE, 10))
    yaws.append(yaw)
    xzs.append(pos.copy())
    airs.append(0.0)

    times_a = np.asarray(times, dtype=np.float64)
    synced = True
    if primitives is not None and beat > np.ceil(end_beat) + 1:
        # Too many primitives for the clip: squeeze the timeline into the clip (keys leave the beat grid).
        times_a = start_beat + (times_a - b0) * (end_beat - start_beat) / (beat - b0)
        synced = False
    prims = [s[0] for s in segments]
    return Choreography(
        times_a,
        np.asarray(angles),
        np.asarray(yaws),
        np.asarray(xzs),
        np.asarray(airs),
        segments=[(p, float(a), float(b)) for p, a, b in segments],
        primitives=prims,
        text=describe_motion(prims),
        beat_synced=synced,
    )

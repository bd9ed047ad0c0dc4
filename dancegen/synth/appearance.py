"""Looks of the synthetic dancer and its room: body proportions, skin, clothes, hair, background, and their text.

Clothing patterns (stripes, checks, noise, solid) are functions of bone-local coordinates (metres along the bone,
metres around it), so a pattern sticks to the body as it moves and the ground-truth flow carries it exactly. The
background is a floor plane (y = 0) and a wall behind the dancer, textured in world coordinates.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from dancegen.synth.body import BodyShape

COLOURS = {
    "red": (205, 40, 45),
    "blue": (40, 80, 200),
    "green": (40, 150, 70),
    "yellow": (235, 200, 40),
    "orange": (240, 120, 30),
    "purple": (120, 55, 160),
    "pink": (235, 120, 170),
    "white": (235, 235, 230),
    "black": (28, 28, 32),
    "grey": (128, 128, 132),
    "navy": (25, 35, 90),
    "teal": (20, 140, 140),
    "brown": (120, 75, 40),
    "beige": (215, 195, 150),
    "maroon": (120, 25, 40),
    "olive": (110, 115, 40),
}
SKIN = {
    "pale": (247, 219, 200),
    "light": (234, 192, 160),
    "medium": (205, 150, 110),
    "tan": (176, 120, 80),
    "brown": (130, 85, 55),
    "dark": (85, 55, 38),
}
HAIR = {
    "black": (22, 18, 16),
    "brown": (90, 55, 30),
    "blonde": (220, 185, 110),
    "red": (160, 60, 25),
    "grey": (160, 160, 160),
}
PATTERNS = ("solid", "stripes", "checks", "noise")
_PATTERN_WORD = {"solid": "", "stripes": "striped ", "checks": "checked ", "noise": "mottled "}

#: where a scene description (`Scene.describe`) turns from the place to the camera
FILMED = ", filmed by "


def place_text(scene_text: str) -> str:
    """The place part of a scene description ("in a room with ..."), without the camera."""
    return scene_text.split(FILMED)[0]


def _a(phrase: str) -> str:
    """Phrase with its indefinite article ("an orange shirt", "a red shirt")."""
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


@dataclass(frozen=True)
class Appearance:
    """One dancer's look; sampled from an appearance seed, independent of the motion.

    Attributes:
        body: Proportions.
        skin: Skin tone name (key of `SKIN`).
        top_colour, top_colour2: Shirt colours (the second is the pattern colour).
        top_pattern: One of `PATTERNS`.
        sleeves: "short" or "long".
        bottom_colour, bottom_colour2, bottom_pattern: Trousers/shorts colours and pattern.
        bottom: "trousers" or "shorts".
        shoes: Shoe colour name.
        hair_colour: Key of `HAIR`.
        hair_style: "short", "long" or "bald".
        stripe_period: Pattern period in metres.
        noise_seed: Seed of the value-noise textures.
    """

    body: BodyShape
    skin: str
    top_colour: str
    top_colour2: str
    top_pattern: str
    sleeves: str
    bottom_colour: str
    bottom_colour2: str
    bottom_pattern: str
    bottom: str
    shoes: str
    hair_colour: str
    hair_style: str
    stripe_period: float
    noise_seed: int

    @classmethod
    def sample(cls, rng: np.random.Generator) -> Appearance:
        names = list(COLOURS)

        def two_colours():
            a = str(rng.choice(names))
            b = str(rng.choice([n for n in names if n != a]))
            return a, b

        top, top2 = two_colours()
        bottom, bottom2 = two_colours()
        while bottom == top:
            bottom, bottom2 = two_colours()
        return cls(
            body=BodyShape.sample(rng),
            skin=str(rng.choice(list(SKIN))),
            top_colour=top,
            top_colour2=top2,
            top_pattern=str(rng.choice(PATTERNS, p=[0.3, 0.3, 0.2, 0.2])),
            sleeves=str(rng.choice(["short", "long"])),
            bottom_colour=bottom,
            bottom_colour2=bottom2,
            bottom_pattern=str(rng.choice(PATTERNS, p=[0.55, 0.15, 0.15, 0.15])),
            bottom=str(rng.choice(["trousers", "shorts"], p=[0.7, 0.3])),
            shoes=str(rng.choice(["black", "white", "red", "brown", "blue"])),
            hair_colour=str(rng.choice(list(HAIR))),
            hair_style=str(rng.choice(["short", "long", "bald"], p=[0.5, 0.4, 0.1])),
            stripe_period=float(rng.uniform(0.07, 0.14)),
            noise_seed=int(rng.integers(0, 2**31 - 1)),
        )

    def describe(self) -> str:
        """E.g. "a tall dancer with dark skin in a red striped shirt and blue trousers, short black hair"."""
        h = self.body.height
        size = "tall " if h > 1.05 else ("short " if h < 0.93 else "")
        build = "broad " if self.body.girth > 1.18 else ("slim " if self.body.girth < 0.88 else "")
        shirt = "t-shirt" if self.sleeves == "short" else "long-sleeved shirt"
        top = f"{self.top_colour} {_PATTERN_WORD[self.top_pattern]}{shirt}"
        bottom = f"{self.bottom_colour} {_PATTERN_WORD[self.bottom_pattern]}{self.bottom}"
        return f"{_a(size + build + 'dancer')} with {self.skin} skin in {_a(top)} and {bottom}, {self.hair_text}"

    @property
    def hair_text(self) -> str:
        """The hair in words: "a shaved head" or e.g. "long black hair"."""
        return "a shaved head" if self.hair_style == "bald" else f"{self.hair_style} {self.hair_colour} hair"

    def prompt_parts(self) -> tuple[str, str]:
        """``(clothes, face)`` in the words the bundled text-to-image model was trained on, e.g. ("a blue t-shirt and
        purple trousers", "long black hair"): Dancing Avatar's --clothes / --face for this dancer."""
        return f"a {self.top_colour} t-shirt and {self.bottom_colour} {self.bottom}", self.hair_text

    def to_dict(self) -> dict:
        d = asdict(self)
        d["body"] = self.body.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Appearance:
        """The inverse of `to_dict` (e.g. a clip's meta.json "appearance")."""
        return cls(**{**d, "body": BodyShape(**d["body"])})


@dataclass(frozen=True)
class Scene:
    """Background and camera choices (sampled from the scene seed).

    Attributes:
        background: "room" (tiled floor + plain wall), "gradient", "noise" or "stripes".
        floor_colours: Two RGB tile colours.
        wall_colours: Two RGB colours (gradient ends, stripe or noise colours).
        tile: Floor tile size in metres.
        wall_distance: Wall distance behind the dancer in metres.
        camera_motion: "static", "pan", "zoom" or "shake".
        azimuth: Camera direction around the dancer in degrees (0 = in front).
        height: Camera height in metres.
        fov: Vertical field of view in degrees.
        light: Global brightness factor.
        noise_seed: Seed of the wall/floor noise.
        motion_amount: Pan angle (degrees over the clip), zoom factor, or shake amplitude (degrees).
    """

    background: str
    floor_colours: tuple
    wall_colours: tuple
    tile: float
    wall_distance: float
    camera_motion: str
    azimuth: float
    height: float
    fov: float
    light: float
    noise_seed: int
    motion_amount: float = 0.0
    extra: dict = field(default_factory=dict)

    @classmethod
    def sample(cls, rng: np.random.Generator, camera_motion: str | None = None) -> Scene:
        def muted():
            base = rng.uniform(60, 200)
            tint = rng.uniform(-35, 35, size=3)
            return tuple(int(v) for v in np.clip(base + tint, 0, 255))

        motion = camera_motion or str(rng.choice(["static", "pan", "zoom", "shake"], p=[0.4, 0.25, 0.2, 0.15]))
        amount = {
            "static": 0.0,
            "pan": float(rng.uniform(4, 9)) * (1 if rng.random() < 0.5 else -1),
            "zoom": float(rng.uniform(1.08, 1.2)) ** (1 if rng.random() < 0.5 else -1),
            "shake": float(rng.uniform(0.15, 0.4)),
        }[motion]
        return cls(
            background=str(rng.choice(["room", "gradient", "noise", "stripes"])),
            floor_colours=(muted(), muted()),
            wall_colours=(muted(), muted()),
            tile=float(rng.uniform(0.35, 0.8)),
            wall_distance=float(rng.uniform(1.2, 3.0)),
            camera_motion=motion,
            azimuth=float(rng.uniform(-25, 25)),
            height=float(rng.uniform(0.9, 1.7)),
            fov=float(rng.uniform(38, 55)),
            light=float(rng.uniform(0.85, 1.1)),
            noise_seed=int(rng.integers(0, 2**31 - 1)),
            motion_amount=amount,
        )

    def describe(self) -> str:
        bg = {
            "room": "a tiled floor and a plain wall",
            "gradient": "a plain floor and a gradient wall",
            "noise": "a mottled floor and wall",
            "stripes": "a plain floor and a striped wall",
        }[self.background]
        cam = {
            "static": "a static camera",
            "pan": "a slowly panning camera",
            "zoom": "a slowly zooming camera",
            "shake": "a handheld camera",
        }[self.camera_motion]
        return f"in a room with {bg}{FILMED}{cam}"

    def to_dict(self) -> dict:
        return asdict(self)


class ValueNoise:
    """Smooth 2D value noise from a random grid, bilinear, two octaves; `(...)` coords in cells -> `(...)` in [0,1]."""

    def __init__(self, seed: int, size: int = 64):
        self.grid = np.random.default_rng(seed).random((size, size)).astype(np.float32)
        self.size = size

    def _octave(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        n = self.size
        u0, v0 = np.floor(u), np.floor(v)
        fu, fv = u - u0, v - v0
        fu, fv = fu * fu * (3 - 2 * fu), fv * fv * (3 - 2 * fv)
        i0, j0 = u0.astype(np.int64) % n, v0.astype(np.int64) % n
        i1, j1 = (i0 + 1) % n, (j0 + 1) % n
        g = self.grid
        top = g[j0, i0] * (1 - fu) + g[j0, i1] * fu
        bot = g[j1, i0] * (1 - fu) + g[j1, i1] * fu
        return top * (1 - fv) + bot * fv

    def __call__(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        return 0.65 * self._octave(u, v) + 0.35 * self._octave(2.3 * u + 17.1, 2.3 * v + 5.3)


_EDGE = 1.8


def pattern(kind: str, s: np.ndarray, a: np.ndarray, period: float, noise: ValueNoise | None) -> np.ndarray:
    """Blend weight of the second colour for a pattern at bone-local `(s, a)` metres -> `(...)` in [0, 1]."""
    if kind == "solid":
        return np.zeros_like(s)
    # Soft-edged square waves: crisp enough to read as stripes, smooth enough that resampling a frame (flow warping,
    # resizing) does not alias.
    if kind == "stripes":
        return 0.5 + 0.5 * np.clip(_EDGE * np.sin(2 * np.pi * s / period), -1, 1)
    if kind == "checks":
        wave_s = np.clip(_EDGE * np.sin(2 * np.pi * s / period), -1, 1)
        wave_a = np.clip(_EDGE * np.sin(2 * np.pi * a / period), -1, 1)
        return 0.5 - 0.5 * wave_s * wave_a
    if kind == "noise":
        return np.clip((noise(s / (0.6 * period), a / (0.6 * period)) - 0.3) * 2.0, 0, 1)
    raise ValueError(kind)


def nearest_colour_name(rgb) -> str:
    """The nearest of the synthetic world's colour names (`COLOURS`) to an RGB value (0-255)."""
    names = list(COLOURS)
    ref = np.array([COLOURS[n] for n in names], np.float64)
    return names[int(np.argmin(((ref - np.asarray(rgb, np.float64)) ** 2).sum(1)))]

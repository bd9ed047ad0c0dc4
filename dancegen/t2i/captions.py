"""Captions of synthetic frames for the bundled text-to-image model, and the words of its tokenizer.

A frame of `dancegen synth` knows its dancer (`synth.appearance.Appearance`) and room (`Scene`). A caption is built
from those facts with parts dropped at random, so the model learns short prompts ("a dancer in a red shirt") as
well as the synthetic world's full description ("a tall dancer with dark skin in a red striped t-shirt and blue
trousers, short black hair, in a room with ..."). The garment colours are the facts the quality test checks
(`dancegen.t2i.quality`), so a caption names each garment with its colour or not at all.

Every choice here (probabilities, the synonyms) is ours; nothing in the papers fixes it.
"""

from __future__ import annotations

import re

import numpy as np

#: Probability of keeping each optional part of a caption.
KEEP = {
    "size": 0.4,       # "tall", "short", "broad", "slim"
    "skin": 0.35,      # "with dark skin"
    "top": 0.9,        # "a red t-shirt"
    "bottom": 0.9,     # "blue trousers"
    "pattern": 0.85,   # "striped", "checked", "mottled" (when the garment has one; rarely dropped, so that a
                       # colour alone reads as a plain garment)
    "garment": 0.6,    # "t-shirt" / "long-sleeved shirt" (else "shirt"), "trousers" / "shorts" (else kept)
    "hair": 0.35,      # "short black hair"
    "scene": 0.25,     # "in a room with a tiled floor and a plain wall"
}
#: Probability that a variant is the synthetic world's full description (appearance + scene text).
FULL = 0.15
SUBJECTS = ("dancer", "person")

_PATTERN_WORD = {"solid": "", "stripes": "striped ", "checks": "checked ", "noise": "mottled "}
_SCENE = {
    "room": "a tiled floor and a plain wall",
    "gradient": "a plain floor and a gradient wall",
    "noise": "a mottled floor and wall",
    "stripes": "a plain floor and a striped wall",
}

#: Words people use in prompts that the synthetic captions do not: single tokens too, so that such prompts (and the
#: later methods' prompts: Dancing Avatar's clothes / face / place) tokenize compactly. Unknown words still work.
EXTRA_WORDS = (
    "man woman girl boy people character photo picture image video of the on at is wearing wears dress skirt "
    "jacket coat jeans pants hoodie sweater suit shoes sneakers boots hat cap glasses face hair long short curly "
    "straight blond blonde dark light background street park stage studio classroom beach city indoors outdoors "
    "high quality best detailed realistic full body standing dancing dance dances moving walking running jumping "
    "spinning arms legs left right both hands"
).split()


def _a(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def top_phrase(app, rng: np.random.Generator) -> str:
    """E.g. "red striped t-shirt" / "red shirt"."""
    pattern = _PATTERN_WORD[app.top_pattern] if rng.random() < KEEP["pattern"] else ""
    if rng.random() < KEEP["garment"]:
        garment = "t-shirt" if app.sleeves == "short" else "long-sleeved shirt"
    else:
        garment = "shirt"
    return f"{app.top_colour} {pattern}{garment}"


def bottom_phrase(app, rng: np.random.Generator) -> str:
    """E.g. "blue trousers" / "blue checked shorts"."""
    pattern = _PATTERN_WORD[app.bottom_pattern] if rng.random() < KEEP["pattern"] else ""
    return f"{app.bottom_colour} {pattern}{app.bottom}"


def caption(app, scene, rng: np.random.Generator) -> str:
    """One caption of a dancer `app` (an `Appearance`) in `scene` (a `Scene`), parts dropped at random."""
    if rng.random() < FULL:
        return f"{app.describe()}, {scene_phrase(scene)}"
    h, g = app.body.height, app.body.girth
    size = ""
    if rng.random() < KEEP["size"]:
        size = ("tall " if h > 1.05 else "short " if h < 0.93 else "") + (
            "broad " if g > 1.18 else "slim " if g < 0.88 else "")
    text = _a(size + str(rng.choice(SUBJECTS, p=[0.8, 0.2])))
    if rng.random() < KEEP["skin"]:
        text += f" with {app.skin} skin"
    clothes = []
    if rng.random() < KEEP["top"]:
        clothes.append(_a(top_phrase(app, rng)))
    if rng.random() < KEEP["bottom"]:
        clothes.append(bottom_phrase(app, rng))
    if clothes:
        text += " in " + " and ".join(clothes)
    if rng.random() < KEEP["hair"]:
        text += ", a shaved head" if app.hair_style == "bald" else f", {app.hair_style} {app.hair_colour} hair"
    if rng.random() < KEEP["scene"]:
        text += ", " + scene_phrase(scene, camera=False)
    return text


def scene_phrase(scene, camera: bool = True) -> str:
    """"in a room with a tiled floor and a plain wall[, filmed by a static camera]"."""
    return scene.describe() if camera else f"in a room with {_SCENE[scene.background]}"


def caption_variants(app, scene, count: int, seed: int) -> list[str]:
    """`count` captions of one dancer, reproducible from `seed`."""
    rng = np.random.default_rng(seed)
    return [caption(app, scene, rng) for _ in range(count)]


def clothes_prompt(top_colour: str, bottom_colour: str, bottom: str = "trousers") -> str:
    """The prompt the quality test uses: "a dancer in a red t-shirt and blue trousers"."""
    return f"a dancer in {_a(top_colour + ' t-shirt')} and {bottom_colour} {bottom}"


def tokenizer_words(seed: int = 0, samples: int = 2000) -> list[str]:
    """Every word of the synthetic captions (from `samples` sampled dancers and rooms, and every colour / skin /
    hair name), the motion vocabulary and `EXTRA_WORDS`: the single-token words of the bundled tokenizer."""
    from dancegen.core.text import _clip_pretokenize
    from dancegen.synth.appearance import COLOURS, HAIR, SKIN, Appearance, Scene
    from dancegen.synth.motion import VOCABULARY

    rng = np.random.default_rng(seed)
    texts = [" ".join([*COLOURS, *SKIN, *HAIR, *VOCABULARY, *EXTRA_WORDS])]
    for _ in range(samples):
        app, scene = Appearance.sample(rng), Scene.sample(rng)
        texts += [app.describe(), scene.describe(), caption(app, scene, rng)]
    words = set()
    for t in texts:
        words.update(w for w in _clip_pretokenize(t) if re.fullmatch(r"[a-z]+", w))
    return sorted(words)

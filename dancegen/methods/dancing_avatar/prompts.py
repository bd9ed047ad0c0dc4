"""Prompt refinement and composition of Dancing Avatar (spec §2.1 "LLM prompt refinement", §2.4 prompt length).

The paper asks ChatGPT (line 78) to expand the coarse clothes and face text into exactly 20 single words each; the
background text goes into the prompt as given. Backends of `refine(kind, coarse, cfg)`:

- ``template`` (offline, deterministic, the default): keeps the coarse words, then fills attribute slots (clothes:
  fit, material, texture, neckline, sleeves, length, style, details ...; face: eyes, skin, face shape, nose, lips,
  hair texture and style ...) from a fixed vocabulary; a slot already named by a coarse word is left alone, and
  garment nouns pick the slots that fit them (a skirt gets a length, a shirt a neckline and sleeves). Slot values
  come from a generator seeded by ``prompt.seed``, the kind and the coarse text. It never adds a colour the user did
  not give (the colours are what the frames must keep).
- ``cached``: the words stored in the recipe (``prompt.clothes_words`` / ``face_words``): what makes a reproduction
  with an LLM's answer deterministic.
- ``llm``: the paper's verbatim templates sent to an OpenAI-compatible chat endpoint (``prompt.llm_url``, key in
  ``$OPENAI_API_KEY``); an option, needs the network.

``prompt.n_words: 0`` skips refinement (the coarse text verbatim): the bundled toy models' tokenizer knows only the
synthetic world's words, and 16 unknown filler words per field washed the dancer out of their frames.

Every backend's answer goes through `normalise_words`: split on commas and whitespace, lower-case, duplicates
removed, exactly ``n_words`` items (the coarse words first).
"""

from __future__ import annotations

import re
import zlib

import numpy as np

from dancegen.errors import InputError

# Slot -> values. The order of the dicts is the order slots are filled in.
CLOTHES_SLOTS: dict[str, tuple[str, ...]] = {
    "fit": ("fitted", "loose", "relaxed", "slim", "tailored"),
    "material": ("cotton", "linen", "denim", "silk", "wool", "jersey"),
    "texture": ("soft", "smooth", "crisp", "matte"),
    "neckline": ("round-neck", "v-neck", "collared", "crew-neck"),
    "sleeves": ("short-sleeved", "long-sleeved", "sleeveless"),
    "length": ("knee-length", "ankle-length", "mini", "midi", "cropped"),
    "waist": ("high-waisted", "mid-waisted", "elastic-waist"),
    "style": ("casual", "sporty", "elegant", "classic", "modern"),
    "details": ("seams", "hem", "stitching", "pockets", "buttons", "pleats"),
    "finish": ("clean", "neat", "simple", "plain"),
    "quality": ("detailed", "realistic", "sharp", "natural"),
    "light": ("daylight", "studio-lit"),
    "wear": ("everyday", "outfit", "garment", "clothing"),
    "weight": ("lightweight", "midweight"),
    "drape": ("draped", "structured", "flowing"),
    "comfort": ("comfortable", "breathable"),
    "weave": ("woven", "knitted"),
    "occasion": ("daywear", "streetwear", "dancewear"),
    "care": ("pressed", "new", "spotless"),
}
FACE_SLOTS: dict[str, tuple[str, ...]] = {
    "eyes": ("almond-shaped", "round", "bright", "clear"),
    "eye_colour": ("brown-eyed", "dark-eyed", "hazel-eyed"),
    "brows": ("arched", "straight-browed", "thick-browed"),
    "skin": ("fair", "smooth-skinned", "porcelain", "even-toned", "glowing"),
    "face_shape": ("oval", "heart-shaped", "soft-jawed", "defined"),
    "nose": ("straight-nosed", "small-nosed", "delicate"),
    "lips": ("full-lipped", "soft-lipped", "natural-lipped"),
    "cheeks": ("high-cheekbones", "rosy", "soft-cheeked"),
    "expression": ("calm", "smiling", "gentle", "confident"),
    "hair_texture": ("silky", "glossy", "soft", "thick"),
    "hair_style": ("neat", "layered", "tidy", "side-parted"),
    "quality": ("detailed", "realistic", "sharp", "natural"),
    "look": ("youthful", "friendly", "graceful"),
    "light": ("daylight", "studio-lit"),
    "portrait": ("face", "portrait", "headshot"),
    "lashes": ("long-lashed", "curled-lashes"),
    "jaw": ("gentle-jaw", "narrow-chin"),
    "forehead": ("smooth-forehead", "clear-forehead"),
    "makeup": ("natural-makeup", "no-makeup"),
}
# Filler when the slots run out (words that contradict nothing).
GENERIC = ("detailed", "realistic", "sharp", "natural", "clean", "neat", "tidy", "crisp", "photo", "high-quality",
           "focused", "consistent", "single", "unique", "distinct", "coherent", "clear", "true-to-life", "vivid",
           "precise")
# Garment nouns -> the clothes slots that do not fit them (skipped).
_NOT_FOR = {
    "skirt": ("neckline", "sleeves"), "shorts": ("neckline", "sleeves"), "trousers": ("neckline", "sleeves"),
    "pants": ("neckline", "sleeves"), "jeans": ("neckline", "sleeves", "material"),
    "shirt": ("length", "waist"), "t-shirt": ("length", "waist", "sleeves"), "top": ("length", "waist"),
    "jacket": ("waist",), "coat": ("waist",), "hoodie": ("neckline", "waist"), "sweater": ("waist",),
}
_REFINE_SALT = {"clothes": 1, "face": 2}


def normalise_words(text: str | list[str], n_words: int | None, head: list[str] | None = None) -> list[str]:
    """The answer as exactly ``n_words`` distinct lower-case single words (``head`` words first; None: all of them).

    Raises:
        InputError: fewer than ``n_words`` distinct words.
    """
    items = text if isinstance(text, list) else re.split(r"[,\s;]+", text)
    words: list[str] = []
    for w in [*(head or []), *items]:
        w = re.sub(r"[^a-z0-9\-']", "", str(w).strip().lower()).strip("-'")
        if w and w not in words:
            words.append(w)
    if n_words is None:
        return words
    if len(words) < n_words:
        raise InputError(f"prompt refinement gave {len(words)} distinct words, {n_words} are needed: {words}")
    return words[:n_words]


def coarse_words(text: str) -> list[str]:
    """The user's words, split as `normalise_words` does (articles and prepositions dropped)."""
    stop = {"a", "an", "the", "in", "with", "and", "of", "on", "at", "wearing", "wears", "to"}
    return [w for w in normalise_words(text, None) if w not in stop]


def template_refine(kind: str, coarse: str, n_words: int = 20, seed: int = 0) -> list[str]:
    """The offline backend (module docstring): coarse words, then one value per fitting slot not yet named."""
    if kind not in ("clothes", "face"):
        raise ValueError(f"kind must be clothes or face, got {kind!r}")
    head = coarse_words(coarse)
    slots = CLOTHES_SLOTS if kind == "clothes" else FACE_SLOTS
    skip = {s for w in head for s in _NOT_FOR.get(w, ())} if kind == "clothes" else set()
    rng = np.random.default_rng([int(seed), _REFINE_SALT[kind], zlib.crc32(coarse.strip().lower().encode())])
    words = list(head)
    for slot, values in slots.items():
        if len(words) >= n_words:
            break
        if slot in skip or any(v in head for v in values):
            continue
        choice = values[int(rng.integers(len(values)))]
        if choice not in words:
            words.append(choice)
    return normalise_words(words + [g for g in GENERIC if g not in words], n_words)  # still short: filler


def llm_refine(kind: str, coarse: str, cfg) -> list[str]:
    """The paper's template sent to an OpenAI-compatible chat endpoint (needs the network and $OPENAI_API_KEY)."""
    import json
    import os
    import urllib.request

    key = os.environ.get("OPENAI_API_KEY")
    if not key:
        raise InputError("prompt.refiner llm needs $OPENAI_API_KEY (or use refiner template / cached)")
    template = cfg.clothes_template if kind == "clothes" else cfg.face_template
    body = {"model": cfg.llm_model, "temperature": 0,
            "messages": [{"role": "user", "content": template.replace(f"[{kind}]", coarse)}]}
    req = urllib.request.Request(cfg.llm_url, json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            answer = json.loads(r.read())["choices"][0]["message"]["content"]
    except Exception as e:  # network, HTTP or format errors: one line
        raise InputError(f"prompt refinement through {cfg.llm_url} failed: {e}") from None
    return normalise_words(answer, cfg.n_words)


def refine(kind: str, coarse: str | None, cfg) -> list[str]:
    """The refined words of one field (``[]`` when the field is not given), by ``cfg.refiner`` (a `PromptConfig`)."""
    if not coarse:
        return []
    if cfg.n_words == 0:  # no refinement: the coarse text verbatim (the bundled toy models' setting)
        return coarse.split()
    if cfg.refiner == "cached":
        words = cfg.clothes_words if kind == "clothes" else cfg.face_words
        if not words:
            raise InputError(f"prompt.refiner cached needs prompt.{kind}_words in the recipe")
        return normalise_words(list(words), cfg.n_words)
    if cfg.refiner == "llm":
        return llm_refine(kind, coarse, cfg)
    return template_refine(kind, coarse, cfg.n_words, cfg.seed)


def compose(cfg, clothes_words: list[str], face_words: list[str]) -> str:
    """The frames' prompt: the parts in ``cfg.order`` joined by ", " (spec §2.4; the free ``text`` when given)."""
    if cfg.text:
        return cfg.text
    parts = {"background": cfg.place or "", "clothes": " ".join(clothes_words), "face": " ".join(face_words)}
    return cfg.prefix + ", ".join(parts[k] for k in cfg.order if parts[k])


def plate_prompt(cfg) -> str:
    """The person-free plate's inpainting prompt: the background text only (spec §2.2)."""
    return cfg.place or ""

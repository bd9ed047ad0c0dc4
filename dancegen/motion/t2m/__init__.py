"""A tiny MDM-style text-to-motion diffusion model, trained by this project on the synthetic world, that runs on CPU.

LatentMan (../shared/specs/latentman.md §2.1) takes its motion from MDM: text -> `[T, 22, 3]` HumanML3D joints at
20 fps. `t2m-tiny` is that step for a fresh machine without MDM's checkpoint: it knows the synthetic dancer's 14
motion primitives (jumps, spins, waves, claps, kicks, squats, turns, walks forward, ...) and their paraphrases, one
to three per text, played in the order written.

    from dancegen.motion.t2m import TextToMotion
    motion = TextToMotion.load().generate("someone hops and then twirls", seed=0)   # dancegen.motion.io.Motion
    motion.joints.shape   # (60, 22, 3): metres, Y-up, floor y = 0, frame 0's pelvis at x = z = 0 facing +Z

- `TextToMotion.load(folder_or_None)`: a model folder (None: the bundled `dancegen/assets/models/t2m-tiny`); a
  missing folder is a one-line `MissingWeightsError` naming it.
- `model.generate(text, num_frames=60, seed=0, guidance=2.5, steps=50)`: a `Motion` (format "t2m", fps 20, meta text
  / seed / guidance / steps). The model makes 60 frames (3 s); `num_frames` < 60 returns the first frames, > 60 is an
  `InputError`. Same text and seed: same motion. Any words work (unknown ones are `<unk>`); a text without a
  known motion gives an unconditioned-looking motion rather than an error. `generate_batch(texts, seeds=...)`
  samples many at once.
- Training: `dancegen train --recipe recipes/motion/t2m_tiny.yaml` (`dancegen.motion.t2m.train`).
- Quality: `python -m dancegen.motion.t2m.quality` (`dancegen.motion.t2m.quality`): primitive detectors on the joints,
  hit rate of the asked primitive on held-out texts vs a shuffled-text control and vs the real synthetic motions.

Modules: `data` (pairs from the synthetic world, paraphrases, features), `model` (config, network, diffusion, model
folder, `TextToMotion`), `train`, `quality`. A domain library: imports torch, numpy and dancegen's synth / pose /
motion.io / io / config / errors, never dancegen.core or dancegen.methods. Names load on first access.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "TextToMotion": "dancegen.motion.t2m.model",
    "T2MConfig": "dancegen.motion.t2m.model",
    "Vocab": "dancegen.motion.t2m.model",
    "build_network": "dancegen.motion.t2m.model",
    "require_t2m": "dancegen.motion.t2m.model",
    "BUNDLED_DIR": "dancegen.motion.t2m.model",
    "BUNDLED_NAME": "dancegen.motion.t2m.model",
    "detect": "dancegen.motion.t2m.quality",
    "evaluate": "dancegen.motion.t2m.quality",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dancegen.motion.t2m' has no attribute {name!r}")

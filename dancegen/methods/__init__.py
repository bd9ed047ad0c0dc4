"""Built-in methods, one folder each (DESIGN.md): listed explicitly here, imported lazily through `dancegen.registry`.

Each entry holds import strings only, so `import dancegen.methods` never imports torch. Plugins add methods through
the `dancegen.methods` entry-point group (see `dancegen.registry`).
"""

from __future__ import annotations

from dancegen.registry import MethodSpec

_DYL = "dancegen.methods.dance_your_latents"

METHODS: dict[str, MethodSpec] = {
    "dance-your-latents": MethodSpec(
        id="dance-your-latents",
        description="Pose-guided dance video from a photo: DisCo control + spatial-temporal subspace attention "
        "guided by motion flow",
        paper="dance-your-latents.txt",
        config=f"{_DYL}.config:DanceYourLatentsConfig",
        load_config=f"{_DYL}.config:load_recipe",
        pipeline=f"{_DYL}.pipeline:DanceYourLatentsPipeline",
        verbs={"train": f"{_DYL}.train:train", "animate": f"{_DYL}.animate:animate"},
    ),
}

__all__ = ["METHODS", "MethodSpec"]

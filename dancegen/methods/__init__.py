"""Built-in methods, one folder each (DESIGN.md): listed explicitly here, imported lazily through `dancegen.registry`.

Each entry holds import strings only, so `import dancegen.methods` never imports torch. Plugins add methods through
the `dancegen.methods` entry-point group (see `dancegen.registry`).
"""

from __future__ import annotations

from dancegen.registry import MethodSpec

_DYL = "dancegen.methods.dance_your_latents"
_DAB = "dancegen.methods.dance_any_beat"

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
    "dance-any-beat": MethodSpec(
        id="dance-any-beat",
        description="Music-driven dance video from a photo (DabFusion): music-conditioned latent flow diffusion "
        "warps the reference",
        paper="dance-any-beat.txt",
        config=f"{_DAB}.config:DanceAnyBeatConfig",
        load_config=f"{_DAB}.config:load_recipe",
        pipeline=None,  # sampling is `pipeline.sample_flows` (a function; diffusers has no latent-flow pipeline)
        verbs={"train": f"{_DAB}.train:train", "music2dance": f"{_DAB}.music2dance:music2dance"},
    ),
}

__all__ = ["METHODS", "MethodSpec"]

"""The synthetic dance world (DESIGN.md, "The synthetic dance world"): articulated textured dancers, procedural
music with a known beat grid, and exact ground truth (joints, OpenPose JSON, flow, depth, part coordinates, masks,
texts), written in the clips / TikTok / AIST++ / HumanML3D layouts, and motion-editing cases with an exact target
(`edit`).

`render_clip` (one clip in memory) and `generate` (many clips on disk) are imported lazily so that
`import dancegen.synth` stays cheap.
"""

from __future__ import annotations

__all__ = ["render_clip", "generate", "SynthClip", "parse_motion_text", "VOCABULARY", "LAYOUTS", "render_edit_case"]

_LAZY = {
    "render_clip": "dancegen.synth.clip",
    "SynthClip": "dancegen.synth.clip",
    "generate": "dancegen.synth.layouts",
    "LAYOUTS": "dancegen.synth.layouts",
    "render_edit_case": "dancegen.synth.layouts",
    "parse_motion_text": "dancegen.synth.motion",
    "VOCABULARY": "dancegen.synth.motion",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dancegen.synth' has no attribute {name!r}")

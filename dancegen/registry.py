"""The method registry (house-style §2, nerfstudio's pattern): built-ins from `dancegen.methods`, plugins by entry point.

A `MethodSpec` names a method's id (kebab-case, e.g. `dance-your-latents`), what it is, and *import strings* for its
config loader, pipeline and verb entries, so listing methods never imports torch. Third-party methods register a
`MethodSpec` (or a zero-argument callable returning one) under the entry-point group `dancegen.methods`.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dancegen.errors import InputError

ENTRY_POINT_GROUP = "dancegen.methods"


@dataclass(frozen=True)
class MethodSpec:
    """One method.

    Attributes:
        id: Registry / CLI id, kebab-case (maps to `dancegen/methods/<id with underscores>/`).
        description: One line for `--help` and listings.
        paper: File name of the paper under ../shared/papers/ (or a citation).
        config: "module:Class" of the recipe dataclass.
        load_config: "module:function" `(path | None, overrides) -> config` (follows `base:` chains).
        pipeline: "module:Class" of the diffusers pipeline (None for methods without one).
        verbs: verb name -> "module:function" implementing it (e.g. "train", "animate").
    """

    id: str
    description: str
    paper: str
    config: str
    load_config: str
    pipeline: str | None = None
    verbs: dict[str, str] = field(default_factory=dict)

    def load(self, what: str) -> Any:
        """Import one entry: "config", "load_config", "pipeline" or a verb name."""
        target = self.verbs.get(what) if what in self.verbs else getattr(self, what, None)
        if not isinstance(target, str):
            raise InputError(f"method {self.id!r} has no {what!r} (verbs: {', '.join(sorted(self.verbs)) or 'none'})")
        return load_object(target)


def load_object(target: str) -> Any:
    """Import "package.module:attribute"."""
    module, _, attr = target.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split(".") if attr else ():
        obj = getattr(obj, part)
    return obj


def normalise_id(method_id: str) -> str:
    """`dance_your_latents` and `Dance-Your-Latents` -> `dance-your-latents`."""
    return str(method_id).strip().lower().replace("_", "-")


def _entry_point_methods() -> dict[str, MethodSpec]:
    from importlib.metadata import entry_points

    found: dict[str, MethodSpec] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        obj = ep.load()
        spec = obj() if callable(obj) and not isinstance(obj, MethodSpec) else obj
        if not isinstance(spec, MethodSpec):
            raise TypeError(f"entry point {ep.name!r} of {ENTRY_POINT_GROUP} gives {type(spec).__name__}, "
                            "not a MethodSpec")
        found[normalise_id(spec.id)] = spec
    return found


def available_methods(plugins: bool = True) -> dict[str, MethodSpec]:
    """Built-in methods (`dancegen.methods.METHODS`) plus those registered by entry points (built-ins win)."""
    from dancegen.methods import METHODS

    out = dict(_entry_point_methods()) if plugins else {}
    out.update(METHODS)
    return out


def get_method(method_id: str) -> MethodSpec:
    """The spec of a method id (any case, `_` or `-`).

    Raises:
        InputError: unknown id (the message lists the known ones).
    """
    methods = available_methods()
    key = normalise_id(method_id)
    if key not in methods:
        raise InputError(f"unknown method {method_id!r}; known methods: {', '.join(sorted(methods))}")
    return methods[key]


#: Trainers of the project's own tools (not papers), reached by `dancegen train` through a recipe's `method:` like a
#: method's: name -> ("module:load_config", "module:train").
TOOL_TRAINERS = {
    "synthpose": ("dancegen.pose.synthpose_train:load_config", "dancegen.pose.synthpose_train:train"),
}


def trainer_of(method_id: str):
    """`(load_config, train)` of a recipe's `method:`: a tool trainer (TOOL_TRAINERS) or a registered method."""
    key = normalise_id(method_id)
    if key in TOOL_TRAINERS:
        return tuple(load_object(t) for t in TOOL_TRAINERS[key])
    spec = get_method(key)
    return spec.load("load_config"), spec.load("train")


# ------------------------------------------------------------------------------------------- recipes
def recipe_chain(path: str | os.PathLike) -> list[Path]:
    """The files of a recipe and its `base:` ancestors, base first.

    Raises:
        InputError: a missing file, malformed YAML, or a cycle.
    """
    import yaml

    chain: list[Path] = []
    p = Path(path)
    while True:
        if not p.is_file():
            raise InputError("recipe not found", p)
        if p.resolve() in [c.resolve() for c in chain]:
            raise InputError("recipe `base:` chain has a cycle", p)
        chain.append(p)
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise InputError(f"not valid YAML ({str(e).splitlines()[0]})", p) from None
        base = data.get("base") if isinstance(data, dict) else None
        if not base:
            break
        p = (p.parent / str(base)) if not Path(str(base)).is_absolute() else Path(str(base))
    return chain[::-1]


def recipe_method(path: str | os.PathLike) -> str | None:
    """The `method:` of a recipe (the last file of its `base:` chain that sets it), kebab-case; None if unset."""
    import yaml

    method = None
    for p in recipe_chain(path):
        data = yaml.safe_load(p.read_text()) or {}
        if isinstance(data, dict) and data.get("method"):
            method = str(data["method"])
    return normalise_id(method) if method else None

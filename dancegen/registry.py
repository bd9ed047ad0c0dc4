"""The method registry (house-style §2, nerfstudio's pattern): built-ins from `dancegen.methods`, plugins by entry point.

A `MethodSpec` names a method's id (kebab-case, e.g. `dance-your-latents`), what it is, and *import strings* for its
config loader, pipeline and verb entries, so listing methods never imports torch. Third-party methods register a
`MethodSpec` (or a zero-argument callable returning one) under the entry-point group `dancegen.methods`.
"""

from __future__ import annotations

import os
from pathlib import Path

from dancegen.config import recipe_chain, recipe_method  # noqa: F401  (re-exported)
from dancegen.errors import InputError
from dancegen.method_spec import MethodSpec, load_object

__all__ = ["MethodSpec", "load_object", "available_methods", "get_method", "normalise_id", "recipe_method",
           "trainer_of", "choose_method", "VERB_DEFAULTS"]

ENTRY_POINT_GROUP = "dancegen.methods"


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


#: The method a generating verb uses when neither --method nor the --model folder names one.
VERB_DEFAULTS = {"animate": "dance-your-latents", "music2dance": "dance-any-beat", "text2character": "latentman"}


def methods_with_verb(verb: str) -> list[str]:
    """Ids of the registered methods that implement `verb`."""
    return sorted(k for k, s in available_methods().items() if verb in s.verbs)


def choose_method(verb: str, method: str | None = None, model: str | os.PathLike | None = None,
                  request=None) -> MethodSpec:
    """The method that runs a generating verb: ``--method``, else the one recorded in the ``--model`` folder (a
    `train` / `finetune-oneshot` run or a method's model folder, local or bundled), else the verb's default
    (``text2character`` with ``--poses``: dancing-avatar).

    Raises:
        InputError: an unknown method, one that does not implement the verb, or a request option it does not use.
    """
    from dancegen.core.model_folder import recorded_method
    from dancegen.runtime import BUNDLED_ROOT

    chosen, why = method, "--method"
    if chosen is None and model is not None:
        p = Path(model).expanduser()
        if not p.exists() and "/" not in str(model) and (BUNDLED_ROOT / str(model)).is_dir():
            p = BUNDLED_ROOT / str(model)
        chosen, why = recorded_method(p), f"the model folder {model}"
    if chosen is None:
        chosen = VERB_DEFAULTS.get(verb)
        if verb == "text2character" and request is not None and getattr(request, "poses", None) is not None:
            chosen = "dancing-avatar"
        why = f"the default of {verb}"
    if chosen is None or (why.startswith("the default") and normalise_id(chosen) not in available_methods()):
        others = methods_with_verb(verb)
        raise InputError(f"no method given for {verb}; pass --method (one of {', '.join(others)})" if others
                         else f"no method implements {verb} yet")
    spec = get_method(chosen)
    if verb not in spec.verbs:
        others = methods_with_verb(verb)
        raise InputError(f"method {spec.id} ({why}) does not implement {verb}; "
                         + (f"methods that do: {', '.join(others)}" if others else f"no method implements {verb} yet"))
    if request is not None and verb in spec.accepts:
        extra = sorted(set(request.given) - set(spec.accepts[verb]) - {"method", "out"})
        if extra:
            flags = ", ".join("--" + e.replace("_", "-") for e in extra)
            raise InputError(f"{spec.id} does not use {flags} for {verb}")
    recipe = getattr(request, "recipe", None) if request is not None else None
    if recipe is not None and Path(recipe).is_file():  # a recipe of another method: say so, not a type error later
        theirs = recipe_method(recipe)
        if theirs and normalise_id(theirs) != spec.id:
            raise InputError(f"this recipe is for method {theirs}, but {verb} runs {spec.id} ({why}); pass a "
                             f"{spec.id} recipe, or --method {theirs} if it implements {verb}", recipe)
    return spec


#: Trainers of the project's own tools (not papers), reached by `dancegen train` through a recipe's `method:` like a
#: method's: name -> ("module:load_config", "module:train").
TOOL_TRAINERS = {
    "synthpose": ("dancegen.pose.synthpose_train:load_config", "dancegen.pose.synthpose_train:train"),
    "t2i": ("dancegen.t2i.config:load_config", "dancegen.t2i.train:train"),
    "t2m": ("dancegen.motion.t2m.train:load_config", "dancegen.motion.t2m.train:train"),
}


def trainer_of(method_id: str):
    """`(load_config, train)` of a recipe's `method:`: a tool trainer (TOOL_TRAINERS) or a registered method."""
    key = normalise_id(method_id)
    if key in TOOL_TRAINERS:
        return tuple(load_object(t) for t in TOOL_TRAINERS[key])
    spec = get_method(key)
    return spec.load("load_config"), spec.load("train")

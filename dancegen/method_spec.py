"""`MethodSpec`: what a method declares about itself (id, paper, config, verbs, requests), as import strings only.

Kept apart from `dancegen.registry` so that `dancegen.methods` (the built-in list) and the registry (which reads that
list) import it without importing each other.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from dancegen.errors import InputError


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
        verbs: verb name -> "module:function". Generating verbs (`dancegen.requests.VERB_REQUESTS`) take
            ``fn(request, progress=None) -> report``; `train` takes ``fn(config, output_dir, resume, progress)``.
        accepts: generating verb -> the request fields the method uses; a field the user sets that is not listed is
            an error ("edit-your-motion does not use --background"). Absent verb: every field.
        smoke: ``--set`` overrides that shrink the method's default config to a tiny model that trains every stage
            for 2 steps on synthetic data it renders itself into ``{data}`` (tests/test_methods_smoke.py).
    """

    id: str
    description: str
    paper: str
    config: str
    load_config: str
    pipeline: str | None = None
    verbs: dict[str, str] = field(default_factory=dict)
    accepts: dict[str, tuple[str, ...]] = field(default_factory=dict)
    smoke: tuple[str, ...] = ()

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

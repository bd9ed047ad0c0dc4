"""Model folders of dancegen's methods: find, resolve (bundled default, local folder, `train` run), guard, save.

Every method writes its trained model the same way: a folder holding the resolved recipe (a YAML file whose
``method:`` names the method) next to the weights, written atomically; a `train` run folder holds it in ``model/``
(and each stage's in ``stage-<k>-<name>/model/``). A method describes its folder once with a `FolderLayout`; this
module does the rest, so no method carries its own copy of finding, resolving, guarding or saving.

- `FolderLayout.find(path)`: the model folder at ``path`` or ``path/model``, or None.
- `FolderLayout.resolve(model)`: None -> the bundled default; a folder; a bundled name; else a `MissingWeightsError`
  that says what is missing, where it was looked for and how to get it.
- `FolderLayout.load_recipe(folder, overrides, load)`: the stored recipe with ``--set`` overrides, refusing overrides
  that would change the architecture the weights were trained for.
- `FolderLayout.save(folder, config, write)`: atomic write of the weights (``write(tmp)``) and the recipe.
- `recorded_method(path)`: which method a folder (or run folder) belongs to, read from its recipe.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dancegen.errors import InputError, MissingWeightsError
from dancegen.runtime import BUNDLED_ROOT

MODEL_SUBDIR = "model"  # where `train` puts the model inside its run folder (and inside each stage folder)
RUN_RECIPE = "recipe.yaml"  # the resolved recipe `train` writes at the top of a run folder


@dataclass(frozen=True)
class FolderLayout:
    """How one method's model folder looks.

    Attributes:
        method: registry id, e.g. "dance-your-latents".
        recipe_file: the resolved recipe inside the folder (rebuilds the architecture), e.g. "dance_your_latents.yaml".
        required: other entries that must exist (files or folders), e.g. ("unet",) or ("model.safetensors",).
        bundled: name of the bundled default model (dancegen/assets/models/<name>), or "" when there is none.
        how_to_get: one line: how to train or obtain a model (ends the missing-model error).
    """

    method: str
    recipe_file: str
    required: tuple[str, ...] = ()
    bundled: str = ""
    how_to_get: str = ""

    # ------------------------------------------------------------------------------------------------ finding
    def is_folder(self, path: str | os.PathLike) -> bool:
        p = Path(path)
        return (p / self.recipe_file).is_file() and all((p / r).exists() for r in self.required)

    def find(self, path: str | os.PathLike) -> Path | None:
        """The model folder at `path`, or at `path/model` (a `train` run folder), or None."""
        p = Path(path)
        for cand in (p, p / MODEL_SUBDIR):
            if self.is_folder(cand):
                return cand
        return None

    def bundled_path(self, name: str | None = None) -> Path:
        return BUNDLED_ROOT / (name or self.bundled)

    def resolve(self, model: str | os.PathLike | None) -> Path:
        """A model reference -> its folder: None is the bundled default, then a local folder, then a bundled name.

        Raises:
            MissingWeightsError: nothing found; the message names what, where it looked and how to get it.
        """
        if model is None:
            if not self.bundled:
                raise MissingWeightsError(f"{self.method} has no bundled model; pass --model ({self.how_to_get})")
            found = self.find(self.bundled_path())
            if found is None:
                raise MissingWeightsError(f"the bundled {self.method} model {self.bundled!r} is not installed "
                                          f"(looked in {self.bundled_path()}); {self.how_to_get}")
            return found
        found = self.find(model)
        if found is None and not Path(model).exists() and "/" not in str(model) and os.sep not in str(model):
            found = self.find(self.bundled_path(str(model)))
        if found is None:
            where = f"{model} and {Path(model) / MODEL_SUBDIR}" if Path(model).exists() else f"{model!r}"
            raise MissingWeightsError(f"no {self.method} model folder at {where} (needs {self.recipe_file}"
                                      f"{' and ' + ', '.join(self.required) if self.required else ''}); "
                                      f"{self.how_to_get}")
        return found

    # ------------------------------------------------------------------------------------------------ recipes
    def load_recipe(self, folder: str | os.PathLike, overrides: list[str] | None,
                    load: Callable[[Path, list[str] | None], Any],
                    fixed: Callable[[Any], Any] = lambda cfg: cfg.model) -> Any:
        """The folder's stored recipe with `overrides` applied, refusing changes to what the weights depend on.

        Args:
            folder: the model folder.
            overrides: ``key=value`` strings (``--set``).
            load: the method's ``load_recipe(path, overrides)``.
            fixed: the part of the config that must not change (default ``cfg.model``); compared as dataclasses.

        Raises:
            InputError: an override changes the fixed part (names the folder's recipe).
        """
        from dataclasses import asdict, is_dataclass

        path = Path(folder) / self.recipe_file
        cfg = load(path, overrides)
        if overrides:
            def plain(x):
                return asdict(x) if is_dataclass(x) else x

            if plain(fixed(load(path, None))) != plain(fixed(cfg)):
                raise InputError("--set cannot change the architecture of a trained model folder (model.* and "
                                 "what the weights were trained with)", path=path)
        return cfg

    # ------------------------------------------------------------------------------------------------ saving
    def save(self, folder: str | os.PathLike, config: Any, write: Callable[[Path], None],
             overwrite: bool = True) -> Path:
        """Write a model folder atomically: `write(tmp)` puts the weights into a temporary folder, then the resolved
        recipe is added and the folder renamed into place (a crash leaves no half-written model)."""
        from dancegen.config import save_config
        from dancegen.io.atomic import atomic_dir

        folder = Path(folder)
        with atomic_dir(folder, overwrite=overwrite) as tmp:
            write(tmp)
            save_config(config, tmp / self.recipe_file)
        return folder


def recorded_method(path: str | os.PathLike) -> str | None:
    """The method a dancegen model folder or `train` run folder belongs to (its recipe's ``method:``), else None.

    Looks at ``path``, ``path/model`` and a run folder's ``recipe.yaml``; a folder of base weights (a diffusers
    layout) records no method.
    """
    import yaml

    p = Path(path)
    if not p.is_dir():
        return None
    for cand in (p, p / MODEL_SUBDIR):
        if not cand.is_dir():
            continue
        for f in sorted(cand.glob("*.yaml")):
            try:
                data = yaml.safe_load(f.read_text())
            except (yaml.YAMLError, OSError, UnicodeDecodeError):
                continue
            if isinstance(data, dict) and isinstance(data.get("method"), str):
                return data["method"].strip().lower().replace("_", "-")
    return None

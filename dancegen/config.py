"""Typed configuration: YAML recipes and `--set a.b=c` overrides merged into dataclasses (OmegaConf structured).

Unknown keys and wrong types fail loudly, naming the key and the file (house-style.md §1). Dataclass
`__post_init__` validation runs on the merged result; its `ValueError` becomes an `InputError` naming the file.
The resolved recipe is written next to every output with `save_config`.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, TypeVar

from dancegen.errors import InputError

T = TypeVar("T")


def load_config(cls: type[T], path: str | os.PathLike | list | None = None, overrides: list[str] | None = None) -> T:
    """Build `cls` from its defaults, then a YAML file (or a chain of them), then `key.sub=value` overrides.

    Args:
        cls: A dataclass type (nested dataclasses allowed).
        path: YAML recipe; its keys must exist in `cls`. A list of files is merged in order (a base recipe first,
            then overlays); errors name the last file.
        overrides: Strings like `train.lr=1e-4` (YAML syntax for values: `a.b=[1,2]`, `a.c=null`).

    Raises:
        InputError: unknown key, wrong type, malformed YAML or override, or a failed `__post_init__` check.
    """
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    paths = [] if path is None else [Path(p) for p in path] if isinstance(path, (list, tuple)) else [Path(path)]
    where = str(paths[-1]) if paths else "--set"
    try:
        cfg = OmegaConf.structured(cls)
        OmegaConf.set_struct(cfg, True)
        for p in paths:
            if not p.is_file():
                raise InputError("recipe not found", p)
            try:
                loaded = OmegaConf.load(p)
            except Exception as e:  # yaml.YAMLError and friends
                raise InputError(f"not valid YAML ({str(e).splitlines()[0]})", p) from None
            if not OmegaConf.is_dict(loaded):
                raise InputError("a recipe is a YAML mapping of keys (e.g. `method: ...`), not a "
                                 f"{'list' if OmegaConf.is_list(loaded) else type(loaded).__name__}", p)
            loaded = _strip_base_keys(loaded)
            cfg = OmegaConf.merge(cfg, loaded)
        for ov in overrides or []:
            if "=" not in ov:
                raise InputError(f"override {ov!r} must look like key=value", None)
            where = f"--set {ov}"
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([ov]))
        obj = OmegaConf.to_object(cfg)
    except InputError:
        raise
    except OmegaConfBaseException as e:
        raise InputError(_describe(e), where) from None
    except ValueError as e:  # __post_init__ validation
        raise InputError(f"invalid config: {e}", where) from None
    return obj  # type: ignore[return-value]


def load_recipe_chain(cls: type[T], path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> T:
    """Load a recipe that may overlay others (`base: other.yaml`, relative to the file) into `cls`.

    Each file of the chain is first checked alone (so an unknown key or a wrong type names the file it is in), then
    the chain is merged base first and the `--set` overrides applied last. `cls` must have a `base` field, which is
    set to None in the result (resolved).

    Raises:
        InputError: unknown key / wrong type (naming key and file), malformed YAML, a failed validation.
    """
    if path is None:
        return load_config(cls, None, overrides)
    chain = recipe_chain(path)
    if len(chain) == 1:
        return load_config(cls, chain[0], overrides)
    for p in chain:  # keys and types of every file, each named in its own error
        try:
            load_config(cls, p)
        except InputError as e:
            if not e.message.startswith("invalid config:"):  # cross-field checks only apply to the merged recipe
                raise
    obj = load_config(cls, chain, overrides)
    obj.base = None  # type: ignore[attr-defined]
    return obj


def _strip_base_keys(loaded):
    # Recipes may carry a free-text `description:`; nothing else is allowed beyond the schema.
    from omegaconf import OmegaConf

    d = OmegaConf.to_container(loaded)
    if isinstance(d, dict):
        d.pop("description", None)
    return OmegaConf.create(d)


def _describe(e) -> str:
    key = getattr(e, "full_key", None)
    msg = str(e).splitlines()[0]
    name = e.__class__.__name__
    if "ConfigKeyError" in name or "not in struct" in msg or "Key '" in msg and "not in" in msg:
        return f"unknown key '{key}'" if key else msg
    if "ValidationError" in name:
        return f"wrong type for '{key}': {msg}" if key else msg
    return f"{msg}" + (f" (key '{key}')" if key else "")


def config_to_dict(cfg: Any) -> dict:
    """A plain dict of a config dataclass (for JSON/YAML metadata)."""
    return dataclasses.asdict(cfg)


def save_config(cfg: Any, path: str | os.PathLike) -> None:
    """Write the resolved config as YAML next to an output (atomically)."""
    import yaml

    from dancegen.io.atomic import write_text

    write_text(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


# ------------------------------------------------------------------------------------------- recipe chains
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
        except UnicodeDecodeError:
            raise InputError("not a text file (a recipe is UTF-8 YAML)", p) from None
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
    return str(method).strip().lower().replace("_", "-") if method else None

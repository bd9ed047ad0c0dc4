"""Install a trained model folder as a bundled model (``dancegen/assets/models/<name>``), stored in half precision.

Bundled models ship inside the package, so they are kept small: every floating-point tensor of every
``*.safetensors`` file is stored as float16 (the loaders cast back to float32 on CPU; at these sizes the rounding
changes outputs by far less than the quality tests' margins), everything else (configs, recipes) is copied as is.

    python -m dancegen.core.bundle runs/dyl-tiny/model dyl-tiny
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path


def bundle_model(src: str | os.PathLike, name: str, root: str | os.PathLike | None = None,
                 dtype: str = "float16") -> Path:
    """Copy the model folder `src` to `root/name` (default root: the package's bundled models), halving the weights.

    Returns:
        The installed folder. The copy is written next to it and renamed into place, so a crash leaves the old one.
    """
    import torch
    from safetensors.torch import load_file, save_file

    from dancegen.core.weights import BUNDLED_ROOT
    from dancegen.io.atomic import OWNED_MARKER, atomic_dir

    src = Path(src)
    if not src.is_dir():
        raise FileNotFoundError(f"no model folder at {src}")
    target = getattr(torch, dtype)
    dst = Path(root or BUNDLED_ROOT) / name
    with atomic_dir(dst, overwrite=True, replace_foreign=True) as tmp:  # the bundled folder is rewritten in place
        for f in sorted(src.rglob("*")):
            out = tmp / f.relative_to(src)
            if f.is_dir():
                out.mkdir(parents=True, exist_ok=True)
            elif f.suffix == ".safetensors":
                out.parent.mkdir(parents=True, exist_ok=True)
                sd = {k: (v.to(target) if v.is_floating_point() else v).contiguous() for k, v in load_file(f).items()}
                save_file(sd, str(out), metadata={"format": "pt"})
            else:
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, out)
    # atomic_dir marks the folder as dancegen's output; a bundled model is package data, committed without the marker
    # (the next bundle_model replaces the folder anyway: replace_foreign)
    (dst / OWNED_MARKER).unlink(missing_ok=True)
    return dst


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m dancegen.core.bundle MODEL_FOLDER NAME", file=sys.stderr)
        return 2
    out = bundle_model(args[0], args[1])
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"bundled {args[0]} as {out} ({size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

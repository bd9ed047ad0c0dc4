"""Training checkpoints on accelerate's save_state/load_state: atomic, pruned, exactly resumable; weight export.

A checkpoint folder `output_dir/checkpoints/checkpoint-<step:08d>/` holds what `Accelerator.save_state` writes (model
weights as safetensors, optimizer, lr scheduler, grad scaler, the Python/numpy/torch/CUDA RNG states of every
process, and the state of registered objects such as the InfiniteLoader's position) plus `trainer_state.json`, written
last. It is first written to `.checkpoint-<step>.tmp/` and renamed when complete, so a crash while saving leaves the
previous checkpoint as the latest complete one; a folder without `trainer_state.json` is never resumed from.

With `checkpoint_weights="trainable"` (see `use_trainable_only_weights`) only trainable parameters and buffers are
stored: frozen weights (an SD-1.5 UNet, ControlNets, a VAE) come back from the recipe's pretrained weights on resume,
which keeps checkpoints of stage 1 of dance-your-latents.md §3 (train only STSA) a few MB instead of several GB.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from dancegen.errors import InputError

CHECKPOINTS_DIR = "checkpoints"
STATE_FILE = "trainer_state.json"
_NAME = re.compile(r"^checkpoint-(\d+)$")
_TMP = re.compile(r"^\.checkpoint-(\d+)\.tmp$")


def checkpoint_path(output_dir: str | os.PathLike, step: int) -> Path:
    """Folder of the checkpoint written after optimizer step `step`."""
    return Path(output_dir) / CHECKPOINTS_DIR / f"checkpoint-{step:08d}"


def is_complete(path: str | os.PathLike) -> bool:
    """A checkpoint is complete when its `trainer_state.json` (written last) exists."""
    return (Path(path) / STATE_FILE).is_file()


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints in `output_dir`, oldest first. Temp and half-written folders are left out."""
    root = Path(output_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _NAME.match(p.name)) and is_complete(p)]
    return [p for _, p in sorted(found)]


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The complete checkpoint with the highest step, or None."""
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def resolve_resume(output_dir: str | os.PathLike, resume: str) -> Path | None:
    """Which checkpoint to resume from.

    Args:
        output_dir: The run's output folder.
        resume: `auto` (latest complete checkpoint in output_dir, None if there is none), `never` (None), or a path:
            a checkpoint folder, or a run folder whose latest complete checkpoint is used.

    Raises:
        InputError: the path does not exist, is not complete, or holds no complete checkpoint.
    """
    if resume == "never":
        return None
    if resume == "auto":
        return latest_checkpoint(output_dir)
    path = Path(resume)
    if not path.exists():
        raise InputError("resume checkpoint not found", path)
    if _NAME.match(path.name):
        if not is_complete(path):
            raise InputError(f"checkpoint is incomplete (no {STATE_FILE}; it was probably interrupted while "
                             "saving): resume from an earlier one", path)
        return path
    latest = latest_checkpoint(path)
    if latest is None:
        raise InputError(f"no complete checkpoint in {path / CHECKPOINTS_DIR}", path)
    return latest


def stage_resume(resume: str, stage_dirs: list, index: int) -> str:
    """`--resume` of a multi-stage run for stage `index` (whose output folder is `stage_dirs[index]`).

    "auto" and "never" apply to every stage as given. A checkpoint PATH goes to the stage whose folder holds it;
    stages before that one resume "auto" (they are finished), stages after it start over ("never"); when no stage
    holds the path, every stage resumes "auto".
    """
    if resume in ("auto", "never"):
        return resume
    p = Path(resume).resolve()
    holder = next((i for i, d in enumerate(stage_dirs) if Path(d).resolve() in p.parents), None)
    if holder is None or index < holder:
        return "auto"
    return str(p) if index == holder else "never"


def save_checkpoint(accelerator, output_dir: str | os.PathLike, step: int, state: dict[str, Any],
                    keep: int = 0) -> Path:
    """Save the full training state after step `step`, atomically, then prune old checkpoints.

    Call on every process (accelerate saves each process's RNG state); the main process writes the rest.

    Args:
        accelerator: The run's `accelerate.Accelerator` (model, optimizer and scheduler prepared with it).
        output_dir: The run's output folder.
        step: Optimizer steps done.
        state: JSON-serialisable loop state written to `trainer_state.json` (the step is added).
        keep: Newest complete checkpoints to keep after saving; 0 keeps all.

    Returns:
        The checkpoint folder.
    """
    final = checkpoint_path(output_dir, step)
    tmp = final.with_name(f".{final.name}.tmp")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    try:
        accelerator.save_state(str(tmp))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            (tmp / STATE_FILE).write_text(json.dumps({**state, "step": step}, indent=1))
            _replace_dir(tmp, final)
    except BaseException:
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        prune_checkpoints(output_dir, keep)
    return final


def _replace_dir(src: Path, dst: Path) -> None:
    if dst.exists():  # re-saving a step (e.g. after resume=never): swap, then drop the old folder
        old = dst.with_name(f".{dst.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dst, old)
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dst)


def read_checkpoint_state(path: str | os.PathLike) -> dict[str, Any]:
    """The loop state saved in a complete checkpoint's `trainer_state.json`."""
    path = Path(path)
    if not is_complete(path):
        raise InputError(f"checkpoint is incomplete (no {STATE_FILE})", path)
    return json.loads((path / STATE_FILE).read_text())


def load_checkpoint(accelerator, path: str | os.PathLike) -> dict[str, Any]:
    """Restore everything `save_checkpoint` saved; returns the loop state from `trainer_state.json`."""
    state = read_checkpoint_state(path)
    accelerator.load_state(str(path))
    return state


def prune_checkpoints(output_dir: str | os.PathLike, keep: int) -> list[Path]:
    """Delete all but the `keep` newest complete checkpoints (0 keeps all) and leftover temp folders.

    Returns:
        The folders removed.
    """
    root = Path(output_dir) / CHECKPOINTS_DIR
    complete = list_checkpoints(output_dir)
    removed = complete[:-keep] if keep > 0 else []
    if root.is_dir():  # temp folders of interrupted saves (never resumed from)
        removed += [p for p in root.iterdir() if _TMP.match(p.name) or p.name.endswith(".old")]
    for p in removed:
        shutil.rmtree(p, ignore_errors=True)
    return removed


# --- trainable-only checkpoint weights ------------------------------------------------------------------------------


def _kept_names(model) -> set[str]:
    params = {n for n, p in model.named_parameters(remove_duplicate=False) if p.requires_grad}
    return params | {n for n, _ in model.named_buffers(remove_duplicate=False)}


def use_trainable_only_weights(accelerator) -> None:
    """Make `accelerator.save_state` store only trainable parameters and buffers, and `load_state` check them.

    Loading raises InputError when the checkpoint holds a tensor the model lacks (or of another shape), or lacks a
    parameter that trains now; frozen parameters keep the values the model was built with.
    """

    def save_hook(models, weights, output_dir):
        for model, sd in zip(models, weights, strict=True):
            keep = _kept_names(model)
            for k in [k for k in sd if k not in keep]:
                del sd[k]

    def load_hook(models, input_dir):
        for i, model in enumerate(models):
            name = "model.safetensors" if i == 0 else f"model_{i}.safetensors"
            _load_subset(model, Path(input_dir) / name, require=_kept_names(model) & set(model.state_dict()))
        models.clear()  # loaded here; accelerate's strict full-model load would fail on the missing frozen weights

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)


def _load_subset(model, path: Path, require: set[str] | None = None) -> list[str]:
    from safetensors.torch import load_file

    if not path.is_file():
        raise InputError("weights file not found", path)
    state = load_file(str(path), device="cpu")
    own = model.state_dict()
    unknown = [k for k in state if k not in own]
    if unknown:
        raise InputError(f"{len(unknown)} tensors do not exist in {type(model).__name__} "
                         f"(first: {', '.join(unknown[:3])}); was it built with another config?", path)
    bad = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items() if v.shape != own[k].shape]
    if bad:
        raise InputError(f"shape mismatch: {'; '.join(bad[:3])}", path)
    missing = sorted((require or set()) - set(state))
    if missing:
        raise InputError(f"{len(missing)} trainable tensors are missing (first: {', '.join(missing[:3])}); was the "
                         "checkpoint written with other trainable patterns?", path)
    model.load_state_dict(state, strict=False)
    return list(state)


# --- weight export --------------------------------------------------------------------------------------------------


def export_weights(model, path: str | os.PathLike, patterns: list[str] | None = None,
                   metadata: dict[str, str] | None = None) -> list[str]:
    """Write selected tensors of the state dict as one safetensors file, atomically.

    Args:
        model: A torch module (unwrapped).
        path: The `.safetensors` file to write.
        patterns: State-dict name patterns (train_config syntax). None: the parameters with `requires_grad` and
            all persistent buffers (normalisation statistics and the like).
        metadata: String metadata stored in the file header.

    Returns:
        The names written, in state-dict order.

    Raises:
        InputError: a pattern selects nothing, or nothing at all is selected.
    """
    from dancegen.core.train_config import pattern_matches
    from dancegen.io.atomic import save_safetensors

    sd = model.state_dict()
    if patterns is None:
        names = {n for n, p in model.named_parameters(remove_duplicate=False) if p.requires_grad}
        if not names:
            raise InputError(f"nothing to export: no parameter of {type(model).__name__} is trainable")
        names |= {n for n, _ in model.named_buffers(remove_duplicate=False)}
    else:
        unused = [p for p in patterns if not any(pattern_matches(k, p) for k in sd)]
        if unused:
            raise InputError(f"export pattern(s) {', '.join(map(repr, unused))} match no tensor of "
                             f"{type(model).__name__}")
        names = {k for k in sd if any(pattern_matches(k, p) for p in patterns)}
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in sd.items() if k in names}
    save_safetensors(tensors, path, metadata={"format": "pt", **(metadata or {})})
    return list(tensors)


def load_weights(model, path: str | os.PathLike) -> list[str]:
    """Load a file written by `export_weights` into an unwrapped `model` (the tensors it holds; others unchanged).

    Raises:
        InputError: the file is missing, or holds a tensor the model lacks or of another shape.
    """
    return _load_subset(model, Path(path))

"""Flow files: Middlebury `.flo`, compressed `.npz` sequences and per-pair folders (DESIGN.md "Data contracts").

`.flo` layout (Baker et al., "A Database and Evaluation Methodology for Optical Flow", Middlebury flow-code):
the 4-byte magic "PIEH" (the float32 202021.25 little-endian), int32 width, int32 height, then height*width*2
float32 values, row-major, dx and dy interleaved. Everything is little-endian.

A flow `.npz` holds `flow` `(F-1, 2, H, W)` float32, `direction` ("forward" | "backward") and `meta` (a JSON
string). All writes are atomic (dancegen.io.atomic).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from dancegen.errors import InputError
from dancegen.flow import FLOW_DIRECTIONS
from dancegen.io.atomic import atomic_path, save_npz, write_bytes

FLO_MAGIC = b"PIEH"
FLO_MAGIC_FLOAT = 202021.25
#: Largest side we accept in a `.flo` header; anything larger is a corrupt header, not a flow field.
MAX_FLO_SIDE = 1 << 15


class FlowData(NamedTuple):
    """A flow sequence loaded from disk."""

    flow: np.ndarray  #: `(F-1, 2, H, W)` float32, pixels
    direction: str  #: "forward" or "backward"
    meta: dict


def _check_field(flow, what: str = "flow") -> np.ndarray:
    flow = np.asarray(flow, dtype=np.float32)
    if flow.ndim != 3 or flow.shape[0] != 2 or flow.shape[1] < 1 or flow.shape[2] < 1:
        raise ValueError(f"{what} must have shape (2, H, W), got {flow.shape}")
    return flow


def _check_sequence(flows) -> np.ndarray:
    flows = np.asarray(flows, dtype=np.float32)
    if flows.ndim != 4 or flows.shape[1] != 2:
        raise ValueError(f"flows must have shape (F-1, 2, H, W), got {flows.shape}")
    return flows


def _check_direction(direction: str) -> str:
    if direction not in FLOW_DIRECTIONS:
        raise ValueError(f"direction must be one of {FLOW_DIRECTIONS}, got {direction!r}")
    return direction


def flo_bytes(flow) -> bytes:
    """Encode one `(2, H, W)` flow field as `.flo` bytes."""
    flow = _check_field(flow)
    _, h, w = flow.shape
    header = FLO_MAGIC + np.array([w, h], dtype="<i4").tobytes()
    return header + np.ascontiguousarray(flow.transpose(1, 2, 0), dtype="<f4").tobytes()


def write_flo(path: str | os.PathLike, flow) -> None:
    """Write one flow field to a Middlebury `.flo` file (atomically).

    Args:
        path: Output file.
        flow: `(2, H, W)` float flow in pixels (dx, dy).
    """
    write_bytes(path, flo_bytes(flow))


def read_flo(path: str | os.PathLike) -> np.ndarray:
    """Read a Middlebury `.flo` file.

    Returns:
        `(2, H, W)` float32 flow in pixels.

    Raises:
        InputError: missing file, wrong magic, absurd size or truncated data (the message names the file).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError("flow file not found", path) from None
    except IsADirectoryError:
        raise InputError("expected a .flo file, got a folder", path) from None
    if len(data) < 12:
        raise InputError(f"not a .flo file: only {len(data)} bytes, the header alone is 12", path)
    if data[:4] != FLO_MAGIC:
        magic = np.frombuffer(data[:4], dtype="<f4")[0]
        raise InputError(f"not a .flo file: magic is {data[:4]!r} ({magic!r}), expected b'PIEH' (202021.25)", path)
    w, h = (int(v) for v in np.frombuffer(data[4:12], dtype="<i4"))
    if not (0 < w <= MAX_FLO_SIDE and 0 < h <= MAX_FLO_SIDE):
        raise InputError(f"corrupt .flo header: size {w}x{h} is not plausible", path)
    need = 12 + 8 * w * h
    if len(data) < need:
        raise InputError(f"truncated .flo file: {w}x{h} needs {need} bytes, file has {len(data)}", path)
    if len(data) > need:
        raise InputError(f"corrupt .flo file: {w}x{h} needs {need} bytes, file has {len(data)} (trailing data)", path)
    flow = np.frombuffer(data, dtype="<f4", offset=12).reshape(h, w, 2)
    return np.ascontiguousarray(flow.transpose(2, 0, 1), dtype=np.float32)


def save_flow_npz(path: str | os.PathLike, flows, direction: str = "forward", meta: dict | None = None) -> None:
    """Save a flow sequence as a compressed `.npz` (atomically).

    Args:
        path: Output file (`.npz`).
        flows: `(F-1, 2, H, W)` float flow in pixels.
        direction: "forward" (flow[t]: t -> t+1) or "backward" (flow[t]: t+1 -> t). Reference-frame flows
            (frame k -> r(k)) are stored as "forward" with `meta["reference"]` holding r.
        meta: JSON-serialisable provenance (method, source, size ...).
    """
    flows = _check_sequence(flows)
    _check_direction(direction)
    save_npz(path, True, flow=flows, direction=np.array(direction), meta=np.array(json.dumps(meta or {})))


def load_flow_npz(path: str | os.PathLike) -> FlowData:
    """Load a flow sequence written by `save_flow_npz` (or any `.npz` with a `flow` array).

    A bare array in `(F-1, H, W, 2)` layout is transposed to `(F-1, 2, H, W)`; a single `(2, H, W)` field becomes
    a sequence of one. A file without `direction` is taken as "forward".

    Returns:
        FlowData(flow `(F-1, 2, H, W)` float32, direction, meta dict).

    Raises:
        InputError: missing/unreadable file, no flow array, or a shape that is not a flow sequence.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("flow file not found", path)
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = list(z.keys())
            key = "flow" if "flow" in keys else (keys[0] if len(keys) == 1 else None)
            if key is None:
                raise InputError(f"no 'flow' array in the .npz (keys: {', '.join(keys) or 'none'})", path)
            flow = np.asarray(z[key])
            direction = str(z["direction"]) if "direction" in keys else "forward"
            meta = json.loads(str(z["meta"])) if "meta" in keys else {}
    except InputError:
        raise
    except (OSError, ValueError, EOFError) as e:
        raise InputError(f"cannot read flow .npz: {e}", path) from None
    if flow.ndim == 3:
        flow = flow[None]
    if flow.ndim == 4 and flow.shape[1] != 2 and flow.shape[-1] == 2:
        flow = flow.transpose(0, 3, 1, 2)
    if flow.ndim != 4 or flow.shape[1] != 2:
        raise InputError(f"flow array must be (F-1, 2, H, W), got {flow.shape}", path)
    if direction not in FLOW_DIRECTIONS:
        raise InputError(f"unknown flow direction {direction!r}", path)
    if not np.issubdtype(flow.dtype, np.floating):
        raise InputError(f"flow must be floating point, got {flow.dtype}", path)
    return FlowData(np.ascontiguousarray(flow, dtype=np.float32), direction, meta)


def write_flow_folder(folder: str | os.PathLike, flows, direction: str = "forward", colors: bool = True,
                      max_flow: float | None = None, meta: dict | None = None) -> list[Path]:
    """Write one `.flo` per pair (`frame_00000.flo` ...) plus colour-wheel PNGs and a `flow.json` index.

    Args:
        folder: Output folder (created).
        flows: `(F-1, 2, H, W)` flow in pixels.
        direction: "forward" or "backward" (recorded in flow.json).
        colors: Also write `frame_00000.png` ... colour-wheel pictures (one shared scale for the whole sequence).
        max_flow: Colour scale in pixels; default: the largest vector magnitude of the sequence.
        meta: Extra JSON-serialisable fields for flow.json.

    Returns:
        The `.flo` paths written, in order.
    """
    from dancegen.flow.vis import flows_to_colors

    flows = _check_sequence(flows)
    _check_direction(direction)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for t, f in enumerate(flows):
        p = folder / f"frame_{t:05d}.flo"
        write_flo(p, f)
        paths.append(p)
    scale = None
    if colors and len(flows):
        from dancegen.io.video import write_image

        pictures, scale = flows_to_colors(flows, max_flow=max_flow, return_scale=True)
        for t, img in enumerate(pictures):
            write_image(folder / f"frame_{t:05d}.png", img)
    index = {"direction": direction, "num_pairs": int(len(flows)), "height": int(flows.shape[2]),
             "width": int(flows.shape[3]), "color_max_flow": scale, **(meta or {})}
    with atomic_path(folder / "flow.json") as tmp:
        tmp.write_text(json.dumps(index, indent=2))
    return paths


def read_flow_folder(folder: str | os.PathLike) -> FlowData:
    """Read a folder written by `write_flow_folder` (all `frame_*.flo` in order) back as a sequence."""
    folder = Path(folder)
    files = sorted(folder.glob("frame_*.flo"))
    if not files:
        raise InputError("no frame_*.flo files in folder", folder)
    index = folder / "flow.json"
    meta = json.loads(index.read_text()) if index.is_file() else {}
    flows = [read_flo(p) for p in files]
    if len({f.shape for f in flows}) != 1:
        raise InputError("the .flo files in this folder have different sizes", folder)
    return FlowData(np.stack(flows), meta.pop("direction", "forward"), meta)

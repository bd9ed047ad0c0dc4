"""Cross-frame dense correspondences from DensePose-like IUV maps (LatentMan spec §2.4).

At a working resolution R (64 for latent alignment, 256 for pixel guidance), each frame's IUV map is downsampled with
nearest neighbour (`cv2.INTER_NEAREST`, as the official code), and for every part present in both frames the pixels
are matched on their features by the Hungarian solver. The per-pair matching is
`dancegen.metrics.consistency.iuv_correspondences` (one implementation, shared with the H_MSE metric):
`features="official"` ([U - mean U, V - mean V, E'] with E' the L1 distance to the part's box centre rescaled to a
maximum of 63.75; the default) or `"paper"` ([U, V, E] with E the Euclidean distance to the part centroid);
`solver="hungarian"` (`scipy.optimize.linear_sum_assignment`, min(|Q|, |S|) injective pairs per part) or `"nearest"`
(each current pixel to its nearest reference pixel in raw (u, v); fast, not injective). Parts above
`max_part_pixels` pixels fall back to nearest to bound the O(n^3) cost.

Chains (`chain_correspondences`), pair k = (reference, frame k + 1) for k = 0..T-2:

* "prev_new" (the official default): the reference of frame i is the *propagated* map of frame i-1; after matching,
  frame i's matched pixels take the reference's propagated IUV values and its unmatched pixels keep their own, and
  that map is the reference of frame i+1, so surface coordinates are tracked along the chain. Frame 0's propagated
  map is its own.
* "prev": the raw map of frame i-1 (the paper's consecutive pairs).
* "first": frame 0's raw map for every frame (the indices `y_ref, x_ref` then point into frame 0).

Each pair is `(y_ref, x_ref, y_cur, x_cur)` int64 arrays in pixels of the working resolution; for "prev" and
"prev_new" the reference pixels are frame i-1's (the propagated map lives on frame i-1's pixel grid).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from dancegen.errors import InputError
from dancegen.metrics.consistency import IUV_FEATURES, iuv_correspondences

CHAINS = ("prev_new", "prev", "first")
SOLVERS = ("hungarian", "nearest")

Pair = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _res(res, shape) -> tuple[int, int]:
    if res is None:
        return int(shape[0]), int(shape[1])
    if isinstance(res, (int, np.integer)):
        h = w = int(res)
    else:
        h, w = (int(x) for x in res)
    if h < 1 or w < 1:
        raise InputError(f"resolution must be positive, got {res!r}")
    return h, w


def downsample_iuv(iuv, res) -> np.ndarray:
    """Nearest-neighbour resize (`cv2.INTER_NEAREST`) of an IUV map `(H, W, 3)` or `(T, H, W, 3)` to `res`
    (int = square, or (h, w); None keeps the size). Returns float32."""
    import cv2

    a = np.asarray(iuv, np.float32)
    single = a.ndim == 3
    if single:
        a = a[None]
    if a.ndim != 4 or a.shape[-1] != 3:
        raise InputError(f"iuv must be (T, H, W, 3) = (part, u, v), got shape {np.shape(iuv)}")
    h, w = _res(res, a.shape[1:3])
    if (h, w) != a.shape[1:3]:
        a = np.stack([cv2.resize(x, (w, h), interpolation=cv2.INTER_NEAREST) for x in a])
    return a[0] if single else a


def match_pair(iuv_ref, iuv_cur, features: str = "official", solver: str = "hungarian",
               max_part_pixels: int = 4000) -> Pair:
    """Correspondences between two `(H, W, 3)` IUV maps of the same size (see the module docstring)."""
    if features not in IUV_FEATURES:
        raise InputError(f"features must be one of {IUV_FEATURES}, got {features!r}")
    if solver not in SOLVERS:
        raise InputError(f"solver must be one of {SOLVERS}, got {solver!r}")
    ref, cur = np.asarray(iuv_ref), np.asarray(iuv_cur)
    if ref.shape != cur.shape or ref.ndim != 3 or ref.shape[-1] != 3:
        raise InputError(f"iuv maps must both be (H, W, 3), got {ref.shape} and {cur.shape}")
    return iuv_correspondences(ref, cur, method=solver, max_part_pixels=max_part_pixels, features=features)


def propagate_iuv(iuv_ref, iuv_cur, pair: Pair) -> np.ndarray:
    """Frame i's map with its matched pixels overwritten by the reference's values (the "prev_new" update)."""
    yr, xr, yc, xc = pair
    out = np.array(iuv_cur, copy=True)
    out[yc, xc] = np.asarray(iuv_ref)[yr, xr]
    return out


def chain_correspondences(iuv, res=64, chain: str = "prev_new", features: str = "official",
                          solver: str = "hungarian", max_part_pixels: int = 4000, return_maps: bool = False):
    """Correspondences of the T-1 pairs (reference, frame i), i = 1..T-1, at resolution `res`.

    Args:
        iuv: `(T, H, W, 3)` IUV maps (part 0..24, u and v in [0, 1]), e.g. `render_body(...).iuv`.
        res: working resolution: int (square), (h, w), or None (native).
        chain: "prev_new", "prev" or "first" (module docstring).
        features: "official" or "paper".
        solver: "hungarian" or "nearest".
        max_part_pixels: parts larger than this use "nearest".
        return_maps: also return the `(T, h, w, 3)` reference maps used: propagated maps for "prev_new", the
            downsampled maps otherwise.

    Returns:
        A list of T-1 `(y_ref, x_ref, y_cur, x_cur)` int64 tuples (and the maps with `return_maps`).
    """
    if chain not in CHAINS:
        raise InputError(f"chain must be one of {CHAINS}, got {chain!r}")
    maps = downsample_iuv(iuv, res)
    if maps.ndim != 4:
        raise InputError(f"iuv must be (T, H, W, 3), got shape {np.shape(iuv)}")
    refs = maps.copy() if chain == "prev_new" else maps
    pairs = []
    for i in range(1, len(maps)):
        ref = maps[0] if chain == "first" else refs[i - 1]
        pair = match_pair(ref, maps[i], features, solver, max_part_pixels)
        pairs.append(tuple(np.asarray(a, np.int64) for a in pair))
        if chain == "prev_new":
            refs[i] = propagate_iuv(ref, maps[i], pair)
    return (pairs, refs) if return_maps else pairs


def correspondence_sets(iuv, resolutions=(64, 256), **kwargs) -> dict[int, list[Pair]]:
    """`chain_correspondences` at each square resolution (the spec stores one set per resolution {64, 256})."""
    return {int(r): chain_correspondences(iuv, int(r), **kwargs) for r in resolutions}


def save_correspondences(path: str | os.PathLike, pairs) -> Path:
    """Write a list of pairs, or a {resolution: list of pairs} dict, to an .npz file (written atomically)."""
    p = Path(path)
    arrays: dict[str, np.ndarray] = {}

    def put(prefix: str, lst) -> None:
        arrays[f"{prefix}count"] = np.array(len(lst))
        for i, pair in enumerate(lst):
            arrays[f"{prefix}pair{i}"] = np.stack([np.asarray(a, np.int64) for a in pair]) if len(pair[0]) else \
                np.zeros((4, 0), np.int64)

    if isinstance(pairs, dict):
        arrays["resolutions"] = np.array(sorted(int(r) for r in pairs), np.int64)
        for r in pairs:
            put(f"r{int(r)}_", pairs[r])
    else:
        put("", list(pairs))
    from dancegen.io.atomic import save_npz

    p.parent.mkdir(parents=True, exist_ok=True)
    save_npz(p, True, **arrays)
    return p


def load_correspondences(path: str | os.PathLike):
    """Read what `save_correspondences` wrote: a list of `(y_ref, x_ref, y_cur, x_cur)` tuples or a dict of them."""
    p = Path(path)
    if not p.is_file():
        raise InputError("no such correspondence file", p)
    with np.load(p, allow_pickle=False) as z:

        def get(prefix: str) -> list[Pair]:
            try:
                n = int(z[f"{prefix}count"])
                return [tuple(z[f"{prefix}pair{i}"].astype(np.int64)) for i in range(n)]
            except KeyError as e:
                raise InputError(f"not a correspondence file (missing {e})", p) from None

        if "resolutions" in z.files:
            return {int(r): get(f"r{int(r)}_") for r in z["resolutions"]}
        return get("")

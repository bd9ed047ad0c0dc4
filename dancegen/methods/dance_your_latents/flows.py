"""Motion flows for the MF variant: every frame to its subspace reference frame, at latent resolution (spec §2.5-2.6).

For a clip of F frames and temporal subspace size s_f, each STSA half needs ``F^{k -> r(k)}`` for the reference
frames ``align.required_reference_frames(F, s_f, shift)`` (offset 0: unshifted half; ``s_f // 2``: shifted half).
Flows are computed directly on each pair (the paper's wording), from the poses alone (``pose``: the skeleton-driven
flow of ``dancegen.flow.pose_flow``, our default because it needs no network) or with RAFT on rendered pose images
(``raft``: the paper's recipe, DensePose IUV renders or OpenPose maps), then area-downsampled to the latent grid with
the vectors rescaled (``dancegen.flow.warp.resize_flow``).
"""

from __future__ import annotations

import numpy as np
import torch


def reference_flows(seq, s_f: int, shift: bool, latent_hw: tuple[int, int], source: str = "pose",
                    images: np.ndarray | None = None, raft_weights=None, raft_iters: int = 12, device: str = "cpu",
                    downsample: str = "area") -> dict[int, torch.Tensor]:
    """Flows of one clip to its reference frames, per STSA partition offset.

    Args:
        seq: the clip's ``PoseSequence`` (F frames; flows are computed on its ``width x height`` grid).
        s_f: temporal subspace size; shift: whether the STSA block has its shifted half.
        latent_hw: ``(h, w)`` of the latent grid.
        source: "pose" (skeleton-driven flow) or "raft" (RAFT on ``images``).
        images: ``(F, H, W, 3)`` uint8 pose renders for RAFT (DensePose IUV or OpenPose maps).
        raft_weights / raft_iters / device: RAFT settings.
        downsample: "area" | "bilinear".

    Returns:
        ``{offset: (F, 2, h, w) float32}`` in latent pixels.
    """
    from dancegen.core.align import required_reference_frames
    from dancegen.flow.warp import resize_flow

    f = seq.num_frames
    refs = required_reference_frames(f, int(s_f), shift=shift)
    out: dict[int, torch.Tensor] = {}
    cache: dict[tuple[int, int], np.ndarray] = {}
    for off, r in refs.items():
        r = r.numpy()
        if source == "pose":
            from dancegen.flow.pose_flow import pose_flow_to_reference

            flow = pose_flow_to_reference(seq, r)
        elif source == "raft":
            if images is None:
                raise ValueError("flow source raft needs the rendered pose images")
            flow = _raft_to_reference(images, r, cache, raft_weights, raft_iters, device)
        else:
            raise ValueError(f"flow source must be 'pose' or 'raft', got {source!r}")
        out[int(off)] = torch.from_numpy(np.ascontiguousarray(resize_flow(flow, latent_hw, mode=downsample)))
    return out


def _raft_to_reference(images: np.ndarray, ref: np.ndarray, cache: dict, weights, iters: int, device: str
                       ) -> np.ndarray:
    from dancegen.flow.estimators import estimate_pairs_raft

    f, h, w = images.shape[:3]
    pairs = [(k, int(ref[k])) for k in range(f) if int(ref[k]) != k and (k, int(ref[k])) not in cache]
    if pairs:
        est = estimate_pairs_raft(images, pairs, weights=weights, iters=iters, device=device)
        cache.update(dict(zip(pairs, est, strict=True)))
    out = np.zeros((f, 2, h, w), np.float32)
    for k in range(f):
        if int(ref[k]) != k:
            out[k] = cache[(k, int(ref[k]))]
    return out

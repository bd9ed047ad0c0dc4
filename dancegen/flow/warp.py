"""Backward warping, flow resizing and end-point-error statistics (DESIGN.md flow contract; DYL §2.5 rescaling).

Backward warping samples the source image at `p + flow(p)`: with the forward flow t -> t+1 (defined on frame t),
`backward_warp(frame[t+1], flow[t])` reconstructs frame t. Pixel centres sit at integer coordinates, so the torch
path uses `grid_sample(align_corners=True)` with `x_norm = 2 x / (W - 1) - 1`, and the numpy path `cv2.remap`
with absolute pixel maps; both agree (cv2 quantises sub-pixel positions to 1/32 px).
"""

from __future__ import annotations

import numpy as np

PADDING_MODES = ("border", "zeros")


def _is_torch(x) -> bool:
    return type(x).__module__.startswith("torch")


def _check_pair(img_shape, flow_shape):
    if len(img_shape) not in (3, 4):
        raise ValueError(f"img must be (C, H, W) or (F, C, H, W), got {tuple(img_shape)}")
    want = (2, *img_shape[-2:]) if len(img_shape) == 3 else (img_shape[0], 2, *img_shape[-2:])
    if tuple(flow_shape) != want:
        raise ValueError(f"flow must have shape {want} for img {tuple(img_shape)}, got {tuple(flow_shape)}")


def backward_warp(img, flow, mode: str = "bilinear", padding_mode: str = "border"):
    """Sample `img` at `p + flow(p)` for every pixel p.

    Args:
        img: `(C, H, W)` or `(F, C, H, W)`; a torch tensor (any float dtype/device) or a numpy array
            (uint8 or float; computed with cv2.remap).
        flow: `(2, H, W)` or `(F, 2, H, W)` in pixels (dx, dy), same library as `img`.
        mode: "bilinear" or "nearest".
        padding_mode: "border" (clamp to the edge) or "zeros" (outside samples are 0).

    Returns:
        The warped image, same shape, type and dtype as `img`.
    """
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
    if mode not in ("bilinear", "nearest"):
        raise ValueError(f"mode must be 'bilinear' or 'nearest', got {mode!r}")
    _check_pair(img.shape, flow.shape)
    if _is_torch(img):
        return _warp_torch(img, flow, mode, padding_mode)
    return _warp_cv2(np.asarray(img), np.asarray(flow), mode, padding_mode)


def _warp_torch(img, flow, mode, padding_mode):
    import torch
    import torch.nn.functional as F

    single = img.ndim == 3
    x = img[None] if single else img
    fl = (flow[None] if single else flow).to(device=x.device)
    n, _, h, w = x.shape
    dtype = x.dtype if x.is_floating_point() else torch.float32
    ys, xs = torch.meshgrid(torch.arange(h, device=x.device, dtype=dtype),
                            torch.arange(w, device=x.device, dtype=dtype), indexing="ij")
    gx = (xs + fl[:, 0].to(dtype)) * (2.0 / max(w - 1, 1)) - 1.0
    gy = (ys + fl[:, 1].to(dtype)) * (2.0 / max(h - 1, 1)) - 1.0
    out = F.grid_sample(x.to(dtype), torch.stack([gx, gy], dim=-1), mode=mode, padding_mode=padding_mode,
                        align_corners=True)
    if not img.is_floating_point():
        out = out.round().clamp(torch.iinfo(img.dtype).min, torch.iinfo(img.dtype).max)
    out = out.to(img.dtype)
    return out[0] if single else out


def _warp_cv2(img: np.ndarray, flow: np.ndarray, mode, padding_mode):
    import cv2

    single = img.ndim == 3
    x = img[None] if single else img
    fl = (flow[None] if single else flow).astype(np.float32)
    work = x if x.dtype in (np.uint8, np.float32) else x.astype(np.float32)
    h, w = x.shape[-2:]
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    interp = cv2.INTER_LINEAR if mode == "bilinear" else cv2.INTER_NEAREST
    border = cv2.BORDER_REPLICATE if padding_mode == "border" else cv2.BORDER_CONSTANT
    out = np.empty_like(work)
    for i in range(x.shape[0]):
        mx, my = xs + fl[i, 0], ys + fl[i, 1]
        if mode == "nearest":  # cv2's INTER_NEAREST floors; round like grid_sample's nearest
            mx, my = np.floor(mx + 0.5), np.floor(my + 0.5)
        for c in range(x.shape[1]):  # per channel: cv2 caps channel counts, C is small
            out[i, c] = cv2.remap(work[i, c], mx, my, interp, borderMode=border, borderValue=0)
    out = out.astype(img.dtype, copy=False)
    return out[0] if single else out


def valid_mask(flow):
    """`(…, H, W)` bool: where `p + flow(p)` lands inside the image (warps there need no padding).

    Args:
        flow: `(2, H, W)` or `(F, 2, H, W)` numpy array.
    """
    flow = np.asarray(flow)
    h, w = flow.shape[-2:]
    xs, ys = np.meshgrid(np.arange(w), np.arange(h))
    x = xs + flow[..., 0, :, :]
    y = ys + flow[..., 1, :, :]
    return (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)


def resize_flow(flow, size: tuple[int, int], mode: str = "area"):
    """Resize a flow field and scale its vectors by the same factors (DYL §2.5: flow to latent resolution).

    Args:
        flow: `(2, H, W)` or `(F, 2, H, W)`, numpy or torch.
        size: Target `(h, w)`.
        mode: "area" (averaging; the DYL choice when shrinking) or "bilinear".

    Returns:
        Flow of shape `(…, 2, h, w)` in pixels of the new size (dx scaled by w/W, dy by h/H), same type as input.
    """
    import torch
    import torch.nn.functional as F

    is_t = _is_torch(flow)
    t = flow if is_t else torch.from_numpy(np.ascontiguousarray(flow, dtype=np.float32))
    single = t.ndim == 3
    t = t[None] if single else t
    h0, w0 = t.shape[-2:]
    h, w = int(size[0]), int(size[1])
    if mode == "area":
        out = F.interpolate(t, size=(h, w), mode="area")
    elif mode == "bilinear":
        out = F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False)
    else:
        raise ValueError(f"mode must be 'area' or 'bilinear', got {mode!r}")
    scale = torch.tensor([w / w0, h / h0], dtype=out.dtype, device=out.device).view(1, 2, 1, 1)
    out = out * scale
    out = out[0] if single else out
    return out if is_t else out.numpy()


def _epe_map(pred, gt) -> np.ndarray:
    pred = np.asarray(pred.detach().cpu() if _is_torch(pred) else pred, dtype=np.float64)
    gt = np.asarray(gt.detach().cpu() if _is_torch(gt) else gt, dtype=np.float64)
    if pred.shape != gt.shape or pred.ndim not in (3, 4) or pred.shape[-3] != 2:
        raise ValueError(f"flows must both be (2, H, W) or (F, 2, H, W), got {pred.shape} and {gt.shape}")
    d = pred - gt
    return np.sqrt(d[..., 0, :, :] ** 2 + d[..., 1, :, :] ** 2)


def _apply_mask(err: np.ndarray, mask) -> np.ndarray:
    if mask is None:
        return err.ravel()
    mask = np.broadcast_to(np.asarray(mask, dtype=bool), err.shape)
    return err[mask]


def epe(flow_pred, flow_gt, mask=None) -> float:
    """Mean end-point error `mean ||pred - gt||_2` in pixels.

    Args:
        flow_pred, flow_gt: `(2, H, W)` or `(F, 2, H, W)`.
        mask: Optional bool `(H, W)` / `(F, H, W)`: average only there. An empty mask gives nan.
    """
    err = _apply_mask(_epe_map(flow_pred, flow_gt), mask)
    return float(err.mean()) if err.size else float("nan")


def flow_stats(flow_pred, flow_gt, mask=None) -> dict:
    """EPE and outlier rates.

    Returns:
        dict with `epe` (mean px), `epe_median`, `px1` / `px3` / `px5` (fraction of pixels with EPE > 1 / 3 / 5 px)
        and `n` (pixels counted).
    """
    err = _apply_mask(_epe_map(flow_pred, flow_gt), mask)
    if not err.size:
        return {"epe": float("nan"), "epe_median": float("nan"), "px1": float("nan"), "px3": float("nan"),
                "px5": float("nan"), "n": 0}
    return {"epe": float(err.mean()), "epe_median": float(np.median(err)), "px1": float((err > 1).mean()),
            "px3": float((err > 3).mean()), "px5": float((err > 5).mean()), "n": int(err.size)}

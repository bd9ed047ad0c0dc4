"""Music -> latent flows -> frames: DabFusion inference (paper §3.1, Fig. 3) with seamless chaining for long songs.

One clip is N frames (the model's `data.num_frames`) after the reference x0. A song longer than a clip is covered by
clips that overlap by `overlap` frames. Every flow is relative to the same reference (the target is the sampling grid
from x0 to frame i), so chaining never re-encodes a generated frame: nothing drifts or blurs from clip to clip (the
paper's chaining feeds the last generated frame back as the next x0 and reports a quality drop, §5). The first
`overlap` frames of each new clip are fixed to the previous clip's last ones while it is sampled (RePaint-style
replacement in `GaussianDiffusion`), so the motion continues across the seam instead of restarting.

With a pretrained music branch (CLAP / Wav2CLIP) each clip's frozen embeddings come from the song's audio window of its
frames, by the training data's rule (`pretrained.audio_window`): the clip of generated frames s+1 .. s+N gets
[(s+1)/fps, (s+1+N)/fps) s, so `sample_flows` needs the song (`audio=`).

A different output frame rate than the model's is made in flow space: the grids and occlusion maps of neighbouring
generated frames are interpolated linearly, then decoded, so in-between frames are real warps of the reference.
"""

from __future__ import annotations

import numpy as np
import torch

from dancegen.errors import InputError


def clip_starts(total: int, n: int, overlap: int) -> list[int]:
    """Start indices (in generated-frame numbering, 0-based) of the clips covering `total` frames."""
    if total <= 0:
        return []
    step = n - overlap
    starts = [0]
    while starts[-1] + n < total:
        starts.append(starts[-1] + step)
    return starts


@torch.no_grad()
def sample_flows(model, ref: torch.Tensor, features: np.ndarray, beats: np.ndarray, *, steps: int | None = None,
                 sampler: str | None = None, eta: float | None = None, overlap: int | None = None,
                 generator: torch.Generator | None = None, progress=None, condition: str = "music",
                 audio: tuple[np.ndarray, int] | None = None, encoders=None) -> torch.Tensor:
    """Latent flow/occlusion sequence a0 `(1, 3, T, h, w)` for T frames of music after the reference.

    Args:
        model: `DanceAnyBeatModel` (eval mode).
        ref: `(1, 3, H, W)` reference in [0, 1].
        features / beats: per-frame music inputs of the T frames (`data.clip_music` layout), `(T, D)` and `(T,)`.
        steps / sampler / eta / overlap: override the recipe's `inference` values.
        generator: CPU generator for the noise.
        progress: optional `progress(done, total)` over all denoising steps of all clips.
        condition: "music" (normal), "null" (the unconditional model: all-zero condition).
        audio: `(samples (S,) mono, sr)` of the whole song, the reference at t = 0 (row j of `features` is frame
            j + 1); needed when the model uses a pretrained music branch (clap / wav2clip).
        encoders: a `pretrained.FrozenMusicEncoders` to reuse (default: one for this call, loaded on first use).

    Raises:
        InputError: a pretrained branch without `audio`.
    """
    from dancegen.methods.dance_any_beat.pretrained import FrozenMusicEncoders, pretrained_branches

    cfg = model.config
    branches = pretrained_branches(cfg.music)
    if branches and condition != "null" and audio is None:
        raise InputError(f"music.encoder {cfg.music.encoder} embeds each clip's audio with "
                         f"{' and '.join(branches)}: pass the song as audio=(samples, sample_rate)")
    inf = cfg.inference
    n = cfg.data.num_frames
    sampler = sampler or inf.sampler
    steps = int(steps or inf.steps)
    eta = inf.eta if eta is None else eta
    overlap = inf.overlap if overlap is None else overlap
    total = int(features.shape[0])
    device = ref.device
    z0 = model.lfae.encode(ref)
    h, w = z0.shape[-2:]
    starts = clip_starts(total, n, overlap)
    out = torch.zeros(1, 3, starts[-1] + n, h, w, device=device)
    per_clip = steps if sampler == "ddim" else cfg.model.diffusion.timesteps
    embeds: dict[str, np.ndarray] = {}
    if branches:
        if condition == "null":  # the condition is zeroed anyway: no backbone needed
            embeds = {b: np.zeros((len(starts), cfg.music.embed_dim), np.float32) for b in branches}
        else:
            enc = encoders or FrozenMusicEncoders(cfg.music, str(device))
            samples, sr = np.asarray(audio[0], np.float32), int(audio[1])
            samples = samples.mean(axis=1) if samples.ndim == 2 else samples  # (S, C) -> mono
            embeds = enc.window_embeddings(samples, sr, starts, n, cfg.data.fps)
    done = 0
    for j, s in enumerate(starts):
        f = np.zeros((n, features.shape[1]), np.float32)
        b = np.zeros(n, np.float32)
        m = min(n, total - s)
        f[:m], b[:m] = features[s:s + m], beats[s:s + m]
        music = {"features": torch.from_numpy(f)[None].to(device), "beats": torch.from_numpy(b)[None].to(device)}
        music.update({k: torch.from_numpy(v[j:j + 1]).to(device) for k, v in embeds.items()})
        cond, frame = model.condition(music)
        if condition == "null":
            cond = torch.zeros_like(cond)
            frame = torch.zeros_like(frame) if frame is not None else None
        fn = model.denoiser(z0, cond, frame)
        if inf.cond_scale != 1.0:
            from dancegen.core.guidance import guided_fn

            null_frame = torch.zeros_like(frame) if frame is not None else None
            fn = guided_fn(fn, model.denoiser(z0, torch.zeros_like(cond), null_frame), inf.cond_scale)
        known = (model.to_diffusion(out[:, :, s:s + overlap]), overlap) if j > 0 and overlap > 0 else None

        def tick(i, k, base=done):
            if progress:
                progress(base + i, per_clip * len(starts))

        shape = (1, 3, n, h, w)
        if sampler == "ddim":
            a0 = model.diffusion.ddim_sample(fn, shape, steps=steps, eta=eta, generator=generator, progress=tick,
                                             known=known, device=device)
        else:
            a0 = model.diffusion.ddpm_sample(fn, shape, generator=generator, progress=tick, known=known,
                                             device=device)
        out[:, :, s:s + n] = model.from_diffusion(a0)
        done += per_clip
    return out[:, :, :total]


def resample_flows(a0: torch.Tensor, src_fps: float, dst_fps: float, num_frames: int) -> torch.Tensor:
    """Linear interpolation in time of a `(1, 3, T, h, w)` sequence whose frame i (0-based) is at time (i + 1) /
    src_fps, with the identity grid / full visibility at time 0 (the reference), to `num_frames` frames at
    times (k + 1) / dst_fps."""
    from dancegen.methods.dance_any_beat.model import identity_a0

    still = identity_a0(*a0.shape[-2:], device=a0.device, dtype=a0.dtype)
    seq = torch.cat([still, a0], dim=2)  # frame 0 = the reference itself
    t = (np.arange(num_frames) + 1) / dst_fps * src_fps  # positions in `seq` units
    t = np.clip(t, 0, seq.shape[2] - 1)
    lo = np.floor(t).astype(int)
    hi = np.minimum(lo + 1, seq.shape[2] - 1)
    wgt = torch.tensor(t - lo, dtype=a0.dtype, device=a0.device).view(1, 1, -1, 1, 1)
    return seq[:, :, lo] * (1 - wgt) + seq[:, :, hi] * wgt


@torch.no_grad()
def decode_frames(model, ref: torch.Tensor, a0: torch.Tensor, chunk: int = 16) -> np.ndarray:
    """Decode a0 `(1, 3, T, h, w)` into `(T, H, W, 3)` uint8 frames, `chunk` frames per LFAE call."""
    parts = []
    for s in range(0, a0.shape[2], chunk):
        x = model.decode(ref, a0[:, :, s:s + chunk])[0]  # (n, 3, H, W) in [0, 1]
        parts.append((x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy())
    return np.concatenate(parts) if parts else np.zeros((0, *ref.shape[2:], 3), np.uint8)


def ref_tensor(image: np.ndarray, size: int, device="cpu") -> torch.Tensor:
    """`(H, W, 3)` uint8 photo -> `(1, 3, size, size)` in [0, 1] (centre square crop, as the training data)."""
    from dancegen.methods.dance_any_beat.data import center_square

    sq = center_square(image, size)
    return torch.from_numpy(np.array(sq)).permute(2, 0, 1)[None].float().div(255).to(device)

"""Is a trained DabFusion model on the beat? Held-out checks of issue 5 (the direction of the paper's Table 6).

For every held-out track (the `data.test_music` videos of an AIST++-layout folder), the model dances the video's
first frame to the track's first `seconds` of music (clips chained as `music2dance` does), under several
conditionings of the same model:

- ``music``: the right music (features and beats of the track);
- ``shuffled``: the music of another held-out track (a cyclic shift over the tracks), scored against the video's
  own music: what alignment a model gets that does not follow this music;
- ``beat_free``: the right music with the beat information removed (beat vector and beat feature zeroed);
and the ground-truth video of the same frames (``ground_truth``), also scored against the shifted track's beats
(``ground_truth_shuffled``: what the protocol gives a real dancer that follows other music).

Rhythm (spec §4, G8 fallback): kinematic beats are the local minima (FACT's `argrelextrema(v, np.less, order)`,
order round(10 fps / 60) at least 1) of the mean optical-flow magnitude of the video (Farneback, AV-Align's
settings); music beats are librosa's beats of the track (FACT's settings) at the video fps. 2D-MM Align (Eq. 7) is
the mean over kinematic beats of exp(-d^2 / 2 sigma^2), d the distance to the nearest music beat; sigma is FACT's 3
frames at 60 fps expressed at this fps (0.05 s), but never below one frame (`beat_sigma`; at 10 fps the beats
librosa finds are quantised to 0.1 s and come out about one frame late on click tracks). AV-Align (TempoTokens) is
reported too. Frames are scored for sharpness by the LFAE's reconstruction PSNR: each ground-truth frame rebuilt from the
first one through the autoencoder (`lfae_psnr`). The size of the motion is `flow_offset`, the mean distance of the
flows from the identity grid, for generated flows and for the LFAE's flows of the real frames (``ground_truth``).
Beat timing is also read off the flows themselves, without decoding (`beat_speed`): the mean frame-to-frame change of
the flow on the frames up to each music beat, relative to its mean over the clip. The synthetic dancers come to rest on
every key pose, so the real flows slow down there (the LFAE's flows of 4 held-out dancers: 0.82; librosa's beats are
about a frame late at 10 fps, hence the two frames); a dance that ignores the beats stays near 1. It averages over every frame of every clip, so it is much
less noisy than 2D-MM Align over a few clips.
"""

from __future__ import annotations

import numpy as np

CONDITIONS = ("music", "shuffled", "beat_free")


def kinematic_beats(video: np.ndarray, fps: float) -> np.ndarray:
    """Frame indices of the local minima of the per-frame flow-magnitude curve (the G8 fallback)."""
    from scipy.signal import argrelextrema

    from dancegen.metrics.rhythm import flow_magnitude_curve

    v = flow_magnitude_curve(video, method="farneback")
    v[0] = v[1]  # frame 0 has no incoming motion: AV-Align repeats flow(0, 1); keep it out of the minima
    return argrelextrema(v, np.less, order=max(1, int(round(10 * fps / 60))))[0].astype(np.int64)


def beat_sigma(fps: float, sigma_s: float = 0.05) -> float:
    """sigma in frames: FACT's 3 frames at 60 fps (0.05 s) at this fps, but at least one frame (below that, beats
    one frame apart, the resolution of the video, would count as misses)."""
    return max(1.0, sigma_s * fps)


def rhythm_scores(video: np.ndarray, music_beats: np.ndarray, fps: float, audio=None, sr=None,
                  sigma_s: float = 0.05) -> dict[str, float]:
    """2D-MM Align (flow-based kinematic beats), BAS and, with audio, AV-Align of one video."""
    from dancegen.metrics.rhythm import av_align, beat_alignment_score

    kin = kinematic_beats(video, fps)
    sigma = beat_sigma(fps, sigma_s)
    out = {"mm_align": beat_alignment_score(kin, music_beats, sigma=sigma, direction="motion"),
           "bas": beat_alignment_score(kin, music_beats, sigma=sigma, direction="music"),
           "kinematic_beats": float(len(kin)), "music_beats": float(len(music_beats))}
    if audio is not None:
        out["av_align"] = float(av_align(video, audio, sr, fps))
    return out


def lfae_psnr(model, frames: np.ndarray) -> tuple[float, float]:
    """PSNR (dB, MAX = 1 on [0, 1], mean over frames) of frames 1.. rebuilt by the LFAE from frame 0 (flow +
    occlusion + decode), and of frame 0 itself as the prediction of every frame (the copy baseline: on these clips
    most pixels are static background, so it is far from zero)."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255.0
    with torch.no_grad():
        ref = x[:1].expand(len(x) - 1, -1, -1, -1)
        pred = model.lfae(ref, x[1:])["prediction"].clamp(0, 1)

    def psnr(a):
        mse = ((a - x[1:]) ** 2).flatten(1).mean(1).clamp_min(1e-10)
        return float((10 * torch.log10(1.0 / mse)).mean())

    return psnr(pred), psnr(ref)


def flow_offset(a0) -> float:
    """Mean |sampling grid - identity| of a0 `(1, 3, T, h, w)` (grid units, 2 = the latent's width): how far the
    flows move content; real motion and generated motion should be of the same size."""
    from dancegen.methods.dance_any_beat.model import identity_a0

    return float((a0 - identity_a0(*a0.shape[-2:], device=a0.device, dtype=a0.dtype))[:, :2].abs().mean())


def flow_speed(a0) -> np.ndarray:
    """`(T,)` mean |flow(i) - flow(i - 1)| of a0 `(1, 3, T, h, w)`, the flows of frames 1..T; before frame 1 comes the
    reference frame 0, whose flow is the identity. Entry i is the speed into frame i + 1."""
    import torch

    from dancegen.methods.dance_any_beat.model import identity_a0

    ident = identity_a0(*a0.shape[-2:], device=a0.device, dtype=a0.dtype)[:, :2, :1]
    grid = torch.cat([ident.expand(a0.shape[0], -1, -1, -1, -1), a0[:, :2]], dim=2)
    return (grid[:, :, 1:] - grid[:, :, :-1]).abs().mean(dim=(0, 1, 3, 4)).double().cpu().numpy()


def beat_speed(a0, beats) -> float:
    """Mean flow speed on the frames up to a beat (the beat frame and the one before it) over the mean speed.

    Args:
        a0: `(1, 3, T, h, w)` flows of frames 1..T (frame 0 is the reference: its flow is the identity).
        beats: music beat frame indices of the video (frame 0 = the reference).

    Returns:
        The ratio (1.0: no slowing down on the beats); nan without beats in range.
    """
    speed = flow_speed(a0)
    frames = np.arange(1, len(speed) + 1)
    near = np.isin(frames, beats) | np.isin(frames + 1, beats)
    if not near.any() or speed.mean() <= 0:
        return float("nan")
    return float(speed[near].mean() / speed.mean())


def beat_frames_of(features, t: int) -> np.ndarray:
    """Frame indices (0 .. t-1) where a song's per-frame beat column (`audio.features.MusicFeatures`) marks a beat."""
    return np.nonzero(features.window(0, t)[:, features.slices["beat"]].max(axis=1) > 0.5)[0]


def heldout_rhythm(model, data_root=None, seconds: float = 6.0, max_videos: int | None = None,
                   conditions=CONDITIONS, steps: int | None = None, seed: int = 0, av: bool = False,
                   progress=None) -> dict:
    """Generate for every held-out video under each conditioning and score rhythm (see the module docstring).

    Returns:
        ``{"videos": [...], "mean": {condition: {metric: mean}}, "per_video": {...}, "lfae_psnr": float,
        "protocol": {...}}`` with conditions plus ``ground_truth``.
    """
    import torch

    from dancegen.audio.song import load_song
    from dancegen.methods.dance_any_beat.data import _AistCache, clip_music, list_aist_videos
    from dancegen.methods.dance_any_beat.pipeline import decode_frames, sample_flows

    cfg = model.config
    from pathlib import Path

    root = Path(data_root or cfg.data.root)
    fps = float(cfg.data.fps)
    videos = list_aist_videos(root, "test", cfg.data.test_music, cfg.data.cameras)[:max_videos]
    cache = _AistCache(root, cfg)
    n_frames = int(round(seconds * fps))
    per: dict[str, dict[str, dict]] = {c: {} for c in (*conditions, "ground_truth", "ground_truth_shuffled")}
    psnrs, copies = [], []
    for k, v in enumerate(videos):
        if progress:
            progress(f"video {k + 1}/{len(videos)}: {v.name}")
        frames = cache.video(v)[:n_frames]
        t = len(frames)
        music_beats = beat_frames_of(cache.features(v.music), t)
        audio = None
        if av:
            song = load_song(root / "wavs" / f"{v.music}.wav", sr=22050)
            audio = song.samples[: int(round(t / fps * song.sr))]
        per["ground_truth"][v.name] = rhythm_scores(frames, music_beats, fps, audio, 22050)
        # the protocol's floor: the right dancer scored against the wrong music's beats
        other_beats = beat_frames_of(cache.features(videos[(k + 1) % len(videos)].music), t)
        per["ground_truth_shuffled"][v.name] = rhythm_scores(frames, other_beats, fps)
        p, c = lfae_psnr(model, frames)
        psnrs.append(p)
        copies.append(c)
        ref = torch.from_numpy(np.ascontiguousarray(frames[0])).permute(2, 0, 1)[None].float() / 255.0
        with torch.no_grad():  # the LFAE's flows of the real frames: the size generated motion should have
            real = torch.from_numpy(np.ascontiguousarray(frames[1:])).permute(0, 3, 1, 2)[None].float() / 255.0
            real_a0 = model.flow_targets(ref, real)[1]
            per["ground_truth"][v.name]["flow_offset"] = flow_offset(real_a0)
            per["ground_truth"][v.name]["beat_speed"] = beat_speed(real_a0, music_beats)
        for cond in conditions:
            src = videos[(k + 1) % len(videos)] if cond == "shuffled" else v
            f, b = clip_music(cache.features(src.music), 1, t - 1, cfg.music)
            if cond == "beat_free":
                b = np.zeros_like(b)
                if cfg.music.beats:
                    f = f.copy()
                    f[:, -1] = 0.0  # the beat column is last (data.clip_music)
            gen = torch.Generator().manual_seed(seed)
            a0 = sample_flows(model, ref, f, b, steps=steps, generator=gen)
            video = np.concatenate([frames[:1], decode_frames(model, ref, a0)])
            per[cond][v.name] = rhythm_scores(video, music_beats, fps, audio, 22050)
            per[cond][v.name]["flow_offset"] = flow_offset(a0)
            per[cond][v.name]["beat_speed"] = beat_speed(a0, music_beats)
    mean = {c: {m: float(np.mean([r[m] for r in rows.values()])) for m in next(iter(rows.values()))
                if all(m in r for r in rows.values())} for c, rows in per.items() if rows}
    return {"videos": [v.name for v in videos], "mean": mean, "per_video": per,
            "lfae_psnr": float(np.mean(psnrs)), "copy_psnr": float(np.mean(copies)),
            "protocol": {"seconds": seconds, "fps": fps, "sigma_frames": beat_sigma(fps), "kinematic_beats": "flow-magnitude minima "
                         "(Farneback), FACT order", "steps": steps or cfg.inference.steps,
                         "sampler": cfg.inference.sampler, "cond_scale": cfg.inference.cond_scale, "seed": seed,
                         "overlap": cfg.inference.overlap}}

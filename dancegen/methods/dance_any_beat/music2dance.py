"""`dancegen music2dance SONG --ref IMG -o OUT.mp4`: a dance video of the person in IMG for the song.

1. Load the model (bundled `dab-tiny` by default), the song (mono, 22.05 kHz for analysis; silent / too short files
   are refused) and the reference photo (centre square crop at the model's resolution).
2. Per-frame music features and beats of the whole song at the model's fps; the video has one frame per 1/fps s of
   music (frame 0 is the reference itself), so its length matches the music. A model with pretrained music branches
   (CLAP / Wav2CLIP) also gets the song at its own rate, for each clip's frozen embeddings.
3. Sample the latent flows clip by clip with overlap (`pipeline.sample_flows`), resample them in flow space to the
   output fps when asked, warp and decode.
4. Write the mp4 atomically with the song as its audio track, plus `<out>.recipe.yaml` (the resolved recipe).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from dancegen.errors import InputError


def music2dance(request, progress=None) -> dict:
    """Generate and write the video; returns a report (frames, seconds, clips, beats, timings, paths).

    Args:
        request: a `dancegen.requests.Music2DanceRequest`: song, ref, out, seconds, start, fps, model, steps,
            sampler, overrides, seed, scene, ref_mask, scene_mask, device, dtype (half precision runs the networks
            under autocast; the flow grids stay fp32), guidance_scale (the recipe's `inference.cond_scale`).
        progress: optional ``progress(done, total)`` over all denoising steps.

    With `scene` ("choreograph anyone", `composite.place_person`), the person of `ref` (mask: `ref_mask`, a file or
    "auto") replaces the dancer of the scene image (`scene_mask`), and the composite, saved as
    ``<out>.reference.png``, is the reference.
    """
    song, ref, out, seconds, start, fps = request.song, request.ref, request.out, request.seconds, request.start, \
        request.fps
    model, steps, sampler, seed = request.model, request.steps, request.sampler, request.seed
    scene, ref_mask, scene_mask, device = request.scene, request.ref_mask, request.scene_mask, request.device
    overrides = list(request.overrides or [])
    if request.guidance_scale is not None:
        overrides.append(f"inference.cond_scale={request.guidance_scale}")
    import torch

    from dancegen.audio.features import frame_features
    from dancegen.audio.song import frame_count, song_from_track
    from dancegen.config import save_config
    from dancegen.io.audio import read_audio
    from dancegen.io.video import read_image, write_video
    from dancegen.methods.dance_any_beat.data import clip_music
    from dancegen.methods.dance_any_beat.model import DanceAnyBeatModel, resolve_model_folder
    from dancegen.methods.dance_any_beat.pipeline import (
        clip_starts,
        decode_frames,
        ref_tensor,
        resample_flows,
        sample_flows,
    )
    from dancegen.runtime import resolve_device

    t0 = time.perf_counter()
    out = Path(out)
    if out.suffix.lower() not in (".mp4", ".mov"):
        raise InputError("music2dance writes an mp4 (the music is its audio track); give -o NAME.mp4", out)
    folder = resolve_model_folder(model)
    dev = resolve_device(device)
    m = DanceAnyBeatModel.from_pretrained(folder, overrides=overrides, device=dev)
    cfg = m.config
    mfps = float(cfg.data.fps)
    out_fps = float(fps or mfps)
    if out_fps <= 0 or out_fps > 120:
        raise InputError(f"--fps must be in (0, 120], got {out_fps:g}")
    if start < 0 or (seconds is not None and seconds <= 0):
        raise InputError("--start must be >= 0 and --seconds > 0")

    track, track_sr = read_audio(song, mono=False)  # decoded once: analysed (mono, 22.05 kHz) and muxed as is
    s = song_from_track(track, track_sr, song, sr=cfg.music.sample_rate, min_seconds=max(1.0 / mfps, 0.5))
    a, b = int(round(start * s.sr)), None if seconds is None else int(round((start + seconds) * s.sr))
    samples = s.samples[a:b]
    duration = samples.size / s.sr
    # the rest of the song after --start must be as long as a whole song must be; an explicit --seconds may be short
    need = 2.0 / mfps if seconds is not None else max(2.0 / mfps, 0.5)
    if duration < need:
        raise InputError(f"only {duration:.2f} s of audio after --start {start:g} s; need at least {need:.2f} s",
                         song)
    n_model = frame_count(duration, mfps)  # frames at the model's rate, frame 0 = the reference
    n_out = frame_count(duration, out_fps)
    image = read_image(ref)
    composite_path = None
    if scene is not None:
        from dancegen.io.video import write_image
        from dancegen.methods.dance_any_beat.composite import load_mask, place_person

        scene_img = read_image(scene)
        image = place_person(image, load_mask(ref_mask, image, f"--ref {ref}"), scene_img,
                             load_mask(scene_mask, scene_img, f"--scene {scene}"))
        composite_path = out.with_suffix(".reference.png")
    x0 = ref_tensor(image, cfg.data.resolution, dev)
    feats = frame_features(samples, s.sr, mfps, num_frames=n_model, n_mels=cfg.music.n_mels,
                           tempogram_bins=cfg.music.tempogram_bins, beats=True, start_bpm=cfg.music.start_bpm)
    f, beats = clip_music(feats, 1, n_model - 1, cfg.music)
    a2, b2 = int(round(start * track_sr)), int(round((start + duration) * track_sr))
    clip = track[a2:b2]
    if seed is not None:  # the recipe written next to the video records the seed that made it
        cfg.inference.seed = int(seed)
    gen = torch.Generator().manual_seed(int(cfg.inference.seed))
    t1 = time.perf_counter()
    # the song at its own rate, frame 0 (the reference) at t = 0: the embedding functions resample per backbone
    plan = request.runtime(cfg.inference.device)
    half = plan.dtype if plan.dtype != torch.float32 else None
    with torch.autocast(torch.device(dev).type, dtype=half or torch.bfloat16, enabled=half is not None):
        a0 = sample_flows(m, x0, f, beats, steps=steps, sampler=sampler, generator=gen,
                          progress=(lambda i, n: progress(i, n)) if progress else None,
                          audio=(clip.mean(axis=1) if clip.ndim == 2 else clip, track_sr)).float()
        if out_fps != mfps:
            a0 = resample_flows(a0, mfps, out_fps, n_out - 1)
        frames = decode_frames(m, x0, a0)
    ref_frame = (x0[0].permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
    video = np.concatenate([ref_frame[None], frames])
    t2 = time.perf_counter()

    write_video(out, video, fps=out_fps, audio=clip, sample_rate=track_sr,
                metadata={"method": "dance-any-beat", "model": str(request.model or "bundled:dab-tiny"),
                          "seed": int(cfg.inference.seed)})
    if composite_path is not None:
        write_image(composite_path, image)
    save_config(cfg, out.with_suffix(".recipe.yaml"))
    n = cfg.data.num_frames
    return {"output": str(out), "model": str(folder), "frames": int(video.shape[0]), "fps": out_fps,
            "seconds": duration, "video_seconds": video.shape[0] / out_fps, "resolution": int(cfg.data.resolution),
            "clips": len(clip_starts(n_model - 1, n, cfg.inference.overlap)), "clip_frames": n,
            "music_beats": int(beats.sum().round()) if not cfg.music.beat_sigma else None,
            "sampler": sampler or cfg.inference.sampler, "steps": int(steps or cfg.inference.steps),
            "generate_s": t2 - t1, "total_s": time.perf_counter() - t0,
            "reference": str(composite_path) if composite_path else str(ref)}

"""Dance Any Beat end to end at toy size: recipe, AIST++-layout data, training stages, chaining, music2dance CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from dancegen.cli import app
from dancegen.errors import InputError

TINY = [
    "data.resolution=32", "data.num_frames=8", "data.window_stride=4", "data.fps=10",
    "data.test_music=[mBR0]",
    "music.encoder=scratch", "music.per_frame=true", "music.dim=16", "music.layers=2", "music.n_mels=8",
    "music.tempogram_bins=4",
    "model.lfae.block_expansion=8", "model.lfae.max_features=16", "model.lfae.num_bottleneck_blocks=1",
    "model.lfae.num_kp=4", "model.lfae.kp_block_expansion=8", "model.lfae.kp_max_features=16",
    "model.lfae.kp_num_blocks=2", "model.lfae.dm_block_expansion=8", "model.lfae.dm_max_features=16",
    "model.lfae.dm_num_blocks=2",
    "model.unet.dim=8", "model.unet.dim_mults=[1,2]", "model.unet.attn_heads=2", "model.unet.attn_dim_head=8",
    "train.stages=[{name: lfae, steps: 3, batch_size: 2}, {name: diffusion, steps: 3, batch_size: 2}]",
    "train.device=cpu", "train.log_every=1", "train.checkpoint_every=3",
    "inference.sampler=ddim", "inference.steps=3", "inference.overlap=2",
]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """4 synthetic AIST++-layout clips (32 px, 3.2 s at 10 fps): mBR0 is the test track, the others train."""
    from tests_helpers import synth_aist_world

    return synth_aist_world(tmp_path_factory.mktemp("aist"))


@pytest.fixture(scope="module")
def trained(world, tmp_path_factory):
    """A tiny model trained 3 + 3 steps through `dancegen.api.train` (the recipe file names the method)."""
    from dancegen import api

    out = tmp_path_factory.mktemp("run")
    recipe = out / "r.yaml"
    recipe.write_text("method: dance-any-beat\n")
    rep = api.train(recipe, overrides=TINY + [f"data.root={world}"], out=out / "run")
    return rep


def _cfg(world, *extra):
    from dancegen.methods.dance_any_beat.config import load_recipe

    return load_recipe(None, TINY + [f"data.root={world}", *extra])


def test_recipes_load_and_reject_unknown_keys(tmp_path):
    from dancegen.methods.dance_any_beat.config import load_recipe

    cfg = load_recipe("recipes/dance_any_beat/tiny_synth.yaml")
    assert cfg.music.encoder == "scratch" and cfg.data.num_frames == 16 and cfg.model.diffusion.timesteps == 1000
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: dance-any-beat\nmusic: {beat: true}\n")
    with pytest.raises(InputError, match="beat") as e:
        load_recipe(bad)
    assert "bad.yaml" in str(e.value)
    with pytest.raises(InputError, match="multiple of"):
        load_recipe(None, ["data.resolution=36"])


def test_data_split_by_music_and_music_windows(world):
    from dancegen.methods.dance_any_beat.data import FramePairs, MusicClips, list_aist_videos

    cfg = _cfg(world)
    train = list_aist_videos(world, "train", cfg.data.test_music)
    test = list_aist_videos(world, "test", cfg.data.test_music)
    assert [v.music for v in test] == ["mBR0"] and all(v.music != "mBR0" for v in train) and len(train) == 3
    clips = MusicClips(cfg, "train")
    item = clips[1]
    s = item["start"]
    assert item["frames"].shape == (8, 3, 32, 32) and item["ref"].shape == (3, 32, 32)
    assert float(item["frames"].min()) >= 0 and float(item["frames"].max()) <= 1
    feats = clips.cache.features(clips.videos[item["video"]].music)
    # the clip's music is the song's features of frames s+1 .. s+8, beat column last and equal to the beat vector
    np.testing.assert_array_equal(item["beats"].numpy(), feats["beat"][s + 1:s + 9].max(axis=1))
    np.testing.assert_array_equal(item["features"][:, -1].numpy(), item["beats"].numpy())
    np.testing.assert_allclose(item["features"][:, :8].numpy(), feats["mel"][s + 1:s + 9])
    frames = clips.cache.video(clips.videos[item["video"]])
    np.testing.assert_allclose(item["ref"].numpy(), np.moveaxis(frames[s], -1, 0) / 255.0, atol=1e-6)
    pairs = FramePairs(cfg, "train", pairs_per_video=5)
    assert len(pairs) == 15 and pairs[7]["ref"].shape == (3, 32, 32)
    assert torch.equal(pairs[7]["dri"], pairs[7]["dri"])  # seeded per index


def test_beats_off_removes_the_beat_column_and_vector(world):
    from dancegen.methods.dance_any_beat.model import DanceAnyBeatModel, feature_dim

    on, off = _cfg(world), _cfg(world, "music.beats=false")
    assert feature_dim(on) == feature_dim(off) + 1
    m_on, m_off = DanceAnyBeatModel(on), DanceAnyBeatModel(off)
    assert m_on.cond_dim == m_off.cond_dim + on.data.num_frames  # e_b is N wide (spec §2.2)


def test_training_stages_export_models_and_freeze_lfae(trained, world):
    from safetensors.torch import load_file

    from dancegen.methods.dance_any_beat.model import DanceAnyBeatModel

    stages = trained["stages"]
    assert stages["lfae"]["steps"] == 3 and stages["diffusion"]["steps"] == 3
    lfae_only = load_file(Path(stages["lfae"]["dir"]) / "model" / "model.safetensors")
    final = load_file(Path(trained["model"]) / "model.safetensors")
    lfae_keys = [k for k in final if k.startswith("lfae.")]
    assert lfae_keys and all(torch.equal(lfae_only[k], final[k]) for k in lfae_keys)  # stage 2 keeps the LFAE
    unet_keys = [k for k in final if k.startswith("unet.") and final[k].is_floating_point()]
    assert any(not torch.equal(lfae_only[k], final[k]) for k in unet_keys)  # and trains the U-Net
    m = DanceAnyBeatModel.from_pretrained(trained["output_dir"])
    assert not m.training and all(not p.requires_grad for p in m.parameters())


def test_save_load_roundtrip_gives_the_same_denoiser(trained):
    from dancegen.methods.dance_any_beat.model import DanceAnyBeatModel

    a = DanceAnyBeatModel.from_pretrained(trained["model"])
    b = DanceAnyBeatModel.from_pretrained(trained["model"])
    x = torch.randn(1, 3, 8, 8, 8)
    z0 = torch.randn(1, a.lfae.latent_channels, 8, 8)
    cond = torch.randn(1, a.cond_dim)
    fc = torch.randn(1, 8, a.frame_cond_dim)
    t = torch.tensor([500])
    torch.testing.assert_close(a.unet(x, t, z0, cond, fc), b.unet(x, t, z0, cond, fc))
    with pytest.raises(InputError, match="cannot change"):
        DanceAnyBeatModel.from_pretrained(trained["model"], overrides=["music.dim=32"])


def test_chained_clips_continue_across_seams(trained):
    from dancegen.methods.dance_any_beat.model import DanceAnyBeatModel
    from dancegen.methods.dance_any_beat.pipeline import clip_starts, sample_flows

    assert clip_starts(8, 8, 2) == [0] and clip_starts(9, 8, 2) == [0, 6] and clip_starts(20, 8, 2) == [0, 6, 12]
    m = DanceAnyBeatModel.from_pretrained(trained["model"])
    feats = np.random.default_rng(0).random((20, m.music.config.in_dim)).astype(np.float32)
    beats = np.zeros(20, np.float32)
    beats[::5] = 1
    ref = torch.rand(1, 3, 32, 32)
    seen = []
    a0 = sample_flows(m, ref, feats, beats, generator=torch.Generator().manual_seed(0),
                      progress=lambda i, n: seen.append((i, n)))
    assert a0.shape == (1, 3, 20, 8, 8) and torch.isfinite(a0).all()
    assert seen[-1] == (9, 9)  # 3 clips x 3 DDIM steps
    b0 = sample_flows(m, ref, feats, beats, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(a0, b0)  # seeded
    # the second clip was sampled with its first 2 frames fixed to the first clip's last 2: recompute clip 1 alone
    one = sample_flows(m, ref, feats[:8], beats[:8], generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(a0[:, :, :8], one)


def test_normalized_targets_train_save_and_chain(world, tmp_path):
    """`model.diffusion.target: normalized`: train fills in the statistics, the targets come out standardised, the
    mapping inverts, and chained clips still hold the previous clip's frames exactly (in a0 space)."""
    from torch.utils.data import default_collate

    from dancegen import api
    from dancegen.methods.dance_any_beat.data import MusicClips
    from dancegen.methods.dance_any_beat.lfae import identity_grid
    from dancegen.methods.dance_any_beat.model import DanceAnyBeatModel
    from dancegen.methods.dance_any_beat.pipeline import sample_flows
    from dancegen.methods.dance_any_beat.train import target_statistics

    recipe = tmp_path / "r.yaml"
    recipe.write_text("method: dance-any-beat\nmodel: {diffusion: {target: normalized}}\n")
    rep = api.train(recipe, overrides=TINY + [f"data.root={world}"], out=tmp_path / "run")
    m = DanceAnyBeatModel.from_pretrained(rep["model"])
    stats = m.config.model.diffusion.target_stats
    assert stats is not None and stats[0] > 0 and stats[2] > 0 and -1 <= stats[1] <= 1
    saved = yaml.safe_load((tmp_path / "run" / "recipe.yaml").read_text())
    assert saved["model"]["diffusion"]["target_stats"] == pytest.approx(stats)
    big = torch.full((1, 3, 2, 8, 8), 1e3)  # x0 far outside: thresholded as a0 (each value back inside [-1, 1])
    assert m.from_diffusion(m.diffusion.dynamic_threshold(big)).abs().max().item() == pytest.approx(1.0, abs=1e-5)
    data = MusicClips(m.config, "train")
    assert target_statistics(m, data) == pytest.approx(stats, rel=1e-6)  # deterministic: a resume agrees
    clips = default_collate([data[i] for i in range(len(data))])  # the tiny world has fewer than 64 clips: all
    with torch.no_grad():
        x = m.to_diffusion(m.flow_targets(clips["ref"], clips["frames"])[1])
    assert x[:, :2].pow(2).mean().sqrt().item() == pytest.approx(1.0, rel=1e-4)
    assert x[:, 2].mean().item() == pytest.approx(0.0, abs=1e-4) and x[:, 2].std().item() == pytest.approx(1, rel=1e-3)
    ident = torch.cat([identity_grid(8, 8).permute(0, 3, 1, 2), torch.ones(1, 1, 8, 8)], 1)[:, :, None]
    still = m.to_diffusion(ident)  # no motion, all visible: zero flow offset
    assert still[:, :2].abs().max().item() < 1e-4
    torch.testing.assert_close(m.from_diffusion(still), ident)
    feats = np.random.default_rng(1).random((14, m.music.config.in_dim)).astype(np.float32)
    beats = (np.arange(14) % 4 == 0).astype(np.float32)
    ref = torch.rand(1, 3, 32, 32)
    a0 = sample_flows(m, ref, feats, beats, generator=torch.Generator().manual_seed(0))
    one = sample_flows(m, ref, feats[:8], beats[:8], generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(a0[:, :, :8], one)  # clip 2 started from clip 1's frames 6, 7 ...
    assert a0.shape == (1, 3, 14, 8, 8) and torch.isfinite(a0).all()


def test_flow_space_resampling():
    from dancegen.methods.dance_any_beat.lfae import identity_grid
    from dancegen.methods.dance_any_beat.pipeline import resample_flows

    a0 = torch.randn(1, 3, 6, 4, 4)
    torch.testing.assert_close(resample_flows(a0, 10, 10, 6), a0)
    twice = resample_flows(a0, 10, 20, 12)
    torch.testing.assert_close(twice[:, :, 1::2], a0)  # every other frame is an original one
    torch.testing.assert_close(twice[:, :, 2], (a0[:, :, 0] + a0[:, :, 1]) / 2)
    ident = identity_grid(4, 4).permute(0, 3, 1, 2)
    torch.testing.assert_close(twice[:, :2, 0], (ident + a0[:, :2, 0]) / 2)  # half way from the reference


def _tone(path, seconds, sr=22050, channels=1, silent=False, bpm=120.0):
    from dancegen.io.audio import write_audio

    t = np.arange(int(seconds * sr)) / sr
    y = np.zeros_like(t)
    if not silent:
        for b in np.arange(0, seconds, 60 / bpm):
            i = int(b * sr)
            y[i:i + 800] += np.exp(-np.arange(min(800, y.size - i)) / 150) * np.sin(2 * np.pi * 120 * t[:min(800, y.size - i)])
        y += 0.05 * np.sin(2 * np.pi * 330 * t)
    y = np.stack([y] * channels, 1) if channels > 1 else y
    write_audio(path, 0.8 * y, sr)
    return path


def test_music2dance_cli_length_audio_and_bad_inputs(trained, world, tmp_path):
    from dancegen.io.video import read_video, video_info

    runner = CliRunner()
    ref = next((world / "videos").glob("*.mp4"))
    from dancegen.io.video import write_image

    img = tmp_path / "ref.png"
    write_image(img, read_video(ref, max_frames=1).frames[0])
    song = _tone(tmp_path / "stereo44k.wav", 2.35, sr=44100, channels=2)
    out = tmp_path / "dance.mp4"
    r = runner.invoke(app, ["music2dance", str(song), "--ref", str(img), "-o", str(out), "--model", trained["model"]])
    assert r.exit_code == 0, r.output
    v = read_video(out, with_audio=True)
    assert len(v.frames) == 23 and v.fps == pytest.approx(10)  # floor(2.35 s x 10 fps) frames, frame 0 the reference
    assert v.audio is not None and abs(v.audio.shape[0] / v.sample_rate - 2.35) < 0.05
    assert (tmp_path / "dance.recipe.yaml").is_file()
    r = runner.invoke(app, ["--seed", "77", "music2dance", str(song), "--ref", str(img), "-o",
                            str(tmp_path / "d25.mp4"), "--model", trained["model"], "--fps", "25", "--seconds", "1"])
    assert r.exit_code == 0, r.output
    assert video_info(tmp_path / "d25.mp4")["num_frames"] == 25
    # issue 15: the recipe next to the video records the seed that made it (it kept the recipe's own before)
    assert yaml.safe_load((tmp_path / "d25.recipe.yaml").read_text())["inference"]["seed"] == 77
    # choreograph anyone: the person of --ref replaces the scene's dancer; the composite is saved and used
    box = np.zeros((32, 32, 3), np.uint8)
    box[6:30, 10:22] = 255
    write_image(tmp_path / "m.png", box)
    r = runner.invoke(app, ["music2dance", str(song), "--ref", str(img), "-o", str(tmp_path / "anyone.mp4"),
                            "--model", trained["model"], "--seconds", "1", "--scene", str(img),
                            "--ref-mask", str(tmp_path / "m.png"), "--scene-mask", str(tmp_path / "m.png")])
    assert r.exit_code == 0, r.output
    from dancegen.io.video import read_image

    assert read_image(tmp_path / "anyone.reference.png").shape == (32, 32, 3)
    cases = [(_tone(tmp_path / "silent.wav", 2.0, silent=True), "silent"),
             (_tone(tmp_path / "short.wav", 0.2), "too short"),
             (tmp_path / "missing.wav", "not found")]
    bad = tmp_path / "corrupt.wav"
    bad.write_bytes(b"RIFF0000WAVEjunk")
    cases.append((bad, "cannot decode"))
    for path, msg in cases:
        dst = tmp_path / f"x_{Path(path).stem}.mp4"
        r = runner.invoke(app, ["music2dance", str(path), "--ref", str(img), "-o", str(dst),
                                "--model", trained["model"]])
        assert r.exit_code == 2 and msg in r.output and "Traceback" not in r.output, (path, r.output)
        assert len(r.output.strip().splitlines()) == 1 and not dst.exists()
    r = runner.invoke(app, ["music2dance", str(song), "--ref", str(img), "-o", str(tmp_path / "x.gif"),
                            "--model", trained["model"]])
    assert r.exit_code == 2 and "mp4" in r.output


def test_music2dance_long_mono_16k_song_keeps_its_length(trained, world, tmp_path):
    """A 75 s mono 16 kHz track: 750 frames from 125 chained clips, audio and video as long as the music."""
    from dancegen import api
    from dancegen.io.video import read_video, write_image

    img = tmp_path / "ref.png"
    write_image(img, read_video(next((world / "videos").glob("*.mp4")), max_frames=1).frames[0])
    song = _tone(tmp_path / "long.wav", 75.0, sr=16000)
    rep = api.music2dance(song, img, tmp_path / "long.mp4", model=trained["model"], steps=1)
    assert rep["frames"] == 750 and rep["clips"] == 125
    v = read_video(tmp_path / "long.mp4", with_audio=True)
    assert len(v.frames) == 750 and abs(v.audio.shape[0] / v.sample_rate - 75.0) < 0.05


def test_bundle_tool_halves_weights_and_loads_back(trained, tmp_path):
    from safetensors.torch import load_file

    from dancegen.core.bundle import bundle_model
    from dancegen.methods.dance_any_beat.model import DanceAnyBeatModel

    out = bundle_model(trained["model"], "dab-test", root=tmp_path)
    assert not any(p.name.startswith(".") for p in out.rglob("*"))  # package data: no atomic_dir marker or leftovers
    out = bundle_model(trained["model"], "dab-test", root=tmp_path)  # a second bundling replaces the first
    half = load_file(out / "model.safetensors")
    assert all(v.dtype == torch.float16 for v in half.values() if v.is_floating_point())
    full = load_file(Path(trained["model"]) / "model.safetensors")
    assert (out / "model.safetensors").stat().st_size < 0.6 * (Path(trained["model"]) / "model.safetensors").stat().st_size
    assert set(half) == set(full) and all(torch.equal(half[k], full[k]) for k in full if not full[k].is_floating_point())
    a, b = DanceAnyBeatModel.from_pretrained(trained["model"]), DanceAnyBeatModel.from_pretrained(out)
    assert next(b.parameters()).dtype == torch.float32  # cast back on load
    x = torch.rand(1, 3, 32, 32)
    torch.testing.assert_close(b.lfae.encode(x), a.lfae.encode(x), atol=2e-2, rtol=2e-2)

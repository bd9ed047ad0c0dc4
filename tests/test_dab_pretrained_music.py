"""Dance Any Beat with the paper's pretrained music branches (CLAP + Wav2CLIP, frozen, with trained adapters), end to
end at toy size and offline: adapters -> lfae -> diffusion, the embedding cache, music2dance, the refusals.

Backbones are random and tiny, built from config: a ClapModel (HTSAT + 1-layer RoBERTa) with a 512-d joint space (so
that it matches Wav2CLIP's fixed 512), Wav2CLIP's own network with random weights saved as a checkpoint, and a tiny
CLIPModel for the Wav2CLIP adapter's frame targets.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from test_dab_pipeline import TINY, _tone
from tests_helpers import save_tiny_clip

from dancegen.errors import InputError
from dancegen.methods.dance_any_beat import music as mu
from dancegen.methods.dance_any_beat import pretrained as pt

EPOCHS = 6
BASE = [o for o in TINY if not o.startswith(("music.encoder=", "music.per_frame=", "train.stages="))]
STAGES = ("train.stages=[{name: adapters, steps: 1, lr: 2.0e-3, batch_size: 6}, {name: lfae, steps: 2, batch_size: 2}, "
          "{name: diffusion, steps: 2, batch_size: 2}]")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """4 synthetic AIST++-layout clips (4 genres and tracks, 32 px, 3.2 s at 10 fps); mBR0 is the test track."""
    from tests_helpers import synth_aist_world

    return synth_aist_world(tmp_path_factory.mktemp("aist"))


@pytest.fixture(scope="module")
def backbones(tmp_path_factory):
    """Folders / files of a tiny random CLAP (512-d joint space), Wav2CLIP (random init) and CLIP (16-d)."""
    from tests_helpers import save_tiny_clap

    from dancegen.metrics.backbones.wav2clip import Wav2CLIP

    root = tmp_path_factory.mktemp("backbones")
    save_tiny_clap(root / "clap", 512)
    torch.manual_seed(0)
    torch.save(Wav2CLIP().state_dict(), root / "Wav2CLIP.pt")
    save_tiny_clip(root / "clip", projection_dim=16)
    return {"clap": root / "clap", "wav2clip": root / "Wav2CLIP.pt", "clip": root / "clip"}


def _sets(world, backbones, *extra) -> list[str]:
    return BASE + [f"data.root={world}", "music.encoder=clap+wav2clip", "music.per_frame=false",
                   f"music.clap={backbones['clap']}", f"music.wav2clip={backbones['wav2clip']}",
                   f"music.clip={backbones['clip']}", f"music.adapter_epochs={EPOCHS}", STAGES, *extra]


def _cfg(world, backbones, *extra):
    from dancegen.methods.dance_any_beat.config import load_recipe

    return load_recipe(None, _sets(world, backbones, *extra))


@pytest.fixture(scope="module")
def trained(world, backbones, tmp_path_factory):
    """adapters (6 epochs) -> lfae (2 steps) -> diffusion (2 steps) through `dancegen.api.train`."""
    from dancegen import api

    out = tmp_path_factory.mktemp("run")
    recipe = out / "r.yaml"
    recipe.write_text("method: dance-any-beat\n")
    return api.train(recipe, overrides=_sets(world, backbones), out=out / "run")


def test_stages_run_in_order_and_the_adapters_stay_frozen(trained):
    out = Path(trained["output_dir"])
    assert sorted(p.name for p in out.glob("stage-*")) == ["stage-1-adapters", "stage-2-lfae", "stage-3-diffusion"]
    rep = trained["stages"]["adapters"]
    assert rep["clips"] == 18 and rep["epochs"] == EPOCHS  # 3 training videos x 6 windows (stride 4, 9 frames)
    assert rep["clap"]["chance"] == pytest.approx(1 / 3)  # 3 training genres: 3 captions
    assert rep["wav2clip"]["chance"] == pytest.approx(1 / 18)  # every clip's own frames
    saved = json.loads((out / "stage-1-adapters" / "adapters.json").read_text())
    for branch in ("clap", "wav2clip"):
        losses = saved["losses"][branch]
        assert len(losses) == EPOCHS and losses[-1] < losses[0]  # (random backbones: little to learn, see below)
        assert rep[branch]["loss"] == losses[-1] and 0.0 <= rep[branch]["retrieval_accuracy"] <= 1.0
    after_adapters = load_file(out / "stage-1-adapters" / "model" / "model.safetensors")
    after_lfae = load_file(out / "stage-2-lfae" / "model" / "model.safetensors")
    final = load_file(Path(trained["model"]) / "model.safetensors")
    keys = [k for k in final if k.startswith(("clap_adapter.", "wav2clip_adapter."))]
    assert len(keys) == 8 and final["clap_adapter.fc1.weight"].shape == (512, 512)
    assert all(torch.equal(after_adapters[k], final[k]) for k in keys)  # frozen through lfae and diffusion
    # the model's adapters are the audio sides of the fitted pairs
    for branch in ("clap", "wav2clip"):
        pair = mu.ContrastiveAdapterPair.from_pretrained(out / "stage-1-adapters" / "adapters" / branch)
        for name, v in pair.audio.state_dict().items():
            torch.testing.assert_close(final[f"{branch}_adapter.{name}"], v, rtol=0, atol=0)
    unet = [k for k in final if k.startswith("unet.") and final[k].is_floating_point()]
    assert any(not torch.equal(after_lfae[k], final[k]) for k in unet)  # while the U-Net trained
    lfae = [k for k in final if k.startswith("lfae.")]
    assert any(not torch.equal(after_adapters[k], after_lfae[k]) for k in lfae)


def test_embedding_cache_is_written_and_read_back(trained, world, backbones, monkeypatch):
    from dancegen.io.audio import read_audio
    from dancegen.methods.dance_any_beat.data import MusicClips

    cfg = _cfg(world, backbones)
    clips = MusicClips(cfg, "train")
    ref = str(Path(backbones["clap"]).resolve())
    folder = world / ".dancegen_cache" / f"clap-{hashlib.sha1(ref.encode()).hexdigest()}"
    files = sorted(p.stem for p in folder.glob("*.npz"))
    assert files == sorted({v.music for v in clips.videos})
    vi, s = clips.index[4]
    music = clips.videos[vi].music
    with np.load(folder / f"{music}.npz") as z:
        cached = {k: z[k] for k in z.files}
    assert set(cached) == {pt.window_key(st, 8, 10) for v2, st in clips.index if clips.videos[v2].music == music}
    # reference value: the CLAP embedding of the wav's samples [(s+1)/10, (s+9)/10) s at its own rate
    samples, sr = read_audio(world / "wavs" / f"{music}.wav", sr=None, mono=True)
    window = samples[int(round((s + 1) / 10 * sr)):int(round((s + 9) / 10 * sr))]
    direct = mu.clap_audio_embedding(window, sr, backbones["clap"])
    np.testing.assert_allclose(cached[pt.window_key(s, 8, 10)], direct, atol=1e-5)
    w2c = pt.cache_path(world, "wav2clip", str(backbones["wav2clip"].resolve()), music)
    with np.load(w2c) as z:
        direct = mu.wav2clip_embedding(window, sr, backbones["wav2clip"])
        np.testing.assert_allclose(z[pt.window_key(s, 8, 10)], direct, atol=1e-5)

    # a second run reads the cache: no backbone is loaded or called
    def boom(*a, **k):
        raise AssertionError("a backbone ran although the embeddings are cached")

    for name in ("clap_audio_embedding", "wav2clip_embedding", "load_clap"):
        monkeypatch.setattr(mu, name, boom)
    again = MusicClips(cfg, "train")
    item = again[4]
    assert item["clap"].shape == (512,) and item["clap"].dtype == torch.float32
    np.testing.assert_array_equal(item["clap"].numpy(), cached[pt.window_key(s, 8, 10)])
    assert item["wav2clip"].shape == (512,)
    assert again.cache._encoders is None or again.cache._encoders._clap is None


def test_inference_windows_match_the_training_windows(trained, world, backbones):
    """`FrozenMusicEncoders.window_embeddings` (the pipeline) gives the cached training embedding of the same clip."""
    from dancegen.io.audio import read_audio
    from dancegen.methods.dance_any_beat.data import _AistCache, list_aist_videos

    cfg = _cfg(world, backbones)
    cache = _AistCache(world, cfg)
    music = sorted({v.music for v in list_aist_videos(world, "train", cfg.data.test_music)})[0]
    samples, sr = read_audio(world / "wavs" / f"{music}.wav", sr=None, mono=True)
    enc = pt.FrozenMusicEncoders(cfg.music)
    got = enc.window_embeddings(samples, sr, [0, 4], 8, 10.0)
    for branch in ("clap", "wav2clip"):
        assert got[branch].shape == (2, 512)
        np.testing.assert_allclose(got[branch][1], cache.embedding(branch, music, 4), atol=1e-5)
    # past the end of the song the window is zero-padded to its full length
    w = pt.audio_window(np.ones(100, np.float32), 100, 9, 3, 10.0)
    assert w.shape == (30,) and w[:10].sum() == 10 and not w[10:].any()


def test_music2dance_with_the_pretrained_model(trained, world, tmp_path):
    from typer.testing import CliRunner

    from dancegen.cli import app
    from dancegen.io.video import read_video, write_image
    from dancegen.methods.dance_any_beat.model import DanceAnyBeatModel
    from dancegen.methods.dance_any_beat.pipeline import sample_flows

    img = tmp_path / "ref.png"
    write_image(img, read_video(next((world / "videos").glob("*.mp4")), max_frames=1).frames[0])
    song = _tone(tmp_path / "song.wav", 1.55, sr=44100, channels=2)
    out = tmp_path / "dance.mp4"
    r = CliRunner().invoke(app, ["music2dance", str(song), "--ref", str(img), "-o", str(out),
                                 "--model", trained["model"]])
    assert r.exit_code == 0, r.output
    v = read_video(out, with_audio=True)
    assert len(v.frames) == 15 and v.audio is not None  # floor(1.55 s x 10 fps), frame 0 the reference
    m = DanceAnyBeatModel.from_pretrained(trained["model"], overrides=[f"music.clip={tmp_path}"])  # a location
    with pytest.raises(InputError, match="cannot change"):
        DanceAnyBeatModel.from_pretrained(trained["model"], overrides=["music.embed_dim=32"])
    feats, beats = np.zeros((8, 1), np.float32), np.zeros(8, np.float32)
    with pytest.raises(InputError, match=r"clap and wav2clip: pass the song as audio="):
        sample_flows(m, torch.rand(1, 3, 32, 32), feats, beats)


def test_a_finished_adapters_stage_is_reused(trained, world, backbones, tmp_path, monkeypatch):
    import shutil

    from dancegen import api

    def boom(*a, **k):
        raise AssertionError("the adapters were fitted again")

    src = Path(trained["output_dir"]) / "stage-1-adapters"
    shutil.copytree(src, tmp_path / "run" / "stage-1-adapters")
    monkeypatch.setattr(mu, "fit_adapters", boom)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("method: dance-any-beat\n")
    rep = api.train(recipe, overrides=_sets(world, backbones, "train.run=[adapters]"), out=tmp_path / "run")
    assert rep["stages"]["adapters"]["clap"] == trained["stages"]["adapters"]["clap"]
    before, now = load_file(src / "model" / "model.safetensors"), load_file(Path(rep["model"]) / "model.safetensors")
    assert all(torch.equal(before[k], now[k]) for k in now if k.startswith(("clap_adapter.", "wav2clip_adapter.")))


def test_diffusion_needs_trained_adapters(world, backbones, tmp_path):
    from dancegen import api
    from dancegen.methods.dance_any_beat.model import DanceAnyBeatModel
    from dancegen.methods.dance_any_beat.train import check_adapters_trained

    recipe = tmp_path / "r.yaml"
    recipe.write_text("method: dance-any-beat\n")
    with pytest.raises(InputError, match="clap and wav2clip adapter.*run the adapters stage"):
        api.train(recipe, overrides=_sets(world, backbones, "train.run=[lfae, diffusion]"), out=tmp_path / "run")
    assert not list((tmp_path / "run").glob("stage-*"))  # refused before the LFAE stage spent any time
    cfg = _cfg(world, backbones, "music.encoder=clap")
    check_adapters_trained(cfg, ["diffusion"], {"clap"})  # adapters from model.init_from
    check_adapters_trained(cfg, ["adapters", "diffusion"], set())
    check_adapters_trained(_cfg(world, backbones, "music.encoder=scratch"), ["diffusion"], set())
    with pytest.raises(InputError, match="clap adapter"):
        check_adapters_trained(cfg, ["lfae", "diffusion"], {"wav2clip"})
    with pytest.raises(InputError, match="adapters must come before diffusion"):
        _cfg(world, backbones, "train.stages=[{name: diffusion, steps: 1}, {name: adapters, steps: 1}]")
    # embed_dim is the adapters' input width; the condition still counts the paper's 512 per branch
    m = DanceAnyBeatModel(_cfg(world, backbones, "music.embed_dim=32"))
    assert m.clap_adapter.fc1.in_features == 32 and m.wav2clip_adapter.fc2.out_features == 512
    assert m.cond_dim == 2 * 512 + 8


def test_embed_dim_must_match_the_backbone(trained, world, backbones):
    from dancegen.methods.dance_any_beat.data import MusicClips

    clips = MusicClips(_cfg(world, backbones, "music.embed_dim=32"), "train")
    with pytest.raises(InputError, match=r"music.embed_dim is 32 .* gives 512-d embeddings; set music.embed_dim=512"):
        clips[0]


def test_adapters_stage_learns_genre_captions_from_informative_embeddings(world, backbones, tmp_path, monkeypatch):
    """With stand-in backbones that carry information (the random tiny ones give near-identical vectors), the stage
    learns: every training clip retrieves its own genre's caption (chance 1/3), so clips, genres and captions are
    wired together, and both contrastive losses fall well below their start."""
    from dancegen.methods.dance_any_beat.config import StageConfig
    from dancegen.methods.dance_any_beat.data import _AistCache
    from dancegen.methods.dance_any_beat.model import DanceAnyBeatModel
    from dancegen.methods.dance_any_beat.train import fit_music_adapters, genre_caption

    rng = np.random.default_rng(0)
    audio_proj, image_proj = rng.standard_normal((32, 512)), rng.standard_normal((48, 16))
    captions: dict[str, np.ndarray] = {}

    def timbre(self, branch, clip, sr):  # log band energies of the window through a fixed projection
        bands = np.log([b.mean() + 1e-6 for b in np.array_split(np.abs(np.fft.rfft(clip)), 32)])
        e = ((bands - bands.mean()) / bands.std()) @ audio_proj
        return (e / np.linalg.norm(e)).astype(np.float32)

    def text(self, texts):
        return np.stack([captions.setdefault(t, rng.standard_normal(16)) for t in texts]).astype(np.float32)

    def pixels(self, frames):  # 4x4 mean colours of each frame through a fixed projection
        small = frames.reshape(len(frames), 4, 8, 4, 8, 3).mean(axis=(2, 4)).reshape(len(frames), 48) / 255.0
        return (small @ image_proj).astype(np.float32)

    monkeypatch.setattr(pt.FrozenMusicEncoders, "embed", timbre)
    monkeypatch.setattr(pt.FrozenMusicEncoders, "caption_embeddings", text)
    monkeypatch.setattr(pt.FrozenMusicEncoders, "image_embeddings", pixels)
    # other model refs than the real tiny backbones': their own cache folders
    cfg = _cfg(world, backbones, "music.clap=stand-in/clap", "music.wav2clip=stand-in-wav2clip",
               "music.adapter_epochs=30")
    torch.manual_seed(0)
    model = DanceAnyBeatModel(cfg)
    stage = StageConfig("adapters", steps=1, lr=2e-3, batch_size=6)
    rep = fit_music_adapters(model, cfg, stage, tmp_path / "stage", _AistCache(world, cfg), resume="never")
    losses = json.loads((tmp_path / "stage" / "adapters.json").read_text())["losses"]
    assert rep["clap"]["retrieval_accuracy"] == 1.0 and rep["clap"]["chance"] == pytest.approx(1 / 3)
    assert losses["clap"][-1] < 0.5 * losses["clap"][0] and losses["wav2clip"][-1] < 0.8 * losses["wav2clip"][0]
    assert rep["wav2clip"]["retrieval_accuracy"] > 2 * rep["wav2clip"]["chance"]  # its own frames among 18 clips
    assert sorted(captions) == sorted(genre_caption(g) for g in ("gPO", "gLO", "gMH"))
    assert genre_caption("gLH") == "a la-style hip-hop dance music"

"""Wav2CLIP backbone and the CS (clip-music) metric: published layout, strict reloads, preprocessing, evaluate."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from tests_helpers import save_tiny_clip

from dancegen.errors import DanceGenError, InputError, MissingWeightsError
from dancegen.metrics.backbones import wav2clip as w2c
from dancegen.metrics.backbones.common import load_strict, state_dict_signature

GOLDEN = json.loads((Path(__file__).parent / "fixtures" / "metrics_wav2clip" / "golden_keys.json").read_text())


def _published_layout(sd: dict) -> dict:
    """Our state dict renamed to the published Wav2CLIP.pt layout (audio_encoder.* / audio_transform.*)."""
    back = {ours: theirs for theirs, ours in w2c.CHECKPOINT_PREFIXES.items()}
    out = {}
    for k, v in sd.items():
        prefix = next(p for p in back if k.startswith(p))
        out[back[prefix] + k[len(prefix):]] = v
    return out


def _music(seconds: float = 1.0, sr: int = 16000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    tone = 0.3 * np.sin(2 * np.pi * 440 * t) * (np.sin(2 * np.pi * 2 * t) > 0)
    return (tone + 0.05 * rng.standard_normal(len(t))).astype(np.float32)


def test_state_dict_names_and_shapes_match_the_package():
    model = w2c.Wav2CLIP()
    assert state_dict_signature(model) == GOLDEN["resnet_extractor"]
    assert list(state_dict_signature(model)) == list(GOLDEN["resnet_extractor"])  # same order, too
    assert len(GOLDEN["checkpoint"]) == len(GOLDEN["resnet_extractor"]) == 125
    # the published layout maps onto ours one to one; keys of other training heads are ignored
    torch.manual_seed(0)
    ckpt = {k: torch.randn(v) if v else torch.tensor(3) for k, v in GOLDEN["checkpoint"].items()}
    ckpt["image_transform.sequential.0.weight"] = torch.zeros(512, 512)
    mapped = w2c.wav2clip_state_dict(ckpt)
    assert state_dict_signature(mapped) == GOLDEN["resnet_extractor"]
    load_strict(model, mapped)
    assert torch.equal(model.transform.sequential[3].weight, ckpt["audio_transform.sequential.3.weight"])
    assert torch.equal(model.encoder.layer4[1].bn2.running_var, ckpt["audio_encoder.layer4.1.bn2.running_var"])
    with pytest.raises(DanceGenError, match="not a Wav2CLIP checkpoint"):
        w2c.wav2clip_state_dict({"fc.weight": torch.zeros(2, 2)})


def test_random_init_gives_512_d_and_reloads_strictly(tmp_path):
    torch.manual_seed(0)
    a = w2c.load_wav2clip()
    assert not a.training
    audio = _music(1.0)
    e = w2c.embed_audio(a, audio, 16000)
    assert e.shape == (512,) and e.dtype == np.float32 and np.isfinite(e).all()
    torch.save(_published_layout(a.state_dict()), tmp_path / "Wav2CLIP.pt")
    b = w2c.load_wav2clip(tmp_path / "Wav2CLIP.pt")
    assert np.array_equal(w2c.embed_audio(b, audio, 16000), e)
    bad = _published_layout(a.state_dict())
    bad["audio_transform.sequential.3.weight"] = torch.zeros(256, 512)
    torch.save(bad, tmp_path / "bad.pt")
    with pytest.raises(DanceGenError, match="wrong shape.*transform.sequential.3.weight"):
        w2c.load_wav2clip(tmp_path / "bad.pt")


def test_front_end_is_torchaudio_spectrogram_and_batch_standardisation():
    import librosa

    y = _music(0.5)
    spec = w2c.Spectrogram()(torch.from_numpy(y)[None])
    ref = np.abs(librosa.stft(y, n_fft=512, hop_length=353, window="hann", center=True, pad_mode="reflect")) ** 2
    assert spec.shape == (1, 1, 257, 1 + len(y) // 353)
    np.testing.assert_allclose(spec[0, 0].numpy(), ref, rtol=1e-3, atol=1e-6 * ref.max())
    s = w2c.AudioResNet().log_spectrogram(torch.from_numpy(y)[None])
    logp = np.log(ref + 1e-7)
    np.testing.assert_allclose(s[0, 0].numpy(), (logp - logp.mean()) / logp.std(ddof=1), atol=1e-3)
    # the forward pass is log-spectrogram -> ResNet-18 trunk -> pool -> MLP (dropout inactive in eval)
    torch.manual_seed(0)
    m = w2c.Wav2CLIP().eval()
    x = torch.from_numpy(y)[None]
    with torch.no_grad():
        enc = m.encoder
        h = enc.maxpool(enc.relu(enc.bn1(enc.conv1(enc.log_spectrogram(x)))))
        h = enc.layer4(enc.layer3(enc.layer2(enc.layer1(h)))).mean(dim=(2, 3))
        lin0, lin1 = m.transform.sequential[0], m.transform.sequential[3]
        manual = lin1(torch.relu(lin0(h)))
        assert torch.allclose(m(x), manual, atol=1e-5)
        assert [type(t).__name__ for t in m.transform.sequential] == ["Linear", "ReLU", "Dropout", "Linear"]


def test_embed_audio_preprocessing():
    import librosa

    torch.manual_seed(0)
    m = w2c.load_wav2clip()
    y = _music(1.0, sr=22050)
    mono = w2c.embed_audio(m, y, 22050)
    at16 = librosa.resample(y, orig_sr=22050, target_sr=16000)
    np.testing.assert_allclose(mono, w2c.embed_audio(m, at16, 16000), atol=1e-6)
    stereo = np.stack([y, y], axis=1)
    np.testing.assert_allclose(w2c.embed_audio(m, stereo, 22050), mono, atol=1e-6)
    half = w2c.embed_audio(m, y, 22050, seconds=0.5)
    np.testing.assert_allclose(half, w2c.embed_audio(m, y[:11025], 22050), atol=1e-6)
    assert not np.allclose(half, mono)
    with pytest.raises(InputError, match="too short for Wav2CLIP"):
        w2c.embed_audio(m, np.zeros(256, np.float32), 16000)


class _FixedClip:
    """Stand-in CLIP embedder returning given (unnormalised) frame embeddings."""

    def __init__(self, emb):
        self.emb = np.asarray(emb, np.float32)

    def image_embeds(self, frames):
        return torch.from_numpy(self.emb[: len(frames)])


def test_clip_music_score_is_cosine_of_renormalised_mean():
    torch.manual_seed(0)
    m = w2c.load_wav2clip()
    rng = np.random.default_rng(1)
    frames = np.zeros((3, 8, 8, 3), np.uint8)
    emb = rng.normal(size=(3, 512)) * np.array([[1.0], [5.0], [0.2]])  # unequal norms: normalised before the mean
    audio = _music(1.0)
    a = w2c.embed_audio(m, audio, 16000).astype(np.float64)
    u = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    v = u.mean(0) / np.linalg.norm(u.mean(0))
    want = v @ a / np.linalg.norm(a)
    assert w2c.clip_music_score(frames, audio, 16000, _FixedClip(emb), m) == pytest.approx(want, abs=1e-6)
    # with fps, only the clip's own duration of music is used (3 frames at 6 fps = 0.5 s)
    a_half = w2c.embed_audio(m, audio[:8000], 16000).astype(np.float64)
    got = w2c.clip_music_score(frames, audio, 16000, _FixedClip(emb), m, fps=6.0)
    assert got == pytest.approx(v @ a_half / np.linalg.norm(a_half), abs=1e-6)
    with pytest.raises(DanceGenError, match="ViT-B/32.*768-d"):
        w2c.clip_music_score(frames, audio, 16000, _FixedClip(rng.normal(size=(3, 768))), m)


@pytest.fixture
def dance(tmp_path, monkeypatch):
    from dancegen.io.video import write_video
    from dancegen.synth import render_clip

    monkeypatch.setenv("DANCEGEN_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DANCEGEN_WEIGHTS_DIR", raising=False)
    clip = render_clip(seed=3, size=64, num_frames=8)
    write_video(tmp_path / "pred" / "d.mp4", clip.frames, fps=clip.fps, audio=clip.audio, sample_rate=clip.sample_rate)
    save_tiny_clip(tmp_path / "clip", projection_dim=512)
    return tmp_path


def test_evaluate_clip_music_end_to_end(dance):
    from dancegen.io.video import read_video
    from dancegen.metrics.backbones.clip import ClipEmbedder
    from dancegen.metrics.evaluate import evaluate

    rep = evaluate(["clip-music"], dance / "pred", out=dance / "rep.json", random_weights=True,
                   cs_clip_model=str(dance / "clip"))
    m = rep["metrics"]["clip-music"]
    assert m["higher_is_better"] and -1.0 <= m["value"] <= 1.0
    assert rep["videos"]["d"]["scores"]["clip-music"] == pytest.approx(m["value"])
    files = {b["name"]: b for b in m["protocol"]["backbones"]}
    assert files["wav2clip"]["note"] == "random init (testing)" and files["clip-cs"]["model"] == str(dance / "clip")
    assert files["clip-cs"]["sha256"] and "random" in m["protocol"]["warning"]
    # the same number from the pieces: decoded frames, the muxed track, fresh backbones with the same seed
    v = read_video(dance / "pred" / "d.mp4", with_audio=True)
    torch.manual_seed(0)
    direct = w2c.clip_music_score(v.frames, v.audio, v.sample_rate, ClipEmbedder(dance / "clip"), w2c.load_wav2clip(),
                                  fps=v.fps)
    assert m["value"] == pytest.approx(direct, abs=1e-6)
    again = evaluate(["clip-music"], dance / "pred", out=dance / "rep.json", random_weights=True,
                     cs_clip_model=str(dance / "clip"))
    assert again["metrics"]["clip-music"]["value"] == pytest.approx(m["value"])  # resumed from the cache


def test_clip_music_backbones_leave_the_global_rng_alone(dance, monkeypatch):
    """house-style §6: the random-init Wav2CLIP of `clip-music` is seeded locally. The caller's torch RNG state is
    unchanged and nothing is reseeded globally (CPU or CUDA); the score is the same as with fresh backbones built
    right after `torch.manual_seed(0)` (the earlier global reseeding), checked in the end-to-end test above."""
    from dancegen.metrics.evaluate import evaluate

    torch.manual_seed(1234)
    torch.rand(3)
    before = torch.get_rng_state()
    reseeds = []
    monkeypatch.setattr(torch, "manual_seed", lambda seed: reseeds.append(("torch", seed)))
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: reseeds.append(("cuda", seed)))
    rep = evaluate(["clip-music"], dance / "pred", random_weights=True, cs_clip_model=str(dance / "clip"))
    assert torch.equal(torch.get_rng_state(), before)
    assert reseeds == []
    assert -1.0 <= rep["metrics"]["clip-music"]["value"] <= 1.0


def test_missing_wav2clip_weights_say_file_and_source(dance):
    from dancegen.metrics.evaluate import evaluate

    with pytest.raises(MissingWeightsError, match=r"Wav2CLIP\.pt.*github\.com/descriptinc/lyrebird-wav2clip/releases"):
        evaluate(["clip-music"], dance / "pred", cs_clip_model=str(dance / "clip"))
    # Without a local CLIP ViT-B/32 the message names that model and where it is published.
    with pytest.raises(MissingWeightsError,
                       match=r"openai/clip-vit-base-patch32.*huggingface\.co/openai/clip-vit-base-patch32"):
        evaluate(["clip-music"], dance / "pred")


def test_clip_music_needs_music(tmp_path):
    from dancegen.io.video import write_video
    from dancegen.metrics.evaluate import evaluate

    write_video(tmp_path / "silent" / "s.mp4", np.zeros((4, 32, 32, 3), np.uint8), fps=8)
    with pytest.raises(InputError, match="needs music"):
        evaluate(["clip-music"], tmp_path / "silent", random_weights=True)


# ---- real weights (DANCEGEN_WEIGHTS_DIR) ----------------------------------------------------------------------------
@pytest.mark.slow
def test_real_wav2clip_loads_strictly_and_tells_sounds_apart():
    from dancegen.metrics.weights import resolve_weight

    rw = resolve_weight("wav2clip", weights_dir=os.environ.get("DANCEGEN_WEIGHTS_DIR"))
    m = w2c.load_wav2clip(rw.path)  # strict: every published tensor has its place
    music = w2c.embed_audio(m, _music(2.0), 16000)
    music2 = w2c.embed_audio(m, _music(2.0, seed=1), 16000)
    noise = w2c.embed_audio(m, np.random.default_rng(0).standard_normal(32000).astype(np.float32) * 0.3, 16000)

    def cos(x, y):
        return float(x @ y / np.linalg.norm(x) / np.linalg.norm(y))

    assert np.isfinite(music).all() and music.shape == (512,)
    assert cos(music, music2) > 0.9  # the same sound with different noise
    assert cos(music, noise) < cos(music, music2)

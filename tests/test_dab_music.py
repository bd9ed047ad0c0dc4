"""DabFusion music encoder: scratch encoder, InfoNCE (closed forms), adapters that learn, tiny CLAP / Wav2CLIP
embedding paths (offline, built from config) and the conditioning width De."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from dancegen.errors import MissingWeightsError
from dancegen.methods.dance_any_beat import music as mu

SR = 22050


# ---- scratch encoder ------------------------------------------------------------------------------------------------
def test_scratch_encoder_shapes_and_pooling(tmp_path):
    torch.manual_seed(0)
    enc = mu.ScratchMusicEncoder(in_dim=10, dim=16, layers=3).eval()
    x = torch.randn(2, 8, 10, generator=torch.Generator().manual_seed(1))
    pooled, per_frame = enc(x)
    assert pooled.shape == (2, 16) and per_frame.shape == (2, 8, 16)
    torch.testing.assert_close(pooled, per_frame.mean(dim=1))
    mask = torch.zeros(2, 8, dtype=torch.bool)
    mask[0, :5], mask[1, :] = True, True
    pooled_m, _ = enc(x, mask)
    torch.testing.assert_close(pooled_m[0], per_frame[0, :5].mean(dim=0))
    torch.testing.assert_close(pooled_m[1], pooled[1])
    assert [b.conv1.dilation[0] for b in enc.blocks] == [1, 2, 4]
    # batch items are independent; save/load (ModelMixin) reproduces the outputs
    torch.testing.assert_close(enc(x[1:])[1], per_frame[1:])
    enc.save_pretrained(tmp_path / "enc")
    again = mu.ScratchMusicEncoder.from_pretrained(tmp_path / "enc").eval()
    torch.testing.assert_close(again(x)[1], per_frame)
    with pytest.raises(ValueError, match="odd"):
        mu.ScratchMusicEncoder(10, kernel_size=4)


def test_scratch_encoder_kernel5_learns_beat_positions():
    """A 5-tap encoder trained for a few steps tells frames with a beat from frames without (loss falls 10x)."""
    torch.manual_seed(0)
    enc = mu.ScratchMusicEncoder(in_dim=4, dim=16, layers=2, kernel_size=5)
    head = torch.nn.Linear(16, 1)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 12, 4, generator=g) * 0.1
    beat = (torch.rand(16, 12, generator=g) < 0.3).float()
    x[..., 0] += beat
    opt = torch.optim.Adam([*enc.parameters(), *head.parameters()], lr=1e-2)
    losses = []
    for _ in range(60):
        loss = F.binary_cross_entropy_with_logits(head(enc(x)[1])[..., 0], beat)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.1 * losses[0]


def test_mlp_adapter():
    torch.manual_seed(0)
    a = mu.MLPAdapter()
    assert a(torch.randn(3, 512)).shape == (3, 512)
    assert [m.__class__.__name__ for m in a.children()] == ["Linear", "Linear"]
    assert mu.MLPAdapter(8, 16, 4)(torch.randn(2, 5, 8)).shape == (2, 5, 4)


# ---- InfoNCE --------------------------------------------------------------------------------------------------------
def test_info_nce_closed_forms():
    s = 3.0
    eye = torch.eye(4, dtype=torch.float64)
    expected = -math.log(math.exp(s) / (math.exp(s) + 3))  # one positive at cos 1, three negatives at cos 0
    assert float(mu.info_nce(eye, 3.0 * eye, s)) == pytest.approx(expected, rel=1e-6)  # scale-free (L2-normalised)
    assert float(mu.info_nce(eye, eye, s, labels=torch.arange(4))) == pytest.approx(expected, rel=1e-6)
    # shared targets: rows 0,1 and rows 2,3 are positives of each other -> uniform target over the two
    grouped = torch.stack([eye[0], eye[0], eye[1], eye[1]])
    got = float(mu.info_nce(grouped, grouped, s, labels=torch.tensor([0, 0, 1, 1])))
    assert got == pytest.approx(-(s - math.log(2 * math.exp(s) + 2)), rel=1e-6)
    # symmetric: swapping the two sides gives the same loss
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    torch.testing.assert_close(mu.info_nce(a, b, 14.3), mu.info_nce(b, a, 14.3))


def _paired(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random 'audio' embeddings and targets that depend on them (a fixed nonlinear map plus noise)."""
    rng = np.random.default_rng(seed)
    audio = rng.standard_normal((n, 32)).astype(np.float32)
    w = np.random.default_rng(99).standard_normal((32, 24)) / np.sqrt(32)
    target = (np.tanh(audio @ w) + 0.3 * rng.standard_normal((n, 24))).astype(np.float32)
    return audio, target


def _retrieval_accuracy(pair: mu.ContrastiveAdapterPair, audio: np.ndarray, target: np.ndarray) -> float:
    with torch.no_grad():
        a = pair.encode_audio(torch.from_numpy(audio))
        t = F.normalize(pair.target(torch.from_numpy(target)), dim=-1)
    return float(((a @ t.t()).argmax(dim=1) == torch.arange(len(audio))).float().mean())


def test_adapters_learn_paired_embeddings():
    audio, target = _paired(640)
    pair, losses = mu.fit_adapters(audio[:512], target[:512], epochs=40, lr=1e-3, batch_size=128, hidden=64,
                                   out_dim=64)
    assert len(losses) == 40 and losses[-1] < 0.1 * losses[0]
    untrained, _ = mu.fit_adapters(audio[:512], target[:512], epochs=0, hidden=64, out_dim=64)
    chance = 1 / 128
    assert _retrieval_accuracy(untrained, audio[512:], target[512:]) < 5 * chance
    assert _retrieval_accuracy(pair, audio[512:], target[512:]) > 0.5  # held-out pairs, 64x chance
    assert float(pair.logit_scale.detach()) != pytest.approx(1 / 0.07)  # the temperature is learned
    assert float(untrained.logit_scale.detach()) == pytest.approx(1 / 0.07)
    again, losses2 = mu.fit_adapters(audio[:512], target[:512], epochs=3, lr=1e-3, batch_size=128, hidden=64,
                                     out_dim=64)
    assert losses2 == losses[:3]  # seeded: init and shuffling


def test_adapters_with_shared_caption_targets():
    """The CLAP objective: 10 genre captions shared by many clips; identical targets are grouped automatically."""
    rng = np.random.default_rng(0)
    captions = rng.standard_normal((10, 24)).astype(np.float32)
    centroids = rng.standard_normal((10, 32)).astype(np.float32)
    genre = rng.integers(0, 10, 400)
    audio = (centroids[genre] + 0.8 * rng.standard_normal((400, 32))).astype(np.float32)
    pair, losses = mu.fit_adapters(audio[:300], captions[genre[:300]], epochs=30, lr=1e-3, batch_size=100,
                                   hidden=64, out_dim=64)
    assert losses[-1] < 0.5 * losses[0]
    with torch.no_grad():
        a = pair.encode_audio(torch.from_numpy(audio[300:]))
        c = F.normalize(pair.target(torch.from_numpy(captions)), dim=-1)
    acc = float(((a @ c.t()).argmax(dim=1).numpy() == genre[300:]).mean())
    assert acc > 0.8  # chance 0.1


def test_music_embedding_dims():
    assert mu.music_embedding_dims("clap+wav2clip", 64, 40, True) == 1064  # the paper's main model
    assert mu.music_embedding_dims("clap+wav2clip", 64, 80, True) == 1104  # Table 5, 80 frames
    assert mu.music_embedding_dims("clap+wav2clip", 64, 40, False) == 1024  # Table 6, no beats
    assert mu.music_embedding_dims("clap", 64, 8, True) == 520
    assert mu.music_embedding_dims("wav2clip", 64, 8, False) == 512
    assert mu.music_embedding_dims("scratch", 32, 8, True) == 40
    with pytest.raises(ValueError, match="music encoder"):
        mu.music_embedding_dims("mfcc", 32, 8, True)


# ---- frozen CLAP / Wav2CLIP -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_clap(tmp_path_factory):
    """A random tiny ClapModel (32-d joint space) with its processor, and a copy with only the feature extractor."""
    from tests_helpers import save_tiny_clap

    root = tmp_path_factory.mktemp("clap")
    full, audio_only = root / "full", root / "audio_only"
    save_tiny_clap(full, 32)
    save_tiny_clap(audio_only, 32, tokenizer=False)
    return full, audio_only


def _clip(seconds: float, seed: int, sr: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(seed)
    return (0.3 * np.sin(2 * np.pi * rng.uniform(200, 800) * t) + 0.05 * rng.standard_normal(t.size)).astype(
        np.float32)


def test_clap_audio_embedding_tiny(tiny_clap):
    from transformers import ClapFeatureExtractor, ClapModel

    from dancegen.io.audio import resample

    full, audio_only = tiny_clap
    clap = mu.load_clap(full)
    x, y = _clip(0.6, 0), _clip(1.5, 1)
    e = mu.clap_audio_embedding(x, SR, clap)
    assert e.shape == (32,) and e.dtype == np.float32 and np.linalg.norm(e) == pytest.approx(1.0, abs=1e-5)
    # the same as the transformers calls by hand: 48 kHz, extractor (repeat-padded to 1 s), get_audio_features
    model = ClapModel.from_pretrained(full, local_files_only=True).eval()
    fe = ClapFeatureExtractor.from_pretrained(full, local_files_only=True)
    with torch.no_grad():
        out = model.get_audio_features(**fe(resample(x, SR, 48000), sampling_rate=48000, return_tensors="pt"))
    ref = getattr(out, "pooler_output", out)[0]
    np.testing.assert_allclose(e, F.normalize(ref, dim=-1).numpy(), atol=1e-5)
    raw = mu.clap_audio_embedding(x, SR, clap, normalize=False)
    np.testing.assert_allclose(raw, ref.numpy(), atol=1e-5)
    # a batch equals its items; a 48 kHz copy gives the same; a clip longer than max_length_s is cut, not random
    both = mu.clap_audio_embedding([x, y], SR, clap)
    assert both.shape == (2, 32)
    np.testing.assert_allclose(both[0], e, atol=1e-6)
    np.testing.assert_allclose(both[1], mu.clap_audio_embedding(y, SR, clap), atol=1e-6)
    np.testing.assert_allclose(mu.clap_audio_embedding(resample(x, SR, 48000), 48000, clap), e, atol=1e-5)
    np.testing.assert_array_equal(mu.clap_audio_embedding(y, SR, clap), mu.clap_audio_embedding(y, SR, clap))
    np.testing.assert_allclose(mu.clap_audio_embedding(y, SR, clap), mu.clap_audio_embedding(y[:SR], SR, clap),
                               atol=1e-4)  # (resampling filter edge at the cut)
    assert np.abs(both[0] - both[1]).max() > 1e-3  # different clips, different embeddings
    # a folder with a feature extractor but no tokenizer serves audio (given as a path)
    np.testing.assert_allclose(mu.clap_audio_embedding(x, SR, audio_only), e, atol=1e-6)


def test_clap_text_embedding_tiny(tiny_clap):
    from transformers import ClapModel

    full, audio_only = tiny_clap
    texts = ["a house dance music", "a break dance music"]
    emb = mu.clap_text_embedding(texts, full)
    assert emb.shape == (2, 32) and np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    model = ClapModel.from_pretrained(full, local_files_only=True).eval()
    from tests_helpers import _tiny_roberta_tokenizer

    tok = _tiny_roberta_tokenizer()(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model.get_text_features(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"])
    ref = F.normalize(getattr(out, "pooler_output", out), dim=-1).numpy()
    np.testing.assert_allclose(emb, ref, atol=1e-5)
    np.testing.assert_allclose(mu.clap_text_embedding("a house dance music", full)[0], emb[0], atol=1e-5)
    with pytest.raises(MissingWeightsError, match="no tokenizer"):
        mu.clap_text_embedding(texts, audio_only)


def test_clap_missing_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MissingWeightsError, match=r"--set music\.clap=PATH") as e:
        mu.clap_audio_embedding(_clip(0.5, 0), SR, tmp_path / "no_such_clap")
    assert "no_such_clap" in str(e.value)
    with pytest.raises(MissingWeightsError, match="HF_HUB_OFFLINE") as e:
        mu.load_clap("dancegen-tests/no-such-clap-model")
    assert "hf download dancegen-tests/no-such-clap-model" in str(e.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text(json.dumps({}))
    with pytest.raises(MissingWeightsError, match="CLAP model"):
        mu.load_clap(empty)


def test_wav2clip_embedding(tmp_path, monkeypatch):
    from dancegen.metrics.backbones.wav2clip import Wav2CLIP, embed_audio, load_wav2clip

    torch.manual_seed(0)
    path = tmp_path / "Wav2CLIP.pt"
    torch.save(Wav2CLIP().state_dict(), path)
    x, y = _clip(1.0, 0), _clip(2.0, 1)
    e = mu.wav2clip_embedding(x, SR, path)
    ref = embed_audio(load_wav2clip(path), x, SR)
    assert e.shape == (512,) and e.dtype == np.float32
    np.testing.assert_allclose(e, ref / np.linalg.norm(ref), atol=1e-5)
    model = load_wav2clip(path)
    both = mu.wav2clip_embedding([x, y], SR, model)  # one clip at a time: batch statistics do not leak
    np.testing.assert_allclose(both[0], e, atol=1e-5)
    np.testing.assert_allclose(both[1], mu.wav2clip_embedding(y, SR, model), atol=1e-5)
    np.testing.assert_allclose(mu.wav2clip_embedding(x, SR, model, normalize=False), ref, atol=1e-4)
    monkeypatch.setenv("DANCEGEN_WEIGHTS_DIR", str(tmp_path / "nowhere"))
    monkeypatch.setenv("DANCEGEN_HOME", str(tmp_path / "home"))
    with pytest.raises(MissingWeightsError, match=r"Wav2CLIP.*--set music\.wav2clip=PATH"):
        mu.wav2clip_embedding(x, SR, None)
    with pytest.raises(MissingWeightsError, match="music.wav2clip"):
        mu.wav2clip_embedding(x, SR, tmp_path / "missing.pt")
    assert mu.wav2clip_embedding(x, SR, None, random_init=True).shape == (512,)


def test_fit_adapters_leaves_the_global_rng_alone(monkeypatch):
    rng = np.random.default_rng(0)
    audio, target = rng.normal(size=(16, 8)).astype(np.float32), rng.normal(size=(16, 8)).astype(np.float32)
    torch.manual_seed(1234)
    torch.rand(3)
    before = torch.get_rng_state()
    reseeds = []
    monkeypatch.setattr(torch, "manual_seed", lambda s: reseeds.append(s))
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda s: reseeds.append(s))
    mu.fit_adapters(audio, target, epochs=2, batch_size=8, hidden=16, out_dim=8)
    assert torch.equal(torch.get_rng_state(), before) and reseeds == []
    monkeypatch.undo()
    torch.manual_seed(0)  # the same initial adapters as a global seed of 0 would give
    ref = mu.ContrastiveAdapterPair(8, 8, 16, 8)
    untrained, _ = mu.fit_adapters(audio, target, epochs=0, hidden=16, out_dim=8)
    assert all(torch.equal(a, b) for a, b in zip(ref.state_dict().values(), untrained.state_dict().values(),
                                                 strict=True))

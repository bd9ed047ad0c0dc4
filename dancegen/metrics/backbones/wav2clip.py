"""Wav2CLIP audio encoder (Wu et al., ICASSP 2022) and Dance Any Beat's CS music-video score (DAB spec §4).

Wav2CLIP distils CLIP ViT-B/32's image space into an audio encoder, so one clip of music maps to a 512-d vector
that can be compared with CLIP image embeddings. The network here is our own definition of the `wav2clip` 0.1.0
PyPI package's `ResNetExtractor` as `wav2clip.get_model()` builds it (frozen, `transform=True`, clip-level):

- front end: power spectrogram `|STFT|^2` with n_fft 512, hop 353, a periodic Hann window of 512 samples,
  `center=True` with reflect padding (torchaudio's `Spectrogram(n_fft=512, hop_length=353)` defaults), then
  `log(S + 1e-7)` standardised by the mean and the unbiased std over the whole batch tensor;
- `encoder`: a ResNet-18 (BasicBlock, [2, 2, 2, 2], a 1-channel 7x7 stem, global average pool) -> 512-d
  (VGGSound's audio ResNet without its classifier);
- `transform`: `MLPLayers([512, 512, 512])` = Linear, ReLU, Dropout(0.1), Linear -> 512-d (the `audio_transform`
  head trained against CLIP image embeddings; its output is the embedding in CLIP image space).

The published checkpoint (`Wav2CLIP.pt`, GitHub release v0.1.0-alpha of descriptinc/lyrebird-wav2clip) is a flat
state dict whose keys carry the training module's prefixes: `audio_encoder.<ResNet key>` (the spectrogram window
buffer `audio_encoder.spectrogram.window` included) and `audio_transform.sequential.{0,3}.{weight,bias}`.
`wav2clip_state_dict` maps `audio_encoder.` -> `encoder.` and `audio_transform.` -> `transform.` (the names
`ResNetExtractor` uses) and drops keys under other prefixes; the result loads into `Wav2CLIP` with
`load_state_dict(strict=True)`. The parameter names and shapes are pinned by a key list taken from the package's
own classes (tests/fixtures/metrics_wav2clip/golden_keys.json).

CS (Dance Any Beat Table 3, [A] choices of the spec): cos(v, a) where v is the renormalised mean of the
L2-normalised CLIP ViT-B/32 frame embeddings of the video and a the Wav2CLIP embedding of the clip's audio
(mono, resampled to 16 kHz); the mean over videos is the reported score. `dancegen.metrics.evaluate` builds both
networks (its context's `cs-clip` and `wav2clip` backbones) and averages; this module imports nothing from it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from dancegen.errors import DanceGenError, InputError

SAMPLE_RATE = 16000
"""Wav2CLIP's input rate (its training data were loaded with `librosa.load(sr=16000)`)."""
N_FFT = 512
HOP_LENGTH = 353
EMBED_DIM = 512
CS_CLIP_MODEL = "openai/clip-vit-base-patch32"
"""CLIP for CS: ViT-B/32, the image space Wav2CLIP was distilled into (512-d)."""
CHECKPOINT_PREFIXES = {"audio_encoder.": "encoder.", "audio_transform.": "transform."}
"""Published checkpoint prefix -> our module name."""


# ---- network ------------------------------------------------------------------------------------------------------
class Spectrogram(nn.Module):
    """Power spectrogram as torchaudio's `Spectrogram(n_fft=512, hop_length=353)` computes it.

    The periodic Hann window is a (persistent) buffer named `window`, as in torchaudio, because the published
    checkpoint stores it.
    """

    def __init__(self, n_fft: int = N_FFT, hop_length: int = HOP_LENGTH):
        super().__init__()
        self.n_fft, self.hop_length = n_fft, hop_length
        self.register_buffer("window", torch.hann_window(n_fft))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`(B, N)` waveform -> `(B, 1, n_fft // 2 + 1, 1 + N // hop)` power."""
        spec = torch.stft(x, self.n_fft, hop_length=self.hop_length, win_length=self.n_fft, window=self.window,
                          center=True, pad_mode="reflect", normalized=False, onesided=True, return_complex=True)
        return spec.abs().pow(2.0).unsqueeze(1)


class BasicBlock(nn.Module):
    """ResNet basic block (two 3x3 convs, BN, identity or 1x1-conv shortcut)."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class AudioResNet(nn.Module):
    """Wav2CLIP's `audio_encoder`: log-spectrogram, standardisation, ResNet-18 on one channel, average pool."""

    def __init__(self):
        super().__init__()
        self.spectrogram = Spectrogram()
        self.conv1 = nn.Conv2d(1, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        widths, inplanes = (64, 128, 256, 512), 64
        for i, planes in enumerate(widths, start=1):
            stride = 1 if i == 1 else 2
            setattr(self, f"layer{i}", nn.Sequential(BasicBlock(inplanes, planes, stride), BasicBlock(planes, planes)))
            inplanes = planes
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        for m in self.modules():  # the reference's random init (only matters without weights)
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, mean=1.0, std=0.02)
                nn.init.zeros_(m.bias)

    def log_spectrogram(self, x: torch.Tensor) -> torch.Tensor:
        """`(B, N)` -> `(B, 1, 257, T)`: log power, standardised over the whole batch (as the reference does)."""
        s = torch.log(self.spectrogram(x) + 1e-7)
        return (s - s.mean()) / (s.std() + 1e-9)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`(B, N)` 16 kHz waveform -> `(B, 512)`."""
        h = self.maxpool(self.relu(self.bn1(self.conv1(self.log_spectrogram(x)))))
        h = self.layer4(self.layer3(self.layer2(self.layer1(h))))
        return self.avgpool(h).flatten(1)


class MLPLayers(nn.Module):
    """Wav2CLIP's `audio_transform`: Linear(512, 512), ReLU, Dropout(0.1), Linear(512, 512) in `sequential`."""

    def __init__(self, units: tuple[int, ...] = (EMBED_DIM, EMBED_DIM, EMBED_DIM), dropout: float = 0.1):
        super().__init__()
        layers: list[nn.Module] = []
        for u0, u1 in zip(units[:-1], units[1:], strict=True):
            layers += [nn.Linear(u0, u1), nn.ReLU(), nn.Dropout(dropout)]
        self.sequential = nn.Sequential(*layers[:-2])  # no activation/dropout after the last Linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.sequential(x)


class Wav2CLIP(nn.Module):
    """Clip-level Wav2CLIP: `(B, N)` 16 kHz mono waveform -> `(B, 512)` embedding in CLIP ViT-B/32 image space."""

    def __init__(self):
        super().__init__()
        self.encoder = AudioResNet()
        self.transform = MLPLayers()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.transform(self.encoder(x))


def wav2clip_state_dict(checkpoint: Mapping[str, torch.Tensor], source: str | os.PathLike = "") -> dict:
    """Published `Wav2CLIP.pt` keys (`audio_encoder.*`, `audio_transform.*`) -> `Wav2CLIP` keys.

    Keys under other prefixes (other heads of the training module) are dropped. A state dict already in our
    naming passes through unchanged.

    Raises:
        DanceGenError: neither the published nor our prefixes occur (not a Wav2CLIP checkpoint).
    """
    out = {}
    for key, value in checkpoint.items():
        for theirs, ours in CHECKPOINT_PREFIXES.items():
            if key.startswith(theirs):
                out[ours + key[len(theirs):]] = value
            elif key.startswith(ours):
                out[key] = value
    if not any(k.startswith("encoder.") for k in out) or not any(k.startswith("transform.") for k in out):
        raise DanceGenError("not a Wav2CLIP checkpoint: no audio_encoder.* and audio_transform.* keys", source or None)
    return out


def load_wav2clip(path: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> Wav2CLIP:
    """Wav2CLIP in eval mode: the published weights from `path` (strict), or random init when `path` is None.

    Raises:
        DanceGenError: the file is unreadable or its tensors do not fit the architecture.
    """
    from dancegen.metrics.backbones.common import load_strict, read_checkpoint

    model = Wav2CLIP()
    if path is not None:
        load_strict(model, wav2clip_state_dict(read_checkpoint(path), path), path)
    return model.to(device).eval()


# ---- embeddings and the CS score ----------------------------------------------------------------------------------
def prepare_audio(audio: np.ndarray, sr: int, seconds: float | None = None) -> np.ndarray:
    """Mono float32 at 16 kHz: channels averaged, cut to the first `seconds` (when given), resampled.

    Resampling uses `librosa.resample` with its default filter (what `librosa.load(path, sr=16000)` does).

    Args:
        audio: `(N,)` or `(N, C)` samples in [-1, 1].
        sr: Their sample rate in Hz.
        seconds: Keep at most this much from the start (the clip's duration).
    """
    y = np.asarray(audio, dtype=np.float32)
    if y.ndim == 2:
        y = y.mean(axis=1)
    if y.ndim != 1:
        raise InputError(f"audio must be (N,) or (N, C) samples, got shape {tuple(np.shape(audio))}")
    if seconds is not None:
        y = y[: int(round(seconds * sr))]
    if int(sr) != SAMPLE_RATE and len(y):
        import librosa

        y = librosa.resample(y, orig_sr=int(sr), target_sr=SAMPLE_RATE).astype(np.float32)
    return y


@torch.no_grad()
def embed_audio(model: Wav2CLIP, audio: np.ndarray, sr: int, seconds: float | None = None) -> np.ndarray:
    """Wav2CLIP clip-level embedding, `(512,)` float32 (not normalised, as `wav2clip.embed_audio` returns it).

    Args:
        model: A `Wav2CLIP` (see `load_wav2clip`).
        audio: `(N,)` or `(N, C)` samples in [-1, 1] at `sr`.
        sr: Sample rate in Hz (resampled to 16 kHz).
        seconds: Use only the first `seconds` of the audio.

    Raises:
        InputError: fewer than 257 samples at 16 kHz (the STFT's reflect padding needs more than n_fft / 2).
    """
    y = prepare_audio(audio, sr, seconds)
    if len(y) <= N_FFT // 2:
        raise InputError(f"audio too short for Wav2CLIP: {len(y)} samples at 16 kHz, needs at least {N_FFT // 2 + 1}")
    device = next(model.parameters()).device
    return model(torch.from_numpy(y)[None].to(device))[0].float().cpu().numpy()


def video_embedding(clip_model, frames: np.ndarray) -> np.ndarray:
    """CLIP video embedding for CS: unit-length mean of the L2-normalised frame embeddings, `(D,)` float64.

    Args:
        clip_model: A `dancegen.metrics.backbones.clip.ClipEmbedder` (anything with `image_embeds(frames)`).
        frames: `(F, H, W, 3)` uint8 RGB.
    """
    emb = np.asarray(clip_model.image_embeds(frames), dtype=np.float64)
    emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    mean = emb.mean(axis=0)
    return mean / max(float(np.linalg.norm(mean)), 1e-12)


def clip_music_score(video_frames: np.ndarray, audio: np.ndarray, sr: int, clip_model, wav2clip_model: Wav2CLIP,
                     fps: float | None = None) -> float:
    """Dance Any Beat's CS for one video: cos(CLIP video embedding, Wav2CLIP embedding of its music), in [-1, 1].

    Args:
        video_frames: `(F, H, W, 3)` uint8 RGB.
        audio: `(N,)` or `(N, C)` music samples in [-1, 1] at `sr`.
        sr: Sample rate in Hz.
        clip_model: CLIP ViT-B/32 embedder (`ClipEmbedder`); its embeddings must be 512-d like Wav2CLIP's.
        wav2clip_model: The pretrained Wav2CLIP.
        fps: When given, the audio is cut to the video's duration `F / fps` (the clip's own music).

    Raises:
        DanceGenError: the CLIP embedding is not 512-d (not the ViT-B/32 space Wav2CLIP lives in).
        InputError: no frames, or too little audio.
    """
    if len(video_frames) == 0:
        raise InputError("clip-music: the video has no frames")
    v = video_embedding(clip_model, video_frames)
    if v.shape[0] != EMBED_DIM:
        raise DanceGenError(f"clip-music needs CLIP ViT-B/32 ({CS_CLIP_MODEL}, 512-d embeddings: the space Wav2CLIP "
                            f"was trained in); this CLIP gives {v.shape[0]}-d embeddings")
    seconds = None if not fps else len(video_frames) / float(fps)
    a = embed_audio(wav2clip_model, audio, sr, seconds).astype(np.float64)
    return float(v @ a / max(float(np.linalg.norm(a)), 1e-12))

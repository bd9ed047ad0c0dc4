"""DabFusion's music encoder (paper §3.2, DAB spec §2.2, §2.5, gaps G2/G3): e = concat(e_c, e_w, e_b).

- e_c, style [P]: a frozen LAION-CLAP audio embedding (512-d) through a trained MLP adapter.
- e_w, movement [P]: a frozen Wav2CLIP embedding (512-d, CLIP image space) through a trained MLP adapter.
- e_b, rhythm [P/A]: the per-frame beat vector of the clip (`dancegen.audio.beats.beat_vector`), N values.
- Adapters [P]: two MLP layers with hidden size 512, trained 100 epochs; [A] Linear-GELU-Linear, one adapter on
  each side of a contrastive pair, symmetric InfoNCE with a learnable temperature starting at 0.07, Adam 1e-4
  (the paper does not state the objective, G3). The frozen embeddings are precomputed once (`clap_audio_embedding`,
  `clap_text_embedding`, `wav2clip_embedding`) and the adapters trained on them (`fit_adapters`).
- `ScratchMusicEncoder` [A]: an offline alternative trained from scratch on `dancegen.audio.features` (no
  pretrained weights), a dilated temporal conv net giving per-frame and pooled embeddings.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn
from torch.nn import functional as F

from dancegen.errors import InputError, MissingWeightsError

EMBED_DIM = 512
"""Width of the CLAP joint space and of Wav2CLIP (both 512-d, external facts); also the adapters' width [P]."""
CLAP_SAMPLE_RATE = 48000
DEFAULT_CLAP = "laion/clap-htsat-unfused"
"""[A] the transformers port of LAION-CLAP's 630k-audioset checkpoint (the paper does not say which one)."""
INIT_TEMPERATURE = 0.07
MAX_LOGIT_SCALE = 100.0
"""CLIP/CLAP clamp the learned inverse temperature at 100."""
MUSIC_ENCODERS = ("scratch", "clap", "wav2clip", "clap+wav2clip")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


# ---- trainable parts ------------------------------------------------------------------------------------------------
class _TemporalBlock(nn.Module):
    """Pre-norm residual block over time: GN-SiLU-Conv1d(k, dilation d)-GN-SiLU-Conv1d(1), added to the input."""

    def __init__(self, dim: int, kernel_size: int, dilation: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, dim)
        self.conv1 = nn.Conv1d(dim, dim, kernel_size, dilation=dilation, padding=dilation * (kernel_size - 1) // 2)
        self.norm2 = nn.GroupNorm(groups, dim)
        self.conv2 = nn.Conv1d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        return x + self.conv2(F.silu(self.norm2(h)))


class ScratchMusicEncoder(ModelMixin, ConfigMixin):
    """Music encoder trained from scratch on per-frame librosa features [A] (DAB spec §6.4 "tiny audio stand-ins").

    A 1x1 input projection, `layers` residual blocks of dilated temporal convolutions (dilation 2**i: 1, 2, 4 for
    three layers; kernel 3 gives a receptive field of 15 frames, kernel 5 of 29), then GroupNorm-SiLU-1x1 output.
    Convolutions are "same"-padded, so every frame keeps its own output.

    Args:
        in_dim: feature width D of `dancegen.audio.features.frame_features`.
        dim: embedding width.
        layers: number of residual blocks.
        kernel_size: temporal kernel (odd: 3 or 5).
        norm_groups: GroupNorm groups (must divide `dim`).
    """

    @register_to_config
    def __init__(self, in_dim: int, dim: int = 64, layers: int = 3, kernel_size: int = 3, norm_groups: int = 8):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd (same padding), got {kernel_size}")
        if dim % norm_groups:
            raise ValueError(f"norm_groups ({norm_groups}) must divide dim ({dim})")
        self.proj_in = nn.Conv1d(in_dim, dim, 1)
        self.blocks = nn.ModuleList(_TemporalBlock(dim, kernel_size, 2**i, norm_groups) for i in range(layers))
        self.norm_out = nn.GroupNorm(norm_groups, dim)
        self.proj_out = nn.Conv1d(dim, dim, 1)

    def forward(self, feats: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode per-frame features.

        Args:
            feats: `(B, F, in_dim)` features (b f d).
            mask: optional `(B, F)` bool, True for real frames; the pooled mean runs over those only.

        Returns:
            `(pooled (B, dim), per_frame (B, F, dim))`; pooled is the (masked) mean of per_frame over frames.
        """
        h = self.proj_in(feats.transpose(1, 2))  # b f d -> b d f
        for block in self.blocks:
            h = block(h)
        per_frame = self.proj_out(F.silu(self.norm_out(h))).transpose(1, 2)  # b d f -> b f d
        if mask is None:
            return per_frame.mean(dim=1), per_frame
        w = mask.to(per_frame.dtype).unsqueeze(-1)
        return (per_frame * w).sum(dim=1) / w.sum(dim=1).clamp_min(1.0), per_frame


class MLPAdapter(ModelMixin, ConfigMixin):
    """The paper's adapter, "two MLP layers with hidden size 512" [P]: Linear-GELU-Linear [A]."""

    @register_to_config
    def __init__(self, in_dim: int = EMBED_DIM, hidden: int = EMBED_DIM, out_dim: int = EMBED_DIM):
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden)
        self.fc2 = nn.Linear(hidden, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`(..., in_dim)` -> `(..., out_dim)`."""
        return self.fc2(F.gelu(self.fc1(x)))


def info_nce(a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor | float,
             labels: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP/CLAP loss) between paired rows of `a` and `b`, on L2-normalised vectors.

    logits = logit_scale * cos(a_i, b_j); the loss is the mean of the cross-entropies over rows (a -> b) and
    columns (b -> a). Without `labels` row i's positive is column i. With `labels` every pair with equal labels is a
    positive and the target is uniform over them (for targets shared by many rows, such as the 10 genre captions of
    the CLAP objective; otherwise identical captions would be pushed apart as negatives).

    Args:
        a: `(B, D)`.
        b: `(B, D)`, paired with `a`.
        logit_scale: inverse temperature (already exponentiated, as open_clip's `ClipLoss` takes it).
        labels: optional `(B,)` integer group ids.

    Returns:
        Scalar loss.
    """
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"info_nce needs paired rows, got {a.shape[0]} and {b.shape[0]}")
    logits = logit_scale * F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).t()
    if labels is None:
        target = torch.arange(a.shape[0], device=a.device)
        return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))
    same = (labels[:, None] == labels[None, :]).to(logits.dtype)
    soft = same / same.sum(dim=1, keepdim=True)  # symmetric relation: the same targets serve both directions
    loss_ab = -(soft * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
    loss_ba = -(soft * F.log_softmax(logits.t(), dim=1)).sum(dim=1).mean()
    return 0.5 * (loss_ab + loss_ba)


class ContrastiveAdapterPair(ModelMixin, ConfigMixin):
    """Two adapters joined by a contrastive objective (DAB spec §2.2 [A], G3) and a learnable temperature.

    `audio` adapts the frozen music embedding (CLAP audio or Wav2CLIP), `target` the other side of the pair (CLAP
    text embedding of a genre caption, or the CLIP image embedding of the time-aligned frames). The inverse
    temperature is stored as its log and starts at 1 / 0.07, as in CLIP and CLAP.

    Args:
        audio_dim: width of the frozen music embedding.
        target_dim: width of the frozen target embedding.
        hidden: adapters' hidden width.
        out_dim: adapters' output width (the width of e_c / e_w).
        temperature: initial temperature.
    """

    @register_to_config
    def __init__(self, audio_dim: int = EMBED_DIM, target_dim: int = EMBED_DIM, hidden: int = EMBED_DIM,
                 out_dim: int = EMBED_DIM, temperature: float = INIT_TEMPERATURE):
        super().__init__()
        self.audio = MLPAdapter(audio_dim, hidden, out_dim)
        self.target = MLPAdapter(target_dim, hidden, out_dim)
        self.log_logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))

    @property
    def logit_scale(self) -> torch.Tensor:
        """Inverse temperature, clamped at 100."""
        return self.log_logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)

    def forward(self, audio: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Adapted (not normalised) `(audio (B, out_dim), target (B, out_dim))`."""
        return self.audio(audio), self.target(target)

    def loss(self, audio: torch.Tensor, target: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Symmetric InfoNCE of the adapted pair."""
        a, t = self(audio, target)
        return info_nce(a, t, self.logit_scale, labels)

    def encode_audio(self, audio: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """The conditioning embedding e_c / e_w: the adapted music embedding, L2-normalised by default [A]."""
        e = self.audio(audio)
        return F.normalize(e, dim=-1) if normalize else e


def _duplicate_row_labels(x: torch.Tensor) -> torch.Tensor:
    """Group ids of identical rows (`torch.unique(dim=0)` inverse)."""
    return torch.unique(x, dim=0, return_inverse=True)[1]


def fit_adapters(audio_emb: np.ndarray | torch.Tensor, target_emb: np.ndarray | torch.Tensor, epochs: int = 100,
                 lr: float = 1e-4, batch_size: int = 256, seed: int = 0, labels: np.ndarray | None = None,
                 hidden: int = EMBED_DIM, out_dim: int = EMBED_DIM,
                 device: str | torch.device = "cpu") -> tuple[ContrastiveAdapterPair, list[float]]:
    """Train a `ContrastiveAdapterPair` on precomputed frozen embeddings (paper: 100 epochs [P]; Adam [A]).

    Each epoch shuffles the pairs (a generator seeded with `seed`) and takes Adam steps over batches of
    `batch_size`; a final batch of one pair is skipped (InfoNCE needs a negative). The pair's initial weights come
    from `seed` too, without touching the global RNG.

    Args:
        audio_emb: `(N, Da)` frozen music embeddings.
        target_emb: `(N, Dt)` paired frozen target embeddings.
        epochs: passes over the data.
        lr: Adam learning rate.
        batch_size: pairs per step.
        seed: seed for initialisation and shuffling.
        labels: optional `(N,)` positive groups for `info_nce`; by default identical target rows form a group
            (the genre captions of the CLAP objective), and all-distinct targets reduce to plain InfoNCE.
        hidden: adapters' hidden width.
        out_dim: adapters' output width.
        device: where to train.

    Returns:
        `(pair in eval mode, mean loss of every epoch)`.
    """
    a = torch.as_tensor(np.asarray(audio_emb, np.float32) if not torch.is_tensor(audio_emb) else audio_emb).float()
    t = torch.as_tensor(np.asarray(target_emb, np.float32) if not torch.is_tensor(target_emb) else target_emb).float()
    if a.ndim != 2 or t.ndim != 2 or a.shape[0] != t.shape[0] or a.shape[0] < 2:
        raise InputError(f"fit_adapters needs paired (N, D) embeddings with N >= 2, got {tuple(a.shape)} and "
                         f"{tuple(t.shape)}")
    lab = _duplicate_row_labels(t) if labels is None else torch.as_tensor(np.asarray(labels)).long()
    # Built on the CPU from a seeded CPU generator, the caller's state restored afterwards. Only the CPU generator is
    # seeded: torch.manual_seed would also reseed every CUDA device for good (fork_rng(devices=[]) does not undo it).
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        pair = ContrastiveAdapterPair(a.shape[1], t.shape[1], hidden, out_dim)
    pair = pair.to(device).train()
    a, t, lab = a.to(device), t.to(device), lab.to(device)
    opt = torch.optim.Adam(pair.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    for _ in range(epochs):
        order = torch.randperm(a.shape[0], generator=gen).to(device)
        total, count = 0.0, 0
        for i in range(0, a.shape[0], batch_size):
            idx = order[i:i + batch_size]
            if idx.numel() < 2:
                continue
            loss = pair.loss(a[idx], t[idx], lab[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * idx.numel()
            count += idx.numel()
        losses.append(total / max(count, 1))
    return pair.eval(), losses


def music_embedding_dims(encoder: str, dim: int, num_frames: int, beats: bool) -> int:
    """Width De of the music condition e (DAB spec §2.2 [P/A]).

    "scratch" -> `dim` (the `ScratchMusicEncoder` pooled width); "clap" or "wav2clip" -> 512; "clap+wav2clip" ->
    1024 (the paper's e_c and e_w); plus `num_frames` when the beat vector e_b is appended. The paper's main model:
    `music_embedding_dims("clap+wav2clip", _, 40, True) == 1064`; 1104 at N = 80; 1024 without beats (Table 6).
    """
    widths = {"scratch": dim, "clap": EMBED_DIM, "wav2clip": EMBED_DIM, "clap+wav2clip": 2 * EMBED_DIM}
    if encoder not in widths:
        raise ValueError(f"music encoder must be one of {MUSIC_ENCODERS}, got {encoder!r}")
    return int(widths[encoder]) + (int(num_frames) if beats else 0)


# ---- frozen embeddings ----------------------------------------------------------------------------------------------
@dataclass
class ClapBackbone:
    """A loaded CLAP: the model, its feature extractor and (if the folder has one) its tokenizer."""

    model: Any
    feature_extractor: Any
    tokenizer: Any
    ref: str
    device: str = "cpu"


def _hub_offline() -> bool:
    from dancegen.core.weights import hub_offline

    return hub_offline()


def _clap_missing(ref: str, reason: str) -> MissingWeightsError:
    hub = ref if _HUB_ID.match(ref) and not Path(ref).exists() else DEFAULT_CLAP
    offline = " (HF_HUB_OFFLINE is set, so the hub was not asked)" if _hub_offline() else ""
    return MissingWeightsError(
        f"CLAP model {ref!r} not available{offline}: {reason}. Download it with `hf download {hub} "
        f"--local-dir PATH` (a transformers ClapModel folder) and pass `--set music.clap=PATH`")


def load_clap(model_ref: str | os.PathLike = DEFAULT_CLAP, device: str = "cpu") -> ClapBackbone:
    """Load a transformers `ClapModel` with its `ClapFeatureExtractor` (and tokenizer when present), in eval mode.

    Args:
        model_ref: a local folder (`save_pretrained` layout) or a Hugging Face id. With `HF_HUB_OFFLINE=1`, or for
            a local folder, loading uses `local_files_only` (only the HF cache is read for an id).
        device: torch device.

    Raises:
        MissingWeightsError: not found; says which model and how to pass it (`--set music.clap=PATH`).
    """
    from transformers import AutoTokenizer, ClapFeatureExtractor, ClapModel

    ref = os.fspath(model_ref)
    local = Path(ref).expanduser()
    if not local.exists() and not _HUB_ID.match(ref):
        raise _clap_missing(ref, "no such folder and not a Hugging Face id")
    src = str(local) if local.exists() else ref
    local_only = local.exists() or _hub_offline()
    try:
        model = ClapModel.from_pretrained(src, local_files_only=local_only).to(device).eval()
        fe = ClapFeatureExtractor.from_pretrained(src, local_files_only=local_only)
    except OSError as e:
        raise _clap_missing(ref, str(e).splitlines()[0][:200]) from None
    try:
        tok = AutoTokenizer.from_pretrained(src, local_files_only=local_only)
    except (OSError, ValueError, TypeError):
        tok = None  # audio-only use needs no tokenizer
    if tok is not None and len(tok) <= len(set(tok.all_special_tokens)):
        tok = None  # transformers 5 builds an empty tokenizer (special tokens only) when the files are missing
    return ClapBackbone(model, fe, tok, ref, str(device))


def _as_clip_list(samples: np.ndarray | Sequence[np.ndarray]) -> tuple[list[np.ndarray], bool]:
    """One 1-D clip or a sequence of them -> (list of float32 1-D arrays, whether a single clip was given)."""
    if isinstance(samples, np.ndarray) and samples.ndim == 1:
        return [samples.astype(np.float32, copy=False)], True
    clips = [np.asarray(s, np.float32) for s in samples]
    for c in clips:
        if c.ndim != 1 or c.size == 0:
            raise InputError(f"each audio clip must be a non-empty mono (N,) array, got shape {c.shape}")
    return clips, False


def _pooled(out) -> torch.Tensor:
    # transformers 5 returns a ModelOutput whose pooler_output is the projected embedding; 4.x returned a tensor
    return out if isinstance(out, torch.Tensor) else out.pooler_output


@torch.no_grad()
def clap_audio_embedding(samples: np.ndarray | Sequence[np.ndarray], sr: int,
                         model_ref: str | os.PathLike | ClapBackbone = DEFAULT_CLAP, device: str = "cpu",
                         normalize: bool = True) -> np.ndarray:
    """Frozen CLAP audio embedding (e_c before its adapter): `get_audio_features` on 48 kHz mono audio.

    Each clip is resampled to 48 kHz (polyphase) and cut to the extractor's `max_length_s` from its start, so the
    extractor's random crop ("rand_trunc" / "fusion") never fires and the result is deterministic; shorter clips
    are repeat-padded by the extractor, as in LAION-CLAP.

    Args:
        samples: one `(N,)` clip or a sequence of clips, float in [-1, 1].
        sr: their sample rate.
        model_ref: folder / hub id, or a `load_clap` result (load once to embed many clips).
        device: torch device when loading.
        normalize: L2-normalise, as LAION-CLAP's `get_audio_embedding` API returns it [A].

    Returns:
        `(D,)` float32 for one clip, `(B, D)` for a sequence (D = 512 for the released CLAP models).
    """
    from dancegen.io.audio import resample

    clap = model_ref if isinstance(model_ref, ClapBackbone) else load_clap(model_ref, device)
    clips, single = _as_clip_list(samples)
    fe = clap.feature_extractor
    max_len = int(round(fe.max_length_s * fe.sampling_rate))
    out = []
    for clip in clips:
        y = resample(clip, int(sr), int(fe.sampling_rate))[:max_len]
        inputs = fe(np.ascontiguousarray(y, np.float32), sampling_rate=fe.sampling_rate, return_tensors="pt")
        dev = next(clap.model.parameters()).device
        emb = _pooled(clap.model.get_audio_features(**{k: v.to(dev) for k, v in inputs.items()})).float().cpu()
        out.append(emb[0])
    e = torch.stack(out)
    e = F.normalize(e, dim=-1) if normalize else e
    return e[0].numpy() if single else e.numpy()


@torch.no_grad()
def clap_text_embedding(texts: str | Sequence[str], model_ref: str | os.PathLike | ClapBackbone = DEFAULT_CLAP,
                        device: str = "cpu", normalize: bool = True) -> np.ndarray:
    """Frozen CLAP text embedding of captions (the CLAP adapter's target, e.g. "a {genre} dance music" [A]).

    Args:
        texts: one caption or a list.
        model_ref: folder / hub id, or a `load_clap` result.
        device: torch device when loading.
        normalize: L2-normalise.

    Returns:
        `(B, D)` float32 (one row per caption).

    Raises:
        MissingWeightsError: the CLAP folder has no tokenizer.
    """
    clap = model_ref if isinstance(model_ref, ClapBackbone) else load_clap(model_ref, device)
    if clap.tokenizer is None:
        raise MissingWeightsError(f"CLAP model {clap.ref!r} has no tokenizer files (needed for text embeddings); "
                                  f"pass a full ClapModel + ClapProcessor folder with `--set music.clap=PATH`")
    texts = [texts] if isinstance(texts, str) else list(texts)
    tok = clap.tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
    dev = next(clap.model.parameters()).device
    emb = _pooled(clap.model.get_text_features(input_ids=tok["input_ids"].to(dev),
                                               attention_mask=tok["attention_mask"].to(dev))).float().cpu()
    return (F.normalize(emb, dim=-1) if normalize else emb).numpy()


def wav2clip_embedding(samples: np.ndarray | Sequence[np.ndarray], sr: int, path: str | os.PathLike | Any = None,
                       device: str = "cpu", normalize: bool = True, weights_dir: str | os.PathLike | None = None,
                       random_init: bool = False) -> np.ndarray:
    """Frozen Wav2CLIP embedding (e_w before its adapter), via `dancegen.metrics.backbones.wav2clip`.

    Clips are embedded one at a time: Wav2CLIP standardises the log-spectrogram over the whole batch tensor, so
    batching would change each clip's embedding.

    Args:
        samples: one `(N,)` clip or a sequence of clips, float in [-1, 1] (resampled to 16 kHz).
        sr: their sample rate.
        path: `Wav2CLIP.pt`, a loaded `Wav2CLIP`, or None to look in the weights folders
            (`dancegen.metrics.weights`: `--weights-dir`, `$DANCEGEN_WEIGHTS_DIR`, `$DANCEGEN_HOME/weights`).
        device: torch device when loading.
        normalize: L2-normalise [A] (Wav2CLIP's own `embed_audio` does not).
        weights_dir: extra folder to look in.
        random_init: use a randomly initialised network when no file is given (tests and smoke runs only).

    Returns:
        `(512,)` float32 for one clip, `(B, 512)` for a sequence.

    Raises:
        MissingWeightsError: the checkpoint is not found; says where it is published and how to pass it.
    """
    from dancegen.metrics.backbones.wav2clip import Wav2CLIP, embed_audio, load_wav2clip

    if isinstance(path, Wav2CLIP):
        model = path
    elif path is None and random_init:
        model = load_wav2clip(None, device)
    else:
        from dancegen.metrics.weights import resolve_weight

        try:
            resolved = resolve_weight("wav2clip", path, weights_dir)
        except MissingWeightsError as e:
            raise MissingWeightsError(f"Wav2CLIP for the DabFusion music encoder: {e.message}; or pass "
                                      f"`--set music.wav2clip=PATH`") from None
        model = load_wav2clip(resolved.path, device)
    clips, single = _as_clip_list(samples)
    e = torch.from_numpy(np.stack([embed_audio(model, c, sr) for c in clips]))
    e = F.normalize(e, dim=-1) if normalize else e
    return e[0].numpy() if single else e.numpy()

"""The tiny MDM-style text-to-motion diffusion model (../shared/specs/latentman.md §2.1) and its model folder.

Network (MDM, Tevet et al. 2023, "trans_enc" variant, scaled down): a transformer encoder over the motion's frames
predicts the clean motion x0 from a noisy one. Its sequence is `[timestep token, text tokens, frame tokens]`: the
timestep token is a sinusoidal embedding through an MLP; the text tokens come from a small text encoder (a learned
word embedding over the word vocabulary of the model folder, learned positions, `text_layers` transformer layers; an
unknown word is `<unk>`, so any prompt works); each frame token is a linear map of the frame's 67 z-scored features
(`dancegen.motion.t2m.data`: heading change, pelvis position, body-frame joints) plus a learned position. The frame
tokens of the last layer go through a linear head back to 67 features. Where MDM
projects one CLIP sentence vector into its condition token, the text tokens here are in the sequence itself, so
the frames can attend to each word and its position ("jumps and then spins" is not "spins and then jumps").

Diffusion: `diffusion_steps` (1000) steps of the cosine schedule (Nichol & Dhariwal 2021, as MDM), x0 prediction.
Classifier-free guidance: training drops the text of 10 % of the samples (the text tokens are masked out of the
attention, which is the unconditional model); sampling computes both branches in one batch `[uncond; cond]` and
uses `x0 = x0_u + s (x0_c - x0_u)` (MDM's guidance on x0, scale 2.5). Sampling is DDIM (eta 0) on `steps` evenly
spaced timesteps (50 by default): deterministic for a seed.

Model folder: `config.json` (`T2MConfig`), `model.safetensors`, `vocab.json` (the word list, index = token id),
`stats.json` (per-feature mean / std of the training motions), `t2m.yaml` (the resolved training recipe, when trained
by `dancegen.motion.t2m.train`). The bundled one is `dancegen/assets/models/t2m-tiny`.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from dancegen.errors import InputError, MissingWeightsError
from dancegen.motion.t2m.data import NUM_FEATURES, canonicalize, from_features, tokenize

BUNDLED_NAME = "t2m-tiny"
BUNDLED_DIR = Path(__file__).resolve().parents[2] / "assets" / "models" / BUNDLED_NAME
RECIPE = "recipes/motion/t2m_tiny.yaml"
PAD, UNK = "<pad>", "<unk>"
FOLDER_FILES = ("config.json", "model.safetensors", "vocab.json", "stats.json")


@dataclass
class T2MConfig:
    """Architecture and diffusion settings of a text-to-motion model (the model folder's config.json).

    Attributes:
        num_frames: frames of a motion (60 = 3 s at 20 fps, MDM's notebook setting).
        fps: frame rate of the motions.
        num_features: 67 (see `dancegen.motion.t2m.data`).
        d_model, layers, heads, ff: the motion transformer (width, depth, attention heads, feed-forward width).
        text_layers: transformer layers of the text encoder (same width and heads).
        max_words: prompts are cut to this many words.
        dropout: dropout in the transformer layers while training.
        diffusion_steps: T of the cosine noise schedule.
    """

    num_frames: int = 60
    fps: float = 20.0
    num_features: int = NUM_FEATURES
    d_model: int = 128
    layers: int = 4
    heads: int = 4
    ff: int = 256
    text_layers: int = 2
    max_words: int = 24
    dropout: float = 0.1
    diffusion_steps: int = 1000

    def __post_init__(self):
        if self.d_model % self.heads:
            raise ValueError(f"d_model {self.d_model} must divide by heads {self.heads}")
        if min(self.num_frames, self.layers, self.max_words, self.diffusion_steps) < 1 or self.text_layers < 0:
            raise ValueError("num_frames, layers, max_words and diffusion_steps must be positive")
        if self.num_features != NUM_FEATURES:
            raise ValueError(f"num_features must be {NUM_FEATURES} (heading change, pelvis, 21 joints x 3)")


# --------------------------------------------------------------------------------------------------- vocabulary
class Vocab:
    """Word -> token id (`<pad>` 0, `<unk>` 1, then the words)."""

    def __init__(self, words: list[str]):
        self.words = [PAD, UNK] + [w for w in words if w not in (PAD, UNK)]
        self.index = {w: i for i, w in enumerate(self.words)}

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, texts: list[str], max_words: int) -> np.ndarray:
        """`(B, max_words)` int64 ids, `<pad>`-filled; at least one token per text (an empty prompt is `<unk>`)."""
        out = np.zeros((len(texts), max_words), np.int64)
        for b, t in enumerate(texts):
            ids = [self.index.get(w, 1) for w in tokenize(t)][:max_words] or [1]
            out[b, :len(ids)] = ids
        return out


# ------------------------------------------------------------------------------------------------- diffusion
def cosine_alphas_cumprod(steps: int, s: float = 0.008) -> np.ndarray:
    """ᾱ_t of the cosine schedule (Nichol & Dhariwal 2021), betas clipped at 0.999 like MDM's."""
    f = lambda t: np.cos((t / steps + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    t = np.arange(steps + 1, dtype=np.float64)
    betas = np.clip(1 - f(t[1:]) / f(t[:-1]), 0, 0.999)
    return np.cumprod(1 - betas)


def ddim_timesteps(diffusion_steps: int, steps: int) -> list[int]:
    """`steps` timesteps from T-1 down to 0, evenly spaced (rounded), no repeats."""
    steps = max(1, min(int(steps), diffusion_steps))
    ts = np.round(np.linspace(diffusion_steps - 1, 0, steps)).astype(int)
    return sorted(set(ts.tolist()), reverse=True)


# --------------------------------------------------------------------------------------------------- network
def build_network(cfg: T2MConfig, vocab_size: int):
    """The torch module for `cfg` (randomly initialised): `net(x (B, T, 67), t (B,), ids (B, L), cond (B,) bool)`
    -> x0 `(B, T, 67)`; `cond[b] = False` masks the text of sample b (the unconditional branch)."""
    import torch
    from torch import nn

    def encoder(layers: int) -> nn.TransformerEncoder:
        layer = nn.TransformerEncoderLayer(cfg.d_model, cfg.heads, cfg.ff, cfg.dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    class TextToMotionNet(nn.Module):
        def __init__(self):
            super().__init__()
            d = cfg.d_model
            self.word = nn.Embedding(vocab_size, d)
            self.word_pos = nn.Parameter(torch.zeros(cfg.max_words, d))
            self.text = encoder(cfg.text_layers) if cfg.text_layers else None
            self.text_out = nn.LayerNorm(d)
            self.time = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
            self.inp = nn.Linear(cfg.num_features, d)
            self.frame_pos = nn.Parameter(torch.zeros(cfg.num_frames, d))
            self.type_emb = nn.Parameter(torch.zeros(3, d))  # time / text / frame tokens
            self.body = encoder(cfg.layers)
            self.norm = nn.LayerNorm(d)
            self.out = nn.Linear(d, cfg.num_features)
            nn.init.normal_(self.word_pos, std=0.02)
            nn.init.normal_(self.frame_pos, std=0.02)
            nn.init.normal_(self.type_emb, std=0.02)
            nn.init.normal_(self.word.weight, std=0.1)

        def timestep(self, t: torch.Tensor) -> torch.Tensor:
            half = cfg.d_model // 2
            freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
            a = t.float()[:, None] * freqs[None]
            return self.time(torch.cat([torch.cos(a), torch.sin(a)], -1))

        def encode_text(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """Text tokens `(B, L, d)` and their padding mask `(B, L)` (True = padding)."""
            pad = ids == 0
            h = self.word(ids) + self.word_pos[: ids.shape[1]]
            if self.text is not None:
                h = self.text(h, src_key_padding_mask=pad)
            return self.text_out(h), pad

        def forward(self, x: torch.Tensor, t: torch.Tensor, ids: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
            b, f, _ = x.shape
            words, pad = self.encode_text(ids)
            pad = pad | ~cond[:, None]
            seq = torch.cat([(self.timestep(t) + self.type_emb[0])[:, None], words + self.type_emb[1],
                             self.inp(x) + self.frame_pos[:f] + self.type_emb[2]], 1)
            mask = torch.cat([torch.zeros(b, 1, dtype=torch.bool, device=x.device), pad,
                              torch.zeros(b, f, dtype=torch.bool, device=x.device)], 1)
            h = self.body(seq, src_key_padding_mask=mask)
            return self.out(self.norm(h[:, -f:]))

    return TextToMotionNet()


# ----------------------------------------------------------------------------------------------- model folder
def require_t2m(model: str | os.PathLike | None = None) -> Path:
    """The model folder `model` (None: the bundled one), or MissingWeightsError naming it and how to retrain."""
    folder = Path(model) if model is not None else BUNDLED_DIR
    missing = [f for f in FOLDER_FILES if not (folder / f).is_file()]
    if missing:
        where = f"the bundled model {folder}" if model is None else str(folder)
        raise MissingWeightsError(
            f"text-to-motion model not found ({where}: needs {', '.join(FOLDER_FILES)}); retrain it with "
            f"`dancegen train --recipe {RECIPE} -o runs/t2m_tiny` and "
            f"`python -m dancegen.core.bundle runs/t2m_tiny/model {BUNDLED_NAME}`")
    return folder


def save_model(net, cfg: T2MConfig, vocab: Vocab, mean: np.ndarray, std: np.ndarray, folder: str | os.PathLike,
               recipe_yaml: str | None = None) -> Path:
    """Write a model folder atomically (config.json, model.safetensors, vocab.json, stats.json, t2m.yaml)."""
    from safetensors.torch import save_file

    from dancegen.io.atomic import atomic_dir

    with atomic_dir(Path(folder), overwrite=True) as tmp:
        (tmp / "config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
        (tmp / "vocab.json").write_text(json.dumps(vocab.words[2:], indent=0) + "\n")
        (tmp / "stats.json").write_text(json.dumps({"mean": [float(v) for v in mean],
                                                    "std": [float(v) for v in std]}) + "\n")
        if recipe_yaml is not None:
            (tmp / "t2m.yaml").write_text(recipe_yaml)
        weights = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
        save_file(weights, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    return Path(folder)


class TextToMotion:
    """A text-to-motion model ready to sample: `TextToMotion.load().generate("a person jumps")` -> `Motion`.

    Args:
        net, config, vocab: the network (`build_network`), its config and word vocabulary.
        mean, std: `(67,)` feature statistics of the training motions (the network works on z-scores).
        device: torch device of `net`.
    """

    def __init__(self, net, config: T2MConfig, vocab: Vocab, mean: np.ndarray, std: np.ndarray,
                 device: str = "cpu", folder: Path | None = None):
        self.net, self.config, self.vocab = net, config, vocab
        self.mean = np.asarray(mean, np.float32)
        self.std = np.asarray(std, np.float32)
        self.device, self.folder = device, folder
        self.alphas_cumprod = cosine_alphas_cumprod(config.diffusion_steps)

    @classmethod
    def load(cls, model: str | os.PathLike | None = None, device: str = "cpu") -> TextToMotion:
        """Load a model folder; None loads the bundled `t2m-tiny`.

        Raises:
            MissingWeightsError: the folder or one of its files is missing (one line naming the path).
            InputError: a config / vocab / stats file that does not fit.
        """
        from safetensors.torch import load_file

        folder = require_t2m(model)
        try:
            config = T2MConfig(**json.loads((folder / "config.json").read_text()))
        except (TypeError, ValueError) as e:
            raise InputError(f"not a text-to-motion config ({e})", folder / "config.json") from None
        try:
            vocab = Vocab(list(json.loads((folder / "vocab.json").read_text())))
            stats = json.loads((folder / "stats.json").read_text())
            mean, std = np.asarray(stats["mean"], np.float32), np.asarray(stats["std"], np.float32)
        except (TypeError, ValueError, KeyError) as e:
            raise InputError(f"unreadable vocab.json / stats.json ({e})", folder) from None
        if mean.shape != (config.num_features,) or std.shape != (config.num_features,):
            raise InputError(f"stats.json must hold {config.num_features} means and stds", folder / "stats.json")
        net = build_network(config, len(vocab))
        try:
            net.load_state_dict({k: v.float() for k, v in load_file(str(folder / "model.safetensors")).items()})
        except RuntimeError as e:
            raise InputError(f"weights do not fit config.json / vocab.json ({str(e).splitlines()[0]})",
                             folder / "model.safetensors") from None
        return cls(net.eval().to(device), config, vocab, mean, std, device, folder)

    # -------------------------------------------------------------------------------------------- sampling
    def encode(self, texts: list[str]):
        import torch

        return torch.from_numpy(self.vocab.encode(texts, self.config.max_words)).to(self.device)

    def guided_x0(self, x, t, ids, guidance: float):
        """Classifier-free guided x0 `(B, T, 67)` of noisy z-scored motions `x` at timesteps `t` `(B,)`: one network
        call on the batch `[uncond; cond]`, then `x0_u + guidance (x0_c - x0_u)`."""
        import torch

        b = x.shape[0]
        cond = torch.cat([torch.zeros(b, dtype=torch.bool), torch.ones(b, dtype=torch.bool)]).to(x.device)
        out = self.net(torch.cat([x, x]), torch.cat([t, t]), torch.cat([ids, ids]), cond)
        uncond, conditional = out[:b], out[b:]
        return uncond + guidance * (conditional - uncond)

    def sample_features(self, texts: list[str], seeds: list[int], guidance: float = 2.5, steps: int = 50
                        ) -> np.ndarray:
        """DDIM (eta 0) samples: `(B, num_frames, 67)` z-scored features; sample b starts from the Gaussian noise of
        `torch.Generator().manual_seed(seeds[b])`, so a text and seed give the same motion in any batch (to float
        rounding)."""
        import torch

        cfg = self.config
        noise = [torch.randn(cfg.num_frames, cfg.num_features, generator=torch.Generator().manual_seed(int(s)))
                 for s in seeds]
        x = torch.stack(noise).to(self.device)
        ids = self.encode(texts)
        ab = self.alphas_cumprod
        ts = ddim_timesteps(cfg.diffusion_steps, steps)
        with torch.inference_mode():
            for k, t in enumerate(ts):
                tt = torch.full((x.shape[0],), t, dtype=torch.long, device=self.device)
                x0 = self.guided_x0(x, tt, ids, guidance)
                if k == len(ts) - 1:
                    x = x0
                    break
                a_t, a_prev = float(ab[t]), float(ab[ts[k + 1]])
                eps = (x - math.sqrt(a_t) * x0) / math.sqrt(1.0 - a_t)
                x = math.sqrt(a_prev) * x0 + math.sqrt(1.0 - a_prev) * eps
        return x.float().cpu().numpy()

    def generate_batch(self, texts: list[str], num_frames: int | None = None, seeds: list[int] | None = None,
                       guidance: float = 2.5, steps: int = 50) -> list:
        """One `Motion` per text (seeds default to 0, 1, ...); see `generate`."""
        from dancegen.motion.io import Motion

        cfg = self.config
        n = cfg.num_frames if num_frames is None else int(num_frames)
        if not 1 <= n <= cfg.num_frames:
            raise InputError(f"num_frames must be 1..{cfg.num_frames} (this model makes {cfg.num_frames} frames = "
                             f"{cfg.num_frames / cfg.fps:g} s at {cfg.fps:g} fps; shorter motions are its first "
                             f"frames), got {num_frames}")
        if steps < 1:
            raise InputError(f"steps must be positive, got {steps}")
        seeds = list(range(len(texts))) if seeds is None else [int(s) for s in seeds]
        if len(seeds) != len(texts):
            raise InputError(f"{len(texts)} texts but {len(seeds)} seeds")
        feats = self.sample_features(list(texts), seeds, guidance, steps)
        joints = [canonicalize(j)[:n] for j in from_features(feats * self.std + self.mean)]
        return [Motion(j, cfg.fps, "t2m", {"text": t, "seed": s, "guidance": float(guidance), "steps": int(steps),
                                           "model": str(self.folder) if self.folder else None})
                for j, t, s in zip(joints, texts, seeds, strict=True)]

    def generate(self, text: str, num_frames: int = 60, seed: int = 0, guidance: float = 2.5, steps: int = 50):
        """A motion for `text`: `dancegen.motion.io.Motion` (format "t2m", `fps` 20, `meta` text / seed / guidance /
        steps), joints `(num_frames, 22, 3)` metres, Y-up, floor y = 0, frame 0's pelvis at x = z = 0 facing +Z.

        The start is put back to the canonical one (`data.canonicalize`), whatever offset the network leaves. The
        model makes `config.num_frames` (60) frames; `num_frames` below that returns the first frames, above it is
        an InputError. The same text, seed, guidance and steps give the same motion.
        """
        return self.generate_batch([text], num_frames, [seed], guidance, steps)[0]

    @property
    def parameters(self) -> int:
        return sum(p.numel() for p in self.net.parameters())

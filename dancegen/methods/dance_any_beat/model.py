"""The DabFusion model: LFAE + music encoder + conditional 3D U-Net on latent flows (paper §3, spec §2).

`DanceAnyBeatModel` (an `nn.Module`, so the shared `Trainer` trains it by parameter names) holds
- ``lfae.*``: the latent flow autoencoder (stage 1);
- ``music.*``: the from-scratch music encoder on librosa features (trained with the U-Net), when the recipe uses it
  (``music.encoder: scratch``) or asks for per-frame conditioning;
- ``clap_adapter.*`` / ``wav2clip_adapter.*``: MLP adapters on frozen CLAP / Wav2CLIP embeddings (the paper's);
- ``unet.*``: the denoiser; `diffusion` (no parameters) holds the noise schedule and samplers.

The diffusion target of a clip is ``a0 = [flow (2), 2 * occlusion - 1 (1)]`` per frame, ``(B, 3, N, h, w)``, with the
flow an absolute sampling grid in [-1, 1] (LFDM). The diffusion model generates it as it is (``model.diffusion.target:
grid``, the paper's) or normalised (``normalized`` [A]: `to_diffusion` / `from_diffusion` map between the two; every
other part of the code sees a0). A model folder holds ``model.safetensors`` and
``dance_any_beat.yaml`` (the resolved recipe, which rebuilds the architecture).
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from dancegen.core.method_model import MethodModel
from dancegen.core.model_folder import MODEL_SUBDIR, FolderLayout  # noqa: F401  (MODEL_SUBDIR: train imports it)
from dancegen.errors import InputError
from dancegen.methods.dance_any_beat.config import DanceAnyBeatConfig

MODEL_FILE = "dance_any_beat.yaml"
WEIGHTS_FILE = "model.safetensors"
BUNDLED_MODEL = "dab-tiny"
TINY_RECIPE = "recipes/dance_any_beat/tiny_synth.yaml"
LAYOUT = FolderLayout(
    "dance-any-beat", MODEL_FILE, (WEIGHTS_FILE,), bundled=BUNDLED_MODEL,
    how_to_get=f"train one with `dancegen train --recipe {TINY_RECIPE} -o runs/dab-tiny` (or a recipes/dance_any_beat "
               "table recipe) and pass --model with its run folder")


def feature_dim(cfg: DanceAnyBeatConfig) -> int:
    """Width of the per-frame librosa features the scratch encoder reads (mel, onset, tempogram, beat if on)."""
    m = cfg.music
    return m.n_mels + 1 + m.tempogram_bins + (1 if m.beats else 0)


def identity_a0(h: int, w: int, device=None, dtype=None) -> torch.Tensor:
    """The a0 of no motion, `(1, 3, 1, h, w)`: the identity sampling grid and full visibility (2 * 1 - 1 = 1)."""
    from dancegen.methods.dance_any_beat.lfae import identity_grid

    ident = identity_grid(h, w, device=device, dtype=dtype).permute(0, 3, 1, 2)  # (1, 2, h, w)
    return torch.cat([ident, torch.ones_like(ident[:, :1])], dim=1)[:, :, None]


def uses_scratch_encoder(cfg: DanceAnyBeatConfig) -> bool:
    return cfg.music.encoder == "scratch" or cfg.music.per_frame


class DanceAnyBeatModel(MethodModel):
    """LFAE, music encoders and the flow U-Net of one recipe (see the module docstring)."""

    def __init__(self, config: DanceAnyBeatConfig):
        super().__init__()
        from dancegen.methods.dance_any_beat.diffusion import GaussianDiffusion
        from dancegen.methods.dance_any_beat.flow_unet import FlowUNet3D
        from dancegen.methods.dance_any_beat.lfae import LFAE
        from dancegen.methods.dance_any_beat.music import (
            EMBED_DIM,
            MLPAdapter,
            ScratchMusicEncoder,
            music_embedding_dims,
        )

        self.config = config
        m, u = config.music, config.model.unet
        self.lfae = LFAE(**asdict(config.model.lfae))
        parts = m.encoder.split("+")
        self.music = ScratchMusicEncoder(feature_dim(config), m.dim, m.layers) if uses_scratch_encoder(config) \
            else None
        # frozen embed_dim-wide embeddings in, the paper's 512-d e_c / e_w out (music_embedding_dims counts 512 each)
        self.clap_adapter = MLPAdapter(m.embed_dim, EMBED_DIM, EMBED_DIM) if "clap" in parts else None
        self.wav2clip_adapter = MLPAdapter(m.embed_dim, EMBED_DIM, EMBED_DIM) if "wav2clip" in parts else None
        self.cond_dim = music_embedding_dims(m.encoder, m.dim, config.data.num_frames, m.beats)
        self.frame_cond_dim = m.dim if m.per_frame else 0
        self.unet = FlowUNet3D(dim=u.dim, dim_mults=tuple(u.dim_mults), channels=3,
                               cond_channels=self.lfae.latent_channels, cond_dim=self.cond_dim,
                               frame_cond_dim=self.frame_cond_dim, attn_heads=u.attn_heads,
                               attn_dim_head=u.attn_dim_head, resnet_groups=u.resnet_groups,
                               use_spatial_attention=u.use_spatial_attention,
                               use_temporal_attention=u.use_temporal_attention, out_channels=3)
        d = config.model.diffusion
        self.diffusion = GaussianDiffusion(timesteps=d.timesteps, schedule=d.schedule,
                                           dynamic_threshold=d.dynamic_threshold, null_cond_prob=d.null_cond_prob,
                                           data_space=None if d.target == "grid" else
                                           (self.from_diffusion, self.to_diffusion),  # threshold a0 itself
                                           prediction=d.prediction, velocity_weight=d.velocity_weight)

    lfae_frozen = False  # stage 2: the LFAE stays in eval mode (BatchNorm statistics fixed) while the rest trains

    def train(self, mode: bool = True):
        super().train(mode)
        if self.lfae_frozen:
            self.lfae.eval()
        return self

    # ------------------------------------------------------------------------------------------------ conditioning
    def condition(self, music: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The global music embedding e (B, De) and the per-frame one (B, N, dim) or None.

        Args:
            music: ``features`` (B, N, D) per-frame librosa features (the beat column last when beats are on),
                ``beats`` (B, N) the beat vector e_b, and for the pretrained encoders ``clap`` / ``wav2clip``
                (B, music.embed_dim) frozen embeddings of the clip's audio (`pretrained.FrozenMusicEncoders`).
        """
        m = self.config.music
        pieces, frame = [], None
        if self.music is not None:
            pooled, per_frame = self.music(music["features"])
            if m.encoder == "scratch":
                pieces.append(pooled)
            frame = per_frame if m.per_frame else None
        for key, adapter in (("clap", self.clap_adapter), ("wav2clip", self.wav2clip_adapter)):
            if adapter is not None:
                if key not in music:
                    raise InputError(f"music.encoder {m.encoder} needs {key} embeddings of the audio")
                pieces.append(nn.functional.normalize(adapter(music[key]), dim=-1))  # as trained (cosine space)
        if m.beats:
            pieces.append(music["beats"])
        return torch.cat(pieces, dim=-1), frame

    # ------------------------------------------------------------------------------------------------ targets
    @torch.no_grad()
    def flow_targets(self, ref: torch.Tensor, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Stage-2 targets from the frozen LFAE: z0 (B, C, h, w) and a0 (B, 3, N, h, w) (flow grid, 2 occ - 1)."""
        b, n = frames.shape[:2]
        z0 = self.lfae.encode(ref)
        refs = ref[:, None].expand(b, n, *ref.shape[1:]).reshape(b * n, *ref.shape[1:])
        grid, occ = self.lfae.flow(refs, frames.reshape(b * n, *frames.shape[2:]))[:2]
        a0 = torch.cat([grid.permute(0, 3, 1, 2), occ * 2 - 1], dim=1)  # (B*N, 3, h, w)
        return z0, a0.reshape(b, n, 3, *a0.shape[2:]).permute(0, 2, 1, 3, 4).contiguous()

    def _target_affine(self, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(offset, scale) with diffusion value = (a0 - offset) / scale, shaped to broadcast over (B, 3, N, h, w)."""
        d = self.config.model.diffusion
        if d.target == "grid":
            return None
        if d.target_stats is None:
            raise InputError("model.diffusion.target is normalized but target_stats is unset (train fills it in)")
        flow_std, occ_mean, occ_std = d.target_stats
        offset = identity_a0(*a.shape[-2:], device=a.device, dtype=a.dtype)
        offset[:, 2] = occ_mean
        scale = torch.tensor([flow_std, flow_std, occ_std], device=a.device, dtype=a.dtype).view(1, 3, 1, 1, 1)
        return offset, scale

    def to_diffusion(self, a0: torch.Tensor) -> torch.Tensor:
        """a0 (B, 3, N, h, w) -> what the diffusion model generates (`model.diffusion.target`)."""
        aff = self._target_affine(a0)
        return a0 if aff is None else (a0 - aff[0]) / aff[1]

    def from_diffusion(self, x: torch.Tensor) -> torch.Tensor:
        """The inverse of `to_diffusion`."""
        aff = self._target_affine(x)
        return x if aff is None else x * aff[1] + aff[0]

    def denoiser(self, z0: torch.Tensor, cond: torch.Tensor | None, frame_cond: torch.Tensor | None):
        """``model_fn(x_t, t) -> eps`` (or v) for the samplers, closed over the condition."""
        return lambda x, t: self.unet(x, t, z0, cond=cond, frame_cond=frame_cond)

    def decode(self, ref: torch.Tensor, a0: torch.Tensor) -> torch.Tensor:
        """Warp the reference latent with generated flows and decode: a0 (B, 3, N, h, w) -> (B, N, 3, H, W)."""
        grids = a0[:, :2].permute(0, 2, 3, 4, 1)  # (B, N, h, w, 2)
        occ = ((a0[:, 2:3] + 1) / 2).clamp(0, 1).permute(0, 2, 1, 3, 4)  # (B, N, 1, h, w)
        return self.lfae.generate(ref, grids, occ)

    # ------------------------------------------------------------------------------------------------ folders
    def save_pretrained(self, folder: str | os.PathLike) -> Path:
        """Write the model folder atomically: weights and the resolved recipe."""
        from safetensors.torch import save_file

        def write(tmp: Path) -> None:
            sd = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
            save_file(sd, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})

        return LAYOUT.save(folder, self.config, write)

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, overrides: list[str] | None = None,
                        device=None) -> DanceAnyBeatModel:
        """Load a model folder (or a `train` output folder holding one in `model/`); weights in float32."""
        from safetensors.torch import load_file

        from dancegen.methods.dance_any_beat.config import load_recipe

        found = model_folder(folder)
        if found is None:
            raise InputError(f"not a Dance Any Beat model folder (no {MODEL_FILE} and {WEIGHTS_FILE})", path=folder)
        # where the frozen music backbones are (music.clap / wav2clip / clip) may change: a folder moved to another
        # machine finds the same CLAP / Wav2CLIP / CLIP weights elsewhere
        cfg = LAYOUT.load_recipe(found, overrides, load_recipe, fixed=lambda c: (asdict(c.model), _music_arch(c)))
        model = cls(cfg)
        sd = {k: v.float() if v.is_floating_point() else v for k, v in load_file(found / WEIGHTS_FILE).items()}
        missing, unexpected = model.load_state_dict(sd, strict=False)
        if missing or unexpected:
            raise InputError(f"weights do not match the recipe ({len(missing)} missing, {len(unexpected)} unexpected, "
                             f"e.g. {(list(missing) + list(unexpected))[:2]})", path=found / WEIGHTS_FILE)
        model.eval().requires_grad_(False)
        return model.to(device) if device is not None else model


def _music_arch(cfg: DanceAnyBeatConfig) -> dict:
    """`music.*` without the locations of the frozen backbones (a model folder moved to another machine may find
    the same CLAP / Wav2CLIP / CLIP weights elsewhere: `--set music.clap=PATH` is allowed)."""
    return {k: v for k, v in asdict(cfg.music).items() if k not in ("clap", "wav2clip", "clip")}


def model_folder(path: str | os.PathLike) -> Path | None:
    """The model folder at `path` (or `path/model/`), or None."""
    return LAYOUT.find(path)


def bundled_model_path() -> Path:
    return LAYOUT.bundled_path()


def resolve_model_folder(model: str | os.PathLike | None) -> Path:
    """A trained model folder, a bundled model name, or None for the bundled default.

    Raises:
        MissingWeightsError: nothing found, with how to train or pass one.
    """
    return LAYOUT.resolve(model)


def load_init(model: DanceAnyBeatModel, source: str | os.PathLike) -> dict[str, int]:
    """Initialise from a trained folder (`model.init_from`): every part whose tensors match is copied.

    Returns:
        Tensors loaded per part (``lfae``, ``music``, ``unet``, ...).
    """
    from safetensors.torch import load_file

    found = model_folder(source)
    if found is None:
        raise InputError("model.init_from must be a Dance Any Beat model folder", path=source)
    sd = load_file(found / WEIGHTS_FILE)
    own = model.state_dict()
    counts: dict[str, int] = {}
    for part in ("lfae", "music", "clap_adapter", "wav2clip_adapter", "unet"):
        theirs = {k: v for k, v in sd.items() if k.startswith(part + ".")}
        mine = {k: v for k, v in own.items() if k.startswith(part + ".")}
        if not theirs or not mine:
            continue
        if set(theirs) != set(mine) or any(theirs[k].shape != mine[k].shape for k in mine):
            if part == "lfae":
                raise InputError("model.init_from: its LFAE does not match this recipe's model.lfae", path=found)
            continue  # e.g. a U-Net for another clip length: that part starts fresh
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in theirs.items()}, strict=False)
        counts[part] = len(theirs)
    return counts

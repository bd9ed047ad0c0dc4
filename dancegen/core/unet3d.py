"""Video UNet: a pretrained SD-1.x `UNet2DConditionModel` inflated to video (Dance-Your-Latents §4.2 / spec §2.3).

Frames are folded into the batch, so every pretrained 2D op (resnets, spatial attention, cross-attention) runs per
frame on ``(B*F, C, H, W)``; a temporal block is inserted after every spatial ``Transformer2DModel`` (16 insertion
points in SD-1.5, spec §2.3 [choice]) and sees the tokens of all frames. The temporal blocks come from
``dancegen.core.stsa.make_temporal_block`` ("stsa" or "temporal"); they carry the frame position embeddings and
start as the identity (zero-initialised output), so at initialisation the video UNet equals the image UNet applied
frame by frame. ``spatial_attn`` installs ``FrameAttnProcessor`` on every spatial self-attention (attn1) for the
cross-frame / sparse-causal / RCA variants (spec §6 item 6, Edit-Your-Motion §2.5).

Insertion is done with a PyTorch forward hook on each host ``Transformer2DModel`` rather than by wrapping it in a new
module. Deviation from CORE_CONTRACT.md's ``TransformerWithTemporal`` wording, for one reason: the wrapped UNet stays
a genuine ``UNet2DConditionModel`` with the original module tree, so (1) its state-dict keys are exactly the
pretrained SD keys (``video_unet.unet.load_state_dict(sd15_unet_state_dict)`` works), and (2) diffusers'
``ControlNetModel.from_unet(video_unet.unet)`` still works (it copies ``down_blocks`` by key). The hook only acts
while a ``FrameContext`` is set (i.e. inside ``VideoUNet.forward`` / ``frame_context``); called directly, ``.unet``
is the plain image model. Nothing here touches ``forward`` methods.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import torch
from diffusers import UNet2DConditionModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.transformers.transformer_2d import Transformer2DModel
from diffusers.utils import BaseOutput
from torch import nn

from dancegen.core.context import FrameContext, FrameContextHolder

TEMPORAL_KINDS = ("stsa", "temporal", "none")
SPATIAL_ATTN_MODES = ("self", "first", "middle", "previous", "all", "sparse_causal", "rca")
PARAMETER_GROUPS = ("temporal", "spatial_attn", "unet")

# SD-1.x UNet config (runwayml/stable-diffusion-v1-5 and lambdalabs/sd-image-variations-diffusers share it; both
# have cross_attention_dim 768): for building the full-size model with random weights (tests, memory estimates).
SD15_UNET_CONFIG: dict = {
    "sample_size": 64, "in_channels": 4, "out_channels": 4, "layers_per_block": 2, "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280], "cross_attention_dim": 768, "norm_num_groups": 32,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "act_fn": "silu", "center_input_sample": False, "downsample_padding": 1, "flip_sin_to_cos": True, "freq_shift": 0,
    "mid_block_scale_factor": 1, "norm_eps": 1e-5,
}

# Tiny UNet of the same layout family (stack-notes.md §3): 2 levels, channels (32, 64), 0.79M parameters.
TINY_UNET_CONFIG: dict = {
    "sample_size": 16, "in_channels": 4, "out_channels": 4, "layers_per_block": 1, "attention_head_dim": 8,
    "block_out_channels": [32, 64], "cross_attention_dim": 32, "norm_num_groups": 32,
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"], "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
}


@dataclass
class VideoUNetOutput(BaseOutput):
    """Output of ``VideoUNet.forward``.

    Attributes:
        sample: ``(B, C, F, H, W)`` model prediction (eps / v / x0, whatever the UNet was trained for).
    """

    sample: torch.Tensor


def _module_key(path: str) -> str:
    """ModuleDict key for a module path (ModuleDict keys cannot contain dots)."""
    return path.replace(".", "_")


class TemporalInsert(nn.Module):
    """One inserted temporal block plus the token reshaping around it.

    Takes the host transformer's output ``(B*F, C, h, w)``, runs ``block(tokens (B*F, h*w, C), ctx, h, w)`` and
    returns ``(B*F, C, h, w)``. ``gradient_checkpointing`` is set by ``ModelMixin.enable_gradient_checkpointing``.

    Args:
        block: a module with ``forward(hidden (B*F, N, C), ctx: FrameContext, height, width) -> (B*F, N, C)``.
        path: module path of the host transformer inside the UNet (for messages and parameter names).
    """

    def __init__(self, block: nn.Module, path: str):
        super().__init__()
        self.block = block
        self.path = path
        self.gradient_checkpointing = False
        self._gradient_checkpointing_func = None

    def forward(self, hidden: torch.Tensor, ctx: FrameContext) -> torch.Tensor:
        bf, c, h, w = hidden.shape
        if bf % ctx.num_frames:
            raise ValueError(f"{self.path}: batch {bf} is not a multiple of num_frames={ctx.num_frames}")
        tokens = hidden.permute(0, 2, 3, 1).reshape(bf, h * w, c)
        if self.gradient_checkpointing and torch.is_grad_enabled() and self._gradient_checkpointing_func is not None:
            tokens = self._gradient_checkpointing_func(self.block, tokens, ctx, h, w)
        else:
            tokens = self.block(tokens, ctx, h, w)
        return tokens.reshape(bf, h, w, c).permute(0, 3, 1, 2).contiguous()


class _TemporalHook:
    """Forward hook on a host ``Transformer2DModel``: applies its ``TemporalInsert`` while a FrameContext is set.

    A callable object (not a closure) so ``copy.deepcopy`` of the model re-points it at the copied block.
    """

    def __init__(self, insert: TemporalInsert, holder: FrameContextHolder):
        self.insert = insert
        self.holder = holder

    def __call__(self, module: nn.Module, args: Any, output: Any) -> Any:
        ctx = self.holder.peek()
        if ctx is None:
            return None  # plain image model outside a frame context
        if isinstance(output, tuple):
            return (self.insert(output[0], ctx),) + tuple(output[1:])
        output.sample = self.insert(output.sample, ctx)
        return output


class VideoUNet(ModelMixin, ConfigMixin):
    """SD-1.x UNet inflated to video: per-frame 2D ops, inserted temporal blocks, frame-aware spatial attention.

    Build it from a pretrained image UNet with ``VideoUNet.from_unet2d(unet2d, temporal=..., spatial_attn=...)``;
    ``save_pretrained`` / ``from_pretrained`` round-trip it (config + safetensors). Parameters are named
    ``unet.<original SD key>`` and ``temporal_blocks.<host path with _>.block.<...>``.

    Args:
        unet_config: the ``UNet2DConditionModel`` config (a plain dict).
        unet: an existing image UNet to adopt instead of building one from ``unet_config`` (not saved in the
            config; ``from_unet2d`` passes it).
        temporal_factory: optional ``factory(kind, dim, heads, **kw)`` replacing ``make_temporal_block``.
        temporal: "stsa" (Dance-Your-Latents STSA pair), "temporal" (VDM-style per-pixel attention over frames) or
            "none" (frame-by-frame "VD" baseline with no new parameters).
        spatial_attn: attn1 mode, one of ``SPATIAL_ATTN_MODES``; "self" keeps the pretrained per-frame attention.
        temporal_kwargs: extra keyword arguments for ``make_temporal_block`` (e.g. ``subspace_size``, ``shift``,
            ``ff``, ``frame_pos_emb`` for STSA; ``zero_init`` for temporal attention).
        temporal_locations: which host transformers get a block: "all", or a list of path prefixes
            (e.g. ``["down_blocks", "mid_block"]``).
    """

    _supports_gradient_checkpointing = True
    # Live objects passed by `from_unet2d`; not part of the saved config.
    ignore_for_config = ["unet", "temporal_factory"]

    @register_to_config
    def __init__(
        self,
        unet_config: dict | None = None,
        temporal: str = "stsa",
        spatial_attn: str = "self",
        temporal_kwargs: dict | None = None,
        temporal_locations: str | list[str] = "all",
        unet: UNet2DConditionModel | None = None,
        temporal_factory: Any = None,
    ):
        super().__init__()
        if temporal not in TEMPORAL_KINDS:
            raise ValueError(f"temporal must be one of {TEMPORAL_KINDS}, got {temporal!r}")
        if spatial_attn not in SPATIAL_ATTN_MODES:
            raise ValueError(f"spatial_attn must be one of {SPATIAL_ATTN_MODES}, got {spatial_attn!r}")
        if unet is None:
            if unet_config is None:
                raise ValueError("VideoUNet needs unet_config (or use VideoUNet.from_unet2d)")
            unet = UNet2DConditionModel.from_config(unet_config)
        self.unet = unet
        self.holder = FrameContextHolder()
        self.gradient_checkpointing = False
        self.temporal_blocks = nn.ModuleDict()
        self._hook_handles: list = []
        self.temporal_paths: dict[str, str] = {}
        if temporal != "none":
            self._insert_temporal_blocks(temporal, dict(temporal_kwargs or {}), temporal_locations, temporal_factory)
        self._install_spatial_attn(spatial_attn)

    # ----------------------------------------------------------------------------------------------- construction
    @classmethod
    def from_unet2d(
        cls,
        unet2d: UNet2DConditionModel,
        temporal: str = "stsa",
        spatial_attn: str = "self",
        temporal_locations: str | list[str] = "all",
        temporal_factory: Any = None,
        **temporal_kwargs: Any,
    ) -> VideoUNet:
        """Inflate a (pretrained) image UNet. The UNet is adopted, not copied: its weights are shared.

        Args:
            unet2d: the image UNet (e.g. ``UNet2DConditionModel.from_pretrained(path, subfolder="unet")``).
            temporal: "stsa" | "temporal" | "none".
            spatial_attn: attn1 mode (``SPATIAL_ATTN_MODES``).
            temporal_locations: "all" or a list of host-path prefixes.
            temporal_factory: optional ``factory(kind, dim, heads, **kw) -> nn.Module`` replacing
                ``dancegen.core.stsa.make_temporal_block`` (models built this way cannot be reloaded with
                ``from_pretrained`` unless the same factory is passed again).
            **temporal_kwargs: passed to the factory (``subspace_size=(4, 4, 4)``, ``shift=True``, ...).

        Returns:
            The video UNet, on the image UNet's device and dtype.
        """
        config = {k: v for k, v in dict(unet2d.config).items() if not k.startswith("_")}
        model = cls(
            unet_config=config,
            temporal=temporal,
            spatial_attn=spatial_attn,
            temporal_kwargs=_jsonable(temporal_kwargs),
            temporal_locations=temporal_locations,
            unet=unet2d,
            temporal_factory=temporal_factory,
        )
        return model

    def _insert_temporal_blocks(self, kind: str, kw: dict, locations: str | list[str], factory: Any) -> None:
        if factory is None:
            from dancegen.core.stsa import make_temporal_block as factory
        prefixes = None if locations == "all" else [str(p) for p in locations]
        hosts = [(n, m) for n, m in self.unet.named_modules() if isinstance(m, Transformer2DModel)]
        for path, host in hosts:
            if prefixes is not None and not any(path.startswith(p) for p in prefixes):
                continue
            dim = host.config.out_channels or host.config.in_channels
            heads = host.config.num_attention_heads
            p = next(host.parameters())
            block = factory(kind, dim, heads, **kw).to(device=p.device, dtype=p.dtype)
            insert = TemporalInsert(block, path)
            key = _module_key(path)
            self.temporal_blocks[key] = insert
            self.temporal_paths[path] = key
            self._hook_handles.append(host.register_forward_hook(_TemporalHook(insert, self.holder)))

    def _install_spatial_attn(self, mode: str) -> None:
        if mode == "self":
            return
        from dancegen.core.attention import FrameAttnProcessor

        procs = {}
        for name, proc in self.unet.attn_processors.items():
            procs[name] = FrameAttnProcessor(self.holder, mode) if name.endswith("attn1.processor") else proc
        self.unet.set_attn_processor(procs)

    # -------------------------------------------------------------------------------------------------- context
    @contextmanager
    def frame_context(self, ctx: FrameContext | int) -> Iterator[FrameContext]:
        """Set the per-call frame context for direct ``.unet`` calls on folded ``(B*F, C, H, W)`` input.

        ``forward`` sets one itself; use this when calling ``self.unet`` (or hooks/processors) directly, or to pass
        ``extra`` data that ``forward`` then keeps (it reuses a context with the same ``num_frames``).
        """
        if isinstance(ctx, int):
            ctx = FrameContext(num_frames=ctx)
        with self.holder.use(ctx) as c:
            yield c

    # -------------------------------------------------------------------------------------------------- forward
    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor,
        down_block_additional_residuals: Iterable[torch.Tensor] | None = None,
        mid_block_additional_residual: torch.Tensor | None = None,
        flow_to_ref: torch.Tensor | dict[int, torch.Tensor] | None = None,
        cross_attention_kwargs: dict | None = None,
        added_cond_kwargs: dict | None = None,
        class_labels: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> VideoUNetOutput | tuple[torch.Tensor]:
        """Denoise a batch of clips.

        Args:
            sample: ``(B, C, F, H, W)`` noisy latents.
            timestep: scalar, ``(B,)`` (one per clip) or ``(B*F,)`` (one per frame).
            encoder_hidden_states: ``(B, L, D)`` shared by the frames of a clip, or ``(B*F, L, D)`` per frame.
            down_block_additional_residuals: ControlNet residuals per frame, each ``(B*F, C_k, H_k, W_k)``.
            mid_block_additional_residual: ``(B*F, C_mid, H_mid, W_mid)``.
            flow_to_ref: motion-flow-guided align (DYL §4.4): ``{frame_offset: (B, F, 2, H, W)}`` flows in latent
                pixels from each frame to its subspace reference frame, one entry per subspace partition: offset 0 for
                the unshifted half and ``s_f // 2`` for the shifted half of every STSA block
                (`dancegen.core.align.required_reference_frames(F, s_f)` names the target frames). A single tensor
                serves only the unshifted half (valid when the shift is off or F <= s_f). None: no align.
            cross_attention_kwargs / added_cond_kwargs / class_labels: passed to the image UNet unchanged.
            return_dict: return ``VideoUNetOutput`` (True) or a tuple.

        Returns:
            ``(B, C_out, F, H, W)`` prediction.
        """
        b, c, f, h, w = sample.shape
        x = sample.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
        t = _per_frame_timestep(timestep, b, f, sample.device)
        ehs = _per_frame(encoder_hidden_states, b, f, "encoder_hidden_states")
        if class_labels is not None:
            class_labels = _per_frame(class_labels, b, f, "class_labels")
        if added_cond_kwargs:
            added_cond_kwargs = {k: _per_frame(v, b, f, k) for k, v in added_cond_kwargs.items()}
        ctx = self.holder.peek()
        if ctx is None or ctx.num_frames != f:
            ctx = FrameContext(num_frames=f, flow_to_ref=flow_to_ref)
        elif flow_to_ref is not None:
            ctx = replace(ctx, flow_to_ref=flow_to_ref, flows=None)
        with self.holder.use(ctx):
            out = self.unet(
                x,
                t,
                encoder_hidden_states=ehs,
                down_block_additional_residuals=(
                    tuple(down_block_additional_residuals) if down_block_additional_residuals is not None else None
                ),
                mid_block_additional_residual=mid_block_additional_residual,
                cross_attention_kwargs=cross_attention_kwargs,
                added_cond_kwargs=added_cond_kwargs,
                class_labels=class_labels,
                return_dict=False,
            )[0]
        out = out.reshape(b, f, *out.shape[1:]).permute(0, 2, 1, 3, 4)
        return VideoUNetOutput(sample=out) if return_dict else (out,)

    # --------------------------------------------------------------------------------------- parameter groups
    def parameter_groups(self) -> dict[str, dict[str, nn.Parameter]]:
        """Named, disjoint parameter groups for freezing by name (DYL §3 stages, Edit-Your-Motion STL).

        Returns:
            ``{"temporal": ..., "spatial_attn": ..., "unet": ...}``, each ``{parameter name: parameter}``:
            ``temporal`` = inserted blocks, ``spatial_attn`` = every attn1 (q, k, v, out) of the image UNet (the
            RCA / cross-frame weights), ``unet`` = the rest of the image UNet.
        """
        groups: dict[str, dict[str, nn.Parameter]] = {g: {} for g in PARAMETER_GROUPS}
        for name, p in self.named_parameters():
            if name.startswith("temporal_blocks."):
                groups["temporal"][name] = p
            elif ".attn1." in name:
                groups["spatial_attn"][name] = p
            else:
                groups["unet"][name] = p
        return groups

    def trainable_parameters(self, groups: Iterable[str]) -> list[nn.Parameter]:
        """Make exactly the named groups / parameter-name patterns trainable and freeze everything else.

        Args:
            groups: group names from ``PARAMETER_GROUPS`` and/or fnmatch patterns over full parameter names (e.g.
                ``"unet.*attn1.to_q.*"`` for Edit-Your-Motion's ``rca_trainable: q_only``).

        Returns:
            The trainable parameters, in ``named_parameters`` order (ready for an optimizer).

        Raises:
            ValueError: a pattern that matches no parameter (a typo would otherwise silently freeze everything).
        """
        table = self.parameter_groups()
        selected: set[str] = set()
        for g in groups:
            if g in table:
                selected.update(table[g])
                continue
            hits = [n for n, _ in self.named_parameters() if fnmatch.fnmatchcase(n, g)]
            if not hits:
                raise ValueError(f"{g!r} is neither a parameter group {PARAMETER_GROUPS} nor matches a parameter name")
            selected.update(hits)
        out = []
        for name, p in self.named_parameters():
            p.requires_grad_(name in selected)
            if name in selected:
                out.append(p)
        return out

    def num_parameters_by_group(self) -> dict[str, int]:
        """Parameter counts per group (for logs and the inflation report)."""
        return {g: sum(p.numel() for p in ps.values()) for g, ps in self.parameter_groups().items()}

    @property
    def in_channels(self) -> int:
        return self.unet.config.in_channels


def _jsonable(kw: dict) -> dict:
    """Tuples -> lists so the config survives a JSON round trip unchanged."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in kw.items()}


def _per_frame_timestep(t: torch.Tensor | float | int, b: int, f: int, device: torch.device) -> torch.Tensor:
    t = torch.as_tensor(t, device=device)
    if t.ndim == 0:
        return t.expand(b * f)
    if t.shape[0] == b * f:
        return t
    if t.shape[0] == b:
        return t.repeat_interleave(f)
    if t.shape[0] == 1:
        return t.expand(b * f)
    raise ValueError(f"timestep has {t.shape[0]} entries; expected 1, B={b} or B*F={b * f}")


def _per_frame(x: torch.Tensor, b: int, f: int, name: str) -> torch.Tensor:
    """``(B, ...)`` shared by frames -> ``(B*F, ...)`` (frame-major); ``(B*F, ...)`` passes through."""
    if x.shape[0] == b * f:
        return x
    if x.shape[0] == b:
        return x.repeat_interleave(f, dim=0)
    raise ValueError(f"{name} has batch {x.shape[0]}; expected B={b} or B*F={b * f}")

"""Video UNet: a pretrained SD-1.x `UNet2DConditionModel` inflated to video (Dance-Your-Latents §4.2 / spec §2.3).

Frames are folded into the batch, so every pretrained 2D op (resnets, spatial attention, cross-attention) runs per
frame on ``(B*F, C, H, W)``; temporal blocks see the tokens of all frames. Where they go is ``temporal_position``:

- ``"after_block"`` (default): one block after every spatial ``Transformer2DModel`` (16 insertion points in SD-1.5,
  DYL spec §2.3 [choice]); parameters ``temporal_blocks.<transformer path with _>.block.<...>``.
- ``"after_cross_attn"``: one block inside every ``BasicTransformerBlock``, between the text cross-attention and the
  feed-forward, in Edit-Your-Motion §2.2's order: ``x = x + attn1(n1 x); x = x + attn2(n2 x); x = temporal(x);
  x = x + ff(n3 x)`` (the temporal block carries its own residual); parameters
  ``temporal_blocks.<transformer-block path with _>.block.<...>``, e.g.
  ``temporal_blocks.down_blocks_0_attentions_0_transformer_blocks_0.block.attn1.to_q.weight``.

The temporal blocks come from ``dancegen.core.stsa.make_temporal_block`` ("stsa" or "temporal"); they carry the
frame position embeddings and start as the identity (zero-initialised output), so at initialisation the video UNet
equals the image UNet applied frame by frame, in both positions. ``spatial_attn`` installs ``FrameAttnProcessor`` on
every spatial self-attention (attn1) for the cross-frame / sparse-causal / RCA variants (spec §6 item 6,
Edit-Your-Motion §2.5).

Insertion is done with PyTorch forward hooks rather than by wrapping modules: for "after_block" a forward hook on each
host ``Transformer2DModel``; for "after_cross_attn" a pre-hook on the transformer block's ``norm2`` keeps the residual
stream ``x`` entering the cross-attention and a forward hook on ``attn2`` replaces its output ``a`` by
``a + (T(x + a) - (x + a))``, so the block's own ``hidden = attn_output + x`` becomes ``T(x + a)`` (a pre-hook on the
host records the token grid ``h, w`` that STSA needs). Hooks rather than a wrapper module (a "transformer with
temporal" class), for one reason: the wrapped UNet stays a genuine ``UNet2DConditionModel`` with the original module
tree, so
(1) its state-dict keys are exactly the pretrained SD keys (``video_unet.unet.load_state_dict(sd15_unet_state_dict)``
works), and (2) diffusers' ``ControlNetModel.from_unet(video_unet.unet)`` still works (it copies ``down_blocks`` by
key). The hooks only act while a ``FrameContext`` is set (i.e. inside ``VideoUNet.forward`` / ``frame_context``);
called directly, ``.unet`` is the plain image model. Nothing here touches ``forward`` methods. Because diffusers
checkpoints each transformer block and recomputes it during backward (after the frame context is gone),
``enable_gradient_checkpointing`` wraps the checkpoint function so the recomputation runs under the frame context of
the original call.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.utils.checkpoint
from diffusers import UNet2DConditionModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.transformers.transformer_2d import Transformer2DModel
from diffusers.utils import BaseOutput
from torch import nn

from dancegen.core.context import FrameContext, FrameContextHolder
from dancegen.core.controlnet import ControlResiduals, ResidualHook, control_residuals
from dancegen.core.sd_configs import SD15_UNET_CONFIG  # noqa: F401  (re-exported: the published SD-1.x UNet config)

TEMPORAL_KINDS = ("stsa", "temporal", "none")
TEMPORAL_POSITIONS = ("after_block", "after_cross_attn")
SPATIAL_ATTN_MODES = ("self", "first", "middle", "previous", "all", "sparse_causal", "rca")
PARAMETER_GROUPS = ("temporal", "spatial_attn", "unet")

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
    returns ``(B*F, C, h, w)`` ("after_block"); ``tokens`` runs it on tokens directly ("after_cross_attn").
    ``gradient_checkpointing`` is set by ``ModelMixin.enable_gradient_checkpointing``.

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
        """``(B*F, C, h, w)`` feature map -> same shape, through the block on its ``(B*F, h*w, C)`` tokens."""
        bf, c, h, w = hidden.shape
        tokens = hidden.permute(0, 2, 3, 1).reshape(bf, h * w, c)
        return self.tokens(tokens, ctx, h, w).reshape(bf, h, w, c).permute(0, 3, 1, 2).contiguous()

    def tokens(self, tokens: torch.Tensor, ctx: FrameContext, height: int, width: int) -> torch.Tensor:
        """Run the block on ``(B*F, h*w, C)`` tokens (the "after_cross_attn" position calls this directly)."""
        bf = tokens.shape[0]
        if bf % ctx.num_frames:
            raise ValueError(f"{self.path}: batch {bf} is not a multiple of num_frames={ctx.num_frames}")
        if self.gradient_checkpointing and torch.is_grad_enabled() and self._gradient_checkpointing_func is not None:
            return self._gradient_checkpointing_func(self.block, tokens, ctx, height, width)
        return self.block(tokens, ctx, height, width)


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


class _TokenGrid:
    """Forward pre-hook on a host ``Transformer2DModel``: records the ``(h, w)`` of its ``(B*F, C, h, w)`` input.

    Its transformer blocks only see ``(B*F, h*w, C)`` tokens, and STSA needs the grid. The value persists until the
    host's next call; a checkpoint recomputation restores the value of its own call (``_FrameCheckpoint``).
    """

    def __init__(self) -> None:
        self.hw: tuple[int, int] | None = None

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        hidden = args[0] if args else kwargs["hidden_states"]
        self.hw = (int(hidden.shape[-2]), int(hidden.shape[-1]))


class _AfterCrossAttnHook:
    """Temporal block between a ``BasicTransformerBlock``'s cross-attention and its feed-forward (EYM §2.2 order).

    ``stash`` (pre-hook on the norm before the hooked attention) keeps the residual stream ``x`` entering it; the
    forward hook on the attention turns its output ``a`` into ``a + (T(x + a) - (x + a))``. The block then adds
    ``x`` itself, so the stream entering the feed-forward is ``T(x + a)`` (up to float rounding of the extra add and
    subtract; exactly ``x + a`` while ``T`` is the identity, e.g. at initialisation). Acts only while a FrameContext
    is set, like ``_TemporalHook``.
    """

    def __init__(self, insert: TemporalInsert, holder: FrameContextHolder, grid: _TokenGrid):
        self.insert = insert
        self.holder = holder
        self.grid = grid
        self.residual: torch.Tensor | None = None

    def stash(self, module: nn.Module, args: tuple) -> None:
        self.residual = args[0] if self.holder.peek() is not None else None

    def __call__(self, module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor | None:
        ctx = self.holder.peek()
        if ctx is None:
            return None
        x, self.residual = self.residual, None  # do not keep the activation alive past this call
        if x is None or self.grid.hw is None:
            raise RuntimeError(f"{self.insert.path}: the attention ran without its norm / host pre-hooks")
        y = output + x  # what the block computes next (`attn_output + hidden_states`)
        return output + (self.insert.tokens(y, ctx, *self.grid.hw) - y)


class _InFrameState:
    """A callable running ``module`` under a saved frame context and token grids (see ``_FrameCheckpoint``)."""

    def __init__(self, module: Any, holder: FrameContextHolder, ctx: FrameContext | None,
                 grids: list[tuple[_TokenGrid, tuple[int, int] | None]]):
        self.module, self.holder, self.ctx, self.grids = module, holder, ctx, grids

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        saved = [(g, g.hw) for g, _ in self.grids]
        for g, hw in self.grids:
            g.hw = hw
        try:
            with self.holder.use(self.ctx):
                return self.module(*args, **kwargs)
        finally:
            for g, hw in saved:
                g.hw = hw


class _FrameCheckpoint:
    """Wrap a diffusers gradient-checkpointing function so a recomputation sees the original call's frame state.

    diffusers checkpoints every ``BasicTransformerBlock``; the recomputation runs during ``backward``, when the
    ``FrameContext`` of the forward call is no longer set, so hooks inside the block (the "after_cross_attn"
    temporal blocks, MasaCtrl's step gating) would compute something else. The wrapper snapshots the context and
    the token grids at forward time and re-installs them around the checkpointed call.
    """

    def __init__(self, func: Any, holder: FrameContextHolder, grids: list[_TokenGrid]):
        self.func, self.holder, self.grids = func, holder, grids

    def __call__(self, module: Any, *args: Any, **kwargs: Any) -> Any:
        ctx = self.holder.peek()
        if ctx is None:
            return self.func(module, *args, **kwargs)
        snapshot = _InFrameState(module, self.holder, ctx, [(g, g.hw) for g in self.grids])
        return self.func(snapshot, *args, **kwargs)


def _default_checkpoint(module: Any, *args: Any, **kwargs: Any) -> Any:
    """Non-reentrant ``torch.utils.checkpoint`` (what ``ModelMixin.enable_gradient_checkpointing`` uses by default)."""
    return torch.utils.checkpoint.checkpoint(module.__call__, *args, use_reentrant=False, **kwargs)


class VideoUNet(ModelMixin, ConfigMixin):
    """SD-1.x UNet inflated to video: per-frame 2D ops, inserted temporal blocks, frame-aware spatial attention.

    Build it from a pretrained image UNet with ``VideoUNet.from_unet2d(unet2d, temporal=..., spatial_attn=...)``;
    ``save_pretrained`` / ``from_pretrained`` round-trip it (config + safetensors). Parameters are named
    ``unet.<original SD key>`` and ``temporal_blocks.<host path with _>.block.<...>``, the host being the
    ``Transformer2DModel`` ("after_block") or the ``BasicTransformerBlock`` ("after_cross_attn").

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
            (e.g. ``["down_blocks", "mid_block"]``); with "after_cross_attn" every transformer block of a selected
            host gets one.
        temporal_position: "after_block" (after each ``Transformer2DModel``; configs saved before this option
            existed load as this) or "after_cross_attn" (inside each transformer block, between cross-attention and
            feed-forward, Edit-Your-Motion §2.2).
        spatial_attn_kwargs: extra ``FrameAttnProcessor`` arguments (RCA's ``value_frames``, ``include_self``).
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
        temporal_position: str = "after_block",
        unet: UNet2DConditionModel | None = None,
        temporal_factory: Any = None,
        spatial_attn_kwargs: dict | None = None,
    ):
        super().__init__()
        if temporal not in TEMPORAL_KINDS:
            raise ValueError(f"temporal must be one of {TEMPORAL_KINDS}, got {temporal!r}")
        if spatial_attn not in SPATIAL_ATTN_MODES:
            raise ValueError(f"spatial_attn must be one of {SPATIAL_ATTN_MODES}, got {spatial_attn!r}")
        if temporal_position not in TEMPORAL_POSITIONS:
            raise ValueError(f"temporal_position must be one of {TEMPORAL_POSITIONS}, got {temporal_position!r}")
        if unet is None:
            if unet_config is None:
                raise ValueError("VideoUNet needs unet_config (or use VideoUNet.from_unet2d)")
            unet = UNet2DConditionModel.from_config(unet_config)
        self.unet = unet
        self.holder = FrameContextHolder()
        self.gradient_checkpointing = False
        self.temporal_blocks = nn.ModuleDict()
        self._hook_handles: list = []
        self._token_grids: list[_TokenGrid] = []
        self.temporal_paths: dict[str, str] = {}
        if temporal != "none":
            self._insert_temporal_blocks(temporal, dict(temporal_kwargs or {}), temporal_locations, temporal_factory,
                                         temporal_position)
        self._install_spatial_attn(spatial_attn, dict(spatial_attn_kwargs or {}))

    # ----------------------------------------------------------------------------------------------- construction
    @classmethod
    def from_unet2d(
        cls,
        unet2d: UNet2DConditionModel,
        temporal: str = "stsa",
        spatial_attn: str = "self",
        temporal_locations: str | list[str] = "all",
        temporal_factory: Any = None,
        temporal_position: str = "after_block",
        spatial_attn_kwargs: dict | None = None,
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
            temporal_position: "after_block" | "after_cross_attn" (see the class docstring).
            spatial_attn_kwargs: extra ``FrameAttnProcessor`` arguments, e.g. RCA's ``value_frames`` /
                ``include_self`` (Edit-Your-Motion §2.5).
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
            temporal_position=temporal_position,
            unet=unet2d,
            temporal_factory=temporal_factory,
            spatial_attn_kwargs=spatial_attn_kwargs,
        )
        return model

    def _insert_temporal_blocks(self, kind: str, kw: dict, locations: str | list[str], factory: Any,
                                position: str) -> None:
        if factory is None:
            from dancegen.core.stsa import make_temporal_block as factory
        prefixes = None if locations == "all" else [str(p) for p in locations]
        hosts = [(n, m) for n, m in self.unet.named_modules() if isinstance(m, Transformer2DModel)]
        for path, host in hosts:
            if prefixes is not None and not any(path.startswith(p) for p in prefixes):
                continue
            heads = host.config.num_attention_heads
            p = next(host.parameters())
            if position == "after_block":
                dim = host.config.out_channels or host.config.in_channels
                block = factory(kind, dim, heads, **kw).to(device=p.device, dtype=p.dtype)
                insert = self._add_insert(block, path)
                self._hook_handles.append(host.register_forward_hook(_TemporalHook(insert, self.holder)))
                continue
            if not host.is_input_continuous:
                raise ValueError(f"{path}: temporal_position='after_cross_attn' needs a continuous-input "
                                 "Transformer2DModel (tokens on an h x w grid)")
            grid = _TokenGrid()
            self._token_grids.append(grid)
            self._hook_handles.append(host.register_forward_pre_hook(grid, with_kwargs=True))
            for i, tb in enumerate(host.transformer_blocks):
                tb_path = f"{path}.transformer_blocks.{i}"
                if not isinstance(tb, BasicTransformerBlock) or tb.norm_type != "layer_norm":
                    raise ValueError(f"{tb_path}: temporal_position='after_cross_attn' supports BasicTransformerBlock "
                                     f"with norm_type='layer_norm' (SD-1.x), got {type(tb).__name__}")
                # the last attention before the feed-forward: cross-attention, or self-attention if there is none
                attn, norm = (tb.attn2, tb.norm2) if tb.attn2 is not None else (tb.attn1, tb.norm1)
                block = factory(kind, host.inner_dim, heads, **kw).to(device=p.device, dtype=p.dtype)
                hook = _AfterCrossAttnHook(self._add_insert(block, tb_path), self.holder, grid)
                self._hook_handles.append(norm.register_forward_pre_hook(hook.stash))
                self._hook_handles.append(attn.register_forward_hook(hook))

    def _add_insert(self, block: nn.Module, path: str) -> TemporalInsert:
        insert = TemporalInsert(block, path)
        key = _module_key(path)
        self.temporal_blocks[key] = insert
        self.temporal_paths[path] = key
        return insert

    def _install_spatial_attn(self, mode: str, kwargs: dict) -> None:
        if mode == "self":
            return
        from dancegen.core.attention import FrameAttnProcessor

        procs = {}
        for name, proc in self.unet.attn_processors.items():
            procs[name] = FrameAttnProcessor(self.holder, mode, **kwargs) if name.endswith("attn1.processor") else proc
        self.unet.set_attn_processor(procs)

    def enable_gradient_checkpointing(self, gradient_checkpointing_func: Any = None) -> None:
        """``ModelMixin.enable_gradient_checkpointing`` with the checkpoint function wrapped so that recomputed
        blocks run under the frame context (and token grids) of their forward call (see ``_FrameCheckpoint``).

        Args:
            gradient_checkpointing_func: ``func(module, *args)``; default: non-reentrant ``torch.utils.checkpoint``.
        """
        func = gradient_checkpointing_func or _default_checkpoint
        super().enable_gradient_checkpointing(_FrameCheckpoint(func, self.holder, self._token_grids))

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
        residual_hook: ResidualHook | None = None,
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
            residual_hook: ``hook(index, control, skip) -> added`` between the ControlNet residuals and the UNet's
                skip features (Edit-Your-Motion §2.4 Motion Attention: new skip = ``u_k + hook(k, c_k, u_k)``; index
                ``0..n_down-1`` for the down residuals in diffusers' order, ``n_down`` for the mid-block output), all
                ``(B*F, C_k, H_k, W_k)``; see ``dancegen.core.controlnet.control_residuals``. It runs under this
                call's frame context (``self.holder.peek()`` gives F), so it can attend over frames. Needs both
                residual arguments; ignored without residuals. None: residuals are added as plain ControlNet.

        Returns:
            ``(B, C_out, F, H, W)`` prediction.

        Raises:
            ValueError: ``residual_hook`` with only one of the two residual arguments.
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
        down = tuple(down_block_additional_residuals) if down_block_additional_residuals is not None else None
        if residual_hook is not None and (down is None) != (mid_block_additional_residual is None):
            raise ValueError("residual_hook needs both down_block_additional_residuals and "
                             "mid_block_additional_residual (ControlNet residuals), or neither")
        hooked = residual_hook is not None and down is not None
        residuals = ControlResiduals(list(down), mid_block_additional_residual) if hooked else None
        with self.holder.use(ctx), control_residuals(self.unet, residuals, residual_hook) as res_kwargs:
            if not hooked:  # exactly the arguments diffusers always got (None, or the residuals as given)
                res_kwargs = {"down_block_additional_residuals": down,
                              "mid_block_additional_residual": mid_block_additional_residual}
            out = self.unet(
                x,
                t,
                encoder_hidden_states=ehs,
                **res_kwargs,
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
            ``temporal`` = inserted blocks in either position (``temporal_blocks.*``), ``spatial_attn`` = every
            attn1 (q, k, v, out) of the image UNet (the RCA / cross-frame weights), ``unet`` = the rest of the image
            UNet.
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

"""Frame-aware attention processors for diffusers UNets / ControlNets: cross-frame, anchor, RCA and MasaCtrl.

- ``FrameAttnProcessor``: a diffusers attention processor (``AttnProcessor2_0`` call signature, fused
  ``F.scaled_dot_product_attention``) for the spatial self-attention ``attn1``. Queries stay per frame; keys and
  values come from designated frames of the same clip, with no new parameters:
  ``self`` (plain per-frame SD), ``first`` / ``middle`` (T//2) / ``previous`` / ``all`` (Dance-Your-Latents Table 2
  CrossFrame baselines, spec dance-your-latents.md §6.6), ``anchor`` (K/V of one fixed frame ``anchor_frame``;
  ``first`` is anchor 0, LatentMan's / Text2Video-Zero's cross-frame attention, spec latentman.md §2.3 (b), §2.7),
  ``sparse_causal`` (Tune-A-Video: [first; previous]) and ``rca`` (Edit-Your-Motion §2.5 Recurrent Causal
  Attention: [prev; next] clamped at the ends, flags ``value_frames`` and ``include_self``).
- ``MutualSelfAttnProcessor``: MasaCtrl's mutual self-attention (Cao et al., ICCV'23; LatentMan's MasaCtrl base,
  spec latentman.md §5): from denoising step ``start_step`` on and in self-attention layers ``>= start_layer``,
  every frame's queries read the K/V of the anchor (source) frame of its clip; elsewhere plain self-attention.
- ``set_frame_attention`` / ``set_mutual_self_attention`` / ``set_default_attention``: install processors by name
  dict (``set_attn_processor``) on any model that has ``attn_processors`` (UNet, ControlNet).
- ``TemporalAttention`` (VDM-style attention over frames) lives in ``core/layers.py`` and is re-exported here.

Frames are folded into the batch, ``(B*F, N, C)`` frame-major per clip; F comes from a ``FrameContextHolder`` (per
call) or a fixed int. Under classifier-free guidance the batch is ``[uncond; cond]`` clips, each F frames, so frames
never mix across clips or guidance halves. Per-call data such as the denoising step index reaches the processors
through the holder's ``FrameContext.extra`` (e.g. ``extra["step_index"]``), never through widened call signatures.
"""

from __future__ import annotations

import re
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange

from dancegen.core.context import FrameContext, FrameContextHolder
from dancegen.core.layers import TemporalAttention

__all__ = [
    "FRAME_ATTN_MODES",
    "frame_kv_index",
    "rca_kv_indices",
    "FrameAttnProcessor",
    "MutualSelfAttnProcessor",
    "self_attention_layer_index",
    "set_frame_attention",
    "set_mutual_self_attention",
    "set_default_attention",
    "TemporalAttention",
]

FRAME_ATTN_MODES = ("self", "first", "middle", "previous", "all", "anchor", "sparse_causal", "rca")


def _anchor_index(anchor_frame: int, num_frames: int) -> int:
    """``anchor_frame`` in ``[-F, F)`` -> ``[0, F)`` (negative counts from the end, like Python indexing)."""
    if not -num_frames <= anchor_frame < num_frames:
        raise ValueError(f"anchor_frame={anchor_frame} is out of range for num_frames={num_frames}")
    return anchor_frame % num_frames


def frame_kv_index(mode: str, num_frames: int, value_frames: str = "prev_next", include_self: bool = False,
                   device=None, anchor_frame: int = 0) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Frames whose tokens form the keys and values of each query frame.

    Args:
        mode: One of ``FRAME_ATTN_MODES``.
        num_frames: F.
        value_frames: RCA only: ``"prev_next"`` (prose, default) or ``"prev_self"`` (Eq. 9 as printed: V from
            [z_prev; z_i]).
        include_self: RCA only: also put the query frame in K/V (``[prev; self; next]``).
        device: Device of the result.
        anchor_frame: ``anchor`` only: the frame every query frame reads, in ``[-F, F)``.

    Returns:
        ``(key_frames, value_frames)`` LongTensors ``(F, M)``, or None for ``self`` and ``all`` (no gather needed).

    Raises:
        ValueError: unknown mode / value_frames, or an anchor outside the clip.
    """
    if mode not in FRAME_ATTN_MODES:
        raise ValueError(f"unknown frame attention mode {mode!r}; expected one of {FRAME_ATTN_MODES}")
    if value_frames not in ("prev_next", "prev_self"):
        raise ValueError(f"value_frames must be 'prev_next' or 'prev_self', got {value_frames!r}")
    if mode in ("self", "all"):
        return None
    f = torch.arange(num_frames, device=device)
    prev = (f - 1).clamp(min=0)
    nxt = (f + 1).clamp(max=num_frames - 1)
    if mode == "first":
        k = torch.zeros_like(f)[:, None]
    elif mode == "anchor":
        k = torch.full_like(f, _anchor_index(int(anchor_frame), num_frames))[:, None]
    elif mode == "middle":
        k = torch.full_like(f, num_frames // 2)[:, None]
    elif mode == "previous":
        k = prev[:, None]
    elif mode == "sparse_causal":
        k = torch.stack([torch.zeros_like(f), prev], 1)
    else:  # rca
        k_cols, v_cols = [prev], [prev]
        if include_self:
            k_cols.append(f)
            v_cols.append(f)
        k_cols.append(nxt)
        v_cols.append(nxt if value_frames == "prev_next" else f)
        return torch.stack(k_cols, 1), torch.stack(v_cols, 1)
    return k, k


def rca_kv_indices(num_frames: int) -> list[tuple[int, int]]:
    """RCA (prev, next) frame pairs, clamped: F=4 -> [(0,1), (0,2), (1,3), (2,3)]; F=1 -> [(0,0)]."""
    k, _ = frame_kv_index("rca", num_frames)
    return [tuple(int(v) for v in row) for row in k]


def _gather_frames(t: torch.Tensor, frames: torch.Tensor, num_frames: int, detach_borrowed: bool = False
                   ) -> torch.Tensor:
    """``(B*F, N, C)`` -> ``(B*F, M*N, C)``: for query frame f, the tokens of frames ``frames[f]`` concatenated.

    With ``detach_borrowed`` the tokens a frame takes from *other* frames are detached while its own tokens (where
    ``frames[f, m] == f``) keep their gradient, so a frame's own self-attention path is untouched. Both branches
    hold the same values, so the forward result is bit-identical to the undetached gather.
    """
    frames_dev = frames.to(t.device)
    g = rearrange(t, "(b f) n c -> b f n c", f=num_frames)[:, frames_dev]  # (B, F, M, N, C)
    if detach_borrowed:
        own = frames.cpu() == torch.arange(num_frames)[:, None]  # (F, M); on the CPU, so .any() needs no sync
        borrowed = rearrange(t.detach(), "(b f) n c -> b f n c", f=num_frames)[:, frames_dev]
        g = torch.where(own.to(t.device)[None, :, :, None, None], g, borrowed) if bool(own.any()) else borrowed
    return rearrange(g, "b f m n c -> (b f) (m n) c")


class FrameAttnProcessor:
    """Cross-frame self-attention processor for ``attn1`` (diffusers ``AttnProcessor2_0`` call signature).

    Cross-attention calls (``encoder_hidden_states`` given) are computed exactly like ``AttnProcessor2_0``.

    Args:
        holder: The model's ``FrameContextHolder`` (F read per call) or a fixed frame count.
        mode: One of ``FRAME_ATTN_MODES``.
        value_frames: RCA values ``"prev_next"`` (default) or ``"prev_self"`` (literal Eq. 9).
        include_self: RCA: add the query frame to K/V.
        detach_kv: Detach the keys/values a frame borrows from other frames (LatentMan / Text2Video-Zero inference
            convention, spec latentman.md §2.3 (b)); the queries and a frame's own keys/values keep their gradient,
            so guidance that backprops through the UNet still reaches every frame through its queries.
        anchor_frame: ``anchor`` mode: the frame whose K/V every frame reads (negative counts from the end).
    """

    def __init__(self, holder: FrameContextHolder | int, mode: str = "self", value_frames: str = "prev_next",
                 include_self: bool = False, detach_kv: bool = False, anchor_frame: int = 0) -> None:
        frame_kv_index(mode, 1, value_frames, include_self)  # validates the arguments
        if isinstance(anchor_frame, bool) or not isinstance(anchor_frame, int):
            raise ValueError(f"anchor_frame must be an int, got {anchor_frame!r}")
        self.holder = holder
        self.mode = mode
        self.value_frames = value_frames
        self.include_self = include_self
        self.detach_kv = detach_kv
        self.anchor_frame = anchor_frame

    def __repr__(self) -> str:
        anchor = f", anchor_frame={self.anchor_frame}" if self.mode == "anchor" else ""
        return f"FrameAttnProcessor(mode={self.mode!r}, value_frames={self.value_frames!r}, " \
               f"include_self={self.include_self}{anchor})"

    def context(self) -> FrameContext:
        """The current call's ``FrameContext``.

        Raises:
            RuntimeError: when the holder has none (the model was called outside ``holder.use``).
        """
        ctx = None if isinstance(self.holder, int) else self.holder.peek()
        if ctx is None:
            raise RuntimeError(f"{type(self).__name__}(mode={self.mode!r}) called without a FrameContext; wrap the "
                               "call in `with holder.use(FrameContext(num_frames=F))`")
        return ctx

    def num_frames(self) -> int:
        """F for the current call."""
        if isinstance(self.holder, int):
            return self.holder
        return int(self.context().num_frames)

    def call_mode(self) -> str:
        """The mode of the current self-attention call (subclasses gate it per step / layer)."""
        return self.mode

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None, *args: Any,
                 **kwargs: Any) -> torch.Tensor:
        """Run attention; see ``diffusers.models.attention_processor.AttnProcessor2_0``."""
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)

        is_cross = encoder_hidden_states is not None
        mode = "self" if is_cross else self.call_mode()
        frame_mode = mode != "self"
        batch_size, sequence_length, _ = hidden_states.shape if not is_cross else encoder_hidden_states.shape
        if attention_mask is not None:
            if frame_mode:
                raise ValueError(f"attention_mask is not supported by cross-frame mode {mode!r}")
            attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)

        nq = query.shape[0]
        fold_all = False
        if frame_mode:
            n_frames = self.num_frames()
            if nq % n_frames:
                raise ValueError(f"batch {nq} is not a multiple of num_frames={n_frames}")
            if mode == "all" and not self.detach_kv:
                # every frame attends to all frames of its clip == one sequence of F*N tokens per clip
                fold_all = True
                query, key, value = (rearrange(t, "(b f) n c -> b (f n) c", f=n_frames) for t in (query, key, value))
            else:
                # index tables are built on the CPU (tiny) and moved by _gather_frames
                if mode == "all":  # detached: each frame needs its own K/V (own frame live, the others detached)
                    kf = vf = torch.arange(n_frames).expand(n_frames, n_frames)
                else:
                    kf, vf = frame_kv_index(mode, n_frames, self.value_frames, self.include_self,
                                            anchor_frame=self.anchor_frame)
                key = _gather_frames(key, kf, n_frames, self.detach_kv)
                value = _gather_frames(value, vf, n_frames, self.detach_kv)

        inner_dim = key.shape[-1]
        head_dim = inner_dim // attn.heads
        bq = query.shape[0]
        query = query.view(bq, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(bq, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(bq, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        hidden_states = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=0.0,
                                                       is_causal=False)
        hidden_states = hidden_states.transpose(1, 2).reshape(bq, -1, attn.heads * head_dim).to(query.dtype)
        if fold_all:
            hidden_states = hidden_states.reshape(nq, -1, attn.heads * head_dim)

        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


class MutualSelfAttnProcessor(FrameAttnProcessor):
    """MasaCtrl mutual self-attention (Cao et al., ICCV'23, §3.2) for one ``attn1`` layer.

    From denoising step ``start_step`` on, and only when this layer's index is ``>= start_layer``, every frame's
    queries attend to the keys/values of the anchor (source) frame of its clip (``anchor`` mode); otherwise it is
    plain per-frame self-attention (the ``self`` path, identical to ``AttnProcessor2_0``). With frames folded into
    the batch and CFG halves as separate clips, each half reads its own anchor, as MasaCtrl reads the source of the
    same CFG chunk. MasaCtrl's release does not detach the source K/V; ``detach_kv`` is available for guidance runs.

    The step is ``holder``'s ``FrameContext.extra["step_index"]`` (0 = first, noisiest denoising step), set by the
    caller per UNet call; MasaCtrl's own counter advances once per UNet call, so the two agree. ``layer_index``
    counts self-attention layers in execution order (``self_attention_layer_index``).

    Args:
        holder: The ``FrameContextHolder`` whose context gives F and ``extra["step_index"]``.
        layer_index: This layer's index among the model's self-attention layers.
        start_step: First denoising step with mutual attention (MasaCtrl default 4 of 50).
        start_layer: First layer index with mutual attention (MasaCtrl default 10 of SD-1.5's 16).
        anchor_frame: The source frame (default 0; negative counts from the end).
        detach_kv: Detach the borrowed source keys/values.
    """

    def __init__(self, holder: FrameContextHolder, layer_index: int, start_step: int = 4, start_layer: int = 10,
                 anchor_frame: int = 0, detach_kv: bool = False) -> None:
        if not isinstance(holder, FrameContextHolder):
            raise TypeError("MutualSelfAttnProcessor needs a FrameContextHolder (the step index travels in its "
                            f"FrameContext.extra), got {type(holder).__name__}")
        super().__init__(holder, "anchor", detach_kv=detach_kv, anchor_frame=anchor_frame)
        if min(layer_index, start_step, start_layer) < 0:
            raise ValueError(f"layer_index, start_step and start_layer must be >= 0, got {layer_index}, "
                             f"{start_step}, {start_layer}")
        self.layer_index = int(layer_index)
        self.start_step = int(start_step)
        self.start_layer = int(start_layer)

    def __repr__(self) -> str:
        return f"MutualSelfAttnProcessor(layer_index={self.layer_index}, start_step={self.start_step}, " \
               f"start_layer={self.start_layer}, anchor_frame={self.anchor_frame})"

    def call_mode(self) -> str:
        """``"anchor"`` at/after ``start_step`` in a layer ``>= start_layer``, else ``"self"``."""
        if self.layer_index < self.start_layer:
            return "self"
        step = self.context().extra.get("step_index")
        if step is None:
            raise RuntimeError("MutualSelfAttnProcessor needs the denoising step: set "
                               "FrameContext.extra['step_index'] for each UNet call")
        return "anchor" if int(step) >= self.start_step else "self"


_UNET_SECTIONS = {"down_blocks": 0, "mid_block": 1, "up_blocks": 2}


def self_attention_layer_index(model) -> dict[str, int]:
    """Index of every self-attention (``attn1``) processor in the order the U-Net runs them (MasaCtrl's count).

    MasaCtrl (``masactrl_utils.AttentionBase``) counts attention calls in forward order, attn1 and attn2 alike, and
    takes ``call // 2`` as the layer: for SD-1.5 that is the 16 transformer blocks in execution order, down (0-5),
    mid (6), up (7-15), so its default ``start_layer=10`` means the last six decoder blocks (``up_blocks.2`` and
    ``up_blocks.3``, 32x32 and 64x64 latents at 512 px). ``attn_processors`` lists the mid block last (module
    registration order), so the order here is rebuilt from the names: section (down, mid, up), then the block /
    attention / transformer-block indices. A model holding several U-Nets (e.g. ``unet.`` and ``controlnet.``
    prefixes) counts each from 0.

    Args:
        model: Any model with ``attn_processors``.

    Returns:
        ``{processor name: layer index}`` for the names ending in ``attn1.processor``.
    """
    names = [n for n in model.attn_processors if n.endswith("attn1.processor")]

    def key(item: tuple[int, str]) -> tuple:
        pos, name = item
        parts = name.split(".")
        for i, part in enumerate(parts):
            if part in _UNET_SECTIONS:
                nums = tuple(int(p) for p in parts[i + 1:] if re.fullmatch(r"\d+", p))
                return ".".join(parts[:i]), _UNET_SECTIONS[part], nums
        return "", len(_UNET_SECTIONS), (pos,)  # not a U-Net section: keep the registration order, after them

    index: dict[str, int] = {}
    counts: dict[str, int] = {}
    for _, name in sorted(enumerate(names), key=key):
        prefix = key((0, name))[0]
        index[name] = counts.get(prefix, 0)
        counts[prefix] = index[name] + 1
    return index


def set_mutual_self_attention(model, holder: FrameContextHolder, start_step: int = 4, start_layer: int = 10,
                              anchor_frame: int = 0, detach_kv: bool = False) -> dict:
    """Install MasaCtrl's ``MutualSelfAttnProcessor`` on every ``attn1`` of ``model`` (other processors unchanged).

    Call the model inside ``holder.use(FrameContext(num_frames=F, extra={"step_index": k}))`` with ``k`` the
    0-based denoising step (for a ``VideoUNet``: its ``.unet`` with ``holder=video_unet.holder``, and the context
    set through ``video_unet.frame_context``).

    Args:
        model: A diffusers UNet / ControlNet (anything with ``attn_processors`` / ``set_attn_processor``).
        holder: The ``FrameContextHolder`` the caller sets per call.
        start_step: First step with mutual attention (MasaCtrl: 4).
        start_layer: First self-attention layer with it (MasaCtrl: 10), counted by ``self_attention_layer_index``.
        anchor_frame: The source frame of each clip.
        detach_kv: Detach the borrowed source keys/values.

    Returns:
        The previous ``{name: processor}`` dict (pass it to ``model.set_attn_processor`` to undo).
    """
    previous = dict(model.attn_processors)
    layers = self_attention_layer_index(model)
    procs = {name: MutualSelfAttnProcessor(holder, layers[name], start_step, start_layer, anchor_frame, detach_kv)
             if name in layers else proc for name, proc in previous.items()}
    model.set_attn_processor(procs)
    return previous


def set_frame_attention(model, holder: FrameContextHolder | int, mode: str = "self", **kw) -> dict:
    """Install ``FrameAttnProcessor(holder, mode, **kw)`` on every ``attn1`` and ``AttnProcessor2_0`` on ``attn2``.

    Works on any diffusers model with ``attn_processors`` / ``set_attn_processor`` (UNet, ControlNet, a wrapper
    that contains them). Other attention layers (e.g. a VAE's) keep their current processor.

    Args:
        model: The diffusers model.
        holder: Its ``FrameContextHolder`` (or a fixed F).
        mode: One of ``FRAME_ATTN_MODES``.
        **kw: ``value_frames``, ``include_self``, ``detach_kv``, ``anchor_frame`` (see ``FrameAttnProcessor``).

    Returns:
        The previous ``{name: processor}`` dict (pass it to ``model.set_attn_processor`` to undo).
    """
    from diffusers.models.attention_processor import AttnProcessor2_0

    previous = dict(model.attn_processors)
    frame_proc = FrameAttnProcessor(holder, mode, **kw)
    default = AttnProcessor2_0()
    procs = {}
    for name, proc in previous.items():
        if name.endswith("attn1.processor"):
            procs[name] = frame_proc
        elif name.endswith("attn2.processor"):
            procs[name] = default
        else:
            procs[name] = proc
    model.set_attn_processor(procs)  # note: diffusers pops the entries of the dict it is given
    return previous


def set_default_attention(model) -> None:
    """Put ``AttnProcessor2_0`` back on every attention layer (``set_default_attn_processor`` refuses once custom
    processors are installed)."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    model.set_attn_processor(AttnProcessor2_0())

"""Frame-aware attention for diffusers UNets: cross-frame / RCA processors and temporal attention.

- ``FrameAttnProcessor``: a diffusers attention processor (``AttnProcessor2_0`` call signature, fused
  ``F.scaled_dot_product_attention``) for the spatial self-attention ``attn1``. Queries stay per frame; keys and
  values come from designated frames of the same clip, with no new parameters:
  ``self`` (plain per-frame SD), ``first`` / ``middle`` (T//2) / ``previous`` / ``all`` (Dance-Your-Latents Table 2
  CrossFrame baselines, spec dance-your-latents.md §6.6; ``first`` is LatentMan's / Text2Video-Zero's cross-frame
  attention), ``sparse_causal`` (Tune-A-Video: [first; previous]) and ``rca`` (Edit-Your-Motion §2.5 Recurrent
  Causal Attention: [prev; next] clamped at the ends, flags ``value_frames`` and ``include_self``).
- ``TemporalAttention``: VDM-style per-pixel attention over frames (Table 2 "Temporal"), zero-initialised output.
- ``set_frame_attention`` / ``set_default_attention``: install processors by name dict (``set_attn_processor``).

Frames are folded into the batch, ``(B*F, N, C)`` frame-major per clip; F comes from the model's
``FrameContextHolder`` (per call) or a fixed int. Under classifier-free guidance the batch is ``[uncond; cond]``
clips, each F frames, so frames never mix across clips or guidance halves.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from dancegen.core.context import FrameContext, FrameContextHolder
from dancegen.core.stsa import FeedForward, FramePosEmb, add_qkvo, resolve_frames

__all__ = [
    "FRAME_ATTN_MODES",
    "frame_kv_index",
    "rca_kv_indices",
    "FrameAttnProcessor",
    "set_frame_attention",
    "set_default_attention",
    "TemporalAttention",
]

FRAME_ATTN_MODES = ("self", "first", "middle", "previous", "all", "sparse_causal", "rca")


def frame_kv_index(mode: str, num_frames: int, value_frames: str = "prev_next", include_self: bool = False,
                   device=None) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Frames whose tokens form the keys and values of each query frame.

    Args:
        mode: One of ``FRAME_ATTN_MODES``.
        num_frames: F.
        value_frames: RCA only: ``"prev_next"`` (prose, default) or ``"prev_self"`` (Eq. 9 as printed: V from
            [z_prev; z_i]).
        include_self: RCA only: also put the query frame in K/V (``[prev; self; next]``).
        device: Device of the result.

    Returns:
        ``(key_frames, value_frames)`` LongTensors ``(F, M)``, or None for ``self`` and ``all`` (no gather needed).
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


def _gather_frames(t: torch.Tensor, frames: torch.Tensor, num_frames: int) -> torch.Tensor:
    """``(B*F, N, C)`` -> ``(B*F, M*N, C)``: for query frame f, the tokens of frames ``frames[f]`` concatenated."""
    t = rearrange(t, "(b f) n c -> b f n c", f=num_frames)
    return rearrange(t[:, frames.to(t.device)], "b f m n c -> (b f) (m n) c")


class FrameAttnProcessor:
    """Cross-frame self-attention processor for ``attn1`` (diffusers ``AttnProcessor2_0`` call signature).

    Cross-attention calls (``encoder_hidden_states`` given) are computed exactly like ``AttnProcessor2_0``.

    Args:
        holder: The model's ``FrameContextHolder`` (F read per call) or a fixed frame count.
        mode: One of ``FRAME_ATTN_MODES``.
        value_frames: RCA values ``"prev_next"`` (default) or ``"prev_self"`` (literal Eq. 9).
        include_self: RCA: add the query frame to K/V.
        detach_kv: Detach the borrowed keys/values (LatentMan/Text2Video-Zero inference convention).
    """

    def __init__(self, holder: FrameContextHolder | int, mode: str = "self", value_frames: str = "prev_next",
                 include_self: bool = False, detach_kv: bool = False) -> None:
        frame_kv_index(mode, 1, value_frames, include_self)  # validates the arguments
        self.holder = holder
        self.mode = mode
        self.value_frames = value_frames
        self.include_self = include_self
        self.detach_kv = detach_kv

    def __repr__(self) -> str:
        return f"FrameAttnProcessor(mode={self.mode!r}, value_frames={self.value_frames!r}, " \
               f"include_self={self.include_self})"

    def num_frames(self) -> int:
        """F for the current call."""
        if isinstance(self.holder, int):
            return self.holder
        ctx = self.holder.peek()
        if ctx is None:
            raise RuntimeError(f"FrameAttnProcessor(mode={self.mode!r}) called without a FrameContext; wrap the call "
                               "in `with holder.use(FrameContext(num_frames=F))`")
        return int(ctx.num_frames)

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
        frame_mode = not is_cross and self.mode != "self"
        batch_size, sequence_length, _ = hidden_states.shape if not is_cross else encoder_hidden_states.shape
        if attention_mask is not None:
            if frame_mode:
                raise ValueError(f"attention_mask is not supported by cross-frame mode {self.mode!r}")
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
            if self.detach_kv:
                key, value = key.detach(), value.detach()
            if self.mode == "all":
                # every frame attends to all frames of its clip == one sequence of F*N tokens per clip
                fold_all = True
                query, key, value = (rearrange(t, "(b f) n c -> b (f n) c", f=n_frames) for t in (query, key, value))
            else:
                kf, vf = frame_kv_index(self.mode, n_frames, self.value_frames, self.include_self,
                                        device=key.device)
                key = _gather_frames(key, kf, n_frames)
                value = _gather_frames(value, vf, n_frames)

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


def set_frame_attention(model, holder: FrameContextHolder | int, mode: str = "self", **kw) -> dict:
    """Install ``FrameAttnProcessor(holder, mode, **kw)`` on every ``attn1`` and ``AttnProcessor2_0`` on ``attn2``.

    Works on any diffusers model with ``attn_processors`` / ``set_attn_processor`` (UNet, ControlNet, a wrapper
    that contains them). Other attention layers (e.g. a VAE's) keep their current processor.

    Args:
        model: The diffusers model.
        holder: Its ``FrameContextHolder`` (or a fixed F).
        mode: One of ``FRAME_ATTN_MODES``.
        **kw: ``value_frames``, ``include_self``, ``detach_kv``.

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


class TemporalAttention(nn.Module):
    """VDM-style temporal attention: every spatial position attends over the F frames of its clip.

    Sub-layer ``x + ZeroLinear(MHA(LN(x + pos_f)))`` (same layout as the STSA sub-layers), optional zero-init
    feed-forward. Identity at initialisation when ``zero_init``.

    Args:
        dim: Channels C.
        heads: Heads.
        zero_init: Zero-initialise the output projection.
        frame_pos_emb: Add the sinusoidal->linear frame embedding.
        ff: Add a feed-forward sub-layer.
        norm_eps: LayerNorm epsilon.
    """

    def __init__(self, dim: int, heads: int, zero_init: bool = True, frame_pos_emb: bool = True, ff: bool = False,
                 norm_eps: float = 1e-5) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.dim, self.heads = dim, heads
        self.pos_emb = FramePosEmb(dim) if frame_pos_emb else None
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        add_qkvo(self, dim, zero_init)
        self.ff = FeedForward(dim, zero_init=zero_init) if ff else None

    def forward(self, hidden: torch.Tensor, num_frames: int | FrameContext, height: int | None = None,
                width: int | None = None) -> torch.Tensor:
        """Apply temporal attention.

        Args:
            hidden: ``(B*F, N, C)`` tokens, frame-major per clip.
            num_frames: F or the call's ``FrameContext``.
            height, width: Unused (kept for the common temporal-block signature).

        Returns:
            ``(B*F, N, C)``.
        """
        T, _ = resolve_frames(num_frames)
        if hidden.ndim != 3 or hidden.shape[0] % T:
            raise ValueError(f"hidden {tuple(hidden.shape)} does not match F={T}")
        x = rearrange(hidden, "(b f) n c -> (b n) f c", f=T)
        y = x
        if self.pos_emb is not None:
            y = y + self.pos_emb(T, device=x.device, dtype=x.dtype)
        y = self.norm(y)
        q, k, v = (rearrange(p(y), "s f (hd d) -> s hd f d", hd=self.heads) for p in (self.to_q, self.to_k, self.to_v))
        o = rearrange(F.scaled_dot_product_attention(q, k, v), "s hd f d -> s f (hd d)")
        x = x + self.to_out(o)
        if self.ff is not None:
            x = self.ff(x)
        return rearrange(x, "(b n) f c -> (b f) n c", n=hidden.shape[1])

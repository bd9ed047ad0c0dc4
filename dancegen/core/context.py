"""Per-call frame context shared by the attention processors and temporal blocks of one video model.

The contract (docs/architecture.md, "Data contracts"): the video UNet owns one ``FrameContextHolder`` and hands it to
every processor / temporal block it creates; the pipeline wraps each UNet call in
``with holder.use(FrameContext(num_frames=F, ...)):``. This avoids monkeypatching ``forward`` or widening diffusers
call signatures. No torch import at module level.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from torch import Tensor


@dataclass
class FrameContext:
    """What every frame-aware block needs to know about the current UNet call.

    Attributes:
        num_frames: F, frames per clip; tokens are ``(B*F, N, C)`` frame-major (index = b*F + f).
        flows: per-call cache ``(h, w, frame_offset) -> (B, F, h*w)`` align index at a UNet level, filled lazily by
            the STSA blocks from ``flow_to_ref`` (a caller may also pre-fill it). Reset by using a new context.
        flow_to_ref: flow ``(dx, dy)`` in latent pixels from each frame to its subspace reference frame, as
            ``(B, F, 2, H_lat, W_lat)`` (used by partitions with temporal offset 0) or ``{frame_offset: (B, F, 2,
            H_lat, W_lat)}`` with one flow per STSA half (offsets 0 and ``s_f // 2``; the reference frames are
            ``dancegen.core.align.required_reference_frames(F, s_f)``). None: no motion-flow alignment (the "SA"
            ablation). A batch of B clips also serves 2B under classifier-free guidance.
        extra: free-form per-call data: ``step_index`` (0 = the noisiest denoising step; MasaCtrl's processors gate on
            it), RCA caches, debug switches.
    """

    num_frames: int
    flows: dict[tuple[int, ...], Tensor] | None = None
    flow_to_ref: Tensor | dict[int, Tensor] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class FrameContextHolder:
    """One shared mutable slot holding the current ``FrameContext`` (None between calls)."""

    def __init__(self, ctx: FrameContext | None = None) -> None:
        self._ctx = ctx

    def set(self, ctx: FrameContext | None) -> None:
        """Replace the current context (None clears it)."""
        self._ctx = ctx

    def get(self) -> FrameContext:
        """Return the current context.

        Raises:
            RuntimeError: when no context is set (a frame-aware block was called outside ``use``).
        """
        if self._ctx is None:
            raise RuntimeError("no FrameContext set: wrap the model call in `with holder.use(FrameContext(...))`")
        return self._ctx

    def peek(self) -> FrameContext | None:
        """Return the current context or None, without raising."""
        return self._ctx

    @contextmanager
    def use(self, ctx: FrameContext) -> Iterator[FrameContext]:
        """Set ``ctx`` for the duration of the block, restoring the previous one afterwards (re-entrant)."""
        prev = self._ctx
        self._ctx = ctx
        try:
            yield ctx
        finally:
            self._ctx = prev

    def __repr__(self) -> str:
        return f"FrameContextHolder({self._ctx!r})"

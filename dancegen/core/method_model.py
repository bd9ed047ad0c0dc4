"""The base class of a method's model container (every network of a method in one `nn.Module`)."""

from __future__ import annotations

from torch import nn

from dancegen.errors import InputError


class MethodModel(nn.Module):
    """Base of a method's model container (every network of the method in one module, as the trainer sees it)."""

    def enable_gradient_checkpointing(self) -> None:
        """Turn on activation checkpointing in every sub-model that supports it (diffusers `ModelMixin`s that set
        `_supports_gradient_checkpointing`); the shared trainer calls this for `train.gradient_checkpointing`.

        Raises:
            InputError: no sub-model supports it.
        """
        found = [m for m in self.modules() if m is not self and getattr(m, "_supports_gradient_checkpointing", False)
                 and hasattr(m, "enable_gradient_checkpointing")]
        outer = [m for m in found if not any(m is not o and any(m is x for x in o.modules()) for o in found)]
        if not outer:
            raise InputError(f"{type(self).__name__}: none of its networks supports gradient checkpointing")
        for m in outer:
            m.enable_gradient_checkpointing()

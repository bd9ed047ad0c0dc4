"""Named ControlNet sets, a latent-conditioned ControlNet, and the ControlNet-to-UNet residual hook (DYL spec §2.2,
Edit-Your-Motion spec §2.3-2.4, Dancing Avatar spec §2.3, LatentMan spec §2.3).

``ControlNetSet`` holds any number of named ControlNets (pose, depth, background, previous frame, ...), runs those
that have a condition, a non-zero scale and the current denoising step inside their window, with frames folded into
the batch (``(B*F, ...)``, frame-major) so the residuals line up with ``VideoUNet``'s folded 2D ops, and sums their
residuals. Each net has a ``ControlSpec`` (scale and step window, diffusers' ``controlnet_conditioning_scale`` /
``control_guidance_start`` / ``control_guidance_end``). Real diffusers ControlNet folders (lllyasviel's SD-1.5
OpenPose or depth nets) load through ``ControlNetSet.from_pretrained_folders`` unchanged. Dance-Your-Latents' DisCo
pose + background pair is one use of it (``methods/dance_your_latents/model.py``).

``LatentControlNetModel`` is a ControlNet whose condition is a VAE latent at the sample's resolution: the 4-layer image
encoder is replaced by a single 3x3 conv on the latent (no downsampling, no zero conv), initialised from the UNet's
``conv_in`` (DisCo's background ControlNet, ``ControlNetConditioningConvin``). It saves and loads like any diffusers
ControlNet.

``control_residuals`` hands ControlNet residuals to a diffusers ``UNet2DConditionModel``, optionally through a
residual hook ``new skip = u_k + hook(k, c_k, u_k)`` (Edit-Your-Motion's Motion Attention adapter, Eq. 15), without
copying the UNet's forward: see its docstring.
"""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from diffusers import ControlNetModel, UNet2DConditionModel
from torch import nn

# residual_hook(index, control, skip) -> what is added to the skip feature (see `control_residuals`).
ResidualHook = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]


class LatentConditioningEmbedding(nn.Module):
    """DisCo ``refer_sdvae`` conditioning embedding: one 3x3 conv from the VAE latent to ``block_out_channels[0]``.

    Args:
        in_channels: latent channels (4 for SD).
        out_channels: the ControlNet's first block width (320 for SD-1.5).
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)

    def forward(self, conditioning: torch.Tensor) -> torch.Tensor:
        return self.conv_in(conditioning)


class LatentControlNetModel(ControlNetModel):
    """A diffusers ``ControlNetModel`` whose condition is a VAE latent at the sample's resolution (DisCo background).

    Same config and forward as ``ControlNetModel``; ``config.conditioning_channels`` is the latent channel count.
    Build with ``LatentControlNetModel.from_unet(unet)``; ``save_pretrained`` / ``from_pretrained`` round-trip it.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.controlnet_cond_embedding = LatentConditioningEmbedding(
            self.config.conditioning_channels, self.config.block_out_channels[0]
        )

    @classmethod
    def from_unet(
        cls, unet: UNet2DConditionModel, load_weights_from_unet: bool = True, **kwargs
    ) -> LatentControlNetModel:
        """Copy the UNet's encoder half (diffusers ``from_unet``) and init the latent embedding from ``unet.conv_in``.

        Args:
            unet: the image UNet (its ``in_channels`` is also the latent condition's channel count).
            load_weights_from_unet: copy weights (True) or keep random init.
        """
        kwargs.setdefault("conditioning_channels", unet.config.in_channels)
        kwargs.setdefault("conditioning_embedding_out_channels", (unet.config.block_out_channels[0],))
        model = super().from_unet(unet, load_weights_from_unet=load_weights_from_unet, **kwargs)
        if load_weights_from_unet and kwargs["conditioning_channels"] == unet.config.in_channels:
            model.controlnet_cond_embedding.conv_in.load_state_dict(unet.conv_in.state_dict())
        return model


# ConfigMixin reads the accepted config keys from the __init__ signature: expose ControlNetModel's.
LatentControlNetModel.__init__.__signature__ = inspect.signature(ControlNetModel.__init__)

# `_class_name` of a saved folder -> the class that loads it (anything else must be named in `classes`).
_CONTROLNET_CLASSES: dict[str, type] = {"ControlNetModel": ControlNetModel,
                                        "LatentControlNetModel": LatentControlNetModel}


@dataclass
class ControlResiduals:
    """Summed ControlNet residuals for the folded batch, ready for ``VideoUNet.forward``.

    Attributes:
        down: per skip connection, ``(B*F, C_k, H_k, W_k)`` (12 for SD-1.5).
        mid: ``(B*F, C_mid, H_mid, W_mid)``.
    """

    down: list[torch.Tensor]
    mid: torch.Tensor

    def as_kwargs(self) -> dict:
        """``down_block_additional_residuals`` / ``mid_block_additional_residual`` keyword arguments."""
        return {"down_block_additional_residuals": self.down, "mid_block_additional_residual": self.mid}


def control_window_keep(step: int, num_steps: int, start: float, end: float) -> bool:
    """Whether a ControlNet with window ``[start, end]`` runs at denoising step ``step`` of ``num_steps``.

    diffusers' rule (``StableDiffusionControlNetPipeline.__call__``, ``controlnet_keep``): the net is kept at step
    ``i`` of ``n`` unless ``i / n < start`` or ``(i + 1) / n > end``, i.e. the whole step interval ``[i/n, (i+1)/n]``
    must lie inside the window. So ``(0, 1)`` keeps every step, ``end=0.5`` with ``n=4`` keeps steps 0 and 1,
    ``start=0.5`` keeps steps 2 and 3, and ``start == end`` keeps none (diffusers rejects that window; here it
    switches a net off). ``n`` counts the steps actually run (``len(timesteps)``, after any img2img truncation).

    Args:
        step: ``i``, 0-based index of the current denoising step.
        num_steps: ``n`` >= 1.
        start / end: fractions of the denoising run in [0, 1].
    """
    if num_steps < 1 or not 0 <= step < num_steps:
        raise ValueError(f"step must be in [0, num_steps), got step={step}, num_steps={num_steps}")
    # The same float expressions as diffusers, so boundary cases (e.g. 1/3 + 2/3) round the same way.
    return not (step / num_steps < start or (step + 1) / num_steps > end)


@dataclass(frozen=True)
class ControlSpec:
    """How one ControlNet of a set is applied.

    Attributes:
        scale: conditioning scale (diffusers ``controlnet_conditioning_scale``); 0 switches the net off (not run).
        start / end: the fraction of the denoising run in which the net runs (diffusers ``control_guidance_start`` /
            ``control_guidance_end``; rule in ``control_window_keep``), ``0 <= start <= end <= 1``.
    """

    scale: float = 1.0
    start: float = 0.0
    end: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.start <= self.end <= 1.0:
            raise ValueError(f"ControlSpec needs 0 <= start <= end <= 1, got start={self.start}, end={self.end}")

    def active(self, step: int | None = None, num_steps: int | None = None) -> bool:
        """Whether the net runs at ``step`` of ``num_steps`` (both None: outside a sampling loop, the window is not
        checked; only a zero scale switches the net off)."""
        if self.scale == 0:
            return False
        if step is None and num_steps is None:
            return True
        if step is None or num_steps is None:
            raise ValueError("pass both step and num_steps (or neither)")
        return control_window_keep(step, num_steps, self.start, self.end)


class ControlNetSet(nn.ModuleDict):
    """Named ControlNets run frame by frame on a clip, their residuals summed (any number: pose, depth, ...).

    A ``ModuleDict``, so parameters are named ``<name>.<...>`` (``controlnets.pose.*`` inside a method's model). A
    name may map to None (declared but absent: always skipped). Each name has a ``ControlSpec`` in ``specs`` (default
    ``ControlSpec()``); ``forward`` can override scales and specs per call. The nets may be diffusers
    ``ControlNetModel``, ``LatentControlNetModel``, or anything with the ``ControlNetModel`` call signature
    ``net(sample, timestep, encoder_hidden_states=, controlnet_cond=, conditioning_scale=, return_dict=False) ->
    (down residuals, mid residual)``. Residuals are summed in the set's (insertion) order.

    ControlNets with frame-aware attention (LatentMan §2.3: cross-frame attention in the ControlNet too) take a
    ``FrameAttnProcessor`` built with the clip's frame count (or the video UNet's holder, calling the set inside
    ``video_unet.frame_context(F)``); ``frame_chunk`` must then hold whole clips (a multiple of F).

    Args:
        nets: ``{name: ControlNet or None}``.
        specs: ``{name: ControlSpec or scale}`` for some of the names.
    """

    def __init__(self, nets: Mapping[str, nn.Module | None] | None = None,
                 specs: Mapping[str, ControlSpec | float] | None = None):
        super().__init__()
        self.specs: dict[str, ControlSpec] = {}
        for name, net in (nets or {}).items():
            self[name] = net
        for name, spec in (specs or {}).items():
            self.set_spec(name, spec)

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self.specs.pop(key, None)  # a net added later under this name starts from the default spec

    def clear(self) -> None:
        super().clear()
        self.specs.clear()

    # ----------------------------------------------------------------------------------------------------- specs
    def spec(self, name: str) -> ControlSpec:
        """The stored spec of ``name`` (``ControlSpec()`` when none was set)."""
        self._check_names([name], "spec")
        return self.specs.get(name, ControlSpec())

    def set_spec(self, name: str, spec: ControlSpec | float | None = None, **changes: float) -> ControlSpec:
        """Set the spec of ``name``: a whole ``ControlSpec``, a scale, and/or fields (``scale=, start=, end=``).

        Returns:
            The new spec.
        """
        base = self.spec(name)
        if isinstance(spec, ControlSpec):
            base = spec
        elif spec is not None:
            base = replace(base, scale=float(spec))
        new = replace(base, **changes) if changes else base
        self.specs[name] = new
        return new

    def resolve_specs(self, scales: Mapping[str, float] | None = None,
                      specs: Mapping[str, ControlSpec] | None = None) -> dict[str, ControlSpec]:
        """The specs one call uses: stored specs, replaced by ``specs``, then their scales by ``scales``."""
        self._check_names(scales or {}, "scales")
        self._check_names(specs or {}, "specs")
        out = {name: (specs or {}).get(name, self.spec(name)) for name in self.keys()}
        for name, scale in (scales or {}).items():
            out[name] = replace(out[name], scale=float(scale))
        return out

    def active_names(self, conditions: Mapping[str, Any] | None = None, step: int | None = None,
                     num_steps: int | None = None, scales: Mapping[str, float] | None = None,
                     specs: Mapping[str, ControlSpec] | None = None) -> list[str]:
        """The names ``forward`` would run with these arguments, in set order.

        A net runs when it is present (not None), has a condition (not None) in ``conditions`` (None: condition
        presence is not checked), a non-zero scale, and ``step`` inside its window.
        """
        if conditions is not None:
            self._check_names(conditions, "conditions")
        resolved = self.resolve_specs(scales, specs)
        return [name for name, net in self.items()
                if net is not None and (conditions is None or conditions.get(name) is not None)
                and resolved[name].active(step, num_steps)]

    def _check_names(self, names: Any, what: str) -> None:
        unknown = [n for n in names if n not in self]
        if unknown:
            raise ValueError(f"{what}: unknown ControlNet name(s) {unknown}; this set has {list(self.keys())}")

    # --------------------------------------------------------------------------------------------------- forward
    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor,
        conditions: Mapping[str, torch.Tensor | None],
        step: int | None = None,
        num_steps: int | None = None,
        scales: Mapping[str, float] | None = None,
        frame_chunk: int | None = None,
        specs: Mapping[str, ControlSpec] | None = None,
        num_frames: int | None = None,
    ) -> ControlResiduals | None:
        """Run the active ControlNets on every frame and sum their residuals.

        Args:
            sample: ``(B, C, F, H, W)`` noisy latents, or already folded ``(B*F, C, H, W)`` (then F is ``num_frames``,
                default 1).
            timestep: scalar, ``(B,)`` or ``(B*F,)``.
            encoder_hidden_states: ``(B, L, D)`` context shared by the frames of a clip (text ``(B, 77, D)`` or image
                tokens ``(B, L, D)`` alike), or ``(B*F, L, D)`` per frame.
            conditions: ``{name: condition}``; per frame ``(B, C_i, F, Hi, Wi)`` or ``(B*F, C_i, Hi, Wi)``, or shared
                by the clip ``(B, C_i, Hi, Wi)`` (repeated per frame). A name that is missing or None is skipped.
            step / num_steps: the denoising step ``i`` of ``n``, for the step windows (both None: no window check).
            scales: per-call scales ``{name: scale}`` overriding the specs' (0 skips that net).
            frame_chunk: run at most this many folded frames at once (memory); None = all at once.
            specs: per-call ``{name: ControlSpec}`` replacing the stored specs (``scales`` still applies on top).
            num_frames: F for a folded ``sample``, so that ``(B, ...)`` conditions and context repeat per frame.

        Returns:
            The summed residuals for the folded batch (``ControlResiduals``), or None when no net ran.

        Raises:
            ValueError: an unknown name in ``conditions`` / ``scales`` / ``specs``, or a shape that does not match
                ``B`` and ``F``.
        """
        active = self.active_names(conditions, step, num_steps, scales, specs)
        if not active:
            return None
        resolved = self.resolve_specs(scales, specs)
        if sample.ndim == 5:
            b, _, f = sample.shape[:3]
            x = sample.permute(0, 2, 1, 3, 4).reshape(b * f, *sample.shape[1:2], *sample.shape[3:])
        else:
            f = int(num_frames or 1)
            if sample.shape[0] % f:
                raise ValueError(f"folded sample batch {sample.shape[0]} is not a multiple of num_frames={f}")
            b, x = sample.shape[0] // f, sample
        n = x.shape[0]
        t = _fold_timestep(timestep, b, f, x.device)
        ehs = _fold(encoder_hidden_states, b, f)
        runs = [(self[name], _fold(conditions[name], b, f), resolved[name].scale) for name in active]
        chunk = n if not frame_chunk else int(frame_chunk)
        downs: list[list[torch.Tensor]] = []
        mids: list[torch.Tensor] = []
        for s in range(0, n, chunk):
            sl = slice(s, min(n, s + chunk))
            down_sum, mid_sum = None, None
            for net, cond, scale in runs:
                d, m = net(x[sl], t[sl], encoder_hidden_states=ehs[sl], controlnet_cond=cond[sl].to(x.dtype),
                           conditioning_scale=scale, return_dict=False)
                down_sum = list(d) if down_sum is None else [a + c for a, c in zip(down_sum, d, strict=True)]
                mid_sum = m if mid_sum is None else mid_sum + m
            downs.append(down_sum)
            mids.append(mid_sum)
        if len(downs) == 1:
            return ControlResiduals(down=downs[0], mid=mids[0])
        return ControlResiduals(down=[torch.cat(z, 0) for z in zip(*downs, strict=True)], mid=torch.cat(mids, 0))

    # ------------------------------------------------------------------------------------------------ save / load
    @classmethod
    def from_pretrained_folders(
        cls,
        folders: Mapping[str, str | os.PathLike | None],
        specs: Mapping[str, ControlSpec | float] | None = None,
        classes: Mapping[str, type] | None = None,
        allow_download: bool = False,
        **kwargs: Any,
    ) -> ControlNetSet:
        """Load one diffusers ControlNet folder per name (e.g. an unchanged ``lllyasviel/sd-controlnet-openpose``).

        Each reference is resolved like every model reference (``dancegen.core.weights.resolve_model``: a local
        folder, a bundled name, or a Hugging Face id already in the local cache; downloading only with
        ``allow_download``). The class comes from the folder's ``config.json`` ``_class_name``
        (``ControlNetModel`` or ``LatentControlNetModel``) unless ``classes`` names one.

        Args:
            folders: ``{name: folder or hub id}``; None declares the name without a net.
            specs: ``{name: ControlSpec or scale}``.
            classes: ``{name: model class}`` for folders of other ``ControlNetModel``-compatible classes.
            allow_download: let diffusers download a hub id that is not cached (not under ``HF_HUB_OFFLINE``).
            **kwargs: passed to every ``from_pretrained`` (``dtype``, ``variant``, ...).

        Raises:
            MissingWeightsError: a reference that is nowhere to be found.
            ValueError: a folder whose ``_class_name`` is not a known ControlNet class and not given in ``classes``.
        """
        from dancegen.core.weights import resolve_model

        nets: dict[str, nn.Module | None] = {}
        for name, ref in folders.items():
            if ref is None:
                nets[name] = None
                continue
            where = resolve_model(ref, kind="unet", allow_download=allow_download)
            model_cls = (classes or {}).get(name)
            if model_cls is None:
                class_name = "ControlNetModel"
                if where.is_local:
                    config = json.loads((Path(where.location) / "config.json").read_text(encoding="utf-8"))
                    class_name = config.get("_class_name", class_name)
                if class_name not in _CONTROLNET_CLASSES:
                    raise ValueError(f"{name}: {where.location} holds a {class_name}, not a ControlNetModel; pass "
                                     f"classes={{{name!r}: <its class>}} if it has the ControlNetModel call signature")
                model_cls = _CONTROLNET_CLASSES[class_name]
            nets[name] = model_cls.from_pretrained(where.location, **kwargs)
        return cls(nets, specs)

    def save_pretrained(self, folder: str | os.PathLike, **kwargs: Any) -> dict[str, Path]:
        """Save each present net with its own ``save_pretrained`` into ``folder/controlnet_<name>/`` (the layout
        Dance-Your-Latents writes). Specs are call settings and are not saved.

        Args:
            folder: parent folder (created).
            **kwargs: passed to every ``save_pretrained`` (``safe_serialization``, ...).

        Returns:
            ``{name: sub-folder}``, ready for ``from_pretrained_folders``.
        """
        out: dict[str, Path] = {}
        for name, net in self.items():
            if net is None:
                continue
            out[name] = Path(folder) / f"controlnet_{name}"
            net.save_pretrained(out[name], **kwargs)
        return out


class _SkipRecorder:
    """Forward hooks collecting a ``UNet2DConditionModel``'s skip features as diffusers builds them.

    diffusers' ``down_block_res_samples`` is ``conv_in``'s output followed by every down block's ``res_samples``
    (the second item of its output). ``conv_in`` starts a new UNet call, so one recorder serves repeated calls.
    """

    def __init__(self) -> None:
        self.skips: list[torch.Tensor] = []
        self.calls = 0

    def conv_in(self, module: nn.Module, args: Any, output: torch.Tensor) -> None:
        self.skips = [output]
        self.calls += 1

    def down_block(self, module: nn.Module, args: Any, output: tuple) -> None:
        self.skips.extend(output[1])


class _HookedResiduals(Sequence):
    """The ``down_block_additional_residuals`` diffusers gets when a residual hook is set.

    Item ``k`` is ``hook(k, control[k], skip[k])``, computed when diffusers zips this sequence with its skips (after
    the down blocks, so every skip exists), and cached per UNet call.
    """

    def __init__(self, control: Sequence[torch.Tensor], recorder: _SkipRecorder, hook: ResidualHook):
        self.control, self.recorder, self.hook = control, recorder, hook
        self._cache: dict[int, torch.Tensor] = {}
        self._call = -1

    def __len__(self) -> int:
        return len(self.control)

    def __getitem__(self, k: int | slice) -> torch.Tensor | list[torch.Tensor]:
        if isinstance(k, slice):
            return [self[i] for i in range(len(self))[k]]
        if not -len(self) <= k < len(self):
            raise IndexError(k)  # ends iteration (Sequence.__iter__)
        k %= len(self)
        skips = self.recorder.skips
        if len(skips) != len(self.control):
            raise RuntimeError(f"the UNet has {len(skips)} skip features so far and the ControlNet gives "
                               f"{len(self.control)} down residuals: the residuals are read before the down blocks "
                               "ran, or the ControlNet does not match the UNet")
        if self._call != self.recorder.calls:
            self._cache, self._call = {}, self.recorder.calls
        if k not in self._cache:
            self._cache[k] = self.hook(k, self.control[k], skips[k])
        return self._cache[k]

    def clear(self) -> None:
        self._cache = {}


class _MidHook:
    """Forward hook on ``mid_block``: output ``u_mid`` -> ``u_mid + hook(n_down, c_mid, u_mid)``."""

    def __init__(self, index: int, control: torch.Tensor, hook: ResidualHook):
        self.index, self.control, self.hook = index, control, hook

    def __call__(self, module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
        return output + self.hook(self.index, self.control, output)


@contextmanager
def control_residuals(
    unet: UNet2DConditionModel,
    residuals: ControlResiduals | None,
    hook: ResidualHook | None = None,
) -> Iterator[dict]:
    """The ControlNet keyword arguments for one or more calls of a diffusers ``UNet2DConditionModel``.

    Without ``hook`` (or without residuals) this is plain ControlNet: ``skip_k + c_k`` and ``mid + c_mid``. With
    ``hook`` each skip becomes ``u_k + hook(k, c_k, u_k)`` (Edit-Your-Motion Eq. 15, the Motion Attention adapter
    between ControlNet and UNet), where ``u_k`` is the skip feature the residual ``c_k`` would be added to:
    ``k = 0..n_down-1`` in diffusers' order (``conv_in``'s output, then each down block's ``res_samples``), and
    ``k = n_down`` for the mid-block output. No copy of diffusers' forward: forward hooks record the skips, diffusers
    gets a lazy sequence whose items it computes when it zips them with the skips (all exist by then), and a forward
    hook on ``mid_block`` adds ``hook(n_down, c_mid, u_mid)`` while the mid residual handed to diffusers is zeros
    (``x + 0`` is exact, so a hook returning ``control`` reproduces plain ControlNet bit for bit). The hooks exist
    only inside the ``with`` block.

    Args:
        unet: the image UNet (``VideoUNet.unet``, or any ``UNet2DConditionModel`` with a mid block).
        residuals: summed ControlNet residuals for the UNet's (folded) batch, or None.
        hook: ``hook(index, control (N, C_k, H_k, W_k), skip (N, C_k, H_k, W_k)) -> (N, C_k, H_k, W_k)``, what is
            added to the skip; or None.

    Yields:
        ``{"down_block_additional_residuals": ..., "mid_block_additional_residual": ...}`` (empty without
        residuals), to pass to ``unet(...)``.

    Raises:
        ValueError: a hook with a UNet that has no mid block.
    """
    if residuals is None:
        yield {}
        return
    if hook is None:
        yield {"down_block_additional_residuals": tuple(residuals.down),
               "mid_block_additional_residual": residuals.mid}
        return
    if unet.mid_block is None:
        raise ValueError("a residual hook needs a UNet with a mid block (its output is hook index n_down)")
    recorder = _SkipRecorder()
    down = _HookedResiduals(list(residuals.down), recorder, hook)
    handles = [unet.conv_in.register_forward_hook(recorder.conv_in)]
    handles += [block.register_forward_hook(recorder.down_block) for block in unet.down_blocks]
    handles.append(unet.mid_block.register_forward_hook(_MidHook(len(residuals.down), residuals.mid, hook)))
    try:
        yield {"down_block_additional_residuals": down,
               "mid_block_additional_residual": torch.zeros_like(residuals.mid)}
    finally:
        for h in handles:
            h.remove()
        recorder.skips = []  # do not keep the activations alive past the block
        down.clear()


def _fold_timestep(t: torch.Tensor | float | int, b: int, f: int, device: torch.device) -> torch.Tensor:
    t = torch.as_tensor(t, device=device)
    if t.ndim == 0 or t.shape[0] == 1:
        return t.reshape(1).expand(b * f)
    if t.shape[0] == b * f:
        return t
    if t.shape[0] == b:
        return t.repeat_interleave(f)
    raise ValueError(f"timestep has {t.shape[0]} entries; expected 1, B={b} or B*F={b * f}")


def _fold(x: torch.Tensor, b: int, f: int) -> torch.Tensor:
    """(B, C, F, H, W) -> (B*F, C, H, W); (B, ...) shared -> repeated per frame; (B*F, ...) unchanged."""
    if x.ndim == 5:
        if x.shape[0] != b or x.shape[2] != f:
            raise ValueError(f"condition {tuple(x.shape)} does not match B={b}, F={f}")
        return x.permute(0, 2, 1, 3, 4).reshape(b * f, x.shape[1], *x.shape[3:])
    if x.shape[0] == b * f:
        return x
    if x.shape[0] == b:
        return x.repeat_interleave(f, dim=0)
    raise ValueError(f"condition has batch {x.shape[0]}; expected B={b} or B*F={b * f}")

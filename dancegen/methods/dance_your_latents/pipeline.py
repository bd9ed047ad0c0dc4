"""Dance-Your-Latents inference pipeline (diffusers conventions; paper §4, spec §3 "Inference").

One reference image + a pose sequence -> a video of the reference person dancing those poses. DisCo's controls
(CLIP context of the reference foreground, pose ControlNet, background ControlNet) drive the inflated video UNet;
every frame starts from the same Gaussian noise (paper §4.2); the MF variant aligns its subspaces with pose flows to
each subspace's reference frame; DDIM with classifier-free guidance (zero reference embedding as the unconditional
branch, DisCo); long videos run in context windows so memory does not grow with the frame count.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput

from dancegen.core.components import UNetDeviceMixin
from dancegen.methods.dance_your_latents.data import split_reference
from dancegen.pose.render import render_control_maps

OUTPUT_TYPES = ("np", "pil", "pt", "latent")


@dataclass
class DanceYourLatentsPipelineOutput(BaseOutput):
    """Output of `DanceYourLatentsPipeline`.

    Attributes:
        frames: "np": ``(F, H, W, 3)`` float32 in [0, 1]; "pil": list of F images; "pt": ``(F, 3, H, W)`` in [0, 1];
            "latent": ``(1, C, F, h, w)`` denoised latents.
    """

    frames: Any


def _to_uint8_image(img, size: tuple[int, int] | None = None) -> np.ndarray:
    """PIL / uint8 ``(H, W, 3)`` / float tensor ``(3, H, W)`` or ``(1, 3, H, W)`` in [-1, 1] -> uint8 ``(H, W, 3)``."""
    import cv2

    if isinstance(img, torch.Tensor):
        t = img.detach().float().cpu()
        t = t[0] if t.ndim == 4 else t
        arr = ((t.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    else:
        arr = np.asarray(img)
        if arr.ndim == 2:
            arr = np.repeat(arr[..., None], 3, -1)
        arr = arr[..., :3]
        if arr.dtype != np.uint8:
            arr = np.clip(np.round(arr * 255.0 if arr.max() <= 1.0 else arr), 0, 255).astype(np.uint8)
    if size is not None and arr.shape[:2] != tuple(size):
        arr = cv2.resize(arr, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(arr)


def _mask(mask, size: tuple[int, int]) -> np.ndarray | None:
    import cv2

    if mask is None:
        return None
    m = np.asarray(mask.detach().cpu() if isinstance(mask, torch.Tensor) else mask)
    m = m.max(-1) if m.ndim == 3 else m
    m = (m > (127 if m.dtype == np.uint8 else 0.5)).astype(np.uint8)
    if m.shape != tuple(size):
        m = cv2.resize(m, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)
    return m.astype(bool)


class DanceYourLatentsPipeline(UNetDeviceMixin, DiffusionPipeline):
    """Pose-guided dance video generation with Dance-Your-Latents.

    Args:
        unet: the inflated ``VideoUNet`` (temporal blocks per variant).
        vae: ``AutoencoderKL``.
        controlnets: ``DisCoControlNets`` (pose + background).
        reference_encoder: ``ReferenceEncoder`` (CLIP image encoder + DisCo projection).
        scheduler: ``DDIMScheduler``.
        motion_flow: the MF variant: align subspaces with pose flows (needs a ``PoseSequence`` or ``flow``).
        shared_noise: the same initial noise for every frame (paper §4.2); False: independent noise per frame.
        flow_source: "pose" (skeleton-driven flow) or "raft" (RAFT on the rendered pose maps).
        flow_kwargs: extra ``flows.reference_flows`` settings (``raft_weights``, ``raft_iters``, ``downsample``).
    """

    model_cpu_offload_seq = "reference_encoder->controlnets->unet->vae"
    _callback_tensor_inputs = ["latents"]

    def __init__(self, unet, vae, controlnets, reference_encoder, scheduler, motion_flow: bool = False,
                 shared_noise: bool = True, flow_source: str = "pose", flow_kwargs: dict | None = None):
        super().__init__()
        self.register_modules(unet=unet, vae=vae, controlnets=controlnets, reference_encoder=reference_encoder,
                              scheduler=scheduler)
        self.register_to_config(motion_flow=bool(motion_flow), shared_noise=bool(shared_noise),
                                flow_source=flow_source, flow_kwargs=dict(flow_kwargs or {}))
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)

    @classmethod
    def from_model(cls, model) -> DanceYourLatentsPipeline:
        """The pipeline over a ``DanceYourLatentsModel`` (shares its modules), configured by its recipe."""
        cfg = model.config
        return cls(model.unet, model.vae, model.controlnets, model.reference, model.scheduler,
                   motion_flow=cfg.model.uses_flow, shared_noise=cfg.model.shared_noise.infer,
                   flow_source=cfg.flow.source,
                   flow_kwargs={"raft_weights": cfg.flow.raft_weights, "raft_iters": cfg.flow.raft_iters,
                                "downsample": cfg.flow.downsample})

    # ----------------------------------------------------------------------------------------------- helpers
    @property
    def size_multiple(self) -> int:
        """Height and width must be multiples of this (VAE factor x UNet downsampling)."""
        return self.vae_scale_factor * 2 ** (len(self.unet.unet.config.block_out_channels) - 1)

    @property
    def default_size(self) -> int:
        return int(self.unet.unet.config.sample_size) * self.vae_scale_factor

    def _subspace(self) -> tuple[int, bool]:
        kw = self.unet.config.temporal_kwargs or {}
        size = kw.get("subspace_size", (4, 4, 4))
        return int(size[0]), bool(kw.get("shift", True))

    def check_inputs(self, ref_image, pose_video, flow, num_frames, height, width, output_type, window, overlap,
                     callback_on_step_end) -> None:
        """Validate the call's arguments (raises ValueError / TypeError with what is wrong)."""
        from dancegen.pose.sequence import PoseSequence

        if ref_image is None:
            raise ValueError("ref_image is required")
        if pose_video is None:
            raise ValueError("pose_video is required (a PoseSequence or rendered pose maps)")
        if not isinstance(pose_video, (PoseSequence, np.ndarray, torch.Tensor)):
            raise TypeError(f"pose_video must be a PoseSequence, a (F, H, W, 3) uint8 array or a tensor, got "
                            f"{type(pose_video).__name__}")
        n = _num_pose_frames(pose_video)
        if num_frames is not None and not 1 <= num_frames <= n:
            raise ValueError(f"num_frames must be in [1, {n}] (the pose frames), got {num_frames}")
        m = self.size_multiple
        if height % m or width % m:
            raise ValueError(f"height and width must be multiples of {m}, got {height}x{width}")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
        if window is not None and (window < 1 or not 0 <= overlap < window):
            raise ValueError(f"need window >= 1 and 0 <= overlap < window, got {window}, {overlap}")
        if self.config.motion_flow and flow is None and not isinstance(pose_video, PoseSequence):
            raise ValueError("the MF variant needs flows: pass pose_video as a PoseSequence or pass flow=")
        f = num_frames or n
        if flow is not None and window is not None and f > window:
            raise ValueError("explicit flow= covers one window only; pass a PoseSequence for longer videos")
        if callback_on_step_end is not None and not callable(callback_on_step_end):
            raise TypeError("callback_on_step_end must be callable")

    def _pose_maps(self, pose_video, f: int, height: int, width: int):
        """-> (rendered maps (1, 3, F, H, W) in [0, 1], PoseSequence at (width, height) or None)."""
        from dancegen.pose.sequence import PoseSequence

        seq = None
        if isinstance(pose_video, PoseSequence):
            seq = pose_video[:f]
            if (seq.width, seq.height) != (width, height):
                seq = seq.resized(width, height)
            maps = render_control_maps(seq)
        elif isinstance(pose_video, np.ndarray):
            maps = np.stack([_to_uint8_image(m, (height, width)) for m in pose_video[:f]])
        else:
            t = pose_video.detach().float().cpu()
            t = t[0].permute(1, 0, 2, 3) if t.ndim == 5 else t  # (1, 3, F, H, W) -> (F, 3, H, W)
            maps = np.stack([_to_uint8_image(x * 2 - 1, (height, width)) for x in t[:f]])
        x = torch.from_numpy(np.ascontiguousarray(np.moveaxis(maps, -1, 0))).float().div(255.0)
        return x[None], seq

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` in [-1, 1] -> scaled VAE latents (posterior mean) ``(N, C, h, w)``."""
        from dancegen.core.latents import encode_images

        return encode_images(self.vae, images)

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor, decode_chunk_size: int = 8) -> torch.Tensor:
        """``(1, C, F, h, w)`` -> ``(F, 3, H, W)`` float32 in [0, 1], decoding ``decode_chunk_size`` frames at a time."""
        from dancegen.core.latents import decode_latents

        return decode_latents(self.vae, latents, decode_chunk_size)

    # ----------------------------------------------------------------------------------------------- __call__
    @torch.no_grad()
    def __call__(
        self,
        ref_image,
        pose_video,
        background=None,
        ref_mask=None,
        flow: dict[int, torch.Tensor] | None = None,
        num_frames: int | None = None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 1.5,
        eta: float = 0.0,
        generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "np",
        return_dict: bool = True,
        callback_on_step_end: Callable[[Any, int, torch.Tensor, dict], dict | None] | None = None,
        decode_chunk_size: int = 8,
        window: int | None = 16,
        overlap: int = 0,
        weighting: str = "triangular",
        pose_scale: float = 1.0,
        background_scale: float = 1.0,
        cfg_mode: str = "batched",
    ) -> DanceYourLatentsPipelineOutput | tuple:
        """Animate ``ref_image`` with ``pose_video``.

        Args:
            ref_image: the reference person: PIL image, ``(H, W, 3)`` uint8, or a ``(3, H, W)`` tensor in [-1, 1].
            pose_video: a ``PoseSequence`` (its coordinates are scaled to ``width x height``; needed for the MF
                variant unless ``flow`` is given), rendered pose maps ``(F, H, W, 3)`` uint8, or a tensor
                ``(F, 3, H, W)`` / ``(1, 3, F, H, W)`` in [0, 1].
            background: background image for the background ControlNet; None: the reference with the person masked
                out (``ref_mask``), or the whole reference without a mask.
            ref_mask: ``(H, W)`` person mask of the reference (DisCo's fg / bg split); None: no split.
            flow: MF flows ``{offset: (F, 2, h, w)}`` (or with a leading batch of 1) in pixels of their grid, for a
                single window; None: computed from ``pose_video``.
            num_frames: frames to generate (default all pose frames).
            height / width: output size (default the UNet's sample size x the VAE factor).
            num_inference_steps / guidance_scale / eta: DDIM steps, CFG scale (1 = off), DDIM eta.
            generator: for the initial noise.
            latents: initial noise ``(1, C, F, h, w)`` (replaces the generated one).
            output_type: "np" | "pil" | "pt" | "latent".
            return_dict: return a ``DanceYourLatentsPipelineOutput`` (else a 1-tuple).
            callback_on_step_end: ``fn(pipe, step, t, {"latents": z}) -> dict | None`` after each step; a returned
                ``"latents"`` replaces the current latents.
            decode_chunk_size: frames per VAE decode.
            window / overlap / weighting: context windows for long videos (None: one window over all frames).
            pose_scale / background_scale: ControlNet conditioning scales.
            cfg_mode: "batched" | "sequential" classifier-free guidance.

        Returns:
            ``DanceYourLatentsPipelineOutput(frames=...)`` or ``(frames,)``.
        """
        from dancegen.core.context_windows import windowed
        from dancegen.core.schedulers import ddim_sample, shared_noise
        from dancegen.methods.dance_your_latents.flows import reference_flows
        from dancegen.methods.dance_your_latents.model import predict_noise

        height = height or self.default_size
        width = width or self.default_size
        # 0. check inputs
        self.check_inputs(ref_image, pose_video, flow, num_frames, height, width, output_type, window, overlap,
                          callback_on_step_end)
        f = num_frames or _num_pose_frames(pose_video)
        device, dtype = self._execution_device, self.dtype
        size = (height, width)
        h, w = height // self.vae_scale_factor, width // self.vae_scale_factor

        # 1. reference: DisCo's fg / bg split, CLIP context of the foreground (zero embedding = unconditional)
        ref = _to_uint8_image(ref_image, size)
        fg, bg = split_reference(ref, _mask(ref_mask, size))
        if background is not None:
            bg = _to_uint8_image(background, size)
        fg_t = torch.from_numpy(np.array(fg)).permute(2, 0, 1)[None].float().div(127.5).sub(1.0)
        context = self.reference_encoder(fg_t.to(device)).to(dtype)
        uncond_context = self.reference_encoder.uncond_embedding(context)

        # 2. background latent for the background ControlNet (DisCo refer_sdvae)
        bg_t = torch.from_numpy(np.array(bg)).permute(2, 0, 1)[None].float().div(127.5).sub(1.0)
        bg_latent = self.encode_images(bg_t).to(device=device, dtype=dtype) \
            if self.controlnets.background is not None else None

        # 3. pose maps for the pose ControlNet (OpenPose / controlnet_aux convention)
        pose_maps, seq = self._pose_maps(pose_video, f, height, width)
        pose_maps = pose_maps.to(device=device, dtype=dtype)

        # 4. motion flows (MF): per context window, each frame to its subspace reference frame, at latent size
        s_f, shift = self._subspace()
        flow_cache: dict[tuple[int, int], dict[int, torch.Tensor] | None] = {}

        def flows_for(sl: slice) -> dict[int, torch.Tensor] | None:
            if not self.config.motion_flow:
                return None
            key = (sl.start, sl.stop)
            if key not in flow_cache:
                if flow is not None:
                    fl = {int(k): v if v.ndim == 5 else v[None] for k, v in flow.items()}
                else:
                    part = seq[sl.start:sl.stop]
                    images = _raft_images(part) if self.config.flow_source == "raft" else None
                    fl = {k: v[None] for k, v in reference_flows(part, s_f, shift, (h, w),
                                                                 source=self.config.flow_source, images=images,
                                                                 **self.config.flow_kwargs).items()}
                flow_cache[key] = {k: v.to(device=device, dtype=torch.float32) for k, v in fl.items()}
            return flow_cache[key]

        # 5. initial noise: one Gaussian sample shared by all frames (paper §4.2), or independent per frame. The
        # latents and the scheduler's arithmetic stay in fp32 whatever the networks' dtype: with bf16 latents the
        # bundled model on an H200 ended 8 levels (of 255) from its fp32 output (bench/results, halfdiag).
        shape = (1, self.unet.in_channels, f, h, w)
        if latents is None:
            if self.config.shared_noise:
                latents = shared_noise(shape, generator=generator, device=device, dtype=torch.float32)
            else:
                from diffusers.utils.torch_utils import randn_tensor

                latents = randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)
        elif tuple(latents.shape) != shape:
            raise ValueError(f"latents must have shape {shape}, got {tuple(latents.shape)}")
        latents = latents.to(device=device, dtype=torch.float32)

        # 6. denoise: DDIM + CFG, window by window (the networks run in their dtype, their output comes back fp32)
        def unet_fn(z, t, cond):
            return predict_noise(self.unet, self.controlnets, z.to(dtype), t, cond["context"], cond["pose"],
                                 cond["background"], cond["flow"], pose_scale, background_scale).float()

        def slice_cond(cond, sl):
            return {"context": cond["context"], "pose": cond["pose"][:, :, sl], "background": cond["background"],
                    "flow": flows_for(sl)}

        cond = {"context": context, "pose": pose_maps, "background": bg_latent, "flow": None}
        uncond = {"context": uncond_context, "pose": pose_maps, "background": bg_latent, "flow": None}
        denoiser = windowed(unet_fn, window or f, overlap, weighting, slice_cond=slice_cond)
        bar = self.progress_bar(total=num_inference_steps)

        def on_step(i, t, z):
            bar.update()
            if callback_on_step_end is not None:
                out = callback_on_step_end(self, i, t, {"latents": z})
                if out and out.get("latents") is not None:
                    z.copy_(out["latents"])

        latents = ddim_sample(denoiser, latents, self.scheduler, num_inference_steps, guidance_scale=guidance_scale,
                              cond=cond, uncond=uncond if guidance_scale != 1.0 else None, generator=generator,
                              callback=on_step, eta=eta, cfg_mode=cfg_mode)
        bar.close()

        # 7. decode in chunks of frames
        if output_type == "latent":
            frames = latents
        else:
            video = self.decode_latents(latents, decode_chunk_size)
            if output_type == "pt":
                frames = video
            else:
                frames = video.permute(0, 2, 3, 1).numpy()
                if output_type == "pil":
                    from PIL import Image

                    frames = [Image.fromarray((fr * 255).round().astype(np.uint8)) for fr in frames]
        self.maybe_free_model_hooks()
        return DanceYourLatentsPipelineOutput(frames=frames) if return_dict else (frames,)


def _num_pose_frames(pose_video) -> int:
    from dancegen.pose.sequence import PoseSequence

    if isinstance(pose_video, PoseSequence):
        return pose_video.num_frames
    if isinstance(pose_video, torch.Tensor) and pose_video.ndim == 5:
        return int(pose_video.shape[2])
    return int(len(pose_video))


def _raft_images(seq) -> np.ndarray:
    return render_control_maps(seq)


def to_uint8_video(frames: np.ndarray) -> np.ndarray:
    """"np" output ``(F, H, W, 3)`` in [0, 1] -> uint8 (the io/ boundary)."""
    return np.clip(np.round(np.asarray(frames) * 255.0), 0, 255).astype(np.uint8)

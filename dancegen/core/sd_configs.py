"""Published model configurations of the SD-1.5 family, for building full-size networks without their weights.

The values are those of the public ``config.json`` files: ``stable-diffusion-v1-5/stable-diffusion-v1-5`` (``unet/``,
``vae/``, ``text_encoder/``, ``scheduler/``), ``lambdalabs/sd-image-variations-diffusers`` (the same UNet with
``image_encoder/``, CLIP ViT-L/14), ``lllyasviel/sd-controlnet-openpose`` (a ControlNet copied from that UNet) and
``guoyww/animatediff-motion-adapter-v1-5-2`` (the AnimateDiff motion modules). They serve three purposes: build checks
on the meta device (no memory), benchmarks at the papers' sizes with random weights (bench/gpu_suite.py), and tests
of code paths that only exist at full size. ``write_config_folder`` writes a model folder that holds the configs
and no weights, which the loaders accept in their "meta" and "random" modes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

# SD-1.x UNet (stable-diffusion-v1-5/stable-diffusion-v1-5 and lambdalabs/sd-image-variations-diffusers share it; both
# have cross_attention_dim 768).
SD15_UNET_CONFIG: dict = {
    "sample_size": 64, "in_channels": 4, "out_channels": 4, "layers_per_block": 2, "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280], "cross_attention_dim": 768, "norm_num_groups": 32,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "act_fn": "silu", "center_input_sample": False, "downsample_padding": 1, "flip_sin_to_cos": True, "freq_shift": 0,
    "mid_block_scale_factor": 1, "norm_eps": 1e-5,
}


SD15_VAE_CONFIG: dict = {
    "act_fn": "silu", "block_out_channels": [128, 256, 512, 512], "in_channels": 3, "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4, "latent_channels": 4,
    "layers_per_block": 2, "norm_num_groups": 32, "sample_size": 512, "scaling_factor": 0.18215,
}

# CLIP ViT-L/14 vision tower with projection (sd-image-variations image_encoder/).
CLIP_VIT_L14_VISION_CONFIG: dict = {
    "hidden_size": 1024, "intermediate_size": 4096, "num_attention_heads": 16, "num_hidden_layers": 24,
    "image_size": 224, "patch_size": 14, "projection_dim": 768, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5,
}

# CLIP ViT-L/14 text tower (SD-1.5 text_encoder/).
CLIP_VIT_L14_TEXT_CONFIG: dict = {
    "hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12, "num_hidden_layers": 12,
    "max_position_embeddings": 77, "vocab_size": 49408, "projection_dim": 768, "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5, "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1,
}

# SD-1.x DDIM scheduler (scheduler/scheduler_config.json; the PNDM file of SD-1.5 has the same beta schedule).
SD15_SCHEDULER_CONFIG: dict = {
    "_class_name": "DDIMScheduler", "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1,
    "prediction_type": "epsilon",
}

# lllyasviel's SD-1.5 ControlNets: the UNet's encoder plus a pose/depth image encoder of these widths.
SD15_CONTROLNET_CONDITIONING_CHANNELS: tuple[int, ...] = (16, 32, 96, 256)

# AnimateDiff motion adapter v1-5-2 (diffusers MotionAdapter defaults are these values).
ANIMATEDIFF_MOTION_ADAPTER_CONFIG: dict = {
    "block_out_channels": [320, 640, 1280, 1280], "motion_layers_per_block": 2, "motion_mid_block_layers_per_block": 1,
    "motion_num_attention_heads": 8, "motion_norm_num_groups": 32, "motion_max_seq_length": 32,
    "use_motion_mid_block": True,
}


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


def write_config_folder(folder: str | os.PathLike, layout: str = "sd-image-variations") -> Path:
    """Write the configs (no weights) of a full-size SD-1.5-layout folder.

    Args:
        folder: where to write.
        layout: "sd-image-variations" (unet/, vae/, scheduler/, image_encoder/) or "sd15" (unet/, vae/, scheduler/,
            text_encoder/).

    Returns:
        The folder.
    """
    folder = Path(folder)
    unet = dict(SD15_UNET_CONFIG, _class_name="UNet2DConditionModel")
    _write_json(folder / "unet" / "config.json", unet)
    _write_json(folder / "vae" / "config.json", dict(SD15_VAE_CONFIG, _class_name="AutoencoderKL"))
    _write_json(folder / "scheduler" / "scheduler_config.json", SD15_SCHEDULER_CONFIG)
    if layout == "sd-image-variations":
        _write_json(folder / "image_encoder" / "config.json",
                    dict(CLIP_VIT_L14_VISION_CONFIG, architectures=["CLIPVisionModelWithProjection"],
                         model_type="clip_vision_model"))
    elif layout == "sd15":
        _write_json(folder / "text_encoder" / "config.json",
                    dict(CLIP_VIT_L14_TEXT_CONFIG, architectures=["CLIPTextModel"], model_type="clip_text_model"))
    else:
        raise ValueError(f"layout must be 'sd-image-variations' or 'sd15', got {layout!r}")
    return folder

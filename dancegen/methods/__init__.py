"""Built-in methods, one folder each (DESIGN.md): listed explicitly here, imported lazily through `dancegen.registry`.

Each entry holds import strings only, so `import dancegen.methods` never imports torch. Plugins add methods through
the `dancegen.methods` entry-point group (see `dancegen.registry`).
"""

from __future__ import annotations

from dancegen.method_spec import MethodSpec

_DYL = "dancegen.methods.dance_your_latents"
_DAB = "dancegen.methods.dance_any_beat"
_LM = "dancegen.methods.latentman"
_EYM = "dancegen.methods.edit_your_motion"
_DA = "dancegen.methods.dancing_avatar"

METHODS: dict[str, MethodSpec] = {
    "dance-your-latents": MethodSpec(
        id="dance-your-latents",
        description="Pose-guided dance video from a photo: DisCo control + spatial-temporal subspace attention "
        "guided by motion flow",
        paper="dance-your-latents.txt",
        config=f"{_DYL}.config:DanceYourLatentsConfig",
        load_config=f"{_DYL}.config:load_recipe",
        pipeline=f"{_DYL}.pipeline:DanceYourLatentsPipeline",
        verbs={"train": f"{_DYL}.train:train", "animate": f"{_DYL}.animate:animate"},
        smoke=("model.base=tiny", "model.init_from=null", "model.subspace_size=[2,2,2]", "data.root={data}",
               "data.split=null", "data.resolution=[32,32]", "data.num_frames=4",
               "data.synth={num_clips: 2, size: 32, num_frames: 6, fps: 8.0, seed: 0, camera: static}",
               "train.stages=[{name: disco, steps: 2, lr: 1e-4}, {name: stsa_only, steps: 2, lr: 1e-4}, "
               "{name: finetune, steps: 2, lr: 1e-4}]", "train.device=cpu", "train.checkpoint_every=2",
               "inference.window=4", "inference.steps=2"),
    ),
    "dance-any-beat": MethodSpec(
        id="dance-any-beat",
        description="Music-driven dance video from a photo (DabFusion): music-conditioned latent flow diffusion "
        "warps the reference",
        paper="dance-any-beat.txt",
        config=f"{_DAB}.config:DanceAnyBeatConfig",
        load_config=f"{_DAB}.config:load_recipe",
        pipeline=None,  # sampling is `pipeline.sample_flows` (a function; diffusers has no latent-flow pipeline)
        verbs={"train": f"{_DAB}.train:train", "music2dance": f"{_DAB}.music2dance:music2dance"},
        accepts={"music2dance": ("song", "ref", "out", "model", "method", "overrides", "steps", "guidance_scale",
                                 "seed", "device", "dtype", "seconds", "start", "fps", "sampler", "scene", "ref_mask",
                                 "scene_mask")},
        smoke=("data.root={data}", "data.synth={num_clips: 3, size: 32, seconds: 3.2, fps: 10.0, seed: 0}",
               "data.resolution=32", "data.num_frames=8", "data.window_stride=4", "data.fps=10",
               "data.test_music=[mBR0]", "music.encoder=scratch", "music.per_frame=true", "music.dim=16",
               "music.layers=2", "music.n_mels=8", "music.tempogram_bins=4", "model.lfae.block_expansion=8",
               "model.lfae.max_features=16", "model.lfae.num_bottleneck_blocks=1", "model.lfae.num_kp=4",
               "model.lfae.kp_block_expansion=8", "model.lfae.kp_max_features=16", "model.lfae.kp_num_blocks=2",
               "model.lfae.dm_block_expansion=8", "model.lfae.dm_max_features=16", "model.lfae.dm_num_blocks=2",
               "model.unet.dim=8", "model.unet.dim_mults=[1,2]", "model.unet.attn_heads=2",
               "model.unet.attn_dim_head=8",
               "train.stages=[{name: lfae, steps: 2, batch_size: 2}, {name: diffusion, steps: 2, batch_size: 2}]",
               "train.device=cpu", "train.checkpoint_every=2", "inference.sampler=ddim", "inference.steps=2",
               "inference.overlap=2"),
    ),
    "latentman": MethodSpec(
        id="latentman",
        description="Text -> motion -> consistent character, zero-shot: depth-ControlNet frames of a rendered body "
        "aligned by spatial latent alignment and pixel-wise guidance",
        paper="latentman.txt",
        config=f"{_LM}.config:LatentManConfig",
        load_config=f"{_LM}.config:load_recipe",
        pipeline=f"{_LM}.pipeline:LatentManPipeline",
        verbs={"text2character": f"{_LM}.text2character:text2character"},
        accepts={"text2character": ("prompt", "negative_prompt", "motion", "out", "model", "method", "overrides",
                                    "recipe", "steps", "guidance_scale", "seed", "frames", "fps", "size", "device",
                                    "dtype", "controlnet", "allow_download", "preview", "dry_run")},
        # zero-shot (no train verb): the smoke run generates with the bundled models at 2 steps
        smoke=("motion.source=procedural", "sampler.steps=2", "num_frames=3"),
    ),
    "dancing-avatar": MethodSpec(
        id="dancing-avatar",
        description="Text + poses -> human video with a text-to-image model: frames made in pose order with an "
        "OpenPose and a previous-frame ControlNet, clothes/face LoRAs and one shared background plate",
        paper="dancing-avatar.txt",
        config=f"{_DA}.config:DancingAvatarConfig",
        load_config=f"{_DA}.config:load_recipe",
        pipeline=f"{_DA}.pipeline:DancingAvatarPipeline",
        verbs={"train": f"{_DA}.train:train", "text2character": f"{_DA}.text2character:text2character"},
        accepts={"text2character": ("prompt", "negative_prompt", "motion", "poses", "clothes", "face", "place",
                                    "background", "character", "out", "model", "method", "overrides", "recipe",
                                    "steps", "guidance_scale", "seed", "frames", "fps", "size", "device", "dtype",
                                    "controlnet", "allow_download", "preview", "dry_run")},
        smoke=("data.root={data}", "data.num_clips=2", "data.num_frames=3", "size=64", "sampler.steps=2",
               "train.stages=[{name: prev_frame, steps: 2, lr: 1e-4, batch_size: 2}]", "train.device=cpu",
               "train.checkpoint_every=2", "train.with_pose_controlnet=true", "inter.condition=latent",
               "intra.n_ref_images=2", "intra.steps=2", "intra.ref_steps=2", "intra.batch_size=2",
               "background.mask_dilate_px=2", "background.feather_px=1"),
    ),
    "edit-your-motion": MethodSpec(
        id="edit-your-motion",
        description="One-shot video motion editing: the person of a source clip performs other skeletons (RCA, "
        "Motion Attention, two-stage fine-tuning, DDIM inversion)",
        paper="edit-your-motion.txt",
        config=f"{_EYM}.config:EditYourMotionConfig",
        load_config=f"{_EYM}.config:load_recipe",
        pipeline=None,  # inversion + sampling is `pipeline.edit_video` (a function on the model container)
        verbs={"finetune-oneshot": f"{_EYM}.finetune:finetune_oneshot", "train": f"{_EYM}.train:train",
               "animate": f"{_EYM}.animate:animate"},
        accepts={"animate": ("poses", "out", "model", "method", "overrides", "steps", "guidance_scale", "seed",
                             "device", "dtype", "allow_download", "preview", "dry_run")},
        # the smoke run fine-tunes the bundled base on a synthetic clip rendered into {data} for 2 + 2 steps
        smoke=("data.resolution=64", "data.num_frames=4", "data.masks=skeleton", "data.pose_backend=synthpose",
               "train.stages=[{name: temporal, steps: 2, lr: 1e-3}, {name: spatial, steps: 2, lr: 1e-3}]",
               "train.device=cpu", "train.checkpoint_every=2", "inference.steps=2"),
    ),
}

__all__ = ["METHODS", "MethodSpec"]

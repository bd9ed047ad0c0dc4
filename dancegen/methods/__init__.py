"""Built-in methods, one folder each (DESIGN.md): listed explicitly here, imported lazily through `dancegen.registry`.

Each entry holds import strings only, so `import dancegen.methods` never imports torch. Plugins add methods through
the `dancegen.methods` entry-point group (see `dancegen.registry`).
"""

from __future__ import annotations

from dancegen.method_spec import MethodSpec

_DYL = "dancegen.methods.dance_your_latents"
_DAB = "dancegen.methods.dance_any_beat"
_LM = "dancegen.methods.latentman"

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
}

__all__ = ["METHODS", "MethodSpec"]

"""Intra-frame alignment (spec §2.1): a "character pack" of reference images and the clothes / face LoRAs.

A pack is a folder reused across videos of one character:

- ``character.yaml``: the coarse clothes / face text, their refined words (the prompt's exact words), the base it
  was trained on, the LoRA settings, and a key of everything that made it;
- ``clothes.safetensors`` / ``face.safetensors``: LoRA adapters on the UNet's cross-attention projections (diffusers
  format, `core.lora.save_lora`), r = 4, alpha = r;
- ``refs/clothes_*.png`` / ``refs/face_*.png``: the crops they were trained on.

Making one (`make_pack`): the refined clothes words drive the reference model (``intra.ref_model``, default the base;
the paper uses Diffusion Fashion for clothes and MajicMIX-v6 for faces) with the OpenPose ControlNet on varied poses
of the synthetic world, so the person's place is known; the crops are the pose's person box (clothes) and head box
(face), squared, enlarged and resized to the frame size (the pluggable "keypoint" region cropper of spec §2.1: COCO's
YOLOv3 has no clothes or face class). Each adapter then trains ``intra.steps`` steps on its crops with the refined
words as caption ([std] eps/v-MSE at a uniform timestep, only the adapter's A / B get gradients), on the shared
training loop (`core.train.Trainer`). At inference both adapters are summed (`attach_pack`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dancegen.errors import InputError

PACK_FILE = "character.yaml"
ADAPTERS = ("clothes", "face")
REF_SEED_OFFSET = 7919  # the reference poses come from synthetic clips of seed + this (not the evaluation seeds)


@dataclass
class CharacterPack:
    folder: Path
    clothes: str
    face: str
    clothes_words: list[str]
    face_words: list[str]
    base: str
    key: str

    def lora_file(self, name: str) -> Path:
        return self.folder / f"{name}.safetensors"


def check_pack(folder) -> None:
    """One-line error when ``folder`` is not a character pack (checked before any model loads)."""
    p = Path(folder)
    if not (p / PACK_FILE).is_file():
        raise InputError(f"not a character pack (no {PACK_FILE})", p)
    for name in ADAPTERS:
        if not (p / f"{name}.safetensors").is_file():
            raise InputError(f"character pack without {name}.safetensors", p)


def load_pack(folder) -> CharacterPack:
    import yaml

    check_pack(folder)
    d = yaml.safe_load((Path(folder) / PACK_FILE).read_text())
    try:
        return CharacterPack(Path(folder), d["clothes"] or "", d["face"] or "", list(d["clothes_words"]),
                             list(d["face_words"]), str(d["base"]), str(d["key"]))
    except (KeyError, TypeError) as e:
        raise InputError(f"malformed {PACK_FILE} ({e})", Path(folder)) from None


def pack_key(cfg) -> str:
    """What a pack depends on: base, reference model, coarse text, refiner, LoRA and reference settings, seed."""
    i, p = cfg.intra, cfg.prompt
    parts = {"base": cfg.model.base, "pose": cfg.model.pose_controlnet, "ref_model": i.ref_model, "size": cfg.size,
             "clothes": p.clothes, "face": p.face, "refiner": p.refiner, "n_words": p.n_words, "seed": cfg.seed,
             "words": [p.clothes_words, p.face_words, p.seed], "lora": [i.targets, i.rank, i.alpha, i.steps, i.lr,
                                                                        i.batch_size, i.n_ref_images, i.ref_steps]}
    return hashlib.sha1(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def ensure_pack(cfg, comps, nets, default_folder: Path, say=lambda m: None) -> CharacterPack:
    """``intra.character`` when given, else the pack in ``default_folder`` when its key matches, else a new one."""
    if cfg.intra.character:
        pack = load_pack(cfg.intra.character)
        say(f"character pack {pack.folder}")
        return pack
    if (default_folder / PACK_FILE).is_file():
        try:
            pack = load_pack(default_folder)
            if pack.key == pack_key(cfg):
                say(f"reusing the character pack {default_folder}")
                return pack
        except InputError:
            pass
    return make_pack(cfg, comps, nets, default_folder, say)


# ------------------------------------------------------------------------------------------------ references
def _square_box(x0, y0, x1, y1, scale: float, size: int) -> tuple[int, int, int, int]:
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    side = min(size, max(4.0, scale * max(x1 - x0, y1 - y0)))
    x0 = int(round(min(max(cx - side / 2, 0), size - side)))
    y0 = int(round(min(max(cy - side / 2, 0), size - side)))
    return x0, y0, x0 + int(round(side)), y0 + int(round(side))


def region_box(kps: np.ndarray, region: str, size: int) -> tuple[int, int, int, int]:
    """Square crop box of the clothes (person box, x1.1) or the face (head joints' box, x2.5) of COCO-18 keypoints."""
    vis = kps[:, 2] > 0.3
    pts = kps[vis, :2] if vis.any() else np.array([[size / 2, size / 2]])
    if region == "face":
        head = [j for j in (0, 14, 15, 16, 17, 1) if vis[j]]
        if head:
            hp = kps[head, :2]
            body = pts[:, 1].max() - pts[:, 1].min()
            r = max(np.ptp(hp[:, 0]), np.ptp(hp[:, 1]), 0.08 * body)
            c = hp.mean(0)
            return _square_box(c[0] - r, c[1] - r, c[0] + r, c[1] + r, 1.25, size)
    return _square_box(pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max(), 1.1, size)


def crop(image: np.ndarray, box, size: int) -> np.ndarray:
    import cv2

    x0, y0, x1, y1 = box
    return cv2.resize(image[y0:y1, x0:x1], (size, size), interpolation=cv2.INTER_CUBIC)


def reference_poses(n: int, size: int, seed: int) -> np.ndarray:
    """``(n, 18, 3)`` varied COCO-18 poses at ``size``: one frame of each of n synthetic clips (no images rendered)."""
    from dancegen.synth.clip import render_clip
    from dancegen.synth.layouts import clip_seed

    out = []
    for i in range(n):
        clip = render_clip(seed=clip_seed(seed + REF_SEED_OFFSET, i), size=size, num_frames=24, render=False,
                           flow=False)
        out.append(clip.keypoints[(7 * i) % 24])
    return np.stack(out).astype(np.float32)


def make_references(cfg, comps, nets, prompt: str, n: int, say=lambda m: None) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images ``(n, S, S, 3)`` of ``prompt`` by the reference model with the OpenPose ControlNet, and their
    poses ``(n, 18, 3)``."""
    import torch

    from dancegen.core.frames import generate_frames
    from dancegen.core.text import PromptEncoder
    from dancegen.methods.dancing_avatar.model import make_scheduler
    from dancegen.pose.render import render_control_maps
    from dancegen.pose.sequence import PoseSequence

    ref = comps
    if cfg.intra.ref_model:
        from dancegen.methods.dancing_avatar.model import load_base

        ref = load_base(cfg.intra.ref_model, dtype=next(comps.unet.parameters()).dtype)
        ref.unet.to(comps.unet.device), ref.vae.to(comps.unet.device), ref.text_encoder.to(comps.unet.device)
    kps = reference_poses(n, cfg.size, cfg.seed)
    maps = torch.from_numpy(render_control_maps(PoseSequence(kps, width=cfg.size, height=cfg.size))).permute(
        0, 3, 1, 2).float().div(255)
    emb = PromptEncoder(ref.text_encoder, ref.tokenizer).encode(prompt, cfg.prompt.negative_prompt,
                                                                guidance=cfg.sampler.guidance_scale != 1.0)
    sched = make_scheduler(cfg, ref.scheduler)
    nets.set_spec("pose", scale=cfg.sampler.pose_scale)
    images = []
    gen = torch.Generator().manual_seed(int(cfg.seed) + REF_SEED_OFFSET)
    device = ref.unet.device
    for k in range(n):
        cond = {"pose": maps[k][None, :, None].to(device)}
        img = generate_frames(ref.unet, ref.vae, sched, emb.cond, emb.uncond, num_frames=1, height=cfg.size,
                              width=cfg.size, num_inference_steps=cfg.intra.ref_steps,
                              guidance_scale=cfg.sampler.guidance_scale, controlnets=nets, conditions=cond,
                              generator=gen)
        images.append((img[0].permute(1, 2, 0).numpy() * 255).round().clip(0, 255).astype(np.uint8))
        if (k + 1) % 8 == 0 or k + 1 == n:
            say(f"reference images: {k + 1}/{n}")
    return np.stack(images), kps


# ------------------------------------------------------------------------------------------------ LoRA training
def train_adapter(cfg, comps, name: str, crops: np.ndarray, caption: str, work_dir: Path) -> None:
    """Add adapter ``name`` to the UNet's ``intra.targets`` and train it on ``crops`` (uint8 ``(N, S, S, 3)``)."""
    import torch
    from torch.utils.data import Dataset

    from dancegen.core.lora import add_lora
    from dancegen.core.stages import StageConfig
    from dancegen.core.text import PromptEncoder
    from dancegen.core.train import Trainer
    from dancegen.core.train_config import OptimConfig, TrainLoopConfig
    from dancegen.methods.dancing_avatar.data import encode_frames
    from dancegen.methods.dancing_avatar.train import make_loss_fn

    i = cfg.intra
    unet = comps.unet
    add_lora(unet, name, rank=i.rank, alpha=i.alpha, targets=i.targets)
    latents = encode_frames(comps.vae, crops).to(unet.device)
    with torch.no_grad():
        context = PromptEncoder(comps.text_encoder, comps.tokenizer).encode(caption, guidance=False).cond[0]

    class Crops(Dataset):
        def __len__(self):
            return len(latents)

        def __getitem__(self, k):
            return {"latents": latents[k], "context": context}

    class Holder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.unet = unet

    loss_fn = make_loss_fn(dict(comps.scheduler.config))  # the text encoder is frozen: context precomputed

    stage = StageConfig(name=name, steps=i.steps, lr=i.lr)
    loop = TrainLoopConfig(max_steps=stage.steps, batch_size=min(i.batch_size, len(latents)), seed=cfg.seed,
                           device=str(unet.device.type), log_every=max(1, stage.steps // 5),
                           checkpoint_every=stage.steps, keep_checkpoints=1, output_dir=str(work_dir / name),
                           resume="never", trainable=[rf"re:\.lora_[AB]\.{name}\."], export_trainable=False,
                           optim=OptimConfig(name="adamw", lr=stage.lr, weight_decay=0.0))
    Trainer(Holder(), loss_fn, Crops(), loop, logger=lambda step, rec: None, announce=False).fit()
    unet.requires_grad_(False)


def make_pack(cfg, comps, nets, folder: Path, say=lambda m: None) -> CharacterPack:
    """Refine, draw references, crop, train both adapters, save the pack into ``folder`` (atomically)."""
    import shutil

    import torch
    import yaml

    from dancegen.core.lora import save_lora, set_lora
    from dancegen.io.atomic import atomic_dir
    from dancegen.io.video import write_image
    from dancegen.methods.dancing_avatar.prompts import refine

    p = cfg.prompt
    words = {"clothes": refine("clothes", p.clothes, p), "face": refine("face", p.face, p)}
    key = pack_key(cfg)
    with atomic_dir(Path(folder), overwrite=True) as tmp, torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(cfg.seed))  # the training noise; local to this block (the caller's RNG is restored)
        (tmp / "refs").mkdir()
        for name in ADAPTERS:
            coarse = p.clothes if name == "clothes" else p.face
            caption = " ".join(words[name]) or (p.text or "")
            say(f"character pack: {cfg.intra.n_ref_images} {name} references for {coarse or caption!r}")
            set_lora(comps.unet, None)  # each adapter's references come from the plain model
            images, kps = make_references(cfg, comps, nets, caption, cfg.intra.n_ref_images, say)
            crops = np.stack([crop(img, region_box(k, name, cfg.size), cfg.size) for img, k in zip(images, kps,
                                                                                               strict=True)])
            for k, c in enumerate(crops):
                write_image(tmp / "refs" / f"{name}_{k:03d}.png", c)
            say(f"character pack: training the {name} LoRA ({cfg.intra.steps} steps)")
            train_adapter(cfg, comps, name, crops, caption, tmp / "train")
            save_lora(tmp / f"{name}.safetensors", comps.unet, name, metadata={"caption": caption})
        shutil.rmtree(tmp / "train", ignore_errors=True)
        set_lora(comps.unet, None)
        data = {"clothes": p.clothes, "face": p.face, "clothes_words": words["clothes"],
                "face_words": words["face"], "base": cfg.model.base or "t2i-tiny", "key": key,
                "lora": {"targets": cfg.intra.targets, "rank": cfg.intra.rank, "alpha": cfg.intra.alpha,
                         "steps": cfg.intra.steps, "lr": cfg.intra.lr}}
        (tmp / PACK_FILE).write_text(yaml.safe_dump(data, sort_keys=False))
    return CharacterPack(Path(folder), p.clothes or "", p.face or "", words["clothes"], words["face"],
                         data["base"], key)


def attach_pack(unet, pack: CharacterPack, clothes_weight: float = 1.0, face_weight: float = 1.0) -> list[str]:
    """Both adapters on the UNet (loaded from the pack unless already there), summed with these weights; returns the
    adapted layers."""
    from dancegen.core.lora import load_lora, lora_adapters, set_lora

    have = lora_adapters(unet)
    modules: list[str] = []
    for name in ADAPTERS:
        if name not in have:
            modules += load_lora(unet, pack.lora_file(name), name).modules
    set_lora(unet, list(ADAPTERS), [clothes_weight, face_weight])
    return modules

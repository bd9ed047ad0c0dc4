"""Dancing Avatar (spec dancing-avatar.md §6 CPU tests) on tiny SD-1.5-layout folders written here: prompt
refinement, person masks and paste-back, frames made one at a time in pose order, no previous-frame control on frame
0, the character pack's LoRAs only on the cross-attention projections, same seed same bytes, one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dancegen.errors import DanceGenError, InputError

ROOT = Path(__file__).resolve().parents[1]
PLACE = "in a room with a tiled floor and a plain wall"


# ------------------------------------------------------------------------------------------------ config, prompts
def test_the_tiny_recipe_spells_out_the_bundled_overrides_and_paper_defaults():
    from dancegen.methods.dancing_avatar.config import BUNDLED_OVERRIDES, load_recipe

    tiny = load_recipe(ROOT / "recipes" / "dancing_avatar" / "tiny_synth.yaml", [])
    assert tiny == load_recipe(None, list(BUNDLED_OVERRIDES))
    paper = load_recipe(None, [])
    assert (paper.size, paper.sampler.steps, paper.sampler.guidance_scale, paper.sampler.scheduler) == \
        (512, 25, 7.5, "dpmsolver++")
    assert (paper.intra.rank, paper.intra.alpha, paper.intra.steps, paper.intra.lr, paper.prompt.n_words) == \
        (4, 4.0, 500, 1e-4, 20)
    assert (paper.background.mask_dilate_px, paper.background.feather_px, paper.background.paste_back) == (8, 4, True)
    assert (paper.train.stages[0].lr, paper.train.optimizer) == (5e-5, "adamw")
    with pytest.raises(DanceGenError, match="segmenter"):
        load_recipe(None, ["background.segmenter=magic"])
    with pytest.raises(DanceGenError, match="order"):
        load_recipe(None, ["prompt.order=[clothes,face]"])


def test_template_refinement_gives_exactly_n_words_keeps_the_coarse_words_and_adds_no_colour():
    from dancegen.methods.dancing_avatar.config import PromptConfig
    from dancegen.methods.dancing_avatar.prompts import compose, refine, template_refine
    from dancegen.synth.appearance import COLOURS

    words = template_refine("clothes", "white pleated skirt", 20, seed=0)
    assert len(words) == len(set(words)) == 20 and words[:3] == ["white", "pleated", "skirt"]
    assert template_refine("clothes", "white pleated skirt", 20, seed=0) == words  # deterministic
    assert not ({w for w in words[3:]} & set(COLOURS))  # never a colour the user did not give
    assert "sleeveless" not in words and "v-neck" not in words  # a skirt gets no neckline / sleeves slot
    face = template_refine("face", "short black hair", 20, seed=0)
    assert len(face) == 20 and face[:3] == ["short", "black", "hair"]
    cfg = PromptConfig(clothes="red t-shirt", face="short black hair", place=PLACE)
    prompt = compose(cfg, refine("clothes", cfg.clothes, cfg), refine("face", cfg.face, cfg))
    assert prompt.startswith(PLACE + ", red t-shirt ")  # background first (spec §2.4)
    cached = PromptConfig(clothes="x", refiner="cached", n_words=3, clothes_words=["a", "b", "c", "d"])
    assert refine("clothes", "x", cached) == ["a", "b", "c"]
    with pytest.raises(InputError, match="distinct words"):
        refine("clothes", "x", PromptConfig(clothes="x", refiner="cached", n_words=5, clothes_words=["a"]))
    verbatim = PromptConfig(clothes="a red t-shirt", n_words=0, prefix="a dancer in ", order=["clothes", "face",
                                                                                               "background"])
    assert compose(verbatim, refine("clothes", verbatim.clothes, verbatim), []) == "a dancer in a red t-shirt"


def test_pose_masks_cover_the_synthetic_dancer_and_paste_back_keeps_the_plate_exactly():
    from dancegen.methods.dancing_avatar.pipeline import composite
    from dancegen.pose.masks import dilate_mask, feather_mask, latent_mask, pose_masks
    from dancegen.pose.sequence import PoseSequence
    from dancegen.synth.clip import render_clip

    clip = render_clip(seed=5, size=64, num_frames=4, flow=False)
    masks = dilate_mask(pose_masks(PoseSequence(clip.keypoints, width=64, height=64), 0.09), 2)
    covered = (masks & clip.masks).sum() / clip.masks.sum()
    assert covered > 0.9 and masks.mean() < 0.5, covered  # the dancer, not the whole frame
    w = feather_mask(masks[0], 2)
    assert w.max() == 1.0 and (w[~masks[0]] == 0).all() and ((w > 0) & (w < 1)).any()
    rng = np.random.default_rng(0)
    gen, plate = rng.integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    out = composite(gen, plate, w)
    assert np.array_equal(out[~masks[0]], plate[~masks[0]]) and np.array_equal(out[w == 1], gen[w == 1])
    lat = latent_mask(masks[0], 4)
    assert lat.shape == (16, 16) and lat[masks[0][::4, ::4]].all()


# ------------------------------------------------------------------------------------------------ tiny models
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from diffusers import UNet2DConditionModel

    from dancegen.core.controlnet import LatentControlNetModel
    from dancegen.core.tiny import write_tiny_controlnet, write_tiny_sd15
    from dancegen.pose.openpose_json import write_openpose_folder
    from dancegen.pose.sequence import PoseSequence
    from dancegen.synth.clip import render_clip

    root = tmp_path_factory.mktemp("da")
    sd = write_tiny_sd15(root / "sd15", seed=0, image_size=32)
    pose = write_tiny_controlnet(root / "pose", sd, seed=1)
    unet = UNet2DConditionModel.from_pretrained(sd / "unet")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(2)
        prev = LatentControlNetModel.from_unet(unet)
        for conv in [*prev.controlnet_down_blocks, prev.controlnet_mid_block]:
            conv.reset_parameters()  # random residual outputs, so the previous frame changes the result
    prev.save_pretrained(root / "prev")
    clip = render_clip(seed=3, size=32, num_frames=4, flow=False, camera_motion="static")
    write_openpose_folder(PoseSequence(clip.keypoints, width=32, height=32, fps=8.0), root / "poses")
    return {"sd": sd, "pose": pose, "prev": root / "prev", "poses": root / "poses"}


def _pipe(tiny, inter=True):
    from dancegen.methods.dancing_avatar.model import load_base, load_controlnets

    comps = load_base(str(tiny["sd"]))
    nets = load_controlnets(str(tiny["pose"]), str(tiny["prev"]) if inter else None)
    from dancegen.methods.dancing_avatar.pipeline import DancingAvatarPipeline

    return DancingAvatarPipeline(comps.unet, comps.vae, comps.text_encoder, comps.tokenizer, comps.scheduler, nets)


def _inputs(tiny, n=4):
    from dancegen.pose.masks import dilate_mask, pose_masks
    from dancegen.pose.openpose_json import read_pose_input
    from dancegen.pose.render import render_control_maps

    seq = read_pose_input(tiny["poses"])[:n]
    maps = torch.from_numpy(render_control_maps(seq)).permute(0, 3, 1, 2).float() / 255
    return maps, dilate_mask(pose_masks(seq), 1)


def test_frames_are_made_one_at_a_time_in_order_without_previous_frame_control_on_frame_0(tiny):
    pipe = _pipe(tiny)
    maps, masks = _inputs(tiny)
    unet_batches, prev_calls, done = [], [], []
    pipe.unet.register_forward_pre_hook(lambda m, args: unet_batches.append(args[0].shape[0]))
    pipe.controlnets["prev"].register_forward_pre_hook(lambda m, args: prev_calls.append(len(done)))
    out = pipe("a dancer", maps, masks=masks, plate_prompt=PLACE, num_inference_steps=2, guidance_scale=2.0,
               inter_condition="latent", feather_px=1, generator=torch.Generator().manual_seed(0),
               frame_callback=lambda t, frame: done.append(frame))
    assert len(done) == 4 and out.frames is None  # frames handed over one by one, not kept
    assert set(unet_batches) == {2}  # one frame per UNet call ([uncond; cond]): memory does not grow with F
    # plate (2 images) + 4 frames, 2 steps each
    assert len(unet_batches) == (2 + 4) * 2
    assert 0 not in prev_calls and set(prev_calls) == {1, 2, 3}  # no previous frame for frame 0
    for t, frame in enumerate(done):  # paste-back: outside the person mask the shared plate, byte for byte
        assert np.array_equal(frame[~masks[t]], out.plate[~masks[t]])
    assert not np.array_equal(done[0], done[1])
    prev_calls.clear()
    off = pipe("a dancer", maps, masks=masks, plate_prompt=PLACE, num_inference_steps=2, guidance_scale=2.0,
               use_inter=False, inter_condition="latent", feather_px=1, generator=torch.Generator().manual_seed(0))
    assert not prev_calls and not np.array_equal(off.frames[1], done[1])  # the switch changes only later frames
    assert np.array_equal(off.frames[0], done[0]) and np.array_equal(off.plate, out.plate)
    plain = pipe("a dancer", maps, use_background=False, use_inter=False, num_inference_steps=2,
                 guidance_scale=2.0, generator=torch.Generator().manual_seed(0))
    assert plain.plate is None and plain.masks is None
    assert not np.array_equal(plain.frames[1][~masks[1]], out.plate[~masks[1]])


def test_a_segment_function_replaces_the_pose_masks(tiny):
    pipe = _pipe(tiny, inter=False)
    maps, masks = _inputs(tiny, 2)
    seen = []

    def segment(image, t):
        seen.append(t)
        return masks[max(t, 0)]

    out = pipe("a dancer", maps, segment=segment, num_inference_steps=2, guidance_scale=1.0, use_inter=False,
               generator=torch.Generator().manual_seed(0))
    assert seen == [-1, 0, 1] and np.array_equal(out.masks, masks)


def _verb_kwargs(tiny, **kw):
    sets = ["size=32", "intra.n_ref_images=2", "intra.steps=2", "intra.ref_steps=2", "intra.batch_size=2",
            "background.mask_dilate_px=1", "background.feather_px=1", "inter.condition=latent",
            f"model.prev_controlnet={tiny['prev']}"] + kw.pop("sets", [])
    base = dict(poses=tiny["poses"], clothes="red t-shirt", face="short black hair", place=PLACE, model=str(tiny["sd"]),
                controlnet=[str(tiny["pose"])], frames=3, steps=2, guidance_scale=2.0, preview=False, seed=0,
                overrides=sets, method="dancing-avatar")
    base.update(kw)
    return base


def test_the_verb_writes_the_same_bytes_for_the_same_seed_and_reuses_its_character_pack(tiny, tmp_path):
    from dancegen import api
    from dancegen.core.lora import LORA_TARGETS, load_lora, lora_adapters
    from dancegen.io.video import read_video, read_video_metadata
    from dancegen.methods.dancing_avatar.character import load_pack

    rep = api.text2character(None, tmp_path / "a.mp4", **_verb_kwargs(tiny))
    assert rep["method"] == "dancing-avatar" and rep["frames"] == 3 and rep["intra"] and rep["inter"]
    video = read_video(tmp_path / "a.mp4").frames
    assert video.shape == (3, 32, 32, 3) and video.std() > 0
    meta = read_video_metadata(tmp_path / "a.mp4")
    assert meta["method"] == "dancing-avatar" and meta["switches"] == "intra=1,background=1,inter=1"
    pack = load_pack(rep["character"])
    assert pack.clothes_words[:2] == ["red", "t-shirt"] and len(pack.face_words) == 20
    again = api.text2character(None, tmp_path / "b.mp4", character=rep["character"], **_verb_kwargs(tiny))
    assert (tmp_path / "a.mp4").read_bytes() == (tmp_path / "b.mp4").read_bytes()  # same seed, same bytes
    assert again["character"] == rep["character"]
    other = api.text2character(None, tmp_path / "c.mp4", **_verb_kwargs(tiny, seed=1))
    assert (tmp_path / "c.mp4").read_bytes() != (tmp_path / "a.mp4").read_bytes()
    # the pack's adapters sit on the cross-attention projections only
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(tiny["sd"] / "unet")
    modules = load_lora(unet, pack.lora_file("clothes"), "clothes").modules
    assert modules and all(m.endswith(LORA_TARGETS["cross_attn"]) for m in modules)
    assert len(modules) == sum(1 for n, _ in unet.named_modules() if n.endswith(LORA_TARGETS["cross_attn"]))
    assert lora_adapters(unet) == ["clothes"] and not any("attn1" in m for m in modules)
    assert other["seconds_per_frame"] > 0


def test_switches_off_and_a_base_without_a_previous_frame_module(tiny, tmp_path):
    from dancegen import api
    from dancegen.io.video import read_image, read_video

    sets = ["intra.enabled=false", "model.prev_controlnet=null"]
    rep = api.text2character(None, tmp_path / "a.mp4", **_verb_kwargs(tiny, sets=sets))
    assert not rep["inter"] and "inter-frame alignment is off" in rep["note"]
    plate = read_image(rep["plate"])
    frames = read_video(tmp_path / "a.mp4").frames
    assert plate.shape == frames.shape[1:]
    off = api.text2character(None, tmp_path / "b.mp4",
                             **_verb_kwargs(tiny, sets=sets + ["background.enabled=false"]))
    assert "plate" not in off and not off["background"]
    given = api.text2character(None, tmp_path / "c.mp4", background=rep["plate"], **_verb_kwargs(tiny, sets=sets))
    # --background IMAGE is the shared plate: given the plate the first run made, the same video comes out
    assert read_image(given["plate"]).tobytes() == plate.tobytes()
    assert (tmp_path / "c.mp4").read_bytes() == (tmp_path / "a.mp4").read_bytes()


def test_bad_inputs_are_one_line_errors_before_any_model_loads(tiny, tmp_path):
    from dancegen import api

    kw = _verb_kwargs(tiny)
    with pytest.raises(InputError, match="driving poses not found"):
        api.text2character(None, tmp_path / "a.mp4", **{**kw, "poses": tmp_path / "none"})
    with pytest.raises(InputError, match="video"):
        api.text2character(None, tmp_path / "a.txt", **kw)
    with pytest.raises(InputError, match="needs a description"):
        api.text2character(None, tmp_path / "a.mp4", **{**kw, "clothes": None, "face": None})
    with pytest.raises(InputError, match="square"):
        api.text2character(None, tmp_path / "a.mp4", **{**kw, "size": (32, 48)})
    bad = tmp_path / "pack"
    bad.mkdir()
    with pytest.raises(InputError, match="not a character pack"):
        api.text2character(None, tmp_path / "a.mp4", **{**kw, "character": bad})
    with pytest.raises(DanceGenError, match="nowhere"):
        api.text2character(None, tmp_path / "a.mp4", **{**kw, "model": str(tmp_path / "nowhere")})
    with pytest.raises(InputError, match="background image not found"):
        api.text2character(None, tmp_path / "a.mp4", **{**kw, "background": tmp_path / "bg.png"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pack"]  # nothing written


def _tiny_sam(folder):
    from transformers import SamConfig, SamImageProcessor, SamModel, SamProcessor
    from transformers.models.sam.configuration_sam import (
        SamMaskDecoderConfig,
        SamPromptEncoderConfig,
        SamVisionConfig,
    )

    vision = SamVisionConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                             image_size=64, patch_size=8, output_channels=16, global_attn_indexes=[1], window_size=4,
                             mlp_dim=64, num_pos_feats=8)
    prompt = SamPromptEncoderConfig(hidden_size=16, image_size=64, patch_size=8, mask_input_channels=4)
    decoder = SamMaskDecoderConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, mlp_dim=32,
                                   iou_head_hidden_dim=16)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        SamModel(SamConfig(vision_config=vision.to_dict(), prompt_encoder_config=prompt.to_dict(),
                           mask_decoder_config=decoder.to_dict())).save_pretrained(folder)
    SamProcessor(SamImageProcessor(size={"longest_edge": 64}, pad_size={"height": 64, "width": 64})
                 ).save_pretrained(folder)
    return folder


def test_sam_through_transformers_is_prompted_by_the_pose_box_and_runs_in_the_verb(tiny, tmp_path):
    from dancegen import api
    from dancegen.methods.dancing_avatar.segment import SamSegmenter

    sam = SamSegmenter.load(str(_tiny_sam(tmp_path / "sam")))
    kps = np.zeros((18, 3), np.float32)
    kps[[0, 8, 11]] = [[10, 5, 1], [8, 20, 1], [14, 25, 1]]
    box, points = sam.prompts(kps, 32, 32)
    assert box == pytest.approx([7.7, 4.0, 14.3, 26.0]) and len(points) == 3
    mask = sam(np.full((32, 32, 3), 128, np.uint8), kps)
    assert mask.shape == (32, 32) and mask.dtype == bool
    sets = ["intra.enabled=false", "background.segmenter=sam", f"model.sam={tmp_path / 'sam'}"]
    rep = api.text2character(None, tmp_path / "a.mp4", **_verb_kwargs(tiny, sets=sets, frames=2))
    assert rep["frames"] == 2 and rep["background"]
    with pytest.raises(InputError, match="model.sam"):
        api.text2character(None, tmp_path / "b.mp4", **_verb_kwargs(tiny, sets=["background.segmenter=sam"]))


def test_frames_stream_to_the_encoder_so_memory_does_not_grow_with_the_poses(tiny, tmp_path, monkeypatch):
    """Each frame (and its preview row) is encoded before the next is generated, and pose maps and masks are drawn
    one frame at a time: nothing per frame is held, so a long pose sequence runs in constant memory."""
    from dancegen import api
    from dancegen.io import video as video_io
    from dancegen.methods.dancing_avatar.pipeline import DancingAvatarPipeline
    from dancegen.pose import render
    from dancegen.pose.openpose_json import read_pose_input, write_openpose_folder

    seq = read_pose_input(tiny["poses"])
    long = type(seq)(np.concatenate([seq.keypoints] * 3), width=32, height=32, fps=8.0)  # 12 poses
    write_openpose_folder(long, tmp_path / "long")
    events, drawn = [], []
    write, gen, draw = video_io.VideoWriter.write, DancingAvatarPipeline.generate_image, render.render_control_maps

    def spy_write(self, frame):
        events.append(("write", self.path.name))
        return write(self, frame)

    def spy_gen(self, *a, **k):
        events.append(("generate", None))
        return gen(self, *a, **k)

    def spy_draw(s, *a, **k):
        drawn.append(len(s))
        return draw(s, *a, **k)

    monkeypatch.setattr(video_io.VideoWriter, "write", spy_write)
    monkeypatch.setattr(DancingAvatarPipeline, "generate_image", spy_gen)
    monkeypatch.setattr(render, "render_control_maps", spy_draw)
    rep = api.text2character(None, tmp_path / "long.mp4", **_verb_kwargs(
        tiny, poses=tmp_path / "long", frames=12, preview=True, sets=["intra.enabled=false"]))
    assert rep["frames"] == 12 and video_io.video_info(tmp_path / "long.mp4")["num_frames"] == 12
    kinds = [k for k, _ in events]
    first_write = kinds.index("write")
    # plate (2 images), frame 0, then every later frame is generated only after the one before was written
    per_frame = [i for i, k in enumerate(kinds) if k == "generate"][2:]
    writes_before = [kinds[:i].count("write") for i in per_frame]
    assert writes_before == [2 * t for t in range(12)] and first_write < per_frame[1]
    assert drawn and set(drawn) == {1}  # pose maps drawn one frame at a time, never the whole sequence


def _inpaint_folder(tiny, folder, zero_extra: bool, in_channels: int = 9):
    """A tiny SD-1.5-inpainting-layout folder (unet/ only is enough for model.inpaint): the base UNet with its conv_in
    widened to ``in_channels`` (mask + masked-image latents), the new input weights zero or random."""
    from diffusers import UNet2DConditionModel

    base = UNet2DConditionModel.from_pretrained(tiny["sd"] / "unet")
    cfg = dict(base.config)
    cfg["in_channels"] = in_channels
    unet = UNet2DConditionModel.from_config(cfg)
    unet.load_state_dict({k: v for k, v in base.state_dict().items() if k != "conv_in.weight"}, strict=False)
    with torch.no_grad():
        w = torch.zeros_like(unet.conv_in.weight) if zero_extra else torch.randn_like(unet.conv_in.weight) * 0.2
        w[:, : base.config.in_channels] = base.conv_in.weight
        unet.conv_in.weight.copy_(w)
    unet.save_pretrained(folder / "unet")
    return folder


def test_an_inpainting_unet_takes_the_mask_and_masked_image_as_extra_channels(tiny, tmp_path):
    """Equivalence: an inpainting UNet whose extra input weights are zero is the base UNet, so generate_frames with
    the extra channels gives the base's latents exactly; with random extra weights the mask and image matter."""
    from dancegen.core.frames import generate_frames
    from dancegen.methods.dancing_avatar.model import load_inpaint_unet

    pipe = _pipe(tiny, inter=False)
    emb = pipe.prompt_encoder.encode(PLACE, "", guidance=True)
    noise = torch.randn(1, 4, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    extra = torch.randn(1, 5, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    kw = dict(num_frames=1, height=32, width=32, num_inference_steps=3, guidance_scale=2.0, latents=noise,
              output_type="latent")
    base = generate_frames(pipe.unet, pipe.vae, pipe.scheduler, emb.cond, emb.uncond, **kw)
    zero = load_inpaint_unet(str(_inpaint_folder(tiny, tmp_path / "zero", True)), pipe.unet)
    same = generate_frames(zero, pipe.vae, pipe.scheduler, emb.cond, emb.uncond, extra_channels=extra, **kw)
    torch.testing.assert_close(same, base, rtol=0, atol=1e-6)
    live = load_inpaint_unet(str(_inpaint_folder(tiny, tmp_path / "live", False)), pipe.unet)
    a = generate_frames(live, pipe.vae, pipe.scheduler, emb.cond, emb.uncond, extra_channels=extra, **kw)
    b = generate_frames(live, pipe.vae, pipe.scheduler, emb.cond, emb.uncond, extra_channels=-extra, **kw)
    assert (a - b).abs().max() > 1e-3


def test_the_plate_is_made_by_the_inpainting_model_when_one_is_given(tiny, tmp_path):
    from dancegen import api
    from dancegen.io.video import read_image, read_video

    folder = _inpaint_folder(tiny, tmp_path / "inpaint", False)
    sets = ["intra.enabled=false", "model.prev_controlnet=null"]
    blend = api.text2character(None, tmp_path / "a.mp4", **_verb_kwargs(tiny, sets=sets))
    rep = api.text2character(None, tmp_path / "b.mp4", **_verb_kwargs(tiny, sets=sets + [f"model.inpaint={folder}"]))
    assert rep["inpaint"] == str(folder) and "inpaint" not in blend
    plate, plate_blend = read_image(rep["plate"]), read_image(blend["plate"])
    assert not np.array_equal(plate, plate_blend)  # the 9-channel UNet made it
    frames = read_video(tmp_path / "b.mp4").frames
    assert frames.shape == (3, 32, 32, 3)
    # a model whose UNet is not an inpainting one is refused in one line before any frame is made
    wrong = _inpaint_folder(tiny, tmp_path / "wrong", True, in_channels=4)
    from dancegen.errors import InputError

    with pytest.raises(InputError, match="takes 4 input channels, an inpainting UNet takes 9"):
        api.text2character(None, tmp_path / "c.mp4", **_verb_kwargs(tiny, sets=sets + [f"model.inpaint={wrong}"]))
    assert not (tmp_path / "c.mp4").exists()


def test_the_llm_refiner_sends_the_papers_template_and_normalises_the_answer(monkeypatch):
    """The optional LLM backend (spec §2.1): one chat request per field with the paper's verbatim template, the
    answer cut to exactly n_words single words; no key or a failed request is a one-line error."""
    import io
    import json
    import urllib.request

    from dancegen.methods.dancing_avatar.config import CLOTHES_TEMPLATE, PromptConfig
    from dancegen.methods.dancing_avatar.prompts import refine

    sent = []

    def urlopen(req, timeout=None):
        sent.append((req.full_url, dict(req.header_items()), json.loads(req.data)))
        answer = "Pleated, white, cotton, knee-length, A-line, soft, flowing, high-waisted, matte, crisp, school, " \
                 "uniform, neat, light, airy, folded, classic, modest, tidy, smooth, even, extra, words"
        return io.BytesIO(json.dumps({"choices": [{"message": {"content": answer}}]}).encode())

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    cfg = PromptConfig(refiner="llm", n_words=20, llm_url="http://llm.invalid/v1/chat/completions")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(InputError, match="OPENAI_API_KEY"):
        refine("clothes", "white pleated skirt", cfg)
    assert not sent
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    words = refine("clothes", "white pleated skirt", cfg)
    assert len(words) == 20 and words[:3] == ["pleated", "white", "cotton"] and len(set(words)) == 20
    url, headers, body = sent[0]
    assert url == cfg.llm_url and headers["Authorization"] == "Bearer sk-test" and body["temperature"] == 0
    assert body["messages"][0]["content"] == CLOTHES_TEMPLATE.replace("[clothes]", "white pleated skirt")

    def down(req, timeout=None):
        raise OSError("connection refused")

    monkeypatch.setattr(urllib.request, "urlopen", down)
    with pytest.raises(InputError, match="failed: connection refused"):
        refine("face", "short black hair", cfg)


def test_the_blazepose_segmenter_finds_the_dancer_and_falls_back_to_the_pose_mask(models):
    """segmenter "blazepose" on a rendered dancer gives its true mask; a generated frame with nobody in it gets the
    pose's drawn mask (said once) instead of stopping the run."""
    from dancegen.methods.dancing_avatar.config import load_recipe
    from dancegen.methods.dancing_avatar.text2character import image_segmenter, person_masks
    from dancegen.pose.sequence import PoseSequence
    from dancegen.synth.clip import render_clip

    clip = render_clip(seed=11, size=128, num_frames=2, flow=False, camera_motion="static")
    seq = PoseSequence(clip.keypoints.astype(np.float32), width=128, height=128, fps=clip.fps)
    cfg = load_recipe(None, ["background.segmenter=blazepose", "background.mask_dilate_px=0", "size=128"])
    said = []
    segment = image_segmenter(cfg, seq, say=said.append)
    m = segment(clip.frames[1], 1)
    truth = clip.masks[1]
    assert (m & truth).sum() / (m | truth).sum() > 0.9 and not said
    blank = np.full_like(clip.frames[0], 127)
    assert np.array_equal(segment(blank, 0), person_masks(seq, cfg)[0]) and segment(blank, 1).any()
    assert len(said) == 1 and "frame 0" in said[0] and segment.missed == [0, 1]


def test_motion_text_instead_of_poses_drives_the_video(tiny, tmp_path):
    """`--motion TEXT`: the bundled text-to-motion model's joints, projected to COCO-18 and fitted to the frame,
    drive the frames (the poses of a raised-arms motion put the wrists above the shoulders, a squat's do not)."""
    from dancegen import api
    from dancegen.io.video import read_video
    from dancegen.methods.dancing_avatar.config import load_recipe
    from dancegen.methods.dancing_avatar.text2character import motion_poses

    cfg = load_recipe(None, ["size=32", "seed=0"])
    up = motion_poses("a person raises arms", cfg)
    down = motion_poses("a person squats", cfg)
    assert up.format == "coco18" and (up.width, up.height) == (32, 32)
    k = up.keypoints
    assert np.isfinite(k).all() and (k[..., :2] >= 0).all() and (k[..., :2] <= 32).all()

    def wrists_up(seq):
        k = seq.keypoints
        return float(np.mean(np.minimum(k[:, 4, 1], k[:, 7, 1]) < np.minimum(k[:, 2, 1], k[:, 5, 1])))

    assert wrists_up(up) > wrists_up(down) + 0.3
    rep = api.text2character(None, tmp_path / "m.mp4", **_verb_kwargs(
        tiny, poses=None, motion="a person raises arms", sets=["intra.enabled=false", "model.prev_controlnet=null"]))
    assert rep["frames"] == 3 and read_video(tmp_path / "m.mp4").frames.shape == (3, 32, 32, 3)


def test_the_inpainting_unet_gets_the_mask_then_the_masked_images_latents(tiny, tmp_path, monkeypatch):
    """diffusers' order for a 9-channel UNet: [latents, mask (1 = regenerate), latents of the image with the masked
    pixels zeroed]; the ControlNets are not used for the plate."""
    import dancegen.core.frames as frames
    from dancegen.core.latents import encode_images
    from dancegen.methods.dancing_avatar.model import load_inpaint_unet
    from dancegen.pose.masks import latent_mask

    pipe = _pipe(tiny, inter=False)
    pipe.inpaint_unet = load_inpaint_unet(str(_inpaint_folder(tiny, tmp_path / "live", False)), pipe.unet)
    got = {}
    real = frames.generate_frames

    def spy(unet, *a, **kw):
        got.update(unet=unet, extra=kw["extra_channels"], controlnets=kw.get("controlnets"))
        return real(unet, *a, **kw)

    monkeypatch.setattr(frames, "generate_frames", spy)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    person = np.zeros((32, 32), bool)
    person[8:24, 12:20] = True
    emb = pipe.prompt_encoder.encode(PLACE, "", guidance=True)
    noise = torch.randn(1, 4, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    out = pipe.inpaint_image(emb, noise, 2, 2.0, image, person)
    assert out.shape == (32, 32, 3) and got["unet"] is pipe.inpaint_unet and got["controlnets"] is None
    extra = got["extra"][:, :, 0]
    assert extra.shape == (1, 5, 16, 16)
    assert torch.equal(extra[0, 0], torch.from_numpy(latent_mask(person, 2)).float())
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255 * 2 - 1
    x = x * torch.from_numpy(~person)  # masked pixels 0 in [-1, 1] (mid grey), as diffusers masks the image
    with torch.no_grad():
        masked = encode_images(pipe.vae, x)
    torch.testing.assert_close(extra[:, 1:], masked, rtol=1e-5, atol=1e-5)

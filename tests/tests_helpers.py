"""Small data builders shared by several test files (not a test module)."""

from __future__ import annotations

import numpy as np

from dancegen.pose.sequence import PoseSequence

# A standing COCO-18 person in a 128x128 image.
STAND = np.array([
    [64, 20], [64, 34], [54, 34], [50, 50], [48, 64], [74, 34], [78, 50], [80, 64], [58, 68], [57, 90], [57, 112],
    [70, 68], [71, 90], [71, 112], [61, 17], [67, 17], [58, 19], [70, 19]], np.float32)


def dance_sequence(num_frames=6, scale=1.0, shift=(0.0, 0.0)) -> PoseSequence:
    """The standing person waving the right wrist and drifting right one pixel per frame, at 10 fps."""
    kps = np.zeros((num_frames, 18, 3), np.float32)
    for t in range(num_frames):
        xy = (STAND - [64, 64]) * scale + [64 + shift[0], 64 + shift[1]]
        xy[4] += [-6 * np.sin(t), -8 * t / num_frames]
        xy[:, 0] += t
        kps[t, :, :2] = xy
        kps[t, :, 2] = 0.9
    return PoseSequence(kps, "coco18", 128, 128, fps=10)


def save_tiny_clip(path, projection_dim: int = 16) -> None:
    """A tiny CLIP of the real architecture (text + vision towers, a-z tokenizer, 32 px processor) saved to `path`.

    `projection_dim=512` gives ViT-B/32's embedding width (what Wav2CLIP's space needs)."""
    import json

    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "!": 2}
    for t in letters + [x + "</w>" for x in letters]:
        vocab[t] = len(vocab)
    path.mkdir(parents=True, exist_ok=True)
    (path / "vocab.json").write_text(json.dumps(vocab))
    (path / "merges.txt").write_text("#version: 0.2\n")
    cfg = CLIPConfig(text_config=dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                                      vocab_size=len(vocab), max_position_embeddings=77, bos_token_id=0,
                                      eos_token_id=1, pad_token_id=1),
                     vision_config=dict(hidden_size=32, intermediate_size=37, num_attention_heads=4,
                                        num_hidden_layers=2, image_size=32, patch_size=8),
                     projection_dim=projection_dim)
    torch.manual_seed(0)
    CLIPModel(cfg).save_pretrained(path)
    CLIPTokenizer(str(path / "vocab.json"), str(path / "merges.txt")).save_pretrained(path)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(path)


def synth_aist_world(root, num_clips: int = 4):
    """Synthetic AIST++-layout clips (32 px, 3.2 s at 10 fps); clip 0's track, mBR0, is a test track."""
    from dancegen.synth import generate

    generate(root, num_clips=num_clips, layout="aist", seed=0, size=32, num_frames=32, fps=10.0,
             camera_motion="static")
    return root


def _tiny_roberta_tokenizer():
    from transformers import RobertaTokenizer

    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = {t: i for i, t in enumerate(["<s>", "<pad>", "</s>", "<unk>", "<mask>", *letters, "\u0120"])}
    vocab.update({"\u0120" + c: len(vocab) + i for i, c in enumerate(letters)})
    return RobertaTokenizer(vocab=vocab, merges=[("\u0120", c) for c in letters])


def save_tiny_clap(folder, projection_dim: int, tokenizer: bool = True):
    """A random tiny ClapModel (HTSAT on a 64x64 spectrogram image, 1-layer RoBERTa) and its processor (or only the
    feature extractor) in `folder`; returns (model, feature_extractor)."""
    import torch
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor

    text = dict(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                max_position_embeddings=40, pad_token_id=1, bos_token_id=0, eos_token_id=2)
    audio = dict(spec_size=64, num_mel_bins=16, window_size=4, patch_size=4, patch_stride=(4, 4), hidden_size=16,
                 patch_embeds_hidden_size=8, depths=[1, 1], num_attention_heads=[2, 2])
    torch.manual_seed(0)
    model = ClapModel(ClapConfig(text_config=text, audio_config=audio, projection_dim=projection_dim)).eval()
    fe = ClapFeatureExtractor(feature_size=16, sampling_rate=48000, hop_length=480, max_length_s=1,
                              truncation="rand_trunc", padding="repeatpad")
    model.save_pretrained(folder)
    if tokenizer:
        ClapProcessor(feature_extractor=fe, tokenizer=_tiny_roberta_tokenizer()).save_pretrained(folder)
    else:
        fe.save_pretrained(folder)
    return model, fe

"""CLIP embeddings (Radford et al. 2021) through transformers' CLIPModel, for the CLIP-based metrics.

Metrics (specs/dancing-avatar.md §4 items 8, 11-13; specs/edit-your-motion.md §4 Table VI):
- text alignment: mean over frames of 100 * cos(E_img(x_t), E_txt(prompt)) (TA, "Text Alignment");
- adjacent-frame similarity: mean over t of 100 * cos(E_img(x_t), E_img(x_{t+1})) ("Frame CLIP"; Edit-Your-Motion's
  TC prints the same value on a 0-1 scale, i.e. divided by 100), and the same on the body / background segments
  (Body CLIP / Background CLIP).
The model is a local folder or a hub id (used only when the machine is online and downloads are allowed); the
default is `openai/clip-vit-large-patch14` as the dancing-avatar spec chose. Images are preprocessed by the model's
own CLIPImageProcessor (resize shortest side, centre crop, normalise), so results match the reference pipelines.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from dancegen.errors import MissingWeightsError
from dancegen.runtime import hub_offline_mode

DEFAULT_CLIP = "openai/clip-vit-large-patch14"


def _pooled(out) -> torch.Tensor:
    # transformers >= 5 returns a ModelOutput whose pooler_output is the projected embedding; 4.x a tensor.
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class ClipEmbedder:
    """L2-normalised CLIP image and text embeddings.

    Args:
        model: Local folder with a CLIPModel + tokenizer + preprocessor config, or a hub id.
        device: torch device string.
        allow_download: Let transformers fetch a hub id (else only the local cache / folder is used).
        batch_size: Frames per forward pass.
    """

    def __init__(self, model: str | os.PathLike = DEFAULT_CLIP, device: str = "cpu", allow_download: bool = False,
                 batch_size: int = 32):
        from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizer

        self.name = os.fspath(model)
        local = not allow_download
        with hub_offline_mode(local):  # local_files_only alone still lets huggingface_hub ask the Hub for headers
            try:
                self.model = CLIPModel.from_pretrained(self.name, local_files_only=local).to(device).eval()
                self.image_processor = CLIPImageProcessor.from_pretrained(self.name, local_files_only=local)
            except OSError as e:
                raise MissingWeightsError(
                    f"CLIP model {self.name!r} is not available locally ({str(e).splitlines()[0][:160]}); pass a "
                    f"folder saved with "
                    f"CLIPModel.save_pretrained + its processor, or allow downloads to fetch it from the Hugging Face "
                    f"hub (https://huggingface.co/{self.name})") from None
            try:
                self.tokenizer = CLIPTokenizer.from_pretrained(self.name, local_files_only=local)
            except OSError:
                self.tokenizer = None  # image-only use (adjacent-frame similarity) needs no tokenizer
        self.device = device
        self.batch_size = batch_size

    @torch.no_grad()
    def image_embeds(self, frames: np.ndarray) -> torch.Tensor:
        """`(N, H, W, 3)` uint8 RGB -> `(N, D)` unit vectors (float32, CPU)."""
        out = []
        for i in range(0, len(frames), self.batch_size):
            batch = [np.asarray(f) for f in frames[i:i + self.batch_size]]
            pix = self.image_processor(images=batch, return_tensors="pt")["pixel_values"].to(self.device)
            out.append(_pooled(self.model.get_image_features(pixel_values=pix)).float().cpu())
        return torch.nn.functional.normalize(torch.cat(out), dim=-1)

    @torch.no_grad()
    def text_embeds(self, texts: list[str]) -> torch.Tensor:
        """Prompts -> `(N, D)` unit vectors."""
        if self.tokenizer is None:
            raise MissingWeightsError(f"CLIP folder {self.name} has no tokenizer (vocab.json + merges.txt)")
        tok = self.tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt").to(self.device)
        emb = _pooled(self.model.get_text_features(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"]))
        return torch.nn.functional.normalize(emb.float().cpu(), dim=-1)


def clip_text_score(embedder: ClipEmbedder, video: np.ndarray, prompt: str) -> float:
    """Mean over frames of 100 * cos(image, prompt) (dancing-avatar "Text Alignment", Edit-Your-Motion TA)."""
    img = embedder.image_embeds(video)
    txt = embedder.text_embeds([prompt])
    return float(100.0 * (img @ txt[0]).mean())


def clip_adjacent_similarity(embedder: ClipEmbedder, video: np.ndarray, masks: np.ndarray | None = None,
                             region: str = "frame", fill: str = "zero") -> float:
    """Mean over adjacent pairs of 100 * cos(E(x_t), E(x_{t+1})) (dancing-avatar "Frame CLIP"; TC = this / 100).

    With ``masks`` (``(F, H, W)`` bool, True = person) and region "body" / "background" it is the paper's Body CLIP /
    Background CLIP (spec §4 items 12-13): each frame becomes its region image as the no-reference metrics cut it
    (`metrics.noref.region_image`: the body is the mask's bounding box with the rest filled, the background the whole
    frame with the body filled), padded to a square with the fill value so that CLIP's centre crop keeps all of it
    (our choice: a tall body crop would lose head and feet). Pairs where either frame has no such region are skipped.
    """
    if len(video) < 2:
        return float("nan")
    if region == "frame":
        emb = embedder.image_embeds(video)
        return float(100.0 * (emb[1:] * emb[:-1]).sum(-1).mean())
    from dancegen.metrics.noref import region_image

    if masks is None or len(masks) < len(video):
        raise ValueError(f"region {region!r} needs one person mask per frame")
    squares = {}
    for t, (frame, mask) in enumerate(zip(video, masks[: len(video)], strict=True)):
        img = region_image(frame, mask, region, fill)
        if img is not None:
            keep = mask if region == "body" else ~mask
            squares[t] = _square(img, frame[keep].mean(0) if fill == "mean" else np.zeros(3))
    if not squares:
        return float("nan")
    emb = dict(zip(squares, embedder.image_embeds(list(squares.values())), strict=True))
    sims = [float(emb[t] @ emb[t + 1]) for t in range(len(video) - 1) if t in emb and t + 1 in emb]
    return 100.0 * float(np.mean(sims)) if sims else float("nan")


def _square(img: np.ndarray, value: np.ndarray) -> np.ndarray:
    """A region image (float 0-255) as uint8, padded to a square with its fill colour ``value``."""
    h, w = img.shape[:2]
    side = max(h, w)
    out = np.empty((side, side, 3), np.float64)
    out[:] = value
    y0, x0 = (side - h) // 2, (side - w) // 2
    out[y0:y0 + h, x0:x0 + w] = img
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)

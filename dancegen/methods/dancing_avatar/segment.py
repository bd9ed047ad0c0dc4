"""Person masks of generated frames with Segment Anything through transformers' SAM classes (spec §2.2, step 2).

segment-anything itself needs torchvision, which breaks this stack (stack-notes §1); transformers' ``SamModel`` and
``SamProcessor`` (its PIL image processor) load the same published weights (``facebook/sam-vit-huge`` / ``-base``)
without it. Prompt [S]: the box of the pose's confident keypoints enlarged by 10 %, plus the confident joints as
positive points; of the three masks SAM returns, the one with the highest predicted IoU is kept.
"""

from __future__ import annotations

import numpy as np

from dancegen.errors import InputError


class SamSegmenter:
    """``segmenter(image (H, W, 3) uint8, keypoints (18, 3)) -> (H, W) bool``."""

    def __init__(self, model, processor):
        self.model, self.processor = model.eval(), processor

    @classmethod
    def load(cls, ref: str, allow_download: bool = False) -> SamSegmenter:
        """A transformers SAM folder or a cached hub id (``model.sam``)."""
        from transformers import SamModel, SamProcessor

        from dancegen.core.weights import resolve_model

        where = resolve_model(ref, kind="unet", allow_download=allow_download)
        try:
            return cls(SamModel.from_pretrained(where.location), SamProcessor.from_pretrained(where.location))
        except (OSError, ValueError) as e:
            raise InputError(f"cannot load SAM from {where.location}: {str(e).splitlines()[0]}") from None

    @staticmethod
    def prompts(keypoints: np.ndarray, width: int, height: int) -> tuple[list[float], list[list[float]]]:
        """The box (x0, y0, x1, y1) of the confident joints enlarged by 10 % and those joints as points."""
        vis = keypoints[:, 2] > 0.3
        pts = keypoints[vis, :2] if vis.any() else np.array([[width / 2, height / 2]], np.float32)
        lo, hi = pts.min(0), pts.max(0)
        pad = 0.05 * (hi - lo)
        box = [max(0.0, float(lo[0] - pad[0])), max(0.0, float(lo[1] - pad[1])),
               min(float(width), float(hi[0] + pad[0])), min(float(height), float(hi[1] + pad[1]))]
        return box, [[float(x), float(y)] for x, y in pts]

    def __call__(self, image: np.ndarray, keypoints: np.ndarray) -> np.ndarray:
        import torch

        h, w = image.shape[:2]
        box, points = self.prompts(keypoints, w, h)
        inputs = self.processor(image, input_boxes=[[box]], input_points=[[points]], return_tensors="pt")
        device = next(self.model.parameters()).device
        inputs = {k: v.to(device) if hasattr(v, "to") else v for k, v in inputs.items()}
        with torch.no_grad():
            out = self.model(**inputs, multimask_output=True)
        masks = self.processor.image_processor.post_process_masks(
            out.pred_masks.cpu(), inputs["original_sizes"].cpu(), inputs["reshaped_input_sizes"].cpu())[0][0]
        best = int(out.iou_scores[0, 0].argmax())
        return masks[best].numpy().astype(bool)

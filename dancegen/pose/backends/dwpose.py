"""DWPose (Yang et al., ICCV-W 2023, "Effective Whole-body Pose Estimation with Two-stages Distillation") on onnxruntime.

Runs the two ONNX files DWPose publishes (huggingface `yzd-v/DWPose`: `yolox_l.onnx`, the YOLOX-L person detector,
and `dw-ll_ucoco_384.onnx`, the RTMPose-L whole-body model with SimCC heads), with the pre- and post-processing of
controlnet_aux's `dwpose/onnxdet.py` + `onnxpose.py` (prior-art.md §3.2), re-implemented here:

* YOLOX: the BGR image is resized by r = min(640/H, 640/W) (bilinear) into the top-left of a 640x640 canvas filled
  with 114, fed as raw 0-255 floats (NCHW). The (1, 8400, 85) output is decoded on the stride-8/16/32 grids
  (xy = (p + grid) * stride, wh = exp(p) * stride), scored obj * cls, class-wise NMS (IoU 0.45, score 0.1), and
  person boxes scoring above 0.3 are kept.
* RTMPose: each box -> centre and scale x 1.25, scale widened/heightened to the 288:384 input aspect, an affine
  warp to 288x384 (bilinear), (pixel - mean) / std with ImageNet mean (123.675, 116.28, 103.53) and std
  (58.395, 57.12, 57.375) applied to the BGR pixels exactly as the reference code does.
* SimCC decoding: per keypoint argmax over the x bins (576) and y bins (768), divided by the split ratio 2.0;
  score = min(max_x, max_y); a location whose score is <= 0 becomes -1; then mapped back through the crop.

Deviations: one person per frame (the largest detected box) because a PoseSequence holds one dancer; a frame with
no detected person is left empty instead of running the pose model on the whole image; scores are clipped to
[0, 1] to be confidences.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from dancegen.errors import InputError, MissingWeightsError

DET_FILE = "yolox_l.onnx"
POSE_FILE = "dw-ll_ucoco_384.onnx"
DET_SIZE = (640, 640)  # (h, w)
POSE_INPUT = (288, 384)  # (w, h)
SIMCC_SPLIT_RATIO = 2.0
BOX_PADDING = 1.25
MEAN = np.array([123.675, 116.28, 103.53], np.float32)
STD = np.array([58.395, 57.12, 57.375], np.float32)
NMS_IOU = 0.45
SCORE_THR = 0.1
PERSON_THR = 0.3
WEIGHTS_HELP = "https://huggingface.co/yzd-v/DWPose"


def weights_folder(weights_dir: str | os.PathLike | None = None) -> Path:
    """`weights_dir`, else `$DANCEGEN_WEIGHTS_DIR/dwpose`, else `$DANCEGEN_HOME/models/dwpose`."""
    if weights_dir is not None:
        return Path(weights_dir)
    env = os.environ.get("DANCEGEN_WEIGHTS_DIR")
    if env:
        return Path(env) / "dwpose"
    from dancegen.pose.backends.fetch import dancegen_home

    return dancegen_home() / "models" / "dwpose"


def require_dwpose(weights_dir: str | os.PathLike | None = None) -> dict[str, Path]:
    """Paths of the two DWPose ONNX files, or MissingWeightsError naming both and where they are published."""
    folder = weights_folder(weights_dir)
    paths = {DET_FILE: folder / DET_FILE, POSE_FILE: folder / POSE_FILE}
    missing = [n for n, p in paths.items() if not p.is_file()]
    if missing:
        raise MissingWeightsError(
            f"DWPose ONNX file(s) missing: {', '.join(missing)} (looked in {folder}; needs {DET_FILE} and "
            f"{POSE_FILE}). Download them from {WEIGHTS_HELP} into that folder, or pass --weights-dir DIR / set "
            "$DANCEGEN_WEIGHTS_DIR (files go in $DANCEGEN_WEIGHTS_DIR/dwpose/)"
        )
    return paths


# ----------------------------------------------------------------------------------------------------------------
# YOLOX
# ----------------------------------------------------------------------------------------------------------------


def yolox_preprocess(img_bgr: np.ndarray, size: tuple[int, int] = DET_SIZE) -> tuple[np.ndarray, float]:
    """Letterbox into the top-left of a 114-filled canvas.

    Returns:
        (`(1, 3, h, w)` float32 raw 0-255 BGR, ratio r with input pixel = canvas pixel / r).
    """
    import cv2

    h, w = img_bgr.shape[:2]
    r = min(size[0] / h, size[1] / w)
    nw, nh = int(w * r), int(h * r)
    canvas = np.full((size[0], size[1], 3), 114, np.uint8)
    canvas[:nh, :nw] = cv2.resize(img_bgr, (nw, nh), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(canvas.transpose(2, 0, 1)[None], dtype=np.float32), r


def yolox_grids(size: tuple[int, int] = DET_SIZE, strides: tuple[int, ...] = (8, 16, 32)):
    """Grid cell offsets `(N, 2)` (x, y) and strides `(N, 1)`, stride-8 cells first, row-major (N = 8400 at 640)."""
    grids, exp = [], []
    for s in strides:
        hs, ws = size[0] // s, size[1] // s
        yv, xv = np.meshgrid(np.arange(hs), np.arange(ws), indexing="ij")
        grids.append(np.stack([xv, yv], -1).reshape(-1, 2))
        exp.append(np.full((hs * ws, 1), s))
    return np.concatenate(grids).astype(np.float32), np.concatenate(exp).astype(np.float32)


def _nms(boxes: np.ndarray, scores: np.ndarray, thr: float) -> list[int]:
    """Greedy hard NMS (YOLOX demo utils); boxes `(N, 4)` xyxy. Returns kept indices, best first."""
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = scores.argsort()[::-1]
    keep = []
    while order.size:
        i = order[0]
        keep.append(int(i))
        xx1, yy1 = np.maximum(x1[i], x1[order[1:]]), np.maximum(y1[i], y1[order[1:]])
        xx2, yy2 = np.minimum(x2[i], x2[order[1:]]), np.minimum(y2[i], y2[order[1:]])
        inter = np.maximum(0.0, xx2 - xx1 + 1) * np.maximum(0.0, yy2 - yy1 + 1)
        iou = inter / (areas[i] + areas[order[1:]] - inter)
        order = order[1:][iou <= thr]
    return keep


def yolox_postprocess(
    output: np.ndarray,
    ratio: float,
    size: tuple[int, int] = DET_SIZE,
    nms_thr: float = NMS_IOU,
    score_thr: float = SCORE_THR,
    person_thr: float = PERSON_THR,
) -> np.ndarray:
    """Decode raw YOLOX output into person boxes.

    Args:
        output: `(1, N, 5 + C)` or `(N, 5 + C)`: x, y, log w, log h (grid units), objectness, class scores.
        ratio: The letterbox ratio from `yolox_preprocess`.

    Returns:
        `(M, 5)` float32 person boxes (x0, y0, x1, y1, score) in input-image pixels, best first.
    """
    pred = np.asarray(output, np.float32).reshape(-1, output.shape[-1]).copy()
    grids, strides = yolox_grids(size)
    if len(pred) != len(grids):
        raise ValueError(f"YOLOX output has {len(pred)} rows, expected {len(grids)} for input {size}")
    pred[:, :2] = (pred[:, :2] + grids) * strides
    pred[:, 2:4] = np.exp(pred[:, 2:4]) * strides
    xyxy = np.concatenate([pred[:, :2] - pred[:, 2:4] / 2, pred[:, :2] + pred[:, 2:4] / 2], 1) / ratio
    scores = pred[:, 4:5] * pred[:, 5:]
    # Class-wise NMS, then keep people (class 0); only class 0 matters, so run it for that class.
    cls_scores = scores[:, 0]
    valid = cls_scores > score_thr
    if not valid.any():
        return np.zeros((0, 5), np.float32)
    b, s = xyxy[valid], cls_scores[valid]
    keep = [k for k in _nms(b, s, nms_thr) if s[k] > person_thr]
    return np.concatenate([b[keep], s[keep, None]], 1).astype(np.float32) if keep else np.zeros((0, 5), np.float32)


# ----------------------------------------------------------------------------------------------------------------
# RTMPose with SimCC
# ----------------------------------------------------------------------------------------------------------------


def box_to_center_scale(
    box: np.ndarray, padding: float = BOX_PADDING, input_size: tuple[int, int] = POSE_INPUT
) -> tuple[np.ndarray, np.ndarray]:
    """(centre, scale) of an xyxy box: scale = size x padding, then grown to the input aspect w/h."""
    x0, y0, x1, y1 = np.asarray(box[:4], np.float64)
    center = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
    w, h = (x1 - x0) * padding, (y1 - y0) * padding
    aspect = input_size[0] / input_size[1]
    if w > h * aspect:
        h = w / aspect
    else:
        w = h * aspect
    return center, np.array([w, h])


def crop_matrix(center: np.ndarray, scale: np.ndarray, input_size: tuple[int, int] = POSE_INPUT) -> np.ndarray:
    """`(2, 3)` affine image -> crop: the box of size `scale` around `center` fills the `input_size` (w, h) crop."""
    k = input_size[0] / scale[0]
    return np.array([[k, 0.0, input_size[0] / 2 - k * center[0]], [0.0, k, input_size[1] / 2 - k * center[1]]])


def rtmpose_preprocess(img_bgr: np.ndarray, box: np.ndarray, input_size: tuple[int, int] = POSE_INPUT):
    """Affine crop + normalisation. Returns (`(1, 3, h, w)` float32, centre, scale)."""
    import cv2

    center, scale = box_to_center_scale(box, input_size=input_size)
    crop = cv2.warpAffine(img_bgr, crop_matrix(center, scale, input_size), input_size, flags=cv2.INTER_LINEAR)
    x = (crop.astype(np.float32) - MEAN) / STD
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None]), center, scale


def simcc_decode(simcc_x: np.ndarray, simcc_y: np.ndarray, split_ratio: float = SIMCC_SPLIT_RATIO):
    """SimCC argmax decoding (RTMPose, Jiang et al. 2023).

    Args:
        simcc_x: `(..., K, Wx)` x-bin logits (Wx = input width x split ratio).
        simcc_y: `(..., K, Wy)` y-bin logits.

    Returns:
        (locations `(..., K, 2)` in crop pixels (-1 where the score is <= 0), scores `(..., K)` = min of the two
        maxima).
    """
    simcc_x, simcc_y = np.asarray(simcc_x), np.asarray(simcc_y)
    locs = np.stack([simcc_x.argmax(-1), simcc_y.argmax(-1)], -1).astype(np.float32)
    vals = np.minimum(simcc_x.max(-1), simcc_y.max(-1)).astype(np.float32)
    locs[vals <= 0] = -1
    locs = np.where(locs >= 0, locs / split_ratio, locs)
    return locs, vals


def crop_to_image(
    locs: np.ndarray, center: np.ndarray, scale: np.ndarray, input_size: tuple[int, int] = POSE_INPUT
) -> np.ndarray:
    """Map crop pixel locations back to the image (controlnet_aux: loc / input_size * scale + centre - scale / 2)."""
    return np.asarray(locs) / np.asarray(input_size, np.float64) * scale + center - scale / 2


# ----------------------------------------------------------------------------------------------------------------
# Estimator
# ----------------------------------------------------------------------------------------------------------------


class DWPoseEstimator:
    """Whole-body DWPose (133 keypoints) for the most prominent person of each frame.

    Args:
        weights_dir: Folder with `yolox_l.onnx` and `dw-ll_ucoco_384.onnx` (see `weights_folder`).
        providers: onnxruntime execution providers; default CPU.
        num_threads: intra-op threads.
    """

    def __init__(
        self, weights_dir: str | os.PathLike | None = None, providers: list[str] | None = None, num_threads: int = 2
    ):
        self.model_paths = require_dwpose(weights_dir)
        try:
            import onnxruntime as ort
        except ImportError:
            raise MissingWeightsError("the DWPose backend needs onnxruntime: pip install 'dancegen[dwpose]'") from None
        so = ort.SessionOptions()
        so.intra_op_num_threads = num_threads
        so.log_severity_level = 3
        providers = providers or ["CPUExecutionProvider"]
        self._det = ort.InferenceSession(str(self.model_paths[DET_FILE]), so, providers=providers)
        self._pose = ort.InferenceSession(str(self.model_paths[POSE_FILE]), so, providers=providers)
        self._det_in = self._det.get_inputs()[0].name
        self._pose_in = self._pose.get_inputs()[0].name
        self.timings: dict[str, list[float]] = {"detector": [], "pose": []}
        self.last_boxes: np.ndarray = np.zeros((0, 5), np.float32)

    def detect(self, image_rgb: np.ndarray) -> np.ndarray:
        """Person boxes `(M, 5)` (xyxy, score) in pixels, best first."""
        bgr = np.ascontiguousarray(image_rgb[..., ::-1])
        x, r = yolox_preprocess(bgr)
        t0 = time.perf_counter()
        out = self._det.run(None, {self._det_in: x})[0]
        self.timings["detector"].append(time.perf_counter() - t0)
        return yolox_postprocess(out, r)

    def process(self, image: np.ndarray) -> np.ndarray | None:
        """`(133, 3)` float32 (x, y pixels, score in [0, 1]) of the largest detected person, or None.

        Args:
            image: `(H, W, 3)` uint8 RGB.
        """
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise InputError(f"expected an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}")
        boxes = self.detect(image)
        self.last_boxes = boxes
        if len(boxes) == 0:
            return None
        areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        box = boxes[int(np.argmax(areas))]
        x, center, scale = rtmpose_preprocess(np.ascontiguousarray(image[..., ::-1]), box)
        t0 = time.perf_counter()
        simcc_x, simcc_y = self._pose.run(None, {self._pose_in: x})[:2]
        self.timings["pose"].append(time.perf_counter() - t0)
        locs, vals = simcc_decode(simcc_x[0], simcc_y[0])
        xy = crop_to_image(locs, center, scale)
        conf = np.clip(vals, 0.0, 1.0)
        xy[conf <= 0] = 0.0
        return np.concatenate([xy, conf[:, None]], 1).astype(np.float32)

    def close(self) -> None:
        self._det = self._pose = None

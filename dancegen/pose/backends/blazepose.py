"""BlazePose (Bazarevsky et al. 2020, "BlazePose: On-device Real-time Body Pose tracking") on LiteRT.

A project-owned re-implementation of MediaPipe's `pose_landmark_cpu` graph around the two model files of the
mediapipe 0.10.21 wheel (stack-notes.md §2; fetched by `dancegen.pose.backends.fetch`). The steps and constants
follow MediaPipe's graphs, restated here:

* Detector (`pose_detection_cpu.pbtxt`): the image is letterboxed to 224x224 RGB in [-1, 1]; 2254 SSD anchors
  (`SsdAnchorsCalculator`: 5 layers, strides 8/16/32/32/32, offset 0.5, fixed anchor size, aspect ratio 1 plus one
  interpolated scale, so 2 anchors per cell and layers of equal stride merged); boxes and 4 keypoints decoded with
  x/y/w/h scale 224 (`reverse_output_order`: x before y); sigmoid scores clipped at +-100; weighted NMS at IoU 0.3.
* ROI (`pose_detection_to_roi.pbtxt`, `AlignmentPointsRectsCalculator`): keypoint 0 (mid-hip) is the centre,
  keypoint 1 encodes scale and rotation: side = 2 |k1 - k0|, rotation = 90deg - atan2(-(y1 - y0), x1 - x0),
  then `RectTransformationCalculator` scales the square by 1.25.
* Landmarks (`pose_landmark_by_roi_cpu.pbtxt`, `tensors_to_pose_landmarks_and_segmentation.pbtxt`): the rotated
  ROI is warped to 256x256 RGB in [0, 1] (border replicated); the model gives 39 landmarks x (x, y, z, visibility
  logit, presence logit) in crop pixels, a pose-presence probability, 256x256 segmentation logits and 64x64x39
  heatmaps. Landmarks are refined from the heatmap (`RefineLandmarksFromHeatmapCalculator`, kernel 7, refine when
  the window's max sigmoid >= 0.5), mapped back through the inverse affine; visibility = sigmoid(logit); the mask
  = sigmoid(logits) warped back to the image.
* Tracking (`pose_landmarks_to_roi.pbtxt`): in video mode the next frame's ROI comes from auxiliary landmarks 33
  (centre) and 34 (scale/rotation point) with the same alignment rule and scale 1.25; the detector runs again when
  the pose presence falls below `min_presence`.

Deviations: MediaPipe smooths landmarks and the auxiliary points with one-euro filters and the mask with an
uncertainty-weighted blend; we return raw per-frame values (temporal smoothing is `extract_poses(smooth=...)`'s
job). When a tracked ROI loses the person, we re-detect on the same frame instead of returning nothing for it.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass

import numpy as np

from dancegen.errors import InputError

DETECTOR_SIZE = 224
LANDMARK_SIZE = 256
NUM_BODY = 33
ROI_SCALE = 1.25
NMS_IOU = 0.3
SCORE_CLIP = 100.0
HEATMAP_KERNEL = 7
HEATMAP_MIN_CONF = 0.5


# ----------------------------------------------------------------------------------------------------------------
# Detector: anchors, decoding, NMS
# ----------------------------------------------------------------------------------------------------------------


def ssd_anchors(
    input_size: int = DETECTOR_SIZE,
    strides: tuple[int, ...] = (8, 16, 32, 32, 32),
    min_scale: float = 0.1484375,
    max_scale: float = 0.75,
    anchor_offset: float = 0.5,
    aspect_ratios: tuple[float, ...] = (1.0,),
    interpolated_scale_aspect_ratio: float = 1.0,
    fixed_anchor_size: bool = True,
) -> np.ndarray:
    """SSD anchors as MediaPipe's `SsdAnchorsCalculator` builds them (pose_detection options by default).

    Consecutive layers with the same stride share one feature map; each contributes `len(aspect_ratios)` anchors
    plus one at the interpolated scale sqrt(s_i * s_{i+1}) per cell.

    Returns:
        `(N, 4)` float32 (x_centre, y_centre, w, h), normalised to [0, 1]; N = 2254 for the defaults.
    """
    n = len(strides)

    def scale(i: int) -> float:
        return (min_scale + max_scale) / 2 if n == 1 else min_scale + (max_scale - min_scale) * i / (n - 1)

    out = []
    layer = 0
    while layer < n:
        sizes = []  # (w, h) per anchor of a cell
        last = layer
        while last < n and strides[last] == strides[layer]:
            s = scale(last)
            sizes += [(s * math.sqrt(r), s / math.sqrt(r)) for r in aspect_ratios]
            if interpolated_scale_aspect_ratio > 0:
                s_next = 1.0 if last == n - 1 else scale(last + 1)
                si, r = math.sqrt(s * s_next), interpolated_scale_aspect_ratio
                sizes.append((si * math.sqrt(r), si / math.sqrt(r)))
            last += 1
        fm = math.ceil(input_size / strides[layer])
        ys, xs = np.meshgrid((np.arange(fm) + anchor_offset) / fm, (np.arange(fm) + anchor_offset) / fm, indexing="ij")
        wh = np.ones((len(sizes), 2)) if fixed_anchor_size else np.asarray(sizes)
        cells = np.stack([xs.ravel(), ys.ravel()], -1)  # row-major cells, anchors of a cell consecutive
        a = np.concatenate([np.repeat(cells, len(sizes), 0), np.tile(wh, (fm * fm, 1))], 1)
        out.append(a)
        layer = last
    return np.concatenate(out).astype(np.float32)


@dataclass
class Detection:
    """One detector output, in normalised coordinates of the detector input (letterboxed 224x224).

    Attributes:
        box: (xmin, ymin, xmax, ymax).
        keypoints: `(4, 2)` x, y: mid-hip, full-body scale point, mid-shoulder, upper-body scale point.
        score: Sigmoid score in [0, 1].
    """

    box: np.ndarray
    keypoints: np.ndarray
    score: float


def decode_detections(
    raw_boxes: np.ndarray,
    raw_scores: np.ndarray,
    anchors: np.ndarray,
    scale: float = DETECTOR_SIZE,
    min_score: float = 0.5,
):
    """Decode SSD regressors (MediaPipe `TensorsToDetectionsCalculator`, `reverse_output_order: true`).

    Args:
        raw_boxes: `(N, 12)` regressors: x, y, w, h, then 4 keypoints (x, y), relative to the anchors, in
            detector-input pixels.
        raw_scores: `(N,)` or `(N, 1)` logits.
        anchors: `(N, 4)` from `ssd_anchors`.
        scale: x/y/w/h scale (the detector input size).
        min_score: Keep detections whose sigmoid score is at least this.

    Returns:
        boxes `(M, 4)` (xmin, ymin, xmax, ymax), keypoints `(M, 4, 2)`, scores `(M,)`, all normalised.
    """
    raw_boxes = np.asarray(raw_boxes, np.float32).reshape(len(anchors), -1)
    logits = np.clip(np.asarray(raw_scores, np.float64).reshape(-1), -SCORE_CLIP, SCORE_CLIP)
    scores = 1.0 / (1.0 + np.exp(-logits))
    keep = scores >= min_score
    raw, anc, scores = raw_boxes[keep], anchors[keep], scores[keep]
    axy, awh = anc[:, None, :2], anc[:, None, 2:]
    cxcy = raw[:, None, 0:2] / scale * awh + axy
    wh = raw[:, None, 2:4] / scale * awh
    boxes = np.concatenate([cxcy - wh / 2, cxcy + wh / 2], -1)[:, 0]
    kps = raw[:, 4:12].reshape(-1, 4, 2) / scale * awh + axy
    return boxes, kps, scores


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    lt = np.maximum(box[:2], boxes[:, :2])
    rb = np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
    area = lambda b: np.prod(np.clip(b[..., 2:] - b[..., :2], 0, None), axis=-1)  # noqa: E731
    union = area(box) + area(boxes) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def weighted_nms(
    boxes: np.ndarray,
    keypoints: np.ndarray,
    scores: np.ndarray,
    iou_threshold: float = NMS_IOU,
    max_detections: int | None = None,
) -> list[Detection]:
    """MediaPipe's WEIGHTED non-max suppression: each kept detection is the score-weighted mean of its cluster.

    Detections are taken in descending score order; all remaining ones overlapping the current best by IoU above
    `iou_threshold` form its cluster and are removed. The cluster's boxes and keypoints are averaged with the
    scores as weights; the score stays the best one's.
    """
    order = np.argsort(-scores, kind="stable")
    out: list[Detection] = []
    while order.size and (max_detections is None or len(out) < max_detections):
        best = order[0]
        overlap = _iou(boxes[best], boxes[order]) > iou_threshold
        overlap[0] = True
        cluster = order[overlap]
        w = scores[cluster][:, None]
        box = (boxes[cluster] * w).sum(0) / w.sum()
        kps = (keypoints[cluster] * w[:, :, None]).sum(0) / w.sum()
        out.append(Detection(box.astype(np.float32), kps.astype(np.float32), float(scores[best])))
        order = order[~overlap]
    return out


# ----------------------------------------------------------------------------------------------------------------
# ROI geometry
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class Roi:
    """A square, rotated region in image pixel coordinates.

    Attributes:
        cx, cy: Centre.
        size: Side length.
        rotation: Radians; 0 means the crop's up is the image's up. The crop's x axis points along
            (cos r, sin r) in the image (y down).
    """

    cx: float
    cy: float
    size: float
    rotation: float


def _normalize_radians(a: float) -> float:
    return a - 2 * math.pi * math.floor((a + math.pi) / (2 * math.pi))


def roi_from_points(center: np.ndarray, scale_point: np.ndarray, scale: float = ROI_SCALE) -> Roi:
    """ROI from an alignment pair (MediaPipe `AlignmentPointsRectsCalculator` + `RectTransformationCalculator`).

    Args:
        center: (x, y) pixels of the centre point (detector keypoint 0 / auxiliary landmark 33).
        scale_point: (x, y) pixels of the size/rotation point (detector keypoint 1 / auxiliary landmark 34).
        scale: Margin factor applied to the side (1.25 for the full-body model).
    """
    (x0, y0), (x1, y1) = np.asarray(center, float), np.asarray(scale_point, float)
    size = 2.0 * math.hypot(x1 - x0, y1 - y0) * scale
    rotation = _normalize_radians(math.pi / 2 - math.atan2(-(y1 - y0), x1 - x0))
    return Roi(float(x0), float(y0), float(size), float(rotation))


def roi_crop_matrix(roi: Roi, out_size: int = LANDMARK_SIZE) -> np.ndarray:
    """`(2, 3)` affine mapping crop coordinates to image coordinates (use with `cv2.WARP_INVERSE_MAP`).

    The crop point (u, v) in [0, out_size]^2 maps to centre + (u / out_size - 0.5) * size * ex
    + (v / out_size - 0.5) * size * ey with ex = (cos r, sin r), ey = (-sin r, cos r). Like MediaPipe's
    ImageToTensorCalculator (corners of the rotated box -> corners of the output), the same mapping is applied to
    pixel indices, with no half-pixel shift; landmarks come back through the same map, so the frame is consistent.
    """
    c, s = math.cos(roi.rotation), math.sin(roi.rotation)
    k = roi.size / out_size
    lin = np.array([[c * k, -s * k], [s * k, c * k]])
    t = np.array([roi.cx, roi.cy]) - 0.5 * roi.size * np.array([c - s, s + c])
    return np.concatenate([lin, t[:, None]], 1)


def crop_to_image_points(points: np.ndarray, roi: Roi, out_size: int = LANDMARK_SIZE) -> np.ndarray:
    """Map `(..., 2)` continuous crop coordinates (as the landmark model outputs them) to continuous image ones."""
    c, s = math.cos(roi.rotation), math.sin(roi.rotation)
    rel = np.asarray(points, np.float64) / out_size - 0.5
    x = roi.cx + (c * rel[..., 0] - s * rel[..., 1]) * roi.size
    y = roi.cy + (s * rel[..., 0] + c * rel[..., 1]) * roi.size
    return np.stack([x, y], -1)


def refine_from_heatmap(
    xy: np.ndarray, heatmap: np.ndarray, kernel: int = HEATMAP_KERNEL, min_confidence: float = HEATMAP_MIN_CONF
) -> np.ndarray:
    """MediaPipe `RefineLandmarksFromHeatmapCalculator`, vectorised.

    For each landmark the sigmoid heatmap in a `kernel` x `kernel` window (clipped at the borders) around
    int(x * W), int(y * H) gives a weighted mean position (col / W, row / H, as MediaPipe computes it); it replaces
    the regressed one when the window's max confidence is at least `min_confidence`.

    Args:
        xy: `(L, 2)` landmarks normalised to the crop, [0, 1].
        heatmap: `(H, W, L)` logits.

    Returns:
        `(L, 2)` refined normalised landmarks.
    """
    hh, ww, nl = heatmap.shape
    xy = np.asarray(xy, np.float64)
    col = np.trunc(xy[:, 0] * ww).astype(int)
    row = np.trunc(xy[:, 1] * hh).astype(int)
    inside = (col >= 0) & (col < ww) & (row >= 0) & (row < hh)
    off = (kernel - 1) // 2
    d = np.arange(-off, off + 1)
    rr = row[:, None, None] + d[None, :, None]  # (L, k, 1)
    cc = col[:, None, None] + d[None, None, :]  # (L, 1, k)
    valid = (rr >= 0) & (rr < hh) & (cc >= 0) & (cc < ww) & inside[:, None, None]
    lm = np.arange(nl)[:, None, None]
    conf = 1.0 / (1.0 + np.exp(-heatmap[np.clip(rr, 0, hh - 1), np.clip(cc, 0, ww - 1), lm].astype(np.float64)))
    conf = np.where(valid, conf, 0.0)
    total = conf.sum((1, 2))
    wcol = (conf * cc).sum((1, 2))
    wrow = (conf * rr).sum((1, 2))
    ok = inside & (conf.max((1, 2)) >= min_confidence) & (total > 0)
    out = xy.copy()
    safe = np.where(total > 0, total, 1.0)
    out[ok, 0] = (wcol / ww / safe)[ok]
    out[ok, 1] = (wrow / hh / safe)[ok]
    return out


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.clip(x, -80, 80)))


# ----------------------------------------------------------------------------------------------------------------
# Estimator
# ----------------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_native_stderr():
    """Send file descriptor 2 to /dev/null for the duration (Python's sys.stderr is untouched)."""
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class BlazePoseEstimator:
    """Single-person BlazePose (full model) on LiteRT.

    Args:
        model_dir: Folder with `pose_detection.tflite` and `pose_landmark_full.tflite`; default
            `$DANCEGEN_HOME/models/blazepose`. Missing files raise MissingWeightsError with the fetch command.
        mode: "image" runs the detector on every frame; "video" tracks the ROI from the previous frame's
            auxiliary landmarks and re-detects only when the pose presence drops below `min_presence`.
        min_detection: Detector score threshold.
        min_presence: Pose-presence threshold of the landmark model.
        segmentation: Also return the person mask.
        num_threads: LiteRT threads.

    Example:
        est = BlazePoseEstimator(mode="video")
        for frame in frames:
            keypoints, mask = est.process(frame)   # (33, 3) pixels + visibility, (H, W) in [0, 1]
        est.close()
    """

    def __init__(
        self,
        model_dir: str | os.PathLike | None = None,
        mode: str = "image",
        min_detection: float = 0.5,
        min_presence: float = 0.5,
        segmentation: bool = True,
        num_threads: int = 2,
    ):
        from dancegen.pose.backends.fetch import require_blazepose

        if mode not in ("image", "video"):
            raise ValueError(f"mode must be 'image' or 'video', got {mode!r}")
        paths = require_blazepose(model_dir)
        from ai_edge_litert.interpreter import Interpreter

        self.model_paths = paths
        self.mode = mode
        self.min_detection = float(min_detection)
        self.min_presence = float(min_presence)
        self.segmentation = segmentation
        # TFLite's C++ runtime prints "INFO: Created TensorFlow Lite XNNPACK delegate" to fd 2; no env var
        # silences it, so the fd is pointed at /dev/null while the interpreters are built.
        with _quiet_native_stderr():
            self._det = Interpreter(model_path=str(paths["pose_detection.tflite"]), num_threads=num_threads)
            self._lmk = Interpreter(model_path=str(paths["pose_landmark_full.tflite"]), num_threads=num_threads)
            self._det.allocate_tensors()
            self._lmk.allocate_tensors()
        self._det_in = self._det.get_input_details()[0]["index"]
        det_out = self._det.get_output_details()
        # Identify outputs by shape, not by order: (1, N, 12) regressors and (1, N, 1) scores.
        self._det_boxes = next(o["index"] for o in det_out if o["shape"][-1] == 12)
        self._det_scores = next(o["index"] for o in det_out if o["shape"][-1] == 1)
        self._lmk_in = self._lmk.get_input_details()[0]["index"]
        by_shape = {tuple(o["shape"]): o["index"] for o in self._lmk.get_output_details()}
        self._lm_landmarks = by_shape[(1, 195)]
        self._lm_presence = by_shape[(1, 1)]
        self._lm_seg = by_shape[(1, LANDMARK_SIZE, LANDMARK_SIZE, 1)]
        self._lm_heatmap = by_shape[(1, 64, 64, 39)]
        self._anchors = ssd_anchors()
        self._track: Roi | None = None
        #: Diagnostics of the last `process` call.
        self.last_roi: Roi | None = None
        self.last_presence: float = 0.0
        self.last_detection: Detection | None = None
        self.last_ran_detector: bool = False
        self.timings: dict[str, list[float]] = {"detector": [], "landmarks": []}

    # -- detector ---------------------------------------------------------------------------------------------

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Run the pose detector; detections (after weighted NMS, best first) in image pixel coordinates.

        The returned `Detection.box` and `.keypoints` are in pixels of `image` (letterbox removed).
        """
        import cv2

        h, w = image.shape[:2]
        side = float(max(h, w))
        # Letterbox as MediaPipe's ImageToTensorCalculator does it: a square ROI of side max(H, W) centred on the
        # image, warped bilinearly so that output index (0, 0) samples input point (ox, oy); outside is black.
        ox, oy = w / 2 - side / 2, h / 2 - side / 2
        k = side / DETECTOR_SIZE
        m = np.array([[k, 0.0, ox], [0.0, k, oy]])
        canvas = cv2.warpAffine(
            image,
            m,
            (DETECTOR_SIZE, DETECTOR_SIZE),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0,
        )
        x = canvas.astype(np.float32)[None] / 127.5 - 1.0
        t0 = time.perf_counter()
        self._det.set_tensor(self._det_in, x)
        self._det.invoke()
        raw_boxes = self._det.get_tensor(self._det_boxes)[0]
        raw_scores = self._det.get_tensor(self._det_scores)[0]
        self.timings["detector"].append(time.perf_counter() - t0)
        boxes, kps, scores = decode_detections(raw_boxes, raw_scores, self._anchors, min_score=self.min_detection)
        dets = weighted_nms(boxes, kps, scores)
        for d in dets:  # normalised letterboxed coordinates -> image pixels
            d.box = (d.box.reshape(2, 2) * side + [ox, oy]).reshape(4).astype(np.float32)
            d.keypoints = (d.keypoints * side + [ox, oy]).astype(np.float32)
        return dets

    # -- landmarks --------------------------------------------------------------------------------------------

    def landmarks(self, image: np.ndarray, roi: Roi):
        """Run the landmark model on `roi`.

        Returns:
            (presence, landmarks `(39, 5)` with x, y in image pixels, z, visibility and presence probabilities,
            mask `(H, W)` float32 in [0, 1] or None).
        """
        import cv2

        h, w = image.shape[:2]
        m = roi_crop_matrix(roi)
        crop = cv2.warpAffine(
            image,
            m,
            (LANDMARK_SIZE, LANDMARK_SIZE),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REPLICATE,
        )
        t0 = time.perf_counter()
        self._lmk.set_tensor(self._lmk_in, crop.astype(np.float32)[None] / 255.0)
        self._lmk.invoke()
        raw = self._lmk.get_tensor(self._lm_landmarks).reshape(39, 5).astype(np.float64)
        presence = float(self._lmk.get_tensor(self._lm_presence).reshape(()))
        self.timings["landmarks"].append(time.perf_counter() - t0)
        if presence < self.min_presence:
            return presence, None, None
        heat = self._lmk.get_tensor(self._lm_heatmap)[0]
        xy = refine_from_heatmap(raw[:, :2] / LANDMARK_SIZE, heat) * LANDMARK_SIZE
        out = np.empty((39, 5), np.float64)
        out[:, :2] = crop_to_image_points(xy, roi)
        out[:, 2] = raw[:, 2]
        out[:, 3] = _sigmoid(raw[:, 3])
        out[:, 4] = _sigmoid(raw[:, 4])
        mask = None
        if self.segmentation:
            seg = _sigmoid(self._lmk.get_tensor(self._lm_seg)[0, :, :, 0]).astype(np.float32)
            # m maps crop indices -> image indices, so with WARP_INVERSE_MAP we need its inverse here.
            inv = cv2.invertAffineTransform(m)
            mask = cv2.warpAffine(
                seg,
                inv,
                (w, h),
                flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                borderMode=cv2.BORDER_CONSTANT,
                borderValue=0,
            )
            mask = np.clip(mask, 0.0, 1.0)
        return presence, out, mask

    # -- public -------------------------------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget the tracked ROI (start of a new clip)."""
        self._track = None

    def process(self, image: np.ndarray):
        """Estimate the pose of the most confident person in one RGB frame.

        Args:
            image: `(H, W, 3)` uint8 RGB.

        Returns:
            (keypoints `(33, 3)` float32 (x, y in pixels, visibility in [0, 1]) or None when no person is found,
            mask `(H, W)` float32 person probability in [0, 1] or None).
        """
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise InputError(f"expected an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}")
        image = np.ascontiguousarray(image)
        self.last_ran_detector = False
        self.last_detection = None
        result = None
        if self.mode == "video" and self._track is not None:
            roi = self._track
            presence, lms, mask = self.landmarks(image, roi)
            if lms is not None:
                result = (roi, presence, lms, mask)
        if result is None:
            self.last_ran_detector = True
            dets = self.detect(image)
            if dets:
                self.last_detection = dets[0]
                roi = roi_from_points(dets[0].keypoints[0], dets[0].keypoints[1])
                presence, lms, mask = self.landmarks(image, roi)
                if lms is not None:
                    result = (roi, presence, lms, mask)
                else:
                    self.last_presence = presence
            else:
                self.last_presence = 0.0
        if result is None:
            self._track = None
            self.last_roi = None
            return None, None
        roi, presence, lms, mask = result
        self.last_roi, self.last_presence = roi, presence
        if self.mode == "video":
            self._track = roi_from_points(lms[33, :2], lms[34, :2])
        kps = np.concatenate([lms[:NUM_BODY, :2], lms[:NUM_BODY, 3:4]], 1).astype(np.float32)
        return kps, mask

    def close(self) -> None:
        """Release the interpreters."""
        self._det = self._lmk = None
        self._track = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
